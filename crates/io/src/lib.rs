//! The I/O of the double11 lab, and the only crate with `unsafe`.
//!
//! An element is a pure state machine (`d11_core::Element`); this crate gives
//! it real wires and runs it:
//!
//! * [`netns`]: enter a named network namespace for the current thread and come back;
//! * [`tap`]: hold a host's TAP device that lives in another namespace;
//! * [`packet`]: an AF_PACKET socket on a veth end, checksums completed;
//! * [`port`]: either of the two behind one [`Port`], opened from a [`PortAttach`];
//! * [`driver`]: the epoll loop calling the element, with counters and clean shutdown;
//! * [`control`]: the per-process control socket (`status`, `ping`, `impair`) and its client;
//! * `impair`: the driver's wire impairments and their delay queue;
//! * [`capture`]: every wire into one pcapng, one named interface per wire;
//! * [`udp`]: datagrams in batches (recvmmsg/sendmmsg) for the lab's UDP servers.
//!
//! Everything is synchronous, on one thread, with non-blocking fds and epoll.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod capture;
pub mod control;
pub mod driver;
mod error;
mod impair;
pub mod netns;
pub mod packet;
pub mod port;
mod sys;
pub mod tap;
pub mod udp;

pub use capture::{stop_on_signals, Capture, CapturePoint, CaptureStats};
pub use control::{ask, query, status, table, ControlServer};
pub use driver::{run, run_impaired};
pub use error::IoError;
pub use netns::{with_netns, NetnsGuard};
pub use packet::{PacketSocket, RecvMeta};
pub use port::{Port, PortAttach};
pub use tap::Tap;

/// True when this process runs as root (what building a lab needs).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Restores the default SIGPIPE action (Rust ignores it), so `d11 status |
/// head` ends quietly when `head` stops reading, like any Unix tool.
pub fn default_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_DFL has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
