//! Chapter 1's second region and its VPN, in memory on the virtual clock,
//! from netns/double11.toml: a VM of region north (VPC shop-north, VNI 2001)
//! reaches east's VPC only through ESP between the two gateways (vgw, vgw-n)
//! across the carriers; what an attacker on the internet replays, flips or
//! sends under a strange SPI is a counted drop, and traffic goes on; a DF
//! packet too big for the tunnel gets fragmentation needed with the
//! tunnel's MTU, one without DF crosses in outer fragments. The topology
//! has no keys here (`d11 up` writes them), so both ends use the key
//! derived from each SPI (`d11_elements::vpn::derived_key`), which the
//! test gives tshark to decrypt the capture.

mod common;

use d11_elements::vgw::VgwReport;
use d11_elements::vpn::{derived_key, key_hex};
use d11_lab::Topology;
use d11_sim::{LinkParams, Message, SimLab};
use d11_wire::ethernet::{self, EtherType, EthernetFrame};
use d11_wire::ipv4::{Ipv4Packet, Ipv4Repr};
use d11_wire::udp::UdpRepr;
use d11_wire::MacAddr;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

const VM_ORDER: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 40);
const VM_CTL_N: Ipv4Addr = Ipv4Addr::new(172, 20, 1, 20);
const VGW: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const VGW_N: Ipv4Addr = Ipv4Addr::new(198, 19, 24, 2);

fn lab(seed: u64) -> SimLab {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../netns/double11.toml");
    let topo = Topology::load(std::path::Path::new(path)).expect("double11.toml loads");
    let mut lab = SimLab::new(&topo, seed, |_| LinkParams {
        delay: Duration::from_micros(100),
        loss: 0.0,
    })
    .expect("every node of double11.toml builds");
    lab.sim.capture_pcapng();
    common::converge(&mut lab, Duration::from_secs(60));
    lab
}

fn replies(lab: &mut SimLab, host: &str) -> Vec<(Ipv4Addr, u16)> {
    (lab.host(host).take_received().into_iter())
        .filter_map(|r| match r.msg {
            Message::EchoReply { seq, .. } => Some((r.src, seq)),
            _ => None,
        })
        .collect()
}

fn vgw(lab: &SimLab, name: &str) -> VgwReport {
    lab.sim.status(lab.node(name)).report().unwrap()
}

/// The wires between the two gateways, outside either VPC.
/// (The capture names each wire after its `a` end.)
const BETWEEN: [&str; 6] = [
    "border:ext",
    "c2:c2bd",
    "c2:c2bn",
    "border-n:ext",
    "c3:c3bd",
    "c3:c3bn",
];

/// Every IPv4 packet captured on the wires between the regions.
fn between(lab: &mut SimLab) -> Vec<(String, Vec<u8>)> {
    common::frames(lab.sim.pcapng())
        .into_iter()
        .filter(|(w, _)| BETWEEN.iter().any(|b| w == b))
        .filter_map(|(w, f)| {
            let e = EthernetFrame::new_checked(&f[..]).ok()?;
            (e.ethertype() == EtherType::Ipv4).then(|| (w, e.payload().to_vec()))
        })
        .collect()
}

fn in_a_vpc(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    (o[0] == 192 && o[1] == 168) || (o[0] == 172 && o[1] == 20)
}

/// A home directory whose Wireshark profile holds the ESP SA table for
/// the derived keys (one `-o uat:esp_sa:` option keeps only its last row,
/// so the table goes where `d11 up`'s would: ~/.config/wireshark/esp_sa).
fn wireshark_home() -> std::path::PathBuf {
    let home = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("vpn-home");
    let dir = home.join(".config/wireshark");
    std::fs::create_dir_all(&dir).unwrap();
    let mut table = String::new();
    for (src, dst, spi) in [(VGW, VGW_N, 0x1001u32), (VGW_N, VGW, 0x2001)] {
        table.push_str(&format!(
            "\"IPv4\",\"{src}\",\"{dst}\",\"0x{spi:08x}\",\"AES-GCM with 16 octet ICV [RFC4106]\",\"0x{}\",\"NULL\",\"\"\n",
            key_hex(&derived_key(spi))
        ));
    }
    std::fs::write(dir.join("esp_sa"), table).unwrap();
    home
}

