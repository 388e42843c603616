//! Diameter, the base protocol of S6a between the MME and the HSS, on TCP
//! port 3868 (RFC 6733 allows TCP; the lab's kernels have no SCTP).
//!
//! Read RFC 6733 first: § 3 for the header (version 1, a 24-bit length, the
//! R/P/E/T flags, a 24-bit command code, the application, hop-by-hop and
//! end-to-end identifiers), § 4 for AVPs (code, V/M/P flags, a 24-bit length
//! that excludes the padding to four octets, a vendor identifier when V is
//! set; grouped AVPs hold AVPs, § 4.4) and § 7.1 for result codes. Then
//! 3GPP TS 29.272 § 7 for S6a: its application identifier, the
//! Authentication-Information and Update-Location commands and their
//! 3GPP-vendor AVPs.
//!
//! Messages are read by views ([`DiameterPacket`], [`avps`]) and written by
//! [`MessageBuilder`]; [`message_len`] finds where a message ends in a TCP
//! stream.

use std::net::Ipv4Addr;

/// Diameter's TCP port [RFC 6733 § 2.1].
pub const PORT: u16 = 3868;
/// The header [RFC 6733 § 3].
pub const HEADER_LEN: usize = 20;
/// The largest message this end accepts (the length field allows 16 MiB).
pub const MAX_MESSAGE: usize = 64 * 1024;
/// 3GPP's vendor identifier [TS 29.272 § 7.3].
pub const VENDOR_3GPP: u32 = 10415;
/// The S6a/S6d application [TS 29.272 § 7.1.8].
pub const APP_S6A: u32 = 16_777_251;

/// Command codes [RFC 6733 § 3.1; TS 29.272 § 7.2.1].
pub mod cmd {
    pub const CAPABILITIES_EXCHANGE: u32 = 257;
    pub const DEVICE_WATCHDOG: u32 = 280;
    pub const DISCONNECT_PEER: u32 = 282;
    pub const UPDATE_LOCATION: u32 = 316;
    pub const AUTHENTICATION_INFORMATION: u32 = 318;
}

/// AVP codes: the base protocol's [RFC 6733 § 4.5] and S6a's (vendor
/// 10415) [TS 29.272 § 7.3].
pub mod avp {
    pub const USER_NAME: u32 = 1;
    pub const HOST_IP_ADDRESS: u32 = 257;
    pub const AUTH_APPLICATION_ID: u32 = 258;
    pub const VENDOR_SPECIFIC_APPLICATION_ID: u32 = 260;
    pub const SESSION_ID: u32 = 263;
    pub const ORIGIN_HOST: u32 = 264;
    pub const VENDOR_ID: u32 = 266;
    pub const RESULT_CODE: u32 = 268;
    pub const PRODUCT_NAME: u32 = 269;
    pub const AUTH_SESSION_STATE: u32 = 277;
    pub const ORIGIN_STATE_ID: u32 = 278;
    pub const FAILED_AVP: u32 = 279;
    pub const ERROR_MESSAGE: u32 = 281;
    pub const DESTINATION_REALM: u32 = 283;
    pub const DESTINATION_HOST: u32 = 293;
    pub const ORIGIN_REALM: u32 = 296;
    pub const EXPERIMENTAL_RESULT: u32 = 297;
    pub const EXPERIMENTAL_RESULT_CODE: u32 = 298;
    pub const SERVICE_SELECTION: u32 = 493;
    pub const MAX_REQUESTED_BANDWIDTH_DL: u32 = 515;
    pub const MAX_REQUESTED_BANDWIDTH_UL: u32 = 516;
    pub const QOS_CLASS_IDENTIFIER: u32 = 1028;
    pub const RAT_TYPE: u32 = 1032;
    pub const ALLOCATION_RETENTION_PRIORITY: u32 = 1034;
    pub const PRIORITY_LEVEL: u32 = 1046;
    pub const PRE_EMPTION_CAPABILITY: u32 = 1047;
    pub const PRE_EMPTION_VULNERABILITY: u32 = 1048;
    pub const SUBSCRIPTION_DATA: u32 = 1400;
    pub const ULR_FLAGS: u32 = 1405;
    pub const ULA_FLAGS: u32 = 1406;
    pub const VISITED_PLMN_ID: u32 = 1407;
    pub const REQUESTED_EUTRAN_AUTHENTICATION_INFO: u32 = 1408;
    pub const NUMBER_OF_REQUESTED_VECTORS: u32 = 1410;
    pub const RE_SYNCHRONIZATION_INFO: u32 = 1411;
    pub const IMMEDIATE_RESPONSE_PREFERRED: u32 = 1412;
    pub const AUTHENTICATION_INFO: u32 = 1413;
    pub const E_UTRAN_VECTOR: u32 = 1414;
    pub const NETWORK_ACCESS_MODE: u32 = 1417;
    pub const CONTEXT_IDENTIFIER: u32 = 1423;
    pub const SUBSCRIBER_STATUS: u32 = 1424;
    pub const ALL_APN_CONFIGURATIONS_INCLUDED_INDICATOR: u32 = 1428;
    pub const APN_CONFIGURATION_PROFILE: u32 = 1429;
    pub const APN_CONFIGURATION: u32 = 1430;
    pub const EPS_SUBSCRIBED_QOS_PROFILE: u32 = 1431;
    pub const AMBR: u32 = 1435;
    pub const RAND: u32 = 1447;
    pub const XRES: u32 = 1448;
    pub const AUTN: u32 = 1449;
    pub const KASME: u32 = 1450;
    pub const PDN_TYPE: u32 = 1456;
}

