//! GTP-U, the user-plane tunnel of the mobile core, over UDP port 2152.
//!
//! Read 3GPP TS 29.281 first: § 5.1 for the header (version 1, PT = 1, the
//! E/S/PN flags and the four optional octets they bring), § 5.2 for the
//! extension header chain and the comprehension rules of its type byte
//! (§ 5.2.1), § 7 for the path management and tunnel management messages
//! (Echo Request/Response with the Recovery IE, Error Indication, End
//! Marker) and § 8 for their information elements.
//!
//! The lab's eNodeB, SGW and PGW are tunnel endpoints, so an extension
//! header this module does not understand is skipped when its type says
//! comprehension is not required, and rejects the message when it says it is.

use std::fmt;
use std::net::Ipv4Addr;

/// The UDP port of GTP-U [3GPP TS 29.281 § 4.4.2.0].
pub const PORT: u16 = 2152;

/// The mandatory part of the header: flags, type, length, TEID.
pub const HEADER_LEN: usize = 8;
/// The header when any of E, S, PN is set: sequence, N-PDU, next extension type.
pub const LONG_HEADER_LEN: usize = 12;

mod field {
    use std::ops::Range;
    pub const FLAGS: usize = 0;
    pub const MSG_TYPE: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const TEID: Range<usize> = 4..8;
    pub const SEQ: Range<usize> = 8..10;
    pub const NPDU: usize = 10;
    pub const NEXT_EXT: usize = 11;
}

const FLAG_PT: u8 = 0x10;
const FLAG_E: u8 = 0x04;
const FLAG_S: u8 = 0x02;
const FLAG_PN: u8 = 0x01;

/// A tunnel endpoint identifier [3GPP TS 29.281 § 5.1].
#[derive(
    Copy,
    Clone,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Debug,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Teid(pub u32);

impl fmt::Display for Teid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:08x}", self.0)
    }
}

/// GTP-U message types [3GPP TS 29.281 § 6.1, Table 6.1-1].
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum MessageType {
    EchoRequest,
    EchoResponse,
    ErrorIndication,
    SupportedExtensionHeadersNotification,
    EndMarker,
    /// A T-PDU (the user's packet) in its tunnel.
    GPdu,
    Unknown(u8),
}

impl From<u8> for MessageType {
    fn from(v: u8) -> MessageType {
        match v {
            1 => MessageType::EchoRequest,
            2 => MessageType::EchoResponse,
            26 => MessageType::ErrorIndication,
            31 => MessageType::SupportedExtensionHeadersNotification,
            254 => MessageType::EndMarker,
            255 => MessageType::GPdu,
            n => MessageType::Unknown(n),
        }
    }
}

impl From<MessageType> for u8 {
    fn from(t: MessageType) -> u8 {
        match t {
            MessageType::EchoRequest => 1,
            MessageType::EchoResponse => 2,
            MessageType::ErrorIndication => 26,
            MessageType::SupportedExtensionHeadersNotification => 31,
            MessageType::EndMarker => 254,
            MessageType::GPdu => 255,
            MessageType::Unknown(n) => n,
        }
    }
}

/// Extension header types this module knows [3GPP TS 29.281 § 5.2.1,
/// Figure 5.2.1-3]. They are skipped, not interpreted; knowing them only
/// means a "comprehension required" bit on them does not reject the message.
pub mod ext {
    /// Last in the chain.
    pub const NONE: u8 = 0x00;
    /// UDP Port (in Error Indication) [§ 5.2.2.1].
    pub const UDP_PORT: u8 = 0x40;
    /// PDU Session Container (5G QFI) [§ 5.2.2.7; TS 38.415].
    pub const PDU_SESSION_CONTAINER: u8 = 0x85;
    /// PDCP PDU Number [§ 5.2.2.2].
    pub const PDCP_PDU_NUMBER: u8 = 0xc0;
    pub const KNOWN: &[u8] = &[UDP_PORT, PDU_SESSION_CONTAINER, PDCP_PDU_NUMBER];
}

