//! `d11 bench report`: every benchmark of the lab in one run, one report.
//!
//! Runs `d11 bench core`, `forward`, `cloud`, `mobile`, `order` and `rpc`,
//! then `d11 bench order` once more across 1, 10, 100 and 1,000 phones with
//! the direct-to-controller baseline (`phones`) and the simulated phones
//! (`sim-phones`), one after the other, each as a child process of this
//! same binary with `--json FILE`: a bench that fails (or panics) is marked
//! failed with its error and the others still run. Each bench's printed
//! table goes to `DIR/NAME.txt`, its progress to this terminal.
//!
//! Each child's JSON is read back as the bench's own result type into
//! [`Benches`]; `DIR/bench.json` is [`BenchJson`] (the machine — CPUs,
//! kernel, load average before and after, date, git commit — and every
//! bench's outcome under its name), and `DIR/bench.md` one section per
//! bench — figure, value, the baseline measured in the same run, its value,
//! the ratio and the goal — plus the orders against the number of phones
//! and the packets per second per element at saturation. The Markdown is a
//! pure function of [`BenchJson`] ([`markdown`]), so `--from bench.json`
//! rebuilds it and it is tested without root from canned figures.
//!
//! Adding a bench (say `bgp`, in its own module with `BgpArgs`, `bgp()` and
//! `BgpReport`): a variant of [`Bench`] with its `title` and its `args`
//! arms, a field `bgp: Option<Outcome<BgpReport>>` in [`Benches`], and one
//! line in each of [`Benches::run`] (store its outcome) and
//! [`Benches::sections`] (its table's rows) — the compiler points at each
//! `match` that misses it.

use crate::cloud::CloudReport;
use crate::cores::CoreReport;
use crate::forward::ForwardReport;
use crate::mobile::{MobileReport, POSITIONS};
use crate::order::{OrderReport, Variant};
use crate::phones::PhonesReport;
use crate::rpc::RpcReport;
use crate::Goal;
use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime};

/// Options of `d11 bench report`.
#[derive(Debug, Clone, clap::Args)]
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
    /// The elements' cores alone, no I/O, vs. a null element.
    Core,
    /// Routers vs. kernel forwarding and null elements.
    Forward,
    /// vSwitches vs. null elements and kernel VXLAN.
    Cloud,
    /// enb, sgw, pgw vs. null elements.
    Mobile,
    /// Orders/s: full path (controllers alone) vs. direct, l4lb vs. haproxy, backend vs. controller-only.
    Order,
    /// RPC across VXLAN vs. loopback.
    Rpc,
    /// Orders/s and latency against 1, 10, 100 (and 1,000) phones, full path vs. direct.
    Phones,
    /// The same with simulated phones (`d11 load`: own address, bearer, stack) on the whole path.
    SimPhones,
    /// 10,000 simulated phones attaching at once vs. one alone: attaches/s, CPU and RSS per attach.
    Attach,
    /// BGP: 100k prefixes vs. BIRD, the FIB with 100k routes vs. 10, convergence vs. the hold time.
    Bgp,
    /// The VPN between the regions: iperf3 through it vs. routing without ESP, ESP alone, the gateway vs. null.
    Vpn,
    /// DNS: our resolver vs. unbound (warm, cold), our authoritative server vs. nsd.
    Dns,
    /// The CDN's edge vs. nginx proxy_cache (hits with wrk, misses), on loopback.
    Cdn,
    /// The l4lb vs. haproxy alone: connections/s and CPU per connection, one namespace's loopback.
    Lb,
}

/// Every bench, in the order a report runs them.
pub const BENCHES: [Bench; 14] = [
    Bench::Core,
    Bench::Forward,
    Bench::Cloud,
    Bench::Mobile,
    Bench::Order,
    Bench::Rpc,
    Bench::Phones,
    Bench::SimPhones,
    Bench::Attach,
    Bench::Bgp,
    Bench::Vpn,
    Bench::Dns,
    Bench::Cdn,
    Bench::Lb,
];

impl Bench {
    /// Its name in `--only`, bench.json and the files of DIR.
    pub fn name(self) -> String {
        use clap::ValueEnum;
        self.to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_string())
    }

    pub fn title(self) -> &'static str {
        match self {
            Bench::Core => "core: each element's logic alone (no I/O) vs. a null element",
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
            Bench::Attach => {
                "attach: simulated phones attaching at once (d11 load --attach-only) vs. one phone alone"
            }
            Bench::Bgp => "bgp: 100k prefixes through our router vs. BIRD, the FIB at 100k routes, convergence",
            Bench::Vpn => "vpn: iperf3 through the VPN between the regions vs. the same path routed in clear, ESP alone, the gateway vs. a null element",
            Bench::Cdn => "cdn: the CDN's edge and parent vs. nginx proxy_cache with the same policy: hits (wrk requests/s, p99), a miss through the chain",
            Bench::Lb => "lb: the l4lb vs. haproxy alone, same client and backend on one namespace's loopback: connections/s and CPU per connection at 1, 8, 32, 1,000, a bulk connection",
            Bench::Dns => "dns: the carrier's resolver vs. unbound (warm queries/s, a cold walk), the shop's authoritative server vs. nsd",
        }
    }

    /// The `d11` arguments that run this bench and write its JSON to `json`.
    pub fn args(self, quick: bool, json: &Path, topologies: &Path) -> Vec<String> {
        let sub = match self {
            Bench::Phones => "order".to_string(),
            Bench::SimPhones => "phones".to_string(),
            b => b.name(),
        };
        let mut a: Vec<String> = vec!["bench".into(), sub];
        if self == Bench::Phones {
            let clients = if quick { "1,10,100" } else { "1,10,100,1000" };
            a.extend(["--clients", clients, "--variants", "direct,full"].map(String::from));
        }
        if self == Bench::Core {
            // No lab and no topology: nothing to shorten.
            a.extend(["--json".into(), json.to_string_lossy().into_owned()]);
            return a;
        }
        if self == Bench::Cdn || self == Bench::Lb {
            // On loopback, no topology.
            if quick {
                a.extend(["--rounds", "1", "--seconds", "2"].map(String::from));
            }
            if quick && self == Bench::Cdn {
                a.extend(["--misses", "10"].map(String::from));
            }
            a.extend(["--json".into(), json.to_string_lossy().into_owned()]);
            return a;
        }
        if quick && self == Bench::Attach {
            a.extend(["--phones", "2000"].map(String::from));
        } else if quick && self == Bench::Bgp {
            a.extend(["--prefixes", "10000", "--seconds", "2"].map(String::from));
        } else if quick && self == Bench::SimPhones {
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

/// How a bench of the report ended: `ok` with its result, or `failed`
/// with why it has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Failed,
}

/// One bench's entry of bench.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome<T> {
    pub status: Status,
    /// The `d11 …` command line that ran it.
    pub command: String,
    pub wall_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl<T> Outcome<T> {
    /// The bench's result, when it ran to the end.
    pub fn ok(&self) -> Option<&T> {
        match self.status {
            Status::Ok => self.report.as_ref(),
            Status::Failed => None,
        }
    }
}

/// Every bench's outcome under its name (absent: not run).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Benches {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub core: Option<Outcome<CoreReport>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward: Option<Outcome<ForwardReport>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud: Option<Outcome<CloudReport>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mobile: Option<Outcome<MobileReport>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<Outcome<OrderReport>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpc: Option<Outcome<RpcReport>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phones: Option<Outcome<OrderReport>>,
    #[serde(rename = "sim-phones", skip_serializing_if = "Option::is_none")]
    pub sim_phones: Option<Outcome<PhonesReport>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attach: Option<Outcome<crate::attach::AttachBench>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bgp: Option<Outcome<crate::bgp::BgpBench>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vpn: Option<Outcome<crate::vpn::VpnBench>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<Outcome<crate::dns::DnsBench>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cdn: Option<Outcome<crate::cdn::CdnReport>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lb: Option<Outcome<crate::lb::LbBench>>,
}

