//! A CDN cache as an app (`app = "cdn-cache"`): an edge near a carrier's
//! resolver, or the parent behind the edges. A [`Store`] behind the lab's
//! HTTPS front; what it cannot answer it asks its upstream (the parent, or
//! the origin) over HTTPS with the lab root.
//!
//! Read RFC 9111 (in [`super::store`]) and RFC 9110 § 7.6.3 (`Via`: each
//! cache adds itself, on the request it forwards and on the response).
//! Each answer says how this cache served it in `X-Cache` (`HIT from
//! edge-a2`), followed on a miss or a revalidation by what the upstream
//! said (`MISS from edge-a2, MISS from parent`), so the phone sees the
//! whole chain. Concurrent misses of one key are collapsed: the first goes
//! upstream, the others wait for it and are then served from the store
//! (nginx's `proxy_cache_lock`). A purge (`purge KEY` on the control
//! socket) forgets an object.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use d11_core::ConfigError;
use http::{request, response};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use super::origin::{Ranged, RANGE_OUTSIDE};
use super::store::{key, CacheRow, Lookup, Outcome, Store, StoreStats};
use crate::https::{Front, FrontReport, Limits};

/// `config` of an `app = "cdn-cache"` host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    #[serde(default = "super::default_listen")]
    pub listen: SocketAddr,
    /// Where misses go: the parent's or the origin's address and port.
    pub upstream: SocketAddr,
    /// The name the upstream's certificate holds (TLS SNI).
    pub upstream_name: String,
    /// The cache's name in `Via` and `X-Cache`; default the node's.
    #[serde(default)]
    pub name: Option<String>,
    /// Bytes of bodies kept (least recently used evicted).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// How long an upstream fetch may take; then 504.
    #[serde(default = "default_upstream_timeout_ms")]
    pub upstream_timeout_ms: u64,
    /// Idle connections to the upstream kept for the next fetches
    /// (HTTP/1.1 persistence, RFC 9112 § 9.3); 0: a connection per fetch.
    #[serde(default = "default_upstream_idle")]
    pub upstream_idle: usize,
    #[serde(default = "super::default_timeout_ms")]
    pub header_timeout_ms: u64,
    #[serde(default = "super::default_timeout_ms")]
    pub handshake_timeout_ms: u64,
    #[serde(default = "super::default_max_connections")]
    pub max_connections: usize,
}

fn default_max_bytes() -> usize {
    64 << 20
}
fn default_upstream_timeout_ms() -> u64 {
    5000
}
fn default_upstream_idle() -> usize {
    16
}

/// What the cache counted besides its store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamStats {
    /// Requests sent upstream (misses and revalidations).
    pub fetches: u64,
    /// Misses that waited for another request's fetch of the same key.
    pub collapsed: u64,
    /// Fetches that failed (connect, TLS, HTTP, timeout): answered 502/504.
    pub errors: u64,
    /// Connections opened to the upstream (TCP and TLS handshakes).
    #[serde(default)]
    pub connections: u64,
    /// Fetches sent on a kept connection.
    #[serde(default)]
    pub reused: u64,
    /// Kept connections the upstream had closed when one was wanted, or
    /// that failed under a request (which then went on a new one).
    #[serde(default)]
    pub stale_connections: u64,
}

/// What a cache reports on its control socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheReport {
    pub name: String,
    #[serde(flatten)]
    pub front: FrontReport,
    pub upstream: UpstreamStats,
    /// `d11 show EDGE cache`.
    pub cache: CacheTable,
}

/// The store as `d11 show EDGE cache` prints it: its bytes, its counters
/// and each object (size, freshness left, Age, hits).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheTable {
    pub bytes: usize,
    pub max_bytes: usize,
    #[serde(flatten)]
    pub stats: StoreStats,
    pub objects: Vec<CacheRow>,
}

/// A connection to the upstream: its request half and the task driving it.
struct UpstreamConn {
    sender: http1::SendRequest<Empty<Bytes>>,
    driver: tokio::task::JoinHandle<hyper::Result<http1::Parts<TokioIo<TlsStream<TcpStream>>>>>,
}

