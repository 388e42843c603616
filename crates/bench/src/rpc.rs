//! `d11 bench rpc`: what our VXLAN path costs one RPC connection.
//!
//! One lab, `netns/bench-rpc.toml`: vm-a on hosta, vm-b on hostb, two of our
//! vSwitches and the `switch` as tor between them, VXLAN VNI 1001 across the
//! underlay. Two echo servers of [`d11_apps::rpc`] (a `bench.echo` method
//! answering its string argument) run in this process, each on a thread
//! that entered a VM's namespace before starting its tokio runtime: one in
//! vm-a on 127.0.0.1, one in vm-b on 192.168.1.20. The client side runs the
//! same way in vm-a, so:
//!
//! - `loopback`: client and server in vm-a over `lo`, no element involved;
//! - `vxlan`: the client in vm-a, the server in vm-b, every frame through
//!   hosta's vSwitch (VXLAN encapsulation), the tor and hostb's vSwitch.
//!
//! Each gets, on one connection, a sequential run (one call in flight: round
//! trips/s and the latency percentiles) and a pipelined run (`--in-flight`
//! calls outstanding on the same connection: calls/s), every call a
//! `bench.echo` of a 32-byte string whose answer is checked. Around the
//! VXLAN runs the elements' CPU time and received frames are read
//! ([`lab::element_work`]) for the elements' CPU per call. All four runs
//! are repeated `--rounds` times; every figure is the median of its rounds
//! and every ratio the median of the rounds' ratios, each round listed.
//!
//! Both runtimes are single-threaded, the same for both paths, so the
//! ratios compare the paths and not the scheduling.

use crate::lab::{self, LabGuard, NodeWork};
use crate::{cell, finite, median, RoundRatio};
use anyhow::{Context, Result};
use d11_apps::load::Latency;
use d11_apps::rpc::{Call, Client, ClientConfig, Request, Server, ServerConfig, Services, Value};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Options of `d11 bench rpc`.
#[derive(Debug, Clone, clap::Args)]
pub struct RpcArgs {
    /// Seconds of each run (sequential and pipelined, loopback and VXLAN).
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Rounds of all four runs; figures are medians of the rounds.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Calls in flight on the one connection in the pipelined runs.
    #[arg(long, default_value_t = 32)]
    pub in_flight: usize,
    /// Directory holding bench-rpc.toml.
    #[arg(long, default_value = "netns")]
    pub topologies: PathBuf,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The client's VM (and the loopback server's), and the VXLAN server's.
const CLIENT_NODE: &str = "vm-a";
const SERVER_NODE: &str = "vm-b";
const SERVER_IP: &str = "192.168.1.20";
/// Dubbo's default port.
const PORT: u16 = 20880;

/// The echoed argument: 32 bytes.
const PAYLOAD: &str = "double11 rpc bench echo 32 bytes";

/// Sequential calls before any run is timed (connection, ARP, caches).
const WARMUP_CALLS: usize = 200;

/// One call's deadline; a call that misses it counts as an error.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Elements' CPU and frames per call, in all and by element.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ElementCost {
    pub cpu_us_per_call: Option<f64>,
    pub frames_per_call: Option<f64>,
    pub by_element: BTreeMap<String, NodeCost>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeCost {
    pub cpu_us_per_call: Option<f64>,
    pub frames_per_call: Option<f64>,
}

/// One run on one connection: sequential (with its latencies) or pipelined.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunFigures {
    pub calls: u64,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<usize>,
    pub calls_per_s: Option<f64>,
    /// Sequential runs only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<Latency>,
    pub errors: u64,
    pub last_error: Option<String>,
    /// The VXLAN path only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elements: Option<ElementCost>,
}

/// Both runs of one path in one round.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PathRound {
    pub sequential: RunFigures,
    pub pipelined: RunFigures,
}

impl PathRound {
    fn seq_elements(&self) -> Option<&ElementCost> {
        self.sequential.elements.as_ref()
    }
}

/// One round: loopback, then VXLAN.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Round {
    pub loopback: PathRound,
    pub vxlan: PathRound,
}

/// One path's figures, medians of the rounds (errors summed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PathFigures {
    pub sequential_calls_per_s: Option<f64>,
    pub sequential_p50_us: Option<f64>,
    pub sequential_p99_us: Option<f64>,
    pub pipelined_calls_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequential_element_cpu_us_per_call: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipelined_element_cpu_us_per_call: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequential_element_frames_per_call: Option<f64>,
    pub errors: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Paths {
    pub loopback: PathFigures,
    pub vxlan: PathFigures,
}

