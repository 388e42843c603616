//! The element's TCP: smoltcp's `Interface` with this layer as its IP
//! device, so that BGP and Diameter run in the element on its own
//! addresses, never on the kernel's stack of its namespace.
//!
//! Read smoltcp's `iface::Interface` and `socket::tcp` first (RFC 9293 as
//! smoltcp implements it). The device is `Medium::Ip`: smoltcp hands over
//! IP packets and [`super::L3`] routes them (FIB, ARP, the outbox) like
//! anything else the element sends, so there is one ARP cache per element.
//! Segments to a port no socket listens on are answered with a reset by
//! smoltcp, as RFC 9293 § 3.10.7.1 asks of a closed port.

use super::SocketRow;
use crate::Instant;
use d11_wire::Ipv4Cidr;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint};
use std::collections::VecDeque;
use std::net::SocketAddrV4;

pub use smoltcp::socket::tcp::{ConnectError, ListenError, Socket as TcpSocket, State as TcpState};

/// Each socket's receive and send buffer, unless the caller asks for other sizes.
pub const DEFAULT_BUFFER: usize = 64 * 1024;

/// The most IP packets queued towards smoltcp between two polls.
const RX_QUEUE: usize = 512;

/// A TCP socket of the element.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub struct TcpHandle(SocketHandle);

/// smoltcp's device: packets in from the layer, packets out to it.
#[derive(Debug, Default)]
struct Queue {
    /// The IP MTU segments are sized for.
    mtu: usize,
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
    /// Buffers of sent packets, reused.
    spare: Vec<Vec<u8>>,
}

impl Device for Queue {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: SmolInstant) -> Option<(RxToken, TxToken<'_>)> {
        let pkt = self.rx.pop_front()?;
        Some((RxToken(pkt), TxToken(self)))
    }

    fn transmit(&mut self, _: SmolInstant) -> Option<TxToken<'_>> {
        Some(TxToken(self))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}

struct RxToken(Vec<u8>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

struct TxToken<'a>(&'a mut Queue);

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut pkt = self.0.spare.pop().unwrap_or_default();
        pkt.clear();
        pkt.resize(len, 0);
        let r = f(&mut pkt);
        self.0.tx.push(pkt);
        r
    }
}

fn smol(now: Instant) -> SmolInstant {
    SmolInstant::from_micros(now.total_micros() as i64)
}

fn endpoint(a: SocketAddrV4) -> IpEndpoint {
    IpEndpoint::new(IpAddress::Ipv4(*a.ip()), a.port())
}

/// One element's TCP stack.
pub struct TcpStack {
    iface: Interface,
    sockets: SocketSet<'static>,
    dev: Queue,
    /// When smoltcp next wants to be polled, as of the last poll.
    next: Option<Instant>,
}

impl std::fmt::Debug for TcpStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpStack")
            .field("sockets", &self.sockets.iter().count())
            .field("next", &self.next)
            .finish()
    }
}

impl TcpStack {
    /// A stack answering on `addrs` (at most eight, smoltcp's bound),
    /// sizing segments for `mtu` (its smallest port's), whose initial
    /// sequence numbers come from `seed`.
    pub fn new(addrs: &[Ipv4Cidr], mtu: u16, seed: u64, now: Instant) -> TcpStack {
        let mut dev = Queue {
            mtu: usize::from(mtu),
            ..Queue::default()
        };
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = seed;
        let mut iface = Interface::new(config, &mut dev, smol(now));
        iface.update_ip_addrs(|a| {
            for c in addrs {
                let cidr = IpCidr::new(IpAddress::Ipv4(c.addr()), c.prefix_len());
                if a.push(cidr).is_err() {
                    tracing::warn!(address = %c, "more addresses than the TCP stack holds");
                }
            }
        });
        // Anything not on a connected subnet is the layer's to route: a
        // default route makes smoltcp send it (Medium::Ip has no neighbours).
        if let Some(c) = addrs.first() {
            let _ = iface.routes_mut().add_default_ipv4_route(c.addr());
        }
        TcpStack {
            iface,
            sockets: SocketSet::new(Vec::new()),
            dev,
            next: None,
        }
    }

    /// Queues a TCP segment (a whole IPv4 packet) for the next poll.
    pub(super) fn receive(&mut self, pkt: &[u8]) {
        if self.dev.rx.len() < RX_QUEUE {
            self.dev.rx.push_back(pkt.to_vec());
        }
        self.next = Some(Instant::ZERO);
    }

