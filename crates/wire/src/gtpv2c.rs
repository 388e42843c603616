//! GTPv2-C, the mobile core's control plane on UDP 2123: S11 between the
//! MME and the SGW, S5-C between the SGW and the PGW.
//!
//! Read 3GPP TS 29.274 first: § 5.1 for the header (version 2, the P and T
//! flags, a length that counts what follows the first four octets, the
//! TEID when T is set, a 24-bit sequence number), § 5.5–5.6 for the
//! messages, § 8.1–8.2 for the information elements (type, length,
//! instance; grouped IEs hold IEs) and § 8.3 onwards for each IE the lab
//! uses: IMSI (8.3), Cause (8.4), Recovery (8.5), APN (8.6), AMBR (8.7), EBI
//! (8.8), PAA (8.14), Bearer QoS (8.15), RAT Type (8.17), Serving Network
//! (8.18), PCO (8.13), F-TEID (8.22), Bearer Context (8.28), PDN Type (8.34), APN
//! Restriction (8.57), Selection Mode (8.58).
//!
//! Messages are read by views ([`GtpcPacket`], [`ies`]) and written by
//! [`MessageBuilder`]; what an IE holds is read and written by the small
//! functions of [`ie`].

use std::net::Ipv4Addr;

/// The UDP port of GTPv2-C [TS 29.274 § 4.2].
pub const PORT: u16 = 2123;

/// Message types [TS 29.274 Table 6.1-1].
pub mod msg {
    pub const ECHO_REQUEST: u8 = 1;
    pub const ECHO_RESPONSE: u8 = 2;
    pub const CREATE_SESSION_REQUEST: u8 = 32;
    pub const CREATE_SESSION_RESPONSE: u8 = 33;
    pub const MODIFY_BEARER_REQUEST: u8 = 34;
    pub const MODIFY_BEARER_RESPONSE: u8 = 35;
    pub const DELETE_SESSION_REQUEST: u8 = 36;
    pub const DELETE_SESSION_RESPONSE: u8 = 37;

    /// Whether a message type is a request (answered with its type + 1).
    pub fn is_request(ty: u8) -> bool {
        matches!(
            ty,
            ECHO_REQUEST | CREATE_SESSION_REQUEST | MODIFY_BEARER_REQUEST | DELETE_SESSION_REQUEST
        )
    }

    /// The name TS 29.274 (and tshark) gives a message type.
    pub fn name(ty: u8) -> &'static str {
        match ty {
            ECHO_REQUEST => "Echo Request",
            ECHO_RESPONSE => "Echo Response",
            CREATE_SESSION_REQUEST => "Create Session Request",
            CREATE_SESSION_RESPONSE => "Create Session Response",
            MODIFY_BEARER_REQUEST => "Modify Bearer Request",
            MODIFY_BEARER_RESPONSE => "Modify Bearer Response",
            DELETE_SESSION_REQUEST => "Delete Session Request",
            DELETE_SESSION_RESPONSE => "Delete Session Response",
            _ => "Unknown",
        }
    }
}

/// IE types [TS 29.274 Table 8.1-1].
pub mod ie_type {
    pub const IMSI: u8 = 1;
    pub const CAUSE: u8 = 2;
    pub const RECOVERY: u8 = 3;
    pub const APN: u8 = 71;
    pub const AMBR: u8 = 72;
    pub const EBI: u8 = 73;
    /// Protocol Configuration Options: the value part of TS 24.008
    /// § 10.5.6.3, copied from and to NAS [§ 8.13; `crate::pco`].
    pub const PCO: u8 = 78;
    pub const PAA: u8 = 79;
    pub const BEARER_QOS: u8 = 80;
    pub const RAT_TYPE: u8 = 82;
    pub const SERVING_NETWORK: u8 = 83;
    pub const FTEID: u8 = 87;
    pub const BEARER_CONTEXT: u8 = 93;
    pub const PDN_TYPE: u8 = 99;
    pub const APN_RESTRICTION: u8 = 127;
    pub const SELECTION_MODE: u8 = 128;
}

