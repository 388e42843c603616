//! `router`: an IPv4 router.
//!
//! Read RFC 1812 ("Requirements for IP Version 4 Routers") first, § 5.2–5.3
//! for the forwarding steps and § 4.3 for the ICMP a router originates. The
//! chapter 7 lesson lives here: per hop only the MACs change and TTL goes down
//! by one; the IP addresses stay the same.
//!
//! Shape (Open vSwitch's datapath stages): classify the frame (ARP, for us,
//! to forward), look the destination up in the [`Fib`], apply the action
//! (rewrite MACs, decrement TTL with an incremental checksum [RFC 1624],
//! transmit — or queue behind ARP, fragment, or answer with ICMP).

use crate::bgp::{BgpReport, BgpSettings, RibRow, Speaker};
use crate::role::{Addressing, ElementNode, Role, RoleInfo};
use d11_core::l3::{Input, L3Port, NextHop, RouteSource, L3};
use d11_core::settings::ConfigError;
use d11_core::status::REPORT_ROWS;
use d11_core::{AnyElement, Ctx, DropReason, Element, Instant, Outbox, PortId};
use d11_wire::ethernet::{self, EthernetFrame};
use d11_wire::icmp::IcmpError;
use d11_wire::ipv4::Ipv4Packet;
use d11_wire::Ipv4Cidr;
use std::net::Ipv4Addr;

/// A static route: packets to `to` go to the neighbour `via`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticRoute {
    pub to: Ipv4Cidr,
    pub via: Ipv4Addr,
}

/// What a router is built from (the topology's node, resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    pub ports: Vec<L3Port>,
    pub routes: Vec<StaticRoute>,
}

impl RouterConfig {
    /// The node's ports (each with an address) and static routes.
    pub fn from_node(node: &ElementNode) -> Result<RouterConfig, ConfigError> {
        Ok(RouterConfig {
            ports: node.l3_ports()?,
            routes: node
                .routes
                .iter()
                .map(|r| StaticRoute {
                    to: r.to,
                    via: r.via,
                })
                .collect(),
        })
    }

    /// The embedded router of a mobile element: exactly the ports `names`,
    /// in order.
    pub fn for_ports(node: &ElementNode, names: &[&str]) -> Result<RouterConfig, ConfigError> {
        node.expect_ports(names)?;
        RouterConfig::from_node(node)
    }
}

/// The router role's `config` (docs/topology.md): a BGP speaker, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterSettings {
    #[serde(default)]
    pub bgp: Option<BgpSettings>,
}

/// What a router reports: its IP layer's tables, and its BGP speaker's
/// sessions (`bgp`) and Loc-RIB (`rib`) when it has one. The FIB and the
/// Loc-RIB stop at [`REPORT_ROWS`] rows each; `table fib` and `table rib`
/// give them whole.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RouterReport {
    #[serde(flatten)]
    pub l3: d11_core::l3::L3Report,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<BgpReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rib: Option<Vec<RibRow>>,
    /// How many rows the whole Loc-RIB view has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rib_rows: Option<usize>,
}

/// An IPv4 router with static routes, and BGP when configured.
#[derive(Debug)]
pub struct Router {
    l3: L3,
    bgp: Option<Speaker>,
}

impl Router {
    /// Builds the router: connected routes from each port's subnet, then the
    /// static routes, each sent out of the port whose subnet holds its `via`
    /// (the topology's validation guarantees there is one; a route without one
    /// is skipped with a warning rather than guessed).
    pub fn new(cfg: RouterConfig) -> Router {
        let mut l3 = L3::with_ports(cfg.ports);
        for r in &cfg.routes {
            if let Err(e) = l3.add_route(r.to, r.via, RouteSource::Static) {
                tracing::warn!(%e, "static route skipped");
            }
        }
        Router { l3, bgp: None }
    }

