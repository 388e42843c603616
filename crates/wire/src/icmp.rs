//! The ICMPv4 messages a router originates [RFC 792], with the rules of
//! RFC 1812 § 4.3.2 on when not to send them.
//!
//! Parsing of received ICMP beyond "is this an echo request / an error" is
//! etherparse's job; this module builds echo replies, time exceeded and
//! destination unreachable (including fragmentation needed with the next-hop
//! MTU [RFC 1191 § 4]).

use crate::checksum;
use crate::ipv4::{protocol, Ipv4Packet, Ipv4Repr, MIN_HEADER_LEN};
use std::net::Ipv4Addr;

pub const ECHO_REPLY: u8 = 0;
pub const DEST_UNREACHABLE: u8 = 3;
pub const ECHO_REQUEST: u8 = 8;
pub const TIME_EXCEEDED: u8 = 11;

/// An ICMP error an element sends about a packet it could not deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpError {
    /// Type 3 code 0: no route to the network.
    NetUnreachable,
    /// Type 3 code 1: the next hop did not answer ARP.
    HostUnreachable,
    /// Type 3 code 3: nobody listens on that port (a host's answer).
    PortUnreachable,
    /// Type 3 code 4 with the next-hop MTU [RFC 1191 § 4].
    FragmentationNeeded { mtu: u16 },
    /// Type 11 code 0: TTL reached zero in transit.
    TtlExceeded,
}

impl IcmpError {
    pub fn type_code(self) -> (u8, u8) {
        match self {
            IcmpError::NetUnreachable => (DEST_UNREACHABLE, 0),
            IcmpError::HostUnreachable => (DEST_UNREACHABLE, 1),
            IcmpError::PortUnreachable => (DEST_UNREACHABLE, 3),
            IcmpError::FragmentationNeeded { .. } => (DEST_UNREACHABLE, 4),
            IcmpError::TtlExceeded => (TIME_EXCEEDED, 0),
        }
    }
}

/// The most an ICMP error may quote: the whole error stays within 576 bytes
/// [RFC 1812 § 4.3.2.3].
pub const MAX_ERROR_LEN: usize = 576;

/// True if `pkt` is an ICMP error message itself (never answered with an
/// error [RFC 1122 § 3.2.2]).
pub fn is_icmp_error<T: AsRef<[u8]>>(pkt: &Ipv4Packet<T>) -> bool {
    if pkt.protocol() != protocol::ICMP || pkt.frag_offset() != 0 {
        return false;
    }
    matches!(pkt.payload().first(), Some(&t) if !matches!(t, ECHO_REPLY | ECHO_REQUEST | 13 | 14 | 15 | 16 | 17 | 18))
}

/// RFC 1812 § 4.3.2.7: no error about an ICMP error, a non-first fragment, or
/// a packet from a broadcast, multicast, zero or loopback source.
pub fn may_send_error_about<T: AsRef<[u8]>>(pkt: &Ipv4Packet<T>) -> bool {
    let s = pkt.src();
    let d = pkt.dst();
    !(is_icmp_error(pkt)
        || pkt.frag_offset() != 0
        || s.is_unspecified()
        || s.is_loopback()
        || s.is_multicast()
        || s.is_broadcast()
        || d.is_broadcast()
        || d.is_multicast())
}

/// Appends an IPv4 packet from `src` (IP identification `ident`) carrying the ICMP error `err` about
/// `original` (its header and as much of its payload as fits in 576 bytes).
pub fn emit_error<T: AsRef<[u8]>>(
    buf: &mut Vec<u8>,
    src: Ipv4Addr,
    ident: u16,
    err: IcmpError,
    original: &Ipv4Packet<T>,
) {
    let quoted = original.packet();
    let quoted = &quoted[..quoted.len().min(MAX_ERROR_LEN - MIN_HEADER_LEN - 8)];
    let (ty, code) = err.type_code();
    let rest: [u8; 4] = match err {
        IcmpError::FragmentationNeeded { mtu } => {
            let m = mtu.to_be_bytes();
            [0, 0, m[0], m[1]]
        }
        _ => [0; 4],
    };
    Ipv4Repr {
        src,
        dst: original.src(),
        protocol: protocol::ICMP,
        ttl: 64,
        ident,
        dont_frag: false,
        payload_len: 8 + quoted.len(),
    }
    .emit(buf);
    emit_icmp(buf, ty, code, rest, quoted);
}

