//! The L4 load balancer in `vm-lb`: HAProxy's `mode tcp`. It terminates the
//! client's TCP connection, opens a new one to a backend controller and
//! copies bytes both ways, so TLS passes through untouched.
//!
//! The choice of a backend (`balance.rs`) and a backend's health
//! (`crate::health`) are plain state machines; this file is the tokio around them:
//! the accept loop, one task per session, one health-check task per backend.
//!
//! - Sessions go to UP backends only (round robin or least connections);
//!   a failed connect is retried on another backend (HAProxy's `retries`
//!   with `option redispatch`); with none left the client is closed.
//! - Backends start UP, one failed check away from DOWN (HAProxy's default
//!   `init-state up`); a DOWN backend gets no new sessions, its live ones go on.
//! - At `maxconn` live sessions the listener is not polled (HAProxy's
//!   `maxconn`): new connections wait in the kernel's backlog, listened
//!   with `maxconn` as HAProxy's `backlog` defaults to, until a session
//!   ends; each such pause is counted in `maxconn_pauses`.
//! - Each direction reads into a bounded buffer and writes it out before
//!   reading again (backpressure); an end of stream is passed on as a
//!   half-close (`shutdown(Write)`) and the other direction goes on.
//! - A side is idle when no byte moved either way for its timeout; the
//!   session then ends (`cD`/`sD`).

mod balance;
mod tcplog;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout, MissedTickBehavior};
use tracing::{debug, error, info, warn};

pub use crate::health::{HealthConfig, InitState};
pub use balance::Balance;
pub use tcplog::Termination;

use crate::health::{Health, Transition};
use balance::{Balancer, Candidate};
use tcplog::TcpLog;

/// Bytes one direction of a session holds at most before the other side
/// has taken them.
pub const BUFFER: usize = 16 * 1024;

/// The load balancer's configuration (one frontend, one backend).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L4lbConfig {
    /// Where clients connect.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The backend's servers, e.g. `["192.168.1.20:443", "192.168.2.20:443"]`.
    pub backends: Vec<SocketAddr>,
    /// The backend's name in logs and status (HAProxy's `backend ctl`).
    #[serde(default = "default_backend_name")]
    pub backend_name: String,
    #[serde(default)]
    pub balance: Balance,
    /// Live sessions at most; beyond, connections are accepted and closed.
    #[serde(default = "default_maxconn")]
    pub maxconn: usize,
    /// One connection attempt to a backend gives up after this long.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// The client side's idle timeout.
    #[serde(default = "default_idle_timeout_ms")]
    pub client_timeout_ms: u64,
    /// The server side's idle timeout.
    #[serde(default = "default_idle_timeout_ms")]
    pub server_timeout_ms: u64,
    /// Further connection attempts, each on a backend not tried yet.
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default)]
    pub health: HealthConfig,
    /// After shutdown, live sessions get this long before they are killed.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 443))
}

fn default_backend_name() -> String {
    "ctl".into()
}

fn default_maxconn() -> usize {
    4096
}

fn default_connect_timeout_ms() -> u64 {
    2000
}

fn default_idle_timeout_ms() -> u64 {
    30_000
}

fn default_retries() -> u32 {
    2
}

fn default_shutdown_grace_ms() -> u64 {
    5000
}

/// A configuration the load balancer cannot run with.
#[derive(Debug, thiserror::Error)]
pub enum L4lbError {
    /// A key holds a value out of range.
    #[error("l4lb config: `{key}` {reason}")]
    Config {
        key: &'static str,
        reason: &'static str,
    },
}

impl L4lbConfig {
    /// Checks the values serde cannot, naming the offending key.
    pub fn validate(&self) -> Result<(), L4lbError> {
        let positive = [
            ("maxconn", self.maxconn as u64),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("client_timeout_ms", self.client_timeout_ms),
            ("server_timeout_ms", self.server_timeout_ms),
            ("health.interval_ms", self.health.interval_ms),
            ("health.timeout_ms", self.health.timeout_ms),
            ("health.rise", self.health.rise.into()),
            ("health.fall", self.health.fall.into()),
        ];
        if self.backends.is_empty() {
            return Err(L4lbError::Config {
                key: "backends",
                reason: "must name at least one server",
            });
        }
        match positive.iter().find(|(_, v)| *v == 0) {
            Some(&(key, _)) => Err(L4lbError::Config {
                key,
                reason: "must be at least 1",
            }),
            None => Ok(()),
        }
    }
}

