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

use crate::bench::{median, LabGuard};
use anyhow::{bail, Context, Result};
use d11_apps::load::{self, Latency, LoadConfig};
use d11_apps::phone::{self, OrderRequest};
use d11_lab::{RunDir, Topology};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Options of `d11 bench order`.
#[derive(Debug, clap::Args)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
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
    fn name(self) -> &'static str {
        match self {
            Variant::Direct => "direct",
            Variant::Full => "full",
            Variant::Local => "local",
            Variant::Haproxy => "haproxy",
        }
    }
}

/// The goals: full path ≥ 0.5× direct, l4lb ≥ 1.0× haproxy (orders/s).
const GOAL_FULL_VS_DIRECT: f64 = 0.5;
const GOAL_L4LB_VS_HAPROXY: f64 = 1.0;

/// Orders ending in this first stretch of each run are not counted.
const WARMUP: Duration = Duration::from_secs(1);

/// Linux's USER_HZ: the unit of CPU times in /proc/PID/stat and /proc/stat.
const TICKS_PER_S: f64 = 100.0;

/// The load balancer node and its VIP side address, as double11.toml has them.
const LB_NODE: &str = "vm-lb";
const LB_LISTEN: &str = "192.168.1.10:443";
const CONTROLLERS: [&str; 2] = ["192.168.1.20:443", "192.168.2.20:443"];

