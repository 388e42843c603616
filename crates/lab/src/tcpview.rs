//! The TCP view behind `d11 tcpview`: one TCP connection of one wire, segment
//! by segment, as Wireshark's TCP analysis and tcptrace show it.
//!
//! Read RFC 9293 § 3.3.2 (the state diagram) and § 3.4 (sequence numbers)
//! first, then RFC 7323 § 2 (window scale). From a capture, per segment:
//! the time since the connection's first segment, the direction, the flags,
//! the sequence and acknowledgement numbers relative to each side's initial
//! sequence number (ISN), the payload length, the advertised window scaled
//! by the shift the SYNs agreed, and the state of each side after it. A
//! segment moves its sender's state when it is sent and its receiver's when
//! it arrives; the wire sees both at once, so both move on the same row.
//!
//! Pure: frames in, a [`TcpView`] out; [`svg`] draws the tcptrace picture.
//! Frames are opened with [`trace::innermost`], so a wire inside GTP-U or
//! VXLAN is read through its tunnel.

use crate::trace::{self, Frame};
use etherparse::{TcpOptionElement, TcpSlice};
use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddrV4;

/// What `d11 tcpview` could not do with a capture.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TcpViewError {
    /// no wire named {wire} in the capture (it has: {have})
    #[error("no wire named {wire} in the capture (it has: {have})")]
    NoSuchWire { wire: String, have: String },
    /// no TCP connection {what} on {wire}
    #[error("no TCP connection {what} on {wire}")]
    NoConnection { wire: String, what: String },
}

/// Which connection of the wire to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// The first connection whose SYN goes to this port (or, with no SYN
    /// captured, the first segment to it).
    Port(u16),
    /// The connection between these two ends, either way round.
    Between(SocketAddrV4, SocketAddrV4),
}

impl fmt::Display for Pick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pick::Port(p) => write!(f, "to port {p}"),
            Pick::Between(a, b) => write!(f, "between {a} and {b}"),
        }
    }
}

/// Which way a segment goes: from the side that opened (the client, the
/// phone) or from the side that answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dir {
    ClientToServer,
    ServerToClient,
}

impl Dir {
    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Dir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dir::ClientToServer => "→",
            Dir::ServerToClient => "←",
        })
    }
}

/// A side's state, as in RFC 9293 § 3.3.2's diagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING-KEBAB-CASE")]
pub enum State {
    Closed,
    Listen,
    SynSent,
    SynReceived,
    Established,
    FinWait1,
    FinWait2,
    CloseWait,
    Closing,
    LastAck,
    TimeWait,
}

impl State {
    /// TIME-WAIT or CLOSED: the side has nothing more to send or receive.
    pub fn is_closed(self) -> bool {
        matches!(self, State::Closed | State::TimeWait)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Closed => "CLOSED",
            State::Listen => "LISTEN",
            State::SynSent => "SYN-SENT",
            State::SynReceived => "SYN-RECEIVED",
            State::Established => "ESTABLISHED",
            State::FinWait1 => "FIN-WAIT-1",
            State::FinWait2 => "FIN-WAIT-2",
            State::CloseWait => "CLOSE-WAIT",
            State::Closing => "CLOSING",
            State::LastAck => "LAST-ACK",
            State::TimeWait => "TIME-WAIT",
        })
    }
}

/// The TCP flags of a segment [RFC 9293 § 3.1], shown as Wireshark does
/// (`SYN, ACK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
    pub psh: bool,
    pub urg: bool,
}

impl Flags {
    fn of(tcp: &TcpSlice<'_>) -> Flags {
        Flags {
            syn: tcp.syn(),
            ack: tcp.ack(),
            fin: tcp.fin(),
            rst: tcp.rst(),
            psh: tcp.psh(),
            urg: tcp.urg(),
        }
    }
}

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (self.fin, "FIN"),
            (self.syn, "SYN"),
            (self.rst, "RST"),
            (self.psh, "PSH"),
            (self.ack, "ACK"),
            (self.urg, "URG"),
        ];
        let set: Vec<&str> = names.iter().filter(|(b, _)| *b).map(|(_, n)| *n).collect();
        f.write_str(&set.join(", "))
    }
}

impl Serialize for Flags {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What the analysis noticed about a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Note {
    /// Its data (or SYN/FIN) was already seen on this wire this way, or it
    /// fills a hole later than the handshake's RTT: sent again.
    Retransmission,
    /// It fills a hole within the handshake's RTT of the highest segment:
    /// overtaken, not resent.
    OutOfOrder,
    /// It starts beyond the highest sequence number seen: bytes before it
    /// were not captured (lost before this wire, or reordered).
    PreviousSegmentNotCaptured,
    /// The n-th repeat of the same ACK, window and sequence number with no data.
    DupAck(u32),
    /// The receiver advertises a window of zero.
    ZeroWindow,
    /// Only the window changed.
    WindowUpdate,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::Retransmission => f.write_str("retransmission"),
            Note::OutOfOrder => f.write_str("out of order"),
            Note::PreviousSegmentNotCaptured => f.write_str("previous segment not captured"),
            Note::DupAck(n) => write!(f, "dup ack #{n}"),
            Note::ZeroWindow => f.write_str("zero window"),
            Note::WindowUpdate => f.write_str("window update"),
        }
    }
}

/// One segment of the connection.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Nanoseconds since the connection's first segment on this wire.
    pub t_ns: u64,
    pub dir: Dir,
    pub flags: Flags,
    /// Relative to the sender's ISN (the SYN is 0).
    pub seq: u32,
    /// Relative to the receiver's ISN; `None` without the ACK flag.
    pub ack: Option<u32>,
    /// Payload bytes.
    pub len: u32,
    /// The advertised receive window in bytes, scaled [RFC 7323 § 2.3].
    pub win: u32,
    /// States after this segment.
    pub client: State,
    pub server: State,
    pub notes: Vec<Note>,
}

/// What one side said in its SYN.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Opening {
    pub isn: u32,
    pub mss: Option<u16>,
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
    pub timestamps: bool,
    /// The window field of the SYN (never scaled).
    pub syn_window: u16,
}

/// One round-trip time sample: a segment and the first ACK that covered it,
/// taken only for segments sent once (Karn's algorithm, RFC 6298 § 3).
#[derive(Debug, Clone, Serialize)]
pub struct RttSample {
    /// Index in [`TcpView::rows`] of the segment and of the ACK.
    pub segment: usize,
    pub acked_by: usize,
    /// Which way the segment went.
    pub dir: Dir,
    /// `SYN`, `SYN, ACK`, `data` or `FIN`.
    pub what: String,
    pub rtt_ns: u64,
}