/// Why bytes are not a GTP-U message this lab accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GtpuError {
    #[error("shorter than the GTP-U header")]
    Truncated,
    #[error("not GTP version 1 with PT = 1")]
    Version,
    #[error("length field disagrees with the packet")]
    Length,
    #[error("extension header runs past the packet or has length 0")]
    Extension,
    #[error("extension header {0:#04x} must be comprehended and is not known")]
    UnknownRequiredExtension(u8),
}

/// A view of a GTP-U message (the UDP payload). After
/// [`GtpuPacket::new_checked`] no accessor panics: the length field matches
/// the buffer exactly and the extension chain ends inside it.
#[derive(Debug, Clone)]
pub struct GtpuPacket<T: AsRef<[u8]>> {
    buffer: T,
    /// Where the payload starts (after the optional fields and extensions).
    payload_at: usize,
}

impl<T: AsRef<[u8]>> GtpuPacket<T> {
    /// Checks version, PT, the length field against the buffer (strictly:
    /// UDP carries exactly one message), the optional fields and the
    /// extension chain with its comprehension rules [§ 5.2.1].
    pub fn new_checked(buffer: T) -> Result<Self, GtpuError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(GtpuError::Truncated);
        }
        if b[field::FLAGS] >> 5 != 1 || b[field::FLAGS] & FLAG_PT == 0 {
            return Err(GtpuError::Version);
        }
        let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
        if HEADER_LEN + len != b.len() {
            return Err(GtpuError::Length);
        }
        let mut at = HEADER_LEN;
        if b[field::FLAGS] & (FLAG_E | FLAG_S | FLAG_PN) != 0 {
            if b.len() < LONG_HEADER_LEN {
                return Err(GtpuError::Length);
            }
            at = LONG_HEADER_LEN;
            if b[field::FLAGS] & FLAG_E != 0 {
                let mut next = b[field::NEXT_EXT];
                while next != ext::NONE {
                    // Bits 8-7 of the type: 1x = comprehension required by the endpoint.
                    if next & 0x80 != 0 && !ext::KNOWN.contains(&next) {
                        return Err(GtpuError::UnknownRequiredExtension(next));
                    }
                    let units = usize::from(*b.get(at).ok_or(GtpuError::Extension)?);
                    let end = at + 4 * units;
                    if units == 0 || end > b.len() {
                        return Err(GtpuError::Extension);
                    }
                    next = b[end - 1];
                    at = end;
                }
            }
        }
        Ok(GtpuPacket {
            buffer,
            payload_at: at,
        })
    }
    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    fn flags(&self) -> u8 {
        self.b()[field::FLAGS]
    }
    pub fn message_type(&self) -> MessageType {
        self.b()[field::MSG_TYPE].into()
    }
    /// The length field: octets after the mandatory 8.
    pub fn length(&self) -> u16 {
        let b = &self.b()[field::LENGTH];
        u16::from_be_bytes([b[0], b[1]])
    }
    pub fn teid(&self) -> Teid {
        let b = &self.b()[field::TEID];
        Teid(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// The sequence number when S is set.
    pub fn seq(&self) -> Option<u16> {
        (self.flags() & FLAG_S != 0).then(|| {
            let b = &self.b()[field::SEQ];
            u16::from_be_bytes([b[0], b[1]])
        })
    }
    /// The N-PDU number when PN is set.
    pub fn npdu(&self) -> Option<u8> {
        (self.flags() & FLAG_PN != 0).then(|| self.b()[field::NPDU])
    }
    /// The extension headers, each as (type, content without length and next-type octets).
    pub fn extensions(&self) -> impl Iterator<Item = (u8, &[u8])> {
        let b = self.b();
        let mut next = if self.flags() & FLAG_E != 0 {
            b[field::NEXT_EXT]
        } else {
            ext::NONE
        };
        let mut at = LONG_HEADER_LEN;
        std::iter::from_fn(move || {
            if next == ext::NONE {
                return None;
            }
            let end = at + 4 * usize::from(b[at]);
            let item = (next, &b[at + 1..end - 1]);
            next = b[end - 1];
            at = end;
            Some(item)
        })
    }
    /// What follows the header: a T-PDU for a G-PDU, IEs for the others.
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.payload_at..]
    }
    pub fn header_len(&self) -> usize {
        self.payload_at
    }
}

