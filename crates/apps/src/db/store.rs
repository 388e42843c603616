//! The shop's tables and the operations the services call, on one SQLite
//! connection ([`Db`]). Every write is one `BEGIN IMMEDIATE` transaction
//! that also appends one row to `changes` (the binlog the standby reads),
//! so a change is in the log exactly when its rows are committed.
//!
//! Calls block for as long as SQLite takes (tens of µs); the `db` app makes
//! them on its event loop, through [`super::Primary`] and
//! [`super::Standby`].

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ValueRef};
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};
use serde::{Deserialize, Serialize};

use super::DbError;

/// Prepared statements kept per connection: more than this file has.
const STATEMENTS: usize = 64;

/// How long a writer waits for another connection's transaction.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS stock (
    sku TEXT PRIMARY KEY,
    stock INTEGER NOT NULL CHECK (stock >= 0),
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS stock_moves (
    order_id TEXT PRIMARY KEY,
    sku TEXT,
    n INTEGER NOT NULL CHECK (n >= 0),
    state TEXT NOT NULL CHECK (state IN ('taken', 'restored'))
);
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY,
    idempotency_key TEXT UNIQUE,
    sku TEXT NOT NULL,
    coupon TEXT,
    price TEXT NOT NULL,
    body JSON NOT NULL CHECK (json_valid(body)),
    state TEXT NOT NULL CHECK (state IN ('pending', 'confirmed', 'cancelled')),
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS coupons (
    code TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('free', 'reserved', 'consumed')),
    order_id TEXT
);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY,
    op TEXT NOT NULL,
    args JSON NOT NULL,
    at_ms INTEGER NOT NULL
);
";

/// The log from a seq on. No `LIMIT ?`: SQLite prepares a statement with a
/// bound LIMIT again at every run (the cached one was parsed anew for each
/// replication batch, 7 % of the primary's CPU); the caller stops reading
/// instead.
const CHANGES_AFTER: &str = "SELECT seq, op, args, at_ms FROM changes WHERE seq > ?1 ORDER BY seq";

/// A state column: a closed set of words, stored as TEXT.
macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $v),+ }

        impl $name {
            /// The word stored in the table.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                match value.as_str()? {
                    $($s => Ok($name::$v),)+
                    other => Err(FromSqlError::Other(
                        format!(concat!("{:?} is not a ", stringify!($name)), other).into(),
                    )),
                }
            }
        }
    };
}

text_enum!(
    /// An order's life: created pending, then confirmed (stock and coupon
    /// done) or cancelled (a step failed and was compensated).
    OrderState {
        Pending = "pending",
        Confirmed = "confirmed",
        Cancelled = "cancelled",
    }
);

text_enum!(
    /// A coupon's life: free, reserved by one order, consumed by it.
    CouponState {
        Free = "free",
        Reserved = "reserved",
        Consumed = "consumed",
    }
);

text_enum!(
    /// What an order did to the stock.
    MoveState {
        /// Its units were taken.
        Taken = "taken",
        /// Its units were given back, or a restore came first and no take
        /// may follow it (a tombstone with `n` 0).
        Restored = "restored",
    }
);

/// A SKU's stock and the version its compare-and-set checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stock {
    pub stock: i64,
    pub version: i64,
}

/// A row of `stock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StockRow {
    pub sku: String,
    pub stock: i64,
    pub version: i64,
}

/// A row of `stock_moves`: what one order took from the stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StockMove {
    pub order_id: String,
    /// `None` for a tombstone (a restore that found nothing taken).
    pub sku: Option<String>,
    pub n: i64,
    pub state: MoveState,
}

/// A row of `orders`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Order {
    pub order_id: String,
    pub idempotency_key: Option<String>,
    pub sku: String,
    pub coupon: Option<String>,
    /// The price as the order carried it (the story's `"68"`): a decimal
    /// string, never a float.
    pub price: String,
    /// The order's JSON.
    pub body: String,
    pub state: OrderState,
    /// UTC, `2026-11-11T00:00:00.000Z`, set by the primary.
    pub created_at: String,
}

/// An order to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub order_id: String,
    pub idempotency_key: Option<String>,
    pub sku: String,
    pub coupon: Option<String>,
    pub price: String,
    /// Must be JSON.
    pub body: String,
}

/// A row of `coupons`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CouponRow {
    pub code: String,
    pub state: CouponState,
    /// The order holding it (reserved or consumed).
    pub order_id: Option<String>,
}

