//! The primary: the shop's [`Db`] for async callers, and the server of its
//! change log to standbys.
//!
//! Each standby connection has a sender (wakes when a write commits, or
//! every `poll_ms` for writes by other connections to the file; reads up to
//! `batch` changes after what it sent; sends them; a heartbeat when idle)
//! and an ack reader. In `sync` mode a write returns once some standby
//! acknowledged its seq, or after `sync_timeout_ms` with
//! [`Replicated::TimedOut`]: the change is then committed on the primary
//! only (MySQL's semi-sync falls back to async the same way), counted and
//! logged, never hidden.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::io::BufReader;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::frame::{check_ack, read_msg, write_msg, Msg, ReplError, MAX_FRAME};
use super::{Db, DbError};

/// When a write returns to its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicationMode {
    /// At the primary's commit; the standby follows when it can (far AZ).
    #[default]
    Async,
    /// Once a standby acknowledged the change, or the timeout passed.
    Sync,
}

/// The primary's settings (the `config` table of the db app).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrimaryConfig {
    /// Where standbys connect.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub mode: ReplicationMode,
    /// How long a `sync` write waits for an ack.
    #[serde(default = "default_sync_timeout_ms")]
    pub sync_timeout_ms: u64,
    /// The most changes in one message.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// A heartbeat after this long without changes to send.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// How often a sender looks for changes written by other connections.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// A standby silent (no hello, no ack) this long, or not taking our
    /// writes, is dropped.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
}

/// Where standbys connect: TCP 3322, unassigned in the IANA registry (the
/// copy Wireshark ships, /usr/share/wireshark/services) and bound to no
/// dissector (`tshark -G decodes`), so a capture shows the change log as
/// TCP payload. On 3306, MySQL's port, Wireshark read it as MySQL and
/// called frames of every capture with an order malformed.
pub const REPLICATION_PORT: u16 = 3322;

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], REPLICATION_PORT))
}
fn default_sync_timeout_ms() -> u64 {
    1000
}
fn default_batch() -> usize {
    256
}
fn default_heartbeat_ms() -> u64 {
    1000
}
fn default_poll_ms() -> u64 {
    200
}
fn default_idle_timeout_ms() -> u64 {
    5000
}

impl Default for PrimaryConfig {
    fn default() -> Self {
        PrimaryConfig {
            listen: default_listen(),
            mode: ReplicationMode::default(),
            sync_timeout_ms: default_sync_timeout_ms(),
            batch: default_batch(),
            heartbeat_ms: default_heartbeat_ms(),
            poll_ms: default_poll_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
        }
    }
}

/// What happened to a write's change on its way to the standby.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "replication", rename_all = "snake_case")]
pub enum Replicated {
    /// The operation changed nothing (a replay, a conflict, sold out).
    NoChange,
    /// `async` mode: committed here; the standby will follow.
    Async,
    /// `sync` mode: a standby holds it; waited this long.
    Acked { wait_ms: u64 },
    /// `sync` mode: no ack in time. Committed on the primary only.
    TimedOut { waited_ms: u64 },
}

/// A write's answer and its replication.
#[derive(Debug, Clone, PartialEq)]
pub struct Written<T> {
    pub value: T,
    /// The change it committed, if it changed anything.
    pub seq: Option<u64>,
    pub replication: Replicated,
}

/// The primary.
pub struct Primary {
    path: PathBuf,
    config: PrimaryConfig,
    db: Arc<Mutex<Db>>,
    /// The last seq committed through `db`.
    head: Arc<watch::Sender<u64>>,
    /// The highest seq any standby acknowledged.
    acked: watch::Sender<u64>,
    /// The oldest change no standby acknowledged: (seq, commit Unix ms).
    behind: Arc<Mutex<Option<(u64, u64)>>>,
    next_conn: AtomicU64,
    counters: Mutex<Counters>,
}

#[derive(Default)]
struct Counters {
    writes: u64,
    sync_acked: u64,
    sync_timeouts: u64,
    sync_wait_ms_max: u64,
    connections: u64,
    disconnects: BTreeMap<&'static str, u64>,
    standbys: BTreeMap<u64, StandbyView>,
}

