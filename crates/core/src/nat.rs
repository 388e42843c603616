//! Connection tracking with NAPT (source NAT from a public pool) and static
//! DNAT, sans-IO: packets and time in, rewritten packets or a reason out.
//!
//! Read RFC 3022 (traditional NAT, NAPT) first, then the behaviour RFCs this
//! module follows: RFC 4787 (UDP: REQ-2 "paired" address pooling, port
//! preservation when free, a 2-minute minimum timeout, REQ-5), RFC 5382 (TCP:
//! 2 h 4 min established timeout, 4 min transitory, REQ-5), RFC 5508 (ICMP:
//! echo identifier as the port, 60 s query timeout, ICMP errors translated
//! with their quoted header, REQ-3/4).
//!
//! One conntrack entry holds two tuples, as Linux conntrack does: `orig`, the
//! first packet as it arrived, and `reply`, what an answer looks like on the
//! wire after translation. A packet matching either tuple is rewritten to the
//! inverse of the other one, so SNAT and DNAT share one code path:
//!
//! | mode | orig (as received) | reply (expected answer) |
//! |---|---|---|
//! | SNAT | ue:p → server:q | server:q → public:P |
//! | DNAT | client:c → vip:443 | private:443 → client:c |
//!
//! Addresses and ports are rewritten in place with incremental checksum
//! updates [RFC 1624]; only an ICMP error's own checksum is recomputed, since
//! its quoted header changes in several places at once.

use crate::hash::FastMap;
use crate::{DropReason, Instant};
use d11_wire::checksum;
use d11_wire::ipv4::{protocol, Ipv4Packet};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

/// The transport protocols NAT translates.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
    /// ICMP queries (echo), the identifier standing in for both ports [RFC 5508 § 3.1].
    Icmp,
}

impl Proto {
    fn from_ip(p: u8) -> Option<Proto> {
        match p {
            protocol::TCP => Some(Proto::Tcp),
            protocol::UDP => Some(Proto::Udp),
            protocol::ICMP => Some(Proto::Icmp),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        }
    }
}

/// Which side of the NAT a packet arrived on.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum Side {
    /// The private side (the UE pool behind the PGW, the VPC behind the vgw).
    Inside,
    /// The public side (the internet).
    Outside,
}

/// A flow's 5-tuple as seen on the wire. For ICMP echo both ports hold the identifier.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub struct Tuple {
    pub proto: Proto,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
}

impl Tuple {
    fn inverse(self) -> Tuple {
        Tuple {
            proto: self.proto,
            src: self.dst,
            dst: self.src,
        }
    }
}

impl fmt::Display for Tuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} > {}", self.proto.name(), self.src, self.dst)
    }
}

/// The direction of a packet relative to the entry that matched it.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum Dir {
    Orig,
    Reply,
}

/// Where a TCP connection is, as far as the timeout cares [RFC 5382 § 5].
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum TcpState {
    /// Only the opening direction has been seen (transitory).
    Opening,
    /// Both directions seen, no FIN or RST yet.
    Established,
    /// A FIN or RST was seen (transitory).
    Closing,
}

/// How long an idle entry lives.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// RFC 5382 REQ-5: at least 2 h 4 min.
    pub tcp_established: Duration,
    /// RFC 5382 REQ-5: at least 4 min for opening and closing connections.
    pub tcp_transitory: Duration,
    /// RFC 4787 REQ-5: at least 2 min, 5 min recommended.
    pub udp: Duration,
    /// RFC 5508 REQ-1: 60 s for ICMP query sessions.
    pub icmp: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            tcp_established: Duration::from_secs(2 * 3600 + 4 * 60),
            tcp_transitory: Duration::from_secs(4 * 60),
            udp: Duration::from_secs(5 * 60),
            icmp: Duration::from_secs(60),
        }
    }
}

/// The public addresses and ports source NAT maps inside flows to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnatPool {
    /// Public addresses; an inside host always gets the same one (paired pooling, RFC 4787 REQ-2).
    pub addrs: Vec<Ipv4Addr>,
    /// Ports (and ICMP identifiers) handed out per public address and protocol.
    pub ports: std::ops::RangeInclusive<u16>,
}

/// A static destination NAT: flows from outside to `public` go to `private`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DnatRule {
    pub proto: Proto,
    pub public: SocketAddrV4,
    pub private: SocketAddrV4,
}

/// What a [`Nat`] does.
#[derive(Clone, Debug)]
pub struct NatConfig {
    /// Source NAT for new flows from inside; `None` drops them (a DNAT-only gateway).
    pub snat: Option<SnatPool>,
    /// Destination NAT rules for new flows from outside.
    pub dnat: Vec<DnatRule>,
    /// The most entries the table holds; new flows beyond it are refused.
    pub max_entries: usize,
    pub timeouts: Timeouts,
}

/// Why a packet was not translated.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NatError {
    /// not a well-formed IPv4 packet with a complete transport header
    #[error("not a well-formed IPv4 packet with a complete transport header")]
    Malformed,
    /// a protocol, ICMP message or fragment NAT cannot translate
    #[error("a protocol, ICMP message or fragment NAT cannot translate")]
    Untranslatable,
    /// no entry and no rule for a packet from outside (or a reply arriving from the wrong side)
    #[error("no entry and no rule for this packet")]
    Unsolicited,
    /// every port of the public address is in use
    #[error("every port of the public address is in use")]
    PortsExhausted,
    /// the table holds max_entries
    #[error("the NAT table is full")]
    TableFull,
}

