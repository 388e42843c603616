//! The controller end to end on loopback: real TLS (rustls client against the
//! lab PKI), real HTTP/1.1 (hyper client), a real SQLite store; and the abuse
//! the issue lists: slow headers, garbage on the TLS port, stalled handshakes.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use d11_apps::controller::{Controller, ControllerConfig};
use d11_apps::pki::{self, PkiPaths};
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const STORY: &str =
    r#"{"order":{"date":"2018-07-01","className":"趣谈网络协议","Author":"刘超","price":"68"}}"#;

/// A controller serving on 127.0.0.1 with a fresh lab PKI.
struct Running {
    addr: SocketAddr,
    ctl: Arc<Controller>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn start(name: &str, dir: &Path) -> Running {
        Running::start_with(name, dir, ControllerConfig::default()).await
    }

    /// As `start`, with loopback and test timeouts over `config`.
    async fn start_with(name: &str, dir: &Path, config: ControllerConfig) -> Running {
        let paths = PkiPaths::new(dir.join("pki"));
        if !paths.server_chain().exists() {
            pki::make(&paths, "t", &["www.geektime.com", "127.0.0.1"]).unwrap();
        }
        let config = ControllerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            max_body: 1024,
            header_timeout_ms: 1500,
            handshake_timeout_ms: 1000,
            ..config
        };
        let tls = pki::server_config(&paths).unwrap();
        let ctl = Controller::new(name, config, tls, &dir.join("orders.sqlite")).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(ctl.clone().serve(listener, async {
            let _ = stopped.await;
        }));
        Running {
            addr,
            ctl,
            stop: Some(stop),
            task,
        }
    }

    fn report(&self) -> d11_apps::controller::ControllerReport {
        self.ctl.status()
    }
}

/// A counter of a report's map (0 when it never counted).
fn count(m: &std::collections::BTreeMap<String, u64>, key: &str) -> u64 {
    m.get(key).copied().unwrap_or(0)
}

fn client(
    dir: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let root = PkiPaths::new(dir.join("pki")).root_cert();
    pki::client_config_with_versions(&root, false, versions).unwrap()
}

struct Reply {
    status: StatusCode,
    replayed: bool,
    body: Value,
    version: rustls::ProtocolVersion,
}

/// One HTTPS request on a new connection.
async fn https(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    req: Request<Full<Bytes>>,
) -> std::io::Result<Reply> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("www.geektime.com").unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await?;
    let version = stream.get_ref().1.protocol_version().unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    let resp = sender
        .send_request(req)
        .await
        .map_err(std::io::Error::other)?;
    let status = resp.status();
    let replayed = resp.headers().get("idempotent-replayed").is_some();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Ok(Reply {
        status,
        replayed,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        version,
    })
}