/// Cause values [TS 29.274 Table 8.4-1].
pub mod cause {
    pub const REQUEST_ACCEPTED: u8 = 16;
    pub const CONTEXT_NOT_FOUND: u8 = 64;
    pub const INVALID_MESSAGE_FORMAT: u8 = 65;
    pub const INVALID_LENGTH: u8 = 67;
    pub const MANDATORY_IE_INCORRECT: u8 = 69;
    pub const MANDATORY_IE_MISSING: u8 = 70;
    pub const SYSTEM_FAILURE: u8 = 72;
    pub const NO_RESOURCES_AVAILABLE: u8 = 73;
    pub const MISSING_OR_UNKNOWN_APN: u8 = 78;
    pub const ALL_DYNAMIC_ADDRESSES_OCCUPIED: u8 = 84;
    pub const REMOTE_PEER_NOT_RESPONDING: u8 = 100;
}

/// F-TEID interface types [TS 29.274 § 8.22].
pub mod iface {
    pub const S1U_ENODEB: u8 = 0;
    pub const S1U_SGW: u8 = 1;
    pub const S5_SGW_GTPU: u8 = 4;
    pub const S5_PGW_GTPU: u8 = 5;
    pub const S5_SGW_GTPC: u8 = 6;
    pub const S5_PGW_GTPC: u8 = 7;
    pub const S11_MME: u8 = 10;
    pub const S11_SGW: u8 = 11;
}

/// RAT Type E-UTRAN [TS 29.274 § 8.17].
pub const RAT_EUTRAN: u8 = 6;
/// PDN Type and PAA type IPv4 [TS 29.274 § 8.34, § 8.14].
pub const PDN_IPV4: u8 = 1;

/// Why bytes are not a GTPv2-C message or an IE of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GtpcError {
    #[error("shorter than the GTPv2-C header")]
    Truncated,
    #[error("version {0}, not 2")]
    Version(u8),
    #[error("the message length disagrees with the datagram")]
    Length,
    #[error("an IE's length runs past its message or group")]
    IeLength,
    #[error("an IE's value is not what its type says")]
    IeValue,
}

/// A view of a GTPv2-C message. After [`GtpcPacket::new_checked`] no
/// accessor panics; IEs are checked as they are read.
#[derive(Debug, Clone)]
pub struct GtpcPacket<T: AsRef<[u8]>> {
    buffer: T,
}

const FLAG_P: u8 = 0x10;
const FLAG_T: u8 = 0x08;

impl<T: AsRef<[u8]>> GtpcPacket<T> {
    /// Checks the version and that the length field fits the buffer
    /// (bytes beyond it, a piggybacked message, are not read).
    pub fn new_checked(buffer: T) -> Result<Self, GtpcError> {
        let b = buffer.as_ref();
        if b.len() < 8 {
            return Err(GtpcError::Truncated);
        }
        if b[0] >> 5 != 2 {
            return Err(GtpcError::Version(b[0] >> 5));
        }
        let header = if b[0] & FLAG_T != 0 { 12 } else { 8 };
        let len = 4 + usize::from(u16::from_be_bytes([b[2], b[3]]));
        if len < header || len > b.len() {
            return Err(GtpcError::Length);
        }
        Ok(GtpcPacket { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    pub fn msg_type(&self) -> u8 {
        self.b()[1]
    }
    /// Another message follows this one in the datagram [§ 5.1].
    pub fn piggybacked(&self) -> bool {
        self.b()[0] & FLAG_P != 0
    }
    /// The TEID, when the T flag says the header has one.
    pub fn teid(&self) -> Option<u32> {
        let b = self.b();
        (b[0] & FLAG_T != 0).then(|| u32::from_be_bytes([b[4], b[5], b[6], b[7]]))
    }
    fn header_len(&self) -> usize {
        if self.b()[0] & FLAG_T != 0 {
            12
        } else {
            8
        }
    }
    /// The 24-bit sequence number.
    pub fn seq(&self) -> u32 {
        let at = self.header_len() - 4;
        let b = self.b();
        u32::from_be_bytes([0, b[at], b[at + 1], b[at + 2]])
    }
    /// The message, up to its length field.
    pub fn message(&self) -> &[u8] {
        let b = self.b();
        &b[..4 + usize::from(u16::from_be_bytes([b[2], b[3]]))]
    }
    /// The IEs, encoded.
    pub fn ie_bytes(&self) -> &[u8] {
        &self.message()[self.header_len()..]
    }
}

impl<'a> GtpcPacket<&'a [u8]> {
    /// The IEs, borrowed for as long as the buffer.
    pub fn ies_ref(&self) -> impl Iterator<Item = Result<Ie<'a>, GtpcError>> + 'a {
        let b: &'a [u8] = self.buffer;
        let len = 4 + usize::from(u16::from_be_bytes([b[2], b[3]]));
        let start = if b[0] & FLAG_T != 0 { 12 } else { 8 };
        ies(&b[start..len])
    }
}

/// One information element: its type, instance and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ie<'a> {
    pub ty: u8,
    pub instance: u8,
    pub value: &'a [u8],
}

/// Reads IEs one after another (a message's, or a grouped IE's value); the
/// first malformed one ends the iteration with its error.
pub fn ies(bytes: &[u8]) -> impl Iterator<Item = Result<Ie<'_>, GtpcError>> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        if rest.len() < 4 {
            rest = &[];
            return Some(Err(GtpcError::IeLength));
        }
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
        if 4 + len > rest.len() {
            rest = &[];
            return Some(Err(GtpcError::IeLength));
        }
        let ie = Ie {
            ty: rest[0],
            instance: rest[3] & 0x0f,
            value: &rest[4..4 + len],
        };
        rest = &rest[4 + len..];
        Some(Ok(ie))
    })
}

