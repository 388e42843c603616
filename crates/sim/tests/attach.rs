//! Chapter 3 in memory: the mobile core's control plane on the double11
//! topology (netns/double11.toml), on a virtual clock. Today: the eNodeB's
//! S1 Setup with the MME over the layer's SCTP, clean and under loss, and
//! refused for a PLMN the MME does not serve; the MME's Diameter peer with
//! the HSS (the hss app's own answers, `d11_apps::hss::Hss::answer` over
//! SQLite, behind the simulated hss host's TCP); every frame decoded by
//! tshark with SCTP's CRC32c checked.

mod common;

use d11_apps::hss::{Hss, HssSettings};
use d11_core::l3::TcpHandle;
use d11_elements::enb::EnbReport;
use d11_elements::mme::{MmeReport, Plmn};
use d11_elements::s1link::S1State;
use d11_elements::s6a::PeerState;
use d11_lab::Topology;
use d11_sim::{LinkParams, SimLab};
use d11_wire::diameter::{message_len, DiameterPacket};
use d11_wire::Ipv4Cidr;
use std::net::Ipv4Addr;
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
    let enb = lab
        .sim
        .status(lab.node("enb"))
        .report()
        .expect("an EnbReport");
    let mme = lab
        .sim
        .status(lab.node("mme"))
        .report()
        .expect("an MmeReport");
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
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    assert_eq!(
        (mme.counters.s1_setups, mme.counters.s1_setup_failures),
        (0, 1)
    );
    assert_eq!(mme.enbs[0].s1, "refused");
    // A new association and a new request after the wait.
    lab.sim.run_for(Duration::from_secs(10));
    let (_, mme) = reports(&lab);
    assert_eq!(mme.counters.s1_setup_failures, 2);
    if common::tshark_agrees(&mut lab.sim, "attach-s1-refused.pcapng") {
        let causes = tshark(
            &mut lab,
            "attach-s1-refused.pcapng",
            "s1ap.S1SetupFailure_element",
            &["s1ap.misc"],
        );
        assert_eq!(causes.expect("tshark ran"), ["5", "5"], "unknown-PLMN");
    }
}

/// The hss app's answers played behind the simulated hss host's TCP 3868.
struct HssPlay {
    hss: Hss,
    _dir: tempfile::TempDir,
    conn: TcpHandle,
    rx: Vec<u8>,
}

impl HssPlay {
    fn new(lab: &mut SimLab, text: &str) -> HssPlay {
        let topo = Topology::parse(text, "double11.toml").expect("loads");
        let node = topo
            .nodes
            .iter()
            .find(|n| n.name == "hss")
            .expect("an hss node");
        let settings: HssSettings =
            d11_core::settings::parse(&node.config, "hss").expect("hss settings");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let hss = Hss::open(
            &dir.path().join("hss.sqlite"),
            &settings,
            Ipv4Addr::new(172, 16, 5, 2),
            1,
        )
        .expect("the hss opens");
        let conn = lab.host("hss").tcp_listen(3868);
        HssPlay {
            hss,
            _dir: dir,
            conn,
            rx: vec![],
        }
    }

    /// Runs the lab for `d`, answering what the MME asks every 10 ms.
    fn run(&mut self, lab: &mut SimLab, d: Duration) {
        let end = lab.now() + d;
        while lab.now() < end {
            lab.sim.run_for(Duration::from_millis(10));
            let got = lab.host("hss").tcp_recv(self.conn);
            self.rx.extend_from_slice(&got);
            while let Some(Ok(n)) = message_len(&self.rx) {
                if n > self.rx.len() {
                    break;
                }
                let msg: Vec<u8> = self.rx.drain(..n).collect();
                let req = DiameterPacket::new_checked(&msg[..]).expect("the MME's message parses");
                if let Some(a) = self.hss.answer(&req) {
                    lab.host("hss").tcp_send(self.conn, &a);
                }
            }
        }
    }
}

#[test]
fn the_mme_opens_its_s6a_peer_with_the_hss_and_keeps_it_with_watchdogs() {
    let mut lab = lab(TOPOLOGY, 3, 0.0);
    let mut hss = HssPlay::new(&mut lab, TOPOLOGY);
    hss.run(&mut lab, Duration::from_secs(2));
    let (_, mme) = reports(&lab);
    let s6a = mme.s6a.expect("the mme has an hss");
    assert_eq!(s6a.state, PeerState::Open);
    assert_eq!(s6a.hss_host.as_deref(), Some("hss.epc.lab"));
    assert_eq!(s6a.counters.connects, 1);
    // Two watchdog intervals: two DWRs answered, the peer still open.
    hss.run(&mut lab, Duration::from_secs(65));
    let s6a = reports(&lab).1.s6a.expect("an hss");
    assert_eq!(
        (s6a.state, s6a.counters.watchdogs, s6a.counters.closed),
        (PeerState::Open, 2, 0)
    );
    assert_eq!(
        hss.hss.report().counters.peers,
        0,
        "peers count the app's TCP accepts, not these"
    );
    if common::tshark_agrees(&mut lab.sim, "attach-s6a.pcapng") {
        let diameter = tshark(
            &mut lab,
            "attach-s6a.pcapng",
            "diameter",
            &["ip.src", "diameter.cmd.code", "diameter.flags.request"],
        )
        .expect("tshark ran before");
        assert_eq!(
            diameter,
            [
                "172.16.5.1\t257\t1",
                "172.16.5.2\t257\t0",
                "172.16.5.1\t280\t1",
                "172.16.5.2\t280\t0",
                "172.16.5.1\t280\t1",
                "172.16.5.2\t280\t0",
            ],
            "CER/CEA, then DWR/DWA twice"
        );
    }
}

#[test]
fn an_hss_that_answers_nothing_costs_the_mme_its_connection_after_two_watchdog_intervals() {
    let mut lab = lab(TOPOLOGY, 4, 0.0);
    let mut hss = HssPlay::new(&mut lab, TOPOLOGY);
    hss.run(&mut lab, Duration::from_secs(2));
    assert_eq!(reports(&lab).1.s6a.expect("an hss").state, PeerState::Open);
    // The hss host stops reading: the DWR goes unanswered.
    lab.sim.run_for(Duration::from_secs(61));
    let s6a = reports(&lab).1.s6a.expect("an hss");
    assert_eq!(s6a.counters.closed, 1, "{s6a:?}");
    assert_ne!(s6a.state, PeerState::Open);
}

/// TS 35.208 test set 1, as double11.toml provisions the phone's USIM.
const K: &str = "465b5ce8b199b49faa5f0a2ee238a6bc";
const OPC: &str = "cd63cb71954a9f4e48a5994e37a02baf";
/// Attach Request with IMSI 001010000000001 and a PDN Connectivity Request
/// (crates/wire/fixtures/nas.py: read back by pycrate and tshark's nas-eps).
const ATTACH_REQUEST: &str = "07417108091010000000001002e0e000040201d011";

/// The phone's NAS in the radio carriage: Ethernet from its MAC,
/// EtherType 0x88B5, the NAS PDU as payload.
fn radio_nas(lab: &mut SimLab, nas: &[u8]) {
    let mac = lab.host("ue").mac();
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(nas);
    lab.host("ue").send_frame(f);
}

/// The EMM messages the phone got on the radio.
fn nas_down(lab: &mut SimLab) -> Vec<d11_wire::nas::EmmMessage> {
    let mac = lab.host("ue").mac();
    lab.host("ue")
        .take_frames()
        .into_iter()
        .filter(|f| f[12..14] == [0x88, 0xb5])
        .map(|f| {
            assert_eq!(f[..6], mac.0, "to the phone's MAC");
            d11_wire::nas::EmmMessage::parse(&f[14..]).expect("plain EMM")
        })
        .collect()
}

