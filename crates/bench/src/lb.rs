//! `d11 bench lb`: the `l4lb` against Debian's haproxy (`mode tcp`), the
//! balancer alone rather than the whole lab (issue 18's goal: the l4lb at
//! least as fast as haproxy at 1, 8, 32 and 1,000 concurrent connections).
//!
//! Everything runs on the loopback of one namespace of the bench's own
//! (`--netns`, torn down after), so both balancers have the same client,
//! the same backend and the same kernel:
//!
//! - the backend: two listeners (the two servers both balancers round-robin
//!   over) on one thread of this process, one event loop; a connection
//!   sends its request, gets its reply and is closed by the server, as an
//!   HTTP/1.0 server closes;
//! - the balancers, each a process of its own: the `l4lb` (this binary
//!   again, `d11 bench lb --serve-l4lb`) on the runtime `d11 run` builds
//!   for it (`AppEntry::runtime`: one event loop), its tcplog lines on
//!   stderr to a file; haproxy with `nbthread` 1 (`--haproxy-threads`),
//!   configured as `d11 bench order` configures it
//!   ([`crate::haproxy::config`]), its tcplog lines to a file. A balancer
//!   in the bench's own process would share its file table with the
//!   client and the backend (every socket, accept and close taking the
//!   same lock);
//! - the client: a thread with one event loop, `N` tasks, each opening a
//!   new connection to the balancer, writing a request of `--request`
//!   bytes, reading the `--reply` bytes to the end of stream and closing:
//!   an order's shape (one connection per order, a TLS handshake and the
//!   POST one way, the certificates and the 201 the other).
//!
//! Each point is `--rounds` pairs of `--seconds`-long runs, the l4lb's and
//! haproxy's alternating (which goes first alternates too); a bulk point
//! moves `--bulk-mib` over one long-lived connection through each. The CPU
//! of the balancer (every thread of its process), the client and the
//! backend (their threads) is read (`/proc/…/task/…/schedstat`,
//! nanoseconds) around every run, so the balancer's CPU per connection
//! and per MiB is its own: on loopback the kernel's TCP work of a send is
//! done by the sender, so it counts too.
//!
//! With two CPUs or more the balancer is kept on CPU 1 and the client and
//! the backend on CPU 0 (`taskset`): every wakeup between the balancer and
//! the others then crosses CPUs, for both balancers alike. Unpinned, where
//! the scheduler placed the three decided a run (one connection at a time
//! cost either balancer 35 or 85 µs from one run to the next); the table
//! says how busy each was.

use crate::haproxy;
use crate::lab::Daemon;
use crate::{cell, finite, median, Figure, Goal, RoundRatio};
use anyhow::{bail, Context, Result};
use d11_apps::app::App;
use d11_apps::l4lb::{L4lb, L4lbApp, L4lbConfig};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// Where each listens in the bench's namespace.
const L4LB: &str = "127.0.0.1:10443";
const HAPROXY: &str = "127.0.0.1:20443";
const BACKENDS: [&str; 2] = ["127.0.0.1:30001", "127.0.0.1:30002"];

/// A request's header: its length (u32) and the reply's (u64), little endian.
const HEADER: usize = 12;

/// Options of `d11 bench lb`.
#[derive(Debug, Clone, clap::Args)]
pub struct LbArgs {
    /// Concurrent connections, one point for each.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,1000")]
    pub clients: Vec<usize>,
    /// Seconds of each run.
    #[arg(long, default_value_t = 3)]
    pub seconds: u32,
    /// Rounds of (l4lb, haproxy) per point; figures are their medians.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Bytes a client sends on each connection.
    #[arg(long, default_value_t = 1024)]
    pub request: usize,
    /// Bytes the backend answers on each connection.
    #[arg(long, default_value_t = 4096)]
    pub reply: u64,
    /// MiB one long-lived connection carries from the backend, per run (0: no bulk point).
    #[arg(long, default_value_t = 1024)]
    pub bulk_mib: u64,
    /// haproxy's nbthread (the l4lb runs one event loop).
    #[arg(long, default_value_t = 1)]
    pub haproxy_threads: usize,
    /// The bench's namespace (made and removed by the bench).
    #[arg(long, default_value = "d11-bench-lb")]
    pub netns: String,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Only run the bench's l4lb, in this process until killed (the bench
    /// starts it so, inside its namespace).
    #[arg(long, hide = true)]
    pub serve_l4lb: bool,
}

