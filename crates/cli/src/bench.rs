//! `d11 bench forward`: what a userspace router costs.
//!
//! Three labs of the same shape — phone, four forwarders, server — are built
//! one after the other in this run, so the machine's noise hits them alike:
//! the kernel forwarding (`netns/bench-kernel.toml`), four `null` elements
//! that only pass frames across (`bench-null.toml`, the driver's own cost),
//! and four routers (`bench-router.toml`). Each gets an iperf3 TCP run and a
//! 64-byte UDP packet-rate run; the report gives every figure and the ratios
//! the issue asks for (router per-frame cost against a null element, against
//! the kernel), peak RSS per element and `d11 up` wall time of the carrier lab.
//!
//! It drives the lab through this same binary's commands (`up`, `exec`,
//! `down`) as a user would, so nothing here knows about namespaces.

use anyhow::{bail, Context, Result};
use d11_core::L3Port;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Options of `d11 bench forward`.
#[derive(Debug, clap::Args)]
pub struct ForwardArgs {
    /// Seconds of each iperf3 run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// How many times to bring the carrier lab up to time `d11 up` (median reported).
    #[arg(long, default_value_t = 3)]
    pub up_runs: u32,
    /// Directory holding the bench topologies and carrier.toml.
    #[arg(long, default_value = "netns")]
    pub topologies: PathBuf,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

struct Variant {
    name: &'static str,
    file: &'static str,
    /// Processes that forward (their peak RSS is reported).
    elements: bool,
}

const VARIANTS: [Variant; 3] = [
    Variant {
        name: "kernel",
        file: "bench-kernel.toml",
        elements: false,
    },
    Variant {
        name: "null",
        file: "bench-null.toml",
        elements: true,
    },
    Variant {
        name: "router",
        file: "bench-router.toml",
        elements: true,
    },
];

/// iperf3's `-b` for the fixed-load run: 20,000 datagrams/s of 18 bytes.
pub(crate) const FIXED_RATE_BITS: &str = "2880K";

pub fn forward(args: &ForwardArgs) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the d11 binary")?;
    let mut results = serde_json::Map::new();
    for v in &VARIANTS {
        let file = args.topologies.join(v.file);
        eprintln!("bench: {} ({})", v.name, file.display());
        let r = run_variant(&exe, v, &file, args.seconds)
            .with_context(|| format!("variant {}", v.name))?;
        results.insert(v.name.to_string(), r);
    }
    let up = time_up(&exe, &args.topologies.join("carrier.toml"), args.up_runs)?;
    let mut report = summarise(results, up);
    report["element_core"] = element_core();
    report["mobile_core"] = mobile_core(2_000_000);
    print_report(&report);
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// A lab that goes down when dropped, whatever happened in between.
pub(crate) struct LabGuard<'a> {
    exe: &'a Path,
    pub(crate) name: String,
}

