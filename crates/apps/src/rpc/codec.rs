//! The RPC framing: Dubbo's 16-byte header and Hessian 2.0 bodies, sans-IO.
//!
//! Read Apache Dubbo's `ExchangeCodec` (the header) and `DubboCodec` (the
//! bodies) first; docs/rpc.md draws the layout. The header:
//!
//! ```text
//!  0      2      3      4                     12            16
//!  +------+------+------+----------------------+-------------+
//!  |dabb  |flags |status|  request id (u64 BE) | body len BE |
//!  +------+------+------+----------------------+-------------+
//!  flags: 0x80 request, 0x40 two-way, 0x20 event, 0x1f serialization id
//! ```
//!
//! [`Decoder`] takes bytes as they arrive and yields whole [`Frame`]s. A bad
//! magic is fatal (the stream has lost its framing: close the connection);
//! an oversized body or an unknown serialization id is reported with the
//! header's request id and the body is skipped, so the connection goes on
//! and the peer can be answered `40 bad request`.

use std::collections::BTreeMap;
use std::fmt;

use bytes::{Buf, Bytes, BytesMut};

use super::hessian::{HessianError, Reader, Value};

/// `0xdabb`, the first two bytes of every frame.
pub const MAGIC: u16 = 0xdabb;
/// The header's length.
pub const HEADER_LEN: usize = 16;
/// Dubbo's serialization id for Hessian 2.0, the only one spoken here.
pub const HESSIAN2: u8 = 2;
/// Dubbo's default `payload` limit: 8 MiB.
pub const DEFAULT_MAX_BODY: u32 = 8 * 1024 * 1024;
/// The `dubbo` version written in every request body.
pub const DUBBO_VERSION: &str = "2.0.2";

const FLAG_REQUEST: u8 = 0x80;
const FLAG_TWO_WAY: u8 = 0x40;
const FLAG_EVENT: u8 = 0x20;
const SERIALIZATION_MASK: u8 = 0x1f;

/// A response's status byte (Dubbo's `Response` constants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// 20
    Ok,
    /// 30: the client gave up waiting.
    ClientTimeout,
    /// 31: the server gave up on the handler.
    ServerTimeout,
    /// 40: the request could not be read (or was too large).
    BadRequest,
    /// 50: the response could not be read.
    BadResponse,
    /// 60: no such service or method.
    ServiceNotFound,
    /// 70: the service failed.
    ServiceError,
    /// 80: the server failed.
    ServerError,
    /// 90: the client failed (not connected, closed).
    ClientError,
    /// Any other value, kept so a header round-trips.
    Unknown(u8),
}

impl From<u8> for Status {
    fn from(b: u8) -> Status {
        match b {
            20 => Status::Ok,
            30 => Status::ClientTimeout,
            31 => Status::ServerTimeout,
            40 => Status::BadRequest,
            50 => Status::BadResponse,
            60 => Status::ServiceNotFound,
            70 => Status::ServiceError,
            80 => Status::ServerError,
            90 => Status::ClientError,
            n => Status::Unknown(n),
        }
    }
}

impl From<Status> for u8 {
    fn from(s: Status) -> u8 {
        match s {
            Status::Ok => 20,
            Status::ClientTimeout => 30,
            Status::ServerTimeout => 31,
            Status::BadRequest => 40,
            Status::BadResponse => 50,
            Status::ServiceNotFound => 60,
            Status::ServiceError => 70,
            Status::ServerError => 80,
            Status::ClientError => 90,
            Status::Unknown(n) => n,
        }
    }
}

impl Status {
    /// Dubbo's name, in lower case with underscores (`service_not_found`).
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::ClientTimeout => "client_timeout",
            Status::ServerTimeout => "server_timeout",
            Status::BadRequest => "bad_request",
            Status::BadResponse => "bad_response",
            Status::ServiceNotFound => "service_not_found",
            Status::ServiceError => "service_error",
            Status::ServerError => "server_error",
            Status::ClientError => "client_error",
            Status::Unknown(_) => "unknown",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", u8::from(*self), self.name())
    }
}

