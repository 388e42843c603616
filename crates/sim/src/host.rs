//! `SimHost`: a minimal IPv4 host for scenarios, standing where the lab has a
//! kernel stack (the phone, a VM, the `server`).
//!
//! It does what RFC 1122 asks of a host on one Ethernet port and no more:
//! ARP [RFC 826] through [`ArpCache`] (requests, replies, the packets waiting
//! for an answer), echo replies [RFC 792], a default gateway for off-link
//! destinations [RFC 1122 § 3.3.1]. Everything it receives that a test may
//! want to assert on (echo replies, time exceeded, destination unreachable,
//! UDP) is recorded as a [`Received`].
//!
//! A test asks it to send with [`SimHost::ping`] or [`SimHost::udp`] between
//! runs; the packet leaves on the host's next timer, which the simulator runs
//! at once.

use d11_core::l3::{tcp, RouteSource, TcpHandle, TcpStack, TcpState};
use d11_core::{Ctx, DropReason, Element, Input, Instant, L3Port, Outbox, PortId, L3};
use d11_wire::checksum;
use d11_wire::icmp;
use d11_wire::ipv4::{protocol, Ipv4Packet, Ipv4Repr};
use d11_wire::udp::{UdpPacket, UdpRepr};
use d11_wire::{Ipv4Cidr, MacAddr};
use serde_json::json;
use std::net::{Ipv4Addr, SocketAddrV4};

/// The host's only port.
const PORT: PortId = PortId(0);

/// The data of every echo request, 56 bytes as `ping` sends by default.
const PING_DATA: [u8; 56] = {
    let mut d = [0u8; 56];
    let mut i = 0;
    while i < d.len() {
        d[i] = i as u8;
        i += 1;
    }
    d
};

/// The start of the packet an ICMP error quotes [RFC 792: "Internet Header +
/// 64 bits of Original Data Datagram"].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quoted {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    /// The TTL when the reporting router saw it.
    pub ttl: u8,
    pub ident: u16,
    /// Up to the first 8 bytes of its payload (ports, or ICMP type/id/seq).
    pub head: Vec<u8>,
}

impl Quoted {
    /// `(id, seq)` if the quoted packet is an echo request.
    pub fn echo(&self) -> Option<(u16, u16)> {
        match self.head[..] {
            [icmp::ECHO_REQUEST, 0, _, _, a, b, c, d] if self.protocol == protocol::ICMP => {
                Some((u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d])))
            }
            _ => None,
        }
    }

    /// `(source port, destination port)` if the quoted packet is UDP.
    pub fn udp_ports(&self) -> Option<(u16, u16)> {
        match self.head[..] {
            [a, b, c, d, ..] if self.protocol == protocol::UDP => {
                Some((u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d])))
            }
            _ => None,
        }
    }

    /// Reads a quoted packet: a whole IPv4 header, then whatever follows.
    fn parse(b: &[u8]) -> Option<Quoted> {
        let ver_ihl = *b.first()?;
        let hl = usize::from(ver_ihl & 0x0f) * 4;
        if ver_ihl >> 4 != 4 || hl < 20 || b.len() < hl {
            return None;
        }
        let ip = |i: usize| Ipv4Addr::new(b[i], b[i + 1], b[i + 2], b[i + 3]);
        Some(Quoted {
            src: ip(12),
            dst: ip(16),
            protocol: b[9],
            ttl: b[8],
            ident: u16::from_be_bytes([b[4], b[5]]),
            head: b[hl..].iter().take(8).copied().collect(),
        })
    }
}

/// What a received packet said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// An answer to [`SimHost::ping`].
    EchoReply { id: u16, seq: u16, data: Vec<u8> },
    /// Type 11: a router's TTL reached zero (code 0) [RFC 792].
    TimeExceeded { code: u8, quoted: Quoted },
    /// Type 3 with its code; `mtu` is the next-hop MTU of code 4
    /// (fragmentation needed) [RFC 1191 § 4], 0 for the other codes.
    DestUnreachable { code: u8, mtu: u16, quoted: Quoted },
    /// A UDP datagram (the host listens on every port).
    Udp {
        sport: u16,
        dport: u16,
        payload: Vec<u8>,
    },
}

