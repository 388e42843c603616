//! IPv4 [RFC 791]: a zero-copy, mutable view for forwarding in place, and a
//! small `Ipv4Repr` for the packets an element originates.
//!
//! etherparse parses IPv4 for read-only inspection; forwarding needs to change
//! TTL and addresses in the frame it received without copying, with the
//! checksum updated incrementally [RFC 1624], which is what this view adds.

use crate::checksum;
use std::fmt;
use std::net::Ipv4Addr;

mod field {
    use std::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

/// Length of an IPv4 header without options.
pub const MIN_HEADER_LEN: usize = 20;

/// IP protocol numbers the lab handles [IANA protocol numbers].
pub mod protocol {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const SCTP: u8 = 132;
}

/// Why bytes are not a well-formed IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Ipv4Error {
    #[error("shorter than an IPv4 header")]
    Truncated,
    #[error("IP version is not 4")]
    Version,
    #[error("IHL below 5 or beyond the packet")]
    HeaderLen,
    #[error("total length disagrees with the frame")]
    TotalLen,
}

/// A view of an IPv4 packet. After [`Ipv4Packet::new_checked`] no accessor
/// panics: the header and `total_len` both fit in the buffer.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Checks version, IHL and total length. Bytes past `total_len` (Ethernet
    /// padding) are allowed and ignored by [`Ipv4Packet::payload`].
    pub fn new_checked(buffer: T) -> Result<Self, Ipv4Error> {
        let b = buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(Ipv4Error::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(Ipv4Error::Version);
        }
        let hl = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        if hl < MIN_HEADER_LEN || hl > b.len() {
            return Err(Ipv4Error::HeaderLen);
        }
        let tl = usize::from(u16::from_be_bytes([b[2], b[3]]));
        if tl < hl || tl > b.len() {
            return Err(Ipv4Error::TotalLen);
        }
        Ok(Ipv4Packet { buffer })
    }
    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    fn u16_at(&self, r: std::ops::Range<usize>) -> u16 {
        let b = &self.b()[r];
        u16::from_be_bytes([b[0], b[1]])
    }
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[field::VER_IHL] & 0x0f) * 4
    }
    pub fn tos(&self) -> u8 {
        self.b()[field::TOS]
    }
    pub fn total_len(&self) -> usize {
        usize::from(self.u16_at(field::LENGTH))
    }
    pub fn ident(&self) -> u16 {
        self.u16_at(field::IDENT)
    }
    pub fn dont_frag(&self) -> bool {
        self.u16_at(field::FLG_OFF) & 0x4000 != 0
    }
    pub fn more_frags(&self) -> bool {
        self.u16_at(field::FLG_OFF) & 0x2000 != 0
    }
    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> usize {
        usize::from(self.u16_at(field::FLG_OFF) & 0x1fff) * 8
    }
    pub fn ttl(&self) -> u8 {
        self.b()[field::TTL]
    }
    pub fn protocol(&self) -> u8 {
        self.b()[field::PROTOCOL]
    }
    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM)
    }
    pub fn src(&self) -> Ipv4Addr {
        let b = &self.b()[field::SRC];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }
    pub fn dst(&self) -> Ipv4Addr {
        let b = &self.b()[field::DST];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }
    pub fn header(&self) -> &[u8] {
        &self.b()[..self.header_len()]
    }
    /// The payload up to `total_len` (Ethernet padding excluded).
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..self.total_len()]
    }
    /// The packet up to `total_len`.
    pub fn packet(&self) -> &[u8] {
        &self.b()[..self.total_len()]
    }
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(self.header())) == 0xffff
    }
}

impl<'a> Ipv4Packet<&'a [u8]> {
    /// [`Ipv4Packet::payload`] borrowed for as long as the buffer, so a
    /// view of the payload can outlive this one.
    pub fn payload_ref(&self) -> &'a [u8] {
        let (h, t) = (self.header_len(), self.total_len());
        &self.buffer[h..t]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
    fn set_checksum(&mut self, c: u16) {
        self.bm()[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }
    /// Lowers TTL by one and updates the checksum incrementally [RFC 1624 § 4].
    /// The caller has checked `ttl() > 1`.
    pub fn decrement_ttl(&mut self) {
        let old = self.u16_at(8..10);
        self.bm()[field::TTL] = self.ttl().saturating_sub(1);
        let new = self.u16_at(8..10);
        let c = checksum::update_word(self.checksum(), old, new);
        self.set_checksum(c);
    }
    /// Rewrites the source address with an incremental checksum update (the
    /// caller fixes the transport checksum, which covers it too).
    pub fn set_src(&mut self, ip: Ipv4Addr) {
        let c = checksum::update_u32(self.checksum(), u32::from(self.src()), u32::from(ip));
        self.bm()[field::SRC].copy_from_slice(&ip.octets());
        self.set_checksum(c);
    }
    /// Rewrites the destination address, as [`Ipv4Packet::set_src`].
    pub fn set_dst(&mut self, ip: Ipv4Addr) {
        let c = checksum::update_u32(self.checksum(), u32::from(self.dst()), u32::from(ip));
        self.bm()[field::DST].copy_from_slice(&ip.octets());
        self.set_checksum(c);
    }
    /// Recomputes the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len();
        let c = checksum::checksum(&self.b()[..hl]);
        self.set_checksum(c);
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (h, t) = (self.header_len(), self.total_len());
        &mut self.bm()[h..t]
    }
}

