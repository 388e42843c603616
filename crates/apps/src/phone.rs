//! The phone app behind `d11 order`: resolve the shop's name, open TLS
//! trusting only the lab root, `POST /purchaseOrder` with the story's JSON
//! and an `Idempotency-Key`, and retry with the same key when the
//! connection is lost, so a retried order is never a second order.
//!
//! It runs on the kernel's TCP/IP stack of the namespace it is started in
//! (the caller enters the UE's namespace first), like the real app on the
//! phone's own stack.

use crate::pki;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

/// The story's order (chapter 6).
pub fn story_order() -> Value {
    serde_json::json!({"order": {
        "date": "2018-07-01",
        "className": "趣谈网络协议",
        "Author": "刘超",
        "price": "68",
    }})
}

/// What one order needs.
#[derive(Debug, Clone)]
pub struct OrderRequest {
    /// The name in the URL, the SNI and the certificate check.
    pub host: String,
    /// Where `host` resolved to, and the port.
    pub addr: SocketAddr,
    /// The PEM root the app trusts (and nothing else).
    pub root: PathBuf,
    /// Write TLS secrets to `$SSLKEYLOGFILE` (NSS key log format).
    pub key_log: bool,
    pub idempotency_key: String,
    pub body: Value,
    /// Attempts after the first, each after a lost connection.
    pub retries: u32,
    /// For each attempt: connect, handshake, request and reply.
    pub timeout: Duration,
}

/// The reply and what the app saw on the way (what `d11 order --json`
/// prints).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderOutcome {
    pub status: u16,
    /// The controller's JSON reply, as it came over HTTP.
    pub body: Value,
    /// Attempts made, 1 if the first went through.
    pub attempts: u32,
    /// Why each failed attempt failed.
    pub errors: Vec<String>,
    pub idempotency_key: String,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub tls_version: String,
    pub cipher: String,
    /// From the connection's start to the last byte of the reply.
    pub elapsed_ms: f64,
    /// How the shop's name was resolved (`d11 order` fills it in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<crate::dns::stub::Resolved>,
}

/// The fields of the controller's JSON reply the phone's users read
/// (`d11 demo`); the reply itself stays in [`OrderOutcome::body`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct OrderReply {
    /// `created`, `replayed`, …
    pub status: Option<String>,
    pub order_id: Option<String>,
    pub served_by: Option<String>,
    /// The order as the controller took it (the story's JSON).
    pub order: Option<Value>,
    /// With the shop's backend: the order service's calls and commit
    /// ([`rpc_lines`] tells them).
    pub rpc: Option<RpcTrail>,
}

/// The order service's trail in a reply: one entry per RPC call.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RpcTrail {
    pub path: Vec<Value>,
}

impl OrderOutcome {
    /// The reply's fields, as far as it has them.
    pub fn reply(&self) -> OrderReply {
        OrderReply::deserialize(&self.body).unwrap_or_default()
    }

    /// The reply's `order_id`, if it has one.
    pub fn order_id(&self) -> Option<&str> {
        self.body.get("order_id").and_then(Value::as_str)
    }

    /// The reply's `served_by`: the controller that placed it.
    pub fn served_by(&self) -> Option<&str> {
        self.body.get("served_by").and_then(Value::as_str)
    }
}

/// Why an order could not be placed.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error("{0:?} is not a valid TLS server name")]
    Name(String),
    /// Every attempt lost its connection.
    #[error("no reply after {attempts} attempt(s): {}", .errors.join("; "))]
    Unreachable { attempts: u32, errors: Vec<String> },
    /// The server's certificate or the handshake was refused: retrying
    /// cannot help.
    #[error("TLS with {host} refused: {detail}")]
    Tls { host: String, detail: String },
}