/// A packet the host received, with when, from whom and at what TTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub at: Instant,
    pub src: Ipv4Addr,
    pub ttl: u8,
    pub msg: Message,
}

/// A one-port IPv4 host.
#[derive(Debug)]
pub struct SimHost {
    mac: MacAddr,
    address: Ipv4Cidr,
    gateway: Option<Ipv4Addr>,
    mtu: u16,
    /// Its IP layer: ARP, the default route, ping, TCP (smoltcp).
    l3: L3,
    /// Packets asked for since the last timer (IPv4, no Ethernet header).
    outgoing: Vec<Vec<u8>>,
    received: Vec<Received>,
    /// Whole Ethernet frames asked for (a protocol the host's IP layer
    /// does not speak: the phone's NAS on the radio).
    frames_out: Vec<Vec<u8>>,
    /// Frames of an EtherType other than IPv4 and ARP, as they came.
    frames_in: Vec<Vec<u8>>,
}

impl SimHost {
    /// A host at `address` (its subnet is on-link) that sends everything
    /// else to `gateway`, on a 1500-byte link.
    pub fn new(mac: MacAddr, address: Ipv4Cidr, gateway: Option<Ipv4Addr>) -> SimHost {
        SimHost::with_mtu(mac, address, gateway, 1500)
    }

    /// [`SimHost::new`] on a link of `mtu` (the phone's 1400, a VM's 1450).
    pub fn with_mtu(
        mac: MacAddr,
        address: Ipv4Cidr,
        gateway: Option<Ipv4Addr>,
        mtu: u16,
    ) -> SimHost {
        let mut l3 = L3::with_ports(vec![L3Port {
            name: "eth0".into(),
            mac,
            address,
            mtu,
        }]);
        if let Some(gw) = gateway {
            let default = Ipv4Cidr::new(Ipv4Addr::UNSPECIFIED, 0).expect("a /0 is a prefix");
            if let Err(e) = l3.add_route(default, gw, RouteSource::Static) {
                tracing::warn!(%e, "no default route");
            }
        }
        l3.deliver_unbound_udp();
        SimHost {
            mac,
            address,
            gateway,
            mtu,
            l3,
            outgoing: Vec::new(),
            received: Vec::new(),
            frames_out: Vec::new(),
            frames_in: Vec::new(),
        }
    }

    /// A new address and default gateway on its interface (the phone's
    /// baseband puts the ones the attach gave): its IP layer starts afresh
    /// on them; what it received so far stays to be read, the whole frames
    /// it was asked to send still go.
    pub fn set_address(&mut self, address: Ipv4Cidr, gateway: Option<Ipv4Addr>) {
        let mut h = SimHost::with_mtu(self.mac, address, gateway, self.mtu);
        h.received = std::mem::take(&mut self.received);
        h.frames_in = std::mem::take(&mut self.frames_in);
        // Whole frames not yet sent (the phone's NAS) still go.
        h.frames_out = std::mem::take(&mut self.frames_out);
        *self = h;
    }

    /// Sends a whole Ethernet frame as it is.
    pub fn send_frame(&mut self, frame: Vec<u8>) {
        self.frames_out.push(frame);
    }

