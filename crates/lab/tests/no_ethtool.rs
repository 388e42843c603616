//! A build that fails halfway (after the namespaces and wires exist) leaves
//! nothing behind. The failure is real: `ethtool` is not on PATH, as on a
//! machine without the package. Alone in its binary, because PATH is
//! process-wide.

mod common;

use common::*;
use d11_lab::{build, BuildError, RunDir, Topology};

/// Two kernel hosts on a veth: the builder needs ethtool for both ends.
const HOSTS: &str = r#"
[[nodes]]
name = "one"
kind = "host"
ports = [ { name = "eth0", address = "10.9.0.1/24" } ]

[[nodes]]
name = "two"
kind = "host"
ports = [ { name = "eth0", address = "10.9.0.2/24" } ]

[[wires]]
a = "one:eth0"
b = "two:eth0"
"#;

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn a_build_failing_midway_removes_all_it_made() {
    require_root();
    let lab = lab_name("midway");
    let _guard = LabGuard(lab.clone());
    // A PATH with `ip` and nothing else.
    let bin = std::env::temp_dir().join(format!("d11-no-ethtool-{}", std::process::id()));
    std::fs::create_dir_all(&bin).unwrap();
    let ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("iproute2's ip");
    let _ = std::os::unix::fs::symlink(ip, bin.join("ip"));
    std::env::set_var("PATH", &bin);

    let topo = Topology::parse(HOSTS, "hosts.toml").unwrap();
    let err = build(&lab, &topo).unwrap_err();
    let _ = std::fs::remove_dir_all(&bin);
    let BuildError::Step { step, detail, .. } = &err else {
        panic!("not a failed step: {err}");
    };
    assert!(step.contains("ethtool"), "{err}");
    assert!(detail.contains("not installed"), "{err}");
    assert!(!err.to_string().contains('\n'), "{err}");
    let left = namespaces_with_prefix(&format!("{lab}-"));
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert!(
        !RunDir::new(&lab).path().exists(),
        "run directory left behind"
    );
}