/// One row as a write left it: the change log's payload (row images, like
/// MySQL's `binlog_format=ROW`), so applying it on the standby is an upsert
/// that needs no clock and no decision of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "table", rename_all = "snake_case")]
pub enum RowImage {
    Stock(StockRow),
    StockMove(StockMove),
    Order(Order),
    Coupon(CouponRow),
}

/// A row of `changes`: one committed operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    /// 1, 2, 3, … without gaps: writes are serialized by SQLite's write lock.
    pub seq: u64,
    /// The operation that wrote it (`stock_take`, …).
    pub op: String,
    /// The rows it wrote, as they were after it.
    pub rows: Vec<RowImage>,
    /// When the primary committed it (Unix ms).
    pub at_ms: u64,
}

/// What [`Db::stock_cas`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Cas {
    /// The version matched: the new stock is set and the version bumped.
    Applied(Stock),
    /// Someone wrote first: read `current` and try again.
    Conflict { current: Stock },
    /// The version matched but the new stock would be negative: sold out.
    Insufficient { current: Stock },
}

/// What [`Db::stock_take`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Take {
    /// Taken now; the stock after.
    Taken(Stock),
    /// This order had already taken the same units: nothing done.
    Replayed(Stock),
    /// `expected_version` did not match: read `current` and try again.
    Conflict { current: Stock },
    /// Not enough stock: sold out.
    Insufficient { current: Stock },
    /// The order's units were restored (or a restore came first): it may
    /// not take again.
    AlreadyRestored,
}

/// One order's units in a [`Db::stock_take_batch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TakeRequest {
    pub order_id: String,
    pub n: i64,
}

/// What one order of a batch got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum TakeOutcome {
    /// Its units were taken in this batch.
    Taken,
    /// It had taken the same units before: nothing done.
    Replayed,
    /// Not enough left for it: sold out.
    Insufficient,
    /// Its units were restored (or a restore came first): it may not take.
    AlreadyRestored,
    /// It took something else before (another SKU or quantity).
    Mismatch { took: String },
}

/// What [`Db::stock_take_batch`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum BatchTake {
    /// The version matched: `takes` says what each order got, in the
    /// request's order; `stock` is the level after.
    Applied {
        stock: Stock,
        takes: Vec<TakeOutcome>,
    },
    /// Someone wrote first: nothing done; try again at `current`'s version.
    Conflict { current: Stock },
}

/// What [`Db::stock_restore`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Restore {
    /// The order's units are back; the stock after.
    Restored(Stock),
    /// Already restored: nothing done.
    AlreadyRestored,
    /// The order took nothing; a tombstone now stops a late take.
    NothingTaken,
}

/// What [`Db::order_create`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum OrderCreated {
    Created(Order),
    /// The same order (by id, or by key with the same content) exists.
    Replayed(Order),
    /// The key names another order with different content.
    KeyReused {
        order_id: String,
    },
}

/// What [`Db::order_set_state`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum StateChange {
    Changed {
        from: OrderState,
    },
    /// Already in that state.
    Unchanged,
}

/// What a coupon operation did; each carries the coupon after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "coupon", rename_all = "snake_case")]
pub enum CouponOutcome {
    Applied(CouponRow),
    /// Already done for this order: nothing done.
    Replayed(CouponRow),
    /// Another order holds it, or it is not in the state the operation
    /// needs (consume without reserve, release after consume).
    Refused(CouponRow),
}

/// What [`Db::apply`] did with a change from the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Applied,
    /// This seq was applied before: nothing done.
    Duplicate,
}

/// Called with the seq of each committed change.
pub type CommitHook = Arc<dyn Fn(u64) + Send + Sync>;

