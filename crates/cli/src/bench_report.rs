//! `d11 bench report`: every benchmark of the lab in one run, one report.
//!
//! Runs `d11 bench forward`, `cloud`, `mobile`, `order` and `rpc`, then
//! `d11 bench order` once more across 1, 10, 100 and 1,000 phones with the
//! direct-to-controller baseline (`phones`), one after the other, each as a
//! child process of this same binary with `--json`: a bench that fails (or
//! panics) is marked failed with its error and the others still run, and no
//! bench code is repeated here. Each bench's printed table goes to
//! `DIR/NAME.txt`, its progress to this terminal.
//!
//! Then `DIR/bench.json` holds every bench's JSON under its name beside the
//! machine (CPUs, kernel, load average before and after, date, git commit),
//! and `DIR/bench.md` one section per bench — figure, value, the baseline
//! measured in the same run, its value, the ratio and the goal — plus the
//! orders against the number of phones and the packets per second per
//! element at saturation. The Markdown is a pure function of `bench.json`
//! ([`markdown`]), so it is tested without root from canned figures.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime};

/// Options of `d11 bench report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A smoke run: one round and 2-second runs in every bench, phones up to 100.
    #[arg(long)]
    pub quick: bool,
    /// Directory for bench.json, bench.md and each bench's own output.
    #[arg(long, default_value = "d11-bench", value_name = "DIR")]
    pub out: PathBuf,
    /// Only these benches, in this run's order.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<Bench>,
    /// Directory holding the topologies (passed on to every bench).
    #[arg(long, default_value = "netns")]
    pub topologies: PathBuf,
    /// Run nothing: write DIR/bench.md again from this bench.json of an earlier run.
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
}

/// One bench of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Bench {
    /// Routers vs. kernel forwarding and null elements.
    Forward,
    /// vSwitches vs. null elements and kernel VXLAN.
    Cloud,
    /// enb, sgw, pgw vs. null elements.
    Mobile,
    /// Orders/s: full path vs. direct, l4lb vs. haproxy, backend vs. controller-only.
    Order,
    /// RPC across VXLAN vs. loopback.
    Rpc,
    /// Orders/s and latency against 1, 10, 100 (and 1,000) phones, full path vs. direct.
    Phones,
    /// The same with simulated phones (`d11 load`: own address, bearer, stack) on the whole path.
    SimPhones,
}

/// Every bench, in the order a report runs them.
const BENCHES: [Bench; 7] = [
    Bench::Forward,
    Bench::Cloud,
    Bench::Mobile,
    Bench::Order,
    Bench::Rpc,
    Bench::Phones,
    Bench::SimPhones,
];

impl Bench {
    fn name(self) -> &'static str {
        match self {
            Bench::Forward => "forward",
            Bench::Cloud => "cloud",
            Bench::Mobile => "mobile",
            Bench::Order => "order",
            Bench::Rpc => "rpc",
            Bench::Phones => "phones",
            Bench::SimPhones => "sim-phones",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Bench::Forward => "forward: four routers vs. kernel forwarding and null elements",
            Bench::Cloud => "cloud: two vSwitches and a switch vs. kernel VXLAN and null elements",
            Bench::Mobile => "mobile: enb, sgw, pgw (GTP-U, NAT) vs. null elements",
            Bench::Order => {
                "order: full path vs. direct, l4lb vs. haproxy, the shop's backend vs. controller-only"
            }
            Bench::Rpc => "rpc: one RPC connection across VXLAN vs. loopback",
            Bench::Phones => "phones: orders against the number of phones, full path vs. direct",
            Bench::SimPhones => {
                "sim-phones: orders against the number of simulated phones (d11 load), whole path vs. direct"
            }
        }
    }

    /// The `d11` arguments that run this bench and write its JSON to `json`.
    fn args(self, quick: bool, json: &Path, topologies: &Path) -> Vec<String> {
        let sub = match self {
            Bench::Phones => "order",
            Bench::SimPhones => "phones",
            b => b.name(),
        };
        let mut a: Vec<String> = vec!["bench".into(), sub.into()];
        if self == Bench::Phones {
            let clients = if quick { "1,10,100" } else { "1,10,100,1000" };
            a.extend(["--clients", clients, "--variants", "direct,full"].map(String::from));
        }
        if quick && self == Bench::SimPhones {
            a.extend(
                ["--phones", "1,10,100", "--orders", "100", "--seconds", "2"].map(String::from),
            );
        } else if quick {
            let rounds = match self {
                // One lab-up timing run stands for forward's one round.
                Bench::Forward => ["--up-runs", "1"],
                _ => ["--rounds", "1"],
            };
            a.extend(rounds.map(String::from));
            a.extend(["--seconds", "2"].map(String::from));
        }
        a.extend([
            "--topologies".into(),
            topologies.to_string_lossy().into_owned(),
            "--json".into(),
            json.to_string_lossy().into_owned(),
        ]);
        a
    }
}

pub fn report(args: &ReportArgs) -> Result<()> {
    if let Some(from) = &args.from {
        let text =
            std::fs::read_to_string(from).with_context(|| format!("reading {}", from.display()))?;
        let report: Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", from.display()))?;
        std::fs::create_dir_all(&args.out)
            .with_context(|| format!("creating {}", args.out.display()))?;
        let md_path = args.out.join("bench.md");
        let md = markdown(&report);
        std::fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;
        println!("{md}");
        return Ok(());
    }
    crate::need_root("d11 bench report")?;
    let exe = std::env::current_exe().context("cannot find the d11 binary")?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let chosen: Vec<Bench> = BENCHES
        .into_iter()
        .filter(|b| args.only.is_empty() || args.only.contains(b))
        .collect();
    let started = SystemTime::now();
    let load_before = loadavg();
    let mut benches = serde_json::Map::new();
    for b in &chosen {
        eprintln!("bench report: {} ({})", b.name(), b.title());
        benches.insert(b.name().into(), run_bench(&exe, *b, args)?);
    }
    let machine = json!({
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .ok(),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "started_utc": utc(started),
        "finished_utc": utc(SystemTime::now()),
        "git_commit": git_commit(),
    });
    let report = json!({ "machine": machine, "quick": args.quick, "benches": benches });
    let (json_path, md_path) = (args.out.join("bench.json"), args.out.join("bench.md"));
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    let md = markdown(&report);
    std::fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;
    println!("{md}");
    eprintln!(
        "bench report: wrote {} and {}",
        md_path.display(),
        json_path.display()
    );
    let failed: Vec<&str> = chosen
        .iter()
        .map(|b| b.name())
        .filter(|n| report["benches"][*n]["status"] != "ok")
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} of {} benches failed ({}); {} marks them with their errors",
            failed.len(),
            chosen.len(),
            failed.join(", "),
            md_path.display()
        );
    }
    Ok(())
}

