//! Scenario: chapters 3 and 7 in memory. The phone's packets ride two GTP-U
//! tunnels and leave the PGW NATed:
//!
//! ```text
//! ue ── enb ══S1-U══ sgw ══S5══ pgw ──SGi── a2 ── server
//! 10.45.0.2   172.16.1.1/.2   172.16.2.1/.2   198.51.100.1/.2   192.0.2.130
//! (gateway 10.45.0.1 on the enb's radio; NAT pool 198.51.100.128/25)
//! ```

mod common;

use d11_core::nat::{NatConfig, SnatPool, Timeouts};
use d11_core::L3Port;
use d11_core::{DropReason, Element, PortId};
use d11_elements::bearer::Bearer;
use d11_elements::enb::{Enb, EnbConfig};
use d11_elements::pgw::{Pgw, PgwConfig};
use d11_elements::router::{Router, RouterConfig, StaticRoute};
use d11_elements::sgw::{Sgw, SgwConfig};
use d11_sim::{LinkParams, Message, NodeId, Sim, SimHost};
use d11_wire::ethernet;
use d11_wire::gtpu::{GtpuPacket, Teid};
use d11_wire::ipv4::Ipv4Packet;
use d11_wire::{Ipv4Cidr, MacAddr};
use std::net::Ipv4Addr;
use std::time::Duration;

const UE_IP: Ipv4Addr = Ipv4Addr::new(10, 45, 0, 2);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 45, 0, 1);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 130);
const A2_SGI: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

const fn mac(node: u8, port: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, node, port])
}

fn port(node: u8, i: u8, name: &str, addr: &str, mtu: u16) -> L3Port {
    L3Port {
        name: name.into(),
        mac: mac(node, i),
        address: addr.parse().unwrap(),
        mtu,
    }
}

fn bearer() -> Bearer {
    Bearer {
        imsi: "001010000000001".into(),
        ue_ip: UE_IP,
        enb_teid: Teid(0x100),
        sgw_s1u_teid: Teid(0x200),
        sgw_s5_teid: Teid(0x300),
        pgw_teid: Teid(0x400),
    }
}

fn nat_pool() -> Ipv4Cidr {
    "198.51.100.128/25".parse().unwrap()
}

struct Lab {
    sim: Sim,
    ue: NodeId,
    pgw: NodeId,
    server: NodeId,
}

fn lab() -> Lab {
    lab_with_ports(1024..=65535)
}

/// The lab with the NAT handing out `ports` per public address.
fn lab_with_ports(ports: std::ops::RangeInclusive<u16>) -> Lab {
    let mut sim = Sim::new(3);
    let ue = sim.add_node(
        "ue",
        Box::new(SimHost::new(
            mac(1, 1),
            "10.45.0.2/16".parse().unwrap(),
            Some(GATEWAY),
        )),
        &["eth0"],
    );
    let enb = Enb::new(EnbConfig {
        router: RouterConfig {
            ports: vec![
                port(2, 1, "radio", "10.45.0.1/16", 1400),
                port(2, 2, "s1u", "172.16.1.1/24", 1500),
            ],
            routes: vec![],
        },
        sgw: "172.16.1.2".parse().unwrap(),
        // The UE's gateway MAC is the pgw's S5 port, as the story draws it.
        gateway_mac: Some(mac(4, 1)),
        bearers: vec![bearer()],
    })
    .unwrap();
    let enb = sim.add_node("enb", Box::new(enb), &["radio", "s1u"]);
    let sgw = Sgw::new(SgwConfig {
        router: RouterConfig {
            ports: vec![
                port(3, 1, "s1u", "172.16.1.2/24", 1500),
                port(3, 2, "s5", "172.16.2.1/24", 1500),
            ],
            routes: vec![],
        },
        enb: "172.16.1.1".parse().unwrap(),
        pgw: "172.16.2.2".parse().unwrap(),
        bearers: vec![bearer()],
    })
    .unwrap();
    let sgw = sim.add_node("sgw", Box::new(sgw), &["s1u", "s5"]);
    let pool = nat_pool();
    let pgw = Pgw::new(PgwConfig {
        router: RouterConfig {
            ports: vec![
                port(4, 1, "s5", "172.16.2.2/24", 1500),
                port(4, 2, "sgi", "198.51.100.1/30", 1500),
            ],
            routes: vec![StaticRoute {
                to: "0.0.0.0/0".parse().unwrap(),
                via: A2_SGI,
            }],
        },
        sgw: "172.16.2.1".parse().unwrap(),
        gateway: GATEWAY,
        nat_pool: pool,
        ue_mtu: 1400,
        nat: NatConfig {
            snat: Some(SnatPool {
                addrs: (128..=255)
                    .map(|i| Ipv4Addr::new(198, 51, 100, i))
                    .collect(),
                ports,
            }),
            dnat: vec![],
            max_entries: 10_000,
            timeouts: Timeouts::default(),
        },
        bearers: vec![bearer()],
    })
    .unwrap();
    let pgw = sim.add_node("pgw", Box::new(pgw), &["s5", "sgi"]);
    let a2 = Router::new(RouterConfig {
        ports: vec![
            port(5, 1, "sgi", "198.51.100.2/30", 1500),
            port(5, 2, "srv", "192.0.2.129/25", 1500),
        ],
        routes: vec![StaticRoute {
            to: pool,
            via: "198.51.100.1".parse().unwrap(),
        }],
    });
    let a2 = sim.add_node("a2", Box::new(a2), &["sgi", "srv"]);
    let server = sim.add_node(
        "server",
        Box::new(SimHost::new(
            mac(6, 1),
            "192.0.2.130/25".parse().unwrap(),
            Some("192.0.2.129".parse().unwrap()),
        )),
        &["eth0"],
    );
    sim.capture_pcapng();
    let w = LinkParams {
        delay: Duration::from_micros(100),
        loss: 0.0,
    };
    let p = PortId;
    sim.link((ue, p(0)), (enb, p(0)), w);
    sim.link((enb, p(1)), (sgw, p(0)), w);
    sim.link((sgw, p(1)), (pgw, p(0)), w);
    sim.link((pgw, p(1)), (a2, p(0)), w);
    sim.link((a2, p(1)), (server, p(0)), w);
    Lab {
        sim,
        ue,
        pgw,
        server,
    }
}

