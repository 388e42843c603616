//! Handler tests through the router, without TLS or sockets.

use super::*;
use crate::pki;

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
    ctl.store.count().unwrap()
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
    assert_eq!(status["orders_created"], 1);
    assert_eq!(status["requests"]["201"], 1);
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
    let requests = &ctl.status()["requests"];
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
    assert_eq!(ctl2.status()["orders_replayed"], 1);

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
