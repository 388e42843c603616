//! `d11 run` for a host with an app: the app on the kernel's TCP/IP stack
//! of the host's namespace, with a control socket like an element's.
//!
//! One arm per app, as `roles.rs` has one per role; the apps themselves
//! live in `d11-apps`.

use crate::roles::{parse_config, ConfigError};
use anyhow::{Context, Result};
use d11_apps::controller::{Controller, ControllerConfig};
use d11_apps::l4lb::{L4lb, L4lbConfig};
use d11_apps::{control, pki};
use d11_lab::{App, AppSpec, RunDir, Topology};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// An app's settings, parsed.
enum AppConfig {
    L4lb(L4lbConfig),
    Controller(ControllerConfig),
}

fn app_config(spec: &AppSpec) -> Result<AppConfig, ConfigError> {
    let owner = format!("app {}", spec.app);
    Ok(match spec.app {
        App::L4lb => AppConfig::L4lb(parse_config(&spec.config, &owner)?),
        App::Controller => AppConfig::Controller(parse_config(&spec.config, &owner)?),
    })
}

/// What `d11 up` checks of an app before building anything.
pub fn check(topo: &Topology, spec: &AppSpec) -> Result<(), ConfigError> {
    match app_config(spec)? {
        AppConfig::Controller(_) if topo.pki.is_none() => Err(ConfigError {
            key: "app".into(),
            message: "a controller serves HTTPS: the topology needs [pki] names = [\"…\"]".into(),
        }),
        _ => Ok(()),
    }
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
                tokio::spawn(control::serve(ctl, spec.name.clone(), "controller", report));
                tracing::info!(addr = %listener.local_addr()?, "controller up");
                ctl_app.serve(listener, shutdown).await?;
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
