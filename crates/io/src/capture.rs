//! `d11 capture`: every wire of the lab into one pcapng, one interface per
//! wire named `node:port`.
//!
//! One AF_PACKET socket per capture point, opened inside the point's
//! namespace, seeing both directions (no `PACKET_IGNORE_OUTGOING`; see
//! packet(7)). Frames carry the kernel's receive time (`SO_TIMESTAMPNS`,
//! wall clock since the Unix epoch); each round's frames are written in
//! that order. Checksums a kernel peer left partial are completed and VLAN
//! tags put back as for an element's port (see [`crate::packet`]), so the
//! file shows what a wire would carry.

use crate::netns::with_netns;
use crate::packet::PacketSocket;
use crate::sys::{cvt, Epoll};
use crate::IoError;
use d11_core::pcapng::{PcapError, PcapngWriter};
use std::io::Write;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often `until` is asked when the wires are quiet.
const POLL: Duration = Duration::from_millis(100);
/// Frames read from one socket before the others get their turn.
const BURST: usize = 256;
const SNAPLEN: usize = 65_535 + 14 + 4;

/// A wire to listen to: interface `ifname` of namespace `netns`, shown in
/// the file as `label` (`"node:port"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturePoint {
    pub label: String,
    pub netns: String,
    pub ifname: String,
}

/// What a capture wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureStats {
    pub frames: u64,
    /// Frames the kernel dropped because a socket buffer was full.
    pub dropped_by_kernel: u64,
}

/// Open capture sockets, one per point.
pub struct Capture {
    points: Vec<(String, PacketSocket)>,
}

impl Capture {
    pub fn open(points: &[CapturePoint]) -> Result<Capture, IoError> {
        let points = points
            .iter()
            .map(|p| {
                let s = with_netns(&p.netns, || PacketSocket::open_capture(&p.ifname))
                    .and_then(|r| r)
                    .map_err(|e| IoError::CapturePoint {
                        label: p.label.clone(),
                        source: Box::new(e),
                    })?;
                Ok((p.label.clone(), s))
            })
            .collect::<Result<_, IoError>>()?;
        Ok(Capture { points })
    }

    /// Declares one interface per point in `w`, then writes every frame
    /// until `until()` returns true (asked at least every 100 ms); frames
    /// already waiting at that moment are still written.
    pub fn run<W: Write>(
        &mut self,
        w: &mut PcapngWriter<W>,
        mut until: impl FnMut() -> bool,
    ) -> Result<CaptureStats, IoError> {
        let err = |op| move |source| IoError::Driver { op, source };
        let ids = self
            .points
            .iter()
            .map(|(label, _)| w.add_interface(label))
            .collect::<Result<Vec<u32>, _>>()?;
        let mut epoll = Epoll::new().map_err(err("epoll_create1"))?;
        for (i, (_, s)) in self.points.iter().enumerate() {
            epoll
                .add(s.as_raw_fd(), i as u64, libc::EPOLLIN)
                .map_err(err("watch a capture socket"))?;
        }
        let mut round = Round::default();
        let mut stats = CaptureStats::default();
        let mut ready: Vec<usize> = Vec::new();
        loop {
            let stop = until();
            ready.clear();
            if stop {
                ready.extend(0..self.points.len());
            } else {
                ready.extend(
                    epoll
                        .wait(Some(POLL))
                        .map_err(err("epoll_wait"))?
                        .map(|(t, _)| t as usize),
                );
            }
            for &i in &ready {
                round.read(&self.points[i].1, ids[i]);
            }
            stats.frames += round.write(w)?;
            if stop {
                break;
            }
        }
        w.get_mut().flush().map_err(PcapError::IoError)?;
        for (label, s) in &self.points {
            match s.take_kernel_drops() {
                Ok(n) => stats.dropped_by_kernel += n,
                Err(e) => tracing::warn!(%label, error = %e, "capture statistics"),
            }
        }
        Ok(stats)
    }
}

/// The frames of one round, in one reused arena.
#[derive(Default)]
struct Round {
    buf: Vec<u8>,
    arena: Vec<u8>,
    frames: Vec<(Duration, u32, Range<usize>)>,
}

impl Round {
    fn read(&mut self, s: &PacketSocket, id: u32) {
        self.buf.resize(SNAPLEN, 0);
        for _ in 0..BURST {
            match s.recv_frame(&mut self.buf) {
                Ok(Some(m)) => {
                    let ts = m.timestamp.unwrap_or_else(|| {
                        SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .unwrap_or_default()
                    });
                    let start = self.arena.len();
                    self.arena
                        .extend_from_slice(&self.buf[..m.len.min(SNAPLEN)]);
                    self.frames.push((ts, id, start..self.arena.len()));
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(ifname = s.ifname(), error = %e, "capture receive");
                    return;
                }
            }
        }
    }

    /// Writes the round's frames in time order; returns how many.
    fn write<W: Write>(&mut self, w: &mut PcapngWriter<W>) -> Result<u64, IoError> {
        self.frames.sort_by_key(|(ts, _, _)| *ts);
        for (ts, id, r) in &self.frames {
            w.write(*id, *ts, &self.arena[r.clone()])?;
        }
        let n = self.frames.len() as u64;
        self.frames.clear();
        self.arena.clear();
        Ok(n)
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM set the returned flag instead of killing the
/// process, so `d11 capture` can pass `|| flag.load(Ordering::SeqCst)` as
/// `until` and still close the file properly on Ctrl-C.
pub fn stop_on_signals() -> Result<&'static AtomicBool, IoError> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: sigaction is plain old data; all-zero is a valid value.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // No SA_RESTART: a waiting epoll_wait returns at once with EINTR.
        sa.sa_flags = 0;
        // SAFETY: `sa` is initialised, the handler only stores to an atomic
        // (async-signal-safe), and a null old-action pointer is allowed.
        cvt(unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) })
            .map_err(IoError::SignalHandler)?;
    }
    Ok(&STOP)
}
