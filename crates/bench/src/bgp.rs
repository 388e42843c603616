//! `d11 bench bgp`: what chapter 2's BGP costs, each figure beside a
//! baseline measured in the same run (issue 13's benchmark).
//!
//! - **Propagation** (`netns/bench-bgp.toml`): BIRD in `west` (AS 65001)
//!   announces `--prefixes` routes (100,000 by default: a seeded mix of /22
//!   to /28 inside 10.0.0.0/8, several prefix lengths as a real table has)
//!   through our router `mid` (AS 64600) to BIRD in `east` (AS 65003): the
//!   time from `birdc enable big` in west until east holds them all, against
//!   the same chain with BIRD in mid's place (`netns/bench-bgp-bird.toml`,
//!   mid a kernel host that installs what it learns into its kernel, as our
//!   router installs it in its FIB). The sessions are up before the clock
//!   starts; east is polled every 100 ms.
//! - **Memory**: mid's resident set (VmRSS) before and after the routes
//!   arrive, ours against that BIRD's, and the bytes per route each.
//! - **The data plane with the table**: mid's CPU per frame (from
//!   /proc/PID/schedstat over the frames iperf3 sent, at its fixed
//!   20,000 frames/s of 64-byte UDP from east to 10.0.0.1 in west) with the
//!   ten routes west announces first and with all of them. One run of
//!   each, one after the other, moved between 0.75× and 1.99× with what
//!   else the shared machine ran meanwhile (docs/bgp.md), so the runs last
//!   one second and come in pairs: 10 routes, all, then west withdraws the
//!   rest (`birdc disable big`) and announces it again, 10, all, … —
//!   `--seconds` pairs, as many frames a side as one run of `--seconds`.
//!   Pairs side by side see the same load, and a burst moves one pair. Each
//!   run starts once mid is done with the last burst of UPDATEs. The figure
//!   is the pair whose ratio (all ÷ 10) is the median, the lower of the two
//!   middle ones for an even count, with the range of the ratios. mid's
//!   memory is read after the first announcement, before the pairs stir
//!   its heap. The goal (≤ 1.2×) is on this figure: the data
//!   plane's CPU per frame, as everywhere in the lab. And, to show what
//!   the lookup alone costs, without a goal: the router alone (`on_frame`
//!   in a loop, no I/O) through a FIB of 10 and of 100,000 routes, its
//!   destinations spread over 4,096 of the announced prefixes, against a
//!   `null` element's.
//! - **Convergence** (`netns/double11.toml`): the c1–c2 wire cut (100 %
//!   loss) and `d11 order` tried back to back (`--retries 0`, 1 s each,
//!   `--no-httpdns`: the HTTPDNS service sits behind the same cut, and its
//!   own 3 s timeout would make each failed attempt last about 5 s; the
//!   carrier's resolver beside a2 answers from its cache): the time until
//!   an order succeeds again, against the configured hold time (9 s; goal
//!   ≤ hold time + 1 s).
//!
//! The result is a [`BgpBench`] (printed as a table, `--json` writes it);
//! [`BgpBench::figures`] are the rows `d11 bench report` shows.

use crate::lab::{self, Ends, LabGuard};
use crate::{Figure, Goal};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Options of `d11 bench bgp`.
#[derive(Debug, clap::Args)]
pub struct BgpArgs {
    /// Routes west announces through mid.
    #[arg(long, default_value_t = 100_000)]
    pub prefixes: u32,
    /// Seconds of fixed-rate iperf3 with 10 routes and with all: as many
    /// pairs of one-second runs.
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// Skip the double11 failover (the longest part: a whole lab).
    #[arg(long)]
    pub no_convergence: bool,
    /// Directory holding bench-bgp.toml, bench-bgp-bird.toml and double11.toml.
    #[arg(long, default_value = "netns")]
    pub topologies: PathBuf,
    /// Also write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Everything `d11 bench bgp` measured; `None` where a part did not run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BgpBench {
    pub prefixes: u32,
    /// Our router in mid.
    pub ours: Option<Chain>,
    /// BIRD in mid.
    pub bird: Option<Chain>,
    pub core: Option<Core>,
    pub convergence: Option<Convergence>,
    /// What was not installed (bird2), so not run.
    pub skipped: Vec<String>,
}

