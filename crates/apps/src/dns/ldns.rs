//! `app = "dns-resolver"`: a carrier's local DNS (本地DNS), the recursive
//! resolver its customers' phones ask, on kernel UDP and TCP 53.
//!
//! Read [`super::resolver`] first: the iteration and the cache live there,
//! without sockets or a clock. This file is its shell: it admits a client's
//! query (the same checks as the authoritative server, [`super::zone::admit`]),
//! refuses clients outside its customers' prefixes (an open resolver is an
//! amplifier, RFC 5358), answers from the cache in the receive loop, and
//! runs each resolution that must ask other servers as its own task, at
//! most `max_inflight` at once; queries for a question already being
//! resolved wait for that resolution (a flood of one name is one
//! resolution). A flood of new names beyond that is dropped and
//! counted; cached names are still answered. Each upstream query goes
//! from a fresh UDP port with a random id [RFC 5452 § 9], and over TCP
//! when the answer came truncated [RFC 7766 § 5].

use super::resolver::{Answer, Cache, CacheRow, CacheStats, Hint, Hop, Lookup, Next};
use super::wire_cache::{plain, WireCache};
use super::zone::{admit, fit, Admitted, Outcome, Transport};
use super::{accept_tcp, serve_tcp, UdpServerSocket, PORT};
use crate::app::{AppEnv, Running, Shutdown};
use d11_core::settings::ConfigError;
use d11_wire::Ipv4Cidr;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info};

/// How many recent resolutions the report keeps, with their walks.
const RECENT: usize = 8;
/// How many cache rows the report lists.
const CACHE_ROWS: usize = 500;

/// One root hint: a root server's name and address (the lab's own, never
/// the real root servers').
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HintConfig {
    pub name: String,
    pub address: Ipv4Addr,
}

/// The `dns-resolver` node's `config`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ResolverSettings {
    #[serde(default = "default_port")]
    pub port: u16,
    /// Where the iteration starts [RFC 1034 § 5.3.2, the SBELT].
    pub root_hints: Vec<HintConfig>,
    /// The clients it answers (its customers); others get REFUSED.
    pub allow: Vec<Ipv4Cidr>,
    /// The cache's budget in octets (an estimate of what it holds).
    #[serde(default = "default_cache_bytes")]
    pub cache_bytes: usize,
    /// Resolutions asking other servers at once; more are dropped.
    #[serde(default = "default_inflight")]
    pub max_inflight: usize,
    /// How long one upstream query waits for its answer.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_port() -> u16 {
    PORT
}
fn default_cache_bytes() -> usize {
    4 << 20
}
fn default_inflight() -> usize {
    256
}
fn default_timeout_ms() -> u64 {
    1500
}

impl ResolverSettings {
    pub fn hints(&self) -> Result<Vec<Hint>, ConfigError> {
        if self.root_hints.is_empty() {
            return Err(ConfigError::new("root_hints", "at least one root server"));
        }
        self.root_hints
            .iter()
            .enumerate()
            .map(|(i, h)| {
                Ok(Hint {
                    name: Name::from_ascii(&h.name).map_err(|e| {
                        ConfigError::new(format!("root_hints[{i}].name"), e.to_string())
                    })?,
                    addr: IpAddr::V4(h.address),
                })
            })
            .collect()
    }
}

/// What the resolver counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResolverCounters {
    pub udp_queries: u64,
    pub tcp_queries: u64,
    /// Answered from the cache alone.
    pub cache_answers: u64,
    /// Of those, answered by a copy of an earlier answer's bytes
    /// ([`super::wire_cache`]).
    #[serde(default)]
    pub wire_answers: u64,
    /// Answered after asking other servers.
    pub resolved: u64,
    pub nxdomain: u64,
    pub servfail: u64,
    pub refused: u64,
    pub formerr: u64,
    pub notimp: u64,
    pub badvers: u64,
    pub truncated: u64,
    /// Not a query (shorter than a header, or a response): no answer.
    pub dropped: u64,
    /// New resolutions dropped while `max_inflight` were under way.
    pub busy: u64,
    /// Queries that joined a resolution of the same question under way.
    #[serde(default)]
    pub joined: u64,
    pub upstream_udp: u64,
    pub upstream_tcp: u64,
    pub upstream_timeouts: u64,
}

/// One recent resolution and the queries it sent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Resolution {
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: String,
    pub rcode: String,
    pub answers: Vec<String>,
    pub walk: Vec<Hop>,
}