/// A parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Flag bit 7: a request (else a response).
    pub request: bool,
    /// Flag bit 6: the request expects a response.
    pub two_way: bool,
    /// Flag bit 5: an event (a heartbeat), not a call.
    pub event: bool,
    /// Flag bits 0–4: the body's serialization id.
    pub serialization: u8,
    /// Byte 3; meaningful in responses only (requests send 0).
    pub status: Status,
    pub request_id: u64,
    pub body_len: u32,
}

impl Header {
    /// Parses the 16 header bytes. Only the magic is checked here.
    pub fn parse(b: &[u8; HEADER_LEN]) -> Result<Header, CodecError> {
        let magic = u16::from_be_bytes([b[0], b[1]]);
        if magic != MAGIC {
            return Err(CodecError::BadMagic { found: magic });
        }
        let mut id = [0; 8];
        id.copy_from_slice(&b[4..12]);
        Ok(Header {
            request: b[2] & FLAG_REQUEST != 0,
            two_way: b[2] & FLAG_TWO_WAY != 0,
            event: b[2] & FLAG_EVENT != 0,
            serialization: b[2] & SERIALIZATION_MASK,
            status: b[3].into(),
            request_id: u64::from_be_bytes(id),
            body_len: u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
        })
    }

    /// The 16 header bytes.
    pub fn emit(&self) -> [u8; HEADER_LEN] {
        let mut b = [0; HEADER_LEN];
        b[..2].copy_from_slice(&MAGIC.to_be_bytes());
        b[2] = (self.serialization & SERIALIZATION_MASK)
            | if self.request { FLAG_REQUEST } else { 0 }
            | if self.two_way { FLAG_TWO_WAY } else { 0 }
            | if self.event { FLAG_EVENT } else { 0 };
        b[3] = self.status.into();
        b[4..12].copy_from_slice(&self.request_id.to_be_bytes());
        b[12..].copy_from_slice(&self.body_len.to_be_bytes());
        b
    }
}

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match (self.request, self.event) {
            (true, true) => "heartbeat",
            (true, false) => "request",
            (false, true) => "heartbeat-reply",
            (false, false) => "response",
        };
        write!(
            f,
            "dubbo {kind} id={} ser={}",
            self.request_id, self.serialization
        )?;
        if self.request {
            write!(f, " {}", if self.two_way { "two-way" } else { "one-way" })?;
        } else {
            write!(f, " status={}", self.status)?;
        }
        write!(f, " len={}", self.body_len)
    }
}

/// One frame: a header and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub header: Header,
    pub body: Bytes,
}

impl Frame {
    /// A two-way call.
    pub fn request(request_id: u64, req: &Request) -> Frame {
        Frame::build(
            true,
            true,
            false,
            Status::Unknown(0),
            request_id,
            req.encode(),
        )
    }

    /// A heartbeat request: a two-way event whose body is Hessian null.
    pub fn heartbeat(request_id: u64) -> Frame {
        Frame::build(true, true, true, Status::Unknown(0), request_id, vec![b'N'])
    }

    /// The answer to a heartbeat.
    pub fn heartbeat_reply(request_id: u64) -> Frame {
        Frame::build(false, false, true, Status::Ok, request_id, vec![b'N'])
    }

    /// The response to request `request_id`.
    pub fn response(request_id: u64, result: &Result<Value, Fault>) -> Frame {
        let (status, body) = encode_response(result);
        Frame::build(false, false, false, status, request_id, body)
    }

    fn build(
        request: bool,
        two_way: bool,
        event: bool,
        status: Status,
        request_id: u64,
        body: Vec<u8>,
    ) -> Frame {
        let header = Header {
            request,
            two_way,
            event,
            serialization: HESSIAN2,
            status,
            request_id,
            body_len: body.len() as u32,
        };
        Frame {
            header,
            body: body.into(),
        }
    }

