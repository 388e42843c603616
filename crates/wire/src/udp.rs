//! UDP, the transport of GTP-U, VXLAN, GTPv2-C and DNS in the lab.
//!
//! Read RFC 768 first: the 8-octet header (source port, destination port,
//! length of header and data, checksum), the checksum over a pseudo-header
//! of the IP addresses, the protocol and the UDP length, and "an all zero
//! transmitted checksum value means that the transmitter generated no
//! checksum" (allowed over IPv4; GTP-U and VXLAN senders commonly use it,
//! RFC 7348 § 5). A computed checksum of zero is sent as all ones.

use crate::checksum;
use crate::ipv4::protocol;
use std::fmt;
use std::net::Ipv4Addr;

/// The UDP header [RFC 768].
pub const HEADER_LEN: usize = 8;

mod field {
    use std::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// Why bytes are not a UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UdpError {
    #[error("shorter than the 8-byte UDP header")]
    Truncated,
    #[error("the UDP length is below 8 or beyond the IP payload")]
    Length,
}

/// A view of a UDP datagram (an IPv4 payload). After
/// [`UdpPacket::new_checked`] no accessor panics: the length field lies
/// between the header and the buffer's end.
#[derive(Debug, Clone)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Checks the header fits and the length field agrees with the buffer.
    /// Bytes past the UDP length are allowed and excluded from
    /// [`UdpPacket::payload`].
    pub fn new_checked(buffer: T) -> Result<Self, UdpError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(UdpError::Truncated);
        }
        let len = usize::from(u16::from_be_bytes([b[4], b[5]]));
        if len < HEADER_LEN || len > b.len() {
            return Err(UdpError::Length);
        }
        Ok(UdpPacket { buffer })
    }

    fn u16_at(&self, r: std::ops::Range<usize>) -> u16 {
        let b = &self.buffer.as_ref()[r];
        u16::from_be_bytes([b[0], b[1]])
    }
    pub fn src_port(&self) -> u16 {
        self.u16_at(field::SRC_PORT)
    }
    pub fn dst_port(&self) -> u16 {
        self.u16_at(field::DST_PORT)
    }
    /// The length field: header and data.
    pub fn len(&self) -> usize {
        usize::from(self.u16_at(field::LENGTH))
    }
    /// Never true after `new_checked` (the header counts); for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM)
    }
    /// The data, up to the length field.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.len()]
    }
    /// The datagram, up to the length field.
    pub fn datagram(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.len()]
    }
    /// True if the checksum is absent (zero) or right for a datagram from
    /// `src` to `dst` [RFC 768 "Fields"].
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.checksum() == 0 || checksum::fold(self.sum(src, dst)) == 0xffff
    }
    fn sum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> u32 {
        let len = self.len();
        checksum::pseudo_header_sum(src, dst, protocol::UDP, len as u16)
            + checksum::sum(self.datagram())
    }
}

impl<'a> UdpPacket<&'a [u8]> {
    /// [`UdpPacket::payload`] borrowed for as long as the buffer.
    pub fn payload_ref(&self) -> &'a [u8] {
        &self.buffer[HEADER_LEN..self.len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    pub fn set_src_port(&mut self, p: u16) {
        self.buffer.as_mut()[field::SRC_PORT].copy_from_slice(&p.to_be_bytes());
    }
    pub fn set_dst_port(&mut self, p: u16) {
        self.buffer.as_mut()[field::DST_PORT].copy_from_slice(&p.to_be_bytes());
    }
    /// Computes the checksum for a datagram from `src` to `dst`; a result
    /// of zero is sent as all ones [RFC 768].
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&[0, 0]);
        let c = match !checksum::fold(self.sum(src, dst)) {
            0 => 0xffff,
            c => c,
        };
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }
}

impl<T: AsRef<[u8]>> fmt::Display for UdpPacket<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "UDP {} > {} len {}",
            self.src_port(),
            self.dst_port(),
            self.len()
        )
    }
}