impl<T: AsRef<[u8]>> fmt::Display for GtpuPacket<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "GTP-U {:?} teid {} len {}",
            self.message_type(),
            self.teid(),
            self.length()
        )?;
        if let Some(s) = self.seq() {
            write!(f, " seq {s}")?;
        }
        Ok(())
    }
}

/// One extension header: its type and content (4n − 2 octets) [§ 5.2.1].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    pub ty: u8,
    pub content: Vec<u8>,
}

/// A parsed GTP-U header; the payload follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GtpuRepr {
    pub message_type: MessageType,
    pub teid: Teid,
    pub seq: Option<u16>,
    pub npdu: Option<u8>,
    pub extensions: Vec<Extension>,
    pub payload_len: usize,
}

impl GtpuRepr {
    /// A G-PDU header with no optional fields, as the lab's elements send.
    pub fn g_pdu(teid: Teid, payload_len: usize) -> GtpuRepr {
        GtpuRepr {
            message_type: MessageType::GPdu,
            teid,
            seq: None,
            npdu: None,
            extensions: Vec::new(),
            payload_len,
        }
    }

    pub fn parse<T: AsRef<[u8]>>(p: &GtpuPacket<T>) -> GtpuRepr {
        GtpuRepr {
            message_type: p.message_type(),
            teid: p.teid(),
            seq: p.seq(),
            npdu: p.npdu(),
            extensions: p
                .extensions()
                .map(|(ty, c)| Extension {
                    ty,
                    content: c.to_vec(),
                })
                .collect(),
            payload_len: p.payload().len(),
        }
    }

    fn long(&self) -> bool {
        self.seq.is_some() || self.npdu.is_some() || !self.extensions.is_empty()
    }

    /// The header's length, extensions included.
    pub fn buffer_len(&self) -> usize {
        if self.long() {
            LONG_HEADER_LEN
                + self
                    .extensions
                    .iter()
                    .map(|e| (e.content.len() + 2).div_ceil(4) * 4)
                    .sum::<usize>()
        } else {
            HEADER_LEN
        }
    }

    /// Appends the header (the caller appends `payload_len` payload octets).
    /// Extension contents are padded with zeros to a multiple of 4 − 2 octets.
    pub fn emit(&self, buf: &mut Vec<u8>) {
        let mut flags = 0x20 | FLAG_PT;
        if !self.extensions.is_empty() {
            flags |= FLAG_E;
        }
        if self.seq.is_some() {
            flags |= FLAG_S;
        }
        if self.npdu.is_some() {
            flags |= FLAG_PN;
        }
        let len =
            (self.buffer_len() - HEADER_LEN + self.payload_len).min(usize::from(u16::MAX)) as u16;
        buf.extend_from_slice(&[flags, self.message_type.into()]);
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(&self.teid.0.to_be_bytes());
        if self.long() {
            buf.extend_from_slice(&self.seq.unwrap_or(0).to_be_bytes());
            buf.push(self.npdu.unwrap_or(0));
            buf.push(self.extensions.first().map_or(ext::NONE, |e| e.ty));
            for (i, e) in self.extensions.iter().enumerate() {
                let units = (e.content.len() + 2).div_ceil(4);
                buf.push(units as u8);
                buf.extend_from_slice(&e.content);
                buf.resize(buf.len() + units * 4 - 2 - e.content.len(), 0);
                buf.push(self.extensions.get(i + 1).map_or(ext::NONE, |n| n.ty));
            }
        }
    }
}

