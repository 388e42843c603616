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

use crate::bearer::{self, Bearer, BearerError, BearerRange, Bearers, Receiver};
use crate::role::{Addressing, ElementNode, Rewrites, Role, RoleInfo};
use crate::router::{Router, RouterConfig};
use crate::tunnel::{self, Endpoint, GPdu, TunnelReport};
use d11_core::nat::{Nat, NatConfig, Side};
use d11_core::nat::{SnatPool, Timeouts};
use d11_core::settings::ConfigError;
use d11_core::AnyElement;
use d11_core::{Ctx, DropReason, Element, Input, Instant, Outbox, PortId};
use d11_wire::gtpu::Teid;
use d11_wire::icmp::{self, IcmpError};
use d11_wire::ipv4::Ipv4Packet;
use d11_wire::Ipv4Cidr;
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

/// `config` of a `pgw` node.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgwSettings {
    /// The SGW's S5 address.
    sgw: Ipv4Addr,
    /// The UE pool; its first host address is the UE's gateway.
    ue_pool: Ipv4Cidr,
    /// The public prefix the NAT maps UE flows into.
    nat_pool: Ipv4Cidr,
    /// First and last NAT port per public address (default 1024–65535).
    #[serde(default = "default_nat_ports")]
    nat_ports: [u16; 2],
    /// The most NAT entries (default 65536).
    #[serde(default = "default_nat_max_entries")]
    nat_max_entries: usize,
    /// The MTU the UE's link was given (default 1400).
    #[serde(default = "default_ue_mtu")]
    ue_mtu: u16,
    bearers: Vec<Bearer>,
    /// Many bearers in one line each (`d11 load`'s simulated phones).
    #[serde(default)]
    bearer_ranges: Vec<BearerRange>,
}

fn default_ue_mtu() -> u16 {
    1400
}

fn default_nat_ports() -> [u16; 2] {
    [1024, 65535]
}

fn default_nat_max_entries() -> usize {
    65536
}

impl PgwSettings {
    /// The PGW's configuration from its node and settings, each value
    /// checked with its key named.
    fn config(&self, node: &ElementNode) -> Result<PgwConfig, ConfigError> {
        let router = RouterConfig::for_ports(node, &["s5", "sgi"])?;
        let pool = self.ue_pool.network();
        let gateway = Ipv4Addr::from(u32::from(pool.addr()) + 1);
        for (i, b) in self.bearers.iter().enumerate() {
            if !pool.contains(b.ue_ip) || b.ue_ip == gateway || b.ue_ip == pool.broadcast() {
                return Err(ConfigError::new(
                    format!("config.bearers[{i}].ue_ip"),
                    format!("{} is not a UE address of ue_pool {pool}", b.ue_ip),
                ));
            }
        }
        for (i, r) in self.bearer_ranges.iter().enumerate() {
            let first = u32::from(r.ue_ip);
            let last = Ipv4Addr::from(first.saturating_add(r.count.saturating_sub(1)));
            let gw = u32::from(gateway);
            if !pool.contains(r.ue_ip)
                || !pool.contains(last)
                || last == pool.broadcast()
                || (first..=u32::from(last)).contains(&gw)
            {
                return Err(ConfigError::new(
                    format!("config.bearer_ranges[{i}].ue_ip"),
                    format!(
                        "{} .. {last} is not inside the UE addresses of ue_pool {pool}",
                        r.ue_ip
                    ),
                ));
            }
        }
        let [lo, hi] = self.nat_ports;
        if lo == 0 || lo > hi {
            return Err(ConfigError::new(
                "config.nat_ports",
                "expected [first, last] with 0 < first <= last",
            ));
        }
        let net = self.nat_pool.network();
        if net.prefix_len() < 16 {
            return Err(ConfigError::new(
                "config.nat_pool",
                "a NAT pool is at most a /16",
            ));
        }
        let size = 1u64 << (32 - u32::from(net.prefix_len()));
        let addrs = (0..size)
            .map(|i| Ipv4Addr::from(u32::from(net.addr()) + i as u32))
            .collect();
        Ok(PgwConfig {
            router,
            sgw: self.sgw,
            gateway,
            nat_pool: net,
            ue_mtu: self.ue_mtu,
            nat: NatConfig {
                snat: Some(SnatPool {
                    addrs,
                    ports: lo..=hi,
                }),
                dnat: Vec::new(),
                max_entries: self.nat_max_entries,
                timeouts: Timeouts::default(),
            },
            bearers: self.bearers.clone(),
        })
    }
}

/// What a PGW reports: its IP layer, bearers, GTP-U paths and its NAT
/// (the entries like `conntrack -L`, and its totals).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PgwReport {
    #[serde(flatten)]
    pub l3: d11_core::l3::L3Report,
    #[serde(flatten)]
    pub tunnel: TunnelReport,
    pub nat: Vec<d11_core::nat::NatEntryView>,
    pub nat_stats: d11_core::nat::NatStats,
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
    /// The address of each port.
    addrs: [Ipv4Addr; 2],
    /// The packet being translated, reused.
    scratch: Vec<u8>,
    last_now: Instant,
}

