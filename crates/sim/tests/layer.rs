//! The shared IP layer's local delivery in the simulator, through a role
//! that exists only in this test (`roles/echo.rs`, registered below with one
//! line): UDP and TCP echo across a router, a TCP exchange under seeded
//! loss that retransmits and replays, every frame checked by tshark.

mod common;
#[path = "roles/echo.rs"]
mod echo;

use d11_lab::Topology;
use d11_sim::{LinkParams, Message, SimLab};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

/// client — r1 (a router) — echo (the test role).
const TOPO: &str = r#"
description = "a client, a router and the echo role"

[[nodes]]
name = "client"
kind = "host"
ports = [ { name = "eth0", address = "192.0.2.2/24" } ]
routes = [ { to = "0.0.0.0/0", via = "192.0.2.1" } ]

[[nodes]]
name = "r1"
kind = "element"
role = "router"
ports = [
  { name = "left", address = "192.0.2.1/24" },
  { name = "right", address = "198.51.100.1/24" },
]

[[nodes]]
name = "echo"
kind = "element"
role = "echo"
ports = [ { name = "svc", address = "198.51.100.7/24" } ]
routes = [ { to = "0.0.0.0/0", via = "198.51.100.1" } ]

[[wires]]
a = "client:eth0"
b = "r1:left"

[[wires]]
a = "r1:right"
b = "echo:svc"
"#;

const ECHO: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

fn lab(seed: u64, loss: f64) -> SimLab {
    // The one registration line of the test role.
    let roles = d11_elements::registry().with::<echo::Echo>();
    let topo = Topology::parse_with(TOPO, "echo.toml", roles).expect("the topology loads");
    let mut lab = SimLab::new(&topo, seed, |_| LinkParams {
        delay: Duration::from_micros(200),
        loss,
    })
    .expect("every node builds");
    lab.sim.capture_pcapng();
    lab
}

#[test]
fn an_unknown_role_is_one_line_naming_the_key_without_the_registration() {
    let e = Topology::parse(TOPO, "echo.toml").unwrap_err().to_string();
    assert_eq!(e.lines().count(), 1);
    assert!(e.contains("nodes[2] (\"echo\").role"), "{e}");
    assert!(e.contains("unknown role \"echo\""), "{e}");
}

#[test]
fn udp_is_echoed_by_the_test_role_across_the_router() {
    let mut lab = lab(1, 0.0);
    lab.host("client")
        .udp(ECHO, 40001, echo::PORT, b"hello", 64);
    lab.sim.run_for(Duration::from_secs(1));
    let got = lab.host("client").take_received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].src, ECHO);
    assert_eq!(got[0].ttl, 63, "one router on the way back");
    assert_eq!(
        got[0].msg,
        Message::Udp {
            sport: echo::PORT,
            dport: 40001,
            payload: b"hello".to_vec()
        }
    );
    // Another port: the layer answers port unreachable.
    lab.host("client").udp(ECHO, 40001, 9, b"x", 64);
    lab.sim.run_for(Duration::from_secs(1));
    let got = lab.host("client").take_received();
    assert!(
        matches!(got[..], [ref r] if matches!(r.msg, Message::DestUnreachable { code: 3, .. })),
        "{got:?}"
    );
    common::tshark_agrees(&mut lab.sim, "layer-udp.pcapng");
}

/// Connects, sends `n` bytes, reads them back, closes; returns what came
/// back and the frames the wires lost.
fn tcp_echo(lab: &mut SimLab, n: usize) -> (Vec<u8>, u64) {
    let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
    let to = SocketAddrV4::new(ECHO, echo::PORT);
    let h = lab.host("client").tcp_connect(40000, to);
    let (mut sent, mut back, mut closed) = (0, Vec::new(), false);
    for _ in 0..100_000 {
        lab.sim.run_for(Duration::from_millis(5));
        let c = lab.host("client");
        if sent < data.len() {
            sent += c.tcp_send(h, &data[sent..]);
        }
        back.extend(c.tcp_recv(h));
        if back.len() == data.len() && !closed {
            c.tcp_close(h);
            closed = true;
        }
        if closed
            && matches!(
                c.tcp_state(h),
                d11_core::l3::TcpState::TimeWait | d11_core::l3::TcpState::Closed
            )
        {
            break;
        }
    }
    let lost = ["client:eth0--r1:left", "r1:right--echo:svc"]
        .iter()
        .map(|w| lab.sim.link_stats(lab.link(w)).lost.iter().sum::<u64>())
        .sum();
    assert_eq!(back, data, "the echo came back whole and in order");
    (back, lost)
}

#[test]
fn tcp_through_the_layer_handshakes_carries_data_both_ways_and_closes() {
    let mut lab = lab(2, 0.0);
    let (_, lost) = tcp_echo(&mut lab, 200_000);
    assert_eq!(lost, 0);
    let id = lab.node("echo");
    assert_eq!(lab.sim.node::<echo::Echo>(id).echoed, 200_000);
    common::tshark_agrees(&mut lab.sim, "layer-tcp.pcapng");
}

#[test]
fn tcp_under_seeded_loss_retransmits_and_the_same_seed_replays_every_frame() {
    let mut a = lab(3, 0.05);
    let (_, lost) = tcp_echo(&mut a, 100_000);
    assert!(lost > 0, "the wires lost frames");
    let mut b = lab(3, 0.05);
    tcp_echo(&mut b, 100_000);
    assert_eq!(
        a.sim.pcapng(),
        b.sim.pcapng(),
        "the same seed, the same frames"
    );
    let mut c = lab(4, 0.05);
    tcp_echo(&mut c, 100_000);
    assert_ne!(a.sim.pcapng(), c.sim.pcapng(), "another seed loses others");
    common::tshark_agrees(&mut a.sim, "layer-tcp-loss.pcapng");
}
