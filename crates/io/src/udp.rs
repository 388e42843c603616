//! Datagrams in batches on a UDP socket the caller owns: one recvmmsg(2)
//! reads up to a batch of queries, one sendmmsg(2) sends their answers.
//! This is how a busy DNS server (nsd, unbound) saves the syscall and the
//! wakeup per datagram. Read recvmmsg(2) and sendmmsg(2) first.
//!
//! The calls are non-blocking (`MSG_DONTWAIT`) and report an empty socket
//! as [`io::ErrorKind::WouldBlock`], so an async caller wraps them in its
//! runtime's readiness ([`register`]). IPv4 and IPv6 peers.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// `sock` (non-blocking) registered with the current tokio runtime for
/// `interest` alone: a server that only waits to read is not woken each
/// time its send buffer drains, as it is through tokio's `UdpSocket`,
/// which registers both. Must be called inside a runtime.
pub fn register(
    sock: std::net::UdpSocket,
    interest: Interest,
) -> io::Result<AsyncFd<std::net::UdpSocket>> {
    // SAFETY: the AsyncFd owns `sock`, whose descriptor stays open and the
    // same until the AsyncFd drops it, and whose `as_raw_fd` always returns
    // that descriptor.
    unsafe { AsyncFd::register_with_interest(sock, interest) }.map_err(|e| e.into_parts().1)
}

/// Sizes `sock`'s receive and send buffers to `bytes` each (past the
/// sysctl caps where the process may), so a burst of queries queues
/// instead of being dropped before the server reads it: the default
/// (`net.core.rmem_default`, 208 KiB) holds about 270 small datagrams.
pub fn size_buffers(sock: &std::net::UdpSocket, bytes: usize) -> io::Result<()> {
    let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    crate::sys::set_buffer(sock.as_raw_fd(), true, bytes)?;
    crate::sys::set_buffer(sock.as_raw_fd(), false, bytes)
}

/// Room for a batch of received datagrams and their senders, reused from
/// call to call (no allocation per datagram).
pub struct UdpBatch {
    size: usize,
    bufs: Vec<u8>,
    iovs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_storage>,
    hdrs: Vec<libc::mmsghdr>,
    lens: Vec<usize>,
    n: usize,
}

// SAFETY: the raw pointers in `iovs` and `hdrs` only ever point into this
// batch's own vectors, and are rebuilt before each call that uses them.
unsafe impl Send for UdpBatch {}

impl UdpBatch {
    /// Room for `count` datagrams of at most `size` bytes each (longer ones
    /// are cut, as recvfrom(2) would cut them).
    pub fn new(count: usize, size: usize) -> UdpBatch {
        let count = count.max(1);
        UdpBatch {
            size,
            bufs: vec![0; count * size],
            // SAFETY: iovec is plain old data; all-zero is a valid value.
            iovs: vec![unsafe { mem::zeroed() }; count],
            // SAFETY: as above, sockaddr_storage.
            names: vec![unsafe { mem::zeroed() }; count],
            // SAFETY: as above, mmsghdr.
            hdrs: vec![unsafe { mem::zeroed() }; count],
            lens: vec![0; count],
            n: 0,
        }
    }

    /// Receives up to a batch with one recvmmsg(2); returns how many
    /// (at least one), or `WouldBlock` when none is waiting.
    pub fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        self.n = 0;
        let count = self.hdrs.len();
        for i in 0..count {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i * self.size..].as_mut_ptr().cast(),
                iov_len: self.size,
            };
            // SAFETY: mmsghdr is plain old data; all-zero is a valid value.
            self.hdrs[i] = unsafe { mem::zeroed() };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        }
        // SAFETY: each of the `count` headers points to its own iovec over
        // its own `size`-byte slot of `bufs` and to its own address
        // storage; all live and exclusively borrowed for the call.
        let n = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.n = n as usize;
        for i in 0..self.n {
            self.lens[i] = (self.hdrs[i].msg_len as usize).min(self.size);
        }
        Ok(self.n)
    }

    /// The datagrams of the last [`recv`](Self::recv), each with its
    /// sender (`None` for a sender of another family, which UDP does not
    /// produce).
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], Option<SocketAddr>)> {
        (0..self.n).map(|i| {
            let at = i * self.size;
            (&self.bufs[at..at + self.lens[i]], to_addr(&self.names[i]))
        })
    }
}

/// Room for the answers of one batch: their bytes back to back and where
/// each goes, kept from call to call.
#[derive(Default)]
pub struct UdpReplies {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    peers: Vec<libc::sockaddr_storage>,
    lens: Vec<libc::socklen_t>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    sent: usize,
}

// SAFETY: as for UdpBatch: the pointers point into its own vectors and are
// rebuilt before each send.
unsafe impl Send for UdpReplies {}

impl UdpReplies {
    /// Queues `datagram` for `peer`.
    pub fn push(&mut self, datagram: &[u8], peer: SocketAddr) {
        self.bytes.extend_from_slice(datagram);
        self.ends.push(self.bytes.len());
        let (name, len) = from_addr(peer);
        self.peers.push(name);
        self.lens.push(len);
    }

    /// True when nothing is left to send.
    pub fn is_empty(&self) -> bool {
        self.sent >= self.ends.len()
    }