    /// The frames of other EtherTypes than IPv4 and ARP received so far.
    pub fn take_frames(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.frames_in)
    }

    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    pub fn address(&self) -> Ipv4Cidr {
        self.address
    }

    /// Sends an echo request (DF set, 56 bytes of data) [RFC 792].
    pub fn ping(&mut self, dst: Ipv4Addr, ttl: u8, id: u16, seq: u16) {
        let [i0, i1] = id.to_be_bytes();
        let [s0, s1] = seq.to_be_bytes();
        let mut pkt = Vec::with_capacity(20 + 8 + PING_DATA.len());
        self.ip_header(dst, protocol::ICMP, ttl, 8 + PING_DATA.len())
            .emit(&mut pkt);
        icmp::emit_icmp(
            &mut pkt,
            icmp::ECHO_REQUEST,
            0,
            [i0, i1, s0, s1],
            &PING_DATA,
        );
        self.outgoing.push(pkt);
    }

    /// Sends a UDP datagram with its checksum filled [RFC 768], DF set (as a
    /// host doing path MTU discovery sends it [RFC 1191 § 3]). Nothing is
    /// fragmented here: a payload too big for a wire is the point of a test.
    pub fn udp(&mut self, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8], ttl: u8) {
        let udp = UdpRepr {
            src_port: sport,
            dst_port: dport,
            payload_len: payload.len(),
        };
        let mut pkt = Vec::with_capacity(20 + 8 + payload.len());
        self.ip_header(dst, protocol::UDP, ttl, udp.buffer_len() + payload.len())
            .emit(&mut pkt);
        udp.emit_with_checksum(&mut pkt, self.address.addr(), dst, payload);
        self.outgoing.push(pkt);
    }

    /// The host's TCP stack (smoltcp), made on first use with initial
    /// sequence numbers seeded from its address, so runs repeat.
    fn tcp(&mut self) -> &mut TcpStack {
        let seed = u64::from(u32::from(self.address.addr()));
        self.l3.tcp_stack(&mut Ctx::new(Instant::ZERO, seed))
    }

    /// A socket listening on our `port` (one connection).
    pub fn tcp_listen(&mut self, port: u16) -> TcpHandle {
        let me = SocketAddrV4::new(self.address.addr(), port);
        self.tcp()
            .listen(me, tcp::DEFAULT_BUFFER)
            .expect("a fresh socket listens")
    }

    /// Opens a TCP connection from our `port` to `to`.
    pub fn tcp_connect(&mut self, port: u16, to: SocketAddrV4) -> TcpHandle {
        let me = SocketAddrV4::new(self.address.addr(), port);
        self.tcp()
            .connect(me, to, tcp::DEFAULT_BUFFER)
            .expect("a fresh socket connects")
    }

    /// Queues `data` on a TCP connection (as much as its buffer takes);
    /// returns how much was taken.
    pub fn tcp_send(&mut self, h: TcpHandle, data: &[u8]) -> usize {
        self.tcp().socket(h).send_slice(data).unwrap_or(0)
    }

    /// What a TCP connection received since the last call.
    pub fn tcp_recv(&mut self, h: TcpHandle) -> Vec<u8> {
        let mut got = Vec::new();
        let s = self.tcp().socket(h);
        while s.can_recv() {
            let _ = s.recv(|b| {
                got.extend_from_slice(b);
                (b.len(), ())
            });
        }
        got
    }

    /// Closes our side of a TCP connection (FIN once the data is sent).
    pub fn tcp_close(&mut self, h: TcpHandle) {
        self.tcp().socket(h).close();
    }

    pub fn tcp_state(&mut self, h: TcpHandle) -> TcpState {
        self.tcp().socket(h).state()
    }

    /// Everything received so far, in order.
    pub fn received(&self) -> &[Received] {
        &self.received
    }

    /// Everything received so far, forgetting it.
    pub fn take_received(&mut self) -> Vec<Received> {
        std::mem::take(&mut self.received)
    }

    /// The MAC `ip` resolved to, if the ARP entry is still valid.
    pub fn arp_lookup(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.l3
            .report()
            .arp
            .iter()
            .find(|r| r.ip == ip)
            .map(|r| r.mac)
    }

    fn ip_header(&mut self, dst: Ipv4Addr, protocol: u8, ttl: u8, payload_len: usize) -> Ipv4Repr {
        Ipv4Repr {
            src: self.address.addr(),
            dst,
            protocol,
            ttl,
            ident: self.l3.next_ident(),
            dont_frag: true,
            payload_len,
        }
    }

    /// A packet to us that the layer did not answer itself: an ICMP reply
    /// or error, or UDP (the host listens on every port).
    fn record(&mut self, now: Instant, ip: &Ipv4Packet<&[u8]>, out: &mut Outbox) {
        if ip.more_frags() || ip.frag_offset() != 0 {
            // No reassembly here; scenarios send DF.
            return out.drop_frame(PORT, DropReason::UnsupportedProtocol);
        }
        let msg = match ip.protocol() {
            protocol::ICMP => parse_icmp(ip.payload()),
            protocol::UDP => parse_udp(ip),
            _ => Err(DropReason::UnsupportedProtocol),
        };
        match msg {
            Ok(msg) => self.received.push(Received {
                at: now,
                src: ip.src(),
                ttl: ip.ttl(),
                msg,
            }),
            Err(reason) => out.drop_frame(PORT, reason),
        }
    }
}

