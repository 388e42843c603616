//! The root end-to-end tests' guard, shared by every crate that has them
//! (included by path). They are compiled as ignored unless the build was
//! made by root (`cfg(d11_root)`, see root_cfg.rs); a build made by root
//! and run by someone else fails here, saying so, rather than passing.

/// Panics unless the test runs as root.
pub fn require_root() {
    let euid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let uids = s.lines().find_map(|l| l.strip_prefix("Uid:"))?.to_string();
            uids.split_whitespace().nth(1).map(str::to_string)
        });
    assert_eq!(
        euid.as_deref(),
        Some("0"),
        "this test builds network namespaces and needs root; the build was made \
         by root (cfg d11_root), so rebuild as this user to have it reported ignored"
    );
}