/// What the l4lb reports on its control socket (`d11 show vm-lb`), in the
/// spirit of HAProxy's stats: the frontend's totals and each backend
/// server's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct L4lbReport {
    pub frontend: FrontendReport,
    pub backend: BackendReport,
}

/// The listener's totals; `bytes_in` is client → server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrontendReport {
    pub name: String,
    pub listen: String,
    pub maxconn: usize,
    pub active: usize,
    /// Every connection taken from the listener.
    pub accepted: u64,
    /// The times it stopped taking them at `maxconn`.
    pub maxconn_pauses: u64,
    pub no_backend: u64,
    pub connect_failures: u64,
    pub client_timeouts: u64,
    pub server_timeouts: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// The backend: how it balances and its servers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendReport {
    pub name: String,
    pub balance: Balance,
    /// Servers passing their health checks.
    pub up: usize,
    pub servers: Vec<ServerReport>,
}

/// One backend server, as HAProxy's stats show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerReport {
    /// `BACKEND/ADDR`.
    pub name: String,
    pub address: String,
    /// `UP` or `DOWN`.
    pub status: String,
    pub checks_passed: u64,
    pub checks_failed: u64,
    pub last_check: Option<CheckReport>,
    pub ms_since_change: u64,
    pub active: usize,
    /// Sessions so far.
    pub total: u64,
    pub connect_failures: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// A health check's result: HAProxy's status code (`L4OK`, `L4CON`, …),
/// reason and info.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    pub code: String,
    pub reason: String,
    pub info: Option<String>,
    pub duration_ms: u64,
}

/// A running load balancer: configuration, backend state and counters.
pub struct L4lb {
    name: String,
    config: L4lbConfig,
    /// The address `serve` listens on (`config.listen` may say port 0).
    listening: OnceLock<SocketAddr>,
    /// Accepted connections come with TCP_NODELAY set (see [`L4lb::bind`]).
    nodelay_inherited: OnceLock<bool>,
    pool: Mutex<Pool>,
    /// Bytes per backend: client → server, server → client.
    bytes: Vec<[AtomicU64; 2]>,
    counters: Counters,
    buffers: Buffers,
}

/// What the balancer decides on, under one lock.
struct Pool {
    balancer: Balancer,
    servers: Vec<ServerState>,
}

struct ServerState {
    health: Health,
    active: usize,
    total: u64,
    connect_failures: u64,
    checks_passed: u64,
    checks_failed: u64,
    last_check: Option<Check>,
    last_change: Instant,
}

/// A health check's result: HAProxy's status code, reason and info.
#[derive(Clone)]
struct Check {
    code: &'static str,
    reason: &'static str,
    info: Option<String>,
    duration: Duration,
}

#[derive(Default)]
struct Counters {
    active: AtomicUsize,
    accepted: AtomicU64,
    maxconn_pauses: AtomicU64,
    no_backend: AtomicU64,
    connect_failures: AtomicU64,
    client_timeouts: AtomicU64,
    server_timeouts: AtomicU64,
}

