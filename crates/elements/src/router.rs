//! `router`: an IPv4 router.
//!
//! Read RFC 1812 ("Requirements for IP Version 4 Routers") first, § 5.2–5.3
//! for the forwarding steps and § 4.3 for the ICMP a router originates. The
//! chapter 7 lesson lives here: per hop only the MACs change and TTL goes down
//! by one; the IP addresses stay the same.
//!
//! Shape (Open vSwitch's datapath stages): classify the frame (ARP, for us,
//! to forward), look the destination up in the [`Fib`], apply the action
//! (rewrite MACs, decrement TTL with an incremental checksum [RFC 1624],
//! transmit — or queue behind ARP, fragment, or answer with ICMP).

use crate::origin::Originated;
use d11_core::{
    ArpCache, ArpConfig, ArpEvent, DropReason, Element, Enqueued, Fib, Instant, Outbox, PortId,
};
use d11_wire::arp::{ArpOp, ArpRepr};
use d11_wire::ethernet::{self, EtherType, EthernetFrame};
use d11_wire::icmp::{self, IcmpError};
use d11_wire::ipv4::{protocol, Ipv4Packet};
use d11_wire::{Ipv4Cidr, MacAddr};
use serde_json::json;
use std::net::Ipv4Addr;

/// One routed port: its MAC, its address and subnet, its MTU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterPort {
    pub name: String,
    pub mac: MacAddr,
    pub address: Ipv4Cidr,
    pub mtu: u16,
}

/// A static route: packets to `to` go to the neighbour `via`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticRoute {
    pub to: Ipv4Cidr,
    pub via: Ipv4Addr,
}

/// What a router is built from (the topology's node, resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    pub ports: Vec<RouterPort>,
    pub routes: Vec<StaticRoute>,
}

/// Where the FIB sends a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NextHop {
    port: PortId,
    /// `None` for a connected subnet: the destination itself is the neighbour.
    via: Option<Ipv4Addr>,
}

/// An IPv4 router with static routes.
#[derive(Debug)]
pub struct Router {
    ports: Vec<RouterPort>,
    fib: Fib<NextHop>,
    arp: ArpCache,
    ident: u16,
    /// Latest time seen, for reports (ARP entries that are still valid).
    last_now: Instant,
    sent: Originated,
    /// Per port, the MAC its ARP replies give for the port's address (the
    /// port's own MAC unless [`Router::answer_arp_with`] changed it).
    arp_answer: Vec<MacAddr>,
}

impl Router {
    /// Builds the router: connected routes from each port's subnet, then the
    /// static routes, each sent out of the port whose subnet holds its `via`
    /// (the topology's validation guarantees there is one; a route without one
    /// is skipped with a warning rather than guessed).
    pub fn new(cfg: RouterConfig) -> Router {
        let mut fib = Fib::new();
        for (i, p) in cfg.ports.iter().enumerate() {
            fib.insert(
                p.address.network(),
                NextHop {
                    port: PortId(i as u16),
                    via: None,
                },
            );
        }
        for r in &cfg.routes {
            match cfg.ports.iter().position(|p| p.address.contains(r.via)) {
                Some(i) => {
                    fib.insert(
                        r.to,
                        NextHop {
                            port: PortId(i as u16),
                            via: Some(r.via),
                        },
                    );
                }
                None => {
                    tracing::warn!(to = %r.to, via = %r.via, "static route skipped: via is on no connected subnet")
                }
            }
        }
        Router {
            arp_answer: cfg.ports.iter().map(|p| p.mac).collect(),
            ports: cfg.ports,
            fib,
            arp: ArpCache::new(ArpConfig::default()),
            ident: 1,
            last_now: Instant::ZERO,
            sent: Originated::new(),
        }
    }

    /// Answers ARP for `port`'s address with `mac` instead of the port's own
    /// MAC (the eNB answers for the UE's gateway with the PGW's MAC). Frames
    /// sent from the port keep the port's MAC as source.
    pub fn answer_arp_with(&mut self, port: PortId, mac: MacAddr) {
        if let Some(m) = self.arp_answer.get_mut(port.index()) {
            *m = mac;
        }
    }

