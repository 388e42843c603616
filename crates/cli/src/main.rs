//! `d11`: the double11 lab's command.
//!
//! User commands (`up`, `down`, `status`, `exec`, `capture`, `impair`, `order`, `trace`, `tcpview`, `demo`, `bench`) and the
//! two the lab runs itself (`supervise`, and `run` for the apps; the
//! elements run the package's other program, `d11-element`). This crate holds no
//! protocol logic: topology and namespaces are `d11-lab`'s, frames are the
//! elements', I/O is `d11-io`'s, the benches are `d11-bench`'s.

mod apps;
mod capture;
mod cdn;
mod converge;
mod demo;
mod demo_attach;
mod demo_bgp;
mod demo_dns;
mod demo_vpn;
mod impair;
mod lifecycle;
mod load;
mod order;
mod run;
mod show;
mod status;
mod tcpview;
mod trace;
mod vpn_keys;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// double11: a real network lab replaying one Singles' Day order with genuine frames.
#[derive(Parser)]
#[command(name = "d11", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// `--name LAB`, shared by every command that works on one lab.
#[derive(clap::Args, Clone, Debug)]
pub struct LabArg {
    /// The lab's name: namespaces are LAB-NODE, state is in /run/d11/LAB/.
    #[arg(long = "name", short = 'n', default_value = "d11", value_name = "LAB")]
    pub name: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the namespaces and wires of a topology, start every element, wait until ready.
    Up {
        /// The topology file.
        #[arg(
            short = 't',
            long = "topology",
            default_value = "netns/double11.toml",
            value_name = "FILE"
        )]
        topology: PathBuf,
        #[command(flatten)]
        lab: LabArg,
        /// Take the lab down when process PID exits, even killed by SIGKILL
        /// (what tests pass, so a killed test leaves no namespace behind).
        #[arg(long, value_name = "PID")]
        owner: Option<u32>,
        /// Record every wire into this pcapng from before the elements start until the routes have converged (the BGP sessions' first messages).
        #[arg(long, value_name = "FILE.pcapng")]
        capture: Option<PathBuf>,
    },
    /// Stop the elements and remove every namespace, wire and process of a lab (safe to repeat).
    Down {
        #[command(flatten)]
        lab: LabArg,
        /// Take down every lab on this machine.
        #[arg(long, conflicts_with = "name")]
        all: bool,
    },
    /// Nodes, roles, pids, restarts and per-port counters of a lab.
    Status {
        #[command(flatten)]
        lab: LabArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// An element's own tables: FIB and ARP cache, MAC table, bearers, NAT entries…
    Show {
        #[command(flatten)]
        lab: LabArg,
        /// The element, e.g. `c1`.
        node: String,
        /// One table of its report (e.g. `fib`, `arp`, `macs`); all of them if omitted.
        table: Option<String>,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Attach a phone (its baseband app) and wait until it has its address (docs/attach.md).
    Attach {
        #[command(flatten)]
        lab: LabArg,
        /// The phone's host.
        #[arg(default_value = "ue")]
        node: String,
    },
    /// Detach a phone: Detach Request, its session deleted, its address gone.
    Detach {
        #[command(flatten)]
        lab: LabArg,
        /// The phone's host.
        #[arg(default_value = "ue")]
        node: String,
    },
    /// The phone looks at the product page's pictures through the CDN: the name's chain, the edge, HIT/MISS at edge and parent, Age, time.
    Browse(cdn::BrowseArgs),
    /// Make a CDN cache forget an object, so the next GET of it is a miss (docs/cdn.md).
    Purge {
        #[command(flatten)]
        lab: LabArg,
        /// The cache's host, e.g. `edge-a2`.
        node: String,
        /// The object: `static.geektime.com/images/cover.jpg` or its https:// URL.
        key: String,
    },
    /// Run a command inside a node's namespace (like `ip netns exec`).
    Exec {
        #[command(flatten)]
        lab: LabArg,
        /// The node, e.g. `phone`.
        node: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        cmd: Vec<String>,
    },
    /// Capture every wire of a lab into one pcapng, one interface per wire named `node:port`.
    Capture {
        #[command(flatten)]
        lab: LabArg,
        /// The pcapng file to write.
        #[arg(short = 'w', value_name = "FILE.pcapng")]
        file: PathBuf,
        /// Stop after this many seconds (default: when CMD ends, or on Ctrl-C).
        #[arg(long)]
        seconds: Option<f64>,
        /// Run this command while capturing and stop when it ends.
        #[arg(last = true, value_name = "CMD")]
        cmd: Vec<String>,
    },
    /// Set, clear or show a wire's impairments (loss, delay, jitter, rate, …) while the lab runs.
    Impair(impair::ImpairArgs),
    /// The phone app: resolve the shop, TLS to the lab root, POST /purchaseOrder, print the reply.
    Order(order::OrderArgs),
    /// Many simulated phones behind the eNodeB (own UE address, bearer, smoltcp stack and TLS each), placing orders at once.
    Load(load::LoadArgs),
    /// Place one order while capturing every wire; print its request hop by hop, checked against the topology.
    Trace(trace::TraceArgs),
    /// The phone's TCP connection on one wire: states, seq/ack, window, retransmissions; a tcptrace SVG.
    Tcpview(tcpview::TcpViewArgs),
    /// Up, order, trace and down, narrated chapter by chapter from what actually happened.
    Demo(demo::DemoArgs),
    /// Benchmarks, each against baselines measured in the same run.
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Keep a lab's element processes running (started by `d11 up`).
    #[command(hide = true)]
    Supervise {
        #[command(flatten)]
        lab: LabArg,
        /// Take the lab down when this process (PID:STARTTIME) exits.
        #[arg(long)]
        owner: Option<d11_lab::Owner>,
    },
    /// Run one app (or element) of a lab in its namespace (the supervisor starts it for the apps).
    #[command(hide = true)]
    Run {
        #[command(flatten)]
        lab: LabArg,
        #[arg(long)]
        node: String,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// iperf3 TCP and 64-byte UDP through four routers vs. kernel forwarding and null elements.
    Forward(d11_bench::forward::ForwardArgs),
    /// iperf3 TCP and 64-byte UDP vm-lb → vm-ctl across two vSwitches vs. null elements and kernel vxlan.
    Cloud(d11_bench::cloud::CloudArgs),
    /// iperf3 TCP and 64-byte UDP ue → server through enb, sgw and pgw (GTP-U, NAT) vs. null elements.
    Mobile(d11_bench::mobile::MobileArgs),
    /// Orders/s and p50/p99 latency of N phone-app clients over the whole path vs. straight to a controller, and l4lb vs. haproxy.
    Order(d11_bench::order::OrderBenchArgs),
    /// RPC round trips/s and calls/s with K in flight on one connection vm-a → vm-b across two vSwitches vs. loopback in vm-a.
    Rpc(d11_bench::rpc::RpcArgs),
    /// Orders/s and latency against 1, 10, 100, 1000 simulated phones (d11 load) vs. the direct baseline.
    Phones(d11_bench::phones::PhonesArgs),
    /// 10,000 simulated phones attaching at once (d11 load --attach-only): attaches/s, p50/p99, CPU and RSS per attach in enb/mme/sgw/pgw/hss, vs. one phone alone.
    Attach(d11_bench::attach::AttachArgs),
    /// BGP: 100k prefixes through our router vs. BIRD in its place (time, RSS), the data plane with 100k routes vs. 10, an order again after the preferred path is cut vs. the hold time.
    Bgp(d11_bench::bgp::BgpArgs),
    /// The CDN: wrk on our warm edge vs. nginx proxy_cache (requests/s, p99), a miss through edge, parent and origin vs. the same through nginx caches; loopback, no root.
    Cdn(d11_bench::cdn::CdnArgs),
    /// The l4lb vs. haproxy alone on one namespace's loopback: connections/s and CPU per connection at 1, 8, 32, 1,000 concurrent, and a bulk connection.
    Lb(d11_bench::lb::LbArgs),
    /// The elements' own logic alone, no driver and no root: ns per frame of each role beside a null element, as the other benches report it.
    Core(d11_bench::cores::CoreArgs),
    /// The IPsec VPN between the regions: iperf3 through it vs. routing without ESP, ESP alone, the gateway's CPU vs. null
    Vpn(d11_bench::vpn::VpnArgs),
    /// DNS: the carrier's resolver vs. unbound beside it (warm queries/s, a cold walk from the root), the shop's authoritative server vs. nsd, all with dnsperf.
    Dns(d11_bench::dns::DnsArgs),
    /// Every bench above in one run, then one report (DIR/bench.md and bench.json), each figure beside its same-run baseline.
    Report(d11_bench::report::ReportArgs),
}

fn main() -> ExitCode {
    if let Some((lab, node)) = supervised_run(std::env::args_os().skip(1)) {
        return exit(run::run(&lab, &node).map(|_| ExitCode::SUCCESS));
    }
    let cli = Cli::parse();
    // A server (an app of the lab, the servers a bench runs in-process)
    // keeps Rust's ignored SIGPIPE: rustls writes TLS records with writev,
    // which unlike send() has no MSG_NOSIGNAL, so a peer that reset its
    // connection would kill the whole process.
    if !matches!(cli.cmd, Cmd::Run { .. } | Cmd::Bench(_)) {
        d11_io::default_sigpipe();
    }
    let res: Result<ExitCode> = match cli.cmd {
        Cmd::Up {
            topology,
            lab,
            owner,
            capture,
        } => lifecycle::up(&topology, &lab.name, owner, capture.as_deref())
            .map(|_| ExitCode::SUCCESS),
        Cmd::Down { lab, all } => lifecycle::down(&lab.name, all).map(|_| ExitCode::SUCCESS),
        Cmd::Status { lab, json } => status::status(&lab.name, json).map(|_| ExitCode::SUCCESS),
        Cmd::Show {
            lab,
            node,
            table,
            json,
        } => show::show(&lab.name, &node, table.as_deref(), json).map(|_| ExitCode::SUCCESS),
        Cmd::Exec { lab, node, cmd } => lifecycle::exec(&lab.name, &node, &cmd),
        Cmd::Browse(a) => cdn::browse(&a),
        Cmd::Purge { lab, node, key } => {
            cdn::purge(&lab.name, &node, &key).map(|_| ExitCode::SUCCESS)
        }
        Cmd::Attach { lab, node } => {
            lifecycle::phone(&lab.name, &node, true).map(|_| ExitCode::SUCCESS)
        }
        Cmd::Detach { lab, node } => {
            lifecycle::phone(&lab.name, &node, false).map(|_| ExitCode::SUCCESS)
        }
        Cmd::Capture {
            lab,
            file,
            seconds,
            cmd,
        } => capture::capture(&lab.name, &file, seconds, &cmd),
        Cmd::Impair(args) => impair::impair(&args).map(|_| ExitCode::SUCCESS),
        Cmd::Order(args) => order::order(&args),
        Cmd::Load(args) => load::load(&args),
        Cmd::Trace(args) => trace::run(&args),
        Cmd::Tcpview(args) => tcpview::run(&args),
        Cmd::Demo(args) => demo::demo(&args).map(|_| ExitCode::SUCCESS),
        Cmd::Bench(cmd) => bench(cmd).map(|_| ExitCode::SUCCESS),
        Cmd::Supervise { lab, owner } => {
            lifecycle::supervise(&lab.name, owner).map(|_| ExitCode::SUCCESS)
        }
        Cmd::Run { lab, node } => run::run(&lab.name, &node).map(|_| ExitCode::SUCCESS),
    };
    exit(res)
}

/// The supervisor's `d11 run --name LAB --node NODE`, one per app, read
/// without building the whole command tree: clap's tree runs code of every
/// subcommand, whose pages of the program file each process would then hold
/// (docs/bgp.md § Figures).
fn supervised_run(mut args: impl Iterator<Item = std::ffi::OsString>) -> Option<(String, String)> {
    if args.next()? != "run" {
        return None;
    }
    d11_cli::element::args(args)
}

/// The exit code, the error printed first if there is one.
fn exit(res: Result<ExitCode>) -> ExitCode {
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("d11: {}", d11_cli::one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// Refuses to go on without root, in one line.
pub use d11_bench::need_root;

/// `d11 bench …`: the benches are `d11-bench`'s.
fn bench(cmd: BenchCmd) -> Result<()> {
    use d11_bench::*;
    match cmd {
        BenchCmd::Forward(a) => forward::forward(&a),
        BenchCmd::Cloud(a) => cloud::cloud(&a),
        BenchCmd::Mobile(a) => mobile::mobile(&a),
        BenchCmd::Order(a) => order::order(&a),
        BenchCmd::Rpc(a) => rpc::rpc(&a),
        BenchCmd::Phones(a) => phones::phones(&a),
        BenchCmd::Attach(a) => attach::attach(&a),
        BenchCmd::Bgp(a) => bgp::bgp(&a),
        BenchCmd::Cdn(a) => cdn::cdn(&a),
        BenchCmd::Lb(a) => lb::lb(&a),
        BenchCmd::Core(a) => cores::core(&a),
        BenchCmd::Vpn(a) => vpn::vpn(&a),
        BenchCmd::Dns(a) => dns::dns(&a),
        BenchCmd::Report(a) => report::report(&a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_supervisors_run_skips_the_command_tree() {
        let argv = |s: &str| {
            s.split(' ')
                .map(std::ffi::OsString::from)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            supervised_run(argv("run --name lab1 --node mid").into_iter()),
            Some(("lab1".into(), "mid".into()))
        );
        // The arguments after `run` are the element program's (element.rs).
        assert_eq!(
            supervised_run(argv("status --name lab1 --node x").into_iter()),
            None
        );
        let p = Cli::try_parse_from(argv("d11 run --name lab1 --node mid")).unwrap();
        assert!(matches!(p.cmd, Cmd::Run { lab, node } if lab.name == "lab1" && node == "mid"));
    }

    #[test]
    fn each_bench_command_of_the_report_parses_as_the_bench_expects() {
        use d11_bench::report::BENCHES;
        use std::path::Path;
        let (j, t) = (Path::new("/o/x.json"), Path::new("netns"));
        for b in BENCHES {
            for quick in [false, true] {
                let mut argv = vec!["d11".to_string()];
                argv.extend(b.args(quick, j, t));
                Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{}: {e}", argv.join(" ")));
            }
        }
    }
}
