//! The lab's DNS (chapter 3): `app = "dns-auth"`, an authoritative server
//! on kernel UDP and TCP 53 for the zones its node's config lists, as
//! master-file text in the topology (the lab's root, `.com`, the shop's
//! `geektime.com`, the cloud's zone).
//!
//! Read RFC 1034 § 4.3.2 and RFC 1035 § 4.2 first (UDP ≤ 512 octets unless
//! EDNS says more, TCP with a two-octet length prefix), then RFC 7766 § 6
//! (a TCP connection carries several queries and idles out). The answer
//! logic is [`zone::Authority`], without sockets; this file is its shell.

pub mod describe;
pub mod gslb;
pub mod httpdns;
pub mod ldns;
pub mod resolver;
pub mod stub;
pub mod wire_cache;
pub mod zone;

use crate::app::{AppEnv, Running, Shutdown};
use d11_core::settings::ConfigError;
use d11_io::udp::{UdpBatch, UdpReplies};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tracing::info;
use wire_cache::WireCache;
use zone::{Authority, Outcome, Transport, Zone};

/// DNS's port [RFC 1035 § 4.2].
pub const PORT: u16 = 53;
/// A TCP client silent this long is closed [RFC 7766 § 6.2.3].
const TCP_IDLE: Duration = Duration::from_secs(10);
/// The most TCP clients served at once; more wait in the kernel's backlog.
const TCP_CLIENTS: usize = 256;
/// Datagrams read (and answered) per recvmmsg.
const UDP_BATCH: usize = 32;
/// A UDP server socket's receive and send buffers, as nsd sizes its own
/// (1 MiB, which the kernel doubles): a burst of thousands of queries
/// waits to be read rather than being dropped by the kernel.
const UDP_BUFFERS: usize = 1 << 20;

/// One zone of the node's config: its origin and its master file's text.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    pub origin: String,
    pub text: String,
}

/// The `dns-auth` node's `config`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    #[serde(default = "default_port")]
    pub port: u16,
    pub zones: Vec<ZoneConfig>,
}

fn default_port() -> u16 {
    PORT
}

impl AuthSettings {
    /// Every zone parsed, or the key of the first that does not.
    pub fn authority(&self) -> Result<Authority, ConfigError> {
        if self.zones.is_empty() {
            return Err(ConfigError::new("zones", "at least one zone"));
        }
        let zones = self
            .zones
            .iter()
            .enumerate()
            .map(|(i, z)| {
                Zone::parse(&z.text, &z.origin)
                    .map_err(|e| ConfigError::new(format!("zones[{i}].text"), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Authority::new(zones))
    }
}

/// What the server counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuthCounters {
    pub udp_queries: u64,
    pub tcp_queries: u64,
    pub answers: u64,
    pub referrals: u64,
    pub nodata: u64,
    pub nxdomain: u64,
    pub refused: u64,
    pub formerr: u64,
    pub notimp: u64,
    pub badvers: u64,
    pub truncated: u64,
    /// Not a DNS query at all (shorter than a header, or a response): no answer.
    pub dropped: u64,
}

/// One zone in the report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ZoneRow {
    pub origin: String,
    pub records: usize,
}

/// `d11 show NODE`'s report of a `dns-auth` node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuthReport {
    pub zones: Vec<ZoneRow>,
    pub counters: AuthCounters,
}

#[derive(Default)]
struct Counters {
    udp: AtomicU64,
    tcp: AtomicU64,
    outcomes: [AtomicU64; 10],
}

fn slot(o: Outcome) -> usize {
    match o {
        Outcome::Answer => 0,
        Outcome::Referral => 1,
        Outcome::NoData => 2,
        Outcome::NxDomain => 3,
        Outcome::Refused => 4,
        Outcome::FormErr => 5,
        Outcome::NotImp => 6,
        Outcome::BadVers => 7,
        Outcome::Truncated => 8,
        Outcome::Dropped => 9,
    }
}

/// The authority and its counters, shared by the UDP loop and TCP clients.
pub struct AuthServer {
    authority: Authority,
    /// Its answers to plain queries over UDP as they went out (the zones
    /// never change while it runs), with what each counted as.
    wire: std::sync::Mutex<WireCache<Outcome>>,
    /// When it started: the instant its kept answers are stored at.
    started: std::time::Instant,
    counters: Counters,
}

