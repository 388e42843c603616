//! Build script of the crates with root end-to-end tests (d11-cli, d11-lab,
//! d11-io): a build made by root gets `cfg(d11_root)`, and the tests that
//! need network namespaces run in it; in any other build they are marked
//! `#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]`,
//! so `cargo test` reports them ignored, never passed. (`cargo test --
//! --include-ignored` still runs them.)

fn main() {
    println!("cargo::rustc-check-cfg=cfg(d11_root)");
    // Re-decide when the user changes (sudo, su); the cfg is cached otherwise.
    println!("cargo::rerun-if-env-changed=USER");
    println!("cargo::rerun-if-env-changed=SUDO_USER");
    println!("cargo::rerun-if-changed=../../tests/support/root_cfg.rs");
    if effective_uid() == Some(0) {
        println!("cargo::rustc-cfg=d11_root");
    }
}

/// The effective uid, from the second field of `Uid:` in /proc/self/status.
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    uids.split_whitespace().nth(1)?.parse().ok()
}
