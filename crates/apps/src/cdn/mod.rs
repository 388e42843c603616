//! The CDN of chapter 4: the shop's origin (an object store) and the caches
//! in front of it, edge and parent. Their logic is sans-IO: the origin's
//! [`origin::Bucket`] answers requests, a cache's [`store::Store`] decides
//! hit, miss or revalidation per RFC 9111 on the clock it is given. This
//! file is the origin's app: the bucket behind the lab's HTTPS front
//! ([`crate::https`]), its objects made at start from the topology; the
//! caches' app is [`cache`].

pub mod browse;
pub mod cache;
pub mod origin;
pub mod reference;
pub mod store;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use d11_core::ConfigError;
use http_body_util::{BodyExt, Limited};
use serde::{Deserialize, Serialize};

use crate::https::{Front, FrontReport, Limits};
use origin::{Bucket, Object, OriginStats};

/// The accept queue of the CDN's servers (as the controller's).
const BACKLOG: usize = 4096;

/// `config` of an `app = "cdn-origin"` host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginSettings {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The objects the bucket starts with.
    #[serde(default)]
    pub objects: Vec<ObjectSettings>,
    /// The largest body a PUT may carry; a longer one is answered 413.
    #[serde(default = "default_max_put")]
    pub max_put: usize,
    /// How long a client may take to send a request's headers.
    #[serde(default = "default_timeout_ms")]
    pub header_timeout_ms: u64,
    #[serde(default = "default_timeout_ms")]
    pub handshake_timeout_ms: u64,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

/// One object made at start: `size` bytes, the same for the same path in
/// every run (so a client can check what a cache gave it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectSettings {
    pub path: String,
    #[serde(default = "default_content_type")]
    pub content_type: String,
    /// What the shop sets, e.g. "public, max-age=60".
    #[serde(default)]
    pub cache_control: Option<String>,
    /// The request fields its answers vary on, e.g. "Accept-Encoding".
    #[serde(default)]
    pub vary: Option<String>,
    pub size: usize,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 443))
}
fn default_max_put() -> usize {
    MAX_OBJECT
}
fn default_timeout_ms() -> u64 {
    5000
}
fn default_max_connections() -> usize {
    1024
}
fn default_content_type() -> String {
    "application/octet-stream".into()
}

/// The largest object made at start or put.
const MAX_OBJECT: usize = 16 << 20;

/// The body of the object at `path`: `size` bytes of a generator seeded by
/// the path, the same in every run.
pub fn object_bytes(path: &str, size: usize) -> Bytes {
    let mut x = path.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    }) | 1;
    let mut v = Vec::with_capacity(size + 8);
    while v.len() < size {
        // xorshift64
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(size);
    Bytes::from(v)
}

impl OriginSettings {
    /// The bucket as the settings make it at `now`; errors name the key.
    pub fn bucket(&self, now: SystemTime) -> Result<Bucket, ConfigError> {
        let mut b = Bucket::new();
        for (i, o) in self.objects.iter().enumerate() {
            let key = |k: &str| format!("config.objects[{i}].{k}");
            if o.size > MAX_OBJECT {
                return Err(ConfigError::new(
                    key("size"),
                    format!("{} is more than {MAX_OBJECT} bytes", o.size),
                ));
            }
            let obj = Object::new(
                object_bytes(&o.path, o.size),
                &o.content_type,
                o.cache_control.as_deref(),
                now,
            )
            .varying(o.vary.as_deref());
            match b.put(&o.path, obj) {
                Ok(true) => {}
                Ok(false) => return Err(ConfigError::new(key("path"), "named twice")),
                Err(why) => return Err(ConfigError::new(key("path"), why)),
            }
        }
        Ok(b)
    }
}

/// One object as `d11 show ORIGIN` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRow {
    pub path: String,
    pub bytes: usize,
    pub etag: String,
    pub last_modified: String,
    pub cache_control: Option<String>,
    #[serde(default)]
    pub vary: Option<String>,
}