/// A parsed UDP header.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct UdpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    /// Octets of data after the header.
    pub payload_len: usize,
}

impl UdpRepr {
    pub fn parse<T: AsRef<[u8]>>(p: &UdpPacket<T>) -> UdpRepr {
        UdpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            payload_len: p.len() - HEADER_LEN,
        }
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Appends the header with no checksum (zero), for tunnels whose inner
    /// packets carry their own [RFC 768; RFC 7348 § 5]. A payload too long
    /// for the 16-bit length field is the caller's bug; the length saturates.
    pub fn emit(&self, buf: &mut Vec<u8>) {
        let len = (HEADER_LEN + self.payload_len).min(usize::from(u16::MAX)) as u16;
        let ([s0, s1], [d0, d1], [l0, l1]) = (
            self.src_port.to_be_bytes(),
            self.dst_port.to_be_bytes(),
            len.to_be_bytes(),
        );
        buf.extend_from_slice(&[s0, s1, d0, d1, l0, l1, 0, 0]);
    }

    /// Appends the header and `payload` (of `payload_len` octets) with the
    /// checksum for a datagram from `src` to `dst`.
    pub fn emit_with_checksum(
        &self,
        buf: &mut Vec<u8>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        payload: &[u8],
    ) {
        debug_assert_eq!(payload.len(), self.payload_len);
        let start = buf.len();
        self.emit(buf);
        buf.extend_from_slice(payload);
        if let Ok(mut p) = UdpPacket::new_checked(&mut buf[start..]) {
            p.fill_checksum(src, dst);
        }
    }
}