    /// The router with a BGP speaker (`config.bgp`); the error names the
    /// setting.
    pub fn with_bgp(cfg: RouterConfig, bgp: &BgpSettings) -> Result<Router, ConfigError> {
        let statics: Vec<Ipv4Cidr> = cfg.routes.iter().map(|r| r.to).collect();
        let mut r = Router::new(cfg);
        r.bgp = Some(Speaker::new(bgp, &r.l3, &statics)?);
        Ok(r)
    }

    /// The BGP speaker, if the router has one.
    pub fn bgp(&self) -> Option<&Speaker> {
        self.bgp.as_ref()
    }

    /// The router's report as its type.
    pub fn router_report(&self) -> RouterReport {
        let rib = self.bgp.as_ref().map(|b| b.first_rib_rows(REPORT_ROWS));
        RouterReport {
            l3: self.l3.report(),
            bgp: self.bgp.as_ref().map(|b| b.report(&self.l3)),
            rib_rows: rib.as_ref().map(|(_, n)| *n),
            rib: rib.map(|(r, _)| r),
        }
    }

    /// The router's IP layer (its addresses, ARP, FIB and transports).
    pub fn l3(&self) -> &L3 {
        &self.l3
    }

    pub fn l3_mut(&mut self) -> &mut L3 {
        &mut self.l3
    }

    /// Routes a packet the element originated (an ICMP answer, or a GTP-U
    /// packet of the mobile elements that embed a router for their own
    /// addresses). `ingress` is the port drops are counted on.
    pub fn route_local(&mut self, cx: &mut Ctx, ingress: PortId, pkt: &[u8], out: &mut Outbox) {
        self.l3.send_ip(cx, ingress, pkt, out);
    }

    /// What a router does with what its layer did not handle: forwards
    /// transit packets, and drops what else is addressed to it (a router
    /// runs no services of its own).
    // Always inlined, with `forward`: the `Input` passed by value into a
    // call costs the router's core half again (store forwarding on the
    // view it carries).
    #[inline(always)]
    pub fn handle(
        &mut self,
        cx: &mut Ctx,
        port: PortId,
        frame: &[u8],
        input: Input<'_>,
        out: &mut Outbox,
    ) {
        match input {
            Input::Done => {
                // ARP, ping, or a segment for one of its sockets: the
                // speaker reads what arrived.
                if let Some(b) = &mut self.bgp {
                    b.run(cx, &mut self.l3, out);
                }
            }
            Input::Transit(ip) => self.forward(cx, port, frame, &ip, out),
            Input::Local(_) | Input::Tunnel { .. } => {
                out.drop_frame(port, DropReason::UnsupportedProtocol)
            }
        }
    }

    /// Forwards a transit packet that came in on `port` in `frame`: TTL,
    /// the FIB, the next wire's MTU, then the next hop's MAC [RFC 1812 § 5.2].
    #[inline(always)]
    pub fn forward(
        &mut self,
        cx: &mut Ctx,
        port: PortId,
        frame: &[u8],
        ip: &Ipv4Packet<&[u8]>,
        out: &mut Outbox,
    ) {
        if ip.ttl() <= 1 {
            self.l3
                .icmp_error(cx, port, IcmpError::TtlExceeded, ip, out);
            return out.drop_frame(port, DropReason::TtlExpired);
        }
        let Some((_, hop)) = self.l3.lookup(ip.dst()) else {
            self.l3
                .icmp_error(cx, port, IcmpError::NetUnreachable, ip, out);
            return out.drop_frame(port, DropReason::NoRoute);
        };
        let Some((src_mac, mtu)) = self.l3.port(hop.port).map(|p| (p.mac, p.mtu)) else {
            return out.drop_frame(port, DropReason::NoSuchPort);
        };
        if ip.total_len() > usize::from(mtu) {
            if ip.dont_frag() {
                let err = IcmpError::FragmentationNeeded { mtu };
                self.l3.icmp_error(cx, port, err, ip, out);
                return out.drop_frame(port, DropReason::NeedsFragmentation);
            }
            let pkt = one_hop_later(ip);
            return self.l3.send_fragments(cx, port, hop, &pkt, mtu, out);
        }
        match self.l3.resolved(cx.now, next_hop(hop, ip.dst())) {
            Some(mac) => {
                // The fast path: one copy into the outbox, then rewrite in place.
                let f = out.transmit(hop.port, &frame[..ethernet::HEADER_LEN + ip.total_len()]);
                let mut eth = EthernetFrame::new_checked(&mut f[..]).expect("length kept");
                eth.set_dst(mac);
                eth.set_src(src_mac);
                Ipv4Packet::new_checked(eth.payload_mut())
                    .expect("checked above")
                    .decrement_ttl();
            }
            None => {
                let pkt = one_hop_later(ip);
                self.l3.send_via(cx, port, hop, ip.dst(), &pkt, out);
            }
        }
    }
}

