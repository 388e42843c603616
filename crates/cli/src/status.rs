//! `d11 status [--json]`: every node with its role, process, restarts and,
//! for elements, per-port counters and drops by reason from the element's
//! own control socket; a host's app (l4lb, controller) shows as its role.

use anyhow::{bail, Context, Result};
use d11_core::status::{ImpairStatus, PortStatus, Status};
use d11_lab::{netns_name, NodeKind, RunDir};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What `d11 status --json` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabStatus {
    pub lab: String,
    pub description: String,
    pub supervisor_pid: Option<u32>,
    /// The process whose exit takes the lab down (`d11 up --owner`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_pid: Option<u32>,
    pub nodes: Vec<NodeStatus>,
    pub wires: Vec<WireRow>,
}

/// One node: its process as the supervisor sees it, and what its control
/// socket answered (elements and apps).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    /// `element` or `host`.
    pub kind: String,
    /// The element's role or the host's app.
    pub role: Option<String>,
    pub netns: String,
    pub pid: Option<u32>,
    /// `running`, `restarting`, … as the supervisor says; `host` for a host
    /// without an app.
    pub state: String,
    pub restarts: u32,
    pub last_exit: Option<String>,
    /// Its control socket answered.
    pub answering: bool,
    pub ports: Vec<PortRow>,
    /// The element's or app's own report (its role's report type).
    pub report: Option<serde_json::Value>,
}

/// One port of a node, with its element's counters when there are any.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PortRow {
    pub name: String,
    pub mac: String,
    pub address: Option<String>,
    pub mtu: u16,
    pub peer: Option<String>,
    pub counters: Option<PortStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireRow {
    pub a: String,
    pub b: String,
    pub kind: String,
}

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

pub fn collect(lab: &str) -> Result<LabStatus> {
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
        let ctl: Option<Status> = supervised
            .then(|| d11_io::status(&dir.socket(&n.name), Duration::from_millis(500)).ok())
            .flatten();
        let proc_ = sup.as_ref().and_then(|s| s.nodes.get(&n.name));
        let ports = n
            .ports
            .iter()
            .map(|p| {
                let end = d11_lab::WireEnd {
                    node: n.name.clone(),
                    port: p.name.clone(),
                };
                PortRow {
                    name: p.name.clone(),
                    mac: p.mac(&n.name).to_string(),
                    address: p.address.map(|a| a.to_string()),
                    mtu: p.mtu,
                    peer: topo.peer(&end).map(|e| e.to_string()),
                    counters: ctl.as_ref().and_then(|c| c.port(&p.name)).cloned(),
                }
            })
            .collect();
        let state = match (supervised, proc_) {
            (false, _) => "host".into(),
            (true, Some(p)) => p.state.to_string(),
            (true, None) => "unknown".into(),
        };
        nodes.push(NodeStatus {
            name: n.name.clone(),
            kind: if element { "element" } else { "host" }.into(),
            role: n.role.clone().or(n.app.clone()),
            netns: netns_name(lab, &n.name),
            pid: proc_.and_then(|p| p.pid),
            state,
            restarts: proc_.map_or(0, |p| p.restarts),
            last_exit: proc_.and_then(|p| p.last_exit.clone()),
            answering: ctl.is_some(),
            ports,
            report: ctl.map(|c| c.report),
        });
    }
    let wires = topo
        .wires
        .iter()
        .map(|w| WireRow {
            a: w.a.to_string(),
            b: w.b.to_string(),
            kind: format!("{:?}", topo.wire_kind(w)).to_lowercase(),
        })
        .collect();
    Ok(LabStatus {
        lab: lab.to_string(),
        description: topo.description.clone(),
        supervisor_pid: sup.as_ref().map(|s| s.pid),
        owner_pid: sup.as_ref().and_then(|s| s.owner),
        nodes,
        wires,
    })
}

fn print_table(v: &LabStatus) {
    println!("lab {}: {}", v.lab, v.description);
    if let Some(owner) = v.owner_pid {
        println!("owned by pid {owner}: the lab goes down when it exits");
    }
    println!(
        "{:<10} {:<8} {:<8} {:>8} {:<9} {:>8}  ports (rx/tx frames, drops)",
        "node", "kind", "role", "pid", "state", "restarts"
    );
    for n in &v.nodes {
        let ports: Vec<String> = n
            .ports
            .iter()
            .map(|p| match &p.counters {
                Some(c) => {
                    let drops: Vec<String> = (c.counters.drops_by_name().into_iter())
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    format!(
                        "{} {}/{}{}{}",
                        p.name,
                        c.counters.rx_frames,
                        c.counters.tx_frames,
                        if drops.is_empty() {
                            String::new()
                        } else {
                            format!(" [{}]", drops.join(","))
                        },
                        c.impair.as_ref().map(impaired).unwrap_or_default()
                    )
                }
                None => format!("{} {}", p.name, p.address.as_deref().unwrap_or("")),
            })
            .collect();
        println!(
            "{:<10} {:<8} {:<8} {:>8} {:<9} {:>8}  {}",
            n.name,
            n.kind,
            n.role.as_deref().unwrap_or("-"),
            n.pid.map_or_else(|| "-".into(), |p| p.to_string()),
            n.state,
            n.restarts,
            ports.join("  ")
        );
    }
}

/// ` {tx: loss=5%; rx: delay=20ms}` for a port with an impairment (the
/// seeds left out: `d11 impair` shows them).
fn impaired(v: &ImpairStatus) -> String {
    let sides: Vec<String> = [("tx", &v.tx), ("rx", &v.rx)]
        .into_iter()
        .filter_map(|(s, side)| {
            let spec = &side.as_ref()?.spec;
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
