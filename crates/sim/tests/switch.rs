//! Scenario: three hosts on one learning switch (the data centre's `tor`).
//! h1 talks to h2; h3 only listens, so what reaches it is what was flooded.

mod common;

use d11_core::{DropReason, Element, Instant, PortId};
use d11_elements::switch::{Switch, SwitchConfig};
use d11_sim::{LinkParams, Message, NodeId, Sim, SimHost, Stop};
use d11_wire::MacAddr;
use serde_json::json;
use std::net::Ipv4Addr;
use std::time::Duration;

const H2_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const AGING: Duration = Duration::from_secs(30);

struct Lab {
    sim: Sim,
    tor: NodeId,
    h: [NodeId; 3],
}

fn mac(n: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 0, n])
}

/// h1, h2, h3 on ports p1, p2, p3 of `tor`, cables of `params`. The switch
/// ages entries after 30 s, before the hosts' ARP entries (60 s) expire.
fn lab(seed: u64, params: LinkParams) -> Lab {
    let mut sim = Sim::new(seed);
    let tor = sim.add_node(
        "tor",
        Box::new(Switch::new(SwitchConfig {
            aging: AGING,
            ..SwitchConfig::new(["p1", "p2", "p3"])
        })),
        &["p1", "p2", "p3"],
    );
    let h = [1u8, 2, 3].map(|n| {
        let host = SimHost::new(mac(n), format!("10.0.0.{n}/24").parse().unwrap(), None);
        let id = sim.add_node(&format!("h{n}"), Box::new(host), &["eth0"]);
        sim.link((id, PortId(0)), (tor, PortId(u16::from(n) - 1)), params);
        id
    });
    Lab { sim, tor, h }
}

fn ping(lab: &mut Lab, seq: u16) {
    lab.sim
        .node_mut::<SimHost>(lab.h[0])
        .ping(H2_IP, 64, 0xd11, seq);
}

fn replies(lab: &Lab) -> Vec<u16> {
    lab.sim
        .node::<SimHost>(lab.h[0])
        .received()
        .iter()
        .filter_map(|r| match r.msg {
            Message::EchoReply { seq, .. } => Some(seq),
            _ => None,
        })
        .collect()
}

fn macs(lab: &Lab) -> Vec<(String, String)> {
    let r = lab.sim.node::<Switch>(lab.tor).report();
    r["macs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["mac"].as_str().unwrap().into(),
                e["port"].as_str().unwrap().into(),
            )
        })
        .collect()
}

#[test]
fn ping_through_the_switch_resolves_arp_and_gets_every_reply() {
    let mut lab = lab(1, LinkParams::default());
    for seq in 1..=3 {
        ping(&mut lab, seq);
        assert_eq!(lab.sim.run_for(Duration::from_secs(1)), Stop::Deadline);
    }
    assert_eq!(replies(&lab), [1, 2, 3]);
    assert_eq!(
        lab.sim.node::<SimHost>(lab.h[0]).arp_lookup(H2_IP),
        Some(mac(2))
    );
    assert_eq!(
        lab.sim
            .node::<SimHost>(lab.h[1])
            .arp_lookup(Ipv4Addr::new(10, 0, 0, 1)),
        Some(mac(1))
    );
}

#[test]
fn the_switch_learns_both_hosts_and_floods_only_the_broadcast() {
    let mut lab = lab(1, LinkParams::default());
    ping(&mut lab, 1);
    lab.sim.run_for(Duration::from_secs(1));
    assert_eq!(
        macs(&lab),
        [
            ("02:00:00:00:00:01".into(), "p1".into()),
            ("02:00:00:00:00:02".into(), "p2".into())
        ]
    );
    // ARP request (flooded), ARP reply, echo request, echo reply: only the
    // first reached h3.
    let tor = lab.sim.counters(lab.tor);
    let (p1, p2, p3) = (&tor.ports[0], &tor.ports[1], &tor.ports[2]);
    assert_eq!((p1.rx_frames, p2.rx_frames, p3.rx_frames), (2, 2, 0));
    assert_eq!((p1.tx_frames, p2.tx_frames, p3.tx_frames), (2, 2, 1));
    let h3 = &lab.sim.counters(lab.h[2]).ports[0];
    assert_eq!((h3.rx_frames, h3.dropped()), (1, 0));
    let tor = lab.sim.status(lab.tor);
    assert_eq!(tor.port("p3").unwrap().counters.tx_frames, 1);
}

