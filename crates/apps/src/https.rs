//! The lab's HTTPS front, shared by every app that serves HTTP/1.1 over TLS
//! (the controller, the CDN's origin and caches): the accept loop with a
//! cap on connections served at once, the TLS handshake (tokio-rustls) under
//! a deadline, hyper's HTTP/1.1 with a deadline on each request's headers
//! (slowloris), graceful draining at shutdown, and the counters every such
//! server reports (connections, handshakes by version, cipher and failure
//! reason, header timeouts, requests by status). What a request means is
//! the app's axum [`Router`], wrapped in [`Front::counted`] (an app with one
//! handler for every request, as the CDN's, takes [`Front::fallback`] and
//! [`Front::serve_fallback`]); each request carries its [`Session`].

use std::collections::BTreeMap;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tower::ServiceExt;

/// How long in-flight requests may take to finish once shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long, and how many bytes, [`linger`] reads from a client after the
/// last response before it closes anyway.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 4 << 20;

/// Closes a connection after its last response as RFC 9112 § 9.6 asks
/// (Apache's and nginx's lingering close): first our sending side (TLS
/// close_notify, then the TCP FIN), then read and discard what the client is
/// still sending until it closes, [`LINGER_TIME`] or [`LINGER_BYTES`]. A
/// socket closed with unread data sends a reset, which can destroy the
/// response before the client has read it: a 413 answered to a large body's
/// headers would reach the client as an empty reply.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(mut io: S) {
    let _ = tokio::time::timeout(LINGER_TIME, async {
        if io.shutdown().await.is_err() {
            return;
        }
        let mut buf = vec![0; 16 * 1024];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// The front's deadlines and its cap.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long a TLS handshake may take (garbage or stalled handshakes).
    pub handshake: Duration,
    /// How long a client may take to send a request's headers; also how
    /// long an idle keep-alive connection is kept.
    pub headers: Duration,
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
}

impl Limits {
    /// From the settings' milliseconds.
    pub fn from_ms(handshake_ms: u64, headers_ms: u64, max_connections: usize) -> Limits {
        Limits {
            handshake: Duration::from_millis(handshake_ms),
            headers: Duration::from_millis(headers_ms),
            max_connections,
        }
    }
}

/// The TLS session a request arrived on (an extension of every request).
#[derive(Debug, Clone)]
pub struct Session {
    pub peer: SocketAddr,
    pub version: String,
    pub cipher: String,
}

/// What the front counted, as each app's report carries it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FrontReport {
    pub connections: u64,
    pub active_connections: u64,
    pub tls_handshakes: u64,
    /// Failed handshakes by reason.
    pub tls_handshake_failures: BTreeMap<String, u64>,
    pub tls_versions: BTreeMap<String, u64>,
    pub tls_ciphers: BTreeMap<String, u64>,
    pub header_timeouts: u64,
    /// Requests by HTTP status (`"201"`).
    pub requests: BTreeMap<String, u64>,
}

#[derive(Default)]
struct Counters {
    connections: u64,
    active_connections: u64,
    tls_handshakes: u64,
    tls_handshake_failures: BTreeMap<&'static str, u64>,
    tls_versions: BTreeMap<String, u64>,
    tls_ciphers: BTreeMap<String, u64>,
    header_timeouts: u64,
    requests: BTreeMap<u16, u64>,
}

/// An HTTPS server's front.
pub struct Front {
    tls: tokio_rustls::TlsAcceptor,
    limits: Limits,
    counters: Mutex<Counters>,
}

impl Front {
    pub fn new(tls: Arc<rustls::ServerConfig>, limits: Limits) -> Arc<Front> {
        Arc::new(Front {
            tls: tokio_rustls::TlsAcceptor::from(tls),
            limits,
            counters: Mutex::new(Counters::default()),
        })
    }

