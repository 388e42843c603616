//! The few system calls std does not offer: entering a network namespace,
//! signals (signalfd, kill, waitpid), tying a child's life to its parent and
//! watching a process that is not our child (pidfd).
//! Every `unsafe` of the crate is here, each with its `// SAFETY:` note.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Moves the calling thread into the network namespace `ns` (an open
/// `/run/netns/NAME`). Only this thread moves; processes it spawns start there.
pub(crate) fn setns_net(ns: &File) -> io::Result<()> {
    // SAFETY: setns takes a valid fd (borrowed from `ns`, open for the call)
    // and a namespace type; it changes only the calling thread's namespace.
    check(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) }).map(drop)
}

/// Sends `sig` to `pid` (a negative pid names a process group). A process
/// that is already gone is not an error.
pub(crate) fn kill(pid: i32, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill has no memory arguments; any pid and signal are safe to pass.
    match check(unsafe { libc::kill(pid, sig) }) {
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        r => r.map(drop),
    }
}

/// Reaps `pid` if it has exited: `Some(raw wait status)`, `None` while it runs.
pub(crate) fn try_wait(pid: i32) -> io::Result<Option<i32>> {
    let mut status: libc::c_int = 0;
    // SAFETY: `status` is a valid, writable c_int for the duration of the call.
    let r = check(unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) })?;
    Ok((r == pid).then_some(status))
}

/// Blocks until `pid` exits and reaps it.
pub(crate) fn wait(pid: i32) -> io::Result<i32> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: as in `try_wait`.
        match check(unsafe { libc::waitpid(pid, &mut status, 0) }) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r.map(|_| status),
        }
    }
}

/// Prepares a supervised child: its own process group, every signal
/// unblocked (the mask survives exec, and the supervisor blocks the signals it
/// reads from its signalfd), and SIGKILL when the thread that spawned it dies.
/// If the parent is already gone when the child gets there, the child fails to
/// start instead of lingering.
pub fn prepare_child(cmd: &mut Command) {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    cmd.process_group(0);
    // SAFETY: the closure runs in the forked child before exec and calls only
    // sigemptyset, pthread_sigmask (sigprocmask), prctl and getppid, which are
    // async-signal-safe; it allocates nothing and touches only its own stack.
    unsafe {
        cmd.pre_exec(move || {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            let r = libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            if r != 0 {
                return Err(io::Error::from_raw_os_error(r));
            }
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0))?;
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// A file descriptor for process `pid` that polls readable once it has
/// exited (`pidfd_open(2)`, Linux 5.3): it names the process it was opened
/// for even if the pid is reused later, and works for any process, not only
/// our children.
pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags, no memory arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd == -1 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the syscall returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Signals taken out of asynchronous delivery and read from a file
/// descriptor instead, so the supervisor's loop is one `poll`.
pub(crate) struct SignalFd {
    fd: OwnedFd,
}

impl SignalFd {
    /// Blocks `signals` in the calling thread and opens a signalfd for them.
    /// The mask is inherited by children: [`prepare_child`] clears it.
    pub(crate) fn new(signals: &[libc::c_int]) -> io::Result<SignalFd> {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it fully.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t for all three calls below.
        unsafe {
            libc::sigemptyset(&mut set);
            for &s in signals {
                libc::sigaddset(&mut set, s);
            }
        }
        // SAFETY: `set` is initialised; a null old-set pointer is allowed.
        let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        // SAFETY: -1 asks for a new fd; `set` is initialised.
        let fd =
            check(unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) })?;
        // SAFETY: signalfd returned a new fd that nothing else owns.
        Ok(SignalFd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Waits until a signal is pending or `timeout` passes (`None`: forever).
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.wait_with(None, timeout).map(drop)
    }

    /// Waits until a signal is pending, `other` is readable, or `timeout`
    /// passes (`None`: forever). True if `other` is readable.
    pub(crate) fn wait_with(
        &self,
        other: Option<BorrowedFd<'_>>,
        timeout: Option<Duration>,
    ) -> io::Result<bool> {
        let ms = timeout.map_or(-1, |t| {
            // Round up so a deadline is never woken up for just before it.
            let ms = t.as_micros().div_ceil(1000);
            libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
        });
        let pollfd = |fd: libc::c_int| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let mut pfds = [
            pollfd(self.fd.as_raw_fd()),
            pollfd(other.map_or(-1, |o| o.as_raw_fd())),
        ];
        // SAFETY: `pfds` is an array of valid pollfds, as the count says (a
        // negative fd is skipped by poll).
        match check(unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) }) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
            r => r.map(|_| pfds[1].revents != 0),
        }
    }

    /// The next pending signal's number, if any.
    pub(crate) fn read(&self) -> io::Result<Option<u32>> {
        // SAFETY: signalfd_siginfo is plain data; all-zero is a valid value.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: `info` is writable for `size` bytes.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            )
        };
        if n == -1 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock {
                Ok(None)
            } else {
                Err(e)
            };
        }
        Ok((n as usize == size).then_some(info.ssi_signo))
    }
}
