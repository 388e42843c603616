//! BGP-4 messages, over TCP port 179.
//!
//! Read RFC 4271 first: § 4.1 for the header (16 octets of marker, all
//! ones; a 2-octet length of the whole message, 19..=4096; a type), § 4.2
//! OPEN, § 4.3 UPDATE with its prefixes (a length in bits, then as few
//! octets as hold it) and path attributes (flags, type code, one or two
//! octets of length), § 4.4 KEEPALIVE, § 4.5 NOTIFICATION with its error
//! codes, § 5 for what each path attribute means and § 6 for the errors a
//! speaker answers with a NOTIFICATION. Then:
//!
//! - RFC 5492, capabilities in the OPEN's optional parameter 2;
//! - RFC 6793, 4-octet AS numbers: the capability (code 65), AS_PATH and
//!   AGGREGATOR with 4-octet numbers between speakers that both announce it,
//!   and towards an "OLD" 2-octet speaker AS_TRANS (23456) in AS_PATH with
//!   the true path in AS4_PATH (§ 4.2.2), merged back on receipt (§ 4.2.3);
//! - RFC 2918, ROUTE-REFRESH (type 5, one AFI/SAFI);
//! - RFC 7606, revised error handling for UPDATE: an attribute that is
//!   malformed makes the UPDATE's routes withdrawn ("treat-as-withdraw") or
//!   is dropped ("attribute discard"), and keeps the session; only what
//!   leaves the NLRI unparseable resets it.
//!
//! Errors are what the speaker sends: a parse that fails returns the
//! [`NotificationRepr`] RFC 4271 § 6 names for it.

use crate::Ipv4Cidr;
use std::fmt;
use std::net::Ipv4Addr;

/// The TCP port of BGP [RFC 4271 § 8.2.1].
pub const PORT: u16 = 179;
/// Marker, length and type [RFC 4271 § 4.1].
pub const HEADER_LEN: usize = 19;
/// The largest message [RFC 4271 § 4.1] (RFC 8654's extended messages are
/// not announced).
pub const MAX_LEN: usize = 4096;
/// BGP-4 [RFC 4271 § 4.2].
pub const VERSION: u8 = 4;
/// The 2-octet AS number that stands for a 4-octet one towards a speaker
/// without RFC 6793 [RFC 6793 § 9].
pub const AS_TRANS: u16 = 23456;
/// The marker: "all ones" [RFC 4271 § 4.1].
pub const MARKER: [u8; 16] = [0xff; 16];

/// The smallest OPEN (no optional parameters) [RFC 4271 § 4.2].
const MIN_OPEN_LEN: usize = 29;
/// The smallest UPDATE (both length fields zero) [RFC 4271 § 4.3].
const MIN_UPDATE_LEN: usize = 23;
/// The smallest NOTIFICATION (no data) [RFC 4271 § 4.5].
const MIN_NOTIFICATION_LEN: usize = 21;
/// A ROUTE-REFRESH is exactly this long [RFC 2918 § 3].
const ROUTE_REFRESH_LEN: usize = 23;

mod field {
    use std::ops::Range;
    pub const MARKER: Range<usize> = 0..16;
    pub const LENGTH: Range<usize> = 16..18;
    pub const TYPE: usize = 18;
}

/// Message types [RFC 4271 § 4.1; RFC 2918 § 3].
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum MessageType {
    Open,
    Update,
    Notification,
    Keepalive,
    RouteRefresh,
    Unknown(u8),
}

impl From<u8> for MessageType {
    fn from(v: u8) -> MessageType {
        match v {
            1 => MessageType::Open,
            2 => MessageType::Update,
            3 => MessageType::Notification,
            4 => MessageType::Keepalive,
            5 => MessageType::RouteRefresh,
            n => MessageType::Unknown(n),
        }
    }
}

impl From<MessageType> for u8 {
    fn from(t: MessageType) -> u8 {
        match t {
            MessageType::Open => 1,
            MessageType::Update => 2,
            MessageType::Notification => 3,
            MessageType::Keepalive => 4,
            MessageType::RouteRefresh => 5,
            MessageType::Unknown(n) => n,
        }
    }
}

/// NOTIFICATION error codes and subcodes [RFC 4271 § 4.5, § 6; RFC 4486;
/// RFC 5492 § 5; RFC 7313 § 5].
pub mod error {
    pub const MESSAGE_HEADER: u8 = 1;
    pub const OPEN_MESSAGE: u8 = 2;
    pub const UPDATE_MESSAGE: u8 = 3;
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    pub const FSM: u8 = 5;
    pub const CEASE: u8 = 6;
    pub const ROUTE_REFRESH: u8 = 7;

    /// Message Header Error subcodes [RFC 4271 § 6.1].
    pub mod header {
        pub const CONNECTION_NOT_SYNCHRONIZED: u8 = 1;
        pub const BAD_MESSAGE_LENGTH: u8 = 2;
        pub const BAD_MESSAGE_TYPE: u8 = 3;
    }
    /// OPEN Message Error subcodes [RFC 4271 § 6.2; RFC 5492 § 5].
    pub mod open {
        pub const UNSPECIFIC: u8 = 0;
        pub const UNSUPPORTED_VERSION: u8 = 1;
        pub const BAD_PEER_AS: u8 = 2;
        pub const BAD_BGP_IDENTIFIER: u8 = 3;
        pub const UNSUPPORTED_OPTIONAL_PARAMETER: u8 = 4;
        pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;
        pub const UNSUPPORTED_CAPABILITY: u8 = 7;
    }
    /// UPDATE Message Error subcodes [RFC 4271 § 6.3].
    pub mod update {
        pub const MALFORMED_ATTRIBUTE_LIST: u8 = 1;
        pub const UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE: u8 = 2;
        pub const MISSING_WELL_KNOWN_ATTRIBUTE: u8 = 3;
        pub const ATTRIBUTE_FLAGS_ERROR: u8 = 4;
        pub const ATTRIBUTE_LENGTH_ERROR: u8 = 5;
        pub const INVALID_ORIGIN_ATTRIBUTE: u8 = 6;
        pub const INVALID_NEXT_HOP_ATTRIBUTE: u8 = 8;
        pub const OPTIONAL_ATTRIBUTE_ERROR: u8 = 9;
        pub const INVALID_NETWORK_FIELD: u8 = 10;
        pub const MALFORMED_AS_PATH: u8 = 11;
    }
    /// Finite State Machine Error subcodes [RFC 6608 § 4].
    pub mod fsm {
        pub const UNSPECIFIED: u8 = 0;
        pub const UNEXPECTED_IN_OPEN_SENT: u8 = 1;
        pub const UNEXPECTED_IN_OPEN_CONFIRM: u8 = 2;
        pub const UNEXPECTED_IN_ESTABLISHED: u8 = 3;
    }
    /// Cease subcodes [RFC 4486 § 4].
    pub mod cease {
        pub const MAXIMUM_PREFIXES: u8 = 1;
        pub const ADMINISTRATIVE_SHUTDOWN: u8 = 2;
        pub const PEER_DECONFIGURED: u8 = 3;
        pub const ADMINISTRATIVE_RESET: u8 = 4;
        pub const CONNECTION_REJECTED: u8 = 5;
        pub const OTHER_CONFIGURATION_CHANGE: u8 = 6;
        pub const CONNECTION_COLLISION_RESOLUTION: u8 = 7;
        pub const OUT_OF_RESOURCES: u8 = 8;
    }
}

/// A NOTIFICATION: an error code, a subcode and data [RFC 4271 § 4.5].
/// Parsing answers with the one a speaker must send.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
#[error("{}", self.describe())]
pub struct NotificationRepr {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl NotificationRepr {
    pub fn new(code: u8, subcode: u8, data: impl Into<Vec<u8>>) -> NotificationRepr {
        NotificationRepr {
            code,
            subcode,
            data: data.into(),
        }
    }

    /// The code's and subcode's names as the RFCs write them.
    pub fn names(&self) -> (&'static str, &'static str) {
        use error::*;
        let code = match self.code {
            MESSAGE_HEADER => "Message Header Error",
            OPEN_MESSAGE => "OPEN Message Error",
            UPDATE_MESSAGE => "UPDATE Message Error",
            HOLD_TIMER_EXPIRED => "Hold Timer Expired",
            FSM => "Finite State Machine Error",
            CEASE => "Cease",
            ROUTE_REFRESH => "ROUTE-REFRESH Message Error",
            _ => "unknown error code",
        };
        let sub = match (self.code, self.subcode) {
            (MESSAGE_HEADER, 1) => "Connection Not Synchronized",
            (MESSAGE_HEADER, 2) => "Bad Message Length",
            (MESSAGE_HEADER, 3) => "Bad Message Type",
            (OPEN_MESSAGE, 0) => "Unspecific",
            (OPEN_MESSAGE, 1) => "Unsupported Version Number",
            (OPEN_MESSAGE, 2) => "Bad Peer AS",
            (OPEN_MESSAGE, 3) => "Bad BGP Identifier",
            (OPEN_MESSAGE, 4) => "Unsupported Optional Parameter",
            (OPEN_MESSAGE, 6) => "Unacceptable Hold Time",
            (OPEN_MESSAGE, 7) => "Unsupported Capability",
            (UPDATE_MESSAGE, 1) => "Malformed Attribute List",
            (UPDATE_MESSAGE, 2) => "Unrecognized Well-known Attribute",
            (UPDATE_MESSAGE, 3) => "Missing Well-known Attribute",
            (UPDATE_MESSAGE, 4) => "Attribute Flags Error",
            (UPDATE_MESSAGE, 5) => "Attribute Length Error",
            (UPDATE_MESSAGE, 6) => "Invalid ORIGIN Attribute",
            (UPDATE_MESSAGE, 8) => "Invalid NEXT_HOP Attribute",
            (UPDATE_MESSAGE, 9) => "Optional Attribute Error",
            (UPDATE_MESSAGE, 10) => "Invalid Network Field",
            (UPDATE_MESSAGE, 11) => "Malformed AS_PATH",
            (FSM, 0) => "Unspecified Error",
            (FSM, 1) => "Receive Unexpected Message in OpenSent State",
            (FSM, 2) => "Receive Unexpected Message in OpenConfirm State",
            (FSM, 3) => "Receive Unexpected Message in Established State",
            (CEASE, 1) => "Maximum Number of Prefixes Reached",
            (CEASE, 2) => "Administrative Shutdown",
            (CEASE, 3) => "Peer De-configured",
            (CEASE, 4) => "Administrative Reset",
            (CEASE, 5) => "Connection Rejected",
            (CEASE, 6) => "Other Configuration Change",
            (CEASE, 7) => "Connection Collision Resolution",
            (CEASE, 8) => "Out of Resources",
            (_, 0) => "",
            _ => "unknown subcode",
        };
        (code, sub)
    }

    /// `2/2 OPEN Message Error / Bad Peer AS`.
    pub fn describe(&self) -> String {
        let (c, s) = self.names();
        if s.is_empty() {
            format!("{}/{} {c}", self.code, self.subcode)
        } else {
            format!("{}/{} {c} / {s}", self.code, self.subcode)
        }
    }

