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

use crate::bench::LabGuard;
use anyhow::{bail, Context, Result};
use d11_lab::Topology;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Options of `d11 bench phones`.
#[derive(Debug, clap::Args)]
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

pub fn phones(args: &PhonesArgs) -> Result<()> {
    crate::need_root("d11 bench phones")?;
    let exe = std::env::current_exe().context("cannot find the d11 binary")?;
    let counts: Vec<usize> = args.phones.iter().map(|&n| n.max(1)).collect();
    let direct = direct_baseline(&exe, args, &counts)?;
    let sim = simulated(&exe, args, &counts)?;
    let report = compose(&counts, &sim, &direct);
    print(&report, &counts);
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// The direct lab with the same numbers of kernel-stack clients.
fn direct_baseline(exe: &Path, args: &PhonesArgs, counts: &[usize]) -> Result<Value> {
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
    let v: Value = serde_json::from_slice(&std::fs::read(&file)?)?;
    let _ = std::fs::remove_file(&file);
    Ok(v["variants"]["direct"].clone())
}

/// `d11 load` on the whole lab (its seed stock raised so no run sells out).
fn simulated(exe: &Path, args: &PhonesArgs, counts: &[usize]) -> Result<Vec<Value>> {
    let topo =
        crate::bench_order::with_stock(Topology::load(&args.topologies.join("double11.toml"))?);
    let file = std::env::temp_dir().join(format!("d11-bench-phones-{}.toml", std::process::id()));
    std::fs::write(&file, toml::to_string(&topo)?)?;
    let guard = LabGuard::up(exe, &file, "bench-phones");
    let _ = std::fs::remove_file(&file);
    let (lab, _) = guard?;
    let load = |phones: usize, orders: usize| -> Result<Value> {
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
        serde_json::from_slice::<Value>(&out.stdout)
            .map(|v| v["report"].clone())
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

fn compose(counts: &[usize], sim: &[Value], direct: &Value) -> Value {
    let rows: Vec<Value> = counts
        .iter()
        .zip(sim)
        .map(|(&n, s)| {
            let d = &direct[n.to_string()];
            let ratio = s["orders_per_s"].as_f64().unwrap_or(f64::NAN)
                / d["orders_per_s"].as_f64().unwrap_or(f64::NAN);
            json!({
                "phones": n,
                "simulated": s,
                "direct": d,
                "orders_per_s_vs_direct": ratio,
            })
        })
        .collect();
    json!({ "runs": rows })
}

fn print(r: &Value, counts: &[usize]) {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
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
    for (i, n) in counts.iter().enumerate() {
        let row = &r["runs"][i];
        let (s, d) = (&row["simulated"], &row["direct"]);
        println!(
            "{:>7} {:>8} {:>6} {:>9.0} {:>8.2} {:>8.2} {:>8} {:>7.1}   {:>9.0} {:>8.2}   {:>6.2}x",
            n,
            s["orders"].as_u64().unwrap_or(0),
            s["failed"].as_u64().unwrap_or(0),
            f(&s["orders_per_s"]),
            f(&s["latency_ms"]["p50"]),
            f(&s["latency_ms"]["p99"]),
            s["retransmissions"].as_u64().unwrap_or(0),
            f(&s["seconds"]),
            f(&d["orders_per_s"]),
            f(&d["p50_ms"]),
            f(&row["orders_per_s_vs_direct"]),
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

    #[test]
    fn each_count_is_set_beside_the_direct_clients_of_the_same_number() {
        let sim = vec![
            json!({"orders": 3, "failed": 0, "orders_per_s": 50.0}),
            json!({"orders": 10, "failed": 1, "orders_per_s": 100.0}),
        ];
        let direct = json!({"1": {"orders_per_s": 500.0}, "10": {"orders_per_s": 1000.0}});
        let r = compose(&[1, 10], &sim, &direct);
        assert_eq!(r["runs"][0]["phones"], 1);
        assert_eq!(r["runs"][0]["orders_per_s_vs_direct"], 0.1);
        assert_eq!(r["runs"][1]["direct"]["orders_per_s"], 1000.0);
        assert_eq!(r["runs"][1]["simulated"]["failed"], 1);
    }
}