/// The first IE of `ty` and `instance` among `bytes`, if all IEs up to it
/// read (an error otherwise).
pub fn find(bytes: &[u8], ty: u8, instance: u8) -> Result<Option<Ie<'_>>, GtpcError> {
    for ie in ies(bytes) {
        let ie = ie?;
        if ie.ty == ty && ie.instance == instance {
            return Ok(Some(ie));
        }
    }
    Ok(None)
}

/// Reading and writing what an IE holds.
pub mod ie {
    use super::GtpcError;
    use std::net::Ipv4Addr;

    /// An F-TEID with an IPv4 address [TS 29.274 § 8.22].
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Fteid {
        pub iface: u8,
        pub teid: u32,
        pub addr: Ipv4Addr,
    }

    impl Fteid {
        pub fn parse(v: &[u8]) -> Result<Fteid, GtpcError> {
            // V4 set, V6 clear: flags, TEID, IPv4.
            if v.len() < 9 || v[0] & 0x80 == 0 || v[0] & 0x40 != 0 {
                return Err(GtpcError::IeValue);
            }
            Ok(Fteid {
                iface: v[0] & 0x3f,
                teid: u32::from_be_bytes([v[1], v[2], v[3], v[4]]),
                addr: Ipv4Addr::new(v[5], v[6], v[7], v[8]),
            })
        }
        pub fn value(&self) -> [u8; 9] {
            let mut v = [0u8; 9];
            v[0] = 0x80 | (self.iface & 0x3f);
            v[1..5].copy_from_slice(&self.teid.to_be_bytes());
            v[5..].copy_from_slice(&self.addr.octets());
            v
        }
    }

    /// The Cause value (octet 5) [TS 29.274 § 8.4].
    pub fn cause(v: &[u8]) -> Result<u8, GtpcError> {
        v.first().copied().ok_or(GtpcError::IeValue)
    }

    /// A single octet IE (Recovery, EBI's low 4 bits, RAT Type, PDN Type,
    /// Selection Mode, APN Restriction).
    pub fn octet(v: &[u8]) -> Result<u8, GtpcError> {
        match v {
            [x, ..] => Ok(*x),
            [] => Err(GtpcError::IeValue),
        }
    }

    /// The EPS Bearer ID: the low four bits [TS 29.274 § 8.8].
    pub fn ebi(v: &[u8]) -> Result<u8, GtpcError> {
        octet(v).map(|x| x & 0x0f)
    }

    /// TBCD digits (IMSI, MSISDN), low nibble first, 0xF filling the last
    /// octet [TS 29.274 § 8.3; TS 29.002 TBCD-STRING].
    pub fn tbcd(v: &[u8]) -> Result<String, GtpcError> {
        let mut s = String::with_capacity(v.len() * 2);
        for (i, b) in v.iter().enumerate() {
            for (j, d) in [b & 0x0f, b >> 4].into_iter().enumerate() {
                match d {
                    0..=9 => s.push(char::from(b'0' + d)),
                    0xf if i + 1 == v.len() && j == 1 => {}
                    _ => return Err(GtpcError::IeValue),
                }
            }
        }
        if s.is_empty() {
            return Err(GtpcError::IeValue);
        }
        Ok(s)
    }