impl Role for Router {
    const INFO: RoleInfo = RoleInfo {
        name: "router",
        summary: "IPv4 router with static routes and BGP: every port has an address",
        addressing: Addressing::All,
        bridges: false,
        isolates_tenants: false,
        routes: true,
    };
    type Settings = RouterSettings;
    fn build(node: &ElementNode, s: RouterSettings) -> Result<Box<dyn AnyElement>, ConfigError> {
        let cfg = RouterConfig::from_node(node)?;
        Ok(Box::new(match &s.bgp {
            Some(b) => Router::with_bgp(cfg, b)?,
            None => Router::new(cfg),
        }))
    }
}

/// The neighbour a packet to `dst` is handed to.
fn next_hop(hop: NextHop, dst: Ipv4Addr) -> Ipv4Addr {
    hop.via.unwrap_or(dst)
}

/// A copy of `ip` with its TTL one lower (for the slow paths: behind ARP,
/// fragmented).
fn one_hop_later(ip: &Ipv4Packet<&[u8]>) -> Vec<u8> {
    let mut pkt = ip.packet().to_vec();
    Ipv4Packet::new_checked(&mut pkt[..])
        .expect("checked above")
        .decrement_ttl();
    pkt
}

impl Element for Router {
    fn on_frame(&mut self, cx: &mut Ctx, port: PortId, frame: &[u8], out: &mut Outbox) {
        let input = self.l3.input(cx, port, frame, out);
        self.handle(cx, port, frame, input, out);
    }

    fn on_timer(&mut self, cx: &mut Ctx, out: &mut Outbox) {
        self.l3.on_timer(cx, out);
        if let Some(b) = &mut self.bgp {
            b.run(cx, &mut self.l3, out);
        }
    }

    fn poll_at(&self) -> Option<Instant> {
        let l3 = self.l3.poll_at();
        match self.bgp.as_ref().and_then(Speaker::poll_at) {
            Some(b) => Some(l3.map_or(b, |a| a.min(b))),
            None => l3,
        }
    }

    fn report(&self) -> serde_json::Value {
        d11_core::report_json(&self.router_report())
    }

