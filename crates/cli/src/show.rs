//! `d11 show NODE [TABLE] [--json]`: an element's own tables (FIB, ARP
//! cache, MAC table, bearers, NAT entries…) or an app's (the load
//! balancer's backends, the controller's counters), as its control socket
//! reports them, plus `impair` for its ports' impairments. Each decides what its report holds; this only prints it.

use anyhow::{bail, Context, Result};
use d11_lab::RunDir;
use serde_json::Value;
use std::time::Duration;

pub fn show(lab: &str, node: &str, table: Option<&str>, as_json: bool) -> Result<()> {
    d11_lab::check_lab_name(lab)?;
    let dir = RunDir::new(lab);
    if !dir.exists() {
        bail!("there is no lab named {lab}");
    }
    let topo = dir.topology().context("reading the lab's topology")?;
    if topo.element(node).is_none() && topo.app(node).is_none() {
        let names: Vec<String> = (topo.elements().into_iter().map(|e| e.name))
            .chain(topo.apps().into_iter().map(|a| a.name))
            .collect();
        bail!(
            "{node:?} is neither an element nor a host with an app in lab {lab} (those: {})",
            names.join(", ")
        );
    }
    let socket = dir.socket(node);
    // A table the element keeps too large for its status (a router's FIB
    // and Loc-RIB with a whole table) comes on its own, in full.
    if let Some(t) = table {
        match d11_io::table::<Value>(&socket, t, Duration::from_secs(30)) {
            Ok(v) => return print(&v, as_json),
            Err(d11_io::IoError::Refused { .. }) => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("asking {node} (is the lab up? see d11 status --name {lab})")
                })
            }
        }
    }
    let status = d11_io::status(&socket, Duration::from_secs(1))
        .with_context(|| format!("asking {node} (is the lab up? see d11 status --name {lab})"))?;
    let mut report = status.report;
    // The ports' impairments (docs/impair.md) as one more table.
    let impaired: serde_json::Map<String, Value> = (status.ports.iter())
        .filter_map(|(p, s)| Some((p.clone(), serde_json::to_value(s.impair.as_ref()?).ok()?)))
        .collect();
    if !impaired.is_empty() {
        report["impair"] = Value::Object(impaired);
    }
    let report = &report;
    let v = match table {
        None => report.clone(),
        Some(t) => match report.get(t) {
            Some(v) => v.clone(),
            None => {
                let keys: Vec<&str> = report
                    .as_object()
                    .map(|o| o.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                bail!("{node} has no table {t:?} (tables: {})", keys.join(", "));
            }
        },
    };
    print(&v, as_json)
}

fn print(v: &Value, as_json: bool) -> Result<()> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(v)?);
    } else {
        print_value(v, "");
    }
    Ok(())
}

/// Arrays of objects as aligned tables (like `conntrack -L` or `ip neigh`),
/// objects as `key: value` lines with nested tables indented, anything
/// else as compact JSON.
fn print_value(v: &Value, indent: &str) {
    let rows = v
        .as_array()
        .filter(|a| !a.is_empty() && a.iter().all(Value::is_object));
    let Some(rows) = rows else {
        match v {
            Value::Object(o) => {
                for (k, x) in o {
                    if is_flat(x) {
                        println!("{indent}{k}: {}", flat(x));
                    } else {
                        println!("{indent}{k}:");
                        print_value(x, &format!("{indent}  "));
                    }
                }
            }
            other => println!("{indent}{}", flat(other)),
        }
        return;
    };
    let mut cols: Vec<String> = Vec::new();
    for r in rows {
        for k in r.as_object().into_iter().flat_map(|o| o.keys()) {
            if !cols.contains(k) {
                cols.push(k.clone());
            }
        }
    }
    let cell = |r: &Value, c: &str| match &r[c] {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let widths: Vec<usize> = cols
        .iter()
        .map(|c| {
            rows.iter()
                .map(|r| cell(r, c).len())
                .max()
                .unwrap_or(0)
                .max(c.len())
        })
        .collect();
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{indent}{}", parts.join("  ").trim_end());
    };
    line(cols.clone());
    for r in rows {
        line(cols.iter().map(|c| cell(r, c)).collect());
    }
}

/// True for what fits on one line: scalars, empty containers, arrays of scalars.
fn is_flat(v: &Value) -> bool {
    match v {
        Value::Object(o) => o.is_empty(),
        Value::Array(a) => a.iter().all(|x| !x.is_object() && !x.is_array()),
        _ => true,
    }
}

fn flat(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}
