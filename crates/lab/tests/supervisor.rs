//! The supervisor with dummy children (`sleep`, `sh -c 'exit 3'`): restarts
//! with backoff, counted; SIGTERM stops every child; children die with it.
//! No root needed. `harness = false`: this main re-runs itself as the
//! supervisor process (`D11_SUPERVISOR_UNDER_TEST=DIR`), which must be
//! single-threaded.

use d11_lab::{
    stop_supervisor, supervisor_pid, ChildSpec, ChildStatus, Owner, RunDir, Stopped, Supervisor,
    SupervisorError, SupervisorState,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const ENV_DIR: &str = "D11_SUPERVISOR_UNDER_TEST";
const ENV_MODE: &str = "D11_SUPERVISOR_MODE";
const ENV_OWNER: &str = "D11_SUPERVISOR_OWNER";
/// The supervisor's exit status when it stopped because its owner died.
const EXIT_OWNER_GONE: i32 = 3;
const LAB: &str = "t-sup";

fn spec(rd: &RunDir, node: &str, argv: &[&str]) -> ChildSpec {
    ChildSpec {
        node: node.to_string(),
        argv: argv.iter().map(Into::into).collect(),
        log: rd.log_file(node),
    }
}

/// The supervisor side: the children of each mode.
fn supervise(dir: &Path, mode: &str) -> ! {
    let rd = RunDir::under(dir, LAB);
    let children = match mode {
        "all" => vec![
            spec(&rd, "sleeper", &["sleep", "1000"]),
            spec(&rd, "crasher", &["sh", "-c", "echo crash; exit 3"]),
            spec(
                &rd,
                "stubborn",
                &["sh", "-c", "trap '' TERM; while :; do sleep 1; done"],
            ),
        ],
        _ => vec![spec(&rd, "sleeper", &["sleep", "1000"])],
    };
    let owner = std::env::var(ENV_OWNER)
        .ok()
        .map(|o| o.parse::<Owner>().unwrap());
    match Supervisor::new(rd, children).owned_by(owner).run() {
        Ok(Stopped::Signal) => std::process::exit(0),
        Ok(Stopped::OwnerGone) => std::process::exit(EXIT_OWNER_GONE),
        Err(e) => {
            eprintln!("supervisor: {e}");
            std::process::exit(1)
        }
    }
}

fn start(dir: &Path, mode: &str) -> Child {
    start_owned(dir, mode, None)
}

fn start_owned(dir: &Path, mode: &str, owner: Option<Owner>) -> Child {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.env(ENV_DIR, dir).env(ENV_MODE, mode);
    if let Some(o) = owner {
        c.env(ENV_OWNER, o.to_string());
    }
    c.spawn().unwrap()
}

fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

fn state(rd: &RunDir) -> Option<SupervisorState> {
    SupervisorState::load(rd).ok()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s[s.rfind(')')? + 1..]
                .split_whitespace()
                .next()
                .map(|st| st != "Z")
        })
        .unwrap_or(false)
}

fn pgrp(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 1..]
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

