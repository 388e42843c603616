//! The `db` app: the shop's SQLite primary (AZ1) as the RPC service `db`,
//! or its standby (AZ2) following the primary's change log
//! ([`crate::db`], docs/db.md). The topology chooses the role and the
//! replication mode (the story: a near standby is synchronous, a far one
//! asynchronous).
//!
//! The service's methods are [`crate::db::Db`]'s operations, one
//! transaction each; a write's answer carries its commit:
//! `{"seq": 42, "replication": "sync: acked in 1 ms"}`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::UnixListener;

use super::{opt_str, Ctx, ProviderConfig};
use crate::control;
use crate::db::{
    Db, DbError, NewOrder, OrderState, Primary, PrimaryConfig, Replicated, StandbyConfig,
    TakeRequest, Written,
};
use crate::rpc::{Call, Fault, Services, Status, Value};

/// The `db` app's settings: exactly one of `primary` and `standby`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbConfig {
    /// This VM holds the primary: its replication settings (`mode`, …).
    pub primary: Option<PrimaryConfig>,
    /// This VM holds a standby: whom it follows.
    pub standby: Option<StandbyConfig>,
    /// The primary's RPC side (listen, registration TTL).
    #[serde(default)]
    pub provider: ProviderConfig,
    /// Rows the primary creates when they do not exist yet (never reset).
    #[serde(default)]
    pub seed: Seed,
}

/// The primary's first rows.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    #[serde(default)]
    pub stock: Vec<SeedStock>,
    /// Coupon codes, free.
    #[serde(default)]
    pub coupons: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedStock {
    pub sku: String,
    pub stock: i64,
}

impl DbConfig {
    pub(super) fn check(&self) -> Result<(), (String, String)> {
        match (&self.primary, &self.standby) {
            (Some(_), None) => {}
            (None, Some(_)) if self.seed.stock.is_empty() && self.seed.coupons.is_empty() => {}
            (None, Some(_)) => {
                return Err((
                    "seed".into(),
                    "a standby takes its rows from the primary; seed the primary".into(),
                ))
            }
            _ => {
                return Err((
                    "primary".into(),
                    "set exactly one of primary = { … } and standby = { primary = \"IP:3322\" }"
                        .into(),
                ))
            }
        }
        if let Some(s) = self.seed.stock.iter().find(|s| s.stock < 0) {
            return Err((
                "seed.stock".into(),
                format!("{:?} has negative stock {}", s.sku, s.stock),
            ));
        }
        Ok(())
    }
}

/// The file a db node keeps in the lab's run directory.
pub fn db_file(ctx: &Ctx) -> PathBuf {
    ctx.data_dir.join(format!("{}.sqlite", ctx.node))
}

pub(super) async fn run(
    c: DbConfig,
    ctx: Ctx,
    ctl: UnixListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&ctx.data_dir)?;
    let path = db_file(&ctx);
    let views = Arc::new(Views(Mutex::new(Db::open(&path)?)));
    if let Some(standby) = c.standby {
        let sb = crate::db::Standby::open(&ctx.node, &path, standby)?;
        let report: control::Report = {
            let sb = sb.clone();
            control::report(move || views.report(Replication::Standby(sb.status())))
        };
        tokio::spawn(control::serve(ctl, ctx.node.clone(), "db", report));
        sb.run(shutdown).await;
        return Ok(());
    }
    let primary = Primary::open(&path, c.primary.clone().unwrap_or_default())?;
    let p = super::Provider::new(&ctx, c.provider)?;
    let report = {
        let primary = primary.clone();
        move || views.report(Replication::Primary(primary.status()))
    };
    // Standbys first, so a sync seed can be acknowledged.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let repl = tokio::spawn(primary.clone().run(async {
        let _ = rx.await;
    }));
    seed(&primary, &c.seed).await?;
    let served = p
        .run(ctx, ctl, "db", services(primary), report, shutdown)
        .await;
    let _ = tx.send(());
    repl.await??;
    served
}

async fn seed(primary: &Primary, seed: &Seed) -> Result<(), DbError> {
    let seed = seed.clone();
    primary
        .write(move |db| {
            for s in &seed.stock {
                if db.stock_get(&s.sku)?.is_none() {
                    db.seed_stock(&s.sku, s.stock)?;
                }
            }
            for code in &seed.coupons {
                db.seed_coupon(code)?;
            }
            Ok(())
        })
        .await
        .map(|_| ())
}

/// A second connection to the node's file for the control socket's views
/// (WAL lets it read while the primary or the standby writes).
struct Views(Mutex<Db>);

/// The latest orders a view lists; the rest are counted.
const VIEW_ORDERS: usize = 20;