impl fmt::Display for GtpuRepr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GTP-U {:?} teid {}", self.message_type, self.teid)
    }
}

/// Information elements of the path and tunnel management messages [§ 8].
pub mod ie {
    use super::*;

    /// Recovery (TV, 1 octet restart counter; sent as 0 in GTP-U) [§ 8.2].
    pub const RECOVERY: u8 = 14;
    /// Tunnel Endpoint Identifier Data I (TV, 4 octets) [§ 8.3].
    pub const TEID_DATA_I: u8 = 16;
    /// GTP-U Peer Address (TLV) [§ 8.4].
    pub const PEER_ADDRESS: u8 = 133;

    /// The Echo Response's IEs: Recovery with restart counter 0 [§ 7.2.2].
    pub fn emit_echo_response(buf: &mut Vec<u8>) {
        buf.extend_from_slice(&[RECOVERY, 0]);
    }

    /// The Error Indication's IEs: the TEID the sender did not know and its
    /// own address [§ 7.3.1].
    pub fn emit_error_indication(buf: &mut Vec<u8>, teid: Teid, peer: Ipv4Addr) {
        buf.push(TEID_DATA_I);
        buf.extend_from_slice(&teid.0.to_be_bytes());
        buf.extend_from_slice(&[PEER_ADDRESS, 0, 4]);
        buf.extend_from_slice(&peer.octets());
    }

