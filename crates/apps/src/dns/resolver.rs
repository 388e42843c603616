//! A recursive resolver's iteration and cache, without sockets or a clock.
//!
//! Read RFC 1034 § 5.3.3 first (the resolver's algorithm: the answer from
//! the cache, else the best servers known for the closest enclosing zone,
//! ask, then take the answer, a referral or a CNAME and go on), then RFC
//! 2308 §§ 2, 5 (NXDOMAIN and NODATA are cached for the SOA's MINIMUM or
//! its TTL, whichever is less), RFC 2181 §§ 5.2, 5.4.1 (an RRset has one
//! TTL; data from outside a server's zone is not believed), RFC 6891 (EDNS,
//! a 1232-octet buffer) and RFC 7766 § 5 (a truncated UDP answer is asked
//! again over TCP).
//!
//! [`Lookup`] is one resolution: the shell calls [`Lookup::next`], sends
//! the query it is given and feeds back the reply
//! ([`Lookup::on_reply`]) or the timeout ([`Lookup::on_timeout`]) until
//! `next` answers [`Next::Done`]. Time comes in as an argument; the cache
//! decrements each TTL by the time it has been held.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The longest CNAME chain followed; one more is a loop (SERVFAIL).
pub const MAX_CHAIN: usize = 8;
/// The most queries one resolution sends, its nested ones included.
pub const MAX_QUERIES: usize = 32;
/// How deep resolutions of a glueless server's address nest.
const MAX_DEPTH: u8 = 3;
/// The longest a record is kept, whatever its TTL (unbound's
/// `cache-max-ttl` default).
pub const MAX_TTL: u32 = 86_400;
/// The longest a negative answer is kept (unbound's
/// `cache-max-negative-ttl` default) [RFC 2308 § 5].
pub const MAX_NEGATIVE_TTL: u32 = 3_600;
/// The UDP payload a resolver offers in its queries (DNS flag day 2020).
pub const EDNS_PAYLOAD: u16 = 1232;

/// What the cache holds for a name and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    /// An RRset, its TTLs already decremented.
    Records(Vec<Record>),
    /// The name has nothing of this type (NODATA), with the zone's SOA.
    NoData(Option<Record>),
    /// The name does not exist (NXDOMAIN), for every type, with the SOA.
    NxDomain(Option<Record>),
}

#[derive(Debug, Clone)]
struct Entry {
    data: Cached,
    stored: Instant,
    ttl: u32,
    size: usize,
}

/// One row of `d11 show RESOLVER cache`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CacheRow {
    pub name: String,
    /// The record type, or `*` for an NXDOMAIN (it covers every type).
    #[serde(rename = "type")]
    pub rtype: String,
    /// Seconds left.
    pub ttl: u32,
    /// `NXDOMAIN`, `NODATA`, or the records' data.
    pub data: String,
}

/// The cache's own counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: usize,
    pub bytes: usize,
    pub max_bytes: usize,
    pub hits: u64,
    pub negative_hits: u64,
    pub misses: u64,
    pub expired: u64,
    pub evicted: u64,
}

/// RRsets and negative answers by (name, type), each until its TTL runs
/// out, within `max_bytes` (an estimate of what each entry holds): when
/// full, the expired go first, then those closest to expiring.
#[derive(Debug, Clone)]
pub struct Cache {
    map: HashMap<(LowerName, RecordType), Entry>,
    bytes: usize,
    stats: CacheStats,
}

/// The key an NXDOMAIN is kept under: it answers for every type.
const ANY_TYPE: RecordType = RecordType::ANY;

fn size_of(name: &LowerName, data: &Cached) -> usize {
    let rec = |r: &Record| r.name.len() + 16 + r.data.to_string().len();
    64 + name.len()
        + match data {
            Cached::Records(rs) => rs.iter().map(rec).sum(),
            Cached::NoData(s) | Cached::NxDomain(s) => s.as_ref().map_or(0, rec),
        }
}

fn with_ttl(rs: &[Record], ttl: u32) -> Vec<Record> {
    rs.iter()
        .map(|r| {
            let mut r = r.clone();
            r.ttl = ttl;
            r
        })
        .collect()
}

impl Cache {
    pub fn new(max_bytes: usize) -> Cache {
        Cache {
            map: HashMap::new(),
            bytes: 0,
            stats: CacheStats {
                max_bytes,
                ..CacheStats::default()
            },
        }
    }

    /// Drops every entry (unbound-control's `flush_zone .`); the number
    /// dropped. The counters stay.
    pub fn clear(&mut self) -> usize {
        let n = self.map.len();
        self.map.clear();
        self.bytes = 0;
        n
    }

    /// Seconds left of an entry at `now`, or `None` once expired.
    fn left(e: &Entry, now: Instant) -> Option<u32> {
        let held = now.saturating_duration_since(e.stored).as_secs();
        (held < u64::from(e.ttl)).then(|| e.ttl - held as u32)
    }

