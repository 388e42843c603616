//! The order store: one SQLite file, WAL mode, shared by every controller of
//! the lab (two processes in two namespaces on one filesystem) until the order
//! service and its database arrive. Calls block; run them off the runtime.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

/// How long a writer waits for the other controller's transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS orders (
    id INTEGER PRIMARY KEY,
    order_id TEXT NOT NULL UNIQUE,
    idempotency_key TEXT UNIQUE,
    body JSON NOT NULL,
    served_by TEXT NOT NULL,
    created_at TEXT NOT NULL
)";

/// An order as stored.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Row {
    pub order_id: String,
    /// The order's canonical JSON.
    pub body: String,
    /// The controller that created it.
    pub served_by: String,
}

/// What recording an order did.
#[derive(Debug, PartialEq)]
pub(super) enum Recorded {
    /// A new order.
    Created(Row),
    /// The key was seen with the same order: that order.
    Replayed(Row),
    /// The key was seen with a different order.
    KeyReused,
}

pub(super) struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (or creates) the store at `path`, in WAL mode so the other
    /// controller's readers and writer do not block each other for long.
    pub fn open(path: &Path) -> rusqlite::Result<Store> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    /// Records `body` under `order_id`, unless `key` already names an order:
    /// then that order is answered, if its body is the same. The insert and
    /// the read-back are one `BEGIN IMMEDIATE` transaction, so two
    /// controllers racing with one key make one row.
    pub fn record(
        &self,
        order_id: &str,
        key: Option<&str>,
        body: &str,
        served_by: &str,
    ) -> rusqlite::Result<Recorded> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let inserted = tx.execute(
            "INSERT INTO orders (order_id, idempotency_key, body, served_by, created_at)
             VALUES (?1, ?2, ?3, ?4, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
             ON CONFLICT (idempotency_key) DO NOTHING",
            params![order_id, key, body, served_by],
        )?;
        let recorded = if inserted == 1 {
            Recorded::Created(Row {
                order_id: order_id.to_string(),
                body: body.to_string(),
                served_by: served_by.to_string(),
            })
        } else {
            let row = tx
                .query_row(
                    "SELECT order_id, body, served_by FROM orders WHERE idempotency_key = ?1",
                    [key],
                    |r| {
                        Ok(Row {
                            order_id: r.get(0)?,
                            body: r.get(1)?,
                            served_by: r.get(2)?,
                        })
                    },
                )
                .optional()?
                .ok_or(rusqlite::Error::QueryReturnedNoRows)?;
            if row.body == body {
                Recorded::Replayed(row)
            } else {
                Recorded::KeyReused
            }
        };
        tx.commit()?;
        Ok(recorded)
    }

    /// How many orders the store holds.
    #[cfg(test)]
    pub fn count(&self) -> rusqlite::Result<u64> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        conn.query_row("SELECT count(*) FROM orders", [], |r| r.get(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_makes_one_row_across_connections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orders.sqlite");
        let (a, b) = (Store::open(&path).unwrap(), Store::open(&path).unwrap());
        let first = a.record("ord-1", Some("k"), "{}", "vm-ctl").unwrap();
        let Recorded::Created(row) = first else {
            panic!("{first:?}")
        };
        assert_eq!(
            b.record("ord-2", Some("k"), "{}", "vm-ctl2").unwrap(),
            Recorded::Replayed(row)
        );
        assert_eq!(
            b.record("ord-3", Some("k"), "{\"x\":1}", "vm-ctl2")
                .unwrap(),
            Recorded::KeyReused
        );
        assert!(matches!(
            b.record("ord-4", None, "{}", "vm-ctl2").unwrap(),
            Recorded::Created(_)
        ));
        assert!(matches!(
            a.record("ord-5", None, "{}", "vm-ctl").unwrap(),
            Recorded::Created(_)
        ));
        assert_eq!(a.count().unwrap(), 3);
    }

    #[test]
    fn the_store_is_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("orders.sqlite")).unwrap();
        let conn = store.conn.lock().unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }
}
