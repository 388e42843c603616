//! Shared by the HTTP fuzz targets: reads what a server wrote back to
//! arbitrary bytes as HTTP/1.1 responses one after the other, each with its
//! Content-Length (hyper may also close without one: nothing parsed, or
//! the client gone); panics on anything else or on a 5xx that `allowed`
//! does not accept.
//!
//! Where `request` holds a HEAD, a response may also carry its
//! Content-Length and no body (RFC 9110 § 9.3.2), so each response is read
//! both ways and one way must read the whole reply.
pub fn check_responses(request: &[u8], reply: &[u8], allowed: impl Fn(u16) -> bool) {
    let head_asked = request.windows(5).any(|w| w == b"HEAD ");
    // Offsets from which the rest was found not to read: each is tried once.
    let mut failed = std::collections::HashSet::new();
    if let Err(why) = read_from(reply, 0, head_asked, &allowed, &mut failed) {
        panic!("{why}");
    }
}

fn read_from(
    reply: &[u8],
    at: usize,
    head_asked: bool,
    allowed: &impl Fn(u16) -> bool,
    failed: &mut std::collections::HashSet<usize>,
) -> Result<(), String> {
    let rest = &reply[at..];
    if rest.is_empty() {
        return Ok(());
    }
    if failed.contains(&at) {
        return Err(format!("not HTTP responses from {at}"));
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(head)) = resp.parse(rest) else {
        failed.insert(at);
        return Err(format!("not an HTTP response: {:?}", String::from_utf8_lossy(rest)));
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
    let mut tried = Err("the body is as long as its Content-Length".to_string());
    if at + head + len <= reply.len() {
        tried = read_from(reply, at + head + len, head_asked, allowed, failed);
    }
    if tried.is_err() && head_asked && len > 0 {
        tried = read_from(reply, at + head, head_asked, allowed, failed);
    }
    if tried.is_err() {
        failed.insert(at);
    }
    tried
}