    /// What the cache holds for `name`/`rtype` at `now`, TTLs decremented
    /// by the time held; an NXDOMAIN of the name answers any type.
    pub fn get(&mut self, now: Instant, name: &LowerName, rtype: RecordType) -> Option<Cached> {
        for t in [rtype, ANY_TYPE] {
            let key = (name.clone(), t);
            let Some(e) = self.map.get(&key) else {
                continue;
            };
            if t == ANY_TYPE && !matches!(e.data, Cached::NxDomain(_)) {
                continue;
            }
            let Some(left) = Cache::left(e, now) else {
                let e = self.map.remove(&key).expect("just found");
                self.bytes -= e.size;
                self.stats.expired += 1;
                continue;
            };
            let out = match &e.data {
                Cached::Records(rs) => {
                    self.stats.hits += 1;
                    Cached::Records(with_ttl(rs, left))
                }
                Cached::NoData(soa) => {
                    self.stats.negative_hits += 1;
                    Cached::NoData(
                        soa.as_ref()
                            .map(|s| with_ttl(std::slice::from_ref(s), left).remove(0)),
                    )
                }
                Cached::NxDomain(soa) => {
                    self.stats.negative_hits += 1;
                    Cached::NxDomain(
                        soa.as_ref()
                            .map(|s| with_ttl(std::slice::from_ref(s), left).remove(0)),
                    )
                }
            };
            return Some(out);
        }
        self.stats.misses += 1;
        None
    }

    /// Whether an RRset is there, without counting a hit or a miss.
    fn peek(&self, now: Instant, name: &LowerName, rtype: RecordType) -> Option<&[Record]> {
        let e = self.map.get(&(name.clone(), rtype))?;
        Cache::left(e, now)?;
        match &e.data {
            Cached::Records(rs) => Some(rs),
            _ => None,
        }
    }

    /// Keeps an RRset: one TTL, the least of its records' [RFC 2181 § 5.2],
    /// at most [`MAX_TTL`]. A TTL of 0 is not kept.
    pub fn put_rrset(&mut self, now: Instant, rs: Vec<Record>) {
        let Some(first) = rs.first() else { return };
        let ttl = rs.iter().map(|r| r.ttl).min().unwrap_or(0).min(MAX_TTL);
        let key = (LowerName::from(&first.name), first.record_type());
        self.put(now, key, Cached::Records(rs), ttl);
    }

    /// Keeps a negative answer for min(SOA TTL, SOA MINIMUM) [RFC 2308 §
    /// 5]; without an SOA it is not kept.
    pub fn put_negative(
        &mut self,
        now: Instant,
        name: &Name,
        rtype: RecordType,
        soa: Option<Record>,
        nx: bool,
    ) {
        let Some(ttl) = soa.as_ref().and_then(negative_ttl) else {
            return;
        };
        let (t, data) = if nx {
            (ANY_TYPE, Cached::NxDomain(soa))
        } else {
            (rtype, Cached::NoData(soa))
        };
        self.put(
            now,
            (LowerName::from(name), t),
            data,
            ttl.min(MAX_NEGATIVE_TTL),
        );
    }

    fn put(&mut self, now: Instant, key: (LowerName, RecordType), data: Cached, ttl: u32) {
        if ttl == 0 {
            return;
        }
        let size = size_of(&key.0, &data);
        if size > self.stats.max_bytes {
            return;
        }
        if let Some(old) = self.map.remove(&key) {
            self.bytes -= old.size;
        }
        if self.bytes + size > self.stats.max_bytes {
            self.make_room(now, size);
        }
        self.bytes += size;
        self.map.insert(
            key,
            Entry {
                data,
                stored: now,
                ttl,
                size,
            },
        );
    }

    /// Frees room for `size` more octets and an eighth of the budget more,
    /// so a full cache does not scan on every insert.
    fn make_room(&mut self, now: Instant, size: usize) {
        let before = self.map.len();
        let mut freed = 0;
        self.map.retain(|_, e| {
            let keep = Cache::left(e, now).is_some();
            if !keep {
                freed += e.size;
            }
            keep
        });
        self.bytes -= freed;
        self.stats.expired += (before - self.map.len()) as u64;
        let goal = self
            .stats
            .max_bytes
            .saturating_sub(size + self.stats.max_bytes / 8);
        if self.bytes <= goal {
            return;
        }
        let mut by_end: Vec<(Instant, (LowerName, RecordType))> = self
            .map
            .iter()
            .map(|(k, e)| (e.stored + Duration::from_secs(e.ttl.into()), k.clone()))
            .collect();
        by_end.sort_by_key(|(end, _)| *end);
        for (_, k) in by_end {
            if self.bytes <= goal {
                break;
            }
            if let Some(e) = self.map.remove(&k) {
                self.bytes -= e.size;
                self.stats.evicted += 1;
            }
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            entries: self.map.len(),
            bytes: self.bytes,
            ..self.stats.clone()
        }
    }

    /// Every live entry, by name then type, at most `limit` of them.
    pub fn rows(&self, now: Instant, limit: usize) -> Vec<CacheRow> {
        let mut rows: Vec<CacheRow> = self
            .map
            .iter()
            .filter_map(|((name, t), e)| {
                let ttl = Cache::left(e, now)?;
                let (rtype, data) = match &e.data {
                    Cached::Records(rs) => (
                        t.to_string(),
                        rs.iter()
                            .map(|r| r.data.to_string())
                            .collect::<Vec<_>>()
                            .join(" "),
                    ),
                    Cached::NoData(_) => (t.to_string(), "NODATA".to_string()),
                    Cached::NxDomain(_) => ("*".to_string(), "NXDOMAIN".to_string()),
                };
                Some(CacheRow {
                    name: name.to_string(),
                    rtype,
                    ttl,
                    data,
                })
            })
            .collect();
        rows.sort_by(|a, b| (&a.name, &a.rtype).cmp(&(&b.name, &b.rtype)));
        rows.truncate(limit);
        rows
    }
}

