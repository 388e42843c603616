//! `d11 bench order`: orders per second and latency of the whole story.
//!
//! N phone apps at once ([`d11_apps::load`], tokio tasks in this process,
//! on the kernel stack of the `ue` namespace) place complete orders back to
//! back — for each a new TCP connection, a full TLS handshake, the story's
//! `POST /purchaseOrder` and its 201 — in three labs built one after the
//! other in this run:
//!
//! - `direct`: the phone and one controller on a single veth, no element
//!   between them (`netns/bench-order-direct.toml`), the baseline;
//! - `full`: the whole lab, `netns/double11.toml`: both GTP-U tunnels, the
//!   PGW's NAT, the carrier routers, the cloud gateway's NAT and VXLAN, the
//!   `l4lb` in vm-lb, two controllers, and behind them the shop: the order
//!   service's saga over RPC (db, stock, coupon) and the db's synchronous
//!   standby (the seed stock raised so the run never sells out);
//! - `local`: the same lab with the controllers recording orders themselves
//!   in one SQLite file (no `order_service`): the previous issue's
//!   controller-only build, the baseline of the backend's cost;
//! - `haproxy`: the same lab with vm-lb's app taken out (the topology is
//!   loaded, changed and saved to a scratch file for `d11 up -t`) and
//!   Debian's `haproxy` started in vm-lb through `d11 exec`, `mode tcp`,
//!   `balance roundrobin`, both controllers with `check` — configured like
//!   the `l4lb` (timeouts, retries, maxconn, a tcplog line per connection).
//!   It runs in the lab's namespace only and dies with the lab. If haproxy
//!   is not installed the bench installs Debian's package, its own service
//!   kept from starting and disabled; only if that fails is the variant
//!   skipped, saying why.
//!
//! Each lab runs every client count once per round; the labs alternate for
//! `--rounds` rounds, every figure is the median of its rounds and every
//! ratio the median of the rounds' ratios, so a burst of other work on the
//! machine moves one round, not the result. Around each run the bench reads
//! the CPU time of every process of the lab (the phone's load generator is
//! this process) and of the machine, and the controllers' counters: CPU per
//! order by part, and how busy the machine was, tell what limits throughput.
//!
//! The client side of every lab (the phone, and vm-lb, which opens the
//! second connection) gets `net.ipv4.tcp_tw_reuse = 1` and the ephemeral
//! ports 1024-65535, in its own namespace, so connections in TIME_WAIT do
//! not run the ports out at thousands of orders a second.

use crate::haproxy;
use crate::lab::{self, write_topology, Daemon, LabGuard, Scratch};
use crate::{cell, finite, median, proc_ticks, TICKS_PER_S};
use anyhow::{bail, Context, Result};
use d11_apps::controller::ControllerReport;
use d11_apps::load::{self, Latency, LoadConfig, LoadReport};
use d11_apps::phone::{self, OrderRequest};
use d11_lab::{RunDir, Topology};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Options of `d11 bench order`.
#[derive(Debug, Clone, clap::Args)]
pub struct OrderBenchArgs {
    /// Concurrent phone-app clients, one run for each count.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,1000")]
    pub clients: Vec<usize>,
    /// Seconds measured in each run (after a one-second warm-up).
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// Rounds of every lab; figures are medians of the rounds.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// The labs to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,full,local,haproxy"
    )]
    pub variants: Vec<Variant>,
    /// Directory holding double11.toml and bench-order-direct.toml.
    #[arg(long, default_value = "netns")]
    pub topologies: PathBuf,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One lab of the comparison.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// The phone and one controller on one veth.
    Direct,
    /// The whole lab with the l4lb and the shop behind the controllers.
    Full,
    /// The whole lab, the controllers recording orders themselves.
    Local,
    /// The whole lab with Debian's haproxy in vm-lb instead of the l4lb.
    Haproxy,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Direct => "direct",
            Variant::Full => "full",
            Variant::Local => "local",
            Variant::Haproxy => "haproxy",
        }
    }
}

/// Issue 18's goals (orders/s): the full path with the controllers alone
/// ≥ 0.5× direct to a controller, the shop's RPC backend ≥ 0.7× the
/// controllers alone on the same path. Its goal for the l4lb (≥ 1.0×
/// haproxy) is on `d11 bench lb`, which measures the balancer: here its
/// share of an order's CPU is small, and the ratio of orders/s moves with
/// the rest of the lab.
const GOAL_LOCAL_VS_DIRECT: f64 = 0.5;
const GOAL_BACKEND_VS_LOCAL: f64 = 0.7;

/// Orders ending in this first stretch of each run are not counted.
const WARMUP: Duration = Duration::from_secs(1);

/// The load balancer node and its VIP side address, as double11.toml has them.
const LB_NODE: &str = "vm-lb";
const LB_LISTEN: &str = "192.168.1.10:443";
const CONTROLLERS: [&str; 2] = ["192.168.1.20:443", "192.168.2.20:443"];

