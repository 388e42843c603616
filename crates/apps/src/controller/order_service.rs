//! The `order` service as the controller calls it (chapter 10): the
//! registry's provider list followed by a long poll, one
//! `order.create(order_id, key, order)` per validated order (idempotent by
//! order id and by key, so failover may retry it), and the service's answer
//! read into an [`Answer`] without trusting a single field of it.
//! docs/rpc.md describes the framework; the answer's shape is the service's
//! contract:
//!
//! ```text
//! { "outcome": "confirmed" | "sold_out" | "cancelled" | "key_reused",
//!   "order_id": String, "replayed": Bool, "message": String (when not confirmed),
//!   "order": Map, "created_at": String,
//!   "path": List of Map {"call", "provider", "tried", "ms", "result", optional "cas_attempts"},
//!   "commit": Map {"seq": Long, "replication": String} }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value as Json};

use crate::rpc::{
    self, registry, Balance, CallOptions, ClientConfig, Consumer, ConsumerConfig, Fault, Value,
};

/// The service's name in the registry.
pub const SERVICE: &str = "order";

/// How long one registry long poll waits for a change of the provider list.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(30);

/// The `order_service` table of the controller's config: where the
/// registry is and how `order` is called.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderServiceConfig {
    /// The registry's address (`ip:port`).
    pub registry: SocketAddr,
    /// One attempt's timeout.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// How a provider is picked.
    #[serde(default = "default_balance")]
    pub balance: Balance,
    /// Further attempts on other providers when one fails (the call is idempotent).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Calls in flight at once (Dubbo's consumer `actives`): more wait for
    /// a slot, and a call's timeout starts when it gets one. A surge then
    /// queues in front of the shop rather than inside it, where every saga
    /// would share the same database and run out of its time together.
    #[serde(default = "default_actives")]
    pub actives: usize,
}

fn default_timeout_ms() -> u64 {
    5000
}
fn default_balance() -> Balance {
    Balance::RoundRobin
}
fn default_retries() -> u32 {
    2
}
fn default_actives() -> usize {
    64
}

impl OrderServiceConfig {
    /// The settings of the `order` consumer.
    pub fn consumer_config(&self) -> ConsumerConfig {
        ConsumerConfig {
            balance: self.balance,
            timeout_ms: self.timeout_ms,
            retries: self.retries,
            ..ConsumerConfig::default()
        }
    }
}

/// What the controller reports of its order service: the registry it
/// follows, the RPC consumer's own counters (`rpc::Consumer::status`) and
/// its call slots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderServiceReport {
    pub registry: String,
    pub consumer: crate::rpc::ConsumerReport,
    /// Calls allowed in flight at once.
    pub actives: usize,
    pub in_flight: usize,
    /// Calls waiting for a slot now, and the longest any waited (ms).
    pub waiting: usize,
    pub waited_ms_max: u64,
}

/// The controller's consumer of `order`.
pub(super) struct OrderService {
    registry: SocketAddr,
    consumer: Consumer,
    /// One permit per call in flight (`actives`).
    slots: tokio::sync::Semaphore,
    actives: usize,
    /// Calls waiting for a slot now, and the longest any waited (ms).
    waiting: std::sync::atomic::AtomicUsize,
    waited_ms_max: std::sync::atomic::AtomicU64,
}

impl OrderService {
    /// Starts following `order`'s providers in the registry (a task on the
    /// current tokio runtime). Does not wait for any: a call made while
    /// there is none fails with "no provider".
    pub fn start(config: &OrderServiceConfig) -> OrderService {
        let client = Arc::new(rpc::Client::new(config.registry, ClientConfig::default()));
        let providers = registry::subscribe(client, SERVICE.into(), SUBSCRIBE_WAIT);
        let actives = config.actives.max(1);
        OrderService {
            registry: config.registry,
            consumer: Consumer::new(SERVICE, config.consumer_config(), providers),
            slots: tokio::sync::Semaphore::new(actives),
            actives,
            waiting: Default::default(),
            waited_ms_max: Default::default(),
        }
    }

    /// `order.create(order_id, key, order)`, idempotent, with the
    /// `idempotency_key` (when there is one) and `served_by` attachments;
    /// first waits for one of the `actives` slots.
    pub async fn create(
        &self,
        order_id: &str,
        key: Option<&str>,
        order: Json,
        served_by: &str,
    ) -> Result<Value, Fault> {
        let mut opts = CallOptions::idempotent();
        if let Some(key) = key {
            opts.attachments
                .insert("idempotency_key".into(), key.to_string());
        }
        opts.attachments
            .insert("served_by".into(), served_by.to_string());
        let args = vec![
            Value::from(order_id),
            key.map_or(Value::Null, Value::from),
            Value::from(order),
        ];
        let _slot = self.slot().await;
        self.consumer.call("create", args, opts).await
    }