/// A negative answer's TTL: the lesser of the SOA's TTL and its MINIMUM
/// [RFC 2308 § 5].
fn negative_ttl(soa: &Record) -> Option<u32> {
    match &soa.data {
        RData::SOA(s) => Some(soa.ttl.min(s.minimum)),
        _ => None,
    }
}

/// A root server: the resolver's first servers (its root hints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    pub name: Name,
    pub addr: IpAddr,
}

/// What [`Lookup::next`] wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Send `query` to `server` port 53 (over TCP when `tcp`), with an id
    /// of the shell's choosing, and feed back the reply or the timeout.
    Ask {
        server: IpAddr,
        query: Message,
        tcp: bool,
    },
    /// The resolution is over.
    Done(Answer),
}

/// A resolution's result, for the client's response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub rcode: ResponseCode,
    /// The CNAMEs followed, then the records of the type asked.
    pub answers: Vec<Record>,
    /// The SOA of a negative answer.
    pub authorities: Vec<Record>,
    /// Whether all of it came from the cache.
    pub from_cache: bool,
}

/// One query a resolution sent and what came of it (the view's and the
/// demo's trace of the walk).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hop {
    pub server: IpAddr,
    /// The zone the server was asked as a server of.
    pub zone: String,
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: String,
    pub tcp: bool,
    /// `referral to com.`, `answer`, `CNAME to …`, `NXDOMAIN`, `NODATA`,
    /// `truncated`, `timeout`, `SERVFAIL`, `lame`…
    pub outcome: String,
}

/// A name server of the zone being asked, with the addresses known for it.
#[derive(Debug, Clone)]
struct Server {
    name: Name,
    addrs: Vec<IpAddr>,
    /// Its address was looked up and none came.
    unresolvable: bool,
}

#[derive(Debug, Clone)]
struct Pending {
    server: IpAddr,
    tcp: bool,
    /// The name asked (the chain may move on while the reply is read).
    name: Name,
    zone: Name,
}

/// One resolution of (name, type) [RFC 1034 § 5.3.3].
#[derive(Debug, Clone)]
pub struct Lookup {
    qtype: RecordType,
    /// Where the chain of CNAMEs has got to.
    name: Name,
    chain: Vec<Record>,
    /// The zone whose servers are asked, and those servers.
    zone: Name,
    servers: Option<Vec<Server>>,
    tried: Vec<IpAddr>,
    pending: Option<Pending>,
    /// A glueless server's address being looked up: its index and the lookup.
    sub: Option<(usize, Box<Lookup>)>,
    depth: u8,
    queries: usize,
    result: Option<Answer>,
    asked: bool,
    hops: Vec<Hop>,
}

impl Lookup {
    pub fn new(name: Name, qtype: RecordType) -> Lookup {
        Lookup::nested(name, qtype, 0)
    }

    fn nested(name: Name, qtype: RecordType, depth: u8) -> Lookup {
        Lookup {
            qtype,
            name,
            chain: Vec::new(),
            zone: Name::root(),
            servers: None,
            tried: Vec::new(),
            pending: None,
            sub: None,
            depth,
            queries: 0,
            result: None,
            asked: false,
            hops: Vec::new(),
        }
    }

    /// The queries sent so far and what came of each, nested ones too.
    pub fn hops(&self) -> &[Hop] {
        &self.hops
    }

    fn done(&mut self, rcode: ResponseCode, records: Vec<Record>, soa: Option<Record>) -> Next {
        let mut answers = std::mem::take(&mut self.chain);
        answers.extend(records);
        let a = Answer {
            rcode,
            answers,
            authorities: soa.into_iter().collect(),
            from_cache: !self.asked,
        };
        self.result = Some(a.clone());
        Next::Done(a)
    }

    fn servfail(&mut self) -> Next {
        self.done(ResponseCode::ServFail, Vec::new(), None)
    }

    /// Follows `cname` from the current name: a loop or a chain over
    /// [`MAX_CHAIN`] is false.
    fn follow(&mut self, cname: Record) -> bool {
        let RData::CNAME(target) = &cname.data else {
            return false;
        };
        let target = target.0.clone();
        let seen = |n: &Name| {
            self.chain
                .iter()
                .any(|r| LowerName::from(&r.name) == LowerName::from(n))
        };
        let to_itself = LowerName::from(&target) == LowerName::from(&cname.name);
        if self.chain.len() >= MAX_CHAIN || to_itself || seen(&target) {
            return false;
        }
        self.chain.push(cname);
        self.name = target;
        self.servers = None;
        self.tried.clear();
        true
    }