/// Runs one bench as `d11 bench …` and gives its entry of bench.json:
/// status, command, wall time, its JSON or its error.
fn run_bench(exe: &Path, b: Bench, args: &ReportArgs) -> Result<Value> {
    let json_path = args.out.join(format!("{}.json", b.name()));
    let text_path = args.out.join(format!("{}.txt", b.name()));
    let _ = std::fs::remove_file(&json_path);
    let argv = b.args(args.quick, &json_path, &args.topologies);
    let command = format!("d11 {}", argv.join(" "));
    let stdout = std::fs::File::create(&text_path)
        .with_context(|| format!("creating {}", text_path.display()))?;
    let t0 = Instant::now();
    let outcome = (|| -> Result<Value> {
        let mut child = Command::new(exe)
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the bench")?;
        // Its progress goes on to this terminal; the last lines name the error.
        let mut last = Vec::<String>::new();
        if let Some(err) = child.stderr.take() {
            for line in std::io::BufReader::new(err).lines() {
                let line = line.unwrap_or_default();
                eprintln!("  {line}");
                last.push(line);
                if last.len() > 20 {
                    last.remove(0);
                }
            }
        }
        let status = child.wait().context("waiting for the bench")?;
        if !status.success() {
            bail!("{}", failure(&last, &status.to_string()));
        }
        let text = std::fs::read_to_string(&json_path)
            .with_context(|| format!("the bench wrote no {}", json_path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", json_path.display()))
    })();
    let wall_s = t0.elapsed().as_secs_f64();
    Ok(match outcome {
        Ok(r) => json!({ "status": "ok", "command": command, "wall_s": wall_s, "report": r }),
        Err(e) => {
            let error = format!("{e:#}");
            eprintln!("bench report: {} failed: {error}", b.name());
            json!({ "status": "failed", "command": command, "wall_s": wall_s, "error": error })
        }
    })
}

/// The error of a failed bench from the last lines it wrote on stderr: its
/// `d11: …` line, a panic's message, or else its last line.
fn failure(last: &[String], status: &str) -> String {
    if let Some(l) = last.iter().rev().find_map(|l| l.strip_prefix("d11: ")) {
        return l.to_string();
    }
    if let Some(i) = last.iter().position(|l| l.contains("panicked at")) {
        let msg: Vec<&str> = last[i..]
            .iter()
            .take(2)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect();
        return format!("{} ({status})", msg.join(" "));
    }
    match last.iter().rev().find(|l| !l.trim().is_empty()) {
        Some(l) => format!("{} ({status})", l.trim()),
        None => format!("the bench ended ({status})"),
    }
}

/// The 1, 5 and 15 minute load averages.
fn loadavg() -> Value {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let v: Vec<f64> = text
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    json!(v)
}

fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

/// `t` as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Year, month, day of a count of days since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

// ---- Composition: bench.json → bench.md (pure) ----

/// A figure of a bench at `path` (object keys separated by `.`), if it is a finite number.
fn fig(v: &Value, path: &str) -> Option<f64> {
    path.split('.')
        .try_fold(v, |x, k| x.get(k))
        .and_then(Value::as_f64)
        .filter(|x| x.is_finite())
}

/// What a goal bounds: the ratio to the baseline, or the value itself.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Goal {
    limit: f64,
    at_most: bool,
    of_value: bool,
}

impl Goal {
    fn ratio_at_most(limit: Option<f64>) -> Option<Goal> {
        limit.map(|limit| Goal {
            limit,
            at_most: true,
            of_value: false,
        })
    }
    fn ratio_at_least(limit: Option<f64>) -> Option<Goal> {
        limit.map(|limit| Goal {
            limit,
            at_most: false,
            of_value: false,
        })
    }
    fn value_at_most(limit: Option<f64>) -> Option<Goal> {
        limit.map(|limit| Goal {
            limit,
            at_most: true,
            of_value: true,
        })
    }

    /// Met, missed, or `None` without the figure it bounds.
    fn met(&self, row: &Row) -> Option<bool> {
        let x = if self.of_value {
            row.value
        } else {
            row.ratio()
        }?;
        Some(if self.at_most {
            x <= self.limit
        } else {
            x >= self.limit
        })
    }

    fn cell(&self, row: &Row) -> String {
        let bound = format!(
            "{} {}{}",
            if self.at_most { "≤" } else { "≥" },
            num(self.limit),
            if self.of_value { "" } else { "×" }
        );
        match self.met(row) {
            Some(true) => format!("{bound}: met"),
            Some(false) => format!("{bound}: **missed**"),
            None => format!("{bound}: no figure"),
        }
    }
}

/// One line of a bench's table.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    figure: String,
    value: Option<f64>,
    baseline: String,
    base: Option<f64>,
    /// The bench's own ratio (e.g. the median of its rounds' ratios), when
    /// it gives one; otherwise value ÷ baseline value.
    own_ratio: Option<f64>,
    goal: Option<Goal>,
}

impl Row {
    fn new(
        figure: impl Into<String>,
        value: Option<f64>,
        baseline: &str,
        base: Option<f64>,
    ) -> Row {
        Row {
            figure: figure.into(),
            value,
            baseline: baseline.into(),
            base,
            own_ratio: None,
            goal: None,
        }
    }
    fn ratio_from(mut self, r: Option<f64>) -> Row {
        self.own_ratio = r;
        self
    }
    fn goal(mut self, g: Option<Goal>) -> Row {
        self.goal = g;
        self
    }
    fn ratio(&self) -> Option<f64> {
        self.own_ratio.or_else(|| match (self.value, self.base) {
            (Some(a), Some(b)) if b != 0.0 => Some(a / b),
            _ => None,
        })
    }
}

/// A number as the tables show it: fewer decimals as it grows; `—` when missing.
fn num(x: f64) -> String {
    if !x.is_finite() {
        "—".into()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn opt(x: Option<f64>) -> String {
    x.map_or("—".into(), num)
}

fn ratio_cell(x: Option<f64>) -> String {
    x.map_or("—".into(), |r| format!("{r:.2}×"))
}

fn table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| figure | value | baseline | baseline value | ratio | goal |\n|---|---:|---|---:|---:|---|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.figure,
            opt(r.value),
            if r.baseline.is_empty() {
                "—"
            } else {
                &r.baseline
            },
            opt(r.base),
            ratio_cell(r.ratio()),
            r.goal.map_or(String::new(), |g| g.cell(r)),
        ));
    }
    s
}

fn inverse(x: Option<f64>) -> Option<f64> {
    x.filter(|x| *x != 0.0).map(|x| 1.0 / x)
}