fn key(s: &str) -> [u8; 16] {
    d11_wire::hex(s).try_into().unwrap()
}

#[test]
fn an_attach_request_on_the_radio_brings_the_phone_an_authentication_request_its_usim_accepts() {
    let mut lab = lab(TOPOLOGY, 5, 0.0);
    let mut hss = HssPlay::new(&mut lab, TOPOLOGY);
    hss.run(&mut lab, Duration::from_secs(1));
    radio_nas(&mut lab, &d11_wire::hex(ATTACH_REQUEST));
    hss.run(&mut lab, Duration::from_secs(1));
    let got = nas_down(&mut lab);
    let [d11_wire::nas::EmmMessage::AuthenticationRequest { ksi, rand, autn }] = got[..] else {
        panic!("one Authentication Request: {got:?}");
    };
    assert_eq!(ksi, 0);
    // The HSS's vector is the USIM's: AUTN checks with K/OPc.
    let usim = d11_security::Milenage::new(&key(K), &key(OPC));
    let plmn = Plmn::parse("00101").unwrap().0;
    let answer = d11_security::aka::answer(&usim, &rand, &autn, &[0; 6], &plmn);
    assert!(
        matches!(answer, d11_security::aka::Answer::Res { .. }),
        "{answer:?}"
    );
    let (enb, mme) = reports(&lab);
    assert_eq!(mme.ues.len(), 1);
    let ue = &mme.ues[0];
    assert_eq!(ue.imsi, "001010000000001");
    assert_eq!(ue.emm, d11_elements::mme::EmmState::WaitAuthentication);
    let enb_ue = &enb.s1.expect("an MME").ues[0];
    assert_eq!(
        (enb_ue.enb_ue_id, enb_ue.mme_ue_id),
        (ue.enb_ue_id, Some(ue.mme_ue_id))
    );
    assert_eq!(mme.counters.vectors, 1);
    if common::tshark_agrees(&mut lab.sim, "attach-auth.pcapng") {
        let order = tshark(
            &mut lab,
            "attach-auth.pcapng",
            "s1ap.procedureCode != 17 || (diameter && diameter.cmd.code == 318)",
            &[
                "ip.src",
                "s1ap.procedureCode",
                "diameter.cmd.code",
                "nas_eps.nas_msg_emm_type",
            ],
        )
        .expect("tshark ran");
        assert_eq!(
            order,
            [
                "172.16.3.1\t12\t\t0x41",
                "172.16.5.1\t\t318\t",
                "172.16.5.2\t\t318\t",
                "172.16.3.2\t11\t\t0x52",
            ],
            "Initial UE Message (Attach Request), AIR, AIA, Downlink NAS Transport (Authentication Request)"
        );
        // The radio carriage, with the lab's Lua dissector for EtherType 0x88B5.
        let lua = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/wireshark/d11-radio-nas.lua"
        );
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("attach-auth.pcapng");
        let out = Command::new("tshark")
            .args(["-X", &format!("lua_script:{lua}"), "-r"])
            .arg(&path)
            .args([
                "-Y",
                "eth.type == 0x88b5",
                "-T",
                "fields",
                "-e",
                "nas_eps.nas_msg_emm_type",
                "-e",
                "_ws.malformed",
            ])
            .output()
            .expect("tshark ran");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "0x41\t\n0x52\t\n",
            "Attach Request up, Authentication Request down"
        );
    }
}

#[test]
fn an_unknown_imsi_is_rejected_with_emm_cause_8() {
    use d11_wire::nas::{EmmMessage, MobileIdentity};
    // The HSS knows 001010000000001 and a range of 10,000 from ...002. (A
    // barred subscriber gets its vector: the HSS refuses it at Update
    // Location, after authentication — the next slice.)
    let mut lab = lab(TOPOLOGY, 6, 0.0);
    let mut hss = HssPlay::new(&mut lab, TOPOLOGY);
    hss.run(&mut lab, Duration::from_secs(1));
    let attach = EmmMessage::AttachRequest {
        ksi: 7,
        attach_type: 1,
        identity: MobileIdentity::Imsi("001019999999999".into()),
        ue_network_capability: vec![0xe0, 0xe0],
        esm: d11_wire::hex("0201d011"),
    };
    radio_nas(&mut lab, &attach.to_vec());
    hss.run(&mut lab, Duration::from_secs(1));
    assert_eq!(nas_down(&mut lab), [EmmMessage::AttachReject { cause: 8 }]);
    assert_eq!(reports(&lab).1.ues[0].rejected, Some(8));
}

/// The phone's baseband (`d11_apps::baseband`) with the USIM the topology
/// provisions for the phone, `imsi` changed where a test needs another.
fn baseband(imsi: &str) -> d11_apps::baseband::Baseband {
    let usim = d11_apps::baseband::UsimConfig {
        imsi: imsi.into(),
        k: K.into(),
        opc: OPC.into(),
    };
    d11_apps::baseband::Baseband::new(&usim, Plmn::parse("00101").unwrap().0).expect("a USIM")
}

/// Runs the lab for `d` with the baseband answering every NAS message the
/// phone gets on the radio; returns the EMM messages it got.
fn phone(
    lab: &mut SimLab,
    hss: &mut HssPlay,
    bb: &mut d11_apps::baseband::Baseband,
    d: Duration,
) -> Vec<d11_wire::nas::EmmMessage> {
    let mut seen = vec![];
    let end = lab.now() + d;
    while lab.now() < end {
        hss.run(lab, Duration::from_millis(20));
        let frames = lab.host("ue").take_frames();
        for f in frames.into_iter().filter(|f| f[12..14] == [0x88, 0xb5]) {
            let nas = &f[14..];
            let (inner, ciphered) = match d11_wire::nas::Pdu::parse(nas).expect("NAS") {
                d11_wire::nas::Pdu::Plain(m) => (m, false),
                d11_wire::nas::Pdu::Protected {
                    header, message, ..
                } => (message, d11_wire::nas::sec::ciphers(header)),
            };
            // Under EEA2 only the baseband reads a ciphered message.
            match d11_wire::nas::EmmMessage::parse(inner) {
                Ok(m) => seen.push(m),
                Err(e) => assert!(ciphered, "EMM: {e}"),
            }
            if let Some(reply) = bb.on_nas(nas).expect("the network's NAS checks") {
                radio_nas(lab, &reply);
            }
            // As the baseband app configures eth0: the attach's address
            // and the default route via the pgw's 10.45.0.1.
            if let Some(a) = bb.address() {
                if lab.host("ue").address().addr() != a {
                    let gw = Some(Ipv4Addr::new(10, 45, 0, 1));
                    lab.host("ue")
                        .set_address(Ipv4Cidr::new(a, 16).unwrap(), gw);
                }
            }
        }
    }
    seen
}

fn attach(
    text: &str,
    seed: u64,
    bb: &mut d11_apps::baseband::Baseband,
) -> (SimLab, HssPlay, Vec<d11_wire::nas::EmmMessage>) {
    let mut lab = lab(text, seed, 0.0);
    let mut hss = HssPlay::new(&mut lab, text);
    hss.run(&mut lab, Duration::from_secs(1));
    let req = bb.attach_request();
    radio_nas(&mut lab, &req);
    let seen = phone(&mut lab, &mut hss, bb, Duration::from_secs(2));
    (lab, hss, seen)
}

fn types(seen: &[d11_wire::nas::EmmMessage]) -> Vec<&'static str> {
    use d11_wire::nas::EmmMessage::*;
    seen.iter()
        .map(|m| match m {
            AuthenticationRequest { .. } => "authentication request",
            AuthenticationReject => "authentication reject",
            SecurityModeCommand { .. } => "security mode command",
            AttachReject { .. } => "attach reject",
            AttachAccept { .. } => "attach accept",
            _ => "other",
        })
        .collect()
}

