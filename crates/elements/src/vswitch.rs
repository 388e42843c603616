//! `vswitch`: a compute host's virtual switch, a VXLAN tunnel endpoint (VTEP).
//!
//! Read RFC 7348 first: § 4.1 (unicast: the VTEP looks up the inner
//! destination MAC per VNI and sends the frame in VXLAN to the VTEP that owns
//! it; it learns inner source MAC → outer source IP from what it receives),
//! § 4.2 (broadcast and unknown unicast; this switch does head-end
//! replication to a configured list of VTEPs per VNI, as OpenStack's
//! l2population and EVPN's ingress replication do, instead of IP multicast),
//! § 5 (the header, the outer UDP source port from a hash of the inner
//! frame, UDP checksum sent as zero) and § 4.3 (VTEPs never fragment: the
//! VMs get an MTU of 1450 so their frames fit a 1500-byte underlay).
//!
//! Port 0 is the underlay (an address and a MAC of its own, the port of the
//! switch's [`L3`]: it answers ARP and ping for that address and resolves
//! the other VTEPs' MACs); every other port is one VM's TAP, in one VNI. The MAC table
//! is keyed by (VNI, MAC), so two tenants may use the same MACs and the same
//! IP addresses: a frame never leaves its VNI.
//!
//! Shape (Open vSwitch's datapath stages): extract a key (VNI, dst, src,
//! where from), learn the source, look the destination up, apply an action.

use crate::role::{Addressing, ElementNode, Role, RoleInfo};
use d11_core::hash::FastMap;
use d11_core::settings::ConfigError;
use d11_core::{AnyElement, Ctx, DropReason, Element, Input, Instant, L3Port, Outbox, PortId, L3};
use d11_wire::arp::{ArpOp, ArpRepr};
use d11_wire::ethernet::{self, EtherType, EthernetFrame};
use d11_wire::ipv4::{protocol, Ipv4Packet, Ipv4Repr};
use d11_wire::udp::{UdpPacket, UdpRepr};
use d11_wire::vxlan::{self, Vni, VxlanPacket, VxlanRepr};
use d11_wire::{Ipv4Cidr, MacAddr};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;
use std::time::Duration;

/// The underlay port is always port 0.
pub const UNDERLAY: PortId = PortId(0);

/// The port range the outer UDP source port is taken from: the dynamic
/// range, as RFC 7348 § 5 recommends.
const SRC_PORT_BASE: u16 = 49152;

/// TTL of the outer header the VTEP originates.
const OUTER_TTL: u8 = 64;

/// The underlay port: the VTEP's own address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnderlayPort {
    pub name: String,
    pub mac: MacAddr,
    pub address: Ipv4Cidr,
    pub mtu: u16,
}

impl UnderlayPort {
    /// The port as its IP layer holds it.
    pub fn l3_port(&self) -> L3Port {
        L3Port {
            name: self.name.clone(),
            mac: self.mac,
            address: self.address,
            mtu: self.mtu,
        }
    }
}

/// One VM's TAP port and the tenant segment it is plugged into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmPort {
    pub name: String,
    pub vni: Vni,
    /// The VM's MTU (its frames may be this plus the Ethernet header).
    pub mtu: u16,
}

/// A station the topology knows (as an SDN controller would push it): in
/// `vni`, `mac` lives behind `vtep`, or on this host when `vtep` is ours.
/// With `ip`, this switch answers the VMs' ARP requests for it itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticStation {
    pub vni: Vni,
    pub mac: MacAddr,
    pub ip: Option<Ipv4Addr>,
    pub vtep: Ipv4Addr,
}

/// What a vSwitch is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VSwitchConfig {
    pub underlay: UnderlayPort,
    /// Ports 1.. in order.
    pub vms: Vec<VmPort>,
    /// Per VNI, the remote VTEPs that get a copy of broadcast and unknown
    /// unicast frames (head-end replication [RFC 7348 § 4.2]).
    pub flood: BTreeMap<Vni, Vec<Ipv4Addr>>,
    pub stations: Vec<StaticStation>,
    /// How long a learned MAC lives without being seen [IEEE 802.1D § 7.9.2].
    pub aging: Duration,
    /// Learned entries at most; beyond it new stations are flooded to.
    pub max_macs: usize,
}

impl VSwitchConfig {
    pub const DEFAULT_AGING: Duration = Duration::from_secs(300);
    pub const DEFAULT_MAX_MACS: usize = 8192;
}

