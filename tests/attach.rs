//! Chapter 3 in real namespaces (netns/double11.toml): the enb's S1 Setup
//! with the mme over the lab's own SCTP on a veth, the mme's S6a peer with
//! the hss app (kernel TCP, SQLite), GTPv2-C Echo on S11, and the phone's Attach Request in the
//! radio carriage (EtherType 0x88B5 on its TAP) answered with an
//! Authentication Request whose vector the hss made. Root only.

mod support;

use std::time::{Duration, Instant};
use support::*;

/// The phone's side, with nothing but Python's standard library: an
/// AF_PACKET socket on eth0 sends the Attach Request (IMSI
/// 001010000000001, crates/wire/fixtures/nas.py) and prints the first NAS
/// PDU that comes back.
const PHONE: &str = r#"
import socket
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88b5))
s.bind(("eth0", 0))
s.settimeout(5)
mac = s.getsockname()[4]
s.send(b"\xff" * 6 + mac + b"\x88\xb5" + bytes.fromhex("07417108091010000000001002e0e000040201d011"))
while True:
    f = s.recv(2048)
    if f[6:12] != mac:
        print(f[14:].hex())
        break
"#;

fn mme(lab: &Lab) -> serde_json::Value {
    let o = d11(&["show", "--name", &lab.name, "mme", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).expect("JSON")
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn s1_setup_s6a_and_an_attach_request_answered_with_a_challenge_in_real_namespaces() {
    let _s = serial();
    require_root();
    let lab = Lab::up("double11.toml", "attach");
    // S1 Setup is the enb's first act; the mme's S6a peer opens once the
    // hss app listens (the mme tries every 5 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    let m = loop {
        let m = mme(&lab);
        let r = m.get("report").unwrap_or(&m);
        let ready = r["enbs"][0]["s1"] == "ready"
            && r["s6a"]["state"] == "open"
            && r["s11"]["peers"][0]["recovery"].is_u64();
        if ready || Instant::now() > deadline {
            break r.clone();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(m["enbs"][0]["s1"], "ready", "{m}");
    assert_eq!(m["s6a"]["state"], "open", "{m}");
    assert_eq!(m["s6a"]["hss_host"], "hss.epc.lab");
    // S11: the sgw answered the mme's Echo with its Recovery counter.
    assert!(m["s11"]["peers"][0]["recovery"].is_u64(), "{m}");

    let dir = Scratch::new("attach");
    let file = dir.path("attach.pcapng");
    let out = lab.capture(&file, "ue", &["python3", "-c", PHONE]);
    assert!(out.status.success(), "{}", text(&out));
    let nas = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(nas.starts_with("0752"), "an Authentication Request: {nas}");
    let m = mme(&lab);
    let r = m.get("report").unwrap_or(&m);
    assert_eq!(r["ues"][0]["imsi"], "001010000000001");
    assert_eq!(r["ues"][0]["emm"], "wait-authentication");

    // tshark with SCTP's CRC32c checked: the attach's messages in order,
    // nothing malformed, no bad checksum.
    let crc = [
        "-o",
        "sctp.checksum:CRC-32C",
        "-o",
        "tcp.desegment_tcp_streams:FALSE",
    ];
    let seq = tshark_with(
        &file,
        &crc,
        "(s1ap && s1ap.procedureCode != 17) || diameter.cmd.code == 318",
        &[
            "s1ap.procedureCode",
            "diameter.cmd.code",
            "nas_eps.nas_msg_emm_type",
        ],
    );
    let seq: Vec<String> = seq.iter().map(|r| r.join("/")).collect();
    // Each message is seen on both ends of its wire's capture, once per wire.
    let mut distinct = seq.clone();
    distinct.dedup();
    assert_eq!(distinct, ["12//0x41", "/318/", "11//0x52"], "{seq:?}");
    let bad = tshark_with(
        &file,
        &crc,
        "_ws.malformed || _ws.expert.severity >= error",
        &["frame.number", "_ws.col.info"],
    );
    assert!(bad.is_empty(), "{bad:?}");
}