#[test]
fn the_phone_authenticates_secures_nas_with_eia2_and_the_hss_takes_its_location() {
    use d11_apps::baseband::UeState;
    let mut bb = baseband("001010000000001");
    let (mut lab, hss, seen) = attach(TOPOLOGY, 7, &mut bb);
    assert_eq!(
        types(&seen),
        [
            "authentication request",
            "security mode command",
            "attach accept"
        ]
    );
    let d11_wire::nas::EmmMessage::SecurityModeCommand {
        eea,
        eia,
        ue_security_capability,
        ..
    } = &seen[1]
    else {
        unreachable!()
    };
    assert_eq!(
        (*eea, *eia, &ue_security_capability[..]),
        (0, 2, &[0xe0, 0xe0][..]),
        "EEA0, EIA2, ours replayed"
    );
    assert_eq!(bb.state(), UeState::Attached);
    let mme = reports(&lab).1;
    assert_eq!(mme.ues[0].emm, d11_elements::mme::EmmState::Registered);
    let row = hss
        .hss
        .report()
        .listed
        .into_iter()
        .find(|r| r.imsi == "001010000000001")
        .unwrap();
    assert_eq!(
        row.last_mme.as_deref(),
        Some("mme.epc.lab"),
        "the HSS knows where it attached"
    );
    if common::tshark_agrees(&mut lab.sim, "attach-secured.pcapng") {
        let order = tshark(
            &mut lab,
            "attach-secured.pcapng",
            "s1ap.procedureCode != 17 || (diameter && diameter.cmd.code != 257 && diameter.cmd.code != 280)",
            &["ip.src", "s1ap.procedureCode", "diameter.cmd.code", "nas_eps.security_header_type", "nas_eps.nas_msg_emm_type"],
        )
        .expect("tshark ran");
        assert_eq!(
            order,
            [
                "172.16.3.1\t12\t\t0\t0x41",
                "172.16.5.1\t\t318\t\t",
                "172.16.5.2\t\t318\t\t",
                "172.16.3.2\t11\t\t0\t0x52",
                "172.16.3.1\t13\t\t0\t0x53",
                "172.16.3.2\t11\t\t3,0\t0x5d",
                "172.16.3.1\t13\t\t4,0\t0x5e",
                "172.16.5.1\t\t316\t\t",
                "172.16.5.2\t\t316\t\t",
                "172.16.3.2\t9\t\t2,0\t0x42",
                "172.16.3.1\t9\t\t\t",
                "172.16.3.1\t13\t\t2,0\t0x43",
            ],
            "attach, AIR/AIA, authentication, security mode (EIA2, EEA0: readable), ULR/ULA, \
             Initial Context Setup with the Attach Accept and its response, Attach Complete"
        );
    }
}

