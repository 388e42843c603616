//! Root tests of the builder and the teardown: real namespaces, veth and TAP
//! devices, checked with `ip -j`. Each test uses its own lab name and tears
//! it down even when it fails. Without root they print "skipped".

mod common;

use common::*;
use d11_lab::{
    build, netns_name, teardown, BuildError, NodeKind, RunDir, Topology, WireEnd, WireKind,
};
use serde_json::Value;
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

/// One build at a time: the timings printed are then the builder's own.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn interface<'a>(links: &'a Value, name: &str) -> Option<&'a Value> {
    links.as_array()?.iter().find(|l| l["ifname"] == name)
}

fn has_flag(link: &Value, flag: &str) -> bool {
    link["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == flag))
}

fn inet(link: &Value, family: &str) -> Vec<String> {
    link["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["family"] == family)
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
        .collect()
}

/// Checks every namespace, interface, MAC, MTU, address and route of `topo`.
fn check_lab(lab: &str, topo: &Topology) {
    for node in &topo.nodes {
        let ns = netns_name(lab, &node.name);
        assert!(netns_file(&ns).exists(), "namespace {ns} is missing");
        let links = ip_json(&ns, &["addr", "show"]);
        let lo = interface(&links, "lo").expect("lo");
        assert!(has_flag(lo, "UP"), "{ns}: lo is down");
        assert_eq!(
            sysctl(&ns, "net.ipv6.conf.all.disable_ipv6"),
            "1",
            "{ns}: IPv6 is on"
        );
        assert_eq!(
            sysctl(&ns, "net.ipv6.conf.default.disable_ipv6"),
            "1",
            "{ns}: IPv6 is on"
        );
        let forward = if node.ip_forward() { "1" } else { "0" };
        assert_eq!(
            sysctl(&ns, "net.ipv4.ip_forward"),
            forward,
            "{ns}: ip_forward"
        );
        for l in links.as_array().unwrap() {
            assert!(
                inet(l, "inet6").is_empty(),
                "{ns}: {} has IPv6 addresses",
                l["ifname"]
            );
        }
        for p in &node.ports {
            let end = WireEnd {
                node: node.name.clone(),
                port: p.name.clone(),
            };
            let wire = topo
                .wires
                .iter()
                .find(|w| w.a == end || w.b == end)
                .unwrap();
            let kind = topo.wire_kind(wire);
            let link = interface(&links, &p.name);
            if node.kind == NodeKind::Element && kind == WireKind::Tap {
                assert!(
                    link.is_none(),
                    "{ns}: {end} is a TAP wire; the element has no interface for it"
                );
                continue;
            }
            let link = link.unwrap_or_else(|| panic!("{ns}: interface {} is missing", p.name));
            assert_eq!(
                link["address"],
                p.mac(&node.name).to_string(),
                "{ns}: MAC of {}",
                p.name
            );
            assert_eq!(link["mtu"], p.mtu, "{ns}: MTU of {}", p.name);
            assert!(has_flag(link, "UP"), "{ns}: {} is down", p.name);
            // An element owns its ports: the kernel holds no address there.
            let want: Vec<String> = match node.kind {
                NodeKind::Host => p.address.iter().map(|a| a.to_string()).collect(),
                NodeKind::Element => Vec::new(),
            };
            assert_eq!(inet(link, "inet"), want, "{ns}: IPv4 of {}", p.name);
            match (node.kind, kind) {
                (NodeKind::Element, _) => {
                    assert!(
                        has_flag(link, "NOARP"),
                        "{ns}: element port {} answers ARP",
                        p.name
                    );
                    assert!(
                        has_flag(link, "LOWER_UP"),
                        "{ns}: {}'s peer is not up",
                        p.name
                    );
                    assert_eq!(link["link_type"], "ether");
                }
                (NodeKind::Host, WireKind::Tap) => {
                    let details = ip_json(&ns, &["-d", "link", "show", "dev", &p.name]);
                    assert_eq!(
                        details[0]["linkinfo"]["info_kind"], "tun",
                        "{ns}: {} is no TAP",
                        p.name
                    );
                }
                (NodeKind::Host, WireKind::Veth) => {
                    assert!(
                        has_flag(link, "LOWER_UP"),
                        "{ns}: {}'s peer is not up",
                        p.name
                    );
                    let details = ip_json(&ns, &["-d", "link", "show", "dev", &p.name]);
                    assert_eq!(
                        details[0]["linkinfo"]["info_kind"], "veth",
                        "{ns}: {} is no veth",
                        p.name
                    );
                }
            }
        }
        // An element's kernel takes no frame from the veth ends it owns.
        let mut owned: Vec<&str> = node
            .ports
            .iter()
            .filter(|p| node.kind == NodeKind::Element && interface(&links, &p.name).is_some())
            .map(|p| p.name.as_str())
            .collect();
        owned.sort();
        assert_eq!(ingress_drop(&ns), owned, "{ns}: ports dropped at ingress");
        let routes = ip_json(&ns, &["route", "show"]);
        let routes = routes.as_array().unwrap();
        if node.kind == NodeKind::Element {
            assert!(
                routes.is_empty(),
                "{ns}: an element's kernel has routes: {routes:?}"
            );
        }
        for r in node
            .kind
            .eq(&NodeKind::Host)
            .then_some(&node.routes)
            .into_iter()
            .flatten()
        {
            let dst = if r.to.prefix_len() == 0 {
                "default".to_string()
            } else {
                r.to.to_string()
            };
            assert!(
                routes
                    .iter()
                    .any(|x| x["dst"] == dst.as_str() && x["gateway"] == r.via.to_string()),
                "{ns}: route {dst} via {} is missing from {routes:?}",
                r.via
            );
        }
    }
}

/// The devices of the `netdev d11` ingress chain of namespace `ns`,
/// sorted, if its policy is drop (nft 1.0.6's JSON leaves the devices out:
/// the text is read).
fn ingress_drop(ns: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "list", "ruleset"])
        .output()
        .expect("nft runs");
    assert!(out.status.success(), "{ns}: nft list ruleset");
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(hook) = text.lines().find(|l| l.contains("hook ingress")) else {
        return Vec::new();
    };
    assert!(hook.contains("policy drop;"), "{ns}: {hook}");
    // `device "a2c1" priority` or `devices = { c1a2, c1c2 } priority`
    let devices = hook
        .split_once("device")
        .and_then(|(_, rest)| {
            rest.strip_prefix('s')
                .unwrap_or(rest)
                .split_once("priority")
        })
        .map_or("", |(d, _)| d);
    let mut names: Vec<String> = devices
        .split(|c: char| c.is_whitespace() || "={},\"".contains(c))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

fn nothing_left(lab: &str) {
    let left = namespaces_with_prefix(&format!("{lab}-"));
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert!(
        !RunDir::new(lab).path().exists(),
        "run directory left behind"
    );
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn carrier_builds_every_namespace_wire_address_and_route_and_tears_down_clean() {
    require_root();
    let _s = serial();
    let lab = lab_name("lab");
    let _guard = LabGuard(lab.clone());
    let topo = Topology::load(&topology_path("carrier.toml")).unwrap();
    let t0 = Instant::now();
    build(&lab, &topo).unwrap();
    let built = t0.elapsed();
    check_lab(&lab, &topo);
    let rd = RunDir::new(&lab);
    assert_eq!(rd.namespaces().unwrap().len(), topo.nodes.len());
    assert_eq!(rd.topology().unwrap().nodes, topo.nodes);

    let t0 = Instant::now();
    let report = teardown(&lab).unwrap();
    let down = t0.elapsed();
    eprintln!(
        "carrier.toml ({} nodes, {} wires): build {:.0} ms, teardown {:.0} ms",
        topo.nodes.len(),
        topo.wires.len(),
        built.as_secs_f64() * 1e3,
        down.as_secs_f64() * 1e3
    );
    assert_eq!(
        report.namespaces_removed.len(),
        topo.nodes.len(),
        "{report:?}"
    );
    assert!(report.run_dir_removed);
    nothing_left(&lab);
    let again = teardown(&lab).unwrap();
    assert!(again.was_absent(), "{again:?}");
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn every_shipped_topology_builds() {
    require_root();
    let _s = serial();
    for file in [
        "double11.toml",
        "pair.toml",
        "bench-kernel.toml",
        "bench-null.toml",
    ] {
        let path = topology_path(file);
        if !path.exists() {
            continue;
        }
        let lab = lab_name("all");
        let _guard = LabGuard(lab.clone());
        let topo = Topology::load(&path).unwrap();
        build(&lab, &topo).unwrap_or_else(|e| panic!("{file}: {e}"));
        check_lab(&lab, &topo);
        if file == "bench-kernel.toml" {
            // All kernel forwarders: the wires carry a ping end to end.
            let out = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &netns_name(&lab, "phone"),
                    "ping",
                    "-c",
                    "1",
                    "-W",
                    "2",
                    "203.0.113.10",
                ])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "ping: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        teardown(&lab).unwrap();
        nothing_left(&lab);
    }
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn teardown_stops_processes_users_started_in_the_nodes() {
    require_root();
    let _s = serial();
    let lab = lab_name("procs");
    let _guard = LabGuard(lab.clone());
    build(&lab, &Topology::load(&topology_path("pair.toml")).unwrap()).unwrap();
    let polite = Command::new("ip")
        .args(["netns", "exec", &netns_name(&lab, "left"), "sleep", "1000"])
        .spawn()
        .unwrap();
    // Ignores SIGTERM: only SIGKILL stops it (and its sleep).
    let stubborn = Command::new("ip")
        .args([
            "netns",
            "exec",
            &netns_name(&lab, "r"),
            "sh",
            "-c",
            "trap '' TERM; sleep 1000",
        ])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let report = teardown(&lab).unwrap();
    assert!(report.processes_terminated >= 1, "{report:?}");
    assert!(report.processes_killed >= 1, "{report:?}");
    for mut c in [polite, stubborn] {
        let status = c.wait().unwrap();
        assert!(!status.success(), "{status:?}");
    }
    nothing_left(&lab);
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn teardown_finds_the_namespaces_when_the_run_dir_is_gone() {
    require_root();
    let _s = serial();
    let lab = lab_name("orphan");
    let _guard = LabGuard(lab.clone());
    build(&lab, &Topology::load(&topology_path("pair.toml")).unwrap()).unwrap();
    std::fs::remove_dir_all(RunDir::new(&lab).path()).unwrap();
    let report = teardown(&lab).unwrap();
    assert_eq!(report.namespaces_removed.len(), 3, "{report:?}");
    nothing_left(&lab);
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn a_name_clash_is_refused_and_leaves_the_other_namespace_alone() {
    require_root();
    let _s = serial();
    let lab = lab_name("clash");
    let _guard = LabGuard(lab.clone());
    let theirs = netns_name(&lab, "right");
    let _theirs = NetnsGuard(theirs.clone());
    assert!(Command::new("ip")
        .args(["netns", "add", &theirs])
        .status()
        .unwrap()
        .success());
    let err = build(&lab, &Topology::load(&topology_path("pair.toml")).unwrap()).unwrap_err();
    assert!(matches!(err, BuildError::Exists { .. }), "{err}");
    assert!(err.to_string().contains(&theirs), "{err}");
    assert!(
        netns_file(&theirs).exists(),
        "the test's own namespace was removed"
    );
    assert!(!netns_file(&netns_name(&lab, "left")).exists());
    assert!(!RunDir::new(&lab).path().exists());
    // Not the lab's (no run directory, no marker): teardown leaves it too.
    let report = teardown(&lab).unwrap();
    assert!(report.was_absent(), "{report:?}");
    assert!(netns_file(&theirs).exists());
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn building_a_lab_twice_is_refused_and_the_first_stays() {
    require_root();
    let _s = serial();
    let lab = lab_name("twice");
    let _guard = LabGuard(lab.clone());
    let topo = Topology::load(&topology_path("pair.toml")).unwrap();
    build(&lab, &topo).unwrap();
    let err = build(&lab, &topo).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    check_lab(&lab, &topo);
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn two_labs_run_side_by_side() {
    require_root();
    let _s = serial();
    let (a, b) = (lab_name("side-a"), lab_name("side-b"));
    let (_ga, _gb) = (LabGuard(a.clone()), LabGuard(b.clone()));
    let topo = Topology::load(&topology_path("carrier.toml")).unwrap();
    build(&a, &topo).unwrap();
    build(&b, &topo).unwrap();
    check_lab(&a, &topo);
    check_lab(&b, &topo);
    let mut labs = d11_lab::list_labs().unwrap();
    labs.retain(|l| *l == a || *l == b);
    assert_eq!(labs.len(), 2);
    teardown(&a).unwrap();
    nothing_left(&a);
    check_lab(&b, &topo);
    teardown(&b).unwrap();
    nothing_left(&b);
}
