//! `vgw`: the virtual gateway of the cloud region, between the internet and
//! the tenant's VPC.
//!
//! Read RFC 7348 first (the gateway is a VTEP like the vSwitches, § 4 and
//! § 6 "VXLAN Deployment Scenarios": a gateway routing between a VXLAN
//! segment and the outside), then RFC 3022 § 2.2 for the address
//! translation and RFC 1812 § 5.2–5.3 for the routing steps it shares with
//! the `router` (TTL, MAC rewrite, the IP addresses kept).
//!
//! Port 0, `ext`, holds the gateway's public address and the shop's VIPs
//! (it answers ARP for all of them). Port 1, `underlay`, is the VTEP. Inside,
//! the gateway is the VPC's virtual router: it owns `.1` of every subnet of
//! the VPC (one per availability zone), answers the VMs' ARP for it, and
//! routes between the subnets. Packets to a VIP are translated by static
//! DNAT ([`d11_core::nat`]) to the VM behind it and sent in VXLAN, with the
//! tenant's VNI, to the host that holds the VM; the replies are translated
//! back and leave by `ext`. Where each VM lives (MAC, IP, host) is pushed by
//! the topology, as a cloud's controller does; the gateway learns nothing.
//!
//! One tenant per gateway for now (the shop's VPC); its VNI is the only one
//! it accepts.

use crate::vswitch::{emit_vxlan, parse_vxlan, UnderlayPort};
use d11_core::hash::FastMap;
use d11_core::nat::{Nat, NatConfig, Side};
use d11_core::{
    ArpCache, ArpConfig, ArpEvent, DropReason, Element, Enqueued, Instant, Outbox, PortId,
};
use d11_wire::arp::{ArpOp, ArpRepr};
use d11_wire::ethernet::{self, EtherType, EthernetFrame};
use d11_wire::icmp::{self, IcmpError};
use d11_wire::ipv4::{self, Ipv4Packet};
use d11_wire::vxlan::{self, Vni};
use d11_wire::{Ipv4Cidr, MacAddr};
use serde_json::json;
use std::net::Ipv4Addr;

/// The public port.
pub const EXT: PortId = PortId(0);
/// The VTEP port on the data centre's underlay.
pub const UNDERLAY: PortId = PortId(1);

/// The public port: the gateway's own address and the VIPs it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtPort {
    pub name: String,
    pub mac: MacAddr,
    pub address: Ipv4Cidr,
    pub mtu: u16,
    /// Public addresses answered on this port (ARP) and translated by DNAT.
    pub vips: Vec<Ipv4Addr>,
    /// The next hop for everything not on `address`'s subnet (the border).
    pub gateway: Ipv4Addr,
}

/// A VM of the tenant, as the controller places it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Station {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    /// The underlay address of the host (vSwitch) holding the VM.
    pub vtep: Ipv4Addr,
}

/// The tenant's VPC as its virtual router sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub vni: Vni,
    /// The virtual router's MAC inside the VPC.
    pub mac: MacAddr,
    /// The gateway address of each subnet, like `192.168.1.1/24`.
    pub gateways: Vec<Ipv4Cidr>,
    pub stations: Vec<Station>,
}

/// What a vgw is built from.
#[derive(Debug, Clone)]
pub struct VgwConfig {
    pub ext: ExtPort,
    pub underlay: UnderlayPort,
    pub tenant: Tenant,
    /// Static DNAT rules (VIP:port → VM:port); SNAT is off, so flows from
    /// inside exist only as replies to translated ones.
    pub nat: NatConfig,
}

/// Totals since start, for the report.
#[derive(Debug, Default, Clone, serde::Serialize)]
struct Stats {
    to_vpc: u64,
    on_vpc_frame: u64,
    routed_in_vpc: u64,
    gateway_arp_answered: u64,
}

