//! A consumer of one service across its providers (Dubbo's `ReferenceConfig`
//! with a `FailoverClusterInvoker`): the registry's provider list, a load
//! balancer, a call timeout, and retries on another provider for calls
//! marked idempotent — never for the others.
//!
//! - [`Chooser`] is the sans-IO load balancer (Dubbo's `random`,
//!   `roundrobin`, `leastactive`, all weights equal); randomness comes in.
//! - A call fails over (at most `retries` more attempts, each on a provider
//!   not tried yet) only when it is idempotent and the failure is the
//!   provider's or the transport's (`90` connection, `30`/`31` timeout,
//!   `80` server error). A service's own answer (`70`, `60`, `40`) is final.
//! - A provider whose connection fails is skipped for `failure_backoff_ms`,
//!   or until the registry's list changes; if every provider is skipped,
//!   they are tried anyway (a stale mark must not stop all calls).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::client::{Client, ClientConfig};
use super::codec::{Fault, Request, Status};
use super::hessian::Value;
use super::registry::Providers;

/// How a provider is picked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Uniformly at random (Dubbo's default).
    #[default]
    Random,
    /// Each in turn.
    RoundRobin,
    /// The one with the fewest calls in flight; ties at random.
    LeastActive,
}

/// The load balancer: picks one of the candidates.
#[derive(Debug, Clone)]
pub struct Chooser {
    balance: Balance,
    next: u64,
}

impl Chooser {
    pub fn new(balance: Balance) -> Chooser {
        Chooser { balance, next: 0 }
    }

    /// Picks an index into `active` (each candidate's calls in flight);
    /// `random` is a fresh random number. `None` when there is no candidate.
    pub fn choose(&mut self, active: &[usize], random: u64) -> Option<usize> {
        if active.is_empty() {
            return None;
        }
        let n = active.len() as u64;
        Some(match self.balance {
            Balance::Random => (random % n) as usize,
            Balance::RoundRobin => {
                let i = self.next % n;
                self.next = self.next.wrapping_add(1);
                i as usize
            }
            Balance::LeastActive => {
                let least = *active.iter().min()?;
                let ties: Vec<usize> = (0..active.len()).filter(|&i| active[i] == least).collect();
                ties[(random % ties.len() as u64) as usize]
            }
        })
    }
}

/// SplitMix64: the consumer's own small random source, seeded once.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A consumer's settings (Dubbo's `<dubbo:reference>` attributes).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    #[serde(default)]
    pub balance: Balance,
    /// One attempt's timeout.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Further attempts for idempotent calls (Dubbo's `retries`, default 2).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// How long a provider whose connection failed is skipped.
    #[serde(default = "default_failure_backoff_ms")]
    pub failure_backoff_ms: u64,
    /// The seed of the random balancer (0: from the clock).
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub client: ClientConfig,
}

fn default_timeout_ms() -> u64 {
    1000
}
fn default_retries() -> u32 {
    2
}
fn default_failure_backoff_ms() -> u64 {
    5000
}

impl Default for ConsumerConfig {
    fn default() -> ConsumerConfig {
        ConsumerConfig {
            balance: Balance::default(),
            timeout_ms: default_timeout_ms(),
            retries: default_retries(),
            failure_backoff_ms: default_failure_backoff_ms(),
            seed: 0,
            client: ClientConfig::default(),
        }
    }
}

/// How one call is made.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Safe to run twice: failover may retry it on another provider.
    pub idempotent: bool,
    /// This call's timeout per attempt, instead of the consumer's.
    pub timeout: Option<Duration>,
    /// When the caller needs the answer by: no attempt outlasts it (each
    /// attempt's timeout is cut to what is left), and no failover starts
    /// after it. The caller's own budget, passed down a chain of calls.
    pub deadline: Option<Instant>,
    /// Extra attachments (a trace id, an idempotency key, …).
    pub attachments: BTreeMap<String, String>,
}

impl CallOptions {
    /// An idempotent call.
    pub fn idempotent() -> CallOptions {
        CallOptions {
            idempotent: true,
            ..CallOptions::default()
        }
    }
}

/// A call's answer and the providers it went to, in order.
#[derive(Debug)]
pub struct Traced {
    pub result: Result<Value, Fault>,
    pub tried: Vec<SocketAddr>,
}

/// A client of one service over the registry's provider list.
pub struct Consumer {
    service: String,
    config: ConsumerConfig,
    providers: watch::Receiver<Providers>,
    state: Mutex<State>,
}

/// What a consumer reports: the service it calls, how it chooses, and
/// each provider with its client's counters.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct ConsumerReport {
    pub service: String,
    pub balance: String,
    /// The registry's revision of the provider list.
    pub revision: Option<u64>,
    pub calls: u64,
    pub failovers: u64,
    pub no_provider: u64,
    pub providers: Vec<ProviderReport>,
}

/// One provider as a consumer sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct ProviderReport {
    pub addr: String,
    /// Left out of the choice for now (it failed lately).
    pub skipped: bool,
    /// Calls sent to it.
    pub chosen: u64,
    pub client: super::client::ClientReport,
}