impl Lab {
    fn ue(&mut self) -> &mut SimHost {
        self.sim.node_mut::<SimHost>(self.ue)
    }
    fn server(&mut self) -> &mut SimHost {
        self.sim.node_mut::<SimHost>(self.server)
    }
}

#[test]
fn ping_from_the_ue_crosses_both_tunnels_and_the_nat() {
    let mut lab = lab();
    for seq in 1..=3 {
        lab.ue().ping(SERVER_IP, 64, 0xd11, seq);
        lab.sim.run_for(Duration::from_secs(1));
    }
    let got: Vec<_> = lab
        .ue()
        .take_received()
        .into_iter()
        .map(|r| match r.msg {
            Message::EchoReply { id, seq, .. } => (r.src, r.ttl, id, seq),
            other => panic!("{other:?}"),
        })
        .collect();
    // The server answers with TTL 64; a2 and the pgw are the IP hops.
    assert_eq!(got, [1, 2, 3].map(|seq| (SERVER_IP, 62, 0xd11, seq)));
    // The server saw the NAT address, never the UE's.
    let srcs: Vec<_> = common::frames(lab.sim.pcapng())
        .into_iter()
        .filter(|(cable, _)| cable.starts_with("a2:srv") || cable.starts_with("server"))
        .filter_map(|(_, f)| Ipv4Packet::new_checked(f[ethernet::HEADER_LEN..].to_vec()).ok())
        .map(|ip| ip.src())
        .filter(|s| *s != SERVER_IP)
        .collect();
    assert!(!srcs.is_empty());
    assert!(srcs.iter().all(|s| nat_pool().contains(*s)), "{srcs:?}");
    if !common::tshark_agrees(&mut lab.sim, "mobile-ping.pcapng") {
        eprintln!("tshark not installed: the capture was not cross-checked");
    }
}