/// Per direction totals.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Flow {
    pub segments: usize,
    /// Payload bytes on the wire, retransmissions included.
    pub payload_bytes: u64,
    /// Distinct payload bytes (the highest relative sequence number of data).
    pub unique_bytes: u64,
    pub retransmissions: usize,
    pub dup_acks: usize,
}

/// The summary under the table.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// `None` when the capture starts after that side's SYN.
    pub client: Option<Opening>,
    pub server: Option<Opening>,
    /// The shift applied to each side's window: both SYNs must carry the
    /// option for either to apply [RFC 7323 § 2.2].
    pub scaling: bool,
    pub client_to_server: Flow,
    pub server_to_client: Flow,
    pub rtt: Vec<RttSample>,
    pub retransmissions: usize,
    pub duration_ns: u64,
    pub client_final: State,
    pub server_final: State,
}

/// The connection, its segments and the summary.
#[derive(Debug, Clone, Serialize)]
pub struct TcpView {
    pub wire: String,
    pub client: SocketAddrV4,
    pub server: SocketAddrV4,
    /// Absolute capture time of the first segment, ns since the epoch.
    pub start_ns: u64,
    /// Other connections opened to the same port on this wire, as
    /// (client, server): `--conn` picks one of them.
    pub others: Vec<(SocketAddrV4, SocketAddrV4)>,
    pub rows: Vec<Row>,
    pub summary: Summary,
}

/// One TCP segment as taken from a frame.
struct Seg {
    ts_ns: u64,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    flags: Flags,
    seq: u32,
    ack: u32,
    len: u32,
    window: u16,
    opening: Option<Opening>,
}

fn segment(f: &Frame) -> Option<Seg> {
    let inner = trace::innermost(&f.data)?;
    let (ip, tcp) = inner.tcp()?;
    let flags = Flags::of(tcp);
    let opening = flags.syn.then(|| {
        let mut o = Opening {
            isn: tcp.sequence_number(),
            syn_window: tcp.window_size(),
            ..Opening::default()
        };
        for opt in tcp.options_iterator().flatten() {
            match opt {
                TcpOptionElement::MaximumSegmentSize(m) => o.mss = Some(m),
                TcpOptionElement::WindowScale(s) => o.window_scale = Some(s),
                TcpOptionElement::SelectiveAcknowledgementPermitted => o.sack_permitted = true,
                TcpOptionElement::Timestamp(..) => o.timestamps = true,
                _ => {}
            }
        }
        o
    });
    Some(Seg {
        ts_ns: f.ts_ns,
        src: SocketAddrV4::new(ip.src, tcp.source_port()),
        dst: SocketAddrV4::new(ip.dst, tcp.destination_port()),
        flags,
        seq: tcp.sequence_number(),
        ack: tcp.acknowledgment_number(),
        len: tcp.payload().len() as u32,
        window: tcp.window_size(),
        opening,
    })
}

/// Before the handshake's RTT is known, a hole filled within this long of
/// the highest segment is out of order rather than resent (Wireshark's rule).
const OUT_OF_ORDER_NS: u64 = 3_000_000;

/// Sequence-space comparison [RFC 9293 § 3.4]: `a` before `b`.
fn lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}
fn le(a: u32, b: u32) -> bool {
    a == b || lt(a, b)
}

/// The wires a capture has, in order of first appearance.
pub fn wires(frames: &[Frame]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    frames
        .iter()
        .filter(|f| seen.insert(f.wire.as_str()))
        .map(|f| f.wire.clone())
        .collect()
}

