//! Scenario: the virtual gateway in front of the shop's VPC. A client on the
//! public subnet sends to the VIP 203.0.113.24:443; the vgw translates it
//! (static DNAT) to vm-lb 192.168.1.10:443 and sends it in VXLAN VNI 1001 to
//! host A; vm-lb's answer comes back through the vgw with the VIP as its
//! source. The vgw is also the VPC's router between AZ1 (192.168.1.0/24,
//! host A) and AZ2 (192.168.2.0/24, host B), and answers as a router:
//! echo to its addresses, time exceeded, host unreachable and
//! fragmentation needed (path MTU discovery through the DNAT).

mod common;

use d11_core::nat::{DnatRule, NatConfig, Proto, Timeouts};
use d11_core::{DropReason, Element, PortId};
use d11_elements::switch::{Switch, SwitchConfig};
use d11_elements::vgw::{ExtPort, Station, Tenant, Vgw, VgwConfig, EXT};
use d11_elements::vswitch::{UnderlayPort, VSwitch, VSwitchConfig, VmPort};
use d11_sim::{LinkParams, Message, NodeId, Quoted, Received, Sim, SimHost};
use d11_wire::ipv4::Ipv4Packet;
use d11_wire::vxlan::Vni;
use d11_wire::vxlan::VxlanPacket;
use d11_wire::MacAddr;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 24);
const CLIENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 100);
const LB: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
const CTL2: Ipv4Addr = Ipv4Addr::new(192, 168, 2, 20);
const LB_MAC: MacAddr = MacAddr([2, 0, 0, 0, 1, 0x10]);
const CTL2_MAC: MacAddr = MacAddr([2, 0, 0, 0, 1, 0x21]);

struct Lab {
    sim: Sim,
    vgw: NodeId,
    client: NodeId,
    lb: NodeId,
    ctl2: NodeId,
    other: NodeId,
}

fn vni(v: u32) -> Vni {
    Vni::new(v).unwrap()
}

fn underlay(n: u8) -> UnderlayPort {
    UnderlayPort {
        name: "underlay".into(),
        mac: MacAddr([2, 0, 0, 0, 0, n]),
        address: format!("10.0.0.{n}/24").parse().unwrap(),
        mtu: 1500,
    }
}

fn vswitch(n: u8, vms: &[(&str, u32)]) -> VSwitch {
    let others: Vec<Ipv4Addr> = [1u8, 11, 12]
        .into_iter()
        .filter(|h| *h != n)
        .map(|h| Ipv4Addr::new(10, 0, 0, h))
        .collect();
    VSwitch::new(VSwitchConfig {
        underlay: underlay(n),
        vms: vms
            .iter()
            .map(|(name, v)| VmPort {
                name: (*name).into(),
                vni: vni(*v),
                mtu: 1450,
            })
            .collect(),
        flood: BTreeMap::from([(vni(1001), others)]),
        stations: vec![],
        aging: VSwitchConfig::DEFAULT_AGING,
        max_macs: VSwitchConfig::DEFAULT_MAX_MACS,
    })
}

fn vgw() -> Vgw {
    Vgw::new(VgwConfig {
        ext: ExtPort {
            name: "ext".into(),
            mac: MacAddr([2, 0, 0, 0, 0xe, 2]),
            address: "203.0.113.2/24".parse().unwrap(),
            mtu: 1500,
            vips: vec![VIP, Ipv4Addr::new(203, 0, 113, 25)],
            gateway: Ipv4Addr::new(203, 0, 113, 1),
        },
        underlay: UnderlayPort {
            name: "underlay".into(),
            ..underlay(1)
        },
        tenant: Tenant {
            vni: vni(1001),
            mac: MacAddr([2, 0, 0, 0, 0xa, 1]),
            gateways: vec![
                "192.168.1.1/24".parse().unwrap(),
                "192.168.2.1/24".parse().unwrap(),
            ],
            stations: vec![
                Station {
                    ip: LB,
                    mac: LB_MAC,
                    vtep: Ipv4Addr::new(10, 0, 0, 11),
                },
                Station {
                    ip: CTL2,
                    mac: CTL2_MAC,
                    vtep: Ipv4Addr::new(10, 0, 0, 12),
                },
            ],
        },
        nat: NatConfig {
            snat: None,
            dnat: vec![DnatRule {
                proto: Proto::Udp,
                public: SocketAddrV4::new(VIP, 443),
                private: SocketAddrV4::new(LB, 443),
            }],
            max_entries: 1024,
            timeouts: Timeouts::default(),
        },
        vpn: None,
    })
}

