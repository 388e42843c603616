//! Handler tests through the router, without TLS or sockets.

use super::*;
use crate::pki;
use tower::ServiceExt;

const STORY: &str =
    r#"{"order":{"date":"2018-07-01","className":"趣谈网络协议","Author":"刘超","price":"68"}}"#;

fn controller(name: &str, dir: &Path) -> Arc<Controller> {
    let paths = pki::PkiPaths::new(dir.join("pki"));
    if !paths.server_chain().exists() {
        pki::make(&paths, "t", &["www.geektime.com"]).unwrap();
    }
    let tls = pki::server_config(&paths).unwrap();
    let config = ControllerConfig {
        max_body: 1024,
        body_timeout_ms: 200,
        ..ControllerConfig::default()
    };
    Controller::new(name, config, tls, &dir.join("orders.sqlite")).unwrap()
}

fn post() -> axum::http::request::Builder {
    Request::post("/purchaseOrder").header(header::CONTENT_TYPE, "application/json")
}

async fn call(ctl: &Arc<Controller>, req: Request) -> (StatusCode, HeaderMap, Value) {
    let resp = ctl.router().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (parts.status, parts.headers, json)
}

async fn order(
    ctl: &Arc<Controller>,
    key: Option<&str>,
    body: &str,
) -> (StatusCode, HeaderMap, Value) {
    let mut req = post();
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    call(ctl, req.body(Body::from(body.to_string())).unwrap()).await
}

fn rows(ctl: &Controller) -> u64 {
    match &ctl.orders {
        Orders::Local(store) => store.count().unwrap(),
        Orders::Rpc(_) => panic!("a controller of the order service keeps no rows"),
    }
}

#[tokio::test]
async fn the_story_order_is_created_with_201() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = controller("vm-ctl", dir.path());
    let (status, headers, body) = order(&ctl, None, STORY).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "created");
    assert_eq!(body["served_by"], "vm-ctl");
    assert!(body["order_id"].as_str().unwrap().starts_with("ord-"));
    assert_eq!(body["order"]["className"], "趣谈网络协议");
    assert_eq!(body["order"]["Author"], "刘超");
    assert_eq!(body["order"]["price"], "68");
    assert_eq!(body["order"]["date"], "2018-07-01");
    assert!(headers.get("idempotent-replayed").is_none());
    assert_eq!(rows(&ctl), 1);
    let status = ctl.status();
    assert_eq!(status.orders_created, 1);
    assert_eq!(status.front.requests["201"], 1);
}

#[tokio::test]
async fn without_a_key_each_post_makes_a_new_order() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = controller("vm-ctl", dir.path());
    let (_, _, a) = order(&ctl, None, STORY).await;
    let (_, _, b) = order(&ctl, None, STORY).await;
    assert_ne!(a["order_id"], b["order_id"]);
    assert_eq!(rows(&ctl), 2);
}

#[tokio::test]
async fn malformed_json_is_400_with_a_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = controller("vm-ctl", dir.path());
    let (status, headers, body) = order(&ctl, None, r#"{"order":{"date":"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON"),
        "{body}"
    );
    assert_eq!(rows(&ctl), 0);
}