    /// Header and body, ready for the socket.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.body.len());
        self.write_to(&mut out);
        out
    }

    /// Appends header and body to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut h = self.header;
        h.body_len = self.body.len() as u32;
        out.extend_from_slice(&h.emit());
        out.extend_from_slice(&self.body);
    }
}

/// A connection writer's next write: waits for one frame, then takes
/// whatever else is ready (up to [`BATCH`] bytes) into `buf`, so many frames
/// leave in one write. `false` once every sender is gone.
pub async fn next_batch(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Frame>,
    buf: &mut Vec<u8>,
) -> bool {
    buf.clear();
    let Some(f) = rx.recv().await else {
        return false;
    };
    f.write_to(buf);
    while buf.len() <= BATCH {
        match rx.try_recv() {
            Ok(f) => f.write_to(buf),
            Err(_) => break,
        }
    }
    true
}

/// The most bytes a writer gathers for one write (more once one frame is bigger).
const BATCH: usize = 256 * 1024;

/// Input the decoder refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Not a frame: the stream's framing is lost; close the connection.
    #[error("bad magic {found:#06x} (expected 0xdabb): closing the connection")]
    BadMagic { found: u16 },
    /// A body longer than the limit; it is skipped.
    #[error("request {} body of {len} bytes exceeds the limit of {max}", .header.request_id)]
    TooLarge { header: Header, len: u32, max: u32 },
    /// A serialization id other than Hessian2 (2); the body is skipped.
    #[error("request {} uses serialization id {id}; only 2 (hessian2) is spoken", .header.request_id)]
    UnknownSerialization { header: Header, id: u8 },
}

impl CodecError {
    /// True when the connection must be closed (the framing is lost).
    pub fn is_fatal(&self) -> bool {
        matches!(self, CodecError::BadMagic { .. })
    }

    /// The header of the refused frame, when it was readable.
    pub fn header(&self) -> Option<&Header> {
        match self {
            CodecError::BadMagic { .. } => None,
            CodecError::TooLarge { header, .. }
            | CodecError::UnknownSerialization { header, .. } => Some(header),
        }
    }
}

/// A streaming frame decoder: [`push`](Decoder::push) bytes as they arrive,
/// then call [`next_frame`](Decoder::next_frame) until it says `None`.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    max_body: u32,
    /// Body bytes of a refused frame still to throw away.
    skip: usize,
    /// The header of a frame whose body has not fully arrived.
    pending: Option<Header>,
    /// Set after a fatal error: nothing more is decoded.
    broken: bool,
}

impl Decoder {
    pub fn new(max_body: u32) -> Decoder {
        Decoder {
            buf: BytesMut::new(),
            max_body,
            skip: 0,
            pending: None,
            broken: false,
        }
    }

