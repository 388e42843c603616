//! `d11 bench dns`: the lab's DNS servers against Debian's, each pair in
//! the same namespace of one lab, in one run (docs/dns.md):
//!
//! - **warm**: `dnsperf` queries/s against the carrier's resolver and
//!   against `unbound` (one thread, iterator only, from the same root
//!   hints) beside it in its namespace, both with the same names cached,
//!   rounds alternating; goal ≥ 1.0×;
//! - **cold**: one whole resolution of `www.geektime.com` (root, `.com`,
//!   the shop's server, its CNAME into the GSLB's zone, the GSLB) after
//!   each resolver has emptied its cache (our control socket's `flush`,
//!   `unbound-control flush_zone .` and `flush_infra all`) and the same
//!   pause, which of the two goes first alternating, µs, the median of the
//!   rounds; goal ≤ 1.0×;
//! - **authoritative**: `dnsperf` queries/s against the shop's server
//!   (`dns-shop`) and against `nsd` serving the same zone files beside it,
//!   rounds alternating; goal ≥ 1.0×.
//!
//! On two shared CPUs dnsperf itself takes about one, so queries/s is
//! partly the client's: each run also reads the server's CPU time
//! (/proc/PID/stat, every process of it) and gives the CPU per answered
//! query, which the client's speed does not change.

use crate::lab::{Daemon, LabGuard};
use crate::{finite, median, proc_ticks, write_json, Figure, Goal, TICKS_PER_S};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Options of `d11 bench dns`.
#[derive(Debug, Clone, clap::Args)]
pub struct DnsArgs {
    /// Rounds of each dnsperf run (the median is kept).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Seconds of each dnsperf run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// dnsperf's clients (sockets) at once.
    #[arg(long, default_value_t = 4)]
    pub clients: u32,
    /// Cold resolutions timed for each resolver.
    #[arg(long, default_value_t = 20)]
    pub cold: u32,
    /// Where the topologies are.
    #[arg(long, default_value = "netns")]
    pub topologies: PathBuf,
    /// Also write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// What `d11 bench dns` measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DnsBench {
    /// dnsperf against our resolver, warm, queries/s (median).
    pub resolver_qps: Option<f64>,
    pub unbound_qps: Option<f64>,
    pub resolver_rounds: Vec<Option<f64>>,
    pub unbound_rounds: Vec<Option<f64>>,
    /// One cold resolution of the shop's name, µs (median).
    pub resolver_cold_us: Option<f64>,
    pub unbound_cold_us: Option<f64>,
    /// dnsperf against dns-shop and nsd, queries/s (median).
    pub auth_qps: Option<f64>,
    pub nsd_qps: Option<f64>,
    /// Server CPU per answered query in the warm runs, µs (median).
    pub resolver_cpu_us: Option<f64>,
    pub unbound_cpu_us: Option<f64>,
    /// The same for dns-shop and nsd.
    pub auth_cpu_us: Option<f64>,
    pub nsd_cpu_us: Option<f64>,
}

impl DnsBench {
    pub fn figures(&self) -> Vec<Figure> {
        vec![
            Figure {
                figure: "resolver, warm cache: dnsperf queries/s".into(),
                value: self.resolver_qps,
                baseline: "unbound beside it (1 thread, iterator)",
                base: self.unbound_qps,
                goal: Goal::ratio_at_least(1.0),
            },
            Figure {
                figure: "resolver, cold: root → .com → shop → GSLB, µs".into(),
                value: self.resolver_cold_us,
                baseline: "unbound beside it, cache flushed",
                base: self.unbound_cold_us,
                goal: Goal::ratio_at_most(1.0),
            },
            Figure {
                figure: "resolver, warm cache: CPU per answer, µs".into(),
                value: self.resolver_cpu_us,
                baseline: "unbound beside it (1 thread, iterator)",
                base: self.unbound_cpu_us,
                goal: Goal::ratio_at_most(1.0),
            },
            Figure {
                figure: "authoritative (dns-shop): dnsperf queries/s".into(),
                value: self.auth_qps,
                baseline: "nsd beside it, the same zones",
                base: self.nsd_qps,
                goal: Goal::ratio_at_least(1.0),
            },
            Figure {
                figure: "authoritative (dns-shop): CPU per answer, µs".into(),
                value: self.auth_cpu_us,
                baseline: "nsd beside it, the same zones",
                base: self.nsd_cpu_us,
                goal: Goal::ratio_at_most(1.0),
            },
        ]
    }
}

