//! The per-hop table behind `d11 trace`: one order's first request segment
//! followed across every wire of a capture, each row checked against what
//! the topology implies and, for a GTP-U tunnel, against the receiving
//! element's bearer table (the bearers the attach made).
//!
//! The segment is found by its bytes: the client's first TLS application
//! data record big enough to be the request (in TLS 1.3 the client's
//! Finished is a smaller record of the same outer type, RFC 8446 § 5.1).
//! Those bytes cross both GTP-U tunnels, both NATs and the L4 proxy
//! unchanged, since the proxy passes TLS through, so every frame whose
//! innermost TCP payload holds them is a hop, wherever it was captured.
//! Headers are decoded with etherparse, and GTP-U (TS 29.281) and VXLAN
//! (RFC 7348) with `d11-wire`.

use crate::topology::{NodeKind, Topology, WireEnd};
use d11_wire::gtpu::{GtpuPacket, MessageType};
use d11_wire::vxlan::VxlanPacket;
use d11_wire::MacAddr;
use etherparse::{LinkSlice, NetSlice, SlicedPacket, TransportSlice};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};

/// GTP-U's UDP port (TS 29.281 § 4.4.2.3) and VXLAN's (RFC 7348 § 5).
const GTPU_PORT: u16 = 2152;
const VXLAN_PORT: u16 = 4789;
/// TLS record type `application_data` (RFC 8446 § 5.1).
const TLS_APPLICATION_DATA: u8 = 23;
/// Smaller client records are the TLS 1.3 Finished; the request is bigger.
const MIN_REQUEST_RECORD: usize = 100;
/// Bytes of the request record that identify it on every wire.
const SIGNATURE_LEN: usize = 32;

/// One captured frame: the pcapng interface it came in on (`node:port`).
#[derive(Debug, Clone)]
pub struct Frame {
    pub wire: String,
    pub ts_ns: u64,
    pub data: Vec<u8>,
}

impl Frame {
    /// The IPv4 packet an untagged Ethernet frame carries, checked.
    pub fn ipv4(&self) -> Option<d11_wire::ipv4::Ipv4Packet<&[u8]>> {
        let eth = d11_wire::ethernet::EthernetFrame::new_checked(&self.data[..]).ok()?;
        if eth.ethertype() != d11_wire::ethernet::EtherType::Ipv4 {
            return None;
        }
        d11_wire::ipv4::Ipv4Packet::new_checked(&self.data[d11_wire::ethernet::HEADER_LEN..]).ok()
    }
}

/// The tunnel a hop's packet rides in, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tunnel {
    Gtpu { teid: u32 },
    Vxlan { vni: u32 },
}

/// One layer of addresses: MACs or IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair<T> {
    pub src: T,
    pub dst: T,
}

/// The decoded header stack of one frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stack {
    pub eth: Pair<MacAddr>,
    /// The tunnel's outer IP header, when there is a tunnel.
    pub outer_ip: Option<Pair<Ipv4Addr>>,
    pub tunnel: Option<Tunnel>,
    /// The VM's own Ethernet header inside VXLAN.
    pub inner_eth: Option<Pair<MacAddr>>,
    pub ip: Pair<Ipv4Addr>,
    pub ttl: u8,
    pub ports: Pair<u16>,
    pub seq: u32,
    #[serde(skip)]
    pub payload: Vec<u8>,
}

/// One row of the table: where the segment was seen, its headers, the
/// checks against the topology, and the route the router before it used.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hop {
    pub wire: String,
    pub ts_ns: u64,
    #[serde(flatten)]
    pub stack: Stack,
    pub checks: Vec<Check>,
    /// Filled by [`HopRoute::lookup`] for a hop a router forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<HopRoute>,
}

/// The route a router used for a hop's packet: its FIB's longest match for
/// the destination and, for a BGP route, the Loc-RIB's best path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HopRoute {
    pub router: String,
    pub prefix: d11_wire::Ipv4Cidr,
    pub via: Option<Ipv4Addr>,
    pub source: d11_core::l3::RouteSource,
    /// A BGP route's AS_PATH and the neighbour it was learned from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learned_from: Option<String>,
}

