//! The HTTPS controller in `vm-ctl` and `vm-ctl2`: chapter 6 of the story,
//! where the phone's `POST /purchaseOrder` finally arrives (through the L4
//! load balancer, which passes TLS through untouched).
//!
//! Read [RFC 9110] (HTTP semantics: 201, 400, 405, 413, 415, 422) and the
//! IETF draft "The Idempotency-Key HTTP Header Field"
//! (draft-ietf-httpapi-idempotency-key-header) first.
//!
//! One process serves TLS 1.2 and 1.3 (tokio-rustls) and HTTP/1.1 (hyper with
//! an axum router). What happens to a valid order depends on the config:
//!
//! - with an `order_service` table (chapter 10, the story's shop), the
//!   controller is only the receptionist: it calls `order.create` by RPC
//!   ([`crate::rpc`]) through the registry's provider list, and answers with
//!   what the service answered, including the path of the calls behind it;
//! - without one ("local", the controller-only build of chapter 6, still the
//!   `direct` baseline of `d11 bench order` and of the tests), orders go to
//!   a SQLite file in WAL mode that every controller of the lab shares, so
//!   the `UNIQUE` constraint on the idempotency key makes "one key, one
//!   order" hold across processes: the insert and the read-back run in one
//!   `BEGIN IMMEDIATE` transaction.

mod order_service;
mod store;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::https::{Front, FrontReport, Limits, Session};
use crate::rpc;

pub use order_service::OrderServiceConfig;
use order_service::{Answer, OrderService, Refusal};
use store::{Recorded, Store};

/// The controller's settings (the `config` table of its app in the topology).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    /// Where to listen for HTTPS.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The largest request body accepted; a longer one is answered 413.
    #[serde(default = "default_max_body")]
    pub max_body: usize,
    /// How long a client may take to send a request's headers (slowloris);
    /// also how long an idle keep-alive connection is kept.
    #[serde(default = "default_header_timeout_ms")]
    pub header_timeout_ms: u64,
    /// How long a client may take to send a request's body; then 408.
    #[serde(default = "default_body_timeout_ms")]
    pub body_timeout_ms: u64,
    /// How long a TLS handshake may take (garbage or stalled handshakes).
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// Connections served at once; more wait in the kernel's accept queue.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Call the `order` service by RPC for each order; without it the
    /// controller records orders itself in the local SQLite store.
    #[serde(default)]
    pub order_service: Option<OrderServiceConfig>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 443))
}
fn default_max_body() -> usize {
    16 * 1024
}
fn default_header_timeout_ms() -> u64 {
    5000
}
fn default_body_timeout_ms() -> u64 {
    10_000
}
fn default_handshake_timeout_ms() -> u64 {
    5000
}
fn default_max_connections() -> usize {
    1024
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            listen: default_listen(),
            max_body: default_max_body(),
            header_timeout_ms: default_header_timeout_ms(),
            body_timeout_ms: default_body_timeout_ms(),
            handshake_timeout_ms: default_handshake_timeout_ms(),
            max_connections: default_max_connections(),
            order_service: None,
        }
    }
}

/// The accept queue the lab's controllers listen with: as deep as a lab
/// namespace allows (`net.core.somaxconn` 4,096), so the load balancer's
/// connections wait there while a controller is at `max_connections`
/// instead of having their SYNs dropped (tokio's `bind` asks for 1,024).
const BACKLOG: usize = 4096;

/// An error starting the controller.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The order store could not be opened or prepared.
    #[error("order store {path}: {source}")]
    Store {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// The `order` consumer's registry subscription needs a tokio runtime.
    #[error("order_service: the controller must be created inside a tokio runtime")]
    NoRuntime,
}

/// The HTTPS controller.
pub struct Controller {
    name: String,
    config: ControllerConfig,
    front: Arc<Front>,
    orders: Orders,
    random: &'static dyn rustls::crypto::SecureRandom,
    counters: Mutex<Counters>,
}

/// Where orders go.
enum Orders {
    /// The SQLite store shared by the lab's controllers (no `order_service`).
    Local(Arc<Store>),
    /// The `order` service, by RPC.
    Rpc(Box<OrderService>),
}