/// Which part of the lab a process is, for CPU per order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Part {
    /// The load generator: this process.
    #[serde(rename = "phone")]
    Phone,
    #[serde(rename = "elements")]
    Elements,
    /// The l4lb or haproxy.
    #[serde(rename = "load balancer")]
    LoadBalancer,
    #[serde(rename = "controllers")]
    Controllers,
    /// The shop's services: registry, order, stock, coupon, db and its standby.
    #[serde(rename = "services")]
    Services,
}

/// CPU used during one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CpuUse {
    pub wall_s: f64,
    /// Cores busy over the run: the whole machine, its softirq, the lab's
    /// processes (and this load generator).
    pub machine_cores_busy: Option<f64>,
    pub softirq_cores: Option<f64>,
    pub lab_cores_busy: Option<f64>,
    /// CPU µs per order made, by part of the lab.
    pub us_per_order: BTreeMap<Part, Option<f64>>,
    pub machine_us_per_order: Option<f64>,
    pub lab_us_per_order: Option<f64>,
    pub cpu_s_by_process: BTreeMap<String, f64>,
    pub element_frames_per_order: Option<f64>,
    pub element_us_per_frame: Option<f64>,
}

/// One client count on one lab in one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub load: LoadReport,
    /// Orders the controllers counted, in all and by controller.
    pub orders_created: u64,
    pub orders_created_by: BTreeMap<String, u64>,
    pub cpu: CpuUse,
    /// The controllers' own time per order (their access log's `us=`).
    pub controller_handler_us: Latency,
}

/// One round: each lab's runs by client count.
pub type Round = BTreeMap<Variant, BTreeMap<usize, Run>>;

/// One lab at one client count: medians of the rounds (errors summed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Figures {
    pub orders_per_s: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub errors: u64,
    pub machine_cores_busy: Option<f64>,
    pub lab_cores_busy: Option<f64>,
    pub element_frames_per_order: Option<f64>,
    pub element_us_per_frame: Option<f64>,
    pub controller_handler_us_p50: Option<f64>,
    pub controller_handler_us_p99: Option<f64>,
    pub softirq_cores: Option<f64>,
    pub machine_us_per_order: Option<f64>,
    pub lab_us_per_order: Option<f64>,
    pub us_per_order: BTreeMap<Part, f64>,
}

/// A ratio by client count, each the median of the rounds' ratios; `None`
/// when one of its two labs did not run.
pub type ByClients = Option<BTreeMap<usize, Option<f64>>>;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Ratios {
    /// The whole path with the backend against direct (the phones table).
    pub full_vs_direct_orders_per_s: ByClients,
    pub full_vs_direct_p50: ByClients,
    /// The whole path, controllers alone, against direct.
    pub local_vs_direct_orders_per_s: ByClients,
    pub local_vs_direct_p50: ByClients,
    pub backend_vs_local_orders_per_s: ByClients,
    pub backend_vs_local_p50: ByClients,
    pub backend_vs_local_orders_per_cpu_s: ByClients,
    pub l4lb_vs_haproxy_orders_per_s: ByClients,
    pub l4lb_vs_haproxy_p50: ByClients,
    /// Orders per CPU-second of the lab's processes: what the runs would
    /// reach with the machine to themselves, so other work on it matters
    /// less (the inverse ratio of CPU per order).
    pub full_vs_direct_orders_per_cpu_s: ByClients,
    pub local_vs_direct_orders_per_cpu_s: ByClients,
    pub l4lb_vs_haproxy_orders_per_cpu_s: ByClients,
    pub l4lb_vs_haproxy_lb_cpu_per_order: ByClients,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Goals {
    pub local_vs_direct_orders_per_s: f64,
    pub backend_vs_local_orders_per_s: f64,
}

impl Default for Goals {
    fn default() -> Goals {
        Goals {
            local_vs_direct_orders_per_s: GOAL_LOCAL_VS_DIRECT,
            backend_vs_local_orders_per_s: GOAL_BACKEND_VS_LOCAL,
        }
    }
}

/// How the bench ran.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub clients: Vec<usize>,
    pub seconds: u32,
    pub warmup_s: f64,
    pub rounds: u32,
    pub cpus: usize,
}

/// What `d11 bench order` measures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OrderReport {
    pub variants: BTreeMap<Variant, BTreeMap<usize, Figures>>,
    pub ratios: Ratios,
    pub goals: Goals,
    pub rounds: Vec<Round>,
    pub config: Config,
    /// Labs that could not run (haproxy not installed and not installable).
    pub skipped: Vec<String>,
}

impl OrderReport {
    /// `variant`'s figures at `n` clients, if it ran.
    pub fn at(&self, variant: Variant, n: usize) -> Option<&Figures> {
        self.variants.get(&variant)?.get(&n)
    }
}

