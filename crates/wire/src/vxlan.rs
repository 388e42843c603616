//! VXLAN, the overlay of the data centre, over UDP port 4789.
//!
//! Read RFC 7348 first: § 5 for the header (8 octets: flags with the I flag
//! that must be 1 for a valid VNI, 24 reserved bits, the 24-bit VNI, 8
//! reserved bits; "Reserved fields MUST be set to zero on transmission and
//! ignored on receipt"), § 4.1–4.2 for what a VTEP does with the inner
//! frame (learning, head-end replication) and § 5 again for the outer UDP
//! source port, "calculated using a hash of fields from the inner packet".
//!
//! The payload is the VM's whole Ethernet frame, without its FCS.

use std::fmt;

/// The UDP destination port IANA assigned to VXLAN [RFC 7348 § 5].
pub const PORT: u16 = 4789;

/// The VXLAN header: flags, reserved, VNI, reserved [RFC 7348 § 5].
pub const HEADER_LEN: usize = 8;

/// What encapsulation adds to a VM's frame on the underlay's IP layer:
/// outer IPv4 (20) + UDP (8) + VXLAN (8) + the inner Ethernet header (14).
/// A 1500-byte underlay therefore leaves 1450 for the VM's IP packets, the
/// MTU clouds hand their VMs [RFC 7348 § 4.3].
pub const OVERHEAD: usize = 20 + 8 + HEADER_LEN + 14;

mod field {
    use std::ops::Range;
    pub const FLAGS: usize = 0;
    pub const VNI: Range<usize> = 4..7;
}

/// The I flag: "MUST be set to 1 for a valid VXLAN Network ID" [RFC 7348 § 5].
const FLAG_I: u8 = 0x08;

/// A VXLAN Network Identifier, 24 bits: one per tenant's L2 segment [RFC 7348 § 5].
#[derive(
    Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "u32", into = "u32")]
pub struct Vni(u32);

/// A number that does not fit the VNI's 24 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("VNI {0} does not fit in 24 bits (0..=16777215)")]
pub struct VniRange(pub u32);

impl Vni {
    /// The largest VNI, 2^24 − 1.
    pub const MAX: u32 = 0x00ff_ffff;

    pub const fn new(v: u32) -> Option<Vni> {
        if v <= Vni::MAX {
            Some(Vni(v))
        } else {
            None
        }
    }

    pub const fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Vni {
    type Error = VniRange;
    fn try_from(v: u32) -> Result<Vni, VniRange> {
        Vni::new(v).ok_or(VniRange(v))
    }
}

impl From<Vni> for u32 {
    fn from(v: Vni) -> u32 {
        v.0
    }
}

impl fmt::Display for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why bytes are not a VXLAN packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VxlanError {
    #[error("shorter than the 8-byte VXLAN header")]
    Truncated,
    #[error("the I flag is clear, so the VNI is not valid [RFC 7348 § 5]")]
    NoInstanceFlag,
}

/// A view of a VXLAN packet (the UDP payload). After
/// [`VxlanPacket::new_checked`] no accessor panics.
#[derive(Debug, Clone)]
pub struct VxlanPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VxlanPacket<T> {
    /// Checks the length and the I flag. The reserved bits are not looked at:
    /// "ignored on receipt" [RFC 7348 § 5].
    pub fn new_checked(buffer: T) -> Result<Self, VxlanError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(VxlanError::Truncated);
        }
        if b[field::FLAGS] & FLAG_I == 0 {
            return Err(VxlanError::NoInstanceFlag);
        }
        Ok(VxlanPacket { buffer })
    }

    /// The flags octet as received (the I flag plus whatever reserved bits).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    pub fn vni(&self) -> Vni {
        let b = &self.buffer.as_ref()[field::VNI];
        Vni(u32::from_be_bytes([0, b[0], b[1], b[2]]))
    }

    /// The inner Ethernet frame.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]>> fmt::Display for VxlanPacket<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "VXLAN vni {} flags {:#04x} inner {} bytes",
            self.vni(),
            self.flags(),
            self.payload().len()
        )
    }
}

/// A parsed VXLAN header: all RFC 7348 carries is the VNI.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct VxlanRepr {
    pub vni: Vni,
}

impl VxlanRepr {
    pub fn parse<T: AsRef<[u8]>>(p: &VxlanPacket<T>) -> VxlanRepr {
        VxlanRepr { vni: p.vni() }
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Appends the header: the I flag, the VNI, every reserved bit zero
    /// [RFC 7348 § 5].
    pub fn emit(&self, buf: &mut Vec<u8>) {
        let v = self.vni.0.to_be_bytes();
        buf.extend_from_slice(&[FLAG_I, 0, 0, 0, v[1], v[2], v[3], 0]);
    }
}

impl fmt::Display for VxlanRepr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VXLAN vni {}", self.vni)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex;
    use proptest::prelude::*;