impl HopRoute {
    /// The route `router` (whose report is `report`) has to `dst`.
    pub fn lookup(
        router: &str,
        report: &d11_elements::router::RouterReport,
        dst: Ipv4Addr,
    ) -> Option<HopRoute> {
        let f = report
            .l3
            .fib
            .iter()
            .filter(|r| r.prefix.contains(dst))
            .max_by_key(|r| r.prefix.prefix_len())?;
        let best = report
            .rib
            .iter()
            .flatten()
            .find(|r| r.best && r.prefix == f.prefix)
            .filter(|_| f.source == d11_core::l3::RouteSource::Bgp);
        Some(HopRoute {
            router: router.to_string(),
            prefix: f.prefix,
            via: f.via,
            source: f.source,
            as_path: best.map(|b| b.as_path.clone()),
            learned_from: best.map(|b| b.from.clone()),
        })
    }
}

impl std::fmt::Display for HopRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match self.source {
            d11_core::l3::RouteSource::Connected => "connected",
            d11_core::l3::RouteSource::Static => "static",
            d11_core::l3::RouteSource::Bgp => "BGP",
        };
        write!(f, "{}'s route {} ", self.router, self.prefix)?;
        match self.via {
            Some(v) => write!(f, "via {v} ({source}")?,
            None => write!(f, "({source}")?,
        }
        if let Some(p) = &self.as_path {
            write!(f, ", AS_PATH {p}")?;
        }
        if let Some(n) = &self.learned_from {
            write!(f, ", learned from {n}")?;
        }
        write!(f, ")")
    }
}

/// The router (role `router`) that forwarded `hop`'s packet after `prev`:
/// the node both wires share.
pub fn router_between(topo: &Topology, prev: &Hop, hop: &Hop) -> Option<String> {
    let node = shared_node(topo, &prev.wire, &hop.wire)?;
    let n = topo.node(&node)?;
    topo.role(n)
        .is_some_and(|r| r.info.name == "router")
        .then_some(node)
}

impl Hop {
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }
}

/// One thing the topology implies about a hop, and whether it held.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub ok: bool,
    pub what: String,
}

/// Decodes a frame down to its innermost IPv4/TCP, through GTP-U and VXLAN.
/// `None` for anything else (ARP, UDP that is not a tunnel, ICMP, …).
pub fn decode(frame: &[u8]) -> Option<Stack> {
    let i = innermost(frame)?;
    tcp_stack(i.eth, i.tunnel, &i.packet)
}

/// A frame opened down to its innermost packet: the outer MACs, the
/// tunnel it rode in (with the outer IPs) and the packet inside it, or the
/// frame itself when there is no tunnel.
pub struct Innermost<'a> {
    pub eth: Pair<MacAddr>,
    pub tunnel: Option<(Pair<Ipv4Addr>, Tunnel)>,
    pub packet: SlicedPacket<'a>,
}

impl<'a> Innermost<'a> {
    /// The innermost IPv4 addresses and TCP header, if that is what it is.
    pub fn tcp(&self) -> Option<(Pair<Ipv4Addr>, &etherparse::TcpSlice<'a>)> {
        let (ip, _) = ipv4(&self.packet.net)?;
        match &self.packet.transport {
            Some(TransportSlice::Tcp(tcp)) => Some((ip, tcp)),
            _ => None,
        }
    }
}

