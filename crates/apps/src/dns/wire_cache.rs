//! Answers kept as the bytes they went out as, so that the next plain query
//! for the same question is answered by a copy with its id, its question's
//! letter case and (for a resolver) its TTLs patched, without decoding the
//! query or encoding the answer — what makes nsd and unbound fast, and what
//! `d11 bench dns` measures against them.
//!
//! Only a *plain* query takes this path: a standard query (RFC 1035 § 4.1.1:
//! QR 0, OPCODE 0) with one question, no answer or authority records, and
//! at most an OPT record without options (RFC 6891 § 6.1.2); its key is
//! every byte after the id with the name in lower case, so the flags (RD,
//! CD), the EDNS payload size, version and DO bit all select the answer.
//! Anything else (cookies, ECS, two questions, a compressed or bad name,
//! trailing bytes) goes the full way, where its errors are answered.

use std::collections::HashMap;
use std::time::Instant;

/// Entries kept at most; a full cache starts again empty.
const MAX_ENTRIES: usize = 4096;

/// The parts of a plain query the cache needs.
#[derive(Debug, PartialEq, Eq)]
pub struct Plain {
    pub id: [u8; 2],
    /// Everything after the id, the name lower-cased.
    pub key: Vec<u8>,
    /// The question's name as the client wrote it (case kept, RFC 4343).
    pub name: std::ops::Range<usize>,
}

/// `query` as a plain query, or `None` for anything else.
pub fn plain(query: &[u8]) -> Option<Plain> {
    let h = query.get(..12)?;
    let count = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
    // QR, OPCODE and TC: all clear.
    if h[2] & 0xfa != 0 || count(4) != 1 || count(6) != 0 || count(8) != 0 || count(10) > 1 {
        return None;
    }
    let mut at = 12;
    loop {
        let len = usize::from(*query.get(at)?);
        if len > 63 {
            return None;
        }
        at += 1 + len;
        if len == 0 {
            break;
        }
    }
    if at - 12 > 255 {
        return None;
    }
    let name = 12..at;
    at += 4;
    // The OPT: root owner, TYPE 41, no RDATA.
    let end = if count(10) == 1 {
        let opt = query.get(at..at + 11)?;
        if opt[0] != 0 || opt[1..3] != [0, 41] || opt[9..11] != [0, 0] {
            return None;
        }
        at + 11
    } else {
        at
    };
    if query.len() != end {
        return None;
    }
    let mut key = query[2..end].to_vec();
    key[name.start - 2..name.end - 2].make_ascii_lowercase();
    Some(Plain {
        id: [h[0], h[1]],
        key,
        name,
    })
}