    /// Digits as TBCD.
    pub fn tbcd_value(digits: &str) -> Result<Vec<u8>, GtpcError> {
        let d: Vec<u8> = digits
            .bytes()
            .map(|c| {
                c.is_ascii_digit()
                    .then(|| c - b'0')
                    .ok_or(GtpcError::IeValue)
            })
            .collect::<Result<_, _>>()?;
        Ok(d.chunks(2)
            .map(|p| p[0] | p.get(1).copied().unwrap_or(0xf) << 4)
            .collect())
    }

    /// The APN as a dotted name from its DNS-style labels [TS 29.274 § 8.6;
    /// TS 23.003 § 9.1].
    pub fn apn(v: &[u8]) -> Result<String, GtpcError> {
        let mut labels = vec![];
        let mut rest = v;
        while let Some((&n, tail)) = rest.split_first() {
            let n = usize::from(n);
            if n == 0 || n > tail.len() {
                return Err(GtpcError::IeValue);
            }
            let label = std::str::from_utf8(&tail[..n]).map_err(|_| GtpcError::IeValue)?;
            labels.push(label);
            rest = &tail[n..];
        }
        Ok(labels.join("."))
    }

    /// A dotted name as APN labels.
    pub fn apn_value(name: &str) -> Vec<u8> {
        let mut v = vec![];
        for l in name.split('.').filter(|l| !l.is_empty()) {
            let l = &l.as_bytes()[..l.len().min(63)];
            v.push(l.len() as u8);
            v.extend_from_slice(l);
        }
        v
    }

    /// An IPv4 PAA: the PDN type, then the address [TS 29.274 § 8.14].
    pub fn paa_ipv4(v: &[u8]) -> Result<Ipv4Addr, GtpcError> {
        match v {
            [t, a, b, c, d, ..] if t & 0x07 == super::PDN_IPV4 => Ok(Ipv4Addr::new(*a, *b, *c, *d)),
            _ => Err(GtpcError::IeValue),
        }
    }

    pub fn paa_ipv4_value(a: Ipv4Addr) -> [u8; 5] {
        let o = a.octets();
        [super::PDN_IPV4, o[0], o[1], o[2], o[3]]
    }

    /// AMBR uplink and downlink in kbit/s [TS 29.274 § 8.7].
    pub fn ambr(v: &[u8]) -> Result<(u32, u32), GtpcError> {
        match v {
            [a, b, c, d, e, f, g, h, ..] => Ok((
                u32::from_be_bytes([*a, *b, *c, *d]),
                u32::from_be_bytes([*e, *f, *g, *h]),
            )),
            _ => Err(GtpcError::IeValue),
        }
    }

    pub fn ambr_value(up: u32, down: u32) -> [u8; 8] {
        let mut v = [0u8; 8];
        v[..4].copy_from_slice(&up.to_be_bytes());
        v[4..].copy_from_slice(&down.to_be_bytes());
        v
    }

    /// A Bearer QoS with no bit rates (a non-GBR default bearer): ARP
    /// (priority level, pre-emption capability and vulnerability) and QCI
    /// [TS 29.274 § 8.15].
    pub fn bearer_qos_value(qci: u8, priority: u8, pci: bool, pvi: bool) -> [u8; 22] {
        let mut v = [0u8; 22];
        v[0] = u8::from(pci) << 6 | (priority & 0x0f) << 2 | u8::from(pvi);
        v[1] = qci;
        v
    }

    /// The QCI of a Bearer QoS.
    pub fn bearer_qos_qci(v: &[u8]) -> Result<u8, GtpcError> {
        if v.len() < 22 {
            return Err(GtpcError::IeValue);
        }
        Ok(v[1])
    }
}

/// Writes a message: header, IEs in order, grouped IEs through a closure;
/// [`MessageBuilder::finish`] sets the length.
#[derive(Debug)]
pub struct MessageBuilder {
    buf: Vec<u8>,
}

impl MessageBuilder {
    /// A message of `msg_type` with sequence number `seq` (24 bits) and,
    /// for all but Echo, the peer's `teid` (0 when not yet known) [§ 5.5].
    pub fn new(msg_type: u8, teid: Option<u32>, seq: u32) -> MessageBuilder {
        let mut buf = Vec::with_capacity(128);
        let flags = 2 << 5 | if teid.is_some() { FLAG_T } else { 0 };
        buf.extend_from_slice(&[flags, msg_type, 0, 0]);
        if let Some(t) = teid {
            buf.extend_from_slice(&t.to_be_bytes());
        }
        buf.extend_from_slice(&seq.to_be_bytes()[1..]);
        buf.push(0);
        MessageBuilder { buf }
    }

