//! The standby: its own SQLite file, following a primary over TCP.
//!
//! It connects, says `hello` with the last seq in its own `changes` table,
//! applies each change it receives in its own transaction (the change's row
//! goes into its `changes` with the same seq, so a restart resumes exactly
//! there and a change re-sent after a reconnect is skipped), and acks each
//! batch and each heartbeat. A corrupt frame, a gap in the seqs, a silent
//! primary or a refused hello close the connection with the reason logged
//! and counted; it reconnects after a backoff that doubles up to
//! `backoff_max_ms` and starts again from `backoff_min_ms` once a
//! connection has delivered something.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::frame::{check_batch, read_msg, write_msg, Msg, ReplError};
use super::{Applied, Change, Db, DbError};

/// The standby's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandbyConfig {
    /// The primary's replication address.
    pub primary: SocketAddr,
    /// The first wait before reconnecting.
    #[serde(default = "default_backoff_min_ms")]
    pub backoff_min_ms: u64,
    /// The longest wait before reconnecting.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// A connect that takes longer fails.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// A primary silent this long (it heartbeats every second) is dropped.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
}

fn default_backoff_min_ms() -> u64 {
    100
}
fn default_backoff_max_ms() -> u64 {
    5000
}
fn default_connect_timeout_ms() -> u64 {
    2000
}
fn default_idle_timeout_ms() -> u64 {
    5000
}

impl StandbyConfig {
    /// The defaults, following `primary`.
    pub fn new(primary: SocketAddr) -> StandbyConfig {
        StandbyConfig {
            primary,
            backoff_min_ms: default_backoff_min_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
        }
    }
}

/// The standby.
pub struct Standby {
    name: String,
    config: StandbyConfig,
    db: Arc<Mutex<Db>>,
    applied: watch::Sender<u64>,
    counters: Mutex<Counters>,
}

