//! The lab's benchmarks, behind `d11 bench …`: every figure beside a
//! baseline measured in the same run, never a timed assertion.
//!
//! Each bench is a module with its options (`clap::Args`, which the `d11`
//! binary parses), its run and its result, a struct that is
//! `Serialize + Deserialize`: the bench prints its tables from it and
//! writes it with `--json FILE`; [`report`] runs every bench as a child
//! `d11 bench NAME --json FILE`, reads those results back as the same types
//! and composes `bench.md` and `bench.json` from them. JSON exists only
//! where a result is written or read, and where an external tool (iperf3,
//! `d11 load --json`) answers in it.
//!
//! | module | `d11 bench` | compares |
//! |---|---|---|
//! | [`forward`] | `forward` | four routers vs. kernel forwarding and null elements |
//! | [`cloud`] | `cloud` | two vSwitches and a switch vs. kernel VXLAN and null elements |
//! | [`mobile`] | `mobile` | enb, sgw, pgw vs. null elements |
//! | [`order`] | `order` | orders/s: full path vs. direct, l4lb vs. haproxy, backend vs. controller-only |
//! | [`rpc`] | `rpc` | RPC across VXLAN vs. loopback |
//! | [`phones`] | `phones` | simulated phones (`d11 load`) vs. direct clients |
//! | [`attach`] | `attach` | 10,000 simulated phones attaching at once vs. one alone |
//! | [`bgp`] | `bgp` | 100k prefixes through our router vs. BIRD, the FIB at 100k routes, convergence vs. the hold time |
//! | [`vpn`] | `vpn` | iperf3 through the VPN vs. the vgw's routing without ESP, ESP alone, the gateway's CPU per frame vs. a null element |
//! | [`dns`] | `dns` | our resolver vs. unbound (warm q/s, a cold walk), our authoritative server vs. nsd |
//! | [`lb`] | `lb` | the l4lb vs. haproxy `mode tcp` alone, same client and backend on one namespace's loopback: connections/s and CPU per connection at 1, 8, 32, 1,000 |
//! | [`cdn`] | `cdn` | wrk on our warm edge vs. nginx `proxy_cache`; a miss through edge → parent → origin vs. through nginx caches, no root |
//! | [`cores`] | `core` | each element's `on_frame` alone vs. a null element, no root |
//! | [`report`] | `report` | all of them, one report |
//!
//! The harness the lab benches share (a lab that goes down when dropped,
//! iperf3, the elements' CPU and frames) is in [`lab`].

pub mod attach;
pub mod bgp;
pub mod cdn;
pub mod cloud;
pub mod cores;
pub mod dns;
pub mod forward;
pub mod haproxy;
pub mod lab;
pub mod lb;
pub mod mobile;
pub mod order;
pub mod phones;
pub mod report;
pub mod rpc;
pub mod vpn;

use serde::{Deserialize, Serialize};

/// Refuses to go on without root, in one line.
pub fn need_root(what: &str) -> anyhow::Result<()> {
    if !d11_io::is_root() {
        anyhow::bail!("{what} creates network namespaces and must run as root (try sudo)");
    }
    Ok(())
}

/// The median of the finite values of `v` (NaN when there are none): the
/// benches report the median of their rounds.
/// Linux's USER_HZ: the unit of CPU times in /proc/PID/stat and /proc/stat.
pub const TICKS_PER_S: f64 = 100.0;

/// utime + stime of every thread of `pid`, live or gone, in ticks.
pub fn proc_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after "(comm)": state is field 3, utime 14, stime 15 (proc(5)).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `x` when it is a number (not NaN or infinite): a figure a run could not
/// measure is `None` (`null` in JSON), never a NaN.
pub fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// `a / b`, when both are figures and `b` is not zero.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => finite(a / b),
        _ => None,
    }
}

/// A ratio taken in each round, and their median: the figure a bench
/// quotes, so a burst of other work on the machine moves one round, not
/// the result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoundRatio {
    pub median: Option<f64>,
    pub rounds: Vec<Option<f64>>,
}

