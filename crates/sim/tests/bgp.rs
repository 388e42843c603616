//! BGP between the routers in the simulator, on the virtual clock: the
//! carriers' and the cloud's sessions come up (eBGP between ASes, iBGP
//! inside AS 64510), the decision process picks one of the cloud's two
//! carriers, a cut wire fails over when the hold timer expires and comes
//! back, and a fake neighbour's bad input gets the NOTIFICATION RFC 4271
//! names (or a counted reset), never a panic. tshark decodes every frame.

mod common;

use d11_elements::bgp::{BgpReport, FsmState, RibRow};
use d11_elements::router::RouterReport;
use d11_lab::Topology;
use d11_sim::{LinkParams, Message as Rx, SimLab};
use d11_wire::bgp::{self, Message, NotificationRepr, OpenRepr, PathAttrs, UpdateRepr};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

/// The story's carriers in small: the mobile carrier's a2 (AS 64500, the
/// phone's NAT pool behind it), the transit carrier's c1 and c2 (AS 64510,
/// iBGP between them, a server behind c2), a second transit carrier c3
/// (AS 64520), and the cloud's border (AS 64600, the shop behind it),
/// multihomed to c2 and c3.
const TOPO: &str = r#"
description = "a2 — c1 — c2 — border and a2 — c3 — border, BGP"

[[nodes]]
name = "mobile"
kind = "host"
ports = [ { name = "eth0", address = "198.51.100.130/25" } ]
routes = [ { to = "0.0.0.0/0", via = "198.51.100.129" } ]

[[nodes]]
name = "a2"
kind = "element"
role = "router"
ports = [
  { name = "pool", address = "198.51.100.129/25" },
  { name = "a2c1", address = "192.0.2.1/30" },
  { name = "a2c3", address = "192.0.2.13/30" },
]
[nodes.config.bgp]
local_as = 64500
router_id = "192.0.2.1"
originate = ["198.51.100.128/25"]
neighbors = [
  { address = "192.0.2.2", remote_as = 64510, hold_time = 6, import = "all", export = ["198.51.100.128/25"] },
  { address = "192.0.2.14", remote_as = 64520, hold_time = 6, import = "all", export = ["198.51.100.128/25"] },
]

[[nodes]]
name = "c1"
kind = "element"
role = "router"
ports = [
  { name = "c1a2", address = "192.0.2.2/30" },
  { name = "c1c2", address = "192.0.2.5/30" },
]
[nodes.config.bgp]
local_as = 64510
router_id = "192.0.2.2"
neighbors = [
  { address = "192.0.2.1", remote_as = 64500, hold_time = 6, import = ["198.51.100.128/25"], export = "all" },
  { address = "192.0.2.6", remote_as = 64510, hold_time = 6, next_hop_self = true },
]

[[nodes]]
name = "c2"
kind = "element"
role = "router"
ports = [
  { name = "c2c1", address = "192.0.2.6/30" },
  { name = "c2bd", address = "192.0.2.9/30" },
  { name = "srv", address = "192.0.2.129/25" },
]
[nodes.config.bgp]
local_as = 64510
router_id = "192.0.2.6"
originate = ["192.0.2.128/25"]
neighbors = [
  { address = "192.0.2.5", remote_as = 64510, hold_time = 6, next_hop_self = true },
  { address = "192.0.2.10", remote_as = 64600, hold_time = 6, import = ["203.0.113.0/24"], export = "all" },
]

[[nodes]]
name = "c3"
kind = "element"
role = "router"
ports = [
  { name = "c3a2", address = "192.0.2.14/30" },
  { name = "c3bd", address = "192.0.2.17/30" },
]
[nodes.config.bgp]
local_as = 64520
router_id = "192.0.2.14"
neighbors = [
  { address = "192.0.2.13", remote_as = 64500, hold_time = 6, import = ["198.51.100.128/25"], export = "all" },
  { address = "192.0.2.18", remote_as = 64600, hold_time = 6, import = ["203.0.113.0/24"], export = "all" },
]