fn temp_root(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("d11-sup-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join(LAB)).unwrap();
    dir
}

/// Kills the supervisor process if a test fails halfway.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn restarts_with_backoff_counted_and_sigterm_stops_all() {
    let root = temp_root("all");
    let rd = RunDir::under(&root, LAB);
    let mut sup = Reap(start(&root, "all"));
    assert!(
        wait_for(Duration::from_secs(5), || state(&rd)
            .is_some_and(|s| s.nodes.len() == 3)),
        "no supervisor.json"
    );
    assert_eq!(supervisor_pid(&rd), Some(sup.0.id()));
    let s = state(&rd).unwrap();
    let sleeper = s.nodes["sleeper"].pid.expect("sleeper runs");
    assert_eq!(
        pgrp(sleeper),
        Some(sleeper),
        "a child leads its own process group"
    );

    // The crasher: restart times, to see the delays grow.
    let t0 = Instant::now();
    let mut seen: Vec<(u32, Instant)> = Vec::new();
    while t0.elapsed() < Duration::from_millis(2500) {
        if let Some(c) = state(&rd).map(|s| s.nodes["crasher"].clone()) {
            if seen.last().map(|(r, _)| *r) != Some(c.restarts) {
                seen.push((c.restarts, Instant::now()));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let crasher = state(&rd).unwrap().nodes["crasher"].clone();
    assert_eq!(crasher.last_exit.as_deref(), Some("exit 3"));
    // 100 + 200 + 400 + 800 ms = 1.5 s: 4 restarts in 2.5 s, the fifth at 3.1 s.
    assert!((3..=5).contains(&crasher.restarts), "{crasher:?}");
    let gaps: Vec<u128> = seen
        .windows(2)
        .map(|w| (w[1].1 - w[0].1).as_millis())
        .collect();
    assert!(
        gaps.windows(2).all(|g| g[1] > g[0]),
        "delays do not grow: {gaps:?} ms"
    );
    let log = std::fs::read_to_string(rd.log_file("crasher")).unwrap();
    assert!(
        log.matches("crash").count() >= 3,
        "the log is appended to: {log:?}"
    );

    // A child killed from outside comes back, counted.
    assert!(kill_with(sleeper, "KILL"));
    assert!(
        wait_for(Duration::from_secs(3), || state(&rd).is_some_and(|s| s
            .nodes["sleeper"]
            .restarts
            == 1
            && s.nodes["sleeper"].state == ChildStatus::Running)),
        "{:?}",
        state(&rd)
    );
    let s = state(&rd).unwrap();
    assert_eq!(s.nodes["sleeper"].last_exit.as_deref(), Some("signal 9"));
    let pids: Vec<u32> = s.nodes.values().filter_map(|c| c.pid).collect();

    // SIGTERM: the stubborn child needs SIGKILL after the 2 s grace.
    let t = Instant::now();
    assert!(stop_supervisor(&rd, Duration::from_secs(5)).unwrap());
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    let status = sup.0.wait().unwrap();
    assert!(
        status.success(),
        "the supervisor exits 0 on SIGTERM: {status:?}"
    );
    for p in pids {
        assert!(!alive(p), "child {p} outlived the supervisor");
    }
    let s = state(&rd).unwrap();
    assert!(
        s.nodes
            .values()
            .all(|c| c.state == ChildStatus::Stopped && c.pid.is_none()),
        "{s:?}"
    );
    assert_eq!(s.nodes["stubborn"].last_exit.as_deref(), Some("signal 9"));
    // Children start with SIGTERM unblocked, though the supervisor blocks it.
    assert_eq!(s.nodes["sleeper"].last_exit.as_deref(), Some("signal 15"));
    assert!(!rd.supervisor_pid_file().exists());
    assert!(
        !stop_supervisor(&rd, Duration::from_secs(1)).unwrap(),
        "stopping twice is fine"
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// `kill -SIG PID` through the kill(1) program: the test needs no unsafe.
fn kill_with(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

fn children_die_with_the_supervisor() {
    let root = temp_root("death");
    let rd = RunDir::under(&root, LAB);
    let mut sup = Reap(start(&root, "one"));
    assert!(wait_for(Duration::from_secs(5), || state(&rd)
        .is_some_and(|s| s.nodes["sleeper"].pid.is_some())));
    let sleeper = state(&rd).unwrap().nodes["sleeper"].pid.unwrap();
    assert!(kill_with(sup.0.id(), "KILL"));
    let _ = sup.0.wait();
    assert!(
        wait_for(Duration::from_secs(2), || !alive(sleeper)),
        "child {sleeper} outlived a killed supervisor"
    );
    assert_eq!(
        supervisor_pid(&rd),
        None,
        "a stale pid file names no supervisor"
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// The owner is not the supervisor's parent (as with `d11 up --owner`):
/// killing it with SIGKILL stops the supervisor and its children.
fn the_owners_death_stops_the_supervisor_and_its_children() {
    let root = temp_root("owner");
    let rd = RunDir::under(&root, LAB);
    let mut owner_proc = Reap(Command::new("sleep").arg("1000").spawn().unwrap());
    let owner = Owner::of(owner_proc.0.id()).expect("the owner runs");
    let mut sup = Reap(start_owned(&root, "one", Some(owner)));
    assert!(wait_for(Duration::from_secs(5), || state(&rd)
        .is_some_and(|s| s.nodes["sleeper"].pid.is_some())));
    let s = state(&rd).unwrap();
    assert_eq!(s.owner, Some(owner.pid), "supervisor.json names the owner");
    let sleeper = s.nodes["sleeper"].pid.unwrap();
    assert!(
        alive(sup.0.id()),
        "the supervisor runs while its owner does"
    );
    assert!(kill_with(owner.pid, "KILL"));
    let _ = owner_proc.0.wait();
    // pidfd: noticed at once; the sleeper gets SIGTERM and exits on it.
    assert!(
        wait_for(Duration::from_secs(5), || !alive(sup.0.id())),
        "the supervisor outlived its owner"
    );
    let status = sup.0.wait().unwrap();
    assert_eq!(status.code(), Some(EXIT_OWNER_GONE), "{status:?}");
    assert!(!alive(sleeper), "child {sleeper} outlived the owner");
    assert!(!rd.supervisor_pid_file().exists());
    let _ = std::fs::remove_dir_all(&root);
}

/// An owner that is already gone when the supervisor starts (its pid maybe
/// reused: the start time differs) stops it at once.
fn an_owner_gone_before_the_start_stops_it_at_once() {
    let root = temp_root("owner-gone");
    let rd = RunDir::under(&root, LAB);
    let me = Owner::of(std::process::id()).unwrap();
    let stale = Owner {
        start_time: me.start_time + 1,
        ..me
    };
    let mut sup = Reap(start_owned(&root, "one", Some(stale)));
    assert!(
        wait_for(Duration::from_secs(5), || !alive(sup.0.id())),
        "the supervisor ran for an owner that is gone"
    );
    assert_eq!(sup.0.wait().unwrap().code(), Some(EXIT_OWNER_GONE));
    let s = state(&rd).expect("supervisor.json written");
    assert!(
        s.nodes.values().all(|c| c.state == ChildStatus::Stopped),
        "{s:?}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

fn a_multithreaded_process_is_refused() {
    let root = temp_root("threads");
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || rx.recv());
    let err = Supervisor::new(RunDir::under(&root, LAB), Vec::new())
        .run()
        .unwrap_err();
    drop(tx);
    let _ = t.join();
    assert!(
        matches!(err, SupervisorError::Threads(n) if n >= 2),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

fn main() {
    if let Some(dir) = std::env::var_os(ENV_DIR) {
        supervise(
            Path::new(&dir),
            &std::env::var(ENV_MODE).unwrap_or_default(),
        );
    }
    let tests: [(&str, fn()); 5] = [
        (
            "restarts_with_backoff_counted_and_sigterm_stops_all",
            restarts_with_backoff_counted_and_sigterm_stops_all,
        ),
        (
            "children_die_with_the_supervisor",
            children_die_with_the_supervisor,
        ),
        (
            "the_owners_death_stops_the_supervisor_and_its_children",
            the_owners_death_stops_the_supervisor_and_its_children,
        ),
        (
            "an_owner_gone_before_the_start_stops_it_at_once",
            an_owner_gone_before_the_start_stops_it_at_once,
        ),
        (
            "a_multithreaded_process_is_refused",
            a_multithreaded_process_is_refused,
        ),
    ];
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut failed = 0;
    for (name, test) in tests {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        match std::panic::catch_unwind(test) {
            Ok(()) => println!("test {name} ... ok"),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        std::process::exit(1);
    }
}