fn order(body: &str, content_type: &str, key: Option<&str>) -> Request<Full<Bytes>> {
    let mut req = Request::post("/purchaseOrder")
        .header("host", "www.geektime.com")
        .header("content-type", content_type);
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    req.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

fn rows(dir: &Path) -> u64 {
    let db = rusqlite::Connection::open(dir.join("orders.sqlite")).unwrap();
    db.query_row("SELECT count(*) FROM orders", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn the_story_order_is_created_over_tls13_and_tls12() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Running::start("vm-ctl", dir.path()).await;
    for (versions, want) in [
        (
            &[&rustls::version::TLS13][..],
            rustls::ProtocolVersion::TLSv1_3,
        ),
        (
            &[&rustls::version::TLS12][..],
            rustls::ProtocolVersion::TLSv1_2,
        ),
    ] {
        let reply = https(
            ctl.addr,
            client(dir.path(), versions),
            order(STORY, "application/json", None),
        )
        .await
        .unwrap();
        assert_eq!(reply.version, want);
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        assert_eq!(reply.body["served_by"], "vm-ctl");
        assert_eq!(reply.body["order"]["className"], "趣谈网络协议");
    }
    assert_eq!(rows(dir.path()), 2);
    assert_eq!(count(&ctl.report().front.tls_versions, "TLSv1_3"), 1);
    assert_eq!(count(&ctl.report().front.tls_versions, "TLSv1_2"), 1);
    assert_eq!(count(&ctl.report().front.requests, "201"), 2);
}

#[tokio::test]
async fn bad_requests_get_clear_errors_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Running::start("vm-ctl", dir.path()).await;
    let tls = client(
        dir.path(),
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    );
    let bad_price = STORY.replace("\"68\"", "\"free\"");
    let huge = format!(r#"{{"order":{{"className":"{}"}}}}"#, "x".repeat(4096));
    let cases = [
        (
            order("{\"order\":", "application/json", None),
            StatusCode::BAD_REQUEST,
            Value::Null,
        ),
        (
            order(&bad_price, "application/json", None),
            StatusCode::BAD_REQUEST,
            "order.price".into(),
        ),
        (
            order(&huge, "application/json", None),
            StatusCode::PAYLOAD_TOO_LARGE,
            Value::Null,
        ),
        (
            order(STORY, "text/plain", None),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Value::Null,
        ),
    ];
    for (req, status, field) in cases {
        let reply = https(ctl.addr, tls.clone(), req).await.unwrap();
        assert_eq!(reply.status, status, "{}", reply.body);
        assert!(reply.body["error"].is_string(), "{}", reply.body);
        assert_eq!(reply.body["field"], field);
    }
    assert_eq!(rows(dir.path()), 0);
}

#[tokio::test]
async fn one_key_is_one_order_even_when_two_controllers_race() {
    let dir = tempfile::tempdir().unwrap();
    let a = Running::start("vm-ctl", dir.path()).await;
    let b = Running::start("vm-ctl2", dir.path()).await;
    let tls = client(dir.path(), &[&rustls::version::TLS13]);

    // The same key twice, one after the other: one row, the same answer.
    let first = https(
        a.addr,
        tls.clone(),
        order(STORY, "application/json", Some("k-1")),
    )
    .await
    .unwrap();
    let again = https(
        a.addr,
        tls.clone(),
        order(STORY, "application/json", Some("k-1")),
    )
    .await
    .unwrap();
    assert_eq!(
        (first.status, again.status),
        (StatusCode::CREATED, StatusCode::CREATED)
    );
    assert!(!first.replayed && again.replayed);
    assert_eq!(first.body, again.body);
    assert_eq!(rows(dir.path()), 1);

    // Concurrent requests with one new key on both controllers.
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let addr = if i % 2 == 0 { a.addr } else { b.addr };
            tokio::spawn(https(
                addr,
                tls.clone(),
                order(STORY, "application/json", Some("k-2")),
            ))
        })
        .collect();
    let mut ids = Vec::new();
    let mut created = 0;
    for racer in racers {
        let reply = racer.await.unwrap().unwrap();
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        created += usize::from(!reply.replayed);
        ids.push(reply.body["order_id"].clone());
    }
    assert_eq!(created, 1);
    assert!(ids.iter().all(|id| *id == ids[0]));
    assert_ne!(ids[0], first.body["order_id"]);
    assert_eq!(rows(dir.path()), 2);
    let created = a.report().orders_created + b.report().orders_created;
    assert_eq!(created, 2);
}