/// What one direction has sent so far, in absolute sequence numbers.
#[derive(Default)]
struct Sender {
    /// The ISN, once known (from the SYN, else the first segment).
    isn: Option<u32>,
    /// One past the highest sequence number sent (SYN and FIN count one),
    /// and when it last moved.
    next: Option<u32>,
    next_at: u64,
    /// Ranges seen, merged: to tell a retransmission from a hole filled.
    seen: Vec<(u32, u32)>,
    /// Where the FIN sits, once sent.
    fin_at: Option<u32>,
    /// The last ACK and raw window this side sent, for dup acks.
    last_ack: Option<u32>,
    last_window: Option<u32>,
    /// When this side last sent an ACK.
    last_ack_at: u64,
    dup_acks: u32,
    /// Segments not yet acked, for RTT: (end, row, retransmitted, what).
    outstanding: Vec<(u32, usize, bool, &'static str)>,
}

impl Sender {
    fn overlaps(&self, a: u32, b: u32) -> bool {
        self.seen.iter().any(|&(s, e)| lt(a, e) && lt(s, b))
    }
    fn add(&mut self, a: u32, b: u32) {
        self.seen.push((a, b));
    }
}

/// The view of the connection `pick` chooses on `wire`.
pub fn analyse(frames: &[Frame], wire: &str, pick: Pick) -> Result<TcpView, TcpViewError> {
    let all_wires = wires(frames);
    if !all_wires.iter().any(|w| w == wire) {
        return Err(TcpViewError::NoSuchWire {
            wire: wire.into(),
            have: all_wires.join(", "),
        });
    }
    let mut segs: Vec<Seg> = frames
        .iter()
        .filter(|f| f.wire == wire)
        .filter_map(segment)
        .collect();
    segs.sort_by_key(|s| s.ts_ns);
    let none = || TcpViewError::NoConnection {
        wire: wire.into(),
        what: pick.to_string(),
    };
    let (client, server) = match pick {
        Pick::Port(port) => segs
            .iter()
            .find(|s| s.flags.syn && !s.flags.ack && s.dst.port() == port)
            .or_else(|| segs.iter().find(|s| s.dst.port() == port))
            .map(|s| (s.src, s.dst))
            .ok_or_else(none)?,
        Pick::Between(a, b) => segs
            .iter()
            .find(|s| (s.src, s.dst) == (a, b) || (s.src, s.dst) == (b, a))
            .map(|s| {
                // The client is who sent the SYN, else `a`.
                let syn = segs.iter().find(|t| {
                    t.flags.syn
                        && !t.flags.ack
                        && ((t.src, t.dst) == (a, b) || (t.src, t.dst) == (b, a))
                });
                match syn {
                    Some(t) => (t.src, t.dst),
                    None if s.src == b => (b, a),
                    None => (a, b),
                }
            })
            .ok_or_else(none)?,
    };
    let conn: Vec<&Seg> = segs
        .iter()
        .filter(|s| (s.src, s.dst) == (client, server) || (s.src, s.dst) == (server, client))
        .collect();
    let mut view = walk(wire, client, server, &conn);
    for s in &segs {
        let pair = (s.src, s.dst);
        if s.flags.syn
            && !s.flags.ack
            && s.dst.port() == server.port()
            && pair != (client, server)
            && !view.others.contains(&pair)
        {
            view.others.push(pair);
        }
    }
    Ok(view)
}

fn walk(wire: &str, client: SocketAddrV4, server: SocketAddrV4, conn: &[&Seg]) -> TcpView {
    let start_ns = conn.first().map_or(0, |s| s.ts_ns);
    let mut tx = [Sender::default(), Sender::default()];
    let mut openings: [Option<Opening>; 2] = [None, None];
    let saw_syn = conn.iter().any(|s| s.flags.syn && !s.flags.ack);
    // Before anything: a client that has not sent its SYN is CLOSED and the
    // server LISTENs; a capture that starts later finds both ESTABLISHED.
    let mut state = if saw_syn {
        [State::Closed, State::Listen]
    } else {
        [State::Established, State::Established]
    };
    let mut rows = Vec::new();
    let mut rtt = Vec::new();
    let mut flows = [Flow::default(), Flow::default()];
    let mut shift = [0u8; 2];
    let mut scaling = false;
    // The handshake's RTT seen here: the SYN to the ACK of the SYN, ACK.
    let mut irtt: Option<u64> = None;

    for (i, s) in conn.iter().enumerate() {
        let dir = if s.src == client {
            Dir::ClientToServer
        } else {
            Dir::ServerToClient
        };
        let (me, peer) = (dir.index(), 1 - dir.index());
        if let Some(o) = &s.opening {
            if tx[me].isn.is_none() || openings[me].is_none() {
                tx[me].isn = Some(o.isn);
                openings[me] = Some(o.clone());
            }
            if let (Some(a), Some(b)) = (&openings[0], &openings[1]) {
                if let (Some(x), Some(y)) = (a.window_scale, b.window_scale) {
                    // RFC 7323 § 2.3: a shift above 14 is taken as 14.
                    shift = [x.min(14), y.min(14)];
                    scaling = true;
                }
            }
        }
        let isn = *tx[me].isn.get_or_insert(s.seq);
        let seg_end = s
            .seq
            .wrapping_add(s.len)
            .wrapping_add(u32::from(s.flags.syn))
            .wrapping_add(u32::from(s.flags.fin));
        let occupies = s.len > 0 || s.flags.syn || s.flags.fin;
        let win = if s.flags.syn {
            u32::from(s.window)
        } else {
            u32::from(s.window) << shift[me]
        };

        // Retransmission, out of order, a gap [what Wireshark's tcp.analysis does].
        let mut notes = Vec::new();
        let mut retransmitted = false;
        let next = tx[me].next;
        // The receiver asked for exactly these bytes after the hole opened.
        let asked = tx[peer].last_ack == Some(s.seq) && tx[peer].last_ack_at > tx[me].next_at;
        match next {
            Some(n) if occupies && lt(s.seq, n) => {
                let keep_alive =
                    s.len <= 1 && !s.flags.syn && !s.flags.fin && s.seq == n.wrapping_sub(1);
                // New bytes below `next` fill a hole: out of order if
                // they come within the handshake's RTT of the highest
                // segment (3 ms before it is known), else the sender
                // sent them again after a loss before this wire.
                // A hole filled after the receiver asked for it (its
                // ACK for these bytes came after the hole opened) is
                // sent again too, however soon.
                let soon = s.ts_ns.saturating_sub(tx[me].next_at) < irtt.unwrap_or(OUT_OF_ORDER_NS);
                if keep_alive {
                } else if tx[me].overlaps(s.seq, seg_end) || !soon || asked {
                    notes.push(Note::Retransmission);
                    retransmitted = true;
                } else {
                    notes.push(Note::OutOfOrder);
                }
            }
            Some(n) if lt(n, s.seq) && !s.flags.rst => notes.push(Note::PreviousSegmentNotCaptured),
            _ => {}
        }
        // Dup ack and window update: nothing sent, same sequence and ack.
        let t = &mut tx[me];
        let bare = !occupies && !s.flags.rst && s.flags.ack;
        if bare && Some(s.seq) == next && Some(s.ack) == t.last_ack && s.window != 0 {
            if Some(win) == t.last_window {
                t.dup_acks += 1;
                notes.push(Note::DupAck(t.dup_acks));
            } else {
                notes.push(Note::WindowUpdate);
            }
        } else if s.flags.ack && Some(s.ack) != t.last_ack {
            t.dup_acks = 0;
        }
        if s.window == 0 && !s.flags.syn && !s.flags.fin && !s.flags.rst {
            notes.push(Note::ZeroWindow);
        }
        if s.flags.ack {
            t.last_ack = Some(s.ack);
            t.last_ack_at = s.ts_ns;
        }
        t.last_window = Some(win);
        // Any segment but an RST moves `next`, a bare ACK too (its sequence
        // number says what was sent before it).
        if !s.flags.rst && next.is_none_or(|n| lt(n, seg_end)) {
            t.next = Some(seg_end);
            t.next_at = s.ts_ns;
        }
        if occupies {
            t.add(s.seq, seg_end);
            if s.flags.fin {
                t.fin_at = Some(seg_end.wrapping_sub(1));
            }
            if retransmitted {
                // Karn: no sample from anything this range covers.
                for o in t.outstanding.iter_mut() {
                    if le(o.0, seg_end) {
                        o.2 = true;
                    }
                }
            } else {
                let what = match (s.flags.syn, s.flags.ack, s.flags.fin) {
                    (true, false, _) => "SYN",
                    (true, true, _) => "SYN, ACK",
                    (_, _, true) if s.len == 0 => "FIN",
                    _ => "data",
                };
                t.outstanding.push((seg_end, i, false, what));
            }
        }
        let f = &mut flows[me];
        f.segments += 1;
        f.payload_bytes += u64::from(s.len);
        if let Some(n) = t.next {
            let data_end = n
                .wrapping_sub(isn)
                .wrapping_sub(u32::from(saw_syn || openings[me].is_some()))
                .wrapping_sub(u32::from(t.fin_at.is_some()));
            f.unique_bytes = u64::from(data_end);
        }
        if retransmitted {
            f.retransmissions += 1;
        }
        if notes.iter().any(|n| matches!(n, Note::DupAck(_))) {
            f.dup_acks += 1;
        }

        // RTT samples: the first ACK covering a segment sent once.
        if s.flags.ack {
            let o = &mut tx[peer].outstanding;
            let (covered, rest): (Vec<_>, Vec<_>) = o.drain(..).partition(|x| le(x.0, s.ack));
            *o = rest;
            if let Some(last) = covered.iter().filter(|x| !x.2).max_by_key(|x| x.1) {
                rtt.push(RttSample {
                    segment: last.1,
                    acked_by: i,
                    dir: if peer == 0 {
                        Dir::ClientToServer
                    } else {
                        Dir::ServerToClient
                    },
                    what: last.3.into(),
                    rtt_ns: s.ts_ns.saturating_sub(conn[last.1].ts_ns),
                });
            }
        }

        // States [RFC 9293 § 3.3.2]: the sender's move on sending…
        let f = s.flags;
        state[me] = match (state[me], f) {
            (_, f) if f.rst => State::Closed,
            (State::Closed | State::Listen, f) if f.syn && !f.ack => State::SynSent,
            (State::Closed | State::Listen | State::SynSent, f) if f.syn && f.ack => {
                State::SynReceived
            }
            (State::Established | State::SynReceived, f) if f.fin => State::FinWait1,
            (State::CloseWait, f) if f.fin => State::LastAck,
            (st, _) => st,
        };
        // … and the receiver's on arriving: the ACK first, then the SYN or FIN.
        let acks = |at: Option<u32>| f.ack && at.is_some_and(|a| lt(a, s.ack));
        if dir == Dir::ClientToServer && irtt.is_none() && acks(tx[peer].isn) && saw_syn {
            irtt = Some(s.ts_ns - start_ns);
        }
        let mut r = state[peer];
        if f.rst {
            r = State::Closed;
        } else {
            let syn_acked = acks(tx[peer].isn);
            r = match r {
                State::Listen if f.syn && !f.ack => State::SynReceived,
                State::SynSent if f.syn && syn_acked => State::Established,
                State::SynReceived if syn_acked && !f.syn => State::Established,
                st => st,
            };
            let fin_acked = acks(tx[peer].fin_at);
            r = match r {
                State::FinWait1 if fin_acked => State::FinWait2,
                State::Closing if fin_acked => State::TimeWait,
                State::LastAck if fin_acked => State::Closed,
                st => st,
            };
            if f.fin {
                r = match r {
                    State::Established | State::SynReceived => State::CloseWait,
                    State::FinWait1 => State::Closing,
                    State::FinWait2 => State::TimeWait,
                    st => st,
                };
            }
        }
        state[peer] = r;

        let peer_isn = tx[peer].isn;
        rows.push(Row {
            t_ns: s.ts_ns - start_ns,
            dir,
            flags: f,
            seq: s.seq.wrapping_sub(isn),
            ack: f
                .ack
                .then(|| peer_isn.map_or(s.ack, |p| s.ack.wrapping_sub(p))),
            len: s.len,
            win,
            client: state[0],
            server: state[1],
            notes,
        });
    }
    let [c2s, s2c] = flows;
    let [client_opening, server_opening] = openings;
    TcpView {
        wire: wire.into(),
        client,
        server,
        start_ns,
        others: Vec::new(),
        summary: Summary {
            client: client_opening,
            server: server_opening,
            scaling,
            retransmissions: c2s.retransmissions + s2c.retransmissions,
            client_to_server: c2s,
            server_to_client: s2c,
            rtt,
            duration_ns: rows.last().map_or(0, |r| r.t_ns),
            client_final: state[0],
            server_final: state[1],
        },
        rows,
    }
}

/// The table `d11 tcpview` prints, one line per segment.
pub fn table(v: &TcpView) -> String {
    use fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>4} {:>10} {:<3} {:<14} {:>8} {:>8} {:>5} {:>7}  {:<12} {:<12} notes",
        "#", "time(ms)", "dir", "flags", "seq", "ack", "len", "win", "client", "server"
    );
    for (i, r) in v.rows.iter().enumerate() {
        let notes: Vec<String> = r.notes.iter().map(Note::to_string).collect();
        let _ = writeln!(
            s,
            "{:>4} {:>10.3} {:<3} {:<14} {:>8} {:>8} {:>5} {:>7}  {:<12} {:<12} {}",
            i + 1,
            r.t_ns as f64 / 1e6,
            r.dir.to_string(),
            r.flags.to_string(),
            r.seq,
            r.ack.map_or("-".into(), |a| a.to_string()),
            r.len,
            r.win,
            r.client.to_string(),
            r.server.to_string(),
            notes.join(", ")
        );
    }
    s
}

