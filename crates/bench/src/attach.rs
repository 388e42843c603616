//! `d11 bench attach`: many simulated phones attaching at once (issue 14's
//! benchmark). `d11 load --attach-only` on a fresh lab: each phone a
//! `Baseband` with a USIM of the hss's range, over the radio carriage of
//! NAS through the enb, the mme (S1AP over SCTP, S6a to the hss, GTPv2-C
//! to the sgw and on to the pgw). The figures: attaches per second, the
//! time until all are attached, p50/p99 attach time, and per node (enb,
//! mme, sgw, pgw, hss) the CPU per attach and the RSS each attached phone
//! added. The baseline, measured in the same lab just before: one phone
//! attaching alone (its attach time, the rate of one phone at a time).

use crate::lab::{self, LabGuard};
use anyhow::{Context, Result};
use d11_apps::ran::RanReport;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

/// Options of `d11 bench attach`.
#[derive(Debug, Clone, clap::Args)]
pub struct AttachArgs {
    /// Phones attaching at once (at most the hss's range, 10,000).
    #[arg(long, default_value_t = 10_000)]
    pub phones: usize,
    /// Runs of the whole count on the same lab; the report keeps the median run (by attaches/s).
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,
    /// Directory holding double11.toml.
    #[arg(long, default_value = "netns")]
    pub topologies: PathBuf,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The goals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttachGoals {
    pub attaches_per_s_at_least: f64,
    pub all_attached_s_at_most: f64,
    pub rss_bytes_per_phone_at_most: f64,
}

impl Default for AttachGoals {
    fn default() -> AttachGoals {
        AttachGoals {
            attaches_per_s_at_least: 500.0,
            all_attached_s_at_most: 20.0,
            rss_bytes_per_phone_at_most: 2048.0,
        }
    }
}

/// One node's cost of the attaches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeCost {
    pub rss_before_kb: u64,
    pub rss_after_kb: u64,
    /// (RSS after − before) ÷ attached phones.
    pub rss_bytes_per_phone: f64,
    /// CPU time (user + system) over the run ÷ attached phones.
    pub cpu_ms_per_attach: f64,
}

/// What `d11 bench attach` measures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AttachBench {
    pub phones: usize,
    /// The kept run's `d11 load` report (its `attach` part is the figure).
    pub run: Option<RanReport>,
    /// One phone alone, just before.
    pub lone: Option<RanReport>,
    /// Every round's attaches/s.
    pub rounds_attaches_per_s: Vec<f64>,
    pub nodes: BTreeMap<String, NodeCost>,
    pub goals: AttachGoals,
}