/// What the origin reports on its control socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OriginReport {
    #[serde(flatten)]
    pub front: FrontReport,
    pub stats: OriginStats,
    pub objects: Vec<ObjectRow>,
}

/// The origin: its bucket behind the HTTPS front.
pub struct Origin {
    bucket: Mutex<Bucket>,
    front: Arc<Front>,
    max_put: usize,
}

impl Origin {
    pub fn new(
        settings: &OriginSettings,
        tls: Arc<rustls::ServerConfig>,
    ) -> Result<Arc<Origin>, ConfigError> {
        let limits = Limits::from_ms(
            settings.handshake_timeout_ms,
            settings.header_timeout_ms,
            settings.max_connections,
        );
        Ok(Arc::new(Origin {
            bucket: Mutex::new(settings.bucket(SystemTime::now())?),
            front: Front::new(tls, limits),
            max_put: settings.max_put,
        }))
    }

    fn bucket(&self) -> std::sync::MutexGuard<'_, Bucket> {
        self.bucket.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every request goes to the bucket (the fuzz target serves this).
    pub fn router(self: &Arc<Self>) -> Router {
        self.front.fallback(answer, self.clone())
    }

    /// Serves on `listener` until `shutdown` resolves.
    pub async fn serve(
        self: &Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        let me = self.clone();
        self.front
            .serve_fallback(listener, answer, me, shutdown)
            .await
    }

    pub fn report(&self) -> OriginReport {
        let b = self.bucket();
        OriginReport {
            front: self.front.report(),
            stats: b.stats.clone(),
            objects: (b.objects())
                .map(|(path, o)| ObjectRow {
                    path: path.clone(),
                    bytes: o.body.len(),
                    etag: o.etag.clone(),
                    last_modified: httpdate::fmt_http_date(o.modified),
                    cache_control: o.cache_control.clone(),
                    vary: o.vary.clone(),
                })
                .collect(),
        }
    }
}

async fn answer(
    State(o): State<Arc<Origin>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match Limited::new(body, o.max_put).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return (StatusCode::PAYLOAD_TOO_LARGE, "body too large or cut\n").into_response()
        }
    };
    let a = o
        .bucket()
        .answer(&method, uri.path(), &headers, body, SystemTime::now());
    let mut resp = Response::new(Body::from(a.body));
    *resp.status_mut() = a.status;
    *resp.headers_mut() = a.headers;
    resp
}

/// `app = "cdn-origin"`: the shop's object store behind the CDN.
pub struct OriginApp;

impl crate::app::App for OriginApp {
    const NAME: &'static str = "cdn-origin";
    const SUMMARY: &'static str =
        "the shop's object store behind the CDN: GET, HEAD, PUT over HTTPS with validators and ranges";
    type Settings = OriginSettings;
    fn listens(s: &OriginSettings) -> Option<u16> {
        Some(s.listen.port())
    }
    fn check(env: &crate::app::AppEnv, s: &OriginSettings) -> Result<(), ConfigError> {
        s.bucket(SystemTime::now())?;
        env.https_pki("the origin").map(|_| ())
    }
    fn run(
        env: crate::app::AppEnv,
        s: OriginSettings,
        ctl: tokio::net::UnixListener,
        shutdown: crate::app::Shutdown,
    ) -> crate::app::Running {
        Box::pin(async move {
            let tls = crate::pki::server_config(env.https_pki("the origin")?)?;
            let listener = crate::listen(s.listen, BACKLOG)?;
            let origin = Origin::new(&s, tls)?;
            let report = {
                let o = origin.clone();
                crate::control::report(move || o.report())
            };
            tokio::spawn(crate::control::serve(
                ctl,
                env.node.clone(),
                Self::NAME,
                report,
            ));
            tracing::info!(addr = %listener.local_addr()?, "origin up");
            origin.serve(listener, shutdown).await?;
            Ok(())
        })
    }
}
