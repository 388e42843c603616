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
//! ([`bench::element_work`]) for the elements' CPU per call. All four runs
//! are repeated `--rounds` times; every figure is the median of its rounds
//! and every ratio the median of the rounds' ratios, each round listed.
//!
//! Both runtimes are single-threaded, the same for both paths, so the
//! ratios compare the paths and not the scheduling.

use crate::bench::{self, median, LabGuard};
use anyhow::{Context, Result};
use d11_apps::rpc::{Call, Client, ClientConfig, Request, Server, ServerConfig, Services, Value};
use serde_json::{json, Value as Json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Options of `d11 bench rpc`.
#[derive(Debug, clap::Args)]
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

/// The two paths, in the order each round runs them.
const PATHS: [&str; 2] = ["loopback", "vxlan"];

pub fn rpc(args: &RpcArgs) -> Result<()> {
    crate::need_root("d11 bench rpc")?;
    let exe = std::env::current_exe().context("cannot find the d11 binary")?;
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
        let mut r = serde_json::Map::new();
        for (path, server) in PATHS.iter().zip([&loopback, &vxlan]) {
            let elements = *path == "vxlan";
            let fig = run_path(&lab, &client_ns, server.addr, seconds, k, elements)
                .with_context(|| format!("round {round}, {path}"))?;
            eprintln!(
                "bench: round {round}, {path:<8}: sequential {:.0} round trips/s (p50 {:.0} µs, p99 {:.0} µs), \
                 {k} in flight {:.0} calls/s",
                num(&fig["sequential"]["calls_per_s"]),
                num(&fig["sequential"]["latency_us"]["p50"]),
                num(&fig["sequential"]["latency_us"]["p99"]),
                num(&fig["pipelined"]["calls_per_s"]),
            );
            r.insert(path.to_string(), fig);
        }
        rounds.push(r);
    }
    drop((loopback, vxlan));
    drop(lab);
    let mut report = summarise(&rounds);
    report["config"] = json!({
        "seconds": seconds.as_secs_f64(),
        "rounds": rounds.len(),
        "in_flight": k,
        "payload_bytes": PAYLOAD.len(),
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
    });
    print_report(&report);
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

fn num(v: &Json) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
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
) -> Result<Json> {
    let work = || -> Result<Vec<(String, u64, u64)>> {
        if elements {
            bench::element_work(&lab.name)
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
        seq["elements"] = element_cost(&before, &mid, seq["calls"].as_u64().unwrap_or(0));
        pipe["elements"] = element_cost(&mid, &after, pipe["calls"].as_u64().unwrap_or(0));
    }
    Ok(json!({ "sequential": seq, "pipelined": pipe }))
}

/// Element CPU µs and frames received per call between two readings of
/// [`bench::element_work`], in all and by element.
fn element_cost(before: &[(String, u64, u64)], after: &[(String, u64, u64)], calls: u64) -> Json {
    let per_call = |x: u64| (calls > 0).then(|| x as f64 / calls as f64);
    let (mut cpu, mut frames) = (0u64, 0u64);
    let mut by_node = serde_json::Map::new();
    for (node, c1, f1) in after {
        let Some((_, c0, f0)) = before.iter().find(|(n, _, _)| n == node) else {
            continue;
        };
        let (c, f) = (c1.saturating_sub(*c0), f1.saturating_sub(*f0));
        cpu += c;
        frames += f;
        by_node.insert(
            node.clone(),
            json!({ "cpu_us_per_call": per_call(c).map(|x| x / 1e3), "frames_per_call": per_call(f) }),
        );
    }
    json!({
        "cpu_us_per_call": per_call(cpu).map(|x| x / 1e3),
        "frames_per_call": per_call(frames),
        "by_element": by_node,
    })
}

/// Runs `fut` on a single-threaded runtime on a thread inside namespace
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
async fn sequential(addr: SocketAddr, seconds: Duration) -> Result<Json> {
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
    let latency = d11_apps::load::Latency::of(&mut us);
    Ok(json!({
        "calls": calls,
        "seconds": wall,
        "calls_per_s": calls as f64 / wall,
        "latency_us": latency,
        "errors": errors,
        "last_error": last_error,
    }))
}

/// `k` calls in flight on one connection for `seconds`: calls/s.
async fn pipelined(addr: SocketAddr, seconds: Duration, k: usize) -> Result<Json> {
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
    Ok(json!({
        "calls": calls,
        "seconds": wall,
        "in_flight": k,
        "calls_per_s": calls as f64 / wall,
        "errors": errors,
        "last_error": last_error,
    }))
}

/// The figure at `key` (a path of object keys) of one round.
fn at<'a>(round: &'a serde_json::Map<String, Json>, path: &str, key: &[&str]) -> &'a Json {
    let mut x = round.get(path).unwrap_or(&Json::Null);
    for k in key {
        x = &x[*k];
    }
    x
}

/// The figures the report gives, as (name, key path).
const FIGURES: [(&str, &[&str]); 7] = [
    ("sequential_calls_per_s", &["sequential", "calls_per_s"]),
    ("sequential_p50_us", &["sequential", "latency_us", "p50"]),
    ("sequential_p99_us", &["sequential", "latency_us", "p99"]),
    ("pipelined_calls_per_s", &["pipelined", "calls_per_s"]),
    (
        "sequential_element_cpu_us_per_call",
        &["sequential", "elements", "cpu_us_per_call"],
    ),
    (
        "pipelined_element_cpu_us_per_call",
        &["pipelined", "elements", "cpu_us_per_call"],
    ),
    (
        "sequential_element_frames_per_call",
        &["sequential", "elements", "frames_per_call"],
    ),
];

