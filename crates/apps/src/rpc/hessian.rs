//! The Hessian 2.0 subset the RPC bodies need: null, boolean, int, long,
//! double, string, binary, list and map, in their compact forms.
//!
//! Read the "Hessian 2.0 Serialization Protocol" (caucho.com, § 3 and § 4
//! for the grammar and every byte code) first. Where the spec text and the
//! implementations differ, this follows the implementations Dubbo talks to
//! (Caucho's `Hessian2Output`, Dubbo's `hessian-lite`, hessian.js):
//!
//! - `x5f b3..b0` is a double written as a 32-bit count of thousandths
//!   (`68.01` → `x5f 0x000109aa`), not the spec's "32-bit float";
//! - a string's length counts UTF-16 code units and each unit is written as
//!   its own UTF-8 sequence, so a character outside the BMP is two 3-byte
//!   surrogates (CESU-8), as Java writes it.
//!
//! Typed lists and maps are read (their type is skipped); objects (`C`,
//! `O`, `x60`–`x6f`), references (`x51`) and dates are refused: the bodies
//! never carry them. The golden bytes in the tests come from hessian.js
//! 2.11.0 (`npm install hessian.js@2.11.0`; `hessian.encode(v, "2.0")`).

use std::fmt;

/// A Hessian value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    /// A 32-bit int (Java `int`).
    Int(i32),
    /// A 64-bit long (Java `long`).
    Long(i64),
    Double(f64),
    String(String),
    Binary(Vec<u8>),
    List(Vec<Value>),
    /// An untyped map, in its order on the wire.
    Map(Vec<(Value, Value)>),
}

/// Bytes that are not a value of the subset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HessianError {
    /// The input ended inside a value.
    #[error("hessian: input ends inside a value at byte {0}")]
    Truncated(usize),
    /// A byte code outside the subset (objects, refs, dates) or reserved.
    #[error("hessian: unsupported byte code {code:#04x} at byte {at}")]
    Unsupported { code: u8, at: usize },
    /// A string that is not well-formed UTF-8/UTF-16.
    #[error("hessian: invalid string at byte {0}")]
    BadString(usize),
    /// Lists and maps nested deeper than [`MAX_DEPTH`].
    #[error("hessian: nested deeper than {MAX_DEPTH}")]
    TooDeep,
    /// Bytes left after the last value expected.
    #[error("hessian: {0} bytes after the last value")]
    Trailing(usize),
}

/// Lists and maps nest at most this deep (a hostile body cannot blow the stack).
pub const MAX_DEPTH: usize = 64;

/// String and binary chunks: hessian.js and Java cut strings at 32768 units.
const STRING_CHUNK: usize = 0x8000;
const BINARY_CHUNK: usize = 0x8000;

impl Value {
    /// Appends the value's encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.push(b'N'),
            Value::Bool(true) => out.push(b'T'),
            Value::Bool(false) => out.push(b'F'),
            Value::Int(v) => encode_int(*v, out),
            Value::Long(v) => encode_long(*v, out),
            Value::Double(v) => encode_double(*v, out),
            Value::String(s) => encode_string(s, out),
            Value::Binary(b) => encode_binary(b, out),
            Value::List(items) => {
                // Fixed-length untyped list: x78-x7f for 0..7, else x58 int.
                if items.len() < 8 {
                    out.push(0x78 + items.len() as u8);
                } else {
                    out.push(0x58);
                    encode_int(items.len() as i32, out);
                }
                for v in items {
                    v.encode(out);
                }
            }
            Value::Map(entries) => {
                out.push(b'H');
                for (k, v) in entries {
                    k.encode(out);
                    v.encode(out);
                }
                out.push(b'Z');
            }
        }
    }

    /// The value's encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Decodes exactly one value filling `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Value, HessianError> {
        let mut r = Reader::new(bytes);
        let v = r.value()?;
        r.finish()?;
        Ok(v)
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// An int or long as i64.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(v) => Some((*v).into()),
            Value::Long(v) => Some(*v),
            _ => None,
        }
    }

    /// The value under string key `key`, if this is a map.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::String(s.into())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::String(s)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Value {
        Value::Int(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Long(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}

/// JSON → Hessian: numbers that fit an i32 become ints, other integers
/// longs, the rest doubles; objects become untyped maps with string keys.
impl From<serde_json::Value> for Value {
    fn from(j: serde_json::Value) -> Value {
        use serde_json::Value as J;
        match j {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(b),
            J::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => i32::try_from(i).map_or(Value::Long(i), Value::Int),
                (None, Some(u)) => Value::Double(u as f64),
                _ => Value::Double(n.as_f64().unwrap_or(f64::NAN)),
            },
            J::String(s) => Value::String(s),
            J::Array(a) => Value::List(a.into_iter().map(Value::from).collect()),
            J::Object(o) => Value::Map(
                o.into_iter()
                    .map(|(k, v)| (Value::String(k), Value::from(v)))
                    .collect(),
            ),
        }
    }
}

