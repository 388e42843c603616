//! The phone looking at the product page's pictures (`d11 browse`): one
//! HTTPS connection to the address its resolver gave for the CDN's name
//! (an edge), kept alive as a browser keeps it, a GET per picture; for
//! each, what the caches said (`X-Cache`, `Via`, `Age`, RFC 9111 § 5.1)
//! and how long it took.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

/// What to fetch, from where.
#[derive(Debug, Clone)]
pub struct BrowseRequest {
    /// The name in the URLs, the SNI and the certificate check.
    pub host: String,
    /// The edge the name resolved to.
    pub addr: SocketAddr,
    /// The PEM root the phone trusts.
    pub root: PathBuf,
    pub key_log: bool,
    pub paths: Vec<String>,
    /// For the whole page: connect, handshake and every GET.
    pub timeout: Duration,
}

/// One picture as the phone got it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Picture {
    pub path: String,
    pub status: u16,
    pub bytes: usize,
    /// `X-Cache`: how each cache on the way served it, the edge first.
    pub x_cache: Option<String>,
    pub via: Option<String>,
    /// Seconds since the stored answer was made (a hit).
    pub age: Option<u64>,
    pub etag: Option<String>,
    /// From sending the request to the last byte.
    pub ms: f64,
    #[serde(skip)]
    pub body: Bytes,
}

impl Picture {
    /// The cache that answered the phone: the first `from NAME` of
    /// `X-Cache`.
    pub fn edge(&self) -> Option<&str> {
        let first = self.x_cache.as_deref()?.split(',').next()?;
        first.split(" from ").nth(1).map(str::trim)
    }
}

/// The page: the connection and each picture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page {
    pub remote: SocketAddr,
    pub local: SocketAddr,
    pub tls_version: String,
    /// Connect and TLS handshake.
    pub connect_ms: f64,
    pub pictures: Vec<Picture>,
}

/// Why the page could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum BrowseError {
    /// the host is not a DNS name
    #[error("{0:?} is not a DNS name")]
    Name(String),
    /// the lab PKI could not be read
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    /// the connection or an exchange failed
    #[error("{0}")]
    Lost(String),
    /// no answer in time
    #[error("no answer within {0} ms")]
    Timeout(u128),
}

/// Fetches every path of `req` over one connection.
pub async fn browse(req: &BrowseRequest) -> Result<Page, BrowseError> {
    let tls = crate::pki::client_config(&req.root, req.key_log)?;
    match tokio::time::timeout(req.timeout, page(req, tls)).await {
        Ok(got) => got,
        Err(_) => Err(BrowseError::Timeout(req.timeout.as_millis())),
    }
}

async fn page(
    req: &BrowseRequest,
    tls: Arc<tokio_rustls::rustls::ClientConfig>,
) -> Result<Page, BrowseError> {
    let lost = |what: &str| {
        let what = what.to_string();
        move |e: &dyn std::fmt::Display| BrowseError::Lost(format!("{what}: {e}"))
    };
    let name =
        ServerName::try_from(req.host.clone()).map_err(|_| BrowseError::Name(req.host.clone()))?;
    let t0 = Instant::now();
    let tcp = (TcpStream::connect(req.addr).await).map_err(|e| lost("connect")(&e))?;
    let _ = tcp.set_nodelay(true);
    let local = tcp.local_addr().map_err(|e| lost("local address")(&e))?;
    let stream = (TlsConnector::from(tls).connect(name, tcp).await)
        .map_err(|e| lost("TLS handshake")(&e))?;
    let tls_version = (stream.get_ref().1.protocol_version())
        .map(|v| format!("{v:?}"))
        .unwrap_or_default();
    let connect_ms = t0.elapsed().as_secs_f64() * 1e3;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| lost("HTTP")(&e))?;
    let driver = tokio::spawn(conn.without_shutdown());
    let mut pictures = Vec::new();
    for path in &req.paths {
        let t = Instant::now();
        let get = Request::get(path.as_str())
            .header(http::header::HOST, &req.host)
            .header(http::header::USER_AGENT, "d11-phone/0.1")
            .body(Empty::<Bytes>::new())
            .map_err(|e| lost("building the request")(&e))?;
        sender.ready().await.map_err(|e| lost("connection")(&e))?;
        let reply = (sender.send_request(get).await).map_err(|e| lost(path)(&e))?;
        let (head, body) = reply.into_parts();
        let body = (Limited::new(body, super::MAX_OBJECT).collect().await)
            .map_err(|e| lost(path)(&*e))?
            .to_bytes();
        let text = |n: &str| {
            (head.headers.get(n))
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        pictures.push(Picture {
            path: path.clone(),
            status: head.status.as_u16(),
            bytes: body.len(),
            x_cache: text("x-cache"),
            via: text("via"),
            age: text("age").and_then(|a| a.parse().ok()),
            etag: text("etag"),
            ms: t.elapsed().as_secs_f64() * 1e3,
            body,
        });
    }
    drop(sender);
    crate::phone::close(driver).await;
    Ok(Page {
        remote: req.addr,
        local,
        tls_version,
        connect_ms,
        pictures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_edge_is_the_first_cache_named_in_x_cache() {
        let mut p = Picture {
            path: "/images/cover.jpg".into(),
            status: 200,
            bytes: 0,
            x_cache: Some("MISS from edge-a2, MISS from parent".into()),
            via: None,
            age: None,
            etag: None,
            ms: 0.0,
            body: Bytes::new(),
        };
        assert_eq!(p.edge(), Some("edge-a2"));
        p.x_cache = Some("HIT from edge-c3".into());
        assert_eq!(p.edge(), Some("edge-c3"));
        p.x_cache = None;
        assert_eq!(p.edge(), None);
    }
}
