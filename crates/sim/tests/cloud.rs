//! Scenario: the data centre's overlay. Two compute hosts' vSwitches on the
//! `tor` switch; vm-lb (host A) and vm-ctl (host B) in the shop's VNI 1001,
//! vm-other (host A) in VNI 1002 with vm-lb's very address. No static FDB:
//! everything is learned from flooded ARP, as RFC 7348 § 4.1–4.2 describe.

mod common;

use d11_core::{Element, PortId};
use d11_elements::switch::{Switch, SwitchConfig};
use d11_elements::vswitch::{UnderlayPort, VSwitch, VSwitchConfig, VmPort};
use d11_sim::{LinkParams, Message, NodeId, Sim, SimHost};
use d11_wire::ipv4::Ipv4Packet;
use d11_wire::vxlan::{Vni, VxlanPacket};
use d11_wire::MacAddr;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

const LB_MAC: MacAddr = MacAddr([2, 0, 0, 0, 1, 0x10]);
const CTL_MAC: MacAddr = MacAddr([2, 0, 0, 0, 1, 0x20]);
const OTHER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 2, 0x10]);
const CTL_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 20);

struct Lab {
    sim: Sim,
    hosta: NodeId,
    hostb: NodeId,
    lb: NodeId,
    ctl: NodeId,
    other: NodeId,
}

fn vni(v: u32) -> Vni {
    Vni::new(v).unwrap()
}

fn vswitch(n: u8, vms: &[(&str, u32)], flood: &[(u32, &[u8])]) -> VSwitch {
    VSwitch::new(VSwitchConfig {
        underlay: UnderlayPort {
            name: "underlay".into(),
            mac: MacAddr([2, 0, 0, 0, 0, n]),
            address: format!("10.0.0.{n}/24").parse().unwrap(),
            mtu: 1500,
        },
        vms: vms
            .iter()
            .map(|(name, v)| VmPort {
                name: (*name).into(),
                vni: vni(*v),
                mtu: 1450,
            })
            .collect(),
        flood: flood
            .iter()
            .map(|(v, hosts)| {
                let ips = hosts.iter().map(|h| Ipv4Addr::new(10, 0, 0, *h)).collect();
                (vni(*v), ips)
            })
            .collect::<BTreeMap<_, _>>(),
        stations: vec![],
        aging: VSwitchConfig::DEFAULT_AGING,
        max_macs: VSwitchConfig::DEFAULT_MAX_MACS,
    })
}

fn lab() -> Lab {
    let mut sim = Sim::new(7);
    let l = LinkParams::default();
    let tor = sim.add_node(
        "tor",
        Box::new(Switch::new(SwitchConfig::new(["p11", "p12"]))),
        &["p11", "p12"],
    );
    let hosta = sim.add_node(
        "hosta",
        Box::new(vswitch(
            11,
            &[("lb", 1001), ("other", 1002)],
            &[(1001, &[12])],
        )),
        &["underlay", "lb", "other"],
    );
    let hostb = sim.add_node(
        "hostb",
        Box::new(vswitch(12, &[("ctl", 1001)], &[(1001, &[11])])),
        &["underlay", "ctl"],
    );
    let vm = |sim: &mut Sim, name: &str, mac, ip: &str| {
        sim.add_node(
            name,
            Box::new(SimHost::new(mac, ip.parse().unwrap(), None)),
            &["eth0"],
        )
    };
    let lb = vm(&mut sim, "vm-lb", LB_MAC, "192.168.1.10/24");
    let ctl = vm(&mut sim, "vm-ctl", CTL_MAC, "192.168.1.20/24");
    let other = vm(&mut sim, "vm-other", OTHER_MAC, "192.168.1.10/24");
    sim.link((hosta, PortId(0)), (tor, PortId(0)), l);
    sim.link((hostb, PortId(0)), (tor, PortId(1)), l);
    sim.link((lb, PortId(0)), (hosta, PortId(1)), l);
    sim.link((other, PortId(0)), (hosta, PortId(2)), l);
    sim.link((ctl, PortId(0)), (hostb, PortId(1)), l);
    Lab {
        sim,
        hosta,
        hostb,
        lb,
        ctl,
        other,
    }
}