struct State {
    revision: Option<u64>,
    /// In the registry's order (sorted addresses).
    list: Vec<Arc<ProviderState>>,
    /// Clients kept across list changes, by address.
    clients: HashMap<SocketAddr, Arc<ProviderState>>,
    chooser: Chooser,
    rng: SplitMix,
    calls: u64,
    failovers: u64,
    no_provider: u64,
}

struct ProviderState {
    client: Client,
    skipped_until: Mutex<Option<Instant>>,
    chosen: Mutex<u64>,
}

impl ProviderState {
    fn skipped(&self, now: Instant) -> bool {
        matches!(*self.skipped_until.lock().unwrap_or_else(|e| e.into_inner()), Some(t) if t > now)
    }
}

/// The failures another provider might not have.
fn provider_failure(s: Status) -> bool {
    matches!(
        s,
        Status::ClientError | Status::ClientTimeout | Status::ServerTimeout | Status::ServerError
    )
}

impl Consumer {
    /// A consumer of `service` following `providers` (from
    /// [`registry::subscribe`](super::registry::subscribe), or a fixed list
    /// for tests).
    pub fn new(
        service: &str,
        config: ConsumerConfig,
        providers: watch::Receiver<Providers>,
    ) -> Consumer {
        let seed = match config.seed {
            0 => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64),
            s => s,
        };
        Consumer {
            service: service.into(),
            state: Mutex::new(State {
                revision: None,
                list: Vec::new(),
                clients: HashMap::new(),
                chooser: Chooser::new(config.balance),
                rng: SplitMix::new(seed),
                calls: 0,
                failovers: 0,
                no_provider: 0,
            }),
            config,
            providers,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes in the registry's latest list: new clients for new addresses,
    /// skip marks cleared (the registry says they are there).
    fn refresh(&self, st: &mut State) {
        let p = self.providers.borrow();
        if st.revision == Some(p.revision) {
            return;
        }
        st.revision = Some(p.revision);
        let mut list = Vec::new();
        for a in &p.addrs {
            let Ok(addr) = a.parse::<SocketAddr>() else {
                warn!(service = %self.service, "registry lists {a:?}, not ip:port");
                continue;
            };
            let ps = st
                .clients
                .entry(addr)
                .or_insert_with(|| {
                    Arc::new(ProviderState {
                        client: Client::new(addr, self.config.client.clone()),
                        skipped_until: Mutex::new(None),
                        chosen: Mutex::new(0),
                    })
                })
                .clone();
            *ps.skipped_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
            list.push(ps);
        }
        st.clients
            .retain(|a, _| p.addrs.iter().any(|x| x.parse() == Ok(*a)));
        info!(service = %self.service, revision = p.revision, providers = ?p.addrs, "consumer: provider list");
        st.list = list;
    }

    /// Picks a provider not in `tried`, preferring ones not skipped.
    fn pick(&self, tried: &[SocketAddr]) -> Option<Arc<ProviderState>> {
        let mut st = self.state();
        self.refresh(&mut st);
        let now = Instant::now();
        let untried: Vec<Arc<ProviderState>> = st
            .list
            .iter()
            .filter(|p| !tried.contains(&p.client.addr()))
            .cloned()
            .collect();
        let healthy: Vec<Arc<ProviderState>> = untried
            .iter()
            .filter(|p| !p.skipped(now))
            .cloned()
            .collect();
        let candidates = if healthy.is_empty() { untried } else { healthy };
        let active: Vec<usize> = candidates.iter().map(|p| p.client.active()).collect();
        let r = st.rng.next_u64();
        let i = st.chooser.choose(&active, r)?;
        let p = candidates[i].clone();
        *p.chosen.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        Some(p)
    }

    /// Calls `service.method(args)`: one attempt, or up to `1 + retries` on
    /// different providers when `opts.idempotent`.
    pub async fn call(
        &self,
        method: &str,
        args: Vec<Value>,
        opts: CallOptions,
    ) -> Result<Value, Fault> {
        self.call_traced(method, args, opts).await.result
    }

    /// [`Consumer::call`], also saying which providers were tried, in order
    /// (the last one answered): what `d11 order` shows of each hop.
    pub async fn call_traced(&self, method: &str, args: Vec<Value>, opts: CallOptions) -> Traced {
        let mut req = Request::new(&self.service, method, args);
        req.attachments = opts.attachments;
        if opts.idempotent {
            req.attachments.insert("idempotent".into(), "true".into());
        }
        let timeout = opts
            .timeout
            .unwrap_or(Duration::from_millis(self.config.timeout_ms));
        let attempts = if opts.idempotent {
            1 + self.config.retries
        } else {
            1
        };
        self.state().calls += 1;
        let mut tried = Vec::new();
        let mut last: Option<Fault> = None;
        for attempt in 0..attempts {
            let timeout = match opts.deadline {
                None => timeout,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if left >= Duration::from_millis(1) => timeout.min(left),
                    _ => {
                        if last.is_none() {
                            last = Some(Fault::new(
                                Status::ClientTimeout,
                                format!(
                                    "{}.{method}: no time left before the caller's deadline",
                                    self.service
                                ),
                            ));
                        }
                        break;
                    }
                },
            };
            let Some(p) = self.pick(&tried) else {
                break;
            };
            let addr = p.client.addr();
            tried.push(addr);
            if attempt > 0 {
                self.state().failovers += 1;
                info!(service = %self.service, %method, provider = %addr, attempt, "consumer: failover");
            }
            debug!(service = %self.service, %method, provider = %addr, "consumer: call");
            match p.client.call(req.clone(), Some(timeout)).await {
                Ok(v) => {
                    return Traced {
                        result: Ok(v),
                        tried,
                    }
                }
                Err(f) => {
                    if f.status == Status::ClientError {
                        let until =
                            Instant::now() + Duration::from_millis(self.config.failure_backoff_ms);
                        *p.skipped_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(until);
                        warn!(service = %self.service, provider = %addr, "consumer: provider skipped: {f}");
                    }
                    let retry = opts.idempotent && provider_failure(f.status);
                    last = Some(f);
                    if !retry {
                        break;
                    }
                }
            }
        }
        let result = match last {
            Some(f) if tried.len() > 1 => Err(Fault::new(
                f.status,
                format!(
                    "{} (after {} attempts on different providers)",
                    f.message,
                    tried.len()
                ),
            )),
            Some(f) => Err(f),
            None => {
                self.state().no_provider += 1;
                Err(Fault::new(
                    Status::ClientError,
                    format!("no provider of {:?} is registered", self.service),
                ))
            }
        };
        Traced { result, tried }
    }