[[nodes]]
name = "border"
kind = "element"
role = "router"
ports = [
  { name = "bdc2", address = "192.0.2.10/30" },
  { name = "bdc3", address = "192.0.2.18/30" },
  { name = "ext", address = "203.0.113.1/24" },
]
[nodes.config.bgp]
local_as = 64600
router_id = "192.0.2.10"
originate = ["203.0.113.0/24"]
neighbors = [
  { address = "192.0.2.9", remote_as = 64510, hold_time = 6, import = "all", export = ["203.0.113.0/24"] },
  { address = "192.0.2.17", remote_as = 64520, hold_time = 6, import = "all", export = ["203.0.113.0/24"] },
]

[[nodes]]
name = "shop"
kind = "host"
ports = [ { name = "eth0", address = "203.0.113.2/24" } ]
routes = [ { to = "0.0.0.0/0", via = "203.0.113.1" } ]

[[nodes]]
name = "server"
kind = "host"
ports = [ { name = "eth0", address = "192.0.2.130/25" } ]
routes = [ { to = "0.0.0.0/0", via = "192.0.2.129" } ]

[[wires]]
a = "mobile:eth0"
b = "a2:pool"

[[wires]]
a = "a2:a2c1"
b = "c1:c1a2"

[[wires]]
a = "c1:c1c2"
b = "c2:c2c1"

[[wires]]
a = "c2:c2bd"
b = "border:bdc2"

[[wires]]
a = "a2:a2c3"
b = "c3:c3a2"

[[wires]]
a = "c3:c3bd"
b = "border:bdc3"

[[wires]]
a = "border:ext"
b = "shop:eth0"

[[wires]]
a = "c2:srv"
b = "server:eth0"
"#;

const SHOP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 130);

fn lab(seed: u64) -> SimLab {
    let topo = Topology::parse(TOPO, "bgp.toml").expect("the topology loads");
    let mut lab = SimLab::new(&topo, seed, |_| LinkParams {
        delay: Duration::from_micros(200),
        loss: 0.0,
    })
    .expect("every node builds");
    lab.sim.capture_pcapng();
    lab
}

fn report(lab: &SimLab, node: &str) -> RouterReport {
    lab.sim
        .status(lab.node(node))
        .report()
        .expect("a router's report")
}

fn bgp(lab: &SimLab, node: &str) -> BgpReport {
    report(lab, node).bgp.expect("a speaker")
}

fn best(lab: &SimLab, node: &str, prefix: &str) -> Option<RibRow> {
    report(lab, node)
        .rib
        .expect("a speaker")
        .into_iter()
        .find(|r| r.best && r.prefix.to_string() == prefix)
}

/// The FIB's route to `prefix`: its `via` and source.
fn fib(lab: &SimLab, node: &str, prefix: &str) -> Option<(Option<Ipv4Addr>, String)> {
    report(lab, node)
        .l3
        .fib
        .into_iter()
        .find(|r| r.prefix.to_string() == prefix)
        .map(|r| (r.via, format!("{:?}", r.source).to_lowercase()))
}

/// Pings `dst` from `host`; the reply's TTL, if one came.
fn ping(lab: &mut SimLab, host: &str, dst: Ipv4Addr, seq: u16) -> Option<u8> {
    lab.host(host).take_received();
    lab.host(host).ping(dst, 64, 1, seq);
    lab.sim.run_for(Duration::from_millis(500));
    lab.host(host)
        .take_received()
        .into_iter()
        .find_map(|r| match r.msg {
            Rx::EchoReply { seq: s, .. } if s == seq => Some(r.ttl),
            _ => None,
        })
}