/// `netns/double11.toml` with the mme's `config.nas_ciphering = "eea2"`.
fn with_eea2() -> String {
    let text = TOPOLOGY.replace(
        "config.hss = \"172.16.5.2\"",
        "config.hss = \"172.16.5.2\"\nconfig.nas_ciphering = \"eea2\"",
    );
    assert_ne!(text, TOPOLOGY);
    text
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn with_nas_ciphering_eea2_the_attach_completes_and_its_nas_is_ciphered_on_the_wire() {
    use d11_apps::baseband::UeState;
    use d11_wire::nas::EmmMessage;
    // The same attach under EEA0 first: its Attach Accept, plain in the
    // capture, is what EEA2 must hide.
    let mut bb0 = baseband("001010000000001");
    let (mut lab0, _, seen0) = attach(TOPOLOGY, 15, &mut bb0);
    assert_eq!(bb0.state(), UeState::Attached);
    let accept = seen0
        .iter()
        .find(|m| matches!(m, EmmMessage::AttachAccept { .. }))
        .expect("an Attach Accept")
        .to_vec();
    assert!(
        contains(lab0.sim.pcapng(), &accept),
        "EEA0 leaves it readable"
    );

    let text = with_eea2();
    let mut bb = baseband("001010000000001");
    let (mut lab, _, seen) = attach(&text, 15, &mut bb);
    // The test reads the plain Security Mode Command; the Attach Accept
    // after it is ciphered, read by the baseband alone.
    assert_eq!(
        types(&seen),
        ["authentication request", "security mode command"]
    );
    let EmmMessage::SecurityModeCommand { eea, eia, .. } = &seen[1] else {
        unreachable!()
    };
    assert_eq!((*eea, *eia), (2, 2), "128-EEA2, 128-EIA2");
    assert_eq!(bb.state(), UeState::Attached, "the baseband deciphered it");
    assert_eq!(bb.address(), bb0.address(), "the same Attach Accept");
    let (_, mme) = reports(&lab);
    assert_eq!(mme.ues[0].emm, d11_elements::mme::EmmState::Registered);
    assert_eq!(
        mme.counters.nas_dropped, 0,
        "Security Mode Complete and Attach Complete deciphered"
    );
    assert!(
        !contains(lab.sim.pcapng(), &accept),
        "the plain Attach Accept is nowhere in the capture"
    );
    // The eNodeB could not read the UE's address in the ciphered Attach
    // Accept: the phone's first packet binds its E-RAB, and the ping
    // crosses the tunnel.
    assert_eq!(ping_gateway(&mut lab, 1), [1], "the user plane under EEA2");
    if common::tshark_agrees(&mut lab.sim, "attach-eea2.pcapng") {
        let nas = tshark(
            &mut lab,
            "attach-eea2.pcapng",
            "nas-eps",
            &[
                "ip.src",
                "nas_eps.security_header_type",
                "nas_eps.nas_msg_emm_type",
            ],
        )
        .expect("tshark ran");
        assert_eq!(
            nas,
            [
                "172.16.3.1\t0\t0x41",
                "172.16.3.2\t0\t0x52",
                "172.16.3.1\t0\t0x53",
                "172.16.3.2\t3,0\t0x5d",
                "172.16.3.1\t4\t",
                "172.16.3.2\t2\t",
                "172.16.3.1\t2\t",
            ],
            "after Security Mode Command tshark sees ciphered NAS it cannot read"
        );
    }
}

#[test]
fn a_barred_subscriber_is_rejected_with_7_after_update_location_under_nas_integrity() {
    use d11_apps::baseband::UeState;
    let text = TOPOLOGY.replace(
        "opc = \"cd63cb71954a9f4e48a5994e37a02baf\" } ]",
        "opc = \"cd63cb71954a9f4e48a5994e37a02baf\", barred = true } ]",
    );
    assert_ne!(text, TOPOLOGY);
    let mut bb = baseband("001010000000001");
    let (lab, _, seen) = attach(&text, 8, &mut bb);
    assert_eq!(
        types(&seen),
        [
            "authentication request",
            "security mode command",
            "attach reject"
        ]
    );
    assert_eq!(
        bb.state(),
        UeState::Rejected(7),
        "the reject's MAC checked by the phone"
    );
    assert_eq!(reports(&lab).1.ues[0].rejected, Some(7));
}

#[test]
fn a_wrong_res_gets_authentication_reject() {
    use d11_apps::baseband::UeState;
    // A USIM with another K: its RES is not the HSS's XRES... but its AUTN
    // check fails first (MAC failure, #20), so play the wrong RES by hand.
    let mut lab = lab(TOPOLOGY, 9, 0.0);
    let mut hss = HssPlay::new(&mut lab, TOPOLOGY);
    hss.run(&mut lab, Duration::from_secs(1));
    let mut bb = baseband("001010000000001");
    let req = bb.attach_request();
    radio_nas(&mut lab, &req);
    hss.run(&mut lab, Duration::from_secs(1));
    assert_eq!(types(&nas_down(&mut lab)), ["authentication request"]);
    let wrong = d11_wire::nas::EmmMessage::AuthenticationResponse { res: vec![0; 8] };
    radio_nas(&mut lab, &wrong.to_vec());
    let seen = phone(&mut lab, &mut hss, &mut bb, Duration::from_secs(1));
    assert_eq!(types(&seen), ["authentication reject"]);
    assert_eq!(bb.state(), UeState::Rejected(0));
}

#[test]
fn a_usim_ahead_of_the_hss_resynchronises_through_auts_and_attaches() {
    use d11_apps::baseband::UeState;
    let mut bb = baseband("001010000000001");
    bb.set_sqn_ms(1 << 20);
    let (lab, hss, seen) = attach(TOPOLOGY, 10, &mut bb);
    assert_eq!(
        types(&seen),
        [
            "authentication request",
            "authentication request",
            "security mode command",
            "attach accept"
        ],
        "synch failure, then a fresh vector from the resynchronised HSS"
    );
    assert_eq!(bb.state(), UeState::Attached);
    assert_eq!(hss.hss.report().counters.resyncs, 1);
    assert_eq!(
        reports(&lab).1.ues[0].emm,
        d11_elements::mme::EmmState::Registered
    );
}

#[test]
fn a_phone_offering_eia0_alone_is_rejected_with_23() {
    use d11_apps::baseband::UeState;
    let mut bb = baseband("001010000000001");
    bb.set_capability(vec![0x80, 0x80]);
    let (_, _, seen) = attach(TOPOLOGY, 11, &mut bb);
    assert_eq!(types(&seen), ["authentication request", "attach reject"]);
    assert_eq!(bb.state(), UeState::Rejected(23));
}

#[test]
fn a_rejected_phone_attaches_again_on_the_same_radio_and_s1_context() {
    use d11_apps::baseband::UeState;
    let mut stranger = baseband("001019999999999");
    let (mut lab, mut hss, seen) = attach(TOPOLOGY, 12, &mut stranger);
    assert_eq!(types(&seen), ["attach reject"]);
    assert_eq!(stranger.state(), UeState::Rejected(8));
    // The same phone (MAC) with the right USIM: Uplink NAS Transport this
    // time, and the MME starts the attach over on the same context.
    let mut bb = baseband("001010000000001");
    let req = bb.attach_request();
    radio_nas(&mut lab, &req);
    let seen = phone(&mut lab, &mut hss, &mut bb, Duration::from_secs(2));
    assert_eq!(
        types(&seen),
        [
            "authentication request",
            "security mode command",
            "attach accept"
        ]
    );
    assert_eq!(bb.state(), UeState::Attached);
    let mme = reports(&lab).1;
    assert_eq!(mme.ues.len(), 1, "one context, reused");
    assert_eq!(
        (mme.ues[0].imsi.as_str(), mme.ues[0].rejected),
        ("001010000000001", None)
    );
}

fn gateways(lab: &SimLab) -> (d11_elements::sgw::SgwReport, d11_elements::pgw::PgwReport) {
    let sgw = lab
        .sim
        .status(lab.node("sgw"))
        .report()
        .expect("an SgwReport");
    let pgw = lab
        .sim
        .status(lab.node("pgw"))
        .report()
        .expect("a PgwReport");
    (sgw, pgw)
}

#[test]
fn the_secured_phone_gets_its_default_bearer_from_create_session_on_s11_and_s5() {
    let mut bb = baseband("001010000000001");
    let (mut lab, _, _) = attach(TOPOLOGY, 14, &mut bb);
    let mme = reports(&lab).1;
    let ue = &mme.ues[0];
    assert_eq!(ue.emm, d11_elements::mme::EmmState::Registered);
    assert_eq!(ue.apn, "internet", "the APN of the HSS's subscription");
    // The first free address of the PGW's pool (10.45.0.1 is the UE's
    // gateway): no bearer is written in the topology.
    assert_eq!(ue.ue_ip, Some(Ipv4Addr::new(10, 45, 0, 2)));
    assert_eq!(mme.counters.sessions_created, 1);
    let (sgw, pgw) = gateways(&lab);
    let (ss, ps) = (&sgw.sessions, &pgw.sessions);
    assert_eq!(ss.len(), 1, "{ss:?}");
    assert_eq!(ps.len(), 1, "{ps:?}");
    assert_eq!(
        (ss[0].imsi.as_str(), ss[0].ue_ip, ss[0].state.as_str()),
        (
            "001010000000001",
            Some(Ipv4Addr::new(10, 45, 0, 2)),
            "active"
        )
    );
    assert_eq!(ss[0].peer.to_string(), "172.16.4.1:2123");
    assert_eq!(ps[0].peer.to_string(), "172.16.2.1:2123");
    assert_eq!(ps[0].apn, "internet");
    assert_eq!(bb.address(), Some(Ipv4Addr::new(10, 45, 0, 2)));
    // The DNS server the phone asked for in its PCO: the pgw's config.dns,
    // through the sgw and the mme into the Attach Accept.
    assert_eq!(bb.dns(), [Ipv4Addr::new(198, 18, 2, 2)]);
    assert_eq!(
        (mme.counters.context_setups, mme.counters.bearers_modified),
        (1, 1)
    );
    // The user plane follows: a ping to the phone's gateway (the PGW
    // answers it down the tunnel) rides the TEIDs the attach made.
    lab.host("ue").ping(Ipv4Addr::new(10, 45, 0, 1), 64, 7, 9);
    lab.sim.run_for(Duration::from_millis(100));
    let replies: Vec<_> = lab
        .host("ue")
        .take_received()
        .into_iter()
        .filter_map(|r| match r.msg {
            d11_sim::Message::EchoReply { seq, .. } => Some((r.src, seq)),
            _ => None,
        })
        .collect();
    assert_eq!(replies, [(Ipv4Addr::new(10, 45, 0, 1), 9)]);
    assert_eq!(pgw.tunnel.bearers_total, 1, "the attach's bearer alone");
    let b = &sgw.tunnel.bearers[0];
    let (up, down) = (b.sgw_s1u_teid.0, b.enb_teid.0);
    assert!(
        up >= 0x0200_0000 && down >= 0x0100_0000,
        "{b:?}: the gateways' own pools"
    );
    if common::tshark_agrees(&mut lab.sim, "attach-session.pcapng") {
        let gtp = tshark(
            &mut lab,
            "attach-session.pcapng",
            "gtpv2 && gtpv2.message_type > 2",
            &[
                "ip.src",
                "ip.dst",
                "gtpv2.message_type",
                "gtpv2.cause",
                "gtpv2.pdn_addr_and_prefix.ipv4",
            ],
        )
        .expect("tshark ran");
        assert_eq!(
            gtp,
            [
                "172.16.4.1\t172.16.4.2\t32\t\t0.0.0.0",
                "172.16.2.1\t172.16.2.2\t32\t\t0.0.0.0",
                "172.16.2.2\t172.16.2.1\t33\t16,16\t10.45.0.2",
                "172.16.4.2\t172.16.4.1\t33\t16,16\t10.45.0.2",
                "172.16.4.1\t172.16.4.2\t34\t\t",
                "172.16.4.2\t172.16.4.1\t35\t16,16\t",
            ],
            "Create Session on S11, on S5-C, their responses back, then Modify Bearer"
        );
        // The PCO as tshark reads it: the phone's DNS Server IPv4 Address
        // Request (container 0x000d) in Create Session on S11 and S5-C, the
        // pgw's answer in both responses and in the Attach Accept inside
        // Initial Context Setup (NAS-EPS on S1-MME).
        let pco = tshark(
            &mut lab,
            "attach-session.pcapng",
            "gsm_a.gm.sm.pco_pid && !_ws.malformed",
            &[
                "ip.src",
                "ip.dst",
                "gsm_a.gm.sm.pco_pid",
                "gsm_a.gm.sm.pco.dns.ipv4",
            ],
        )
        .expect("tshark ran");
        let dns: Vec<_> = pco.iter().filter(|l| l.ends_with("198.18.2.2")).collect();
        assert_eq!(
            dns,
            [
                "172.16.2.2\t172.16.2.1\t0x000d\t198.18.2.2",
                "172.16.4.2\t172.16.4.1\t0x000d\t198.18.2.2",
                "172.16.3.2\t172.16.3.1\t0x000d\t198.18.2.2",
            ],
            "{pco:?}"
        );
        for asked in [
            "172.16.4.1\t172.16.4.2\t0x000d\t",
            "172.16.2.1\t172.16.2.2\t0x000d\t",
        ] {
            assert!(pco.iter().any(|l| l == asked), "{asked:?} in {pco:?}");
        }
        // The ping on S1-U: up to the SGW's TEID, down to the eNodeB's,
        // both made by the attach.
        let teids = tshark(
            &mut lab,
            "attach-session.pcapng",
            "gtp && icmp",
            &["ip.dst", "gtp.teid"],
        )
        .expect("tshark ran");
        assert_eq!(teids.len(), 4, "{teids:?}");
        assert_eq!(teids[0], format!("172.16.1.2,10.45.0.1\t{up:#010x}"));
        assert_eq!(teids[3], format!("172.16.1.1,10.45.0.2\t{down:#010x}"));
        // The Attach Accept in Initial Context Setup: the bearer's address.
        let ics = tshark(
            &mut lab,
            "attach-session.pcapng",
            "s1ap.procedureCode == 9",
            &[
                "nas_eps.esm.pdn_ipv4",
                "s1ap.gTP_TEID",
                "s1ap.transportLayerAddressIPv4",
            ],
        )
        .expect("tshark ran");
        assert_eq!(
            ics,
            [
                format!("10.45.0.2\t{up:08x}\t172.16.1.2"),
                format!("\t{down:08x}\t172.16.1.1")
            ],
            "the SGW's S1-U F-TEID down, the eNodeB's up"
        );
    }
}

/// Pings the phone's gateway (the pgw answers down the tunnel); the
/// replies' sequence numbers.
fn ping_gateway(lab: &mut SimLab, seq: u16) -> Vec<u16> {
    lab.host("ue").ping(Ipv4Addr::new(10, 45, 0, 1), 64, 7, seq);
    lab.sim.run_for(Duration::from_millis(100));
    lab.host("ue")
        .take_received()
        .into_iter()
        .filter_map(|r| match r.msg {
            d11_sim::Message::EchoReply { seq, .. } => Some(seq),
            _ => None,
        })
        .collect()
}

#[test]
fn detach_then_attach_again_brings_new_teids_and_the_old_ones_are_gone() {
    use d11_apps::baseband::UeState;
    let mut bb = baseband("001010000000001");
    let (mut lab, mut hss, _) = attach(TOPOLOGY, 16, &mut bb);
    assert_eq!(bb.state(), UeState::Attached);
    assert_eq!(ping_gateway(&mut lab, 1), [1]);
    let imsi = "001010000000001";
    let sgw_teid = |lab: &SimLab| {
        gateways(lab)
            .0
            .tunnel
            .bearers
            .iter()
            .find(|b| b.imsi == imsi)
            .map(|b| b.sgw_s1u_teid.0)
    };
    let old = sgw_teid(&lab).expect("the attach's bearer");
    assert!(old >= 0x0200_0000, "the sgw's own pool: {old:#x}");
    // The phone detaches: Delete Session, Detach Accept, UE Context Release.
    let req = bb.detach_request().expect("attached");
    radio_nas(&mut lab, &req);
    phone(&mut lab, &mut hss, &mut bb, Duration::from_secs(1));
    assert_eq!(bb.state(), UeState::Deregistered);
    assert_eq!(bb.address(), None);
    let mme = reports(&lab).1;
    assert!(mme.ues.is_empty(), "released: {:?}", mme.ues);
    assert_eq!((mme.counters.detaches, mme.counters.releases), (1, 1));
    let (sgw, pgw) = gateways(&lab);
    assert!(sgw.sessions.is_empty() && pgw.sessions.is_empty());
    assert_eq!(sgw_teid(&lab), None, "no bearer on the sgw");
    let enb: d11_elements::enb::EnbReport = lab.sim.status(lab.node("enb")).report().unwrap();
    assert!(enb.tunnel.bearers.iter().all(|b| b.imsi != imsi));
    assert!(
        enb.s1.expect("s1").ues.is_empty(),
        "the enb's UE context released"
    );
    assert!(ping_gateway(&mut lab, 2).is_empty(), "no bearer, no ping");
    // Attach again: new TEIDs from the gateways' own pools.
    let req = bb.attach_request();
    radio_nas(&mut lab, &req);
    phone(&mut lab, &mut hss, &mut bb, Duration::from_secs(2));
    assert_eq!(bb.state(), UeState::Attached);
    // The pool's next address: the PGW hands them out round the pool.
    assert_eq!(bb.address(), Some(Ipv4Addr::new(10, 45, 0, 3)));
    let teid = sgw_teid(&lab).expect("a new bearer");
    assert!(teid >= 0x0200_0000 && teid != old, "a new TEID: {teid:#x}");
    assert_eq!(ping_gateway(&mut lab, 3), [3]);
    if common::tshark_agrees(&mut lab.sim, "attach-detach.pcapng") {
        let seq = tshark(
            &mut lab,
            "attach-detach.pcapng",
            "(s1ap.procedureCode == 23) || (s1ap && nas_eps.nas_msg_emm_type >= 0x45 && nas_eps.nas_msg_emm_type <= 0x46) || gtpv2.message_type == 36 || gtpv2.message_type == 37",
            &["ip.src", "s1ap.procedureCode", "gtpv2.message_type", "nas_eps.nas_msg_emm_type"],
        )
        .expect("tshark ran");
        assert_eq!(
            seq,
            [
                "172.16.3.1\t13\t\t0x45",
                "172.16.4.1\t\t36\t",
                "172.16.2.1\t\t36\t",
                "172.16.4.2\t\t37\t",
                "172.16.3.2\t11\t\t0x46",
                "172.16.3.2\t23\t\t",
                "172.16.3.1\t23\t\t",
                "172.16.2.2\t\t37\t",
            ],
            "Detach Request, Delete Session (S11, and from the sgw on S5-C; the sgw \
             answers the mme at once), Detach Accept, UE Context Release"
        );
    }
}

#[test]
fn a_phone_without_an_address_gets_the_first_free_one_of_the_pool() {
    // IMSI ...002 (d11 load's first) has no address: the PGW gives it the
    // first free one of its pool, after the gateway's 10.45.0.1.
    let mut bb = baseband("001010000000002");
    let (lab, _, _) = attach(TOPOLOGY, 15, &mut bb);
    let ue = &reports(&lab).1.ues[0];
    assert_eq!(ue.ue_ip, Some(Ipv4Addr::new(10, 45, 0, 2)));
    let (sgw, pgw) = gateways(&lab);
    assert_eq!(sgw.tunnel.bearers_total, 1);
    assert_eq!(pgw.sessions[0].ue_ip, Some(Ipv4Addr::new(10, 45, 0, 2)));
    // The bearer on both gateways: TEIDs the gateways chose.
    let imsi = "001010000000002";
    let b = sgw.tunnel.bearers.iter().find(|b| b.imsi == imsi);
    let b = b.expect("the sgw's bearer");
    assert!(b.sgw_s1u_teid.0 >= 0x0200_0000 && b.sgw_s5_teid.0 >= 0x0200_0000);
    // Modify Bearer gave the SGW the eNodeB's TEID, the first it made.
    assert_eq!(b.enb_teid.0, 0x0100_0000);
    let p = pgw.tunnel.bearers.iter().find(|b| b.imsi == imsi);
    let p = p.expect("the pgw's bearer");
    assert_eq!((p.pgw_teid, p.sgw_s5_teid), (b.pgw_teid, b.sgw_s5_teid));
    assert_eq!(p.ue_ip, Ipv4Addr::new(10, 45, 0, 2));
}

#[test]
fn the_mme_echoes_its_sgw_on_s11_and_learns_its_recovery_counter() {
    use d11_elements::sgw::SgwReport;
    let mut lab = lab(TOPOLOGY, 13, 0.0);
    lab.sim.run_for(Duration::from_secs(1));
    let mme = reports(&lab).1;
    let sgw: SgwReport = lab
        .sim
        .status(lab.node("sgw"))
        .report()
        .expect("an SgwReport");
    let (s11, sgw_s11) = (
        mme.s11.expect("the mme has an sgw"),
        sgw.s11.expect("the sgw has s11"),
    );
    assert_eq!(s11.local.to_string(), "172.16.4.1:2123");
    assert_eq!(s11.peers[0].address.to_string(), "172.16.4.2");
    assert_eq!(
        s11.peers[0].recovery,
        Some(sgw_s11.recovery),
        "the Echo Response's Recovery"
    );
    assert_eq!(
        (
            s11.counters.echoes,
            s11.counters.responses_received,
            s11.outstanding
        ),
        (1, 1, 0)
    );
    assert_eq!(
        sgw_s11.peers[0].recovery,
        Some(s11.recovery),
        "the Echo Request's Recovery"
    );
    // Every 60 s after.
    lab.sim.run_for(Duration::from_secs(60));
    assert_eq!(reports(&lab).1.s11.expect("s11").counters.echoes, 2);
    if common::tshark_agrees(&mut lab.sim, "attach-s11-echo.pcapng") {
        let gtp = tshark(
            &mut lab,
            "attach-s11-echo.pcapng",
            "gtpv2",
            &["ip.src", "gtpv2.message_type"],
        )
        .expect("tshark ran");
        assert_eq!(gtp.len(), 4, "{gtp:?}");
        assert_eq!(
            gtp[..2],
            ["172.16.4.1\t1", "172.16.4.2\t2"],
            "Echo Request, Echo Response"
        );
    }
}

#[test]
fn an_echo_lost_on_s11_is_sent_again_after_t3() {
    let mut retransmitted = 0;
    for seed in 1..=8 {
        let topo = Topology::parse(TOPOLOGY, "double11.toml").expect("loads");
        let mut lab = SimLab::new(&topo, seed, |w| LinkParams {
            delay: Duration::from_micros(100),
            loss: if w.name() == "mme:s11--sgw:s11" {
                0.5
            } else {
                0.0
            },
        })
        .expect("builds");
        lab.sim.run_for(Duration::from_secs(10));
        let s11 = reports(&lab).1.s11.expect("s11");
        let c = &s11.counters;
        // Answered within N3 tries, or given up after them.
        assert!(c.responses_received + c.timeouts == 1, "seed {seed}: {c:?}");
        assert!(
            c.retransmissions < 3,
            "at most N3 = 3 tries, seed {seed}: {c:?}"
        );
        if c.responses_received == 1 {
            assert!(s11.peers[0].recovery.is_some());
        }
        retransmitted += c.retransmissions;
    }
    assert!(
        retransmitted > 0,
        "half the frames lost: some seed retransmits"
    );
}

/// `d11 load`'s phones (`d11_apps::ran::Ran`) on the ue host's radio:
/// each its own `Baseband` with an IMSI of the hss's range, from its own MAC.
fn load_phones(phones: usize, window: usize) -> d11_apps::ran::Ran {
    use d11_apps::ran::{Ran, RanConfig, UsimRange};
    let dir = tempfile::tempdir().expect("a temporary directory");
    let paths = d11_apps::pki::PkiPaths::new(dir.path());
    d11_apps::pki::make(&paths, "simload", &["www.geektime.com"]).expect("a PKI");
    let tls = d11_apps::pki::client_config(&paths.root_cert(), false).expect("TLS");
    Ran::new(RanConfig {
        usims: UsimRange {
            first_imsi: "001010000000002".into(),
            count: 10_000,
            k: K.into(),
            opc: OPC.into(),
        },
        plmn: Plmn::parse("00101").unwrap().0,
        attach_window: window,
        attach_rate: 20_000,
        attach_timeout: Duration::from_secs(30),
        prefix_len: 16,
        gateway: Ipv4Addr::new(10, 45, 0, 1),
        phones,
        orders: 1,
        concurrency: phones,
        server: std::net::SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 24), 443),
        host: "www.geektime.com".into(),
        tls,
        body: b"{}".to_vec(),
        timeout: Duration::from_secs(5),
        attach_only: true,
        seed: 1,
    })
    .expect("the range's keys")
}