    fn port(&self, p: PortId) -> Option<&RouterPort> {
        self.ports.get(p.index())
    }

    fn is_local(&self, ip: Ipv4Addr) -> bool {
        self.ports.iter().any(|p| p.address.addr() == ip)
    }

    fn handle_arp(&mut self, now: Instant, port: PortId, payload: &[u8], out: &mut Outbox) {
        let Ok(arp) = ArpRepr::parse(payload) else {
            out.drop_frame(port, DropReason::Malformed);
            return;
        };
        let Some(me) = self.port(port).cloned() else {
            return;
        };
        let for_us = arp.target_ip == me.address.addr();
        let flushed = self.arp.on_arp(now, &arp, me.address.addr());
        if let Some((egress, queue)) = flushed {
            for pkt in queue {
                self.transmit_ip(egress, arp.sender_mac, &pkt, out);
            }
        }
        if for_us && arp.op == ArpOp::Request {
            let mac = self.arp_answer[port.index()];
            out.build(port, |b| arp.reply_from(mac).emit_frame(b));
        }
    }

    fn handle_ipv4(&mut self, now: Instant, port: PortId, frame: &[u8], out: &mut Outbox) {
        let Some(ingress) = self.port(port) else {
            return;
        };
        if frame.len() > usize::from(ingress.mtu) + ethernet::HEADER_LEN {
            out.drop_frame(port, DropReason::Oversize);
            return;
        }
        let ingress_addr = ingress.address;
        let ip = match Ipv4Packet::new_checked(&frame[ethernet::HEADER_LEN..]) {
            Ok(ip) => ip,
            Err(d11_wire::ipv4::Ipv4Error::Truncated) => {
                return out.drop_frame(port, DropReason::Truncated)
            }
            Err(_) => return out.drop_frame(port, DropReason::Malformed),
        };
        if !ip.verify_checksum() {
            return out.drop_frame(port, DropReason::BadChecksum);
        }
        let (src, dst) = (ip.src(), ip.dst());
        if src.is_multicast() || src.is_broadcast() || src.is_loopback() || src.is_unspecified() {
            return out.drop_frame(port, DropReason::Martian);
        }
        if self.is_local(dst) {
            return self.deliver_local(now, port, &ip, out);
        }
        if dst.is_broadcast() || dst.is_multicast() || dst == ingress_addr.broadcast() {
            // Not forwarded: directed broadcasts are off [RFC 2644].
            return out.drop_frame(port, DropReason::NotForUs);
        }
        if ip.ttl() <= 1 {
            self.send_error(now, port, IcmpError::TtlExceeded, &ip, out);
            return out.drop_frame(port, DropReason::TtlExpired);
        }
        let Some((_, &hop)) = self.fib.lookup(dst) else {
            self.send_error(now, port, IcmpError::NetUnreachable, &ip, out);
            return out.drop_frame(port, DropReason::NoRoute);
        };
        let mtu = self.ports[hop.port.index()].mtu;
        if ip.total_len() > usize::from(mtu) {
            if ip.dont_frag() {
                self.send_error(now, port, IcmpError::FragmentationNeeded { mtu }, &ip, out);
                return out.drop_frame(port, DropReason::NeedsFragmentation);
            }
            let mut pkt = ip.packet().to_vec();
            let mut p = Ipv4Packet::new_checked(&mut pkt[..]).expect("checked above");
            p.decrement_ttl();
            return self.fragment_and_send(now, port, hop, &pkt, mtu, out);
        }
        let next = hop.via.unwrap_or(dst);
        match self.arp.lookup(now, next) {
            Some(mac) => {
                // The fast path: one copy into the outbox, then rewrite in place.
                let src_mac = self.ports[hop.port.index()].mac;
                let f = out.transmit(hop.port, &frame[..ethernet::HEADER_LEN + ip.total_len()]);
                let mut eth = EthernetFrame::new_checked(&mut f[..]).expect("length kept");
                eth.set_dst(mac);
                eth.set_src(src_mac);
                Ipv4Packet::new_checked(eth.payload_mut())
                    .expect("checked above")
                    .decrement_ttl();
            }
            None => {
                let mut pkt = ip.packet().to_vec();
                Ipv4Packet::new_checked(&mut pkt[..])
                    .expect("checked above")
                    .decrement_ttl();
                self.resolve_and_queue(now, port, hop.port, next, &pkt, out);
            }
        }
    }