/// The virtual gateway: DNAT, the VPC's router, a VTEP.
#[derive(Debug)]
pub struct Vgw {
    ext: ExtPort,
    underlay: UnderlayPort,
    tenant: Tenant,
    /// The tenant's stations by IP.
    stations: FastMap<Ipv4Addr, Station>,
    nat: Nat,
    arp: ArpCache,
    ident: u16,
    last_now: Instant,
    stats: Stats,
}

impl Vgw {
    pub fn new(cfg: VgwConfig) -> Vgw {
        Vgw {
            stations: cfg.tenant.stations.iter().map(|s| (s.ip, *s)).collect(),
            ext: cfg.ext,
            underlay: cfg.underlay,
            tenant: cfg.tenant,
            nat: Nat::new(cfg.nat),
            arp: ArpCache::new(ArpConfig::default()),
            ident: 0,
            last_now: Instant::ZERO,
            stats: Stats::default(),
        }
    }

    fn port(&self, p: PortId) -> Option<(MacAddr, Ipv4Addr)> {
        match p {
            EXT => Some((self.ext.mac, self.ext.address.addr())),
            UNDERLAY => Some((self.underlay.mac, self.underlay.address.addr())),
            _ => None,
        }
    }

    fn is_gateway(&self, ip: Ipv4Addr) -> bool {
        self.tenant.gateways.iter().any(|g| g.addr() == ip)
    }

    fn in_vpc(&self, ip: Ipv4Addr) -> bool {
        self.tenant.gateways.iter().any(|g| g.contains(ip))
    }

    /// ARP on a real port: answer for our addresses (and the VIPs on
    /// `ext`), learn the asker, flush what waited for it [RFC 826].
    fn port_arp(&mut self, now: Instant, port: PortId, payload: &[u8], out: &mut Outbox) {
        let Ok(arp) = ArpRepr::parse(payload) else {
            return out.drop_frame(port, DropReason::Malformed);
        };
        let Some((mac, addr)) = self.port(port) else {
            return;
        };
        let ours = arp.target_ip == addr || (port == EXT && self.ext.vips.contains(&arp.target_ip));
        let flushed = if ours {
            self.arp.insert(now, arp.sender_ip, arp.sender_mac)
        } else {
            self.arp.refresh(now, arp.sender_ip, arp.sender_mac)
        };
        if let Some((egress, queue)) = flushed {
            for pkt in queue {
                self.transmit_ip(egress, arp.sender_mac, &pkt, out);
            }
        }
        if ours && arp.op == ArpOp::Request {
            out.build(port, |b| arp.reply_from(mac).emit_frame(b));
        }
    }

    fn transmit_ip(&self, egress: PortId, dst: MacAddr, pkt: &[u8], out: &mut Outbox) {
        if let Some((src, _)) = self.port(egress) {
            out.build(egress, |b| {
                ethernet::emit_header(b, dst, src, EtherType::Ipv4);
                b.extend_from_slice(pkt);
            });
        }
    }

    /// Sends an IP packet out of `egress` to the neighbour `next`, or queues
    /// it behind an ARP request.
    fn send_to(
        &mut self,
        now: Instant,
        ingress: PortId,
        egress: PortId,
        next: Ipv4Addr,
        pkt: &[u8],
        out: &mut Outbox,
    ) {
        match self.arp.lookup(now, next) {
            Some(mac) => self.transmit_ip(egress, mac, pkt, out),
            None => match self.arp.enqueue(now, egress, next, pkt) {
                Enqueued::SendRequest => self.send_arp_request(egress, next, out),
                Enqueued::Queued => {}
                Enqueued::Full => out.drop_frame(ingress, DropReason::ArpQueueFull),
            },
        }
    }

    fn send_arp_request(&self, egress: PortId, target: Ipv4Addr, out: &mut Outbox) {
        if let Some((mac, addr)) = self.port(egress) {
            let req = ArpRepr::request(mac, addr, target);
            out.build(egress, |b| req.emit_frame(b));
        }
    }

