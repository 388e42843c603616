//! `role = "echo"`: a test-only element with one addressed port that
//! answers UDP on port 7 and TCP on port 7 with what it got (RFC 862), both
//! through the shared IP layer: the whole of adding a role is this file and
//! one `.with::<Echo>()` where the test builds its registry.

use d11_core::l3::{TcpHandle, TcpState, UdpHandle};
use d11_core::settings::{ConfigError, NoSettings};
use d11_core::{AnyElement, Ctx, Element, Input, Instant, Outbox, PortId, L3};
use d11_elements::role::{Addressing, ElementNode, Role, RoleInfo};
use std::net::SocketAddrV4;

/// The echo service's port [RFC 862].
pub const PORT: u16 = 7;

pub struct Echo {
    l3: L3,
    udp: UdpHandle,
    /// The socket listening or connected now; a new listener follows each
    /// connection (smoltcp's sockets take one connection each).
    tcp: Option<TcpHandle>,
    local: SocketAddrV4,
    /// Bytes echoed over TCP, for the test.
    pub echoed: usize,
}

impl Role for Echo {
    const INFO: RoleInfo = RoleInfo {
        name: "echo",
        summary: "test only: UDP and TCP echo on port 7 of its one address",
        addressing: Addressing::All,
        bridges: false,
        isolates_tenants: false,
        routes: false,
    };
    type Settings = NoSettings;
    fn build(node: &ElementNode, _: NoSettings) -> Result<Box<dyn AnyElement>, ConfigError> {
        let mut l3 = L3::with_ports(node.l3_ports()?);
        for r in &node.routes {
            l3.add_route(r.to, r.via, d11_core::l3::RouteSource::Static)
                .map_err(|e| ConfigError::new("routes", e.to_string()))?;
        }
        let addr = l3.port(PortId(0)).expect("one port").address.addr();
        let udp = l3.udp_bind(None, PORT).expect("a fresh table");
        Ok(Box::new(Echo {
            l3,
            udp,
            tcp: None,
            local: SocketAddrV4::new(addr, PORT),
            echoed: 0,
        }))
    }
}

impl Echo {
    /// Answers what the sockets hold, then lets the layer send it.
    fn serve(&mut self, cx: &mut Ctx, out: &mut Outbox) {
        while let Some(d) = self.l3.udp_recv(self.udp) {
            self.l3.udp_send(cx, d.to, d.from, &d.payload, out);
        }
        let local = self.local;
        let tcp = self.l3.tcp_stack(cx);
        let h = match self.tcp {
            Some(h) => h,
            None => {
                let h = tcp
                    .listen(local, d11_core::l3::tcp::DEFAULT_BUFFER)
                    .expect("a fresh socket listens");
                self.tcp = Some(h);
                h
            }
        };
        let s = tcp.socket(h);
        let mut buf = [0u8; 2048];
        while s.can_recv() && s.can_send() {
            let n = s.recv_slice(&mut buf).unwrap_or(0);
            let sent = s.send_slice(&buf[..n]).unwrap_or(0);
            self.echoed += sent;
        }
        if s.state() == TcpState::CloseWait {
            s.close();
        }
        if s.state() == TcpState::Closed {
            tcp.remove(h);
            self.tcp = None;
        }
        self.l3.poll(cx, out);
    }
}

impl Element for Echo {
    fn on_frame(&mut self, cx: &mut Ctx, port: PortId, frame: &[u8], out: &mut Outbox) {
        match self.l3.input(cx, port, frame, out) {
            Input::Done => {}
            Input::Transit(_) | Input::Local(_) | Input::Tunnel { .. } => {
                out.drop_frame(port, d11_core::DropReason::NotForUs)
            }
        }
        self.serve(cx, out);
    }

    fn on_timer(&mut self, cx: &mut Ctx, out: &mut Outbox) {
        self.l3.on_timer(cx, out);
        self.serve(cx, out);
    }

    fn poll_at(&self) -> Option<Instant> {
        // Before the first frame, once: to open the listener.
        match self.tcp {
            None => Some(Instant::ZERO),
            Some(_) => self.l3.poll_at(),
        }
    }
}
