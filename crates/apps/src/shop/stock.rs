//! The `stock` service: takes an order's units with the story's optimistic
//! lock — read the SKU's `(stock, version)`, then `UPDATE stock SET
//! stock=?, version=? WHERE sku=? AND version=?` — made to hold under a
//! surge: the deductions waiting on one SKU are **coalesced** into one
//! compare-and-set in one transaction (`db.stock_take_batch`), each order
//! still its own stock-move row, oldest first ([`coalesce`], docs/rpc.md
//! "The hot item"). Never below zero (the db decides each order in turn and
//! answers sold out when too few are left), and once per order id (a
//! replayed take is answered as such).
//!
//! | method | arguments | answer |
//! |---|---|---|
//! | `deduct` | order_id, sku, n | `{outcome: taken \| replayed \| sold_out \| already_restored, stock, version, cas_attempts, batch, waited_ms, commit}` |
//! | `restore` | order_id | `{outcome: restored \| already_restored \| nothing_taken, …}` (the compensation) |
//! | `get` | sku | `{stock, version}` or null |

pub mod coalesce;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value as Json};
use tokio::sync::oneshot;

use super::{call, service_error, Provider, ProviderConfig};
use crate::db::{BatchTake, Stock as Level};
use crate::rpc::{Call, Consumer, Fault, Services, Status, Value};
use coalesce::{Answer, Coalescer, Deducted, Failure, Limits, Op, Reply, Ticket};

/// The stock service's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StockConfig {
    #[serde(default)]
    pub provider: ProviderConfig,
    /// Compare-and-sets one batch may make before its orders are answered
    /// with an error (each conflict means another provider or a restore
    /// wrote first, so some order made progress).
    #[serde(default = "default_max_cas_attempts")]
    pub max_cas_attempts: u32,
    /// Orders decided in one compare-and-set (one transaction, one change
    /// in the log).
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
}

fn default_max_cas_attempts() -> u32 {
    64
}
fn default_max_batch() -> usize {
    512
}

/// A deduction answers this much before its caller's `timeout`, so the
/// caller gets the answer and not its own timeout.
fn deadline(now: Instant, timeout: Duration) -> Instant {
    now + timeout.saturating_sub((timeout / 10).max(Duration::from_millis(50)))
}

/// The stock service.
pub struct Stock {
    db: Arc<Consumer>,
    hot: Mutex<Hot>,
    counters: Mutex<Counters>,
}

/// A deduction's answer, with its batch's commit.
type Answered = (Result<Deducted, Failure>, Json);

/// The coalescer and the deductions waiting for its answers.
struct Hot {
    core: Coalescer,
    waiters: HashMap<Ticket, oneshot::Sender<Answered>>,
    next: Ticket,
}

/// What the stock service reports (`d11 show vm-stock`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub struct StockReport {
    pub counters: Counters,
    /// The coalescer's batches (docs/rpc.md, "The hot item").
    pub coalescing: coalesce::Stats,
    /// Deductions queued or at the db now.
    pub waiting: usize,
    pub db: crate::rpc::ConsumerReport,
}

/// The stock service's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Counters {
    pub deducts: u64,
    pub taken: u64,
    pub replayed: u64,
    pub sold_out: u64,
    pub already_restored: u64,
    /// Deductions answered with an error, by reason.
    pub failed: std::collections::BTreeMap<String, u64>,
    pub cas_attempts_max: u32,
    pub waited_ms_max: u64,
    pub restores: u64,
}

impl Stock {
    pub fn new(p: &Provider, config: StockConfig) -> Arc<Stock> {
        let limits = Limits {
            max_batch: config.max_batch,
            max_cas_attempts: config.max_cas_attempts,
        };
        Arc::new(Stock {
            db: p.consumer("db"),
            hot: Mutex::new(Hot {
                core: Coalescer::new(limits),
                waiters: HashMap::new(),
                next: 1,
            }),
            counters: Mutex::default(),
        })
    }