/// VXLAN ÷ loopback, each the median of the rounds' ratios.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Ratios {
    pub sequential_calls_per_s: RoundRatio,
    pub sequential_p50_us: RoundRatio,
    pub pipelined_calls_per_s: RoundRatio,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub seconds: f64,
    pub rounds: usize,
    pub in_flight: usize,
    pub payload_bytes: usize,
    pub cpus: usize,
}

/// What `d11 bench rpc` measures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RpcReport {
    pub paths: Paths,
    pub ratios_vxlan_vs_loopback: Ratios,
    pub rounds: Vec<Round>,
    pub config: Config,
}

/// `d11 bench rpc`.
pub fn rpc(args: &RpcArgs) -> Result<()> {
    crate::need_root("d11 bench rpc")?;
    let exe = lab::d11_exe()?;
    let file = args.topologies.join("bench-rpc.toml");
    eprintln!("bench: rpc ({})", file.display());
    let (lab, _) = LabGuard::up(&exe, &file, "bench-rpc")?;
    lab.warm_up(CLIENT_NODE, SERVER_IP)?;
    let client_ns = d11_lab::netns_name(&lab.name, CLIENT_NODE);
    let loopback = EchoServer::start(
        Some(client_ns.clone()),
        SocketAddr::from(([127, 0, 0, 1], PORT)),
    )?;
    let vxlan = EchoServer::start(
        Some(d11_lab::netns_name(&lab.name, SERVER_NODE)),
        SocketAddr::from((SERVER_IP.parse::<std::net::Ipv4Addr>()?, PORT)),
    )?;
    let seconds = Duration::from_secs_f64(args.seconds.max(0.1));
    let k = args.in_flight.max(1);
    let mut rounds = vec![];
    for round in 1..=args.rounds.max(1) {
        let run = |path: &str, server: &EchoServer, elements: bool| -> Result<PathRound> {
            let fig = run_path(&lab, &client_ns, server.addr, seconds, k, elements)
                .with_context(|| format!("round {round}, {path}"))?;
            eprintln!(
                "bench: round {round}, {path:<8}: sequential {} round trips/s (p50 {} µs, p99 {} µs), \
                 {k} in flight {} calls/s",
                cell(fig.sequential.calls_per_s, 0),
                cell(fig.sequential.latency_us.as_ref().map(|l| l.p50), 0),
                cell(fig.sequential.latency_us.as_ref().map(|l| l.p99), 0),
                cell(fig.pipelined.calls_per_s, 0),
            );
            Ok(fig)
        };
        rounds.push(Round {
            loopback: run("loopback", &loopback, false)?,
            vxlan: run("vxlan", &vxlan, true)?,
        });
    }
    drop((loopback, vxlan));
    drop(lab);
    let mut report = summarise(rounds);
    report.config = Config {
        seconds: seconds.as_secs_f64(),
        rounds: report.rounds.len(),
        in_flight: k,
        payload_bytes: PAYLOAD.len(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
    };
    print_report(&report);
    crate::write_json(args.json.as_deref(), &report)
}

/// The sequential and the pipelined run of one path; with `elements`, the
/// elements' CPU and frames per call around each.
fn run_path(
    lab: &LabGuard,
    netns: &str,
    addr: SocketAddr,
    seconds: Duration,
    k: usize,
    elements: bool,
) -> Result<PathRound> {
    let work = || -> Result<Vec<NodeWork>> {
        if elements {
            lab::element_work(&lab.name)
        } else {
            Ok(vec![])
        }
    };
    let before = work()?;
    let mut seq = in_netns(Some(netns), sequential(addr, seconds))??;
    let mid = work()?;
    let mut pipe = in_netns(Some(netns), pipelined(addr, seconds, k))??;
    let after = work()?;
    if elements {
        seq.elements = Some(element_cost(&before, &mid, seq.calls));
        pipe.elements = Some(element_cost(&mid, &after, pipe.calls));
    }
    Ok(PathRound {
        sequential: seq,
        pipelined: pipe,
    })
}

/// Element CPU µs and frames received per call between two readings of
/// [`lab::element_work`], in all and by element.
fn element_cost(before: &[NodeWork], after: &[NodeWork], calls: u64) -> ElementCost {
    let per_call = |x: u64| (calls > 0).then(|| x as f64 / calls as f64);
    let loads = lab::NodeLoad::between(before, after);
    let cost = |cpu_ns: u64, frames: u64| NodeCost {
        cpu_us_per_call: per_call(cpu_ns).map(|x| x / 1e3),
        frames_per_call: per_call(frames),
    };
    let total = cost(
        loads.values().map(|l| l.cpu_ns).sum(),
        loads.values().map(|l| l.rx_frames).sum(),
    );
    ElementCost {
        cpu_us_per_call: total.cpu_us_per_call,
        frames_per_call: total.frames_per_call,
        by_element: loads
            .iter()
            .map(|(n, l)| (n.clone(), cost(l.cpu_ns, l.rx_frames)))
            .collect(),
    }
}

/// `netns` (this one when `None`), so every socket it opens lives there.
fn in_netns<T: Send + 'static>(
    netns: Option<&str>,
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T> {
    let netns = netns.map(str::to_string);
    std::thread::spawn(move || -> Result<T> {
        let _guard = netns
            .as_deref()
            .map(d11_io::NetnsGuard::enter)
            .transpose()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the tokio runtime")?;
        Ok(rt.block_on(fut))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the bench client thread panicked"))?
}

/// The server's one method: answers its string argument.
fn echo_services() -> Services {
    let mut s = Services::new();
    s.method("bench", "echo", |c: Call| async move {
        Ok(Value::from(c.str_arg(0)?.to_string()))
    });
    s
}

/// An echo server on its own thread and runtime, inside a namespace;
/// stopped and joined when dropped.
struct EchoServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Listens on `addr` (port 0: any) in `netns` (this one when `None`).
    fn start(netns: Option<String>, addr: SocketAddr) -> Result<EchoServer> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<SocketAddr>>();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let started = (|| -> Result<_> {
                let guard = netns
                    .as_deref()
                    .map(d11_io::NetnsGuard::enter)
                    .transpose()?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("starting the tokio runtime")?;
                let listener = rt
                    .block_on(tokio::net::TcpListener::bind(addr))
                    .with_context(|| format!("binding {addr}"))?;
                Ok((guard, rt, listener))
            })();
            let (_guard, rt, listener) = match started {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(listener.local_addr().map_err(Into::into));
            let server = Server::new(
                "bench",
                ServerConfig {
                    listen: addr,
                    ..ServerConfig::default()
                },
                echo_services(),
            );
            rt.block_on(async {
                tokio::select! {
                    _ = server.serve(listener) => {}
                    _ = stopped => {}
                }
            });
        });
        let addr = ready_rx
            .recv()
            .context("the echo server thread ended")?
            .context("starting the echo server")?;
        Ok(EchoServer {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn echo_request() -> Request {
    Request::new("bench", "echo", vec![Value::from(PAYLOAD.to_string())])
}

/// One echo call; an error unless it came back with the payload.
async fn echo(client: &Client) -> Result<(), String> {
    match client.call(echo_request(), Some(CALL_TIMEOUT)).await {
        Ok(v) if v.as_str() == Some(PAYLOAD) => Ok(()),
        Ok(v) => Err(format!("bench.echo answered {v:?}")),
        Err(f) => Err(f.to_string()),
    }
}

/// A connected client with [`WARMUP_CALLS`] answered.
async fn warm_client(addr: SocketAddr) -> Result<Client> {
    let client = Client::connect(addr, ClientConfig::default())
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    for _ in 0..WARMUP_CALLS {
        echo(&client)
            .await
            .map_err(|e| anyhow::anyhow!("warm-up call to {addr}: {e}"))?;
    }
    Ok(client)
}

/// One call in flight for `seconds`: round trips/s and latency in µs.
/// One call in flight for `seconds`: round trips/s and latency in µs.
async fn sequential(addr: SocketAddr, seconds: Duration) -> Result<RunFigures> {
    let client = warm_client(addr).await?;
    let mut us = Vec::with_capacity(100_000);
    let (mut errors, mut last_error) = (0u64, None);
    let t0 = Instant::now();
    while t0.elapsed() < seconds {
        let t = Instant::now();
        match echo(&client).await {
            Ok(()) => us.push(t.elapsed().as_secs_f64() * 1e6),
            Err(e) => {
                errors += 1;
                last_error = Some(e);
            }
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let calls = us.len() as u64;
    Ok(RunFigures {
        calls,
        seconds: wall,
        calls_per_s: finite(calls as f64 / wall),
        latency_us: Some(Latency::of(&mut us)),
        errors,
        last_error,
        ..RunFigures::default()
    })
}

/// `k` calls in flight on one connection for `seconds`: calls/s.
async fn pipelined(addr: SocketAddr, seconds: Duration, k: usize) -> Result<RunFigures> {
    let client = Arc::new(warm_client(addr).await?);
    let t0 = Instant::now();
    let deadline = t0 + seconds;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..k {
        let client = client.clone();
        tasks.spawn(async move {
            let (mut ok, mut errors, mut last_error) = (0u64, 0u64, None);
            while Instant::now() < deadline {
                match echo(&client).await {
                    Ok(()) => ok += 1,
                    Err(e) => {
                        errors += 1;
                        last_error = Some(e);
                    }
                }
            }
            (ok, errors, last_error)
        });
    }
    let (mut calls, mut errors, mut last_error) = (0u64, 0u64, None);
    while let Some(r) = tasks.join_next().await {
        let (ok, e, last) = r.context("a pipelined caller panicked")?;
        calls += ok;
        errors += e;
        last_error = last_error.or(last);
    }
    let wall = t0.elapsed().as_secs_f64();
    Ok(RunFigures {
        calls,
        seconds: wall,
        in_flight: Some(k),
        calls_per_s: finite(calls as f64 / wall),
        errors,
        last_error,
        ..RunFigures::default()
    })
}

/// Medians over the rounds, and the ratios VXLAN / loopback.
fn summarise(rounds: Vec<Round>) -> RpcReport {
    let nan = |x: Option<f64>| x.unwrap_or(f64::NAN);
    let path = |of: &dyn Fn(&Round) -> &PathRound| {
        let med = |f: &dyn Fn(&PathRound) -> Option<f64>| {
            finite(median(rounds.iter().map(|r| nan(f(of(r)))).collect()))
        };
        PathFigures {
            sequential_calls_per_s: med(&|p| p.sequential.calls_per_s),
            sequential_p50_us: med(&|p| p.sequential.latency_us.as_ref().map(|l| l.p50)),
            sequential_p99_us: med(&|p| p.sequential.latency_us.as_ref().map(|l| l.p99)),
            pipelined_calls_per_s: med(&|p| p.pipelined.calls_per_s),
            sequential_element_cpu_us_per_call: med(&|p| p.seq_elements()?.cpu_us_per_call),
            pipelined_element_cpu_us_per_call: med(&|p| {
                p.pipelined.elements.as_ref()?.cpu_us_per_call
            }),
            sequential_element_frames_per_call: med(&|p| p.seq_elements()?.frames_per_call),
            errors: rounds
                .iter()
                .map(|r| of(r).sequential.errors + of(r).pipelined.errors)
                .sum(),
        }
    };
    let ratio = |f: &dyn Fn(&PathRound) -> Option<f64>| {
        RoundRatio::of(
            rounds
                .iter()
                .map(|r| nan(f(&r.vxlan)) / nan(f(&r.loopback)))
                .collect(),
        )
    };
    RpcReport {
        paths: Paths {
            loopback: path(&|r| &r.loopback),
            vxlan: path(&|r| &r.vxlan),
        },
        ratios_vxlan_vs_loopback: Ratios {
            sequential_calls_per_s: ratio(&|p| p.sequential.calls_per_s),
            sequential_p50_us: ratio(&|p| p.sequential.latency_us.as_ref().map(|l| l.p50)),
            pipelined_calls_per_s: ratio(&|p| p.pipelined.calls_per_s),
        },
        rounds,
        config: Config::default(),
    }
}

fn print_report(r: &RpcReport) {
    let c = &r.config;
    let k = c.in_flight;
    println!(
        "\nbench.echo of {} bytes, one connection, {} s runs, median of {} rounds ({} CPUs)",
        c.payload_bytes, c.seconds, c.rounds, c.cpus,
    );
    println!(
        "{:<9} {:>14} {:>8} {:>8} {:>16} {:>22} {:>22}",
        "path",
        "round trips/s",
        "p50 µs",
        "p99 µs",
        format!("{k} in flight/s"),
        "element µs/call seq",
        "element µs/call pipe",
    );
    for (path, p) in [("loopback", &r.paths.loopback), ("vxlan", &r.paths.vxlan)] {
        println!(
            "{:<9} {:>14} {:>8} {:>8} {:>16} {:>22} {:>22}",
            path,
            cell(p.sequential_calls_per_s, 0),
            cell(p.sequential_p50_us, 0),
            cell(p.sequential_p99_us, 0),
            cell(p.pipelined_calls_per_s, 0),
            cell(p.sequential_element_cpu_us_per_call, 1),
            cell(p.pipelined_element_cpu_us_per_call, 1),
        );
    }
    println!(
        "vxlan: {} frames received by the elements per sequential call (a frame counts at hosta, tor \
         and hostb: a request and its answer alone are 6)",
        cell(r.paths.vxlan.sequential_element_frames_per_call, 1)
    );
    let q = &r.ratios_vxlan_vs_loopback;
    println!();
    for (x, what) in [
        (
            &q.sequential_calls_per_s,
            "sequential round trips/s, vxlan / loopback",
        ),
        (
            &q.sequential_p50_us,
            "sequential p50 latency, vxlan / loopback",
        ),
        (
            &q.pipelined_calls_per_s,
            "pipelined calls/s, vxlan / loopback",
        ),
    ] {
        println!("{:>6}x  {what}   (rounds: {})", cell(x.median, 2), x.list());
    }
    println!("\nround  loopback seq/s  pipe/s   vxlan seq/s  pipe/s");
    for (i, round) in r.rounds.iter().enumerate() {
        println!(
            "{:>5}  {:>14} {:>7}  {:>12} {:>7}",
            i + 1,
            cell(round.loopback.sequential.calls_per_s, 0),
            cell(round.loopback.pipelined.calls_per_s, 0),
            cell(round.vxlan.sequential.calls_per_s, 0),
            cell(round.vxlan.pipelined.calls_per_s, 0),
        );
    }
    let errors = r.paths.loopback.errors + r.paths.vxlan.errors;
    if errors > 0 {
        println!("errors: {errors} calls failed or timed out (see --json for the last error of each run)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use d11_lab::Topology;

    #[test]
    fn the_bench_lab_puts_both_vms_in_one_subnet_behind_two_vswitches_that_know_them() {
        let t = Topology::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../netns/bench-rpc.toml"
        )))
        .unwrap();
        // Every element's settings as `d11 up` checks them (the lab has no apps).
        t.check_elements().unwrap();
        let addr = |node: &str| t.node(node).unwrap().ports[0].address.unwrap().to_string();
        assert_eq!(addr(CLIENT_NODE), "192.168.1.10/24");
        assert_eq!(addr(SERVER_NODE), format!("{SERVER_IP}/24"));
        for host in ["hosta", "hostb"] {
            let n = t.node(host).unwrap();
            assert_eq!(n.role.as_deref(), Some("vswitch"));
            let fdb = n.config["fdb"].as_array().unwrap();
            for ip in ["192.168.1.10", SERVER_IP] {
                assert!(
                    fdb.iter().any(|e| e["ip"].as_str() == Some(ip)),
                    "{host}'s fdb lists {ip}"
                );
            }
        }
        assert_eq!(t.node("tor").unwrap().role.as_deref(), Some("switch"));
    }

    #[test]
    fn both_runs_answer_every_echo_over_loopback_in_this_namespace() {
        // The bench's own code, without a lab or root: a server on an
        // ephemeral port of 127.0.0.1 here, a sequential and a pipelined run
        // of a fraction of a second. The figures are not checked
        // (benchmarks are not assertions), only that calls were answered.
        let server = EchoServer::start(None, SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let d = Duration::from_millis(200);
        let seq = in_netns(None, sequential(server.addr, d)).unwrap().unwrap();
        let pipe = in_netns(None, pipelined(server.addr, d, 8))
            .unwrap()
            .unwrap();
        for r in [&seq, &pipe] {
            assert!(r.calls > 0, "{r:?}");
            assert_eq!(r.errors, 0, "{r:?}");
        }
        assert!(seq.latency_us.as_ref().unwrap().p99 > 0.0, "{seq:?}");
    }

    #[test]
    fn element_cost_is_per_call_and_ratios_are_medians_of_rounds() {
        let w = |cpu_ns, frames| NodeWork {
            node: "hosta".into(),
            cpu_ns,
            frames,
        };
        let c = element_cost(&[w(1_000, 10)], &[w(21_000, 30)], 10);
        assert_eq!(c.cpu_us_per_call, Some(2.0));
        assert_eq!(c.frames_per_call, Some(2.0));
        assert_eq!(c.by_element["hosta"].frames_per_call, Some(2.0));
        let round = |lo: f64, vx: f64| {
            let p = |x: f64| {
                let run = RunFigures {
                    calls_per_s: Some(x),
                    ..RunFigures::default()
                };
                PathRound {
                    sequential: run.clone(),
                    pipelined: run,
                }
            };
            Round {
                loopback: p(lo),
                vxlan: p(vx),
            }
        };
        let s = summarise(vec![
            round(100.0, 50.0),
            round(100.0, 10.0),
            round(100.0, 40.0),
        ]);
        assert_eq!(
            s.ratios_vxlan_vs_loopback.sequential_calls_per_s.median,
            Some(0.4)
        );
        assert_eq!(s.paths.vxlan.pipelined_calls_per_s, Some(40.0));
        let back: RpcReport = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
