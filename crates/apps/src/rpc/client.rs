//! One RPC connection to a provider (Dubbo's `ExchangeClient`): many calls
//! in flight at once, each matched to its response by request id.
//!
//! - A call not answered within its timeout fails with `30 client timeout`
//!   (its late response, if any, is dropped).
//! - A heartbeat goes out every `heartbeat_ms`; when nothing has come back
//!   for three heartbeats the connection is declared dead.
//! - A dead or closed connection fails every pending call with `90 client
//!   error`; the next call connects again (reconnect on demand).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::{debug, info};

use super::codec::{
    decode_response, next_batch, Decoder, Fault, Frame, Request, Status, DEFAULT_MAX_BODY,
};
use super::hessian::Value;

/// A client connection's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// One connection attempt gives up after this long.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// A heartbeat every this long; three without any answer kill the connection.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// The call timeout when the caller names none.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// The largest response body read.
    #[serde(default = "default_max_body")]
    pub max_body: u32,
}

fn default_connect_timeout_ms() -> u64 {
    1000
}
fn default_heartbeat_ms() -> u64 {
    60_000
}
fn default_timeout_ms() -> u64 {
    1000
}
fn default_max_body() -> u32 {
    DEFAULT_MAX_BODY
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            connect_timeout_ms: default_connect_timeout_ms(),
            heartbeat_ms: default_heartbeat_ms(),
            timeout_ms: default_timeout_ms(),
            max_body: default_max_body(),
        }
    }
}

type Pending = Mutex<HashMap<u64, oneshot::Sender<Result<Value, Fault>>>>;

/// A client of one provider address; connects on first use and again after a loss.
pub struct Client {
    addr: SocketAddr,
    config: ClientConfig,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    next_id: Arc<AtomicU64>,
    active: AtomicUsize,
    counters: Arc<Mutex<Counters>>,
}

/// What an RPC client reports of its connection to one provider.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct ClientReport {
    pub addr: String,
    /// Calls in flight.
    pub active: usize,
    pub connects: u64,
    pub connect_failures: u64,
    pub connections_lost: u64,
    pub calls: u64,
    pub ok: u64,
    /// Failed calls, by status name.
    pub faults: std::collections::BTreeMap<String, u64>,
    pub heartbeats_sent: u64,
    pub heartbeat_replies: u64,
}

#[derive(Default)]
struct Counters {
    connects: u64,
    connect_failures: u64,
    calls: u64,
    ok: u64,
    faults: std::collections::BTreeMap<&'static str, u64>,
    heartbeats_sent: u64,
    heartbeat_replies: u64,
    connections_lost: u64,
}

/// A live connection: its writer's queue, the calls awaiting answers, its tasks.
struct Conn {
    tx: mpsc::UnboundedSender<Frame>,
    pending: Arc<Pending>,
    dead: Arc<AtomicBool>,
    _tasks: JoinSet<()>,
}

impl Client {
    /// A client of `addr`; nothing is connected until the first call.
    pub fn new(addr: SocketAddr, config: ClientConfig) -> Client {
        Client {
            addr,
            config,
            conn: tokio::sync::Mutex::new(None),
            next_id: Arc::new(AtomicU64::new(1)),
            active: AtomicUsize::new(0),
            counters: Arc::default(),
        }
    }

