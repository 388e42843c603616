//! The router's BGP speaker: sessions with its neighbours, the three RIBs and
//! the decision process, installing its best routes in the router's FIB.
//!
//! Read RFC 4271 first: § 8 for the finite state machine (kept per TCP
//! connection, with the ConnectRetry, Hold and Keepalive timers of § 10 and
//! their jitter), § 6.8 for connection collisions, § 9 for what an UPDATE
//! does to the Adj-RIB-In, § 9.1 for the decision process (degree of
//! preference, then the tie-breaks of § 9.1.2.2) and § 9.2 for the
//! Adj-RIB-Out (kept as BIRD keeps it without `export table`: what a
//! neighbour holds is the export policy applied to the Loc-RIB, so only a
//! prefix waiting to be sent remembers what was sent before). Then RFC 8212 (no route is accepted from or sent to an
//! external peer without a policy that says so), RFC 7606 (a malformed
//! attribute withdraws the UPDATE's routes or is dropped; the session stays),
//! RFC 6793 (4-octet AS numbers, AS4_PATH towards and from 2-octet speakers)
//! and RFC 2918 (route refresh). The messages are `d11_wire::bgp`'s.
//!
//! Sans-IO like the rest of the element: the speaker reads and writes TCP
//! sockets of the router's own IP layer (smoltcp over [`L3`], port 179) and
//! is handed the time and a seeded generator for its jitter; it never opens a
//! socket or reads a clock. The router calls [`Speaker::run`] after every
//! frame addressed to it and at the deadline of [`Speaker::poll_at`].
//!
//! What this speaker does not do: multihop sessions (every neighbour is on
//! one of the router's subnets), route reflection and confederations,
//! MinRouteAdvertisementInterval (UPDATEs leave as soon as the decision
//! changes, as BIRD does by default), graceful restart, and address
//! families other than IPv4 unicast.

use d11_core::hash::{FastBuild, FastMap};
use d11_core::l3::tcp::TcpSocket;
use d11_core::l3::{RouteSource, TcpHandle, TcpState, L3};
use d11_core::settings::ConfigError;
use d11_core::{Ctx, Instant, Outbox};
use d11_wire::bgp::{
    self, error, Capability, Message, NotificationRepr, OpenRepr, Origin, PathAttrs,
    RouteRefreshRepr, UpdateRepr,
};
use d11_wire::Ipv4Cidr;
use hashbrown::HashTable;
use serde::{Deserialize, Serialize};
use std::collections::hash_map::Entry;
use std::fmt;
use std::hash::BuildHasher;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// The hold time a neighbour gets unless it says otherwise [RFC 4271 § 10: 90 s].
pub const DEFAULT_HOLD_TIME: u16 = 90;
/// Seconds between connection attempts. RFC 4271 § 10 suggests 120; the
/// lab's processes start within a second of each other, so 5 (BIRD's
/// "connect delay time").
pub const DEFAULT_CONNECT_RETRY: u16 = 5;
/// LOCAL_PREF of a route that has none [RFC 4271 § 5.1.5; BIRD's default].
pub const DEFAULT_LOCAL_PREF: u32 = 100;
/// The hold timer before the peer's OPEN sets it: "a large value", 4
/// minutes suggested [RFC 4271 § 8.2.2, OpenSent].
const OPEN_HOLD: Duration = Duration::from_secs(240);
/// Each BGP socket's send and receive buffer.
const SOCKET_BUFFER: usize = 64 * 1024;
/// UPDATEs are built while fewer bytes than this wait in front of the
/// socket's own buffer; the rest waits in the neighbour's dirty list.
const TX_HIGH_WATER: usize = 16 * 1024;
/// How long a closing connection may take to send its NOTIFICATION and FIN
/// before it is reset.
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// The first connection attempt waits up to this long (jitter, so that two
/// routers starting together do not always collide).
const FIRST_CONNECT_JITTER: Duration = Duration::from_millis(500);

/// The `bgp` table of a router's `config` (docs/topology.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpSettings {
    /// The router's AS [RFC 4271 § 4.2, RFC 6793].
    pub local_as: u32,
    /// The BGP Identifier; the lowest port address when unset (as BIRD does).
    #[serde(default)]
    pub router_id: Option<Ipv4Addr>,
    /// Prefixes this router announces itself (a connected subnet, or a
    /// static route's destination: a `network` statement).
    #[serde(default)]
    pub originate: Vec<Ipv4Cidr>,
    #[serde(default)]
    pub neighbors: Vec<NeighborSettings>,
}

/// One neighbour: a BGP speaker on one of the router's subnets.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeighborSettings {
    pub address: Ipv4Addr,
    pub remote_as: u32,
    /// Seconds; 0 (no keepalives) or 3 and more [RFC 4271 § 4.2].
    #[serde(default = "default_hold")]
    pub hold_time: u16,
    /// Seconds between connection attempts.
    #[serde(default = "default_connect_retry")]
    pub connect_retry: u16,
    /// Which prefixes are accepted from it. Unset: all from an internal
    /// peer, none from an external one [RFC 8212].
    #[serde(default)]
    pub import: Option<Policy>,
    /// Which prefixes are sent to it, with the same default.
    #[serde(default)]
    pub export: Option<Policy>,
    /// LOCAL_PREF given to the routes learned from an external neighbour
    /// (the degree of preference of RFC 4271 § 9.1.1); 100 when unset.
    #[serde(default)]
    pub local_pref: Option<u32>,
    /// Sends its own address as NEXT_HOP to an internal peer (there is no
    /// IGP in the lab to resolve the external next hop with).
    #[serde(default)]
    pub next_hop_self: bool,
    /// Waits for the neighbour to connect, never connects itself.
    #[serde(default)]
    pub passive: bool,
}

fn default_hold() -> u16 {
    DEFAULT_HOLD_TIME
}

fn default_connect_retry() -> u16 {
    DEFAULT_CONNECT_RETRY
}

/// A prefix policy: `"all"`, `"none"`, or a list of prefixes, each exact
/// (`"203.0.113.0/24"`) or with its more specifics (`"10.0.0.0/8+"`, BIRD's
/// notation).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "PolicyText")]
pub enum Policy {
    All,
    Nothing,
    Prefixes(Vec<PrefixMatch>),
}

/// One prefix of a policy list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixMatch {
    pub prefix: Ipv4Cidr,
    /// Matches the prefix's more specifics too (`+`).
    pub or_longer: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PolicyText {
    Word(String),
    List(Vec<String>),
}

impl TryFrom<PolicyText> for Policy {
    type Error = String;
    fn try_from(t: PolicyText) -> Result<Policy, String> {
        match t {
            PolicyText::Word(w) if w == "all" => Ok(Policy::All),
            PolicyText::Word(w) if w == "none" => Ok(Policy::Nothing),
            PolicyText::Word(w) => Err(format!(
                "{w:?} is not a policy: \"all\", \"none\" or a list of prefixes like [\"203.0.113.0/24\", \"10.0.0.0/8+\"]"
            )),
            PolicyText::List(l) => l
                .iter()
                .map(|s| {
                    let (p, or_longer) = match s.strip_suffix('+') {
                        Some(p) => (p, true),
                        None => (s.as_str(), false),
                    };
                    let prefix: Ipv4Cidr = p.parse().map_err(|e| format!("{s:?}: {e}"))?;
                    if prefix.network() != prefix {
                        return Err(format!("{s:?} has host bits set (the prefix is {})", prefix.network()));
                    }
                    Ok(PrefixMatch { prefix, or_longer })
                })
                .collect::<Result<_, _>>()
                .map(Policy::Prefixes),
        }
    }
}

impl Policy {
    fn allows(&self, p: &Ipv4Cidr) -> bool {
        match self {
            Policy::All => true,
            Policy::Nothing => false,
            Policy::Prefixes(list) => list.iter().any(|m| {
                if m.or_longer {
                    p.prefix_len() >= m.prefix.prefix_len() && m.prefix.contains(p.addr())
                } else {
                    *p == m.prefix
                }
            }),
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::All => f.write_str("all"),
            Policy::Nothing => f.write_str("none"),
            Policy::Prefixes(l) => {
                let s: Vec<String> = l
                    .iter()
                    .map(|m| format!("{}{}", m.prefix, if m.or_longer { "+" } else { "" }))
                    .collect();
                write!(f, "{}", s.join(" "))
            }
        }
    }
}

/// A neighbour as the speaker uses it: its settings resolved against the
/// router's ports.
#[derive(Debug, Clone)]
struct Neighbor {
    address: Ipv4Addr,
    remote_as: u32,
    hold_time: u16,
    connect_retry: Duration,
    /// Our address on the shared subnet: the session's local end and the
    /// NEXT_HOP sent to it.
    local: Ipv4Addr,
    internal: bool,
    import: Policy,
    export: Policy,
    local_pref: u32,
    next_hop_self: bool,
    passive: bool,
}

impl BgpSettings {
    /// Checks the settings against the router's ports and static routes;
    /// the error names the key under `config.bgp`.
    fn resolve(
        &self,
        l3: &L3,
        statics: &[Ipv4Cidr],
    ) -> Result<(Ipv4Addr, Vec<Neighbor>), ConfigError> {
        let key = |k: String| format!("config.bgp.{k}");
        if self.local_as == 0 || self.local_as == u32::from(bgp::AS_TRANS) {
            return Err(ConfigError::new(
                key("local_as".into()),
                format!(
                    "{} is reserved and cannot be a router's AS [RFC 7607, RFC 6793]",
                    self.local_as
                ),
            ));
        }
        let lowest = l3.ports().map(|(_, p)| p.address.addr()).min();
        let router_id = match (self.router_id, lowest) {
            (Some(id), _) => id,
            (None, Some(id)) => id,
            (None, None) => {
                return Err(ConfigError::new(
                    key("router_id".into()),
                    "no port address to take it from",
                ))
            }
        };
        if router_id.is_unspecified() || router_id.is_multicast() || router_id.is_broadcast() {
            return Err(ConfigError::new(
                key("router_id".into()),
                format!("{router_id} is not a usable BGP Identifier [RFC 4271 § 4.2]"),
            ));
        }
        for (i, p) in self.originate.iter().enumerate() {
            if p.network() != *p {
                return Err(ConfigError::new(
                    key(format!("originate[{i}]")),
                    format!("{p} has host bits set (the prefix is {})", p.network()),
                ));
            }
            let connected = l3.ports().any(|(_, port)| port.address.network() == *p);
            if !connected && !statics.contains(p) {
                return Err(ConfigError::new(
                    key(format!("originate[{i}]")),
                    format!("{p} is neither a connected subnet nor a static route's destination: the router would announce a prefix it cannot reach"),
                ));
            }
        }
        if self.neighbors.len() > usize::from(u16::MAX) {
            return Err(ConfigError::new(
                key("neighbors".into()),
                format!("{} neighbours; at most {}", self.neighbors.len(), u16::MAX),
            ));
        }
        let mut neighbors: Vec<Neighbor> = Vec::new();
        for (i, n) in self.neighbors.iter().enumerate() {
            let k = |f: &str| key(format!("neighbors[{i}].{f}"));
            let Some(local) = l3
                .ports()
                .map(|(_, p)| p.address)
                .find(|a| a.contains(n.address))
                .map(|a| a.addr())
            else {
                return Err(ConfigError::new(
                    k("address"),
                    format!(
                        "{} is on none of this router's subnets: neighbours are directly connected",
                        n.address
                    ),
                ));
            };
            if l3.is_local(n.address) {
                return Err(ConfigError::new(
                    k("address"),
                    format!("{} is this router's own address", n.address),
                ));
            }
            if neighbors.iter().any(|m| m.address == n.address) {
                return Err(ConfigError::new(
                    k("address"),
                    format!("{} is listed twice", n.address),
                ));
            }
            if n.remote_as == 0 || n.remote_as == u32::from(bgp::AS_TRANS) {
                return Err(ConfigError::new(
                    k("remote_as"),
                    format!("{} is reserved [RFC 7607, RFC 6793]", n.remote_as),
                ));
            }
            if n.hold_time == 1 || n.hold_time == 2 {
                return Err(ConfigError::new(
                    k("hold_time"),
                    format!(
                        "{} s: a hold time is 0 or at least 3 seconds [RFC 4271 § 4.2]",
                        n.hold_time
                    ),
                ));
            }
            if n.connect_retry == 0 {
                return Err(ConfigError::new(k("connect_retry"), "at least 1 second"));
            }
            let internal = n.remote_as == self.local_as;
            let default = if internal {
                Policy::All
            } else {
                Policy::Nothing
            };
            neighbors.push(Neighbor {
                address: n.address,
                remote_as: n.remote_as,
                hold_time: n.hold_time,
                connect_retry: Duration::from_secs(u64::from(n.connect_retry)),
                local,
                internal,
                import: n.import.clone().unwrap_or_else(|| default.clone()),
                export: n.export.clone().unwrap_or(default),
                local_pref: n.local_pref.unwrap_or(DEFAULT_LOCAL_PREF),
                next_hop_self: n.next_hop_self,
                passive: n.passive,
            });
        }
        Ok((router_id, neighbors))
    }
}