    /// What to do next at `now`: answer from what is known, or ask.
    pub fn next(&mut self, now: Instant, cache: &mut Cache, hints: &[Hint]) -> Next {
        if let Some(a) = &self.result {
            return Next::Done(a.clone());
        }
        loop {
            if let Some((i, sub)) = &mut self.sub {
                let i = *i;
                match sub.next(now, cache, hints) {
                    Next::Done(a) => {
                        self.queries += sub.queries;
                        self.hops.append(&mut sub.hops);
                        self.sub = None;
                        let addrs: Vec<IpAddr> =
                            a.answers.iter().filter_map(|r| r.data.ip_addr()).collect();
                        if let Some(s) = self.servers.as_mut().and_then(|s| s.get_mut(i)) {
                            s.unresolvable = addrs.is_empty();
                            s.addrs = addrs;
                        }
                    }
                    ask => return ask,
                }
            }
            if self.queries >= MAX_QUERIES {
                return self.servfail();
            }
            if let Some(p) = &self.pending {
                // A truncated answer's retry over TCP [RFC 7766 § 5].
                return self.ask(p.server, p.tcp);
            }
            if self.servers.is_none() {
                // The cache first [RFC 1034 § 5.3.3 step 1].
                let lname = LowerName::from(&self.name);
                match cache.get(now, &lname, self.qtype) {
                    Some(Cached::Records(rs)) => return self.done(ResponseCode::NoError, rs, None),
                    Some(Cached::NoData(soa)) => {
                        return self.done(ResponseCode::NoError, Vec::new(), soa)
                    }
                    Some(Cached::NxDomain(soa)) => {
                        return self.done(ResponseCode::NXDomain, Vec::new(), soa)
                    }
                    None => {}
                }
                if self.qtype != RecordType::CNAME {
                    if let Some(Cached::Records(rs)) = cache.get(now, &lname, RecordType::CNAME) {
                        let followed = rs.into_iter().next().is_some_and(|c| self.follow(c));
                        if !followed {
                            return self.servfail();
                        }
                        continue;
                    }
                }
                self.find_servers(now, cache, hints);
            }
            let servers = self.servers.as_ref().expect("just found");
            if let Some(addr) = servers
                .iter()
                .flat_map(|s| s.addrs.iter())
                .find(|a| !self.tried.contains(a))
                .copied()
            {
                self.tried.push(addr);
                return self.ask(addr, false);
            }
            // No address left to try: look up a glueless server's.
            let glueless = servers
                .iter()
                .position(|s| s.addrs.is_empty() && !s.unresolvable);
            match glueless {
                Some(i) if self.depth < MAX_DEPTH => {
                    let n = servers[i].name.clone();
                    let sub = Lookup::nested(n, RecordType::A, self.depth + 1);
                    self.asked = true;
                    self.sub = Some((i, Box::new(sub)));
                }
                _ => return self.servfail(),
            }
        }
    }

    fn ask(&mut self, server: IpAddr, tcp: bool) -> Next {
        self.queries += 1;
        self.asked = true;
        self.pending = Some(Pending {
            server,
            tcp,
            name: self.name.clone(),
            zone: self.zone.clone(),
        });
        let mut q = Message::new(0, MessageType::Query, OpCode::Query);
        q.metadata.recursion_desired = false;
        q.add_query(Query::query(self.name.clone(), self.qtype));
        let mut e = Edns::new();
        e.set_max_payload(EDNS_PAYLOAD);
        e.set_version(0);
        q.set_edns(e);
        Next::Ask {
            server,
            query: q,
            tcp,
        }
    }

    /// The servers of the closest enclosing zone the cache knows, with the
    /// addresses it knows for them; else the root hints [RFC 1034 § 5.3.3 step 2].
    fn find_servers(&mut self, now: Instant, cache: &Cache, hints: &[Hint]) {
        self.tried.clear();
        let labels = self.name.num_labels() as usize;
        for n in (1..=labels).rev() {
            let zone = self.name.trim_to(n);
            let Some(ns) = cache.peek(now, &LowerName::from(&zone), RecordType::NS) else {
                continue;
            };
            let servers: Vec<Server> = ns
                .iter()
                .filter_map(|r| match &r.data {
                    RData::NS(t) => Some(t.0.clone()),
                    _ => None,
                })
                .map(|name| {
                    let addrs = cache
                        .peek(now, &LowerName::from(&name), RecordType::A)
                        .map(|rs| rs.iter().filter_map(|r| r.data.ip_addr()).collect())
                        .unwrap_or_default();
                    Server {
                        name,
                        addrs,
                        unresolvable: false,
                    }
                })
                .collect();
            if !servers.is_empty() {
                self.zone = zone;
                self.servers = Some(servers);
                return;
            }
        }
        self.zone = Name::root();
        self.servers = Some(
            hints
                .iter()
                .map(|h| Server {
                    name: h.name.clone(),
                    addrs: vec![h.addr],
                    unresolvable: false,
                })
                .collect(),
        );
    }

    fn hop(&mut self, p: &Pending, outcome: impl Into<String>) {
        self.hops.push(Hop {
            server: p.server,
            zone: p.zone.to_string(),
            name: p.name.to_string(),
            rtype: self.qtype.to_string(),
            tcp: p.tcp,
            outcome: outcome.into(),
        });
    }

    /// No answer from the server asked: the next one is tried.
    pub fn on_timeout(&mut self) {
        if let Some((_, sub)) = &mut self.sub {
            return sub.on_timeout();
        }
        if let Some(p) = self.pending.take() {
            self.hop(&p, "timeout");
        }
    }

    /// The reply to the query [`Lookup::next`] asked for, as it came.
    pub fn on_reply(&mut self, now: Instant, cache: &mut Cache, reply: &[u8]) {
        if let Some((_, sub)) = &mut self.sub {
            return sub.on_reply(now, cache, reply);
        }
        let Some(p) = self.pending.take() else {
            return;
        };
        let m = match Message::from_vec(reply) {
            Ok(m) => m,
            Err(_) => return self.hop(&p, "malformed"),
        };
        // The reply must be to the question asked [RFC 5452 § 9.1].
        let ours = m.metadata.message_type == MessageType::Response
            && m.queries.len() == 1
            && LowerName::from(m.queries[0].name()) == LowerName::from(&self.name)
            && m.queries[0].query_type() == self.qtype;
        if !ours {
            return self.hop(&p, "not our question");
        }
        if m.metadata.truncation && !p.tcp {
            self.hop(&p, "truncated");
            self.pending = Some(Pending { tcp: true, ..p });
            return;
        }
        let rcode = m.metadata.response_code;
        if rcode != ResponseCode::NoError && rcode != ResponseCode::NXDomain {
            return self.hop(&p, rcode_name(rcode));
        }
        self.take(now, cache, &m, p);
    }

