//! `d11 bench vpn`: the IPsec VPN between the regions (docs/vpn.md), each
//! figure beside a baseline of the same run:
//!
//! - iperf3 TCP from a north VM (vm-lb-n) to an east VM (vm-reg) through
//!   the VPN, against the same path with the VPN replaced by plain routing
//!   between the regions ([`routed_in_clear`]: a second lab, up at the same
//!   time, the rounds alternating); goal ≥ 0.8×;
//! - ESP seal + open of one 1400-byte packet alone (no I/O, AES-GCM-128),
//!   against the vgw routing the same packet between the AZs alone (its
//!   `on_frame`: VXLAN off, route, VXLAN on);
//! - the vgw's `on_frame` sealing a VM's 1400-byte packet into ESP and
//!   opening it, against a `null` element on the same frame (the logic
//!   alone, no goal: any cipher is many nulls);
//! - the gateway's CPU per frame in the lab, during the iperf3 runs: vgw-n's
//!   from /proc against border-n's, the element next to it handling the
//!   same ESP frames with a router's few tens of ns of logic, standing in
//!   for a null element in the gateway's place (goal ≤ 1.5×); and against
//!   vgw-n's own routing in clear.

use crate::lab::{element_work, iperf, write_topology, Ends, LabGuard, NodeLoad, Scratch};
use crate::{finite, median, write_json, Figure, Goal};
use anyhow::{bail, Context, Result};
use d11_core::{Ctx, Element, Instant, Outbox, PortId};
use d11_lab::{Route, Topology};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Options of `d11 bench vpn`.
#[derive(Debug, Clone, clap::Args)]
pub struct VpnArgs {
    /// Rounds of each iperf3 run (the median is kept).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Seconds of each iperf3 run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// Packets timed through ESP and the elements alone.
    #[arg(long, default_value_t = 200_000)]
    pub packets: u64,
    /// Where the topologies are.
    #[arg(long, default_value = "netns")]
    pub topologies: PathBuf,
    /// Also write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// What `d11 bench vpn` measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VpnBench {
    /// iperf3 TCP north VM → east VM through the VPN, Mbit/s (median).
    pub vpn_tcp_mbit_s: Option<f64>,
    /// The same north VM → east VM with the VPN replaced by plain routing.
    pub clear_tcp_mbit_s: Option<f64>,
    pub vpn_rounds: Vec<Option<f64>>,
    pub clear_rounds: Vec<Option<f64>>,
    /// The tunnel's MTU the VM learned (`ip route get`), bytes.
    pub learned_mtu: Option<f64>,
    /// ESP seal + open of a 1400-byte packet, ns.
    pub esp_seal_open_ns: Option<f64>,
    /// The vgw's on_frame routing a 1400-byte packet between the AZs, ns.
    pub vgw_route_ns: Option<f64>,
    /// The vgw's on_frame sealing a VM's 1400-byte packet into ESP, ns.
    pub vgw_seal_ns: Option<f64>,
    /// The vgw's on_frame opening an ESP packet into the VPC, ns.
    pub vgw_open_ns: Option<f64>,
    /// A null element's on_frame on the same frame, ns.
    pub null_ns: Option<f64>,
    /// In the lab during the VPN run: vgw-n's and border-n's CPU per frame, ns.
    pub lab_vgw_n_ns_per_frame: Option<f64>,
    pub lab_border_n_ns_per_frame: Option<f64>,
    /// vgw-n's CPU per frame routing the same run in clear, ns.
    pub lab_vgw_n_clear_ns_per_frame: Option<f64>,
}

/// The goals.
const TCP_GOAL: f64 = 0.8;
const CPU_GOAL: f64 = 1.5;