/// Hessian → JSON: binary becomes an array of bytes, map keys that are not
/// strings are written in their JSON form, non-finite doubles become null.
impl From<Value> for serde_json::Value {
    fn from(v: Value) -> serde_json::Value {
        use serde_json::Value as J;
        match v {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(b),
            Value::Int(i) => i.into(),
            Value::Long(i) => i.into(),
            Value::Double(d) => serde_json::Number::from_f64(d).map_or(J::Null, J::Number),
            Value::String(s) => J::String(s),
            Value::Binary(b) => b.into(),
            Value::List(l) => J::Array(l.into_iter().map(J::from).collect()),
            Value::Map(m) => J::Object(
                m.into_iter()
                    .map(|(k, v)| {
                        let k = match k {
                            Value::String(s) => s,
                            other => J::from(other).to_string(),
                        };
                        (k, J::from(v))
                    })
                    .collect(),
            ),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", serde_json::Value::from(self.clone()))
    }
}

/// `int ::= I b3 b2 b1 b0 | [x80-xbf] | [xc0-xcf] b0 | [xd0-xd7] b1 b0` [§ 4.7].
fn encode_int(v: i32, out: &mut Vec<u8>) {
    if (-16..=47).contains(&v) {
        out.push((0x90 + v) as u8);
    } else if (-2048..=2047).contains(&v) {
        out.extend_from_slice(&[(0xc8 + (v >> 8)) as u8, v as u8]);
    } else if (-262_144..=262_143).contains(&v) {
        out.extend_from_slice(&[(0xd4 + (v >> 16)) as u8, (v >> 8) as u8, v as u8]);
    } else {
        out.push(b'I');
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// `long ::= L b7..b0 | [xd8-xef] | [xf0-xff] b0 | [x38-x3f] b1 b0 | x59 b3..b0` [§ 4.9].
fn encode_long(v: i64, out: &mut Vec<u8>) {
    if (-8..=15).contains(&v) {
        out.push((0xe0 + v) as u8);
    } else if (-2048..=2047).contains(&v) {
        out.extend_from_slice(&[(0xf8 + (v >> 8)) as u8, v as u8]);
    } else if (-262_144..=262_143).contains(&v) {
        out.extend_from_slice(&[(0x3c + (v >> 16)) as u8, (v >> 8) as u8, v as u8]);
    } else if let Ok(i) = i32::try_from(v) {
        out.push(0x59);
        out.extend_from_slice(&i.to_be_bytes());
    } else {
        out.push(b'L');
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// `double ::= D b7..b0 | x5b | x5c | x5d b0 | x5e b1 b0 | x5f b3..b0` [§ 4.4].
fn encode_double(v: f64, out: &mut Vec<u8>) {
    let int = v as i64;
    // As Java does, -0.0 is written as 0.0.
    if int as f64 == v {
        match int {
            0 => return out.push(0x5b),
            1 => return out.push(0x5c),
            -128..=127 => return out.extend_from_slice(&[0x5d, int as u8]),
            -32768..=32767 => {
                out.push(0x5e);
                return out.extend_from_slice(&(int as i16).to_be_bytes());
            }
            _ => {}
        }
    }
    // Caucho's Hessian2Output: thousandths that fit an int and give `v` back.
    let mills = (v * 1000.0) as i64;
    if let Ok(m) = i32::try_from(mills) {
        if v.is_finite() && f64::from(m) * 0.001 == v {
            out.push(0x5f);
            return out.extend_from_slice(&m.to_be_bytes());
        }
    }
    out.push(b'D');
    out.extend_from_slice(&v.to_bits().to_be_bytes());
}

/// `string ::= x52 b1 b0 <utf8> string | S b1 b0 <utf8> | [x00-x1f] <utf8>
/// | [x30-x33] b0 <utf8>` [§ 4.12]; lengths in UTF-16 units.
fn encode_string(s: &str, out: &mut Vec<u8>) {
    let units: Vec<u16> = s.encode_utf16().collect();
    let mut rest = &units[..];
    while rest.len() > STRING_CHUNK {
        let (chunk, tail) = rest.split_at(STRING_CHUNK);
        out.push(b'R');
        out.extend_from_slice(&(STRING_CHUNK as u16).to_be_bytes());
        push_units(chunk, out);
        rest = tail;
    }
    let n = rest.len();
    if n <= 31 {
        out.push(n as u8);
    } else if n <= 1023 {
        out.extend_from_slice(&[0x30 + (n >> 8) as u8, n as u8]);
    } else {
        out.push(b'S');
        out.extend_from_slice(&(n as u16).to_be_bytes());
    }
    push_units(rest, out);
}

/// Each UTF-16 unit as its own 1–3 byte UTF-8 sequence (Java's writer).
fn push_units(units: &[u16], out: &mut Vec<u8>) {
    for &u in units {
        let u = u32::from(u);
        if u < 0x80 {
            out.push(u as u8);
        } else if u < 0x800 {
            out.extend_from_slice(&[0xc0 | (u >> 6) as u8, 0x80 | (u & 0x3f) as u8]);
        } else {
            out.extend_from_slice(&[
                0xe0 | (u >> 12) as u8,
                0x80 | ((u >> 6) & 0x3f) as u8,
                0x80 | (u & 0x3f) as u8,
            ]);
        }
    }
}

/// `binary ::= x41 b1 b0 <data> binary | B b1 b0 <data> | [x20-x2f] <data>
/// | [x34-x37] b0 <data>` [§ 4.2].
fn encode_binary(b: &[u8], out: &mut Vec<u8>) {
    let mut rest = b;
    while rest.len() > BINARY_CHUNK {
        let (chunk, tail) = rest.split_at(BINARY_CHUNK);
        out.push(b'A');
        out.extend_from_slice(&(BINARY_CHUNK as u16).to_be_bytes());
        out.extend_from_slice(chunk);
        rest = tail;
    }
    let n = rest.len();
    if n <= 15 {
        out.push(0x20 + n as u8);
    } else if n <= 1023 {
        out.extend_from_slice(&[0x34 + (n >> 8) as u8, n as u8]);
    } else {
        out.push(b'B');
        out.extend_from_slice(&(n as u16).to_be_bytes());
    }
    out.extend_from_slice(rest);
}

/// Reads values one after another from a byte slice (a body is a sequence).
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    depth: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader {
            buf,
            pos: 0,
            depth: 0,
        }
    }

    /// True when every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }

    /// Fails if bytes are left.
    pub fn finish(&self) -> Result<(), HessianError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            n => Err(HessianError::Trailing(n)),
        }
    }

    fn byte(&mut self) -> Result<u8, HessianError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or(HessianError::Truncated(self.pos))?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], HessianError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(HessianError::Truncated(self.buf.len()))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn be(&mut self, n: usize) -> Result<u64, HessianError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// Reads the next value.
    pub fn value(&mut self) -> Result<Value, HessianError> {
        let at = self.pos;
        let code = self.byte()?;
        let v = match code {
            b'N' => Value::Null,
            b'T' => Value::Bool(true),
            b'F' => Value::Bool(false),
            // int
            0x80..=0xbf => Value::Int(i32::from(code) - 0x90),
            0xc0..=0xcf => Value::Int(((i32::from(code) - 0xc8) << 8) | self.be(1)? as i32),
            0xd0..=0xd7 => Value::Int(((i32::from(code) - 0xd4) << 16) | self.be(2)? as i32),
            b'I' => Value::Int(self.be(4)? as u32 as i32),
            // long
            0xd8..=0xef => Value::Long(i64::from(code) - 0xe0),
            0xf0..=0xff => Value::Long(((i64::from(code) - 0xf8) << 8) | self.be(1)? as i64),
            0x38..=0x3f => Value::Long(((i64::from(code) - 0x3c) << 16) | self.be(2)? as i64),
            0x59 => Value::Long((self.be(4)? as u32 as i32).into()),
            b'L' => Value::Long(self.be(8)? as i64),
            // double
            0x5b => Value::Double(0.0),
            0x5c => Value::Double(1.0),
            0x5d => Value::Double(f64::from(self.be(1)? as u8 as i8)),
            0x5e => Value::Double(f64::from(self.be(2)? as u16 as i16)),
            0x5f => Value::Double(f64::from(self.be(4)? as u32 as i32) * 0.001),
            b'D' => Value::Double(f64::from_bits(self.be(8)?)),
            // string
            0x00..=0x1f | 0x30..=0x33 | b'S' | b'R' => {
                self.pos = at;
                Value::String(self.string()?)
            }
            // binary
            0x20..=0x2f | 0x34..=0x37 | b'B' | b'A' => {
                self.pos = at;
                Value::Binary(self.binary()?)
            }
            // list: variable/fixed, typed/untyped. Nested before its type
            // and length are read: those are values too, and a type that is
            // itself a typed list must count as a level, or a chain of them
            // recurses without bound.
            0x55 | 0x56 | 0x70..=0x77 | 0x57 | 0x58 | 0x78..=0x7f => self.nested(|r| {
                if matches!(code, 0x55 | 0x56 | 0x70..=0x77) {
                    r.type_name()?;
                }
                let len = match code {
                    0x56 | 0x58 => Some(r.length()?),
                    0x70..=0x77 => Some(usize::from(code - 0x70)),
                    0x78..=0x7f => Some(usize::from(code - 0x78)),
                    _ => None,
                };
                let mut items = Vec::with_capacity(len.unwrap_or(0).min(1024));
                match len {
                    Some(n) => {
                        for _ in 0..n {
                            items.push(r.value()?);
                        }
                    }
                    None => {
                        while r.peek() != Some(b'Z') {
                            items.push(r.value()?);
                        }
                        r.pos += 1;
                    }
                }
                Ok(Value::List(items))
            })?,
            // map: typed M type (k v)* Z or untyped H (k v)* Z
            b'M' | b'H' => self.nested(|r| {
                if code == b'M' {
                    r.type_name()?;
                }
                let mut entries = Vec::new();
                while r.peek() != Some(b'Z') {
                    let k = r.value()?;
                    let v = r.value()?;
                    entries.push((k, v));
                }
                r.pos += 1;
                Ok(Value::Map(entries))
            })?,
            _ => return Err(HessianError::Unsupported { code, at }),
        };
        Ok(v)
    }

