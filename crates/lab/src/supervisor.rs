//! The supervisor: one process per lab (`d11 supervise --name LAB`) keeping
//! one child per element alive.
//!
//! Each child gets its stdout and stderr appended to its log file, its own
//! process group, and SIGKILL when the supervisor dies (`PR_SET_PDEATHSIG`),
//! so no element outlives its lab. A child that exits is started again after
//! a backoff: 100 ms, doubling to 5 s, back to 100 ms once a child has run
//! 10 s. SIGTERM or SIGINT stops the lab's children (SIGTERM, 2 s, SIGKILL).
//!
//! The loop is one `poll` on a signalfd (SIGCHLD, SIGTERM, SIGINT, SIGHUP)
//! with the next restart as its timeout: no busy loop, no signal handlers.
//! Every change is written to `supervisor.json` (temporary file + rename), so
//! `d11 status` never reads half a state.

use crate::names::RunDir;
use crate::procfs;
use crate::sys::{self, SignalFd};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// First restart delay; it doubles on every quick exit.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest restart delay.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A child that ran this long was healthy: its next restart is quick again.
const HEALTHY: Duration = Duration::from_secs(10);
/// How long children get between SIGTERM and SIGKILL when the lab stops.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Why the supervisor, its state or stopping it failed.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// Blocked signals are per thread: another thread would take SIGTERM.
    #[error("the supervisor needs a single-threaded process (this one has {0} threads)")]
    Threads(usize),
    /// A file of the run directory could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// `supervisor.json` is not a supervisor state.
    #[error("{}: not a supervisor state: {detail}", path.display())]
    BadState { path: PathBuf, detail: String },
    /// The supervisor did not exit even on SIGKILL.
    #[error("supervisor pid {0} survived SIGKILL")]
    Stuck(i32),
}

/// One child to keep running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSpec {
    /// The element node it runs (the key in [`SupervisorState::nodes`]).
    pub node: String,
    /// Program and arguments; `argv[0]` is the program.
    pub argv: Vec<OsString>,
    /// Where its stdout and stderr are appended.
    pub log: PathBuf,
}

/// Where a child stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChildStatus {
    Running,
    /// Exited; waiting for its restart.
    Backoff,
    /// Stopped with the lab.
    Stopped,
}

impl fmt::Display for ChildStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChildStatus::Running => "running",
            ChildStatus::Backoff => "backoff",
            ChildStatus::Stopped => "stopped",
        })
    }
}

/// One child as `supervisor.json` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildState {
    /// While it runs.
    pub pid: Option<u32>,
    /// Times it was started again after exiting.
    pub restarts: u32,
    pub state: ChildStatus,
    /// How it last ended: `exit 3`, `signal 9`, `could not start: …`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
}

/// `supervisor.json`: the supervisor's pid and each child's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorState {
    pub pid: u32,
    pub nodes: BTreeMap<String, ChildState>,
}

impl SupervisorState {
    /// Reads the lab's `supervisor.json`.
    pub fn load(run_dir: &RunDir) -> Result<SupervisorState, SupervisorError> {
        let path = run_dir.supervisor_state_file();
        let text = std::fs::read_to_string(&path).map_err(|source| SupervisorError::Io {
            what: "reading",
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| SupervisorError::BadState {
            path,
            detail: e.to_string(),
        })
    }
}

/// Writes `text` to `path` through a temporary file and a rename, so readers
/// see the old or the new content, never a mix.
fn write_atomically(path: &Path, text: &str) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// The pid of the lab's supervisor if it is running. The pid file holds
/// `PID STARTTIME`, so a pid reused by another process is not mistaken for it.
pub fn supervisor_pid(run_dir: &RunDir) -> Option<u32> {
    let text = std::fs::read_to_string(run_dir.supervisor_pid_file()).ok()?;
    let mut f = text.split_whitespace();
    let pid: i32 = f.next()?.parse().ok()?;
    let started: u64 = f.next()?.parse().ok()?;
    (procfs::start_time(pid) == Some(started) && procfs::is_running(pid)).then_some(pid as u32)
}

/// Stops the lab's supervisor (which stops its children): SIGTERM, up to
/// `timeout`, then SIGKILL (the children die with it). `Ok(false)` if none ran.
pub fn stop_supervisor(run_dir: &RunDir, timeout: Duration) -> Result<bool, SupervisorError> {
    let Some(pid) = supervisor_pid(run_dir) else {
        return Ok(false);
    };
    let pid = pid as i32;
    let sys_err = |what| move |source| SupervisorError::Sys { what, source };
    sys::kill(pid, libc::SIGTERM).map_err(sys_err("sending SIGTERM to the supervisor"))?;
    if procfs::wait_gone(&[pid], timeout).is_empty() {
        return Ok(true);
    }
    tracing::warn!(pid, "supervisor ignored SIGTERM; killing it");
    sys::kill(pid, libc::SIGKILL).map_err(sys_err("sending SIGKILL to the supervisor"))?;
    if procfs::wait_gone(&[pid], Duration::from_secs(1)).is_empty() {
        Ok(true)
    } else {
        Err(SupervisorError::Stuck(pid))
    }
}

/// `exit 3` or `signal 9`.
fn describe(status: i32) -> String {
    let s = ExitStatus::from_raw(status);
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(sig)) => format!("signal {sig}"),
        (None, None) => format!("wait status {status}"),
    }
}

