//! A session's two-way copy, without an event loop: the event loop
//! (`event_loop.rs`) tells it which socket became ready and calls
//! [`Relay::pump`], which reads and writes without waiting until nothing
//! more can move, and answers what moved and whether the session ended.
//! The fuzz target (`fuzz/fuzz_targets/l4lb.rs`) drives it on in-memory
//! pipes.
//!
//! - Each direction reads into a buffer from [`Buffers`] only once its
//!   reader is ready, and writes it out before reading again
//!   (backpressure); the buffer goes back to the pool once written, as
//!   HAProxy reuses its buffers: an idle session holds none.
//! - An end of stream is passed on as a half-close (`shutdown(Write)`)
//!   unless the other direction has ended already: the session closes both
//!   sockets next, and a close sends the FIN anyway. Neither socket holds
//!   unread bytes by then (each read its end of stream), so the close is a
//!   FIN, never a reset.

use std::io::{self, Read, Write};

use super::tcplog::Termination;

/// Bytes one direction of a session holds at most before the other side
/// has taken them.
pub const BUFFER: usize = 16 * 1024;

/// Buffers kept for the next sessions at most (4 MiB).
const SPARE_BUFFERS: usize = 256;

/// The sides of a session, indexing [`Relay::ready`] and the sockets
/// [`Relay::pump`] takes; direction `d` reads from side `d` and writes to
/// the other.
pub const CLIENT: usize = 0;
pub const SERVER: usize = 1;

/// A socket as the relay drives it: reads and writes that do not wait
/// (`WouldBlock` when they would), and a half-close.
pub trait Socket: Read + Write {
    fn shutdown_write(&mut self) -> io::Result<()>;

    /// A write followed at once by more bytes or the end of stream: TCP
    /// holds it to send with them (`MSG_MORE`, send(2)), so a reply and
    /// its FIN leave in one segment, as HAProxy sends them.
    fn write_more(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write(buf)
    }
}

impl Socket for mio::net::TcpStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }

    fn write_more(&mut self, buf: &[u8]) -> io::Result<usize> {
        socket2::SockRef::from(&*self).send_with_flags(buf, libc::MSG_MORE | libc::MSG_NOSIGNAL)
    }
}

/// What the relay knows of one socket's readiness, edge-triggered: an
/// event sets it; a `WouldBlock`, a short read or (for writes) a
/// `WouldBlock` clears it. A read that fills less than the buffer drained
/// the socket, so the next bytes bring an event of their own (as tokio
/// reads on epoll); an end of stream or an error seen in an event stays
/// ready, so the read or write that reports it is made.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ready {
    read: bool,
    write: bool,
    read_closed: bool,
    write_closed: bool,
}

impl Ready {
    /// Every operation worth trying (what a socket without events of its
    /// own, such as an in-memory pipe, is always).
    pub const ALL: Ready = Ready {
        read: true,
        write: true,
        read_closed: true,
        write_closed: true,
    };

    /// Takes in an event: readable, writable, the peer's end of stream
    /// seen, the write side closed or in error.
    pub fn on_event(&mut self, read: bool, write: bool, read_closed: bool, write_closed: bool) {
        self.read_closed |= read_closed;
        self.write_closed |= write_closed;
        self.read |= read || self.read_closed;
        self.write |= write || self.write_closed;
    }

    pub fn writable(&self) -> bool {
        self.write
    }

    /// The write side was closed or failed (a connect refused).
    pub fn failed(&self) -> bool {
        self.write_closed
    }

    fn read_drained(&mut self) {
        self.read = self.read_closed;
    }

    fn write_full(&mut self) {
        self.write = self.write_closed;
    }
}

/// The relays' buffers, each of [`BUFFER`] bytes: taken while bytes wait
/// to be written and given back, so the heap is not asked for one per
/// read; at most [`SPARE_BUFFERS`] wait here. One event loop owns it.
#[derive(Default)]
pub struct Buffers(Vec<Box<[u8]>>);

impl Buffers {
    pub fn take(&mut self) -> Box<[u8]> {
        self.0
            .pop()
            .unwrap_or_else(|| vec![0; BUFFER].into_boxed_slice())
    }

    pub fn give(&mut self, buf: Box<[u8]>) {
        if self.0.len() < SPARE_BUFFERS {
            self.0.push(buf);
        }
    }
}