/// Runs the lab with `ran` on the ue host's radio until every phone's
/// attach ended or `d` passed, then 200 ms more (the last Attach Completes).
/// `lose(phone, n)`: whether the radio loses phone's `n`th frame.
fn run_phones(
    lab: &mut SimLab,
    hss: &mut HssPlay,
    ran: &mut d11_apps::ran::Ran,
    d: Duration,
    lose: impl Fn(usize, usize) -> bool,
) {
    use d11_apps::ran::StackInstant;
    let t0 = lab.now();
    let end = t0 + d;
    let mut out = Vec::new();
    let mut sent = std::collections::HashMap::<usize, usize>::new();
    let phones = ran.report(0.0).attach.phones;
    while lab.now() < end {
        let now = StackInstant::from_micros(lab.now().saturating_since(t0).as_micros() as i64);
        for f in lab.host("ue").take_frames() {
            ran.on_frame(now, &f);
        }
        ran.poll(now, &mut out);
        for f in out.drain(..) {
            // NAS only: the sim host's IP layer is the ue's own, not the phones'.
            if f[12..14] != [0x88, 0xb5] {
                continue;
            }
            let phone = u32::from_be_bytes([f[8], f[9], f[10], f[11]]) as usize;
            let n = sent.entry(phone).or_insert(0);
            *n += 1;
            if !lose(phone, *n) {
                lab.host("ue").send_frame(f);
            }
        }
        if ran.attaches.len() == phones {
            break;
        }
        hss.run(lab, Duration::from_millis(5));
    }
    hss.run(lab, Duration::from_millis(200));
}

