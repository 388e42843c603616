//! SCTP packets: the transport of S1AP between the eNodeB and the MME.
//!
//! Read RFC 9260 first: § 3.1 for the common header (ports, verification
//! tag, the CRC32c checksum of Appendix A), § 3.2 for the chunk format (type,
//! flags, a length that excludes the chunk's final padding, values padded to
//! four octets) and what the two high bits of an unknown chunk's type ask
//! for (§ 3.2), § 3.2.1 for parameters in the same shape, and § 3.3 for each
//! chunk: DATA, INIT, INIT ACK, SACK, HEARTBEAT (ACK), ABORT, SHUTDOWN (ACK,
//! COMPLETE), ERROR, COOKIE ECHO, COOKIE ACK, with § 3.3.10 for the error
//! causes that ABORT and ERROR carry.
//!
//! This module only reads and writes packets; the association's state
//! machine is `d11_core::l3::sctp`. The kernel of the lab's machines has no
//! SCTP, so the elements speak it themselves.

use std::fmt;

/// The common header [RFC 9260 § 3.1].
pub const HEADER_LEN: usize = 12;
/// A chunk's own header: type, flags, length [RFC 9260 § 3.2].
pub const CHUNK_HEADER_LEN: usize = 4;

/// Chunk types [RFC 9260 § 3.2].
pub mod chunk {
    pub const DATA: u8 = 0;
    pub const INIT: u8 = 1;
    pub const INIT_ACK: u8 = 2;
    pub const SACK: u8 = 3;
    pub const HEARTBEAT: u8 = 4;
    pub const HEARTBEAT_ACK: u8 = 5;
    pub const ABORT: u8 = 6;
    pub const SHUTDOWN: u8 = 7;
    pub const SHUTDOWN_ACK: u8 = 8;
    pub const ERROR: u8 = 9;
    pub const COOKIE_ECHO: u8 = 10;
    pub const COOKIE_ACK: u8 = 11;
    pub const SHUTDOWN_COMPLETE: u8 = 14;
}

/// Parameter types of INIT and INIT ACK, and HEARTBEAT's one [RFC 9260 § 3.3.2.1,
/// § 3.3.3.1, § 3.3.5].
pub mod param {
    pub const HEARTBEAT_INFO: u16 = 1;
    pub const IPV4_ADDRESS: u16 = 5;
    pub const STATE_COOKIE: u16 = 7;
    pub const UNRECOGNIZED: u16 = 8;
    pub const COOKIE_PRESERVATIVE: u16 = 9;
    pub const SUPPORTED_ADDRESS_TYPES: u16 = 12;
}

/// Error cause codes of ABORT and ERROR [RFC 9260 § 3.3.10].
pub mod cause {
    pub const INVALID_STREAM: u16 = 1;
    pub const MISSING_MANDATORY_PARAMETER: u16 = 2;
    pub const STALE_COOKIE: u16 = 3;
    pub const OUT_OF_RESOURCE: u16 = 4;
    pub const UNRECOGNIZED_CHUNK: u16 = 6;
    pub const INVALID_MANDATORY_PARAMETER: u16 = 7;
    pub const UNRECOGNIZED_PARAMETERS: u16 = 8;
    pub const NO_USER_DATA: u16 = 9;
    pub const COOKIE_WHILE_SHUTTING_DOWN: u16 = 10;
    pub const USER_ABORT: u16 = 12;
    pub const PROTOCOL_VIOLATION: u16 = 13;
}

/// Payload protocol identifiers the lab carries [IANA "SCTP Payload Protocol
/// Identifiers"; 3GPP TS 36.412 § 7].
pub mod ppid {
    /// S1AP.
    pub const S1AP: u32 = 18;
}

const DATA_FLAG_E: u8 = 0x01;
const DATA_FLAG_B: u8 = 0x02;
const DATA_FLAG_U: u8 = 0x04;
const DATA_FLAG_I: u8 = 0x08;
/// The T bit of ABORT and SHUTDOWN COMPLETE: the sender had no TCB and
/// reflected the tag it received [RFC 9260 § 3.3.7].
const FLAG_T: u8 = 0x01;

/// Why bytes are not an SCTP packet or a chunk of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SctpError {
    #[error("shorter than the 12-byte SCTP common header")]
    Truncated,
    #[error("a chunk's length is below its header or beyond the packet")]
    ChunkLength,
    #[error("a chunk's value is shorter than its fixed fields")]
    ChunkValue,
    #[error("a parameter's length is below its header or beyond the chunk")]
    ParamLength,
    #[error("a SACK's gap or duplicate counts exceed the chunk")]
    SackLength,
}

/// CRC32c (Castagnoli, reflected polynomial 0x82F63B78) [RFC 9260 Appendix A].
pub fn crc32c(bytes: &[u8]) -> u32 {
    !crc32c_update(!0, bytes)
}