/// One direction: the bytes read and not yet written, and whether its end
/// of stream was read (and passed on).
#[derive(Default)]
struct Pipe {
    buf: Option<Box<[u8]>>,
    len: usize,
    sent: usize,
    eof: bool,
}

/// What one [`Relay::pump`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pumped {
    /// Bytes written client → server and server → client.
    pub written: [u64; 2],
    /// A byte was read or written: the session is not idle.
    pub active: bool,
    /// The session ended: both ends of stream passed on (`--`), or a side
    /// failed (`CD`/`SD`).
    pub end: Option<Termination>,
}

/// A session's two directions, client → server and server → client, and
/// each side's readiness.
#[derive(Default)]
pub struct Relay {
    pipes: [Pipe; 2],
    pub ready: [Ready; 2],
}

impl Relay {
    /// Moves what can move between `sockets` (client, server) without
    /// waiting; buffers come from and go back to `buffers`.
    pub fn pump<S: Socket>(&mut self, mut sockets: [&mut S; 2], buffers: &mut Buffers) -> Pumped {
        let mut pumped = Pumped::default();
        for d in [CLIENT, SERVER] {
            if let Err(side) = self.pump_one(d, &mut sockets, buffers, &mut pumped) {
                pumped.end = Some(abort(side));
                return pumped;
            }
        }
        if self.pipes.iter().all(|p| p.eof) {
            pumped.end = Some(Termination::Normal);
        }
        pumped
    }