    /// Appends bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        if !self.broken {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole frame, `None` until more bytes arrive, or the reason
    /// the next frame is refused. After a fatal error it returns `None` forever.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, CodecError> {
        if self.broken {
            return Ok(None);
        }
        if self.skip > 0 {
            let n = self.skip.min(self.buf.len());
            self.buf.advance(n);
            self.skip -= n;
            if self.skip > 0 {
                return Ok(None);
            }
        }
        let header = match self.pending {
            Some(h) => h,
            None => {
                let Some(raw) = self.buf.get(..HEADER_LEN) else {
                    // A wrong first byte need not wait for 16 bytes.
                    if let Some(found) = self.early_bad_magic() {
                        self.broken = true;
                        self.buf.clear();
                        return Err(CodecError::BadMagic { found });
                    }
                    return Ok(None);
                };
                let mut b = [0; HEADER_LEN];
                b.copy_from_slice(raw);
                let h = match Header::parse(&b) {
                    Ok(h) => h,
                    Err(e) => {
                        self.broken = true;
                        self.buf.clear();
                        return Err(e);
                    }
                };
                self.buf.advance(HEADER_LEN);
                let refused = if h.body_len > self.max_body {
                    Some(CodecError::TooLarge {
                        header: h,
                        len: h.body_len,
                        max: self.max_body,
                    })
                } else if h.serialization != HESSIAN2 {
                    Some(CodecError::UnknownSerialization {
                        header: h,
                        id: h.serialization,
                    })
                } else {
                    None
                };
                if let Some(e) = refused {
                    self.skip = h.body_len as usize;
                    let n = self.skip.min(self.buf.len());
                    self.buf.advance(n);
                    self.skip -= n;
                    return Err(e);
                }
                h
            }
        };
        let len = header.body_len as usize;
        if self.buf.len() < len {
            self.pending = Some(header);
            self.buf.reserve(len - self.buf.len());
            return Ok(None);
        }
        self.pending = None;
        let body = self.buf.split_to(len).freeze();
        Ok(Some(Frame { header, body }))
    }

    /// The magic as far as it has arrived, if it is already wrong.
    fn early_bad_magic(&self) -> Option<u16> {
        let m = MAGIC.to_be_bytes();
        match self.buf.len() {
            0 => None,
            1 if self.buf[0] != m[0] => Some(u16::from(self.buf[0]) << 8),
            1 => None,
            _ => {
                let found = u16::from_be_bytes([self.buf[0], self.buf[1]]);
                (found != MAGIC).then_some(found)
            }
        }
    }
}

/// An error response: its status and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct Fault {
    pub status: Status,
    pub message: String,
}

impl Fault {
    pub fn new(status: Status, message: impl Into<String>) -> Fault {
        Fault {
            status,
            message: message.into(),
        }
    }
}

/// A body that is not what its frame promises.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Hessian(#[from] HessianError),
    /// A field of the wrong Hessian type.
    #[error("body field `{0}` has the wrong type")]
    WrongType(&'static str),
    /// The parameter descriptor is not a list of JVM type descriptors.
    #[error("parameter types {0:?} are not JVM descriptors")]
    BadDescriptor(String),
    /// A response flag other than 0–5.
    #[error("unknown response flag {0}")]
    BadResponseFlag(i64),
}

/// A call (Dubbo's `RpcInvocation`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Request {
    /// The service (Dubbo's `path`, the interface name), e.g. `stock`.
    pub service: String,
    /// The service version (Dubbo's `version`), `0.0.0` by default.
    pub version: String,
    pub method: String,
    pub args: Vec<Value>,
    /// Small string pairs: `timeout`, `idempotent`, `trace_id`, …
    pub attachments: BTreeMap<String, String>,
}

impl Request {
    pub fn new(service: &str, method: &str, args: Vec<Value>) -> Request {
        Request {
            service: service.into(),
            version: "0.0.0".into(),
            method: method.into(),
            args,
            attachments: BTreeMap::new(),
        }
    }

    /// The body, as `DubboCodec.encodeRequestData` lays it out: dubbo
    /// version, path, version, method, parameter descriptor, the arguments,
    /// the attachments map.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for s in [
            DUBBO_VERSION,
            &self.service,
            &self.version,
            &self.method,
            &self.args.iter().map(descriptor).collect::<String>(),
        ] {
            Value::from(s).encode(&mut out);
        }
        for a in &self.args {
            a.encode(&mut out);
        }
        Value::Map(
            self.attachments
                .iter()
                .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                .collect(),
        )
        .encode(&mut out);
        out
    }

    /// Reads a request body; the number of arguments comes from the descriptor.
    pub fn decode(body: &[u8]) -> Result<Request, BodyError> {
        let mut r = Reader::new(body);
        let string = |r: &mut Reader, field| match r.value()? {
            Value::String(s) => Ok(s),
            Value::Null => Ok(String::new()),
            _ => Err(BodyError::WrongType(field)),
        };
        let _dubbo = string(&mut r, "dubbo version")?;
        let service = string(&mut r, "path")?;
        let version = string(&mut r, "version")?;
        let method = string(&mut r, "method")?;
        let desc = string(&mut r, "parameter types")?;
        let n = count_descriptors(&desc).ok_or(BodyError::BadDescriptor(desc))?;
        let args = (0..n).map(|_| r.value()).collect::<Result<Vec<_>, _>>()?;
        let mut attachments = BTreeMap::new();
        if !r.is_empty() {
            match r.value()? {
                Value::Map(m) => {
                    for (k, v) in m {
                        if let (Value::String(k), Value::String(v)) = (k, v) {
                            attachments.insert(k, v);
                        }
                    }
                }
                Value::Null => {}
                _ => return Err(BodyError::WrongType("attachments")),
            }
        }
        r.finish()?;
        Ok(Request {
            service,
            version,
            method,
            args,
            attachments,
        })
    }

    /// True when the caller marked the call safe to repeat.
    pub fn idempotent(&self) -> bool {
        self.attachments.get("idempotent").map(String::as_str) == Some("true")
    }
}

