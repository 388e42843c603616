//! `d11 demo`: up, order, trace, down — narrated chapter by chapter.
//!
//! The demo knows no protocol: it runs the other `d11` commands as child
//! processes with `--json` (`up`, `order`, `trace`, `status`) and reads
//! their output as the types they print ([`LabStatus`], [`TraceJson`]),
//! asks the elements and the load balancer for their reports on their
//! control sockets (as `d11 show` does: `SgwReport`, `PgwReport`,
//! `VgwReport`, `L4lbReport`), reads the TCP connections of the trace's
//! capture with `d11_lab::tcpview`, and tells what those say happened in
//! this run. Every number it prints comes from one of them. The lab always goes down at the end: on
//! success, on error and on Ctrl-C ([`DemoLab`]'s `Drop`; SIGINT and SIGTERM
//! only set a flag in this process, checked after each step).

use crate::need_root;
use crate::status::LabStatus;
use crate::trace::TraceJson;
use anyhow::{bail, Context, Result};
use d11_apps::l4lb::L4lbReport;
use d11_apps::phone::OrderOutcome;
use d11_core::nat::NatEntryView;
use d11_elements::{pgw::PgwReport, sgw::SgwReport, vgw::VgwReport};
use d11_lab::tcpview::{self, Dir, Flags, Pick, Row, State};
use d11_lab::trace::{Hop, Pair, Tunnel};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Options of `d11 demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The demo's own lab (namespaces LAB-NODE); it must not exist yet and is taken down at the end.
    #[arg(long = "name", short = 'n', default_value = "demo", value_name = "LAB")]
    pub name: String,
    /// The topology file.
    #[arg(
        short = 't',
        long = "topology",
        default_value = "netns/double11.toml",
        value_name = "FILE"
    )]
    pub topology: PathBuf,
    /// Where the trace's capture goes; it stays after the lab is down.
    #[arg(
        short = 'w',
        default_value = "d11-demo.pcapng",
        value_name = "FILE.pcapng"
    )]
    pub file: PathBuf,
}

pub fn demo(args: &DemoArgs) -> Result<()> {
    let lab = args.name.as_str();
    d11_lab::check_lab_name(lab)?;
    need_root("d11 demo")?;
    if d11_lab::RunDir::new(lab).exists() {
        bail!("a lab named {lab} is already up (take it down with: d11 down --name {lab}, or pick another --name)");
    }
    let file = std::env::current_dir()
        .context("finding the current directory")?
        .join(&args.file);
    let exe = std::env::current_exe().context("finding the d11 binary")?;
    let stop = d11_io::stop_on_signals()?;
    let guard = DemoLab {
        exe: exe.clone(),
        name: lab.to_string(),
    };
    let d = Runner { exe, stop };
    let res = narrate(&d, lab, &args.topology, &file);
    drop(guard);
    if res.is_ok() {
        println!(
            "\n{}",
            heading("The end: d11 down took every namespace, wire and process of the lab away")
        );
    }
    res
}

/// The demo's lab, taken down when dropped (also while unwinding).
struct DemoLab {
    exe: PathBuf,
    name: String,
}

impl Drop for DemoLab {
    fn drop(&mut self) {
        println!("\n$ d11 down --name {}", self.name);
        match Command::new(&self.exe)
            .args(["down", "--name", &self.name])
            .output()
        {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "d11 down --name {} failed: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("d11 down --name {} did not run: {e}", self.name),
        }
    }
}

/// Runs `d11 …` children and notices Ctrl-C between them.
struct Runner {
    exe: PathBuf,
    stop: &'static AtomicBool,
}

impl Runner {
    fn run(&self, args: &[&str]) -> Result<Output> {
        let out = Command::new(&self.exe)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running d11 {}", args.join(" ")))?;
        if self.stop.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        Ok(out)
    }

    /// `d11 ARGS` that must succeed, its stdout read as `T`.
    fn json<T: DeserializeOwned>(&self, args: &[&str]) -> Result<T> {
        let out = self.run(args)?;
        if !out.status.success() {
            bail!(
                "d11 {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("d11 {} printed no JSON", args.join(" ")))
    }
}

fn narrate(d: &Runner, lab: &str, topology: &Path, file: &Path) -> Result<()> {
    let topo = topology.to_string_lossy();
    let bgp_file = bgp_capture(file);
    let bgp_f = bgp_file.to_string_lossy();
    println!("{}", heading(&format!("Chapter 1: the lab is built from {topo}: one namespace per node, real veth and TAP wires, one process per element")));
    // Owned by this process: a demo killed even by SIGKILL leaves no lab.
    let me = std::process::id().to_string();
    println!("$ d11 up -t {topo} --name {lab} --owner {me} --capture {bgp_f}");
    let up = d.run(&[
        "up",
        "-t",
        &topo,
        "--name",
        lab,
        "--owner",
        &me,
        "--capture",
        &bgp_f,
    ])?;
    print!("{}", String::from_utf8_lossy(&up.stdout));
    if !up.status.success() {
        bail!(
            "d11 up failed: {}",
            String::from_utf8_lossy(&up.stderr).trim()
        );
    }
    let status: LabStatus = d.json(&["status", "--name", lab, "--json"])?;
    let net = Net::from_status(&status);
    // The phone's first resolution, recorded before anything else asks the
    // resolver (told in chapter 3).
    let dns_file = crate::demo_dns::capture_file(file);
    let dns = crate::demo_dns::record(lab, &dns_file)?;

    println!(
        "\n{}",
        heading("Chapter 2: tell the world: the cloud's border announces the shop's prefix over eBGP, the carriers pass it on (eBGP between ASes, iBGP inside one)")
    );
    print!("{}", chapter2(d, lab, &net, topology, &bgp_file)?);

    let mme: Option<d11_elements::mme::MmeReport> = report_of(lab, &net, "mme")?;
    if let Some(mme) = mme {
        println!(
            "\n{}",
            heading("Chapter 3: the phone attaches: S1AP over SCTP to the MME, EPS-AKA with the HSS over Diameter, NAS security, GTPv2-C sessions on the SGW and the PGW, the PGW's address")
        );
        let sgw: Option<SgwReport> = report_of(lab, &net, "sgw")?;
        let pgw: Option<PgwReport> = report_of(lab, &net, "pgw")?;
        print!("{}", chapter3(&mme, sgw.as_ref(), pgw.as_ref()));
        // The attach `d11 up` waited for, as its capture has it.
        let frames = crate::trace::read_capture(&bgp_file)?;
        let start_ns = frames.iter().map(|f| f.ts_ns).min().unwrap_or(0);
        let seen = crate::demo_attach::messages(&frames);
        let f = bgp_file.to_string_lossy();
        print!(
            "{}",
            crate::demo_attach::tell(&seen, start_ns, &net.addrs, &f)
        );
    }
    if let Some((resolver, wire)) = dns {
        println!(
            "\n{}",
            heading("Chapter 3, continued: the shop's name: the carrier's resolver walks from the root to .com to the shop's server, whose CNAME leads to the GSLB; the second time it answers from its cache")
        );
        let frames = crate::trace::read_capture(&dns_file)?;
        let seen = crate::demo_dns::messages(&frames, &wire);
        print!(
            "{}",
            crate::demo_dns::tell(&seen, resolver, &wire, &net.addrs, &dns_file)
        );
    }

    if net.node_with_role("cdn-origin").is_some() {
        println!(
            "\n{}",
            heading("Chapter 4: before buying, the phone looks at the product's pictures through the CDN: edge, parent, origin")
        );
        println!("$ d11 browse --name {lab} --json");
        let first: crate::cdn::Browsed = d.json(&["browse", "--name", lab, "--json"])?;
        // A second later, so the edge's copy has an Age.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        println!("$ d11 browse --name {lab} --json   # a second later");
        let second: crate::cdn::Browsed = d.json(&["browse", "--name", lab, "--json"])?;
        print!("{}", crate::cdn::chapter4(&first, &second));
    }

    println!(
        "\n{}",
        heading(
            "Chapters 5 and 6: the phone app opens TCP and TLS to the shop and POSTs the order"
        )
    );
    println!("$ d11 order --name {lab} --json");
    let order: OrderOutcome = d.json(&["order", "--name", lab, "--json"])?;
    print!("{}", chapter6(&order)?);

    println!(
        "\n{}",
        heading("A second order, captured on every wire of the lab while it crosses")
    );
    let f = file.to_string_lossy();
    println!("$ d11 trace --name {lab} -w {f} --json");
    let trace: TraceJson = d.json(&["trace", "--name", lab, "-w", &f, "--json"])?;
    let hops = &trace.hops;
    if hops.is_empty() {
        bail!("the trace has no hops");
    }
    print!("{}", crate::trace::table(hops));
    print!("{}", trace_summary(&trace));

    let (client, remote) = ends(&trace.order)?;
    let proxied = proxy_leg(hops);
    println!(
        "\n{}",
        heading(
            "Chapter 5 in this run: the TCP segments of the traced order, read from the capture"
        )
    );
    let frames = crate::trace::read_capture(file);
    let story = |wire: &str, a: SocketAddrV4, b: SocketAddrV4| -> Result<String> {
        let frames = frames.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let view = tcpview::analyse(frames, wire, Pick::Between(a, b))?;
        Ok(tcp_story(&view.rows))
    };
    match story(&hops[0].wire, client, remote) {
        Ok(s) => {
            println!("the phone's connection {client} → {remote}:");
            print!("{s}");
        }
        Err(e) => println!("({e}; the trace above shows the request's first data segment only)"),
    }
    if let Some((new, backend, last)) = proxied {
        match story(&last, new, backend) {
            Ok(s) => {
                println!(
                    "the load balancer's own connection {new} → the controller, seen on {last}:"
                );
                print!("{s}");
            }
            Err(e) => println!("({e})"),
        }
    }

    // The elements' and apps' own tables, after the traced order.
    let sgw: Option<SgwReport> = report_of(lab, &net, "sgw")?;
    let pgw: Option<PgwReport> = report_of(lab, &net, "pgw")?;
    let vgw: Option<VgwReport> = report_of(lab, &net, "vgw")?;
    let lb: Option<L4lbReport> = report_of(lab, &net, "l4lb")?;
    let bearers = sgw.map(|r| r.tunnel.bearers).unwrap_or_default();
    let pgw_nat = pgw.map(|r| r.nat).unwrap_or_default();
    let vgw_nat = vgw.map(|r| r.nat).unwrap_or_default();

    let ch = chapters(hops);
    println!("\n{}", heading("Chapter 7: through the eNodeB, both GTP-U tunnels and the PGW's NAT, then the carriers"));
    print!("{}", narrate_hops(&net, hops, ch.seven.clone()));
    print!("{}", chapter7_tables(&trace, &bearers, &pgw_nat, client));
    println!(
        "\n{}",
        heading("Chapter 8: into the data centre: the cloud gateway's DNAT and VXLAN")
    );
    print!("{}", narrate_hops(&net, hops, ch.eight.clone()));
    print!("{}", chapter8_tables(hops, &pgw_nat, &vgw_nat, client));
    println!("\n{}", heading("Chapter 9: the L4 proxy ends the phone's TCP and opens a new connection to a controller"));
    print!("{}", narrate_hops(&net, hops, ch.nine.clone()));
    print!("{}", chapter9_tables(&trace, lb.as_ref())?);
    if let Some(s) = chapter10(&trace.order) {
        println!(
            "\n{}",
            heading("Chapter 10: the controller calls the order service by RPC")
        );
        print!("{s}");
    }

    let vpn_file = crate::demo_vpn::capture_file(file);
    if let Some(s) = crate::demo_vpn::chapter(lab, &vpn_file)? {
        println!(
            "\n{}",
            heading(
                "Chapter 1, continued: region north, and the IPsec VPN between the regions' VPCs"
            )
        );
        print!("{s}");
    }

    println!("\n{}", heading("The capture"));
    print!("{}", capture_hint(&trace));
    Ok(())
}

/// Where `d11 up --capture` records the lab's first moments: next to the
/// trace's capture, `-bgp` added to its name.
fn bgp_capture(file: &Path) -> PathBuf {
    let stem = file
        .file_stem()
        .map_or("d11-demo".into(), |s| s.to_string_lossy().to_string());
    file.with_file_name(format!("{stem}-bgp.pcapng"))
}

/// Chapter 2 from the start capture and the routers' tables.
fn chapter2(d: &Runner, lab: &str, net: &Net, topology: &Path, file: &Path) -> Result<String> {
    let frames = crate::trace::read_capture(file)?;
    let messages = d11_lab::bgplog::messages(&frames);
    let start_ns = frames.iter().map(|f| f.ts_ns).min().unwrap_or(0);
    // The shop's address as the phone resolves it (the lab's DNS), or as a
    // topology without DNS writes it into a hosts file.
    let vip = crate::order::lookup(lab, "ue", "www.geektime.com")
        .ok()
        .and_then(|r| r.addrs.first().copied())
        .or_else(|| {
            d11_lab::Topology::load(topology).ok().and_then(|t| {
                t.nodes
                    .iter()
                    .flat_map(|n| n.hosts.iter())
                    .map(|h| h.address)
                    .next()
            })
        });
    let mut routers = Vec::new();
    for (node, role) in &net.roles {
        if role != "router" {
            continue;
        }
        let report: d11_elements::router::RouterReport = d
            .json(&["show", "--name", lab, node, "--json"])
            .with_context(|| format!("{node}'s report"))?;
        if let (Some(bgp), Some(rib)) = (report.bgp, report.rib) {
            routers.push(crate::demo_bgp::RouterTables {
                name: node.clone(),
                bgp,
                rib,
                fib: report.l3.fib,
            });
        }
    }
    // Routers in the order of the path the shop's prefix took to the phone: the
    // one deciding between carriers first (more candidates first).
    routers.sort_by_key(|r| std::cmp::Reverse(r.rib.len()));
    let f = file.to_string_lossy();
    Ok(crate::demo_bgp::Chapter2 {
        messages: &messages,
        start_ns,
        names: &net.addrs,
        vip,
        routers: &routers,
        file: &f,
    }
    .tell())
}

/// Chapter 3 from the mme's, the sgw's and the pgw's reports: what `d11 up`
/// waited for (docs/attach.md).
fn chapter3(
    mme: &d11_elements::mme::MmeReport,
    sgw: Option<&SgwReport>,
    pgw: Option<&PgwReport>,
) -> String {
    let mut o = String::new();
    for e in &mme.enbs {
        let _ = writeln!(
            o,
            "  the enb {} set up S1 with the mme over SCTP (port 36412, PPID 18): S1 Setup {}, GUMMEI {}/{:#06x}/{}",
            e.remote, e.s1, mme.plmn, mme.group, mme.code
        );
    }
    if let Some(s6a) = &mme.s6a {
        let _ = writeln!(
            o,
            "  the mme's Diameter peer with the hss ({}) is {:?}: {} vectors asked (AIR/AIA), Update Location (ULR/ULA) for each attach",
            s6a.hss_host.as_deref().unwrap_or("?"),
            s6a.state,
            mme.counters.vectors
        );
    }
    let c = &mme.counters;
    let _ = writeln!(
        o,
        "  {} Attach Requests, {} rejected (a phone that asks before the mme reaches the hss gets #17 and asks again), {} sessions created, {} Attach Completes",
        c.attach_requests, c.attach_rejects, c.sessions_created, c.attach_completes
    );
    for u in &mme.ues {
        let ip = u.ue_ip.map_or("-".to_string(), |a| a.to_string());
        let _ = writeln!(
            o,
            "  IMSI {}: {:?}, APN {}, address {ip} (MME UE S1AP ID {}, eNB UE S1AP ID {})",
            u.imsi, u.emm, u.apn, u.mme_ue_id, u.enb_ue_id
        );
    }
    for (name, rows) in [
        ("sgw", sgw.map(|r| &r.sessions)),
        ("pgw", pgw.map(|r| &r.sessions)),
    ] {
        for r in rows.into_iter().flatten() {
            let _ = writeln!(
                o,
                "  the {name}'s session for {}: control TEID {:#x}, its peer {} TEID {:#x}, EBI {}",
                r.imsi, r.teid, r.peer, r.peer_teid, r.ebi
            );
        }
    }
    o
}

/// The report of the node with `role`, from its control socket (what `d11
/// show NODE` prints), or `None` when the topology has none (the narration
/// then says so).
fn report_of<T: DeserializeOwned>(lab: &str, net: &Net, role: &str) -> Result<Option<T>> {
    let Some(node) = net.node_with_role(role) else {
        return Ok(None);
    };
    let dir = d11_lab::RunDir::new(lab);
    let status = d11_io::status(&dir.socket(node), Duration::from_secs(2))
        .with_context(|| format!("asking {node} for its report"))?;
    let report = status
        .report()
        .with_context(|| format!("{node}'s report is not a {role}'s"))?;
    Ok(Some(report))
}

