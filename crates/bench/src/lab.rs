//! What the lab benches share: a lab that goes down when dropped, iperf3
//! between two nodes (its `-J` output read through a small typed struct),
//! and the elements' CPU time and frames around a run.
//!
//! The benches drive the lab through this same binary's commands (`up`,
//! `exec`, `down`) as a user would, so nothing here knows about namespaces.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// iperf3's `-b` for the fixed-load run: 20,000 datagrams/s of 18 bytes.
pub const FIXED_RATE_BITS: &str = "2880K";

/// The `d11` binary: this process (the benches run inside it).
pub fn d11_exe() -> Result<std::path::PathBuf> {
    std::env::current_exe().context("cannot find the d11 binary")
}

/// A directory for this run's files, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// `d11-bench-WHAT-PID` in the temporary directory.
    pub fn new(what: &str) -> Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("d11-bench-{what}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a topology variant as `dir/file`, for `d11 up -t`.
pub fn write_topology(dir: &Path, file: &str, topo: &d11_lab::Topology) -> Result<PathBuf> {
    let p = dir.join(file);
    let text = toml::to_string(topo).context("writing the topology as TOML")?;
    std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    Ok(p)
}

/// A lab that goes down when dropped, whatever happened in between.
pub struct LabGuard<'a> {
    exe: &'a Path,
    pub name: String,
}

impl<'a> LabGuard<'a> {
    /// `d11 up -t TOPOLOGY --name NAME`, owned by this process (a bench
    /// killed even by SIGKILL leaves no lab), and how long it took.
    pub fn up(exe: &'a Path, topology: &Path, name: &str) -> Result<(LabGuard<'a>, Duration)> {
        let _ = d11(exe, &["down", "--name", name]).output();
        let t0 = Instant::now();
        let me = std::process::id().to_string();
        let out = d11(
            exe,
            &[
                "up",
                "-t",
                &topology.to_string_lossy(),
                "--name",
                name,
                "--owner",
                &me,
            ],
        )
        .stdout(Stdio::null())
        .output()
        .context("running d11 up")?;
        let took = t0.elapsed();
        let guard = LabGuard {
            exe,
            name: name.to_string(),
        };
        if !out.status.success() {
            bail!(
                "d11 up failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok((guard, took))
    }

    /// `d11 exec --name LAB NODE -- CMD…`, not yet run.
    pub fn exec(&self, node: &str, cmd: &[&str]) -> Command {
        let mut args = vec!["exec", "--name", &self.name, node, "--"];
        args.extend_from_slice(cmd);
        d11(self.exe, &args)
    }

    /// Three pings from `from` to `to`, so ARP and the elements' tables
    /// (a NAT's first entry) are warm before anything is timed.
    pub fn warm_up(&self, from: &str, to: &str) -> Result<()> {
        let ping = self
            .exec(from, &["ping", "-c", "3", "-i", "0.2", "-W", "2", to])
            .output()
            .context("running ping")?;
        if !ping.status.success() {
            bail!(
                "{from} cannot ping {to}: {}",
                String::from_utf8_lossy(&ping.stdout).trim()
            );
        }
        Ok(())
    }
}

impl Drop for LabGuard<'_> {
    fn drop(&mut self) {
        let _ = d11(self.exe, &["down", "--name", &self.name]).output();
    }
}

fn d11(exe: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(exe);
    c.args(args);
    c
}

/// The two ends of an iperf3 run: client node, server node, server address.
pub struct Ends<'a> {
    pub client: &'a str,
    pub server: &'a str,
    pub server_ip: &'a str,
}

