//! `d11 demo`: up, order, trace, down — narrated chapter by chapter.
//!
//! The demo knows no protocol: it runs the other `d11` commands as child
//! processes with `--json` (`up`, `order`, `trace`, `status`, `show`), reads
//! the TCP segments of the trace's capture with tshark when it is installed,
//! and tells what those outputs say happened in this run. Every number it
//! prints comes from one of them. The lab always goes down at the end: on
//! success, on error and on Ctrl-C ([`DemoLab`]'s `Drop`; SIGINT and SIGTERM
//! only set a flag in this process, checked after each step).

use crate::need_root;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

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

    /// `d11 ARGS` that must succeed, its stdout as JSON.
    fn json(&self, args: &[&str]) -> Result<Value> {
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
    println!("{}", heading(&format!("Chapter 1: the lab is built from {topo}: one namespace per node, real veth and TAP wires, one process per element")));
    // Owned by this process: a demo killed even by SIGKILL leaves no lab.
    let me = std::process::id().to_string();
    println!("$ d11 up -t {topo} --name {lab} --owner {me}");
    let up = d.run(&["up", "-t", &topo, "--name", lab, "--owner", &me])?;
    print!("{}", String::from_utf8_lossy(&up.stdout));
    if !up.status.success() {
        bail!(
            "d11 up failed: {}",
            String::from_utf8_lossy(&up.stderr).trim()
        );
    }
    let status = d.json(&["status", "--name", lab, "--json"])?;
    let net = Net::from_status(&status)?;

    println!(
        "\n{}",
        heading(
            "Chapters 5 and 6: the phone app opens TCP and TLS to the shop and POSTs the order"
        )
    );
    println!("$ d11 order --name {lab} --json");
    let order = d.json(&["order", "--name", lab, "--json"])?;
    print!("{}", chapter6(&order)?);

    println!(
        "\n{}",
        heading("A second order, captured on every wire of the lab while it crosses")
    );
    let f = file.to_string_lossy();
    println!("$ d11 trace --name {lab} -w {f} --json");
    let trace = d.json(&["trace", "--name", lab, "-w", &f, "--json"])?;
    let hops = trace["hops"].as_array().context("the trace has no hops")?;
    print!("{}", hop_table(hops)?);
    print!("{}", trace_summary(&trace)?);

    let client: SocketAddrV4 = parse(&trace, "/order/local")?;
    let remote: SocketAddrV4 = parse(&trace, "/order/remote")?;
    let proxied = proxy_leg(hops)?;
    println!("\n{}", heading("Chapter 5 in this run: the TCP segments of the traced order, read from the capture with tshark"));
    match tcp_segments(file, &first_wire(hops)?, client) {
        Ok(segs) => {
            println!("the phone's connection {client} → {remote}:");
            print!("{}", tcp_story(&segs, client));
        }
        Err(e) => println!("({e}; the trace above shows the request's first data segment only)"),
    }
    if let Some((new, last)) = proxied {
        match tcp_segments(file, &last, new) {
            Ok(segs) => {
                println!(
                    "the load balancer's own connection {new} → the controller, seen on {last}:"
                );
                print!("{}", tcp_story(&segs, new));
            }
            Err(e) => println!("({e})"),
        }
    }

    // The elements' and apps' own tables, after the traced order.
    let bearers = show_role(d, lab, &net, "sgw", Some("bearers"))?;
    let pgw_nat = show_role(d, lab, &net, "pgw", Some("nat"))?;
    let vgw_nat = show_role(d, lab, &net, "vgw", Some("nat"))?;
    let lb = show_role(d, lab, &net, "l4lb", None)?;

    let ch = chapters(hops)?;
    println!("\n{}", heading("Chapter 7: through the eNodeB, both GTP-U tunnels and the PGW's NAT, then the carriers"));
    print!("{}", narrate_hops(&net, hops, ch.seven.clone()));
    print!("{}", chapter7_tables(&trace, &bearers, &pgw_nat)?);
    println!(
        "\n{}",
        heading("Chapter 8: into the data centre: the cloud gateway's DNAT and VXLAN")
    );
    print!("{}", narrate_hops(&net, hops, ch.eight.clone()));
    print!("{}", chapter8_tables(hops, &pgw_nat, &vgw_nat, client)?);
    println!("\n{}", heading("Chapter 9: the L4 proxy ends the phone's TCP and opens a new connection to a controller"));
    print!("{}", narrate_hops(&net, hops, ch.nine.clone()));
    print!("{}", chapter9_tables(&trace, &lb)?);
    if let Some(s) = chapter10(&trace["order"]) {
        println!(
            "\n{}",
            heading("Chapter 10: the controller calls the order service by RPC")
        );
        print!("{s}");
    }

    println!("\n{}", heading("The capture"));
    print!("{}", capture_hint(&trace));
    Ok(())
}