impl Pgw {
    pub fn new(cfg: PgwConfig) -> Result<Pgw, BearerError> {
        let mut bearers = Bearers::new(Receiver::Pgw);
        for b in cfg.bearers {
            bearers.add(b)?;
        }
        let p = |i: usize| cfg.router.ports[i].address.addr();
        let addrs = [p(0), p(1)];
        let mut router = Router::new(cfg.router);
        Ok(Pgw {
            addrs,
            gtpu: Endpoint::new(&mut router),
            router,
            bearers,
            nat: Nat::new(cfg.nat),
            sgw: cfg.sgw,
            gateway: cfg.gateway,
            nat_pool: cfg.nat_pool,
            ue_mtu: cfg.ue_mtu,
            scratch: Vec::new(),
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
        cx: &mut Ctx,
        ingress: PortId,
        teid: Teid,
        pkt: &[u8],
        out: &mut Outbox,
    ) {
        let me = self.addrs[S5.index()];
        self.gtpu
            .send_g_pdu(&mut self.router, cx, ingress, me, self.sgw, teid, pkt, out);
    }

    /// Uplink: a T-PDU from a UE leaves on SGi, NATed, one TTL lower.
    fn uplink(&mut self, cx: &mut Ctx, g: GPdu<'_>, out: &mut Outbox) {
        let GPdu { peer, teid, tpdu } = g;
        let Some(b) = self.bearers.by_teid(teid) else {
            let me = self.addrs[S5.index()];
            return self
                .gtpu
                .unknown_teid(&mut self.router, cx, S5, me, peer, teid, out);
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
        // What the PGW says to a UE itself (from its gateway address) goes
        // down the UE's own tunnel.
        let gw = self.gateway;
        let mut msg = Vec::new();
        if ip.dst() == gw {
            if let Some(req) = icmp::as_echo_request(&ip) {
                let id = self.router.l3_mut().next_ident();
                icmp::emit_echo_reply(&mut msg, gw, ue, id, req);
                return self.tunnel_to_ue(cx, S5, down, &msg, out);
            }
            return out.drop_frame(S5, DropReason::UnsupportedProtocol);
        }
        if ip.ttl() <= 1 {
            let l3 = self.router.l3_mut();
            if l3.build_icmp_error(cx, gw, IcmpError::TtlExceeded, &ip, &mut msg) {
                self.tunnel_to_ue(cx, S5, down, &msg, out);
            }
            return out.drop_frame(S5, DropReason::TtlExpired);
        }
        let mut pkt = std::mem::take(&mut self.scratch);
        pkt.clear();
        pkt.extend_from_slice(ip.packet());
        match self.nat.translate(cx.now, Side::Inside, &mut pkt) {
            Ok(()) => {
                if let Ok(mut p) = Ipv4Packet::new_checked(&mut pkt[..]) {
                    p.decrement_ttl();
                }
                self.router.route_local(cx, S5, &pkt, out);
            }
            Err(e) => out.drop_frame(S5, e.drop_reason()),
        }
        self.scratch = pkt;
    }

    /// Downlink: a packet to the NAT pool goes back to its UE's bearer.
    fn on_sgi(&mut self, cx: &mut Ctx, ip: &Ipv4Packet<&[u8]>, out: &mut Outbox) {
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
            None => self.downlink(cx, &mut pkt, out),
            Some((err, reason)) => match self.nat.translate(cx.now, Side::Outside, &mut pkt) {
                Err(e) => out.drop_frame(SGI, e.drop_reason()),
                Ok(()) => {
                    if let Some(e) = err {
                        self.router.l3_mut().icmp_error(cx, SGI, e, ip, out);
                    }
                    out.drop_frame(SGI, reason);
                }
            },
        }
        self.scratch = pkt;
    }

    fn downlink(&mut self, cx: &mut Ctx, pkt: &mut [u8], out: &mut Outbox) {
        if let Err(e) = self.nat.translate(cx.now, Side::Outside, pkt) {
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
        self.tunnel_to_ue(cx, SGI, teid, pkt, out);
    }
}

impl Role for Pgw {
    const INFO: RoleInfo = RoleInfo {
        name: "pgw",
        summary: "packet gateway: ends S5, owns the UE pool, NATs to SGi; ports s5, sgi",
        addressing: Addressing::All,
        bridges: false,
        isolates_tenants: false,
        routes: true,
    };
    type Settings = PgwSettings;
    fn build(node: &ElementNode, c: PgwSettings) -> Result<Box<dyn AnyElement>, ConfigError> {
        let mut e = Pgw::new(c.config(node)?).map_err(bearer::bearer_error)?;
        bearer::add_ranges(e.bearers_mut(), &c.bearer_ranges)?;
        Ok(Box::new(e))
    }
    /// Sources leave translated into the NAT pool.
    fn rewrites(_: &ElementNode, c: &PgwSettings) -> Rewrites {
        Rewrites {
            sources: vec![c.nat_pool.network()],
            destinations: Vec::new(),
        }
    }
}

impl Element for Pgw {
    fn on_frame(&mut self, cx: &mut Ctx, port: PortId, frame: &[u8], out: &mut Outbox) {
        self.last_now = cx.now;
        match self.router.l3_mut().input(cx, port, frame, out) {
            Input::Transit(ip) if port == SGI && self.nat_pool.contains(ip.dst()) => {
                self.on_sgi(cx, &ip, out)
            }
            Input::Tunnel { port, ip, udp } if port == S5 => {
                let r = &mut self.router;
                if let Some(g) = self.gtpu.receive(r, cx, port, &ip, &udp, out) {
                    self.uplink(cx, g, out);
                }
            }
            other => self.router.handle(cx, port, frame, other, out),
        }
    }

    fn on_timer(&mut self, cx: &mut Ctx, out: &mut Outbox) {
        self.last_now = cx.now;
        self.nat.expire(cx.now);
        self.router.on_timer(cx, out)
    }

    fn poll_at(&self) -> Option<Instant> {
        match (self.router.poll_at(), self.nat.poll_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn report(&self) -> serde_json::Value {
        d11_core::report_json(&PgwReport {
            l3: self.router.l3().report(),
            tunnel: TunnelReport::new(&self.bearers, &self.gtpu),
            nat: self.nat.entries(self.last_now),
            nat_stats: self.nat.stats().clone(),
        })
    }
}
