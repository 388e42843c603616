//! The one generic driver: epoll(7) over an element's ports, a signalfd(2)
//! for SIGTERM/SIGINT and the control socket, on the calling thread.
//!
//! Each round waits until a port is readable, a signal or a control client
//! arrives, or the element's [`Element::poll_at`] deadline passes. A
//! readable port is drained until it would block, at most [`BURST`] frames
//! per round so that a busy port cannot starve the others (epoll is
//! level-triggered: what is left is reported again). Every frame goes
//! through [`Element::on_frame`]; the outbox is written out at once, counted
//! and cleared, keeping its buffers. A transmit error (ENOBUFS, EAGAIN,
//! ENETDOWN, EIO from a TAP whose host side is down, …) is a counted
//! `tx_error` and a rate-limited log line, never fatal. The driver holds no
//! protocol logic.
//!
//! A port with an impairment ([`run_impaired`], `docs/impair.md`) has its
//! frames judged by its `d11_core::Impairer` on the side the topology names:
//! after the outbox for what it sends, before the element for what it
//! receives. Frames it delays wait in a time-ordered queue (bounded per
//! port) whose next due time joins the epoll timeout. A port without one
//! costs a single branch per frame.
//!
//! One `recvmsg` and one `send` per frame. Measured with a pass-across
//! element between two kernel namespaces (release build, 2 vCPUs shared
//! with iperf3): TCP 1.35 Gbit/s at MTU 1500, 64-byte UDP about 80 kpps.
//! That is ample for the lab, so `recvmmsg`/`sendmmsg` (which would batch
//! the outbox across frames) are not used.

use crate::control::{Answer, ControlServer, Request, CLIENT_TOKENS};
use crate::impair::{flip_bit, Impairments, Now};
use crate::sys::{Epoll, TermSignals};
use crate::{IoError, Port};
use d11_core::impair::Side;
use d11_core::status::PortStatus;
use d11_core::{Counters, Ctx, DropReason, Element, Impairer, Instant, Outbox, PortId};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Frames read from one port before the others get their turn.
pub const BURST: usize = 64;
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
                        c.serve(&epoll, slot, |req| match req {
                            Request::Status => Answer::Status {
                                ports: dp.ports(),
                                report: element.report(),
                            },
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
}

impl Datapath {
    fn now(&self) -> Instant {
        Instant::from_micros(self.origin.elapsed().as_micros() as u64)
    }

    /// Reads up to [`BURST`] frames from port `i` into the element.
    fn drain<E: Element>(&mut self, element: &mut E, i: usize, buf: &mut [u8], epoll: &Epoll) {
        if i >= self.ports.len() {
            return;
        }
        let id = PortId(i as u16);
        for _ in 0..BURST {
            let port = &mut self.ports[i];
            let n = match port.recv(buf) {
                Ok(Some(n)) => n,
                Ok(None) => return,
                Err(e) if e.raw_os_error() == Some(libc::EBADFD) => {
                    // A TAP whose device was deleted: it would report an
                    // error on every wait. The element keeps its other ports.
                    tracing::error!(port = %self.names[i], %port, error = %e, "port is gone; no longer polled");
                    let _ = epoll.delete(port.as_raw_fd());
                    return;
                }
                Err(e) => {
                    if let Some(more) = self.rx_log[i].check() {
                        tracing::warn!(port = %self.names[i], error = %e, suppressed = more, "receive error");
                    }
                    return;
                }
            };
            self.counters.rx(id, n);
            if n > buf.len() {
                self.counters.ports[i].drops[DropReason::Oversize as usize] += 1;
                if let Some(more) = self.rx_log[i].check() {
                    tracing::warn!(port = %self.names[i], len = n, suppressed = more, "frame longer than the receive buffer dropped");
                }
                continue;
            }
            if self.impair.rx(i) {
                let now = self.now();
                match self.impair.verdict(i, Side::Rx, &buf[..n], now) {
                    Now::Done(drop) => {
                        if let Some(r) = drop {
                            self.counters.ports[i].drops[r as usize] += 1;
                        }
                    }
                    Now::Deliver { copies, flip } => {
                        if let Some(bit) = flip {
                            flip_bit(&mut buf[..n], bit);
                        }
                        for _ in 0..copies {
                            element.on_frame(self.cx.at(now), id, &buf[..n], &mut self.outbox);
                            self.flush();
                        }
                    }
                }
                continue;
            }
            let now = self.now();
            element.on_frame(self.cx.at(now), id, &buf[..n], &mut self.outbox);
            self.flush();
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
    /// the outbox.
    fn flush(&mut self) {
        self.counters.record_drops(&self.outbox);
        // Taken out so that sending may borrow the rest of `self`; moving
        // the vectors allocates nothing.
        let mut outbox = std::mem::take(&mut self.outbox);
        for (p, frame) in outbox.frames() {
            if self.impair.tx(p.index()) {
                self.send_impaired(p, frame);
            } else {
                self.send(p, frame);
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
