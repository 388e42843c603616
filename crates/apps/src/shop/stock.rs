//! The `stock` service: takes an order's units with the story's optimistic
//! lock. It reads the SKU's `(stock, version)` from `db`, asks `db` to take
//! the units if the version is still the one read (`UPDATE stock SET
//! stock=?, version=version+1 WHERE sku=? AND version=?`), and on a
//! conflict tries again with the version the conflict reported, up to
//! `max_cas_attempts`. Never below zero (`db` refuses, the service answers
//! sold out), and once per order id (a replayed take is answered as such).
//!
//! | method | arguments | answer |
//! |---|---|---|
//! | `deduct` | order_id, sku, n | `{outcome: taken \| replayed \| sold_out \| already_restored, stock, version, cas_attempts, commit}` |
//! | `restore` | order_id | `{outcome: restored \| already_restored \| nothing_taken, …}` (the compensation) |
//! | `get` | sku | `{stock, version}` or null |

use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::{json, Value as Json};

use super::{call, field, service_error, Provider, ProviderConfig};
use crate::control;
use crate::db::Stock as Level;
use crate::rpc::{Call, Consumer, Fault, Services, Status, Value};

/// The stock service's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StockConfig {
    #[serde(default)]
    pub provider: ProviderConfig,
    /// Compare-and-set attempts before giving up on a hot SKU.
    #[serde(default = "default_max_cas_attempts")]
    pub max_cas_attempts: u32,
}

fn default_max_cas_attempts() -> u32 {
    256
}

/// The compare-and-set loop, sans-IO: it says which version to try next
/// given what `db` answered.
#[derive(Debug, Clone)]
pub struct CasLoop {
    attempts: u32,
    max: u32,
}

/// What the loop does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Ask `db` to take at this version.
    Take { version: i64 },
    /// Finished: `outcome` (`taken`, `replayed`, `sold_out`,
    /// `already_restored`) and the level `db` reported.
    Done {
        outcome: &'static str,
        level: Option<Level>,
    },
    /// Every attempt conflicted.
    GiveUp,
}

impl CasLoop {
    pub fn new(max: u32) -> CasLoop {
        CasLoop {
            attempts: 0,
            max: max.max(1),
        }
    }

    /// Attempts made so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    fn take(&mut self, version: i64) -> Step {
        if self.attempts >= self.max {
            return Step::GiveUp;
        }
        self.attempts += 1;
        Step::Take { version }
    }

    /// After reading the level.
    pub fn read(&mut self, level: Level) -> Step {
        self.take(level.version)
    }

    /// After `db.stock_take` answered `outcome` (with `level`: the stock
    /// after a take, or the current one with a conflict or sold out).
    pub fn answered(&mut self, outcome: &str, level: Option<Level>) -> Result<Step, String> {
        let done = |outcome| Ok(Step::Done { outcome, level });
        match (outcome, level) {
            ("taken", _) => done("taken"),
            ("replayed", _) => done("replayed"),
            ("insufficient", _) => done("sold_out"),
            ("already_restored", _) => done("already_restored"),
            ("conflict", Some(current)) => Ok(self.take(current.version)),
            (other, _) => Err(format!("db.stock_take answered {other:?}")),
        }
    }
}

fn level(j: &Json) -> Option<Level> {
    Some(Level {
        stock: j["stock"].as_i64()?,
        version: j["version"].as_i64()?,
    })
}

/// The stock service.
pub struct Stock {
    db: Arc<Consumer>,
    max_cas_attempts: u32,
    counters: Mutex<Counters>,
}

#[derive(Default, serde::Serialize)]
struct Counters {
    deducts: u64,
    taken: u64,
    replayed: u64,
    sold_out: u64,
    already_restored: u64,
    gave_up: u64,
    /// Compare-and-set attempts that found another writer first.
    cas_conflicts: u64,
    cas_attempts_max: u32,
    restores: u64,
    errors: u64,
}

impl Stock {
    pub fn new(p: &Provider, config: StockConfig) -> Arc<Stock> {
        Arc::new(Stock {
            db: p.consumer("db"),
            max_cas_attempts: config.max_cas_attempts,
            counters: Mutex::default(),
        })
    }