#[tokio::test]
async fn bad_fields_are_400_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = controller("vm-ctl", dir.path());
    let cases = [
        (r#"[1]"#, ""),
        (r#"{}"#, "order"),
        (r#"{"order":"x"}"#, "order"),
        (
            r#"{"order":{"date":"2018-07-01","className":"c","Author":"a","price":"68"},"x":1}"#,
            "x",
        ),
        (
            r#"{"order":{"date":"2018-07-01","className":"c","Author":"a","price":"68","qty":1}}"#,
            "order.qty",
        ),
        (
            r#"{"order":{"date":"2018-02-30","className":"c","Author":"a","price":"68"}}"#,
            "order.date",
        ),
        (
            r#"{"order":{"date":"18-07-01","className":"c","Author":"a","price":"68"}}"#,
            "order.date",
        ),
        (
            r#"{"order":{"date":"2018-07-01","className":" ","Author":"a","price":"68"}}"#,
            "order.className",
        ),
        (
            r#"{"order":{"date":"2018-07-01","className":"c","price":"68"}}"#,
            "order.Author",
        ),
        (
            r#"{"order":{"date":"2018-07-01","className":"c","Author":7,"price":"68"}}"#,
            "order.Author",
        ),
        (
            r#"{"order":{"date":"2018-07-01","className":"c","Author":"a","price":68}}"#,
            "order.price",
        ),
        (
            r#"{"order":{"date":"2018-07-01","className":"c","Author":"a","price":"0.00"}}"#,
            "order.price",
        ),
        (
            r#"{"order":{"date":"2018-07-01","className":"c","Author":"a","price":"-68"}}"#,
            "order.price",
        ),
        (
            r#"{"order":{"date":"2018-07-01","className":"c","Author":"a","price":"68.123"}}"#,
            "order.price",
        ),
    ];
    for (input, field) in cases {
        let (status, _, body) = order(&ctl, None, input).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{input}: {body}");
        assert_eq!(body["field"], field, "{input}: {body}");
        assert!(body["error"].is_string());
    }
    assert_eq!(rows(&ctl), 0);
}

#[test]
fn prices_and_dates() {
    for ok in ["68", "68.5", "68.50", "0.01", "000001"] {
        assert!(valid_price(ok), "{ok}");
    }
    for bad in [
        "",
        "0",
        "0.0",
        ".5",
        "5.",
        "1e3",
        "68.123",
        " 68",
        "+68",
        "1234567890",
    ] {
        assert!(!valid_price(bad), "{bad}");
    }
    for ok in ["2018-07-01", "2020-02-29", "2018-11-11"] {
        assert!(valid_date(ok), "{ok}");
    }
    for bad in [
        "2019-02-29",
        "2018-13-01",
        "2018-7-1",
        "2018/07/01",
        "2018-07-01T00",
        "２018-07-01",
    ] {
        assert!(!valid_date(bad), "{bad}");
    }
}

#[tokio::test]
async fn a_body_over_max_body_is_413_declared_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = controller("vm-ctl", dir.path());
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(2000));
    let req = post()
        .header(header::CONTENT_LENGTH, big.len())
        .body(Body::from(big.clone()))
        .unwrap();
    let (status, _, body) = call(&ctl, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    // Without a Content-Length (chunked), the limit still holds while reading.
    let (status, _, body) = call(&ctl, post().body(chunked(big.as_bytes())).unwrap()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
}

/// A body of unknown length (as with chunked encoding), in 100-byte frames.
struct Chunked(std::collections::VecDeque<bytes::Bytes>);

impl hyper::body::Body for Chunked {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

fn chunked(bytes: &[u8]) -> Body {
    Body::new(Chunked(
        bytes
            .chunks(100)
            .map(bytes::Bytes::copy_from_slice)
            .collect(),
    ))
}

/// A body whose bytes never come.
struct Stalled;

impl hyper::body::Body for Stalled {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Pending
    }
}

#[tokio::test]
async fn a_body_that_does_not_arrive_is_408() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = controller("vm-ctl", dir.path());
    let req = post().body(Body::new(Stalled)).unwrap();
    let (status, _, body) = call(&ctl, req).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{body}");
    assert_eq!(rows(&ctl), 0);
}

#[tokio::test]
async fn a_wrong_content_type_is_415() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = controller("vm-ctl", dir.path());
    for ct in [Some("text/plain"), Some("application/jsonx"), None] {
        let mut req = Request::post("/purchaseOrder");
        if let Some(ct) = ct {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let (status, headers, body) = call(&ctl, req.body(Body::from(STORY)).unwrap()).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
        assert_eq!(headers[header::ACCEPT], "application/json");
        assert!(body["error"].is_string());
    }
    let req = Request::post("/purchaseOrder")
        .header(header::CONTENT_TYPE, "Application/JSON; charset=utf-8")
        .body(Body::from(STORY))
        .unwrap();
    assert_eq!(call(&ctl, req).await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn other_methods_are_405_and_other_paths_404() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = controller("vm-ctl", dir.path());
    let req = Request::get("/purchaseOrder").body(Body::empty()).unwrap();
    let (status, headers, body) = call(&ctl, req).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers[header::ALLOW], "POST");
    assert!(body["error"].is_string());
    let req = Request::delete("/health").body(Body::empty()).unwrap();
    let (status, headers, _) = call(&ctl, req).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers[header::ALLOW], "GET, HEAD");
    let req = Request::post("/order").body(Body::from(STORY)).unwrap();
    let (status, _, body) = call(&ctl, req).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "no resource at /order");
    let req = Request::get("/health").body(Body::empty()).unwrap();
    let (status, _, body) = call(&ctl, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["served_by"], "vm-ctl");
    let requests = &ctl.status().front.requests;
    assert_eq!(requests["405"], 2);
    assert_eq!(requests["404"], 1);
    assert_eq!(requests["200"], 1);
}