#[tokio::test]
async fn slow_headers_are_cut_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Running::start("vm-ctl", dir.path()).await;
    let tls = client(dir.path(), &[&rustls::version::TLS13]);
    let tcp = TcpStream::connect(ctl.addr).await.unwrap();
    let name = ServerName::try_from("www.geektime.com").unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .unwrap();
    let (mut rd, mut wr) = tokio::io::split(stream);
    let started = Instant::now();
    // One byte of a request head per second, never finishing it.
    let slow = tokio::spawn(async move {
        for b in b"POST /purchaseOrder HTTP/1.1\r\nHost: www.geektime.com\r\n".iter() {
            if wr.write_all(&[*b]).await.is_err() || wr.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let mut buf = [0u8; 512];
    let closed = tokio::time::timeout(Duration::from_secs(6), async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    let waited = started.elapsed();
    slow.abort();
    assert!(closed.is_ok(), "the slow client was never cut");
    assert!(waited >= Duration::from_millis(1400), "{waited:?}");
    assert_eq!(ctl.report().front.header_timeouts, 1);
    // Others keep ordering.
    let reply = https(ctl.addr, tls, order(STORY, "application/json", None))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::CREATED);
}

#[tokio::test]
async fn garbage_and_stalled_handshakes_are_closed_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Running::start("vm-ctl", dir.path()).await;

    // Plain text on the TLS port.
    let mut tcp = TcpStream::connect(ctl.addr).await.unwrap();
    tcp.write_all(b"hello\r\n\r\n").await.unwrap();
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "the connection stayed open");
    assert_eq!(
        count(
            &ctl.report().front.tls_handshake_failures,
            "invalid_message"
        ),
        1,
        "{:?}",
        ctl.ctl.status()
    );

    // A client that connects and says nothing.
    let started = Instant::now();
    let mut tcp = TcpStream::connect(ctl.addr).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "the stalled connection stayed open");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(
        count(&ctl.report().front.tls_handshake_failures, "timeout"),
        1
    );

    // A phone trusting another root refuses the handshake; the server sees its alert.
    let other = tempfile::tempdir().unwrap();
    pki::make(
        &PkiPaths::new(other.path().join("pki")),
        "other",
        &["www.geektime.com"],
    )
    .unwrap();
    let err = https(
        ctl.addr,
        client(other.path(), &[&rustls::version::TLS13]),
        order(STORY, "application/json", None),
    )
    .await
    .err()
    .expect("a foreign root must fail");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");

    // And the controller keeps serving.
    let tls = client(dir.path(), &[&rustls::version::TLS13]);
    let reply = https(ctl.addr, tls, order(STORY, "application/json", None))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::CREATED);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        count(&ctl.report().front.tls_handshake_failures, "alert_received"),
        1
    );
    assert_eq!(ctl.report().front.connections, 4);
}

#[tokio::test]
async fn shutdown_stops_accepting_and_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mut ctl = Running::start("vm-ctl", dir.path()).await;
    let tls = client(dir.path(), &[&rustls::version::TLS13]);
    let reply = https(
        ctl.addr,
        tls.clone(),
        order(STORY, "application/json", None),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::CREATED);
    ctl.stop.take().unwrap().send(()).unwrap();
    let served = tokio::time::timeout(Duration::from_secs(6), &mut ctl.task).await;
    served.expect("serve returns").unwrap().unwrap();
    assert!(TcpStream::connect(ctl.addr).await.is_err());
}

#[tokio::test]
async fn a_request_in_flight_at_shutdown_is_finished() {
    let dir = tempfile::tempdir().unwrap();
    let mut ctl = Running::start("vm-ctl", dir.path()).await;
    let tls = client(dir.path(), &[&rustls::version::TLS13]);
    let tcp = TcpStream::connect(ctl.addr).await.unwrap();
    let name = ServerName::try_from("www.geektime.com").unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .unwrap();
    let head = format!(
        "POST /purchaseOrder HTTP/1.1\r\nHost: www.geektime.com\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        STORY.len()
    );
    let (first, rest) = STORY.as_bytes().split_at(10);
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(first).await.unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    ctl.stop.take().unwrap().send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        TcpStream::connect(ctl.addr).await.is_err(),
        "still accepting"
    );
    stream.write_all(rest).await.unwrap();
    stream.flush().await.unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 201 Created\r\n"), "{reply}");
    assert!(
        reply.to_ascii_lowercase().contains("connection: close"),
        "{reply}"
    );
    let served = tokio::time::timeout(Duration::from_secs(6), &mut ctl.task).await;
    served.expect("serve returns").unwrap().unwrap();
    assert_eq!(rows(dir.path()), 1);
}