    fn count(&self, f: impl FnOnce(&mut Counters)) {
        f(&mut self.counters.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub fn report(self: &Arc<Self>) -> control::Report {
        let s = self.clone();
        Arc::new(move || {
            let c = serde_json::to_value(&*s.counters.lock().unwrap_or_else(|e| e.into_inner()));
            json!({"counters": c.unwrap_or_default(), "db": s.db.status()})
        })
    }

    /// Takes `n` of `sku` for `order_id` (the CAS loop).
    pub async fn deduct(&self, order_id: &str, sku: &str, n: i64) -> Result<Json, Fault> {
        self.count(|c| c.deducts += 1);
        let (got, _) = call(&self.db, "stock_get", vec![sku.into()], order_id).await;
        let Some(first) = level(&got?) else {
            return Err(service_error(format!("unknown sku {sku:?}")));
        };
        let mut cas = CasLoop::new(self.max_cas_attempts);
        let mut step = cas.read(first);
        loop {
            match step {
                Step::Take { version } => {
                    let args = vec![
                        order_id.into(),
                        sku.into(),
                        Value::Long(n),
                        Value::Long(version),
                    ];
                    let (r, _) = call(&self.db, "stock_take", args, order_id).await;
                    let r = r?;
                    let outcome = field(&r, "outcome", "db.stock_take")?;
                    let lvl = level(&r).or_else(|| level(&r["current"]));
                    if outcome == "conflict" {
                        // No backoff: a growing one would starve the oldest
                        // orders behind newcomers that read the newest version.
                        self.count(|c| c.cas_conflicts += 1);
                    }
                    step = cas.answered(outcome, lvl).map_err(service_error)?;
                    if let Step::Done { .. } = step {
                        let commit = r["commit"].clone();
                        return Ok(self.done(&step, &cas, commit));
                    }
                }
                Step::GiveUp => {
                    self.count(|c| c.gave_up += 1);
                    return Err(service_error(format!(
                        "{sku}: {} compare-and-set attempts all conflicted",
                        cas.attempts()
                    )));
                }
                Step::Done { .. } => unreachable!("returned above"),
            }
        }
    }

    fn done(&self, step: &Step, cas: &CasLoop, commit: Json) -> Json {
        let Step::Done { outcome, level } = step else {
            return Json::Null;
        };
        self.count(|c| {
            c.cas_attempts_max = c.cas_attempts_max.max(cas.attempts());
            match *outcome {
                "taken" => c.taken += 1,
                "replayed" => c.replayed += 1,
                "sold_out" => c.sold_out += 1,
                _ => c.already_restored += 1,
            }
        });
        json!({
            "outcome": outcome,
            "stock": level.map(|l| l.stock),
            "version": level.map(|l| l.version),
            "cas_attempts": cas.attempts(),
            "commit": commit,
        })
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
                let r = me.deduct(order_id, sku, n).await;
                if r.is_err() {
                    me.count(|c| c.errors += 1);
                }
                r.map(Value::from)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn l(stock: i64, version: i64) -> Option<Level> {
        Some(Level { stock, version })
    }

    #[test]
    fn takes_at_the_version_read() {
        let mut cas = CasLoop::new(8);
        assert_eq!(cas.read(l(50, 7).unwrap()), Step::Take { version: 7 });
        let s = cas.answered("taken", l(49, 8)).unwrap();
        assert_eq!(
            s,
            Step::Done {
                outcome: "taken",
                level: l(49, 8)
            }
        );
        assert_eq!(cas.attempts(), 1);
    }

    #[test]
    fn a_conflict_retries_with_the_version_it_reported() {
        let mut cas = CasLoop::new(8);
        cas.read(l(50, 7).unwrap());
        assert_eq!(
            cas.answered("conflict", l(48, 9)).unwrap(),
            Step::Take { version: 9 }
        );
        assert_eq!(
            cas.answered("conflict", l(47, 10)).unwrap(),
            Step::Take { version: 10 }
        );
        let s = cas.answered("taken", l(46, 11)).unwrap();
        assert!(matches!(
            s,
            Step::Done {
                outcome: "taken",
                ..
            }
        ));
        assert_eq!(cas.attempts(), 3);
    }

    #[test]
    fn gives_up_after_max_attempts() {
        let mut cas = CasLoop::new(2);
        cas.read(l(5, 1).unwrap());
        assert_eq!(
            cas.answered("conflict", l(4, 2)).unwrap(),
            Step::Take { version: 2 }
        );
        assert_eq!(cas.answered("conflict", l(3, 3)).unwrap(), Step::GiveUp);
    }

    #[test]
    fn sold_out_replayed_and_restored_end_the_loop() {
        for (db, ours) in [
            ("insufficient", "sold_out"),
            ("replayed", "replayed"),
            ("already_restored", "already_restored"),
        ] {
            let mut cas = CasLoop::new(4);
            cas.read(l(0, 50).unwrap());
            let s = cas.answered(db, l(0, 50)).unwrap();
            assert_eq!(
                s,
                Step::Done {
                    outcome: ours,
                    level: l(0, 50)
                },
                "{db}"
            );
        }
    }

    #[test]
    fn an_unknown_answer_or_a_conflict_without_level_is_an_error() {
        let mut cas = CasLoop::new(4);
        cas.read(l(1, 1).unwrap());
        assert!(cas.answered("maybe", None).is_err());
        assert!(cas.answered("conflict", None).is_err());
    }
}
