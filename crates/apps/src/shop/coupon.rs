//! The `coupon` service: a coupon is reserved by one order, then consumed
//! by it (or released when the order is cancelled), each once per order:
//! a repeated call by the same order is answered `replayed`, a call by
//! another order `refused` with who holds it.
//!
//! | method | arguments | answer |
//! |---|---|---|
//! | `reserve` | code, order_id | `{outcome: applied \| replayed \| refused, coupon: {code, state, order_id}, message?, commit}` |
//! | `consume` | code, order_id | the same |
//! | `release` | code, order_id | the same (the compensation) |

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::Value as Json;

use super::{call, field, Provider, ProviderConfig};
use crate::rpc::{Call, Consumer, Services, Value};

/// The coupon service's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CouponConfig {
    #[serde(default)]
    pub provider: ProviderConfig,
}

/// The coupon service.
pub struct Coupon {
    db: Arc<Consumer>,
    /// `method outcome` → count.
    counters: Mutex<BTreeMap<String, u64>>,
}

/// Why `db` refused: the coupon as it is now, in words.
fn refusal(op: &str, code: &str, coupon: &Json) -> String {
    let state = coupon["state"].as_str().unwrap_or("?");
    match coupon["order_id"].as_str() {
        Some(holder) => format!("coupon {code} cannot be {op}: it is {state} by order {holder}"),
        None => format!("coupon {code} cannot be {op}: it is {state}"),
    }
}

/// What the coupon service reports (`d11 show vm-coupon`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct CouponReport {
    /// Calls by outcome.
    pub counters: BTreeMap<String, u64>,
    pub db: crate::rpc::ConsumerReport,
}

impl Coupon {
    pub fn new(p: &Provider) -> Arc<Coupon> {
        Arc::new(Coupon {
            db: p.consumer("db"),
            counters: Mutex::default(),
        })
    }

    pub fn report(self: &Arc<Self>) -> impl Fn() -> CouponReport + Send + Sync + 'static {
        let s = self.clone();
        move || CouponReport {
            counters: s.counters.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            db: s.db.status(),
        }
    }

    /// The service's methods.
    pub fn services(self: &Arc<Self>) -> Services {
        let mut s = Services::new();
        for (method, op) in [
            ("reserve", "reserved"),
            ("consume", "consumed"),
            ("release", "released"),
        ] {
            let me = self.clone();
            s.method("coupon", method, move |c: Call| {
                let me = me.clone();
                async move {
                    let (code, order_id) = (c.str_arg(0)?, c.str_arg(1)?);
                    let args = vec![code.into(), order_id.into()];
                    let (r, _) = call(&me.db, &format!("coupon_{method}"), args, order_id).await;
                    let mut r = r?;
                    let outcome = field(&r, "outcome", "db.coupon")?.to_owned();
                    if outcome == "refused" {
                        r["message"] = refusal(op, code, &r["coupon"]).into();
                    }
                    *me.counters
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(format!("{method} {outcome}"))
                        .or_default() += 1;
                    Ok(Value::from(r))
                }
            });
        }
        s
    }
}