/// A random version-4 UUID (RFC 9562 § 5.4) for an `Idempotency-Key`.
pub fn new_idempotency_key() -> String {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The lines `d11 order` prints after the reply when the controller called
/// the order service by RPC (chapter 10): one per call of the reply's
/// `rpc.path`, then the database's commit. None without `rpc`.
///
/// ```text
///   rpc  db.order_create   192.168.1.60:20880   1.2 ms  created
///   rpc  stock.deduct      192.168.1.50:20880   3.4 ms  taken (2 CAS attempts)
///   commit seq 42, replication acked in 0.4 ms
/// ```
pub fn rpc_lines(body: &Value) -> Vec<String> {
    let Some(rpc) = body.get("rpc").filter(|r| r.is_object()) else {
        return Vec::new();
    };
    let text = |v: &Value, k: &str| v[k].as_str().unwrap_or("?").to_string();
    let calls = rpc["path"].as_array().map_or(&[][..], Vec::as_slice);
    // Columns as wide as the longest call and provider, at least the lab's.
    let width = |k: &str, min: usize| {
        calls
            .iter()
            .filter_map(|c| c[k].as_str())
            .map(|s| s.chars().count())
            .fold(min, usize::max)
    };
    let (call_w, provider_w) = (width("call", 17), width("provider", 18));
    let mut lines = Vec::new();
    for call in calls {
        let mut notes = Vec::new();
        if let Some(n) = call["cas_attempts"].as_u64() {
            notes.push(format!("{n} CAS attempt{}", if n == 1 { "" } else { "s" }));
        }
        if let Some(n) = call["tried"].as_u64().filter(|&n| n > 1) {
            notes.push(format!("{n} providers tried"));
        }
        let ms = match call["ms"].as_f64() {
            Some(ms) => format!("{ms:>5.1} ms"),
            None => "    ? ms".into(),
        };
        let mut result = text(call, "result");
        if !notes.is_empty() {
            // One parenthesis: "taken (stock 0 version 1, 1 CAS attempt)".
            match result.strip_suffix(')') {
                Some(open) => result = format!("{open}, {})", notes.join(", ")),
                None => result += &format!(" ({})", notes.join(", ")),
            }
        }
        lines.push(format!(
            "  rpc  {:<call_w$} {:<provider_w$} {ms}  {result}",
            text(call, "call"),
            call["provider"].as_str().unwrap_or("-"),
        ));
    }
    if let Some(commit) = rpc.get("commit").filter(|c| c.is_object()) {
        // A replayed order committed nothing new: no seq.
        lines.push(match commit["seq"].as_u64() {
            Some(seq) => format!(
                "  commit seq {seq}, replication {}",
                text(commit, "replication")
            ),
            None => format!("  commit: {}", text(commit, "replication")),
        });
    }
    lines
}

/// One line saying why the shop did not take the order, for a reply that
/// is not a 2xx: the sold out or cancelled order of a 409, or the reply's
/// error. None for a 2xx.
pub fn refusal(status: u16, body: &Value) -> Option<String> {
    if (200..300).contains(&status) {
        return None;
    }
    let error = body["error"].as_str();
    let order = body["order_id"].as_str();
    Some(match (status, body["outcome"].as_str(), order) {
        (409, Some("sold_out"), Some(id)) => format!(
            "sold out: {} (order {id} was not placed)",
            error.unwrap_or("no message")
        ),
        (409, Some("cancelled"), Some(id)) => format!(
            "cancelled: {} (order {id} was not placed)",
            error.unwrap_or("no message")
        ),
        _ => match error {
            Some(e) => format!("refused ({status}): {e}"),
            None => format!("refused ({status})"),
        },
    })
}

/// Places the order, retrying lost connections with the same key.
pub async fn order(req: &OrderRequest) -> Result<OrderOutcome, OrderError> {
    let tls = pki::client_config(&req.root, req.key_log)?;
    order_with(req, tls).await
}

/// [`order`] with a TLS configuration the caller made once (the load
/// generator, [`crate::load`]); `req.root` and `req.key_log` are not read.
pub async fn order_with(
    req: &OrderRequest,
    tls: Arc<tokio_rustls::rustls::ClientConfig>,
) -> Result<OrderOutcome, OrderError> {
    let name =
        ServerName::try_from(req.host.clone()).map_err(|_| OrderError::Name(req.host.clone()))?;
    let mut errors = Vec::new();
    for attempt in 1..=req.retries + 1 {
        if attempt > 1 {
            tokio::time::sleep(Duration::from_millis(200 << (attempt - 2).min(4))).await;
        }
        let once = tokio::time::timeout(req.timeout, post(req, tls.clone(), name.clone())).await;
        match once {
            Ok(Ok(mut out)) => {
                out.attempts = attempt;
                out.errors = errors;
                return Ok(out);
            }
            Ok(Err(Attempt::Refused(detail))) => {
                return Err(OrderError::Tls {
                    host: req.host.clone(),
                    detail,
                })
            }
            Ok(Err(Attempt::Lost(e))) => errors.push(format!("attempt {attempt}: {e}")),
            Err(_) => errors.push(format!(
                "attempt {attempt}: no reply within {} ms",
                req.timeout.as_millis()
            )),
        }
    }
    Err(OrderError::Unreachable {
        attempts: req.retries + 1,
        errors,
    })
}

async fn post(
    req: &OrderRequest,
    tls: Arc<tokio_rustls::rustls::ClientConfig>,
    name: ServerName<'static>,
) -> Result<OrderOutcome, Attempt> {
    let body = serde_json::to_vec(&req.body).expect("a JSON value serializes");
    let request = Request::post("/purchaseOrder")
        .header(hyper::header::HOST, &req.host)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, "d11-phone/0.1")
        .header("Idempotency-Key", &req.idempotency_key)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| Attempt::Refused(format!("building the request: {e}")))?;
    let x = exchange(req.addr, tls, name, request).await?;
    let body = serde_json::from_slice(&x.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&x.body).into_owned()));
    Ok(OrderOutcome {
        status: x.status,
        body,
        attempts: 1,
        errors: Vec::new(),
        idempotency_key: req.idempotency_key.clone(),
        local: x.local,
        remote: req.addr,
        tls_version: x.tls_version,
        cipher: x.cipher,
        elapsed_ms: x.elapsed_ms,
        resolved: None,
    })
}