/// What this bench reads of `d11 load --json`.
#[derive(Deserialize)]
struct LoadOutput {
    report: RanReport,
    rss_before: BTreeMap<String, Usage>,
    rss_after: BTreeMap<String, Usage>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct Usage {
    rss_kb: u64,
    cpu_ms: u64,
}

/// The nodes the attach runs through.
const NODES: [&str; 5] = ["enb", "mme", "sgw", "pgw", "hss"];

/// `d11 bench attach`.
pub fn attach(args: &AttachArgs) -> Result<()> {
    crate::need_root("d11 bench attach")?;
    let exe = lab::d11_exe()?;
    let (guard, _) = LabGuard::up(&exe, &args.topologies.join("double11.toml"), "bench-attach")?;
    let load = |phones: usize| -> Result<LoadOutput> {
        let out = Command::new(&exe)
            .args(["load", "--name", &guard.name, "--attach-only", "--json"])
            .args(["--phones", &phones.to_string()])
            .output()
            .context("running d11 load")?;
        serde_json::from_slice::<LoadOutput>(&out.stdout)
            .with_context(|| format!("d11 load: {}", String::from_utf8_lossy(&out.stderr).trim()))
    };
    // The baseline first: phone 0 alone (in the big run it attaches
    // again, on the context it left in the mme).
    let lone = load(1).context("one phone alone")?;
    let mut runs = Vec::new();
    for r in 0..args.rounds.max(1) {
        eprintln!("bench attach: round {}, {} phones", r + 1, args.phones);
        runs.push(load(args.phones)?);
    }
    let rounds: Vec<f64> = runs
        .iter()
        .map(|o| o.report.attach.attaches_per_s)
        .collect();
    runs.sort_by(|a, b| {
        a.report
            .attach
            .attaches_per_s
            .total_cmp(&b.report.attach.attaches_per_s)
    });
    let kept = runs.swap_remove(runs.len() / 2);
    let report = compose(args.phones, kept, lone.report, rounds);
    print(&report);
    crate::write_json(args.json.as_deref(), &report)
}

fn compose(phones: usize, run: LoadOutput, lone: RanReport, rounds: Vec<f64>) -> AttachBench {
    let attached = run.report.attach.attached.max(1) as f64;
    let nodes = NODES
        .iter()
        .filter_map(|&n| {
            let (b, a) = (run.rss_before.get(n)?, run.rss_after.get(n)?);
            Some((
                n.to_string(),
                NodeCost {
                    rss_before_kb: b.rss_kb,
                    rss_after_kb: a.rss_kb,
                    rss_bytes_per_phone: (a.rss_kb as f64 - b.rss_kb as f64) * 1024.0 / attached,
                    cpu_ms_per_attach: a.cpu_ms.saturating_sub(b.cpu_ms) as f64 / attached,
                },
            ))
        })
        .collect();
    AttachBench {
        phones,
        run: Some(run.report),
        lone: Some(lone),
        rounds_attaches_per_s: rounds,
        nodes,
        goals: AttachGoals::default(),
    }
}

impl AttachBench {
    /// A lone phone's attaches per second: one after the other, 1000 ÷ its attach ms.
    pub fn lone_rate(&self) -> Option<f64> {
        let ms = self.lone.as_ref()?.attach.latency_ms.p50;
        (ms > 0.0).then(|| 1000.0 / ms)
    }
}

fn print(r: &AttachBench) {
    let Some(run) = &r.run else {
        return;
    };
    let (a, lone) = (&run.attach, r.lone.as_ref().map(|l| &l.attach));
    println!(
        "{} phones at once: {} attached, {} failed in {:.2} s — {:.0} attaches/s (goal ≥ {:.0}; all in ≤ {:.0} s); {} Attach Requests",
        r.phones,
        a.attached,
        a.failed,
        a.seconds,
        a.attaches_per_s,
        r.goals.attaches_per_s_at_least,
        r.goals.all_attached_s_at_most,
        a.requests
    );
    println!(
        "attach ms: p50 {:.1}, p99 {:.1}; one phone alone (baseline, same lab): {}",
        a.latency_ms.p50,
        a.latency_ms.p99,
        lone.map_or("—".into(), |l| format!("{:.1} ms", l.latency_ms.p50))
    );
    println!(
        "{:<5} {:>10} {:>10} {:>14} {:>12}",
        "node", "RSS kB", "after kB", "B per phone", "CPU ms/att"
    );
    for (n, c) in &r.nodes {
        println!(
            "{:<5} {:>10} {:>10} {:>14.0} {:>12.3}",
            n, c.rss_before_kb, c.rss_after_kb, c.rss_bytes_per_phone, c.cpu_ms_per_attach
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nodes_cost_is_its_growth_and_its_cpu_over_the_attached_phones() {
        let usage = |rss_kb, cpu_ms| Usage { rss_kb, cpu_ms };
        let mut report = RanReport::default();
        report.attach.attached = 1000;
        let mut lone = report.clone();
        lone.attach.latency_ms.p50 = 20.0;
        let run = LoadOutput {
            report,
            rss_before: [("mme".to_string(), usage(10_000, 50))].into(),
            rss_after: [("mme".to_string(), usage(11_000, 150))].into(),
        };
        let b = compose(1000, run, lone, vec![]);
        let mme = &b.nodes["mme"];
        assert_eq!(mme.rss_bytes_per_phone, 1024.0);
        assert_eq!(mme.cpu_ms_per_attach, 0.1);
        assert_eq!(b.lone_rate(), Some(50.0));
        assert!(!b.nodes.contains_key("sgw"), "no figure, no row");
    }
}
