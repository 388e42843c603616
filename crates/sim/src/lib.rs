//! The in-memory simulator: the lab's elements wired by virtual links, run on
//! a virtual clock with seeded loss, no root and no sockets.
//!
//! It is the real driver's twin: it calls the same [`Element`] methods, keeps
//! the same per-port [`Counters`] (`rx` before `on_frame`, `tx` per frame
//! sent, the drops an element reports), and honours [`Element::poll_at`]. What
//! a driver would read from a clock and sockets comes from an event queue
//! ordered by (virtual time, insertion order), and loss from a seeded [`Rng`]
//! per link direction (seeded in turn from the simulator's seed, so traffic
//! on one link never shifts the losses of another): the same seed replays
//! every frame and every drop.
//!
//! Each link can be captured into one pcapng with one interface per link,
//! named `node:port` after the link's first end and showing what `tcpdump`
//! on that end would see: frames it sends (even if the wire then loses them)
//! and frames it receives.

#![forbid(unsafe_code)]

mod host;
mod lab;

pub use host::{Message, Quoted, Received, SimHost};
pub use lab::{LabError, SimLab};

use d11_core::pcapng::PcapngWriter;
use d11_core::{Counters, Ctx, Element, Instant, Outbox, PortId, Rng};
use std::any::type_name;
use std::cmp::{Ordering, Reverse};
use std::collections::binary_heap::{BinaryHeap, PeekMut};
use std::path::Path;
use std::time::Duration;

/// Where virtual time starts in captures: 2018-11-11 00:00:00 +08:00, the
/// first second of Singles' Day, as seconds since the Unix epoch.
pub const EPOCH: Duration = Duration::from_secs(1_541_865_600);

/// Events one `run_*` call processes at most, unless [`Sim::set_step_cap`]
/// says otherwise. A frame loop (a ring of flooding switches) stops here.
pub const DEFAULT_STEP_CAP: u64 = 1_000_000;

/// What the simulator needs of a node: an [`Element`] it can hand back as its
/// concrete type ([`Sim::node`]), as the role registry builds them.
pub use d11_core::AnyElement as SimNode;

/// A node, numbered in the order it was added.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct NodeId(pub usize);

/// A link, numbered in the order it was made.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct LinkId(pub usize);

/// How a link behaves, the same in both directions.
#[derive(Copy, Clone, PartialEq, Debug, Default)]
pub struct LinkParams {
    /// One-way propagation delay.
    pub delay: Duration,
    /// Probability that a frame is lost, drawn per frame per direction.
    pub loss: f64,
}

/// What crossed a link, indexed by the sending end (0 is the first end given
/// to [`Sim::link`]).
#[derive(Copy, Clone, PartialEq, Eq, Debug, Default)]
pub struct LinkStats {
    pub sent: [u64; 2],
    pub lost: [u64; 2],
}

/// Why a `run_*` call returned.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum Stop {
    /// The clock reached the deadline.
    Deadline,
    /// Nothing is left to do: no frame in flight, no timer pending.
    Idle,
    /// The step cap was reached first (a frame loop, or a timer that never
    /// settles); the clock stays at the last event.
    StepCap,
}

struct Node {
    name: String,
    element: Box<dyn SimNode>,
    ports: Vec<String>,
    /// The link and end each port is plugged into.
    wires: Vec<Option<(LinkId, usize)>>,
    counters: Counters,
    /// The pending timer event (its time and sequence number); others are stale.
    timer: Option<(Instant, u64)>,
    /// The node's time and generator (seeded from the simulator's seed).
    cx: Ctx,
}

struct Link {
    ends: [(NodeId, PortId); 2],
    params: LinkParams,
    /// Loss draws for frames sent from each end.
    rng: [Rng; 2],
    stats: LinkStats,
    /// The capture's interface for this link.
    pcap_if: Option<u32>,
}

enum What {
    /// A frame arrives at end `to` of `link`.
    Deliver {
        link: LinkId,
        to: usize,
        frame: Vec<u8>,
    },
    Timer(NodeId),
}

