//! Chapter 3's control plane on arbitrary input: the mme's on_frame (SCTP
//! to its S1AP listener, GTPv2-C to its S11 endpoint, anything else), the
//! sgw's GTPv2-C on S11 and S5-C and the pgw's on S5-C (Create Session,
//! Modify Bearer, Delete Session: as the input, or the input laid over a
//! real Create Session Request), and
//! the phone's baseband reading NAS from the network (plain and protected,
//! after a real challenge so the security checks are reached): never a
//! panic.
#![no_main]
use d11_apps::baseband::{Baseband, UsimConfig};
use d11_core::{Ctx, Element, Instant, Outbox, PortId, L3Port};
use d11_core::nat::{NatConfig, Timeouts};
use d11_elements::pgw::{Pgw, PgwConfig};
use d11_elements::router::RouterConfig;
use d11_elements::sgw::{Sgw, SgwConfig};
use d11_wire::ethernet::{self, EtherType};
use d11_wire::ipv4::{protocol, Ipv4Repr};
use d11_wire::MacAddr;
use libfuzzer_sys::fuzz_target;

#[path = "common/mme.rs"]
mod common_mme;
use common_mme::{mme, S11_MAC, S1MME_MAC};

/// `payload` in IPv4 (protocol `proto`) from `src` to `dst`, with a UDP
/// header (checksum 0) first when `udp_port` is set.
fn frame(mac: MacAddr, src: &str, dst: &str, proto: u8, udp_port: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![];
    ethernet::emit_header(&mut f, mac, MacAddr([2, 0, 0, 0, 9, 9]), EtherType::Ipv4);
    let l4 = if udp_port.is_some() { 8 } else { 0 };
    Ipv4Repr { src: src.parse().unwrap(), dst: dst.parse().unwrap(), protocol: proto, ttl: 64, ident: 1, dont_frag: false, payload_len: l4 + payload.len() }.emit(&mut f);
    if let Some(p) = udp_port {
        f.extend_from_slice(&p.to_be_bytes());
        f.extend_from_slice(&p.to_be_bytes());
        f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
    }
    f.extend_from_slice(payload);
    f
}

fn port(name: &str, mac: MacAddr, address: &str) -> L3Port {
    L3Port { name: name.into(), mac, address: address.parse().unwrap(), mtu: 1500 }
}

fn sgw() -> Sgw {
    Sgw::new(SgwConfig {
        router: RouterConfig {
            ports: vec![
                port("s1u", MacAddr([2, 0, 0, 0, 6, 1]), "172.16.1.2/24"),
                port("s5", MacAddr([2, 0, 0, 0, 6, 2]), "172.16.2.1/24"),
                port("s11", MacAddr([2, 0, 0, 0, 6, 3]), "172.16.4.2/24"),
            ],
            routes: vec![],
        },
        enb: "172.16.1.1".parse().unwrap(),
        pgw: "172.16.2.2".parse().unwrap(),
        bearers: vec![],
    })
    .unwrap()
}

fn pgw() -> Pgw {
    Pgw::new(PgwConfig {
        router: RouterConfig {
            ports: vec![
                port("s5", MacAddr([2, 0, 0, 0, 7, 1]), "172.16.2.2/24"),
                port("sgi", MacAddr([2, 0, 0, 0, 7, 2]), "198.51.100.1/30"),
            ],
            routes: vec![],
        },
        sgw: "172.16.2.1".parse().unwrap(),
        gateway: "10.45.0.1".parse().unwrap(),
        nat_pool: "198.51.100.128/25".parse().unwrap(),
        ue_mtu: 1400,
        nat: NatConfig { snat: None, dnat: vec![], max_entries: 16, timeouts: Timeouts::default() },
        bearers: vec![],
    })
    .unwrap()
    .with_ue_pool("10.45.0.0/16".parse().unwrap())
}

/// crates/wire/src/gtpv2c.rs's golden Create Session Request (pycrate).
const CREATE_SESSION_REQUEST: &str = "4820008e00000000000001000100080000010100000000f15300030000f1105200010006570009008a00000001ac100401570009018700000000ac1005024700090008696e7465726e6574800001000063000100014f00050001000000007f0001000048000800000186a0000186a05d001f0049000100055000160064090000000000000000000000000000000000000000";

/// One element, its timer, the frame, its timers 3 s later, its report.
fn feed(e: &mut dyn Element, port: PortId, f: &[u8]) {
    let mut cx = Ctx::new(Instant::ZERO, 7);
    let mut out = Outbox::new();
    e.on_timer(&mut cx, &mut out);
    e.on_frame(&mut cx, port, f, &mut out);
    e.on_frame(&mut cx, port, f, &mut out);
    cx.now = Instant::from_millis(3_000);
    e.on_timer(&mut cx, &mut out);
    let _ = e.report();
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    // The gateways' GTPv2-C: the input, or the input laid over a real
    // Create Session Request so the IE checks are reached.
    let gtpc = || {
        if mode & 0x80 == 0 {
            return rest.to_vec();
        }
        let mut m = d11_wire::hex(CREATE_SESSION_REQUEST);
        for (i, b) in rest.iter().enumerate() {
            let j = 12 + (i * 7) % (m.len() - 12);
            m[j] ^= b;
        }
        m
    };
    match mode & 0x7f {
        4 => {
            let f = frame(MacAddr([2, 0, 0, 0, 6, 3]), "172.16.4.1", "172.16.4.2", protocol::UDP, Some(2123), &gtpc());
            return feed(&mut sgw(), PortId(2), &f);
        }
        5 => {
            let f = frame(MacAddr([2, 0, 0, 0, 6, 2]), "172.16.2.2", "172.16.2.1", protocol::UDP, Some(2123), &gtpc());
            return feed(&mut sgw(), PortId(1), &f);
        }
        6 => {
            let f = frame(MacAddr([2, 0, 0, 0, 7, 1]), "172.16.2.1", "172.16.2.2", protocol::UDP, Some(2123), &gtpc());
            return feed(&mut pgw(), PortId(0), &f);
        }
        _ => {}
    }
    let mut m = mme();
    let mut cx = Ctx::new(Instant::ZERO, 7);
    let mut out = Outbox::new();
    m.on_timer(&mut cx, &mut out);
    let (port, f) = match mode & 0x7f {
        0 => (PortId(0), frame(S1MME_MAC, "172.16.3.1", "172.16.3.2", protocol::SCTP, None, rest)),
        1 => (PortId(2), frame(S11_MAC, "172.16.4.2", "172.16.4.1", protocol::UDP, Some(2123), rest)),
        2 => (PortId(0), rest.to_vec()),
        _ => {
            // The phone: a real challenge first, then the input as the
            // network's next NAS message.
            let usim = UsimConfig {
                imsi: "001010000000001".into(),
                k: "465b5ce8b199b49faa5f0a2ee238a6bc".into(),
                opc: "cd63cb71954a9f4e48a5994e37a02baf".into(),
            };
            let mut bb = Baseband::new(&usim, [0x00, 0xf1, 0x10]).unwrap();
            let _ = bb.attach_request();
            let _ = bb.on_nas(rest);
            let _ = bb.on_nas(rest);
            return;
        }
    };
    m.on_frame(&mut cx, port, &f, &mut out);
    cx.now = Instant::from_millis(3_000);
    m.on_timer(&mut cx, &mut out);
    let _ = m.report();
});