/// A neighbour's state as RFC 4271 § 8.2.2 names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FsmState {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl fmt::Display for FsmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Where one TCP connection of a neighbour is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    /// TCP not yet established (ours in SYN-SENT, theirs in SYN-RECEIVED).
    Connecting,
    OpenSent,
    OpenConfirm,
    Established,
}

/// One TCP connection of a neighbour (two at once during a collision).
#[derive(Debug)]
struct Conn {
    sock: TcpHandle,
    /// Initiated by the neighbour (accepted on port 179).
    inbound: bool,
    state: ConnState,
    started: Instant,
    rx: Vec<u8>,
    tx: Vec<u8>,
    /// The neighbour's OPEN, once received.
    open: Option<OpenRepr>,
    /// Negotiated: the smaller of the two OPENs' hold times.
    hold: u16,
    hold_at: Option<Instant>,
    keepalive_at: Option<Instant>,
    /// Closed: its socket goes to the closing list at the end of the run.
    dead: bool,
}

/// What a session negotiated [RFC 4271 § 4.2; RFC 5492].
#[derive(Debug, Clone)]
struct Session {
    four_octet: bool,
    route_refresh: bool,
    hold: u16,
    peer_id: Ipv4Addr,
    since: Instant,
    capabilities: Vec<String>,
}

/// A set of path attributes in [`Interned`]: what an Adj-RIB-In entry
/// holds of a route that passed the import policy. Where its packets go is
/// [`Speaker::via`]: its NEXT_HOP, resolved once per address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AttrId(NonZeroU32);

impl AttrId {
    fn index(self) -> usize {
        self.0.get() as usize - 1
    }
}

/// The path attributes the Adj-RIBs-In hold, each set once, with the count
/// of the routes that hold it: an Adj-RIB-In entry is four octets (twelve
/// with its prefix, where a reference would make it sixteen: docs/bgp.md's
/// memory figure), and a set goes with the last route that holds it.
#[derive(Debug, Default)]
struct Interned {
    /// By [`AttrId::index`]; `None` when free (its index is in `free`).
    slots: Vec<Option<Held>>,
    free: Vec<usize>,
    /// The ids, found by their attributes' hash.
    index: HashTable<AttrId>,
}

#[derive(Debug)]
struct Held {
    attrs: Arc<PathAttrs>,
    holders: usize,
}

fn attrs_hash(a: &PathAttrs) -> u64 {
    FastBuild::default().hash_one(a)
}

fn held(slots: &[Option<Held>], id: AttrId) -> Option<&Held> {
    slots.get(id.index())?.as_ref()
}

impl Interned {
    /// The id of `attrs`, added if new, with one more holder: the caller,
    /// who hands it to a route or gives it back with [`Interned::release`].
    fn hold(&mut self, attrs: PathAttrs) -> AttrId {
        let Interned { slots, free, index } = self;
        let h = attrs_hash(&attrs);
        let same = |id: &AttrId| held(slots, *id).is_some_and(|s| *s.attrs == attrs);
        if let Some(id) = index.find(h, same).copied() {
            self.share(id);
            return id;
        }
        let i = free.pop().unwrap_or(slots.len());
        // Each set takes over a hundred bytes: memory runs out long before
        // 2^32 of them.
        let id = AttrId(
            u32::try_from(i + 1)
                .ok()
                .and_then(NonZeroU32::new)
                .expect("fewer than 2^32 attribute sets"),
        );
        let slot = Some(Held {
            attrs: Arc::new(attrs),
            holders: 1,
        });
        match slots.get_mut(i) {
            Some(s) => *s = slot,
            None => slots.push(slot),
        }
        index.insert_unique(h, id, |id| {
            held(slots, *id).map_or(0, |s| attrs_hash(&s.attrs))
        });
        id
    }

    /// One more holder of `id`.
    fn share(&mut self, id: AttrId) {
        if let Some(Some(s)) = self.slots.get_mut(id.index()) {
            s.holders += 1;
        }
    }

    /// One holder fewer of `id`; the last one frees the set.
    fn release(&mut self, id: AttrId) {
        let i = id.index();
        let Some(Some(s)) = self.slots.get_mut(i) else {
            return;
        };
        s.holders -= 1;
        if s.holders == 0 {
            if let Ok(e) = self.index.find_entry(attrs_hash(&s.attrs), |x| *x == id) {
                e.remove();
            }
            self.slots[i] = None;
            self.free.push(i);
        }
    }

    /// [`Interned::release`], keeping a reference to the attributes
    /// (what the decision process compares the route with).
    fn take(&mut self, id: AttrId) -> Option<Arc<PathAttrs>> {
        let attrs = self.get(id).cloned();
        self.release(id);
        attrs
    }

    fn get(&self, id: AttrId) -> Option<&Arc<PathAttrs>> {
        held(&self.slots, id).map(|s| &s.attrs)
    }
}

/// Counters of one neighbour.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerCounters {
    pub messages_in: u64,
    pub messages_out: u64,
    pub updates_in: u64,
    pub updates_out: u64,
    /// Times the session reached Established.
    pub established: u64,
    /// UPDATEs whose routes were withdrawn for a malformed attribute [RFC 7606 § 2].
    pub treat_as_withdraw: u64,
    /// Attributes dropped as malformed or repeated [RFC 7606 § 2].
    pub attributes_discarded: u64,
    /// Routes refused because our AS is in their AS_PATH [RFC 4271 § 9.1.2].
    pub as_path_loops: u64,
    /// ROUTE-REFRESH messages received and answered [RFC 2918 § 4].
    pub refreshes: u64,
}

struct Peer {
    n: Neighbor,
    conns: Vec<Conn>,
    session: Option<Session>,
    /// When the next connection attempt is due (while no connection is open).
    retry_at: Option<Instant>,
    started: bool,
    /// Every prefix received and not withdrawn, with its attributes in
    /// [`Speaker::interned`]: `None` when the import policy (or a loop)
    /// refused it.
    adj_in: FastMap<Ipv4Cidr, Option<AttrId>>,
    accepted: usize,
    /// Prefixes in its Adj-RIB-Out: announced and not withdrawn since.
    advertised: usize,
    /// Prefixes whose Adj-RIB-Out entry may be stale, in order …
    dirty: Vec<Ipv4Cidr>,
    /// … and what the neighbour was sent for each.
    pending: FastMap<Ipv4Cidr, Pending>,
    counters: PeerCounters,
    last_sent: Option<NotificationRepr>,
    last_received: Option<NotificationRepr>,
    /// Why the last session or connection ended, for the report.
    last_error: Option<String>,
}

impl Peer {
    fn established(&self) -> Option<usize> {
        self.conns
            .iter()
            .position(|c| c.state == ConnState::Established && !c.dead)
    }

    /// `p`'s Loc-RIB entry is about to change from `was`: the neighbour's
    /// Adj-RIB-Out entry is looked at again. A prefix already waiting keeps
    /// what was sent before it first changed.
    fn mark(&mut self, p: Ipv4Cidr, was: Option<&Best>, resend: bool) {
        if self.session.is_none() {
            return;
        }
        match self.pending.entry(p) {
            Entry::Occupied(mut e) => e.get_mut().resend |= resend,
            Entry::Vacant(e) => {
                e.insert(Pending {
                    was: was.cloned(),
                    resend,
                });
                self.dirty.push(p);
            }
        }
    }

    /// Forgets the dirty prefixes, and the room a full table's worth of
    /// them took (a few megabytes with 100,000 routes).
    fn clear_dirty(&mut self) {
        self.dirty = Vec::new();
        self.pending = FastMap::default();
    }

    fn state(&self) -> FsmState {
        let live = || self.conns.iter().filter(|c| !c.dead);
        if self.session.is_some() {
            FsmState::Established
        } else if live().any(|c| c.state == ConnState::OpenConfirm) {
            FsmState::OpenConfirm
        } else if live().any(|c| c.state == ConnState::OpenSent) {
            FsmState::OpenSent
        } else if live().any(|c| c.state == ConnState::Connecting && !c.inbound) {
            FsmState::Connect
        } else if self.started {
            FsmState::Active
        } else {
            FsmState::Idle
        }
    }
}

/// A Loc-RIB entry: where the best route to a prefix came from [RFC 4271 §
/// 9.1.2], the index of the neighbour in `peers` or [`Source::LOCAL`]. Its
/// attributes are those of the Adj-RIB-In entry it came from (or
/// [`Speaker::originated`]), its next hop theirs resolved: two octets, so
/// that with its prefix an entry is eight; with 100,000 routes every octet
/// counts (docs/bgp.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Source(u16);

impl Source {
    /// Originated by this router (`originate`). No neighbour has this
    /// index: there are at most 65,535, checked in the settings.
    const LOCAL: Source = Source(u16::MAX);

    /// The index of the neighbour it came from.
    fn peer(self) -> Option<usize> {
        (self != Source::LOCAL).then_some(usize::from(self.0))
    }
}

/// A best route with its attributes: what the decision process chooses,
/// and what a neighbour was last sent of a prefix waiting to be sent again.
#[derive(Debug, Clone)]
struct Best {
    from: Source,
    attrs: Arc<PathAttrs>,
}

/// A prefix waiting to be sent to a neighbour.
#[derive(Debug)]
struct Pending {
    /// The best route when the prefix was last sent (or found unchanged):
    /// the export policy over it is what the neighbour holds, so an
    /// unchanged route is not sent again and a withdrawn one only if it
    /// was announced [RFC 4271 § 9.1.3].
    was: Option<Best>,
    /// Sent even if unchanged (ROUTE-REFRESH).
    resend: bool,
}