/// What the benches read of iperf3's `-J` output.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Iperf3 {
    pub error: Option<String>,
    pub end: Iperf3End,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Iperf3End {
    /// TCP: what the server received.
    pub sum_received: Option<Iperf3Sum>,
    /// UDP: datagrams sent and lost.
    pub sum: Option<Iperf3Sum>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Iperf3Sum {
    pub bits_per_second: Option<f64>,
    pub packets: Option<f64>,
    pub lost_packets: Option<f64>,
    pub seconds: Option<f64>,
}

impl Iperf3 {
    /// A TCP run's rate at the receiver.
    pub fn tcp_mbit_s(&self) -> Result<f64> {
        let bps = self
            .end
            .sum_received
            .as_ref()
            .and_then(|s| s.bits_per_second);
        Ok(bps.context("iperf3 TCP gave no bits_per_second")? / 1e6)
    }

    /// A UDP run's datagrams, `seconds` standing in for a missing duration.
    pub fn udp(&self, seconds: u32) -> Udp {
        let s = self.end.sum.clone().unwrap_or_default();
        Udp {
            packets: s.packets.unwrap_or(0.0),
            lost: s.lost_packets.unwrap_or(0.0),
            seconds: s.seconds.unwrap_or(f64::from(seconds)).max(0.001),
        }
    }
}

/// Datagrams sent and lost over a UDP run's seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Udp {
    pub packets: f64,
    pub lost: f64,
    pub seconds: f64,
}

impl Udp {
    pub fn sent_pps(&self) -> f64 {
        self.packets / self.seconds
    }
    pub fn received_pps(&self) -> f64 {
        (self.packets - self.lost).max(0.0) / self.seconds
    }
    pub fn loss(&self) -> f64 {
        if self.packets > 0.0 {
            self.lost / self.packets
        } else {
            0.0
        }
    }
}

/// Runs an iperf3 client in `ends.client` against a one-off server in `ends.server`.
pub fn iperf(lab: &LabGuard, ends: &Ends, extra: &[&str]) -> Result<Iperf3> {
    let server_ip = ends.server_ip;
    let mut server: Child = lab
        .exec(ends.server, &["iperf3", "-s", "-1", "-B", server_ip])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 -s (is iperf3 installed?)")?;
    let mut last_err = String::new();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let mut args = vec!["iperf3", "-J", "-c", server_ip];
        args.extend_from_slice(extra);
        let out = lab
            .exec(ends.client, &args)
            .output()
            .context("running iperf3 -c")?;
        let run: Option<Iperf3> = serde_json::from_slice(&out.stdout).ok();
        match run.as_ref().map(|r| r.error.as_deref()) {
            Some(None) if out.status.success() => {
                let _ = server.wait();
                return Ok(run.unwrap_or_default());
            }
            Some(Some(e)) if e.contains("refused") || e.contains("unable to connect") => {
                last_err = e.to_string()
            }
            e => {
                let _ = server.kill();
                let _ = server.wait();
                bail!("iperf3 failed: {}", e.flatten().unwrap_or("no JSON output"));
            }
        }
    }
    let _ = server.kill();
    bail!("iperf3 server never answered: {last_err}")
}

/// TCP and 64-byte UDP at full speed from one end of a lab to the other.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Throughput {
    pub tcp_mbit_s: Option<f64>,
    pub udp64_sent_pps: Option<f64>,
    pub udp64_received_pps: Option<f64>,
    pub udp64_loss: Option<f64>,
    /// The elements' CPU per frame they received during that UDP flood
    /// (saturation, where each wakeup carries a batch), ns; `None` in a lab
    /// without elements.
    pub cpu_ns_per_frame_flood: Option<f64>,
}

impl Throughput {
    /// An iperf3 TCP run, then 64-byte UDP at full speed (`-b 0`), `seconds`
    /// each, the elements' CPU and frames read around the UDP run.
    pub fn measure(lab: &LabGuard, ends: &Ends, seconds: u32) -> Result<Throughput> {
        let secs = seconds.to_string();
        let tcp = iperf(lab, ends, &["-t", &secs])?.tcp_mbit_s()?;
        let before = element_work(&lab.name)?;
        // 18 bytes of UDP payload: 14 Ethernet + 20 IP + 8 UDP + 18 = 60 bytes, 64 with the FCS.
        let udp = iperf(lab, ends, &["-u", "-b", "0", "-l", "18", "-t", &secs])?.udp(seconds);
        let after = element_work(&lab.name)?;
        Ok(Throughput {
            tcp_mbit_s: Some(tcp),
            udp64_sent_pps: Some(udp.sent_pps()),
            udp64_received_pps: Some(udp.received_pps()),
            udp64_loss: Some(udp.loss()),
            cpu_ns_per_frame_flood: NodeLoad::chain(&NodeLoad::between(&before, &after), &[]),
        })
    }

