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

    // The DNS server of the attach: asked for in the phone's PCO, given by
    // the pgw (config.dns), carried on S5-C and S11 (GTPv2-C's PCO IE), on
    // S1-MME (the NAS in Initial Context Setup) and on the radio (the
    // lab's Lua dissector): tshark reads 198.18.2.2 on each wire, nothing
    // malformed; the phone's baseband reports it.
    assert_eq!(phone["dns"], serde_json::json!(["198.18.2.2"]), "{phone}");
    let lua = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/wireshark/d11-radio-nas.lua"
    );
    let lua = format!("lua_script:{lua}");
    let with_lua = [&crc[..], &["-X", &lua]].concat();
    let given = tshark_with(
        &file,
        &with_lua,
        "gsm_a.gm.sm.pco.dns.ipv4",
        &["frame.interface_name", "gsm_a.gm.sm.pco.dns.ipv4"],
    );
    let wires: std::collections::BTreeSet<&str> = given.iter().map(|r| r[0].as_str()).collect();
    assert!(given.iter().all(|r| r[1] == "198.18.2.2"), "{given:?}");
    // (each wire is captured once, named by one of its ends)
    for w in ["sgw:s5", "mme:s11", "enb:s1mme", "ue:eth0"] {
        assert!(wires.contains(w), "{w} in {wires:?}");
    }
    let asked = tshark_with(
        &file,
        &with_lua,
        "gsm_a.gm.sm.pco_pid == 0x000d && !gsm_a.gm.sm.pco.dns.ipv4",
        &["frame.interface_name"],
    );
    let asked: std::collections::BTreeSet<&str> = asked.iter().map(|r| r[0].as_str()).collect();
    for w in ["sgw:s5", "mme:s11", "enb:s1mme", "ue:eth0"] {
        assert!(asked.contains(w), "the request on {w}: {asked:?}");
    }
    let bad = tshark_with(&file, &with_lua, "_ws.malformed", &["frame.number"]);
    assert!(bad.is_empty(), "{bad:?}");

    // `d11 detach`: the session, the address and the old TEIDs go.
    let old = lab.phone_bearer()["sgw_s1u_teid"].as_u64().expect("a TEID");
    assert!(old >= 0x0200_0000, "the sgw's own pool: {old:#x}");
    let o = d11(&["detach", "--name", &lab.name]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(show(&lab, &["ue"])["state"], "deregistered");
    let mme = show(&lab, &["mme"]);
    assert_eq!(mme["ues"].as_array().map(Vec::len), Some(0), "{mme}");
    assert_eq!(mme["counters"]["releases"], 1);
    assert_eq!(show(&lab, &["sgw"])["sessions_total"], 0);
    let addr = lab.sh("ue", &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(!addr.contains("10.45.0.2"), "{addr}");
    // A G-PDU in the old S1-U tunnel (the TEID of the first attach) from
    // the enb's wire: the sgw refuses it with an Error Indication to the enb.
    let sgw_mac = lab.sh("sgw", &["cat", "/sys/class/net/s1u/address"]);
    let sent = show(&lab, &["sgw"])["gtpu"]["error_indications_sent"]
        .as_u64()
        .unwrap_or(0);
    lab.sh("enb", &["python3", "-c", &old_tunnel(sgw_mac.trim(), old)]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while show(&lab, &["enb"])["gtpu"]["error_indications_received"].as_u64() < Some(1) {
        assert!(std::time::Instant::now() < deadline, "no Error Indication");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let now = show(&lab, &["sgw"])["gtpu"]["error_indications_sent"].as_u64();
    assert_eq!(now, Some(sent + 1));

    // `d11 attach`: the pool's next address (the pgw hands its pool out
    // in order), in new tunnels.
    let o = d11(&["attach", "--name", &lab.name]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("address 10.45.0.3"), "{}", text(&o));
    lab.sh("ue", &["ping", "-c", "1", "-W", "2", "10.45.0.1"]);
    // The new bearer is not the old tunnel: the old TEID is still refused.
    lab.sh("enb", &["python3", "-c", &old_tunnel(sgw_mac.trim(), old)]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while show(&lab, &["sgw"])["gtpu"]["error_indications_sent"].as_u64() < Some(sent + 2) {
        assert!(
            std::time::Instant::now() < deadline,
            "TEID {old:#x} taken again"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(show(&lab, &["mme"])["ues"][0]["emm"], "registered");
    // `d11 trace` checks the new TEIDs against the elements' bearer tables
    // (the first attach's are not what the order rides now).
    let o = d11(&["trace", "--name", &lab.name, "--json"]);
    let t: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert_eq!(t["ok"], true, "d11 trace: {}", text(&o));
    let teids: Vec<u64> = t["hops"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["tunnel"]["gtpu"]["teid"].as_u64())
        .collect();
    assert_eq!(teids.len(), 2, "{teids:?}");
    assert!(!teids.contains(&old), "{teids:?}");
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn with_nas_ciphering_eea2_the_phone_attaches_and_its_nas_is_ciphered_on_s1_mme() {
    let _s = serial();
    require_root();
    let dir = Scratch::new("eea2");
    let text = std::fs::read_to_string(topology("double11.toml")).expect("double11.toml");
    let eea2 = text.replace(
        "config.hss = \"172.16.5.2\"",
        "config.hss = \"172.16.5.2\"\nconfig.nas_ciphering = \"eea2\"",
    );
    assert_ne!(eea2, text);
    let topo = dir.path("double11-eea2.toml");
    std::fs::write(&topo, eea2).expect("topology copy");
    let file = dir.path("eea2.pcapng");
    let lab = Lab::up_file_capturing(&topo, "eea2", &file);

    let mme = show(&lab, &["mme"]);
    assert_eq!(mme["ues"][0]["emm"], "registered", "{mme}");
    let phone = show(&lab, &["ue"]);
    assert_eq!(phone["state"], "attached", "{phone}");
    assert_eq!(phone["address"], "10.45.0.2");
    // The enb cannot read the ciphered Attach Accept: it binds the bearer
    // to the first packet from the MAC the phone's NAS came from. The pgw
    // answers through the TEIDs the attach made.
    lab.sh("ue", &["ping", "-c", "1", "-W", "2", "10.45.0.1"]);
    let enb = show(&lab, &["enb"]);
    assert_eq!(enb["bearers"][0]["ue_ip"], "10.45.0.2", "{enb}");

    // Wireshark's EEA0 heuristic (`nas-eps.null_decipher`, on by default)
    // would now and then read ciphered bytes as a plain message: off.
    let crc = [
        "-o",
        "sctp.checksum:CRC-32C",
        "-o",
        "nas-eps.null_decipher:FALSE",
        "-o",
        "tcp.desegment_tcp_streams:FALSE",
    ];
    let smc = tshark_with(
        &file,
        &crc,
        "nas_eps.nas_msg_emm_type == 0x5d",
        &["nas_eps.emm.toc"],
    );
    assert!(
        smc.iter().any(|r| r[0] == "2"),
        "a Security Mode Command naming 128-EEA2: {smc:?}"
    );
    let ciphered = tshark_with(
        &file,
        &crc,
        "nas_eps.ciphered_msg",
        &["nas_eps.security_header_type"],
    );
    // Security Mode Complete (4) and the Attach Accept (2); the capture
    // ends when `d11 up` sees the phone attached, maybe before its Attach
    // Complete.
    assert!(
        ciphered.len() >= 2 && ciphered.iter().any(|r| r[0] == "4"),
        "SMC Complete and the Attach Accept: {ciphered:?}"
    );
    assert!(
        tshark_with(
            &file,
            &crc,
            "nas_eps.nas_msg_emm_type == 0x42",
            &["frame.number"]
        )
        .is_empty(),
        "no Attach Accept tshark can read"
    );
    let bad = tshark_with(
        &file,
        &crc,
        "_ws.malformed || _ws.expert.severity >= error",
        &["frame.number", "frame.interface_name", "_ws.col.info"],
    );
    assert_eq!(bad, Vec::<Vec<String>>::new());
}

/// Python in the enb's namespace: one G-PDU (TEID `teid`, an ICMP echo
/// from the phone inside) from the enb's S1-U address to the sgw's, on
/// the s1u wire.
fn old_tunnel(sgw_mac: &str, teid: u64) -> String {
    format!(
        r#"
import socket, struct
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
def ip(src, dst, proto, payload):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0,
                    socket.inet_aton(src), socket.inet_aton(dst))
    return h[:10] + struct.pack("!H", csum(h)) + h[12:] + payload
icmp = struct.pack("!BBHHH", 8, 0, 0, 7, 1)
icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
inner = ip("10.45.0.2", "10.45.0.1", 1, icmp)
gtp = struct.pack("!BBHI", 0x30, 255, len(inner), {teid}) + inner
udp = struct.pack("!HHHH", 2152, 2152, 8 + len(gtp), 0) + gtp
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("s1u", 0))
mac = open("/sys/class/net/s1u/address").read().strip()
eth = bytes.fromhex("{mac}".replace(":", "")) + bytes.fromhex(mac.replace(":", "")) + b"\x08\x00"
s.send(eth + ip("172.16.1.1", "172.16.1.2", 17, udp))
"#,
        mac = sgw_mac
    )
}

/// The phone's side of a new attach with nothing but Python's standard
/// library: an AF_PACKET socket on eth0 sends an Attach Request (IMSI
/// 001010000000001, crates/wire/fixtures/nas.py) from the phone's MAC and
/// prints the first NAS PDU the network sends back.
const ATTACH_REQUEST: &str = r#"
import socket
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88b5))
s.bind(("eth0", 0))
s.settimeout(10)
mac = s.getsockname()[4]
s.send(b"\xff" * 6 + mac + b"\x88\xb5" + bytes.fromhex("07417108091010000000001002e0e000040201d011"))
while True:
    f = s.recv(2048)
    if f[6:12] != mac:
        print(f[14:].hex())
        break
"#;

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn the_mme_killed_the_phones_user_plane_runs_on_and_the_restarted_mme_takes_a_new_attach() {
    let _s = serial();
    require_root();
    let lab = Lab::up("double11.toml", "mmekill");
    let st = lab.status();
    let pid = node(&st, "mme")["pid"].as_u64().expect("the mme's pid");
    let k = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .output()
        .expect("kill runs");
    assert!(k.status.success(), "kill: {}", text(&k));
    // The user plane is the gateways' and the enb's: it does not need the mme.
    lab.sh("ue", &["ping", "-c", "1", "-W", "2", "10.45.0.1"]);
    // The supervisor restarts the mme; the enb sets S1 up again once it
    // knows the old association is gone (its next heartbeat meets an ABORT
    // from the new mme, RFC 9260 § 8.4).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let st = lab.status();
        let restarted = node(&st, "mme")["restarts"].as_u64() >= Some(1);
        let s1 = restarted && show(&lab, &["mme"])["enbs"][0]["s1"] == "ready";
        let s6a = s1 && show(&lab, &["mme"])["s6a"]["state"] == "open";
        if s6a {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "mme not back: {}\n{}",
            node(&st, "mme"),
            show(&lab, &["enb", "s1"])
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    lab.sh("ue", &["ping", "-c", "1", "-W", "2", "10.45.0.1"]);
    // A new attach: the restarted mme answers with a challenge.
    let nas = lab.sh("ue", &["python3", "-c", ATTACH_REQUEST]);
    assert!(
        nas.trim().starts_with("0752"),
        "an Authentication Request: {nas}"
    );
    let m = show(&lab, &["mme"]);
    assert_eq!(m["ues"][0]["imsi"], "001010000000001", "{m}");
}