impl UpstreamConn {
    /// Closes it cleanly (close_notify and FIN, then the upstream's), in
    /// the background.
    fn retire(self) {
        drop(self.sender);
        tokio::spawn(crate::phone::close(self.driver));
    }
}

/// One cache.
pub struct Cache {
    name: String,
    settings: CacheSettings,
    store: Mutex<Store>,
    front: Arc<Front>,
    client: Arc<tokio_rustls::rustls::ClientConfig>,
    /// Keys being fetched, and how their waiters learn it is done.
    inflight: Mutex<HashMap<String, watch::Receiver<bool>>>,
    upstream: Mutex<UpstreamStats>,
    /// Connections to the upstream waiting for the next fetch.
    idle: Mutex<Vec<UpstreamConn>>,
}

/// A miss's part in the fetch of its key.
enum Flight {
    /// This request fetches; the others are told when it is done.
    Lead(watch::Sender<bool>),
    /// Another request is fetching: wait, then look again.
    Wait(watch::Receiver<bool>),
}

/// A fetch's outcome: the upstream's answer, or why there is none.
type Fetched = Result<(response::Parts, Bytes), (StatusCode, String)>;

impl Cache {
    pub fn new(
        node: &str,
        settings: CacheSettings,
        server: Arc<rustls::ServerConfig>,
        client: Arc<tokio_rustls::rustls::ClientConfig>,
    ) -> Arc<Cache> {
        let limits = Limits::from_ms(
            settings.handshake_timeout_ms,
            settings.header_timeout_ms,
            settings.max_connections,
        );
        Arc::new(Cache {
            name: settings.name.clone().unwrap_or_else(|| node.to_string()),
            store: Mutex::new(Store::new(settings.max_bytes)),
            front: Front::new(server, limits),
            client,
            inflight: Mutex::new(HashMap::new()),
            upstream: Mutex::new(UpstreamStats::default()),
            idle: Mutex::new(Vec::new()),
            settings,
        })
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, f: impl FnOnce(&mut UpstreamStats)) {
        f(&mut self.upstream.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Every request goes to the cache (the fuzz target serves this).
    pub fn router(self: &Arc<Self>) -> Router {
        self.front.fallback(serve, self.clone())
    }

    /// Serves on `listener` until `shutdown` resolves.
    pub async fn serve(
        self: &Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        let me = self.clone();
        self.front
            .serve_fallback(listener, serve, me, shutdown)
            .await
    }

    /// Forgets `key` (`host/path`); whether it was stored.
    pub fn purge(&self, key: &str) -> bool {
        self.store().purge(key)
    }

    pub fn report(&self) -> CacheReport {
        let s = self.store();
        CacheReport {
            name: self.name.clone(),
            front: self.front.report(),
            upstream: self
                .upstream
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            cache: CacheTable {
                bytes: s.bytes(),
                max_bytes: self.settings.max_bytes,
                stats: s.stats.clone(),
                objects: s.rows(SystemTime::now()),
            },
        }
    }

    /// One request: from the store, after a revalidation, or fetched.
    async fn answer(&self, req: request::Parts) -> Response {
        let k = key(&req);
        // At most twice: a miss that waited for another's fetch looks again.
        for waited in [false, true] {
            let lookup = self.store().lookup(&req, SystemTime::now());
            match lookup {
                Lookup::Hit(head, body) => return self.respond(&req, Outcome::Hit, head, body),
                Lookup::Revalidate(up) => {
                    let got = self.fetch(up.clone()).await;
                    let now = SystemTime::now();
                    return match got {
                        Ok((head, body)) => {
                            let (how, head, body) = self.store().revalidated(&up, head, body, now);
                            self.respond(&req, how, head, body)
                        }
                        Err(e) => failed(e),
                    };
                }
                Lookup::Miss => {}
            }
            // Lead the fetch of this key, or wait for the one under way.
            let flight = {
                let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
                match inflight.get(&k) {
                    Some(rx) if !waited => Flight::Wait(rx.clone()),
                    _ => {
                        let (tx, rx) = watch::channel(false);
                        inflight.insert(k.clone(), rx);
                        Flight::Lead(tx)
                    }
                }
            };
            match flight {
                Flight::Lead(tx) => {
                    // Stored before the waiters are told, so that they find it.
                    let got = self.fetch_whole(&req).await.map(|(head, body)| {
                        let mut get = req.clone();
                        get.method = Method::GET;
                        let now = SystemTime::now();
                        (self.store().fetched(&get, head, body.clone(), now), body)
                    });
                    (self.inflight.lock().unwrap_or_else(|e| e.into_inner())).remove(&k);
                    let _ = tx.send(true);
                    return match got {
                        Ok((head, body)) => self.respond(&req, Outcome::Miss, head, body),
                        Err(e) => failed(e),
                    };
                }
                Flight::Wait(mut rx) => {
                    self.count(|u| u.collapsed += 1);
                    while !*rx.borrow_and_update() {
                        if rx.changed().await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
        failed((StatusCode::BAD_GATEWAY, "no answer from upstream".into()))
    }

    /// A miss goes upstream as an unconditional GET, so what comes back is
    /// the whole object the store keeps (a HEAD's answer stored for the
    /// GETs after it; the client's own validators are checked here).
    async fn fetch_whole(&self, req: &request::Parts) -> Fetched {
        let mut up = req.clone();
        up.method = Method::GET;
        for h in [
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_MATCH,
            header::IF_UNMODIFIED_SINCE,
        ] {
            up.headers.remove(h);
        }
        self.fetch(up).await
    }

    /// Sends `up` to the upstream over HTTPS, with this cache in `Via`,
    /// under the upstream deadline.
    async fn fetch(&self, mut up: request::Parts) -> Fetched {
        self.count(|u| u.fetches += 1);
        strip_hop_by_hop(&mut up.headers);
        // A range is answered here from the whole object, which is what
        // the store keeps (http-cache-semantics does not store a 206).
        for h in [
            header::CONTENT_LENGTH,
            header::EXPECT,
            header::RANGE,
            header::IF_RANGE,
        ] {
            up.headers.remove(h);
        }
        add_via(&mut up.headers, &self.name);
        let deadline = Duration::from_millis(self.settings.upstream_timeout_ms);
        let got = match tokio::time::timeout(deadline, self.exchange(up)).await {
            Ok(got) => got,
            Err(_) => Err((StatusCode::GATEWAY_TIMEOUT, "upstream too slow".into())),
        };
        if got.is_err() {
            self.count(|u| u.errors += 1);
        }
        got
    }

    /// One request upstream: on a kept connection if there is one; if
    /// that fails (the upstream closed it while it was idle), once more on
    /// a new one, as a GET may be repeated (RFC 9110 § 9.2.2; RFC 9112
    /// § 9.3.1).
    async fn exchange(&self, up: request::Parts) -> Fetched {
        if let Some(conn) = self.reuse().await {
            self.count(|u| u.reused += 1);
            match self.send(conn, up.clone()).await {
                Ok(got) => return Ok(got),
                Err(e) => {
                    tracing::debug!(error = e.1, "a kept upstream connection failed; a new one");
                    self.count(|u| u.stale_connections += 1);
                }
            }
        }
        let conn = self.connect().await?;
        self.send(conn, up).await
    }

    /// A kept connection ready for a request, if there is one; those the
    /// upstream has closed meanwhile are let go.
    async fn reuse(&self) -> Option<UpstreamConn> {
        loop {
            let mut conn = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
            if !conn.sender.is_closed() && conn.sender.ready().await.is_ok() {
                return Some(conn);
            }
            self.count(|u| u.stale_connections += 1);
            conn.retire();
        }
    }

    /// A new connection to the upstream: TCP, TLS with `upstream_name`
    /// (checked against the lab root), HTTP/1.1.
    async fn connect(&self) -> Result<UpstreamConn, (StatusCode, String)> {
        self.count(|u| u.connections += 1);
        let tcp = TcpStream::connect(self.settings.upstream)
            .await
            .map_err(|e| bad("connect", &e))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(self.settings.upstream_name.clone())
            .map_err(|e| bad("upstream_name", &e))?;
        let tls = (TlsConnector::from(self.client.clone())
            .connect(name, tcp)
            .await)
            .map_err(|e| bad("TLS", &e))?;
        let (sender, conn) = http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| bad("HTTP", &e))?;
        let driver = tokio::spawn(conn.without_shutdown());
        Ok(UpstreamConn { sender, driver })
    }

    /// Sends `up` on `conn` and reads the whole answer; the connection is
    /// kept for the next fetch (up to `upstream_idle`) or closed.
    async fn send(&self, mut conn: UpstreamConn, up: request::Parts) -> Fetched {
        let got = async {
            let reply = (conn.sender)
                .send_request(Request::from_parts(up, Empty::<Bytes>::new()))
                .await
                .map_err(|e| bad("request", &e))?;
            let (head, body) = reply.into_parts();
            let body = Limited::new(body, super::MAX_OBJECT)
                .collect()
                .await
                .map_err(|e| bad("body", &e))?
                .to_bytes();
            Ok((head, body))
        }
        .await;
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if got.is_ok() && !conn.sender.is_closed() && idle.len() < self.settings.upstream_idle {
            idle.push(conn);
        } else {
            drop(idle);
            conn.retire();
        }
        got
    }

    /// The answer to the client: `Via` and `X-Cache` with this cache first
    /// (the upstream's after it when it was asked), no body for a HEAD.
    fn respond(
        &self,
        req: &request::Parts,
        how: Outcome,
        mut head: response::Parts,
        body: Bytes,
    ) -> Response {
        let upstream = match how {
            Outcome::Hit => None,
            _ => head.headers.get(X_CACHE).cloned(),
        };
        let mut x = format!("{} from {}", how.name(), self.name);
        if let Some(u) = upstream.as_ref().and_then(|v| v.to_str().ok()) {
            x = format!("{x}, {u}");
        }
        if let Ok(v) = HeaderValue::from_str(&x) {
            head.headers.insert(X_CACHE, v);
        }
        strip_hop_by_hop(&mut head.headers);
        add_via(&mut head.headers, &self.name);
        http_date(&mut head.headers);
        if head.status == StatusCode::OK && validated(req, &head) {
            head.status = StatusCode::NOT_MODIFIED;
            head.headers.remove(header::CONTENT_LENGTH);
            return Response::from_parts(head, Body::empty());
        }
        let body = match req.method {
            Method::GET if head.status == StatusCode::OK => ranged(req, &mut head, body),
            _ => body,
        };
        let body = match req.method {
            Method::HEAD => Body::empty(),
            _ => Body::from(body),
        };
        Response::from_parts(head, body)
    }
}

const X_CACHE: &str = "x-cache";

/// Whether the client's own conditional request is answered 304 by what
/// this cache is about to send (RFC 9111 § 4.3.2): a cache behind this one
/// revalidating gets a 304, not the body again.
fn validated(req: &request::Parts, head: &response::Parts) -> bool {
    let text = |n| {
        head.headers
            .get(n)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let etag = text(header::ETAG).unwrap_or("");
    let modified = text(header::LAST_MODIFIED).and_then(|v| httpdate::parse_http_date(v).ok());
    super::origin::not_modified_by(&req.headers, etag, modified)
}

/// A 200 with the whole object turned into the answer to the client's
/// `Range`, as the origin gives it (RFC 9110 § 14): a 206 with its part,
/// or a 416.
fn ranged(req: &request::Parts, head: &mut response::Parts, body: Bytes) -> Bytes {
    let etag = (head.headers.get(header::ETAG))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (status, content_range, body) = match super::origin::ranged(&req.headers, etag, &body) {
        Ranged::Whole => return body,
        Ranged::Part(cr, part) => (StatusCode::PARTIAL_CONTENT, cr, part),
        Ranged::Unsatisfiable(cr) => {
            head.headers.remove(header::CONTENT_TYPE);
            let text = Bytes::from(format!("{RANGE_OUTSIDE}\n"));
            (StatusCode::RANGE_NOT_SATISFIABLE, cr, text)
        }
    };
    head.status = status;
    if let Ok(v) = HeaderValue::from_str(&content_range) {
        head.headers.insert(header::CONTENT_RANGE, v);
    }
    head.headers
        .insert(header::CONTENT_LENGTH, body.len().into());
    body
}

/// Removes the fields that belong to one connection, not to the message
/// a cache passes on: `Connection` and those it names, and the ones RFC
/// 9110 § 7.6.1 lists (the body is framed anew on each side).
fn strip_hop_by_hop(h: &mut http::HeaderMap) {
    let named: Vec<String> = (h.get_all(header::CONNECTION).iter())
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    for n in named {
        h.remove(n.as_str());
    }
    for n in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        h.remove(n);
    }
}

/// Keeps `Date` an IMF-fixdate (RFC 9110 § 5.6.7): http-cache-semantics
/// writes a hit's `Date` (the time of the hit) in RFC 2822's form
/// (`+0000`); it is written again as an HTTP-date of now.
fn http_date(h: &mut http::HeaderMap) {
    let Some(v) = h.get(header::DATE).and_then(|v| v.to_str().ok()) else {
        return;
    };
    if httpdate::parse_http_date(v).is_err() {
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now())) {
            h.insert(header::DATE, v);
        }
    }
}

/// Appends `1.1 NAME` to `Via` (RFC 9110 § 7.6.3).
fn add_via(h: &mut http::HeaderMap, name: &str) {
    let me = format!("1.1 {name}");
    let v = match h.get(header::VIA).and_then(|v| v.to_str().ok()) {
        Some(old) => format!("{old}, {me}"),
        None => me,
    };
    if let Ok(v) = HeaderValue::from_str(&v) {
        h.insert(header::VIA, v);
    }
}

/// A failed exchange with the upstream: 502 and what failed.
fn bad(what: &str, e: &dyn std::fmt::Display) -> (StatusCode, String) {
    (StatusCode::BAD_GATEWAY, format!("{what}: {e}"))
}

fn failed((status, why): (StatusCode, String)) -> Response {
    tracing::info!(%status, why, "upstream failed");
    (status, format!("{why}\n")).into_response()
}

/// Only GET and HEAD go through a cache; the rest is refused here.
async fn serve(State(c): State<Arc<Cache>>, req: Request<Body>) -> Response {
    let (parts, _) = req.into_parts();
    if parts.method != Method::GET && parts.method != Method::HEAD {
        let mut r = (StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD\n").into_response();
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if !parts.headers.contains_key(header::HOST) {
        return (StatusCode::BAD_REQUEST, "no Host\n").into_response();
    }
    c.answer(parts).await
}

/// `app = "cdn-cache"`: an edge or the parent cache of the CDN.
pub struct CacheApp;

impl crate::app::App for CacheApp {
    const NAME: &'static str = "cdn-cache";
    const SUMMARY: &'static str =
        "a CDN cache (edge or parent): RFC 9111 over HTTPS in front of its upstream";
    type Settings = CacheSettings;
    fn listens(s: &CacheSettings) -> Option<u16> {
        Some(s.listen.port())
    }
    fn check(env: &crate::app::AppEnv, s: &CacheSettings) -> Result<(), ConfigError> {
        if ServerName::try_from(s.upstream_name.clone()).is_err() {
            return Err(ConfigError::new(
                "config.upstream_name",
                format!("{:?} is not a DNS name", s.upstream_name),
            ));
        }
        env.https_pki("a CDN cache").map(|_| ())
    }
    fn run(
        env: crate::app::AppEnv,
        s: CacheSettings,
        ctl: tokio::net::UnixListener,
        shutdown: crate::app::Shutdown,
    ) -> crate::app::Running {
        Box::pin(async move {
            let pki = env.https_pki("a CDN cache")?;
            let server = crate::pki::server_config(pki)?;
            let client = crate::pki::client_config(&pki.root_cert(), false)?;
            let listener = crate::listen(s.listen, super::BACKLOG)?;
            let cache = Cache::new(&env.node, s, server, client);
            let report = {
                let c = cache.clone();
                crate::control::report(move || c.report())
            };
            let commands: crate::control::Commands = {
                let c = cache.clone();
                Arc::new(move |line: &str| {
                    let k = line.strip_prefix("purge ")?;
                    Some(serde_json::json!({ "purged": c.purge(k.trim()) }))
                })
            };
            tokio::spawn(crate::control::serve_with(
                ctl,
                env.node.clone(),
                Self::NAME,
                report,
                commands,
            ));
            tracing::info!(addr = %listener.local_addr()?, "cache up");
            cache.serve(listener, shutdown).await?;
            Ok(())
        })
    }
}
