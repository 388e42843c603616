//! Thin safe wrappers over the few Linux calls the driver and capture share:
//! epoll(7), signalfd(2) and setsockopt(2).

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Turns a libc return value into `io::Result`, reading `errno` on -1.
pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `setsockopt(fd, level, name, &value, sizeof value)`.
pub(crate) fn setsockopt<T>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` points to a live `T` and the length passed is exactly its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    cvt(r).map(drop)
}

/// Sets a socket's receive (`SO_RCVBUF`) or send (`SO_SNDBUF`) buffer to
/// `bytes`: past the `net.core.[rw]mem_max` cap with the `…FORCE` option
/// where the process may (CAP_NET_ADMIN, as the lab's processes have), else
/// within it. The kernel doubles the figure for its bookkeeping, socket(7).
pub(crate) fn set_buffer(fd: RawFd, receive: bool, bytes: libc::c_int) -> io::Result<()> {
    let (force, plain) = if receive {
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF)
    } else {
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)
    };
    setsockopt(fd, libc::SOL_SOCKET, force, &bytes)
        .or_else(|_| setsockopt(fd, libc::SOL_SOCKET, plain, &bytes))
}

/// A level-triggered epoll instance; events carry a caller-chosen token.
pub(crate) struct Epoll {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    pub(crate) fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall with a valid flag; the result is checked.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        Ok(Epoll {
            // SAFETY: `fd` was just returned by epoll_create1 and nobody else owns it.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 64],
        })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) }).map(drop)
    }

    /// Watches `fd` for `events` (`libc::EPOLLIN`, …), reported with `token`.
    pub(crate) fn add(&self, fd: RawFd, token: u64, events: libc::c_int) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, events as u32)
    }

    pub(crate) fn modify(&self, fd: RawFd, token: u64, events: libc::c_int) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, events as u32)
    }

    pub(crate) fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Waits up to `timeout` (forever if `None`, rounded up to whole
    /// milliseconds) and returns the ready `(token, events)`. An interrupted
    /// wait returns nothing.
    pub(crate) fn wait(
        &mut self,
        timeout: Option<Duration>,
    ) -> io::Result<impl Iterator<Item = (u64, u32)> + '_> {
        let ms = match timeout {
            None => -1,
            Some(d) => d.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int,
        };
        // SAFETY: the buffer holds `events.len()` initialised epoll_event slots.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                ms,
            )
        };
        let n = match cvt(n) {
            Ok(n) => n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        Ok(self.events[..n].iter().map(|e| (e.u64, e.events)))
    }
}

/// A signalfd(2) for SIGTERM and SIGINT, which are blocked in the calling
/// thread so they wait for it instead of killing the process.
pub(crate) struct TermSignals {
    fd: OwnedFd,
}

impl TermSignals {
    pub(crate) fn new() -> io::Result<TermSignals> {
        let set = term_set();
        // SAFETY: `set` is an initialised sigset_t; a null old-set pointer is allowed.
        let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        // SAFETY: `set` is an initialised sigset_t; -1 asks for a new fd.
        let fd = cvt(unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) })?;
        Ok(TermSignals {
            // SAFETY: `fd` was just returned by signalfd and nobody else owns it.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// The signal number waiting, if any.
    pub(crate) fn take(&self) -> io::Result<Option<i32>> {
        // SAFETY: signalfd_siginfo is plain old data; all-zero is a valid value.
        let mut info: libc::signalfd_siginfo = unsafe { mem::zeroed() };
        let size = mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: the buffer is a live signalfd_siginfo of `size` bytes.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(None),
                _ => Err(e),
            };
        }
        Ok((n as usize == size).then_some(info.ssi_signo as i32))
    }
}

impl AsRawFd for TermSignals {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn term_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the zeroed set; sigaddset takes valid signal numbers.
    unsafe {
        let mut set: libc::sigset_t = mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}
