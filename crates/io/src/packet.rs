//! An AF_PACKET socket bound to one interface: how an element owns a veth
//! port, and how `d11 capture` listens to a wire. Read packet(7) first.
//!
//! * `SOCK_RAW` with `ETH_P_ALL`: whole Ethernet frames, every EtherType. The
//!   socket is created with protocol 0 and only starts receiving at `bind`,
//!   so no frame of another interface slips in between.
//! * `PACKET_IGNORE_OUTGOING` (ports only): the element does not read back
//!   what it sent. Capture sockets keep both directions.
//! * `PACKET_ADD_MEMBERSHIP` / `PACKET_MR_PROMISC`: frames for any MAC
//!   address, as a switch port or a router with its own MACs needs.
//! * `PACKET_AUXDATA`: each frame comes with a `tpacket_auxdata`. When its
//!   status has `TP_STATUS_CSUMNOTREADY`, the frame came from a kernel peer
//!   with transmit checksum offload (`CHECKSUM_PARTIAL`): its TCP/UDP checksum
//!   field holds only the folded pseudo-header sum. The sum is completed
//!   here (IPv4 TCP and UDP; the lab runs no IPv6), so elements and captures
//!   only ever see valid checksums.
//! * VLAN tags: the kernel strips an 802.1Q/802.1ad tag on receive (even on
//!   veth) and reports it in `tp_vlan_tci`/`tp_vlan_tpid`; it is put back in
//!   the frame here, as libpcap does, so the frame is the one on the wire.
//! * `MSG_TRUNC`: `recvmsg` returns the frame's true length even when the
//!   buffer was too small, so an oversized frame (a GSO aggregate from a
//!   peer with TSO on) is reported, not silently cut.
//!
//! Kernel documentation: Documentation/networking/packet_mmap.rst (the
//! status bits) and `net/packet/af_packet.c` (`packet_rcv`).

use crate::sys::{cvt, set_buffer, setsockopt};
use crate::IoError;
use d11_wire::checksum;
use std::ffi::CString;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Receive buffer asked for (root may exceed `net.core.rmem_max`), so a
/// burst is not dropped while the element works.
const RCVBUF: libc::c_int = 4 << 20;
/// A capture socket sees every frame of a wire at full rate while the
/// capturer also writes the file: it gets a deeper queue.
const CAPTURE_RCVBUF: libc::c_int = 64 << 20;

/// What came with a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// The frame's true length on the wire; more than the buffer when the
    /// frame was truncated.
    pub len: usize,
    /// The kernel handed a `CHECKSUM_PARTIAL` frame whose TCP/UDP checksum
    /// was completed here.
    pub checksum_completed: bool,
    /// Kernel receive time since the Unix epoch (capture sockets only).
    pub timestamp: Option<Duration>,
}

/// An AF_PACKET socket bound to one interface of the namespace it was
/// opened in. Non-blocking.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifname: String,
}

impl PacketSocket {
    /// An element's port on `ifname` (current netns): promiscuous, not
    /// seeing its own transmissions.
    pub fn open(ifname: &str) -> Result<PacketSocket, IoError> {
        PacketSocket::open_with(ifname, false)
    }

    /// A capture of `ifname` (current netns): both directions, with kernel
    /// receive timestamps.
    pub fn open_capture(ifname: &str) -> Result<PacketSocket, IoError> {
        PacketSocket::open_with(ifname, true)
    }