/// Runs `program` with `args` off the runtime; (exit code, stdout + stderr).
async fn run(program: &'static str, args: Vec<String>, stdin: &'static [u8]) -> (i32, String) {
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new(program)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{program} is installed: {e}"));
        // A client that answers before reading all of its input is fine.
        let _ = child.stdin.take().unwrap().write_all(stdin);
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code().unwrap_or(-1), text)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn curl_and_openssl_accept_the_lab_chain_and_only_with_the_lab_root() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Running::start("vm-ctl", dir.path()).await;
    let port = ctl.addr.port();
    let url = format!("https://www.geektime.com:{port}/purchaseOrder");
    let resolve = format!("www.geektime.com:{port}:127.0.0.1");
    let curl = |root: &Path, tls: &str| {
        [
            "-sS",
            "--max-time",
            "5",
            tls,
            "--cacert",
            root.to_str().unwrap(),
            "--resolve",
            &resolve,
            "-H",
            "Content-Type: application/json",
            "-H",
            "Idempotency-Key: curl-1",
            "--data-binary",
            STORY,
            "-w",
            "\n%{http_code} %{ssl_verify_result}",
            &url,
        ]
        .map(String::from)
        .to_vec()
    };
    let root = PkiPaths::new(dir.path().join("pki")).root_cert();
    let (code, out) = run("curl", curl(&root, "--tlsv1.3"), b"").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with("\n201 0"), "{out}");
    assert!(out.contains(r#""served_by":"vm-ctl""#), "{out}");
    let mut tls12 = curl(&root, "--tlsv1.2");
    tls12.splice(0..0, ["--tls-max".to_string(), "1.2".to_string()]);
    let (code, out) = run("curl", tls12, b"").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with("\n201 0"), "{out}");

    // With another lab's root, curl refuses the certificate (exit 60).
    let other = tempfile::tempdir().unwrap();
    let other_paths = PkiPaths::new(other.path().join("pki"));
    pki::make(&other_paths, "other", &["www.geektime.com"]).unwrap();
    let (code, out) = run("curl", curl(&other_paths.root_cert(), "--tlsv1.2"), b"").await;
    assert_eq!(code, 60, "{out}");

    // openssl s_client sees leaf ← intermediate ← root and verifies it.
    let args = [
        "s_client",
        "-connect",
        &ctl.addr.to_string(),
        "-servername",
        "www.geektime.com",
        "-CAfile",
        root.to_str().unwrap(),
        "-verify_return_error",
        "-verify_hostname",
        "www.geektime.com",
        "-alpn",
        "http/1.1",
    ]
    .map(String::from)
    .to_vec();
    let (code, out) = run("openssl", args, b"").await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("depth=2 CN = double11 lab root CA, O = double11 lab t"),
        "{out}"
    );
    assert!(
        out.contains("depth=1 CN = double11 lab intermediate CA"),
        "{out}"
    );
    assert!(out.contains("depth=0 CN = www.geektime.com"), "{out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    assert!(out.contains("ALPN protocol: http/1.1"), "{out}");

    // One order for the one key, whichever TLS version carried it.
    assert_eq!(rows(dir.path()), 1);
}

/// A body far beyond `max_body` is answered 413 from its headers; the front
/// then reads and discards what the client still sends (RFC 9112 § 9.6), so
/// closing does not reset the connection under the answer: curl, still
/// uploading, reads the 413 every time instead of an empty reply.
#[tokio::test]
async fn a_large_body_gets_its_413_before_the_connection_closes() {
    static BODY: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| vec![b'x'; 8 << 20]);
    let dir = tempfile::tempdir().unwrap();
    let ctl = Running::start("vm-ctl", dir.path()).await;
    let port = ctl.addr.port();
    let root = PkiPaths::new(dir.path().join("pki")).root_cert();
    for _ in 0..5 {
        let args = [
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            root.to_str().unwrap(),
            "--resolve",
            &format!("www.geektime.com:{port}:127.0.0.1"),
            "-H",
            "Content-Type: application/json",
            // No 100-continue: the whole body is on its way when the 413 is.
            "-H",
            "Expect:",
            "--data-binary",
            "@-",
            "-w",
            "\n%{http_code}",
            &format!("https://www.geektime.com:{port}/purchaseOrder"),
        ]
        .map(String::from)
        .to_vec();
        let (code, out) = run("curl", args, &BODY).await;
        assert_eq!(code, 0, "{out}");
        assert!(
            out.ends_with("\n413") && out.contains("larger than"),
            "{out}"
        );
    }
    assert_eq!(count(&ctl.report().front.requests, "413"), 5);
    assert_eq!(rows(dir.path()), 0);
}

