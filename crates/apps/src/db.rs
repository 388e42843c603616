//! The shop's database (chapter 10: "the data lands in a database that has a
//! primary in one AZ and a standby in the other"): stock with the story's
//! optimistic lock, orders idempotent by order id and key, coupons reserved
//! and consumed once per order, on SQLite; and a standby fed by the
//! primary's change log over TCP.
//!
//! Read SQLite's "Write-Ahead Logging" and "BEGIN IMMEDIATE" pages, and
//! MySQL's "Semisynchronous Replication" chapter (the `sync` mode here is its
//! `AFTER_SYNC` with `rpl_semi_sync_master_timeout`), first; docs/db.md has
//! the schema, the replication protocol and the sharding note.
//!
//! - [`Db`]: one SQLite connection and every operation the services call,
//!   blocking, each one transaction that also appends a [`Change`].
//! - [`Primary`]: a `Db` for async callers; serves the change log to
//!   standbys and, in `sync` mode, returns a write only once a standby
//!   acknowledged it (or says it timed out).
//! - [`Standby`]: its own SQLite file; follows a primary, applies each
//!   change in its own transaction, reconnects with backoff.

mod frame;
mod primary;
mod standby;
mod store;

use std::path::PathBuf;

pub use frame::{check_ack, check_batch, read_msg, write_msg, Msg, ReplError, MAX_FRAME};
pub use primary::{
    Primary, PrimaryConfig, PrimaryReport, Replicated, ReplicationMode, StandbyLink, Written,
    REPLICATION_PORT,
};
pub use standby::{Standby, StandbyConfig, StandbyReport};
pub use store::{
    Applied, BatchTake, Cas, Change, CommitHook, CouponOutcome, CouponRow, CouponState, Db,
    MoveState, NewOrder, Order, OrderCreated, OrderState, Restore, RowImage, StateChange, Stock,
    StockMove, StockRow, Take, TakeOutcome, TakeRequest, BUSY_TIMEOUT,
};

/// An error from the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The file could not be opened or prepared.
    #[error("database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// SQLite failed (busy past the timeout, disk, constraint).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// No such SKU in `stock`.
    #[error("unknown sku {0:?}")]
    UnknownSku(String),
    /// No such order.
    #[error("unknown order {0:?}")]
    UnknownOrder(String),
    /// No such coupon.
    #[error("unknown coupon {0:?}")]
    UnknownCoupon(String),
    /// A quantity that must be positive (a take) or not negative (a seed).
    #[error("{what} of {n} units is not allowed")]
    BadAmount { what: &'static str, n: i64 },
    /// An order body that is not JSON.
    #[error("order {order_id}: body is not JSON: {reason}")]
    BadBody { order_id: String, reason: String },
    /// An order id used again for a different order.
    #[error("order id {order_id} already names a different order")]
    OrderIdReused { order_id: String },
    /// A state change an order may not make.
    #[error("order {order_id} cannot go from {from} to {to}")]
    BadTransition {
        order_id: String,
        from: OrderState,
        to: OrderState,
    },
    /// A take retried with a different SKU or quantity than the first.
    #[error("order {order_id} already took {took}, not this")]
    MoveMismatch { order_id: String, took: String },
    /// A change from the primary that is not the next one.
    #[error("change {got} arrived where {expected} was due")]
    OutOfOrder { expected: u64, got: u64 },
    /// Something stored that this code cannot read.
    #[error("corrupt database: {what}")]
    Corrupt { what: String },
    /// A change that could not be encoded.
    #[error("encoding a change: {0}")]
    Encode(String),
    /// The blocking task running the operation died.
    #[error("database task: {0}")]
    Task(String),
}
