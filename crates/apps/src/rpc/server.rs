//! The RPC server: serves registered `service.method` handlers on a TCP
//! listener (Dubbo's `DubboProtocol` export over Netty, here tokio).
//!
//! Per connection one task reads and decodes frames, each request runs in
//! its own task, and one writer task sends whatever is ready, so many
//! requests are in flight at once and responses leave in the order they
//! finish, matched by request id.
//!
//! - A heartbeat (an event request) is answered at once.
//! - A connection from which nothing (not even a heartbeat) arrived for
//!   `idle_timeout_ms` is closed (Dubbo: three missed heartbeats).
//! - An unknown service or method is answered `60 service not found`; an
//!   unreadable body, an oversized body or an unknown serialization id
//!   `40 bad request` (the body is skipped, the connection goes on); a
//!   bad magic closes the connection. Other connections never notice.
//! - A handler slower than the call's `timeout` attachment (or
//!   `handler_timeout_ms`) is answered `31 server timeout`; one that
//!   panics, `80 server error`.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::codec::{
    next_batch, CodecError, Decoder, Fault, Frame, Request, Status, DEFAULT_MAX_BODY,
};
use super::hessian::Value;

/// A boxed future a handler returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
/// A `service.method` implementation.
pub type Handler = Arc<dyn Fn(Call) -> BoxFuture<Result<Value, Fault>> + Send + Sync>;

/// What a handler gets: the request and who sent it.
#[derive(Debug, Clone)]
pub struct Call {
    pub request: Request,
    pub peer: SocketAddr,
}

impl Call {
    /// Argument `i`, or a `40 bad request` fault naming it.
    pub fn arg(&self, i: usize) -> Result<&Value, Fault> {
        self.request.args.get(i).ok_or_else(|| {
            Fault::new(
                Status::BadRequest,
                format!(
                    "{}.{} needs argument {i}",
                    self.request.service, self.request.method
                ),
            )
        })
    }

    /// Argument `i` as a string, or a `40 bad request` fault.
    pub fn str_arg(&self, i: usize) -> Result<&str, Fault> {
        self.arg(i)?.as_str().ok_or_else(|| {
            Fault::new(
                Status::BadRequest,
                format!("argument {i} of {} must be a string", self.request.method),
            )
        })
    }

    /// Argument `i` as an integer, or a `40 bad request` fault.
    pub fn int_arg(&self, i: usize) -> Result<i64, Fault> {
        self.arg(i)?.as_i64().ok_or_else(|| {
            Fault::new(
                Status::BadRequest,
                format!("argument {i} of {} must be an integer", self.request.method),
            )
        })
    }
}

/// The handlers a server exports, by service then method.
#[derive(Clone, Default)]
pub struct Services {
    handlers: HashMap<String, HashMap<String, Handler>>,
}

impl Services {
    pub fn new() -> Services {
        Services::default()
    }

    /// Exports `service.method`, replacing an earlier handler of that name.
    pub fn method<F, Fut>(&mut self, service: &str, method: &str, f: F) -> &mut Services
    where
        F: Fn(Call) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, Fault>> + Send + 'static,
    {
        let h: Handler = Arc::new(move |call| Box::pin(f(call)));
        self.handlers
            .entry(service.into())
            .or_default()
            .insert(method.into(), h);
        self
    }

    /// Adds every handler of `other`.
    pub fn merge(&mut self, other: Services) -> &mut Services {
        for (s, methods) in other.handlers {
            self.handlers.entry(s).or_default().extend(methods);
        }
        self
    }

    /// The handler, or `60 service not found` naming what is missing.
    pub fn find(&self, service: &str, method: &str) -> Result<Handler, Fault> {
        let methods = self.handlers.get(service).ok_or_else(|| {
            Fault::new(
                Status::ServiceNotFound,
                format!("no service {service:?} here"),
            )
        })?;
        methods.get(method).cloned().ok_or_else(|| {
            Fault::new(
                Status::ServiceNotFound,
                format!("service {service:?} has no method {method:?}"),
            )
        })
    }

    /// The exported names, `service.method`, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .handlers
            .iter()
            .flat_map(|(s, m)| m.keys().map(move |m| format!("{s}.{m}")))
            .collect();
        v.sort();
        v
    }
}