/// `d11 bench order`.
pub fn order(args: &OrderBenchArgs) -> Result<()> {
    crate::need_root("d11 bench order")?;
    let exe = lab::d11_exe()?;
    let mut variants: Vec<Variant> = vec![];
    for v in &args.variants {
        if !variants.contains(v) {
            variants.push(*v);
        }
    }
    let mut skipped = vec![];
    let mut haproxy = None;
    if variants.contains(&Variant::Haproxy) {
        match haproxy::find_or_install() {
            Ok(p) => haproxy = Some(p),
            Err(why) => {
                eprintln!("bench: the haproxy variant is skipped: {why}");
                variants.retain(|v| *v != Variant::Haproxy);
                skipped.push("haproxy".to_string());
            }
        }
    }
    let clients: Vec<usize> = args.clients.iter().map(|&n| n.max(1)).collect();
    let scratch = Scratch::new("order")?;
    let rounds = run_rounds(
        args,
        &exe,
        &variants,
        &clients,
        haproxy.as_deref(),
        &scratch.0,
    )?;
    drop(scratch);
    let mut report = summarise(rounds, &variants, &clients);
    report.config = Config {
        clients,
        seconds: args.seconds,
        warmup_s: WARMUP.as_secs_f64(),
        rounds: args.rounds.max(1),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
    };
    report.skipped = skipped;
    print_report(&report, &variants);
    crate::write_json(args.json.as_deref(), &report)
}

fn run_rounds(
    args: &OrderBenchArgs,
    exe: &Path,
    variants: &[Variant],
    clients: &[usize],
    haproxy: Option<&Path>,
    scratch: &Path,
) -> Result<Vec<Round>> {
    let full = with_stock(Topology::load(&args.topologies.join("double11.toml"))?);
    let write = |name: &str, topo: Topology| write_topology(scratch, name, &topo);
    let mut files = vec![];
    for v in variants {
        files.push(match v {
            Variant::Direct => args.topologies.join("bench-order-direct.toml"),
            Variant::Full => write("double11.toml", full.clone())?,
            Variant::Local => write("double11-local.toml", without_order_service(full.clone()))?,
            Variant::Haproxy => write("double11-haproxy.toml", without_lb_app(full.clone())?)?,
        });
    }
    let mut rounds = vec![];
    for round in 1..=args.rounds.max(1) {
        let mut results = Round::new();
        for (v, file) in variants.iter().zip(&files) {
            eprintln!("bench: round {round}, {} ({})", v.name(), file.display());
            let r = run_lab(exe, *v, file, haproxy, clients, args.seconds)
                .with_context(|| format!("variant {}", v.name()))?;
            results.insert(*v, r);
        }
        rounds.push(results);
    }
    Ok(rounds)
}

/// The topology with vm-lb's app (the l4lb) and its settings taken out,
/// for a load balancer started by hand.
fn without_lb_app(mut topo: Topology) -> Result<Topology> {
    let lb = topo
        .nodes
        .iter_mut()
        .find(|n| n.name == LB_NODE)
        .with_context(|| format!("the topology has no {LB_NODE}"))?;
    lb.app = None;
    lb.config = toml::Table::new();
    Ok(topo)
}

/// Stock the seed gives each SKU in a benchmark: no run sells out.
const BENCH_STOCK: i64 = 1_000_000_000;

/// The topology with every seeded SKU at [`BENCH_STOCK`].
pub fn with_stock(mut topo: Topology) -> Topology {
    for n in &mut topo.nodes {
        let rows = n.config.get_mut("seed").and_then(|s| s.get_mut("stock"));
        for row in rows
            .and_then(toml::Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(t) = row.as_table_mut() {
                t.insert("stock".into(), BENCH_STOCK.into());
            }
        }
    }
    topo
}

/// The topology with the controllers recording orders themselves.
fn without_order_service(mut topo: Topology) -> Topology {
    for n in &mut topo.nodes {
        if n.app.as_deref() == Some("controller") {
            n.config.remove("order_service");
        }
    }
    topo
}

/// haproxy in vm-lb, configured for double11's two controllers.
fn start_haproxy(lab: &LabGuard, program: &Path, dir: &RunDir) -> Result<Daemon> {
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(&cfg, haproxy_config()).with_context(|| format!("writing {}", cfg.display()))?;
    let log = dir.logs_dir().join(format!("{LB_NODE}-haproxy.log"));
    haproxy::start(lab.exec(LB_NODE, &[]), program, &cfg, &log)
}

/// [`haproxy::config`] from vm-lb's address to both controllers, with
/// haproxy's own default of threads.
fn haproxy_config() -> String {
    let servers: Vec<SocketAddr> = CONTROLLERS.iter().filter_map(|a| a.parse().ok()).collect();
    haproxy::config("d11 bench order", LB_LISTEN, &servers, None)
}