/// `d11 show LAB NODE [TABLE] --json` of the node with `role`, or Null when
/// the topology has none (the narration then says so).
fn show_role(d: &Runner, lab: &str, net: &Net, role: &str, table: Option<&str>) -> Result<Value> {
    let Some(node) = net.node_with_role(role) else {
        return Ok(Value::Null);
    };
    let mut args = vec!["show", "--name", lab, node];
    args.extend(table);
    args.push("--json");
    d.json(&args)
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

// ---------------------------------------------------------------------------
// Reading the JSON.

fn at<'a>(v: &'a Value, ptr: &str) -> Result<&'a Value> {
    v.pointer(ptr)
        .filter(|x| !x.is_null())
        .with_context(|| format!("no {ptr} in the output"))
}

fn text<'a>(v: &'a Value, ptr: &str) -> Result<&'a str> {
    at(v, ptr)?
        .as_str()
        .with_context(|| format!("{ptr} is not a string"))
}

fn num(v: &Value, ptr: &str) -> Result<u64> {
    at(v, ptr)?
        .as_u64()
        .with_context(|| format!("{ptr} is not a number"))
}

fn parse<T: std::str::FromStr>(v: &Value, ptr: &str) -> Result<T> {
    text(v, ptr)?
        .parse()
        .map_err(|_| anyhow::anyhow!("{ptr} is not what it should be"))
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
}

impl Net {
    fn from_status(status: &Value) -> Result<Net> {
        let mut net = Net::default();
        for n in status["nodes"].as_array().context("status has no nodes")? {
            let name = n["name"].as_str().context("a node without a name")?;
            if let Some(r) = n["role"].as_str() {
                net.roles.insert(name.into(), r.into());
            }
            for p in n["ports"].as_array().into_iter().flatten() {
                let port = format!("{name}:{}", p["name"].as_str().unwrap_or("?"));
                if let Some(m) = p["mac"].as_str() {
                    net.macs.insert(m.into(), port.clone());
                }
                if let Some(peer) = p["peer"].as_str() {
                    net.peers.insert(port, peer.into());
                }
            }
        }
        Ok(net)
    }

    fn node_with_role(&self, role: &str) -> Option<&str> {
        self.roles
            .iter()
            .find(|(_, r)| *r == role)
            .map(|(n, _)| n.as_str())
    }

    /// A MAC with the port that holds it, when the lab knows it.
    fn mac(&self, mac: &str) -> String {
        match self.macs.get(mac) {
            Some(p) => format!("{mac} ({p})"),
            None => mac.to_string(),
        }
    }