/// Opens `frame` through GTP-U (TS 29.281) and VXLAN (RFC 7348); `None`
/// when it is not Ethernet or a tunnel's header is broken.
pub fn innermost(frame: &[u8]) -> Option<Innermost<'_>> {
    let outer = SlicedPacket::from_ethernet(frame).ok()?;
    let eth = macs(&outer.link)?;
    let Some(TransportSlice::Udp(udp)) = outer.transport.as_ref() else {
        return Some(Innermost {
            eth,
            tunnel: None,
            packet: outer,
        });
    };
    let (ip, _) = ipv4(&outer.net)?;
    // The tunnel's payload as a slice of the frame, not of the view.
    let b = udp.payload();
    let (tunnel, packet) = match (udp.source_port(), udp.destination_port()) {
        (_, GTPU_PORT) | (GTPU_PORT, _) => {
            let g = GtpuPacket::new_checked(b).ok()?;
            if g.message_type() != MessageType::GPdu {
                return None;
            }
            let tunnel = Tunnel::Gtpu { teid: g.teid().0 };
            (tunnel, SlicedPacket::from_ip(&b[g.header_len()..]).ok()?)
        }
        (_, VXLAN_PORT) => {
            let v = VxlanPacket::new_checked(b).ok()?;
            let tunnel = Tunnel::Vxlan { vni: v.vni().get() };
            let inner = &b[b.len() - v.payload().len()..];
            (tunnel, SlicedPacket::from_ethernet(inner).ok()?)
        }
        _ => {
            return Some(Innermost {
                eth,
                tunnel: None,
                packet: outer,
            })
        }
    };
    Some(Innermost {
        eth,
        tunnel: Some((ip, tunnel)),
        packet,
    })
}

/// The stack of `packet`'s IPv4/TCP, seen in a frame from `eth`, inside
/// `tunnel` between outer addresses if it rode in one.
fn tcp_stack(
    eth: Pair<MacAddr>,
    tunnel: Option<(Pair<Ipv4Addr>, Tunnel)>,
    packet: &SlicedPacket<'_>,
) -> Option<Stack> {
    let (ip, ttl) = ipv4(&packet.net)?;
    let Some(TransportSlice::Tcp(tcp)) = &packet.transport else {
        return None;
    };
    Some(Stack {
        eth,
        outer_ip: tunnel.map(|(o, _)| o),
        tunnel: tunnel.map(|(_, t)| t),
        inner_eth: tunnel.and_then(|_| macs(&packet.link)),
        ip,
        ttl,
        ports: Pair {
            src: tcp.source_port(),
            dst: tcp.destination_port(),
        },
        seq: tcp.sequence_number(),
        payload: tcp.payload().to_vec(),
    })
}

fn macs(link: &Option<LinkSlice<'_>>) -> Option<Pair<MacAddr>> {
    match link {
        Some(LinkSlice::Ethernet2(e)) => Some(Pair {
            src: MacAddr(e.source()),
            dst: MacAddr(e.destination()),
        }),
        _ => None,
    }
}

fn ipv4(net: &Option<NetSlice<'_>>) -> Option<(Pair<Ipv4Addr>, u8)> {
    match net {
        Some(NetSlice::Ipv4(v4)) => {
            let h = v4.header();
            Some((
                Pair {
                    src: h.source_addr(),
                    dst: h.destination_addr(),
                },
                h.ttl(),
            ))
        }
        _ => None,
    }
}

/// The first bytes of the first TLS record from `client` to `server` (as
/// the client addressed it, before any NAT) that is application data big
/// enough to be the request: what every hop carries. The phone's other
/// connections (its HTTPDNS lookup, also to port 443) are not it.
pub fn request_signature(
    frames: &[Frame],
    client: SocketAddrV4,
    server: SocketAddrV4,
) -> Option<Vec<u8>> {
    frames.iter().find_map(|f| {
        let s = decode(&f.data)?;
        if (s.ip.src, s.ports.src) != (*client.ip(), client.port())
            || (s.ip.dst, s.ports.dst) != (*server.ip(), server.port())
        {
            return None;
        }
        let mut rest = &s.payload[..];
        while rest.len() >= 5 {
            let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
            if rest[0] == TLS_APPLICATION_DATA && len >= MIN_REQUEST_RECORD {
                return (rest.len() >= SIGNATURE_LEN).then(|| rest[..SIGNATURE_LEN].to_vec());
            }
            rest = rest.get(5 + len..)?;
        }
        None
    })
}

