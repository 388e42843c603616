//! The origin: the shop's object store (chapter 4), sans-IO. A bucket of
//! objects by path, each with its body, `Content-Type`, the `Cache-Control`
//! the shop set on it, a strong `ETag` and a `Last-Modified` date; GET and
//! HEAD (conditional, and with one byte range), PUT.
//!
//! Read RFC 9110 first: § 8.8.2–8.8.3 (Last-Modified, ETag), § 13.1–13.2
//! (If-None-Match before If-Modified-Since; 304 only for GET and HEAD),
//! § 14 (Range: one `bytes=` range → 206 with Content-Range; none
//! satisfiable → 416 with `Content-Range: bytes */LEN`; a set of several
//! ranges may be answered with the whole object, § 14.2), § 9.3.4 (PUT: 201
//! when it created the object, 204 when it replaced one).
//!
//! A path is `/`-separated segments with no empty, `.` or `..` segment and
//! no percent-encoded dot or slash: anything else is 400 before any lookup,
//! so no request reaches outside the bucket.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use std::collections::BTreeMap;
use std::time::SystemTime;

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub body: Bytes,
    pub content_type: String,
    /// As the shop set it, sent with every answer (RFC 9111 § 5.2.2).
    pub cache_control: Option<String>,
    /// The request fields its answer varies on, as the shop set them (`Vary`,
    /// RFC 9110 § 12.5.5), sent with every answer: a cache keeps one
    /// response per combination of their values.
    pub vary: Option<String>,
    /// Strong, quoted: a hash of the body.
    pub etag: String,
    /// Second precision, as HTTP-date carries it.
    pub modified: SystemTime,
}

impl Object {
    pub fn new(
        body: Bytes,
        content_type: &str,
        cache_control: Option<&str>,
        now: SystemTime,
    ) -> Object {
        Object {
            etag: etag_of(&body),
            body,
            content_type: content_type.to_string(),
            cache_control: cache_control.map(str::to_string),
            vary: None,
            modified: whole_seconds(now),
        }
    }

    /// The object with `Vary: vary`.
    pub fn varying(mut self, vary: Option<&str>) -> Object {
        self.vary = vary.map(str::to_string);
        self
    }
}

/// A strong entity tag: FNV-1a 64 of the body, quoted (RFC 9110 § 8.8.3).
pub fn etag_of(body: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in body {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("\"{h:016x}-{:x}\"", body.len())
}

fn whole_seconds(t: SystemTime) -> SystemTime {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs)
}

/// An answer: status, headers, body (empty for HEAD and 304).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    fn new(status: StatusCode) -> Answer {
        Answer {
            status,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    fn text(status: StatusCode, why: &str) -> Answer {
        let mut a = Answer::new(status);
        a.set(header::CONTENT_TYPE, "text/plain; charset=utf-8");
        a.body = Bytes::from(format!("{why}\n"));
        a
    }

    fn set(&mut self, name: header::HeaderName, value: &str) {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.insert(name, v);
        }
    }
}

/// What the origin counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OriginStats {
    pub requests: u64,
    /// Whole objects and ranges sent (200, 206).
    pub served: u64,
    pub not_modified: u64,
    pub not_found: u64,
    pub range_not_satisfiable: u64,
    pub puts: u64,
    /// Refused before any lookup: a bad path, a method not allowed.
    pub refused: u64,
}

/// The bucket.
#[derive(Debug, Default)]
pub struct Bucket {
    objects: BTreeMap<String, Object>,
    pub stats: OriginStats,
}

impl Bucket {
    pub fn new() -> Bucket {
        Bucket::default()
    }