fn run_lab(
    exe: &Path,
    v: Variant,
    topology: &Path,
    haproxy: Option<&Path>,
    clients: &[usize],
    seconds: u32,
) -> Result<BTreeMap<usize, Run>> {
    let (lab, _) = LabGuard::up(exe, topology, &format!("bench-order-{}", v.name()))?;
    let dir = RunDir::new(&lab.name);
    let topo = dir.topology().context("reading the lab's topology")?;
    for node in ["ue", LB_NODE] {
        if topo.node(node).is_some() {
            lab::tune_client_side(&d11_lab::netns_name(&lab.name, node))?;
        }
    }
    let lb = match (v, haproxy) {
        (Variant::Haproxy, Some(p)) => Some(start_haproxy(&lab, p, &dir)?),
        _ => None,
    };
    let req = order_request(&lab.name, &dir)?;
    wait_for_an_order(&lab.name, &req)?;
    let mut runs = BTreeMap::new();
    for &n in clients {
        let before = Snapshot::take(&dir, lb.as_ref())?;
        let t0 = Instant::now();
        let report = in_netns(&lab.name, "ue", async {
            load::run(&LoadConfig {
                request: req.clone(),
                clients: n,
                warmup: WARMUP,
                duration: Duration::from_secs(u64::from(seconds.max(1))),
            })
            .await
        })??;
        let wall = t0.elapsed().as_secs_f64();
        let after = Snapshot::take(&dir, lb.as_ref())?;
        let by: BTreeMap<String, u64> = after
            .orders_created
            .iter()
            .map(|(node, n1)| {
                let n0 = before.orders_created.get(node).copied().unwrap_or(0);
                (node.clone(), n1.saturating_sub(n0))
            })
            .collect();
        let made: u64 = by.values().sum();
        eprintln!(
            "bench:   {} clients: {:.0} orders/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
            n, report.orders_per_s, report.latency_ms.p50, report.latency_ms.p99, report.errors
        );
        runs.insert(
            n,
            Run {
                load: report,
                orders_created: made,
                orders_created_by: by,
                cpu: after.cpu_since(&before, wall, made),
                controller_handler_us: after.handler_us_since(&before),
            },
        );
    }
    drop(lb);
    Ok(runs)
}

/// The story's order to the shop's name as the phone resolves it (its hosts file, then its resolver).
fn order_request(lab: &str, dir: &RunDir) -> Result<OrderRequest> {
    let host = "www.geektime.com";
    let files = d11_apps::dns::stub::StubFiles {
        hosts: d11_lab::netns_hosts_file(lab, "ue"),
        resolv: d11_lab::netns_resolv_file(lab, "ue"),
    };
    let netns = d11_lab::netns_name(lab, "ue");
    let resolved = d11_apps::dns::stub::lookup_in(&netns, &files, host)
        .with_context(|| format!("ue resolving {host}"))?;
    let ip = *resolved.addrs.first().context("no address")?;
    Ok(OrderRequest {
        host: host.into(),
        addr: SocketAddr::from((ip, 443)),
        root: d11_apps::pki::PkiPaths::new(dir.pki_dir()).root_cert(),
        key_log: false,
        idempotency_key: String::new(),
        body: phone::story_order(),
        retries: 0,
        timeout: Duration::from_secs(5),
    })
}

/// Runs `fut` on a runtime whose threads live in `node`'s namespace.
fn in_netns<T>(lab: &str, node: &str, fut: impl std::future::Future<Output = T>) -> Result<T> {
    let _netns = d11_io::NetnsGuard::enter(&d11_lab::netns_name(lab, node))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    Ok(rt.block_on(fut))
}