impl VpnBench {
    pub fn figures(&self) -> Vec<Figure> {
        vec![
            Figure {
                figure: "iperf3 TCP north VM → east VM through the VPN, Mbit/s".into(),
                value: self.vpn_tcp_mbit_s,
                baseline: "the same path with the VPN replaced by plain routing",
                base: self.clear_tcp_mbit_s,
                goal: Goal::ratio_at_least(TCP_GOAL),
            },
            Figure {
                figure: "ESP seal + open of a 1400-byte packet alone (AES-GCM-128), ns".into(),
                value: self.esp_seal_open_ns,
                baseline: "the vgw routing the same packet between the AZs alone",
                base: self.vgw_route_ns,
                goal: None,
            },
            Figure {
                figure:
                    "the vgw sealing a VM's 1400-byte packet into ESP (on_frame alone), ns/frame"
                        .into(),
                value: self.vgw_seal_ns,
                baseline: "`null` on the same frame",
                base: self.null_ns,
                goal: None,
            },
            Figure {
                figure: "the vgw opening it into the VPC (on_frame alone), ns/frame".into(),
                value: self.vgw_open_ns,
                baseline: "`null` on the same frame",
                base: self.null_ns,
                goal: None,
            },
            Figure {
                figure: "vgw-n's CPU per frame in the lab during the VPN's iperf3, ns".into(),
                value: self.lab_vgw_n_ns_per_frame,
                baseline: "border-n's (a router forwarding the same ESP frames)",
                base: self.lab_border_n_ns_per_frame,
                goal: Goal::ratio_at_most(CPU_GOAL),
            },
            Figure {
                figure: "vgw-n's CPU per frame in the lab during the VPN's iperf3, ns".into(),
                value: self.lab_vgw_n_ns_per_frame,
                baseline: "vgw-n's routing the same run in clear",
                base: self.lab_vgw_n_clear_ns_per_frame,
                goal: None,
            },
        ]
    }

    fn print(&self) {
        crate::print_figures(&self.figures());
        if let Some(m) = self.learned_mtu {
            println!(
                "vm-lb-n learned the tunnel's MTU from the gateway's fragmentation needed: {m:.0}"
            );
        }
    }
}

/// `d11 bench vpn`.
pub fn vpn(args: &VpnArgs) -> Result<()> {
    crate::need_root("d11 bench vpn")?;
    let mut r = VpnBench::default();
    alone(&mut r, args.packets);
    let exe = crate::lab::d11_exe()?;
    let topo = args.topologies.join("double11.toml");
    let scratch = Scratch::new("vpn")?;
    let clear = routed_in_clear(Topology::load(&topo)?)?;
    let clear = write_topology(&scratch.0, "double11-clear.toml", &clear)?;
    let pid = std::process::id() % 100_000;
    let (lab, _) = LabGuard::up(&exe, &topo, &format!("bvpn{pid}"))?;
    let (plain, _) = LabGuard::up(&exe, &clear, &format!("bclr{pid}"))?;
    drop(scratch);
    let ends = Ends {
        client: "vm-lb-n",
        server: "vm-reg",
        server_ip: "192.168.1.30",
    };
    for l in [&lab, &plain] {
        l.warm_up(ends.client, ends.server_ip)?;
    }
    let secs = args.seconds.to_string();
    let (mut a, mut b) = (vec![], vec![]);
    let (mut loads, mut clear_loads) = (vec![], vec![]);
    for _ in 0..args.rounds {
        for (l, tcp, load) in [
            (&lab, &mut a, &mut loads),
            (&plain, &mut b, &mut clear_loads),
        ] {
            let before = element_work(&l.name)?;
            tcp.push(iperf(l, &ends, &["-t", &secs])?.tcp_mbit_s()?);
            load.push(NodeLoad::between(&before, &element_work(&l.name)?));
        }
    }
    r.vpn_rounds = a.iter().copied().map(finite).collect();
    r.clear_rounds = b.iter().copied().map(finite).collect();
    r.vpn_tcp_mbit_s = finite(median(a));
    r.clear_tcp_mbit_s = finite(median(b));
    let per = |loads: &[BTreeMap<String, NodeLoad>], n: &str| {
        finite(median(
            loads
                .iter()
                .filter_map(|l| l.get(n)?.ns_per_frame)
                .collect(),
        ))
    };
    r.lab_vgw_n_ns_per_frame = per(&loads, "vgw-n");
    r.lab_border_n_ns_per_frame = per(&loads, "border-n");
    r.lab_vgw_n_clear_ns_per_frame = per(&clear_loads, "vgw-n");
    let route = lab
        .exec(ends.client, &["ip", "route", "get", ends.server_ip])
        .output()
        .context("ip route get")?;
    r.learned_mtu = String::from_utf8_lossy(&route.stdout)
        .split_whitespace()
        .skip_while(|w| *w != "mtu")
        .nth(1)
        .and_then(|m| m.parse().ok());
    drop((lab, plain));
    r.print();
    write_json(args.json.as_deref(), &r)
}

