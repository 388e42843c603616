//! What `/proc` tells about processes: liveness, start times, thread counts
//! and which network namespace each process is in.

use std::collections::HashSet;
use std::path::Path;

/// The fields of `/proc/PID/stat` after the command name (which may hold
/// spaces and parentheses, so it is skipped up to its last ')').
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(String::from).collect())
}

/// True while `pid` exists and has not exited (a zombie has exited).
pub(crate) fn is_running(pid: i32) -> bool {
    stat_fields(pid)
        .and_then(|f| f.first().cloned())
        .is_some_and(|state| state != "Z" && state != "X")
}

/// When `pid` started, in clock ticks since boot: with the pid, it names one
/// process for good (pids are reused, start times are not).
pub(crate) fn start_time(pid: i32) -> Option<u64> {
    // Field 22 of stat; the fields after the name start at field 3.
    stat_fields(pid)?.get(22 - 3)?.parse().ok()
}

/// How many threads this process has.
pub(crate) fn thread_count() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))?
        .trim()
        .parse()
        .ok()
}

/// True if this process runs with effective uid 0.
pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let uids = s.lines().find_map(|l| l.strip_prefix("Uid:"))?.to_string();
            uids.split_whitespace().nth(1).map(|e| e == "0")
        })
        .unwrap_or(false)
}

/// Waits until none of `pids` runs or `timeout` passes; returns those left.
pub(crate) fn wait_gone(pids: &[i32], timeout: std::time::Duration) -> Vec<i32> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left: Vec<i32> = pids.iter().copied().filter(|&p| is_running(p)).collect();
        if left.is_empty() || std::time::Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The inode of a network namespace file (`/run/netns/NAME` or `/proc/PID/ns/net`).
pub(crate) fn netns_inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Every process (but this one) whose network namespace is one of `inodes`.
pub(crate) fn pids_in_netns(inodes: &HashSet<u64>) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            // The link reads "net:[INODE]".
            std::fs::read_link(format!("/proc/{pid}/ns/net"))
                .ok()
                .and_then(|l| {
                    let l = l.to_str()?.to_string();
                    l.strip_prefix("net:[")?
                        .strip_suffix(']')?
                        .parse::<u64>()
                        .ok()
                })
                .is_some_and(|ino| inodes.contains(&ino))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_running_and_has_a_start_time() {
        let me = std::process::id() as i32;
        assert!(is_running(me));
        assert!(start_time(me).is_some());
        assert!(thread_count().is_some_and(|n| n >= 1));
        assert!(!is_running(i32::MAX));
    }

    #[test]
    fn processes_are_found_by_their_namespace() {
        let me = std::process::id();
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let ino = netns_inode(Path::new(&format!("/proc/{me}/ns/net"))).unwrap();
        let found = pids_in_netns(&HashSet::from([ino]));
        let _ = child.kill();
        let _ = child.wait();
        assert!(found.contains(&(child.id() as i32)), "{found:?}");
        assert!(!found.contains(&(me as i32)));
    }
}