/// Single orders until one is answered 2xx (the apps, ARP, NAT entries and
/// the load balancer's checks are all ready), for at most 20 s.
fn wait_for_an_order(lab: &str, req: &OrderRequest) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < deadline {
        let mut r = req.clone();
        r.idempotency_key = phone::new_idempotency_key();
        match in_netns(lab, "ue", phone::order(&r))? {
            Ok(out) if (200..300).contains(&out.status) => return Ok(()),
            Ok(out) => last = format!("HTTP {}", out.status),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("no order went through in 20 s: {last}")
}

/// CPU times and order counters at one moment.
struct Snapshot {
    /// (process, its part, CPU ticks so far).
    procs: Vec<(String, Part, u64)>,
    /// The machine's busy and softirq ticks, all CPUs.
    busy: u64,
    softirq: u64,
    /// Orders each controller counted.
    orders_created: BTreeMap<String, u64>,
    /// Frames the elements received, all ports.
    element_frames: u64,
    /// Each controller's log and its length.
    logs: Vec<(PathBuf, u64)>,
}

impl Snapshot {
    fn take(dir: &RunDir, haproxy: Option<&Daemon>) -> Result<Snapshot> {
        let mut procs = vec![(
            "phone".to_string(),
            Part::Phone,
            proc_ticks(std::process::id()).context("reading /proc/self/stat")?,
        )];
        let topo = dir.topology()?;
        let state = d11_lab::SupervisorState::load(dir)?;
        let (mut orders_created, mut element_frames, mut logs) = (BTreeMap::new(), 0, vec![]);
        let status = |node: &str| d11_io::status(&dir.socket(node), Duration::from_secs(2));
        for (node, s) in &state.nodes {
            let Some(pid) = s.pid else { continue };
            let part = match topo.node(node).and_then(|n| n.app.as_deref()) {
                Some("controller") => {
                    let report: ControllerReport = status(node)?
                        .report()
                        .with_context(|| format!("{node}'s report"))?;
                    orders_created.insert(node.clone(), report.orders_created);
                    let log = dir.log_file(node);
                    let len = std::fs::metadata(&log).map_or(0, |m| m.len());
                    logs.push((log, len));
                    Part::Controllers
                }
                Some("l4lb") => Part::LoadBalancer,
                Some(_) => Part::Services,
                None => {
                    let st = status(node)?;
                    element_frames += st
                        .ports
                        .iter()
                        .map(|(_, p)| p.counters.rx_frames)
                        .sum::<u64>();
                    Part::Elements
                }
            };
            procs.push((node.clone(), part, proc_ticks(pid).unwrap_or(0)));
        }
        if let Some(h) = haproxy {
            procs.push((
                format!("{LB_NODE} (haproxy)"),
                Part::LoadBalancer,
                proc_ticks(h.pid()).unwrap_or(0),
            ));
        }
        let (busy, softirq) = machine_ticks().context("reading /proc/stat")?;
        Ok(Snapshot {
            procs,
            busy,
            softirq,
            orders_created,
            element_frames,
            logs,
        })
    }

    /// CPU used since `before`: cores busy over `wall` seconds, and per
    /// order (`orders` made in between, every one counted or not) by part.
    fn cpu_since(&self, before: &Snapshot, wall: f64, orders: u64) -> CpuUse {
        let secs = |ticks: u64| ticks as f64 / TICKS_PER_S;
        let per_order_us = |ticks: u64| (orders > 0).then(|| secs(ticks) * 1e6 / orders as f64);
        let mut parts: BTreeMap<Part, u64> = BTreeMap::new();
        let mut by_process = BTreeMap::new();
        let mut total = 0;
        for (name, part, t1) in &self.procs {
            let t0 = before
                .procs
                .iter()
                .find(|(n, _, _)| n == name)
                .map_or(0, |(_, _, t)| *t);
            let used = t1.saturating_sub(t0);
            total += used;
            by_process.insert(name.clone(), secs(used));
            *parts.entry(*part).or_insert(0) += used;
        }
        let busy = self.busy.saturating_sub(before.busy);
        let softirq = self.softirq.saturating_sub(before.softirq);
        let frames = self.element_frames.saturating_sub(before.element_frames);
        let element_ticks = parts.get(&Part::Elements).copied().unwrap_or(0);
        CpuUse {
            wall_s: wall,
            machine_cores_busy: finite(secs(busy) / wall),
            softirq_cores: finite(secs(softirq) / wall),
            lab_cores_busy: finite(secs(total) / wall),
            us_per_order: parts.iter().map(|(p, t)| (*p, per_order_us(*t))).collect(),
            machine_us_per_order: per_order_us(busy),
            lab_us_per_order: per_order_us(total),
            cpu_s_by_process: by_process,
            element_frames_per_order: (orders > 0 && frames > 0)
                .then(|| frames as f64 / orders as f64),
            element_us_per_frame: (frames > 0).then(|| secs(element_ticks) * 1e6 / frames as f64),
        }
    }

    /// The controllers' handler times (`us=` of their access log lines for
    /// 201s) logged since `before`: what the controller spends on one order
    /// after TLS, the SQLite insert and commit included.
    fn handler_us_since(&self, before: &Snapshot) -> Latency {
        let mut us = vec![];
        for (log, _) in &self.logs {
            let from = before
                .logs
                .iter()
                .find(|(l, _)| l == log)
                .map_or(0, |(_, n)| *n);
            let Ok(text) = std::fs::read(log) else {
                continue;
            };
            let text = String::from_utf8_lossy(text.get(from as usize..).unwrap_or_default());
            us.extend(
                text.lines()
                    .filter(|l| l.contains(" status=201 "))
                    .filter_map(|l| {
                        l.split_whitespace()
                            .find_map(|w| w.strip_prefix("us="))?
                            .parse::<f64>()
                            .ok()
                    }),
            );
        }
        Latency::of(&mut us)
    }
}

/// (busy, softirq) ticks of the machine from /proc/stat's `cpu` line.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7)?;
    Some((busy, *v.get(6)?))
}

