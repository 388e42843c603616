//! Scenario: chapter 7's road, from the phone's side of the PGW to a server
//! in the cloud, through four routers and the `tor` switch:
//!
//! ```text
//! phone ── a2 ── c1 ── c2 ── border ── tor ── server
//! 198.51.100.1/30                          203.0.113.24/24
//!        .2 | 192.0.2.1 .2 | .5  .6 | .9 .10 | 203.0.113.1 (MTU 1450)
//! ```
//!
//! Per hop only the MACs change and TTL goes down by one; the IP addresses
//! stay the same. Every cable is captured, named after its first end.

mod common;

use d11_core::L3Port;
use d11_core::PortId;
use d11_elements::router::{Router, RouterConfig, StaticRoute};
use d11_elements::switch::{Switch, SwitchConfig};
use d11_sim::{LinkId, LinkParams, Message, NodeId, Sim, SimHost, Stop};
use d11_wire::etherparse::{Icmpv4Type, LinkSlice, NetSlice, SlicedPacket, TransportSlice};
use d11_wire::MacAddr;
use std::net::Ipv4Addr;
use std::time::Duration;

const PHONE_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 24);
/// RFC 2544's benchmarking range: no router here has a route to it.
const UNROUTED: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const CLOUD: &str = "203.0.113.0/24";
/// The MTU of the cloud side, as a VXLAN underlay leaves it for VMs.
const CLOUD_MTU: u16 = 1450;

/// `02:00:00:00:NN:PP`: node NN, port PP.
const fn mac(node: u8, port: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, node, port])
}
const PHONE_MAC: MacAddr = mac(1, 1);
const SERVER_MAC: MacAddr = mac(7, 1);

struct Lab {
    sim: Sim,
    phone: NodeId,
    server: NodeId,
    /// a2–c1, c1–c2, …: the cables in order from the phone.
    links: Vec<LinkId>,
}

fn router(node: u8, ports: &[(&str, &str, u16)], routes: &[(&str, &str)]) -> Box<Router> {
    Box::new(Router::new(RouterConfig {
        ports: ports
            .iter()
            .enumerate()
            .map(|(i, (name, addr, mtu))| L3Port {
                name: name.to_string(),
                mac: mac(node, i as u8 + 1),
                address: addr.parse().unwrap(),
                mtu: *mtu,
            })
            .collect(),
        routes: routes
            .iter()
            .map(|(to, via)| StaticRoute {
                to: to.parse().unwrap(),
                via: via.parse().unwrap(),
            })
            .collect(),
    }))
}

/// The road, every cable with `params` except c1–c2, which gets `c1c2`.
fn lab(seed: u64, params: LinkParams, c1c2: LinkParams) -> Lab {
    let mut sim = Sim::new(seed);
    let phone = sim.add_node(
        "phone",
        Box::new(SimHost::new(
            PHONE_MAC,
            "198.51.100.1/30".parse().unwrap(),
            Some(Ipv4Addr::new(198, 51, 100, 2)),
        )),
        &["eth0"],
    );
    let a2 = sim.add_node(
        "a2",
        router(
            2,
            &[
                ("sgi", "198.51.100.2/30", 1500),
                ("a2c1", "192.0.2.1/30", 1500),
            ],
            &[(CLOUD, "192.0.2.2")],
        ),
        &["sgi", "a2c1"],
    );
    let c1 = sim.add_node(
        "c1",
        router(
            3,
            &[
                ("c1a2", "192.0.2.2/30", 1500),
                ("c1c2", "192.0.2.5/30", 1500),
            ],
            &[(CLOUD, "192.0.2.6"), ("198.51.100.0/30", "192.0.2.1")],
        ),
        &["c1a2", "c1c2"],
    );
    let c2 = sim.add_node(
        "c2",
        router(
            4,
            &[
                ("c2c1", "192.0.2.6/30", 1500),
                ("c2border", "192.0.2.9/30", 1500),
            ],
            &[(CLOUD, "192.0.2.10"), ("198.51.100.0/30", "192.0.2.5")],
        ),
        &["c2c1", "c2border"],
    );
    let border = sim.add_node(
        "border",
        router(
            5,
            &[
                ("borderc2", "192.0.2.10/30", 1500),
                ("ext", "203.0.113.1/24", CLOUD_MTU),
            ],
            &[("198.51.100.0/30", "192.0.2.9")],
        ),
        &["borderc2", "ext"],
    );
    let tor = sim.add_node(
        "tor",
        Box::new(Switch::new(SwitchConfig::new(["border", "server"]))),
        &["border", "server"],
    );
    let server = sim.add_node(
        "server",
        Box::new(SimHost::new(
            SERVER_MAC,
            "203.0.113.24/24".parse().unwrap(),
            Some(Ipv4Addr::new(203, 0, 113, 1)),
        )),
        &["eth0"],
    );
    sim.capture_pcapng();
    let p = PortId;
    let links = vec![
        sim.link((phone, p(0)), (a2, p(0)), params),
        sim.link((a2, p(1)), (c1, p(0)), params),
        sim.link((c1, p(1)), (c2, p(0)), c1c2),
        sim.link((c2, p(1)), (border, p(0)), params),
        sim.link((border, p(1)), (tor, p(0)), params),
        sim.link((tor, p(1)), (server, p(0)), params),
    ];
    Lab {
        sim,
        phone,
        server,
        links,
    }
}