    async fn slot(&self) -> tokio::sync::SemaphorePermit<'_> {
        use std::sync::atomic::Ordering::Relaxed;
        if let Ok(p) = self.slots.try_acquire() {
            return p;
        }
        // Counted while it waits, also if the client leaves meanwhile.
        struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Relaxed);
            }
        }
        let started = std::time::Instant::now();
        self.waiting.fetch_add(1, Relaxed);
        let _waiting = Waiting(&self.waiting);
        let p = self.slots.acquire().await.expect("never closed");
        self.waited_ms_max
            .fetch_max(started.elapsed().as_millis() as u64, Relaxed);
        p
    }

    /// Waits until the registry lists a provider, at most `wait`.
    pub async fn wait_for_providers(&self, wait: Duration) -> bool {
        self.consumer.wait_for_providers(wait).await
    }

    /// The registry and the consumer's counters, for the control socket.
    pub fn status(&self) -> OrderServiceReport {
        use std::sync::atomic::Ordering::Relaxed;
        OrderServiceReport {
            registry: self.registry.to_string(),
            consumer: self.consumer.status(),
            actives: self.actives,
            in_flight: self.actives - self.slots.available_permits(),
            waiting: self.waiting.load(Relaxed),
            waited_ms_max: self.waited_ms_max.load(Relaxed),
        }
    }
}

/// Why the service did not confirm an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    SoldOut,
    Cancelled,
}

impl Refusal {
    pub fn name(self) -> &'static str {
        match self {
            Refusal::SoldOut => "sold_out",
            Refusal::Cancelled => "cancelled",
        }
    }
}

/// A confirmed order as the service answered it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Confirmed {
    pub order_id: String,
    /// An earlier call with this order id or key made it.
    pub replayed: bool,
    /// The controller that first asked for it, when the service says.
    pub served_by: Option<String>,
    /// The stored order (the story's fields).
    pub order: Map<String, Json>,
    /// The calls behind it, one map each.
    pub path: Vec<Json>,
    pub commit: Map<String, Json>,
}

/// What `order.create` answered.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Answer {
    Confirmed(Confirmed),
    Refused {
        outcome: Refusal,
        order_id: String,
        message: String,
        /// `{"path", "commit"}` when the service sent them (optional here).
        rpc: Option<Json>,
    },
    /// The key came with a different order before.
    KeyReused,
}

/// An answer without a field the controller needs, or with one of the
/// wrong type: the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(super) struct BadAnswer(pub String);

