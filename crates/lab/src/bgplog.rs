//! The BGP messages of a capture, in the order they crossed their wires:
//! what `d11 demo` tells chapter 2 from (the OPENs of each session, the
//! UPDATE that carried the cloud's prefix to the mobile carrier).
//!
//! Each direction of each TCP connection to or from port 179 is put back
//! together from its segments by sequence number (a retransmission or an
//! overlap counts once; a gap, which a capture that started late leaves,
//! starts the stream afresh at the next message boundary the stream cannot
//! know: that direction is dropped), cut into messages [RFC 4271 § 4.1] and
//! decoded with `d11_wire::bgp`. UPDATEs are read with 4-octet AS numbers
//! when both OPENs of the connection announced them [RFC 6793].

use crate::trace::Frame;
use d11_wire::bgp::{self, Message};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use std::collections::BTreeMap;
use std::net::SocketAddrV4;

/// One BGP message as a capture saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct BgpMessage {
    /// The pcapng interface (`node:port`).
    pub wire: String,
    /// When the segment that completed it was captured.
    pub ts_ns: u64,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub message: Message,
}

/// One direction of one connection on one wire.
#[derive(Default)]
struct Stream {
    next_seq: Option<u32>,
    buf: Vec<u8>,
    /// Whole messages cut from it: when, and their bytes.
    raw: Vec<(u64, Vec<u8>)>,
    broken: bool,
}

type Key = (String, SocketAddrV4, SocketAddrV4);

