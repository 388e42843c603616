//! The replication stream's framing: each message is a 4-byte big-endian
//! length and that many bytes of JSON (one [`Msg`]). docs/db.md shows a
//! session.

use std::io;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Change, DbError};

/// The longest message accepted (a batch of changes); a longer length
/// prefix is taken as a corrupt stream.
pub const MAX_FRAME: usize = 4 << 20;

/// A replication message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Msg {
    /// Standby → primary, first: who it is and the last seq it applied.
    Hello { standby: String, after: u64 },
    /// Primary → standby: the next changes, in order; `head` is the
    /// primary's last committed seq.
    Changes { head: u64, changes: Vec<Change> },
    /// Primary → standby when it has nothing to send for a while.
    Heartbeat { head: u64 },
    /// Standby → primary: every change up to `seq` is committed here
    /// (answers each batch and each heartbeat).
    Ack { seq: u64 },
}

impl Msg {
    /// The message's `type`, for errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Msg::Hello { .. } => "hello",
            Msg::Changes { .. } => "changes",
            Msg::Heartbeat { .. } => "heartbeat",
            Msg::Ack { .. } => "ack",
        }
    }
}

/// Why a replication connection was closed.
#[derive(Debug, thiserror::Error)]
pub enum ReplError {
    /// The socket failed.
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection.
    #[error("the peer closed the connection")]
    Closed,
    /// A length prefix beyond [`MAX_FRAME`]: the stream is corrupt.
    #[error("frame of {len} bytes is longer than {max}")]
    TooLong { len: usize, max: usize },
    /// A frame that is not a message.
    #[error("frame is not a replication message: {0}")]
    BadMessage(serde_json::Error),
    /// A message the other side may not send now.
    #[error("expected {expected}, got {got}")]
    Unexpected {
        expected: &'static str,
        got: &'static str,
    },
    /// A change whose seq is not the next one.
    #[error("change {got} arrived where {expected} was due")]
    OutOfOrder { expected: u64, got: u64 },
    /// The standby has changes the primary's log does not: another history.
    #[error("the standby has applied up to {after} but the primary's log ends at {head}")]
    AheadOfPrimary { after: u64, head: u64 },
    /// An ack for changes never sent.
    #[error("ack {ack} for changes never sent (sent up to {sent})")]
    AckBeyondSent { ack: u64, sent: u64 },
    /// An ack below a previous one.
    #[error("ack {ack} goes back from {prev}")]
    AckBackwards { ack: u64, prev: u64 },
    /// Nothing heard, or a write not taken, for too long.
    #[error("nothing moved for {ms} ms")]
    Idle { ms: u64 },
    /// The database failed (reading the log, or applying a change).
    #[error("database: {0}")]
    Db(#[from] DbError),
}

impl ReplError {
    /// A short key for the counters.
    pub fn reason(&self) -> &'static str {
        match self {
            ReplError::Io(_) => "io",
            ReplError::Closed => "closed",
            ReplError::TooLong { .. } => "too_long",
            ReplError::BadMessage(_) => "bad_message",
            ReplError::Unexpected { .. } => "unexpected",
            ReplError::OutOfOrder { .. } => "out_of_order",
            ReplError::AheadOfPrimary { .. } => "ahead_of_primary",
            ReplError::AckBeyondSent { .. } => "ack_beyond_sent",
            ReplError::AckBackwards { .. } => "ack_backwards",
            ReplError::Idle { .. } => "idle",
            ReplError::Db(_) => "db",
        }
    }
}

/// The standby's rule for a batch of changes: each one's seq is the one
/// after the last received (`last`). Answers the batch's last seq.
pub fn check_batch(last: u64, changes: &[Change]) -> Result<u64, ReplError> {
    let mut last = last;
    for c in changes {
        if c.seq != last + 1 {
            return Err(ReplError::OutOfOrder {
                expected: last + 1,
                got: c.seq,
            });
        }
        last = c.seq;
    }
    Ok(last)
}

/// The primary's rule for a standby's ack: not beyond the last change
/// `sent`, not below the previous ack `prev`.
pub fn check_ack(seq: u64, sent: u64, prev: u64) -> Result<(), ReplError> {
    if seq > sent {
        return Err(ReplError::AckBeyondSent { ack: seq, sent });
    }
    if seq < prev {
        return Err(ReplError::AckBackwards { ack: seq, prev });
    }
    Ok(())
}

/// Writes one message.
pub async fn write_msg<W: AsyncWrite + Unpin>(w: &mut W, msg: &Msg) -> Result<(), ReplError> {
    let body = serde_json::to_vec(msg).map_err(|e| DbError::Encode(e.to_string()))?;
    if body.len() > MAX_FRAME {
        return Err(ReplError::TooLong {
            len: body.len(),
            max: MAX_FRAME,
        });
    }
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf).await?;
    Ok(())
}

/// Reads one message; [`ReplError::Closed`] on a clean end of stream
/// between messages.
pub async fn read_msg<R: AsyncRead + Unpin>(r: &mut R) -> Result<Msg, ReplError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(ReplError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(ReplError::TooLong {
            len,
            max: MAX_FRAME,
        });
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    serde_json::from_slice(&body).map_err(ReplError::BadMessage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{RowImage, StockRow};

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_message_round_trips_through_its_frame() {
        let msg = Msg::Changes {
            head: 7,
            changes: vec![Change {
                seq: 7,
                op: "seed_stock".into(),
                rows: vec![RowImage::Stock(StockRow {
                    sku: "book".into(),
                    stock: 50,
                    version: 0,
                })],
                at_ms: 1,
            }],
        };
        let mut buf = Vec::new();
        run(write_msg(&mut buf, &msg)).unwrap();
        assert_eq!(
            u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize,
            buf.len() - 4
        );
        assert_eq!(run(read_msg(&mut &buf[..])).unwrap(), msg);
        // A hello as a standby sends it, byte for byte.
        let mut buf = Vec::new();
        run(write_msg(
            &mut buf,
            &Msg::Hello {
                standby: "vm-db2".into(),
                after: 3,
            },
        ))
        .unwrap();
        assert_eq!(
            &buf[..],
            b"\0\0\0\x2d{\"type\":\"hello\",\"standby\":\"vm-db2\",\"after\":3}"
        );
    }

    #[test]
    fn corrupt_frames_are_named_errors() {
        let too_long = [0xffu8, 0xff, 0xff, 0xff, b'{'];
        assert!(matches!(
            run(read_msg(&mut &too_long[..])),
            Err(ReplError::TooLong { .. })
        ));
        let garbage = b"\0\0\0\x05hello";
        assert_eq!(
            run(read_msg(&mut &garbage[..])).unwrap_err().reason(),
            "bad_message"
        );
        let unknown = b"\0\0\0\x1a{\"type\":\"ack\",\"seq\":1,\"x\":2}";
        assert_eq!(
            run(read_msg(&mut &unknown[..])).unwrap_err().reason(),
            "bad_message"
        );
        let cut = b"\0\0\0\x10{\"type\"";
        assert_eq!(run(read_msg(&mut &cut[..])).unwrap_err().reason(), "io");
        assert_eq!(run(read_msg(&mut &b""[..])).unwrap_err().reason(), "closed");
    }
}