    /// Sends what is queued with sendmmsg(2), in as few calls as the kernel
    /// allows. A datagram the kernel refuses (no route back, a full
    /// buffer's `WouldBlock` aside) is skipped and counted in the returned
    /// number of failures, as a lost datagram would be. `WouldBlock` stops
    /// early and is returned: the rest stay queued for the next call.
    pub fn send(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        let mut failed = 0;
        while !self.is_empty() {
            self.iovs.clear();
            self.hdrs.clear();
            for i in self.sent..self.ends.len() {
                let start = if i == 0 { 0 } else { self.ends[i - 1] };
                self.iovs.push(libc::iovec {
                    iov_base: self.bytes[start..].as_mut_ptr().cast(),
                    iov_len: self.ends[i] - start,
                });
            }
            for (k, i) in (self.sent..self.ends.len()).enumerate() {
                // SAFETY: mmsghdr is plain old data; all-zero is valid.
                let mut h: libc::mmsghdr = unsafe { mem::zeroed() };
                h.msg_hdr.msg_iov = &mut self.iovs[k];
                h.msg_hdr.msg_iovlen = 1;
                h.msg_hdr.msg_name = (&mut self.peers[i] as *mut libc::sockaddr_storage).cast();
                h.msg_hdr.msg_namelen = self.lens[i];
                self.hdrs.push(h);
            }
            // SAFETY: each header points to one iovec over its datagram in
            // `bytes` and to its peer's address, all owned by `self` and
            // live for the call; the kernel only reads them.
            let n = unsafe {
                libc::sendmmsg(
                    fd.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    self.hdrs.len().min(libc::c_uint::MAX as usize) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    return Err(e);
                }
                // The first of the rest failed: skip it, go on.
                failed += 1;
                self.sent += 1;
            } else {
                self.sent += n as usize;
            }
        }
        self.bytes.clear();
        self.ends.clear();
        self.peers.clear();
        self.lens.clear();
        self.sent = 0;
        Ok(failed)
    }
}

fn to_addr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, and
            // sockaddr_storage is large and aligned enough for any address.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn from_addr(peer: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
    let mut s: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match peer {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for a
            // sockaddr_in, and it is exclusively borrowed here.
            let v = unsafe {
                &mut *(&mut s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            v.sin_family = libc::AF_INET as libc::sa_family_t;
            v.sin_port = a.port().to_be();
            v.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let v = unsafe {
                &mut *(&mut s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            v.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            v.sin6_port = a.port().to_be();
            v.sin6_addr.s6_addr = a.ip().octets();
            v.sin6_flowinfo = a.flowinfo();
            v.sin6_scope_id = a.scope_id();
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (s, len as libc::socklen_t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    fn buffer(sock: &UdpSocket, name: libc::c_int) -> libc::c_int {
        let mut v: libc::c_int = 0;
        let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` and `len` are live and `len` is `v`'s size.
        let r = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                name,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(r, 0);
        v
    }

    /// As root the buffers are what was asked, doubled by the kernel,
    /// whatever the sysctl caps; otherwise no smaller than before.
    #[test]
    fn a_servers_buffers_hold_a_burst() {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let names = [libc::SO_RCVBUF, libc::SO_SNDBUF];
        let before = names.map(|n| buffer(&sock, n));
        size_buffers(&sock, 1 << 20).unwrap();
        for (name, before) in names.into_iter().zip(before) {
            // SAFETY: plain syscall without arguments.
            if unsafe { libc::geteuid() } == 0 {
                assert_eq!(buffer(&sock, name), 2 << 20);
            } else {
                assert!(buffer(&sock, name) >= before);
            }
        }
    }

    /// Five datagrams from two senders come back in one recvmmsg with
    /// their senders; the answers go back in one sendmmsg to each.
    #[test]
    fn a_batch_in_and_its_answers_out() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = server.local_addr().unwrap();
        for i in 0..3u8 {
            a.send_to(&[b'a', i], to).unwrap();
        }
        for i in 0..2u8 {
            b.send_to(&[b'b', i, i], to).unwrap();
        }
        let mut batch = UdpBatch::new(8, 512);
        let n = batch.recv(server.as_fd()).unwrap();
        assert_eq!(n, 5);
        let got: Vec<(Vec<u8>, SocketAddr)> = batch
            .datagrams()
            .map(|(d, p)| (d.to_vec(), p.unwrap()))
            .collect();
        assert_eq!(got[0], (vec![b'a', 0], a.local_addr().unwrap()));
        assert_eq!(got[4], (vec![b'b', 1, 1], b.local_addr().unwrap()));
        let e = batch.recv(server.as_fd()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);

        let mut out = UdpReplies::default();
        for (d, p) in &got {
            let mut r = d.clone();
            r.reverse();
            out.push(&r, *p);
        }
        assert_eq!(out.send(server.as_fd()).unwrap(), 0);
        assert!(out.is_empty());
        let mut buf = [0u8; 16];
        let (n, _) = a.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[0, b'a']);
        let (n, _) = b.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[0, 0, b'b']);
        let (n, _) = b.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[1, 1, b'b']);
    }

    /// A datagram longer than the slot is cut to it, as recvfrom cuts.
    #[test]
    fn a_long_datagram_is_cut_to_its_slot() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.send_to(&[7u8; 100], server.local_addr().unwrap())
            .unwrap();
        let mut batch = UdpBatch::new(2, 10);
        assert_eq!(batch.recv(server.as_fd()).unwrap(), 1);
        assert_eq!(batch.datagrams().next().unwrap().0, &[7u8; 10]);
    }
}