/// One run of the west → mid → east chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chain {
    /// From `enable big` in west to east holding every route.
    pub propagation_s: f64,
    pub mid_rss_kib_before: u64,
    pub mid_rss_kib_after: u64,
    /// The anonymous part of `mid_rss_kib_after` (RssAnon): the memory the
    /// process holds for itself, without the pages of its program file.
    /// (0 in a bench.json written before it was measured.)
    #[serde(default)]
    pub mid_anon_kib_after: u64,
    /// The pages of its program file and libraries in `mid_rss_kib_after`
    /// (RssFile). (0 in a bench.json written before it was measured.)
    #[serde(default)]
    pub mid_file_kib_after: u64,
    /// mid's CPU per frame at the fixed rate with 10 routes and with all,
    /// of the pair in `cpu_pairs` whose ratio is the median (our router
    /// only: BIRD's mid forwards in its kernel).
    pub cpu_ns_per_frame_10_routes: Option<f64>,
    pub cpu_ns_per_frame_all_routes: Option<f64>,
    /// Each pair of runs, in order. (Empty in a bench.json written before
    /// the pairs: one run of each then.)
    #[serde(default)]
    pub cpu_pairs: Vec<CpuPair>,
}

/// mid's CPU per frame, ns, in two runs side by side.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CpuPair {
    pub routes_10_ns: f64,
    pub routes_all_ns: f64,
}

impl CpuPair {
    fn ratio(&self) -> f64 {
        self.routes_all_ns / self.routes_10_ns
    }
}

impl Chain {
    pub fn bytes_per_route(&self, routes: u32) -> f64 {
        (self.mid_rss_kib_after as f64 - self.mid_rss_kib_before as f64) * 1024.0
            / f64::from(routes.max(1))
    }

    /// The lowest and the highest ratio of the pairs.
    fn cpu_ratio_range(&self) -> Option<(f64, f64)> {
        let r = self.cpu_pairs.iter().map(CpuPair::ratio);
        Some((r.clone().reduce(f64::min)?, r.reduce(f64::max)?))
    }
}

/// The pair whose ratio is the median: the lower of the two middle ones
/// for an even count.
fn median_pair(pairs: &[CpuPair]) -> Option<CpuPair> {
    let mut v: Vec<CpuPair> = pairs
        .iter()
        .filter(|p| p.ratio().is_finite())
        .copied()
        .collect();
    v.sort_by(|a, b| a.ratio().total_cmp(&b.ratio()));
    v.get(v.len().checked_sub(1)? / 2).copied()
}

/// The router alone, no I/O: ns per frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Core {
    pub router_10_routes_ns: f64,
    pub router_all_routes_ns: f64,
    pub null_ns: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Convergence {
    pub hold_time_s: f64,
    /// From the cut to the first order that succeeded.
    pub order_again_s: f64,
    /// Orders tried meanwhile.
    pub attempts: u32,
}

/// Goals from the issue.
const PROPAGATION_GOAL: f64 = 1.0;
const RSS_GOAL: f64 = 1.0;
const FIB_GOAL: f64 = 1.2;
const CONVERGENCE_SLACK_S: f64 = 1.0;

