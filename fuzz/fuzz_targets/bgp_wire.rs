//! The BGP parser on arbitrary bytes: the stream cutter over the input as a
//! TCP byte stream, and every message, with both AS widths. The first byte
//! chooses whether the input is taken as it is or as the body of a message
//! whose marker, length and type this target writes (so the fuzzer's bytes
//! reach the OPEN, UPDATE, NOTIFICATION and ROUTE-REFRESH parsers instead
//! of failing the marker). Never a panic; what parses re-emits to bytes
//! that parse the same.
#![no_main]
use d11_wire::bgp::{self, BgpPacket, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else { return };
    let framed;
    let bytes = if mode & 0x80 == 0 {
        data
    } else {
        // Header [RFC 4271 § 4.1]: marker, length, type (1-5, or not).
        let mut m = bgp::MARKER.to_vec();
        let len = (bgp::HEADER_LEN + body.len()).min(0xffff) as u16;
        m.extend_from_slice(&len.to_be_bytes());
        m.push(if mode & 0x40 == 0 { (mode & 0x07) % 5 + 1 } else { mode & 0x3f });
        m.extend_from_slice(body);
        framed = m;
        &framed[..]
    };
    // The stream as a speaker cuts it: whole messages one after the other
    // until one is bad or incomplete.
    let mut rest = bytes;
    while let Ok(Some(n)) = bgp::message_len(rest) {
        assert!((bgp::HEADER_LEN..=bgp::MAX_LEN).contains(&n) && n <= rest.len());
        check(&rest[..n]);
        rest = &rest[n..];
    }
    check(bytes);
});

fn check(bytes: &[u8]) {
    let Ok(p) = BgpPacket::new_checked(bytes) else { return };
    for four in [false, true] {
        let Ok(m) = Message::parse(&p, four) else { continue };
        let _ = m.to_string();
        let mut b = vec![];
        m.emit(&mut b, four);
        // A well-formed message re-emits to one that parses the same
        // (unknown attributes in type code order, as RFC 4271 § 5 asks).
        let clean = match &m {
            Message::Update(u) => u.treat_as_withdraw.is_none() && u.discarded.is_empty() && !u.nlri.is_empty(),
            _ => true,
        };
        if clean && b.len() <= bgp::MAX_LEN {
            let mut want = m.clone();
            if let Message::Update(u) = &mut want {
                u.attrs.unknown.sort_by_key(|a| a.code);
            }
            assert_eq!(Message::parse_bytes(&b, four), Ok(want));
        }
    }
}