/// One table-driven step per octet over a running (uncomplemented) state.
fn crc32c_update(state: u32, bytes: &[u8]) -> u32 {
    static TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    bytes
        .iter()
        .fold(state, |s, &b| (s >> 8) ^ TABLE[usize::from((s as u8) ^ b)])
}

/// Rounds up to the four-octet boundary chunks and parameters are padded to.
pub const fn padded(len: usize) -> usize {
    (len + 3) & !3
}

/// A view of an SCTP packet (an IPv4 payload). After [`SctpPacket::new_checked`]
/// the header's accessors do not panic; chunks are checked as they are read.
#[derive(Debug, Clone)]
pub struct SctpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> SctpPacket<T> {
    pub fn new_checked(buffer: T) -> Result<Self, SctpError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(SctpError::Truncated);
        }
        Ok(SctpPacket { buffer })
    }

    fn u16_at(&self, at: usize) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[at], b[at + 1]])
    }
    pub fn src_port(&self) -> u16 {
        self.u16_at(0)
    }
    pub fn dst_port(&self) -> u16 {
        self.u16_at(2)
    }
    pub fn verification_tag(&self) -> u32 {
        be32(&self.buffer.as_ref()[4..8])
    }
    /// The checksum field as it is on the wire (the CRC's octets in
    /// little-endian order, as RFC 9260 Appendix A's reference code stores it).
    pub fn checksum(&self) -> u32 {
        let b = &self.buffer.as_ref()[8..12];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    /// True if the CRC32c over the packet, its checksum field taken as
    /// zero, is the one in the field [RFC 9260 § 6.8].
    pub fn verify_checksum(&self) -> bool {
        self.checksum() == checksum_of(self.buffer.as_ref())
    }
    /// The chunks, each checked as it is read; the first malformed one ends
    /// the iteration with its error.
    pub fn chunks(&self) -> Chunks<'_> {
        Chunks {
            rest: &self.buffer.as_ref()[HEADER_LEN..],
        }
    }
}

impl<'a> SctpPacket<&'a [u8]> {
    /// [`SctpPacket::chunks`] borrowed for as long as the buffer.
    pub fn chunks_ref(&self) -> Chunks<'a> {
        Chunks {
            rest: &self.buffer[HEADER_LEN..],
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> SctpPacket<T> {
    /// Computes and writes the checksum over the whole buffer.
    pub fn fill_checksum(&mut self) {
        let c = checksum_of(self.buffer.as_ref());
        self.buffer.as_mut()[8..12].copy_from_slice(&c.to_le_bytes());
    }
}

/// CRC32c over a packet with its checksum field read as zero, without a copy.
fn checksum_of(p: &[u8]) -> u32 {
    let s = crc32c_update(!0, &p[..8]);
    let s = crc32c_update(s, &[0; 4]);
    !crc32c_update(s, &p[HEADER_LEN..])
}

impl<T: AsRef<[u8]>> fmt::Display for SctpPacket<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SCTP {} > {} vtag 0x{:08x}",
            self.src_port(),
            self.dst_port(),
            self.verification_tag()
        )?;
        for c in self.chunks() {
            match c {
                Ok(c) => write!(f, " {}", chunk_name(c.ty))?,
                Err(e) => return write!(f, " [{e}]"),
            }
        }
        Ok(())
    }
}

/// The RFC's name of a chunk type, as tshark prints it.
pub fn chunk_name(ty: u8) -> &'static str {
    match ty {
        chunk::DATA => "DATA",
        chunk::INIT => "INIT",
        chunk::INIT_ACK => "INIT_ACK",
        chunk::SACK => "SACK",
        chunk::HEARTBEAT => "HEARTBEAT",
        chunk::HEARTBEAT_ACK => "HEARTBEAT_ACK",
        chunk::ABORT => "ABORT",
        chunk::SHUTDOWN => "SHUTDOWN",
        chunk::SHUTDOWN_ACK => "SHUTDOWN_ACK",
        chunk::ERROR => "ERROR",
        chunk::COOKIE_ECHO => "COOKIE_ECHO",
        chunk::COOKIE_ACK => "COOKIE_ACK",
        chunk::SHUTDOWN_COMPLETE => "SHUTDOWN_COMPLETE",
        _ => "UNKNOWN",
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// The chunks of a packet, in order.
#[derive(Debug, Clone)]
pub struct Chunks<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Chunks<'a> {
    type Item = Result<Chunk<'a>, SctpError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let b = self.rest;
        if b.len() < CHUNK_HEADER_LEN {
            self.rest = &[];
            return Some(Err(SctpError::ChunkLength));
        }
        let len = usize::from(be16(&b[2..4]));
        if len < CHUNK_HEADER_LEN || len > b.len() {
            self.rest = &[];
            return Some(Err(SctpError::ChunkLength));
        }
        // The last chunk's padding may be missing (a lenient reading of
        // § 3.2's "the receiver MUST ignore the padding").
        self.rest = &b[padded(len).min(b.len())..];
        Some(Ok(Chunk {
            ty: b[0],
            flags: b[1],
            value: &b[CHUNK_HEADER_LEN..len],
        }))
    }
}

