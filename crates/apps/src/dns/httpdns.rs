//! HTTPDNS (chapter 3): the phone's app asks an HTTPS service for the
//! shop's addresses instead of the carrier's resolver, as Alibaba Cloud's
//! HTTPDNS and DNSPod's D+ serve mobile apps. No resolver is on the way (no
//! stale or hijacked carrier cache), and the region is chosen by the
//! address the service sees, the phone's own public (NATed) one, not by
//! its resolver's. The GSLB serves it beside its DNS (`config.httpdns`),
//! from the same regions and health ([`Gslb::pick`]).
//!
//! `GET /d?host=www.geektime.com` answers 200 with
//! `{"host", "ips", "ttl", "client_ip", "region"}` (the shape of Alibaba
//! Cloud HTTPDNS's `/d`); a missing or malformed `host` 400, a name the
//! GSLB does not balance 404, each with `{"error"}`. The app (the client
//! half here, [`lookup`]) ships with the service's address and the name
//! its certificate holds, as an HTTPDNS SDK does: it cannot ask DNS where
//! the service that replaces DNS is.

use super::gslb::Gslb;
use super::stub::Resolved;
use crate::https::{Front, Limits, Session};
use crate::phone::{exchange, Attempt};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use bytes::Bytes;
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;

/// The GSLB's `config.httpdns`: serve HTTPDNS on this port of its address.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpDnsSettings {
    #[serde(default = "default_port")]
    pub port: u16,
    /// Connections served at once; more wait in the kernel's backlog.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_port() -> u16 {
    443
}
fn default_max_connections() -> usize {
    256
}

impl HttpDnsSettings {
    /// The front's deadlines: a handshake in 5 s, a request's headers in 10 s.
    pub fn limits(&self) -> Limits {
        Limits::from_ms(5_000, 10_000, self.max_connections)
    }
}

/// The answer's JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpDnsAnswer {
    pub host: String,
    pub ips: Vec<Ipv4Addr>,
    /// Seconds the app may use the answer (the GSLB's TTL).
    pub ttl: u32,
    /// The address the service saw, which chose the region.
    pub client_ip: Ipv4Addr,
    pub region: String,
}

/// The service's routes, counted by `front`.
pub fn router(gslb: Arc<Mutex<Gslb>>, front: &Arc<Front>) -> Router {
    front.counted(Router::new().route("/d", get(resolve)).with_state(gslb))
}

fn refuse(status: StatusCode, why: String) -> Response {
    (status, Json(serde_json::json!({ "error": why }))).into_response()
}

/// `GET /d?host=NAME`.
async fn resolve(
    State(gslb): State<Arc<Mutex<Gslb>>>,
    Extension(session): Extension<Session>,
    RawQuery(query): RawQuery,
) -> Response {
    let host = query.as_deref().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("host="))
            .filter(|h| !h.is_empty())
    });
    let Some(host) = host else {
        return refuse(StatusCode::BAD_REQUEST, "no host= in the query".into());
    };
    if host.len() > 253
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return refuse(
            StatusCode::BAD_REQUEST,
            "host must be a DNS name (letters, digits, '-' and '.', at most 253)".into(),
        );
    }
    let IpAddr::V4(client_ip) = session.peer.ip() else {
        return refuse(StatusCode::BAD_REQUEST, "IPv4 clients only".into());
    };
    let mut g = gslb.lock().unwrap_or_else(|e| e.into_inner());
    let Some(ttl) = g.balances(host) else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("{host} is not a name this service balances"),
        );
    };
    let pick = g.pick(client_ip);
    Json(HttpDnsAnswer {
        host: host.to_string(),
        ips: pick.vips,
        ttl,
        client_ip,
        region: pick.region,
    })
    .into_response()
}