/// The topology with the VPN replaced by plain routing between the
/// regions: each gateway with a `config.vpn` routes the other VPC in clear
/// (`clear = true`), and the VPC prefixes are routed where the tunnel's
/// packets go — the gateway's border (its default route's next hop) sends
/// its VPC's prefix to the gateway, and the border's carrier (the border's
/// default's next hop) sends it to the border. No real carrier routes
/// private prefixes: this lab exists only as the baseline.
pub fn routed_in_clear(mut topo: Topology) -> Result<Topology> {
    let mut added: Vec<(usize, Route)> = vec![];
    for (i, n) in topo.nodes.iter().enumerate() {
        let Some(vpn) = n.config.get("vpn").and_then(|v| v.as_table()) else {
            continue;
        };
        let local: d11_wire::Ipv4Cidr = (vpn.get("local").and_then(|v| v.as_str()))
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("{}: config.vpn.local is not a prefix", n.name))?;
        // gateway → border → carrier, each by its default route.
        let mut at = i;
        for _ in 0..2 {
            let node = &topo.nodes[at];
            let via = default_via(node)?;
            let next = (topo.nodes.iter())
                .position(|m| {
                    m.ports
                        .iter()
                        .any(|p| p.address.is_some_and(|a| a.addr() == via))
                })
                .with_context(|| format!("{}: no node holds {via}", node.name))?;
            let back = (node.ports.iter())
                .filter_map(|p| p.address)
                .find(|a| a.contains(via))
                .with_context(|| format!("{}: no port on {via}'s subnet", node.name))?;
            added.push((
                next,
                Route {
                    to: local,
                    via: back.addr(),
                },
            ));
            at = next;
        }
    }
    if added.is_empty() {
        bail!("the topology has no gateway with a config.vpn");
    }
    for n in &mut topo.nodes {
        if let Some(vpn) = n.config.get_mut("vpn").and_then(|v| v.as_table_mut()) {
            vpn.insert("clear".into(), true.into());
        }
    }
    for (i, r) in added {
        topo.nodes[i].routes.push(r);
    }
    Ok(topo)
}

fn default_via(n: &d11_lab::Node) -> Result<Ipv4Addr> {
    (n.routes.iter())
        .find(|r| r.to.prefix_len() == 0)
        .map(|r| r.via)
        .with_context(|| format!("{}: no default route", n.name))
}

/// Times `f` over `n` calls, ns each.
fn time_each(n: u64, mut f: impl FnMut()) -> Option<f64> {
    for _ in 0..n.min(1000) {
        f();
    }
    let t0 = std::time::Instant::now();
    for _ in 0..n {
        f();
    }
    finite(t0.elapsed().as_nanos() as f64 / n as f64)
}