impl<T: AsRef<[u8]>> fmt::Display for Ipv4Packet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IPv4 {} > {} proto {} ttl {} len {}",
            self.src(),
            self.dst(),
            self.protocol(),
            self.ttl(),
            self.total_len()
        )
    }
}

/// The header of an IPv4 packet an element originates (no options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    pub ident: u16,
    pub dont_frag: bool,
    pub payload_len: usize,
}

impl Ipv4Repr {
    pub fn buffer_len(&self) -> usize {
        MIN_HEADER_LEN
    }
    /// Appends the 20-byte header with its checksum.
    pub fn emit(&self, buf: &mut Vec<u8>) {
        let total = (MIN_HEADER_LEN + self.payload_len).min(usize::from(u16::MAX)) as u16;
        let flags: u16 = if self.dont_frag { 0x4000 } else { 0 };
        let ([t0, t1], [i0, i1], [f0, f1]) = (
            total.to_be_bytes(),
            self.ident.to_be_bytes(),
            flags.to_be_bytes(),
        );
        let ([s0, s1, s2, s3], [d0, d1, d2, d3]) = (self.src.octets(), self.dst.octets());
        let mut h = [
            0x45,
            0,
            t0,
            t1,
            i0,
            i1,
            f0,
            f1,
            self.ttl,
            self.protocol,
            0,
            0,
            s0,
            s1,
            s2,
            s3,
            d0,
            d1,
            d2,
            d3,
        ];
        let [c0, c1] = checksum::checksum(&h).to_be_bytes();
        (h[10], h[11]) = (c0, c1);
        buf.extend_from_slice(&h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // scapy: bytes(IP(src="192.0.2.1", dst="192.0.2.2", id=0x3c6b, flags="DF",
    //   ttl=64, proto=1)/Raw(b"\x00" * 4))
    const PKT: [u8; 24] = [
        0x45, 0x00, 0x00, 0x18, 0x3c, 0x6b, 0x40, 0x00, 0x40, 0x01, 0x7a, 0x76, 0xc0, 0x00, 0x02,
        0x01, 0xc0, 0x00, 0x02, 0x02, 0, 0, 0, 0,
    ];

    #[test]
    fn view_reads_scapy_packet_and_repr_emits_the_same_header() {
        let p = Ipv4Packet::new_checked(&PKT[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!((p.ttl(), p.protocol(), p.total_len()), (64, 1, 24));
        assert!(p.dont_frag());
        let r = Ipv4Repr {
            src: p.src(),
            dst: p.dst(),
            protocol: 1,
            ttl: 64,
            ident: 0x3c6b,
            dont_frag: true,
            payload_len: 4,
        };
        let mut b = vec![];
        r.emit(&mut b);
        assert_eq!(b, PKT[..20]);
    }

    #[test]
    fn ttl_decrement_and_nat_rewrites_keep_the_checksum_valid() {
        let mut b = PKT;
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.decrement_ttl();
        p.set_src(Ipv4Addr::new(198, 51, 100, 130));
        p.set_dst(Ipv4Addr::new(203, 0, 113, 24));
        assert_eq!(p.ttl(), 63);
        assert!(p.verify_checksum());
    }

    #[test]
    fn malformed_headers_are_refused() {
        assert_eq!(
            Ipv4Packet::new_checked(&PKT[..19]).err(),
            Some(Ipv4Error::Truncated)
        );
        let mut b = PKT;
        b[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).err(),
            Some(Ipv4Error::Version)
        );
        let mut b = PKT;
        b[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).err(),
            Some(Ipv4Error::HeaderLen)
        );
        let mut b = PKT;
        b[0] = 0x4f; // 60-byte header in a 24-byte packet
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).err(),
            Some(Ipv4Error::HeaderLen)
        );
        let mut b = PKT;
        b[3] = 0x40; // claims 64 bytes
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).err(),
            Some(Ipv4Error::TotalLen)
        );
        // Ethernet padding past total_len is fine and excluded from the payload.
        let mut padded = PKT.to_vec();
        padded.extend_from_slice(&[0; 22]);
        assert_eq!(
            Ipv4Packet::new_checked(&padded[..])
                .unwrap()
                .payload()
                .len(),
            4
        );
    }

    proptest::proptest! {
        #[test]
        fn repr_emits_a_header_the_view_reads_back(src in proptest::prelude::any::<u32>(), dst in proptest::prelude::any::<u32>(),
                                                   protocol in proptest::prelude::any::<u8>(), ttl in proptest::prelude::any::<u8>(),
                                                   ident in proptest::prelude::any::<u16>(), dont_frag in proptest::prelude::any::<bool>(),
                                                   payload_len in 0usize..1500) {
            let r = Ipv4Repr { src: src.into(), dst: dst.into(), protocol, ttl, ident, dont_frag, payload_len };
            let mut b = vec![];
            r.emit(&mut b);
            b.resize(b.len() + payload_len, 0);
            let p = Ipv4Packet::new_checked(&b[..]).unwrap();
            proptest::prop_assert!(p.verify_checksum());
            let back = Ipv4Repr { src: p.src(), dst: p.dst(), protocol: p.protocol(), ttl: p.ttl(), ident: p.ident(),
                                  dont_frag: p.dont_frag(), payload_len: p.payload().len() };
            proptest::prop_assert_eq!(back, r);
        }

        #[test]
        fn new_checked_never_panics_and_accessors_stay_in_bounds(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)) {
            if let Ok(p) = Ipv4Packet::new_checked(&b[..]) {
                let _ = (p.payload(), p.header(), p.packet(), p.verify_checksum(), p.frag_offset(), p.to_string());
            }
        }
    }
}