/// One bench's section of bench.md, whatever its result type.
struct Section {
    bench: Bench,
    command: String,
    wall_s: f64,
    /// Its tables, or its error.
    body: Result<Body, String>,
}

/// A section's tables: one before the rows (optional), the rows, a note after.
#[derive(Default)]
struct Body {
    before: String,
    rows: Vec<Row>,
    /// `None`: no figure/baseline table at all (sim-phones has its own).
    table: bool,
    after: String,
}

impl Body {
    fn rows(rows: Vec<Row>) -> Body {
        Body {
            rows,
            table: true,
            ..Body::default()
        }
    }
}

fn section<T>(bench: Bench, o: &Option<Outcome<T>>, body: impl Fn(&T) -> Body) -> Option<Section> {
    let o = o.as_ref()?;
    Some(Section {
        bench,
        command: o.command.clone(),
        wall_s: o.wall_s,
        body: match o.ok() {
            Some(report) => Ok(body(report)),
            None => Err(o.error.clone().unwrap_or_else(|| "no result".into())),
        },
    })
}

impl Benches {
    /// Runs `b` and keeps its outcome.
    fn run(&mut self, exe: &Path, b: Bench, args: &ReportArgs) -> Result<()> {
        match b {
            Bench::Core => self.core = Some(run_bench(exe, b, args)?),
            Bench::Forward => self.forward = Some(run_bench(exe, b, args)?),
            Bench::Cloud => self.cloud = Some(run_bench(exe, b, args)?),
            Bench::Mobile => self.mobile = Some(run_bench(exe, b, args)?),
            Bench::Order => self.order = Some(run_bench(exe, b, args)?),
            Bench::Rpc => self.rpc = Some(run_bench(exe, b, args)?),
            Bench::Phones => self.phones = Some(run_bench(exe, b, args)?),
            Bench::SimPhones => self.sim_phones = Some(run_bench(exe, b, args)?),
            Bench::Attach => self.attach = Some(run_bench(exe, b, args)?),
            Bench::Bgp => self.bgp = Some(run_bench(exe, b, args)?),
            Bench::Vpn => self.vpn = Some(run_bench(exe, b, args)?),
            Bench::Dns => self.dns = Some(run_bench(exe, b, args)?),
            Bench::Cdn => self.cdn = Some(run_bench(exe, b, args)?),
            Bench::Lb => self.lb = Some(run_bench(exe, b, args)?),
        }
        Ok(())
    }

    /// The sections of the benches that ran, in [`BENCHES`] order.
    fn sections(&self) -> Vec<Section> {
        let mut out: Vec<Section> = BENCHES
            .iter()
            .filter_map(|&b| match b {
                Bench::Core => section(b, &self.core, |r| Body::rows(core_rows(r))),
                Bench::Forward => section(b, &self.forward, |r| Body::rows(forward_rows(r))),
                Bench::Cloud => section(b, &self.cloud, |r| Body::rows(cloud_rows(r))),
                Bench::Mobile => section(b, &self.mobile, |r| Body::rows(mobile_rows(r))),
                Bench::Order => section(b, &self.order, order_body),
                Bench::Rpc => section(b, &self.rpc, |r| Body::rows(rpc_rows(r))),
                Bench::Phones => section(b, &self.phones, |r| Body {
                    before: phones_table(r),
                    ..Body::default()
                }),
                Bench::SimPhones => section(b, &self.sim_phones, |r| Body {
                    before: sim_phones_table(r),
                    ..Body::default()
                }),
                Bench::Attach => section(b, &self.attach, |r| Body::rows(attach_rows(r))),
                Bench::Bgp => section(b, &self.bgp, |r| Body::rows(figure_rows(r.figures()))),
                Bench::Vpn => section(b, &self.vpn, |r| Body::rows(figure_rows(r.figures()))),
                Bench::Dns => section(b, &self.dns, |r| Body::rows(figure_rows(r.figures()))),
                Bench::Cdn => section(b, &self.cdn, |r| Body::rows(figure_rows(r.figures()))),
                Bench::Lb => section(b, &self.lb, |r| Body::rows(figure_rows(r.figures()))),
            })
            .collect();
        out.sort_by_key(|s| BENCHES.iter().position(|b| *b == s.bench));
        out
    }
}

/// The machine and the time of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Machine {
    pub cpus: usize,
    pub kernel: Option<String>,
    /// 1, 5 and 15 minutes.
    pub loadavg_before: Vec<f64>,
    pub loadavg_after: Vec<f64>,
    pub started_utc: Option<String>,
    pub finished_utc: Option<String>,
    pub git_commit: Option<String>,
}