impl BgpBench {
    pub fn figures(&self) -> Vec<Figure> {
        let ratio = Goal::ratio_at_most;
        let (o, b) = (self.ours.as_ref(), self.bird.as_ref());
        let n = self.prefixes;
        let mut rows = vec![
            Figure {
                figure: format!("{n} prefixes west → mid → east, s"),
                value: o.map(|c| c.propagation_s),
                baseline: "BIRD as mid",
                base: b.map(|c| c.propagation_s),
                goal: ratio(PROPAGATION_GOAL),
            },
            Figure {
                figure: format!("mid's RSS with {n} routes, KiB"),
                value: o.map(|c| c.mid_rss_kib_after as f64),
                baseline: "BIRD as mid",
                base: b.map(|c| c.mid_rss_kib_after as f64),
                goal: ratio(RSS_GOAL),
            },
            Figure {
                figure: format!("mid's anonymous memory (RssAnon) with {n} routes, KiB"),
                value: o.map(|c| c.mid_anon_kib_after as f64),
                baseline: "BIRD as mid",
                base: b.map(|c| c.mid_anon_kib_after as f64),
                goal: None,
            },
            Figure {
                figure: format!("mid's file pages (RssFile) with {n} routes, KiB"),
                value: o.map(|c| c.mid_file_kib_after as f64),
                baseline: "BIRD as mid",
                base: b.map(|c| c.mid_file_kib_after as f64),
                goal: None,
            },
            Figure {
                figure: "mid's RSS per route, bytes".into(),
                value: o.map(|c| c.bytes_per_route(n)),
                baseline: "BIRD as mid",
                base: b.map(|c| c.bytes_per_route(n)),
                goal: None,
            },
            Figure {
                figure: format!(
                    "mid's CPU per frame at 20k frames/s with {n} routes, ns{}",
                    match o.and_then(|c| Some((c.cpu_pairs.len(), c.cpu_ratio_range()?))) {
                        Some((k, (lo, hi))) =>
                            format!(" (the median of {k} pairs; ratios {lo:.2}–{hi:.2}×)"),
                        None => String::new(),
                    }
                ),
                value: o.and_then(|c| c.cpu_ns_per_frame_all_routes),
                baseline: "10 routes",
                base: o.and_then(|c| c.cpu_ns_per_frame_10_routes),
                goal: ratio(FIB_GOAL),
            },
        ];
        // The lookup's own cost, without the I/O every frame pays: what
        // the table's cache misses add. The goal is on the data
        // plane's CPU per frame, the row above, as everywhere in the lab.
        if let Some(c) = &self.core {
            rows.push(Figure {
                figure: format!("router alone (no I/O) with {n} routes, ns/frame"),
                value: Some(c.router_all_routes_ns),
                baseline: "10 routes",
                base: Some(c.router_10_routes_ns),
                goal: None,
            });
            rows.push(Figure {
                figure: format!("router alone (no I/O) with {n} routes, ns/frame"),
                value: Some(c.router_all_routes_ns),
                baseline: "null alone",
                base: Some(c.null_ns),
                goal: None,
            });
        }
        if let Some(c) = &self.convergence {
            rows.push(Figure {
                figure: "an order again after the preferred path is cut, s".into(),
                value: Some(c.order_again_s),
                baseline: "hold time",
                base: Some(c.hold_time_s),
                goal: Goal::value_at_most(c.hold_time_s + CONVERGENCE_SLACK_S),
            });
        }
        rows
    }
}

pub fn bgp(args: &BgpArgs) -> Result<()> {
    crate::need_root("d11 bench bgp")?;
    let exe = lab::d11_exe()?;
    let mut r = BgpBench {
        prefixes: args.prefixes,
        ..BgpBench::default()
    };
    let table = prefixes(args.prefixes as usize);
    eprintln!(
        "bench bgp: the router alone through 10 and {} routes",
        table.len()
    );
    r.core = Some(core(&table));
    if which("bird") {
        for (bird_mid, file) in [(false, "bench-bgp.toml"), (true, "bench-bgp-bird.toml")] {
            eprintln!(
                "bench bgp: {} with {} as mid",
                file,
                if bird_mid { "BIRD" } else { "our router" }
            );
            let c = chain(
                &exe,
                &args.topologies.join(file),
                bird_mid,
                &table,
                args.seconds,
            )?;
            *if bird_mid { &mut r.bird } else { &mut r.ours } = Some(c);
        }
    } else {
        r.skipped.push("bird2".into());
    }
    if !args.no_convergence {
        eprintln!("bench bgp: double11, the c1–c2 wire cut");
        r.convergence = Some(convergence(&exe, &args.topologies.join("double11.toml"))?);
    }
    print(&r);
    crate::write_json(args.json.as_deref(), &r)
}

