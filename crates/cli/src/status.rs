//! `d11 status [--json]`: every node with its role, process, restarts and,
//! for elements, per-port counters and drops by reason from the element's
//! own control socket; a host's app (l4lb, controller) shows as its role.

use anyhow::{bail, Context, Result};
use d11_lab::{netns_name, NodeKind, RunDir};
use serde_json::{json, Value};
use std::time::Duration;

pub fn status(lab: &str, as_json: bool) -> Result<()> {
    d11_lab::check_lab_name(lab)?;
    let v = collect(lab)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_table(&v);
    }
    Ok(())
}

fn collect(lab: &str) -> Result<Value> {
    let dir = RunDir::new(lab);
    if !dir.exists() {
        bail!(
            "there is no lab named {lab} (labs: {})",
            d11_lab::list_labs().unwrap_or_default().join(", ")
        );
    }
    let topo = dir.topology().context("reading the lab's topology")?;
    let sup = crate::lifecycle::supervisor_state(lab);
    let mut nodes = Vec::new();
    for n in &topo.nodes {
        let element = n.kind == NodeKind::Element;
        let supervised = element || n.app.is_some();
        let ctl = if supervised {
            d11_io::query(&dir.socket(&n.name), "status", Duration::from_millis(500)).ok()
        } else {
            None
        };
        let proc_ = sup.as_ref().and_then(|s| s.nodes.get(&n.name));
        let ports: Vec<Value> = n
            .ports
            .iter()
            .map(|p| {
                let end = d11_lab::WireEnd {
                    node: n.name.clone(),
                    port: p.name.clone(),
                };
                json!({
                    "name": p.name,
                    "mac": p.mac(&n.name).to_string(),
                    "address": p.address.map(|a| a.to_string()),
                    "mtu": p.mtu,
                    "peer": topo.peer(&end).map(|e| e.to_string()),
                    "counters": ctl.as_ref().map(|c| c["ports"][&p.name].clone()),
                })
            })
            .collect();
        nodes.push(json!({
            "name": n.name,
            "kind": if element { "element" } else { "host" },
            "role": n.role.as_deref().or(n.app.as_deref()),
            "netns": netns_name(lab, &n.name),
            "pid": proc_.and_then(|p| p.pid),
            "state": if supervised { proc_.map(|p| p.state.to_string()).unwrap_or_else(|| "unknown".into()) } else { "host".into() },
            "restarts": proc_.map(|p| p.restarts).unwrap_or(0),
            "last_exit": proc_.and_then(|p| p.last_exit.clone()),
            "answering": ctl.is_some(),
            "ports": ports,
            "report": ctl.as_ref().map(|c| c["report"].clone()),
        }));
    }
    let wires: Vec<Value> = topo
        .wires
        .iter()
        .map(|w| json!({"a": w.a.to_string(), "b": w.b.to_string(), "kind": format!("{:?}", topo.wire_kind(w)).to_lowercase()}))
        .collect();
    Ok(json!({
        "lab": lab,
        "description": topo.description,
        "supervisor_pid": sup.as_ref().map(|s| s.pid),
        "nodes": nodes,
        "wires": wires,
    }))
}

fn print_table(v: &Value) {
    println!(
        "lab {}: {}",
        v["lab"].as_str().unwrap_or(""),
        v["description"].as_str().unwrap_or("")
    );
    println!(
        "{:<10} {:<8} {:<8} {:>8} {:<9} {:>8}  ports (rx/tx frames, drops)",
        "node", "kind", "role", "pid", "state", "restarts"
    );
    for n in v["nodes"].as_array().into_iter().flatten() {
        let ports: Vec<String> = n["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let c = &p["counters"];
                if c.is_object() {
                    let drops = c["drops"].as_object().map(|d| {
                        d.iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(",")
                    });
                    format!(
                        "{} {}/{}{}{}",
                        p["name"].as_str().unwrap_or(""),
                        c["rx_frames"],
                        c["tx_frames"],
                        drops
                            .filter(|d| !d.is_empty())
                            .map(|d| format!(" [{d}]"))
                            .unwrap_or_default(),
                        impaired(&c["impair"])
                    )
                } else {
                    format!(
                        "{} {}",
                        p["name"].as_str().unwrap_or(""),
                        p["address"].as_str().unwrap_or("")
                    )
                }
            })
            .collect();
        println!(
            "{:<10} {:<8} {:<8} {:>8} {:<9} {:>8}  {}",
            n["name"].as_str().unwrap_or(""),
            n["kind"].as_str().unwrap_or(""),
            n["role"].as_str().unwrap_or("-"),
            n["pid"]
                .as_u64()
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
            n["state"].as_str().unwrap_or(""),
            n["restarts"],
            ports.join("  ")
        );
    }
}

/// ` {tx: loss=5%; rx: delay=20ms}` for a port with an impairment (the
/// seeds left out: `d11 impair` shows them), else nothing.
fn impaired(v: &Value) -> String {
    let sides: Vec<String> = ["tx", "rx"]
        .iter()
        .filter_map(|s| {
            let spec = v[*s]["spec"].as_str()?;
            let spec = spec.split(" seed=").next().unwrap_or(spec);
            Some(format!("{s}: {spec}"))
        })
        .collect();
    if sides.is_empty() {
        String::new()
    } else {
        format!(" {{{}}}", sides.join("; "))
    }
}