/// An ICMP message other than an echo request [RFC 792].
fn parse_icmp(m: &[u8]) -> Result<Message, DropReason> {
    if m.len() < 8 {
        return Err(DropReason::Truncated);
    }
    if checksum::fold(checksum::sum(m)) != 0xffff {
        return Err(DropReason::BadChecksum);
    }
    let (ty, code) = (m[0], m[1]);
    let quoted = || Quoted::parse(&m[8..]).ok_or(DropReason::Malformed);
    Ok(match ty {
        icmp::ECHO_REPLY => Message::EchoReply {
            id: u16::from_be_bytes([m[4], m[5]]),
            seq: u16::from_be_bytes([m[6], m[7]]),
            data: m[8..].to_vec(),
        },
        icmp::TIME_EXCEEDED => Message::TimeExceeded {
            code,
            quoted: quoted()?,
        },
        icmp::DEST_UNREACHABLE => Message::DestUnreachable {
            code,
            mtu: if code == 4 {
                u16::from_be_bytes([m[6], m[7]])
            } else {
                0
            },
            quoted: quoted()?,
        },
        _ => return Err(DropReason::UnsupportedProtocol),
    })
}

/// A UDP datagram (its checksum was verified by the layer).
fn parse_udp(ip: &Ipv4Packet<&[u8]>) -> Result<Message, DropReason> {
    let u = UdpPacket::new_checked(ip.payload()).map_err(|_| DropReason::Malformed)?;
    Ok(Message::Udp {
        sport: u.src_port(),
        dport: u.dst_port(),
        payload: u.payload().to_vec(),
    })
}

impl Element for SimHost {
    fn on_frame(&mut self, cx: &mut Ctx, port: PortId, frame: &[u8], out: &mut Outbox) {
        if frame.len() >= 14 && ![[0x08, 0x00], [0x08, 0x06]].contains(&[frame[12], frame[13]]) {
            // Kept for the test, and still the IP layer's counted drop.
            self.frames_in.push(frame.to_vec());
        }
        match self.l3.input(cx, port, frame, out) {
            Input::Done => {}
            Input::Local(ip) => self.record(cx.now, &ip, out),
            Input::Transit(_) | Input::Tunnel { .. } => out.drop_frame(port, DropReason::NotForUs),
        }
    }

    /// Sends what the test asked for, then ARP retries and failures and
    /// TCP's timers.
    fn on_timer(&mut self, cx: &mut Ctx, out: &mut Outbox) {
        for pkt in std::mem::take(&mut self.outgoing) {
            self.l3.send_ip(cx, PORT, &pkt, out);
        }
        for f in std::mem::take(&mut self.frames_out) {
            out.transmit(PORT, &f);
        }
        self.l3.on_timer(cx, out);
    }