    fn table(&self, name: &str) -> Option<serde_json::Value> {
        match name {
            "fib" => Some(d11_core::report_json(&self.l3.fib_rows())),
            "rib" => Some(d11_core::report_json(&self.bgp.as_ref()?.rib())),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use d11_wire::arp::ArpRepr;
    use d11_wire::ethernet::EtherType;
    use d11_wire::ipv4::protocol;
    use d11_wire::{hex, icmp, MacAddr};
    use etherparse::{Icmpv4Type, NetSlice, SlicedPacket, TransportSlice};

    // Fixtures made by scapy (/usr/bin/python3, scapy 2.5), with
    // phone=02:00:00:00:00:02 radio=02:00:00:00:01:00 up=02:00:00:00:01:01 c1=02:00:00:00:02:00:
    // ARP_REQ:      Ether(dst=bcast, src=phone)/ARP(op=1, hwsrc=phone, psrc="10.45.0.2", pdst="10.45.0.1")
    // ARP_REPLY:    Ether(dst=phone, src=radio)/ARP(op=2, hwsrc=radio, psrc="10.45.0.1", hwdst=phone, pdst="10.45.0.2")
    // PING_IN:      Ether(dst=radio, src=phone)/IP(src="10.45.0.2", dst="203.0.113.10", ttl=64, id=1, flags="DF")/ICMP(id=1, seq=1)/(b"x"*32)
    // PING_OUT:     the same with Ether(dst=c1, src=up) and ttl=63
    // C1_ARP_REPLY: Ether(dst=up, src=c1)/ARP(op=2, hwsrc=c1, psrc="192.0.2.2", hwdst=up, pdst="192.0.2.1")
    const ARP_REQ: &str =
        "ffffffffffff020000000002080600010800060400010200000000020a2d00020000000000000a2d0001";
    const ARP_REPLY: &str =
        "020000000002020000000100080600010800060400020200000001000a2d00010200000000020a2d0002";
    const PING_IN: &str = "02000000010002000000000208004500003c000140004001f4860a2d0002cb00710a08007076000100017878787878787878787878787878787878787878787878787878787878787878";
    const PING_OUT: &str = "02000000020002000000010108004500003c000140003f01f5860a2d0002cb00710a08007076000100017878787878787878787878787878787878787878787878787878787878787878";
    const C1_ARP_REPLY: &str =
        "02000000010102000000020008060001080006040002020000000200c0000202020000000101c0000201";

    const RADIO: PortId = PortId(0);
    const UP: PortId = PortId(1);
    const PHONE_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
    const C1_MAC: MacAddr = MacAddr([2, 0, 0, 0, 2, 0]);

    fn a2() -> Router {
        Router::new(RouterConfig {
            ports: vec![
                L3Port {
                    name: "radio".into(),
                    mac: MacAddr([2, 0, 0, 0, 1, 0]),
                    address: "10.45.0.1/16".parse().unwrap(),
                    mtu: 1400,
                },
                L3Port {
                    name: "a2c1".into(),
                    mac: MacAddr([2, 0, 0, 0, 1, 1]),
                    address: "192.0.2.1/30".parse().unwrap(),
                    mtu: 1500,
                },
            ],
            routes: vec![StaticRoute {
                to: "0.0.0.0/0".parse().unwrap(),
                via: "192.0.2.2".parse().unwrap(),
            }],
        })
    }

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn frames(o: &Outbox) -> Vec<(PortId, Vec<u8>)> {
        o.frames().map(|(p, f)| (p, f.to_vec())).collect()
    }

    /// A router that already knows the phone and c1.
    fn warm() -> Router {
        let mut r = a2();
        let mut o = Outbox::new();
        r.on_frame(&mut t(0).into(), RADIO, &hex(ARP_REQ), &mut o);
        r.l3.learn(t(0), "192.0.2.2".parse().unwrap(), C1_MAC);
        r
    }

    /// A phone's IPv4 packet as a frame to the radio port, built by hand
    /// (checksums by our Ipv4Repr; the fixtures above pin that it is right).
    fn from_phone(dst: &str, ttl: u8, dont_frag: bool, payload: &[u8], proto: u8) -> Vec<u8> {
        let mut b = vec![];
        ethernet::emit_header(
            &mut b,
            MacAddr([2, 0, 0, 0, 1, 0]),
            PHONE_MAC,
            EtherType::Ipv4,
        );
        d11_wire::ipv4::Ipv4Repr {
            src: "10.45.0.2".parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol: proto,
            ttl,
            ident: 7,
            dont_frag,
            payload_len: payload.len(),
        }
        .emit(&mut b);
        b.extend_from_slice(payload);
        b
    }

    fn icmp_of(frame: &[u8]) -> (Ipv4Addr, Ipv4Addr, Icmpv4Type) {
        let s = SlicedPacket::from_ethernet(frame).expect("etherparse decodes it");
        let Some(NetSlice::Ipv4(ip)) = s.net else {
            panic!("not IPv4")
        };
        let Some(TransportSlice::Icmpv4(i)) = s.transport else {
            panic!("not ICMP")
        };
        (
            ip.header().source_addr(),
            ip.header().destination_addr(),
            i.icmp_type(),
        )
    }

    #[test]
    fn arp_request_for_the_port_address_gets_the_scapy_reply() {
        let mut r = a2();
        let mut o = Outbox::new();
        r.on_frame(&mut t(0).into(), RADIO, &hex(ARP_REQ), &mut o);
        assert_eq!(frames(&o), vec![(RADIO, hex(ARP_REPLY))]);
        assert_eq!(
            r.l3.resolved(t(1), "10.45.0.2".parse().unwrap()),
            Some(PHONE_MAC),
            "the asker is learned"
        );
    }

    #[test]
    fn first_packet_waits_for_arp_then_leaves_with_new_macs_and_ttl_one_lower() {
        let mut r = a2();
        let mut o = Outbox::new();
        r.on_frame(&mut t(0).into(), RADIO, &hex(PING_IN), &mut o);
        let f = frames(&o);
        assert_eq!(f.len(), 1);
        let want_req = {
            let mut b = vec![];
            ArpRepr::request(
                MacAddr([2, 0, 0, 0, 1, 1]),
                "192.0.2.1".parse().unwrap(),
                "192.0.2.2".parse().unwrap(),
            )
            .emit_frame(&mut b);
            b
        };
        assert_eq!(f[0], (UP, want_req));
        o.clear();
        r.on_frame(&mut t(1).into(), UP, &hex(C1_ARP_REPLY), &mut o);
        assert_eq!(
            frames(&o),
            vec![(UP, hex(PING_OUT))],
            "queued packet flushed, byte-identical to scapy's"
        );
        o.clear();
        r.on_frame(&mut t(2).into(), RADIO, &hex(PING_IN), &mut o);
        assert_eq!(
            frames(&o),
            vec![(UP, hex(PING_OUT))],
            "fast path gives the same bytes"
        );
        assert!(o.drops().is_empty());
    }

    #[test]
    fn ttl_one_is_answered_with_time_exceeded_from_the_ingress_address() {
        let mut r = warm();
        let mut o = Outbox::new();
        r.on_frame(
            &mut t(1).into(),
            RADIO,
            &from_phone("203.0.113.10", 1, false, &[0; 16], protocol::UDP),
            &mut o,
        );
        let f = frames(&o);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].0, RADIO);
        let (src, dst, ty) = icmp_of(&f[0].1);
        assert_eq!(
            (src.to_string(), dst.to_string()),
            ("10.45.0.1".into(), "10.45.0.2".into())
        );
        assert!(matches!(ty, Icmpv4Type::TimeExceeded(_)));
        assert_eq!(o.drops(), &[(RADIO, DropReason::TtlExpired)]);
    }

