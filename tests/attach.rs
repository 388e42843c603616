//! Chapter 3 in real namespaces (netns/double11.toml): `d11 up` returns
//! once the phone's baseband (app "baseband" in the ue host, AF_PACKET on
//! its eth0, EtherType 0x88B5) has attached — S1 Setup over the lab's own
//! SCTP, the mme's S6a peer with the hss app (kernel TCP, SQLite),
//! authentication and NAS security, Update Location, Create Session on S11
//! and S5-C, Initial Context Setup with the Attach Accept, Modify Bearer —
//! and put the pgw's address on eth0. Root only.

mod support;

use support::*;

fn show(lab: &Lab, what: &[&str]) -> serde_json::Value {
    let mut args = vec!["show", "--name", &lab.name];
    args.extend_from_slice(what);
    args.push("--json");
    let o = d11(&args);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    v.get("report").cloned().unwrap_or(v)
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn d11_up_returns_with_the_phone_attached_and_its_address_from_the_pgw() {
    let _s = serial();
    require_root();
    let dir = Scratch::new("attach");
    let file = dir.path("attach.pcapng");
    let lab = Lab::up_capturing("double11.toml", "attach", &file);

    let mme = show(&lab, &["mme"]);
    let ue = &mme["ues"][0];
    assert_eq!(ue["imsi"], "001010000000001", "{mme}");
    assert_eq!(ue["emm"], "registered", "{mme}");
    assert_eq!(ue["ue_ip"], "10.45.0.2");
    assert_eq!(ue["apn"], "internet");
    assert_eq!(mme["enbs"][0]["s1"], "ready");
    assert_eq!(mme["s6a"]["state"], "open");
    assert_eq!(mme["counters"]["bearers_modified"], 1);
    let phone = show(&lab, &["ue"]);
    assert_eq!(phone["state"], "attached", "{phone}");
    assert_eq!(phone["address"], "10.45.0.2");
    for gw in ["sgw", "pgw"] {
        let r = show(&lab, &[gw]);
        let s = &r["sessions"][0];
        assert_eq!(
            (s["imsi"].as_str(), s["ue_ip"].as_str(), s["state"].as_str()),
            (Some("001010000000001"), Some("10.45.0.2"), Some("active")),
            "{gw}: {}",
            r["sessions"]
        );
    }
    // The address and the default route on the phone's interface, and the
    // user plane through the TEIDs the attach made: the pgw answers a ping
    // to the phone's gateway down the tunnel.
    let addr = lab.sh("ue", &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains("10.45.0.2/16"), "{addr}");
    let route = lab.sh("ue", &["ip", "route", "show", "default"]);
    assert!(route.contains("via 10.45.0.1"), "{route}");
    lab.sh("ue", &["ping", "-c", "1", "-W", "2", "10.45.0.1"]);

    // tshark with SCTP's CRC32c checked: the successful attach's messages
    // in order (an Attach Request before the mme reached the hss is
    // refused with #17 and sent again, so the last attach is checked),
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
        "(s1ap && s1ap.procedureCode != 17) || diameter.cmd.code == 318 \
         || diameter.cmd.code == 316 || (gtpv2 && gtpv2.message_type > 2)",
        &[
            "s1ap.procedureCode",
            "diameter.cmd.code",
            "gtpv2.message_type",
            "nas_eps.nas_msg_emm_type",
        ],
    );
    let seq: Vec<String> = seq.iter().map(|r| r.join("/")).collect();
    // Each message is seen on both ends of its wire's capture, once per wire.
    let mut distinct = seq.clone();
    distinct.dedup();
    let last = distinct
        .iter()
        .rposition(|m| m == "12///0x41" || m == "13///0x41")
        .expect("an Attach Request");
    let mut attach: Vec<&str> = distinct[last + 1..].iter().map(String::as_str).collect();
    // Modify Bearer and the phone's Attach Complete both follow the
    // Initial Context Setup Response, in either order.
    if attach.len() > 10 {
        attach[10..].sort();
    }
    assert_eq!(
        attach,
        [
            "/318//",
            "11///0x52",
            "13///0x53",
            "11///0x5d",
            "13///0x5e",
            "/316//",
            "//32/",
            "//33/",
            "9///0x42",
            "9///",
            "//34/",
            "//35/",
            "13///0x43",
        ],
        "AIR/AIA, authentication, security mode, ULR/ULA, Create Session, \
         Initial Context Setup (Attach Accept) and its response, Modify Bearer, \
         Attach Complete: {distinct:?}"
    );
    let bad = tshark_with(
        &file,
        &crc,
        "_ws.malformed || _ws.expert.severity >= error",
        &["frame.number", "_ws.col.info"],
    );
    assert!(bad.is_empty(), "{bad:?}");
}