/// The carrier's resolver and the shop's server in double11.toml.
const RESOLVER: (&str, &str) = ("resolver", "198.18.2.2");
const AUTH: (&str, &str) = ("dns-shop", "198.18.1.2");
/// Where the peers listen beside ours.
const PEER_PORT: &str = "5353";
/// The lab's root hints, as our resolver's config gives them.
const ROOT_HINTS: &str =
    ".              518400 IN NS a.root.lab.\na.root.lab.    518400 IN A  198.18.0.2\n";

/// A peer daemon in a node of the lab, killed when dropped.
pub struct Peer {
    _daemon: Daemon,
}

impl Peer {
    /// `d11 exec --name LAB NODE -- ARGV…` in the background, ready once
    /// `dig @ADDR -p PORT NAME TYPE` (from the node) answers something.
    fn start(exe: &Path, lab: &str, node: &str, argv: &[&str], ready: [&str; 4]) -> Result<Peer> {
        let mut args = vec!["exec", "--name", lab, node, "--"];
        args.extend_from_slice(argv);
        let child = Command::new(exe)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", argv[0]))?;
        let peer = Peer {
            _daemon: Daemon::from(child),
        };
        let [addr, port, name, rtype] = ready;
        for _ in 0..50 {
            let o = Command::new(exe)
                .args([
                    "exec", "--name", lab, node, "--", "dig", "+short", "+tries=1",
                ])
                .args(["+time=1", "-p", port, &format!("@{addr}"), name, rtype])
                .output()?;
            if o.status.success() && !o.stdout.is_empty() {
                return Ok(peer);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("{} in {node} never answered", argv[0])
    }

    /// Debian's `unbound` in `node` on `addr@port`: one thread, the
    /// iterator alone (no validator), the lab's root hints, answering
    /// anyone; remote control on a Unix socket in `dir`.
    pub fn unbound(
        exe: &Path,
        lab: &str,
        node: &str,
        dir: &Path,
        addr: &str,
        port: &str,
    ) -> Result<Peer> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("root.hints"), ROOT_HINTS)?;
        let conf = format!(
            "server:\n  interface: {addr}@{port}\n  access-control: 0.0.0.0/0 allow\n  \
             do-ip6: no\n  do-not-query-localhost: no\n  root-hints: {d}/root.hints\n  \
             module-config: \"iterator\"\n  chroot: \"\"\n  username: \"\"\n  \
             directory: {d}\n  pidfile: {d}/unbound.pid\n  logfile: {d}/unbound.log\n  \
             use-syslog: no\n  num-threads: 1\n  verbosity: 1\n\
             remote-control:\n  control-enable: yes\n  control-interface: {d}/unbound.ctl\n  \
             control-use-cert: no\n",
            d = dir.display()
        );
        let path = dir.join("unbound.conf");
        std::fs::write(&path, conf)?;
        let path = path.to_string_lossy();
        Peer::start(
            exe,
            lab,
            node,
            &["unbound", "-d", "-c", &path],
            [addr, port, "a.root.lab", "A"],
        )
    }

