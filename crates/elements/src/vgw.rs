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
//! Like any router it answers for itself [RFC 1812 § 4.3]: echo requests to
//! its addresses (a VM's gateway `.1` inside the tunnel, the ext address,
//! the VTEP address on the underlay), and the errors a hop owes the sender —
//! time exceeded, host unreachable for a VPC address no VM holds,
//! fragmentation needed when a DF packet does not fit the VPC once
//! encapsulated — under the rate limit every routing element shares (with the
//! `router`). Errors about packets from outside come after the NAT check (so
//! nothing answers an unsolicited packet) and quote the packet as its sender
//! wrote it, VIP and all; errors to a VM come from its subnet's gateway and
//! go back in the tunnel they came from.
//!
//! With a `vpn` table the gateway is also the VPC's IPsec VPN gateway
//! ([`crate::vpn`], docs/vpn.md): a VM's packet from the VPC's prefix to the
//! other region's is sealed into ESP (tunnel mode) to the peer gateway across
//! the carriers, and ESP from the peer (protocol 50 to the ext address,
//! reassembled if it came in fragments) is opened and routed to its VM;
//! the router's own answers to the other VPC go back through the tunnel.
//!
//! One tenant per gateway for now (the shop's VPC); its VNI is the only one
//! it accepts.

use crate::role::{Addressing, ElementNode, Rewrites, Role, RoleInfo};
use crate::router::RouterConfig;
use crate::vpn::{inner_mtu, SaRow, Vpn, VpnConfig, VpnSettings, VpnStats};
use crate::vswitch::{emit_vxlan, vxlan_payload, UnderlayPort};
use d11_core::hash::FastMap;
use d11_core::l3::{checked_ipv4, RouteSource};
use d11_core::nat::{DnatRule, Nat, NatConfig, Proto, Side, Timeouts};
use d11_core::settings::ConfigError;
use d11_core::{AnyElement, Ctx, DropReason, Element, Input, Instant, L3Port, Outbox, PortId, L3};
use d11_wire::arp::{ArpOp, ArpRepr};
use d11_wire::esp;
use d11_wire::ethernet::{self, EtherType, EthernetFrame};
use d11_wire::icmp::{self, IcmpError};
use d11_wire::ipv4::Ipv4Packet;
use d11_wire::vxlan::{self, Vni};
use d11_wire::{Ipv4Cidr, MacAddr};
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
    /// ESP in tunnel mode to the other region's gateway.
    pub vpn: Option<VpnConfig>,
}

/// `config` of a `vgw` node: the VIPs, the tenant's VPC and the DNAT rules.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VgwSettings {
    /// Public addresses on the `ext` subnet the gateway answers ARP for.
    vips: Vec<Ipv4Addr>,
    /// The tenant's VNI.
    vni: Vni,
    /// The virtual router's MAC inside the VPC.
    mac: MacAddr,
    /// The virtual router's address in each subnet (one per AZ), like "192.168.1.1/24".
    gateways: Vec<Ipv4Cidr>,
    /// The VPC's VMs: address, MAC and the VTEP of the host holding each.
    stations: Vec<VgwStation>,
    dnat: Vec<DnatSettings>,
    /// The IPsec VPN to another region's VPC, if any (`crate::vpn`).
    #[serde(default)]
    vpn: Option<VpnSettings>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct VgwStation {
    ip: Ipv4Addr,
    mac: MacAddr,
    vtep: Ipv4Addr,
}

#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum ProtoSetting {
    Tcp,
    Udp,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DnatSettings {
    proto: ProtoSetting,
    vip: Ipv4Addr,
    port: u16,
    /// The VM's address and port, like "192.168.1.10:443".
    to: std::net::SocketAddrV4,
}

impl VgwSettings {
    /// The gateway's configuration from its node and settings, each value
    /// checked with its key named.
    fn config(&self, node: &ElementNode) -> Result<VgwConfig, ConfigError> {
        let ports = RouterConfig::for_ports(node, &["ext", "underlay"])?;
        let (ext, under) = (&ports.ports[0], &ports.ports[1]);
        let gateway = match ports.routes.as_slice() {
            [r] if r.to.prefix_len() == 0 && ext.address.contains(r.via) => r.via,
            _ => {
                return Err(ConfigError::new(
                    "routes",
                    "a vgw has one route, 0.0.0.0/0 via its neighbour on the ext subnet",
                ))
            }
        };
        for (i, v) in self.vips.iter().enumerate() {
            if !ext.address.contains(*v) || *v == ext.address.addr() {
                return Err(ConfigError::new(
                    format!("config.vips[{i}]"),
                    format!(
                        "{v} is not another address of the ext subnet {}",
                        ext.address.network()
                    ),
                ));
            }
        }
        let mut stations = Vec::with_capacity(self.stations.len());
        for (i, s) in self.stations.iter().enumerate() {
            if !self.gateways.iter().any(|g| g.contains(s.ip)) {
                return Err(ConfigError::new(
                    format!("config.stations[{i}].ip"),
                    format!("{} is on none of the VPC's subnets (gateways)", s.ip),
                ));
            }
            if !under.address.contains(s.vtep) || s.vtep == under.address.addr() {
                return Err(ConfigError::new(
                    format!("config.stations[{i}].vtep"),
                    format!(
                        "{} is not a VTEP on the underlay {}",
                        s.vtep,
                        under.address.network()
                    ),
                ));
            }
            stations.push(Station {
                ip: s.ip,
                mac: s.mac,
                vtep: s.vtep,
            });
        }
        let mut dnat = Vec::with_capacity(self.dnat.len());
        for (i, d) in self.dnat.iter().enumerate() {
            if !self.vips.contains(&d.vip) {
                return Err(ConfigError::new(
                    format!("config.dnat[{i}].vip"),
                    format!("{} is not one of config.vips", d.vip),
                ));
            }
            if !stations.iter().any(|s| s.ip == *d.to.ip()) {
                return Err(ConfigError::new(
                    format!("config.dnat[{i}].to"),
                    format!("{} is not a station of the VPC", d.to.ip()),
                ));
            }
            dnat.push(DnatRule {
                proto: match d.proto {
                    ProtoSetting::Tcp => Proto::Tcp,
                    ProtoSetting::Udp => Proto::Udp,
                },
                public: std::net::SocketAddrV4::new(d.vip, d.port),
                private: d.to,
            });
        }
        Ok(VgwConfig {
            ext: ExtPort {
                name: ext.name.clone(),
                mac: ext.mac,
                address: ext.address,
                mtu: ext.mtu,
                vips: self.vips.clone(),
                gateway,
            },
            underlay: UnderlayPort {
                name: under.name.clone(),
                mac: under.mac,
                address: under.address,
                mtu: under.mtu,
            },
            tenant: Tenant {
                vni: self.vni,
                mac: self.mac,
                gateways: self.gateways.clone(),
                stations,
            },
            nat: NatConfig {
                snat: None,
                dnat,
                max_entries: 65536,
                timeouts: Timeouts::default(),
            },
            vpn: match &self.vpn {
                None => None,
                Some(v) => Some(
                    v.config(&self.gateways)
                        .map_err(|(k, m)| ConfigError::new(k, m))?,
                ),
            },
        })
    }
}