/// A chapter's title, bold on a terminal.
fn heading(s: &str) -> String {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        format!("\x1b[1m== {s}\x1b[0m")
    } else {
        format!("== {s}")
    }
}

/// The order's two ends, as IPv4 socket addresses.
fn ends(order: &OrderOutcome) -> Result<(SocketAddrV4, SocketAddrV4)> {
    match (order.local, order.remote) {
        (std::net::SocketAddr::V4(a), std::net::SocketAddr::V4(b)) => Ok((a, b)),
        _ => bail!("the order went over IPv6: the lab is IPv4"),
    }
}

/// What `d11 status --json` says about the lab's nodes and ports.
#[derive(Debug, Default)]
struct Net {
    /// node → role (elements and apps).
    roles: BTreeMap<String, String>,
    /// MAC → `node:port`.
    macs: BTreeMap<String, String>,
    /// `node:port` → the other end of its wire.
    peers: BTreeMap<String, String>,
    /// Port address → node.
    addrs: BTreeMap<std::net::Ipv4Addr, String>,
}

impl Net {
    fn from_status(status: &LabStatus) -> Net {
        let mut net = Net::default();
        for n in &status.nodes {
            if let Some(r) = &n.role {
                net.roles.insert(n.name.clone(), r.clone());
            }
            for p in &n.ports {
                let port = format!("{}:{}", n.name, p.name);
                net.macs.insert(p.mac.clone(), port.clone());
                if let Some(a) = p
                    .address
                    .as_deref()
                    .and_then(|a| a.parse::<d11_wire::Ipv4Cidr>().ok())
                {
                    net.addrs.insert(a.addr(), n.name.clone());
                }
                if let Some(peer) = &p.peer {
                    net.peers.insert(port, peer.clone());
                }
            }
        }
        net
    }