#[tokio::test]
async fn connections_beyond_max_connections_wait_their_turn() {
    let dir = tempfile::tempdir().unwrap();
    let config = ControllerConfig {
        max_connections: 1,
        ..ControllerConfig::default()
    };
    let ctl = Running::start_with("vm-ctl", dir.path(), config).await;
    let tls = client(dir.path(), &[&rustls::version::TLS13]);
    let name = ServerName::try_from("www.geektime.com").unwrap();
    let connector = tokio_rustls::TlsConnector::from(tls.clone());
    let first = connector
        .connect(name.clone(), TcpStream::connect(ctl.addr).await.unwrap())
        .await
        .unwrap();

    // The second waits in the accept queue while the first holds the slot.
    let second = tokio::spawn(https(ctl.addr, tls, order(STORY, "application/json", None)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished());
    assert_eq!(ctl.report().front.connections, 1);

    drop(first);
    let reply = tokio::time::timeout(Duration::from_secs(3), second)
        .await
        .expect("served once the slot is free")
        .unwrap()
        .unwrap();
    assert_eq!(reply.status, StatusCode::CREATED);
}

// ---------------------------------------------------------------------------
// With `order_service`: the controller calls `order.create` by RPC. A real
// registry and RPC server on loopback; the order service is a test double
// (the real one is tested in its own crate module).

mod rpc_mode {
    use super::*;
    use d11_apps::controller::OrderServiceConfig;
    use d11_apps::phone::{self, OrderRequest};
    use d11_apps::rpc::{
        registry, Balance, Call, Client, ClientConfig, Registry, Server, ServerConfig, Services,
        Value as Hessian,
    };
    use std::collections::HashMap;
    use std::sync::Mutex;

    fn loopback() -> ServerConfig {
        ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..ServerConfig::default()
        }
    }

    async fn serve(name: &str, services: Services) -> SocketAddr {
        let server = Server::new(name, loopback(), services);
        let listener = server.bind().await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(server.serve(listener));
        addr
    }

    /// `order.create`, idempotent by key; the book "sold out" is sold out.
    fn order_double() -> Services {
        let by_key: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let seq = Arc::new(Mutex::new(0i64));
        let mut s = Services::new();
        s.method("order", "create", move |c: Call| {
            let (by_key, seq) = (by_key.clone(), seq.clone());
            async move {
                let mut order_id = c.str_arg(0)?.to_string();
                let order = Value::from(c.arg(2)?.clone());
                if order["className"] == "sold out" {
                    return Ok(Hessian::from(serde_json::json!({
                        "outcome": "sold_out", "order_id": order_id, "replayed": false,
                        "message": "sold out is sold out"})));
                }
                let mut replayed = false;
                if let Some(key) = c.arg(1)?.as_str() {
                    let mut seen = by_key.lock().unwrap();
                    match seen.get(key) {
                        Some(id) => (order_id, replayed) = (id.clone(), true),
                        None => {
                            seen.insert(key.to_string(), order_id.clone());
                        }
                    }
                }
                let n = {
                    let mut n = seq.lock().unwrap();
                    *n += 1;
                    *n
                };
                Ok(Hessian::from(serde_json::json!({
                    "outcome": "confirmed", "order_id": order_id, "replayed": replayed,
                    "order": order, "created_at": "2018-07-01T00:00:00Z",
                    "path": [
                        {"call": "db.order_create", "provider": "192.168.1.60:20880", "tried": 1, "ms": 1.2, "result": "created"},
                        {"call": "stock.deduct", "provider": "192.168.1.50:20880", "tried": 1, "ms": 3.4, "result": "taken", "cas_attempts": 2},
                    ],
                    "commit": {"seq": n, "replication": "acked in 0.4 ms"},
                })))
            }
        });
        s
    }

    #[tokio::test]
    async fn two_controllers_order_through_the_order_service_over_tls() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::new(Duration::from_millis(100));
        tokio::spawn(reg.clone().run_expiry());
        let reg_addr = serve("registry", reg.services()).await;
        let order_addr = serve("order", order_double()).await;
        tokio::spawn(registry::keep_registered(
            Arc::new(Client::new(reg_addr, ClientConfig::default())),
            "order".into(),
            order_addr.to_string(),
            Duration::from_secs(3),
        ));
        let config = || ControllerConfig {
            order_service: Some(OrderServiceConfig {
                registry: reg_addr,
                timeout_ms: 2000,
                balance: Balance::RoundRobin,
                retries: 2,
                actives: 64,
            }),
            ..ControllerConfig::default()
        };
        let a = Running::start_with("vm-ctl", dir.path(), config()).await;
        let b = Running::start_with("vm-ctl2", dir.path(), config()).await;
        for ctl in [&a, &b] {
            assert!(ctl.ctl.wait_for_order_service(Duration::from_secs(5)).await);
        }

        // The phone app against the first: 201, and the path it prints.
        let key = phone::new_idempotency_key();
        let req = OrderRequest {
            host: "www.geektime.com".into(),
            addr: a.addr,
            root: PkiPaths::new(dir.path().join("pki")).root_cert(),
            key_log: false,
            idempotency_key: key.clone(),
            body: phone::story_order(),
            retries: 0,
            timeout: Duration::from_secs(5),
        };
        let out = phone::order(&req).await.unwrap();
        assert_eq!(out.status, 201, "{}", out.body);
        assert_eq!(out.body["served_by"], "vm-ctl");
        assert_eq!(
            phone::rpc_lines(&out.body),
            [
                "  rpc  db.order_create   192.168.1.60:20880   1.2 ms  created",
                "  rpc  stock.deduct      192.168.1.50:20880   3.4 ms  taken (2 CAS attempts)",
                "  commit seq 1, replication acked in 0.4 ms",
            ]
        );
        assert_eq!(phone::refusal(out.status, &out.body), None);

        // The same key on the other controller: the same order, replayed.
        let tls = client(dir.path(), &[&rustls::version::TLS13]);
        let story = phone::story_order().to_string();
        let again = https(
            b.addr,
            tls.clone(),
            order(&story, "application/json", Some(&key)),
        )
        .await
        .unwrap();
        assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
        assert!(again.replayed);
        assert_eq!(again.body["order_id"], out.body["order_id"]);
        assert_eq!(again.body["rpc"]["commit"]["seq"], 2);

        // Sold out: 409, said so.
        let sold_out = story.replace("趣谈网络协议", "sold out");
        let r = https(a.addr, tls, order(&sold_out, "application/json", None))
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
        assert_eq!(
            phone::refusal(409, &r.body).unwrap(),
            format!(
                "sold out: sold out is sold out (order {} was not placed)",
                r.body["order_id"].as_str().unwrap()
            )
        );

        assert_eq!(a.report().orders_created, 1);
        assert_eq!(a.report().orders_sold_out, 1);
        assert_eq!(b.report().orders_replayed, 1);
        assert_eq!(a.ctl.status().orders, "rpc");
        assert!(!dir.path().join("orders.sqlite").exists());
    }

    /// The real shop on loopback (registry, db primary and standby, stock,
    /// coupon, order, each started by `shop::run` as the lab does), with
    /// `stock` copies of the story's book.
    async fn real_shop(dir: &Path, stock: i64) -> SocketAddr {
        use d11_apps::shop::{self, Ctx, ShopApp};
        fn free_port() -> u16 {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        }
        fn app<T: serde::de::DeserializeOwned>(v: Value) -> T {
            serde_json::from_value(v).unwrap()
        }
        let registry: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let listen = |port: u16| serde_json::json!({"server": {"listen": format!("127.0.0.1:{port}")}, "ttl_ms": 600});
        let repl = free_port();
        let apps = [
            (
                "vm-registry",
                ShopApp::Registry(app(
                    serde_json::json!({"listen": registry.to_string(), "sweep_ms": 50}),
                )),
            ),
            (
                "vm-db",
                ShopApp::Db(app(serde_json::json!({
                    "primary": {"listen": format!("127.0.0.1:{repl}"), "mode": "sync"},
                    "provider": listen(free_port()),
                    "seed": {"stock": [{"sku": "趣谈网络协议", "stock": stock}], "coupons": ["D11-1"]},
                }))),
            ),
            (
                "vm-db2",
                ShopApp::Db(app(
                    serde_json::json!({"standby": {"primary": format!("127.0.0.1:{repl}")}}),
                )),
            ),
            (
                "vm-stock",
                ShopApp::Stock(app(serde_json::json!({"provider": listen(free_port())}))),
            ),
            (
                "vm-coupon",
                ShopApp::Coupon(app(serde_json::json!({"provider": listen(free_port())}))),
            ),
            (
                "vm-order",
                ShopApp::Order(app(serde_json::json!({"provider": listen(free_port())}))),
            ),
        ];
        for (node, a) in apps {
            let ctx = Ctx {
                node: node.into(),
                advertise: "127.0.0.1".parse().unwrap(),
                registry: Some(registry),
                data_dir: dir.join("db"),
            };
            let ctl = tokio::net::UnixListener::bind(dir.join(format!("{node}.sock"))).unwrap();
            tokio::spawn(async move {
                if let Err(e) = shop::run(a, ctx, ctl, std::future::pending()).await {
                    panic!("{node}: {e:#}");
                }
            });
        }
        // The order service's own consumers need db, stock and coupon listed.
        let c = Client::new(registry, ClientConfig::default());
        for svc in ["db", "stock", "coupon"] {
            for _ in 0..250 {
                // The registry may not be listening yet: refused is "not yet".
                let listed = registry::lookup(&c, svc).await;
                if listed.is_ok_and(|p| !p.addrs.is_empty()) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        registry
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_real_order_service_confirms_replays_and_sells_out() {
        let dir = tempfile::tempdir().unwrap();
        let registry = real_shop(dir.path(), 1).await;
        let config = ControllerConfig {
            order_service: Some(OrderServiceConfig {
                registry,
                timeout_ms: 5000,
                balance: Balance::RoundRobin,
                retries: 2,
                actives: 64,
            }),
            ..ControllerConfig::default()
        };
        let ctl = Running::start_with("vm-ctl", dir.path(), config).await;
        assert!(ctl.ctl.wait_for_order_service(Duration::from_secs(5)).await);
        let tls = client(dir.path(), &[&rustls::version::TLS13]);
        let story = phone::story_order().to_string();
        let with_coupon = story.replace(r#""price":"68""#, r#""price":"68","coupon":"D11-1""#);
        assert_ne!(with_coupon, story);

        let first = https(
            ctl.addr,
            tls.clone(),
            order(&with_coupon, "application/json", Some("k-1")),
        )
        .await
        .unwrap();
        assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
        assert_eq!(first.body["order"]["coupon"], "D11-1");
        let lines = phone::rpc_lines(&first.body);
        let calls: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("  rpc  ")?.split_whitespace().next())
            .collect();
        assert_eq!(
            calls,
            [
                "db.order_create",
                "stock.deduct",
                "coupon.reserve",
                "coupon.consume",
                "db.order_set_state"
            ],
            "{lines:#?}"
        );
        assert!(lines[1].ends_with("1 CAS attempt)"), "{lines:#?}");
        assert!(
            lines.last().unwrap().starts_with("  commit seq "),
            "{lines:#?}"
        );

        // The same key again: the same order, replayed.
        let again = https(
            ctl.addr,
            tls.clone(),
            order(&with_coupon, "application/json", Some("k-1")),
        )
        .await
        .unwrap();
        assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
        assert!(again.replayed);
        assert_eq!(again.body["order_id"], first.body["order_id"]);

        // The same key with another order: 422.
        let other = story.replace("\"68\"", "\"69\"");
        let reused = https(
            ctl.addr,
            tls.clone(),
            order(&other, "application/json", Some("k-1")),
        )
        .await
        .unwrap();
        assert_eq!(
            reused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            reused.body
        );

        // The one copy is gone: the next order is sold out.
        let sold = https(
            ctl.addr,
            tls,
            order(&story, "application/json", Some("k-2")),
        )
        .await
        .unwrap();
        assert_eq!(sold.status, StatusCode::CONFLICT, "{}", sold.body);
        assert_eq!(sold.body["outcome"], "sold_out", "{}", sold.body);
        let said = phone::refusal(409, &sold.body).unwrap();
        assert!(said.starts_with("sold out: "), "{said}");
        assert_eq!(ctl.report().orders_created, 1);
        assert_eq!(ctl.report().orders_replayed, 1);
        assert_eq!(ctl.report().idempotency_conflicts, 1);
        assert_eq!(ctl.report().orders_sold_out, 1);
    }
}