    /// The node that put `hop`'s frame on its wire: the owner of the source
    /// MAC when it is an end of the wire, else the wire's other end from
    /// the receiver.
    fn sender(&self, hop: &Value) -> String {
        let wire = hop["wire"].as_str().unwrap_or("?");
        let here = node_of(wire);
        let there = self.peers.get(wire).map(|p| node_of(p)).unwrap_or("?");
        let src = hop["eth"]["src"].as_str().and_then(|m| self.macs.get(m));
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

/// Chapters 5 and 6 from `d11 order --json`.
fn chapter6(order: &Value) -> Result<String> {
    let mut s = String::new();
    let status = num(order, "/status")?;
    writeln!(
        s,
        "The phone app in ue connected from {} to {} (www.geektime.com in the phone's hosts file): \
         TCP three-way handshake, then {} with {}, the server's chain verified against the lab root only.",
        text(order, "/local")?,
        text(order, "/remote")?,
        tls_name(text(order, "/tls_version")?),
        text(order, "/cipher")?
    )?;
    let sent = serde_json::to_string(&serde_json::json!({ "order": at(order, "/body/order")? }))?;
    writeln!(
        s,
        "POST /purchaseOrder, Content-Type: application/json, Idempotency-Key: {}",
        text(order, "/idempotency_key")?
    )?;
    writeln!(s, "{sent}")?;
    let attempts = num(order, "/attempts")?;
    writeln!(
        s,
        "→ {status} {} in {:.1} ms ({attempts} attempt{}): order {} served by {}.",
        order["body"]["status"].as_str().unwrap_or(""),
        order["elapsed_ms"].as_f64().unwrap_or(0.0),
        if attempts == 1 { "" } else { "s" },
        text(order, "/body/order_id")?,
        text(order, "/body/served_by")?
    )?;
    for e in order["errors"].as_array().into_iter().flatten() {
        writeln!(
            s,
            "  (retried with the same key after: {})",
            e.as_str().unwrap_or("?")
        )?;
    }
    Ok(s)
}

fn ip_port(h: &Value, side: &str) -> String {
    format!(
        "{}:{}",
        h["ip"][side].as_str().unwrap_or("?"),
        h["ports"][side]
    )
}

fn flow(h: &Value) -> String {
    format!("{} → {}", ip_port(h, "src"), ip_port(h, "dst"))
}

fn pair(v: &Value) -> String {
    format!(
        "{} → {}",
        v["src"].as_str().unwrap_or("?"),
        v["dst"].as_str().unwrap_or("?")
    )
}

fn tunnel(h: &Value) -> String {
    if let Some(t) = h["tunnel"]["gtpu"]["teid"].as_u64() {
        format!("TEID {t:#x}")
    } else if let Some(v) = h["tunnel"]["vxlan"]["vni"].as_u64() {
        format!("VNI {v}")
    } else {
        "-".into()
    }
}

/// The per-hop table, exactly as `d11 trace` prints it.
fn hop_table(hops: &[Value]) -> Result<String> {
    let hops: Vec<d11_lab::trace::Hop> = hops
        .iter()
        .map(|h| serde_json::from_value(h.clone()).context("a hop of d11 trace --json"))
        .collect::<Result<_>>()?;
    Ok(crate::trace::table(&hops))
}

fn trace_summary(trace: &Value) -> Result<String> {
    let hops = at(trace, "/hops")?.as_array().context("hops")?;
    let checks: usize = hops
        .iter()
        .map(|h| h["checks"].as_array().map_or(0, Vec::len))
        .sum();
    let t0 = hops.first().and_then(|h| h["ts_ns"].as_u64()).unwrap_or(0);
    let t1 = hops.last().and_then(|h| h["ts_ns"].as_u64()).unwrap_or(t0);
    Ok(format!(
        "{} hops, {checks} checks against the topology: {}. The POST's TLS record took {} µs from the phone's radio to {}.\n",
        hops.len(),
        if trace["ok"] == true {
            "every row as the topology implies ✓"
        } else {
            "SOME ROWS DIFFER ✗"
        },
        t1.saturating_sub(t0) / 1000,
        hops.last().and_then(|h| h["wire"].as_str()).unwrap_or("?")
    ))
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
fn chapters(hops: &[Value]) -> Result<Chapters> {
    let vxlan = hops
        .iter()
        .position(|h| !h["tunnel"]["vxlan"].is_null())
        .unwrap_or(hops.len());
    let proxy = new_connection(hops).unwrap_or(hops.len()).max(vxlan);
    Ok(Chapters {
        seven: 0..vxlan,
        eight: vxlan..proxy,
        nine: proxy..hops.len(),
    })
}

/// The index of the hop where the segment left a proxy on a new connection:
/// its source is the previous hop's destination address.
fn new_connection(hops: &[Value]) -> Option<usize> {
    (1..hops.len()).find(|&i| {
        let (p, h) = (&hops[i - 1], &hops[i]);
        h["ip"]["src"] == p["ip"]["dst"] && h["ports"]["src"] != p["ports"]["dst"]
    })
}

/// The proxy's new connection (its source) and the wire of the last hop.
fn proxy_leg(hops: &[Value]) -> Result<Option<(SocketAddrV4, String)>> {
    let Some(i) = new_connection(hops) else {
        return Ok(None);
    };
    let src = ip_port(&hops[i], "src").parse()?;
    let last = hops.last().and_then(|h| h["wire"].as_str()).unwrap_or("?");
    Ok(Some((src, last.to_string())))
}

fn first_wire(hops: &[Value]) -> Result<String> {
    Ok(text(hops.first().context("no hops")?, "/wire")?.to_string())
}

/// One sentence per hop: what the node that sent it did to the segment,
/// read from how its headers differ from the previous hop's.
fn narrate_hops(net: &Net, hops: &[Value], range: std::ops::Range<usize>) -> String {
    let mut s = String::new();
    for i in range {
        let h = &hops[i];
        let wire = h["wire"].as_str().unwrap_or("?");
        let by = net.sender(h);
        let ttl = h["ttl"].as_u64().unwrap_or(0);
        let line = match i.checked_sub(1).map(|j| &hops[j]) {
            None => format!(
                "{by} sends {}, TTL {ttl}, from {} to {}: the MAC its ARP for the default gateway got.",
                flow(h),
                net.mac(h["eth"]["src"].as_str().unwrap_or("?")),
                net.mac(h["eth"]["dst"].as_str().unwrap_or("?"))
            ),
            Some(p) => describe(net, p, h, &by, ttl),
        };
        let _ = writeln!(s, "  {:<14} {line}", wire);
    }
    s
}

fn describe(net: &Net, p: &Value, h: &Value, by: &str, ttl: u64) -> String {
    let pttl = p["ttl"].as_u64().unwrap_or(0);
    let mut acts = Vec::new();
    if ttl + 1 == pttl {
        acts.push(format!("routes it (TTL {pttl} → {ttl})"));
    }
    if h["ip"]["src"] != p["ip"]["src"] && h["ports"]["dst"] == p["ports"]["dst"] {
        acts.push(format!(
            "SNATs the source {} → {}",
            ip_port(p, "src"),
            ip_port(h, "src")
        ));
    } else if h["ip"]["dst"] != p["ip"]["dst"] && h["ip"]["src"] == p["ip"]["src"] {
        acts.push(format!(
            "DNATs the destination {} → {}",
            ip_port(p, "dst"),
            ip_port(h, "dst")
        ));
    }
    let acts = acts.join(" and ");
    if h["ip"]["src"] == p["ip"]["dst"] && h["ports"]["src"] != p["ports"]["dst"] {
        return format!(
            "{by}'s {} ended the phone's TCP there and sends the same TLS record on its own new connection {}, TTL {ttl} (a fresh packet from its own stack).",
            net.role(by),
            flow(h)
        );
    }
    let gtpu = |v: &Value| v["tunnel"]["gtpu"]["teid"].as_u64();
    let vxlan = |v: &Value| v["tunnel"]["vxlan"]["vni"].as_u64();
    let outer = pair(&h["outer_ip"]);
    let inner = || {
        format!(
            "{} → {}",
            net.mac(h["inner_eth"]["src"].as_str().unwrap_or("?")),
            net.mac(h["inner_eth"]["dst"].as_str().unwrap_or("?"))
        )
    };
    match (gtpu(p), gtpu(h), vxlan(p), vxlan(h)) {
        (None, Some(t), _, _) => format!(
            "{by} puts the phone's IP packet (its MAC header left behind) in GTP-U TEID {t:#x}, {outer}; the inner packet is unchanged, TTL {ttl}."
        ),
        (Some(a), Some(b), _, _) if a != b => format!(
            "{by} takes it out of TEID {a:#x} and into TEID {b:#x}, {outer}; still TTL {ttl}: nobody has routed the phone's packet yet."
        ),
        (Some(_), None, _, _) => format!(
            "{by} ends the tunnel{}{acts}; MACs {}.",
            if acts.is_empty() { "" } else { ", " },
            pair(&h["eth"])
        ),
        (None, None, None, Some(v)) | (None, None, Some(_), Some(v))
            if outer != pair(&p["outer_ip"]) =>
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
            node_of(h["wire"].as_str().unwrap_or("?"))
        ),
        (_, _, Some(_), None) => format!(
            "{by}'s vSwitch takes the frame out of VXLAN and hands it to the VM's vNIC: {}, TTL {ttl}.",
            flow(h)
        ),
        _ if !acts.is_empty() => format!(
            "{by} {acts}: new MACs {}, the IP addresses unchanged.",
            pair(&h["eth"])
        ),
        _ => format!("{by} forwards it: MACs {}, TTL {ttl}.", pair(&h["eth"])),
    }
}

/// The bearer and NAT tables behind chapter 7's rows.
fn chapter7_tables(trace: &Value, bearers: &Value, pgw_nat: &Value) -> Result<String> {
    let mut s = String::new();
    let hops = at(trace, "/hops")?.as_array().context("hops")?;
    let teids: Vec<String> = hops
        .iter()
        .filter(|h| !h["tunnel"]["gtpu"].is_null())
        .map(tunnel)
        .collect();
    if let Some(b) = bearers.as_array().and_then(|b| b.first()) {
        writeln!(
            s,
            "The bearer of IMSI {} (d11 show sgw bearers): uplink enb → sgw TEID {:#x}, sgw → pgw TEID {:#x}; downlink pgw → sgw {:#x}, sgw → enb {:#x}. Seen on the wires: {}.",
            b["imsi"].as_str().unwrap_or("?"),
            num(b, "/sgw_s1u_teid")?,
            num(b, "/pgw_teid")?,
            num(b, "/sgw_s5_teid")?,
            num(b, "/enb_teid")?,
            teids.join(", ")
        )?;
    }
    let local = text(trace, "/order/local")?;
    match nat_entry(pgw_nat, "src", local) {
        Some(e) => writeln!(
            s,
            "The PGW's NAT entry (d11 show pgw nat): {} {} ↔ {}, {} packets out and {} back, {}.",
            e["proto"].as_str().unwrap_or("?"),
            local,
            e["reply_dst"].as_str().unwrap_or("?"),
            e["packets_orig"],
            e["packets_reply"],
            e["state"].as_str().unwrap_or("?")
        )?,
        None => writeln!(s, "(no NAT entry for {local} in the PGW's table)")?,
    }
    Ok(s)
}

fn nat_entry<'a>(table: &'a Value, key: &str, addr: &str) -> Option<&'a Value> {
    table.as_array()?.iter().find(|e| e[key] == addr)
}

