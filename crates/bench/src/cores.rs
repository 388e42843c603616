//! `d11 bench core`: each element's own logic alone, no driver, no
//! syscalls and no root: nanoseconds per frame through its `on_frame` on a
//! virtual clock, beside a `null` element that only passes frames across,
//! and the NAT table at 1 and 100,000 entries (a flat cost is the O(1)
//! lookup). The lab benches (`forward`, `cloud`, `mobile`) report the same
//! figures beside their labs'; `bench report` gives them a table of their own.
//!
//! Every timing loop asserts each frame went out of the port it should,
//! alone, so a broken element fails the bench instead of timing its drop.

use anyhow::Result;
use d11_core::L3Port;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

/// Options of `d11 bench core`.
#[derive(Debug, Clone, clap::Args)]
pub struct CoreArgs {
    /// Frames timed through each element.
    #[arg(long, default_value_t = 2_000_000)]
    pub frames: u64,
    /// Also write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The router alone, and a null element on the same frame.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RouterCore {
    pub router_ns_per_frame: Option<f64>,
    pub null_ns_per_frame: Option<f64>,
}

/// The mobile elements alone, uplink and downlink, a null element, and the
/// PGW's NAT table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MobileCore {
    pub enb_uplink_ns_per_frame: Option<f64>,
    pub enb_downlink_ns_per_frame: Option<f64>,
    pub sgw_uplink_ns_per_frame: Option<f64>,
    pub sgw_downlink_ns_per_frame: Option<f64>,
    pub pgw_uplink_ns_per_frame: Option<f64>,
    pub pgw_downlink_ns_per_frame: Option<f64>,
    pub null_ns_per_frame: Option<f64>,
    pub nat_translate_ns_1_entry: Option<f64>,
    pub nat_translate_ns_100k_entries: Option<f64>,
}

/// The vSwitch alone: encapsulation, decapsulation, and a null element.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VSwitchCore {
    pub encap_ns_per_frame: Option<f64>,
    pub decap_ns_per_frame: Option<f64>,
    pub null_ns_per_frame: Option<f64>,
}

/// What `d11 bench core` measures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CoreReport {
    /// Frames timed through each element.
    pub frames: u64,
    pub element_core: RouterCore,
    pub mobile_core: MobileCore,
    pub vswitch_core: VSwitchCore,
}

/// `d11 bench core`.
pub fn core(args: &CoreArgs) -> Result<()> {
    let n = args.frames.max(1);
    let r = CoreReport {
        frames: n,
        element_core: router_core(n),
        mobile_core: mobile_core(n),
        vswitch_core: vswitch_core(n),
    };
    print!("{}", table(&r));
    crate::write_json(args.json.as_deref(), &r)
}

/// One line of the table: what, ns per frame, and the null element it is set against.
pub struct CoreRow {
    pub what: &'static str,
    pub ns: Option<f64>,
    pub null_ns: Option<f64>,
}

impl CoreReport {
    /// Each element's figure beside the null element timed with it (the
    /// NAT table at 100k entries beside 1 entry).
    pub fn rows(&self) -> Vec<CoreRow> {
        let (e, m, v) = (&self.element_core, &self.mobile_core, &self.vswitch_core);
        let row = |what, ns, null_ns| CoreRow { what, ns, null_ns };
        vec![
            row("router", e.router_ns_per_frame, e.null_ns_per_frame),
            row(
                "vswitch, encapsulation",
                v.encap_ns_per_frame,
                v.null_ns_per_frame,
            ),
            row(
                "vswitch, decapsulation",
                v.decap_ns_per_frame,
                v.null_ns_per_frame,
            ),
            row(
                "enb, uplink",
                m.enb_uplink_ns_per_frame,
                m.null_ns_per_frame,
            ),
            row(
                "enb, downlink",
                m.enb_downlink_ns_per_frame,
                m.null_ns_per_frame,
            ),
            row(
                "sgw, uplink",
                m.sgw_uplink_ns_per_frame,
                m.null_ns_per_frame,
            ),
            row(
                "sgw, downlink",
                m.sgw_downlink_ns_per_frame,
                m.null_ns_per_frame,
            ),
            row(
                "pgw, uplink (GTP-U end, NAT)",
                m.pgw_uplink_ns_per_frame,
                m.null_ns_per_frame,
            ),
            row(
                "pgw, downlink (NAT, GTP-U)",
                m.pgw_downlink_ns_per_frame,
                m.null_ns_per_frame,
            ),
            row("null", e.null_ns_per_frame, e.null_ns_per_frame),
            row(
                "NAT translate at 100k entries (× 1 entry)",
                m.nat_translate_ns_100k_entries,
                m.nat_translate_ns_1_entry,
            ),
        ]
    }
}

