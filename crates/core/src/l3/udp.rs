//! The element's UDP sockets: a small table from (address, port) to a
//! bounded queue of datagrams, which a control plane (GTPv2-C on 2123, a
//! DNS or BFD speaker) drains. Sans-IO: [`super::L3`] fills the queues
//! from what it receives and sends what the control plane gives it.

use super::SocketRow;
use crate::PortId;
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};

/// Datagrams one socket holds before new ones are dropped.
pub const QUEUE: usize = 256;

/// A bound socket.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub struct UdpHandle(usize);

/// The port is already bound on that address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("UDP port {port} is already bound")]
pub struct AddrInUse {
    pub port: u16,
}

/// One datagram received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// The port it arrived on.
    pub port: PortId,
    pub from: SocketAddrV4,
    /// Our address and port it was sent to.
    pub to: SocketAddrV4,
    pub payload: Vec<u8>,
}

#[derive(Debug)]
struct Socket {
    addr: Option<Ipv4Addr>,
    port: u16,
    queue: VecDeque<Datagram>,
}

/// What became of a datagram offered to the table.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivered {
    Queued,
    /// The socket's queue is full: dropped.
    QueueFull,
    /// Nobody is bound there.
    NoSocket,
}

/// The table of bound sockets.
#[derive(Debug, Default)]
pub struct UdpSockets {
    sockets: Vec<Socket>,
}

impl UdpSockets {
    pub fn bind(&mut self, addr: Option<Ipv4Addr>, port: u16) -> Result<UdpHandle, AddrInUse> {
        let clash = self
            .sockets
            .iter()
            .any(|s| s.port == port && (s.addr.is_none() || addr.is_none() || s.addr == addr));
        if clash {
            return Err(AddrInUse { port });
        }
        self.sockets.push(Socket {
            addr,
            port,
            queue: VecDeque::new(),
        });
        Ok(UdpHandle(self.sockets.len() - 1))
    }

    /// True if a socket would take a datagram to `addr:port`.
    pub fn is_bound(&self, addr: Ipv4Addr, port: u16) -> bool {
        self.sockets
            .iter()
            .any(|s| s.port == port && s.addr.is_none_or(|a| a == addr))
    }

    /// Queues `d` on the socket bound to its destination (an exact
    /// address before the wildcard).
    pub fn deliver(&mut self, d: Datagram) -> Delivered {
        let to = d.to;
        let found = self
            .sockets
            .iter()
            .position(|s| s.port == to.port() && s.addr == Some(*to.ip()))
            .or_else(|| {
                self.sockets
                    .iter()
                    .position(|s| s.port == to.port() && s.addr.is_none())
            });
        let Some(i) = found else {
            return Delivered::NoSocket;
        };
        let q = &mut self.sockets[i].queue;
        if q.len() >= QUEUE {
            return Delivered::QueueFull;
        }
        q.push_back(d);
        Delivered::Queued
    }

    pub fn recv(&mut self, h: UdpHandle) -> Option<Datagram> {
        self.sockets.get_mut(h.0)?.queue.pop_front()
    }

    pub fn report(&self) -> Vec<SocketRow> {
        self.sockets
            .iter()
            .map(|s| SocketRow {
                proto: "udp".into(),
                local: format!("{}:{}", s.addr.unwrap_or(Ipv4Addr::UNSPECIFIED), s.port),
                remote: None,
                state: format!("{} queued", s.queue.len()),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(to: &str) -> Datagram {
        Datagram {
            port: PortId(0),
            from: "192.0.2.9:5000".parse().unwrap(),
            to: to.parse().unwrap(),
            payload: b"x".to_vec(),
        }
    }

    #[test]
    fn an_exact_binding_wins_over_the_wildcard_and_clashes_are_refused() {
        let mut t = UdpSockets::default();
        let any = t.bind(None, 2123).unwrap();
        assert_eq!(
            t.bind(Some("192.0.2.1".parse().unwrap()), 2123),
            Err(AddrInUse { port: 2123 })
        );
        let mut t2 = UdpSockets::default();
        let one = t2.bind(Some("192.0.2.1".parse().unwrap()), 53).unwrap();
        let two = t2.bind(Some("192.0.2.5".parse().unwrap()), 53).unwrap();
        assert_eq!(t2.deliver(d("192.0.2.5:53")), Delivered::Queued);
        assert_eq!(t2.recv(one), None);
        assert_eq!(t2.recv(two).unwrap().to.ip().octets()[3], 5);
        assert_eq!(t.deliver(d("192.0.2.1:2123")), Delivered::Queued);
        assert!(t.recv(any).is_some());
        assert_eq!(t.deliver(d("192.0.2.1:2124")), Delivered::NoSocket);
    }

    #[test]
    fn a_full_queue_drops_new_datagrams() {
        let mut t = UdpSockets::default();
        let h = t.bind(None, 7).unwrap();
        for _ in 0..QUEUE {
            assert_eq!(t.deliver(d("192.0.2.1:7")), Delivered::Queued);
        }
        assert_eq!(t.deliver(d("192.0.2.1:7")), Delivered::QueueFull);
        assert!(t.recv(h).is_some());
        assert_eq!(t.deliver(d("192.0.2.1:7")), Delivered::Queued);
    }
}