/// The summary `d11 tcpview` prints under the table.
pub fn summary(v: &TcpView) -> String {
    use fmt::Write;
    let m = &v.summary;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "connection {} → {} on {}, {:.3} ms, {} segments",
        v.client,
        v.server,
        v.wire,
        m.duration_ns as f64 / 1e6,
        v.rows.len()
    );
    let side = |name: &str, o: &Option<Opening>| match o {
        Some(o) => format!(
            "{name}: ISN {} MSS {} window {} scale {} SACK {} timestamps {}",
            o.isn,
            o.mss.map_or("-".into(), |x| x.to_string()),
            o.syn_window,
            o.window_scale
                .map_or("-".into(), |x| format!("×{}", 1u32 << x.min(14))),
            if o.sack_permitted { "yes" } else { "no" },
            if o.timestamps { "yes" } else { "no" },
        ),
        None => format!("{name}: SYN not captured"),
    };
    let _ = writeln!(s, "  {}", side("client", &m.client));
    let _ = writeln!(s, "  {}", side("server", &m.server));
    if !m.scaling {
        let _ = writeln!(
            s,
            "  window scaling off (both SYNs must carry it): windows as sent"
        );
    }
    for (name, f) in [
        ("client → server", &m.client_to_server),
        ("server → client", &m.server_to_client),
    ] {
        let _ = writeln!(
            s,
            "  {name}: {} segments, {} payload bytes ({} distinct), {} retransmissions, {} dup acks",
            f.segments, f.payload_bytes, f.unique_bytes, f.retransmissions, f.dup_acks
        );
    }
    let rtts: Vec<String> = m
        .rtt
        .iter()
        .map(|r| {
            format!(
                "{} #{}→#{} {:.3} ms",
                r.what,
                r.segment + 1,
                r.acked_by + 1,
                r.rtt_ns as f64 / 1e6
            )
        })
        .collect();
    let _ = writeln!(
        s,
        "  RTT samples: {}",
        if rtts.is_empty() {
            "-".into()
        } else {
            rtts.join("; ")
        }
    );
    let _ = writeln!(
        s,
        "  retransmissions: {}; final states: client {}, server {}",
        m.retransmissions, m.client_final, m.server_final
    );
    for (c, srv) in &v.others {
        let _ = writeln!(s, "  also on this wire: {c} → {srv} (--conn {c},{srv})");
    }
    s
}

