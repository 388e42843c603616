//! The composite `order` service: one order is a saga of calls (Seata's
//! "Saga" mode, or the orchestrated saga of *Microservices Patterns*
//! ch. 4), each idempotent by order id, each undone by a compensation when
//! a later step fails:
//!
//! | step | call | compensation |
//! |---|---|---|
//! | 1 | `db.order_create` → pending (by order id; a known key with the same content is the same order) | `db.order_set_state(cancelled)` |
//! | 2 | `stock.deduct` (the SKU's coalesced compare-and-set) | `stock.restore` |
//! | 3 | `coupon.reserve` (when the order names one) | `coupon.release` |
//! | 4 | `coupon.consume` | |
//! | 5 | `db.order_set_state(confirmed)`: the commit | |
//!
//! A call that fails (the provider died, timed out) after the consumer's
//! failover is compensated and the caller gets a fault: the order is
//! cancelled and its stock given back, never half done. Compensations are
//! retried for `compensate_ms` (they are idempotent, and a restore that
//! comes before its take leaves a tombstone that refuses the late take).
//! The same order again (its id or key) resumes a pending saga, or
//! answers what a finished one answered. A commit whose answer was lost
//! is set again (rolled forward), not undone: everything before it is done.
//!
//! The saga keeps to its caller's time: its forward steps carry a deadline
//! of four fifths of the call's `timeout` attachment (each attempt cut to
//! what is left, no failover after it), so a saga out of time is
//! compensated and answered before its caller gives up; and it runs in a
//! task of its own, so the server abandoning the handler at that timeout
//! never stops it half way.
//!
//! `create(order_id, key or null, order)` answers `{outcome: confirmed |
//! sold_out | cancelled | key_reused, order_id, replayed, order,
//! created_at, message?, path: [hop…], commit}`; `path` lists every call
//! made, its provider and time, what `d11 order` prints.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value as Json};

use super::{call_until, field, service_error, Hop, Provider, ProviderConfig};
use crate::rpc::{Call, Consumer, Fault, Services, Status, Value};

/// The order service's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderConfig {
    #[serde(default)]
    pub provider: ProviderConfig,
    /// How long a compensation is retried before it is left to a retry of
    /// the order (which resumes the saga).
    #[serde(default = "default_compensate_ms")]
    pub compensate_ms: u64,
}

fn default_compensate_ms() -> u64 {
    5000
}

/// The order service.
pub struct Order {
    db: Arc<Consumer>,
    stock: Arc<Consumer>,
    coupon: Arc<Consumer>,
    compensate: Duration,
    counters: Mutex<BTreeMap<&'static str, u64>>,
}

/// One saga's calls and how it ends.
struct Saga {
    order_id: String,
    path: Vec<Hop>,
    /// The last write's commit (`{seq, replication}`): what the answer reports.
    commit: Json,
    /// When the forward steps must be done, so that the caller gets the
    /// answer (compensated if need be) before its own timeout.
    deadline: Option<Instant>,
}

impl Saga {
    /// A forward step, within the saga's deadline.
    async fn step(
        &mut self,
        c: &Consumer,
        method: &str,
        args: Vec<Value>,
        describe: impl FnOnce(&Json) -> String,
    ) -> Result<Json, Fault> {
        self.call(c, method, args, describe, self.deadline).await
    }

    /// Calls and records the hop; `describe` turns the answer into the
    /// hop's words.
    async fn call(
        &mut self,
        c: &Consumer,
        method: &str,
        args: Vec<Value>,
        describe: impl FnOnce(&Json) -> String,
        deadline: Option<Instant>,
    ) -> Result<Json, Fault> {
        let (r, mut hop) = call_until(c, method, args, &self.order_id, deadline).await;
        if let Ok(j) = &r {
            hop.result = describe(j);
            hop.cas_attempts = j["cas_attempts"].as_i64();
            if !j["commit"]["seq"].is_null() {
                self.commit = j["commit"].clone();
            }
        }
        self.path.push(hop);
        r
    }

