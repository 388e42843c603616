//! `d11 bench phones`: orders per second and latency against the number of
//! simulated phones (`d11 load`: each its own UE address, bearer, smoltcp
//! stack and TLS client, behind the eNodeB) on the whole path, beside the
//! direct-to-controller baseline measured in the same run (`d11 bench
//! order`'s `direct` lab: the kernel-stack load generator and one
//! controller on one veth, the same number of clients).
//!
//! Each count places about `--orders` orders in all (each phone
//! `ceil(orders / phones)`, one after the other); the figure is orders that
//! got their 201 over the run's wall time, as `d11 load` reports it.

use crate::lab::{self, LabGuard};
use crate::order::{self, Figures, OrderReport, Variant};
use crate::{cell, ratio};
use anyhow::{bail, Context, Result};
use d11_apps::ran::RanReport;
use d11_lab::Topology;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Options of `d11 bench phones`.
#[derive(Debug, Clone, clap::Args)]
pub struct PhonesArgs {
    /// Simulated phones, one run for each count.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000")]
    pub phones: Vec<usize>,
    /// Orders placed in each run, spread over the phones (at least one each).
    #[arg(long, default_value_t = 1000)]
    pub orders: usize,
    /// Seconds of the direct baseline's runs (`d11 bench order --seconds`).
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// Directory holding double11.toml and bench-order-direct.toml.
    #[arg(long, default_value = "netns")]
    pub topologies: PathBuf,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One count of phones beside as many direct clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhonesRun {
    pub phones: usize,
    pub simulated: RanReport,
    pub direct: Option<Figures>,
    pub orders_per_s_vs_direct: Option<f64>,
}

/// What `d11 bench phones` measures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PhonesReport {
    pub runs: Vec<PhonesRun>,
}

/// What this bench reads of `d11 load --json`.
#[derive(Deserialize)]
struct LoadOutput {
    report: RanReport,
}

/// `d11 bench phones`.
pub fn phones(args: &PhonesArgs) -> Result<()> {
    crate::need_root("d11 bench phones")?;
    let exe = lab::d11_exe()?;
    let counts: Vec<usize> = args.phones.iter().map(|&n| n.max(1)).collect();
    let direct = direct_baseline(&exe, args, &counts)?;
    let sim = simulated(&exe, args, &counts)?;
    let report = compose(&counts, sim, &direct);
    print(&report);
    crate::write_json(args.json.as_deref(), &report)
}