    /// A packet addressed to one of our own addresses: we answer echo
    /// requests and UDP probes (port unreachable, as a traceroute to the
    /// router itself expects); the rest is not for a router without services.
    fn deliver_local(
        &mut self,
        now: Instant,
        port: PortId,
        ip: &Ipv4Packet<&[u8]>,
        out: &mut Outbox,
    ) {
        if let Some(req) = icmp::as_echo_request(ip) {
            let mut pkt = Vec::with_capacity(ip.total_len());
            let ident = self.next_ident();
            icmp::emit_echo_reply(&mut pkt, ip.dst(), ip.src(), ident, req);
            self.sent.echo_replies += 1;
            return self.route_local(now, port, &pkt, out);
        }
        if ip.protocol() == protocol::UDP && ip.frag_offset() == 0 {
            self.send_error_from(now, port, ip.dst(), IcmpError::PortUnreachable, ip, out);
        }
        out.drop_frame(port, DropReason::UnsupportedProtocol);
    }

    /// Sends an ICMP error about `ip` from the ingress port's address.
    fn send_error(
        &mut self,
        now: Instant,
        port: PortId,
        err: IcmpError,
        ip: &Ipv4Packet<&[u8]>,
        out: &mut Outbox,
    ) {
        let Some(from) = self.port(port).map(|p| p.address.addr()) else {
            return;
        };
        self.send_error_from(now, port, from, err, ip, out);
    }

    fn send_error_from(
        &mut self,
        now: Instant,
        port: PortId,
        from: Ipv4Addr,
        err: IcmpError,
        ip: &Ipv4Packet<&[u8]>,
        out: &mut Outbox,
    ) {
        if !self.sent.admit_error(now, err, ip) {
            return;
        }
        let mut pkt = Vec::with_capacity(icmp::MAX_ERROR_LEN);
        let ident = self.next_ident();
        icmp::emit_error(&mut pkt, from, ident, err, ip);
        self.route_local(now, port, &pkt, out);
    }

    fn next_ident(&mut self) -> u16 {
        self.ident = self.ident.wrapping_add(1);
        self.ident
    }

    /// Routes a packet the router originated (an ICMP answer, or a GTP-U
    /// packet of the mobile elements that embed a router for their own
    /// addresses): FIB lookup, then ARP or the queue behind it. `ingress`
    /// is the port drops are counted on.
    pub fn route_local(&mut self, now: Instant, ingress: PortId, pkt: &[u8], out: &mut Outbox) {
        let Ok(ip) = Ipv4Packet::new_checked(pkt) else {
            return;
        };
        let Some((_, &hop)) = self.fib.lookup(ip.dst()) else {
            return out.drop_frame(ingress, DropReason::NoRoute);
        };
        let next = hop.via.unwrap_or(ip.dst());
        match self.arp.lookup(now, next) {
            Some(mac) => self.transmit_ip(hop.port, mac, pkt, out),
            None => self.resolve_and_queue(now, ingress, hop.port, next, pkt, out),
        }
    }

    /// Queues `pkt` behind an ARP request for `next` on `egress`.
    fn resolve_and_queue(
        &mut self,
        now: Instant,
        ingress: PortId,
        egress: PortId,
        next: Ipv4Addr,
        pkt: &[u8],
        out: &mut Outbox,
    ) {
        match self.arp.enqueue(now, egress, next, pkt) {
            Enqueued::SendRequest => self.send_arp_request(egress, next, out),
            Enqueued::Queued => {}
            Enqueued::Full => out.drop_frame(ingress, DropReason::ArpQueueFull),
        }
    }

    fn send_arp_request(&self, egress: PortId, target: Ipv4Addr, out: &mut Outbox) {
        if let Some(p) = self.port(egress) {
            let req = ArpRepr::request(p.mac, p.address.addr(), target);
            out.build(egress, |b| req.emit_frame(b));
        }
    }