    fn count(&self, f: impl FnOnce(&mut Counters)) {
        f(&mut self.counters.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// `router` with the front's counter of requests by status around it:
    /// what an app serves (and its unit tests call) is this.
    pub fn counted(self: &Arc<Self>, router: Router) -> Router {
        let front = self.clone();
        router.layer(axum::middleware::map_response(
            move |resp: axum::response::Response| {
                let front = front.clone();
                async move {
                    let status = resp.status().as_u16();
                    front.count(|c| *c.requests.entry(status).or_default() += 1);
                    resp
                }
            },
        ))
    }

    /// The router of an app whose every request goes to `handler` with
    /// `state` (the CDN's origin and caches), counted as [`Front::counted`].
    pub fn fallback<H, T, S>(self: &Arc<Self>, handler: H, state: S) -> Router
    where
        H: axum::handler::Handler<T, S>,
        T: 'static,
        S: Clone + Send + Sync + 'static,
    {
        self.counted(Router::new().fallback(handler).with_state(state))
    }

    /// Serves [`Front::fallback`]`(handler, state)` on `listener` as
    /// [`Front::serve`] does, until `shutdown` resolves.
    pub async fn serve_fallback<H, T, S>(
        self: &Arc<Self>,
        listener: TcpListener,
        handler: H,
        state: S,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()>
    where
        H: axum::handler::Handler<T, S>,
        T: 'static,
        S: Clone + Send + Sync + 'static,
    {
        let router = self.fallback(handler, state);
        self.serve(listener, router, shutdown).await
    }

    /// Serves `router` on `listener` until `shutdown` resolves; then stops
    /// accepting, asks open connections to finish their current request and
    /// waits for them at most 5 s.
    pub async fn serve(
        self: &Arc<Self>,
        listener: TcpListener,
        router: Router,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let slots = Arc::new(Semaphore::new(self.limits.max_connections.max(1)));
        let (drain_tx, drain_rx) = watch::channel(());
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let slot = tokio::select! {
                _ = &mut shutdown => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => continue,
                slot = slots.clone().acquire_owned() => slot.expect("never closed"),
            };
            let accepted = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((tcp, peer)) => {
                    let (front, router, drain) = (self.clone(), router.clone(), drain_rx.clone());
                    conns.spawn(async move {
                        front.connection(tcp, peer, router, drain).await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    // Out of file descriptors, most likely: let some close.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        drop(listener);
        // Closing the channel tells every connection to finish up.
        drop(drain_tx);
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(left = conns.len(), "drain timed out; closing the rest");
            conns.shutdown().await;
        }
        Ok(())
    }

    /// One client connection: the TLS handshake (bounded), then HTTP/1.1
    /// until the client leaves, a timeout fires or the server drains.
    async fn connection(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        router: Router,
        drain: watch::Receiver<()>,
    ) {
        self.count(|c| {
            c.connections += 1;
            c.active_connections += 1;
        });
        let _ = tcp.set_nodelay(true);
        let tls = match tokio::time::timeout(self.limits.handshake, self.tls.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return self.handshake_failed(peer, failure_reason(&e), &e),
            Err(_) => return self.handshake_failed(peer, "timeout", &"no handshake in time"),
        };
        let (_, conn) = tls.get_ref();
        let session = Session {
            peer,
            version: conn
                .protocol_version()
                .map_or("-".into(), |v| format!("{v:?}")),
            cipher: conn
                .negotiated_cipher_suite()
                .map_or("-".into(), |s| format!("{:?}", s.suite())),
        };
        self.count(|c| {
            c.tls_handshakes += 1;
            *c.tls_versions.entry(session.version.clone()).or_default() += 1;
            *c.tls_ciphers.entry(session.cipher.clone()).or_default() += 1;
        });
        self.serve_http(tls, session, router, drain, false).await;
        self.count(|c| c.active_connections -= 1);
    }

    /// HTTP/1.1 on a connection whose TLS is done (or, for
    /// [`Front::serve_plaintext`], never was), until the client leaves, a
    /// timeout fires or the server drains. `half_close`: go on answering
    /// after the client has shut down its side.
    async fn serve_http<S>(
        self: &Arc<Self>,
        io: S,
        session: Session,
        router: Router,
        mut drain: watch::Receiver<()>,
        half_close: bool,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let peer = session.peer;
        let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
            req.extensions_mut().insert(session.clone());
            Box::pin(router.clone().oneshot(req.map(Body::new)))
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .half_close(half_close)
            .header_read_timeout(self.limits.headers);
        let mut conn = http.serve_connection(TokioIo::new(io), service);
        let served = tokio::select! {
            served = poll_fn(|cx| conn.poll_without_shutdown(cx)) => served,
            _ = drain.changed() => {
                std::pin::Pin::new(&mut conn).graceful_shutdown();
                poll_fn(|cx| conn.poll_without_shutdown(cx)).await
            }
        };
        let io = conn.into_parts().io.into_inner();
        match served {
            Err(e) if e.is_timeout() => {
                self.count(|c| c.header_timeouts += 1);
                tracing::info!(%peer, "headers not received in time; connection closed");
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
                linger(io).await;
            }
            Ok(()) => linger(io).await,
        }
    }

    /// Serves one client's HTTP/1.1 bytes, as TLS would have decrypted them,
    /// through the same hyper connection and `router` as a real client, and
    /// answers the bytes written back. The client's side is shut down after
    /// `request`, as a client that sent everything and waits. The request
    /// handling without socket or TLS, for fuzz targets.
    pub async fn serve_plaintext(self: &Arc<Self>, router: Router, request: &[u8]) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let session = Session {
            peer: SocketAddr::from(([192, 0, 2, 1], 40000)),
            version: "plaintext".into(),
            cipher: "-".into(),
        };
        // Never closed: no drain.
        let (_drain_tx, drain) = watch::channel(());
        let served = self.serve_http(server, session, router, drain, true);
        let client = async move {
            let _ = client.write_all(request).await;
            let _ = client.shutdown().await;
            let mut reply = Vec::new();
            let _ = client.read_to_end(&mut reply).await;
            reply
        };
        tokio::join!(served, client).1
    }

    fn handshake_failed(&self, peer: SocketAddr, reason: &'static str, e: &dyn std::fmt::Display) {
        self.count(|c| {
            c.active_connections -= 1;
            *c.tls_handshake_failures.entry(reason).or_default() += 1;
        });
        // A connection closed (or reset) before its handshake is mostly a
        // load balancer's TCP health check: counted, logged only at debug.
        if reason == "eof" || reason == "reset" {
            tracing::debug!(%peer, reason, error = %e, "TLS handshake failed");
        } else {
            tracing::info!(%peer, reason, error = %e, "TLS handshake failed");
        }
    }

    /// The counters, for the app's report.
    pub fn report(&self) -> FrontReport {
        let c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        FrontReport {
            connections: c.connections,
            active_connections: c.active_connections,
            tls_handshakes: c.tls_handshakes,
            tls_handshake_failures: (c.tls_handshake_failures.iter())
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            tls_versions: c.tls_versions.clone(),
            tls_ciphers: c.tls_ciphers.clone(),
            header_timeouts: c.header_timeouts,
            requests: (c.requests.iter())
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
        }
    }
}

/// Names a failed handshake for the counters.
fn failure_reason(e: &std::io::Error) -> &'static str {
    use rustls::Error as T;
    match e.get_ref().and_then(|e| e.downcast_ref::<T>()) {
        Some(T::InvalidMessage(_)) => "invalid_message",
        Some(T::PeerIncompatible(_)) => "peer_incompatible",
        Some(T::NoApplicationProtocol) => "no_application_protocol",
        Some(T::AlertReceived(_)) => "alert_received",
        Some(_) => "tls_error",
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => "eof",
        None if e.kind() == std::io::ErrorKind::ConnectionReset => "reset",
        None => "io",
    }
}