    /// Wraps an inner frame in VXLAN with the tenant's VNI to `vtep`.
    fn send_to_vtep(
        &mut self,
        now: Instant,
        ingress: PortId,
        vtep: Ipv4Addr,
        frame: &[u8],
        out: &mut Outbox,
    ) {
        if 20 + 8 + vxlan::HEADER_LEN + frame.len() > usize::from(self.underlay.mtu) {
            return out.drop_frame(ingress, DropReason::Oversize);
        }
        self.ident = self.ident.wrapping_add(1);
        let mut pkt = Vec::with_capacity(vxlan::OVERHEAD + frame.len());
        emit_vxlan(
            &mut pkt,
            self.underlay.address.addr(),
            vtep,
            self.ident,
            self.tenant.vni,
            frame,
        );
        self.send_to(now, ingress, UNDERLAY, vtep, &pkt, out);
    }

    /// Routes an IP packet (already translated if it needed it) to the VM
    /// holding its destination: TTL down by one, the virtual router's MAC
    /// as the source, VXLAN to the VM's host.
    fn route_into_vpc(
        &mut self,
        now: Instant,
        ingress: PortId,
        mut pkt: Vec<u8>,
        out: &mut Outbox,
    ) {
        let Ok(mut ip) = Ipv4Packet::new_checked(&mut pkt[..]) else {
            return out.drop_frame(ingress, DropReason::Malformed);
        };
        if ip.ttl() <= 1 {
            return out.drop_frame(ingress, DropReason::TtlExpired);
        }
        let Some(st) = self.stations.get(&ip.dst()).copied() else {
            return out.drop_frame(ingress, DropReason::NoRoute);
        };
        ip.decrement_ttl();
        let mut frame = Vec::with_capacity(ethernet::HEADER_LEN + pkt.len());
        ethernet::emit_header(&mut frame, st.mac, self.tenant.mac, EtherType::Ipv4);
        frame.extend_from_slice(&pkt);
        self.send_to_vtep(now, ingress, st.vtep, &frame, out);
    }