/// Medians over the rounds, and the ratios the issue asks for.
fn summarise(rounds: Vec<Round>, variants: &[Variant], clients: &[usize]) -> OrderReport {
    let nan = |x: Option<f64>| x.unwrap_or(f64::NAN);
    let get = |r: &Round, v: Variant, n: usize, f: &dyn Fn(&Run) -> Option<f64>| {
        nan(r.get(&v).and_then(|runs| runs.get(&n)).and_then(f))
    };
    let over = |v: Variant, n: usize, f: &dyn Fn(&Run) -> Option<f64>| {
        finite(median(rounds.iter().map(|r| get(r, v, n, f)).collect()))
    };
    let orders_per_s = |r: &Run| Some(r.load.orders_per_s);
    let p50 = |r: &Run| Some(r.load.latency_ms.p50);
    let lab_us = |r: &Run| r.cpu.lab_us_per_order;
    let mut out = BTreeMap::new();
    for &v in variants {
        let mut per_n = BTreeMap::new();
        for &n in clients {
            let errors: u64 = rounds
                .iter()
                .filter_map(|r| r.get(&v)?.get(&n))
                .map(|run| run.load.errors)
                .sum();
            let mut us = BTreeMap::new();
            for part in [
                Part::Phone,
                Part::Elements,
                Part::LoadBalancer,
                Part::Controllers,
                Part::Services,
            ] {
                if let Some(x) = over(v, n, &|r| r.cpu.us_per_order.get(&part).copied().flatten()) {
                    us.insert(part, x);
                }
            }
            per_n.insert(
                n,
                Figures {
                    orders_per_s: over(v, n, &orders_per_s),
                    p50_ms: over(v, n, &p50),
                    p99_ms: over(v, n, &|r| Some(r.load.latency_ms.p99)),
                    errors,
                    machine_cores_busy: over(v, n, &|r| r.cpu.machine_cores_busy),
                    lab_cores_busy: over(v, n, &|r| r.cpu.lab_cores_busy),
                    element_frames_per_order: over(v, n, &|r| r.cpu.element_frames_per_order),
                    element_us_per_frame: over(v, n, &|r| r.cpu.element_us_per_frame),
                    controller_handler_us_p50: over(v, n, &|r| Some(r.controller_handler_us.p50)),
                    controller_handler_us_p99: over(v, n, &|r| Some(r.controller_handler_us.p99)),
                    softirq_cores: over(v, n, &|r| r.cpu.softirq_cores),
                    machine_us_per_order: over(v, n, &|r| r.cpu.machine_us_per_order),
                    lab_us_per_order: over(v, n, &lab_us),
                    us_per_order: us,
                },
            );
        }
        out.insert(v, per_n);
    }
    // Each ratio is the median over the rounds of that round's ratio.
    let ratio = |a: Variant, b: Variant, f: &dyn Fn(&Run) -> Option<f64>| -> ByClients {
        if !variants.contains(&a) || !variants.contains(&b) || a == b {
            return None;
        }
        Some(
            clients
                .iter()
                .map(|&n| {
                    let each = rounds.iter().map(|r| get(r, a, n, f) / get(r, b, n, f));
                    (n, finite(median(each.collect())))
                })
                .collect(),
        )
    };
    let lb_us = |r: &Run| {
        r.cpu
            .us_per_order
            .get(&Part::LoadBalancer)
            .copied()
            .flatten()
    };
    use Variant::{Direct, Full, Haproxy, Local};
    let ratios = Ratios {
        full_vs_direct_orders_per_s: ratio(Full, Direct, &orders_per_s),
        full_vs_direct_p50: ratio(Full, Direct, &p50),
        local_vs_direct_orders_per_s: ratio(Local, Direct, &orders_per_s),
        local_vs_direct_p50: ratio(Local, Direct, &p50),
        backend_vs_local_orders_per_s: ratio(Full, Local, &orders_per_s),
        backend_vs_local_p50: ratio(Full, Local, &p50),
        backend_vs_local_orders_per_cpu_s: ratio(Local, Full, &lab_us),
        l4lb_vs_haproxy_orders_per_s: ratio(Full, Haproxy, &orders_per_s),
        l4lb_vs_haproxy_p50: ratio(Full, Haproxy, &p50),
        full_vs_direct_orders_per_cpu_s: ratio(Direct, Full, &lab_us),
        local_vs_direct_orders_per_cpu_s: ratio(Direct, Local, &lab_us),
        l4lb_vs_haproxy_orders_per_cpu_s: ratio(Haproxy, Full, &lab_us),
        l4lb_vs_haproxy_lb_cpu_per_order: ratio(Full, Haproxy, &lb_us),
    };
    OrderReport {
        variants: out,
        ratios,
        goals: Goals::default(),
        rounds,
        ..OrderReport::default()
    }
}