fn lab() -> Lab {
    let mut sim = Sim::new(11);
    let l = LinkParams::default();
    let tor = sim.add_node(
        "tor",
        Box::new(Switch::new(SwitchConfig::new(["vgw", "hosta", "hostb"]))),
        &["vgw", "hosta", "hostb"],
    );
    let vgw = sim.add_node("vgw", Box::new(vgw()), &["ext", "underlay"]);
    let hosta = sim.add_node(
        "hosta",
        Box::new(vswitch(11, &[("lb", 1001), ("other", 1002)])),
        &["underlay", "lb", "other"],
    );
    let hostb = sim.add_node(
        "hostb",
        Box::new(vswitch(12, &[("ctl2", 1001)])),
        &["underlay", "ctl2"],
    );
    let host = |sim: &mut Sim, name: &str, mac, ip: &str, gw: &str| {
        let h = SimHost::new(mac, ip.parse().unwrap(), Some(gw.parse().unwrap()));
        sim.add_node(name, Box::new(h), &["eth0"])
    };
    let client = host(
        &mut sim,
        "client",
        MacAddr([2, 0, 0, 0, 0xc, 1]),
        "203.0.113.100/24",
        "203.0.113.2",
    );
    let lb = host(&mut sim, "vm-lb", LB_MAC, "192.168.1.10/24", "192.168.1.1");
    let other = host(
        &mut sim,
        "vm-other",
        MacAddr([2, 0, 0, 0, 2, 0x10]),
        "192.168.1.10/24",
        "192.168.1.1",
    );
    let ctl2 = host(
        &mut sim,
        "vm-ctl2",
        CTL2_MAC,
        "192.168.2.20/24",
        "192.168.2.1",
    );
    sim.link((client, PortId(0)), (vgw, EXT), l);
    sim.link((vgw, PortId(1)), (tor, PortId(0)), l);
    sim.link((hosta, PortId(0)), (tor, PortId(1)), l);
    sim.link((hostb, PortId(0)), (tor, PortId(2)), l);
    sim.link((lb, PortId(0)), (hosta, PortId(1)), l);
    sim.link((other, PortId(0)), (hosta, PortId(2)), l);
    sim.link((ctl2, PortId(0)), (hostb, PortId(1)), l);
    Lab {
        sim,
        vgw,
        client,
        lb,
        ctl2,
        other,
    }
}