#[test]
fn sessions_come_up_and_the_decision_process_picks_one_carrier() {
    let mut lab = lab(1);
    let took = common::converge(&mut lab, Duration::from_secs(30));
    assert!(took < Duration::from_secs(3), "converged in {took:?}");
    for r in ["a2", "c1", "c2", "c3", "border"] {
        for n in bgp(&lab, r).neighbors {
            assert_eq!(n.state, FsmState::Established, "{r} → {}", n.address);
            assert_eq!(n.four_octet_as, Some(true));
        }
    }
    // a2 hears the shop's prefix from both carriers: two AS paths of two
    // ASes, both IGP, MEDs not comparable across ASes, both external; the
    // lower BGP Identifier decides: c1's.
    let rib = report(&lab, "a2").rib.unwrap();
    let shop: Vec<&RibRow> = rib
        .iter()
        .filter(|r| r.prefix.to_string() == "203.0.113.0/24")
        .collect();
    assert_eq!(shop.len(), 2, "{shop:?}");
    let b = best(&lab, "a2", "203.0.113.0/24").unwrap();
    assert_eq!(b.as_path, "64510 64600");
    assert_eq!(b.from, "192.0.2.2");
    assert_eq!(b.next_hop, Some(Ipv4Addr::new(192, 0, 2, 2)));
    assert_eq!(b.local_pref, Some(100));
    let other = shop.iter().find(|r| !r.best).unwrap();
    assert_eq!(other.as_path, "64520 64600");
    assert_eq!(
        fib(&lab, "a2", "203.0.113.0/24"),
        Some((Some(Ipv4Addr::new(192, 0, 2, 2)), "bgp".into()))
    );
    // Inside AS 64510 the route travels by iBGP with c2's own next hop.
    let b = best(&lab, "c1", "203.0.113.0/24").unwrap();
    assert_eq!(
        (b.as_path.as_str(), b.from.as_str()),
        ("64600", "192.0.2.6")
    );
    assert_eq!(b.next_hop, Some(Ipv4Addr::new(192, 0, 2, 6)));
    // The return path: border prefers c2 (192.0.2.6 < 192.0.2.14).
    let b = best(&lab, "border", "198.51.100.128/25").unwrap();
    assert_eq!(
        (b.as_path.as_str(), b.from.as_str()),
        ("64510 64500", "192.0.2.9")
    );
    // The connected subnets stay connected; the originated ones are local.
    assert_eq!(
        fib(&lab, "border", "203.0.113.0/24").unwrap().1,
        "connected"
    );
    assert_eq!(
        best(&lab, "border", "203.0.113.0/24").unwrap().from,
        "local"
    );
    // The mobile host reaches the shop over a2, c1, c2, border: three TTLs
    // on the way back (border, c2, c1, a2 = 4 hops: 64 − 4).
    assert_eq!(ping(&mut lab, "mobile", SHOP, 1), Some(60));
    assert_eq!(ping(&mut lab, "mobile", SERVER, 2), Some(61));
    common::tshark_agrees(&mut lab.sim, "bgp-converge.pcapng");
}

#[test]
fn the_cloud_does_not_carry_traffic_between_its_carriers() {
    let mut lab = lab(2);
    common::converge(&mut lab, Duration::from_secs(30));
    // c3 hears only the shop's prefix from the border, never c2's server
    // subnet or the mobile pool back through it.
    let rib = report(&lab, "c3").rib.unwrap();
    let via_border: Vec<String> = rib
        .iter()
        .filter(|r| r.from == "192.0.2.18")
        .map(|r| r.prefix.to_string())
        .collect();
    assert_eq!(via_border, ["203.0.113.0/24"]);
    assert!(!rib.iter().any(|r| r.prefix.to_string() == "192.0.2.128/25"));
    // The border announces its own prefix and nothing else.
    for n in bgp(&lab, "border").neighbors {
        assert_eq!(n.advertised, 1, "{n:?}");
        assert_eq!(n.export, "203.0.113.0/24");
    }
    // And a2 announces only the pool: c1 accepted one prefix from it.
    let c1 = bgp(&lab, "c1");
    let from_a2 = c1.neighbors.iter().find(|n| n.remote_as == 64500).unwrap();
    assert_eq!((from_a2.received, from_a2.accepted), (1, 1));
}

