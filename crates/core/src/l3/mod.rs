//! The IP layer every addressed element shares: its addresses, ARP, routing
//! of what it sends, ICMP it owes, and local delivery to its own transports.
//!
//! Read RFC 1812 first: § 5.2–5.3 for the checks a packet passes before it
//! is forwarded or delivered, § 4.3 for the ICMP a router originates (and
//! § 4.3.2.7–8 on when not to, and how fast), § 3.3.2 (RFC 826 ARP with a
//! queue per unresolved next hop, RFC 1122 § 2.3.2.2). Then RFC 768 and
//! RFC 9293 for the two transports an element's control planes use.
//!
//! An element owns one [`L3`] (a router, a mobile gateway, the cloud
//! gateway, a vSwitch's underlay, the simulator's host). [`L3::input`]
//! takes a frame from one of its ports and answers what it is:
//! ARP, ping and the element's own transports are handled here
//! ([`Input::Done`]); UDP to a port the element claimed for a tunnel
//! (GTP-U, VXLAN) comes back as [`Input::Tunnel`]; other packets to its
//! addresses as [`Input::Local`]; packets for someone else as
//! [`Input::Transit`], which a router forwards and an endpoint drops.
//! Everything it sends goes out through [`L3::send_ip`]: a FIB lookup, then
//! the next hop's MAC or a queue behind ARP. One ARP loop, one ICMP error
//! path and one IP identification counter serve every element.
//!
//! Transports (sans-IO, like the rest): UDP by port through a small socket
//! table ([`udp`]), TCP through smoltcp with this layer as its IP device
//! ([`tcp`]), SCTP through associations of our own ([`sctp`]). A control
//! plane is a state machine that reads and writes those sockets; the
//! element calls [`L3::poll`] after it ran.

pub mod sctp;
pub mod tcp;
pub mod udp;

use crate::arp::{ArpCache, ArpConfig, ArpEvent, Enqueued};
use crate::fib::Fib;
use crate::ratelimit::TokenBucket;
use crate::{Ctx, DropReason, Instant, Outbox, PortId};
use d11_wire::arp::{ArpOp, ArpRepr};
use d11_wire::ethernet::{self, EtherType, EthernetFrame};
use d11_wire::icmp::{self, IcmpError};
use d11_wire::ipv4::{protocol, Ipv4Packet, Ipv4Repr};
use d11_wire::udp::{UdpPacket, UdpRepr};
use d11_wire::{Ipv4Cidr, MacAddr};
pub use sctp::{AssocId, SctpStack};
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddrV4};
pub use tcp::{TcpHandle, TcpStack, TcpState};
use udp::UdpSockets;
pub use udp::{Datagram, UdpHandle};

/// TTL of the packets an element originates.
pub const DEFAULT_TTL: u8 = 64;

/// One addressed port: its MAC, its address and subnet, its MTU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L3Port {
    pub name: String,
    pub mac: MacAddr,
    pub address: Ipv4Cidr,
    pub mtu: u16,
}

/// Where a route came from, as `d11 show NODE fib` marks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteSource {
    /// A port's own subnet.
    Connected,
    /// Written in the topology.
    Static,
    /// Learned by the element's BGP speaker: its best route to the prefix
    /// [RFC 4271 § 9.1.3]. Never replaces a connected or static route to the
    /// same prefix (those are preferred, as a router's administrative
    /// distance has it).
    Bgp,
}

/// Where the FIB sends a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NextHop {
    pub port: PortId,
    /// `None` for a connected subnet: the destination itself is the neighbour.
    pub via: Option<Ipv4Addr>,
    pub source: RouteSource,
}

/// A static route that names a `via` on none of the connected subnets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("route to {to}: {via} is on no connected subnet")]
pub struct UnreachableVia {
    pub to: Ipv4Cidr,
    pub via: Ipv4Addr,
}

/// What a frame given to [`L3::input`] turned out to be.
#[derive(Debug)]
pub enum Input<'a> {
    /// Handled (ARP, an echo request, a local transport, an ICMP error
    /// sent) or dropped with its reason recorded.
    Done,
    /// A checked IPv4 packet for another host: a router forwards it.
    Transit(Ipv4Packet<&'a [u8]>),
    /// A checked IPv4 packet to one of our addresses with a protocol the
    /// layer does not terminate (an ICMP reply or error, ESP, …).
    Local(Ipv4Packet<&'a [u8]>),
    /// UDP to one of our addresses on a port claimed with
    /// [`L3::claim_udp`]: a tunnel's data plane, handled in place.
    Tunnel {
        port: PortId,
        ip: Ipv4Packet<&'a [u8]>,
        udp: UdpPacket<&'a [u8]>,
    },
}

/// What the layer originated itself, shown in reports as `originated`
/// [RFC 1812 § 4.3]; the token bucket is the § 4.3.2.8 rate limit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Originated {
    #[serde(skip, default = "TokenBucket::icmp_errors")]
    tokens: TokenBucket,
    pub echo_replies: u64,
    pub time_exceeded: u64,
    pub unreachable: u64,
    pub frag_needed: u64,
    pub rate_limited: u64,
    pub fragments: u64,
}