    fn on_ext_frame(&mut self, now: Instant, frame: &[u8], out: &mut Outbox) {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return out.drop_frame(EXT, DropReason::Truncated);
        };
        if eth.src().is_multicast() {
            return out.drop_frame(EXT, DropReason::SrcMacMulticast);
        }
        if eth.dst() != self.ext.mac && !eth.dst().is_multicast() {
            return out.drop_frame(EXT, DropReason::NotForUs);
        }
        match eth.ethertype() {
            EtherType::Arp => self.port_arp(now, EXT, eth.payload(), out),
            EtherType::Ipv4 if eth.dst() == self.ext.mac => {
                let mut pkt = match checked_packet(eth.payload()) {
                    Ok(p) => p,
                    Err(r) => return out.drop_frame(EXT, r),
                };
                let dst = Ipv4Addr::from(<[u8; 4]>::try_from(&pkt[16..20]).unwrap_or_default());
                if dst == self.ext.address.addr() {
                    return out.drop_frame(EXT, DropReason::UnsupportedProtocol);
                }
                if !self.ext.vips.contains(&dst) {
                    // The gateway forwards only what its VIPs translate.
                    return out.drop_frame(EXT, DropReason::NoRoute);
                }
                // What fits a VM once encapsulated [RFC 7348 § 4.3]; a bigger
                // packet gets what a router answers [RFC 1812 § 5.2.7.1],
                // quoting it as its sender wrote it (before translation).
                let room = usize::from(self.underlay.mtu).saturating_sub(vxlan::OVERHEAD);
                if pkt.len() > room {
                    return self.too_big(now, &pkt, room, out);
                }
                if let Err(e) = self.nat.translate(now, Side::Outside, &mut pkt) {
                    return out.drop_frame(EXT, e.drop_reason());
                }
                self.stats.to_vpc += 1;
                self.route_into_vpc(now, EXT, pkt, out);
            }
            EtherType::Ipv4 => out.drop_frame(EXT, DropReason::NotForUs),
            _ => out.drop_frame(EXT, DropReason::UnsupportedEtherType),
        }
    }

    /// A packet from outside too big for the VPC: fragmentation needed
    /// with the inner MTU when DF is set (from the ext address, towards the
    /// sender), a counted drop either way (the gateway does not fragment).
    fn too_big(&mut self, now: Instant, pkt: &[u8], room: usize, out: &mut Outbox) {
        let Ok(ip) = Ipv4Packet::new_checked(pkt) else {
            return out.drop_frame(EXT, DropReason::Malformed);
        };
        if !ip.dont_frag() {
            return out.drop_frame(EXT, DropReason::Oversize);
        }
        if icmp::may_send_error_about(&ip) {
            self.ident = self.ident.wrapping_add(1);
            let mut err = Vec::with_capacity(icmp::MAX_ERROR_LEN);
            let mtu = u16::try_from(room).unwrap_or(u16::MAX);
            let from = self.ext.address.addr();
            icmp::emit_error(
                &mut err,
                from,
                self.ident,
                IcmpError::FragmentationNeeded { mtu },
                &ip,
            );
            let back = ip.src();
            let next = if self.ext.address.contains(back) {
                back
            } else {
                self.ext.gateway
            };
            self.send_to(now, EXT, EXT, next, &err, out);
        }
        out.drop_frame(EXT, DropReason::NeedsFragmentation);
    }

    fn on_underlay_frame(&mut self, now: Instant, frame: &[u8], out: &mut Outbox) {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return out.drop_frame(UNDERLAY, DropReason::Truncated);
        };
        if eth.src().is_multicast() {
            return out.drop_frame(UNDERLAY, DropReason::SrcMacMulticast);
        }
        if eth.dst() != self.underlay.mac && !eth.dst().is_multicast() {
            return out.drop_frame(UNDERLAY, DropReason::NotForUs);
        }
        match eth.ethertype() {
            EtherType::Arp => self.port_arp(now, UNDERLAY, eth.payload(), out),
            EtherType::Ipv4 if eth.dst() == self.underlay.mac => {
                let (vtep, vni, inner) =
                    match parse_vxlan(eth.payload(), self.underlay.address.addr()) {
                        Ok(v) => v,
                        Err(r) => return out.drop_frame(UNDERLAY, r),
                    };
                if vni != self.tenant.vni {
                    return out.drop_frame(UNDERLAY, DropReason::VxlanUnknownVni);
                }
                let inner = inner.to_vec();
                self.on_vpc_frame(now, vtep, &inner, out);
            }
            EtherType::Ipv4 => out.drop_frame(UNDERLAY, DropReason::NotForUs),
            _ => out.drop_frame(UNDERLAY, DropReason::UnsupportedEtherType),
        }
    }

    /// A VM's frame out of the tunnel: ARP for a gateway address, or a
    /// packet for the virtual router to route.
    fn on_vpc_frame(&mut self, now: Instant, vtep: Ipv4Addr, inner: &[u8], out: &mut Outbox) {
        let Ok(eth) = EthernetFrame::new_checked(inner) else {
            return out.drop_frame(UNDERLAY, DropReason::VxlanInnerTruncated);
        };
        match eth.ethertype() {
            EtherType::Arp => {
                let Ok(arp) = ArpRepr::parse(eth.payload()) else {
                    return out.drop_frame(UNDERLAY, DropReason::Malformed);
                };
                if arp.op != ArpOp::Request || !self.is_gateway(arp.target_ip) {
                    return out.drop_frame(UNDERLAY, DropReason::NotForUs);
                }
                self.stats.gateway_arp_answered += 1;
                let mut reply = Vec::with_capacity(42);
                arp.reply_from(self.tenant.mac).emit_frame(&mut reply);
                self.send_to_vtep(now, UNDERLAY, vtep, &reply, out);
            }
            EtherType::Ipv4 if eth.dst() == self.tenant.mac => {
                let mut pkt = match checked_packet(eth.payload()) {
                    Ok(p) => p,
                    Err(r) => return out.drop_frame(UNDERLAY, r),
                };
                let dst = Ipv4Addr::from(<[u8; 4]>::try_from(&pkt[16..20]).unwrap_or_default());
                if self.is_gateway(dst) {
                    return out.drop_frame(UNDERLAY, DropReason::UnsupportedProtocol);
                }
                if self.in_vpc(dst) {
                    // Between the availability zones' subnets.
                    self.stats.routed_in_vpc += 1;
                    return self.route_into_vpc(now, UNDERLAY, pkt, out);
                }
                if let Err(e) = self.nat.translate(now, Side::Inside, &mut pkt) {
                    return out.drop_frame(UNDERLAY, e.drop_reason());
                }
                let Ok(mut ip) = Ipv4Packet::new_checked(&mut pkt[..]) else {
                    return out.drop_frame(UNDERLAY, DropReason::Malformed);
                };
                if ip.ttl() <= 1 {
                    return out.drop_frame(UNDERLAY, DropReason::TtlExpired);
                }
                ip.decrement_ttl();
                let dst = ip.dst();
                if pkt.len() > usize::from(self.ext.mtu) {
                    return out.drop_frame(UNDERLAY, DropReason::NeedsFragmentation);
                }
                let next = if self.ext.address.contains(dst) {
                    dst
                } else {
                    self.ext.gateway
                };
                self.stats.on_vpc_frame += 1;
                self.send_to(now, UNDERLAY, EXT, next, &pkt, out);
            }
            EtherType::Ipv4 => out.drop_frame(UNDERLAY, DropReason::NotForUs),
            _ => out.drop_frame(UNDERLAY, DropReason::UnsupportedEtherType),
        }
    }
}

