//! `d11 capture`: every wire of the lab into one pcapng, one interface per
//! wire named `node:port`.
//!
//! One AF_PACKET socket per capture point, opened inside the point's
//! namespace, seeing both directions (no `PACKET_IGNORE_OUTGOING`; see
//! packet(7)). Frames carry the kernel's receive time (`SO_TIMESTAMPNS`,
//! wall clock since the Unix epoch). Checksums a kernel peer left partial
//! are completed and VLAN tags put back as for an element's port (see
//! [`crate::packet`]), so the file shows what a wire would carry.
//!
//! **Order: packet by packet, each hop by hop.** The file holds every copy
//! of a packet, one per wire it crossed, and writes them together, in the
//! order of their times, and the packets in the order they first appeared
//! ([`journey`]). Plain time order would interleave the copies of one TCP
//! connection's segments and acknowledgements from several wires, and
//! Wireshark (4.0 keeps one TCP conversation for all interfaces) then reads
//! a later wire's copy of a segment, sent after a few copies of the
//! acknowledgement before it, as a *fast* retransmission, which unlike a
//! plain one it feeds to reassembly again: "New fragment overlaps old data"
//! on a segment that completed a TLS record. Written packet by packet, each
//! copy after the first reads as a plain retransmission, except where the
//! ACK before a segment had crossed all of three or more wires before the
//! segment left (docs/order.md, "Reading the capture"). Times are the
//! kernel's: on one wire, a packet may be written before another that
//! crossed that wire a moment earlier (`reordercap` sorts a file by time).

use crate::netns::with_netns;
use crate::packet::PacketSocket;
use crate::sys::{cvt, Epoll};
use crate::IoError;
use d11_core::pcapng::{PcapError, PcapngWriter};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often `until` is asked when the wires are quiet.
const POLL: Duration = Duration::from_millis(100);
/// How long a frame waits for the other copies of its packet: longer than
/// a packet takes to cross the lab, even queued behind a burst.
const HOLD: Duration = Duration::from_millis(250);
/// How far a socket's queue may lag its frames' times: a frame stamped on
/// one CPU can join the queue after one stamped a moment later on the
/// other, so frames are taken as all read only up to this long before the
/// read.
const SETTLE: Duration = Duration::from_millis(10);
/// How long a packet's first sighting is remembered.
const REMEMBER: Duration = Duration::from_secs(2);
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
            // The last frame read from a socket left with more than a
            // burst: frames after it wait for that socket's next ones.
            let read_at = now();
            let mut behind = ready
                .iter()
                .filter_map(|&i| round.read(&self.points[i].1, ids[i]))
                .min();
            if stop {
                // Drain every socket of what it held when asked to stop.
                let asked = now();
                while behind.is_some_and(|t| t < asked) {
                    behind = (0..self.points.len())
                        .filter_map(|i| round.read(&self.points[i].1, ids[i]))
                        .min();
                }
                stats.frames += round.write(w, None)?;
                break;
            }
            let read_to = read_at
                .saturating_sub(SETTLE)
                .min(behind.unwrap_or(Duration::MAX));
            stats.frames += round.write(w, Some(read_to))?;
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

/// Frames read and not yet written: each round's frames, once every socket
/// has been read past them, join the ones held for [`HOLD`], and those
/// whose packet first appeared before the newest frame's time less
/// [`HOLD`] are written, packet by packet.
#[derive(Default)]
struct Round {
    buf: Vec<u8>,
    /// Read this round, not yet keyed: (time, interface, frame).
    fresh: Vec<(Duration, u32, Vec<u8>)>,
    /// Earliest packet first, each packet's copies in time order.
    held: BinaryHeap<Reverse<Held>>,
    /// Frames held so far: keeps frames of one instant in reading order.
    count: u64,
    /// Buffers of frames already written, for the next frames.
    spare: Vec<Vec<u8>>,
    journeys: Journeys,
    newest: Duration,
}

/// A frame waiting to be written, ordered by its fields in this order.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Held {
    /// When the frame's packet first appeared on any wire.
    start: Duration,
    ts: Duration,
    seq: u64,
    id: u32,
    frame: Vec<u8>,
}

