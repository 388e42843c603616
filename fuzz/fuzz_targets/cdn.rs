//! The CDN's request handling (crates/apps/src/cdn/) on arbitrary bytes,
//! as TLS would have decrypted them, through the same hyper HTTP/1.1
//! connection and routers as a real client's (`Front::serve_plaintext`):
//! the origin's bucket (GET, HEAD, PUT, Range, validators, `..`) and an
//! edge cache whose upstream does not answer (its request path, the store's
//! lookup, Range and validators at the cache, then 502 or 504). Never a
//! panic or a hang; whatever comes back is HTTP/1.1 responses, no 5xx
//! from the origin and only 502/504 from the cache.
#![no_main]
#[path = "common/http.rs"]
mod http;

use d11_apps::cdn::cache::{Cache, CacheSettings};
use d11_apps::cdn::{Origin, OriginSettings};
use d11_apps::https::{Front, Limits};
use d11_apps::pki;
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};

struct Cdn {
    rt: tokio::runtime::Runtime,
    front: Arc<Front>,
    origin: Arc<Origin>,
    cache: Arc<Cache>,
}

fn cdn() -> &'static Cdn {
    static CDN: OnceLock<Cdn> = OnceLock::new();
    CDN.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("d11-fuzz-cdn-{}", std::process::id()));
        let paths = pki::PkiPaths::new(dir.join("pki"));
        pki::make(&paths, "fuzz", &["static.geektime.com"]).expect("the lab PKI");
        let tls = pki::server_config(&paths).expect("the server's TLS config");
        let client = pki::client_config(&paths.root_cert(), false).expect("the client's");
        let settings: OriginSettings = toml::from_str(
            "max_put = 4096\nobjects = [{ path = \"/images/cover.jpg\", size = 2000, cache_control = \"public, max-age=60\" }]",
        )
        .expect("the origin's settings");
        let origin = Origin::new(&settings, tls.clone()).expect("an origin");
        let cache = Cache::new(
            "edge",
            CacheSettings {
                listen: "127.0.0.1:0".parse().unwrap(),
                // The discard port: nothing listens, every fetch fails.
                upstream: "127.0.0.1:9".parse().unwrap(),
                upstream_name: "static.geektime.com".into(),
                name: None,
                max_bytes: 1 << 20,
                upstream_timeout_ms: 200,
                upstream_idle: 16,
                header_timeout_ms: 200,
                handshake_timeout_ms: 200,
                max_connections: 16,
            },
            tls.clone(),
            client,
        );
        Cdn {
            rt: tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap(),
            front: Front::new(tls, Limits::from_ms(200, 200, 16)),
            origin,
            cache,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let c = cdn();
    let reply = c.rt.block_on(c.front.serve_plaintext(c.origin.router(), data));
    http::check_responses(data, &reply, |_| false);
    let reply = c.rt.block_on(c.front.serve_plaintext(c.cache.router(), data));
    http::check_responses(data, &reply, |code| code == 502 || code == 504);
});