/// The IPv4 packet of a frame's payload (up to its total length), checked
/// (header, checksum), as an owned buffer NAT can rewrite.
fn checked_packet(payload: &[u8]) -> Result<Vec<u8>, DropReason> {
    let ip = match Ipv4Packet::new_checked(payload) {
        Ok(ip) => ip,
        Err(ipv4::Ipv4Error::Truncated) => return Err(DropReason::Truncated),
        Err(_) => return Err(DropReason::Malformed),
    };
    if !ip.verify_checksum() {
        return Err(DropReason::BadChecksum);
    }
    Ok(ip.packet().to_vec())
}

impl Element for Vgw {
    fn on_frame(&mut self, now: Instant, port: PortId, frame: &[u8], out: &mut Outbox) {
        self.last_now = now;
        match port {
            EXT => self.on_ext_frame(now, frame, out),
            UNDERLAY => self.on_underlay_frame(now, frame, out),
            _ => out.drop_frame(port, DropReason::NoSuchPort),
        }
    }

    fn on_timer(&mut self, now: Instant, out: &mut Outbox) {
        self.last_now = now;
        self.nat.expire(now);
        let mut events = Vec::new();
        self.arp.on_timer(now, |e| events.push(e));
        for e in events {
            match e {
                ArpEvent::Retry { port, ip } => self.send_arp_request(port, ip, out),
                ArpEvent::Failed { port, ip, queued } => {
                    tracing::info!(%ip, "next hop did not answer ARP");
                    for _ in queued {
                        out.drop_frame(port, DropReason::ArpTimeout);
                    }
                }
            }
        }
    }