/// Reads the service's answer.
pub(super) fn read_answer(v: Value) -> Result<Answer, BadAnswer> {
    let Json::Object(a) = Json::from(v) else {
        return Err(BadAnswer("the answer is not a map".into()));
    };
    let field = |name: &str| {
        a.get(name)
            .filter(|v| !v.is_null())
            .ok_or_else(|| BadAnswer(format!("the answer has no {name}")))
    };
    let wrong = |name: &str, what: &str| BadAnswer(format!("the answer's {name} is not {what}"));
    let string = |name: &str| {
        field(name)?
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| wrong(name, "a string"))
    };
    let map = |name: &str| match field(name)? {
        Json::Object(m) => Ok(m.clone()),
        _ => Err(wrong(name, "a map")),
    };
    let outcome = string("outcome")?;
    let path = || match field("path")? {
        Json::Array(calls) if calls.iter().all(Json::is_object) => Ok(calls.clone()),
        _ => Err(wrong("path", "a list of maps")),
    };
    let refused = |outcome| {
        Ok(Answer::Refused {
            outcome,
            order_id: string("order_id")?,
            message: string("message")?,
            rpc: match (path(), map("commit")) {
                (Ok(path), Ok(commit)) => Some(json!({"path": path, "commit": commit})),
                _ => None,
            },
        })
    };
    match outcome.as_str() {
        "confirmed" => {
            let path = path()?;
            Ok(Answer::Confirmed(Confirmed {
                order_id: string("order_id")?,
                replayed: field("replayed")?
                    .as_bool()
                    .ok_or_else(|| wrong("replayed", "a boolean"))?,
                served_by: a
                    .get("served_by")
                    .and_then(Json::as_str)
                    .map(str::to_string),
                order: map("order")?,
                path,
                commit: map("commit")?,
            }))
        }
        "sold_out" => refused(Refusal::SoldOut),
        "cancelled" => refused(Refusal::Cancelled),
        "key_reused" => Ok(Answer::KeyReused),
        other => Err(BadAnswer(format!(
            "the answer's outcome {other:?} is unknown"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn confirmed() -> Json {
        json!({
            "outcome": "confirmed", "order_id": "ord-1", "replayed": false,
            "order": {"date": "2018-07-01", "className": "趣谈网络协议", "Author": "刘超", "price": "68"},
            "created_at": "2026-11-11T00:00:00Z",
            "path": [{"call": "stock.deduct", "provider": "192.168.1.50:20880", "tried": 1, "ms": 3.4,
                      "result": "taken", "cas_attempts": 2}],
            "commit": {"seq": 42, "replication": "acked in 0.4 ms"},
        })
    }

    #[test]
    fn a_confirmed_answer_is_read_from_hessian() {
        let bytes = Value::from(confirmed()).to_bytes();
        let a = read_answer(Value::from_bytes(&bytes).unwrap()).unwrap();
        let Answer::Confirmed(c) = a else {
            panic!("{a:?}")
        };
        assert_eq!(c.order_id, "ord-1");
        assert!(!c.replayed);
        assert_eq!(c.served_by, None);
        assert_eq!(c.order["Author"], "刘超");
        assert_eq!(c.path[0]["cas_attempts"], 2);
        assert_eq!(c.path[0]["ms"], 3.4);
        assert_eq!(c.commit["seq"], 42);
    }

    #[test]
    fn refusals_need_their_order_id_and_message() {
        let a = json!({"outcome": "sold_out", "order_id": "ord-2", "message": "sold out", "replayed": false});
        assert_eq!(
            read_answer(Value::from(a)).unwrap(),
            Answer::Refused {
                outcome: Refusal::SoldOut,
                order_id: "ord-2".into(),
                message: "sold out".into(),
                rpc: None,
            }
        );
        // With the calls behind the refusal, they come along.
        let mut a = confirmed();
        a["outcome"] = json!("sold_out");
        a["message"] = json!("sold out");
        let Answer::Refused { rpc: Some(rpc), .. } = read_answer(Value::from(a)).unwrap() else {
            panic!("no rpc")
        };
        assert_eq!(rpc["path"][0]["call"], "stock.deduct");
        assert_eq!(rpc["commit"]["seq"], 42);
        let a = json!({"outcome": "cancelled", "order_id": "ord-2"});
        assert_eq!(
            read_answer(Value::from(a)).unwrap_err().0,
            "the answer has no message"
        );
        let a = json!({"outcome": "key_reused", "order_id": "ord-2", "message": "x"});
        assert_eq!(read_answer(Value::from(a)).unwrap(), Answer::KeyReused);
    }

    #[test]
    fn a_missing_or_mistyped_field_is_named() {
        for (drop, err) in [
            ("outcome", "the answer has no outcome"),
            ("order_id", "the answer has no order_id"),
            ("replayed", "the answer has no replayed"),
            ("order", "the answer has no order"),
            ("path", "the answer has no path"),
            ("commit", "the answer has no commit"),
        ] {
            let mut a = confirmed();
            a.as_object_mut().unwrap().remove(drop);
            assert_eq!(read_answer(Value::from(a)).unwrap_err().0, err);
        }
        let mut a = confirmed();
        a["path"] = json!("db");
        assert_eq!(
            read_answer(Value::from(a)).unwrap_err().0,
            "the answer's path is not a list of maps"
        );
        let mut a = confirmed();
        a["replayed"] = json!("no");
        assert_eq!(
            read_answer(Value::from(a)).unwrap_err().0,
            "the answer's replayed is not a boolean"
        );
        let mut a = confirmed();
        a["outcome"] = json!("maybe");
        assert!(read_answer(Value::from(a)).unwrap_err().0.contains("maybe"));
        assert_eq!(
            read_answer(Value::from("ok")).unwrap_err().0,
            "the answer is not a map"
        );
    }

    #[tokio::test]
    async fn beyond_actives_a_call_waits_for_a_slot_and_is_counted_waiting() {
        let config: OrderServiceConfig =
            serde_json::from_str(r#"{"registry":"127.0.0.1:9","actives":1}"#).unwrap();
        let service = OrderService::start(&config);
        let first = service.slot().await;
        assert_eq!(service.status().in_flight, 1);
        let second = service.slot();
        tokio::pin!(second);
        // Not granted while the first holds the only slot.
        assert!(futures_poll_once(second.as_mut()).await.is_none());
        assert_eq!(service.status().waiting, 1);
        drop(first);
        let _second = second.await;
        let s = service.status();
        assert_eq!((s.waiting, s.in_flight), (0, 1));
    }

    /// Polls `f` once: its output if it is ready.
    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        let mut f = f;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }

    #[test]
    fn the_config_defaults_to_round_robin_two_retries_and_5_s() {
        let c: OrderServiceConfig =
            serde_json::from_str(r#"{"registry":"192.168.1.30:2181"}"#).unwrap();
        assert_eq!(c.registry, "192.168.1.30:2181".parse().unwrap());
        let cc = c.consumer_config();
        assert_eq!(
            (cc.balance, cc.retries, cc.timeout_ms, c.actives),
            (Balance::RoundRobin, 2, 5000, 64)
        );
        let c: OrderServiceConfig = serde_json::from_str(
            r#"{"registry":"127.0.0.1:1","balance":"least_active","retries":0,"timeout_ms":50}"#,
        )
        .unwrap();
        assert_eq!(
            (c.balance, c.retries, c.timeout_ms),
            (Balance::LeastActive, 0, 50)
        );
        let e = serde_json::from_str::<OrderServiceConfig>(r#"{"timeout_ms":1}"#).unwrap_err();
        assert!(e.to_string().contains("missing field `registry`"), "{e}");
        let e =
            serde_json::from_str::<OrderServiceConfig>(r#"{"registry":"127.0.0.1:1","retry":1}"#)
                .unwrap_err();
        assert!(e.to_string().contains("unknown field `retry`"), "{e}");
    }
}
