//! The app registry: each app a host may run declares its name, its
//! settings type (the node's `config` table), what `d11 up` checks before
//! building anything, and how it runs. [`registry`] lists them, one line
//! each; `d11 up` and `d11 run` ask it. Adding an app is its file and a
//! line there (`docs/adding-a-role.md`).

use crate::pki::PkiPaths;
use d11_core::settings::{self, ConfigError};
use serde::de::DeserializeOwned;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use tokio::net::UnixListener;

/// A future the app awaits to know it must stop (SIGTERM or SIGINT).
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;
/// An app running.
pub type Running = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// Where another app of the lab listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub app: String,
    pub node: String,
    pub addr: SocketAddr,
}

/// What an app learns from the lab rather than from its own settings.
#[derive(Debug, Clone)]
pub struct AppEnv {
    pub node: String,
    /// Its host's first address (what a service registers).
    pub address: Option<IpAddr>,
    /// Where the lab's apps listen (those that say, with [`App::listens`]).
    pub peers: Vec<Peer>,
    /// The lab PKI, if the topology has one.
    pub pki: Option<PkiPaths>,
    /// Where a database keeps its file.
    pub data_dir: PathBuf,
    /// The controller's own order store (when it has no order service).
    pub order_store: PathBuf,
    /// The namespace's resolv.conf, which the phone's baseband writes from
    /// the attach.
    pub resolv_conf: EtcFile,
}

/// A file `d11 up` may write under `/etc/netns/LAB-NODE/`, which `ip netns
/// exec` mounts over the file of that name in `/etc` (ip-netns(8)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcFile {
    pub path: PathBuf,
    /// Its first line: `d11 down` removes only the files that carry it.
    pub marker: String,
}

impl EtcFile {
    /// Writes `body` after the marker line, in place (a file bind-mounted
    /// by a running `ip netns exec` keeps its inode, so it sees the new
    /// text), the directory made if needed.
    pub fn write(&self, body: &str) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&self.path, format!("{}\n{body}", self.marker))
    }
}

impl AppEnv {
    /// The first peer running `app`.
    pub fn peer(&self, app: &str) -> Option<SocketAddr> {
        self.peers.iter().find(|p| p.app == app).map(|p| p.addr)
    }

    /// The lab PKI for an app that serves HTTPS (`who`, e.g. "a
    /// controller"), or the error `d11 up` reports without one.
    pub fn https_pki(&self, who: &str) -> Result<&PkiPaths, ConfigError> {
        self.pki.as_ref().ok_or_else(|| {
            ConfigError::new(
                "app",
                format!("{who} serves HTTPS: the topology needs [pki] names = [\"…\"]"),
            )
        })
    }

    /// Its address, or the error `d11 up` reports for an app that needs one.
    pub fn address(&self, why: &str) -> Result<IpAddr, ConfigError> {
        self.address.ok_or_else(|| {
            ConfigError::new("ports", format!("{why}: give its first port an address"))
        })
    }
}

/// An application a host runs, declared in its own file.
pub trait App: 'static {
    /// `app = "…"` in the topology.
    const NAME: &'static str;
    /// One line for errors and the docs.
    const SUMMARY: &'static str;
    type Settings: DeserializeOwned + Send + 'static;
    /// Worker threads of its tokio runtime; 1 is a current-thread runtime,
    /// one event loop.
    const WORKERS: usize = 2;
    /// The port it listens on, for the other apps' [`AppEnv::peers`].
    fn listens(_settings: &Self::Settings) -> Option<u16> {
        None
    }
    /// What `d11 up` checks beyond the settings' own parse.
    fn check(_env: &AppEnv, _settings: &Self::Settings) -> Result<(), ConfigError> {
        Ok(())
    }
    /// Runs until `shutdown`, answering `ctl` (its control socket) once ready.
    fn run(env: AppEnv, settings: Self::Settings, ctl: UnixListener, shutdown: Shutdown)
        -> Running;
}

/// One registered app, its type erased.
#[derive(Clone, Copy)]
pub struct AppEntry {
    pub name: &'static str,
    pub summary: &'static str,
    workers: usize,
    check: fn(&AppEnv, &toml::Table) -> Result<(), ConfigError>,
    listens: fn(&toml::Table) -> Option<u16>,
    run: fn(AppEnv, &toml::Table, UnixListener, Shutdown) -> Result<Running, ConfigError>,
}

impl std::fmt::Debug for AppEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AppEntry").field(&self.name).finish()
    }
}

fn parse<A: App>(config: &toml::Table) -> Result<A::Settings, ConfigError> {
    settings::parse(config, &format!("app {}", A::NAME))
}

impl AppEntry {
    fn of<A: App>() -> AppEntry {
        AppEntry {
            name: A::NAME,
            summary: A::SUMMARY,
            workers: A::WORKERS,
            check: |env, config| A::check(env, &parse::<A>(config)?),
            listens: |config| parse::<A>(config).ok().and_then(|s| A::listens(&s)),
            run: |env, config, ctl, shutdown| Ok(A::run(env, parse::<A>(config)?, ctl, shutdown)),
        }
    }

    /// The runtime it runs on: one event loop for [`App::WORKERS`] 0 or 1,
    /// else that many worker threads.
    pub fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut b = match self.workers {
            0 | 1 => tokio::runtime::Builder::new_current_thread(),
            n => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(n);
                b
            }
        };
        b.enable_all().build()
    }

    /// Parses the settings and checks them against the lab.
    pub fn check(&self, env: &AppEnv, config: &toml::Table) -> Result<(), ConfigError> {
        (self.check)(env, config)
    }

    pub fn listens(&self, config: &toml::Table) -> Option<u16> {
        (self.listens)(config)
    }

    pub fn run(
        &self,
        env: AppEnv,
        config: &toml::Table,
        ctl: UnixListener,
        shutdown: Shutdown,
    ) -> Result<Running, ConfigError> {
        (self.run)(env, config, ctl, shutdown)
    }
}

/// The apps a topology may name.
#[derive(Debug, Clone, Default)]
pub struct AppRegistry {
    apps: Vec<AppEntry>,
}

impl AppRegistry {
    pub fn with<A: App>(mut self) -> AppRegistry {
        self.apps.retain(|a| a.name != A::NAME);
        self.apps.push(AppEntry::of::<A>());
        self
    }

    pub fn get(&self, name: &str) -> Option<&AppEntry> {
        self.apps.iter().find(|a| a.name == name)
    }

    /// `"l4lb", "controller", …` for messages.
    pub fn list(&self) -> String {
        self.apps
            .iter()
            .map(|a| format!("{:?}", a.name))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Every app a topology may name: one line each.
pub fn registry() -> AppRegistry {
    AppRegistry::default()
        .with::<crate::l4lb::L4lbApp>()
        .with::<crate::controller::ControllerApp>()
        .with::<crate::shop::RegistryApp>()
        .with::<crate::shop::OrderApp>()
        .with::<crate::shop::StockApp>()
        .with::<crate::shop::CouponApp>()
        .with::<crate::shop::DbApp>()
        .with::<crate::hss::HssApp>()
        .with::<crate::baseband::BasebandApp>()
        .with::<crate::dns::AuthApp>()
        .with::<crate::cdn::OriginApp>()
        .with::<crate::dns::ldns::ResolverApp>()
        .with::<crate::dns::gslb::GslbApp>()
        .with::<crate::cdn::cache::CacheApp>()
}