    /// Frames an IP packet for `egress` towards `dst_mac`.
    fn transmit_ip(&self, egress: PortId, dst_mac: MacAddr, pkt: &[u8], out: &mut Outbox) {
        if let Some(p) = self.port(egress) {
            out.build(egress, |b| {
                ethernet::emit_header(b, dst_mac, p.mac, EtherType::Ipv4);
                b.extend_from_slice(pkt);
            });
        }
    }

    /// Splits a packet whose DF bit is clear into fragments that fit `mtu`
    /// [RFC 791 § 3.2 "Fragmentation"; RFC 1812 § 5.2.6]. Options without
    /// the copy flag stay in the first fragment only.
    fn fragment_and_send(
        &mut self,
        now: Instant,
        ingress: PortId,
        hop: NextHop,
        pkt: &[u8],
        mtu: u16,
        out: &mut Outbox,
    ) {
        let Ok(ip) = Ipv4Packet::new_checked(pkt) else {
            return;
        };
        let first_header = ip.header().to_vec();
        let later_header = copied_options_header(&first_header);
        let payload = ip.payload();
        let base_offset = ip.frag_offset();
        let last_has_mf = ip.more_frags();
        let next = hop.via.unwrap_or(ip.dst());
        let mut off = 0;
        while off < payload.len() {
            let header = if off == 0 {
                &first_header
            } else {
                &later_header
            };
            let room = (usize::from(mtu).saturating_sub(header.len())) & !7;
            if room == 0 {
                return out.drop_frame(ingress, DropReason::NeedsFragmentation);
            }
            let end = (off + room).min(payload.len());
            let more = end < payload.len() || last_has_mf;
            let mut frag = Vec::with_capacity(header.len() + end - off);
            frag.extend_from_slice(header);
            frag.extend_from_slice(&payload[off..end]);
            let total = frag.len() as u16;
            frag[2..4].copy_from_slice(&total.to_be_bytes());
            let flags_off =
                (if more { 0x2000 } else { 0 }) | (((base_offset + off) / 8) as u16 & 0x1fff);
            frag[6..8].copy_from_slice(&flags_off.to_be_bytes());
            if let Ok(mut f) = Ipv4Packet::new_checked(&mut frag[..]) {
                f.fill_checksum();
            }
            self.sent.fragments += 1;
            match self.arp.lookup(now, next) {
                Some(mac) => self.transmit_ip(hop.port, mac, &frag, out),
                None => self.resolve_and_queue(now, ingress, hop.port, next, &frag, out),
            }
            off = end;
        }
    }
}

/// The header for a non-first fragment: only options whose copied flag is
/// set [RFC 791 § 3.1 "Options"], padded to a multiple of four bytes.
fn copied_options_header(header: &[u8]) -> Vec<u8> {
    let mut h = header[..20].to_vec();
    let opts = &header[20..];
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => break,
            1 => i += 1,
            t => {
                let len = usize::from(*opts.get(i + 1).unwrap_or(&0)).max(2);
                let end = (i + len).min(opts.len());
                if t & 0x80 != 0 {
                    h.extend_from_slice(&opts[i..end]);
                }
                i = end;
            }
        }
    }
    while !h.len().is_multiple_of(4) {
        h.push(0);
    }
    h[0] = 0x40 | (h.len() / 4) as u8;
    h
}

