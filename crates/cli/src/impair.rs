//! `d11 impair [--name LAB] [WIRE [SPEC…|off]]`: set, clear or show a
//! wire's impairments while the lab runs (`docs/impair.md`).
//!
//! Each direction of a wire is impaired by one element (the sender if it
//! is an element, else the receiver; `Topology::impair_point`); this
//! command finds it and sends its control socket `impair PORT tx|rx SPEC`.
//! The change lasts until the element restarts, which goes back to the
//! topology's settings.

use anyhow::{bail, Context, Result};
use d11_core::status::{ImpairReport, ImpairSet, ImpairSide};
use d11_core::Impairment;
use d11_lab::{direction_seed, RunDir, Topology, Wire, WireDir};
use serde::Serialize;
use std::collections::HashMap;
use std::time::Duration;

/// One direction set by `d11 impair WIRE SPEC`, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
struct SetRow {
    wire: String,
    dir: &'static str,
    /// `node:port` of the element applying it.
    by: String,
    side: &'static str,
    spec: String,
}

/// One wire as `d11 impair` shows it: each direction's impairment and
/// counts, `None` when off.
#[derive(Debug, Clone, Serialize)]
struct WireRow {
    wire: String,
    a_to_b: Option<Applied>,
    b_to_a: Option<Applied>,
}

/// A direction's impairment with the element and side applying it.
#[derive(Debug, Clone, Serialize)]
struct Applied {
    by: String,
    side: &'static str,
    #[serde(flatten)]
    now: ImpairSide,
}

#[derive(clap::Args)]
pub struct ImpairArgs {
    #[command(flatten)]
    lab: crate::LabArg,
    /// `node:port` of either end, or `a--b` (node names or both ends); every
    /// impaired wire if omitted.
    wire: Option<String>,
    /// `loss=5% delay=20ms jitter=5ms rate=10mbit duplicate=1% reorder=2%
    /// corrupt=0.1% ge=p,r,h,k seed=N`, or `off`; shows the wire if omitted.
    #[arg(value_name = "SPEC")]
    spec: Vec<String>,
    /// Which direction to change.
    #[arg(long, value_enum, default_value = "both")]
    dir: DirArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DirArg {
    Both,
    AToB,
    BToA,
}

const TIMEOUT: Duration = Duration::from_secs(2);

pub fn impair(args: &ImpairArgs) -> Result<()> {
    let lab = &args.lab.name;
    d11_lab::check_lab_name(lab)?;
    let dir = RunDir::new(lab);
    if !dir.exists() {
        bail!("there is no lab named {lab}");
    }
    let topo = dir.topology().context("reading the lab's topology")?;
    let wires: Vec<&Wire> = match &args.wire {
        Some(w) => vec![topo.find_wire(w).map_err(anyhow::Error::msg)?],
        None => topo.wires.iter().collect(),
    };
    if !args.spec.is_empty() {
        let Some(w) = wires.first() else {
            bail!("give the WIRE to impair");
        };
        return set(&topo, &dir, w, &args.spec.join(" "), args.dir, args.json);
    }
    let rows = show(&topo, &dir, &wires, args.wire.is_none())?;
    if args.json {
        #[derive(Serialize)]
        struct Out<'a> {
            wires: &'a [WireRow],
        }
        println!("{}", serde_json::to_string_pretty(&Out { wires: &rows })?);
    } else if rows.is_empty() {
        println!("no wire of lab {lab} is impaired");
    } else {
        for r in &rows {
            print_row(r);
        }
    }
    Ok(())
}

fn set(
    topo: &Topology,
    dir: &RunDir,
    w: &Wire,
    spec: &str,
    which: DirArg,
    as_json: bool,
) -> Result<()> {
    let cfg: Impairment = spec
        .parse()
        .map_err(|e| anyhow::anyhow!("bad impairment spec: {e}"))?;
    let dirs: &[WireDir] = match which {
        DirArg::Both => &WireDir::BOTH,
        DirArg::AToB => &[WireDir::AToB],
        DirArg::BToA => &[WireDir::BToA],
    };
    let mut out = Vec::new();
    for &d in dirs {
        let Some((end, side)) = topo.impair_point(w, d) else {
            bail!(
                "wire {} has no element at either end, so nothing can impair it",
                w.name()
            );
        };
        let seed = direction_seed(cfg.seed.unwrap_or(w.seed()), d);
        let cfg = cfg.clone().with_seed(seed);
        let cmd = format!("impair {} {} {cfg}", end.port, side.as_str());
        let answer: ImpairSet = d11_io::ask(&dir.socket(&end.node), &cmd, TIMEOUT)
            .with_context(|| format!("asking {} to impair its port {}", end.node, end.port))?;
        out.push(SetRow {
            wire: w.name(),
            dir: d.as_str(),
            by: end.to_string(),
            side: side.as_str(),
            spec: answer.impair,
        });
    }
    if as_json {
        #[derive(Serialize)]
        struct Out<'a> {
            set: &'a [SetRow],
        }
        println!("{}", serde_json::to_string_pretty(&Out { set: &out })?);
    } else {
        for r in &out {
            println!(
                "{} {}: {} (applied by {} on {})",
                r.wire, r.dir, r.spec, r.by, r.side
            );
        }
    }
    Ok(())
}

/// One row per wire: each direction's spec and counts as the element
/// applying it reports them (`None` if unimpaired); with `only_impaired`,
/// wires impaired in neither direction are left out.
fn show(
    topo: &Topology,
    dir: &RunDir,
    wires: &[&Wire],
    only_impaired: bool,
) -> Result<Vec<WireRow>> {
    let mut answers: HashMap<String, ImpairReport> = HashMap::new();
    let mut rows = Vec::new();
    for w in wires {
        let mut sides = [None, None];
        for (i, d) in WireDir::BOTH.into_iter().enumerate() {
            let Some((end, side)) = topo.impair_point(w, d) else {
                continue;
            };
            if !answers.contains_key(&end.node) {
                let a = d11_io::ask(&dir.socket(&end.node), "impair", TIMEOUT)
                    .with_context(|| format!("asking {} for its impairments", end.node))?;
                answers.insert(end.node.clone(), a);
            }
            let port = (answers[&end.node].ports.iter()).find(|(p, _)| *p == end.port);
            let now = port.and_then(|(_, s)| match side.as_str() {
                "tx" => s.tx.clone(),
                _ => s.rx.clone(),
            });
            sides[i] = now.map(|now| Applied {
                by: end.to_string(),
                side: side.as_str(),
                now,
            });
        }
        let [a_to_b, b_to_a] = sides;
        if a_to_b.is_some() || b_to_a.is_some() || !only_impaired {
            rows.push(WireRow {
                wire: w.name(),
                a_to_b,
                b_to_a,
            });
        }
    }
    Ok(rows)
}

fn print_row(r: &WireRow) {
    println!("{}", r.wire);
    for (d, v) in [("a_to_b", &r.a_to_b), ("b_to_a", &r.b_to_a)] {
        let Some(v) = v else {
            println!("  {d:<7} off");
            continue;
        };
        let s = &v.now.stats;
        println!(
            "  {:<7} {}  (by {} {}; frames {}, lost {}, rate drops {}, delayed {}, duplicated {}, reordered {}, corrupted {})",
            d, v.now.spec, v.by, v.side,
            s.frames, s.lost, s.rate_dropped, s.delayed, s.duplicated, s.reordered, s.corrupted,
        );
    }
}