/// UDP datagrams a host received: (from, sport, dport, payload).
fn udp(sim: &Sim, id: NodeId) -> Vec<(Ipv4Addr, u16, u16, Vec<u8>)> {
    sim.node::<SimHost>(id)
        .received()
        .iter()
        .filter_map(|r| match &r.msg {
            Message::Udp {
                sport,
                dport,
                payload,
            } => Some((r.src, *sport, *dport, payload.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn the_vip_is_translated_to_vm_lb_and_the_answer_comes_back_from_the_vip() {
    let mut lab = lab();
    lab.sim
        .node_mut::<SimHost>(lab.client)
        .udp(VIP, 40000, 443, b"GET", 64);
    lab.sim.run_for(Duration::from_secs(1));
    // DNAT keeps the client's address: vm-lb sees who asked.
    assert_eq!(
        udp(&lab.sim, lab.lb),
        [(CLIENT, 40000, 443, b"GET".to_vec())]
    );
    lab.sim
        .node_mut::<SimHost>(lab.lb)
        .udp(CLIENT, 443, 40000, b"200 OK", 64);
    lab.sim.run_for(Duration::from_secs(1));
    assert_eq!(
        udp(&lab.sim, lab.client),
        [(VIP, 443, 40000, b"200 OK".to_vec())]
    );
    let r = lab.sim.node::<Vgw>(lab.vgw).report();
    assert_eq!(r["nat"][0]["dst"], "203.0.113.24:443", "{r}");
    assert_eq!(r["nat"][0]["reply_src"], "192.168.1.10:443", "{r}");
    // vm-other, with the very same address in VNI 1002, saw nothing.
    assert_eq!(lab.sim.counters(lab.other).ports[0].rx_frames, 0);
}

#[test]
fn an_unconfigured_vip_or_port_is_a_counted_drop() {
    let mut lab = lab();
    let c = lab.sim.node_mut::<SimHost>(lab.client);
    c.udp(VIP, 40000, 80, b"x", 64);
    c.udp(Ipv4Addr::new(203, 0, 113, 25), 40000, 443, b"x", 64);
    c.udp(Ipv4Addr::new(203, 0, 113, 26), 40000, 443, b"x", 64);
    lab.sim.run_for(Duration::from_secs(5));
    let ext = &lab.sim.counters(lab.vgw).ports[0];
    assert_eq!(
        ext.drop_count(DropReason::NatUnsolicited),
        2,
        "port 80 and the rule-less .25"
    );
    assert_eq!(lab.sim.counters(lab.lb).ports[0].rx_frames, 0);
    // .26 is not the gateway's: nobody answers the client's ARP for it.
    assert_eq!(lab.sim.counters(lab.vgw).ports[1].tx_frames, 0);
    // And a flow from inside that no DNAT entry explains goes nowhere.
    lab.sim
        .node_mut::<SimHost>(lab.lb)
        .udp(CLIENT, 5353, 40000, b"x", 64);
    lab.sim.run_for(Duration::from_secs(1));
    assert!(udp(&lab.sim, lab.client).is_empty());
    let underlay = &lab.sim.counters(lab.vgw).ports[1];
    assert_eq!(underlay.drop_count(DropReason::NatUnsolicited), 1);
}

#[test]
fn the_vpc_router_joins_the_two_availability_zones() {
    let mut lab = lab();
    for seq in 1..=2 {
        lab.sim.node_mut::<SimHost>(lab.lb).ping(CTL2, 64, 7, seq);
        lab.sim.run_for(Duration::from_secs(1));
    }
    let replies: Vec<_> = lab
        .sim
        .node::<SimHost>(lab.lb)
        .received()
        .iter()
        .filter_map(|r| match r.msg {
            Message::EchoReply { seq, .. } => Some((r.src, r.ttl, seq)),
            _ => None,
        })
        .collect();
    // One router hop each way: the TTL the reply arrives with is 63.
    assert_eq!(replies, [(CTL2, 63, 1), (CTL2, 63, 2)]);
    assert_eq!(
        lab.sim.node::<Vgw>(lab.vgw).report()["stats"]["routed_in_vpc"],
        4
    );
    assert_eq!(lab.sim.counters(lab.ctl2).ports[0].dropped(), 0);
}

const GW1: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
const GW2: Ipv4Addr = Ipv4Addr::new(192, 168, 2, 1);
const EXT_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);

/// ICMP errors a host received: (from, type, code, mtu, quoted).
fn errors(sim: &Sim, id: NodeId) -> Vec<(Ipv4Addr, u8, u8, u16, Quoted)> {
    sim.node::<SimHost>(id)
        .received()
        .iter()
        .filter_map(|r: &Received| match &r.msg {
            Message::TimeExceeded { code, quoted } => Some((r.src, 11, *code, 0, quoted.clone())),
            Message::DestUnreachable { code, mtu, quoted } => {
                Some((r.src, 3, *code, *mtu, quoted.clone()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn vm_lb_pings_its_gateway_and_the_reply_comes_back_in_vxlan_vni_1001() {
    let mut lab = lab();
    lab.sim.capture_pcapng();
    for seq in 1..=2 {
        lab.sim.node_mut::<SimHost>(lab.lb).ping(GW1, 64, 9, seq);
        lab.sim.run_for(Duration::from_secs(1));
    }
    let replies: Vec<_> = lab
        .sim
        .node::<SimHost>(lab.lb)
        .received()
        .iter()
        .filter_map(|r| match r.msg {
            Message::EchoReply { id, seq, .. } => Some((r.src, r.ttl, id, seq)),
            _ => None,
        })
        .collect();
    // Originated by the gateway itself: TTL 64, no hop taken off.
    assert_eq!(replies, [(GW1, 64, 9, 1), (GW1, 64, 9, 2)]);
    // On the vgw's underlay, the replies are VXLAN VNI 1001 to host A,
    // from the VPC router's MAC and 192.168.1.1 to vm-lb.
    let pcap = lab.sim.pcapng().to_vec();
    let mut seen = 0;
    for (iface, f) in common::frames(&pcap) {
        if iface != "vgw:underlay" || f[12..14] != [0x08, 0x00] || f[6..12] != [2, 0, 0, 0, 0, 1] {
            continue;
        }
        let outer = Ipv4Packet::new_checked(&f[14..]).unwrap();
        let v = VxlanPacket::new_checked(&outer.payload()[8..]).unwrap();
        let inner = v.payload();
        if inner[12..14] != [0x08, 0x00] {
            continue; // the gateway's ARP answer
        }
        let ip = Ipv4Packet::new_checked(&inner[14..]).unwrap();
        assert_eq!(v.vni().get(), 1001);
        assert_eq!(outer.dst(), Ipv4Addr::new(10, 0, 0, 11));
        assert_eq!(
            (&inner[0..6], &inner[6..12]),
            (&LB_MAC.0[..], &[2, 0, 0, 0, 0xa, 1][..])
        );
        assert_eq!((ip.src(), ip.dst(), ip.payload()[0]), (GW1, LB, 0));
        seen += 1;
    }
    assert_eq!(seen, 2);
    assert_eq!(
        lab.sim.node::<Vgw>(lab.vgw).report()["originated"]["echo_replies"],
        2
    );
    // vm-other, 192.168.1.10 in VNI 1002, heard none of it.
    assert_eq!(lab.sim.counters(lab.other).ports[0].rx_frames, 0);
    assert!(common::tshark_agrees(
        &mut lab.sim,
        "vgw-gateway-ping.pcapng"
    ));
}

#[test]
fn ttl_1_through_the_vgw_gives_time_exceeded_from_the_hop() {
    let mut lab = lab();
    // Between the AZs, each way: from the gateway of the sender's subnet.
    lab.sim.node_mut::<SimHost>(lab.lb).ping(CTL2, 1, 7, 1);
    lab.sim.node_mut::<SimHost>(lab.ctl2).ping(LB, 1, 8, 1);
    // Out of the VPC (a reply whose TTL ends at the gateway).
    lab.sim
        .node_mut::<SimHost>(lab.lb)
        .udp(CLIENT, 443, 40000, b"late", 1);
    // Into the VPC through the DNAT: the traceroute hop is the ext address,
    // and the quote is the packet as the client sent it, to the VIP.
    lab.sim
        .node_mut::<SimHost>(lab.client)
        .udp(VIP, 40000, 443, b"probe", 1);
    lab.sim.run_for(Duration::from_secs(1));
    let lb = errors(&lab.sim, lab.lb);
    assert_eq!(lb.len(), 2, "{lb:?}");
    assert_eq!((lb[0].0, lb[0].1, lb[0].2), (GW1, 11, 0));
    assert_eq!((lb[0].4.dst, lb[0].4.echo()), (CTL2, Some((7, 1))));
    assert_eq!((lb[1].0, lb[1].1, lb[1].4.dst), (GW1, 11, CLIENT));
    let ctl2 = errors(&lab.sim, lab.ctl2);
    assert_eq!(ctl2.len(), 1, "{ctl2:?}");
    assert_eq!((ctl2[0].0, ctl2[0].1, ctl2[0].4.dst), (GW2, 11, LB));
    let client = errors(&lab.sim, lab.client);
    assert_eq!(client.len(), 1, "{client:?}");
    let (from, ty, code, _, q) = &client[0];
    assert_eq!((*from, *ty, *code), (EXT_ADDR, 11, 0));
    assert_eq!(
        (q.src, q.dst, q.udp_ports()),
        (CLIENT, VIP, Some((40000, 443)))
    );
    // The next probe, one TTL more, reaches vm-lb.
    lab.sim
        .node_mut::<SimHost>(lab.client)
        .udp(VIP, 40000, 443, b"probe", 2);
    lab.sim.run_for(Duration::from_secs(1));
    assert_eq!(
        udp(&lab.sim, lab.lb),
        [(CLIENT, 40000, 443, b"probe".to_vec())]
    );
    let r = lab.sim.node::<Vgw>(lab.vgw).report();
    assert_eq!(r["originated"]["time_exceeded"], 4, "{r}");
    // A probe to a port without a rule is refused silently, after the NAT check.
    lab.sim
        .node_mut::<SimHost>(lab.client)
        .udp(VIP, 40000, 80, b"probe", 1);
    lab.sim.run_for(Duration::from_secs(1));
    assert_eq!(errors(&lab.sim, lab.client).len(), 1);
}

#[test]
fn an_oversized_df_packet_to_the_vip_gets_frag_needed_with_mtu_1450_quoting_the_vip() {
    let mut lab = lab();
    // 1500 bytes of IP with DF (the client's default): 50 too many for a VM
    // once VXLAN's 50 bytes go around it on a 1500-byte underlay.
    lab.sim
        .node_mut::<SimHost>(lab.client)
        .udp(VIP, 40000, 443, &[0x11; 1472], 64);
    lab.sim.run_for(Duration::from_secs(1));
    let e = errors(&lab.sim, lab.client);
    assert_eq!(e.len(), 1, "{e:?}");
    let (from, ty, code, mtu, q) = &e[0];
    assert_eq!((*from, *ty, *code, *mtu), (EXT_ADDR, 3, 4, 1450));
    assert_eq!(
        (q.src, q.dst, q.udp_ports()),
        (CLIENT, VIP, Some((40000, 443)))
    );
    assert!(udp(&lab.sim, lab.lb).is_empty());
    let ext = &lab.sim.counters(lab.vgw).ports[0];
    assert_eq!(ext.drop_count(DropReason::NeedsFragmentation), 1);
    // Path MTU discovery: the client retries at the MTU it was told.
    lab.sim
        .node_mut::<SimHost>(lab.client)
        .udp(VIP, 40000, 443, &[0x11; 1450 - 28], 64);
    lab.sim.run_for(Duration::from_secs(1));
    let got = udp(&lab.sim, lab.lb);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].3.len(), 1422);
}

#[test]
fn a_vpc_address_no_vm_holds_gets_host_unreachable_from_the_gateway() {
    let mut lab = lab();
    let nobody = Ipv4Addr::new(192, 168, 2, 99);
    lab.sim.node_mut::<SimHost>(lab.lb).ping(nobody, 64, 3, 1);
    lab.sim.run_for(Duration::from_secs(1));
    let e = errors(&lab.sim, lab.lb);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!((e[0].0, e[0].1, e[0].2, e[0].4.dst), (GW1, 3, 1, nobody));
    let underlay = &lab.sim.counters(lab.vgw).ports[1];
    assert_eq!(underlay.drop_count(DropReason::UnknownStation), 1);
}