/// One run through one balancer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Run {
    /// Connections that got their whole reply.
    pub connections: u64,
    /// Connections refused, reset or cut short.
    pub errors: u64,
    /// Reply bytes the client read.
    pub bytes: u64,
    pub seconds: f64,
    /// CPU seconds of the balancer, the client and the backend.
    pub balancer_cpu_s: f64,
    pub client_cpu_s: f64,
    pub backend_cpu_s: f64,
}

impl Run {
    pub fn per_s(&self) -> f64 {
        self.connections as f64 / self.seconds
    }
    pub fn mib_per_s(&self) -> f64 {
        self.bytes as f64 / f64::from(1 << 20) / self.seconds
    }
    /// The balancer's CPU per connection, µs.
    pub fn us_per_connection(&self) -> f64 {
        self.balancer_cpu_s * 1e6 / self.connections as f64
    }
    /// The balancer's CPU per MiB carried, ms.
    pub fn ms_per_mib(&self) -> f64 {
        self.balancer_cpu_s * 1e3 / (self.bytes as f64 / f64::from(1 << 20))
    }
}

/// A figure of a run: a rate or a cost.
type Metric = fn(&Run) -> f64;

/// One point: the runs of both balancers and each round's ratios.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Point {
    /// Concurrent connections (1 for the bulk point).
    pub clients: usize,
    pub l4lb: Vec<Run>,
    pub haproxy: Vec<Run>,
    /// Per round, l4lb ÷ haproxy: connections/s (MiB/s for bulk).
    pub rate_ratio: RoundRatio,
    /// Per round, l4lb ÷ haproxy: the balancer's CPU per connection (per MiB for bulk).
    pub cpu_ratio: RoundRatio,
}

/// What `d11 bench lb` measures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LbBench {
    pub request: usize,
    pub reply: u64,
    pub seconds: u32,
    pub haproxy_threads: usize,
    pub haproxy_version: Option<String>,
    pub points: Vec<Point>,
    /// One connection carrying `bulk_mib` MiB.
    pub bulk: Option<Point>,
    pub bulk_mib: u64,
}

/// Which balancer a run goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Balancer {
    L4lb,
    Haproxy,
}

pub fn lb(args: &LbArgs) -> Result<()> {
    if args.serve_l4lb {
        return serve_l4lb();
    }
    crate::need_root("d11 bench lb")?;
    let program = haproxy::find_or_install().map_err(|why| anyhow::anyhow!("{why}"))?;
    let scratch = crate::lab::Scratch::new("lb")?;
    let netns = Netns::add(&args.netns)?;
    let r = run(args, &netns, &program, &scratch.0)?;
    drop(netns);
    print!("{}", table(&r));
    crate::print_figures(&r.figures());
    crate::write_json(args.json.as_deref(), &r)
}

/// The bench's l4lb: its defaults, listening on [`L4LB`], balancing over
/// [`BACKENDS`], on the runtime `d11 run` gives it (one event loop) with
/// its log on stderr at INFO, as `init_tracing` writes it.
fn serve_l4lb() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .try_init()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let config = L4lbConfig {
        listen: L4LB.parse()?,
        ..serde_json::from_value(serde_json::json!({ "backends": BACKENDS }))?
    };
    let rt = d11_apps::app::registry()
        .get(L4lbApp::NAME)
        .context("no l4lb app")?
        .runtime()?;
    rt.block_on(async {
        let lb = L4lb::new("bench", config);
        let listener = lb.bind()?;
        lb.serve(listener, std::future::pending()).await?;
        Ok(())
    })
}

/// A namespace of the bench's own, its loopback up, removed when dropped.
struct Netns(String);

