//! The CDN over real TLS on loopback, asked by curl (a client we did not
//! write). The origin: the object's bytes and validators, a conditional GET
//! answered 304, one byte range 206 and an unsatisfiable one 416, a PUT
//! that changes the validators, and a path reaching outside the bucket
//! refused 400 before any lookup. Origin ← parent ← edge: the first GET a
//! miss at both caches, the second a hit at the edge with its Age, 50
//! concurrent GETs of a cold object one request at the origin, a purge.

use d11_apps::cdn::cache::{Cache, CacheSettings};
use d11_apps::cdn::reference::NginxCache;
use d11_apps::cdn::{object_bytes, ObjectSettings, Origin, OriginSettings};
use d11_apps::pki::{self, PkiPaths};
use std::path::{Path, PathBuf};
use tokio::net::TcpListener;

const NAME: &str = "static.geektime.com";

struct Curl {
    root: PathBuf,
    port: u16,
    dir: PathBuf,
}

/// What curl printed: the status line's code, the headers (lower-cased
/// names) and the body it saved.
struct Got {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        (self.headers.iter())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Curl {
    async fn get(&self, path: &str, extra: &[&str]) -> Got {
        let url = format!("https://{NAME}:{}{path}", self.port);
        let (head, body) = (self.dir.join("head"), self.dir.join("body"));
        // curl leaves the file alone when there is no body (304).
        let _ = std::fs::remove_file(&body);
        let mut args: Vec<String> = [
            "-sS",
            "--path-as-is",
            "--cacert",
            &self.root.to_string_lossy(),
            "--resolve",
            &format!("{NAME}:{}:127.0.0.1", self.port),
            "-D",
            &head.to_string_lossy(),
            "-o",
            &body.to_string_lossy(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(url);
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl")
                .args(&args)
                .output()
                .expect("curl is installed")
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&head).unwrap();
        let mut lines = text.lines();
        let status = (lines.next().unwrap().split_whitespace().nth(1))
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let body = std::fs::read(&body).unwrap_or_default();
        Got {
            status,
            headers,
            body,
        }
    }
}

/// The lab PKI of the test, made once in `dir`.
fn lab_pki(dir: &Path) -> PkiPaths {
    let paths = PkiPaths::new(dir.join("pki"));
    if !paths.server_chain().exists() {
        pki::make(&paths, "t", &[NAME]).unwrap();
    }
    paths
}

/// Serves `router`-owning `serve` on a loopback port; returns the port.
async fn listen() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

fn objects(size: usize) -> Vec<ObjectSettings> {
    ["/images/cover.jpg", "/images/cold.jpg"]
        .iter()
        .map(|p| ObjectSettings {
            path: p.to_string(),
            content_type: "image/jpeg".into(),
            cache_control: Some("public, max-age=60".into()),
            vary: None,
            size,
        })
        .collect()
}

async fn origin(dir: &Path) -> (Curl, std::sync::Arc<Origin>) {
    let paths = lab_pki(dir);
    let settings = OriginSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        objects: objects(100_000),
        max_put: 1 << 20,
        header_timeout_ms: 2000,
        handshake_timeout_ms: 2000,
        max_connections: 64,
    };
    let o = Origin::new(&settings, pki::server_config(&paths).unwrap()).unwrap();
    let (listener, port) = listen().await;
    let serving = o.clone();
    tokio::spawn(async move { serving.serve(listener, std::future::pending()).await });
    let curl = Curl {
        root: paths.root_cert(),
        port,
        dir: dir.to_path_buf(),
    };
    (curl, o)
}

/// A cache named `name` in front of `upstream` (a port on loopback).
async fn cache(dir: &Path, name: &str, upstream: u16) -> (u16, std::sync::Arc<Cache>) {
    cache_keeping(dir, name, upstream, 16).await
}

/// [`cache`] keeping at most `idle` connections to its upstream.
async fn cache_keeping(
    dir: &Path,
    name: &str,
    upstream: u16,
    idle: usize,
) -> (u16, std::sync::Arc<Cache>) {
    let paths = lab_pki(dir);
    let settings = CacheSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream: ([127, 0, 0, 1], upstream).into(),
        upstream_name: NAME.into(),
        name: Some(name.into()),
        max_bytes: 8 << 20,
        upstream_timeout_ms: 5000,
        upstream_idle: idle,
        header_timeout_ms: 2000,
        handshake_timeout_ms: 2000,
        max_connections: 256,
    };
    let server = pki::server_config(&paths).unwrap();
    let client = pki::client_config(&paths.root_cert(), false).unwrap();
    let c = Cache::new(name, settings, server, client);
    let (listener, port) = listen().await;
    let serving = c.clone();
    tokio::spawn(async move { serving.serve(listener, std::future::pending()).await });
    (port, c)
}

