//! The driver forwarding real frames between namespaces, its control socket
//! and its stop on a (thread-directed) SIGTERM.

mod common;

use common::{require_root, veth, DriverThread, Netns};
use d11_core::{Ctx, Element, Instant, Outbox, PortId};
use d11_io::PortAttach;
use serde_json::{json, Value};
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// Every frame from one port goes out of the other, untouched.
struct PassAcross;

impl Element for PassAcross {
    fn on_frame(&mut self, _cx: &mut Ctx, port: PortId, frame: &[u8], out: &mut Outbox) {
        out.transmit(PortId(1 - port.0), frame);
    }
    fn on_timer(&mut self, _cx: &mut Ctx, _out: &mut Outbox) {}
    fn poll_at(&self) -> Option<Instant> {
        None
    }
    fn report(&self) -> Value {
        json!({"element": "pass-across"})
    }
}

fn packet(ifname: &str) -> (String, PortAttach) {
    (
        ifname.to_string(),
        PortAttach::Packet {
            ifname: ifname.to_string(),
        },
    )
}

/// a (192.0.2.1) ─ a0══e0 [element e] e1══b0 ─ b (192.0.2.2)
fn wire(tag: &str) -> (Netns, Netns, Netns) {
    let a = Netns::new(&format!("{tag}a"));
    let e = Netns::new(&format!("{tag}e"));
    let b = Netns::new(&format!("{tag}b"));
    veth(&a, "a0", &e, "e0");
    veth(&e, "e1", &b, "b0");
    a.sh(&["ip", "addr", "add", "192.0.2.1/24", "dev", "a0"]);
    b.sh(&["ip", "addr", "add", "192.0.2.2/24", "dev", "b0"]);
    (a, e, b)
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn driver_forwards_frames_between_namespaces_and_reports_counters() {
    require_root();
    let (a, e, _b) = wire("fw");
    let d = DriverThread::spawn(&e, "fw", PassAcross, vec![packet("e0"), packet("e1")]);
    let ping = a.sh(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "192.0.2.2"]);
    println!("{}", ping.lines().rev().nth(1).unwrap_or_default());
    assert!(ping.contains("3 received"), "{ping}");

    let st = d.status();
    println!("status: {st}");
    assert_eq!(st["node"], "fw");
    assert_eq!(st["role"], "test");
    assert_eq!(st["pid"], std::process::id());
    assert_eq!(st["report"]["element"], "pass-across");
    for (rx, tx) in [("e0", "e1"), ("e1", "e0")] {
        let n = st["ports"][rx]["rx_frames"].as_u64().unwrap();
        assert!(n >= 4, "{rx}: ARP and 3 echoes at least, got {n}");
        assert_eq!(
            st["ports"][tx]["tx_frames"], n,
            "every frame from {rx} went out of {tx}"
        );
        assert_eq!(st["ports"][tx]["tx_errors"], 0);
    }

    let control = d.control.clone();
    let (_, r) = d.stop();
    r.unwrap();
    assert!(!control.exists(), "control socket removed on SIGTERM");
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn a_silent_control_client_is_dropped_without_stalling_the_datapath() {
    require_root();
    let (a, e, _b) = wire("sc");
    let d = DriverThread::spawn(&e, "sc", PassAcross, vec![packet("e0"), packet("e1")]);
    let mut silent = UnixStream::connect(&d.control).unwrap();
    let t0 = std::time::Instant::now();
    // While the silent client holds its connection, frames and other clients go through.
    let ping = a.sh(&["ping", "-c", "2", "-i", "0.2", "-W", "1", "192.0.2.2"]);
    assert!(ping.contains("2 received"), "{ping}");
    assert_eq!(
        d11_io::query(&d.control, "ping", Duration::from_secs(1)).unwrap(),
        json!({"ok": true})
    );
    let unknown = d11_io::query(&d.control, "reboot", Duration::from_secs(1)).unwrap();
    assert!(
        unknown["error"]
            .as_str()
            .unwrap()
            .contains("unknown command"),
        "{unknown}"
    );

    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        silent.read(&mut buf).unwrap(),
        0,
        "closed without an answer"
    );
    let waited = t0.elapsed();
    println!("silent client dropped after {waited:?}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    d.stop().1.unwrap();
}

#[test]
fn ports_and_names_must_match() {
    let e = d11_io::run(&mut PassAcross, vec![], vec!["e0".into()], None).unwrap_err();
    assert_eq!(e.to_string(), "driver: 0 ports but 1 port names");
}