#[test]
fn a_cut_preferred_path_fails_over_at_the_hold_time_and_comes_back() {
    let mut lab = lab(3);
    common::converge(&mut lab, Duration::from_secs(30));
    assert_eq!(ping(&mut lab, "mobile", SHOP, 1), Some(60));
    let cut = lab.link("c1:c1c2--c2:c2c1");
    let t0 = lab.now();
    lab.sim.set_link_params(
        cut,
        LinkParams {
            delay: Duration::from_micros(200),
            loss: 1.0,
        },
    );
    // Until the hold timer (6 s) expires, a2 keeps sending into the cut.
    lab.sim.run_for(Duration::from_secs(4));
    assert_eq!(
        best(&lab, "a2", "203.0.113.0/24").unwrap().from,
        "192.0.2.2"
    );
    // Then c1 and c2 each drop their session, withdraw, and a2 and the
    // border choose c3.
    let mut seq = 2;
    let failed_over = loop {
        lab.sim.run_for(Duration::from_millis(100));
        if best(&lab, "a2", "203.0.113.0/24").is_some_and(|b| b.from == "192.0.2.14") {
            break lab.now().saturating_since(t0);
        }
        assert!(lab.now().saturating_since(t0) < Duration::from_secs(10));
    };
    // The hold timer runs from the last message before the cut: a
    // keepalive interval (hold / 3) at most before it.
    assert!(
        failed_over >= Duration::from_secs(4) && failed_over <= Duration::from_secs(7),
        "{failed_over:?}"
    );
    let c1 = bgp(&lab, "c1");
    let to_c2 = c1.neighbors.iter().find(|n| n.remote_as == 64510).unwrap();
    assert_ne!(to_c2.state, FsmState::Established);
    assert_eq!(
        to_c2.last_notification_sent.as_deref(),
        Some("4/0 Hold Timer Expired")
    );
    lab.sim.run_for(Duration::from_millis(300));
    // Over c3 now: a2, c3, border: one hop fewer.
    seq += 1;
    assert_eq!(ping(&mut lab, "mobile", SHOP, seq), Some(61));
    // The wire comes back: the iBGP session returns and c1 is best again.
    lab.sim.set_link_params(
        cut,
        LinkParams {
            delay: Duration::from_micros(200),
            loss: 0.0,
        },
    );
    common::converge(&mut lab, Duration::from_secs(30));
    assert_eq!(
        best(&lab, "a2", "203.0.113.0/24").unwrap().from,
        "192.0.2.2"
    );
    seq += 1;
    assert_eq!(ping(&mut lab, "mobile", SHOP, seq), Some(60));
    common::tshark_agrees(&mut lab.sim, "bgp-failover.pcapng");
}

#[test]
fn the_same_seed_replays_every_frame() {
    let run = |seed| {
        let mut lab = lab(seed);
        common::converge(&mut lab, Duration::from_secs(30));
        lab.sim.pcapng().to_vec()
    };
    assert_eq!(run(7), run(7));
}

/// A router with a neighbour played by the test (`peer`, AS 64999, which
/// the router waits for: passive) and a host that is no neighbour.
const FAKE: &str = r#"
[[nodes]]
name = "r"
kind = "element"
role = "router"
ports = [
  { name = "p", address = "10.9.0.1/24" },
  { name = "x", address = "10.8.0.1/24" },
]
[nodes.config.bgp]
local_as = 64500
router_id = "10.9.0.1"
originate = ["10.8.0.0/24"]
neighbors = [
  { address = "10.9.0.2", remote_as = 64999, hold_time = 9, passive = true, import = "all", export = "all" },
]

[[nodes]]
name = "peer"
kind = "host"
ports = [ { name = "eth0", address = "10.9.0.2/24" } ]
routes = [ { to = "0.0.0.0/0", via = "10.9.0.1" } ]

[[nodes]]
name = "stranger"
kind = "host"
ports = [ { name = "eth0", address = "10.8.0.2/24" } ]
routes = [ { to = "0.0.0.0/0", via = "10.8.0.1" } ]

[[wires]]
a = "r:p"
b = "peer:eth0"

[[wires]]
a = "r:x"
b = "stranger:eth0"
"#;

const R: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 1), 179);

fn fake_lab() -> SimLab {
    let topo = Topology::parse(FAKE, "fake.toml").expect("loads");
    let mut lab = SimLab::new(&topo, 5, |_| LinkParams {
        delay: Duration::from_micros(100),
        loss: 0.0,
    })
    .expect("builds");
    lab.sim.capture_pcapng();
    lab
}

