//! Chapter 3's control plane on arbitrary input: the mme's on_frame (SCTP
//! to its S1AP listener, GTPv2-C to its S11 endpoint, anything else), and
//! the phone's baseband reading NAS from the network (plain and protected,
//! after a real challenge so the security checks are reached): never a
//! panic.
#![no_main]
use d11_apps::baseband::{Baseband, UsimConfig};
use d11_core::{Ctx, Element, Instant, Outbox, PortId, L3Port, L3};
use d11_elements::mme::{Mme, MmeSettings, Plmn};
use d11_wire::ethernet::{self, EtherType};
use d11_wire::ipv4::{protocol, Ipv4Repr};
use d11_wire::MacAddr;
use libfuzzer_sys::fuzz_target;

const S1MME_MAC: MacAddr = MacAddr([2, 0, 0, 0, 3, 2]);
const S11_MAC: MacAddr = MacAddr([2, 0, 0, 0, 4, 1]);

fn mme() -> Mme {
    let l3 = L3::with_ports(vec![
        L3Port { name: "s1mme".into(), mac: S1MME_MAC, address: "172.16.3.2/24".parse().unwrap(), mtu: 1500 },
        L3Port { name: "s6a".into(), mac: MacAddr([2, 0, 0, 0, 5, 1]), address: "172.16.5.1/24".parse().unwrap(), mtu: 1500 },
        L3Port { name: "s11".into(), mac: S11_MAC, address: "172.16.4.1/24".parse().unwrap(), mtu: 1500 },
    ]);
    let settings = MmeSettings {
        plmn: Plmn::parse("00101").unwrap(),
        group: 0x8001,
        code: 1,
        hss: Some("172.16.5.2".parse().unwrap()),
        sgw: Some("172.16.4.2".parse().unwrap()),
        origin_host: "mme.epc.lab".into(),
        realm: "epc.lab".into(),
    };
    Mme::new(l3, settings)
}

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

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut m = mme();
    let mut cx = Ctx::new(Instant::ZERO, 7);
    let mut out = Outbox::new();
    m.on_timer(&mut cx, &mut out);
    let (port, f) = match mode % 4 {
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