    /// The TEID an Error Indication's payload names, if well formed.
    pub fn error_indication_teid(payload: &[u8]) -> Option<Teid> {
        match payload {
            [TEID_DATA_I, a, b, c, d, ..] => Some(Teid(u32::from_be_bytes([*a, *b, *c, *d]))),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex;
    use proptest::prelude::*;

    // Golden bytes from scapy 2.x (/usr/bin/python3, scapy.contrib.gtp):
    // bytes(GTP_U_Header(teid=0x1001, gtp_type=255)/IP(src="10.45.0.2",
    //   dst="192.0.2.100", id=1)/ICMP(id=7, seq=1)).hex()
    const G_PDU: &str = "30ff001c000010014500001c000100004001ae4d0a2d0002c00002640800f7f700070001";
    // bytes(GTP_U_Header(teid=0, gtp_type=1, S=1, seq=0x1234))
    const ECHO_REQUEST: &str = "320100040000000012340000";
    // bytes(GTP_U_Header(teid=0, gtp_type=2, S=1, seq=0x1234)/IE_Recovery(restart_counter=0))
    const ECHO_RESPONSE: &str = "3202000600000000123400000e00";
    // bytes(GTP_U_Header(teid=0, gtp_type=26, S=1, seq=0)/IE_TEIDI(TEIDI=0x2002)
    //   /IE_GSNAddress(length=4, ipv4_address="172.16.1.1"))
    const ERROR_INDICATION: &str = "321a001000000000000000001000002002850004ac100101";
    // bytes(GTP_U_Header(teid=0x1001, gtp_type=254))
    const END_MARKER: &str = "30fe000000001001";
    // bytes(GTP_U_Header(teid=0x1001, gtp_type=255, E=1, next_ex=0x85)
    //   /GTPPDUSessionContainer(type=0, QFI=9)/IP(...)/ICMP(...)) as in G_PDU
    const G_PDU_WITH_PDU_SESSION: &str =
        "34ff00240000100100000085010009004500001c000100004001ae4d0a2d0002c00002640800f7f700070001";
    // bytes(GTP_U_Header(teid=0x1001, gtp_type=255, PN=1, npdu=0x42)/IP(...)/ICMP(...))
    const G_PDU_WITH_NPDU: &str =
        "31ff002000001001000042004500001c000100004001ae4d0a2d0002c00002640800f7f700070001";

    #[test]
    fn a_g_pdu_from_scapy_parses_and_reemits_byte_for_byte() {
        let b = hex(G_PDU);
        let p = GtpuPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.message_type(), MessageType::GPdu);
        assert_eq!(p.teid(), Teid(0x1001));
        assert_eq!((p.seq(), p.npdu()), (None, None));
        assert_eq!(p.payload(), &b[8..]);
        let r = GtpuRepr::parse(&p);
        assert_eq!(r, GtpuRepr::g_pdu(Teid(0x1001), 28));
        let mut out = Vec::new();
        r.emit(&mut out);
        out.extend_from_slice(p.payload());
        assert_eq!(out, b);
        assert_eq!(p.to_string(), "GTP-U GPdu teid 0x00001001 len 28");
    }

    #[test]
    fn path_and_tunnel_management_messages_round_trip() {
        for (h, ty, seq) in [
            (ECHO_REQUEST, MessageType::EchoRequest, Some(0x1234)),
            (ECHO_RESPONSE, MessageType::EchoResponse, Some(0x1234)),
            (ERROR_INDICATION, MessageType::ErrorIndication, Some(0)),
            (END_MARKER, MessageType::EndMarker, None),
        ] {
            let b = hex(h);
            let p = GtpuPacket::new_checked(&b[..]).unwrap();
            assert_eq!((p.message_type(), p.seq()), (ty, seq), "{h}");
            let mut out = Vec::new();
            GtpuRepr::parse(&p).emit(&mut out);
            out.extend_from_slice(p.payload());
            assert_eq!(out, b, "{h}");
        }
    }

    #[test]
    fn our_echo_response_and_error_indication_match_scapy() {
        let mut b = Vec::new();
        GtpuRepr {
            seq: Some(0x1234),
            payload_len: 2,
            ..GtpuRepr::g_pdu(Teid(0), 0)
        }
        .clone_with(MessageType::EchoResponse)
        .emit(&mut b);
        ie::emit_echo_response(&mut b);
        assert_eq!(b, hex(ECHO_RESPONSE));
        let mut b = Vec::new();
        GtpuRepr {
            seq: Some(0),
            payload_len: 12,
            ..GtpuRepr::g_pdu(Teid(0), 0)
        }
        .clone_with(MessageType::ErrorIndication)
        .emit(&mut b);
        ie::emit_error_indication(&mut b, Teid(0x2002), Ipv4Addr::new(172, 16, 1, 1));
        assert_eq!(b, hex(ERROR_INDICATION));
        let p = GtpuPacket::new_checked(&b[..]).unwrap();
        assert_eq!(ie::error_indication_teid(p.payload()), Some(Teid(0x2002)));
    }

    #[test]
    fn optional_fields_and_a_known_extension_are_skipped_to_the_t_pdu() {
        let b = hex(G_PDU_WITH_PDU_SESSION);
        let p = GtpuPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.header_len(), 16);
        assert_eq!(p.payload()[0], 0x45);
        let exts: Vec<_> = p.extensions().collect();
        assert_eq!(exts, vec![(0x85, &[0x00, 0x09][..])]);
        let mut out = Vec::new();
        GtpuRepr::parse(&p).emit(&mut out);
        out.extend_from_slice(p.payload());
        assert_eq!(out, b);
        let b = hex(G_PDU_WITH_NPDU);
        let p = GtpuPacket::new_checked(&b[..]).unwrap();
        assert_eq!(
            (p.npdu(), p.header_len(), p.payload()[0]),
            (Some(0x42), 12, 0x45)
        );
    }

    #[test]
    fn extension_comprehension_follows_the_type_bits() {
        let mut b = hex(G_PDU_WITH_PDU_SESSION);
        // 0x05: bits 00, comprehension not required: skipped.
        b[11] = 0x05;
        assert_eq!(GtpuPacket::new_checked(&b[..]).unwrap().payload()[0], 0x45);
        // 0x45: bits 01, not required either.
        b[11] = 0x45;
        assert!(GtpuPacket::new_checked(&b[..]).is_ok());
        // 0x86 and 0xc5: required by the endpoint, unknown: rejected.
        for t in [0x86, 0xc5] {
            b[11] = t;
            assert_eq!(
                GtpuPacket::new_checked(&b[..]).unwrap_err(),
                GtpuError::UnknownRequiredExtension(t)
            );
        }
    }