/// What the primary reports of its replication (`replication` in `d11
/// show vm-db`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrimaryReport {
    /// `primary`.
    pub role: String,
    pub mode: ReplicationMode,
    /// The last change committed here, and the last a standby acknowledged.
    pub seq: u64,
    pub acked: u64,
    pub lag_changes: u64,
    pub lag_ms: u64,
    pub standbys: Vec<StandbyLink>,
    pub writes: u64,
    pub sync_acked: u64,
    pub sync_timeouts: u64,
    pub sync_timeout_ms: u64,
    pub sync_wait_ms_max: u64,
    pub connections: u64,
    /// Standby connections ended, by reason.
    pub disconnects: BTreeMap<String, u64>,
}

/// One connected standby, as the primary reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StandbyLink {
    pub name: String,
    pub peer: String,
    pub connected_ms: u64,
    pub sent: u64,
    pub acked: u64,
    pub lag_changes: u64,
    pub lag_ms: u64,
}

/// One connected standby, as the primary sees it.
struct StandbyView {
    peer: SocketAddr,
    name: String,
    since: Instant,
    sent: u64,
    acked: u64,
    /// (seq, commit Unix ms) of changes sent and not yet acknowledged.
    unacked: VecDeque<(u64, u64)>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Raises a watched mark to `seq` (never lowers it).
fn raise(mark: &watch::Sender<u64>, seq: u64) {
    mark.send_if_modified(|m| {
        let newer = seq > *m;
        if newer {
            *m = seq;
        }
        newer
    });
}

/// Aborts a task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);
impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Primary {
    /// Opens (or creates) the primary's file.
    pub fn open(path: &Path, config: PrimaryConfig) -> Result<Arc<Primary>, DbError> {
        let mut db = Db::open(path)?;
        let head = Arc::new(watch::Sender::new(db.head()?));
        let behind = Arc::new(Mutex::new(db.change_at_ms(1)?.map(|at| (1, at))));
        let (hook_head, hook_behind) = (head.clone(), behind.clone());
        db.set_commit_hook(Arc::new(move |seq| {
            let mut b = hook_behind.lock().unwrap_or_else(|e| e.into_inner());
            if b.is_none() {
                *b = Some((seq, now_ms()));
            }
            drop(b);
            raise(&hook_head, seq);
        }));
        Ok(Arc::new(Primary {
            path: path.to_path_buf(),
            config,
            db: Arc::new(Mutex::new(db)),
            head,
            acked: watch::Sender::new(0),
            behind,
            next_conn: AtomicU64::new(1),
            counters: Mutex::new(Counters::default()),
        }))
    }

    pub fn config(&self) -> &PrimaryConfig {
        &self.config
    }

    /// Runs `f` (one or more [`Db`] operations) and, in `sync` mode, waits
    /// for a standby's ack of what it committed.
    ///
    /// SQLite runs on the caller's thread, in the app's one event loop: a
    /// write is tens of µs (WAL, `synchronous=NORMAL`: no fsync but at a
    /// checkpoint), and writes are serialised anyway, so a handoff to a
    /// blocking pool cost more than it spared (docs/db.md).
    ///
    /// ```ignore
    /// let w = primary.write(move |db| db.stock_take(&order, "book", 1, Some(v))).await?;
    /// ```
    pub async fn write<T>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<T, DbError>,
    ) -> Result<Written<T>, DbError> {
        let (value, seq) = {
            let mut db = self.db.lock().unwrap_or_else(|e| e.into_inner());
            db.take_last_seq();
            let value = f(&mut db)?;
            (value, db.take_last_seq())
        };
        self.lock().writes += 1;
        let replication = match (seq, self.config.mode) {
            (None, _) => Replicated::NoChange,
            (Some(_), ReplicationMode::Async) => Replicated::Async,
            (Some(seq), ReplicationMode::Sync) => self.wait_ack(seq).await,
        };
        Ok(Written {
            value,
            seq,
            replication,
        })
    }

    /// Runs a read (on the caller's thread, as [`Self::write`]).
    pub fn read<T>(&self, f: impl FnOnce(&Db) -> Result<T, DbError>) -> Result<T, DbError> {
        f(&self.db.lock().unwrap_or_else(|e| e.into_inner()))
    }

