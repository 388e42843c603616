//! `d11 run` for a host with an app: the app on the kernel's TCP/IP stack
//! of the host's namespace, with a control socket like an element's.
//!
//! One arm per app, as `roles.rs` has one per role; the apps themselves
//! live in `d11-apps`.

use crate::roles::{parse_config, ConfigError};
use anyhow::{Context, Result};
use d11_apps::controller::{Controller, ControllerConfig};
use d11_apps::l4lb::{L4lb, L4lbConfig};
use d11_apps::shop::{self, ShopApp};
use d11_apps::{control, pki};
use d11_lab::{App, AppSpec, RunDir, Topology};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::net::TcpListener;

/// An app's settings, parsed.
enum AppConfig {
    L4lb(L4lbConfig),
    Controller(ControllerConfig),
    Shop(ShopApp),
}

fn app_config(spec: &AppSpec) -> Result<AppConfig, ConfigError> {
    let owner = format!("app {}", spec.app);
    let c = &spec.config;
    Ok(match spec.app {
        App::L4lb => AppConfig::L4lb(parse_config(c, &owner)?),
        App::Controller => AppConfig::Controller(parse_config(c, &owner)?),
        App::Registry => AppConfig::Shop(ShopApp::Registry(parse_config(c, &owner)?)),
        App::Order => AppConfig::Shop(ShopApp::Order(parse_config(c, &owner)?)),
        App::Stock => AppConfig::Shop(ShopApp::Stock(parse_config(c, &owner)?)),
        App::Coupon => AppConfig::Shop(ShopApp::Coupon(parse_config(c, &owner)?)),
        App::Db => AppConfig::Shop(ShopApp::Db(parse_config(c, &owner)?)),
    })
}

/// What `d11 up` checks of an app before building anything.
pub fn check(topo: &Topology, spec: &AppSpec) -> Result<(), ConfigError> {
    match app_config(spec)? {
        AppConfig::Controller(_) if topo.pki.is_none() => Err(ConfigError {
            key: "app".into(),
            message: "a controller serves HTTPS: the topology needs [pki] names = [\"…\"]".into(),
        }),
        AppConfig::Shop(app) => {
            app.check()
                .map_err(|(key, message)| ConfigError { key, message })?;
            if app.needs_registry() && registry(topo).is_none() {
                return Err(ConfigError {
                    key: "app".into(),
                    message: format!(
                        "app {} finds its peers in the registry: the topology needs a host with app = \"registry\"",
                        spec.app
                    ),
                });
            }
            advertise(topo, &spec.name).map(|_| ())
        }
        _ => Ok(()),
    }
}

/// The address of the topology's registry app: its host's first address
/// and its `listen` port.
fn registry(topo: &Topology) -> Option<SocketAddr> {
    let spec = topo.apps().into_iter().find(|a| a.app == App::Registry)?;
    let Ok(AppConfig::Shop(ShopApp::Registry(c))) = app_config(&spec) else {
        return None;
    };
    let ip = advertise(topo, &spec.name).ok()?;
    Some(SocketAddr::new(ip, c.listen.port()))
}

/// The address a shop app registers: its host's first port's.
fn advertise(topo: &Topology, node: &str) -> Result<IpAddr, ConfigError> {
    topo.node(node)
        .and_then(|n| n.ports.iter().find_map(|p| p.address))
        .map(|a| IpAddr::V4(a.addr()))
        .ok_or_else(|| ConfigError {
            key: "ports".into(),
            message: "a shop app registers its host's address: give its first port an address"
                .into(),
        })
}

/// Runs the app of `spec` in its namespace until SIGTERM or SIGINT.
pub fn run(lab: &str, spec: &AppSpec) -> Result<()> {
    let dir = RunDir::new(lab);
    let cfg =
        app_config(spec).map_err(|e| anyhow::anyhow!("{}.{}: {}", spec.name, e.key, e.message))?;
    // Threads the runtime starts inherit the namespace of this one.
    let _netns = d11_io::NetnsGuard::enter(&d11_lab::netns_name(lab, &spec.name))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async {
        let shutdown = async {
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
        };
        let ctl = control::bind(&dir.socket(&spec.name))
            .with_context(|| format!("binding {}", dir.socket(&spec.name).display()))?;
        match cfg {
            AppConfig::L4lb(c) => {
                let listener = listen(c.listen).await?;
                let lb = L4lb::new(&spec.name, c);
                let report = {
                    let lb = lb.clone();
                    Arc::new(move || lb.status())
                };
                tokio::spawn(control::serve(ctl, spec.name.clone(), "l4lb", report));
                tracing::info!(addr = %listener.local_addr()?, "l4lb up");
                lb.serve(listener, shutdown).await?;
            }
            AppConfig::Controller(c) => {
                let tls = pki::server_config(&pki::PkiPaths::new(dir.pki_dir()))?;
                let listener = listen(c.listen).await?;
                let ctl_app = Controller::new(&spec.name, c, tls, &dir.order_store())?;
                let report = {
                    let c = ctl_app.clone();
                    Arc::new(move || c.status())
                };
                // Ready (answering its control socket) once it can place orders.
                if !ctl_app.wait_for_order_service(shop::READY_WAIT).await {
                    tracing::warn!("no provider of the order service yet: answering anyway");
                }
                tokio::spawn(control::serve(ctl, spec.name.clone(), "controller", report));
                tracing::info!(addr = %listener.local_addr()?, "controller up");
                ctl_app.serve(listener, shutdown).await?;
            }
            AppConfig::Shop(app) => {
                let topo = dir.topology().context("reading the lab's topology")?;
                let ctx = shop::Ctx {
                    node: spec.name.clone(),
                    advertise: advertise(&topo, &spec.name)
                        .map_err(|e| anyhow::anyhow!("{}: {}", e.key, e.message))?,
                    registry: registry(&topo),
                    data_dir: dir.db_dir(),
                };
                tracing::info!(app = %spec.app, "starting");
                shop::run(app, ctx, ctl, shutdown).await?;
            }
        }
        tracing::info!("stopped");
        Ok(())
    })
}

async fn listen(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))
}