/// One connection to the shop's SQLite file.
pub struct Db {
    conn: Connection,
    on_commit: Option<CommitHook>,
    last_seq: Option<u64>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.conn.path())
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Db {
    /// Opens (or creates) the file at `path` in WAL mode with the schema.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let open = || -> rusqlite::Result<Connection> {
            let conn = Connection::open(path)?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            // Every statement below is prepared once and kept: parsing
            // each again cost the primary and the standby a fifth of their
            // CPU per order (docs/db.md).
            conn.set_prepared_statement_cache_capacity(STATEMENTS);
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.execute_batch(SCHEMA)?;
            Ok(conn)
        };
        let conn = open().map_err(|source| DbError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Db {
            conn,
            on_commit: None,
            last_seq: None,
        })
    }

    /// Calls `hook` with the seq of every change this connection commits.
    pub fn set_commit_hook(&mut self, hook: CommitHook) {
        self.on_commit = Some(hook);
    }

    /// The seq of the last change this connection committed since the last
    /// call, if any.
    pub fn take_last_seq(&mut self) -> Option<u64> {
        self.last_seq.take()
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction; the rows it reports
    /// written go to `changes` as operation `op` before the commit.
    fn write<T>(
        &mut self,
        op: &str,
        f: impl FnOnce(&Transaction) -> Result<(T, Vec<RowImage>), DbError>,
    ) -> Result<T, DbError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (value, rows) = f(&tx)?;
        let seq = if rows.is_empty() {
            None
        } else {
            let args = serde_json::to_string(&rows).map_err(|e| DbError::Encode(e.to_string()))?;
            tx.prepare_cached("INSERT INTO changes (op, args, at_ms) VALUES (?1, ?2, ?3)")?
                .execute(params![op, args, now_ms() as i64])?;
            Some(tx.last_insert_rowid() as u64)
        };
        tx.commit()?;
        if let Some(seq) = seq {
            self.last_seq = Some(seq);
            if let Some(hook) = &self.on_commit {
                hook(seq);
            }
        }
        Ok(value)
    }

    // ---- stock ----

    /// The stock of `sku` and its version; `None` for an unknown SKU.
    pub fn stock_get(&self, sku: &str) -> Result<Option<Stock>, DbError> {
        Ok(stock_row(&self.conn, sku)?.map(|r| Stock {
            stock: r.stock,
            version: r.version,
        }))
    }

    /// Sets `sku`'s stock to `n` (creating it at version 0, or bumping its
    /// version).
    pub fn seed_stock(&mut self, sku: &str, n: i64) -> Result<Stock, DbError> {
        if n < 0 {
            return Err(DbError::BadAmount { what: "stock", n });
        }
        self.write("seed_stock", |tx| {
            tx.prepare_cached(
                "INSERT INTO stock (sku, stock, version) VALUES (?1, ?2, 0)
                 ON CONFLICT (sku) DO UPDATE SET stock = excluded.stock, version = version + 1",
            )?
            .execute(params![sku, n])?;
            let row = known_stock(tx, sku)?;
            Ok((stock_of(&row), vec![RowImage::Stock(row)]))
        })
    }

    /// The story's optimistic lock: `UPDATE stock SET stock=?, version=version+1
    /// WHERE sku=? AND version=?`. A negative `new_stock` is never written.
    pub fn stock_cas(
        &mut self,
        sku: &str,
        expected_version: i64,
        new_stock: i64,
    ) -> Result<Cas, DbError> {
        self.write("stock_cas", |tx| {
            let current = stock_of(&known_stock(tx, sku)?);
            if current.version != expected_version {
                return Ok((Cas::Conflict { current }, vec![]));
            }
            if new_stock < 0 {
                return Ok((Cas::Insufficient { current }, vec![]));
            }
            let n = tx
                .prepare_cached(
                    "UPDATE stock SET stock = ?1, version = version + 1 WHERE sku = ?2 AND version = ?3",
                )?
                .execute(params![new_stock, sku, expected_version])?;
            if n != 1 {
                // Cannot happen inside the write lock; answer as a conflict.
                let current = stock_of(&known_stock(tx, sku)?);
                return Ok((Cas::Conflict { current }, vec![]));
            }
            let row = known_stock(tx, sku)?;
            Ok((Cas::Applied(stock_of(&row)), vec![RowImage::Stock(row)]))
        })
    }

    /// Takes `n` units of `sku` for `order_id`, once: a retried take with the
    /// same order id is answered [`Take::Replayed`]. With `expected_version`
    /// it is the story's compare-and-set (a stale version is a
    /// [`Take::Conflict`]); without, a plain atomic decrement.
    pub fn stock_take(
        &mut self,
        order_id: &str,
        sku: &str,
        n: i64,
        expected_version: Option<i64>,
    ) -> Result<Take, DbError> {
        if n <= 0 {
            return Err(DbError::BadAmount { what: "take", n });
        }
        self.write("stock_take", |tx| {
            match earlier_take(tx, order_id, sku, n)? {
                Some(TakeOutcome::AlreadyRestored) => return Ok((Take::AlreadyRestored, vec![])),
                Some(TakeOutcome::Replayed) => {
                    return Ok((Take::Replayed(stock_of(&known_stock(tx, sku)?)), vec![]))
                }
                Some(TakeOutcome::Mismatch { took }) => {
                    return Err(DbError::MoveMismatch {
                        order_id: order_id.to_string(),
                        took,
                    })
                }
                _ => {}
            }
            let current = stock_of(&known_stock(tx, sku)?);
            if expected_version.is_some_and(|v| v != current.version) {
                return Ok((Take::Conflict { current }, vec![]));
            }
            if current.stock < n {
                return Ok((Take::Insufficient { current }, vec![]));
            }
            tx.prepare_cached(
                "UPDATE stock SET stock = stock - ?1, version = version + 1
                 WHERE sku = ?2 AND version = ?3",
            )?
            .execute(params![n, sku, current.version])?;
            let m = taken_move(order_id, sku, n);
            put_move(tx, &m)?;
            let row = known_stock(tx, sku)?;
            Ok((
                Take::Taken(stock_of(&row)),
                vec![RowImage::Stock(row), RowImage::StockMove(m)],
            ))
        })
    }

    /// The deductions waiting on one SKU as **one compare-and-set in one
    /// transaction** (the stock service's coalescing, docs/db.md "The hot
    /// item"): if `sku` is still at `expected_version`, each order of
    /// `takes` is decided in turn, oldest first — one already decided is
    /// replayed (or refused, if restored), the next gets its units while
    /// enough are left, the rest are [`TakeOutcome::Insufficient`] — and
    /// `UPDATE stock SET stock = ?, version = ? WHERE sku = ? AND version = ?`
    /// sets the stock left, the version raised by one per order taken (so
    /// the version still counts every take and restore). Each order taken is
    /// its own `stock_moves` row; the change log gets one change holding
    /// the stock row and every move. A stale version is a
    /// [`BatchTake::Conflict`] and changes nothing.
    pub fn stock_take_batch(
        &mut self,
        sku: &str,
        expected_version: i64,
        takes: &[TakeRequest],
    ) -> Result<BatchTake, DbError> {
        if let Some(t) = takes.iter().find(|t| t.n <= 0) {
            return Err(DbError::BadAmount {
                what: "take",
                n: t.n,
            });
        }
        self.write("stock_take_batch", |tx| {
            let current = stock_of(&known_stock(tx, sku)?);
            if current.version != expected_version {
                return Ok((BatchTake::Conflict { current }, vec![]));
            }
            let (mut left, mut taken) = (current.stock, 0i64);
            let mut outcomes = Vec::with_capacity(takes.len());
            let mut rows = Vec::new();
            for t in takes {
                // An order twice in one batch finds its own move of a moment ago.
                let outcome = match earlier_take(tx, &t.order_id, sku, t.n)? {
                    Some(o) => o,
                    None if left >= t.n => {
                        let m = taken_move(&t.order_id, sku, t.n);
                        put_move(tx, &m)?;
                        rows.push(RowImage::StockMove(m));
                        left -= t.n;
                        taken += 1;
                        TakeOutcome::Taken
                    }
                    None => TakeOutcome::Insufficient,
                };
                outcomes.push(outcome);
            }
            if taken == 0 {
                return Ok((
                    BatchTake::Applied {
                        stock: current,
                        takes: outcomes,
                    },
                    vec![],
                ));
            }
            let n = tx
                .prepare_cached(
                    "UPDATE stock SET stock = ?1, version = ?2 WHERE sku = ?3 AND version = ?4",
                )?
                .execute(params![
                    left,
                    expected_version + taken,
                    sku,
                    expected_version
                ])?;
            if n != 1 {
                // Cannot happen inside the write lock: undo by not committing.
                return Err(DbError::Corrupt {
                    what: format!("stock of {sku:?} changed inside a transaction"),
                });
            }
            let row = known_stock(tx, sku)?;
            let after = stock_of(&row);
            rows.insert(0, RowImage::Stock(row));
            Ok((
                BatchTake::Applied {
                    stock: after,
                    takes: outcomes,
                },
                rows,
            ))
        })
    }

    /// Gives back what `order_id` took, once. A restore that finds nothing
    /// taken leaves a tombstone, so a take arriving late (its request was
    /// slower than the compensation) is refused instead of selling stock to
    /// a cancelled order.
    pub fn stock_restore(&mut self, order_id: &str) -> Result<Restore, DbError> {
        self.write("stock_restore", |tx| match stock_move(tx, order_id)? {
            Some(StockMove {
                state: MoveState::Restored,
                ..
            }) => Ok((Restore::AlreadyRestored, vec![])),
            None => {
                let m = StockMove {
                    order_id: order_id.to_string(),
                    sku: None,
                    n: 0,
                    state: MoveState::Restored,
                };
                put_move(tx, &m)?;
                Ok((Restore::NothingTaken, vec![RowImage::StockMove(m)]))
            }
            Some(mut m) => {
                let sku = m.sku.clone().unwrap_or_default();
                tx.prepare_cached(
                    "UPDATE stock SET stock = stock + ?1, version = version + 1 WHERE sku = ?2",
                )?
                .execute(params![m.n, sku])?;
                m.state = MoveState::Restored;
                put_move(tx, &m)?;
                let row = known_stock(tx, &sku)?;
                Ok((
                    Restore::Restored(stock_of(&row)),
                    vec![RowImage::Stock(row), RowImage::StockMove(m)],
                ))
            }
        })
    }

    /// Every SKU, by name.
    pub fn stock_all(&self) -> Result<Vec<StockRow>, DbError> {
        let mut st = self
            .conn
            .prepare("SELECT sku, stock, version FROM stock ORDER BY sku")?;
        let rows = st.query_map([], stock_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every stock move, by order id.
    pub fn stock_moves(&self) -> Result<Vec<StockMove>, DbError> {
        let mut st = self
            .conn
            .prepare("SELECT order_id, sku, n, state FROM stock_moves ORDER BY order_id")?;
        let rows = st.query_map([], move_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ---- orders ----

    /// Creates the order, once: the same order id or the same key with the
    /// same content answers the existing order; a key reused for different
    /// content answers [`OrderCreated::KeyReused`]; an order id reused for
    /// different content is an error.
    pub fn order_create(&mut self, new: &NewOrder) -> Result<OrderCreated, DbError> {
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&new.body) {
            return Err(DbError::BadBody {
                order_id: new.order_id.clone(),
                reason: e.to_string(),
            });
        }
        self.write("order_create", |tx| {
            if let Some(existing) = order_row(tx, "order_id", &new.order_id)? {
                return if same_order(&existing, new) {
                    Ok((OrderCreated::Replayed(existing), vec![]))
                } else {
                    Err(DbError::OrderIdReused {
                        order_id: new.order_id.clone(),
                    })
                };
            }
            if let Some(key) = &new.idempotency_key {
                if let Some(existing) = order_row(tx, "idempotency_key", key)? {
                    let same = existing.sku == new.sku
                        && existing.coupon == new.coupon
                        && existing.price == new.price
                        && existing.body == new.body;
                    return Ok((
                        if same {
                            OrderCreated::Replayed(existing)
                        } else {
                            OrderCreated::KeyReused {
                                order_id: existing.order_id,
                            }
                        },
                        vec![],
                    ));
                }
            }
            tx.prepare_cached(
                "INSERT INTO orders (order_id, idempotency_key, sku, coupon, price, body, state, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
            )?
            .execute(params![new.order_id, new.idempotency_key, new.sku, new.coupon, new.price, new.body])?;
            let row = order_row(tx, "order_id", &new.order_id)?.ok_or_else(|| DbError::UnknownOrder(new.order_id.clone()))?;
            Ok((OrderCreated::Created(row.clone()), vec![RowImage::Order(row)]))
        })
    }

    /// Moves an order pending → confirmed or pending → cancelled; setting
    /// the state it is in is [`StateChange::Unchanged`].
    pub fn order_set_state(
        &mut self,
        order_id: &str,
        to: OrderState,
    ) -> Result<StateChange, DbError> {
        self.write("order_set_state", |tx| {
            let mut row = order_row(tx, "order_id", order_id)?
                .ok_or_else(|| DbError::UnknownOrder(order_id.to_string()))?;
            let from = row.state;
            if from == to {
                return Ok((StateChange::Unchanged, vec![]));
            }
            if from != OrderState::Pending {
                return Err(DbError::BadTransition {
                    order_id: order_id.to_string(),
                    from,
                    to,
                });
            }
            tx.prepare_cached("UPDATE orders SET state = ?1 WHERE order_id = ?2")?
                .execute(params![to.as_str(), order_id])?;
            row.state = to;
            Ok((StateChange::Changed { from }, vec![RowImage::Order(row)]))
        })
    }

    /// One order.
    pub fn order_get(&self, order_id: &str) -> Result<Option<Order>, DbError> {
        Ok(order_row(&self.conn, "order_id", order_id)?)
    }

    /// Every order, oldest first.
    pub fn orders(&self) -> Result<Vec<Order>, DbError> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders ORDER BY created_at, order_id"
        ))?;
        let rows = st.query_map([], order_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ---- coupons ----

    /// Adds a free coupon; `false` if it exists (left as it is).
    pub fn seed_coupon(&mut self, code: &str) -> Result<bool, DbError> {
        self.write("seed_coupon", |tx| {
            let n = tx
                .prepare_cached(
                    "INSERT INTO coupons (code, state, order_id) VALUES (?1, 'free', NULL)
                 ON CONFLICT (code) DO NOTHING",
                )?
                .execute([code])?;
            if n == 0 {
                return Ok((false, vec![]));
            }
            Ok((true, vec![RowImage::Coupon(known_coupon(tx, code)?)]))
        })
    }

    /// Reserves a free coupon for `order_id`.
    pub fn coupon_reserve(&mut self, code: &str, order_id: &str) -> Result<CouponOutcome, DbError> {
        self.coupon_step("coupon_reserve", code, order_id, |c, mine| match c.state {
            CouponState::Free => Step::To(CouponState::Reserved),
            _ if mine => Step::Replayed,
            _ => Step::Refused,
        })
    }

    /// Consumes the coupon `order_id` reserved.
    pub fn coupon_consume(&mut self, code: &str, order_id: &str) -> Result<CouponOutcome, DbError> {
        self.coupon_step("coupon_consume", code, order_id, |c, mine| match c.state {
            CouponState::Reserved if mine => Step::To(CouponState::Consumed),
            CouponState::Consumed if mine => Step::Replayed,
            _ => Step::Refused,
        })
    }

    /// Frees the coupon `order_id` reserved (compensation); a free coupon
    /// is [`CouponOutcome::Replayed`]; a consumed one is refused.
    pub fn coupon_release(&mut self, code: &str, order_id: &str) -> Result<CouponOutcome, DbError> {
        self.coupon_step("coupon_release", code, order_id, |c, mine| match c.state {
            CouponState::Reserved if mine => Step::To(CouponState::Free),
            CouponState::Free => Step::Replayed,
            _ => Step::Refused,
        })
    }

    fn coupon_step(
        &mut self,
        op: &str,
        code: &str,
        order_id: &str,
        decide: impl FnOnce(&CouponRow, bool) -> Step,
    ) -> Result<CouponOutcome, DbError> {
        self.write(op, |tx| {
            let mut c = known_coupon(tx, code)?;
            let mine = c.order_id.as_deref() == Some(order_id);
            match decide(&c, mine) {
                Step::Replayed => Ok((CouponOutcome::Replayed(c), vec![])),
                Step::Refused => Ok((CouponOutcome::Refused(c), vec![])),
                Step::To(state) => {
                    c.state = state;
                    c.order_id = (state != CouponState::Free).then(|| order_id.to_string());
                    tx.prepare_cached(
                        "UPDATE coupons SET state = ?1, order_id = ?2 WHERE code = ?3",
                    )?
                    .execute(params![state.as_str(), c.order_id, code])?;
                    Ok((CouponOutcome::Applied(c.clone()), vec![RowImage::Coupon(c)]))
                }
            }
        })
    }

    /// Every coupon, by code.
    pub fn coupons(&self) -> Result<Vec<CouponRow>, DbError> {
        let mut st = self
            .conn
            .prepare("SELECT code, state, order_id FROM coupons ORDER BY code")?;
        let rows = st.query_map([], coupon_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ---- the change log ----

    /// The last committed seq (0 for none).
    pub fn head(&self) -> Result<u64, DbError> {
        let seq: Option<i64> = self
            .conn
            .prepare_cached("SELECT max(seq) FROM changes")?
            .query_row([], |r| r.get(0))?;
        Ok(seq.unwrap_or(0) as u64)
    }

    /// When change `seq` was committed (Unix ms), if it exists.
    pub fn change_at_ms(&self, seq: u64) -> Result<Option<u64>, DbError> {
        let at: Option<i64> = self
            .conn
            .prepare_cached("SELECT at_ms FROM changes WHERE seq = ?1")?
            .query_row([seq as i64], |r| r.get(0))
            .optional()?;
        Ok(at.map(|a| a as u64))
    }

    /// Up to `limit` changes after `after`, in order.
    pub fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<Change>, DbError> {
        self.changes_within(after, limit, usize::MAX)
    }

    /// [`Db::changes_after`], stopping before the changes' rows would pass
    /// `max_bytes` of JSON (always at least one change): what fits one
    /// replication message, however many orders a batch's change holds.
    pub fn changes_within(
        &self,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Change>, DbError> {
        let mut st = self.conn.prepare_cached(CHANGES_AFTER)?;
        let rows = st.query_map(params![after as i64], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)? as u64,
            ))
        })?;
        let (mut out, mut bytes) = (Vec::new(), 0usize);
        for row in rows.take(limit) {
            let (seq, op, args, at_ms) = row?;
            bytes += args.len() + op.len();
            if bytes > max_bytes && !out.is_empty() {
                break;
            }
            let rows = serde_json::from_str(&args).map_err(|e| DbError::Corrupt {
                what: format!("change {seq}'s args: {e}"),
            })?;
            out.push(Change {
                seq,
                op,
                rows,
                at_ms,
            });
        }
        Ok(out)
    }

    /// Applies a batch of changes from the primary, in order, in one
    /// transaction, each with its row in `changes` (same seq), so the
    /// standby's log is the primary's and a change applied twice (after a
    /// reconnect) is a [`Applied::Duplicate`]. A seq beyond the next one is
    /// [`DbError::OutOfOrder`]. An error applies none of the batch (the
    /// standby then follows again from its head). One commit a batch, not
    /// one a change: a sync write's ack waits for it. A file that applies
    /// changes must not take writes of its own.
    pub fn apply(&mut self, changes: &[Change]) -> Result<Vec<Applied>, DbError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let head: Option<i64> = tx
            .prepare_cached("SELECT max(seq) FROM changes")?
            .query_row([], |r| r.get(0))?;
        let mut head = head.unwrap_or(0) as u64;
        let mut outcomes = Vec::with_capacity(changes.len());
        for change in changes {
            outcomes.push(apply_one(&tx, head, change)?);
            head = head.max(change.seq);
        }
        tx.commit()?;
        Ok(outcomes)
    }
}