    fn open_with(ifname: &str, capture: bool) -> Result<PacketSocket, IoError> {
        let err = |op| {
            move |source| IoError::Packet {
                ifname: ifname.to_string(),
                op,
                source,
            }
        };
        let ifindex = if_index(ifname).map_err(err("find the interface"))?;
        // SAFETY: plain syscall; the result is checked.
        let fd = cvt(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        })
        .map_err(err("socket"))?;
        // SAFETY: `fd` was just returned by socket and nobody else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let raw = fd.as_raw_fd();
        let one: libc::c_int = 1;
        if !capture {
            setsockopt(raw, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &one)
                .map_err(err("PACKET_IGNORE_OUTGOING"))?;
        } else {
            setsockopt(raw, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, &one)
                .map_err(err("SO_TIMESTAMPNS"))?;
        }
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_AUXDATA, &one)
            .map_err(err("PACKET_AUXDATA"))?;
        let rcvbuf = if capture { CAPTURE_RCVBUF } else { RCVBUF };
        set_buffer(raw, true, rcvbuf).map_err(err("SO_RCVBUF"))?;
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex;
        // SAFETY: `sll` is a live sockaddr_ll and the length passed is its size.
        cvt(unsafe {
            libc::bind(
                raw,
                (&sll as *const libc::sockaddr_ll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })
        .map_err(err("bind"))?;
        let mreq = libc::packet_mreq {
            mr_ifindex: ifindex,
            mr_type: libc::PACKET_MR_PROMISC as u16,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)
            .map_err(err("PACKET_ADD_MEMBERSHIP promiscuous"))?;
        Ok(PacketSocket {
            fd,
            ifname: ifname.to_string(),
        })
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The interface's hardware address as the socket's own namespace sees
    /// it (`getsockname` on the bound socket: `packet_getname` copies the
    /// device's `dev_addr`). Not `/sys/class/net`: that sysfs shows the
    /// namespace that mounted it, the host's, to a process that only did
    /// `setns`.
    pub fn mac(&self) -> io::Result<[u8; 6]> {
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
        let mut len = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `sll` is a live sockaddr_ll and `len` holds its size.
        cvt(unsafe {
            libc::getsockname(
                self.fd.as_raw_fd(),
                (&mut sll as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        })?;
        if sll.sll_halen != 6 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not an Ethernet address", self.ifname),
            ));
        }
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&sll.sll_addr[..6]);
        Ok(mac)
    }

    /// Receives one frame into `buf`; `None` when nothing is waiting.
    pub fn recv_frame(&self, buf: &mut [u8]) -> io::Result<Option<RecvMeta>> {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut control = [0u64; CONTROL_WORDS];
        // SAFETY: msghdr is plain old data; all-zero is a valid value.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = mem::size_of_val(&control);
        // SAFETY: `msg` points to one iovec over `buf` and to `control`, all
        // live and exclusively borrowed for the call.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_TRUNC) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(None),
                _ => Err(e),
            };
        }
        Ok(Some(finish(&msg, buf, n as usize)))
    }

    /// Receives up to a batch of frames with one recvmmsg(2); returns how
    /// many (0 when nothing is waiting). Each is read back with
    /// [`RecvBatch::frame`].
    pub fn recv_batch(&self, b: &mut RecvBatch) -> io::Result<usize> {
        b.n = 0;
        let count = b.hdrs.len();
        for i in 0..count {
            b.iovs[i] = libc::iovec {
                iov_base: b.bufs[i * b.frame..].as_mut_ptr().cast(),
                iov_len: b.frame,
            };
            // SAFETY: mmsghdr is plain old data; all-zero is a valid value.
            b.hdrs[i] = unsafe { mem::zeroed() };
            let h = &mut b.hdrs[i].msg_hdr;
            h.msg_iov = &mut b.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = b.ctrl[i].as_mut_ptr().cast();
            h.msg_controllen = mem::size_of_val(&b.ctrl[i]);
        }
        // SAFETY: each of the `count` headers points to its own iovec over
        // its own `frame`-byte slot of `bufs` and to its own control
        // buffer; all live and exclusively borrowed for the call.
        let n = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                b.hdrs.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_TRUNC | libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(0),
                _ => Err(e),
            };
        }
        let n = n as usize;
        for i in 0..n {
            let len = b.hdrs[i].msg_len as usize;
            let slot = &mut b.bufs[i * b.frame..(i + 1) * b.frame];
            b.meta[i] = finish(&b.hdrs[i].msg_hdr, slot, len);
        }
        b.n = n;
        Ok(n)
    }

    /// Sends `frames` with sendmmsg(2), in as few calls as the kernel
    /// allows; `each` learns, in order, each frame's length once sent or
    /// the error that kept it from the wire (the rest still go).
    pub fn send_batch<'a>(
        &self,
        b: &mut SendBatch,
        frames: impl Iterator<Item = &'a [u8]>,
        mut each: impl FnMut(io::Result<usize>),
    ) {
        b.iovs.clear();
        for f in frames {
            b.iovs.push(libc::iovec {
                iov_base: f.as_ptr() as *mut libc::c_void,
                iov_len: f.len(),
            });
        }
        b.hdrs.clear();
        for i in 0..b.iovs.len() {
            // SAFETY: mmsghdr is plain old data; all-zero is a valid value.
            let mut h: libc::mmsghdr = unsafe { mem::zeroed() };
            h.msg_hdr.msg_iov = &mut b.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            b.hdrs.push(h);
        }
        let mut at = 0;
        while at < b.hdrs.len() {
            let rest = &mut b.hdrs[at..];
            // SAFETY: each header points to one iovec over a frame the caller
            // lends for this call (the kernel only reads it); all live.
            let n = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    rest.as_mut_ptr(),
                    rest.len().min(libc::c_uint::MAX as usize) as libc::c_uint,
                    0,
                )
            };
            if n < 0 {
                // The first of the rest failed: report it, go on with the next.
                each(Err(io::Error::last_os_error()));
                at += 1;
            } else {
                for iov in &b.iovs[at..at + n as usize] {
                    each(Ok(iov.iov_len));
                }
                at += n as usize;
            }
        }
    }

    /// Sends one whole Ethernet frame out of the interface.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: `frame` is a live slice of `frame.len()` bytes.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Frames the kernel dropped because this socket's buffer was full
    /// since the last call (`PACKET_STATISTICS`, which resets on read).
    pub fn take_kernel_drops(&self) -> io::Result<u64> {
        let mut st = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `st` and `len` are live and `len` is the size of `st`.
        cvt(unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        })?;
        Ok(u64::from(st.tp_drops))
    }
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Control buffer words per frame (u64: cmsghdr alignment): room for the
/// auxdata and a timespec.
const CONTROL_WORDS: usize = 16;