/// A socket being closed: what is left to send, then FIN; reset at the deadline.
#[derive(Debug)]
struct Closing {
    sock: TcpHandle,
    tx: Vec<u8>,
    deadline: Instant,
}

/// The BGP speaker of one router.
pub struct Speaker {
    local_as: u32,
    router_id: Ipv4Addr,
    originate: Vec<Ipv4Cidr>,
    peers: Vec<Peer>,
    /// One socket in LISTEN per local address that faces a neighbour.
    listeners: Vec<(Ipv4Addr, Option<TcpHandle>)>,
    loc_rib: FastMap<Ipv4Cidr, Source>,
    /// The attributes of the routes the router originates.
    originated: Arc<PathAttrs>,
    /// The attributes of the Adj-RIBs-In's routes, shared by the routes
    /// that carry the same ones.
    interned: Interned,
    /// Next hops already resolved (connected and static routes do not change).
    resolved: FastMap<Ipv4Addr, Option<Ipv4Addr>>,
    closing: Vec<Closing>,
    started: bool,
    now: Instant,
    /// Connections to port 179 from addresses that are no neighbour, reset.
    rejected: u64,
    /// Loc-RIB changes, for `d11 up`'s wait for convergence.
    rib_changes: u64,
}

impl fmt::Debug for Speaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Speaker")
            .field("local_as", &self.local_as)
            .field("router_id", &self.router_id)
            .field("peers", &self.peers.len())
            .field("loc_rib", &self.loc_rib.len())
            .finish()
    }
}

fn jitter(cx: &mut Ctx, d: Duration) -> Duration {
    // RFC 4271 § 10: "a random factor which is uniformly distributed in the
    // range from 0.75 to 1.0".
    d.mul_f64(0.75 + 0.25 * cx.rng.next_f64())
}

fn emit(msg: &Message, four_octet: bool, buf: &mut Vec<u8>) {
    msg.emit(buf, four_octet);
}

impl Speaker {
    /// A speaker for a router whose layer is `l3` and whose static routes
    /// go to `statics`; the error names the setting.
    pub fn new(
        settings: &BgpSettings,
        l3: &L3,
        statics: &[Ipv4Cidr],
    ) -> Result<Speaker, ConfigError> {
        let (router_id, neighbors) = settings.resolve(l3, statics)?;
        let mut listeners: Vec<(Ipv4Addr, Option<TcpHandle>)> = Vec::new();
        for n in &neighbors {
            if !listeners.iter().any(|(a, _)| *a == n.local) {
                listeners.push((n.local, None));
            }
        }
        let originated = Arc::new(PathAttrs {
            origin: Some(Origin::Igp),
            as_path: Some(bgp::AsPath::default()),
            ..PathAttrs::default()
        });
        let loc_rib = settings
            .originate
            .iter()
            .map(|p| (*p, Source::LOCAL))
            .collect();
        Ok(Speaker {
            local_as: settings.local_as,
            router_id,
            originate: settings.originate.clone(),
            peers: neighbors
                .into_iter()
                .map(|n| Peer {
                    n,
                    conns: Vec::new(),
                    session: None,
                    retry_at: None,
                    started: false,
                    adj_in: FastMap::default(),
                    accepted: 0,
                    advertised: 0,
                    dirty: Vec::new(),
                    pending: FastMap::default(),
                    counters: PeerCounters::default(),
                    last_sent: None,
                    last_received: None,
                    last_error: None,
                })
                .collect(),
            listeners,
            loc_rib,
            originated,
            interned: Interned::default(),
            resolved: FastMap::default(),
            closing: Vec::new(),
            started: false,
            now: Instant::ZERO,
            rejected: 0,
            rib_changes: 0,
        })
    }

    pub fn local_as(&self) -> u32 {
        self.local_as
    }

    pub fn router_id(&self) -> Ipv4Addr {
        self.router_id
    }

    /// Does everything due: accepts connections, reads and answers what
    /// the neighbours sent, runs the timers, sends the Adj-RIB-Out's
    /// changes, and lets the layer send the segments.
    pub fn run(&mut self, cx: &mut Ctx, l3: &mut L3, out: &mut Outbox) {
        self.now = cx.now;
        if !self.started {
            self.start(cx, l3);
        }
        self.accept(cx, l3);
        for i in 0..self.peers.len() {
            self.drive(cx, l3, i);
        }
        for i in 0..self.peers.len() {
            self.export(i);
            self.flush(l3, i);
            self.bury(l3, i);
        }
        self.reap(l3);
        l3.poll(cx, out);
    }

    /// Opens the listeners and schedules each neighbour's first connection
    /// attempt [RFC 4271 § 8.1.2 ManualStart, AutomaticStart].
    fn start(&mut self, cx: &mut Ctx, l3: &mut L3) {
        self.started = true;
        for i in 0..self.listeners.len() {
            self.relisten(cx, l3, i);
        }
        for p in &mut self.peers {
            p.started = true;
            if !p.n.passive {
                let wait = FIRST_CONNECT_JITTER.mul_f64(cx.rng.next_f64());
                p.retry_at = Some(self.now + wait);
            }
        }
    }

    fn relisten(&mut self, cx: &mut Ctx, l3: &mut L3, i: usize) {
        let addr = self.listeners[i].0;
        let tcp = l3.tcp_stack(cx);
        self.listeners[i].1 = tcp
            .listen(SocketAddrV4::new(addr, bgp::PORT), SOCKET_BUFFER)
            .ok();
    }

    /// Hands each connection a listener took to its neighbour, or resets it
    /// when it comes from an address that is none [RFC 4271 § 8.2.1.1: a
    /// connection from an unconfigured peer is refused].
    fn accept(&mut self, cx: &mut Ctx, l3: &mut L3) {
        for i in 0..self.listeners.len() {
            let (addr, h) = self.listeners[i];
            let Some(h) = h else {
                self.relisten(cx, l3, i);
                continue;
            };
            let tcp = l3.tcp_stack(cx);
            if tcp.socket(h).state() == TcpState::Listen {
                continue;
            }
            let remote = tcp.remote(h).map(|e| *e.ip());
            let peer = self
                .peers
                .iter()
                .position(|p| p.n.local == addr && remote == Some(p.n.address));
            match peer {
                None => {
                    tcp.socket(h).abort();
                    self.rejected += 1;
                    self.closing.push(Closing {
                        sock: h,
                        tx: Vec::new(),
                        deadline: self.now + CLOSE_LINGER,
                    });
                }
                Some(pi) => self.adopt(l3, pi, h),
            }
            self.relisten(cx, l3, i);
        }
    }

    /// A connection the neighbour opened: kept unless one of its own is
    /// already past OpenSent; an inbound one that sent nothing yet makes
    /// way for it (a restarted neighbour, or a flood of SYNs).
    fn adopt(&mut self, l3: &mut L3, pi: usize, h: TcpHandle) {
        let now = self.now;
        let peer = &mut self.peers[pi];
        if let Some(old) = peer.conns.iter_mut().find(|c| c.inbound && !c.dead) {
            if old.open.is_some() {
                if let Some(t) = l3.tcp_stack_if_made() {
                    t.socket(h).abort();
                }
                self.closing.push(Closing {
                    sock: h,
                    tx: Vec::new(),
                    deadline: now + CLOSE_LINGER,
                });
                return;
            }
            old.dead = true;
            if let Some(t) = l3.tcp_stack_if_made() {
                t.socket(old.sock).abort();
            }
        }
        if let Some(t) = l3.tcp_stack_if_made() {
            let s = t.socket(h);
            s.set_nagle_enabled(false);
            if !peer.n.internal {
                // A directly connected external peer is one hop away.
                s.set_hop_limit(Some(1));
            }
        }
        peer.conns.push(Conn {
            sock: h,
            inbound: true,
            state: ConnState::Connecting,
            started: now,
            rx: Vec::new(),
            tx: Vec::new(),
            open: None,
            hold: 0,
            hold_at: None,
            keepalive_at: None,
            dead: false,
        });
    }

    /// One neighbour: its sockets' states, what they received, its timers.
    fn drive(&mut self, cx: &mut Ctx, l3: &mut L3, pi: usize) {
        let now = self.now;
        // A connection attempt when none is open and the retry timer fired.
        let p = &self.peers[pi];
        if p.conns.iter().all(|c| c.dead) && !p.n.passive && p.retry_at.is_some_and(|t| t <= now) {
            self.connect(cx, l3, pi);
        }
        for ci in 0..self.peers[pi].conns.len() {
            if self.peers[pi].conns[ci].dead {
                continue;
            }
            self.watch(l3, pi, ci);
            if !self.peers[pi].conns[ci].dead {
                self.receive(l3, pi, ci);
            }
            if !self.peers[pi].conns[ci].dead {
                self.timers(cx, l3, pi, ci);
            }
        }
        let p = &mut self.peers[pi];
        if p.conns.iter().all(|c| c.dead) && p.retry_at.is_none_or(|t| t <= now) {
            p.retry_at = Some(now + jitter(cx, p.n.connect_retry));
        }
    }