fn chapter8_tables(
    hops: &[Value],
    pgw_nat: &Value,
    vgw_nat: &Value,
    client: SocketAddrV4,
) -> Result<String> {
    let mut s = String::new();
    let public = nat_entry(pgw_nat, "src", &client.to_string())
        .and_then(|e| e["reply_dst"].as_str())
        .map(str::to_string);
    let entry = public.as_deref().and_then(|p| nat_entry(vgw_nat, "src", p));
    match entry {
        Some(e) => writeln!(
            s,
            "The cloud gateway's NAT entry (d11 show vgw nat): {} → {} becomes {} → {}; the phone's public address stays the source, so the VM sees who called.",
            e["src"].as_str().unwrap_or("?"),
            e["dst"].as_str().unwrap_or("?"),
            e["src"].as_str().unwrap_or("?"),
            e["reply_src"].as_str().unwrap_or("?")
        )?,
        None => writeln!(s, "(no entry for the phone's public address in the vgw's NAT table)")?,
    }
    if let Some(v) = hops
        .iter()
        .find_map(|h| h["tunnel"]["vxlan"]["vni"].as_u64())
    {
        writeln!(
            s,
            "VNI {v} is the tenant's 24-bit VXLAN id: a vSwitch hands the frame only to a VM in that VNI."
        )?;
    }
    Ok(s)
}

