//! A GTPv2-C endpoint on the element layer's UDP 2123: the transactions
//! under S11 (MME–SGW) and S5-C (SGW–PGW).
//!
//! Read TS 29.274 § 7.6 first (reliable delivery: a request is sent again
//! after T3-RESPONSE, at most N3-REQUESTS times; a retransmitted request,
//! known by its peer and sequence number, gets the response already sent,
//! not a second one; the response goes to the request's source address and
//! port), § 7.8 (Echo: an Echo Request is answered with an Echo Response
//! carrying the Recovery IE; the path is checked every 60 s at most) and
//! § 7.1.1 (the Recovery counter: a peer whose counter changed has
//! restarted and lost its sessions, TS 23.007 § 16.1.1).
//!
//! The element's own messages ride [`GtpcEndpoint::request`] and
//! [`GtpcEndpoint::respond`]; what arrives for it comes out of
//! [`GtpcEndpoint::incoming`]. Echo is handled here. Our Recovery counter is
//! drawn from the context's RNG when the element starts (the element keeps
//! no state across restarts; the real driver seeds the RNG from the clock),
//! so a restart shows as a new value.

use d11_core::l3::UdpHandle;
use d11_core::{Ctx, Instant, Outbox, L3};
use d11_wire::gtpv2c::ie::{self, Fteid};
use d11_wire::gtpv2c::{self, find, ie_type, msg, GtpcPacket, MessageBuilder};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

/// T3-RESPONSE and N3-REQUESTS [TS 29.274 § 7.6: operator's choice].
pub const T3: Duration = Duration::from_secs(3);
pub const N3: u32 = 3;
/// How often a path is echoed [TS 29.274 § 7.8: not more often than 60 s].
pub const ECHO_INTERVAL: Duration = Duration::from_secs(60);

/// Where a request goes and its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTo {
    pub peer: Ipv4Addr,
    pub msg_type: u8,
    /// The peer's TEID for the session, None for Echo (no T flag).
    pub teid: Option<u32>,
}

/// What the endpoint hands the element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A request (not Echo) to answer with [`GtpcEndpoint::respond`].
    Request {
        from: SocketAddrV4,
        seq: u32,
        msg: Vec<u8>,
    },
    /// The response to our request `seq`.
    Response { seq: u32, msg: Vec<u8> },
    /// Our request `seq` went unanswered N3 times.
    Timeout { seq: u32, peer: Ipv4Addr },
    /// The peer's Recovery counter changed: it restarted.
    PeerRestarted { peer: Ipv4Addr },
}

/// What the endpoint counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GtpcCounters {
    pub requests_sent: u64,
    pub retransmissions: u64,
    pub timeouts: u64,
    pub responses_received: u64,
    pub requests_received: u64,
    /// Retransmitted requests answered from the cache.
    pub duplicates_answered: u64,
    pub echoes: u64,
    /// Datagrams that are not GTPv2-C, or responses to no request.
    pub dropped: u64,
}

/// One peer in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRow {
    pub address: Ipv4Addr,
    pub recovery: Option<u8>,
    pub restarts: u64,
}

/// The endpoint's part of an element's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GtpcRow {
    pub local: SocketAddrV4,
    pub recovery: u8,
    pub peers: Vec<PeerRow>,
    pub outstanding: usize,
    pub counters: GtpcCounters,
}

#[derive(Debug)]
struct Pending {
    peer: SocketAddrV4,
    bytes: Vec<u8>,
    due: Instant,
    tries: u32,
    echo: bool,
}

#[derive(Debug, Default)]
struct Peer {
    recovery: Option<u8>,
    restarts: u64,
    echo_at: Option<Instant>,
}