impl Orders {
    fn mode(&self) -> &'static str {
        match self {
            Orders::Local(_) => "local",
            Orders::Rpc(_) => "rpc",
        }
    }
}

/// What a controller reports on its control socket (`d11 show vm-ctl`):
/// its connections, TLS handshakes, requests by status and orders by
/// outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControllerReport {
    pub name: String,
    /// `local` (it records orders itself) or `rpc` (the order service does).
    pub orders: String,
    /// Connections, TLS handshakes, requests by status.
    #[serde(flatten)]
    pub front: FrontReport,
    pub orders_created: u64,
    pub orders_replayed: u64,
    pub idempotency_conflicts: u64,
    pub store_errors: u64,
    pub orders_sold_out: u64,
    pub orders_cancelled: u64,
    /// Calls of `order.create` that failed, by RPC status name.
    pub order_service_faults: BTreeMap<String, u64>,
    /// Answers of `order.create` lacking a field or of the wrong shape.
    pub order_service_bad_answers: u64,
    /// With `orders = "rpc"`: the order service's client side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_service: Option<order_service::OrderServiceReport>,
}

/// What the control socket reports.
#[derive(Default)]
struct Counters {
    orders_created: u64,
    orders_replayed: u64,
    idempotency_conflicts: u64,
    store_errors: u64,
    orders_sold_out: u64,
    orders_cancelled: u64,
    /// Calls of `order.create` that failed, by RPC status name.
    order_service_faults: BTreeMap<&'static str, u64>,
    /// Answers of `order.create` lacking a field or of the wrong shape.
    order_service_bad_answers: u64,
}

/// The order a handler made, found again or was refused, handed to the
/// access log.
#[derive(Clone)]
struct OrderLog {
    order_id: String,
    replayed: bool,
    /// `created`, `replayed`, `sold_out`, `cancelled`.
    outcome: &'static str,
}

impl Controller {
    /// `name` is the node (e.g. "vm-ctl") reported in replies and logs;
    /// `store` the SQLite file shared by every controller of the lab, used
    /// (and opened) only without `config.order_service`. With it, the
    /// controller subscribes to the `order` service's providers here, which
    /// needs a tokio runtime, and does not wait for one to be registered.
    pub fn new(
        name: &str,
        config: ControllerConfig,
        tls: Arc<rustls::ServerConfig>,
        store: &Path,
    ) -> Result<Arc<Controller>, ControllerError> {
        let orders = match &config.order_service {
            Some(service) => {
                if tokio::runtime::Handle::try_current().is_err() {
                    return Err(ControllerError::NoRuntime);
                }
                tracing::info!(registry = %service.registry, "orders go to the order service by RPC");
                Orders::Rpc(Box::new(OrderService::start(service)))
            }
            None => {
                let store = Store::open(store).map_err(|source| ControllerError::Store {
                    path: store.to_path_buf(),
                    source,
                })?;
                Orders::Local(Arc::new(store))
            }
        };
        let limits = Limits::from_ms(
            config.handshake_timeout_ms,
            config.header_timeout_ms,
            config.max_connections,
        );
        let front = Front::new(tls, limits);
        Ok(Arc::new(Controller {
            name: name.to_string(),
            config,
            front,
            orders,
            random: rustls::crypto::ring::default_provider().secure_random,
            counters: Mutex::new(Counters::default()),
        }))
    }