/// Result codes [RFC 6733 § 7.1] and S6a's experimental ones [TS 29.272 § 7.4].
pub mod result {
    pub const SUCCESS: u32 = 2001;
    pub const COMMAND_UNSUPPORTED: u32 = 3001;
    pub const APPLICATION_UNSUPPORTED: u32 = 3007;
    pub const INVALID_HDR_BITS: u32 = 3008;
    pub const INVALID_AVP_BITS: u32 = 3009;
    pub const AUTHORIZATION_REJECTED: u32 = 5003;
    pub const INVALID_AVP_VALUE: u32 = 5004;
    pub const MISSING_AVP: u32 = 5005;
    pub const UNABLE_TO_COMPLY: u32 = 5012;
    pub const INVALID_AVP_LENGTH: u32 = 5014;
    pub const INVALID_MESSAGE_LENGTH: u32 = 5015;
    /// Experimental (vendor 10415): the IMSI is not a subscriber.
    pub const ERROR_USER_UNKNOWN: u32 = 5001;
    /// Experimental: the subscriber may not use E-UTRAN (barred).
    pub const ERROR_UNKNOWN_EPS_SUBSCRIPTION: u32 = 5420;
    /// Experimental: no vectors can be made now.
    pub const AUTHENTICATION_DATA_UNAVAILABLE: u32 = 4181;
}

/// Why bytes are not a Diameter message or an AVP of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DiameterError {
    #[error("shorter than the 20-octet Diameter header")]
    Truncated,
    #[error("version {0}, not 1")]
    Version(u8),
    #[error("the message length is below the header, beyond the data or not a multiple of four")]
    Length,
    #[error("the message is longer than this end accepts")]
    TooLong,
    #[error("an AVP's length is below its header or runs past its message or group")]
    AvpLength,
    #[error("an AVP's data is not what its type says")]
    AvpValue,
}

const FLAG_R: u8 = 0x80;
const FLAG_P: u8 = 0x40;
const FLAG_E: u8 = 0x20;
const FLAG_T: u8 = 0x10;
const AVP_V: u8 = 0x80;
const AVP_M: u8 = 0x40;

fn u24(b: &[u8]) -> usize {
    usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2])
}

/// The length of the message that starts `stream`, once its header is
/// there: `None` while fewer than four octets are, an error for a header
/// no message can have (then the connection cannot be resynchronised).
pub fn message_len(stream: &[u8]) -> Option<Result<usize, DiameterError>> {
    if stream.len() < 4 {
        return None;
    }
    if stream[0] != 1 {
        return Some(Err(DiameterError::Version(stream[0])));
    }
    let len = u24(&stream[1..4]);
    Some(if len < HEADER_LEN || !len.is_multiple_of(4) {
        Err(DiameterError::Length)
    } else if len > MAX_MESSAGE {
        Err(DiameterError::TooLong)
    } else {
        Ok(len)
    })
}

