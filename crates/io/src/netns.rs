//! Entering a named network namespace for the current thread and coming back.
//!
//! `ip netns add NAME` bind-mounts a namespace at `/run/netns/NAME`;
//! setns(2) with `CLONE_NEWNET` moves only the calling thread into it, so a
//! socket or TAP opened there stays in that namespace after the thread
//! returns (namespaces(7), ip-netns(8)). The original namespace is held open
//! from `/proc/thread-self/ns/net` so the way back cannot disappear.

use crate::sys::cvt;
use crate::IoError;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// The current thread is inside another network namespace until this guard
/// is dropped (or [`NetnsGuard::leave`] is called).
#[must_use = "the thread returns to its namespace when the guard is dropped"]
pub struct NetnsGuard {
    original: Option<File>,
    name: String,
}

impl NetnsGuard {
    /// Moves the current thread into the namespace `/run/netns/NAME`.
    pub fn enter(name: &str) -> Result<NetnsGuard, IoError> {
        let here = Path::new("/proc/thread-self/ns/net");
        let original = File::open(here).map_err(|source| IoError::NetnsOpen {
            name: name.to_string(),
            path: here.to_path_buf(),
            source,
        })?;
        let path = PathBuf::from(NETNS_DIR).join(name);
        let target = File::open(&path).map_err(|source| IoError::NetnsOpen {
            name: name.to_string(),
            path,
            source,
        })?;
        setns(&target).map_err(|source| IoError::NetnsEnter {
            name: name.to_string(),
            source,
        })?;
        Ok(NetnsGuard {
            original: Some(original),
            name: name.to_string(),
        })
    }

    /// Returns to the original namespace, reporting a failure instead of
    /// panicking as the drop would.
    pub fn leave(mut self) -> Result<(), IoError> {
        self.restore()
    }

    fn restore(&mut self) -> Result<(), IoError> {
        match self.original.take() {
            Some(f) => setns(&f).map_err(|source| IoError::NetnsLeave {
                name: self.name.clone(),
                source,
            }),
            None => Ok(()),
        }
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        // A thread left in the wrong namespace would silently open every
        // later socket there; stopping is the only safe answer.
        if let Err(e) = self.restore() {
            panic!("{e}");
        }
    }
}

/// Runs `f` with the current thread inside namespace `name`, then returns
/// (also when `f` panics).
pub fn with_netns<T>(name: &str, f: impl FnOnce() -> T) -> Result<T, IoError> {
    let guard = NetnsGuard::enter(name)?;
    let r = f();
    guard.leave()?;
    Ok(r)
}

fn setns(ns: &File) -> std::io::Result<()> {
    // SAFETY: `ns` is an open namespace file for the duration of the call.
    cvt(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) }).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_namespace_is_named_in_the_error() {
        let e = match NetnsGuard::enter("d11-no-such-netns") {
            Err(e) => e.to_string(),
            Ok(_) => panic!("entered a namespace that does not exist"),
        };
        assert!(e.contains("d11-no-such-netns"), "{e}");
        assert!(e.contains("/run/netns/d11-no-such-netns"), "{e}");
    }
}