/// Reads what came with a received frame (`msg`'s control messages) and
/// fixes the frame in `buf` (`n` bytes as the kernel counts them) as
/// [`PacketSocket`]'s doc says: the checksum completed, the VLAN tag put
/// back.
fn finish(msg: &libc::msghdr, buf: &mut [u8], n: usize) -> RecvMeta {
    let mut aux: Option<libc::tpacket_auxdata> = None;
    let mut timestamp = None;
    // SAFETY: the kernel filled `msg.msg_control` with well-formed cmsgs
    // up to `msg_controllen`; CMSG_FIRSTHDR/NXTHDR stay within it and
    // the payloads are read unaligned with their kernel-defined types.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::SOL_PACKET, libc::PACKET_AUXDATA) => {
                    aux = Some(std::ptr::read_unaligned(data.cast()));
                }
                (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) => {
                    let ts: libc::timespec = std::ptr::read_unaligned(data.cast());
                    timestamp = Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    let mut len = n;
    let mut checksum_completed = false;
    if let Some(aux) = aux {
        if aux.tp_status & libc::TP_STATUS_CSUMNOTREADY != 0 && len <= buf.len() {
            checksum_completed = complete_partial_checksum(&mut buf[..len]);
        }
        if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 {
            let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                aux.tp_vlan_tpid
            } else {
                libc::ETH_P_8021Q as u16
            };
            len = reinsert_vlan(buf, len, tpid, aux.tp_vlan_tci);
        }
    }
    RecvMeta {
        len,
        checksum_completed,
        timestamp,
    }
}

/// Buffers for [`PacketSocket::recv_batch`]: a slot per frame, allocated
/// once and reused.
pub struct RecvBatch {
    frame: usize,
    bufs: Vec<u8>,
    iovs: Vec<libc::iovec>,
    ctrl: Vec<[u64; CONTROL_WORDS]>,
    hdrs: Vec<libc::mmsghdr>,
    meta: Vec<RecvMeta>,
    n: usize,
}

impl RecvBatch {
    /// Room for `count` frames of at most `frame` bytes each.
    pub fn new(count: usize, frame: usize) -> RecvBatch {
        let none = RecvMeta {
            len: 0,
            checksum_completed: false,
            timestamp: None,
        };
        RecvBatch {
            frame,
            bufs: vec![0; count * frame],
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                count
            ],
            ctrl: vec![[0; CONTROL_WORDS]; count],
            // SAFETY: mmsghdr is plain old data; all-zero is a valid value.
            hdrs: vec![unsafe { mem::zeroed() }; count],
            meta: vec![none; count],
            n: 0,
        }
    }

    /// Frames the last [`PacketSocket::recv_batch`] received.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Frame `i` of the last batch (cut to its slot if it was longer: its
    /// `len` says so) and what came with it.
    pub fn frame(&mut self, i: usize) -> (&mut [u8], RecvMeta) {
        let m = self.meta[i];
        let start = i * self.frame;
        let end = start + m.len.min(self.frame);
        (&mut self.bufs[start..end], m)
    }
}