/// Totals since start, for the report.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VgwStats {
    /// Packets from outside translated into the VPC.
    pub to_vpc: u64,
    /// Packets from the VPC translated back out.
    pub on_vpc_frame: u64,
    /// Packets routed between the VPC's subnets.
    pub routed_in_vpc: u64,
    pub gateway_arp_answered: u64,
    /// Packets sealed into the VPN, and opened from it into the VPC (or,
    /// with `config.vpn.clear`, routed to and from the other VPC).
    #[serde(default)]
    pub to_vpn: u64,
    #[serde(default)]
    pub from_vpn: u64,
}

/// A VM of the VPC as the gateway knows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StationRow {
    pub vni: u32,
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    pub vtep: Ipv4Addr,
}

/// What the gateway reports: its DNAT entries (`d11 show vgw nat`), the
/// VPC's VMs and their hosts, its ARP cache, totals (its own and the
/// NAT's), and the ICMP it answered itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VgwReport {
    pub nat: Vec<d11_core::nat::NatEntryView>,
    pub stations: Vec<StationRow>,
    pub arp: Vec<d11_core::l3::ArpRow>,
    pub stats: VgwStats,
    pub originated: d11_core::l3::Originated,
    pub nat_stats: d11_core::nat::NatStats,
    /// The VPN's two SAs (`d11 show vgw sas`); empty without a VPN.
    #[serde(default)]
    pub sas: Vec<SaRow>,
    #[serde(default)]
    pub vpn: Option<VpnStats>,
}

/// A VM's frame came from this inner MAC behind this VTEP: what the gateway
/// answers goes straight back there.
#[derive(Debug, Clone, Copy)]
struct Sender {
    mac: MacAddr,
    vtep: Ipv4Addr,
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
    /// The gateway's IP layer on `ext` and `underlay` (ARP, its own
    /// addresses, the route to the border, what it originates).
    l3: L3,
    last_now: Instant,
    stats: VgwStats,
    /// Where a VM's frame and its VXLAN packet are built, kept between
    /// packets.
    frame_buf: Vec<u8>,
    vxlan_buf: Vec<u8>,
    vpn: Option<Vpn>,
    /// Where an outer ESP packet is built.
    esp_buf: Vec<u8>,
}

impl Vgw {
    pub fn new(cfg: VgwConfig) -> Vgw {
        let ext = L3Port {
            name: cfg.ext.name.clone(),
            mac: cfg.ext.mac,
            address: cfg.ext.address,
            mtu: cfg.ext.mtu,
        };
        let mut l3 = L3::with_ports(vec![ext, cfg.underlay.l3_port()]);
        let default =
            d11_wire::Ipv4Cidr::new(std::net::Ipv4Addr::UNSPECIFIED, 0).expect("a /0 is a prefix");
        if let Err(e) = l3.add_route(default, cfg.ext.gateway, RouteSource::Static) {
            tracing::warn!(%e, "no route out of the cloud");
        }
        for vip in &cfg.ext.vips {
            l3.answer_arp_for(EXT, *vip);
        }
        l3.claim_udp(vxlan::PORT);
        Vgw {
            stations: cfg.tenant.stations.iter().map(|s| (s.ip, *s)).collect(),
            ext: cfg.ext,
            underlay: cfg.underlay,
            tenant: cfg.tenant,
            nat: Nat::new(cfg.nat),
            l3,
            last_now: Instant::ZERO,
            stats: VgwStats::default(),
            frame_buf: Vec::new(),
            vxlan_buf: Vec::new(),
            vpn: cfg.vpn.map(Vpn::new),
            esp_buf: Vec::new(),
        }
    }

    fn is_gateway(&self, ip: Ipv4Addr) -> bool {
        self.tenant.gateways.iter().any(|g| g.addr() == ip)
    }

    fn in_vpc(&self, ip: Ipv4Addr) -> bool {
        self.tenant.gateways.iter().any(|g| g.contains(ip))
    }

    /// The VPC router's address facing `src`: the gateway of its subnet.
    fn gateway_for(&self, src: Ipv4Addr) -> Ipv4Addr {
        let gw = self.tenant.gateways.iter().find(|g| g.contains(src));
        gw.or(self.tenant.gateways.first())
            .map_or(self.ext.address.addr(), |g| g.addr())
    }

    /// Wraps an inner frame in VXLAN with the tenant's VNI to `vtep`.
    fn send_to_vtep(
        &mut self,
        cx: &mut Ctx,
        ingress: PortId,
        vtep: Ipv4Addr,
        frame: &[u8],
        out: &mut Outbox,
    ) {
        if 20 + 8 + vxlan::HEADER_LEN + frame.len() > usize::from(self.underlay.mtu) {
            return out.drop_frame(ingress, DropReason::Oversize);
        }
        let ident = self.l3.next_ident();
        let mut pkt = std::mem::take(&mut self.vxlan_buf);
        pkt.clear();
        emit_vxlan(
            &mut pkt,
            self.underlay.address.addr(),
            vtep,
            ident,
            self.tenant.vni,
            frame,
        );
        self.l3.send_ip(cx, ingress, &pkt, out);
        self.vxlan_buf = pkt;
    }

    /// Sends an IP packet to a VM in the VPC router's frame: the VM's MAC,
    /// the router's as the source, VXLAN to the VM's host.
    fn send_to_vm(
        &mut self,
        cx: &mut Ctx,
        ingress: PortId,
        vm: Sender,
        pkt: &[u8],
        out: &mut Outbox,
    ) {
        let mut frame = std::mem::take(&mut self.frame_buf);
        frame.clear();
        ethernet::emit_header(&mut frame, vm.mac, self.tenant.mac, EtherType::Ipv4);
        frame.extend_from_slice(pkt);
        self.send_to_vtep(cx, ingress, vm.vtep, &frame, out);
        self.frame_buf = frame;
    }

    /// Forwards a packet (already translated if it needed it, its TTL
    /// checked) to the VM holding its destination, one TTL lower.
    fn forward_to_station(
        &mut self,
        cx: &mut Ctx,
        ingress: PortId,
        st: Station,
        mut pkt: Vec<u8>,
        out: &mut Outbox,
    ) {
        let Ok(mut ip) = Ipv4Packet::new_checked(&mut pkt[..]) else {
            return out.drop_frame(ingress, DropReason::Malformed);
        };
        ip.decrement_ttl();
        let vm = Sender {
            mac: st.mac,
            vtep: st.vtep,
        };
        self.send_to_vm(cx, ingress, vm, &pkt, out);
    }

