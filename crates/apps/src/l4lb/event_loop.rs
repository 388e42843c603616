//! The sessions' event loop: one thread, `epoll` through mio,
//! edge-triggered, as HAProxy runs its own. It accepts, connects to a
//! backend (retries, redispatch, the connect timeout), relays
//! ([`Relay`]), times sessions out and logs each one's end; the health
//! checks and the control socket stay on the app's tokio runtime and share
//! the backends' state with it under [`L4lb`]'s lock, taken once to choose
//! a server, once when it answers and once at the end.
//!
//! What a session costs the loop: a slot of the slab (reused, with its
//! list of servers tried), an `EPOLL_CTL_ADD` per socket for reading and
//! writing at once (never modified, never deleted: closing the socket
//! takes it out of the epoll set), one timer on the [`Wheel`] (the
//! connect timeout, then the idle timeout: armed again only when it fires
//! and bytes moved since), and buffers from the pool while bytes wait to
//! be written.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use time::OffsetDateTime;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::relay::{Buffers, Ready, Relay, CLIENT, SERVER};
use super::tcplog::{TcpLog, Termination};
use super::wheel::Wheel;
use super::L4lb;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);

/// The wheel's tick and size: timers fire within 4 ms of their deadline,
/// and one turn is about 4 s.
const TICK_MS: u64 = 4;
const BUCKETS: usize = 1024;

/// After an accept failed for a reason other than an empty queue (out of
/// file descriptors), the next attempt waits this long.
const ACCEPT_RETRY_MS: u64 = 50;

/// What `serve` asks of the loop: run, stop accepting and end after the
/// grace, or kill every session now.
struct Control {
    state: AtomicU8,
    waker: Waker,
}

const RUN: u8 = 0;
const STOP: u8 = 1;
const KILL: u8 = 2;

impl Control {
    fn set(&self, state: u8) {
        self.state.fetch_max(state, Ordering::Relaxed);
        if let Err(e) = self.waker.wake() {
            warn!(error = %e, "waking the l4lb's event loop");
        }
    }
}

/// The loop's thread, seen from `serve`; dropped, it kills the sessions.
pub(super) struct Sessions {
    control: Arc<Control>,
    done: oneshot::Receiver<io::Result<()>>,
}

impl Sessions {
    /// Starts the loop on a thread of its own, serving `listener`.
    pub(super) fn spawn(lb: Arc<L4lb>, listener: std::net::TcpListener) -> io::Result<Sessions> {
        let poll = Poll::new()?;
        let control = Arc::new(Control {
            state: AtomicU8::new(RUN),
            waker: Waker::new(poll.registry(), WAKER)?,
        });
        let (done_tx, done) = oneshot::channel();
        let shared = control.clone();
        std::thread::Builder::new()
            .name("l4lb".into())
            .spawn(move || {
                let _ = done_tx.send(Loop::run(lb, poll, listener, &shared));
            })?;
        Ok(Sessions { control, done })
    }

    /// Stops accepting; live sessions get the grace.
    pub(super) fn stop(&self) {
        self.control.set(STOP);
    }

    /// Waits for the loop to end.
    pub(super) async fn finished(&mut self) -> io::Result<()> {
        (&mut self.done)
            .await
            .unwrap_or_else(|_| Err(io::Error::other("the l4lb's event loop panicked")))
    }
}

impl Drop for Sessions {
    fn drop(&mut self) {
        self.control.set(KILL);
    }
}

/// A slot of the slab: its generation (in the tokens of its sockets, so an
/// event for a slot's previous session is told apart), the servers its
/// session tried, and the session.
#[derive(Default)]
struct Slot {
    generation: u32,
    tried: Vec<usize>,
    session: Option<Session>,
}

struct Session {
    client: TcpStream,
    peer: SocketAddr,
    accept_date: OffsetDateTime,
    /// Accepted at, in the loop's milliseconds.
    start: u64,
    /// The server chosen, counted in its `active` until the end.
    server: Option<usize>,
    /// The connection to it: connecting until `connected`.
    stream: Option<TcpStream>,
    /// Milliseconds from accept to the server's answer.
    connected: Option<u64>,
    /// How the last failed attempt ended, if none is left.
    failure: Termination,
    relay: Relay,
    /// When a byte last moved.
    last: u64,
    /// Bytes written to the client.
    bytes_read: u64,
}

/// A socket's token: the slot, its generation and the side.
fn token(slot: usize, generation: u32, side: usize) -> Token {
    Token((u64::from(generation) << 32 | (slot as u64) << 1 | side as u64) as usize)
}