/// Appends the echo reply to an echo request `request` (an ICMP message,
/// header included), sent from `src` to `dst` [RFC 792 p. 14].
pub fn emit_echo_reply(
    buf: &mut Vec<u8>,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ident: u16,
    request: &[u8],
) {
    let (rest, data) = match (request.get(4..8), request.get(8..)) {
        (Some(r), Some(d)) => ([r[0], r[1], r[2], r[3]], d),
        _ => ([0; 4], &[][..]),
    };
    Ipv4Repr {
        src,
        dst,
        protocol: protocol::ICMP,
        ttl: 64,
        ident,
        dont_frag: false,
        payload_len: 8 + data.len(),
    }
    .emit(buf);
    emit_icmp(buf, ECHO_REPLY, 0, rest, data);
}

/// Appends an ICMP message: type, code, checksum, the 4-byte rest of header, data.
pub fn emit_icmp(buf: &mut Vec<u8>, ty: u8, code: u8, rest: [u8; 4], data: &[u8]) {
    let start = buf.len();
    buf.extend_from_slice(&[ty, code, 0, 0]);
    buf.extend_from_slice(&rest);
    buf.extend_from_slice(data);
    let c = checksum::checksum(&buf[start..]);
    buf[start + 2..start + 4].copy_from_slice(&c.to_be_bytes());
}

/// If `pkt` is a well-formed echo request (checksum verified), its ICMP message.
pub fn as_echo_request<T: AsRef<[u8]>>(pkt: &Ipv4Packet<T>) -> Option<&[u8]> {
    let icmp = pkt.payload();
    (pkt.protocol() == protocol::ICMP
        && pkt.frag_offset() == 0
        && !pkt.more_frags()
        && icmp.len() >= 8
        && icmp[0] == ECHO_REQUEST
        && icmp[1] == 0
        && checksum::fold(checksum::sum(icmp)) == 0xffff)
        .then_some(icmp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex;

    // scapy: bytes(IP(src="10.45.0.2", dst="192.0.2.9", id=1, ttl=1)/ICMP(id=0x77, seq=1)/b"abcd")
    const PING_TTL1: &str = "45000020000100000101eda40a2d0002c0000209080032c10077000161626364";

    // scapy: bytes(IP(src="192.0.2.1", dst="10.45.0.2", id=0, ttl=64)/
    //   ICMP(type=11, code=0)/IP(PING_TTL1))
    const TIME_EXCEEDED_GOLDEN: &str = "4500003c000000004001ae91c00002010a2d00020b00f4ff0000000045000020000100000101eda40a2d0002c0000209080032c10077000161626364";

    #[test]
    fn time_exceeded_matches_scapy() {
        let ping = hex(PING_TTL1);
        let orig = Ipv4Packet::new_checked(&ping[..]).unwrap();
        assert!(may_send_error_about(&orig));
        let mut b = vec![];
        emit_error(
            &mut b,
            Ipv4Addr::new(192, 0, 2, 1),
            0,
            IcmpError::TtlExceeded,
            &orig,
        );
        assert_eq!(b, hex(TIME_EXCEEDED_GOLDEN));
        // and no error about that error
        assert!(!may_send_error_about(
            &Ipv4Packet::new_checked(&b[..]).unwrap()
        ));
    }

    #[test]
    fn echo_request_is_recognised_and_answered() {
        let ping = hex(PING_TTL1);
        let p = Ipv4Packet::new_checked(&ping[..]).unwrap();
        let req = as_echo_request(&p).unwrap();
        let mut b = vec![];
        emit_echo_reply(&mut b, p.dst(), p.src(), 9, req);
        let r = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(r.verify_checksum());
        assert_eq!(&r.payload()[4..], &req[4..]);
        assert_eq!(r.payload()[0], ECHO_REPLY);
        assert_eq!(checksum::fold(checksum::sum(r.payload())), 0xffff);
    }

    #[test]
    fn fragmentation_needed_carries_the_mtu_and_errors_quote_at_most_576() {
        let mut big = vec![];
        Ipv4Repr {
            src: Ipv4Addr::new(10, 45, 0, 2),
            dst: Ipv4Addr::new(192, 0, 2, 9),
            protocol: protocol::UDP,
            ttl: 9,
            ident: 7,
            dont_frag: true,
            payload_len: 1480,
        }
        .emit(&mut big);
        big.resize(1500, 0);
        let orig = Ipv4Packet::new_checked(&big[..]).unwrap();
        let mut b = vec![];
        emit_error(
            &mut b,
            Ipv4Addr::new(192, 0, 2, 1),
            0,
            IcmpError::FragmentationNeeded { mtu: 1400 },
            &orig,
        );
        assert_eq!(b.len(), MAX_ERROR_LEN);
        assert_eq!(
            (b[20], b[21], u16::from_be_bytes([b[26], b[27]])),
            (3, 4, 1400)
        );
    }
}
