//! The shop behind the controller (chapter 10): the registry, the composite
//! `order` service, `stock`, `coupon` and the `db` service, each an app in a
//! VM of its own, calling each other with [`crate::rpc`] so the calls cross
//! VXLAN between the hosts. docs/rpc.md ("The shop's services") has the
//! methods and the saga; docs/db.md the database underneath.
//!
//! - [`RegistryConfig`]: the registry VM (Dubbo's ZooKeeper/Nacos role).
//! - [`order`]: creates the order, takes stock, reserves and consumes the
//!   coupon, confirms; compensates (restore, release, cancel) when a step
//!   fails.
//! - [`stock`]: the story's optimistic lock, one compare-and-set for all
//!   the deductions waiting on a SKU.
//! - [`coupon`]: reserve and consume once per order.
//! - [`db`]: the SQLite primary (AZ1) as an RPC service, or its standby (AZ2).
//!
//! Each provider registers `service → ip:port` with a TTL (renewed every
//! third of it) and unregisters on a clean stop; each consumer follows the
//! registry and fails over idempotent calls. Every method here is
//! idempotent by order id, so every call is marked so.

pub mod coupon;
pub mod db;
pub mod order;
pub mod stock;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Deserialize;
use serde_json::{json, Value as Json};
use tokio::net::{TcpListener, UnixListener};

use crate::app::{AppEnv, Running, Shutdown};
use crate::control;
use crate::rpc::{
    registry, CallOptions, Client, ClientConfig, Consumer, ConsumerConfig, Fault, Registry, Server,
    ServerConfig, Services, Status, Value,
};
use d11_core::ConfigError;

/// Where the registry listens by default (ZooKeeper's port, Dubbo's usual registry).
pub const REGISTRY_PORT: u16 = 2181;

/// A shop app's settings, parsed from its node's `config`.
#[derive(Debug, Clone)]
pub enum ShopApp {
    Registry(RegistryConfig),
    Order(order::OrderConfig),
    Stock(stock::StockConfig),
    Coupon(coupon::CouponConfig),
    Db(db::DbConfig),
}

impl ShopApp {
    /// Whether it calls the registry (every app but the registry and a standby).
    pub fn needs_registry(&self) -> bool {
        match self {
            ShopApp::Registry(_) => false,
            ShopApp::Db(c) => c.standby.is_none(),
            _ => true,
        }
    }

    /// Where it listens, for the others (the registry's address).
    fn listens(&self) -> Option<u16> {
        match self {
            ShopApp::Registry(c) => Some(c.listen.port()),
            _ => None,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            ShopApp::Registry(_) => "registry",
            ShopApp::Order(_) => "order",
            ShopApp::Stock(_) => "stock",
            ShopApp::Coupon(_) => "coupon",
            ShopApp::Db(_) => "db",
        }
    }

    /// A settings error `d11 up` reports before building anything: (key, message).
    pub fn check(&self) -> Result<(), (String, String)> {
        match self {
            ShopApp::Db(c) => c.check(),
            _ => Ok(()),
        }
    }
}

/// What a shop app learns from the lab rather than from its own config.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The node's name.
    pub node: String,
    /// The address it registers (its VM's address).
    pub advertise: IpAddr,
    /// The registry's address (the topology's `registry` app).
    pub registry: Option<SocketAddr>,
    /// Where a db keeps its file (the lab's run directory).
    pub data_dir: PathBuf,
}

impl Ctx {
    fn registry(&self) -> anyhow::Result<SocketAddr> {
        self.registry
            .context("no registry: the topology needs a node with app = \"registry\"")
    }
}

/// The registry VM's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    #[serde(default = "default_registry_listen")]
    pub listen: SocketAddr,
    /// How often expired providers are swept out.
    #[serde(default = "default_sweep_ms")]
    pub sweep_ms: u64,
}

fn default_registry_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], REGISTRY_PORT))
}
fn default_sweep_ms() -> u64 {
    250
}

/// The settings every provider shares, under its `config`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Listen address and limits (Dubbo's port 20880 by default).
    #[serde(default)]
    pub server: ServerConfig,
    /// The registration's TTL; renewed every third of it.
    #[serde(default = "default_ttl_ms")]
    pub ttl_ms: u64,
    /// How this provider calls the services it depends on.
    #[serde(default = "default_calls")]
    pub calls: ConsumerConfig,
}

fn default_ttl_ms() -> u64 {
    3000
}