/// The no-I/O figures: ESP alone, the vgw's on_frame, a null element.
fn alone(r: &mut VpnBench, n: u64) {
    use d11_wire::esp::{EspPacket, GcmSa, Spi, NEXT_IPV4};
    let inner = packet_1400();
    let sa = GcmSa::new(&[7; 20]);
    let (mut out, mut buf) = (Vec::with_capacity(1500), Vec::with_capacity(1500));
    let mut seq = 0u32;
    r.esp_seal_open_ns = time_each(n, || {
        seq = seq.wrapping_add(1);
        out.clear();
        sa.seal(
            Spi(0x1001),
            seq,
            u64::from(seq).to_be_bytes(),
            NEXT_IPV4,
            &inner,
            &mut out,
        );
        let p = EspPacket::new_checked(&out[..]).expect("ours parses");
        let o = sa.open(&p, &mut buf).expect("ours opens");
        assert_eq!(o.len, inner.len());
    });
    let (mut east, mut north, north_mac) = gateways();
    let mut o = Outbox::new();
    let now = Instant::from_millis(1);
    // East seals a VM's packet; north opens what east sent.
    let from_vm = vxlan_from_host(&inner, [10, 0, 0, 12]);
    let mut sealed = vec![];
    let mut cx = Ctx::new(now, 1);
    r.vgw_seal_ns = time_each(n, || {
        o.clear();
        east.on_frame(&mut cx, PortId(1), &from_vm, &mut o);
        let mut f = o.frames();
        let (p, fr) = f.next().expect("sealed");
        assert_eq!(p, PortId(0));
        if sealed.is_empty() {
            sealed = fr.to_vec();
        }
    });
    // The same sealed frame again and again would be a replay: open fresh
    // ones, made beforehand.
    let count = n.min(100_000);
    let frames: Vec<Vec<u8>> = (0..count)
        .map(|_| {
            o.clear();
            east.on_frame(&mut cx, PortId(1), &from_vm, &mut o);
            let (_, f) = o.frames().next().expect("sealed");
            let mut f = f.to_vec();
            f[0..6].copy_from_slice(&north_mac.0);
            f
        })
        .collect();
    let mut i = 0;
    r.vgw_open_ns = time_each(count.saturating_sub(1000), || {
        o.clear();
        north.on_frame(&mut cx, PortId(0), &frames[i % frames.len()], &mut o);
        assert_eq!(o.frames().count(), 1, "{:?}", o.drops());
        i += 1;
    });
    // Routing between the AZs: to 192.168.2.20 instead.
    let mut between = inner.clone();
    between[16..20].copy_from_slice(&[192, 168, 2, 20]);
    d11_wire::ipv4::Ipv4Packet::new_checked(&mut between[..])
        .expect("ours")
        .fill_checksum();
    let routed = vxlan_from_host(&between, [10, 0, 0, 12]);
    r.vgw_route_ns = time_each(n, || {
        o.clear();
        east.on_frame(&mut cx, PortId(1), &routed, &mut o);
        assert_eq!(o.frames().count(), 1);
    });
    let mut null = d11_elements::null::Null::new(2);
    r.null_ns = time_each(n, || {
        o.clear();
        null.on_frame(&mut cx, PortId(1), &from_vm, &mut o);
        assert_eq!(o.frames().count(), 1);
    });
}

const EAST_EXT_MAC: d11_wire::MacAddr = d11_wire::MacAddr([2, 0, 0, 0, 0xe, 2]);
const NORTH_EXT_MAC: d11_wire::MacAddr = d11_wire::MacAddr([2, 0, 0, 1, 0xe, 2]);
const ROUTER_MAC: d11_wire::MacAddr = d11_wire::MacAddr([2, 0, 0, 0, 0xa, 1]);
const VM_MAC: d11_wire::MacAddr = d11_wire::MacAddr([2, 0, 0, 0, 1, 0x20]);
const HOST_MAC: d11_wire::MacAddr = d11_wire::MacAddr([2, 0, 0, 0, 0, 0x12]);
const BORDER_MAC: d11_wire::MacAddr = d11_wire::MacAddr([2, 0, 0, 0, 0xb, 1]);

