//! `d11 up`, `d11 down`, `d11 exec` and the supervisor process they share.

use crate::need_root;
use anyhow::{bail, Context, Result};
use d11_lab::{
    netns_name, ChildSpec, Owner, RunDir, Stopped, Supervisor, SupervisorState, Topology,
};
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// How long `d11 up` waits for every element and app to answer on its
/// control socket.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `d11 up` then waits for the phones to attach (the mme reaches
/// the hss within Tc = 5 s of both running; the phone tries every 3 s).
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `d11 up` then waits for the routers' BGP to converge.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Checks every element's and app's settings before anything is built; the
/// error names the file, line and key.
pub fn check(topo: &Topology) -> Result<(), d11_lab::TopologyError> {
    topo.check_elements()?;
    for (i, n) in topo.nodes.iter().enumerate() {
        if let Some(spec) = topo.app(&n.name) {
            crate::apps::check(topo, &spec)
                .map_err(|e| topo.error_at(&format!("nodes[{i}].{}", e.key), e.message))?;
        }
    }
    Ok(())
}

/// `d11 up`. `owner`: the pid of a process whose exit takes the lab down
/// (the supervisor watches it; see `d11_lab::Owner`). With `capture`, every
/// wire is recorded into that file from before the elements start until
/// the routes have converged.
pub fn up(topology: &Path, lab: &str, owner: Option<u32>, capture: Option<&Path>) -> Result<()> {
    d11_lab::check_lab_name(lab)?;
    let mut topo = Topology::load(topology)?;
    check(&topo)?;
    need_root("d11 up")?;
    if !topo.elements().is_empty() {
        d11_cli::element::program()?;
    }
    let sas = crate::vpn_keys::make_keys(&mut topo)?;
    // Named by pid and start time now, while it surely runs (it is usually
    // our parent), so a pid reused later is never mistaken for it.
    let owner = owner
        .map(|pid| Owner::of(pid).with_context(|| format!("--owner {pid}: no such process")))
        .transpose()?;
    let t0 = Instant::now();
    d11_lab::build(lab, &topo)?;
    // The namespaces and wires exist: from here on a failure takes them down again.
    let recording = match capture
        .map(|f| crate::capture::Background::start(lab, f))
        .transpose()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = d11_lab::teardown(lab);
            return Err(e);
        }
    };
    let converged = make_pki(lab, &topo)
        .and_then(|()| crate::vpn_keys::write(lab, &sas))
        .and_then(|()| start(lab, &topo, owner))
        .and_then(|()| attached(lab, &topo))
        .and_then(|()| crate::converge::wait(lab, &topo, CONVERGE_TIMEOUT));
    let captured = recording.map(|r| r.stop()).transpose();
    let (converged, captured) = match (converged, captured) {
        (Ok(c), Ok(s)) => (c, s),
        (Err(e), _) | (_, Err(e)) => {
            let _ = d11_lab::teardown(lab);
            return Err(e);
        }
    };
    let took = t0.elapsed();
    let elements = topo.elements().len();
    println!(
        "lab {lab} is up in {:.2} s: {} nodes ({} elements), {} wires, from {}",
        took.as_secs_f64(),
        topo.nodes.len(),
        elements,
        topo.wires.len(),
        topology.display()
    );
    if let Some(c) = converged {
        println!(
            "  BGP: {} sessions Established between the lab's routers, routes converged {:.2} s after the last element answered",
            c.sessions / 2,
            c.took.as_secs_f64()
        );
    }
    if let (Some(stats), Some(file)) = (captured, capture) {
        println!(
            "  captured {} frames of the lab's start into {}",
            stats.frames,
            file.display()
        );
    }
    println!(
        "  d11 status --name {lab}    d11 exec --name {lab} NODE -- CMD    d11 down --name {lab}"
    );
    Ok(())
}

/// The lab PKI (`pki/` in the run directory), if the topology asks for one.
fn make_pki(lab: &str, topo: &Topology) -> Result<()> {
    let Some(pki) = &topo.pki else { return Ok(()) };
    let paths = d11_apps::pki::PkiPaths::new(RunDir::new(lab).pki_dir());
    let names: Vec<&str> = pki.names.iter().map(String::as_str).collect();
    d11_apps::pki::make(&paths, lab, &names).context("making the lab PKI")
}