    fn path(&self) -> Json {
        Json::Array(self.path.iter().map(Hop::to_json).collect())
    }
}

fn outcome(j: &Json) -> String {
    j["outcome"].as_str().unwrap_or("?").replace('_', " ")
}

/// `db.order_set_state`'s answer in words: the state it set, or that it was set already.
fn set_state(state: &str) -> impl Fn(&Json) -> String + '_ {
    move |j| match j["outcome"].as_str() {
        Some("changed") => state.to_string(),
        _ => format!("already {state}"),
    }
}

/// What the order service reports (`d11 show vm-order`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct OrderReport {
    /// Sagas by outcome.
    pub counters: BTreeMap<String, u64>,
    /// Its consumers of db, stock and coupon.
    pub consumers: Vec<crate::rpc::ConsumerReport>,
}

impl Order {
    pub fn new(p: &Provider, config: OrderConfig) -> Arc<Order> {
        Arc::new(Order {
            db: p.consumer("db"),
            stock: p.consumer("stock"),
            coupon: p.consumer("coupon"),
            compensate: Duration::from_millis(config.compensate_ms),
            counters: Mutex::default(),
        })
    }

    fn count(&self, what: &'static str) {
        *self
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(what)
            .or_default() += 1;
    }

    pub fn report(self: &Arc<Self>) -> impl Fn() -> OrderReport + Send + Sync + 'static {
        let s = self.clone();
        move || {
            let c = s.counters.lock().unwrap_or_else(|e| e.into_inner());
            OrderReport {
                counters: c.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                consumers: vec![s.db.status(), s.stock.status(), s.coupon.status()],
            }
        }
    }

    /// The service's methods.
    pub fn services(self: &Arc<Self>) -> Services {
        let mut s = Services::new();
        let me = self.clone();
        s.method("order", "create", move |c: Call| {
            let me = me.clone();
            async move {
                let order_id = c.str_arg(0)?.to_owned();
                let key = super::opt_str(&c, 1)?;
                let order = Json::from(c.arg(2)?.clone());
                let deadline = c
                    .request
                    .attachments
                    .get("timeout")
                    .and_then(|t| t.parse().ok())
                    .map(|ms| saga_deadline(Instant::now(), Duration::from_millis(ms)));
                // Its own task: a handler the server abandons (its caller's
                // timeout) must not stop a saga half way.
                let saga = tokio::spawn({
                    let me = me.clone();
                    async move { me.create(order_id, key, order, deadline).await }
                });
                let r = saga.await.map_err(|e| {
                    Fault::new(Status::ServerError, format!("order.create failed: {e}"))
                })?;
                me.count(match &r {
                    Ok(j) => match j["outcome"].as_str() {
                        Some("confirmed") if j["replayed"] == true => "replayed",
                        Some("confirmed") => "confirmed",
                        Some("sold_out") => "sold_out",
                        Some("key_reused") => "key_reused",
                        _ => "cancelled",
                    },
                    Err(_) => "failed",
                });
                r.map(Value::from)
            }
        });
        s
    }

    /// Runs (or resumes, or answers again) the saga of one order.
    pub async fn create(
        &self,
        order_id: String,
        key: Option<String>,
        order: Json,
        deadline: Option<Instant>,
    ) -> Result<Json, Fault> {
        let text = |k: &str| match order[k].as_str() {
            Some(s) if !s.is_empty() => Ok(s.to_owned()),
            _ => Err(Fault::new(
                Status::BadRequest,
                format!("the order needs a string {k:?}"),
            )),
        };
        let (sku, price) = (text("className")?, text("price")?);
        let coupon = match &order["coupon"] {
            Json::Null => None,
            _ => Some(text("coupon")?),
        };
        let body = order.to_string();
        let mut saga = Saga {
            order_id: order_id.clone(),
            path: Vec::new(),
            commit: Json::Null,
            deadline,
        };
        let opt = |s: &Option<String>| s.clone().map_or(Value::Null, Value::from);
        let args = vec![
            order_id.as_str().into(),
            opt(&key),
            sku.as_str().into(),
            opt(&coupon),
            price.into(),
            body.into(),
        ];
        let created = saga.step(&self.db, "order_create", args, outcome).await?;
        let replayed = match field(&created, "outcome", "db.order_create")? {
            "created" => false,
            "replayed" => true,
            "key_reused" => {
                return Ok(json!({
                    "outcome": "key_reused",
                    "order_id": created["order_id"],
                    "replayed": false,
                    "message": "this idempotency key was used for a different order",
                    "path": saga.path(),
                }))
            }
            other => return Err(service_error(format!("db.order_create answered {other:?}"))),
        };
        // A replay continues with the stored order (its id may differ from ours).
        saga.order_id = field(&created, "order_id", "db.order_create")?.to_owned();
        let stored = Stored {
            order: serde_json::from_str(field(&created, "body", "db.order_create")?)
                .unwrap_or(Json::Null),
            created_at: created["created_at"].clone(),
            replayed,
        };
        match created["state"].as_str() {
            Some("confirmed") => return Ok(stored.answer(&saga, "confirmed", None)),
            Some("cancelled") => {
                let m = format!("order {} was cancelled before", saga.order_id);
                return Ok(stored.answer(&saga, "cancelled", Some(m)));
            }
            _ => {}
        }
        let id = saga.order_id.clone();

        // 2: stock.
        let args = vec![id.as_str().into(), sku.as_str().into(), Value::Long(1)];
        let took = saga
            .step(&self.stock, "deduct", args, |j| {
                format!(
                    "{} (stock {} version {}, batch of {})",
                    outcome(j),
                    j["stock"],
                    j["version"],
                    j["batch"]
                )
            })
            .await;
        let took = match took {
            Ok(j) => j,
            Err(f) => return Err(self.abort(&mut saga, "stock.deduct", f, None).await),
        };
        match field(&took, "outcome", "stock.deduct")? {
            "taken" | "replayed" => {}
            "sold_out" => {
                self.cancel(&mut saga).await;
                let m = format!("sold out: {sku} has {} left", took["stock"]);
                return Ok(stored.answer(&saga, "sold_out", Some(m)));
            }
            _ => {
                self.cancel(&mut saga).await;
                let m = format!("order {id} was cancelled before its stock was taken");
                return Ok(stored.answer(&saga, "cancelled", Some(m)));
            }
        }

        // 3, 4: the coupon.
        if let Some(code) = &coupon {
            for method in ["reserve", "consume"] {
                let args = vec![code.as_str().into(), id.as_str().into()];
                let r = saga
                    .step(&self.coupon, method, args, |j| {
                        format!("{} {code}", outcome(j))
                    })
                    .await;
                let r = match r {
                    Ok(r) => r,
                    Err(f) => {
                        let call = format!("coupon.{method}");
                        return Err(self.abort(&mut saga, &call, f, Some(code)).await);
                    }
                };
                if field(&r, "outcome", "coupon")? == "refused" {
                    let m = r["message"].as_str().unwrap_or("coupon refused").to_owned();
                    self.undo(&mut saga, Some(code)).await;
                    return Ok(stored.answer(&saga, "cancelled", Some(m)));
                }
            }
        }

        // 5: the commit.
        let args = vec![id.as_str().into(), "confirmed".into()];
        let confirmed = saga
            .step(&self.db, "order_set_state", args, set_state("confirmed"))
            .await;
        let confirmed = match confirmed {
            // The commit's fate is unknown (a timeout, a lost connection):
            // everything before it is done, so it is rolled forward (set
            // again: idempotent) rather than undone.
            Err(f) if f.status != Status::ServiceError => {
                tracing::warn!(order = %id, "db.order_set_state(confirmed): {f}; setting it again");
                let args = vec![id.as_str().into(), "confirmed".into()];
                self.retry(
                    &mut saga,
                    &self.db,
                    "order_set_state",
                    args,
                    set_state("confirmed"),
                )
                .await
                .ok_or(f)
            }
            r => r,
        };
        match confirmed {
            Ok(_) => Ok(stored.answer(&saga, "confirmed", None)),
            Err(f) => Err(self
                .abort(&mut saga, "db.order_set_state", f, coupon.as_ref())
                .await),
        }
    }

    /// A step failed after failover: undo what was done, and say so.
    async fn abort(&self, saga: &mut Saga, call: &str, f: Fault, coupon: Option<&String>) -> Fault {
        tracing::warn!(order = %saga.order_id, "{call} failed: {f}; compensating");
        let undone = self.undo(saga, coupon).await;
        Fault::new(
            Status::ServiceError,
            format!(
                "order {} {}: {call} failed ({f})",
                saga.order_id,
                match undone {
                    true => "cancelled, stock restored",
                    false => "left pending (the compensation failed too; the same order again resumes it)",
                }
            ),
        )
    }

    /// The compensations: coupon back, stock back, order cancelled. Whether all succeeded.
    async fn undo(&self, saga: &mut Saga, coupon: Option<&String>) -> bool {
        self.count("compensated");
        let id = saga.order_id.clone();
        let mut ok = true;
        if let Some(code) = coupon {
            let args = vec![code.as_str().into(), id.as_str().into()];
            ok &= self
                .retry(saga, &self.coupon, "release", args, outcome)
                .await
                .is_some();
        }
        ok &= self
            .retry(
                saga,
                &self.stock,
                "restore",
                vec![id.as_str().into()],
                outcome,
            )
            .await
            .is_some();
        ok && self.cancel(saga).await
    }

    async fn cancel(&self, saga: &mut Saga) -> bool {
        let args = vec![saga.order_id.as_str().into(), "cancelled".into()];
        self.retry(
            saga,
            &self.db,
            "order_set_state",
            args,
            set_state("cancelled"),
        )
        .await
        .is_some()
    }

    /// A compensation (or the commit rolled forward), retried until it is
    /// answered or `compensate` passes; outside the saga's deadline.
    async fn retry(
        &self,
        saga: &mut Saga,
        c: &Consumer,
        method: &str,
        args: Vec<Value>,
        describe: impl Fn(&Json) -> String,
    ) -> Option<Json> {
        let deadline = Instant::now() + self.compensate;
        loop {
            match saga.call(c, method, args.clone(), &describe, None).await {
                Ok(j) => return Some(j),
                Err(f) if f.status == Status::ServiceError || Instant::now() >= deadline => {
                    tracing::warn!(order = %saga.order_id, "compensation {}.{method}: {f}", c.service());
                    return None;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// When a saga's forward steps must be done, for a caller that waits
/// `timeout`: a fifth of it (at least 200 ms) is kept for compensating and
/// answering.
fn saga_deadline(now: Instant, timeout: Duration) -> Instant {
    now + timeout.saturating_sub((timeout / 5).max(Duration::from_millis(200)))
}

/// The order as `db` holds it, for the answer.
struct Stored {
    order: Json,
    created_at: Json,
    replayed: bool,
}

impl Stored {
    fn answer(&self, saga: &Saga, outcome: &str, message: Option<String>) -> Json {
        let commit = match &saga.commit {
            Json::Null => json!({"seq": null, "replication": "nothing new was committed"}),
            c => c.clone(),
        };
        let mut j = json!({
            "outcome": outcome,
            "order_id": saga.order_id,
            "replayed": self.replayed,
            "order": self.order,
            "created_at": self.created_at,
            "path": saga.path(),
            "commit": commit,
        });
        if let Some(m) = message {
            j["message"] = m.into();
        }
        j
    }
}