    fn node_with_role(&self, role: &str) -> Option<&str> {
        self.roles
            .iter()
            .find(|(_, r)| *r == role)
            .map(|(n, _)| n.as_str())
    }

    /// A MAC with the port that holds it, when the lab knows it.
    fn mac(&self, mac: &d11_wire::MacAddr) -> String {
        let mac = mac.to_string();
        match self.macs.get(&mac) {
            Some(p) => format!("{mac} ({p})"),
            None => mac,
        }
    }

    /// The node that put `hop`'s frame on its wire: the owner of the source
    /// MAC when it is an end of the wire, else the wire's other end from
    /// the receiver.
    fn sender(&self, hop: &Hop) -> String {
        let here = node_of(&hop.wire);
        let there = self.peers.get(&hop.wire).map(|p| node_of(p)).unwrap_or("?");
        let src = self.macs.get(&hop.stack.eth.src.to_string());
        match src.map(|p| node_of(p)) {
            Some(n) if n == here || n == there => n.to_string(),
            _ => there.to_string(),
        }
    }

    fn role(&self, node: &str) -> &str {
        self.roles.get(node).map(String::as_str).unwrap_or("host")
    }
}

fn node_of(port: &str) -> &str {
    port.split(':').next().unwrap_or(port)
}

// ---------------------------------------------------------------------------
// The narration: pure functions of the outputs.

fn tls_name(v: &str) -> String {
    v.replace("TLSv1_", "TLS 1.")
}

fn missing(what: &str) -> anyhow::Error {
    anyhow::anyhow!("no {what} in the order's reply")
}

/// Chapters 5 and 6 from `d11 order --json`.
fn chapter6(order: &OrderOutcome) -> Result<String> {
    let mut s = String::new();
    let reply = order.reply();
    writeln!(
        s,
        "The phone app in ue connected from {} to {} ({}): \
         TCP three-way handshake, then {} with {}, the server's chain verified against the lab root only.",
        order.local,
        order.remote,
        order
            .resolved
            .as_ref()
            .map_or("www.geektime.com in the phone's hosts file".to_string(), |r| {
                crate::order::resolution_line(r)
            }),
        tls_name(&order.tls_version),
        order.cipher
    )?;
    let sent = serde_json::to_string(&serde_json::json!({
        "order": reply.order.as_ref().ok_or_else(|| missing("order"))?
    }))?;
    writeln!(
        s,
        "POST /purchaseOrder, Content-Type: application/json, Idempotency-Key: {}",
        order.idempotency_key
    )?;
    writeln!(s, "{sent}")?;
    let attempts = order.attempts;
    writeln!(
        s,
        "→ {} {} in {:.1} ms ({attempts} attempt{}): order {} served by {}.",
        order.status,
        reply.status.as_deref().unwrap_or(""),
        order.elapsed_ms,
        if attempts == 1 { "" } else { "s" },
        reply
            .order_id
            .as_deref()
            .ok_or_else(|| missing("order_id"))?,
        reply
            .served_by
            .as_deref()
            .ok_or_else(|| missing("served_by"))?
    )?;
    for e in &order.errors {
        writeln!(s, "  (retried with the same key after: {e})")?;
    }
    Ok(s)
}

fn src(h: &Hop) -> SocketAddrV4 {
    SocketAddrV4::new(h.stack.ip.src, h.stack.ports.src)
}

fn dst(h: &Hop) -> SocketAddrV4 {
    SocketAddrV4::new(h.stack.ip.dst, h.stack.ports.dst)
}