    /// Opens a connection to the neighbour's port 179 [RFC 4271 § 8.2.2,
    /// Idle → Connect].
    fn connect(&mut self, cx: &mut Ctx, l3: &mut L3, pi: usize) {
        let now = self.now;
        let n = &self.peers[pi].n;
        // An ephemeral port [RFC 6335 § 6: 49152–65535].
        let port = 49152 + cx.rng.below(16384) as u16;
        let local = SocketAddrV4::new(n.local, port);
        let remote = SocketAddrV4::new(n.address, bgp::PORT);
        let internal = n.internal;
        let retry = n.connect_retry;
        let tcp = l3.tcp_stack(cx);
        let h = match tcp.connect(local, remote, SOCKET_BUFFER) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(%remote, error = %e, "BGP connect");
                self.peers[pi].retry_at = Some(now + jitter(cx, retry));
                return;
            }
        };
        let s = tcp.socket(h);
        s.set_nagle_enabled(false);
        if !internal {
            s.set_hop_limit(Some(1));
        }
        let peer = &mut self.peers[pi];
        peer.retry_at = None;
        peer.conns.push(Conn {
            sock: h,
            inbound: false,
            state: ConnState::Connecting,
            started: now,
            rx: Vec::new(),
            tx: Vec::new(),
            open: None,
            hold: 0,
            hold_at: None,
            keepalive_at: None,
            dead: false,
        });
    }

    /// Follows the TCP state: established → OPEN sent; reset or closed by
    /// the neighbour → the connection is gone.
    fn watch(&mut self, l3: &mut L3, pi: usize, ci: usize) {
        let now = self.now;
        let h = self.peers[pi].conns[ci].sock;
        let Some(tcp) = l3.tcp_stack_if_made() else {
            return;
        };
        let s: &mut TcpSocket = tcp.socket(h);
        let st = s.state();
        let conn = &self.peers[pi].conns[ci];
        if conn.state == ConnState::Connecting {
            match st {
                TcpState::Established => {
                    let open = Message::Open(OpenRepr::new(
                        self.local_as,
                        self.peers[pi].n.hold_time,
                        self.router_id,
                        vec![
                            Capability::Multiprotocol {
                                afi: bgp::AFI_IPV4,
                                safi: bgp::SAFI_UNICAST,
                            },
                            Capability::RouteRefresh,
                            Capability::FourOctetAs(self.local_as),
                        ],
                    ));
                    let peer = &mut self.peers[pi];
                    let c = &mut peer.conns[ci];
                    emit(&open, true, &mut c.tx);
                    c.state = ConnState::OpenSent;
                    c.hold_at = Some(now + OPEN_HOLD);
                    peer.counters.messages_out += 1;
                    tracing::debug!(neighbor = %peer.n.address, inbound = c.inbound, "BGP OPEN sent");
                }
                TcpState::Closed | TcpState::TimeWait | TcpState::CloseWait => {
                    self.drop_conn(l3, pi, ci, "connection refused or reset");
                }
                _ if now >= conn.started + self.peers[pi].n.connect_retry => {
                    // ConnectRetryTimer expired in Connect [RFC 4271 § 8.2.2].
                    self.drop_conn(l3, pi, ci, "connection attempt timed out");
                }
                _ => {}
            }
            return;
        }
        if matches!(st, TcpState::Closed | TcpState::TimeWait) || (!s.may_recv() && !s.can_recv()) {
            self.drop_conn(l3, pi, ci, "the neighbour closed the connection");
        }
    }

    /// Reads what the socket holds and handles each whole message.
    fn receive(&mut self, l3: &mut L3, pi: usize, ci: usize) {
        let h = self.peers[pi].conns[ci].sock;
        let Some(tcp) = l3.tcp_stack_if_made() else {
            return;
        };
        let s = tcp.socket(h);
        let mut rx = std::mem::take(&mut self.peers[pi].conns[ci].rx);
        while s.can_recv() {
            let _ = s.recv(|b| {
                rx.extend_from_slice(b);
                (b.len(), ())
            });
        }
        let mut at = 0;
        loop {
            match bgp::message_len(&rx[at..]) {
                Ok(Some(n)) => {
                    let msg = rx[at..at + n].to_vec();
                    at += n;
                    self.on_message(l3, pi, ci, &msg);
                    if self.peers[pi].conns[ci].dead {
                        break;
                    }
                }
                Ok(None) => break,
                Err(n) => {
                    self.fail(l3, pi, ci, n);
                    break;
                }
            }
        }
        rx.drain(..at);
        let c = &mut self.peers[pi].conns[ci];
        if !c.dead {
            c.rx = rx;
        }
    }

    /// Hold and keepalive timers of one connection [RFC 4271 § 10].
    fn timers(&mut self, cx: &mut Ctx, l3: &mut L3, pi: usize, ci: usize) {
        let now = self.now;
        let c = &self.peers[pi].conns[ci];
        if c.hold_at.is_some_and(|t| t <= now) {
            tracing::info!(neighbor = %self.peers[pi].n.address, "BGP hold timer expired");
            return self.fail(
                l3,
                pi,
                ci,
                NotificationRepr::new(error::HOLD_TIMER_EXPIRED, 0, vec![]),
            );
        }
        if c.keepalive_at.is_some_and(|t| t <= now) {
            let hold = c.hold;
            self.send_keepalive(cx, pi, ci, hold);
        }
    }

    fn send_keepalive(&mut self, cx: &mut Ctx, pi: usize, ci: usize, hold: u16) {
        let peer = &mut self.peers[pi];
        let c = &mut peer.conns[ci];
        emit(&Message::Keepalive, true, &mut c.tx);
        peer.counters.messages_out += 1;
        c.keepalive_at =
            (hold > 0).then(|| self.now + jitter(cx, Duration::from_secs(u64::from(hold) / 3)));
    }

    /// One whole message from the neighbour [RFC 4271 § 8.2.2].
    fn on_message(&mut self, l3: &mut L3, pi: usize, ci: usize, bytes: &[u8]) {
        let now = self.now;
        let four = self.peers[pi]
            .session
            .as_ref()
            .is_some_and(|s| s.four_octet);
        let msg = match bgp::BgpPacket::new_checked(bytes).and_then(|p| Message::parse(&p, four)) {
            Ok(m) => m,
            Err(n) => return self.fail(l3, pi, ci, n),
        };
        let peer = &mut self.peers[pi];
        peer.counters.messages_in += 1;
        let c = &mut peer.conns[ci];
        // Every message restarts the hold timer once it is negotiated.
        if c.hold > 0 && matches!(c.state, ConnState::OpenConfirm | ConnState::Established) {
            c.hold_at = Some(now + Duration::from_secs(u64::from(c.hold)));
        }
        let state = c.state;
        tracing::trace!(neighbor = %peer.n.address, %msg, "BGP in");
        match (state, msg) {
            (_, Message::Notification(n)) => {
                tracing::info!(neighbor = %peer.n.address, notification = %n, "BGP NOTIFICATION received");
                peer.last_error = Some(format!("NOTIFICATION received: {n}"));
                peer.last_received = Some(n);
                self.drop_conn(l3, pi, ci, "");
            }
            (ConnState::OpenSent, Message::Open(o)) => self.on_open(l3, pi, ci, o),
            (ConnState::OpenConfirm, Message::Keepalive) => self.on_established(l3, pi, ci),
            (ConnState::Established, Message::Keepalive) => {}
            (ConnState::Established, Message::Update(u)) => {
                self.peers[pi].counters.updates_in += 1;
                self.on_update(l3, pi, u);
            }
            (ConnState::Established, Message::RouteRefresh(r)) => self.on_refresh(pi, r),
            (s, _) => {
                // An unexpected message, an UPDATE before Established among
                // them [RFC 4271 § 8.2.2; RFC 6608 § 4 subcodes].
                let sub = match s {
                    ConnState::OpenSent | ConnState::Connecting => {
                        error::fsm::UNEXPECTED_IN_OPEN_SENT
                    }
                    ConnState::OpenConfirm => error::fsm::UNEXPECTED_IN_OPEN_CONFIRM,
                    ConnState::Established => error::fsm::UNEXPECTED_IN_ESTABLISHED,
                };
                self.fail(l3, pi, ci, NotificationRepr::new(error::FSM, sub, vec![]));
            }
        }
    }

    /// The neighbour's OPEN in OpenSent: its checks [RFC 4271 § 6.2], the
    /// collision check [§ 6.8], then KEEPALIVE and OpenConfirm.
    fn on_open(&mut self, l3: &mut L3, pi: usize, ci: usize, o: OpenRepr) {
        use error::open::*;
        let now = self.now;
        let n = &self.peers[pi].n;
        let refuse =
            |sub: u8, data: Vec<u8>| Some(NotificationRepr::new(error::OPEN_MESSAGE, sub, data));
        let bad = if o.version != bgp::VERSION {
            // The data is the largest version we support [§ 6.2].
            refuse(
                UNSUPPORTED_VERSION,
                u16::from(bgp::VERSION).to_be_bytes().to_vec(),
            )
        } else if o.asn() != n.remote_as {
            refuse(BAD_PEER_AS, vec![])
        } else if o.hold_time == 1 || o.hold_time == 2 {
            refuse(UNACCEPTABLE_HOLD_TIME, vec![])
        } else if o.bgp_id.is_unspecified() || (n.internal && o.bgp_id == self.router_id) {
            refuse(BAD_BGP_IDENTIFIER, vec![])
        } else if o
            .params
            .iter()
            .any(|p| matches!(p, bgp::OptParam::Unknown { .. }))
        {
            refuse(UNSUPPORTED_OPTIONAL_PARAMETER, vec![])
        } else {
            None
        };
        if let Some(nf) = bad {
            return self.fail(l3, pi, ci, nf);
        }
        // Collision [RFC 4271 § 6.8]: the connection initiated by the
        // speaker with the higher BGP Identifier is kept.
        let this_inbound = self.peers[pi].conns[ci].inbound;
        let other = (self.peers[pi].conns.iter().enumerate()).position(|(j, c)| {
            j != ci && !c.dead && matches!(c.state, ConnState::OpenConfirm | ConnState::Established)
        });
        let cease = || {
            NotificationRepr::new(
                error::CEASE,
                error::cease::CONNECTION_COLLISION_RESOLUTION,
                vec![],
            )
        };
        if let Some(oi) = other {
            if self.peers[pi].conns[oi].state == ConnState::Established {
                return self.fail(l3, pi, ci, cease());
            }
            let keep_inbound = self.router_id < o.bgp_id;
            if this_inbound == keep_inbound {
                self.fail(l3, pi, oi, cease());
            } else {
                return self.fail(l3, pi, ci, cease());
            }
        }
        let peer = &mut self.peers[pi];
        let hold = peer.n.hold_time.min(o.hold_time);
        let c = &mut peer.conns[ci];
        c.hold = hold;
        c.hold_at = (hold > 0).then(|| now + Duration::from_secs(u64::from(hold)));
        c.state = ConnState::OpenConfirm;
        tracing::debug!(neighbor = %peer.n.address, open = %o, "BGP OPEN received");
        c.open = Some(o);
        emit(&Message::Keepalive, true, &mut c.tx);
        peer.counters.messages_out += 1;
        // The keepalive timer starts with the first KEEPALIVE sent.
        c.keepalive_at = (hold > 0).then(|| now + Duration::from_secs(u64::from(hold) / 3));
    }

    /// KEEPALIVE in OpenConfirm: the session is up [RFC 4271 § 8.2.2].
    fn on_established(&mut self, l3: &mut L3, pi: usize, ci: usize) {
        let now = self.now;
        for oi in 0..self.peers[pi].conns.len() {
            if oi != ci && !self.peers[pi].conns[oi].dead {
                let cease = NotificationRepr::new(
                    error::CEASE,
                    error::cease::CONNECTION_COLLISION_RESOLUTION,
                    vec![],
                );
                self.fail(l3, pi, oi, cease);
            }
        }
        let prefixes: Vec<Ipv4Cidr> = self
            .loc_rib
            .iter()
            .filter(|(p, from)| self.sends(pi, p, Some(**from)))
            .map(|(p, _)| *p)
            .collect();
        let peer = &mut self.peers[pi];
        let c = &mut peer.conns[ci];
        c.state = ConnState::Established;
        let o = c
            .open
            .as_ref()
            .expect("OpenConfirm has the neighbour's OPEN");
        let session = Session {
            four_octet: o.four_octet_as().is_some(),
            route_refresh: o.has(&Capability::RouteRefresh),
            hold: c.hold,
            peer_id: o.bgp_id,
            since: now,
            capabilities: o.capabilities().map(|c| c.to_string()).collect(),
        };
        tracing::info!(neighbor = %peer.n.address, remote_as = peer.n.remote_as, hold = c.hold, "BGP session Established");
        peer.session = Some(session);
        peer.counters.established += 1;
        peer.last_error = None;
        // The whole Loc-RIB goes out once, what the neighbour is sent of it
        // [RFC 4271 § 9.2].
        peer.advertised = 0;
        for p in prefixes {
            peer.mark(p, None, false);
        }
    }

    /// ROUTE-REFRESH: the Adj-RIB-Out is sent again [RFC 2918 § 4].
    fn on_refresh(&mut self, pi: usize, r: RouteRefreshRepr) {
        if (r.afi, r.safi) != (bgp::AFI_IPV4, bgp::SAFI_UNICAST) {
            // "the BGP speaker MUST ignore such a message" [RFC 2918 § 4].
            return;
        }
        self.peers[pi].counters.refreshes += 1;
        for (p, from) in &self.loc_rib {
            let was = self.attrs(p, *from).map(|attrs| Best {
                from: *from,
                attrs: attrs.clone(),
            });
            self.peers[pi].mark(*p, was.as_ref(), true);
        }
    }

    /// An UPDATE in Established [RFC 4271 § 9; RFC 7606].
    fn on_update(&mut self, l3: &mut L3, pi: usize, mut u: UpdateRepr) {
        let (n, four) = {
            let p = &self.peers[pi];
            (
                p.n.clone(),
                p.session.as_ref().is_some_and(|s| s.four_octet),
            )
        };
        let c = &mut self.peers[pi].counters;
        c.attributes_discarded += u.discarded.len() as u64;
        if four {
            // AS4_ attributes between NEW speakers are discarded [RFC 6793 § 3].
            u.attrs.as4_path = None;
            u.attrs.as4_aggregator = None;
        } else {
            u.attrs.merge_as4();
        }
        let mut withdraw_all = u.treat_as_withdraw.is_some();
        if !u.nlri.is_empty() && !withdraw_all {
            let a = &u.attrs;
            let first = a.as_path.as_ref().and_then(|p| p.first_as());
            let confed = a.as_path.as_ref().is_some_and(|p| {
                p.segments.iter().any(|s| {
                    matches!(
                        s.kind,
                        bgp::SegmentKind::ConfedSequence | bgp::SegmentKind::ConfedSet
                    )
                })
            });
            let nh = a.next_hop.unwrap_or(Ipv4Addr::UNSPECIFIED);
            let bad_nh = nh.is_unspecified()
                || nh.is_multicast()
                || nh.is_broadcast()
                || nh.is_loopback()
                || l3.is_local(nh);
            // RFC 7606 § 7.2 (the leftmost AS of an external peer's path,
            // and confederation segments from outside one) and § 7.3 (a
            // NEXT_HOP that is ours or a martian): treat-as-withdraw.
            if (!n.internal && first != Some(n.remote_as)) || confed || bad_nh {
                withdraw_all = true;
            }
        }
        if withdraw_all {
            self.peers[pi].counters.treat_as_withdraw += 1;
        }
        // Each prefix whose accepted route changed, with the one it had.
        let mut changed: Vec<(Ipv4Cidr, Option<Arc<PathAttrs>>)> = Vec::new();
        {
            let nlri = if withdraw_all { &u.nlri[..] } else { &[] };
            let peer = &mut self.peers[pi];
            for p in u.withdrawn.iter().chain(nlri) {
                if let Some(Some(old)) = peer.adj_in.remove(p) {
                    peer.accepted -= 1;
                    changed.push((*p, self.interned.take(old)));
                }
            }
        }
        if !withdraw_all && !u.nlri.is_empty() {
            let mut attrs = u.attrs;
            if n.internal {
                attrs.local_pref.get_or_insert(DEFAULT_LOCAL_PREF);
            } else {
                // LOCAL_PREF from an external peer is discarded [RFC 7606 §
                // 7.5]; ours is the degree of preference [RFC 4271 § 9.1.1].
                attrs.local_pref = Some(n.local_pref);
            }
            let looped = attrs
                .as_path
                .as_ref()
                .is_some_and(|p| p.contains(self.local_as));
            let nh = attrs.next_hop.unwrap_or(Ipv4Addr::UNSPECIFIED);
            self.resolved
                .entry(nh)
                .or_insert_with(|| l3.resolve_next_hop(nh));
            // Held while the routes take it: freed here if none does.
            let id = self.interned.hold(attrs);
            let peer = &mut self.peers[pi];
            if looped {
                peer.counters.as_path_loops += u.nlri.len() as u64;
            }
            for p in &u.nlri {
                let new = (!looped && n.import.allows(p)).then_some(id);
                if new.is_some() {
                    self.interned.share(id);
                }
                let was = peer.adj_in.insert(*p, new).flatten();
                match (was, new) {
                    (None, Some(_)) => peer.accepted += 1,
                    (Some(_), None) => peer.accepted -= 1,
                    // The same route again changes nothing.
                    (Some(a), Some(b)) if a == b => {
                        self.interned.release(a);
                        continue;
                    }
                    (None, None) => continue,
                    _ => {}
                }
                changed.push((*p, was.and_then(|a| self.interned.take(a))));
            }
            self.interned.release(id);
        }
        for (p, was) in changed {
            self.decide(l3, p, was.map(|a| (pi, a)));
        }
    }

    /// The decision process for one prefix [RFC 4271 § 9.1.2] after a
    /// neighbour's Adj-RIB-In entry for it changed (`replaced`: that
    /// neighbour and the accepted route it replaced, if it had one): the
    /// best route goes into the Loc-RIB and the FIB, and every neighbour's
    /// Adj-RIB-Out is looked at again.
    fn decide(&mut self, l3: &mut L3, p: Ipv4Cidr, replaced: Option<(usize, Arc<PathAttrs>)>) {
        let new = self.select(p);
        let old = self.loc_rib.get(&p).copied();
        // The Loc-RIB entry's route is the one replaced: its attributes are gone.
        let old_replaced = replaced
            .as_ref()
            .filter(|(i, _)| old.and_then(Source::peer) == Some(*i));
        let same = match (old, &new) {
            (None, None) => true,
            (Some(a), Some(b)) => a == b.from && old_replaced.is_none(),
            _ => false,
        };
        if same {
            return;
        }
        let old = old.and_then(|from| {
            let attrs = match old_replaced {
                Some((_, a)) => a,
                None => self.attrs(&p, from)?,
            };
            Some(Best {
                from,
                attrs: attrs.clone(),
            })
        });
        let via = new
            .as_ref()
            .filter(|b| b.from != Source::LOCAL)
            .and_then(|b| self.via(&b.attrs));
        match via {
            Some(via) => l3.install_learned(p, via, RouteSource::Bgp),
            None => l3.remove_learned(p, RouteSource::Bgp),
        };
        // A neighbour sent neither the old route nor the new one is sent
        // nothing: its Adj-RIB-Out does not change.
        for pi in 0..self.peers.len() {
            let from = |b: &Option<Best>| b.as_ref().map(|b| b.from);
            if self.sends(pi, &p, from(&old)) || self.sends(pi, &p, from(&new)) {
                self.peers[pi].mark(p, old.as_ref(), false);
            }
        }
        match new {
            Some(b) => {
                self.loc_rib.insert(p, b.from);
            }
            None => {
                self.loc_rib.remove(&p);
            }
        }
        self.rib_changes += 1;
    }

    /// The attributes of the route to `p` from `from`: the Adj-RIB-In
    /// entry's, or the originated ones.
    fn attrs(&self, p: &Ipv4Cidr, from: Source) -> Option<&Arc<PathAttrs>> {
        match from.peer() {
            None => Some(&self.originated),
            Some(i) => self.interned.get((*self.peers[i].adj_in.get(p)?)?),
        }
    }

    /// The Loc-RIB entry for `p` with its attributes.
    fn best_route(&self, p: &Ipv4Cidr) -> Option<Best> {
        let from = *self.loc_rib.get(p)?;
        Some(Best {
            from,
            attrs: self.attrs(p, from)?.clone(),
        })
    }

    /// The neighbour packets on a route with attributes `a` go to: its
    /// NEXT_HOP resolved, `None` when it does not resolve (the route is then
    /// not eligible [RFC 4271 § 9.1.2.1]).
    fn via(&self, a: &PathAttrs) -> Option<Ipv4Addr> {
        let nh = a.next_hop.unwrap_or(Ipv4Addr::UNSPECIFIED);
        self.resolved.get(&nh).copied().flatten()
    }

    /// The best of the routes to `p` [RFC 4271 § 9.1.2.2]: a route the
    /// router originates; else, among the eligible learned ones, the
    /// highest degree of preference (LOCAL_PREF), the shortest AS_PATH, the
    /// lowest ORIGIN, MED among routes from the same neighbouring AS, an
    /// external peer's over an internal one's, the lowest BGP Identifier,
    /// the lowest peer address. (Every next hop is on a connected subnet
    /// or behind a static route, so the IGP cost of step (e) is the same.)
    fn select(&self, p: Ipv4Cidr) -> Option<Best> {
        if self.originate.contains(&p) {
            return self.best_route(&p).filter(|b| b.from == Source::LOCAL);
        }
        type Candidate<'a> = (usize, &'a Arc<PathAttrs>);
        let mut c: Vec<Candidate> = self
            .peers
            .iter()
            .enumerate()
            .filter_map(|(i, peer)| {
                let a = self.interned.get((*peer.adj_in.get(&p)?)?)?;
                (self.via(a).is_some() && peer.session.is_some()).then_some((i, a))
            })
            .collect();
        if c.is_empty() {
            return None;
        }
        let keep_best = |c: &mut Vec<Candidate>, key: &dyn Fn(&Candidate) -> u64| {
            let best = c.iter().map(key).min().unwrap_or(0);
            c.retain(|r| key(r) == best);
        };
        keep_best(&mut c, &|(_, r)| {
            u64::from(u32::MAX - r.local_pref.unwrap_or(DEFAULT_LOCAL_PREF))
        });
        keep_best(&mut c, &|(_, r)| {
            r.as_path.as_ref().map_or(0, |p| p.len()) as u64
        });
        keep_best(&mut c, &|(_, r)| {
            r.origin.unwrap_or(Origin::Incomplete) as u64
        });
        // MED: a route is out if another from the same neighbouring AS has a
        // lower one (a missing MED is the lowest, 0) [§ 9.1.2.2 (c)].
        let neighbor_as = |(i, r): &Candidate| {
            r.as_path
                .as_ref()
                .and_then(|p| p.first_as())
                .unwrap_or(self.peers[*i].n.remote_as)
        };
        let meds: Vec<(u32, u32)> = c
            .iter()
            .map(|r| (neighbor_as(r), r.1.med.unwrap_or(0)))
            .collect();
        c.retain(|r| {
            let (asn, med) = (neighbor_as(r), r.1.med.unwrap_or(0));
            !meds.iter().any(|(a, m)| *a == asn && *m < med)
        });
        if c.iter().any(|(i, _)| !self.peers[*i].n.internal) {
            c.retain(|(i, _)| !self.peers[*i].n.internal);
        }
        let id = |i: usize| {
            self.peers[i]
                .session
                .as_ref()
                .map_or(Ipv4Addr::BROADCAST, |s| s.peer_id)
        };
        keep_best(&mut c, &|(i, _)| u64::from(u32::from(id(*i))));
        keep_best(&mut c, &|(i, _)| {
            u64::from(u32::from(self.peers[*i].n.address))
        });
        let (i, attrs) = c[0];
        Some(Best {
            from: Source(i as u16),
            attrs: attrs.clone(),
        })
    }

    /// Whether a Loc-RIB route to `p` from `from` is sent to neighbour `pi`
    /// [RFC 4271 § 9.1.3; RFC 8212 by the export policy's default].
    fn sends(&self, pi: usize, p: &Ipv4Cidr, from: Option<Source>) -> bool {
        let Some(from) = from else {
            return false;
        };
        let peer = &self.peers[pi];
        if let Some(src) = from.peer() {
            // Not back to where it came from; internal routes not to
            // internal peers (no route reflection) [§ 9.2].
            if src == pi || (self.peers[src].n.internal && peer.n.internal) {
                return false;
            }
        }
        peer.n.export.allows(p)
    }

    /// What the Loc-RIB entry `best` for `p` looks like when sent to
    /// neighbour `pi`, or `None` if it is not sent [RFC 4271 § 9.1.3, § 9.2,
    /// § 5.1; RFC 8212 by the export policy's default].
    fn export_attrs(
        &self,
        pi: usize,
        p: &Ipv4Cidr,
        best: Option<&Best>,
        cache: &mut FastMap<usize, Arc<PathAttrs>>,
    ) -> Option<Arc<PathAttrs>> {
        let best = best.filter(|b| self.sends(pi, p, Some(b.from)))?;
        let peer = &self.peers[pi];
        let key = Arc::as_ptr(&best.attrs) as usize;
        if let Some(a) = cache.get(&key) {
            return Some(a.clone());
        }
        let four = peer.session.as_ref().is_some_and(|s| s.four_octet);
        let mut a = (*best.attrs).clone();
        let local = best.from == Source::LOCAL;
        if peer.n.internal {
            // § 5.1.3: the NEXT_HOP is kept within the AS unless told.
            if local || peer.n.next_hop_self {
                a.next_hop = Some(peer.n.local);
            }
            a.local_pref.get_or_insert(DEFAULT_LOCAL_PREF);
        } else {
            a.as_path = Some(a.path().prepend(self.local_as));
            a.next_hop = Some(peer.n.local);
            a.local_pref = None;
            // A MED learned from another AS is not passed on [§ 5.1.4].
            if !local {
                a.med = None;
            }
        }
        // Unknown attributes: optional transitive ones go on with Partial
        // set, the rest stays here [§ 5, § 9.1.3].
        a.unknown.retain(|u| u.flags & bgp::attr::TRANSITIVE != 0);
        for u in &mut a.unknown {
            u.flags |= bgp::attr::PARTIAL;
        }
        let a = Arc::new(a.for_peer(four));
        cache.insert(key, a.clone());
        Some(a)
    }

    /// Turns the neighbour's dirty prefixes into UPDATEs while the
    /// connection has room [RFC 4271 § 9.2]: announcements grouped by
    /// their attributes, each UPDATE as full as 4096 octets allow.
    fn export(&mut self, pi: usize) {
        let Some(ci) = self.peers[pi].established() else {
            return;
        };
        let four = self.peers[pi]
            .session
            .as_ref()
            .is_some_and(|s| s.four_octet);
        let mut cache: FastMap<usize, Arc<PathAttrs>> = FastMap::default();
        while self.peers[pi].conns[ci].tx.len() < TX_HIGH_WATER && !self.peers[pi].dirty.is_empty()
        {
            let batch: Vec<(Ipv4Cidr, Pending)> = {
                let peer = &mut self.peers[pi];
                let n = peer.dirty.len().saturating_sub(512);
                let b = peer.dirty.split_off(n);
                b.into_iter()
                    .filter_map(|p| Some((p, peer.pending.remove(&p)?)))
                    .collect()
            };
            // What the neighbour holds (the export of the Loc-RIB entry it
            // was last sent) against what it should: the prefixes to
            // withdraw (`None`) or announce, and whether it holds them.
            let sends: Vec<(Ipv4Cidr, Option<Arc<PathAttrs>>, bool)> = batch
                .iter()
                .filter_map(|(p, w)| {
                    let held = self.export_attrs(pi, p, w.was.as_ref(), &mut cache);
                    let want = self.export_attrs(pi, p, self.best_route(p).as_ref(), &mut cache);
                    let unchanged = match (&held, &want) {
                        (None, None) => true,
                        (Some(old), Some(a)) => !w.resend && old == a,
                        _ => false,
                    };
                    (!unchanged).then(|| (*p, want, held.is_some()))
                })
                .collect();
            let peer = &mut self.peers[pi];
            let mut withdrawn: Vec<Ipv4Cidr> = Vec::new();
            let mut groups: Vec<(Arc<PathAttrs>, Vec<Ipv4Cidr>)> = Vec::new();
            for (p, want, held) in sends {
                match want {
                    None => {
                        peer.advertised = peer.advertised.saturating_sub(1);
                        withdrawn.push(p);
                    }
                    Some(a) => {
                        if !held {
                            peer.advertised += 1;
                        }
                        match groups.iter_mut().find(|(g, _)| Arc::ptr_eq(g, &a)) {
                            Some((_, v)) => v.push(p),
                            None => groups.push((a, vec![p])),
                        }
                    }
                }
            }
            let c = &mut peer.conns[ci];
            let mut sent = 0;
            // Withdrawals: as many per UPDATE as fit.
            for chunk in pack(&withdrawn, bgp::MAX_LEN - 23) {
                let u = UpdateRepr {
                    withdrawn: chunk.to_vec(),
                    ..UpdateRepr::default()
                };
                emit(&Message::Update(u), four, &mut c.tx);
                sent += 1;
            }
            for (attrs, prefixes) in groups {
                let room = bgp::MAX_LEN - 23 - attrs.buffer_len(four);
                for chunk in pack(&prefixes, room) {
                    let u = UpdateRepr {
                        attrs: (*attrs).clone(),
                        nlri: chunk.to_vec(),
                        ..UpdateRepr::default()
                    };
                    emit(&Message::Update(u), four, &mut c.tx);
                    sent += 1;
                }
            }
            peer.counters.updates_out += sent;
            peer.counters.messages_out += sent;
        }
        let peer = &mut self.peers[pi];
        if peer.dirty.is_empty() && peer.dirty.capacity() > 1024 {
            peer.clear_dirty();
        }
    }

    /// Writes what the neighbour's connections have queued into their sockets.
    fn flush(&mut self, l3: &mut L3, pi: usize) {
        let Some(tcp) = l3.tcp_stack_if_made() else {
            return;
        };
        for c in &mut self.peers[pi].conns {
            if c.tx.is_empty() || c.dead {
                continue;
            }
            let s = tcp.socket(c.sock);
            if !s.may_send() {
                continue;
            }
            let n = s.send_slice(&c.tx).unwrap_or(0);
            c.tx.drain(..n);
        }
    }

    /// Moves the neighbour's dead connections to the closing list.
    fn bury(&mut self, l3: &mut L3, pi: usize) {
        let now = self.now;
        let peer = &mut self.peers[pi];
        let mut i = 0;
        while i < peer.conns.len() {
            if !peer.conns[i].dead {
                i += 1;
                continue;
            }
            let c = peer.conns.swap_remove(i);
            if let Some(tcp) = l3.tcp_stack_if_made() {
                let s = tcp.socket(c.sock);
                if c.tx.is_empty() {
                    s.close();
                }
            }
            self.closing.push(Closing {
                sock: c.sock,
                tx: c.tx,
                deadline: now + CLOSE_LINGER,
            });
        }
    }

    /// Finishes closing sockets: the rest of their bytes (a NOTIFICATION),
    /// FIN, and away once closed or at the deadline.
    fn reap(&mut self, l3: &mut L3) {
        let now = self.now;
        let Some(tcp) = l3.tcp_stack_if_made() else {
            return;
        };
        self.closing.retain_mut(|c| {
            let s = tcp.socket(c.sock);
            if !c.tx.is_empty() && s.may_send() {
                let n = s.send_slice(&c.tx).unwrap_or(0);
                c.tx.drain(..n);
                if c.tx.is_empty() {
                    s.close();
                }
            }
            let gone = matches!(s.state(), TcpState::Closed | TcpState::TimeWait);
            if gone || now >= c.deadline {
                if !gone {
                    s.abort();
                    return now < c.deadline + CLOSE_LINGER;
                }
                tcp.remove(c.sock);
                return false;
            }
            true
        });
    }

    /// Sends `n` on the connection and closes it [RFC 4271 § 6: "a
    /// NOTIFICATION message … and the BGP connection is closed"].
    fn fail(&mut self, l3: &mut L3, pi: usize, ci: usize, n: NotificationRepr) {
        let peer = &mut self.peers[pi];
        tracing::info!(neighbor = %peer.n.address, notification = %n, "BGP NOTIFICATION sent");
        let c = &mut peer.conns[ci];
        if c.state != ConnState::Connecting {
            emit(&Message::Notification(n.clone()), true, &mut c.tx);
            peer.counters.messages_out += 1;
        }
        peer.last_error = Some(format!("NOTIFICATION sent: {n}"));
        peer.last_sent = Some(n);
        self.drop_conn(l3, pi, ci, "");
    }

    /// The connection is gone; if it carried the session, every route
    /// learned over it is withdrawn [RFC 4271 § 8.2.2, § 9.1].
    fn drop_conn(&mut self, l3: &mut L3, pi: usize, ci: usize, why: &str) {
        let now = self.now;
        let peer = &mut self.peers[pi];
        let c = &mut peer.conns[ci];
        if c.dead {
            return;
        }
        c.dead = true;
        let was_session = c.state == ConnState::Established;
        if !why.is_empty() {
            peer.last_error = Some(why.to_string());
        }
        if peer.conns.iter().all(|c| c.dead) {
            peer.retry_at = Some(now + peer.n.connect_retry.mul_f64(0.75));
        }
        if was_session {
            tracing::info!(neighbor = %peer.n.address, why, "BGP session down");
            peer.session = None;
            peer.advertised = 0;
            peer.clear_dirty();
            let learned = std::mem::take(&mut peer.adj_in);
            peer.accepted = 0;
            for (p, id) in learned {
                if let Some(id) = id {
                    let attrs = self.interned.take(id);
                    self.decide(l3, p, attrs.map(|a| (pi, a)));
                }
            }
        }
    }

    /// When [`Speaker::run`] wants to run next.
    pub fn poll_at(&self) -> Option<Instant> {
        if !self.started {
            return Some(Instant::ZERO);
        }
        let mut at: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                at = Some(at.map_or(t, |a| a.min(t)));
            }
        };
        for p in &self.peers {
            if p.conns.iter().all(|c| c.dead) && !p.n.passive {
                consider(p.retry_at);
            }
            for c in p.conns.iter().filter(|c| !c.dead) {
                consider(c.hold_at);
                consider(c.keepalive_at);
                if c.state == ConnState::Connecting {
                    consider(Some(c.started + p.n.connect_retry));
                }
            }
        }
        for c in &self.closing {
            consider(Some(c.deadline));
        }
        at
    }

    /// True when nothing waits in the speaker: no dirty prefix, no queued
    /// byte (what the sockets hold is counted by [`Speaker::report`]).
    fn quiet(&self) -> bool {
        self.peers
            .iter()
            .all(|p| p.dirty.is_empty() && p.conns.iter().all(|c| c.tx.is_empty()))
            && self.closing.iter().all(|c| c.tx.is_empty())
    }

    /// The speaker's sessions and counts, as `d11 show ROUTER bgp` prints them.
    pub fn report(&self, l3: &L3) -> BgpReport {
        let now = self.now;
        let quiet = self.quiet();
        let mut unacked = 0;
        if let Some(t) = l3.tcp_ref() {
            for p in &self.peers {
                for c in &p.conns {
                    unacked += t.unacked(c.sock);
                }
            }
        }
        BgpReport {
            local_as: self.local_as,
            router_id: self.router_id,
            neighbors: self
                .peers
                .iter()
                .map(|p| {
                    let s = p.session.as_ref();
                    NeighborReport {
                        address: p.n.address,
                        remote_as: p.n.remote_as,
                        kind: if p.n.internal { "iBGP" } else { "eBGP" }.into(),
                        state: p.state(),
                        uptime_ms: s.map(|s| now.saturating_since(s.since).as_millis() as u64),
                        hold_time: s.map(|s| s.hold),
                        peer_id: s.map(|s| s.peer_id),
                        capabilities: s.map(|s| s.capabilities.join(", ")),
                        four_octet_as: s.map(|s| s.four_octet),
                        route_refresh: s.map(|s| s.route_refresh),
                        received: p.adj_in.len(),
                        accepted: p.accepted,
                        advertised: p.advertised,
                        import: p.n.import.to_string(),
                        export: p.n.export.to_string(),
                        last_notification_sent: p.last_sent.as_ref().map(|n| n.to_string()),
                        last_notification_received: p.last_received.as_ref().map(|n| n.to_string()),
                        last_error: p.last_error.clone(),
                    }
                })
                .collect(),
            counters: self
                .peers
                .iter()
                .map(|p| NeighborCounters {
                    address: p.n.address,
                    counters: p.counters.clone(),
                })
                .collect(),
            loc_rib: self.loc_rib.len(),
            rib_changes: self.rib_changes,
            rejected_connections: self.rejected,
            pending: !quiet || unacked > 0,
        }
    }

    /// The Loc-RIB with every candidate route, best marked, as
    /// `d11 show ROUTER rib` prints it (like `birdc show route all`),
    /// prefixes in address order.
    pub fn rib(&self) -> Vec<RibRow> {
        self.first_rib_rows(usize::MAX).0
    }

    /// The first `limit` rows of [`Speaker::rib`], and how many it has.
    pub fn first_rib_rows(&self, limit: usize) -> (Vec<RibRow>, usize) {
        let mut prefixes: Vec<Ipv4Cidr> = self.loc_rib.keys().copied().collect();
        for p in &self.peers {
            prefixes.extend(
                p.adj_in
                    .iter()
                    .filter(|(_, r)| r.is_some())
                    .map(|(k, _)| *k),
            );
        }
        prefixes.sort_by_key(|p| (u32::from(p.addr()), p.prefix_len()));
        prefixes.dedup();
        let mut rows = Vec::new();
        let mut total = 0;
        for p in prefixes {
            let best = self.loc_rib.get(&p);
            if best == Some(&Source::LOCAL) {
                total += 1;
                if rows.len() < limit {
                    rows.push(row(p, &self.originated, None, "local".into(), true, true));
                }
            }
            for (i, peer) in self.peers.iter().enumerate() {
                let attrs = peer.adj_in.get(&p).copied().flatten();
                if let Some(a) = attrs.and_then(|id| self.interned.get(id)) {
                    total += 1;
                    if rows.len() >= limit {
                        continue;
                    }
                    let is_best = best.is_some_and(|b| b.peer() == Some(i));
                    rows.push(row(
                        p,
                        a,
                        a.next_hop,
                        peer.n.address.to_string(),
                        is_best,
                        self.via(a).is_some(),
                    ));
                }
            }
        }
        (rows, total)
    }

    /// The best route to exactly `p` as a row, for `d11 trace`.
    pub fn best(&self, p: Ipv4Cidr) -> Option<RibRow> {
        let b = self.best_route(&p)?;
        let from = match b.from.peer() {
            None => "local".to_string(),
            Some(i) => self.peers[i].n.address.to_string(),
        };
        Some(row(p, &b.attrs, b.attrs.next_hop, from, true, true))
    }
}

