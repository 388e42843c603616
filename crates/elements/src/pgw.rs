//! `pgw`: the packet gateway, the end of the S5 tunnel, the UE pool and the NAT.
//!
//! Read 3GPP TS 23.401 § 4.4.3.3 (the PGW allocates the UE address and is
//! the IP anchor towards SGi) and TS 29.281 (GTP-U), then the NAT module
//! ([`d11_core::nat`], RFC 3022/4787/5382/5508). The PGW is the UE's first
//! IP hop: uplink T-PDUs have their TTL lowered here (so traceroute from the
//! phone lists the gateway, then the hops after it) and their source
//! translated to the public pool; downlink packets to the pool are
//! translated back, matched to the UE's bearer and tunnelled to the SGW.
//! Unsolicited inbound traffic to the pool is dropped and counted.
//!
//! Ports, in order: `s5`, `sgi`.

use crate::bearer::{Bearer, BearerError, Bearers, Receiver};
use crate::router::{Router, RouterConfig};
use crate::tunnel::{self, Endpoint, Rx};
use d11_core::nat::{Nat, NatConfig, Side};
use d11_core::{DropReason, Element, Instant, Outbox, PortId};
use d11_wire::ethernet::{self, EtherType, EthernetFrame};
use d11_wire::gtpu::Teid;
use d11_wire::icmp::{self, IcmpError};
use d11_wire::ipv4::Ipv4Packet;
use d11_wire::{Ipv4Cidr, MacAddr};
use serde_json::json;
use std::net::Ipv4Addr;

pub const S5: PortId = PortId(0);
pub const SGI: PortId = PortId(1);

/// What a PGW is built from.
#[derive(Debug, Clone)]
pub struct PgwConfig {
    /// Ports `s5` and `sgi`, in that order, with their addresses and the SGi routes.
    pub router: RouterConfig,
    /// The SGW's S5 address.
    pub sgw: Ipv4Addr,
    /// The UE's gateway in the UE pool (the tunnel end), which answers ping
    /// and sends the PGW's ICMP errors to the UE.
    pub gateway: Ipv4Addr,
    /// The public prefix the NAT maps UE flows into.
    pub nat_pool: Ipv4Cidr,
    /// The MTU the UE's link was given (the "IPv4 Link MTU" a PGW signals
    /// [TS 24.008 § 10.5.6.3]): larger downlink packets are refused.
    pub ue_mtu: u16,
    pub nat: NatConfig,
    pub bearers: Vec<Bearer>,
}

/// The packet gateway.
#[derive(Debug)]
pub struct Pgw {
    router: Router,
    gtpu: Endpoint,
    bearers: Bearers,
    nat: Nat,
    sgw: Ipv4Addr,
    gateway: Ipv4Addr,
    nat_pool: Ipv4Cidr,
    ue_mtu: u16,
    ports: [(MacAddr, Ipv4Addr); 2],
    /// The packet being translated, reused.
    scratch: Vec<u8>,
    ident: u16,
    last_now: Instant,
}

impl Pgw {
    pub fn new(cfg: PgwConfig) -> Result<Pgw, BearerError> {
        let mut bearers = Bearers::new(Receiver::Pgw);
        for b in cfg.bearers {
            bearers.add(b)?;
        }
        let p = |i: usize| (cfg.router.ports[i].mac, cfg.router.ports[i].address.addr());
        Ok(Pgw {
            ports: [p(0), p(1)],
            router: Router::new(cfg.router),
            gtpu: Endpoint::default(),
            bearers,
            nat: Nat::new(cfg.nat),
            sgw: cfg.sgw,
            gateway: cfg.gateway,
            nat_pool: cfg.nat_pool,
            ue_mtu: cfg.ue_mtu,
            scratch: Vec::new(),
            ident: 0,
            last_now: Instant::ZERO,
        })
    }

    /// The bearer table, for a control plane to drive.
    pub fn bearers_mut(&mut self) -> &mut Bearers {
        &mut self.bearers
    }