fn print_report(r: &OrderReport, variants: &[Variant]) {
    let what = |v: Variant| match v {
        Variant::Direct => "ue ──veth── vm-ctl, no elements",
        Variant::Full => "double11: the whole path, l4lb in vm-lb, the shop's RPC backend",
        Variant::Local => "double11: the whole path, controllers recording orders themselves",
        Variant::Haproxy => "double11: the whole path, Debian's haproxy in vm-lb",
    };
    let clients = &r.config.clients;
    let none = Figures::default();
    for &v in variants {
        println!("\n{} ({})", v.name(), what(v));
        println!(
            "{:>7} {:>9} {:>8} {:>8} {:>6}  {:>4} {:>7}  CPU µs per order: {:>5} {:>8} {:>5} {:>5} {:>6} {:>7}",
            "clients",
            "orders/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "lab",
            "machine",
            "phone",
            "elements",
            "lb",
            "ctl",
            "svc",
            "all"
        );
        for &n in clients {
            let x = r.at(v, n).unwrap_or(&none);
            let us = |part: Part| cell(x.us_per_order.get(&part).copied(), 0);
            println!(
                "{:>7} {:>9} {:>8} {:>8} {:>6}  {:>4} {:>7} {:>23} {:>8} {:>5} {:>5} {:>6} {:>7}",
                n,
                cell(x.orders_per_s, 0),
                cell(x.p50_ms, 2),
                cell(x.p99_ms, 2),
                x.errors,
                cell(x.lab_cores_busy, 2),
                cell(x.machine_cores_busy, 2),
                us(Part::Phone),
                us(Part::Elements),
                us(Part::LoadBalancer),
                us(Part::Controllers),
                us(Part::Services),
                cell(x.lab_us_per_order, 0),
            );
        }
        for &n in clients {
            let x = r.at(v, n).unwrap_or(&none);
            let elements = match x.element_frames_per_order {
                Some(f) => format!(
                    "elements {f:.0} frames per order at {} µs CPU per frame; ",
                    cell(x.element_us_per_frame, 1)
                ),
                None => String::new(),
            };
            println!(
                "{:>7}: {elements}controller handler (after TLS, SQLite insert and commit included) p50 {} µs, p99 {} µs",
                n,
                cell(x.controller_handler_us_p50, 0),
                cell(x.controller_handler_us_p99, 0),
            );
        }
    }
    println!();
    let q = &r.ratios;
    for (per_n, goal, text) in [
        (
            &q.local_vs_direct_orders_per_s,
            Some(GOAL_LOCAL_VS_DIRECT),
            "orders/s, full path with the controllers alone / direct",
        ),
        (
            &q.local_vs_direct_p50,
            None,
            "p50 latency, full path with the controllers alone / direct",
        ),
        (
            &q.backend_vs_local_orders_per_s,
            Some(GOAL_BACKEND_VS_LOCAL),
            "orders/s, with the shop's RPC backend / controller-only (same full path)",
        ),
        (
            &q.backend_vs_local_p50,
            None,
            "p50 latency, with the backend / controller-only",
        ),
        (
            &q.full_vs_direct_orders_per_s,
            None,
            "orders/s, full path with the backend / direct",
        ),
        (
            &q.l4lb_vs_haproxy_orders_per_s,
            None,
            "orders/s, l4lb / haproxy (same full path)",
        ),
        (&q.l4lb_vs_haproxy_p50, None, "p50 latency, l4lb / haproxy"),
        (
            &q.local_vs_direct_orders_per_cpu_s,
            None,
            "orders per CPU-second of the lab, controllers alone / direct",
        ),
        (
            &q.backend_vs_local_orders_per_cpu_s,
            None,
            "orders per CPU-second of the lab, with the backend / controller-only",
        ),
        (
            &q.l4lb_vs_haproxy_orders_per_cpu_s,
            None,
            "orders per CPU-second of the lab, l4lb / haproxy",
        ),
        (
            &q.l4lb_vs_haproxy_lb_cpu_per_order,
            None,
            "load balancer's own CPU per order, l4lb / haproxy",
        ),
    ] {
        let Some(per_n) = per_n else {
            continue;
        };
        let list: Vec<String> = clients
            .iter()
            .map(|n| format!("{n}: {}x", cell(per_n.get(n).copied().flatten(), 2)))
            .collect();
        let verdict = goal.map_or(String::new(), |g| {
            let met = per_n.values().all(|x| x.is_some_and(|x| x >= g));
            format!(
                "  (goal >= {g:.1}x: {})",
                if met { "met" } else { "missed" }
            )
        });
        println!("{text}, by clients: {}{verdict}", list.join(", "));
    }
    if !r.skipped.is_empty() {
        println!(
            "skipped: {} (not installed, and installing failed)",
            r.skipped.join(", ")
        );
    }
    println!(
        "lab / machine: cores busy during the runs, the lab's processes (and this load \
         generator) / the whole machine of {} CPUs, softirq and other work included. CPU µs per \
         order: each part's CPU time over every order made in the run (phone = the load \
         generator, lb = l4lb or haproxy, ctl = both controllers, SQLite included when local; \
         svc = the shop's services (registry, order, stock, coupon, db and its standby); all = the \
         lab's processes together, whose inverse is orders per CPU-second).",
        r.config.cpus
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn double11() -> Topology {
        Topology::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../netns/double11.toml"
        )))
        .unwrap()
    }

    #[test]
    fn the_haproxy_lab_is_double11_without_the_l4lb_and_nothing_else() {
        let text = toml::to_string(&without_lb_app(double11()).unwrap()).unwrap();
        let changed = Topology::parse(&text, "double11-haproxy.toml").unwrap();
        let lb = changed.node(LB_NODE).unwrap();
        assert_eq!(lb.app, None);
        assert!(lb.config.is_empty());
        let orig = double11();
        assert_eq!(changed.nodes.len(), orig.nodes.len());
        for (a, b) in changed.nodes.iter().zip(&orig.nodes) {
            if a.name != LB_NODE {
                assert_eq!(a, b);
            } else {
                assert_eq!(a.ports, b.ports);
            }
        }
        assert_eq!(changed.wires, orig.wires);
        assert_eq!(changed.pki, orig.pki);
    }

    #[test]
    fn the_local_lab_has_controllers_without_the_order_service_and_stock_for_any_run() {
        let text = toml::to_string(&without_order_service(with_stock(double11()))).unwrap();
        let changed = Topology::parse(&text, "double11-local.toml").unwrap();
        let orig = double11();
        for (a, b) in changed.nodes.iter().zip(&orig.nodes) {
            match (a.app.as_deref(), a.name.as_str()) {
                (Some("controller"), _) => {
                    assert!(b.config.contains_key("order_service"), "{}", b.name);
                    assert!(!a.config.contains_key("order_service"), "{}", a.name);
                }
                (_, "vm-db") => {
                    let stock = &a.config["seed"]["stock"][0]["stock"];
                    assert_eq!(stock.as_integer(), Some(BENCH_STOCK));
                }
                _ => assert_eq!(a, b),
            }
        }
    }

    #[test]
    fn haproxy_balances_both_controllers_of_double11_from_the_lb_address() {
        let orig = double11();
        let lb = orig.node(LB_NODE).unwrap();
        let addr = lb.ports[0].address.unwrap().to_string();
        assert!(LB_LISTEN.starts_with(addr.split('/').next().unwrap()));
        let backends: Vec<String> = lb.config["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_str().unwrap().to_string())
            .collect();
        assert_eq!(backends, CONTROLLERS);
        let cfg = haproxy_config();
        for line in [
            "mode tcp",
            "balance roundrobin",
            &format!("bind {LB_LISTEN}"),
            "server ctl1 192.168.1.20:443 check",
            "server ctl2 192.168.2.20:443 check",
        ] {
            assert!(cfg.contains(line), "{line:?} in\n{cfg}");
        }
    }

    #[test]
    fn the_direct_lab_is_two_hosts_on_one_veth_the_phone_resolving_the_controller() {
        let t = Topology::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../netns/bench-order-direct.toml"
        )))
        .unwrap();
        assert!(t.elements().is_empty());
        assert_eq!(t.wires.len(), 1);
        let ctl = t.node("vm-ctl").unwrap();
        assert_eq!(ctl.app.as_deref(), Some("controller"));
        let ue = t.node("ue").unwrap();
        let ip = ctl.ports[0].address.unwrap().to_string();
        assert_eq!(
            ue.hosts[0].address.to_string(),
            ip.split('/').next().unwrap()
        );
        assert_eq!(ue.hosts[0].name, "www.geektime.com");
    }

    fn run(orders_per_s: f64, lab_us: f64) -> Run {
        Run {
            load: LoadReport {
                clients: 1,
                seconds: 1.0,
                orders: orders_per_s as u64,
                errors: 1,
                error_kinds: BTreeMap::new(),
                orders_per_s,
                latency_ms: Latency {
                    p50: 1000.0 / orders_per_s,
                    ..Latency::default()
                },
            },
            orders_created: 0,
            orders_created_by: BTreeMap::new(),
            cpu: CpuUse {
                lab_us_per_order: Some(lab_us),
                us_per_order: [(Part::LoadBalancer, Some(lab_us / 10.0))].into(),
                ..CpuUse::default()
            },
            controller_handler_us: Latency::default(),
        }
    }

    #[test]
    fn figures_are_medians_of_the_rounds_and_ratios_medians_of_each_rounds_ratio() {
        let round = |direct: f64, full: f64| -> Round {
            [
                (Variant::Direct, [(8, run(direct, 100.0))].into()),
                (Variant::Full, [(8, run(full, 400.0))].into()),
            ]
            .into()
        };
        // The second round's direct lab was slow: its ratio is the outlier.
        let rounds = vec![
            round(1000.0, 400.0),
            round(500.0, 450.0),
            round(1000.0, 420.0),
        ];
        let r = summarise(rounds, &[Variant::Direct, Variant::Full], &[8]);
        let full = r.at(Variant::Full, 8).unwrap();
        assert_eq!(full.orders_per_s, Some(420.0));
        assert_eq!(full.errors, 3);
        assert_eq!(full.us_per_order[&Part::LoadBalancer], 40.0);
        let q = r.ratios.full_vs_direct_orders_per_s.as_ref().unwrap();
        assert_eq!(q[&8], Some(0.42));
        assert_eq!(
            r.ratios.full_vs_direct_orders_per_cpu_s.as_ref().unwrap()[&8],
            Some(0.25)
        );
        // No haproxy lab: no ratio against it (null in JSON), not a NaN.
        assert_eq!(r.ratios.l4lb_vs_haproxy_orders_per_s, None);
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains(r#""load balancer":40.0"#), "{text}");
        let back: OrderReport = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
    }
}
