//! `d11 run` for a host with an app: the app on the kernel's TCP/IP stack
//! of the host's namespace, with a control socket like an element's. The
//! apps themselves, and the registry of them, live in `d11-apps`; this
//! tells each what the lab knows ([`AppEnv`]).

use anyhow::{Context, Result};
use d11_apps::app::{self, AppEnv, Peer};
use d11_apps::{control, pki};
use d11_core::ConfigError;
use d11_lab::{AppSpec, RunDir, Topology};
use std::net::{IpAddr, SocketAddr};

/// What the lab tells the app on `node`: its address, where the other
/// apps listen, the PKI and the run directory's paths.
fn env(topo: &Topology, lab: &str, node: &str) -> AppEnv {
    let dir = RunDir::new(lab);
    let registry = app::registry();
    let address = |n: &str| {
        topo.node(n)
            .and_then(|n| n.ports.iter().find_map(|p| p.address))
            .map(|a| IpAddr::V4(a.addr()))
    };
    let peers = topo
        .apps()
        .into_iter()
        .filter_map(|a| {
            let port = registry.get(&a.app)?.listens(&a.config)?;
            Some(Peer {
                addr: SocketAddr::new(address(&a.name)?, port),
                app: a.app,
                node: a.name,
            })
        })
        .collect();
    AppEnv {
        node: node.to_string(),
        address: address(node),
        peers,
        pki: topo.pki.as_ref().map(|_| pki::PkiPaths::new(dir.pki_dir())),
        data_dir: dir.db_dir(),
        order_store: dir.order_store(),
        resolv_conf: app::EtcFile {
            path: d11_lab::netns_resolv_file(lab, node),
            marker: d11_lab::etc_marker(lab),
        },
    }
}

/// What `d11 up` checks of an app before building anything: a known app,
/// its settings, and what it needs of the lab.
pub fn check(topo: &Topology, spec: &AppSpec) -> Result<(), ConfigError> {
    let registry = app::registry();
    let Some(entry) = registry.get(&spec.app) else {
        return Err(ConfigError::new(
            "app",
            format!("unknown app {:?}: one of {}", spec.app, registry.list()),
        ));
    };
    // The lab's name only shapes paths, which checks do not look at.
    entry.check(&env(topo, "check", &spec.name), &spec.config)
}

/// Runs the app of `spec` in its namespace until SIGTERM or SIGINT.
pub fn run(lab: &str, spec: &AppSpec) -> Result<()> {
    let dir = RunDir::new(lab);
    let topo = dir.topology().context("reading the lab's topology")?;
    let registry = app::registry();
    let entry = registry
        .get(&spec.app)
        .with_context(|| format!("{}: unknown app {:?}", spec.name, spec.app))?;
    let env = env(&topo, lab, &spec.name);
    // Threads the runtime starts inherit the namespace of this one.
    let _netns = d11_io::NetnsGuard::enter(&d11_lab::netns_name(lab, &spec.name))?;
    // The l4lb runs on one thread (one event loop), the apps doing CPU work
    // (TLS, SQLite) on two.
    let rt = entry.runtime().context("starting the tokio runtime")?;
    rt.block_on(async {
        let shutdown = Box::pin(async {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return std::future::pending().await;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("stopping");
        });
        let ctl = control::bind(&dir.socket(&spec.name))
            .with_context(|| format!("binding {}", dir.socket(&spec.name).display()))?;
        entry
            .run(env, &spec.config, ctl, shutdown)
            .map_err(|e| anyhow::anyhow!("{}.{}: {}", spec.name, e.key, e.message))?
            .await?;
        tracing::info!("stopped");
        Ok(())
    })
}