    async fn wait_ack(&self, seq: u64) -> Replicated {
        let started = Instant::now();
        let mut acked = self.acked.subscribe();
        let limit = Duration::from_millis(self.config.sync_timeout_ms);
        let got = tokio::time::timeout(limit, acked.wait_for(|a| *a >= seq)).await;
        let ms = started.elapsed().as_millis() as u64;
        let mut c = self.lock();
        c.sync_wait_ms_max = c.sync_wait_ms_max.max(ms);
        if matches!(got, Ok(Ok(_))) {
            c.sync_acked += 1;
            Replicated::Acked { wait_ms: ms }
        } else {
            c.sync_timeouts += 1;
            warn!(
                seq,
                waited_ms = ms,
                "sync replication: no standby acknowledged change {seq} in {ms} ms; it is committed on the primary only"
            );
            Replicated::TimedOut { waited_ms: ms }
        }
    }

    /// The highest seq a standby acknowledged.
    pub fn acked(&self) -> u64 {
        *self.acked.borrow()
    }

    /// Binds `config.listen` and serves standbys until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let listener = TcpListener::bind(self.config.listen).await?;
        self.serve(listener, shutdown).await
    }

    /// Serves standbys on `listener` until `shutdown`; then drops them.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        info!(listen = %listener.local_addr()?, mode = ?self.config.mode, "replication: serving standbys");
        let mut sessions = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        sessions.spawn(self.clone().session(stream, peer));
                    }
                    Err(e) => {
                        warn!("replication: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        sessions.shutdown().await;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn session(self: Arc<Self>, stream: TcpStream, peer: SocketAddr) {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        self.lock().connections += 1;
        let result = self.replicate(id, stream, peer).await;
        let mut c = self.lock();
        let name = c.standbys.remove(&id).map(|v| v.name).unwrap_or_default();
        let e = match result {
            Ok(()) => return,
            Err(e) => e,
        };
        *c.disconnects.entry(e.reason()).or_default() += 1;
        drop(c);
        match e {
            ReplError::Closed => info!(%peer, standby = %name, "replication: standby disconnected"),
            e => {
                warn!(%peer, standby = %name, reason = e.reason(), "replication: closing the connection: {e}")
            }
        }
    }

    async fn replicate(
        self: &Arc<Self>,
        id: u64,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Result<(), ReplError> {
        let _ = stream.set_nodelay(true);
        let idle = Duration::from_millis(self.config.idle_timeout_ms);
        let idle_err = || ReplError::Idle {
            ms: self.config.idle_timeout_ms,
        };
        let (rd, mut wr) = stream.into_split();
        let mut rd = BufReader::new(rd);
        let hello = tokio::time::timeout(idle, read_msg(&mut rd))
            .await
            .map_err(|_| idle_err())??;
        let Msg::Hello { standby, after } = hello else {
            return Err(ReplError::Unexpected {
                expected: "hello",
                got: hello.kind(),
            });
        };
        let db = Db::open(&self.path)?;
        let head = db.head()?;
        let reader = Arc::new(Mutex::new(db));
        if after > head {
            return Err(ReplError::AheadOfPrimary { after, head });
        }
        info!(%peer, %standby, after, head, "replication: standby connected");
        self.lock().standbys.insert(
            id,
            StandbyView {
                peer,
                name: standby,
                since: Instant::now(),
                sent: after,
                acked: after,
                unacked: VecDeque::new(),
            },
        );
        self.ack(after, &reader)?;
        let sent = Arc::new(AtomicU64::new(after));
        let mut acks = AbortOnDrop(tokio::spawn(self.clone().read_acks(
            id,
            reader.clone(),
            rd,
            sent.clone(),
            after,
        )));
        let mut head_rx = self.head.subscribe();
        let mut last_send = Instant::now();
        let heartbeat = Duration::from_millis(self.config.heartbeat_ms);
        let poll = Duration::from_millis(self.config.poll_ms);
        loop {
            let from = sent.load(Ordering::Acquire);
            let (head, changes) = {
                let db = reader.lock().unwrap_or_else(|e| e.into_inner());
                let changes = db.changes_within(from, self.config.batch.max(1), MAX_FRAME / 2)?;
                (db.head()?, changes)
            };
            raise(&self.head, head);
            let msg = if let Some(last) = changes.last() {
                let last = last.seq;
                {
                    let mut c = self.lock();
                    if let Some(v) = c.standbys.get_mut(&id) {
                        v.sent = last;
                        v.unacked.extend(changes.iter().map(|c| (c.seq, c.at_ms)));
                    }
                }
                sent.store(last, Ordering::Release);
                debug!(%peer, from = from + 1, to = last, "replication: sending changes");
                Some(Msg::Changes { head, changes })
            } else if last_send.elapsed() >= heartbeat {
                Some(Msg::Heartbeat { head })
            } else {
                None
            };
            if let Some(msg) = msg {
                // A full batch, or one cut short to fit a message.
                let more = matches!(&msg, Msg::Changes { head, changes } if changes.last().is_some_and(|c| c.seq < *head));
                tokio::time::timeout(idle, write_msg(&mut wr, &msg))
                    .await
                    .map_err(|_| idle_err())??;
                last_send = Instant::now();
                if more {
                    continue;
                }
            }
            let wait = poll.min(heartbeat.saturating_sub(last_send.elapsed()));
            tokio::select! {
                _ = head_rx.changed() => {}
                _ = tokio::time::sleep(wait) => {}
                done = &mut acks.0 => {
                    return match done {
                        Ok(r) => r,
                        Err(e) => Err(DbError::Task(e.to_string()).into()),
                    };
                }
            }
        }
    }

    /// Raises the acked mark (never lowers it) and finds the oldest change
    /// still unacknowledged: `seq + 1`, if committed (else the commit hook
    /// sets it when it is; the lookup holds the lock so neither is lost).
    fn ack(&self, seq: u64, reader: &Mutex<Db>) -> Result<(), DbError> {
        raise(&self.acked, seq);
        let mut b = self.behind.lock().unwrap_or_else(|e| e.into_inner());
        if b.is_some_and(|(s, _)| s <= seq) {
            let db = reader.lock().unwrap_or_else(|e| e.into_inner());
            *b = db.change_at_ms(seq + 1)?.map(|at| (seq + 1, at));
        }
        Ok(())
    }

    /// Reads the standby's acks until it closes or breaks the protocol.
    async fn read_acks(
        self: Arc<Self>,
        id: u64,
        reader: Arc<Mutex<Db>>,
        mut rd: BufReader<OwnedReadHalf>,
        sent: Arc<AtomicU64>,
        mut prev: u64,
    ) -> Result<(), ReplError> {
        let idle = Duration::from_millis(self.config.idle_timeout_ms);
        loop {
            let msg = tokio::time::timeout(idle, read_msg(&mut rd))
                .await
                .map_err(|_| ReplError::Idle {
                    ms: self.config.idle_timeout_ms,
                })??;
            let Msg::Ack { seq } = msg else {
                return Err(ReplError::Unexpected {
                    expected: "ack",
                    got: msg.kind(),
                });
            };
            check_ack(seq, sent.load(Ordering::Acquire), prev)?;
            prev = seq;
            if let Some(v) = self.lock().standbys.get_mut(&id) {
                v.acked = seq;
                while v.unacked.front().is_some_and(|(s, _)| *s <= seq) {
                    v.unacked.pop_front();
                }
            }
            self.ack(seq, &reader)?;
        }
    }

    /// What the control socket reports.
    pub fn status(&self) -> PrimaryReport {
        let head = *self.head.borrow();
        let acked = self.acked();
        let now = now_ms();
        let lag_ms = match *self.behind.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((seq, at)) if seq > acked => now.saturating_sub(at),
            _ => 0,
        };
        let c = self.lock();
        let standbys = c
            .standbys
            .values()
            .map(|v| StandbyLink {
                name: v.name.clone(),
                peer: v.peer.to_string(),
                connected_ms: v.since.elapsed().as_millis() as u64,
                sent: v.sent,
                acked: v.acked,
                lag_changes: head.saturating_sub(v.acked),
                lag_ms: v
                    .unacked
                    .front()
                    .map(|(_, at)| now.saturating_sub(*at))
                    .unwrap_or(0),
            })
            .collect();
        PrimaryReport {
            role: "primary".into(),
            mode: self.config.mode,
            seq: head,
            acked,
            lag_changes: head.saturating_sub(acked),
            lag_ms,
            standbys,
            writes: c.writes,
            sync_acked: c.sync_acked,
            sync_timeouts: c.sync_timeouts,
            sync_timeout_ms: self.config.sync_timeout_ms,
            sync_wait_ms_max: c.sync_wait_ms_max,
            connections: c.connections,
            disconnects: c
                .disconnects
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
        }
    }
}