/// A 1400-byte UDP packet from vm-ctl (192.168.1.20) to 172.20.1.20, DF set.
fn packet_1400() -> Vec<u8> {
    let mut p = vec![];
    d11_wire::ipv4::Ipv4Repr {
        src: [192, 168, 1, 20].into(),
        dst: [172, 20, 1, 20].into(),
        protocol: d11_wire::ipv4::protocol::UDP,
        ttl: 64,
        ident: 1,
        dont_frag: true,
        payload_len: 1380,
    }
    .emit(&mut p);
    p.extend_from_slice(&40000u16.to_be_bytes());
    p.extend_from_slice(&9u16.to_be_bytes());
    p.extend_from_slice(&1380u16.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.resize(1400, 0x5a);
    p
}

/// `ip` from the VM in VXLAN 1001 from host `vtep`, to the vgw's underlay.
fn vxlan_from_host(ip: &[u8], vtep: [u8; 4]) -> Vec<u8> {
    let mut inner = vec![];
    d11_wire::ethernet::emit_header(
        &mut inner,
        ROUTER_MAC,
        VM_MAC,
        d11_wire::ethernet::EtherType::Ipv4,
    );
    inner.extend_from_slice(ip);
    let mut f = vec![];
    d11_wire::ethernet::emit_header(
        &mut f,
        d11_wire::MacAddr([2, 0, 0, 0, 0, 1]),
        HOST_MAC,
        d11_wire::ethernet::EtherType::Ipv4,
    );
    d11_elements::vswitch::emit_vxlan(
        &mut f,
        vtep.into(),
        [10, 0, 0, 1].into(),
        9,
        d11_wire::vxlan::Vni::new(1001).expect("a VNI"),
        &inner,
    );
    f
}

/// East's and north's gateways as double11.toml has them (keys derived
/// from the SPIs), with their neighbours' MACs known.
type Gateway = Box<dyn d11_core::AnyElement>;

fn gateways() -> (Gateway, Gateway, d11_wire::MacAddr) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../netns/double11.toml");
    let topo = d11_lab::Topology::load(std::path::Path::new(path)).expect("double11.toml");
    let build = |name: &str| {
        let spec = topo.element(name).expect("a vgw");
        topo.roles().build(&spec.node()).expect("it builds")
    };
    let (mut east, mut north) = (build("vgw"), build("vgw-n"));
    // Teach each its neighbours by ARP replies, as the lab would.
    let mut o = Outbox::new();
    let mut cx = Ctx::new(Instant::from_millis(0), 1);
    let arp = |me: d11_wire::MacAddr, my_ip: [u8; 4], mac: d11_wire::MacAddr, ip: [u8; 4]| {
        let mut f = vec![];
        d11_wire::arp::ArpRepr {
            op: d11_wire::arp::ArpOp::Reply,
            sender_mac: mac,
            sender_ip: ip.into(),
            target_mac: me,
            target_ip: my_ip.into(),
        }
        .emit_frame(&mut f);
        f
    };
    let learn = |g: &mut Gateway, port: u16, f: Vec<u8>, o: &mut Outbox, cx: &mut Ctx| {
        g.on_frame(cx, PortId(port), &f, o);
    };
    let east_ext = mac_of(&topo, "vgw", "ext").unwrap_or(EAST_EXT_MAC);
    let north_ext = mac_of(&topo, "vgw-n", "ext").unwrap_or(NORTH_EXT_MAC);
    learn(
        &mut east,
        0,
        arp(east_ext, [203, 0, 113, 2], BORDER_MAC, [203, 0, 113, 1]),
        &mut o,
        &mut cx,
    );
    learn(
        &mut east,
        1,
        arp(
            d11_wire::MacAddr([2, 0, 0, 0, 0, 1]),
            [10, 0, 0, 1],
            HOST_MAC,
            [10, 0, 0, 12],
        ),
        &mut o,
        &mut cx,
    );
    learn(
        &mut north,
        0,
        arp(north_ext, [198, 19, 24, 2], BORDER_MAC, [198, 19, 24, 1]),
        &mut o,
        &mut cx,
    );
    learn(
        &mut north,
        1,
        arp(
            d11_wire::MacAddr([2, 0, 0, 1, 0, 1]),
            [10, 1, 0, 1],
            HOST_MAC,
            [10, 1, 0, 11],
        ),
        &mut o,
        &mut cx,
    );
    (east, north, north_ext)
}

