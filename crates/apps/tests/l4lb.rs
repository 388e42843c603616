//! The load balancer on loopback: echo backends on port 0, real tokio
//! sockets, no root.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use d11_apps::l4lb::{L4lb, L4lbConfig};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{sleep, timeout};

/// What a test backend does with a connection.
#[derive(Clone, Copy)]
enum Mode {
    /// Sends back every byte at once.
    Echo,
    /// Reads to end of stream, waits, then answers how many bytes came.
    ReplyAfterEof,
    /// Holds the connection and never reads nor writes.
    Deaf,
}

/// A backend server on loopback; `served` counts connections that sent data
/// (health checks send none).
struct Backend {
    addr: SocketAddr,
    served: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Backend {
    async fn start(addr: SocketAddr, mode: Mode) -> Backend {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicUsize::new(0));
        let counter = served.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let (conn, _) = listener.accept().await.unwrap();
                conns.spawn(handle(conn, mode, counter.clone()));
            }
        });
        Backend { addr, served, task }
    }

    fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    /// Closes the listener and every connection: the port refuses from now.
    async fn kill(self) -> SocketAddr {
        self.task.abort();
        let _ = self.task.await;
        self.addr
    }
}

async fn handle(mut conn: TcpStream, mode: Mode, served: Arc<AtomicUsize>) {
    if let Mode::Deaf = mode {
        return std::future::pending().await;
    }
    let mut buf = vec![0; 64 * 1024];
    let mut total = 0;
    loop {
        let n = match conn.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if total == 0 {
            served.fetch_add(1, Ordering::SeqCst);
        }
        total += n;
        if let Mode::Echo = mode {
            if conn.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }
    if let Mode::ReplyAfterEof = mode {
        sleep(Duration::from_millis(100)).await;
        let _ = conn
            .write_all(format!("got {total} bytes").as_bytes())
            .await;
    }
    let _ = conn.shutdown().await;
}

/// A serving load balancer and the means to stop it.
struct Lb {
    lb: Arc<L4lb>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    served: JoinHandle<std::io::Result<()>>,
}

/// Starts a load balancer over `backends` with fast health checks; `extra`
/// overrides configuration keys.
async fn start_lb(backends: &[SocketAddr], extra: Value) -> Lb {
    let mut config = json!({
        "listen": "127.0.0.1:0",
        "backends": backends,
        "health": {"interval_ms": 50, "timeout_ms": 200, "rise": 2, "fall": 3},
        "connect_timeout_ms": 500,
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    let config: L4lbConfig = serde_json::from_value(config).unwrap();
    let lb = L4lb::new("test", config);
    let listener = lb.bind().unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel();
    let served = tokio::spawn(lb.clone().serve(listener, async {
        let _ = stopped.await;
    }));
    Lb {
        lb,
        addr,
        stop: Some(stop),
        served,
    }
}

impl Lb {
    /// The report as the control socket sends it.
    fn status(&self) -> Value {
        serde_json::to_value(self.lb.status()).expect("the report as JSON")
    }

    fn server(&self, i: usize) -> Value {
        self.status()["backend"]["servers"][i].clone()
    }

    fn frontend(&self, key: &str) -> u64 {
        self.status()["frontend"][key].as_u64().unwrap()
    }

    /// Polls the status until `cond` holds; panics after 5 s.
    async fn wait(&self, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let s = self.status();
            if cond(&s) {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "waiting for {what}: {s:#}"
            );
            sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until no session is live, so leastconn and maxconn see a settled count.
    async fn wait_idle(&self, live: u64) {
        self.wait("live sessions", |s| s["frontend"]["active"] == live)
            .await;
    }
}

/// Sends `msg`, half-closes, reads to the end.
async fn exchange(addr: SocketAddr, msg: &[u8]) -> Vec<u8> {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(msg).await.unwrap();
    c.shutdown().await.unwrap();
    let mut reply = Vec::new();
    timeout(Duration::from_secs(5), c.read_to_end(&mut reply))
        .await
        .expect("reply in time")
        .unwrap();
    reply
}

/// Which backend served one exchange through the load balancer.
async fn served_by(lb: &Lb, backends: &[&Backend]) -> usize {
    let before: Vec<usize> = backends.iter().map(|b| b.served()).collect();
    assert_eq!(exchange(lb.addr, b"ping").await, b"ping");
    lb.wait_idle(0).await;
    let changed: Vec<usize> = (0..backends.len())
        .filter(|&i| backends[i].served() != before[i])
        .collect();
    assert_eq!(changed.len(), 1, "exactly one backend served");
    changed[0]
}

/// An open session that has exchanged one ping.
async fn open_session(addr: SocketAddr) -> TcpStream {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"hi").await.unwrap();
    let mut buf = [0; 2];
    timeout(Duration::from_secs(5), c.read_exact(&mut buf))
        .await
        .expect("echo in time")
        .unwrap();
    c
}

/// Reads until the load balancer closes the connection (FIN or RST);
/// panics if it stays open for `within`.
async fn closed_within(c: &mut TcpStream, within: Duration) {
    let mut buf = [0; 64];
    loop {
        match timeout(within, c.read(&mut buf)).await {
            Err(_) => panic!("connection still open after {within:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
        }
    }
}

/// An address on loopback where nothing listens.
async fn dead_addr() -> SocketAddr {
    Backend::start("127.0.0.1:0".parse().unwrap(), Mode::Echo)
        .await
        .kill()
        .await
}

async fn echo() -> Backend {
    Backend::start("127.0.0.1:0".parse().unwrap(), Mode::Echo).await
}

/// A listener that never accepts and queues one connection at most: once
/// a connection waits in its queue, further SYNs go unanswered.
fn unanswering() -> (TcpListener, SocketAddr) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

fn status_of(server: &Value) -> &str {
    server["status"].as_str().unwrap()
}

#[tokio::test]
async fn sessions_alternate_between_two_backends() {
    let (a, b) = (echo().await, echo().await);
    let lb = start_lb(&[a.addr, b.addr], json!({})).await;
    let mut order = Vec::new();
    for _ in 0..4 {
        order.push(served_by(&lb, &[&a, &b]).await);
    }
    assert_eq!(order, [0, 1, 0, 1]);
    let s = lb.status();
    assert_eq!(s["backend"]["servers"][0]["total"], 2);
    assert_eq!(s["backend"]["servers"][1]["total"], 2);
    assert_eq!(s["frontend"]["accepted"], 4);
    assert_eq!(s["frontend"]["bytes_in"], 16);
    assert_eq!(s["frontend"]["bytes_out"], 16);
}

#[tokio::test]
async fn leastconn_sends_new_sessions_to_the_less_loaded_backend() {
    let (a, b) = (echo().await, echo().await);
    let lb = start_lb(&[a.addr, b.addr], json!({"balance": "leastconn"})).await;
    let _long = open_session(lb.addr).await;
    assert_eq!((a.served(), b.served()), (1, 0));
    for _ in 0..3 {
        assert_eq!(exchange(lb.addr, b"ping").await, b"ping");
        lb.wait_idle(1).await;
    }
    assert_eq!((a.served(), b.served()), (1, 3));
}

#[tokio::test]
async fn a_mebibyte_passes_through_untouched_both_ways() {
    let (a, b) = (echo().await, echo().await);
    let lb = start_lb(&[a.addr, b.addr], json!({})).await;
    let mut x: u64 = 0x2018_1111_0000_0068;
    let payload: Vec<u8> = (0..1 << 20)
        .map(|_| {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let c = TcpStream::connect(lb.addr).await.unwrap();
    let (mut r, mut w) = c.into_split();
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut echoed = Vec::new();
    timeout(Duration::from_secs(20), r.read_to_end(&mut echoed))
        .await
        .expect("echo in time")
        .unwrap();
    writer.await.unwrap();
    let hash = |b: &[u8]| {
        let mut h = DefaultHasher::new();
        b.hash(&mut h);
        h.finish()
    };
    assert_eq!(echoed.len(), payload.len());
    assert_eq!(hash(&echoed), hash(&payload));
    assert!(echoed == payload);
    lb.wait_idle(0).await;
    assert_eq!(lb.server(0)["bytes_in"], 1 << 20);
    assert_eq!(lb.server(0)["bytes_out"], 1 << 20);
}

#[tokio::test]
async fn a_client_that_shut_its_write_side_still_gets_the_late_reply() {
    let any = "127.0.0.1:0".parse().unwrap();
    let a = Backend::start(any, Mode::ReplyAfterEof).await;
    let b = Backend::start(any, Mode::ReplyAfterEof).await;
    let lb = start_lb(&[a.addr, b.addr], json!({})).await;
    assert_eq!(exchange(lb.addr, b"order").await, b"got 5 bytes");
    assert_eq!(exchange(lb.addr, b"order!").await, b"got 6 bytes");
}

#[tokio::test]
async fn a_killed_backend_goes_down_after_fall_checks_and_up_after_rise() {
    let (a, b) = (echo().await, echo().await);
    let lb = start_lb(&[a.addr, b.addr], json!({})).await;
    lb.wait("both fully up", |s| {
        let servers = s["backend"]["servers"].as_array().unwrap();
        servers
            .iter()
            .all(|v| v["checks_passed"].as_u64() >= Some(2))
    })
    .await;
    let b_addr = b.kill().await;
    // Each snapshot is consistent: DOWN exactly when 3 checks failed.
    let down = lb
        .wait("b down", |s| {
            let v = &s["backend"]["servers"][1];
            let failed = v["checks_failed"].as_u64().unwrap();
            assert_eq!(status_of(v) == "DOWN", failed >= 3, "{v}");
            failed >= 3
        })
        .await;
    assert_eq!(down["backend"]["up"], 1);
    assert_eq!(down["backend"]["servers"][1]["last_check"]["code"], "L4CON");
    for _ in 0..4 {
        assert_eq!(served_by(&lb, &[&a]).await, 0);
    }
    assert_eq!(lb.frontend("connect_failures"), 0);

    let passed_while_down = down["backend"]["servers"][1]["checks_passed"]
        .as_u64()
        .unwrap();
    let b = Backend::start(b_addr, Mode::Echo).await;
    lb.wait("b up", |s| {
        let v = &s["backend"]["servers"][1];
        let passed = v["checks_passed"].as_u64().unwrap() - passed_while_down;
        assert_eq!(status_of(v) == "UP", passed >= 2, "{v}");
        passed >= 2
    })
    .await;
    let order = [
        served_by(&lb, &[&a, &b]).await,
        served_by(&lb, &[&a, &b]).await,
    ];
    assert!(order.contains(&0) && order.contains(&1), "{order:?}");
}

#[tokio::test]
async fn a_dead_backend_not_yet_down_is_retried_on_the_other() {
    let (a, b) = (echo().await, echo().await);
    // One check at start, then none for a minute: b stays UP once dead.
    let health = json!({"interval_ms": 60_000, "timeout_ms": 200, "rise": 2, "fall": 3});
    let lb = start_lb(&[a.addr, b.addr], json!({ "health": health })).await;
    lb.wait("first checks", |s| {
        let servers = s["backend"]["servers"].as_array().unwrap();
        servers.iter().all(|v| v["checks_passed"] == 1)
    })
    .await;
    b.kill().await;
    for _ in 0..4 {
        assert_eq!(served_by(&lb, &[&a]).await, 0);
    }
    // Round robin picks b for sessions 2, 3 and 4; each retries on a.
    let s = lb.status();
    assert_eq!(status_of(&s["backend"]["servers"][1]), "UP");
    assert_eq!(s["backend"]["servers"][1]["connect_failures"], 3);
    assert_eq!(s["frontend"]["connect_failures"], 3);
    assert_eq!(s["frontend"]["no_backend"], 0);
    assert_eq!(s["backend"]["servers"][0]["total"], 4);
}

#[tokio::test]
async fn with_no_backend_up_the_client_is_closed_promptly_and_counted() {
    let lb = start_lb(&[dead_addr().await, dead_addr().await], json!({})).await;
    lb.wait("all down", |s| s["backend"]["up"] == 0).await;
    let mut c = TcpStream::connect(lb.addr).await.unwrap();
    let _ = c.write_all(b"order").await;
    closed_within(&mut c, Duration::from_secs(1)).await;
    lb.wait("no_backend counted", |s| s["frontend"]["no_backend"] == 1)
        .await;
    assert_eq!(lb.frontend("connect_failures"), 0);
}

#[tokio::test]
async fn when_every_connect_attempt_fails_the_client_is_closed_and_counted() {
    let (a, b) = (echo().await, echo().await);
    let health = json!({"interval_ms": 60_000, "timeout_ms": 200, "rise": 2, "fall": 3});
    let lb = start_lb(&[a.addr, b.addr], json!({ "health": health })).await;
    lb.wait("first checks", |s| {
        let servers = s["backend"]["servers"].as_array().unwrap();
        servers.iter().all(|v| v["checks_passed"] == 1)
    })
    .await;
    a.kill().await;
    b.kill().await;
    let mut c = TcpStream::connect(lb.addr).await.unwrap();
    closed_within(&mut c, Duration::from_secs(1)).await;
    lb.wait("no_backend counted", |s| s["frontend"]["no_backend"] == 1)
        .await;
    assert_eq!(lb.frontend("connect_failures"), 2);
}

#[tokio::test]
async fn a_connect_left_unanswered_times_out_and_closes_the_client() {
    let (_held, addr) = unanswering();
    let health = json!({"interval_ms": 60_000, "timeout_ms": 200, "rise": 2, "fall": 3});
    let config = json!({"health": health, "connect_timeout_ms": 200});
    let lb = start_lb(&[addr], config).await;
    // The first check's connection fills the queue.
    lb.wait("first check", |s| {
        s["backend"]["servers"][0]["checks_passed"] == 1
    })
    .await;
    let start = Instant::now();
    let mut c = TcpStream::connect(lb.addr).await.unwrap();
    closed_within(&mut c, Duration::from_secs(2)).await;
    assert!(start.elapsed() >= Duration::from_millis(200));
    lb.wait("no_backend counted", |s| s["frontend"]["no_backend"] == 1)
        .await;
    assert_eq!(lb.frontend("connect_failures"), 1);
}

#[tokio::test]
async fn a_check_left_unanswered_counts_as_a_layer4_timeout() {
    let (_held, addr) = unanswering();
    let health = json!({"interval_ms": 50, "timeout_ms": 100, "rise": 2, "fall": 3});
    let lb = start_lb(&[addr], json!({ "health": health })).await;
    let s = lb.wait("down", |s| s["backend"]["up"] == 0).await;
    let server = &s["backend"]["servers"][0];
    assert_eq!(server["checks_passed"], 1);
    assert_eq!(server["last_check"]["code"], "L4TOUT");
    assert!(server["last_check"]["duration_ms"].as_u64() >= Some(100));
}

#[tokio::test]
async fn an_idle_session_is_closed_after_the_client_timeout() {
    let (a, b) = (echo().await, echo().await);
    let timeouts = json!({"client_timeout_ms": 200, "server_timeout_ms": 10_000});
    let lb = start_lb(&[a.addr, b.addr], timeouts).await;
    let start = Instant::now();
    let mut c = open_session(lb.addr).await;
    closed_within(&mut c, Duration::from_secs(2)).await;
    assert!(start.elapsed() >= Duration::from_millis(200));
    lb.wait("timeout counted", |s| s["frontend"]["client_timeouts"] == 1)
        .await;
    assert_eq!(lb.frontend("server_timeouts"), 0);
}

#[tokio::test]
async fn a_silent_server_is_cut_after_the_server_timeout() {
    let any = "127.0.0.1:0".parse().unwrap();
    let a = Backend::start(any, Mode::Deaf).await;
    let timeouts = json!({"client_timeout_ms": 10_000, "server_timeout_ms": 200});
    let lb = start_lb(&[a.addr], timeouts).await;
    let mut c = TcpStream::connect(lb.addr).await.unwrap();
    c.write_all(b"order").await.unwrap();
    closed_within(&mut c, Duration::from_secs(2)).await;
    lb.wait("timeout counted", |s| s["frontend"]["server_timeouts"] == 1)
        .await;
    assert_eq!(lb.frontend("client_timeouts"), 0);
}

#[tokio::test]
async fn a_server_that_does_not_read_stalls_the_client_instead_of_filling_memory() {
    let any = "127.0.0.1:0".parse().unwrap();
    let a = Backend::start(any, Mode::Deaf).await;
    let lb = start_lb(&[a.addr], json!({})).await;
    let mut c = TcpStream::connect(lb.addr).await.unwrap();
    let chunk = vec![0x68; 1 << 20];
    let mut written = 0;
    let stalled = timeout(Duration::from_secs(2), async {
        loop {
            c.write_all(&chunk).await.unwrap();
            written += chunk.len();
        }
    })
    .await;
    assert!(stalled.is_err());
    // What got through sits in kernel socket buffers, not in the balancer.
    assert!(written < 64 << 20, "{written} bytes accepted");
    let forwarded = lb.server(0)["bytes_in"].as_u64().unwrap();
    assert!(forwarded as usize <= written, "{forwarded} > {written}");
}

#[tokio::test]
async fn many_concurrent_sessions_each_get_their_own_bytes_back() {
    let (a, b) = (echo().await, echo().await);
    let lb = start_lb(&[a.addr, b.addr], json!({"balance": "leastconn"})).await;
    let mut clients = JoinSet::new();
    for k in 0..200u32 {
        let addr = lb.addr;
        clients.spawn(async move {
            let msg: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + k) as u8).collect();
            assert_eq!(exchange(addr, &msg).await, msg);
        });
    }
    while let Some(r) = clients.join_next().await {
        r.unwrap();
    }
    lb.wait_idle(0).await;
    assert_eq!(a.served() + b.served(), 200);
    assert_eq!(lb.frontend("bytes_in"), 200 * 10_000);
    assert_eq!(lb.frontend("bytes_out"), 200 * 10_000);
}

#[tokio::test]
async fn a_talking_session_outlives_the_idle_timeout() {
    let (a, b) = (echo().await, echo().await);
    let timeouts = json!({"client_timeout_ms": 200, "server_timeout_ms": 200});
    let lb = start_lb(&[a.addr, b.addr], timeouts).await;
    let mut c = open_session(lb.addr).await;
    for _ in 0..8 {
        sleep(Duration::from_millis(80)).await;
        c.write_all(b"hi").await.unwrap();
        let mut buf = [0; 2];
        c.read_exact(&mut buf).await.unwrap();
    }
    assert_eq!(
        lb.frontend("client_timeouts") + lb.frontend("server_timeouts"),
        0
    );
}

#[tokio::test]
async fn at_maxconn_a_new_connection_waits_in_the_backlog_until_a_session_ends() {
    let (a, b) = (echo().await, echo().await);
    let lb = start_lb(&[a.addr, b.addr], json!({"maxconn": 1})).await;
    let first = open_session(lb.addr).await;
    // The kernel completes the handshake (backlog); the l4lb does not take
    // it, so nothing is proxied and nothing is closed.
    let mut second = TcpStream::connect(lb.addr).await.unwrap();
    second.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    let early = tokio::time::timeout(Duration::from_millis(300), second.read(&mut buf)).await;
    assert!(early.is_err(), "answered beyond maxconn: {early:?}");
    assert_eq!(lb.frontend("accepted"), 1);
    assert_eq!(lb.frontend("maxconn_pauses"), 1);
    // The first ends: the second is taken and served.
    drop(first);
    tokio::time::timeout(Duration::from_secs(5), second.read_exact(&mut buf))
        .await
        .expect("served once a slot freed")
        .unwrap();
    assert_eq!(&buf, b"ping");
    assert_eq!(lb.frontend("accepted"), 2);
}

#[tokio::test]
async fn serve_stops_on_shutdown_and_kills_live_sessions_after_the_grace() {
    let (a, b) = (echo().await, echo().await);
    let mut lb = start_lb(&[a.addr, b.addr], json!({"shutdown_grace_ms": 300})).await;
    let mut live = open_session(lb.addr).await;
    let start = Instant::now();
    lb.stop.take().unwrap().send(()).unwrap();
    timeout(Duration::from_secs(3), &mut lb.served)
        .await
        .expect("serve returns")
        .unwrap()
        .unwrap();
    assert!(start.elapsed() >= Duration::from_millis(300));
    closed_within(&mut live, Duration::from_secs(1)).await;
    assert!(TcpStream::connect(lb.addr).await.is_err());
}

#[tokio::test]
async fn run_binds_the_configured_address_and_status_shows_it() {
    let a = echo().await;
    let config = json!({"listen": "127.0.0.1:0", "backends": [a.addr]});
    let lb = L4lb::new("test", serde_json::from_value(config).unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(lb.clone().run(async {
        let _ = stopped.await;
    }));
    let start = Instant::now();
    let addr: SocketAddr = loop {
        let listen = lb.status().frontend.listen.parse().unwrap();
        if listen != "127.0.0.1:0".parse().unwrap() {
            break listen;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "never listening");
        sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(exchange(addr, b"ping").await, b"ping");
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn serve_refuses_an_invalid_config() {
    let config: L4lbConfig = serde_json::from_value(json!({"backends": []})).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = L4lb::new("test", config)
        .serve(listener, std::future::pending())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`backends`"), "{err}");
}

#[tokio::test]
async fn the_listener_hands_over_connections_with_nagle_off() {
    let config: L4lbConfig =
        serde_json::from_value(json!({"listen": "127.0.0.1:0", "backends": ["127.0.0.1:9"]}))
            .unwrap();
    let listener = L4lb::new("test", config).bind().unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (accepted, _) = listener.accept().await.unwrap();
    assert!(
        accepted.nodelay().unwrap(),
        "TCP_NODELAY is copied from the listener"
    );
    drop(client);
}