    /// Appends an IE.
    pub fn ie(&mut self, ty: u8, instance: u8, value: &[u8]) -> &mut Self {
        let len = value.len().min(usize::from(u16::MAX)) as u16;
        self.buf.push(ty);
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.push(instance & 0x0f);
        self.buf.extend_from_slice(&value[..usize::from(len)]);
        self
    }

    /// Appends a grouped IE whose IEs `inner` writes [§ 8.2.1].
    pub fn grouped(&mut self, ty: u8, instance: u8, inner: impl FnOnce(&mut Self)) -> &mut Self {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[ty, 0, 0, instance & 0x0f]);
        inner(self);
        let len = (self.buf.len() - start - 4).min(usize::from(u16::MAX)) as u16;
        self.buf[start + 1..start + 3].copy_from_slice(&len.to_be_bytes());
        self
    }

    pub fn cause(&mut self, cause: u8) -> &mut Self {
        self.ie(ie_type::CAUSE, 0, &[cause, 0])
    }

    pub fn fteid(&mut self, instance: u8, f: ie::Fteid) -> &mut Self {
        self.ie(ie_type::FTEID, instance, &f.value())
    }

    /// The message, its length set.
    pub fn finish(mut self) -> Vec<u8> {
        let len = (self.buf.len() - 4).min(usize::from(u16::MAX)) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
        self.buf
    }
}

impl<T: AsRef<[u8]>> std::fmt::Display for GtpcPacket<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GTPv2-C {} seq {}",
            msg::name(self.msg_type()),
            self.seq()
        )?;
        if let Some(t) = self.teid() {
            write!(f, " teid 0x{t:08x}")?;
        }
        Ok(())
    }
}