    /// A packet to one of the gateway's addresses from inside the VPC (its
    /// subnets' gateways, or its ext address): echo requests are answered
    /// from the address asked, UDP gets port unreachable (what a traceroute
    /// to the gateway expects) [RFC 1812 § 4.3.3.6, § 4.3.2], each straight
    /// back into the tunnel it came from; the rest is for a router without
    /// services. (What comes to its addresses on `ext` and the underlay is
    /// its IP layer's to answer.)
    fn deliver_from_vpc(
        &mut self,
        cx: &mut Ctx,
        ip: &Ipv4Packet<&[u8]>,
        back: Sender,
        out: &mut Outbox,
    ) {
        let mut pkt = Vec::new();
        if self.l3.build_echo_reply(ip, &mut pkt) {
            return self.send_to_vm(cx, UNDERLAY, back, &pkt, out);
        }
        if ip.protocol() == d11_wire::ipv4::protocol::UDP && ip.frag_offset() == 0 {
            let err = IcmpError::PortUnreachable;
            self.send_error(cx, UNDERLAY, ip.dst(), err, ip, Some(back), out);
        }
        out.drop_frame(UNDERLAY, DropReason::UnsupportedProtocol);
    }

    /// Sends the ICMP error `err` about `ip` from `from`, if RFC 1812
    /// § 4.3.2.7 allows one and the token bucket has a token: straight back
    /// to the VM that made us answer (`back`), else routed by the layer.
    #[allow(clippy::too_many_arguments)]
    fn send_error(
        &mut self,
        cx: &mut Ctx,
        ingress: PortId,
        from: Ipv4Addr,
        err: IcmpError,
        ip: &Ipv4Packet<&[u8]>,
        back: Option<Sender>,
        out: &mut Outbox,
    ) {
        let Some(vm) = back else {
            return self.l3.icmp_error_from(cx, ingress, from, err, ip, out);
        };
        let mut pkt = Vec::with_capacity(icmp::MAX_ERROR_LEN);
        if self.l3.build_icmp_error(cx, from, err, ip, &mut pkt) {
            self.send_to_vm(cx, ingress, vm, &pkt, out);
        }
    }

    fn on_ext_frame(&mut self, cx: &mut Ctx, frame: &[u8], out: &mut Outbox) {
        match self.l3.input(cx, EXT, frame, out) {
            Input::Done => {}
            Input::Transit(ip) => self.on_outside_packet(cx, &ip, out),
            Input::Local(ip) if ip.protocol() == esp::PROTOCOL && self.vpn.is_some() => {
                self.on_esp(cx, &ip, out)
            }
            Input::Local(_) | Input::Tunnel { .. } => {
                out.drop_frame(EXT, DropReason::UnsupportedProtocol)
            }
        }
    }

    /// ESP from the other region's gateway: reassembled if it came in
    /// fragments, opened (every refusal a counted drop with its reason), and
    /// the inner packet routed to its VM like any packet of the VPC.
    fn on_esp(&mut self, cx: &mut Ctx, ip: &Ipv4Packet<&[u8]>, out: &mut Outbox) {
        let Some(vpn) = self.vpn.as_mut() else {
            return out.drop_frame(EXT, DropReason::UnsupportedProtocol);
        };
        let whole;
        let outer = if ip.more_frags() || ip.frag_offset() != 0 {
            match vpn.reassemble(cx.now, ip) {
                Ok(Some(w)) => whole = w,
                Ok(None) => return,
                Err(r) => return out.drop_frame(EXT, r),
            }
            match Ipv4Packet::new_checked(&whole[..]) {
                Ok(p) => p,
                Err(_) => return out.drop_frame(EXT, DropReason::Malformed),
            }
        } else {
            ip.clone()
        };
        let inner = match vpn.open(&outer) {
            Ok(inner) => inner.to_vec(),
            Err(r) => return out.drop_frame(EXT, r),
        };
        let Ok(p) = Ipv4Packet::new_checked(&inner[..]) else {
            return out.drop_frame(EXT, DropReason::Malformed);
        };
        // The VPC's router answers the other VPC as it answers its own VMs,
        // back through the tunnel: echo replies from its gateway addresses,
        // time exceeded and host unreachable from the gateway of the
        // destination's subnet [RFC 1812 § 4.3].
        let gw = self.gateway_for(p.dst());
        let mut answer = Vec::new();
        if self.is_gateway(p.dst()) {
            if self.l3.build_echo_reply(&p, &mut answer) {
                self.send_sealed(cx, EXT, &answer, out);
                return;
            }
            return out.drop_frame(EXT, DropReason::UnsupportedProtocol);
        }
        let refusal = if p.ttl() <= 1 {
            Some((IcmpError::TtlExceeded, DropReason::TtlExpired))
        } else if !self.stations.contains_key(&p.dst()) {
            Some((IcmpError::HostUnreachable, DropReason::UnknownStation))
        } else {
            None
        };
        if let Some((err, reason)) = refusal {
            if self.l3.build_icmp_error(cx, gw, err, &p, &mut answer) {
                self.send_sealed(cx, EXT, &answer, out);
            }
            return out.drop_frame(EXT, reason);
        }
        let st = self.stations[&p.dst()];
        self.stats.from_vpn += 1;
        self.forward_to_station(cx, EXT, st, inner, out);
    }

    /// A VM's packet for the other region's VPC: sealed into ESP to the
    /// peer gateway [RFC 4301 § 5.1]. Too big once sealed: with DF,
    /// fragmentation needed with the MTU left inside the tunnel, from the
    /// sender's gateway [RFC 4301 § 8.1; RFC 1191]; without, the outer
    /// packet is fragmented [RFC 4301 § 8.1 "fragment after"; RFC 791].
    fn seal_to_peer(
        &mut self,
        cx: &mut Ctx,
        back: Sender,
        ip: &Ipv4Packet<&[u8]>,
        out: &mut Outbox,
    ) {
        let room = inner_mtu(self.ext.mtu);
        if ip.total_len() > usize::from(room) && ip.dont_frag() {
            let gw = self.gateway_for(ip.src());
            let err = IcmpError::FragmentationNeeded { mtu: room };
            if let Some(v) = self.vpn.as_mut() {
                v.stats.frag_needed += 1;
            }
            self.send_error(cx, UNDERLAY, gw, err, ip, Some(back), out);
            return out.drop_frame(UNDERLAY, DropReason::NeedsFragmentation);
        }
        let mut inner = ip.packet().to_vec();
        let Ok(mut p) = Ipv4Packet::new_checked(&mut inner[..]) else {
            return out.drop_frame(UNDERLAY, DropReason::Malformed);
        };
        p.decrement_ttl();
        self.send_sealed(cx, UNDERLAY, &inner, out);
    }