#[tokio::test]
async fn the_same_key_replays_the_same_order_on_either_controller() {
    let dir = tempfile::tempdir().unwrap();
    let (ctl, ctl2) = (
        controller("vm-ctl", dir.path()),
        controller("vm-ctl2", dir.path()),
    );
    let key = "6f1c2a7e-3b1d-4c55-9a43-0d2f7c1e9b10";
    let (status, headers, first) = order(&ctl, Some(key), STORY).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(headers.get("idempotent-replayed").is_none());
    let (status, headers, again) = order(&ctl2, Some(key), STORY).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(first, again);
    assert_eq!(again["served_by"], "vm-ctl");
    assert_eq!(rows(&ctl), 1);
    assert_eq!(ctl2.status().orders_replayed, 1);

    // The same key with another order is refused.
    let other = STORY.replace("\"68\"", "\"69\"");
    let (status, _, body) = order(&ctl2, Some(key), &other).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(rows(&ctl), 1);
}

#[tokio::test]
async fn a_bad_idempotency_key_is_400() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = controller("vm-ctl", dir.path());
    let long = "k".repeat(256);
    for key in ["", "has space", long.as_str()] {
        let (status, _, body) = order(&ctl, Some(key), STORY).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{key:?}");
        assert_eq!(body["field"], "Idempotency-Key");
    }
    let req = post()
        .header("Idempotency-Key", "a")
        .header("Idempotency-Key", "b")
        .body(Body::from(STORY))
        .unwrap();
    assert_eq!(call(&ctl, req).await.0, StatusCode::BAD_REQUEST);
    let (status, _, _) = order(&ctl, Some(&"k".repeat(255)), STORY).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(rows(&ctl), 1);
}