#[test]
fn s1u_and_s5_carry_the_bearer_teids_around_the_ue_packet() {
    let mut lab = lab();
    lab.ue().ping(SERVER_IP, 64, 1, 1);
    lab.sim.run_for(Duration::from_secs(1));
    let mut teids: Vec<(u32, Ipv4Addr, Ipv4Addr, Ipv4Addr, Ipv4Addr)> = vec![];
    for (_, f) in common::frames(lab.sim.pcapng()) {
        let Ok(outer) = Ipv4Packet::new_checked(&f[ethernet::HEADER_LEN..]) else {
            continue;
        };
        let udp = outer.payload();
        if outer.protocol() != 17 || udp.len() < 8 || udp[2..4] != [0x08, 0x68] {
            continue;
        }
        let g = GtpuPacket::new_checked(&udp[8..]).expect("our GTP-U parses");
        let inner = Ipv4Packet::new_checked(g.payload()).expect("an IPv4 T-PDU");
        teids.push((
            g.teid().0,
            outer.src(),
            outer.dst(),
            inner.src(),
            inner.dst(),
        ));
    }
    let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    let mut got = teids;
    got.sort();
    got.dedup();
    assert_eq!(
        got,
        [
            (0x100, ip("172.16.1.2"), ip("172.16.1.1"), SERVER_IP, UE_IP),
            (0x200, ip("172.16.1.1"), ip("172.16.1.2"), UE_IP, SERVER_IP),
            (0x300, ip("172.16.2.2"), ip("172.16.2.1"), SERVER_IP, UE_IP),
            (0x400, ip("172.16.2.1"), ip("172.16.2.2"), UE_IP, SERVER_IP),
        ]
    );
}

#[test]
fn traceroute_lists_the_gateway_then_the_hops_after_the_pgw() {
    let mut lab = lab();
    for ttl in 1..=3u8 {
        lab.ue().ping(SERVER_IP, ttl, 0x7ace, u16::from(ttl));
        lab.sim.run_for(Duration::from_secs(1));
    }
    let mut hops: Vec<(u16, Ipv4Addr)> = lab
        .ue()
        .take_received()
        .into_iter()
        .map(|r| match r.msg {
            Message::TimeExceeded { code: 0, quoted } => {
                // The quote is the UE's own packet: the NAT translated it back.
                assert_eq!((quoted.src, quoted.dst), (UE_IP, SERVER_IP));
                (quoted.echo().expect("our probe").1, r.src)
            }
            Message::EchoReply { seq, .. } => (seq, r.src),
            other => panic!("{other:?}"),
        })
        .collect();
    hops.sort();
    assert_eq!(hops, [(1, GATEWAY), (2, A2_SGI), (3, SERVER_IP)]);
}

#[test]
fn udp_goes_out_natted_and_the_answer_comes_back_to_the_ue_port() {
    let mut lab = lab();
    lab.ue().udp(SERVER_IP, 40000, 53, b"order?", 64);
    lab.sim.run_for(Duration::from_secs(1));
    let at_server = lab.server().take_received();
    let [r] = &at_server[..] else {
        panic!("{at_server:?}")
    };
    let Message::Udp { sport, dport, .. } = r.msg.clone() else {
        panic!("{r:?}")
    };
    assert!(nat_pool().contains(r.src) && dport == 53, "{r:?}");
    // The NAT table shows the mapping, as `d11 show pgw nat` prints it.
    let nat = lab.sim.node::<Pgw>(lab.pgw).report()["nat"].clone();
    assert_eq!(nat[0]["src"], "10.45.0.2:40000");
    assert_eq!(nat[0]["reply_dst"], format!("{}:{sport}", r.src));
    lab.server().udp(r.src, 53, sport, b"ok", 64);
    lab.sim.run_for(Duration::from_secs(1));
    let back = lab.ue().take_received();
    assert_eq!(back.len(), 1, "{back:?}");
    assert_eq!(back[0].src, SERVER_IP);
    assert_eq!(
        back[0].msg,
        Message::Udp {
            sport: 53,
            dport: 40000,
            payload: b"ok".to_vec()
        }
    );
}

#[test]
fn unsolicited_inbound_to_the_pool_is_dropped_and_counted() {
    let mut lab = lab();
    lab.server()
        .udp("198.51.100.140".parse().unwrap(), 53, 9999, b"hi", 64);
    lab.sim.run_for(Duration::from_secs(1));
    assert!(lab.ue().take_received().is_empty());
    let sgi = &lab.sim.counters(lab.pgw).ports[1];
    assert_eq!(sgi.drop_count(DropReason::NatUnsolicited), 1);
    assert_eq!(
        lab.sim.node::<Pgw>(lab.pgw).report()["nat_stats"]["unsolicited"],
        1
    );
}