/// A GTPv2-C endpoint.
#[derive(Debug)]
pub struct GtpcEndpoint {
    sock: UdpHandle,
    local: SocketAddrV4,
    recovery: u8,
    next_seq: u32,
    pending: BTreeMap<u32, Pending>,
    /// Responses sent, for retransmitted requests, until they expire.
    cache: HashMap<(SocketAddrV4, u32), (Vec<u8>, Instant)>,
    /// The cache's keys in the order they expire (each kept the same time
    /// after its response), so forgetting them is no scan of the cache.
    expiry: VecDeque<(Instant, (SocketAddrV4, u32))>,
    peers: BTreeMap<Ipv4Addr, Peer>,
    inbox: VecDeque<Incoming>,
    counters: GtpcCounters,
}

impl GtpcEndpoint {
    /// Binds UDP 2123 on `local`.
    pub fn bind(l3: &mut L3, cx: &mut Ctx, local: Ipv4Addr) -> Option<GtpcEndpoint> {
        let sock = l3.udp_bind(Some(local), gtpv2c::PORT).ok()?;
        Some(GtpcEndpoint {
            sock,
            local: SocketAddrV4::new(local, gtpv2c::PORT),
            recovery: (cx.rng.next_u64() % 255 + 1) as u8,
            next_seq: (cx.rng.next_u64() & 0xff_ffff) as u32,
            pending: BTreeMap::new(),
            cache: HashMap::new(),
            expiry: VecDeque::new(),
            peers: BTreeMap::new(),
            inbox: VecDeque::new(),
            counters: GtpcCounters::default(),
        })
    }

    pub fn recovery(&self) -> u8 {
        self.recovery
    }

    /// Echoes `peer` now and every [`ECHO_INTERVAL`].
    pub fn watch(&mut self, peer: Ipv4Addr) {
        self.peers.entry(peer).or_default().echo_at = Some(Instant::ZERO);
    }

    /// The next sequence number [TS 29.274 § 7.6: 24 bits].
    fn seq(&mut self) -> u32 {
        let s = self.next_seq;
        self.next_seq = (self.next_seq + 1) & 0xff_ffff;
        s
    }

    /// Sends a request that `build` fills in (its header made here from
    /// `to` and a new sequence number); returns the number.
    pub fn request(
        &mut self,
        l3: &mut L3,
        cx: &mut Ctx,
        out: &mut Outbox,
        to: RequestTo,
        build: impl FnOnce(&mut MessageBuilder),
    ) -> u32 {
        let RequestTo {
            peer,
            msg_type,
            teid,
        } = to;
        let seq = self.seq();
        let mut m = MessageBuilder::new(msg_type, teid, seq);
        build(&mut m);
        let bytes = m.finish();
        let to = SocketAddrV4::new(peer, gtpv2c::PORT);
        l3.udp_send(cx, self.local, to, &bytes, out);
        self.counters.requests_sent += 1;
        self.pending.insert(
            seq,
            Pending {
                peer: to,
                bytes,
                due: cx.now + T3,
                tries: 1,
                echo: msg_type == msg::ECHO_REQUEST,
            },
        );
        seq
    }

    /// Answers the request `seq` from `to` (its source port), keeping the
    /// answer for a retransmission of the request.
    pub fn respond(
        &mut self,
        l3: &mut L3,
        cx: &mut Ctx,
        out: &mut Outbox,
        to: SocketAddrV4,
        bytes: Vec<u8>,
    ) {
        let Ok(seq) = GtpcPacket::new_checked(&bytes[..]).map(|p| p.seq()) else {
            return;
        };
        l3.udp_send(cx, self.local, to, &bytes, out);
        let keep = cx.now + T3 * (N3 + 1);
        self.cache.insert((to, seq), (bytes, keep));
        self.expiry.push_back((keep, (to, seq)));
    }

    /// What arrived or timed out, for the element.
    pub fn incoming(&mut self) -> Option<Incoming> {
        self.inbox.pop_front()
    }