    #[test]
    fn no_route_gets_net_unreachable() {
        let mut r = Router::new(RouterConfig {
            routes: vec![],
            ..a2_config()
        });
        let mut o = Outbox::new();
        r.on_frame(&mut t(0).into(), RADIO, &hex(ARP_REQ), &mut o);
        o.clear();
        r.on_frame(
            &mut t(1).into(),
            RADIO,
            &from_phone("203.0.113.10", 64, false, &[0; 8], protocol::UDP),
            &mut o,
        );
        let (_, _, ty) = icmp_of(&frames(&o)[0].1);
        assert!(matches!(
            ty,
            Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Network)
        ));
        assert_eq!(o.drops(), &[(RADIO, DropReason::NoRoute)]);
    }

    #[test]
    fn a_whole_table_is_cut_in_the_report_and_whole_in_table_fib() {
        let mut cfg = a2_config();
        cfg.routes = (0..3_000u32)
            .map(|i| StaticRoute {
                to: Ipv4Cidr::new(Ipv4Addr::from(0x0a00_0000 | i << 8), 24).unwrap(),
                via: "192.0.2.2".parse().unwrap(),
            })
            .collect();
        let r = Router::new(cfg);
        let report = r.router_report();
        assert_eq!(report.l3.fib.len(), REPORT_ROWS);
        assert_eq!(report.l3.fib_routes, 3_002);
        let fib: Vec<d11_core::l3::FibRow> =
            serde_json::from_value(r.table("fib").unwrap()).unwrap();
        assert_eq!(fib.len(), 3_002);
        // Most specific first, the report's rows the table's first.
        assert_eq!(fib[..REPORT_ROWS], report.l3.fib[..]);
        assert!(r.table("rib").is_none(), "no speaker, no Loc-RIB");
        assert!(r.table("arp").is_none());
    }

    fn a2_config() -> RouterConfig {
        RouterConfig {
            ports: a2().l3.ports().map(|(_, p)| p.clone()).collect(),
            routes: vec![],
        }
    }

    #[test]
    fn too_big_with_df_gets_fragmentation_needed_with_the_next_hop_mtu() {
        let mut cfg = a2_config();
        cfg.ports[1].mtu = 1280;
        cfg.routes = vec![StaticRoute {
            to: "0.0.0.0/0".parse().unwrap(),
            via: "192.0.2.2".parse().unwrap(),
        }];
        let mut r = Router::new(cfg);
        let mut o = Outbox::new();
        r.on_frame(&mut t(0).into(), RADIO, &hex(ARP_REQ), &mut o);
        o.clear();
        r.on_frame(
            &mut t(1).into(),
            RADIO,
            &from_phone("203.0.113.10", 64, true, &[1; 1300], protocol::UDP),
            &mut o,
        );
        let (_, _, ty) = icmp_of(&frames(&o)[0].1);
        assert!(matches!(
            ty,
            Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                    next_hop_mtu: 1280
                }
            )
        ));
        assert_eq!(o.drops(), &[(RADIO, DropReason::NeedsFragmentation)]);
    }

    #[test]
    fn too_big_without_df_is_fragmented_and_the_fragments_reassemble() {
        let mut cfg = a2_config();
        cfg.ports[1].mtu = 576;
        cfg.routes = vec![StaticRoute {
            to: "0.0.0.0/0".parse().unwrap(),
            via: "192.0.2.2".parse().unwrap(),
        }];
        let mut r = Router::new(cfg);
        r.l3.learn(t(0), "192.0.2.2".parse().unwrap(), C1_MAC);
        let payload: Vec<u8> = (0..1300u32).map(|i| i as u8).collect();
        let mut o = Outbox::new();
        r.on_frame(
            &mut t(1).into(),
            RADIO,
            &from_phone("203.0.113.10", 64, false, &payload, protocol::UDP),
            &mut o,
        );
        let f = frames(&o);
        assert_eq!(f.len(), 3);
        let mut joined = vec![0u8; payload.len()];
        for (i, (port, frame)) in f.iter().enumerate() {
            assert_eq!(*port, UP);
            assert!(frame.len() - 14 <= 576);
            let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
            assert!(ip.verify_checksum());
            assert_eq!(ip.ttl(), 63);
            assert_eq!(ip.more_frags(), i < 2);
            joined[ip.frag_offset()..ip.frag_offset() + ip.payload().len()]
                .copy_from_slice(ip.payload());
        }
        assert_eq!(joined, payload);
    }

    #[test]
    fn an_unanswered_next_hop_is_retried_then_reported_host_unreachable() {
        let mut r = a2();
        let mut o = Outbox::new();
        r.on_frame(&mut t(0).into(), RADIO, &hex(ARP_REQ), &mut o);
        r.on_frame(&mut t(0).into(), RADIO, &hex(PING_IN), &mut o);
        o.clear();
        let mut now = t(0);
        let mut requests = 0;
        while let Some(at) = r.poll_at() {
            now = at;
            r.on_timer(&mut now.into(), &mut o);
            requests += o.frames().filter(|(p, _)| *p == UP).count();
            if o.drops().is_empty() {
                o.clear();
            } else {
                break;
            }
        }
        assert_eq!(requests, 2, "two retries after the first request");
        assert_eq!(now, t(3000));
        assert_eq!(o.drops(), &[(UP, DropReason::ArpTimeout)]);
        let (src, _, ty) = icmp_of(&frames(&o).iter().find(|(p, _)| *p == RADIO).unwrap().1);
        assert_eq!(src.to_string(), "10.45.0.1");
        assert!(matches!(
            ty,
            Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Host)
        ));
    }

    #[test]
    fn echo_requests_to_the_router_are_answered() {
        let mut r = warm();
        let mut o = Outbox::new();
        let mut echo = vec![];
        icmp::emit_icmp(&mut echo, icmp::ECHO_REQUEST, 0, [0, 9, 0, 1], b"hello");
        r.on_frame(
            &mut t(1).into(),
            RADIO,
            &from_phone("192.0.2.1", 64, false, &echo, protocol::ICMP),
            &mut o,
        );
        let f = frames(&o);
        let (src, dst, ty) = icmp_of(&f[0].1);
        assert_eq!(
            (src.to_string(), dst.to_string()),
            ("192.0.2.1".into(), "10.45.0.2".into())
        );
        assert!(matches!(ty, Icmpv4Type::EchoReply(e) if e.id == 9 && e.seq == 1));
        assert_eq!(&f[0].1[..6], &PHONE_MAC.0);
    }

    #[test]
    fn bad_frames_are_counted_drops_with_their_reason() {
        let mut r = warm();
        let mut o = Outbox::new();
        let good = hex(PING_IN);
        let mut cases: Vec<(Vec<u8>, DropReason)> = vec![
            (good[..10].to_vec(), DropReason::Truncated),
            (good[..30].to_vec(), DropReason::Truncated),
            (good[..40].to_vec(), DropReason::Malformed), // total length beyond the frame
            (vec![0; 2000], DropReason::NotForUs),
        ];
        let mut bad_sum = good.clone();
        bad_sum[24] ^= 0xff;
        cases.push((bad_sum, DropReason::BadChecksum));
        let mut v6 = good.clone();
        v6[14] = 0x65;
        cases.push((v6, DropReason::Malformed));
        let mut mc = good.clone();
        mc[6] = 0x01;
        cases.push((mc, DropReason::SrcMacMulticast));
        let mut big = from_phone("203.0.113.10", 64, false, &[0; 1500], protocol::UDP);
        big.truncate(14 + 1401);
        let len = (big.len() - 14) as u16;
        big[16..18].copy_from_slice(&len.to_be_bytes());
        cases.push((big, DropReason::Oversize));
        let mut ipv6 = good.clone();
        ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
        cases.push((ipv6, DropReason::UnsupportedEtherType));
        for (frame, reason) in cases {
            o.clear();
            r.on_frame(&mut t(1).into(), RADIO, &frame, &mut o);
            assert_eq!(o.drops(), &[(RADIO, reason)], "{reason:?}");
            assert_eq!(o.frames().count(), 0, "{reason:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(frame in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1600), port in 0u16..3) {
            let mut r = warm();
            let mut o = Outbox::new();
            r.on_frame(&mut t(1).into(), PortId(port), &frame, &mut o);
            r.on_timer(&mut t(5000).into(), &mut o);
        }

        #[test]
        fn mutated_ping_never_panics(i in 14usize..74, v in proptest::prelude::any::<u8>()) {
            let mut r = warm();
            let mut f = hex(PING_IN);
            f[i] = v;
            let mut o = Outbox::new();
            r.on_frame(&mut t(1).into(), RADIO, &f, &mut o);
        }
    }
}
