//! A host's TAP held from another namespace: frames both ways, the host's
//! configuration surviving an element restart, transmit errors while the
//! host side is down, and attach errors.

mod common;

use common::{require_root, DriverThread, Netns};
use d11_core::{Ctx, Element, Instant, Outbox, PortId};
use d11_io::{Port, PortAttach};
use d11_wire::arp::{ArpOp, ArpRepr};
use d11_wire::ethernet::{emit_header, EtherType, EthernetFrame};
use d11_wire::icmp::{as_echo_request, emit_echo_reply};
use d11_wire::ipv4::Ipv4Packet;
use d11_wire::MacAddr;
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::time::Duration;

const MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);
const GW: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const FAR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

/// Answers ARP for `GW` and pings to `GW` and `FAR`; announces itself with
/// a gratuitous ARP every 100 ms (its timer).
struct Responder {
    next: Instant,
    replies: u64,
}

impl Element for Responder {
    fn on_frame(&mut self, _cx: &mut Ctx, port: PortId, frame: &[u8], out: &mut Outbox) {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return;
        };
        match eth.ethertype() {
            EtherType::Arp => {
                if let Ok(arp) = ArpRepr::parse(eth.payload()) {
                    if arp.op == ArpOp::Request && arp.target_ip == GW {
                        out.build(port, |b| arp.reply_from(MAC).emit_frame(b));
                    }
                }
            }
            EtherType::Ipv4 => {
                let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
                    return;
                };
                if let (true, Some(req)) = ([GW, FAR].contains(&ip.dst()), as_echo_request(&ip)) {
                    self.replies += 1;
                    out.build(port, |b| {
                        emit_header(b, eth.src(), MAC, EtherType::Ipv4);
                        emit_echo_reply(b, ip.dst(), ip.src(), self.replies as u16, req);
                    });
                }
            }
            _ => {}
        }
    }
    fn on_timer(&mut self, cx: &mut Ctx, out: &mut Outbox) {
        out.build(PortId(0), |b| ArpRepr::request(MAC, GW, GW).emit_frame(b));
        self.next = cx.now + Duration::from_millis(100);
    }
    fn poll_at(&self) -> Option<Instant> {
        Some(self.next)
    }
    fn report(&self) -> Value {
        json!({"replies": self.replies})
    }
}

fn responder() -> Responder {
    Responder {
        next: Instant::ZERO,
        replies: 0,
    }
}

/// Host namespace `h` with a persistent TAP `eth0`, 192.0.2.1/24 and a
/// route to 198.51.100.0/24 via the element.
fn host(tag: &str) -> Netns {
    let h = Netns::new(tag);
    h.sh(&["ip", "tuntap", "add", "dev", "eth0", "mode", "tap"]);
    h.sh(&["ip", "addr", "add", "192.0.2.1/24", "dev", "eth0"]);
    h.sh(&["ip", "link", "set", "eth0", "up"]);
    h.sh(&["ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.2"]);
    h
}

fn ping(h: &Netns, dst: &str) -> String {
    let out = h.sh(&["ping", "-c", "2", "-i", "0.2", "-W", "2", dst]);
    let summary = out.lines().rev().nth(1).unwrap_or_default().to_string();
    assert!(summary.contains("2 received"), "{out}");
    summary
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn a_tap_in_another_namespace_carries_frames_both_ways_and_survives_a_restart() {
    require_root();
    let h = host("taph");
    let e = Netns::new("tape");
    let attach = || {
        vec![(
            "eth0".to_string(),
            PortAttach::Tap {
                netns: h.name.clone(),
                ifname: "eth0".into(),
            },
        )]
    };
    let ifindex = || h.sh(&["cat", "/sys/class/net/eth0/ifindex"]);
    let before = ifindex();

    let d = DriverThread::spawn(&e, "tap1", responder(), attach());
    println!(
        "first run: {} / {}",
        ping(&h, "192.0.2.2"),
        ping(&h, "198.51.100.1")
    );
    let st = d.status();
    assert!(st["ports"]["eth0"]["rx_frames"].as_u64().unwrap() >= 5);
    assert!(st["report"]["replies"].as_u64().unwrap() >= 4);
    let (_, r) = d.stop();
    r.unwrap();

    // Element gone (its fd closed, as a crash closes it): the host keeps its
    // interface, address and route; only the carrier is down.
    let link = h.sh(&["ip", "link", "show", "eth0"]);
    println!(
        "while no one holds it: {}",
        link.lines().next().unwrap_or_default()
    );
    assert!(link.contains("NO-CARRIER"), "{link}");
    assert!(h
        .sh(&["ip", "-4", "addr", "show", "dev", "eth0"])
        .contains("192.0.2.1/24"));
    let route = h.sh(&["ip", "route", "show", "198.51.100.0/24"]);
    assert!(route.contains("via 192.0.2.2 dev eth0"), "{route}");

    let d = DriverThread::spawn(&e, "tap2", responder(), attach());
    println!(
        "after restart: {} / {}",
        ping(&h, "192.0.2.2"),
        ping(&h, "198.51.100.1")
    );
    assert_eq!(ifindex(), before, "the same interface");

    // Host side down: the element's timer still sends, every write fails
    // (EIO), each is counted and the driver carries on.
    h.sh(&["ip", "link", "set", "eth0", "down"]);
    std::thread::sleep(Duration::from_millis(350));
    let errors = d.status()["ports"]["eth0"]["tx_errors"].as_u64().unwrap();
    println!("tx_errors while the host side was down: {errors}");
    assert!(errors >= 2, "{errors}");
    h.sh(&["ip", "link", "set", "eth0", "up"]);
    ping(&h, "192.0.2.2");
    d.stop().1.unwrap();
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn tap_attach_errors_name_the_device_and_create_nothing() {
    require_root();
    let h = host("tapx");
    h.sh(&[
        "ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
    ]);
    let open = |ifname: &str| {
        Port::open(&PortAttach::Tap {
            netns: h.name.clone(),
            ifname: ifname.into(),
        })
    };

    let missing = open("nosuch0").err().unwrap().to_string();
    println!("{missing}");
    assert!(
        missing.contains("nosuch0") && missing.contains(&h.name),
        "{missing}"
    );
    assert!(
        !h.run(&["ip", "link", "show", "nosuch0"]).status.success(),
        "TUNSETIFF must not have created it"
    );

    let not_tap = open("veth0").err().unwrap().to_string();
    println!("{not_tap}");
    assert!(
        not_tap.contains("TAP veth0") && not_tap.contains("Invalid argument"),
        "{not_tap}"
    );

    let held = open("eth0").unwrap();
    let busy = open("eth0").err().unwrap().to_string();
    println!("{busy}");
    assert!(busy.contains("busy"), "{busy}");
    drop(held);
    // Free again once the last reference to the file is gone; a process
    // the other test forks in that instant holds a copy of our descriptors
    // until it execs (O_CLOEXEC), so under load allow it a moment.
    let reopened = (0..100).find_map(|_| match open("eth0") {
        Err(e) if e.to_string().contains("busy") => {
            std::thread::sleep(Duration::from_millis(20));
            None
        }
        other => Some(other),
    });
    reopened.expect("still busy after 2 s").unwrap();

    let wrong_ns = Port::open(&PortAttach::Tap {
        netns: format!("{}-none", h.name),
        ifname: "eth0".into(),
    })
    .err()
    .unwrap()
    .to_string();
    println!("{wrong_ns}");
    assert!(wrong_ns.contains("-none"), "{wrong_ns}");
}
