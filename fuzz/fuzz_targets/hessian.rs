//! The Hessian 2.0 decoder (crates/apps/src/rpc/hessian.rs) on arbitrary
//! bytes: never a panic or a stack overflow (nesting is bounded), and a
//! value that decodes re-encodes to bytes that decode to the same encoding
//! (the decoder accepts forms the encoder never writes: overlong UTF-8,
//! typed lists, wide ints, so the bytes themselves need not come back).
#![no_main]
use d11_apps::rpc::hessian::{Reader, Value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = Value::from_bytes(data) {
        let bytes = v.to_bytes();
        let again = Value::from_bytes(&bytes).expect("what we encode decodes");
        assert_eq!(again.to_bytes(), bytes, "{v:?}");
        // The JSON views the services and `d11 show` use.
        let json = serde_json::Value::from(v.clone());
        let _ = (v.to_string(), Value::from(json), v.as_str(), v.as_i64(), v.get("order"));
    }
    // A body is a sequence of values: read on until the end or an error.
    let mut r = Reader::new(data);
    while !r.is_empty() {
        if r.value().is_err() {
            break;
        }
    }
    let _ = r.finish();
});
