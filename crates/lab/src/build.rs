//! Turning a topology into namespaces and wires (`d11 up`, before the
//! elements start). Root only.
//!
//! Order, chosen for speed (one `ip` process per namespace) and so that a
//! crash at any point leaves something [`crate::teardown`] can find:
//!
//! 1. the run directory, the topology copy and the `namespaces` list, each
//!    name written before the namespace exists;
//! 2. one `ip -b -`: every namespace, then every veth pair, created straight
//!    into its two namespaces;
//! 3. one thread per namespace, in parallel: enter it (`setns`), write the
//!    sysctls (IPv6 off, `ip_forward`), run one `ip -b -` there (lo up and
//!    marked, TAP devices, MACs, MTUs, addresses, routes), then `ethtool` on
//!    kernel-side veth ends, and in an element's namespace one `nft -f -`
//!    whose ingress hook drops what the element's veth ends receive
//!    ([`owned_ports_ruleset`]).

use crate::cmd::{self, IpBatch, StepFailed};
use crate::names::{
    check_lab_name, etc_marker, existing_namespaces, netns_marker, netns_name, LabNameError,
    RunDir, ETC_NETNS_DIR, NETNS_DIR,
};
use crate::procfs;
use crate::sys;
use crate::teardown::teardown;
use crate::topology::{Node, NodeKind, Topology, TopologyError, WireEnd, WireKind};
use std::path::Path;

/// Why a lab could not be built. After a failed step nothing of it remains.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    LabName(#[from] LabNameError),
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// Namespaces, veth and TAP devices need root.
    #[error("building a lab needs root (network namespaces, veth, TAP): run as root or in a privileged container")]
    NotRoot,
    /// A namespace or the run directory of this lab is already there.
    #[error("lab {lab:?} already exists ({what}); `d11 down --name {lab}` removes it")]
    Exists { lab: String, what: String },
    /// A step failed; everything the build had made is removed again.
    #[error("building lab {lab:?}: {step}: {detail}")]
    Step {
        lab: String,
        step: String,
        detail: String,
    },
}

/// The offloads a kernel-side veth end must not use, so that frames reach the
/// elements' AF_PACKET sockets whole and with real checksums.
const OFFLOADS_OFF: [&str; 6] = ["tx", "off", "tso", "off", "gso", "off"];

/// Builds lab `lab` from `topo`: one namespace per node, every wire, every
/// address and route. Refuses a lab that already exists; on failure removes
/// all it made (namespaces, run directory) and names the failing step.
pub fn build(lab: &str, topo: &Topology) -> Result<(), BuildError> {
    check_lab_name(lab)?;
    topo.validate()?;
    if !procfs::is_root() {
        return Err(BuildError::NotRoot);
    }
    let exists = |what: String| BuildError::Exists {
        lab: lab.to_string(),
        what,
    };
    let namespaces: Vec<String> = topo
        .nodes
        .iter()
        .map(|n| netns_name(lab, &n.name))
        .collect();
    let present =
        existing_namespaces().map_err(|e| exists(format!("cannot list {NETNS_DIR}: {e}")))?;
    if let Some(ns) = namespaces.iter().find(|ns| present.contains(*ns)) {
        return Err(exists(format!("namespace {ns} is there")));
    }
    let rd = RunDir::new(lab);
    let step_err = |f: StepFailed| BuildError::Step {
        lab: lab.to_string(),
        step: f.step,
        detail: f.detail,
    };
    if let Some(root) = rd.path().parent() {
        std::fs::create_dir_all(root).map_err(|e| step_err(io_step(root, "creating", e)))?;
    }
    // create_dir, not create_dir_all: of two `d11 up` of one lab, one wins.
    match std::fs::create_dir(rd.path()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(exists(format!("{} is there", rd.path().display())));
        }
        Err(e) => return Err(step_err(io_step(rd.path(), "creating", e))),
    }
    let t0 = std::time::Instant::now();
    match populate(lab, &rd, topo, &namespaces) {
        Ok(()) => {
            tracing::info!(lab, took_ms = t0.elapsed().as_millis() as u64, "lab built");
            Ok(())
        }
        Err(failed) => {
            let mut detail = failed.detail;
            if let Err(e) = teardown(lab) {
                detail.push_str(&format!(
                    "; cleaning up failed too ({e}): run `d11 down --name {lab}`"
                ));
            }
            Err(BuildError::Step {
                lab: lab.to_string(),
                step: failed.step,
                detail,
            })
        }
    }
}

fn io_step(path: &Path, doing: &str, e: std::io::Error) -> StepFailed {
    StepFailed {
        step: format!("{doing} {}", path.display()),
        detail: e.to_string(),
    }
}