/// Calls between the shop's services: round robin, a provider that fails
/// is skipped for a second (the supervisor restarts it about then).
fn default_calls() -> ConsumerConfig {
    ConsumerConfig {
        balance: crate::rpc::Balance::RoundRobin,
        timeout_ms: 2000,
        failure_backoff_ms: 1000,
        ..ConsumerConfig::default()
    }
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            server: ServerConfig::default(),
            ttl_ms: default_ttl_ms(),
            calls: default_calls(),
        }
    }
}

/// The shop's apps as the registry knows them: each runs [`run`] with its
/// variant of [`ShopApp`].
macro_rules! shop_apps {
    ($($(#[doc = $doc:literal])* $ty:ident = $name:literal, $variant:ident($settings:ty);)*) => {$(
        $(#[doc = $doc])*
        pub struct $ty;

        impl crate::app::App for $ty {
            const NAME: &'static str = $name;
            const SUMMARY: &'static str = concat!($($doc),*);
            type Settings = $settings;
            /// One event loop: on the lab's few shared CPUs a second worker
            /// added cross-thread wakeups, not throughput (docs/db.md).
            const WORKERS: usize = 1;
            fn listens(s: &$settings) -> Option<u16> {
                ShopApp::$variant(s.clone()).listens()
            }
            fn check(env: &AppEnv, s: &$settings) -> Result<(), ConfigError> {
                check(env, &ShopApp::$variant(s.clone()))
            }
            fn run(env: AppEnv, s: $settings, ctl: UnixListener, shutdown: Shutdown) -> Running {
                Box::pin(run_in(env, ShopApp::$variant(s), ctl, shutdown))
            }
        }
    )*};
}

shop_apps! {
    /// The RPC registry the shop's services register with.
    RegistryApp = "registry", Registry(RegistryConfig);
    /// The composite order service (the saga of stock, coupon and db).
    OrderApp = "order", Order(order::OrderConfig);
    /// The stock service (compare-and-set on a version).
    StockApp = "stock", Stock(stock::StockConfig);
    /// The coupon service.
    CouponApp = "coupon", Coupon(coupon::CouponConfig);
    /// The shop's database: the primary, or a standby following it.
    DbApp = "db", Db(db::DbConfig);
}

/// What `d11 up` checks of a shop app: its own settings, a registry to
/// find its peers in, an address to register.
fn check(env: &AppEnv, app: &ShopApp) -> Result<(), ConfigError> {
    app.check()
        .map_err(|(key, message)| ConfigError { key, message })?;
    if app.needs_registry() && env.peer("registry").is_none() {
        return Err(ConfigError::new(
            "app",
            "a shop app finds its peers in the registry: the topology needs a host with app = \"registry\"",
        ));
    }
    env.address(ADVERTISE).map(drop)
}

const ADVERTISE: &str = "a shop app registers its host's address";

/// [`run`] with what the lab tells the app.
async fn run_in(
    env: AppEnv,
    app: ShopApp,
    ctl: UnixListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let ctx = Ctx {
        node: env.node.clone(),
        advertise: env
            .address(ADVERTISE)
            .map_err(|e| anyhow::anyhow!("{}: {}", e.key, e.message))?,
        registry: env.peer("registry"),
        data_dir: env.data_dir.clone(),
    };
    tracing::info!(app = app.name(), "starting");
    run(app, ctx, ctl, shutdown).await
}

/// Runs `app` until `shutdown`, answering `control` with its status.
pub async fn run(
    app: ShopApp,
    ctx: Ctx,
    ctl: UnixListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    match app {
        ShopApp::Registry(c) => {
            let reg = Registry::new(Duration::from_millis(c.sweep_ms.max(10)));
            let server = Server::new(
                &ctx.node,
                ServerConfig {
                    listen: c.listen,
                    ..ServerConfig::default()
                },
                reg.services(),
            );
            let listener = bind(&server, c.listen).await?;
            let report = {
                let (reg, server) = (reg.clone(), server.clone());
                control::report(move || RegistryAppReport {
                    registry: reg.status(),
                    server: server.status(),
                })
            };
            tokio::spawn(control::serve(ctl, ctx.node.clone(), "registry", report));
            tokio::spawn(reg.run_expiry());
            tokio::select! {
                _ = server.serve(listener) => {}
                _ = shutdown => {}
            }
            Ok(())
        }
        ShopApp::Db(c) => db::run(c, ctx, ctl, shutdown).await,
        ShopApp::Order(c) => {
            let p = Provider::new(&ctx, c.provider.clone())?;
            let svc = order::Order::new(&p, c);
            p.run(ctx, ctl, "order", svc.services(), svc.report(), shutdown)
                .await
        }
        ShopApp::Stock(c) => {
            let p = Provider::new(&ctx, c.provider.clone())?;
            let svc = stock::Stock::new(&p, c);
            p.run(ctx, ctl, "stock", svc.services(), svc.report(), shutdown)
                .await
        }
        ShopApp::Coupon(c) => {
            let p = Provider::new(&ctx, c.provider.clone())?;
            let svc = coupon::Coupon::new(&p);
            p.run(ctx, ctl, "coupon", svc.services(), svc.report(), shutdown)
                .await
        }
    }
}

async fn bind(server: &Server, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    server
        .bind()
        .await
        .with_context(|| format!("listening on {addr}"))
}

/// A service provider: its registry client, and consumers of the services
/// it calls.
pub struct Provider {
    config: ProviderConfig,
    registry: Arc<Client>,
    /// The consumers made, to wait for before saying it is ready.
    consumers: std::sync::Mutex<Vec<Arc<Consumer>>>,
}

/// How long a provider waits for its registration and for providers of
/// what it calls before it answers its control socket anyway (`d11 up`
/// waits for that answer: the lab is up when the shop can take orders).
pub const READY_WAIT: Duration = Duration::from_secs(10);

/// What a shop service reports: its own report, the name and address it
/// registered, and its RPC server's counters.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub struct Served<T> {
    #[serde(flatten)]
    pub service: T,
    pub provider: Registered,
    pub server: crate::rpc::ServerReport,
}

/// A provider as the registry lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Registered {
    pub service: String,
    pub addr: String,
}