/// Every frame carrying `signature`, in time order; the same bytes seen
/// again on one wire (a retransmission) count once.
pub fn follow(frames: &[Frame], signature: &[u8]) -> Vec<Hop> {
    let mut seen: BTreeSet<(String, Vec<u8>)> = BTreeSet::new();
    let mut hops: Vec<Hop> = frames
        .iter()
        .filter_map(|f| {
            let stack = decode(&f.data)?;
            let carries = stack
                .payload
                .windows(signature.len())
                .any(|w| w == signature);
            (carries && seen.insert((f.wire.clone(), f.data.clone()))).then(|| Hop {
                wire: f.wire.clone(),
                ts_ns: f.ts_ns,
                stack,
                checks: Vec::new(),
                route: None,
            })
        })
        .collect();
    hops.sort_by_key(|h| h.ts_ns);
    hops
}

/// Each GTP-U element's bearers, by node (its control socket's
/// `table bearers`): the TEIDs it receives on are there.
pub type BearerTables = std::collections::BTreeMap<String, Vec<d11_elements::bearer::Bearer>>;

/// Whether `teid` is one of `node`'s bearers' TEIDs.
fn has_teid(bearers: &BearerTables, node: &str, teid: u32) -> bool {
    bearers.get(node).is_some_and(|bs| {
        bs.iter().any(|b| {
            [b.enb_teid, b.sgw_s1u_teid, b.sgw_s5_teid, b.pgw_teid]
                .iter()
                .any(|t| t.0 == teid)
        })
    })
}

/// Fills each hop's checks with what `topo` implies; a GTP-U tunnel's TEID
/// with the receiver's bearer table in `bearers`.
pub fn check(topo: &Topology, bearers: &BearerTables, hops: &mut [Hop]) {
    let known_macs = known_macs(topo);
    for i in 0..hops.len() {
        let (before, rest) = hops.split_at_mut(i);
        let hop = &mut rest[0];
        let prev = before.last();
        let mut checks = Vec::new();
        let Some((a, b)) = wire_ends(topo, &hop.wire) else {
            checks.push(fail(format!("{} is not a wire of the topology", hop.wire)));
            hop.checks = checks;
            continue;
        };
        let s = &hop.stack;
        // Outer Ethernet: the two ends of a plain cable, else MACs the lab has.
        let ends = [port_mac(topo, &a), port_mac(topo, &b)];
        if plain_cable(topo, &a, &b) {
            checks.push(verdict(
                ends.contains(&Some(s.eth.src)) && ends.contains(&Some(s.eth.dst)),
                format!("MACs {} → {} are the wire's ends", s.eth.src, s.eth.dst),
            ));
        } else {
            checks.push(verdict(
                known_macs.contains(&s.eth.src) && known_macs.contains(&s.eth.dst),
                format!("MACs {} → {} belong to the lab", s.eth.src, s.eth.dst),
            ));
        }
        if let Some(ip) = s.outer_ip {
            let addrs = port_addresses(topo);
            checks.push(verdict(
                addrs.contains(&ip.src) && addrs.contains(&ip.dst),
                format!("tunnel ends {} → {} are element ports", ip.src, ip.dst),
            ));
            let receiver = node_with_address(topo, ip.dst);
            match (s.tunnel, receiver) {
                (Some(Tunnel::Gtpu { teid }), Some(n)) => checks.push(verdict(
                    has_teid(bearers, &n.name, teid),
                    format!("TEID {teid:#x} is a bearer of {}", n.name),
                )),
                (Some(Tunnel::Vxlan { vni }), Some(n)) => checks.push(verdict(
                    config_numbers(&n.config, "vni").contains(&u64::from(vni)),
                    format!("VNI {vni} is a tenant of {}", n.name),
                )),
                _ => checks.push(fail(format!("no element owns tunnel end {}", ip.dst))),
            }
        }
        if let Some(p) = prev {
            checks.extend(check_step(topo, p, hop));
        }
        hop.checks = checks;
    }
}