/// Starts the supervisor, detached in its own process group, and waits until
/// every element answers.
fn start(lab: &str, topo: &Topology, owner: Option<Owner>) -> Result<()> {
    let dir = RunDir::new(lab);
    std::fs::create_dir_all(dir.logs_dir()).context("creating the logs directory")?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.log_file("supervisor"))
        .context("opening the supervisor's log")?;
    let exe = std::env::current_exe().context("finding the d11 binary")?;
    let mut sup = Command::new(exe);
    sup.args(["supervise", "--name", lab]);
    if let Some(o) = owner {
        sup.args(["--owner", &o.to_string()]);
    }
    sup.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting the supervisor")?;
    let deadline = Instant::now() + READY_TIMEOUT;
    for node in supervised(topo) {
        let sock = dir.socket(&node);
        loop {
            if d11_io::query(&sock, "ping", Duration::from_millis(300)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let tail = last_line(&dir.log_file(&node));
                bail!(
                    "{node} did not become ready within {}s (last log line: {tail})",
                    READY_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// Waits until every phone's baseband (`app = "baseband"`) reports it
/// attached: the network gave it its address (chapter 3).
fn attached(lab: &str, topo: &Topology) -> Result<()> {
    let dir = RunDir::new(lab);
    let deadline = Instant::now() + ATTACH_TIMEOUT;
    for spec in topo.apps().into_iter().filter(|a| a.app == "baseband") {
        let sock = dir.socket(&spec.name);
        loop {
            let state = d11_io::query(&sock, "status", Duration::from_millis(300))
                .ok()
                .and_then(|v| v["report"]["state"].as_str().map(str::to_string));
            if state.as_deref() == Some("attached") {
                break;
            }
            if Instant::now() > deadline {
                let tail = last_line(&dir.log_file(&spec.name));
                bail!(
                    "{} did not attach within {}s (its state: {}; last log line: {tail})",
                    spec.name,
                    ATTACH_TIMEOUT.as_secs(),
                    state.as_deref().unwrap_or("unknown")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

/// `d11 attach` / `d11 detach`: tells the phone's baseband, then waits
/// until it reports `attached` (with its address) or `deregistered`.
pub fn phone(lab: &str, node: &str, attach: bool) -> Result<()> {
    let sock = RunDir::new(lab).socket(node);
    let (cmd, want) = if attach {
        ("attach", "attached")
    } else {
        ("detach", "deregistered")
    };
    let v = d11_io::query(&sock, cmd, Duration::from_secs(1))
        .with_context(|| format!("{node}: no baseband answering on {}", sock.display()))?;
    if let Some(e) = v.get("error") {
        bail!("{node}: {e} (is it a phone, app \"baseband\"?)");
    }
    let deadline = Instant::now() + ATTACH_TIMEOUT;
    loop {
        let r = d11_io::query(&sock, "status", Duration::from_millis(300))
            .ok()
            .map(|v| v["report"].clone())
            .unwrap_or_default();
        if r["state"] == want {
            match r["address"].as_str() {
                Some(a) => println!("{node}: {want}, address {a}"),
                None => println!("{node}: {want}"),
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{node} is not {want} after {}s: {r}",
                ATTACH_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn last_line(p: &Path) -> String {
    std::fs::read_to_string(p)
        .ok()
        .and_then(|s| {
            s.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "none".into())
}

pub fn down(lab: &str, all: bool) -> Result<()> {
    need_root("d11 down")?;
    let reports = if all {
        d11_lab::teardown_all().context("taking every lab down")?
    } else {
        d11_lab::check_lab_name(lab)?;
        vec![d11_lab::teardown(lab).with_context(|| format!("taking lab {lab} down"))?]
    };
    for r in reports {
        println!("lab {} is down ({r})", r.lab);
    }
    Ok(())
}

/// Replaces this process with `ip netns exec LAB-NODE CMD…`, which also
/// applies `/etc/netns/LAB-NODE/` (hosts, resolv.conf) as users expect.
pub fn exec(lab: &str, node: &str, cmd: &[String]) -> Result<ExitCode> {
    d11_lab::check_lab_name(lab)?;
    let dir = RunDir::new(lab);
    if !dir.exists() {
        bail!("there is no lab named {lab} (start it with: d11 up --name {lab})");
    }
    let topo = dir.topology().context("reading the lab's topology")?;
    if topo.node(node).is_none() {
        let names: Vec<&str> = topo.nodes.iter().map(|n| n.name.as_str()).collect();
        bail!(
            "lab {lab} has no node {node:?} (nodes: {})",
            names.join(", ")
        );
    }
    let err = Command::new("ip")
        .args(["netns", "exec", &netns_name(lab, node)])
        .args(cmd)
        .exec();
    Err(err).context("running ip netns exec (is iproute2 installed?)")
}

/// The nodes with a process of their own: every element, then every host
/// that runs an app.
fn supervised(topo: &Topology) -> Vec<String> {
    let elements = topo.elements().into_iter().map(|e| e.name);
    elements
        .chain(topo.apps().into_iter().map(|a| a.name))
        .collect()
}

/// The supervisor process: one `d11-element` per element and one `d11 run`
/// per app, restarted when it dies. If the lab's owner dies, it takes the
/// whole lab down.
pub fn supervise(lab: &str, owner: Option<Owner>) -> Result<()> {
    d11_cli::init_tracing();
    let dir = RunDir::new(lab);
    let topo = dir.topology().context("reading the lab's topology")?;
    let d11: OsString = std::env::current_exe()
        .context("finding the d11 binary")?
        .into();
    let child = |node: String, program: &[&OsString]| ChildSpec {
        log: dir.log_file(&node),
        argv: program
            .iter()
            .map(|&a| a.clone())
            .chain([
                "--name".into(),
                lab.into(),
                "--node".into(),
                node.clone().into(),
            ])
            .collect(),
        node,
    };
    let mut children = Vec::new();
    let elements = topo.elements();
    if !elements.is_empty() {
        let program: OsString = d11_cli::element::program()?.into();
        children.extend(elements.into_iter().map(|e| child(e.name, &[&program])));
    }
    let run = OsString::from("run");
    children.extend(
        topo.apps()
            .into_iter()
            .map(|a| child(a.name, &[&d11, &run])),
    );
    match Supervisor::new(dir, children).owned_by(owner).run()? {
        Stopped::Signal => {}
        Stopped::OwnerGone => {
            let report = d11_lab::teardown(lab)
                .with_context(|| format!("taking lab {lab} down after its owner died"))?;
            tracing::info!(lab, %report, "lab down: its owner died");
        }
    }
    Ok(())
}

/// The supervisor's view of one node, if it has one.
pub fn supervisor_state(lab: &str) -> Option<SupervisorState> {
    SupervisorState::load(&RunDir::new(lab)).ok()
}