impl NatError {
    /// The drop counter this error is counted under.
    pub fn drop_reason(self) -> DropReason {
        match self {
            NatError::Malformed => DropReason::Malformed,
            NatError::Untranslatable => DropReason::NatUntranslatable,
            NatError::Unsolicited => DropReason::NatUnsolicited,
            NatError::PortsExhausted => DropReason::NatPortsExhausted,
            NatError::TableFull => DropReason::NatTableFull,
        }
    }
}

/// Totals since the NAT started.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NatStats {
    pub created: u64,
    pub expired: u64,
    pub translated: u64,
    pub icmp_errors_translated: u64,
    pub unsolicited: u64,
    pub ports_exhausted: u64,
    pub table_full: u64,
}

#[derive(Clone, Debug)]
struct Entry {
    orig: Tuple,
    reply: Tuple,
    /// The side `orig` arrives from: inside for SNAT, outside for DNAT.
    orig_side: Side,
    /// The SNAT port this entry holds, released when it expires.
    snat_port: Option<(Proto, Ipv4Addr, u16)>,
    tcp: TcpState,
    expires: Instant,
    packets: [u64; 2],
}

impl Entry {
    fn timeout(&self, t: &Timeouts) -> Duration {
        match (self.orig.proto, self.tcp) {
            (Proto::Tcp, TcpState::Established) => t.tcp_established,
            (Proto::Tcp, _) => t.tcp_transitory,
            (Proto::Udp, _) => t.udp,
            (Proto::Icmp, _) => t.icmp,
        }
    }
}

/// One row of `d11 show NODE nat`, like a line of `conntrack -L`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NatEntryView {
    pub proto: String,
    pub state: String,
    pub src: String,
    pub dst: String,
    pub reply_src: String,
    pub reply_dst: String,
    pub expires_in_s: u64,
    pub packets_orig: u64,
    pub packets_reply: u64,
}

/// Conntrack + NAPT + static DNAT.
#[derive(Debug)]
pub struct Nat {
    cfg: NatConfig,
    entries: FastMap<u64, Entry>,
    by_tuple: FastMap<Tuple, (u64, Dir)>,
    used_ports: FastMap<(Proto, Ipv4Addr, u16), u64>,
    /// Deadlines, checked lazily: an entry refreshed since is pushed again when popped.
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    next_id: u64,
    /// Where the port search of each public address resumes.
    cursor: u16,
    stats: NatStats,
}

/// Offsets of the transport checksum within the transport header.
fn l4_checksum_at(p: Proto) -> usize {
    match p {
        Proto::Tcp => 16,
        Proto::Udp => 6,
        Proto::Icmp => 2,
    }
}

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    if let Some(s) = b.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

/// The ports of a transport header (`l4`, at least 8 bytes): TCP/UDP ports or
/// the echo identifier twice. `None` for ICMP other than echo.
fn ports(proto: Proto, l4: &[u8]) -> Option<(u16, u16)> {
    match proto {
        Proto::Tcp | Proto::Udp => Some((be16(l4, 0)?, be16(l4, 2)?)),
        Proto::Icmp => match l4.first()? {
            &ICMP_ECHO_REQUEST | &ICMP_ECHO_REPLY => {
                let id = be16(l4, 4)?;
                Some((id, id))
            }
            _ => None,
        },
    }
}

/// Rewrites the transport header `l4` from tuple `from` to `to`: ports, and
/// the checksum incrementally (the pseudo-header addresses for TCP and UDP).
/// A checksum outside `l4` (a truncated quote) is left alone.
fn rewrite_l4(l4: &mut [u8], from: Tuple, to: Tuple) {
    let at = l4_checksum_at(from.proto);
    let old_sum = be16(l4, at);
    let mut c = old_sum.unwrap_or(0);
    match from.proto {
        Proto::Tcp | Proto::Udp => {
            put16(l4, 0, to.src.port());
            put16(l4, 2, to.dst.port());
            c = checksum::update_u32(c, u32::from(*from.src.ip()), u32::from(*to.src.ip()));
            c = checksum::update_u32(c, u32::from(*from.dst.ip()), u32::from(*to.dst.ip()));
            c = checksum::update_word(c, from.src.port(), to.src.port());
            c = checksum::update_word(c, from.dst.port(), to.dst.port());
        }
        Proto::Icmp => {
            put16(l4, 4, to.src.port());
            c = checksum::update_word(c, from.src.port(), to.src.port());
        }
    }
    match (from.proto, old_sum) {
        // UDP: zero means "no checksum" and stays zero; a computed zero is sent as all ones [RFC 768].
        (Proto::Udp, Some(0)) | (_, None) => {}
        (Proto::Udp, Some(_)) if c == 0 => put16(l4, at, 0xffff),
        _ => put16(l4, at, c),
    }
}

