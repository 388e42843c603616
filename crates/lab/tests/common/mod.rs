//! Shared by the root tests of the lab crate: root detection, a lab that is
//! always torn down, and `ip -j` queries.

#![allow(dead_code)] // each test binary uses a different part

use std::path::PathBuf;
use std::process::Command;

#[path = "../../../../tests/support/root.rs"]
mod root;
pub use root::require_root;

pub fn netns_file(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

pub fn topology_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../netns")
        .join(name)
}

/// A unique lab name for this test process.
pub fn lab_name(tag: &str) -> String {
    format!("t-{tag}-{}", std::process::id())
}

/// Tears the lab down when dropped, even if the test panicked.
pub struct LabGuard(pub String);

impl Drop for LabGuard {
    fn drop(&mut self) {
        if let Err(e) = d11_lab::teardown(&self.0) {
            eprintln!("cleaning up lab {}: {e}", self.0);
        }
    }
}

/// Deletes a namespace the test made itself when dropped.
pub struct NetnsGuard(pub String);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Namespaces whose name starts with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str().map(String::from))
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// `ip -n NS -j ARGS…` as JSON.
pub fn ip_json(ns: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new("ip")
        .args(["-n", ns, "-j"])
        .args(args)
        .output()
        .expect("ip runs");
    assert!(
        out.status.success(),
        "ip -n {ns} -j {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ip prints JSON")
}

/// A sysctl as seen inside namespace `ns`.
pub fn sysctl(ns: &str, key: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat"])
        .arg(format!("/proc/sys/{}", key.replace('.', "/")))
        .output()
        .expect("ip netns exec runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