/// What the registry app reports (`d11 show vm-reg`): the table and its server.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct RegistryAppReport {
    #[serde(flatten)]
    pub registry: crate::rpc::RegistryReport,
    pub server: crate::rpc::ServerReport,
}

impl Provider {
    pub fn new(ctx: &Ctx, config: ProviderConfig) -> anyhow::Result<Provider> {
        Ok(Provider {
            registry: Arc::new(Client::new(ctx.registry()?, ClientConfig::default())),
            config,
            consumers: Default::default(),
        })
    }

    /// A consumer of `service`, following the registry.
    pub fn consumer(&self, service: &str) -> Arc<Consumer> {
        let providers = registry::subscribe(
            self.registry.clone(),
            service.into(),
            Duration::from_secs(30),
        );
        let c = Arc::new(Consumer::new(service, self.config.calls.clone(), providers));
        self.consumers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(c.clone());
        c
    }

    /// Waits (at most [`READY_WAIT`]) until every service this one calls
    /// has a provider: only then may consumers be sent here.
    async fn dependencies(&self, name: &str) {
        let consumers = self
            .consumers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let all = async {
            for c in consumers {
                c.wait_for_providers(READY_WAIT).await;
            }
        };
        if tokio::time::timeout(READY_WAIT, all).await.is_err() {
            tracing::warn!(
                service = name,
                "no provider of a service it calls after {READY_WAIT:?}: registering anyway"
            );
        }
    }