    /// Sends `pkt` (an IPv4 packet to a UE) down the UE's bearer.
    fn tunnel_to_ue(
        &mut self,
        now: Instant,
        ingress: PortId,
        teid: Teid,
        pkt: &[u8],
        out: &mut Outbox,
    ) {
        let me = self.ports[S5.index()].1;
        self.gtpu
            .send_g_pdu(&mut self.router, now, ingress, me, self.sgw, teid, pkt, out);
    }

    /// An ICMP message the PGW itself sends to a UE from its gateway address.
    fn icmp_to_ue(
        &mut self,
        now: Instant,
        teid: Teid,
        build: impl FnOnce(&mut Vec<u8>, u16),
        out: &mut Outbox,
    ) {
        self.ident = self.ident.wrapping_add(1);
        let mut pkt = Vec::with_capacity(icmp::MAX_ERROR_LEN);
        build(&mut pkt, self.ident);
        self.tunnel_to_ue(now, S5, teid, &pkt, out);
    }

    /// Uplink: a T-PDU from a UE leaves on SGi, NATed, one TTL lower.
    fn uplink(&mut self, now: Instant, peer: Ipv4Addr, teid: Teid, tpdu: &[u8], out: &mut Outbox) {
        let Some(b) = self.bearers.by_teid(teid) else {
            let me = self.ports[S5.index()].1;
            return self
                .gtpu
                .unknown_teid(&mut self.router, now, S5, me, peer, teid, out);
        };
        let (down, ue) = (b.sgw_s5_teid, b.ue_ip);
        let ip = match tunnel::tpdu_ipv4(tpdu) {
            Ok(ip) => ip,
            Err(r) => return out.drop_frame(S5, r),
        };
        if ip.src() != ue {
            // Only the bearer's own address may use it [TS 23.401 § 5.3.1.2.1].
            return out.drop_frame(S5, DropReason::Martian);
        }
        let gw = self.gateway;
        if ip.dst() == gw {
            if let Some(req) = icmp::as_echo_request(&ip) {
                return self.icmp_to_ue(
                    now,
                    down,
                    |b, id| icmp::emit_echo_reply(b, gw, ue, id, req),
                    out,
                );
            }
            return out.drop_frame(S5, DropReason::UnsupportedProtocol);
        }
        if ip.ttl() <= 1 {
            if icmp::may_send_error_about(&ip) {
                self.icmp_to_ue(
                    now,
                    down,
                    |b, id| icmp::emit_error(b, gw, id, IcmpError::TtlExceeded, &ip),
                    out,
                );
            }
            return out.drop_frame(S5, DropReason::TtlExpired);
        }
        let mut pkt = std::mem::take(&mut self.scratch);
        pkt.clear();
        pkt.extend_from_slice(ip.packet());
        match self.nat.translate(now, Side::Inside, &mut pkt) {
            Ok(()) => {
                if let Ok(mut p) = Ipv4Packet::new_checked(&mut pkt[..]) {
                    p.decrement_ttl();
                }
                self.router.route_local(now, S5, &pkt, out);
            }
            Err(e) => out.drop_frame(S5, e.drop_reason()),
        }
        self.scratch = pkt;
    }