fn echo_replies(sim: &Sim, host: NodeId) -> Vec<u16> {
    sim.node::<SimHost>(host)
        .received()
        .iter()
        .filter_map(|r| match r.msg {
            Message::EchoReply { seq, .. } => Some(seq),
            _ => None,
        })
        .collect()
}

/// The fdb rows of a vSwitch as (vni, mac, vtep or port).
fn fdb(sim: &Sim, id: NodeId) -> Vec<(u64, String, String)> {
    let r = sim.node::<VSwitch>(id).report();
    r["fdb"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let at = e["vtep"].as_str().or(e["port"].as_str()).unwrap();
            (
                e["vni"].as_u64().unwrap(),
                e["mac"].as_str().unwrap().to_string(),
                at.to_string(),
            )
        })
        .collect()
}

#[test]
fn vm_lb_pings_vm_ctl_across_hosts_and_both_vswitches_learn() {
    let mut lab = lab();
    lab.sim.capture_pcapng();
    for seq in 1..=3 {
        lab.sim
            .node_mut::<SimHost>(lab.lb)
            .ping(CTL_IP, 64, 0xd11, seq);
        lab.sim.run_for(Duration::from_secs(1));
    }
    assert_eq!(echo_replies(&lab.sim, lab.lb), [1, 2, 3]);
    assert_eq!(
        fdb(&lab.sim, lab.hosta),
        [
            (1001, LB_MAC.to_string(), "lb".into()),
            (1001, CTL_MAC.to_string(), "10.0.0.12".into()),
        ]
    );
    assert_eq!(
        fdb(&lab.sim, lab.hostb),
        [
            (1001, LB_MAC.to_string(), "10.0.0.11".into()),
            (1001, CTL_MAC.to_string(), "ctl".into()),
        ]
    );
    // vm-other heard the shop's broadcast? Never: a different VNI.
    assert_eq!(lab.sim.counters(lab.other).ports[0].rx_frames, 0);
    // Every frame on the underlay is VXLAN VNI 1001 (or the VTEPs' own ARP).
    let pcap = lab.sim.pcapng().to_vec();
    let mut vxlan = 0;
    for (iface, f) in common::frames(&pcap) {
        if !iface.ends_with(":underlay") || f[12..14] != [0x08, 0x00] {
            continue;
        }
        let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
        let v = VxlanPacket::new_checked(&ip.payload()[8..]).unwrap();
        assert_eq!(v.vni().get(), 1001, "{iface}");
        let inner = &v.payload()[6..12];
        assert!(inner == LB_MAC.0 || inner == CTL_MAC.0, "{iface}");
        vxlan += 1;
    }
    assert!(vxlan >= 8, "ARP both ways and 3 pings both ways: {vxlan}");
    assert!(common::tshark_agrees(&mut lab.sim, "cloud-overlay.pcapng"));
}

#[test]
fn vm_other_with_the_same_address_reaches_no_shop_vm() {
    let mut lab = lab();
    for seq in 1..=3 {
        lab.sim
            .node_mut::<SimHost>(lab.other)
            .ping(CTL_IP, 64, 0xbad, seq);
        lab.sim
            .node_mut::<SimHost>(lab.other)
            .udp(Ipv4Addr::BROADCAST, 68, 67, b"hello?", 64);
        lab.sim.run_for(Duration::from_secs(1));
    }
    assert!(echo_replies(&lab.sim, lab.other).is_empty());
    assert_eq!(lab.sim.counters(lab.lb).ports[0].rx_frames, 0);
    assert_eq!(lab.sim.counters(lab.ctl).ports[0].rx_frames, 0);
    // VNI 1002 has no other VTEP: nothing even crossed the underlay.
    assert_eq!(lab.sim.counters(lab.hosta).ports[0].tx_frames, 0);
    assert_eq!(lab.sim.counters(lab.hostb).ports[0].rx_frames, 0);
    // And the shop still works afterwards, with vm-other's MAC only in 1002.
    lab.sim.node_mut::<SimHost>(lab.lb).ping(CTL_IP, 64, 1, 1);
    lab.sim.run_for(Duration::from_secs(1));
    assert_eq!(echo_replies(&lab.sim, lab.lb), [1]);
    assert!(fdb(&lab.sim, lab.hosta)
        .iter()
        .all(|(v, mac, _)| *mac != OTHER_MAC.to_string() || *v == 1002));
}