    /// Copies direction `d` until it would wait; `Err(side)` when a side
    /// failed.
    fn pump_one<S: Socket>(
        &mut self,
        d: usize,
        sockets: &mut [&mut S; 2],
        buffers: &mut Buffers,
        pumped: &mut Pumped,
    ) -> Result<(), usize> {
        let (r, w) = (d, 1 - d);
        let other_eof = self.pipes[w].eof;
        let pipe = &mut self.pipes[d];
        while !pipe.eof {
            if let Some(buf) = &pipe.buf {
                if !self.ready[w].write {
                    return Ok(());
                }
                // The reader's end of stream has come: what is left
                // follows this write at once, bytes or the half-close.
                let bytes = &buf[pipe.sent..pipe.len];
                let written = if self.ready[r].read_closed {
                    sockets[w].write_more(bytes)
                } else {
                    sockets[w].write(bytes)
                };
                match written {
                    Ok(0) => return Err(w),
                    Ok(n) => {
                        pipe.sent += n;
                        pumped.written[d] += n as u64;
                        pumped.active = true;
                        if pipe.sent == pipe.len {
                            buffers.give(pipe.buf.take().unwrap_or_default());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.ready[w].write_full();
                        return Ok(());
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Err(w),
                }
                continue;
            }
            if !self.ready[r].read {
                return Ok(());
            }
            let mut buf = buffers.take();
            match sockets[r].read(&mut buf) {
                Ok(0) => {
                    buffers.give(buf);
                    pipe.eof = true;
                    if !other_eof {
                        sockets[w].shutdown_write().map_err(|_| w)?;
                    }
                }
                Ok(n) => {
                    if n < buf.len() {
                        self.ready[r].read_drained();
                    }
                    (pipe.buf, pipe.len, pipe.sent) = (Some(buf), n, 0);
                    pumped.active = true;
                }
                Err(e) => {
                    buffers.give(buf);
                    match e.kind() {
                        io::ErrorKind::WouldBlock => {
                            self.ready[r].read_drained();
                            return Ok(());
                        }
                        io::ErrorKind::Interrupted => {}
                        _ => return Err(r),
                    }
                }
            }
        }
        Ok(())
    }

    /// The sides the session waits on, client and server, for the idle
    /// timeout: a side it reads from (its direction holds nothing to
    /// write) or writes to (the other direction holds bytes for it).
    pub fn waits_on(&self) -> [bool; 2] {
        let waits = |d: usize| !self.pipes[d].eof && self.pipes[d].buf.is_none();
        let writes = |d: usize| !self.pipes[d].eof && self.pipes[d].buf.is_some();
        [
            waits(CLIENT) || writes(SERVER),
            waits(SERVER) || writes(CLIENT),
        ]
    }

    /// Gives the buffers still held back to `buffers` (a session that
    /// ended on an error or a timeout).
    pub fn release(&mut self, buffers: &mut Buffers) {
        for p in &mut self.pipes {
            if let Some(b) = p.buf.take() {
                buffers.give(b);
            }
        }
    }
}

/// The termination of a session whose side `side` failed.
fn abort(side: usize) -> Termination {
    if side == CLIENT {
        Termination::ClientAbort
    } else {
        Termination::ServerAbort
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// One end of an in-memory stream: what it reads, what it wrote (at
    /// most `room` bytes at a time), whether it shut its write side.
    #[derive(Default)]
    struct Mem {
        incoming: VecDeque<u8>,
        eof: bool,
        wrote: Vec<u8>,
        room: usize,
        shut: bool,
        reset: bool,
    }

    impl Read for Mem {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.reset {
                return Err(io::ErrorKind::ConnectionReset.into());
            }
            if self.incoming.is_empty() && !self.eof {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = self.incoming.len().min(buf.len());
            for (b, x) in buf.iter_mut().zip(self.incoming.drain(..n)) {
                *b = x;
            }
            Ok(n)
        }
    }

    impl Write for Mem {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.room);
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.room -= n;
            self.wrote.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Socket for Mem {
        fn shutdown_write(&mut self) -> io::Result<()> {
            self.shut = true;
            Ok(())
        }
    }

    fn mem(incoming: &[u8], eof: bool) -> Mem {
        Mem {
            incoming: incoming.iter().copied().collect(),
            eof,
            room: usize::MAX,
            ..Mem::default()
        }
    }

    fn ready() -> Relay {
        Relay {
            ready: [Ready::ALL; 2],
            ..Relay::default()
        }
    }

    #[test]
    fn a_request_and_a_reply_pass_with_one_half_close_then_end_normally() {
        let (mut client, mut server) = (mem(b"order", false), mem(b"", false));
        let mut relay = ready();
        let mut buffers = Buffers::default();
        let p = relay.pump([&mut client, &mut server], &mut buffers);
        assert_eq!((p.written, p.end), ([5, 0], None));
        assert_eq!(server.wrote, b"order");
        server.incoming.extend(b"201");
        server.eof = true;
        let p = relay.pump([&mut client, &mut server], &mut buffers);
        assert_eq!((p.written, p.end), ([0, 3], None));
        assert!(client.shut && !server.shut);
        client.eof = true;
        let p = relay.pump([&mut client, &mut server], &mut buffers);
        assert_eq!(p.end, Some(Termination::Normal));
        assert!(!server.shut, "the close sends the second FIN");
        assert_eq!(buffers.0.len(), 1, "one buffer, reused");
    }

    #[test]
    fn a_full_writer_holds_the_bytes_and_stops_the_reader() {
        let (mut client, mut server) = (mem(&[7; 3 * BUFFER], false), mem(b"", false));
        server.room = 100;
        let mut relay = ready();
        let mut buffers = Buffers::default();
        let p = relay.pump([&mut client, &mut server], &mut buffers);
        assert_eq!(p.written, [100, 0]);
        assert_eq!(
            client.incoming.len(),
            2 * BUFFER,
            "one buffer read, no more"
        );
        assert_eq!(
            relay.waits_on(),
            [false, true],
            "waits to write to the server"
        );
        relay.ready[SERVER].on_event(false, true, false, false);
        server.room = usize::MAX;
        let p = relay.pump([&mut client, &mut server], &mut buffers);
        assert_eq!(p.written[0], 3 * BUFFER as u64 - 100);
    }

    #[test]
    fn a_short_read_waits_for_the_next_event_and_an_end_of_stream_does_not() {
        let mut r = Ready::default();
        r.on_event(true, true, false, false);
        r.read_drained();
        assert!(!r.read);
        r.on_event(false, false, true, false);
        r.read_drained();
        assert!(r.read, "the end of stream is still to be read");
    }

    #[test]
    fn a_reset_client_is_a_client_abort_and_its_buffers_come_back() {
        let (mut client, mut server) = (mem(b"", false), mem(b"reply", false));
        client.room = 2;
        let mut relay = ready();
        let mut buffers = Buffers::default();
        relay.pump([&mut client, &mut server], &mut buffers);
        client.reset = true;
        let p = relay.pump([&mut client, &mut server], &mut buffers);
        assert_eq!(p.end, Some(Termination::ClientAbort));
        let before = buffers.0.len();
        relay.release(&mut buffers);
        assert_eq!(buffers.0.len(), before + 1, "the reply's buffer");
    }
}
