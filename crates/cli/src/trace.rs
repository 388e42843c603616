//! `d11 trace`: place one order while capturing every wire, then print the
//! order's first request segment hop by hop, each row checked against the
//! topology (`d11_lab::trace`).

use crate::LabArg;
use anyhow::{bail, Context, Result};
use d11_apps::phone::OrderOutcome;
use d11_elements::router::RouterReport;
use d11_lab::trace::{self, Frame, Hop, HopRoute, Tunnel};
use d11_lab::RunDir;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::process::{Command, ExitCode};

/// Options of `d11 trace`.
#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    #[command(flatten)]
    pub lab: LabArg,
    /// Where the capture goes (default: trace.pcapng in the lab's run directory).
    #[arg(short = 'w', value_name = "FILE.pcapng")]
    pub file: Option<PathBuf>,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// What `d11 trace --json` prints (and `d11 demo` reads).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TraceJson {
    /// The traced order, as `d11 order --json` gave it.
    pub order: OrderOutcome,
    pub capture: PathBuf,
    /// The capture holds the order's TLS secrets (a Decryption Secrets Block).
    pub secrets_in_capture: bool,
    pub hops: Vec<Hop>,
    /// Every hop as the topology implies.
    pub ok: bool,
}

pub fn run(args: &TraceArgs) -> Result<ExitCode> {
    let lab = &args.lab.name;
    let dir = RunDir::new(lab);
    let file = args
        .file
        .clone()
        .unwrap_or_else(|| dir.path().join("trace.pcapng"));
    let (rec, placed) = order_while_capturing(lab, &file)?;
    let (std::net::SocketAddr::V4(local), std::net::SocketAddr::V4(remote)) =
        (placed.local, placed.remote)
    else {
        bail!("the order went over IPv6: the lab is IPv4");
    };
    let frames = read_capture(&file)?;
    let signature = trace::request_signature(&frames, local, remote)
        .context("no TLS request record from the phone in the capture")?;
    let mut hops = trace::follow(&frames, &signature);
    let topo = dir.topology().context("reading the lab's topology")?;
    let bearers = bearer_tables(&dir, &topo);
    trace::check(&topo, &bearers, &mut hops);
    add_routes(&dir, &topo, &mut hops);
    let ok = hops.iter().all(Hop::ok);
    if args.json {
        let v = TraceJson {
            order: placed,
            capture: file,
            secrets_in_capture: rec.secrets,
            hops,
            ok,
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", table(&hops));
        println!(
            "{} hops, {}; order {} {} by {}; capture with {}TLS secrets: {}",
            hops.len(),
            if ok {
                "every row as the topology implies ✓"
            } else {
                "SOME ROWS DIFFER from the topology ✗"
            },
            placed.order_id().unwrap_or("?"),
            placed.status,
            placed.served_by().unwrap_or("?"),
            if rec.secrets { "" } else { "no " },
            file.display()
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Names, for each hop a router forwarded, the route it used: its FIB's
/// match for the destination and, for BGP, the best path (asked of the
/// router's control socket after the order; a router that does not answer
/// leaves the hop without one).
/// The bearer table of each GTP-U element (enb, sgw, pgw): its control
/// socket's `table bearers`, every bearer (the report lists 256). An
/// element that does not answer has none, and its TEIDs fail the check.
fn bearer_tables(dir: &RunDir, topo: &d11_lab::Topology) -> trace::BearerTables {
    topo.nodes
        .iter()
        .filter(|n| matches!(n.role.as_deref(), Some("enb" | "sgw" | "pgw")))
        .filter_map(|n| {
            let socket = dir.socket(&n.name);
            let t = d11_io::table(&socket, "bearers", std::time::Duration::from_secs(30)).ok()?;
            Some((n.name.clone(), t))
        })
        .collect()
}

pub(crate) fn add_routes(dir: &RunDir, topo: &d11_lab::Topology, hops: &mut [Hop]) {
    let mut reports: std::collections::BTreeMap<String, Option<RouterReport>> = Default::default();
    for i in 1..hops.len() {
        let Some(router) = trace::router_between(topo, &hops[i - 1], &hops[i]) else {
            continue;
        };
        let report = reports.entry(router.clone()).or_insert_with(|| {
            let socket = dir.socket(&router);
            let mut r = d11_io::status(&socket, std::time::Duration::from_secs(1))
                .ok()
                .and_then(|s| s.report::<RouterReport>().ok())?;
            // A router whose report cut its FIB: the whole of it, and its Loc-RIB.
            if r.l3.fib_routes > r.l3.fib.len() {
                let full = std::time::Duration::from_secs(30);
                r.l3.fib = d11_io::table(&socket, "fib", full).ok()?;
                r.rib = d11_io::table(&socket, "rib", full).ok();
            }
            Some(r)
        });
        if let Some(r) = report {
            hops[i].route = HopRoute::lookup(&router, r, hops[i].stack.ip.dst);
        }
    }
}

/// Places one order (`d11 order --json`) while capturing every wire of
/// `lab` into `file`; the recording and the order's reply. Fails when the
/// order does.
pub(crate) fn order_while_capturing(
    lab: &str,
    file: &std::path::Path,
) -> Result<(crate::capture::Recording, OrderOutcome)> {
    let dir = RunDir::new(lab);
    let out_path = dir.path().join("trace-order.json");
    let mut order = Command::new(std::env::current_exe().context("finding the d11 binary")?);
    order.args(["order", "--name", lab, "--json"]).stdout(
        std::fs::File::create(&out_path)
            .with_context(|| format!("creating {}", out_path.display()))?,
    );
    let rec = crate::capture::record(lab, file, None, Some(order))?;
    let written = std::fs::read(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    if !rec.status.is_some_and(|s| s.success()) {
        bail!(
            "the order failed ({}); nothing to trace",
            String::from_utf8_lossy(&written).trim()
        );
    }
    let placed = serde_json::from_slice(&written).context("reading d11 order's --json")?;
    Ok((rec, placed))
}

/// Every frame of a pcapng file, named by its wire, in time order (`d11
/// capture` writes a packet's copies together: see `d11_io::capture`).
pub(crate) fn read_capture(file: &std::path::Path) -> Result<Vec<Frame>> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let mut frames: Vec<Frame> = d11_core::pcapng::read_frames(&bytes)
        .with_context(|| format!("reading {}", file.display()))?
        .into_iter()
        .map(|(wire, ts, data)| Frame {
            wire,
            ts_ns: ts.as_nanos() as u64,
            data,
        })
        .collect();
    frames.sort_by_key(|f| f.ts_ns);
    Ok(frames)
}

/// The per-hop table: one row per hop, a line under it per failed check.
pub(crate) fn table(hops: &[Hop]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>2} {:<14} {:<35} {:<24} {:<10} {:<35} {:<40} {:>3}",
        "#",
        "wire",
        "MAC src → dst",
        "outer IP src → dst",
        "tunnel",
        "inner MAC src → dst",
        "IP:port src → dst",
        "ttl"
    );
    for (i, h) in hops.iter().enumerate() {
        let st = &h.stack;
        let outer = st
            .outer_ip
            .map(|o| format!("{} → {}", o.src, o.dst))
            .unwrap_or_else(|| "-".into());
        let tunnel = match st.tunnel {
            Some(Tunnel::Gtpu { teid }) => format!("TEID {teid:#x}"),
            Some(Tunnel::Vxlan { vni }) => format!("VNI {vni}"),
            None => "-".into(),
        };
        let inner_eth = st
            .inner_eth
            .map(|e| format!("{} → {}", e.src, e.dst))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            s,
            "{:>2} {:<14} {:<35} {:<24} {:<10} {:<35} {:<40} {:>3} {}",
            i + 1,
            h.wire,
            format!("{} → {}", st.eth.src, st.eth.dst),
            outer,
            tunnel,
            inner_eth,
            format!(
                "{}:{} → {}:{}",
                st.ip.src, st.ports.src, st.ip.dst, st.ports.dst
            ),
            st.ttl,
            if h.ok() { "✓" } else { "✗" }
        );
        if let Some(r) = &h.route {
            let _ = writeln!(s, "   ↳ {r}");
        }
        for c in h.checks.iter().filter(|c| !c.ok) {
            let _ = writeln!(s, "   ✗ {}", c.what);
        }
    }
    s
}