impl RoundRatio {
    pub fn of(rounds: Vec<f64>) -> RoundRatio {
        RoundRatio {
            median: finite(median(rounds.clone())),
            rounds: rounds.into_iter().map(finite).collect(),
        }
    }

    /// The rounds as `1.10 1.20 …` (`—` for a round without a figure).
    pub fn list(&self) -> String {
        let l: Vec<String> = self
            .rounds
            .iter()
            .map(|x| x.map_or("—".into(), |x| format!("{x:.2}")))
            .collect();
        l.join(" ")
    }
}

/// A bound on a figure: its ratio to the baseline, or the value itself, at
/// most or at least `limit`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Goal {
    pub limit: f64,
    pub at_most: bool,
    pub of_value: bool,
}

impl Goal {
    pub fn ratio_at_most(limit: f64) -> Option<Goal> {
        Some(Goal {
            limit,
            at_most: true,
            of_value: false,
        })
    }
    pub fn ratio_at_least(limit: f64) -> Option<Goal> {
        Some(Goal {
            limit,
            at_most: false,
            of_value: false,
        })
    }
    pub fn value_at_least(limit: f64) -> Option<Goal> {
        Some(Goal {
            limit,
            at_most: false,
            of_value: true,
        })
    }
    pub fn value_at_most(limit: f64) -> Option<Goal> {
        Some(Goal {
            limit,
            at_most: true,
            of_value: true,
        })
    }

    /// Met, missed, or `None` without the figure it bounds.
    pub fn met(&self, value: Option<f64>, ratio: Option<f64>) -> Option<bool> {
        let x = if self.of_value { value } else { ratio }?;
        Some(if self.at_most {
            x <= self.limit
        } else {
            x >= self.limit
        })
    }

    /// `≤ 1.2×`, `≥ 500`.
    pub fn bound(&self) -> String {
        format!(
            "{} {}{}",
            if self.at_most { "≤" } else { "≥" },
            self.limit,
            if self.of_value { "" } else { "×" }
        )
    }
}

/// One row of a bench's table: a figure, its same-run baseline, a goal.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub figure: String,
    pub value: Option<f64>,
    pub baseline: &'static str,
    pub base: Option<f64>,
    pub goal: Option<Goal>,
}

/// Prints `figures` as the bench's table: each value, its baseline's, the
/// ratio, and whether the goal was met.
pub fn print_figures(figures: &[Figure]) {
    println!(
        "{:<80} {:>10}  {:<60} {:>10} {:>7}  goal",
        "figure", "value", "baseline", "value", "ratio"
    );
    for f in figures {
        let r = ratio(f.value, f.base);
        let goal = f.goal.map_or(String::new(), |g| match g.met(f.value, r) {
            Some(true) => format!("{}: met", g.bound()),
            Some(false) => format!("{}: missed", g.bound()),
            None => g.bound(),
        });
        println!(
            "{:<80} {:>10}  {:<60} {:>10} {:>6}×  {goal}",
            f.figure,
            cell(f.value, 2),
            f.baseline,
            cell(f.base, 2),
            cell(r, 2)
        );
    }
}

/// A figure for a printed table: `-` when missing.
pub(crate) fn cell(x: Option<f64>, decimals: usize) -> String {
    x.map_or("-".into(), |x| format!("{x:.decimals$}"))
}

/// Writes `value` as pretty JSON to `path`, when one is given (`--json`).
pub(crate) fn write_json<T: Serialize>(
    path: Option<&std::path::Path>,
    value: &T,
) -> anyhow::Result<()> {
    use anyhow::Context;
    if let Some(p) = path {
        std::fs::write(p, serde_json::to_string_pretty(value)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_skip_missing_figures() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, f64::NAN, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }

    #[test]
    fn a_ratio_without_a_figure_is_none_and_reads_back_as_none() {
        let r = RoundRatio::of(vec![1.0, f64::NAN, 3.0]);
        assert_eq!(r.median, Some(2.0));
        assert_eq!(r.rounds, [Some(1.0), None, Some(3.0)]);
        let back: RoundRatio = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(r.list(), "1.00 — 3.00");
    }
}