/// One change of [`Db::apply`]'s batch, `head` the last seq in the log.
fn apply_one(tx: &Transaction, head: u64, change: &Change) -> Result<Applied, DbError> {
    if change.seq <= head {
        return Ok(Applied::Duplicate);
    }
    if change.seq != head + 1 {
        return Err(DbError::OutOfOrder {
            expected: head + 1,
            got: change.seq,
        });
    }
    for row in &change.rows {
        match row {
            RowImage::Stock(s) => {
                tx.prepare_cached(
                    "INSERT INTO stock (sku, stock, version) VALUES (?1, ?2, ?3)
                     ON CONFLICT (sku) DO UPDATE SET stock = excluded.stock, version = excluded.version",
                )?
                .execute(params![s.sku, s.stock, s.version])?;
            }
            RowImage::StockMove(m) => put_move(tx, m)?,
            RowImage::Order(o) => {
                tx.prepare_cached(
                    "INSERT INTO orders (order_id, idempotency_key, sku, coupon, price, body, state, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (order_id) DO UPDATE SET idempotency_key = excluded.idempotency_key,
                     sku = excluded.sku, coupon = excluded.coupon, price = excluded.price,
                     body = excluded.body, state = excluded.state, created_at = excluded.created_at",
                )?
                .execute(params![o.order_id, o.idempotency_key, o.sku, o.coupon, o.price, o.body, o.state.as_str(), o.created_at])?;
            }
            RowImage::Coupon(c) => {
                tx.prepare_cached(
                    "INSERT INTO coupons (code, state, order_id) VALUES (?1, ?2, ?3)
                     ON CONFLICT (code) DO UPDATE SET state = excluded.state, order_id = excluded.order_id",
                )?
                .execute(params![c.code, c.state.as_str(), c.order_id])?;
            }
        }
    }
    let args = serde_json::to_string(&change.rows).map_err(|e| DbError::Encode(e.to_string()))?;
    tx.prepare_cached("INSERT INTO changes (seq, op, args, at_ms) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![
            change.seq as i64,
            change.op,
            args,
            change.at_ms as i64
        ])?;
    Ok(Applied::Applied)
}