    fn parse(body: &[u8]) -> NotificationRepr {
        // The header check guarantees the two octets.
        NotificationRepr::new(body[0], body[1], &body[2..])
    }

    pub fn buffer_len(&self) -> usize {
        MIN_NOTIFICATION_LEN + self.data.len()
    }

    fn emit_body(&self, buf: &mut Vec<u8>) {
        buf.push(self.code);
        buf.push(self.subcode);
        buf.extend_from_slice(&self.data);
    }
}

fn header_error(subcode: u8, data: &[u8]) -> NotificationRepr {
    NotificationRepr::new(error::MESSAGE_HEADER, subcode, data)
}

fn update_error(subcode: u8, data: &[u8]) -> NotificationRepr {
    NotificationRepr::new(error::UPDATE_MESSAGE, subcode, data)
}

fn open_error(subcode: u8) -> NotificationRepr {
    NotificationRepr::new(error::OPEN_MESSAGE, subcode, Vec::new())
}

/// How long the first whole message in a TCP stream is: `Ok(None)` when
/// more bytes are needed, the NOTIFICATION to send when the header is bad
/// (the marker, or a length outside 19..=4096, whose two octets are the
/// data) [RFC 4271 § 6.1]. This is how a speaker cuts its byte stream.
pub fn message_len(stream: &[u8]) -> Result<Option<usize>, NotificationRepr> {
    if stream.len() < HEADER_LEN {
        return Ok(None);
    }
    if stream[field::MARKER] != MARKER {
        return Err(header_error(
            error::header::CONNECTION_NOT_SYNCHRONIZED,
            &[],
        ));
    }
    let raw = &stream[field::LENGTH];
    let len = usize::from(u16::from_be_bytes([raw[0], raw[1]]));
    if !(HEADER_LEN..=MAX_LEN).contains(&len) {
        return Err(header_error(error::header::BAD_MESSAGE_LENGTH, raw));
    }
    Ok((stream.len() >= len).then_some(len))
}

/// A view of one whole BGP message. After [`BgpPacket::new_checked`] no
/// accessor panics: the marker is all ones, the length field equals the
/// buffer's length and suits the type, and the type is known.
#[derive(Debug, Clone)]
pub struct BgpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> BgpPacket<T> {
    /// The checks of RFC 4271 § 6.1 (and RFC 2918 § 3's length for
    /// ROUTE-REFRESH); the error is the NOTIFICATION to send.
    pub fn new_checked(buffer: T) -> Result<Self, NotificationRepr> {
        let b = buffer.as_ref();
        match message_len(b)? {
            Some(n) if n == b.len() => {}
            _ => {
                let raw = b.get(field::LENGTH).unwrap_or(&[]);
                return Err(header_error(error::header::BAD_MESSAGE_LENGTH, raw));
            }
        }
        let len = b.len();
        let ok = match MessageType::from(b[field::TYPE]) {
            MessageType::Open => len >= MIN_OPEN_LEN,
            MessageType::Update => len >= MIN_UPDATE_LEN,
            MessageType::Notification => len >= MIN_NOTIFICATION_LEN,
            MessageType::Keepalive => len == HEADER_LEN,
            MessageType::RouteRefresh => len == ROUTE_REFRESH_LEN,
            MessageType::Unknown(t) => {
                return Err(header_error(error::header::BAD_MESSAGE_TYPE, &[t]));
            }
        };
        if !ok {
            return Err(header_error(
                error::header::BAD_MESSAGE_LENGTH,
                &b[field::LENGTH],
            ));
        }
        Ok(BgpPacket { buffer })
    }

    pub fn length(&self) -> usize {
        let b = &self.buffer.as_ref()[field::LENGTH];
        usize::from(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn message_type(&self) -> MessageType {
        self.buffer.as_ref()[field::TYPE].into()
    }

    /// What follows the header.
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]>> fmt::Display for BgpPacket<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BGP {:?} length {}", self.message_type(), self.length())
    }
}

/// One capability [RFC 5492 § 4].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Capability {
    /// Multiprotocol extensions for one AFI/SAFI [RFC 4760 § 8].
    Multiprotocol { afi: u16, safi: u8 },
    /// ROUTE-REFRESH [RFC 2918 § 2].
    RouteRefresh,
    /// 4-octet AS numbers, with the speaker's own AS [RFC 6793 § 3].
    FourOctetAs(u32),
    /// Anything else, kept as received.
    Unknown { code: u8, data: Vec<u8> },
}

/// AFI and SAFI of IPv4 unicast [RFC 4760; IANA].
pub const AFI_IPV4: u16 = 1;
pub const SAFI_UNICAST: u8 = 1;

impl Capability {
    fn code(&self) -> u8 {
        match self {
            Capability::Multiprotocol { .. } => 1,
            Capability::RouteRefresh => 2,
            Capability::FourOctetAs(_) => 65,
            Capability::Unknown { code, .. } => *code,
        }
    }

    fn value_len(&self) -> usize {
        match self {
            Capability::Multiprotocol { .. } | Capability::FourOctetAs(_) => 4,
            Capability::RouteRefresh => 0,
            Capability::Unknown { data, .. } => data.len(),
        }
    }

    /// A capability's code and value; a known one of the wrong length is
    /// malformed: OPEN Message Error / Unspecific [RFC 4271 § 6.2].
    fn parse(code: u8, v: &[u8]) -> Result<Capability, NotificationRepr> {
        let bad = || open_error(error::open::UNSPECIFIC);
        Ok(match code {
            1 => {
                let [a0, a1, _reserved, safi] = v else {
                    return Err(bad());
                };
                Capability::Multiprotocol {
                    afi: u16::from_be_bytes([*a0, *a1]),
                    safi: *safi,
                }
            }
            2 if v.is_empty() => Capability::RouteRefresh,
            2 => return Err(bad()),
            65 => Capability::FourOctetAs(u32::from_be_bytes(v.try_into().map_err(|_| bad())?)),
            code => Capability::Unknown {
                code,
                data: v.to_vec(),
            },
        })
    }

    fn emit(&self, buf: &mut Vec<u8>) {
        buf.push(self.code());
        buf.push(self.value_len() as u8);
        match self {
            Capability::Multiprotocol { afi, safi } => {
                buf.extend_from_slice(&afi.to_be_bytes());
                buf.extend_from_slice(&[0, *safi]);
            }
            Capability::RouteRefresh => {}
            Capability::FourOctetAs(asn) => buf.extend_from_slice(&asn.to_be_bytes()),
            Capability::Unknown { data, .. } => buf.extend_from_slice(data),
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Capability::Multiprotocol { afi: 1, safi: 1 } => {
                write!(f, "multiprotocol ipv4/unicast")
            }
            Capability::Multiprotocol { afi, safi } => write!(f, "multiprotocol {afi}/{safi}"),
            Capability::RouteRefresh => write!(f, "route-refresh"),
            Capability::FourOctetAs(a) => write!(f, "4-octet AS {a}"),
            Capability::Unknown { code, data } => match unsupported_capability_name(*code) {
                Some(name) => write!(f, "{name} (not used)"),
                None => write!(f, "capability {code} ({} octets)", data.len()),
            },
        }
    }
}

/// Names of capabilities BIRD and GoBGP offer that this speaker does not
/// use, so `d11 show ROUTER bgp` says what a peer offered (IANA "Capability
/// Codes" registry).
fn unsupported_capability_name(code: u8) -> Option<&'static str> {
    Some(match code {
        5 => "extended next hop (RFC 8950)",
        6 => "extended message (RFC 8654)",
        64 => "graceful restart (RFC 4724)",
        69 => "ADD-PATH (RFC 7911)",
        70 => "enhanced route refresh (RFC 7313)",
        71 => "long-lived graceful restart (RFC 9494)",
        73 => "FQDN",
        _ => return None,
    })
}

/// An OPEN optional parameter [RFC 4271 § 4.2].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OptParam {
    /// Parameter 2: capabilities [RFC 5492 § 4]; one parameter may hold several.
    Capabilities(Vec<Capability>),
    Unknown {
        kind: u8,
        data: Vec<u8>,
    },
}

impl OptParam {
    fn value_len(&self) -> usize {
        match self {
            OptParam::Capabilities(c) => c.iter().map(|c| 2 + c.value_len()).sum(),
            OptParam::Unknown { data, .. } => data.len(),
        }
    }
}

/// An OPEN [RFC 4271 § 4.2], its optional parameters as they came.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OpenRepr {
    pub version: u8,
    /// The 2-octet "My Autonomous System": [`AS_TRANS`] for a speaker whose
    /// AS needs four octets [RFC 6793 § 3].
    pub my_as: u16,
    pub hold_time: u16,
    pub bgp_id: Ipv4Addr,
    pub params: Vec<OptParam>,
}

impl OpenRepr {
    /// The OPEN a speaker of AS `asn` sends: version 4, one optional
    /// parameter with every capability (as BIRD, FRR and GoBGP send it),
    /// `my_as` AS_TRANS when `asn` needs four octets.
    pub fn new(asn: u32, hold_time: u16, bgp_id: Ipv4Addr, caps: Vec<Capability>) -> OpenRepr {
        OpenRepr {
            version: VERSION,
            my_as: u16::try_from(asn).unwrap_or(AS_TRANS),
            hold_time,
            bgp_id,
            params: vec![OptParam::Capabilities(caps)],
        }
    }

    /// Every capability, across the parameters.
    pub fn capabilities(&self) -> impl Iterator<Item = &Capability> {
        self.params.iter().flat_map(|p| match p {
            OptParam::Capabilities(c) => c.as_slice(),
            OptParam::Unknown { .. } => &[],
        })
    }

    /// The speaker's AS: its 4-octet capability's if it sent one, else `my_as`.
    pub fn asn(&self) -> u32 {
        self.four_octet_as().unwrap_or(u32::from(self.my_as))
    }

    /// The AS in the 4-octet capability, if present [RFC 6793 § 3].
    pub fn four_octet_as(&self) -> Option<u32> {
        self.capabilities().find_map(|c| match c {
            Capability::FourOctetAs(a) => Some(*a),
            _ => None,
        })
    }

    pub fn has(&self, cap: &Capability) -> bool {
        self.capabilities().any(|c| c == cap)
    }

    /// The OPEN's body. Malformed optional parameters are OPEN Message
    /// Error / Unspecific [RFC 4271 § 6.2]; the version, AS, hold time and
    /// identifier are the speaker's to judge.
    pub fn parse<T: AsRef<[u8]>>(p: &BgpPacket<T>) -> Result<OpenRepr, NotificationRepr> {
        let b = p.body();
        let bad = || open_error(error::open::UNSPECIFIC);
        let opt_len = usize::from(b[9]);
        let opts = b.get(10..10 + opt_len).ok_or_else(bad)?;
        if 10 + opt_len != b.len() {
            return Err(bad());
        }
        let mut params = Vec::new();
        let mut i = 0;
        while i < opts.len() {
            let (kind, len) = match opts.get(i..i + 2) {
                Some([k, l]) => (*k, usize::from(*l)),
                _ => return Err(bad()),
            };
            let v = opts.get(i + 2..i + 2 + len).ok_or_else(bad)?;
            i += 2 + len;
            if kind != 2 {
                params.push(OptParam::Unknown {
                    kind,
                    data: v.to_vec(),
                });
                continue;
            }
            let mut caps = Vec::new();
            let mut j = 0;
            while j < v.len() {
                let (code, len) = match v.get(j..j + 2) {
                    Some([c, l]) => (*c, usize::from(*l)),
                    _ => return Err(bad()),
                };
                let cv = v.get(j + 2..j + 2 + len).ok_or_else(bad)?;
                caps.push(Capability::parse(code, cv)?);
                j += 2 + len;
            }
            params.push(OptParam::Capabilities(caps));
        }
        Ok(OpenRepr {
            version: b[0],
            my_as: u16::from_be_bytes([b[1], b[2]]),
            hold_time: u16::from_be_bytes([b[3], b[4]]),
            bgp_id: Ipv4Addr::new(b[5], b[6], b[7], b[8]),
            params,
        })
    }