/// What a standby reports of its replication (`replication` in `d11 show
/// vm-db2`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct StandbyReport {
    /// `standby`.
    pub role: String,
    pub name: String,
    pub primary: String,
    pub connected: bool,
    pub applied_seq: u64,
    /// The primary's last seq, as last heard.
    pub primary_seq: u64,
    pub lag_changes: u64,
    /// Commit on the primary → commit here, for the last change applied.
    pub apply_delay_ms: u64,
    pub applied_changes: u64,
    pub duplicates_skipped: u64,
    pub connects: u64,
    /// Connections to the primary ended, by reason.
    pub disconnects: BTreeMap<String, u64>,
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Counters {
    connected: bool,
    connects: u64,
    disconnects: BTreeMap<&'static str, u64>,
    last_error: Option<String>,
    /// The primary's last seq, as last heard.
    head: u64,
    applied_changes: u64,
    duplicates: u64,
    /// Commit on the primary → commit here, for the last change applied.
    apply_delay_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Standby {
    /// Opens (or creates) the standby's file; `name` (the node) is what the
    /// primary's status shows.
    pub fn open(name: &str, path: &Path, config: StandbyConfig) -> Result<Arc<Standby>, DbError> {
        let db = Db::open(path)?;
        let applied = watch::Sender::new(db.head()?);
        Ok(Arc::new(Standby {
            name: name.to_string(),
            config,
            db: Arc::new(Mutex::new(db)),
            applied,
            counters: Mutex::new(Counters::default()),
        }))
    }

    /// The last seq applied here.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Watches the last seq applied here.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Runs a read on the standby's file (on the caller's thread, as
    /// [`super::Primary::read`]).
    pub fn read<T>(&self, f: impl FnOnce(&Db) -> Result<T, DbError>) -> Result<T, DbError> {
        f(&self.db.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows the primary until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let min = Duration::from_millis(self.config.backoff_min_ms.max(1));
        let max = Duration::from_millis(self.config.backoff_max_ms).max(min);
        let mut backoff = min;
        loop {
            let mut progressed = false;
            let e = tokio::select! {
                _ = &mut shutdown => return,
                e = self.session(&mut progressed) => e,
            };
            {
                let mut c = self.lock();
                c.connected = false;
                *c.disconnects.entry(e.reason()).or_default() += 1;
                c.last_error = Some(e.to_string());
            }
            if progressed {
                backoff = min;
            }
            match &e {
                ReplError::Io(_) if !progressed => {
                    debug!(primary = %self.config.primary, "replication: primary unreachable: {e}; again in {backoff:?}")
                }
                _ => warn!(
                    primary = %self.config.primary,
                    reason = e.reason(),
                    "replication: connection closed: {e}; reconnecting in {backoff:?}"
                ),
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(max);
        }
    }

    /// One connection: returns why it ended.
    async fn session(&self, progressed: &mut bool) -> ReplError {
        match self.follow(progressed).await {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    async fn follow(&self, progressed: &mut bool) -> Result<std::convert::Infallible, ReplError> {
        let connect = Duration::from_millis(self.config.connect_timeout_ms);
        let idle = Duration::from_millis(self.config.idle_timeout_ms);
        let idle_err = || ReplError::Idle {
            ms: self.config.idle_timeout_ms,
        };
        let stream = tokio::time::timeout(connect, TcpStream::connect(self.config.primary))
            .await
            .map_err(|_| {
                ReplError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                ))
            })??;
        let _ = stream.set_nodelay(true);
        let (rd, mut wr) = stream.into_split();
        let mut rd = BufReader::new(rd);
        let mut applied = self.applied();
        write_msg(
            &mut wr,
            &Msg::Hello {
                standby: self.name.clone(),
                after: applied,
            },
        )
        .await?;
        {
            let mut c = self.lock();
            c.connected = true;
            c.connects += 1;
        }
        info!(primary = %self.config.primary, after = applied, "replication: following the primary");
        // The last seq received: each change must be the next one.
        let mut last = applied;
        loop {
            let msg = tokio::time::timeout(idle, read_msg(&mut rd))
                .await
                .map_err(|_| idle_err())??;
            match msg {
                Msg::Heartbeat { head } => {
                    *progressed = true;
                    self.lock().head = head;
                }
                Msg::Changes { head, changes } => {
                    *progressed = true;
                    self.lock().head = head;
                    last = check_batch(last, &changes)?;
                    applied = self.apply(changes)?;
                }
                other => {
                    return Err(ReplError::Unexpected {
                        expected: "changes or heartbeat",
                        got: other.kind(),
                    })
                }
            }
            write_msg(&mut wr, &Msg::Ack { seq: applied }).await?;
        }
    }

    /// Applies a batch in one transaction; answers the last seq applied.
    fn apply(&self, changes: Vec<Change>) -> Result<u64, ReplError> {
        let (outcomes, head) = {
            let mut db = self.db.lock().unwrap_or_else(|e| e.into_inner());
            let outcomes = db.apply(&changes)?;
            (outcomes, db.head()?)
        };
        self.applied.send_replace(head);
        let now = now_ms();
        let mut c = self.lock();
        for (outcome, at_ms) in outcomes.into_iter().zip(changes.iter().map(|c| c.at_ms)) {
            match outcome {
                Applied::Applied => {
                    c.applied_changes += 1;
                    c.apply_delay_ms = now.saturating_sub(at_ms);
                }
                Applied::Duplicate => c.duplicates += 1,
            }
        }
        Ok(head)
    }

    /// What the control socket reports.
    pub fn status(&self) -> StandbyReport {
        let applied = self.applied();
        let c = self.lock();
        StandbyReport {
            role: "standby".into(),
            name: self.name.clone(),
            primary: self.config.primary.to_string(),
            connected: c.connected,
            applied_seq: applied,
            primary_seq: c.head,
            lag_changes: c.head.saturating_sub(applied),
            apply_delay_ms: c.apply_delay_ms,
            applied_changes: c.applied_changes,
            duplicates_skipped: c.duplicates,
            connects: c.connects,
            disconnects: c
                .disconnects
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            last_error: c.last_error.clone(),
        }
    }
}