fn flow(h: &Hop) -> String {
    format!("{} → {}", src(h), dst(h))
}

fn pair<T: std::fmt::Display>(v: Option<&Pair<T>>) -> String {
    match v {
        Some(p) => format!("{} → {}", p.src, p.dst),
        None => "? → ?".into(),
    }
}

fn teid(h: &Hop) -> Option<u32> {
    match h.stack.tunnel {
        Some(Tunnel::Gtpu { teid }) => Some(teid),
        _ => None,
    }
}

fn vni(h: &Hop) -> Option<u32> {
    match h.stack.tunnel {
        Some(Tunnel::Vxlan { vni }) => Some(vni),
        _ => None,
    }
}

fn trace_summary(trace: &TraceJson) -> String {
    let hops = &trace.hops;
    let checks: usize = hops.iter().map(|h| h.checks.len()).sum();
    let t0 = hops.first().map_or(0, |h| h.ts_ns);
    let t1 = hops.last().map_or(t0, |h| h.ts_ns);
    format!(
        "{} hops, {checks} checks against the topology: {}. The POST's TLS record took {} µs from the phone's radio to {}.\n",
        hops.len(),
        if trace.ok {
            "every row as the topology implies ✓"
        } else {
            "SOME ROWS DIFFER ✗"
        },
        t1.saturating_sub(t0) / 1000,
        hops.last().map_or("?", |h| h.wire.as_str())
    )
}

/// Where the hops of chapters 7, 8 and 9 start and end.
#[derive(Debug, Clone, PartialEq)]
struct Chapters {
    seven: std::ops::Range<usize>,
    eight: std::ops::Range<usize>,
    nine: std::ops::Range<usize>,
}

/// The first VXLAN hop opens chapter 8; the load balancer's new connection
/// opens chapter 9.
fn chapters(hops: &[Hop]) -> Chapters {
    let vxlan = hops
        .iter()
        .position(|h| vni(h).is_some())
        .unwrap_or(hops.len());
    let proxy = new_connection(hops).unwrap_or(hops.len()).max(vxlan);
    Chapters {
        seven: 0..vxlan,
        eight: vxlan..proxy,
        nine: proxy..hops.len(),
    }
}

/// A proxy's own new connection: `h` leaves from the address `p` went to,
/// from another port.
fn is_new_connection(p: &Hop, h: &Hop) -> bool {
    h.stack.ip.src == p.stack.ip.dst && h.stack.ports.src != p.stack.ports.dst
}

/// The index of the hop where the segment left a proxy on a new connection.
fn new_connection(hops: &[Hop]) -> Option<usize> {
    (1..hops.len()).find(|&i| is_new_connection(&hops[i - 1], &hops[i]))
}

/// The proxy's new connection (its source and the backend) and the wire of
/// the last hop.
fn proxy_leg(hops: &[Hop]) -> Option<(SocketAddrV4, SocketAddrV4, String)> {
    let i = new_connection(hops)?;
    let last = hops.last()?;
    Some((src(&hops[i]), dst(last), last.wire.clone()))
}

/// One sentence per hop: what the node that sent it did to the segment,
/// read from how its headers differ from the previous hop's.
fn narrate_hops(net: &Net, hops: &[Hop], range: std::ops::Range<usize>) -> String {
    let mut s = String::new();
    for i in range {
        let h = &hops[i];
        let by = net.sender(h);
        let ttl = h.stack.ttl;
        let line = match i.checked_sub(1).map(|j| &hops[j]) {
            None => format!(
                "{by} sends {}, TTL {ttl}, from {} to {}: the MAC its ARP for the default gateway got.",
                flow(h),
                net.mac(&h.stack.eth.src),
                net.mac(&h.stack.eth.dst)
            ),
            Some(p) => describe(net, p, h, &by),
        };
        let _ = writeln!(s, "  {:<14} {line}", h.wire);
    }
    s
}

fn describe(net: &Net, p: &Hop, h: &Hop, by: &str) -> String {
    let (ttl, pttl) = (h.stack.ttl, p.stack.ttl);
    let (hs, ps) = (&h.stack, &p.stack);
    let mut acts = Vec::new();
    if u16::from(ttl) + 1 == u16::from(pttl) {
        acts.push(format!(
            "routes it (TTL {pttl} → {ttl}){}",
            h.route
                .as_ref()
                .map_or(String::new(), |r| route_used(net, r))
        ));
    }
    if hs.ip.src != ps.ip.src && hs.ports.dst == ps.ports.dst {
        acts.push(format!("SNATs the source {} → {}", src(p), src(h)));
    } else if hs.ip.dst != ps.ip.dst && hs.ip.src == ps.ip.src {
        acts.push(format!("DNATs the destination {} → {}", dst(p), dst(h)));
    }
    let acts = acts.join(" and ");
    if is_new_connection(p, h) {
        return format!(
            "{by}'s {} ended the phone's TCP there and sends the same TLS record on its own new connection {}, TTL {ttl} (a fresh packet from its own stack).",
            net.role(by),
            flow(h)
        );
    }
    let outer = pair(hs.outer_ip.as_ref());
    let inner = || match &hs.inner_eth {
        Some(e) => format!("{} → {}", net.mac(&e.src), net.mac(&e.dst)),
        None => "? → ?".into(),
    };
    match (teid(p), teid(h), vni(p), vni(h)) {
        (None, Some(t), _, _) => format!(
            "{by} puts the phone's IP packet (its MAC header left behind) in GTP-U TEID {t:#x}, {outer}; the inner packet is unchanged, TTL {ttl}."
        ),
        (Some(a), Some(b), _, _) if a != b => format!(
            "{by} takes it out of TEID {a:#x} and into TEID {b:#x}, {outer}; still TTL {ttl}: nobody has routed the phone's packet yet."
        ),
        (Some(_), None, _, _) => format!(
            "{by} ends the tunnel{}{acts}; MACs {}.",
            if acts.is_empty() { "" } else { ", " },
            pair(Some(&hs.eth))
        ),
        (None, None, None, Some(v)) | (None, None, Some(_), Some(v))
            if outer != pair(ps.outer_ip.as_ref()) =>
        {
            if acts.is_empty() {
                format!(
                    "{by}'s vSwitch puts the VM's frame ({}) in VXLAN VNI {v}, VTEP {outer}.",
                    inner()
                )
            } else {
                format!(
                    "{by} {acts}, then sends the VM's frame ({}) in VXLAN VNI {v}, VTEP {outer}.",
                    inner()
                )
            }
        }
        (_, _, Some(_), Some(_)) => format!(
            "the underlay switch forwards the VXLAN packet by MAC, unchanged, to {}.",
            node_of(&h.wire)
        ),
        (_, _, Some(_), None) => format!(
            "{by}'s vSwitch takes the frame out of VXLAN and hands it to the VM's vNIC: {}, TTL {ttl}.",
            flow(h)
        ),
        _ if !acts.is_empty() => format!(
            "{by} {acts}: new MACs {}, the IP addresses unchanged.",
            pair(Some(&hs.eth))
        ),
        _ => format!("{by} forwards it: MACs {}, TTL {ttl}.", pair(Some(&hs.eth))),
    }
}