/// `config` of a `vswitch` node: which VM port is in which VNI, where the
/// VNI's broadcasts go, and the stations a controller pushes.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VSwitchSettings {
    /// Every port but the underlay, once each, with its tenant's VNI.
    vms: Vec<VmSettings>,
    /// Per VNI, the other VTEPs (underlay addresses) that get a copy of
    /// broadcast and unknown unicast frames.
    #[serde(default)]
    flood: Vec<FloodSettings>,
    /// Static FDB entries: VM MACs and the VTEP holding each; with `ip`, the
    /// vSwitch answers its VMs' ARP for it.
    #[serde(default)]
    fdb: Vec<StationSettings>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct VmSettings {
    port: String,
    vni: Vni,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FloodSettings {
    vni: Vni,
    vteps: Vec<Ipv4Addr>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StationSettings {
    vni: Vni,
    mac: MacAddr,
    #[serde(default)]
    ip: Option<Ipv4Addr>,
    vtep: Ipv4Addr,
}

impl VSwitchSettings {
    /// The vSwitch's configuration from its node and settings, each value
    /// checked with its key named.
    fn config(&self, node: &ElementNode) -> Result<VSwitchConfig, ConfigError> {
        if !node.routes.is_empty() {
            return Err(ConfigError::new(
                "routes",
                "a vswitch reaches its VTEPs on the underlay subnet; it has no routes",
            ));
        }
        let Some((first, vm_ports)) = node.ports.split_first() else {
            return Err(ConfigError::new(
                "ports",
                "a vswitch needs an underlay port",
            ));
        };
        let underlay = UnderlayPort {
            name: first.name.clone(),
            mac: first.mac,
            address: first.address.ok_or_else(|| {
                ConfigError::new(
                    "ports[0].address",
                    "the underlay port needs the VTEP's address",
                )
            })?,
            mtu: first.mtu,
        };
        let mut vms = Vec::with_capacity(vm_ports.len());
        for (j, p) in vm_ports.iter().enumerate() {
            let mut of_port = self.vms.iter().filter(|v| v.port == p.name);
            let vni = match (of_port.next(), of_port.next()) {
                (Some(v), None) => v.vni,
                (None, _) => {
                    return Err(ConfigError::new(
                        "config.vms",
                        format!("ports[{}] {:?} has no entry (port, vni)", j + 1, p.name),
                    ))
                }
                (Some(_), Some(_)) => {
                    return Err(ConfigError::new(
                        "config.vms",
                        format!("port {:?} is listed twice", p.name),
                    ))
                }
            };
            vms.push(VmPort {
                name: p.name.clone(),
                vni,
                mtu: p.mtu,
            });
        }
        for (i, v) in self.vms.iter().enumerate() {
            if !vm_ports.iter().any(|p| p.name == v.port) {
                return Err(ConfigError::new(
                    format!("config.vms[{i}].port"),
                    format!("{:?} is not a VM port of this vswitch", v.port),
                ));
            }
        }
        let on_underlay = |ip: Ipv4Addr, key: String| {
            if underlay.address.contains(ip) && ip != underlay.address.addr() {
                Ok(())
            } else {
                Err(ConfigError::new(
                    key,
                    format!(
                        "{ip} is not another VTEP on the underlay {}",
                        underlay.address.network()
                    ),
                ))
            }
        };
        let mut flood = BTreeMap::new();
        for (i, f) in self.flood.iter().enumerate() {
            for (k, ip) in f.vteps.iter().enumerate() {
                on_underlay(*ip, format!("config.flood[{i}].vteps[{k}]"))?;
            }
            if flood.insert(f.vni, f.vteps.clone()).is_some() {
                return Err(ConfigError::new(
                    format!("config.flood[{i}].vni"),
                    format!("VNI {} is listed twice", f.vni),
                ));
            }
        }
        let mut stations = Vec::with_capacity(self.fdb.len());
        for (i, s) in self.fdb.iter().enumerate() {
            if s.vtep != underlay.address.addr() {
                on_underlay(s.vtep, format!("config.fdb[{i}].vtep"))?;
            }
            if !s.mac.is_unicast() {
                return Err(ConfigError::new(
                    format!("config.fdb[{i}].mac"),
                    format!("{} is not a unicast MAC", s.mac),
                ));
            }
            stations.push(StaticStation {
                vni: s.vni,
                mac: s.mac,
                ip: s.ip,
                vtep: s.vtep,
            });
        }
        Ok(VSwitchConfig {
            underlay,
            vms,
            flood,
            stations,
            aging: VSwitchConfig::DEFAULT_AGING,
            max_macs: VSwitchConfig::DEFAULT_MAX_MACS,
        })
    }
}

/// Where a MAC of a VNI lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Location {
    Local(PortId),
    Remote(Ipv4Addr),
}

#[derive(Debug, Clone, Copy)]
struct FdbEntry {
    at: Location,
    /// `None` for a static entry, which never ages.
    last_seen: Option<Instant>,
}

/// What to do with a VM's frame (or a decapsulated one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Local(PortId),
    Tunnel(Ipv4Addr),
    /// Local ports of the VNI but the ingress; remote VTEPs too when the
    /// frame came from a VM (never back into the underlay: split horizon).
    Flood,
    Drop(DropReason),
}

/// Totals since start, for the report.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VSwitchStats {
    learned: u64,
    moved: u64,
    aged: u64,
    refused: u64,
    encapsulated: u64,
    decapsulated: u64,
    replicated: u64,
    arp_proxied: u64,
}

/// One station of the FDB: on a VM port, or behind another VTEP.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FdbRow {
    pub vni: u32,
    pub mac: MacAddr,
    /// The VM port, or the underlay for a remote station.
    pub port: Option<String>,
    pub vtep: Option<Ipv4Addr>,
    /// Seconds since last seen; `None` for a static entry.
    pub age_s: Option<f64>,
}

/// Where one VNI's broadcasts are replicated.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FloodRow {
    pub vni: u32,
    /// The VTEPs, space-separated.
    pub flood_to: String,
}

/// What a vSwitch reports: its FDB by (VNI, MAC), the flood lists, the
/// underlay's ARP cache, totals.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VSwitchReport {
    pub fdb: Vec<FdbRow>,
    pub vteps: Vec<FloodRow>,
    pub arp: Vec<d11_core::l3::ArpRow>,
    pub stats: VSwitchStats,
}