/// The server's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Where to listen (Dubbo's default port is 20880).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The largest body read; larger ones are answered `40`.
    #[serde(default = "default_max_body")]
    pub max_body: u32,
    /// A connection silent this long is closed (3 × the clients' heartbeat).
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// How long a handler may run when the call names no `timeout`.
    #[serde(default = "default_handler_timeout_ms")]
    pub handler_timeout_ms: u64,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 20880))
}
fn default_max_body() -> u32 {
    DEFAULT_MAX_BODY
}
fn default_idle_timeout_ms() -> u64 {
    180_000
}
fn default_handler_timeout_ms() -> u64 {
    10_000
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: default_listen(),
            max_body: default_max_body(),
            idle_timeout_ms: default_idle_timeout_ms(),
            handler_timeout_ms: default_handler_timeout_ms(),
        }
    }
}

/// A running RPC server.
pub struct Server {
    name: String,
    config: ServerConfig,
    services: Services,
    listening: OnceLock<SocketAddr>,
    started: Instant,
    counters: Mutex<Counters>,
}

/// What an RPC server reports (under `server` in a service's report).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct ServerReport {
    pub name: String,
    pub listen: Option<String>,
    pub uptime_ms: u64,
    /// `service.method` names it answers.
    pub services: Vec<String>,
    pub connections: u64,
    pub active_connections: u64,
    pub idle_closed: u64,
    pub requests: u64,
    pub in_flight: u64,
    pub heartbeats: u64,
    /// Responses sent, by status name.
    pub responses: BTreeMap<String, u64>,
    /// Frames refused, by reason.
    pub bad_frames: BTreeMap<String, u64>,
    /// Calls answered, by `service.method`.
    pub calls: BTreeMap<String, u64>,
}

#[derive(Default)]
struct Counters {
    connections: u64,
    active_connections: u64,
    idle_closed: u64,
    requests: u64,
    in_flight: u64,
    heartbeats: u64,
    /// Responses sent, by status name.
    responses: BTreeMap<&'static str, u64>,
    /// Frames refused, by reason.
    bad_frames: BTreeMap<&'static str, u64>,
    /// Calls answered, by `service.method`.
    calls: BTreeMap<String, u64>,
}

/// Answers that leave a connection's writer.
type Outbox = mpsc::UnboundedSender<Frame>;

impl Server {
    pub fn new(name: &str, config: ServerConfig, services: Services) -> Arc<Server> {
        Arc::new(Server {
            name: name.into(),
            config,
            services,
            listening: OnceLock::new(),
            started: Instant::now(),
            counters: Mutex::default(),
        })
    }

    /// Binds `config.listen`.
    pub async fn bind(&self) -> std::io::Result<TcpListener> {
        TcpListener::bind(self.config.listen).await
    }