impl Views {
    fn report(&self, replication: Replication) -> DbReport {
        let db = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let tables = || -> Result<DbTables, DbError> {
            let orders = db.orders()?;
            let count = |s: OrderState| orders.iter().filter(|o| o.state == s).count();
            let latest = orders
                .iter()
                .rev()
                .take(VIEW_ORDERS)
                .map(|o| OrderView {
                    order_id: o.order_id.clone(),
                    state: o.state,
                    sku: o.sku.clone(),
                    coupon: o.coupon.clone(),
                    price: o.price.clone(),
                    created_at: o.created_at.clone(),
                })
                .collect();
            Ok(DbTables {
                stock: db.stock_all()?,
                orders: OrderCounts {
                    total: orders.len(),
                    confirmed: count(OrderState::Confirmed),
                    pending: count(OrderState::Pending),
                    cancelled: count(OrderState::Cancelled),
                    latest,
                },
                coupons: db.coupons()?,
                head_seq: db.head()?,
            })
        };
        let (tables, error) = match tables() {
            Ok(t) => (Some(t), None),
            Err(e) => (None, Some(e.to_string())),
        };
        DbReport {
            tables,
            error,
            replication,
        }
    }
}

/// What a database node reports (`d11 show vm-db`): its tables, and its
/// side of the replication.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DbReport {
    #[serde(flatten)]
    pub tables: Option<DbTables>,
    /// Why the tables could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub replication: Replication,
}

/// The primary's or the standby's side of the replication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Replication {
    Primary(crate::db::PrimaryReport),
    Standby(crate::db::StandbyReport),
}

/// The shop's tables as a view lists them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DbTables {
    pub stock: Vec<crate::db::StockRow>,
    pub orders: OrderCounts,
    pub coupons: Vec<crate::db::CouponRow>,
    pub head_seq: u64,
}

/// Orders by state, and the latest few.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderCounts {
    pub total: usize,
    pub confirmed: usize,
    pub pending: usize,
    pub cancelled: usize,
    pub latest: Vec<OrderView>,
}

/// One order as a view lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderView {
    pub order_id: String,
    pub state: OrderState,
    pub sku: String,
    pub coupon: Option<String>,
    pub price: String,
    pub created_at: String,
}

/// What a write's change did on its way to the standby, in words.
pub fn replication_words(r: &Replicated) -> String {
    match r {
        Replicated::NoChange => "no change".into(),
        Replicated::Async => "async: the standby follows".into(),
        Replicated::Acked { wait_ms } => format!("sync: acked by the standby in {wait_ms} ms"),
        Replicated::TimedOut { waited_ms } => {
            format!("sync: no ack in {waited_ms} ms, committed on the primary only")
        }
    }
}

/// A write's value as JSON, with its commit.
fn answer<T: Serialize>(w: Written<T>) -> Result<Value, Fault> {
    let mut j =
        serde_json::to_value(&w.value).map_err(|e| db_fault(DbError::Encode(e.to_string())))?;
    if !j.is_object() {
        j = json!({ "value": j });
    }
    j["commit"] = json!({"seq": w.seq, "replication": replication_words(&w.replication)});
    Ok(Value::from(j))
}

/// The service's own errors are 70; SQLite's and the task's 80, which a
/// consumer may retry elsewhere.
fn db_fault(e: DbError) -> Fault {
    let status = match e {
        DbError::Sqlite(_) | DbError::Task(_) | DbError::Open { .. } | DbError::Corrupt { .. } => {
            Status::ServerError
        }
        _ => Status::ServiceError,
    };
    Fault::new(status, e.to_string())
}

fn state_arg(c: &Call, i: usize) -> Result<OrderState, Fault> {
    match c.str_arg(i)? {
        "pending" => Ok(OrderState::Pending),
        "confirmed" => Ok(OrderState::Confirmed),
        "cancelled" => Ok(OrderState::Cancelled),
        other => Err(Fault::new(
            Status::BadRequest,
            format!("unknown order state {other:?} (pending, confirmed, cancelled)"),
        )),
    }
}

/// Registers one write method: `f` parses the call into a closure run in
/// one transaction.
fn write<T, P, F>(s: &mut Services, primary: &Arc<Primary>, method: &str, parse: P)
where
    T: Serialize + Send + 'static,
    P: Fn(&Call) -> Result<F, Fault> + Send + Sync + 'static,
    F: FnOnce(&mut Db) -> Result<T, DbError> + Send + 'static,
{
    let (primary, parse) = (primary.clone(), Arc::new(parse));
    s.method("db", method, move |c: Call| {
        let (primary, parse) = (primary.clone(), parse.clone());
        async move {
            let f = parse(&c)?;
            answer(primary.write(f).await.map_err(db_fault)?)
        }
    });
}