fn untoken(t: Token) -> (usize, u32, usize) {
    let t = t.0 as u64;
    (
        ((t & 0xffff_ffff) >> 1) as usize,
        (t >> 32) as u32,
        (t & 1) as usize,
    )
}

struct Loop<'a> {
    lb: Arc<L4lb>,
    poll: Poll,
    control: &'a Control,
    /// `None` once stopped.
    listener: Option<TcpListener>,
    /// The listener may hold connections: its last accept did not say
    /// `WouldBlock`.
    listener_ready: bool,
    accept_retry: Option<u64>,
    paused: bool,
    slots: Vec<Slot>,
    free: Vec<usize>,
    live: usize,
    wheel: Wheel,
    due: Vec<usize>,
    buffers: Buffers,
    epoch: Instant,
    /// The time of the events being handled, in milliseconds from `epoch`.
    now: u64,
    /// When stopped: when the grace ends.
    grace_end: Option<u64>,
}

impl Loop<'_> {
    fn run(
        lb: Arc<L4lb>,
        poll: Poll,
        listener: std::net::TcpListener,
        control: &Control,
    ) -> io::Result<()> {
        let mut listener = TcpListener::from_std(listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let mut l = Loop {
            lb,
            poll,
            control,
            listener: Some(listener),
            listener_ready: true,
            accept_retry: None,
            paused: false,
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            wheel: Wheel::new(TICK_MS, BUCKETS, 0),
            due: Vec::new(),
            buffers: Buffers::default(),
            epoch: Instant::now(),
            now: 0,
            grace_end: None,
        };
        let mut events = Events::with_capacity(1024);
        loop {
            match l.poll.poll(&mut events, l.timeout()) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            l.now = l.clock();
            for e in events.iter() {
                match e.token() {
                    LISTENER => l.listener_ready = true,
                    WAKER => {}
                    t => l.on_event(t, e),
                }
            }
            l.expire();
            l.accept();
            if l.control_says() {
                return Ok(());
            }
        }
    }

    fn clock(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// How long the next poll may wait: until the wheel's next tick, an
    /// accept retry or the grace's end.
    fn timeout(&self) -> Option<Duration> {
        let next = [self.wheel.next_tick(), self.accept_retry, self.grace_end]
            .into_iter()
            .flatten()
            .min()?;
        Some(Duration::from_millis(next.saturating_sub(self.clock())))
    }

    /// Takes connections from the listener while below `maxconn` (above,
    /// they wait in the kernel's backlog).
    fn accept(&mut self) {
        if self.accept_retry.is_some_and(|t| self.now < t) {
            return;
        }
        self.accept_retry = None;
        while self.listener_ready && self.live < self.lb.config.maxconn {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((client, peer)) => self.open(client, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.listener_ready = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    self.accept_retry = Some(self.now + ACCEPT_RETRY_MS);
                    return;
                }
            }
        }
    }

    /// A new session: counted, registered, and its first connection
    /// attempt made.
    fn open(&mut self, mut client: TcpStream, peer: SocketAddr) {
        let c = &self.lb.counters;
        c.accepted.fetch_add(1, Ordering::Relaxed);
        c.active.fetch_add(1, Ordering::Relaxed);
        self.live += 1;
        if self.live >= self.lb.config.maxconn && !self.paused {
            self.paused = true;
            c.maxconn_pauses.fetch_add(1, Ordering::Relaxed);
            debug!(
                maxconn = self.lb.config.maxconn,
                "maxconn reached: accepting paused"
            );
        }
        // Looked at once: a listener from `bind` hands every connection
        // over with Nagle off already.
        if !*self
            .lb
            .nodelay_inherited
            .get_or_init(|| client.nodelay().unwrap_or(false))
        {
            let _ = client.set_nodelay(true);
        }
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot::default());
            self.slots.len() - 1
        });
        let s = &mut self.slots[slot];
        s.generation = s.generation.wrapping_add(1).max(1);
        s.tried.clear();
        let registered = self.poll.registry().register(
            &mut client,
            token(slot, s.generation, CLIENT),
            Interest::READABLE | Interest::WRITABLE,
        );
        s.session = Some(Session {
            client,
            peer,
            accept_date: OffsetDateTime::now_utc(),
            start: self.now,
            server: None,
            stream: None,
            connected: None,
            failure: Termination::ServerRefused,
            relay: Relay::default(),
            last: self.now,
            bytes_read: 0,
        });
        match registered {
            Ok(()) => self.connect(slot),
            Err(e) => {
                warn!(error = %e, "registering a client");
                self.end(slot, Termination::ClientAbort);
            }
        }
    }

    /// Makes the session's next connection attempt, on an UP server not
    /// tried yet, while retries are left; with none, the session ends.
    fn connect(&mut self, slot: usize) {
        let (retries, connect_timeout) = (
            self.lb.config.retries as usize,
            self.lb.config.connect_timeout_ms,
        );
        loop {
            let s = &mut self.slots[slot];
            if s.tried.len() > retries {
                break;
            }
            let Some(i) = self.lb.choose(&s.tried) else {
                break;
            };
            s.tried.push(i);
            let Some(session) = &mut s.session else {
                return;
            };
            session.server = Some(i);
            session.relay.ready[SERVER] = Ready::default();
            let t = token(slot, s.generation, SERVER);
            let attempt = TcpStream::connect(self.lb.config.backends[i]).and_then(|mut stream| {
                self.poll.registry().register(
                    &mut stream,
                    t,
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                Ok(stream)
            });
            match attempt {
                Ok(stream) => {
                    session.stream = Some(stream);
                    let deadline = self.now + connect_timeout;
                    self.wheel.arm(slot, deadline);
                    return;
                }
                Err(e) => self.connect_failed(slot, Termination::ServerRefused, &e),
            }
        }
        let failure = match &self.slots[slot].session {
            Some(session) => session.failure,
            None => return,
        };
        self.end(slot, failure);
    }

    /// Counts the session's failed attempt on its server and forgets it.
    fn connect_failed(&mut self, slot: usize, failure: Termination, error: &dyn std::fmt::Display) {
        let Some(session) = &mut self.slots[slot].session else {
            return;
        };
        let Some(i) = session.server.take() else {
            return;
        };
        session.stream = None;
        session.failure = failure;
        debug!(server = %self.lb.config.backends[i], %error, "connection to backend failed");
        self.lb
            .counters
            .connect_failures
            .fetch_add(1, Ordering::Relaxed);
        let mut pool = self.lb.pool();
        pool.servers[i].connect_failures += 1;
        pool.servers[i].active -= 1;
    }

    fn on_event(&mut self, t: Token, e: &mio::event::Event) {
        let (slot, generation, side) = untoken(t);
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        let Some(session) = s.session.as_mut().filter(|_| s.generation == generation) else {
            return;
        };
        session.relay.ready[side].on_event(
            e.is_readable(),
            e.is_writable(),
            e.is_read_closed() || e.is_error(),
            e.is_write_closed() || e.is_error(),
        );
        match session.connected {
            Some(_) => self.pump(slot),
            // What the client sends meanwhile waits in its socket.
            None if side == SERVER => self.on_connect(slot),
            None => {}
        }
    }

    /// The server's socket became writable or failed while connecting.
    fn on_connect(&mut self, slot: usize) {
        let Some(session) = &mut self.slots[slot].session else {
            return;
        };
        let (Some(stream), Some(i)) = (&session.stream, session.server) else {
            return;
        };
        // Writable and no error: connected, with no `SO_ERROR` to ask
        // (HAProxy does not ask either).
        let ready = session.relay.ready[SERVER];
        if !ready.writable() {
            return;
        }
        if ready.failed() {
            let e = match stream.take_error() {
                Ok(Some(e)) | Err(e) => e,
                Ok(None) => io::ErrorKind::ConnectionRefused.into(),
            };
            self.connect_failed(slot, Termination::ServerRefused, &e);
            return self.connect(slot);
        }
        let _ = stream.set_nodelay(true);
        self.lb.pool().servers[i].total += 1;
        session.connected = Some(self.now - session.start);
        session.last = self.now;
        let c = &self.lb.config;
        let idle = c.client_timeout_ms.min(c.server_timeout_ms);
        self.wheel.arm(slot, self.now + idle);
        self.pump(slot);
    }

    /// Moves what the session's sockets let move.
    fn pump(&mut self, slot: usize) {
        let Some(session) = &mut self.slots[slot].session else {
            return;
        };
        let (Some(stream), Some(i)) = (&mut session.stream, session.server) else {
            return;
        };
        let p = session
            .relay
            .pump([&mut session.client, stream], &mut self.buffers);
        if p.active {
            session.last = self.now;
        }
        for (k, &n) in p.written.iter().enumerate() {
            if n > 0 {
                self.lb.bytes[i][k].fetch_add(n, Ordering::Relaxed);
            }
        }
        session.bytes_read += p.written[SERVER];
        if let Some(t) = p.end {
            self.end(slot, t);
        }
    }

    /// Fires the timers due: a connect timeout tries the next server; an
    /// idle timer ends the session (`cD`/`sD`) when no byte moved for the
    /// timeout of a side it waits on (the shorter one when it waits on
    /// both, the client's on a tie), and is armed again otherwise.
    fn expire(&mut self) {
        let mut due = std::mem::take(&mut self.due);
        self.wheel.expire(self.now, &mut due);
        for &slot in &due {
            let Some(session) = &self.slots[slot].session else {
                continue;
            };
            if session.connected.is_none() {
                self.connect_failed(slot, Termination::ConnectTimeout, &"connect timeout");
                self.connect(slot);
                continue;
            }
            let c = &self.lb.config;
            let [on_client, on_server] = session.relay.waits_on();
            let quiet = self.now - session.last;
            if on_client && quiet >= c.client_timeout_ms {
                self.end(slot, Termination::ClientTimeout);
            } else if on_server && quiet >= c.server_timeout_ms {
                self.end(slot, Termination::ServerTimeout);
            } else {
                let next = match (on_client, on_server) {
                    (true, false) => c.client_timeout_ms,
                    (false, true) => c.server_timeout_ms,
                    _ => c.client_timeout_ms.min(c.server_timeout_ms),
                };
                self.wheel.arm(slot, session.last + next);
            }
        }
        due.clear();
        self.due = due;
    }

    /// Ends a session: closes both sockets (which takes them out of the
    /// epoll set), counts it, logs its tcplog line and frees its slot.
    fn end(&mut self, slot: usize, termination: Termination) {
        let Some(mut session) = self.slots[slot].session.take() else {
            return;
        };
        drop((session.client, session.stream.take()));
        self.wheel.disarm(slot);
        session.relay.release(&mut self.buffers);
        let c = &self.lb.counters;
        match termination {
            Termination::ClientTimeout => c.client_timeouts.fetch_add(1, Ordering::Relaxed),
            Termination::ServerTimeout => c.server_timeouts.fetch_add(1, Ordering::Relaxed),
            Termination::ServerRefused | Termination::ConnectTimeout => {
                c.no_backend.fetch_add(1, Ordering::Relaxed)
            }
            _ => 0,
        };
        let logged = session.connected.and(session.server);
        let (beconn, srv_conn) = {
            let mut pool = self.lb.pool();
            let beconn = pool.servers.iter().map(|s| s.active).sum();
            let srv_conn = logged.map_or(0, |i| pool.servers[i].active);
            if let Some(i) = session.server {
                pool.servers[i].active -= 1;
            }
            (beconn, srv_conn)
        };
        let feconn = c.active.load(Ordering::Relaxed);
        let s = &self.slots[slot];
        info!(
            "{}",
            TcpLog {
                client: session.peer,
                accept_date: session.accept_date,
                frontend: &self.lb.name,
                backend: &self.lb.config.backend_name,
                server: logged.map(|i| self.lb.config.backends[i]),
                connect: session.connected.map(Duration::from_millis),
                total: Duration::from_millis(self.now - session.start),
                bytes_read: session.bytes_read,
                termination,
                actconn: feconn,
                feconn,
                beconn,
                srv_conn,
                retries: s.tried.len().saturating_sub(1) as u32,
            }
        );
        c.active.fetch_sub(1, Ordering::Relaxed);
        self.live -= 1;
        if self.live < self.lb.config.maxconn {
            self.paused = false;
        }
        self.free.push(slot);
    }

    /// Acts on `serve`'s word; answers whether the loop is over.
    fn control_says(&mut self) -> bool {
        let state = self.control.state.load(Ordering::Relaxed);
        if state >= STOP && self.listener.is_some() {
            self.listener = None;
            self.grace_end = Some(self.now + self.lb.config.shutdown_grace_ms);
            info!(live = self.live, "l4lb stopped accepting");
        }
        let over = match self.grace_end {
            Some(end) => self.live == 0 || self.now >= end || state == KILL,
            None => state == KILL,
        };
        if over {
            for slot in 0..self.slots.len() {
                self.end(slot, Termination::Killed);
            }
        }
        over
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_gives_back_its_slot_generation_and_side() {
        for (slot, generation, side) in
            [(0, 1, CLIENT), (7, u32::MAX, SERVER), (1 << 30, 3, CLIENT)]
        {
            let t = token(slot, generation, side);
            assert!(t != LISTENER && t != WAKER);
            assert_eq!(untoken(t), (slot, generation, side));
        }
    }
}