    /// Downlink: a packet to the NAT pool goes back to its UE's bearer.
    fn on_sgi(&mut self, now: Instant, frame: &[u8], out: &mut Outbox) {
        let ip = match Ipv4Packet::new_checked(&frame[ethernet::HEADER_LEN..]) {
            Ok(ip) if ip.verify_checksum() => ip,
            Ok(_) => return out.drop_frame(SGI, DropReason::BadChecksum),
            Err(_) => return out.drop_frame(SGI, DropReason::Malformed),
        };
        let mut pkt = std::mem::take(&mut self.scratch);
        pkt.clear();
        pkt.extend_from_slice(ip.packet());
        // The PGW is an IP hop downlink too. What it refuses (TTL spent, too
        // big for the UE's link) it refuses after the NAT check, so nothing
        // answers unsolicited packets, with an error quoting the packet as
        // its sender wrote it [RFC 1812 § 4.3.2.3; RFC 1191 § 4].
        let refusal = if ip.ttl() <= 1 {
            Some((Some(IcmpError::TtlExceeded), DropReason::TtlExpired))
        } else if ip.total_len() > usize::from(self.ue_mtu) {
            // The PGW does not fragment T-PDUs: without DF a too-big packet is
            // a counted drop, never a corrupted one.
            match ip.dont_frag() {
                true => Some((
                    Some(IcmpError::FragmentationNeeded { mtu: self.ue_mtu }),
                    DropReason::NeedsFragmentation,
                )),
                false => Some((None, DropReason::Oversize)),
            }
        } else {
            None
        };
        match refusal {
            None => self.downlink(now, &mut pkt, out),
            Some((err, reason)) => match self.nat.translate(now, Side::Outside, &mut pkt) {
                Err(e) => out.drop_frame(SGI, e.drop_reason()),
                Ok(()) => {
                    if let Some(e) = err.filter(|_| icmp::may_send_error_about(&ip)) {
                        let from = self.ports[SGI.index()].1;
                        self.ident = self.ident.wrapping_add(1);
                        let mut msg = Vec::with_capacity(icmp::MAX_ERROR_LEN);
                        icmp::emit_error(&mut msg, from, self.ident, e, &ip);
                        self.router.route_local(now, SGI, &msg, out);
                    }
                    out.drop_frame(SGI, reason);
                }
            },
        }
        self.scratch = pkt;
    }

    fn downlink(&mut self, now: Instant, pkt: &mut [u8], out: &mut Outbox) {
        if let Err(e) = self.nat.translate(now, Side::Outside, pkt) {
            return out.drop_frame(SGI, e.drop_reason());
        }
        let Ok(mut p) = Ipv4Packet::new_checked(&mut pkt[..]) else {
            return out.drop_frame(SGI, DropReason::Malformed);
        };
        let Some(teid) = self.bearers.by_ue_ip(p.dst()).map(|b| b.sgw_s5_teid) else {
            return out.drop_frame(SGI, DropReason::NoBearer);
        };
        // TTL > 1 here: on_sgi refused the rest.
        p.decrement_ttl();
        self.tunnel_to_ue(now, SGI, teid, pkt, out);
    }
}

impl Element for Pgw {
    fn on_frame(&mut self, now: Instant, port: PortId, frame: &[u8], out: &mut Outbox) {
        self.last_now = now;
        let Some(&(mac, me)) = self.ports.get(port.index()) else {
            return out.drop_frame(port, DropReason::NoSuchPort);
        };
        if port == SGI {
            if let Ok(eth) = EthernetFrame::new_checked(frame) {
                let to_pool = eth.dst() == mac
                    && eth.ethertype() == EtherType::Ipv4
                    && frame
                        .get(ethernet::HEADER_LEN + 16..ethernet::HEADER_LEN + 20)
                        .is_some_and(|d| {
                            self.nat_pool
                                .contains(Ipv4Addr::new(d[0], d[1], d[2], d[3]))
                        });
                if to_pool {
                    return self.on_sgi(now, frame, out);
                }
            }
            return self.router.on_frame(now, port, frame, out);
        }
        match self
            .gtpu
            .receive(&mut self.router, now, port, mac, me, frame, out)
        {
            Rx::NotGtpu => self.router.on_frame(now, port, frame, out),
            Rx::GPdu { peer, teid, tpdu } => self.uplink(now, peer, teid, tpdu, out),
            Rx::Done => {}
        }
    }

    fn on_timer(&mut self, now: Instant, out: &mut Outbox) {
        self.last_now = now;
        self.nat.expire(now);
        self.router.on_timer(now, out)
    }

    fn poll_at(&self) -> Option<Instant> {
        match (self.router.poll_at(), self.nat.poll_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn report(&self) -> serde_json::Value {
        let mut r = self.router.report();
        r["bearers"] = self.bearers.report();
        r["bearers_total"] = json!(self.bearers.len());
        r["nat"] = json!(self.nat.entries(self.last_now));
        r["nat_stats"] = json!(self.nat.stats());
        r["gtpu"] = json!(self.gtpu.stats);
        r
    }
}