/// The largest value of an object of numbers (peak RSS per element), KiB → MiB.
fn largest_mib(v: &Value, path: &str) -> Option<f64> {
    let obj = path.split('.').try_fold(v, |x, k| x.get(k))?.as_object()?;
    obj.values()
        .filter_map(Value::as_f64)
        .reduce(f64::max)
        .map(|k| k / 1024.0)
}

/// TCP and 64-byte UDP through the lab of `ours` beside the kernel's lab
/// (`kernel`, named so) and the null elements', both from `variants`.
fn throughput_rows(r: &Value, ours: &str, kernel: &str) -> Vec<Row> {
    let v = |variant: &str, key: &str| fig(r, &format!("variants.{variant}.{key}"));
    let mut rows = vec![];
    for (what, key) in [
        ("TCP, Mbit/s (iperf3)", "tcp_mbit_s"),
        ("64 B UDP received, frames/s", "udp64_received_pps"),
    ] {
        for (baseline, variant) in [(kernel, "kernel"), ("null elements", "null")] {
            rows.push(Row::new(what, v(ours, key), baseline, v(variant, key)));
        }
    }
    rows
}

fn forward_rows(r: &Value) -> Vec<Row> {
    let v = |variant: &str, key: &str| fig(r, &format!("variants.{variant}.{key}"));
    let mut rows = throughput_rows(r, "router", "kernel forwarding");
    rows.push(
        Row::new(
            "element CPU per frame at 20k frames/s, ns",
            v("router", "cpu_ns_per_frame"),
            "null elements",
            v("null", "cpu_ns_per_frame"),
        )
        .ratio_from(fig(r, "ratios.router_vs_null_cpu_per_frame"))
        .goal(Goal::ratio_at_most(fig(
            r,
            "goals.router_vs_null_cpu_per_frame",
        ))),
    );
    rows.push(Row::new(
        "router alone (no I/O), ns/frame",
        fig(r, "element_core.router_ns_per_frame"),
        "null alone",
        fig(r, "element_core.null_ns_per_frame"),
    ));
    rows.push(
        Row::new(
            "peak RSS of the largest element, MiB",
            largest_mib(r, "variants.router.peak_rss_kib"),
            "null elements",
            largest_mib(r, "variants.null.peak_rss_kib"),
        )
        .goal(Goal::value_at_most(fig(
            r,
            "goals.peak_rss_mib_per_element",
        ))),
    );
    rows.push(
        Row::new(
            "`d11 up` of the carrier lab, s (median)",
            fig(r, "up_carrier.median_s"),
            "",
            None,
        )
        .goal(Goal::value_at_most(fig(r, "goals.up_carrier_s"))),
    );
    rows
}

fn cloud_rows(r: &Value) -> Vec<Row> {
    let v = |variant: &str, key: &str| fig(r, &format!("variants.{variant}.{key}"));
    let mut rows = throughput_rows(r, "vswitch", "kernel vxlan");
    rows.push(
        Row::new(
            "vSwitch CPU per frame at 20k frames/s (hosta+hostb), ns",
            v("vswitch", "hosts_ns_per_frame"),
            "null elements",
            v("null", "hosts_ns_per_frame"),
        )
        .ratio_from(fig(r, "ratios.vswitch_vs_null_cpu_per_frame"))
        .goal(Goal::ratio_at_most(fig(
            r,
            "goals.vswitch_vs_null_cpu_per_frame",
        ))),
    );
    rows.push(Row::new(
        "switch (tor) CPU per frame at 20k frames/s, ns",
        v("vswitch", "fixed_load.tor.ns_per_frame"),
        "null element",
        v("null", "fixed_load.tor.ns_per_frame"),
    ));
    for (what, key) in [
        ("vSwitch alone (no I/O), encapsulation, ns/frame", "encap"),
        ("vSwitch alone (no I/O), decapsulation, ns/frame", "decap"),
    ] {
        rows.push(Row::new(
            what,
            fig(r, &format!("element_core.{key}_ns_per_frame")),
            "null alone",
            fig(r, "element_core.null_ns_per_frame"),
        ));
    }
    rows.push(Row::new(
        "vgw NAT translate at 100k entries, ns",
        fig(r, "nat_translate_ns.100k_entries"),
        "1 entry",
        fig(r, "nat_translate_ns.1_entry"),
    ));
    rows
}

const MOBILE_POSITIONS: [&str; 3] = ["enb", "sgw", "pgw"];

fn mobile_rows(r: &Value) -> Vec<Row> {
    let v = |variant: &str, key: &str| fig(r, &format!("variants.{variant}.{key}"));
    let median = |key: &str| fig(r, &format!("ratios.{key}.median"));
    let goal = Goal::ratio_at_most(fig(r, "goals.mobile_vs_null_cpu_per_frame"));
    let mut rows = vec![];
    // The bench's ratios are costs (null rate ÷ mobile rate); the table's are value ÷ baseline.
    for (what, key, cost) in [
        (
            "TCP, Mbit/s (iperf3)",
            "tcp_mbit_s",
            "mobile_vs_null_cost_tcp",
        ),
        (
            "64 B UDP received, frames/s",
            "udp64_received_pps",
            "mobile_vs_null_cost_per_frame_udp64",
        ),
    ] {
        rows.push(
            Row::new(what, v("mobile", key), "null elements", v("null", key))
                .ratio_from(inverse(median(cost))),
        );
    }
    for pos in MOBILE_POSITIONS {
        let key = format!("fixed_load.{pos}.ns_per_frame");
        rows.push(
            Row::new(
                format!("{pos} CPU per frame at 20k frames/s, ns"),
                v("mobile", &key),
                "null element in its place",
                v("null", &key),
            )
            .ratio_from(median(&format!("mobile_vs_null_cpu_per_frame.{pos}")))
            .goal(goal),
        );
    }
    rows.push(
        Row::new(
            "enb+sgw+pgw CPU per frame at 20k frames/s, ns",
            v("mobile", "chain_ns_per_frame"),
            "null elements",
            v("null", "chain_ns_per_frame"),
        )
        .ratio_from(median("mobile_vs_null_cpu_per_frame_chain")),
    );
    for pos in MOBILE_POSITIONS {
        rows.push(Row::new(
            format!("{pos} alone (no I/O), uplink, ns/frame"),
            fig(r, &format!("mobile_core.{pos}_uplink_ns_per_frame")),
            "null alone",
            fig(r, "mobile_core.null_ns_per_frame"),
        ));
    }
    rows.push(Row::new(
        "pgw NAT translate at 100k entries, ns",
        fig(r, "mobile_core.nat_translate_ns_100k_entries"),
        "1 entry",
        fig(r, "mobile_core.nat_translate_ns_1_entry"),
    ));
    rows
}