    /// Due at once while the test's packets wait (the simulator clamps a
    /// past deadline to its clock), else when the layer next needs attention.
    fn poll_at(&self) -> Option<Instant> {
        if self.outgoing.is_empty() && self.frames_out.is_empty() {
            self.l3.poll_at()
        } else {
            Some(Instant::ZERO)
        }
    }

    fn report(&self) -> serde_json::Value {
        json!({
            "mac": self.mac,
            "address": self.address,
            "gateway": self.gateway.map(|g| g.to_string()),
            "arp": self.l3.report().arp,
            "received": self.received.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use d11_wire::arp::ArpRepr;
    use d11_wire::ethernet::{self, EtherType, EthernetFrame};
    use d11_wire::hex;

    // /usr/bin/python3 -c 'from scapy.all import *; print(bytes(
    //   Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02")/
    //   IP(src="10.0.0.2", dst="10.0.0.1", ttl=64, id=7)/
    //   UDP(sport=5353, dport=9)/b"hello").hex())'
    const UDP_TO_H1: &str = "02000000000102000000000208004500002100070000401166c3\
                             0a0000020a00000114e90009000d930d68656c6c6f";
    // The same with IP(..., flags="DF"), as SimHost sends it.
    const UDP_TO_H1_DF: &str = "02000000000102000000000208004500002100074000401126c3\
                                0a0000020a00000114e90009000d930d68656c6c6f";

    fn h1() -> SimHost {
        SimHost::new(
            MacAddr([2, 0, 0, 0, 0, 1]),
            "10.0.0.1/24".parse().unwrap(),
            Some(Ipv4Addr::new(10, 0, 0, 254)),
        )
    }

    fn run_timer(h: &mut SimHost) -> Vec<Vec<u8>> {
        let mut out = Outbox::new();
        h.on_timer(&mut Instant::ZERO.into(), &mut out);
        out.frames().map(|(_, f)| f.to_vec()).collect()
    }

    #[test]
    fn a_udp_datagram_from_scapy_is_recorded_with_its_payload() {
        let mut h = h1();
        let mut out = Outbox::new();
        h.on_frame(
            &mut (Instant::from_millis(5)).into(),
            PORT,
            &hex(UDP_TO_H1),
            &mut out,
        );
        assert!(out.is_empty());
        assert_eq!(
            h.received(),
            [Received {
                at: Instant::from_millis(5),
                src: Ipv4Addr::new(10, 0, 0, 2),
                ttl: 64,
                msg: Message::Udp {
                    sport: 5353,
                    dport: 9,
                    payload: b"hello".to_vec()
                },
            }]
        );
    }

    #[test]
    fn udp_is_built_with_the_checksum_scapy_computes() {
        // The same datagram the other way round, once ARP is known.
        let mut h = SimHost::new(
            MacAddr([2, 0, 0, 0, 0, 2]),
            "10.0.0.2/24".parse().unwrap(),
            None,
        );
        h.l3.learn(
            Instant::ZERO,
            Ipv4Addr::new(10, 0, 0, 1),
            MacAddr([2, 0, 0, 0, 0, 1]),
        );
        for _ in 0..6 {
            h.l3.next_ident(); // the next packet gets id 7, as in the fixture
        }
        h.udp(Ipv4Addr::new(10, 0, 0, 1), 5353, 9, b"hello", 64);
        assert_eq!(run_timer(&mut h), [hex(UDP_TO_H1_DF)]);
    }

    #[test]
    fn a_ping_off_link_asks_arp_for_the_gateway_then_leaves_when_it_answers() {
        let mut h = h1();
        h.ping(Ipv4Addr::new(192, 0, 2, 9), 3, 0x77, 1);
        assert_eq!(h.poll_at(), Some(Instant::ZERO));
        let f = run_timer(&mut h);
        assert_eq!(f.len(), 1);
        let arp = ArpRepr::parse(&f[0][14..]).unwrap();
        assert_eq!(arp.target_ip, Ipv4Addr::new(10, 0, 0, 254));
        let gw = MacAddr([2, 0, 0, 0, 0, 0xfe]);
        let mut reply = vec![];
        arp.reply_from(gw).emit_frame(&mut reply);
        let mut out = Outbox::new();
        h.on_frame(
            &mut (Instant::from_millis(1)).into(),
            PORT,
            &reply,
            &mut out,
        );
        let sent: Vec<_> = out.frames().map(|(_, f)| f.to_vec()).collect();
        assert_eq!(sent.len(), 1);
        let eth = EthernetFrame::new_checked(&sent[0][..]).unwrap();
        assert_eq!(eth.dst(), gw);
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(ip.verify_checksum() && ip.dont_frag());
        assert_eq!(
            (ip.dst(), ip.ttl(), ip.payload().len()),
            (Ipv4Addr::new(192, 0, 2, 9), 3, 64)
        );
        assert_eq!(&ip.payload()[4..8], &[0, 0x77, 0, 1]);
    }

    #[test]
    fn an_unanswered_arp_is_retried_then_its_packets_dropped() {
        let mut h = h1();
        h.ping(Ipv4Addr::new(10, 0, 0, 9), 64, 1, 1);
        run_timer(&mut h);
        let mut out = Outbox::new();
        for s in 1..=3 {
            h.on_timer(&mut (Instant::from_millis(s * 1000)).into(), &mut out);
        }
        assert_eq!(out.frames().count(), 2, "two retries");
        assert_eq!(out.drops(), [(PORT, DropReason::ArpTimeout)]);
        assert_eq!(h.poll_at(), None);
    }

    #[test]
    fn time_exceeded_is_recorded_with_the_probe_it_quotes() {
        // icmp.rs's golden time exceeded, from 192.0.2.1 about a ping
        // 10.45.0.2 > 192.0.2.9 id 0x77 seq 1, delivered to 10.45.0.2.
        let mut h = SimHost::new(
            MacAddr([2, 0, 0, 0, 0, 1]),
            "10.45.0.2/16".parse().unwrap(),
            None,
        );
        let mut frame = vec![];
        ethernet::emit_header(
            &mut frame,
            h.mac(),
            MacAddr([2, 0, 0, 0, 0, 9]),
            EtherType::Ipv4,
        );
        frame.extend(hex("4500003c000000004001ae91c00002010a2d00020b00f4ff0000000045000020000100000101eda40a2d0002c0000209080032c10077000161626364"));
        let mut out = Outbox::new();
        h.on_frame(&mut (Instant::ZERO).into(), PORT, &frame, &mut out);
        assert!(out.is_empty());
        let r = &h.received()[0];
        assert_eq!(r.src, Ipv4Addr::new(192, 0, 2, 1));
        let Message::TimeExceeded { code: 0, quoted } = &r.msg else {
            panic!("{r:?}")
        };
        assert_eq!(quoted.echo(), Some((0x77, 1)));
        assert_eq!((quoted.dst, quoted.ttl), (Ipv4Addr::new(192, 0, 2, 9), 1));
        assert_eq!(quoted.udp_ports(), None);
    }

    #[test]
    fn frames_for_another_mac_and_corrupt_packets_are_counted_drops() {
        let mut h = h1();
        let mut out = Outbox::new();
        let mut other = hex(UDP_TO_H1);
        other[5] = 0x99;
        h.on_frame(&mut (Instant::ZERO).into(), PORT, &other, &mut out);
        let mut bad = hex(UDP_TO_H1);
        bad[14 + 28] ^= 0xff; // a payload byte: the UDP checksum no longer matches
        h.on_frame(&mut (Instant::ZERO).into(), PORT, &bad, &mut out);
        h.on_frame(&mut (Instant::ZERO).into(), PORT, &bad[..20], &mut out);
        assert_eq!(
            out.drops(),
            [
                (PORT, DropReason::NotForUs),
                (PORT, DropReason::BadChecksum),
                (PORT, DropReason::Truncated)
            ]
        );
        assert!(h.received().is_empty());
    }
}
