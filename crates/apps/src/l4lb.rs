//! The L4 load balancer in `vm-lb`: HAProxy's `mode tcp`. It terminates the
//! client's TCP connection, opens a new one to a backend controller and
//! copies bytes both ways, so TLS passes through untouched.
//!
//! The choice of a backend (`balance.rs`), a backend's health
//! (`crate::health`) and a session's two-way copy (`relay.rs`) are plain
//! state machines. The sessions run on an event loop of the balancer's own
//! (`event_loop.rs`: one thread, edge-triggered `epoll`, the sessions in a
//! slab, their timers on a wheel, `wheel.rs`), as HAProxy runs them; the
//! health checks (one task per backend) and the control socket stay on
//! tokio, and this file holds what the two share.
//!
//! - Sessions go to UP backends only (round robin or least connections);
//!   a failed connect is retried on another backend (HAProxy's `retries`
//!   with `option redispatch`); with none left the client is closed.
//! - Backends start UP, one failed check away from DOWN (HAProxy's default
//!   `init-state up`); a DOWN backend gets no new sessions, its live ones go on.
//! - At `maxconn` live sessions the listener is not accepted from (HAProxy's
//!   `maxconn`): new connections wait in the kernel's backlog, listened
//!   with `maxconn` as HAProxy's `backlog` defaults to, until a session
//!   ends; each such pause is counted in `maxconn_pauses`.
//! - Each direction reads into a bounded buffer and writes it out before
//!   reading again (backpressure); an end of stream is passed on as a
//!   half-close (`shutdown(Write)`) and the other direction goes on.
//! - A side is idle when no byte moved either way for its timeout; the
//!   session then ends (`cD`/`sD`).
//! - After shutdown it stops accepting and gives live sessions
//!   `shutdown_grace_ms`, then kills them (`KD`).

mod balance;
mod event_loop;
mod relay;
mod tcplog;
mod wheel;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{timeout, MissedTickBehavior};
use tracing::{error, info, warn};

pub use crate::health::{HealthConfig, InitState};
pub use balance::Balance;
pub use relay::{Buffers, Pumped, Ready, Relay, Socket, BUFFER, CLIENT, SERVER};
pub use tcplog::Termination;

use crate::health::{Health, Transition};
use balance::{Balancer, Candidate};
use event_loop::Sessions;

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
        // Killed when dropped, as `serve` returns or is dropped.
        let mut sessions = Sessions::spawn(self.clone(), listener.into_std()?)?;
        tokio::select! {
            _ = shutdown => sessions.stop(),
            ended = sessions.finished() => return ended,
        }
        sessions.finished().await
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