impl Round {
    /// Reads at most a burst of frames from `s`; the time of the last one
    /// if more may wait, `None` once the socket is drained.
    fn read(&mut self, s: &PacketSocket, id: u32) -> Option<Duration> {
        self.buf.resize(SNAPLEN, 0);
        let mut last = None;
        for _ in 0..BURST {
            match s.recv_frame(&mut self.buf) {
                Ok(Some(m)) => {
                    let ts = m.timestamp.unwrap_or_else(now);
                    let mut frame = self.spare.pop().unwrap_or_default();
                    frame.clear();
                    frame.extend_from_slice(&self.buf[..m.len.min(SNAPLEN)]);
                    self.fresh.push((ts, id, frame));
                    last = Some(ts);
                }
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(ifname = s.ifname(), error = %e, "capture receive");
                    return None;
                }
            }
        }
        last
    }

    /// Writes the frames whose packet is old enough, packet by packet;
    /// returns how many. `read_to`: every frame up to this time has been
    /// read (`None`: all there will be, so write them all); later ones wait.
    fn write<W: Write>(
        &mut self,
        w: &mut PcapngWriter<W>,
        read_to: Option<Duration>,
    ) -> Result<u64, IoError> {
        // In time order, so a packet's first sighting is its earliest copy,
        // and only up to `read_to`: a copy after it may still come before
        // one already read (another socket's, or this one's from the other CPU).
        self.fresh.sort_by_key(|(ts, _, _)| *ts);
        let upto = read_to.unwrap_or(Duration::MAX);
        let ready = self.fresh.partition_point(|(ts, _, _)| *ts <= upto);
        for (ts, id, frame) in self.fresh.drain(..ready) {
            let start = self.journeys.start(journey::key(&frame), ts);
            self.newest = self.newest.max(ts);
            self.count += 1;
            self.held.push(Reverse(Held {
                start,
                ts,
                seq: self.count,
                id,
                frame,
            }));
        }
        let until = match read_to {
            None => Duration::MAX,
            Some(_) => self.newest.saturating_sub(HOLD),
        };
        let mut written = 0;
        while self.held.peek().is_some_and(|Reverse(h)| h.start <= until) {
            let Some(Reverse(h)) = self.held.pop() else {
                break;
            };
            w.write(h.id, h.ts, &h.frame)?;
            self.spare.push(h.frame);
            written += 1;
        }
        self.spare.truncate(BURST);
        Ok(written)
    }
}

/// The wall clock since the Unix epoch, as the kernel stamps frames.
fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Each packet's first sighting, remembered for [`REMEMBER`].
#[derive(Default)]
struct Journeys {
    first: HashMap<u64, Duration>,
    seen: VecDeque<(Duration, u64)>,
}

impl Journeys {
    /// When the packet with this key first appeared (`ts` for a frame of
    /// no known packet, or the first sighting).
    fn start(&mut self, key: Option<u64>, ts: Duration) -> Duration {
        while let Some(&(t, k)) = self.seen.front() {
            if ts.saturating_sub(t) <= REMEMBER {
                break;
            }
            self.seen.pop_front();
            if self.first.get(&k) == Some(&t) {
                self.first.remove(&k);
            }
        }
        let Some(k) = key else { return ts };
        *self.first.entry(k).or_insert_with(|| {
            self.seen.push_back((ts, k));
            ts
        })
    }
}

/// Which packet a frame carries, the same on every wire it crosses.
mod journey {
    use d11_wire::ethernet::{self, EtherType, EthernetFrame};
    use d11_wire::ipv4::{protocol, Ipv4Packet};
    use d11_wire::udp::{self, UdpPacket};
    use d11_wire::{gtpu, vxlan};
    use std::hash::{Hash, Hasher};

