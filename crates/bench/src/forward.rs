//! `d11 bench forward`: what a userspace router costs.
//!
//! Three labs of the same shape — phone, four forwarders, server — are built
//! one after the other in this run, so the machine's noise hits them alike:
//! the kernel forwarding (`netns/bench-kernel.toml`), four `null` elements
//! that only pass frames across (`bench-null.toml`, the driver's own cost),
//! and four routers (`bench-router.toml`). Each gets an iperf3 TCP run and a
//! 64-byte UDP packet-rate run; the elements' CPU per frame is read during
//! that flood (saturation) and at a fixed 20,000 frames/s. The
//! report gives every figure and the ratios the issues ask for (router
//! per-frame cost against a null element, against the kernel), peak RSS per
//! element and `d11 up` wall time of the carrier lab.

use crate::cores::{self, MobileCore, RouterCore};
use crate::lab::{self, Ends, LabGuard, NodeLoad, Throughput};
use crate::{cell, ratio};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Options of `d11 bench forward`.
#[derive(Debug, Clone, clap::Args)]
pub struct ForwardArgs {
    /// Seconds of each iperf3 run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// How many times to bring the carrier lab up to time `d11 up` (median reported).
    #[arg(long, default_value_t = 3)]
    pub up_runs: u32,
    /// Directory holding the bench topologies and carrier.toml.
    #[arg(long, default_value = "netns")]
    pub topologies: PathBuf,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One lab's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Variant {
    #[serde(flatten)]
    pub rate: Throughput,
    /// Element CPU per received frame at 20,000 frames/s (labs of elements only).
    pub cpu_ns_per_frame: Option<f64>,
    /// VmHWM of each element, KiB.
    pub peak_rss_kib: BTreeMap<String, Option<u64>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Variants {
    pub kernel: Variant,
    pub null: Variant,
    pub router: Variant,
}

/// Costs: router ÷ baseline per frame or per bit (the inverse of the rates).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Ratios {
    pub router_vs_null_cpu_per_frame: Option<f64>,
    pub router_vs_null_cpu_per_frame_flood: Option<f64>,
    pub router_vs_null_cost_per_frame_udp64: Option<f64>,
    pub router_vs_null_cost_tcp: Option<f64>,
    pub router_vs_kernel_cost_per_frame_udp64: Option<f64>,
    pub router_vs_kernel_cost_tcp: Option<f64>,
}

/// The goals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Goals {
    pub router_vs_null_cpu_per_frame: f64,
    /// Issue 18: an element's CPU per frame at saturation, ns.
    pub cpu_ns_per_frame_flood: f64,
    pub peak_rss_mib_per_element: f64,
    pub up_carrier_s: f64,
}

impl Default for Goals {
    fn default() -> Goals {
        Goals {
            router_vs_null_cpu_per_frame: 1.2,
            cpu_ns_per_frame_flood: 1000.0,
            peak_rss_mib_per_element: 20.0,
            up_carrier_s: 2.0,
        }
    }
}

/// `d11 up` of the carrier lab: each run and the median.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UpTiming {
    pub runs_s: Vec<f64>,
    pub median_s: Option<f64>,
}

/// What `d11 bench forward` measures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ForwardReport {
    pub variants: Variants,
    pub ratios: Ratios,
    pub goals: Goals,
    pub up_carrier: UpTiming,
    pub element_core: RouterCore,
    pub mobile_core: MobileCore,
}

/// `d11 bench forward`.
pub fn forward(args: &ForwardArgs) -> Result<()> {
    let exe = lab::d11_exe()?;
    let run = |name: &str, file: &str, elements: bool| -> Result<Variant> {
        let file = args.topologies.join(file);
        eprintln!("bench: {name} ({})", file.display());
        run_variant(&exe, name, &file, elements, args.seconds)
            .with_context(|| format!("variant {name}"))
    };
    let variants = Variants {
        kernel: run("kernel", "bench-kernel.toml", false)?,
        null: run("null", "bench-null.toml", true)?,
        router: run("router", "bench-router.toml", true)?,
    };
    let up = time_up(&exe, &args.topologies.join("carrier.toml"), args.up_runs)?;
    let mut report = summarise(variants, up);
    report.element_core = cores::router_core(2_000_000);
    report.mobile_core = cores::mobile_core(2_000_000);
    print_report(&report);
    crate::write_json(args.json.as_deref(), &report)
}

fn run_variant(
    exe: &Path,
    name: &str,
    topology: &Path,
    elements: bool,
    seconds: u32,
) -> Result<Variant> {
    let server_ip = lab::server_address(topology)?;
    let ends = Ends {
        client: "phone",
        server: "server",
        server_ip: &server_ip,
    };
    let (lab, _) = LabGuard::up(exe, topology, &format!("bench-{name}"))?;
    let rate = Throughput::measure(&lab, &ends, seconds)?;
    let secs = seconds.to_string();
    // CPU per frame at one fixed offered load that every variant carries
    // without loss, so batching per wakeup is the same for null and router.
    let work = || {
        if elements {
            lab::element_work(&lab.name)
        } else {
            Ok(vec![])
        }
    };
    let before = work()?;
    lab::iperf(
        &lab,
        &ends,
        &["-u", "-b", lab::FIXED_RATE_BITS, "-l", "18", "-t", &secs],
    )?;
    let after = work()?;
    Ok(Variant {
        rate,
        cpu_ns_per_frame: NodeLoad::chain(&NodeLoad::between(&before, &after), &[]),
        peak_rss_kib: if elements {
            lab::peak_rss(&lab.name)?
        } else {
            BTreeMap::new()
        },
    })
}