/// A live session: counted in `active` until dropped.
struct Admission(Arc<L4lb>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.counters.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl L4lb {
    pub fn new(name: &str, config: L4lbConfig) -> Arc<L4lb> {
        let now = Instant::now();
        let servers = config
            .backends
            .iter()
            .map(|_| ServerState {
                health: Health::new(
                    config.health.rise,
                    config.health.fall,
                    config.health.init_state,
                ),
                active: 0,
                total: 0,
                connect_failures: 0,
                checks_passed: 0,
                checks_failed: 0,
                last_check: None,
                last_change: now,
            })
            .collect();
        Arc::new(L4lb {
            name: name.into(),
            bytes: config.backends.iter().map(|_| Default::default()).collect(),
            pool: Mutex::new(Pool {
                balancer: Balancer::new(config.balance),
                servers,
            }),
            config,
            listening: OnceLock::new(),
            nodelay_inherited: OnceLock::new(),
            counters: Counters::default(),
            buffers: Buffers::default(),
        })
    }

    /// Binds `config.listen` and serves.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let listener = self.bind()?;
        self.serve(listener, shutdown).await
    }

    /// A listener on `config.listen` made for the sessions ([`crate::listen`]):
    /// Nagle off on the listening socket, which Linux copies to every
    /// connection it accepts (one `setsockopt` less per session), and a
    /// backlog as deep as `maxconn` (HAProxy's `backlog`), for the
    /// connections waiting while it is reached.
    pub fn bind(&self) -> io::Result<TcpListener> {
        crate::listen(self.config.listen, self.config.maxconn)
    }

    /// Serves on a bound listener until `shutdown`, then stops accepting and
    /// gives live sessions `shutdown_grace_ms` before killing them.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        self.config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let listening = listener.local_addr()?;
        let _ = self.listening.set(listening);
        info!(
            frontend = %self.name, listen = %listening, backend = %self.config.backend_name,
            servers = ?self.config.backends, balance = ?self.config.balance, "l4lb serving"
        );
        // Aborted when dropped, as `serve` returns.
        let mut checks = JoinSet::new();
        for i in 0..self.config.backends.len() {
            checks.spawn(self.clone().check_loop(i));
        }
        let (kill, killed) = watch::channel(());
        let mut sessions = JoinSet::new();
        tokio::pin!(shutdown);
        let mut paused = false;
        loop {
            // A session's end (`join_next`) is what lowers `active`.
            let full = self.counters.active.load(Ordering::Relaxed) >= self.config.maxconn;
            if full && !paused {
                self.counters.maxconn_pauses.fetch_add(1, Ordering::Relaxed);
                debug!(
                    maxconn = self.config.maxconn,
                    "maxconn reached: accepting paused"
                );
            }
            paused = full;
            tokio::select! {
                _ = &mut shutdown => break,
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                accepted = listener.accept(), if !full => match accepted {
                    Ok((client, peer)) => {
                        let admission = self.admit();
                        sessions.spawn(self.clone().session(admission, client, peer, killed.clone()));
                    }
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        drop(listener);
        info!(live = sessions.len(), "l4lb stopped accepting");
        let grace = sleep(Duration::from_millis(self.config.shutdown_grace_ms));
        tokio::pin!(grace);
        loop {
            tokio::select! {
                _ = &mut grace => break,
                next = sessions.join_next() => if next.is_none() { break },
            }
        }
        kill.send_replace(());
        while sessions.join_next().await.is_some() {}
        Ok(())
    }

    /// Counts an accepted connection, live until the admission is dropped.
    fn admit(self: &Arc<Self>) -> Admission {
        let c = &self.counters;
        c.accepted.fetch_add(1, Ordering::Relaxed);
        c.active.fetch_add(1, Ordering::Relaxed);
        Admission(self.clone())
    }

    async fn session(
        self: Arc<Self>,
        admission: Admission,
        client: TcpStream,
        peer: SocketAddr,
        killed: watch::Receiver<()>,
    ) {
        let accept_date = time::OffsetDateTime::now_utc();
        let start = Instant::now();
        // Looked at once: a listener from `bind` hands every connection over
        // with Nagle off already.
        if !*self
            .nodelay_inherited
            .get_or_init(|| client.nodelay().unwrap_or(false))
        {
            let _ = client.set_nodelay(true);
        }
        let (connected, retries) = self.connect().await;
        let connect = connected.is_ok().then(|| start.elapsed());
        let server = connected.as_ref().ok().map(|&(i, _)| i);
        let (termination, bytes_read) = match connected {
            Ok((i, stream)) => self.proxy(i, client, stream, killed).await,
            Err(failure) => {
                self.counters.no_backend.fetch_add(1, Ordering::Relaxed);
                (failure, 0)
            }
        };
        let timeouts = match termination {
            Termination::ClientTimeout => Some(&self.counters.client_timeouts),
            Termination::ServerTimeout => Some(&self.counters.server_timeouts),
            _ => None,
        };
        if let Some(t) = timeouts {
            t.fetch_add(1, Ordering::Relaxed);
        }
        let (beconn, srv_conn) = {
            let pool = self.pool();
            let beconn = pool.servers.iter().map(|s| s.active).sum();
            (beconn, server.map_or(0, |i| pool.servers[i].active))
        };
        let feconn = self.counters.active.load(Ordering::Relaxed);
        info!(
            "{}",
            TcpLog {
                client: peer,
                accept_date,
                frontend: &self.name,
                backend: &self.config.backend_name,
                server: server.map(|i| self.config.backends[i]),
                connect,
                total: start.elapsed(),
                bytes_read,
                termination,
                actconn: feconn,
                feconn,
                beconn,
                srv_conn,
                retries,
            }
        );
        if let Some(i) = server {
            self.pool().servers[i].active -= 1;
        }
        drop(admission);
    }

    /// Connects to an UP backend, retrying on others; answers the server
    /// (counted as active until the caller releases it) or how the session
    /// ends, and the number of retries.
    async fn connect(&self) -> (Result<(usize, TcpStream), Termination>, u32) {
        let timeout_d = Duration::from_millis(self.config.connect_timeout_ms);
        let mut tried = Vec::new();
        let mut failure = Termination::ServerRefused;
        while tried.len() <= self.config.retries as usize {
            let Some(i) = self.choose(&tried) else { break };
            tried.push(i);
            let addr = self.config.backends[i];
            let error = match timeout(timeout_d, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    self.pool().servers[i].total += 1;
                    return (Ok((i, stream)), tried.len() as u32 - 1);
                }
                Ok(Err(e)) => {
                    failure = Termination::ServerRefused;
                    e.to_string()
                }
                Err(_) => {
                    failure = Termination::ConnectTimeout;
                    "connect timeout".into()
                }
            };
            debug!(server = %addr, %error, "connection to backend failed");
            self.counters
                .connect_failures
                .fetch_add(1, Ordering::Relaxed);
            let mut pool = self.pool();
            pool.servers[i].connect_failures += 1;
            pool.servers[i].active -= 1;
        }
        (Err(failure), tried.len().saturating_sub(1) as u32)
    }

    /// Picks a server not in `tried` and counts the session on it.
    fn choose(&self, tried: &[usize]) -> Option<usize> {
        let mut pool = self.pool();
        let candidates: Vec<Candidate> = pool
            .servers
            .iter()
            .map(|s| Candidate {
                up: s.health.is_up(),
                active: s.active,
            })
            .collect();
        let i = pool.balancer.choose(&candidates, tried)?;
        pool.servers[i].active += 1;
        Some(i)
    }

    /// Relays backend `i`'s session until it ends; answers how it ended
    /// and the bytes sent to the client.
    async fn proxy(
        &self,
        i: usize,
        mut client: TcpStream,
        mut server: TcpStream,
        mut killed: watch::Receiver<()>,
    ) -> (Termination, u64) {
        let idle = Idle {
            client: Duration::from_millis(self.config.client_timeout_ms),
            server: Duration::from_millis(self.config.server_timeout_ms),
        };
        let [up, down] = &self.bytes[i];
        let to_client = AtomicU64::new(0);
        let termination = relay(
            client.split(),
            server.split(),
            idle,
            [up, down, &to_client],
            &self.buffers,
            killed.changed(),
        )
        .await;
        (termination, to_client.load(Ordering::Relaxed))
    }

    /// Checks backend `i` every interval, forever.
    async fn check_loop(self: Arc<Self>, i: usize) {
        let h = &self.config.health;
        let mut tick = tokio::time::interval(Duration::from_millis(h.interval_ms));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let start = Instant::now();
            let attempt = timeout(
                Duration::from_millis(h.timeout_ms),
                TcpStream::connect(self.config.backends[i]),
            )
            .await;
            let duration = start.elapsed();
            let check = match attempt {
                Ok(Ok(probe)) => {
                    // Closed with RST, as HAProxy closes its checks: no
                    // TIME_WAIT left behind per check.
                    let _ = probe.set_zero_linger();
                    Check {
                        code: "L4OK",
                        reason: "Layer4 check passed",
                        info: None,
                        duration,
                    }
                }
                Ok(Err(e)) => Check {
                    code: "L4CON",
                    reason: "Layer4 connection problem",
                    info: Some(os_message(&e)),
                    duration,
                },
                Err(_) => Check {
                    code: "L4TOUT",
                    reason: "Layer4 timeout",
                    info: None,
                    duration,
                },
            };
            self.on_check(i, check);
        }
    }

    /// Feeds a check result to backend `i`'s health; logs a state change
    /// like HAProxy.
    fn on_check(&self, i: usize, check: Check) {
        let mut pool = self.pool();
        let s = &mut pool.servers[i];
        let passed = check.code == "L4OK";
        if passed {
            s.checks_passed += 1;
        } else {
            s.checks_failed += 1;
        }
        s.last_check = Some(check.clone());
        let Some(transition) = s.health.on_check(passed) else {
            return;
        };
        s.last_change = Instant::now();
        let sessions = s.active;
        let up = pool.servers.iter().filter(|s| s.health.is_up()).count();
        drop(pool);
        let server = format!("{}/{}", self.config.backend_name, self.config.backends[i]);
        let info = check
            .info
            .map(|m| format!(", info: \"{m}\""))
            .unwrap_or_default();
        let ms = check.duration.as_millis();
        match transition {
            Transition::Up => info!(
                "Server {server} is UP, reason: {}{info}, check duration: {ms}ms. \
                 {up} active and 0 backup servers online. 0 sessions requeued, 0 total in queue.",
                check.reason
            ),
            Transition::Down => {
                warn!(
                    "Server {server} is DOWN, reason: {}{info}, check duration: {ms}ms. \
                     {up} active and 0 backup servers left. {sessions} sessions active, \
                     0 requeued, 0 remaining in queue.",
                    check.reason
                );
                if up == 0 {
                    error!(
                        "backend {} has no server available!",
                        self.config.backend_name
                    );
                }
            }
        }
    }

    /// Per backend and frontend totals for the control socket, in the
    /// spirit of HAProxy's stats CSV. `bytes_in` is client → server;
    /// `accepted` counts every connection taken from the listener;
    /// `maxconn_pauses` the times it stopped taking them at `maxconn`.
    pub fn status(&self) -> L4lbReport {
        let pool = self.pool();
        let servers = pool
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let [bytes_in, bytes_out] = &self.bytes[i];
                ServerReport {
                    name: format!("{}/{}", self.config.backend_name, self.config.backends[i]),
                    address: self.config.backends[i].to_string(),
                    status: if s.health.is_up() { "UP" } else { "DOWN" }.into(),
                    checks_passed: s.checks_passed,
                    checks_failed: s.checks_failed,
                    last_check: s.last_check.as_ref().map(|c| CheckReport {
                        code: c.code.into(),
                        reason: c.reason.into(),
                        info: c.info.clone(),
                        duration_ms: c.duration.as_millis() as u64,
                    }),
                    ms_since_change: s.last_change.elapsed().as_millis() as u64,
                    active: s.active,
                    total: s.total,
                    connect_failures: s.connect_failures,
                    bytes_in: bytes_in.load(Ordering::Relaxed),
                    bytes_out: bytes_out.load(Ordering::Relaxed),
                }
            })
            .collect();
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let sum = |k: usize| self.bytes.iter().map(|b| load(&b[k])).sum::<u64>();
        L4lbReport {
            frontend: FrontendReport {
                name: self.name.clone(),
                listen: self
                    .listening
                    .get()
                    .unwrap_or(&self.config.listen)
                    .to_string(),
                maxconn: self.config.maxconn,
                active: c.active.load(Ordering::Relaxed),
                accepted: load(&c.accepted),
                maxconn_pauses: load(&c.maxconn_pauses),
                no_backend: load(&c.no_backend),
                connect_failures: load(&c.connect_failures),
                client_timeouts: load(&c.client_timeouts),
                server_timeouts: load(&c.server_timeouts),
                bytes_in: sum(0),
                bytes_out: sum(1),
            },
            backend: BackendReport {
                name: self.config.backend_name.clone(),
                balance: self.config.balance,
                up: pool.servers.iter().filter(|s| s.health.is_up()).count(),
                servers,
            },
        }
    }

    fn pool(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A session's idle timeouts, each side's.
#[derive(Debug, Clone, Copy)]
pub struct Idle {
    pub client: Duration,
    pub server: Duration,
}

/// A session's relay: copies bytes both ways between the client's and the
/// server's connection (each given as its read and write halves) until both
/// sides have closed (an end of stream passed on as a half-close while the
/// other direction goes on), one side fails or idles out, or `killed`
/// resolves; answers how it ended.
/// `meters` count the bytes written client → server, server → client, and
/// again server → client. A direction holds a buffer from `buffers` only
/// while bytes it read wait to be written ([`ReadSide`]), as HAProxy
/// holds its buffers: a thousand idle sessions hold none, and the few
/// buffers in use stay in the cache. Over any streams: the sessions run it
/// on TCP, the fuzz target (`fuzz/fuzz_targets/l4lb.rs`) on in-memory
/// pipes.
///
/// One timer watches both sides: a side times out when no byte moved
/// either way for its timeout while the session waits on it (to read from
/// it, or to write to it); when both do, the shorter timeout ends it, the
/// client's on a tie. No timer is armed per read or per write.
pub async fn relay<CR, CW, SR, SW>(
    (mut cr, mut cw): (CR, CW),
    (mut sr, mut sw): (SR, SW),
    idle: Idle,
    meters: [&AtomicU64; 3],
    buffers: &Buffers,
    killed: impl Future,
) -> Termination
where
    CR: ReadSide + Unpin,
    CW: AsyncWrite + Unpin,
    SR: ReadSide + Unpin,
    SW: AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let [up_bytes, down_bytes, to_client] = meters;
    let (up_meters, down_meters) = ([up_bytes], [down_bytes, to_client]);
    let (up_state, down_state) = (Direction::default(), Direction::default());
    let up = pump(
        &mut cr,
        &mut sw,
        buffers,
        &activity,
        &up_meters,
        [&up_state, &down_state],
    );
    let down = pump(
        &mut sr,
        &mut cw,
        buffers,
        &activity,
        &down_meters,
        [&down_state, &up_state],
    );
    let idle_timer = tokio::time::sleep_until(activity.deadline(idle.client.min(idle.server)));
    tokio::pin!(up, down, killed, idle_timer);
    let (mut up_done, mut down_done) = (false, false);
    loop {
        tokio::select! {
            r = &mut up, if !up_done => match r {
                Ok(()) => up_done = true,
                Err(Fault::Read) => return Termination::ClientAbort,
                Err(Fault::Write) => return Termination::ServerAbort,
            },
            r = &mut down, if !down_done => match r {
                Ok(()) => down_done = true,
                Err(Fault::Read) => return Termination::ServerAbort,
                Err(Fault::Write) => return Termination::ClientAbort,
            },
            _ = &mut killed => return Termination::Killed,
            _ = &mut idle_timer => {
                // Who the session waits on: the client when reading from it
                // (up) or writing to it (down), the server the other way.
                let writing = |d: &Direction| d.writing.load(Ordering::Relaxed);
                let on_client = (!up_done && !writing(&up_state)) || (!down_done && writing(&down_state));
                let on_server = (!down_done && !writing(&down_state)) || (!up_done && writing(&up_state));
                let quiet = activity.quiet();
                if on_client && quiet >= idle.client {
                    return Termination::ClientTimeout;
                }
                if on_server && quiet >= idle.server {
                    return Termination::ServerTimeout;
                }
                let next = match (on_client, on_server) {
                    (true, false) => idle.client,
                    (false, true) => idle.server,
                    _ => idle.client.min(idle.server),
                };
                idle_timer.as_mut().reset(activity.deadline(next));
            }
        }
        if up_done && down_done {
            return Termination::Normal;
        }
    }
}

