//! The BGP speaker on arbitrary bytes from a neighbour: a router with one
//! (passive) neighbour and that neighbour's TCP stack, back to back in
//! memory; the fuzzer's bytes are what the neighbour writes on the session,
//! in chunks, with time passing (hold and keepalive timers). Half the
//! inputs start with a valid OPEN and KEEPALIVE, so UPDATE parsing and the
//! RIBs are reached. Never a panic: a NOTIFICATION or a counted drop.
#![no_main]
use d11_core::l3::tcp::DEFAULT_BUFFER;
use d11_core::{Ctx, Element, Input, Instant, L3Port, Outbox, PortId, L3};
use d11_elements::bgp::{BgpSettings, NeighborSettings, Policy};
use d11_elements::router::{Router, RouterConfig};
use d11_wire::bgp::{Capability, Message, OpenRepr};
use d11_wire::MacAddr;
use libfuzzer_sys::fuzz_target;
use std::net::{Ipv4Addr, SocketAddrV4};

const ROUTER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const PEER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

fn router() -> Router {
    let cfg = RouterConfig {
        ports: vec![L3Port { name: "p".into(), mac: ROUTER_MAC, address: "10.9.0.1/24".parse().unwrap(), mtu: 1500 }],
        routes: vec![],
    };
    let bgp = BgpSettings {
        local_as: 64500,
        router_id: None,
        originate: vec!["10.9.0.0/24".parse().unwrap()],
        neighbors: vec![NeighborSettings {
            address: Ipv4Addr::new(10, 9, 0, 2),
            remote_as: 64999,
            hold_time: 9,
            connect_retry: 5,
            import: Some(Policy::All),
            export: Some(Policy::All),
            local_pref: None,
            next_hop_self: false,
            passive: true,
        }],
    };
    Router::with_bgp(cfg, &bgp).expect("valid settings")
}

/// Moves frames between the router and the peer until both are quiet.
fn pump(r: &mut Router, peer: &mut L3, cx: &mut Ctx, pcx: &mut Ctx) {
    let mut out = Outbox::new();
    let mut back = Outbox::new();
    r.on_timer(cx, &mut out);
    for _ in 0..64 {
        let frames: Vec<Vec<u8>> = out.frames().map(|(_, f)| f.to_vec()).collect();
        out.clear();
        for f in &frames {
            // The peer is an endpoint: anything but its own traffic is dropped.
            let _: Input = peer.input(pcx, PortId(0), f, &mut back);
        }
        peer.poll(pcx, &mut back);
        let replies: Vec<Vec<u8>> = back.frames().map(|(_, f)| f.to_vec()).collect();
        back.clear();
        if frames.is_empty() && replies.is_empty() {
            break;
        }
        for f in &replies {
            r.on_frame(cx, PortId(0), f, &mut out);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else { return };
    let mut r = router();
    let mut peer = L3::with_ports(vec![L3Port { name: "eth0".into(), mac: PEER_MAC, address: "10.9.0.2/24".parse().unwrap(), mtu: 1500 }]);
    let mut now = Instant::from_millis(1);
    let mut cx = Ctx::new(now, 1);
    let mut pcx = Ctx::new(now, 2);
    pump(&mut r, &mut peer, &mut cx, &mut pcx);
    let h = peer
        .tcp_stack(&mut pcx)
        .connect(SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 2), 40000), SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 1), 179), DEFAULT_BUFFER)
        .expect("connects");
    pump(&mut r, &mut peer, &mut cx, &mut pcx);
    let mut stream = Vec::new();
    if mode & 1 != 0 {
        let open = OpenRepr::new(64999, 9, Ipv4Addr::new(10, 9, 0, 2), vec![Capability::FourOctetAs(64999), Capability::RouteRefresh]);
        Message::Open(open).emit(&mut stream, true);
        Message::Keepalive.emit(&mut stream, true);
    }
    stream.extend_from_slice(data);
    let chunk = usize::from(mode >> 1).max(1) * 16;
    for part in stream.chunks(chunk) {
        now = now + std::time::Duration::from_millis(300);
        cx.at(now);
        pcx.at(now);
        peer.tcp_stack(&mut pcx).socket(h).send_slice(part).ok();
        pump(&mut r, &mut peer, &mut cx, &mut pcx);
        // Read what the router answered, as a peer would.
        let s = peer.tcp_stack(&mut pcx).socket(h);
        while s.can_recv() {
            let _ = s.recv(|b| (b.len(), ()));
        }
    }
    // Long enough for the hold timer.
    now = now + std::time::Duration::from_secs(12);
    cx.at(now);
    pcx.at(now);
    pump(&mut r, &mut peer, &mut cx, &mut pcx);
    let _ = r.report();
});
