//! Root end-to-end tests of the cloud overlay on `netns/cloud.toml`: two
//! compute hosts' vSwitches on the `tor`, the shop's VMs in VXLAN VNI 1001,
//! vm-other in VNI 1002 with vm-lb's very address, and `kvtep`, a kernel host
//! on the underlay where tests create the kernel's own `vxlan` device.

mod support;

use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

const LB: &str = "192.168.1.10";
const CTL: &str = "192.168.1.20";
const LB_MAC: &str = "02:00:00:00:01:10";
const CTL_MAC: &str = "02:00:00:00:01:20";
const OTHER_MAC: &str = "02:00:00:00:02:10";

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn vm_lb_reaches_vm_ctl_across_hosts_in_vxlan_vni_1001() {
    let _s = serial();
    require_root();
    let lab = Lab::up("cloud.toml", "overlay");
    let dir = Scratch::new("overlay");
    let file = dir.path("all.pcapng");
    let mut server = Command::new(d11_bin())
        .args([
            "exec", "--name", &lab.name, "vm-ctl", "--", "iperf3", "-s", "-1", "-B", CTL,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 server starts");
    std::thread::sleep(Duration::from_millis(500));
    let script = format!("ping -c 3 -i 0.2 {CTL} && iperf3 -c {CTL} -t 2");
    let o = lab.capture(&file, "vm-lb", &["sh", "-c", &script]);
    let _ = server.kill();
    let _ = server.wait();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(" 0% packet loss"), "{}", text(&o));
    assert!(text(&o).contains("receiver"), "iperf3 ran: {}", text(&o));

    let vx = tshark_fields(
        &file,
        "vxlan",
        &[
            "frame.interface_name",
            "vxlan.vni",
            "ip.src",
            "ip.dst",
            "eth.src",
            "eth.dst",
        ],
    );
    assert!(
        vx.len() > 100,
        "iperf3 went through VXLAN: {} frames",
        vx.len()
    );
    for r in &vx {
        assert_eq!(r[1], "1001", "{r:?}");
        // Outer then inner addresses, as the story's table lists them.
        let want_up = [
            "10.0.0.11,192.168.1.10",
            "10.0.0.12,192.168.1.20",
            "02:00:00:00:00:11,02:00:00:00:01:10",
            "02:00:00:00:00:12,02:00:00:00:01:20",
        ];
        let want_down = [
            "10.0.0.12,192.168.1.20",
            "10.0.0.11,192.168.1.10",
            "02:00:00:00:00:12,02:00:00:00:01:20",
            "02:00:00:00:00:11,02:00:00:00:01:10",
        ];
        let got = [&r[2], &r[3], &r[4], &r[5]];
        assert!(got == want_up || got == want_down, "{r:?}");
    }
    let bad = bad_frames(&file);
    assert!(bad.is_empty(), "malformed or erroneous frames: {bad:?}");
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn nothing_vm_other_sends_reaches_a_shop_vm() {
    let _s = serial();
    require_root();
    let lab = Lab::up("cloud.toml", "isolation");
    let dir = Scratch::new("isolation");
    let file = dir.path("all.pcapng");
    let (lb, ctl, other) = (
        LB_MAC.replace(':', ""),
        CTL_MAC.replace(':', ""),
        OTHER_MAC.replace(':', ""),
    );
    // Raw frames through Python's AF_PACKET socket: a broadcast, and a ping
    // to vm-lb with vm-ctl's MAC as a spoofed source; scapy-free bytes:
    // IP(src="192.168.1.10", dst="192.168.1.10", id=1)/ICMP(id=1, seq=1).
    let ip = "4500001c00010000400137f4c0a8010ac0a8010a0800f7fd00010001";
    let frames = [
        format!("ffffffffffff{other}0800{ip}"),
        format!("{lb}{ctl}0800{ip}"),
        format!("{ctl}{other}0800{ip}"),
    ];
    let list = frames
        .iter()
        .map(|h| format!("'{h}'"))
        .collect::<Vec<_>>()
        .join(",");
    let script = format!(
        "ping -c 2 -i 0.2 -W 1 {CTL}; ping -b -c 2 -i 0.2 -W 1 192.168.1.255; \
         python3 -c \"import socket\ns=socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\ns.bind(('eth0', 0))\nfor h in [{list}]:\n    s.send(bytes.fromhex(h))\"; true"
    );
    let o = lab.capture(&file, "vm-other", &["sh", "-c", &script]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("100% packet loss"), "{}", text(&o));

    let all = tshark_fields(&file, "", &["frame.interface_name", "eth.src"]);
    assert!(
        all.iter().filter(|r| r[0] == "vm-other:eth0").count() >= 7,
        "vm-other sent: {all:?}"
    );
    // Nothing on a shop VM's TAP, and (VNI 1002 has no other VTEP) nothing
    // on the underlay either: only vm-other's own wire carried its frames.
    let leaked: Vec<_> = all.iter().filter(|r| r[0] != "vm-other:eth0").collect();
    assert!(leaked.is_empty(), "left vm-other's segment: {leaked:?}");
    // The shop works, and vm-other's MAC is only ever in VNI 1002.
    lab.sh("vm-lb", &["ping", "-c", "1", "-W", "2", CTL]);
    let o = d11(&["show", "--name", &lab.name, "--json", "hosta", "fdb"]);
    let rows: Value = serde_json::from_slice(&o.stdout).expect("d11 show --json");
    let rows: Vec<(Value, Value, Value, Value)> = rows
        .as_array()
        .expect("fdb rows")
        .iter()
        .map(|r| {
            (
                r["vni"].clone(),
                r["mac"].clone(),
                r["port"].clone(),
                r["vtep"].clone(),
            )
        })
        .collect();
    let has = |vni: u32, mac: &str, port: &str, vtep: Value| {
        rows.contains(&(vni.into(), mac.into(), port.into(), vtep))
    };
    assert!(has(1002, OTHER_MAC, "other", Value::Null), "{rows:?}");
    // The spoofed source was learned, in VNI 1002 only; the shop's entry stands.
    assert!(has(1002, CTL_MAC, "other", Value::Null), "{rows:?}");
    assert!(
        has(1001, CTL_MAC, "underlay", "10.0.0.12".into()),
        "{rows:?}"
    );
    assert!(
        !rows.iter().any(|r| r.1 == OTHER_MAC && r.0 != 1002),
        "{rows:?}"
    );
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn the_kernels_vxlan_device_talks_to_our_vswitches_on_vni_1001() {
    let _s = serial();
    require_root();
    let lab = Lab::up("cloud.toml", "kvxlan");
    // The kernel's VTEP, inside the test lab's kvtep namespace only.
    for cmd in [
        "ip link add vx0 type vxlan id 1001 dstport 4789 local 10.0.0.9 remote 10.0.0.11 dev eth0",
        "ip link set vx0 address 02:00:00:00:01:30 mtu 1450 up",
        "ip addr add 192.168.1.30/24 dev vx0",
    ] {
        let args: Vec<&str> = cmd.split(' ').collect();
        lab.sh("kvtep", &args);
    }
    let o = lab.sh(
        "vm-lb",
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", "192.168.1.30"],
    );
    assert!(o.contains(" 0% packet loss"), "{o}");
    // Host B's VM too: its vSwitch floods ARP to 10.0.0.9, the kernel learns
    // the VM's MAC behind 10.0.0.12 from the VXLAN it receives.
    let o = lab.sh(
        "vm-ctl",
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", "192.168.1.30"],
    );
    assert!(o.contains(" 0% packet loss"), "{o}");
    let o = lab.sh(
        "kvtep",
        &["ping", "-c", "2", "-i", "0.2", "-W", "2", "-I", "vx0", LB],
    );
    assert!(o.contains(" 0% packet loss"), "{o}");
    let o = d11(&["show", "--name", &lab.name, "--json", "hosta", "fdb"]);
    let rows: Value = serde_json::from_slice(&o.stdout).expect("d11 show --json");
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .any(|r| r["mac"] == "02:00:00:00:01:30"
                && r["vtep"] == "10.0.0.9"
                && r["vni"] == 1001),
        "hosta learned the kernel VTEP's MAC: {rows}"
    );
    let fdb = lab.sh("kvtep", &["bridge", "fdb", "show", "dev", "vx0"]);
    assert!(fdb.contains(&format!("{CTL_MAC} dst 10.0.0.12")), "{fdb}");
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn bad_vxlan_is_counted_and_forwarding_goes_on() {
    let _s = serial();
    require_root();
    let lab = Lab::up("cloud.toml", "badvxlan");
    let inner = format!(
        "{}{}0800{}",
        LB_MAC.replace(':', ""),
        "020000000199",
        "4500001c00010000400137f4c0a8010ac0a8010a0800f7fd00010001"
    );
    let payloads = [
        format!("000000000003e900{inner}"),          // I flag clear
        format!("0800000000109200{inner}"),          // VNI 4242
        format!("080000000003e900{}", &inner[..10]), // 5 bytes of inner frame
    ];
    let list = payloads
        .iter()
        .map(|h| format!("'{h}'"))
        .collect::<Vec<_>>()
        .join(",");
    let py = format!(
        "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor h in [{list}]:\n    s.sendto(bytes.fromhex(h), ('10.0.0.11', 4789))\n"
    );
    lab.sh("kvtep", &["python3", "-c", &py]);
    std::thread::sleep(Duration::from_millis(300));
    let d = drops(&lab.status(), "hosta", "underlay");
    assert_eq!(d["vxlan_malformed"], 1, "{d}");
    assert_eq!(d["vxlan_unknown_vni"], 1, "{d}");
    assert_eq!(d["vxlan_inner_truncated"], 1, "{d}");
    let o = lab.sh("vm-lb", &["ping", "-c", "2", "-i", "0.2", "-W", "2", CTL]);
    assert!(o.contains(" 0% packet loss"), "{o}");
    // The vgw's VTEP address answers ping from the underlay (not in VXLAN).
    let o = lab.sh("kvtep", &["ping", "-c", "1", "-W", "2", "10.0.0.1"]);
    assert!(o.contains(" 0% packet loss") && o.contains("ttl=64"), "{o}");
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn the_internet_reaches_vm_lb_through_the_vip_and_only_there() {
    let _s = serial();
    require_root();
    let lab = Lab::up("cloud.toml", "dnat");
    let dir = Scratch::new("dnat");
    std::fs::write(dir.path("index.html"), "double11 shop\n").expect("page");
    // http.server's own HTTPServer looks its name up in DNS at bind time,
    // which in a namespace without DNS only times out; a plain TCPServer
    // with its request handler serves the same files at once.
    let py = format!(
        "import functools, http.server as h, socketserver as s\n\
         s.TCPServer.allow_reuse_address = True\n\
         s.TCPServer(('{LB}', 443), functools.partial(h.SimpleHTTPRequestHandler, directory='{}')).serve_forever()",
        dir.0.display()
    );
    let mut server = Command::new(d11_bin())
        .args([
            "exec",
            "--name",
            &lab.name,
            "vm-lb",
            "--",
            "/usr/bin/python3",
            "-c",
            &py,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("http.server starts");
    // The server is up once vm-lb itself gets the page.
    let mut up = false;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let o = lab.exec(
            "vm-lb",
            &["curl", "-s", "-m", "1", "http://192.168.1.10:443/"],
        );
        if o.status.success() {
            up = true;
            break;
        }
    }
    assert!(up, "http.server in vm-lb answers");
    let file = dir.path("all.pcapng");
    let o = lab.capture(
        &file,
        "client",
        &[
            "curl",
            "-sS",
            "-m",
            "5",
            "http://203.0.113.24:443/index.html",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("double11 shop"), "{}", text(&o));
    // Not configured: another port of the VIP, a VIP without a rule.
    for url in ["http://203.0.113.24:80/", "http://203.0.113.25:443/"] {
        let o = lab.exec("client", &["curl", "-sS", "-m", "1", url]);
        assert!(!o.status.success(), "{url}: {}", text(&o));
    }
    let _ = server.kill();
    let _ = server.wait();

    let d = drops(&lab.status(), "vgw", "ext");
    assert!(d["nat_unsolicited"].as_u64().unwrap_or(0) >= 2, "{d}");
    let o = d11(&["show", "--name", &lab.name, "--json", "vgw", "nat"]);
    let nat: Value = serde_json::from_slice(&o.stdout).expect("d11 show --json");
    let e = &nat.as_array().expect("nat rows")[0];
    assert_eq!(e["dst"], "203.0.113.24:443", "{nat}");
    assert_eq!(e["reply_src"], "192.168.1.10:443", "{nat}");
    // Gateway node → host A: VXLAN VNI 1001 from 10.0.0.1 to 10.0.0.11 with
    // the client's packet inside, from the VPC router's MAC to vm-lb's.
    let rows = tshark_fields(
        &file,
        "vxlan && ip.src == 10.0.0.1",
        &["vxlan.vni", "ip.dst", "ip.src", "eth.src", "eth.dst"],
    );
    assert!(rows.len() >= 4, "{rows:?}");
    for r in &rows {
        assert_eq!(r[0], "1001", "{r:?}");
        assert_eq!(r[1], "10.0.0.11,192.168.1.10", "{r:?}");
        assert_eq!(r[2], "10.0.0.1,192.0.2.130", "{r:?}");
        assert_eq!(r[3], "02:00:00:00:00:01,02:00:00:00:0a:01", "{r:?}");
        assert_eq!(r[4], format!("02:00:00:00:00:11,{LB_MAC}"), "{r:?}");
    }
    // vm-other, with the same address in VNI 1002, saw nothing of it.
    let other = tshark_fields(&file, "", &["frame.interface_name"]);
    assert!(
        !other.iter().any(|r| r[0] == "vm-other:eth0"),
        "traffic on vm-other's TAP"
    );
    // Wire by wire: python's http.server sends its HTTP/1.0 answer in two
    // writes, the body after the client's ACK of the headers has crossed
    // the three wires of the private side, so Wireshark 4.0, reading the
    // whole file, takes the body's later copies for fast retransmissions
    // (docs/order.md, "Reading the capture").
    let bad = broken_frames_per_wire(&file);
    assert!(bad.is_empty(), "malformed or erroneous frames: {bad:?}");
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn in_the_story_lab_the_server_and_the_phone_reach_the_vip_and_the_azs_each_other() {
    let _s = serial();
    require_root();
    let lab = Lab::up("double11.toml", "story-cloud");
    // The VIP's :443 reaches the l4lb in vm-lb, which proxies to a
    // controller: the server (straight) and the phone (GTP-U, the pgw's
    // NAT, the carriers) both get its health answer through the vgw's DNAT.
    let root = format!("/run/d11/{}/pki/root.pem", lab.name);
    for node in ["server", "ue"] {
        let o = lab.exec(
            node,
            &[
                "curl",
                "-sS",
                "-m",
                "5",
                "--cacert",
                &root,
                "--resolve",
                "www.geektime.com:443:203.0.113.24",
                "https://www.geektime.com/health",
            ],
        );
        assert!(
            o.status.success(),
            "{node} → VIP → vm-lb → controller: {}",
            text(&o)
        );
    }
    let o = d11(&["show", "--name", &lab.name, "--json", "vgw", "nat"]);
    let nat: Value = serde_json::from_slice(&o.stdout).expect("d11 show --json");
    assert!(
        nat.as_array().expect("nat rows").iter().any(|e| e["src"]
            .as_str()
            .is_some_and(|s| s.starts_with("198.51.100."))),
        "the phone arrives from the pgw's NAT pool: {nat}"
    );
    // AZ1 → AZ2 through the VPC's router on the vgw: one hop, TTL 63.
    let o = lab.sh(
        "vm-lb",
        &["ping", "-c", "2", "-i", "0.2", "-W", "2", "192.168.2.20"],
    );
    assert!(o.contains(" 0% packet loss") && o.contains("ttl=63"), "{o}");

    // The vgw answers as a router. A VM pings its default gateway (inside
    // VXLAN VNI 1001), and its first traceroute hop is that gateway.
    let o = lab.sh("vm-lb", &["ping", "-c", "1", "-W", "2", "192.168.1.1"]);
    assert!(o.contains(" 0% packet loss") && o.contains("ttl=64"), "{o}");
    let o = lab.sh(
        "vm-lb",
        &[
            "traceroute",
            "-n",
            "-q",
            "1",
            "-w",
            "1",
            "-m",
            "2",
            "192.168.2.20",
        ],
    );
    let hops: Vec<&str> = o.lines().skip(1).collect();
    assert!(
        hops.first().is_some_and(|h| h.contains(" 192.168.1.1 "))
            && hops.get(1).is_some_and(|h| h.contains(" 192.168.2.20 ")),
        "vm-lb → vm-ctl2 through the VPC router: {o}"
    );
    // From the internet: TCP probes to the VIP's port (UDP probes would not
    // be translated) show the carriers, the vgw's ext address, then the VIP.
    let o = lab.sh(
        "server",
        &[
            "traceroute",
            "-n",
            "-T",
            "-p",
            "443",
            "-q",
            "1",
            "-w",
            "1",
            "203.0.113.24",
        ],
    );
    let hops: Vec<&str> = o.lines().skip(1).collect();
    let vgw_hop = hops.iter().position(|h| h.contains(" 203.0.113.2 "));
    assert!(
        vgw_hop.is_some_and(|i| hops
            .get(i + 1)
            .is_some_and(|h| h.contains(" 203.0.113.24 "))),
        "server → vgw → VIP: {o}"
    );
    // Path MTU discovery through the DNAT: 1500 bytes with DF to the VIP
    // do not fit a VM (1450) once in VXLAN; the vgw says so, quoting the
    // VIP as the server wrote it.
    let py = "from scapy.all import IP, TCP, ICMP, IPerror, sr1, conf\n\
              conf.verb = 0\n\
              p = IP(dst='203.0.113.24', flags='DF') / TCP(sport=40443, dport=443, flags='S') / (b'x' * 1460)\n\
              r = sr1(p, timeout=3)\n\
              print('none' if r is None else (r[IP].src, r[ICMP].type, r[ICMP].code, r[ICMP].nexthopmtu, r[IPerror].dst, len(p)))";
    let o = lab.sh("server", &["/usr/bin/python3", "-c", py]);
    assert_eq!(
        o.trim(),
        "('203.0.113.2', 3, 4, 1450, '203.0.113.24', 1500)",
        "fragmentation needed from the vgw"
    );
    let status = lab.status();
    let vgw = &node(&status, "vgw")["report"]["originated"];
    assert!(vgw["echo_replies"].as_u64() >= Some(1), "{vgw}");
    assert!(vgw["time_exceeded"].as_u64() >= Some(2), "{vgw}");
    assert_eq!(vgw["frag_needed"], 1, "{vgw}");
}