    pub fn buffer_len(&self) -> usize {
        MIN_OPEN_LEN + self.params.iter().map(|p| 2 + p.value_len()).sum::<usize>()
    }

    fn emit_body(&self, buf: &mut Vec<u8>) {
        buf.push(self.version);
        buf.extend_from_slice(&self.my_as.to_be_bytes());
        buf.extend_from_slice(&self.hold_time.to_be_bytes());
        buf.extend_from_slice(&self.bgp_id.octets());
        let opt_len: usize = self.params.iter().map(|p| 2 + p.value_len()).sum();
        buf.push(opt_len as u8);
        for p in &self.params {
            match p {
                OptParam::Capabilities(caps) => {
                    buf.push(2);
                    buf.push(p.value_len() as u8);
                    for c in caps {
                        c.emit(buf);
                    }
                }
                OptParam::Unknown { kind, data } => {
                    buf.push(*kind);
                    buf.push(data.len() as u8);
                    buf.extend_from_slice(data);
                }
            }
        }
    }
}

impl fmt::Display for OpenRepr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "OPEN v{} AS {} hold {} s id {}",
            self.version,
            self.asn(),
            self.hold_time,
            self.bgp_id
        )?;
        let caps: Vec<String> = self.capabilities().map(|c| c.to_string()).collect();
        if !caps.is_empty() {
            write!(f, " capabilities [{}]", caps.join(", "))?;
        }
        Ok(())
    }
}

/// A ROUTE-REFRESH for one AFI/SAFI [RFC 2918 § 3]; `subtype` is the
/// octet RFC 2918 reserves and RFC 7313 numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteRefreshRepr {
    pub afi: u16,
    pub subtype: u8,
    pub safi: u8,
}

impl RouteRefreshRepr {
    pub const IPV4_UNICAST: RouteRefreshRepr = RouteRefreshRepr {
        afi: AFI_IPV4,
        subtype: 0,
        safi: SAFI_UNICAST,
    };
}

/// ORIGIN [RFC 4271 § 5.1.1].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    Igp,
    Egp,
    Incomplete,
}

impl Origin {
    fn from_u8(v: u8) -> Option<Origin> {
        match v {
            0 => Some(Origin::Igp),
            1 => Some(Origin::Egp),
            2 => Some(Origin::Incomplete),
            _ => None,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Igp => "IGP",
            Origin::Egp => "EGP",
            Origin::Incomplete => "incomplete",
        })
    }
}

/// An AS_PATH segment's type [RFC 4271 § 4.3; RFC 5065 § 3 for the
/// confederation ones].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SegmentKind {
    Set,
    Sequence,
    ConfedSequence,
    ConfedSet,
}

impl SegmentKind {
    fn from_u8(v: u8) -> Option<SegmentKind> {
        match v {
            1 => Some(SegmentKind::Set),
            2 => Some(SegmentKind::Sequence),
            3 => Some(SegmentKind::ConfedSequence),
            4 => Some(SegmentKind::ConfedSet),
            _ => None,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            SegmentKind::Set => 1,
            SegmentKind::Sequence => 2,
            SegmentKind::ConfedSequence => 3,
            SegmentKind::ConfedSet => 4,
        }
    }
}

/// One AS_PATH segment: at most 255 AS numbers on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Segment {
    pub kind: SegmentKind,
    pub asns: Vec<u32>,
}

/// An AS_PATH (or AS4_PATH): its segments, AS numbers as 4 octets whatever
/// the session encodes them with.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AsPath {
    pub segments: Vec<Segment>,
}

impl AsPath {
    /// A path of one AS_SEQUENCE.
    pub fn sequence(asns: &[u32]) -> AsPath {
        if asns.is_empty() {
            return AsPath::default();
        }
        AsPath {
            segments: vec![Segment {
                kind: SegmentKind::Sequence,
                asns: asns.to_vec(),
            }],
        }
    }

    /// Its length for the decision process: each AS of a sequence counts,
    /// a set counts one, confederation segments none [RFC 4271 § 9.1.2.2
    /// a; RFC 5065 § 5.3].
    pub fn len(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s.kind {
                SegmentKind::Sequence => s.asns.len(),
                SegmentKind::Set => 1,
                _ => 0,
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// True if `asn` is anywhere in the path (a loop) [RFC 4271 § 9.1.2].
    pub fn contains(&self, asn: u32) -> bool {
        self.segments.iter().any(|s| s.asns.contains(&asn))
    }

    /// The neighbouring AS: the first of a leading AS_SEQUENCE
    /// [RFC 4271 § 9.1.2.2 c].
    pub fn first_as(&self) -> Option<u32> {
        match self.segments.first() {
            Some(Segment {
                kind: SegmentKind::Sequence,
                asns,
            }) => asns.first().copied(),
            _ => None,
        }
    }

    /// `asn` put in front, as a speaker does towards an external peer
    /// [RFC 4271 § 5.1.2]: into a leading AS_SEQUENCE with room, else a new one.
    pub fn prepend(&self, asn: u32) -> AsPath {
        let mut p = self.clone();
        match p.segments.first_mut() {
            Some(s) if s.kind == SegmentKind::Sequence && s.asns.len() < 255 => {
                s.asns.insert(0, asn)
            }
            _ => p.segments.insert(
                0,
                Segment {
                    kind: SegmentKind::Sequence,
                    asns: vec![asn],
                },
            ),
        }
        p
    }

    /// True if any AS needs four octets.
    pub fn has_four_octet_as(&self) -> bool {
        self.segments
            .iter()
            .any(|s| s.asns.iter().any(|a| *a > u32::from(u16::MAX)))
    }

    /// The same path for a 2-octet AS_PATH: AS_TRANS where an AS needs
    /// four octets [RFC 6793 § 4.2.2].
    pub fn with_as_trans(&self) -> AsPath {
        let mut p = self.clone();
        for s in &mut p.segments {
            for a in &mut s.asns {
                if *a > u32::from(u16::MAX) {
                    *a = u32::from(AS_TRANS);
                }
            }
        }
        p
    }

    /// The AS_PATH a NEW speaker builds from an OLD speaker's AS_PATH and
    /// AS4_PATH [RFC 6793 § 4.2.3]: when the AS4_PATH is no longer than
    /// the AS_PATH, its leading ASes are taken from the AS_PATH and the
    /// rest is the AS4_PATH; otherwise the AS4_PATH is ignored.
    pub fn merge_as4(&self, as4: &AsPath) -> AsPath {
        let n = self.len();
        let n4 = as4.len();
        if n < n4 {
            return self.clone();
        }
        let mut keep = n - n4;
        let mut out = AsPath::default();
        for s in &self.segments {
            if keep == 0 {
                break;
            }
            match s.kind {
                SegmentKind::Sequence if s.asns.len() > keep => {
                    out.segments.push(Segment {
                        kind: s.kind,
                        asns: s.asns[..keep].to_vec(),
                    });
                    keep = 0;
                }
                SegmentKind::Sequence => {
                    keep -= s.asns.len();
                    out.segments.push(s.clone());
                }
                SegmentKind::Set => {
                    keep -= 1;
                    out.segments.push(s.clone());
                }
                _ => out.segments.push(s.clone()),
            }
        }
        for s in &as4.segments {
            match out.segments.last_mut() {
                Some(last)
                    if last.kind == SegmentKind::Sequence && s.kind == SegmentKind::Sequence =>
                {
                    last.asns.extend_from_slice(&s.asns)
                }
                _ => out.segments.push(s.clone()),
            }
        }
        out
    }

    fn encoded_len(&self, four_octet: bool) -> usize {
        let w = if four_octet { 4 } else { 2 };
        self.segments
            .iter()
            .map(|s| {
                let chunks = s.asns.len().div_ceil(255).max(1);
                chunks * 2 + s.asns.len() * w
            })
            .sum()
    }

    fn emit(&self, buf: &mut Vec<u8>, four_octet: bool) {
        for s in &self.segments {
            let chunks: Vec<&[u32]> = if s.asns.is_empty() {
                vec![&[]]
            } else {
                s.asns.chunks(255).collect()
            };
            for c in chunks {
                buf.push(s.kind.to_u8());
                buf.push(c.len() as u8);
                for a in c {
                    if four_octet {
                        buf.extend_from_slice(&a.to_be_bytes());
                    } else {
                        // Callers substitute AS_TRANS first (with_as_trans).
                        buf.extend_from_slice(
                            &(u16::try_from(*a).unwrap_or(AS_TRANS)).to_be_bytes(),
                        );
                    }
                }
            }
        }
    }

    /// An AS_PATH's value, or why it is malformed [RFC 7606 § 7.2]: an
    /// unknown segment type, a segment of length zero, or one that overruns
    /// or underruns the attribute.
    fn parse(v: &[u8], four_octet: bool) -> Result<AsPath, &'static str> {
        let w = if four_octet { 4 } else { 2 };
        let mut segments: Vec<Segment> = Vec::new();
        let mut i = 0;
        while i < v.len() {
            let (t, n) = match v.get(i..i + 2) {
                Some([t, n]) => (*t, usize::from(*n)),
                _ => return Err("a lone octet after the last segment"),
            };
            let kind = SegmentKind::from_u8(t).ok_or("unknown segment type")?;
            if n == 0 {
                return Err("a segment of length zero");
            }
            let raw = v
                .get(i + 2..i + 2 + n * w)
                .ok_or("a segment overruns the attribute")?;
            let asns = raw
                .chunks_exact(w)
                .map(|c| match c {
                    [a, b] => u32::from(u16::from_be_bytes([*a, *b])),
                    _ => u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                })
                .collect();
            // Consecutive sequences (what a 255-AS split makes) read as one.
            match segments.last_mut() {
                Some(last) if last.kind == kind && kind == SegmentKind::Sequence => {
                    last.asns.extend::<Vec<u32>>(asns)
                }
                _ => segments.push(Segment { kind, asns }),
            }
            i += 2 + n * w;
        }
        Ok(AsPath { segments })
    }
}

impl fmt::Display for AsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for s in &self.segments {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            let list: Vec<String> = s.asns.iter().map(u32::to_string).collect();
            match s.kind {
                SegmentKind::Sequence => write!(f, "{}", list.join(" "))?,
                SegmentKind::Set => write!(f, "{{{}}}", list.join(" "))?,
                SegmentKind::ConfedSequence => write!(f, "({})", list.join(" "))?,
                SegmentKind::ConfedSet => write!(f, "[{}]", list.join(" "))?,
            }
        }
        Ok(())
    }
}

