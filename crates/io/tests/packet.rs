//! AF_PACKET on a veth end facing a kernel peer: partial checksums from tx
//! offload completed, oversized frames reported at their true length, VLAN
//! tags put back, the port's MAC read in its own namespace.

mod common;

use common::{require_root, veth, Netns};
use d11_io::{with_netns, PacketSocket, RecvMeta};
use d11_wire::checksum;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const E0_MAC: &str = "02:00:00:00:00:02";

/// k (kernel, 192.0.2.1, tx checksum offload on, no TSO/GSO) ─ k0══e0 ─ e
/// (an AF_PACKET socket on e0). k knows e0's MAC for 192.0.2.2.
fn kernel_peer(tag: &str) -> (Netns, Netns, PacketSocket) {
    let k = Netns::new(&format!("{tag}k"));
    let e = Netns::new(&format!("{tag}e"));
    veth(&k, "k0", &e, "e0");
    e.sh(&["ip", "link", "set", "e0", "address", E0_MAC]);
    k.sh(&[
        "ethtool", "-K", "k0", "tx", "on", "tso", "off", "gso", "off",
    ]);
    k.sh(&["ip", "addr", "add", "192.0.2.1/24", "dev", "k0"]);
    k.sh(&[
        "ip",
        "neigh",
        "add",
        "192.0.2.2",
        "lladdr",
        E0_MAC,
        "dev",
        "k0",
        "nud",
        "permanent",
    ]);
    let s = with_netns(&e.name, || PacketSocket::open("e0"))
        .unwrap()
        .unwrap();
    (k, e, s)
}

/// Receives frames for up to 3 s until `want` accepts one.
fn recv_until(
    s: &PacketSocket,
    buf: &mut [u8],
    mut want: impl FnMut(&[u8], RecvMeta) -> bool,
) -> RecvMeta {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        match s.recv_frame(buf).unwrap() {
            Some(m) if want(&buf[..m.len.min(buf.len())], m) => return m,
            Some(_) => {}
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    panic!("the expected frame never came");
}

/// (protocol, destination port, checksum field) of an IPv4 TCP/UDP frame.
fn l4(f: &[u8]) -> Option<(u8, u16, u16)> {
    if f.len() < 34 + 8 || f[12..14] != [0x08, 0x00] {
        return None;
    }
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let l4 = f.get(14 + ihl..)?;
    let field = match f[23] {
        6 => l4.get(16..18)?,
        17 => l4.get(6..8)?,
        _ => return None,
    };
    Some((
        f[23],
        u16::from_be_bytes([l4[2], l4[3]]),
        u16::from_be_bytes([field[0], field[1]]),
    ))
}

/// The TCP/UDP checksum verifies: pseudo-header + segment sum to all ones.
fn l4_checksum_ok(f: &[u8]) -> bool {
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
    let seg = &f[14 + ihl..14 + total];
    let src = Ipv4Addr::new(f[26], f[27], f[28], f[29]);
    let dst = Ipv4Addr::new(f[30], f[31], f[32], f[33]);
    let pseudo = checksum::pseudo_header_sum(src, dst, f[23], seg.len() as u16);
    checksum::fold(pseudo + checksum::sum(seg)) == 0xffff
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn partial_checksums_from_a_kernel_peer_with_tx_offload_are_completed() {
    require_root();
    let (k, _e, s) = kernel_peer("cs");
    let mut buf = vec![0u8; 2048];
    let tcp = "import socket\ns = socket.socket()\ns.settimeout(0.3)\ntry: s.connect(('192.0.2.2', 9))\nexcept OSError: pass";
    k.sh(&["/usr/bin/python3", "-c", tcp]);
    let m = recv_until(&s, &mut buf, |f, _| matches!(l4(f), Some((6, 9, _))));
    let (_, _, sum) = l4(&buf[..m.len]).unwrap();
    println!("kernel TCP SYN: {m:?}, checksum now {sum:#06x}");
    assert!(
        m.checksum_completed,
        "the kernel handed it over as CHECKSUM_PARTIAL"
    );
    assert!(l4_checksum_ok(&buf[..m.len]));

    let udp = "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x' * 100, ('192.0.2.2', 4789))";
    k.sh(&["/usr/bin/python3", "-c", udp]);
    let m = recv_until(&s, &mut buf, |f, _| matches!(l4(f), Some((17, 4789, _))));
    let (_, _, sum) = l4(&buf[..m.len]).unwrap();
    println!("kernel UDP datagram: {m:?}, checksum now {sum:#06x}");
    assert!(m.checksum_completed);
    assert!(l4_checksum_ok(&buf[..m.len]));

    // Control: with offload off the kernel sums itself and nothing is flagged.
    k.sh(&["ethtool", "-K", "k0", "tx", "off"]);
    k.sh(&["/usr/bin/python3", "-c", udp]);
    let m = recv_until(&s, &mut buf, |f, _| matches!(l4(f), Some((17, 4789, _))));
    println!("same with tx offload off: {m:?}");
    assert!(!m.checksum_completed);
    assert!(l4_checksum_ok(&buf[..m.len]));
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn the_port_mac_is_the_one_of_its_namespace_not_the_hosts() {
    require_root();
    // e0 in its namespace; the host may have an interface of that name too
    // (its eth0 is what /sys/class/net would show after a bare setns).
    let (_k, _e, s) = kernel_peer("mc");
    let mac = s.mac().unwrap();
    let text: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(text.join(":"), E0_MAC);
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn an_oversized_frame_is_reported_at_its_true_length() {
    require_root();
    let (k, _e, s) = kernel_peer("tr");
    k.run(&["ping", "-c", "1", "-W", "0.2", "-s", "1000", "192.0.2.2"]);
    let mut small = [0u8; 64];
    let m = recv_until(&s, &mut small, |f, m| m.len > 64 && f[23] == 1);
    println!("1000-byte ping into a 64-byte buffer: {m:?}");
    assert_eq!(m.len, 14 + 20 + 8 + 1000);
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn a_vlan_tag_the_kernel_stripped_is_put_back() {
    require_root();
    let (k, _e, s) = kernel_peer("vl");
    let tx = with_netns(&k.name, || PacketSocket::open("k0"))
        .unwrap()
        .unwrap();
    // dst e0, src, 802.1Q PCP 1 VID 100, local experimental EtherType, payload
    let mut frame = vec![
        0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x81, 0x00, 0x20, 0x64, 0x88, 0xb5,
    ];
    frame.extend((0..46).map(|i| i as u8));
    tx.send(&frame).unwrap();
    let mut buf = vec![0u8; 2048];
    let m = recv_until(&s, &mut buf, |f, _| {
        f.get(16..18) == Some(&[0x88, 0xb5][..])
    });
    println!("tagged frame: {m:?} {:02x?}", &buf[12..18]);
    assert_eq!(buf[..m.len], frame[..]);
}