    /// A NOERROR or NXDOMAIN reply from a server of `self.zone`.
    fn take(&mut self, now: Instant, cache: &mut Cache, m: &Message, p: Pending) {
        let zone = LowerName::from(&self.zone);
        // Believe only what the server's zone holds [RFC 2181 § 5.4.1].
        let inside = |r: &Record| zone.zone_of(&LowerName::from(&r.name));
        // The answer section: follow its CNAMEs, keep its RRsets.
        for set in rrsets(m.answers.iter().filter(|r| inside(r))) {
            cache.put_rrset(now, set);
        }
        let mut cnames = Vec::new();
        loop {
            let here = LowerName::from(&self.name);
            let at = |r: &&Record| LowerName::from(&r.name) == here && inside(r);
            let found: Vec<Record> = m
                .answers
                .iter()
                .filter(at)
                .filter(|r| self.qtype == RecordType::ANY || r.record_type() == self.qtype)
                .cloned()
                .collect();
            if !found.is_empty() {
                self.hop(&p, "answer");
                self.done(ResponseCode::NoError, found, None);
                return;
            }
            if self.qtype == RecordType::CNAME {
                break;
            }
            let Some(c) = m
                .answers
                .iter()
                .find(|r| at(r) && r.record_type() == RecordType::CNAME)
            else {
                break;
            };
            cnames.push(c.data.to_string());
            if !self.follow(c.clone()) {
                self.hop(&p, "CNAME loop");
                self.servfail();
                return;
            }
        }
        let soa = m
            .authorities
            .iter()
            .find(|r| r.record_type() == RecordType::SOA && inside(r))
            .cloned();
        let here_inside = zone.zone_of(&LowerName::from(&self.name));
        let nx = m.metadata.response_code == ResponseCode::NXDomain;
        if !cnames.is_empty() && (!here_inside || (!nx && soa.is_none())) {
            // The chain left the zone, or the server said no more of its
            // target: the target is resolved afresh.
            self.hop(&p, format!("CNAME to {}", cnames.join(", ")));
            return;
        }
        if nx {
            cache.put_negative(now, &self.name, self.qtype, soa.clone(), true);
            self.hop(&p, "NXDOMAIN");
            self.done(ResponseCode::NXDomain, Vec::new(), soa);
            return;
        }
        // A referral: NS for a zone below the one asked, above the name.
        let name = LowerName::from(&self.name);
        let cut = m
            .authorities
            .iter()
            .filter(|r| r.record_type() == RecordType::NS)
            .map(|r| LowerName::from(&r.name))
            .find(|c| zone.zone_of(c) && *c != zone && c.zone_of(&name));
        if let Some(cut) = cut {
            let ns: Vec<Record> = m
                .authorities
                .iter()
                .filter(|r| r.record_type() == RecordType::NS && LowerName::from(&r.name) == cut)
                .cloned()
                .collect();
            let glue: Vec<&Record> = m
                .additionals
                .iter()
                .filter(|r| {
                    inside(r) && matches!(r.record_type(), RecordType::A | RecordType::AAAA)
                })
                .collect();
            let servers: Vec<Server> = ns
                .iter()
                .filter_map(|r| match &r.data {
                    RData::NS(t) => Some(t.0.clone()),
                    _ => None,
                })
                .map(|name| Server {
                    addrs: glue
                        .iter()
                        .filter(|g| LowerName::from(&g.name) == LowerName::from(&name))
                        .filter_map(|g| g.data.ip_addr())
                        .filter(IpAddr::is_ipv4)
                        .collect(),
                    name,
                    unresolvable: false,
                })
                .collect();
            let zone = ns[0].name.clone();
            cache.put_rrset(now, ns);
            // Glue from inside the asked zone only (no poisoning from outside).
            for set in rrsets(glue.into_iter()) {
                cache.put_rrset(now, set);
            }
            self.hop(&p, format!("referral to {cut}"));
            self.zone = zone;
            self.servers = Some(servers);
            self.tried.clear();
            return;
        }
        if soa.is_some() || m.metadata.authoritative {
            // NODATA [RFC 2308 § 2.2].
            cache.put_negative(now, &self.name, self.qtype, soa.clone(), false);
            self.hop(&p, "NODATA");
            self.done(ResponseCode::NoError, Vec::new(), soa);
            return;
        }
        self.hop(&p, "lame");
    }
}

/// An rcode as dig prints it.
pub fn rcode_name(r: ResponseCode) -> String {
    match r {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        r => format!("RCODE{}", u16::from(r)),
    }
}

