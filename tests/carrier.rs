//! End-to-end tests of the carrier lab (netns/carrier.toml) in real
//! namespaces: phone — a2 — c1 — c2 — border — tor — server. Root only.

mod support;

use serde_json::Value;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

const SERVER: &str = "203.0.113.10";

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn phone_pings_and_traces_the_server_through_four_routers() {
    let _s = serial();
    require_root();
    let lab = Lab::up("carrier.toml", "trace");
    let ping = lab.sh(
        "phone",
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", SERVER],
    );
    assert!(ping.contains("3 received"), "{ping}");

    let tr = lab.sh("phone", &["traceroute", "-n", "-q", "1", "-w", "2", SERVER]);
    let hops: Vec<&str> = tr
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(
        hops,
        ["10.45.0.1", "192.0.2.2", "192.0.2.6", "192.0.2.10", SERVER],
        "{tr}"
    );

    let tp = lab.sh("phone", &["tracepath", "-n", SERVER]);
    assert!(
        tp.contains("pmtu 1400"),
        "tracepath should find the radio's 1400-byte MTU:\n{tp}"
    );
    assert!(tp.contains("reached"), "{tp}");
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn every_wire_carries_the_same_packet_with_its_own_macs_and_one_less_ttl() {
    let _s = serial();
    require_root();
    let lab = Lab::up("carrier.toml", "macs");
    let dir = Scratch::new("macs");
    let file = dir.path("ping.pcapng");
    // Warm the ARP caches first so the captured ping is the steady state.
    lab.sh("phone", &["ping", "-c", "1", "-W", "2", SERVER]);
    let o = lab.capture(
        &file,
        "phone",
        &["ping", "-c", "1", "-t", "64", "-W", "2", SERVER],
    );
    assert!(o.status.success(), "{}", text(&o));

    let status = lab.status();
    let mac = macs(&status);
    let wires: Vec<(String, String)> = status["wires"]
        .as_array()
        .expect("wires")
        .iter()
        .map(|w| {
            (
                w["a"].as_str().unwrap().to_string(),
                w["b"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let rows = tshark_fields(
        &file,
        "icmp.type==8",
        &[
            "frame.interface_name",
            "eth.src",
            "eth.dst",
            "ip.src",
            "ip.dst",
            "ip.ttl",
        ],
    );
    assert_eq!(
        rows.len(),
        wires.len(),
        "one echo request per wire: {rows:?}"
    );
    let mut ttls = Vec::new();
    let mut seen = BTreeSet::new();
    for r in &rows {
        let [iface, src, dst, ipsrc, ipdst, ttl] = &r[..] else {
            panic!("row {r:?}")
        };
        assert_eq!(
            (ipsrc.as_str(), ipdst.as_str()),
            ("10.45.0.2", SERVER),
            "IP addresses never change: {r:?}"
        );
        let (a, b) = wires
            .iter()
            .find(|(a, b)| a == iface || b == iface)
            .unwrap_or_else(|| panic!("{iface} is no wire"));
        seen.insert(iface.clone());
        let ends: BTreeSet<&str> = [mac[a].as_str(), mac[b].as_str()].into();
        if a.starts_with("tor:") || b.starts_with("tor:") {
            // The switch forwards without touching the frame: border's MAC to the server's.
            assert_eq!(
                (src.as_str(), dst.as_str()),
                (mac["border:ext"].as_str(), mac["server:eth0"].as_str()),
                "{r:?}"
            );
        } else {
            assert_eq!(
                [src.as_str(), dst.as_str()]
                    .into_iter()
                    .collect::<BTreeSet<_>>(),
                ends,
                "a routed wire shows its two ends' MACs: {r:?}"
            );
        }
        ttls.push(ttl.parse::<u8>().unwrap());
    }
    assert_eq!(seen.len(), wires.len(), "every wire seen");
    ttls.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(
        ttls,
        [64, 63, 62, 61, 60, 60],
        "one less per router; the switch leaves TTL alone"
    );
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn capture_of_ping_traceroute_and_iperf3_has_no_malformed_frame() {
    let _s = serial();
    require_root();
    let lab = Lab::up("carrier.toml", "malformed");
    let dir = Scratch::new("malformed");
    let file = dir.path("all.pcapng");
    let mut server = Command::new(d11_bin())
        .args([
            "exec", "--name", &lab.name, "server", "--", "iperf3", "-s", "-1", "-B", SERVER,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 server starts");
    std::thread::sleep(Duration::from_millis(500));
    let script = format!(
        "ping -c 2 -i 0.2 {SERVER} && traceroute -n -q 1 -w 2 {SERVER} && iperf3 -c {SERVER} -t 2 && iperf3 -c {SERVER} -t 1 -R || true"
    );
    let o = lab.capture(&file, "phone", &["sh", "-c", &script]);
    let _ = server.kill();
    let _ = server.wait();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("receiver"), "iperf3 ran: {}", text(&o));

    let all = tshark_fields(&file, "", &["frame.interface_name"]);
    assert!(all.len() > 200, "a real capture: {} frames", all.len());
    let ifaces: BTreeSet<_> = all.iter().map(|r| r[0].clone()).collect();
    assert_eq!(ifaces.len(), 6, "one pcapng interface per wire: {ifaces:?}");
    let bad = bad_frames(&file);
    assert!(bad.is_empty(), "malformed or erroneous frames: {bad:?}");
}

/// Sends raw frames from inside `node`'s namespace out of `ifname` with a
/// Python AF_PACKET socket (the standard library's, not our own code).
fn inject(lab: &Lab, node: &str, ifname: &str, frames_hex: &[String]) {
    let list = frames_hex
        .iter()
        .map(|h| format!("'{h}'"))
        .collect::<Vec<_>>()
        .join(",");
    let py = format!(
        "import socket\ns=socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\ns.bind(('{ifname}', 0))\nfor h in [{list}]:\n    s.send(bytes.fromhex(h))\n"
    );
    lab.sh(node, &["python3", "-c", &py]);
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn garbage_at_a_router_port_is_counted_and_forwarding_goes_on() {
    let _s = serial();
    require_root();
    let lab = Lab::up("carrier.toml", "garbage");
    let status = lab.status();
    let mac = macs(&status);
    let a2 = mac["a2:a2c1"].replace(':', "");
    let c1 = mac["c1:c1a2"].replace(':', "");
    // A valid IPv4/UDP packet from c1 (192.0.2.2) to the server, to be broken in several ways;
    // scapy: bytes(IP(src="192.0.2.2", dst="203.0.113.10", id=1, ttl=64)/UDP(sport=53, dport=53)/(b"\0"*4))
    let ip_ok = "450000200001000040117cbfc0000202cb00710a00350035000c015f00000000";
    let eth = format!("{a2}{c1}0800");
    let mut frames = vec![
        format!("{eth}4500"),                                  // truncated IPv4 header
        format!("{eth}{}", ip_ok.replacen("4500", "6500", 1)), // IP version 6 in an IPv4 EtherType
        format!("{eth}{}", ip_ok.replacen("7cbf", "0000", 1)), // bad header checksum
        format!("{eth}{}", ip_ok.replacen("0020", "0400", 1)), // total length beyond the frame
    ];
    // Random bytes addressed to a2, seeded so a failure repeats.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..50 {
        let len = 20 + (x % 1400) as usize;
        let mut f = hex_decode(&format!("{a2}{c1}0800"));
        while f.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            f.push(x as u8);
        }
        frames.push(hex_encode(&f));
    }
    inject(&lab, "c1", "c1a2", &frames);

    // Oversized: the phone side of the radio is raised to 9000 bytes for one frame.
    let phone = mac["phone:eth0"].replace(':', "");
    let radio = mac["a2:radio"].replace(':', "");
    lab.sh("phone", &["ip", "link", "set", "eth0", "mtu", "9000"]);
    inject(
        &lab,
        "phone",
        "eth0",
        &[format!(
            "{radio}{phone}0800{}{}",
            "45000bb8",
            "00".repeat(2996)
        )],
    );
    lab.sh("phone", &["ip", "link", "set", "eth0", "mtu", "1400"]);

    let status = lab.status();
    let d = drops(&status, "a2", "a2c1");
    for (reason, at_least) in [("truncated", 1), ("malformed", 2), ("bad_checksum", 1)] {
        assert!(
            d[reason].as_u64().unwrap_or(0) >= at_least,
            "a2:a2c1 drops {reason} in {d}"
        );
    }
    let total: u64 = d
        .as_object()
        .unwrap()
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert!(total >= 54, "every garbage frame is a counted drop: {d}");
    assert!(
        drops(&status, "a2", "radio")["oversize"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "{}",
        drops(&status, "a2", "radio")
    );
    let a2 = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "a2")
        .unwrap();
    assert_eq!(a2["restarts"], 0, "no crash");
    let ping = lab.sh(
        "phone",
        &["ping", "-c", "2", "-i", "0.2", "-W", "2", SERVER],
    );
    assert!(ping.contains("2 received"), "forwarding goes on: {ping}");
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn a_killed_router_is_restarted_and_counted() {
    let _s = serial();
    require_root();
    let lab = Lab::up("carrier.toml", "restart");
    let pid = node(&lab.status(), "c1")["pid"]
        .as_u64()
        .expect("c1 has a pid");
    assert!(Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = lab.status();
        let c1 = node(&s, "c1");
        if c1["restarts"] == 1
            && c1["state"] == "running"
            && c1["pid"].as_u64().is_some_and(|p| p != pid)
            && c1["ports"][0]["counters"].is_object()
        {
            break;
        }
        assert!(Instant::now() < deadline, "c1 not restarted: {c1}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let ping = lab.sh(
        "phone",
        &["ping", "-c", "2", "-i", "0.2", "-W", "2", SERVER],
    );
    assert!(ping.contains("2 received"), "{ping}");
    let human = text(&d11(&["status", "--name", &lab.name]));
    assert!(
        human.contains("c1") && human.contains("restarts"),
        "{human}"
    );
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn two_labs_run_side_by_side() {
    let _s = serial();
    require_root();
    let a = Lab::up("carrier.toml", "side-a");
    let b = Lab::up("carrier.toml", "side-b");
    for lab in [&a, &b] {
        let p = lab.sh("phone", &["ping", "-c", "1", "-W", "2", SERVER]);
        assert!(p.contains("1 received"), "{}: {p}", lab.name);
    }
    let name_a = a.name.clone();
    drop(a);
    assert_gone(&name_a);
    let p = b.sh("phone", &["ping", "-c", "1", "-W", "2", SERVER]);
    assert!(p.contains("1 received"), "b survives a's teardown: {p}");
}
