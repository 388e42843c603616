//! Debian's haproxy as the benches run it (`d11 bench order` in vm-lb,
//! `d11 bench lb` in a namespace of its own): found or installed with its
//! package's own service kept stopped, configured to do what the `l4lb`
//! does with its defaults, and killed with the bench.

use crate::lab::Daemon;
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `name` in the PATH or an sbin directory.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// haproxy's path; if it is missing, Debian's package installed now (the
/// bench runs as root). The package's own service must not run on the
/// machine: it is kept from starting during the install (`policy-rc.d`
/// answering 101, unless one is already in place) and disabled after it
/// (`systemctl disable --now` and `mask` under systemd, `update-rc.d
/// disable` and `service stop` otherwise). The benches start their own
/// haproxy, in a namespace of theirs only.
pub fn find_or_install() -> Result<PathBuf, String> {
    if let Some(p) = find_program("haproxy") {
        return Ok(p);
    }
    eprintln!("bench: haproxy is not installed: installing Debian's package (its service kept stopped and disabled)");
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists();
    if ours {
        use std::os::unix::fs::PermissionsExt;
        let text =
            "#!/bin/sh\n# d11 bench: no service starts while haproxy is installed\nexit 101\n";
        std::fs::write(policy, text)
            .and_then(|()| std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755)))
            .map_err(|e| format!("writing {}: {e}", policy.display()))?;
    }
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .output()
    };
    let install = ["install", "-y", "--no-install-recommends", "haproxy"];
    let mut out = apt(&install);
    if !out.as_ref().is_ok_and(|o| o.status.success()) {
        // A fresh machine has no package lists yet.
        let _ = apt(&["update"]);
        out = apt(&install);
    }
    if ours {
        let _ = std::fs::remove_file(policy);
    }
    let quiet = |program: &str, args: &[&str]| {
        let _ = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    };
    if Path::new("/run/systemd/system").exists() {
        quiet("systemctl", &["disable", "--now", "haproxy.service"]);
        quiet("systemctl", &["mask", "haproxy.service"]);
    } else {
        quiet("update-rc.d", &["haproxy", "disable"]);
        quiet("service", &["haproxy", "stop"]);
    }
    match (find_program("haproxy"), out) {
        (Some(p), _) => Ok(p),
        (None, Ok(o)) => Err(format!(
            "apt-get install haproxy failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        (None, Err(e)) => Err(format!("cannot run apt-get: {e}")),
    }
}

/// HAProxy's configuration for what the l4lb does with its defaults
/// (d11_apps::l4lb::L4lbConfig): `mode tcp`, round robin over `servers`
/// with health checks (inter 2s rise 2 fall 3), connect timeout 2 s, idle
/// timeouts 30 s, 2 retries on another server, maxconn 4096, and a tcplog
/// line per connection on stdout, as the l4lb logs one. `threads`:
/// haproxy's `nbthread`, or its default (one per CPU) when `None`.
pub fn config(bench: &str, bind: &str, servers: &[SocketAddr], threads: Option<usize>) -> String {
    let servers: String = servers
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            format!(
                "    server ctl{} {addr} check inter 2s rise 2 fall 3\n",
                i + 1
            )
        })
        .collect();
    let threads = threads.map_or(String::new(), |n| format!("    nbthread {n}\n"));
    format!(
        "# {bench}: Debian's haproxy in place of the l4lb.
global
    maxconn 4096
{threads}    log stdout format raw local0 info

defaults
    mode tcp
    log global
    option tcplog
    option redispatch
    retries 2
    timeout connect 2s
    timeout client 30s
    timeout server 30s

frontend www
    bind {bind}
    default_backend ctl

backend ctl
    balance roundrobin
{servers}"
    )
}

/// Runs `program` in the foreground (`-db`) with the configuration `cfg`,
/// through `prefix` (the command that enters its namespace and then execs
/// it, so the child is haproxy itself), its log to `log`.
pub fn start(mut prefix: Command, program: &Path, cfg: &Path, log: &Path) -> Result<Daemon> {
    prefix.arg(program).args(["-db", "-f"]).arg(cfg);
    Daemon::start(prefix, log).context("starting haproxy")
}