#[test]
fn the_config_defaults_and_refuses_unknown_keys() {
    let config: ControllerConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(config.listen, "0.0.0.0:443".parse().unwrap());
    assert_eq!(config.max_body, 16 * 1024);
    assert_eq!(config.header_timeout_ms, 5000);
    assert_eq!(config.handshake_timeout_ms, 5000);
    assert_eq!(config.max_connections, 1024);
    let config: ControllerConfig =
        serde_json::from_str(r#"{"listen":"192.168.1.20:443","max_body":100}"#).unwrap();
    assert_eq!(config.max_body, 100);
    let err = serde_json::from_str::<ControllerConfig>(r#"{"max_bodies":1}"#).unwrap_err();
    assert!(
        err.to_string().contains("unknown field `max_bodies`"),
        "{err}"
    );
}

#[tokio::test]
async fn a_coupon_is_optional_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = controller("vm-ctl", dir.path());
    let with = |c: &str| STORY.replace(r#""price":"68""#, &format!(r#""price":"68","coupon":{c}"#));
    let (status, _, body) = order(&ctl, None, &with(r#""D11-2018_off""#)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["order"]["coupon"], "D11-2018_off");
    let long = format!("\"{}\"", "c".repeat(65));
    for bad in [
        r#""""#,
        r#""half off""#,
        r#""券""#,
        "7",
        "null",
        long.as_str(),
    ] {
        let (status, _, body) = order(&ctl, None, &with(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["field"], "order.coupon", "{bad}: {body}");
    }
    let (status, _, _) = order(&ctl, None, &with(&format!("\"{}\"", "c".repeat(64)))).await;
    assert_eq!(status, StatusCode::CREATED);
    // Without a coupon the stored order is what it always was.
    let (_, _, body) = order(&ctl, None, STORY).await;
    assert!(body["order"].get("coupon").is_none(), "{body}");
    assert_eq!(rows(&ctl), 3);
    assert_eq!(ctl.status().orders, "local");
}

// ---------------------------------------------------------------------------
// The RPC mode: a real registry and a real RPC server on loopback, serving a
// test double of `order.create`.

mod rpc_mode {
    use super::*;
    use crate::rpc::{registry, Call, Client, ClientConfig, Fault, Registry, Server, ServerConfig};
    use crate::rpc::{Services, Status as RpcStatus, Value as Hessian};
    use std::collections::HashMap;

    fn loopback() -> ServerConfig {
        ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..ServerConfig::default()
        }
    }

    /// A registry on loopback; its address.
    async fn start_registry() -> SocketAddr {
        let reg = Registry::new(Duration::from_millis(100));
        tokio::spawn(reg.clone().run_expiry());
        let server = Server::new("registry", loopback(), reg.services());
        let listener = server.bind().await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(server.serve(listener));
        addr
    }

    /// What the double was called with, for the checks.
    type Calls = Arc<Mutex<Vec<Call>>>;

    /// The double of the order service: idempotent by key, `className`
    /// picks a misbehaviour ("sold out", "cancelled", "fault", "slow",
    /// "no commit").
    fn order_double(calls: Calls) -> Services {
        let by_key: Arc<Mutex<HashMap<String, (Value, String)>>> = Arc::default();
        let mut s = Services::new();
        s.method("order", "create", move |c: Call| {
            let (calls, by_key) = (calls.clone(), by_key.clone());
            async move {
                calls.lock().unwrap().push(c.clone());
                let mut order_id = c.str_arg(0)?.to_string();
                let key = c.arg(1)?.as_str().map(str::to_string);
                let order = Value::from(c.arg(2)?.clone());
                let mut replayed = false;
                if let Some(key) = &key {
                    let mut seen = by_key.lock().unwrap();
                    match seen.get(key) {
                        Some((o, id)) if *o == order => (order_id, replayed) = (id.clone(), true),
                        Some(_) => return Ok(Hessian::from(json!({"outcome": "key_reused", "order_id": order_id, "replayed": false, "message": "key reused"}))),
                        None => {
                            seen.insert(key.clone(), (order.clone(), order_id.clone()));
                        }
                    }
                }
                let mut answer = json!({
                    "outcome": "confirmed", "order_id": order_id, "replayed": replayed,
                    "order": order, "created_at": "2018-07-01T00:00:00Z",
                    "path": [
                        {"call": "db.order_create", "provider": "192.168.1.60:20880", "tried": 1, "ms": 1.2, "result": "created"},
                        {"call": "stock.deduct", "provider": "192.168.1.50:20880", "tried": 1, "ms": 3.4, "result": "taken", "cas_attempts": 2},
                    ],
                    "commit": {"seq": 42, "replication": "acked in 0.4 ms"},
                });
                match order["className"].as_str() {
                    Some("sold out") => {
                        answer = json!({"outcome": "sold_out", "order_id": order_id, "replayed": false,
                                        "message": "趣谈网络协议 is sold out",
                                        "path": [{"call": "stock.deduct", "provider": "192.168.1.50:20880",
                                                  "tried": 1, "ms": 0.8, "result": "sold out", "cas_attempts": 1}],
                                        "commit": {"seq": 43, "replication": "sync: acked by the standby in 1 ms"}})
                    }
                    Some("cancelled") => {
                        answer = json!({"outcome": "cancelled", "order_id": order_id, "replayed": false,
                                        "message": "the coupon was refused; order cancelled"})
                    }
                    Some("fault") => return Err(Fault::new(RpcStatus::ServiceError, "stock: db is down")),
                    Some("slow") => tokio::time::sleep(Duration::from_secs(2)).await,
                    Some("no commit") => {
                        answer.as_object_mut().unwrap().remove("commit");
                    }
                    _ => {}
                }
                Ok(Hessian::from(answer))
            }
        });
        s
    }

    /// An `order` provider registered in the registry at `reg`.
    async fn start_order_service(reg: SocketAddr, calls: Calls) {
        let server = Server::new("order", loopback(), order_double(calls));
        let listener = server.bind().await.unwrap();
        let me = listener.local_addr().unwrap().to_string();
        tokio::spawn(server.serve(listener));
        let client = Arc::new(Client::new(reg, ClientConfig::default()));
        tokio::spawn(registry::keep_registered(
            client,
            "order".into(),
            me,
            Duration::from_secs(3),
        ));
    }

    fn rpc_controller(name: &str, dir: &Path, reg: SocketAddr, timeout_ms: u64) -> Arc<Controller> {
        let paths = pki::PkiPaths::new(dir.join("pki"));
        if !paths.server_chain().exists() {
            pki::make(&paths, "t", &["www.geektime.com"]).unwrap();
        }
        let tls = pki::server_config(&paths).unwrap();
        let config = ControllerConfig {
            max_body: 1024,
            body_timeout_ms: 200,
            order_service: Some(OrderServiceConfig {
                registry: reg,
                timeout_ms,
                balance: rpc::Balance::RoundRobin,
                retries: 0,
                actives: 64,
            }),
            ..ControllerConfig::default()
        };
        Controller::new(name, config, tls, &dir.join("orders.sqlite")).unwrap()
    }

    /// A registry, one order provider, a controller that has seen it.
    async fn shop(dir: &Path) -> (Arc<Controller>, Calls) {
        let reg = start_registry().await;
        let calls = Calls::default();
        start_order_service(reg, calls.clone()).await;
        let ctl = rpc_controller("vm-ctl", dir, reg, 1000);
        assert!(ctl.wait_for_order_service(Duration::from_secs(5)).await);
        (ctl, calls)
    }

    fn named(class: &str) -> String {
        STORY.replace("趣谈网络协议", class)
    }

    #[tokio::test]
    async fn a_confirmed_order_is_201_with_the_rpc_path_and_no_local_store() {
        let dir = tempfile::tempdir().unwrap();
        let (ctl, calls) = shop(dir.path()).await;
        let key = "6f1c2a7e-3b1d-4c55-9a43-0d2f7c1e9b10";
        let coupon = STORY.replace(r#""price":"68""#, r#""price":"68","coupon":"D11-off""#);
        let (status, headers, body) = order(&ctl, Some(key), &coupon).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert!(headers.get("idempotent-replayed").is_none());
        assert_eq!(body["status"], "created");
        assert_eq!(body["served_by"], "vm-ctl");
        assert!(body["order_id"].as_str().unwrap().starts_with("ord-"));
        assert_eq!(body["order"]["className"], "趣谈网络协议");
        assert_eq!(body["order"]["coupon"], "D11-off");
        let path = body["rpc"]["path"].as_array().unwrap();
        assert_eq!(path.len(), 2);
        assert_eq!(path[1]["call"], "stock.deduct");
        assert_eq!(path[1]["cas_attempts"], 2);
        assert_eq!(path[0]["ms"], 1.2);
        assert_eq!(body["rpc"]["commit"]["seq"], 42);
        // What went over the wire: order id, key, the validated order, and
        // the attachments.
        let call = calls.lock().unwrap()[0].clone();
        let r = &call.request;
        assert_eq!((r.service.as_str(), r.method.as_str()), ("order", "create"));
        assert_eq!(r.args[0].as_str(), body["order_id"].as_str());
        assert_eq!(r.args[1].as_str(), Some(key));
        assert_eq!(
            Value::from(r.args[2].clone()),
            json!({"date": "2018-07-01", "className": "趣谈网络协议", "Author": "刘超", "price": "68", "coupon": "D11-off"})
        );
        assert_eq!(r.attachments["idempotent"], "true");
        assert_eq!(r.attachments["idempotency_key"], key);
        assert_eq!(r.attachments["served_by"], "vm-ctl");
        assert!(!dir.path().join("orders.sqlite").exists());

        let status = ctl.status();
        assert_eq!(status.orders, "rpc");
        assert_eq!(status.orders_created, 1);
        assert_eq!(status.order_service.unwrap().consumer.calls, 1);
    }

    #[tokio::test]
    async fn a_replay_carries_the_header_and_a_reused_key_is_422() {
        let dir = tempfile::tempdir().unwrap();
        let (ctl, calls) = shop(dir.path()).await;
        let (status, _, first) = order(&ctl, Some("k1"), STORY).await;
        assert_eq!(status, StatusCode::CREATED, "{first}");
        let (status, headers, again) = order(&ctl, Some("k1"), STORY).await;
        assert_eq!(status, StatusCode::CREATED, "{again}");
        assert_eq!(headers["idempotent-replayed"], "true");
        assert_eq!(again["order_id"], first["order_id"]);
        // Each request sent its own fresh order id; the service kept the first.
        {
            let c = calls.lock().unwrap();
            assert_ne!(c[0].request.args[0], c[1].request.args[0]);
        }
        // Without a key the key argument is null and no attachment is sent.
        let (status, _, _) = order(&ctl, None, STORY).await;
        assert_eq!(status, StatusCode::CREATED);
        let c = calls.lock().unwrap()[2].clone();
        assert_eq!(c.request.args[1], Hessian::Null);
        assert!(!c.request.attachments.contains_key("idempotency_key"));

        let other = STORY.replace("\"68\"", "\"69\"");
        let (status, _, body) = order(&ctl, Some("k1"), &other).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(
            body["error"],
            "this Idempotency-Key was used for a different order"
        );
        let s = ctl.status();
        assert_eq!(
            (s.orders_created, s.orders_replayed, s.idempotency_conflicts),
            (2, 1, 1)
        );
    }

    #[tokio::test]
    async fn sold_out_and_cancelled_are_409_with_the_services_message() {
        let dir = tempfile::tempdir().unwrap();
        let (ctl, _) = shop(dir.path()).await;
        let (status, _, body) = order(&ctl, None, &named("sold out")).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"], "趣谈网络协议 is sold out");
        assert_eq!(body["outcome"], "sold_out");
        assert!(body["order_id"].as_str().unwrap().starts_with("ord-"));
        // The calls behind the refusal come along when the service sends them.
        assert_eq!(body["rpc"]["path"][0]["result"], "sold out");
        let (status, _, body) = order(&ctl, None, &named("cancelled")).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["outcome"], "cancelled");
        assert!(body.get("rpc").is_none(), "{body}");
        let s = ctl.status();
        assert_eq!(s.orders_sold_out, 1);
        assert_eq!(s.orders_cancelled, 1);
        assert_eq!(s.orders_created, 0);
        assert_eq!(s.front.requests["409"], 2);
    }

    #[tokio::test]
    async fn faults_and_unusable_answers_are_503_and_timeouts_504() {
        let dir = tempfile::tempdir().unwrap();
        let reg = start_registry().await;
        start_order_service(reg, Calls::default()).await;
        let ctl = rpc_controller("vm-ctl", dir.path(), reg, 300);
        assert!(ctl.wait_for_order_service(Duration::from_secs(5)).await);

        let (status, headers, body) = order(&ctl, None, &named("fault")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["error"], "order service: stock: db is down");
        assert_eq!(headers[header::RETRY_AFTER], "1");

        let (status, _, body) = order(&ctl, None, &named("no commit")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["error"], "order service: the answer has no commit");

        let (status, _, body) = order(&ctl, None, &named("slow")).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .starts_with("order service: "),
            "{body}"
        );

        let s = ctl.status();
        let faults = |k: &str| s.order_service_faults.get(k).copied().unwrap_or(0);
        assert_eq!(faults("service_error"), 1);
        assert_eq!(s.order_service_bad_answers, 1);
        let timeouts = faults("client_timeout") + faults("server_timeout");
        assert_eq!(timeouts, 1, "{s:?}");
    }

    #[tokio::test]
    async fn without_a_provider_the_controller_starts_and_answers_503() {
        let dir = tempfile::tempdir().unwrap();
        let reg = start_registry().await;
        let ctl = rpc_controller("vm-ctl", dir.path(), reg, 300);
        assert!(!ctl.wait_for_order_service(Duration::from_millis(300)).await);
        let (status, _, body) = order(&ctl, None, STORY).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(
            body["error"],
            "order service: no provider of \"order\" is registered"
        );
        // Nor does an unreachable registry stop it: the same answer.
        let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let gone = nobody.local_addr().unwrap();
        drop(nobody);
        let ctl = rpc_controller("vm-ctl", dir.path(), gone, 300);
        let (status, _, body) = order(&ctl, None, STORY).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(ctl.status().order_service_faults["client_error"], 1);
    }

    #[tokio::test]
    async fn a_bad_coupon_is_400_before_any_call() {
        let dir = tempfile::tempdir().unwrap();
        let (ctl, calls) = shop(dir.path()).await;
        let bad = STORY.replace(r#""price":"68""#, r#""price":"68","coupon":"50% off""#);
        let (status, _, body) = order(&ctl, None, &bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["field"], "order.coupon");
        assert!(calls.lock().unwrap().is_empty());
    }

    #[test]
    fn a_controller_of_the_order_service_needs_a_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let paths = pki::PkiPaths::new(dir.path().join("pki"));
        pki::make(&paths, "t", &["www.geektime.com"]).unwrap();
        let config = ControllerConfig {
            order_service: Some(OrderServiceConfig {
                registry: "127.0.0.1:1".parse().unwrap(),
                timeout_ms: 100,
                balance: rpc::Balance::RoundRobin,
                retries: 0,
                actives: 64,
            }),
            ..ControllerConfig::default()
        };
        let tls = pki::server_config(&paths).unwrap();
        let e = Controller::new("vm-ctl", config, tls, &dir.path().join("x"));
        assert!(matches!(e, Err(ControllerError::NoRuntime)));
    }
}

#[test]
fn the_config_takes_an_order_service_table() {
    let config: ControllerConfig =
        serde_json::from_str(r#"{"order_service":{"registry":"192.168.1.30:2181"}}"#).unwrap();
    let s = config.order_service.unwrap();
    assert_eq!(s.registry, "192.168.1.30:2181".parse().unwrap());
    assert_eq!(s.timeout_ms, 5000);
    assert_eq!(s.retries, 2);
    assert_eq!(s.balance, rpc::Balance::RoundRobin);
    let err = serde_json::from_str::<ControllerConfig>(r#"{"order_service":{}}"#).unwrap_err();
    assert!(
        err.to_string().contains("missing field `registry`"),
        "{err}"
    );
    let config: ControllerConfig = serde_json::from_str("{}").unwrap();
    assert!(config.order_service.is_none());
}

#[tokio::test]
async fn plaintext_bytes_go_through_hyper_and_the_router_like_a_client() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = controller("vm-ctl", dir.path());
    let request = format!(
        "POST /purchaseOrder HTTP/1.1\r\nHost: www.geektime.com\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{STORY}",
        STORY.len()
    );
    let reply = String::from_utf8(ctl.serve_plaintext(request.as_bytes()).await).unwrap();
    assert!(reply.starts_with("HTTP/1.1 201 Created\r\n"), "{reply}");
    assert!(reply.contains("\"served_by\":\"vm-ctl\""), "{reply}");
    assert_eq!(rows(&ctl), 1);
    let reply = ctl.serve_plaintext(b"GET /nowhere HTTP/1.1\r\n\r\n").await;
    assert!(
        reply.starts_with(b"HTTP/1.1 404 "),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let reply = ctl.serve_plaintext(b"\x16\x03\x01 not http\r\n\r\n").await;
    assert!(
        reply.starts_with(b"HTTP/1.1 400 "),
        "{}",
        String::from_utf8_lossy(&reply)
    );
}