impl AuthServer {
    pub fn new(authority: Authority) -> AuthServer {
        AuthServer {
            authority,
            wire: std::sync::Mutex::new(WireCache::new(false)),
            started: std::time::Instant::now(),
            counters: Counters::default(),
        }
    }

    /// The answer to one message, counted.
    pub fn handle(&self, query: &[u8], via: Transport) -> Option<Vec<u8>> {
        match via {
            Transport::Udp => &self.counters.udp,
            Transport::Tcp => &self.counters.tcp,
        }
        .fetch_add(1, Ordering::Relaxed);
        let plain = (via == Transport::Udp)
            .then(|| wire_cache::plain(query))
            .flatten();
        let mut wire = self.wire.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = &plain {
            if let Some((out, outcome)) = wire.answer(p, query, self.started) {
                self.counters.outcomes[slot(outcome)].fetch_add(1, Ordering::Relaxed);
                return Some(out);
            }
        }
        let (out, outcome) = self.authority.answer(query, via);
        self.counters.outcomes[slot(outcome)].fetch_add(1, Ordering::Relaxed);
        if let (Some(p), Some(o)) = (&plain, &out) {
            wire.store(p, o, self.started, outcome);
        }
        out
    }

    pub fn report(&self) -> AuthReport {
        let c = |o: Outcome| self.counters.outcomes[slot(o)].load(Ordering::Relaxed);
        AuthReport {
            zones: self
                .authority
                .zones()
                .iter()
                .map(|z| ZoneRow {
                    origin: z.origin().to_string(),
                    records: z.len(),
                })
                .collect(),
            counters: AuthCounters {
                udp_queries: self.counters.udp.load(Ordering::Relaxed),
                tcp_queries: self.counters.tcp.load(Ordering::Relaxed),
                answers: c(Outcome::Answer),
                referrals: c(Outcome::Referral),
                nodata: c(Outcome::NoData),
                nxdomain: c(Outcome::NxDomain),
                refused: c(Outcome::Refused),
                formerr: c(Outcome::FormErr),
                notimp: c(Outcome::NotImp),
                badvers: c(Outcome::BadVers),
                truncated: c(Outcome::Truncated),
                dropped: c(Outcome::Dropped),
            },
        }
    }
}

/// A server's UDP socket, registered with the runtime for reading alone,
/// as nsd registers its own: with writability too (what tokio's
/// `UdpSocket` registers), every answer the client reads frees room in the
/// send buffer, and that edge woke the loop for nothing.
pub struct UdpServerSocket {
    fd: AsyncFd<std::net::UdpSocket>,
}

