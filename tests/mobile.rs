//! End-to-end tests of the mobile core in netns/double11.toml, in real
//! namespaces: ue ──radio── enb ══S1-U══ sgw ══S5══ pgw ──SGi── a2 ── c1 ──
//! c2 ── server. Root only.

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use support::*;

const SERVER: &str = "192.0.2.130";
const UE: &str = "10.45.0.2";

/// True if `ip` is in the NAT pool 198.51.100.128/25.
fn in_nat_pool(ip: &str) -> bool {
    ip.parse::<std::net::Ipv4Addr>()
        .map(|a| a.octets()[..3] == [198, 51, 100] && a.octets()[3] >= 128)
        .unwrap_or(false)
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn the_phone_pings_traces_curls_and_iperfs_through_both_tunnels_and_the_nat() {
    let _s = serial();
    require_root();
    let lab = Lab::up("double11.toml", "mobile");
    let ping = lab.sh("ue", &["ping", "-c", "3", "-i", "0.2", "-W", "2", SERVER]);
    assert!(ping.contains("3 received"), "{ping}");

    let tr = lab.sh("ue", &["traceroute", "-n", "-q", "1", "-w", "2", SERVER]);
    let hops: Vec<&str> = tr
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    // The pgw is the phone's first IP hop (the tunnel end 10.45.0.1); the
    // enb and sgw are invisible to the phone, as in a real core.
    assert_eq!(
        hops,
        [
            "10.45.0.1",
            "198.51.100.2",
            "192.0.2.2",
            "192.0.2.6",
            SERVER
        ],
        "{tr}"
    );

    // A web server and an iperf3 server in the server's namespace, each
    // ending by itself (timeout, -1) even if the test fails first.
    let d = d11_bin();
    let mut http = Command::new(&d)
        .args(["exec", "--name", &lab.name, "server", "--", "timeout", "60"])
        .args(["python3", "-m", "http.server", "80", "--bind", SERVER])
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("d11 exec runs");
    let mut iperf = Command::new(&d)
        .args(["exec", "--name", &lab.name, "server", "--", "timeout", "60"])
        .args(["iperf3", "-s", "-1", "-B", SERVER])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("d11 exec runs");
    let mut code = String::new();
    for _ in 0..50 {
        let o = lab.exec(
            "ue",
            &[
                "curl",
                "-s",
                "-m",
                "2",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("http://{SERVER}/"),
            ],
        );
        code = String::from_utf8_lossy(&o.stdout).into_owned();
        if code == "200" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(code, "200", "curl from the phone");
    let ip = lab.sh("ue", &["iperf3", "-c", SERVER, "-t", "2", "-J"]);
    let j: Value = serde_json::from_str(&ip).expect("iperf3 -J");
    let bps = j["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(bps > 1e6, "iperf3 through the core: {bps} bit/s");
    let _ = http.kill();
    let _ = http.wait();
    let _ = iperf.wait();

    // The tables behind `d11 show sgw bearers` and `d11 show pgw nat`.
    let show = |node: &str, table: &str| {
        let o = d11(&["show", "--name", &lab.name, node, table, "--json"]);
        assert!(o.status.success(), "d11 show {node} {table}: {}", text(&o));
        serde_json::from_slice::<Value>(&o.stdout).expect("show --json is JSON")
    };
    // One bearer, the phone's, with the TEIDs of its attach (the sgw's
    // own pool, from 0x2000000).
    let bearers = show("sgw", "bearers");
    assert_eq!(bearers.as_array().map(Vec::len), Some(1), "{bearers}");
    assert_eq!(bearers[0]["ue_ip"], UE, "{bearers}");
    let teid = bearers[0]["sgw_s1u_teid"].as_u64().unwrap_or(0);
    assert!(teid >= 0x0200_0000, "{bearers}");
    let nat = show("pgw", "nat");
    let rows = nat.as_array().expect("nat rows");
    assert!(
        rows.iter().any(|r| r["proto"] == "tcp"
            && r["src"].as_str().unwrap_or("").starts_with("10.45.0.2:")
            && r["dst"] == format!("{SERVER}:80")
            && in_nat_pool(
                r["reply_dst"]
                    .as_str()
                    .unwrap_or("")
                    .split(':')
                    .next()
                    .unwrap()
            )),
        "{nat}"
    );
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn every_segment_carries_the_story_header_stack_and_tshark_finds_nothing_malformed() {
    let _s = serial();
    require_root();
    let lab = Lab::up("double11.toml", "mobstack");
    let m = macs(&lab.status());
    // The TEIDs the phone's attach made.
    let b = lab.phone_bearer();
    let teid = |k: &str| format!("{:#010x}", b[k].as_u64().unwrap_or(0));
    let dir = Scratch::new("mobstack");
    let file = dir.path("ping.pcapng");
    // Warm ARP everywhere so the captured ping is the steady state.
    lab.sh("ue", &["ping", "-c", "1", "-W", "2", SERVER]);
    let o = lab.capture(&file, "ue", &["ping", "-c", "1", "-W", "2", SERVER]);
    assert!(o.status.success(), "capture: {}", text(&o));

    let rows = tshark_fields(
        &file,
        "icmp.type == 8",
        &[
            "frame.interface_name",
            "eth.src",
            "eth.dst",
            "ip.src",
            "ip.dst",
            "gtp.teid",
            "udp.dstport",
        ],
    );
    let by_wire: BTreeMap<String, Vec<String>> =
        rows.into_iter().map(|r| (r[0].clone(), r)).collect();
    let row = |w: &str| {
        by_wire
            .get(w)
            .unwrap_or_else(|| panic!("no echo request on {w}: {by_wire:?}"))
    };

    // Radio: the UE's own frame to its gateway's MAC, which the enb answers
    // with the pgw's tunnel end (its S5 port), as the story draws it.
    let r = row("ue:eth0");
    assert_eq!((&r[1], &r[2]), (&m["ue:eth0"], &m["pgw:s5"]));
    assert_eq!(
        (r[3].as_str(), r[4].as_str(), r[5].as_str()),
        (UE, SERVER, "")
    );
    // S1-U: outer enb → sgw, UDP 2152, TEID of the sgw's S1-U end, inner UE → server.
    let r = row("enb:s1u");
    assert_eq!((&r[1], &r[2]), (&m["enb:s1u"], &m["sgw:s1u"]));
    assert_eq!(r[3], format!("172.16.1.1,{UE}"));
    assert_eq!(r[4], format!("172.16.1.2,{SERVER}"));
    assert_eq!(
        (r[5].clone(), r[6].as_str()),
        (teid("sgw_s1u_teid"), "2152")
    );
    // S5: outer sgw → pgw, the pgw's TEID, the same inner packet.
    let r = row("sgw:s5");
    assert_eq!((&r[1], &r[2]), (&m["sgw:s5"], &m["pgw:s5"]));
    assert_eq!(r[3], format!("172.16.2.1,{UE}"));
    assert_eq!(r[4], format!("172.16.2.2,{SERVER}"));
    assert_eq!((r[5].clone(), r[6].as_str()), (teid("pgw_teid"), "2152"));
    // SGi: no tunnel, the source is the NAT address.
    let r = row("pgw:sgi");
    assert_eq!((&r[1], &r[2]), (&m["pgw:sgi"], &m["a2:sgi"]));
    assert!(in_nat_pool(&r[3]), "SGi source {}", r[3]);
    assert_eq!((r[4].as_str(), r[5].as_str()), (SERVER, ""));

    // Downlink TEIDs on the way back.
    let back = tshark_fields(
        &file,
        "icmp.type == 0 && gtp",
        &["frame.interface_name", "gtp.teid"],
    );
    let back: BTreeMap<_, _> = back
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    assert_eq!(back.get("sgw:s5"), Some(&teid("sgw_s5_teid")), "{back:?}");
    assert_eq!(back.get("enb:s1u"), Some(&teid("enb_teid")), "{back:?}");

    let bad = bad_frames(&file);
    assert!(bad.is_empty(), "malformed frames: {bad:?}");
}