/// The direct lab with the same numbers of kernel-stack clients.
fn direct_baseline(exe: &Path, args: &PhonesArgs, counts: &[usize]) -> Result<OrderReport> {
    let file = std::env::temp_dir().join(format!("d11-bench-phones-{}.json", std::process::id()));
    let clients: Vec<String> = counts.iter().map(usize::to_string).collect();
    let out = Command::new(exe)
        .args(["bench", "order", "--variants", "direct", "--rounds", "1"])
        .args([
            "--clients",
            &clients.join(","),
            "--seconds",
            &args.seconds.to_string(),
        ])
        .args(["--topologies".as_ref(), args.topologies.as_os_str()])
        .args(["--json".as_ref(), file.as_os_str()])
        .output()
        .context("running d11 bench order")?;
    if !out.status.success() {
        bail!(
            "d11 bench order (direct): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = std::fs::read(&file);
    let _ = std::fs::remove_file(&file);
    serde_json::from_slice(&text?).context("reading d11 bench order's JSON")
}

/// `d11 load` on the whole lab (its seed stock raised so no run sells out).
fn simulated(exe: &Path, args: &PhonesArgs, counts: &[usize]) -> Result<Vec<RanReport>> {
    let topo = order::with_stock(Topology::load(&args.topologies.join("double11.toml"))?);
    let file = std::env::temp_dir().join(format!("d11-bench-phones-{}.toml", std::process::id()));
    std::fs::write(&file, toml::to_string(&topo)?)?;
    let guard = LabGuard::up(exe, &file, "bench-phones");
    let _ = std::fs::remove_file(&file);
    let (lab, _) = guard?;
    let load = |phones: usize, orders: usize| -> Result<RanReport> {
        let out = Command::new(exe)
            .args(["load", "--name", &lab.name, "--json"])
            .args([
                "--phones",
                &phones.to_string(),
                "--orders",
                &orders.to_string(),
            ])
            .output()
            .context("running d11 load")?;
        serde_json::from_slice::<LoadOutput>(&out.stdout)
            .map(|o| o.report)
            .with_context(|| format!("d11 load: {}", String::from_utf8_lossy(&out.stderr).trim()))
    };
    load(1, 3).context("warming the lab up")?;
    let mut runs = vec![];
    for &n in counts {
        let per_phone = args.orders.div_ceil(n).max(1);
        eprintln!("bench: {n} phones x {per_phone} orders");
        runs.push(load(n, per_phone)?);
    }
    Ok(runs)
}

fn compose(counts: &[usize], sim: Vec<RanReport>, direct: &OrderReport) -> PhonesReport {
    let runs = counts
        .iter()
        .zip(sim)
        .map(|(&n, s)| {
            let d = direct.at(Variant::Direct, n).cloned();
            PhonesRun {
                phones: n,
                orders_per_s_vs_direct: ratio(
                    Some(s.orders_per_s),
                    d.as_ref().and_then(|d| d.orders_per_s),
                ),
                simulated: s,
                direct: d,
            }
        })
        .collect();
    PhonesReport { runs }
}

fn print(r: &PhonesReport) {
    println!(
        "{:>7} {:>8} {:>6} {:>9} {:>8} {:>8} {:>8} {:>7}   {:>9} {:>8}   {:>7}",
        "phones",
        "orders",
        "failed",
        "orders/s",
        "p50 ms",
        "p99 ms",
        "retrans",
        "s",
        "direct/s",
        "p50 ms",
        "ratio"
    );
    for row in &r.runs {
        let (s, d) = (&row.simulated, row.direct.as_ref());
        println!(
            "{:>7} {:>8} {:>6} {:>9.0} {:>8.2} {:>8.2} {:>8} {:>7.1}   {:>9} {:>8}   {:>6}x",
            row.phones,
            s.orders,
            s.failed,
            s.orders_per_s,
            s.latency_ms.p50,
            s.latency_ms.p99,
            s.retransmissions,
            s.seconds,
            cell(d.and_then(|d| d.orders_per_s), 0),
            cell(d.and_then(|d| d.p50_ms), 2),
            cell(row.orders_per_s_vs_direct, 2),
        );
    }
    println!(
        "simulated phones (d11 load) over the whole path, each its own UE address, bearer, \
         smoltcp stack and TLS client, vs. the same number of kernel-stack clients straight to one \
         controller (d11 bench order's direct lab), measured in this run"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn ran(orders: usize, failed: usize, orders_per_s: f64) -> RanReport {
        RanReport {
            phones: 1,
            orders,
            ok: orders - failed,
            failed,
            by_outcome: Default::default(),
            latency_ms: Default::default(),
            retransmissions: 0,
            seconds: 1.0,
            orders_per_s,
            attach: Default::default(),
            stalls: Vec::new(),
        }
    }

    #[test]
    fn each_count_is_set_beside_the_direct_clients_of_the_same_number() {
        let fig = |x: f64| Figures {
            orders_per_s: Some(x),
            ..Figures::default()
        };
        let direct = OrderReport {
            variants: [(Variant::Direct, [(1, fig(500.0)), (10, fig(1000.0))].into())].into(),
            ..OrderReport::default()
        };
        let r = compose(&[1, 10], vec![ran(3, 0, 50.0), ran(10, 1, 100.0)], &direct);
        assert_eq!(r.runs[0].phones, 1);
        assert_eq!(r.runs[0].orders_per_s_vs_direct, Some(0.1));
        assert_eq!(
            r.runs[1].direct.as_ref().unwrap().orders_per_s,
            Some(1000.0)
        );
        assert_eq!(r.runs[1].simulated.failed, 1);
        let back: PhonesReport = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