    /// The address `serve` listens on (once it runs).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listening.get().copied()
    }

    /// Serves `listener` until the task is dropped; dropping it closes
    /// every connection (a killed provider).
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        if let Ok(a) = listener.local_addr() {
            let _ = self.listening.set(a);
            info!(server = %self.name, addr = %a, services = ?self.services.names(), "rpc server listening");
        }
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        conns.spawn(self.clone().connection(stream, peer));
                    }
                    Err(e) => {
                        warn!(server = %self.name, "accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    }

    fn count(&self, f: impl FnOnce(&mut Counters)) {
        f(&mut self.counters.lock().unwrap_or_else(|e| e.into_inner()));
    }

    async fn connection(self: Arc<Self>, stream: TcpStream, peer: SocketAddr) {
        self.count(|c| {
            c.connections += 1;
            c.active_connections += 1;
        });
        debug!(server = %self.name, %peer, "rpc connection");
        let (mut rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
        // The writer: sends what is ready, many frames per write.
        let writer = tokio::spawn(async move {
            let mut buf = Vec::new();
            while next_batch(&mut rx, &mut buf).await {
                if wr.write_all(&buf).await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        });
        let mut requests = JoinSet::new();
        let why = self.read_loop(&mut rd, peer, &tx, &mut requests).await;
        debug!(server = %self.name, %peer, "rpc connection closed: {why}");
        // Answers still being made go out before the writer stops.
        while requests.join_next().await.is_some() {}
        drop(tx);
        let _ = writer.await;
        self.count(|c| c.active_connections -= 1);
    }

    /// Reads until the peer closes, goes idle or breaks the framing; says why.
    async fn read_loop(
        self: &Arc<Self>,
        rd: &mut tokio::net::tcp::OwnedReadHalf,
        peer: SocketAddr,
        tx: &Outbox,
        requests: &mut JoinSet<()>,
    ) -> String {
        let idle = Duration::from_millis(self.config.idle_timeout_ms);
        let mut decoder = Decoder::new(self.config.max_body);
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = tokio::select! {
                r = tokio::time::timeout(idle, rd.read(&mut buf)) => match r {
                    Err(_) => {
                        self.count(|c| c.idle_closed += 1);
                        info!(server = %self.name, %peer, "rpc connection idle for {idle:?}: closing");
                        return format!("idle for {idle:?}");
                    }
                    Ok(Ok(0)) => return "closed by peer".into(),
                    Ok(Ok(n)) => n,
                    Ok(Err(e)) => return e.to_string(),
                },
                Some(_) = requests.join_next(), if !requests.is_empty() => continue,
            };
            decoder.push(&buf[..n]);
            loop {
                match decoder.next_frame() {
                    Ok(Some(f)) => self.on_frame(f, peer, tx, requests),
                    Ok(None) => break,
                    Err(e) => {
                        let reason = match e {
                            CodecError::BadMagic { .. } => "bad_magic",
                            CodecError::TooLarge { .. } => "too_large",
                            CodecError::UnknownSerialization { .. } => "unknown_serialization",
                        };
                        self.count(|c| *c.bad_frames.entry(reason).or_default() += 1);
                        warn!(server = %self.name, %peer, "rpc frame refused: {e}");
                        if let Some(h) = e.header().filter(|h| h.request && h.two_way) {
                            self.answer(
                                tx,
                                h.request_id,
                                Err(Fault::new(Status::BadRequest, e.to_string())),
                            );
                        }
                        if e.is_fatal() {
                            return e.to_string();
                        }
                    }
                }
            }
        }
    }

    fn answer(&self, tx: &Outbox, id: u64, result: Result<Value, Fault>) {
        let status = result.as_ref().map_or_else(|f| f.status, |_| Status::Ok);
        self.count(|c| *c.responses.entry(status.name()).or_default() += 1);
        let _ = tx.send(Frame::response(id, &result));
    }

    fn on_frame(
        self: &Arc<Self>,
        f: Frame,
        peer: SocketAddr,
        tx: &Outbox,
        requests: &mut JoinSet<()>,
    ) {
        let h = f.header;
        if !h.request {
            // A heartbeat reply to nothing we sent, or a stray response.
            return;
        }
        if h.event {
            self.count(|c| c.heartbeats += 1);
            if h.two_way {
                let _ = tx.send(Frame::heartbeat_reply(h.request_id));
            }
            return;
        }
        self.count(|c| c.requests += 1);
        let request = match Request::decode(&f.body) {
            Ok(r) => r,
            Err(e) => {
                self.count(|c| *c.bad_frames.entry("bad_body").or_default() += 1);
                warn!(server = %self.name, %peer, id = h.request_id, "rpc request body refused: {e}");
                if h.two_way {
                    self.answer(
                        tx,
                        h.request_id,
                        Err(Fault::new(
                            Status::BadRequest,
                            format!("request {}: {e}", h.request_id),
                        )),
                    );
                }
                return;
            }
        };
        let name = format!("{}.{}", request.service, request.method);
        let handler = match self.services.find(&request.service, &request.method) {
            Ok(h) => h,
            Err(fault) => {
                debug!(server = %self.name, %peer, "{fault}");
                if h.two_way {
                    self.answer(tx, h.request_id, Err(fault));
                }
                return;
            }
        };
        let timeout = request
            .attachments
            .get("timeout")
            .and_then(|t| t.parse().ok())
            .unwrap_or(self.config.handler_timeout_ms);
        let timeout = Duration::from_millis(timeout);
        let (server, tx) = (self.clone(), tx.clone());
        self.count(|c| c.in_flight += 1);
        requests.spawn(async move {
            let task = tokio::spawn(handler(Call { request, peer }));
            let abort = task.abort_handle();
            let result = match tokio::time::timeout(timeout, task).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => Err(Fault::new(
                    Status::ServerError,
                    format!("{name} failed: {e}"),
                )),
                Err(_) => {
                    abort.abort();
                    Err(Fault::new(
                        Status::ServerTimeout,
                        format!("{name} took longer than {timeout:?}"),
                    ))
                }
            };
            server.count(|c| {
                c.in_flight -= 1;
                *c.calls.entry(name).or_default() += 1;
            });
            if h.two_way {
                server.answer(&tx, h.request_id, result);
            }
        });
    }

    /// Counters for the control socket.
    pub fn status(&self) -> ServerReport {
        let c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let names =
            |m: &BTreeMap<&'static str, u64>| m.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        ServerReport {
            name: self.name.clone(),
            listen: self.local_addr().map(|a| a.to_string()),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            services: self.services.names(),
            connections: c.connections,
            active_connections: c.active_connections,
            idle_closed: c.idle_closed,
            requests: c.requests,
            in_flight: c.in_flight,
            heartbeats: c.heartbeats,
            responses: names(&c.responses),
            bad_frames: names(&c.bad_frames),
            calls: c.calls.clone(),
        }
    }
}