pub fn order(args: &OrderBenchArgs) -> Result<()> {
    crate::need_root("d11 bench order")?;
    let exe = std::env::current_exe().context("cannot find the d11 binary")?;
    let mut variants: Vec<Variant> = vec![];
    for v in &args.variants {
        if !variants.contains(v) {
            variants.push(*v);
        }
    }
    let mut skipped = vec![];
    let mut haproxy = None;
    if variants.contains(&Variant::Haproxy) {
        match find_or_install_haproxy() {
            Ok(p) => haproxy = Some(p),
            Err(why) => {
                eprintln!("bench: the haproxy variant is skipped: {why}");
                variants.retain(|v| *v != Variant::Haproxy);
                skipped.push("haproxy");
            }
        }
    }
    let clients: Vec<usize> = args.clients.iter().map(|&n| n.max(1)).collect();
    let scratch = Scratch::new()?;
    let rounds = run_rounds(
        args,
        &exe,
        &variants,
        &clients,
        haproxy.as_deref(),
        &scratch.0,
    )?;
    drop(scratch);
    let mut report = summarise(&rounds, &variants, &clients);
    report["config"] = json!({
        "clients": clients,
        "seconds": args.seconds,
        "warmup_s": WARMUP.as_secs_f64(),
        "rounds": args.rounds.max(1),
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
    });
    report["skipped"] = json!(skipped);
    print_report(&report, &variants, &clients);
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// A directory for this run's files, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("d11-bench-order-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run_rounds(
    args: &OrderBenchArgs,
    exe: &Path,
    variants: &[Variant],
    clients: &[usize],
    haproxy: Option<&Path>,
    scratch: &Path,
) -> Result<Vec<serde_json::Map<String, Value>>> {
    let full = with_stock(Topology::load(&args.topologies.join("double11.toml"))?);
    let write = |name: &str, topo: Topology| -> Result<PathBuf> {
        let p = scratch.join(name);
        let text = toml::to_string(&topo).context("writing the topology as TOML")?;
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        Ok(p)
    };
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
        let mut results = serde_json::Map::new();
        for (v, file) in variants.iter().zip(&files) {
            eprintln!("bench: round {round}, {} ({})", v.name(), file.display());
            let r = run_lab(exe, *v, file, haproxy, clients, args.seconds)
                .with_context(|| format!("variant {}", v.name()))?;
            results.insert(v.name().to_string(), r);
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
pub(crate) fn with_stock(mut topo: Topology) -> Topology {
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

/// `name` in the PATH or an sbin directory.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// haproxy's path; if it is missing, Debian's package installed now (the
/// bench runs as root). The package's own service must not run on the
/// machine: it is kept from starting during the install (`policy-rc.d`
/// answering 101, unless one is already in place) and disabled after it
/// (`systemctl disable --now` and `mask` under systemd, `update-rc.d
/// disable` and `service stop` otherwise). The bench starts its own haproxy
/// in vm-lb only.
fn find_or_install_haproxy() -> Result<PathBuf, String> {
    if let Some(p) = find_program("haproxy") {
        return Ok(p);
    }
    eprintln!("bench: haproxy is not installed: installing Debian's package (its service kept stopped and disabled)");
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists();
    if ours {
        use std::os::unix::fs::PermissionsExt;
        let text = "#!/bin/sh\n# d11 bench order: no service starts while haproxy is installed\nexit 101\n";
        std::fs::write(policy, text)
            .and_then(|()| std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755)))
            .map_err(|e| format!("writing {}: {e}", policy.display()))?;
    }
    let apt = |args: &[&str]| {
        std::process::Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .output()
    };
    let install = ["install", "-y", "--no-install-recommends", "haproxy"];
    let mut out = apt(&install);
    if !out.as_ref().is_ok_and(|o| o.status.success()) {
        // A fresh machine has no package lists yet.
        let _ = apt(&["update"]);
        out = apt(&install);
    }
    if ours {
        let _ = std::fs::remove_file(policy);
    }
    let quiet = |program: &str, args: &[&str]| {
        let _ = std::process::Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    };
    if Path::new("/run/systemd/system").exists() {
        quiet("systemctl", &["disable", "--now", "haproxy.service"]);
        quiet("systemctl", &["mask", "haproxy.service"]);
    } else {
        quiet("update-rc.d", &["haproxy", "disable"]);
        quiet("service", &["haproxy", "stop"]);
    }
    match (find_program("haproxy"), out) {
        (Some(p), _) => Ok(p),
        (None, Ok(o)) => Err(format!(
            "apt-get install haproxy failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        (None, Err(e)) => Err(format!("cannot run apt-get: {e}")),
    }
}

/// HAProxy's configuration for vm-lb: what the l4lb does with its defaults
/// (d11_apps::l4lb::L4lbConfig) — `mode tcp`, round robin over both
/// controllers with health checks (inter 2s rise 2 fall 3), connect timeout
/// 2 s, idle timeouts 30 s, 2 retries on another server, maxconn 4096 — and
/// a tcplog line per connection on stdout, as the l4lb logs one.
fn haproxy_config() -> String {
    let servers: String = CONTROLLERS
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            format!(
                "    server ctl{} {addr} check inter 2s rise 2 fall 3\n",
                i + 1
            )
        })
        .collect();
    format!(
        "# d11 bench order: Debian's haproxy in place of the l4lb in {LB_NODE}.
global
    maxconn 4096
    log stdout format raw local0 info

defaults
    mode tcp
    log global
    option tcplog
    option redispatch
    retries 2
    timeout connect 2s
    timeout client 30s
    timeout server 30s

frontend www
    bind {LB_LISTEN}
    default_backend ctl

backend ctl
    balance roundrobin
{servers}"
    )
}

/// haproxy running in vm-lb, killed and reaped when dropped (`d11 down`
/// would kill it too: it is a process of the lab's namespace).
struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_haproxy(lab: &LabGuard, program: &Path, dir: &RunDir) -> Result<Haproxy> {
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(&cfg, haproxy_config()).with_context(|| format!("writing {}", cfg.display()))?;
    let log = dir.logs_dir().join(format!("{LB_NODE}-haproxy.log"));
    let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    let (program, cfg) = (program.to_string_lossy(), cfg.to_string_lossy());
    // -db: in the foreground, so the child is haproxy itself (`ip netns
    // exec` execs it) and its log goes to the file.
    let child = lab
        .exec(LB_NODE, &[&program, "-db", "-f", &cfg])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .context("starting haproxy in vm-lb")?;
    let mut h = Haproxy(child);
    std::thread::sleep(Duration::from_millis(300));
    if let Some(status) = h.0.try_wait()? {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        bail!("haproxy exited ({status}): {}", text.trim());
    }
    Ok(h)
}

fn run_lab(
    exe: &Path,
    v: Variant,
    topology: &Path,
    haproxy: Option<&Path>,
    clients: &[usize],
    seconds: u32,
) -> Result<Value> {
    let (lab, _) = LabGuard::up(exe, topology, &format!("bench-order-{}", v.name()))?;
    let dir = RunDir::new(&lab.name);
    let topo = dir.topology().context("reading the lab's topology")?;
    for node in ["ue", LB_NODE] {
        if topo.node(node).is_some() {
            tune_client_side(&lab.name, node)?;
        }
    }
    let lb = match (v, haproxy) {
        (Variant::Haproxy, Some(p)) => Some(start_haproxy(&lab, p, &dir)?),
        _ => None,
    };
    let req = order_request(&lab.name, &dir)?;
    wait_for_an_order(&lab.name, &req)?;
    let mut runs = serde_json::Map::new();
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
        let made: u64 = after
            .orders_created
            .iter()
            .map(|(node, n1)| {
                let n0 = before.orders_created.iter().find(|(b, _)| b == node);
                n1.saturating_sub(n0.map_or(0, |(_, n)| *n))
            })
            .sum();
        let per_controller: serde_json::Map<String, Value> = after
            .orders_created
            .iter()
            .map(|(node, n1)| {
                let n0 = before.orders_created.iter().find(|(b, _)| b == node);
                (
                    node.clone(),
                    json!(n1.saturating_sub(n0.map_or(0, |(_, n)| *n))),
                )
            })
            .collect();
        eprintln!(
            "bench:   {} clients: {:.0} orders/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
            n, report.orders_per_s, report.latency_ms.p50, report.latency_ms.p99, report.errors
        );
        runs.insert(
            n.to_string(),
            json!({
                "load": report,
                "orders_created": made,
                "orders_created_by": per_controller,
                "cpu": after.cpu_since(&before, wall, made),
                "controller_handler_us": after.handler_us_since(&before),
            }),
        );
    }
    drop(lb);
    Ok(Value::Object(runs))
}