fn mac_of(topo: &d11_lab::Topology, node: &str, port: &str) -> Option<d11_wire::MacAddr> {
    topo.node(node)?.port(port).map(|p| p.mac(node))
}

#[cfg(test)]
mod tests {
    use super::*;
    use d11_elements::vgw::VgwReport;
    use d11_sim::{LinkParams, Message, SimLab};
    use std::time::Duration;

    fn double11() -> Topology {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../netns/double11.toml");
        Topology::load(std::path::Path::new(path)).unwrap()
    }

    #[test]
    fn the_clear_lab_routes_each_vpc_from_the_carrier_to_its_gateway_and_changes_nothing_else() {
        let orig = double11();
        let clear = routed_in_clear(orig.clone()).unwrap();
        let text = toml::to_string(&clear).unwrap();
        let clear = Topology::parse(&text, "double11-clear.toml").unwrap();
        let added = |name: &str| {
            let (a, b) = (clear.node(name).unwrap(), orig.node(name).unwrap());
            a.routes[b.routes.len()..]
                .iter()
                .map(|r| format!("{} via {}", r.to, r.via))
                .collect::<Vec<_>>()
        };
        assert_eq!(added("border"), ["192.168.0.0/16 via 203.0.113.2"]);
        assert_eq!(added("border-n"), ["172.20.0.0/16 via 198.19.24.2"]);
        assert_eq!(
            added("c2"),
            [
                "192.168.0.0/16 via 192.0.2.10",
                "172.20.0.0/16 via 192.0.2.22"
            ]
        );
        for (a, b) in clear.nodes.iter().zip(&orig.nodes) {
            match a.name.as_str() {
                "border" | "border-n" | "c2" => assert_eq!(a.config, b.config),
                "vgw" | "vgw-n" => {
                    assert_eq!(a.config["vpn"]["clear"].as_bool(), Some(true));
                    assert_eq!(a.routes, b.routes);
                }
                _ => assert_eq!(a, b),
            }
        }
        let mut no_vpn = orig;
        for n in &mut no_vpn.nodes {
            n.config.remove("vpn");
        }
        assert!(routed_in_clear(no_vpn).is_err());
    }

    /// The baseline's path works, in memory: a north VM's pings reach
    /// east's VM through both gateways with no ESP, untranslated.
    #[test]
    fn in_the_clear_lab_a_north_vm_reaches_east_through_both_gateways_without_esp() {
        let topo = routed_in_clear(double11()).unwrap();
        let mut lab = SimLab::new(&topo, 7, |_| LinkParams {
            delay: Duration::from_micros(100),
            loss: 0.0,
        })
        .unwrap();
        lab.sim.run_for(Duration::from_secs(5));
        let vm_order: Ipv4Addr = [192, 168, 1, 40].into();
        for seq in 1..=3 {
            lab.host("vm-ctl-n").ping(vm_order, 64, 7, seq);
        }
        lab.sim.run_for(Duration::from_secs(2));
        let got: Vec<(Ipv4Addr, u16)> = (lab.host("vm-ctl-n").take_received().into_iter())
            .filter_map(|r| match r.msg {
                Message::EchoReply { seq, .. } => Some((r.src, seq)),
                _ => None,
            })
            .collect();
        assert_eq!(got, [(vm_order, 1), (vm_order, 2), (vm_order, 3)]);
        for name in ["vgw", "vgw-n"] {
            let r: VgwReport = lab.sim.status(lab.node(name)).report().unwrap();
            assert_eq!((r.stats.to_vpn, r.stats.from_vpn), (3, 3), "{name}");
            assert!(r.sas.iter().all(|s| s.packets == 0), "{name}: {:?}", r.sas);
        }
    }
}
