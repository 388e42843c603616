//! A CDN cache's store (chapter 4), sans-IO: what an edge or the parent
//! keeps, and what it does with a request, on the clock it is given.
//!
//! Read RFC 9111 first: § 3 (what may be stored: `no-store`, `private` in a
//! shared cache), § 4 (constructing a response from the store: the key,
//! Vary § 4.1, freshness § 4.2 with s-maxage, max-age, Expires and the
//! heuristic, `Age` § 4.2.3, validation § 4.3: a 304 updates the stored
//! headers § 4.3.4), § 5.1 (Age). The policy itself is
//! `http-cache-semantics` (3.x), the field's implementation of those rules
//! for a shared cache; this store adds the key, the bytes and the bounds.
//!
//! The primary key is the target URI (§ 2: GET only; a HEAD is answered
//! from a stored GET, never stored). A response with `Vary` is stored per
//! combination of the named request fields' values (§ 4.1, as nginx's
//! `proxy_cache` keeps a variant per value): a request selects the variant
//! whose fields match its own, a miss when none does, and what it brings
//! back is stored beside the others (in place of the one it selected, if
//! it revalidated it). `Vary: *` never matches. The store is bounded in bytes and evicts the
//! least recently used; an object larger than an eighth of the bound is
//! passed through, not stored.

use bytes::Bytes;
use http::{request, response, Method};
use http_cache_semantics::{AfterResponse, BeforeRequest, CacheOptions, CachePolicy};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

/// What the cache does with a request.
#[derive(Debug)]
pub enum Lookup {
    /// Fresh: answer with these headers (`Age` set) and body.
    Hit(response::Parts, Bytes),
    /// Stored but stale: send this request upstream (validators added);
    /// its answer goes to [`Store::revalidated`].
    Revalidate(request::Parts),
    /// Nothing usable: fetch; the answer goes to [`Store::fetched`].
    Miss,
}

/// How a request was served, for `X-Cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Miss,
    /// Stale, and a 304 from upstream made it fresh again.
    Revalidated,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Hit => "HIT",
            Outcome::Miss => "MISS",
            Outcome::Revalidated => "REVALIDATED",
        }
    }
}

struct Entry {
    policy: CachePolicy,
    head: response::Parts,
    body: Bytes,
    /// The request's values of the fields the response varies on, for
    /// the rows (`accept-encoding=gzip`); empty without `Vary`.
    variant: String,
    /// The LRU tick of its last use: also names the variant in `lru`.
    used: u64,
    hits: u64,
}

/// What the store counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreStats {
    pub hits: u64,
    pub misses: u64,
    pub revalidated: u64,
    /// Revalidations answered with a new body (200).
    pub refreshed: u64,
    pub stored: u64,
    /// Answers not stored: `no-store`, `private`, an error status, too big.
    pub not_stored: u64,
    pub evicted: u64,
    pub purged: u64,
}

/// One stored response, as `d11 show EDGE cache` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CacheRow {
    pub key: String,
    /// Which variant of the key (`accept-encoding=gzip`) when the response
    /// carries `Vary`; empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
    pub bytes: usize,
    /// Seconds of freshness left (0 when stale).
    pub fresh_s: u64,
    /// Its `Age` now, seconds.
    pub age_s: u64,
    pub hits: u64,
}

/// The store.
pub struct Store {
    /// The responses stored per key: one, or one per variant (§ 4.1).
    entries: HashMap<String, Vec<Entry>>,
    /// Keys by the tick of their variant's last use: the least recent first.
    lru: BTreeMap<u64, String>,
    tick: u64,
    bytes: usize,
    max_bytes: usize,
    pub stats: StoreStats,
}

/// The store's key: the target URI as the cache's client asked for it.
pub fn key(req: &request::Parts) -> String {
    let host = (req.headers.get(http::header::HOST))
        .and_then(|h| h.to_str().ok())
        .or(req.uri.host())
        .unwrap_or("");
    let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
    format!("{}{path}", host.to_ascii_lowercase())
}

/// Which stored variant `req` selects: its index, and whether it is fresh
/// for it (its headers then) or must be revalidated (the request to send).
fn select(
    variants: &[Entry],
    req: &request::Parts,
    now: SystemTime,
) -> Option<(usize, BeforeRequest)> {
    variants
        .iter()
        .enumerate()
        .find_map(|(i, e)| match e.policy.before_request(req, now) {
            BeforeRequest::Stale { matches: false, .. } => None,
            b => Some((i, b)),
        })
}

