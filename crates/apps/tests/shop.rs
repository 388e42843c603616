//! The shop's services on loopback, in one process: registry, db primary
//! (sync) and standby, two stock providers, coupon and order, each started
//! by `shop::run` as the lab starts them, called by RPC through the
//! registry. The lab's root tests (tests/shop.rs of the cli) repeat the
//! must-shows across VXLAN.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use d11_apps::db::Db;
use d11_apps::rpc::{self, registry, CallOptions, Client, ClientConfig, Consumer, Value};
use d11_apps::shop::{self, Ctx, ShopApp};
use serde_json::{json, Value as Json};
use tokio::task::JoinHandle;

const SKU: &str = "趣谈网络协议";
const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Shop {
    dir: tempfile::TempDir,
    registry: SocketAddr,
    apps: std::sync::Mutex<Vec<(String, JoinHandle<()>)>>,
    order: Consumer,
}

impl Shop {
    fn ctx(&self, node: &str) -> Ctx {
        Ctx {
            node: node.into(),
            advertise: LOCAL,
            registry: Some(self.registry),
            data_dir: self.dir.path().join("db"),
        }
    }

    fn start(&self, node: &str, app: ShopApp) {
        let ctx = self.ctx(node);
        let ctl =
            tokio::net::UnixListener::bind(self.dir.path().join(format!("{node}.sock"))).unwrap();
        let h = tokio::spawn(async move {
            if let Err(e) = shop::run(app, ctx, ctl, std::future::pending()).await {
                panic!("app: {e:#}");
            }
        });
        self.apps.lock().unwrap().push((node.into(), h));
    }

    /// Drops the app's task: its sockets close at once and it never
    /// unregisters, as a SIGKILL leaves it.
    fn kill(&self, node: &str) {
        let mut apps = self.apps.lock().unwrap();
        let i = apps.iter().position(|(n, _)| n == node).unwrap();
        apps.remove(i).1.abort();
    }

    fn db(&self, node: &str) -> Db {
        Db::open(&self.dir.path().join("db").join(format!("{node}.sqlite"))).unwrap()
    }

    async fn create(&self, order_id: &str, key: Option<&str>, coupon: Option<&str>) -> Json {
        let mut order =
            json!({"date": "2019-11-11", "className": SKU, "Author": "刘超", "price": "68"});
        if let Some(c) = coupon {
            order["coupon"] = c.into();
        }
        let key = key.map_or(Value::Null, Value::from);
        let r = self
            .order
            .call(
                "create",
                vec![order_id.into(), key, Value::from(order)],
                CallOptions::idempotent(),
            )
            .await;
        match r {
            Ok(v) => Json::from(v),
            Err(f) => json!({"fault": f.to_string()}),
        }
    }

