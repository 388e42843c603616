//! The load generator on loopback: a controller on 127.0.0.1 with a fresh
//! lab PKI, a few clients for half a second, every order a full TLS
//! handshake and a 201; and a port nobody listens on, every order an error.
//! No root: this is the load generator's own check, not a benchmark.

use std::net::SocketAddr;
use std::time::Duration;

use d11_apps::controller::{Controller, ControllerConfig};
use d11_apps::load::{self, LoadConfig};
use d11_apps::phone::{self, OrderRequest};
use d11_apps::pki::{self, PkiPaths};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

fn request(addr: SocketAddr, paths: &PkiPaths) -> OrderRequest {
    OrderRequest {
        host: "www.geektime.com".into(),
        addr,
        root: paths.root_cert(),
        key_log: false,
        idempotency_key: String::new(),
        body: phone::story_order(),
        retries: 0,
        timeout: Duration::from_secs(5),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_place_orders_with_a_full_handshake_each_and_count_them() {
    let dir = tempfile::tempdir().unwrap();
    let paths = PkiPaths::new(dir.path().join("pki"));
    pki::make(&paths, "t", &["www.geektime.com"]).unwrap();
    let config = ControllerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ControllerConfig::default()
    };
    let tls = pki::server_config(&paths).unwrap();
    let ctl = Controller::new("vm-ctl", config, tls, &dir.path().join("orders.sqlite")).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(ctl.clone().serve(listener, async {
        let _ = stopped.await;
    }));

    let report = load::run(&LoadConfig {
        request: request(addr, &paths),
        clients: 4,
        warmup: Duration::from_millis(100),
        duration: Duration::from_millis(500),
    })
    .await
    .unwrap();

    assert_eq!(report.clients, 4);
    assert_eq!(report.errors, 0, "{:?}", report.error_kinds);
    assert!(report.orders > 0, "{report:?}");
    assert_eq!(report.orders_per_s, report.orders as f64 / 0.5);
    let l = &report.latency_ms;
    assert!(
        0.0 < l.min && l.min <= l.p50 && l.p50 <= l.p99 && l.p99 <= l.max,
        "{l:?}"
    );
    // Every order, counted or not, was a new connection with a full
    // handshake (no resumption) and a new order in the store.
    let status = ctl.status();
    let handshakes = status.front.tls_handshakes;
    assert_eq!(status.front.connections, handshakes);
    assert!(handshakes >= report.orders, "{status:?}");
    assert_eq!(status.orders_created, handshakes);
    assert_eq!(status.orders_replayed, 0);
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn orders_to_a_closed_port_are_counted_as_errors_by_kind() {
    let dir = tempfile::tempdir().unwrap();
    let paths = PkiPaths::new(dir.path().join("pki"));
    pki::make(&paths, "t", &["www.geektime.com"]).unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let report = load::run(&LoadConfig {
        request: request(addr, &paths),
        clients: 2,
        warmup: Duration::ZERO,
        duration: Duration::from_millis(200),
    })
    .await
    .unwrap();
    assert_eq!(report.orders, 0);
    assert!(report.errors > 0);
    assert_eq!(
        report.error_kinds.keys().collect::<Vec<_>>(),
        ["connect: Connection refused (os error 111)"]
    );
    assert_eq!(report.latency_ms.p99, 0.0);
}