/// `name=value` of each request field `head`'s `Vary` names; `None` for
/// `Vary: *`, which no request matches (§ 4.1), so it is not stored (as
/// nginx does not).
fn variant_of(req: &request::Parts, head: &response::Parts) -> Option<String> {
    let names: Vec<String> = (head.headers.get_all(http::header::VARY).iter())
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    if names.iter().any(|n| n == "*") {
        return None;
    }
    let pairs: Vec<String> = (names.iter())
        .map(|n| {
            let v = (req.headers.get(n.as_str()))
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            format!("{n}={v}")
        })
        .collect();
    Some(pairs.join(" "))
}

impl Store {
    /// A store holding at most `max_bytes` of bodies.
    pub fn new(max_bytes: usize) -> Store {
        Store {
            entries: HashMap::new(),
            lru: BTreeMap::new(),
            tick: 0,
            bytes: 0,
            max_bytes,
            stats: StoreStats::default(),
        }
    }

    /// Responses stored (each variant counts).
    pub fn len(&self) -> usize {
        self.entries.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of bodies held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Marks the variant `i` of `k` as the most recently used.
    fn touch(&mut self, k: &str, i: usize) {
        self.tick += 1;
        if let Some(e) = self.entries.get_mut(k).and_then(|v| v.get_mut(i)) {
            self.lru.remove(&e.used);
            e.used = self.tick;
            self.lru.insert(self.tick, k.to_string());
        }
    }

    /// What to do with `req` at `now`.
    pub fn lookup(&mut self, req: &request::Parts, now: SystemTime) -> Lookup {
        let k = key(req);
        // A HEAD is answered from the stored GET (RFC 9110 § 9.3.2), which
        // the policy checks as the GET it stored.
        let as_get;
        let asked = match req.method {
            Method::HEAD => {
                as_get = {
                    let mut p = req.clone();
                    p.method = Method::GET;
                    p
                };
                &as_get
            }
            _ => req,
        };
        let found = match self.entries.get_mut(&k) {
            Some(variants) if cacheable_method(&req.method) => match select(variants, asked, now) {
                Some((i, BeforeRequest::Fresh(head))) => {
                    let e = &mut variants[i];
                    e.hits += 1;
                    Some((i, Lookup::Hit(head, e.body.clone())))
                }
                Some((i, BeforeRequest::Stale { request, .. })) => {
                    Some((i, Lookup::Revalidate(request)))
                }
                None => None,
            },
            _ => None,
        };
        match found {
            Some((i, l)) => {
                if matches!(l, Lookup::Hit(..)) {
                    self.stats.hits += 1;
                }
                self.touch(&k, i);
                l
            }
            None => {
                self.stats.misses += 1;
                Lookup::Miss
            }
        }
    }

    /// Upstream's answer to a miss: stored if RFC 9111 § 3 allows it (and
    /// it fits), in place of the variant the request selected, if any.
    /// Returns the headers to send on.
    pub fn fetched(
        &mut self,
        req: &request::Parts,
        head: response::Parts,
        body: Bytes,
        now: SystemTime,
    ) -> response::Parts {
        let policy = CachePolicy::new_options(req, &head, now, options());
        let variant = variant_of(req, &head);
        let Some(variant) = variant
            .filter(|_| req.method == Method::GET && policy.is_storable() && self.fits(body.len()))
        else {
            self.stats.not_stored += 1;
            return head;
        };
        let out = head.clone();
        let k = key(req);
        if let Some(i) = (self.entries.get(&k))
            .and_then(|v| select(v, req, now))
            .map(|(i, _)| i)
        {
            self.remove_variant(&k, i);
        }
        self.insert(k, policy, head, body, variant);
        out
    }

    /// Upstream's answer to a revalidation: a 304 refreshes the stored
    /// headers and the stored body is sent (§ 4.3.4); anything else
    /// replaces what was stored as a fetch would. Returns how it was
    /// served, the headers and the body to send.
    pub fn revalidated(
        &mut self,
        req: &request::Parts,
        head: response::Parts,
        body: Bytes,
        now: SystemTime,
    ) -> (Outcome, response::Parts, Bytes) {
        let k = key(req);
        let found = (self.entries.get(&k))
            .and_then(|v| select(v, req, now))
            .map(|(i, _)| i);
        let Some(e) = found.and_then(|i| self.entries.get(&k)?.get(i)) else {
            let head = self.fetched(req, head, body.clone(), now);
            return (Outcome::Miss, head, body);
        };
        let i = found.unwrap_or(0);
        match e.policy.after_response(req, &head, now) {
            AfterResponse::NotModified(policy, fresh) => {
                self.stats.revalidated += 1;
                let stored = e.body.clone();
                let out = fresh.clone();
                if let Some(e) = self.entries.get_mut(&k).and_then(|v| v.get_mut(i)) {
                    e.policy = policy;
                    e.head = fresh;
                }
                self.touch(&k, i);
                (Outcome::Revalidated, out, stored)
            }
            AfterResponse::Modified(..) => {
                self.stats.refreshed += 1;
                self.remove_variant(&k, i);
                let head = self.fetched(req, head, body.clone(), now);
                (Outcome::Miss, head, body)
            }
        }
    }

    /// Forgets the object at `key`, every variant; whether there was one.
    pub fn purge(&mut self, key: &str) -> bool {
        let had = self.remove(key);
        self.stats.purged += u64::from(had);
        had
    }

    /// Every stored response, the most recently used first.
    pub fn rows(&self, now: SystemTime) -> Vec<CacheRow> {
        (self.lru.iter().rev())
            .filter_map(|(tick, k)| {
                let e = self.entries.get(k)?.iter().find(|e| e.used == *tick)?;
                Some(CacheRow {
                    key: k.clone(),
                    variant: e.variant.clone(),
                    bytes: e.body.len(),
                    fresh_s: e.policy.time_to_live(now).as_secs(),
                    age_s: e.policy.age(now).as_secs(),
                    hits: e.hits,
                })
            })
            .collect()
    }

    fn fits(&self, len: usize) -> bool {
        len <= self.max_bytes / 8
    }

    fn insert(
        &mut self,
        k: String,
        policy: CachePolicy,
        head: response::Parts,
        body: Bytes,
        variant: String,
    ) {
        while self.bytes + body.len() > self.max_bytes {
            let Some((tick, old)) = self.lru.pop_first() else {
                break;
            };
            let Some(variants) = self.entries.get_mut(&old) else {
                continue;
            };
            if let Some(i) = variants.iter().position(|e| e.used == tick) {
                let e = variants.remove(i);
                self.bytes -= e.body.len();
                self.stats.evicted += 1;
            }
            if variants.is_empty() {
                self.entries.remove(&old);
            }
        }
        self.tick += 1;
        self.bytes += body.len();
        self.stats.stored += 1;
        self.lru.insert(self.tick, k.clone());
        let e = Entry {
            policy,
            head,
            body,
            variant,
            used: self.tick,
            hits: 0,
        };
        self.entries.entry(k).or_default().push(e);
    }

    /// Removes the variant `i` of `k`.
    fn remove_variant(&mut self, k: &str, i: usize) {
        let Some(variants) = self.entries.get_mut(k) else {
            return;
        };
        if i < variants.len() {
            let e = variants.remove(i);
            self.lru.remove(&e.used);
            self.bytes -= e.body.len();
        }
        if variants.is_empty() {
            self.entries.remove(k);
        }
    }

    /// Removes every variant of `k`; whether there was one.
    fn remove(&mut self, k: &str) -> bool {
        match self.entries.remove(k) {
            Some(variants) => {
                for e in variants {
                    self.lru.remove(&e.used);
                    self.bytes -= e.body.len();
                }
                true
            }
            None => false,
        }
    }
}

fn cacheable_method(m: &Method) -> bool {
    *m == Method::GET || *m == Method::HEAD
}

/// A shared cache (RFC 9111 § 1: `private` is not stored, `s-maxage`
/// counts); the heuristic freshness of § 4.2.2 at the usual tenth.
fn options() -> CacheOptions {
    CacheOptions {
        shared: true,
        cache_heuristic: 0.1,
        immutable_min_time_to_live: Duration::from_secs(24 * 3600),
        ignore_cargo_cult: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response};

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn req(path: &str, headers: &[(&str, &str)]) -> request::Parts {
        let mut b = Request::get(path).header("host", "static.geektime.com");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn res(status: u16, headers: &[(&str, &str)], now: SystemTime) -> response::Parts {
        let mut b = Response::builder()
            .status(status)
            .header("date", httpdate::fmt_http_date(now));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    const COVER: &str = "/images/cover.jpg";

    fn body() -> Bytes {
        Bytes::from_static(b"JFIF...")
    }

    /// A store holding the cover, fetched at `at(0)` with `headers`.
    fn with_cover(headers: &[(&str, &str)]) -> Store {
        let mut s = Store::new(1 << 20);
        assert!(matches!(s.lookup(&req(COVER, &[]), at(0)), Lookup::Miss));
        s.fetched(&req(COVER, &[]), res(200, headers, at(0)), body(), at(0));
        s
    }

    #[test]
    fn the_second_get_is_a_hit_with_its_age_until_max_age_runs_out() {
        let mut s = with_cover(&[("cache-control", "max-age=60"), ("etag", "\"v1\"")]);
        assert_eq!(s.stats.stored, 1);
        let Lookup::Hit(head, b) = s.lookup(&req(COVER, &[]), at(25)) else {
            panic!("a hit");
        };
        assert_eq!(head.headers["age"], "25");
        assert_eq!(b, body());
        // A HEAD is answered from the stored GET.
        let head_req = Request::head(COVER)
            .header("host", "static.geektime.com")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        assert!(matches!(s.lookup(&head_req, at(26)), Lookup::Hit(..)));
        let Lookup::Revalidate(up) = s.lookup(&req(COVER, &[]), at(61)) else {
            panic!("stale after 60 s");
        };
        assert_eq!(up.headers["if-none-match"], "\"v1\"");
        assert_eq!(s.rows(at(30))[0].fresh_s, 30);
        assert_eq!((s.stats.hits, s.stats.misses), (2, 1));
    }

    #[test]
    fn s_maxage_wins_over_max_age_in_a_shared_cache_and_expires_counts_without_either() {
        let mut s = with_cover(&[("cache-control", "max-age=10, s-maxage=100")]);
        assert!(matches!(
            s.lookup(&req(COVER, &[]), at(50)),
            Lookup::Hit(..)
        ));
        let expires = httpdate::fmt_http_date(at(30));
        let mut s = with_cover(&[("expires", expires.as_str())]);
        assert!(matches!(
            s.lookup(&req(COVER, &[]), at(29)),
            Lookup::Hit(..)
        ));
        // Stale without a validator: fetched again, unconditionally.
        let Lookup::Revalidate(up) = s.lookup(&req(COVER, &[]), at(31)) else {
            panic!("stale");
        };
        assert!(!up.headers.contains_key("if-none-match"));
        assert!(!up.headers.contains_key("if-modified-since"));
    }

    #[test]
    fn a_304_refreshes_the_stored_headers_and_a_200_replaces_the_body() {
        let mut s = with_cover(&[("cache-control", "max-age=60"), ("etag", "\"v1\"")]);
        let Lookup::Revalidate(up) = s.lookup(&req(COVER, &[]), at(70)) else {
            panic!("stale");
        };
        let not_modified = res(
            304,
            &[("cache-control", "max-age=120"), ("etag", "\"v1\"")],
            at(70),
        );
        let (how, head, b) = s.revalidated(&up, not_modified, Bytes::new(), at(70));
        assert_eq!((how, b), (Outcome::Revalidated, body()));
        assert_eq!(head.status, 200);
        assert_eq!(head.headers["cache-control"], "max-age=120");
        // Fresh for the new 120 s.
        assert!(matches!(
            s.lookup(&req(COVER, &[]), at(180)),
            Lookup::Hit(..)
        ));
        let Lookup::Revalidate(up) = s.lookup(&req(COVER, &[]), at(191)) else {
            panic!("stale again");
        };
        let changed = res(
            200,
            &[("cache-control", "max-age=60"), ("etag", "\"v2\"")],
            at(191),
        );
        let v2 = Bytes::from_static(b"JFIF v2");
        let (how, _, b) = s.revalidated(&up, changed, v2.clone(), at(191));
        assert_eq!((how, b), (Outcome::Miss, v2.clone()));
        let Lookup::Hit(_, b) = s.lookup(&req(COVER, &[]), at(200)) else {
            panic!("the new body is stored");
        };
        assert_eq!(b, v2);
        assert_eq!((s.stats.revalidated, s.stats.refreshed), (1, 1));
    }

    #[test]
    fn no_store_private_and_errors_are_not_stored() {
        for cc in ["no-store", "private, max-age=60"] {
            let s = with_cover(&[("cache-control", cc)]);
            assert_eq!((s.len(), s.stats.not_stored), (0, 1), "{cc}");
        }
        let mut s = Store::new(1 << 20);
        let r = req(COVER, &[]);
        s.fetched(
            &r,
            res(500, &[("cache-control", "max-age=60")], at(0)),
            body(),
            at(0),
        );
        assert!(s.is_empty());
    }

    #[test]
    fn vary_keeps_a_variant_per_value_of_the_named_request_header() {
        let mut s = Store::new(1 << 20);
        let vary = |now| {
            res(
                200,
                &[("cache-control", "max-age=60"), ("vary", "accept-encoding")],
                now,
            )
        };
        let gz = req(COVER, &[("accept-encoding", "gzip")]);
        assert!(matches!(s.lookup(&gz, at(0)), Lookup::Miss));
        s.fetched(&gz, vary(at(0)), body(), at(0));
        assert!(matches!(s.lookup(&gz, at(1)), Lookup::Hit(..)));
        // A header the response does not vary on does not matter ...
        let other = req(
            COVER,
            &[("accept-encoding", "gzip"), ("x-poison", "<script>")],
        );
        assert!(matches!(s.lookup(&other, at(2)), Lookup::Hit(..)));
        // ... one it varies on does: another variant, stored beside the first.
        let br = req(COVER, &[("accept-encoding", "br")]);
        assert!(matches!(s.lookup(&br, at(3)), Lookup::Miss));
        s.fetched(&br, vary(at(3)), Bytes::from_static(b"br"), at(3));
        let Lookup::Hit(_, b) = s.lookup(&br, at(4)) else {
            panic!("the br variant");
        };
        assert_eq!(b, Bytes::from_static(b"br"));
        let Lookup::Hit(_, b) = s.lookup(&gz, at(5)) else {
            panic!("the gzip variant is still there");
        };
        assert_eq!(b, body());
        // No Accept-Encoding at all is a value of its own.
        assert!(matches!(s.lookup(&req(COVER, &[]), at(6)), Lookup::Miss));
        let rows = s.rows(at(6));
        let variants: Vec<&str> = rows.iter().map(|r| r.variant.as_str()).collect();
        assert_eq!(variants, ["accept-encoding=gzip", "accept-encoding=br"]);
        // Each variant revalidates on its own; a 304 refreshes that one.
        let Lookup::Revalidate(up) = s.lookup(&br, at(64)) else {
            panic!("stale");
        };
        let (how, _, b) = s.revalidated(
            &up,
            res(304, &[("vary", "accept-encoding")], at(64)),
            Bytes::new(),
            at(64),
        );
        assert_eq!((how, b), (Outcome::Revalidated, Bytes::from_static(b"br")));
        assert!(matches!(s.lookup(&br, at(65)), Lookup::Hit(..)));
        assert!(matches!(s.lookup(&gz, at(65)), Lookup::Revalidate(..)));
        assert_eq!((s.len(), s.bytes()), (2, body().len() + 2));
        // A purge forgets every variant.
        assert!(s.purge("static.geektime.com/images/cover.jpg"));
        assert_eq!((s.len(), s.bytes()), (0, 0));
        // `Vary: *` matches no request: not stored.
        let star = res(
            200,
            &[("cache-control", "max-age=60"), ("vary", "*")],
            at(70),
        );
        s.fetched(&gz, star, body(), at(70));
        assert!(s.is_empty());
    }

    #[test]
    fn the_least_recently_used_goes_first_and_a_purge_makes_the_next_get_a_miss() {
        let mut s = Store::new(8 * 100);
        let cc = [("cache-control", "max-age=600")];
        for i in 0..8 {
            let r = req(&format!("/o/{i}"), &[]);
            s.fetched(
                &r,
                res(200, &cc, at(0)),
                Bytes::from(vec![b'x'; 100]),
                at(0),
            );
        }
        assert_eq!((s.len(), s.bytes()), (8, 800));
        // /o/0 used again: /o/1 is now the least recent.
        assert!(matches!(
            s.lookup(&req("/o/0", &[]), at(1)),
            Lookup::Hit(..)
        ));
        let r = req("/o/8", &[]);
        s.fetched(
            &r,
            res(200, &cc, at(2)),
            Bytes::from(vec![b'x'; 100]),
            at(2),
        );
        assert_eq!((s.len(), s.stats.evicted), (8, 1));
        assert!(matches!(s.lookup(&req("/o/1", &[]), at(3)), Lookup::Miss));
        assert!(matches!(
            s.lookup(&req("/o/0", &[]), at(3)),
            Lookup::Hit(..)
        ));
        // Bigger than an eighth of the store: passed through.
        let big = req("/o/big", &[]);
        s.fetched(&big, res(200, &cc, at(4)), Bytes::from(vec![0; 101]), at(4));
        assert_eq!(s.stats.not_stored, 1);
        assert!(s.purge("static.geektime.com/o/0"));
        assert!(!s.purge("static.geektime.com/o/0"));
        assert!(matches!(s.lookup(&req("/o/0", &[]), at(5)), Lookup::Miss));
        assert_eq!(s.rows(at(5)).len(), 7);
    }
}