/// Where the TTL of each record after the question sits in `msg` (OPT
/// records aside: their TTL field is flags), or `None` if it does not parse.
pub fn ttl_offsets(msg: &[u8]) -> Option<Vec<usize>> {
    let h = msg.get(..12)?;
    let count = |i: usize| usize::from(u16::from_be_bytes([h[i], h[i + 1]]));
    let skip_name = |mut at: usize| -> Option<usize> {
        loop {
            let len = *msg.get(at)?;
            match len {
                0 => return Some(at + 1),
                l if l & 0xc0 == 0xc0 => return Some(at + 2),
                l if l <= 63 => at += 1 + usize::from(l),
                _ => return None,
            }
        }
    };
    let mut at = 12;
    for _ in 0..count(4) {
        at = skip_name(at)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..count(6) + count(8) + count(10) {
        at = skip_name(at)?;
        let fixed = msg.get(at..at + 10)?;
        if fixed[0..2] != [0, 41] {
            out.push(at + 4);
        }
        at += 10 + usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
    }
    (at == msg.len()).then_some(out)
}

#[derive(Debug)]
struct Entry<T> {
    msg: Vec<u8>,
    /// Each TTL's offset and its value when stored.
    ttls: Vec<(usize, u32)>,
    stored: Instant,
    /// What the full path would have counted.
    note: T,
}

/// Encoded answers by plain query. `T`: what each answer counts as.
#[derive(Debug)]
pub struct WireCache<T> {
    map: HashMap<Vec<u8>, Entry<T>>,
    /// Whether TTLs count down (a resolver's cache) or stay (an
    /// authoritative server's zone).
    decrement: bool,
}

impl<T: Copy> WireCache<T> {
    pub fn new(decrement: bool) -> WireCache<T> {
        WireCache {
            map: HashMap::new(),
            decrement,
        }
    }

    /// The answer to `q` (the plain form of `query`) at `now`, made from
    /// the stored one, and its note; `None` when there is none or one of
    /// its TTLs has run out (then it is dropped).
    pub fn answer(&mut self, q: &Plain, query: &[u8], now: Instant) -> Option<(Vec<u8>, T)> {
        let e = self.map.get(&q.key)?;
        let held = if self.decrement {
            u32::try_from(now.saturating_duration_since(e.stored).as_secs()).unwrap_or(u32::MAX)
        } else {
            0
        };
        if self.decrement && e.ttls.iter().any(|&(_, ttl)| ttl <= held) {
            self.map.remove(&q.key);
            return None;
        }
        let mut out = e.msg.clone();
        out[..2].copy_from_slice(&q.id);
        out[q.name.clone()].copy_from_slice(&query[q.name.clone()]);
        for &(at, ttl) in &e.ttls {
            out[at..at + 4].copy_from_slice(&(ttl - held).to_be_bytes());
        }
        Some((out, e.note))
    }

    /// Keeps `msg`, the full path's answer to `q`, stored at `now`; one
    /// whose records do not parse is not kept.
    pub fn store(&mut self, q: &Plain, msg: &[u8], now: Instant, note: T) {
        let Some(offsets) = ttl_offsets(msg) else {
            return;
        };
        // An answer without a TTL never runs out: not for a cache.
        if self.decrement && offsets.is_empty() {
            return;
        }
        if self.map.len() >= MAX_ENTRIES {
            self.map.clear();
        }
        let ttls = offsets
            .into_iter()
            .map(|at| {
                let b = [msg[at], msg[at + 1], msg[at + 2], msg[at + 3]];
                (at, u32::from_be_bytes(b))
            })
            .collect();
        self.map.insert(
            q.key.clone(),
            Entry {
                msg: msg.to_vec(),
                ttls,
                stored: now,
                note,
            },
        );
    }

    pub fn clear(&mut self) {
        self.map.clear();
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn hex(s: &str) -> Vec<u8> {
        d11_wire::hex(s.trim())
    }

    fn ttls(m: &[u8]) -> Vec<u32> {
        let at = ttl_offsets(m).unwrap();
        at.iter()
            .map(|&i| u32::from_be_bytes([m[i], m[i + 1], m[i + 2], m[i + 3]]))
            .collect()
    }

    // /usr/bin/python3 (scapy 2.5.0):
    // bytes(DNS(id=4,rd=1,qd=DNSQR(qname='www.geektime.com',qtype='A'))).hex()
    const QUERY: &str = "00040100000100000000000003777777086765656b74696d6503636f6d0000010001";
    // … id=5, qname='WWW.GeekTime.com', ar=DNSRROPT(rclass=1232) (scapy sets DO)
    const QUERY_OPT: &str = "00050100000100000000000103575757084765656b54696d6503636f6d000001000100002904d0000080000000";
    // … id=6, ar=DNSRROPT(rclass=1232, rdata=[EDNS0TLV(optcode=10, optlen=8,
    //   optdata=b'\x01'*8)]): a cookie
    const QUERY_COOKIE: &str = "00060100000100000000000103777777086765656b74696d6503636f6d000001000100002904d000008000000c000a00080101010101010101";
    // The stub's fixture: a CNAME and two A records, TTLs 590 and 50.
    const ANSWER: &str = include_str!("fixtures/stub_answer.hex");

    #[test]
    fn plain_queries_are_keyed_by_their_bytes_with_the_name_in_lower_case() {
        let a = plain(&hex(QUERY)).unwrap();
        assert_eq!(a.id, [0, 4]);
        assert_eq!(a.name, 12..30);
        let b = plain(&hex(QUERY_OPT)).unwrap();
        // The same name, but with an OPT: another key.
        assert_ne!(a.key, b.key);
        assert_eq!(&b.key[10..28], b"\x03www\x08geektime\x03com\x00");
        // An option (a cookie), a response, trailing bytes, a cut name: no.
        assert_eq!(plain(&hex(QUERY_COOKIE)), None);
        let mut resp = hex(QUERY);
        resp[2] |= 0x80;
        assert_eq!(plain(&resp), None);
        let mut long = hex(QUERY);
        long.push(0);
        assert_eq!(plain(&long), None);
        assert_eq!(plain(&hex(QUERY)[..20]), None);
        assert_eq!(plain(b""), None);
    }

    #[test]
    fn the_ttls_of_every_record_are_found() {
        let m = hex(ANSWER);
        assert_eq!(ttls(&m), [590, 50, 50]);
        assert_eq!(ttl_offsets(&m[..m.len() - 1]), None);
    }

    #[test]
    fn a_stored_answer_comes_back_with_the_askers_id_and_case_and_ttls_counted_down() {
        let t0 = Instant::now();
        let mut c = WireCache::new(true);
        let q = hex(QUERY);
        let p = plain(&q).unwrap();
        c.store(&p, &hex(ANSWER), t0, 'x');
        // Another id, the name in capitals: the same key.
        let mut q2 = q.clone();
        q2[0] = 0x77;
        q2[13..16].copy_from_slice(b"WWW");
        let p2 = plain(&q2).unwrap();
        let (out, note) = c.answer(&p2, &q2, t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(note, 'x');
        assert_eq!(&out[..2], &[0x77, 0x04]);
        assert_eq!(&out[13..16], b"WWW");
        assert_eq!(ttls(&out), [580, 40, 40]);
        // Once the shortest TTL has run out the entry is gone.
        assert!(c.answer(&p2, &q2, t0 + Duration::from_secs(50)).is_none());
        assert!(c.is_empty());
        // An authoritative server's answers keep their TTLs.
        let mut a = WireCache::new(false);
        a.store(&p, &hex(ANSWER), t0, ());
        let (out, ()) = a.answer(&p, &q, t0 + Duration::from_secs(3600)).unwrap();
        let mut want = hex(ANSWER);
        want[..2].copy_from_slice(&q[..2]);
        assert_eq!(out, want);
    }
}