/// AGGREGATOR's value [RFC 4271 § 5.1.7].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Aggregator {
    pub asn: u32,
    pub address: Ipv4Addr,
}

/// Path attribute type codes [RFC 4271 § 5; RFC 1997; RFC 6793; RFC 4760].
pub mod attr {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MULTI_EXIT_DISC: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const MP_REACH_NLRI: u8 = 14;
    pub const MP_UNREACH_NLRI: u8 = 15;
    pub const AS4_PATH: u8 = 17;
    pub const AS4_AGGREGATOR: u8 = 18;

    /// Attribute flags [RFC 4271 § 4.3].
    pub const OPTIONAL: u8 = 0x80;
    pub const TRANSITIVE: u8 = 0x40;
    pub const PARTIAL: u8 = 0x20;
    pub const EXTENDED_LENGTH: u8 = 0x10;
}

/// An attribute this module does not interpret, kept with its flags (an
/// optional transitive one is passed on with Partial set [RFC 4271 § 5]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawAttr {
    pub flags: u8,
    pub code: u8,
    pub data: Vec<u8>,
}

/// The path attributes of an UPDATE, by meaning. AS numbers are 4-octet
/// whatever the session encodes them with.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct PathAttrs {
    pub origin: Option<Origin>,
    pub as_path: Option<AsPath>,
    pub next_hop: Option<Ipv4Addr>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub atomic_aggregate: bool,
    pub aggregator: Option<Aggregator>,
    /// COMMUNITIES, each `AS << 16 | value` [RFC 1997].
    pub communities: Option<Vec<u32>>,
    /// Only from (and to) a speaker without 4-octet AS numbers [RFC 6793].
    pub as4_path: Option<AsPath>,
    pub as4_aggregator: Option<Aggregator>,
    /// Unknown optional attributes, by type code.
    pub unknown: Vec<RawAttr>,
}

/// What RFC 7606 does with a malformed attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// The UPDATE's NLRI are withdrawn [RFC 7606 § 2].
    TreatAsWithdraw,
    /// The attribute is dropped and the UPDATE goes on [RFC 7606 § 2].
    AttributeDiscard,
}

/// A malformed or repeated attribute the UPDATE survived.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttrError {
    pub code: u8,
    pub action: Action,
    pub reason: &'static str,
}

impl fmt::Display for AttrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let action = match self.action {
            Action::TreatAsWithdraw => "treat-as-withdraw",
            Action::AttributeDiscard => "attribute discarded",
        };
        write!(f, "attribute {}: {} ({action})", self.code, self.reason)
    }
}

/// The flags RFC 4271 § 5 gives each known attribute: optional, transitive.
fn known_flags(code: u8) -> Option<(bool, bool)> {
    use attr::*;
    Some(match code {
        ORIGIN | AS_PATH | NEXT_HOP | LOCAL_PREF | ATOMIC_AGGREGATE => (false, true),
        MULTI_EXIT_DISC => (true, false),
        AGGREGATOR | COMMUNITIES | AS4_PATH | AS4_AGGREGATOR => (true, true),
        _ => return None,
    })
}

/// RFC 7606's action for a malformed attribute of type `code` (§ 7).
fn action_for(code: u8) -> Action {
    use attr::*;
    match code {
        ATOMIC_AGGREGATE | AGGREGATOR | AS4_PATH | AS4_AGGREGATOR => Action::AttributeDiscard,
        _ => Action::TreatAsWithdraw,
    }
}

impl PathAttrs {
    /// The AS_PATH, or an empty one.
    pub fn path(&self) -> AsPath {
        self.as_path.clone().unwrap_or_default()
    }

    /// The attributes to send to a speaker that does (`four_octet`) or does
    /// not announce 4-octet AS numbers: towards an OLD speaker, AS_TRANS in
    /// AS_PATH and AGGREGATOR with the truth in AS4_PATH and AS4_AGGREGATOR
    /// [RFC 6793 § 4.2.2]; towards a NEW one, never the AS4_ attributes.
    pub fn for_peer(&self, four_octet: bool) -> PathAttrs {
        let mut a = self.clone();
        a.as4_path = None;
        a.as4_aggregator = None;
        if four_octet {
            return a;
        }
        if let Some(p) = &self.as_path {
            if p.has_four_octet_as() {
                a.as_path = Some(p.with_as_trans());
                a.as4_path = Some(p.clone());
            }
        }
        if let Some(ag) = self.aggregator {
            if ag.asn > u32::from(u16::MAX) {
                a.aggregator = Some(Aggregator {
                    asn: u32::from(AS_TRANS),
                    address: ag.address,
                });
                a.as4_aggregator = Some(ag);
            }
        }
        a
    }

    /// What a NEW speaker makes of an OLD speaker's attributes: AS4_PATH
    /// merged into AS_PATH, AS4_AGGREGATOR into AGGREGATOR, unless the
    /// AGGREGATOR's AS is not AS_TRANS, in which case both AS4_ attributes
    /// are ignored [RFC 6793 § 4.2.3].
    pub fn merge_as4(&mut self) {
        let as4_path = self.as4_path.take();
        let as4_agg = self.as4_aggregator.take();
        if let Some(ag) = self.aggregator {
            if ag.asn != u32::from(AS_TRANS) {
                return;
            }
            if let Some(a4) = as4_agg {
                self.aggregator = Some(a4);
            }
        }
        if let (Some(p), Some(p4)) = (&self.as_path, as4_path) {
            self.as_path = Some(p.merge_as4(&p4));
        }
    }

    /// The encoded attributes' length, in type code order.
    pub fn buffer_len(&self, four_octet: bool) -> usize {
        let mut n = 0;
        self.each(four_octet, |_, _, len| {
            n += if len > 255 { 4 } else { 3 } + len
        });
        n
    }

    /// Calls `f(flags, code, value length)` for each attribute in type
    /// code order [RFC 4271 § 5: "SHOULD order path attributes … in
    /// ascending order of attribute type"].
    fn each(&self, four_octet: bool, mut f: impl FnMut(u8, u8, usize)) {
        use attr::*;
        let wk = TRANSITIVE;
        let ot = OPTIONAL | TRANSITIVE;
        let mut known: Vec<(u8, u8, usize)> = Vec::with_capacity(10);
        if self.origin.is_some() {
            known.push((wk, ORIGIN, 1));
        }
        if let Some(p) = &self.as_path {
            known.push((wk, AS_PATH, p.encoded_len(four_octet)));
        }
        if self.next_hop.is_some() {
            known.push((wk, NEXT_HOP, 4));
        }
        if self.med.is_some() {
            known.push((OPTIONAL, MULTI_EXIT_DISC, 4));
        }
        if self.local_pref.is_some() {
            known.push((wk, LOCAL_PREF, 4));
        }
        if self.atomic_aggregate {
            known.push((wk, ATOMIC_AGGREGATE, 0));
        }
        if self.aggregator.is_some() {
            known.push((ot, AGGREGATOR, if four_octet { 8 } else { 6 }));
        }
        if let Some(c) = &self.communities {
            known.push((ot, COMMUNITIES, c.len() * 4));
        }
        if let Some(p) = &self.as4_path {
            known.push((ot, AS4_PATH, p.encoded_len(true)));
        }
        if self.as4_aggregator.is_some() {
            known.push((ot, AS4_AGGREGATOR, 8));
        }
        let mut unknown = self.unknown.iter().peekable();
        for (flags, code, len) in known {
            while let Some(u) = unknown.next_if(|u| u.code < code) {
                f(u.flags, u.code, u.data.len());
            }
            f(flags, code, len);
        }
        for u in unknown {
            f(u.flags, u.code, u.data.len());
        }
    }

    /// Appends the attributes, each with the extended length flag exactly
    /// when its value is longer than 255 octets.
    pub fn emit(&self, buf: &mut Vec<u8>, four_octet: bool) {
        use attr::*;
        let mut order = Vec::with_capacity(12);
        self.each(four_octet, |flags, code, len| {
            order.push((flags, code, len))
        });
        for (flags, code, len) in order {
            let flags = (flags & !EXTENDED_LENGTH) | if len > 255 { EXTENDED_LENGTH } else { 0 };
            buf.push(flags);
            buf.push(code);
            if len > 255 {
                buf.extend_from_slice(&(len as u16).to_be_bytes());
            } else {
                buf.push(len as u8);
            }
            match code {
                ORIGIN => buf.push(match self.origin {
                    Some(Origin::Egp) => 1,
                    Some(Origin::Incomplete) => 2,
                    _ => 0,
                }),
                AS_PATH => self.path().emit(buf, four_octet),
                NEXT_HOP => {
                    buf.extend_from_slice(&self.next_hop.unwrap_or(Ipv4Addr::UNSPECIFIED).octets())
                }
                MULTI_EXIT_DISC => buf.extend_from_slice(&self.med.unwrap_or(0).to_be_bytes()),
                LOCAL_PREF => buf.extend_from_slice(&self.local_pref.unwrap_or(0).to_be_bytes()),
                ATOMIC_AGGREGATE => {}
                AGGREGATOR => {
                    let a = self.aggregator.unwrap_or(Aggregator {
                        asn: 0,
                        address: Ipv4Addr::UNSPECIFIED,
                    });
                    if four_octet {
                        buf.extend_from_slice(&a.asn.to_be_bytes());
                    } else {
                        let asn = u16::try_from(a.asn).unwrap_or(AS_TRANS);
                        buf.extend_from_slice(&asn.to_be_bytes());
                    }
                    buf.extend_from_slice(&a.address.octets());
                }
                COMMUNITIES => {
                    for c in self.communities.iter().flatten() {
                        buf.extend_from_slice(&c.to_be_bytes());
                    }
                }
                AS4_PATH => self.as4_path.clone().unwrap_or_default().emit(buf, true),
                AS4_AGGREGATOR => {
                    if let Some(a) = self.as4_aggregator {
                        buf.extend_from_slice(&a.asn.to_be_bytes());
                        buf.extend_from_slice(&a.address.octets());
                    }
                }
                _ => {
                    if let Some(u) = self.unknown.iter().find(|u| u.code == code) {
                        buf.extend_from_slice(&u.data);
                    }
                }
            }
        }
    }