    /// A client of `addr`, connected now.
    pub async fn connect(addr: SocketAddr, config: ClientConfig) -> Result<Client, Fault> {
        let c = Client::new(addr, config);
        c.connection().await?;
        Ok(c)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Calls not yet answered (for the least-active balancer).
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// True when a connection is up (no call is needed to know).
    pub async fn is_connected(&self) -> bool {
        matches!(&*self.conn.lock().await, Some(c) if !c.dead.load(Ordering::Relaxed))
    }

    fn count(&self, f: impl FnOnce(&mut Counters)) {
        f(&mut self.counters.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// The live connection, connecting if there is none.
    async fn connection(&self) -> Result<Arc<Conn>, Fault> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = &*slot {
            if !c.dead.load(Ordering::Relaxed) {
                return Ok(c.clone());
            }
        }
        *slot = None;
        let t = Duration::from_millis(self.config.connect_timeout_ms);
        let stream = match tokio::time::timeout(t, TcpStream::connect(self.addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                self.count(|c| c.connect_failures += 1);
                return Err(Fault::new(
                    Status::ClientError,
                    format!("connect to {}: {e}", self.addr),
                ));
            }
            Err(_) => {
                self.count(|c| c.connect_failures += 1);
                return Err(Fault::new(
                    Status::ClientError,
                    format!("connect to {}: no answer in {t:?}", self.addr),
                ));
            }
        };
        let _ = stream.set_nodelay(true);
        self.count(|c| c.connects += 1);
        debug!(addr = %self.addr, "rpc client connected");
        let conn = Arc::new(self.start(stream));
        *slot = Some(conn.clone());
        Ok(conn)
    }

    fn start(&self, stream: TcpStream) -> Conn {
        let (mut rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
        let pending: Arc<Pending> = Arc::default();
        let dead = Arc::new(AtomicBool::new(false));
        let last_read = Arc::new(Mutex::new(Instant::now()));
        let mut tasks = JoinSet::new();
        let addr = self.addr;

        // Fails every waiting call once the connection is gone.
        let fail_all = {
            let (pending, dead, counters) = (pending.clone(), dead.clone(), self.counters.clone());
            move |why: String| {
                if dead.swap(true, Ordering::Relaxed) {
                    return;
                }
                info!(%addr, "rpc connection lost: {why}");
                counters
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .connections_lost += 1;
                let waiting: Vec<_> = pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .drain()
                    .collect();
                for (_, w) in waiting {
                    let _ = w.send(Err(Fault::new(
                        Status::ClientError,
                        format!("connection to {addr} lost: {why}"),
                    )));
                }
            }
        };

        let fail = fail_all.clone();
        tasks.spawn(async move {
            let mut buf = Vec::new();
            while next_batch(&mut rx, &mut buf).await {
                if let Err(e) = wr.write_all(&buf).await {
                    return fail(format!("write: {e}"));
                }
            }
        });

        let (fail, pending_r, last, counters) = (
            fail_all.clone(),
            pending.clone(),
            last_read.clone(),
            self.counters.clone(),
        );
        let (reply_tx, max_body) = (tx.clone(), self.config.max_body);
        tasks.spawn(async move {
            let mut decoder = Decoder::new(max_body);
            let mut buf = vec![0; 64 * 1024];
            loop {
                let n = match rd.read(&mut buf).await {
                    Ok(0) => return fail("closed by the server".into()),
                    Ok(n) => n,
                    Err(e) => return fail(format!("read: {e}")),
                };
                *last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                decoder.push(&buf[..n]);
                loop {
                    let f = match decoder.next_frame() {
                        Ok(Some(f)) => f,
                        Ok(None) => break,
                        Err(e) if e.is_fatal() => return fail(e.to_string()),
                        Err(e) => {
                            // An oversized or foreign response: its caller learns why.
                            if let Some(h) = e.header().filter(|h| !h.request) {
                                if let Some(w) = pending_r
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .remove(&h.request_id)
                                {
                                    let _ =
                                        w.send(Err(Fault::new(Status::BadResponse, e.to_string())));
                                }
                            }
                            continue;
                        }
                    };
                    let h = f.header;
                    if h.event {
                        if h.request {
                            let _ = reply_tx.send(Frame::heartbeat_reply(h.request_id));
                        } else {
                            counters
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .heartbeat_replies += 1;
                        }
                        continue;
                    }
                    if h.request {
                        continue;
                    }
                    let waiter = pending_r
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&h.request_id);
                    if let Some(w) = waiter {
                        let r = decode_response(h.status, &f.body).unwrap_or_else(|e| {
                            Err(Fault::new(
                                Status::BadResponse,
                                format!("response {}: {e}", h.request_id),
                            ))
                        });
                        let _ = w.send(r);
                    }
                }
            }
        });

        let (fail, hb_tx, ids, counters) = (
            fail_all,
            tx.clone(),
            self.next_id.clone(),
            self.counters.clone(),
        );
        let every = Duration::from_millis(self.config.heartbeat_ms.max(1));
        tasks.spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tick.tick().await;
                let silent = last_read
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .elapsed();
                if silent > every * 3 {
                    return fail(format!("no answer for {silent:?} (3 heartbeats)"));
                }
                counters
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .heartbeats_sent += 1;
                if hb_tx
                    .send(Frame::heartbeat(ids.fetch_add(1, Ordering::Relaxed)))
                    .is_err()
                {
                    return;
                }
            }
        });

        Conn {
            tx,
            pending,
            dead,
            _tasks: tasks,
        }
    }

    /// Calls `request` and waits for its answer at most `timeout` (the
    /// config's `timeout_ms` when `None`), which is also sent to the server
    /// as the `timeout` attachment.
    pub async fn call(
        &self,
        mut request: Request,
        timeout: Option<Duration>,
    ) -> Result<Value, Fault> {
        let timeout = timeout.unwrap_or(Duration::from_millis(self.config.timeout_ms));
        request
            .attachments
            .entry("timeout".into())
            .or_insert_with(|| timeout.as_millis().to_string());
        self.count(|c| c.calls += 1);
        self.active.fetch_add(1, Ordering::Relaxed);
        let started = tokio::time::Instant::now();
        let r = async {
            let conn = tokio::time::timeout(timeout, self.connection())
                .await
                .map_err(|_| {
                    Fault::new(
                        Status::ClientTimeout,
                        format!("connect to {} took longer than {timeout:?}", self.addr),
                    )
                })??;
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let (w, answer) = oneshot::channel();
            conn.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, w);
            if conn.dead.load(Ordering::Relaxed)
                || conn.tx.send(Frame::request(id, &request)).is_err()
            {
                conn.pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                return Err(Fault::new(
                    Status::ClientError,
                    format!("connection to {} lost", self.addr),
                ));
            }
            match tokio::time::timeout_at(started + timeout, answer).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err(Fault::new(
                    Status::ClientError,
                    format!("connection to {} lost", self.addr),
                )),
                Err(_) => {
                    conn.pending
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                    Err(Fault::new(
                        Status::ClientTimeout,
                        format!(
                            "{}.{} on {}: no answer in {timeout:?}",
                            request.service, request.method, self.addr
                        ),
                    ))
                }
            }
        }
        .await;
        self.active.fetch_sub(1, Ordering::Relaxed);
        self.count(|c| match &r {
            Ok(_) => c.ok += 1,
            Err(f) => *c.faults.entry(f.status.name()).or_default() += 1,
        });
        r
    }

    /// Counters for the control socket.
    pub fn status(&self) -> ClientReport {
        let c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        ClientReport {
            addr: self.addr.to_string(),
            active: self.active(),
            connects: c.connects,
            connect_failures: c.connect_failures,
            connections_lost: c.connections_lost,
            calls: c.calls,
            ok: c.ok,
            faults: c.faults.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            heartbeats_sent: c.heartbeats_sent,
            heartbeat_replies: c.heartbeat_replies,
        }
    }
}
