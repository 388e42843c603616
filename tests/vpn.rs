//! End-to-end test of chapter 1's second region (netns/double11.toml, root
//! only): a north VM reaches east's VPC only through the IPsec VPN between
//! vgw and vgw-n (docs/vpn.md); tshark with the lab's own SA table finds the
//! RPC inside the ESP on a carrier's wire; an order through a north VIP is
//! stored once in east's database; an internet host's replayed, flipped,
//! re-SPI'd and stale ESP packets are counted drops; iperf3 crosses with
//! path MTU discovery; VNI isolation holds; nothing is malformed; `d11 down`
//! leaves nothing.

mod support;

use serde_json::Value;
use std::path::Path;
use support::*;

const BODY: &str =
    r#"{"order":{"date":"2018-07-01","className":"趣谈网络协议","Author":"刘超","price":"68"}}"#;

/// The wires between the two gateways, outside both VPCs.
const BETWEEN: [&str; 6] = [
    "border:ext",
    "c2:c2bd",
    "c2:c2bn",
    "border-n:ext",
    "c3:c3bd",
    "c3:c3bn",
];

fn on_between(filter: &str) -> String {
    let wires: Vec<String> = BETWEEN
        .iter()
        .map(|w| format!("frame.interface_name == \"{w}\""))
        .collect();
    format!("({}) && ({filter})", wires.join(" || "))
}