    /// Binds `config.listen` and serves until `shutdown` resolves.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let listener = TcpListener::bind(self.config.listen).await?;
        self.serve(listener, shutdown).await
    }

    /// Serves on `listener` until `shutdown` resolves; then stops accepting,
    /// asks open connections to finish their current request and waits for
    /// them at most 5 s ([`Front::serve`]).
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        self.front.serve(listener, self.router(), shutdown).await
    }

    /// The routes, with the access log around them (no TLS: handlers can be
    /// called directly, as the unit tests do).
    fn router(self: &Arc<Self>) -> Router {
        let routes = Router::new()
            .route("/purchaseOrder", post(purchase_order))
            .route("/health", get(health))
            .method_not_allowed_fallback(method_not_allowed)
            .fallback(not_found)
            .layer(middleware::from_fn_with_state(self.clone(), access_log))
            .with_state(self.clone());
        self.front.counted(routes)
    }

    /// Serves one client's HTTP/1.1 bytes, as TLS would have decrypted them,
    /// through the same hyper connection, router and handlers as a real
    /// client ([`Front::serve_plaintext`]). The fuzz target
    /// (`fuzz/fuzz_targets/controller.rs`) runs it on arbitrary bytes.
    pub async fn serve_plaintext(self: &Arc<Self>, request: &[u8]) -> Vec<u8> {
        self.front.serve_plaintext(self.router(), request).await
    }

    /// With an `order_service`: waits until the registry lists a provider
    /// of `order`, at most `wait`, and says whether one is there. Without
    /// one: true at once.
    pub async fn wait_for_order_service(&self, wait: Duration) -> bool {
        match &self.orders {
            Orders::Local(_) => true,
            Orders::Rpc(service) => service.wait_for_providers(wait).await,
        }
    }

    fn count(&self, f: impl FnOnce(&mut Counters)) {
        f(&mut self.counters.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Counters for the control socket.
    pub fn status(&self) -> ControllerReport {
        let c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let names =
            |m: &BTreeMap<&'static str, u64>| m.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        ControllerReport {
            name: self.name.clone(),
            orders: self.orders.mode().into(),
            front: self.front.report(),
            orders_created: c.orders_created,
            orders_replayed: c.orders_replayed,
            idempotency_conflicts: c.idempotency_conflicts,
            store_errors: c.store_errors,
            orders_sold_out: c.orders_sold_out,
            orders_cancelled: c.orders_cancelled,
            order_service_faults: names(&c.order_service_faults),
            order_service_bad_answers: c.order_service_bad_answers,
            order_service: match &self.orders {
                Orders::Rpc(service) => Some(service.status()),
                Orders::Local(_) => None,
            },
        }
    }

    /// A fresh order id: 64 random bits.
    fn new_order_id(&self) -> Result<String, ApiError> {
        let mut b = [0u8; 8];
        self.random
            .fill(&mut b)
            .map_err(|_| ApiError::unavailable("no randomness for an order id"))?;
        Ok(format!(
            "ord-{}",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ))
    }
}

/// One line per request.
async fn access_log(State(ctl): State<Arc<Controller>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let session = req.extensions().get::<Session>().cloned();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let order = resp.extensions().get::<OrderLog>();
    let (peer, version, cipher) = match &session {
        Some(s) => (s.peer.to_string(), s.version.as_str(), s.cipher.as_str()),
        None => ("-".into(), "-", "-"),
    };
    tracing::info!(
        peer,
        tls = version,
        cipher,
        %method,
        path,
        status,
        orders = ctl.orders.mode(),
        order_id = order.map_or("-", |o| o.order_id.as_str()),
        outcome = order.map_or("-", |o| o.outcome),
        replayed = order.is_some_and(|o| o.replayed),
        us = started.elapsed().as_micros() as u64,
        "request"
    );
    resp
}

/// An error reply: `{"error": "…", "field": "order.price"}`, or for an
/// order the service refused `{"error": "…", "order_id": "…", "outcome": "sold_out"}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    error: String,
    field: Option<String>,
    /// The order the service refused.
    refused: Option<Box<Refused>>,
}

/// An order the service did not confirm, for the 409.
#[derive(Debug)]
struct Refused {
    order_id: String,
    /// `sold_out`, `cancelled`.
    outcome: &'static str,
    /// `{"path", "commit"}`, when the service sent them.
    rpc: Option<Value>,
}

impl ApiError {
    fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            status,
            error: error.into(),
            field: None,
            refused: None,
        }
    }

    fn field(field: impl Into<String>, error: impl Into<String>) -> Self {
        ApiError {
            field: Some(field.into()),
            ..ApiError::new(StatusCode::BAD_REQUEST, error)
        }
    }

    fn unavailable(error: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.error });
        if let Some(field) = self.field {
            body["field"] = field.into();
        }
        if let Some(r) = &self.refused {
            body["order_id"] = r.order_id.as_str().into();
            body["outcome"] = r.outcome.into();
            if let Some(rpc) = &r.rpc {
                body["rpc"] = rpc.clone();
            }
        }
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(r) = self.refused {
            resp.extensions_mut().insert(OrderLog {
                order_id: r.order_id,
                replayed: false,
                outcome: r.outcome,
            });
        }
        if self.status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            // What this resource accepts instead [RFC 9110 § 15.5.16].
            resp.headers_mut()
                .insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        } else if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

