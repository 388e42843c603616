//! The vSwitch's on_frame and on_timer on arbitrary frames: never a panic.
//! Part of the time the bytes arrive as a VXLAN packet to our VTEP (with a
//! valid outer checksum), or as a VM frame whose IPv4 checksum is fixed, so
//! the fuzzer gets past the checksums to learning, flooding and encapsulation.
#![no_main]
use d11_core::{Element, Instant, Outbox, PortId};
use std::time::Duration;
use d11_elements::vswitch::{emit_vxlan, StaticStation, UnderlayPort, VSwitch, VSwitchConfig, VmPort};
use d11_wire::ethernet::{self, EtherType};
use d11_wire::vxlan::Vni;
use d11_wire::MacAddr;
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

const ME: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x11]);

fn vni(v: u32) -> Vni {
    Vni::new(v).unwrap()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut s = VSwitch::new(VSwitchConfig {
        underlay: UnderlayPort { name: "underlay".into(), mac: ME, address: "10.0.0.11/24".parse().unwrap(), mtu: 1500 },
        vms: vec![
            VmPort { name: "lb".into(), vni: vni(1001), mtu: 1450 },
            VmPort { name: "lb2".into(), vni: vni(1001), mtu: 1450 },
            VmPort { name: "other".into(), vni: vni(1002), mtu: 1450 },
        ],
        flood: BTreeMap::from([(vni(1001), vec!["10.0.0.12".parse().unwrap(), "10.0.0.1".parse().unwrap()]), (vni(1002), vec!["10.0.0.13".parse().unwrap()])]),
        stations: vec![
            StaticStation { vni: vni(1001), mac: MacAddr([2, 0, 0, 0, 1, 0x20]), ip: Some("192.168.1.20".parse().unwrap()), vtep: "10.0.0.12".parse().unwrap() },
            StaticStation { vni: vni(1002), mac: MacAddr([2, 0, 0, 0, 2, 0x10]), ip: Some("192.168.1.10".parse().unwrap()), vtep: "10.0.0.11".parse().unwrap() },
        ],
        aging: Duration::from_secs(300),
        max_macs: 4,
    });
    let (port, frame) = if mode & 0x80 != 0 {
        // VXLAN from host B (or the gateway) with VNI 1001, 1002 or 1003.
        let mut f = vec![];
        ethernet::emit_header(&mut f, ME, MacAddr([2, 0, 0, 0, 0, 0x12]), EtherType::Ipv4);
        let src = if mode & 0x20 != 0 { "10.0.0.12" } else { "10.0.0.1" };
        emit_vxlan(&mut f, src.parse().unwrap(), "10.0.0.11".parse().unwrap(), 1, vni(1001 + u32::from(mode % 3)), rest);
        (PortId(0), f)
    } else {
        let mut f = rest.to_vec();
        if mode & 0x40 != 0 && f.len() >= 34 {
            if let Ok(mut ip) = d11_wire::ipv4::Ipv4Packet::new_checked(&mut f[14..]) {
                ip.fill_checksum();
            }
        }
        (PortId(u16::from(mode % 5)), f)
    };
    let mut out = Outbox::new();
    s.on_frame(&mut (Instant::from_millis(1)).into(), port, &frame, &mut out);
    // The same frame again once what it taught has aged out.
    s.on_frame(&mut (Instant::from_millis(400_000)).into(), port, &frame, &mut out);
    s.on_timer(&mut (Instant::from_millis(1_000_000)).into(), &mut out);
    let _ = s.poll_at();
});