    fn count(&self, f: impl FnOnce(&mut Counters)) {
        f(&mut self.counters.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn hot(&self) -> std::sync::MutexGuard<'_, Hot> {
        self.hot.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn report(self: &Arc<Self>) -> impl Fn() -> StockReport + Send + Sync + 'static {
        let s = self.clone();
        move || {
            let counters = s.counters.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let h = s.hot();
            StockReport {
                counters,
                coalescing: h.core.stats().clone(),
                waiting: h.core.waiting(),
                db: s.db.status(),
            }
        }
    }

    /// Takes `n` of `sku` for `order_id` in the SKU's next batch; answers
    /// a little before `timeout`.
    pub async fn deduct(
        self: &Arc<Self>,
        order_id: &str,
        sku: &str,
        n: i64,
        timeout: Duration,
    ) -> Result<Json, Fault> {
        self.count(|c| c.deducts += 1);
        let now = Instant::now();
        let until = deadline(now, timeout);
        let (tx, mut rx) = oneshot::channel();
        {
            let mut h = self.hot();
            let ticket = h.next;
            h.next += 1;
            h.waiters.insert(ticket, tx);
            h.core.push(now, ticket, sku, order_id, n, until);
        }
        self.drive();
        let answer = tokio::select! {
            a = &mut rx => a,
            _ = tokio::time::sleep_until(until.into()) => {
                // Still queued: the coalescer answers it now. At the db:
                // its batch's answer (or the db call's timeout) comes.
                self.drive();
                rx.await
            }
        };
        let (answer, commit) = answer
            .map_err(|_| Fault::new(Status::ServerError, "stock.deduct: its answer was lost"))?;
        self.finish(sku, answer, commit)
    }

    /// Runs the coalescer: answers what it decided, sends what it asks.
    fn drive(self: &Arc<Self>) {
        let (mut ops, mut answers) = (Vec::new(), Vec::new());
        let mut h = self.hot();
        h.core.poll(Instant::now(), &mut ops, &mut answers);
        deliver(&mut h, answers, &Json::Null);
        drop(h);
        for op in ops {
            let me = self.clone();
            tokio::spawn(async move {
                let (reply, commit) = me.run(&op).await;
                let mut answers = Vec::new();
                {
                    let mut h = me.hot();
                    h.core
                        .on_reply(Instant::now(), op.sku(), reply, &mut answers);
                    deliver(&mut h, answers, &commit);
                }
                me.drive();
            });
        }
    }

    /// One db call of the coalescer: its reply, and the commit it made.
    async fn run(&self, op: &Op) -> (Reply, Json) {
        match op {
            Op::Read { sku } => {
                let (r, _) = call(&self.db, "stock_get", vec![sku.as_str().into()], sku).await;
                let reply = match r {
                    Ok(j) if j.is_null() => Reply::Level(None),
                    Ok(j) => match level(&j) {
                        Some(l) => Reply::Level(Some(l)),
                        None => Reply::Failed(bad_answer("stock_get", &j)),
                    },
                    Err(f) => Reply::Failed(f),
                };
                (reply, Json::Null)
            }
            Op::Take {
                sku,
                version,
                takes,
            } => {
                let list = takes
                    .iter()
                    .map(|t| {
                        Value::Map(vec![
                            ("order_id".into(), t.order_id.as_str().into()),
                            ("n".into(), Value::Long(t.n)),
                        ])
                    })
                    .collect();
                let args = vec![
                    sku.as_str().into(),
                    Value::Long(*version),
                    Value::List(list),
                ];
                let trace = format!("batch of {} on {sku}", takes.len());
                let (r, _) = call(&self.db, "stock_take_batch", args, &trace).await;
                match r {
                    Ok(j) => match serde_json::from_value::<BatchTake>(j.clone()) {
                        Ok(b) => (Reply::Batch(b), j["commit"].clone()),
                        Err(_) => (
                            Reply::Failed(bad_answer("stock_take_batch", &j)),
                            Json::Null,
                        ),
                    },
                    Err(f) => (Reply::Failed(f), Json::Null),
                }
            }
        }
    }

    fn finish(
        &self,
        sku: &str,
        answer: Result<Deducted, Failure>,
        commit: Json,
    ) -> Result<Json, Fault> {
        match answer {
            Ok(d) => {
                self.count(|c| {
                    c.cas_attempts_max = c.cas_attempts_max.max(d.cas_attempts);
                    c.waited_ms_max = c.waited_ms_max.max(d.waited.as_millis() as u64);
                    match d.outcome {
                        coalesce::Outcome::Taken => c.taken += 1,
                        coalesce::Outcome::Replayed => c.replayed += 1,
                        coalesce::Outcome::SoldOut => c.sold_out += 1,
                        coalesce::Outcome::AlreadyRestored => c.already_restored += 1,
                    }
                });
                Ok(json!({
                    "outcome": d.outcome.name(),
                    "stock": d.level.stock,
                    "version": d.level.version,
                    "cas_attempts": d.cas_attempts,
                    "batch": d.batch,
                    "waited_ms": d.waited.as_millis() as u64,
                    "commit": commit,
                }))
            }
            Err(f) => {
                let (reason, fault) = match f {
                    Failure::GaveUp { waited } => (
                        "gave_up",
                        service_error(format!(
                            "{sku}: gave up after {} ms in the queue (deadline); nothing taken",
                            waited.as_millis()
                        )),
                    ),
                    Failure::Conflicts { attempts } => (
                        "conflicts",
                        service_error(format!(
                            "{sku}: {attempts} compare-and-sets all conflicted; nothing taken"
                        )),
                    ),
                    Failure::UnknownSku => {
                        ("unknown_sku", service_error(format!("unknown sku {sku:?}")))
                    }
                    Failure::Mismatch(m) => ("mismatch", service_error(m)),
                    Failure::Db(f) => ("db", f),
                };
                self.count(|c| *c.failed.entry(reason.to_string()).or_default() += 1);
                Err(fault)
            }
        }
    }

    /// The service's methods.
    pub fn services(self: &Arc<Self>) -> Services {
        let mut s = Services::new();
        let me = self.clone();
        s.method("stock", "deduct", move |c: Call| {
            let me = me.clone();
            async move {
                let (order_id, sku, n) = (c.str_arg(0)?, c.str_arg(1)?, c.int_arg(2)?);
                if n < 1 {
                    return Err(Fault::new(
                        Status::BadRequest,
                        format!("deduct of {n} units"),
                    ));
                }
                let timeout = c
                    .request
                    .attachments
                    .get("timeout")
                    .and_then(|t| t.parse().ok())
                    .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
                me.deduct(order_id, sku, n, timeout).await.map(Value::from)
            }
        });
        let me = self.clone();
        s.method("stock", "restore", move |c: Call| {
            let me = me.clone();
            async move {
                let order_id = c.str_arg(0)?;
                me.count(|c| c.restores += 1);
                let (r, _) = call(&me.db, "stock_restore", vec![order_id.into()], order_id).await;
                r.map(Value::from)
            }
        });
        let me = self.clone();
        s.method("stock", "get", move |c: Call| {
            let me = me.clone();
            async move {
                let sku = c.str_arg(0)?;
                let (r, _) = call(&me.db, "stock_get", vec![sku.into()], sku).await;
                r.map(Value::from)
            }
        });
        s
    }
}

/// A deduction's deadline when its call names no `timeout` (the server's
/// own handler timeout then applies).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

fn deliver(h: &mut Hot, answers: Vec<Answer>, commit: &Json) {
    for a in answers {
        if let Some(tx) = h.waiters.remove(&a.ticket) {
            // The caller may have gone (its handler timed out): nothing to do.
            let _ = tx.send((a.result, commit.clone()));
        }
    }
}

fn level(j: &Json) -> Option<Level> {
    Some(Level {
        stock: j["stock"].as_i64()?,
        version: j["version"].as_i64()?,
    })
}

fn bad_answer(method: &str, j: &Json) -> Fault {
    Fault::new(
        Status::BadResponse,
        format!("db.{method} answered what stock cannot read: {j}"),
    )
}
