//! Shared by the root integration tests: namespaces that always go away, a
//! driver running in its own thread and namespace, shell helpers.
#![allow(dead_code)] // each test binary uses a part

use d11_io::{ControlServer, IoError, Port, PortAttach};
use std::os::unix::thread::JoinHandleExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[path = "../../../../tests/support/root.rs"]
mod root;
pub use root::require_root;

/// Runs a command; panics with its stderr if it fails; returns stdout.
pub fn sh(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// A namespace `d11t-io-<pid>-<tag>`, deleted on drop (also on panic).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("d11t-io-{}-{tag}", std::process::id());
        let _ = run(&["ip", "netns", "del", &name]);
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.sh(&["ip", "link", "set", "lo", "up"]);
        ns.sh(&[
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ]);
        ns
    }

    /// Runs a command inside this namespace; panics if it fails.
    pub fn sh(&self, args: &[&str]) -> String {
        let mut a = vec!["ip", "netns", "exec", &self.name];
        a.extend_from_slice(args);
        sh(&a)
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let mut a = vec!["ip", "netns", "exec", &self.name];
        a.extend_from_slice(args);
        run(&a)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.name]);
    }
}

/// A veth pair `a_if` (in `a`) — `b_if` (in `b`), both up.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    sh(&[
        "ip", "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
        &b.name,
    ]);
    a.sh(&["ip", "link", "set", a_if, "up"]);
    b.sh(&["ip", "link", "set", b_if, "up"]);
}

/// The MAC address of `ifname` in `ns`.
pub fn mac_of(ns: &Netns, ifname: &str) -> String {
    ns.sh(&["cat", &format!("/sys/class/net/{ifname}/address")])
        .trim()
        .to_string()
}

/// A driver running `element` in its own thread, inside namespace `netns`,
/// with a control socket; stopped with a thread-directed SIGTERM.
pub struct DriverThread<E> {
    pub control: PathBuf,
    handle: Option<JoinHandle<(E, Result<(), IoError>)>>,
}

impl<E: d11_core::Element + Send + 'static> DriverThread<E> {
    pub fn spawn(
        netns: &Netns,
        tag: &str,
        mut element: E,
        attach: Vec<(String, PortAttach)>,
    ) -> DriverThread<E> {
        let control =
            std::env::temp_dir().join(format!("d11t-io-{}-{tag}.sock", std::process::id()));
        let name = netns.name.clone();
        let path = control.clone();
        let node = tag.to_string();
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            let guard = d11_io::NetnsGuard::enter(&name).unwrap();
            let (names, attach): (Vec<String>, Vec<PortAttach>) = attach.into_iter().unzip();
            let ports = attach.iter().map(Port::open).collect::<Result<Vec<_>, _>>();
            let ports = match ports {
                Ok(p) => p,
                Err(e) => {
                    tx.send(Err(e.to_string())).unwrap();
                    return (element, Err(e));
                }
            };
            let server = ControlServer::bind(&path, &node, "test").unwrap();
            tx.send(Ok(())).unwrap();
            let r = d11_io::run(&mut element, ports, names, Some(server));
            drop(guard);
            (element, r)
        });
        rx.recv()
            .unwrap()
            .unwrap_or_else(|e| panic!("driver did not start: {e}"));
        let d = DriverThread {
            control,
            handle: Some(handle),
        };
        d.wait_ready();
        d
    }

    /// Waits until the control socket answers `ping` (signals are blocked by then).
    pub fn wait_ready(&self) {
        let t0 = Instant::now();
        while d11_io::query(&self.control, "ping", Duration::from_millis(200)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "driver never answered ping"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn status(&self) -> serde_json::Value {
        d11_io::query(&self.control, "status", Duration::from_secs(2)).unwrap()
    }

    /// Sends SIGTERM to the driver thread and returns the element and what `run` returned.
    pub fn stop(mut self) -> (E, Result<(), IoError>) {
        let h = self.handle.take().unwrap();
        assert_eq!(sigterm(&h), 0, "pthread_kill");
        h.join().unwrap()
    }
}

fn sigterm<T>(h: &JoinHandle<T>) -> i32 {
    // SAFETY: the thread is not joined yet, so its pthread_t is valid, and it
    // blocks SIGTERM (it answered ping), so the signal waits for its
    // signalfd instead of killing the process.
    unsafe { libc::pthread_kill(h.as_pthread_t(), libc::SIGTERM) }
}

impl<E> Drop for DriverThread<E> {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            if sigterm(&h) == 0 {
                let _ = h.join();
            }
        }
    }
}