    /// Debian's `nsd` in `node` on `addr@port`, serving `zones` (origin,
    /// master-file text), one server process, response rate limiting off
    /// (Debian's nsd limits each /24 to 200 answers a second, which would
    /// make dnsperf's rate nsd's limit).
    pub fn nsd(
        exe: &Path,
        lab: &str,
        node: &str,
        dir: &Path,
        addr: &str,
        port: &str,
        zones: &[(String, String)],
    ) -> Result<Peer> {
        std::fs::create_dir_all(dir)?;
        let mut conf = format!(
            "server:\n  ip-address: {addr}@{port}\n  username: \"\"\n  database: \"\"\n  \
             zonelistfile: {d}/zone.list\n  xfrdfile: {d}/xfrd.state\n  pidfile: {d}/nsd.pid\n  \
             zonesdir: {d}\n  logfile: {d}/nsd.log\n  server-count: 1\n  \
             rrl-ratelimit: 0\n\
             remote-control:\n  control-enable: no\n",
            d = dir.display()
        );
        for (i, (origin, text)) in zones.iter().enumerate() {
            let file = format!("z{i}.zone");
            std::fs::write(dir.join(&file), format!("$ORIGIN {origin}\n{text}"))?;
            conf += &format!("zone:\n  name: \"{origin}\"\n  zonefile: {file}\n");
        }
        let path = dir.join("nsd.conf");
        std::fs::write(&path, conf)?;
        let path = path.to_string_lossy();
        let soa = zones.first().map_or(".", |z| z.0.as_str());
        Peer::start(
            exe,
            lab,
            node,
            &["nsd", "-d", "-c", &path],
            [addr, port, soa, "SOA"],
        )
    }
}

/// The zones a `dns-auth` node of the topology serves.
fn zones_of(topology: &Path, node: &str) -> Result<Vec<(String, String)>> {
    let topo = d11_lab::Topology::load(topology)?;
    let n = topo
        .node(node)
        .with_context(|| format!("{} has no node {node}", topology.display()))?;
    let s: d11_apps::dns::AuthSettings = n
        .config
        .clone()
        .try_into()
        .with_context(|| format!("{node}'s config"))?;
    Ok(s.zones.into_iter().map(|z| (z.origin, z.text)).collect())
}

/// What one dnsperf run measured.
struct Run {
    qps: f64,
    /// The server's CPU per completed query, µs.
    cpu_us: f64,
}

/// dnsperf from `node` against `addr`:`port` with the queries in `file`,
/// the CPU time of the server's processes `server` read around it.
fn dnsperf(
    lab: &LabGuard,
    (node, addr, port): (&str, &str, &str),
    server: &[u32],
    file: &Path,
    a: &DnsArgs,
) -> Result<Run> {
    let (secs, clients) = (a.seconds.to_string(), a.clients.to_string());
    let file = file.to_string_lossy();
    let ticks = || server.iter().filter_map(|&p| proc_ticks(p)).sum::<u64>();
    let before = ticks();
    let o = lab
        .exec(
            node,
            &[
                "dnsperf", "-s", addr, "-p", port, "-d", &file, "-l", &secs, "-c", &clients,
            ],
        )
        .output()
        .context("running dnsperf (Debian's dnsperf package)")?;
    let cpu_s = (ticks() - before) as f64 / TICKS_PER_S;
    let out = String::from_utf8_lossy(&o.stdout);
    let field = |name: &str| -> Option<f64> {
        let v = out.lines().find_map(|l| l.trim().strip_prefix(name))?;
        v.split_whitespace().next()?.parse().ok()
    };
    let (Some(qps), Some(done)) = (field("Queries per second:"), field("Queries completed:"))
    else {
        bail!("dnsperf printed no rate: {}", out.trim());
    };
    Ok(Run {
        qps,
        cpu_us: cpu_s * 1e6 / done.max(1.0),
    })
}

/// The processes whose command line has `arg` (a daemon and the children
/// it forked, as nsd's server process).
fn pids_with_arg(arg: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|&b| b == 0).any(|a| a == arg.as_bytes()))
        })
        .collect()
}

/// The process of `node`'s app in `lab`.
fn node_pid(lab: &LabGuard, node: &str) -> Result<u32> {
    let state = d11_lab::SupervisorState::load(&d11_lab::RunDir::new(&lab.name))?;
    state
        .nodes
        .get(node)
        .and_then(|s| s.pid)
        .with_context(|| format!("{node} has no pid"))
}

