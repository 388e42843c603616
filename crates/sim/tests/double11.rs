//! The whole double11 lab in memory, from the same topology file `d11 up`
//! builds (netns/double11.toml): the phone's packets cross enb, sgw and pgw
//! (GTP-U, NAT), the routers a2, c1, c2 and border, the cloud gateway (DNAT,
//! VXLAN) and the vSwitches of both hosts, on a virtual clock, once the
//! routers' BGP sessions have come up and their routes converged and the
//! phone's bearer is in place (`common::phone_bearer`). The
//! hosts' apps do not run here: the test plays the load balancer in vm-lb
//! (a TCP relay to vm-ctl) and the controller in vm-ctl (an echo).

mod common;

use d11_elements::pgw::PgwReport;
use d11_elements::vgw::VgwReport;
use d11_lab::Topology;
use d11_sim::{LinkParams, Message, SimLab};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 24);
const VM_CTL: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 20);

/// The lab with `loss` on the radio and on S5, the rest of the wires clean.
fn lab(seed: u64, loss: f64) -> SimLab {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../netns/double11.toml");
    let topo = Topology::load(std::path::Path::new(path)).expect("double11.toml loads");
    let mut lab = SimLab::new(&topo, seed, |w| LinkParams {
        delay: Duration::from_micros(100),
        loss: match w.name().as_str() {
            "ue:eth0--enb:radio" | "sgw:s5--pgw:s5" => loss,
            _ => 0.0,
        },
    })
    .expect("every node of double11.toml builds");
    lab.sim.capture_pcapng();
    // The routers learn their routes by BGP first, as `d11 up` waits for.
    common::converge(&mut lab, Duration::from_secs(60));
    // The phone's bearer, which its attach makes in the real lab.
    common::phone_bearer(&mut lab);
    lab
}