/// What happened between two consecutive hops, judged by the node they
/// share: TTL, and address rewrites only where a NAT is.
fn check_step(topo: &Topology, p: &Hop, h: &Hop) -> Vec<Check> {
    let mut out = Vec::new();
    let Some(node) = shared_node(topo, &p.wire, &h.wire) else {
        return out;
    };
    let Some(n) = topo.node(&node) else {
        return out;
    };
    if n.kind == NodeKind::Host {
        // A proxy: a new TCP connection from the host itself.
        let own = n.ports.iter().filter_map(|pt| pt.address.map(|a| a.addr()));
        let from_proxy = own.clone().any(|a| a == h.stack.ip.src);
        out.push(verdict(
            from_proxy && h.stack.ttl == 64,
            format!(
                "{node} opened a new connection from {} with TTL {}",
                h.stack.ip.src, h.stack.ttl
            ),
        ));
        return out;
    }
    let role = topo.role(n);
    let routes = role.is_some_and(|r| r.info.routes);
    // What the hop's NAT, if it has one, may rewrite addresses to.
    let rewrites = role
        .zip(topo.element(&node))
        .map(|(r, e)| r.rewrites(&e.node()))
        .unwrap_or_default();
    let want = if routes {
        p.stack.ttl.wrapping_sub(1)
    } else {
        p.stack.ttl
    };
    out.push(verdict(
        h.stack.ttl == want,
        format!(
            "TTL {} after {node} ({})",
            h.stack.ttl,
            if routes {
                "routes: -1"
            } else {
                "does not route"
            }
        ),
    ));
    if h.stack.ip.src != p.stack.ip.src {
        let pool = rewrites.sources.first();
        out.push(verdict(
            rewrites.sources.iter().any(|c| c.contains(h.stack.ip.src)),
            format!(
                "source {} → {} by {node}'s NAT{}",
                p.stack.ip.src,
                h.stack.ip.src,
                pool.map(|c| format!(" (pool {c})")).unwrap_or_default()
            ),
        ));
    }
    if h.stack.ip.dst != p.stack.ip.dst {
        out.push(verdict(
            rewrites
                .destinations
                .iter()
                .any(|c| c.contains(h.stack.ip.dst)),
            format!(
                "destination {} → {} by {node}'s DNAT",
                p.stack.ip.dst, h.stack.ip.dst
            ),
        ));
    }
    out
}

fn verdict(ok: bool, what: String) -> Check {
    Check { ok, what }
}

fn fail(what: String) -> Check {
    verdict(false, what)
}

fn wire_ends(topo: &Topology, label: &str) -> Option<(WireEnd, WireEnd)> {
    let end: WireEnd = label.parse().ok()?;
    let peer = topo.peer(&end)?.clone();
    Some((end, peer))
}

/// The node two wires have in common.
fn shared_node(topo: &Topology, a: &str, b: &str) -> Option<String> {
    let (a1, a2) = wire_ends(topo, a)?;
    let (b1, b2) = wire_ends(topo, b)?;
    [a1.node, a2.node]
        .into_iter()
        .find(|n| *n == b1.node || *n == b2.node)
}

fn port_mac(topo: &Topology, e: &WireEnd) -> Option<MacAddr> {
    topo.node(&e.node)?.port(&e.port).map(|p| p.mac(&e.node))
}

/// A veth between two nodes that each own their MAC on it: not a TAP (the
/// element there speaks for others), not a bridging element.
fn plain_cable(topo: &Topology, a: &WireEnd, b: &WireEnd) -> bool {
    [a, b].iter().all(|e| {
        topo.node(&e.node).is_some_and(|n| {
            n.kind == NodeKind::Element && !topo.role(n).is_some_and(|r| r.info.bridges)
                || n.kind == NodeKind::Host
                    && topo
                        .peer(e)
                        .and_then(|p| topo.node(&p.node))
                        .is_some_and(|p| p.kind == NodeKind::Host)
        })
    })
}

