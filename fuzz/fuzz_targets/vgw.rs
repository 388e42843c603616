//! The virtual gateway's on_frame and on_timer on arbitrary frames (DNAT,
//! the VPC's router, the VTEP): never a panic. Part of the time the bytes
//! arrive as VXLAN from host A (valid outer checksum), or as an external
//! frame whose IPv4 checksum is fixed, so the fuzzer reaches the NAT, or as
//! ESP from the VPN's peer (the SA lookup, the window, the ICV, outer
//! reassembly when the fragment bits say so).
#![no_main]
use d11_core::nat::{DnatRule, NatConfig, Proto, Timeouts};
use d11_core::{Element, Instant, Outbox, PortId};
use d11_elements::vgw::{ExtPort, Station, Tenant, Vgw, VgwConfig};
use d11_elements::vswitch::{emit_vxlan, UnderlayPort};
use d11_wire::arp::{ArpOp, ArpRepr};
use d11_wire::ethernet::{self, EtherType};
use d11_wire::vxlan::Vni;
use d11_wire::MacAddr;
use libfuzzer_sys::fuzz_target;
use std::net::{Ipv4Addr, SocketAddrV4};

const UNDERLAY_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const HOSTA_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x11]);

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut g = Vgw::new(VgwConfig {
        ext: ExtPort { name: "ext".into(), mac: MacAddr([2, 0, 0, 0, 0xe, 2]), address: "203.0.113.2/24".parse().unwrap(), mtu: 1500, vips: vec![ip("203.0.113.24")], gateway: ip("203.0.113.1") },
        underlay: UnderlayPort { name: "underlay".into(), mac: UNDERLAY_MAC, address: "10.0.0.1/24".parse().unwrap(), mtu: 1500 },
        tenant: Tenant {
            vni: Vni::new(1001).unwrap(),
            mac: MacAddr([2, 0, 0, 0, 0xa, 1]),
            gateways: vec!["192.168.1.1/24".parse().unwrap(), "192.168.2.1/24".parse().unwrap()],
            stations: vec![
                Station { ip: ip("192.168.1.10"), mac: MacAddr([2, 0, 0, 0, 1, 0x10]), vtep: ip("10.0.0.11") },
                Station { ip: ip("192.168.2.20"), mac: MacAddr([2, 0, 0, 0, 1, 0x20]), vtep: ip("10.0.0.12") },
            ],
        },
        nat: NatConfig {
            snat: None,
            dnat: vec![
                DnatRule { proto: Proto::Tcp, public: SocketAddrV4::new(ip("203.0.113.24"), 443), private: SocketAddrV4::new(ip("192.168.1.10"), 443) },
                DnatRule { proto: Proto::Udp, public: SocketAddrV4::new(ip("203.0.113.24"), 443), private: SocketAddrV4::new(ip("192.168.1.10"), 443) },
            ],
            max_entries: 16,
            timeouts: Timeouts::default(),
        },
        vpn: Some(d11_elements::vpn::VpnConfig {
            peer: ip("198.19.24.2"),
            local: "192.168.0.0/16".parse().unwrap(),
            remote: "172.20.0.0/16".parse().unwrap(),
            spi_out: d11_wire::esp::Spi(0x1001),
            spi_in: d11_wire::esp::Spi(0x2001),
            key_out: d11_elements::vpn::derived_key(0x1001),
            key_in: d11_elements::vpn::derived_key(0x2001),
            // The VPN replaced by plain routing (`config.vpn.clear`) too.
            clear: mode & 0x0f == 0x0e,
        }),
    });
    let mut out = Outbox::new();
    if mode & 0x10 != 0 {
        // Host A answers the gateway's ARP first, so translated packets get sent.
        let mut f = vec![];
        ethernet::emit_header(&mut f, UNDERLAY_MAC, HOSTA_MAC, EtherType::Arp);
        ArpRepr { op: ArpOp::Reply, sender_mac: HOSTA_MAC, sender_ip: ip("10.0.0.11"), target_mac: UNDERLAY_MAC, target_ip: ip("10.0.0.1") }.emit(&mut f);
        g.on_frame(&mut (Instant::from_millis(1)).into(), PortId(1), &f, &mut out);
    }
    let (port, frame) = if mode & 0x80 != 0 {
        let mut f = vec![];
        ethernet::emit_header(&mut f, UNDERLAY_MAC, HOSTA_MAC, EtherType::Ipv4);
        let v = if mode & 0x20 != 0 { 1001 } else { 1002 };
        emit_vxlan(&mut f, ip("10.0.0.11"), ip("10.0.0.1"), 1, Vni::new(v).unwrap(), rest);
        (PortId(1), f)
    } else if mode & 0x0f == 0x0f {
        // ESP from the peer: an outer header around the fuzzer's bytes,
        // its fragment field from the second byte.
        let mut f = vec![];
        ethernet::emit_header(&mut f, MacAddr([2, 0, 0, 0, 0xe, 2]), MacAddr([2, 0, 0, 0, 0xb, 1]), EtherType::Ipv4);
        let body = rest.get(2..).unwrap_or_default();
        d11_wire::ipv4::Ipv4Repr { src: ip("198.19.24.2"), dst: ip("203.0.113.2"), protocol: 50, ttl: 60, ident: 7, dont_frag: false, payload_len: body.len() }.emit(&mut f);
        if let [a, b, ..] = rest {
            f[14 + 6] = a & 0x3f;
            f[14 + 7] = *b;
        }
        f.extend_from_slice(body);
        if let Ok(mut p) = d11_wire::ipv4::Ipv4Packet::new_checked(&mut f[14..]) {
            p.fill_checksum();
        }
        (PortId(0), f)
    } else {
        let mut f = rest.to_vec();
        if mode & 0x40 != 0 && f.len() >= 34 {
            if let Ok(mut p) = d11_wire::ipv4::Ipv4Packet::new_checked(&mut f[14..]) {
                p.fill_checksum();
            }
        }
        (PortId(u16::from(mode % 3)), f)
    };
    g.on_frame(&mut (Instant::from_millis(2)).into(), port, &frame, &mut out);
    g.on_frame(&mut (Instant::from_millis(3)).into(), port, &frame, &mut out);
    g.on_timer(&mut (Instant::from_millis(10_000_000)).into(), &mut out);
    let _ = g.poll_at();
});
