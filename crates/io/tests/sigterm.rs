//! `kill -TERM` of a real driver process: it answers its control socket,
//! runs its element's timers, then exits 0 promptly and removes its socket.
//! No libtest harness, so the child (this same binary) has a single thread
//! and the process-directed signal reaches the driver's signalfd.

mod common;

use common::{require_root, veth, Netns};
use d11_core::{Ctx, Element, Instant, Outbox, PortId};
use d11_io::{ControlServer, NetnsGuard, Port, PortAttach};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

const CHILD_NETNS: &str = "D11T_IO_CHILD_NETNS";
const CHILD_SOCKET: &str = "D11T_IO_CHILD_SOCKET";

/// Wakes up every 20 ms and counts it; ignores frames.
struct Ticker {
    ticks: u64,
    next: Instant,
}

impl Element for Ticker {
    fn on_frame(&mut self, _cx: &mut Ctx, _port: PortId, _frame: &[u8], _out: &mut Outbox) {}
    fn on_timer(&mut self, cx: &mut Ctx, _out: &mut Outbox) {
        self.ticks += 1;
        self.next = cx.now + Duration::from_millis(20);
    }
    fn poll_at(&self) -> Option<Instant> {
        Some(self.next)
    }
    fn report(&self) -> Value {
        json!({"ticks": self.ticks})
    }
}

fn main() {
    if let (Ok(ns), Ok(sock)) = (std::env::var(CHILD_NETNS), std::env::var(CHILD_SOCKET)) {
        std::process::exit(child(&ns, Path::new(&sock)));
    }
    require_root();
    println!("test sigterm_stops_a_driver_process_cleanly ...");
    sigterm_stops_a_driver_process_cleanly();
    println!("test sigterm_stops_a_driver_process_cleanly ... ok");
}

fn child(ns: &str, sock: &Path) -> i32 {
    let guard = NetnsGuard::enter(ns).unwrap();
    let port = Port::open(&PortAttach::Packet {
        ifname: "e0".into(),
    })
    .unwrap();
    let server = ControlServer::bind(sock, "ticker", "test").unwrap();
    let mut element = Ticker {
        ticks: 0,
        next: Instant::ZERO,
    };
    let r = d11_io::run(&mut element, vec![port], vec!["e0".into()], Some(server));
    guard.leave().unwrap();
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("driver: {e}");
            3
        }
    }
}

/// Kills the child (by its pid) if the test panics before it exits.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn sigterm_stops_a_driver_process_cleanly() {
    let e = Netns::new("ste");
    let peer = Netns::new("stp");
    veth(&peer, "p0", &e, "e0");
    let sock = std::env::temp_dir().join(format!("d11t-io-{}-st.sock", std::process::id()));
    let mut child = ChildGuard(
        Command::new(std::env::current_exe().unwrap())
            .env(CHILD_NETNS, &e.name)
            .env(CHILD_SOCKET, &sock)
            .spawn()
            .unwrap(),
    );
    let t0 = std::time::Instant::now();
    while d11_io::query(&sock, "ping", Duration::from_millis(200)).is_err() {
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "the driver process died"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the driver never answered ping"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    let st = d11_io::query(&sock, "status", Duration::from_secs(1)).unwrap();
    println!("status: {st}");
    assert_eq!(st["pid"], child.0.id());
    assert!(st["ports"]["e0"].is_object());
    assert!(
        st["report"]["ticks"].as_u64().unwrap() >= 5,
        "the timer runs"
    );

    // SAFETY: kill has no memory preconditions; the pid is our own child.
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) }, 0);
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "no exit 2 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    println!("exited {status} {:?} after SIGTERM", t0.elapsed());
    assert!(status.success(), "{status}");
    assert!(!sock.exists(), "control socket removed");
}