/// Every MAC the topology gives a port or names in an element's settings
/// (the enb's gateway MAC, the VPC router's MAC, pushed FDB entries).
fn known_macs(topo: &Topology) -> BTreeSet<MacAddr> {
    let mut m = BTreeSet::new();
    for n in &topo.nodes {
        m.extend(n.ports.iter().map(|p| p.mac(&n.name)));
        let mut strings = Vec::new();
        walk_strings(&toml::Value::Table(n.config.clone()), None, &mut |_, s| {
            strings.push(s.to_string())
        });
        m.extend(strings.iter().filter_map(|s| s.parse::<MacAddr>().ok()));
    }
    m
}

fn port_addresses(topo: &Topology) -> BTreeSet<Ipv4Addr> {
    topo.nodes
        .iter()
        .flat_map(|n| n.ports.iter().filter_map(|p| p.address.map(|a| a.addr())))
        .collect()
}

fn node_with_address(topo: &Topology, ip: Ipv4Addr) -> Option<&crate::topology::Node> {
    topo.nodes.iter().find(|n| {
        n.ports
            .iter()
            .any(|p| p.address.is_some_and(|a| a.addr() == ip))
    })
}

/// Every integer under a key named `key`, at any depth of a config table.
fn config_numbers(config: &toml::Table, key: &str) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    walk(&toml::Value::Table(config.clone()), None, &mut |k, v| {
        if let (Some(k), toml::Value::Integer(i)) = (k, v) {
            if k == key || k.ends_with(&format!("_{key}")) {
                out.insert(*i as u64);
            }
        }
    });
    out
}

fn walk<'a>(
    v: &'a toml::Value,
    key: Option<&'a str>,
    f: &mut impl FnMut(Option<&'a str>, &'a toml::Value),
) {
    f(key, v);
    match v {
        toml::Value::Table(t) => t.iter().for_each(|(k, v)| walk(v, Some(k), f)),
        toml::Value::Array(a) => a.iter().for_each(|v| walk(v, key, f)),
        _ => {}
    }
}