    fn poll_at(&self) -> Option<Instant> {
        match (self.nat.poll_at(), self.arp.poll_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// `nat`: the conntrack entries (`d11 show vgw nat`); `stations`: the
    /// VPC's VMs and their hosts; `arp`; `stats` (with the NAT's own).
    fn report(&self) -> serde_json::Value {
        let mut arp: Vec<_> = self.arp.entries(self.last_now).collect();
        arp.sort();
        let arp: Vec<_> = arp
            .iter()
            .map(|(ip, mac)| json!({"ip": ip.to_string(), "mac": mac.to_string()}))
            .collect();
        let stations: Vec<_> = self
            .tenant
            .stations
            .iter()
            .map(|s| json!({"vni": self.tenant.vni.get(), "ip": s.ip.to_string(), "mac": s.mac.to_string(), "vtep": s.vtep.to_string()}))
            .collect();
        json!({
            "nat": self.nat.entries(self.last_now),
            "stations": stations,
            "arp": arp,
            "stats": self.stats,
            "nat_stats": self.nat.stats(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use d11_core::nat::{DnatRule, Proto, Timeouts};
    use proptest::prelude::*;
    use std::net::SocketAddrV4;

    const EXT_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0xe, 2]);
    const ROUTER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0xa, 1]);
    const LB_MAC: MacAddr = MacAddr([2, 0, 0, 0, 1, 0x10]);
    const HOSTA_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x11]);

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn vgw() -> Vgw {
        Vgw::new(VgwConfig {
            ext: ExtPort {
                name: "ext".into(),
                mac: EXT_MAC,
                address: "203.0.113.2/24".parse().unwrap(),
                mtu: 1500,
                vips: vec![ip("203.0.113.24")],
                gateway: ip("203.0.113.1"),
            },
            underlay: UnderlayPort {
                name: "underlay".into(),
                mac: MacAddr([2, 0, 0, 0, 0, 1]),
                address: "10.0.0.1/24".parse().unwrap(),
                mtu: 1500,
            },
            tenant: Tenant {
                vni: Vni::new(1001).unwrap(),
                mac: ROUTER_MAC,
                gateways: vec!["192.168.1.1/24".parse().unwrap()],
                stations: vec![Station {
                    ip: ip("192.168.1.10"),
                    mac: LB_MAC,
                    vtep: ip("10.0.0.11"),
                }],
            },
            nat: NatConfig {
                snat: None,
                dnat: vec![DnatRule {
                    proto: Proto::Udp,
                    public: SocketAddrV4::new(ip("203.0.113.24"), 443),
                    private: SocketAddrV4::new(ip("192.168.1.10"), 443),
                }],
                max_entries: 16,
                timeouts: Timeouts::default(),
            },
        })
    }

    /// A vgw that knows host A's underlay MAC.
    fn warm() -> Vgw {
        let mut g = vgw();
        g.arp.insert(t(0), ip("10.0.0.11"), HOSTA_MAC);
        g
    }

    fn frames(o: &Outbox) -> Vec<(PortId, Vec<u8>)> {
        o.frames().map(|(p, f)| (p, f.to_vec())).collect()
    }

    /// A UDP datagram from the client to `dst:dport` on the ext port.
    fn from_client(dst: &str, dport: u16) -> Vec<u8> {
        let mut b = vec![];
        ethernet::emit_header(
            &mut b,
            EXT_MAC,
            MacAddr([2, 0, 0, 0, 0xb, 1]),
            EtherType::Ipv4,
        );
        ipv4::Ipv4Repr {
            src: ip("192.0.2.130"),
            dst: ip(dst),
            protocol: ipv4::protocol::UDP,
            ttl: 63,
            ident: 1,
            dont_frag: false,
            payload_len: 12,
        }
        .emit(&mut b);
        b.extend_from_slice(&40000u16.to_be_bytes());
        b.extend_from_slice(&dport.to_be_bytes());
        b.extend_from_slice(&[0, 12, 0, 0, b'G', b'E', b'T', b'!']);
        b
    }

    /// An inner frame from host A in VXLAN with `vni`, as the underlay sees it.
    fn from_hosta(vni: u32, inner: &[u8]) -> Vec<u8> {
        let mut b = vec![];
        ethernet::emit_header(
            &mut b,
            MacAddr([2, 0, 0, 0, 0, 1]),
            HOSTA_MAC,
            EtherType::Ipv4,
        );
        emit_vxlan(
            &mut b,
            ip("10.0.0.11"),
            ip("10.0.0.1"),
            9,
            Vni::new(vni).unwrap(),
            inner,
        );
        b
    }

