//! `d11 impair [--name LAB] [WIRE [SPEC…|off]]`: set, clear or show a
//! wire's impairments while the lab runs (`docs/impair.md`).
//!
//! Each direction of a wire is impaired by one element (the sender if it
//! is an element, else the receiver; `Topology::impair_point`); this
//! command finds it and sends its control socket `impair PORT tx|rx SPEC`.
//! The change lasts until the element restarts, which goes back to the
//! topology's settings.

use anyhow::{bail, Context, Result};
use d11_core::Impairment;
use d11_lab::{direction_seed, RunDir, Topology, Wire, WireDir};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

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
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "wires": rows }))?
        );
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
        let answer = d11_io::query(&dir.socket(&end.node), &cmd, TIMEOUT)
            .with_context(|| format!("asking {} to impair its port {}", end.node, end.port))?;
        if let Some(e) = answer["error"].as_str() {
            bail!("{}: {e}", end.node);
        }
        out.push(json!({
            "wire": w.name(), "dir": d.as_str(), "by": end.to_string(),
            "side": side.as_str(), "spec": answer["impair"],
        }));
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&json!({ "set": out }))?);
    } else {
        for r in &out {
            println!(
                "{} {}: {} (applied by {} on {})",
                r["wire"].as_str().unwrap_or(""),
                r["dir"].as_str().unwrap_or(""),
                r["spec"].as_str().unwrap_or(""),
                r["by"].as_str().unwrap_or(""),
                r["side"].as_str().unwrap_or(""),
            );
        }
    }
    Ok(())
}

/// One row per wire: each direction's spec and counts as the element
/// applying it reports them (`null` if unimpaired); with `only_impaired`,
/// wires impaired in neither direction are left out.
fn show(topo: &Topology, dir: &RunDir, wires: &[&Wire], only_impaired: bool) -> Result<Vec<Value>> {
    let mut answers: HashMap<String, Value> = HashMap::new();
    let mut rows = Vec::new();
    for w in wires {
        let mut row = json!({"wire": w.name()});
        let mut any = false;
        for d in WireDir::BOTH {
            let Some((end, side)) = topo.impair_point(w, d) else {
                row[d.as_str()] = Value::Null;
                continue;
            };
            if !answers.contains_key(&end.node) {
                let a = d11_io::query(&dir.socket(&end.node), "impair", TIMEOUT)
                    .with_context(|| format!("asking {} for its impairments", end.node))?;
                answers.insert(end.node.clone(), a);
            }
            let now = &answers[&end.node]["ports"][&end.port][side.as_str()];
            if now.is_object() {
                any = true;
                let mut v = now.clone();
                v["by"] = json!(end.to_string());
                v["side"] = json!(side.as_str());
                row[d.as_str()] = v;
            } else {
                row[d.as_str()] = Value::Null;
            }
        }
        if any || !only_impaired {
            rows.push(row);
        }
    }
    Ok(rows)
}

fn print_row(r: &Value) {
    println!("{}", r["wire"].as_str().unwrap_or(""));
    for d in WireDir::BOTH {
        let v = &r[d.as_str()];
        if !v.is_object() {
            println!("  {:<7} off", d.as_str());
            continue;
        }
        println!(
            "  {:<7} {}  (by {} {}; frames {}, lost {}, rate drops {}, delayed {}, duplicated {}, reordered {}, corrupted {})",
            d.as_str(),
            v["spec"].as_str().unwrap_or(""),
            v["by"].as_str().unwrap_or(""),
            v["side"].as_str().unwrap_or(""),
            v["frames"], v["lost"], v["rate_dropped"], v["delayed"], v["duplicated"], v["reordered"], v["corrupted"],
        );
    }
}