    /// When [`GtpcEndpoint::poll`] must run without a frame.
    pub fn poll_at(&self) -> Option<Instant> {
        let pending = self.pending.values().map(|p| p.due);
        let echo = self.peers.values().filter_map(|p| p.echo_at);
        let cache = self.expiry.front().map(|e| e.0);
        pending.chain(echo).chain(cache).min()
    }

    /// Reads datagrams, answers Echo, retransmits and times out requests,
    /// echoes watched peers, forgets old cached responses.
    pub fn poll(&mut self, l3: &mut L3, cx: &mut Ctx, out: &mut Outbox) {
        while let Some(d) = l3.udp_recv(self.sock) {
            self.datagram(l3, cx, out, d.from, &d.payload);
        }
        let now = cx.now;
        let due: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| p.due <= now)
            .map(|(&s, _)| s)
            .collect();
        for seq in due {
            let Some(p) = self.pending.get_mut(&seq) else {
                continue;
            };
            if p.tries >= N3 {
                let p = self.pending.remove(&seq).expect("found above");
                self.counters.timeouts += 1;
                if !p.echo {
                    self.inbox.push_back(Incoming::Timeout {
                        seq,
                        peer: *p.peer.ip(),
                    });
                }
                continue;
            }
            p.tries += 1;
            p.due = now + T3;
            self.counters.retransmissions += 1;
            let (peer, bytes) = (p.peer, p.bytes.clone());
            l3.udp_send(cx, self.local, peer, &bytes, out);
        }
        let echo_due: Vec<Ipv4Addr> = self
            .peers
            .iter()
            .filter(|(_, p)| p.echo_at.is_some_and(|t| t <= now))
            .map(|(&a, _)| a)
            .collect();
        for peer in echo_due {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.echo_at = Some(now + ECHO_INTERVAL);
            }
            let recovery = self.recovery;
            self.counters.echoes += 1;
            let to = RequestTo {
                peer,
                msg_type: msg::ECHO_REQUEST,
                teid: None,
            };
            self.request(l3, cx, out, to, |m| {
                m.ie(ie_type::RECOVERY, 0, &[recovery]);
            });
        }
        while let Some(&(keep, key)) = self.expiry.front() {
            if keep > now {
                break;
            }
            self.expiry.pop_front();
            // A key answered again later is kept until its own time.
            if self.cache.get(&key).is_some_and(|c| c.1 <= now) {
                self.cache.remove(&key);
            }
        }
    }

    fn datagram(
        &mut self,
        l3: &mut L3,
        cx: &mut Ctx,
        out: &mut Outbox,
        from: SocketAddrV4,
        b: &[u8],
    ) {
        let Ok(p) = GtpcPacket::new_checked(b) else {
            self.counters.dropped += 1;
            return;
        };
        let (ty, seq) = (p.msg_type(), p.seq());
        if let Ok(Some(r)) = find(p.ie_bytes(), ie_type::RECOVERY, 0) {
            if let Some(&v) = r.value.first() {
                self.recovery_of(*from.ip(), v);
            }
        }
        if msg::is_request(ty) {
            self.counters.requests_received += 1;
            if let Some((bytes, _)) = self.cache.get(&(from, seq)) {
                self.counters.duplicates_answered += 1;
                let bytes = bytes.clone();
                return l3.udp_send(cx, self.local, from, &bytes, out);
            }
            if ty == msg::ECHO_REQUEST {
                let mut m = MessageBuilder::new(msg::ECHO_RESPONSE, None, seq);
                m.ie(ie_type::RECOVERY, 0, &[self.recovery]);
                return self.respond(l3, cx, out, from, m.finish());
            }
            return self.inbox.push_back(Incoming::Request {
                from,
                seq,
                msg: p.message().to_vec(),
            });
        }
        match self.pending.remove(&seq) {
            Some(q) if q.peer.ip() == from.ip() => {
                self.counters.responses_received += 1;
                if !q.echo {
                    self.inbox.push_back(Incoming::Response {
                        seq,
                        msg: p.message().to_vec(),
                    });
                }
            }
            Some(q) => {
                self.pending.insert(seq, q);
                self.counters.dropped += 1;
            }
            None => self.counters.dropped += 1,
        }
    }

    fn recovery_of(&mut self, peer: Ipv4Addr, v: u8) {
        let p = self.peers.entry(peer).or_default();
        if p.recovery.is_some_and(|old| old != v) {
            p.restarts += 1;
            self.inbox.push_back(Incoming::PeerRestarted { peer });
        }
        p.recovery = Some(v);
    }

    pub fn row(&self) -> GtpcRow {
        GtpcRow {
            local: self.local,
            recovery: self.recovery,
            peers: self
                .peers
                .iter()
                .map(|(&address, p)| PeerRow {
                    address,
                    recovery: p.recovery,
                    restarts: p.restarts,
                })
                .collect(),
            outstanding: self.pending.len(),
            counters: self.counters.clone(),
        }
    }
}