fn write_file(path: &Path, text: &str) -> Result<(), StepFailed> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(|e| io_step(path, "writing", e))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| io_step(path, "writing", e))
}

/// `/etc/netns/LAB-NODE/hosts` for each host with `hosts` entries, and
/// `resolv.conf` for each with `nameservers`, which `ip netns exec` (and so
/// `d11 exec`) mounts over `/etc/hosts` and `/etc/resolv.conf`.
fn write_hosts_files(lab: &str, topo: &Topology) -> Result<(), StepFailed> {
    for n in topo.nodes.iter().filter(|n| !n.hosts.is_empty()) {
        let dir = Path::new(ETC_NETNS_DIR).join(netns_name(lab, &n.name));
        std::fs::create_dir_all(&dir).map_err(|e| io_step(&dir, "creating", e))?;
        let mut text = format!("{}\n127.0.0.1\tlocalhost\n", etc_marker(lab));
        for h in &n.hosts {
            text.push_str(&format!("{}\t{}\n", h.address, h.name));
        }
        write_file(&dir.join("hosts"), &text)?;
    }
    for n in topo.nodes.iter().filter(|n| !n.nameservers.is_empty()) {
        let dir = Path::new(ETC_NETNS_DIR).join(netns_name(lab, &n.name));
        std::fs::create_dir_all(&dir).map_err(|e| io_step(&dir, "creating", e))?;
        let mut text = format!("{}\n", etc_marker(lab));
        for a in &n.nameservers {
            text.push_str(&format!("nameserver {a}\n"));
        }
        write_file(&dir.join("resolv.conf"), &text)?;
    }
    Ok(())
}

fn populate(
    lab: &str,
    rd: &RunDir,
    topo: &Topology,
    namespaces: &[String],
) -> Result<(), StepFailed> {
    let saved = toml::to_string(topo).map_err(|e| StepFailed {
        step: "saving the topology".to_string(),
        detail: e.to_string(),
    })?;
    write_file(&rd.topology_file(), &saved)?;
    std::fs::create_dir_all(rd.logs_dir()).map_err(|e| io_step(&rd.logs_dir(), "creating", e))?;
    // Written before any namespace exists, so teardown finds them all.
    write_file(&rd.namespaces_file(), &(namespaces.join("\n") + "\n"))?;
    write_hosts_files(lab, topo)?;

    let mut root = IpBatch::default();
    for ns in namespaces {
        root.push(lab, format!("netns add {ns}"));
    }
    for w in &topo.wires {
        if topo.wire_kind(w) == WireKind::Veth {
            root.push(
                &format!("wire {}—{}", w.a, w.b),
                format!(
                    "link add {} netns {} type veth peer name {} netns {}",
                    w.a.port,
                    netns_name(lab, &w.a.node),
                    w.b.port,
                    netns_name(lab, &w.b.node)
                ),
            );
        }
    }
    root.run(&[])?;

    let results: Vec<Result<(), StepFailed>> = std::thread::scope(|s| {
        let handles: Vec<_> = topo
            .nodes
            .iter()
            .map(|node| s.spawn(move || configure_node(lab, topo, node)))
            .collect();
        handles
            .into_iter()
            .zip(&topo.nodes)
            .map(|(h, node)| {
                h.join().unwrap_or_else(|_| {
                    Err(StepFailed {
                        step: format!("{}: configuring", node.name),
                        detail: "the configuring thread panicked".to_string(),
                    })
                })
            })
            .collect()
    });
    results.into_iter().collect()
}

/// Kernel settings of a namespace, written through `/proc/sys/net` from a
/// thread inside it. A kernel without IPv6 has no IPv6 to turn off.
fn sysctls(node: &Node) -> Vec<(&'static str, &'static str, bool)> {
    vec![
        ("net/ipv6/conf/all/disable_ipv6", "1", true),
        ("net/ipv6/conf/default/disable_ipv6", "1", true),
        (
            "net/ipv4/ip_forward",
            if node.ip_forward() { "1" } else { "0" },
            false,
        ),
    ]
}