/// `d11 trace`'s route for a routed hop, as words: " by its BGP route
/// 203.0.113.0/24 via c1 (AS_PATH 64510 64600)".
fn route_used(net: &Net, r: &d11_lab::trace::HopRoute) -> String {
    let source = match r.source {
        d11_core::l3::RouteSource::Bgp => "BGP",
        d11_core::l3::RouteSource::Static => "static",
        d11_core::l3::RouteSource::Connected => "connected",
    };
    let via = r
        .via
        .map(|v| {
            format!(
                " via {}",
                net.addrs.get(&v).cloned().unwrap_or_else(|| v.to_string())
            )
        })
        .unwrap_or_default();
    let path = r
        .as_path
        .as_ref()
        .map(|p| format!(" (AS_PATH {p})"))
        .unwrap_or_default();
    format!(" by its {source} route {}{via}{path}", r.prefix)
}

/// The bearer and NAT tables behind chapter 7's rows.
fn chapter7_tables(
    trace: &TraceJson,
    bearers: &[d11_elements::bearer::Bearer],
    pgw_nat: &[NatEntryView],
    client: SocketAddrV4,
) -> String {
    let mut s = String::new();
    let teids: Vec<String> = trace
        .hops
        .iter()
        .filter_map(teid)
        .map(|t| format!("TEID {t:#x}"))
        .collect();
    if let Some(b) = bearers.first() {
        let _ = writeln!(
            s,
            "The bearer of IMSI {} (d11 show sgw bearers): uplink enb → sgw TEID {:#x}, sgw → pgw TEID {:#x}; downlink pgw → sgw {:#x}, sgw → enb {:#x}. Seen on the wires: {}.",
            b.imsi,
            b.sgw_s1u_teid.0,
            b.pgw_teid.0,
            b.sgw_s5_teid.0,
            b.enb_teid.0,
            teids.join(", ")
        );
    }
    let _ = match nat_entry(pgw_nat, &client.to_string()) {
        Some(e) => writeln!(
            s,
            "The PGW's NAT entry (d11 show pgw nat): {} {client} ↔ {}, {} packets out and {} back, {}.",
            e.proto, e.reply_dst, e.packets_orig, e.packets_reply, e.state
        ),
        None => writeln!(s, "(no NAT entry for {client} in the PGW's table)"),
    };
    s
}

/// The entry of a NAT table whose original source is `addr`.
fn nat_entry<'a>(table: &'a [NatEntryView], addr: &str) -> Option<&'a NatEntryView> {
    table.iter().find(|e| e.src == addr)
}

fn chapter8_tables(
    hops: &[Hop],
    pgw_nat: &[NatEntryView],
    vgw_nat: &[NatEntryView],
    client: SocketAddrV4,
) -> String {
    let mut s = String::new();
    let public = nat_entry(pgw_nat, &client.to_string()).map(|e| e.reply_dst.as_str());
    let _ = match public.and_then(|p| nat_entry(vgw_nat, p)) {
        Some(e) => writeln!(
            s,
            "The cloud gateway's NAT entry (d11 show vgw nat): {} → {} becomes {} → {}; the phone's public address stays the source, so the VM sees who called.",
            e.src, e.dst, e.src, e.reply_src
        ),
        None => writeln!(s, "(no entry for the phone's public address in the vgw's NAT table)"),
    };
    if let Some(v) = hops.iter().find_map(vni) {
        let _ = writeln!(
            s,
            "VNI {v} is the tenant's 24-bit VXLAN id: a vSwitch hands the frame only to a VM in that VNI."
        );
    }
    s
}

fn chapter9_tables(trace: &TraceJson, lb: Option<&L4lbReport>) -> Result<String> {
    let mut s = String::new();
    let hops = &trace.hops;
    let last = hops.last().context("no hops")?;
    let backend = dst(last);
    if let Some(lb) = lb {
        let b = &lb.backend;
        writeln!(
            s,
            "The load balancer chose {backend} ({} balancing, {} of {} servers UP; d11 show vm-lb):",
            b.balance,
            b.up,
            b.servers.len()
        )?;
        for srv in &b.servers {
            writeln!(
                s,
                "  {:<24} {:<4} {} session{} so far, last check {}",
                srv.name,
                srv.status,
                srv.total,
                if srv.total == 1 { "" } else { "s" },
                srv.last_check.as_ref().map_or("-", |c| c.code.as_str())
            )?;
        }
    }
    // The new connection starts at TTL 64; a lower TTL at the controller
    // means a router was on the way.
    let detour = new_connection(hops).is_some_and(|i| last.stack.ttl < hops[i].stack.ttl);
    if detour {
        writeln!(s, "The controller is in the other AZ's subnet, so the vgw (the VPC's router) routed the new connection between the subnets: VXLAN to the vgw and back, TTL one lower.")?;
    }
    let reply = trace.order.reply();
    writeln!(
        s,
        "The controller on {} answered {} {}: order {} (served_by {}), TLS ending at the controller, the proxy never saw the plaintext.",
        node_of(&last.wire),
        trace.order.status,
        reply.status.as_deref().unwrap_or(""),
        reply.order_id.as_deref().ok_or_else(|| missing("order_id"))?,
        reply.served_by.as_deref().ok_or_else(|| missing("served_by"))?
    )?;
    Ok(s)
}

/// Chapter 10 from the reply's `rpc` path, when the controller called the
/// order service (a controller-only lab's reply has none).
fn chapter10(order: &OrderOutcome) -> Option<String> {
    let lines = d11_apps::phone::rpc_lines(&order.body);
    if lines.is_empty() {
        return None;
    }
    let reply = order.reply();
    let calls = reply.rpc.map_or(0, |r| r.path.len());
    let mut s = format!(
        "{} did not record order {} itself: it called order.create by RPC, on a provider the registry listed. \
         The order service reported {calls} call{} behind it, and the database's commit:\n",
        reply.served_by.as_deref().unwrap_or("the controller"),
        reply.order_id.as_deref().unwrap_or("?"),
        if calls == 1 { "" } else { "s" },
    );
    for line in lines {
        s.push_str(&line);
        s.push('\n');
    }
    Some(s)
}

fn capture_hint(trace: &TraceJson) -> String {
    let cap = trace.capture.display();
    let secrets = trace.secrets_in_capture;
    format!(
        "{cap}: every wire of the lab during the traced order, one pcapng interface per wire (node:port){}, \
         packet by packet: each packet's copies on the wires it crossed, hop by hop.\n\
         Open it in Wireshark (wireshark {cap}) and filter `http`: the POST and the 201 show decrypted with no setup{}.\n",
        if secrets { ", with the order's TLS secrets in a Decryption Secrets Block" } else { "" },
        if secrets { "" } else { " once you give Wireshark the key log (this capture has no secrets block)" }
    )
}

// ---------------------------------------------------------------------------
// The TCP connection of one wire (d11_lab::tcpview), told state by state.

/// Flags as the story names them: `SYN,ACK`.
fn flag_names(f: &Flags) -> String {
    let names: Vec<&str> = [
        (f.syn, "SYN"),
        (f.fin, "FIN"),
        (f.rst, "RST"),
        (f.psh, "PSH"),
        (f.ack, "ACK"),
    ]
    .iter()
    .filter(|(b, _)| *b)
    .map(|(_, n)| *n)
    .collect();
    names.join(",")
}

