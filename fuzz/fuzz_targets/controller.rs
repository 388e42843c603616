//! The controller's request handling (crates/apps/src/controller.rs) on
//! arbitrary bytes: what TLS would have decrypted goes through the same
//! hyper HTTP/1.1 connection, router, handlers and order store as a real
//! client's (`Controller::serve_plaintext`), in the controller-only build
//! (orders in a SQLite file). Never a panic or a hang; whatever comes back is
//! HTTP/1.1 responses, none a 5xx (a bad request is the client's error).
//! The rest of the input is tried as the controller's JSON config.
#![no_main]
#[path = "common/http.rs"]
mod http;

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
    http::check_responses(data, &reply, |code| code == 503);
    let _ = serde_json::from_slice::<ControllerConfig>(data);
});