fn echo_replies(lab: &mut SimLab, host: &str) -> Vec<(Ipv4Addr, u8, u16)> {
    lab.host(host)
        .take_received()
        .into_iter()
        .filter_map(|r| match r.msg {
            Message::EchoReply { seq, .. } => Some((r.src, r.ttl, seq)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_phone_pings_through_the_mobile_core_the_nat_and_the_carriers() {
    let mut lab = lab(1, 0.0);
    // The cloud gateway's public address: six IP hops from the phone
    // (pgw, a2, c1, c2, border, vgw), each a TTL on the way back but the vgw's own.
    lab.host("ue").ping(Ipv4Addr::new(203, 0, 113, 2), 64, 7, 1);
    // The server behind c2.
    lab.host("ue").ping(Ipv4Addr::new(192, 0, 2, 130), 64, 7, 2);
    lab.sim.run_for(Duration::from_secs(2));
    let mut got = echo_replies(&mut lab, "ue");
    got.sort_by_key(|r| r.2);
    assert_eq!(
        got,
        [
            (Ipv4Addr::new(203, 0, 113, 2), 64 - 5, 1),
            (Ipv4Addr::new(192, 0, 2, 130), 64 - 4, 2)
        ]
    );
    // A VM to a VM on the other host: both vSwitches and the tor.
    lab.host("vm-lb").ping(VM_CTL, 64, 8, 1);
    lab.sim.run_for(Duration::from_secs(2));
    assert_eq!(echo_replies(&mut lab, "vm-lb"), [(VM_CTL, 64, 1)]);
    common::tshark_agrees(&mut lab.sim, "double11-ping.pcapng");
}

/// The phone sends `n` bytes to the VIP's port 443; vm-lb (DNAT's target)
/// relays them on a connection of its own to vm-ctl, which echoes; vm-lb
/// relays the echo back. Returns what the phone got.
fn order_sized_exchange(lab: &mut SimLab, n: usize) -> Vec<u8> {
    order_from_port(lab, n, 41000)
}

/// [`order_sized_exchange`] from the phone's `port` (a new connection
/// each time: the phone's and vm-lb's ports are `port` and `port + 1000`).
fn order_from_port(lab: &mut SimLab, n: usize, port: u16) -> Vec<u8> {
    let data: Vec<u8> = (0..n).map(|i| (i % 253) as u8).collect();
    let lb_in = lab.host("vm-lb").tcp_listen(443);
    let ctl = lab.host("vm-ctl").tcp_listen(443);
    let phone = lab
        .host("ue")
        .tcp_connect(port, SocketAddrV4::new(VIP, 443));
    let mut lb_out = None;
    let (mut sent, mut back) = (0, Vec::new());
    for _ in 0..200_000 {
        lab.sim.run_for(Duration::from_millis(2));
        let ue = lab.host("ue");
        if sent < data.len() {
            sent += ue.tcp_send(phone, &data[sent..]);
        }
        back.extend(ue.tcp_recv(phone));
        if back.len() >= data.len() {
            break;
        }
        // vm-lb: a new connection to vm-ctl once the phone's is there.
        let lb = lab.host("vm-lb");
        let from_phone = lb.tcp_recv(lb_in);
        let out = *lb_out
            .get_or_insert_with(|| lb.tcp_connect(port + 1000, SocketAddrV4::new(VM_CTL, 443)));
        if !from_phone.is_empty() {
            assert_eq!(
                lb.tcp_send(out, &from_phone),
                from_phone.len(),
                "buffers hold it"
            );
        }
        let from_ctl = lb.tcp_recv(out);
        if !from_ctl.is_empty() {
            assert_eq!(lb.tcp_send(lb_in, &from_ctl), from_ctl.len());
        }
        // vm-ctl echoes.
        let c = lab.host("vm-ctl");
        let got = c.tcp_recv(ctl);
        if !got.is_empty() {
            assert_eq!(c.tcp_send(ctl, &got), got.len());
        }
    }
    back
}

#[test]
fn tcp_crosses_the_whole_path_through_both_nats_and_both_vswitches() {
    let mut lab = lab(2, 0.0);
    let n = 30_000;
    let back = order_sized_exchange(&mut lab, n);
    assert_eq!(back.len(), n);
    assert!(back.iter().enumerate().all(|(i, b)| *b == (i % 253) as u8));
    // The path was the story's: the pgw translated, the vgw translated back.
    let pgw: PgwReport = lab.sim.status(lab.node("pgw")).report().unwrap();
    assert!(
        pgw.nat.iter().any(|e| e.src.starts_with("10.45.0.2:")),
        "{:?}",
        pgw.nat
    );
    let vgw: VgwReport = lab.sim.status(lab.node("vgw")).report().unwrap();
    assert!(
        vgw.nat.iter().any(|e| e.reply_src == "192.168.1.10:443"),
        "{:?}",
        vgw.nat
    );
    common::tshark_agrees(&mut lab.sim, "double11-tcp.pcapng");
}

#[test]
fn seeded_loss_on_the_radio_and_s5_retransmits_and_the_same_seed_replays_it() {
    let mut a = lab(3, 0.03);
    assert_eq!(order_sized_exchange(&mut a, 20_000).len(), 20_000);
    let lost: u64 = ["ue:eth0--enb:radio", "sgw:s5--pgw:s5"]
        .iter()
        .map(|w| a.sim.link_stats(a.link(w)).lost.iter().sum::<u64>())
        .sum();
    assert!(lost > 0, "frames were lost");
    let mut b = lab(3, 0.03);
    order_sized_exchange(&mut b, 20_000);
    assert_eq!(
        a.sim.pcapng(),
        b.sim.pcapng(),
        "the same seed, the same frames"
    );
}

/// The best route to `prefix` in `router`'s Loc-RIB: (learned from, AS_PATH).
fn best(lab: &SimLab, router: &str, prefix: &str) -> Option<(String, String)> {
    let r: d11_elements::router::RouterReport = lab.sim.status(lab.node(router)).report().unwrap();
    r.rib?
        .into_iter()
        .find(|r| r.best && r.prefix.to_string() == prefix)
        .map(|r| (r.from, r.as_path))
}

#[test]
fn chapter_2_the_shop_is_reached_by_bgp_and_over_c3_while_c2_is_down() {
    let mut lab = lab(4, 0.0);
    // The cloud's prefix reached the mobile carrier over AS 64510 (c1 wins
    // the tie with c3 on the lower BGP Identifier).
    assert_eq!(
        best(&lab, "a2", "203.0.113.0/24"),
        Some(("192.0.2.2".into(), "64510 64600".into()))
    );
    assert_eq!(
        best(&lab, "border", "198.51.100.128/25"),
        Some(("192.0.2.9".into(), "64510 64500".into()))
    );
    assert_eq!(order_sized_exchange(&mut lab, 5_000).len(), 5_000);
    // c2 goes dark: every wire of it loses everything.
    let dead = LinkParams {
        delay: Duration::from_micros(100),
        loss: 1.0,
    };
    let wires = [
        "c1:c1c2--c2:c2c1",
        "c2:c2bd--border:bdc2",
        "c2:srv--server:eth0",
    ];
    for w in wires {
        let l = lab.link(w);
        lab.sim.set_link_params(l, dead);
    }
    // Within the hold time (9 s) plus a second, both ends choose c3.
    lab.sim.run_for(Duration::from_secs(10));
    assert_eq!(
        best(&lab, "a2", "203.0.113.0/24"),
        Some(("192.0.2.14".into(), "64520 64600".into()))
    );
    assert_eq!(
        best(&lab, "border", "198.51.100.128/25"),
        Some(("192.0.2.17".into(), "64520 64500".into()))
    );
    // The phone's connection now crosses a2, c3 and the border.
    assert_eq!(order_from_port(&mut lab, 5_000, 41001).len(), 5_000);
    let c3 = lab.sim.status(lab.node("c3"));
    // (c3's port to region north's border and its peering with c2 carry
    // only BGP, its ports to the .com DNS server, its resolver and its CDN
    // edge nothing here.)
    assert!(
        (c3.ports.iter())
            .filter(|(n, _)| !["c3bn", "com", "c3c2", "dns", "cdn"].contains(&n.as_str()))
            .all(|(_, p)| p.counters.tx_bytes > 5_000),
        "{:?}",
        c3.ports
    );
    // c2 is back: the sessions return and c1/c2 are best again.
    for w in wires {
        let l = lab.link(w);
        lab.sim.set_link_params(
            l,
            LinkParams {
                delay: Duration::from_micros(100),
                loss: 0.0,
            },
        );
    }
    common::converge(&mut lab, Duration::from_secs(60));
    assert_eq!(
        best(&lab, "a2", "203.0.113.0/24"),
        Some(("192.0.2.2".into(), "64510 64600".into()))
    );
    assert_eq!(order_from_port(&mut lab, 5_000, 41002).len(), 5_000);
    common::tshark_agrees(&mut lab.sim, "double11-bgp-failover.pcapng");
}