impl fmt::Display for UdpRepr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "UDP {} > {} len {}",
            self.src_port,
            self.dst_port,
            HEADER_LEN + self.payload_len
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex;
    use proptest::prelude::*;

    // /usr/bin/python3 -c 'from scapy.all import *; print(bytes(IP(src="172.16.1.1",
    //   dst="172.16.1.2", id=1)/UDP(sport=49152, dport=4789)/Raw(b"hi!")).hex())'
    // IPv4 (20) | c000 12b5 000b 4995 | "hi!"
    const WITH_SUM: &str = "4500001f00010000401120aaac100101ac100102c00012b5000b4995686921";
    // /usr/bin/python3 -c 'from scapy.all import *; print(bytes(UDP(sport=2152,
    //   dport=2152, chksum=0)/Raw(b"hello")).hex())'
    const NO_SUM: &str = "08680868000d000068656c6c6f";
    // /usr/bin/python3 -c 'from scapy.all import *; print(bytes(IP(src="172.16.4.1",
    //   dst="172.16.4.2", id=1)/UDP(sport=2123, dport=2123)
    //   /Raw(bytes.fromhex("fffffffff7a4f7b4"))).hex())'
    // IPv4 (20) | 084b 084b 0010 9fba | payload: its 32-bit words and the
    // header's add up to 0xffffffff, the pseudo-header's sum on top of it
    // past what a u32 holds.
    const NEAR_U32_LIMIT: &str =
        "450000240001000040111aa5ac100401ac100402084b084b00109fbafffffffff7a4f7b4";

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn the_view_reads_scapy_and_the_checksum_verifies() {
        let b = hex(WITH_SUM);
        let u = UdpPacket::new_checked(&b[20..]).unwrap();
        assert_eq!((u.src_port(), u.dst_port(), u.len()), (49152, 4789, 11));
        assert_eq!(u.payload(), b"hi!");
        assert!(u.verify_checksum(a("172.16.1.1"), a("172.16.1.2")));
        assert!(!u.verify_checksum(a("172.16.1.1"), a("172.16.1.3")));
        assert_eq!(u.to_string(), "UDP 49152 > 4789 len 11");
    }

    #[test]
    fn emit_gives_scapy_bytes_with_and_without_a_checksum() {
        let b = hex(WITH_SUM);
        let r = UdpRepr {
            src_port: 49152,
            dst_port: 4789,
            payload_len: 3,
        };
        let mut out = vec![];
        r.emit_with_checksum(&mut out, a("172.16.1.1"), a("172.16.1.2"), b"hi!");
        assert_eq!(out, b[20..]);
        let mut out = vec![];
        UdpRepr {
            src_port: 2152,
            dst_port: 2152,
            payload_len: 5,
        }
        .emit(&mut out);
        out.extend_from_slice(b"hello");
        assert_eq!(out, hex(NO_SUM));
        let u = UdpPacket::new_checked(&out[..]).unwrap();
        assert!(
            u.verify_checksum(a("1.2.3.4"), a("5.6.7.8")),
            "zero: none sent"
        );
    }

    /// An S11 Modify Bearer Request with such a sum left with a checksum
    /// one off, and so did its two retransmissions (the same bytes): the
    /// sgw dropped all three, and the phone never had a downlink.
    #[test]
    fn a_datagram_whose_sum_nears_the_u32_limit_gets_scapys_checksum() {
        let b = hex(NEAR_U32_LIMIT);
        let (src, dst) = (a("172.16.4.1"), a("172.16.4.2"));
        let mut out = vec![];
        UdpRepr {
            src_port: 2123,
            dst_port: 2123,
            payload_len: 8,
        }
        .emit_with_checksum(&mut out, src, dst, &b[28..]);
        assert_eq!(out, b[20..]);
        assert!(UdpPacket::new_checked(&out[..])
            .unwrap()
            .verify_checksum(src, dst));
    }

    #[test]
    fn a_computed_zero_is_sent_as_all_ones() {
        // Ports chosen so that the sum before complement is 0xffff.
        let (src, dst) = (a("0.0.0.0"), a("0.0.0.0"));
        // pseudo: proto 17 + len 8, twice the length (pseudo and header): 17 + 8 + 8 = 33.
        let r = UdpRepr {
            src_port: 0xffff - 33,
            dst_port: 0,
            payload_len: 0,
        };
        let mut out = vec![];
        r.emit_with_checksum(&mut out, src, dst, &[]);
        assert_eq!(&out[6..8], &[0xff, 0xff]);
        assert!(UdpPacket::new_checked(&out[..])
            .unwrap()
            .verify_checksum(src, dst));
    }

    #[test]
    fn short_or_lying_lengths_are_refused_and_padding_ignored() {
        let b = hex(NO_SUM);
        assert_eq!(
            UdpPacket::new_checked(&b[..7]).unwrap_err(),
            UdpError::Truncated
        );
        assert_eq!(
            UdpPacket::new_checked(&b[..12]).unwrap_err(),
            UdpError::Length
        );
        let mut short = b.clone();
        short[5] = 7;
        assert_eq!(
            UdpPacket::new_checked(&short[..]).unwrap_err(),
            UdpError::Length
        );
        let mut padded = b.clone();
        padded.extend_from_slice(&[0; 9]);
        let u = UdpPacket::new_checked(&padded[..]).unwrap();
        assert_eq!(u.payload(), b"hello");
    }

    proptest! {
        #[test]
        fn repr_round_trips_and_the_checksum_verifies(sp: u16, dp: u16, src: u32, dst: u32,
                payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let r = UdpRepr { src_port: sp, dst_port: dp, payload_len: payload.len() };
            let mut b = vec![];
            r.emit_with_checksum(&mut b, src.into(), dst.into(), &payload);
            let p = UdpPacket::new_checked(&b[..]).unwrap();
            prop_assert_eq!(UdpRepr::parse(&p), r);
            prop_assert_eq!(p.payload(), &payload[..]);
            prop_assert!(p.verify_checksum(src.into(), dst.into()));
        }

        #[test]
        fn no_input_panics(b in proptest::collection::vec(any::<u8>(), 0..32), src: u32, dst: u32) {
            if let Ok(p) = UdpPacket::new_checked(&b[..]) {
                let _ = (p.payload(), p.verify_checksum(src.into(), dst.into()), p.to_string(), UdpRepr::parse(&p));
            }
        }
    }
}