impl Default for Originated {
    fn default() -> Originated {
        Originated {
            tokens: TokenBucket::icmp_errors(),
            echo_replies: 0,
            time_exceeded: 0,
            unreachable: 0,
            frag_needed: 0,
            rate_limited: 0,
            fragments: 0,
        }
    }
}

impl Originated {
    /// True if the error `err` about `ip` may be sent now: RFC 1812 allows
    /// one about this packet and the bucket has a token. Counts it, or the
    /// refusal by rate.
    fn admit_error(&mut self, now: Instant, err: IcmpError, ip: &Ipv4Packet<&[u8]>) -> bool {
        if !icmp::may_send_error_about(ip) {
            return false;
        }
        if !self.tokens.take(now) {
            self.rate_limited += 1;
            return false;
        }
        match err {
            IcmpError::TtlExceeded => self.time_exceeded += 1,
            IcmpError::FragmentationNeeded { .. } => self.frag_needed += 1,
            _ => self.unreachable += 1,
        }
        true
    }
}

/// One FIB row of a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FibRow {
    pub prefix: Ipv4Cidr,
    pub port: String,
    pub via: Option<Ipv4Addr>,
    pub source: RouteSource,
}

/// One ARP cache row of a report, like `ip neigh`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArpRow {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
}

/// The layer's tables, as an element's report carries them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct L3Report {
    /// The FIB's first [`REPORT_ROWS`](crate::status::REPORT_ROWS) routes
    /// (most specific first); [`L3::fib_rows`] has them all.
    pub fib: Vec<FibRow>,
    /// How many routes the FIB holds.
    #[serde(default)]
    pub fib_routes: usize,
    pub arp: Vec<ArpRow>,
    pub arp_pending: usize,
    pub originated: Originated,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sockets: Vec<SocketRow>,
}

/// One open socket of the element's own transports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketRow {
    /// `udp` or `tcp`.
    pub proto: String,
    pub local: String,
    pub remote: Option<String>,
    /// TCP's state as RFC 9293 names it; UDP's datagrams waiting.
    pub state: String,
}

#[derive(Debug)]
struct PortState {
    cfg: L3Port,
    /// The MAC our ARP replies give for the port's address (the port's
    /// own unless [`L3::answer_arp_with`] changed it).
    arp_mac: MacAddr,
    /// Other addresses answered by ARP on this port (a gateway's VIPs),
    /// which are not ours to deliver locally.
    proxied: Vec<Ipv4Addr>,
}

/// An element's IP layer.
#[derive(Debug)]
pub struct L3 {
    /// By port number; `None` for ports the layer does not own (a
    /// vSwitch's VM ports).
    ports: Vec<Option<PortState>>,
    fib: Fib<NextHop>,
    arp: ArpCache,
    ident: u16,
    originated: Originated,
    /// UDP ports handed back as [`Input::Tunnel`].
    tunnels: Vec<u16>,
    udp: UdpSockets,
    /// Made when the first TCP segment arrives or a socket is opened.
    tcp: Option<TcpStack>,
    /// Made when the first SCTP packet arrives or an association is opened.
    sctp: Option<SctpStack>,
    /// UDP to a port no socket holds comes back as [`Input::Local`]
    /// instead of a port unreachable.
    unbound_udp_to_element: bool,
    /// Latest time seen, for reports (ARP entries still valid).
    last_now: Instant,
    /// Reused for every packet the layer builds.
    scratch: Vec<u8>,
}

impl L3 {
    /// A layer over `ports` (by port number, `None` where the element keeps
    /// the port to itself), with a connected route per addressed port.
    pub fn new(ports: Vec<Option<L3Port>>) -> L3 {
        let mut fib = Fib::new();
        for (i, p) in ports.iter().enumerate() {
            if let Some(p) = p {
                fib.insert(
                    p.address.network(),
                    NextHop {
                        port: PortId(i as u16),
                        via: None,
                        source: RouteSource::Connected,
                    },
                );
            }
        }
        L3 {
            ports: ports
                .into_iter()
                .map(|p| {
                    p.map(|cfg| PortState {
                        arp_mac: cfg.mac,
                        proxied: Vec::new(),
                        cfg,
                    })
                })
                .collect(),
            fib,
            arp: ArpCache::new(ArpConfig::default()),
            ident: 0,
            originated: Originated::default(),
            tunnels: Vec::new(),
            udp: UdpSockets::default(),
            tcp: None,
            sctp: None,
            unbound_udp_to_element: false,
            last_now: Instant::ZERO,
            scratch: Vec::new(),
        }
    }

