//! The RPC framework on loopback: servers on port 0, real tokio sockets, no root.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use d11_apps::rpc::codec::{decode_response, Decoder, Frame, Header, HESSIAN2};
use d11_apps::rpc::registry::{self, Registry};
use d11_apps::rpc::{
    Balance, Call, CallOptions, Client, ClientConfig, Consumer, ConsumerConfig, Fault, Providers,
    Request, Server, ServerConfig, Services, Status, Value,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{sleep, timeout, Instant};

fn loopback() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ServerConfig::default()
    }
}

/// A running server and its serving task (abort it to kill the provider).
struct Running {
    server: Arc<Server>,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Running {
    async fn kill(self) -> SocketAddr {
        self.task.abort();
        let _ = self.task.await;
        self.addr
    }
}

async fn start(name: &str, config: ServerConfig, services: Services) -> Running {
    let server = Server::new(name, config, services);
    let listener = server.bind().await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(server.clone().serve(listener));
    Running { server, addr, task }
}

/// `test.echo(x, delay_ms)` answers x after delay_ms; `test.panic` panics.
fn test_services() -> Services {
    let mut s = Services::new();
    s.method("test", "echo", |c: Call| async move {
        let delay = c.int_arg(1).unwrap_or(0);
        sleep(Duration::from_millis(delay as u64)).await;
        Ok(c.arg(0)?.clone())
    });
    s.method("test", "fail", |_c: Call| async move {
        Err::<Value, _>(Fault::new(Status::ServiceError, "sold out"))
    });
    s.method("test", "panic", |_c: Call| async move {
        if std::hint::black_box(true) {
            panic!("handler bug");
        }
        Ok(Value::Null)
    });
    s
}

fn echo(x: Value, delay_ms: i64) -> Request {
    Request::new("test", "echo", vec![x, Value::Long(delay_ms)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_concurrent_calls_on_one_connection_are_all_matched() {
    let srv = start("p", loopback(), test_services()).await;
    let client = Arc::new(
        Client::connect(srv.addr, ClientConfig::default())
            .await
            .unwrap(),
    );
    let mut calls = JoinSet::new();
    for i in 0..1000i64 {
        let c = client.clone();
        // Later calls answer sooner: responses come back out of order.
        calls.spawn(async move {
            let r = c
                .call(
                    echo(Value::Long(i), (1000 - i) % 50),
                    Some(Duration::from_secs(10)),
                )
                .await;
            (i, r)
        });
    }
    let mut n = 0;
    while let Some(r) = calls.join_next().await {
        let (i, r) = r.unwrap();
        assert_eq!(r, Ok(Value::Long(i)));
        n += 1;
    }
    assert_eq!(n, 1000);
    let s = srv.server.status();
    assert_eq!(s.connections, 1, "{s:?}");
    assert_eq!(s.responses["ok"], 1000, "{s:?}");
    assert_eq!(client.status().ok, 1000);
}

#[tokio::test]
async fn a_slow_call_times_out_with_30_and_the_connection_goes_on() {
    let srv = start("p", loopback(), test_services()).await;
    let client = Client::connect(srv.addr, ClientConfig::default())
        .await
        .unwrap();
    let t0 = Instant::now();
    let r = client
        .call(echo("late".into(), 1000), Some(Duration::from_millis(100)))
        .await;
    let f = r.unwrap_err();
    assert_eq!(f.status, Status::ClientTimeout, "{f}");
    assert!(t0.elapsed() < Duration::from_millis(500));
    assert_eq!(
        client.call(echo("next".into(), 0), None).await,
        Ok("next".into())
    );
    // The server gives up too when the call says timeout=50: 31.
    let mut req = echo("x".into(), 1000);
    req.attachments.insert("timeout".into(), "50".into());
    let f = client
        .call(req, Some(Duration::from_secs(2)))
        .await
        .unwrap_err();
    assert_eq!(f.status, Status::ServerTimeout, "{f}");
}

#[tokio::test]
async fn unknown_service_or_method_is_60_and_service_errors_are_70() {
    let srv = start("p", loopback(), test_services()).await;
    let client = Client::connect(srv.addr, ClientConfig::default())
        .await
        .unwrap();
    let f = client
        .call(Request::new("nope", "x", vec![]), None)
        .await
        .unwrap_err();
    assert_eq!(f.status, Status::ServiceNotFound);
    assert!(f.message.contains("\"nope\""), "{f}");
    let f = client
        .call(Request::new("test", "nope", vec![]), None)
        .await
        .unwrap_err();
    assert_eq!(f.status, Status::ServiceNotFound);
    assert!(f.message.contains("no method \"nope\""), "{f}");
    let f = client
        .call(Request::new("test", "fail", vec![]), None)
        .await
        .unwrap_err();
    assert_eq!(f, Fault::new(Status::ServiceError, "sold out"));
    let f = client
        .call(Request::new("test", "panic", vec![]), None)
        .await
        .unwrap_err();
    assert_eq!(f.status, Status::ServerError, "{f}");
    assert_eq!(client.call(echo(1.into(), 0), None).await, Ok(1.into()));
}

/// Reads frames from a raw connection until `n` arrive or it closes.
async fn read_frames(s: &mut TcpStream, n: usize) -> (Vec<Frame>, bool) {
    let mut d = Decoder::new(1 << 20);
    let mut out = Vec::new();
    let mut buf = [0; 4096];
    while out.len() < n {
        match timeout(Duration::from_secs(3), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(k)) => d.push(&buf[..k]),
            Err(_) => panic!("no frame in 3 s"),
        }
        while let Ok(Some(f)) = d.next_frame() {
            out.push(f);
        }
    }
    (out, false)
}

#[tokio::test]
async fn corrupt_frames_get_40_or_a_close_and_other_connections_keep_working() {
    let config = ServerConfig {
        max_body: 1024,
        ..loopback()
    };
    let srv = start("p", config, test_services()).await;
    let good = Client::connect(srv.addr, ClientConfig::default())
        .await
        .unwrap();
    let mut raw = TcpStream::connect(srv.addr).await.unwrap();

    // 1. A valid header over a body that is not a request: 40, same id.
    let mut f = Frame::heartbeat(101);
    f.header.event = false;
    f.body = vec![0x4f, 0x01].into();
    raw.write_all(&f.to_bytes()).await.unwrap();
    // 2. A body over the limit (header says 4096, 4096 bytes follow): 40.
    let big = Header {
        request: true,
        two_way: true,
        event: false,
        serialization: HESSIAN2,
        status: Status::Unknown(0),
        request_id: 102,
        body_len: 4096,
    };
    raw.write_all(&big.emit()).await.unwrap();
    raw.write_all(&[0u8; 4096]).await.unwrap();
    // 3. Serialization id 8 (Dubbo's kryo): 40.
    let mut k = Frame::request(103, &Request::new("test", "echo", vec![1.into()]));
    k.header.serialization = 8;
    raw.write_all(&k.to_bytes()).await.unwrap();
    // 4. And the connection still serves a good call.
    raw.write_all(&Frame::request(104, &echo("still here".into(), 0)).to_bytes())
        .await
        .unwrap();
    let (frames, closed) = read_frames(&mut raw, 4).await;
    assert!(!closed);
    let by_id: HashMap<u64, &Frame> = frames.iter().map(|f| (f.header.request_id, f)).collect();
    for id in [101, 102, 103] {
        let f = by_id[&id];
        assert_eq!(f.header.status, Status::BadRequest, "request {id}");
        let msg = decode_response(f.header.status, &f.body)
            .unwrap()
            .unwrap_err()
            .message;
        assert!(!msg.is_empty());
    }
    let f = by_id[&104];
    assert_eq!(
        decode_response(f.header.status, &f.body).unwrap(),
        Ok("still here".into())
    );

    // 5. Bad magic: the server closes this connection...
    raw.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let (frames, closed) = read_frames(&mut raw, 1).await;
    assert!(closed && frames.is_empty());
    // ... and nobody else notices.
    assert_eq!(good.call(echo("ok".into(), 0), None).await, Ok("ok".into()));
    let s = srv.server.status();
    assert_eq!(s.bad_frames["bad_magic"], 1, "{s:?}");
    assert_eq!(s.bad_frames["too_large"], 1, "{s:?}");
    assert_eq!(s.bad_frames["unknown_serialization"], 1, "{s:?}");
    assert_eq!(s.bad_frames["bad_body"], 1, "{s:?}");
}

#[tokio::test]
async fn heartbeats_keep_a_connection_up_and_silence_closes_it() {
    let config = ServerConfig {
        idle_timeout_ms: 300,
        ..loopback()
    };
    let srv = start("p", config, test_services()).await;
    let client = Client::connect(
        srv.addr,
        ClientConfig {
            heartbeat_ms: 100,
            ..ClientConfig::default()
        },
    )
    .await
    .unwrap();
    let mut silent = TcpStream::connect(srv.addr).await.unwrap();
    let t0 = Instant::now();
    let (_, closed) = read_frames(&mut silent, 1).await;
    assert!(closed, "a silent connection is closed");
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t0.elapsed()
    );
    sleep(Duration::from_millis(700)).await;
    assert!(client.is_connected().await);
    assert_eq!(client.call(echo(7.into(), 0), None).await, Ok(7.into()));
    let s = srv.server.status();
    assert_eq!(s.idle_closed, 1, "{s:?}");
    assert_eq!(s.connections, 2, "{s:?}");
    assert!(s.heartbeats >= 5, "{s:?}");
    assert!(client.status().heartbeat_replies >= 5);
}

#[tokio::test]
async fn a_client_reports_a_lost_server_and_reconnects_when_it_is_back() {
    let srv = start("p", loopback(), test_services()).await;
    let client = Client::connect(srv.addr, ClientConfig::default())
        .await
        .unwrap();
    assert_eq!(client.call(echo(1.into(), 0), None).await, Ok(1.into()));
    // A call in flight when the provider dies is failed at once, not at its timeout.
    let pending = client.call(echo(2.into(), 5000), Some(Duration::from_secs(10)));
    let addr = srv.addr;
    let killer = tokio::spawn(async move {
        sleep(Duration::from_millis(100)).await;
        srv.kill().await
    });
    let t0 = Instant::now();
    let f = pending.await.unwrap_err();
    assert_eq!(f.status, Status::ClientError, "{f}");
    assert!(t0.elapsed() < Duration::from_secs(2));
    killer.await.unwrap();
    let f = client.call(echo(3.into(), 0), None).await.unwrap_err();
    assert_eq!(f.status, Status::ClientError, "{f}");
    let config = ServerConfig {
        listen: addr,
        ..ServerConfig::default()
    };
    let _srv = start("p", config, test_services()).await;
    assert_eq!(client.call(echo(4.into(), 0), None).await, Ok(4.into()));
    assert_eq!(client.status().connects, 2);
}

/// A registry server and a client of it.
async fn registry(sweep_ms: u64) -> (Arc<Registry>, Running, Arc<Client>) {
    let reg = Registry::new(Duration::from_millis(sweep_ms));
    tokio::spawn(reg.clone().run_expiry());
    let srv = start("registry", loopback(), reg.services()).await;
    let client = Arc::new(
        Client::connect(srv.addr, ClientConfig::default())
            .await
            .unwrap(),
    );
    (reg, srv, client)
}

async fn wait_for(rx: &mut watch::Receiver<Providers>, want: &[&str]) -> Providers {
    timeout(Duration::from_secs(5), async {
        loop {
            if rx.borrow_and_update().addrs == want {
                return rx.borrow().clone();
            }
            rx.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("providers never became {want:?}: {:?}", rx.borrow()))
}

#[tokio::test]
async fn registry_pushes_registrations_expiries_and_unregistrations() {
    let (reg, _srv, client) = registry(50).await;
    let mut rx = registry::subscribe(client.clone(), "stock".into(), Duration::from_secs(5));
    assert_eq!(wait_for(&mut rx, &[]).await.revision, 0);
    // A renews (ttl 300 ms, every 100 ms); B registers once and goes quiet.
    let a = tokio::spawn(registry::keep_registered(
        client.clone(),
        "stock".into(),
        "10.0.0.1:20880".into(),
        Duration::from_millis(300),
    ));
    let b = Request::new(
        registry::SERVICE,
        "register",
        vec!["stock".into(), "10.0.0.2:20880".into(), Value::Long(300)],
    );
    client.call(b, None).await.unwrap();
    let t0 = Instant::now();
    wait_for(&mut rx, &["10.0.0.1:20880", "10.0.0.2:20880"]).await;
    // B expires about 300 ms later; A stays.
    wait_for(&mut rx, &["10.0.0.1:20880"]).await;
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t0.elapsed()
    );
    sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.borrow().addrs, ["10.0.0.1:20880"]);
    let s = reg.status();
    assert_eq!(
        s.services["stock"].providers[0].addr, "10.0.0.1:20880",
        "{s:?}"
    );
    // A shuts down cleanly.
    a.abort();
    registry::unregister(&client, "stock", "10.0.0.1:20880")
        .await
        .unwrap();
    let p = wait_for(&mut rx, &[]).await;
    assert!(p.revision >= 4, "{p:?}");
    assert_eq!(registry::lookup(&client, "stock").await.unwrap(), p);
    // Bad arguments are 40.
    let f = client
        .call(
            Request::new(registry::SERVICE, "register", vec!["stock".into()]),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(f.status, Status::BadRequest, "{f}");
}

/// `stock.deduct(call_id)`: records which provider ran which call.
fn stock(name: &'static str, runs: Arc<Mutex<HashMap<i64, Vec<&'static str>>>>) -> Services {
    let mut s = Services::new();
    s.method("stock", "deduct", move |c: Call| {
        let runs = runs.clone();
        async move {
            let id = c.int_arg(0)?;
            runs.lock().unwrap().entry(id).or_default().push(name);
            Ok(Value::from(name))
        }
    });
    s
}

/// Two stock providers registered with the registry.
async fn two_providers(
    client: &Arc<Client>,
    runs: &Arc<Mutex<HashMap<i64, Vec<&'static str>>>>,
    ttl: Duration,
) -> Vec<(Running, JoinHandle<()>)> {
    let mut out = Vec::new();
    for name in ["stock-1", "stock-2"] {
        let srv = start(name, loopback(), stock(name, runs.clone())).await;
        let renew = tokio::spawn(registry::keep_registered(
            client.clone(),
            "stock".into(),
            srv.addr.to_string(),
            ttl,
        ));
        out.push((srv, renew));
    }
    out
}

#[tokio::test]
async fn consumer_round_robin_alternates_between_two_providers() {
    let (_reg, _srv, client) = registry(50).await;
    let runs = Arc::default();
    let providers = two_providers(&client, &runs, Duration::from_secs(5)).await;
    let mut rx = registry::subscribe(client.clone(), "stock".into(), Duration::from_secs(5));
    let mut want: Vec<String> = providers.iter().map(|(r, _)| r.addr.to_string()).collect();
    want.sort();
    wait_for(&mut rx, &[&want[0], &want[1]]).await;
    let config = ConsumerConfig {
        balance: Balance::RoundRobin,
        ..ConsumerConfig::default()
    };
    let consumer = Consumer::new("stock", config, rx);
    let mut got = Vec::new();
    for i in 0..10 {
        let v = consumer
            .call("deduct", vec![Value::Long(i)], CallOptions::default())
            .await;
        got.push(v.unwrap().as_str().unwrap().to_owned());
    }
    assert!(got.windows(2).all(|w| w[0] != w[1]), "{got:?}");
    assert_eq!(got.iter().filter(|n| *n == "stock-1").count(), 5);
    let s = consumer.status();
    assert_eq!(s.providers[0].chosen, 5, "{s:?}");
    assert_eq!(s.providers[1].chosen, 5, "{s:?}");
}

#[tokio::test]
async fn a_killed_provider_fails_over_idempotent_calls_only_and_none_runs_twice() {
    let (_reg, _srv, client) = registry(50).await;
    let runs: Arc<Mutex<HashMap<i64, Vec<&'static str>>>> = Arc::default();
    let mut providers = two_providers(&client, &runs, Duration::from_millis(600)).await;
    let new_consumer = |balance| {
        let rx = registry::subscribe(client.clone(), "stock".into(), Duration::from_secs(5));
        let config = ConsumerConfig {
            balance,
            ..ConsumerConfig::default()
        };
        Consumer::new("stock", config, rx)
    };
    let retrying = new_consumer(Balance::RoundRobin);
    let once = new_consumer(Balance::RoundRobin);
    // Both consumers see both providers and have a connection to each.
    let mut id = 0;
    for c in [&retrying, &once] {
        assert!(c.wait_for_providers(Duration::from_secs(5)).await);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            id += 1;
            if let Ok(v) = c
                .call("deduct", vec![Value::Long(id)], CallOptions::default())
                .await
            {
                seen.insert(v.as_str().unwrap().to_owned());
            }
            if seen.len() == 2 {
                break;
            }
            sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(seen.len(), 2);
    }
    // Kill stock-1 (its listener and connections) and its renewals; the
    // registry still lists it until its TTL runs out.
    let (dead, renew) = providers.remove(0);
    renew.abort();
    dead.kill().await;

    let mut ok = 0;
    for _ in 0..20 {
        id += 1;
        let r = retrying
            .call("deduct", vec![Value::Long(id)], CallOptions::idempotent())
            .await;
        assert_eq!(r, Ok("stock-2".into()), "idempotent call {id}");
        ok += 1;
    }
    assert_eq!(ok, 20);
    assert!(retrying.status().failovers >= 1);

    let mut failed = Vec::new();
    for _ in 0..20 {
        id += 1;
        match once
            .call("deduct", vec![Value::Long(id)], CallOptions::default())
            .await
        {
            Ok(v) => assert_eq!(v, Value::from("stock-2")),
            Err(f) => {
                assert_eq!(f.status, Status::ClientError, "{f}");
                failed.push(id);
            }
        }
    }
    // The first call sent to the dead provider fails; the provider is then skipped.
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(once.status().failovers, 0);

    // No call ran twice; a failed call did not run at all.
    let runs = runs.lock().unwrap().clone();
    for (id, who) in &runs {
        assert_eq!(who.len(), 1, "call {id} ran on {who:?}");
    }
    for id in failed {
        assert!(!runs.contains_key(&id));
    }

    // Once its TTL runs out the registry drops stock-1 and consumers follow.
    timeout(Duration::from_secs(5), async {
        while once.status().providers.len() != 1 {
            let _ = once
                .call("deduct", vec![Value::Long(0)], CallOptions::default())
                .await;
            sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the expired provider leaves the consumer's list");
}

/// `test.budget()` answers the `timeout` attachment it was called with;
/// `test.slow()` answers after a second.
fn budget_services() -> Services {
    let mut s = Services::new();
    s.method("test", "budget", |c: Call| async move {
        let t = c
            .request
            .attachments
            .get("timeout")
            .cloned()
            .unwrap_or_default();
        Ok(Value::from(t))
    });
    s.method("test", "slow", |_c: Call| async move {
        sleep(Duration::from_secs(1)).await;
        Ok(Value::Null)
    });
    s
}

#[tokio::test]
async fn a_call_with_a_deadline_cuts_its_attempts_to_it_and_fails_over_no_later() {
    let a = start("a", loopback(), budget_services()).await;
    let b = start("b", loopback(), budget_services()).await;
    let list = Providers {
        revision: 1,
        addrs: vec![a.addr.to_string(), b.addr.to_string()],
    };
    let (_tx, rx) = watch::channel(list);
    let config = ConsumerConfig {
        timeout_ms: 10_000,
        retries: 2,
        ..ConsumerConfig::default()
    };
    let consumer = Consumer::new("test", config, rx);
    let within = |ms| CallOptions {
        deadline: Some(std::time::Instant::now() + Duration::from_millis(ms)),
        ..CallOptions::idempotent()
    };
    // The attempt's timeout, sent as the server's handler deadline, is what
    // is left of the caller's 300 ms, not the consumer's 10 s.
    let v = consumer.call("budget", vec![], within(300)).await.unwrap();
    let ms: u64 = v.as_str().unwrap().parse().unwrap();
    assert!((1..=300).contains(&ms), "{ms}");
    // A slow provider: the one attempt uses up the deadline, and no
    // failover to the other starts after it. The server's handler deadline
    // and the caller's end together: whichever side notices first names it.
    let t = consumer.call_traced("slow", vec![], within(100)).await;
    assert_eq!(t.tried.len(), 1, "{:?}", t.tried);
    let status = t.result.unwrap_err().status;
    assert!(
        matches!(status, Status::ClientTimeout | Status::ServerTimeout),
        "{status:?}"
    );
    // A deadline already past: no attempt at all.
    let t = consumer.call_traced("budget", vec![], within(0)).await;
    assert!(t.tried.is_empty());
    assert_eq!(t.result.unwrap_err().status, Status::ClientTimeout);
}