#[test]
fn the_load_generators_phones_each_attach_with_their_own_imsi_mac_and_address() {
    let mut lab = lab(TOPOLOGY, 31, 0.0);
    let mut hss = HssPlay::new(&mut lab, TOPOLOGY);
    hss.run(&mut lab, Duration::from_secs(1));
    // 40 phones, 16 attaching at a time.
    let mut ran = load_phones(40, 16);
    run_phones(
        &mut lab,
        &mut hss,
        &mut ran,
        Duration::from_secs(20),
        |_, _| false,
    );
    let rep = ran.report(1.0).attach;
    assert_eq!((rep.attached, rep.failed), (40, 0), "{rep:?}");
    assert_eq!(rep.requests, 40, "each answered at the first try");
    assert_eq!(rep.nas_refused, 0);
    let mut imsis: Vec<&str> = ran.attaches.iter().map(|a| a.imsi.as_str()).collect();
    imsis.sort();
    imsis.dedup();
    assert_eq!(imsis.len(), 40);
    let mut addrs: Vec<Ipv4Addr> = ran.attaches.iter().filter_map(|a| a.ue).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 40, "an address each");
    assert!(
        addrs.iter().all(|a| a.octets()[..2] == [10, 45]),
        "{addrs:?}"
    );
    // The network holds each of them.
    let mme = reports(&lab).1;
    let registered = mme
        .ues
        .iter()
        .filter(|u| u.emm == d11_elements::mme::EmmState::Registered)
        .count();
    assert_eq!(registered, 40);
    assert_eq!(mme.counters.attach_completes, 40);
    let (sgw, pgw) = gateways(&lab);
    assert_eq!((sgw.sessions.len(), pgw.sessions.len()), (40, 40));
    for a in &ran.attaches {
        let s = sgw
            .sessions
            .iter()
            .find(|s| s.imsi == a.imsi)
            .expect("the sgw holds the phone's session");
        assert_eq!(s.ue_ip, a.ue, "{}", a.imsi);
    }
}