    #[test]
    fn bad_lengths_and_truncated_extensions_are_refused() {
        let b = hex(G_PDU);
        assert_eq!(
            GtpuPacket::new_checked(&b[..7]).unwrap_err(),
            GtpuError::Truncated
        );
        assert_eq!(
            GtpuPacket::new_checked(&b[..b.len() - 1]).unwrap_err(),
            GtpuError::Length
        );
        let mut longer = b.clone();
        longer.push(0);
        assert_eq!(
            GtpuPacket::new_checked(&longer[..]).unwrap_err(),
            GtpuError::Length
        );
        let mut v0 = b.clone();
        v0[0] = 0x10;
        assert_eq!(
            GtpuPacket::new_checked(&v0[..]).unwrap_err(),
            GtpuError::Version
        );
        // scapy: GTP_U_Header(E=1, next_ex=0x85)/GTPPDUSessionContainer(QFI=9), no T-PDU;
        // then the container's length octet claims 2 units (8 octets) where 4 remain.
        let mut t = hex("34ff0008000010010000008501000900");
        assert!(GtpuPacket::new_checked(&t[..]).is_ok());
        t[12] = 2;
        assert_eq!(
            GtpuPacket::new_checked(&t[..]).unwrap_err(),
            GtpuError::Extension
        );
        t[12] = 0;
        assert_eq!(
            GtpuPacket::new_checked(&t[..]).unwrap_err(),
            GtpuError::Extension
        );
        // E set with the length field ending before the next-type octet.
        let e = hex("34ff000200001001aaaa");
        assert_eq!(
            GtpuPacket::new_checked(&e[..]).unwrap_err(),
            GtpuError::Length
        );
    }

    impl GtpuRepr {
        fn clone_with(&self, t: MessageType) -> GtpuRepr {
            GtpuRepr {
                message_type: t,
                ..self.clone()
            }
        }
    }

    fn ext_strategy() -> impl Strategy<Value = Extension> {
        (
            proptest::sample::select(vec![0x05u8, 0x40, 0x45, 0x85, 0xc0]),
            (0usize..3).prop_flat_map(|n| proptest::collection::vec(any::<u8>(), 4 * n + 2)),
        )
            .prop_map(|(ty, content)| Extension { ty, content })
    }

    proptest! {
        #[test]
        fn repr_round_trips(ty in any::<u8>(), teid in any::<u32>(), seq in proptest::option::of(any::<u16>()),
                            npdu in proptest::option::of(any::<u8>()),
                            exts in proptest::collection::vec(ext_strategy(), 0..3),
                            payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let r = GtpuRepr { message_type: ty.into(), teid: Teid(teid), seq, npdu, extensions: exts, payload_len: payload.len() };
            let mut b = Vec::new();
            r.emit(&mut b);
            prop_assert_eq!(b.len(), r.buffer_len());
            b.extend_from_slice(&payload);
            let p = GtpuPacket::new_checked(&b[..]).unwrap();
            prop_assert_eq!(p.payload(), &payload[..]);
            let back = GtpuRepr::parse(&p);
            prop_assert_eq!(back.message_type, r.message_type);
            prop_assert_eq!(back.teid, r.teid);
            prop_assert_eq!(&back.extensions, &r.extensions);
            prop_assert_eq!(back.seq, r.seq);
            prop_assert_eq!(back.npdu, r.npdu);
        }

        #[test]
        fn no_input_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(p) = GtpuPacket::new_checked(&b[..]) {
                let _ = (p.extensions().count(), p.payload().len(), p.seq(), p.npdu(), p.to_string());
            }
        }
    }
}