/// Asks the HTTPDNS service at `server` (whose certificate names
/// `server_name`, checked against `tls`'s roots) for `host`, within
/// `timeout`. `Err` says why not, for the app to fall back to DNS.
pub async fn lookup(
    server: SocketAddr,
    server_name: &str,
    host: &str,
    tls: Arc<ClientConfig>,
    timeout: Duration,
) -> Result<Resolved, String> {
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|_| format!("{server_name:?} is not a server name"))?;
    let request = hyper::Request::get(format!("/d?host={host}"))
        .header(hyper::header::HOST, server_name)
        .header(hyper::header::USER_AGENT, "d11-phone/0.1")
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("building the request: {e}"))?;
    let x = tokio::time::timeout(timeout, exchange(server, tls, name, request))
        .await
        .map_err(|_| format!("no answer within {} ms", timeout.as_millis()))?
        .map_err(|e: Attempt| e.to_string())?;
    if x.status != 200 {
        return Err(format!(
            "{} {}",
            x.status,
            String::from_utf8_lossy(&x.body).trim()
        ));
    }
    let a: HttpDnsAnswer =
        serde_json::from_slice(&x.body).map_err(|e| format!("the answer is not its JSON: {e}"))?;
    if a.ips.is_empty() {
        return Err(format!("no address for {host}"));
    }
    Ok(Resolved {
        name: host.to_string(),
        via: format!(
            "HTTPDNS {server_name} ({}), region {} for {}",
            server.ip(),
            a.region,
            a.client_ip
        ),
        cnames: Vec::new(),
        addrs: a.ips,
        ttl: Some(a.ttl),
        tcp: false,
        fallback_from: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::gslb::GslbSettings;
    use crate::pki::{self, PkiPaths};

    /// The GSLB (east the default, north for 192.0.2.128/25) with HTTPDNS
    /// on a loopback port, and the lab root for clients.
    async fn serve(dir: &std::path::Path) -> (SocketAddr, Arc<Mutex<Gslb>>, Arc<Front>) {
        let paths = PkiPaths::new(dir.join("pki"));
        pki::make(&paths, "t", &["httpdns.d11cloud.com"]).unwrap();
        let s: GslbSettings = toml::from_str(
            r#"
zone = "gslb.d11cloud.com."
ns = "ns1"
names = ["www.geektime.com"]
httpdns = {}
regions = [
  { name = "east", vips = ["203.0.113.24", "203.0.113.25", "203.0.113.26"] },
  { name = "north", vips = ["198.19.24.24"], clients = ["192.0.2.128/25"] },
]
"#,
        )
        .unwrap();
        let limits = s.httpdns.as_ref().unwrap().limits();
        let gslb = Arc::new(Mutex::new(s.gslb(Ipv4Addr::LOCALHOST).unwrap()));
        let front = Front::new(pki::server_config(&paths).unwrap(), limits);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let router = router(gslb.clone(), &front);
        let f = front.clone();
        tokio::spawn(async move { f.serve(listener, router, std::future::pending()).await });
        (at, gslb, front)
    }

    fn tls(dir: &std::path::Path) -> Arc<ClientConfig> {
        pki::client_config(&PkiPaths::new(dir.join("pki")).root_cert(), false).unwrap()
    }

    #[tokio::test]
    async fn the_app_gets_the_nearest_healthy_regions_vips_by_the_address_the_service_sees() {
        let dir = tempfile::tempdir().unwrap();
        let (at, gslb, front) = serve(dir.path()).await;
        let ask = |host: &'static str| {
            let tls = tls(dir.path());
            async move {
                lookup(
                    at,
                    "httpdns.d11cloud.com",
                    host,
                    tls,
                    Duration::from_secs(5),
                )
                .await
            }
        };
        // 127.0.0.1 is in no region's list: the first, east.
        let r = ask("www.geektime.com").await.unwrap();
        assert_eq!(
            r.via,
            "HTTPDNS httpdns.d11cloud.com (127.0.0.1), region east for 127.0.0.1"
        );
        assert_eq!(r.addrs.len(), 3);
        assert_eq!(r.addrs[0], Ipv4Addr::new(203, 0, 113, 24));
        assert_eq!(r.ttl, Some(20));

        // East down (`fall`, 2, failed checks in a row): north answers
        // (failover), as the GSLB's DNS does.
        for v in [24, 25, 26, 24, 25, 26] {
            gslb.lock()
                .unwrap()
                .set_health(Ipv4Addr::new(203, 0, 113, v), false);
        }
        let r = ask("www.geektime.com").await.unwrap();
        assert_eq!(r.addrs, [Ipv4Addr::new(198, 19, 24, 24)]);
        assert!(r.via.contains("region north"), "{}", r.via);

        // Names it does not balance, and no name at all.
        let e = ask("nope.example").await.unwrap_err();
        assert!(e.starts_with("404 ") && e.contains("not a name"), "{e}");
        let e = ask("").await.unwrap_err();
        assert!(e.starts_with("400 ") && e.contains("host="), "{e}");
        let e = ask("a%20b").await.unwrap_err();
        assert!(e.starts_with("400 ") && e.contains("DNS name"), "{e}");

        let report = gslb.lock().unwrap().report();
        assert_eq!(report.regions[0].answers, 1);
        assert_eq!(report.regions[1].failovers_in, 1);
        let requests = front.report().requests;
        assert_eq!(requests.get("200"), Some(&2));
        assert_eq!(requests.get("404"), Some(&1));
        assert_eq!(requests.get("400"), Some(&2));
    }

    /// curl, trusting only the lab root, reads the same JSON.
    #[tokio::test]
    async fn curl_reads_the_answer_with_the_lab_root() {
        let dir = tempfile::tempdir().unwrap();
        let (at, _, _) = serve(dir.path()).await;
        let root = PkiPaths::new(dir.path().join("pki")).root_cert();
        let args = [
            "-sS".to_string(),
            "--max-time".into(),
            "5".into(),
            "--cacert".into(),
            root.display().to_string(),
            "--resolve".into(),
            format!("httpdns.d11cloud.com:{}:127.0.0.1", at.port()),
            format!(
                "https://httpdns.d11cloud.com:{}/d?host=www.geektime.com",
                at.port()
            ),
        ];
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl").args(&args).output()
        })
        .await
        .unwrap()
        .expect("curl is installed");
        assert!(out.status.success(), "{out:?}");
        let a: HttpDnsAnswer = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(a.host, "www.geektime.com");
        assert_eq!(a.region, "east");
        assert_eq!(a.client_ip, Ipv4Addr::LOCALHOST);
        assert_eq!(a.ttl, 20);
    }
}