/// Medians over the rounds, and the ratios VXLAN / loopback.
fn summarise(rounds: &[serde_json::Map<String, Json>]) -> Json {
    let mut paths = serde_json::Map::new();
    for path in PATHS {
        let mut figs = serde_json::Map::new();
        for (name, key) in FIGURES {
            let m = median(rounds.iter().map(|r| num(at(r, path, key))).collect());
            if m.is_finite() {
                figs.insert(name.into(), json!(m));
            }
        }
        let errors: u64 = rounds
            .iter()
            .flat_map(|r| ["sequential", "pipelined"].map(|run| at(r, path, &[run, "errors"])))
            .filter_map(Json::as_u64)
            .sum();
        figs.insert("errors".into(), json!(errors));
        paths.insert(path.into(), Json::Object(figs));
    }
    let ratio = |key: &[&str]| {
        let per_round: Vec<f64> = rounds
            .iter()
            .map(|r| num(at(r, "vxlan", key)) / num(at(r, "loopback", key)))
            .collect();
        json!({ "median": median(per_round.clone()), "rounds": per_round })
    };
    json!({
        "paths": paths,
        "ratios_vxlan_vs_loopback": {
            "sequential_calls_per_s": ratio(&["sequential", "calls_per_s"]),
            "sequential_p50_us": ratio(&["sequential", "latency_us", "p50"]),
            "pipelined_calls_per_s": ratio(&["pipelined", "calls_per_s"]),
        },
        "rounds": rounds,
    })
}

fn print_report(r: &Json) {
    let k = r["config"]["in_flight"].as_u64().unwrap_or(0);
    let opt = |v: &Json, prec: usize| {
        v.as_f64()
            .map_or("-".to_string(), |x| format!("{x:.prec$}"))
    };
    println!(
        "\nbench.echo of {} bytes, one connection, {} s runs, median of {} rounds ({} CPUs)",
        r["config"]["payload_bytes"],
        r["config"]["seconds"],
        r["config"]["rounds"],
        r["config"]["cpus"],
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
    for path in PATHS {
        let p = &r["paths"][path];
        println!(
            "{:<9} {:>14.0} {:>8.0} {:>8.0} {:>16.0} {:>22} {:>22}",
            path,
            num(&p["sequential_calls_per_s"]),
            num(&p["sequential_p50_us"]),
            num(&p["sequential_p99_us"]),
            num(&p["pipelined_calls_per_s"]),
            opt(&p["sequential_element_cpu_us_per_call"], 1),
            opt(&p["pipelined_element_cpu_us_per_call"], 1),
        );
    }
    let v = &r["paths"]["vxlan"];
    println!(
        "vxlan: {} frames received by the elements per sequential call (a frame counts at hosta, tor \
         and hostb: a request and its answer alone are 6)",
        opt(&v["sequential_element_frames_per_call"], 1)
    );
    let q = &r["ratios_vxlan_vs_loopback"];
    println!();
    for (key, what) in [
        (
            "sequential_calls_per_s",
            "sequential round trips/s, vxlan / loopback",
        ),
        (
            "sequential_p50_us",
            "sequential p50 latency, vxlan / loopback",
        ),
        (
            "pipelined_calls_per_s",
            "pipelined calls/s, vxlan / loopback",
        ),
    ] {
        let rounds: Vec<String> = q[key]["rounds"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| format!("{:.2}", num(x)))
            .collect();
        println!(
            "{:>6.2}x  {what}   (rounds: {})",
            num(&q[key]["median"]),
            rounds.join(" ")
        );
    }
    println!("\nround  loopback seq/s  pipe/s   vxlan seq/s  pipe/s");
    for (i, round) in r["rounds"].as_array().into_iter().flatten().enumerate() {
        let f = |path: &str, run: &str| num(&round[path][run]["calls_per_s"]);
        println!(
            "{:>5}  {:>14.0} {:>7.0}  {:>12.0} {:>7.0}",
            i + 1,
            f("loopback", "sequential"),
            f("loopback", "pipelined"),
            f("vxlan", "sequential"),
            f("vxlan", "pipelined"),
        );
    }
    let errors: u64 = PATHS
        .iter()
        .filter_map(|p| r["paths"][*p]["errors"].as_u64())
        .sum();
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
        crate::lifecycle::check(&t).unwrap();
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
            assert!(r["calls"].as_u64().unwrap() > 0, "{r}");
            assert_eq!(r["errors"], 0, "{r}");
        }
        assert!(seq["latency_us"]["p99"].as_f64().unwrap() > 0.0, "{seq}");
    }

    #[test]
    fn element_cost_is_per_call_and_ratios_are_medians_of_rounds() {
        let before = vec![("hosta".to_string(), 1_000, 10)];
        let after = vec![("hosta".to_string(), 21_000, 30)];
        let c = element_cost(&before, &after, 10);
        assert_eq!(c["cpu_us_per_call"], 2.0);
        assert_eq!(c["frames_per_call"], 2.0);
        let round = |lo: f64, vx: f64| {
            let mut m = serde_json::Map::new();
            for (p, x) in [("loopback", lo), ("vxlan", vx)] {
                m.insert(
                    p.into(),
                    json!({ "sequential": { "calls_per_s": x, "errors": 0 },
                            "pipelined": { "calls_per_s": x, "errors": 0 } }),
                );
            }
            m
        };
        let s = summarise(&[round(100.0, 50.0), round(100.0, 10.0), round(100.0, 40.0)]);
        assert_eq!(
            s["ratios_vxlan_vs_loopback"]["sequential_calls_per_s"]["median"],
            0.4
        );
        assert_eq!(s["paths"]["vxlan"]["pipelined_calls_per_s"], 40.0);
    }
}