/// Rewrites an IPv4 header's addresses (incremental header checksum).
fn rewrite_ip<T: AsRef<[u8]> + AsMut<[u8]>>(ip: &mut Ipv4Packet<T>, from: Tuple, to: Tuple) {
    if from.src.ip() != to.src.ip() {
        ip.set_src(*to.src.ip());
    }
    if from.dst.ip() != to.dst.ip() {
        ip.set_dst(*to.dst.ip());
    }
}

/// The reply tuple of `t` source-translated to `ip:port`. An echo reply
/// carries the identifier in its one field, so its "source port" is the
/// mapped identifier too.
fn snat_reply(t: Tuple, ip: Ipv4Addr, port: u16) -> Tuple {
    let src = match t.proto {
        Proto::Icmp => SocketAddrV4::new(*t.dst.ip(), port),
        Proto::Tcp | Proto::Udp => t.dst,
    };
    Tuple {
        proto: t.proto,
        src,
        dst: SocketAddrV4::new(ip, port),
    }
}

impl Nat {
    pub fn new(cfg: NatConfig) -> Nat {
        Nat {
            cursor: *cfg.snat.as_ref().map_or(&0, |p| p.ports.start()),
            cfg,
            entries: FastMap::default(),
            by_tuple: FastMap::default(),
            used_ports: FastMap::default(),
            deadlines: BinaryHeap::new(),
            next_id: 0,
            stats: NatStats::default(),
        }
    }