/// The story's order, as validated and stored. Field names are the story's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    date: String,
    #[serde(rename = "className")]
    class_name: String,
    #[serde(rename = "Author")]
    author: String,
    price: String,
    /// A coupon code, when the phone sends one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    coupon: Option<String>,
}

/// The 201 body, the same for the first answer and every replay.
#[derive(Serialize)]
struct Created<'a> {
    status: &'static str,
    order_id: &'a str,
    served_by: &'a str,
    order: &'a Order,
}

/// Parses and checks `{"order":{"date","className","Author","price"}}`,
/// with an optional `coupon`.
fn validate(body: &[u8]) -> Result<Order, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")))?;
    let Value::Object(mut top) = value else {
        return Err(ApiError::field("", "the body must be a JSON object"));
    };
    let order = match top.remove("order") {
        Some(Value::Object(order)) => order,
        Some(_) => return Err(ApiError::field("order", "must be an object")),
        None => return Err(ApiError::field("order", "missing")),
    };
    if let Some(extra) = top.keys().next() {
        return Err(ApiError::field(extra.as_str(), "unknown field"));
    }
    if let Some(extra) = order
        .keys()
        .find(|k| !["date", "className", "Author", "price", "coupon"].contains(&k.as_str()))
    {
        return Err(ApiError::field(format!("order.{extra}"), "unknown field"));
    }
    let text = |key: &str| match order.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= 256 => Ok(s.clone()),
        Some(Value::String(_)) => Err(ApiError::field(
            format!("order.{key}"),
            "must be 1 to 256 characters, not blank",
        )),
        Some(_) => Err(ApiError::field(format!("order.{key}"), "must be a string")),
        None => Err(ApiError::field(format!("order.{key}"), "missing")),
    };
    let order = Order {
        date: text("date")?,
        class_name: text("className")?,
        author: text("Author")?,
        price: text("price")?,
        coupon: match order.get("coupon") {
            None => None,
            Some(Value::String(c)) if valid_coupon(c) => Some(c.clone()),
            Some(_) => {
                return Err(ApiError::field(
                    "order.coupon",
                    "must be 1 to 64 characters of A-Z, a-z, 0-9, - and _",
                ))
            }
        },
    };
    if !valid_date(&order.date) {
        return Err(ApiError::field(
            "order.date",
            "must be a calendar date YYYY-MM-DD",
        ));
    }
    if !valid_price(&order.price) {
        return Err(ApiError::field(
            "order.price",
            "must be a decimal string greater than 0 with at most 2 decimals",
        ));
    }
    Ok(order)
}

/// 1 to 64 of `[A-Za-z0-9_-]`.
fn valid_coupon(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `YYYY-MM-DD` naming a real day (ISO 8601 calendar date, [RFC 3339 § 5.6] full-date).
fn valid_date(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' || !digits(0..4) {
        return false;
    }
    if !digits(5..7) || !digits(8..10) {
        return false;
    }
    let (Ok(y), Ok(m), Ok(d)) = (s[0..4].parse(), s[5..7].parse::<u8>(), s[8..10].parse()) else {
        return false;
    };
    time::Month::try_from(m)
        .and_then(|m| time::Date::from_calendar_date(y, m, d))
        .is_ok()
}

/// Up to 9 integer digits, optionally `.` and 1 or 2 decimals, above zero.
fn valid_price(s: &str) -> bool {
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    let (int, frac) = match s.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (s, None),
    };
    (1..=9).contains(&int.len())
        && digits(int)
        && frac.is_none_or(|f| (1..=2).contains(&f.len()) && digits(f))
        && s.bytes().any(|b| (b'1'..=b'9').contains(&b))
}