/// The client counts of an order bench's JSON, as it ran them.
fn order_clients(r: &Value) -> Vec<String> {
    r["config"]["clients"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .map(|n| n.to_string())
        .collect()
}

fn order_rows(r: &Value) -> Vec<Row> {
    let has = |variant: &str| r["variants"].get(variant).is_some();
    let mut rows = vec![];
    for (variant, baseline, what, goal) in [
        (
            "direct",
            "direct to a controller",
            "full_vs_direct",
            "full_vs_direct_orders_per_s",
        ),
        (
            "local",
            "controller-only (no backend)",
            "backend_vs_local",
            "",
        ),
        (
            "haproxy",
            "haproxy in vm-lb",
            "l4lb_vs_haproxy",
            "l4lb_vs_haproxy_orders_per_s",
        ),
    ] {
        if !has("full") || !has(variant) {
            continue;
        }
        let goal = Goal::ratio_at_least(fig(r, &format!("goals.{goal}")));
        for n in order_clients(r) {
            let v = |variant: &str, key: &str| fig(r, &format!("variants.{variant}.{n}.{key}"));
            rows.push(
                Row::new(
                    format!("orders/s, clients = {n}"),
                    v("full", "orders_per_s"),
                    baseline,
                    v(variant, "orders_per_s"),
                )
                .ratio_from(fig(r, &format!("ratios.{what}_orders_per_s.{n}")))
                .goal(goal),
            );
            rows.push(
                Row::new(
                    format!("p50 latency, ms, clients = {n}"),
                    v("full", "p50_ms"),
                    baseline,
                    v(variant, "p50_ms"),
                )
                .ratio_from(fig(r, &format!("ratios.{what}_p50.{n}"))),
            );
        }
    }
    rows
}

/// Orders/s and latency against the number of phones: one line per count.
fn phones_table(r: &Value) -> String {
    let mut s = String::from(
        "| phones | orders/s full | orders/s direct | full ÷ direct | p50 ms full | p50 ms direct | \
         p99 ms full | p99 ms direct | errors full / direct |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for n in order_clients(r) {
        let v = |variant: &str, key: &str| fig(r, &format!("variants.{variant}.{n}.{key}"));
        let errors = |variant: &str| {
            r["variants"][variant][&n]["errors"]
                .as_u64()
                .map_or("—".into(), |e| e.to_string())
        };
        s.push_str(&format!(
            "| {n} | {} | {} | {} | {} | {} | {} | {} | {} / {} |\n",
            opt(v("full", "orders_per_s")),
            opt(v("direct", "orders_per_s")),
            ratio_cell(fig(r, &format!("ratios.full_vs_direct_orders_per_s.{n}"))),
            opt(v("full", "p50_ms")),
            opt(v("direct", "p50_ms")),
            opt(v("full", "p99_ms")),
            opt(v("direct", "p99_ms")),
            errors("full"),
            errors("direct"),
        ));
    }
    s
}

/// `d11 bench phones`: simulated phones on the whole path beside the same
/// number of kernel-stack clients straight to a controller.
fn sim_phones_table(r: &Value) -> String {
    let mut s = String::from(
        "| phones | orders | failed | orders/s | p50 ms | p99 ms | retransmissions | \
         direct orders/s | direct p50 ms | ÷ direct |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for run in r["runs"].as_array().into_iter().flatten() {
        let (p, d) = (&run["simulated"], &run["direct"]);
        let n = |v: &Value| v.as_u64().map_or("—".into(), |x| x.to_string());
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            n(&run["phones"]),
            n(&p["orders"]),
            n(&p["failed"]),
            opt(p["orders_per_s"].as_f64()),
            opt(p["latency_ms"]["p50"].as_f64()),
            opt(p["latency_ms"]["p99"].as_f64()),
            n(&p["retransmissions"]),
            opt(d["orders_per_s"].as_f64()),
            opt(d["p50_ms"].as_f64()),
            ratio_cell(run["orders_per_s_vs_direct"].as_f64()),
        ));
    }
    s
}

fn rpc_rows(r: &Value) -> Vec<Row> {
    let p = |path: &str, key: &str| fig(r, &format!("paths.{path}.{key}"));
    let median = |key: &str| fig(r, &format!("ratios_vxlan_vs_loopback.{key}.median"));
    let k = r["config"]["in_flight"]
        .as_u64()
        .map_or("K".into(), |k| k.to_string());
    let mut rows = vec![];
    for (what, key, own) in [
        (
            "sequential round trips/s".to_string(),
            "sequential_calls_per_s",
            true,
        ),
        (
            "sequential p50 latency, µs".into(),
            "sequential_p50_us",
            true,
        ),
        (
            "sequential p99 latency, µs".into(),
            "sequential_p99_us",
            false,
        ),
        (
            format!("calls/s, {k} in flight"),
            "pipelined_calls_per_s",
            true,
        ),
    ] {
        let row = Row::new(what, p("vxlan", key), "loopback", p("loopback", key));
        rows.push(if own {
            row.ratio_from(median(key))
        } else {
            row
        });
    }
    rows.push(Row::new(
        "elements' CPU per sequential call, µs",
        p("vxlan", "sequential_element_cpu_us_per_call"),
        "",
        None,
    ));
    rows
}

/// One line of the packets-per-second table.
struct PpsRow {
    element: &'static str,
    lab: &'static str,
    /// 64 B UDP frames/s received through the lab, and through its null lab.
    chain: (Option<f64>, Option<f64>),
    /// Element CPU ns per frame at the fixed load, and the null element's in its place.
    cpu: (Option<f64>, Option<f64>),
    /// The element alone (no I/O) ns per frame, and the null element alone.
    core: (Option<f64>, Option<f64>),
}