/// A view of a Diameter message. After [`DiameterPacket::new_checked`] no
/// accessor panics; AVPs are checked as they are read.
#[derive(Debug, Clone)]
pub struct DiameterPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> DiameterPacket<T> {
    pub fn new_checked(buffer: T) -> Result<Self, DiameterError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(DiameterError::Truncated);
        }
        let len = message_len(b).expect("four octets")?;
        if len > b.len() {
            return Err(DiameterError::Length);
        }
        Ok(DiameterPacket { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    pub fn is_request(&self) -> bool {
        self.b()[4] & FLAG_R != 0
    }
    pub fn is_proxiable(&self) -> bool {
        self.b()[4] & FLAG_P != 0
    }
    /// E: an answer carrying a protocol error [RFC 6733 § 7.2].
    pub fn is_error(&self) -> bool {
        self.b()[4] & FLAG_E != 0
    }
    /// T: possibly a retransmission after a link failover.
    pub fn is_retransmit(&self) -> bool {
        self.b()[4] & FLAG_T != 0
    }
    /// The reserved flag bits (must be zero, else 3008 Invalid Hdr Bits).
    pub fn reserved_flags(&self) -> u8 {
        self.b()[4] & 0x0f
    }
    pub fn command_code(&self) -> u32 {
        u24(&self.b()[5..8]) as u32
    }
    pub fn application_id(&self) -> u32 {
        be32(&self.b()[8..12])
    }
    pub fn hop_by_hop(&self) -> u32 {
        be32(&self.b()[12..16])
    }
    pub fn end_to_end(&self) -> u32 {
        be32(&self.b()[16..20])
    }
    /// The message, up to its length field.
    pub fn message(&self) -> &[u8] {
        &self.b()[..u24(&self.b()[1..4])]
    }
    /// The AVPs, encoded.
    pub fn avp_bytes(&self) -> &[u8] {
        &self.message()[HEADER_LEN..]
    }
}

impl<'a> DiameterPacket<&'a [u8]> {
    /// The AVPs, borrowed for as long as the buffer.
    pub fn avps_ref(&self) -> impl Iterator<Item = Result<Avp<'a>, DiameterError>> + 'a {
        let b: &'a [u8] = self.buffer;
        avps(&b[HEADER_LEN..u24(&b[1..4])])
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// One AVP as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Avp<'a> {
    pub code: u32,
    pub vendor: Option<u32>,
    pub mandatory: bool,
    /// The data, padding excluded.
    pub data: &'a [u8],
}

impl<'a> Avp<'a> {
    /// Unsigned32 and Enumerated data [RFC 6733 § 4.2, § 4.3.1].
    pub fn u32(&self) -> Result<u32, DiameterError> {
        match self.data {
            [a, b, c, d] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
            _ => Err(DiameterError::AvpValue),
        }
    }
    /// UTF8String and DiameterIdentity data [RFC 6733 § 4.3.1].
    pub fn utf8(&self) -> Result<&'a str, DiameterError> {
        std::str::from_utf8(self.data).map_err(|_| DiameterError::AvpValue)
    }
    /// An IPv4 Address [RFC 6733 § 4.3.1: AddressType 1].
    pub fn ipv4(&self) -> Result<Ipv4Addr, DiameterError> {
        match self.data {
            [0, 1, a, b, c, d] => Ok(Ipv4Addr::new(*a, *b, *c, *d)),
            _ => Err(DiameterError::AvpValue),
        }
    }
    /// The AVPs of a Grouped AVP [RFC 6733 § 4.4].
    pub fn group(&self) -> impl Iterator<Item = Result<Avp<'a>, DiameterError>> + 'a {
        avps(self.data)
    }
}

/// Reads AVPs one after another; the first malformed one ends the
/// iteration with its error.
pub fn avps(bytes: &[u8]) -> impl Iterator<Item = Result<Avp<'_>, DiameterError>> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let b = rest;
        let flags = if b.len() >= 8 { b[4] } else { 0 };
        let header = if flags & AVP_V != 0 { 12 } else { 8 };
        let len = if b.len() >= 8 { u24(&b[5..8]) } else { 0 };
        if b.len() < 8 || len < header || len > b.len() {
            rest = &[];
            return Some(Err(DiameterError::AvpLength));
        }
        rest = b.get(len.next_multiple_of(4)..).unwrap_or(&[]);
        Some(Ok(Avp {
            code: be32(&b[0..4]),
            vendor: (header == 12).then(|| be32(&b[8..12])),
            mandatory: flags & AVP_M != 0,
            data: &b[header..len],
        }))
    })
}

/// The first AVP of `code` and `vendor` among `bytes`, if every AVP up to
/// it reads (an error otherwise).
pub fn find(
    bytes: &[u8],
    code: u32,
    vendor: Option<u32>,
) -> Result<Option<Avp<'_>>, DiameterError> {
    for a in avps(bytes) {
        let a = a?;
        if a.code == code && a.vendor == vendor {
            return Ok(Some(a));
        }
    }
    Ok(None)
}

/// Writes a message: header, AVPs in order, grouped AVPs through a closure;
/// [`MessageBuilder::finish`] sets the length.
#[derive(Debug)]
pub struct MessageBuilder {
    buf: Vec<u8>,
}

/// A message's header flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags {
    pub request: bool,
    pub proxiable: bool,
    pub error: bool,
}

