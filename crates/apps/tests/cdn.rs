//! The CDN's origin over real TLS on loopback, asked by curl (a client we
//! did not write): the object's bytes and validators, a conditional GET
//! answered 304, one byte range 206 and an unsatisfiable one 416, a PUT
//! that changes the validators, and a path reaching outside the bucket
//! refused 400 before any lookup.

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

async fn origin(dir: &Path) -> (Curl, std::sync::Arc<Origin>) {
    let paths = PkiPaths::new(dir.join("pki"));
    pki::make(&paths, "t", &[NAME]).unwrap();
    let settings = OriginSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        objects: vec![ObjectSettings {
            path: "/images/cover.jpg".into(),
            content_type: "image/jpeg".into(),
            cache_control: Some("public, max-age=60".into()),
            size: 100_000,
        }],
        max_put: 1 << 20,
        header_timeout_ms: 2000,
        handshake_timeout_ms: 2000,
        max_connections: 64,
    };
    let o = Origin::new(&settings, pki::server_config(&paths).unwrap()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let serving = o.clone();
    tokio::spawn(async move { serving.serve(listener, std::future::pending()).await });
    let curl = Curl {
        root: paths.root_cert(),
        port,
        dir: dir.to_path_buf(),
    };
    (curl, o)
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
    assert_eq!(r.objects[0].bytes, 11);
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
