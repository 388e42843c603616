//! ARP for IPv4 over Ethernet [RFC 826].

use crate::ethernet::{self, EtherType};
use crate::MacAddr;
use std::fmt;
use std::net::Ipv4Addr;

/// Length of an Ethernet/IPv4 ARP packet (without the Ethernet header).
pub const PACKET_LEN: usize = 28;

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum ArpOp {
    Request,
    Reply,
    Unknown(u16),
}

impl From<u16> for ArpOp {
    fn from(v: u16) -> Self {
        match v {
            1 => ArpOp::Request,
            2 => ArpOp::Reply,
            n => ArpOp::Unknown(n),
        }
    }
}

impl From<ArpOp> for u16 {
    fn from(v: ArpOp) -> u16 {
        match v {
            ArpOp::Request => 1,
            ArpOp::Reply => 2,
            ArpOp::Unknown(n) => n,
        }
    }
}

/// Why bytes are not an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ArpError {
    /// shorter than 28 bytes
    #[error("ARP packet shorter than 28 bytes")]
    Truncated,
    /// hardware type, protocol type or address lengths are not Ethernet/IPv4
    #[error("ARP packet is not Ethernet/IPv4")]
    NotEthernetIpv4,
}

/// A parsed Ethernet/IPv4 ARP packet.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct ArpRepr {
    pub op: ArpOp,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

impl ArpRepr {
    /// Parses the ARP payload of an Ethernet frame (trailing padding allowed).
    pub fn parse(b: &[u8]) -> Result<ArpRepr, ArpError> {
        let b = b.get(..PACKET_LEN).ok_or(ArpError::Truncated)?;
        // htype 1 (Ethernet), ptype 0x0800, hlen 6, plen 4
        if b[0..6] != [0, 1, 8, 0, 6, 4] {
            return Err(ArpError::NotEthernetIpv4);
        }
        let ip = |r: std::ops::Range<usize>| {
            Ipv4Addr::new(b[r.start], b[r.start + 1], b[r.start + 2], b[r.start + 3])
        };
        Ok(ArpRepr {
            op: ArpOp::from(u16::from_be_bytes([b[6], b[7]])),
            sender_mac: MacAddr::from_slice(&b[8..14]).unwrap_or_default(),
            sender_ip: ip(14..18),
            target_mac: MacAddr::from_slice(&b[18..24]).unwrap_or_default(),
            target_ip: ip(24..28),
        })
    }

    pub fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    /// Appends the 28-byte ARP packet to `buf`.
    pub fn emit(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&[0, 1, 8, 0, 6, 4]);
        buf.extend_from_slice(&u16::from(self.op).to_be_bytes());
        buf.extend_from_slice(&self.sender_mac.0);
        buf.extend_from_slice(&self.sender_ip.octets());
        buf.extend_from_slice(&self.target_mac.0);
        buf.extend_from_slice(&self.target_ip.octets());
    }

    /// Appends a whole Ethernet frame carrying this ARP packet: requests are
    /// broadcast, replies go to the target.
    pub fn emit_frame(&self, buf: &mut Vec<u8>) {
        let dst = match self.op {
            ArpOp::Request => MacAddr::BROADCAST,
            _ => self.target_mac,
        };
        ethernet::emit_header(buf, dst, self.sender_mac, EtherType::Arp);
        self.emit(buf);
    }

    /// A who-has request from `(mac, ip)` for `target`.
    pub fn request(mac: MacAddr, ip: Ipv4Addr, target: Ipv4Addr) -> ArpRepr {
        ArpRepr {
            op: ArpOp::Request,
            sender_mac: mac,
            sender_ip: ip,
            target_mac: MacAddr::ZERO,
            target_ip: target,
        }
    }

    /// The reply to this request, saying `target_ip` is at `mac`.
    pub fn reply_from(&self, mac: MacAddr) -> ArpRepr {
        ArpRepr {
            op: ArpOp::Reply,
            sender_mac: mac,
            sender_ip: self.target_ip,
            target_mac: self.sender_mac,
            target_ip: self.sender_ip,
        }
    }
}

impl fmt::Display for ArpRepr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.op {
            ArpOp::Request => write!(
                f,
                "ARP who-has {} tell {} ({})",
                self.target_ip, self.sender_ip, self.sender_mac
            ),
            ArpOp::Reply => write!(f, "ARP {} is-at {}", self.sender_ip, self.sender_mac),
            ArpOp::Unknown(n) => write!(f, "ARP op {n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // scapy: bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:00:01")/
    //   ARP(op=1, hwsrc="02:00:00:00:00:01", psrc="10.45.0.2", pdst="10.45.0.1"))
    const REQUEST_FRAME: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08,
        0x06, // ethernet
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // htype ptype hlen plen op
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x0a, 0x2d, 0x00, 0x02, // sender
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x2d, 0x00, 0x01, // target
    ];

    #[test]
    fn request_matches_scapy_bytes_both_ways() {
        let r = ArpRepr::parse(&REQUEST_FRAME[14..]).unwrap();
        let want = ArpRepr::request(
            MacAddr([2, 0, 0, 0, 0, 1]),
            Ipv4Addr::new(10, 45, 0, 2),
            Ipv4Addr::new(10, 45, 0, 1),
        );
        assert_eq!(r, want);
        let mut b = vec![];
        want.emit_frame(&mut b);
        assert_eq!(b, REQUEST_FRAME);
    }

    #[test]
    fn truncated_and_foreign_arp_is_refused() {
        assert_eq!(
            ArpRepr::parse(&REQUEST_FRAME[14..41]),
            Err(ArpError::Truncated)
        );
        let mut b = REQUEST_FRAME;
        b[15] = 6; // htype 6 (IEEE 802)
        assert_eq!(ArpRepr::parse(&b[14..]), Err(ArpError::NotEthernetIpv4));
    }

    #[test]
    fn reply_swaps_sender_and_target() {
        let r = ArpRepr::parse(&REQUEST_FRAME[14..])
            .unwrap()
            .reply_from(MacAddr([2, 0, 0, 0, 0, 9]));
        assert_eq!(r.op, ArpOp::Reply);
        assert_eq!(r.sender_ip, Ipv4Addr::new(10, 45, 0, 1));
        assert_eq!(r.target_mac, MacAddr([2, 0, 0, 0, 0, 1]));
    }

    proptest::proptest! {
        #[test]
        fn emit_then_parse_round_trips(op in 0u16..4, sm in proptest::prelude::any::<[u8; 6]>(), si in proptest::prelude::any::<u32>(),
                                       tm in proptest::prelude::any::<[u8; 6]>(), ti in proptest::prelude::any::<u32>()) {
            let r = ArpRepr { op: ArpOp::from(op), sender_mac: MacAddr(sm), sender_ip: si.into(), target_mac: MacAddr(tm), target_ip: ti.into() };
            let mut b = vec![];
            r.emit(&mut b);
            proptest::prop_assert_eq!(b.len(), r.buffer_len());
            proptest::prop_assert_eq!(ArpRepr::parse(&b), Ok(r));
        }
    }
}