    #[test]
    fn arp_for_a_vip_is_answered_on_ext_and_an_unheld_address_is_not() {
        let mut g = vgw();
        let mut o = Outbox::new();
        let mut req = vec![];
        ArpRepr::request(
            MacAddr([2, 0, 0, 0, 0xb, 1]),
            ip("203.0.113.1"),
            ip("203.0.113.24"),
        )
        .emit_frame(&mut req);
        g.on_frame(t(0), EXT, &req, &mut o);
        let f = frames(&o);
        assert_eq!(f.len(), 1);
        let a = ArpRepr::parse(&f[0].1[14..]).unwrap();
        assert_eq!(
            (a.op, a.sender_mac, a.sender_ip),
            (ArpOp::Reply, EXT_MAC, ip("203.0.113.24"))
        );
        o.clear();
        let mut req = vec![];
        ArpRepr::request(
            MacAddr([2, 0, 0, 0, 0xb, 1]),
            ip("203.0.113.1"),
            ip("203.0.113.26"),
        )
        .emit_frame(&mut req);
        g.on_frame(t(0), EXT, &req, &mut o);
        assert!(o.is_empty());
    }

    #[test]
    fn the_vip_is_translated_and_sent_to_host_a_in_vni_1001() {
        let mut g = warm();
        let mut o = Outbox::new();
        g.on_frame(t(1), EXT, &from_client("203.0.113.24", 443), &mut o);
        let f = frames(&o);
        assert_eq!(f.len(), 1, "{:?}", o.drops());
        assert_eq!(f[0].0, UNDERLAY);
        let (vtep, vni, inner) = parse_vxlan(&f[0].1[14..], ip("10.0.0.11")).unwrap();
        assert_eq!((vtep, vni.get()), (ip("10.0.0.1"), 1001));
        let eth = EthernetFrame::new_checked(inner).unwrap();
        assert_eq!((eth.dst(), eth.src()), (LB_MAC, ROUTER_MAC));
        let p = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(
            (p.src(), p.dst(), p.ttl()),
            (ip("192.0.2.130"), ip("192.168.1.10"), 62)
        );
        assert_eq!(&p.payload()[2..4], &443u16.to_be_bytes());
    }

    #[test]
    fn unconfigured_ports_bad_vnis_and_strangers_are_counted_drops() {
        let mut g = warm();
        let mut o = Outbox::new();
        g.on_frame(t(1), EXT, &from_client("203.0.113.24", 80), &mut o);
        assert_eq!(o.drops(), &[(EXT, DropReason::NatUnsolicited)]);
        o.clear();
        g.on_frame(t(1), EXT, &from_client("203.0.113.99", 443), &mut o);
        assert_eq!(o.drops(), &[(EXT, DropReason::NoRoute)]);
        o.clear();
        let mut arp = vec![];
        ArpRepr::request(LB_MAC, ip("192.168.1.10"), ip("192.168.1.1")).emit_frame(&mut arp);
        g.on_frame(t(1), UNDERLAY, &from_hosta(1002, &arp), &mut o);
        assert_eq!(o.drops(), &[(UNDERLAY, DropReason::VxlanUnknownVni)]);
        o.clear();
        g.on_frame(t(1), UNDERLAY, &from_hosta(1001, &arp[..9]), &mut o);
        assert_eq!(o.drops(), &[(UNDERLAY, DropReason::VxlanInnerTruncated)]);
        assert_eq!(o.frames().count(), 0);
    }