/// tshark's fields of `filter`'s frames, decrypted with the lab's own SA
/// table: the one documented step, `d11 up`'s `vpn/esp_sa` copied into a
/// Wireshark profile (here a scratch HOME's ~/.config/wireshark/).
fn decrypted(
    lab: &Lab,
    scratch: &Scratch,
    cap: &Path,
    filter: &str,
    fields: &[&str],
) -> Vec<Vec<String>> {
    let home = scratch.path("home");
    let dir = home.join(".config/wireshark");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        format!("/run/d11/{}/vpn/esp_sa", lab.name),
        dir.join("esp_sa"),
    )
    .expect("d11 up wrote the SA table");
    let mut cmd = std::process::Command::new("tshark");
    cmd.env("HOME", &home).arg("-r").arg(cap).args([
        "-o",
        "esp.enable_encryption_decode:TRUE",
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-Y",
        filter,
    ]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let o = cmd.output().expect("tshark runs");
    assert!(o.status.success(), "tshark: {}", text(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect()
}

fn vgw_sa(lab: &Lab, node_name: &str, direction: &str) -> Value {
    let st = lab.status();
    let sas = node(&st, node_name)["report"]["sas"].as_array().cloned();
    sas.unwrap_or_default()
        .into_iter()
        .find(|s| s["direction"] == direction)
        .unwrap_or(Value::Null)
}

/// Sends ESP packets captured on east's ext wire again from the internet
/// host `server`, changed as `how` says, with scapy (raw IP, the kernel
/// routes it to c2): `replay` the newest as it was, `flip` one bit of the
/// newest's ciphertext under a fresh sequence number, `spi` the newest
/// under an unknown SPI, `stale` the oldest.
fn attack(lab: &Lab, pcap: &Path, how: &str) {
    let py = format!(
        r#"
from scapy.all import rdpcap, IP, send, conf
conf.verb = 0
esp = [bytes(p[IP]) for p in rdpcap("{pcap}") if IP in p and p[IP].proto == 50 and p[IP].src == "198.19.24.2"]
assert len(esp) > 130, len(esp)
how = "{how}"
b = bytearray(esp[0] if how == "stale" else esp[-1])
if how == "flip":
    b[24:28] = (10**6).to_bytes(4, "big"); b[40] ^= 1
if how == "spi":
    b[20:24] = (0x0bad0001).to_bytes(4, "big")
send(IP(bytes(b)))
"#,
        pcap = pcap.display()
    );
    lab.sh("server", &["/usr/bin/python3", "-c", &py]);
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn region_north_reaches_east_only_through_the_vpn() {
    let _s = serial();
    require_root();
    let scratch = Scratch::new("vpn");
    let name;
    {
        let lab = Lab::up("double11.toml", "vpn");
        name = lab.name.clone();

        // An order through a north VIP, captured on every wire: vm-lb-n →
        // vm-ctl-n → (VPN) → east's registry and order service.
        let cap = scratch.path("order.pcapng");
        let root = format!("/run/d11/{}/pki/root.pem", lab.name);
        let o = lab.capture(
            &cap,
            "ue",
            &[
                "curl",
                "-sS",
                "-m",
                "10",
                "-w",
                "\n%{http_code}",
                "--cacert",
                &root,
                "--resolve",
                "www.geektime.com:443:198.19.24.24",
                "-H",
                "Content-Type: application/json",
                "-H",
                "Idempotency-Key: north-1",
                "-d",
                BODY,
                "https://www.geektime.com/purchaseOrder",
            ],
        );
        let out = text(&o);
        assert!(o.status.success() && out.contains("}\n201"), "{out}");
        assert!(out.contains("\"served_by\":\"vm-ctl-n\""), "{out}");
        assert_eq!(order_rows(&lab, "north-1"), 1, "stored once, in east");

        // Between the gateways nothing of either VPC in clear, and ESP there.
        let clear = tshark_fields(
            &cap,
            &on_between("ip.addr == 172.20.0.0/16 || ip.addr == 192.168.0.0/16"),
            &["frame.number", "frame.interface_name"],
        );
        assert_eq!(clear, Vec::<Vec<String>>::new(), "VPC packets in clear");
        let esp = tshark_fields(&cap, &on_between("esp"), &["frame.interface_name"]);
        assert!(
            esp.iter().any(|w| w[0] == "c2:c2bn"),
            "ESP on c2's wire to border-n"
        );
        // Decrypted with the lab's table: the RPC inside (Dubbo's magic
        // 0xdabb opens each request), from vm-ctl-n to east's services.
        let rpc = decrypted(
            &lab,
            &scratch,
            &cap,
            "frame.interface_name == \"c2:c2bn\" && esp && tcp.len > 0 && ip.src == 172.20.1.20",
            &["ip.dst", "tcp.dstport", "tcp.payload"],
        );
        assert!(
            rpc.iter()
                .any(|r| r[0].ends_with("192.168.1.40") && r[2].starts_with("dabb")),
            "{rpc:?}"
        );
        assert_eq!(
            bad_frames(&cap),
            Vec::<Vec<String>>::new(),
            "malformed frames"
        );

        // 200 pings north → east, captured on east's ext wire; then an
        // internet host replays, flips, re-SPIs and re-sends the oldest.
        let all = scratch.path("pings.pcapng");
        let o = lab.capture(
            &all,
            "vm-ctl-n",
            &["ping", "-q", "-c", "200", "-i", "0.005", "192.168.1.40"],
        );
        assert!(o.status.success(), "{}", text(&o));
        let pings = scratch.path("pings.pcap");
        let split = std::process::Command::new("tshark")
            .arg("-r")
            .arg(&all)
            .args([
                "-Y",
                "frame.interface_name == \"border:ext\" && esp",
                "-F",
                "pcap",
                "-w",
            ])
            .arg(&pings)
            .output()
            .expect("tshark runs");
        assert!(split.status.success(), "{}", text(&split));
        let before = vgw_sa(&lab, "vgw", "in")["packets"].as_u64().unwrap();
        for how in ["replay", "flip", "spi", "stale"] {
            attack(&lab, &pings, how);
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        let sa = vgw_sa(&lab, "vgw", "in");
        assert_eq!(sa["drops"]["esp_replayed"], 1, "{sa}");
        assert_eq!(sa["drops"]["esp_bad_icv"], 1, "{sa}");
        assert_eq!(sa["drops"]["esp_outside_window"], 1, "{sa}");
        assert_eq!(sa["packets"].as_u64().unwrap(), before, "none got in");
        assert_eq!(drops(&lab.status(), "vgw", "ext")["esp_unknown_spi"], 1);
        // Traffic goes on.
        lab.sh("vm-ctl-n", &["ping", "-c", "2", "-W", "2", "192.168.1.40"]);

        // iperf3 north → east with path MTU discovery: the VM's 1450 does
        // not fit the tunnel (1446); frag-needed teaches the kernel.
        lab.sh("vm-reg", &["iperf3", "-s", "-1", "-D", "-p", "5299"]);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let iperf = lab.sh(
            "vm-lb-n",
            &[
                "iperf3",
                "-c",
                "192.168.1.30",
                "-p",
                "5299",
                "-t",
                "2",
                "-J",
            ],
        );
        let v: Value = serde_json::from_str(&iperf).expect("iperf3 -J");
        let bps = v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap();
        assert!(bps > 1e6, "iperf3 through the VPN: {bps} b/s");
        let route = lab.sh("vm-lb-n", &["ip", "route", "get", "192.168.1.30"]);
        assert!(route.contains("mtu 1446"), "{route}");
        let n = lab.status();
        assert!(
            node(&n, "vgw-n")["report"]["vpn"]["frag_needed"]
                .as_u64()
                .unwrap()
                >= 1
        );

        // VNI isolation across both regions: tenant "other" (VNI 1002) has
        // no way to north's VPC, and north's VM reaching 192.168.1.10 gets
        // the shop's vm-lb (VNI 1001), never vm-other at the same address.
        let o = lab.exec("vm-other", &["ping", "-c", "1", "-W", "1", "172.20.1.10"]);
        assert!(!o.status.success(), "VNI 1002 reached north");
        let other_rx =
            |lab: &Lab| node(&lab.status(), "hosta")["ports"]["other"]["tx_frames"].as_u64();
        let was = other_rx(&lab);
        lab.sh("vm-lb-n", &["ping", "-c", "2", "-W", "2", "192.168.1.10"]);
        assert_eq!(other_rx(&lab), was, "vm-other saw north's pings");
    }
    assert_gone(&name);
}