/// A Create Session Request [TS 29.274 § 7.2.1, Table 7.2.1-1] read into
/// what the gateways use; a mandatory IE missing or unreadable is the
/// Cause of the rejection [§ 7.7.3: Mandatory IE missing (70), Mandatory
/// IE incorrect (69)].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSession {
    pub imsi: String,
    /// The sender's F-TEID for control plane (instance 0): where the
    /// response and the session's later requests go.
    pub sender: Fteid,
    /// The PGW's S5/S8 control plane F-TEID (instance 1; on S11 only).
    pub pgw: Option<Fteid>,
    pub apn: String,
    /// Uplink and downlink APN-AMBR in kbit/s.
    pub ambr: (u32, u32),
    /// The default bearer: its EBI, Bearer QoS value and, on S5, the
    /// SGW's S5/S8-U F-TEID (instance 2, Table 7.2.1-2).
    pub ebi: u8,
    pub qos: Vec<u8>,
    pub bearer_fteid: Option<Fteid>,
    /// The PCO's value as the phone wrote it (what it asks of the PGW,
    /// such as its DNS server), passed through by the SGW [§ 8.13].
    pub pco: Option<Vec<u8>>,
}

impl CreateSession {
    pub fn parse(ies: &[u8]) -> Result<CreateSession, u8> {
        let get = |b, ty, inst| match find(b, ty, inst) {
            Ok(Some(i)) => Ok(i.value),
            Ok(None) => Err(gtpv2c::cause::MANDATORY_IE_MISSING),
            Err(_) => Err(gtpv2c::cause::MANDATORY_IE_INCORRECT),
        };
        let bad = |_| gtpv2c::cause::MANDATORY_IE_INCORRECT;
        let imsi = ie::tbcd(get(ies, ie_type::IMSI, 0)?).map_err(bad)?;
        let sender = Fteid::parse(get(ies, ie_type::FTEID, 0)?).map_err(bad)?;
        let pgw = match get(ies, ie_type::FTEID, 1) {
            Ok(v) => Some(Fteid::parse(v).map_err(bad)?),
            Err(_) => None,
        };
        let apn = ie::apn(get(ies, ie_type::APN, 0)?).map_err(bad)?;
        let ambr = match get(ies, ie_type::AMBR, 0) {
            Ok(v) => ie::ambr(v).map_err(bad)?,
            Err(_) => (0, 0),
        };
        if ie::octet(get(ies, ie_type::PDN_TYPE, 0)?).map_err(bad)? & 0x07 != gtpv2c::PDN_IPV4 {
            // Only IPv4 PDNs here [§ 8.34].
            return Err(gtpv2c::cause::MANDATORY_IE_INCORRECT);
        }
        let bc = get(ies, ie_type::BEARER_CONTEXT, 0)?;
        let ebi = ie::ebi(get(bc, ie_type::EBI, 0)?).map_err(bad)?;
        if !(5..=15).contains(&ebi) {
            return Err(gtpv2c::cause::MANDATORY_IE_INCORRECT);
        }
        let qos = get(bc, ie_type::BEARER_QOS, 0)?;
        ie::bearer_qos_qci(qos).map_err(bad)?;
        let bearer_fteid = match get(bc, ie_type::FTEID, 2) {
            Ok(v) => Some(Fteid::parse(v).map_err(bad)?),
            Err(_) => None,
        };
        let pco = pco(ies).map(<[u8]>::to_vec);
        Ok(CreateSession {
            imsi,
            sender,
            pgw,
            apn,
            ambr,
            ebi,
            qos: qos.to_vec(),
            bearer_fteid,
            pco,
        })
    }
}