    #[test]
    fn too_big_for_the_vpc_with_df_gets_fragmentation_needed_quoting_the_vip() {
        let mut g = warm();
        g.arp
            .insert(t(0), ip("203.0.113.1"), MacAddr([2, 0, 0, 0, 0xb, 1]));
        let mut f = vec![];
        ethernet::emit_header(
            &mut f,
            EXT_MAC,
            MacAddr([2, 0, 0, 0, 0xb, 1]),
            EtherType::Ipv4,
        );
        ipv4::Ipv4Repr {
            src: ip("192.0.2.130"),
            dst: ip("203.0.113.24"),
            protocol: ipv4::protocol::UDP,
            ttl: 63,
            ident: 1,
            dont_frag: true,
            payload_len: 1431,
        }
        .emit(&mut f);
        f.extend_from_slice(&40000u16.to_be_bytes());
        f.extend_from_slice(&443u16.to_be_bytes());
        f.extend_from_slice(&1431u16.to_be_bytes());
        f.resize(14 + 20 + 1431, 0);
        let mut o = Outbox::new();
        g.on_frame(t(1), EXT, &f, &mut o);
        assert_eq!(o.drops(), &[(EXT, DropReason::NeedsFragmentation)]);
        let out = frames(&o);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, EXT);
        let e = Ipv4Packet::new_checked(&out[0].1[14..]).unwrap();
        assert_eq!((e.src(), e.dst()), (ip("203.0.113.2"), ip("192.0.2.130")));
        let icmp = e.payload();
        assert_eq!((icmp[0], icmp[1]), (3, 4), "fragmentation needed");
        assert_eq!(&icmp[6..8], &1450u16.to_be_bytes(), "the VPC's MTU");
        assert_eq!(
            &icmp[8 + 16..8 + 20],
            &[203, 0, 113, 24],
            "quotes the VIP, untranslated"
        );
        // 1450 bytes fit: translated and sent on.
        let mut fits = f[..14 + 1450].to_vec();
        fits[16..18].copy_from_slice(&1450u16.to_be_bytes());
        fits[38..40].copy_from_slice(&1430u16.to_be_bytes());
        Ipv4Packet::new_checked(&mut fits[14..])
            .unwrap()
            .fill_checksum();
        o.clear();
        g.on_frame(t(2), EXT, &fits, &mut o);
        assert!(o.drops().is_empty(), "{:?}", o.drops());
        assert_eq!(frames(&o)[0].0, UNDERLAY);
    }

    #[test]
    fn a_vms_arp_for_its_gateway_is_answered_in_the_tunnel() {
        let mut g = warm();
        let mut o = Outbox::new();
        let mut arp = vec![];
        ArpRepr::request(LB_MAC, ip("192.168.1.10"), ip("192.168.1.1")).emit_frame(&mut arp);
        g.on_frame(t(1), UNDERLAY, &from_hosta(1001, &arp), &mut o);
        let f = frames(&o);
        assert_eq!(f.len(), 1);
        let (_, vni, inner) = parse_vxlan(&f[0].1[14..], ip("10.0.0.11")).unwrap();
        assert_eq!(vni.get(), 1001);
        let a = ArpRepr::parse(&inner[14..]).unwrap();
        assert_eq!(
            (a.op, a.sender_mac, a.target_mac),
            (ArpOp::Reply, ROUTER_MAC, LB_MAC)
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(frame in proptest::collection::vec(any::<u8>(), 0..1600), port in 0u16..3) {
            let mut g = warm();
            let mut o = Outbox::new();
            g.on_frame(t(1), PortId(port), &frame, &mut o);
            g.on_timer(t(400_000), &mut o);
        }

        #[test]
        fn mutated_vxlan_never_panics(i in 0usize..92, v in any::<u8>()) {
            let mut arp = vec![];
            ArpRepr::request(LB_MAC, ip("192.168.1.10"), ip("192.168.1.1")).emit_frame(&mut arp);
            let mut f = from_hosta(1001, &arp);
            f[i] = v;
            let mut g = warm();
            let mut o = Outbox::new();
            g.on_frame(t(1), UNDERLAY, &f, &mut o);
        }
    }
}