/// When a byte last moved either way in a session.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// How long no byte has moved.
    fn quiet(&self) -> Duration {
        self.last().elapsed()
    }

    /// When a side idle for `idle` times out.
    fn deadline(&self, idle: Duration) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.last() + idle)
    }
}

/// What one direction of a session is doing, for the relay's idle timer:
/// writing (else reading), and whether it has read its end of stream.
#[derive(Default)]
struct Direction {
    writing: AtomicBool,
    eof: AtomicBool,
}

/// Why one direction of a session stopped: on its read side or its write
/// side.
enum Fault {
    Read,
    Write,
}

/// Copies one direction until end of stream, then half-closes the writer
/// unless the other direction has ended already (`state`: this direction's
/// and the other's): the session closes both sockets next, and a close
/// sends the FIN anyway, so the `shutdown(2)` would be a wasted system
/// call. Neither socket holds unread bytes by then (each read its end of
/// stream), so the close is a FIN, never a reset. `meters` count the bytes
/// written.
async fn pump<R, W>(
    reader: &mut R,
    writer: &mut W,
    buffers: &Buffers,
    activity: &Activity,
    meters: &[&AtomicU64],
    state: [&Direction; 2],
) -> Result<(), Fault>
where
    R: ReadSide + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let buf = reader.read_pooled(buffers).await.map_err(|_| Fault::Read)?;
        let n = buf.len();
        if n == 0 {
            buffers.give(buf);
            state[0].eof.store(true, Ordering::Relaxed);
            if state[1].eof.load(Ordering::Relaxed) {
                return Ok(());
            }
            state[0].writing.store(true, Ordering::Relaxed);
            return writer.shutdown().await.map_err(|_| Fault::Write);
        }
        activity.touch();
        state[0].writing.store(true, Ordering::Relaxed);
        let written = writer.write_all(&buf).await;
        buffers.give(buf);
        written.map_err(|_| Fault::Write)?;
        state[0].writing.store(false, Ordering::Relaxed);
        activity.touch();
        for m in meters {
            m.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// A stream's read side as the relay reads it: into a buffer taken from
/// the pool once there is something to read, so a direction waiting for
/// bytes holds none.
pub trait ReadSide {
    /// What arrived, in a buffer from `buffers` (empty: the end of stream).
    fn read_pooled(&mut self, buffers: &Buffers) -> impl Future<Output = io::Result<Vec<u8>>>;
}

impl ReadSide for tokio::net::tcp::ReadHalf<'_> {
    /// Waits for readiness, then reads without waiting; a readiness that
    /// was stale gives the buffer back and waits again.
    async fn read_pooled(&mut self, buffers: &Buffers) -> io::Result<Vec<u8>> {
        loop {
            self.readable().await?;
            let mut buf = buffers.take();
            match self.try_read_buf(&mut buf) {
                Ok(_) => return Ok(buf),
                Err(e) => {
                    buffers.give(buf);
                    if e.kind() != io::ErrorKind::WouldBlock {
                        return Err(e);
                    }
                }
            }
        }
    }
}