fn bytes(m: &Message) -> Vec<u8> {
    let mut b = vec![];
    m.emit(&mut b, true);
    b
}

fn open(asn: u32, hold: u16) -> Vec<u8> {
    bytes(&Message::Open(OpenRepr::new(
        asn,
        hold,
        Ipv4Addr::new(10, 9, 0, 2),
        vec![bgp::Capability::FourOctetAs(asn)],
    )))
}

/// Every message the router sent on the connection so far.
fn answers(lab: &mut SimLab, h: d11_core::l3::TcpHandle) -> Vec<Message> {
    lab.sim.run_for(Duration::from_millis(200));
    let got = lab.host("peer").tcp_recv(h);
    let mut out = vec![];
    let mut at = 0;
    while let Ok(Some(n)) = bgp::message_len(&got[at..]) {
        out.push(
            Message::parse_bytes(&got[at..at + n], true).expect("the router's messages parse"),
        );
        at += n;
    }
    out
}

/// Connects the fake peer, sends `first`, and returns the router's answers.
fn exchange(first: &[u8]) -> (SimLab, d11_core::l3::TcpHandle, Vec<Message>) {
    let mut lab = fake_lab();
    lab.sim.run_for(Duration::from_millis(100));
    let h = lab.host("peer").tcp_connect(40179, R);
    lab.sim.run_for(Duration::from_millis(100));
    lab.host("peer").tcp_send(h, first);
    let got = answers(&mut lab, h);
    (lab, h, got)
}

fn notification(got: &[Message]) -> Option<(u8, u8)> {
    got.iter().find_map(|m| match m {
        Message::Notification(n) => Some((n.code, n.subcode)),
        _ => None,
    })
}

fn neighbor(lab: &SimLab) -> d11_elements::bgp::NeighborReport {
    bgp(lab, "r").neighbors.remove(0)
}

fn counters(lab: &SimLab) -> d11_elements::bgp::PeerCounters {
    bgp(lab, "r").counters.remove(0).counters
}

#[test]
fn a_wrong_peer_as_is_answered_bad_peer_as() {
    let (lab, _, got) = exchange(&open(65001, 9));
    assert!(
        matches!(got[0], Message::Open(_)),
        "the router's OPEN first: {got:?}"
    );
    assert_eq!(notification(&got), Some((2, 2)), "{got:?}");
    let n = neighbor(&lab);
    assert_eq!(
        n.last_notification_sent.as_deref(),
        Some("2/2 OPEN Message Error / Bad Peer AS")
    );
    assert_ne!(n.state, FsmState::Established);
}

#[test]
fn a_hold_time_of_two_seconds_is_unacceptable() {
    let (_, _, got) = exchange(&open(64999, 2));
    assert_eq!(notification(&got), Some((2, 6)), "{got:?}");
}

#[test]
fn a_bad_marker_or_length_is_a_header_error() {
    let mut o = open(64999, 9);
    o[5] = 0;
    let (_, _, got) = exchange(&o);
    assert_eq!(notification(&got), Some((1, 1)), "{got:?}");
    let mut o = open(64999, 9);
    o[16..18].copy_from_slice(&5000u16.to_be_bytes());
    let (_, _, got) = exchange(&o);
    assert_eq!(notification(&got), Some((1, 2)), "{got:?}");
    let Message::Notification(NotificationRepr { data, .. }) = got.last().unwrap() else {
        panic!()
    };
    assert_eq!(data, &5000u16.to_be_bytes(), "the bad length is the data");
}

#[test]
fn an_update_before_established_is_a_state_machine_error() {
    let u = bytes(&Message::Update(UpdateRepr::default()));
    let (_, _, got) = exchange(&u);
    assert_eq!(notification(&got), Some((5, 1)), "{got:?}");
}