/// One HTTPS request and its reply, as the phone's apps make them.
pub(crate) struct Exchange {
    pub status: u16,
    pub body: Bytes,
    pub local: SocketAddr,
    pub tls_version: String,
    pub cipher: String,
    /// From the connection's start to the last byte of the reply.
    pub elapsed_ms: f64,
}

/// One failed attempt: whether another may help.
pub(crate) enum Attempt {
    Lost(String),
    Refused(String),
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attempt::Lost(e) | Attempt::Refused(e) => f.write_str(e),
        }
    }
}

/// Connects to `addr`, opens TLS checking `name`, sends `request` on a
/// connection of its own and reads the whole reply; then closes as
/// [`close`] does.
pub(crate) async fn exchange(
    addr: SocketAddr,
    tls: Arc<tokio_rustls::rustls::ClientConfig>,
    name: ServerName<'static>,
    request: Request<Full<Bytes>>,
) -> Result<Exchange, Attempt> {
    let lost = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| Attempt::Lost(format!("{what}: {e}"))
    };
    let t0 = Instant::now();
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(lost(&format!("connect {addr}")))?;
    tcp.set_nodelay(true).map_err(lost("TCP_NODELAY"))?;
    let local = tcp.local_addr().map_err(lost("local address"))?;
    let stream = match TlsConnector::from(tls).connect(name, tcp).await {
        Ok(s) => s,
        // A certificate the lab root does not vouch for, or a TLS alert:
        // the same answer on every attempt.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            return Err(Attempt::Refused(e.to_string()))
        }
        Err(e) => return Err(lost("TLS handshake")(e)),
    };
    let (_, conn) = stream.get_ref();
    let tls_version = conn
        .protocol_version()
        .map(|v| format!("{v:?}"))
        .unwrap_or_default();
    let cipher = conn
        .negotiated_cipher_suite()
        .map(|c| format!("{:?}", c.suite()))
        .unwrap_or_default();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Attempt::Lost(format!("HTTP: {e}")))?;
    // `without_shutdown` hands the stream back after the exchange, so the
    // app can close it as TLS and TCP expect (below).
    let driver = tokio::spawn(connection.without_shutdown());
    let reply = sender
        .send_request(request)
        .await
        .map_err(|e| Attempt::Lost(format!("sending the request: {e}")))?;
    let status = reply.status().as_u16();
    let body = reply
        .into_body()
        .collect()
        .await
        .map_err(|e| Attempt::Lost(format!("reading the reply: {e}")))?
        .to_bytes();
    let elapsed_ms = t0.elapsed().as_secs_f64() * 1e3;
    drop(sender);
    close(driver).await;
    Ok(Exchange {
        status,
        body,
        local,
        tls_version,
        cipher,
        elapsed_ms,
    })
}