fn clean() -> Lab {
    let wire = LinkParams {
        delay: Duration::from_micros(100),
        loss: 0.0,
    };
    lab(1, wire, wire)
}

fn phone(lab: &mut Lab) -> &mut SimHost {
    lab.sim.node_mut::<SimHost>(lab.phone)
}

fn received(lab: &mut Lab) -> Vec<d11_sim::Received> {
    phone(lab).take_received()
}

#[test]
fn ping_from_the_phone_reaches_the_server_through_four_routers() {
    let mut lab = clean();
    for seq in 1..=3 {
        phone(&mut lab).ping(SERVER_IP, 64, 0xd11, seq);
        assert_eq!(lab.sim.run_for(Duration::from_secs(1)), Stop::Deadline);
    }
    let got: Vec<_> = received(&mut lab)
        .into_iter()
        .map(|r| (r.src, r.ttl, r.msg))
        .map(|(src, ttl, m)| match m {
            Message::EchoReply { id, seq, .. } => (src, ttl, id, seq),
            other => panic!("{other:?}"),
        })
        .collect();
    // The server answers with TTL 64; four routers take one each.
    assert_eq!(got, [1, 2, 3].map(|seq| (SERVER_IP, 60, 0xd11, seq)),);
}

#[test]
fn traceroute_lists_a2_c1_c2_border_by_the_addresses_facing_the_phone() {
    let mut lab = clean();
    for ttl in 1..=6u8 {
        phone(&mut lab).ping(SERVER_IP, ttl, 0x7ace, u16::from(ttl));
        lab.sim.run_for(Duration::from_secs(1));
    }
    let mut hops: Vec<(u16, Ipv4Addr)> = received(&mut lab)
        .into_iter()
        .map(|r| match r.msg {
            Message::TimeExceeded { code: 0, quoted } => {
                assert_eq!(
                    (quoted.src, quoted.dst, quoted.ttl),
                    (PHONE_IP, SERVER_IP, 1)
                );
                (quoted.echo().expect("our probe").1, r.src)
            }
            Message::EchoReply { seq, .. } => (seq, r.src),
            other => panic!("{other:?}"),
        })
        .collect();
    hops.sort();
    let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    assert_eq!(
        hops,
        [
            (1, ip("198.51.100.2")),
            (2, ip("192.0.2.2")),
            (3, ip("192.0.2.6")),
            (4, ip("192.0.2.10")),
            (5, SERVER_IP), // the switch is no hop
            (6, SERVER_IP),
        ]
    );
}

/// One echo message of the capture, as each cable saw it.
#[derive(Debug, PartialEq)]
struct Seen {
    cable: String,
    eth_src: MacAddr,
    eth_dst: MacAddr,
    ip_src: Ipv4Addr,
    ip_dst: Ipv4Addr,
    ttl: u8,
}

/// Every frame of the capture carrying an echo request (or reply) with `seq`.
fn echoes(lab: &mut Lab, request: bool, seq: u16) -> Vec<Seen> {
    common::frames(lab.sim.pcapng())
        .into_iter()
        .filter_map(|(cable, f)| {
            let p = SlicedPacket::from_ethernet(&f).expect("etherparse decodes every frame");
            let (
                Some(LinkSlice::Ethernet2(eth)),
                Some(NetSlice::Ipv4(ip)),
                Some(TransportSlice::Icmpv4(icmp)),
            ) = (p.link, p.net, p.transport)
            else {
                return None;
            };
            let hit = match icmp.icmp_type() {
                Icmpv4Type::EchoRequest(e) => request && e.seq == seq,
                Icmpv4Type::EchoReply(e) => !request && e.seq == seq,
                _ => false,
            };
            hit.then(|| Seen {
                cable,
                eth_src: MacAddr(eth.source()),
                eth_dst: MacAddr(eth.destination()),
                ip_src: ip.header().source_addr(),
                ip_dst: ip.header().destination_addr(),
                ttl: ip.header().ttl(),
            })
        })
        .collect()
}