/// The JVM descriptor Dubbo's `ReflectUtils.getDesc` would give the value's Java type.
fn descriptor(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => "Z",
        Value::Int(_) => "I",
        Value::Long(_) => "J",
        Value::Double(_) => "D",
        Value::String(_) => "Ljava/lang/String;",
        Value::Binary(_) => "[B",
        Value::List(_) => "Ljava/util/List;",
        Value::Map(_) => "Ljava/util/Map;",
        Value::Null => "Ljava/lang/Object;",
    }
}

/// How many types `Ljava/lang/String;IJ[B` names, or `None` if malformed.
fn count_descriptors(desc: &str) -> Option<usize> {
    let b = desc.as_bytes();
    let (mut i, mut n) = (0, 0);
    while i < b.len() {
        while b.get(i) == Some(&b'[') {
            i += 1;
        }
        match b.get(i)? {
            b'Z' | b'B' | b'C' | b'S' | b'I' | b'J' | b'F' | b'D' => i += 1,
            b'L' => i += desc[i..].find(';')? + 1,
            _ => return None,
        }
        n += 1;
    }
    Some(n)
}

/// Dubbo's response flags (`DubboCodec.RESPONSE_*`); `+3` means attachments follow.
const RESPONSE_WITH_EXCEPTION: i32 = 0;
const RESPONSE_VALUE: i32 = 1;
const RESPONSE_NULL_VALUE: i32 = 2;

/// The status byte and body of a response: `20` with a flag and the value,
/// or the fault's status with its message as a Hessian string.
pub fn encode_response(result: &Result<Value, Fault>) -> (Status, Vec<u8>) {
    let mut out = Vec::new();
    match result {
        Ok(Value::Null) => {
            Value::Int(RESPONSE_NULL_VALUE).encode(&mut out);
            (Status::Ok, out)
        }
        Ok(v) => {
            Value::Int(RESPONSE_VALUE).encode(&mut out);
            v.encode(&mut out);
            (Status::Ok, out)
        }
        Err(f) => {
            Value::from(f.message.as_str()).encode(&mut out);
            (f.status, out)
        }
    }
}