/// Ends the connection cleanly: close_notify and FIN (RFC 8446 § 6.1),
/// then reads until the server's own, so no late byte from it meets a
/// closed socket (which the kernel would answer with RST). Bounded: a
/// server that never closes is left after a second.
pub(crate) async fn close<T>(
    driver: tokio::task::JoinHandle<hyper::Result<hyper::client::conn::http1::Parts<TokioIo<T>>>>,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let limit = Duration::from_secs(1);
    let Ok(Ok(Ok(parts))) = tokio::time::timeout(limit, driver).await else {
        return;
    };
    let mut stream = parts.io.into_inner();
    let _ = tokio::time::timeout(limit, async {
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 512];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_v4_uuids_and_differ() {
        let (a, b) = (new_idempotency_key(), new_idempotency_key());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!("89ab".contains(&a[19..20]), "{a}");
    }

    #[test]
    fn the_rpc_path_is_one_line_per_call_then_the_commit() {
        let body = serde_json::json!({"status": "created", "rpc": {
            "path": [
                {"call": "db.order_create", "provider": "192.168.1.60:20880", "tried": 1, "ms": 1.2, "result": "created"},
                {"call": "stock.deduct", "provider": "192.168.1.50:20880", "tried": 2, "ms": 3.44, "result": "taken", "cas_attempts": 2},
                {"call": "coupon.use", "result": "used", "cas_attempts": 1},
            ],
            "commit": {"seq": 42, "replication": "acked in 0.4 ms"},
        }});
        assert_eq!(
            rpc_lines(&body),
            [
                "  rpc  db.order_create   192.168.1.60:20880   1.2 ms  created",
                "  rpc  stock.deduct      192.168.1.50:20880   3.4 ms  taken (2 CAS attempts, 2 providers tried)",
                "  rpc  coupon.use        -                      ? ms  used (1 CAS attempt)",
                "  commit seq 42, replication acked in 0.4 ms",
            ]
        );
        // A longer call name widens the column; a result that ends in a
        // parenthesis takes the notes inside it.
        let wide = serde_json::json!({"rpc": {"path": [
            {"call": "stock.deduct", "provider": "127.0.0.1:41991", "ms": 2.1, "result": "taken (stock 0 version 1)", "cas_attempts": 1},
            {"call": "db.order_set_state", "provider": "127.0.0.1:45259", "ms": 1.1, "result": "confirmed"},
        ]}});
        assert_eq!(
            rpc_lines(&wide),
            [
                "  rpc  stock.deduct       127.0.0.1:41991      2.1 ms  taken (stock 0 version 1, 1 CAS attempt)",
                "  rpc  db.order_set_state 127.0.0.1:45259      1.1 ms  confirmed",
            ]
        );
        let replay = serde_json::json!({"rpc": {"path": [],
            "commit": {"seq": null, "replication": "nothing new was committed"}}});
        assert_eq!(rpc_lines(&replay), ["  commit: nothing new was committed"]);
        assert!(rpc_lines(&serde_json::json!({"status": "created"})).is_empty());
        assert!(rpc_lines(&Value::String("502 Bad Gateway".into())).is_empty());
    }

    #[test]
    fn a_sold_out_order_is_said_so() {
        let body = serde_json::json!({"error": "趣谈网络协议 is sold out", "order_id": "ord-1", "outcome": "sold_out"});
        assert_eq!(
            refusal(409, &body).unwrap(),
            "sold out: 趣谈网络协议 is sold out (order ord-1 was not placed)"
        );
        let body = serde_json::json!({"error": "coupon refused", "order_id": "ord-2", "outcome": "cancelled"});
        assert_eq!(
            refusal(409, &body).unwrap(),
            "cancelled: coupon refused (order ord-2 was not placed)"
        );
        let body =
            serde_json::json!({"error": "order service: no provider of \"order\" is registered"});
        assert_eq!(
            refusal(503, &body).unwrap(),
            "refused (503): order service: no provider of \"order\" is registered"
        );
        assert_eq!(refusal(502, &Value::Null).unwrap(), "refused (502)");
        assert_eq!(refusal(201, &body), None);
    }

    #[tokio::test]
    async fn a_refused_port_is_retried_then_reported() {
        let dir = tempfile::tempdir().unwrap();
        let paths = pki::PkiPaths::new(dir.path());
        pki::make(&paths, "t", &["www.geektime.com"]).unwrap();
        // A port nobody listens on: each attempt is refused at once.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = free.local_addr().unwrap();
        drop(free);
        let req = OrderRequest {
            host: "www.geektime.com".into(),
            addr,
            root: paths.root_cert(),
            key_log: false,
            idempotency_key: new_idempotency_key(),
            body: story_order(),
            retries: 2,
            timeout: Duration::from_secs(2),
        };
        match order(&req).await {
            Err(OrderError::Unreachable { attempts, errors }) => {
                assert_eq!(attempts, 3);
                assert_eq!(errors.len(), 3);
                assert!(errors[0].contains("connect"), "{errors:?}");
            }
            other => panic!("{other:?}"),
        }
    }
}