/// Streams without a readiness of their own (the fuzz target's in-memory
/// pipes) hold their buffer while they wait.
impl<T: AsyncRead> ReadSide for tokio::io::ReadHalf<T> {
    async fn read_pooled(&mut self, buffers: &Buffers) -> io::Result<Vec<u8>> {
        let mut buf = buffers.take();
        match self.read_buf(&mut buf).await {
            Ok(_) => Ok(buf),
            Err(e) => {
                buffers.give(buf);
                Err(e)
            }
        }
    }
}

/// The relays' buffers, each of [`BUFFER`] bytes, taken while bytes wait
/// to be written and given back: the heap is not asked for one per read,
/// and at most [`SPARE_BUFFERS`] (4 MiB) wait here, as HAProxy keeps its
/// buffer pool.
#[derive(Default)]
pub struct Buffers(Mutex<Vec<Vec<u8>>>);

/// Buffers kept for the next sessions at most.
const SPARE_BUFFERS: usize = 256;

impl Buffers {
    /// An empty buffer of [`BUFFER`] bytes' capacity.
    pub fn take(&self) -> Vec<u8> {
        let spare = self.0.lock().unwrap_or_else(|e| e.into_inner()).pop();
        spare.unwrap_or_else(|| Vec::with_capacity(BUFFER))
    }