/// A VTEP with per-VNI MAC learning.
#[derive(Debug)]
pub struct VSwitch {
    underlay: UnderlayPort,
    vms: Vec<VmPort>,
    flood: BTreeMap<Vni, Vec<Ipv4Addr>>,
    fdb: FastMap<(Vni, MacAddr), FdbEntry>,
    /// Answers for ARP requests from VMs: (VNI, IP) → MAC.
    arp_proxy: FastMap<(Vni, Ipv4Addr), MacAddr>,
    /// The VTEP's IP layer on the underlay port.
    l3: L3,
    aging: Duration,
    max_macs: usize,
    learned: usize,
    deadlines: BinaryHeap<Reverse<(Instant, Vni, MacAddr)>>,
    /// Where each outer packet is built, kept between frames.
    scratch: Vec<u8>,
    last_now: Instant,
    stats: VSwitchStats,
}

impl VSwitch {
    pub fn new(cfg: VSwitchConfig) -> VSwitch {
        let me = cfg.underlay.address.addr();
        let mut fdb = FastMap::default();
        let mut arp_proxy = FastMap::default();
        for s in &cfg.stations {
            let at = if s.vtep == me {
                // A local VM: its port is the one of its VNI, if it is alone
                // there; otherwise it is learned from its first frame.
                let mut ports = cfg.vms.iter().enumerate().filter(|(_, v)| v.vni == s.vni);
                match (ports.next(), ports.next()) {
                    (Some((i, _)), None) => Some(Location::Local(PortId(i as u16 + 1))),
                    _ => None,
                }
            } else {
                Some(Location::Remote(s.vtep))
            };
            if let Some(at) = at {
                fdb.insert(
                    (s.vni, s.mac),
                    FdbEntry {
                        at,
                        last_seen: None,
                    },
                );
            }
            if let Some(ip) = s.ip {
                arp_proxy.insert((s.vni, ip), s.mac);
            }
        }
        let mut l3 = L3::new(
            std::iter::once(Some(cfg.underlay.l3_port()))
                .chain(cfg.vms.iter().map(|_| None))
                .collect(),
        );
        l3.claim_udp(vxlan::PORT);
        VSwitch {
            underlay: cfg.underlay,
            vms: cfg.vms,
            flood: cfg.flood,
            fdb,
            arp_proxy,
            l3,
            aging: cfg.aging,
            max_macs: cfg.max_macs,
            learned: 0,
            deadlines: BinaryHeap::new(),
            scratch: Vec::new(),
            last_now: Instant::ZERO,
            stats: VSwitchStats::default(),
        }
    }

    fn vm(&self, port: PortId) -> Option<&VmPort> {
        port.index().checked_sub(1).and_then(|i| self.vms.get(i))
    }

    /// Learning [RFC 7348 § 4.1; IEEE 802.1D § 7.8], per VNI. Static
    /// entries are the controller's word and are never overwritten.
    fn learn(&mut self, now: Instant, vni: Vni, mac: MacAddr, at: Location) {
        match self.fdb.get_mut(&(vni, mac)) {
            Some(e) if e.last_seen.is_none() => {}
            Some(e) => {
                if e.at != at {
                    tracing::info!(%vni, %mac, from = ?e.at, to = ?at, "station moved");
                    e.at = at;
                    self.stats.moved += 1;
                }
                e.last_seen = Some(now);
            }
            None if self.learned >= self.max_macs => self.stats.refused += 1,
            None => {
                tracing::info!(%vni, %mac, ?at, "learned");
                self.fdb.insert(
                    (vni, mac),
                    FdbEntry {
                        at,
                        last_seen: Some(now),
                    },
                );
                self.learned += 1;
                self.deadlines.push(Reverse((now + self.aging, vni, mac)));
                self.stats.learned += 1;
            }
        }
    }

    fn lookup(&self, now: Instant, vni: Vni, dst: MacAddr) -> Option<Location> {
        if dst.is_multicast() {
            return None;
        }
        match self.fdb.get(&(vni, dst)) {
            Some(FdbEntry {
                at,
                last_seen: None,
            }) => Some(*at),
            Some(FdbEntry {
                at,
                last_seen: Some(t),
            }) if now < *t + self.aging => Some(*at),
            _ => None,
        }
    }