/// `www.geektime.com A`, RD set, id `id` (as a stub sends it).
fn query(id: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in ["www", "geektime", "com"] {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The time from a query to `server` to its answer, µs, from `sock`.
fn time_one(sock: &UdpSocket, server: SocketAddr, id: u16) -> Result<f64> {
    let t0 = Instant::now();
    sock.send_to(&query(id), server)?;
    let mut buf = [0u8; 4096];
    loop {
        let (n, from) = sock.recv_from(&mut buf).context("no answer within 5 s")?;
        if from == server && n >= 12 && buf[..2] == id.to_be_bytes() {
            return Ok(t0.elapsed().as_secs_f64() * 1e6);
        }
    }
}

/// How long the lab idles before each timed cold resolution, so that each
/// starts from the same state: a resolution that follows another at once
/// finds every router and server on its path awake (its first query to the
/// root took 100 µs instead of 300), and whichever resolver went second won.
const COLD_PAUSE: Duration = Duration::from_millis(50);

/// Median cold resolution times (ours, unbound's), µs: each round times one
/// resolution from each, each after emptying that resolver's cache and
/// [`COLD_PAUSE`], ours first in even rounds and unbound first in odd ones.
fn cold(lab: &LabGuard, unbound_dir: &Path, rounds: u32) -> Result<(f64, f64)> {
    let dir = d11_lab::RunDir::new(&lab.name);
    let ctl = unbound_dir.join("unbound.conf");
    let ctl = ctl.to_string_lossy();
    let _in = d11_io::NetnsGuard::enter(&d11_lab::netns_name(&lab.name, RESOLVER.0))?;
    let sock = UdpSocket::bind((RESOLVER.1.parse::<Ipv4Addr>()?, 0))?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    let ours: SocketAddr = format!("{}:53", RESOLVER.1).parse()?;
    let theirs: SocketAddr = format!("{}:{PEER_PORT}", RESOLVER.1).parse()?;
    let flush_ours = || -> Result<()> {
        let v: serde_json::Value =
            d11_io::ask(&dir.socket(RESOLVER.0), "flush", Duration::from_secs(2))?;
        if v.get("flushed").is_none() {
            bail!("the resolver did not flush: {v}");
        }
        Ok(())
    };
    let flush_theirs = || -> Result<()> {
        for cmd in [&["flush_zone", "."][..], &["flush_infra", "all"]] {
            let o = Command::new("unbound-control")
                .args(["-c", &ctl])
                .args(cmd)
                .output()
                .context("running unbound-control")?;
            if !o.status.success() {
                bail!(
                    "unbound-control: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
            }
        }
        Ok(())
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        let id = (i as u16).wrapping_mul(2);
        for us in [i % 2 == 0, i % 2 == 1] {
            if us {
                flush_ours()?;
                std::thread::sleep(COLD_PAUSE);
                a.push(time_one(&sock, ours, id)?);
            } else {
                flush_theirs()?;
                std::thread::sleep(COLD_PAUSE);
                b.push(time_one(&sock, theirs, id.wrapping_add(1))?);
            }
        }
    }
    Ok((median(a), median(b)))
}

pub fn dns(args: &DnsArgs) -> Result<()> {
    crate::need_root("d11 bench dns")?;
    let exe = crate::lab::d11_exe()?;
    let topo = args.topologies.join("double11.toml");
    let zones = zones_of(&topo, AUTH.0)?;
    let scratch = crate::lab::Scratch::new("dns")?;
    let pid = std::process::id() % 100_000;
    let (lab, _) = LabGuard::up(&exe, &topo, &format!("bdns{pid}"))?;
    let unbound_dir = scratch.0.join("unbound");
    let _unbound = Peer::unbound(
        &exe,
        &lab.name,
        RESOLVER.0,
        &unbound_dir,
        RESOLVER.1,
        PEER_PORT,
    )?;
    let nsd_dir = scratch.0.join("nsd");
    let _nsd = Peer::nsd(&exe, &lab.name, AUTH.0, &nsd_dir, AUTH.1, PEER_PORT, &zones)?;
    let mut r = DnsBench::default();

    // Cold first, while the GSLB's answers are not cached anywhere.
    let (ours, theirs) = cold(&lab, &unbound_dir, args.cold)?;
    r.resolver_cold_us = finite(ours);
    r.unbound_cold_us = finite(theirs);

    // Warm: the same four names cached in both.
    let warm = scratch.0.join("warm.txt");
    std::fs::write(
        &warm,
        "www.geektime.com A\nwww.geektime.com.gslb.d11cloud.com A\ngeektime.com NS\na.root.lab A\n",
    )?;
    let auth = scratch.0.join("auth.txt");
    std::fs::write(
        &auth,
        "www.geektime.com A\ngeektime.com NS\nnope.geektime.com A\ngslb.d11cloud.com A\n",
    )?;
    for port in ["53", PEER_PORT] {
        for name in ["www.geektime.com", "geektime.com", "a.root.lab"] {
            lab.exec(
                RESOLVER.0,
                &[
                    "dig",
                    "+short",
                    "-p",
                    port,
                    &format!("@{}", RESOLVER.1),
                    name,
                ],
            )
            .output()?;
        }
    }
    // The peers' processes, by the config file on their command line.
    let unbound_conf = unbound_dir
        .join("unbound.conf")
        .to_string_lossy()
        .into_owned();
    let nsd_conf = nsd_dir.join("nsd.conf").to_string_lossy().into_owned();
    let servers = [
        (RESOLVER, "53", vec![node_pid(&lab, RESOLVER.0)?], &warm),
        (RESOLVER, PEER_PORT, pids_with_arg(&unbound_conf), &warm),
        (AUTH, "53", vec![node_pid(&lab, AUTH.0)?], &auth),
        (AUTH, PEER_PORT, pids_with_arg(&nsd_conf), &auth),
    ];
    // Each pair (ours, Debian's) runs back to back, ours first in even
    // rounds and second in odd ones, so neither always meets the machine
    // as the other left it.
    let mut runs: [Vec<Run>; 4] = Default::default();
    for round in 0..args.rounds {
        for [a, b] in [[0, 1], [2, 3]] {
            let order = if round % 2 == 0 { [a, b] } else { [b, a] };
            for i in order {
                let (node, port, pids, file) = &servers[i];
                runs[i].push(dnsperf(&lab, (node.0, node.1, port), pids, file, args)?);
            }
        }
    }
    let qps = |i: usize| finite(median(runs[i].iter().map(|r| r.qps).collect()));
    let cpu = |i: usize| finite(median(runs[i].iter().map(|r| r.cpu_us).collect()));
    r.resolver_rounds = runs[0].iter().map(|r| finite(r.qps)).collect();
    r.unbound_rounds = runs[1].iter().map(|r| finite(r.qps)).collect();
    (r.resolver_qps, r.unbound_qps, r.auth_qps, r.nsd_qps) = (qps(0), qps(1), qps(2), qps(3));
    (
        r.resolver_cpu_us,
        r.unbound_cpu_us,
        r.auth_cpu_us,
        r.nsd_cpu_us,
    ) = (cpu(0), cpu(1), cpu(2), cpu(3));
    crate::print_figures(&r.figures());
    write_json(args.json.as_deref(), &r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timed_query_is_a_stubs_query_for_the_shop() {
        // /usr/bin/python3 -c "from scapy.all import DNS,DNSQR;
        //   print(bytes(DNS(id=4,rd=1,qd=DNSQR(qname='www.geektime.com',qtype='A'))).hex())"
        let scapy = "00040100000100000000000003777777086765656b74696d6503636f6d0000010001";
        let hex: String = query(4).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, scapy);
    }
}