/// Median wall time of `d11 up` for the carrier lab.
fn time_up(exe: &Path, carrier: &Path, runs: u32) -> Result<UpTiming> {
    let mut times = Vec::new();
    for _ in 0..runs.max(1) {
        let (lab, took) = LabGuard::up(exe, carrier, "bench-up")?;
        drop(lab);
        times.push(took.as_secs_f64());
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(UpTiming {
        median_s: times.get(times.len() / 2).copied(),
        runs_s: times,
    })
}

fn summarise(variants: Variants, up: UpTiming) -> ForwardReport {
    let (k, n, r) = (
        &variants.kernel.rate,
        &variants.null.rate,
        &variants.router.rate,
    );
    // Cost per frame is the inverse of the rate: router cost / null cost = null pps / router pps.
    let ratios = Ratios {
        router_vs_null_cpu_per_frame: ratio(
            variants.router.cpu_ns_per_frame,
            variants.null.cpu_ns_per_frame,
        ),
        router_vs_null_cpu_per_frame_flood: ratio(
            variants.router.rate.cpu_ns_per_frame_flood,
            variants.null.rate.cpu_ns_per_frame_flood,
        ),
        router_vs_null_cost_per_frame_udp64: ratio(n.udp64_received_pps, r.udp64_received_pps),
        router_vs_null_cost_tcp: ratio(n.tcp_mbit_s, r.tcp_mbit_s),
        router_vs_kernel_cost_per_frame_udp64: ratio(k.udp64_received_pps, r.udp64_received_pps),
        router_vs_kernel_cost_tcp: ratio(k.tcp_mbit_s, r.tcp_mbit_s),
    };
    ForwardReport {
        variants,
        ratios,
        goals: Goals::default(),
        up_carrier: up,
        ..ForwardReport::default()
    }
}

fn print_report(r: &ForwardReport) {
    println!(
        "\n{} {:>14} {:>14}",
        Throughput::header(),
        "CPU ns/frame",
        "at saturation"
    );
    let v = &r.variants;
    for (name, v) in [
        ("kernel", &v.kernel),
        ("null", &v.null),
        ("router", &v.router),
    ] {
        println!(
            "{} {:>14} {:>14}",
            v.rate.line(name),
            cell(v.cpu_ns_per_frame, 0),
            cell(v.rate.cpu_ns_per_frame_flood, 0)
        );
    }
    let q = &r.ratios;
    println!();
    for (x, what) in [
        (
            q.router_vs_null_cpu_per_frame,
            "element CPU per frame at 20k frames/s, router / null  (goal <= 1.2x)",
        ),
        (
            q.router_vs_null_cpu_per_frame_flood,
            "element CPU per frame at saturation, router / null (goal: router <= 1000 ns)",
        ),
        (
            q.router_vs_null_cost_per_frame_udp64,
            "UDP 64 B frame cost, router / null    (from received rates)",
        ),
        (q.router_vs_null_cost_tcp, "TCP cost, router / null"),
        (
            q.router_vs_kernel_cost_per_frame_udp64,
            "UDP 64 B frame cost, router / kernel",
        ),
        (q.router_vs_kernel_cost_tcp, "TCP cost, router / kernel"),
    ] {
        println!("{:>6}x  {what}", cell(x, 2));
    }
    for (name, v) in [("null", &v.null), ("router", &v.router)] {
        let list: Vec<String> = v
            .peak_rss_kib
            .iter()
            .map(|(n, k)| format!("{n} {}", cell(k.map(|k| k as f64 / 1024.0), 1)))
            .collect();
        println!(
            "peak RSS of {name} elements, MiB: {}  (goal <= 20)",
            list.join(", ")
        );
    }
    let core = &r.element_core;
    println!(
        "element core alone (no I/O): router {} ns/frame, null {} ns/frame",
        cell(core.router_ns_per_frame, 0),
        cell(core.null_ns_per_frame, 0)
    );
    let m = &r.mobile_core;
    println!(
        "mobile cores alone (no I/O), uplink ns/frame: enb {}, sgw {}, pgw (GTP-U end + NAT) {}; \
         NAT translate {} ns at 1 entry, {} ns at 100k entries",
        cell(m.enb_uplink_ns_per_frame, 0),
        cell(m.sgw_uplink_ns_per_frame, 0),
        cell(m.pgw_uplink_ns_per_frame, 0),
        cell(m.nat_translate_ns_1_entry, 0),
        cell(m.nat_translate_ns_100k_entries, 0),
    );
    let runs: Vec<String> = r
        .up_carrier
        .runs_s
        .iter()
        .map(|t| format!("{t:.3}"))
        .collect();
    println!(
        "d11 up, carrier lab: median {} s, runs [{}] s  (goal <= 2 s)",
        cell(r.up_carrier.median_s, 3),
        runs.join(", ")
    );
}
