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
//! S5-C (TS 29.274 § 7.2.1, § 7.2.9): a GTPv2-C endpoint on the `s5`
//! address ([`crate::gtpc`]). A Create Session Request from the SGW makes
//! the session: the UE's address from `ue_pool` (the address the IMSI
//! already holds when it has one: a second Create Session for a UE
//! replaces its session, § 7.2.1), the PGW's S5-U TEID, a bearer added
//! with [`Pgw::bearers_mut`]; Delete Session removes it. The phone's PCO
//! (TS 24.008 § 10.5.6.3), copied into the request by the MME, is
//! answered in the response: its DNS servers (`config.dns`) when it asks.
//!
//! Ports, in order: `s5`, `sgi`.

use crate::bearer::{self, Bearer, BearerError, BearerRange, Bearers, Receiver};
use crate::gtpc::{self, CreateSession, GtpcEndpoint, GtpcRow, Incoming, SessionRow, TeidPool};
use crate::role::{Addressing, ElementNode, Rewrites, Role, RoleInfo};
use crate::router::{Router, RouterConfig};
use crate::tunnel::{self, Endpoint, GPdu, TunnelReport};
use d11_core::nat::{Nat, NatConfig, Side};
use d11_core::nat::{SnatPool, Timeouts};
use d11_core::settings::ConfigError;
use d11_core::AnyElement;
use d11_core::{Ctx, DropReason, Element, Input, Instant, Outbox, PortId};
use d11_wire::gtpu::Teid;
use d11_wire::gtpv2c::{self as v2, ie_type, iface, msg, GtpcPacket, MessageBuilder};
use d11_wire::icmp::{self, IcmpError};
use d11_wire::ipv4::Ipv4Packet;
use d11_wire::pco::Pco;
use d11_wire::Ipv4Cidr;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};

pub const S5: PortId = PortId(0);
pub const SGI: PortId = PortId(1);

/// Where the PGW's own TEIDs start: far above the topology's static ones.
const TEID_BASE: u32 = 0x0400_0000;

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
    /// The DNS servers the PGW gives the phones that ask in their PCO
    /// ("DNS Server IPv4 Address", TS 24.008 § 10.5.6.3): the mobile
    /// carrier's resolvers, at most 3 (a resolv.conf reads no more).
    #[serde(default)]
    dns: Vec<Ipv4Addr>,
    /// Static bearers (a user plane without an MME: netns/bench-mobile.toml);
    /// with an MME, the attach makes them.
    #[serde(default)]
    bearers: Vec<Bearer>,
    /// Many static bearers in one line each.
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

/// The DNS servers a PGW hands out: unicast addresses, each once, at most
/// [`MAX_DNS`] (glibc's resolver reads no more than 3 `nameserver` lines).
fn check_dns(dns: &[Ipv4Addr]) -> Result<(), ConfigError> {
    if dns.len() > MAX_DNS {
        return Err(ConfigError::new(
            "config.dns",
            format!("at most {MAX_DNS} servers (a resolv.conf reads no more)"),
        ));
    }
    for (i, a) in dns.iter().enumerate() {
        if a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback() {
            return Err(ConfigError::new(
                format!("config.dns[{i}]"),
                format!("{a} is not a unicast address a phone can ask"),
            ));
        }
        if dns[..i].contains(a) {
            return Err(ConfigError::new(
                format!("config.dns[{i}]"),
                format!("{a} is listed twice"),
            ));
        }
    }
    Ok(())
}

/// The most DNS servers a PGW gives a phone.
const MAX_DNS: usize = 3;

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
        check_dns(&self.dns)?;
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
    /// Its GTPv2-C endpoint on S5-C, once bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s5c: Option<GtpcRow>,
    /// The sessions the SGW created (the first [`Bearers::REPORTED`]).
    #[serde(default)]
    pub sessions: Vec<SessionRow>,
    #[serde(default)]
    pub sessions_total: usize,
}