    /// A hash of the innermost IPv4 packet of `frame` (inside an 802.1Q
    /// tag, GTP-U [3GPP TS 29.281] or VXLAN [RFC 7348]) over what no hop
    /// of the lab rewrites: the identification, fragment field, protocol
    /// and length [RFC 791], and the transport bytes without the ports,
    /// checksums and ICMP's echo identifier, which NAT rewrites [RFC 3022].
    /// `None` for a frame that is not IPv4 (ARP), or is cut short.
    pub fn key(frame: &[u8]) -> Option<u64> {
        let mut l3 = ipv4_of(frame)?;
        // At most two tunnels deep (VXLAN inside GTP-U is more than the lab has).
        for _ in 0..3 {
            let ip = Ipv4Packet::new_checked(l3).ok()?;
            let p = ip.payload_ref();
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (
                ip.ident(),
                ip.header().get(6..8)?,
                ip.protocol(),
                ip.total_len(),
            )
                .hash(&mut h);
            match ip.protocol() {
                protocol::UDP => {
                    let udp = UdpPacket::new_checked(p).ok()?;
                    let payload = p.get(udp::HEADER_LEN..udp.len())?;
                    match udp.dst_port() {
                        gtpu::PORT => {
                            let hl = gtpu::GtpuPacket::new_checked(payload).ok()?.header_len();
                            l3 = payload.get(hl..)?;
                            continue;
                        }
                        vxlan::PORT => {
                            vxlan::VxlanPacket::new_checked(payload).ok()?;
                            l3 = ipv4_of(payload.get(vxlan::HEADER_LEN..)?)?;
                            continue;
                        }
                        _ => payload.hash(&mut h),
                    }
                }
                protocol::TCP => (p.get(4..16)?, p.get(18..)?).hash(&mut h),
                protocol::ICMP => (p.get(..2)?, p.get(6..8)?).hash(&mut h),
                _ => p.hash(&mut h),
            }
            return Some(h.finish());
        }
        None
    }