/// A response that carries only its Cause (a rejection, or a Delete
/// Session Response), to the peer TEID `teid` [§ 7.2.2: the TEID is
/// the sender F-TEID's when it could be read, else 0].
pub fn cause_only(msg_type: u8, teid: u32, seq: u32, cause: u8) -> Vec<u8> {
    let mut m = MessageBuilder::new(msg_type, Some(teid), seq);
    m.cause(cause);
    m.finish()
}

/// The sender F-TEID's TEID of a request that may not parse, for the
/// header of its rejection.
pub fn sender_teid(ies: &[u8]) -> u32 {
    match find(ies, ie_type::FTEID, 0) {
        Ok(Some(i)) => Fteid::parse(i.value).map_or(0, |f| f.teid),
        _ => 0,
    }
}

/// The PCO IE's value of a message, if it has one that reads [§ 8.13].
pub fn pco(ies: &[u8]) -> Option<&[u8]> {
    find(ies, ie_type::PCO, 0).ok().flatten().map(|i| i.value)
}

/// The Cause of a response (0 when it has none readable).
pub fn response_cause(ies: &[u8]) -> u8 {
    match find(ies, ie_type::CAUSE, 0) {
        Ok(Some(i)) => ie::cause(i.value).unwrap_or(0),
        _ => 0,
    }
}

/// One GTPv2-C session in a gateway's report (`d11 show sgw sessions`,
/// `d11 show pgw sessions`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRow {
    pub imsi: String,
    pub apn: String,
    pub ue_ip: Option<Ipv4Addr>,
    pub ebi: u8,
    /// Its TEID on this gateway's control plane (S11 on the SGW, S5-C on
    /// the PGW), and the peer's control F-TEID it answers.
    pub teid: u32,
    pub peer: SocketAddrV4,
    pub peer_teid: u32,
    /// `pending` while the next node has not answered, `active` after.
    pub state: String,
}

/// TEIDs an element hands out: counting up from a base far from the
/// topology's static ones, never 0, skipping those `in_use` says are
/// taken [TS 29.274 § 5.5.1: the receiver chooses its TEID].
#[derive(Debug, Clone)]
pub struct TeidPool {
    next: u32,
}

impl TeidPool {
    pub fn new(base: u32) -> TeidPool {
        TeidPool { next: base.max(1) }
    }