impl MessageBuilder {
    pub fn new(code: u32, app: u32, flags: Flags, hop_by_hop: u32, end_to_end: u32) -> Self {
        let bit = |on: bool, f: u8| if on { f } else { 0 };
        let f =
            bit(flags.request, FLAG_R) | bit(flags.proxiable, FLAG_P) | bit(flags.error, FLAG_E);
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&[1, 0, 0, 0, f]);
        buf.extend_from_slice(&code.to_be_bytes()[1..]);
        buf.extend_from_slice(&app.to_be_bytes());
        buf.extend_from_slice(&hop_by_hop.to_be_bytes());
        buf.extend_from_slice(&end_to_end.to_be_bytes());
        MessageBuilder { buf }
    }

    /// The answer to `request`: same command, application and identifiers,
    /// R cleared, P kept [RFC 6733 § 6.2].
    pub fn answer<T: AsRef<[u8]>>(request: &DiameterPacket<T>, error: bool) -> Self {
        let flags = Flags {
            request: false,
            proxiable: request.is_proxiable(),
            error,
        };
        MessageBuilder::new(
            request.command_code(),
            request.application_id(),
            flags,
            request.hop_by_hop(),
            request.end_to_end(),
        )
    }

    fn header(&mut self, code: u32, vendor: Option<u32>, mandatory: bool) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&code.to_be_bytes());
        let f = if vendor.is_some() { AVP_V } else { 0 } | if mandatory { AVP_M } else { 0 };
        self.buf.extend_from_slice(&[f, 0, 0, 0]);
        if let Some(v) = vendor {
            self.buf.extend_from_slice(&v.to_be_bytes());
        }
        start
    }

    fn close(&mut self, start: usize) {
        let len = (self.buf.len() - start).min(0xff_ffff) as u32;
        self.buf[start + 5..start + 8].copy_from_slice(&len.to_be_bytes()[1..]);
        let padded = self.buf.len().next_multiple_of(4);
        self.buf.resize(padded, 0);
    }

    /// Appends an AVP with `data`.
    pub fn avp(
        &mut self,
        code: u32,
        vendor: Option<u32>,
        mandatory: bool,
        data: &[u8],
    ) -> &mut Self {
        let start = self.header(code, vendor, mandatory);
        self.buf.extend_from_slice(data);
        self.close(start);
        self
    }

    /// A mandatory Unsigned32 or Enumerated AVP.
    pub fn u32(&mut self, code: u32, vendor: Option<u32>, v: u32) -> &mut Self {
        self.avp(code, vendor, true, &v.to_be_bytes())
    }

    /// A mandatory UTF8String or DiameterIdentity AVP.
    pub fn utf8(&mut self, code: u32, vendor: Option<u32>, s: &str) -> &mut Self {
        self.avp(code, vendor, true, s.as_bytes())
    }

    /// A mandatory IPv4 Address AVP.
    pub fn ipv4(&mut self, code: u32, a: Ipv4Addr) -> &mut Self {
        let o = a.octets();
        self.avp(code, None, true, &[0, 1, o[0], o[1], o[2], o[3]])
    }

    /// A mandatory Grouped AVP whose AVPs `inner` writes [RFC 6733 § 4.4].
    pub fn grouped(
        &mut self,
        code: u32,
        vendor: Option<u32>,
        inner: impl FnOnce(&mut Self),
    ) -> &mut Self {
        let start = self.header(code, vendor, true);
        inner(self);
        self.close(start);
        self
    }

    /// The message, its length set.
    pub fn finish(mut self) -> Vec<u8> {
        let len = (self.buf.len().min(0xff_ffff) as u32).to_be_bytes();
        self.buf[1..4].copy_from_slice(&len[1..]);
        self.buf
    }
}