fn chapter9_tables(trace: &Value, lb: &Value) -> Result<String> {
    let mut s = String::new();
    let hops = at(trace, "/hops")?.as_array().context("hops")?;
    let last = hops.last().context("no hops")?;
    let backend = ip_port(last, "dst");
    if let Some(servers) = lb["backend"]["servers"].as_array() {
        writeln!(
            s,
            "The load balancer chose {backend} ({} balancing, {} of {} servers UP; d11 show vm-lb):",
            lb["backend"]["balance"].as_str().unwrap_or("?"),
            lb["backend"]["up"],
            servers.len()
        )?;
        for srv in servers {
            writeln!(
                s,
                "  {:<24} {:<4} {} session{} so far, last check {}",
                srv["name"].as_str().unwrap_or("?"),
                srv["status"].as_str().unwrap_or("?"),
                srv["total"],
                if srv["total"] == 1 { "" } else { "s" },
                srv["last_check"]["code"].as_str().unwrap_or("-")
            )?;
        }
    }
    // The new connection starts at TTL 64; a lower TTL at the controller
    // means a router was on the way.
    let detour =
        new_connection(hops).is_some_and(|i| last["ttl"].as_u64() < hops[i]["ttl"].as_u64());
    if detour {
        writeln!(s, "The controller is in the other AZ's subnet, so the vgw (the VPC's router) routed the new connection between the subnets: VXLAN to the vgw and back, TTL one lower.")?;
    }
    writeln!(
        s,
        "The controller on {} answered {} {}: order {} (served_by {}), TLS ending at the controller, the proxy never saw the plaintext.",
        node_of(last["wire"].as_str().unwrap_or("?")),
        trace["order"]["status"],
        trace["order"]["body"]["status"].as_str().unwrap_or(""),
        text(trace, "/order/body/order_id")?,
        text(trace, "/order/body/served_by")?
    )?;
    Ok(s)
}