    /// Puts `obj` at `path` (checked as a request's would be).
    pub fn put(&mut self, path: &str, obj: Object) -> Result<bool, &'static str> {
        check_path(path)?;
        Ok(self.objects.insert(path.to_string(), obj).is_none())
    }

    pub fn get(&self, path: &str) -> Option<&Object> {
        self.objects.get(path)
    }

    pub fn objects(&self) -> impl Iterator<Item = (&String, &Object)> {
        self.objects.iter()
    }

    /// Answers one request for `path` (the request target's path, without
    /// the query) with `headers` and `body`, at `now`.
    pub fn answer(
        &mut self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
        now: SystemTime,
    ) -> Answer {
        self.stats.requests += 1;
        if let Err(why) = check_path(path) {
            self.stats.refused += 1;
            return Answer::text(StatusCode::BAD_REQUEST, why);
        }
        let mut a = match *method {
            Method::GET | Method::HEAD => self.read(path, headers),
            Method::PUT => self.write(path, headers, body, now),
            _ => {
                self.stats.refused += 1;
                let mut a = Answer::text(StatusCode::METHOD_NOT_ALLOWED, "GET, HEAD or PUT");
                a.set(header::ALLOW, "GET, HEAD, PUT");
                a
            }
        };
        if *method == Method::HEAD {
            a.body = Bytes::new();
        }
        a
    }

    fn read(&mut self, path: &str, headers: &HeaderMap) -> Answer {
        let Some(obj) = self.objects.get(path) else {
            self.stats.not_found += 1;
            return Answer::text(StatusCode::NOT_FOUND, "no such object");
        };
        let mut a = Answer::new(StatusCode::OK);
        a.set(header::ETAG, &obj.etag);
        a.set(
            header::LAST_MODIFIED,
            &httpdate::fmt_http_date(obj.modified),
        );
        if let Some(cc) = &obj.cache_control {
            a.set(header::CACHE_CONTROL, cc);
        }
        if let Some(vary) = &obj.vary {
            a.set(header::VARY, vary);
        }
        if not_modified(obj, headers) {
            self.stats.not_modified += 1;
            a.status = StatusCode::NOT_MODIFIED;
            return a;
        }
        a.set(header::CONTENT_TYPE, &obj.content_type);
        a.set(header::ACCEPT_RANGES, "bytes");
        match ranged(headers, &obj.etag, &obj.body) {
            Ranged::Whole => a.body = obj.body.clone(),
            Ranged::Part(content_range, part) => {
                a.status = StatusCode::PARTIAL_CONTENT;
                a.set(header::CONTENT_RANGE, &content_range);
                a.body = part;
            }
            Ranged::Unsatisfiable(content_range) => {
                self.stats.range_not_satisfiable += 1;
                let mut a = Answer::text(StatusCode::RANGE_NOT_SATISFIABLE, RANGE_OUTSIDE);
                a.set(header::CONTENT_RANGE, &content_range);
                return a;
            }
        }
        self.stats.served += 1;
        a
    }

    fn write(&mut self, path: &str, headers: &HeaderMap, body: Bytes, now: SystemTime) -> Answer {
        let text = |n: header::HeaderName| headers.get(n).and_then(|v| v.to_str().ok());
        let obj = Object::new(
            body,
            text(header::CONTENT_TYPE).unwrap_or("application/octet-stream"),
            text(header::CACHE_CONTROL),
            now,
        )
        .varying(text(header::VARY));
        let etag = obj.etag.clone();
        let created = self.objects.insert(path.to_string(), obj).is_none();
        self.stats.puts += 1;
        let mut a = Answer::new(match created {
            true => StatusCode::CREATED,
            false => StatusCode::NO_CONTENT,
        });
        a.set(header::ETAG, &etag);
        a
    }
}

/// Whether a conditional GET/HEAD of `obj` gets 304.
fn not_modified(obj: &Object, headers: &HeaderMap) -> bool {
    not_modified_by(headers, &obj.etag, Some(obj.modified))
}

/// Whether a conditional GET/HEAD of a representation with `etag` and
/// `modified` gets 304: If-None-Match when present (weak comparison, RFC
/// 9110 § 13.1.2), else If-Modified-Since (§ 13.1.3). A cache answering
/// from its store asks the same (RFC 9111 § 4.3.2).
pub fn not_modified_by(headers: &HeaderMap, etag: &str, modified: Option<SystemTime>) -> bool {
    if let Some(inm) = headers.get(header::IF_NONE_MATCH) {
        let Ok(inm) = inm.to_str() else {
            return false;
        };
        let bare = |t: &str| t.trim().trim_start_matches("W/").to_string();
        let ours = bare(etag);
        return inm
            .split(',')
            .any(|t| t.trim() == "*" || (!ours.is_empty() && bare(t) == ours));
    }
    let since = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    matches!((since, modified), (Some(s), Some(m)) if m <= s)
}

enum Range {
    Whole,
    Part(u64, u64),
    Unsatisfiable,
}

/// How a GET of `body` (whose entity tag is `etag`) with `headers` is
/// answered per RFC 9110 § 14: the origin's and a cache's answer from its
/// stored whole object are the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ranged {
    /// 200 with the whole body.
    Whole,
    /// 206: the `Content-Range` value and the part.
    Part(String, Bytes),
    /// 416: the `Content-Range` value (`bytes */LEN`).
    Unsatisfiable(String),
}

/// The body of a 416.
pub const RANGE_OUTSIDE: &str = "range outside";

