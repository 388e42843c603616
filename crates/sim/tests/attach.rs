//! Chapter 3 in memory: the mobile core's control plane on the double11
//! topology (netns/double11.toml), on a virtual clock. Today: the eNodeB's
//! S1 Setup with the MME over the layer's SCTP, clean and under loss, and
//! refused for a PLMN the MME does not serve; every frame decoded by tshark
//! with SCTP's CRC32c checked.

mod common;

use d11_elements::enb::EnbReport;
use d11_elements::mme::{MmeReport, Plmn};
use d11_elements::s1link::S1State;
use d11_lab::Topology;
use d11_sim::{LinkParams, SimLab};
use std::process::Command;
use std::time::Duration;

const TOPOLOGY: &str = include_str!("../../../netns/double11.toml");
const S1MME: &str = "enb:s1mme--mme:s1mme";

fn lab(text: &str, seed: u64, s1_loss: f64) -> SimLab {
    let topo = Topology::parse(text, "double11.toml").expect("double11.toml loads");
    let mut lab = SimLab::new(&topo, seed, |w| LinkParams {
        delay: Duration::from_micros(100),
        loss: if w.name() == S1MME { s1_loss } else { 0.0 },
    })
    .expect("every node of double11.toml builds");
    lab.sim.capture_pcapng();
    lab
}

fn reports(lab: &SimLab) -> (EnbReport, MmeReport) {
    let enb = lab.sim.status(lab.node("enb")).report().expect("an EnbReport");
    let mme = lab.sim.status(lab.node("mme")).report().expect("an MmeReport");
    (enb, mme)
}

/// tshark's fields of the capture's frames that match `filter`, with
/// SCTP's CRC32c checked (RFC 9260 Appendix A; tshark's default checks none).
fn tshark(lab: &mut SimLab, file: &str, filter: &str, fields: &[&str]) -> Option<Vec<String>> {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(file);
    lab.sim.write_pcapng(&path).expect("capture written");
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(&path)
        .args(["-o", "sctp.checksum:CRC-32C", "-Y", filter, "-T", "fields"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().ok()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect(),
    )
}

#[test]
fn the_enb_sets_up_s1_with_the_mme_over_sctp() {
    let mut lab = lab(TOPOLOGY, 1, 0.0);
    lab.sim.run_for(Duration::from_secs(2));
    let (enb, mme) = reports(&lab);
    let s1 = enb.s1.expect("the enb has an MME");
    assert_eq!(s1.state, S1State::Ready);
    assert_eq!(s1.gummei, Some((Plmn::parse("00101").unwrap(), 0x8001, 1)));
    assert_eq!(mme.enbs.len(), 1, "{:?}", mme.enbs);
    let row = &mme.enbs[0];
    assert_eq!((row.enb_id, row.s1.as_str()), (Some(1), "ready"));
    assert_eq!(row.tacs, [1]);
    assert_eq!(row.remote.to_string(), "172.16.3.1:36412");
    assert_eq!(mme.counters.s1_setups, 1);
    assert_eq!(mme.associations.len(), 1);
    if common::tshark_agrees(&mut lab.sim, "attach-s1-setup.pcapng") {
        // S1AP in the order of the procedure, each SCTP checksum right.
        let s1ap = tshark(
            &mut lab,
            "attach-s1-setup.pcapng",
            "s1ap",
            &["ip.src", "s1ap.procedureCode", "sctp.data_payload_proto_id"],
        )
        .expect("tshark ran before");
        assert_eq!(s1ap, ["172.16.3.1\t17\t18", "172.16.3.2\t17\t18"]);
        let bad = tshark(
            &mut lab,
            "attach-s1-setup.pcapng",
            "sctp && sctp.checksum.status != 1",
            &["frame.number"],
        );
        assert_eq!(bad, Some(vec![]), "frames whose CRC32c tshark refuses");
        let chunks = tshark(&mut lab, "attach-s1-setup.pcapng", "sctp.chunk_type == 1 || sctp.chunk_type == 2 || sctp.chunk_type == 10 || sctp.chunk_type == 11", &["sctp.chunk_type"]);
        assert_eq!(
            chunks.expect("tshark ran")[..4],
            ["1", "2", "10", "11"],
            "INIT, INIT ACK, COOKIE ECHO, COOKIE ACK"
        );
    }
}

#[test]
fn s1_setup_completes_with_a_fifth_of_the_s1mme_frames_lost() {
    for seed in 1..=6 {
        let mut lab = lab(TOPOLOGY, seed, 0.2);
        lab.sim.run_for(Duration::from_secs(60));
        let (enb, mme) = reports(&lab);
        assert_eq!(enb.s1.expect("an MME").state, S1State::Ready, "seed {seed}");
        assert_eq!(mme.counters.s1_setups, 1, "seed {seed}");
    }
}

#[test]
fn an_mme_of_another_plmn_refuses_the_s1_setup_and_the_enb_tries_again_later() {
    let text = TOPOLOGY.replace("config.plmn = \"00101\"", "config.plmn = \"00102\"");
    assert_ne!(text, TOPOLOGY);
    let mut lab = lab(&text, 1, 0.0);
    lab.sim.run_for(Duration::from_secs(2));
    let (enb, mme) = reports(&lab);
    assert_eq!(enb.s1.expect("an MME").state, S1State::Refused);
    assert_eq!((mme.counters.s1_setups, mme.counters.s1_setup_failures), (0, 1));
    assert_eq!(mme.enbs[0].s1, "refused");
    // A new association and a new request after the wait.
    lab.sim.run_for(Duration::from_secs(10));
    let (_, mme) = reports(&lab);
    assert_eq!(mme.counters.s1_setup_failures, 2);
    if common::tshark_agrees(&mut lab.sim, "attach-s1-refused.pcapng") {
        let causes = tshark(&mut lab, "attach-s1-refused.pcapng", "s1ap.S1SetupFailure_element", &["s1ap.misc"]);
        assert_eq!(causes.expect("tshark ran"), ["5", "5"], "unknown-PLMN");
    }
}