    /// Reads a list or map one level deeper, at most [`MAX_DEPTH`] levels
    /// (whatever `read` answers, the level is left again).
    fn nested(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<Value, HessianError>,
    ) -> Result<Value, HessianError> {
        if self.depth >= MAX_DEPTH {
            return Err(HessianError::TooDeep);
        }
        self.depth += 1;
        let v = read(self);
        self.depth -= 1;
        v
    }

    /// A list length: an int.
    fn length(&mut self) -> Result<usize, HessianError> {
        let at = self.pos;
        match self.value()? {
            Value::Int(n) if n >= 0 => Ok(n as usize),
            _ => Err(HessianError::Unsupported {
                code: self.buf[at],
                at,
            }),
        }
    }

    /// `type ::= string | int` (a type name or a reference to one): skipped.
    fn type_name(&mut self) -> Result<(), HessianError> {
        let at = self.pos;
        match self.value()? {
            Value::String(_) | Value::Int(_) => Ok(()),
            _ => Err(HessianError::Unsupported {
                code: self.buf[at],
                at,
            }),
        }
    }

    /// A string, reassembled from its chunks.
    pub fn string(&mut self) -> Result<String, HessianError> {
        let start = self.pos;
        let mut units: Vec<u16> = Vec::new();
        loop {
            let at = self.pos;
            let code = self.byte()?;
            let (n, last) = match code {
                0x00..=0x1f => (usize::from(code), true),
                0x30..=0x33 => ((usize::from(code - 0x30) << 8) | self.be(1)? as usize, true),
                b'S' => (self.be(2)? as usize, true),
                b'R' => (self.be(2)? as usize, false),
                _ => return Err(HessianError::Unsupported { code, at }),
            };
            for _ in 0..n {
                units.push(self.unit(start)?);
            }
            if last {
                return String::from_utf16(&units).map_err(|_| HessianError::BadString(start));
            }
        }
    }

