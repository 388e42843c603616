//! The layer on its own: ARP, ping, the UDP table, TCP through smoltcp and
//! SCTP between two layers wired back to back, with and without loss.

use super::*;
use crate::Rng;
use d11_wire::etherparse::{self, NetSlice, SlicedPacket, TransportSlice};
use d11_wire::hex;

const A_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const B_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
const P: PortId = PortId(0);

// /usr/bin/python3 -c 'from scapy.all import *; print(bytes(
//   Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02")/
//   IP(src="192.0.2.2", dst="192.0.2.1", id=9, ttl=64)/
//   TCP(sport=40000, dport=179, flags="S", seq=1000, window=8192)).hex())'
const SYN_TO_179: &str = "020000000001020000000002080045000028000900004006f6c3c0000202c00002019c4000b3000003e800000000500220006b030000";
// The same with IP(id=10)/UDP(sport=5000, dport=2123)/Raw(b"gtpv2").
const UDP_TO_2123: &str = "020000000001020000000002080045000021000a00004011f6bec0000202c00002011388084b000d56126774707632";

fn a(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn layer(mac: MacAddr, addr: &str) -> L3 {
    L3::with_ports(vec![L3Port {
        name: "eth0".into(),
        mac,
        address: addr.parse().unwrap(),
        mtu: 1500,
    }])
}

/// 192.0.2.1 (A), knowing B's MAC.
fn warm_a() -> L3 {
    let mut l = layer(A_MAC, "192.0.2.1/24");
    l.learn(Instant::ZERO, a("192.0.2.2"), B_MAC);
    l
}

fn frames(o: &Outbox) -> Vec<Vec<u8>> {
    o.frames().map(|(_, f)| f.to_vec()).collect()
}

#[test]
fn arp_is_answered_for_the_address_for_proxied_ones_and_with_another_mac_when_asked() {
    let mut l = layer(A_MAC, "192.0.2.1/24");
    l.answer_arp_for(P, a("192.0.2.24"));
    let mut cx = Ctx::new(Instant::ZERO, 1);
    let mut o = Outbox::new();
    for (target, mac) in [("192.0.2.1", A_MAC), ("192.0.2.24", A_MAC)] {
        let mut req = vec![];
        ArpRepr::request(B_MAC, a("192.0.2.2"), a(target)).emit_frame(&mut req);
        assert!(matches!(l.input(&mut cx, P, &req, &mut o), Input::Done));
        let f = frames(&o);
        let reply = ArpRepr::parse(&f[0][14..]).unwrap();
        assert_eq!(
            (reply.op, reply.sender_ip, reply.sender_mac),
            (ArpOp::Reply, a(target), mac)
        );
        o.clear();
    }
    l.answer_arp_with(P, MacAddr([2, 0, 0, 0, 4, 0]));
    let mut req = vec![];
    ArpRepr::request(B_MAC, a("192.0.2.2"), a("192.0.2.1")).emit_frame(&mut req);
    l.input(&mut cx, P, &req, &mut o);
    let reply = ArpRepr::parse(&frames(&o)[0][14..]).unwrap();
    assert_eq!(reply.sender_mac, MacAddr([2, 0, 0, 0, 4, 0]));
    assert_eq!(
        l.resolved(Instant::ZERO, a("192.0.2.2")),
        Some(B_MAC),
        "the asker is learned"
    );
}

#[test]
fn a_bound_socket_gets_the_scapy_datagram_and_an_unbound_port_is_unreachable() {
    let mut cx = Ctx::new(Instant::ZERO, 1);
    let mut o = Outbox::new();
    let mut l = warm_a();
    let h = l.udp_bind(None, 2123).unwrap();
    assert!(matches!(
        l.input(&mut cx, P, &hex(UDP_TO_2123), &mut o),
        Input::Done
    ));
    assert!(o.is_empty());
    let d = l.udp_recv(h).unwrap();
    assert_eq!(
        (d.from, d.to),
        (
            "192.0.2.2:5000".parse().unwrap(),
            "192.0.2.1:2123".parse().unwrap()
        )
    );
    assert_eq!(d.payload, b"gtpv2");
    assert_eq!(l.udp_recv(h), None);

    let mut l = warm_a();
    l.input(&mut cx, P, &hex(UDP_TO_2123), &mut o);
    assert_eq!(o.drops(), &[(P, DropReason::UnsupportedProtocol)]);
    let f = frames(&o);
    let s = SlicedPacket::from_ethernet(&f[0]).unwrap();
    let Some(TransportSlice::Icmpv4(i)) = s.transport else {
        panic!("not ICMP")
    };
    assert!(matches!(
        i.icmp_type(),
        etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port
        )
    ));

    let mut l = warm_a();
    l.claim_udp(2123);
    o.clear();
    let f = hex(UDP_TO_2123);
    match l.input(&mut cx, P, &f, &mut o) {
        Input::Tunnel { udp, ip, .. } => {
            assert_eq!(
                (ip.src(), udp.src_port(), udp.payload()),
                (a("192.0.2.2"), 5000, &b"gtpv2"[..])
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_wrong_udp_checksum_is_a_counted_drop() {
    let mut f = hex(UDP_TO_2123);
    let last = f.len() - 1;
    f[last] ^= 1;
    let mut l = warm_a();
    l.udp_bind(None, 2123).unwrap();
    let mut o = Outbox::new();
    l.input(&mut Ctx::new(Instant::ZERO, 1), P, &f, &mut o);
    assert_eq!(o.drops(), &[(P, DropReason::BadChecksum)]);
}

#[test]
fn udp_we_send_carries_a_checksum_etherparse_accepts() {
    let mut l = warm_a();
    let mut o = Outbox::new();
    let mut cx = Ctx::new(Instant::ZERO, 1);
    l.udp_send(
        &mut cx,
        "192.0.2.1:2123".parse().unwrap(),
        "192.0.2.2:5000".parse().unwrap(),
        b"answer",
        &mut o,
    );
    let f = frames(&o);
    let s = SlicedPacket::from_ethernet(&f[0]).unwrap();
    let Some(NetSlice::Ipv4(ip)) = &s.net else {
        panic!()
    };
    let Some(TransportSlice::Udp(u)) = &s.transport else {
        panic!()
    };
    let want = u
        .to_header()
        .calc_checksum_ipv4(&ip.header().to_header(), u.payload())
        .unwrap();
    assert_eq!(u.checksum(), want);
    assert_eq!(u.payload(), b"answer");
}

#[test]
fn a_syn_to_a_closed_port_is_reset_by_the_tcp_stack() {
    let mut l = warm_a();
    let mut o = Outbox::new();
    l.input(&mut Ctx::new(Instant::ZERO, 1), P, &hex(SYN_TO_179), &mut o);
    let f = frames(&o);
    assert_eq!(f.len(), 1, "{:?}", o.drops());
    let s = SlicedPacket::from_ethernet(&f[0]).unwrap();
    let Some(TransportSlice::Tcp(t)) = s.transport else {
        panic!("not TCP")
    };
    assert!(t.rst() && t.ack());
    assert_eq!(
        (
            t.source_port(),
            t.destination_port(),
            t.acknowledgment_number()
        ),
        (179, 40000, 1001)
    );
}

#[test]
fn no_icmp_error_is_sent_about_a_packet_we_sent_ourselves() {
    let mut l = layer(A_MAC, "192.0.2.1/24");
    let mut cx = Ctx::new(Instant::ZERO, 1);
    let mut o = Outbox::new();
    l.udp_send(
        &mut cx,
        "192.0.2.1:9".parse().unwrap(),
        "192.0.2.77:9".parse().unwrap(),
        b"x",
        &mut o,
    );
    assert_eq!(o.frames().count(), 1, "an ARP request");
    o.clear();
    while let Some(t) = l.poll_at() {
        l.on_timer(cx.at(t), &mut o);
    }
    assert_eq!(o.drops(), &[(P, DropReason::ArpTimeout)]);
    assert_eq!(
        o.frames().count(),
        2,
        "two retries, no host unreachable to ourselves"
    );
}

/// Two layers on one wire, frames carried between them until nothing moves,
/// losing each frame with probability `loss`; the clock jumps to the next
/// timer when the wire is quiet.
struct Wire {
    ends: [L3; 2],
    cx: [Ctx; 2],
    rng: Rng,
    loss: f64,
    now: Instant,
    lost: u32,
}

impl Wire {
    fn new(loss: f64, seed: u64) -> Wire {
        Wire {
            ends: [layer(A_MAC, "192.0.2.1/24"), layer(B_MAC, "192.0.2.2/24")],
            cx: [
                Ctx::new(Instant::ZERO, seed),
                Ctx::new(Instant::ZERO, seed + 1),
            ],
            rng: Rng::new(seed),
            loss,
            now: Instant::ZERO,
            lost: 0,
        }
    }

    /// Polls both ends, carries frames, steps timers, until `until` holds or
    /// 10 virtual minutes pass.
    fn run(&mut self, mut until: impl FnMut(&mut Wire) -> bool) {
        let mut queue: Vec<(usize, Vec<u8>)> = Vec::new();
        let deadline = self.now + std::time::Duration::from_secs(600);
        while self.now < deadline {
            for i in 0..2 {
                let mut o = Outbox::new();
                self.ends[i].poll(self.cx[i].at(self.now), &mut o);
                queue.extend(o.frames().map(|(_, f)| (1 - i, f.to_vec())));
            }
            if queue.is_empty() {
                if until(self) {
                    return;
                }
                let next = self.ends.iter().filter_map(L3::poll_at).min();
                let Some(t) = next else { return };
                self.now = t.max(self.now);
                for i in 0..2 {
                    if self.ends[i].poll_at().is_some_and(|t| t <= self.now) {
                        let mut o = Outbox::new();
                        self.ends[i].on_timer(self.cx[i].at(self.now), &mut o);
                        queue.extend(o.frames().map(|(_, f)| (1 - i, f.to_vec())));
                    }
                }
                continue;
            }
            for (to, f) in std::mem::take(&mut queue) {
                if self.rng.chance(self.loss) {
                    self.lost += 1;
                    continue;
                }
                let mut o = Outbox::new();
                let l = &mut self.ends[to];
                let input = l.input(self.cx[to].at(self.now), P, &f, &mut o);
                assert!(matches!(input, Input::Done), "{input:?}");
                assert!(o.drops().is_empty(), "{:?}", o.drops());
                queue.extend(o.frames().map(|(_, f)| (1 - to, f.to_vec())));
            }
            self.now = self.now + std::time::Duration::from_millis(1);
        }
        panic!("did not settle in 10 virtual minutes");
    }
}

/// A connects to B's listener, sends 100 kB, B echoes it back, both close.
fn echo_over_tcp(loss: f64, seed: u64) -> (Vec<u8>, u32) {
    let mut w = Wire::new(loss, seed);
    let lst = w.ends[1]
        .tcp_stack(&mut w.cx[1])
        .listen("192.0.2.2:179".parse().unwrap(), tcp::DEFAULT_BUFFER)
        .unwrap();
    let conn = w.ends[0]
        .tcp_stack(&mut w.cx[0])
        .connect(
            "192.0.2.1:40000".parse().unwrap(),
            "192.0.2.2:179".parse().unwrap(),
            tcp::DEFAULT_BUFFER,
        )
        .unwrap();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let (mut sent, mut echoed, mut back) = (0, 0, Vec::new());
    let mut closed = false;
    w.run(|w| {
        let a = w.ends[0].tcp_stack(&mut w.cx[0]).socket(conn);
        if a.may_send() && sent < data.len() {
            sent += a.send_slice(&data[sent..]).unwrap();
        }
        while a.can_recv() {
            a.recv(|b| {
                back.extend_from_slice(b);
                (b.len(), ())
            })
            .unwrap();
        }
        if back.len() == data.len() && !closed {
            a.close();
            closed = true;
        }
        let a_state = a.state();
        let b = w.ends[1].tcp_stack(&mut w.cx[1]).socket(lst);
        let mut buf = [0u8; 4096];
        while b.can_recv() && b.can_send() {
            let n = b.recv_slice(&mut buf).unwrap();
            echoed += b.send_slice(&buf[..n]).unwrap();
        }
        if b.state() == TcpState::CloseWait {
            b.close();
        }
        closed && a_state == TcpState::TimeWait && b.state() == TcpState::Closed
    });
    assert_eq!(echoed, data.len());
    assert_eq!(back, data);
    (back, w.lost)
}

#[test]
fn tcp_over_two_layers_handshakes_carries_data_both_ways_and_closes() {
    let (_, lost) = echo_over_tcp(0.0, 7);
    assert_eq!(lost, 0);
}

#[test]
fn tcp_retransmits_what_a_lossy_wire_drops_and_the_same_seed_loses_the_same_frames() {
    let (_, lost) = echo_over_tcp(0.05, 11);
    assert!(lost > 0, "some frames were lost");
    assert_eq!(echo_over_tcp(0.05, 11).1, lost, "the seed replays the run");
}

#[test]
fn tcp_sockets_show_in_the_report_with_rfc_state_names() {
    let mut l = warm_a();
    let mut cx = Ctx::new(Instant::ZERO, 1);
    l.tcp_stack(&mut cx)
        .listen("192.0.2.1:179".parse().unwrap(), 1024)
        .unwrap();
    let h = l.udp_bind(Some(a("192.0.2.1")), 2123).unwrap();
    let _ = h;
    let r = l.report();
    let rows: Vec<_> = r
        .sockets
        .iter()
        .map(|s| (s.proto.as_str(), s.local.as_str(), s.state.as_str()))
        .collect();
    assert_eq!(
        rows,
        [
            ("udp", "192.0.2.1:2123", "0 queued"),
            ("tcp", "192.0.2.1:179", "LISTEN")
        ]
    );
}

/// A associates with B's listener on 36412 and sends 40 messages on two
/// streams; B echoes each. Returns the frames lost.
fn echo_over_sctp(loss: f64, seed: u64) -> u32 {
    let mut w = Wire::new(loss, seed);
    w.ends[1].sctp_stack(&mut w.cx[1]).listen(36412);
    let id = w.ends[0].sctp_stack(&mut w.cx[0]).connect(
        &mut w.cx[0],
        "192.0.2.1:36412".parse().unwrap(),
        "192.0.2.2:36412".parse().unwrap(),
        2,
    );
    let sent: Vec<Vec<u8>> = (0..40u8)
        .map(|i| vec![i; 1 + usize::from(i) * 70])
        .collect();
    let (mut queued, mut back) = (false, Vec::new());
    w.run(|w| {
        let (cx, a) = (&mut w.cx[0], &mut w.ends[0]);
        let up = a.sctp_stack(cx).state(id) == Some(sctp::AssocState::Established);
        if up && !queued {
            for (i, s) in sent.iter().enumerate() {
                let stack = a.sctp_stack(cx);
                stack.send(cx, id, (i % 2) as u16, 18, s).unwrap();
            }
            queued = true;
        }
        while let Some((_, m)) = a.sctp_stack(cx).recv() {
            back.push(m.data);
        }
        let (cx, b) = (&mut w.cx[1], &mut w.ends[1]);
        while let Some((bid, m)) = b.sctp_stack(cx).recv() {
            b.sctp_stack(cx)
                .send(cx, bid, m.stream, m.ppid, &m.data)
                .unwrap();
        }
        back.len() == sent.len()
    });
    // Per stream, the echoes come back in the order sent.
    for stream in 0..2 {
        let want: Vec<_> = sent.iter().skip(stream).step_by(2).collect();
        let got: Vec<_> = back
            .iter()
            .filter(|m| sent.iter().position(|s| s == *m).unwrap() % 2 == stream)
            .collect();
        assert_eq!(got, want, "stream {stream}");
    }
    w.lost
}

#[test]
fn sctp_over_two_layers_associates_and_echoes_in_order_per_stream() {
    let lost = echo_over_sctp(0.0, 3);
    assert_eq!(lost, 0);
}

#[test]
fn sctp_retransmits_what_a_lossy_wire_drops_and_the_same_seed_loses_the_same_frames() {
    let lost = echo_over_sctp(0.05, 13);
    assert!(lost > 0, "some frames were lost");
    assert_eq!(echo_over_sctp(0.05, 13), lost, "the seed replays the run");
}

#[test]
fn sctp_leaves_in_ipv4_with_df_and_protocol_132_and_shows_in_the_report() {
    let mut l = warm_a();
    let mut cx = Ctx::new(Instant::ZERO, 1);
    l.sctp_stack(&mut cx).listen(36412);
    l.sctp_stack(&mut cx).connect(
        &mut cx,
        "192.0.2.1:5000".parse().unwrap(),
        "192.0.2.2:36412".parse().unwrap(),
        1,
    );
    let mut o = Outbox::new();
    l.poll(&mut cx, &mut o);
    let f = frames(&o);
    assert_eq!(f.len(), 1);
    let ip = Ipv4Packet::new_checked(&f[0][14..]).unwrap();
    assert_eq!((ip.protocol(), ip.dont_frag()), (132, true));
    assert!(ip.verify_checksum());
    let states: Vec<_> = l
        .report()
        .sockets
        .iter()
        .filter(|s| s.proto == "sctp")
        .map(|s| s.state.clone())
        .collect();
    assert_eq!(states, ["LISTEN", "COOKIE-WAIT"]);
}