    /// Reads one attribute's value into `self`; the reason if it is
    /// malformed.
    fn set(&mut self, code: u8, flags: u8, v: &[u8], four_octet: bool) -> Result<(), &'static str> {
        use attr::*;
        let u32_of = |v: &[u8]| {
            v.try_into()
                .map(u32::from_be_bytes)
                .map_err(|_| "length is not 4")
        };
        let aggregator = |v: &[u8], wide: bool| -> Result<Aggregator, &'static str> {
            let w = if wide { 4 } else { 2 };
            if v.len() != w + 4 {
                return Err("length is not 6 (8 with 4-octet AS numbers)");
            }
            let asn = if wide {
                u32::from_be_bytes([v[0], v[1], v[2], v[3]])
            } else {
                u32::from(u16::from_be_bytes([v[0], v[1]]))
            };
            Ok(Aggregator {
                asn,
                address: Ipv4Addr::new(v[w], v[w + 1], v[w + 2], v[w + 3]),
            })
        };
        match code {
            ORIGIN => {
                let [o] = v else {
                    return Err("length is not 1");
                };
                self.origin = Some(Origin::from_u8(*o).ok_or("undefined ORIGIN value")?);
            }
            AS_PATH => self.as_path = Some(AsPath::parse(v, four_octet)?),
            NEXT_HOP => {
                let o: [u8; 4] = v.try_into().map_err(|_| "length is not 4")?;
                self.next_hop = Some(Ipv4Addr::from(o));
            }
            MULTI_EXIT_DISC => self.med = Some(u32_of(v)?),
            LOCAL_PREF => self.local_pref = Some(u32_of(v)?),
            ATOMIC_AGGREGATE if v.is_empty() => self.atomic_aggregate = true,
            ATOMIC_AGGREGATE => return Err("length is not 0"),
            AGGREGATOR => self.aggregator = Some(aggregator(v, four_octet)?),
            COMMUNITIES => {
                if v.is_empty() || !v.len().is_multiple_of(4) {
                    return Err("length is not a non-zero multiple of 4");
                }
                self.communities = Some(
                    v.chunks_exact(4)
                        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                );
            }
            AS4_PATH => {
                let p = AsPath::parse(v, true)?;
                if p.segments
                    .iter()
                    .any(|s| matches!(s.kind, SegmentKind::ConfedSequence | SegmentKind::ConfedSet))
                {
                    return Err("a confederation segment in AS4_PATH");
                }
                self.as4_path = Some(p);
            }
            AS4_AGGREGATOR => self.as4_aggregator = Some(aggregator(v, true)?),
            code => self.unknown.push(RawAttr {
                flags: flags & !EXTENDED_LENGTH,
                code,
                data: v.to_vec(),
            }),
        }
        Ok(())
    }
}

/// An UPDATE [RFC 4271 § 4.3], with what RFC 7606 made of its attributes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpdateRepr {
    pub withdrawn: Vec<Ipv4Cidr>,
    pub attrs: PathAttrs,
    pub nlri: Vec<Ipv4Cidr>,
    /// Set when an attribute was malformed in a way that makes the NLRI
    /// withdrawn instead of announced [RFC 7606 § 2]. Never emitted.
    pub treat_as_withdraw: Option<AttrError>,
    /// Attributes dropped: malformed ones whose action is discard, and
    /// repeats of an attribute after its first [RFC 7606 § 3 g]. Never emitted.
    pub discarded: Vec<AttrError>,
}

/// The octets of a prefix in an UPDATE: its length, then as many octets as
/// the length needs [RFC 4271 § 4.3].
pub fn prefix_len_on_wire(p: &Ipv4Cidr) -> usize {
    1 + usize::from(p.prefix_len()).div_ceil(8)
}

fn emit_prefix(buf: &mut Vec<u8>, p: &Ipv4Cidr) {
    buf.push(p.prefix_len());
    let n = usize::from(p.prefix_len()).div_ceil(8);
    buf.extend_from_slice(&p.network().addr().octets()[..n]);
}

/// Prefixes of a withdrawn routes or NLRI field; `None` if one overruns the
/// field or is longer than 32 bits. Trailing bits past the length are
/// ignored ("irrelevant" [RFC 4271 § 4.3]).
fn parse_prefixes(mut b: &[u8]) -> Option<Vec<Ipv4Cidr>> {
    let mut out = Vec::with_capacity(b.len() / 4);
    while let Some((&len, rest)) = b.split_first() {
        if len > 32 {
            return None;
        }
        let n = usize::from(len).div_ceil(8);
        let raw = rest.get(..n)?;
        let mut o = [0u8; 4];
        o[..n].copy_from_slice(raw);
        out.push(Ipv4Cidr::new(Ipv4Addr::from(o), len)?.network());
        b = &rest[n..];
    }
    Some(out)
}

impl UpdateRepr {
    /// Parses an UPDATE between speakers that do (`four_octet`) or do not
    /// both announce 4-octet AS numbers. The error is the NOTIFICATION of
    /// a session reset [RFC 7606 § 5.3; RFC 4271 § 6.3]: the two length
    /// fields overrunning the message (Malformed Attribute List), a prefix
    /// that cannot be read (Invalid Network Field), an unrecognized
    /// well-known attribute, or MP_REACH_NLRI / MP_UNREACH_NLRI repeated.
    /// Everything else malformed is [`UpdateRepr::treat_as_withdraw`] or
    /// [`UpdateRepr::discarded`], and the session stays.
    pub fn parse<T: AsRef<[u8]>>(
        p: &BgpPacket<T>,
        four_octet: bool,
    ) -> Result<UpdateRepr, NotificationRepr> {
        use error::update::*;
        let b = p.body();
        let wlen = usize::from(u16::from_be_bytes([b[0], b[1]]));
        let wd = b
            .get(2..2 + wlen)
            .ok_or_else(|| update_error(MALFORMED_ATTRIBUTE_LIST, &[]))?;
        let rest = &b[2 + wlen..];
        let alen = match rest {
            [a, b, ..] => usize::from(u16::from_be_bytes([*a, *b])),
            _ => return Err(update_error(MALFORMED_ATTRIBUTE_LIST, &[])),
        };
        let attrs_raw = rest
            .get(2..2 + alen)
            .ok_or_else(|| update_error(MALFORMED_ATTRIBUTE_LIST, &[]))?;
        let nlri_raw = &rest[2 + alen..];
        let withdrawn =
            parse_prefixes(wd).ok_or_else(|| update_error(INVALID_NETWORK_FIELD, &[]))?;
        let nlri =
            parse_prefixes(nlri_raw).ok_or_else(|| update_error(INVALID_NETWORK_FIELD, &[]))?;
        let mut u = UpdateRepr {
            withdrawn,
            nlri,
            ..UpdateRepr::default()
        };
        let mut seen = [false; 256];
        let mut i = 0;
        while i < attrs_raw.len() {
            let start = i;
            // RFC 7606 § 4: the attribute list overruns or underruns its
            // length: treat-as-withdraw (the NLRI field is still found by
            // the total length).
            let Some(&[flags, code]) = attrs_raw.get(i..i + 2) else {
                u.malformed(
                    0,
                    Action::TreatAsWithdraw,
                    "fewer than three octets after the last attribute",
                );
                break;
            };
            let ext = flags & attr::EXTENDED_LENGTH != 0;
            let (len, at) = if ext {
                match attrs_raw.get(i + 2..i + 4) {
                    Some(l) => (usize::from(u16::from_be_bytes([l[0], l[1]])), i + 4),
                    None => {
                        u.malformed(
                            code,
                            Action::TreatAsWithdraw,
                            "the attribute list ends inside a header",
                        );
                        break;
                    }
                }
            } else {
                match attrs_raw.get(i + 2) {
                    Some(l) => (usize::from(*l), i + 3),
                    None => {
                        u.malformed(
                            code,
                            Action::TreatAsWithdraw,
                            "the attribute list ends inside a header",
                        );
                        break;
                    }
                }
            };
            let Some(v) = attrs_raw.get(at..at + len) else {
                u.malformed(
                    code,
                    Action::TreatAsWithdraw,
                    "the attribute overruns the attribute list",
                );
                break;
            };
            i = at + len;
            if seen[usize::from(code)] {
                if code == attr::MP_REACH_NLRI || code == attr::MP_UNREACH_NLRI {
                    return Err(update_error(MALFORMED_ATTRIBUTE_LIST, &[]));
                }
                u.discarded.push(AttrError {
                    code,
                    action: Action::AttributeDiscard,
                    reason: "repeated",
                });
                continue;
            }
            seen[usize::from(code)] = true;
            let optional = flags & attr::OPTIONAL != 0;
            let transitive = flags & attr::TRANSITIVE != 0;
            match known_flags(code) {
                None if !optional => {
                    // RFC 4271 § 6.3 (the data is the attribute); RFC
                    // 7606 leaves it a session reset.
                    return Err(update_error(
                        UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE,
                        &attrs_raw[start..i],
                    ));
                }
                Some((o, t))
                    if o != optional
                        || t != transitive
                        || (!o || !t) && flags & attr::PARTIAL != 0 =>
                {
                    u.malformed(
                        code,
                        action_for(code),
                        "flags conflict with the attribute type",
                    );
                    continue;
                }
                _ => {}
            }
            if let Err(reason) = u.attrs.set(code, flags, v, four_octet) {
                u.malformed(code, action_for(code), reason);
            }
        }
        // RFC 7606 § 3 d: a missing well-known mandatory attribute.
        if !u.nlri.is_empty() && u.treat_as_withdraw.is_none() {
            let missing = [
                (attr::ORIGIN, u.attrs.origin.is_none()),
                (attr::AS_PATH, u.attrs.as_path.is_none()),
                (attr::NEXT_HOP, u.attrs.next_hop.is_none()),
            ];
            if let Some((code, _)) = missing.iter().find(|(_, m)| *m) {
                u.malformed(
                    *code,
                    Action::TreatAsWithdraw,
                    "well-known mandatory attribute missing",
                );
            }
        }
        Ok(u)
    }

    fn malformed(&mut self, code: u8, action: Action, reason: &'static str) {
        let e = AttrError {
            code,
            action,
            reason,
        };
        match action {
            Action::TreatAsWithdraw if self.treat_as_withdraw.is_none() => {
                self.treat_as_withdraw = Some(e)
            }
            Action::TreatAsWithdraw => {}
            Action::AttributeDiscard => self.discarded.push(e),
        }
    }

    /// The routes this UPDATE withdraws: its withdrawn routes, and its NLRI
    /// too when it is treated as a withdraw [RFC 7606 § 2].
    pub fn withdrawals(&self) -> impl Iterator<Item = &Ipv4Cidr> {
        let nlri: &[Ipv4Cidr] = if self.treat_as_withdraw.is_some() {
            &self.nlri
        } else {
            &[]
        };
        self.withdrawn.iter().chain(nlri)
    }

    /// The routes it announces (none when treated as a withdraw).
    pub fn announcements(&self) -> &[Ipv4Cidr] {
        if self.treat_as_withdraw.is_some() {
            &[]
        } else {
            &self.nlri
        }
    }

    /// The whole message's length. No attributes are sent without NLRI.
    pub fn buffer_len(&self, four_octet: bool) -> usize {
        let attrs = if self.nlri.is_empty() {
            0
        } else {
            self.attrs.buffer_len(four_octet)
        };
        MIN_UPDATE_LEN
            + self.withdrawn.iter().map(prefix_len_on_wire).sum::<usize>()
            + attrs
            + self.nlri.iter().map(prefix_len_on_wire).sum::<usize>()
    }

    fn emit_body(&self, buf: &mut Vec<u8>, four_octet: bool) {
        let wlen: usize = self.withdrawn.iter().map(prefix_len_on_wire).sum();
        buf.extend_from_slice(&(wlen as u16).to_be_bytes());
        for p in &self.withdrawn {
            emit_prefix(buf, p);
        }
        if self.nlri.is_empty() {
            buf.extend_from_slice(&[0, 0]);
            return;
        }
        let alen = self.attrs.buffer_len(four_octet);
        buf.extend_from_slice(&(alen as u16).to_be_bytes());
        self.attrs.emit(buf, four_octet);
        for p in &self.nlri {
            emit_prefix(buf, p);
        }
    }
}