/// An origin and `edge-a2` in front of it; curl pointed at the edge.
async fn edge_on_origin(dir: &Path) -> (Curl, std::sync::Arc<Origin>, std::sync::Arc<Cache>) {
    let (at_origin, origin) = origin(dir).await;
    let (edge_port, edge) = cache(dir, "edge-a2", at_origin.port).await;
    let curl = Curl {
        port: edge_port,
        ..at_origin
    };
    (curl, origin, edge)
}

#[tokio::test]
async fn curl_gets_the_object_its_validators_a_304_ranges_and_a_put() {
    let dir = tempfile::tempdir().unwrap();
    let (curl, o) = origin(dir.path()).await;
    let cover = curl.get("/images/cover.jpg", &[]).await;
    assert_eq!(cover.status, 200);
    assert_eq!(cover.body, object_bytes("/images/cover.jpg", 100_000));
    assert_eq!(cover.header("cache-control"), Some("public, max-age=60"));
    assert_eq!(cover.header("content-type"), Some("image/jpeg"));
    assert_eq!(cover.header("accept-ranges"), Some("bytes"));
    let etag = cover.header("etag").unwrap().to_string();
    let lm = cover.header("last-modified").unwrap().to_string();

    let again = curl
        .get(
            "/images/cover.jpg",
            &["-H", &format!("If-None-Match: {etag}")],
        )
        .await;
    assert_eq!((again.status, again.body.len()), (304, 0));
    let since = curl
        .get(
            "/images/cover.jpg",
            &["-H", &format!("If-Modified-Since: {lm}")],
        )
        .await;
    assert_eq!(since.status, 304);

    let part = curl.get("/images/cover.jpg", &["-r", "100-199"]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.header("content-range"), Some("bytes 100-199/100000"));
    assert_eq!(part.body, cover.body[100..200]);
    let outside = curl.get("/images/cover.jpg", &["-r", "100000-"]).await;
    assert_eq!(outside.status, 416);
    assert_eq!(outside.header("content-range"), Some("bytes */100000"));

    let put = curl
        .get(
            "/images/cover.jpg",
            &[
                "-X",
                "PUT",
                "-H",
                "Content-Type: image/jpeg",
                "-H",
                "Cache-Control: public, max-age=5",
                "--data-binary",
                "a new cover",
            ],
        )
        .await;
    assert_eq!(put.status, 204);
    let new = curl.get("/images/cover.jpg", &[]).await;
    assert_eq!(&new.body[..], b"a new cover");
    assert_ne!(new.header("etag"), Some(etag.as_str()));
    assert_eq!(new.header("cache-control"), Some("public, max-age=5"));
    let stale = curl
        .get(
            "/images/cover.jpg",
            &["-H", &format!("If-None-Match: {etag}")],
        )
        .await;
    assert_eq!(stale.status, 200);

    for bad in ["/images/../../etc/passwd", "/images/%2e%2e/x", "/images//x"] {
        assert_eq!(curl.get(bad, &[]).await.status, 400, "{bad}");
    }
    assert_eq!(curl.get("/images/none.jpg", &[]).await.status, 404);
    let r = o.report();
    assert_eq!(r.stats.refused, 3);
    assert_eq!(r.stats.not_modified, 2);
    assert_eq!(r.front.requests["400"], 3);
    assert_eq!(r.front.tls_handshakes, 12);
    assert_eq!(r.objects[0].bytes, 100_000);
    assert_eq!(r.objects[1].bytes, 11);
}

