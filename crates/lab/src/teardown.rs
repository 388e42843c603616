//! Removing a lab (`d11 down`): idempotent, and thorough even after a crash.
//!
//! A lab's namespaces are found three ways, so none is missed: the run
//! directory's `namespaces` list (written before each was created), the
//! nodes of the saved topology, and — when the run directory is gone — every
//! namespace `LAB-…` whose `lo` carries the lab's marker alias. Then: stop the
//! supervisor, stop every process left in those namespaces (SIGTERM, a short
//! wait, SIGKILL), delete the namespaces (their veth and TAP devices go with
//! them), remove the run directory.

use crate::cmd::{self, IpBatch, StepFailed};
use crate::names::{
    check_lab_name, etc_marker, existing_namespaces, marker_lab, netns_marker, netns_name,
    run_root, LabNameError, RunDir, ETC_NETNS_DIR, NETNS_DIR,
};
use crate::procfs;
use crate::supervisor::{stop_supervisor, SupervisorError};
use crate::sys;
use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// How long the supervisor gets to stop its children (it gives them 2 s).
const SUPERVISOR_STOP: Duration = Duration::from_secs(4);

/// How long processes left in the namespaces get after SIGTERM, then SIGKILL.
const PROCESS_STOP: Duration = Duration::from_secs(1);

/// Why a lab could not be removed completely.
#[derive(Debug, thiserror::Error)]
pub enum TeardownError {
    #[error(transparent)]
    LabName(#[from] LabNameError),
    /// The supervisor would not stop.
    #[error("stopping the supervisor of lab {lab:?}: {source}")]
    Supervisor {
        lab: String,
        #[source]
        source: SupervisorError,
    },
    /// A file or directory could not be read or removed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Processes in the lab's namespaces survived SIGKILL.
    #[error("lab {lab:?}: processes {pids:?} survived SIGKILL")]
    Survivors { lab: String, pids: Vec<i32> },
    /// `ip netns del` failed.
    #[error("taking lab {lab:?} down: {step}: {detail}")]
    Step {
        lab: String,
        step: String,
        detail: String,
    },
}

/// What [`teardown`] found and removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TeardownReport {
    pub lab: String,
    /// A supervisor was running and stopped.
    pub supervisor_stopped: bool,
    /// Processes in the namespaces that exited on SIGTERM.
    pub processes_terminated: usize,
    /// Processes that needed SIGKILL.
    pub processes_killed: usize,
    pub namespaces_removed: Vec<String>,
    pub run_dir_removed: bool,
}

impl TeardownReport {
    /// True if there was nothing of the lab left to remove.
    pub fn was_absent(&self) -> bool {
        !self.supervisor_stopped
            && self.processes_terminated == 0
            && self.processes_killed == 0
            && self.namespaces_removed.is_empty()
            && !self.run_dir_removed
    }
}

impl fmt::Display for TeardownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.was_absent() {
            return f.write_str("nothing to remove");
        }
        let mut parts = Vec::new();
        if self.supervisor_stopped {
            parts.push("supervisor stopped".to_string());
        }
        let procs = self.processes_terminated + self.processes_killed;
        if procs > 0 {
            parts.push(format!(
                "{procs} processes stopped ({} killed)",
                self.processes_killed
            ));
        }
        parts.push(format!(
            "{} namespaces removed",
            self.namespaces_removed.len()
        ));
        if self.run_dir_removed {
            parts.push("run directory removed".to_string());
        }
        f.write_str(&parts.join(", "))
    }
}

/// The `lo` alias of namespace `ns`, if it has one.
fn lo_alias(ns: &str) -> Option<String> {
    let out = cmd::run(
        "ip",
        &["-n", ns, "-j", "link", "show", "dev", "lo"],
        None,
        "reading lo",
    )
    .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v.get(0)?.get("ifalias")?.as_str().map(String::from)
}

/// The namespaces of `lab` that exist now.
fn lab_namespaces(lab: &str, rd: &RunDir) -> Result<BTreeSet<String>, TeardownError> {
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| TeardownError::Io { what, path, source }
    };
    let present = existing_namespaces().map_err(io("listing", Path::new(NETNS_DIR)))?;
    let mut ours: BTreeSet<String> = rd
        .namespaces()
        .map_err(io("reading", &rd.namespaces_file()))?
        .into_iter()
        .collect();
    if let Ok(topo) = rd.topology() {
        ours.extend(topo.nodes.iter().map(|n| netns_name(lab, &n.name)));
    }
    ours.retain(|ns| present.contains(ns));
    // Left after a crash without a run directory: proven ours by the marker.
    let prefix = format!("{lab}-");
    let marker = netns_marker(lab);
    let marked: Vec<String> = present
        .iter()
        .filter(|ns| ns.starts_with(&prefix) && !ours.contains(*ns))
        .filter(|ns| lo_alias(ns).as_deref() == Some(marker.as_str()))
        .cloned()
        .collect();
    ours.extend(marked);
    Ok(ours)
}