/// TIME_WAIT reuse and every ephemeral port in `node`'s own namespace.
fn tune_client_side(lab: &str, node: &str) -> Result<()> {
    let _netns = d11_io::NetnsGuard::enter(&d11_lab::netns_name(lab, node))?;
    // /proc/sys/net shows the namespace of the thread that opens it.
    for (key, value) in [
        ("net/ipv4/tcp_tw_reuse", "1"),
        ("net/ipv4/ip_local_port_range", "1024 65535"),
    ] {
        let p = Path::new("/proc/sys").join(key);
        std::fs::write(&p, value).with_context(|| format!("{node}: writing {}", p.display()))?;
    }
    Ok(())
}

/// The story's order to the shop's name as the phone's hosts file resolves it.
fn order_request(lab: &str, dir: &RunDir) -> Result<OrderRequest> {
    let host = "www.geektime.com";
    let hosts = d11_lab::netns_hosts_file(lab, "ue");
    let ip = phone::resolve(&hosts, host)
        .with_context(|| format!("reading {}", hosts.display()))?
        .with_context(|| format!("{} does not resolve {host}", hosts.display()))?;
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
    procs: Vec<(String, &'static str, u64)>,
    /// The machine's busy and softirq ticks, all CPUs.
    busy: u64,
    softirq: u64,
    orders_created: Vec<(String, u64)>,
    /// Frames the elements received, all ports.
    element_frames: u64,
    /// Each controller's log and its length.
    logs: Vec<(PathBuf, u64)>,
}

impl Snapshot {
    fn take(dir: &RunDir, haproxy: Option<&Haproxy>) -> Result<Snapshot> {
        let mut procs = vec![(
            "phone".to_string(),
            "phone",
            proc_ticks(std::process::id()).context("reading /proc/self/stat")?,
        )];
        let topo = dir.topology()?;
        let state = d11_lab::SupervisorState::load(dir)?;
        let (mut orders_created, mut element_frames, mut logs) = (vec![], 0, vec![]);
        let status =
            |node: &str| d11_io::query(&dir.socket(node), "status", Duration::from_secs(2));
        for (node, s) in &state.nodes {
            let Some(pid) = s.pid else { continue };
            let part = match topo.node(node).and_then(|n| n.app.as_deref()) {
                Some("controller") => {
                    let n = status(node)?["report"]["orders_created"].as_u64();
                    orders_created.push((node.clone(), n.unwrap_or(0)));
                    let log = dir.log_file(node);
                    let len = std::fs::metadata(&log).map_or(0, |m| m.len());
                    logs.push((log, len));
                    "controllers"
                }
                Some("l4lb") => "load balancer",
                Some(_) => "services",
                None => {
                    let st = status(node)?;
                    element_frames += st["ports"].as_object().map_or(0, |p| {
                        p.values().filter_map(|c| c["rx_frames"].as_u64()).sum()
                    });
                    "elements"
                }
            };
            procs.push((node.clone(), part, proc_ticks(pid).unwrap_or(0)));
        }
        if let Some(h) = haproxy {
            procs.push((
                format!("{LB_NODE} (haproxy)"),
                "load balancer",
                proc_ticks(h.0.id()).unwrap_or(0),
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
    fn cpu_since(&self, before: &Snapshot, wall: f64, orders: u64) -> Value {
        let secs = |ticks: u64| ticks as f64 / TICKS_PER_S;
        let per_order_us = |ticks: u64| (orders > 0).then(|| secs(ticks) * 1e6 / orders as f64);
        let mut parts = serde_json::Map::new();
        let mut by_process = serde_json::Map::new();
        let mut total = 0;
        for (name, part, t1) in &self.procs {
            let t0 = before
                .procs
                .iter()
                .find(|(n, _, _)| n == name)
                .map_or(0, |(_, _, t)| *t);
            let used = t1.saturating_sub(t0);
            total += used;
            by_process.insert(name.clone(), json!(secs(used)));
            let sum = parts.entry(part.to_string()).or_insert(json!(0));
            *sum = json!(sum.as_u64().unwrap_or(0) + used);
        }
        let per_order: serde_json::Map<String, Value> = parts
            .iter()
            .map(|(k, v)| (k.clone(), json!(per_order_us(v.as_u64().unwrap_or(0)))))
            .collect();
        let busy = self.busy.saturating_sub(before.busy);
        let softirq = self.softirq.saturating_sub(before.softirq);
        let frames = self.element_frames.saturating_sub(before.element_frames);
        let element_ticks = parts.get("elements").and_then(Value::as_u64).unwrap_or(0);
        json!({
            "wall_s": wall,
            "machine_cores_busy": secs(busy) / wall,
            "softirq_cores": secs(softirq) / wall,
            "lab_cores_busy": secs(total) / wall,
            "us_per_order": per_order,
            "machine_us_per_order": per_order_us(busy),
            "lab_us_per_order": per_order_us(total),
            "cpu_s_by_process": by_process,
            "element_frames_per_order": (orders > 0 && frames > 0).then(|| frames as f64 / orders as f64),
            "element_us_per_frame": (frames > 0).then(|| secs(element_ticks) * 1e6 / frames as f64),
        })
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

/// utime + stime of every thread of `pid`, live or gone, in ticks.
fn proc_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after "(comm)": state is field 3, utime 14, stime 15 (proc(5)).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
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
fn summarise(
    rounds: &[serde_json::Map<String, Value>],
    variants: &[Variant],
    clients: &[usize],
) -> Value {
    let get = |r: &serde_json::Map<String, Value>, v: &str, n: usize, path: &[&str]| {
        let mut x = &r.get(v).unwrap_or(&Value::Null)[n.to_string()];
        for k in path {
            x = &x[*k];
        }
        x.as_f64().unwrap_or(f64::NAN)
    };
    let over = |v: &str, n: usize, path: &[&str]| -> f64 {
        median(rounds.iter().map(|r| get(r, v, n, path)).collect())
    };
    let mut out = serde_json::Map::new();
    for v in variants {
        let v = v.name();
        let mut per_n = serde_json::Map::new();
        for &n in clients {
            let errors: u64 = rounds
                .iter()
                .map(|r| {
                    r.get(v).unwrap_or(&Value::Null)[n.to_string()]["load"]["errors"]
                        .as_u64()
                        .unwrap_or(0)
                })
                .sum();
            let mut us = serde_json::Map::new();
            for part in [
                "phone",
                "elements",
                "load balancer",
                "controllers",
                "services",
            ] {
                let x = over(v, n, &["cpu", "us_per_order", part]);
                if x.is_finite() {
                    us.insert(part.into(), json!(x));
                }
            }
            per_n.insert(
                n.to_string(),
                json!({
                    "orders_per_s": over(v, n, &["load", "orders_per_s"]),
                    "p50_ms": over(v, n, &["load", "latency_ms", "p50"]),
                    "p99_ms": over(v, n, &["load", "latency_ms", "p99"]),
                    "errors": errors,
                    "machine_cores_busy": over(v, n, &["cpu", "machine_cores_busy"]),
                    "lab_cores_busy": over(v, n, &["cpu", "lab_cores_busy"]),
                    "element_frames_per_order": over(v, n, &["cpu", "element_frames_per_order"]),
                    "element_us_per_frame": over(v, n, &["cpu", "element_us_per_frame"]),
                    "controller_handler_us_p50": over(v, n, &["controller_handler_us", "p50"]),
                    "controller_handler_us_p99": over(v, n, &["controller_handler_us", "p99"]),
                    "softirq_cores": over(v, n, &["cpu", "softirq_cores"]),
                    "machine_us_per_order": over(v, n, &["cpu", "machine_us_per_order"]),
                    "lab_us_per_order": over(v, n, &["cpu", "lab_us_per_order"]),
                    "us_per_order": us,
                }),
            );
        }
        out.insert(v.to_string(), Value::Object(per_n));
    }
    // Each ratio is the median over the rounds of that round's ratio.
    let ratio = |a: &str, b: &str, key: &[&str]| -> Value {
        if !out.contains_key(a) || !out.contains_key(b) || a == b {
            return Value::Null;
        }
        let per_n: serde_json::Map<String, Value> = clients
            .iter()
            .map(|&n| {
                let r = median(
                    rounds
                        .iter()
                        .map(|r| get(r, a, n, key) / get(r, b, n, key))
                        .collect(),
                );
                (n.to_string(), json!(r))
            })
            .collect();
        Value::Object(per_n)
    };
    json!({
        "variants": out,
        "ratios": {
            "full_vs_direct_orders_per_s": ratio("full", "direct", &["load", "orders_per_s"]),
            "full_vs_direct_p50": ratio("full", "direct", &["load", "latency_ms", "p50"]),
            "backend_vs_local_orders_per_s": ratio("full", "local", &["load", "orders_per_s"]),
            "backend_vs_local_p50": ratio("full", "local", &["load", "latency_ms", "p50"]),
            "backend_vs_local_orders_per_cpu_s": ratio("local", "full", &["cpu", "lab_us_per_order"]),
            "l4lb_vs_haproxy_orders_per_s": ratio("full", "haproxy", &["load", "orders_per_s"]),
            "l4lb_vs_haproxy_p50": ratio("full", "haproxy", &["load", "latency_ms", "p50"]),
            // Orders per CPU-second of the lab's processes: what the runs
            // would reach with the machine to themselves, so other work on
            // it matters less (the inverse ratio of CPU per order).
            "full_vs_direct_orders_per_cpu_s": ratio("direct", "full", &["cpu", "lab_us_per_order"]),
            "l4lb_vs_haproxy_orders_per_cpu_s": ratio("haproxy", "full", &["cpu", "lab_us_per_order"]),
            "l4lb_vs_haproxy_lb_cpu_per_order": ratio("full", "haproxy", &["cpu", "us_per_order", "load balancer"]),
        },
        "goals": {
            "full_vs_direct_orders_per_s": GOAL_FULL_VS_DIRECT,
            "l4lb_vs_haproxy_orders_per_s": GOAL_L4LB_VS_HAPROXY,
        },
        "rounds": rounds,
    })
}

fn print_report(r: &Value, variants: &[Variant], clients: &[usize]) {
    let num = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let what = |v: Variant| match v {
        Variant::Direct => "ue ──veth── vm-ctl, no elements",
        Variant::Full => "double11: the whole path, l4lb in vm-lb, the shop's RPC backend",
        Variant::Local => "double11: the whole path, controllers recording orders themselves",
        Variant::Haproxy => "double11: the whole path, Debian's haproxy in vm-lb",
    };
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
            let x = &r["variants"][v.name()][n.to_string()];
            let us = |part: &str| {
                x["us_per_order"][part]
                    .as_f64()
                    .map_or("-".to_string(), |u| format!("{u:.0}"))
            };
            println!(
                "{:>7} {:>9.0} {:>8.2} {:>8.2} {:>6}  {:>4.2} {:>7.2} {:>23} {:>8} {:>5} {:>5} {:>6} {:>7.0}",
                n,
                num(&x["orders_per_s"]),
                num(&x["p50_ms"]),
                num(&x["p99_ms"]),
                x["errors"].as_u64().unwrap_or(0),
                num(&x["lab_cores_busy"]),
                num(&x["machine_cores_busy"]),
                us("phone"),
                us("elements"),
                us("load balancer"),
                us("controllers"),
                us("services"),
                num(&x["lab_us_per_order"]),
            );
        }
        for &n in clients {
            let x = &r["variants"][v.name()][n.to_string()];
            let elements = if x["element_frames_per_order"]
                .as_f64()
                .is_some_and(f64::is_finite)
            {
                format!(
                    "elements {:.0} frames per order at {:.1} µs CPU per frame; ",
                    num(&x["element_frames_per_order"]),
                    num(&x["element_us_per_frame"])
                )
            } else {
                String::new()
            };
            println!(
                "{:>7}: {elements}controller handler (after TLS, SQLite insert and commit included) p50 {:.0} µs, p99 {:.0} µs",
                n,
                num(&x["controller_handler_us_p50"]),
                num(&x["controller_handler_us_p99"]),
            );
        }
    }
    println!();
    let q = &r["ratios"];
    for (key, goal, text) in [
        (
            "full_vs_direct_orders_per_s",
            Some(GOAL_FULL_VS_DIRECT),
            "orders/s, full path / direct",
        ),
        (
            "full_vs_direct_p50",
            None,
            "p50 latency, full path / direct",
        ),
        (
            "l4lb_vs_haproxy_orders_per_s",
            Some(GOAL_L4LB_VS_HAPROXY),
            "orders/s, l4lb / haproxy (same full path)",
        ),
        ("l4lb_vs_haproxy_p50", None, "p50 latency, l4lb / haproxy"),
        (
            "backend_vs_local_orders_per_s",
            None,
            "orders/s, with the shop's RPC backend / controller-only (same full path)",
        ),
        (
            "backend_vs_local_p50",
            None,
            "p50 latency, with the backend / controller-only",
        ),
        (
            "backend_vs_local_orders_per_cpu_s",
            None,
            "orders per CPU-second of the lab, with the backend / controller-only",
        ),
        (
            "full_vs_direct_orders_per_cpu_s",
            None,
            "orders per CPU-second of the lab, full path / direct",
        ),
        (
            "l4lb_vs_haproxy_orders_per_cpu_s",
            None,
            "orders per CPU-second of the lab, l4lb / haproxy",
        ),
        (
            "l4lb_vs_haproxy_lb_cpu_per_order",
            None,
            "load balancer's own CPU per order, l4lb / haproxy",
        ),
    ] {
        let Some(per_n) = q[key].as_object() else {
            continue;
        };
        let list: Vec<String> = clients
            .iter()
            .map(|n| format!("{n}: {:.2}x", num(&per_n[&n.to_string()])))
            .collect();
        let verdict = goal.map_or(String::new(), |g| {
            let met = per_n.values().all(|x| num(x) >= g);
            format!(
                "  (goal >= {g:.1}x: {})",
                if met { "met" } else { "missed" }
            )
        });
        println!("{text}, by clients: {}{verdict}", list.join(", "));
    }
    if let Some(s) = r["skipped"].as_array().filter(|s| !s.is_empty()) {
        let names: Vec<&str> = s.iter().filter_map(|x| x.as_str()).collect();
        println!(
            "skipped: {} (not installed, and installing failed)",
            names.join(", ")
        );
    }
    println!(
        "lab / machine: cores busy during the runs, the lab's processes (and this load \
         generator) / the whole machine of {} CPUs, softirq and other work included. CPU µs per \
         order: each part's CPU time over every order made in the run (phone = the load \
         generator, lb = l4lb or haproxy, ctl = both controllers, SQLite included when local; \
         svc = the shop's services (registry, order, stock, coupon, db and its standby); all = the \
         lab's processes together, whose inverse is orders per CPU-second).",
        r["config"]["cpus"].as_u64().unwrap_or(0)
    );
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

    #[test]
    fn medians_skip_missing_figures() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, f64::NAN, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }
}