#[test]
fn every_hop_rewrites_the_macs_and_lowers_ttl_by_one_while_the_ips_stay() {
    let mut lab = clean();
    phone(&mut lab).ping(SERVER_IP, 64, 0xd11, 7);
    lab.sim.run_for(Duration::from_secs(1));
    let seen = |cable: &str, eth_src, eth_dst, (ip_src, ip_dst), ttl| Seen {
        cable: cable.into(),
        eth_src,
        eth_dst,
        ip_src,
        ip_dst,
        ttl,
    };
    let out = (PHONE_IP, SERVER_IP);
    assert_eq!(
        echoes(&mut lab, true, 7),
        [
            seen("phone:eth0", PHONE_MAC, mac(2, 1), out, 64),
            seen("a2:a2c1", mac(2, 2), mac(3, 1), out, 63),
            seen("c1:c1c2", mac(3, 2), mac(4, 1), out, 62),
            seen("c2:c2border", mac(4, 2), mac(5, 1), out, 61),
            seen("border:ext", mac(5, 2), SERVER_MAC, out, 60),
            seen("tor:server", mac(5, 2), SERVER_MAC, out, 60), // a switch edits nothing
        ]
    );
    let back = (SERVER_IP, PHONE_IP);
    assert_eq!(
        echoes(&mut lab, false, 7),
        [
            seen("tor:server", SERVER_MAC, mac(5, 2), back, 64),
            seen("border:ext", SERVER_MAC, mac(5, 2), back, 64),
            seen("c2:c2border", mac(5, 1), mac(4, 2), back, 63),
            seen("c1:c1c2", mac(4, 1), mac(3, 2), back, 62),
            seen("a2:a2c1", mac(3, 1), mac(2, 2), back, 61),
            seen("phone:eth0", mac(2, 1), PHONE_MAC, back, 60),
        ]
    );
    common::tshark_agrees(&mut lab.sim, "routers.pcapng");
}

#[test]
fn an_oversize_df_packet_gets_fragmentation_needed_with_the_next_hop_mtu() {
    let mut lab = clean();
    // 20 + 8 + 1472 = 1500 bytes: fits every transit wire, not the cloud's 1450.
    phone(&mut lab).udp(SERVER_IP, 40000, 9, &[0x5a; 1472], 64);
    lab.sim.run_for(Duration::from_secs(1));
    let r = received(&mut lab);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(
        r[0].src,
        Ipv4Addr::new(192, 0, 2, 10),
        "border, facing the phone"
    );
    let Message::DestUnreachable {
        code: 4,
        mtu,
        quoted,
    } = &r[0].msg
    else {
        panic!("{:?}", r[0]);
    };
    assert_eq!(*mtu, CLOUD_MTU);
    assert_eq!(quoted.udp_ports(), Some((40000, 9)));
    assert_eq!(quoted.ttl, 61, "as border saw it");
    // Sized to the MTU it was told, the datagram gets through.
    let fits = usize::from(*mtu) - 28;
    phone(&mut lab).udp(SERVER_IP, 40000, 9, &vec![0x5a; fits], 64);
    lab.sim.run_for(Duration::from_secs(1));
    let at_server: Vec<_> = lab
        .sim
        .node::<SimHost>(lab.server)
        .received()
        .iter()
        .map(|r| r.msg.clone())
        .collect();
    assert_eq!(
        at_server,
        [Message::Udp {
            sport: 40000,
            dport: 9,
            payload: vec![0x5a; fits]
        }]
    );
}

#[test]
fn a_packet_to_an_unrouted_address_gets_net_unreachable_from_a2() {
    let mut lab = clean();
    phone(&mut lab).ping(UNROUTED, 64, 0xd11, 1);
    lab.sim.run_for(Duration::from_secs(1));
    let r = received(&mut lab);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].src, Ipv4Addr::new(198, 51, 100, 2));
    let Message::DestUnreachable {
        code: 0, quoted, ..
    } = &r[0].msg
    else {
        panic!("{:?}", r[0]);
    };
    assert_eq!((quoted.dst, quoted.echo()), (UNROUTED, Some((0xd11, 1))));
}

/// 100 pings a second apart with 5 % loss on c1–c2: which were answered,
/// and what that cable lost in each direction.
fn lossy(seed: u64) -> (Vec<u16>, [u64; 2], Vec<u8>) {
    let wire = LinkParams {
        delay: Duration::from_micros(100),
        loss: 0.0,
    };
    let mut lab = lab(seed, wire, LinkParams { loss: 0.05, ..wire });
    for seq in 1..=100 {
        phone(&mut lab).ping(SERVER_IP, 64, 0xd11, seq);
        lab.sim.run_for(Duration::from_secs(1));
    }
    let answered = received(&mut lab)
        .into_iter()
        .filter_map(|r| match r.msg {
            Message::EchoReply { seq, .. } => Some(seq),
            _ => None,
        })
        .collect();
    let lost = lab.sim.link_stats(lab.links[2]).lost;
    (answered, lost, lab.sim.pcapng().to_vec())
}

#[test]
fn five_percent_loss_on_one_cable_loses_a_few_pings_and_the_seed_replays_them() {
    let (answered, lost, pcap) = lossy(11);
    assert!(answered.len() >= 80, "mostly answered: {}", answered.len());
    assert!(
        answered.len() < 100 && lost[0] + lost[1] > 0,
        "some lost: {lost:?}"
    );
    let again = lossy(11);
    assert_eq!((&answered, lost), (&again.0, again.1));
    assert!(
        pcap == again.2,
        "the same seed writes the same capture, byte for byte"
    );
    assert_ne!(lossy(12).0, answered, "another seed loses other pings");
}