fn walk_strings<'a>(
    v: &'a toml::Value,
    key: Option<&'a str>,
    f: &mut impl FnMut(Option<&'a str>, &'a str),
) {
    walk(v, key, &mut |k, v| {
        if let toml::Value::String(s) = v {
            f(k, s)
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use d11_wire::hex;

    // /usr/bin/python3 with scapy (scapy.contrib.gtp, scapy.layers.vxlan), one
    // TCP segment whose payload is a 120-byte TLS application data record
    // (17 03 03 00 78, then bytes 0..119), seen on three wires:
    // RADIO: Ether()/IP(src="10.45.0.2", dst="203.0.113.24", ttl=64)/TCP(sport=40000, dport=443, seq=1000)
    // S1U:   Ether()/IP(172.16.1.1 → 172.16.1.2)/UDP(2152, 2152)/GTP_U_Header(teid=0x200, gtp_type=255)/<the RADIO packet>
    // VXLAN: Ether()/IP(10.0.0.1 → 10.0.0.11)/UDP(51234, 4789)/VXLAN(vni=1001)/
    //        Ether(02:00:00:00:0a:01 → 02:00:00:00:01:10)/IP(198.51.100.139 → 192.168.1.10, ttl=58)/TCP(40000 → 443)
    const RADIO: &str = "02ce56e043d90230e092c6780800450000a5000100004006340b0a2d0002cb0071189c4001bb000003e80000000050182000f73e00001703030078000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f606162636465666768696a6b6c6d6e6f7071727374757677";
    const S1U: &str = "02d8f18b58cf024310d166cb0800450000c90001000040112000ac100101ac1001020868086800b5a6cb30ff00a500000200450000a5000100004006340b0a2d0002cb0071189c4001bb000003e80000000050182000f73e00001703030078000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f606162636465666768696a6b6c6d6e6f7071727374757677";
    const VXLAN: &str = "0200000000110200000000010800450000d7000100004011660a0a0000010a00000bc82212b500c3f478080000000003e900020000000110020000000a010800450000a5000100003a0693e1c633648bc0a8010a9c4001bb000003e80000000050182000511500001703030078000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f606162636465666768696a6b6c6d6e6f7071727374757677";

    fn frame(wire: &str, ts_ns: u64, h: &str) -> Frame {
        Frame {
            wire: wire.into(),
            ts_ns,
            data: hex(h),
        }
    }

    #[test]
    fn decodes_plain_gtpu_and_vxlan_stacks_as_scapy_built_them() {
        let r = decode(&hex(RADIO)).unwrap();
        assert_eq!(r.eth.src, "02:30:e0:92:c6:78".parse().unwrap());
        assert_eq!((r.outer_ip, r.tunnel, r.inner_eth), (None, None, None));
        assert_eq!(r.ip.src, Ipv4Addr::new(10, 45, 0, 2));
        assert_eq!(
            (r.ttl, r.ports.src, r.ports.dst, r.seq),
            (64, 40000, 443, 1000)
        );

        let g = decode(&hex(S1U)).unwrap();
        assert_eq!(g.tunnel, Some(Tunnel::Gtpu { teid: 0x200 }));
        assert_eq!(g.outer_ip.unwrap().dst, Ipv4Addr::new(172, 16, 1, 2));
        assert_eq!(
            (g.ip, g.ttl, g.payload.clone()),
            (r.ip, 64, r.payload.clone())
        );

        let v = decode(&hex(VXLAN)).unwrap();
        assert_eq!(v.tunnel, Some(Tunnel::Vxlan { vni: 1001 }));
        assert_eq!(
            v.inner_eth.unwrap().dst,
            "02:00:00:00:01:10".parse().unwrap()
        );
        assert_eq!((v.ip.dst, v.ttl), (Ipv4Addr::new(192, 168, 1, 10), 58));
        assert_eq!(v.payload, r.payload);

        // Truncated anywhere: no stack, no panic.
        let bytes = hex(VXLAN);
        for n in 0..bytes.len() - 120 {
            assert!(decode(&bytes[..n]).is_none(), "{n}");
        }
    }

    #[test]
    fn the_request_record_is_found_and_followed_in_time_order() {
        let frames = [
            frame("vgw:underlay", 30, VXLAN),
            frame("ue:eth0", 10, RADIO),
            frame("enb:s1u", 20, S1U),
            // The same bytes again on one wire: a retransmission, once.
            frame("enb:s1u", 25, S1U),
        ];
        let at = |ip: [u8; 4], port| SocketAddrV4::new(ip.into(), port);
        let (phone, shop) = (at([10, 45, 0, 2], 40000), at([203, 0, 113, 24], 443));
        let sig = request_signature(&frames, phone, shop).unwrap();
        assert_eq!(&sig[..5], &[0x17, 3, 3, 0, 0x78]);
        assert_eq!(
            request_signature(&frames, at([10, 45, 0, 3], 40000), shop),
            None
        );
        assert_eq!(
            request_signature(&frames, at([10, 45, 0, 2], 40001), shop),
            None
        );
        // Another server on 443 (HTTPDNS): not the order.
        let httpdns = at([198, 18, 1, 18], 443);
        assert_eq!(request_signature(&frames, phone, httpdns), None);
        let hops = follow(&frames, &sig);
        let wires: Vec<&str> = hops.iter().map(|h| h.wire.as_str()).collect();
        assert_eq!(wires, ["ue:eth0", "enb:s1u", "vgw:underlay"]);
    }

    fn story() -> Topology {
        let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../../netns/double11.toml");
        Topology::load(std::path::Path::new(file)).unwrap()
    }

    /// The sgw's bearer table as the phone's attach leaves it: TEIDs 0x100
    /// (enb), 0x200 (sgw S1-U), 0x300 (sgw S5), 0x400 (pgw).
    fn tables() -> BearerTables {
        let b = d11_elements::bearer::Bearer {
            imsi: "001010000000001".into(),
            ue_ip: Ipv4Addr::new(10, 45, 0, 2),
            enb_teid: d11_wire::gtpu::Teid(0x100),
            sgw_s1u_teid: d11_wire::gtpu::Teid(0x200),
            sgw_s5_teid: d11_wire::gtpu::Teid(0x300),
            pgw_teid: d11_wire::gtpu::Teid(0x400),
        };
        ["enb", "sgw", "pgw"]
            .into_iter()
            .map(|n| (n.to_string(), vec![b.clone()]))
            .collect()
    }

    fn checked(topo: &Topology, stacks: &[(&str, Stack)]) -> Vec<Hop> {
        let mut hops: Vec<Hop> = stacks
            .iter()
            .enumerate()
            .map(|(i, (w, s))| Hop {
                wire: w.to_string(),
                ts_ns: i as u64,
                stack: s.clone(),
                checks: Vec::new(),
                route: None,
            })
            .collect();
        check(topo, &tables(), &mut hops);
        hops
    }

    #[test]
    fn rows_are_checked_against_the_topology_and_a_wrong_one_is_marked() {
        let topo = story();
        let mac = |n: &str, p: &str| topo.node(n).unwrap().port(p).unwrap().mac(n);
        let sgi = Stack {
            eth: Pair {
                src: mac("pgw", "sgi"),
                dst: mac("a2", "sgi"),
            },
            outer_ip: None,
            tunnel: None,
            inner_eth: None,
            ip: Pair {
                src: Ipv4Addr::new(198, 51, 100, 139),
                dst: Ipv4Addr::new(203, 0, 113, 24),
            },
            ttl: 63,
            ports: Pair {
                src: 40000,
                dst: 443,
            },
            seq: 1,
            payload: Vec::new(),
        };
        let a2c1 = Stack {
            eth: Pair {
                src: mac("a2", "a2c1"),
                dst: mac("c1", "c1a2"),
            },
            ttl: 62,
            ..sgi.clone()
        };
        let good = checked(
            &topo,
            &[("pgw:sgi", sgi.clone()), ("a2:a2c1", a2c1.clone())],
        );
        assert!(good.iter().all(Hop::ok), "{good:#?}");

        // a2 routes, so the TTL must drop; and a2 has no NAT.
        let kept_ttl = Stack {
            ttl: 63,
            ..a2c1.clone()
        };
        let bad = checked(&topo, &[("pgw:sgi", sgi.clone()), ("a2:a2c1", kept_ttl)]);
        assert!(!bad[1].ok());
        assert!(bad[1]
            .checks
            .iter()
            .any(|c| !c.ok && c.what.contains("TTL 63 after a2")));
        let rewritten = Stack {
            ip: Pair {
                src: Ipv4Addr::new(198, 51, 100, 140),
                ..a2c1.ip
            },
            ..a2c1.clone()
        };
        let bad = checked(&topo, &[("pgw:sgi", sgi.clone()), ("a2:a2c1", rewritten)]);
        assert!(bad[1]
            .checks
            .iter()
            .any(|c| !c.ok && c.what.contains("a2's NAT")));
        // A MAC that is not one of the cable's ends.
        let stranger = Stack {
            eth: Pair {
                src: "02:00:00:00:99:99".parse().unwrap(),
                ..a2c1.eth
            },
            ..a2c1
        };
        let bad = checked(&topo, &[("a2:a2c1", stranger)]);
        assert!(!bad[0].ok());
        // A tunnel with a TEID no bearer of the receiver has.
        let s1u = decode(&hex(S1U)).unwrap();
        let ok = checked(&topo, &[("enb:s1u", s1u.clone())]);
        assert!(
            ok[0]
                .checks
                .iter()
                .any(|c| c.ok && c.what.contains("TEID 0x200")),
            "{ok:#?}"
        );
        let wrong = Stack {
            tunnel: Some(Tunnel::Gtpu { teid: 0x999 }),
            ..s1u
        };
        assert!(!checked(&topo, &[("enb:s1u", wrong)])[0].ok());
    }
}