    /// The head of the benches' throughput table.
    pub fn header() -> String {
        format!(
            "{:<8} {:>12} {:>14} {:>14} {:>7}",
            "variant", "TCP Mbit/s", "UDP64 sent/s", "UDP64 rcvd/s", "loss"
        )
    }

    /// One line of that table.
    pub fn line(&self, name: &str) -> String {
        use crate::cell;
        format!(
            "{:<8} {:>12} {:>14} {:>14} {:>6}%",
            name,
            cell(self.tcp_mbit_s, 0),
            cell(self.udp64_sent_pps, 0),
            cell(self.udp64_received_pps, 0),
            cell(self.udp64_loss.map(|l| 100.0 * l), 1),
        )
    }
}

/// The address of the topology's `server` node (its first port's).
pub fn server_address(topology: &Path) -> Result<String> {
    let t = d11_lab::Topology::load(topology)?;
    let addr = t
        .node("server")
        .and_then(|n| n.ports.first())
        .and_then(|p| p.address)
        .with_context(|| format!("{} has no server address", topology.display()))?;
    Ok(addr.addr().to_string())
}

/// One element's CPU time so far (ns, from /proc/PID/schedstat) and the
/// frames its ports received (from its control socket's status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeWork {
    pub node: String,
    pub cpu_ns: u64,
    pub frames: u64,
}

/// [`NodeWork`] of every element of the lab.
pub fn element_work(lab: &str) -> Result<Vec<NodeWork>> {
    let dir = d11_lab::RunDir::new(lab);
    let state = d11_lab::SupervisorState::load(&dir)?;
    let mut out = Vec::new();
    for (node, s) in state.nodes {
        let Some(pid) = s.pid else { continue };
        let cpu_ns = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
            .ok()
            .and_then(|t| t.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("reading /proc/{pid}/schedstat of {node}"))?;
        let st = d11_io::status(&dir.socket(&node), Duration::from_secs(1))?;
        let frames = st.ports.iter().map(|(_, p)| p.counters.rx_frames).sum();
        out.push(NodeWork {
            node,
            cpu_ns,
            frames,
        });
    }
    Ok(out)
}

/// One element's CPU and frames between two readings of [`element_work`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeLoad {
    pub cpu_ns: u64,
    pub rx_frames: u64,
    pub ns_per_frame: Option<f64>,
}

impl NodeLoad {
    /// Each element's CPU and frames from `before` to `after`.
    pub fn between(before: &[NodeWork], after: &[NodeWork]) -> BTreeMap<String, NodeLoad> {
        let mut out = BTreeMap::new();
        for a in after {
            let Some(b) = before.iter().find(|b| b.node == a.node) else {
                continue;
            };
            let (cpu_ns, rx_frames) = (
                a.cpu_ns.saturating_sub(b.cpu_ns),
                a.frames.saturating_sub(b.frames),
            );
            out.insert(
                a.node.clone(),
                NodeLoad {
                    cpu_ns,
                    rx_frames,
                    ns_per_frame: (rx_frames > 0).then(|| cpu_ns as f64 / rx_frames as f64),
                },
            );
        }
        out
    }

    /// CPU nanoseconds per frame of `nodes` together (all of them when
    /// `nodes` is empty).
    pub fn chain(loads: &BTreeMap<String, NodeLoad>, nodes: &[&str]) -> Option<f64> {
        let (mut cpu, mut frames) = (0u64, 0u64);
        for (n, l) in loads {
            if nodes.is_empty() || nodes.contains(&n.as_str()) {
                cpu += l.cpu_ns;
                frames += l.rx_frames;
            }
        }
        (frames > 0).then(|| cpu as f64 / frames as f64)
    }
}

/// Peak resident memory (VmHWM, KiB) of every element process of the lab.
pub fn peak_rss(lab: &str) -> Result<BTreeMap<String, Option<u64>>> {
    let state = d11_lab::SupervisorState::load(&d11_lab::RunDir::new(lab))?;
    let mut out = BTreeMap::new();
    for (node, s) in state.nodes {
        if let Some(pid) = s.pid {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let kib = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok());
            out.insert(node, kib);
        }
    }
    Ok(out)
}