enum Step {
    To(CouponState),
    Replayed,
    Refused,
}

fn stock_of(r: &StockRow) -> Stock {
    Stock {
        stock: r.stock,
        version: r.version,
    }
}

fn stock_from_row(r: &Row) -> rusqlite::Result<StockRow> {
    Ok(StockRow {
        sku: r.get(0)?,
        stock: r.get(1)?,
        version: r.get(2)?,
    })
}

fn stock_row(conn: &Connection, sku: &str) -> rusqlite::Result<Option<StockRow>> {
    conn.prepare_cached("SELECT sku, stock, version FROM stock WHERE sku = ?1")?
        .query_row([sku], stock_from_row)
        .optional()
}

fn known_stock(conn: &Connection, sku: &str) -> Result<StockRow, DbError> {
    stock_row(conn, sku)?.ok_or_else(|| DbError::UnknownSku(sku.to_string()))
}

fn move_from_row(r: &Row) -> rusqlite::Result<StockMove> {
    Ok(StockMove {
        order_id: r.get(0)?,
        sku: r.get(1)?,
        n: r.get(2)?,
        state: r.get(3)?,
    })
}

fn stock_move(conn: &Connection, order_id: &str) -> rusqlite::Result<Option<StockMove>> {
    conn.prepare_cached("SELECT order_id, sku, n, state FROM stock_moves WHERE order_id = ?1")?
        .query_row([order_id], move_from_row)
        .optional()
}