    /// Seals `inner` (a whole IPv4 packet, ready to go) into ESP to the
    /// peer and sends it, in outer fragments when it does not fit the ext
    /// wire. Drops are counted on `ingress`.
    fn send_sealed(&mut self, cx: &mut Ctx, ingress: PortId, inner: &[u8], out: &mut Outbox) {
        let me = self.ext.address.addr();
        let ident = self.l3.next_ident();
        let Ok(inner) = Ipv4Packet::new_checked(inner) else {
            return out.drop_frame(ingress, DropReason::Malformed);
        };
        let Some(vpn) = self.vpn.as_mut() else {
            return out.drop_frame(ingress, DropReason::UnsupportedProtocol);
        };
        let mut buf = std::mem::take(&mut self.esp_buf);
        buf.clear();
        if let Err(r) = vpn.seal(me, ident, &inner, &mut buf) {
            self.esp_buf = buf;
            return out.drop_frame(ingress, r);
        }
        let peer = vpn.config().peer;
        self.stats.to_vpn += 1;
        if buf.len() > usize::from(self.ext.mtu) {
            vpn.stats.fragmented += 1;
            match self.l3.lookup(peer) {
                Some((_, hop)) => {
                    let mtu = self.ext.mtu;
                    self.l3.send_fragments(cx, ingress, hop, &buf, mtu, out)
                }
                None => out.drop_frame(ingress, DropReason::NoRoute),
            }
        } else {
            self.l3.send_ip_to(cx, ingress, peer, &buf, out);
        }
        self.esp_buf = buf;
    }

    /// An IP packet from outside: for the gateway itself, or for a VIP —
    /// translated and routed into the VPC (from the other VPC with
    /// `config.vpn.clear`: routed untranslated), or refused with what a router
    /// answers (TTL spent [RFC 1812 § 5.3.1]; too big for the VPC once
    /// encapsulated [RFC 7348 § 4.3; RFC 1812 § 5.2.7.1]; no VM at the
    /// translated address). Refusals come after the NAT check, so nothing
    /// answers unsolicited packets, and their errors quote the packet as its
    /// sender wrote it (to the VIP), from the ext address.
    fn on_outside_packet(&mut self, cx: &mut Ctx, ip: &Ipv4Packet<&[u8]>, out: &mut Outbox) {
        let dst = ip.dst();
        let me = self.ext.address.addr();
        // From the other VPC, routed in clear (`config.vpn.clear`).
        let from_peer =
            (self.vpn.as_ref()).is_some_and(|v| v.config().clear && v.selects(dst, ip.src()));
        if !from_peer && !self.ext.vips.contains(&dst) {
            // The gateway forwards only what its VIPs translate.
            return out.drop_frame(EXT, DropReason::NoRoute);
        }
        let room = usize::from(self.underlay.mtu).saturating_sub(vxlan::OVERHEAD);
        let refusal = if ip.ttl() <= 1 {
            Some((Some(IcmpError::TtlExceeded), DropReason::TtlExpired))
        } else if ip.total_len() > room {
            // The gateway does not fragment: without DF a counted drop.
            let mtu = u16::try_from(room).unwrap_or(u16::MAX);
            match ip.dont_frag() {
                true => Some((
                    Some(IcmpError::FragmentationNeeded { mtu }),
                    DropReason::NeedsFragmentation,
                )),
                false => Some((None, DropReason::Oversize)),
            }
        } else {
            None
        };
        let mut pkt = ip.packet().to_vec();
        if !from_peer {
            if let Err(e) = self.nat.translate(cx.now, Side::Outside, &mut pkt) {
                return out.drop_frame(EXT, e.drop_reason());
            }
        }
        let private = Ipv4Packet::new_checked(&pkt[..]).map(|p| p.dst());
        let station = private.ok().and_then(|d| self.stations.get(&d).copied());
        let (err, reason) = match (refusal, station) {
            (None, Some(st)) => {
                self.stats.to_vpc += u64::from(!from_peer);
                self.stats.from_vpn += u64::from(from_peer);
                return self.forward_to_station(cx, EXT, st, pkt, out);
            }
            (Some(r), _) => r,
            // A rule towards an address no VM holds.
            (None, None) => (Some(IcmpError::HostUnreachable), DropReason::UnknownStation),
        };
        if let Some(err) = err {
            self.send_error(cx, EXT, me, err, ip, None, out);
        }
        out.drop_frame(EXT, reason);
    }

    fn on_underlay_frame(&mut self, cx: &mut Ctx, frame: &[u8], out: &mut Outbox) {
        match self.l3.input(cx, UNDERLAY, frame, out) {
            Input::Done => {}
            Input::Tunnel { ip, udp, .. } => match vxlan_payload(&udp) {
                Ok((vni, _)) if vni != self.tenant.vni => {
                    out.drop_frame(UNDERLAY, DropReason::VxlanUnknownVni)
                }
                Ok((_, inner)) => self.on_vpc_frame(cx, ip.src(), inner, out),
                Err(r) => out.drop_frame(UNDERLAY, r),
            },
            // The underlay routes nothing through the gateway.
            Input::Transit(_) => out.drop_frame(UNDERLAY, DropReason::NotForUs),
            Input::Local(_) => out.drop_frame(UNDERLAY, DropReason::UnsupportedProtocol),
        }
    }