/// One chunk as read: its type, flags and value (padding excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk<'a> {
    pub ty: u8,
    pub flags: u8,
    pub value: &'a [u8],
}

/// What to do with a chunk of a type this end does not know, from its two
/// high bits [RFC 9260 § 3.2].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownAction {
    /// Skip it and go on with the packet's next chunk (else stop there).
    pub skip: bool,
    /// Report it in an ERROR with cause "Unrecognized Chunk Type".
    pub report: bool,
}

impl UnknownAction {
    pub fn of_chunk(ty: u8) -> UnknownAction {
        UnknownAction {
            skip: ty & 0x80 != 0,
            report: ty & 0x40 != 0,
        }
    }
    /// The same rule for parameter types [RFC 9260 § 3.2.1].
    pub fn of_param(ty: u16) -> UnknownAction {
        UnknownAction {
            skip: ty & 0x8000 != 0,
            report: ty & 0x4000 != 0,
        }
    }
}

/// A DATA chunk [RFC 9260 § 3.3.1].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Data<'a> {
    pub tsn: u32,
    pub stream: u16,
    pub ssn: u16,
    pub ppid: u32,
    /// U: delivered without regard to the stream's sequence.
    pub unordered: bool,
    /// B: the first fragment of a user message.
    pub begin: bool,
    /// E: the last fragment of a user message.
    pub end: bool,
    /// I: the receiver should SACK at once [RFC 7053].
    pub immediate: bool,
    pub payload: &'a [u8],
}

/// INIT and INIT ACK share their fixed fields [RFC 9260 § 3.3.2, § 3.3.3].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Init<'a> {
    pub initiate_tag: u32,
    pub a_rwnd: u32,
    pub outbound_streams: u16,
    pub inbound_streams: u16,
    pub initial_tsn: u32,
    /// The parameters, as encoded (read them with [`params`], write them
    /// with [`emit_params`]).
    pub params: &'a [u8],
}

/// A SACK [RFC 9260 § 3.3.4]. Gap blocks and duplicates stay encoded: read
/// them with [`Sack::gap_blocks`] and [`Sack::duplicates`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sack<'a> {
    pub cumulative_tsn: u32,
    pub a_rwnd: u32,
    /// Gap Ack Blocks, four octets each (start, end offsets from the
    /// cumulative TSN).
    pub gaps: &'a [u8],
    /// Duplicate TSNs, four octets each.
    pub duplicates: &'a [u8],
}

impl Sack<'_> {
    pub fn gap_blocks(&self) -> impl Iterator<Item = (u16, u16)> + '_ {
        self.gaps
            .chunks_exact(4)
            .map(|g| (be16(&g[0..2]), be16(&g[2..4])))
    }
    pub fn duplicate_tsns(&self) -> impl Iterator<Item = u32> + '_ {
        self.duplicates.chunks_exact(4).map(be32)
    }
}

