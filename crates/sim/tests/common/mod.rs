//! Helpers shared by the scenario tests: reading the simulator's capture back,
//! and checking it with tshark when tshark is installed.

#![allow(dead_code)] // each scenario uses a different part

use d11_sim::Sim;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use std::process::Command;
use std::time::Duration;

/// Every frame of a pcapng with the name of the interface it was captured on.
pub fn frames(pcapng: &[u8]) -> Vec<(String, Vec<u8>)> {
    stamped_frames(pcapng)
        .into_iter()
        .map(|(name, _, frame)| (name, frame))
        .collect()
}

/// [`frames`] with each frame's timestamp since the Unix epoch.
fn stamped_frames(pcapng: &[u8]) -> Vec<(String, Duration, Vec<u8>)> {
    let mut r = PcapNgReader::new(pcapng).expect("a pcapng section");
    let mut names = vec![];
    let mut frames = vec![];
    while let Some(b) = r.next_block() {
        match b.expect("a well-formed block") {
            Block::InterfaceDescription(i) => names.push(
                i.options
                    .iter()
                    .find_map(|o| match o {
                        InterfaceDescriptionOption::IfName(n) => Some(n.to_string()),
                        _ => None,
                    })
                    .expect("every interface is named"),
            ),
            Block::EnhancedPacket(p) => frames.push((
                names[p.interface_id as usize].clone(),
                p.timestamp,
                p.data.to_vec(),
            )),
            _ => {}
        }
    }
    frames
}

/// Writes the capture under the test target directory and, if tshark is
/// installed, asserts it decodes every frame, none malformed, on the
/// interfaces and at the times our own reader sees. Returns false if tshark
/// is missing.
pub fn tshark_agrees(sim: &mut Sim, file: &str) -> bool {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(file);
    sim.write_pcapng(&path).expect("capture written");
    let tshark = |args: &[&str]| {
        Command::new("tshark")
            .arg("-r")
            .arg(&path)
            .args(args)
            .output()
    };
    let fields = [
        "-T",
        "fields",
        "-e",
        "frame.interface_name",
        "-e",
        "frame.time_epoch",
    ];
    let Ok(out) = tshark(&fields) else {
        eprintln!("tshark not installed: {} not checked", path.display());
        return false;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let ours: Vec<String> = stamped_frames(sim.pcapng())
        .into_iter()
        .map(|(n, t, _)| format!("{n}\t{}.{:09}", t.as_secs(), t.subsec_nanos()))
        .collect();
    assert_eq!(theirs, ours);
    let bad = tshark(&["-Y", "_ws.malformed || _ws.expert.severity >= error"]).expect("tshark ran");
    assert!(
        bad.status.success(),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&bad.stdout),
        "",
        "tshark flags these frames"
    );
    true
}

/// Runs `lab` until BGP has converged: every router with a speaker has
/// every neighbour Established, nothing waits to be sent or acknowledged,
/// and no Loc-RIB changed for a second of virtual time. Returns how long
/// that took; panics (naming what is not there yet) after `max`.
pub fn converge(lab: &mut d11_sim::SimLab, max: Duration) -> Duration {
    use d11_elements::router::RouterReport;
    let t0 = lab.now();
    let step = Duration::from_millis(100);
    let mut last: Option<Vec<u64>> = None;
    let mut stable = Duration::ZERO;
    loop {
        lab.sim.run_for(step);
        let mut changes = vec![];
        let mut missing = vec![];
        for name in lab.node_names() {
            let id = lab.node(&name);
            let st = lab.sim.status(id);
            let Ok(r) = st.report::<RouterReport>() else {
                continue;
            };
            let Some(b) = r.bgp else { continue };
            changes.push(b.rib_changes);
            for n in &b.neighbors {
                if n.state != d11_elements::bgp::FsmState::Established {
                    missing.push(format!("{name}→{} {}", n.address, n.state));
                }
            }
            if b.pending {
                missing.push(format!("{name} has updates pending"));
            }
        }
        if missing.is_empty() && last.as_ref() == Some(&changes) {
            stable += step;
        } else {
            stable = Duration::ZERO;
        }
        last = Some(changes);
        let took = lab.now().saturating_since(t0);
        if stable >= Duration::from_secs(1) {
            return took - stable;
        }
        assert!(took < max, "BGP not converged after {took:?}: {missing:?}");
    }
}

/// The phone's default bearer (IMSI 001010000000001, UE 10.45.0.2) put
/// straight into the enb's, sgw's and pgw's tables, for scenarios of the
/// user plane: the hosts' apps do not run in the simulator, so no
/// baseband attaches (crates/sim/tests/attach.rs runs the attach). The
/// TEIDs are the test's own: enb 0x100, sgw S1-U 0x200, S5 0x300, pgw 0x400;
/// the phone gets the address and default route its baseband would put.
pub fn phone_bearer(lab: &mut d11_sim::SimLab) {
    use d11_elements::bearer::Bearer;
    use d11_wire::gtpu::Teid;
    let b = Bearer {
        imsi: "001010000000001".into(),
        ue_ip: std::net::Ipv4Addr::new(10, 45, 0, 2),
        enb_teid: Teid(0x100),
        sgw_s1u_teid: Teid(0x200),
        sgw_s5_teid: Teid(0x300),
        pgw_teid: Teid(0x400),
    };
    let gw = Some(std::net::Ipv4Addr::new(10, 45, 0, 1));
    let ue = d11_wire::Ipv4Cidr::new(b.ue_ip, 16).expect("a prefix");
    lab.host("ue").set_address(ue, gw);
    let (enb, sgw, pgw) = (lab.node("enb"), lab.node("sgw"), lab.node("pgw"));
    let put = |r: Result<(), d11_elements::bearer::BearerError>| r.expect("a new bearer");
    put(lab
        .sim
        .node_mut::<d11_elements::enb::Enb>(enb)
        .bearers_mut()
        .put(b.clone()));
    put(lab
        .sim
        .node_mut::<d11_elements::sgw::Sgw>(sgw)
        .bearers_mut()
        .put(b.clone()));
    put(lab
        .sim
        .node_mut::<d11_elements::pgw::Pgw>(pgw)
        .bearers_mut()
        .put(b));
}