#[tokio::test]
async fn through_edge_and_parent_a_miss_then_a_hit_one_origin_fetch_for_fifty_and_a_purge() {
    let dir = tempfile::tempdir().unwrap();
    let (at_origin, origin) = origin(dir.path()).await;
    // The parent reaches the origin through a relay that waits a second
    // before each connection, and opens one per fetch, so the 50 GETs below
    // all arrive while the first one's fetch is under way.
    let slow = relay(at_origin.port, std::time::Duration::from_secs(1)).await;
    let (parent_port, parent) = cache_keeping(dir.path(), "parent", slow, 0).await;
    let (edge_port, edge) = cache(dir.path(), "edge-a2", parent_port).await;
    let curl = Curl {
        port: edge_port,
        ..at_origin
    };
    let first = curl.get("/images/cover.jpg", &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body, object_bytes("/images/cover.jpg", 100_000));
    assert_eq!(
        first.header("x-cache"),
        Some("MISS from edge-a2, MISS from parent")
    );
    assert_eq!(first.header("via"), Some("1.1 parent, 1.1 edge-a2"));
    let second = curl.get("/images/cover.jpg", &[]).await;
    assert_eq!(second.header("x-cache"), Some("HIT from edge-a2"));
    let date = second.header("date").unwrap();
    assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
    // Its value is the store's (its unit tests run the clock forward).
    assert!(second.header("age").unwrap().parse::<u64>().is_ok());
    assert_eq!(second.body, first.body);
    assert_eq!(origin.report().stats.served, 1);

    // 50 at once for an object no cache holds: one fetch reaches the origin.
    let gets = (0..50).map(|i| {
        let c = Curl {
            root: curl.root.clone(),
            port: curl.port,
            dir: dir.path().join(format!("c{i}")),
        };
        std::fs::create_dir_all(&c.dir).unwrap();
        async move { c.get("/images/cold.jpg", &[]).await }
    });
    let all = futures_join(gets).await;
    assert!(all
        .iter()
        .all(|g| g.status == 200 && g.body == object_bytes("/images/cold.jpg", 100_000)));
    assert_eq!(origin.report().stats.served, 2);
    assert_eq!(edge.report().upstream.fetches, 2);
    // The parent got at most a few: the edge collapsed the rest.
    assert!(
        edge.report().upstream.collapsed >= 40,
        "{:?}",
        edge.report().upstream
    );

    // A purge at the edge: the next GET is a miss there, a hit at the parent.
    assert!(edge.purge(&format!("{NAME}:{edge_port}/images/cover.jpg")));
    let after = curl.get("/images/cover.jpg", &[]).await;
    assert_eq!(
        after.header("x-cache"),
        Some("MISS from edge-a2, HIT from parent")
    );
    assert_eq!(parent.report().upstream.fetches, 2);
}

#[tokio::test]
async fn a_range_or_a_conditional_get_at_the_edge_is_answered_from_the_whole_object() {
    let dir = tempfile::tempdir().unwrap();
    let (curl, origin, _edge) = edge_on_origin(dir.path()).await;
    let whole = object_bytes("/images/cover.jpg", 100_000);
    let part = curl.get("/images/cover.jpg", &["-r", "100-199"]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.header("content-range"), Some("bytes 100-199/100000"));
    assert_eq!(part.body, whole[100..200]);
    assert_eq!(part.header("x-cache"), Some("MISS from edge-a2"));
    // The origin sent the whole object (a 200, not a 206) and it was kept.
    let r = origin.report();
    assert_eq!((r.stats.served, r.front.requests.get("206")), (1, None));
    let tail = curl.get("/images/cover.jpg", &["-r", "-10"]).await;
    assert_eq!(tail.status, 206);
    assert_eq!(tail.header("x-cache"), Some("HIT from edge-a2"));
    assert_eq!(tail.body, whole[99_990..]);
    let outside = curl.get("/images/cover.jpg", &["-r", "100000-"]).await;
    assert_eq!(outside.status, 416);
    assert_eq!(outside.header("content-range"), Some("bytes */100000"));
    let all = curl.get("/images/cover.jpg", &[]).await;
    assert_eq!((all.status, all.body == whole), (200, true));
    assert_eq!(all.header("x-cache"), Some("HIT from edge-a2"));
    // The client's validators are the cache's to check (RFC 9111 § 4.3.2).
    let etag = all.header("etag").unwrap().to_string();
    let inm = format!("If-None-Match: {etag}");
    let same = curl.get("/images/cover.jpg", &["-H", &inm]).await;
    assert_eq!((same.status, same.body.len()), (304, 0));
    assert_eq!(same.header("x-cache"), Some("HIT from edge-a2"));
    let other = curl
        .get("/images/cover.jpg", &["-H", "If-None-Match: \"x\""])
        .await;
    assert_eq!((other.status, other.body == whole), (200, true));
    assert_eq!(origin.report().stats.served, 1);
    // A cold object asked conditionally: fetched whole (and kept), then 304.
    let cold = curl.get("/images/cold.jpg", &["-H", &inm]).await;
    assert_eq!(cold.status, 200);
    let inm = format!("If-None-Match: {}", cold.header("etag").unwrap());
    let cold = curl.get("/images/cold.jpg", &["-H", &inm]).await;
    assert_eq!(cold.status, 304);
    assert_eq!(origin.report().stats.not_modified, 0);
}

