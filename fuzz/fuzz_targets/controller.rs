//! The controller's request handling (crates/apps/src/controller.rs) on
//! arbitrary bytes: what TLS would have decrypted goes through the same
//! hyper HTTP/1.1 connection, router, handlers and order store as a real
//! client's (`Controller::serve_plaintext`), in the controller-only build
//! (orders in a SQLite file). Never a panic or a hang; whatever comes back is
//! HTTP/1.1 responses, none a 5xx (a bad request is the client's error).
//! The rest of the input is tried as the controller's JSON config.
#![no_main]
use d11_apps::controller::{Controller, ControllerConfig};
use d11_apps::pki;
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap())
}

/// One controller for the whole run, its PKI and store in a directory of
/// its own (orders pile up there as the fuzzer finds valid ones).
fn controller() -> &'static Arc<Controller> {
    static CTL: OnceLock<Arc<Controller>> = OnceLock::new();
    CTL.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("d11-fuzz-controller-{}", std::process::id()));
        let paths = pki::PkiPaths::new(dir.join("pki"));
        pki::make(&paths, "fuzz", &["www.geektime.com"]).expect("the lab PKI");
        let tls = pki::server_config(&paths).expect("the server's TLS config");
        let config = ControllerConfig { max_body: 4096, body_timeout_ms: 200, ..ControllerConfig::default() };
        Controller::new("vm-ctl", config, tls, &dir.join("orders.sqlite")).expect("a controller")
    })
}

fuzz_target!(|data: &[u8]| {
    let ctl = controller();
    let reply = runtime().block_on(ctl.serve_plaintext(data));
    // Responses one after the other, each with its Content-Length; hyper
    // may also close without one (nothing parsed, or the client gone).
    let mut rest = &reply[..];
    while !rest.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(head)) = resp.parse(rest) else {
            panic!("not an HTTP response: {:?}", String::from_utf8_lossy(rest));
        };
        let code = resp.code.unwrap_or(0);
        assert!(!(500..600).contains(&code) || code == 503, "answered {code}: {:?}", String::from_utf8_lossy(&reply));
        let len: usize = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
            .unwrap_or(0);
        rest = rest.get(head + len..).expect("the body is as long as its Content-Length");
    }
    let _ = serde_json::from_slice::<ControllerConfig>(data);
});