    /// Number of entries (live or not yet swept).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn stats(&self) -> &NatStats {
        &self.stats
    }

    /// Translates the IPv4 packet `packet` (bytes past its total length are
    /// ignored) that arrived on `side`, creating an entry for a new flow
    /// when SNAT (from inside) or a DNAT rule (from outside) allows it.
    pub fn translate(
        &mut self,
        now: Instant,
        side: Side,
        packet: &mut [u8],
    ) -> Result<(), NatError> {
        let r = self.translate_inner(now, side, packet);
        match r {
            Ok(()) => self.stats.translated += 1,
            Err(NatError::Unsolicited) => self.stats.unsolicited += 1,
            Err(NatError::PortsExhausted) => self.stats.ports_exhausted += 1,
            Err(NatError::TableFull) => self.stats.table_full += 1,
            Err(_) => {}
        }
        r
    }

    fn translate_inner(
        &mut self,
        now: Instant,
        side: Side,
        packet: &mut [u8],
    ) -> Result<(), NatError> {
        let mut ip = Ipv4Packet::new_checked(packet).map_err(|_| NatError::Malformed)?;
        if ip.more_frags() || ip.frag_offset() != 0 {
            // Later fragments carry no ports; reassembly is not this module's job.
            return Err(NatError::Untranslatable);
        }
        let proto = Proto::from_ip(ip.protocol()).ok_or(NatError::Untranslatable)?;
        let (src, dst) = (ip.src(), ip.dst());
        let l4 = ip.payload();
        if l4.len() < 8 || (proto == Proto::Tcp && l4.len() < 20) {
            return Err(NatError::Malformed);
        }
        if proto == Proto::Icmp && ports(proto, l4).is_none() {
            return self.translate_icmp_error(side, ip);
        }
        let (sp, dp) = ports(proto, l4).ok_or(NatError::Untranslatable)?;
        let t = Tuple {
            proto,
            src: SocketAddrV4::new(src, sp),
            dst: SocketAddrV4::new(dst, dp),
        };
        let (id, dir) = match self.by_tuple.get(&t) {
            Some(&found) => found,
            None => (self.create(now, side, t)?, Dir::Orig),
        };
        let e = self.entries.get_mut(&id).ok_or(NatError::Unsolicited)?;
        let from_orig_side = e.orig_side == side;
        if from_orig_side != (dir == Dir::Orig) {
            return Err(NatError::Unsolicited);
        }
        let to = match dir {
            Dir::Orig => e.reply.inverse(),
            Dir::Reply => e.orig.inverse(),
        };
        if proto == Proto::Tcp {
            let flags = ip.payload()[13];
            let (fin, rst, ack) = (flags & 0x01 != 0, flags & 0x04 != 0, flags & 0x10 != 0);
            e.tcp = match e.tcp {
                _ if fin || rst => TcpState::Closing,
                TcpState::Opening if dir == Dir::Reply && ack => TcpState::Established,
                s => s,
            };
        }
        e.packets[dir as usize] += 1;
        let expires = now + e.timeout(&self.cfg.timeouts);
        if expires < e.expires {
            // A shorter timeout (a closing TCP connection) needs its own deadline.
            self.deadlines.push(Reverse((expires, id)));
        }
        e.expires = expires;
        rewrite_ip(&mut ip, t, to);
        rewrite_l4(ip.payload_mut(), t, to);
        Ok(())
    }

    /// An ICMP error [RFC 5508 § 4]: the quoted packet is one this NAT
    /// translated, travelling the other way. The outer destination, the
    /// quoted addresses and ports, and every checksum follow the entry.
    fn translate_icmp_error(
        &mut self,
        side: Side,
        mut ip: Ipv4Packet<&mut [u8]>,
    ) -> Result<(), NatError> {
        let icmp = ip.payload();
        if !matches!(icmp[0], 3 | 4 | 5 | 11 | 12) {
            return Err(NatError::Untranslatable);
        }
        let inner = &icmp[8..];
        let ihl = usize::from(inner.first().ok_or(NatError::Malformed)? & 0x0f) * 4;
        if inner.first().map(|b| b >> 4) != Some(4) || ihl < 20 || inner.len() < ihl + 8 {
            return Err(NatError::Malformed);
        }
        let proto = Proto::from_ip(inner[9]).ok_or(NatError::Untranslatable)?;
        let (sp, dp) = ports(proto, &inner[ihl..]).ok_or(NatError::Untranslatable)?;
        let quoted = Tuple {
            proto,
            src: SocketAddrV4::new(
                Ipv4Addr::new(inner[12], inner[13], inner[14], inner[15]),
                sp,
            ),
            dst: SocketAddrV4::new(
                Ipv4Addr::new(inner[16], inner[17], inner[18], inner[19]),
                dp,
            ),
        };
        // The quoted packet went out translated, as the inverse of the tuple
        // of the direction this error travels in.
        let &(id, dir) = self
            .by_tuple
            .get(&quoted.inverse())
            .ok_or(NatError::Unsolicited)?;
        let e = self.entries.get(&id).ok_or(NatError::Unsolicited)?;
        if (e.orig_side == side) != (dir == Dir::Orig) {
            return Err(NatError::Unsolicited);
        }
        let (this, other) = match dir {
            Dir::Orig => (e.orig, e.reply),
            Dir::Reply => (e.reply, e.orig),
        };
        // Outer header: to where the flow's packets in this direction go; the
        // source changes only if the flow's own peer sent the error.
        let outer_from = Tuple {
            proto,
            src: SocketAddrV4::new(ip.src(), 0),
            dst: SocketAddrV4::new(ip.dst(), 0),
        };
        let new_src = if ip.src() == *this.src.ip() {
            *other.dst.ip()
        } else {
            ip.src()
        };
        let outer_to = Tuple {
            proto,
            src: SocketAddrV4::new(new_src, 0),
            dst: SocketAddrV4::new(*other.src.ip(), 0),
        };
        rewrite_ip(&mut ip, outer_from, outer_to);
        // Quoted header: back to the packet as its sender wrote it.
        let icmp = ip.payload_mut();
        let inner = &mut icmp[8..];
        let old_hc = be16(inner, 10).unwrap_or(0);
        let mut hc = checksum::update_u32(
            old_hc,
            u32::from(*quoted.src.ip()),
            u32::from(*other.src.ip()),
        );
        hc = checksum::update_u32(hc, u32::from(*quoted.dst.ip()), u32::from(*other.dst.ip()));
        inner[12..16].copy_from_slice(&other.src.ip().octets());
        inner[16..20].copy_from_slice(&other.dst.ip().octets());
        put16(inner, 10, hc);
        rewrite_l4(&mut inner[ihl..], quoted, other);
        put16(icmp, 2, 0);
        let c = checksum::checksum(icmp);
        put16(icmp, 2, c);
        self.stats.icmp_errors_translated += 1;
        Ok(())
    }

    /// A new entry for `t` arriving on `side`, if SNAT or a DNAT rule allows it.
    fn create(&mut self, now: Instant, side: Side, t: Tuple) -> Result<u64, NatError> {
        let rule = self
            .cfg
            .dnat
            .iter()
            .find(|r| r.proto == t.proto && r.public == t.dst)
            .copied();
        match side {
            Side::Outside if rule.is_none() => return Err(NatError::Unsolicited),
            Side::Inside if self.cfg.snat.is_none() => return Err(NatError::Unsolicited),
            _ => {}
        }
        if self.entries.len() >= self.cfg.max_entries {
            self.expire(now);
            if self.entries.len() >= self.cfg.max_entries {
                return Err(NatError::TableFull);
            }
        }
        let reply = match side {
            Side::Outside => {
                let rule = rule.ok_or(NatError::Unsolicited)?;
                let private = if t.proto == Proto::Icmp {
                    SocketAddrV4::new(*rule.private.ip(), t.dst.port())
                } else {
                    rule.private
                };
                Tuple {
                    proto: t.proto,
                    src: private,
                    dst: t.src,
                }
            }
            Side::Inside => {
                let (pub_ip, port) = self.allocate(t)?;
                snat_reply(t, pub_ip, port)
            }
        };
        if self.by_tuple.contains_key(&reply) {
            // Another flow already answers to that tuple (a DNAT client reusing a port).
            return Err(NatError::Unsolicited);
        }
        let id = self.next_id;
        self.next_id += 1;
        let snat_port =
            (side == Side::Inside).then(|| (t.proto, *reply.dst.ip(), reply.dst.port()));
        if let Some(k) = snat_port {
            self.used_ports.insert(k, id);
        }
        let mut e = Entry {
            orig: t,
            reply,
            orig_side: side,
            snat_port,
            tcp: TcpState::Opening,
            expires: now,
            packets: [0; 2],
        };
        e.expires = now + e.timeout(&self.cfg.timeouts);
        self.deadlines.push(Reverse((e.expires, id)));
        tracing::info!(orig = %t, reply = %reply, "nat entry");
        self.by_tuple.insert(t, (id, Dir::Orig));
        self.by_tuple.insert(reply, (id, Dir::Reply));
        self.entries.insert(id, e);
        self.stats.created += 1;
        Ok(id)
    }

    /// A public address and port for `t`: the address paired with the inside
    /// host (RFC 4787 REQ-2), its source port if free (port preservation),
    /// else the next free port from the cursor.
    fn allocate(&mut self, t: Tuple) -> Result<(Ipv4Addr, u16), NatError> {
        let pool = self.cfg.snat.as_ref().ok_or(NatError::Unsolicited)?;
        if pool.addrs.is_empty() || pool.ports.is_empty() {
            return Err(NatError::PortsExhausted);
        }
        let h = u32::from(*t.src.ip()).wrapping_mul(0x9e37_79b1) >> 16;
        let ip = pool.addrs[h as usize % pool.addrs.len()];
        let (lo, hi) = (*pool.ports.start(), *pool.ports.end());
        let free = |p: u16| {
            !self.used_ports.contains_key(&(t.proto, ip, p))
                && !self.by_tuple.contains_key(&snat_reply(t, ip, p))
        };
        if pool.ports.contains(&t.src.port()) && free(t.src.port()) {
            return Ok((ip, t.src.port()));
        }
        let span = u32::from(hi - lo) + 1;
        let start = self.cursor.clamp(lo, hi);
        for i in 0..span {
            let p = lo + ((u32::from(start - lo) + i) % span) as u16;
            if free(p) {
                self.cursor = if p == hi { lo } else { p + 1 };
                return Ok((ip, p));
            }
        }
        Err(NatError::PortsExhausted)
    }

    /// Removes every entry idle past its timeout.
    pub fn expire(&mut self, now: Instant) {
        while let Some(&Reverse((at, id))) = self.deadlines.peek() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            let Some(e) = self.entries.get(&id) else {
                continue;
            };
            if e.expires > now {
                self.deadlines.push(Reverse((e.expires, id)));
                continue;
            }
            let e = self.entries.remove(&id).expect("entry looked up above");
            self.by_tuple.remove(&e.orig);
            self.by_tuple.remove(&e.reply);
            if let Some(k) = e.snat_port {
                self.used_ports.remove(&k);
            }
            self.stats.expired += 1;
            tracing::info!(orig = %e.orig, "nat entry expired");
        }
    }

    /// When [`Nat::expire`] next has work (possibly early: refreshed entries
    /// are rescheduled then).
    pub fn poll_at(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((at, _))| *at)
    }

    /// The entries for `report()`, oldest first.
    pub fn entries(&self, now: Instant) -> Vec<NatEntryView> {
        let mut ids: Vec<&u64> = self.entries.keys().collect();
        ids.sort_unstable();
        ids.into_iter()
            .filter_map(|id| self.entries.get(id))
            .map(|e| NatEntryView {
                proto: e.orig.proto.name().into(),
                state: match (e.orig.proto, e.tcp) {
                    (Proto::Tcp, TcpState::Opening) => "opening",
                    (Proto::Tcp, TcpState::Established) => "established",
                    (Proto::Tcp, TcpState::Closing) => "closing",
                    _ if e.packets[1] > 0 => "replied",
                    _ => "unreplied",
                }
                .into(),
                src: e.orig.src.to_string(),
                dst: e.orig.dst.to_string(),
                reply_src: e.reply.src.to_string(),
                reply_dst: e.reply.dst.to_string(),
                expires_in_s: e.expires.saturating_since(now).as_secs(),
                packets_orig: e.packets[0],
                packets_reply: e.packets[1],
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use d11_wire::ipv4::Ipv4Repr;

    const UE: Ipv4Addr = Ipv4Addr::new(10, 45, 0, 2);
    const SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
    const PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 128);
    const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

    fn snat(ports: std::ops::RangeInclusive<u16>, max: usize) -> Nat {
        Nat::new(NatConfig {
            snat: Some(SnatPool {
                addrs: vec![PUBLIC],
                ports,
            }),
            dnat: vec![],
            max_entries: max,
            timeouts: Timeouts::default(),
        })
    }

    /// An IPv4 packet with a transport header `l4` whose checksum is computed here.
    fn packet(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        Ipv4Repr {
            src,
            dst,
            protocol: proto,
            ttl: 64,
            ident: 1,
            dont_frag: true,
            payload_len: l4.len(),
        }
        .emit(&mut b);
        b.extend_from_slice(l4);
        let at = 20
            + match proto {
                protocol::TCP => 16,
                protocol::UDP => 6,
                _ => 2,
            };
        let c = match proto {
            protocol::ICMP => checksum::checksum(l4),
            _ => !checksum::fold(
                checksum::pseudo_header_sum(src, dst, proto, l4.len() as u16) + checksum::sum(l4),
            ),
        };
        if let Some(f) = b.get_mut(at..at + 2) {
            f.copy_from_slice(&c.to_be_bytes());
        }
        b
    }

    fn udp(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16) -> Vec<u8> {
        let mut l4 = vec![0u8; 12];
        l4[0..2].copy_from_slice(&sp.to_be_bytes());
        l4[2..4].copy_from_slice(&dp.to_be_bytes());
        l4[4..6].copy_from_slice(&12u16.to_be_bytes());
        l4[8..12].copy_from_slice(b"d11!");
        packet(src, dst, protocol::UDP, &l4)
    }

    fn tcp(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16, flags: u8) -> Vec<u8> {
        let mut l4 = vec![0u8; 20];
        l4[0..2].copy_from_slice(&sp.to_be_bytes());
        l4[2..4].copy_from_slice(&dp.to_be_bytes());
        l4[12] = 5 << 4;
        l4[13] = flags;
        packet(src, dst, protocol::TCP, &l4)
    }

    fn echo(src: Ipv4Addr, dst: Ipv4Addr, ty: u8, id: u16) -> Vec<u8> {
        let mut l4 = vec![ty, 0, 0, 0, 0, 0, 0, 1, 0xab, 0xcd];
        l4[4..6].copy_from_slice(&id.to_be_bytes());
        packet(src, dst, protocol::ICMP, &l4)
    }

    /// Every checksum in `p` verifies: IP header, and the transport one over the pseudo-header.
    fn checksums_ok(p: &[u8]) -> bool {
        let ip = Ipv4Packet::new_checked(p).unwrap();
        let l4 = ip.payload();
        let l4_ok = match ip.protocol() {
            protocol::ICMP => checksum::fold(checksum::sum(l4)) == 0xffff,
            pr => {
                checksum::fold(
                    checksum::pseudo_header_sum(ip.src(), ip.dst(), pr, l4.len() as u16)
                        + checksum::sum(l4),
                ) == 0xffff
            }
        };
        ip.verify_checksum() && l4_ok
    }

    fn addrs(p: &[u8]) -> (SocketAddrV4, SocketAddrV4) {
        let ip = Ipv4Packet::new_checked(p).unwrap();
        let l = ip.payload();
        (
            SocketAddrV4::new(ip.src(), u16::from_be_bytes([l[0], l[1]])),
            SocketAddrV4::new(ip.dst(), u16::from_be_bytes([l[2], l[3]])),
        )
    }

    const T0: Instant = Instant::ZERO;

    #[test]
    fn udp_from_inside_leaves_with_the_public_address_and_the_reply_comes_back() {
        let mut nat = snat(1024..=65535, 100);
        let mut p = udp(UE, 40000, SERVER, 53);
        nat.translate(T0, Side::Inside, &mut p).unwrap();
        assert_eq!(
            addrs(&p),
            (
                "198.51.100.128:40000".parse().unwrap(),
                "192.0.2.100:53".parse().unwrap()
            )
        );
        assert!(checksums_ok(&p));
        let mut r = udp(SERVER, 53, PUBLIC, 40000);
        nat.translate(T0, Side::Outside, &mut r).unwrap();
        assert_eq!(
            addrs(&r),
            (
                "192.0.2.100:53".parse().unwrap(),
                "10.45.0.2:40000".parse().unwrap()
            )
        );
        assert!(checksums_ok(&r));
        let v = nat.entries(T0);
        assert_eq!(v.len(), 1);
        assert_eq!(
            (v[0].src.as_str(), v[0].reply_dst.as_str()),
            ("10.45.0.2:40000", "198.51.100.128:40000")
        );
        assert_eq!(
            (v[0].packets_orig, v[0].packets_reply, v[0].state.as_str()),
            (1, 1, "replied")
        );
    }

    #[test]
    fn echo_identifier_is_mapped_and_the_reply_restored() {
        let mut nat = snat(1024..=65535, 100);
        let mut p = echo(UE, SERVER, 8, 7);
        nat.translate(T0, Side::Inside, &mut p).unwrap();
        assert!(checksums_ok(&p));
        let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
        let id = u16::from_be_bytes([ip.payload()[4], ip.payload()[5]]);
        assert_eq!(ip.src(), PUBLIC);
        assert!(
            (1024..=65535).contains(&id),
            "id 7 is outside the pool, so remapped: {id}"
        );
        let mut r = echo(SERVER, PUBLIC, 0, id);
        nat.translate(T0, Side::Outside, &mut r).unwrap();
        let ip = Ipv4Packet::new_checked(&r[..]).unwrap();
        assert_eq!(
            (
                ip.dst(),
                u16::from_be_bytes([ip.payload()[4], ip.payload()[5]])
            ),
            (UE, 7)
        );
        assert!(checksums_ok(&r));
    }

    #[test]
    fn unsolicited_inbound_is_refused_and_counted() {
        let mut nat = snat(1024..=65535, 100);
        let mut p = udp(SERVER, 53, PUBLIC, 40000);
        let before = p.clone();
        assert_eq!(
            nat.translate(T0, Side::Outside, &mut p),
            Err(NatError::Unsolicited)
        );
        assert_eq!(p, before, "a refused packet is untouched");
        assert_eq!(nat.stats().unsolicited, 1);
        assert!(nat.is_empty());
        // A packet from outside spoofing the inside tuple matches no reply direction either.
        let mut q = udp(UE, 40000, SERVER, 53);
        nat.translate(T0, Side::Inside, &mut q).unwrap();
        let mut spoof = udp(UE, 40000, SERVER, 53);
        assert_eq!(
            nat.translate(T0, Side::Outside, &mut spoof),
            Err(NatError::Unsolicited)
        );
    }

    #[test]
    fn a_thousand_flows_get_distinct_mappings() {
        let mut nat = snat(1024..=65535, 10_000);
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000u16 {
            // same source port to different servers: port preservation works only once
            let mut p = udp(UE, 5000, Ipv4Addr::from(0xc000_0200 + u32::from(i)), 53);
            nat.translate(T0, Side::Inside, &mut p).unwrap();
            assert!(seen.insert(addrs(&p).0), "mapping reused at flow {i}");
        }
        assert_eq!(nat.len(), 1000);
    }

    #[test]
    fn more_flows_than_ports_are_refused_cleanly_and_ports_come_back_after_expiry() {
        let mut nat = snat(2000..=2009, 100);
        for i in 0..10u16 {
            nat.translate(T0, Side::Inside, &mut udp(UE, 3000 + i, SERVER, 53))
                .unwrap();
        }
        let mut p = udp(UE, 4000, SERVER, 53);
        assert_eq!(
            nat.translate(T0, Side::Inside, &mut p),
            Err(NatError::PortsExhausted)
        );
        assert_eq!(nat.stats().ports_exhausted, 1);
        let later = T0 + Timeouts::default().udp + Duration::from_secs(1);
        assert!(nat.poll_at().unwrap() <= later);
        nat.expire(later);
        assert!(nat.is_empty());
        assert_eq!(nat.stats().expired, 10);
        nat.translate(later, Side::Inside, &mut p).unwrap();
    }

    #[test]
    fn the_table_bound_refuses_new_flows() {
        let mut nat = snat(1024..=65535, 3);
        for i in 0..3u16 {
            nat.translate(T0, Side::Inside, &mut udp(UE, 3000 + i, SERVER, 53))
                .unwrap();
        }
        assert_eq!(
            nat.translate(T0, Side::Inside, &mut udp(UE, 9, SERVER, 53)),
            Err(NatError::TableFull)
        );
        assert_eq!(nat.stats().table_full, 1);
    }

    #[test]
    fn traffic_keeps_an_entry_alive_and_idle_ones_expire() {
        let mut nat = snat(1024..=65535, 100);
        let icmp = Timeouts::default().icmp;
        nat.translate(T0, Side::Inside, &mut echo(UE, SERVER, 8, 1))
            .unwrap();
        nat.translate(T0, Side::Inside, &mut echo(UE, SERVER, 8, 2))
            .unwrap();
        let half = T0 + icmp / 2;
        nat.translate(half, Side::Inside, &mut echo(UE, SERVER, 8, 1))
            .unwrap();
        nat.expire(T0 + icmp + Duration::from_secs(1));
        assert_eq!(nat.len(), 1, "the refreshed echo flow stays");
        nat.expire(half + icmp + Duration::from_secs(1));
        assert!(nat.is_empty());
    }

    #[test]
    fn tcp_timeout_follows_the_connection_state() {
        let mut nat = snat(1024..=65535, 100);
        let t = Timeouts::default();
        let (syn, ack, fin) = (0x02, 0x10, 0x01);
        nat.translate(T0, Side::Inside, &mut tcp(UE, 40000, SERVER, 80, syn))
            .unwrap();
        assert_eq!(nat.entries(T0)[0].state, "opening");
        assert_eq!(nat.entries(T0)[0].expires_in_s, t.tcp_transitory.as_secs());
        nat.translate(
            T0,
            Side::Outside,
            &mut tcp(SERVER, 80, PUBLIC, 40000, syn | ack),
        )
        .unwrap();
        assert_eq!(nat.entries(T0)[0].state, "established");
        assert_eq!(nat.entries(T0)[0].expires_in_s, t.tcp_established.as_secs());
        nat.expire(T0 + t.tcp_transitory + Duration::from_secs(1));
        assert_eq!(nat.len(), 1, "established outlives the transitory timeout");
        let now = T0 + Duration::from_secs(600);
        nat.translate(
            now,
            Side::Inside,
            &mut tcp(UE, 40000, SERVER, 80, fin | ack),
        )
        .unwrap();
        assert_eq!(nat.entries(now)[0].state, "closing");
        nat.expire(now + t.tcp_transitory + Duration::from_secs(1));
        assert!(nat.is_empty());
    }

    /// An ICMP error about `quoted` (its header and first 8 payload bytes), from `from` to `to`.
    fn icmp_error(from: Ipv4Addr, to: Ipv4Addr, ty: u8, quoted: &[u8]) -> Vec<u8> {
        let mut l4 = vec![ty, 0, 0, 0, 0, 0, 0, 0];
        l4.extend_from_slice(&quoted[..28]);
        packet(from, to, protocol::ICMP, &l4)
    }

    #[test]
    fn time_exceeded_from_a_router_is_translated_inner_header_included() {
        let mut nat = snat(1024..=65535, 100);
        let orig = udp(UE, 33434, SERVER, 33435);
        let mut out = orig.clone();
        nat.translate(T0, Side::Inside, &mut out).unwrap();
        let mut err = icmp_error(ROUTER, PUBLIC, 11, &out);
        nat.translate(T0, Side::Outside, &mut err).unwrap();
        assert!(checksums_ok(&err));
        let ip = Ipv4Packet::new_checked(&err[..]).unwrap();
        assert_eq!((ip.src(), ip.dst()), (ROUTER, UE));
        let inner = &ip.payload()[8..];
        assert_eq!(
            inner,
            &orig[..28],
            "the quote is the UE's packet exactly as it sent it"
        );
        assert_eq!(nat.stats().icmp_errors_translated, 1);
    }

    #[test]
    fn port_unreachable_from_the_server_about_an_echo_is_translated() {
        let mut nat = snat(1..=1, 100);
        let orig = echo(UE, SERVER, 8, 9);
        let mut out = orig.clone();
        nat.translate(T0, Side::Inside, &mut out).unwrap();
        let mut err = icmp_error(SERVER, PUBLIC, 3, &out);
        nat.translate(T0, Side::Outside, &mut err).unwrap();
        assert!(checksums_ok(&err));
        let ip = Ipv4Packet::new_checked(&err[..]).unwrap();
        assert_eq!((ip.src(), ip.dst()), (SERVER, UE));
        assert_eq!(&ip.payload()[8..36], &orig[..28]);
    }

    #[test]
    fn icmp_error_about_an_unknown_flow_is_unsolicited() {
        let mut nat = snat(1024..=65535, 100);
        let stray = udp(PUBLIC, 1111, SERVER, 53);
        let mut err = icmp_error(ROUTER, PUBLIC, 11, &stray);
        assert_eq!(
            nat.translate(T0, Side::Outside, &mut err),
            Err(NatError::Unsolicited)
        );
    }

    #[test]
    fn dnat_sends_a_vip_flow_to_the_private_backend_and_the_reply_back_from_the_vip() {
        let vip: SocketAddrV4 = "203.0.113.24:443".parse().unwrap();
        let backend: SocketAddrV4 = "192.168.1.10:443".parse().unwrap();
        let client = Ipv4Addr::new(198, 51, 100, 128);
        let mut nat = Nat::new(NatConfig {
            snat: None,
            dnat: vec![DnatRule {
                proto: Proto::Tcp,
                public: vip,
                private: backend,
            }],
            max_entries: 100,
            timeouts: Timeouts::default(),
        });
        let mut syn = tcp(client, 40000, *vip.ip(), 443, 0x02);
        nat.translate(T0, Side::Outside, &mut syn).unwrap();
        assert_eq!(
            addrs(&syn),
            ("198.51.100.128:40000".parse().unwrap(), backend)
        );
        assert!(checksums_ok(&syn));
        let mut synack = tcp(*backend.ip(), 443, client, 40000, 0x12);
        nat.translate(T0, Side::Inside, &mut synack).unwrap();
        assert_eq!(
            addrs(&synack),
            (vip, "198.51.100.128:40000".parse().unwrap())
        );
        assert!(checksums_ok(&synack));
        assert_eq!(nat.entries(T0)[0].state, "established");
        // Another port on the VIP has no rule; inside-initiated flows have no SNAT here.
        assert_eq!(
            nat.translate(
                T0,
                Side::Outside,
                &mut tcp(client, 40001, *vip.ip(), 22, 0x02)
            ),
            Err(NatError::Unsolicited)
        );
        assert_eq!(
            nat.translate(
                T0,
                Side::Inside,
                &mut tcp(*backend.ip(), 5, client, 6, 0x02)
            ),
            Err(NatError::Unsolicited)
        );
    }

    #[test]
    fn fragments_other_protocols_and_short_headers_are_refused_without_panic() {
        let mut nat = snat(1024..=65535, 100);
        let mut frag = udp(UE, 1, SERVER, 2);
        frag[6] = 0x20; // MF
        frag[10..12].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&frag[..20]);
        frag[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(
            nat.translate(T0, Side::Inside, &mut frag),
            Err(NatError::Untranslatable)
        );
        let mut gre = packet(UE, SERVER, 47, &[0; 8]);
        assert_eq!(
            nat.translate(T0, Side::Inside, &mut gre),
            Err(NatError::Untranslatable)
        );
        let mut short = packet(UE, SERVER, protocol::TCP, &[0; 8]);
        assert_eq!(
            nat.translate(T0, Side::Inside, &mut short),
            Err(NatError::Malformed)
        );
        assert_eq!(
            nat.translate(T0, Side::Inside, &mut [0x45, 0, 0]),
            Err(NatError::Malformed)
        );
        assert!(nat.is_empty());
    }

    #[test]
    fn udp_without_checksum_keeps_zero() {
        let mut nat = snat(1024..=65535, 100);
        let mut p = udp(UE, 40000, SERVER, 53);
        p[26..28].copy_from_slice(&[0, 0]);
        nat.translate(T0, Side::Inside, &mut p).unwrap();
        assert_eq!(&p[26..28], &[0, 0]);
    }
}