    /// Waits (at most [`READY_WAIT`]) until the registry lists `addr` under `name`.
    async fn registered(&self, name: &str, addr: &str) {
        let listed = async {
            loop {
                match registry::lookup(&self.registry, name).await {
                    Ok(p) if p.addrs.iter().any(|a| a == addr) => return,
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        };
        if tokio::time::timeout(READY_WAIT, listed).await.is_err() {
            tracing::warn!(
                service = name,
                "not registered after {READY_WAIT:?}: answering anyway"
            );
        }
    }

    /// Serves `services` (registered as `name` at the VM's address) until
    /// `shutdown`, then unregisters, so consumers stop choosing it before
    /// it goes.
    pub async fn run<R: serde::Serialize + 'static>(
        self,
        ctx: Ctx,
        ctl: UnixListener,
        name: &'static str,
        services: Services,
        report: impl Fn() -> R + Send + Sync + 'static,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let listen = self.config.server.listen;
        let server = Server::new(&ctx.node, self.config.server.clone(), services);
        let listener = bind(&server, listen).await?;
        let addr = SocketAddr::new(ctx.advertise, listener.local_addr()?.port()).to_string();
        let full = {
            let (server, addr) = (server.clone(), addr.clone());
            control::report(move || Served {
                service: report(),
                provider: Registered {
                    service: name.into(),
                    addr: addr.clone(),
                },
                server: server.status(),
            })
        };
        let serving = server.serve(listener);
        tokio::pin!(serving, shutdown);
        // Registered only once it can serve: what it calls has providers.
        tokio::select! {
            _ = &mut serving => return Ok(()),
            _ = &mut shutdown => return Ok(()),
            _ = self.dependencies(name) => {}
        }
        // Aborted when this future ends or is dropped: a dead provider stops renewing.
        let renew = tokio::spawn(registry::keep_registered(
            self.registry.clone(),
            name.into(),
            addr.clone(),
            Duration::from_millis(self.config.ttl_ms.max(30)),
        ))
        .abort_handle();
        let _renewing = scopeguard(move || renew.abort());
        tokio::select! {
            _ = &mut serving => return Ok(()),
            _ = &mut shutdown => return Ok(()),
            _ = self.registered(name, &addr) => {}
        }
        tokio::spawn(control::serve(ctl, ctx.node.clone(), name, full));
        tokio::select! {
            _ = serving => {}
            _ = shutdown => {}
        }
        drop(_renewing);
        if let Err(f) = registry::unregister(&self.registry, name, &addr).await {
            tracing::warn!(service = name, "unregistering: {f}");
        }
        Ok(())
    }
}

/// Runs `f` when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// One downstream call as `d11 order` shows it.
#[derive(Debug, Clone)]
pub struct Hop {
    /// `service.method`.
    pub call: String,
    /// The provider that answered (or the last one tried).
    pub provider: Option<SocketAddr>,
    /// Providers tried.
    pub tried: usize,
    pub ms: f64,
    /// What it did, in a few words.
    pub result: String,
    /// The stock service's compare-and-set attempts.
    pub cas_attempts: Option<i64>,
}

impl Hop {
    pub fn to_json(&self) -> Json {
        let mut j = json!({
            "call": self.call,
            "provider": self.provider.map(|a| a.to_string()),
            "tried": self.tried,
            "ms": (self.ms * 100.0).round() / 100.0,
            "result": self.result,
        });
        if let Some(n) = self.cas_attempts {
            j["cas_attempts"] = n.into();
        }
        j
    }
}

/// Calls `consumer.method(args)` (idempotent, traced by `trace_id`) and
/// answers the JSON result with the hop it made; `result` is filled in by
/// the caller from the answer.
pub async fn call(
    consumer: &Consumer,
    method: &str,
    args: Vec<Value>,
    trace_id: &str,
) -> (Result<Json, Fault>, Hop) {
    call_until(consumer, method, args, trace_id, None).await
}

/// [`call`], answered by `deadline` (every attempt and failover within it).
pub async fn call_until(
    consumer: &Consumer,
    method: &str,
    args: Vec<Value>,
    trace_id: &str,
    deadline: Option<Instant>,
) -> (Result<Json, Fault>, Hop) {
    let mut opts = CallOptions::idempotent();
    opts.deadline = deadline;
    opts.attachments.insert("trace_id".into(), trace_id.into());
    let started = Instant::now();
    let t = consumer.call_traced(method, args, opts).await;
    let hop = Hop {
        call: format!("{}.{method}", consumer.service()),
        provider: t.tried.last().copied(),
        tried: t.tried.len(),
        ms: started.elapsed().as_secs_f64() * 1000.0,
        result: match &t.result {
            Ok(_) => String::new(),
            Err(f) => format!("failed: {f}"),
        },
        cas_attempts: None,
    };
    (t.result.map(Json::from), hop)
}

/// A string field of an answer, or a `50 bad response` fault naming it.
pub fn field<'a>(j: &'a Json, key: &str, call: &str) -> Result<&'a str, Fault> {
    j[key].as_str().ok_or_else(|| {
        Fault::new(
            Status::BadResponse,
            format!("{call} answered without {key:?}: {j}"),
        )
    })
}

/// Argument `i` as an optional string: null is `None`.
pub fn opt_str(c: &crate::rpc::Call, i: usize) -> Result<Option<String>, Fault> {
    match c.arg(i)? {
        Value::Null => Ok(None),
        v => v.as_str().map(|s| Some(s.to_owned())).ok_or_else(|| {
            Fault::new(
                Status::BadRequest,
                format!(
                    "argument {i} of {} must be a string or null",
                    c.request.method
                ),
            )
        }),
    }
}

/// A fault for a service's own error (70).
pub fn service_error(e: impl std::fmt::Display) -> Fault {
    Fault::new(Status::ServiceError, e.to_string())
}