impl<'a> LabGuard<'a> {
    pub(crate) fn up(
        exe: &'a Path,
        topology: &Path,
        name: &str,
    ) -> Result<(LabGuard<'a>, Duration)> {
        let _ = d11(exe, &["down", "--name", name]).output();
        let t0 = Instant::now();
        // Owned by this process: a bench killed even by SIGKILL leaves no lab.
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

    pub(crate) fn exec(&self, node: &str, cmd: &[&str]) -> Command {
        let mut args = vec!["exec", "--name", &self.name, node, "--"];
        args.extend_from_slice(cmd);
        d11(self.exe, &args)
    }

    /// Three pings from `from` to `to`, so ARP and the elements' tables
    /// (a NAT's first entry) are warm before anything is timed.
    pub(crate) fn warm_up(&self, from: &str, to: &str) -> Result<()> {
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

fn run_variant(exe: &Path, v: &Variant, topology: &Path, seconds: u32) -> Result<Value> {
    let text = std::fs::read_to_string(topology)
        .with_context(|| format!("reading {}", topology.display()))?;
    let server_ip = server_address(&text).context("the bench topology has no server address")?;
    let ends = Ends {
        client: "phone",
        server: "server",
        server_ip: &server_ip,
    };
    let (lab, _) = LabGuard::up(exe, topology, &format!("bench-{}", v.name))?;
    let secs = seconds.to_string();
    let tcp = iperf(&lab, &ends, &["-t", &secs])?;
    let bps = tcp["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 TCP gave no bits_per_second")?;
    // 18 bytes of UDP payload: 14 Ethernet + 20 IP + 8 UDP + 18 = 60 bytes, 64 with the FCS.
    let udp = iperf(&lab, &ends, &["-u", "-b", "0", "-l", "18", "-t", &secs])?;
    // CPU per frame at one fixed offered load that every variant carries
    // without loss, so batching per wakeup is the same for null and router.
    let before = if v.elements {
        element_work(&lab.name)?
    } else {
        Vec::new()
    };
    iperf(
        &lab,
        &ends,
        &["-u", "-b", FIXED_RATE_BITS, "-l", "18", "-t", &secs],
    )?;
    let after = if v.elements {
        element_work(&lab.name)?
    } else {
        Vec::new()
    };
    let ns_per_frame = cpu_per_frame(&before, &after);
    let sum = &udp["end"]["sum"];
    let (packets, lost, secs_f) = (
        sum["packets"].as_f64().unwrap_or(0.0),
        sum["lost_packets"].as_f64().unwrap_or(0.0),
        sum["seconds"]
            .as_f64()
            .unwrap_or(f64::from(seconds))
            .max(0.001),
    );
    let pps = (packets - lost).max(0.0) / secs_f;
    let rss = if v.elements {
        peak_rss(&lab.name)?
    } else {
        json!({})
    };
    Ok(json!({
        "tcp_mbit_s": bps / 1e6,
        "udp64_sent_pps": packets / secs_f,
        "udp64_received_pps": pps,
        "udp64_loss": if packets > 0.0 { lost / packets } else { 0.0 },
        "cpu_ns_per_frame": ns_per_frame,
        "peak_rss_kib": rss,
    }))
}

/// The two ends of an iperf3 run: client node, server node, server address.
pub(crate) struct Ends<'a> {
    pub client: &'a str,
    pub server: &'a str,
    pub server_ip: &'a str,
}

/// Runs an iperf3 client in `ends.client` against a one-off server in `ends.server`.
pub(crate) fn iperf(lab: &LabGuard, ends: &Ends, extra: &[&str]) -> Result<Value> {
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
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        match v["error"].as_str() {
            None if out.status.success() => {
                let _ = server.wait();
                return Ok(v);
            }
            Some(e) if e.contains("refused") || e.contains("unable to connect") => {
                last_err = e.to_string()
            }
            e => {
                let _ = server.kill();
                let _ = server.wait();
                bail!("iperf3 failed: {}", e.unwrap_or("no JSON output"));
            }
        }
    }
    let _ = server.kill();
    bail!("iperf3 server never answered: {last_err}")
}

pub(crate) fn server_address(topology: &str) -> Option<String> {
    let v: toml::Value = toml::from_str(topology).ok()?;
    let nodes = v.get("nodes")?.as_array()?;
    let server = nodes
        .iter()
        .find(|n| n.get("name").and_then(|n| n.as_str()) == Some("server"))?;
    let addr = server
        .get("ports")?
        .as_array()?
        .first()?
        .get("address")?
        .as_str()?;
    Some(addr.split('/').next()?.to_string())
}

/// `d11 bench core`: [`element_core`] and [`mobile_core`] on their own.
pub fn core() -> Result<()> {
    let v = json!({ "element_core": element_core(), "mobile_core": mobile_core(2_000_000) });
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// The element alone, no driver and no syscalls: nanoseconds per frame
/// through `Router::on_frame` (ARP resolved, default route) and through a
/// `Null`, on the same 74-byte ICMP echo frame.
fn element_core() -> Value {
    use d11_core::{Element, Outbox, PortId};
    use d11_elements::router::{Router, RouterConfig, StaticRoute};
    use d11_wire::{arp::ArpRepr, ethernet, icmp, ipv4::Ipv4Repr, MacAddr};
    let (radio, up, c1) = (
        MacAddr([2, 0, 0, 0, 1, 0]),
        MacAddr([2, 0, 0, 0, 1, 1]),
        MacAddr([2, 0, 0, 0, 2, 0]),
    );
    let port = |name: &str, mac, address: &str| L3Port {
        name: name.into(),
        mac,
        address: address.parse().expect("literal"),
        mtu: 1500,
    };
    let mut router = Router::new(RouterConfig {
        ports: vec![
            port("radio", radio, "10.45.0.1/16"),
            port("a2c1", up, "192.0.2.1/30"),
        ],
        routes: vec![StaticRoute {
            to: "0.0.0.0/0".parse().expect("literal"),
            via: "192.0.2.2".parse().expect("literal"),
        }],
    });
    let mut out = Outbox::new();
    let mut arp = vec![];
    ArpRepr::request(
        c1,
        "192.0.2.2".parse().expect("literal"),
        "192.0.2.1".parse().expect("literal"),
    )
    .emit_frame(&mut arp);
    router.on_frame(
        &mut (d11_core::Instant::ZERO).into(),
        PortId(1),
        &arp,
        &mut out,
    );
    let mut frame = vec![];
    ethernet::emit_header(
        &mut frame,
        radio,
        MacAddr([2, 0, 0, 0, 0, 2]),
        ethernet::EtherType::Ipv4,
    );
    let src = "10.45.0.2".parse().expect("literal");
    let dst = "203.0.113.10".parse().expect("literal");
    Ipv4Repr {
        src,
        dst,
        protocol: 1,
        ttl: 64,
        ident: 1,
        dont_frag: true,
        payload_len: 40,
    }
    .emit(&mut frame);
    icmp::emit_icmp(&mut frame, icmp::ECHO_REQUEST, 0, [0, 1, 0, 1], &[b'x'; 32]);
    let time = |e: &mut dyn Element, out: &mut Outbox| {
        const N: u64 = 2_000_000;
        let mut cx = d11_core::Ctx::new(d11_core::Instant::ZERO, 1);
        let t0 = Instant::now();
        for i in 0..N {
            out.clear();
            let now = d11_core::Instant::from_micros(1_000 + i / 16);
            e.on_frame(cx.at(now), PortId(0), &frame, out);
        }
        assert_eq!(out.frames().count(), 1, "the frame was forwarded");
        t0.elapsed().as_nanos() as f64 / N as f64
    };
    let r = time(&mut router, &mut out);
    let n = time(&mut d11_elements::null::Null::new(2), &mut out);
    json!({ "router_ns_per_frame": r, "null_ns_per_frame": n })
}

/// The mobile elements alone, no driver and no syscalls, against a `null`
/// element: nanoseconds per frame through the eNB, the SGW and the PGW,
/// uplink (eNB: the UE's packet into GTP-U; SGW: the TEID switch; PGW: GTP-U
/// end, bearer, NAT, TTL) and downlink (PGW: NAT back and into GTP-U; SGW;
/// eNB: out of GTP-U to the UE), every ARP resolved; and the NAT table alone
/// with 1 and then 100,000 entries (a flat cost is the O(1) lookup the issue
/// asks for).
pub(crate) fn mobile_core(n: u64) -> Value {
    use d11_core::{Element, Outbox, PortId};
    use d11_elements::bearer::Bearer;
    use d11_elements::enb::{Enb, EnbConfig};
    use d11_elements::pgw::{Pgw, PgwConfig};
    use d11_elements::router::{RouterConfig, StaticRoute};
    use d11_elements::sgw::{Sgw, SgwConfig};
    use d11_wire::gtpu::{GtpuRepr, Teid};
    use d11_wire::ipv4::Ipv4Packet;
    use d11_wire::{arp::ArpRepr, ethernet, ipv4::Ipv4Repr, MacAddr};
    use std::net::Ipv4Addr;
    let ip = |s: &str| s.parse::<Ipv4Addr>().expect("literal");
    // MACs: node 2 the enb, 3 the sgw, 4 the pgw (port 1 faces the UE, 2 the
    // Internet), 1 the UE, 5 the server.
    let mac = |node: u8, i: u8| MacAddr([2, 0, 0, 0, node, i]);
    let port = |name: &str, node: u8, i: u8, address: &str| L3Port {
        name: name.into(),
        mac: mac(node, i),
        address: address.parse().expect("literal"),
        mtu: 1500,
    };
    let bearer = Bearer {
        imsi: "001010000000001".into(),
        ue_ip: ip("10.45.0.2"),
        enb_teid: Teid(0x100),
        sgw_s1u_teid: Teid(0x200),
        sgw_s5_teid: Teid(0x300),
        pgw_teid: Teid(0x400),
    };
    // An IPv4 packet carrying a UDP datagram of 18 bytes, checksum 0.
    let udp = |src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16| {
        let mut p = vec![];
        Ipv4Repr {
            src,
            dst,
            protocol: 17,
            ttl: 64,
            ident: 1,
            dont_frag: true,
            payload_len: 8 + 18,
        }
        .emit(&mut p);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&[0, 26, 0, 0]);
        p.extend_from_slice(&[b'x'; 18]);
        p
    };
    let (ue, server) = (ip("10.45.0.2"), ip("192.0.2.130"));
    let up = udp(ue, 40000, server, 5001);
    let down = udp(server, 5001, ue, 40000);
    let eth = |dst: MacAddr, src: MacAddr, ip: &[u8]| {
        let mut f = vec![];
        ethernet::emit_header(&mut f, dst, src, ethernet::EtherType::Ipv4);
        f.extend_from_slice(ip);
        f
    };
    // A G-PDU to `dst_mac` from `src` to `dst` in tunnel `teid` carrying `inner`.
    let g_pdu = |dst_mac: MacAddr, src: &str, dst: &str, teid: u32, inner: &[u8]| {
        let g = GtpuRepr::g_pdu(Teid(teid), inner.len());
        let mut f = vec![];
        ethernet::emit_header(&mut f, dst_mac, mac(9, 9), ethernet::EtherType::Ipv4);
        let udp_len = 8 + g.buffer_len() + inner.len();
        Ipv4Repr {
            src: ip(src),
            dst: ip(dst),
            protocol: 17,
            ttl: 64,
            ident: 1,
            dont_frag: false,
            payload_len: udp_len,
        }
        .emit(&mut f);
        f.extend_from_slice(&[0x08, 0x68, 0x08, 0x68]);
        f.extend_from_slice(&(udp_len as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        g.emit(&mut f);
        f.extend_from_slice(inner);
        f
    };
    // The virtual clock moves on across all the runs, 16 frames a microsecond.
    let tick = std::cell::Cell::new(0u64);
    let now = || {
        tick.set(tick.get() + 1);
        d11_core::Instant::from_micros(1_000 + tick.get() / 16)
    };
    let arp = |e: &mut dyn Element, p: PortId, mac: MacAddr, from: &str, to: &str| {
        let mut b = vec![];
        ArpRepr::request(mac, ip(from), ip(to)).emit_frame(&mut b);
        e.on_frame(&mut now().into(), p, &b, &mut Outbox::new());
    };
    // ns per frame of `frame` in on `port`, each one sent out of `to` alone.
    let time = |e: &mut dyn Element, port: PortId, frame: &[u8], to: PortId| {
        let mut out = Outbox::new();
        let mut cx = d11_core::Ctx::new(d11_core::Instant::ZERO, 1);
        let t0 = Instant::now();
        for _ in 0..n {
            out.clear();
            e.on_frame(cx.at(now()), port, frame, &mut out);
            let mut sent = out.frames();
            assert!(
                matches!((sent.next(), sent.next()), (Some((p, _)), None) if p == to),
                "the frame was forwarded to {to:?}"
            );
        }
        t0.elapsed().as_nanos() as f64 / n as f64
    };
    let (p0, p1) = (PortId(0), PortId(1));

    let mut enb = Enb::new(EnbConfig {
        router: RouterConfig {
            ports: vec![
                port("radio", 2, 1, "10.45.0.1/16"),
                port("s1u", 2, 2, "172.16.1.1/24"),
            ],
            routes: vec![],
        },
        sgw: ip("172.16.1.2"),
        gateway_mac: Some(mac(4, 1)),
        bearers: vec![bearer.clone()],
    })
    .expect("one bearer");
    arp(&mut enb, p0, mac(1, 0), "10.45.0.2", "10.45.0.1");
    arp(&mut enb, p1, mac(3, 1), "172.16.1.2", "172.16.1.1");
    let enb_up = time(&mut enb, p0, &eth(mac(4, 1), mac(1, 0), &up), p1);
    let from_sgw = g_pdu(mac(2, 2), "172.16.1.2", "172.16.1.1", 0x100, &down);
    let enb_down = time(&mut enb, p1, &from_sgw, p0);

    let mut sgw = Sgw::new(SgwConfig {
        router: RouterConfig {
            ports: vec![
                port("s1u", 3, 1, "172.16.1.2/24"),
                port("s5", 3, 2, "172.16.2.1/24"),
            ],
            routes: vec![],
        },
        enb: ip("172.16.1.1"),
        pgw: ip("172.16.2.2"),
        bearers: vec![bearer.clone()],
    })
    .expect("one bearer");
    arp(&mut sgw, p0, mac(2, 2), "172.16.1.1", "172.16.1.2");
    arp(&mut sgw, p1, mac(4, 1), "172.16.2.2", "172.16.2.1");
    let from_enb = g_pdu(mac(3, 1), "172.16.1.1", "172.16.1.2", 0x200, &up);
    let sgw_up = time(&mut sgw, p0, &from_enb, p1);
    let from_pgw = g_pdu(mac(3, 2), "172.16.2.2", "172.16.2.1", 0x300, &down);
    let sgw_down = time(&mut sgw, p1, &from_pgw, p0);

    let mut pgw = Pgw::new(PgwConfig {
        router: RouterConfig {
            ports: vec![
                port("s5", 4, 1, "172.16.2.2/24"),
                port("sgi", 4, 2, "198.51.100.1/30"),
            ],
            routes: vec![StaticRoute {
                to: "0.0.0.0/0".parse().expect("literal"),
                via: ip("198.51.100.2"),
            }],
        },
        sgw: ip("172.16.2.1"),
        gateway: ip("10.45.0.1"),
        nat_pool: "198.51.100.128/25".parse().expect("literal"),
        ue_mtu: 1400,
        nat: nat_config(),
        bearers: vec![bearer],
    })
    .expect("one bearer");
    arp(&mut pgw, p0, mac(3, 2), "172.16.2.1", "172.16.2.2");
    arp(&mut pgw, p1, mac(5, 1), "198.51.100.2", "198.51.100.1");
    let from_sgw = g_pdu(mac(4, 1), "172.16.2.1", "172.16.2.2", 0x400, &up);
    let pgw_up = time(&mut pgw, p0, &from_sgw, p1);
    // The server answers the public address and port the NAT gave the flow.
    let mut out = Outbox::new();
    pgw.on_frame(&mut now().into(), p0, &from_sgw, &mut out);
    let (_, sgi) = out.frames().next().expect("the uplink frame");
    let natted = Ipv4Packet::new_checked(&sgi[ethernet::HEADER_LEN..]).expect("IPv4");
    let public = natted.src();
    let public_port = u16::from_be_bytes([natted.payload()[0], natted.payload()[1]]);
    let reply = eth(
        mac(4, 2),
        mac(5, 1),
        &udp(server, 5001, public, public_port),
    );
    let pgw_down = time(&mut pgw, p1, &reply, p0);

    let null_ns = time(
        &mut d11_elements::null::Null::new(2),
        p0,
        &eth(mac(4, 1), mac(1, 0), &up),
        p1,
    );
    json!({
        "enb_uplink_ns_per_frame": enb_up,
        "enb_downlink_ns_per_frame": enb_down,
        "sgw_uplink_ns_per_frame": sgw_up,
        "sgw_downlink_ns_per_frame": sgw_down,
        "pgw_uplink_ns_per_frame": pgw_up,
        "pgw_downlink_ns_per_frame": pgw_down,
        "null_ns_per_frame": null_ns,
        "nat_translate_ns_1_entry": nat_translate_ns(1, n),
        "nat_translate_ns_100k_entries": nat_translate_ns(100_000, n),
    })
}

fn nat_config() -> d11_core::nat::NatConfig {
    use d11_core::nat::{NatConfig, SnatPool, Timeouts};
    NatConfig {
        snat: Some(SnatPool {
            addrs: (128..=255)
                .map(|i| std::net::Ipv4Addr::new(198, 51, 100, i))
                .collect(),
            ports: 1024..=65535,
        }),
        dnat: vec![],
        max_entries: 200_000,
        timeouts: Timeouts::default(),
    }
}

/// Nanoseconds per `Nat::translate` of an established UDP flow's packet
/// (copied into a scratch buffer first, as the PGW does) with `entries`
/// flows in the table, one per UE address; the timed packets cycle through
/// 1,024 of them so the lookups are not all one cache line.
pub(crate) fn nat_translate_ns(entries: u32, n: u64) -> f64 {
    use d11_core::nat::{Nat, Side};
    use d11_wire::ipv4::Ipv4Repr;
    let mut nat = Nat::new(nat_config());
    let packet = |i: u32| {
        let mut p = vec![];
        Ipv4Repr {
            src: std::net::Ipv4Addr::from(0x0a2d_0000 + 2 + i),
            dst: "192.0.2.130".parse().expect("literal"),
            protocol: 17,
            ttl: 64,
            ident: 1,
            dont_frag: true,
            payload_len: 8 + 18,
        }
        .emit(&mut p);
        p.extend_from_slice(&[0x9c, 0x40, 0x13, 0x89, 0, 26, 0x12, 0x34]);
        p.extend_from_slice(&[b'x'; 18]);
        p
    };
    let now = d11_core::Instant::from_micros(1);
    for i in 0..entries {
        nat.translate(now, Side::Inside, &mut packet(i))
            .expect("the pool holds them all");
    }
    let timed: Vec<Vec<u8>> = (0..entries.min(1024)).map(packet).collect();
    let mut scratch = Vec::with_capacity(64);
    let t0 = Instant::now();
    for i in 0..n {
        scratch.clear();
        scratch.extend_from_slice(&timed[i as usize % timed.len()]);
        nat.translate(now, Side::Inside, &mut scratch)
            .expect("an existing flow");
    }
    assert_eq!(nat.len(), entries as usize, "no new entries while timing");
    t0.elapsed().as_nanos() as f64 / n as f64
}

/// Per element: CPU time used so far (ns, from /proc/PID/schedstat) and
/// frames received (from its control socket).
pub(crate) fn element_work(lab: &str) -> Result<Vec<(String, u64, u64)>> {
    let dir = d11_lab::RunDir::new(lab);
    let state = d11_lab::SupervisorState::load(&dir)?;
    let mut out = Vec::new();
    for (node, s) in state.nodes {
        let Some(pid) = s.pid else { continue };
        let cpu_ns = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
            .ok()
            .and_then(|t| t.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("reading /proc/{pid}/schedstat of {node}"))?;
        let st = d11_io::query(&dir.socket(&node), "status", Duration::from_secs(1))?;
        let frames = st["ports"].as_object().map_or(0, |p| {
            p.values().filter_map(|c| c["rx_frames"].as_u64()).sum()
        });
        out.push((node, cpu_ns, frames));
    }
    Ok(out)
}

/// CPU nanoseconds per received frame, over all elements, between two readings.
fn cpu_per_frame(before: &[(String, u64, u64)], after: &[(String, u64, u64)]) -> Option<f64> {
    let (mut cpu, mut frames) = (0u64, 0u64);
    for (node, c1, f1) in after {
        let (_, c0, f0) = before.iter().find(|(n, _, _)| n == node)?;
        cpu += c1.saturating_sub(*c0);
        frames += f1.saturating_sub(*f0);
    }
    (frames > 0).then(|| cpu as f64 / frames as f64)
}

/// Peak resident memory (VmHWM) of every element process of the lab.
pub(crate) fn peak_rss(lab: &str) -> Result<Value> {
    let state = d11_lab::SupervisorState::load(&d11_lab::RunDir::new(lab))?;
    let mut out = serde_json::Map::new();
    for (node, s) in state.nodes {
        if let Some(pid) = s.pid {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let kib = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok());
            out.insert(node, json!(kib));
        }
    }
    Ok(Value::Object(out))
}

/// Median wall time of `d11 up` for the carrier lab.
fn time_up(exe: &Path, carrier: &Path, runs: u32) -> Result<Value> {
    let mut times = Vec::new();
    for _ in 0..runs.max(1) {
        let (lab, took) = LabGuard::up(exe, carrier, "bench-up")?;
        drop(lab);
        times.push(took.as_secs_f64());
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(json!({ "runs_s": times, "median_s": times[times.len() / 2] }))
}

fn summarise(results: serde_json::Map<String, Value>, up: Value) -> Value {
    let get = |v: &str, k: &str| results.get(v).and_then(|r| r[k].as_f64()).unwrap_or(0.0);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    // Cost per frame is the inverse of the rate: router cost / null cost = null pps / router pps.
    json!({
        "variants": results,
        "ratios": {
            "router_vs_null_cpu_per_frame": ratio(get("router", "cpu_ns_per_frame"), get("null", "cpu_ns_per_frame")),
            "router_vs_null_cost_per_frame_udp64": ratio(get("null", "udp64_received_pps"), get("router", "udp64_received_pps")),
            "router_vs_null_cost_tcp": ratio(get("null", "tcp_mbit_s"), get("router", "tcp_mbit_s")),
            "router_vs_kernel_cost_per_frame_udp64": ratio(get("kernel", "udp64_received_pps"), get("router", "udp64_received_pps")),
            "router_vs_kernel_cost_tcp": ratio(get("kernel", "tcp_mbit_s"), get("router", "tcp_mbit_s")),
        },
        "goals": { "router_vs_null_cpu_per_frame": 1.2, "peak_rss_mib_per_element": 20, "up_carrier_s": 2.0 },
        "up_carrier": up,
    })
}

fn print_report(r: &Value) {
    let num = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    println!(
        "\n{:<8} {:>12} {:>14} {:>14} {:>7} {:>14}",
        "variant", "TCP Mbit/s", "UDP64 sent/s", "UDP64 rcvd/s", "loss", "CPU ns/frame"
    );
    for name in ["kernel", "null", "router"] {
        let v = &r["variants"][name];
        println!(
            "{:<8} {:>12.0} {:>14.0} {:>14.0} {:>6.1}% {:>14}",
            name,
            num(&v["tcp_mbit_s"]),
            num(&v["udp64_sent_pps"]),
            num(&v["udp64_received_pps"]),
            100.0 * num(&v["udp64_loss"]),
            v["cpu_ns_per_frame"]
                .as_f64()
                .map_or("-".to_string(), |c| format!("{c:.0}")),
        );
    }
    let q = &r["ratios"];
    println!();
    for (key, what) in [
        (
            "router_vs_null_cpu_per_frame",
            "element CPU per frame at 20k frames/s, router / null  (goal <= 1.2x)",
        ),
        (
            "router_vs_null_cost_per_frame_udp64",
            "UDP 64 B frame cost, router / null    (from received rates)",
        ),
        ("router_vs_null_cost_tcp", "TCP cost, router / null"),
        (
            "router_vs_kernel_cost_per_frame_udp64",
            "UDP 64 B frame cost, router / kernel",
        ),
        ("router_vs_kernel_cost_tcp", "TCP cost, router / kernel"),
    ] {
        println!("{:>6.2}x  {what}", num(&q[key]));
    }
    for name in ["null", "router"] {
        if let Some(m) = r["variants"][name]["peak_rss_kib"].as_object() {
            let list: Vec<String> = m
                .iter()
                .map(|(n, k)| format!("{n} {:.1}", num(k) / 1024.0))
                .collect();
            println!(
                "peak RSS of {name} elements, MiB: {}  (goal <= 20)",
                list.join(", ")
            );
        }
    }
    let core = &r["element_core"];
    println!(
        "element core alone (no I/O): router {:.0} ns/frame, null {:.0} ns/frame",
        num(&core["router_ns_per_frame"]),
        num(&core["null_ns_per_frame"])
    );
    let m = &r["mobile_core"];
    println!(
        "mobile cores alone (no I/O), uplink ns/frame: enb {:.0}, sgw {:.0}, pgw (GTP-U end + NAT) {:.0}; \
         NAT translate {:.0} ns at 1 entry, {:.0} ns at 100k entries",
        num(&m["enb_uplink_ns_per_frame"]),
        num(&m["sgw_uplink_ns_per_frame"]),
        num(&m["pgw_uplink_ns_per_frame"]),
        num(&m["nat_translate_ns_1_entry"]),
        num(&m["nat_translate_ns_100k_entries"]),
    );
    let runs: Vec<String> = r["up_carrier"]["runs_s"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| format!("{:.3}", num(t)))
        .collect();
    println!(
        "d11 up, carrier lab: median {:.3} s, runs [{}] s  (goal <= 2 s)",
        num(&r["up_carrier"]["median_s"]),
        runs.join(", ")
    );
}

/// The median of the finite values of `v` (NaN when there are none): the
/// benches report the median of their rounds.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mobile_core_benchmark_forwards_every_frame_and_reports_each_figure() {
        // The timing loops assert every frame, uplink and downlink through
        // each element, went out of the expected port alone, and that no NAT
        // entry was created while timing; the figures themselves are not
        // checked here (benchmarks are not assertions).
        let m = mobile_core(2_000);
        for k in [
            "enb_uplink_ns_per_frame",
            "enb_downlink_ns_per_frame",
            "sgw_uplink_ns_per_frame",
            "sgw_downlink_ns_per_frame",
            "pgw_uplink_ns_per_frame",
            "pgw_downlink_ns_per_frame",
            "null_ns_per_frame",
            "nat_translate_ns_1_entry",
            "nat_translate_ns_100k_entries",
        ] {
            assert!(m[k].as_f64().is_some_and(|v| v > 0.0), "{k}: {m}");
        }
    }
}