/// `Content-Type: application/json`, parameters (charset) allowed.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// The `Idempotency-Key`, if any: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut keys = headers.get_all("idempotency-key").iter();
    let Some(key) = keys.next() else {
        return Ok(None);
    };
    let bad = || {
        ApiError::field(
            "Idempotency-Key",
            "must appear once, 1 to 255 visible ASCII characters",
        )
    };
    let bytes = key.as_bytes();
    if keys.next().is_some()
        || bytes.is_empty()
        || bytes.len() > 255
        || !bytes.iter().all(|b| (0x21..=0x7e).contains(b))
    {
        return Err(bad());
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// Reads the body, at most `max` bytes within `timeout`.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    max: usize,
    timeout: Duration,
) -> Result<bytes::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {max} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(timeout, Limited::new(body, max).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("reading the body: {e}"),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "the body did not arrive in time",
        )),
    }
}

/// `POST /purchaseOrder`: check, then record (once per idempotency key) or
/// have the `order` service record it, and answer.
async fn purchase_order(
    State(ctl): State<Arc<Controller>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if !is_json(&headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        ));
    }
    let key = idempotency_key(&headers)?;
    let timeout = Duration::from_millis(ctl.config.body_timeout_ms);
    let body = read_body(&headers, body, ctl.config.max_body, timeout).await?;
    let order = validate(&body)?;
    let order_id = ctl.new_order_id()?;
    match &ctl.orders {
        Orders::Local(store) => record_locally(&ctl, store.clone(), order_id, key, order).await,
        Orders::Rpc(service) => order_by_rpc(&ctl, service, order_id, key, order).await,
    }
}

/// The 201 (with `Idempotent-Replayed: true` for a replay), logged.
fn created(body: Value, order_id: String, replayed: bool) -> Response {
    let mut resp = (StatusCode::CREATED, Json(body)).into_response();
    if replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    resp.extensions_mut().insert(OrderLog {
        order_id,
        replayed,
        outcome: if replayed { "replayed" } else { "created" },
    });
    resp
}

fn key_reused() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "this Idempotency-Key was used for a different order",
    )
}

/// The local mode: the SQLite store shared by the lab's controllers.
async fn record_locally(
    ctl: &Arc<Controller>,
    store: Arc<Store>,
    order_id: String,
    key: Option<String>,
    order: Order,
) -> Result<Response, ApiError> {
    let canonical = serde_json::to_string(&order).expect("an Order serializes");
    let name = ctl.name.clone();
    let recorded = tokio::task::spawn_blocking(move || {
        store.record(&order_id, key.as_deref(), &canonical, &name)
    })
    .await
    .map_err(|e| ApiError::unavailable(format!("order store task: {e}")))?;
    let (row, replayed) = match recorded {
        Ok(Recorded::Created(row)) => (row, false),
        Ok(Recorded::Replayed(row)) => (row, true),
        Ok(Recorded::KeyReused) => {
            ctl.count(|c| c.idempotency_conflicts += 1);
            return Err(key_reused());
        }
        Err(e) => {
            ctl.count(|c| c.store_errors += 1);
            tracing::warn!(error = %e, "order store failed");
            return Err(ApiError::unavailable("the order store is unavailable"));
        }
    };
    let stored: Order = serde_json::from_str(&row.body)
        .map_err(|e| ApiError::unavailable(format!("stored order unreadable: {e}")))?;
    ctl.count(|c| match replayed {
        true => c.orders_replayed += 1,
        false => c.orders_created += 1,
    });
    let reply = Created {
        status: "created",
        order_id: &row.order_id,
        served_by: &row.served_by,
        order: &stored,
    };
    let body = serde_json::to_value(reply).expect("a reply serializes");
    Ok(created(body, row.order_id, replayed))
}