/// `d11 show NODE`'s report of a `dns-resolver` node (`d11 show NODE cache`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResolverReport {
    pub counters: ResolverCounters,
    pub cache_stats: CacheStats,
    pub cache: Vec<CacheRow>,
    pub recent: Vec<Resolution>,
}

#[derive(Default)]
struct Counters {
    udp: AtomicU64,
    tcp: AtomicU64,
    cache_answers: AtomicU64,
    wire_answers: AtomicU64,
    resolved: AtomicU64,
    nxdomain: AtomicU64,
    servfail: AtomicU64,
    refused: AtomicU64,
    formerr: AtomicU64,
    notimp: AtomicU64,
    badvers: AtomicU64,
    truncated: AtomicU64,
    dropped: AtomicU64,
    busy: AtomicU64,
    joined: AtomicU64,
    upstream_udp: AtomicU64,
    upstream_tcp: AtomicU64,
    upstream_timeouts: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What to do with a client's query once admitted.
enum Start {
    /// The answer (or none) is ready.
    Reply(Option<Vec<u8>>),
    /// Other servers must be asked: the query, the lookup and its first step.
    Resolve(Box<(Admitted, Lookup, Next)>),
}

/// The resolver: its hints, cache and counters, shared by every task.
pub struct Resolver {
    hints: Vec<Hint>,
    allow: Vec<Ipv4Cidr>,
    /// The address upstream queries leave from.
    local: IpAddr,
    /// The port servers are asked on (53; a test's silent server elsewhere).
    upstream_port: u16,
    timeout: Duration,
    cache: Mutex<Cache>,
    /// Answers from the cache as they went out, for plain queries over
    /// UDP; the note: whether it was an NXDOMAIN.
    wire: Mutex<WireCache<bool>>,
    inflight: Arc<Semaphore>,
    /// Questions being resolved, and the clients waiting for each besides
    /// the one whose query started it.
    pending: Mutex<HashMap<Question, Vec<oneshot::Sender<Answer>>>>,
    counters: Counters,
    recent: Mutex<VecDeque<Resolution>>,
}

/// What a resolution answers: the name and type asked.
type Question = (Name, RecordType);

/// Clients at most waiting for one question's resolution; more are busy.
const MAX_WAITERS: usize = 4096;

/// A query's part in the resolution of its question.
enum Flight {
    /// It resolves (holding one of `max_inflight`), then answers the others.
    Lead(Question, OwnedSemaphorePermit),
    /// The same question is being resolved: its answer comes here.
    Join(oneshot::Receiver<Answer>),
}

/// A random 16-bit query id [RFC 5452 § 4.3] (std's per-instance random
/// hash keys, so no RNG crate).
fn random_id() -> u16 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish() as u16
}

impl Resolver {
    pub fn new(s: &ResolverSettings, local: IpAddr) -> Result<Resolver, ConfigError> {
        Ok(Resolver {
            hints: s.hints()?,
            allow: s.allow.clone(),
            local,
            upstream_port: PORT,
            timeout: Duration::from_millis(s.timeout_ms),
            cache: Mutex::new(Cache::new(s.cache_bytes)),
            wire: Mutex::new(WireCache::new(true)),
            inflight: Arc::new(Semaphore::new(s.max_inflight.max(1))),
            pending: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            recent: Mutex::new(VecDeque::new()),
        })
    }

    fn allowed(&self, from: IpAddr) -> bool {
        match from {
            IpAddr::V4(a) => self.allow.iter().any(|c| c.contains(a)),
            IpAddr::V6(_) => false,
        }
    }

    fn count_outcome(&self, o: Outcome) {
        let c = &self.counters;
        match o {
            Outcome::Refused => bump(&c.refused),
            Outcome::FormErr => bump(&c.formerr),
            Outcome::NotImp => bump(&c.notimp),
            Outcome::BadVers => bump(&c.badvers),
            Outcome::Truncated => bump(&c.truncated),
            Outcome::Dropped => bump(&c.dropped),
            _ => {}
        }
    }

