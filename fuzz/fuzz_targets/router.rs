//! The router's on_frame and on_timer on arbitrary frames: never a panic,
//! every frame either forwarded, answered or a counted drop.
#![no_main]
use d11_core::L3Port;
use d11_core::{Element, Instant, Outbox, PortId};
use d11_elements::router::{Router, RouterConfig, StaticRoute};
use d11_wire::MacAddr;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&port, frame)) = data.split_first() else { return };
    // Most random headers fail the IPv4 checksum; fix it half the time so
    // the fuzzer reaches forwarding, ICMP and fragmentation.
    let mut frame = frame.to_vec();
    if port & 0x80 != 0 && frame.len() >= 34 {
        if let Ok(mut ip) = d11_wire::ipv4::Ipv4Packet::new_checked(&mut frame[14..]) {
            ip.fill_checksum();
        }
    }
    let frame = &frame[..];
    let mut r = Router::new(RouterConfig {
        ports: vec![
            L3Port { name: "radio".into(), mac: MacAddr([2, 0, 0, 0, 1, 0]), address: "10.45.0.1/16".parse().unwrap(), mtu: 1400 },
            L3Port { name: "up".into(), mac: MacAddr([2, 0, 0, 0, 1, 1]), address: "192.0.2.1/30".parse().unwrap(), mtu: 576 },
        ],
        routes: vec![StaticRoute { to: "0.0.0.0/0".parse().unwrap(), via: "192.0.2.2".parse().unwrap() }],
    });
    let mut out = Outbox::new();
    r.on_frame(&mut (Instant::from_millis(1)).into(), PortId(u16::from(port % 3)), frame, &mut out);
    assert!(out.frames().count() > 0 || !out.drops().is_empty() || frame.len() >= 14);
    r.on_timer(&mut (Instant::from_millis(10_000)).into(), &mut out);
});