#[test]
fn a_load_phone_whose_attach_request_is_lost_sends_it_again_after_3_s_and_attaches() {
    let mut lab = lab(TOPOLOGY, 32, 0.0);
    let mut hss = HssPlay::new(&mut lab, TOPOLOGY);
    hss.run(&mut lab, Duration::from_secs(1));
    let mut ran = load_phones(10, 10);
    // The radio loses the first frame (the Attach Request) of each even phone.
    run_phones(
        &mut lab,
        &mut hss,
        &mut ran,
        Duration::from_secs(20),
        |p, n| p % 2 == 0 && n == 1,
    );
    let rep = ran.report(1.0).attach;
    assert_eq!((rep.attached, rep.failed), (10, 0), "{rep:?}");
    assert_eq!(rep.requests, 15, "the five even phones twice");
    for a in &ran.attaches {
        let again = a.phone % 2 == 0;
        assert_eq!(a.requests, 1 + u32::from(again), "{a:?}");
        assert_eq!(a.ms >= 3000.0, again, "{a:?}");
    }
    assert_eq!(reports(&lab).1.counters.attach_completes, 10);
}

/// The phone's NAS answered for `d`; after the network's Detach Request
/// "re-attach required" it attaches again once [`REATTACH_AFTER`] passed,
/// as the baseband app does.
///
/// [`REATTACH_AFTER`]: d11_apps::baseband::REATTACH_AFTER
fn phone_reattaching(
    lab: &mut SimLab,
    hss: &mut HssPlay,
    bb: &mut d11_apps::baseband::Baseband,
    d: Duration,
) -> Vec<d11_wire::nas::EmmMessage> {
    let mut seen = vec![];
    let end = lab.now() + d;
    while lab.now() < end {
        seen.extend(phone(lab, hss, bb, Duration::from_millis(20)));
        if bb.take_reattach() {
            phone(lab, hss, bb, d11_apps::baseband::REATTACH_AFTER);
            let req = bb.attach_request();
            radio_nas(lab, &req);
        }
    }
    seen
}

/// A restarted sgw lost every session: the enb's next G-PDU for the
/// phone meets an Error Indication [TS 29.281 § 7.3.1], the enb asks the
/// mme to release the UE (UE Context Release Request, cause transport
/// resource unavailable), the mme detaches it with "re-attach required"
/// [TS 24.301 § 5.5.2.3] and the phone attaches again: new tunnels, the
/// ping goes through, the pgw's session replaced (the same address).
#[test]
fn the_sgw_restarted_the_phones_tunnel_is_refused_and_it_attaches_again() {
    use d11_apps::baseband::UeState;
    let mut bb = baseband("001010000000001");
    let (mut lab, mut hss, _) = attach(TOPOLOGY, 17, &mut bb);
    assert_eq!(bb.state(), UeState::Attached);
    assert_eq!(ping_gateway(&mut lab, 1), [1]);
    let old = gateways(&lab).0.tunnel.bearers[0].enb_teid;
    let topo = Topology::parse(TOPOLOGY, "double11.toml").expect("loads");
    lab.restart(&topo, "sgw");
    // The ping meets the restarted sgw, which has no bearer.
    assert!(ping_gateway(&mut lab, 2).is_empty(), "no tunnel at the sgw");
    let seen = phone_reattaching(&mut lab, &mut hss, &mut bb, Duration::from_secs(3));
    assert!(
        seen.iter().any(|m| matches!(
            m,
            d11_wire::nas::EmmMessage::NetworkDetachRequest { detach_type: 1, .. }
        )),
        "{seen:?}"
    );
    assert_eq!(bb.state(), UeState::Attached, "{seen:?}");
    assert_eq!(bb.address(), Some(Ipv4Addr::new(10, 45, 0, 2)));
    let (enb, mme) = reports(&lab);
    let c = &mme.counters;
    assert_eq!((c.release_requests, c.network_detaches), (1, 1), "{c:?}");
    assert_eq!(c.attach_completes, 2);
    assert_eq!(enb.s1.expect("s1").release_requests, 1);
    assert!(enb.tunnel.gtpu.error_indications_received >= 1);
    let (sgw, pgw) = gateways(&lab);
    assert_eq!(sgw.sessions.len(), 1);
    assert_eq!(pgw.sessions.len(), 1, "replaced, not added");
    assert_eq!(pgw.sessions[0].ue_ip, Some(Ipv4Addr::new(10, 45, 0, 2)));
    // The enb's tunnel end is new (the old context went with the
    // release); the restarted sgw's TEID pool starts again where it did.
    assert_ne!(
        sgw.tunnel.bearers[0].enb_teid, old,
        "{:?}",
        sgw.tunnel.bearers
    );
    assert_eq!(ping_gateway(&mut lab, 3), [3]);
    if common::tshark_agrees(&mut lab.sim, "attach-sgw-restart.pcapng") {
        let seq = tshark(
            &mut lab,
            "attach-sgw-restart.pcapng",
            "gtp.message == 26 || s1ap.procedureCode == 18 || s1ap.procedureCode == 23 \
             || (s1ap && nas_eps.nas_msg_emm_type >= 0x41 && nas_eps.nas_msg_emm_type <= 0x46)",
            &[
                "ip.src",
                "gtp.message",
                "s1ap.procedureCode",
                "nas_eps.nas_msg_emm_type",
            ],
        )
        .expect("tshark ran");
        // The first attach, then the refusal and what follows.
        let from = seq
            .iter()
            .position(|l| l.contains("\t0x1a\t"))
            .expect("an Error Indication");
        assert_eq!(
            seq[from..seq.len().min(from + 8)],
            [
                "172.16.1.2\t0x1a\t\t",
                "172.16.3.1\t\t18\t",
                "172.16.3.2\t\t11\t0x45",
                "172.16.3.1\t\t13\t0x46",
                "172.16.3.2\t\t23\t",
                "172.16.3.1\t\t23\t",
                "172.16.3.1\t\t12\t0x41",
                "172.16.3.2\t\t9\t0x42",
            ],
            "{seq:?}: Error Indication, UE Context Release Request, Detach Request, \
             Detach Accept, UE Context Release, then a new Attach Request and its \
             Attach Accept"
        );
    }
}

