//! `d11 load`: many simulated phones behind the eNodeB (docs/load.md).
//!
//! The phones are [`d11_apps::ran::Ran`]; this file is their driver: it
//! finds the phones' addresses in the topology (the enb's first
//! `config.bearer_ranges`), enters the UE host's namespace, opens an
//! AF_PACKET socket on its `eth0` (the radio TAP the enb holds), and moves
//! frames between that socket and the phones with the time, printing a
//! progress line on stderr and, at the end, the outcome of every order.

use crate::{need_root, LabArg};
use anyhow::{bail, Context, Result};
use d11_apps::ran::{Ran, RanConfig, RanReport};
use d11_lab::RunDir;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Options of `d11 load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    #[command(flatten)]
    pub lab: LabArg,
    /// Simulated phones, each with its own UE address from the bearer range.
    #[arg(long, default_value_t = 1)]
    pub phones: usize,
    /// Orders each phone places, one after the other.
    #[arg(long, default_value_t = 1)]
    pub orders: usize,
    /// Phones with an order in flight at once (default: all of them; 100 with --attach-only).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Milliseconds for each order: connect, TLS, request and reply.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Only attach: each phone opens one TCP connection to the shop
    /// (handshake, then close), so every bearer carries traffic and the
    /// pgw holds a NAT entry per phone; prints the elements' RSS.
    #[arg(long)]
    pub attach_only: bool,
    /// Seeds the phones' stacks (initial sequence numbers, local ports);
    /// default from the clock, so a run right after another does not reuse
    /// its 4-tuples while the server still holds them in TIME_WAIT. The
    /// report prints it, to repeat a run.
    #[arg(long)]
    pub seed: Option<u64>,
    /// The shop's name (resolved through ue's hosts file).
    #[arg(long, default_value = "www.geektime.com")]
    pub host: String,
    /// Print the report (and every order) as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The phones' addresses: the enb's first bearer range.
struct Range {
    first: Ipv4Addr,
    count: usize,
}

fn bearer_range(topo: &d11_lab::Topology) -> Result<Range> {
    let enb = topo.node("enb").context("the lab has no node enb")?;
    let r = enb
        .config
        .get("bearer_ranges")
        .and_then(|v| v.as_array())
        .and_then(|a| a.first())
        .and_then(|v| v.as_table())
        .context(
            "the enb has no config.bearer_ranges: d11 load's phones need one (docs/load.md)",
        )?;
    let first: Ipv4Addr = r
        .get("ue_ip")
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse().ok())
        .context("enb config.bearer_ranges[0].ue_ip")?;
    let count = r
        .get("count")
        .and_then(|v| v.as_integer())
        .context("enb config.bearer_ranges[0].count")? as usize;
    Ok(Range { first, count })
}

/// VmRSS and VmHWM (kB) of the mobile elements, with the pids the
/// supervisor keeps in /run/d11/LAB/supervisor.json (not `d11 status`,
/// whose report would make the pgw build a JSON value per NAT entry and
/// raise the very RSS being measured).
fn element_memory(lab: &str) -> Vec<(String, u64, u64)> {
    let Ok(sup) = d11_lab::SupervisorState::load(&d11_lab::RunDir::new(lab)) else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    for name in ["enb", "sgw", "pgw"] {
        let Some(pid) = sup.nodes.get(name).and_then(|n| n.pid) else {
            continue;
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kb = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
                .unwrap_or(0)
        };
        rows.push((name.to_string(), kb("VmRSS:"), kb("VmHWM:")));
    }
    rows
}

/// Entries in the pgw's NAT table and how many distinct UE addresses they hold.
fn nat_entries(lab: &str, first: Ipv4Addr, phones: usize) -> Option<(usize, usize)> {
    let exe = std::env::current_exe().ok()?;
    let out = std::process::Command::new(exe)
        .args(["show", "--name", lab, "pgw", "nat", "--json"])
        .output()
        .ok()?;
    let rows: Vec<d11_core::nat::NatEntryView> = serde_json::from_slice(&out.stdout).ok()?;
    let lo = u32::from(first);
    let mut ues = std::collections::HashSet::new();
    for r in &rows {
        let ip = r
            .src
            .split(':')
            .next()
            .and_then(|s| s.parse::<Ipv4Addr>().ok());
        if let Some(ip) = ip {
            let i = u32::from(ip).wrapping_sub(lo) as usize;
            if i < phones {
                ues.insert(ip);
            }
        }
    }
    Some((rows.len(), ues.len()))
}

fn print_memory(when: &str, rows: &[(String, u64, u64)]) {
    let cells: Vec<String> = rows
        .iter()
        .map(|(n, rss, hwm)| {
            format!(
                "{n} {:.1} MB (peak {:.1})",
                *rss as f64 / 1024.0,
                *hwm as f64 / 1024.0
            )
        })
        .collect();
    println!("RSS {when}: {}", cells.join(", "));
}

pub fn load(args: &LoadArgs) -> Result<ExitCode> {
    let lab = &args.lab.name;
    d11_lab::check_lab_name(lab)?;
    let dir = RunDir::new(lab);
    if !dir.exists() {
        bail!("there is no lab named {lab} (start it with: d11 up --name {lab})");
    }
    let topo = dir.topology().context("reading the lab's topology")?;
    let range = bearer_range(&topo)?;
    if args.phones == 0 || args.phones > range.count {
        bail!(
            "--phones must be 1 ..= {} (the enb's bearer range from {})",
            range.count,
            range.first
        );
    }
    let ue = topo.node("ue").context("the lab has no node ue")?;
    let port = ue
        .ports
        .iter()
        .find(|p| p.name == "eth0")
        .context("ue has no port eth0")?;
    let prefix_len = port.address.map(|a| a.prefix_len()).unwrap_or(16);
    let gateway = ue
        .routes
        .first()
        .map(|r| r.via)
        .context("ue has no default route (its gateway)")?;
    need_root("d11 load")?;
    let ip = crate::order::lookup(lab, "ue", &args.host)?.addrs[0];
    let root = d11_apps::pki::PkiPaths::new(dir.pki_dir()).root_cert();
    let tls = d11_apps::ran::without_resumption(&*d11_apps::pki::client_config(&root, false)?);
    let body = serde_json::to_vec(&d11_apps::phone::story_order())?;
    let concurrency = args
        .concurrency
        .unwrap_or(if args.attach_only { 100 } else { args.phones })
        .max(1);
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(11)
    });
    let cfg = RanConfig {
        first_ue: range.first,
        prefix_len,
        gateway,
        phones: args.phones,
        orders: args.orders,
        concurrency,
        server: SocketAddrV4::new(ip, 443),
        host: args.host.clone(),
        tls,
        body,
        timeout: Duration::from_millis(args.timeout_ms),
        attach_only: args.attach_only,
        seed,
    };
    eprintln!("seed {seed}");
    let mem_before = element_memory(lab);
    let (report, records, radio) = {
        let _netns = d11_io::NetnsGuard::enter(&d11_lab::netns_name(lab, "ue"))?;
        let radio = d11_io::PacketSocket::open("eth0").context("opening ue's eth0 (the radio)")?;
        run(&radio, cfg)?
    };
    let mem_after = element_memory(lab);
    let nat = nat_entries(lab, range.first, args.phones);
    if args.json {
        let mem = |rows: &[(String, u64, u64)]| {
            rows.iter()
                .map(|(n, rss, hwm)| (n.clone(), serde_json::json!({"rss_kb": rss, "hwm_kb": hwm})))
                .collect::<serde_json::Map<_, _>>()
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "seed": seed,
                "report": report,
                "rss_before": mem(&mem_before),
                "rss_after": mem(&mem_after),
                "nat_entries": nat.map(|n| n.0),
                "nat_phones": nat.map(|n| n.1),
                "radio": radio,
                "orders": records,
            }))?
        );
    } else {
        print_report(&report, args);
        println!(
            "radio: {} frames dropped by the kernel (socket full), {} sends failed, {} dropped at a phone's queue",
            radio.kernel_rx_drops, radio.send_failures, radio.phone_rx_overflow
        );
        print_memory("before", &mem_before);
        print_memory("after ", &mem_after);
        if let Some((entries, ues)) = nat {
            println!(
                "pgw NAT table: {entries} entries, {ues} of the {} phones' addresses",
                args.phones
            );
        }
    }
    Ok(if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_report(r: &RanReport, args: &LoadArgs) {
    let what = if args.attach_only {
        "attaches"
    } else {
        "orders"
    };
    println!(
        "{} phones, {} {what} in {:.2} s: {} ok, {} failed ({:.1}/s)",
        r.phones, r.orders, r.seconds, r.ok, r.failed, r.orders_per_s
    );
    for (k, n) in &r.by_outcome {
        println!("  {k:<16} {n}");
    }
    let l = &r.latency_ms;
    println!(
        "latency ms: p50 {:.1}  p90 {:.1}  p99 {:.1}  (min {:.1}, max {:.1})",
        l.p50, l.p90, l.p99, l.min, l.max
    );
    println!(
        "retransmitted TCP segments sent by the phones: {}",
        r.retransmissions
    );
}

/// Linux's "no buffer space": the radio's queue is full, as with WouldBlock.
const ENOBUFS: i32 = 105;

/// Frames the load generator itself lost: with any of them non-zero, a
/// retransmission may be the generator's, not the lab's.
#[derive(Debug, Default, serde::Serialize)]
struct RadioDrops {
    /// Frames for the phones the kernel dropped: the socket's buffer was full.
    kernel_rx_drops: u64,
    /// Frames of the phones a send refused (the radio's queue was full).
    send_failures: u64,
    /// Frames dropped because their phone had 256 waiting.
    phone_rx_overflow: u64,
}

/// Moves frames between the radio and the phones until every order ended.
fn run(
    radio: &d11_io::PacketSocket,
    cfg: RanConfig,
) -> Result<(RanReport, Vec<d11_apps::ran::OrderRecord>, RadioDrops)> {
    let mut drops = RadioDrops::default();
    let _ = radio.take_kernel_drops();
    let t0 = Instant::now();
    let smol = |t: Instant| d11_apps::ran::StackInstant::from_micros((t - t0).as_micros() as i64);
    let mut ran = Ran::new(cfg.clone(), smol(Instant::now()));
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::new();
    let mut last_progress = Instant::now();
    // The whole run's deadline: every order's timeout, in waves.
    let waves = ran.total().div_ceil(cfg.concurrency) as u32 + 1;
    let deadline = t0 + cfg.timeout * waves + Duration::from_secs(10);
    // After the last order, closing connections get a moment to end
    // cleanly (the server's FIN acknowledged) before the phones vanish.
    let mut linger_until: Option<Instant> = None;
    loop {
        if ran.finished() {
            let until =
                *linger_until.get_or_insert_with(|| Instant::now() + Duration::from_secs(2));
            if ran.closing() == 0 || Instant::now() > until {
                break;
            }
        }
        let mut got = 0;
        while got < 4096 {
            match radio.recv_frame(&mut buf) {
                Ok(Some(m)) => {
                    ran.on_frame(&buf[..m.len.min(buf.len())]);
                    got += 1;
                }
                Ok(None) => break,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e).context("receiving from the radio"),
            }
        }
        let now = Instant::now();
        let next = ran.poll(smol(now), &mut out);
        for f in out.drain(..) {
            if let Err(e) = radio.send(&f) {
                if e.kind() != std::io::ErrorKind::WouldBlock && e.raw_os_error() != Some(ENOBUFS) {
                    return Err(e).context("sending on the radio");
                }
                drops.send_failures += 1;
            }
        }
        if now - last_progress > Duration::from_millis(500) {
            last_progress = now;
            drops.kernel_rx_drops += radio.take_kernel_drops().unwrap_or(0);
            progress(&ran, t0);
        }
        if now > deadline {
            break;
        }
        if got == 0 {
            let wait = next
                .map(|t| Duration::from_micros((t - smol(Instant::now())).total_micros().min(2000)))
                .unwrap_or(Duration::from_millis(1));
            std::thread::sleep(wait.min(Duration::from_micros(500)));
        }
    }
    progress(&ran, t0);
    eprintln!();
    let secs = t0.elapsed().as_secs_f64();
    drops.kernel_rx_drops += radio.take_kernel_drops().unwrap_or(0);
    drops.phone_rx_overflow = ran.rx_overflow;
    Ok((ran.report(secs), ran.done.clone(), drops))
}

fn progress(ran: &Ran, t0: Instant) {
    let ok = ran.done.iter().filter(|r| r.outcome.ok()).count();
    eprint!(
        "\r{:>6}/{} done, {} ok, {} failed, {} phones in flight, {} retransmissions, {:.1} s   ",
        ran.done.len(),
        ran.total(),
        ok,
        ran.done.len() - ok,
        ran.in_flight(),
        ran.retransmissions(),
        t0.elapsed().as_secs_f64()
    );
}