/// Stops every process in `namespaces`: (terminated, killed).
fn stop_processes(
    lab: &str,
    namespaces: &BTreeSet<String>,
) -> Result<(usize, usize), TeardownError> {
    let inodes: HashSet<u64> = namespaces
        .iter()
        .filter_map(|ns| procfs::netns_inode(&Path::new(NETNS_DIR).join(ns)))
        .collect();
    if inodes.is_empty() {
        return Ok((0, 0));
    }
    let pids = procfs::pids_in_netns(&inodes);
    if pids.is_empty() {
        return Ok((0, 0));
    }
    for &p in &pids {
        // Errors other than "already gone" (which kill ignores) are only
        // permission errors: SIGKILL below and the survivor check report them.
        let _ = sys::kill(p, libc::SIGTERM);
    }
    let stubborn = procfs::wait_gone(&pids, PROCESS_STOP);
    for &p in &stubborn {
        let _ = sys::kill(p, libc::SIGKILL);
    }
    let survivors = procfs::wait_gone(&stubborn, PROCESS_STOP);
    if !survivors.is_empty() {
        return Err(TeardownError::Survivors {
            lab: lab.to_string(),
            pids: survivors,
        });
    }
    tracing::info!(
        lab,
        terminated = pids.len() - stubborn.len(),
        killed = stubborn.len(),
        "processes stopped"
    );
    Ok((pids.len() - stubborn.len(), stubborn.len()))
}

/// Removes lab `lab`: its supervisor and element processes, every process
/// users started in its namespaces, the namespaces with their wires, and the
/// run directory. Safe to repeat; works on a half-built lab and on
/// namespaces whose run directory is gone.
pub fn teardown(lab: &str) -> Result<TeardownReport, TeardownError> {
    check_lab_name(lab)?;
    let rd = RunDir::new(lab);
    let mut report = TeardownReport {
        lab: lab.to_string(),
        ..TeardownReport::default()
    };
    report.supervisor_stopped =
        stop_supervisor(&rd, SUPERVISOR_STOP).map_err(|source| TeardownError::Supervisor {
            lab: lab.to_string(),
            source,
        })?;
    let namespaces = lab_namespaces(lab, &rd)?;
    (report.processes_terminated, report.processes_killed) = stop_processes(lab, &namespaces)?;
    let mut del = IpBatch::default();
    for ns in &namespaces {
        del.push(lab, format!("netns del {ns}"));
    }
    del.run(&[]).map_err(|f: StepFailed| TeardownError::Step {
        lab: lab.to_string(),
        step: f.step,
        detail: f.detail,
    })?;
    report.namespaces_removed = namespaces.into_iter().collect();
    remove_etc_files(lab);
    match std::fs::remove_dir_all(rd.path()) {
        Ok(()) => report.run_dir_removed = true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(TeardownError::Io {
                what: "removing",
                path: rd.path().to_path_buf(),
                source,
            })
        }
    }
    tracing::info!(lab, %report, "lab down");
    Ok(report)
}

/// Removes the `/etc/netns/LAB-*/hosts` and `resolv.conf` files `d11 up` wrote (known by
/// their first line) and their directories once empty. Best effort: what
/// it cannot remove it logs.
fn remove_etc_files(lab: &str) {
    let Ok(dir) = std::fs::read_dir(ETC_NETNS_DIR) else {
        return;
    };
    let prefix = format!("{lab}-");
    let marker = etc_marker(lab);
    for entry in dir.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        let mut ours = false;
        for file in ["hosts", "resolv.conf"] {
            let path = entry.path().join(file);
            let mine = std::fs::read_to_string(&path)
                .is_ok_and(|t| t.lines().next() == Some(marker.as_str()));
            if mine {
                ours = true;
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), "cannot remove: {e}");
                }
            }
        }
        if ours {
            // Left in place if someone else put files there.
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// The labs with a run directory (`/run/d11/*`), sorted.
pub fn list_labs() -> Result<Vec<String>, TeardownError> {
    let root = run_root();
    let root = root.as_path();
    let dir = match std::fs::read_dir(root) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(TeardownError::Io {
                what: "listing",
                path: root.to_path_buf(),
                source,
            })
        }
    };
    let mut labs: Vec<String> = dir
        .filter_map(|e| {
            let e = e.ok()?;
            e.file_type().ok()?.is_dir().then_some(())?;
            let name = e.file_name().to_str()?.to_string();
            check_lab_name(&name).is_ok().then_some(name)
        })
        .collect();
    labs.sort();
    Ok(labs)
}

/// Removes every lab: those with a run directory and those whose marked
/// namespaces outlived it.
pub fn teardown_all() -> Result<Vec<TeardownReport>, TeardownError> {
    let mut labs: BTreeSet<String> = list_labs()?.into_iter().collect();
    let mut listed: HashSet<String> = HashSet::new();
    for lab in &labs {
        listed.extend(RunDir::new(lab).namespaces().unwrap_or_default());
    }
    let present = existing_namespaces().map_err(|source| TeardownError::Io {
        what: "listing",
        path: NETNS_DIR.into(),
        source,
    })?;
    for ns in present.iter().filter(|ns| !listed.contains(*ns)) {
        if let Some(lab) = lo_alias(ns).and_then(|a| marker_lab(&a).map(String::from)) {
            if check_lab_name(&lab).is_ok() {
                labs.insert(lab);
            }
        }
    }
    labs.iter().map(|lab| teardown(lab)).collect()
}