/// T3422 [TS 24.301 § 5.5.2.3.4 b]: a phone that never answers the
/// network's Detach Request gets it again every 6 s, four times, each
/// under a new NAS COUNT; on the fifth expiry the mme aborts the detach,
/// releases the UE's S1 context and, on Release Complete, drops it.
/// The Modify Bearer Request lost every time it is sent (s11 cut just
/// after the sgw answered Create Session): without it the sgw never learns
/// the enb's end of the tunnel, so the phone has no downlink. After N3
/// tries the mme detaches it with "re-attach required" [TS 24.301 §
/// 5.5.2.3] and the phone, attached again with s11 back, is reached.
#[test]
fn a_modify_bearer_lost_on_s11_detaches_the_phone_and_it_attaches_again() {
    use d11_apps::baseband::UeState;
    let s11 = "mme:s11--sgw:s11";
    let slow = |loss| LinkParams {
        delay: Duration::from_millis(50),
        loss,
    };
    let mut lab = lab(TOPOLOGY, 29, 0.0);
    let link = lab.link(s11);
    lab.sim.set_link_params(link, slow(0.0));
    let mut hss = HssPlay::new(&mut lab, TOPOLOGY);
    hss.run(&mut lab, Duration::from_secs(1));
    let mut bb = baseband("001010000000001");
    let req = bb.attach_request();
    radio_nas(&mut lab, &req);
    // The sgw holds the session once Create Session reached it; its
    // answer is then 50 ms on the way, and the cut comes before the
    // Modify Bearer that follows it.
    let start = lab.now();
    while gateways(&lab).0.sessions.is_empty() {
        assert!(lab.now() < start + Duration::from_secs(5), "no session");
        phone(&mut lab, &mut hss, &mut bb, Duration::from_millis(20));
    }
    lab.sim.set_link_params(link, slow(1.0));
    let mut seen = vec![];
    while reports(&lab).1.counters.network_detaches == 0 {
        assert!(lab.now() < start + Duration::from_secs(20), "no detach");
        seen.extend(phone(
            &mut lab,
            &mut hss,
            &mut bb,
            Duration::from_millis(100),
        ));
    }
    let c = reports(&lab).1.counters;
    assert_eq!(
        (c.sessions_created, c.bearers_modified, c.modify_failures),
        (1, 0, 1),
        "{c:?}"
    );
    assert!(ping_gateway(&mut lab, 1).is_empty(), "no downlink");
    lab.sim.set_link_params(
        link,
        LinkParams {
            delay: Duration::from_micros(100),
            loss: 0.0,
        },
    );
    seen.extend(phone_reattaching(
        &mut lab,
        &mut hss,
        &mut bb,
        Duration::from_secs(3),
    ));
    assert!(
        seen.iter().any(|m| matches!(
            m,
            d11_wire::nas::EmmMessage::NetworkDetachRequest { detach_type: 1, .. }
        )),
        "{seen:?}"
    );
    assert_eq!(bb.state(), UeState::Attached, "{seen:?}");
    let c = reports(&lab).1.counters;
    assert_eq!((c.attach_completes, c.bearers_modified), (2, 1), "{c:?}");
    assert_eq!(ping_gateway(&mut lab, 2), [2]);
}

#[test]
fn a_network_detach_unanswered_is_sent_again_every_6_s_four_times_then_the_context_goes() {
    let mut bb = baseband("001010000000001");
    let (mut lab, mut hss, _) = attach(TOPOLOGY, 23, &mut bb);
    assert_eq!(ping_gateway(&mut lab, 1), [1]);
    let topo = Topology::parse(TOPOLOGY, "double11.toml").expect("loads");
    lab.restart(&topo, "sgw");
    let start = lab.now();
    // The ping meets the restarted sgw: Error Indication, UE Context
    // Release Request, the network's Detach Request. The phone is silent.
    assert!(ping_gateway(&mut lab, 2).is_empty(), "no tunnel at the sgw");
    let mut detach = vec![];
    while lab.now() < start + Duration::from_secs(32) {
        hss.run(&mut lab, Duration::from_millis(100));
        for f in lab.host("ue").take_frames() {
            if f[12..14] != [0x88, 0xb5] {
                continue;
            }
            let Ok(d11_wire::nas::Pdu::Protected { sn, message, .. }) =
                d11_wire::nas::Pdu::parse(&f[14..])
            else {
                panic!("a protected message")
            };
            let m = d11_wire::nas::EmmMessage::parse(message).expect("EMM");
            assert!(
                matches!(
                    m,
                    d11_wire::nas::EmmMessage::NetworkDetachRequest { detach_type: 1, .. }
                ),
                "{m:?}"
            );
            detach.push((lab.now() - start, sn));
        }
    }
    assert_eq!(detach.len(), 5, "the first and four more: {detach:?}");
    for w in detach.windows(2) {
        let gap = w[1].0 - w[0].0;
        assert!(
            gap >= Duration::from_millis(5_900) && gap <= Duration::from_millis(6_100),
            "T3422 is 6 s: {detach:?}"
        );
        assert_eq!(
            w[1].1,
            w[0].1.wrapping_add(1),
            "a new COUNT each: {detach:?}"
        );
    }
    let (enb, mme) = reports(&lab);
    let c = &mme.counters;
    assert_eq!(
        (
            c.network_detaches,
            c.detach_retransmissions,
            c.detach_timeouts,
            c.releases
        ),
        (1, 4, 1, 1),
        "{c:?}"
    );
    assert!(mme.ues.is_empty(), "the context dropped: {:?}", mme.ues);
    assert_eq!(
        enb.s1.expect("s1").ues.len(),
        0,
        "the enb's context released"
    );
    if common::tshark_agrees(&mut lab.sim, "attach-t3422.pcapng") {
        let seq = tshark(
            &mut lab,
            "attach-t3422.pcapng",
            "s1ap.procedureCode == 11 || s1ap.procedureCode == 23",
            &[
                "s1ap.procedureCode",
                "nas_eps.nas_msg_emm_type",
                "nas_eps.seq_no",
            ],
        )
        .expect("tshark ran");
        let tail: Vec<&str> = seq.iter().rev().take(7).rev().map(String::as_str).collect();
        let sn = |i: usize| detach[i].1;
        assert_eq!(
            tail,
            [
                format!("11\t0x45\t{}", sn(0)),
                format!("11\t0x45\t{}", sn(1)),
                format!("11\t0x45\t{}", sn(2)),
                format!("11\t0x45\t{}", sn(3)),
                format!("11\t0x45\t{}", sn(4)),
                "23\t\t".to_string(),
                "23\t\t".to_string(),
            ],
            "five Detach Requests, then UE Context Release Command and Complete: {seq:?}"
        );
    }
}

/// The mme's Echo on S11 learns the sgw's new Recovery [TS 23.007
/// § 16.1.1]: every UE whose session it held is detached with
/// "re-attach required", with no user-plane traffic to notice it first.
#[test]
fn the_mme_learns_the_sgw_restarted_from_its_echo_and_the_phone_attaches_again() {
    use d11_apps::baseband::UeState;
    let mut bb = baseband("001010000000001");
    let (mut lab, mut hss, _) = attach(TOPOLOGY, 18, &mut bb);
    assert_eq!(bb.state(), UeState::Attached);
    let before = reports(&lab).1.s11.expect("s11").peers[0].recovery;
    let topo = Topology::parse(TOPOLOGY, "double11.toml").expect("loads");
    lab.restart(&topo, "sgw");
    // The next Echo is at most 60 s away.
    phone_reattaching(&mut lab, &mut hss, &mut bb, Duration::from_secs(62));
    let mme = reports(&lab).1;
    let after = mme.s11.as_ref().expect("s11").peers[0].recovery;
    assert_ne!(
        before, after,
        "this seed's restarted sgw has a new Recovery"
    );
    let c = &mme.counters;
    assert_eq!(
        (c.sgw_restarts, c.network_detaches, c.release_requests),
        (1, 1, 0),
        "{c:?}"
    );
    assert_eq!(bb.state(), UeState::Attached);
    assert_eq!(gateways(&lab).0.sessions.len(), 1);
    assert_eq!(ping_gateway(&mut lab, 1), [1]);
}
