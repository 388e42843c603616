//! The load generator behind `d11 bench order`: many phone apps at once,
//! each placing complete orders back to back for a while, and what came of
//! them — orders per second, latency percentiles, errors by kind.
//!
//! Every order is what `d11 order` does ([`phone::order_with`]): a new TCP
//! connection, a full TLS handshake against the lab root, the story's
//! `POST /purchaseOrder` with a fresh `Idempotency-Key`, the reply, and the
//! connection dropped. One TLS configuration serves every client, with
//! session resumption turned off, so each handshake is a full one as in the
//! phone app (a new process per order there, so no ticket to resume).
//! Nothing is retried: a failed order is counted as an error.
//!
//! Each client is a tokio task on the runtime of the caller, which runs on
//! the kernel TCP/IP stack of the namespace it was started in (the phone's),
//! like the phone app.

use crate::phone::{self, OrderError, OrderRequest};
use crate::pki;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_rustls::rustls::client::Resumption;

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The order each client places, each time with a new idempotency key
    /// (`retries` is the clients' business: the bench sets 0).
    pub request: OrderRequest,
    /// Clients placing orders at once, each one order at a time.
    pub clients: usize,
    /// Orders that end within this first stretch are not counted (ARP, NAT
    /// entries, the first checks of the load balancer, allocator warm-up).
    pub warmup: Duration,
    /// The measured stretch after the warm-up; no order starts after it.
    pub duration: Duration,
}