/// Records grouped by (owner, type), in order of first appearance.
fn rrsets<'a>(records: impl Iterator<Item = &'a Record>) -> Vec<Vec<Record>> {
    let mut out: Vec<Vec<Record>> = Vec::new();
    for r in records {
        let key = (LowerName::from(&r.name), r.record_type());
        match out
            .iter_mut()
            .find(|s| (LowerName::from(&s[0].name), s[0].record_type()) == key)
        {
            Some(s) => s.push(r.clone()),
            None => out.push(vec![r.clone()]),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::zone::{Authority, Transport, Zone};
    use hickory_proto::rr::rdata::{A, NS};

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn hints() -> Vec<Hint> {
        vec![Hint {
            name: name("a.root.lab."),
            addr: "198.18.0.2".parse().unwrap(),
        }]
    }

    // Replies made by scapy 2.5.0 (/usr/bin/python3, `from scapy.all import
    // DNS,DNSQR,DNSRR,DNSRRSOA`; q = DNSQR(qname='www.geektime.com',qtype='A')):
    // bytes(DNS(id=0,qr=1,rd=0,qd=q,
    //   ns=DNSRR(rrname='com.',type='NS',ttl=172800,rdata='a.gtld.lab.'),
    //   ar=DNSRR(rrname='a.gtld.lab.',type='A',ttl=172800,rdata='198.18.0.18'))).hex()
    const REFERRAL: &str = "00008000000100000001000103777777086765656b74696d6503636f6d000001000103636f6d00000200010002a300000c01610467746c64036c61620001610467746c64036c616200000100010002a3000004c6120012";
    // bytes(DNS(id=0,qr=1,aa=1,tc=1,rd=0,qd=q)).hex()
    const TRUNCATED: &str = "00008600000100000000000003777777086765656b74696d6503636f6d0000010001";
    // qd=DNSQR(qname='loop1.geektime.com',qtype='A'), aa=1, an= loop1 CNAME loop2 / loop2 CNAME loop1 (TTL 3600)
    const LOOP: &str = "000084000001000200000000056c6f6f7031086765656b74696d6503636f6d0000010001056c6f6f7031086765656b74696d6503636f6d000005000100000e100014056c6f6f7032086765656b74696d6503636f6d00056c6f6f7032086765656b74696d6503636f6d000005000100000e100014056c6f6f7031086765656b74696d6503636f6d00";
    // qd=DNSQR(qname='nope.geektime.com',qtype='A'), aa=1, rcode=3,
    // ns=DNSRRSOA(rrname='geektime.com.',ttl=3600,mname='ns1.geektime.com.',
    //   rname='hostmaster.geektime.com.',serial=2026111101,refresh=7200,
    //   retry=3600,expire=1209600,minimum=300)
    const NX: &str = "000084030001000000010000046e6f7065086765656b74696d6503636f6d0000010001086765656b74696d6503636f6d000006000100000e10003f036e7331086765656b74696d6503636f6d000a686f73746d6173746572086765656b74696d6503636f6d0078c4007d00001c2000000e10001275000000012c";
    // REFERRAL with one more additional record from outside the root's
    // business: DNSRR(rrname='www.example.',type='A',ttl=172800,rdata='192.0.2.66')
    // (it is inside `.`, so a root may say it; a TLD may not, see below).
    const REFERRAL_PLUS: &str = "00008000000100000001000203777777086765656b74696d6503636f6d000001000103636f6d00000200010002a300000c01610467746c64036c61620001610467746c64036c616200000100010002a3000004c612001203777777076578616d706c6500000100010002a3000004c0000242";

    fn asked(n: Next) -> (IpAddr, bool) {
        match n {
            Next::Ask { server, tcp, query } => {
                assert!(
                    !query.metadata.recursion_desired,
                    "iterative queries ask RD=0"
                );
                assert_eq!(
                    query.edns.as_ref().map(|e| e.max_payload()),
                    Some(EDNS_PAYLOAD)
                );
                (server, tcp)
            }
            Next::Done(a) => panic!("done early: {a:?}"),
        }
    }

    #[test]
    fn a_root_referral_sends_the_next_query_to_the_tld_from_its_glue() {
        let t0 = Instant::now();
        let mut cache = Cache::new(1 << 20);
        let mut l = Lookup::new(name("www.geektime.com."), RecordType::A);
        assert_eq!(
            asked(l.next(t0, &mut cache, &hints())),
            ("198.18.0.2".parse().unwrap(), false)
        );
        l.on_reply(t0, &mut cache, &hex(REFERRAL));
        assert_eq!(
            asked(l.next(t0, &mut cache, &hints())),
            ("198.18.0.18".parse().unwrap(), false)
        );
        assert_eq!(l.hops()[0].outcome, "referral to com.");
        // The delegation and its glue are cached for the next names under com.
        assert!(cache
            .peek(t0, &LowerName::from(&name("com.")), RecordType::NS)
            .is_some());
    }

    #[test]
    fn a_truncated_answer_is_asked_again_over_tcp_of_the_same_server() {
        let t0 = Instant::now();
        let mut cache = Cache::new(1 << 20);
        let mut l = Lookup::new(name("www.geektime.com."), RecordType::A);
        let (root, _) = asked(l.next(t0, &mut cache, &hints()));
        l.on_reply(t0, &mut cache, &hex(TRUNCATED));
        assert_eq!(asked(l.next(t0, &mut cache, &hints())), (root, true));
        assert_eq!(l.hops()[0].outcome, "truncated");
    }

    /// A cache that knows geektime.com's server, as after the walk.
    fn knows_shop(t0: Instant) -> Cache {
        let mut cache = Cache::new(1 << 20);
        let ns1 = name("ns1.geektime.com.");
        cache.put_rrset(
            t0,
            vec![Record::from_rdata(
                name("geektime.com."),
                172800,
                RData::NS(NS(ns1.clone())),
            )],
        );
        cache.put_rrset(
            t0,
            vec![Record::from_rdata(
                ns1,
                172800,
                RData::A(A::new(198, 18, 1, 2)),
            )],
        );
        cache
    }

    #[test]
    fn a_cname_loop_in_an_answer_is_servfail() {
        let t0 = Instant::now();
        let mut cache = knows_shop(t0);
        let mut l = Lookup::new(name("loop1.geektime.com."), RecordType::A);
        assert_eq!(
            asked(l.next(t0, &mut cache, &hints())).0,
            "198.18.1.2".parse::<IpAddr>().unwrap()
        );
        l.on_reply(t0, &mut cache, &hex(LOOP));
        match l.next(t0, &mut cache, &hints()) {
            Next::Done(a) => assert_eq!(a.rcode, ResponseCode::ServFail),
            n => panic!("{n:?}"),
        }
        // And from the cache the next time, still no endless chase.
        let mut again = Lookup::new(name("loop1.geektime.com."), RecordType::A);
        match again.next(t0, &mut cache, &hints()) {
            Next::Done(a) => assert_eq!(a.rcode, ResponseCode::ServFail),
            n => panic!("{n:?}"),
        }
    }

    #[test]
    fn nxdomain_is_cached_for_the_soa_minimum_and_answers_every_type() {
        let t0 = Instant::now();
        let mut cache = knows_shop(t0);
        let mut l = Lookup::new(name("nope.geektime.com."), RecordType::A);
        asked(l.next(t0, &mut cache, &hints()));
        l.on_reply(t0, &mut cache, &hex(NX));
        let Next::Done(a) = l.next(t0, &mut cache, &hints()) else {
            panic!()
        };
        assert_eq!(a.rcode, ResponseCode::NXDomain);
        assert_eq!(a.authorities[0].ttl, 3600, "passed on as it came");
        // 100 s later, an AAAA: from the cache, the SOA's TTL min(3600, 300) - 100.
        let t = t0 + Duration::from_secs(100);
        let mut l = Lookup::new(name("nope.geektime.com."), RecordType::AAAA);
        let Next::Done(a) = l.next(t, &mut cache, &hints()) else {
            panic!("not cached")
        };
        assert!(a.from_cache);
        assert_eq!(a.rcode, ResponseCode::NXDomain);
        assert_eq!(a.authorities[0].ttl, 200);
        // After 300 s it is asked again [RFC 2308 § 5].
        let t = t0 + Duration::from_secs(300);
        let mut l = Lookup::new(name("nope.geektime.com."), RecordType::A);
        asked(l.next(t, &mut cache, &hints()));
    }

    #[test]
    fn glue_from_outside_the_asked_zone_is_not_believed() {
        let t0 = Instant::now();
        let mut cache = knows_shop(t0);
        // geektime.com's server says com. NS and a glue for a.gtld.lab.: neither is its zone's.
        let mut l = Lookup::new(name("www.geektime.com."), RecordType::A);
        asked(l.next(t0, &mut cache, &hints()));
        l.on_reply(t0, &mut cache, &hex(REFERRAL_PLUS));
        assert!(cache
            .peek(t0, &LowerName::from(&name("a.gtld.lab.")), RecordType::A)
            .is_none());
        assert!(cache
            .peek(t0, &LowerName::from(&name("www.example.")), RecordType::A)
            .is_none());
        assert_eq!(l.hops()[0].outcome, "lame");
    }

    const ROOT: &str = "$TTL 86400
.              86400  IN SOA a.root.lab. hostmaster.root.lab. 2026111101 1800 900 604800 86400
.              518400 IN NS  a.root.lab.
a.root.lab.    518400 IN A   198.18.0.2
com.           172800 IN NS  a.gtld.lab.
a.gtld.lab.    172800 IN A   198.18.0.18
";
    const COM: &str = "$TTL 172800
@                900    IN SOA a.gtld.lab. nstld.gtld.lab. 2026111101 1800 900 604800 900
@                       IN NS  a.gtld.lab.
geektime         172800 IN NS  ns1.geektime
ns1.geektime     172800 IN A   198.18.1.2
d11cloud         172800 IN NS  ns1.d11cloud
ns1.d11cloud     172800 IN A   198.18.1.2
";
    const SHOP: &str = "$TTL 3600
@      IN SOA ns1 hostmaster 2026111101 7200 3600 1209600 300
@      IN NS  ns1
ns1    IN A   198.18.1.2
www    600 IN CNAME www.geektime.com.gslb.d11cloud.com.
";
    const CLOUD: &str = "$TTL 3600
@      IN SOA ns1 hostmaster 2026111101 7200 3600 1209600 60
@      IN NS  ns1
ns1    IN A   198.18.1.2
www.geektime.com.gslb 60 IN A 203.0.113.24
www.geektime.com.gslb 60 IN A 203.0.113.25
www.geektime.com.gslb 60 IN A 203.0.113.26
";

    /// The lab's three servers (the topology's zones), answered by the
    /// authoritative side's own logic: the network of the scenario.
    fn lab() -> HashMap<IpAddr, Authority> {
        let z = |t: &str, o: &str| Zone::parse(t, o).unwrap();
        HashMap::from([
            (
                "198.18.0.2".parse().unwrap(),
                Authority::new(vec![z(ROOT, ".")]),
            ),
            (
                "198.18.0.18".parse().unwrap(),
                Authority::new(vec![z(COM, "com.")]),
            ),
            (
                "198.18.1.2".parse().unwrap(),
                Authority::new(vec![z(SHOP, "geektime.com."), z(CLOUD, "d11cloud.com.")]),
            ),
        ])
    }

    /// Runs one resolution at `now` against `net`: the answer and the servers asked.
    fn run(
        now: Instant,
        cache: &mut Cache,
        net: &HashMap<IpAddr, Authority>,
        q: &str,
        t: RecordType,
    ) -> (Answer, Vec<IpAddr>) {
        let mut l = Lookup::new(name(q), t);
        let mut servers = Vec::new();
        loop {
            match l.next(now, cache, &hints()) {
                Next::Done(a) => return (a, servers),
                Next::Ask {
                    server,
                    mut query,
                    tcp,
                } => {
                    servers.push(server);
                    query.metadata.id = 0x4d11;
                    let via = if tcp { Transport::Tcp } else { Transport::Udp };
                    match net[&server].answer(&query.to_vec().unwrap(), via).0 {
                        Some(reply) => l.on_reply(now, cache, &reply),
                        None => l.on_timeout(),
                    }
                }
            }
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_walk_then_the_cache_with_ttls_counting_down_on_a_virtual_clock() {
        let net = lab();
        let t0 = Instant::now();
        let mut cache = Cache::new(1 << 20);
        // Cold: root → .com → geektime.com (the CNAME; the target's A
        // records it adds are outside geektime.com, not believed) → .com
        // again (cached) for d11cloud.com's referral → the cloud's server.
        let (a, asked) = run(t0, &mut cache, &net, "www.geektime.com.", RecordType::A);
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert_eq!(
            asked,
            [
                ip("198.18.0.2"),
                ip("198.18.0.18"),
                ip("198.18.1.2"),
                ip("198.18.0.18"),
                ip("198.18.1.2")
            ]
        );
        assert_eq!(a.answers[0].record_type(), RecordType::CNAME);
        assert_eq!(a.answers[0].ttl, 600);
        let vips: Vec<_> = a.answers[1..]
            .iter()
            .filter_map(|r| r.data.ip_addr())
            .collect();
        assert_eq!(
            vips,
            [ip("203.0.113.24"), ip("203.0.113.25"), ip("203.0.113.26")]
        );
        assert_eq!(a.answers[1].ttl, 60);
        assert!(!a.from_cache);

        // 10 s later: the cache alone, every TTL ten lower.
        let (a, asked) = run(
            t0 + Duration::from_secs(10),
            &mut cache,
            &net,
            "www.geektime.com.",
            RecordType::A,
        );
        assert!(asked.is_empty() && a.from_cache);
        assert_eq!(a.answers[0].ttl, 590);
        assert_eq!(a.answers[1].ttl, 50);

        // 61 s: the A records are gone, the CNAME and d11cloud.com's NS are
        // not: one query, straight to the cloud's server.
        let (a, asked) = run(
            t0 + Duration::from_secs(61),
            &mut cache,
            &net,
            "www.geektime.com.",
            RecordType::A,
        );
        assert_eq!(asked, [ip("198.18.1.2")]);
        assert_eq!(a.answers[0].ttl, 539);
        assert_eq!(a.answers.len(), 4);

        // NODATA is cached too, with the SOA's MINIMUM (60 for d11cloud.com).
        let q = "www.geektime.com.gslb.d11cloud.com.";
        let (a, asked) = run(t0, &mut cache, &net, q, RecordType::AAAA);
        assert_eq!(
            (a.rcode, a.answers.len(), asked.len()),
            (ResponseCode::NoError, 0, 1)
        );
        let (a, asked) = run(
            t0 + Duration::from_secs(59),
            &mut cache,
            &net,
            q,
            RecordType::AAAA,
        );
        assert!(asked.is_empty() && a.from_cache);
        assert_eq!(a.authorities[0].ttl, 1);
        let (_, asked) = run(
            t0 + Duration::from_secs(60),
            &mut cache,
            &net,
            q,
            RecordType::AAAA,
        );
        assert_eq!(asked.len(), 1);
    }

    #[test]
    fn a_server_that_does_not_answer_is_passed_over_and_then_servfail() {
        let t0 = Instant::now();
        let mut cache = Cache::new(1 << 20);
        let mut l = Lookup::new(name("www.geektime.com."), RecordType::A);
        asked(l.next(t0, &mut cache, &hints()));
        l.on_timeout();
        let Next::Done(a) = l.next(t0, &mut cache, &hints()) else {
            panic!()
        };
        assert_eq!(a.rcode, ResponseCode::ServFail);
        assert_eq!(l.hops()[0].outcome, "timeout");
    }

    #[test]
    fn the_cache_stays_within_its_budget() {
        let t0 = Instant::now();
        let mut cache = Cache::new(20_000);
        for i in 0..2000u32 {
            let n = name(&format!("h{i}.geektime.com."));
            cache.put_rrset(
                t0,
                vec![Record::from_rdata(
                    n,
                    60 + i,
                    RData::A(A::from(std::net::Ipv4Addr::from(i))),
                )],
            );
            assert!(cache.stats().bytes <= 20_000);
        }
        let s = cache.stats();
        assert!(s.evicted > 0 && s.entries > 10, "{s:?}");
        // What is left are those furthest from expiring.
        assert!(cache
            .peek(
                t0,
                &LowerName::from(&name("h1999.geektime.com.")),
                RecordType::A
            )
            .is_some());
        assert!(cache
            .peek(
                t0,
                &LowerName::from(&name("h0.geektime.com.")),
                RecordType::A
            )
            .is_none());
    }

    proptest::proptest! {
        #[test]
        fn random_replies_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let t0 = Instant::now();
            let mut cache = Cache::new(1 << 16);
            let mut l = Lookup::new(name("www.geektime.com."), RecordType::A);
            let _ = l.next(t0, &mut cache, &hints());
            l.on_reply(t0, &mut cache, &bytes);
            let _ = l.next(t0, &mut cache, &hints());
        }
    }
}