/// Chapter 10 from the reply's `rpc` path, when the controller called the
/// order service (a controller-only lab's reply has none).
fn chapter10(order: &Value) -> Option<String> {
    let lines = d11_apps::phone::rpc_lines(&order["body"]);
    if lines.is_empty() {
        return None;
    }
    let body = &order["body"];
    let calls = body["rpc"]["path"].as_array().map_or(0, Vec::len);
    let mut s = format!(
        "{} did not record order {} itself: it called order.create by RPC, on a provider the registry listed. \
         The order service reported {calls} call{} behind it, and the database's commit:\n",
        body["served_by"].as_str().unwrap_or("the controller"),
        body["order_id"].as_str().unwrap_or("?"),
        if calls == 1 { "" } else { "s" },
    );
    for line in lines {
        s.push_str(&line);
        s.push('\n');
    }
    Some(s)
}

fn capture_hint(trace: &Value) -> String {
    let cap = trace["capture"].as_str().unwrap_or("?");
    let secrets = trace["secrets_in_capture"] == true;
    format!(
        "{cap}: every wire of the lab during the traced order, one pcapng interface per wire (node:port){}.\n\
         Open it in Wireshark (wireshark {cap}) and filter `http`: the POST and the 201 show decrypted with no setup{}.\n",
        if secrets { ", with the order's TLS secrets in a Decryption Secrets Block" } else { "" },
        if secrets { "" } else { " once you give Wireshark the key log (this capture has no secrets block)" }
    )
}

// ---------------------------------------------------------------------------
// TCP segments from the capture (tshark), and the states they show.

/// One TCP segment as tshark decoded it on one wire.
#[derive(Debug, Clone, PartialEq)]
struct Segment {
    t: f64,
    src: SocketAddrV4,
    flags: u16,
    len: u32,
}

const FIN: u16 = 0x01;
const SYN: u16 = 0x02;
const RST: u16 = 0x04;
const ACK: u16 = 0x10;

fn tcp_segments(file: &Path, wire: &str, client: SocketAddrV4) -> Result<Vec<Segment>> {
    let filter = format!(
        "frame.interface_name == \"{wire}\" && ip.addr == {} && tcp.port == {}",
        client.ip(),
        client.port()
    );
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(["-Y", &filter, "-T", "fields", "-E", "separator=|"])
        .args([
            "-e",
            "frame.time_relative",
            "-e",
            "ip.src",
            "-e",
            "tcp.srcport",
            "-e",
            "tcp.flags",
            "-e",
            "tcp.len",
        ])
        .stderr(Stdio::null())
        .output()
        .map_err(|_| {
            anyhow::anyhow!("tshark is not installed (apt install tshark) to list the TCP segments")
        })?;
    if !out.status.success() {
        bail!("tshark could not read {}", file.display());
    }
    Ok(parse_segments(&String::from_utf8_lossy(&out.stdout)))
}

fn parse_segments(text: &str) -> Vec<Segment> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            let [t, ip, port, flags, len] = f.as_slice() else {
                return None;
            };
            Some(Segment {
                t: t.parse().ok()?,
                src: SocketAddrV4::new(ip.parse().ok()?, port.parse().ok()?),
                flags: u16::from_str_radix(flags.trim_start_matches("0x"), 16).ok()?,
                len: len.parse().ok()?,
            })
        })
        .collect()
}