/// A chunk read into its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkRepr<'a> {
    Data(Data<'a>),
    Init(Init<'a>),
    InitAck(Init<'a>),
    Sack(Sack<'a>),
    /// The Heartbeat Information parameter's value, opaque to the receiver.
    Heartbeat {
        info: &'a [u8],
    },
    HeartbeatAck {
        info: &'a [u8],
    },
    /// `reflected`: the T bit; `causes`: error causes, encoded.
    Abort {
        reflected: bool,
        causes: &'a [u8],
    },
    Shutdown {
        cumulative_tsn: u32,
    },
    ShutdownAck,
    Error {
        causes: &'a [u8],
    },
    CookieEcho {
        cookie: &'a [u8],
    },
    CookieAck,
    ShutdownComplete {
        reflected: bool,
    },
    /// A type this module does not read; see [`UnknownAction`].
    Unknown(Chunk<'a>),
}

impl<'a> ChunkRepr<'a> {
    pub fn parse(c: Chunk<'a>) -> Result<ChunkRepr<'a>, SctpError> {
        let v = c.value;
        let need = |n: usize| {
            if v.len() < n {
                Err(SctpError::ChunkValue)
            } else {
                Ok(())
            }
        };
        Ok(match c.ty {
            chunk::DATA => {
                need(12)?;
                ChunkRepr::Data(Data {
                    tsn: be32(&v[0..4]),
                    stream: be16(&v[4..6]),
                    ssn: be16(&v[6..8]),
                    ppid: be32(&v[8..12]),
                    unordered: c.flags & DATA_FLAG_U != 0,
                    begin: c.flags & DATA_FLAG_B != 0,
                    end: c.flags & DATA_FLAG_E != 0,
                    immediate: c.flags & DATA_FLAG_I != 0,
                    payload: &v[12..],
                })
            }
            chunk::INIT | chunk::INIT_ACK => {
                need(16)?;
                let init = Init {
                    initiate_tag: be32(&v[0..4]),
                    a_rwnd: be32(&v[4..8]),
                    outbound_streams: be16(&v[8..10]),
                    inbound_streams: be16(&v[10..12]),
                    initial_tsn: be32(&v[12..16]),
                    params: &v[16..],
                };
                if c.ty == chunk::INIT {
                    ChunkRepr::Init(init)
                } else {
                    ChunkRepr::InitAck(init)
                }
            }
            chunk::SACK => {
                need(12)?;
                let gaps = usize::from(be16(&v[8..10])) * 4;
                let dups = usize::from(be16(&v[10..12])) * 4;
                if v.len() < 12 + gaps + dups {
                    return Err(SctpError::SackLength);
                }
                ChunkRepr::Sack(Sack {
                    cumulative_tsn: be32(&v[0..4]),
                    a_rwnd: be32(&v[4..8]),
                    gaps: &v[12..12 + gaps],
                    duplicates: &v[12 + gaps..12 + gaps + dups],
                })
            }
            chunk::HEARTBEAT | chunk::HEARTBEAT_ACK => {
                let info = params(v)
                    .find_map(|p| p.ok().filter(|p| p.ty == param::HEARTBEAT_INFO))
                    .ok_or(SctpError::ChunkValue)?
                    .value;
                if c.ty == chunk::HEARTBEAT {
                    ChunkRepr::Heartbeat { info }
                } else {
                    ChunkRepr::HeartbeatAck { info }
                }
            }
            chunk::ABORT => ChunkRepr::Abort {
                reflected: c.flags & FLAG_T != 0,
                causes: v,
            },
            chunk::SHUTDOWN => {
                need(4)?;
                ChunkRepr::Shutdown {
                    cumulative_tsn: be32(&v[0..4]),
                }
            }
            chunk::SHUTDOWN_ACK => ChunkRepr::ShutdownAck,
            chunk::ERROR => ChunkRepr::Error { causes: v },
            chunk::COOKIE_ECHO => ChunkRepr::CookieEcho { cookie: v },
            chunk::COOKIE_ACK => ChunkRepr::CookieAck,
            chunk::SHUTDOWN_COMPLETE => ChunkRepr::ShutdownComplete {
                reflected: c.flags & FLAG_T != 0,
            },
            _ => ChunkRepr::Unknown(c),
        })
    }

    /// Appends the chunk, padded to four octets (the padding not counted in
    /// its length) [RFC 9260 § 3.2].
    pub fn emit(&self, buf: &mut Vec<u8>) {
        let start = buf.len();
        let (ty, flags) = self.type_and_flags();
        buf.extend_from_slice(&[ty, flags, 0, 0]);
        match *self {
            ChunkRepr::Data(d) => {
                buf.extend_from_slice(&d.tsn.to_be_bytes());
                buf.extend_from_slice(&d.stream.to_be_bytes());
                buf.extend_from_slice(&d.ssn.to_be_bytes());
                buf.extend_from_slice(&d.ppid.to_be_bytes());
                buf.extend_from_slice(d.payload);
            }
            ChunkRepr::Init(i) | ChunkRepr::InitAck(i) => {
                buf.extend_from_slice(&i.initiate_tag.to_be_bytes());
                buf.extend_from_slice(&i.a_rwnd.to_be_bytes());
                buf.extend_from_slice(&i.outbound_streams.to_be_bytes());
                buf.extend_from_slice(&i.inbound_streams.to_be_bytes());
                buf.extend_from_slice(&i.initial_tsn.to_be_bytes());
                buf.extend_from_slice(i.params);
            }
            ChunkRepr::Sack(s) => {
                buf.extend_from_slice(&s.cumulative_tsn.to_be_bytes());
                buf.extend_from_slice(&s.a_rwnd.to_be_bytes());
                buf.extend_from_slice(&((s.gaps.len() / 4) as u16).to_be_bytes());
                buf.extend_from_slice(&((s.duplicates.len() / 4) as u16).to_be_bytes());
                buf.extend_from_slice(&s.gaps[..s.gaps.len() / 4 * 4]);
                buf.extend_from_slice(&s.duplicates[..s.duplicates.len() / 4 * 4]);
            }
            ChunkRepr::Heartbeat { info } | ChunkRepr::HeartbeatAck { info } => {
                emit_param(buf, param::HEARTBEAT_INFO, info, true);
            }
            ChunkRepr::Abort { causes, .. } | ChunkRepr::Error { causes } => {
                buf.extend_from_slice(causes);
            }
            ChunkRepr::Shutdown { cumulative_tsn } => {
                buf.extend_from_slice(&cumulative_tsn.to_be_bytes());
            }
            ChunkRepr::CookieEcho { cookie } => buf.extend_from_slice(cookie),
            ChunkRepr::Unknown(c) => buf.extend_from_slice(c.value),
            ChunkRepr::ShutdownAck | ChunkRepr::CookieAck | ChunkRepr::ShutdownComplete { .. } => {}
        }
        let len = (buf.len() - start).min(usize::from(u16::MAX)) as u16;
        buf[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
        buf.resize(start + padded(buf.len() - start), 0);
    }

    fn type_and_flags(&self) -> (u8, u8) {
        let bit = |on: bool, f: u8| if on { f } else { 0 };
        match *self {
            ChunkRepr::Data(d) => (
                chunk::DATA,
                bit(d.unordered, DATA_FLAG_U)
                    | bit(d.begin, DATA_FLAG_B)
                    | bit(d.end, DATA_FLAG_E)
                    | bit(d.immediate, DATA_FLAG_I),
            ),
            ChunkRepr::Init(_) => (chunk::INIT, 0),
            ChunkRepr::InitAck(_) => (chunk::INIT_ACK, 0),
            ChunkRepr::Sack(_) => (chunk::SACK, 0),
            ChunkRepr::Heartbeat { .. } => (chunk::HEARTBEAT, 0),
            ChunkRepr::HeartbeatAck { .. } => (chunk::HEARTBEAT_ACK, 0),
            ChunkRepr::Abort { reflected, .. } => (chunk::ABORT, bit(reflected, FLAG_T)),
            ChunkRepr::Shutdown { .. } => (chunk::SHUTDOWN, 0),
            ChunkRepr::ShutdownAck => (chunk::SHUTDOWN_ACK, 0),
            ChunkRepr::Error { .. } => (chunk::ERROR, 0),
            ChunkRepr::CookieEcho { .. } => (chunk::COOKIE_ECHO, 0),
            ChunkRepr::CookieAck => (chunk::COOKIE_ACK, 0),
            ChunkRepr::ShutdownComplete { reflected } => {
                (chunk::SHUTDOWN_COMPLETE, bit(reflected, FLAG_T))
            }
            ChunkRepr::Unknown(c) => (c.ty, c.flags),
        }
    }
}

/// A parameter of INIT/INIT ACK/HEARTBEAT, or an error cause: both are
/// type-length-value with values padded to four octets [RFC 9260 § 3.2.1,
/// § 3.3.10].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param<'a> {
    pub ty: u16,
    pub value: &'a [u8],
}

/// Reads parameters (or error causes) one after another; the first
/// malformed one ends the iteration with its error.
pub fn params(bytes: &[u8]) -> impl Iterator<Item = Result<Param<'_>, SctpError>> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let b = rest;
        let len = if b.len() >= 4 {
            usize::from(be16(&b[2..4]))
        } else {
            0
        };
        if len < 4 || len > b.len() {
            rest = &[];
            return Some(Err(SctpError::ParamLength));
        }
        rest = &b[padded(len).min(b.len())..];
        Some(Ok(Param {
            ty: be16(&b[0..2]),
            value: &b[4..len],
        }))
    })
}

/// Appends one parameter (or error cause); `last` leaves out its padding,
/// which then belongs to the chunk and is added by [`ChunkRepr::emit`]
/// [RFC 9260 § 3.2: the chunk length excludes only the last parameter's
/// padding].
pub fn emit_param(buf: &mut Vec<u8>, ty: u16, value: &[u8], last: bool) {
    let len = (4 + value.len()).min(usize::from(u16::MAX)) as u16;
    buf.extend_from_slice(&ty.to_be_bytes());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(value);
    if !last {
        buf.resize(buf.len() + padded(value.len()) - value.len(), 0);
    }
}

/// Appends `params` in order, the last without its padding.
pub fn emit_params(buf: &mut Vec<u8>, params: &[(u16, &[u8])]) {
    for (i, (ty, value)) in params.iter().enumerate() {
        emit_param(buf, *ty, value, i + 1 == params.len());
    }
}

/// The common header to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SctpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub verification_tag: u32,
}

impl SctpRepr {
    pub fn parse<T: AsRef<[u8]>>(p: &SctpPacket<T>) -> SctpRepr {
        SctpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            verification_tag: p.verification_tag(),
        }
    }

    /// Appends the packet: header, `chunks` in order, and its checksum.
    pub fn emit(&self, buf: &mut Vec<u8>, chunks: &[ChunkRepr<'_>]) {
        let start = buf.len();
        buf.extend_from_slice(&self.src_port.to_be_bytes());
        buf.extend_from_slice(&self.dst_port.to_be_bytes());
        buf.extend_from_slice(&self.verification_tag.to_be_bytes());
        buf.extend_from_slice(&[0; 4]);
        for c in chunks {
            c.emit(buf);
        }
        SctpPacket {
            buffer: &mut buf[start..],
        }
        .fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex;
    use proptest::prelude::*;

    // Made with scapy 2.5 (scapy.layers.sctp) as whole IPv4 packets from the
    // eNodeB (172.16.3.1) to the MME (172.16.3.2) and back, each SCTP part
    // printed with `bytes(p)[20:].hex()`; the pcap of the same packets
    // decodes in tshark 4 (`-o sctp.checksum:CRC-32C`) with every checksum
    // correct and, for the DATA chunk, an S1 Setup Request that pycrate's
    // S1AP module encoded (aligned PER). E.g. the INIT:
    //   IP(src="172.16.3.1", dst="172.16.3.2")/SCTP(sport=36412, dport=36412,
    //   tag=0)/SCTPChunkInit(init_tag=0x11223344, a_rwnd=106496,
    //   n_out_streams=2, n_in_streams=2, init_tsn=0x01000000,
    //   params=[SCTPChunkParamIPv4Addr(addr="172.16.3.1")])
    const INIT: &str =
        "8e3c8e3c0000000020525fa20100001c112233440001a000000200020100000000050008ac100301";
    // SCTPChunkInitAck(init_tag=0x55667788, …, init_tsn=0x02000000,
    //   params=[SCTPChunkParamStateCookie(cookie=b"\xc0\x0c\x1e" + bytes(range(29)))])
    const INIT_ACK: &str = "8e3c8e3c112233449ae03f0e02000038556677880001a000000200020200000000070024c00c1e000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c";
    const COOKIE_ECHO: &str = "8e3c8e3c556677889c82b7ef0a000024c00c1e000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c";
    const COOKIE_ACK: &str = "8e3c8e3c1122334425ef66ff0b000004";
    // SCTPChunkData(beginning=1, ending=1, tsn=0x01000000, stream_id=0,
    //   stream_seq=0, proto_id=18, data=<S1SetupRequest, 35 octets>)
    const DATA: &str = "8e3c8e3c556677881dfcff82000300330100000000000000000000120011001f000003003b00080000f11000000010004000070000004000f110008940014000";
    const S1_SETUP: &str = "0011001f000003003b00080000f11000000010004000070000004000f1100089400140";
    // SCTPChunkSACK(cumul_tsn_ack=0x01000000, a_rwnd=106492, n_gap_ack=2,
    //   n_dup_tsn=1, gap_ack_list=["2:3", "5:5"], dup_tsn_list=[0x01000000])
    const SACK: &str =
        "8e3c8e3c112233448c931aa40300001c0100000000019ffc00020001000200030005000501000000";
    // SCTPChunkHeartbeatReq(params=[SCTPChunkParamHeartbeatInfo(data=
    //   b"\0\0\0\0\0\0\x27\x10")])
    const HEARTBEAT: &str = "8e3c8e3c11223344765d3bf8040000100001000c0000000000002710";
    // SCTPChunkAbort(error_causes=<User-Initiated Abort "AB">)
    const ABORT: &str = "8e3c8e3c112233443684460d0600000c000c000641420000";
    const SHUTDOWN: &str = "8e3c8e3c556677887d4f4ca80700000802000003";
    const SHUTDOWN_ACK: &str = "8e3c8e3c112233441c66449d08000004";
    const SHUTDOWN_COMPLETE: &str = "8e3c8e3c556677888639a4d20e000004";
    // scapy's INIT with SCTPChunkParamSupportedAddrTypes(addr_type_list=
    //   ["IPv4"]) last: scapy counts that parameter's padding in the chunk
    //   length (36, where § 3.2 says 34; tshark notes it) — read leniently.
    const INIT_SCAPY_PADDED: &str = "8e3c8e3c0000000041ce34d701000024112233440001a000000200020100000000050008ac100301000c000600050000";

    fn one(hexed: &str) -> (SctpRepr, Vec<u8>) {
        let b = hex(hexed);
        let p = SctpPacket::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum(), "{hexed}");
        (SctpRepr::parse(&p), b)
    }

    fn chunk_of(b: &[u8]) -> ChunkRepr<'_> {
        let mut cs = SctpPacket::new_checked(b).unwrap().chunks_ref();
        let c = cs.next().unwrap().unwrap();
        assert!(cs.next().is_none());
        ChunkRepr::parse(c).unwrap()
    }

    fn emitted(h: SctpRepr, c: ChunkRepr<'_>) -> Vec<u8> {
        let mut out = vec![];
        h.emit(&mut out, &[c]);
        out
    }

    #[test]
    fn crc32c_is_castagnolis() {
        // RFC 3720 § B.4's test vectors: 32 zero octets, 32 octets of 0xff.
        assert_eq!(crc32c(&[0; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(&[0xff; 32]), 0x62a8_ab43);
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn the_handshake_reads_and_re_emits_byte_for_byte() {
        let (h, b) = one(INIT);
        assert_eq!(
            (h.src_port, h.dst_port, h.verification_tag),
            (36412, 36412, 0)
        );
        let ChunkRepr::Init(i) = chunk_of(&b) else {
            panic!()
        };
        assert_eq!(
            (
                i.initiate_tag,
                i.a_rwnd,
                i.outbound_streams,
                i.inbound_streams,
                i.initial_tsn
            ),
            (0x1122_3344, 106_496, 2, 2, 0x0100_0000)
        );
        let ps: Vec<_> = params(i.params).map(Result::unwrap).collect();
        assert_eq!(
            ps,
            [Param {
                ty: param::IPV4_ADDRESS,
                value: &[172, 16, 3, 1]
            }]
        );
        assert_eq!(emitted(h, ChunkRepr::Init(i)), b);

        let (h, b) = one(INIT_ACK);
        let ChunkRepr::InitAck(i) = chunk_of(&b) else {
            panic!()
        };
        let cookie: Vec<u8> = [0xc0, 0x0c, 0x1e].into_iter().chain(0..29).collect();
        let mut ps = vec![];
        emit_params(&mut ps, &[(param::STATE_COOKIE, &cookie)]);
        assert_eq!(i.params, &ps[..]);
        assert_eq!(emitted(h, ChunkRepr::InitAck(i)), b);

        let (h, b) = one(COOKIE_ECHO);
        assert_eq!(chunk_of(&b), ChunkRepr::CookieEcho { cookie: &cookie });
        assert_eq!(emitted(h, ChunkRepr::CookieEcho { cookie: &cookie }), b);
        let (h, b) = one(COOKIE_ACK);
        assert_eq!(chunk_of(&b), ChunkRepr::CookieAck);
        assert_eq!(emitted(h, ChunkRepr::CookieAck), b);
    }

    #[test]
    fn data_with_ppid_18_and_a_sack_with_gaps_read_and_re_emit() {
        let (h, b) = one(DATA);
        let ChunkRepr::Data(d) = chunk_of(&b) else {
            panic!()
        };
        assert_eq!(
            (d.tsn, d.stream, d.ssn, d.ppid),
            (0x0100_0000, 0, 0, ppid::S1AP)
        );
        assert!(d.begin && d.end && !d.unordered && !d.immediate);
        assert_eq!(d.payload, &hex(S1_SETUP)[..]);
        assert_eq!(emitted(h, ChunkRepr::Data(d)), b);

        let (h, b) = one(SACK);
        let ChunkRepr::Sack(s) = chunk_of(&b) else {
            panic!()
        };
        assert_eq!((s.cumulative_tsn, s.a_rwnd), (0x0100_0000, 106_492));
        assert_eq!(s.gap_blocks().collect::<Vec<_>>(), [(2, 3), (5, 5)]);
        assert_eq!(s.duplicate_tsns().collect::<Vec<_>>(), [0x0100_0000]);
        assert_eq!(emitted(h, ChunkRepr::Sack(s)), b);
    }

    #[test]
    fn heartbeat_abort_and_shutdowns_read_and_re_emit() {
        let (h, b) = one(HEARTBEAT);
        let info = [0, 0, 0, 0, 0, 0, 0x27, 0x10];
        assert_eq!(chunk_of(&b), ChunkRepr::Heartbeat { info: &info });
        assert_eq!(emitted(h, ChunkRepr::Heartbeat { info: &info }), b);

        let (h, b) = one(ABORT);
        let ChunkRepr::Abort { reflected, causes } = chunk_of(&b) else {
            panic!()
        };
        assert!(!reflected);
        let cs: Vec<_> = params(causes).map(Result::unwrap).collect();
        assert_eq!(
            cs,
            [Param {
                ty: cause::USER_ABORT,
                value: b"AB"
            }]
        );
        let mut enc = vec![];
        emit_param(&mut enc, cause::USER_ABORT, b"AB", false);
        assert_eq!(
            emitted(
                h,
                ChunkRepr::Abort {
                    reflected: false,
                    causes: &enc
                }
            ),
            b
        );

        let (h, b) = one(SHUTDOWN);
        let c = ChunkRepr::Shutdown {
            cumulative_tsn: 0x0200_0003,
        };
        assert_eq!(chunk_of(&b), c);
        assert_eq!(emitted(h, c), b);
        let (h, b) = one(SHUTDOWN_ACK);
        assert_eq!(emitted(h, ChunkRepr::ShutdownAck), b);
        let (h, b) = one(SHUTDOWN_COMPLETE);
        let c = ChunkRepr::ShutdownComplete { reflected: false };
        assert_eq!(chunk_of(&b), c);
        assert_eq!(emitted(h, c), b);
    }

    #[test]
    fn a_last_parameter_padded_inside_the_chunk_is_read_too() {
        let (_, b) = one(INIT_SCAPY_PADDED);
        let ChunkRepr::Init(i) = chunk_of(&b) else {
            panic!()
        };
        let ps: Vec<_> = params(i.params).map(Result::unwrap).collect();
        assert_eq!(ps.len(), 2);
        assert_eq!(
            ps[1],
            Param {
                ty: param::SUPPORTED_ADDRESS_TYPES,
                value: &[0, 5]
            }
        );
    }

    #[test]
    fn bad_checksums_lengths_and_counts_are_refused() {
        let mut b = hex(DATA);
        b[40] ^= 1;
        assert!(!SctpPacket::new_checked(&b[..]).unwrap().verify_checksum());
        assert_eq!(
            SctpPacket::new_checked(&b[..11]).unwrap_err(),
            SctpError::Truncated
        );
        // A chunk length past the packet, and one below its header.
        let mut b = hex(COOKIE_ACK);
        b[15] = 8;
        let p = SctpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.chunks().next(), Some(Err(SctpError::ChunkLength)));
        b[15] = 3;
        let p = SctpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.chunks().next(), Some(Err(SctpError::ChunkLength)));
        // A SACK claiming more gap blocks than it holds.
        let mut b = hex(SACK);
        b[HEADER_LEN + 12] = 9;
        let p = SctpPacket::new_checked(&b[..]).unwrap();
        let c = p.chunks().next().unwrap().unwrap();
        assert_eq!(ChunkRepr::parse(c), Err(SctpError::SackLength));
        // A DATA chunk without its fixed fields.
        let c = Chunk {
            ty: chunk::DATA,
            flags: 3,
            value: &[0; 11],
        };
        assert_eq!(ChunkRepr::parse(c), Err(SctpError::ChunkValue));
        // A HEARTBEAT without its info parameter.
        let c = Chunk {
            ty: chunk::HEARTBEAT,
            flags: 0,
            value: &[],
        };
        assert_eq!(ChunkRepr::parse(c), Err(SctpError::ChunkValue));
    }

    #[test]
    fn unknown_types_say_what_to_do_in_their_high_bits() {
        let a = UnknownAction::of_chunk(0x3f);
        assert!(!a.skip && !a.report);
        let a = UnknownAction::of_chunk(0xc1);
        assert!(a.skip && a.report);
        let a = UnknownAction::of_param(0x8001);
        assert!(a.skip && !a.report);
        let c = Chunk {
            ty: 0xc1,
            flags: 7,
            value: b"xyz",
        };
        let r = ChunkRepr::parse(c).unwrap();
        assert_eq!(r, ChunkRepr::Unknown(c));
        let mut out = vec![];
        r.emit(&mut out);
        assert_eq!(out, [0xc1, 7, 0, 7, b'x', b'y', b'z', 0]);
    }

    #[test]
    fn the_display_names_the_chunks_as_tshark_does() {
        let b = hex(DATA);
        let p = SctpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.to_string(), "SCTP 36412 > 36412 vtag 0x55667788 DATA");
    }

    proptest! {
        #[test]
        fn data_round_trips_with_a_valid_checksum(tsn: u32, stream: u16, ssn: u16, ppid: u32,
                flags in 0u8..16, vtag: u32,
                payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let d = Data { tsn, stream, ssn, ppid, unordered: flags & 4 != 0,
                begin: flags & 2 != 0, end: flags & 1 != 0, immediate: flags & 8 != 0,
                payload: &payload };
            let h = SctpRepr { src_port: 36412, dst_port: 36412, verification_tag: vtag };
            let b = emitted(h, ChunkRepr::Data(d));
            prop_assert_eq!(b.len() % 4, 0);
            let p = SctpPacket::new_checked(&b[..]).unwrap();
            prop_assert!(p.verify_checksum());
            prop_assert_eq!(SctpRepr::parse(&p), h);
            prop_assert_eq!(chunk_of(&b), ChunkRepr::Data(d));
        }

        #[test]
        fn no_input_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(p) = SctpPacket::new_checked(&b[..]) {
                let _ = (p.verify_checksum(), p.to_string());
                for c in p.chunks().flatten() {
                    if let Ok(r) = ChunkRepr::parse(c) {
                        let mut out = vec![];
                        r.emit(&mut out);
                        if let ChunkRepr::Init(i) | ChunkRepr::InitAck(i) = r {
                            let _ = params(i.params).count();
                        }
                    }
                }
            }
        }
    }
}
