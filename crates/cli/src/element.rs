//! One element process: `d11-element --name LAB --node NODE`, which the
//! supervisor starts for each element node (apps keep `d11 run`).
//!
//! It reads the lab's saved topology, moves into its node's namespace,
//! opens its ports (AF_PACKET on veth ends, the hosts' TAP devices by fd),
//! builds the element for its role and hands both to the driver until
//! SIGTERM.

use anyhow::{Context, Result};
use d11_lab::{PortAttach as LabAttach, RunDir};
use std::path::PathBuf;

/// The element program's file name, found beside the running `d11`.
pub const PROGRAM: &str = "d11-element";

/// The element program beside this process's own (`target/release/`, or
/// wherever `d11` was installed); an error naming the path if it is not there.
pub fn program() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the d11 binary")?;
    let path = exe.with_file_name(PROGRAM);
    if !path.is_file() {
        anyhow::bail!(
            "{} is missing: the elements run it (cargo build --release -p d11-cli builds it beside d11)",
            path.display()
        );
    }
    Ok(path)
}

/// The arguments `--name LAB --node NODE`, exactly in this order, as the
/// supervisor passes them; `None` for anything else.
pub fn args(args: impl Iterator<Item = std::ffi::OsString>) -> Option<(String, String)> {
    let args: Vec<String> = args.map(|a| a.into_string().ok()).collect::<Option<_>>()?;
    match args.as_slice() {
        [name, lab, node_flag, node] if name == "--name" && node_flag == "--node" => {
            Some((lab.clone(), node.clone()))
        }
        _ => None,
    }
}

/// Runs element `node` of lab `lab` until SIGTERM.
pub fn run(lab: &str, node: &str) -> Result<()> {
    let dir = RunDir::new(lab);
    let topo = dir.topology().context("reading the lab's topology")?;
    crate::init_tracing();
    let spec = topo
        .element(node)
        .with_context(|| format!("{node} is not an element of lab {lab}"))?;
    let span = tracing::info_span!("node", name = node, role = spec.role.as_str());
    let _enter = span.enter();

    // The whole process lives in its node's namespace; the guard only
    // returns there when the element stops.
    let _netns = d11_io::NetnsGuard::enter(&d11_lab::netns_name(lab, node))?;
    let mut ports = Vec::with_capacity(spec.ports.len());
    for p in &spec.ports {
        let attach = match &p.attach {
            LabAttach::Veth { ifname } => d11_io::PortAttach::Packet {
                ifname: ifname.clone(),
            },
            LabAttach::Tap { host_node, ifname } => d11_io::PortAttach::Tap {
                netns: d11_lab::netns_name(lab, host_node),
                ifname: ifname.clone(),
            },
        };
        ports
            .push(d11_io::Port::open(&attach).with_context(|| format!("opening port {}", p.name))?);
    }
    let names: Vec<String> = spec.ports.iter().map(|p| p.name.clone()).collect();
    let control = d11_io::ControlServer::bind(&dir.socket(node), node, spec.role.as_str())?;
    let mut element = topo
        .roles()
        .build(&spec.node())
        .map_err(|e| anyhow::anyhow!("{node}.{}: {}", e.key, e.message))?;
    tracing::info!(ports = ?names, "element up");
    let impair: Vec<d11_core::Impairer> = spec
        .ports
        .iter()
        .map(|p| d11_core::Impairer::new(p.impair_tx.clone(), p.impair_rx.clone()))
        .collect();
    for p in spec.ports.iter() {
        for (side, cfg) in [("tx", &p.impair_tx), ("rx", &p.impair_rx)] {
            if let Some(cfg) = cfg {
                tracing::info!(port = %p.name, side, impair = %cfg, "impairment");
            }
        }
    }
    d11_io::run_impaired(&mut element, ports, names, impair, Some(control))?;
    tracing::info!("element stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_name_then_node_are_the_elements_arguments() {
        let argv = |s: &str| {
            s.split(' ')
                .map(std::ffi::OsString::from)
                .collect::<Vec<_>>()
                .into_iter()
        };
        assert_eq!(
            args(argv("--name lab1 --node mid")),
            Some(("lab1".into(), "mid".into()))
        );
        for other in [
            "--node mid --name lab1",
            "--node mid",
            "--name lab1 --node x y",
        ] {
            assert_eq!(args(argv(other)), None, "{other}");
        }
    }
}