/// The tcptrace picture of the client → server direction (Wireshark's
/// "Stevens"/"tcptrace" graph): time across, relative sequence number up;
/// each segment a bar from seq to seq+len, the ACKs from the server as a
/// step line, the receive-window ceiling (ack + window) above it.
pub fn svg(v: &TcpView) -> String {
    use fmt::Write;
    const W: f64 = 900.0;
    const H: f64 = 540.0;
    const L: f64 = 80.0; // left margin: the sequence axis' labels
    const R: f64 = 250.0; // right margin: the legend
    const T: f64 = 40.0;
    const B: f64 = 60.0;
    let (pw, ph) = (W - L - R, H - T - B);

    let sent: Vec<&Row> = v
        .rows
        .iter()
        .filter(|r| r.dir == Dir::ClientToServer)
        .collect();
    // ACK and window steps from the server: (t, ack, ack + win).
    let acks: Vec<(u64, u64, u64)> = v
        .rows
        .iter()
        .filter(|r| r.dir == Dir::ServerToClient)
        .filter_map(|r| {
            r.ack
                .map(|a| (r.t_ns, u64::from(a), u64::from(a) + u64::from(r.win)))
        })
        .collect();
    let t_max = v.rows.last().map_or(1, |r| r.t_ns).max(1) as f64;
    // The scale fits the data and the ACKs; the window's ceiling too
    // unless it would squash them (a 64 KiB window over a 1 KiB request):
    // then it is clipped at the top and the legend says how high it goes.
    let data_max = sent
        .iter()
        .map(|r| u64::from(r.seq) + u64::from(r.len) + 1)
        .chain(acks.iter().map(|a| a.1))
        .max()
        .unwrap_or(1)
        .max(1);
    let ceiling = acks.iter().map(|a| a.2).max().unwrap_or(0);
    let clipped = ceiling > 3 * data_max;
    let y_max = if clipped {
        data_max
    } else {
        data_max.max(ceiling)
    } as f64;
    let (xt, xstep) = ticks(t_max / 1e6);
    let (yt, ystep) = ticks(y_max);
    let x_hi = xt * xstep * 1e6;
    let y_hi = yt * ystep;
    let x = |t: f64| L + t / x_hi * pw;
    let y = |s: f64| T + ph - s / y_hi * ph;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="14" text-anchor="middle">{} → {} on {}: sequence number over time</text>"#,
        L + pw / 2.0,
        v.client,
        v.server,
        xml(&v.wire)
    );
    // Axes, grid, ticks.
    let _ = writeln!(s, r##"<g stroke="#ddd" stroke-width="1">"##);
    for i in 0..=xt as u32 {
        let px = x(f64::from(i) * xstep * 1e6);
        let _ = writeln!(
            s,
            r#"<line x1="{px:.1}" y1="{T}" x2="{px:.1}" y2="{}"/>"#,
            T + ph
        );
    }
    for i in 0..=yt as u32 {
        let py = y(f64::from(i) * ystep);
        let _ = writeln!(
            s,
            r#"<line x1="{L}" y1="{py:.1}" x2="{}" y2="{py:.1}"/>"#,
            L + pw
        );
    }
    let _ = writeln!(s, "</g>");
    let _ = writeln!(
        s,
        r#"<path d="M{L},{T} V{} H{}" fill="none" stroke="black"/>"#,
        T + ph,
        L + pw
    );
    for i in 0..=xt as u32 {
        let ms = f64::from(i) * xstep;
        let px = x(ms * 1e6);
        let _ = writeln!(
            s,
            r#"<line x1="{px:.1}" y1="{}" x2="{px:.1}" y2="{}" stroke="black"/><text x="{px:.1}" y="{}" text-anchor="middle">{}</text>"#,
            T + ph,
            T + ph + 5.0,
            T + ph + 18.0,
            num(ms)
        );
    }
    for i in 0..=yt as u32 {
        let sq = f64::from(i) * ystep;
        let py = y(sq);
        let _ = writeln!(
            s,
            r#"<line x1="{}" y1="{py:.1}" x2="{L}" y2="{py:.1}" stroke="black"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            L - 5.0,
            L - 8.0,
            py + 4.0,
            num(sq)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">time since the SYN (ms)</text>"#,
        L + pw / 2.0,
        H - 18.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">relative sequence number (bytes)</text>"#,
        T + ph / 2.0,
        T + ph / 2.0
    );

    // ACK and window lines: steps, held until the end.
    let step = |pick: fn(&(u64, u64, u64)) -> u64| -> String {
        let mut d = String::new();
        for (i, a) in acks.iter().enumerate() {
            let (px, py) = (x(a.0 as f64), y(pick(a) as f64));
            if i == 0 {
                let _ = write!(d, "M{px:.1},{py:.1}");
            } else {
                let _ = write!(d, " H{px:.1} V{py:.1}");
            }
        }
        if !acks.is_empty() {
            let _ = write!(d, " H{:.1}", x(t_max));
        }
        d
    };
    if !acks.is_empty() {
        let _ = writeln!(
            s,
            r#"<clipPath id="plot"><rect x="{L}" y="{T}" width="{pw}" height="{ph}"/></clipPath>"#
        );
        let _ = writeln!(
            s,
            r##"<path d="{}" fill="none" stroke="#c9a400" stroke-width="1.5" clip-path="url(#plot)"><title>receive window: ack + window</title></path>"##,
            step(|a| a.2)
        );
        let _ = writeln!(
            s,
            r##"<path d="{}" fill="none" stroke="#1a9a1a" stroke-width="1.5"><title>ACK from the server</title></path>"##,
            step(|a| a.1)
        );
    }
    // Segments: an I-beam from seq to seq+len; SYN and FIN as marks.
    for r in &sent {
        let px = x(r.t_ns as f64);
        let retx = r.notes.contains(&Note::Retransmission);
        let colour = if retx { "#d62728" } else { "#1f3fbf" };
        let what = if retx { "retransmission " } else { "" };
        if r.len > 0 {
            let (lo, hi) = (y(f64::from(r.seq)), y(f64::from(r.seq) + f64::from(r.len)));
            let _ = writeln!(
                s,
                r#"<path d="M{:.1},{hi:.1} H{:.1} M{px:.1},{hi:.1} V{lo:.1} M{:.1},{lo:.1} H{:.1}" stroke="{colour}" stroke-width="1.5" fill="none"><title>{what}seq {} len {} at {:.3} ms</title></path>"#,
                px - 3.0,
                px + 3.0,
                px - 3.0,
                px + 3.0,
                r.seq,
                r.len,
                r.t_ns as f64 / 1e6
            );
        }
        for (on, label) in [
            (r.flags.syn, "SYN"),
            (r.flags.fin, "FIN"),
            (r.flags.rst, "RST"),
        ] {
            if on {
                let at = if label == "FIN" { r.seq + r.len } else { r.seq };
                let py = y(f64::from(at));
                let _ = writeln!(
                    s,
                    r#"<circle cx="{px:.1}" cy="{py:.1}" r="4" fill="none" stroke="{colour}"/><text x="{:.1}" y="{:.1}" fill="{colour}">{label}</text>"#,
                    px + 6.0,
                    py - 6.0
                );
            }
        }
    }
    // Legend.
    let lx = L + pw + 20.0;
    let items = [
        ("#1f3fbf", "data: seq to seq+len"),
        ("#d62728", "retransmission"),
        ("#1a9a1a", "ACK from the server"),
        ("#c9a400", "ACK + advertised window"),
    ];
    let _ = writeln!(
        s,
        r##"<rect x="{}" y="{T}" width="{}" height="{}" fill="white" stroke="#999"/>"##,
        lx - 8.0,
        R - 24.0,
        24.0 + 20.0 * items.len() as f64 + if clipped { 40.0 } else { 20.0 }
    );
    for (i, (c, label)) in items.iter().enumerate() {
        let ly = T + 20.0 + 20.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{c}" stroke-width="3"/><text x="{}" y="{}">{label}</text>"#,
            lx + 18.0,
            lx + 24.0,
            ly + 4.0
        );
    }
    let ly = T + 20.0 + 20.0 * items.len() as f64;
    let _ = writeln!(
        s,
        r#"<circle cx="{}" cy="{ly}" r="4" fill="none" stroke="black"/><text x="{}" y="{}">SYN / FIN</text>"#,
        lx + 9.0,
        lx + 24.0,
        ly + 4.0
    );
    if clipped {
        let _ = writeln!(
            s,
            r##"<text x="{lx}" y="{}" font-size="11" fill="#8a7000">window up to {}: above the plot</text>"##,
            ly + 24.0,
            num(ceiling as f64)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// A tick step of 1, 2 or 5 × 10^k giving 4 to 10 ticks up to at least
/// `max`: (number of ticks, step).
fn ticks(max: f64) -> (f64, f64) {
    let max = if max > 0.0 { max } else { 1.0 };
    let raw = max / 6.0;
    let p = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|s| max / s <= 8.0)
        .unwrap_or(10.0 * p);
    ((max / step).ceil().max(1.0), step)
}

/// A tick label: no trailing zeros, thousands as `k`.
fn num(v: f64) -> String {
    if v >= 10_000.0 && (v / 1000.0).fract() == 0.0 {
        format!("{}k", v / 1000.0)
    } else if v.fract() == 0.0 {
        format!("{v}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use d11_wire::hex;
    use std::net::Ipv4Addr;

    // Made by /usr/bin/python3 with scapy (the script is below, abridged: E
    // is Ether(02:30:e0:92:c6:78 → 02:ce:56:e0:43:d9), c() a segment
    // 10.45.0.2:40000 → 203.0.113.24:443 and s() the reverse, at time t):
    //  1 c(0.000, "S",  seq=1000, window=64240, options=[MSS 1360, SAckOK, Timestamp (1,0), NOP, WScale 7])
    //  2 s(0.010, "SA", seq=5000, ack=1001, window=65160, options=[MSS 1460, SAckOK, Timestamp (2,1), NOP, WScale 7])
    //  3 c(0.011, "A",  seq=1001, ack=5001, window=502)
    //  4 c(0.012, "PA", seq=1001, …, load=b"a"*100)
    //  5 c(0.013, "PA", seq=1101, …, load=b"b"*100)   (lost after this wire)
    //  6 c(0.014, "PA", seq=1201, …, load=b"c"*100)
    //  7 s(0.022, "A",  seq=5001, ack=1101, window=509)
    //  8 s(0.024, "A",  seq=5001, ack=1101, window=509)   (the same again)
    //  9 c(0.250, "PA", seq=1101, …, load=b"b"*100)   (sent again)
    // 10 s(0.260, "A",  ack=1301)   11 s(0.261, "PA", seq=5001, load=b"r"*200)
    // 12 c(0.262, "A",  seq=1301, ack=5201, window=500)
    // 13 c(0.270, "FA") 14 s(0.280, "A", ack=1302) 15 s(0.281, "FA") 16 c(0.282, "A", ack=5202)
    // wrpcap("one.pcap", one); for p in one: print(int(p.time*1e9), bytes(p).hex())
    // tshark 4.0 on one.pcap, the golden for the notes:
    //   tshark -r one.pcap -Y tcp.analysis.retransmission -T fields -e frame.number → 9
    //   tshark -r one.pcap -Y tcp.analysis.duplicate_ack  -T fields -e frame.number → 8
    //   (out_of_order, fast_retransmission, zero_window, window_update: none)
    //   tshark -r one.pcap -T fields -e tcp.window_size → 64240 65160 64256 … 65152 … 64000
    //   tshark -r one.pcap -T fields -e tcp.analysis.ack_rtt → frame 2: 0.010, 10: 0.246
    const ONE: &[(u64, &str)] = &[
        (0, "02ce56e043d90230e092c67808004500003c00010000400634740a2d0002cb0071189c4001bb000003e800000000a002faf065470000020405500402080a000000010000000001030307"),
        (10000000, "0230e092c67802ce56e043d908004500003c0001000040063474cb0071180a2d000201bb9c4000001388000003e9a012fe884db00000020405b40402080a000000020000000101030307"),
        (11000000, "02ce56e043d90230e092c67808004500002800010000400634880a2d0002cb0071189c4001bb000003e900001389501001f6b2290000"),
        (12000000, "02ce56e043d90230e092c67808004500008c00010000400634240a2d0002cb0071189c4001bb000003e900001389501801f6acb8000061616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161"),
        (13000000, "02ce56e043d90230e092c67808004500008c00010000400634240a2d0002cb0071189c4001bb0000044d00001389501801f67a22000062626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262"),
        (14000000, "02ce56e043d90230e092c67808004500008c00010000400634240a2d0002cb0071189c4001bb000004b100001389501801f6478c000063636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363"),
        (22000000, "0230e092c67802ce56e043d90800450000280001000040063488cb0071180a2d000201bb9c40000013890000044d501001fdb1be0000"),
        (24000000, "0230e092c67802ce56e043d90800450000280001000040063488cb0071180a2d000201bb9c40000013890000044d501001fdb1be0000"),
        (250000000, "02ce56e043d90230e092c67808004500008c00010000400634240a2d0002cb0071189c4001bb0000044d00001389501801f67a22000062626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262626262"),
        (260000000, "0230e092c67802ce56e043d90800450000280001000040063488cb0071180a2d000201bb9c400000138900000515501001fdb0f60000"),
        (261000000, "0230e092c67802ce56e043d90800450000f000010000400633c0cb0071180a2d000201bb9c400000138900000515501801fdfb7100007272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272727272"),
        (262000000, "02ce56e043d90230e092c67808004500002800010000400634880a2d0002cb0071189c4001bb0000051500001451501001f4b0370000"),
        (270000000, "02ce56e043d90230e092c67808004500002800010000400634880a2d0002cb0071189c4001bb0000051500001451501101f4b0360000"),
        (280000000, "0230e092c67802ce56e043d90800450000280001000040063488cb0071180a2d000201bb9c400000145100000516501001fdb02d0000"),
        (281000000, "0230e092c67802ce56e043d90800450000280001000040063488cb0071180a2d000201bb9c400000145100000516501101fdb02c0000"),
        (282000000, "02ce56e043d90230e092c67808004500002800010000400634880a2d0002cb0071189c4001bb0000051600001452501001f4b0350000"),
    ];
    const TSHARK_RETRANSMISSIONS: &[usize] = &[9];
    const TSHARK_DUP_ACKS: &[usize] = &[8];

    // The same script, then an RST case and a refused SYN:
    //  1 c(1.000, sport=40001, "S", seq=7000, options=[MSS 1360])
    //  2 s(1.010, "SA", seq=9000, ack=7001, options=[MSS 1460])
    //  3 c(1.011, "A")  4 c(1.012, "PA", load=b"x"*50)  5 s(1.020, "R", seq=9001, window=0)
    //  6 c(2.000, sport=40002, "S", seq=100)  7 s(2.001, dport=40002, "RA", seq=0, ack=101, window=0)
    // tshark -r rst.pcap -Y 'tcp.analysis.retransmission || tcp.analysis.duplicate_ack' → none
    const RST: &[(u64, &str)] = &[
        (1000000000, "02ce56e043d90230e092c67808004500002c00010000400634840a2d0002cb0071189c4101bb00001b58000000006002faf09dfd000002040550"),
        (1010000000, "0230e092c67802ce56e043d908004500002c0001000040063484cb0071180a2d000201bb9c410000232800001b596012fe8876c80000020405b4"),
        (1011000000, "02ce56e043d90230e092c67808004500002800010000400634880a2d0002cb0071189c4101bb00001b59000023295010faf0921d0000"),
        (1012000000, "02ce56e043d90230e092c67808004500005a00010000400634560a2d0002cb0071189c4101bb00001b59000023295018faf0ce1f00007878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878"),
        (1020000000, "0230e092c67802ce56e043d90800450000280001000040063488cb0071180a2d000201bb9c41000023290000000050040000a8730000"),
        (2000000000, "02ce56e043d90230e092c67808004500002c00010000400634840a2d0002cb0071189c4201bb00000064000000006002faf0b8f0000002040550"),
        (2001000000, "0230e092c67802ce56e043d90800450000280001000040063488cb0071180a2d000201bb9c42000000000000006550140000cb260000"),
    ];

    fn frames(wire: &str, f: &[(u64, &str)]) -> Vec<Frame> {
        f.iter()
            .map(|(t, h)| Frame {
                wire: wire.into(),
                ts_ns: *t,
                data: hex(h),
            })
            .collect()
    }

    fn one() -> TcpView {
        analyse(&frames("ue:eth0", ONE), "ue:eth0", Pick::Port(443)).unwrap()
    }

    /// Frame numbers (1-based, as tshark counts) of the rows with a note.
    fn rows_with(v: &TcpView, want: impl Fn(&Note) -> bool) -> Vec<usize> {
        v.rows
            .iter()
            .enumerate()
            .filter(|(_, r)| r.notes.iter().any(&want))
            .map(|(i, _)| i + 1)
            .collect()
    }

    #[test]
    fn the_handshake_options_and_scaled_windows_are_read_as_tshark_reads_them() {
        let v = one();
        assert_eq!(v.client, "10.45.0.2:40000".parse().unwrap());
        assert_eq!(v.server, "203.0.113.24:443".parse().unwrap());
        let c = v.summary.client.as_ref().unwrap();
        let s = v.summary.server.as_ref().unwrap();
        assert_eq!((c.isn, c.mss, c.window_scale), (1000, Some(1360), Some(7)));
        assert!(c.sack_permitted && c.timestamps);
        assert_eq!((s.isn, s.mss, s.window_scale), (5000, Some(1460), Some(7)));
        assert!(v.summary.scaling);
        // tshark's tcp.window_size, frame by frame.
        let wins: Vec<u32> = v.rows.iter().map(|r| r.win).collect();
        assert_eq!(
            wins,
            [
                64240, 65160, 64256, 64256, 64256, 64256, 65152, 65152, 64256, 65152, 65152, 64000,
                64000, 65152, 65152, 64000
            ]
        );
        // Relative numbers: tshark's tcp.seq / tcp.ack.
        let seq_ack: Vec<(u32, Option<u32>, u32)> =
            v.rows.iter().map(|r| (r.seq, r.ack, r.len)).collect();
        assert_eq!(seq_ack[0], (0, None, 0));
        assert_eq!(seq_ack[1], (0, Some(1), 0));
        assert_eq!(seq_ack[5], (201, Some(1), 100));
        assert_eq!(seq_ack[9], (1, Some(301), 0));
        assert_eq!(seq_ack[15], (302, Some(202), 0));
    }

    #[test]
    fn retransmissions_and_dup_acks_are_the_frames_tshark_marks() {
        let v = one();
        assert_eq!(
            rows_with(&v, |n| *n == Note::Retransmission),
            TSHARK_RETRANSMISSIONS
        );
        assert_eq!(
            rows_with(&v, |n| matches!(n, Note::DupAck(_))),
            TSHARK_DUP_ACKS
        );
        assert_eq!(v.rows[7].notes, [Note::DupAck(1)]);
        assert!(rows_with(&v, |n| matches!(
            n,
            Note::OutOfOrder | Note::ZeroWindow | Note::PreviousSegmentNotCaptured
        ))
        .is_empty());
        let m = &v.summary;
        assert_eq!(m.retransmissions, 1);
        assert_eq!(
            (
                m.client_to_server.payload_bytes,
                m.client_to_server.unique_bytes
            ),
            (400, 300)
        );
        assert_eq!(m.server_to_client.unique_bytes, 200);
        assert_eq!(m.server_to_client.dup_acks, 1);
        // RTT: SYN → SYN-ACK 10 ms; the retransmitted range gives no sample,
        // the segment after it does (246 ms, tshark's ack_rtt of frame 10).
        let rtt: Vec<(usize, usize, u64)> = m
            .rtt
            .iter()
            .map(|r| (r.segment + 1, r.acked_by + 1, r.rtt_ns))
            .collect();
        assert!(rtt.contains(&(1, 2, 10_000_000)), "{rtt:?}");
        assert!(rtt.contains(&(6, 10, 246_000_000)), "{rtt:?}");
        assert!(!rtt.iter().any(|r| r.0 == 5 || r.0 == 9), "{rtt:?}");
    }

    // ONE without frame 5, as if "b"*100 were lost before this wire
    // (gap = one[:4] + one[5:]; wrpcap("gap.pcap", gap)). tshark 4.0:
    //   -Y tcp.analysis.lost_segment → 5, retransmission → 8,
    //   duplicate_ack → 7, out_of_order → none.
    const TSHARK_GAP: [(&str, &[usize]); 3] = [
        ("previous segment not captured", &[5]),
        ("retransmission", &[8]),
        ("dup ack", &[7]),
    ];

    #[test]
    fn a_segment_lost_before_the_wire_is_a_gap_then_a_retransmission_as_tshark_says() {
        let mut f = frames("ue:eth0", ONE);
        f.remove(4);
        let v = analyse(&f, "ue:eth0", Pick::Port(443)).unwrap();
        for (what, want) in TSHARK_GAP {
            let got = rows_with(&v, |n| n.to_string().starts_with(what));
            assert_eq!(got, want, "{what}");
        }
        assert!(rows_with(&v, |n| *n == Note::OutOfOrder).is_empty());
        // Within the handshake's RTT (11 ms) of the highest segment, the
        // same hole filled is out of order instead.
        let mut quick = f.clone();
        quick[7].ts_ns = quick[4].ts_ns + 1_000_000;
        quick.sort_by_key(|x| x.ts_ns);
        let v = analyse(&quick, "ue:eth0", Pick::Port(443)).unwrap();
        assert_eq!(rows_with(&v, |n| *n == Note::OutOfOrder), [6]);
    }

    #[test]
    fn states_follow_the_diagram_through_an_active_close() {
        use State::*;
        let v = one();
        let states: Vec<(State, State)> = v.rows.iter().map(|r| (r.client, r.server)).collect();
        assert_eq!(states[0], (SynSent, SynReceived));
        assert_eq!(states[1], (Established, SynReceived));
        assert_eq!(states[2], (Established, Established));
        assert_eq!(states[12], (FinWait1, CloseWait));
        assert_eq!(states[13], (FinWait2, CloseWait));
        assert_eq!(states[14], (TimeWait, LastAck));
        assert_eq!(states[15], (TimeWait, Closed));
        assert_eq!(
            (v.summary.client_final, v.summary.server_final),
            (TimeWait, Closed)
        );
    }

    #[test]
    fn an_rst_closes_both_sides_and_a_refused_syn_is_picked_by_its_ends() {
        use State::*;
        let f = frames("ue:eth0", RST);
        let v = analyse(&f, "ue:eth0", Pick::Port(443)).unwrap();
        assert_eq!(v.client.port(), 40001);
        assert_eq!(v.rows.len(), 5);
        assert_eq!(v.others.len(), 1);
        assert!(summary(&v).contains("--conn 10.45.0.2:40002,203.0.113.24:443"));
        assert_eq!(
            (v.rows[3].client, v.rows[3].server),
            (Established, Established)
        );
        assert_eq!((v.rows[4].client, v.rows[4].server), (Closed, Closed));
        assert_eq!(v.rows[4].flags.to_string(), "RST");
        assert!(v.rows.iter().all(|r| r.notes.is_empty()), "{:?}", v.rows);

        let phone = SocketAddrV4::new(Ipv4Addr::new(10, 45, 0, 2), 40002);
        let shop = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 24), 443);
        let refused = analyse(&f, "ue:eth0", Pick::Between(shop, phone)).unwrap();
        assert_eq!(refused.client, phone);
        let st: Vec<(State, State)> = refused.rows.iter().map(|r| (r.client, r.server)).collect();
        assert_eq!(st, [(SynSent, SynReceived), (Closed, Closed)]);
        assert_eq!(refused.rows[1].flags.to_string(), "RST, ACK");
        assert_eq!(refused.rows[1].ack, Some(1));
    }

    #[test]
    fn a_missing_wire_or_connection_is_a_clear_error() {
        let f = frames("ue:eth0", ONE);
        let e = analyse(&f, "enb:s1u", Pick::Port(443)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no wire named enb:s1u in the capture (it has: ue:eth0)"
        );
        let e = analyse(&f, "ue:eth0", Pick::Port(80)).unwrap_err();
        assert_eq!(e.to_string(), "no TCP connection to port 80 on ue:eth0");
        // Truncated frames are skipped, never a panic.
        let cut: Vec<Frame> = f
            .iter()
            .map(|x| Frame {
                data: x.data[..x.data.len().min(50)].to_vec(),
                ..x.clone()
            })
            .collect();
        let _ = analyse(&cut, "ue:eth0", Pick::Port(443));
        // Any byte of any frame flipped: a view or an error, never a panic,
        // and the picture still draws.
        for i in 0..f.len() {
            for at in (0..f[i].data.len()).step_by(3) {
                let mut g = f.clone();
                g[i].data[at] ^= 0xa5;
                if let Ok(v) = analyse(&g, "ue:eth0", Pick::Port(443)) {
                    let _ = (table(&v), summary(&v), svg(&v));
                }
            }
        }
    }

    #[test]
    fn the_picture_is_well_formed_svg_with_bars_lines_and_a_legend() {
        let v = one();
        let s = svg(&v);
        assert!(s.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(s.trim_end().ends_with("</svg>"));
        // Groups balance.
        let opens = s.matches("<g").count() + s.matches("<svg").count();
        let closes = s.matches("</g>").count() + s.matches("</svg>").count();
        assert_eq!(opens, closes);
        // Python's XML parser (not ours) reads it.
        let file = std::env::temp_dir().join(format!("d11-tcpview-{}.svg", std::process::id()));
        std::fs::write(&file, &s).unwrap();
        let parsed = std::process::Command::new("/usr/bin/python3")
            .args([
                "-c",
                "import xml.dom.minidom,sys; xml.dom.minidom.parse(sys.argv[1])",
            ])
            .arg(&file)
            .status();
        let _ = std::fs::remove_file(&file);
        if let Ok(st) = parsed {
            assert!(st.success(), "python3's minidom rejects the SVG:\n{s}");
        }
        assert!(s.contains("retransmission seq 101 len 100"));
        assert!(s.contains(">SYN<") && s.contains(">FIN<"));
        assert!(s.contains("ACK from the server"));
        assert_eq!(ticks(246.0).1, 50.0);
        assert_eq!(num(20000.0), "20k");
        assert_eq!(num(0.25), "0.25");
    }

    #[test]
    fn the_table_names_states_and_notes() {
        let v = one();
        let t = table(&v);
        assert!(t.lines().nth(1).unwrap().contains("SYN-SENT"), "{t}");
        assert!(
            t.contains("dup ack #1") && t.contains("retransmission"),
            "{t}"
        );
        let s = summary(&v);
        assert!(s.contains("MSS 1360") && s.contains("scale ×128"), "{s}");
    }
}