    /// Keeps `buf` for another read, emptied, unless enough are kept.
    pub fn give(&self, mut buf: Vec<u8>) {
        let mut spare = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if spare.len() < SPARE_BUFFERS && buf.capacity() == BUFFER {
            buf.clear();
            spare.push(buf);
        }
    }
}

/// An I/O error's OS message without the errno suffix, as HAProxy logs it.
fn os_message(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(k) => s[..k].to_string(),
        None => s,
    }
}

/// `app = "l4lb"`: the L4 load balancer of the shop's VIP.
pub struct L4lbApp;

impl crate::app::App for L4lbApp {
    const NAME: &'static str = "l4lb";
    const SUMMARY: &'static str = "the L4 load balancer (HAProxy's mode tcp)";
    type Settings = L4lbConfig;
    // One event loop: its work per event is a few system calls, so a second
    // worker only adds the futex wakeups and context switches of handing
    // sessions between threads (measured in docs/order.md).
    const WORKERS: usize = 1;
    // Its tasks are short (a few system calls each), so the loop runs
    // every ready one before it looks for I/O again rather than stopping
    // every 61: with 1,000 sessions at once, looking that often cost a
    // third more CPU per connection (`d11 bench lb`, docs/bench.md).
    const EVENT_INTERVAL: u32 = 4096;
    fn run(
        env: crate::app::AppEnv,
        c: L4lbConfig,
        ctl: tokio::net::UnixListener,
        shutdown: crate::app::Shutdown,
    ) -> crate::app::Running {
        Box::pin(async move {
            let lb = L4lb::new(&env.node, c);
            let listener = lb.bind()?;
            let report = {
                let lb = lb.clone();
                crate::control::report(move || lb.status())
            };
            tokio::spawn(crate::control::serve(ctl, env.node.clone(), "l4lb", report));
            info!(addr = %listener.local_addr()?, "l4lb up");
            lb.serve(listener, shutdown).await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> L4lbConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn omitted_keys_take_the_documented_defaults() {
        let c = config(r#"{"backends": ["192.168.1.20:443", "192.168.2.20:443"]}"#);
        assert_eq!(c.listen, "0.0.0.0:443".parse().unwrap());
        assert_eq!(c.balance, Balance::RoundRobin);
        assert_eq!(
            (c.maxconn, c.connect_timeout_ms, c.retries),
            (4096, 2000, 2)
        );
        assert_eq!((c.client_timeout_ms, c.server_timeout_ms), (30_000, 30_000));
        assert_eq!((c.health.rise, c.health.fall), (2, 3));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn unknown_keys_and_balances_are_refused() {
        let bad = [
            r#"{"backends": [], "mode": "tcp"}"#,
            r#"{"backends": [], "balance": "source"}"#,
        ];
        for json in bad {
            assert!(serde_json::from_str::<L4lbConfig>(json).is_err(), "{json}");
        }
        let c = config(r#"{"backends": [], "balance": "leastconn"}"#);
        assert_eq!(c.balance, Balance::LeastConn);
    }

    #[test]
    fn validate_names_the_offending_key() {
        let c = config(r#"{"backends": []}"#);
        assert!(c.validate().unwrap_err().to_string().contains("`backends`"));
        let c = config(r#"{"backends": ["10.0.0.1:1"], "health": {"fall": 0}}"#);
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("`health.fall`"));
    }
}