/// The RPC mode: `order.create(order_id, key, order)` and its answer mapped
/// to HTTP: confirmed 201, sold out or cancelled 409, key reused 422, a
/// fault 503 (504 for a timeout), an answer the controller cannot read 503.
async fn order_by_rpc(
    ctl: &Arc<Controller>,
    service: &OrderService,
    order_id: String,
    key: Option<String>,
    order: Order,
) -> Result<Response, ApiError> {
    let order = serde_json::to_value(&order).expect("an Order serializes");
    let answer = match service
        .create(&order_id, key.as_deref(), order, &ctl.name)
        .await
    {
        Ok(answer) => answer,
        Err(fault) => {
            ctl.count(|c| {
                *c.order_service_faults
                    .entry(fault.status.name())
                    .or_default() += 1
            });
            tracing::warn!(%order_id, status = %fault.status, "order.create failed: {}", fault.message);
            let status = match fault.status {
                rpc::Status::ClientTimeout | rpc::Status::ServerTimeout => {
                    StatusCode::GATEWAY_TIMEOUT
                }
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            return Err(ApiError::new(
                status,
                format!("order service: {}", fault.message),
            ));
        }
    };
    match order_service::read_answer(answer) {
        Ok(Answer::Confirmed(c)) => {
            ctl.count(|n| match c.replayed {
                true => n.orders_replayed += 1,
                false => n.orders_created += 1,
            });
            // `served_by`: the service's, when it names the controller that
            // first asked; else this one (a replay through the other
            // controller then names the other).
            let body = json!({
                "status": "created",
                "order_id": c.order_id,
                "served_by": c.served_by.as_deref().unwrap_or(&ctl.name),
                "order": c.order,
                "rpc": { "path": c.path, "commit": c.commit },
            });
            Ok(created(body, c.order_id, c.replayed))
        }
        Ok(Answer::Refused {
            outcome,
            order_id,
            message,
            rpc,
        }) => {
            ctl.count(|c| match outcome {
                Refusal::SoldOut => c.orders_sold_out += 1,
                Refusal::Cancelled => c.orders_cancelled += 1,
            });
            Err(ApiError {
                refused: Some(Box::new(Refused {
                    order_id,
                    outcome: outcome.name(),
                    rpc,
                })),
                ..ApiError::new(StatusCode::CONFLICT, message)
            })
        }
        Ok(Answer::KeyReused) => {
            ctl.count(|c| c.idempotency_conflicts += 1);
            Err(key_reused())
        }
        Err(bad) => {
            ctl.count(|c| c.order_service_bad_answers += 1);
            tracing::warn!(%order_id, "order.create answered what the controller cannot use: {bad}");
            Err(ApiError::unavailable(format!("order service: {bad}")))
        }
    }
}

/// `GET /health`: for the supervisor's and the load balancer's checks.
async fn health(State(ctl): State<Arc<Controller>>) -> Json<Value> {
    Json(json!({ "status": "ok", "served_by": ctl.name }))
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let allow = match uri.path() {
        "/health" => "GET, HEAD",
        _ => "POST",
    };
    let mut resp = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed here"),
    )
    .into_response();
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no resource at {}", uri.path()),
    )
}

/// `app = "controller"`: the HTTPS controller behind the load balancer.
pub struct ControllerApp;

impl crate::app::App for ControllerApp {
    const NAME: &'static str = "controller";
    const SUMMARY: &'static str = "the HTTPS controller answering POST /purchaseOrder";
    type Settings = ControllerConfig;
    /// One event loop, as the shop's apps: 5–10 % less CPU an order than
    /// two workers (docs/order.md).
    const WORKERS: usize = 1;
    fn check(env: &crate::app::AppEnv, _: &ControllerConfig) -> Result<(), d11_core::ConfigError> {
        env.https_pki("a controller").map(|_| ())
    }
    fn run(
        env: crate::app::AppEnv,
        c: ControllerConfig,
        ctl: tokio::net::UnixListener,
        shutdown: crate::app::Shutdown,
    ) -> crate::app::Running {
        Box::pin(async move {
            let tls = crate::pki::server_config(env.https_pki("a controller")?)?;
            let listener = crate::listen(c.listen, BACKLOG)?;
            let ctl_app = Controller::new(&env.node, c, tls, &env.order_store)?;
            let report = {
                let c = ctl_app.clone();
                crate::control::report(move || c.status())
            };
            // Ready (answering its control socket) once it can place orders.
            if !ctl_app
                .wait_for_order_service(crate::shop::READY_WAIT)
                .await
            {
                tracing::warn!("no provider of the order service yet: answering anyway");
            }
            tokio::spawn(crate::control::serve(
                ctl,
                env.node.clone(),
                "controller",
                report,
            ));
            tracing::info!(addr = %listener.local_addr()?, "controller up");
            ctl_app.serve(listener, shutdown).await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests;