fn pps_rows(benches: &Value) -> Vec<PpsRow> {
    let f = |bench: &str, path: &str| fig(&benches[bench]["report"], path);
    let fw = |v: &str, k: &str| f("forward", &format!("variants.{v}.{k}"));
    let cl = |v: &str, k: &str| f("cloud", &format!("variants.{v}.{k}"));
    let mo = |v: &str, k: &str| f("mobile", &format!("variants.{v}.{k}"));
    let udp = "udp64_received_pps";
    let mut rows = vec![
        PpsRow {
            element: "router",
            lab: "forward: 4 routers in a row",
            chain: (fw("router", udp), fw("null", udp)),
            cpu: (
                fw("router", "cpu_ns_per_frame"),
                fw("null", "cpu_ns_per_frame"),
            ),
            core: (
                f("forward", "element_core.router_ns_per_frame"),
                f("forward", "element_core.null_ns_per_frame"),
            ),
        },
        PpsRow {
            element: "switch",
            lab: "cloud: tor, between the vSwitches",
            chain: (cl("vswitch", udp), cl("null", udp)),
            cpu: (
                cl("vswitch", "fixed_load.tor.ns_per_frame"),
                cl("null", "fixed_load.tor.ns_per_frame"),
            ),
            core: (None, None),
        },
        PpsRow {
            element: "vswitch",
            lab: "cloud: hosta, hostb (VXLAN)",
            chain: (cl("vswitch", udp), cl("null", udp)),
            cpu: (
                cl("vswitch", "hosts_ns_per_frame"),
                cl("null", "hosts_ns_per_frame"),
            ),
            core: (
                f("cloud", "element_core.encap_ns_per_frame"),
                f("cloud", "element_core.null_ns_per_frame"),
            ),
        },
    ];
    for (element, pos) in [("enb", "enb"), ("sgw", "sgw"), ("pgw", "pgw")] {
        rows.push(PpsRow {
            element,
            lab: "mobile: enb → sgw → pgw (GTP-U, NAT)",
            chain: (mo("mobile", udp), mo("null", udp)),
            cpu: (
                mo("mobile", &format!("fixed_load.{pos}.ns_per_frame")),
                mo("null", &format!("fixed_load.{pos}.ns_per_frame")),
            ),
            core: (
                f("mobile", &format!("mobile_core.{pos}_uplink_ns_per_frame")),
                f("mobile", "mobile_core.null_ns_per_frame"),
            ),
        });
    }
    rows.extend([
        PpsRow {
            element: "null",
            lab: "forward: 4 nulls in a row",
            chain: (fw("null", udp), fw("null", udp)),
            cpu: (
                fw("null", "cpu_ns_per_frame"),
                fw("null", "cpu_ns_per_frame"),
            ),
            core: (
                f("forward", "element_core.null_ns_per_frame"),
                f("forward", "element_core.null_ns_per_frame"),
            ),
        },
        PpsRow {
            element: "kernel forwarding",
            lab: "forward: 4 namespaces routing",
            chain: (fw("kernel", udp), fw("null", udp)),
            cpu: (None, None),
            core: (None, None),
        },
        PpsRow {
            element: "kernel vxlan + bridges",
            lab: "cloud: hosta, tor, hostb",
            chain: (cl("kernel", udp), cl("null", udp)),
            cpu: (None, None),
            core: (None, None),
        },
    ]);
    rows
}

fn pps_table(benches: &Value) -> String {
    let per_s = |ns: Option<f64>| ns.filter(|x| *x > 0.0).map(|x| 1e9 / x);
    // Rates: element ÷ null; from costs: null ns ÷ element ns.
    let rate_ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let mut s = String::from(
        "| element | measured in | 64 B UDP frames/s through the lab | × null lab | \
         CPU ns/frame at 20k frames/s | frames/s per core | × null | alone (no I/O), M frames/s | × null alone |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in pps_rows(benches) {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.element,
            r.lab,
            opt(r.chain.0),
            ratio_cell(rate_ratio(r.chain.0, r.chain.1)),
            opt(r.cpu.0),
            opt(per_s(r.cpu.0)),
            ratio_cell(rate_ratio(per_s(r.cpu.0), per_s(r.cpu.1))),
            opt(per_s(r.core.0).map(|x| x / 1e6)),
            ratio_cell(rate_ratio(per_s(r.core.0), per_s(r.core.1))),
        ));
    }
    s
}

/// bench.md from bench.json.
pub(crate) fn markdown(report: &Value) -> String {
    let m = &report["machine"];
    let load = |k: &str| {
        let l: Vec<String> = m[k]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_f64)
            .map(|x| format!("{x:.2}"))
            .collect();
        if l.is_empty() {
            "—".into()
        } else {
            l.join(" ")
        }
    };
    let s = |v: &Value| v.as_str().unwrap_or("—").to_string();
    let mut md = String::from("# double11 benchmark report\n\n");
    md.push_str(&format!(
        "Run from {} to {} on {} CPUs, Linux {}, commit {}; load average (1, 5, 15 min) {} before, {} after. {}\n\n",
        s(&m["started_utc"]),
        s(&m["finished_utc"]),
        m["cpus"].as_u64().unwrap_or(0),
        s(&m["kernel"]),
        s(&m["git_commit"]),
        load("loadavg_before"),
        load("loadavg_after"),
        if report["quick"].as_bool() == Some(true) {
            "A quick run (`--quick`): one round and 2-second runs in every bench, so every figure is noisy."
        } else {
            "Each bench with its own defaults (rounds and run lengths)."
        }
    ));
    md.push_str(
        "Every baseline was measured in this same run, its lab built just before or after the one \
         it is compared with. The ratio is value ÷ baseline value, or the bench's own ratio where it \
         takes the median of its rounds' ratios; a goal bounds the ratio (×) or the value itself.\n\n",
    );
    let benches = &report["benches"];
    md.push_str("| bench | status | wall s | command |\n|---|---|---:|---|\n");
    for b in BENCHES {
        let e = &benches[b.name()];
        if e.is_null() {
            continue;
        }
        md.push_str(&format!(
            "| {} | {} | {} | `{}` |\n",
            b.name(),
            if e["status"] == "ok" {
                "ok"
            } else {
                "**failed**"
            },
            opt(fig(e, "wall_s")),
            s(&e["command"]),
        ));
    }
    let goals: Vec<(String, bool)> = BENCHES
        .iter()
        .flat_map(|b| {
            let r = &benches[b.name()]["report"];
            let rows = if r.is_null() { vec![] } else { rows_of(*b, r) };
            rows.into_iter().filter_map(move |row| {
                let vs = if row.baseline.is_empty() {
                    String::new()
                } else {
                    format!(" vs. {}", row.baseline)
                };
                Some((
                    format!("{}: {}{vs}", b.name(), row.figure),
                    row.goal?.met(&row)?,
                ))
            })
        })
        .collect();
    let missed: Vec<&str> = goals
        .iter()
        .filter(|(_, met)| !met)
        .map(|(g, _)| g.as_str())
        .collect();
    md.push_str(&format!(
        "\nGoals: {} of {} met{}.\n",
        goals.len() - missed.len(),
        goals.len(),
        if missed.is_empty() {
            String::new()
        } else {
            format!("; missed: {}", missed.join("; "))
        }
    ));
    for b in BENCHES {
        let e = &benches[b.name()];
        if e.is_null() {
            continue;
        }
        md.push_str(&format!("\n## {}\n\n`{}`\n\n", b.title(), s(&e["command"])));
        if e["status"] != "ok" {
            md.push_str(&format!("**Failed**: {}\n", s(&e["error"])));
            continue;
        }
        let r = &e["report"];
        if b == Bench::Phones {
            md.push_str(&phones_table(r));
            md.push('\n');
        }
        if b == Bench::SimPhones {
            md.push_str(&sim_phones_table(r));
            continue;
        }
        md.push_str(&table(&rows_of(b, r)));
        if let Some(skipped) = r["skipped"].as_array().filter(|a| !a.is_empty()) {
            let names: Vec<&str> = skipped.iter().filter_map(Value::as_str).collect();
            md.push_str(&format!(
                "\nSkipped (not installed): {}.\n",
                names.join(", ")
            ));
        }
    }
    if [Bench::Forward, Bench::Cloud, Bench::Mobile]
        .iter()
        .any(|b| benches[b.name()]["status"] == "ok")
    {
        md.push_str("\n## Packets per second per element at saturation\n\n");
        md.push_str(&pps_table(benches));
        md.push_str(
            "\n*Through the lab*: iperf3's 64-byte UDP at full speed (`-b 0`), frames received per \
             second, every element of the lab sharing the machine's CPUs, so it is the rate of the \
             lab's chain of elements, compared with the same chain of `null` elements (the driver's \
             own cost). *Per core*: 10⁹ ÷ the element's CPU nanoseconds per frame at a fixed \
             20,000 frames/s, what one element would carry with a core to itself (a floor: at that \
             load each wakeup carries few frames). *Alone*: the element's `on_frame` in a loop, no \
             I/O, against `null`'s. Each null row is its lab's baseline.\n",
        );
    }
    md
}