    /// A frame from a VM's TAP: its VNI is the port's.
    fn on_vm_frame(&mut self, cx: &mut Ctx, port: PortId, frame: &[u8], out: &mut Outbox) {
        let now = cx.now;
        let Some(vm) = self.vm(port) else {
            return out.drop_frame(port, DropReason::NoSuchPort);
        };
        let (vni, mtu) = (vm.vni, vm.mtu);
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return out.drop_frame(port, DropReason::Truncated);
        };
        if frame.len() > usize::from(mtu) + ethernet::HEADER_LEN {
            return out.drop_frame(port, DropReason::Oversize);
        }
        if eth.src().is_multicast() {
            return out.drop_frame(port, DropReason::SrcMacMulticast);
        }
        self.learn(now, vni, eth.src(), Location::Local(port));
        if eth.ethertype() == EtherType::Arp && self.answer_arp(vni, port, eth.payload(), out) {
            return;
        }
        let action = match self.lookup(now, vni, eth.dst()) {
            Some(Location::Local(p)) if p == port => Action::Drop(DropReason::SameSegment),
            Some(Location::Local(p)) => Action::Local(p),
            Some(Location::Remote(vtep)) => Action::Tunnel(vtep),
            None => Action::Flood,
        };
        self.apply(cx, action, vni, port, frame, out);
    }

    /// The ARP responder (OpenStack l2population): a request for an address
    /// the topology placed in this VNI is answered here, so it never floods.
    fn answer_arp(&mut self, vni: Vni, port: PortId, payload: &[u8], out: &mut Outbox) -> bool {
        let Ok(arp) = ArpRepr::parse(payload) else {
            return false;
        };
        if arp.op != ArpOp::Request {
            return false;
        }
        let Some(&mac) = self.arp_proxy.get(&(vni, arp.target_ip)) else {
            return false;
        };
        if mac == arp.sender_mac {
            return false; // a probe or gratuitous ARP of the owner itself
        }
        self.stats.arp_proxied += 1;
        out.build(port, |b| arp.reply_from(mac).emit_frame(b));
        true
    }

    fn apply(
        &mut self,
        cx: &mut Ctx,
        action: Action,
        vni: Vni,
        in_port: PortId,
        frame: &[u8],
        out: &mut Outbox,
    ) {
        match action {
            Action::Local(p) => self.deliver(p, frame, in_port, out),
            Action::Tunnel(vtep) => self.encapsulate(cx, vni, vtep, frame, in_port, out),
            Action::Flood => {
                for i in 0..self.vms.len() {
                    let p = PortId(i as u16 + 1);
                    if p != in_port && self.vms[i].vni == vni {
                        self.deliver(p, frame, in_port, out);
                    }
                }
                if in_port != UNDERLAY {
                    let vteps = self.flood.get(&vni).cloned().unwrap_or_default();
                    for vtep in vteps {
                        self.stats.replicated += 1;
                        self.encapsulate(cx, vni, vtep, frame, in_port, out);
                    }
                }
            }
            Action::Drop(r) => out.drop_frame(in_port, r),
        }
    }

    /// Hands `frame` to a VM, if it fits the VM's MTU.
    fn deliver(&self, p: PortId, frame: &[u8], in_port: PortId, out: &mut Outbox) {
        match self.vm(p) {
            Some(vm) if frame.len() <= usize::from(vm.mtu) + ethernet::HEADER_LEN => {
                out.transmit(p, frame);
            }
            Some(_) => out.drop_frame(in_port, DropReason::Oversize),
            None => out.drop_frame(in_port, DropReason::NoSuchPort),
        }
    }

    /// Wraps `frame` in IPv4/UDP/VXLAN to `vtep` [RFC 7348 § 5] and sends it,
    /// or queues it behind an ARP request for the VTEP.
    fn encapsulate(
        &mut self,
        cx: &mut Ctx,
        vni: Vni,
        vtep: Ipv4Addr,
        frame: &[u8],
        in_port: PortId,
        out: &mut Outbox,
    ) {
        let udp_len = 8 + vxlan::HEADER_LEN + frame.len();
        if 20 + udp_len > usize::from(self.underlay.mtu) {
            // A VTEP never fragments [RFC 7348 § 4.3]: the VM's MTU is wrong.
            return out.drop_frame(in_port, DropReason::Oversize);
        }
        let ident = self.l3.next_ident();
        let mut pkt = std::mem::take(&mut self.scratch);
        pkt.clear();
        let me = self.underlay.address.addr();
        emit_vxlan(&mut pkt, me, vtep, ident, vni, frame);
        self.stats.encapsulated += 1;
        self.l3.send_ip(cx, in_port, &pkt, out);
        self.scratch = pkt;
    }

    /// A frame on the underlay: what the VTEP's IP layer does not handle
    /// itself (ARP, ping) is VXLAN to us, or not for a switch.
    fn on_underlay_frame(&mut self, cx: &mut Ctx, frame: &[u8], out: &mut Outbox) {
        match self.l3.input(cx, UNDERLAY, frame, out) {
            Input::Done => {}
            Input::Tunnel { ip, udp, .. } => match vxlan_payload(&udp) {
                Ok((vni, inner)) => self.decapsulate(cx, ip.src(), vni, inner, out),
                Err(r) => out.drop_frame(UNDERLAY, r),
            },
            // A switch routes nothing and runs no services but VXLAN.
            Input::Transit(_) => out.drop_frame(UNDERLAY, DropReason::NotForUs),
            Input::Local(_) => out.drop_frame(UNDERLAY, DropReason::UnsupportedProtocol),
        }
    }

    /// The inner frame of VXLAN from `vtep`, as if it came in on a port of
    /// its VNI [RFC 7348 § 4.1].
    fn decapsulate(
        &mut self,
        cx: &mut Ctx,
        vtep: Ipv4Addr,
        vni: Vni,
        inner: &[u8],
        out: &mut Outbox,
    ) {
        let now = cx.now;
        if !self.vms.iter().any(|vm| vm.vni == vni) {
            return out.drop_frame(UNDERLAY, DropReason::VxlanUnknownVni);
        }
        let Ok(eth) = EthernetFrame::new_checked(inner) else {
            return out.drop_frame(UNDERLAY, DropReason::VxlanInnerTruncated);
        };
        if eth.src().is_multicast() {
            return out.drop_frame(UNDERLAY, DropReason::SrcMacMulticast);
        }
        self.stats.decapsulated += 1;
        self.learn(now, vni, eth.src(), Location::Remote(vtep));
        let action = match self.lookup(now, vni, eth.dst()) {
            Some(Location::Local(p)) => Action::Local(p),
            // The frame's owner is elsewhere: another VTEP's copy of a flood.
            Some(Location::Remote(_)) => Action::Drop(DropReason::SameSegment),
            None => Action::Flood,
        };
        self.apply(cx, action, vni, UNDERLAY, inner, out);
    }
}