    /// A layer whose every port is addressed.
    pub fn with_ports(ports: Vec<L3Port>) -> L3 {
        L3::new(ports.into_iter().map(Some).collect())
    }

    /// Adds a route to `to` through the neighbour `via`, out of the port
    /// whose subnet holds `via`.
    pub fn add_route(
        &mut self,
        to: Ipv4Cidr,
        via: Ipv4Addr,
        source: RouteSource,
    ) -> Result<(), UnreachableVia> {
        let port = self
            .ports
            .iter()
            .position(|p| p.as_ref().is_some_and(|p| p.cfg.address.contains(via)))
            .ok_or(UnreachableVia { to, via })?;
        self.fib.insert(
            to,
            NextHop {
                port: PortId(port as u16),
                via: Some(via),
                source,
            },
        );
        Ok(())
    }

    /// Removes the route to exactly `to`, if there is one.
    pub fn remove_route(&mut self, to: Ipv4Cidr) -> Option<NextHop> {
        self.fib.remove(to)
    }

    /// The route to exactly `to`, if there is one.
    pub fn route(&self, to: Ipv4Cidr) -> Option<NextHop> {
        self.fib.get(to).copied()
    }

    /// Installs a routing protocol's route to `to` through the neighbour
    /// `via` (out of the port whose subnet holds it), unless a connected or
    /// static route to exactly `to` is there: false then, or when `via` is
    /// on no connected subnet.
    pub fn install_learned(&mut self, to: Ipv4Cidr, via: Ipv4Addr, source: RouteSource) -> bool {
        if self
            .fib
            .get(to)
            .is_some_and(|h| matches!(h.source, RouteSource::Connected | RouteSource::Static))
        {
            return false;
        }
        self.add_route(to, via, source).is_ok()
    }

    /// Removes the route to exactly `to` if `source` put it there.
    pub fn remove_learned(&mut self, to: Ipv4Cidr, source: RouteSource) -> bool {
        if self.fib.get(to).is_some_and(|h| h.source == source) {
            self.fib.remove(to);
            true
        } else {
            false
        }
    }

    /// The neighbour a packet to `ip` is handed to when `ip` is a learned
    /// route's next hop: `ip` itself on a connected subnet, else the `via`
    /// of the connected or static route that covers it (one recursive step,
    /// never through a learned route) [RFC 4271 § 5.1.3, § 9.1.2.1].
    pub fn resolve_next_hop(&self, ip: Ipv4Addr) -> Option<Ipv4Addr> {
        if self.is_local(ip) {
            return None;
        }
        let on_link = self.ports().any(|(_, p)| {
            p.address.contains(ip)
                && ip != p.address.broadcast()
                && ip != p.address.network().addr()
        });
        if on_link {
            return Some(ip);
        }
        self.fib
            .iter()
            .filter(|(p, h)| h.source == RouteSource::Static && p.contains(ip))
            .max_by_key(|(p, _)| p.prefix_len())
            .and_then(|(_, h)| h.via)
    }

    /// How many routes the FIB holds.
    pub fn fib_len(&self) -> usize {
        self.fib.len()
    }

    /// The most specific route to `dst`.
    #[inline]
    pub fn lookup(&self, dst: Ipv4Addr) -> Option<(Ipv4Cidr, NextHop)> {
        self.fib.lookup(dst).map(|(p, h)| (p, *h))
    }

    /// Answers ARP for `port`'s address with `mac` instead of the port's
    /// own (the eNB answers for the UE's gateway with the PGW's MAC).
    /// Frames sent from the port keep the port's MAC as source.
    pub fn answer_arp_with(&mut self, port: PortId, mac: MacAddr) {
        if let Some(Some(p)) = self.ports.get_mut(port.index()) {
            p.arp_mac = mac;
        }
    }

    /// Answers ARP on `port` for `ip` too, an address the element holds
    /// without delivering to itself (a VIP it translates).
    pub fn answer_arp_for(&mut self, port: PortId, ip: Ipv4Addr) {
        if let Some(Some(p)) = self.ports.get_mut(port.index()) {
            p.proxied.push(ip);
        }
    }

    /// Hands UDP to `port` on our addresses back as [`Input::Tunnel`].
    pub fn claim_udp(&mut self, port: u16) {
        if !self.tunnels.contains(&port) {
            self.tunnels.push(port);
        }
    }

    /// Hands UDP to ports no socket is bound to back as [`Input::Local`]
    /// instead of answering port unreachable: a test host that listens on
    /// every port.
    pub fn deliver_unbound_udp(&mut self) {
        self.unbound_udp_to_element = true;
    }