/// The segments of one connection, with the opener's TCP state (RFC 9293
/// § 3.3.2) after each one that changes it, as `d11_lab::tcpview` follows
/// it: the handshake, the data in between, the close.
fn tcp_story(rows: &[Row]) -> String {
    let mut s = String::new();
    let mut state = State::Closed;
    let (mut reset, mut client_fin, mut late_data) = (false, false, false);
    // Data segments since the last state change: count, bytes up, bytes down.
    let mut data = (0usize, 0u32, 0u32);
    let flush = |s: &mut String, data: &mut (usize, u32, u32)| {
        if data.0 > 0 {
            let _ = writeln!(
                s,
                "    … {} data segment{}: {} B up, {} B down",
                data.0,
                if data.0 == 1 { "" } else { "s" },
                data.1,
                data.2
            );
        }
        *data = (0, 0, 0);
    };
    for r in rows {
        let from_client = r.dir == Dir::ClientToServer;
        if r.len > 0 && !from_client && client_fin {
            late_data = true;
        }
        client_fin |= from_client && r.flags.fin;
        let next = if r.flags.rst {
            let was = reset;
            reset = true;
            Some(match (was, from_client, late_data) {
                (true, _, _) => "still CLOSED: RST again".to_string(),
                (false, true, true) => {
                    "CLOSED: data came after the app had closed its socket, so its stack answers RST".into()
                }
                (false, true, false) => "CLOSED (reset by the opener)".into(),
                (false, false, _) => "CLOSED (reset by the peer)".into(),
            })
        } else if r.client != state {
            Some(match r.client {
                State::Established if !from_client => "ESTABLISHED (after its ACK)".into(),
                State::TimeWait if !from_client => "TIME-WAIT (after its ACK)".into(),
                other => other.to_string(),
            })
        } else {
            None
        };
        state = r.client;
        match next {
            Some(n) => {
                flush(&mut s, &mut data);
                let _ = writeln!(
                    s,
                    "  {:>8.3} ms  {}  {:<8} {:>5} B   → {n}",
                    r.t_ns as f64 / 1e6,
                    if from_client { "→" } else { "←" },
                    flag_names(&r.flags),
                    r.len
                );
            }
            None if r.len > 0 => {
                data.0 += 1;
                if from_client {
                    data.1 += r.len;
                } else {
                    data.2 += r.len;
                }
            }
            None => {}
        }
    }
    flush(&mut s, &mut data);
    if rows.is_empty() {
        let _ = writeln!(s, "  (no segments of this connection on the wire)");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// A hop of `d11 trace --json` as this run's trace printed it.
    #[allow(clippy::too_many_arguments)]
    fn hop(
        wire: &str,
        eth: (&str, &str),
        outer: Option<(&str, &str)>,
        tunnel: Value,
        inner: Option<(&str, &str)>,
        ip: (&str, &str),
        ports: (u16, u16),
        ttl: u8,
    ) -> Value {
        json!({
            "wire": wire, "ts_ns": 1_000_000 + u64::from(64 - ttl) * 1000,
            "eth": {"src": eth.0, "dst": eth.1},
            "outer_ip": outer.map(|o| json!({"src": o.0, "dst": o.1})),
            "tunnel": tunnel,
            "inner_eth": inner.map(|o| json!({"src": o.0, "dst": o.1})),
            "ip": {"src": ip.0, "dst": ip.1}, "ttl": ttl,
            "ports": {"src": ports.0, "dst": ports.1}, "seq": 1,
            "checks": [{"ok": true, "what": "canned"}],
        })
    }

    const PHONE: (&str, &str) = ("10.45.0.2", "203.0.113.24");
    const PUBLIC: (&str, &str) = ("198.51.100.139", "203.0.113.24");
    const VM: (&str, &str) = ("198.51.100.139", "192.168.1.10");
    const NEW: (&str, &str) = ("192.168.1.10", "192.168.2.20");

    /// The hops of a real run whose order went to vm-ctl2 (the other AZ).
    fn hops() -> Vec<Hop> {
        hop_values()
            .into_iter()
            .map(|h| serde_json::from_value(h).expect("a hop of d11 trace --json"))
            .collect()
    }

    fn hop_values() -> Vec<Value> {
        let gw = ("02:00:00:00:00:01", "02:00:00:00:00:11");
        let vm = ("02:00:00:00:0a:01", "02:00:00:00:01:10");
        vec![
            hop(
                "ue:eth0",
                ("02:30:e0:92:c6:78", "02:ce:56:e0:43:d9"),
                None,
                Value::Null,
                None,
                PHONE,
                (43606, 443),
                64,
            ),
            hop(
                "enb:s1u",
                ("02:43:10:d1:66:cb", "02:d8:f1:8b:58:cf"),
                Some(("172.16.1.1", "172.16.1.2")),
                json!({"gtpu": {"teid": 512}}),
                None,
                PHONE,
                (43606, 443),
                64,
            ),
            hop(
                "sgw:s5",
                ("02:c4:7f:78:d4:10", "02:ce:56:e0:43:d9"),
                Some(("172.16.2.1", "172.16.2.2")),
                json!({"gtpu": {"teid": 1024}}),
                None,
                PHONE,
                (43606, 443),
                64,
            ),
            hop(
                "pgw:sgi",
                ("02:c3:68:f3:49:fc", "02:83:3d:dd:a4:74"),
                None,
                Value::Null,
                None,
                PUBLIC,
                (43606, 443),
                63,
            ),
            hop(
                "a2:a2c1",
                ("02:aa:e6:7a:d8:2e", "02:02:7d:c5:4b:4a"),
                None,
                Value::Null,
                None,
                PUBLIC,
                (43606, 443),
                62,
            ),
            hop(
                "vgw:underlay",
                gw,
                Some(("10.0.0.1", "10.0.0.11")),
                json!({"vxlan": {"vni": 1001}}),
                Some(vm),
                VM,
                (43606, 443),
                61,
            ),
            hop(
                "hosta:underlay",
                gw,
                Some(("10.0.0.1", "10.0.0.11")),
                json!({"vxlan": {"vni": 1001}}),
                Some(vm),
                VM,
                (43606, 443),
                61,
            ),
            hop(
                "vm-lb:eth0",
                vm,
                None,
                Value::Null,
                None,
                VM,
                (43606, 443),
                61,
            ),
            hop(
                "vm-lb:eth0",
                ("02:00:00:00:01:10", "02:00:00:00:0a:01"),
                None,
                Value::Null,
                None,
                NEW,
                (54998, 443),
                64,
            ),
            hop(
                "hosta:underlay",
                ("02:00:00:00:00:11", "02:00:00:00:00:01"),
                Some(("10.0.0.11", "10.0.0.1")),
                json!({"vxlan": {"vni": 1001}}),
                Some(("02:00:00:00:01:10", "02:00:00:00:0a:01")),
                NEW,
                (54998, 443),
                64,
            ),
            hop(
                "vgw:underlay",
                ("02:00:00:00:00:01", "02:00:00:00:00:12"),
                Some(("10.0.0.1", "10.0.0.12")),
                json!({"vxlan": {"vni": 1001}}),
                Some(("02:00:00:00:0a:01", "02:00:00:00:01:21")),
                NEW,
                (54998, 443),
                63,
            ),
            hop(
                "vm-ctl2:eth0",
                ("02:00:00:00:0a:01", "02:00:00:00:01:21"),
                None,
                Value::Null,
                None,
                NEW,
                (54998, 443),
                63,
            ),
        ]
    }

    fn order() -> OrderOutcome {
        serde_json::from_value(order_value()).expect("d11 order --json")
    }

    fn order_value() -> Value {
        json!({
            "status": 201,
            "body": {"status": "created", "order_id": "ord-0e635ab44146009a", "served_by": "vm-ctl2",
                     "order": {"date": "2018-07-01", "className": "趣谈网络协议", "Author": "刘超", "price": "68"}},
            "attempts": 1, "errors": [], "idempotency_key": "c9dc729b-cc42-41e8-931c-d7255aea555c",
            "local": "10.45.0.2:43606", "remote": "203.0.113.24:443",
            "tls_version": "TLSv1_3", "cipher": "TLS13_AES_256_GCM_SHA384", "elapsed_ms": 6.6
        })
    }

    fn trace() -> TraceJson {
        serde_json::from_value(json!({"order": order_value(), "capture": "/tmp/d11-demo.pcapng",
                                      "secrets_in_capture": true, "hops": hop_values(), "ok": true}))
        .expect("d11 trace --json")
    }

    fn net() -> Net {
        let status = json!({"nodes": [
            {"name": "ue", "role": null, "ports": [{"name": "eth0", "mac": "02:30:e0:92:c6:78", "peer": "enb:radio"}]},
            {"name": "enb", "role": "enb", "ports": [{"name": "s1u", "mac": "02:43:10:d1:66:cb", "peer": "sgw:s1u"}]},
            {"name": "sgw", "role": "sgw", "ports": [{"name": "s5", "mac": "02:c4:7f:78:d4:10", "peer": "pgw:s5"}]},
            {"name": "pgw", "role": "pgw", "ports": [{"name": "s5", "mac": "02:ce:56:e0:43:d9", "peer": "sgw:s5"},
                                                     {"name": "sgi", "mac": "02:c3:68:f3:49:fc", "peer": "a2:sgi"}]},
            {"name": "a2", "role": "router", "ports": [{"name": "a2c1", "mac": "02:aa:e6:7a:d8:2e", "peer": "c1:c1a2"}]},
            {"name": "vgw", "role": "vgw", "ports": [{"name": "underlay", "mac": "02:00:00:00:00:01", "peer": "tor:vgw"}]},
            {"name": "hosta", "role": "vswitch", "ports": [{"name": "underlay", "mac": "02:00:00:00:00:11", "peer": "tor:hosta"}]},
            {"name": "vm-lb", "role": "l4lb", "ports": [{"name": "eth0", "mac": "02:00:00:00:01:10", "peer": "hosta:lb"}]},
            {"name": "vm-ctl2", "role": "controller", "ports": [{"name": "eth0", "mac": "02:00:00:00:01:21", "peer": "hostb:ctl2"}]},
        ]});
        // What d11 status --json adds around the names, roles, MACs and peers.
        let mut status = status;
        for n in status["nodes"].as_array_mut().unwrap() {
            let role = n["role"].clone();
            n["kind"] = json!(if role.is_null() { "host" } else { "element" });
            for (k, v) in [
                ("netns", json!("t-ue")),
                ("pid", json!(1)),
                ("state", json!("running")),
                ("restarts", json!(0)),
                ("last_exit", Value::Null),
                ("answering", json!(true)),
                ("report", Value::Null),
            ] {
                n[k] = v;
            }
            for p in n["ports"].as_array_mut().unwrap() {
                p["address"] = Value::Null;
                p["mtu"] = json!(1500);
                p["counters"] = Value::Null;
            }
        }
        status["lab"] = json!("t");
        status["description"] = json!("canned");
        status["supervisor_pid"] = json!(1);
        status["wires"] = json!([]);
        Net::from_status(&serde_json::from_value(status).expect("d11 status --json"))
    }

    #[test]
    fn chapter6_tells_the_tls_version_cipher_order_id_and_backend() {
        let s = chapter6(&order()).unwrap();
        assert!(
            s.contains("from 10.45.0.2:43606 to 203.0.113.24:443"),
            "{s}"
        );
        assert!(s.contains("TLS 1.3 with TLS13_AES_256_GCM_SHA384"), "{s}");
        assert!(s.contains("趣谈网络协议"), "{s}");
        assert!(s.contains("→ 201 created"), "{s}");
        assert!(
            s.contains("order ord-0e635ab44146009a served by vm-ctl2"),
            "{s}"
        );
    }

    #[test]
    fn chapter10_tells_the_rpc_path_only_when_the_reply_has_one() {
        assert_eq!(chapter10(&order()), None);
        let mut o = order();
        o.body["rpc"] = json!({
            "path": [
                {"call": "db.order_create", "provider": "192.168.1.60:20880", "tried": 1, "ms": 1.2, "result": "created"},
                {"call": "stock.deduct", "provider": "192.168.1.50:20880", "tried": 1, "ms": 3.4, "result": "taken", "cas_attempts": 2},
            ],
            "commit": {"seq": 42, "replication": "acked in 0.4 ms"},
        });
        let s = chapter10(&o).unwrap();
        assert!(
            s.starts_with("vm-ctl2 did not record order ord-0e635ab44146009a itself")
                && s.contains("reported 2 calls"),
            "{s}"
        );
        assert!(
            s.contains(
                "  rpc  stock.deduct      192.168.1.50:20880   3.4 ms  taken (2 CAS attempts)\n"
            ),
            "{s}"
        );
        assert!(
            s.ends_with("  commit seq 42, replication acked in 0.4 ms\n"),
            "{s}"
        );
    }

    #[test]
    fn an_order_without_its_id_is_an_error_that_names_the_field() {
        let mut o = order();
        o.body.as_object_mut().unwrap().remove("order_id");
        let e = chapter6(&o).unwrap_err().to_string();
        assert!(e.contains("order_id"), "{e}");
    }

    #[test]
    fn hops_split_into_chapters_at_the_first_vxlan_hop_and_the_proxys_new_connection() {
        let c = chapters(&hops());
        assert_eq!(
            c,
            Chapters {
                seven: 0..5,
                eight: 5..8,
                nine: 8..12
            }
        );
        let (src, backend, last) = proxy_leg(&hops()).unwrap();
        assert_eq!(src.to_string(), "192.168.1.10:54998");
        assert_eq!(backend.to_string(), "192.168.2.20:443");
        assert_eq!(last, "vm-ctl2:eth0");
    }

    #[test]
    fn each_hop_is_told_from_how_its_headers_differ_from_the_previous_ones() {
        let (n, h) = (net(), hops());
        let s = narrate_hops(&n, &h, 0..h.len());
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 12, "{s}");
        assert!(
            lines[0].contains("ue sends 10.45.0.2:43606 → 203.0.113.24:443, TTL 64")
                && lines[0].contains("02:ce:56:e0:43:d9 (pgw:s5)"),
            "{s}"
        );
        assert!(
            lines[1].contains("enb puts the phone's IP packet")
                && lines[1].contains("TEID 0x200, 172.16.1.1 → 172.16.1.2"),
            "{s}"
        );
        assert!(
            lines[2].contains("sgw takes it out of TEID 0x200 and into TEID 0x400"),
            "{s}"
        );
        assert!(lines[3].contains("pgw ends the tunnel, routes it (TTL 64 → 63) and SNATs the source 10.45.0.2:43606 → 198.51.100.139:43606"), "{s}");
        assert!(
            lines[4].contains("a2 routes it (TTL 63 → 62): new MACs"),
            "{s}"
        );
        assert!(lines[5].contains("vgw routes it (TTL 62 → 61) and DNATs the destination 203.0.113.24:443 → 192.168.1.10:443") && lines[5].contains("VNI 1001, VTEP 10.0.0.1 → 10.0.0.11"), "{s}");
        assert!(
            lines[6].contains("underlay switch") && lines[6].contains("to hosta"),
            "{s}"
        );
        assert!(
            lines[7].contains("hosta's vSwitch takes the frame out of VXLAN"),
            "{s}"
        );
        assert!(
            lines[8].contains("vm-lb's l4lb ended the phone's TCP")
                && lines[8].contains("192.168.1.10:54998 → 192.168.2.20:443, TTL 64"),
            "{s}"
        );
        assert!(
            lines[9].contains("hosta's vSwitch puts the VM's frame")
                && lines[9].contains("VTEP 10.0.0.11 → 10.0.0.1"),
            "{s}"
        );
        assert!(
            lines[10].contains("vgw routes it (TTL 64 → 63), then sends")
                && lines[10].contains("10.0.0.1 → 10.0.0.12"),
            "{s}"
        );
        assert!(
            lines[11].contains("hostb's vSwitch takes the frame out of VXLAN")
                && lines[11].contains("TTL 63"),
            "{s}"
        );
    }

    #[test]
    fn the_tables_name_the_teids_the_nat_mappings_and_the_backend() {
        let t = trace();
        let client: SocketAddrV4 = "10.45.0.2:43606".parse().unwrap();
        let bearers: Vec<d11_elements::bearer::Bearer> = serde_json::from_value(json!([{"imsi": "001010000000001", "ue_ip": "10.45.0.2", "enb_teid": 256, "sgw_s1u_teid": 512, "sgw_s5_teid": 768, "pgw_teid": 1024}])).unwrap();
        let pgw: Vec<NatEntryView> = serde_json::from_value(json!([{"proto": "tcp", "state": "closing", "src": "10.45.0.2:43606", "dst": "203.0.113.24:443",
                          "reply_src": "203.0.113.24:443", "reply_dst": "198.51.100.139:43606", "expires_in_s": 10, "packets_orig": 11, "packets_reply": 9}])).unwrap();
        let vgw: Vec<NatEntryView> = serde_json::from_value(json!([{"proto": "tcp", "state": "closing", "src": "198.51.100.139:43606", "dst": "203.0.113.24:443",
                          "reply_src": "192.168.1.10:443", "reply_dst": "198.51.100.139:43606", "expires_in_s": 10, "packets_orig": 11, "packets_reply": 9}])).unwrap();
        let s7 = chapter7_tables(&t, &bearers, &pgw, client);
        assert!(s7.contains("enb → sgw TEID 0x200, sgw → pgw TEID 0x400; downlink pgw → sgw 0x300, sgw → enb 0x100"), "{s7}");
        assert!(
            s7.contains("Seen on the wires: TEID 0x200, TEID 0x400"),
            "{s7}"
        );
        assert!(
            s7.contains("tcp 10.45.0.2:43606 ↔ 198.51.100.139:43606, 11 packets out and 9 back"),
            "{s7}"
        );
        let s8 = chapter8_tables(&hops(), &pgw, &vgw, client);
        assert!(s8.contains("198.51.100.139:43606 → 203.0.113.24:443 becomes 198.51.100.139:43606 → 192.168.1.10:443"), "{s8}");
        assert!(s8.contains("VNI 1001"), "{s8}");
        let server = |addr: &str| {
            json!({"name": format!("ctl/{addr}"), "address": addr, "status": "UP",
            "checks_passed": 3, "checks_failed": 0, "ms_since_change": 10, "active": 0, "total": 1,
            "connect_failures": 0, "bytes_in": 1, "bytes_out": 1,
            "last_check": {"code": "L4OK", "reason": "Layer4 check passed", "info": null, "duration_ms": 0}})
        };
        let lb: L4lbReport = serde_json::from_value(json!({
            "frontend": {"name": "vm-lb", "listen": "192.168.1.10:443", "maxconn": 4096, "active": 0,
                         "accepted": 1, "maxconn_pauses": 0, "no_backend": 0, "connect_failures": 0,
                         "client_timeouts": 0, "server_timeouts": 0, "bytes_in": 1, "bytes_out": 1},
            "backend": {"name": "ctl", "balance": "roundrobin", "up": 2,
                        "servers": [server("192.168.1.20:443"), server("192.168.2.20:443")]}})).unwrap();
        let s9 = chapter9_tables(&t, Some(&lb)).unwrap();
        assert!(
            s9.contains("chose 192.168.2.20:443 (roundrobin balancing, 2 of 2 servers UP"),
            "{s9}"
        );
        assert!(
            s9.contains("ctl/192.168.2.20:443     UP   1 session so far, last check L4OK"),
            "{s9}"
        );
        assert!(s9.contains("VXLAN to the vgw and back"), "{s9}");
        assert!(
            s9.contains("order ord-0e635ab44146009a (served_by vm-ctl2)"),
            "{s9}"
        );
        let table = crate::trace::table(&hops());
        assert_eq!(table.lines().count(), 13, "{table}");
        assert!(
            table.lines().nth(2).unwrap().contains("TEID 0x200"),
            "{table}"
        );
        assert!(trace_summary(&t).contains("12 hops"));
        assert!(capture_hint(&t).contains("Decryption Secrets Block"));
    }

    #[test]
    fn the_openers_states_are_told_from_the_tcpview_rows() {
        // The phone's wire in a real run (as tshark showed it): it closed
        // first, and answered the server's close_notify that came after its
        // FIN with RST; the states are tcpview's after each segment.
        use State::*;
        let row = |ms: f64, up: bool, flags: &str, len: u32, client: State, server: State| Row {
            t_ns: (ms * 1e6) as u64,
            dir: if up {
                Dir::ClientToServer
            } else {
                Dir::ServerToClient
            },
            flags: Flags {
                syn: flags.contains('S'),
                ack: flags.contains('A'),
                fin: flags.contains('F'),
                rst: flags.contains('R'),
                psh: flags.contains('P'),
                urg: false,
            },
            seq: 0,
            ack: None,
            len,
            win: 65535,
            client,
            server,
            notes: vec![],
        };
        let rows = [
            row(0.0, true, "S", 0, SynSent, SynReceived),
            row(2.814878, false, "SA", 0, Established, SynReceived),
            row(2.865322, true, "A", 0, Established, Established),
            row(3.340636, true, "PA", 258, Established, Established),
            row(4.872074, false, "A", 1348, Established, Established),
            row(7.970823, true, "FA", 0, FinWait1, CloseWait),
            row(11.029563, false, "PA", 24, FinWait2, CloseWait),
            row(11.045486, true, "R", 0, Closed, Closed),
        ];
        let s = tcp_story(&rows);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 6, "{s}");
        assert!(
            lines[0].contains("→  SYN ") && lines[0].ends_with("→ SYN-SENT"),
            "{s}"
        );
        assert!(
            lines[1].contains("←  SYN,ACK") && lines[1].ends_with("ESTABLISHED (after its ACK)"),
            "{s}"
        );
        assert!(
            lines[2].ends_with("… 2 data segments: 258 B up, 1348 B down"),
            "{s}"
        );
        assert!(
            lines[3].contains("7.971 ms")
                && lines[3].contains("FIN,ACK")
                && lines[3].ends_with("→ FIN-WAIT-1"),
            "{s}"
        );
        assert!(
            lines[4].contains("PSH,ACK")
                && lines[4].contains("24 B")
                && lines[4].ends_with("→ FIN-WAIT-2"),
            "{s}"
        );
        assert!(
            lines[5].contains("RST") && lines[5].contains("data came after the app had closed"),
            "{s}"
        );
        assert_eq!(
            tcp_story(&[]),
            "  (no segments of this connection on the wire)\n"
        );
    }
}