impl fmt::Display for UpdateRepr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UPDATE")?;
        if !self.withdrawn.is_empty() {
            write!(f, " withdraw {}", prefix_list(&self.withdrawn))?;
        }
        if !self.nlri.is_empty() {
            let a = &self.attrs;
            write!(
                f,
                " announce {} AS_PATH [{}]",
                prefix_list(&self.nlri),
                a.path()
            )?;
            if let Some(nh) = a.next_hop {
                write!(f, " NEXT_HOP {nh}")?;
            }
            if let Some(o) = a.origin {
                write!(f, " ORIGIN {o}")?;
            }
            if let Some(lp) = a.local_pref {
                write!(f, " LOCAL_PREF {lp}")?;
            }
            if let Some(m) = a.med {
                write!(f, " MED {m}")?;
            }
        }
        if self.withdrawn.is_empty() && self.nlri.is_empty() {
            write!(f, " (empty: End-of-RIB)")?;
        }
        if let Some(e) = &self.treat_as_withdraw {
            write!(f, " [{e}]")?;
        }
        Ok(())
    }
}

fn prefix_list(p: &[Ipv4Cidr]) -> String {
    const SHOWN: usize = 4;
    let mut s: Vec<String> = p.iter().take(SHOWN).map(|p| p.to_string()).collect();
    if p.len() > SHOWN {
        s.push(format!("… ({} in all)", p.len()));
    }
    s.join(" ")
}

/// A parsed BGP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(OpenRepr),
    Update(UpdateRepr),
    Notification(NotificationRepr),
    Keepalive,
    RouteRefresh(RouteRefreshRepr),
}

impl Message {
    /// Parses a checked message; `four_octet` says how the session encodes
    /// AS numbers in UPDATEs (both speakers announced RFC 6793).
    pub fn parse<T: AsRef<[u8]>>(
        p: &BgpPacket<T>,
        four_octet: bool,
    ) -> Result<Message, NotificationRepr> {
        let b = p.body();
        Ok(match p.message_type() {
            MessageType::Open => Message::Open(OpenRepr::parse(p)?),
            MessageType::Update => Message::Update(UpdateRepr::parse(p, four_octet)?),
            MessageType::Notification => Message::Notification(NotificationRepr::parse(b)),
            MessageType::Keepalive => Message::Keepalive,
            MessageType::RouteRefresh => Message::RouteRefresh(RouteRefreshRepr {
                afi: u16::from_be_bytes([b[0], b[1]]),
                subtype: b[2],
                safi: b[3],
            }),
            // new_checked refuses unknown types.
            MessageType::Unknown(t) => {
                return Err(header_error(error::header::BAD_MESSAGE_TYPE, &[t]))
            }
        })
    }

    /// Parses the first whole message of `bytes`.
    pub fn parse_bytes(bytes: &[u8], four_octet: bool) -> Result<Message, NotificationRepr> {
        Message::parse(&BgpPacket::new_checked(bytes)?, four_octet)
    }

    pub fn message_type(&self) -> MessageType {
        match self {
            Message::Open(_) => MessageType::Open,
            Message::Update(_) => MessageType::Update,
            Message::Notification(_) => MessageType::Notification,
            Message::Keepalive => MessageType::Keepalive,
            Message::RouteRefresh(_) => MessageType::RouteRefresh,
        }
    }

    /// The whole message's length.
    pub fn buffer_len(&self, four_octet: bool) -> usize {
        match self {
            Message::Open(o) => o.buffer_len(),
            Message::Update(u) => u.buffer_len(four_octet),
            Message::Notification(n) => n.buffer_len(),
            Message::Keepalive => HEADER_LEN,
            Message::RouteRefresh(_) => ROUTE_REFRESH_LEN,
        }
    }