    /// A VM's frame out of the tunnel: ARP for a gateway address, or a
    /// packet for the virtual router to route.
    fn on_vpc_frame(&mut self, cx: &mut Ctx, vtep: Ipv4Addr, inner: &[u8], out: &mut Outbox) {
        let Ok(eth) = EthernetFrame::new_checked(inner) else {
            return out.drop_frame(UNDERLAY, DropReason::VxlanInnerTruncated);
        };
        if eth.src().is_multicast() {
            return out.drop_frame(UNDERLAY, DropReason::SrcMacMulticast);
        }
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
                self.send_to_vtep(cx, UNDERLAY, vtep, &reply, out);
            }
            EtherType::Ipv4 if eth.dst() == self.tenant.mac => {
                let back = Sender {
                    mac: eth.src(),
                    vtep,
                };
                match checked_ipv4(eth.payload()) {
                    Ok(ip) => self.on_vpc_packet(cx, back, &ip, out),
                    Err(r) => out.drop_frame(UNDERLAY, r),
                }
            }
            EtherType::Ipv4 => out.drop_frame(UNDERLAY, DropReason::NotForUs),
            _ => out.drop_frame(UNDERLAY, DropReason::UnsupportedEtherType),
        }
    }

    /// A VM's IP packet to the VPC router: for the router itself (its
    /// gateway addresses, or its ext address), to another subnet of the VPC,
    /// or out through the reverse translation. TTL and size are the
    /// router's to refuse before the NAT: the sender is our own VM, answered
    /// from its subnet's gateway in the tunnel it came from.
    fn on_vpc_packet(
        &mut self,
        cx: &mut Ctx,
        back: Sender,
        ip: &Ipv4Packet<&[u8]>,
        out: &mut Outbox,
    ) {
        let (src, dst) = (ip.src(), ip.dst());
        if self.is_gateway(dst) || dst == self.ext.address.addr() {
            return self.deliver_from_vpc(cx, ip, back, out);
        }
        let subnet_broadcast = self.tenant.gateways.iter().any(|g| g.broadcast() == dst);
        if dst.is_broadcast() || dst.is_multicast() || subnet_broadcast {
            // Directed broadcasts are not forwarded [RFC 2644].
            return out.drop_frame(UNDERLAY, DropReason::NotForUs);
        }
        let gw = self.gateway_for(src);
        if ip.ttl() <= 1 {
            self.send_error(
                cx,
                UNDERLAY,
                gw,
                IcmpError::TtlExceeded,
                ip,
                Some(back),
                out,
            );
            return out.drop_frame(UNDERLAY, DropReason::TtlExpired);
        }
        if self.in_vpc(dst) {
            // Between the availability zones' subnets.
            let Some(st) = self.stations.get(&dst).copied() else {
                let err = IcmpError::HostUnreachable;
                self.send_error(cx, UNDERLAY, gw, err, ip, Some(back), out);
                return out.drop_frame(UNDERLAY, DropReason::UnknownStation);
            };
            self.stats.routed_in_vpc += 1;
            return self.forward_to_station(cx, UNDERLAY, st, ip.packet().to_vec(), out);
        }
        // For the other VPC: Some(whether it goes in clear).
        let to_peer = (self.vpn.as_ref())
            .filter(|v| v.selects(src, dst))
            .map(|v| v.config().clear);
        if to_peer == Some(false) {
            return self.seal_to_peer(cx, back, ip, out);
        }
        if ip.total_len() > usize::from(self.ext.mtu) {
            if !ip.dont_frag() {
                return out.drop_frame(UNDERLAY, DropReason::Oversize);
            }
            let err = IcmpError::FragmentationNeeded { mtu: self.ext.mtu };
            self.send_error(cx, UNDERLAY, gw, err, ip, Some(back), out);
            return out.drop_frame(UNDERLAY, DropReason::NeedsFragmentation);
        }
        let mut pkt = ip.packet().to_vec();
        if to_peer.is_some() {
            // The VPN replaced by plain routing: the other VPC's prefix
            // is routed, untranslated, by the default route.
            self.stats.to_vpn += 1;
        } else if let Err(e) = self.nat.translate(cx.now, Side::Inside, &mut pkt) {
            return out.drop_frame(UNDERLAY, e.drop_reason());
        }
        let Ok(mut p) = Ipv4Packet::new_checked(&mut pkt[..]) else {
            return out.drop_frame(UNDERLAY, DropReason::Malformed);
        };
        p.decrement_ttl();
        self.stats.on_vpc_frame += u64::from(to_peer.is_none());
        self.l3.send_ip(cx, UNDERLAY, &pkt, out);
    }
}

impl Role for Vgw {
    const INFO: RoleInfo = RoleInfo {
        name: "vgw",
        summary: "the cloud's virtual gateway: ext holds the public address and the VIPs, underlay is its VTEP; DNAT into the tenant's VPC; optionally an IPsec VPN to another region's gateway",
        addressing: Addressing::All,
        bridges: false,
        isolates_tenants: false,
        routes: true,
    };
    type Settings = VgwSettings;
    fn build(node: &ElementNode, c: VgwSettings) -> Result<Box<dyn AnyElement>, ConfigError> {
        Ok(Box::new(Vgw::new(c.config(node)?)))
    }
    /// Destinations are translated to the VMs of the DNAT rules.
    fn rewrites(_: &ElementNode, c: &VgwSettings) -> Rewrites {
        let host = |ip: Ipv4Addr| Ipv4Cidr::new(ip, 32).expect("a /32 is a prefix");
        Rewrites {
            sources: Vec::new(),
            destinations: c.dnat.iter().map(|d| host(*d.to.ip())).collect(),
        }
    }
}

impl Element for Vgw {
    fn on_frame(&mut self, cx: &mut Ctx, port: PortId, frame: &[u8], out: &mut Outbox) {
        self.last_now = cx.now;
        match port {
            EXT => self.on_ext_frame(cx, frame, out),
            UNDERLAY => self.on_underlay_frame(cx, frame, out),
            _ => out.drop_frame(port, DropReason::NoSuchPort),
        }
    }

    fn on_timer(&mut self, cx: &mut Ctx, out: &mut Outbox) {
        self.last_now = cx.now;
        self.nat.expire(cx.now);
        if let Some(v) = self.vpn.as_mut() {
            for _ in 0..v.expire(cx.now) {
                out.drop_frame(EXT, DropReason::ReassemblyFailed);
            }
        }
        self.l3.on_timer(cx, out);
    }

    fn poll_at(&self) -> Option<Instant> {
        let vpn = self.vpn.as_ref().and_then(Vpn::poll_at);
        [self.nat.poll_at(), self.l3.poll_at(), vpn]
            .into_iter()
            .flatten()
            .min()
    }