#[test]
fn a_north_vm_reaches_east_only_as_esp_between_the_gateways_and_tshark_decrypts_it() {
    let mut lab = lab(11);
    for seq in 1..=3 {
        lab.host("vm-ctl-n").ping(VM_ORDER, 64, 0x15, seq);
    }
    lab.sim.run_for(Duration::from_secs(2));
    let got = replies(&mut lab, "vm-ctl-n");
    assert_eq!(got, [(VM_ORDER, 1), (VM_ORDER, 2), (VM_ORDER, 3)]);
    // Between the regions: the VPN's packets are ESP gateway to gateway,
    // and no packet of either VPC is seen in clear.
    let pkts = between(&mut lab);
    let mut esp = 0;
    for (wire, p) in &pkts {
        let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert!(
            !in_a_vpc(ip.src()) && !in_a_vpc(ip.dst()),
            "{wire}: {} → {} in clear",
            ip.src(),
            ip.dst()
        );
        if [ip.src(), ip.dst()] == [VGW, VGW_N] || [ip.src(), ip.dst()] == [VGW_N, VGW] {
            assert_eq!(ip.protocol(), 50, "{wire}: gateway to gateway is ESP");
            esp += 1;
        }
    }
    // 3 requests and 3 replies, each on the 4 wires of the path (c2's way).
    assert_eq!(esp, 24);
    let (e, n) = (vgw(&lab, "vgw"), vgw(&lab, "vgw-n"));
    assert_eq!((n.sas[0].direction.as_str(), n.sas[0].packets), ("out", 3));
    assert_eq!(
        (e.sas[1].direction.as_str(), e.sas[1].packets, e.sas[1].seq),
        ("in", 3, 3)
    );
    assert_eq!((e.stats.from_vpn, e.stats.to_vpn), (3, 3));
    if !common::tshark_agrees(&mut lab.sim, "vpn-ping.pcapng") {
        return;
    }
    // Decrypted with the SA table: the pings inside, north VM ↔ east VM.
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("vpn-ping.pcapng");
    let out = Command::new("tshark")
        .env("HOME", wireshark_home())
        .arg("-r")
        .arg(&path)
        .args(["-o", "esp.enable_encryption_decode:TRUE"])
        .args([
            "-Y",
            "esp && icmp",
            "-T",
            "fields",
            "-e",
            "frame.interface_name",
            "-e",
            "ip.src",
            "-e",
            "icmp.type",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut inside: Vec<&str> = text.lines().filter(|l| l.starts_with("c2:c2bn")).collect();
    inside.sort_unstable();
    assert_eq!(
        inside,
        [
            "c2:c2bn\t198.19.24.2,172.20.1.20\t8",
            "c2:c2bn\t198.19.24.2,172.20.1.20\t8",
            "c2:c2bn\t198.19.24.2,172.20.1.20\t8",
            "c2:c2bn\t203.0.113.2,192.168.1.40\t0",
            "c2:c2bn\t203.0.113.2,192.168.1.40\t0",
            "c2:c2bn\t203.0.113.2,192.168.1.40\t0",
        ],
        "{text}"
    );
}

/// `ip` sent from the internet-side `server` behind c2, in a frame of its
/// own: an attacker who captured the carriers' wire.
fn from_server(lab: &mut SimLab, ip: &[u8]) {
    let c2 = d11_lab::default_mac("c2", "srv");
    let me = lab.host("server").mac();
    let mut f = vec![];
    ethernet::emit_header(&mut f, c2, me, EtherType::Ipv4);
    f.extend_from_slice(ip);
    lab.host("server").send_frame(f);
    lab.sim.run_for(Duration::from_millis(50));
}

fn port_drop(lab: &SimLab, node: &str, reason: &str) -> u64 {
    let r = d11_core::DropReason::ALL
        .iter()
        .find(|r| r.name() == reason)
        .unwrap();
    let st = lab.sim.status(lab.node(node));
    (st.ports.iter())
        .map(|(_, p)| p.counters.drop_count(*r))
        .sum()
}

#[test]
fn replayed_flipped_unknown_and_stale_esp_are_counted_drops_and_traffic_goes_on() {
    let mut lab = lab(12);
    // 200 datagrams north → east, so the first falls off the window.
    for i in 0..200u16 {
        lab.host("vm-ctl-n")
            .udp(VM_ORDER, 40000 + i, 9, b"order", 64);
        lab.sim.run_for(Duration::from_millis(2));
    }
    lab.sim.run_for(Duration::from_millis(200));
    let e = vgw(&lab, "vgw");
    assert_eq!(
        e.sas[1].packets,
        200,
        "{:?} {:?}",
        e.sas,
        vgw(&lab, "vgw-n").sas
    );
    let esp: Vec<Vec<u8>> = (between(&mut lab).into_iter())
        .filter(|(w, p)| w == "border:ext" && p[9] == 50 && p[12..16] == VGW_N.octets())
        .map(|(_, p)| p)
        .collect();
    assert_eq!(esp.len(), 200);
    let last = esp[199].clone();
    // The newest, again: a replay.
    from_server(&mut lab, &last);
    // One bit of its ciphertext changed (a fresh sequence number, so the
    // window lets it through to the ICV check).
    let mut flipped = last.clone();
    flipped[24..28].copy_from_slice(&500u32.to_be_bytes());
    flipped[40] ^= 0x01;
    from_server(&mut lab, &flipped);
    // An SPI the gateway has no SA for.
    let mut stranger = last.clone();
    stranger[20..24].copy_from_slice(&0x0bad_0001u32.to_be_bytes());
    from_server(&mut lab, &stranger);
    // The very first one: far left of the 128-packet window.
    from_server(&mut lab, &esp[0]);
    let e = vgw(&lab, "vgw");
    let drops = &e.sas[1].drops;
    assert_eq!(drops.get("esp_replayed"), Some(&1), "{drops:?}");
    assert_eq!(drops.get("esp_bad_icv"), Some(&1), "{drops:?}");
    assert_eq!(drops.get("esp_outside_window"), Some(&1), "{drops:?}");
    assert_eq!(port_drop(&lab, "vgw", "esp_unknown_spi"), 1);
    assert_eq!(port_drop(&lab, "vgw", "esp_replayed"), 1);
    assert_eq!(e.sas[1].packets, 200, "none of them got in");
    // The forged sequence number 500 did not move the window: 201 still opens.
    lab.host("vm-ctl-n").ping(VM_ORDER, 64, 0x16, 1);
    lab.sim.run_for(Duration::from_secs(1));
    assert_eq!(replies(&mut lab, "vm-ctl-n"), [(VM_ORDER, 1)]);
    assert_eq!(vgw(&lab, "vgw").sas[1].seq, 201);
    common::tshark_agrees(&mut lab.sim, "vpn-attacks.pcapng");
}

#[test]
fn too_big_with_df_gets_the_tunnels_mtu_and_without_df_crosses_in_outer_fragments() {
    let mut lab = lab(13);
    // 1422 bytes of UDP: a 1450-byte packet, the VM's MTU, with DF.
    let big = vec![0x5a; 1422];
    lab.host("vm-ctl-n").udp(VM_ORDER, 40000, 9, &big, 64);
    lab.sim.run_for(Duration::from_secs(1));
    let got = lab.host("vm-ctl-n").take_received();
    let frag: Vec<_> = (got.iter())
        .filter_map(|r| match &r.msg {
            Message::DestUnreachable { code: 4, mtu, .. } => Some((r.src, *mtu)),
            _ => None,
        })
        .collect();
    assert_eq!(frag, [(Ipv4Addr::new(172, 20, 1, 1), 1446)], "{got:?}");
    assert_eq!(vgw(&lab, "vgw-n").vpn.unwrap().frag_needed, 1);
    // 1446 fits exactly.
    lab.host("vm-ctl-n")
        .udp(VM_ORDER, 40000, 9, &big[..1418], 64);
    // Without DF: sealed, the outer packet split in two, put back together
    // at vgw, delivered whole.
    let mut pkt = vec![];
    Ipv4Repr {
        src: VM_CTL_N,
        dst: VM_ORDER,
        protocol: 17,
        ttl: 64,
        ident: 77,
        dont_frag: false,
        payload_len: 8 + big.len(),
    }
    .emit(&mut pkt);
    UdpRepr {
        src_port: 40001,
        dst_port: 10,
        payload_len: big.len(),
    }
    .emit_with_checksum(&mut pkt, VM_CTL_N, VM_ORDER, &big);
    let gw = MacAddr([2, 0, 0, 1, 0xa, 1]);
    let me = lab.host("vm-ctl-n").mac();
    let mut f = vec![];
    ethernet::emit_header(&mut f, gw, me, EtherType::Ipv4);
    f.extend_from_slice(&pkt);
    lab.host("vm-ctl-n").send_frame(f);
    lab.sim.run_for(Duration::from_secs(1));
    let got: Vec<(u16, usize)> = (lab.host("vm-order").take_received().into_iter())
        .filter_map(|r| match r.msg {
            Message::Udp { dport, payload, .. } => Some((dport, payload.len())),
            _ => None,
        })
        .collect();
    assert_eq!(got, [(9, 1418), (10, 1422)]);
    let (n, e) = (vgw(&lab, "vgw-n"), vgw(&lab, "vgw"));
    assert_eq!(n.vpn.unwrap().fragmented, 1);
    assert_eq!(e.vpn.unwrap().reassembled, 1);
    common::tshark_agrees(&mut lab.sim, "vpn-mtu.pcapng");
}

#[test]
fn a_traceroute_through_the_vpn_sees_both_gateways_and_east_answers_through_the_tunnel() {
    let mut lab = lab(14);
    // TTL 1 ends at vgw-n, TTL 2 at vgw (inside the tunnel), 3 arrives.
    for ttl in 1..=3u8 {
        lab.host("vm-ctl-n")
            .ping(VM_ORDER, ttl, 0x17, u16::from(ttl));
    }
    // East's gateway address answers, and an address no VM holds is
    // unreachable, both from east's router back through the tunnel.
    lab.host("vm-ctl-n")
        .ping(Ipv4Addr::new(192, 168, 1, 1), 64, 0x18, 1);
    lab.host("vm-ctl-n")
        .ping(Ipv4Addr::new(192, 168, 1, 99), 64, 0x19, 1);
    lab.sim.run_for(Duration::from_secs(2));
    let mut got: Vec<(Ipv4Addr, String)> = (lab.host("vm-ctl-n").take_received().into_iter())
        .map(|r| {
            let what = match r.msg {
                Message::EchoReply { id, seq, .. } => format!("echo reply {id:#x}/{seq}"),
                Message::TimeExceeded { quoted, .. } => {
                    format!("time exceeded for ttl seq {:?}", quoted.echo())
                }
                Message::DestUnreachable { code, quoted, .. } => {
                    format!("unreachable {code} for {}", quoted.dst)
                }
                Message::Udp { .. } => "udp".into(),
            };
            (r.src, what)
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            (
                Ipv4Addr::new(172, 20, 1, 1),
                "time exceeded for ttl seq Some((23, 1))".to_string()
            ),
            (Ipv4Addr::new(192, 168, 1, 1), "echo reply 0x18/1".into()),
            (
                Ipv4Addr::new(192, 168, 1, 1),
                "time exceeded for ttl seq Some((23, 2))".into()
            ),
            (
                Ipv4Addr::new(192, 168, 1, 1),
                "unreachable 1 for 192.168.1.99".into()
            ),
            (VM_ORDER, "echo reply 0x17/3".into()),
        ]
    );
    common::tshark_agrees(&mut lab.sim, "vpn-traceroute.pcapng");
}
