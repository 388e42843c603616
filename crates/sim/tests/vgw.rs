//! Scenario: the virtual gateway in front of the shop's VPC. A client on the
//! public subnet sends to the VIP 203.0.113.24:443; the vgw translates it
//! (static DNAT) to vm-lb 192.168.1.10:443 and sends it in VXLAN VNI 1001 to
//! host A; vm-lb's answer comes back through the vgw with the VIP as its
//! source. The vgw is also the VPC's router between AZ1 (192.168.1.0/24,
//! host A) and AZ2 (192.168.2.0/24, host B).

use d11_core::nat::{DnatRule, NatConfig, Proto, Timeouts};
use d11_core::{DropReason, Element, PortId};
use d11_elements::switch::{Switch, SwitchConfig};
use d11_elements::vgw::{ExtPort, Station, Tenant, Vgw, VgwConfig, EXT};
use d11_elements::vswitch::{UnderlayPort, VSwitch, VSwitchConfig, VmPort};
use d11_sim::{LinkParams, Message, NodeId, Sim, SimHost};
use d11_wire::vxlan::Vni;
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
