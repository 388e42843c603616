//! The sans-IO contract every double11 element follows.
//!
//! An [`Element`] is a pure state machine: frames and time go in, frames to
//! send and drops with their reasons come out in an [`Outbox`]. It never reads
//! a clock, a socket, a file or the environment. The same element therefore
//! runs under the real driver (`d11-io`, AF_PACKET and TAP), in the in-memory
//! simulator (`d11-sim`) and in unit tests with byte fixtures.

pub mod arp;
pub mod counters;
pub mod fib;
pub mod hash;
pub mod impair;
pub mod l3;
pub mod nat;
pub mod outbox;
pub mod pcapng;
pub mod ratelimit;
pub mod rng;
pub mod settings;
pub mod status;
pub mod time;

pub use arp::{ArpCache, ArpConfig, ArpEvent, Enqueued};
pub use counters::{Counters, DropReason, PortCounters};
pub use fib::Fib;
pub use impair::{Impairer, Impairment};
pub use l3::{Input, L3Port, L3};
pub use outbox::Outbox;
pub use ratelimit::TokenBucket;
pub use rng::Rng;
pub use settings::ConfigError;
pub use time::Instant;

use std::fmt;

/// A port of an element, numbered in the order of its configuration.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, serde::Serialize)]
pub struct PortId(pub u16);

impl PortId {
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "port{}", self.0)
    }
}

/// What an element is handed with every call besides the frame: the time
/// and a seeded generator, so that whatever it draws (a TEID, a DNS id,
/// BGP's jitter, AKA's RAND, TCP's initial sequence numbers) repeats when
/// the seed does. The real driver seeds it from the clock, the simulator
/// from its own seed.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub now: Instant,
    pub rng: Rng,
}

impl Ctx {
    pub fn new(now: Instant, seed: u64) -> Ctx {
        Ctx {
            now,
            rng: Rng::new(seed),
        }
    }

    /// The same generator at another time.
    pub fn at(&mut self, now: Instant) -> &mut Ctx {
        self.now = now;
        self
    }
}

/// A network element: frames and time in, frames and drops out.
pub trait Element {
    /// A frame arrived on `port`. Push what to send (and what was dropped) into `out`.
    fn on_frame(&mut self, cx: &mut Ctx, port: PortId, frame: &[u8], out: &mut Outbox);
    /// A deadline from [`Element::poll_at`] passed.
    fn on_timer(&mut self, cx: &mut Ctx, out: &mut Outbox);
    /// The next time the element wants [`Element::on_timer`], if any.
    fn poll_at(&self) -> Option<Instant>;
    /// The element's own tables (ARP cache, FIB, MAC table…), its role's
    /// report type as JSON: the control socket's edge, where `d11 status`,
    /// `show` and the benches read it back as that type
    /// ([`status::Status::report`]).
    fn report(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    /// One of the element's tables in full, for those whose rows its
    /// [`report`](Element::report) cuts at [`status::REPORT_ROWS`] (a
    /// router's FIB and Loc-RIB holding a whole table): the control
    /// socket's `table NAME`. `None`: it has no such table.
    fn table(&self, _name: &str) -> Option<serde_json::Value> {
        None
    }
}

/// An element that can be handed back as its concrete type (the simulator's
/// `Sim::node`, a test's look inside): what the role registry builds.
pub trait AnyElement: Element + std::any::Any {
    fn as_any(&self) -> &dyn std::any::Any;
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any;
}

impl<T: Element + std::any::Any> AnyElement for T {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// A boxed element is an element, so the driver can run whichever role a
/// topology names.
impl<E: Element + ?Sized> Element for Box<E> {
    fn on_frame(&mut self, cx: &mut Ctx, port: PortId, frame: &[u8], out: &mut Outbox) {
        (**self).on_frame(cx, port, frame, out)
    }
    fn on_timer(&mut self, cx: &mut Ctx, out: &mut Outbox) {
        (**self).on_timer(cx, out)
    }
    fn poll_at(&self) -> Option<Instant> {
        (**self).poll_at()
    }
    fn report(&self) -> serde_json::Value {
        (**self).report()
    }
    fn table(&self, name: &str) -> Option<serde_json::Value> {
        (**self).table(name)
    }
}

/// A context at `now` with a generator seeded with zero: for tests and
/// tools whose elements draw nothing that matters.
impl From<Instant> for Ctx {
    fn from(now: Instant) -> Ctx {
        Ctx::new(now, 0)
    }
}

/// A report as the control socket carries it (what [`Element::report`]
/// returns): a report type that fails to serialize is a bug, shown as null.
pub fn report_json<T: serde::Serialize>(report: &T) -> serde_json::Value {
    serde_json::to_value(report).unwrap_or_default()
}