fn rows_of(b: Bench, r: &Value) -> Vec<Row> {
    match b {
        Bench::Forward => forward_rows(r),
        Bench::Cloud => cloud_rows(r),
        Bench::Mobile => mobile_rows(r),
        Bench::Order | Bench::Phones => order_rows(r),
        Bench::Rpc => rpc_rows(r),
        Bench::SimPhones => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Canned reports in the shapes each bench's `summarise` writes (read
    // from bench.rs, bench_cloud.rs, bench_mobile.rs, bench_order.rs and
    // bench_rpc.rs and their unit tests), with round figures.

    fn forward() -> Value {
        let variant = |tcp: f64, pps: f64, cpu: Option<f64>, rss: u64| {
            json!({ "tcp_mbit_s": tcp, "udp64_sent_pps": pps * 1.5, "udp64_received_pps": pps,
                    "udp64_loss": 0.33, "cpu_ns_per_frame": cpu,
                    "peak_rss_kib": if cpu.is_some() { json!({ "r1": rss, "r2": rss / 2 }) } else { json!({}) } })
        };
        json!({
            "variants": {
                "kernel": variant(20_000.0, 400_000.0, None, 0),
                "null": variant(2_000.0, 100_000.0, Some(4_000.0), 3_072),
                // The router costs 1.5× a null per frame: over the 1.2× goal.
                "router": variant(1_000.0, 80_000.0, Some(6_000.0), 4_096),
            },
            "ratios": { "router_vs_null_cpu_per_frame": 1.5, "router_vs_null_cost_per_frame_udp64": 1.25,
                        "router_vs_null_cost_tcp": 2.0, "router_vs_kernel_cost_per_frame_udp64": 5.0,
                        "router_vs_kernel_cost_tcp": 20.0 },
            "goals": { "router_vs_null_cpu_per_frame": 1.2, "peak_rss_mib_per_element": 20, "up_carrier_s": 2.0 },
            "up_carrier": { "runs_s": [1.0], "median_s": 1.0 },
            "element_core": { "router_ns_per_frame": 50.0, "null_ns_per_frame": 10.0 },
            "mobile_core": {},
        })
    }

    /// A cloud report in the shape of `bench_cloud::summarise` (not called:
    /// it times the vSwitch core two million times).
    fn cloud() -> Value {
        let node = |ns: f64| json!({ "cpu_ns": 0, "rx_frames": 0, "ns_per_frame": ns });
        let variant = |tcp: f64, pps: f64, host: f64, tor: f64| {
            json!({ "tcp_mbit_s": tcp, "udp64_sent_pps": pps, "udp64_received_pps": pps,
                    "udp64_loss": 0.0,
                    "fixed_load": { "hosta": node(host), "tor": node(tor), "hostb": node(host) },
                    "hosts_ns_per_frame": host, "peak_rss_kib": {} })
        };
        json!({
            "variants": {
                "kernel": variant(9_000.0, 300_000.0, 0.0, 0.0),
                "null": variant(1_500.0, 90_000.0, 5_000.0, 5_000.0),
                "vswitch": variant(1_200.0, 60_000.0, 6_000.0, 5_500.0),
            },
            "ratios": { "vswitch_vs_null_cpu_per_frame": 1.2 },
            "goals": { "vswitch_vs_null_cpu_per_frame": 1.3 },
            "element_core": { "encap_ns_per_frame": 60.0, "decap_ns_per_frame": 70.0, "null_ns_per_frame": 10.0 },
            "nat_translate_ns": { "1_entry": 20.0, "100k_entries": 25.0 },
            "rounds_cpu_ratio": [1.2],
        })
    }

    fn mobile() -> Value {
        let variant = |pps: f64, ns: f64| {
            let node = json!({ "ns_per_frame": ns });
            json!({ "tcp_mbit_s": 100.0, "udp64_sent_pps": pps, "udp64_received_pps": pps,
                    "udp64_loss": 0.0, "fixed_load_loss": 0.0,
                    "fixed_load": { "enb": node, "sgw": node, "pgw": node },
                    "chain_ns_per_frame": ns, "peak_rss_kib": { "enb": 3000, "sgw": 3000, "pgw": 3000 },
                    "rounds": [] })
        };
        let m = |x: f64| json!({ "median": x, "rounds": [x] });
        json!({
            "rounds": 1,
            "variants": { "null": variant(100_000.0, 1000.0), "mobile": variant(50_000.0, 1100.0) },
            "ratios": {
                "mobile_vs_null_cpu_per_frame": { "enb": m(1.1), "sgw": m(1.1), "pgw": m(1.1) },
                "mobile_vs_null_cpu_per_frame_chain": m(1.1),
                // Costs: null's rate ÷ mobile's.
                "mobile_vs_null_cost_per_frame_udp64": m(2.0),
                "mobile_vs_null_cost_tcp": m(1.0),
            },
            "goals": { "mobile_vs_null_cpu_per_frame": 1.3 },
            "mobile_core": { "enb_uplink_ns_per_frame": 40.0, "sgw_uplink_ns_per_frame": 30.0,
                             "pgw_uplink_ns_per_frame": 50.0, "null_ns_per_frame": 10.0,
                             "nat_translate_ns_1_entry": 20.0, "nat_translate_ns_100k_entries": 25.0 },
        })
    }

    /// An order report over `variants` (name, orders/s per client) and `clients`.
    fn order(variants: &[(&str, f64)], clients: &[usize]) -> Value {
        let mut out = serde_json::Map::new();
        for (v, rate) in variants {
            let per_n: serde_json::Map<String, Value> = clients
                .iter()
                .map(|n| {
                    let fig = json!({ "orders_per_s": rate * *n as f64, "p50_ms": 1000.0 / rate,
                                      "p99_ms": 3000.0 / rate, "errors": 0, "lab_us_per_order": 100.0 });
                    (n.to_string(), fig)
                })
                .collect();
            out.insert(v.to_string(), Value::Object(per_n));
        }
        let rate = |v: &str| variants.iter().find(|(n, _)| *n == v).map(|(_, r)| *r);
        // Per client count, a ÷ b; null when either lab did not run.
        let ratio = |a: &str, b: &str, inverse: bool| match (rate(a), rate(b)) {
            (Some(x), Some(y)) => {
                let r = if inverse { y / x } else { x / y };
                Value::Object(clients.iter().map(|n| (n.to_string(), json!(r))).collect())
            }
            _ => Value::Null,
        };
        json!({
            "variants": out,
            "ratios": {
                "full_vs_direct_orders_per_s": ratio("full", "direct", false),
                "full_vs_direct_p50": ratio("full", "direct", true),
                "backend_vs_local_orders_per_s": ratio("full", "local", false),
                "backend_vs_local_p50": ratio("full", "local", true),
                "l4lb_vs_haproxy_orders_per_s": ratio("full", "haproxy", false),
                "l4lb_vs_haproxy_p50": ratio("full", "haproxy", true),
            },
            "goals": { "full_vs_direct_orders_per_s": 0.5, "l4lb_vs_haproxy_orders_per_s": 1.0 },
            "config": { "clients": clients, "seconds": 2, "rounds": 1, "cpus": 2 },
            "skipped": [],
        })
    }

    fn rpc() -> Value {
        let path = |x: f64| {
            json!({ "sequential_calls_per_s": x, "sequential_p50_us": 1e6 / x,
                    "sequential_p99_us": 2e6 / x, "pipelined_calls_per_s": x * 4.0, "errors": 0 })
        };
        let m = |x: f64| json!({ "median": x, "rounds": [x] });
        json!({
            "paths": { "loopback": path(20_000.0), "vxlan": path(5_000.0) },
            "ratios_vxlan_vs_loopback": {
                "sequential_calls_per_s": m(0.25), "sequential_p50_us": m(4.0), "pipelined_calls_per_s": m(0.25),
            },
            "rounds": [],
            "config": { "seconds": 2.0, "rounds": 1, "in_flight": 32, "payload_bytes": 32, "cpus": 2 },
        })
    }

    fn ok(report: Value) -> Value {
        json!({ "status": "ok", "command": "d11 bench …", "wall_s": 10.0, "report": report })
    }

    fn full_report() -> Value {
        json!({
            "machine": { "cpus": 2, "kernel": "6.1.0", "loadavg_before": [1.0, 2.0, 3.0],
                         "loadavg_after": [2.0, 2.0, 3.0], "started_utc": "2026-11-24 22:00:00 UTC",
                         "finished_utc": "2026-11-24 22:10:00 UTC", "git_commit": "abc" },
            "quick": true,
            "benches": {
                "forward": ok(forward()),
                "cloud": ok(cloud()),
                "mobile": ok(mobile()),
                "order": ok(order(&[("direct", 100.0), ("full", 40.0), ("local", 50.0), ("haproxy", 38.0)], &[1, 8])),
                "rpc": { "status": "failed", "command": "d11 bench rpc", "wall_s": 1.0,
                         "error": "d11 bench rpc creates network namespaces and must run as root (try sudo)" },
                "phones": ok(order(&[("direct", 100.0), ("full", 60.0)], &[1, 10, 100])),
                "sim-phones": ok(json!({"runs": [
                    {"phones": 1, "orders_per_s_vs_direct": 0.1,
                     "simulated": {"orders": 10, "failed": 0, "orders_per_s": 10.0,
                                   "latency_ms": {"p50": 9.0, "p99": 20.0}, "retransmissions": 0},
                     "direct": {"orders_per_s": 100.0, "p50_ms": 1.0}}
                ]})),
            }
        })
    }

    /// The row of `md` whose first cells are `start`.
    fn line<'a>(md: &'a str, start: &str) -> &'a str {
        md.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line {start:?} in\n{md}"))
    }

    #[test]
    fn every_bench_gets_its_section_with_figures_beside_baselines_of_the_same_run() {
        let md = markdown(&full_report());
        for b in BENCHES {
            assert!(
                md.contains(&format!("\n## {}\n", b.title())),
                "{}",
                b.name()
            );
        }
        // forward: router against kernel forwarding and against nulls.
        assert!(md.contains(
            "| 64 B UDP received, frames/s | 80000 | kernel forwarding | 400000 | 0.20× |"
        ));
        assert!(
            md.contains("| 64 B UDP received, frames/s | 80000 | null elements | 100000 | 0.80× |")
        );
        // cloud: vswitch against kernel vxlan.
        assert!(md.contains("| TCP, Mbit/s (iperf3) | 1200 | kernel vxlan | 9000 | 0.13× |"));
        // mobile: the bench's cost ratio (null ÷ mobile rate) turned into value ÷ baseline.
        assert!(
            md.contains("| 64 B UDP received, frames/s | 50000 | null elements | 100000 | 0.50× |")
        );
        // order: full path against direct, its goal met (0.40× ≥ 0.5× is not).
        assert!(md.contains("| orders/s, clients = 8 | 320 | direct to a controller | 800 | 0.40× | ≥ 0.50×: **missed** |"));
        assert!(md.contains(
            "| orders/s, clients = 1 | 40.0 | controller-only (no backend) | 50.0 | 0.80× |"
        ));
        // The machine and the kind of run.
        assert!(md.contains(
            "on 2 CPUs, Linux 6.1.0, commit abc; load average (1, 5, 15 min) 1.00 2.00 3.00 before"
        ));
        assert!(md.contains("A quick run"));
    }

    #[test]
    fn a_missed_goal_is_shown_missed_and_a_met_one_met() {
        let md = markdown(&full_report());
        // The router costs 1.5× a null per frame, over its 1.2× goal.
        assert_eq!(
            line(&md, "| element CPU per frame at 20k frames/s, ns |"),
            "| element CPU per frame at 20k frames/s, ns | 6000 | null elements | 4000 | 1.50× | ≤ 1.20×: **missed** |"
        );
        // The vSwitch's 1.2× is under its 1.3× goal.
        assert!(line(&md, "| vSwitch CPU per frame").ends_with("| 1.20× | ≤ 1.30×: met |"));
        // A goal on the value itself: peak RSS 4 MiB ≤ 20 MiB.
        assert!(line(&md, "| peak RSS")
            .ends_with("| 4.00 | null elements | 3.00 | 1.33× | ≤ 20.0: met |"));
        // l4lb 40 vs haproxy 38 orders/s: 1.05× ≥ 1.0×.
        assert!(md.contains(
            "| orders/s, clients = 1 | 40.0 | haproxy in vm-lb | 38.0 | 1.05× | ≥ 1.00×: met |"
        ));
        // The summary counts them and names the missed ones.
        let goals = line(&md, "Goals: ");
        assert!(
            goals.contains("forward: element CPU per frame at 20k frames/s, ns vs. null elements"),
            "{goals}"
        );
        assert!(
            goals.contains("order: orders/s, clients = 8 vs. direct to a controller"),
            "{goals}"
        );
        assert!(!goals.contains("peak RSS"), "{goals}");
    }

    #[test]
    fn a_failed_bench_is_marked_failed_with_its_error_and_the_rest_still_reported() {
        let md = markdown(&full_report());
        assert!(line(&md, "| rpc |").starts_with("| rpc | **failed** |"));
        assert!(md.contains(
            "**Failed**: d11 bench rpc creates network namespaces and must run as root (try sudo)"
        ));
        assert!(line(&md, "| phones |").starts_with("| phones | ok |"));
        // A report of the rpc bench alone, when it ran.
        let mut r = full_report();
        r["benches"]["rpc"] = ok(rpc());
        let md = markdown(&r);
        assert!(md.contains("| sequential round trips/s | 5000 | loopback | 20000 | 0.25× |"));
        assert!(md.contains("| calls/s, 32 in flight | 20000 | loopback | 80000 | 0.25× |"));
        assert!(md.contains("| sequential p99 latency, µs | 400 | loopback | 100 | 4.00× |"));
    }

    #[test]
    fn simulated_phones_are_shown_beside_the_direct_clients() {
        let r = json!({"runs": [
            {"phones": 10, "orders_per_s_vs_direct": 0.16,
             "simulated": {"orders": 500, "failed": 2, "orders_per_s": 177.0,
                           "latency_ms": {"p50": 54.6, "p99": 108.9}, "retransmissions": 3},
             "direct": {"orders_per_s": 1111.0, "p50_ms": 6.9}}
        ]});
        let t = sim_phones_table(&r);
        let row = t.lines().nth(2).unwrap();
        assert!(row.starts_with("| 10 | 500 | 2 | 177"), "{t}");
        assert!(row.ends_with("| 0.16× |"), "{t}");
        let q = Bench::SimPhones
            .args(true, Path::new("j"), Path::new("t"))
            .join(" ");
        assert!(q.starts_with("bench phones --phones 1,10,100"), "{q}");
        assert!(!q.contains("--rounds"), "{q}");
    }

    #[test]
    fn orders_are_shown_against_the_number_of_phones_beside_direct() {
        let md = markdown(&full_report());
        assert_eq!(
            line(&md, "| 100 |"),
            "| 100 | 6000 | 10000 | 0.60× | 16.7 | 10.0 | 50.0 | 30.0 | 0 / 0 |"
        );
        assert!(md.contains("| 1 | 60.0 | 100 | 0.60× |"));
        // No haproxy or local rows where the run had neither.
        let phones = md.split("## phones").nth(1).unwrap();
        assert!(!phones.contains("haproxy in vm-lb"));
    }

    #[test]
    fn packets_per_second_per_element_are_set_against_null() {
        let md = markdown(&full_report());
        // 80k through four routers vs 100k through four nulls; 6,000 vs
        // 4,000 CPU ns per frame; 50 vs 10 ns alone.
        assert_eq!(
            line(&md, "| router |"),
            "| router | forward: 4 routers in a row | 80000 | 0.80× | 6000 | 166667 | 0.67× | 20.0 | 0.20× |"
        );
        assert!(line(&md, "| switch |").contains("| 5500 | 181818 | 0.91× | — | — |"));
        assert!(line(&md, "| pgw |")
            .contains("| 50000 | 0.50× | 1100 | 909091 | 0.91× | 20.0 | 0.20× |"));
        assert!(line(&md, "| null |").contains("| 100000 | 1.00× |"));
        assert!(line(&md, "| kernel forwarding |").contains("| 400000 | 4.00× | — |"));
    }

    #[test]
    fn bench_json_keeps_each_report_under_its_name_beside_the_machine() {
        let r = full_report();
        let back: Value = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(
            back["benches"]["forward"]["report"]["ratios"]["router_vs_null_cpu_per_frame"],
            1.5
        );
        assert_eq!(back["machine"]["cpus"], 2);
    }

    #[test]
    fn quick_runs_are_one_round_of_2_seconds_and_phones_go_to_1000_otherwise() {
        let (j, t) = (Path::new("/o/x.json"), Path::new("netns"));
        assert_eq!(
            Bench::Forward.args(true, j, t).join(" "),
            "bench forward --up-runs 1 --seconds 2 --topologies netns --json /o/x.json"
        );
        assert_eq!(
            Bench::Mobile.args(true, j, t).join(" "),
            "bench mobile --rounds 1 --seconds 2 --topologies netns --json /o/x.json"
        );
        assert_eq!(
            Bench::Phones.args(false, j, t).join(" "),
            "bench order --clients 1,10,100,1000 --variants direct,full --topologies netns --json /o/x.json"
        );
        assert!(Bench::Phones
            .args(true, j, t)
            .join(" ")
            .contains("--clients 1,10,100 "));
        assert_eq!(
            Bench::Rpc.args(false, j, t).join(" "),
            "bench rpc --topologies netns --json /o/x.json"
        );
    }

    #[test]
    fn each_bench_command_parses_as_the_bench_expects() {
        use clap::Parser;
        let (j, t) = (Path::new("/o/x.json"), Path::new("netns"));
        for b in BENCHES {
            for quick in [false, true] {
                let mut argv = vec!["d11".to_string()];
                argv.extend(b.args(quick, j, t));
                crate::Cli::try_parse_from(&argv)
                    .unwrap_or_else(|e| panic!("{}: {e}", argv.join(" ")));
            }
        }
    }

    #[test]
    fn the_error_of_a_failed_bench_is_its_d11_line_or_its_panic() {
        let lines = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            failure(
                &lines(&["bench: round 1", "d11: variant null: d11 up failed: x"]),
                "exit status: 1"
            ),
            "variant null: d11 up failed: x"
        );
        assert_eq!(
            failure(
                &lines(&["thread 'main' panicked at src/x.rs:1:2:", "boom", "note: …"]),
                "exit status: 101"
            ),
            "thread 'main' panicked at src/x.rs:1:2: boom (exit status: 101)"
        );
        assert_eq!(failure(&[], "signal: 9"), "the bench ended (signal: 9)");
    }

    #[test]
    fn dates_are_utc_civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000);
        assert_eq!(utc(t), "2026-11-18 11:06:40 UTC");
    }
}