/// The answer to `headers`' `Range` (and `If-Range`) over `body`.
pub fn ranged(headers: &HeaderMap, etag: &str, body: &Bytes) -> Ranged {
    let len = body.len() as u64;
    match range(headers, etag, len) {
        Range::Whole => Ranged::Whole,
        Range::Part(first, last) => Ranged::Part(
            format!("bytes {first}-{last}/{len}"),
            body.slice(first as usize..=last as usize),
        ),
        Range::Unsatisfiable => Ranged::Unsatisfiable(format!("bytes */{len}")),
    }
}

/// The one range asked for (RFC 9110 § 14.1.2), or the whole object: no
/// Range, a unit other than bytes, several ranges, something unreadable, or
/// an If-Range that no longer matches (§ 13.1.5) — each allowed to be
/// answered whole.
fn range(headers: &HeaderMap, etag: &str, len: u64) -> Range {
    let Some(spec) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Range::Whole;
    };
    if let Some(ir) = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        if ir.trim() != etag {
            return Range::Whole;
        }
    }
    let Some(set) = spec.trim().strip_prefix("bytes=") else {
        return Range::Whole;
    };
    if set.contains(',') {
        return Range::Whole;
    }
    let Some((a, b)) = set.trim().split_once('-') else {
        return Range::Whole;
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (a.trim().is_empty(), num(a), num(b)) {
        // bytes=-N: the last N bytes.
        (true, _, Some(n)) if n > 0 && len > 0 => Range::Part(len.saturating_sub(n), len - 1),
        (true, _, Some(_)) => Range::Unsatisfiable,
        (false, Some(first), _) if first >= len => Range::Unsatisfiable,
        (false, Some(first), None) if b.trim().is_empty() => Range::Part(first, len - 1),
        (false, Some(first), Some(last)) if last >= first => Range::Part(first, last.min(len - 1)),
        _ => Range::Whole,
    }
}