/// Every BGP message in `frames`, in capture order.
pub fn messages(frames: &[Frame]) -> Vec<BgpMessage> {
    let mut streams: BTreeMap<Key, Stream> = BTreeMap::new();
    let mut order: Vec<(u64, Key, usize)> = Vec::new();
    for f in frames {
        let Ok(p) = SlicedPacket::from_ethernet(&f.data) else {
            continue;
        };
        let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(tcp))) = (&p.net, &p.transport)
        else {
            continue;
        };
        if tcp.source_port() != bgp::PORT && tcp.destination_port() != bgp::PORT {
            continue;
        }
        let h = ip.header();
        let src = SocketAddrV4::new(h.source_addr(), tcp.source_port());
        let dst = SocketAddrV4::new(h.destination_addr(), tcp.destination_port());
        let key: Key = (f.wire.clone(), src, dst);
        let s = streams.entry(key.clone()).or_default();
        if tcp.syn() {
            *s = Stream {
                next_seq: Some(tcp.sequence_number().wrapping_add(1)),
                ..Stream::default()
            };
            continue;
        }
        let data = tcp.payload();
        if data.is_empty() || s.broken {
            continue;
        }
        let seq = tcp.sequence_number();
        let next = *s.next_seq.get_or_insert(seq);
        // How far into this segment the stream already is (wrapping arithmetic).
        let ahead = next.wrapping_sub(seq) as usize;
        if ahead > u32::MAX as usize / 2 {
            // A gap: bytes before this segment were not captured.
            s.broken = true;
            continue;
        }
        if ahead >= data.len() {
            continue;
        }
        s.buf.extend_from_slice(&data[ahead..]);
        s.next_seq = Some(seq.wrapping_add(data.len() as u32));
        loop {
            match bgp::message_len(&s.buf) {
                Ok(Some(n)) => {
                    let m: Vec<u8> = s.buf.drain(..n).collect();
                    s.raw.push((f.ts_ns, m));
                    order.push((f.ts_ns, key.clone(), s.raw.len() - 1));
                }
                Ok(None) => break,
                Err(_) => {
                    s.broken = true;
                    break;
                }
            }
        }
    }
    // 4-octet AS numbers when both directions' OPENs announced them.
    let announces = |s: Option<&Stream>| {
        s.is_some_and(|s| {
            s.raw.iter().any(|(_, m)| {
                matches!(Message::parse_bytes(m, true), Ok(Message::Open(o)) if o.four_octet_as().is_some())
            })
        })
    };
    order
        .into_iter()
        .filter_map(|(ts, key, i)| {
            let back = (key.0.clone(), key.2, key.1);
            let four = announces(streams.get(&key)) && announces(streams.get(&back));
            let raw = &streams.get(&key)?.raw[i].1;
            let message = Message::parse_bytes(raw, four).ok()?;
            Some(BgpMessage {
                wire: key.0.clone(),
                ts_ns: ts,
                src: key.1,
                dst: key.2,
                message,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use d11_wire::bgp::{AsPath, OpenRepr, PathAttrs, UpdateRepr};
    use d11_wire::ethernet::{self, EtherType};
    use d11_wire::ipv4::{protocol, Ipv4Repr};
    use d11_wire::MacAddr;
    use std::net::Ipv4Addr;

    /// A TCP segment from `src` to `dst` with `seq` and `flags` carrying `data`,
    /// as a frame (checksums left zero: the decoder does not look).
    fn segment(src: SocketAddrV4, dst: SocketAddrV4, seq: u32, syn: bool, data: &[u8]) -> Vec<u8> {
        let mut f = vec![];
        ethernet::emit_header(
            &mut f,
            MacAddr([2, 0, 0, 0, 0, 2]),
            MacAddr([2, 0, 0, 0, 0, 1]),
            EtherType::Ipv4,
        );
        Ipv4Repr {
            src: *src.ip(),
            dst: *dst.ip(),
            protocol: protocol::TCP,
            ttl: 1,
            ident: 1,
            dont_frag: true,
            payload_len: 20 + data.len(),
        }
        .emit(&mut f);
        f.extend_from_slice(&src.port().to_be_bytes());
        f.extend_from_slice(&dst.port().to_be_bytes());
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend_from_slice(&0u32.to_be_bytes());
        f.extend_from_slice(&[0x50, if syn { 0x02 } else { 0x18 }, 0xff, 0xff, 0, 0, 0, 0]);
        f.extend_from_slice(data);
        f
    }

    fn bytes(m: &Message) -> Vec<u8> {
        let mut b = vec![];
        m.emit(&mut b, true);
        b
    }

    #[test]
    fn messages_are_put_back_together_across_segments_and_retransmissions() {
        let a = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 2), 179);
        let b = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 50000);
        let open = |asn| {
            bytes(&Message::Open(OpenRepr::new(
                asn,
                9,
                Ipv4Addr::new(192, 0, 2, 2),
                vec![bgp::Capability::FourOctetAs(asn)],
            )))
        };
        let update = bytes(&Message::Update(UpdateRepr {
            attrs: PathAttrs {
                origin: Some(bgp::Origin::Igp),
                // 4-octet: read wrong as 2-octet numbers.
                as_path: Some(AsPath::sequence(&[64510, 4_200_000_000])),
                next_hop: Some(Ipv4Addr::new(192, 0, 2, 2)),
                ..PathAttrs::default()
            },
            nlri: vec!["203.0.113.0/24".parse().unwrap()],
            ..UpdateRepr::default()
        }));
        let w = |d: Vec<u8>, t| Frame {
            wire: "a2:a2c1".into(),
            ts_ns: t,
            data: d,
        };
        let o1 = open(64510);
        let mut stream = o1.clone();
        stream.extend_from_slice(&update);
        let frames = vec![
            w(segment(a, b, 99, true, &[]), 1),
            w(segment(b, a, 499, true, &[]), 2),
            w(segment(b, a, 500, false, &open(64500)), 3),
            // The OPEN and the first half of the UPDATE, then the first
            // segment again (a retransmission), then the rest.
            w(segment(a, b, 100, false, &stream[..o1.len() + 10]), 4),
            w(segment(a, b, 100, false, &stream[..o1.len() + 10]), 5),
            w(
                segment(
                    a,
                    b,
                    100 + o1.len() as u32 + 10,
                    false,
                    &stream[o1.len() + 10..],
                ),
                6,
            ),
        ];
        let got = messages(&frames);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(matches!(&got[0].message, Message::Open(o) if o.asn() == 64500));
        assert_eq!((got[1].src, got[1].dst), (a, b));
        let Message::Update(u) = &got[2].message else {
            panic!()
        };
        assert_eq!(
            u.attrs.path().to_string(),
            "64510 4200000000",
            "read with 4-octet AS numbers"
        );
        assert_eq!(got[2].ts_ns, 6);
    }
}