/// Latencies of the orders that succeeded, from the connect to the reply's
/// last byte as the phone app reports it (`OrderOutcome::elapsed_ms`; the
/// closing handshake after it is the client's time, not the order's), in
/// milliseconds (nearest-rank percentiles).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Latency {
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    /// The percentiles of `ms` (any order); all zero when it is empty.
    pub fn of(ms: &mut [f64]) -> Latency {
        if ms.is_empty() {
            return Latency::default();
        }
        ms.sort_by(|a, b| a.total_cmp(b));
        let rank = |p: f64| ms[((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
        Latency {
            min: ms[0],
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: ms[ms.len() - 1],
            mean: ms.iter().sum::<f64>() / ms.len() as f64,
        }
    }
}

/// What a run came to, counting only orders that ended in the measured
/// stretch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    pub clients: usize,
    /// The measured stretch.
    pub seconds: f64,
    /// Orders answered 2xx.
    pub orders: u64,
    /// Orders that failed: no reply, TLS refused, or a status other than 2xx.
    pub errors: u64,
    /// `errors` by kind, e.g. `"HTTP 503"`, `"connect: Connection refused (os error 111)"`.
    pub error_kinds: BTreeMap<String, u64>,
    /// `orders` / `seconds`.
    pub orders_per_s: f64,
    pub latency_ms: Latency,
}

/// One client's tally.
#[derive(Default)]
struct Tally {
    ok_ms: Vec<f64>,
    errors: BTreeMap<String, u64>,
}

/// Runs `config.clients` clients for the warm-up and the measured stretch,
/// then waits for the orders still in flight (at most `request.timeout`).
pub async fn run(config: &LoadConfig) -> Result<LoadReport, OrderError> {
    let base = pki::client_config(&config.request.root, false)?;
    let tls = full_handshakes(&base);
    let from = Instant::now() + config.warmup;
    let until = from + config.duration;
    let mut clients = JoinSet::new();
    for _ in 0..config.clients.max(1) {
        let (req, tls) = (config.request.clone(), tls.clone());
        clients.spawn(client(req, tls, from, until));
    }
    let mut ok_ms = Vec::new();
    let mut error_kinds = BTreeMap::new();
    while let Some(done) = clients.join_next().await {
        let t = done.expect("a client task never panics");
        ok_ms.extend(t.ok_ms);
        for (k, n) in t.errors {
            *error_kinds.entry(k).or_default() += n;
        }
    }
    let seconds = config.duration.as_secs_f64();
    let orders = ok_ms.len() as u64;
    Ok(LoadReport {
        clients: config.clients.max(1),
        seconds,
        orders,
        errors: error_kinds.values().sum(),
        error_kinds,
        orders_per_s: if seconds > 0.0 {
            orders as f64 / seconds
        } else {
            0.0
        },
        latency_ms: Latency::of(&mut ok_ms),
    })
}

/// `base` with TLS session resumption off: every handshake is a full one.
fn full_handshakes(
    base: &tokio_rustls::rustls::ClientConfig,
) -> Arc<tokio_rustls::rustls::ClientConfig> {
    let mut config = base.clone();
    config.resumption = Resumption::disabled();
    Arc::new(config)
}

/// One phone app: orders back to back until `until`, each counted if it
/// ended between `from` and `until`.
async fn client(
    mut req: OrderRequest,
    tls: Arc<tokio_rustls::rustls::ClientConfig>,
    from: Instant,
    until: Instant,
) -> Tally {
    let mut t = Tally::default();
    while Instant::now() < until {
        req.idempotency_key = phone::new_idempotency_key();
        let outcome = phone::order_with(&req, tls.clone()).await;
        let ended = Instant::now();
        if ended < from || ended > until {
            continue;
        }
        let failed = match outcome {
            Ok(out) if (200..300).contains(&out.status) => {
                t.ok_ms.push(out.elapsed_ms);
                continue;
            }
            Ok(out) => format!("HTTP {}", out.status),
            Err(e) => error_kind(&e),
        };
        *t.errors.entry(failed).or_default() += 1;
        // A refused connection fails at once: do not spin on it.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t
}

/// A short name for why an order failed, the same for every order that
/// failed alike: the step and the last cause, without the attempt number.
fn error_kind(e: &OrderError) -> String {
    match e {
        OrderError::Unreachable { errors, .. } => {
            let last = errors.last().map(String::as_str).unwrap_or("no attempt");
            // "attempt 1: connect 203.0.113.24:443: Connection refused (os error 111)"
            let what = last.split_once(": ").map_or(last, |(_, w)| w);
            if what.starts_with("no reply within") {
                return "timeout".into();
            }
            // The step, less the address it names ("connect 203.0.113.24:443").
            let step: Vec<&str> = what
                .split(": ")
                .next()
                .unwrap_or(what)
                .split(' ')
                .filter(|w| w.parse::<std::net::SocketAddr>().is_err())
                .collect();
            let cause = what.rsplit(": ").next().unwrap_or(what);
            match step.join(" ") {
                s if s.is_empty() || s == cause => cause.to_string(),
                s => format!("{s}: {cause}"),
            }
        }
        OrderError::Tls { detail, .. } => format!("TLS refused: {detail}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut ms: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let l = Latency::of(&mut ms);
        assert_eq!(
            (l.min, l.p50, l.p90, l.p99, l.max),
            (1.0, 50.0, 90.0, 99.0, 100.0)
        );
        assert_eq!(l.mean, 50.5);
        assert_eq!(Latency::of(&mut [7.0]).p99, 7.0);
        assert_eq!(Latency::of(&mut []), Latency::default());
    }

    #[test]
    fn errors_are_named_by_step_and_cause_without_the_attempt() {
        let unreachable = |e: &str| OrderError::Unreachable {
            attempts: 1,
            errors: vec![e.into()],
        };
        assert_eq!(
            error_kind(&unreachable(
                "attempt 1: connect 203.0.113.24:443: Connection refused (os error 111)"
            )),
            "connect: Connection refused (os error 111)"
        );
        assert_eq!(
            error_kind(&unreachable("attempt 1: no reply within 5000 ms")),
            "timeout"
        );
        assert_eq!(
            error_kind(&unreachable(
                "attempt 1: TLS handshake: Connection reset by peer (os error 104)"
            )),
            "TLS handshake: Connection reset by peer (os error 104)"
        );
    }
}