/// The `db` service's methods.
pub fn services(primary: Arc<Primary>) -> Services {
    let mut s = Services::new();
    let p = primary.clone();
    s.method("db", "stock_get", move |c: Call| {
        let p = p.clone();
        async move {
            let sku = c.str_arg(0)?.to_owned();
            let st = p.read(move |db| db.stock_get(&sku)).map_err(db_fault)?;
            Ok(st.map_or(Value::Null, |st| {
                Value::from(json!({"stock": st.stock, "version": st.version}))
            }))
        }
    });
    write(&mut s, &primary, "stock_take", |c| {
        let (order_id, sku, n) = (
            c.str_arg(0)?.to_owned(),
            c.str_arg(1)?.to_owned(),
            c.int_arg(2)?,
        );
        let version = match c.arg(3)? {
            Value::Null => None,
            _ => Some(c.int_arg(3)?),
        };
        Ok(move |db: &mut Db| db.stock_take(&order_id, &sku, n, version))
    });
    write(&mut s, &primary, "stock_take_batch", |c| {
        let (sku, version) = (c.str_arg(0)?.to_owned(), c.int_arg(1)?);
        let takes = take_requests(c.arg(2)?)?;
        Ok(move |db: &mut Db| db.stock_take_batch(&sku, version, &takes))
    });
    write(&mut s, &primary, "stock_restore", |c| {
        let order_id = c.str_arg(0)?.to_owned();
        Ok(move |db: &mut Db| db.stock_restore(&order_id))
    });
    write(&mut s, &primary, "order_create", |c| {
        let new = NewOrder {
            order_id: c.str_arg(0)?.to_owned(),
            idempotency_key: opt_str(c, 1)?,
            sku: c.str_arg(2)?.to_owned(),
            coupon: opt_str(c, 3)?,
            price: c.str_arg(4)?.to_owned(),
            body: c.str_arg(5)?.to_owned(),
        };
        Ok(move |db: &mut Db| db.order_create(&new))
    });
    write(&mut s, &primary, "order_set_state", |c| {
        let (order_id, state) = (c.str_arg(0)?.to_owned(), state_arg(c, 1)?);
        Ok(move |db: &mut Db| db.order_set_state(&order_id, state))
    });
    for (method, op) in [
        ("coupon_reserve", Db::coupon_reserve as CouponOp),
        ("coupon_consume", Db::coupon_consume),
        ("coupon_release", Db::coupon_release),
    ] {
        write(&mut s, &primary, method, move |c| {
            let (code, order_id) = (c.str_arg(0)?.to_owned(), c.str_arg(1)?.to_owned());
            Ok(move |db: &mut Db| op(db, &code, &order_id))
        });
    }
    s
}

/// `stock_take_batch`'s third argument: a list of `{order_id, n}` maps.
fn take_requests(v: &Value) -> Result<Vec<TakeRequest>, Fault> {
    let bad = |what: &str| {
        Fault::new(
            Status::BadRequest,
            format!("stock_take_batch: argument 2 must be a list of {{order_id, n}} maps ({what})"),
        )
    };
    let Value::List(items) = v else {
        return Err(bad("not a list"));
    };
    items
        .iter()
        .map(|t| {
            Ok(TakeRequest {
                order_id: t
                    .get("order_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("an order_id missing"))?
                    .to_owned(),
                n: t.get("n")
                    .and_then(Value::as_i64)
                    .ok_or_else(|| bad("an n missing"))?,
            })
        })
        .collect()
}

type CouponOp = fn(&mut Db, &str, &str) -> Result<crate::db::CouponOutcome, DbError>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{PrimaryReport, ReplicationMode, StandbyReport, StockRow};

    fn tables() -> DbTables {
        DbTables {
            stock: vec![StockRow {
                sku: "geektime-68".into(),
                stock: 999,
                version: 2,
            }],
            orders: OrderCounts {
                total: 1,
                confirmed: 1,
                pending: 0,
                cancelled: 0,
                latest: vec![],
            },
            coupons: vec![],
            head_seq: 7,
        }
    }

    #[test]
    fn a_db_report_reads_back_as_itself_on_either_side_of_the_replication() {
        let primary = DbReport {
            tables: Some(tables()),
            error: None,
            replication: Replication::Primary(PrimaryReport {
                role: "primary".into(),
                mode: ReplicationMode::default(),
                seq: 7,
                acked: 7,
                lag_changes: 0,
                lag_ms: 0,
                standbys: vec![],
                writes: 3,
                sync_acked: 3,
                sync_timeouts: 0,
                sync_timeout_ms: 500,
                sync_wait_ms_max: 1,
                connections: 1,
                disconnects: Default::default(),
            }),
        };
        let standby = DbReport {
            tables: None,
            error: Some("database is locked".into()),
            replication: Replication::Standby(StandbyReport {
                role: "standby".into(),
                name: "vm-db2".into(),
                primary: "192.168.1.60:4407".into(),
                connected: true,
                applied_seq: 7,
                primary_seq: 7,
                lag_changes: 0,
                apply_delay_ms: 0,
                applied_changes: 7,
                duplicates_skipped: 0,
                connects: 1,
                disconnects: Default::default(),
                last_error: None,
            }),
        };
        for r in [primary, standby] {
            let v = serde_json::to_value(&r).unwrap();
            // The shape `d11 show vm-db` has always printed: tables at the top.
            assert_eq!(v.get("head_seq").is_some(), r.tables.is_some(), "{v}");
            assert!(v["replication"]["role"].is_string(), "{v}");
            let back: DbReport = serde_json::from_value(v).unwrap();
            assert_eq!(back, r);
        }
    }
}