    /// One UTF-16 unit written as a 1–3 byte UTF-8 sequence.
    fn unit(&mut self, start: usize) -> Result<u16, HessianError> {
        let b0 = self.byte()?;
        let cont = |r: &mut Self| -> Result<u16, HessianError> {
            let b = r.byte()?;
            if b & 0xc0 != 0x80 {
                return Err(HessianError::BadString(start));
            }
            Ok(u16::from(b & 0x3f))
        };
        match b0 {
            0x00..=0x7f => Ok(b0.into()),
            0xc0..=0xdf => Ok((u16::from(b0 & 0x1f) << 6) | cont(self)?),
            0xe0..=0xef => {
                let hi = cont(self)?;
                Ok((u16::from(b0 & 0x0f) << 12) | (hi << 6) | cont(self)?)
            }
            _ => Err(HessianError::BadString(start)),
        }
    }

    /// Binary data, reassembled from its chunks.
    pub fn binary(&mut self) -> Result<Vec<u8>, HessianError> {
        let mut out = Vec::new();
        loop {
            let at = self.pos;
            let code = self.byte()?;
            let (n, last) = match code {
                0x20..=0x2f => (usize::from(code - 0x20), true),
                0x34..=0x37 => ((usize::from(code - 0x34) << 8) | self.be(1)? as usize, true),
                b'B' => (self.be(2)? as usize, true),
                b'A' => (self.be(2)? as usize, false),
                _ => return Err(HessianError::Unsupported { code, at }),
            };
            out.extend_from_slice(self.take(n)?);
            if last {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Checks `v` encodes to `golden` and `golden` decodes to `v`.
    fn golden(v: Value, golden: &str) {
        assert_eq!(hex(&v.to_bytes()), golden, "encoding {v:?}");
        assert_eq!(
            Value::from_bytes(&unhex(golden)).unwrap(),
            v,
            "decoding {golden}"
        );
    }

    // Golden bytes: node -e 'const h=require("hessian.js");
    //   console.log(h.encode(V, "2.0").toString("hex"))' with hessian.js 2.11.0,
    // longs as {$class:"long",$:n}, doubles as {$class:"double",$:x}.

    #[test]
    fn null_and_booleans_match_hessian_js() {
        golden(Value::Null, "4e");
        golden(Value::Bool(true), "54");
        golden(Value::Bool(false), "46");
    }

    #[test]
    fn ints_use_the_one_two_three_and_five_byte_forms_like_hessian_js() {
        for (v, g) in [
            (0, "90"),
            (-16, "80"),
            (47, "bf"),
            (48, "c830"),
            (-17, "c7ef"),
            (2047, "cfff"),
            (-2048, "c000"),
            (2048, "d40800"),
            (262_143, "d7ffff"),
            (-262_144, "d00000"),
            (262_144, "4900040000"),
            (i32::MAX, "497fffffff"),
            (i32::MIN, "4980000000"),
        ] {
            golden(Value::Int(v), g);
        }
    }

    #[test]
    fn longs_use_the_compact_forms_like_hessian_js() {
        for (v, g) in [
            (0, "e0"),
            (-8, "d8"),
            (15, "ef"),
            (16, "f810"),
            (-2048, "f000"),
            (2047, "ffff"),
            (2048, "3c0800"),
            (262_143, "3fffff"),
            (-262_144, "380000"),
            (262_144, "5900040000"),
            (2_147_483_647, "597fffffff"),
            (2_147_483_648, "4c0000000080000000"),
            (9_007_199_254_740_993, "4c0020000000000001"),
        ] {
            golden(Value::Long(v), g);
        }
    }

    #[test]
    fn doubles_use_zero_one_byte_short_mills_and_full_forms_like_hessian_js() {
        for (v, g) in [
            (0.0, "5b"),
            (1.0, "5c"),
            (-128.0, "5d80"),
            (127.0, "5d7f"),
            (300.0, "5e012c"),
            (-32768.0, "5e8000"),
            (1.5, "5f000005dc"),
            (68.01, "5f000109aa"),
            (3.25e-7, "443e95cf751db94e6b"),
            (1e10, "444202a05f20000000"),
        ] {
            golden(Value::Double(v), g);
        }
    }

    #[test]
    fn strings_count_utf16_units_and_write_surrogates_as_cesu8_like_hessian_js() {
        golden("".into(), "00");
        golden("hi".into(), "026869");
        golden("a".repeat(31).into(), &format!("1f{}", "61".repeat(31)));
        golden("a".repeat(32).into(), &format!("3020{}", "61".repeat(32)));
        golden(
            "b".repeat(1023).into(),
            &format!("33ff{}", "62".repeat(1023)),
        );
        golden(
            "c".repeat(1024).into(),
            &format!("530400{}", "63".repeat(1024)),
        );
        // The story's book title.
        golden(
            "趣谈网络协议".into(),
            "06e8b6a3e8b088e7bd91e7bb9ce58d8fe8aeae",
        );
        golden("price 68 元".into(), "0a707269636520363820e58583");
        // U+1F600 is two UTF-16 units, each a 3-byte sequence.
        golden("a😀".into(), "0361eda0bdedb880");
    }

    #[test]
    fn long_strings_are_cut_into_32768_unit_chunks_like_hessian_js() {
        // hessian.js: "x".repeat(70000) → 70009 bytes: R 8000, R 8000, S 1170.
        let v = Value::from("x".repeat(70000));
        let b = v.to_bytes();
        assert_eq!(b.len(), 70009);
        assert_eq!(&b[..3], &[b'R', 0x80, 0x00]);
        assert_eq!(&b[32771..32774], &[b'R', 0x80, 0x00]);
        assert_eq!(&b[65542..65545], &[b'S', 0x11, 0x70]);
        assert_eq!(Value::from_bytes(&b).unwrap(), v);
    }

    #[test]
    fn binary_uses_compact_short_and_chunked_forms_like_hessian_js() {
        golden(Value::Binary(vec![]), "20");
        golden(Value::Binary(vec![1, 2, 3]), "23010203");
        golden(
            Value::Binary(vec![7; 16]),
            &format!("3410{}", "07".repeat(16)),
        );
        golden(
            Value::Binary(vec![9; 1023]),
            &format!("37ff{}", "09".repeat(1023)),
        );
        golden(
            Value::Binary(vec![9; 1024]),
            &format!("420400{}", "09".repeat(1024)),
        );
        // hessian.js cuts 70000 bytes into 4093-byte 'A' chunks: 17 of them
        // and a final compact x35 of 419; a reader takes any chunk size.
        let mut js = Vec::new();
        for _ in 0..17 {
            js.extend_from_slice(&[b'A', 0x0f, 0xfd]);
            js.extend_from_slice(&[1; 4093]);
        }
        js.extend_from_slice(&[0x35, 0xa3]);
        js.extend_from_slice(&[1; 419]);
        assert_eq!(js.len(), 70053);
        assert_eq!(
            Value::from_bytes(&js).unwrap(),
            Value::Binary(vec![1; 70000])
        );
    }

    #[test]
    fn lists_and_maps_match_hessian_js() {
        golden(Value::List(vec![]), "78");
        golden(Value::List(vec![1.into(), "a".into()]), "7a910161");
        golden(
            Value::List((1..=8).map(Value::Int).collect()),
            "58989192939495969798",
        );
        golden(Value::Map(vec![("a".into(), 1.into())]), "480161915a");
        let order = serde_json::json!({"order": {"date": "2018-07-01", "price": "68"}});
        golden(
            order.into(),
            "48056f726465724804646174650a323031382d30372d30310570726963650236385a5a",
        );
    }

    #[test]
    fn typed_and_variable_lists_and_typed_maps_are_read() {
        // x55 "[int" ... Z: variable-length typed list; x73: typed fixed of 3.
        let v = unhex("55045b696e7491925a");
        assert_eq!(
            Value::from_bytes(&v).unwrap(),
            Value::List(vec![1.into(), 2.into()])
        );
        let v = unhex("73045b696e74919293");
        assert_eq!(Value::from_bytes(&v).unwrap().to_bytes(), unhex("7b919293"));
        // M "java.util.HashMap"-like type, then untyped entries.
        let v = unhex("4d036d61700161915a");
        assert_eq!(
            Value::from_bytes(&v).unwrap(),
            Value::Map(vec![("a".into(), 1.into())])
        );
        // Variable untyped list x57 … Z.
        assert_eq!(
            Value::from_bytes(&unhex("57915a")).unwrap(),
            Value::List(vec![1.into()])
        );
    }

    #[test]
    fn objects_refs_truncation_bad_utf8_and_deep_nesting_are_errors() {
        assert!(matches!(
            Value::from_bytes(&unhex("4f90")),
            Err(HessianError::Unsupported { code: 0x4f, at: 0 })
        ));
        assert!(matches!(
            Value::from_bytes(&unhex("5190")),
            Err(HessianError::Unsupported { .. })
        ));
        assert_eq!(
            Value::from_bytes(&unhex("0568")),
            Err(HessianError::Truncated(2))
        );
        assert_eq!(
            Value::from_bytes(&unhex("4900")),
            Err(HessianError::Truncated(2))
        );
        assert_eq!(
            Value::from_bytes(&unhex("01ff")),
            Err(HessianError::BadString(0))
        );
        // A lone surrogate is not a string.
        assert_eq!(
            Value::from_bytes(&unhex("01eda0bd")),
            Err(HessianError::BadString(0))
        );
        assert_eq!(
            Value::from_bytes(&unhex("9090")),
            Err(HessianError::Trailing(1))
        );
        assert_eq!(Value::from_bytes(&[0x79; 100]), Err(HessianError::TooDeep));
        // A huge declared length with nothing behind it neither allocates nor panics.
        assert!(Value::from_bytes(&unhex("587fffffff")).is_err());
    }

    /// Found while fuzzing (fuzz/fuzz_targets/hessian.rs): a list's type
    /// (`x70`–`x77`, `x55`, `x56`) and a fixed list's length (`x56`, `x58`)
    /// are values read before the list counted as a level, so 10,000 bytes
    /// of `x70` (a typed list whose type is a typed list, …) overflowed the
    /// stack: a crash of the whole service on one hostile body.
    #[test]
    fn a_chain_of_lists_in_types_and_lengths_is_too_deep_not_a_stack_overflow() {
        let small_stack = std::thread::Builder::new().stack_size(256 * 1024);
        let results = small_stack
            .spawn(|| {
                [0x70, 0x55, 0x56, 0x58, b'M'].map(|code| Value::from_bytes(&[code; 100_000]))
            })
            .unwrap()
            .join()
            .expect("no stack overflow");
        for r in results {
            assert_eq!(r, Err(HessianError::TooDeep));
        }
        // As deep as allowed still reads, and the depth is left again.
        let mut deep = vec![0x79; MAX_DEPTH];
        deep.push(b'N');
        let mut two = deep.clone();
        two.extend_from_slice(&deep);
        let mut r = Reader::new(&two);
        assert!(r.value().is_ok() && r.value().is_ok() && r.is_empty());
    }

    #[test]
    fn json_round_trips_through_hessian() {
        let j = serde_json::json!({"order": {"className": "趣谈网络协议", "price": 68,
            "big": 1i64 << 40, "ok": true, "tags": [1.5, null]}});
        let back: serde_json::Value = Value::from_bytes(&Value::from(j.clone()).to_bytes())
            .unwrap()
            .into();
        assert_eq!(back, j);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i32>().prop_map(Value::Int),
                any::<i64>().prop_map(Value::Long),
                any::<f64>()
                    .prop_filter("NaN != NaN", |d| !d.is_nan())
                    .prop_map(Value::Double),
                ".{0,40}".prop_map(Value::String),
                proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Binary),
            ];
            leaf.prop_recursive(4, 64, 10, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..10).prop_map(Value::List),
                    proptest::collection::vec((inner.clone(), inner), 0..5).prop_map(Value::Map),
                ]
            })
        }

        proptest! {
            #[test]
            fn every_value_round_trips(v in value()) {
                prop_assert_eq!(Value::from_bytes(&v.to_bytes()).unwrap(), v);
            }

            #[test]
            fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..256)) {
                let _ = Value::from_bytes(&b);
            }
        }
    }
}
