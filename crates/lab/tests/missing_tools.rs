//! A build that fails halfway (after the namespaces and wires exist) leaves
//! nothing behind, and says which tool to install. The failures are real:
//! the tool is not on PATH, as on a machine without its package. Alone in
//! its binary, because PATH is process-wide.

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

/// Two switches on a veth: the builder needs nft for the ports they own
/// (and no ethtool: no kernel-side veth end).
const ELEMENTS: &str = r#"
[[nodes]]
name = "one"
kind = "element"
role = "switch"
ports = [ { name = "p1" } ]

[[nodes]]
name = "two"
kind = "element"
role = "switch"
ports = [ { name = "p2" } ]

[[wires]]
a = "one:p1"
b = "two:p2"
"#;

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn a_build_missing_a_tool_midway_names_its_package_and_removes_all_it_made() {
    require_root();
    let bin = std::env::temp_dir().join(format!("d11-no-tools-{}", std::process::id()));
    std::fs::create_dir_all(&bin).unwrap();
    let old_path = std::env::var_os("PATH");
    // A PATH with `ip` and nothing else, then with `ethtool` as well.
    for (tool, topology, package, with) in [
        ("ethtool", HOSTS, "ethtool", &[][..]),
        ("nft", ELEMENTS, "nftables", &["ethtool"][..]),
    ] {
        let lab = lab_name(&format!("no-{tool}"));
        let _guard = LabGuard(lab.clone());
        for t in std::iter::once("ip").chain(with.iter().copied()) {
            let found = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
                .into_iter()
                .map(|d| std::path::Path::new(d).join(t))
                .find(|p| p.exists())
                .unwrap_or_else(|| panic!("{t} is installed"));
            let _ = std::os::unix::fs::symlink(found, bin.join(t));
        }
        std::env::set_var("PATH", &bin);
        let topo = Topology::parse(topology, "t.toml").unwrap();
        let err = build(&lab, &topo).unwrap_err();
        if let Some(p) = &old_path {
            std::env::set_var("PATH", p);
        }
        let BuildError::Step { step, detail, .. } = &err else {
            panic!("not a failed step: {err}");
        };
        assert!(step.contains(tool), "{err}");
        assert!(detail.contains("not installed"), "{err}");
        assert!(
            detail.contains(&format!("apt-get install {package}")),
            "{err}"
        );
        assert!(!err.to_string().contains('\n'), "{err}");
        let left = namespaces_with_prefix(&format!("{lab}-"));
        assert!(left.is_empty(), "namespaces left behind: {left:?}");
        assert!(
            !RunDir::new(&lab).path().exists(),
            "run directory left behind"
        );
    }
    let _ = std::fs::remove_dir_all(&bin);
}