    /// Admits a query from `from` and answers it if the cache can.
    fn start(&self, query: &[u8], from: IpAddr, via: Transport) -> Start {
        bump(match via {
            Transport::Udp => &self.counters.udp,
            Transport::Tcp => &self.counters.tcp,
        });
        // A plain query over UDP answered before from the cache: a copy.
        let plain = (via == Transport::Udp && self.allowed(from))
            .then(|| plain(query))
            .flatten();
        let now = Instant::now();
        if let Some(p) = &plain {
            let hit = self.wire().answer(p, query, now);
            if let Some((out, nxdomain)) = hit {
                let c = &self.counters;
                bump(&c.cache_answers);
                bump(&c.wire_answers);
                if nxdomain {
                    bump(&c.nxdomain);
                }
                return Start::Reply(Some(out));
            }
        }
        let mut a = match admit(query, via) {
            Ok(a) => a,
            Err((out, o)) => {
                self.count_outcome(o);
                return Start::Reply(out);
            }
        };
        a.resp.metadata.recursion_available = true;
        if !self.allowed(from) {
            a.resp.metadata.response_code = ResponseCode::Refused;
            self.count_outcome(Outcome::Refused);
            return Start::Reply(a.resp.to_vec().ok());
        }
        let q = &a.req.queries[0];
        let mut lookup = Lookup::new(q.name().clone(), q.query_type());
        let next = lookup.next(now, &mut self.cache(), &self.hints);
        match next {
            Next::Done(answer) => {
                let kept = answer.from_cache
                    && matches!(answer.rcode, ResponseCode::NoError | ResponseCode::NXDomain);
                let nxdomain = answer.rcode == ResponseCode::NXDomain;
                let out = self.respond(a, answer);
                // Kept unless truncated (TC): a plain query over UDP only.
                if let (true, Some(p), Some(o)) = (kept, &plain, &out) {
                    if o[2] & 0x02 == 0 {
                        self.wire().store(p, o, now, nxdomain);
                    }
                }
                Start::Reply(out)
            }
            ask => Start::Resolve(Box::new((a, lookup, ask))),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wire(&self) -> std::sync::MutexGuard<'_, WireCache<bool>> {
        self.wire.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Empties the cache and the answers kept from it; the entries dropped.
    pub fn flush(&self) -> usize {
        self.wire().clear();
        self.cache().clear()
    }

    /// The client's response from a resolution's answer.
    fn respond(&self, a: Admitted, answer: Answer) -> Option<Vec<u8>> {
        let c = &self.counters;
        bump(if answer.from_cache {
            &c.cache_answers
        } else {
            &c.resolved
        });
        match answer.rcode {
            ResponseCode::NXDomain => bump(&c.nxdomain),
            ResponseCode::ServFail => bump(&c.servfail),
            _ => {}
        }
        let Admitted {
            mut resp, limit, ..
        } = a;
        resp.metadata.response_code = answer.rcode;
        resp.answers = answer.answers;
        resp.authorities = answer.authorities;
        let (out, o) = fit(resp, limit, Outcome::Answer);
        self.count_outcome(o);
        out
    }

    /// Whether the query `a` leads a resolution of its question, joins the
    /// one under way (a flood of one name is one resolution, as unbound's
    /// mesh makes it), or is dropped: `max_inflight` resolutions running,
    /// or [`MAX_WAITERS`] clients already waiting.
    fn flight(&self, a: &Admitted) -> Option<Flight> {
        let q = &a.req.queries[0];
        let key = (q.name().clone(), q.query_type());
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(waiters) = pending.get_mut(&key) {
            if waiters.len() >= MAX_WAITERS {
                return None;
            }
            let (tx, rx) = oneshot::channel();
            waiters.push(tx);
            bump(&self.counters.joined);
            return Some(Flight::Join(rx));
        }
        let permit = self.inflight.clone().try_acquire_owned().ok()?;
        pending.insert(key.clone(), Vec::new());
        Some(Flight::Lead(key, permit))
    }

    /// Carries `flight` to its answer: resolving, or waiting for the leader.
    async fn fly(&self, flight: Flight, lookup: Lookup, next: Next) -> Option<Answer> {
        match flight {
            Flight::Join(rx) => rx.await.ok(),
            Flight::Lead(key, permit) => {
                let answer = self.resolve(lookup, next).await;
                drop(permit);
                let waiters = (self.pending.lock().unwrap_or_else(|e| e.into_inner()))
                    .remove(&key)
                    .unwrap_or_default();
                for w in waiters {
                    let _ = w.send(answer.clone());
                }
                Some(answer)
            }
        }
    }

    /// Runs `lookup` from its first step `next` to its answer, asking
    /// servers as it says.
    async fn resolve(&self, mut lookup: Lookup, mut next: Next) -> Answer {
        loop {
            match next {
                Next::Done(a) => return a,
                Next::Ask {
                    server,
                    mut query,
                    tcp,
                } => {
                    query.metadata.id = random_id();
                    match self.exchange(server, &query, tcp).await {
                        Some(reply) => lookup.on_reply(Instant::now(), &mut self.cache(), &reply),
                        None => {
                            bump(&self.counters.upstream_timeouts);
                            lookup.on_timeout()
                        }
                    }
                }
            }
            next = lookup.next(Instant::now(), &mut self.cache(), &self.hints);
            if let Next::Done(a) = &next {
                self.remember(&lookup, a);
            }
        }
    }

    fn remember(&self, lookup: &Lookup, a: &Answer) {
        let Some(first) = lookup.hops().first() else {
            return;
        };
        let r = Resolution {
            name: a
                .answers
                .first()
                .map_or(first.name.clone(), |r| r.name.to_string()),
            rtype: first.rtype.clone(),
            rcode: super::resolver::rcode_name(a.rcode),
            answers: a.answers.iter().map(|r| r.to_string()).collect(),
            walk: lookup.hops().to_vec(),
        };
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(r);
    }

    /// One query to `server`, its reply's bytes, or `None` after the timeout.
    async fn exchange(&self, server: IpAddr, query: &Message, tcp: bool) -> Option<Vec<u8>> {
        let bytes = query.to_vec().ok()?;
        let id = query.metadata.id;
        let to = SocketAddr::new(server, self.upstream_port);
        let work = async {
            if tcp {
                bump(&self.counters.upstream_tcp);
                let mut s = TcpStream::connect(to).await.ok()?;
                let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&bytes);
                s.write_all(&framed).await.ok()?;
                let mut len = [0u8; 2];
                s.read_exact(&mut len).await.ok()?;
                let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
                s.read_exact(&mut msg).await.ok()?;
                (msg.len() >= 2 && msg[..2] == id.to_be_bytes()).then_some(msg)
            } else {
                bump(&self.counters.upstream_udp);
                // A fresh port for each query [RFC 5452 § 9.2]; `connect`
                // takes only the server's datagrams. The query goes out at
                // once (a fresh socket's send buffer is empty), and the
                // socket is registered for its answer alone: no round
                // through the runtime before the send, and no wakeup when
                // the query leaves the send buffer.
                let sock = std::net::UdpSocket::bind(SocketAddr::new(self.local, 0)).ok()?;
                sock.connect(to).ok()?;
                sock.set_nonblocking(true).ok()?;
                sock.send(&bytes).ok()?;
                let sock = d11_io::udp::register(sock, Interest::READABLE).ok()?;
                let mut buf = vec![0u8; 65535];
                loop {
                    let got = sock.async_io(Interest::READABLE, |s| s.recv(&mut buf));
                    let n = got.await.ok()?;
                    if n >= 2 && buf[..2] == id.to_be_bytes() {
                        return Some(buf[..n].to_vec());
                    }
                }
            }
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .ok()
            .flatten()
    }

    /// One client's query to its answer (the TCP path, and the UDP path's
    /// resolving half).
    async fn handle(
        self: Arc<Self>,
        query: Vec<u8>,
        from: IpAddr,
        via: Transport,
    ) -> Option<Vec<u8>> {
        match self.start(&query, from, via) {
            Start::Reply(out) => out,
            Start::Resolve(job) => {
                let (a, lookup, next) = *job;
                let Some(flight) = self.flight(&a) else {
                    bump(&self.counters.busy);
                    return None;
                };
                let answer = self.fly(flight, lookup, next).await?;
                self.respond(a, answer)
            }
        }
    }

    /// Answers datagrams on `sock` forever: from the cache in this loop
    /// (a batch at a time, [`super::serve_udp`]), each resolution in its
    /// own task.
    pub async fn serve_udp(self: Arc<Self>, sock: Arc<UdpServerSocket>) -> std::io::Result<()> {
        super::serve_udp(&sock, |query, peer| {
            match self.start(query, peer.ip(), Transport::Udp) {
                Start::Reply(out) => out,
                Start::Resolve(job) => {
                    let (a, lookup, next) = *job;
                    let Some(flight) = self.flight(&a) else {
                        bump(&self.counters.busy);
                        debug!(%peer, "busy: query dropped");
                        return None;
                    };
                    let (me, sock) = (self.clone(), sock.clone());
                    tokio::spawn(async move {
                        let answer = me.fly(flight, lookup, next).await?;
                        let out = me.respond(a, answer)?;
                        sock.send_to(&out, peer).await.ok()
                    });
                    None
                }
            }
        })
        .await
    }

    pub fn report(&self) -> ResolverReport {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let cache = self.cache();
        ResolverReport {
            counters: ResolverCounters {
                udp_queries: l(&c.udp),
                tcp_queries: l(&c.tcp),
                cache_answers: l(&c.cache_answers),
                wire_answers: l(&c.wire_answers),
                resolved: l(&c.resolved),
                nxdomain: l(&c.nxdomain),
                servfail: l(&c.servfail),
                refused: l(&c.refused),
                formerr: l(&c.formerr),
                notimp: l(&c.notimp),
                badvers: l(&c.badvers),
                truncated: l(&c.truncated),
                dropped: l(&c.dropped),
                busy: l(&c.busy),
                joined: l(&c.joined),
                upstream_udp: l(&c.upstream_udp),
                upstream_tcp: l(&c.upstream_tcp),
                upstream_timeouts: l(&c.upstream_timeouts),
            },
            cache_stats: cache.stats(),
            cache: cache.rows(Instant::now(), CACHE_ROWS),
            recent: self
                .recent
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned()
                .collect(),
        }
    }
}

/// `app = "dns-resolver"`.
pub struct ResolverApp;

impl crate::app::App for ResolverApp {
    const NAME: &'static str = "dns-resolver";
    const SUMMARY: &'static str =
        "a carrier's recursive DNS resolver from the lab's root hints, with a cache";
    type Settings = ResolverSettings;
    /// One event loop: the receive loop answers from the cache on the
    /// thread that polls the socket, with no wakeup of another thread per
    /// query (with two workers, half the CPU went to waking the loop);
    /// resolutions wait on the network, not the CPU.
    const WORKERS: usize = 1;
    fn listens(s: &ResolverSettings) -> Option<u16> {
        Some(s.port)
    }
    fn check(env: &AppEnv, s: &ResolverSettings) -> Result<(), ConfigError> {
        s.hints()?;
        if s.allow.is_empty() {
            return Err(ConfigError::new(
                "allow",
                "the prefixes of the clients it answers",
            ));
        }
        env.address("a resolver answers on its address")?;
        Ok(())
    }
    fn run(
        env: AppEnv,
        s: ResolverSettings,
        ctl: tokio::net::UnixListener,
        shutdown: Shutdown,
    ) -> Running {
        Box::pin(async move {
            let addr: IpAddr = env.address("dns-resolver needs an address")?;
            let resolver = Arc::new(Resolver::new(&s, addr).map_err(|e| anyhow::anyhow!("{e}"))?);
            let at = SocketAddr::new(addr, s.port);
            let udp = Arc::new(UdpServerSocket::bind(at)?);
            let tcp = crate::listen(at, 1024)?;
            let report = {
                let r = resolver.clone();
                crate::control::report(move || r.report())
            };
            // `flush`: empty the cache, as unbound-control's flush_zone .
            // does (a cold resolution again, for `d11 bench dns`).
            let commands: crate::control::Commands = {
                let r = resolver.clone();
                Arc::new(move |line: &str| {
                    (line.trim() == "flush").then(|| serde_json::json!({ "flushed": r.flush() }))
                })
            };
            tokio::spawn(crate::control::serve_with(
                ctl,
                env.node.clone(),
                "dns-resolver",
                report,
                commands,
            ));
            info!(%at, hints = s.root_hints.len(), "dns-resolver up");
            tokio::select! {
                _ = shutdown => Ok(()),
                r = resolver.clone().serve_udp(udp) => Ok(r?),
                r = accept_tcp(tcp, |conn, peer| {
                    let r = resolver.clone();
                    serve_tcp(conn, move |msg| r.clone().handle(msg, peer.ip(), Transport::Tcp))
                }) => Ok(r?),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, Record};
    use tokio::net::UdpSocket;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // scapy 2.5.0: bytes(DNS(id=0x1234,rd=1,qd=DNSQR(qname='www.geektime.com',qtype='A'))).hex()
    const WWW_A: &str = "12340100000100000000000003777777086765656b74696d6503636f6d0000010001";
    // … qd=DNSQR(qname='x.example',qtype='A')
    const X_A: &str = "1234010000010000000000000178076578616d706c650000010001";

    /// A resolver (`max_inflight` 4) whose root never answers: every
    /// resolution stays in flight; and that root's socket.
    async fn behind_a_silent_root() -> (Resolver, UdpSocket) {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let s: ResolverSettings = toml::from_str(
            r#"
root_hints = [ { name = "a.root.lab.", address = "127.0.0.1" } ]
allow = ["127.0.0.0/8"]
max_inflight = 4
timeout_ms = 60000
"#,
        )
        .unwrap();
        let mut r = Resolver::new(&s, "127.0.0.1".parse().unwrap()).unwrap();
        r.upstream_port = silent.local_addr().unwrap().port();
        (r, silent)
    }

    #[tokio::test]
    async fn a_flood_of_new_names_is_dropped_and_counted_while_cached_names_are_answered() {
        let (r, _silent) = behind_a_silent_root().await;
        let www = Name::from_ascii("www.geektime.com.").unwrap();
        r.cache().put_rrset(
            Instant::now(),
            vec![Record::from_rdata(
                www,
                60,
                RData::A(A::new(203, 0, 113, 24)),
            )],
        );
        let r = Arc::new(r);
        let sock = Arc::new(UdpServerSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap());
        let at = sock.local_addr().unwrap();
        tokio::spawn(r.clone().serve_udp(sock));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for i in 0..50u16 {
            client.send_to(&flood_query(i, true), at).await.unwrap();
        }
        // The receive loop takes datagrams in order: the cached name's
        // answer comes after all fifty were dealt with.
        client.send_to(&hex(WWW_A), at).await.unwrap();
        let mut buf = [0u8; 1500];
        let n = tokio::time::timeout(Duration::from_secs(10), client.recv(&mut buf))
            .await
            .expect("the cached name is answered")
            .unwrap();
        let m = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(m.metadata.id, 0x1234);
        assert!(m.metadata.recursion_available);
        assert_eq!(
            m.answers[0].data.ip_addr(),
            Some("203.0.113.24".parse().unwrap())
        );
        assert!(m.answers[0].ttl <= 60);
        let c = r.report().counters;
        assert_eq!((c.udp_queries, c.busy, c.cache_answers), (51, 46, 1));
        assert_eq!(c.upstream_udp, 4, "one query per resolution in flight");
        assert_eq!(c.joined, 0);
    }

    /// Query `i` of a flood (its id `i`): with `distinct`, fifty different
    /// questions (a.example … z.example, A then AAAA), else X_A each time.
    fn flood_query(i: u16, distinct: bool) -> Vec<u8> {
        let mut q = hex(X_A);
        q[..2].copy_from_slice(&i.to_be_bytes());
        if distinct {
            // The one-letter label, then the type, of X_A.
            q[13] = b'a' + (i % 26) as u8;
            let qtype: u16 = if i < 26 { 1 } else { 28 };
            let at = q.len() - 4;
            q[at..at + 2].copy_from_slice(&qtype.to_be_bytes());
        }
        q
    }

    #[tokio::test]
    async fn a_flood_of_one_name_is_one_resolution_that_every_query_waits_for() {
        let (r, silent) = behind_a_silent_root().await;
        let r = Arc::new(r);
        let sock = Arc::new(UdpServerSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap());
        let at = sock.local_addr().unwrap();
        tokio::spawn(r.clone().serve_udp(sock));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for i in 0..50u16 {
            client.send_to(&flood_query(i, false), at).await.unwrap();
        }
        // Every datagram dealt with: the receive loop counts each.
        let mut buf = [0u8; 512];
        let n = silent.recv(&mut buf).await.unwrap();
        assert!(n > 12, "the one resolution asked the root");
        let all = async {
            while r.report().counters.udp_queries < 50 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .expect("the receive loop takes all fifty");
        let c = r.report().counters;
        assert_eq!((c.udp_queries, c.busy, c.joined), (50, 0, 49));
        assert_eq!(c.upstream_udp, 1, "one resolution, one query to the root");
    }

    #[tokio::test]
    async fn a_client_outside_its_customers_is_refused() {
        let s: ResolverSettings = toml::from_str(
            r#"
root_hints = [ { name = "a.root.lab.", address = "198.18.0.2" } ]
allow = ["198.51.100.128/25"]
"#,
        )
        .unwrap();
        let r = Resolver::new(&s, "127.0.0.1".parse().unwrap()).unwrap();
        let Start::Reply(Some(out)) =
            r.start(&hex(WWW_A), "192.0.2.1".parse().unwrap(), Transport::Udp)
        else {
            panic!("an answer")
        };
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        assert_eq!(r.report().counters.refused, 1);
    }
}