/// `DIR/bench.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BenchJson {
    pub machine: Machine,
    pub quick: bool,
    pub benches: Benches,
}

/// `d11 bench report`.
pub fn report(args: &ReportArgs) -> Result<()> {
    if let Some(from) = &args.from {
        let text =
            std::fs::read_to_string(from).with_context(|| format!("reading {}", from.display()))?;
        let report: BenchJson =
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
    let exe = crate::lab::d11_exe()?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let chosen: Vec<Bench> = BENCHES
        .into_iter()
        .filter(|b| args.only.is_empty() || args.only.contains(b))
        .collect();
    let started = SystemTime::now();
    let load_before = loadavg();
    let mut benches = Benches::default();
    for b in &chosen {
        eprintln!("bench report: {} ({})", b.name(), b.title());
        benches.run(&exe, *b, args)?;
    }
    let report = BenchJson {
        machine: Machine {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .ok(),
            loadavg_before: load_before,
            loadavg_after: loadavg(),
            started_utc: Some(utc(started)),
            finished_utc: Some(utc(SystemTime::now())),
            git_commit: git_commit(),
        },
        quick: args.quick,
        benches,
    };
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
    let failed: Vec<String> = report
        .benches
        .sections()
        .into_iter()
        .filter(|s| s.body.is_err())
        .map(|s| s.bench.name())
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

/// Runs one bench as `d11 bench …` and reads its result back as `T`: its
/// entry of bench.json, with the command and its wall time, or its error.
fn run_bench<T: DeserializeOwned>(exe: &Path, b: Bench, args: &ReportArgs) -> Result<Outcome<T>> {
    let json_path = args.out.join(format!("{}.json", b.name()));
    let text_path = args.out.join(format!("{}.txt", b.name()));
    let _ = std::fs::remove_file(&json_path);
    let argv = b.args(args.quick, &json_path, &args.topologies);
    let command = format!("d11 {}", argv.join(" "));
    let stdout = std::fs::File::create(&text_path)
        .with_context(|| format!("creating {}", text_path.display()))?;
    let t0 = Instant::now();
    let outcome = (|| -> Result<T> {
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
        Ok(report) => Outcome {
            status: Status::Ok,
            command,
            wall_s,
            report: Some(report),
            error: None,
        },
        Err(e) => {
            let error = format!("{e:#}");
            eprintln!("bench report: {} failed: {error}", b.name());
            Outcome {
                status: Status::Failed,
                command,
                wall_s,
                report: None,
                error: Some(error),
            }
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
/// The 1, 5 and 15 minute load averages.
fn loadavg() -> Vec<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect()
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

/// A goal's cell in a row: the bound, and whether the row meets it.
fn goal_cell(g: &Goal, row: &Row) -> String {
    let bound = format!(
        "{} {}{}",
        if g.at_most { "≤" } else { "≥" },
        num(g.limit),
        if g.of_value { "" } else { "×" }
    );
    match g.met(row.value, row.ratio()) {
        Some(true) => format!("{bound}: met"),
        Some(false) => format!("{bound}: **missed**"),
        None => format!("{bound}: no figure"),
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
            r.goal.map_or(String::new(), |g| goal_cell(&g, r)),
        ));
    }
    s
}

fn inverse(x: Option<f64>) -> Option<f64> {
    x.filter(|x| *x != 0.0).map(|x| 1.0 / x)
}

/// TCP and 64-byte UDP through the lab of `ours` beside the kernel's lab
/// (named `kernel`) and the null elements'.
fn throughput_rows(
    ours: (Option<f64>, Option<f64>),
    kernel: (&str, Option<f64>, Option<f64>),
    null: (Option<f64>, Option<f64>),
) -> Vec<Row> {
    let mut rows = vec![];
    for (what, i) in [
        ("TCP, Mbit/s (iperf3)", 0),
        ("64 B UDP received, frames/s", 1),
    ] {
        let pick = |x: (Option<f64>, Option<f64>)| if i == 0 { x.0 } else { x.1 };
        rows.push(Row::new(
            what,
            pick(ours),
            kernel.0,
            pick((kernel.1, kernel.2)),
        ));
        rows.push(Row::new(what, pick(ours), "null elements", pick(null)));
    }
    rows
}

fn core_rows(r: &CoreReport) -> Vec<Row> {
    r.rows()
        .into_iter()
        .map(|c| {
            let nat = c.what.starts_with("NAT");
            let what = c.what.split(" (×").next().unwrap_or(c.what);
            Row::new(
                format!("{what}, ns{}", if nat { "" } else { "/frame" }),
                c.ns,
                if nat { "1 entry" } else { "null alone" },
                c.null_ns,
            )
        })
        .collect()
}

fn forward_rows(r: &ForwardReport) -> Vec<Row> {
    let v = &r.variants;
    let mut rows = throughput_rows(
        (v.router.rate.tcp_mbit_s, v.router.rate.udp64_received_pps),
        (
            "kernel forwarding",
            v.kernel.rate.tcp_mbit_s,
            v.kernel.rate.udp64_received_pps,
        ),
        (v.null.rate.tcp_mbit_s, v.null.rate.udp64_received_pps),
    );
    rows.push(
        Row::new(
            "element CPU per frame at 20k frames/s, ns",
            v.router.cpu_ns_per_frame,
            "null elements",
            v.null.cpu_ns_per_frame,
        )
        .ratio_from(r.ratios.router_vs_null_cpu_per_frame)
        .goal(Goal::ratio_at_most(r.goals.router_vs_null_cpu_per_frame)),
    );
    rows.push(
        Row::new(
            "element CPU per frame at saturation (64 B flood), ns",
            v.router.rate.cpu_ns_per_frame_flood,
            "null elements",
            v.null.rate.cpu_ns_per_frame_flood,
        )
        .ratio_from(r.ratios.router_vs_null_cpu_per_frame_flood)
        .goal(Goal::value_at_most(r.goals.cpu_ns_per_frame_flood)),
    );
    rows.push(Row::new(
        "router alone (no I/O), ns/frame",
        r.element_core.router_ns_per_frame,
        "null alone",
        r.element_core.null_ns_per_frame,
    ));
    rows.push(
        Row::new(
            "peak RSS of the largest element, MiB",
            crate::lab::largest_mib(&v.router.peak_rss_kib),
            "null elements",
            crate::lab::largest_mib(&v.null.peak_rss_kib),
        )
        .goal(Goal::value_at_most(r.goals.peak_rss_mib_per_element)),
    );
    rows.push(
        Row::new(
            "`d11 up` of the carrier lab, s (median)",
            r.up_carrier.median_s,
            "",
            None,
        )
        .goal(Goal::value_at_most(r.goals.up_carrier_s)),
    );
    rows
}

fn cloud_rows(r: &CloudReport) -> Vec<Row> {
    let v = &r.variants;
    let mut rows = throughput_rows(
        (v.vswitch.rate.tcp_mbit_s, v.vswitch.rate.udp64_received_pps),
        (
            "kernel vxlan",
            v.kernel.rate.tcp_mbit_s,
            v.kernel.rate.udp64_received_pps,
        ),
        (v.null.rate.tcp_mbit_s, v.null.rate.udp64_received_pps),
    );
    rows.push(
        Row::new(
            "vSwitch CPU per frame at 20k frames/s (hosta+hostb), ns",
            v.vswitch.hosts_ns_per_frame,
            "null elements",
            v.null.hosts_ns_per_frame,
        )
        .ratio_from(r.ratios.vswitch_vs_null_cpu_per_frame)
        .goal(Goal::ratio_at_most(r.goals.vswitch_vs_null_cpu_per_frame)),
    );
    rows.push(Row::new(
        "switch (tor) CPU per frame at 20k frames/s, ns",
        v.vswitch.ns_per_frame("tor"),
        "null element",
        v.null.ns_per_frame("tor"),
    ));
    let c = &r.element_core;
    for (what, x) in [
        (
            "vSwitch alone (no I/O), encapsulation, ns/frame",
            c.encap_ns_per_frame,
        ),
        (
            "vSwitch alone (no I/O), decapsulation, ns/frame",
            c.decap_ns_per_frame,
        ),
    ] {
        rows.push(Row::new(what, x, "null alone", c.null_ns_per_frame));
    }
    rows.push(Row::new(
        "vgw NAT translate at 100k entries, ns",
        r.nat_translate_ns.entries_100k,
        "1 entry",
        r.nat_translate_ns.one_entry,
    ));
    rows
}

fn mobile_rows(r: &MobileReport) -> Vec<Row> {
    let (v, q) = (&r.variants, &r.ratios);
    let goal = Goal::ratio_at_most(r.goals.mobile_vs_null_cpu_per_frame);
    let mut rows = vec![];
    // The bench's ratios are costs (null rate ÷ mobile rate); the table's are value ÷ baseline.
    for (what, m, n, cost) in [
        (
            "TCP, Mbit/s (iperf3)",
            v.mobile.rate.tcp_mbit_s,
            v.null.rate.tcp_mbit_s,
            &q.mobile_vs_null_cost_tcp,
        ),
        (
            "64 B UDP received, frames/s",
            v.mobile.rate.udp64_received_pps,
            v.null.rate.udp64_received_pps,
            &q.mobile_vs_null_cost_per_frame_udp64,
        ),
    ] {
        rows.push(Row::new(what, m, "null elements", n).ratio_from(inverse(cost.median)));
    }
    for pos in POSITIONS {
        rows.push(
            Row::new(
                format!("{pos} CPU per frame at 20k frames/s, ns"),
                v.mobile.ns_per_frame(pos),
                "null element in its place",
                v.null.ns_per_frame(pos),
            )
            .ratio_from(
                q.mobile_vs_null_cpu_per_frame
                    .get(pos)
                    .and_then(|r| r.median),
            )
            .goal(goal),
        );
    }
    rows.push(
        Row::new(
            "enb+sgw+pgw CPU per frame at 20k frames/s, ns",
            v.mobile.chain_ns_per_frame,
            "null elements",
            v.null.chain_ns_per_frame,
        )
        .ratio_from(q.mobile_vs_null_cpu_per_frame_chain.median),
    );
    let m = &r.mobile_core;
    for (pos, x) in [
        ("enb", m.enb_uplink_ns_per_frame),
        ("sgw", m.sgw_uplink_ns_per_frame),
        ("pgw", m.pgw_uplink_ns_per_frame),
    ] {
        rows.push(Row::new(
            format!("{pos} alone (no I/O), uplink, ns/frame"),
            x,
            "null alone",
            m.null_ns_per_frame,
        ));
    }
    rows.push(Row::new(
        "pgw NAT translate at 100k entries, ns",
        m.nat_translate_ns_100k_entries,
        "1 entry",
        m.nat_translate_ns_1_entry,
    ));
    rows
}

/// The order bench's rows, and the labs it skipped.
fn order_body(r: &OrderReport) -> Body {
    let q = &r.ratios;
    let mut rows = vec![];
    for (subject, baseline, what, name, orders, p50, goal) in [
        (
            Variant::Local,
            Variant::Direct,
            "controllers alone: ",
            "direct to a controller",
            &q.local_vs_direct_orders_per_s,
            &q.local_vs_direct_p50,
            Goal::ratio_at_least(r.goals.local_vs_direct_orders_per_s),
        ),
        (
            Variant::Full,
            Variant::Local,
            "",
            "controller-only (no backend)",
            &q.backend_vs_local_orders_per_s,
            &q.backend_vs_local_p50,
            Goal::ratio_at_least(r.goals.backend_vs_local_orders_per_s),
        ),
        (
            Variant::Full,
            Variant::Haproxy,
            "",
            "haproxy in vm-lb",
            &q.l4lb_vs_haproxy_orders_per_s,
            &q.l4lb_vs_haproxy_p50,
            // The goal is on `lb`'s figures: here the balancer's share of
            // an order's CPU is small and the ratio moves with the lab.
            None,
        ),
    ] {
        if !r.variants.contains_key(&subject) || !r.variants.contains_key(&baseline) {
            continue;
        }
        let at = |by: &crate::order::ByClients, n: usize| by.as_ref()?.get(&n).copied().flatten();
        for &n in &r.config.clients {
            let (ours, base) = (r.at(subject, n), r.at(baseline, n));
            rows.push(
                Row::new(
                    format!("{what}orders/s, clients = {n}"),
                    ours.and_then(|f| f.orders_per_s),
                    name,
                    base.and_then(|f| f.orders_per_s),
                )
                .ratio_from(at(orders, n))
                .goal(goal),
            );
            rows.push(
                Row::new(
                    format!("{what}p50 latency, ms, clients = {n}"),
                    ours.and_then(|f| f.p50_ms),
                    name,
                    base.and_then(|f| f.p50_ms),
                )
                .ratio_from(at(p50, n)),
            );
        }
    }
    Body {
        rows,
        table: true,
        after: if r.skipped.is_empty() {
            String::new()
        } else {
            format!("\nSkipped (not installed): {}.\n", r.skipped.join(", "))
        },
        ..Body::default()
    }
}

/// Orders/s and latency against the number of phones: one line per count.
fn phones_table(r: &OrderReport) -> String {
    let mut s = String::from(
        "| phones | orders/s full | orders/s direct | full ÷ direct | p50 ms full | p50 ms direct | \
         p99 ms full | p99 ms direct | errors full / direct |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for &n in &r.config.clients {
        let (full, direct) = (r.at(Variant::Full, n), r.at(Variant::Direct, n));
        let errors =
            |f: Option<&crate::order::Figures>| f.map_or("—".into(), |f| f.errors.to_string());
        let ratio = r
            .ratios
            .full_vs_direct_orders_per_s
            .as_ref()
            .and_then(|by| by.get(&n).copied().flatten());
        s.push_str(&format!(
            "| {n} | {} | {} | {} | {} | {} | {} | {} | {} / {} |\n",
            opt(full.and_then(|f| f.orders_per_s)),
            opt(direct.and_then(|f| f.orders_per_s)),
            ratio_cell(ratio),
            opt(full.and_then(|f| f.p50_ms)),
            opt(direct.and_then(|f| f.p50_ms)),
            opt(full.and_then(|f| f.p99_ms)),
            opt(direct.and_then(|f| f.p99_ms)),
            errors(full),
            errors(direct),
        ));
    }
    s.push('\n');
    s
}

/// `d11 bench phones`: simulated phones on the whole path beside the same
/// number of kernel-stack clients straight to a controller.
/// `d11 bench bgp`'s own figures ([`crate::bgp::BgpBench::figures`]) as rows.
/// A bench's [`crate::Figure`]s as rows.
fn figure_rows(figures: Vec<crate::Figure>) -> Vec<Row> {
    let row = |f: crate::Figure| Row::new(f.figure, f.value, f.baseline, f.base).goal(f.goal);
    figures.into_iter().map(row).collect()
}

fn sim_phones_table(r: &PhonesReport) -> String {
    let mut s = String::from(
        "| phones | orders | failed | orders/s | p50 ms | p99 ms | retransmissions | \
         direct orders/s | direct p50 ms | ÷ direct |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for run in &r.runs {
        let (p, d) = (&run.simulated, run.direct.as_ref());
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            run.phones,
            p.orders,
            p.failed,
            num(p.orders_per_s),
            num(p.latency_ms.p50),
            num(p.latency_ms.p99),
            p.retransmissions,
            opt(d.and_then(|d| d.orders_per_s)),
            opt(d.and_then(|d| d.p50_ms)),
            ratio_cell(run.orders_per_s_vs_direct),
        ));
    }
    s
}

fn attach_rows(r: &crate::attach::AttachBench) -> Vec<Row> {
    let (Some(run), g) = (&r.run, &r.goals) else {
        return vec![];
    };
    let (a, lone) = (&run.attach, r.lone.as_ref().map(|l| &l.attach));
    let alone = "one phone alone, same lab";
    let mut rows = vec![
        Row::new(
            format!("{} phones at once, attaches/s", r.phones),
            Some(a.attaches_per_s),
            "one phone alone (1000 ÷ its ms)",
            r.lone_rate(),
        )
        .goal(Goal::value_at_least(g.attaches_per_s_at_least)),
        Row::new(
            format!("all {} attached, s", a.attached),
            Some(a.seconds),
            "",
            None,
        )
        .goal(Goal::value_at_most(g.all_attached_s_at_most)),
        Row::new(
            "attach time p50, ms",
            Some(a.latency_ms.p50),
            alone,
            lone.map(|l| l.latency_ms.p50),
        ),
        Row::new(
            "attach time p99, ms",
            Some(a.latency_ms.p99),
            alone,
            lone.map(|l| l.latency_ms.p99),
        ),
        Row::new("attaches failed", Some(a.failed as f64), "", None).goal(Goal::value_at_most(0.0)),
    ];
    for (n, c) in &r.nodes {
        rows.push(
            Row::new(
                format!("{n} RSS per attached phone, B"),
                Some(c.rss_bytes_per_phone),
                "",
                None,
            )
            .goal(Goal::value_at_most(g.rss_bytes_per_phone_at_most)),
        );
        rows.push(Row::new(
            format!("{n} CPU per attach, ms"),
            Some(c.cpu_ms_per_attach),
            "",
            None,
        ));
    }
    rows
}

fn rpc_rows(r: &RpcReport) -> Vec<Row> {
    let (lo, vx, q) = (
        &r.paths.loopback,
        &r.paths.vxlan,
        &r.ratios_vxlan_vs_loopback,
    );
    let k = r.config.in_flight;
    vec![
        Row::new(
            "sequential round trips/s",
            vx.sequential_calls_per_s,
            "loopback",
            lo.sequential_calls_per_s,
        )
        .ratio_from(q.sequential_calls_per_s.median),
        Row::new(
            "sequential p50 latency, µs",
            vx.sequential_p50_us,
            "loopback",
            lo.sequential_p50_us,
        )
        .ratio_from(q.sequential_p50_us.median),
        Row::new(
            "sequential p99 latency, µs",
            vx.sequential_p99_us,
            "loopback",
            lo.sequential_p99_us,
        ),
        Row::new(
            format!("calls/s, {k} in flight"),
            vx.pipelined_calls_per_s,
            "loopback",
            lo.pipelined_calls_per_s,
        )
        .ratio_from(q.pipelined_calls_per_s.median),
        Row::new(
            "elements' CPU per sequential call, µs",
            vx.sequential_element_cpu_us_per_call,
            "",
            None,
        ),
    ]
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

fn pps_rows(b: &Benches) -> Vec<PpsRow> {
    let none = (None, None);
    let fw = b.forward.as_ref().and_then(Outcome::ok);
    let cl = b.cloud.as_ref().and_then(Outcome::ok);
    let mo = b.mobile.as_ref().and_then(Outcome::ok);
    let mut rows = vec![];
    if let Some(f) = fw {
        let v = &f.variants;
        rows.push(PpsRow {
            element: "router",
            lab: "forward: 4 routers in a row",
            chain: (
                v.router.rate.udp64_received_pps,
                v.null.rate.udp64_received_pps,
            ),
            cpu: (v.router.cpu_ns_per_frame, v.null.cpu_ns_per_frame),
            core: (
                f.element_core.router_ns_per_frame,
                f.element_core.null_ns_per_frame,
            ),
        });
    }
    if let Some(c) = cl {
        let v = &c.variants;
        let chain = (
            v.vswitch.rate.udp64_received_pps,
            v.null.rate.udp64_received_pps,
        );
        rows.push(PpsRow {
            element: "switch",
            lab: "cloud: tor, between the vSwitches",
            chain,
            cpu: (v.vswitch.ns_per_frame("tor"), v.null.ns_per_frame("tor")),
            core: none,
        });
        rows.push(PpsRow {
            element: "vswitch",
            lab: "cloud: hosta, hostb (VXLAN)",
            chain,
            cpu: (v.vswitch.hosts_ns_per_frame, v.null.hosts_ns_per_frame),
            core: (
                c.element_core.encap_ns_per_frame,
                c.element_core.null_ns_per_frame,
            ),
        });
    }
    if let Some(m) = mo {
        let v = &m.variants;
        let mc = &m.mobile_core;
        for (element, core) in [
            ("enb", mc.enb_uplink_ns_per_frame),
            ("sgw", mc.sgw_uplink_ns_per_frame),
            ("pgw", mc.pgw_uplink_ns_per_frame),
        ] {
            rows.push(PpsRow {
                element,
                lab: "mobile: enb → sgw → pgw (GTP-U, NAT)",
                chain: (
                    v.mobile.rate.udp64_received_pps,
                    v.null.rate.udp64_received_pps,
                ),
                cpu: (v.mobile.ns_per_frame(element), v.null.ns_per_frame(element)),
                core: (core, mc.null_ns_per_frame),
            });
        }
    }
    if let Some(f) = fw {
        let v = &f.variants;
        let null = v.null.rate.udp64_received_pps;
        rows.push(PpsRow {
            element: "null",
            lab: "forward: 4 nulls in a row",
            chain: (null, null),
            cpu: (v.null.cpu_ns_per_frame, v.null.cpu_ns_per_frame),
            core: (
                f.element_core.null_ns_per_frame,
                f.element_core.null_ns_per_frame,
            ),
        });
        rows.push(PpsRow {
            element: "kernel forwarding",
            lab: "forward: 4 namespaces routing",
            chain: (v.kernel.rate.udp64_received_pps, null),
            cpu: none,
            core: none,
        });
    }
    if let Some(c) = cl {
        let v = &c.variants;
        rows.push(PpsRow {
            element: "kernel vxlan + bridges",
            lab: "cloud: hosta, tor, hostb",
            chain: (
                v.kernel.rate.udp64_received_pps,
                v.null.rate.udp64_received_pps,
            ),
            cpu: none,
            core: none,
        });
    }
    rows
}

fn pps_table(benches: &Benches) -> String {
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
pub fn markdown(report: &BenchJson) -> String {
    let m = &report.machine;
    let load = |l: &[f64]| {
        if l.is_empty() {
            "—".into()
        } else {
            let l: Vec<String> = l.iter().map(|x| format!("{x:.2}")).collect();
            l.join(" ")
        }
    };
    let s = |v: &Option<String>| v.clone().unwrap_or_else(|| "—".into());
    let mut md = String::from("# double11 benchmark report\n\n");
    md.push_str(&format!(
        "Run from {} to {} on {} CPUs, Linux {}, commit {}; load average (1, 5, 15 min) {} before, {} after. {}\n\n",
        s(&m.started_utc),
        s(&m.finished_utc),
        m.cpus,
        s(&m.kernel),
        s(&m.git_commit),
        load(&m.loadavg_before),
        load(&m.loadavg_after),
        if report.quick {
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
    let sections = report.benches.sections();
    md.push_str("| bench | status | wall s | command |\n|---|---|---:|---|\n");
    for sec in &sections {
        md.push_str(&format!(
            "| {} | {} | {} | `{}` |\n",
            sec.bench.name(),
            if sec.body.is_ok() { "ok" } else { "**failed**" },
            num(sec.wall_s),
            sec.command,
        ));
    }
    let goals: Vec<(String, bool)> = sections
        .iter()
        .flat_map(|sec| {
            let rows = sec.body.as_ref().map_or(&[][..], |b| &b.rows[..]);
            rows.iter().filter_map(move |row| {
                let vs = if row.baseline.is_empty() {
                    String::new()
                } else {
                    format!(" vs. {}", row.baseline)
                };
                Some((
                    format!("{}: {}{vs}", sec.bench.name(), row.figure),
                    row.goal?.met(row.value, row.ratio())?,
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
    for sec in &sections {
        md.push_str(&format!(
            "\n## {}\n\n`{}`\n\n",
            sec.bench.title(),
            sec.command
        ));
        match &sec.body {
            Err(e) => md.push_str(&format!("**Failed**: {e}\n")),
            Ok(b) => {
                md.push_str(&b.before);
                if b.table {
                    md.push_str(&table(&b.rows));
                }
                md.push_str(&b.after);
            }
        }
    }
    let b = &report.benches;
    if [
        b.forward.as_ref().map(|o| o.ok().is_some()),
        b.cloud.as_ref().map(|o| o.ok().is_some()),
        b.mobile.as_ref().map(|o| o.ok().is_some()),
    ]
    .contains(&Some(true))
    {
        md.push_str("\n## Packets per second per element at saturation\n\n");
        md.push_str(&pps_table(b));
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// A canned bench.json read as the report reads it.
    fn typed(v: Value) -> BenchJson {
        serde_json::from_value(v).unwrap()
    }

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
                "local_vs_direct_orders_per_s": ratio("local", "direct", false),
                "local_vs_direct_p50": ratio("local", "direct", true),
                "backend_vs_local_orders_per_s": ratio("full", "local", false),
                "backend_vs_local_p50": ratio("full", "local", true),
                "l4lb_vs_haproxy_orders_per_s": ratio("full", "haproxy", false),
                "l4lb_vs_haproxy_p50": ratio("full", "haproxy", true),
            },
            "goals": { "local_vs_direct_orders_per_s": 0.5, "backend_vs_local_orders_per_s": 0.7, "l4lb_vs_haproxy_orders_per_s": 1.0 },
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
                "order": ok(order(&[("direct", 100.0), ("full", 40.0), ("local", 45.0), ("haproxy", 38.0)], &[1, 8])),
                "rpc": { "status": "failed", "command": "d11 bench rpc", "wall_s": 1.0,
                         "error": "d11 bench rpc creates network namespaces and must run as root (try sudo)" },
                "phones": ok(order(&[("direct", 100.0), ("full", 60.0)], &[1, 10, 100])),
                "sim-phones": ok(json!({"runs": [
                    {"phones": 1, "orders_per_s_vs_direct": 0.1,
                     "simulated": {"phones": 1, "orders": 10, "ok": 10, "failed": 0, "by_outcome": {},
                                   "orders_per_s": 10.0, "seconds": 1.0,
                                   "latency_ms": {"p50": 9.0, "p99": 20.0}, "retransmissions": 0},
                     "direct": {"orders_per_s": 100.0, "p50_ms": 1.0}}
                ]})),
                "attach": ok(json!({
                    "phones": 10000,
                    "run": {"phones": 10000, "attach": {"phones": 10000, "attached": 10000, "seconds": 5.0,
                            "attaches_per_s": 2000.0, "latency_ms": {"p50": 500.0, "p99": 900.0}}},
                    "lone": {"phones": 1, "attach": {"phones": 1, "attached": 1, "latency_ms": {"p50": 20.0, "p99": 20.0}}},
                    "nodes": {"mme": {"rss_before_kb": 10000, "rss_after_kb": 18000,
                                      "rss_bytes_per_phone": 819.2, "cpu_ms_per_attach": 0.1}},
                    "goals": {"attaches_per_s_at_least": 500.0, "all_attached_s_at_most": 20.0,
                              "rss_bytes_per_phone_at_most": 2048.0}
                })),
                "bgp": ok(json!({
                    "prefixes": 1000,
                    "ours": { "propagation_s": 0.5, "mid_rss_kib_before": 1000, "mid_rss_kib_after": 2000,
                              "cpu_ns_per_frame_10_routes": 1000.0, "cpu_ns_per_frame_all_routes": 1100.0 },
                    "bird": { "propagation_s": 1.0, "mid_rss_kib_before": 500, "mid_rss_kib_after": 1000,
                              "cpu_ns_per_frame_10_routes": null, "cpu_ns_per_frame_all_routes": null },
                    "core": null,
                    "convergence": { "hold_time_s": 9.0, "order_again_s": 11.0, "attempts": 10 },
                    "skipped": []
                })),
                "vpn": ok(json!({
                    "vpn_tcp_mbit_s": 500.0, "clear_tcp_mbit_s": 1000.0,
                    "esp_seal_open_ns": 2000.0, "vgw_route_ns": 160.0,
                    "vgw_seal_ns": 1100.0, "vgw_open_ns": 1500.0, "null_ns": 15.0,
                    "lab_vgw_n_ns_per_frame": 3000.0, "lab_border_n_ns_per_frame": 2500.0
                })),
                "cdn": ok(json!({
                    "ours": [{"requests_per_s": 9000.0, "p50_ms": 4.0, "p99_ms": 12.0, "errors": 0}],
                    "nginx": [{"requests_per_s": 10000.0, "p50_ms": 4.0, "p99_ms": 10.0, "errors": 0}],
                    "miss_ms_ours": 1.2, "miss_ms_nginx": 1.5, "miss_ratio": 0.8,
                    "connections": 50, "seconds": 2, "object_bytes": 120000
                })),
                "lb": ok(json!({
                    "request": 1024, "reply": 4096, "seconds": 3, "haproxy_threads": 1,
                    "points": [{"clients": 1000,
                        "l4lb": [{"connections": 30000, "bytes": 122880000, "seconds": 3.0,
                                  "balancer_cpu_s": 1.5, "client_cpu_s": 0.9, "backend_cpu_s": 0.6}],
                        "haproxy": [{"connections": 27000, "bytes": 110592000, "seconds": 3.0,
                                     "balancer_cpu_s": 1.35, "client_cpu_s": 0.9, "backend_cpu_s": 0.6}]}]
                })),
                "dns": ok(json!({
                    "resolver_qps": 150000.0, "unbound_qps": 120000.0,
                    "resolver_cold_us": 1800.0, "unbound_cold_us": 2000.0,
                    "auth_qps": 100000.0, "nsd_qps": 200000.0
                })),
                "core": ok(json!({"frames": 10,
                    "element_core": {"router_ns_per_frame": 30.0, "null_ns_per_frame": 15.0},
                    "mobile_core": {"pgw_uplink_ns_per_frame": 90.0, "null_ns_per_frame": 10.0,
                                    "nat_translate_ns_1_entry": 20.0, "nat_translate_ns_100k_entries": 30.0},
                    "vswitch_core": {}})),
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
        let md = markdown(&typed(full_report()));
        for b in BENCHES {
            assert!(
                md.contains(&format!("\n## {}\n", b.title())),
                "{}",
                b.name()
            );
        }
        // bgp: its own figures, each goal judged here.
        for row in [
            "| 1000 prefixes west → mid → east, s | 0.50 | BIRD as mid | 1.00 | 0.50× | ≤ 1.00×: met |",
            "| mid's RSS with 1000 routes, KiB | 2000 | BIRD as mid | 1000 | 2.00× | ≤ 1.00×: **missed** |",
            "| an order again after the preferred path is cut, s | 11.0 | hold time | 9.00 | 1.22× | ≤ 10.0: **missed** |",
        ] {
            assert!(md.contains(row), "{row}\n{md}");
        }
        // attach: the many against one alone, the goals on the values.
        for row in [
            "| 10000 phones at once, attaches/s | 2000 | one phone alone (1000 ÷ its ms) | 50.0 | 40.00× | ≥ 500: met |",
            "| all 10000 attached, s | 5.00 | — | — | — | ≤ 20.0: met |",
            "| mme RSS per attached phone, B | 819 | — | — | — | ≤ 2048: met |",
        ] {
            assert!(md.contains(row), "{row}\n{md}");
        }
        // vpn: through the tunnel against the same path in clear, the lab's gateway against border-n.
        for row in [
            "| iperf3 TCP north VM → east VM through the VPN, Mbit/s | 500 | the same path with the VPN replaced by plain routing | 1000 | 0.50× | ≥ 0.80×: **missed** |",
            "| vgw-n's CPU per frame in the lab during the VPN's iperf3, ns | 3000 | border-n's (a router forwarding the same ESP frames) | 2500 | 1.20× | ≤ 1.50×: met |",
        ] {
            assert!(md.contains(row), "{row}\n{md}");
        }
        // cdn: the edge against nginx.
        assert!(
            md.contains("| edge hits: wrk requests/s on a warm object over TLS | 9000 | nginx proxy_cache, the same policy | 10000 | 0.90× | ≥ 1.00×: **missed** |"),
            "{md}"
        );
        // dns: ours against unbound and nsd beside them.
        for row in [
            "| resolver, warm cache: dnsperf queries/s | 150000 | unbound beside it (1 thread, iterator) | 120000 | 1.25× | ≥ 1.00×: met |",
            "| authoritative (dns-shop): dnsperf queries/s | 100000 | nsd beside it, the same zones | 200000 | 0.50× | ≥ 1.00×: **missed** |",
        ] {
            assert!(md.contains(row), "{row}\n{md}");
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
        // order: the controllers alone against direct (0.45× < 0.5×: missed),
        // the backend against the controllers alone (0.89× ≥ 0.7×: met).
        assert!(md.contains("| controllers alone: orders/s, clients = 8 | 360 | direct to a controller | 800 | 0.45× | ≥ 0.50×: **missed** |"));
        assert!(md.contains(
            "| orders/s, clients = 1 | 40.0 | controller-only (no backend) | 45.0 | 0.89× | ≥ 0.70×: met |"
        ));
        // The machine and the kind of run.
        assert!(md.contains(
            "on 2 CPUs, Linux 6.1.0, commit abc; load average (1, 5, 15 min) 1.00 2.00 3.00 before"
        ));
        assert!(md.contains("A quick run"));
    }

    #[test]
    fn a_missed_goal_is_shown_missed_and_a_met_one_met() {
        let md = markdown(&typed(full_report()));
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
        // l4lb 40 vs haproxy 38 orders/s over the whole lab: 1.05×, no goal
        // there; the goal is on the balancer alone: 10,000 vs 9,000
        // connections/s, 50 vs 50 µs of CPU per connection.
        assert!(
            md.contains("| orders/s, clients = 1 | 40.0 | haproxy in vm-lb | 38.0 | 1.05× |  |")
        );
        assert!(line(&md, "| connections/s, 1000 concurrent").ends_with("| 1.11× | ≥ 1.00×: met |"));
        assert!(
            line(&md, "| balancer CPU per connection, µs, 1000 concurrent")
                .ends_with("| 1.00× | ≤ 1.00×: met |")
        );
        // The summary counts them and names the missed ones.
        let goals = line(&md, "Goals: ");
        assert!(
            goals.contains("forward: element CPU per frame at 20k frames/s, ns vs. null elements"),
            "{goals}"
        );
        assert!(
            goals.contains(
                "order: controllers alone: orders/s, clients = 8 vs. direct to a controller"
            ),
            "{goals}"
        );
        assert!(!goals.contains("peak RSS"), "{goals}");
    }

    #[test]
    fn a_failed_bench_is_marked_failed_with_its_error_and_the_rest_still_reported() {
        let md = markdown(&typed(full_report()));
        assert!(line(&md, "| rpc |").starts_with("| rpc | **failed** |"));
        assert!(md.contains(
            "**Failed**: d11 bench rpc creates network namespaces and must run as root (try sudo)"
        ));
        assert!(line(&md, "| phones |").starts_with("| phones | ok |"));
        // A report of the rpc bench alone, when it ran.
        let mut r = full_report();
        r["benches"]["rpc"] = ok(rpc());
        let md = markdown(&typed(r));
        assert!(md.contains("| sequential round trips/s | 5000 | loopback | 20000 | 0.25× |"));
        assert!(md.contains("| calls/s, 32 in flight | 20000 | loopback | 80000 | 0.25× |"));
        assert!(md.contains("| sequential p99 latency, µs | 400 | loopback | 100 | 4.00× |"));
    }

    #[test]
    fn simulated_phones_are_shown_beside_the_direct_clients() {
        let r = json!({"runs": [
            {"phones": 10, "orders_per_s_vs_direct": 0.16,
             "simulated": {"phones": 10, "orders": 500, "ok": 498, "failed": 2, "by_outcome": {},
                           "orders_per_s": 177.0, "seconds": 2.8,
                           "latency_ms": {"p50": 54.6, "p99": 108.9}, "retransmissions": 3},
             "direct": {"orders_per_s": 1111.0, "p50_ms": 6.9}}
        ]});
        let t = sim_phones_table(&serde_json::from_value(r).unwrap());
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
        let md = markdown(&typed(full_report()));
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
        let md = markdown(&typed(full_report()));
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
        let r = typed(full_report());
        let text = serde_json::to_string(&r).unwrap();
        let back: BenchJson = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        let forward = back.benches.forward.as_ref().and_then(Outcome::ok).unwrap();
        assert_eq!(forward.ratios.router_vs_null_cpu_per_frame, Some(1.5));
        assert_eq!(back.machine.cpus, 2);
        // The shape of earlier bench.json files: status beside the report.
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["benches"]["rpc"]["status"], "failed");
        assert_eq!(v["benches"]["sim-phones"]["status"], "ok");
        assert!(v["benches"]["order"]["report"]["variants"]["haproxy"]["8"].is_object());
    }

    #[test]
    fn the_core_table_sets_each_element_against_the_null_alone() {
        let md = markdown(&typed(full_report()));
        assert_eq!(
            line(&md, "| router, ns/frame |"),
            "| router, ns/frame | 30.0 | null alone | 15.0 | 2.00× |  |"
        );
        assert!(line(&md, "| pgw, uplink").contains("| 90.0 | null alone | 10.0 | 9.00× |"));
        assert_eq!(
            line(&md, "| NAT translate at 100k entries, ns |"),
            "| NAT translate at 100k entries, ns | 30.0 | 1 entry | 20.0 | 1.50× |  |"
        );
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