/// A request path the bucket accepts (see the module's note).
pub fn check_path(path: &str) -> Result<(), &'static str> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err("the path must start with /");
    };
    if path.len() > 1024 {
        return Err("the path is longer than 1024 octets");
    }
    let lower = rest.to_ascii_lowercase();
    if lower.contains("%2e")
        || lower.contains("%2f")
        || lower.contains("%5c")
        || rest.contains('\\')
    {
        return Err("an encoded dot, slash or backslash in the path");
    }
    for seg in rest.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err("an empty, . or .. segment in the path");
        }
        if !seg
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-._~%".contains(&c))
        {
            return Err("a character outside [A-Za-z0-9-._~%] in the path");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn bucket() -> Bucket {
        let mut b = Bucket::new();
        let cover = Object::new(
            Bytes::from_static(b"0123456789"),
            "image/jpeg",
            Some("max-age=60"),
            at(1_700_000_000),
        );
        b.put("/images/cover.jpg", cover).unwrap();
        b
    }

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    fn get(b: &mut Bucket, path: &str, headers: &[(&str, &str)]) -> Answer {
        b.answer(
            &Method::GET,
            path,
            &h(headers),
            Bytes::new(),
            at(1_700_000_100),
        )
    }

    #[test]
    fn a_get_carries_the_validators_and_the_shops_cache_control() {
        let mut b = bucket();
        let a = get(&mut b, "/images/cover.jpg", &[]);
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(&a.body[..], b"0123456789");
        assert_eq!(a.headers["cache-control"], "max-age=60");
        assert_eq!(a.headers["last-modified"], "Tue, 14 Nov 2023 22:13:20 GMT");
        assert_eq!(a.headers["etag"], etag_of(b"0123456789").as_str());
        assert_eq!(a.headers["content-type"], "image/jpeg");
        let head = b.answer(
            &Method::HEAD,
            "/images/cover.jpg",
            &HeaderMap::new(),
            Bytes::new(),
            at(0),
        );
        assert_eq!((head.status, head.body.len()), (StatusCode::OK, 0));
        assert_eq!(head.headers["etag"], a.headers["etag"]);
        assert_eq!(get(&mut b, "/images/none.jpg", &[]).status, 404);
    }

    #[test]
    fn validators_give_304_if_none_match_first() {
        let mut b = bucket();
        let etag = etag_of(b"0123456789");
        let lm = "Tue, 14 Nov 2023 22:13:20 GMT";
        let cases: [(&[(&str, &str)], u16); 7] = [
            (&[("if-none-match", &etag)], 304),
            (&[("if-none-match", &format!("W/{etag}"))], 304),
            (&[("if-none-match", "\"other\", *")], 304),
            (&[("if-none-match", "\"other\"")], 200),
            (&[("if-modified-since", lm)], 304),
            // Before the object changed; an unreadable date is ignored.
            (
                &[("if-modified-since", "Tue, 14 Nov 2023 22:13:19 GMT")],
                200,
            ),
            (
                &[("if-none-match", "\"other\""), ("if-modified-since", lm)],
                200,
            ),
        ];
        for (hs, want) in cases {
            let a = get(&mut b, "/images/cover.jpg", hs);
            assert_eq!(a.status.as_u16(), want, "{hs:?}");
            if want == 304 {
                assert!(a.body.is_empty());
                assert_eq!(a.headers["etag"], etag.as_str());
            }
        }
        let a = get(
            &mut b,
            "/images/cover.jpg",
            &[("if-modified-since", "yesterday")],
        );
        assert_eq!(a.status, 200);
    }

    #[test]
    fn one_byte_range_is_206_and_none_satisfiable_is_416() {
        let mut b = bucket();
        let cases: [(&str, u16, &[u8], Option<&str>); 9] = [
            ("bytes=0-3", 206, b"0123", Some("bytes 0-3/10")),
            ("bytes=7-", 206, b"789", Some("bytes 7-9/10")),
            ("bytes=-2", 206, b"89", Some("bytes 8-9/10")),
            ("bytes=5-100", 206, b"56789", Some("bytes 5-9/10")),
            ("bytes=10-", 416, b"range outside\n", Some("bytes */10")),
            ("bytes=-0", 416, b"range outside\n", Some("bytes */10")),
            ("bytes=0-1,4-5", 200, b"0123456789", None),
            ("bytes=3-1", 200, b"0123456789", None),
            ("items=0-1", 200, b"0123456789", None),
        ];
        for (r, status, body, cr) in cases {
            let a = get(&mut b, "/images/cover.jpg", &[("range", r)]);
            assert_eq!(a.status.as_u16(), status, "{r}");
            assert_eq!(&a.body[..], body, "{r}");
            assert_eq!(
                a.headers.get("content-range").map(|v| v.to_str().unwrap()),
                cr,
                "{r}"
            );
        }
        let stale = get(
            &mut b,
            "/images/cover.jpg",
            &[("range", "bytes=0-3"), ("if-range", "\"old\"")],
        );
        assert_eq!(stale.status, 200);
        assert_eq!(b.stats.range_not_satisfiable, 2);
    }

    #[test]
    fn put_creates_then_replaces_with_new_validators() {
        let mut b = bucket();
        let put = |b: &mut Bucket, body: &'static [u8], secs| {
            b.answer(
                &Method::PUT,
                "/images/sale.png",
                &h(&[
                    ("content-type", "image/png"),
                    ("cache-control", "s-maxage=30"),
                    ("vary", "Accept-Encoding"),
                ]),
                Bytes::from_static(body),
                at(secs),
            )
        };
        assert_eq!(
            put(&mut b, b"v1", 1_700_000_200).status,
            StatusCode::CREATED
        );
        let a = put(&mut b, b"v2", 1_700_000_300);
        assert_eq!(a.status, StatusCode::NO_CONTENT);
        assert_eq!(a.headers["etag"], etag_of(b"v2").as_str());
        let a = get(&mut b, "/images/sale.png", &[]);
        assert_eq!(&a.body[..], b"v2");
        assert_eq!(a.headers["cache-control"], "s-maxage=30");
        assert_eq!(a.headers["vary"], "Accept-Encoding");
        assert_eq!(a.headers["last-modified"], "Tue, 14 Nov 2023 22:18:20 GMT");
    }

    #[test]
    fn paths_outside_the_bucket_and_other_methods_are_refused_before_any_lookup() {
        let mut b = bucket();
        for p in [
            "/../etc/passwd",
            "/images/../../x",
            "/images/%2e%2e/x",
            "/images/%2E%2e/x",
            "/images//cover.jpg",
            "/images/./cover.jpg",
            "images/cover.jpg",
            "/images/a%2fb",
            "/images/a\\b",
            "/images/cover.jpg?x",
            "",
        ] {
            assert_eq!(get(&mut b, p, &[]).status, 400, "{p:?}");
        }
        assert_eq!(
            get(&mut b, &format!("/{}", "a".repeat(1100)), &[]).status,
            400
        );
        let a = b.answer(
            &Method::DELETE,
            "/images/cover.jpg",
            &HeaderMap::new(),
            Bytes::new(),
            at(0),
        );
        assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(a.headers["allow"], "GET, HEAD, PUT");
        assert!(b.get("/images/cover.jpg").is_some());
        assert_eq!(b.stats.refused, 13);
    }
}