/// Sends `raw` over TLS to `port` as it is and returns what came back
/// (until the server closes, or 3 s).
async fn raw_tls(dir: &Path, port: u16, raw: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let paths = lab_pki(dir);
    let tls = pki::client_config(&paths.root_cert(), false).unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from(NAME).unwrap();
    let mut s = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn bad_requests_at_the_edge_are_4xx_and_nothing_wrong_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (curl, origin, edge) = edge_on_origin(dir.path()).await;
    let edge_port = curl.port;
    let host = format!("Host: {NAME}\r\n");
    // Request smuggling (RFC 9112 § 6.3). Two different Content-Lengths:
    // 400 and the connection closed. Content-Length with
    // Transfer-Encoding: hyper frames the body by the chunked coding alone
    // (which § 6.3 allows) — what follows the chunked body is a request of
    // its own, answered on its own, never a body smuggled into the first.
    let smuggled = |framing: &str| {
        format!(
            "GET /images/cover.jpg HTTP/1.1\r\n{host}{framing}\r\n0\r\n\r\nGET /images/cold.jpg HTTP/1.1\r\n{host}Connection: close\r\n\r\n"
        )
    };
    let two = smuggled("Content-Length: 5\r\nContent-Length: 6\r\n");
    let got = raw_tls(dir.path(), edge_port, two.as_bytes()).await;
    assert!(got.starts_with("HTTP/1.1 400"), "{got:.200}");
    assert_eq!(got.matches("HTTP/1.1 ").count(), 1, "{got:.300}");
    let both = smuggled("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n");
    let got = raw_tls(dir.path(), edge_port, both.as_bytes()).await;
    let statuses: Vec<&str> = (got.match_indices("HTTP/1.1 "))
        .map(|(i, _)| &got[i + 9..i + 12])
        .collect();
    // The first answered, then the connection closed (§ 6.3's MUST).
    assert_eq!(statuses, ["200"], "{got:.300}");
    // Headers beyond hyper's buffer: 431, nothing fetched.
    let long = format!(
        "GET / HTTP/1.1\r\n{host}X-Long: {}\r\n\r\n",
        "a".repeat(600_000)
    );
    let got = raw_tls(dir.path(), edge_port, long.as_bytes()).await;
    assert!(got.starts_with("HTTP/1.1 431"), "{got:.200}");
    // Slowloris: a head never finished is cut at the front's header
    // deadline (2 s here), with no answer and nothing fetched.
    let fetched = edge.report().upstream.fetches;
    let slow = format!("GET /images/cover.jpg HTTP/1.1\r\n{host}X-Slow: 1\r\n");
    let got = raw_tls(dir.path(), edge_port, slow.as_bytes()).await;
    assert_eq!(got, "", "slowloris");
    let r = edge.report();
    assert_eq!((r.front.header_timeouts, r.upstream.fetches), (1, fetched));
    // A Range outside the object: 416 (and the object, fetched whole, kept).
    let outside = curl.get("/images/cover.jpg", &["-r", "200000-"]).await;
    assert_eq!(outside.status, 416);
    // `..` reaching out of the bucket: the origin's 400, not stored.
    let up = curl.get("/images/../../etc/passwd", &[]).await;
    assert_eq!(up.status, 400);
    // A header the cache does not key on cannot change what is stored:
    // the object kept is the origin's, whatever the first asker sent.
    let poison = curl
        .get(
            "/images/cold.jpg",
            &[
                "-H",
                "X-Forwarded-Host: evil.example",
                "-H",
                "X-Original-URL: /images/cover.jpg",
            ],
        )
        .await;
    assert_eq!(poison.status, 200);
    let next = curl.get("/images/cold.jpg", &[]).await;
    assert_eq!(next.header("x-cache"), Some("HIT from edge-a2"));
    assert!(next.body == object_bytes("/images/cold.jpg", 100_000));
    let r = edge.report();
    assert_eq!(
        r.front.requests.get("400"),
        Some(&1),
        "{:?}",
        r.front.requests
    );
    // The cover under `Host: NAME` (the raw request) and `NAME:PORT`
    // (curl's), the cold object; the 400 not stored.
    assert_eq!((r.cache.stats.stored, r.cache.stats.not_stored), (3, 1));
    assert_eq!(origin.report().stats.refused, 1);
}

