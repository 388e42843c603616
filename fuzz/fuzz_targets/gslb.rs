//! The GSLB (crates/apps/src/dns/gslb.rs) on arbitrary bytes, both of its
//! faces: its DNS answer from a resolver's address (never a panic; an
//! answer, when there is one, is a response with the query's id), and its
//! HTTPDNS service (dns/httpdns.rs) with the bytes as TLS would have
//! decrypted them, through the same hyper connection and router as a real
//! app's (`Front::serve_plaintext`): never a panic or a hang, whatever
//! comes back is HTTP/1.1 responses and none is a 5xx.
#![no_main]
#[path = "common/http.rs"]
mod http;

use d11_apps::dns::gslb::{Gslb, GslbSettings};
use d11_apps::dns::httpdns;
use d11_apps::dns::zone::Transport;
use d11_apps::https::{Front, Limits};
use d11_apps::pki;
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, Mutex, OnceLock};

const CONFIG: &str = r#"
zone = "gslb.d11cloud.com."
ns = "ns1"
names = ["www.geektime.com"]
regions = [
  { name = "east", vips = ["203.0.113.24"], clients = ["198.18.2.0/28", "192.0.2.0/24"] },
  { name = "north", vips = ["198.19.24.24"], clients = ["198.18.3.0/28"] },
]
"#;

fn gslb() -> Gslb {
    let s: GslbSettings = toml::from_str(CONFIG).expect("config");
    s.gslb("198.18.1.18".parse().expect("addr")).expect("gslb")
}

/// The HTTPDNS service over one GSLB, kept across inputs (as it runs).
struct Service {
    rt: tokio::runtime::Runtime,
    front: Arc<Front>,
    gslb: Arc<Mutex<Gslb>>,
}

fn service() -> &'static Service {
    static S: OnceLock<Service> = OnceLock::new();
    S.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("d11-fuzz-gslb-{}", std::process::id()));
        let paths = pki::PkiPaths::new(dir.join("pki"));
        pki::make(&paths, "fuzz", &["httpdns.d11cloud.com"]).expect("the lab PKI");
        let tls = pki::server_config(&paths).expect("the server's TLS config");
        Service {
            rt: tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap(),
            front: Front::new(tls, Limits::from_ms(200, 200, 16)),
            gslb: Arc::new(Mutex::new(gslb())),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let mut g = gslb();
    for via in [Transport::Udp, Transport::Tcp] {
        if let (Some(out), _) = g.answer(data, "198.18.2.2".parse().expect("addr"), via) {
            assert!(out.len() >= 12 && out[..2] == data[..2] && out[2] & 0x80 != 0);
        }
    }
    let s = service();
    let router = httpdns::router(s.gslb.clone(), &s.front);
    let reply = s.rt.block_on(s.front.serve_plaintext(router, data));
    http::check_responses(data, &reply, |_| false);
});