struct Event {
    at: Instant,
    seq: u64,
    what: What,
}

impl PartialEq for Event {
    fn eq(&self, o: &Event) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, o: &Event) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Event {
    fn cmp(&self, o: &Event) -> Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// A simulated lab: nodes, links, a virtual clock and a seeded RNG.
pub struct Sim {
    now: Instant,
    /// Seeds each link's own generators.
    rng: Rng,
    /// Seeds each node's generator (apart from the links', so adding a
    /// node never shifts a link's losses).
    node_seeds: Rng,
    nodes: Vec<Node>,
    links: Vec<Link>,
    events: BinaryHeap<Reverse<Event>>,
    seq: u64,
    /// Nodes lent out by [`Sim::node_mut`] (or just added), whose timer must
    /// be read again before the next run.
    touched: Vec<NodeId>,
    step_cap: u64,
    capture: Option<PcapngWriter<Vec<u8>>>,
    out: Outbox,
}

impl Sim {
    /// An empty lab at time zero whose losses all come from `seed`.
    pub fn new(seed: u64) -> Sim {
        Sim {
            now: Instant::ZERO,
            rng: Rng::new(seed),
            node_seeds: Rng::new(seed ^ 0x6e6f_6465_7365_6564),
            nodes: Vec::new(),
            links: Vec::new(),
            events: BinaryHeap::new(),
            seq: 0,
            touched: Vec::new(),
            step_cap: DEFAULT_STEP_CAP,
            capture: None,
            out: Outbox::new(),
        }
    }

    /// Adds `node` with its ports named in port order.
    pub fn add_node(&mut self, name: &str, node: Box<dyn SimNode>, ports: &[&str]) -> NodeId {
        let id = NodeId(self.nodes.len());
        self.nodes.push(Node {
            name: name.to_string(),
            element: node,
            ports: ports.iter().map(|p| p.to_string()).collect(),
            wires: vec![None; ports.len()],
            counters: Counters::new(ports.len()),
            timer: None,
            cx: Ctx::new(self.now, self.node_seeds.next_u64()),
        });
        self.touched.push(id);
        id
    }

    /// The node's process killed and started again: `node` (built afresh
    /// from the same settings) takes its place on the same wires, with a
    /// new seed, as the supervisor restarts a crashed element.
    pub fn restart_node(&mut self, id: NodeId, node: Box<dyn SimNode>) {
        let seed = self.node_seeds.next_u64();
        let n = &mut self.nodes[id.0];
        n.element = node;
        n.timer = None;
        n.cx = Ctx::new(self.now, seed);
        self.touched.push(id);
    }

    /// Plugs a link between two ports.
    ///
    /// # Panics
    /// If a port does not exist or is already linked (a mistake in the
    /// scenario, not something to carry on from).
    pub fn link(&mut self, a: (NodeId, PortId), b: (NodeId, PortId), params: LinkParams) -> LinkId {
        let id = LinkId(self.links.len());
        for (end, (node, port)) in [a, b].into_iter().enumerate() {
            let n = &mut self.nodes[node.0];
            let wire = n
                .wires
                .get_mut(port.index())
                .unwrap_or_else(|| panic!("{} has no {port}", n.name));
            assert!(
                wire.is_none(),
                "{}:{} is already linked",
                n.name,
                n.ports[port.index()]
            );
            *wire = Some((id, end));
        }
        let pcap_if = self.add_pcap_interface(a);
        let rng = [(); 2].map(|_| Rng::new(self.rng.next_u64()));
        self.links.push(Link {
            ends: [a, b],
            params,
            rng,
            stats: LinkStats::default(),
            pcap_if,
        });
        id
    }

    /// Starts capturing every link (those made later too) into an in-memory
    /// pcapng; frames are stamped [`EPOCH`] + virtual time.
    pub fn capture_pcapng(&mut self) {
        if self.capture.is_some() {
            return;
        }
        self.capture = Some(PcapngWriter::new(Vec::new()).expect("pcapng into memory cannot fail"));
        for i in 0..self.links.len() {
            let a = self.links[i].ends[0];
            self.links[i].pcap_if = self.add_pcap_interface(a);
        }
    }

    /// The pcapng captured so far (empty if capture is off).
    pub fn pcapng(&mut self) -> &[u8] {
        match &mut self.capture {
            Some(w) => w.get_mut(),
            None => &[],
        }
    }

    /// Writes the capture to `path`, for Wireshark or tshark.
    pub fn write_pcapng(&mut self, path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::write(path, self.pcapng())
    }

    /// Declares the capture interface `node:port` for a link's first end.
    fn add_pcap_interface(&mut self, (node, port): (NodeId, PortId)) -> Option<u32> {
        let n = &self.nodes[node.0];
        let name = format!("{}:{}", n.name, n.ports[port.index()]);
        let w = self.capture.as_mut()?;
        Some(
            w.add_interface(&name)
                .expect("pcapng into memory cannot fail"),
        )
    }

    /// The node as its concrete type.
    ///
    /// # Panics
    /// If it is not a `T`.
    pub fn node<T: SimNode>(&self, id: NodeId) -> &T {
        let n = &self.nodes[id.0];
        // Through the box: `Box<dyn SimNode>` is a SimNode itself.
        (*n.element)
            .as_any()
            .downcast_ref()
            .unwrap_or_else(|| panic!("node {} is not a {}", n.name, type_name::<T>()))
    }

    /// The node as its concrete type, to change it between runs (a host's
    /// [`SimHost::ping`]); its timer is read again before the next run.
    ///
    /// # Panics
    /// If it is not a `T`.
    pub fn node_mut<T: SimNode>(&mut self, id: NodeId) -> &mut T {
        self.touched.push(id);
        let n = &mut self.nodes[id.0];
        let name = &n.name;
        (*n.element)
            .as_any_mut()
            .downcast_mut()
            .unwrap_or_else(|| panic!("node {name} is not a {}", type_name::<T>()))
    }

    /// The node's per-port counters, kept as the real driver keeps them.
    pub fn counters(&self, id: NodeId) -> &Counters {
        &self.nodes[id.0].counters
    }

    /// What the node's control socket would answer to `status` under the
    /// real driver: its ports' counters and its report (no process: pid 0,
    /// the role left empty).
    pub fn status(&self, id: NodeId) -> d11_core::status::Status {
        let n = &self.nodes[id.0];
        d11_core::status::Status {
            node: n.name.clone(),
            role: String::new(),
            pid: 0,
            uptime_ms: self.now.total_micros() / 1000,
            ports: (n.counters.named(&n.ports).into_iter())
                .map(|(name, counters)| {
                    let port = d11_core::status::PortStatus {
                        counters,
                        impair: None,
                    };
                    (name, port)
                })
                .collect(),
            report: n.element.report(),
        }
    }

    /// Changes a link's delay and loss from now on (a cable cut is a loss
    /// of 1.0); frames already on the wire arrive as they were sent.
    pub fn set_link_params(&mut self, id: LinkId, params: LinkParams) {
        self.links[id.0].params = params;
    }

    pub fn link_stats(&self, id: LinkId) -> LinkStats {
        self.links[id.0].stats
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    /// Events one `run_*` call may process before it gives up with [`Stop::StepCap`].
    pub fn set_step_cap(&mut self, steps: u64) {
        self.step_cap = steps;
    }

    /// Runs until `now + d`.
    pub fn run_for(&mut self, d: Duration) -> Stop {
        self.run(Some(self.now + d))
    }

    /// Runs every event due at or before `t`, then sets the clock to `t`
    /// (never backwards).
    pub fn run_until(&mut self, t: Instant) -> Stop {
        self.run(Some(t))
    }

    /// Runs until no frame is in flight and no timer is pending, jumping the
    /// clock from event to event (timers far ahead, like MAC ageing, included).
    pub fn run_until_idle(&mut self) -> Stop {
        self.run(None)
    }

    fn run(&mut self, deadline: Option<Instant>) -> Stop {
        for id in std::mem::take(&mut self.touched) {
            self.reschedule(id);
        }
        let mut steps = 0;
        loop {
            let Some(top) = self.events.peek_mut() else {
                break;
            };
            if deadline.is_some_and(|d| top.0.at > d) {
                break;
            }
            if steps >= self.step_cap {
                return Stop::StepCap;
            }
            let Reverse(ev) = PeekMut::pop(top);
            steps += 1;
            self.now = ev.at;
            match ev.what {
                What::Deliver { link, to, frame } => self.deliver(link, to, &frame),
                What::Timer(id) => self.fire(id, ev.seq),
            }
        }
        match deadline {
            Some(d) => {
                self.now = self.now.max(d);
                Stop::Deadline
            }
            None => Stop::Idle,
        }
    }

    fn push(&mut self, at: Instant, what: What) -> u64 {
        self.seq += 1;
        self.events.push(Reverse(Event {
            at,
            seq: self.seq,
            what,
        }));
        self.seq
    }

    /// Makes the queue hold exactly the timer the node now asks for.
    fn reschedule(&mut self, id: NodeId) {
        let want = self.nodes[id.0].element.poll_at().map(|t| t.max(self.now));
        if want == self.nodes[id.0].timer.map(|(t, _)| t) {
            return;
        }
        self.nodes[id.0].timer = want.map(|t| (t, self.push(t, What::Timer(id))));
    }

    fn fire(&mut self, id: NodeId, seq: u64) {
        if self.nodes[id.0].timer.map(|(_, s)| s) != Some(seq) {
            return; // superseded
        }
        let n = &mut self.nodes[id.0];
        n.timer = None;
        n.element.on_timer(n.cx.at(self.now), &mut self.out);
        self.dispatch(id);
    }

    fn deliver(&mut self, link: LinkId, to: usize, frame: &[u8]) {
        let (id, port) = self.links[link.0].ends[to];
        if to == 0 {
            self.record(self.links[link.0].pcap_if, frame);
        }
        let n = &mut self.nodes[id.0];
        n.counters.rx(port, frame.len());
        n.element
            .on_frame(n.cx.at(self.now), port, frame, &mut self.out);
        self.dispatch(id);
    }

    /// Counts what the node just answered and puts its frames on the wires.
    fn dispatch(&mut self, id: NodeId) {
        let mut out = std::mem::take(&mut self.out);
        self.nodes[id.0].counters.record_drops(&out);
        for (port, frame) in out.frames() {
            let n = &mut self.nodes[id.0];
            let Some((link, from)) = n.wires.get(port.index()).copied().flatten() else {
                // No cable in that port (or no such port): nothing to hand it to.
                n.counters.tx_error(port);
                continue;
            };
            n.counters.tx(port, frame.len());
            let l = &mut self.links[link.0];
            l.stats.sent[from] += 1;
            let (params, pcap_if) = (l.params, l.pcap_if);
            let lost = params.loss > 0.0 && l.rng[from].chance(params.loss);
            l.stats.lost[from] += u64::from(lost);
            if from == 0 {
                self.record(pcap_if, frame);
            }
            if lost {
                tracing::trace!(link = link.0, from, len = frame.len(), "lost");
                continue;
            }
            self.push(
                self.now + params.delay,
                What::Deliver {
                    link,
                    to: 1 - from,
                    frame: frame.to_vec(),
                },
            );
        }
        out.clear();
        self.out = out;
        self.reschedule(id);
    }

    fn record(&mut self, pcap_if: Option<u32>, frame: &[u8]) {
        let ts = EPOCH + Duration::from_micros(self.now.total_micros());
        if let (Some(w), Some(i)) = (self.capture.as_mut(), pcap_if) {
            w.write(i, ts, frame)
                .expect("pcapng into memory cannot fail");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use d11_core::DropReason;
    use d11_wire::MacAddr;
    use std::net::Ipv4Addr;

    /// Takes every frame, answers nothing.
    struct Sink;

    impl Element for Sink {
        fn on_frame(&mut self, _: &mut Ctx, _: PortId, _: &[u8], _: &mut Outbox) {}
        fn on_timer(&mut self, _: &mut Ctx, _: &mut Outbox) {}
        fn poll_at(&self) -> Option<Instant> {
            None
        }
    }

    fn host(n: u8) -> Box<SimHost> {
        Box::new(SimHost::new(
            MacAddr([2, 0, 0, 0, 0, n]),
            format!("10.0.0.{n}/24").parse().unwrap(),
            None,
        ))
    }

    /// Two hosts on one cable with a 5 ms delay.
    fn pair(seed: u64, loss: f64) -> (Sim, NodeId, NodeId, LinkId) {
        let mut sim = Sim::new(seed);
        let a = sim.add_node("a", host(1), &["eth0"]);
        let b = sim.add_node("b", host(2), &["eth0"]);
        let l = sim.link(
            (a, PortId(0)),
            (b, PortId(0)),
            LinkParams {
                delay: Duration::from_millis(5),
                loss,
            },
        );
        (sim, a, b, l)
    }

    #[test]
    fn a_ping_over_a_cable_takes_two_round_trips_of_delay_with_arp_first() {
        let (mut sim, a, b, _) = pair(1, 0.0);
        sim.node_mut::<SimHost>(a)
            .ping(Ipv4Addr::new(10, 0, 0, 2), 64, 1, 1);
        assert_eq!(sim.run_until_idle(), Stop::Idle);
        let r = sim.node::<SimHost>(a).received();
        assert_eq!(r.len(), 1);
        // ARP request, reply, echo request, echo reply: 4 × 5 ms.
        assert_eq!(r[0].at, Instant::from_millis(20));
        assert!(matches!(r[0].msg, Message::EchoReply { id: 1, seq: 1, .. }));
        let (ca, cb) = (&sim.counters(a).ports[0], &sim.counters(b).ports[0]);
        assert_eq!(
            (ca.tx_frames, ca.rx_frames, cb.tx_frames, cb.rx_frames),
            (2, 2, 2, 2)
        );
        assert_eq!(ca.tx_bytes, cb.rx_bytes);
        assert_eq!(
            sim.node::<SimHost>(b)
                .arp_lookup(Ipv4Addr::new(10, 0, 0, 1)),
            Some(MacAddr([2, 0, 0, 0, 0, 1]))
        );
    }

    #[test]
    fn run_for_advances_the_clock_even_when_nothing_happens() {
        let (mut sim, a, _, _) = pair(1, 0.0);
        assert_eq!(sim.run_for(Duration::from_secs(3)), Stop::Deadline);
        assert_eq!(sim.now(), Instant::from_millis(3000));
        sim.node_mut::<SimHost>(a)
            .ping(Ipv4Addr::new(10, 0, 0, 2), 64, 1, 1);
        assert_eq!(sim.run_for(Duration::from_millis(12)), Stop::Deadline);
        assert!(
            sim.node::<SimHost>(a).received().is_empty(),
            "reply due at 20 ms"
        );
        sim.run_for(Duration::from_millis(8));
        assert_eq!(
            sim.node::<SimHost>(a).received()[0].at,
            Instant::from_millis(3020)
        );
    }

    #[test]
    fn element_timers_fire_at_their_deadline_and_unanswered_arp_is_counted() {
        let mut sim = Sim::new(1);
        let a = sim.add_node("a", host(1), &["eth0"]);
        let b = sim.add_node("b", Box::new(Sink), &["p"]);
        sim.link((a, PortId(0)), (b, PortId(0)), LinkParams::default());
        sim.node_mut::<SimHost>(a)
            .ping(Ipv4Addr::new(10, 0, 0, 2), 64, 1, 1);
        assert_eq!(sim.run_until_idle(), Stop::Idle);
        // Requests at 0, 1 and 2 s; the packet is dropped at 3 s.
        assert_eq!(sim.now(), Instant::from_millis(3000));
        assert_eq!(sim.counters(a).ports[0].tx_frames, 3);
        assert_eq!(
            sim.counters(a).ports[0].drop_count(DropReason::ArpTimeout),
            1
        );
        assert_eq!(sim.counters(b).ports[0].rx_frames, 3);
    }

    #[test]
    fn frames_to_an_unplugged_port_are_tx_errors() {
        let mut sim = Sim::new(1);
        let a = sim.add_node("a", host(1), &["eth0"]);
        sim.node_mut::<SimHost>(a)
            .ping(Ipv4Addr::new(10, 0, 0, 2), 64, 1, 1);
        sim.run_for(Duration::from_millis(1));
        let c = &sim.counters(a).ports[0];
        assert_eq!((c.tx_frames, c.tx_errors), (0, 1));
    }

    #[test]
    fn loss_is_reproduced_by_its_seed() {
        let run = |seed| {
            let (mut sim, a, _, l) = pair(seed, 0.3);
            for seq in 0..50 {
                sim.node_mut::<SimHost>(a)
                    .ping(Ipv4Addr::new(10, 0, 0, 2), 64, 1, seq);
                sim.run_for(Duration::from_secs(4));
            }
            let got: Vec<_> = sim
                .node::<SimHost>(a)
                .received()
                .iter()
                .map(|r| r.at)
                .collect();
            (got, sim.link_stats(l))
        };
        let (first, stats) = run(7);
        assert_eq!(run(7), (first.clone(), stats));
        assert_ne!(run(8).0, first);
        assert!(stats.lost[0] > 0 && stats.lost[1] > 0, "{stats:?}");
    }

    #[test]
    fn traffic_on_one_link_does_not_shift_the_losses_of_another() {
        let run = |busy_neighbour: bool| {
            let (mut sim, a, _, l) = pair(3, 0.3);
            let c = sim.add_node("c", host(3), &["eth0"]);
            let d = sim.add_node("d", host(4), &["eth0"]);
            let params = LinkParams {
                delay: Duration::ZERO,
                loss: 0.3,
            };
            sim.link((c, PortId(0)), (d, PortId(0)), params);
            for seq in 0..30 {
                sim.node_mut::<SimHost>(a)
                    .ping(Ipv4Addr::new(10, 0, 0, 2), 64, 1, seq);
                if busy_neighbour {
                    sim.node_mut::<SimHost>(c)
                        .ping(Ipv4Addr::new(10, 0, 0, 4), 64, 1, seq);
                }
                sim.run_for(Duration::from_secs(4));
            }
            sim.link_stats(l)
        };
        assert_eq!(run(false), run(true));
    }

    #[test]
    fn the_capture_names_each_link_after_its_first_end() {
        let (mut sim, a, _, _) = pair(1, 0.0);
        sim.capture_pcapng();
        sim.node_mut::<SimHost>(a)
            .ping(Ipv4Addr::new(10, 0, 0, 2), 64, 1, 1);
        sim.run_until_idle();
        let mut r = pcap_file::pcapng::PcapNgReader::new(sim.pcapng()).unwrap();
        let mut names = vec![];
        let mut stamps = vec![];
        while let Some(b) = r.next_block() {
            match b.unwrap() {
                pcap_file::pcapng::Block::InterfaceDescription(i) => {
                    names.push(format!("{:?}", i.options))
                }
                pcap_file::pcapng::Block::EnhancedPacket(p) => stamps.push(p.timestamp - EPOCH),
                _ => {}
            }
        }
        assert_eq!(names.len(), 1);
        assert!(names[0].contains("\"a:eth0\""), "{names:?}");
        // As a capture on a sees it: ARP request out at 0 ms, its reply in at
        // 10 ms, echo request out at 10 ms, echo reply in at 20 ms.
        let ms: Vec<_> = stamps.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [0, 10, 10, 20]);
    }
}