/// An IPv4 address's F-TEID, for builders.
pub fn fteid(iface: u8, teid: u32, addr: Ipv4Addr) -> ie::Fteid {
    ie::Fteid { iface, teid, addr }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex;
    use proptest::prelude::*;

    // Written from TS 29.274 with Python's struct.pack, then decoded by
    // pycrate 0.8.1 (`pycrate_mobile.TS29274_GTPC.parse_GTPC`: every IE typed,
    // the mandatory ones present, re-encoded byte for byte) and by tshark 4
    // (no malformed packet, no expert note): crates/wire/fixtures/gtpv2c.py,
    // which writes them to /tmp/gtpv2c-fixtures.pcap for tshark. The MME is 172.16.4.1, the SGW 172.16.4.2 (S11),
    // the PGW 172.16.5.2 (S5-C), the eNodeB's S1-U 172.16.1.1.
    const CREATE_SESSION_REQUEST: &str = "4820008e00000000000001000100080000010100000000f15300030000f1105200010006570009008a00000001ac100401570009018700000000ac1005024700090008696e7465726e6574800001000063000100014f00050001000000007f0001000048000800000186a0000186a05d001f0049000100055000160064090000000000000000000000000000000000000000";
    const CREATE_SESSION_RESPONSE: &str = "4821005f0000000100000100020002001000570009008b00000101ac100402570009018700000201ac1005024f000500010a2d00027f000100005d0025004900010005020002001000570009008100000301ac100102570009028500000401ac100202";
    const MODIFY_BEARER_REQUEST: &str =
        "4822001e00000101000002005d0012004900010005570009008000000501ac100101";
    const MODIFY_BEARER_RESPONSE: &str =
        "4823001d00000001000002000200020010005d000b004900010005020002001000";
    const DELETE_SESSION_REQUEST: &str = "4824000d00000101000003004900010005";
    const DELETE_SESSION_RESPONSE: &str = "4825000e0000000100000300020002001000";
    const ECHO_REQUEST: &str = "40010009000004000300010003";
    const ECHO_RESPONSE: &str = "40020009000004000300010007";
    const CAUSE_MANDATORY_IE_INCORRECT: &str = "4821000e0000000100000500020002004500";
    // The same with the PCO before the bearer context (tshark: Protocol or
    // Container ID 0x000d; gsm_a.gm.sm.pco.dns.ipv4 198.18.2.2 in the response).
    const CREATE_SESSION_REQUEST_PCO: &str = "4820009600000000000006000100080000010100000000f15300030000f1105200010006570009008a00000001ac100401570009018700000000ac1005024700090008696e7465726e6574800001000063000100014f00050001000000007f0001000048000800000186a0000186a04e00040080000d005d001f0049000100055000160064090000000000000000000000000000000000000000";
    const CREATE_SESSION_RESPONSE_PCO: &str = "4821006b0000000100000600020002001000570009008b00000101ac100402570009018700000201ac1005024f000500010a2d00027f000100004e00080080000d04c61202025d0025004900010005020002001000570009008100000301ac100102570009028500000401ac100202";

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn values(bytes: &[u8]) -> Vec<(u8, u8)> {
        ies(bytes)
            .map(|i| i.map(|i| (i.ty, i.instance)).unwrap())
            .collect()
    }

    #[test]
    fn create_session_reads_every_ie_the_lab_uses() {
        let b = hex(CREATE_SESSION_REQUEST);
        let p = GtpcPacket::new_checked(&b[..]).unwrap();
        assert_eq!(
            (p.msg_type(), p.teid(), p.seq()),
            (msg::CREATE_SESSION_REQUEST, Some(0), 1)
        );
        let ies = p.ie_bytes();
        let imsi = find(ies, ie_type::IMSI, 0).unwrap().unwrap();
        assert_eq!(ie::tbcd(imsi.value).unwrap(), "001010000000001");
        let apn = find(ies, ie_type::APN, 0).unwrap().unwrap();
        assert_eq!(ie::apn(apn.value).unwrap(), "internet");
        let f = find(ies, ie_type::FTEID, 0).unwrap().unwrap();
        assert_eq!(
            ie::Fteid::parse(f.value).unwrap(),
            fteid(iface::S11_MME, 1, a("172.16.4.1"))
        );
        let f = find(ies, ie_type::FTEID, 1).unwrap().unwrap();
        assert_eq!(
            ie::Fteid::parse(f.value).unwrap(),
            fteid(iface::S5_PGW_GTPC, 0, a("172.16.5.2"))
        );
        let ambr = find(ies, ie_type::AMBR, 0).unwrap().unwrap();
        assert_eq!(ie::ambr(ambr.value).unwrap(), (100_000, 100_000));
        let bc = find(ies, ie_type::BEARER_CONTEXT, 0).unwrap().unwrap();
        let ebi = find(bc.value, ie_type::EBI, 0).unwrap().unwrap();
        assert_eq!(ie::ebi(ebi.value).unwrap(), 5);
        let qos = find(bc.value, ie_type::BEARER_QOS, 0).unwrap().unwrap();
        assert_eq!(ie::bearer_qos_qci(qos.value).unwrap(), 9);
        assert_eq!(
            p.to_string(),
            "GTPv2-C Create Session Request seq 1 teid 0x00000000"
        );
    }

    /// Builds the fixtures with [`MessageBuilder`].
    fn built() -> Vec<(&'static str, Vec<u8>)> {
        let dns_request = crate::pco::Pco::dns_request().to_vec();
        let dns = crate::pco::Pco::answer(&crate::pco::Pco::dns_request(), &[a("198.18.2.2")])
            .unwrap()
            .to_vec();
        vec![
            (CREATE_SESSION_REQUEST, create_session_request(1, None)),
            (
                CREATE_SESSION_REQUEST_PCO,
                create_session_request(6, Some(&dns_request)),
            ),
            (CREATE_SESSION_RESPONSE, create_session_response(1, None)),
            (
                CREATE_SESSION_RESPONSE_PCO,
                create_session_response(6, Some(&dns)),
            ),
        ]
        .into_iter()
        .chain(the_others())
        .collect()
    }

    fn create_session_request(seq: u32, pco: Option<&[u8]>) -> Vec<u8> {
        let s11_mme = fteid(iface::S11_MME, 1, a("172.16.4.1"));
        let mut m = MessageBuilder::new(msg::CREATE_SESSION_REQUEST, Some(0), seq);
        m.ie(
            ie_type::IMSI,
            0,
            &ie::tbcd_value("001010000000001").unwrap(),
        )
        .ie(ie_type::SERVING_NETWORK, 0, &[0x00, 0xf1, 0x10])
        .ie(ie_type::RAT_TYPE, 0, &[RAT_EUTRAN])
        .fteid(0, s11_mme)
        .fteid(1, fteid(iface::S5_PGW_GTPC, 0, a("172.16.5.2")))
        .ie(ie_type::APN, 0, &ie::apn_value("internet"))
        .ie(ie_type::SELECTION_MODE, 0, &[0])
        .ie(ie_type::PDN_TYPE, 0, &[PDN_IPV4])
        .ie(ie_type::PAA, 0, &ie::paa_ipv4_value(Ipv4Addr::UNSPECIFIED))
        .ie(ie_type::APN_RESTRICTION, 0, &[0])
        .ie(ie_type::AMBR, 0, &ie::ambr_value(100_000, 100_000));
        if let Some(p) = pco {
            m.ie(ie_type::PCO, 0, p);
        }
        m.grouped(ie_type::BEARER_CONTEXT, 0, |g| {
            g.ie(ie_type::EBI, 0, &[5]).ie(
                ie_type::BEARER_QOS,
                0,
                &ie::bearer_qos_value(9, 9, true, false),
            );
        });
        m.finish()
    }

    fn create_session_response(seq: u32, pco: Option<&[u8]>) -> Vec<u8> {
        let mut m = MessageBuilder::new(msg::CREATE_SESSION_RESPONSE, Some(1), seq);
        m.cause(cause::REQUEST_ACCEPTED)
            .fteid(0, fteid(iface::S11_SGW, 0x101, a("172.16.4.2")))
            .fteid(1, fteid(iface::S5_PGW_GTPC, 0x201, a("172.16.5.2")))
            .ie(ie_type::PAA, 0, &ie::paa_ipv4_value(a("10.45.0.2")))
            .ie(ie_type::APN_RESTRICTION, 0, &[0]);
        if let Some(p) = pco {
            m.ie(ie_type::PCO, 0, p);
        }
        m.grouped(ie_type::BEARER_CONTEXT, 0, |g| {
            g.ie(ie_type::EBI, 0, &[5])
                .cause(cause::REQUEST_ACCEPTED)
                .fteid(0, fteid(iface::S1U_SGW, 0x301, a("172.16.1.2")))
                .fteid(2, fteid(iface::S5_PGW_GTPU, 0x401, a("172.16.2.2")));
        });
        m.finish()
    }

    fn the_others() -> Vec<(&'static str, Vec<u8>)> {
        let mut m = MessageBuilder::new(msg::MODIFY_BEARER_REQUEST, Some(0x101), 2);
        m.grouped(ie_type::BEARER_CONTEXT, 0, |g| {
            g.ie(ie_type::EBI, 0, &[5])
                .fteid(0, fteid(iface::S1U_ENODEB, 0x501, a("172.16.1.1")));
        });
        let mbr = m.finish();
        let mut m = MessageBuilder::new(msg::MODIFY_BEARER_RESPONSE, Some(1), 2);
        m.cause(cause::REQUEST_ACCEPTED)
            .grouped(ie_type::BEARER_CONTEXT, 0, |g| {
                g.ie(ie_type::EBI, 0, &[5]).cause(cause::REQUEST_ACCEPTED);
            });
        let mbresp = m.finish();
        let mut m = MessageBuilder::new(msg::DELETE_SESSION_REQUEST, Some(0x101), 3);
        m.ie(ie_type::EBI, 0, &[5]);
        let dsr = m.finish();
        let mut m = MessageBuilder::new(msg::DELETE_SESSION_RESPONSE, Some(1), 3);
        m.cause(cause::REQUEST_ACCEPTED);
        let dsresp = m.finish();
        let mut m = MessageBuilder::new(msg::ECHO_REQUEST, None, 4);
        m.ie(ie_type::RECOVERY, 0, &[3]);
        let echo = m.finish();
        let mut m = MessageBuilder::new(msg::ECHO_RESPONSE, None, 4);
        m.ie(ie_type::RECOVERY, 0, &[7]);
        let echor = m.finish();
        let mut m = MessageBuilder::new(msg::CREATE_SESSION_RESPONSE, Some(1), 5);
        m.cause(cause::MANDATORY_IE_INCORRECT);
        let bad = m.finish();
        vec![
            (MODIFY_BEARER_REQUEST, mbr),
            (MODIFY_BEARER_RESPONSE, mbresp),
            (DELETE_SESSION_REQUEST, dsr),
            (DELETE_SESSION_RESPONSE, dsresp),
            (ECHO_REQUEST, echo),
            (ECHO_RESPONSE, echor),
            (CAUSE_MANDATORY_IE_INCORRECT, bad),
        ]
    }

    #[test]
    fn the_builder_writes_the_fixtures_byte_for_byte() {
        for (want, got) in built() {
            assert_eq!(got, hex(want), "{want}");
        }
    }

    #[test]
    fn responses_and_echo_read_back() {
        let b = hex(CREATE_SESSION_RESPONSE);
        let p = GtpcPacket::new_checked(&b[..]).unwrap();
        let ies = p.ie_bytes();
        assert_eq!(
            ie::cause(find(ies, ie_type::CAUSE, 0).unwrap().unwrap().value),
            Ok(16)
        );
        let paa = find(ies, ie_type::PAA, 0).unwrap().unwrap();
        assert_eq!(ie::paa_ipv4(paa.value), Ok(a("10.45.0.2")));
        let bc = find(ies, ie_type::BEARER_CONTEXT, 0).unwrap().unwrap();
        assert_eq!(values(bc.value), [(73, 0), (2, 0), (87, 0), (87, 2)]);
        let f = find(bc.value, ie_type::FTEID, 2).unwrap().unwrap();
        assert_eq!(ie::Fteid::parse(f.value).unwrap().teid, 0x401);
        let b = hex(ECHO_REQUEST);
        let p = GtpcPacket::new_checked(&b[..]).unwrap();
        assert_eq!(
            (p.msg_type(), p.teid(), p.seq()),
            (msg::ECHO_REQUEST, None, 4)
        );
        let ies: Vec<_> = p.ies_ref().map(Result::unwrap).collect();
        assert_eq!(
            ies,
            [Ie {
                ty: ie_type::RECOVERY,
                instance: 0,
                value: &[3]
            }]
        );
        assert!(msg::is_request(msg::ECHO_REQUEST) && !msg::is_request(msg::ECHO_RESPONSE));
    }

    #[test]
    fn bad_headers_and_ie_lengths_are_refused() {
        let b = hex(ECHO_REQUEST);
        assert_eq!(
            GtpcPacket::new_checked(&b[..7]).unwrap_err(),
            GtpcError::Truncated
        );
        let mut v1 = b.clone();
        v1[0] = 0x20;
        assert_eq!(
            GtpcPacket::new_checked(&v1[..]).unwrap_err(),
            GtpcError::Version(1)
        );
        let mut long = b.clone();
        long[3] = 200;
        assert_eq!(
            GtpcPacket::new_checked(&long[..]).unwrap_err(),
            GtpcError::Length
        );
        // The Recovery IE claims two octets where the message has one.
        let mut bad = b.clone();
        bad[10] = 2;
        let p = GtpcPacket::new_checked(&bad[..]).unwrap();
        assert_eq!(p.ies_ref().next(), Some(Err(GtpcError::IeLength)));
        assert_eq!(
            find(p.ie_bytes(), ie_type::EBI, 0),
            Err(GtpcError::IeLength)
        );
        // Values that are not what their type says.
        assert_eq!(ie::tbcd(&[0x1a]), Err(GtpcError::IeValue));
        assert_eq!(ie::tbcd(&[0xf1, 0x21]), Err(GtpcError::IeValue));
        assert_eq!(ie::apn(&[9, b'x']), Err(GtpcError::IeValue));
        assert_eq!(ie::Fteid::parse(&[0x40; 9]), Err(GtpcError::IeValue));
        assert_eq!(ie::paa_ipv4(&[2, 0, 0, 0, 0]), Err(GtpcError::IeValue));
        // Bytes after the message's length (a piggybacked one) are not read.
        let mut more = b.clone();
        more.extend_from_slice(&[0xff; 5]);
        let p = GtpcPacket::new_checked(&more[..]).unwrap();
        assert_eq!(p.message(), &b[..]);
    }

    proptest! {
        #[test]
        fn tbcd_and_apn_round_trip(digits in "[0-9]{1,15}", labels in proptest::collection::vec("[a-z0-9-]{1,20}", 1..4)) {
            let v = ie::tbcd_value(&digits).unwrap();
            prop_assert_eq!(ie::tbcd(&v).unwrap(), digits);
            let name = labels.join(".");
            prop_assert_eq!(ie::apn(&ie::apn_value(&name)).unwrap(), name);
        }

        #[test]
        fn no_input_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(p) = GtpcPacket::new_checked(&b[..]) {
                let _ = (p.teid(), p.seq(), p.piggybacked(), p.to_string());
                for ie in p.ies_ref().flatten() {
                    let _ = (ie::Fteid::parse(ie.value), ie::tbcd(ie.value), ie::apn(ie.value),
                        ie::paa_ipv4(ie.value), ie::ambr(ie.value), ie::cause(ie.value));
                    let _ = ies(ie.value).count();
                }
            }
        }
    }
}
