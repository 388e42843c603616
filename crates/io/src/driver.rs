//! The one generic driver: epoll(7) over an element's ports, a signalfd(2)
//! for SIGTERM/SIGINT and the control socket, on the calling thread.
//!
//! Each round waits until a port is readable, a signal or a control client
//! arrives, or the element's [`Element::poll_at`] deadline passes. A
//! readable port is drained until it would block, at most [`BURST`] frames
//! per round so that a busy port cannot starve the others (epoll is
//! level-triggered: what is left is reported again). An AF_PACKET port is
//! read [`BATCH`] frames per recvmmsg(2); a TAP, which has no batched read,
//! one read(2) a frame. The clock is read once per receive call, so every
//! frame of a recvmmsg batch reaches the element (and the rx impairment)
//! at the same instant, the one at which all of them had arrived. Every
//! frame goes through [`Element::on_frame`]; what
//! the element answers to a whole burst is then sent at once, one
//! sendmmsg(2) per AF_PACKET port (a TAP still takes a write(2) a frame),
//! counted, and the outbox cleared, keeping its buffers. A transmit error
//! (ENOBUFS, EAGAIN, ENETDOWN, EIO from a TAP whose host side is down, …) is
//! a counted `tx_error` and a rate-limited log line, never fatal; frames the
//! kernel dropped because a port's socket buffer was full are read every
//! second (and at each `status`) and counted as `kernel_queue_full`. The
//! driver holds no protocol logic.
//!
//! A port with an impairment ([`run_impaired`], `docs/impair.md`) has its
//! frames judged by its `d11_core::Impairer` on the side the topology names:
//! after the outbox for what it sends, before the element for what it
//! receives. Frames it delays wait in a time-ordered queue (bounded per
//! port) whose next due time joins the epoll timeout. A port without one
//! costs a single branch per frame.
//!
//! Why recvmmsg/sendmmsg and not PACKET_MMAP rings, and the figures before
//! and after: `docs/bench.md` ("Batched I/O").

use crate::control::{Answer, ControlServer, Request, CLIENT_TOKENS};
use crate::impair::{flip_bit, Impairments, Now};
use crate::packet::{RecvBatch, SendBatch};
use crate::sys::{Epoll, TermSignals};
use crate::{IoError, Port};
use d11_core::impair::Side;
use d11_core::status::PortStatus;
use d11_core::{Counters, Ctx, DropReason, Element, Impairer, Instant, Outbox, PortId};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Frames read from one port before the others get their turn.
pub const BURST: usize = 256;
/// Frames one recvmmsg(2) reads from an AF_PACKET port.
pub const BATCH: usize = 64;
/// A batch slot: the largest frame of a port (MTU 9000, the most a
/// topology allows) with its Ethernet header and a VLAN tag. A longer one
/// (a GSO aggregate from a kernel peer with TSO on) is an `oversize` drop.
const BATCH_FRAME: usize = 9000 + 14 + 4;
/// The receive buffer: the largest IPv4 packet (a GSO aggregate from a
/// kernel peer with TSO on) plus an Ethernet header and a VLAN tag. A frame
/// even longer is counted as an `oversize` drop by the driver.
const RX_BUF: usize = 65_535 + 14 + 4;
const SIGNALS: u64 = u64::MAX;
const LISTENER: u64 = u64::MAX - 1;

/// Runs `element` over `ports` (named `names`, same order, for logs and
/// counters) until SIGTERM or SIGINT, then returns `Ok(())`; the control
/// socket, if any, is served in the same loop and removed on return.
///
/// SIGTERM and SIGINT are blocked in the calling thread (and stay blocked)
/// so they are read from a signalfd. A process-directed signal reaches that
/// signalfd only if every other thread blocks them too, so call this from
/// the main thread before spawning any (or block them first). A signal sent
/// to this thread alone (`pthread_kill`) always stops it.
pub fn run<E: Element>(
    element: &mut E,
    ports: Vec<Port>,
    names: Vec<String>,
    control: Option<ControlServer>,
) -> Result<(), IoError> {
    run_impaired(element, ports, names, Vec::new(), control)
}