/// What an order's earlier move (if any) says about it taking `n` of `sku`:
/// `None` when it has none and may take.
fn earlier_take(
    conn: &Connection,
    order_id: &str,
    sku: &str,
    n: i64,
) -> rusqlite::Result<Option<TakeOutcome>> {
    Ok(stock_move(conn, order_id)?.map(|m| match m.state {
        MoveState::Restored => TakeOutcome::AlreadyRestored,
        MoveState::Taken if m.sku.as_deref() == Some(sku) && m.n == n => TakeOutcome::Replayed,
        MoveState::Taken => TakeOutcome::Mismatch {
            took: format!("{} x {}", m.n, m.sku.unwrap_or_default()),
        },
    }))
}

fn taken_move(order_id: &str, sku: &str, n: i64) -> StockMove {
    StockMove {
        order_id: order_id.to_string(),
        sku: Some(sku.to_string()),
        n,
        state: MoveState::Taken,
    }
}

fn put_move(conn: &Connection, m: &StockMove) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO stock_moves (order_id, sku, n, state) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (order_id) DO UPDATE SET sku = excluded.sku, n = excluded.n, state = excluded.state",
    )?
    .execute(params![m.order_id, m.sku, m.n, m.state.as_str()])?;
    Ok(())
}

const ORDER_COLUMNS: &str =
    "order_id, idempotency_key, sku, coupon, price, body, state, created_at";