/// Everything inside one node's namespace, from a thread that entered it.
fn configure_node(lab: &str, topo: &Topology, node: &Node) -> Result<(), StepFailed> {
    let ns = netns_name(lab, &node.name);
    let who = node.name.as_str();
    let path = Path::new(NETNS_DIR).join(&ns);
    let file = std::fs::File::open(&path).map_err(|e| io_step(&path, "opening", e))?;
    sys::setns_net(&file).map_err(|e| StepFailed {
        step: format!("{who}: entering namespace {ns}"),
        detail: e.to_string(),
    })?;
    for (key, value, optional) in sysctls(node) {
        let p = Path::new("/proc/sys").join(key);
        match std::fs::write(&p, value) {
            Ok(()) => {}
            Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(StepFailed {
                    step: format!("{who}: sysctl {}={value}", key.replace('/', ".")),
                    detail: e.to_string(),
                })
            }
        }
    }

    let mut b = IpBatch::default();
    b.push(who, "link set dev lo up".to_string());
    b.push(who, format!("link set dev lo alias {}", netns_marker(lab)));
    let mut kernel_veths = Vec::new();
    let mut owned_veths = Vec::new();
    for p in &node.ports {
        let end = WireEnd {
            node: node.name.clone(),
            port: p.name.clone(),
        };
        let kind = topo
            .wires
            .iter()
            .find(|w| w.a == end || w.b == end)
            .map_or(WireKind::Veth, |w| topo.wire_kind(w));
        let link = format!(
            "link set dev {} address {} mtu {}",
            p.name,
            p.mac(&node.name),
            p.mtu
        );
        match (node.kind, kind) {
            (NodeKind::Host, _) => {
                if kind == WireKind::Tap {
                    b.push(who, format!("tuntap add dev {} mode tap", p.name));
                } else {
                    kernel_veths.push(p.name.as_str());
                }
                b.push(who, format!("{link} up"));
                if let Some(a) = p.address {
                    let brd = if a.prefix_len() < 31 { " brd +" } else { "" };
                    b.push(who, format!("addr add {a}{brd} dev {}", p.name));
                }
            }
            // The element's process owns the port: no address, no ARP.
            (NodeKind::Element, WireKind::Veth) => {
                b.push(who, format!("{link} arp off up"));
                owned_veths.push(p.name.as_str());
            }
            // The host's TAP is the wire; the element holds its fd.
            (NodeKind::Element, WireKind::Tap) => {}
        }
    }
    if node.kind == NodeKind::Host {
        for r in &node.routes {
            b.push(who, format!("route add {} via {}", r.to, r.via));
        }
    }
    if !b.is_empty() {
        // Spawned from this thread, ip starts inside the namespace.
        b.run(&[])?;
    }
    for ifname in kernel_veths {
        let mut args = vec!["-K", ifname];
        args.extend(OFFLOADS_OFF);
        cmd::run(
            "ethtool",
            &args,
            None,
            &format!("{who}: ethtool -K {ifname} {}", OFFLOADS_OFF.join(" ")),
        )?;
    }
    if !owned_veths.is_empty() {
        cmd::run(
            "nft",
            &["-f", "-"],
            Some(&owned_ports_ruleset(&owned_veths)),
            &format!(
                "{who}: nft: drop in the kernel what {} receive",
                owned_veths.join(", ")
            ),
        )?;
    }
    Ok(())
}

/// The nftables table that keeps an element's namespace's kernel from
/// taking the frames of the veth ends the element owns. Without it the
/// kernel runs each of them through `ip_rcv` and a route lookup (forwarding
/// is off: a dst made for `ip_error`, freed by RCU) only to drop it — a
/// tenth of the CPU of a 64-byte flood through four routers. The netdev
/// ingress hook runs after the packet taps, so the element's AF_PACKET
/// socket and every capture (`tcpdump`, `d11 capture`) still get each
/// frame; `d11 exec NODE -- nft list ruleset` shows it with its count.
/// The kernel has no tc classifiers here (matchall, u32), hence nftables.
fn owned_ports_ruleset(ports: &[&str]) -> String {
    let devices: Vec<String> = ports.iter().map(|p| format!("\"{p}\"")).collect();
    format!(
        "table netdev d11 {{\n\
         \tcomment \"d11: the element process owns these ports; this namespace's kernel takes none of their frames\"\n\
         \tchain owned {{\n\
         \t\ttype filter hook ingress devices = {{ {} }} priority 0; policy drop;\n\
         \t\tcomment \"after the packet taps: the element's AF_PACKET socket and captures see every frame\"\n\
         \t\tcounter drop\n\
         \t}}\n\
         }}\n",
        devices.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_drops_at_ingress_on_every_owned_port() {
        let r = owned_ports_ruleset(&["c1a2", "c1c2"]);
        assert!(r.starts_with("table netdev d11 {\n"), "{r}");
        assert!(
            r.contains("hook ingress devices = { \"c1a2\", \"c1c2\" } priority 0; policy drop;"),
            "{r}"
        );
        assert!(r.contains("\t\tcounter drop\n"), "{r}");
    }
}