fn flag_names(f: u16) -> String {
    let names: Vec<&str> = [
        (SYN, "SYN"),
        (FIN, "FIN"),
        (RST, "RST"),
        (0x08, "PSH"),
        (ACK, "ACK"),
    ]
    .iter()
    .filter(|(b, _)| f & b != 0)
    .map(|(_, n)| *n)
    .collect();
    names.join(",")
}

/// The segments of one connection, with the opener's TCP state (RFC 9293
/// § 3.3.2) as each one shows it: the handshake, the data, the close.
fn tcp_story(segs: &[Segment], client: SocketAddrV4) -> String {
    let mut s = String::new();
    let t0 = segs.first().map_or(0.0, |x| x.t);
    let (mut client_fin, mut server_fin, mut reset) = (false, false, false);
    // Data segments since the last state change: count, bytes up, bytes down.
    let mut data = (0usize, 0u32, 0u32);
    let mut late_data = false;
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
    for g in segs {
        let from_client = g.src == client;
        let f = g.flags;
        let next = if f & RST != 0 {
            let was = reset;
            reset = true;
            Some(match (was, from_client, late_data) {
                (true, _, _) => "still CLOSED: RST again",
                (false, true, true) => {
                    "CLOSED: data came after the app had closed its socket, so its stack answers RST"
                }
                (false, true, false) => "CLOSED (reset by the opener)",
                (false, false, _) => "CLOSED (reset by the peer)",
            })
        } else if from_client && f & SYN != 0 {
            Some("SYN-SENT")
        } else if !from_client && f & SYN != 0 && f & ACK != 0 {
            Some("ESTABLISHED (after its ACK)")
        } else if from_client && f & FIN != 0 && !client_fin {
            client_fin = true;
            Some(if server_fin { "LAST-ACK" } else { "FIN-WAIT-1" })
        } else if !from_client && f & FIN != 0 && !server_fin {
            server_fin = true;
            Some(if reset {
                "(the opener has no connection left)"
            } else if client_fin {
                "TIME-WAIT (after its ACK)"
            } else {
                "CLOSE-WAIT"
            })
        } else {
            None
        };
        if g.len > 0 && !from_client && client_fin {
            late_data = true;
        }
        match next {
            Some(n) => {
                flush(&mut s, &mut data);
                let _ = writeln!(
                    s,
                    "  {:>8.3} ms  {}  {:<8} {:>5} B   → {n}",
                    (g.t - t0) * 1000.0,
                    if from_client { "→" } else { "←" },
                    flag_names(f),
                    g.len
                );
            }
            None if g.len > 0 => {
                data.0 += 1;
                if from_client {
                    data.1 += g.len;
                } else {
                    data.2 += g.len;
                }
            }
            None => {}
        }
    }
    flush(&mut s, &mut data);
    if segs.is_empty() {
        let _ = writeln!(s, "  (no segments of this connection on the wire)");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
    fn hops() -> Vec<Value> {
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

    fn order() -> Value {
        json!({
            "status": 201,
            "body": {"status": "created", "order_id": "ord-0e635ab44146009a", "served_by": "vm-ctl2",
                     "order": {"date": "2018-07-01", "className": "趣谈网络协议", "Author": "刘超", "price": "68"}},
            "attempts": 1, "errors": [], "idempotency_key": "c9dc729b-cc42-41e8-931c-d7255aea555c",
            "local": "10.45.0.2:43606", "remote": "203.0.113.24:443",
            "tls_version": "TLSv1_3", "cipher": "TLS13_AES_256_GCM_SHA384", "elapsed_ms": 6.6
        })
    }

    fn trace() -> Value {
        json!({"order": order(), "capture": "/tmp/d11-demo.pcapng", "secrets_in_capture": true, "hops": hops(), "ok": true})
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
        Net::from_status(&status).expect("canned status")
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
        o["body"]["rpc"] = json!({
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
        o["body"].as_object_mut().unwrap().remove("order_id");
        let e = chapter6(&o).unwrap_err().to_string();
        assert!(e.contains("/body/order_id"), "{e}");
    }

    #[test]
    fn hops_split_into_chapters_at_the_first_vxlan_hop_and_the_proxys_new_connection() {
        let c = chapters(&hops()).unwrap();
        assert_eq!(
            c,
            Chapters {
                seven: 0..5,
                eight: 5..8,
                nine: 8..12
            }
        );
        let (src, last) = proxy_leg(&hops()).unwrap().unwrap();
        assert_eq!(src.to_string(), "192.168.1.10:54998");
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
        let bearers = json!([{"imsi": "001010000000001", "ue_ip": "10.45.0.2", "enb_teid": 256, "sgw_s1u_teid": 512, "sgw_s5_teid": 768, "pgw_teid": 1024}]);
        let pgw = json!([{"proto": "tcp", "state": "closing", "src": "10.45.0.2:43606", "dst": "203.0.113.24:443",
                          "reply_src": "203.0.113.24:443", "reply_dst": "198.51.100.139:43606", "packets_orig": 11, "packets_reply": 9}]);
        let vgw = json!([{"proto": "tcp", "state": "closing", "src": "198.51.100.139:43606", "dst": "203.0.113.24:443",
                          "reply_src": "192.168.1.10:443", "reply_dst": "198.51.100.139:43606"}]);
        let s7 = chapter7_tables(&t, &bearers, &pgw).unwrap();
        assert!(s7.contains("enb → sgw TEID 0x200, sgw → pgw TEID 0x400; downlink pgw → sgw 0x300, sgw → enb 0x100"), "{s7}");
        assert!(
            s7.contains("Seen on the wires: TEID 0x200, TEID 0x400"),
            "{s7}"
        );
        assert!(
            s7.contains("tcp 10.45.0.2:43606 ↔ 198.51.100.139:43606, 11 packets out and 9 back"),
            "{s7}"
        );
        let s8 = chapter8_tables(&hops(), &pgw, &vgw, "10.45.0.2:43606".parse().unwrap()).unwrap();
        assert!(s8.contains("198.51.100.139:43606 → 203.0.113.24:443 becomes 198.51.100.139:43606 → 192.168.1.10:443"), "{s8}");
        assert!(s8.contains("VNI 1001"), "{s8}");
        let lb = json!({"backend": {"balance": "roundrobin", "up": 2, "servers": [
            {"name": "ctl/192.168.1.20:443", "status": "UP", "total": 1, "last_check": {"code": "L4OK"}},
            {"name": "ctl/192.168.2.20:443", "status": "UP", "total": 1, "last_check": {"code": "L4OK"}}]}});
        let s9 = chapter9_tables(&t, &lb).unwrap();
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
        let table = hop_table(&hops()).unwrap();
        assert_eq!(table.lines().count(), 13, "{table}");
        assert!(
            table.lines().nth(2).unwrap().contains("TEID 0x200"),
            "{table}"
        );
        assert!(trace_summary(&t).unwrap().contains("12 hops"));
        assert!(capture_hint(&t).contains("Decryption Secrets Block"));
    }

    #[test]
    fn tcp_states_are_read_from_the_segments_flags() {
        // tshark -T fields -e frame.time_relative -e ip.src -e tcp.srcport -e tcp.flags -e tcp.len,
        // the phone's wire in a real run: it closed first, and answered the
        // server's close_notify that came after its FIN with RST.
        let text = "0.000000000|10.45.0.2|43618|0x0002|0\n\
                    0.002814878|203.0.113.24|443|0x0012|0\n\
                    0.002865322|10.45.0.2|43618|0x0010|0\n\
                    0.003340636|10.45.0.2|43618|0x0018|258\n\
                    0.004872074|203.0.113.24|443|0x0010|1348\n\
                    0.007970823|10.45.0.2|43618|0x0011|0\n\
                    0.011029563|203.0.113.24|443|0x0018|24\n\
                    0.011045486|10.45.0.2|43618|0x0004|0\n";
        let segs = parse_segments(text);
        assert_eq!(segs.len(), 8);
        let s = tcp_story(&segs, "10.45.0.2:43618".parse().unwrap());
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
            lines[4].ends_with("… 1 data segment: 0 B up, 24 B down"),
            "{s}"
        );
        assert!(
            lines[5].contains("RST") && lines[5].contains("data came after the app had closed"),
            "{s}"
        );
    }
}