/// Appends `frame` in VXLAN with `vni` from the VTEP `src` to `dst`: outer
/// IPv4 with DF (the outer packet is never fragmented [RFC 7348 § 4.3]), UDP
/// from [`flow_port`] to 4789 with a zero checksum ("SHOULD be transmitted
/// as zero" [RFC 7348 § 5]), the VXLAN header.
pub fn emit_vxlan(
    buf: &mut Vec<u8>,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ident: u16,
    vni: Vni,
    frame: &[u8],
) {
    let udp = UdpRepr {
        src_port: flow_port(frame),
        dst_port: vxlan::PORT,
        payload_len: vxlan::HEADER_LEN + frame.len(),
    };
    Ipv4Repr {
        src,
        dst,
        protocol: protocol::UDP,
        ttl: OUTER_TTL,
        ident,
        dont_frag: true,
        payload_len: udp.buffer_len() + udp.payload_len,
    }
    .emit(buf);
    udp.emit(buf);
    VxlanRepr { vni }.emit(buf);
    buf.extend_from_slice(frame);
}

/// The VNI and the inner frame (not yet checked) of a datagram to our
/// VXLAN port, or why it is dropped. A nonzero UDP checksum was verified by
/// the layer; RFC 7348 § 5 lets a receiver accept a zero one.
pub fn vxlan_payload<'a>(udp: &UdpPacket<&'a [u8]>) -> Result<(Vni, &'a [u8]), DropReason> {
    let v = VxlanPacket::new_checked(udp.payload_ref()).map_err(|_| DropReason::VxlanMalformed)?;
    Ok((v.vni(), &udp.payload_ref()[vxlan::HEADER_LEN..]))
}

/// The outer UDP source port: a hash of the inner frame's flow (MACs,
/// EtherType, and for IPv4 the addresses, protocol and ports), folded into
/// the dynamic range, so ECMP in the underlay keeps a flow on one path and
/// spreads different flows [RFC 7348 § 5].
pub fn flow_port(frame: &[u8]) -> u16 {
    let mut h = d11_core::hash::FastHasher::default();
    frame.get(..14).hash(&mut h);
    if let Some(ip) = frame
        .get(14..)
        .filter(|_| frame.get(12..14) == Some(&[0x08, 0x00]))
        .and_then(|p| Ipv4Packet::new_checked(p).ok())
    {
        (ip.src(), ip.dst(), ip.protocol()).hash(&mut h);
        if matches!(ip.protocol(), protocol::TCP | protocol::UDP) && ip.frag_offset() == 0 {
            ip.payload().get(..4).hash(&mut h);
        }
    }
    let x = h.finish();
    SRC_PORT_BASE + ((x ^ (x >> 32)) as u16 % (u16::MAX - SRC_PORT_BASE + 1))
}

impl Role for VSwitch {
    const INFO: RoleInfo = RoleInfo {
        name: "vswitch",
        summary: "a compute host's vSwitch, a VXLAN tunnel endpoint: port 0 is the underlay, the others VMs' TAPs",
        addressing: Addressing::First,
        bridges: false,
        isolates_tenants: true,
        routes: false,
    };
    type Settings = VSwitchSettings;
    fn build(node: &ElementNode, c: VSwitchSettings) -> Result<Box<dyn AnyElement>, ConfigError> {
        Ok(Box::new(VSwitch::new(c.config(node)?)))
    }
}

impl Element for VSwitch {
    fn on_frame(&mut self, cx: &mut Ctx, port: PortId, frame: &[u8], out: &mut Outbox) {
        self.last_now = cx.now;
        if port == UNDERLAY {
            self.on_underlay_frame(cx, frame, out)
        } else {
            self.on_vm_frame(cx, port, frame, out)
        }
    }

    fn on_timer(&mut self, cx: &mut Ctx, out: &mut Outbox) {
        let now = cx.now;
        self.last_now = now;
        self.l3.on_timer(cx, out);
        while let Some(&Reverse((due, vni, mac))) = self.deadlines.peek() {
            if due > now {
                break;
            }
            self.deadlines.pop();
            match self.fdb.get(&(vni, mac)).and_then(|e| e.last_seen) {
                Some(seen) if seen + self.aging > now => {
                    self.deadlines.push(Reverse((seen + self.aging, vni, mac)))
                }
                _ => {
                    if self.fdb.remove(&(vni, mac)).is_some() {
                        tracing::info!(%vni, %mac, "aged out");
                        self.learned -= 1;
                        self.stats.aged += 1;
                    }
                }
            }
        }
    }