    /// The IPv4 packet of an Ethernet frame, past any 802.1Q tags.
    fn ipv4_of(frame: &[u8]) -> Option<&[u8]> {
        let mut ethertype = EthernetFrame::new_checked(frame).ok()?.ethertype();
        let mut l3 = frame.get(ethernet::HEADER_LEN..)?;
        while ethertype == EtherType::Vlan {
            ethertype = EtherType::from(u16::from_be_bytes(l3.get(2..4)?.try_into().ok()?));
            l3 = l3.get(4..)?;
        }
        (ethertype == EtherType::Ipv4).then_some(l3)
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

#[cfg(test)]
mod tests {
    use super::*;
    use d11_wire::hex;

    // One TCP segment as four wires carry it, then the next segment and an
    // ARP request, from scapy 2.5.0 (/usr/bin/python3):
    //   seg = TCP(sport=443, dport=41144, seq=1349, ack=263, flags="PA",
    //             window=512)/Raw(b"tail of a TLS record")
    //   UE: Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02")/IP(src="198.18.1.18",
    //       dst="10.45.0.2", id=0x1234, ttl=60, flags="DF")/seg
    //   S1U: Ether(…)/IP(src="172.16.1.2", dst="172.16.1.1", id=7)/UDP(sport=2152,
    //       dport=2152)/GTP_U_Header(teid=0x10, gtp_type=255)/IP(…, ttl=61, …)/seg
    //   SGI (after NAT: dport=46232, dst="198.51.100.139", 802.1Q tag 100, ttl=62):
    //       Ether(…)/Dot1Q(vlan=100)/IP(…)/TCP(sport=443, dport=46232, …)/Raw(…)
    //   VXLAN: Ether()/IP(src="10.0.0.1", dst="10.0.0.2", id=9)/UDP(sport=50000,
    //       dport=4789)/VXLAN(flags=0x08, vni=1001)/Ether(…)/<SGI's IP packet>
    //   NEXT: UE's with id=0x1235, seq=1369
    //   ARP: Ether(dst="ff:ff:ff:ff:ff:ff", src=…)/ARP(psrc="10.45.0.1", pdst="10.45.0.2")
    const UE: &str = "02000000000102000000000208004500003c123440003c065b35c61201120a2d000201bba0b80000054500000107501802007e8200007461696c206f66206120544c53207265636f7264";
    const S1U: &str = "0200000000030200000000040800450000600007000040112063ac100102ac10010108680868004c349930ff003c000000104500003c123440003d065a35c61201120a2d000201bba0b80000054500000107501802007e8200007461696c206f66206120544c53207265636f7264";
    const SGI: &str = "0200000000050200000000068100006408004500003c123440003e0638a5c6120112c633648b01bbb4980000054500000107501802004a1200007461696c206f66206120544c53207265636f7264";
    const VXLAN: &str = "02fc0000000502fc0000000108004500006e00090000401166740a0000010a000002c35012b5005a0a31080000000003e90002000000000702000000000808004500003c123440003e0638a5c6120112c633648b01bbb4980000054500000107501802004a1200007461696c206f66206120544c53207265636f7264";
    const NEXT: &str = "02000000000102000000000208004500003c123540003c065b34c61201120a2d000201bba0b80000055900000107501802007e6e00007461696c206f66206120544c53207265636f7264";
    const ARP: &str =
        "ffffffffffff0200000000020806000108000604000102fc000000010a2d00010000000000000a2d0002";

    #[test]
    fn a_packet_has_one_key_on_every_wire_and_another_packet_another() {
        let k = journey::key(&hex(UE)).expect("an IPv4 packet");
        for other in [S1U, SGI, VXLAN] {
            assert_eq!(journey::key(&hex(other)), Some(k), "{other}");
        }
        assert_ne!(journey::key(&hex(NEXT)), Some(k));
        assert_eq!(journey::key(&hex(ARP)), None);
        for cut in [10, 20, 40, 60] {
            let _ = journey::key(&hex(S1U)[..cut]);
        }
        assert_eq!(journey::key(&hex(UE)[..30]), None);
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Feeds `frames` as one round, writes what is due, returns it as
    /// (interface, time in ms) in file order.
    fn round(
        r: &mut Round,
        frames: &[(u64, u32, &str)],
        read_to: Option<u64>,
    ) -> Vec<(String, u64)> {
        let mut w = PcapngWriter::new(Vec::new()).unwrap();
        for i in 0..3 {
            w.add_interface(&format!("w{i}")).unwrap();
        }
        for &(t, id, f) in frames {
            r.fresh.push((ms(t), id, hex(f)));
        }
        let n = r.write(&mut w, read_to.map(ms)).unwrap();
        let out: Vec<_> = d11_core::pcapng::read_frames(w.get_mut())
            .unwrap()
            .into_iter()
            .map(|(wire, ts, _)| (wire, ts.as_millis() as u64))
            .collect();
        assert_eq!(out.len() as u64, n);
        out
    }

    #[test]
    fn copies_of_a_packet_are_written_together_packets_by_first_sighting() {
        let mut r = Round::default();
        // The segment on w0 at 1000 ms, the next one on w0 at 1002, the
        // first one's later copies on w1 and w2 at 1003 and 1004.
        let frames = [
            (1004, 2, VXLAN),
            (1002, 0, NEXT),
            (1000, 0, UE),
            (1003, 1, S1U),
        ];
        let all_read = Some(u64::MAX);
        // Nothing is written before the hold has passed …
        assert_eq!(round(&mut r, &frames, all_read), vec![]);
        // … nor while a socket still holds frames from before it …
        assert_eq!(round(&mut r, &[(1400, 0, ARP)], Some(1100)), vec![]);
        // … then, all read, the late ARP has moved the clock on past it.
        let written = round(&mut r, &[], all_read);
        let w = |i: u32, t: u64| (format!("w{i}"), t);
        assert_eq!(
            written,
            vec![w(0, 1000), w(1, 1003), w(2, 1004), w(0, 1002)]
        );
        assert_eq!(round(&mut r, &[], None), vec![w(0, 1400)]);
    }

    #[test]
    fn a_packet_is_placed_by_its_first_copy_even_when_that_copy_is_read_last() {
        let mut r = Round::default();
        // The segment's copy on w0 (1001) is read a round after the next
        // segment's (1002) and after its own later copies on w1 and w2.
        let first = [(1002, 0, NEXT), (1005, 1, S1U), (1006, 2, VXLAN)];
        assert_eq!(round(&mut r, &first, Some(1000)), vec![]);
        assert_eq!(round(&mut r, &[(1001, 0, UE)], Some(u64::MAX)), vec![]);
        let w = |i: u32, t: u64| (format!("w{i}"), t);
        assert_eq!(
            round(&mut r, &[], None),
            vec![w(0, 1001), w(1, 1005), w(2, 1006), w(0, 1002)]
        );
    }
}