impl Element for Router {
    fn on_frame(&mut self, now: Instant, port: PortId, frame: &[u8], out: &mut Outbox) {
        self.last_now = now;
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return out.drop_frame(port, DropReason::Truncated);
        };
        let Some(me) = self.port(port) else {
            return out.drop_frame(port, DropReason::NoSuchPort);
        };
        if eth.src().is_multicast() {
            return out.drop_frame(port, DropReason::SrcMacMulticast);
        }
        if eth.dst() != me.mac && !eth.dst().is_multicast() {
            return out.drop_frame(port, DropReason::NotForUs);
        }
        match eth.ethertype() {
            EtherType::Arp => self.handle_arp(now, port, eth.payload(), out),
            EtherType::Ipv4 if eth.dst() == me.mac => self.handle_ipv4(now, port, frame, out),
            EtherType::Ipv4 => out.drop_frame(port, DropReason::NotForUs),
            _ => out.drop_frame(port, DropReason::UnsupportedEtherType),
        }
    }

    fn on_timer(&mut self, now: Instant, out: &mut Outbox) {
        self.last_now = now;
        let mut events = Vec::new();
        self.arp.on_timer(now, |e| events.push(e));
        for e in events {
            match e {
                ArpEvent::Retry { port, ip } => self.send_arp_request(port, ip, out),
                ArpEvent::Failed { port, ip, queued } => {
                    tracing::info!(%ip, "next hop did not answer ARP");
                    for pkt in queued {
                        if let Ok(p) = Ipv4Packet::new_checked(&pkt[..]) {
                            // The ICMP error goes back out of the port facing the source.
                            let back = self
                                .fib
                                .lookup(p.src())
                                .map(|(_, h)| h.port)
                                .unwrap_or(port);
                            self.send_error(now, back, IcmpError::HostUnreachable, &p, out);
                        }
                        out.drop_frame(port, DropReason::ArpTimeout);
                    }
                }
            }
        }
    }

    fn poll_at(&self) -> Option<Instant> {
        self.arp.poll_at()
    }

    fn report(&self) -> serde_json::Value {
        let fib: Vec<_> = self
            .fib
            .iter()
            .map(|(prefix, h)| {
                json!({
                    "prefix": prefix.to_string(),
                    "port": self.ports[h.port.index()].name,
                    "via": h.via.map(|v| v.to_string()),
                })
            })
            .collect();
        let arp = self.arp.report(self.last_now);
        json!({
            "fib": fib,
            "arp": arp,
            "arp_pending": self.arp.pending_len(),
            "originated": self.sent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use d11_wire::hex;
    use etherparse::{Icmpv4Type, NetSlice, SlicedPacket, TransportSlice};

    // Fixtures made by scapy (/usr/bin/python3, scapy 2.5), with
    // phone=02:00:00:00:00:02 radio=02:00:00:00:01:00 up=02:00:00:00:01:01 c1=02:00:00:00:02:00:
    // ARP_REQ:      Ether(dst=bcast, src=phone)/ARP(op=1, hwsrc=phone, psrc="10.45.0.2", pdst="10.45.0.1")
    // ARP_REPLY:    Ether(dst=phone, src=radio)/ARP(op=2, hwsrc=radio, psrc="10.45.0.1", hwdst=phone, pdst="10.45.0.2")
    // PING_IN:      Ether(dst=radio, src=phone)/IP(src="10.45.0.2", dst="203.0.113.10", ttl=64, id=1, flags="DF")/ICMP(id=1, seq=1)/(b"x"*32)
    // PING_OUT:     the same with Ether(dst=c1, src=up) and ttl=63
    // C1_ARP_REPLY: Ether(dst=up, src=c1)/ARP(op=2, hwsrc=c1, psrc="192.0.2.2", hwdst=up, pdst="192.0.2.1")
    const ARP_REQ: &str =
        "ffffffffffff020000000002080600010800060400010200000000020a2d00020000000000000a2d0001";
    const ARP_REPLY: &str =
        "020000000002020000000100080600010800060400020200000001000a2d00010200000000020a2d0002";
    const PING_IN: &str = "02000000010002000000000208004500003c000140004001f4860a2d0002cb00710a08007076000100017878787878787878787878787878787878787878787878787878787878787878";
    const PING_OUT: &str = "02000000020002000000010108004500003c000140003f01f5860a2d0002cb00710a08007076000100017878787878787878787878787878787878787878787878787878787878787878";
    const C1_ARP_REPLY: &str =
        "02000000010102000000020008060001080006040002020000000200c0000202020000000101c0000201";

    const RADIO: PortId = PortId(0);
    const UP: PortId = PortId(1);
    const PHONE_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
    const C1_MAC: MacAddr = MacAddr([2, 0, 0, 0, 2, 0]);

    fn a2() -> Router {
        Router::new(RouterConfig {
            ports: vec![
                RouterPort {
                    name: "radio".into(),
                    mac: MacAddr([2, 0, 0, 0, 1, 0]),
                    address: "10.45.0.1/16".parse().unwrap(),
                    mtu: 1400,
                },
                RouterPort {
                    name: "a2c1".into(),
                    mac: MacAddr([2, 0, 0, 0, 1, 1]),
                    address: "192.0.2.1/30".parse().unwrap(),
                    mtu: 1500,
                },
            ],
            routes: vec![StaticRoute {
                to: "0.0.0.0/0".parse().unwrap(),
                via: "192.0.2.2".parse().unwrap(),
            }],
        })
    }

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn frames(o: &Outbox) -> Vec<(PortId, Vec<u8>)> {
        o.frames().map(|(p, f)| (p, f.to_vec())).collect()
    }

    /// A router that already knows the phone and c1.
    fn warm() -> Router {
        let mut r = a2();
        let mut o = Outbox::new();
        r.on_frame(t(0), RADIO, &hex(ARP_REQ), &mut o);
        r.arp.insert(t(0), "192.0.2.2".parse().unwrap(), C1_MAC);
        r
    }

    /// A phone's IPv4 packet as a frame to the radio port, built by hand
    /// (checksums by our Ipv4Repr; the fixtures above pin that it is right).
    fn from_phone(dst: &str, ttl: u8, dont_frag: bool, payload: &[u8], proto: u8) -> Vec<u8> {
        let mut b = vec![];
        ethernet::emit_header(
            &mut b,
            MacAddr([2, 0, 0, 0, 1, 0]),
            PHONE_MAC,
            EtherType::Ipv4,
        );
        d11_wire::ipv4::Ipv4Repr {
            src: "10.45.0.2".parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol: proto,
            ttl,
            ident: 7,
            dont_frag,
            payload_len: payload.len(),
        }
        .emit(&mut b);
        b.extend_from_slice(payload);
        b
    }

    fn icmp_of(frame: &[u8]) -> (Ipv4Addr, Ipv4Addr, Icmpv4Type) {
        let s = SlicedPacket::from_ethernet(frame).expect("etherparse decodes it");
        let Some(NetSlice::Ipv4(ip)) = s.net else {
            panic!("not IPv4")
        };
        let Some(TransportSlice::Icmpv4(i)) = s.transport else {
            panic!("not ICMP")
        };
        (
            ip.header().source_addr(),
            ip.header().destination_addr(),
            i.icmp_type(),
        )
    }

    #[test]
    fn arp_request_for_the_port_address_gets_the_scapy_reply() {
        let mut r = a2();
        let mut o = Outbox::new();
        r.on_frame(t(0), RADIO, &hex(ARP_REQ), &mut o);
        assert_eq!(frames(&o), vec![(RADIO, hex(ARP_REPLY))]);
        assert_eq!(
            r.arp.lookup(t(1), "10.45.0.2".parse().unwrap()),
            Some(PHONE_MAC),
            "the asker is learned"
        );
    }

    #[test]
    fn first_packet_waits_for_arp_then_leaves_with_new_macs_and_ttl_one_lower() {
        let mut r = a2();
        let mut o = Outbox::new();
        r.on_frame(t(0), RADIO, &hex(PING_IN), &mut o);
        let f = frames(&o);
        assert_eq!(f.len(), 1);
        let want_req = {
            let mut b = vec![];
            ArpRepr::request(
                MacAddr([2, 0, 0, 0, 1, 1]),
                "192.0.2.1".parse().unwrap(),
                "192.0.2.2".parse().unwrap(),
            )
            .emit_frame(&mut b);
            b
        };
        assert_eq!(f[0], (UP, want_req));
        o.clear();
        r.on_frame(t(1), UP, &hex(C1_ARP_REPLY), &mut o);
        assert_eq!(
            frames(&o),
            vec![(UP, hex(PING_OUT))],
            "queued packet flushed, byte-identical to scapy's"
        );
        o.clear();
        r.on_frame(t(2), RADIO, &hex(PING_IN), &mut o);
        assert_eq!(
            frames(&o),
            vec![(UP, hex(PING_OUT))],
            "fast path gives the same bytes"
        );
        assert!(o.drops().is_empty());
    }

    #[test]
    fn ttl_one_is_answered_with_time_exceeded_from_the_ingress_address() {
        let mut r = warm();
        let mut o = Outbox::new();
        r.on_frame(
            t(1),
            RADIO,
            &from_phone("203.0.113.10", 1, false, &[0; 16], protocol::UDP),
            &mut o,
        );
        let f = frames(&o);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].0, RADIO);
        let (src, dst, ty) = icmp_of(&f[0].1);
        assert_eq!(
            (src.to_string(), dst.to_string()),
            ("10.45.0.1".into(), "10.45.0.2".into())
        );
        assert!(matches!(ty, Icmpv4Type::TimeExceeded(_)));
        assert_eq!(o.drops(), &[(RADIO, DropReason::TtlExpired)]);
    }

    #[test]
    fn no_route_gets_net_unreachable() {
        let mut r = Router::new(RouterConfig {
            routes: vec![],
            ..a2_config()
        });
        let mut o = Outbox::new();
        r.on_frame(t(0), RADIO, &hex(ARP_REQ), &mut o);
        o.clear();
        r.on_frame(
            t(1),
            RADIO,
            &from_phone("203.0.113.10", 64, false, &[0; 8], protocol::UDP),
            &mut o,
        );
        let (_, _, ty) = icmp_of(&frames(&o)[0].1);
        assert!(matches!(
            ty,
            Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Network)
        ));
        assert_eq!(o.drops(), &[(RADIO, DropReason::NoRoute)]);
    }

    fn a2_config() -> RouterConfig {
        RouterConfig {
            ports: a2().ports,
            routes: vec![],
        }
    }

    #[test]
    fn too_big_with_df_gets_fragmentation_needed_with_the_next_hop_mtu() {
        let mut cfg = a2_config();
        cfg.ports[1].mtu = 1280;
        cfg.routes = vec![StaticRoute {
            to: "0.0.0.0/0".parse().unwrap(),
            via: "192.0.2.2".parse().unwrap(),
        }];
        let mut r = Router::new(cfg);
        let mut o = Outbox::new();
        r.on_frame(t(0), RADIO, &hex(ARP_REQ), &mut o);
        o.clear();
        r.on_frame(
            t(1),
            RADIO,
            &from_phone("203.0.113.10", 64, true, &[1; 1300], protocol::UDP),
            &mut o,
        );
        let (_, _, ty) = icmp_of(&frames(&o)[0].1);
        assert!(matches!(
            ty,
            Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                    next_hop_mtu: 1280
                }
            )
        ));
        assert_eq!(o.drops(), &[(RADIO, DropReason::NeedsFragmentation)]);
    }

    #[test]
    fn too_big_without_df_is_fragmented_and_the_fragments_reassemble() {
        let mut cfg = a2_config();
        cfg.ports[1].mtu = 576;
        cfg.routes = vec![StaticRoute {
            to: "0.0.0.0/0".parse().unwrap(),
            via: "192.0.2.2".parse().unwrap(),
        }];
        let mut r = Router::new(cfg);
        r.arp.insert(t(0), "192.0.2.2".parse().unwrap(), C1_MAC);
        let payload: Vec<u8> = (0..1300u32).map(|i| i as u8).collect();
        let mut o = Outbox::new();
        r.on_frame(
            t(1),
            RADIO,
            &from_phone("203.0.113.10", 64, false, &payload, protocol::UDP),
            &mut o,
        );
        let f = frames(&o);
        assert_eq!(f.len(), 3);
        let mut joined = vec![0u8; payload.len()];
        for (i, (port, frame)) in f.iter().enumerate() {
            assert_eq!(*port, UP);
            assert!(frame.len() - 14 <= 576);
            let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
            assert!(ip.verify_checksum());
            assert_eq!(ip.ttl(), 63);
            assert_eq!(ip.more_frags(), i < 2);
            joined[ip.frag_offset()..ip.frag_offset() + ip.payload().len()]
                .copy_from_slice(ip.payload());
        }
        assert_eq!(joined, payload);
    }

    #[test]
    fn an_unanswered_next_hop_is_retried_then_reported_host_unreachable() {
        let mut r = a2();
        let mut o = Outbox::new();
        r.on_frame(t(0), RADIO, &hex(ARP_REQ), &mut o);
        r.on_frame(t(0), RADIO, &hex(PING_IN), &mut o);
        o.clear();
        let mut now = t(0);
        let mut requests = 0;
        while let Some(at) = r.poll_at() {
            now = at;
            r.on_timer(now, &mut o);
            requests += o.frames().filter(|(p, _)| *p == UP).count();
            if o.drops().is_empty() {
                o.clear();
            } else {
                break;
            }
        }
        assert_eq!(requests, 2, "two retries after the first request");
        assert_eq!(now, t(3000));
        assert_eq!(o.drops(), &[(UP, DropReason::ArpTimeout)]);
        let (src, _, ty) = icmp_of(&frames(&o).iter().find(|(p, _)| *p == RADIO).unwrap().1);
        assert_eq!(src.to_string(), "10.45.0.1");
        assert!(matches!(
            ty,
            Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Host)
        ));
    }

    #[test]
    fn echo_requests_to_the_router_are_answered() {
        let mut r = warm();
        let mut o = Outbox::new();
        let mut echo = vec![];
        icmp::emit_icmp(&mut echo, icmp::ECHO_REQUEST, 0, [0, 9, 0, 1], b"hello");
        r.on_frame(
            t(1),
            RADIO,
            &from_phone("192.0.2.1", 64, false, &echo, protocol::ICMP),
            &mut o,
        );
        let f = frames(&o);
        let (src, dst, ty) = icmp_of(&f[0].1);
        assert_eq!(
            (src.to_string(), dst.to_string()),
            ("192.0.2.1".into(), "10.45.0.2".into())
        );
        assert!(matches!(ty, Icmpv4Type::EchoReply(e) if e.id == 9 && e.seq == 1));
        assert_eq!(&f[0].1[..6], &PHONE_MAC.0);
    }

    #[test]
    fn bad_frames_are_counted_drops_with_their_reason() {
        let mut r = warm();
        let mut o = Outbox::new();
        let good = hex(PING_IN);
        let mut cases: Vec<(Vec<u8>, DropReason)> = vec![
            (good[..10].to_vec(), DropReason::Truncated),
            (good[..30].to_vec(), DropReason::Truncated),
            (good[..40].to_vec(), DropReason::Malformed), // total length beyond the frame
            (vec![0; 2000], DropReason::NotForUs),
        ];
        let mut bad_sum = good.clone();
        bad_sum[24] ^= 0xff;
        cases.push((bad_sum, DropReason::BadChecksum));
        let mut v6 = good.clone();
        v6[14] = 0x65;
        cases.push((v6, DropReason::Malformed));
        let mut mc = good.clone();
        mc[6] = 0x01;
        cases.push((mc, DropReason::SrcMacMulticast));
        let mut big = from_phone("203.0.113.10", 64, false, &[0; 1500], protocol::UDP);
        big.truncate(14 + 1401);
        let len = (big.len() - 14) as u16;
        big[16..18].copy_from_slice(&len.to_be_bytes());
        cases.push((big, DropReason::Oversize));
        let mut ipv6 = good.clone();
        ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
        cases.push((ipv6, DropReason::UnsupportedEtherType));
        for (frame, reason) in cases {
            o.clear();
            r.on_frame(t(1), RADIO, &frame, &mut o);
            assert_eq!(o.drops(), &[(RADIO, reason)], "{reason:?}");
            assert_eq!(o.frames().count(), 0, "{reason:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(frame in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1600), port in 0u16..3) {
            let mut r = warm();
            let mut o = Outbox::new();
            r.on_frame(t(1), PortId(port), &frame, &mut o);
            r.on_timer(t(5000), &mut o);
        }

        #[test]
        fn mutated_ping_never_panics(i in 14usize..74, v in proptest::prelude::any::<u8>()) {
            let mut r = warm();
            let mut f = hex(PING_IN);
            f[i] = v;
            let mut o = Outbox::new();
            r.on_frame(t(1), RADIO, &f, &mut o);
        }
    }
}