impl Netns {
    fn add(name: &str) -> Result<Netns> {
        let ip = |args: &[&str]| -> Result<()> {
            let out = Command::new("ip")
                .args(args)
                .output()
                .context("running ip")?;
            if !out.status.success() {
                bail!(
                    "ip {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(())
        };
        if let Err(e) = ip(&["netns", "add", name]) {
            // Left by a bench killed before it could delete it (its
            // balancers died with it): taken back if nothing runs in it.
            let pids = Command::new("ip").args(["netns", "pids", name]).output();
            match pids {
                Ok(o) if o.status.success() && o.stdout.trim_ascii().is_empty() => {
                    eprintln!("bench lb: namespace {name} left by an earlier run: deleting it");
                    ip(&["netns", "del", name])?;
                    ip(&["netns", "add", name])?;
                }
                Ok(o) if o.status.success() => bail!(
                    "{e}: processes {} run in it (another `d11 bench lb`?); pick another --netns",
                    String::from_utf8_lossy(&o.stdout)
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ => return Err(e),
            }
        }
        let ns = Netns(name.to_string());
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        crate::lab::tune_client_side(name)?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A thread in `netns` running `f` on a runtime of one event loop until
/// `stop` changes; answers its thread id (for its CPU) and its handle.
fn spawn_loop<F, Fut>(
    netns: &str,
    name: &str,
    stop: watch::Receiver<()>,
    f: F,
) -> Result<(u32, std::thread::JoinHandle<Result<()>>)>
where
    F: FnOnce(watch::Receiver<()>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<()>>,
{
    let (tx, rx) = mpsc::channel();
    let netns = netns.to_string();
    let handle = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            // The thread stays in the namespace until it ends.
            let start = || -> Result<(d11_io::NetnsGuard, tokio::runtime::Runtime)> {
                let guard = d11_io::NetnsGuard::enter(&netns)?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                Ok((guard, rt))
            };
            let (_netns, rt) = match start() {
                Ok(started) => started,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return Ok(());
                }
            };
            let _ = tx.send(Ok(thread_id()));
            rt.block_on(f(stop))
        })?;
    let tid = rx.recv().context("a bench thread died starting")??;
    Ok((tid, handle))
}

/// Keeps task `pid` (with `all`, every thread of process `pid`) on the
/// CPUs `cpus` (`taskset -p`).
fn pin(pid: u32, cpus: &str, all: bool) -> Result<()> {
    let mut cmd = Command::new("taskset");
    if all {
        cmd.arg("-a");
    }
    let out = cmd
        .args(["-p", "-c", cpus, &pid.to_string()])
        .output()
        .context("running taskset")?;
    if !out.status.success() {
        bail!("taskset: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// This thread's id (`/proc/thread-self` is `/proc/PID/task/TID`).
fn thread_id() -> u32 {
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse().ok())
        .unwrap_or(0)
}

/// CPU time of a task (`/proc/PID/task/TID`), ns: schedstat's first field.
fn task_ns(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU time of every thread of `pid`, ns.
fn process_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks.flatten().map(|t| task_ns(&t.path())).sum()
}

fn thread_ns(tid: u32) -> u64 {
    task_ns(Path::new(&format!(
        "/proc/{}/task/{tid}",
        std::process::id()
    )))
}

fn run(args: &LbArgs, netns: &Netns, program: &Path, dir: &Path) -> Result<LbBench> {
    let backends: Vec<SocketAddr> = BACKENDS
        .iter()
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    // The client's and the backend's threads start from this one.
    let pinned = std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
    if pinned {
        pin(std::process::id(), "0", false)?;
    }
    let (stop, stopped) = watch::channel(());
    let listen = backends.clone();
    let (backend_tid, backend) =
        spawn_loop(&netns.0, "lb-backend", stopped.clone(), move |stop| {
            serve_backend(listen, stop)
        })?;
    // The l4lb as `d11 run` runs it: a process of its own in the namespace.
    let mut l4lb = Command::new("ip");
    l4lb.args(["netns", "exec", &netns.0])
        .arg(crate::lab::d11_exe()?)
        .args(["bench", "lb", "--serve-l4lb"]);
    let l4lb = Daemon::start(l4lb, &dir.join("l4lb.log")).context("starting the l4lb")?;
    let cfg = dir.join("haproxy.cfg");
    let text = haproxy::config(
        "d11 bench lb",
        HAPROXY,
        &backends,
        Some(args.haproxy_threads),
    );
    std::fs::write(&cfg, text)?;
    let mut prefix = Command::new("ip");
    prefix.args(["netns", "exec", &netns.0]);
    let ha = haproxy::start(prefix, program, &cfg, &dir.join("haproxy.log"))?;
    if pinned {
        pin(l4lb.pid(), "1", true)?;
        pin(ha.pid(), "1", true)?;
    }
    let cpu = |b: Balancer| match b {
        Balancer::L4lb => process_ns(l4lb.pid()),
        Balancer::Haproxy => process_ns(ha.pid()),
    };
    let backend_ns = || thread_ns(backend_tid);
    let mut r = LbBench {
        request: args.request.max(HEADER),
        reply: args.reply,
        seconds: args.seconds,
        haproxy_threads: args.haproxy_threads,
        haproxy_version: version(program),
        bulk_mib: args.bulk_mib,
        ..LbBench::default()
    };
    let shape = |clients: usize, reply: u64, seconds: f64| Shape {
        clients,
        request: r.request,
        reply,
        seconds,
    };
    // Both balancers answer before anything is timed.
    for b in [Balancer::L4lb, Balancer::Haproxy] {
        let w = one_run(&netns.0, b, &shape(1, 16, 0.0), &cpu, &backend_ns)?;
        if w.connections == 0 {
            bail!("{b:?} does not answer (see its log in {})", dir.display());
        }
    }
    let mut points: Vec<(Shape, bool)> = args
        .clients
        .iter()
        .map(|&n| {
            (
                shape(n.max(1), args.reply, f64::from(args.seconds.max(1))),
                false,
            )
        })
        .collect();
    if args.bulk_mib > 0 {
        points.push((shape(1, args.bulk_mib << 20, 0.0), true));
    }
    for (s, bulk) in points {
        let mut p = Point {
            clients: s.clients,
            ..Point::default()
        };
        for round in 0..args.rounds.max(1) {
            let order = if round % 2 == 0 {
                [Balancer::L4lb, Balancer::Haproxy]
            } else {
                [Balancer::Haproxy, Balancer::L4lb]
            };
            for b in order {
                let run = one_run(&netns.0, b, &s, &cpu, &backend_ns)?;
                eprintln!(
                    "lb: {} {:?}: {:.0} conn/s, {:.0} MiB/s, {:.1} µs/conn, balancer {:.0} % client {:.0} % backend {:.0} %, {} errors",
                    if bulk { "bulk".to_string() } else { format!("{} clients", s.clients) },
                    b,
                    run.per_s(),
                    run.mib_per_s(),
                    run.us_per_connection(),
                    100.0 * run.balancer_cpu_s / run.seconds,
                    100.0 * run.client_cpu_s / run.seconds,
                    100.0 * run.backend_cpu_s / run.seconds,
                    run.errors
                );
                match b {
                    Balancer::L4lb => p.l4lb.push(run),
                    Balancer::Haproxy => p.haproxy.push(run),
                }
            }
        }
        let (rate, cost): (Metric, Metric) = if bulk {
            (Run::mib_per_s, Run::ms_per_mib)
        } else {
            (Run::per_s, Run::us_per_connection)
        };
        let each = |f: Metric| {
            RoundRatio::of(
                p.l4lb
                    .iter()
                    .zip(&p.haproxy)
                    .map(|(a, b)| f(a) / f(b))
                    .collect(),
            )
        };
        p.rate_ratio = each(rate);
        p.cpu_ratio = each(cost);
        if bulk {
            r.bulk = Some(p);
        } else {
            r.points.push(p);
        }
    }
    drop((ha, l4lb));
    let _ = stop.send(());
    backend
        .join()
        .map_err(|_| anyhow::anyhow!("the backend panicked"))??;
    Ok(r)
}

/// What a run's client does: `clients` tasks, each connection a request
/// of `request` bytes and a reply of `reply`, new connections until
/// `seconds` have passed (at least one each).
#[derive(Debug, Clone, Copy)]
struct Shape {
    clients: usize,
    request: usize,
    reply: u64,
    seconds: f64,
}

/// One run through `b`, the client on a thread of its own, with the CPU
/// each part spent.
fn one_run(
    netns: &str,
    b: Balancer,
    s: &Shape,
    balancer_ns: &dyn Fn(Balancer) -> u64,
    backend_ns: &dyn Fn() -> u64,
) -> Result<Run> {
    let to: SocketAddr = match b {
        Balancer::L4lb => L4LB,
        Balancer::Haproxy => HAPROXY,
    }
    .parse()?;
    let (_stop, stopped) = watch::channel(());
    let (lb0, be0) = (balancer_ns(b), backend_ns());
    let t0 = Instant::now();
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    let s = *s;
    let (_, client) = spawn_loop(netns, "lb-client", stopped, move |_| async move {
        let cpu0 = thread_ns(thread_id());
        let until = Instant::now() + Duration::from_secs_f64(s.seconds);
        let mut request = vec![0u8; s.request];
        request[..4].copy_from_slice(&(s.request as u32).to_le_bytes());
        request[4..HEADER].copy_from_slice(&s.reply.to_le_bytes());
        let request: Arc<[u8]> = request.into();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..s.clients {
            tasks.spawn(user(to, request.clone(), s.reply, until, c.clone()));
        }
        while tasks.join_next().await.is_some() {}
        c.client_ns
            .store(thread_ns(thread_id()) - cpu0, Ordering::Relaxed);
        Ok(())
    })?;
    client
        .join()
        .map_err(|_| anyhow::anyhow!("the client panicked"))??;
    let seconds = t0.elapsed().as_secs_f64();
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    Ok(Run {
        connections: load(&counts.connections),
        errors: load(&counts.errors),
        bytes: load(&counts.bytes),
        seconds,
        balancer_cpu_s: (balancer_ns(b) - lb0) as f64 / 1e9,
        client_cpu_s: load(&counts.client_ns) as f64 / 1e9,
        backend_cpu_s: (backend_ns() - be0) as f64 / 1e9,
    })
}

#[derive(Default)]
struct Counts {
    connections: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
    client_ns: AtomicU64,
}

/// One client: connections one after the other until `until`.
async fn user(to: SocketAddr, request: Arc<[u8]>, reply: u64, until: Instant, c: Arc<Counts>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match exchange(to, &request, &mut buf).await {
            Ok(n) if n == reply => {
                c.connections.fetch_add(1, Ordering::Relaxed);
                c.bytes.fetch_add(n, Ordering::Relaxed);
            }
            _ => {
                c.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        if Instant::now() >= until {
            return;
        }
    }
}

/// A new connection, the request, the reply to the end of stream; answers
/// the reply's bytes.
async fn exchange(to: SocketAddr, request: &[u8], buf: &mut [u8]) -> std::io::Result<u64> {
    let mut s = tokio::net::TcpStream::connect(to).await?;
    s.write_all(request).await?;
    let mut got = 0;
    loop {
        match s.read(buf).await? {
            0 => return Ok(got),
            n => got += n as u64,
        }
    }
}

/// The backend: each connection's request read, its reply written, the
/// connection closed.
async fn serve_backend(listen: Vec<SocketAddr>, mut stop: watch::Receiver<()>) -> Result<()> {
    let mut accepts = tokio::task::JoinSet::new();
    for addr in listen {
        let listener = d11_apps::listen(addr, 4096)?;
        accepts.spawn(async move {
            loop {
                if let Ok((s, _)) = listener.accept().await {
                    tokio::spawn(answer(s));
                }
            }
        });
    }
    let _ = stop.changed().await;
    Ok(())
}

/// Reads a request (its header says its length and the reply's), writes
/// the reply; the connection closes when dropped. A health check's probe
/// (a connection reset at once) ends it with an error, ignored.
async fn answer(mut s: tokio::net::TcpStream) -> std::io::Result<()> {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    let mut buf = [0u8; 4096];
    let (mut got, mut want, mut reply) = (0, usize::MAX, 0u64);
    while got < want {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        if got < HEADER && got + n >= HEADER {
            // The header arrives in the first segment: the client writes it
            // in one piece.
            let h = &buf[..HEADER];
            want = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
            reply = u64::from_le_bytes([h[4], h[5], h[6], h[7], h[8], h[9], h[10], h[11]]);
        }
        got += n;
    }
    while reply > 0 {
        let n = reply.min(ZEROS.len() as u64) as usize;
        s.write_all(&ZEROS[..n]).await?;
        reply -= n as u64;
    }
    Ok(())
}

/// `haproxy -v`'s first line.
fn version(program: &Path) -> Option<String> {
    let out = Command::new(program).arg("-v").output().ok()?;
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()?
            .trim()
            .to_string(),
    )
}

impl LbBench {
    /// The figures: each point's medians, the l4lb beside haproxy.
    pub fn figures(&self) -> Vec<Figure> {
        let med = |runs: &[Run], f: Metric| finite(median(runs.iter().map(f).collect()));
        let shape = format!(
            "new connection, {} B request, {} B reply, close",
            self.request, self.reply
        );
        let mut out = vec![];
        for p in &self.points {
            out.push(Figure {
                figure: format!("connections/s, {} concurrent ({shape})", p.clients),
                value: med(&p.l4lb, Run::per_s),
                baseline: "haproxy mode tcp, same client, backend, netns",
                base: med(&p.haproxy, Run::per_s),
                goal: Goal::ratio_at_least(1.0),
            });
            out.push(Figure {
                figure: format!("balancer CPU per connection, µs, {} concurrent", p.clients),
                value: med(&p.l4lb, Run::us_per_connection),
                baseline: "haproxy mode tcp, same client, backend, netns",
                base: med(&p.haproxy, Run::us_per_connection),
                goal: Goal::ratio_at_most(1.0),
            });
        }
        if let Some(p) = &self.bulk {
            out.push(Figure {
                figure: format!("bulk: MiB/s over one connection ({} MiB)", self.bulk_mib),
                value: med(&p.l4lb, Run::mib_per_s),
                baseline: "haproxy mode tcp, same client, backend, netns",
                base: med(&p.haproxy, Run::mib_per_s),
                goal: None,
            });
            out.push(Figure {
                figure: "bulk: balancer CPU per MiB, ms".into(),
                value: med(&p.l4lb, Run::ms_per_mib),
                baseline: "haproxy mode tcp, same client, backend, netns",
                base: med(&p.haproxy, Run::ms_per_mib),
                goal: Goal::ratio_at_most(1.0),
            });
        }
        out
    }
}

/// min / median / max of `f` over `runs`.
fn spread(runs: &[Run], f: Metric, decimals: usize) -> String {
    let mut v: Vec<f64> = runs.iter().map(f).filter(|x| x.is_finite()).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    let (lo, hi) = (v.first().copied(), v.last().copied());
    format!(
        "{}/{}/{}",
        cell(lo, decimals),
        cell(finite(median(v)), decimals),
        cell(hi, decimals)
    )
}

fn table(r: &LbBench) -> String {
    let mut s = format!(
        "d11 bench lb: l4lb vs {} (nbthread {}), loopback of one namespace, {} s runs; \
         each connection new: {} B request, {} B reply, closed (min/median/max of rounds)\n",
        r.haproxy_version.as_deref().unwrap_or("haproxy"),
        r.haproxy_threads,
        r.seconds,
        r.request,
        r.reply
    );
    s += "clients  balancer  conn/s (or MiB/s)            CPU µs/conn (or ms/MiB)  balancer %  client %  backend %  errors\n";
    let share = |runs: &[Run], f: Metric| {
        cell(
            finite(median(
                runs.iter().map(|r| 100.0 * f(r) / r.seconds).collect(),
            )),
            0,
        )
    };
    let mut rows = |label: String, p: &Point, rate: Metric, cost: Metric| {
        for (name, runs) in [("l4lb", &p.l4lb), ("haproxy", &p.haproxy)] {
            s += &format!(
                "{label:<8} {name:<9} {:<28} {:<24} {:>10} {:>9} {:>10} {:>7}\n",
                spread(runs, rate, 0),
                spread(runs, cost, 2),
                share(runs, |r| r.balancer_cpu_s),
                share(runs, |r| r.client_cpu_s),
                share(runs, |r| r.backend_cpu_s),
                runs.iter().map(|r| r.errors).sum::<u64>()
            );
        }
        s += &format!(
            "{label:<8} l4lb ÷ haproxy per round: rate {} (median {}), CPU {} (median {})\n",
            p.rate_ratio.list(),
            cell(p.rate_ratio.median, 2),
            p.cpu_ratio.list(),
            cell(p.cpu_ratio.median, 2)
        );
    };
    for p in &r.points {
        rows(p.clients.to_string(), p, Run::per_s, Run::us_per_connection);
    }
    if let Some(p) = &r.bulk {
        rows("bulk".into(), p, Run::mib_per_s, Run::ms_per_mib);
    }
    s
}
