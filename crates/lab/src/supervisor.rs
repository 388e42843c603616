//! The supervisor: one process per lab (`d11 supervise --name LAB`) keeping
//! one child per element alive.
//!
//! Each child gets its stdout and stderr appended to its log file, its own
//! process group, and SIGKILL when the supervisor dies (`PR_SET_PDEATHSIG`),
//! so no element outlives its lab. A child that exits is started again after
//! a backoff: 100 ms, doubling to 5 s, back to 100 ms once a child has run
//! 10 s. SIGTERM or SIGINT stops the lab's children (SIGTERM, 2 s, SIGKILL).
//!
//! A lab may have an [`Owner`] (`d11 up --owner PID`, which the tests' lab
//! guard passes): the process it was started for. When the owner dies —
//! even by SIGKILL, when no destructor and no signal handler runs — the
//! supervisor stops the children and returns [`Stopped::OwnerGone`], and
//! `d11 supervise` takes the whole lab down. The supervisor is a daemon
//! (`d11 up` has exited, the owner is not its parent), so
//! `PR_SET_PDEATHSIG` cannot serve: it watches the owner through a pidfd
//! (`pidfd_open(2)`, Linux 5.3), which polls readable when the owner exits
//! and names that one process even if its pid is reused; the owner's start
//! time, taken by `d11 up`, proves the pidfd was opened for the right
//! process. On a kernel without pidfds it checks `/proc` every
//! [`OWNER_POLL`] instead.
//!
//! The loop is one `poll` on a signalfd (SIGCHLD, SIGTERM, SIGINT, SIGHUP)
//! and the owner's pidfd, with the next restart as its timeout: no busy
//! loop, no signal handlers. Every change is written to `supervisor.json`
//! (temporary file + rename), so `d11 status` never reads half a state.

use crate::names::RunDir;
use crate::procfs;
use crate::sys::{self, SignalFd};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
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
/// How often the owner is looked for in `/proc` when pidfds are missing.
pub const OWNER_POLL: Duration = Duration::from_millis(500);

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

/// The process a lab was started for: its pid and start time (in clock ticks
/// since boot), which together name one process for good. Written
/// `PID:TICKS` on the supervisor's command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub pid: u32,
    pub start_time: u64,
}

impl Owner {
    /// The running process `pid`, if there is one.
    pub fn of(pid: u32) -> Option<Owner> {
        let p = i32::try_from(pid).ok()?;
        let start_time = procfs::start_time(p)?;
        procfs::is_running(p).then_some(Owner { pid, start_time })
    }

    /// True while this very process runs (a zombie has exited; a reused pid
    /// has another start time).
    pub fn is_alive(&self) -> bool {
        Owner::of(self.pid) == Some(*self)
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.pid, self.start_time)
    }
}

impl std::str::FromStr for Owner {
    type Err = String;

    fn from_str(s: &str) -> Result<Owner, String> {
        let bad = || format!("{s:?} is not PID:STARTTIME");
        let (pid, start) = s.split_once(':').ok_or_else(bad)?;
        Ok(Owner {
            pid: pid.parse().map_err(|_| bad())?,
            start_time: start.parse().map_err(|_| bad())?,
        })
    }
}

/// How the supervisor learns that its owner died.
enum OwnerWatch {
    /// No owner: the lab lives until `d11 down`.
    None,
    /// A pidfd, readable once the owner has exited.
    Pidfd(Owner, OwnedFd),
    /// No pidfds on this kernel: `/proc` every [`OWNER_POLL`].
    Poll(Owner),
}