    pub fn take(&mut self, in_use: impl Fn(u32) -> bool) -> u32 {
        loop {
            let t = self.next;
            self.next = self.next.wrapping_add(1).max(1);
            if !in_use(t) {
                return t;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use d11_core::{L3Port, PortId};
    use d11_wire::hex;
    use d11_wire::MacAddr;

    // /usr/bin/python3 -c 'from scapy.all import *; print(bytes(
    //   Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02")/
    //   IP(src="192.0.2.2", dst="192.0.2.1", id=11, ttl=64)/UDP(sport=40000, dport=2123)/
    //   Raw(bytes.fromhex("4001000900010200" "0300010007"))).hex())'
    // tshark: Echo Request, Sequence Number 0x000102, Recovery (Restart Counter) 7.
    const ECHO_REQUEST: &str = "020000000001020000000002080045000029000b00004011f6b5c0000202c00002019c40084b00158a2940010009000102000300010007";

    fn endpoint() -> (L3, GtpcEndpoint, Ctx) {
        let mut l3 = L3::with_ports(vec![L3Port {
            name: "s11".into(),
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
            address: "192.0.2.1/24".parse().unwrap(),
            mtu: 1500,
        }]);
        l3.learn(
            Instant::ZERO,
            "192.0.2.2".parse().unwrap(),
            MacAddr([2, 0, 0, 0, 0, 2]),
        );
        let mut cx = Ctx::new(Instant::ZERO, 1);
        let e = GtpcEndpoint::bind(&mut l3, &mut cx, "192.0.2.1".parse().unwrap()).unwrap();
        (l3, e, cx)
    }

    /// The GTPv2-C messages sent, as (UDP destination port, message).
    fn sent(o: &Outbox) -> Vec<(u16, Vec<u8>)> {
        o.frames()
            .map(|(_, f)| (u16::from_be_bytes([f[36], f[37]]), f[42..].to_vec()))
            .collect()
    }

    #[test]
    fn an_echo_request_is_answered_to_its_source_port_and_its_retransmission_from_the_cache() {
        let (mut l3, mut e, mut cx) = endpoint();
        let mut o = Outbox::new();
        l3.input(&mut cx, PortId(0), &hex(ECHO_REQUEST), &mut o);
        e.poll(&mut l3, &mut cx, &mut o);
        let first = sent(&o);
        let r = e.recovery();
        // Echo Response, the request's sequence number, our Recovery.
        let want = [&hex("4002000900010200030001")[..], &[0, r]].concat();
        assert_eq!(first, [(40000, want)], "to the request's source port 40000");
        assert_eq!(e.row().peers[0].recovery, Some(7));
        // The same request again: the same response, not a new one.
        o.clear();
        l3.input(&mut cx, PortId(0), &hex(ECHO_REQUEST), &mut o);
        e.poll(&mut l3, &mut cx, &mut o);
        assert_eq!(sent(&o), first);
        assert_eq!(e.row().counters.duplicates_answered, 1);
        assert_eq!(e.incoming(), None, "Echo never reaches the element");
    }

    #[test]
    fn a_request_is_sent_three_times_then_times_out() {
        let (mut l3, mut e, mut cx) = endpoint();
        let mut o = Outbox::new();
        let to = RequestTo {
            peer: "192.0.2.2".parse().unwrap(),
            msg_type: msg::CREATE_SESSION_REQUEST,
            teid: Some(0),
        };
        let seq = e.request(&mut l3, &mut cx, &mut o, to, |_| {});
        for t in [3, 6, 9] {
            cx.now = Instant::from_millis(t * 1000);
            e.poll(&mut l3, &mut cx, &mut o);
        }
        let copies: Vec<_> = sent(&o).into_iter().map(|(_, m)| m).collect();
        assert_eq!(copies.len(), 3, "N3 = 3 transmissions");
        assert!(
            copies.windows(2).all(|w| w[0] == w[1]),
            "the same bytes each time"
        );
        assert_eq!(
            e.incoming(),
            Some(Incoming::Timeout {
                seq,
                peer: "192.0.2.2".parse().unwrap()
            })
        );
    }

    #[test]
    fn garbage_on_2123_is_a_counted_drop() {
        let (mut l3, mut e, mut cx) = endpoint();
        let mut o = Outbox::new();
        // The scapy frame with its GTPv2-C version set to 1: not ours.
        let mut f = hex(ECHO_REQUEST);
        f[42] = 0x20;
        // Fix the UDP checksum by zeroing it (none, RFC 768).
        f[40] = 0;
        f[41] = 0;
        l3.input(&mut cx, PortId(0), &f, &mut o);
        e.poll(&mut l3, &mut cx, &mut o);
        assert_eq!(sent(&o), []);
        assert_eq!(e.row().counters.dropped, 1);
    }
}