fn print(r: &BgpBench) {
    crate::print_figures(&r.figures());
    if !r.skipped.is_empty() {
        println!("skipped (not installed): {}", r.skipped.join(", "));
    }
}

fn which(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `n` distinct prefixes inside 10.0.0.0/8, lengths /22 to /28 in a fixed
/// mix (mostly /24, as a real table), from a fixed seed; 10.0.0.0/24 (the
/// data plane's destination, on west's lo) first.
pub fn prefixes(n: usize) -> Vec<(u32, u8)> {
    const MIX: [(u8, u32); 7] = [
        (22, 5),
        (23, 5),
        (24, 30),
        (25, 20),
        (26, 15),
        (27, 15),
        (28, 10),
    ];
    let mut seen = BTreeSet::new();
    let mut out = vec![(0x0a00_0000, 24)];
    seen.insert((0x0a00_0000u32, 24u8));
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    while out.len() < n {
        let r = next();
        let mut pick = (r % 100) as u32;
        let len = MIX
            .iter()
            .find(|(_, w)| {
                let hit = pick < *w;
                pick = pick.saturating_sub(*w);
                hit
            })
            .map_or(24, |(l, _)| *l);
        let addr = 0x0a00_0000 | ((r >> 32) as u32 & 0x00ff_ffff);
        let net = addr & (u32::MAX << (32 - len));
        if seen.insert((net, len)) {
            out.push((net, len));
        }
    }
    out.truncate(n);
    out
}

fn cidr((net, len): (u32, u8)) -> String {
    format!("{}/{len}", std::net::Ipv4Addr::from(net))
}

const WEST: &str = "198.18.1.2";
const MID_WEST: &str = "198.18.1.1";
const MID_EAST: &str = "198.18.1.5";
const EAST: &str = "198.18.1.6";
const TARGET: &str = "10.0.0.1";

/// BIRD's configuration for a node of the chain.
fn bird_conf(node: &str, table: &[(u32, u8)]) -> String {
    let session = |name: &str, local: &str, las: u32, peer: &str, ras: u32, export: &str| {
        format!(
            "protocol bgp {name} {{\n  local {local} as {las};\n  neighbor {peer} as {ras};\n  \
             connect retry time 5;\n  ipv4 {{ import all; export {export}; }};\n}}\n"
        )
    };
    let mut c = format!(
        "router id {};\nprotocol device {{}}\n",
        match node {
            "west" => WEST,
            "east" => EAST,
            _ => MID_WEST,
        }
    );
    match node {
        "west" => {
            c.push_str("protocol static small {\n  ipv4;\n");
            for p in table.iter().take(10) {
                c.push_str(&format!("  route {} blackhole;\n", cidr(*p)));
            }
            c.push_str("}\nprotocol static big {\n  disabled;\n  ipv4;\n");
            for p in table.iter().skip(10) {
                c.push_str(&format!("  route {} blackhole;\n", cidr(*p)));
            }
            c.push_str("}\n");
            c.push_str(&session(
                "mid",
                WEST,
                65001,
                MID_WEST,
                64600,
                "where source = RTS_STATIC",
            ));
        }
        "east" => c.push_str(&session("mid", EAST, 65003, MID_EAST, 64600, "none")),
        _ => {
            // A router installs what it learns: into its kernel.
            c.push_str("protocol kernel {\n  ipv4 { import none; export all; };\n}\n");
            c.push_str(&session("west", MID_WEST, 64600, WEST, 65001, "all"));
            c.push_str(&session("east", MID_EAST, 64600, EAST, 65003, "all"));
        }
    }
    c
}

/// The chain once: BIRD in west and east (and mid), sessions up, ten
/// routes; the data plane at the fixed rate; then the rest announced and
/// timed to east; the data plane again.
fn chain(
    exe: &Path,
    topology: &Path,
    bird_mid: bool,
    table: &[(u32, u8)],
    seconds: u32,
) -> Result<Chain> {
    let name = if bird_mid { "bench-bgpb" } else { "bench-bgp" };
    let (lab, _) = LabGuard::up(exe, topology, name)?;
    let dir = std::env::temp_dir().join(format!("d11-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let run = |node: &str, cmd: &[&str]| -> Result<String> {
        let o = lab
            .exec(node, cmd)
            .output()
            .with_context(|| format!("{node}: {cmd:?}"))?;
        if !o.status.success() {
            bail!(
                "{node}: {cmd:?}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let ctl = |node: &str| {
        dir.join(format!("{node}.ctl"))
            .to_string_lossy()
            .into_owned()
    };
    run(
        "west",
        &["ip", "addr", "add", &format!("{TARGET}/32"), "dev", "lo"],
    )?;
    let mut nodes = vec!["west", "east"];
    if bird_mid {
        nodes.push("mid");
    }
    for node in &nodes {
        let conf = dir.join(format!("{node}.conf"));
        std::fs::write(&conf, bird_conf(node, table))?;
        let pid = dir.join(format!("{node}.pid"));
        run(
            node,
            &[
                "bird",
                "-c",
                &conf.to_string_lossy(),
                "-s",
                &ctl(node),
                "-P",
                &pid.to_string_lossy(),
            ],
        )?;
    }
    let routes_in_east = || -> Result<usize> {
        let out = run(
            "east",
            &["birdc", "-s", &ctl("east"), "show", "route", "count"],
        )?;
        Ok(out
            .lines()
            .find(|l| l.contains("routes for"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(0))
    };
    // Until east holds `want` routes (at least, or at most when
    // withdrawing).
    let wait_for = |want: usize, withdrawing: bool, limit: Duration| -> Result<()> {
        let t0 = Instant::now();
        loop {
            let n = routes_in_east()?;
            if (n >= want && !withdrawing) || (n <= want && withdrawing) {
                return Ok(());
            }
            if t0.elapsed() > limit {
                bail!("east holds {n} routes, not {want}, after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for(10, false, Duration::from_secs(60)).context("the sessions coming up")?;
    let mid_pid = if bird_mid {
        std::fs::read_to_string(dir.join("mid.pid"))?
            .trim()
            .parse::<u32>()?
    } else {
        let state = d11_lab::SupervisorState::load(&d11_lab::RunDir::new(&lab.name))?;
        state
            .nodes
            .get("mid")
            .and_then(|s| s.pid)
            .context("mid has no pid")?
    };
    let ends = Ends {
        client: "east",
        server: "west",
        server_ip: TARGET,
    };
    let fixed = ["-u", "-b", lab::FIXED_RATE_BITS, "-l", "18", "-t", "1"];
    // mid's CPU (schedstat) over the frames iperf3 sent through it: its
    // control socket's status carries the whole RIB and FIB, too slow to
    // ask for with 100k routes (docs/bgp.md).
    let cpu_per_frame = || -> Result<Option<f64>> {
        if bird_mid {
            return Ok(None);
        }
        // Each run starts once mid is done with the last burst of UPDATEs
        // (east holding them says mid sent them, not that it is idle): a
        // tenth of a second at under 2 % of a CPU, or 5 s gone.
        for _ in 0..50 {
            let before = cpu_ns(mid_pid)?;
            std::thread::sleep(Duration::from_millis(100));
            if cpu_ns(mid_pid)?.saturating_sub(before) < 2_000_000 {
                break;
            }
        }
        let before = cpu_ns(mid_pid)?;
        let udp = lab::iperf(&lab, &ends, &fixed)?.udp(1);
        let cpu = cpu_ns(mid_pid)?.saturating_sub(before);
        let frames = udp.packets;
        Ok((frames > 0.0).then(|| cpu as f64 / frames))
    };
    // West announces the rest of the table, or withdraws it: the time
    // until east holds what west does.
    let big = |on: bool| -> Result<Duration> {
        let t0 = Instant::now();
        let verb = if on { "enable" } else { "disable" };
        run("west", &["birdc", "-s", &ctl("west"), verb, "big"])?;
        let want = if on { table.len() } else { 10 };
        wait_for(want, !on, Duration::from_secs(600))?;
        Ok(t0.elapsed())
    };
    lab.warm_up("east", TARGET)?;
    let cpu10 = cpu_per_frame()?;
    let rss_before = status_kib(mid_pid, "VmRSS")?;
    let propagation_s = big(true)?.as_secs_f64();
    let rss_after = status_kib(mid_pid, "VmRSS")?;
    let anon_after = status_kib(mid_pid, "RssAnon")?;
    let file_after = status_kib(mid_pid, "RssFile")?;
    let mut cpu_pairs = Vec::new();
    if let (Some(routes_10_ns), Some(routes_all_ns)) = (cpu10, cpu_per_frame()?) {
        cpu_pairs.push(CpuPair {
            routes_10_ns,
            routes_all_ns,
        });
        while cpu_pairs.len() < seconds as usize {
            big(false)?;
            let routes_10_ns = cpu_per_frame()?.context("no frame with 10 routes")?;
            big(true)?;
            let routes_all_ns = cpu_per_frame()?.context("no frame with all the routes")?;
            cpu_pairs.push(CpuPair {
                routes_10_ns,
                routes_all_ns,
            });
        }
    }
    let median = median_pair(&cpu_pairs);
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Chain {
        propagation_s,
        mid_rss_kib_before: rss_before,
        mid_rss_kib_after: rss_after,
        mid_anon_kib_after: anon_after,
        mid_file_kib_after: file_after,
        cpu_ns_per_frame_10_routes: median.map(|p| p.routes_10_ns),
        cpu_ns_per_frame_all_routes: median.map(|p| p.routes_all_ns),
        cpu_pairs,
    })
}

/// CPU nanoseconds a process has run (/proc/PID/schedstat).
fn cpu_ns(pid: u32) -> Result<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("reading /proc/{pid}/schedstat"))
}

/// A `kB` field of /proc/PID/status (proc(5)): `VmRSS`, `RssAnon`…
fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// The router alone: 64-byte UDP frames to 4,096 addresses inside the
/// table's prefixes, through a FIB of ten routes (10.0.0.0/8 and nine of
/// the table's) and through one of the whole table; and a `null` element.
fn core(table: &[(u32, u8)]) -> Core {
    use d11_core::L3Port;
    use d11_core::{Element, Outbox, PortId};
    use d11_elements::router::{Router, RouterConfig, StaticRoute};
    use d11_wire::{arp::ArpRepr, ethernet, ipv4::Ipv4Repr, MacAddr};
    let (east, west, peer) = (
        MacAddr([2, 0, 0, 0, 1, 0]),
        MacAddr([2, 0, 0, 0, 1, 1]),
        MacAddr([2, 0, 0, 0, 2, 0]),
    );
    let port = |name: &str, mac, address: &str| L3Port {
        name: name.into(),
        mac,
        address: address.parse().expect("literal"),
        mtu: 1500,
    };
    let via: std::net::Ipv4Addr = WEST.parse().expect("literal");
    let router = |routes: Vec<(u32, u8)>| {
        let mut r = Router::new(RouterConfig {
            ports: vec![
                port("east", east, "198.18.1.5/30"),
                port("west", west, "198.18.1.1/30"),
            ],
            routes: routes
                .into_iter()
                .map(|p| StaticRoute {
                    to: cidr(p).parse().expect("a prefix"),
                    via,
                })
                .collect(),
        });
        let mut arp = vec![];
        ArpRepr::request(peer, via, MID_WEST.parse().expect("literal")).emit_frame(&mut arp);
        r.on_frame(
            &mut d11_core::Instant::ZERO.into(),
            PortId(1),
            &arp,
            &mut Outbox::new(),
        );
        r
    };
    let mut small = vec![(0x0a00_0000, 8)];
    small.extend(table.iter().skip(1).take(9));
    let frames: Vec<Vec<u8>> = table
        .iter()
        .cycle()
        .step_by(table.len().max(4096) / 4096)
        .take(4096)
        .enumerate()
        .map(|(i, (net, len))| {
            let host = (i as u32 * 2_654_435_761) & !(u32::MAX << (32 - len));
            let mut f = vec![];
            ethernet::emit_header(
                &mut f,
                east,
                MacAddr([2, 0, 0, 0, 0, 6]),
                ethernet::EtherType::Ipv4,
            );
            Ipv4Repr {
                src: EAST.parse().expect("literal"),
                dst: (net | host).into(),
                protocol: 17,
                ttl: 64,
                ident: 1,
                dont_frag: true,
                payload_len: 26,
            }
            .emit(&mut f);
            f.extend_from_slice(&[0x30, 0x39, 0x14, 0x51, 0, 26, 0, 0]);
            f.extend_from_slice(&[b'x'; 18]);
            f
        })
        .collect();
    let time = |e: &mut dyn Element| {
        const N: u64 = 2_000_000;
        let mut out = Outbox::new();
        let mut cx = d11_core::Ctx::new(d11_core::Instant::ZERO, 1);
        let t0 = Instant::now();
        for i in 0..N {
            out.clear();
            let now = d11_core::Instant::from_micros(1_000 + i / 16);
            e.on_frame(
                cx.at(now),
                PortId(0),
                &frames[i as usize % frames.len()],
                &mut out,
            );
        }
        assert_eq!(out.frames().count(), 1, "the frame was forwarded");
        t0.elapsed().as_nanos() as f64 / N as f64
    };
    Core {
        router_10_routes_ns: time(&mut router(small)),
        router_all_routes_ns: time(&mut router(table.to_vec())),
        null_ns: time(&mut d11_elements::null::Null::new(2)),
    }
}

/// double11 up; the c1–c2 wire at 100 % loss; orders tried back to back
/// until one succeeds.
fn convergence(exe: &Path, topology: &Path) -> Result<Convergence> {
    let text = std::fs::read_to_string(topology)?;
    let v: toml::Value = toml::from_str(&text)?;
    // a2's first neighbour (c1): the session whose hold timer the cut expires.
    let hold_time_s = v["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"].as_str() == Some("a2")))
        .and_then(|a2| a2["config"]["bgp"]["neighbors"][0]["hold_time"].as_integer())
        .context("a2's first neighbour has no hold_time")? as f64;
    let (lab, _) = LabGuard::up(exe, topology, "bench-bgpc")?;
    let d11 = |args: &[&str]| Command::new(exe).args(args).output();
    let order = || -> Result<bool> {
        Ok(d11(&[
            "order",
            "--name",
            &lab.name,
            "--retries",
            "0",
            "--timeout-ms",
            "1000",
            "--no-httpdns",
            "--json",
        ])?
        .status
        .success())
    };
    if !order()? {
        bail!("the first order failed before any cut");
    }
    let o = d11(&["impair", "--name", &lab.name, "c1--c2", "loss=100%"])?;
    if !o.status.success() {
        bail!("d11 impair: {}", String::from_utf8_lossy(&o.stderr).trim());
    }
    let t0 = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        if order()? {
            break;
        }
        if t0.elapsed() > Duration::from_secs(120) {
            bail!("no order succeeded within 120 s of the cut");
        }
    }
    let order_again_s = t0.elapsed().as_secs_f64();
    drop(lab);
    Ok(Convergence {
        hold_time_s,
        order_again_s,
        attempts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_distinct_prefixes_of_several_lengths_with_the_target_first() {
        let t = prefixes(20_000);
        assert_eq!(t.len(), 20_000);
        assert_eq!(t[0], (0x0a00_0000, 24));
        let set: BTreeSet<_> = t.iter().collect();
        assert_eq!(set.len(), t.len());
        let lens: BTreeSet<u8> = t.iter().map(|p| p.1).collect();
        assert_eq!(
            lens.into_iter().collect::<Vec<_>>(),
            vec![22, 23, 24, 25, 26, 27, 28]
        );
        assert!(t
            .iter()
            .all(|(net, len)| net >> 24 == 10 && net & !(u32::MAX << (32 - len)) == 0));
        assert_eq!(prefixes(20_000), t, "the same seed, the same table");
    }

    #[test]
    fn the_router_alone_forwards_every_frame_through_both_tables() {
        // `core` asserts each timed frame leaves; the figures are not checked.
        let c = core(&prefixes(5_000));
        assert!(c.router_10_routes_ns > 0.0 && c.router_all_routes_ns > 0.0 && c.null_ns > 0.0);
    }

    #[test]
    fn the_median_pair_is_the_one_with_the_middle_ratio() {
        let pairs: Vec<CpuPair> = [(100.0, 150.0), (200.0, 180.0), (100.0, 110.0), (50.0, 0.0)]
            .map(|(routes_10_ns, routes_all_ns)| CpuPair {
                routes_10_ns,
                routes_all_ns,
            })
            .to_vec();
        // Ratios 1.5, 0.9, 1.1, 0: the lower middle of four is 0.9.
        assert_eq!(median_pair(&pairs), Some(pairs[1]));
        assert_eq!(median_pair(&pairs[..3]), Some(pairs[2]));
        assert_eq!(median_pair(&[]), None);
    }

    #[test]
    fn figures_name_their_baselines_and_goals() {
        let chain = |s, rss| Chain {
            propagation_s: s,
            mid_rss_kib_before: 10_000,
            mid_rss_kib_after: rss,
            mid_anon_kib_after: rss / 2,
            mid_file_kib_after: rss / 2,
            cpu_ns_per_frame_10_routes: Some(1000.0),
            cpu_ns_per_frame_all_routes: Some(1100.0),
            cpu_pairs: [(1000.0, 1100.0), (900.0, 1350.0), (1000.0, 900.0)]
                .map(|(routes_10_ns, routes_all_ns)| CpuPair {
                    routes_10_ns,
                    routes_all_ns,
                })
                .to_vec(),
        };
        let b = BgpBench {
            prefixes: 1000,
            ours: Some(chain(2.0, 20_000)),
            bird: Some(chain(4.0, 30_000)),
            core: None,
            convergence: Some(Convergence {
                hold_time_s: 9.0,
                order_again_s: 8.5,
                attempts: 8,
            }),
            skipped: vec![],
        };
        let f = b.figures();
        assert_eq!((f[0].value, f[0].base), (Some(2.0), Some(4.0)));
        assert_eq!((f[2].value, f[2].base), (Some(10_000.0), Some(15_000.0)));
        assert_eq!(f[4].value, Some(10_000.0 * 1024.0 / 1000.0));
        assert_eq!(
            f[5].figure,
            "mid's CPU per frame at 20k frames/s with 1000 routes, ns \
             (the median of 3 pairs; ratios 0.90–1.50×)"
        );
        let last = f.last().unwrap();
        assert_eq!(last.goal, Goal::value_at_most(10.0));
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(serde_json::from_str::<BgpBench>(&json).unwrap(), b);
    }
}
