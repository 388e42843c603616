//! Shared by the HTTP fuzz targets: reads what a server wrote back to
//! arbitrary bytes as HTTP/1.1 responses one after the other, each with its
//! Content-Length (hyper may also close without one: nothing parsed, or
//! the client gone); panics on anything else or on a 5xx that `allowed`
//! does not accept.
pub fn check_responses(reply: &[u8], allowed: impl Fn(u16) -> bool) {
    let mut rest = reply;
    while !rest.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(head)) = resp.parse(rest) else {
            panic!("not an HTTP response: {:?}", String::from_utf8_lossy(rest));
        };
        let code = resp.code.unwrap_or(0);
        assert!(
            !(500..600).contains(&code) || allowed(code),
            "answered {code}: {:?}",
            String::from_utf8_lossy(reply)
        );
        let len: usize = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
            .unwrap_or(0);
        rest = rest.get(head + len..).expect("the body is as long as its Content-Length");
    }
}
