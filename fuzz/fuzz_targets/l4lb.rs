//! The l4lb's request handling (crates/apps/src/l4lb.rs) on arbitrary
//! input. The l4lb parses nothing of its sessions' bytes (it is L4: TLS
//! passes through), so what a hostile client or server controls is the
//! bytes and the order of writes, half-closes and aborts on either side.
//! The fuzzer scripts those on in-memory pipes around the sessions' own
//! `Relay` (the state machine the event loop drives), pumped after every
//! step as the loop pumps it after every event, and checks: never a panic
//! or a hang; with no abort the session ends normally (`--`) with every
//! byte delivered, in order, each way, and the meters counting exactly
//! those; with an abort each side got a prefix of what the other sent. The
//! rest of the input is tried as the l4lb's JSON config (the topology's
//! `config` table): parsed, validated, and if valid a balancer built and
//! its status read.
#![no_main]
use d11_apps::l4lb::{
    Buffers, L4lb, L4lbConfig, Relay, Ready, Socket, Termination, CLIENT, SERVER,
};
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::rc::Rc;

/// One way of an in-memory connection: the bytes in flight (at most
/// `cap`), its writer's end of stream, and whether the connection was
/// reset.
#[derive(Default)]
struct Way {
    bytes: VecDeque<u8>,
    cap: usize,
    fin: bool,
    reset: bool,
}

type Shared = Rc<RefCell<Way>>;

/// The balancer's end of a connection: it reads `inbound`, writes
/// `outbound`, and neither waits (`WouldBlock`).
struct LbEnd {
    inbound: Shared,
    outbound: Shared,
}

impl Read for LbEnd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut way = self.inbound.borrow_mut();
        if way.reset {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        if way.bytes.is_empty() {
            return if way.fin { Ok(0) } else { Err(io::ErrorKind::WouldBlock.into()) };
        }
        let n = way.bytes.len().min(buf.len());
        for (b, x) in buf.iter_mut().zip(way.bytes.drain(..n)) {
            *b = x;
        }
        Ok(n)
    }
}

impl Write for LbEnd {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut way = self.outbound.borrow_mut();
        if way.reset || way.fin {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let n = buf.len().min(way.cap - way.bytes.len());
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        way.bytes.extend(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Socket for LbEnd {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.outbound.borrow_mut().fin = true;
        Ok(())
    }
}

/// The other end, the script's: what it sent and what it received.
struct End {
    to_lb: Shared,
    from_lb: Shared,
    sent: Vec<u8>,
    received: Vec<u8>,
    aborted: bool,
}

/// A connection of `cap` bytes each way: the script's end and the
/// balancer's.
fn connection(cap: usize) -> (End, LbEnd) {
    let way = || Rc::new(RefCell::new(Way { cap, ..Way::default() }));
    let (to_lb, from_lb) = (way(), way());
    let lb = LbEnd { inbound: to_lb.clone(), outbound: from_lb.clone() };
    (End { to_lb, from_lb, sent: vec![], received: vec![], aborted: false }, lb)
}

impl End {
    /// Sends what fits; refused once it shut its side or aborted.
    fn send(&mut self, bytes: &[u8]) {
        let mut way = self.to_lb.borrow_mut();
        if way.fin || way.reset {
            return;
        }
        let n = bytes.len().min(way.cap - way.bytes.len());
        way.bytes.extend(&bytes[..n]);
        self.sent.extend_from_slice(&bytes[..n]);
    }

    fn shutdown(&mut self) {
        self.to_lb.borrow_mut().fin = true;
    }

    /// Gone without a goodbye: a reset both ways.
    fn abort(&mut self) {
        self.to_lb.borrow_mut().reset = true;
        self.from_lb.borrow_mut().reset = true;
        self.aborted = true;
    }

    /// Reads what the balancer wrote; answers whether there was any.
    fn drain(&mut self) -> bool {
        if self.aborted {
            return false;
        }
        let mut way = self.from_lb.borrow_mut();
        let any = !way.bytes.is_empty();
        self.received.extend(way.bytes.drain(..));
        any
    }
}

struct Session {
    relay: Relay,
    lb: [LbEnd; 2],
    buffers: Buffers,
    written: [u64; 2],
    end: Option<Termination>,
}

impl Session {
    /// Pumps as the event loop does after an event; answers whether
    /// anything moved.
    fn pump(&mut self) -> bool {
        if self.end.is_some() {
            return false;
        }
        let [c, s] = &mut self.lb;
        let p = self.relay.pump([c, s], &mut self.buffers);
        for k in [CLIENT, SERVER] {
            self.written[k] += p.written[k];
        }
        self.end = p.end;
        p.active || p.end.is_some()
    }
}

fn script(data: &[u8]) {
    // Small pipes, so backpressure and partial writes happen.
    let cap = usize::from(data.first().copied().unwrap_or(0) % 64) + 1;
    let (mut client, client_lb) = connection(cap);
    let (mut server, server_lb) = connection(cap);
    let mut relay = Relay::default();
    relay.ready = [Ready::ALL; 2];
    let mut session =
        Session { relay, lb: [client_lb, server_lb], buffers: Buffers::default(), written: [0; 2], end: None };
    let mut ops = data.get(1..).unwrap_or_default();
    while let Some((&op, rest)) = ops.split_first() {
        ops = rest;
        match op % 8 {
            0..=2 => {
                let n = ops.len().min(usize::from(op >> 3) + 1);
                let (bytes, rest) = ops.split_at(n);
                ops = rest;
                let end = if op % 8 == 2 { &mut server } else { &mut client };
                end.send(bytes);
            }
            3 => client.shutdown(),
            4 => server.shutdown(),
            5 if op & 0x80 != 0 => client.abort(),
            6 if op & 0x80 != 0 => server.abort(),
            // Neither side reads but on 7: writes back up meanwhile.
            5 | 6 => {}
            _ => {
                client.drain();
                server.drain();
            }
        }
        session.pump();
    }
    client.shutdown();
    server.shutdown();
    // Each round moves a byte at least, or the relay has nothing left.
    let mut rounds = 0;
    while session.pump() | client.drain() | server.drain() {
        rounds += 1;
        assert!(rounds < 1_000_000, "a hang");
    }
    let termination = session.end.expect("the session ended once both sides closed");
    let (to_server, to_client) = (&server.received, &client.received);
    assert!(client.sent.starts_with(to_server), "the server got what the client sent, in order");
    assert!(server.sent.starts_with(to_client), "the client got what the server sent, in order");
    let [up, down] = session.written;
    assert!(up >= to_server.len() as u64 && down >= to_client.len() as u64);
    assert!(up <= client.sent.len() as u64 && down <= server.sent.len() as u64);
    if !client.aborted && !server.aborted {
        assert_eq!(termination, Termination::Normal);
        assert_eq!(to_server, &client.sent);
        assert_eq!(to_client, &server.sent);
        assert_eq!((up, down), (client.sent.len() as u64, server.sent.len() as u64));
    } else {
        assert!(
            matches!(termination, Termination::Normal | Termination::ClientAbort | Termination::ServerAbort),
            "{termination:?}"
        );
    }
}

fn config(data: &[u8]) {
    let Ok(c) = serde_json::from_slice::<L4lbConfig>(data) else { return };
    if c.validate().is_ok() && c.backends.len() <= 64 {
        let lb = L4lb::new("vm-lb", c);
        let _ = serde_json::to_string(&lb.status());
    }
}

fuzz_target!(|data: &[u8]| {
    script(data);
    config(data);
});