impl OwnerWatch {
    fn new(owner: Option<Owner>) -> OwnerWatch {
        let Some(owner) = owner else {
            return OwnerWatch::None;
        };
        match i32::try_from(owner.pid).map(sys::pidfd_open) {
            // Opened for the right process only if it still has the owner's
            // start time now that the pidfd pins it; if not, it is gone and
            // `gone` says so at once.
            Ok(Ok(fd)) => OwnerWatch::Pidfd(owner, fd),
            // ESRCH: already gone; polling sees that on the first check.
            Ok(Err(e)) => {
                if e.raw_os_error() != Some(libc::ESRCH) {
                    tracing::info!(error = %e, "no pidfd for the owner; polling /proc");
                }
                OwnerWatch::Poll(owner)
            }
            Err(_) => OwnerWatch::Poll(owner),
        }
    }

    /// The longest the loop may sleep before looking again.
    fn poll_interval(&self) -> Option<Duration> {
        matches!(self, OwnerWatch::Poll(_)).then_some(OWNER_POLL)
    }

    /// True once the owner has exited. `readable`: the pidfd polled readable.
    fn gone(&self, readable: bool) -> bool {
        match self {
            OwnerWatch::None => false,
            OwnerWatch::Pidfd(o, _) => readable || !o.is_alive(),
            OwnerWatch::Poll(o) => !o.is_alive(),
        }
    }
}

/// Why [`Supervisor::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// SIGTERM or SIGINT (`d11 down`, Ctrl-C).
    Signal,
    /// The owner died: the caller takes the lab down.
    OwnerGone,
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
    /// The process whose death takes the lab down, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<u32>,
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

/// Keeps one process per element running until SIGTERM or SIGINT, or until
/// its owner dies.
pub struct Supervisor {
    run_dir: RunDir,
    children: Vec<Child>,
    owner: Option<Owner>,
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
        Supervisor {
            run_dir,
            children,
            owner: None,
        }
    }

    /// Stops the lab also when `owner` exits ([`Stopped::OwnerGone`]).
    pub fn owned_by(mut self, owner: Option<Owner>) -> Supervisor {
        self.owner = owner;
        self
    }

    /// Runs until SIGTERM or SIGINT or the owner's death, then stops every
    /// child and says why it returned. Call it from a single-threaded process
    /// (the `d11 supervise` command): it blocks those signals in the calling
    /// thread only.
    pub fn run(mut self) -> Result<Stopped, SupervisorError> {
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
        let watch = OwnerWatch::new(self.owner);
        tracing::info!(
            pid = me,
            children = self.children.len(),
            owner = ?self.owner.map(|o| o.pid),
            "supervisor started"
        );
        let now = Instant::now();
        for c in &mut self.children {
            c.start(now);
        }
        self.save();

        let mut stopping = None;
        // Checked before the first wait too: an owner gone before the
        // supervisor started never makes its pidfd readable.
        let mut owner_readable = false;
        while stopping.is_none() {
            if watch.gone(owner_readable) {
                tracing::info!(owner = ?self.owner.map(|o| o.pid), "the lab's owner is gone; supervisor stopping");
                stopping = Some(Stopped::OwnerGone);
                break;
            }
            let now = Instant::now();
            let next = self.children.iter().filter_map(|c| c.restart_at).min();
            let timeout = [
                next.map(|t| t.saturating_duration_since(now)),
                watch.poll_interval(),
            ]
            .into_iter()
            .flatten()
            .min();
            let fd = match &watch {
                OwnerWatch::Pidfd(_, fd) => Some(fd.as_fd()),
                _ => None,
            };
            owner_readable =
                signals
                    .wait_with(fd, timeout)
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
                    stopping = Some(Stopped::Signal);
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
            if stopping.is_none() {
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
        Ok(stopping.unwrap_or(Stopped::Signal))
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
            owner: self.owner.map(|o| o.pid),
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
            owner: None,
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
    fn an_owner_is_written_pid_colon_start_time_and_read_back() {
        let me = Owner::of(std::process::id()).expect("this process runs");
        assert!(me.is_alive());
        assert_eq!(me.to_string().parse::<Owner>(), Ok(me));
        assert!("12".parse::<Owner>().is_err());
        assert!("12:x".parse::<Owner>().is_err());
        let reused = Owner {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(
            !reused.is_alive(),
            "a pid with another start time is another process"
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