    /// The service it calls.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Waits until the registry has listed at least one provider, at most
    /// `wait`; says whether one is there (a service starting before its
    /// dependencies calls this before taking traffic).
    pub async fn wait_for_providers(&self, wait: Duration) -> bool {
        let mut rx = self.providers.clone();
        tokio::time::timeout(wait, rx.wait_for(|p| !p.addrs.is_empty()))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The provider list and per-provider counters, for the control socket.
    pub fn status(&self) -> ConsumerReport {
        let st = self.state();
        let now = Instant::now();
        ConsumerReport {
            service: self.service.to_string(),
            balance: format!("{:?}", self.config.balance),
            revision: st.revision,
            calls: st.calls,
            failovers: st.failovers,
            no_provider: st.no_provider,
            providers: st
                .list
                .iter()
                .map(|p| ProviderReport {
                    addr: p.client.addr().to_string(),
                    skipped: p.skipped(now),
                    chosen: *p.chosen.lock().unwrap_or_else(|e| e.into_inner()),
                    client: p.client.status(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_takes_each_in_turn() {
        let mut c = Chooser::new(Balance::RoundRobin);
        let picks: Vec<_> = (0..6).map(|_| c.choose(&[0, 0, 0], 99).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        assert_eq!(c.choose(&[], 0), None);
    }

    #[test]
    fn random_spreads_over_every_candidate() {
        let mut c = Chooser::new(Balance::Random);
        let mut rng = SplitMix::new(11);
        let mut hits = [0; 3];
        for _ in 0..3000 {
            hits[c.choose(&[5, 0, 9], rng.next_u64()).unwrap()] += 1;
        }
        assert!(hits.iter().all(|&h| (800..1200).contains(&h)), "{hits:?}");
    }

    #[test]
    fn least_active_picks_the_idlest_and_breaks_ties_at_random() {
        let mut c = Chooser::new(Balance::LeastActive);
        assert_eq!(c.choose(&[3, 1, 2], 0), Some(1));
        assert_eq!(c.choose(&[3, 1, 2], 7), Some(1));
        let mut rng = SplitMix::new(5);
        let mut seen = [0; 4];
        for _ in 0..400 {
            seen[c.choose(&[0, 4, 0, 1], rng.next_u64()).unwrap()] += 1;
        }
        assert_eq!(seen[1] + seen[3], 0);
        assert!(seen[0] > 100 && seen[2] > 100, "{seen:?}");
    }

    #[test]
    fn only_provider_and_transport_failures_fail_over() {
        for s in [
            Status::ClientError,
            Status::ClientTimeout,
            Status::ServerTimeout,
            Status::ServerError,
        ] {
            assert!(provider_failure(s), "{s}");
        }
        for s in [
            Status::ServiceError,
            Status::ServiceNotFound,
            Status::BadRequest,
            Status::BadResponse,
        ] {
            assert!(!provider_failure(s), "{s}");
        }
    }

    #[test]
    fn balance_names_match_dubbos_config_words() {
        let b: Balance = serde_json::from_str("\"least_active\"").unwrap();
        assert_eq!(b, Balance::LeastActive);
        let c: ConsumerConfig =
            serde_json::from_str(r#"{"balance":"round_robin","retries":1}"#).unwrap();
        assert_eq!(
            (c.balance, c.retries, c.timeout_ms),
            (Balance::RoundRobin, 1, 1000)
        );
    }
}
