//! `d11 load`: many simulated phones behind the eNodeB (docs/load.md).
//!
//! The phones are [`d11_apps::ran::Ran`]; this file is their driver: it
//! finds the phones' USIMs in the topology (the hss's `config.range`),
//! enters the UE host's namespace, opens an AF_PACKET socket on its `eth0`
//! (the radio TAP the enb holds), and moves frames between that socket and
//! the phones with the time (each attaches, then places its orders),
//! printing a progress line on stderr and, at the end, the attaches, the
//! outcome of every order, and the core's RSS and CPU.

use crate::{need_root, LabArg};
use anyhow::{bail, Context, Result};
use d11_apps::ran::{Ran, RanConfig, RanReport, UsimRange};
use d11_lab::RunDir;
use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Options of `d11 load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    #[command(flatten)]
    pub lab: LabArg,
    /// Simulated phones, each attaching with its own USIM of the hss's range.
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
    /// Only attach: each phone attaches, then opens one TCP connection to
    /// the shop (handshake, then close), so every bearer carries traffic
    /// and the pgw holds a NAT entry per phone.
    #[arg(long)]
    pub attach_only: bool,
    /// Phones with an attach under way at once (with 1,000 the replies to
    /// them overflowed the radio TAP's queue of 1,000 frames).
    #[arg(long, default_value_t = 500)]
    pub attach_window: usize,
    /// New attaches started per second at most (a burst beyond the radio
    /// TAP's queue of 1,000 frames is lost in the kernel).
    #[arg(long, default_value_t = 5_000)]
    pub attach_rate: u32,
    /// Seconds a phone tries to attach before it gives up.
    #[arg(long, default_value_t = 60)]
    pub attach_timeout: u64,
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

/// The phones' USIMs: the hss's subscriber range.
fn usim_range(topo: &d11_lab::Topology) -> Result<UsimRange> {
    let hss = topo.node("hss").context("the lab has no node hss")?;
    let s: d11_apps::hss::HssSettings = d11_core::settings::parse(&hss.config, "hss")
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("the hss's config")?;
    let r = s.range.context(
        "the hss has no config.range: d11 load's phones are its subscribers (docs/load.md)",
    )?;
    Ok(UsimRange {
        first_imsi: r.first_imsi,
        count: r.count as usize,
        k: r.k,
        opc: r.opc,
    })
}

/// The core's processes whose RSS and CPU the report shows.
const CORE: [&str; 6] = ["enb", "mme", "sgw", "pgw", "hss", "ue"];

/// One process of the lab: VmRSS and VmHWM (kB), CPU time (user + system, ms).
#[derive(Debug, Clone, serde::Serialize)]
struct Usage {
    node: String,
    rss_kb: u64,
    hwm_kb: u64,
    cpu_ms: u64,
}

/// RSS and CPU of the core's processes, with the pids the supervisor
/// keeps in /run/d11/LAB/supervisor.json (not `d11 status`, whose report
/// would make the pgw build a JSON value per NAT entry and raise the very
/// RSS being measured).
fn element_usage(lab: &str) -> Vec<Usage> {
    let Ok(sup) = d11_lab::SupervisorState::load(&d11_lab::RunDir::new(lab)) else {
        return Vec::new();
    };
    // The kernel's clock ticks (USER_HZ), 100 on Linux.
    const TICK_MS: u64 = 10;
    let mut rows = Vec::new();
    for name in CORE {
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
        // utime and stime: fields 14 and 15 of /proc/PID/stat, counted
        // after the command's closing parenthesis [proc(5)].
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ticks: u64 = stat
            .rsplit_once(')')
            .map(|(_, rest)| {
                rest.split_whitespace()
                    .skip(11)
                    .take(2)
                    .filter_map(|v| v.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0);
        rows.push(Usage {
            node: name.to_string(),
            rss_kb: kb("VmRSS:"),
            hwm_kb: kb("VmHWM:"),
            cpu_ms: ticks * TICK_MS,
        });
    }
    rows
}

/// The rows of the pgw's NAT table.
fn nat_rows(lab: &str) -> Option<Vec<d11_core::nat::NatEntryView>> {
    let exe = std::env::current_exe().ok()?;
    let out = std::process::Command::new(exe)
        .args(["show", "--name", lab, "pgw", "nat", "--json"])
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// Entries in the pgw's NAT table and how many of the phones' addresses they hold.
fn nat_entries(rows: &[d11_core::nat::NatEntryView], phones: &HashSet<Ipv4Addr>) -> (usize, usize) {
    let mut ues = HashSet::new();
    for r in rows {
        let ip = r
            .src
            .split(':')
            .next()
            .and_then(|s| s.parse::<Ipv4Addr>().ok());
        if let Some(ip) = ip.filter(|ip| phones.contains(ip)) {
            ues.insert(ip);
        }
    }
    (rows.len(), ues.len())
}

/// Each timed-out order's public `addr:port` at the pgw, from its NAT row.
fn nat_of_stalls(
    rows: &[d11_core::nat::NatEntryView],
    report: &mut RanReport,
    records: &mut [d11_apps::ran::OrderRecord],
) {
    let stalls = report
        .stalls
        .iter_mut()
        .chain(records.iter_mut().filter_map(|r| r.stall.as_mut()));
    for s in stalls {
        s.nat = rows
            .iter()
            .find(|r| r.proto == "tcp" && r.src == s.src)
            .map(|r| r.reply_dst.clone());
    }
}

fn print_usage(before: &[Usage], after: &[Usage], attached: usize) {
    let cells: Vec<String> = after
        .iter()
        .map(|u| {
            format!(
                "{} {:.1} MB (peak {:.1})",
                u.node,
                u.rss_kb as f64 / 1024.0,
                u.hwm_kb as f64 / 1024.0
            )
        })
        .collect();
    println!("RSS after: {}", cells.join(", "));
    let per: Vec<String> = after
        .iter()
        .filter_map(|u| {
            let b = before.iter().find(|b| b.node == u.node)?;
            let rss = u.rss_kb as f64 - b.rss_kb as f64;
            let cpu = u.cpu_ms.saturating_sub(b.cpu_ms) as f64;
            Some(format!(
                "{} {:+.0} B RSS, {:.2} ms CPU",
                u.node,
                rss * 1024.0 / attached.max(1) as f64,
                cpu / attached.max(1) as f64
            ))
        })
        .collect();
    println!("per attached phone: {}", per.join(", "));
}

pub fn load(args: &LoadArgs) -> Result<ExitCode> {
    let lab = &args.lab.name;
    d11_lab::check_lab_name(lab)?;
    let dir = RunDir::new(lab);
    if !dir.exists() {
        bail!("there is no lab named {lab} (start it with: d11 up --name {lab})");
    }
    let topo = dir.topology().context("reading the lab's topology")?;
    let usims = usim_range(&topo)?;
    if args.phones == 0 || args.phones > usims.count {
        bail!(
            "--phones must be 1 ..= {} (the hss's range from IMSI {})",
            usims.count,
            usims.first_imsi
        );
    }
    // The phone's baseband says where an attached phone's address goes.
    let ue = topo.node("ue").context("the lab has no node ue")?;
    let bb: d11_apps::baseband::BasebandSettings = d11_core::settings::parse(&ue.config, "ue")
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("the ue's baseband config")?;
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
        usims,
        plmn: d11_apps::baseband::HOME_PLMN,
        attach_window: args.attach_window.max(1),
        attach_rate: args.attach_rate.max(1),
        attach_timeout: Duration::from_secs(args.attach_timeout),
        prefix_len: bb.prefix_len,
        gateway: bb.gateway,
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
    let before = element_usage(lab);
    let tx_before = tx_dropped(lab);
    let (mut report, mut records, attaches, mut radio) = {
        let _netns = d11_io::NetnsGuard::enter(&d11_lab::netns_name(lab, "ue"))?;
        let radio = d11_io::PacketSocket::open("eth0").context("opening ue's eth0 (the radio)")?;
        run(&radio, cfg)?
    };
    let after = element_usage(lab);
    radio.tx_queue_drops = tx_dropped(lab).saturating_sub(tx_before);
    let addrs: HashSet<Ipv4Addr> = attaches.iter().filter_map(|a| a.ue).collect();
    let rows = nat_rows(lab);
    let nat = rows.as_ref().map(|rows| nat_entries(rows, &addrs));
    if let Some(rows) = &rows {
        nat_of_stalls(rows, &mut report, &mut records);
    }
    if args.json {
        let mem = |rows: &[Usage]| {
            rows.iter()
                .map(|u| {
                    (
                        u.node.clone(),
                        serde_json::json!({"rss_kb": u.rss_kb, "hwm_kb": u.hwm_kb, "cpu_ms": u.cpu_ms}),
                    )
                })
                .collect::<serde_json::Map<_, _>>()
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "seed": seed,
                "report": report,
                "rss_before": mem(&before),
                "rss_after": mem(&after),
                "nat_entries": nat.map(|n| n.0),
                "nat_phones": nat.map(|n| n.1),
                "radio": radio,
                "orders": records,
                "attaches": attaches,
            }))?
        );
    } else {
        print_report(&report, args);
        println!(
            "radio: {} frames dropped by the kernel (socket full), {} sends failed, {} dropped at a phone's queue, {} dropped from eth0's transmit queue",
            radio.kernel_rx_drops, radio.send_failures, radio.phone_rx_overflow, radio.tx_queue_drops
        );
        print_usage(&before, &after, report.attach.attached);
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
    let a = &r.attach;
    println!(
        "{} phones: {} attached, {} failed in {:.2} s ({:.0} attaches/s), {} Attach Requests",
        a.phones, a.attached, a.failed, a.seconds, a.attaches_per_s, a.requests
    );
    for (k, n) in a.by_outcome.iter().filter(|(k, _)| *k != "attached") {
        println!("  {k:<24} {n}");
    }
    let l = &a.latency_ms;
    println!(
        "attach ms: p50 {:.1}  p90 {:.1}  p99 {:.1}  (min {:.1}, max {:.1})",
        l.p50, l.p90, l.p99, l.min, l.max
    );
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
    for s in &r.stalls {
        println!(
            "  timed out: phone {} {} (pgw {}) {}, {} B sent ({} unacknowledged), {} B received (last at {}), TLS {}, request {}, {} B of reply",
            s.phone,
            s.src,
            s.nat.as_deref().unwrap_or("-"),
            s.tcp_state,
            s.sent,
            s.unacked,
            s.received,
            s.last_received_ms.map_or("-".into(), |ms| format!("{ms:.0} ms")),
            if s.tls_handshake_done { "done" } else { "handshaking" },
            if s.request_written { "written" } else { "not written" },
            s.reply_bytes
        );
    }
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
    /// Frames the kernel dropped from ue:eth0's transmit queue (its
    /// `txqueuelen`): sent without an error, never on the radio.
    tx_queue_drops: u64,
}

/// ue:eth0's `tx_dropped` counter, from inside the ue's namespace.
fn tx_dropped(lab: &str) -> u64 {
    std::process::Command::new("ip")
        .args(["netns", "exec", &d11_lab::netns_name(lab, "ue")])
        .args(["cat", "/sys/class/net/eth0/statistics/tx_dropped"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(0)
}

/// Moves frames between the radio and the phones until every order ended.
type Run = (
    RanReport,
    Vec<d11_apps::ran::OrderRecord>,
    Vec<d11_apps::ran::AttachRecord>,
    RadioDrops,
);

fn run(radio: &d11_io::PacketSocket, cfg: RanConfig) -> Result<Run> {
    let mut drops = RadioDrops::default();
    let _ = radio.take_kernel_drops();
    let t0 = Instant::now();
    let smol = |t: Instant| d11_apps::ran::StackInstant::from_micros((t - t0).as_micros() as i64);
    let mut ran = Ran::new(cfg.clone()).context("the hss's range: K or OPc is not a key")?;
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::new();
    let mut last_progress = Instant::now();
    // The whole run's deadline: every order's timeout, in waves.
    let waves = ran.total().div_ceil(cfg.concurrency) as u32 + 1;
    let deadline = t0 + cfg.attach_timeout + cfg.timeout * waves + Duration::from_secs(10);
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
                    ran.on_frame(smol(Instant::now()), &buf[..m.len.min(buf.len())]);
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
    Ok((
        ran.report(secs),
        ran.done.clone(),
        ran.attaches.clone(),
        drops,
    ))
}

fn progress(ran: &Ran, t0: Instant) {
    let ok = ran.done.iter().filter(|r| r.outcome.ok()).count();
    eprint!(
        "\r{} attached, {} attaching; {:>6}/{} done, {} ok, {} failed, {} phones in flight, {} retransmissions, {:.1} s   ",
        ran.attached(),
        ran.attaching(),
        ran.done.len(),
        ran.total(),
        ok,
        ran.done.len() - ok,
        ran.in_flight(),
        ran.retransmissions(),
        t0.elapsed().as_secs_f64()
    );
}