    /// Appends the whole message. A message longer than [`MAX_LEN`] is the
    /// caller's bug (a speaker packs UPDATEs to fit).
    pub fn emit(&self, buf: &mut Vec<u8>, four_octet: bool) {
        let start = buf.len();
        buf.extend_from_slice(&MARKER);
        buf.extend_from_slice(&[0, 0, u8::from(self.message_type())]);
        match self {
            Message::Open(o) => o.emit_body(buf),
            Message::Update(u) => u.emit_body(buf, four_octet),
            Message::Notification(n) => n.emit_body(buf),
            Message::Keepalive => {}
            Message::RouteRefresh(r) => {
                buf.extend_from_slice(&r.afi.to_be_bytes());
                buf.extend_from_slice(&[r.subtype, r.safi]);
            }
        }
        let len = (buf.len() - start) as u16;
        buf[start + 16..start + 18].copy_from_slice(&len.to_be_bytes());
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::Open(o) => o.fmt(f),
            Message::Update(u) => u.fmt(f),
            Message::Notification(n) => write!(f, "NOTIFICATION {n}"),
            Message::Keepalive => write!(f, "KEEPALIVE"),
            Message::RouteRefresh(r) => write!(f, "ROUTE-REFRESH afi {} safi {}", r.afi, r.safi),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex;
    use proptest::prelude::*;

    // Golden messages made by scapy's BGP layer (scapy 2.5, /usr/bin/python3,
    // `load_contrib("bgp"); from scapy.contrib.bgp import *; A = BGPPathAttr`),
    // each printed with `bytes(p).hex()`; tshark 4.0 decodes every one with
    // no expert error (`tshark -d tcp.port==179,bgp -Y "_ws.malformed ||
    // _ws.expert.severity >= error"` on them in TCP to port 179).
    //
    // OPEN: BGPHeader(type=1)/BGPOpen(version=4, my_as=64500, hold_time=90, bgp_id="192.0.2.1",
    //   opt_params=[BGPOptParam(param_type=2, param_value=BGPCapMultiprotocol(afi=1, safi=1)),
    //               BGPOptParam(param_type=2, param_value=BGPCapGeneric(code=2, length=0)),
    //               BGPOptParam(param_type=2, param_value=BGPCapFourBytesASN(asn=64500))])
    const OPEN: &str = "ffffffffffffffffffffffffffffffff00310104fbf4005ac000020114020601040001000102020200020641040000fbf4";
    // OPEN_AS4: BGPHeader(type=1)/BGPOpen(version=4, my_as=23456, hold_time=180, bgp_id="198.51.100.7",
    //   opt_params=[BGPOptParam(param_type=2, param_value=BGPCapFourBytesASN(asn=4200000000))])
    const OPEN_AS4: &str =
        "ffffffffffffffffffffffffffffffff002501045ba000b4c63364070802064104fa56ea00";
    // BGPHeader(type=4)
    const KEEPALIVE: &str = "ffffffffffffffffffffffffffffffff001304";
    // BGPHeader(type=3)/BGPNotification(error_code=2, error_subcode=2, data=b"\xfb\xf4")
    const NOTIFICATION: &str = "ffffffffffffffffffffffffffffffff0017030202fbf4";
    // BGPHeader(type=5)/BGPRouteRefresh(afi=1, subtype=0, safi=1)
    const ROUTE_REFRESH: &str = "ffffffffffffffffffffffffffffffff00170500010001";
    // With 4-octet AS numbers: BGPHeader(type=2)/BGPUpdate(path_attr=[
    //   A(type_flags=0x40, type_code=1, attribute=BGPPAOrigin(origin=0)),
    //   A(type_flags=0x40, type_code=2, attribute=BGPPAAS4BytesPath(segments=[
    //     BGPPAAS4BytesPath.ASPathSegment(segment_type=2, segment_value=[64510, 64600])])),
    //   A(type_flags=0x40, type_code=3, attribute=BGPPANextHop(next_hop="192.0.2.2"))],
    //   nlri=[BGPNLRI_IPv4(prefix="203.0.113.0/24")])
    const UPDATE4: &str = "ffffffffffffffffffffffffffffffff003302000000184001010040020a02020000fbfe0000fc58400304c000020218cb0071";
    // BGPHeader(type=2)/BGPUpdate(withdrawn_routes=[BGPNLRI_IPv4(prefix="203.0.113.0/24"),
    //   BGPNLRI_IPv4(prefix="192.0.2.128/25")])
    const WITHDRAW: &str = "ffffffffffffffffffffffffffffffff002002000918cb007119c00002800000";
    // With 2-octet AS numbers: ORIGIN incomplete, AS_PATH 64510 64600 (BGPPAASPath),
    //   NEXT_HOP 192.0.2.5, A(type_flags=0x80, type_code=4, attribute=BGPPAMultiExitDisc(med=50)),
    //   A(type_flags=0x40, type_code=5, attribute=BGPPALocalPref(local_pref=200)),
    //   A(type_flags=0xc0, type_code=8, attribute=BGPPACommunity(community=0xfbfe0064)),
    //   nlri 203.0.113.0/24 and 192.0.2.128/25
    const UPDATE2: &str = "ffffffffffffffffffffffffffffffff00490200000029400101024002060202fbfefc58400304c000020580040400000032400504000000c8c00804fbfe006418cb007119c0000280";
    // From an OLD speaker: ORIGIN IGP, AS_PATH 23456 64510 (2-octet), NEXT_HOP 192.0.2.2,
    //   A(type_flags=0xc0, type_code=17, attribute=BGPPAAS4Path(segment_type=2,
    //     segment_value=[4200000000, 64510])), nlri 198.51.100.128/25
    const UPDATE_AS4_PATH: &str = "ffffffffffffffffffffffffffffffff003d02000000214001010040020602025ba0fbfe400304c0000202c0110a0202fa56ea000000fbfe19c6336480";
    // 4-octet: ORIGIN EGP, AS_PATH 64600 {64601 64602}, NEXT_HOP 192.0.2.10, A(type_flags=0x40,
    //   type_code=6), A(type_flags=0xc0, type_code=7, attribute=BGPPAAS4Aggregator(
    //   aggregator_asn=64600, speaker_address="192.0.2.10")), A(type_flags=0xc0, type_code=254,
    //   attribute=Raw(b"\x01\x02\x03")), nlri 10.0.0.0/8, 0.0.0.0/0, 192.0.2.1/32
    const UPDATE_SET: &str = "ffffffffffffffffffffffffffffffff005102000000324001010140021002010000fc5801020000fc590000fc5a400304c000020a400600c007080000fc58c000020ac0fe03010203080a0020c0000201";

    fn c(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn parse(h: &str, four: bool) -> Message {
        Message::parse_bytes(&hex(h), four).unwrap()
    }

    fn emit(m: &Message, four: bool) -> Vec<u8> {
        let mut b = vec![];
        m.emit(&mut b, four);
        assert_eq!(b.len(), m.buffer_len(four), "buffer_len agrees with emit");
        b
    }

    fn update(attrs: PathAttrs, nlri: &[&str]) -> Message {
        Message::Update(UpdateRepr {
            attrs,
            nlri: nlri.iter().map(|p| c(p)).collect(),
            ..UpdateRepr::default()
        })
    }

    #[test]
    fn open_reads_scapys_capabilities_and_emits_its_bytes() {
        let m = parse(OPEN, true);
        let Message::Open(o) = &m else {
            panic!("{m:?}")
        };
        assert_eq!(
            (o.version, o.my_as, o.hold_time, o.bgp_id),
            (4, 64500, 90, ip("192.0.2.1"))
        );
        let caps: Vec<&Capability> = o.capabilities().collect();
        assert_eq!(
            caps,
            [
                &Capability::Multiprotocol { afi: 1, safi: 1 },
                &Capability::RouteRefresh,
                &Capability::FourOctetAs(64500)
            ]
        );
        assert_eq!(o.asn(), 64500);
        assert_eq!(emit(&m, true), hex(OPEN));
        assert_eq!(
            m.to_string(),
            "OPEN v4 AS 64500 hold 90 s id 192.0.2.1 capabilities [multiprotocol ipv4/unicast, route-refresh, 4-octet AS 64500]"
        );
    }

    #[test]
    fn a_four_octet_as_opens_with_as_trans_and_its_capability() {
        let m = parse(OPEN_AS4, true);
        let Message::Open(o) = &m else { panic!() };
        assert_eq!(o.my_as, AS_TRANS);
        assert_eq!(o.asn(), 4_200_000_000);
        let built = OpenRepr {
            params: vec![OptParam::Capabilities(vec![Capability::FourOctetAs(
                4_200_000_000,
            )])],
            ..OpenRepr::new(4_200_000_000, 180, ip("198.51.100.7"), vec![])
        };
        assert_eq!(emit(&Message::Open(built), true), hex(OPEN_AS4));
    }

    #[test]
    fn keepalive_notification_and_route_refresh_are_scapys() {
        assert_eq!(parse(KEEPALIVE, true), Message::Keepalive);
        assert_eq!(emit(&Message::Keepalive, true), hex(KEEPALIVE));
        let n = NotificationRepr::new(2, 2, vec![0xfb, 0xf4]);
        assert_eq!(parse(NOTIFICATION, true), Message::Notification(n.clone()));
        assert_eq!(
            emit(&Message::Notification(n.clone()), true),
            hex(NOTIFICATION)
        );
        assert_eq!(n.to_string(), "2/2 OPEN Message Error / Bad Peer AS");
        let r = Message::RouteRefresh(RouteRefreshRepr::IPV4_UNICAST);
        assert_eq!(parse(ROUTE_REFRESH, true), r);
        assert_eq!(emit(&r, true), hex(ROUTE_REFRESH));
    }

    #[test]
    fn an_update_with_four_octet_as_numbers_is_scapys() {
        let want = update(
            PathAttrs {
                origin: Some(Origin::Igp),
                as_path: Some(AsPath::sequence(&[64510, 64600])),
                next_hop: Some(ip("192.0.2.2")),
                ..PathAttrs::default()
            },
            &["203.0.113.0/24"],
        );
        assert_eq!(parse(UPDATE4, true), want);
        assert_eq!(emit(&want, true), hex(UPDATE4));
        assert_eq!(
            want.to_string(),
            "UPDATE announce 203.0.113.0/24 AS_PATH [64510 64600] NEXT_HOP 192.0.2.2 ORIGIN IGP"
        );
    }

    #[test]
    fn a_withdrawal_is_scapys() {
        let want = Message::Update(UpdateRepr {
            withdrawn: vec![c("203.0.113.0/24"), c("192.0.2.128/25")],
            ..UpdateRepr::default()
        });
        assert_eq!(parse(WITHDRAW, true), want);
        assert_eq!(emit(&want, true), hex(WITHDRAW));
    }

    #[test]
    fn a_two_octet_update_with_med_local_pref_and_communities_is_scapys() {
        let want = update(
            PathAttrs {
                origin: Some(Origin::Incomplete),
                as_path: Some(AsPath::sequence(&[64510, 64600])),
                next_hop: Some(ip("192.0.2.5")),
                med: Some(50),
                local_pref: Some(200),
                communities: Some(vec![(64510 << 16) | 100]),
                ..PathAttrs::default()
            },
            &["203.0.113.0/24", "192.0.2.128/25"],
        );
        assert_eq!(parse(UPDATE2, false), want);
        assert_eq!(emit(&want, false), hex(UPDATE2));
    }

    #[test]
    fn as4_path_from_an_old_speaker_is_merged_and_sent_back_the_same_way() {
        let Message::Update(mut u) = parse(UPDATE_AS4_PATH, false) else {
            panic!()
        };
        assert_eq!(
            u.attrs.path(),
            AsPath::sequence(&[u32::from(AS_TRANS), 64510])
        );
        assert_eq!(
            u.attrs.as4_path,
            Some(AsPath::sequence(&[4_200_000_000, 64510]))
        );
        let sent = u.attrs.clone();
        u.attrs.merge_as4();
        assert_eq!(u.attrs.path(), AsPath::sequence(&[4_200_000_000, 64510]));
        assert_eq!(u.attrs.as4_path, None);
        // Towards an OLD speaker the merged path splits again into scapy's two attributes.
        assert_eq!(u.attrs.for_peer(false), sent);
        let m = Message::Update(UpdateRepr {
            attrs: u.attrs.for_peer(false),
            ..u.clone()
        });
        assert_eq!(emit(&m, false), hex(UPDATE_AS4_PATH));
        // Towards a NEW one there is no AS4_PATH.
        assert_eq!(u.attrs.for_peer(true).as4_path, None);
    }

    #[test]
    fn as4_path_longer_than_as_path_is_ignored() {
        let p = AsPath::sequence(&[23456]);
        let p4 = AsPath::sequence(&[4_200_000_000, 64510]);
        assert_eq!(p.merge_as4(&p4), p);
        // Leading ASes the OLD speakers added are kept in front.
        let p = AsPath::sequence(&[64500, 64501, 23456]);
        let p4 = AsPath::sequence(&[4_200_000_000]);
        assert_eq!(
            p.merge_as4(&p4),
            AsPath::sequence(&[64500, 64501, 4_200_000_000])
        );
    }

    #[test]
    fn sets_aggregators_and_unknown_attributes_are_read_and_kept() {
        let m = parse(UPDATE_SET, true);
        let Message::Update(u) = &m else { panic!() };
        assert_eq!(u.attrs.origin, Some(Origin::Egp));
        assert_eq!(u.attrs.path().to_string(), "64600 {64601 64602}");
        assert_eq!(u.attrs.path().len(), 2, "a set counts one");
        assert!(u.attrs.atomic_aggregate);
        assert_eq!(
            u.attrs.aggregator,
            Some(Aggregator {
                asn: 64600,
                address: ip("192.0.2.10")
            })
        );
        assert_eq!(
            u.attrs.unknown,
            [RawAttr {
                flags: 0xc0,
                code: 254,
                data: vec![1, 2, 3]
            }]
        );
        assert_eq!(u.nlri, [c("10.0.0.0/8"), c("0.0.0.0/0"), c("192.0.2.1/32")]);
        assert_eq!(emit(&m, true), hex(UPDATE_SET));
    }

    #[test]
    fn the_stream_is_cut_into_messages_and_a_bad_header_is_its_notification() {
        let mut s = hex(KEEPALIVE);
        s.extend(hex(UPDATE4));
        assert_eq!(message_len(&s[..10]), Ok(None));
        assert_eq!(message_len(&s), Ok(Some(19)));
        assert_eq!(message_len(&s[19..40]), Ok(None));
        assert_eq!(message_len(&s[19..]), Ok(Some(51)));
        let mut bad = hex(KEEPALIVE);
        bad[3] = 0;
        assert_eq!(message_len(&bad), Err(NotificationRepr::new(1, 1, vec![])));
        for len in [18u16, 4097, 0xffff] {
            let mut m = hex(KEEPALIVE);
            m[16..18].copy_from_slice(&len.to_be_bytes());
            assert_eq!(
                message_len(&m),
                Err(NotificationRepr::new(1, 2, len.to_be_bytes().to_vec()))
            );
        }
    }

    #[test]
    fn header_checks_answer_rfc_4271_6_1() {
        let check = |b: &[u8]| BgpPacket::new_checked(b).map(|_| ()).unwrap_err();
        // A KEEPALIVE one octet long, an OPEN too short for its fields.
        let mut k = hex(KEEPALIVE);
        k.push(0);
        k[17] = 20;
        assert_eq!(check(&k), NotificationRepr::new(1, 2, vec![0, 20]));
        let mut o = hex(KEEPALIVE);
        o[18] = 1;
        assert_eq!(check(&o), NotificationRepr::new(1, 2, vec![0, 19]));
        let mut t = hex(KEEPALIVE);
        t[18] = 9;
        assert_eq!(check(&t), NotificationRepr::new(1, 3, vec![9]));
        // The length field disagreeing with the buffer.
        assert_eq!(
            check(&hex(UPDATE4)[..40]),
            NotificationRepr::new(1, 2, vec![0, 0x33])
        );
    }

    #[test]
    fn malformed_optional_parameters_are_open_errors() {
        let mut o = hex(OPEN);
        o[28] = 21; // optional parameters length one past the message
        assert_eq!(
            Message::parse_bytes(&o, true),
            Err(NotificationRepr::new(2, 0, vec![]))
        );
        let mut o = hex(OPEN);
        o[31] = 2; // the multiprotocol capability with length 2
        assert!(matches!(Message::parse_bytes(&o, true), Err(n) if (n.code, n.subcode) == (2, 0)));
    }

    /// An UPDATE with the given attribute octets and NLRI 203.0.113.0/24.
    fn with_attrs(attrs: &[u8]) -> Vec<u8> {
        let mut b = MARKER.to_vec();
        b.extend_from_slice(&[0, 0, 2, 0, 0]);
        b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        b.extend_from_slice(attrs);
        b.extend_from_slice(&[24, 203, 0, 113]);
        let len = b.len() as u16;
        b[16..18].copy_from_slice(&len.to_be_bytes());
        b
    }

    const ORIGIN_IGP: [u8; 4] = [0x40, 1, 1, 0];
    const PATH_64510: [u8; 7] = [0x40, 2, 4, 2, 1, 0xfb, 0xfe];
    const NH: [u8; 7] = [0x40, 3, 4, 192, 0, 2, 2];

    fn good_plus(extra: &[u8]) -> Vec<u8> {
        let mut a = ORIGIN_IGP.to_vec();
        a.extend_from_slice(&PATH_64510);
        a.extend_from_slice(&NH);
        a.extend_from_slice(extra);
        with_attrs(&a)
    }

    fn update_of(b: &[u8]) -> Result<UpdateRepr, NotificationRepr> {
        match Message::parse_bytes(b, false)? {
            Message::Update(u) => Ok(u),
            m => panic!("{m:?}"),
        }
    }

    #[test]
    fn rfc_7606_treat_as_withdraw_keeps_the_session_and_withdraws_the_nlri() {
        let base = update_of(&good_plus(&[])).unwrap();
        assert_eq!(base.treat_as_withdraw, None);
        assert_eq!(base.announcements(), [c("203.0.113.0/24")]);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "ORIGIN 5",
                with_attrs(&[&[0x40, 1, 1, 5][..], &PATH_64510, &NH].concat()),
            ),
            (
                "ORIGIN marked optional",
                with_attrs(&[&[0xc0, 1, 1, 0][..], &PATH_64510, &NH].concat()),
            ),
            (
                "NEXT_HOP of 3 octets",
                with_attrs(&[&ORIGIN_IGP[..], &PATH_64510, &[0x40, 3, 3, 192, 0, 2]].concat()),
            ),
            (
                "NEXT_HOP missing",
                with_attrs(&[&ORIGIN_IGP[..], &PATH_64510].concat()),
            ),
            (
                "AS_PATH segment of length 0",
                with_attrs(&[&ORIGIN_IGP[..], &[0x40, 2, 2, 2, 0], &NH].concat()),
            ),
            (
                "AS_PATH segment type 9",
                with_attrs(&[&ORIGIN_IGP[..], &[0x40, 2, 4, 9, 1, 0xfb, 0xfe], &NH].concat()),
            ),
            ("MED of 2 octets", good_plus(&[0x80, 4, 2, 0, 1])),
            (
                "LOCAL_PREF with Partial set",
                good_plus(&[0x60, 5, 4, 0, 0, 0, 100]),
            ),
            ("COMMUNITIES of 3 octets", good_plus(&[0xc0, 8, 3, 1, 2, 3])),
            (
                "an attribute overrunning the list",
                good_plus(&[0x80, 4, 9, 0, 0, 0, 1]),
            ),
            ("two octets after the last attribute", good_plus(&[0x80, 4])),
        ];
        for (what, b) in cases {
            let u = update_of(&b).unwrap_or_else(|e| panic!("{what}: session reset {e}"));
            let e = u
                .treat_as_withdraw
                .clone()
                .unwrap_or_else(|| panic!("{what}: not treated as withdraw"));
            assert_eq!(e.action, Action::TreatAsWithdraw, "{what}");
            assert!(u.announcements().is_empty(), "{what}");
            assert_eq!(
                u.withdrawals().collect::<Vec<_>>(),
                [&c("203.0.113.0/24")],
                "{what}"
            );
        }
    }