#[test]
fn aged_entries_are_forgotten_and_the_next_unicast_is_flooded_again() {
    let mut lab = lab(1, LinkParams::default());
    ping(&mut lab, 1);
    lab.sim.run_for(Duration::from_secs(1));
    // Nothing else to do but age: the switch's timer is the last event.
    assert_eq!(lab.sim.run_until_idle(), Stop::Idle);
    assert_eq!(lab.sim.now(), Instant::ZERO + AGING);
    assert!(macs(&lab).is_empty());
    assert_eq!(lab.sim.node::<Switch>(lab.tor).poll_at(), None);
    assert_eq!(lab.sim.node::<Switch>(lab.tor).report()["stats"]["aged"], 2);
    // h1 still knows h2's MAC (ARP lasts 60 s), so the echo request goes out
    // as unicast the switch no longer knows: flooded, h3 drops it as not its
    // own. The reply finds h1 learned again from that request.
    ping(&mut lab, 2);
    lab.sim.run_for(Duration::from_secs(1));
    assert_eq!(replies(&lab), [1, 2]);
    let h3 = &lab.sim.counters(lab.h[2]).ports[0];
    assert_eq!(h3.rx_frames, 2);
    assert_eq!(h3.drop_count(DropReason::NotForUs), 1);
    assert_eq!(lab.sim.counters(lab.tor).ports[2].tx_frames, 2);
}

/// 40 pings a second apart over cables losing 5 %: which were answered, what
/// each cable lost, and the whole capture.
fn lossy_run(seed: u64) -> (Vec<u16>, Vec<u64>, Vec<u8>) {
    let mut lab = lab(
        seed,
        LinkParams {
            delay: Duration::from_micros(50),
            loss: 0.05,
        },
    );
    lab.sim.capture_pcapng();
    for seq in 1..=40 {
        ping(&mut lab, seq);
        lab.sim.run_for(Duration::from_secs(1));
    }
    let lost = (0..3)
        .map(|l| {
            let s = lab.sim.link_stats(d11_sim::LinkId(l));
            s.lost[0] + s.lost[1]
        })
        .collect();
    (replies(&lab), lost, lab.sim.pcapng().to_vec())
}

#[test]
fn loss_with_a_seed_gives_the_same_result_twice_and_another_seed_differs() {
    let a = lossy_run(2018);
    assert_eq!(a, lossy_run(2018), "same seed, same frames, same drops");
    let b = lossy_run(1111);
    assert_ne!(a.0, b.0, "another seed loses other pings");
    for run in [&a, &b] {
        assert!((20..40).contains(&run.0.len()), "{:?}", run.0);
        assert!(run.1[0] + run.1[1] > 0);
    }
}

#[test]
fn a_ring_of_switches_storms_until_the_step_cap_instead_of_hanging() {
    let mut sim = Sim::new(1);
    let ring: Vec<NodeId> = (0..3)
        .map(|i| {
            let sw = Switch::new(SwitchConfig::new(["left", "right", "host"]));
            sim.add_node(&format!("s{i}"), Box::new(sw), &["left", "right", "host"])
        })
        .collect();
    for i in 0..3 {
        sim.link(
            (ring[i], PortId(1)),
            (ring[(i + 1) % 3], PortId(0)),
            LinkParams::default(),
        );
    }
    let h1 = sim.add_node(
        "h1",
        Box::new(SimHost::new(mac(1), "10.0.0.1/24".parse().unwrap(), None)),
        &["eth0"],
    );
    sim.link((h1, PortId(0)), (ring[0], PortId(2)), LinkParams::default());
    sim.set_step_cap(10_000);
    sim.node_mut::<SimHost>(h1).ping(H2_IP, 64, 1, 1);
    assert_eq!(sim.run_until_idle(), Stop::StepCap);
    assert_eq!(sim.run_for(Duration::from_secs(1)), Stop::StepCap);
    // The broadcast keeps coming back to h1, and its MAC keeps moving.
    assert!(sim.counters(h1).ports[0].rx_frames > 100);
    assert!(sim.node::<Switch>(ring[0]).report()["stats"]["moved"].as_u64() > Some(100));
}

#[test]
fn the_capture_has_one_interface_per_cable_and_tshark_decodes_it() {
    let mut lab = lab(
        1,
        LinkParams {
            delay: Duration::from_millis(1),
            loss: 0.0,
        },
    );
    lab.sim.capture_pcapng();
    ping(&mut lab, 1);
    lab.sim.run_for(Duration::from_secs(1));
    let seen: Vec<(String, usize)> = common::frames(lab.sim.pcapng())
        .into_iter()
        .map(|(i, f)| (i, f.len()))
        .collect();
    // Events run in (time, insertion) order: the who-has reaches h2, which
    // answers before the flooded copy reaches h3; then the 98-byte echo pair.
    assert_eq!(
        seen,
        [
            ("h1:eth0".to_string(), 42),
            ("h2:eth0".into(), 42),
            ("h2:eth0".into(), 42),
            ("h3:eth0".into(), 42),
            ("h1:eth0".into(), 42),
            ("h1:eth0".into(), 98),
            ("h2:eth0".into(), 98),
            ("h2:eth0".into(), 98),
            ("h1:eth0".into(), 98),
        ]
    );
    common::tshark_agrees(&mut lab.sim, "switch.pcapng");
    assert_eq!(lab.sim.status(lab.h[2]).report["arp"], json!([]));
}