/// Reads a response body under its status byte.
pub fn decode_response(status: Status, body: &[u8]) -> Result<Result<Value, Fault>, BodyError> {
    let mut r = Reader::new(body);
    if status != Status::Ok {
        let message = match r.value()? {
            Value::String(s) => s,
            Value::Null => String::new(),
            _ => return Err(BodyError::WrongType("error message")),
        };
        return Ok(Err(Fault { status, message }));
    }
    let flag = r
        .value()?
        .as_i64()
        .ok_or(BodyError::WrongType("response flag"))?;
    let out = match flag {
        f if f == i64::from(RESPONSE_WITH_EXCEPTION) || f == 3 => {
            let e = r.value()?;
            Err(Fault::new(
                Status::ServiceError,
                e.as_str().map_or_else(|| e.to_string(), str::to_owned),
            ))
        }
        f if f == i64::from(RESPONSE_VALUE) || f == 4 => Ok(r.value()?),
        f if f == i64::from(RESPONSE_NULL_VALUE) || f == 5 => Ok(Value::Null),
        f => return Err(BodyError::BadResponseFlag(f)),
    };
    if flag >= 3 {
        let _attachments = r.value()?;
    }
    r.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn header() -> Header {
        Header {
            request: true,
            two_way: true,
            event: false,
            serialization: HESSIAN2,
            status: Status::Unknown(0),
            request_id: 0x0102_0304_0506_0708,
            body_len: 0x0a0b_0c0d,
        }
    }

    #[test]
    fn header_fields_sit_at_dubbos_offsets() {
        // da bb | c2 = request 0x80 | two-way 0x40 | hessian2 2 | 00 status |
        // id 0102030405060708 | len 0a0b0c0d
        let b = header().emit();
        assert_eq!(
            hex(&b),
            "dabbc2000102030405060708 0a0b0c0d".replace(' ', "")
        );
        assert_eq!(Header::parse(&b).unwrap(), header());
    }

    #[test]
    fn every_flag_and_status_round_trips() {
        for bits in 0..8u8 {
            for ser in [0, 2, 31] {
                for st in [0, 20, 30, 31, 40, 50, 60, 70, 80, 90, 255] {
                    let h = Header {
                        request: bits & 1 != 0,
                        two_way: bits & 2 != 0,
                        event: bits & 4 != 0,
                        serialization: ser,
                        status: st.into(),
                        request_id: u64::MAX - u64::from(st),
                        body_len: u32::from(st) << 24,
                    };
                    assert_eq!(Header::parse(&h.emit()).unwrap(), h);
                    assert_eq!(u8::from(h.status), st);
                }
            }
        }
        // A heartbeat reply: response, event, hessian2 = 0x22, status 20.
        let b = Frame::heartbeat_reply(7).to_bytes();
        assert_eq!(hex(&b), "dabb22140000000000000007000000014e");
        let b = Frame::heartbeat(7).to_bytes();
        assert_eq!(hex(&b[..4]), "dabbe200");
    }

    #[test]
    fn statuses_are_dubbos_values() {
        let all = [
            (Status::Ok, 20),
            (Status::ClientTimeout, 30),
            (Status::ServerTimeout, 31),
            (Status::BadRequest, 40),
            (Status::BadResponse, 50),
            (Status::ServiceNotFound, 60),
            (Status::ServiceError, 70),
            (Status::ServerError, 80),
            (Status::ClientError, 90),
        ];
        for (s, b) in all {
            assert_eq!(u8::from(s), b);
            assert_eq!(Status::from(b), s);
        }
        assert_eq!(Status::ServiceNotFound.to_string(), "60 service_not_found");
    }

    fn sample() -> Request {
        let mut r = Request::new(
            "stock",
            "deduct",
            vec![
                "sku-68".into(),
                Value::Long(1),
                serde_json::json!({"order": 1}).into(),
            ],
        );
        r.attachments.insert("idempotent".into(), "true".into());
        r.attachments.insert("timeout".into(), "1000".into());
        r
    }

    #[test]
    fn request_body_is_dubbos_sequence_and_round_trips() {
        let r = sample();
        let body = r.encode();
        // "2.0.2" "stock" "0.0.0" "deduct" "Ljava/lang/String;JLjava/util/Map;" …
        assert!(hex(&body).starts_with(&format!("05{}", hex(b"2.0.2"))));
        let mut rd = Reader::new(&body);
        let fields: Vec<_> = (0..5).map(|_| rd.value().unwrap()).collect();
        assert_eq!(fields[4], Value::from("Ljava/lang/String;JLjava/util/Map;"));
        assert_eq!(Request::decode(&body).unwrap(), r);
        assert!(r.idempotent());
    }

    #[test]
    fn request_body_matches_hessian_js_field_by_field() {
        // node: Buffer.concat(["2.0.2","stock","0.0.0","deduct",
        //   "Ljava/lang/String;J","sku-68",{$class:"long",$:1},
        //   {idempotent:"true",timeout:"1000"}].map(p => hessian.encode(p,"2.0")))
        // (hessian.js 2.11.0); its DecoderV2 reads the same eight values back.
        const GOLDEN: &str = "05322e302e320573746f636b05302e302e3006646564756374134c6a6176612f\
            6c616e672f537472696e673b4a06736b752d3638e1480a6964656d706f74656e\
            7404747275650774696d656f757404313030305a";
        let mut r = Request::new("stock", "deduct", vec!["sku-68".into(), Value::Long(1)]);
        r.attachments.insert("idempotent".into(), "true".into());
        r.attachments.insert("timeout".into(), "1000".into());
        assert_eq!(hex(&r.encode()), GOLDEN.replace(' ', ""));
    }

    #[test]
    fn descriptors_are_counted_like_jvm_signatures() {
        assert_eq!(count_descriptors(""), Some(0));
        assert_eq!(count_descriptors("IJZ[B[[Ljava/lang/String;D"), Some(6));
        assert_eq!(count_descriptors("Ljava/lang/String"), None);
        assert_eq!(count_descriptors("Q"), None);
        assert!(matches!(
            Request::decode(&Value::from("x").to_bytes()),
            Err(BodyError::Hessian(HessianError::Truncated(_)))
        ));
    }

    #[test]
    fn responses_carry_value_null_or_fault() {
        for result in [
            Ok(Value::from("success")),
            Ok(Value::Null),
            Err(Fault::new(Status::ServiceNotFound, "no service stock.nope")),
            Err(Fault::new(Status::ServiceError, "sold out")),
        ] {
            let f = Frame::response(9, &result);
            let (status, body) = encode_response(&result);
            assert_eq!(f.header.status, status);
            assert_eq!(decode_response(status, &body).unwrap(), result);
        }
        // 20, flag 1 (x91), "success".
        assert_eq!(hex(&encode_response(&Ok("ok".into())).1), "91026f6b");
        // Dubbo's flag 0: an exception value under status 20.
        let body = [0x90, 0x04, b'b', b'o', b'o', b'm'];
        assert_eq!(
            decode_response(Status::Ok, &body).unwrap(),
            Err(Fault::new(Status::ServiceError, "boom"))
        );
        assert_eq!(
            decode_response(Status::Ok, &[0x99]),
            Err(BodyError::BadResponseFlag(9))
        );
    }

    fn frames(d: &mut Decoder) -> Vec<Result<Frame, CodecError>> {
        let mut out = Vec::new();
        loop {
            match d.next_frame() {
                Ok(Some(f)) => out.push(Ok(f)),
                Ok(None) => return out,
                Err(e) => out.push(Err(e)),
            }
        }
    }

    #[test]
    fn decoder_takes_input_byte_by_byte() {
        let a = Frame::request(1, &sample());
        let b = Frame::heartbeat(2);
        let c = Frame::response(3, &Ok(Value::Null));
        let mut wire = a.to_bytes();
        wire.extend(b.to_bytes());
        wire.extend(c.to_bytes());
        let mut d = Decoder::new(DEFAULT_MAX_BODY);
        let mut got = Vec::new();
        for byte in &wire {
            d.push(std::slice::from_ref(byte));
            got.extend(frames(&mut d));
        }
        assert_eq!(got, vec![Ok(a), Ok(b), Ok(c)]);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn decoder_yields_many_frames_from_one_read() {
        let mut d = Decoder::new(DEFAULT_MAX_BODY);
        let wire: Vec<u8> = (0..100)
            .flat_map(|i| Frame::heartbeat(i).to_bytes())
            .collect();
        d.push(&wire);
        let ids: Vec<u64> = frames(&mut d)
            .into_iter()
            .map(|f| f.unwrap().header.request_id)
            .collect();
        assert_eq!(ids, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn bad_magic_is_fatal_and_seen_at_the_first_wrong_byte() {
        let mut d = Decoder::new(DEFAULT_MAX_BODY);
        d.push(b"G");
        assert_eq!(d.next_frame(), Err(CodecError::BadMagic { found: 0x4700 }));
        assert!(d.next_frame().unwrap().is_none());
        d.push(&Frame::heartbeat(1).to_bytes());
        assert!(
            d.next_frame().unwrap().is_none(),
            "a broken decoder stays broken"
        );

        let mut d = Decoder::new(DEFAULT_MAX_BODY);
        d.push(b"GET / HTTP/1.1\r\n\r\n");
        let e = d.next_frame().unwrap_err();
        assert!(e.is_fatal());
        assert!(e.to_string().contains("0x4745"), "{e}");
    }

    #[test]
    fn oversized_body_is_refused_with_its_request_id_and_skipped() {
        let mut d = Decoder::new(100);
        let mut big = Frame::request(
            41,
            &Request::new("s", "m", vec![Value::Binary(vec![0; 200])]),
        );
        big.header.body_len = big.body.len() as u32;
        let wire = big.to_bytes();
        // Exactly at the limit is fine.
        let ok = Frame::build(true, true, false, Status::Unknown(0), 42, vec![b'N'; 100]);
        let mut all = wire.clone();
        all.extend(ok.to_bytes());
        // Arrives in 7-byte pieces: the refusal comes once the header is in.
        let mut got = Vec::new();
        for chunk in all.chunks(7) {
            d.push(chunk);
            got.extend(frames(&mut d));
        }
        assert_eq!(got.len(), 2, "{got:?}");
        let e = got[0].clone().unwrap_err();
        assert!(!e.is_fatal());
        assert_eq!(e.header().unwrap().request_id, 41);
        assert!(matches!(e, CodecError::TooLarge { max: 100, .. }));
        assert_eq!(got[1].clone().unwrap(), ok);
    }

    #[test]
    fn unknown_serialization_is_refused_and_skipped() {
        let mut f = Frame::heartbeat(5);
        f.header.serialization = 6; // Dubbo's fastjson
        let mut wire = f.to_bytes();
        wire.extend(Frame::heartbeat(6).to_bytes());
        let mut d = Decoder::new(DEFAULT_MAX_BODY);
        d.push(&wire);
        let got = frames(&mut d);
        assert!(matches!(
            &got[0],
            Err(CodecError::UnknownSerialization { id: 6, header }) if header.request_id == 5
        ));
        assert_eq!(got[1].as_ref().unwrap().header.request_id, 6);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn random_bytes_in_random_pieces_never_panic(
                b in proptest::collection::vec(any::<u8>(), 0..512),
                cut in 1usize..40,
                magic in any::<bool>(),
            ) {
                let mut d = Decoder::new(256);
                let mut b = b;
                if magic && b.len() >= 2 {
                    b[0] = 0xda;
                    b[1] = 0xbb;
                }
                for chunk in b.chunks(cut) {
                    d.push(chunk);
                    for f in frames(&mut d).into_iter().flatten() {
                        let _ = Request::decode(&f.body);
                        let _ = decode_response(f.header.status, &f.body);
                    }
                }
            }

            #[test]
            fn headers_round_trip(flags in any::<u8>(), status in any::<u8>(), id in any::<u64>(), len in any::<u32>()) {
                let mut b = [0u8; HEADER_LEN];
                b[..2].copy_from_slice(&MAGIC.to_be_bytes());
                b[2] = flags;
                b[3] = status;
                b[4..12].copy_from_slice(&id.to_be_bytes());
                b[12..].copy_from_slice(&len.to_be_bytes());
                prop_assert_eq!(Header::parse(&b).unwrap().emit(), b);
            }
        }
    }
}