#[test]
fn a_downlink_packet_too_big_for_the_ue_link_gets_fragmentation_needed_from_the_pgw() {
    let mut lab = lab();
    lab.ue().udp(SERVER_IP, 40000, 5001, b"hello", 64);
    lab.sim.run_for(Duration::from_secs(1));
    let r = lab.server().take_received().remove(0);
    let Message::Udp { sport, .. } = r.msg else {
        panic!("{r:?}")
    };
    // 1401 bytes with DF: one more than the UE's link takes.
    lab.server().udp(r.src, 5001, sport, &[0x11; 1401 - 28], 64);
    lab.sim.run_for(Duration::from_secs(1));
    let got = lab.server().take_received();
    let [e] = &got[..] else { panic!("{got:?}") };
    let Message::DestUnreachable { code, mtu, quoted } = &e.msg else {
        panic!("{e:?}")
    };
    assert_eq!(
        (e.src, *code, *mtu),
        ("198.51.100.1".parse().unwrap(), 4, 1400)
    );
    assert_eq!(
        (quoted.src, quoted.dst),
        (SERVER_IP, r.src),
        "quoted as the server sent it"
    );
    assert!(lab.ue().take_received().is_empty());
    let sgi = &lab.sim.counters(lab.pgw).ports[1];
    assert_eq!(sgi.drop_count(DropReason::NeedsFragmentation), 1);
}

#[test]
fn a_thousand_ue_flows_get_distinct_public_mappings() {
    let mut lab = lab();
    // Resolve every hop's ARP first: a burst waiting for ARP would overflow its queue.
    lab.ue().ping(SERVER_IP, 64, 1, 1);
    lab.sim.run_for(Duration::from_secs(1));
    lab.ue().take_received();
    for i in 0..1000u16 {
        lab.ue().udp(SERVER_IP, 20000 + i, 5001, b"flow", 64);
        lab.sim.run_for(Duration::from_millis(1));
    }
    lab.sim.run_for(Duration::from_secs(1));
    let seen: std::collections::HashSet<(Ipv4Addr, u16)> = lab
        .server()
        .take_received()
        .into_iter()
        .map(|r| match r.msg {
            Message::Udp { sport, .. } => (r.src, sport),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(seen.len(), 1000);
    assert!(seen.iter().all(|(ip, _)| nat_pool().contains(*ip)));
    // The ping's entry and the thousand flows'.
    assert_eq!(
        lab.sim.node::<Pgw>(lab.pgw).report()["nat_stats"]["created"],
        1001
    );
}

#[test]
fn more_new_flows_than_the_port_pool_holds_are_refused_and_counted() {
    let mut lab = lab_with_ports(2000..=2009);
    lab.ue().ping(SERVER_IP, 64, 2005, 1);
    lab.sim.run_for(Duration::from_secs(1));
    assert_eq!(
        lab.ue().take_received().len(),
        1,
        "the ping holds one mapping"
    );
    for i in 0..10u16 {
        lab.ue().udp(SERVER_IP, 30000 + i, 5001, b"flow", 64);
    }
    lab.sim.run_for(Duration::from_secs(1));
    // Ports are per protocol: the ping's identifier leaves all ten UDP ports.
    assert_eq!(lab.server().take_received().len(), 10);
    lab.ue().udp(SERVER_IP, 31000, 5001, b"one too many", 64);
    lab.ue().udp(SERVER_IP, 31001, 5001, b"two too many", 64);
    lab.sim.run_for(Duration::from_secs(1));
    assert!(lab.server().take_received().is_empty());
    let s5 = &lab.sim.counters(lab.pgw).ports[0];
    assert_eq!(s5.drop_count(DropReason::NatPortsExhausted), 2);
    assert_eq!(
        lab.sim.node::<Pgw>(lab.pgw).report()["nat_stats"]["ports_exhausted"],
        2
    );
}

#[test]
fn a_downlink_packet_whose_ttl_ends_at_the_pgw_gets_time_exceeded() {
    let mut lab = lab();
    lab.ue().udp(SERVER_IP, 40000, 5001, b"hello", 64);
    lab.sim.run_for(Duration::from_secs(1));
    let r = lab.server().take_received().remove(0);
    let Message::Udp { sport, .. } = r.msg else {
        panic!("{r:?}")
    };
    // TTL 2: a2 takes one, the pgw would take the last.
    lab.server().udp(r.src, 5001, sport, b"late", 2);
    lab.sim.run_for(Duration::from_secs(1));
    let got = lab.server().take_received();
    let [e] = &got[..] else { panic!("{got:?}") };
    let Message::TimeExceeded { quoted, .. } = &e.msg else {
        panic!("{e:?}")
    };
    assert_eq!(e.src, "198.51.100.1".parse::<Ipv4Addr>().unwrap());
    assert_eq!((quoted.src, quoted.dst), (SERVER_IP, r.src));
    assert!(lab.ue().take_received().is_empty());
    let sgi = &lab.sim.counters(lab.pgw).ports[1];
    assert_eq!(sgi.drop_count(DropReason::TtlExpired), 1);
}