fn order_from_row(r: &Row) -> rusqlite::Result<Order> {
    Ok(Order {
        order_id: r.get(0)?,
        idempotency_key: r.get(1)?,
        sku: r.get(2)?,
        coupon: r.get(3)?,
        price: r.get(4)?,
        body: r.get(5)?,
        state: r.get(6)?,
        created_at: r.get(7)?,
    })
}

/// `column` is `order_id` or `idempotency_key`, never input.
fn order_row(conn: &Connection, column: &str, value: &str) -> rusqlite::Result<Option<Order>> {
    conn.prepare_cached(&format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE {column} = ?1"
    ))?
    .query_row([value], order_from_row)
    .optional()
}

fn same_order(o: &Order, new: &NewOrder) -> bool {
    o.idempotency_key == new.idempotency_key
        && o.sku == new.sku
        && o.coupon == new.coupon
        && o.price == new.price
        && o.body == new.body
}

fn coupon_from_row(r: &Row) -> rusqlite::Result<CouponRow> {
    Ok(CouponRow {
        code: r.get(0)?,
        state: r.get(1)?,
        order_id: r.get(2)?,
    })
}

fn known_coupon(conn: &Connection, code: &str) -> Result<CouponRow, DbError> {
    conn.prepare_cached("SELECT code, state, order_id FROM coupons WHERE code = ?1")?
        .query_row([code], coupon_from_row)
        .optional()?
        .ok_or_else(|| DbError::UnknownCoupon(code.to_string()))
}

#[cfg(test)]
mod tests;