/// The largest of a peak-RSS table, in MiB.
pub fn largest_mib(rss: &BTreeMap<String, Option<u64>>) -> Option<f64> {
    rss.values()
        .flatten()
        .map(|k| *k as f64 / 1024.0)
        .reduce(f64::max)
}

/// The client side of a bench's connections (`netns`): `tcp_tw_reuse` and
/// the ephemeral ports 1024-65535, so connections in TIME_WAIT do not run
/// the ports out at thousands of connections a second.
pub fn tune_client_side(netns: &str) -> Result<()> {
    let _netns = d11_io::NetnsGuard::enter(netns)?;
    // /proc/sys/net shows the namespace of the thread that opens it.
    for (key, value) in [
        ("net/ipv4/tcp_tw_reuse", "1"),
        ("net/ipv4/ip_local_port_range", "1024 65535"),
    ] {
        let p = std::path::Path::new("/proc/sys").join(key);
        std::fs::write(&p, value).with_context(|| format!("{netns}: writing {}", p.display()))?;
    }
    Ok(())
}

/// A server a bench runs in a process of its own, killed and reaped when
/// dropped, and killed by the kernel if the bench dies first (even by
/// SIGKILL: [`d11_lab::prepare_child`]).
pub struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl From<Child> for Daemon {
    fn from(child: Child) -> Daemon {
        Daemon(child)
    }
}

impl Daemon {
    /// Spawns `cmd`, its stdout and stderr to `log`; an error if it has
    /// exited 300 ms later, with what it logged.
    pub fn start(mut cmd: Command, log: &Path) -> Result<Daemon> {
        let out =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        d11_lab::prepare_child(&mut cmd);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("running {:?}", cmd.get_program()))?;
        let mut d = Daemon(child);
        std::thread::sleep(Duration::from_millis(300));
        if let Some(status) = d.0.try_wait()? {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            bail!("{:?} exited ({status}): {}", cmd.get_program(), text.trim());
        }
        Ok(d)
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_per_frame_is_taken_between_two_readings_per_element_and_for_a_chain() {
        let w = |node: &str, cpu_ns, frames| NodeWork {
            node: node.into(),
            cpu_ns,
            frames,
        };
        let before = [w("hosta", 1_000, 10), w("tor", 0, 0), w("gone", 5, 5)];
        let after = [w("hosta", 21_000, 30), w("tor", 500, 0), w("new", 9, 9)];
        let l = NodeLoad::between(&before, &after);
        assert_eq!(l.len(), 2, "{l:?}");
        assert_eq!(l["hosta"].ns_per_frame, Some(1_000.0));
        assert_eq!(l["tor"].ns_per_frame, None);
        assert_eq!(
            NodeLoad::chain(&l, &["hosta", "tor"]),
            Some(20_500.0 / 20.0)
        );
        assert_eq!(NodeLoad::chain(&l, &["tor"]), None);
    }

    #[test]
    fn iperf3_json_is_read_for_rates_and_errors() {
        // iperf3 3.12 -J, trimmed: a UDP run and a refused connection.
        let udp: Iperf3 = serde_json::from_str(
            r#"{"start":{},"end":{"sum":{"seconds":2.0,"packets":1000,"lost_packets":250,"lost_percent":25}}}"#,
        )
        .unwrap();
        let u = udp.udp(5);
        assert_eq!(
            (u.sent_pps(), u.received_pps(), u.loss()),
            (500.0, 375.0, 0.25)
        );
        assert!(udp.tcp_mbit_s().is_err());
        let e: Iperf3 = serde_json::from_str(
            r#"{"start":{},"intervals":[],"end":{},"error":"unable to connect to server: Connection refused"}"#,
        )
        .unwrap();
        assert!(e.error.unwrap().contains("refused"));
    }

    #[test]
    fn the_server_address_is_the_server_nodes_first_port() {
        let t = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../netns/bench-router.toml"
        ));
        let a: std::net::Ipv4Addr = server_address(t).unwrap().parse().unwrap();
        assert!(!a.is_unspecified());
    }
}