    fn poll_at(&self) -> Option<Instant> {
        let fdb = self.deadlines.peek().map(|Reverse((due, _, _))| *due);
        match (fdb, self.l3.poll_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// `fdb`: one row per station (vni, mac, where: a VM port or a VTEP,
    /// static or its age), ordered by VNI then MAC; `vteps`: the flood lists;
    /// `arp`: the underlay's ARP cache; `stats`.
    fn report(&self) -> serde_json::Value {
        let mut rows: Vec<_> = self
            .fdb
            .iter()
            .filter(|(_, e)| {
                e.last_seen
                    .filter(|t| self.last_now >= *t + self.aging)
                    .is_none()
            })
            .collect();
        rows.sort_by_key(|((vni, mac), _)| (*vni, *mac));
        let fdb: Vec<_> = rows
            .into_iter()
            .map(|((vni, mac), e)| {
                let (port, vtep) = match e.at {
                    Location::Local(p) => (self.vm(p).map(|v| v.name.clone()), None),
                    Location::Remote(ip) => (Some(self.underlay.name.clone()), Some(ip)),
                };
                FdbRow {
                    vni: vni.get(),
                    mac: *mac,
                    port,
                    vtep,
                    age_s: e
                        .last_seen
                        .map(|t| self.last_now.saturating_since(t).as_secs_f64()),
                }
            })
            .collect();
        let vteps = (self.flood.iter())
            .map(|(vni, v)| FloodRow {
                vni: vni.get(),
                flood_to: v
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(" "),
            })
            .collect();
        d11_core::report_json(&VSwitchReport {
            fdb,
            vteps,
            arp: self.l3.report().arp,
            stats: self.stats.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use d11_wire::hex;
    use proptest::prelude::*;

    // Host A's vSwitch: underlay 10.0.0.11 (02:..:00:11); port 1 vm-lb
    // (02:00:00:00:01:10, 192.168.1.10, VNI 1001); port 2 vm-other (the same
    // address 192.168.1.10 in VNI 1002, MAC 02:00:00:00:02:10). Host B is
    // 10.0.0.12 (02:..:00:12) with vm-ctl (02:00:00:00:01:20, 192.168.1.20).
    //
    // Made by /usr/bin/python3 with scapy (VXLAN NextProtocol forced to 0):
    // inner = Ether(dst=ctl, src=lb)/IP(src="192.168.1.10", dst="192.168.1.20", id=1, ttl=64)/ICMP(id=1, seq=1)
    // ENCAP = Ether(dst=hb, src=ha)/IP(src="10.0.0.11", dst="10.0.0.12", id=1, ttl=64, flags="DF")/
    //         UDP(sport=52723, dport=4789, chksum=0)/VXLAN(flags=0x08, vni=1001)/inner
    // REPLY_INNER = Ether(dst=lb, src=ctl)/IP(src="192.168.1.20", dst="192.168.1.10", id=2, ttl=64)/ICMP(type=0, id=1, seq=1)
    // REPLY = Ether(dst=ha, src=hb)/IP(src="10.0.0.12", dst="10.0.0.11", id=7, ttl=64, flags="DF")/
    //         UDP(sport=50000, dport=4789, chksum=0)/VXLAN(flags=0x08, vni=1001)/REPLY_INNER
    // ARP_HB = Ether(dst=bcast, src=hb)/ARP(op=1, hwsrc=hb, psrc="10.0.0.12", pdst="10.0.0.11")
    // ARP_HA_REPLY = Ether(dst=hb, src=ha)/ARP(op=2, hwsrc=ha, psrc="10.0.0.11", hwdst=hb, pdst="10.0.0.12")
    const INNER: &str =
        "02000000012002000000011008004500001c000100004001f771c0a8010ac0a801140800f7fd00010001";
    const ENCAP: &str = "02000000001202000000001108004500004e00014000401126880a00000b0a00000ccdf312b5003a0000080000000003e90002000000012002000000011008004500001c000100004001f771c0a8010ac0a801140800f7fd00010001";
    const REPLY_INNER: &str =
        "02000000011002000000012008004500001c000200004001f770c0a80114c0a8010a0000fffd00010001";
    const REPLY: &str = "02000000001102000000001208004500004e00074000401126820a00000c0a00000bc35012b5003a0000080000000003e90002000000011002000000012008004500001c000200004001f770c0a80114c0a8010a0000fffd00010001";
    const ARP_HB: &str =
        "ffffffffffff020000000012080600010800060400010200000000120a00000c0000000000000a00000b";
    const ARP_HA_REPLY: &str =
        "020000000012020000000011080600010800060400020200000000110a00000b0200000000120a00000c";

    const LB_PORT: PortId = PortId(1);
    const OTHER_PORT: PortId = PortId(2);
    const LB: MacAddr = MacAddr([2, 0, 0, 0, 1, 0x10]);
    const CTL: MacAddr = MacAddr([2, 0, 0, 0, 1, 0x20]);
    const OTHER: MacAddr = MacAddr([2, 0, 0, 0, 2, 0x10]);
    const HB: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x12]);

    fn vni(v: u32) -> Vni {
        Vni::new(v).unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn hosta() -> VSwitch {
        VSwitch::new(VSwitchConfig {
            underlay: UnderlayPort {
                name: "underlay".into(),
                mac: MacAddr([2, 0, 0, 0, 0, 0x11]),
                address: "10.0.0.11/24".parse().unwrap(),
                mtu: 1500,
            },
            vms: vec![
                VmPort {
                    name: "lb".into(),
                    vni: vni(1001),
                    mtu: 1450,
                },
                VmPort {
                    name: "other".into(),
                    vni: vni(1002),
                    mtu: 1450,
                },
            ],
            flood: BTreeMap::from([
                (vni(1001), vec![ip("10.0.0.12"), ip("10.0.0.1")]),
                (vni(1002), vec![ip("10.0.0.13")]),
            ]),
            stations: vec![StaticStation {
                vni: vni(1001),
                mac: CTL,
                ip: Some(ip("192.168.1.20")),
                vtep: ip("10.0.0.12"),
            }],
            aging: VSwitchConfig::DEFAULT_AGING,
            max_macs: VSwitchConfig::DEFAULT_MAX_MACS,
        })
    }

    /// Host A after host B's ARP request taught it B's MAC, knowing the
    /// vgw's (10.0.0.1) and the other tenant's VTEP's (10.0.0.13) too.
    fn warm() -> VSwitch {
        let mut s = hosta();
        let mut o = Outbox::new();
        s.on_frame(&mut t(0).into(), UNDERLAY, &hex(ARP_HB), &mut o);
        s.l3.learn(t(0), ip("10.0.0.1"), MacAddr([2, 0, 0, 0, 0, 1]));
        s.l3.learn(t(0), ip("10.0.0.13"), MacAddr([2, 0, 0, 0, 0, 0x13]));
        s
    }

    fn frames(o: &Outbox) -> Vec<(PortId, Vec<u8>)> {
        o.frames().map(|(p, f)| (p, f.to_vec())).collect()
    }

    /// The VNI and the inner frame of an underlay frame we sent.
    fn decap(frame: &[u8]) -> (Ipv4Addr, u32, Vec<u8>) {
        let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        assert!(ip.verify_checksum());
        let v = VxlanPacket::new_checked(&ip.payload()[8..]).unwrap();
        (ip.dst(), v.vni().get(), v.payload().to_vec())
    }

    /// A broadcast ARP request from a VM.
    fn arp_request(mac: MacAddr, from: &str, target: &str) -> Vec<u8> {
        let mut b = vec![];
        ArpRepr::request(mac, ip(from), ip(target)).emit_frame(&mut b);
        b
    }

    /// REPLY with the VXLAN header bytes replaced, lengths kept consistent.
    fn reply_with(flags: u8, vni: u32, inner: &[u8]) -> Vec<u8> {
        let mut f = hex(REPLY)[..50].to_vec();
        f[42] = flags;
        f[46..49].copy_from_slice(&vni.to_be_bytes()[1..]);
        f.extend_from_slice(inner);
        let ip_len = (f.len() - 14) as u16;
        f[16..18].copy_from_slice(&ip_len.to_be_bytes());
        let udp_len = (f.len() - 34) as u16;
        f[38..40].copy_from_slice(&udp_len.to_be_bytes());
        Ipv4Packet::new_checked(&mut f[14..])
            .unwrap()
            .fill_checksum();
        f
    }

    #[test]
    fn underlay_arp_for_our_address_is_answered_with_the_scapy_reply() {
        let mut s = hosta();
        let mut o = Outbox::new();
        s.on_frame(&mut t(0).into(), UNDERLAY, &hex(ARP_HB), &mut o);
        assert_eq!(frames(&o), vec![(UNDERLAY, hex(ARP_HA_REPLY))]);
    }

    #[test]
    fn a_frame_for_a_remote_vm_leaves_in_vxlan_1001_byte_identical_to_scapy() {
        let mut s = warm();
        let mut o = Outbox::new();
        s.on_frame(&mut t(1).into(), LB_PORT, &hex(INNER), &mut o);
        assert_eq!(frames(&o), vec![(UNDERLAY, hex(ENCAP))]);
        assert!(o.drops().is_empty());
    }

    #[test]
    fn the_first_frame_to_a_vtep_waits_for_its_arp_answer() {
        let mut s = hosta();
        let mut o = Outbox::new();
        s.on_frame(&mut t(0).into(), LB_PORT, &hex(INNER), &mut o);
        let f = frames(&o);
        assert_eq!(f.len(), 1);
        let req = ArpRepr::parse(&f[0].1[14..]).unwrap();
        assert_eq!((req.op, req.target_ip), (ArpOp::Request, ip("10.0.0.12")));
        o.clear();
        let mut reply = vec![];
        req.reply_from(HB).emit_frame(&mut reply);
        reply[..6].copy_from_slice(&[2, 0, 0, 0, 0, 0x11]);
        s.on_frame(&mut t(1).into(), UNDERLAY, &reply, &mut o);
        assert_eq!(frames(&o), vec![(UNDERLAY, hex(ENCAP))]);
    }

    #[test]
    fn vxlan_from_host_b_is_delivered_to_the_vm_and_its_source_learned() {
        let mut s = warm();
        let mut o = Outbox::new();
        s.on_frame(&mut t(1).into(), UNDERLAY, &hex(REPLY), &mut o);
        // vm-lb is not learned yet: flooded within VNI 1001 only, never back to the underlay.
        assert_eq!(frames(&o), vec![(LB_PORT, hex(REPLY_INNER))]);
        let r = s.report();
        let ctl = r["fdb"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["mac"] == CTL.to_string())
            .unwrap();
        assert_eq!(ctl["vtep"], "10.0.0.12");
    }

    #[test]
    fn the_same_frames_in_vni_1002_never_reach_the_shop_vm() {
        let mut s = warm();
        let mut o = Outbox::new();
        s.on_frame(&mut t(1).into(), LB_PORT, &hex(INNER), &mut o); // vm-lb learned on port 1
        o.clear();
        // vm-other broadcasts ARP for the same address, and sends to the shop's MACs.
        let mut to_lb = hex(REPLY_INNER);
        to_lb[6..12].copy_from_slice(&OTHER.0);
        let mut spoofed = hex(REPLY_INNER);
        spoofed[6..12].copy_from_slice(&CTL.0);
        for f in [
            arp_request(OTHER, "192.168.1.10", "192.168.1.20"),
            to_lb.clone(),
            spoofed,
        ] {
            s.on_frame(&mut t(2).into(), OTHER_PORT, &f, &mut o);
        }
        for (p, f) in frames(&o) {
            assert_eq!(p, UNDERLAY, "nothing on a local VM port");
            let (dst, v, _) = decap(&f);
            assert_eq!((dst, v), (ip("10.0.0.13"), 1002), "only VNI 1002's VTEPs");
        }
        assert_eq!(o.frames().count(), 3);
        o.clear();
        // VNI 1002 from the underlay addressed to vm-lb's MAC: stays in 1002.
        s.on_frame(
            &mut t(3).into(),
            UNDERLAY,
            &reply_with(0x08, 1002, &to_lb),
            &mut o,
        );
        assert_eq!(frames(&o), vec![(OTHER_PORT, to_lb)]);
        // The spoofed CTL MAC did not move the shop's (static) entry.
        assert_eq!(
            s.lookup(t(3), vni(1001), CTL),
            Some(Location::Remote(ip("10.0.0.12")))
        );
    }

    #[test]
    fn broadcast_is_replicated_to_every_vtep_of_the_vni() {
        let mut s = warm();
        let mut o = Outbox::new();
        let req = arp_request(LB, "192.168.1.10", "192.168.1.99");
        s.on_frame(&mut t(1).into(), LB_PORT, &req, &mut o);
        let copies: Vec<_> = frames(&o).iter().map(|(p, f)| (*p, decap(f))).collect();
        assert_eq!(
            copies,
            vec![
                (UNDERLAY, (ip("10.0.0.12"), 1001, req.clone())),
                (UNDERLAY, (ip("10.0.0.1"), 1001, req.clone())),
            ]
        );
    }

    #[test]
    fn arp_for_a_known_vm_is_answered_locally_in_its_vni_only() {
        let mut s = warm();
        let mut o = Outbox::new();
        s.on_frame(
            &mut t(1).into(),
            LB_PORT,
            &arp_request(LB, "192.168.1.10", "192.168.1.20"),
            &mut o,
        );
        let f = frames(&o);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].0, LB_PORT);
        let a = ArpRepr::parse(&f[0].1[14..]).unwrap();
        assert_eq!(
            (a.op, a.sender_mac, a.sender_ip),
            (ArpOp::Reply, CTL, ip("192.168.1.20"))
        );
        o.clear();
        // The same question in VNI 1002 knows no answer: it floods in 1002.
        s.on_frame(
            &mut t(1).into(),
            OTHER_PORT,
            &arp_request(OTHER, "192.168.1.10", "192.168.1.20"),
            &mut o,
        );
        assert!(frames(&o)
            .iter()
            .all(|(p, f)| *p == UNDERLAY && decap(f).1 == 1002));
    }

    #[test]
    fn bad_vxlan_is_counted_and_forwarding_goes_on() {
        let mut s = warm();
        let mut o = Outbox::new();
        let big = {
            let mut f = hex(REPLY_INNER);
            f.resize(14 + 1451, 0);
            f
        };
        let cases = [
            (
                reply_with(0x00, 1001, &hex(REPLY_INNER)),
                DropReason::VxlanMalformed,
            ),
            (
                reply_with(0x08, 4242, &hex(REPLY_INNER)),
                DropReason::VxlanUnknownVni,
            ),
            (
                reply_with(0x08, 1001, &hex(REPLY_INNER)[..13]),
                DropReason::VxlanInnerTruncated,
            ),
            (reply_with(0x08, 1001, &big), DropReason::Oversize),
            (hex(REPLY)[..40].to_vec(), DropReason::Malformed),
        ];
        for (f, reason) in cases {
            o.clear();
            s.on_frame(&mut t(1).into(), UNDERLAY, &f, &mut o);
            assert_eq!(o.drops(), &[(UNDERLAY, reason)], "{reason:?}");
            assert_eq!(o.frames().count(), 0, "{reason:?}");
        }
        o.clear();
        s.on_frame(&mut t(2).into(), UNDERLAY, &hex(REPLY), &mut o);
        assert_eq!(frames(&o), vec![(LB_PORT, hex(REPLY_INNER))]);
        // A VM frame over its MTU is dropped where it enters.
        o.clear();
        s.on_frame(&mut t(2).into(), LB_PORT, &big, &mut o);
        assert_eq!(o.drops(), &[(LB_PORT, DropReason::Oversize)]);
    }

    #[test]
    fn learned_remote_stations_age_out() {
        let mut s = warm();
        let mut o = Outbox::new();
        let mut from_x = hex(REPLY_INNER);
        from_x[6..12].copy_from_slice(&[2, 0, 0, 0, 1, 0x99]);
        s.on_frame(
            &mut t(1).into(),
            UNDERLAY,
            &reply_with(0x08, 1001, &from_x),
            &mut o,
        );
        let x = MacAddr([2, 0, 0, 0, 1, 0x99]);
        assert_eq!(
            s.lookup(t(2), vni(1001), x),
            Some(Location::Remote(ip("10.0.0.12")))
        );
        let mut now = t(1);
        while let Some(at) = s.poll_at() {
            if at > t(400_000) {
                break;
            }
            now = at;
            s.on_timer(&mut now.into(), &mut o);
        }
        assert_eq!(now, t(300_001));
        assert_eq!(s.lookup(now, vni(1001), x), None);
        assert_eq!(s.stats.aged, 1);
    }

    #[test]
    fn the_outer_source_port_follows_the_inner_flow() {
        let a = hex(INNER);
        let mut b = a.clone();
        b[30..34].copy_from_slice(&[192, 168, 1, 21]);
        assert_eq!(flow_port(&a), flow_port(&a));
        assert_ne!(flow_port(&a), flow_port(&b));
        assert!(flow_port(&[]) >= SRC_PORT_BASE);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(frame in proptest::collection::vec(any::<u8>(), 0..1600), port in 0u16..4) {
            let mut s = warm();
            let mut o = Outbox::new();
            s.on_frame(&mut t(1).into(), PortId(port), &frame, &mut o);
            s.on_timer(&mut t(400_000).into(), &mut o);
        }

        #[test]
        fn mutated_vxlan_never_panics(i in 0usize..92, v in any::<u8>()) {
            let mut s = warm();
            let mut f = hex(REPLY);
            f[i] = v;
            let mut o = Outbox::new();
            s.on_frame(&mut t(1).into(), UNDERLAY, &f, &mut o);
        }
    }
}