/// Headers for [`PacketSocket::send_batch`], reused.
#[derive(Default)]
pub struct SendBatch {
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

/// The index of interface `name` in the current network namespace.
pub(crate) fn if_index(name: &str) -> io::Result<libc::c_int> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        i => Ok(i as libc::c_int),
    }
}

/// Puts back the VLAN tag the kernel stripped, right after the MAC
/// addresses; returns the new length (more than `buf` if it does not fit,
/// which the caller sees as truncation).
fn reinsert_vlan(buf: &mut [u8], len: usize, tpid: u16, tci: u16) -> usize {
    if len < 12 || len + 4 > buf.len() {
        return len + 4;
    }
    buf.copy_within(12..len, 16);
    buf[12..14].copy_from_slice(&tpid.to_be_bytes());
    buf[14..16].copy_from_slice(&tci.to_be_bytes());
    len + 4
}

/// Completes the TCP or UDP checksum of an IPv4 frame handed over as
/// `CHECKSUM_PARTIAL`. The field then holds the folded pseudo-header sum,
/// not complemented (`__tcp_v4_send_check`); the one's-complement sum over
/// the whole segment with the field as it is is therefore the full sum, and
/// its complement the right value (0 is sent as 0xffff, as
/// `skb_checksum_help` does, which RFC 768 requires for UDP). Returns false
/// for anything else, which is left alone.
fn complete_partial_checksum(frame: &mut [u8]) -> bool {
    let be16 = |b: &[u8], at: usize| b.get(at..at + 2).map(|w| u16::from_be_bytes([w[0], w[1]]));
    // The tag is out of the frame when the kernel reports it; an inner tag
    // of a double-tagged frame may remain.
    let mut off = 12;
    let mut ethertype = be16(frame, off);
    while matches!(ethertype, Some(0x8100 | 0x88a8)) {
        off += 4;
        ethertype = be16(frame, off);
    }
    if ethertype != Some(0x0800) {
        return false;
    }
    let Some(ip) = frame.get_mut(off + 2..) else {
        return false;
    };
    let Some(&vihl) = ip.first() else {
        return false;
    };
    let ihl = usize::from(vihl & 0x0f) * 4;
    let (Some(total), Some(frag), Some(&proto)) = (be16(ip, 2), be16(ip, 6), ip.get(9)) else {
        return false;
    };
    let total = usize::from(total);
    if vihl >> 4 != 4 || ihl < 20 || total < ihl || total > ip.len() || frag & 0x3fff != 0 {
        return false;
    }
    let field = match proto {
        6 => 16,
        17 => 6,
        _ => return false,
    };
    let l4 = &mut ip[ihl..total];
    if l4.len() < field + 2 {
        return false;
    }
    let c = match !checksum::fold(checksum::sum(l4)) {
        0 => 0xffff,
        c => c,
    };
    l4[field..field + 2].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    // scapy: bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    //   / IP(src="192.0.2.1", dst="192.0.2.2", id=1, flags="DF")
    //   / TCP(sport=40000, dport=9, flags="S", seq=1000, window=64240) / b"hello")
    // scapy computed the TCP checksum 0x4ce5 (bytes 50..52).
    const TCP_FRAME: [u8; 59] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, //
        0x45, 0x00, 0x00, 0x2d, 0x00, 0x01, 0x40, 0x00, 0x40, 0x06, 0xb6, 0xc6, 0xc0, 0x00, //
        0x02, 0x01, 0xc0, 0x00, 0x02, 0x02, //
        0x9c, 0x40, 0x00, 0x09, 0x00, 0x00, 0x03, 0xe8, 0x00, 0x00, 0x00, 0x00, 0x50, 0x02, //
        0xfa, 0xf0, 0x4c, 0xe5, 0x00, 0x00, //
        0x68, 0x65, 0x6c, 0x6c, 0x6f,
    ];
    // scapy: bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    //   / IP(src="198.51.100.1", dst="198.51.100.2", id=7)
    //   / UDP(sport=5353, dport=4789) / b"abc")
    // scapy computed the UDP checksum 0xbf6c (bytes 40..42).
    const UDP_FRAME: [u8; 45] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, //
        0x45, 0x00, 0x00, 0x1f, 0x00, 0x07, 0x00, 0x00, 0x40, 0x11, 0x26, 0x5d, 0xc6, 0x33, //
        0x64, 0x01, 0xc6, 0x33, 0x64, 0x02, //
        0x14, 0xe9, 0x12, 0xb5, 0x00, 0x0b, 0xbf, 0x6c, //
        0x61, 0x62, 0x63,
    ];

    /// What a kernel with tx checksum offload leaves in the field: the
    /// folded pseudo-header sum, not complemented.
    fn make_partial(frame: &[u8], field: usize, proto: u8) -> Vec<u8> {
        let mut f = frame.to_vec();
        let src = std::net::Ipv4Addr::new(f[26], f[27], f[28], f[29]);
        let dst = std::net::Ipv4Addr::new(f[30], f[31], f[32], f[33]);
        let l4_len = (f.len() - 34) as u16;
        let pseudo = checksum::fold(checksum::pseudo_header_sum(src, dst, proto, l4_len));
        f[field..field + 2].copy_from_slice(&pseudo.to_be_bytes());
        f
    }

    #[test]
    fn partial_tcp_checksum_is_completed_to_what_scapy_computed() {
        let mut f = make_partial(&TCP_FRAME, 50, 6);
        assert_ne!(f[..], TCP_FRAME[..]);
        assert!(complete_partial_checksum(&mut f));
        assert_eq!(f[..], TCP_FRAME[..]);
    }

    #[test]
    fn partial_udp_checksum_is_completed_to_what_scapy_computed() {
        let mut f = make_partial(&UDP_FRAME, 40, 17);
        assert!(complete_partial_checksum(&mut f));
        assert_eq!(f[..], UDP_FRAME[..]);
    }

    #[test]
    fn an_inner_vlan_tag_is_skipped() {
        let partial = make_partial(&TCP_FRAME, 50, 6);
        let mut f = partial[..12].to_vec();
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
        f.extend_from_slice(&partial[12..]);
        assert!(complete_partial_checksum(&mut f));
        assert_eq!(f[54..56], TCP_FRAME[50..52]);
    }

    #[test]
    fn fragments_arp_and_short_frames_are_left_alone() {
        let mut frag = make_partial(&TCP_FRAME, 50, 6);
        frag[20] = 0x20; // MF
        let before = frag.clone();
        assert!(!complete_partial_checksum(&mut frag));
        assert_eq!(frag, before);
        let mut arp = TCP_FRAME;
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(!complete_partial_checksum(&mut arp));
        for n in 0..TCP_FRAME.len() - 5 {
            // total length says 45 bytes of IPv4; anything shorter is refused
            let mut short = TCP_FRAME[..n].to_vec();
            assert!(!complete_partial_checksum(&mut short), "{n}");
        }
    }

    #[test]
    fn a_missing_interface_is_named_in_the_error() {
        let e = PacketSocket::open("d11nosuch0").unwrap_err().to_string();
        assert_eq!(
            e,
            "AF_PACKET socket on d11nosuch0: find the interface: No such device (os error 19)"
        );
    }

    #[test]
    fn vlan_tag_goes_back_after_the_mac_addresses() {
        let mut buf = [0u8; 64];
        buf[..UDP_FRAME.len()].copy_from_slice(&UDP_FRAME);
        let n = reinsert_vlan(&mut buf, UDP_FRAME.len(), 0x8100, 0x2064);
        assert_eq!(n, UDP_FRAME.len() + 4);
        assert_eq!(buf[..12], UDP_FRAME[..12]);
        assert_eq!(buf[12..16], [0x81, 0x00, 0x20, 0x64]);
        assert_eq!(buf[16..n], UDP_FRAME[12..]);
        let mut tight = UDP_FRAME;
        assert_eq!(
            reinsert_vlan(&mut tight, UDP_FRAME.len(), 0x8100, 1),
            UDP_FRAME.len() + 4
        );
        assert_eq!(tight, UDP_FRAME, "no room: left as it was, reported longer");
    }
}