impl<T: AsRef<[u8]>> std::fmt::Display for DiameterPacket<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.command_code() {
            cmd::CAPABILITIES_EXCHANGE => "Capabilities-Exchange",
            cmd::DEVICE_WATCHDOG => "Device-Watchdog",
            cmd::DISCONNECT_PEER => "Disconnect-Peer",
            cmd::UPDATE_LOCATION => "Update-Location",
            cmd::AUTHENTICATION_INFORMATION => "Authentication-Information",
            _ => "Unknown",
        };
        let kind = if self.is_request() {
            "Request"
        } else {
            "Answer"
        };
        write!(
            f,
            "Diameter {name} {kind} h2h {} e2e {}",
            self.hop_by_hop(),
            self.end_to_end()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex;
    use proptest::prelude::*;

    // crates/wire/fixtures/diameter.py: written from RFC 6733 and TS 29.272
    // with Python's struct.pack, read and re-encoded byte for byte by
    // pycrate 0.8.1 (pycrate_diameter.Diameter3GPP.DiameterGeneric), and
    // decoded by tshark 4 with no malformed packet and no expert item.
    const CER: &str = "010000808000010100000000000000010000000100000108400000136d6d652e6570632e6c616200000001284000000f6570632e6c616200000001014000000e0001ac10050100000000010a4000000c000000000000010d0000000b6431310000000104400000200000010a4000000c000028af000001024000000c01000023";
    const CEA: &str = "0100008c000001010000000000000001000000010000010c4000000c000007d100000108400000136873732e6570632e6c616200000001284000000f6570632e6c616200000001014000000e0001ac10050200000000010a4000000c000000000000010d0000000b6431310000000104400000200000010a4000000c000028af000001024000000c01000023";
    const DWR: &str = "010000388000011800000000000000020000000200000108400000136d6d652e6570632e6c616200000001284000000f6570632e6c616200";
    const DWA: &str = "01000044000001180000000000000002000000020000010c4000000c000007d100000108400000136873732e6570632e6c616200000001284000000f6570632e6c616200";
    const AIR: &str = "010000c0c000013e01000023000000030000000300000107400000176d6d652e6570632e6c61623b313b3100000001154000000c0000000100000108400000136d6d652e6570632e6c616200000001284000000f6570632e6c6162000000011b4000000f6570632e6c61620000000001400000173030313031303030303030303030310000000580c000002c000028af00000582c0000010000028af0000000100000584c0000010000028af000000000000057fc000000f000028af00f11000";
    const AIA: &str = "010000f84000013e01000023000000030000000300000107400000176d6d652e6570632e6c61623b313b31000000010c4000000c000007d1000001154000000c0000000100000108400000136873732e6570632e6c616200000001284000000f6570632e6c61620000000585c0000090000028af00000586c0000084000028af000005a7c000001c000028af23553cbe9637a89d218ae64dae47bf35000005a8c0000014000028afa54211d5e3ba50bf000005a9c000001c000028afaa689c6483508000904cbb451b65def8000005aac000002c000028af0000000000000000000000000000000000000000000000000000000000000000";
    const AIA_USER_UNKNOWN: &str = "0100007c4000013e01000023000000040000000400000107400000176d6d652e6570632e6c61623b313b310000000129400000200000010a4000000c000028af0000012a4000000c00001389000001154000000c0000000100000108400000136873732e6570632e6c616200000001284000000f6570632e6c616200";
    const ULR: &str = "010000b4c000013c01000023000000050000000500000107400000176d6d652e6570632e6c61623b313b3100000001154000000c0000000100000108400000136d6d652e6570632e6c616200000001284000000f6570632e6c6162000000011b4000000f6570632e6c61620000000001400000173030313031303030303030303030310000000408c0000010000028af000003ec0000057dc0000010000028af000000220000057fc000000f000028af00f11000";
    const ULA: &str = "010001bc4000013c01000023000000050000000500000107400000176d6d652e6570632e6c61623b313b31000000010c4000000c000007d1000001154000000c0000000100000108400000136873732e6570632e6c616200000001284000000f6570632e6c6162000000057ec0000010000028af0000000100000578c0000144000028af00000590c0000010000028af0000000000000589c0000010000028af000000020000059bc000002c000028af00000204c0000010000028af05f5e10000000203c0000010000028af05f5e10000000595c00000ec000028af0000058fc0000010000028af0000000100000594c0000010000028af0000000000000596c00000c0000028af0000058fc0000010000028af00000001000005b0c0000010000028af00000000000001ed40000010696e7465726e657400000597c0000058000028af00000404c0000010000028af000000090000040ac000003c000028af00000416c0000010000028af0000000900000417c0000010000028af0000000100000418c0000010000028af000000010000059bc000002c000028af00000204c0000010000028af05f5e10000000203c0000010000028af05f5e100";

    const V: Option<u32> = Some(VENDOR_3GPP);
    const SID: &str = "mme.epc.lab;1;1";

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn req(hbh: u32, proxiable: bool) -> (Flags, u32) {
        (
            Flags {
                request: true,
                proxiable,
                error: false,
            },
            hbh,
        )
    }

    fn built() -> Vec<(&'static str, Vec<u8>)> {
        let vsai = |m: &mut MessageBuilder| {
            m.grouped(avp::VENDOR_SPECIFIC_APPLICATION_ID, None, |g| {
                g.u32(avp::VENDOR_ID, None, VENDOR_3GPP).u32(
                    avp::AUTH_APPLICATION_ID,
                    None,
                    APP_S6A,
                );
            });
        };
        let ans = |proxiable| Flags {
            request: false,
            proxiable,
            error: false,
        };
        let (f, h) = req(1, false);
        let mut m = MessageBuilder::new(cmd::CAPABILITIES_EXCHANGE, 0, f, h, h);
        m.utf8(avp::ORIGIN_HOST, None, "mme.epc.lab")
            .utf8(avp::ORIGIN_REALM, None, "epc.lab")
            .ipv4(avp::HOST_IP_ADDRESS, a("172.16.5.1"))
            .u32(avp::VENDOR_ID, None, 0)
            .avp(avp::PRODUCT_NAME, None, false, b"d11");
        vsai(&mut m);
        let cer = m.finish();
        let mut m = MessageBuilder::new(cmd::CAPABILITIES_EXCHANGE, 0, ans(false), 1, 1);
        m.u32(avp::RESULT_CODE, None, result::SUCCESS)
            .utf8(avp::ORIGIN_HOST, None, "hss.epc.lab")
            .utf8(avp::ORIGIN_REALM, None, "epc.lab")
            .ipv4(avp::HOST_IP_ADDRESS, a("172.16.5.2"))
            .u32(avp::VENDOR_ID, None, 0)
            .avp(avp::PRODUCT_NAME, None, false, b"d11");
        vsai(&mut m);
        let cea = m.finish();
        let (f, h) = req(2, false);
        let mut m = MessageBuilder::new(cmd::DEVICE_WATCHDOG, 0, f, h, h);
        m.utf8(avp::ORIGIN_HOST, None, "mme.epc.lab")
            .utf8(avp::ORIGIN_REALM, None, "epc.lab");
        let dwr = m.finish();
        let mut m = MessageBuilder::new(cmd::DEVICE_WATCHDOG, 0, ans(false), 2, 2);
        m.u32(avp::RESULT_CODE, None, result::SUCCESS)
            .utf8(avp::ORIGIN_HOST, None, "hss.epc.lab")
            .utf8(avp::ORIGIN_REALM, None, "epc.lab");
        let dwa = m.finish();
        let plmn = [0x00, 0xf1, 0x10];
        let (f, h) = req(3, true);
        let mut m = MessageBuilder::new(cmd::AUTHENTICATION_INFORMATION, APP_S6A, f, h, h);
        m.utf8(avp::SESSION_ID, None, SID)
            .u32(avp::AUTH_SESSION_STATE, None, 1)
            .utf8(avp::ORIGIN_HOST, None, "mme.epc.lab")
            .utf8(avp::ORIGIN_REALM, None, "epc.lab")
            .utf8(avp::DESTINATION_REALM, None, "epc.lab")
            .utf8(avp::USER_NAME, None, "001010000000001")
            .grouped(avp::REQUESTED_EUTRAN_AUTHENTICATION_INFO, V, |g| {
                g.u32(avp::NUMBER_OF_REQUESTED_VECTORS, V, 1).u32(
                    avp::IMMEDIATE_RESPONSE_PREFERRED,
                    V,
                    0,
                );
            })
            .avp(avp::VISITED_PLMN_ID, V, true, &plmn);
        let air = m.finish();
        let request = hex(AIR);
        let request = DiameterPacket::new_checked(&request[..]).unwrap();
        let mut m = MessageBuilder::answer(&request, false);
        m.utf8(avp::SESSION_ID, None, SID)
            .u32(avp::RESULT_CODE, None, result::SUCCESS)
            .u32(avp::AUTH_SESSION_STATE, None, 1)
            .utf8(avp::ORIGIN_HOST, None, "hss.epc.lab")
            .utf8(avp::ORIGIN_REALM, None, "epc.lab")
            .grouped(avp::AUTHENTICATION_INFO, V, |g| {
                g.grouped(avp::E_UTRAN_VECTOR, V, |v| {
                    v.avp(avp::RAND, V, true, &hex("23553cbe9637a89d218ae64dae47bf35"))
                        .avp(avp::XRES, V, true, &hex("a54211d5e3ba50bf"))
                        .avp(avp::AUTN, V, true, &hex("aa689c6483508000904cbb451b65def8"))
                        .avp(avp::KASME, V, true, &[0; 32]);
                });
            });
        let aia = m.finish();
        let mut m = MessageBuilder::new(cmd::AUTHENTICATION_INFORMATION, APP_S6A, ans(true), 4, 4);
        m.utf8(avp::SESSION_ID, None, SID)
            .grouped(avp::EXPERIMENTAL_RESULT, None, |g| {
                g.u32(avp::VENDOR_ID, None, VENDOR_3GPP).u32(
                    avp::EXPERIMENTAL_RESULT_CODE,
                    None,
                    result::ERROR_USER_UNKNOWN,
                );
            })
            .u32(avp::AUTH_SESSION_STATE, None, 1)
            .utf8(avp::ORIGIN_HOST, None, "hss.epc.lab")
            .utf8(avp::ORIGIN_REALM, None, "epc.lab");
        let unknown = m.finish();
        let (f, h) = req(5, true);
        let mut m = MessageBuilder::new(cmd::UPDATE_LOCATION, APP_S6A, f, h, h);
        m.utf8(avp::SESSION_ID, None, SID)
            .u32(avp::AUTH_SESSION_STATE, None, 1)
            .utf8(avp::ORIGIN_HOST, None, "mme.epc.lab")
            .utf8(avp::ORIGIN_REALM, None, "epc.lab")
            .utf8(avp::DESTINATION_REALM, None, "epc.lab")
            .utf8(avp::USER_NAME, None, "001010000000001")
            .u32(avp::RAT_TYPE, V, 1004)
            .u32(avp::ULR_FLAGS, V, 0x22)
            .avp(avp::VISITED_PLMN_ID, V, true, &plmn);
        let ulr = m.finish();
        let ambr = |g: &mut MessageBuilder| {
            g.grouped(avp::AMBR, V, |a| {
                a.u32(avp::MAX_REQUESTED_BANDWIDTH_UL, V, 100_000_000).u32(
                    avp::MAX_REQUESTED_BANDWIDTH_DL,
                    V,
                    100_000_000,
                );
            });
        };
        let mut m = MessageBuilder::new(cmd::UPDATE_LOCATION, APP_S6A, ans(true), 5, 5);
        m.utf8(avp::SESSION_ID, None, SID)
            .u32(avp::RESULT_CODE, None, result::SUCCESS)
            .u32(avp::AUTH_SESSION_STATE, None, 1)
            .utf8(avp::ORIGIN_HOST, None, "hss.epc.lab")
            .utf8(avp::ORIGIN_REALM, None, "epc.lab")
            .u32(avp::ULA_FLAGS, V, 1)
            .grouped(avp::SUBSCRIPTION_DATA, V, |s| {
                s.u32(avp::SUBSCRIBER_STATUS, V, 0)
                    .u32(avp::NETWORK_ACCESS_MODE, V, 2);
                ambr(s);
                s.grouped(avp::APN_CONFIGURATION_PROFILE, V, |p| {
                    p.u32(avp::CONTEXT_IDENTIFIER, V, 1)
                        .u32(avp::ALL_APN_CONFIGURATIONS_INCLUDED_INDICATOR, V, 0)
                        .grouped(avp::APN_CONFIGURATION, V, |c| {
                            c.u32(avp::CONTEXT_IDENTIFIER, V, 1)
                                .u32(avp::PDN_TYPE, V, 0)
                                .utf8(avp::SERVICE_SELECTION, None, "internet")
                                .grouped(avp::EPS_SUBSCRIBED_QOS_PROFILE, V, |q| {
                                    q.u32(avp::QOS_CLASS_IDENTIFIER, V, 9).grouped(
                                        avp::ALLOCATION_RETENTION_PRIORITY,
                                        V,
                                        |r| {
                                            r.u32(avp::PRIORITY_LEVEL, V, 9)
                                                .u32(avp::PRE_EMPTION_CAPABILITY, V, 1)
                                                .u32(avp::PRE_EMPTION_VULNERABILITY, V, 1);
                                        },
                                    );
                                });
                            ambr(c);
                        });
                });
            });
        let ula = m.finish();
        vec![
            (CER, cer),
            (CEA, cea),
            (DWR, dwr),
            (DWA, dwa),
            (AIR, air),
            (AIA, aia),
            (AIA_USER_UNKNOWN, unknown),
            (ULR, ulr),
            (ULA, ula),
        ]
    }

    #[test]
    fn the_builder_writes_the_fixtures_byte_for_byte() {
        for (want, got) in built() {
            assert_eq!(got, hex(want), "{want}");
        }
    }

    #[test]
    fn an_authentication_information_answer_reads_down_to_its_vector() {
        let b = hex(AIA);
        let p = DiameterPacket::new_checked(&b[..]).unwrap();
        assert!(!p.is_request() && p.is_proxiable() && !p.is_error());
        assert_eq!(
            (p.command_code(), p.application_id()),
            (cmd::AUTHENTICATION_INFORMATION, APP_S6A)
        );
        assert_eq!((p.hop_by_hop(), p.end_to_end()), (3, 3));
        let avps = p.avp_bytes();
        assert_eq!(
            find(avps, avp::SESSION_ID, None).unwrap().unwrap().utf8(),
            Ok(SID)
        );
        assert_eq!(
            find(avps, avp::RESULT_CODE, None).unwrap().unwrap().u32(),
            Ok(result::SUCCESS)
        );
        let info = find(avps, avp::AUTHENTICATION_INFO, V).unwrap().unwrap();
        let vector = find(info.data, avp::E_UTRAN_VECTOR, V).unwrap().unwrap();
        let autn = find(vector.data, avp::AUTN, V).unwrap().unwrap();
        assert_eq!(autn.data, &hex("aa689c6483508000904cbb451b65def8")[..]);
        assert!(autn.mandatory && autn.vendor == V);
        assert_eq!(
            p.to_string(),
            "Diameter Authentication-Information Answer h2h 3 e2e 3"
        );

        let b = hex(CER);
        let p = DiameterPacket::new_checked(&b[..]).unwrap();
        let ip = p
            .avps_ref()
            .find(|a| a.is_ok_and(|a| a.code == avp::HOST_IP_ADDRESS))
            .unwrap();
        assert_eq!(ip.unwrap().ipv4(), Ok(a("172.16.5.1")));
        let product = find(p.avp_bytes(), avp::PRODUCT_NAME, None)
            .unwrap()
            .unwrap();
        assert!(!product.mandatory);
        let b = hex(AIA_USER_UNKNOWN);
        let p = DiameterPacket::new_checked(&b[..]).unwrap();
        let e = find(p.avp_bytes(), avp::EXPERIMENTAL_RESULT, None)
            .unwrap()
            .unwrap();
        let code = e
            .group()
            .flatten()
            .find(|a| a.code == avp::EXPERIMENTAL_RESULT_CODE)
            .unwrap();
        assert_eq!(code.u32(), Ok(result::ERROR_USER_UNKNOWN));
    }

    #[test]
    fn a_stream_is_cut_into_messages_and_bad_lengths_are_refused() {
        let mut stream = hex(DWR);
        stream.extend_from_slice(&hex(DWA)[..10]);
        let n = message_len(&stream).unwrap().unwrap();
        assert_eq!(n, hex(DWR).len());
        assert_eq!(message_len(&stream[n..]).unwrap(), Ok(hex(DWA).len()));
        assert_eq!(message_len(&stream[..3]), None);
        assert_eq!(
            message_len(&[2, 0, 0, 20]),
            Some(Err(DiameterError::Version(2)))
        );
        assert_eq!(
            message_len(&[1, 0, 0, 19]),
            Some(Err(DiameterError::Length))
        );
        assert_eq!(
            message_len(&[1, 0, 0, 22]),
            Some(Err(DiameterError::Length))
        );
        assert_eq!(
            message_len(&[1, 0x10, 0, 0]),
            Some(Err(DiameterError::TooLong))
        );
        let b = hex(DWR);
        assert_eq!(
            DiameterPacket::new_checked(&b[..19]).unwrap_err(),
            DiameterError::Truncated
        );
        assert_eq!(
            DiameterPacket::new_checked(&b[..24]).unwrap_err(),
            DiameterError::Length
        );
        // An AVP whose length runs past the message, and one below its header.
        let mut bad = b.clone();
        bad[HEADER_LEN + 7] = 0xf0;
        let p = DiameterPacket::new_checked(&bad[..]).unwrap();
        assert_eq!(p.avps_ref().next(), Some(Err(DiameterError::AvpLength)));
        bad[HEADER_LEN + 7] = 7;
        let p = DiameterPacket::new_checked(&bad[..]).unwrap();
        assert_eq!(
            find(p.avp_bytes(), avp::ORIGIN_REALM, None),
            Err(DiameterError::AvpLength)
        );
        let v = Avp {
            code: 1,
            vendor: None,
            mandatory: true,
            data: &[1, 2, 3],
        };
        assert_eq!(v.u32(), Err(DiameterError::AvpValue));
        assert_eq!(v.ipv4(), Err(DiameterError::AvpValue));
        assert_eq!(
            Avp { data: &[0xff], ..v }.utf8(),
            Err(DiameterError::AvpValue)
        );
    }

    proptest! {
        #[test]
        fn avps_round_trip(code: u32, vendor: Option<u32>, mandatory: bool,
                data in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut m = MessageBuilder::new(cmd::DEVICE_WATCHDOG, 0, Flags::default(), 1, 2);
            m.avp(code, vendor, mandatory, &data);
            let b = m.finish();
            prop_assert_eq!(b.len() % 4, 0);
            let p = DiameterPacket::new_checked(&b[..]).unwrap();
            let got: Vec<_> = p.avps_ref().collect();
            prop_assert_eq!(got, vec![Ok(Avp { code, vendor, mandatory, data: &data })]);
        }

        #[test]
        fn no_input_panics(b in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = message_len(&b);
            if let Ok(p) = DiameterPacket::new_checked(&b[..]) {
                let _ = (p.command_code(), p.application_id(), p.reserved_flags(), p.to_string());
                for a in p.avps_ref().flatten() {
                    let _ = (a.u32(), a.utf8(), a.ipv4(), a.group().count());
                }
            }
        }
    }
}