    // /usr/bin/python3 -c 'from scapy.all import *; from scapy.layers.vxlan import VXLAN;
    //   inner = Ether(dst="02:00:00:00:01:20", src="02:00:00:00:01:10")/
    //           IP(src="192.168.1.10", dst="192.168.1.20", id=1, ttl=64)/ICMP(id=1, seq=1)
    //   p = VXLAN(flags=0x08, vni=1001)/inner; p.NextProtocol = 0; print(bytes(p).hex())'
    // 08 000000 | 0003e9 (1001) | 00 | the inner frame
    const VNI_1001_PING: &str = "080000000003e90002000000012002000000011008004500001c000100004001f771c0a8010ac0a801140800f7fd00010001";

    // The same with scapy's defaults for an Ethernet payload: it writes the
    // VXLAN-GPE P flag (0x04) and next protocol 3, bits RFC 7348 reserves.
    const GPE_STYLE: &str = "0c0000030003e90002000000012002000000011008004500001c000100004001f771c0a8010ac0a801140800f7fd00010001";

    // /usr/bin/python3 -c '…; print(bytes(VXLAN(flags=0x0c, vni=0xabcdef,
    //   reserved1=0x123456, reserved2=0x78)).hex())': every reserved bit set.
    const RESERVED_SET: &str = "0c000000abcdef78";

    #[test]
    fn emit_gives_scapy_bytes() {
        let p = hex(VNI_1001_PING);
        let mut b = vec![];
        VxlanRepr {
            vni: Vni::new(1001).unwrap(),
        }
        .emit(&mut b);
        b.extend_from_slice(&p[HEADER_LEN..]);
        assert_eq!(b, p);
    }

    #[test]
    fn parse_reads_the_vni_and_the_inner_frame() {
        let p = hex(VNI_1001_PING);
        let v = VxlanPacket::new_checked(&p[..]).unwrap();
        assert_eq!(VxlanRepr::parse(&v).vni.get(), 1001);
        assert_eq!(v.payload(), &p[8..]);
        assert_eq!(
            v.to_string(),
            "VXLAN vni 1001 flags 0x08 inner 42 bytes",
            "Display"
        );
    }

    #[test]
    fn reserved_bits_are_ignored_on_receipt() {
        for s in [GPE_STYLE, RESERVED_SET] {
            let p = hex(s);
            let v = VxlanPacket::new_checked(&p[..]).unwrap();
            assert_eq!(v.payload(), &p[8..]);
        }
        let p = hex(RESERVED_SET);
        assert_eq!(
            VxlanPacket::new_checked(&p[..]).unwrap().vni().get(),
            0xabcdef
        );
        let p = hex(GPE_STYLE);
        assert_eq!(VxlanPacket::new_checked(&p[..]).unwrap().vni().get(), 1001);
    }

    #[test]
    fn the_i_flag_is_required_and_short_input_refused() {
        let mut p = hex(VNI_1001_PING);
        assert_eq!(
            VxlanPacket::new_checked(&p[..7]).unwrap_err(),
            VxlanError::Truncated
        );
        p[0] = 0x00;
        assert_eq!(
            VxlanPacket::new_checked(&p[..]).unwrap_err(),
            VxlanError::NoInstanceFlag
        );
        p[0] = 0xf7; // every bit but I
        assert_eq!(
            VxlanPacket::new_checked(&p[..]).unwrap_err(),
            VxlanError::NoInstanceFlag
        );
    }

    #[test]
    fn vni_is_24_bits_in_config_too() {
        assert_eq!(Vni::new(Vni::MAX).map(Vni::get), Some(0xff_ffff));
        assert_eq!(Vni::new(1 << 24), None);
        let ok: Vni = vni_from_config(1001).unwrap();
        assert_eq!(ok.get(), 1001);
        let err = vni_from_config(1 << 24).unwrap_err();
        assert!(err.contains("24 bits"), "{err}");
    }

    /// Deserializes a number as a `Vni` through serde's value machinery.
    fn vni_from_config(v: u32) -> Result<Vni, String> {
        use serde::de::value::{Error, U32Deserializer};
        use serde::de::IntoDeserializer;
        use serde::Deserialize;
        let d: U32Deserializer<Error> = v.into_deserializer();
        Vni::deserialize(d).map_err(|e| e.to_string())
    }

    proptest! {
        #[test]
        fn repr_round_trips(vni in 0u32..=Vni::MAX,
                            payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let r = VxlanRepr { vni: Vni::new(vni).unwrap() };
            let mut b = vec![];
            r.emit(&mut b);
            prop_assert_eq!(b.len(), r.buffer_len());
            b.extend_from_slice(&payload);
            let p = VxlanPacket::new_checked(&b[..]).unwrap();
            prop_assert_eq!(VxlanRepr::parse(&p), r);
            prop_assert_eq!(p.payload(), &payload[..]);
        }

        #[test]
        fn no_input_panics(b in proptest::collection::vec(any::<u8>(), 0..32)) {
            if let Ok(p) = VxlanPacket::new_checked(&b[..]) {
                let _ = (p.vni(), p.flags(), p.payload().len(), p.to_string());
            }
        }
    }
}