/// [`run`] with `impair[i]` applied on port `i` (missing ones impair
/// nothing); the control socket's `impair` command changes them.
pub fn run_impaired<E: Element>(
    element: &mut E,
    ports: Vec<Port>,
    names: Vec<String>,
    impair: Vec<Impairer>,
    mut control: Option<ControlServer>,
) -> Result<(), IoError> {
    if ports.len() != names.len() {
        return Err(IoError::PortNames {
            ports: ports.len(),
            names: names.len(),
        });
    }
    let err = |op| move |source| IoError::Driver { op, source };
    let signals = TermSignals::new().map_err(err("signalfd for SIGTERM/SIGINT"))?;
    let mut epoll = Epoll::new().map_err(err("epoll_create1"))?;
    for (i, p) in ports.iter().enumerate() {
        epoll
            .add(p.as_raw_fd(), i as u64, libc::EPOLLIN)
            .map_err(err("watch a port"))?;
    }
    epoll
        .add(signals.as_raw_fd(), SIGNALS, libc::EPOLLIN)
        .map_err(err("watch the signalfd"))?;
    if let Some(c) = &control {
        epoll
            .add(c.listener_fd(), LISTENER, libc::EPOLLIN)
            .map_err(err("watch the control socket"))?;
    }
    let seed = clock_seed();
    tracing::info!(ports = ?names, seed, "driver running");
    let mut dp = Datapath {
        origin: std::time::Instant::now(),
        cx: Ctx::new(Instant::ZERO, seed),
        counters: Counters::new(ports.len()),
        outbox: Outbox::new(),
        rx_log: vec![RateLimit::default(); ports.len()],
        tx_log: vec![RateLimit::default(); ports.len() + 1],
        impair: Impairments::new(impair, ports.len()),
        scratch: Vec::new(),
        rx_batches: ports
            .iter()
            .map(|p| matches!(p, Port::Packet(_)).then(|| RecvBatch::new(BATCH, BATCH_FRAME)))
            .collect(),
        tx_batch: SendBatch::default(),
        next_kernel_drops: std::time::Instant::now(),
        ports,
        names,
    };
    let mut buf = vec![0u8; RX_BUF];
    let mut ready: Vec<u64> = Vec::with_capacity(64);
    loop {
        let wall = std::time::Instant::now();
        let now = dp.now();
        let due = match (element.poll_at(), dp.impair.next_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut timeout = due.map(|t| t.saturating_since(now));
        let drops = dp.next_kernel_drops.saturating_duration_since(wall);
        timeout = Some(timeout.map_or(drops, |t| t.min(drops)));
        if let Some(d) = control.as_ref().and_then(ControlServer::next_deadline) {
            let d = d.saturating_duration_since(wall);
            timeout = Some(timeout.map_or(d, |t| t.min(d)));
        }
        ready.clear();
        ready.extend(
            epoll
                .wait(timeout)
                .map_err(err("epoll_wait"))?
                .map(|(t, _)| t),
        );
        for &token in &ready {
            match token {
                SIGNALS => {
                    if let Some(sig) = signals.take().map_err(err("read the signalfd"))? {
                        tracing::info!(signal = sig, "stopping");
                        return Ok(());
                    }
                }
                LISTENER => {
                    if let Some(c) = control.as_mut() {
                        c.accept(&epoll);
                    }
                }
                t if t >= CLIENT_TOKENS => {
                    if let Some(c) = control.as_mut() {
                        let slot = (t - CLIENT_TOKENS) as usize;
                        dp.count_kernel_drops();
                        c.serve(&epoll, slot, |req| match req {
                            Request::Status => Answer::Status {
                                ports: dp.ports(),
                                report: element.report(),
                            },
                            Request::Table(name) => Answer::Table(element.table(name)),
                            Request::Impair(args) => {
                                Answer::Impair(dp.impair.command(args, &dp.names))
                            }
                        });
                    }
                }
                t => dp.drain(element, t as usize, &mut buf, &epoll),
            }
        }
        let now = dp.now();
        dp.release(element, now);
        if element.poll_at().is_some_and(|t| t <= now) {
            element.on_timer(dp.cx.at(now), &mut dp.outbox);
            dp.flush();
        }
        if let Some(c) = control.as_mut() {
            c.expire(&epoll, std::time::Instant::now());
        }
        if wall >= dp.next_kernel_drops {
            dp.count_kernel_drops();
            dp.next_kernel_drops = wall + Duration::from_secs(1);
        }
    }
}

struct Datapath {
    origin: std::time::Instant,
    /// The element's time and generator.
    cx: Ctx,
    ports: Vec<Port>,
    names: Vec<String>,
    counters: Counters,
    outbox: Outbox,
    rx_log: Vec<RateLimit>,
    /// One per port, and the last for frames sent to a port that does not exist.
    tx_log: Vec<RateLimit>,
    impair: Impairments,
    /// A frame being corrupted on its way out.
    scratch: Vec<u8>,
    /// Per port, the receive slots of an AF_PACKET port (`None` for a TAP).
    rx_batches: Vec<Option<RecvBatch>>,
    tx_batch: SendBatch,
    /// When the kernel's drop counts are read next.
    next_kernel_drops: std::time::Instant,
}

impl Datapath {
    fn now(&self) -> Instant {
        Instant::from_micros(self.origin.elapsed().as_micros() as u64)
    }

    /// Reads up to [`BURST`] frames from port `i` into the element (an
    /// AF_PACKET port in batches of [`BATCH`], one recvmmsg each), then
    /// sends what it answered.
    fn drain<E: Element>(&mut self, element: &mut E, i: usize, buf: &mut [u8], epoll: &Epoll) {
        if i >= self.ports.len() {
            return;
        }
        match self.rx_batches[i].take() {
            Some(mut batch) => {
                self.drain_batched(element, i, &mut batch, epoll);
                self.rx_batches[i] = Some(batch);
            }
            None => self.drain_each(element, i, buf, epoll),
        }
        self.flush();
    }

    fn drain_batched<E: Element>(
        &mut self,
        element: &mut E,
        i: usize,
        batch: &mut RecvBatch,
        epoll: &Epoll,
    ) {
        for _ in 0..BURST / BATCH {
            let Port::Packet(socket) = &self.ports[i] else {
                return;
            };
            let n = match socket.recv_batch(batch) {
                Ok(n) => n,
                Err(e) => return self.receive_error(i, e, epoll),
            };
            // One instant for the batch: every frame of it had arrived when
            // recvmmsg returned.
            let now = self.now();
            for j in 0..n {
                let (frame, meta) = batch.frame(j);
                self.take(element, i, frame, meta.len, now);
            }
            if n < BATCH {
                return;
            }
        }
    }

    fn drain_each<E: Element>(&mut self, element: &mut E, i: usize, buf: &mut [u8], epoll: &Epoll) {
        for _ in 0..BURST {
            let n = match self.ports[i].recv(buf) {
                Ok(Some(n)) => n,
                Ok(None) => return,
                Err(e) => return self.receive_error(i, e, epoll),
            };
            let frame = &mut buf[..n.min(RX_BUF)];
            let now = self.now();
            self.take(element, i, frame, n, now);
        }
    }

    fn receive_error(&mut self, i: usize, e: std::io::Error, epoll: &Epoll) {
        let port = &self.ports[i];
        if e.raw_os_error() == Some(libc::EBADFD) {
            // A TAP whose device was deleted: it would report an error on
            // every wait. The element keeps its other ports.
            tracing::error!(port = %self.names[i], %port, error = %e, "port is gone; no longer polled");
            let _ = epoll.delete(port.as_raw_fd());
        } else if let Some(more) = self.rx_log[i].check() {
            tracing::warn!(port = %self.names[i], error = %e, suppressed = more, "receive error");
        }
    }

    /// One received frame (`len` bytes on the wire, `frame` what fitted
    /// the buffer), taken from the port at `now`: counted, judged by the
    /// port's rx impairment, handed to the element. What it answers waits
    /// in the outbox for [`Self::flush`].
    fn take<E: Element>(
        &mut self,
        element: &mut E,
        i: usize,
        frame: &mut [u8],
        len: usize,
        now: Instant,
    ) {
        let id = PortId(i as u16);
        self.counters.rx(id, len);
        if len > frame.len() {
            self.counters.ports[i].drops[DropReason::Oversize as usize] += 1;
            if let Some(more) = self.rx_log[i].check() {
                tracing::warn!(port = %self.names[i], len, suppressed = more, "frame longer than the receive buffer dropped");
            }
            return;
        }
        if !self.impair.rx(i) {
            return element.on_frame(self.cx.at(now), id, frame, &mut self.outbox);
        }
        match self.impair.verdict(i, Side::Rx, frame, now) {
            Now::Done(drop) => {
                if let Some(r) = drop {
                    self.counters.ports[i].drops[r as usize] += 1;
                }
            }
            Now::Deliver { copies, flip } => {
                if let Some(bit) = flip {
                    flip_bit(frame, bit);
                }
                for _ in 0..copies {
                    element.on_frame(self.cx.at(now), id, frame, &mut self.outbox);
                }
            }
        }
    }

    /// Adds the frames the kernel dropped since the last look because a
    /// port's socket buffer was full (AF_PACKET ports; a TAP's drops are
    /// the host's).
    fn count_kernel_drops(&mut self) {
        for (i, p) in self.ports.iter().enumerate() {
            if let Port::Packet(s) = p {
                if let Ok(n) = s.take_kernel_drops() {
                    self.counters.ports[i].drops[DropReason::KernelQueueFull as usize] += n;
                }
            }
        }
    }

    /// Hands on every delayed frame due at `now`: to the wire (tx side) or
    /// to the element (rx side).
    fn release<E: Element>(&mut self, element: &mut E, now: Instant) {
        while let Some(d) = self.impair.pop_due(now) {
            let id = PortId(d.port as u16);
            match d.side {
                Side::Tx => self.send(id, &d.frame),
                Side::Rx => {
                    element.on_frame(self.cx.at(now), id, &d.frame, &mut self.outbox);
                    self.flush();
                }
            }
            self.impair.recycle(d.frame);
        }
    }

    /// Every port's counters, with its impairment where it has one.
    fn ports(&self) -> Vec<(String, PortStatus)> {
        self.counters
            .named(&self.names)
            .into_iter()
            .enumerate()
            .map(|(i, (name, counters))| {
                let impair = self.impair.status(i);
                (name, PortStatus { counters, impair })
            })
            .collect()
    }

    /// Sends what the element queued, counts it and its drops, and clears
    /// the outbox: per AF_PACKET port one sendmmsg for all its frames, in
    /// order; a TAP or an impaired port frame by frame.
    fn flush(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        self.counters.record_drops(&self.outbox);
        // Taken out so that sending may borrow the rest of `self`; moving
        // the vectors allocates nothing.
        let mut outbox = std::mem::take(&mut self.outbox);
        for i in 0..self.ports.len() {
            let p = PortId(i as u16);
            let mine = || {
                outbox
                    .frames()
                    .filter(move |(q, _)| *q == p)
                    .map(|(_, f)| f)
            };
            if self.impair.tx(i) {
                for frame in mine() {
                    self.send_impaired(p, frame);
                }
            } else if let Port::Packet(socket) = &self.ports[i] {
                let (counters, log, name) =
                    (&mut self.counters, &mut self.tx_log[i], &self.names[i]);
                socket.send_batch(&mut self.tx_batch, mine(), |r| match r {
                    Ok(len) => counters.tx(p, len),
                    Err(e) => {
                        counters.tx_error(p);
                        if let Some(more) = log.check() {
                            tracing::warn!(port = %name, error = %e, suppressed = more, "transmit error");
                        }
                    }
                });
            } else {
                for frame in mine() {
                    self.send(p, frame);
                }
            }
        }
        if let Some((p, _)) = outbox.frames().find(|(p, _)| p.index() >= self.ports.len()) {
            if let Some(more) = self.tx_log[self.ports.len()].check() {
                tracing::warn!(%p, suppressed = more, "element sent to a port that does not exist");
            }
        }
        outbox.clear();
        self.outbox = outbox;
    }

    /// Sends `frame` on `p` as its tx impairment decides.
    fn send_impaired(&mut self, p: PortId, frame: &[u8]) {
        let now = self.now();
        match self.impair.verdict(p.index(), Side::Tx, frame, now) {
            Now::Done(None) => {}
            Now::Done(Some(r)) => self.counters.ports[p.index()].drops[r as usize] += 1,
            Now::Deliver { copies, flip } => {
                let mut scratch = std::mem::take(&mut self.scratch);
                let frame = match flip {
                    Some(bit) => {
                        scratch.clear();
                        scratch.extend_from_slice(frame);
                        flip_bit(&mut scratch, bit);
                        &scratch[..]
                    }
                    None => frame,
                };
                for _ in 0..copies {
                    self.send(p, frame);
                }
                self.scratch = scratch;
            }
        }
    }

    /// Writes one frame to port `p` and counts it.
    fn send(&mut self, p: PortId, frame: &[u8]) {
        let Some(port) = self.ports.get(p.index()) else {
            if let Some(more) = self.tx_log[self.ports.len()].check() {
                tracing::warn!(%p, suppressed = more, "element sent to a port that does not exist");
            }
            return;
        };
        match port.send(frame) {
            Ok(()) => self.counters.tx(p, frame.len()),
            Err(e) => {
                self.counters.tx_error(p);
                if let Some(more) = self.tx_log[p.index()].check() {
                    tracing::warn!(port = %self.names[p.index()], error = %e, suppressed = more, "transmit error");
                }
            }
        }
    }
}

/// A seed for the element's generator from the clock and the process id,
/// so that two elements, or two runs, draw differently (the simulator is
/// where runs repeat).
fn clock_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// At most one log line per second; the lines held back are counted and
/// reported with the next one.
#[derive(Debug, Clone, Default)]
struct RateLimit {
    next: Option<std::time::Instant>,
    suppressed: u64,
}

impl RateLimit {
    /// `Some(lines held back since the last one)` if a line may be logged now.
    fn check(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        if self.next.is_some_and(|next| now < next) {
            self.suppressed += 1;
            return None;
        }
        self.next = Some(now + Duration::from_secs(1));
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_lets_one_line_a_second_through_and_counts_the_rest() {
        let mut r = RateLimit::default();
        assert_eq!(r.check(), Some(0));
        assert_eq!(r.check(), None);
        assert_eq!(r.check(), None);
        r.next = Some(std::time::Instant::now());
        assert_eq!(r.check(), Some(2));
    }
}