    #[inline]
    pub fn port(&self, p: PortId) -> Option<&L3Port> {
        self.ports.get(p.index())?.as_ref().map(|s| &s.cfg)
    }

    /// The addressed ports with their numbers.
    pub fn ports(&self) -> impl Iterator<Item = (PortId, &L3Port)> {
        self.ports
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().map(|p| (PortId(i as u16), &p.cfg)))
    }

    /// True if `ip` is one of our port addresses.
    #[inline]
    pub fn is_local(&self, ip: Ipv4Addr) -> bool {
        self.ports
            .iter()
            .flatten()
            .any(|p| p.cfg.address.addr() == ip)
    }

    /// The next IP identification for a packet we originate [RFC 6864].
    #[inline]
    pub fn next_ident(&mut self) -> u16 {
        self.ident = self.ident.wrapping_add(1);
        self.ident
    }

    /// Counts a fragment sent, for the report.
    fn count_fragment(&mut self) {
        self.originated.fragments += 1;
    }

    /// The MAC of `ip` if ARP knows it now.
    #[inline]
    pub fn resolved(&self, now: Instant, ip: Ipv4Addr) -> Option<MacAddr> {
        self.arp.lookup(now, ip)
    }

    /// Learns `ip` at `mac` (a test, or a neighbour a controller pushes).
    pub fn learn(&mut self, now: Instant, ip: Ipv4Addr, mac: MacAddr) {
        self.arp.insert(now, ip, mac);
    }

    /// Classifies a frame from `port` and handles what is the layer's: the
    /// checks of RFC 1812 § 5.2–5.3 on the frame and the IP header, ARP,
    /// echo requests and the local transports. See [`Input`].
    #[inline(always)]
    pub fn input<'a>(
        &mut self,
        cx: &mut Ctx,
        port: PortId,
        frame: &'a [u8],
        out: &mut Outbox,
    ) -> Input<'a> {
        self.last_now = cx.now;
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            out.drop_frame(port, DropReason::Truncated);
            return Input::Done;
        };
        let Some(me) = self.port(port) else {
            out.drop_frame(port, DropReason::NoSuchPort);
            return Input::Done;
        };
        let (mac, mtu) = (me.mac, me.mtu);
        if eth.src().is_multicast() {
            out.drop_frame(port, DropReason::SrcMacMulticast);
            return Input::Done;
        }
        if eth.dst() != mac && !eth.dst().is_multicast() {
            out.drop_frame(port, DropReason::NotForUs);
            return Input::Done;
        }
        match eth.ethertype() {
            EtherType::Arp => {
                self.arp_input(cx, port, &frame[ethernet::HEADER_LEN..], out);
                Input::Done
            }
            EtherType::Ipv4 if eth.dst() == mac => {
                if frame.len() > usize::from(mtu) + ethernet::HEADER_LEN {
                    out.drop_frame(port, DropReason::Oversize);
                    return Input::Done;
                }
                self.ip_input(cx, port, &frame[ethernet::HEADER_LEN..], out)
            }
            EtherType::Ipv4 => {
                out.drop_frame(port, DropReason::NotForUs);
                Input::Done
            }
            _ => {
                out.drop_frame(port, DropReason::UnsupportedEtherType);
                Input::Done
            }
        }
    }

    /// The IPv4 checks and the local/transit split for a packet from `port`.
    #[inline(always)]
    pub fn ip_input<'a>(
        &mut self,
        cx: &mut Ctx,
        port: PortId,
        packet: &'a [u8],
        out: &mut Outbox,
    ) -> Input<'a> {
        let ip = match checked_ipv4(packet) {
            Ok(ip) => ip,
            Err(r) => {
                out.drop_frame(port, r);
                return Input::Done;
            }
        };
        let (src, dst) = (ip.src(), ip.dst());
        if src.is_multicast() || src.is_broadcast() || src.is_loopback() || src.is_unspecified() {
            out.drop_frame(port, DropReason::Martian);
            return Input::Done;
        }
        if self.is_local(dst) {
            return self.deliver_local(cx, port, ip, out);
        }
        let directed = self
            .port(port)
            .is_some_and(|p| dst == p.address.broadcast());
        if dst.is_broadcast() || dst.is_multicast() || directed {
            // Not forwarded: directed broadcasts are off [RFC 2644].
            out.drop_frame(port, DropReason::NotForUs);
            return Input::Done;
        }
        Input::Transit(ip)
    }

    /// A packet to one of our addresses: echo requests are answered, UDP
    /// goes to a claimed tunnel port or a bound socket (else port
    /// unreachable, as a traceroute to the element expects), TCP to the TCP
    /// stack (which resets what no socket takes); the rest is the element's.
    #[inline(always)]
    fn deliver_local<'a>(
        &mut self,
        cx: &mut Ctx,
        port: PortId,
        ip: Ipv4Packet<&'a [u8]>,
        out: &mut Outbox,
    ) -> Input<'a> {
        if ip.protocol() == protocol::ICMP {
            let mut pkt = std::mem::take(&mut self.scratch);
            pkt.clear();
            let echo = self.build_echo_reply(&ip, &mut pkt);
            if echo {
                self.send_ip(cx, port, &pkt, out);
            }
            self.scratch = pkt;
            if echo {
                return Input::Done;
            }
        }
        let whole = ip.frag_offset() == 0 && !ip.more_frags();
        match ip.protocol() {
            protocol::UDP if whole => {
                let Some(udp) = UdpPacket::new_checked(ip.payload_ref()).ok() else {
                    out.drop_frame(port, DropReason::Malformed);
                    return Input::Done;
                };
                if !udp.verify_checksum(ip.src(), ip.dst()) {
                    out.drop_frame(port, DropReason::BadChecksum);
                    return Input::Done;
                }
                if self.tunnels.contains(&udp.dst_port()) {
                    return Input::Tunnel { port, ip, udp };
                }
                if self.unbound_udp_to_element && !self.udp.is_bound(ip.dst(), udp.dst_port()) {
                    return Input::Local(ip);
                }
                let d = Datagram {
                    port,
                    from: SocketAddrV4::new(ip.src(), udp.src_port()),
                    to: SocketAddrV4::new(ip.dst(), udp.dst_port()),
                    payload: udp.payload().to_vec(),
                };
                match self.udp.deliver(d) {
                    udp::Delivered::Queued => {}
                    udp::Delivered::QueueFull => out.drop_frame(port, DropReason::SocketFull),
                    udp::Delivered::NoSocket => {
                        self.icmp_error_from(
                            cx,
                            port,
                            ip.dst(),
                            IcmpError::PortUnreachable,
                            &ip,
                            out,
                        );
                        out.drop_frame(port, DropReason::UnsupportedProtocol);
                    }
                }
                Input::Done
            }
            protocol::TCP if whole => {
                let tcp = self.tcp_stack(cx);
                tcp.receive(ip.packet());
                self.poll(cx, out);
                Input::Done
            }
            protocol::SCTP if whole => {
                let (src, dst) = (ip.src(), ip.dst());
                if let Err(reason) = self.sctp_stack(cx).receive(cx, src, dst, ip.payload_ref()) {
                    out.drop_frame(port, reason);
                }
                self.poll(cx, out);
                Input::Done
            }
            protocol::UDP | protocol::TCP | protocol::SCTP => {
                // No reassembly for the element's own transports.
                out.drop_frame(port, DropReason::UnsupportedProtocol);
                Input::Done
            }
            _ => Input::Local(ip),
        }
    }

    /// RFC 826 "Packet reception" for the port's address (and the
    /// addresses proxied on it): learn the sender if it is known or
    /// awaited, add it if we are the target, answer a request for us, and
    /// send what waited for the sender.
    pub fn arp_input(&mut self, cx: &mut Ctx, port: PortId, payload: &[u8], out: &mut Outbox) {
        let Ok(arp) = ArpRepr::parse(payload) else {
            return out.drop_frame(port, DropReason::Malformed);
        };
        let Some(Some(me)) = self.ports.get(port.index()) else {
            return;
        };
        let addr = me.cfg.address.addr();
        let ours = arp.target_ip == addr || me.proxied.contains(&arp.target_ip);
        let answer = if arp.target_ip == addr {
            me.arp_mac
        } else {
            me.cfg.mac
        };
        let flushed = if ours {
            self.arp.insert(cx.now, arp.sender_ip, arp.sender_mac)
        } else {
            self.arp.refresh(cx.now, arp.sender_ip, arp.sender_mac)
        };
        if let Some((egress, queue)) = flushed {
            for pkt in queue {
                self.transmit_ip(egress, arp.sender_mac, &pkt, out);
            }
        }
        if ours && arp.op == ArpOp::Request {
            out.build(port, |b| arp.reply_from(answer).emit_frame(b));
        }
    }

    /// Routes a packet the element originated (an ICMP answer, a tunnel's
    /// packet, a control plane's segment): FIB lookup, then ARP or the
    /// queue behind it. Drops are counted on `ingress`.
    #[inline]
    pub fn send_ip(&mut self, cx: &mut Ctx, ingress: PortId, pkt: &[u8], out: &mut Outbox) {
        let Ok(ip) = Ipv4Packet::new_checked(pkt) else {
            return;
        };
        self.send_ip_to(cx, ingress, ip.dst(), pkt, out);
    }

    /// [`L3::send_ip`] for a packet built here whose destination the
    /// caller knows (a tunnel's outer packet): no parse on the way out.
    #[inline]
    pub fn send_ip_to(
        &mut self,
        cx: &mut Ctx,
        ingress: PortId,
        dst: Ipv4Addr,
        pkt: &[u8],
        out: &mut Outbox,
    ) {
        let Some((_, hop)) = self.lookup(dst) else {
            return out.drop_frame(ingress, DropReason::NoRoute);
        };
        self.send_via(cx, ingress, hop, dst, pkt, out);
    }

    /// Sends `pkt` to `dst` through `hop`: at once if its next hop's MAC
    /// is known, else behind an ARP request.
    #[inline]
    pub fn send_via(
        &mut self,
        cx: &mut Ctx,
        ingress: PortId,
        hop: NextHop,
        dst: Ipv4Addr,
        pkt: &[u8],
        out: &mut Outbox,
    ) {
        let next = hop.via.unwrap_or(dst);
        match self.arp.lookup(cx.now, next) {
            Some(mac) => self.transmit_ip(hop.port, mac, pkt, out),
            None => self.queue_behind_arp(cx, ingress, hop.port, next, pkt, out),
        }
    }

    /// Queues `pkt` behind an ARP request for `next` on `egress`.
    pub fn queue_behind_arp(
        &mut self,
        cx: &mut Ctx,
        ingress: PortId,
        egress: PortId,
        next: Ipv4Addr,
        pkt: &[u8],
        out: &mut Outbox,
    ) {
        match self.arp.enqueue(cx.now, egress, next, pkt) {
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
    #[inline]
    pub fn transmit_ip(&self, egress: PortId, dst_mac: MacAddr, pkt: &[u8], out: &mut Outbox) {
        if let Some(p) = self.port(egress) {
            out.build(egress, |b| {
                ethernet::emit_header(b, dst_mac, p.mac, EtherType::Ipv4);
                b.extend_from_slice(pkt);
            });
        }
    }

    /// Sends an ICMP error about `ip` from the address of `port` (where it
    /// came in), if RFC 1812 and the rate limit allow.
    pub fn icmp_error(
        &mut self,
        cx: &mut Ctx,
        port: PortId,
        err: IcmpError,
        ip: &Ipv4Packet<&[u8]>,
        out: &mut Outbox,
    ) {
        let Some(from) = self.port(port).map(|p| p.address.addr()) else {
            return;
        };
        self.icmp_error_from(cx, port, from, err, ip, out);
    }

    /// [`L3::icmp_error`] from the address `from`.
    pub fn icmp_error_from(
        &mut self,
        cx: &mut Ctx,
        port: PortId,
        from: Ipv4Addr,
        err: IcmpError,
        ip: &Ipv4Packet<&[u8]>,
        out: &mut Outbox,
    ) {
        let mut pkt = std::mem::take(&mut self.scratch);
        pkt.clear();
        if self.build_icmp_error(cx, from, err, ip, &mut pkt) {
            self.send_ip(cx, port, &pkt, out);
        }
        self.scratch = pkt;
    }

    /// Appends to `pkt` the ICMP error `err` about `ip` from `from`, if RFC
    /// 1812 § 4.3.2.7 and the rate limit allow one (true then): for an
    /// element that sends it its own way (the PGW, into the UE's tunnel).
    /// No error is ever sent about a packet we sent ourselves.
    pub fn build_icmp_error(
        &mut self,
        cx: &mut Ctx,
        from: Ipv4Addr,
        err: IcmpError,
        ip: &Ipv4Packet<&[u8]>,
        pkt: &mut Vec<u8>,
    ) -> bool {
        if self.is_local(ip.src()) || !self.originated.admit_error(cx.now, err, ip) {
            return false;
        }
        let ident = self.next_ident();
        icmp::emit_error(pkt, from, ident, err, ip);
        true
    }

    /// Appends to `pkt` the echo reply to `ip` if it is an echo request
    /// (true then), from the address it was sent to [RFC 792 p. 14]: for an
    /// element that answers for addresses the layer does not hold (a VPC's
    /// gateway).
    pub fn build_echo_reply(&mut self, ip: &Ipv4Packet<&[u8]>, pkt: &mut Vec<u8>) -> bool {
        let Some(req) = icmp::as_echo_request(ip) else {
            return false;
        };
        let ident = self.next_ident();
        icmp::emit_echo_reply(pkt, ip.dst(), ip.src(), ident, req);
        self.originated.echo_replies += 1;
        true
    }

    /// Splits a packet whose DF bit is clear into fragments that fit `mtu`
    /// and sends them through `hop` [RFC 791 § 3.2 "Fragmentation"; RFC 1812
    /// § 5.2.6]. Options without the copy flag stay in the first fragment.
    pub fn send_fragments(
        &mut self,
        cx: &mut Ctx,
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
        let dst = ip.dst();
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
            self.count_fragment();
            self.send_via(cx, ingress, hop, dst, &frag, out);
            off = end;
        }
    }

    /// Binds a UDP socket to `port` on `addr` (any of ours when `None`).
    pub fn udp_bind(
        &mut self,
        addr: Option<Ipv4Addr>,
        port: u16,
    ) -> Result<UdpHandle, udp::AddrInUse> {
        self.udp.bind(addr, port)
    }

    /// The next datagram a UDP socket received, if any.
    pub fn udp_recv(&mut self, h: UdpHandle) -> Option<Datagram> {
        self.udp.recv(h)
    }

    /// Sends a UDP datagram (with its checksum) from `from` to `to`.
    pub fn udp_send(
        &mut self,
        cx: &mut Ctx,
        from: SocketAddrV4,
        to: SocketAddrV4,
        payload: &[u8],
        out: &mut Outbox,
    ) {
        let repr = UdpRepr {
            src_port: from.port(),
            dst_port: to.port(),
            payload_len: payload.len(),
        };
        let ident = self.next_ident();
        let mut pkt = std::mem::take(&mut self.scratch);
        pkt.clear();
        Ipv4Repr {
            src: *from.ip(),
            dst: *to.ip(),
            protocol: protocol::UDP,
            ttl: DEFAULT_TTL,
            ident,
            dont_frag: false,
            payload_len: repr.buffer_len() + payload.len(),
        }
        .emit(&mut pkt);
        repr.emit_with_checksum(&mut pkt, *from.ip(), *to.ip(), payload);
        let ingress = self.egress_for(*to.ip());
        self.send_ip(cx, ingress, &pkt, out);
        self.scratch = pkt;
    }

    /// The port a packet to `dst` leaves by (drops of what we originate
    /// are counted there), port 0 when there is no route.
    fn egress_for(&self, dst: Ipv4Addr) -> PortId {
        self.lookup(dst).map_or(PortId(0), |(_, h)| h.port)
    }

    /// The element's TCP stack, made on first use with our addresses.
    pub fn tcp_stack(&mut self, cx: &mut Ctx) -> &mut TcpStack {
        if self.tcp.is_none() {
            let addrs: Vec<Ipv4Cidr> = self.ports().map(|(_, p)| p.address).collect();
            let mtu = self.ports().map(|(_, p)| p.mtu).min().unwrap_or(1500);
            self.tcp = Some(TcpStack::new(&addrs, mtu, cx.rng.next_u64(), cx.now));
        }
        self.tcp.as_mut().expect("made above")
    }

    /// The element's SCTP endpoint if one was made (for reports).
    pub fn sctp(&self) -> Option<&SctpStack> {
        self.sctp.as_ref()
    }

    /// The element's SCTP endpoint, made on first use.
    pub fn sctp_stack(&mut self, cx: &mut Ctx) -> &mut SctpStack {
        if self.sctp.is_none() {
            let mtu = self.ports().map(|(_, p)| p.mtu).min().unwrap_or(1500);
            self.sctp = Some(SctpStack::new(cx, usize::from(mtu)));
        }
        self.sctp.as_mut().expect("made above")
    }

    /// The TCP stack, to look at, if there is one.
    pub fn tcp_ref(&self) -> Option<&TcpStack> {
        self.tcp.as_ref()
    }

    /// The element's TCP stack if a socket or a segment made it already.
    pub fn tcp_stack_if_made(&mut self) -> Option<&mut TcpStack> {
        self.tcp.as_mut()
    }

    /// Runs the transports (segments due, timers) and sends what they have
    /// to send. Call it after a control plane wrote to or read from a socket.
    pub fn poll(&mut self, cx: &mut Ctx, out: &mut Outbox) {
        self.poll_sctp(cx, out);
        let Some(tcp) = self.tcp.as_mut() else {
            return;
        };
        let sent = tcp.poll(cx.now);
        for pkt in sent {
            let dst = Ipv4Packet::new_checked(&pkt[..]).map(|p| p.dst());
            let ingress = dst.map_or(PortId(0), |d| self.egress_for(d));
            self.send_ip(cx, ingress, &pkt, out);
            if let Some(tcp) = self.tcp.as_mut() {
                tcp.recycle(pkt);
            }
        }
    }

    /// SCTP packets in IPv4 with DF set, as RFC 9260 § 8.8 asks when the
    /// path MTU is known (the association sizes its packets to the port's).
    fn poll_sctp(&mut self, cx: &mut Ctx, out: &mut Outbox) {
        let Some(sctp) = self.sctp.as_mut() else {
            return;
        };
        let sent: Vec<sctp::Outgoing> = sctp.transmit().collect();
        let mut pkt = std::mem::take(&mut self.scratch);
        for o in sent {
            pkt.clear();
            Ipv4Repr {
                src: o.src,
                dst: o.dst,
                protocol: protocol::SCTP,
                ttl: DEFAULT_TTL,
                ident: self.next_ident(),
                dont_frag: true,
                payload_len: o.sctp.len(),
            }
            .emit(&mut pkt);
            pkt.extend_from_slice(&o.sctp);
            let ingress = self.egress_for(o.dst);
            self.send_ip(cx, ingress, &pkt, out);
        }
        self.scratch = pkt;
    }

    /// ARP retries and failures (each queued packet a host unreachable back
    /// towards its source and an `arp_timeout` drop), TCP's and SCTP's timers.
    pub fn on_timer(&mut self, cx: &mut Ctx, out: &mut Outbox) {
        self.last_now = cx.now;
        let mut events = Vec::new();
        self.arp.on_timer(cx.now, |e| events.push(e));
        for e in events {
            match e {
                ArpEvent::Retry { port, ip } => self.send_arp_request(port, ip, out),
                ArpEvent::Failed { port, ip, queued } => {
                    tracing::info!(%ip, "next hop did not answer ARP");
                    for pkt in queued {
                        if let Ok(p) = Ipv4Packet::new_checked(&pkt[..]) {
                            // The error goes back out of the port facing the source.
                            let back = self.lookup(p.src()).map_or(port, |(_, h)| h.port);
                            self.icmp_error(cx, back, IcmpError::HostUnreachable, &p, out);
                        }
                        out.drop_frame(port, DropReason::ArpTimeout);
                    }
                }
            }
        }
        if let Some(sctp) = self.sctp.as_mut() {
            if sctp.poll_at().is_some_and(|t| t <= cx.now) {
                sctp.on_timer(cx);
                self.poll_sctp(cx, out);
            }
        }
        if self.tcp.as_ref().is_some_and(|t| t.due(cx.now)) {
            self.poll(cx, out);
        }
    }

    /// When [`L3::on_timer`] wants to run next.
    pub fn poll_at(&self) -> Option<Instant> {
        let tcp = self.tcp.as_ref().and_then(TcpStack::poll_at);
        let sctp = self.sctp.as_ref().and_then(SctpStack::poll_at);
        [self.arp.poll_at(), tcp, sctp].into_iter().flatten().min()
    }

    /// Every route of the FIB as `d11 show NODE fib` prints it, most
    /// specific first.
    pub fn fib_rows(&self) -> Vec<FibRow> {
        self.first_fib_rows(usize::MAX)
    }

    /// The first `limit` of [`L3::fib_rows`], without building the rest.
    fn first_fib_rows(&self, limit: usize) -> Vec<FibRow> {
        let mut routes: Vec<(Ipv4Cidr, &NextHop)> = self.fib.iter().collect();
        let key = |(p, _): &(Ipv4Cidr, &NextHop)| (std::cmp::Reverse(p.prefix_len()), p.addr());
        if routes.len() > limit {
            routes.select_nth_unstable_by_key(limit, key);
            routes.truncate(limit);
        }
        routes.sort_by_key(key);
        routes
            .into_iter()
            .map(|(prefix, h)| FibRow {
                prefix,
                port: self
                    .port(h.port)
                    .map_or_else(String::new, |p| p.name.clone()),
                via: h.via,
                source: h.source,
            })
            .collect()
    }

    /// The FIB (its first [`REPORT_ROWS`](crate::status::REPORT_ROWS)
    /// routes), ARP cache, what was originated and the open sockets.
    pub fn report(&self) -> L3Report {
        let fib = self.first_fib_rows(crate::status::REPORT_ROWS);
        let mut arp: Vec<ArpRow> = self
            .arp
            .entries(self.last_now)
            .map(|(ip, mac)| ArpRow { ip, mac })
            .collect();
        arp.sort_by_key(|r| r.ip);
        let mut sockets = self.udp.report();
        if let Some(t) = &self.tcp {
            sockets.extend(t.report());
        }
        if let Some(s) = &self.sctp {
            sockets.extend(s.sockets());
        }
        L3Report {
            fib,
            fib_routes: self.fib.len(),
            arp,
            arp_pending: self.arp.pending_len(),
            originated: self.originated.clone(),
            sockets,
        }
    }
}

/// `packet` as a checked IPv4 packet, or the reason to drop it.
#[inline]
pub fn checked_ipv4(packet: &[u8]) -> Result<Ipv4Packet<&[u8]>, DropReason> {
    let ip = match Ipv4Packet::new_checked(packet) {
        Ok(ip) => ip,
        Err(d11_wire::ipv4::Ipv4Error::Truncated) => return Err(DropReason::Truncated),
        Err(_) => return Err(DropReason::Malformed),
    };
    if !ip.verify_checksum() {
        return Err(DropReason::BadChecksum);
    }
    Ok(ip)
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

#[cfg(test)]
mod tests;