impl UdpServerSocket {
    pub fn bind(at: SocketAddr) -> std::io::Result<UdpServerSocket> {
        let s = std::net::UdpSocket::bind(at)?;
        s.set_nonblocking(true)?;
        d11_io::udp::size_buffers(&s, UDP_BUFFERS)?;
        Ok(UdpServerSocket {
            fd: d11_io::udp::register(s, Interest::READABLE)?,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.fd.get_ref().local_addr()
    }

    /// Sends one datagram to `peer`, waiting for room when the send buffer
    /// is full.
    pub async fn send_to(&self, datagram: &[u8], peer: SocketAddr) -> std::io::Result<usize> {
        loop {
            match self.fd.get_ref().send_to(datagram, peer) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => self.room().await?,
                r => return r,
            }
        }
    }

    /// Waits until the send buffer has room: a copy of the descriptor is
    /// registered for writability for as long as that takes (rarely: the
    /// buffer is full only under a flood).
    async fn room(&self) -> std::io::Result<()> {
        let copy = d11_io::udp::register(self.fd.get_ref().try_clone()?, Interest::WRITABLE)?;
        copy.writable().await?.retain_ready();
        Ok(())
    }
}

/// Answers datagrams on `sock` forever with `answer` (a datagram it
/// gives no answer gets none), a batch at a time: one recvmmsg reads the
/// queries waiting, one sendmmsg sends their answers ([`d11_io::udp`]), as
/// nsd and unbound do under load. A batch shorter than [`UDP_BATCH`] emptied
/// the socket: the loop then waits for the next datagram without asking
/// the kernel again. Answers wait for room when the send buffer is full;
/// one the kernel refuses (no route back) is skipped.
pub async fn serve_udp(
    sock: &UdpServerSocket,
    mut answer: impl FnMut(&[u8], SocketAddr) -> Option<Vec<u8>>,
) -> std::io::Result<()> {
    let mut batch = UdpBatch::new(UDP_BATCH, 65535);
    let mut replies = UdpReplies::default();
    loop {
        let mut ready = sock.fd.readable().await?;
        match ready.try_io(|s| batch.recv(s.get_ref().as_fd())) {
            Ok(Ok(n)) if n < UDP_BATCH => ready.clear_ready(),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            // Nothing waiting: the readiness is cleared, wait again.
            Err(_) => continue,
        }
        for (query, peer) in batch.datagrams() {
            if let Some(peer) = peer {
                if let Some(out) = answer(query, peer) {
                    replies.push(&out, peer);
                }
            }
        }
        while !replies.is_empty() {
            // A datagram with no route back is the client's loss.
            match replies.send(sock.fd.get_ref().as_fd()) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => sock.room().await?,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Answers one TCP client's length-prefixed queries with `handle` until
/// it closes, idles out or sends what gets no answer [RFC 7766 § 8].
pub async fn serve_tcp<F, Fut>(mut s: TcpStream, mut handle: F)
where
    F: FnMut(Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = Option<Vec<u8>>>,
{
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, s.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let n = u16::from_be_bytes(len) as usize;
        let mut msg = vec![0u8; n];
        match tokio::time::timeout(TCP_IDLE, s.read_exact(&mut msg)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let Some(out) = handle(msg).await else {
            return;
        };
        let mut framed = Vec::with_capacity(out.len() + 2);
        framed.extend_from_slice(&(out.len() as u16).to_be_bytes());
        framed.extend_from_slice(&out);
        if s.write_all(&framed).await.is_err() {
            return;
        }
    }
}

/// Accepts TCP clients on `tcp` forever, at most [`TCP_CLIENTS`] at once
/// (more wait in the kernel's backlog), each served by `serve`.
pub async fn accept_tcp<F, Fut>(tcp: tokio::net::TcpListener, serve: F) -> std::io::Result<()>
where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let clients = Arc::new(Semaphore::new(TCP_CLIENTS));
    loop {
        let permit = clients.clone().acquire_owned().await;
        let (conn, peer) = tcp.accept().await?;
        let fut = serve(conn, peer);
        tokio::spawn(async move {
            fut.await;
            drop(permit);
        });
    }
}

/// `app = "dns-auth"`.
pub struct AuthApp;

impl crate::app::App for AuthApp {
    const NAME: &'static str = "dns-auth";
    const SUMMARY: &'static str = "an authoritative DNS server for the zones in its config";
    type Settings = AuthSettings;
    /// One event loop, as the resolver's ([`ldns`]): a query is answered
    /// on the thread that polls the socket, with no wakeup of another.
    const WORKERS: usize = 1;
    fn listens(s: &AuthSettings) -> Option<u16> {
        Some(s.port)
    }
    fn check(env: &AppEnv, s: &AuthSettings) -> Result<(), ConfigError> {
        s.authority()?;
        env.address("an authoritative server answers on its address")?;
        Ok(())
    }
    fn run(
        env: AppEnv,
        s: AuthSettings,
        ctl: tokio::net::UnixListener,
        shutdown: Shutdown,
    ) -> Running {
        Box::pin(async move {
            let addr: IpAddr = env.address("dns-auth needs an address")?;
            let authority = s.authority().map_err(|e| anyhow::anyhow!("{e}"))?;
            let server = Arc::new(AuthServer::new(authority));
            let at = SocketAddr::new(addr, s.port);
            let udp = UdpServerSocket::bind(at)?;
            let tcp = crate::listen(at, 1024)?;
            let report = {
                let server = server.clone();
                crate::control::report(move || server.report())
            };
            tokio::spawn(crate::control::serve(
                ctl,
                env.node.clone(),
                "dns-auth",
                report,
            ));
            let zones: Vec<String> = server
                .report()
                .zones
                .into_iter()
                .map(|z| z.origin)
                .collect();
            info!(%at, ?zones, "dns-auth up");
            tokio::select! {
                _ = shutdown => Ok(()),
                r = serve_udp(&udp, |q, _| server.handle(q, Transport::Udp)) => Ok(r?),
                r = accept_tcp(tcp, |conn, _| {
                    let server = server.clone();
                    serve_tcp(conn, move |msg| {
                        let out = server.handle(&msg, Transport::Tcp);
                        async move { out }
                    })
                }) => Ok(r?),
            }
        })
    }
}