/// The fake peer brought to Established: its OPEN and KEEPALIVE, and the
/// router's OPEN, KEEPALIVE and the prefix it originates.
fn established() -> (SimLab, d11_core::l3::TcpHandle) {
    let (mut lab, h, got) = exchange(&open(64999, 9));
    assert!(
        matches!(got[..], [Message::Open(_), Message::Keepalive]),
        "{got:?}"
    );
    lab.host("peer").tcp_send(h, &bytes(&Message::Keepalive));
    let got = answers(&mut lab, h);
    assert_eq!(neighbor(&lab).state, FsmState::Established);
    let Some(Message::Update(u)) = got.first() else {
        panic!("{got:?}")
    };
    assert_eq!(u.nlri, ["10.8.0.0/24".parse().unwrap()]);
    assert_eq!(u.attrs.path().to_string(), "64500");
    assert_eq!(u.attrs.next_hop, Some(Ipv4Addr::new(10, 9, 0, 1)));
    (lab, h)
}

fn announce(prefix: &str, path: &[u32]) -> UpdateRepr {
    UpdateRepr {
        attrs: PathAttrs {
            origin: Some(bgp::Origin::Igp),
            as_path: Some(bgp::AsPath::sequence(path)),
            next_hop: Some(Ipv4Addr::new(10, 9, 0, 2)),
            ..PathAttrs::default()
        },
        nlri: vec![prefix.parse().unwrap()],
        ..UpdateRepr::default()
    }
}

#[test]
fn routes_from_a_neighbour_are_installed_and_withdrawn() {
    let (mut lab, h) = established();
    lab.host("peer").tcp_send(
        h,
        &bytes(&Message::Update(announce("198.18.0.0/15", &[64999]))),
    );
    lab.sim.run_for(Duration::from_millis(200));
    assert_eq!(
        fib(&lab, "r", "198.18.0.0/15"),
        Some((Some(Ipv4Addr::new(10, 9, 0, 2)), "bgp".into()))
    );
    let w = UpdateRepr {
        withdrawn: vec!["198.18.0.0/15".parse().unwrap()],
        ..UpdateRepr::default()
    };
    lab.host("peer").tcp_send(h, &bytes(&Message::Update(w)));
    lab.sim.run_for(Duration::from_millis(200));
    assert_eq!(fib(&lab, "r", "198.18.0.0/15"), None);
    common::tshark_agrees(&mut lab.sim, "bgp-fake-peer.pcapng");
}

#[test]
fn the_adj_rib_out_is_sent_again_on_refresh_and_never_withdraws_what_it_did_not_announce() {
    let (mut lab, h) = established();
    let updates = |got: Vec<Message>| -> Vec<UpdateRepr> {
        got.into_iter()
            .filter_map(|m| match m {
                Message::Update(u) => Some(u),
                _ => None,
            })
            .collect()
    };
    // The peer's own route is not sent back to it [RFC 4271 § 9.2], so its
    // withdrawal withdraws nothing from it.
    lab.host("peer").tcp_send(
        h,
        &bytes(&Message::Update(announce("198.18.0.0/15", &[64999]))),
    );
    assert_eq!(updates(answers(&mut lab, h)), []);
    let w = UpdateRepr {
        withdrawn: vec!["198.18.0.0/15".parse().unwrap()],
        ..UpdateRepr::default()
    };
    lab.host("peer").tcp_send(h, &bytes(&Message::Update(w)));
    assert_eq!(updates(answers(&mut lab, h)), []);
    // ROUTE-REFRESH: what it holds, again [RFC 2918 § 4].
    lab.host("peer").tcp_send(
        h,
        &bytes(&Message::RouteRefresh(bgp::RouteRefreshRepr::IPV4_UNICAST)),
    );
    let got = updates(answers(&mut lab, h));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].nlri, ["10.8.0.0/24".parse().unwrap()]);
    assert!(got[0].withdrawn.is_empty());
    assert_eq!(neighbor(&lab).advertised, 1);
}