/// The table `d11 bench core` prints.
pub fn table(r: &CoreReport) -> String {
    let mut s = format!(
        "element alone (no I/O), {} frames each    ns/frame   × null\n",
        r.frames
    );
    for row in r.rows() {
        s.push_str(&format!(
            "{:<42} {:>8}   {:>6}\n",
            row.what,
            crate::cell(row.ns, 1),
            crate::ratio(row.ns, row.null_ns).map_or("-".into(), |x| format!("{x:.2}x")),
        ));
    }
    s
}

/// The element alone, no driver and no syscalls: nanoseconds per frame
/// through `Router::on_frame` (ARP resolved, default route) and through a
/// `Null`, on the same 74-byte ICMP echo frame.
pub fn router_core(n: u64) -> RouterCore {
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
        let mut cx = d11_core::Ctx::new(d11_core::Instant::ZERO, 1);
        let t0 = Instant::now();
        for i in 0..n {
            out.clear();
            let now = d11_core::Instant::from_micros(1_000 + i / 16);
            e.on_frame(cx.at(now), PortId(0), &frame, out);
        }
        assert_eq!(out.frames().count(), 1, "the frame was forwarded");
        t0.elapsed().as_nanos() as f64 / n as f64
    };
    let r = time(&mut router, &mut out);
    let null = time(&mut d11_elements::null::Null::new(2), &mut out);
    RouterCore {
        router_ns_per_frame: Some(r),
        null_ns_per_frame: Some(null),
    }
}