    /// Waits until the standby has applied everything the primary committed.
    async fn standby_caught_up(&self) {
        for _ in 0..200 {
            if self.db("vm-db2").head().unwrap() == self.db("vm-db").head().unwrap() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the standby did not catch up");
    }
}

fn parse<T: serde::de::DeserializeOwned>(v: Json) -> T {
    serde_json::from_value(v).unwrap()
}

/// The whole shop, stock `stock` of the story's book, coupons D11-1..3.
async fn shop(stock: i64) -> Shop {
    let dir = tempfile::tempdir().unwrap();
    let registry = SocketAddr::new(LOCAL, free_port());
    let reg_client = Arc::new(Client::new(registry, ClientConfig::default()));
    let providers = registry::subscribe(reg_client, "order".into(), Duration::from_secs(5));
    // Generous timeouts: these tests are about what happens, not how fast,
    // and the machine may be busy (a timeout is a failover, tested apart).
    let calls = json!({"balance": "round_robin", "timeout_ms": 30000, "failure_backoff_ms": 1000});
    let order = Consumer::new("order", parse(calls.clone()), providers);
    let s = Shop {
        dir,
        registry,
        apps: Default::default(),
        order,
    };
    let listen = |port: u16| json!({"server": {"listen": format!("127.0.0.1:{port}")}, "ttl_ms": 600, "calls": calls});
    s.start(
        "vm-reg",
        ShopApp::Registry(parse(
            json!({"listen": registry.to_string(), "sweep_ms": 50}),
        )),
    );
    let repl = free_port();
    s.start(
        "vm-db",
        ShopApp::Db(parse(json!({
            "primary": {"listen": format!("127.0.0.1:{repl}"), "mode": "sync", "sync_timeout_ms": 10000},
            "provider": listen(free_port()),
            "seed": {"stock": [{"sku": SKU, "stock": stock}], "coupons": ["D11-1", "D11-2", "D11-3"]},
        }))),
    );
    s.start(
        "vm-db2",
        ShopApp::Db(parse(
            json!({"standby": {"primary": format!("127.0.0.1:{repl}")}}),
        )),
    );
    s.start(
        "vm-stock",
        ShopApp::Stock(parse(json!({"provider": listen(free_port())}))),
    );
    s.start(
        "vm-stock2",
        ShopApp::Stock(parse(json!({"provider": listen(free_port())}))),
    );
    s.start(
        "vm-coupon",
        ShopApp::Coupon(parse(json!({"provider": listen(free_port())}))),
    );
    s.start(
        "vm-order",
        ShopApp::Order(parse(json!({"provider": listen(free_port())}))),
    );
    assert!(s.order.wait_for_providers(Duration::from_secs(5)).await);
    // Every service registered (the order service's own consumers follow).
    let c = Client::new(registry, ClientConfig::default());
    for svc in ["db", "stock", "coupon"] {
        for _ in 0..100 {
            let want = if svc == "stock" { 2 } else { 1 };
            if registry::lookup(&c, svc).await.unwrap().addrs.len() == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_order_takes_stock_once_consumes_the_coupon_and_reaches_the_standby() {
    let s = shop(1000).await;
    let r = s.create("ord-1", Some("key-1"), Some("D11-1")).await;
    assert_eq!(r["outcome"], "confirmed", "{r:#}");
    assert_eq!(r["replayed"], false);
    let calls: Vec<&str> = r["path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["call"].as_str().unwrap())
        .collect();
    assert_eq!(
        calls,
        [
            "db.order_create",
            "stock.deduct",
            "coupon.reserve",
            "coupon.consume",
            "db.order_set_state"
        ]
    );
    let deduct = &r["path"][1];
    assert_eq!(deduct["cas_attempts"], 1, "{deduct}");
    assert!(deduct["provider"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert!(
        r["commit"]["replication"]
            .as_str()
            .unwrap()
            .starts_with("sync: acked"),
        "{r}"
    );

    let db = s.db("vm-db");
    let st = db.stock_get(SKU).unwrap().unwrap();
    assert_eq!((st.stock, st.version), (999, 1));
    let orders = db.orders().unwrap();
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0].state.as_str(), "confirmed");
    let coupons = db.coupons().unwrap();
    let c1 = coupons.iter().find(|c| c.code == "D11-1").unwrap();
    assert_eq!(
        (c1.state.as_str(), c1.order_id.as_deref()),
        ("consumed", Some("ord-1"))
    );

    // Sync replication: the standby holds the same rows.
    s.standby_caught_up().await;
    let sb = s.db("vm-db2");
    assert_eq!(sb.orders().unwrap(), orders);
    assert_eq!(sb.stock_all().unwrap(), db.stock_all().unwrap());
    assert_eq!(sb.coupons().unwrap(), coupons);

    // The same coupon on another order is refused, and that order cancelled
    // with its stock given back.
    let r = s.create("ord-2", None, Some("D11-1")).await;
    assert_eq!(r["outcome"], "cancelled", "{r:#}");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("consumed by order ord-1"),
        "{r}"
    );
    let st = db.stock_get(SKU).unwrap().unwrap();
    assert_eq!(st.stock, 999, "restored");
    assert_eq!(
        db.order_get("ord-2").unwrap().unwrap().state.as_str(),
        "cancelled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_in_stock_two_hundred_orders_fifty_sold() {
    let s = Arc::new(shop(50).await);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.create(&format!("ord-{i}"), Some(&format!("k-{i}")), None)
                .await
        }));
    }
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for t in tasks {
        let r = t.await.unwrap();
        if r["outcome"] == "sold_out" {
            assert!(
                r["message"].as_str().unwrap().starts_with("sold out"),
                "{r}"
            );
        }
        *outcomes
            .entry(r["outcome"].as_str().unwrap_or("fault").to_string())
            .or_default() += 1;
    }
    assert_eq!(outcomes.get("confirmed"), Some(&50), "{outcomes:?}");
    assert_eq!(outcomes.get("sold_out"), Some(&150), "{outcomes:?}");
    let db = s.db("vm-db");
    let st = db.stock_get(SKU).unwrap().unwrap();
    assert_eq!((st.stock, st.version), (0, 50));
    let orders = db.orders().unwrap();
    assert_eq!(orders.len(), 200, "one row per order");
    assert_eq!(
        orders
            .iter()
            .filter(|o| o.state.as_str() == "confirmed")
            .count(),
        50
    );
    let moves = db.stock_moves().unwrap();
    assert_eq!(
        moves.iter().filter(|m| m.state.as_str() == "taken").count(),
        50
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_key_three_times_is_one_order() {
    let s = Arc::new(shop(10).await);
    let mut tasks = Vec::new();
    for i in 0..3 {
        let s = s.clone();
        // Each submission gets a new order id from its controller; the key is the same.
        tasks.push(tokio::spawn(async move {
            s.create(&format!("ord-try-{i}"), Some("same-key"), None)
                .await
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r["outcome"], "confirmed", "{r:#}");
        ids.push(r["order_id"].as_str().unwrap().to_string());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let db = s.db("vm-db");
    assert_eq!(db.orders().unwrap().len(), 1);
    assert_eq!(db.stock_get(SKU).unwrap().unwrap().stock, 9);
    // The same key with another body is refused.
    let r = s.create("ord-other", Some("same-key"), Some("D11-2")).await;
    assert_eq!(r["outcome"], "key_reused", "{r:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stock_provider_dies_during_the_run_and_no_order_is_lost_or_doubled() {
    let s = Arc::new(shop(1000).await);
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i * 2)).await;
            let id = format!("ord-{i}");
            (id.clone(), s.create(&id, Some(&id), None).await)
        }));
    }
    // Kill one stock provider part way, with calls in flight.
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.kill("vm-stock");
    let mut confirmed = 0;
    for t in tasks {
        let (id, r) = t.await.unwrap();
        match r["outcome"].as_str() {
            Some("confirmed") => confirmed += 1,
            _ => panic!("{id}: {r:#}"),
        }
    }
    let db = s.db("vm-db");
    assert_eq!(confirmed, 200);
    assert_eq!(db.orders().unwrap().len(), 200);
    assert_eq!(db.stock_get(SKU).unwrap().unwrap().stock, 800);
    assert_eq!(db.stock_moves().unwrap().len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_calls_get_clear_errors_and_the_service_goes_on() {
    let s = shop(5).await;
    let c = Client::new(s.registry, ClientConfig::default());
    let order_addr: SocketAddr = registry::lookup(&c, "order").await.unwrap().addrs[0]
        .parse()
        .unwrap();
    let oc = Client::new(order_addr, ClientConfig::default());
    let f = oc
        .call(rpc::Request::new("order", "nope", vec![]), None)
        .await
        .unwrap_err();
    assert_eq!(f.status, rpc::Status::ServiceNotFound, "{f}");
    let f = oc
        .call(rpc::Request::new("order", "create", vec![1.into()]), None)
        .await
        .unwrap_err();
    assert_eq!(f.status, rpc::Status::BadRequest, "{f}");
    let bad = Value::from(json!({"date": "2019-11-11", "price": "68"}));
    let f = oc
        .call(
            rpc::Request::new("order", "create", vec!["o".into(), Value::Null, bad]),
            None,
        )
        .await
        .unwrap_err();
    assert!(f.message.contains("className"), "{f}");
    let r = s.create("ord-ok", None, None).await;
    assert_eq!(r["outcome"], "confirmed", "{r:#}");
}
