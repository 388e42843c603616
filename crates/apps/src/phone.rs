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
use serde::Serialize;
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
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

/// The reply and what the app saw on the way.
#[derive(Debug, Clone, Serialize)]
pub struct OrderOutcome {
    pub status: u16,
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

/// The address `name` has in the hosts file at `path` (hosts(5)).
pub fn resolve(path: &Path, name: &str) -> std::io::Result<Option<Ipv4Addr>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text.lines().find_map(|l| {
        let mut f = l.split('#').next()?.split_whitespace();
        let addr: Ipv4Addr = f.next()?.parse().ok()?;
        f.any(|n| n.eq_ignore_ascii_case(name)).then_some(addr)
    }))
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

/// One failed attempt: whether another may help.
enum Attempt {
    Lost(String),
    Refused(String),
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
    let lost = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| Attempt::Lost(format!("{what}: {e}"))
    };
    let t0 = Instant::now();
    let tcp = TcpStream::connect(req.addr)
        .await
        .map_err(lost(&format!("connect {}", req.addr)))?;
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
    let body = serde_json::to_vec(&req.body).expect("a JSON value serializes");
    let request = Request::post("/purchaseOrder")
        .header(hyper::header::HOST, &req.host)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, "d11-phone/0.1")
        .header("Idempotency-Key", &req.idempotency_key)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| Attempt::Refused(format!("building the request: {e}")))?;
    let reply = sender
        .send_request(request)
        .await
        .map_err(|e| Attempt::Lost(format!("sending the request: {e}")))?;
    let status = reply.status().as_u16();
    let bytes = reply
        .into_body()
        .collect()
        .await
        .map_err(|e| Attempt::Lost(format!("reading the reply: {e}")))?
        .to_bytes();
    let elapsed_ms = t0.elapsed().as_secs_f64() * 1e3;
    drop(sender);
    close(driver).await;
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok(OrderOutcome {
        status,
        body,
        attempts: 1,
        errors: Vec::new(),
        idempotency_key: req.idempotency_key.clone(),
        local,
        remote: req.addr,
        tls_version,
        cipher,
        elapsed_ms,
    })
}

/// Ends the connection cleanly: close_notify and FIN (RFC 8446 § 6.1),
/// then reads until the server's own, so no late byte from it meets a
/// closed socket (which the kernel would answer with RST). Bounded: a
/// server that never closes is left after a second.
async fn close<T>(
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
    fn resolves_from_a_hosts_file_and_ignores_comments() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hosts");
        std::fs::write(
            &p,
            "# d11\n127.0.0.1\tlocalhost\n#203.0.113.9 www.geektime.com\n203.0.113.24\tshop www.GeekTime.com # VIP\n",
        )
        .unwrap();
        assert_eq!(
            resolve(&p, "www.geektime.com").unwrap(),
            Some(Ipv4Addr::new(203, 0, 113, 24))
        );
        assert_eq!(resolve(&p, "geektime.com").unwrap(), None);
        assert!(resolve(&dir.path().join("none"), "x").is_err());
    }

    #[test]
    fn idempotency_keys_are_v4_uuids_and_differ() {
        let (a, b) = (new_idempotency_key(), new_idempotency_key());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!("89ab".contains(&a[19..20]), "{a}");
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
