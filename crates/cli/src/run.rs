//! `d11 run --name LAB --node NODE`: one element process (or, for a host
//! with an app, the app: `apps.rs`).
//!
//! Started by the supervisor. It reads the lab's saved topology, moves into
//! its node's namespace, opens its ports (AF_PACKET on veth ends, the hosts'
//! TAP devices by fd), builds the element for its role and hands both to the
//! driver until SIGTERM.

use anyhow::{Context, Result};
use d11_lab::{PortAttach as LabAttach, RunDir};

pub fn run(lab: &str, node: &str) -> Result<()> {
    let dir = RunDir::new(lab);
    let topo = dir.topology().context("reading the lab's topology")?;
    init_tracing();
    if let Some(app) = topo.app(node) {
        let span = tracing::info_span!("node", name = node, app = app.app.as_str());
        let _enter = span.enter();
        return crate::apps::run(lab, &app);
    }
    let spec = topo.element(node).with_context(|| {
        format!("{node} is neither an element nor a host with an app in lab {lab}")
    })?;
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

/// Logs to stderr (the supervisor appends it to logs/NODE.log); `RUST_LOG`
/// chooses the level, `info` by default (packets are at `trace`).
pub(crate) fn init_tracing() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}
