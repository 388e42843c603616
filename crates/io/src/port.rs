//! One port of an element: an AF_PACKET socket on a veth end (a cable to
//! another element or a kernel peer) or a host's TAP (a radio, a vNIC).

use crate::packet::PacketSocket;
use crate::tap::Tap;
use crate::IoError;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

/// How to open a port, as the supervisor describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum PortAttach {
    /// The interface `ifname` of the element's own namespace.
    Packet { ifname: String },
    /// The TAP `ifname` living in the host namespace `netns`.
    Tap { netns: String, ifname: String },
}

impl fmt::Display for PortAttach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortAttach::Packet { ifname } => write!(f, "packet {ifname}"),
            PortAttach::Tap { netns, ifname } => write!(f, "tap {netns}/{ifname}"),
        }
    }
}

/// An open port.
pub enum Port {
    Packet(PacketSocket),
    Tap(Tap),
}

impl Port {
    pub fn open(attach: &PortAttach) -> Result<Port, IoError> {
        Ok(match attach {
            PortAttach::Packet { ifname } => Port::Packet(PacketSocket::open(ifname)?),
            PortAttach::Tap { netns, ifname } => Port::Tap(Tap::open(netns, ifname)?),
        })
    }

    /// Receives one frame into `buf`; `None` when nothing is waiting. The
    /// length is the frame's true one: more than `buf.len()` means the frame
    /// was truncated (AF_PACKET only; a TAP read just cuts).
    pub fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match self {
            Port::Packet(s) => Ok(s.recv_frame(buf)?.map(|m| m.len)),
            Port::Tap(t) => t.recv(buf),
        }
    }

    /// Sends one whole Ethernet frame.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        match self {
            Port::Packet(s) => s.send(frame),
            Port::Tap(t) => t.send(frame),
        }
    }
}

impl AsRawFd for Port {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Port::Packet(s) => s.as_raw_fd(),
            Port::Tap(t) => t.as_raw_fd(),
        }
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Port::Packet(s) => write!(f, "packet {}", s.ifname()),
            Port::Tap(t) => write!(f, "tap {}/{}", t.netns(), t.ifname()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_descriptions_read_as_tagged_json() {
        let a: PortAttach =
            serde_json::from_str(r#"{"kind":"tap","netns":"d11-ue","ifname":"eth0"}"#).unwrap();
        assert_eq!(a.to_string(), "tap d11-ue/eth0");
        let p = PortAttach::Packet {
            ifname: "s5".into(),
        };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"kind":"packet","ifname":"s5"}"#
        );
    }
}
