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

/// The picture every `.jpg` object carries: a 160×90 baseline JFIF made
/// by libjpeg-turbo's cjpeg (fixtures/make-picture.sh has the command).
pub const PICTURE: &[u8] = include_bytes!("fixtures/picture.jpg");

/// The body of the object at `path`, `size` bytes, the same in every run.
/// A path ending in `.jpg` or `.jpeg` is a real JPEG: [`PICTURE`] with
/// comment segments (COM, ITU-T T.81 § B.2.4.5) after its JFIF header
/// filled with printable text from a generator seeded by the path, up to
/// `size` (any viewer shows the picture; tshark's JFIF dissector reads
/// it). Any other path, or a size the picture and one COM segment do not
/// fit, is `size` bytes of the generator.
pub fn object_bytes(path: &str, size: usize) -> Bytes {
    let lower = path.to_ascii_lowercase();
    let jpeg = lower.ends_with(".jpg") || lower.ends_with(".jpeg");
    match (jpeg, size.checked_sub(PICTURE.len())) {
        (true, Some(pad)) if pad == 0 || pad >= 4 => picture(path, pad),
        _ => generated(path, size),
    }
}

/// `size` bytes of an xorshift64 generator seeded by `path`.
fn generated(path: &str, size: usize) -> Bytes {
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

/// [`PICTURE`] with `pad` (0, or at least 4) bytes of COM segments after
/// its APP0 (JFIF) segment, which must follow SOI (JFIF 1.02 § 4).
fn picture(path: &str, pad: usize) -> Bytes {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    // SOI, then APP0: FF E0 and its length (which counts itself).
    let app0_end = 4 + usize::from(u16::from_be_bytes([PICTURE[4], PICTURE[5]]));
    let text = generated(path, pad);
    let mut v = Vec::with_capacity(PICTURE.len() + pad);
    v.extend_from_slice(&PICTURE[..app0_end]);
    let (mut left, mut text) = (pad, &text[..]);
    while left > 0 {
        // A segment is FF FE, a length counting itself, then at most
        // 65533 bytes; none shorter than 4 is left over.
        let mut seg = left.min(4 + 65533);
        if (1..4).contains(&(left - seg)) {
            seg = left - 4;
        }
        v.extend_from_slice(&[0xff, 0xfe]);
        v.extend_from_slice(&((seg - 2) as u16).to_be_bytes());
        let (now, rest) = text.split_at(seg - 4);
        v.extend(now.iter().map(|b| ALPHABET[usize::from(b % 64)]));
        text = rest;
        left -= seg;
    }
    v.extend_from_slice(&PICTURE[app0_end..]);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The segments of a JPEG up to SOS: each marker and its data.
    fn segments(jpeg: &[u8]) -> Vec<(u8, &[u8])> {
        assert_eq!(&jpeg[..2], [0xff, 0xd8], "SOI");
        let (mut out, mut at) = (Vec::new(), 2);
        loop {
            assert_eq!(jpeg[at], 0xff, "a marker at {at}");
            let marker = jpeg[at + 1];
            let len = usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
            out.push((marker, &jpeg[at + 4..at + 2 + len]));
            at += 2 + len;
            if marker == 0xda {
                return out;
            }
        }
    }

    #[test]
    fn a_jpg_object_is_the_picture_with_comments_up_to_its_size() {
        let n = PICTURE.len();
        let sizes = [
            n,
            n + 4,
            n + 5,
            8000,
            120_000,
            n + 65537,
            n + 65538,
            n + 65540,
            n + 65541,
        ];
        for size in sizes {
            let b = object_bytes("/images/cover.jpg", size);
            assert_eq!(b.len(), size);
            assert_eq!(&b[b.len() - 2..], [0xff, 0xd9], "EOI");
            let segs = segments(&b);
            // JFIF's APP0 first, then the comments, then the picture's own.
            assert_eq!((segs[0].0, &segs[0].1[..5]), (0xe0, &b"JFIF\0"[..]));
            let comments: Vec<&[u8]> = (segs.iter())
                .filter(|(m, _)| *m == 0xfe)
                .map(|(_, d)| *d)
                .collect();
            let text: usize = comments.iter().map(|d| d.len() + 4).sum();
            assert_eq!(text, size - n, "{size}");
            assert!(comments.iter().all(|d| d.iter().all(u8::is_ascii_graphic)));
            let without: Vec<u8> = {
                let mut v = b[..2].to_vec();
                let mut at = 2;
                while b[at + 1] != 0xda {
                    let len = usize::from(u16::from_be_bytes([b[at + 2], b[at + 3]]));
                    if b[at + 1] != 0xfe {
                        v.extend_from_slice(&b[at..at + 2 + len]);
                    }
                    at += 2 + len;
                }
                v.extend_from_slice(&b[at..]);
                v
            };
            assert_eq!(without, PICTURE, "{size}");
        }
        // Another path, another text; the same path, the same bytes.
        assert_ne!(
            object_bytes("/images/thumb-1.jpg", 8000),
            object_bytes("/images/thumb-2.jpg", 8000)
        );
        assert_eq!(object_bytes("/a.JPEG", 8000), object_bytes("/a.JPEG", 8000));
        // Too small for the picture, or not a picture: the generator's bytes.
        for (path, size) in [("/a.jpg", 100), ("/a.jpg", n + 2), ("/a.bin", 8000)] {
            let b = object_bytes(path, size);
            assert_eq!((b.len(), b == generated(path, size)), (size, true));
        }
    }
}