/// A session on S5-C, keyed by the PGW's S5-C TEID.
#[derive(Debug, Clone)]
struct PgwSession {
    imsi: String,
    apn: String,
    ue_ip: Ipv4Addr,
    ebi: u8,
    /// The SGW's S5-C F-TEID.
    sgw: v2::ie::Fteid,
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
    /// The UE pool of dynamic addresses, when it has one.
    ue_pool: Option<Ipv4Cidr>,
    /// Where the search for a free address starts (the last one given).
    pool_next: u32,
    s5c: Option<GtpcEndpoint>,
    sessions: HashMap<u32, PgwSession>,
    /// S5-C TEID by IMSI: a UE has one session here (a new Create Session
    /// replaces it), found without a scan of all of them.
    by_imsi: HashMap<String, u32>,
    teids: TeidPool,
    /// What it answers a PCO's DNS Server IPv4 Address Request with.
    dns: Vec<Ipv4Addr>,
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
            ue_pool: None,
            pool_next: 0,
            s5c: None,
            sessions: HashMap::new(),
            by_imsi: HashMap::new(),
            teids: TeidPool::new(TEID_BASE),
            dns: Vec::new(),
        })
    }

    /// Gives the phones that ask in their PCO these DNS servers.
    pub fn with_dns(mut self, dns: Vec<Ipv4Addr>) -> Pgw {
        self.dns = dns;
        self
    }

    /// Gives UEs addresses from `pool` (its first host address is the
    /// gateway) on Create Session.
    pub fn with_ue_pool(mut self, pool: Ipv4Cidr) -> Pgw {
        self.ue_pool = Some(pool.network());
        self
    }

    /// A free UE address: the first after the last one given that no
    /// bearer holds, past the gateway, before the broadcast address.
    fn free_address(&mut self) -> Option<Ipv4Addr> {
        let pool = self.ue_pool?;
        let first = u32::from(pool.addr()) + 2;
        let last = u32::from(pool.broadcast()).checked_sub(1)?;
        if last < first {
            return None;
        }
        let n = last - first + 1;
        let start = self.pool_next.clamp(first, last);
        for i in 0..n {
            let a = first + (start - first + i) % n;
            if self.bearers.by_ue_ip(Ipv4Addr::from(a)).is_none() {
                self.pool_next = a + 1;
                return Some(Ipv4Addr::from(a));
            }
        }
        None
    }

    /// S5-C: the endpoint bound on first use on the `s5` address.
    fn serve_s5c(&mut self, cx: &mut Ctx, out: &mut Outbox) {
        if self.s5c.is_none() {
            let me = self.addrs[S5.index()];
            self.s5c = GtpcEndpoint::bind(self.router.l3_mut(), cx, me);
        }
        let Some(mut e) = self.s5c.take() else {
            return;
        };
        e.poll(self.router.l3_mut(), cx, out);
        while let Some(i) = e.incoming() {
            match i {
                Incoming::Request { from, seq, msg } => {
                    let answer = self.s5c_request(&msg, seq);
                    e.respond(self.router.l3_mut(), cx, out, from, answer);
                }
                Incoming::PeerRestarted { peer } => {
                    // TS 23.007 § 16.1.1: the SGW lost its sessions; the
                    // PGW's go with them.
                    tracing::warn!(%peer, "SGW restarted: its sessions deleted");
                    let gone: Vec<u32> = self
                        .sessions
                        .iter()
                        .filter(|(_, s)| s.sgw.addr == peer)
                        .map(|(&t, _)| t)
                        .collect();
                    for t in gone {
                        self.delete(t);
                    }
                }
                Incoming::Response { .. } | Incoming::Timeout { .. } => {}
            }
        }
        self.s5c = Some(e);
    }

    /// A request on S5-C, answered.
    fn s5c_request(&mut self, m: &[u8], seq: u32) -> Vec<u8> {
        let Ok(p) = GtpcPacket::new_checked(m) else {
            return Vec::new();
        };
        let (ty, ies) = (p.msg_type(), p.ie_bytes());
        let teid = p.teid().unwrap_or(0);
        match ty {
            msg::CREATE_SESSION_REQUEST => match CreateSession::parse(ies) {
                Ok(cs) => self.create_session(cs, seq),
                Err(c) => {
                    tracing::info!(cause = c, "Create Session Request refused");
                    let to = gtpc::sender_teid(ies);
                    gtpc::cause_only(msg::CREATE_SESSION_RESPONSE, to, seq, c)
                }
            },
            msg::DELETE_SESSION_REQUEST => {
                let (peer, c) = match self.sessions.get(&teid) {
                    Some(s) => (s.sgw.teid, v2::cause::REQUEST_ACCEPTED),
                    None => (0, v2::cause::CONTEXT_NOT_FOUND),
                };
                self.delete(teid);
                gtpc::cause_only(msg::DELETE_SESSION_RESPONSE, peer, seq, c)
            }
            // Other requests: their response type with "Context not found"
            // when they name no session [TS 29.274 § 7.7.1].
            ty => gtpc::cause_only(ty.wrapping_add(1), 0, seq, v2::cause::CONTEXT_NOT_FOUND),
        }
    }

    /// Create Session [TS 29.274 § 7.2.1]: an address, a TEID, a bearer.
    fn create_session(&mut self, cs: CreateSession, seq: u32) -> Vec<u8> {
        let reject = |c| gtpc::cause_only(msg::CREATE_SESSION_RESPONSE, cs.sender.teid, seq, c);
        let Some(sgw_u) = cs.bearer_fteid else {
            return reject(v2::cause::MANDATORY_IE_MISSING);
        };
        // A UE with a session already: the old one goes [§ 7.2.1]; its
        // address and TEID stay (so a subscriber the topology provisions a
        // bearer for keeps the address and TEID written there).
        if let Some(t) = self.by_imsi.remove(&cs.imsi) {
            self.sessions.remove(&t);
        }
        let old = self
            .bearers
            .by_imsi(&cs.imsi)
            .map(|b| (b.ue_ip, b.pgw_teid));
        let Some(ue_ip) = old.map(|o| o.0).or_else(|| self.free_address()) else {
            return reject(v2::cause::ALL_DYNAMIC_ADDRESSES_OCCUPIED);
        };
        let bearers = &self.bearers;
        let pgw_teid = match old {
            Some((_, t)) => t.0,
            None => self.teids.take(|t| bearers.by_teid(Teid(t)).is_some()),
        };
        let sessions = &self.sessions;
        let control = self.teids.take(|t| sessions.contains_key(&t));
        let b = Bearer {
            imsi: cs.imsi.clone(),
            ue_ip,
            enb_teid: Teid(0),
            sgw_s1u_teid: Teid(0),
            sgw_s5_teid: Teid(sgw_u.teid),
            pgw_teid: Teid(pgw_teid),
        };
        if let Err(e) = self.bearers.put(b) {
            tracing::warn!(%e, "Create Session: no bearer");
            return reject(v2::cause::NO_RESOURCES_AVAILABLE);
        }
        tracing::info!(imsi = %cs.imsi, ue = %ue_ip, apn = %cs.apn, "session created");
        self.by_imsi.insert(cs.imsi.clone(), control);
        self.sessions.insert(
            control,
            PgwSession {
                imsi: cs.imsi,
                apn: cs.apn,
                ue_ip,
                ebi: cs.ebi,
                sgw: cs.sender,
            },
        );
        let me = self.addrs[S5.index()];
        // The phone's PCO answered: its DNS servers if it asked [TS 24.008
        // § 10.5.6.3; TS 29.274 § 8.13]; a PCO that does not read is
        // taken as absent [TS 24.301 § 7.6.3].
        let pco = cs
            .pco
            .as_deref()
            .and_then(|v| Pco::parse(v).ok())
            .and_then(|req| Pco::answer(&req, &self.dns));
        let mut m = MessageBuilder::new(msg::CREATE_SESSION_RESPONSE, Some(cs.sender.teid), seq);
        m.cause(v2::cause::REQUEST_ACCEPTED)
            .fteid(0, v2::fteid(iface::S5_PGW_GTPC, control, me))
            .ie(ie_type::PAA, 0, &v2::ie::paa_ipv4_value(ue_ip))
            .ie(ie_type::APN_RESTRICTION, 0, &[0]);
        if let Some(p) = pco {
            m.ie(ie_type::PCO, 0, &p.to_vec());
        }
        m.grouped(ie_type::BEARER_CONTEXT, 0, |b| {
            b.ie(ie_type::EBI, 0, &[cs.ebi])
                .cause(v2::cause::REQUEST_ACCEPTED)
                .fteid(2, v2::fteid(iface::S5_PGW_GTPU, pgw_teid, me));
        });
        m.finish()
    }

    /// Deletes the session with S5-C TEID `teid` and its bearer.
    fn delete(&mut self, teid: u32) {
        if let Some(s) = self.sessions.remove(&teid) {
            if self.by_imsi.get(&s.imsi) == Some(&teid) {
                self.by_imsi.remove(&s.imsi);
            }
            tracing::info!(imsi = %s.imsi, "session deleted");
            self.bearers.remove(&s.imsi);
        }
    }

    fn session_rows(&self) -> Vec<SessionRow> {
        let mut v: Vec<SessionRow> = self
            .sessions
            .iter()
            .map(|(&teid, s)| SessionRow {
                imsi: s.imsi.clone(),
                apn: s.apn.clone(),
                ue_ip: Some(s.ue_ip),
                ebi: s.ebi,
                teid,
                peer: SocketAddrV4::new(s.sgw.addr, v2::PORT),
                peer_teid: s.sgw.teid,
                state: "active".into(),
            })
            .collect();
        v.sort_by(|a, b| a.imsi.cmp(&b.imsi));
        v.truncate(Bearers::REPORTED);
        v
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
        let mut e = Pgw::new(c.config(node)?)
            .map_err(bearer::bearer_error)?
            .with_ue_pool(c.ue_pool)
            .with_dns(c.dns.clone());
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
            other => {
                self.router.handle(cx, port, frame, other, out);
                self.serve_s5c(cx, out);
            }
        }
    }

    fn on_timer(&mut self, cx: &mut Ctx, out: &mut Outbox) {
        self.last_now = cx.now;
        self.nat.expire(cx.now);
        self.router.on_timer(cx, out);
        self.serve_s5c(cx, out);
    }

    fn poll_at(&self) -> Option<Instant> {
        let s5c = match &self.s5c {
            Some(e) => e.poll_at(),
            None => Some(Instant::ZERO),
        };
        [self.router.poll_at(), self.nat.poll_at(), s5c]
            .into_iter()
            .flatten()
            .min()
    }

    fn report(&self) -> serde_json::Value {
        d11_core::report_json(&PgwReport {
            l3: self.router.l3().report(),
            tunnel: TunnelReport::new(&self.bearers, &self.gtpu),
            nat: self.nat.entries(self.last_now),
            nat_stats: self.nat.stats().clone(),
            s5c: self.s5c.as_ref().map(GtpcEndpoint::row),
            sessions: self.session_rows(),
            sessions_total: self.sessions.len(),
        })
    }

    /// `table bearers`: every bearer (the report lists the first 256).
    fn table(&self, name: &str) -> Option<serde_json::Value> {
        (name == "bearers").then(|| self.bearers.table())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::StaticRoute;
    use d11_core::nat::NatConfig;
    use d11_core::L3Port;
    use d11_wire::arp::ArpRepr;
    use d11_wire::ethernet::{self, EtherType};
    use d11_wire::hex;
    use d11_wire::ipv4::{protocol, Ipv4Repr};
    use d11_wire::MacAddr;

    const SGW: Ipv4Addr = Ipv4Addr::new(172, 16, 2, 1);
    const SGW_MAC: MacAddr = MacAddr([2, 0, 0, 0, 3, 2]);
    const S5_MAC: MacAddr = MacAddr([2, 0, 0, 0, 4, 1]);

    // crates/wire/src/gtpv2c.rs's golden Create Session Request (pycrate
    // 0.8.1 and tshark read it: crates/wire/fixtures/gtpv2c.py): the MME's
    // on S11, so no S5-U F-TEID in its bearer context.
    const CREATE_SESSION_REQUEST: &str = "4820008e00000000000001000100080000010100000000f15300030000f1105200010006570009008a00000001ac100401570009018700000000ac1005024700090008696e7465726e6574800001000063000100014f00050001000000007f0001000048000800000186a0000186a05d001f0049000100055000160064090000000000000000000000000000000000000000";

    fn pgw() -> Pgw {
        let port = |n: &str, mac, a: &str| L3Port {
            name: n.into(),
            mac,
            address: a.parse().unwrap(),
            mtu: 1500,
        };
        let mut p = Pgw::new(PgwConfig {
            router: RouterConfig {
                ports: vec![
                    port("s5", S5_MAC, "172.16.2.2/24"),
                    port("sgi", MacAddr([2, 0, 0, 0, 4, 2]), "198.51.100.1/30"),
                ],
                routes: vec![StaticRoute {
                    to: "0.0.0.0/0".parse().unwrap(),
                    via: "198.51.100.2".parse().unwrap(),
                }],
            },
            sgw: SGW,
            gateway: Ipv4Addr::new(10, 45, 0, 1),
            nat_pool: "198.51.100.128/25".parse().unwrap(),
            ue_mtu: 1400,
            nat: NatConfig {
                snat: None,
                dnat: vec![],
                max_entries: 16,
                timeouts: Timeouts::default(),
            },
            bearers: vec![],
        })
        .unwrap()
        .with_ue_pool("10.45.0.0/16".parse().unwrap());
        let mut o = Outbox::new();
        let mut cx = Ctx::from(Instant::ZERO);
        p.on_timer(&mut cx, &mut o);
        let mut b = Vec::new();
        ArpRepr::request(SGW_MAC, SGW, "172.16.2.2".parse().unwrap()).emit_frame(&mut b);
        p.on_frame(&mut cx, S5, &b, &mut o);
        p
    }

    /// The GTPv2-C answers to `msg` sent from the SGW's 2123.
    fn ask(p: &mut Pgw, msg: &[u8]) -> Vec<Vec<u8>> {
        let mut f = Vec::new();
        ethernet::emit_header(&mut f, S5_MAC, SGW_MAC, EtherType::Ipv4);
        Ipv4Repr {
            src: SGW,
            dst: "172.16.2.2".parse().unwrap(),
            protocol: protocol::UDP,
            ttl: 64,
            ident: 1,
            dont_frag: false,
            payload_len: 8 + msg.len(),
        }
        .emit(&mut f);
        f.extend_from_slice(&[0x08, 0x4b, 0x08, 0x4b]);
        f.extend_from_slice(&((8 + msg.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(msg);
        let mut o = Outbox::new();
        p.on_frame(&mut Ctx::from(Instant::ZERO), S5, &f, &mut o);
        o.frames()
            .filter(|(_, f)| f.len() > 42 && f[36..38] == [0x08, 0x4b])
            .map(|(_, f)| f[42..].to_vec())
            .collect()
    }

    fn cause(m: &[u8]) -> u8 {
        gtpc::response_cause(GtpcPacket::new_checked(m).unwrap().ie_bytes())
    }

    /// The golden request with an S5/S8-U SGW F-TEID (instance 2) added
    /// to its bearer context, as the SGW sends it on S5.
    fn on_s5(teid: u32) -> Vec<u8> {
        with_s5u(hex(CREATE_SESSION_REQUEST), teid)
    }

    /// `m` (its bearer context last) with the SGW's S5/S8-U F-TEID added.
    fn with_s5u(mut m: Vec<u8>, teid: u32) -> Vec<u8> {
        let f = v2::fteid(iface::S5_SGW_GTPU, teid, SGW).value();
        let ie = [&[ie_type::FTEID, 0, 9, 2][..], &f].concat();
        m.extend_from_slice(&ie);
        // The bearer context (the last IE) and the message grow by 13.
        let bc = m.len() - ie.len() - 35;
        assert_eq!(m[bc], ie_type::BEARER_CONTEXT);
        m[bc + 2] += 13;
        let len = u16::from_be_bytes([m[2], m[3]]) + 13;
        m[2..4].copy_from_slice(&len.to_be_bytes());
        m
    }

    #[test]
    fn a_create_session_without_the_sgws_user_plane_fteid_is_refused_with_70() {
        let mut p = pgw();
        let got = ask(&mut p, &hex(CREATE_SESSION_REQUEST));
        assert_eq!(got.len(), 1);
        assert_eq!(cause(&got[0]), v2::cause::MANDATORY_IE_MISSING);
        let r = GtpcPacket::new_checked(&got[0][..]).unwrap();
        assert_eq!(r.teid(), Some(1), "to the sender F-TEID's TEID");
        assert_eq!(r.seq(), 1);
        assert!(p.bearers.is_empty());
    }

    #[test]
    fn create_session_gives_an_address_a_teid_and_a_bearer_and_delete_takes_them() {
        let mut p = pgw();
        let got = ask(&mut p, &on_s5(0x301));
        assert_eq!(cause(&got[0]), v2::cause::REQUEST_ACCEPTED);
        let r = GtpcPacket::new_checked(&got[0][..]).unwrap();
        let ies = r.ie_bytes();
        let paa = v2::find(ies, ie_type::PAA, 0).unwrap().unwrap();
        assert_eq!(v2::ie::paa_ipv4(paa.value), Ok(Ipv4Addr::new(10, 45, 0, 2)));
        let b = p.bearers.by_imsi("001010000000001").unwrap().clone();
        assert_eq!(
            (b.sgw_s5_teid, b.ue_ip),
            (Teid(0x301), Ipv4Addr::new(10, 45, 0, 2))
        );
        let ctl = v2::find(ies, ie_type::FTEID, 0).unwrap().unwrap();
        let ctl = v2::ie::Fteid::parse(ctl.value).unwrap();
        assert_eq!(ctl.iface, iface::S5_PGW_GTPC);
        // The same request again is a retransmission: the same answer.
        assert_eq!(ask(&mut p, &on_s5(0x301)), got);
        assert_eq!(p.bearers.len(), 1);
        // Delete Session for another TEID: context not found; for its own: gone.
        let del = |teid, seq| {
            let mut m = MessageBuilder::new(msg::DELETE_SESSION_REQUEST, Some(teid), seq);
            m.ie(ie_type::EBI, 0, &[5]);
            m.finish()
        };
        let got = ask(&mut p, &del(ctl.teid + 1, 9));
        assert_eq!(cause(&got[0]), v2::cause::CONTEXT_NOT_FOUND);
        let got = ask(&mut p, &del(ctl.teid, 10));
        assert_eq!(cause(&got[0]), v2::cause::REQUEST_ACCEPTED);
        assert!(p.bearers.is_empty() && p.sessions.is_empty());
    }

    // The same with the phone's PCO (IE 78: DNS Server IPv4 Address
    // Request), and the PCO IE of the golden response (198.18.2.2), from
    // crates/wire/fixtures/gtpv2c.py (pycrate and tshark read both).
    const CREATE_SESSION_REQUEST_PCO: &str = "4820009600000000000006000100080000010100000000f15300030000f1105200010006570009008a00000001ac100401570009018700000000ac1005024700090008696e7465726e6574800001000063000100014f00050001000000007f0001000048000800000186a0000186a04e00040080000d005d001f0049000100055000160064090000000000000000000000000000000000000000";
    const PCO_IE_DNS: &str = "4e00080080000d04c6120202";

    /// The PCO IE of an answer, whole (type, length, instance, value).
    fn pco_ie(answer: &[u8]) -> Option<Vec<u8>> {
        let r = GtpcPacket::new_checked(answer).unwrap();
        let v = gtpc::pco(r.ie_bytes())?;
        Some([&[ie_type::PCO, 0, v.len() as u8, 0][..], v].concat())
    }

    #[test]
    fn the_phones_dns_request_is_answered_with_the_configured_server() {
        let dns = vec![Ipv4Addr::new(198, 18, 2, 2)];
        let mut p = pgw().with_dns(dns.clone());
        let got = ask(&mut p, &with_s5u(hex(CREATE_SESSION_REQUEST_PCO), 0x301));
        assert_eq!(cause(&got[0]), v2::cause::REQUEST_ACCEPTED);
        assert_eq!(pco_ie(&got[0]), Some(hex(PCO_IE_DNS)));
        // A phone that does not ask gets no PCO; a PGW without servers
        // answers the request with none.
        let mut p = pgw().with_dns(dns);
        assert_eq!(pco_ie(&ask(&mut p, &on_s5(0x301))[0]), None);
        let mut p = pgw();
        let got = ask(&mut p, &with_s5u(hex(CREATE_SESSION_REQUEST_PCO), 0x301));
        assert_eq!(cause(&got[0]), v2::cause::REQUEST_ACCEPTED);
        assert_eq!(pco_ie(&got[0]), None);
    }

    #[test]
    fn dns_servers_are_checked_with_their_key_named() {
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert!(check_dns(&[a("198.18.2.2"), a("198.18.3.2")]).is_ok());
        let e = |d: &[Ipv4Addr]| check_dns(d).unwrap_err().to_string();
        assert!(e(&[a("0.0.0.0")]).contains("config.dns[0]"));
        assert!(e(&[a("1.2.3.4"), a("224.0.0.1")]).contains("config.dns[1]"));
        assert!(e(&[a("1.2.3.4"), a("1.2.3.4")]).contains("twice"));
        let four = [a("1.1.1.1"), a("1.1.1.2"), a("1.1.1.3"), a("1.1.1.4")];
        assert!(e(&four).contains("at most 3"));
    }

    #[test]
    fn an_ie_length_past_the_message_is_mandatory_ie_incorrect() {
        let mut p = pgw();
        let mut m = on_s5(0x301);
        // The IMSI IE (right after the 12-octet header) claims 0xffff octets.
        assert_eq!(m[12], ie_type::IMSI);
        m[13..15].copy_from_slice(&[0xff, 0xff]);
        let got = ask(&mut p, &m);
        assert_eq!(cause(&got[0]), v2::cause::MANDATORY_IE_INCORRECT);
        assert!(p.bearers.is_empty() && p.sessions.is_empty());
    }

    #[test]
    fn a_second_create_session_for_the_same_imsi_and_ebi_replaces_the_first() {
        let mut p = pgw();
        let first = ask(&mut p, &on_s5(0x301));
        let mut again = on_s5(0x302);
        again[10] = 2; // a new sequence number: not a retransmission
        let second = ask(&mut p, &again);
        assert_eq!(cause(&second[0]), v2::cause::REQUEST_ACCEPTED);
        assert_ne!(first, second);
        assert_eq!((p.sessions.len(), p.bearers.len()), (1, 1));
        let b = p.bearers.by_imsi("001010000000001").unwrap();
        assert_eq!(b.ue_ip, Ipv4Addr::new(10, 45, 0, 2), "its address kept");
        assert_eq!(b.sgw_s5_teid, Teid(0x302), "the new session's SGW TEID");
    }

    #[test]
    fn a_mangled_create_session_is_answered_with_its_cause_never_a_panic() {
        let good = on_s5(0x301);
        for i in 12..good.len() {
            for v in [0u8, 0xff, 0x55] {
                let mut m = good.clone();
                m[i] = v;
                let mut p = pgw();
                for a in ask(&mut p, &m) {
                    GtpcPacket::new_checked(&a[..]).expect("a GTPv2-C answer");
                }
            }
        }
    }
}