fn row(
    p: Ipv4Cidr,
    a: &PathAttrs,
    next_hop: Option<Ipv4Addr>,
    from: String,
    best: bool,
    reachable: bool,
) -> RibRow {
    RibRow {
        prefix: p,
        as_path: a.path().to_string(),
        next_hop,
        origin: a.origin.map(|o| o.to_string()).unwrap_or_default(),
        local_pref: a.local_pref,
        med: a.med,
        from,
        best,
        reachable,
    }
}

/// Splits `prefixes` into runs whose encoded size fits `room` octets.
fn pack(prefixes: &[Ipv4Cidr], room: usize) -> Vec<&[Ipv4Cidr]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut size = 0;
    for (i, p) in prefixes.iter().enumerate() {
        let n = bgp::prefix_len_on_wire(p);
        if size + n > room && i > start {
            out.push(&prefixes[start..i]);
            start = i;
            size = 0;
        }
        size += n;
    }
    if start < prefixes.len() {
        out.push(&prefixes[start..]);
    }
    out
}

/// The speaker in a router's report (`d11 show ROUTER bgp`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpReport {
    pub local_as: u32,
    pub router_id: Ipv4Addr,
    pub neighbors: Vec<NeighborReport>,
    /// Each neighbour's message counts, in the order of `neighbors`.
    pub counters: Vec<NeighborCounters>,
    /// Prefixes in the Loc-RIB.
    pub loc_rib: usize,
    /// Changes of the Loc-RIB since the start.
    pub rib_changes: u64,
    /// Connections to port 179 from addresses that are no neighbour, reset.
    pub rejected_connections: u64,
    /// Something waits to be sent or acknowledged.
    pub pending: bool,
}