    fn report(&self) -> serde_json::Value {
        let l3 = self.l3.report();
        let vni = self.tenant.vni.get();
        d11_core::report_json(&VgwReport {
            nat: self.nat.entries(self.last_now),
            stations: (self.tenant.stations.iter())
                .map(|s| StationRow {
                    vni,
                    ip: s.ip,
                    mac: s.mac,
                    vtep: s.vtep,
                })
                .collect(),
            arp: l3.arp,
            stats: self.stats.clone(),
            originated: l3.originated,
            nat_stats: self.nat.stats().clone(),
            sas: (self.vpn.as_ref())
                .map(|v| v.sas(self.ext.address.addr()))
                .unwrap_or_default(),
            vpn: self.vpn.as_ref().map(|v| v.stats.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use d11_core::nat::{DnatRule, Proto, Timeouts};
    use d11_wire::hex;
    use proptest::prelude::*;
    use std::net::SocketAddrV4;

    const EXT_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0xe, 2]);
    const ROUTER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0xa, 1]);
    const LB_MAC: MacAddr = MacAddr([2, 0, 0, 0, 1, 0x10]);
    const HOSTA_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x11]);
    const BORDER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0xb, 1]);

    // Fixtures made by /usr/bin/python3 with scapy, router=02:00:00:00:0a:01
    // lb=02:00:00:00:01:10 ext=02:00:00:00:0e:02 border=02:00:00:00:0b:01:
    // GW_PING:  Ether(dst=router, src=lb)/IP(src="192.168.1.10", dst="192.168.1.1",
    //           id=1, ttl=64, flags="DF")/ICMP(id=0x77, seq=1)/b"abcdefgh"
    // GW_PONG:  Ether(dst=lb, src=router)/IP(src="192.168.1.1", dst="192.168.1.10",
    //           id=1, ttl=64)/ICMP(type=0, id=0x77, seq=1)/b"abcdefgh"
    const GW_PING: &str = "020000000a01020000000110080045000024000140004001b77cc0a8010ac0a80101080065f2007700016162636465666768";
    const GW_PONG: &str = "020000000110020000000a01080045000024000100004001f77cc0a80101c0a8010a00006df2007700016162636465666768";
    // VIP_TTL1: Ether(dst=ext, src=border)/IP(src="192.0.2.130", dst="203.0.113.24",
    //           id=1, ttl=1)/UDP(sport=40000, dport=443)/b"GET!"
    // VIP_TIME_EXCEEDED: Ether(dst=border, src=ext)/IP(src="203.0.113.2",
    //           dst="192.0.2.130", id=1, ttl=64)/ICMP(type=11, code=0)/bytes(VIP_TTL1's IP)
    const VIP_TTL1: &str = "020000000e02020000000b01080045000020000100000111bb31c0000282cb0071189c4001bb000cc7d847455421";
    const VIP_TIME_EXCEEDED: &str = "020000000b01020000000e0208004500003c0001000040017c3bcb007102c00002820b00f3b80000000045000020000100000111bb31c0000282cb0071189c4001bb000cc7d847455421";
    // VM_TTL1:  Ether(dst=router, src=lb)/IP(src="192.168.1.10", dst="192.0.2.130",
    //           id=7, ttl=1, flags="DF")/UDP(sport=443, dport=40000)/b"200 OK"
    // VM_TIME_EXCEEDED: Ether(dst=lb, src=router)/IP(src="192.168.1.1",
    //           dst="192.168.1.10", id=1, ttl=64)/ICMP(type=11, code=0)/bytes(VM_TTL1's IP)
    const VM_TTL1: &str = "020000000a01020000000110080045000022000740000111f58fc0a8010ac000028201bb9c40000e2c06323030204f4b";
    const VM_TIME_EXCEEDED: &str = "020000000110020000000a0108004500003e000100004001f762c0a80101c0a8010a0b0079540000000045000022000740000111f58fc0a8010ac000028201bb9c40000e2c06323030204f4b";
    // BIG (1451 bytes, zeros after the UDP header):
    //           IP(src="192.0.2.130", dst="203.0.113.24", id=1, ttl=63, flags="DF")/
    //           UDP(sport=40000, dport=443)/(b"\0" * 1423)
    // FRAG_NEEDED: IP(src="203.0.113.2", dst="192.0.2.130", id=1, ttl=64)/
    //           ICMP(type=3, code=4, nexthopmtu=1450)/bytes(BIG)[:548]: these
    //           56 bytes, then zeros up to 576.
    const BIG_HEAD: &str = "450005ab000140003f1137a6c0000282cb0071189c4001bb05975829";
    const FRAG_NEEDED_HEAD: &str = "450002400001000040017a37cb007102c00002820304fb95000005aa450005ab000140003f1137a6c0000282cb0071189c4001bb05975829";

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
            vpn: None,
        })
    }

    /// A vgw that knows host A's underlay MAC and the border's.
    fn warm() -> Vgw {
        let mut g = vgw();
        g.l3.learn(t(0), ip("10.0.0.11"), HOSTA_MAC);
        g.l3.learn(t(0), ip("203.0.113.1"), BORDER_MAC);
        g
    }

    /// The one frame sent, on `port`.
    fn only_frame(o: &Outbox, port: PortId) -> Vec<u8> {
        let f = frames(o);
        assert_eq!(f.len(), 1, "{f:?} {:?}", o.drops());
        assert_eq!(f[0].0, port);
        f[0].1.clone()
    }

    /// The sender, VNI and inner frame of VXLAN in `packet` to `me`.
    fn vxlan_to(packet: &[u8], me: Ipv4Addr) -> Option<(Ipv4Addr, Vni, &[u8])> {
        let ip = Ipv4Packet::new_checked(packet).ok()?;
        assert_eq!(ip.dst(), me);
        let udp = d11_wire::udp::UdpPacket::new_checked(ip.payload_ref()).ok()?;
        let (vni, inner) = vxlan_payload(&udp).ok()?;
        Some((ip.src(), vni, inner))
    }

    /// The VNI and inner frame of a VXLAN frame the vgw sent to host A.
    fn untunnel(frame: &[u8]) -> (u32, Vec<u8>) {
        let (src, vni, inner) = vxlan_to(&frame[14..], ip("10.0.0.11")).unwrap();
        assert_eq!(src, ip("10.0.0.1"));
        (vni.get(), inner.to_vec())
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
        d11_wire::ipv4::Ipv4Repr {
            src: ip("192.0.2.130"),
            dst: ip(dst),
            protocol: d11_wire::ipv4::protocol::UDP,
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
        g.on_frame(&mut t(0).into(), EXT, &req, &mut o);
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
        g.on_frame(&mut t(0).into(), EXT, &req, &mut o);
        assert!(o.is_empty());
    }

    #[test]
    fn the_vip_is_translated_and_sent_to_host_a_in_vni_1001() {
        let mut g = warm();
        let mut o = Outbox::new();
        g.on_frame(
            &mut t(1).into(),
            EXT,
            &from_client("203.0.113.24", 443),
            &mut o,
        );
        let f = frames(&o);
        assert_eq!(f.len(), 1, "{:?}", o.drops());
        assert_eq!(f[0].0, UNDERLAY);
        let (vtep, vni, inner) = vxlan_to(&f[0].1[14..], ip("10.0.0.11")).unwrap();
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
        g.on_frame(
            &mut t(1).into(),
            EXT,
            &from_client("203.0.113.24", 80),
            &mut o,
        );
        assert_eq!(o.drops(), &[(EXT, DropReason::NatUnsolicited)]);
        o.clear();
        g.on_frame(
            &mut t(1).into(),
            EXT,
            &from_client("203.0.113.99", 443),
            &mut o,
        );
        assert_eq!(o.drops(), &[(EXT, DropReason::NoRoute)]);
        o.clear();
        let mut arp = vec![];
        ArpRepr::request(LB_MAC, ip("192.168.1.10"), ip("192.168.1.1")).emit_frame(&mut arp);
        g.on_frame(&mut t(1).into(), UNDERLAY, &from_hosta(1002, &arp), &mut o);
        assert_eq!(o.drops(), &[(UNDERLAY, DropReason::VxlanUnknownVni)]);
        o.clear();
        g.on_frame(
            &mut t(1).into(),
            UNDERLAY,
            &from_hosta(1001, &arp[..9]),
            &mut o,
        );
        assert_eq!(o.drops(), &[(UNDERLAY, DropReason::VxlanInnerTruncated)]);
        assert_eq!(o.frames().count(), 0);
    }

    #[test]
    fn too_big_for_the_vpc_with_df_gets_fragmentation_needed_quoting_the_vip() {
        let mut g = warm();
        g.l3.learn(t(0), ip("203.0.113.1"), MacAddr([2, 0, 0, 0, 0xb, 1]));
        let mut f = vec![];
        ethernet::emit_header(
            &mut f,
            EXT_MAC,
            MacAddr([2, 0, 0, 0, 0xb, 1]),
            EtherType::Ipv4,
        );
        d11_wire::ipv4::Ipv4Repr {
            src: ip("192.0.2.130"),
            dst: ip("203.0.113.24"),
            protocol: d11_wire::ipv4::protocol::UDP,
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
        g.on_frame(&mut t(1).into(), EXT, &f, &mut o);
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
        g.on_frame(&mut t(2).into(), EXT, &fits, &mut o);
        assert!(o.drops().is_empty(), "{:?}", o.drops());
        assert_eq!(frames(&o)[0].0, UNDERLAY);
    }

    /// An IPv4/UDP packet from `src` to `dst` with `ttl`.
    fn udp_packet(src: &str, dst: &str, ttl: u8) -> Vec<u8> {
        let mut b = vec![];
        d11_wire::ipv4::Ipv4Repr {
            src: ip(src),
            dst: ip(dst),
            protocol: d11_wire::ipv4::protocol::UDP,
            ttl,
            ident: 9,
            dont_frag: true,
            payload_len: 8,
        }
        .emit(&mut b);
        b.extend_from_slice(&[0x9c, 0x40, 0, 9, 0, 8, 0, 0]);
        b
    }

    #[test]
    fn with_the_vpn_in_clear_the_other_vpc_is_routed_untranslated_both_ways_and_no_one_else() {
        let mut g = warm();
        let clear = crate::vpn::tests::east(true);
        g.vpn = Some(Vpn::new(clear.config(&g.tenant.gateways).unwrap()));
        let mut o = Outbox::new();
        // A VM's packet to the other VPC: out of ext to the border, as sent.
        let mut inner = vec![];
        ethernet::emit_header(&mut inner, ROUTER_MAC, LB_MAC, EtherType::Ipv4);
        inner.extend_from_slice(&udp_packet("192.168.1.10", "172.20.1.20", 64));
        g.on_frame(
            &mut t(1).into(),
            UNDERLAY,
            &from_hosta(1001, &inner),
            &mut o,
        );
        let f = only_frame(&o, EXT);
        assert_eq!(&f[0..6], &BORDER_MAC.0);
        let p = Ipv4Packet::new_checked(&f[14..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(
            (p.src(), p.dst(), p.ttl(), p.protocol()),
            (ip("192.168.1.10"), ip("172.20.1.20"), 63, 17)
        );
        // The other VPC's packet on ext: to the VM, one TTL lower.
        let from_peer = |src: &str| {
            let mut b = vec![];
            ethernet::emit_header(&mut b, EXT_MAC, BORDER_MAC, EtherType::Ipv4);
            b.extend_from_slice(&udp_packet(src, "192.168.1.10", 60));
            b
        };
        o.clear();
        g.on_frame(&mut t(2).into(), EXT, &from_peer("172.20.1.20"), &mut o);
        let (vni, inner) = untunnel(&only_frame(&o, UNDERLAY));
        assert_eq!(vni, 1001);
        let p = Ipv4Packet::new_checked(&inner[14..]).unwrap();
        assert_eq!(
            (p.src(), p.dst(), p.ttl()),
            (ip("172.20.1.20"), ip("192.168.1.10"), 59)
        );
        assert_eq!((g.stats.to_vpn, g.stats.from_vpn), (1, 1));
        assert_eq!((g.stats.on_vpc_frame, g.stats.to_vpc), (0, 0));
        // Anyone else to a VPC address is not routed in.
        o.clear();
        g.on_frame(&mut t(3).into(), EXT, &from_peer("192.0.2.130"), &mut o);
        assert!(o.frames().next().is_none());
        assert_eq!(o.drops()[0].1, DropReason::NoRoute);
    }

    #[test]
    fn a_vms_arp_for_its_gateway_is_answered_in_the_tunnel() {
        let mut g = warm();
        let mut o = Outbox::new();
        let mut arp = vec![];
        ArpRepr::request(LB_MAC, ip("192.168.1.10"), ip("192.168.1.1")).emit_frame(&mut arp);
        g.on_frame(&mut t(1).into(), UNDERLAY, &from_hosta(1001, &arp), &mut o);
        let f = frames(&o);
        assert_eq!(f.len(), 1);
        let (_, vni, inner) = vxlan_to(&f[0].1[14..], ip("10.0.0.11")).unwrap();
        assert_eq!(vni.get(), 1001);
        let a = ArpRepr::parse(&inner[14..]).unwrap();
        assert_eq!(
            (a.op, a.sender_mac, a.target_mac),
            (ArpOp::Reply, ROUTER_MAC, LB_MAC)
        );
    }

    #[test]
    fn a_vms_ping_to_its_gateway_is_answered_in_vni_1001_byte_identical_to_scapy() {
        let mut g = warm();
        let mut o = Outbox::new();
        g.on_frame(
            &mut t(1).into(),
            UNDERLAY,
            &from_hosta(1001, &hex(GW_PING)),
            &mut o,
        );
        let (vni, inner) = untunnel(&only_frame(&o, UNDERLAY));
        assert_eq!(vni, 1001);
        assert_eq!(inner, hex(GW_PONG));
        assert_eq!(g.report()["originated"]["echo_replies"], 1);
    }

    #[test]
    fn the_ext_and_vtep_addresses_answer_ping_and_udp_to_ext_gets_port_unreachable() {
        let mut g = warm();
        let mut o = Outbox::new();
        // Ping the ext address: GW_PING's IP re-addressed.
        let mut ping = hex(GW_PING)[14..].to_vec();
        ping[12..16].copy_from_slice(&[192, 0, 2, 130]);
        ping[16..20].copy_from_slice(&[203, 0, 113, 2]);
        ping[10..12].copy_from_slice(&[0, 0]);
        Ipv4Packet::new_checked(&mut ping[..])
            .unwrap()
            .fill_checksum();
        let mut f = vec![];
        ethernet::emit_header(&mut f, EXT_MAC, BORDER_MAC, EtherType::Ipv4);
        f.extend_from_slice(&ping);
        g.on_frame(&mut t(1).into(), EXT, &f, &mut o);
        let r = only_frame(&o, EXT);
        let p = Ipv4Packet::new_checked(&r[14..]).unwrap();
        assert_eq!((p.src(), p.dst()), (ip("203.0.113.2"), ip("192.0.2.130")));
        assert_eq!(p.payload()[0], icmp::ECHO_REPLY);
        assert_eq!(&r[0..6], &BORDER_MAC.0, "via the border");
        // UDP to the ext address: port unreachable, as traceroute expects.
        o.clear();
        let mut udp = from_client("203.0.113.2", 33434);
        udp[14 + 8] = 1;
        Ipv4Packet::new_checked(&mut udp[14..])
            .unwrap()
            .fill_checksum();
        g.on_frame(&mut t(2).into(), EXT, &udp, &mut o);
        let r = only_frame(&o, EXT);
        let icmp = &r[14 + 20..];
        assert_eq!((icmp[0], icmp[1]), (3, 3), "port unreachable");
        assert_eq!(o.drops(), &[(EXT, DropReason::UnsupportedProtocol)]);
        // Ping the VTEP address from host A, not in VXLAN.
        o.clear();
        ping[12..16].copy_from_slice(&[10, 0, 0, 11]);
        ping[16..20].copy_from_slice(&[10, 0, 0, 1]);
        Ipv4Packet::new_checked(&mut ping[..])
            .unwrap()
            .fill_checksum();
        let mut f = vec![];
        ethernet::emit_header(
            &mut f,
            MacAddr([2, 0, 0, 0, 0, 1]),
            HOSTA_MAC,
            EtherType::Ipv4,
        );
        f.extend_from_slice(&ping);
        g.on_frame(&mut t(3).into(), UNDERLAY, &f, &mut o);
        let r = only_frame(&o, UNDERLAY);
        let p = Ipv4Packet::new_checked(&r[14..]).unwrap();
        assert_eq!((p.src(), p.dst()), (ip("10.0.0.1"), ip("10.0.0.11")));
        assert_eq!(p.payload()[0], icmp::ECHO_REPLY);
    }

    #[test]
    fn ttl_1_to_the_vip_gets_time_exceeded_from_the_ext_address_byte_identical_to_scapy() {
        let mut g = warm();
        let mut o = Outbox::new();
        g.on_frame(&mut t(1).into(), EXT, &hex(VIP_TTL1), &mut o);
        assert_eq!(only_frame(&o, EXT), hex(VIP_TIME_EXCEEDED));
        assert_eq!(o.drops(), &[(EXT, DropReason::TtlExpired)]);
        // After the NAT check: the same to a port without a rule is silent.
        o.clear();
        let mut stray = hex(VIP_TTL1);
        stray[14 + 22..14 + 24].copy_from_slice(&80u16.to_be_bytes());
        g.on_frame(&mut t(2).into(), EXT, &stray, &mut o);
        assert_eq!(o.frames().count(), 0);
        assert_eq!(o.drops(), &[(EXT, DropReason::NatUnsolicited)]);
    }

    #[test]
    fn ttl_1_from_a_vm_gets_time_exceeded_from_its_gateway_in_the_tunnel_byte_identical_to_scapy() {
        let mut g = warm();
        let mut o = Outbox::new();
        g.on_frame(
            &mut t(1).into(),
            UNDERLAY,
            &from_hosta(1001, &hex(VM_TTL1)),
            &mut o,
        );
        let (vni, inner) = untunnel(&only_frame(&o, UNDERLAY));
        assert_eq!((vni, inner), (1001, hex(VM_TIME_EXCEEDED)));
        assert_eq!(o.drops(), &[(UNDERLAY, DropReason::TtlExpired)]);
    }

    #[test]
    fn a_vpc_address_no_vm_holds_gets_host_unreachable_from_the_gateway() {
        let mut g = warm();
        let mut o = Outbox::new();
        let mut ping = hex(GW_PING);
        ping[14 + 19] = 99; // 192.168.1.99
        Ipv4Packet::new_checked(&mut ping[14..])
            .unwrap()
            .fill_checksum();
        g.on_frame(&mut t(1).into(), UNDERLAY, &from_hosta(1001, &ping), &mut o);
        let (_, inner) = untunnel(&only_frame(&o, UNDERLAY));
        let p = Ipv4Packet::new_checked(&inner[14..]).unwrap();
        assert_eq!((p.src(), p.dst()), (ip("192.168.1.1"), ip("192.168.1.10")));
        assert_eq!((p.payload()[0], p.payload()[1]), (3, 1), "host unreachable");
        assert_eq!(&p.payload()[8 + 16..8 + 20], &[192, 168, 1, 99]);
        assert_eq!(o.drops(), &[(UNDERLAY, DropReason::UnknownStation)]);
    }

    #[test]
    fn too_big_with_df_gets_fragmentation_needed_byte_identical_to_scapy() {
        let mut g = warm();
        let mut big = hex(BIG_HEAD);
        big.resize(1451, 0);
        let mut f = vec![];
        ethernet::emit_header(&mut f, EXT_MAC, BORDER_MAC, EtherType::Ipv4);
        f.extend_from_slice(&big);
        let mut o = Outbox::new();
        g.on_frame(&mut t(1).into(), EXT, &f, &mut o);
        let mut want = hex(FRAG_NEEDED_HEAD);
        want.resize(icmp::MAX_ERROR_LEN, 0);
        assert_eq!(&only_frame(&o, EXT)[14..], &want[..]);
        assert_eq!(g.report()["originated"]["frag_needed"], 1);
        // Without DF: a counted drop, no error.
        o.clear();
        f[14 + 6] = 0;
        Ipv4Packet::new_checked(&mut f[14..])
            .unwrap()
            .fill_checksum();
        g.on_frame(&mut t(2).into(), EXT, &f, &mut o);
        assert_eq!(o.frames().count(), 0);
        assert_eq!(o.drops(), &[(EXT, DropReason::Oversize)]);
    }

    #[test]
    fn icmp_errors_are_rate_limited_by_the_shared_token_bucket() {
        let mut g = warm();
        let mut o = Outbox::new();
        let frame = from_hosta(1001, &hex(VM_TTL1));
        for _ in 0..150 {
            g.on_frame(&mut t(1).into(), UNDERLAY, &frame, &mut o);
        }
        assert_eq!(
            o.frames().count(),
            usize::try_from(d11_core::ratelimit::ICMP_BURST).unwrap()
        );
        assert_eq!(o.drops().len(), 150, "every one is still a counted drop");
        let r = g.report();
        assert_eq!(r["originated"]["time_exceeded"], 100, "{r}");
        assert_eq!(r["originated"]["rate_limited"], 50, "{r}");
        // Tokens come back with time.
        o.clear();
        g.on_frame(&mut t(100).into(), UNDERLAY, &frame, &mut o);
        assert_eq!(o.frames().count(), 1);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(frame in proptest::collection::vec(any::<u8>(), 0..1600), port in 0u16..3) {
            let mut g = warm();
            let mut o = Outbox::new();
            g.on_frame(&mut t(1).into(), PortId(port), &frame, &mut o);
            g.on_timer(&mut t(400_000).into(), &mut o);
        }

        #[test]
        fn mutated_vxlan_never_panics(i in 0usize..92, v in any::<u8>()) {
            let mut arp = vec![];
            ArpRepr::request(LB_MAC, ip("192.168.1.10"), ip("192.168.1.1")).emit_frame(&mut arp);
            let mut f = from_hosta(1001, &arp);
            f[i] = v;
            let mut g = warm();
            let mut o = Outbox::new();
            g.on_frame(&mut t(1).into(), UNDERLAY, &f, &mut o);
        }
    }
}