/// The origin's header matrix: each object's Cache-Control and Vary
/// (every object has a strong ETag and a Last-Modified).
const MATRIX: [(&str, &str, Option<&str>); 7] = [
    ("/m/max-age.jpg", "public, max-age=60", None),
    ("/m/s-maxage.jpg", "max-age=0, s-maxage=60", None),
    ("/m/no-store.jpg", "no-store", None),
    ("/m/private.jpg", "private, max-age=60", None),
    ("/m/short.jpg", "public, max-age=1", None),
    ("/m/vary.jpg", "public, max-age=60", Some("Accept-Encoding")),
    (
        "/m/vary-short.jpg",
        "public, max-age=1",
        Some("Accept-Encoding"),
    ),
];

/// The requests sent for an object: one without `Accept-Encoding` when it
/// varies on nothing; else one per encoding, so each variant is asked.
fn encodings(vary: Option<&str>) -> &'static [&'static str] {
    match vary {
        None => &[""],
        Some(_) => &["gzip", "br"],
    }
}

/// A GET with `Accept-Encoding: enc` (none when `enc` is empty).
async fn get(curl: &Curl, path: &str, enc: &str) -> Got {
    let h = format!("Accept-Encoding: {enc}");
    match enc {
        "" => curl.get(path, &[]).await,
        _ => curl.get(path, &["-H", &h]).await,
    }
}