/// The mobile elements alone, no driver and no syscalls, against a `null`
/// element: nanoseconds per frame through the eNB, the SGW and the PGW,
/// uplink (eNB: the UE's packet into GTP-U; SGW: the TEID switch; PGW: GTP-U
/// end, bearer, NAT, TTL) and downlink (PGW: NAT back and into GTP-U; SGW;
/// eNB: out of GTP-U to the UE), every ARP resolved; and the NAT table alone
/// with 1 and then 100,000 entries (a flat cost is the O(1) lookup the issue
/// asks for).
pub fn mobile_core(n: u64) -> MobileCore {
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
    MobileCore {
        enb_uplink_ns_per_frame: Some(enb_up),
        enb_downlink_ns_per_frame: Some(enb_down),
        sgw_uplink_ns_per_frame: Some(sgw_up),
        sgw_downlink_ns_per_frame: Some(sgw_down),
        pgw_uplink_ns_per_frame: Some(pgw_up),
        pgw_downlink_ns_per_frame: Some(pgw_down),
        null_ns_per_frame: Some(null_ns),
        nat_translate_ns_1_entry: Some(nat_translate_ns(1, n)),
        nat_translate_ns_100k_entries: Some(nat_translate_ns(100_000, n)),
    }
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
pub fn nat_translate_ns(entries: u32, n: u64) -> f64 {
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

/// The vSwitch alone, no driver and no syscalls, against a `null` element:
/// nanoseconds per 64-byte UDP frame from the VM encapsulated towards host B
/// (FDB and underlay ARP resolved), and per VXLAN packet from host B
/// decapsulated to the VM.
pub fn vswitch_core(n: u64) -> VSwitchCore {
    use d11_core::{Element, Outbox, PortId};
    use d11_elements::vswitch::{
        emit_vxlan, StaticStation, UnderlayPort, VSwitch, VSwitchConfig, VmPort,
    };
    use d11_wire::{arp::ArpRepr, ethernet, ipv4::Ipv4Repr, vxlan::Vni, MacAddr};
    let ip = |s: &str| s.parse::<std::net::Ipv4Addr>().expect("literal");
    let vni = Vni::new(1001).expect("literal");
    let (ha, hb) = (
        MacAddr([2, 0, 0, 0, 0, 0x11]),
        MacAddr([2, 0, 0, 0, 0, 0x12]),
    );
    let (lb, ctl) = (
        MacAddr([2, 0, 0, 0, 1, 0x10]),
        MacAddr([2, 0, 0, 0, 1, 0x20]),
    );
    let station = |mac, addr: &str, vtep: &str| StaticStation {
        vni,
        mac,
        ip: Some(ip(addr)),
        vtep: ip(vtep),
    };
    let mut vs = VSwitch::new(VSwitchConfig {
        underlay: UnderlayPort {
            name: "underlay".into(),
            mac: ha,
            address: "10.0.0.11/24".parse().expect("literal"),
            mtu: 1500,
        },
        vms: vec![VmPort {
            name: "lb".into(),
            vni,
            mtu: 1450,
        }],
        flood: [(vni, vec![ip("10.0.0.12")])].into(),
        stations: vec![
            station(lb, "192.168.1.10", "10.0.0.11"),
            station(ctl, "192.168.1.20", "10.0.0.12"),
        ],
        aging: VSwitchConfig::DEFAULT_AGING,
        max_macs: VSwitchConfig::DEFAULT_MAX_MACS,
    });
    let mut out = Outbox::new();
    // Host B asks for host A's VTEP address: host A learns host B's MAC.
    let mut arp = vec![];
    ArpRepr::request(hb, ip("10.0.0.12"), ip("10.0.0.11")).emit_frame(&mut arp);
    vs.on_frame(
        &mut (d11_core::Instant::ZERO).into(),
        PortId(0),
        &arp,
        &mut out,
    );
    let udp = |src_mac, dst_mac, src: &str, dst: &str| {
        let mut f = vec![];
        ethernet::emit_header(&mut f, dst_mac, src_mac, ethernet::EtherType::Ipv4);
        Ipv4Repr {
            src: ip(src),
            dst: ip(dst),
            protocol: 17,
            ttl: 64,
            ident: 1,
            dont_frag: true,
            payload_len: 8 + 18,
        }
        .emit(&mut f);
        f.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51, 0, 26, 0, 0]);
        f.extend_from_slice(&[b'x'; 18]);
        f
    };
    let from_vm = udp(lb, ctl, "192.168.1.10", "192.168.1.20");
    let mut from_hb = vec![];
    ethernet::emit_header(&mut from_hb, ha, hb, ethernet::EtherType::Ipv4);
    let inner = udp(ctl, lb, "192.168.1.20", "192.168.1.10");
    emit_vxlan(
        &mut from_hb,
        ip("10.0.0.12"),
        ip("10.0.0.11"),
        1,
        vni,
        &inner,
    );
    let mut time = |e: &mut dyn Element, port: PortId, frame: &[u8], to: PortId| {
        let mut cx = d11_core::Ctx::new(d11_core::Instant::ZERO, 1);
        let t0 = Instant::now();
        for i in 0..n {
            out.clear();
            let now = d11_core::Instant::from_micros(1_000 + i / 16);
            e.on_frame(cx.at(now), port, frame, &mut out);
        }
        let sent: Vec<PortId> = out.frames().map(|(p, _)| p).collect();
        assert_eq!(sent, [to], "the frame was forwarded");
        t0.elapsed().as_nanos() as f64 / n as f64
    };
    let encap = time(&mut vs, PortId(1), &from_vm, PortId(0));
    let decap = time(&mut vs, PortId(0), &from_hb, PortId(1));
    let passed = time(
        &mut d11_elements::null::Null::new(2),
        PortId(0),
        &from_vm,
        PortId(1),
    );
    VSwitchCore {
        encap_ns_per_frame: Some(encap),
        decap_ns_per_frame: Some(decap),
        null_ns_per_frame: Some(passed),
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
        for (k, v) in [
            ("enb up", m.enb_uplink_ns_per_frame),
            ("enb down", m.enb_downlink_ns_per_frame),
            ("sgw up", m.sgw_uplink_ns_per_frame),
            ("sgw down", m.sgw_downlink_ns_per_frame),
            ("pgw up", m.pgw_uplink_ns_per_frame),
            ("pgw down", m.pgw_downlink_ns_per_frame),
            ("null", m.null_ns_per_frame),
            ("nat 1", m.nat_translate_ns_1_entry),
            ("nat 100k", m.nat_translate_ns_100k_entries),
        ] {
            assert!(v.is_some_and(|v| v > 0.0), "{k}: {m:?}");
        }
    }

    #[test]
    fn the_vswitch_core_benchmark_forwards_both_ways_and_reports_each_figure() {
        // The timing loop asserts every frame went out of the expected port
        // (encapsulated to the underlay, decapsulated to the VM).
        let c = vswitch_core(2_000);
        for v in [
            c.encap_ns_per_frame,
            c.decap_ns_per_frame,
            c.null_ns_per_frame,
        ] {
            assert!(v.is_some_and(|v| v > 0.0), "{c:?}");
        }
    }

    #[test]
    fn the_core_table_sets_each_element_against_the_null_timed_with_it() {
        let r = CoreReport {
            frames: 10,
            element_core: RouterCore {
                router_ns_per_frame: Some(30.0),
                null_ns_per_frame: Some(15.0),
            },
            mobile_core: MobileCore {
                pgw_uplink_ns_per_frame: Some(90.0),
                null_ns_per_frame: Some(10.0),
                ..MobileCore::default()
            },
            vswitch_core: VSwitchCore::default(),
        };
        let t = table(&r);
        let line = |start: &str| {
            t.lines()
                .find(|l| l.starts_with(start))
                .unwrap()
                .to_string()
        };
        assert!(line("router ").ends_with("30.0    2.00x"), "{t}");
        assert!(line("pgw, uplink").ends_with("90.0    9.00x"), "{t}");
        assert!(line("vswitch, encap").ends_with("-        -"), "{t}");
        let back: CoreReport = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