#[test]
fn malformed_attributes_withdraw_the_routes_and_keep_the_session() {
    let (mut lab, h) = established();
    lab.host("peer").tcp_send(
        h,
        &bytes(&Message::Update(announce("198.18.0.0/15", &[64999]))),
    );
    lab.sim.run_for(Duration::from_millis(200));
    assert!(fib(&lab, "r", "198.18.0.0/15").is_some());
    // The same prefix again with ORIGIN 7 (RFC 7606 § 7.1: treat-as-withdraw),
    // then with a path that does not start with the peer's AS (§ 7.2).
    let mut bad = bytes(&Message::Update(announce("198.18.0.0/15", &[64999])));
    let origin_at = bad.windows(3).position(|w| w == [0x40, 1, 1]).unwrap() + 3;
    bad[origin_at] = 7;
    lab.host("peer").tcp_send(h, &bad);
    lab.sim.run_for(Duration::from_millis(200));
    assert_eq!(fib(&lab, "r", "198.18.0.0/15"), None, "withdrawn");
    lab.host("peer").tcp_send(
        h,
        &bytes(&Message::Update(announce("198.18.0.0/15", &[65000, 64999]))),
    );
    lab.sim.run_for(Duration::from_millis(200));
    assert_eq!(
        fib(&lab, "r", "198.18.0.0/15"),
        None,
        "not the peer's AS first"
    );
    let n = neighbor(&lab);
    assert_eq!(n.state, FsmState::Established);
    assert_eq!(counters(&lab).treat_as_withdraw, 2);
    // A path through our own AS is a loop: received, not accepted.
    lab.host("peer").tcp_send(
        h,
        &bytes(&Message::Update(announce("198.18.0.0/15", &[64999, 64500]))),
    );
    lab.sim.run_for(Duration::from_millis(200));
    let n = neighbor(&lab);
    assert_eq!(
        (n.received, n.accepted, counters(&lab).as_path_loops),
        (1, 0, 1)
    );
    // An unrecognized well-known attribute resets the session (RFC 4271 § 6.3).
    let mut u = bytes(&Message::Update(announce("198.18.0.0/15", &[64999])));
    let attrs_len_at = 19 + 2;
    let len = u16::from_be_bytes([u[attrs_len_at], u[attrs_len_at + 1]]) + 3;
    u[attrs_len_at..attrs_len_at + 2].copy_from_slice(&len.to_be_bytes());
    u.splice(attrs_len_at + 2..attrs_len_at + 2, [0x40, 99, 0]);
    let total = u.len() as u16;
    u[16..18].copy_from_slice(&total.to_be_bytes());
    lab.host("peer").tcp_send(h, &u);
    let got = answers(&mut lab, h);
    assert_eq!(notification(&got), Some((3, 2)), "{got:?}");
    common::tshark_agrees(&mut lab.sim, "bgp-malformed.pcapng");
}

#[test]
fn the_hold_timer_expires_when_the_peer_goes_quiet() {
    let (mut lab, h) = established();
    lab.sim.run_for(Duration::from_secs(10));
    let got = answers(&mut lab, h);
    assert_eq!(notification(&got), Some((4, 0)), "{got:?}");
    assert!(
        got.contains(&Message::Keepalive),
        "keepalives every 3 s before"
    );
}

#[test]
fn connections_from_strangers_and_a_syn_flood_are_reset_and_counted() {
    let (mut lab, h) = established();
    // Random bytes to port 179 from a host that is no neighbour.
    let s = lab.host("stranger").tcp_connect(41000, R);
    lab.sim.run_for(Duration::from_millis(100));
    lab.host("stranger").tcp_send(s, &[0x42; 64]);
    lab.sim.run_for(Duration::from_millis(200));
    assert_eq!(
        lab.host("stranger").tcp_state(s),
        d11_core::l3::TcpState::Closed
    );
    // A flood of SYNs from it.
    for port in 0..200u16 {
        lab.host("stranger").tcp_connect(42000 + port, R);
    }
    lab.sim.run_for(Duration::from_secs(1));
    let b = bgp(&lab, "r");
    assert_eq!(b.rejected_connections, 201);
    // The real session never noticed.
    assert_eq!(b.neighbors[0].state, FsmState::Established);
    lab.host("peer").tcp_send(h, &bytes(&Message::Keepalive));
    lab.sim.run_for(Duration::from_secs(2));
    assert_eq!(neighbor(&lab).state, FsmState::Established);
    let sockets = report(&lab, "r").l3.sockets.len();
    assert!(
        sockets <= 4,
        "no socket left behind by the flood: {sockets}"
    );
}