#[tokio::test]
async fn nginx_proxy_cache_sends_the_same_hits_misses_and_revalidations_as_our_edge() {
    let dir = tempfile::tempdir().unwrap();
    let paths = lab_pki(dir.path());
    let settings = OriginSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        objects: (MATRIX.iter())
            .map(|(p, cc, vary)| ObjectSettings {
                path: p.to_string(),
                content_type: "image/jpeg".into(),
                cache_control: Some(cc.to_string()),
                vary: vary.map(str::to_string),
                size: 5000,
            })
            .collect(),
        max_put: 1 << 20,
        header_timeout_ms: 2000,
        handshake_timeout_ms: 2000,
        max_connections: 64,
    };
    let o = Origin::new(&settings, pki::server_config(&paths).unwrap()).unwrap();
    let (listener, origin_port) = listen().await;
    tokio::spawn(async move { o.serve(listener, std::future::pending()).await });
    let (edge_port, _edge) = cache(dir.path(), "edge", origin_port).await;
    let nginx = NginxCache::start(&dir.path().join("nginx"), &paths, origin_port, NAME, 1).unwrap();
    let ours = Curl {
        root: paths.root_cert(),
        port: edge_port,
        dir: dir.path().to_path_buf(),
    };
    let theirs = Curl {
        port: nginx.port,
        ..Curl {
            root: paths.root_cert(),
            port: 0,
            dir: dir.path().to_path_buf(),
        }
    };
    // What each said: the outcome, and our Age.
    let outcome = |g: &Got, who: &str| {
        let x = g.header("x-cache").unwrap_or("-").to_string();
        assert_eq!(g.status, 200, "{who}: {x}");
        x.split(" from ").next().unwrap().to_string()
    };
    // Per object and encoding: two GETs, then one after max-age=1 ran out.
    let mut seen: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
    for (path, cc, vary) in MATRIX {
        for enc in encodings(vary) {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for _ in 0..2 {
                a.push(outcome(&get(&ours, path, enc).await, "ours"));
                b.push(outcome(&get(&theirs, path, enc).await, "nginx"));
            }
            seen.push((format!("{path} ({cc}, {enc:?})"), a, b));
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let mut row = 0;
    for (path, _, vary) in MATRIX {
        for enc in encodings(vary) {
            let g = get(&ours, path, enc).await;
            let how = outcome(&g, "ours");
            if how == "HIT" {
                // Stored with the two GETs above, two seconds ago (a
                // revalidated answer starts again at 0).
                let age = g.header("age").unwrap();
                assert!(age.parse::<u64>().unwrap() >= 2, "{path}: Age {age}");
            }
            seen[row].1.push(how);
            seen[row]
                .2
                .push(outcome(&get(&theirs, path, enc).await, "nginx"));
            row += 1;
        }
    }
    for (what, a, b) in &seen {
        assert_eq!(a, b, "{what}: ours, then nginx's");
    }
    let by = |what: &str| {
        let (_, a, _) = (seen.iter()).find(|(w, ..)| w.starts_with(what)).unwrap();
        a.join(" ")
    };
    assert_eq!(by("/m/short.jpg"), "MISS HIT REVALIDATED");
    assert_eq!(by("/m/no-store.jpg"), "MISS MISS MISS");
    // Each encoding its own variant: the second of each a hit.
    assert_eq!(
        by("/m/vary.jpg (public, max-age=60, \"br\")"),
        "MISS HIT HIT"
    );
    assert_eq!(
        by("/m/vary-short.jpg (public, max-age=1, \"br\")"),
        "MISS HIT REVALIDATED"
    );
}

#[tokio::test]
async fn misses_share_one_kept_connection_upstream_and_a_closed_one_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let (curl, origin, edge) = edge_on_origin(dir.path()).await;
    let edge_port = curl.port;
    // Three misses, one after the other: one connection to the origin.
    for path in ["/images/cover.jpg", "/images/cold.jpg", "/images/none.jpg"] {
        let g = curl.get(path, &[]).await;
        assert!(g.status == 200 || g.status == 404, "{path}: {}", g.status);
    }
    let up = edge.report().upstream;
    assert_eq!((up.fetches, up.connections, up.reused), (3, 1, 2), "{up:?}");
    assert_eq!(origin.report().front.tls_handshakes, 1);
    // The origin closes an idle connection after its header deadline
    // (2 s here): the next miss finds it closed and opens another.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert!(edge.purge(&format!("{NAME}:{edge_port}/images/cover.jpg")));
    let g = curl.get("/images/cover.jpg", &[]).await;
    assert_eq!(g.header("x-cache"), Some("MISS from edge-a2"));
    assert!(g.body == object_bytes("/images/cover.jpg", 100_000));
    let up = edge.report().upstream;
    assert_eq!((up.fetches, up.connections, up.errors), (4, 2, 0), "{up:?}");
    assert_eq!(up.stale_connections, 1, "{up:?}");
}

/// A TCP relay on loopback to `port` that waits `delay` before it connects
/// each client onward; returns its own port.
async fn relay(port: u16, delay: std::time::Duration) -> u16 {
    let (listener, me) = listen().await;
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let mut up = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                tokio::io::copy_bidirectional(&mut client, &mut up).await
            });
        }
    });
    me
}

/// Every future of `futs` at once, their outputs in order.
async fn futures_join<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[test]
fn a_bad_object_list_is_one_error_naming_the_key() {
    let parse = |t: &str| -> OriginSettings { toml::from_str(t).unwrap() };
    let now = std::time::SystemTime::now();
    let twice = parse("objects = [ { path = \"/a\", size = 1 }, { path = \"/a\", size = 2 } ]");
    let e = twice.bucket(now).unwrap_err().to_string();
    assert!(
        e.contains("config.objects[1].path") && e.contains("twice"),
        "{e}"
    );
    let outside = parse("objects = [ { path = \"/a/../b\", size = 1 } ]");
    let e = outside.bucket(now).unwrap_err().to_string();
    assert!(e.contains("config.objects[0].path"), "{e}");
    let big = parse("objects = [ { path = \"/a\", size = 999999999 } ]");
    assert!(big.bucket(now).unwrap_err().to_string().contains("size"));
}