/// One neighbour in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighborReport {
    pub address: Ipv4Addr,
    pub remote_as: u32,
    /// `eBGP` or `iBGP`.
    pub kind: String,
    pub state: FsmState,
    pub uptime_ms: Option<u64>,
    /// Negotiated.
    pub hold_time: Option<u16>,
    pub peer_id: Option<Ipv4Addr>,
    /// What the neighbour's OPEN announced.
    pub capabilities: Option<String>,
    pub four_octet_as: Option<bool>,
    pub route_refresh: Option<bool>,
    /// Prefixes in its Adj-RIB-In: received, and accepted by the import policy.
    pub received: usize,
    pub accepted: usize,
    /// Prefixes in its Adj-RIB-Out.
    pub advertised: usize,
    pub import: String,
    pub export: String,
    pub last_notification_sent: Option<String>,
    pub last_notification_received: Option<String>,
    pub last_error: Option<String>,
}

/// One neighbour's counters in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighborCounters {
    pub address: Ipv4Addr,
    #[serde(flatten)]
    pub counters: PeerCounters,
}

/// One route of the Loc-RIB view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RibRow {
    pub prefix: Ipv4Cidr,
    pub as_path: String,
    pub next_hop: Option<Ipv4Addr>,
    pub origin: String,
    pub local_pref: Option<u32>,
    pub med: Option<u32>,
    /// The neighbour it was learned from, or `local`.
    pub from: String,
    pub best: bool,
    /// Its NEXT_HOP resolves (else it cannot be best).
    pub reachable: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use d11_core::L3Port;
    use d11_wire::bgp::AsPath;
    use d11_wire::MacAddr;

    fn l3() -> L3 {
        L3::with_ports(vec![
            L3Port {
                name: "a".into(),
                mac: MacAddr([2, 0, 0, 0, 0, 1]),
                address: "192.0.2.1/30".parse().unwrap(),
                mtu: 1500,
            },
            L3Port {
                name: "b".into(),
                mac: MacAddr([2, 0, 0, 0, 0, 2]),
                address: "192.0.2.5/30".parse().unwrap(),
                mtu: 1500,
            },
            L3Port {
                name: "c".into(),
                mac: MacAddr([2, 0, 0, 0, 0, 3]),
                address: "203.0.113.1/24".parse().unwrap(),
                mtu: 1500,
            },
        ])
    }

    fn settings(text: &str) -> Result<BgpSettings, ConfigError> {
        let t: toml::Table = toml::from_str(text).unwrap();
        d11_core::settings::parse::<crate::router::RouterSettings>(&t, "role router")
            .map(|s| s.bgp.expect("a bgp table"))
    }

    fn speaker(text: &str) -> Result<Speaker, ConfigError> {
        Speaker::new(&settings(text)?, &l3(), &[])
    }

    #[test]
    fn a_loc_rib_entry_stays_eight_octets_and_an_adj_rib_in_one_twelve() {
        // docs/bgp.md's memory figure counts on it.
        assert_eq!(std::mem::size_of::<(Ipv4Cidr, Source)>(), 8);
        // And an Adj-RIB-In entry twelve.
        assert_eq!(std::mem::size_of::<(Ipv4Cidr, Option<AttrId>)>(), 12);
    }

    #[test]
    fn policies_read_all_none_and_prefix_lists() {
        let s = settings(
            r#"bgp = { local_as = 64500, neighbors = [
                 { address = "192.0.2.2", remote_as = 64510, import = "all", export = ["203.0.113.0/24", "10.0.0.0/8+"] } ] }"#,
        )
        .unwrap();
        let n = &s.neighbors[0];
        assert_eq!(n.import, Some(Policy::All));
        let e = n.export.clone().unwrap();
        assert!(e.allows(&"203.0.113.0/24".parse().unwrap()));
        assert!(!e.allows(&"203.0.113.0/25".parse().unwrap()), "exact");
        assert!(
            e.allows(&"10.1.0.0/16".parse().unwrap()),
            "more specific with +"
        );
        assert!(e.allows(&"10.0.0.0/8".parse().unwrap()));
        assert!(!e.allows(&"10.0.0.0/7".parse().unwrap()));
        assert_eq!(e.to_string(), "203.0.113.0/24 10.0.0.0/8+");
        let err = settings(r#"bgp = { local_as = 1, neighbors = [ { address = "192.0.2.2", remote_as = 2, import = "some" } ] }"#)
            .unwrap_err();
        assert_eq!(err.key, "config.bgp.neighbors[0].import");
        assert!(err.message.contains("\"all\", \"none\""), "{err}");
        let err = settings(r#"bgp = { local_as = 1, neighbors = [ { address = "192.0.2.2", remote_as = 2, export = ["10.0.0.1/8"] } ] }"#)
            .unwrap_err();
        assert!(err.message.contains("host bits"), "{err}");
    }

    #[test]
    fn rfc_8212_an_external_neighbour_without_policy_gets_nothing() {
        let s = speaker(
            r#"bgp = { local_as = 64500, neighbors = [
                 { address = "192.0.2.2", remote_as = 64510 },
                 { address = "192.0.2.6", remote_as = 64500 } ] }"#,
        )
        .unwrap();
        let r = s.report(&l3());
        assert_eq!(
            (
                r.neighbors[0].import.as_str(),
                r.neighbors[0].export.as_str()
            ),
            ("none", "none")
        );
        assert_eq!(r.neighbors[0].kind, "eBGP");
        assert_eq!(
            (
                r.neighbors[1].import.as_str(),
                r.neighbors[1].export.as_str()
            ),
            ("all", "all")
        );
        assert_eq!(r.neighbors[1].kind, "iBGP");
        assert_eq!(r.neighbors[0].state, FsmState::Idle);
        assert_eq!(
            r.router_id,
            Ipv4Addr::new(192, 0, 2, 1),
            "the lowest port address"
        );
    }

    #[test]
    fn bad_settings_are_one_error_naming_the_key() {
        let cases = [
            (
                r#"bgp = { local_as = 0 }"#,
                "config.bgp.local_as",
                "reserved",
            ),
            (
                r#"bgp = { local_as = 23456 }"#,
                "config.bgp.local_as",
                "reserved",
            ),
            (
                r#"bgp = { local_as = 1, router_id = "0.0.0.0" }"#,
                "config.bgp.router_id",
                "not a usable",
            ),
            (
                r#"bgp = { local_as = 1, originate = ["198.51.100.0/24"] }"#,
                "config.bgp.originate[0]",
                "neither a connected",
            ),
            (
                r#"bgp = { local_as = 1, originate = ["203.0.113.7/24"] }"#,
                "config.bgp.originate[0]",
                "host bits",
            ),
            (
                r#"bgp = { local_as = 1, neighbors = [ { address = "198.51.100.1", remote_as = 2 } ] }"#,
                "config.bgp.neighbors[0].address",
                "none of this router's subnets",
            ),
            (
                r#"bgp = { local_as = 1, neighbors = [ { address = "192.0.2.1", remote_as = 2 } ] }"#,
                "config.bgp.neighbors[0].address",
                "own address",
            ),
            (
                r#"bgp = { local_as = 1, neighbors = [ { address = "192.0.2.2", remote_as = 2 }, { address = "192.0.2.2", remote_as = 3 } ] }"#,
                "config.bgp.neighbors[1].address",
                "twice",
            ),
            (
                r#"bgp = { local_as = 1, neighbors = [ { address = "192.0.2.2", remote_as = 2, hold_time = 2 } ] }"#,
                "config.bgp.neighbors[0].hold_time",
                "at least 3",
            ),
            (
                r#"bgp = { local_as = 1, neighbors = [ { address = "192.0.2.2", remote_as = 0 } ] }"#,
                "config.bgp.neighbors[0].remote_as",
                "reserved",
            ),
            (
                r#"bgp = { local_as = 1, neighbors = [ { address = "192.0.2.2", remote_as = 2, colour = 1 } ] }"#,
                "config.bgp.neighbors[0].colour",
                "unknown field",
            ),
        ];
        for (text, key, msg) in cases {
            let e = speaker(text).map(|_| ()).unwrap_err();
            assert_eq!(e.key, key, "{text}");
            assert!(e.message.contains(msg), "{text}: {e}");
            assert_eq!(e.to_string().lines().count(), 1, "{e}");
        }
        // A static route's destination may be originated.
        let s = settings(r#"bgp = { local_as = 1, originate = ["198.51.100.128/25"] }"#).unwrap();
        assert!(Speaker::new(&s, &l3(), &["198.51.100.128/25".parse().unwrap()]).is_ok());
    }

    /// A speaker with three external neighbours in session.
    fn three_in_session() -> Speaker {
        let mut s = speaker(
            r#"bgp = { local_as = 64500, neighbors = [
                 { address = "192.0.2.2", remote_as = 64510, import = "all", export = "all" },
                 { address = "192.0.2.6", remote_as = 64520, import = "all", export = "all" },
                 { address = "203.0.113.9", remote_as = 64510, import = "all" } ] }"#,
        )
        .unwrap();
        for (i, peer) in s.peers.iter_mut().enumerate() {
            peer.session = Some(Session {
                four_octet: true,
                route_refresh: true,
                hold: 90,
                // Identifiers in the reverse order of the addresses.
                peer_id: Ipv4Addr::new(10, 0, 0, 9 - i as u8),
                since: Instant::ZERO,
                capabilities: vec![],
            });
        }
        s
    }

    /// [`three_in_session`], each neighbour having sent `routes[i]` for
    /// 198.18.0.0/15 (`None`: nothing): the one chosen.
    fn contest(routes: [Option<PathAttrs>; 3]) -> Option<usize> {
        let mut s = three_in_session();
        let p: Ipv4Cidr = "198.18.0.0/15".parse().unwrap();
        for (i, r) in routes.into_iter().enumerate() {
            if let Some(a) = r {
                let nh = a.next_hop.unwrap_or(Ipv4Addr::UNSPECIFIED);
                s.resolved.insert(nh, Some(nh));
                let id = s.interned.hold(a);
                s.peers[i].adj_in.insert(p, Some(id));
            }
        }
        s.select(p)?.from.peer()
    }

    fn route(path: &[u32], lp: u32, med: Option<u32>, origin: Origin) -> Option<PathAttrs> {
        Some(PathAttrs {
            origin: Some(origin),
            as_path: Some(AsPath::sequence(path)),
            next_hop: Some(Ipv4Addr::new(192, 0, 2, 2)),
            local_pref: Some(lp),
            med,
            ..PathAttrs::default()
        })
    }

    /// What the Loc-RIB holds for `p` and what each neighbour waits to be
    /// sent (the AS_PATH it was last sent, empty if nothing), after `u`
    /// from neighbour 0; the pending lists are emptied as if sent.
    fn after(s: &mut Speaker, l3: &mut L3, u: UpdateRepr) -> (Option<String>, Vec<Option<String>>) {
        let p: Ipv4Cidr = "198.18.0.0/15".parse().unwrap();
        s.on_update(l3, 0, u);
        let path = |b: &Best| b.attrs.path().to_string();
        let waiting = s
            .peers
            .iter_mut()
            .map(|peer| {
                let was = peer.pending.get(&p).map(|w| w.was.as_ref().map(path));
                peer.clear_dirty();
                was.map(|w| w.unwrap_or_default())
            })
            .collect();
        (s.best_route(&p).map(|b| path(&b)), waiting)
    }

    #[test]
    fn a_replaced_route_marks_the_neighbours_it_is_sent_to_with_the_one_replaced() {
        let mut s = three_in_session();
        let mut l3 = l3();
        let update = |path: &[u32]| UpdateRepr {
            attrs: PathAttrs {
                next_hop: Some(Ipv4Addr::new(192, 0, 2, 2)),
                ..route(path, 100, None, Origin::Igp).unwrap()
            },
            nlri: vec!["198.18.0.0/15".parse().unwrap()],
            ..UpdateRepr::default()
        };
        // New: neighbour 1 looks at it, having been sent nothing; neither
        // neighbour 0 (where it came from) nor 2 (no export policy [RFC
        // 8212]) would be sent it.
        assert_eq!(
            after(&mut s, &mut l3, update(&[64510])),
            (Some("64510".into()), vec![None, Some(String::new()), None])
        );
        // Replaced: the Loc-RIB entry is the new route; what neighbour 1
        // was sent is the route replaced.
        assert_eq!(
            after(&mut s, &mut l3, update(&[64510, 1])),
            (
                Some("64510 1".into()),
                vec![None, Some("64510".into()), None]
            )
        );
        // The same again: no change.
        assert_eq!(
            after(&mut s, &mut l3, update(&[64510, 1])),
            (Some("64510 1".into()), vec![None, None, None])
        );
        // Withdrawn.
        let w = UpdateRepr {
            withdrawn: vec!["198.18.0.0/15".parse().unwrap()],
            ..UpdateRepr::default()
        };
        assert_eq!(
            after(&mut s, &mut l3, w),
            (None, vec![None, Some("64510 1".into()), None])
        );
    }

    #[test]
    fn an_attribute_set_is_freed_with_the_last_route_that_holds_it() {
        let mut s = three_in_session();
        let mut l3 = l3();
        let (p, q): (Ipv4Cidr, Ipv4Cidr) = (
            "198.18.0.0/15".parse().unwrap(),
            "198.51.100.0/24".parse().unwrap(),
        );
        let update = |path: &[u32], nlri: Vec<Ipv4Cidr>| UpdateRepr {
            attrs: route(path, 100, None, Origin::Igp).unwrap(),
            nlri,
            ..UpdateRepr::default()
        };
        let sets = |s: &Speaker| s.interned.index.len();
        s.on_update(&mut l3, 0, update(&[64510], vec![p, q]));
        assert_eq!(sets(&s), 1, "both routes hold one set");
        let first = Arc::downgrade(s.attrs(&p, Source(0)).unwrap());
        // The same again: nothing changes, nothing is added.
        s.on_update(&mut l3, 0, update(&[64510], vec![p, q]));
        assert_eq!(sets(&s), 1);
        assert_eq!(s.interned.slots[0].as_ref().unwrap().holders, 2);
        // p moves to another set: the first is still q's.
        s.on_update(&mut l3, 0, update(&[64510, 1], vec![p]));
        assert_eq!(sets(&s), 2);
        assert!(first.upgrade().is_some());
        // q withdrawn: the first set has no route left.
        let w = UpdateRepr {
            withdrawn: vec![q],
            ..UpdateRepr::default()
        };
        s.on_update(&mut l3, 0, w);
        assert_eq!(sets(&s), 1);
        assert!(first.upgrade().is_none(), "freed");
        // A refused route (a loop through our AS) holds no set.
        s.on_update(&mut l3, 0, update(&[64510, 64500], vec![q]));
        assert_eq!(sets(&s), 1, "a looped route holds no set");
        assert_eq!(s.peers[0].adj_in.get(&q), Some(&None));
        // Its slot is taken again by the next new set.
        s.on_update(&mut l3, 0, update(&[64510, 2], vec![q]));
        assert_eq!((sets(&s), s.interned.slots.len()), (2, 2));
        assert_eq!(
            s.best_route(&q).unwrap().attrs.path().to_string(),
            "64510 2"
        );
    }

    #[test]
    fn the_decision_process_applies_rfc_4271_9_1_2_2_in_order() {
        use Origin::*;
        // (a) the highest LOCAL_PREF beats a shorter path.
        assert_eq!(
            contest([
                route(&[64510, 1, 2], 200, None, Igp),
                route(&[64520], 100, None, Igp),
                None
            ]),
            Some(0)
        );
        // (b) then the shortest AS_PATH.
        assert_eq!(
            contest([
                route(&[64510, 1], 100, None, Igp),
                route(&[64520], 100, None, Igp),
                None
            ]),
            Some(1)
        );
        // (c) then the lowest ORIGIN.
        assert_eq!(
            contest([
                route(&[64510], 100, None, Incomplete),
                route(&[64520], 100, None, Egp),
                None
            ]),
            Some(1)
        );
        // (d) MED only between routes from the same neighbouring AS: 0 and 2
        // are both from 64510 and 0's higher MED puts it out; 1 (64520)
        // has the highest MED but is compared with nobody; the identifier
        // then picks 2 (10.0.0.7) over 1 (10.0.0.8).
        assert_eq!(
            contest([
                route(&[64510], 100, Some(50), Igp),
                route(&[64520], 100, Some(900), Igp),
                route(&[64510], 100, Some(10), Igp)
            ]),
            Some(2)
        );
        // The other way round 2 is out, and 1 (10.0.0.8) beats 0 (10.0.0.9).
        assert_eq!(
            contest([
                route(&[64510], 100, Some(10), Igp),
                route(&[64520], 100, Some(900), Igp),
                route(&[64510], 100, Some(50), Igp)
            ]),
            Some(1)
        );
        // (f) the lowest BGP Identifier among equals.
        assert_eq!(
            contest([
                route(&[64510], 100, None, Igp),
                route(&[64520], 100, None, Igp),
                None
            ]),
            Some(1)
        );
        // An unresolvable next hop is not eligible; no route, no best.
        assert_eq!(contest([None, None, None]), None);
    }
}