    /// Runs smoltcp at `now`; returns the IP packets it sends.
    pub(super) fn poll(&mut self, now: Instant) -> Vec<Vec<u8>> {
        let t = smol(now);
        self.iface.poll(t, &mut self.dev, &mut self.sockets);
        self.next = self
            .iface
            .poll_at(t, &self.sockets)
            .map(|at| Instant::from_micros(at.total_micros().max(0) as u64));
        std::mem::take(&mut self.dev.tx)
    }

    /// Gives a sent packet's buffer back for reuse.
    pub(super) fn recycle(&mut self, pkt: Vec<u8>) {
        if self.dev.spare.len() < 64 {
            self.dev.spare.push(pkt);
        }
    }

    pub(super) fn poll_at(&self) -> Option<Instant> {
        self.next
    }

    pub(super) fn due(&self, now: Instant) -> bool {
        self.next.is_some_and(|t| t <= now)
    }

    fn add(&mut self, buffer: usize) -> TcpHandle {
        let s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; buffer]),
            tcp::SocketBuffer::new(vec![0; buffer]),
        );
        TcpHandle(self.sockets.add(s))
    }

    /// A socket listening on `local` (one connection: open another
    /// listener for the next, as smoltcp's sockets go).
    pub fn listen(&mut self, local: SocketAddrV4, buffer: usize) -> Result<TcpHandle, ListenError> {
        let h = self.add(buffer);
        self.socket(h).listen(endpoint(local))?;
        self.next = Some(Instant::ZERO);
        Ok(h)
    }

    /// A socket connecting from `local` to `remote`.
    pub fn connect(
        &mut self,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        buffer: usize,
    ) -> Result<TcpHandle, ConnectError> {
        let h = self.add(buffer);
        let cx = self.iface.context();
        self.sockets
            .get_mut::<tcp::Socket>(h.0)
            .connect(cx, endpoint(remote), endpoint(local))?;
        self.next = Some(Instant::ZERO);
        Ok(h)
    }

    /// The socket, to read, write, close or ask its state. Call
    /// [`super::L3::poll`] after writing so that its segments leave.
    pub fn socket(&mut self, h: TcpHandle) -> &mut TcpSocket<'static> {
        self.next = Some(Instant::ZERO);
        self.sockets.get_mut::<tcp::Socket>(h.0)
    }

    /// The far end of a socket that has one (connected, or a listener that
    /// took a SYN).
    pub fn remote(&self, h: TcpHandle) -> Option<SocketAddrV4> {
        let e = self.sockets.get::<tcp::Socket>(h.0).remote_endpoint()?;
        match e.addr {
            IpAddress::Ipv4(a) => Some(SocketAddrV4::new(a, e.port)),
        }
    }

    /// Bytes a socket holds that the far end has not acknowledged yet.
    pub fn unacked(&self, h: TcpHandle) -> usize {
        self.sockets.get::<tcp::Socket>(h.0).send_queue()
    }

    /// Forgets a closed socket.
    pub fn remove(&mut self, h: TcpHandle) {
        self.sockets.remove(h.0);
    }

    pub(super) fn report(&self) -> Vec<SocketRow> {
        self.sockets
            .iter()
            .filter_map(|(_, s)| match s {
                smoltcp::socket::Socket::Tcp(s) => Some(SocketRow {
                    proto: "tcp".into(),
                    local: s
                        .local_endpoint()
                        .map_or_else(|| s.listen_endpoint().to_string(), |e| e.to_string()),
                    remote: s.remote_endpoint().map(|e| e.to_string()),
                    state: rfc_state(s.state()).into(),
                }),
                #[allow(unreachable_patterns)]
                _ => None,
            })
            .collect()
    }
}

/// The state's name as RFC 9293 § 3.3.2 writes it.
pub fn rfc_state(s: TcpState) -> &'static str {
    match s {
        TcpState::Closed => "CLOSED",
        TcpState::Listen => "LISTEN",
        TcpState::SynSent => "SYN-SENT",
        TcpState::SynReceived => "SYN-RECEIVED",
        TcpState::Established => "ESTABLISHED",
        TcpState::FinWait1 => "FIN-WAIT-1",
        TcpState::FinWait2 => "FIN-WAIT-2",
        TcpState::CloseWait => "CLOSE-WAIT",
        TcpState::Closing => "CLOSING",
        TcpState::LastAck => "LAST-ACK",
        TcpState::TimeWait => "TIME-WAIT",
    }
}