    #[test]
    fn rfc_7606_attribute_discard_keeps_the_route() {
        let cases: Vec<(&str, Vec<u8>, u8)> = vec![
            (
                "ATOMIC_AGGREGATE of 1 octet",
                good_plus(&[0x40, 6, 1, 0]),
                6,
            ),
            (
                "AGGREGATOR of 5 octets",
                good_plus(&[0xc0, 7, 5, 0, 1, 192, 0, 2]),
                7,
            ),
            (
                "AS4_PATH with a zero-length segment",
                good_plus(&[0xc0, 17, 2, 2, 0]),
                17,
            ),
            (
                "MED twice",
                good_plus(&[0x80, 4, 4, 0, 0, 0, 1, 0x80, 4, 4, 0, 0, 0, 2]),
                4,
            ),
        ];
        for (what, b, code) in cases {
            let u = update_of(&b).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(u.treat_as_withdraw, None, "{what}");
            assert_eq!(u.announcements(), [c("203.0.113.0/24")], "{what}");
            assert_eq!(u.discarded.len(), 1, "{what}");
            assert_eq!(u.discarded[0].code, code, "{what}");
        }
        let u = update_of(&good_plus(&[
            0x80, 4, 4, 0, 0, 0, 1, 0x80, 4, 4, 0, 0, 0, 2,
        ]))
        .unwrap();
        assert_eq!(
            u.attrs.med,
            Some(1),
            "the first of a repeated attribute is kept"
        );
    }

    #[test]
    fn what_leaves_the_nlri_unreadable_resets_the_session() {
        // Withdrawn routes length past the message: Malformed Attribute List.
        let mut b = good_plus(&[]);
        b[19..21].copy_from_slice(&[0x10, 0]);
        assert_eq!(
            update_of(&b).unwrap_err(),
            NotificationRepr::new(3, 1, vec![])
        );
        // Total path attribute length past the message.
        let mut b = good_plus(&[]);
        b[22] = 200;
        assert_eq!(
            update_of(&b).unwrap_err(),
            NotificationRepr::new(3, 1, vec![])
        );
        // A prefix of 33 bits; a prefix overrunning the NLRI field.
        let mut b = good_plus(&[]);
        let n = b.len();
        b[n - 4] = 33;
        assert_eq!(
            update_of(&b).unwrap_err(),
            NotificationRepr::new(3, 10, vec![])
        );
        let mut b = good_plus(&[]);
        b[n - 4] = 32;
        assert_eq!(
            update_of(&b).unwrap_err(),
            NotificationRepr::new(3, 10, vec![])
        );
        // An unrecognized well-known attribute: its octets are the data.
        let b = good_plus(&[0x40, 99, 1, 7]);
        assert_eq!(
            update_of(&b).unwrap_err(),
            NotificationRepr::new(3, 2, vec![0x40, 99, 1, 7])
        );
        // MP_REACH_NLRI twice.
        let b = good_plus(&[0x80, 14, 1, 0, 0x80, 14, 1, 0]);
        assert_eq!(
            update_of(&b).unwrap_err(),
            NotificationRepr::new(3, 1, vec![])
        );
    }

    #[test]
    fn host_bits_in_a_prefix_are_ignored_and_long_paths_split_at_255() {
        // 203.0.113.77/24 on the wire reads as 203.0.113.0/24.
        let b = with_attrs(&[&ORIGIN_IGP[..], &PATH_64510, &NH].concat());
        let mut b2 = b.clone();
        let n = b2.len();
        b2[n - 1] = 113;
        assert_eq!(update_of(&b2).unwrap().nlri, [c("203.0.113.0/24")]);
        let asns: Vec<u32> = (1..=300).collect();
        let p = AsPath::sequence(&asns);
        let mut enc = vec![];
        p.emit(&mut enc, true);
        assert_eq!(enc.len(), p.encoded_len(true));
        assert_eq!((enc[0], enc[1]), (2, 255));
        assert_eq!(
            AsPath::parse(&enc, true).unwrap(),
            p,
            "two sequences read back as one"
        );
        assert_eq!(p.prepend(7).len(), 301);
    }

    fn arb_path() -> impl Strategy<Value = AsPath> {
        proptest::collection::vec(
            (
                prop_oneof![Just(SegmentKind::Sequence), Just(SegmentKind::Set)],
                proptest::collection::vec(1u32..=u32::MAX, 1..6),
            ),
            0..4,
        )
        .prop_map(|segs| {
            let mut p = AsPath::default();
            for (kind, asns) in segs {
                // Adjacent sequences merge on parse: keep them apart with a set.
                match p.segments.last_mut() {
                    Some(last) if last.kind == kind && kind == SegmentKind::Sequence => {
                        last.asns.extend(asns)
                    }
                    _ => p.segments.push(Segment { kind, asns }),
                }
            }
            p
        })
    }

    fn arb_prefix() -> impl Strategy<Value = Ipv4Cidr> {
        (any::<u32>(), 0u8..=32)
            .prop_map(|(a, l)| Ipv4Cidr::new(Ipv4Addr::from(a), l).unwrap().network())
    }

    fn arb_attrs(four: bool) -> impl Strategy<Value = PathAttrs> {
        let asn = if four { 1u32..=u32::MAX } else { 1u32..=65535 };
        (
            prop_oneof![
                Just(Origin::Igp),
                Just(Origin::Egp),
                Just(Origin::Incomplete)
            ],
            arb_path().prop_map(move |p| if four { p } else { p.with_as_trans() }),
            any::<u32>(),
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u32>()),
            any::<bool>(),
            proptest::option::of((asn, any::<u32>())),
            proptest::option::of(proptest::collection::vec(any::<u32>(), 1..5)),
            proptest::collection::vec(
                (200u8..=254, proptest::collection::vec(any::<u8>(), 0..300)),
                0..2,
            ),
        )
            .prop_map(|(origin, path, nh, med, lp, atomic, agg, comm, unknown)| {
                let mut unknown: Vec<RawAttr> = unknown
                    .into_iter()
                    .map(|(code, data)| RawAttr {
                        flags: 0xc0,
                        code,
                        data,
                    })
                    .collect();
                unknown.sort_by_key(|u| u.code);
                unknown.dedup_by_key(|u| u.code);
                PathAttrs {
                    origin: Some(origin),
                    as_path: Some(path),
                    next_hop: Some(Ipv4Addr::from(nh)),
                    med,
                    local_pref: lp,
                    atomic_aggregate: atomic,
                    aggregator: agg.map(|(asn, a)| Aggregator {
                        asn,
                        address: Ipv4Addr::from(a),
                    }),
                    communities: comm,
                    as4_path: None,
                    as4_aggregator: None,
                    unknown,
                }
            })
    }

    proptest! {
        #[test]
        fn updates_round_trip((four, attrs) in any::<bool>().prop_flat_map(|four| (Just(four), arb_attrs(four))),
                              withdrawn in proptest::collection::vec(arb_prefix(), 0..20),
                              nlri in proptest::collection::vec(arb_prefix(), 0..20)) {
            let attrs = if nlri.is_empty() { PathAttrs::default() } else { attrs };
            let m = Message::Update(UpdateRepr { withdrawn, attrs, nlri, ..UpdateRepr::default() });
            let b = emit(&m, four);
            prop_assert!(b.len() <= MAX_LEN);
            prop_assert_eq!(Message::parse_bytes(&b, four), Ok(m));
        }

        #[test]
        fn opens_notifications_and_refreshes_round_trip(asn in any::<u32>(), hold in any::<u16>(), id in any::<u32>(),
                caps in proptest::collection::vec((3u8..=60, proptest::collection::vec(any::<u8>(), 0..8)), 0..4),
                code in any::<u8>(), sub in any::<u8>(), data in proptest::collection::vec(any::<u8>(), 0..40),
                afi in any::<u16>(), safi in any::<u8>()) {
            let mut c = vec![Capability::Multiprotocol { afi: 1, safi: 1 }, Capability::RouteRefresh, Capability::FourOctetAs(asn)];
            c.extend(caps.into_iter().map(|(code, data)| Capability::Unknown { code, data }));
            let msgs = [
                Message::Open(OpenRepr::new(asn, hold, Ipv4Addr::from(id), c)),
                Message::Notification(NotificationRepr::new(code, sub, data)),
                Message::RouteRefresh(RouteRefreshRepr { afi, subtype: 0, safi }),
                Message::Keepalive,
            ];
            for m in msgs {
                let b = emit(&m, true);
                prop_assert_eq!(Message::parse_bytes(&b, true), Ok(m));
            }
        }

        #[test]
        fn no_input_panics(b in proptest::collection::vec(any::<u8>(), 0..200), four in any::<bool>()) {
            let _ = message_len(&b);
            let mut m = MARKER.to_vec();
            m.extend_from_slice(&((19 + b.len()) as u16).to_be_bytes());
            m.extend_from_slice(&b);
            if let Ok(p) = BgpPacket::new_checked(&m[..]) {
                if let Ok(msg) = Message::parse(&p, four) {
                    let _ = msg.to_string();
                }
            }
        }

        #[test]
        fn mutated_updates_never_panic(i in 19usize..0x51, v in any::<u8>(), four in any::<bool>()) {
            let mut b = hex(UPDATE_SET);
            b[i] = v;
            if let Ok(p) = BgpPacket::new_checked(&b[..]) {
                let _ = Message::parse(&p, four).map(|m| m.to_string());
            }
        }
    }
}