struct Child {
    spec: ChildSpec,
    pid: Option<i32>,
    restarts: u32,
    status: ChildStatus,
    last_exit: Option<String>,
    started: Instant,
    /// The delay the next quick exit waits.
    backoff: Duration,
    restart_at: Option<Instant>,
}

impl Child {
    /// Starts the process; on failure the child goes to backoff as if it had exited.
    fn start(&mut self, now: Instant) {
        match spawn(&self.spec) {
            Ok(pid) => {
                tracing::info!(node = %self.spec.node, pid, restarts = self.restarts, "child started");
                self.pid = Some(pid);
                self.status = ChildStatus::Running;
                self.started = now;
                self.restart_at = None;
            }
            Err(e) => {
                tracing::warn!(node = %self.spec.node, error = %e, "child could not start");
                self.started = now;
                self.exited(format!("could not start: {e}"), now);
            }
        }
    }

    /// Records an exit and schedules the restart.
    fn exited(&mut self, how: String, now: Instant) {
        if now.duration_since(self.started) >= HEALTHY {
            self.backoff = BACKOFF_MIN;
        }
        tracing::warn!(node = %self.spec.node, exit = %how, delay_ms = self.backoff.as_millis() as u64, "child exited; restarting");
        self.pid = None;
        self.last_exit = Some(how);
        self.status = ChildStatus::Backoff;
        self.restart_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// Reaps the process if it exited: its description.
    fn reap(&mut self) -> Option<String> {
        let pid = self.pid?;
        match sys::try_wait(pid) {
            Ok(Some(status)) => Some(describe(status)),
            Ok(None) => None,
            // ECHILD: not ours to wait for any more; it is gone.
            Err(e) => Some(format!("lost ({e})")),
        }
    }

    fn state(&self) -> ChildState {
        ChildState {
            pid: self.pid.map(|p| p as u32),
            restarts: self.restarts,
            state: self.status,
            last_exit: self.last_exit.clone(),
        }
    }
}

fn spawn(spec: &ChildSpec) -> io::Result<i32> {
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty argv"))?;
    if let Some(dir) = spec.log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    sys::prepare_child(&mut cmd);
    // The std Child is dropped without waiting: the loop reaps by pid.
    Ok(cmd.spawn()?.id() as i32)
}

/// Keeps one process per element running until SIGTERM or SIGINT.
pub struct Supervisor {
    run_dir: RunDir,
    children: Vec<Child>,
}

impl Supervisor {
    pub fn new(run_dir: RunDir, children: Vec<ChildSpec>) -> Supervisor {
        let now = Instant::now();
        let children = children
            .into_iter()
            .map(|spec| Child {
                spec,
                pid: None,
                restarts: 0,
                status: ChildStatus::Stopped,
                last_exit: None,
                started: now,
                backoff: BACKOFF_MIN,
                restart_at: None,
            })
            .collect();
        Supervisor { run_dir, children }
    }

