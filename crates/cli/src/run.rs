//! `d11 run --name LAB --node NODE`: one element process.
//!
//! Started by the supervisor. It reads the lab's saved topology, moves into
//! its node's namespace, opens its ports (AF_PACKET on veth ends, the hosts'
//! TAP devices by fd), builds the element for its role and hands both to the
//! driver until SIGTERM.

use anyhow::{Context, Result};
use d11_core::Element;
use d11_elements::{null::Null, router, switch};
use d11_lab::{ElementSpec, PortAttach as LabAttach, Role, RunDir};

pub fn run(lab: &str, node: &str) -> Result<()> {
    let dir = RunDir::new(lab);
    let topo = dir.topology().context("reading the lab's topology")?;
    let spec = topo
        .element(node)
        .with_context(|| format!("{node} is not an element of lab {lab}"))?;
    init_tracing();
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
    tracing::info!(ports = ?names, "element up");
    match spec.role {
        Role::Router => drive(
            &mut router::Router::new(router_config(&spec)?),
            ports,
            names,
            control,
        ),
        Role::Switch => drive(
            &mut switch::Switch::new(switch::SwitchConfig::new(names.clone())),
            ports,
            names,
            control,
        ),
        Role::Null => drive(
            &mut Null::new(spec.ports.len() as u16),
            ports,
            names,
            control,
        ),
    }
}

fn drive<E: Element>(
    e: &mut E,
    ports: Vec<d11_io::Port>,
    names: Vec<String>,
    control: d11_io::ControlServer,
) -> Result<()> {
    d11_io::run(e, ports, names, Some(control))?;
    tracing::info!("element stopped");
    Ok(())
}

fn router_config(spec: &ElementSpec) -> Result<router::RouterConfig> {
    let ports = spec
        .ports
        .iter()
        .map(|p| {
            Ok(router::RouterPort {
                name: p.name.clone(),
                mac: p.mac,
                address: p
                    .address
                    .with_context(|| format!("router port {} has no address", p.name))?,
                mtu: p.mtu,
            })
        })
        .collect::<Result<_>>()?;
    let routes = spec
        .routes
        .iter()
        .map(|r| router::StaticRoute {
            to: r.to,
            via: r.via,
        })
        .collect();
    Ok(router::RouterConfig { ports, routes })
}

/// Logs to stderr (the supervisor appends it to logs/NODE.log); `RUST_LOG`
/// chooses the level, `info` by default (packets are at `trace`).
fn init_tracing() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}