    /// Runs until SIGTERM or SIGINT, then stops every child and returns.
    /// Call it from a single-threaded process (the `d11 supervise` command):
    /// it blocks those signals in the calling thread only.
    pub fn run(mut self) -> Result<(), SupervisorError> {
        let threads = procfs::thread_count().unwrap_or(1);
        if threads > 1 {
            return Err(SupervisorError::Threads(threads));
        }
        let signals = SignalFd::new(&[libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP])
            .map_err(|source| SupervisorError::Sys {
                what: "opening a signalfd",
                source,
            })?;
        let me = std::process::id();
        let pid_file = self.run_dir.supervisor_pid_file();
        let started = procfs::start_time(me as i32).unwrap_or(0);
        write_atomically(&pid_file, &format!("{me} {started}\n")).map_err(|source| {
            SupervisorError::Io {
                what: "writing",
                path: pid_file.clone(),
                source,
            }
        })?;
        tracing::info!(
            pid = me,
            children = self.children.len(),
            "supervisor started"
        );
        let now = Instant::now();
        for c in &mut self.children {
            c.start(now);
        }
        self.save();

        let mut stopping = false;
        while !stopping {
            let now = Instant::now();
            let next = self.children.iter().filter_map(|c| c.restart_at).min();
            signals
                .wait(next.map(|t| t.saturating_duration_since(now)))
                .map_err(|source| SupervisorError::Sys {
                    what: "poll",
                    source,
                })?;
            while let Some(sig) = signals.read().map_err(|source| SupervisorError::Sys {
                what: "reading the signalfd",
                source,
            })? {
                if sig == libc::SIGTERM as u32 || sig == libc::SIGINT as u32 {
                    tracing::info!(signal = sig, "supervisor stopping");
                    stopping = true;
                }
            }
            let now = Instant::now();
            let mut changed = false;
            for c in &mut self.children {
                if let Some(how) = c.reap() {
                    c.exited(how, now);
                    changed = true;
                }
            }
            if !stopping {
                for c in &mut self.children {
                    if c.restart_at.is_some_and(|t| t <= now) {
                        c.restarts += 1;
                        c.start(now);
                        changed = true;
                    }
                }
            }
            if changed {
                self.save();
            }
        }
        self.stop_children(&signals);
        let _ = std::fs::remove_file(&pid_file);
        tracing::info!("supervisor stopped");
        Ok(())
    }

    /// SIGTERM to every child's process group, up to [`STOP_GRACE`], then SIGKILL.
    fn stop_children(&mut self, signals: &SignalFd) {
        for c in &mut self.children {
            c.restart_at = None;
            if let Some(pid) = c.pid {
                let _ = sys::kill(-pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            for c in &mut self.children {
                if let Some(how) = c.reap() {
                    c.last_exit = Some(how);
                    c.pid = None;
                }
            }
            let now = Instant::now();
            if self.children.iter().all(|c| c.pid.is_none()) || now >= deadline {
                break;
            }
            // Woken by SIGCHLD; the signals themselves are drained and ignored.
            let _ = signals.wait(Some(deadline - now));
            while let Ok(Some(_)) = signals.read() {}
        }
        for c in &mut self.children {
            if let Some(pid) = c.pid.take() {
                tracing::warn!(node = %c.spec.node, pid, "child ignored SIGTERM; killing it");
                let _ = sys::kill(-pid, libc::SIGKILL);
                c.last_exit = Some(match sys::wait(pid) {
                    Ok(status) => describe(status),
                    Err(e) => format!("lost ({e})"),
                });
            }
            c.status = ChildStatus::Stopped;
        }
        self.save();
    }

    /// Writes `supervisor.json`; a failure is logged (the children matter more).
    fn save(&self) {
        let state = SupervisorState {
            pid: std::process::id(),
            nodes: self
                .children
                .iter()
                .map(|c| (c.spec.node.clone(), c.state()))
                .collect(),
        };
        let path = self.run_dir.supervisor_state_file();
        let text = serde_json::to_string_pretty(&state).unwrap_or_default();
        if let Err(e) = write_atomically(&path, &text) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the supervisor state");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_are_described_like_the_shell_does() {
        assert_eq!(describe(3 << 8), "exit 3");
        assert_eq!(describe(9), "signal 9");
    }

    #[test]
    fn state_json_has_the_documented_shape() {
        let s = SupervisorState {
            pid: 7,
            nodes: BTreeMap::from([(
                "a2".to_string(),
                ChildState {
                    pid: Some(123),
                    restarts: 0,
                    state: ChildStatus::Running,
                    last_exit: Some("signal 9".into()),
                },
            )]),
        };
        let v: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"pid": 7, "nodes": {"a2": {"pid": 123, "restarts": 0, "state": "running", "last_exit": "signal 9"}}})
        );
    }

    #[test]
    fn backoff_doubles_to_five_seconds_and_resets_after_a_healthy_run() {
        let t0 = Instant::now();
        let mut c = Supervisor::new(
            RunDir::under(Path::new("/nonexistent"), "x"),
            vec![ChildSpec {
                node: "a2".into(),
                argv: vec![],
                log: PathBuf::new(),
            }],
        )
        .children
        .remove(0);
        let mut delays = Vec::new();
        for _ in 0..8 {
            c.exited("exit 1".into(), t0);
            delays.push(c.restart_at.unwrap() - t0);
        }
        let ms: Vec<u128> = delays.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        c.started = t0;
        c.exited("exit 1".into(), t0 + HEALTHY);
        assert_eq!(c.restart_at.unwrap() - (t0 + HEALTHY), BACKOFF_MIN);
    }
}
