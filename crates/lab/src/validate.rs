//! The rules a topology must follow before any namespace is built. Each
//! broken rule is one [`TopologyError`] naming the key at fault; the first
//! one found is reported. `docs/topology.md` lists them for users.

use crate::names::{is_simple_name, MAX_NODE_NAME};
use crate::topology::{NodeKind, Topology, TopologyError, WireEnd};
use d11_wire::{Ipv4Cidr, MacAddr};
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

/// The host app that addresses its own port (the phone's baseband: the
/// address of its attach), so its port is written without one.
const ADDRESSES_ITS_PORT: &str = "baseband";

/// Smallest IPv4 MTU [RFC 791] and the largest jumbo frame the lab allows.
const MTU_RANGE: std::ops::RangeInclusive<u16> = 68..=9000;

/// Longest Linux interface name (`IFNAMSIZ` − 1).
const MAX_IFNAME: usize = 15;

/// Interface names every namespace already uses (`lo`) or that clash with
/// `/proc/sys/net/ipv4/conf/{all,default}`.
const RESERVED_IFNAMES: [&str; 3] = ["lo", "all", "default"];

fn port_key(i: usize, j: usize) -> String {
    format!("nodes[{i}].ports[{j}]")
}

fn is_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_IFNAME
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
}

/// RFC 1123 § 2.1 host names: dot-separated labels of letters, digits and
/// inner hyphens, each 1–63 bytes, 253 in all.
fn is_hostname(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Why `a` cannot be an interface address, if it cannot.
fn unusable_address(c: &Ipv4Cidr) -> Option<String> {
    let a = c.addr();
    let o = a.octets();
    if a.is_loopback() {
        Some(format!("{a} is a loopback address (127.0.0.0/8)"))
    } else if a.is_multicast() {
        Some(format!("{a} is a multicast address (224.0.0.0/4)"))
    } else if o[0] == 0 {
        Some(format!(
            "{a} is in 0.0.0.0/8 (\"this network\"), not an interface address"
        ))
    } else if o[0] >= 240 {
        Some(format!(
            "{a} is reserved (240.0.0.0/4 and the limited broadcast)"
        ))
    } else if c.prefix_len() == 0 {
        Some(format!(
            "{c}: a /0 subnet holds every address; give the port its own subnet"
        ))
    } else if c.prefix_len() < 31 && a == c.network().addr() {
        Some(format!("{a} is the network address of {}", c.network()))
    } else if c.prefix_len() < 31 && a == c.broadcast() {
        Some(format!("{a} is the broadcast address of {}", c.network()))
    } else {
        None
    }
}

/// Disjoint sets over port indices: the L2 segments of the lab.
struct Segments {
    parent: Vec<usize>,
}

impl Segments {
    fn new(n: usize) -> Segments {
        Segments {
            parent: (0..n).collect(),
        }
    }
    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }
    fn join(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        self.parent[a] = b;
    }
}

type PortIndex<'a> = HashMap<(&'a str, &'a str), usize>;

impl Topology {
    /// The L2 segments: every port numbered in node order (`index`), joined
    /// across wires and through bridging roles. Needs the wires checked.
    fn segments(&self) -> (PortIndex<'_>, Segments) {
        let mut index: PortIndex<'_> = HashMap::new();
        for n in &self.nodes {
            for p in &n.ports {
                let next = index.len();
                index.insert((&n.name, &p.name), next);
            }
        }
        let mut seg = Segments::new(index.len());
        for w in &self.wires {
            let a = index[&(w.a.node.as_str(), w.a.port.as_str())];
            let b = index[&(w.b.node.as_str(), w.b.port.as_str())];
            seg.join(a, b);
        }
        for n in &self.nodes {
            if self.role(n).is_some_and(|r| r.info.bridges) {
                let first = index[&(n.name.as_str(), n.ports[0].name.as_str())];
                for p in &n.ports[1..] {
                    seg.join(first, index[&(n.name.as_str(), p.name.as_str())]);
                }
            }
        }
        (index, seg)
    }

    /// Checks every rule of `docs/topology.md`; the first broken one is the error.
    pub fn validate(&self) -> Result<(), TopologyError> {
        self.check_nodes()?;
        self.check_ports()?;
        self.check_wires()?;
        self.check_addresses()?;
        self.check_routes()?;
        self.check_pki()?;
        self.check_segments()
    }

    fn check_pki(&self) -> Result<(), TopologyError> {
        let Some(pki) = &self.pki else { return Ok(()) };
        if pki.names.is_empty() {
            return Err(self.error_at(
                "pki.names",
                "the server certificate needs at least one name",
            ));
        }
        for (i, n) in pki.names.iter().enumerate() {
            if !is_hostname(n) {
                return Err(self.error_at(
                    &format!("pki.names[{i}]"),
                    format!("{n:?} is not a host name (letters, digits, '-' and '.')"),
                ));
            }
        }
        Ok(())
    }

    fn check_nodes(&self) -> Result<(), TopologyError> {
        if self.nodes.is_empty() {
            return Err(self.error_at("nodes", "a lab needs at least one node ([[nodes]])"));
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if !is_simple_name(&n.name, MAX_NODE_NAME) {
                return Err(self.error_at(
                    &format!("nodes[{i}].name"),
                    format!(
                        "{:?} is not a node name: [a-z][a-z0-9-]*, at most {MAX_NODE_NAME} bytes",
                        n.name
                    ),
                ));
            }
            if let Some(first) = seen.insert(&n.name, i) {
                return Err(self.error_at(
                    &format!("nodes[{i}].name"),
                    format!("{:?} is already the name of nodes[{first}]", n.name),
                ));
            }
            match (n.kind, &n.role) {
                (NodeKind::Host, Some(r)) => {
                    return Err(self.error_at(
                        &format!("nodes[{i}].role"),
                        format!("a host has no role ({r:?} is for kind = \"element\")"),
                    ))
                }
                (NodeKind::Element, None) => {
                    return Err(self.error_at(
                        &format!("nodes[{i}].role"),
                        format!("an element needs a role: one of {}", self.roles().list()),
                    ))
                }
                (NodeKind::Element, Some(r)) if self.roles().get(r).is_none() => {
                    return Err(self.error_at(
                        &format!("nodes[{i}].role"),
                        format!("unknown role {r:?}: one of {}", self.roles().list()),
                    ))
                }
                _ => {}
            }
            if n.kind == NodeKind::Host && n.app.is_none() && !n.config.is_empty() {
                return Err(self.error_at(
                    &format!("nodes[{i}].config"),
                    "a host without an app has no config: it is an ordinary Linux namespace",
                ));
            }
            if n.kind == NodeKind::Element {
                if let Some(a) = &n.app {
                    return Err(self.error_at(
                        &format!("nodes[{i}].app"),
                        format!("an element has no app ({a} runs on a host, kind = \"host\")"),
                    ));
                }
                if !n.hosts.is_empty() {
                    return Err(
                        self.error_at(&format!("nodes[{i}].hosts"), "only hosts have a hosts file")
                    );
                }
                if !n.nameservers.is_empty() {
                    return Err(self.error_at(
                        &format!("nodes[{i}].nameservers"),
                        "only hosts have a resolv.conf",
                    ));
                }
                if n.httpdns.is_some() {
                    return Err(self.error_at(
                        &format!("nodes[{i}].httpdns"),
                        "only hosts run apps that ask HTTPDNS",
                    ));
                }
            }
            if let Some(h) = n.httpdns.as_ref().filter(|h| !is_hostname(&h.name)) {
                return Err(self.error_at(
                    &format!("nodes[{i}].httpdns.name"),
                    format!(
                        "{:?} is not a host name (letters, digits, '-' and '.')",
                        h.name
                    ),
                ));
            }
            for (j, h) in n.hosts.iter().enumerate() {
                if !is_hostname(&h.name) {
                    return Err(self.error_at(
                        &format!("nodes[{i}].hosts[{j}].name"),
                        format!(
                            "{:?} is not a host name (letters, digits, '-' and '.')",
                            h.name
                        ),
                    ));
                }
            }
            if n.kind == NodeKind::Element && n.forwarding.is_some() {
                return Err(self.error_at(
                    &format!("nodes[{i}].forwarding"),
                    "only hosts have forwarding: an element forwards in userspace and its kernel never does",
                ));
            }
            if n.ports.is_empty() {
                return Err(self.error_at(
                    &format!("nodes[{i}].ports"),
                    "a node needs at least one port",
                ));
            }
            if let Some(r) = self.role(n).map(|r| r.info).filter(|r| {
                r.addressing == d11_elements::role::Addressing::None && !n.routes.is_empty()
            }) {
                return Err(self.error_at(
                    &format!("nodes[{i}].routes"),
                    format!("a {} has no addresses, so it has no routes", r.name),
                ));
            }
        }
        Ok(())
    }

    fn check_ports(&self) -> Result<(), TopologyError> {
        let mut macs: HashMap<MacAddr, String> = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let mut names: HashMap<&str, usize> = HashMap::new();
            for (j, p) in n.ports.iter().enumerate() {
                let key = port_key(i, j);
                if !is_ifname(&p.name) {
                    return Err(self.error_at(
                        &format!("{key}.name"),
                        format!(
                            "{:?} is not an interface name: 1 to {MAX_IFNAME} bytes, no '/', ':' or whitespace",
                            p.name
                        ),
                    ));
                }
                if RESERVED_IFNAMES.contains(&p.name.as_str()) {
                    return Err(self.error_at(
                        &format!("{key}.name"),
                        format!("{:?} is reserved in every namespace", p.name),
                    ));
                }
                if let Some(first) = names.insert(&p.name, j) {
                    return Err(self.error_at(
                        &format!("{key}.name"),
                        format!("{:?} is already the name of ports[{first}]", p.name),
                    ));
                }
                match (n.kind, self.role(n).map(|r| r.info), p.address) {
                    // The phone's baseband puts the address its attach
                    // gave on the port (docs/attach.md).
                    (NodeKind::Host, _, None) if n.app.as_deref() == Some(ADDRESSES_ITS_PORT) => {}
                    (NodeKind::Host, _, None) => return Err(self.error_at(
                        &format!("{key}.address"),
                        "missing: a host port needs an address (like \"10.45.0.2/16\") to speak IP",
                    )),
                    (NodeKind::Element, Some(r), None) if r.port_is_addressed(j) => {
                        return Err(self.error_at(
                            &format!("{key}.address"),
                            format!(
                                "missing: a {} port needs an address (like \"192.0.2.1/30\")",
                                r.name
                            ),
                        ))
                    }
                    (NodeKind::Element, Some(r), Some(a)) if !r.port_is_addressed(j) => {
                        return Err(self.error_at(
                            &format!("{key}.address"),
                            format!(
                                "a {0} port has no address ({a} given): the {0} does not speak IP",
                                r.name
                            ),
                        ))
                    }
                    _ => {}
                }
                if !MTU_RANGE.contains(&p.mtu) {
                    return Err(self.error_at(
                        &format!("{key}.mtu"),
                        format!(
                            "{} is not in {}..={}",
                            p.mtu,
                            MTU_RANGE.start(),
                            MTU_RANGE.end()
                        ),
                    ));
                }
                let mac = p.mac(&n.name);
                if mac.is_multicast() || mac == MacAddr::ZERO {
                    return Err(self.error_at(
                        &format!("{key}.mac"),
                        format!("{mac} is not a unicast MAC (the first octet must be even, and not all zero)"),
                    ));
                }
                let here = format!("{}:{}", n.name, p.name);
                if let Some(other) = macs.insert(mac, here) {
                    let whose = if p.mac.is_some() {
                        ""
                    } else {
                        "the default MAC "
                    };
                    return Err(self.error_at(
                        &format!("{key}.mac"),
                        format!("{whose}{mac} is also the MAC of {other}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Index of `end`'s node and port, or the error for the key `key`.
    fn resolve(&self, end: &WireEnd, key: &str) -> Result<(usize, usize), TopologyError> {
        let Some(i) = self.nodes.iter().position(|n| n.name == end.node) else {
            return Err(self.error_at(key, format!("\"{end}\": there is no node {:?}", end.node)));
        };
        let node = &self.nodes[i];
        let Some(j) = node.ports.iter().position(|p| p.name == end.port) else {
            let have: Vec<&str> = node.ports.iter().map(|p| p.name.as_str()).collect();
            return Err(self.error_at(
                key,
                format!(
                    "\"{end}\": node {:?} has no port {:?} (it has {})",
                    end.node,
                    end.port,
                    have.join(", ")
                ),
            ));
        };
        Ok((i, j))
    }

    fn check_wires(&self) -> Result<(), TopologyError> {
        let mut used: HashMap<(usize, usize), usize> = HashMap::new();
        for (k, w) in self.wires.iter().enumerate() {
            let a = self.resolve(&w.a, &format!("wires[{k}].a"))?;
            let b = self.resolve(&w.b, &format!("wires[{k}].b"))?;
            if a == b {
                return Err(self.error_at(
                    &format!("wires[{k}].b"),
                    format!("\"{}\" is wired to itself", w.b),
                ));
            }
            if a.0 == b.0 {
                return Err(self.error_at(
                    &format!("wires[{k}].b"),
                    format!("joins node {:?} to itself, a loop", w.b.node),
                ));
            }
            for (end, side, ij) in [(&w.a, "a", a), (&w.b, "b", b)] {
                if let Some(first) = used.insert(ij, k) {
                    return Err(self.error_at(
                        &format!("wires[{k}].{side}"),
                        format!("\"{end}\" is already on wires[{first}]; a port takes one wire"),
                    ));
                }
            }
            if w.is_impaired() && !self.is_element(&w.a) && !self.is_element(&w.b) {
                let key = if w.impair.is_some() {
                    "impair"
                } else if w.a_to_b.is_some() {
                    "a_to_b"
                } else {
                    "b_to_a"
                };
                return Err(self.error_at(
                    &format!("wires[{k}].{key}"),
                    "neither end is an element, so nothing can apply the impairment (impair a wire with an element at one end)",
                ));
            }
            if w.veth && self.nodes[a.0].kind == self.nodes[b.0].kind {
                return Err(self.error_at(
                    &format!("wires[{k}].veth"),
                    "only a wire between a host and an element can choose veth over TAP (two elements or two hosts are always joined by a veth)",
                ));
            }
            let (pa, pb) = (&self.nodes[a.0].ports[a.1], &self.nodes[b.0].ports[b.1]);
            if pa.mtu != pb.mtu {
                return Err(self.error_at(
                    &format!("wires[{k}]"),
                    format!(
                        "the ends' MTUs differ ({} {}, {} {}): the larger end's frames would be lost",
                        w.a, pa.mtu, w.b, pb.mtu
                    ),
                ));
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            for (j, p) in n.ports.iter().enumerate() {
                if !used.contains_key(&(i, j)) {
                    return Err(self.error_at(
                        &port_key(i, j),
                        format!(
                            "\"{}:{}\" is on no wire (add [[wires]] with a = \"{}:{}\")",
                            n.name, p.name, n.name, p.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Addresses are unique in the lab, except on a tenant's own segment
    /// (behind a vSwitch's VM port), where they need only be unique on that
    /// segment: two tenants may both use 192.168.1.10, the VNIs keep them
    /// apart.
    fn check_addresses(&self) -> Result<(), TopologyError> {
        let (index, mut seg) = self.segments();
        let mut tenant_segment: HashSet<usize> = HashSet::new();
        for n in self
            .nodes
            .iter()
            .filter(|n| self.role(n).is_some_and(|r| r.info.isolates_tenants))
        {
            for p in &n.ports[1..] {
                tenant_segment.insert(seg.find(index[&(n.name.as_str(), p.name.as_str())]));
            }
        }
        let mut seen: HashMap<(Option<usize>, Ipv4Addr), String> = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for (j, p) in n.ports.iter().enumerate() {
                let Some(c) = p.address else { continue };
                let key = format!("{}.address", port_key(i, j));
                if let Some(why) = unusable_address(&c) {
                    return Err(self.error_at(&key, why));
                }
                let root = seg.find(index[&(n.name.as_str(), p.name.as_str())]);
                let domain = tenant_segment.contains(&root).then_some(root);
                if let Some(other) =
                    seen.insert((domain, c.addr()), format!("{}:{}", n.name, p.name))
                {
                    return Err(
                        self.error_at(&key, format!("{} is also the address of {other}", c.addr()))
                    );
                }
                for q in &n.ports[..j] {
                    if let Some(o) = q.address.filter(|o| o.overlaps(&c)) {
                        return Err(self.error_at(
                            &key,
                            format!(
                                "{c} overlaps {o} of port {:?} on the same node: which port would a packet leave by?",
                                q.name
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn check_routes(&self) -> Result<(), TopologyError> {
        for (i, n) in self.nodes.iter().enumerate() {
            let subnets: Vec<(&str, Ipv4Cidr)> = n
                .ports
                .iter()
                .filter_map(|p| Some((p.name.as_str(), p.address?)))
                .collect();
            for (k, r) in n.routes.iter().enumerate() {
                let key = format!("nodes[{i}].routes[{k}]");
                if r.to != r.to.network() {
                    return Err(self.error_at(
                        &format!("{key}.to"),
                        format!(
                            "{} has host bits set: the network is {}",
                            r.to,
                            r.to.network()
                        ),
                    ));
                }
                if let Some(m) = n.routes[..k].iter().position(|o| o.to == r.to) {
                    return Err(self.error_at(
                        &format!("{key}.to"),
                        format!(
                            "a second route to {} (routes[{m}] goes there already)",
                            r.to
                        ),
                    ));
                }
                if let Some((port, _)) = subnets.iter().find(|(_, s)| s.network() == r.to) {
                    return Err(self.error_at(
                        &format!("{key}.to"),
                        format!(
                            "{} is the subnet of port {port:?}: the node reaches it without a route",
                            r.to
                        ),
                    ));
                }
                let via = format!("{key}.via");
                let Some((_, s)) = subnets.iter().find(|(_, s)| s.contains(r.via)) else {
                    let list: Vec<String> = subnets
                        .iter()
                        .map(|(_, s)| s.network().to_string())
                        .collect();
                    return Err(self.error_at(
                        &via,
                        format!(
                            "{} is on none of this node's subnets ({}): a next hop must be a neighbour",
                            r.via,
                            list.join(", ")
                        ),
                    ));
                };
                if s.addr() == r.via {
                    return Err(
                        self.error_at(&via, format!("{} is this node's own address", r.via))
                    );
                }
                if s.prefix_len() < 31 && (r.via == s.network().addr() || r.via == s.broadcast()) {
                    return Err(self.error_at(
                        &via,
                        format!(
                            "{} is the network or broadcast address of {}",
                            r.via,
                            s.network()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Addresses that share a link (directly or through switches and null
    /// elements) must share a subnet, or they cannot reach each other.
    fn check_segments(&self) -> Result<(), TopologyError> {
        let (_, mut seg) = self.segments();
        let ports: Vec<(usize, usize)> = self
            .nodes
            .iter()
            .enumerate()
            .flat_map(|(i, n)| (0..n.ports.len()).map(move |j| (i, j)))
            .collect();
        let mut subnet_of: HashMap<usize, (Ipv4Cidr, String)> = HashMap::new();
        for (x, &(i, j)) in ports.iter().enumerate() {
            let n = &self.nodes[i];
            let Some(c) = n.ports[j].address else {
                continue;
            };
            let root = seg.find(x);
            match subnet_of.get(&root) {
                Some((net, who)) if *net != c.network() => {
                    return Err(self.error_at(
                        &format!("{}.address", port_key(i, j)),
                        format!("{c} is not on the subnet {net} of {who}, which shares its link"),
                    ))
                }
                Some(_) => {}
                None => {
                    subnet_of.insert(
                        root,
                        (c.network(), format!("{}:{}", n.name, n.ports[j].name)),
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// host — router — switch — host, every rule satisfied.
    const GOOD: &str = r#"
[[nodes]]
name = "phone"
kind = "host"
ports = [ { name = "eth0", address = "10.45.0.2/16", mtu = 1400 } ]
routes = [ { to = "0.0.0.0/0", via = "10.45.0.1" } ]

[[nodes]]
name = "a2"
kind = "element"
role = "router"
ports = [
  { name = "radio", address = "10.45.0.1/16", mtu = 1400 },
  { name = "ext", address = "203.0.113.1/24" },
]

[[nodes]]
name = "tor"
kind = "element"
role = "switch"
ports = [ { name = "up" }, { name = "p1" } ]

[[nodes]]
name = "server"
kind = "host"
ports = [ { name = "eth0", address = "203.0.113.10/24" } ]
routes = [ { to = "10.45.0.0/16", via = "203.0.113.1" } ]

[[wires]]
a = "phone:eth0"
b = "a2:radio"

[[wires]]
a = "a2:ext"
b = "tor:up"

[[wires]]
a = "tor:p1"
b = "server:eth0"
"#;

    /// Parses `GOOD` with `from` replaced by `to` (which must occur) and
    /// returns the error, checking it is one line naming file and key.
    fn broken(from: &str, to: &str) -> TopologyError {
        assert!(GOOD.contains(from), "fixture lacks {from:?}");
        let text = GOOD.replacen(from, to, 1);
        let e = Topology::parse(&text, "netns/x.toml").expect_err("the broken topology parsed");
        let msg = e.to_string();
        assert!(!msg.contains('\n'), "{msg}");
        assert!(msg.starts_with("netns/x.toml:"), "{msg}");
        assert!(msg.contains(&format!("{}: ", e.key())), "{msg}");
        e
    }

    #[test]
    fn the_fixture_is_valid() {
        Topology::parse(GOOD, "good.toml").unwrap();
    }

    #[test]
    fn a_host_port_needs_an_address_unless_a_baseband_attaches_for_it() {
        let phone = "ports = [ { name = \"eth0\", address = \"10.45.0.2/16\", mtu = 1400 } ]\nroutes = [ { to = \"0.0.0.0/0\", via = \"10.45.0.1\" } ]";
        let bare = "ports = [ { name = \"eth0\", mtu = 1400 } ]";
        let e = broken(phone, bare);
        assert_eq!(e.key(), "nodes[0] (\"phone\").ports[0].address");
        assert!(e.to_string().contains("needs an address"), "{e}");
        let usim = "config.usim = { imsi = \"001010000000001\", k = \"465b5ce8b199b49faa5f0a2ee238a6bc\", opc = \"cd63cb71954a9f4e48a5994e37a02baf\" }";
        let text = GOOD.replacen(phone, &format!("{bare}\napp = \"baseband\"\n{usim}"), 1);
        Topology::parse(&text, "netns/x.toml").expect("the baseband addresses eth0");
    }

    #[test]
    fn node_names_are_unique() {
        let e = broken("name = \"server\"", "name = \"tor\"");
        assert_eq!(e.key(), "nodes[3] (\"tor\").name");
        assert!(
            e.to_string().contains("already the name of nodes[2]"),
            "{e}"
        );
    }

    #[test]
    fn node_names_are_short_lowercase_words() {
        let e = broken("name = \"tor\"", "name = \"Tor_1\"");
        assert_eq!(e.key(), "nodes[2] (\"Tor_1\").name");
        let e = broken("name = \"tor\"", "name = \"a23456789012345678901\"");
        assert_eq!(e.key(), "nodes[2] (\"a23456789012345678901\").name");
    }

    #[test]
    fn port_names_are_interface_names() {
        let e = broken("name = \"p1\"", "name = \"port-with-a-long-name\"");
        assert_eq!(e.key(), "nodes[2] (\"tor\").ports[1].name");
        assert!(e.to_string().contains("15 bytes"), "{e}");
        let e = broken("name = \"p1\"", "name = \"p/1\"");
        assert_eq!(e.key(), "nodes[2] (\"tor\").ports[1].name");
        let e = broken("name = \"p1\"", "name = \"lo\"");
        assert!(e.to_string().contains("reserved"), "{e}");
    }

    #[test]
    fn port_names_are_unique_within_a_node() {
        let e = broken("name = \"p1\"", "name = \"up\"");
        assert_eq!(e.key(), "nodes[2] (\"tor\").ports[1].name");
    }

    #[test]
    fn every_wire_end_names_an_existing_port() {
        let e = broken("b = \"server:eth0\"", "b = \"server:eth9\"");
        assert_eq!(e.key(), "wires[2].b");
        assert!(e.to_string().contains("has no port \"eth9\""), "{e}");
        let e = broken("b = \"server:eth0\"", "b = \"srv:eth0\"");
        assert_eq!(e.key(), "wires[2].b");
    }

    #[test]
    fn every_port_is_on_a_wire() {
        let e = broken("{ name = \"p1\" }", "{ name = \"p1\" }, { name = \"p2\" }");
        assert_eq!(e.key(), "nodes[2] (\"tor\").ports[2]");
        assert!(e.to_string().contains("on no wire"), "{e}");
    }

    #[test]
    fn a_port_takes_only_one_wire() {
        let e = broken("a = \"tor:p1\"", "a = \"tor:up\"");
        assert_eq!(e.key(), "wires[2].a");
        assert!(e.to_string().contains("already on wires[1]"), "{e}");
    }

    #[test]
    fn no_wire_from_a_port_to_itself() {
        let e = broken("b = \"server:eth0\"", "b = \"tor:p1\"");
        assert_eq!(e.key(), "wires[2].b");
        assert!(e.to_string().contains("wired to itself"), "{e}");
    }

    #[test]
    fn hosts_have_no_config() {
        let e = broken(
            "name = \"server\"\nkind = \"host\"",
            "name = \"server\"\nkind = \"host\"\nconfig = { x = 1 }",
        );
        assert_eq!(e.key(), "nodes[3] (\"server\").config");
    }

    #[test]
    fn hosts_have_no_role_and_elements_need_one() {
        let e = broken(
            "kind = \"host\"\nports = [ { name = \"eth0\", address = \"203",
            "kind = \"host\"\nrole = \"router\"\nports = [ { name = \"eth0\", address = \"203",
        );
        assert_eq!(e.key(), "nodes[3] (\"server\").role");
        let e = broken("role = \"switch\"\n", "");
        assert_eq!(e.key(), "nodes[2] (\"tor\").role");
        assert!(e.to_string().contains("needs a role"), "{e}");
    }

    #[test]
    fn only_hosts_have_forwarding() {
        let e = broken("role = \"switch\"", "role = \"switch\"\nforwarding = true");
        assert_eq!(e.key(), "nodes[2] (\"tor\").forwarding");
    }

    #[test]
    fn router_ports_need_an_address_and_switch_ports_have_none() {
        let e = broken(
            "{ name = \"ext\", address = \"203.0.113.1/24\" }",
            "{ name = \"ext\" }",
        );
        assert_eq!(e.key(), "nodes[1] (\"a2\").ports[1].address");
        let e = broken(
            "{ name = \"up\" }",
            "{ name = \"up\", address = \"203.0.113.5/24\" }",
        );
        assert_eq!(e.key(), "nodes[2] (\"tor\").ports[0].address");
        assert!(e.to_string().contains("switch port has no address"), "{e}");
    }

    #[test]
    fn host_ports_need_an_address() {
        let e = broken(
            "{ name = \"eth0\", address = \"203.0.113.10/24\" }",
            "{ name = \"eth0\" }",
        );
        assert_eq!(e.key(), "nodes[3] (\"server\").ports[0].address");
    }

    #[test]
    fn mtu_is_between_68_and_9000() {
        let e = broken(
            "address = \"203.0.113.10/24\" }",
            "address = \"203.0.113.10/24\", mtu = 9001 }",
        );
        assert_eq!(e.key(), "nodes[3] (\"server\").ports[0].mtu");
        assert!(e.to_string().contains("68..=9000"), "{e}");
    }

    #[test]
    fn mtus_match_across_a_wire() {
        let e = broken(
            "address = \"10.45.0.2/16\", mtu = 1400",
            "address = \"10.45.0.2/16\", mtu = 1500",
        );
        assert_eq!(e.key(), "wires[0]");
        assert!(e.to_string().contains("MTUs differ"), "{e}");
    }

    #[test]
    fn macs_are_unicast_and_unique() {
        let e = broken(
            "{ name = \"up\" }",
            "{ name = \"up\", mac = \"03:00:00:00:00:01\" }",
        );
        assert_eq!(e.key(), "nodes[2] (\"tor\").ports[0].mac");
        let e = broken(
            "{ name = \"p1\" }",
            "{ name = \"p1\", mac = \"00:00:00:00:00:00\" }",
        );
        assert_eq!(e.key(), "nodes[2] (\"tor\").ports[1].mac");
        let mac = crate::topology::default_mac("tor", "up");
        let e = broken(
            "{ name = \"p1\" }",
            &format!("{{ name = \"p1\", mac = \"{mac}\" }}"),
        );
        assert_eq!(e.key(), "nodes[2] (\"tor\").ports[1].mac");
        assert!(e.to_string().contains("also the MAC of tor:up"), "{e}");
    }

    /// Two compute hosts on a tor; vm-lb and vm-other share 192.168.1.10
    /// in different tenants behind host A's vSwitch.
    const CLOUD: &str = r#"
[[nodes]]
name = "tor"
kind = "element"
role = "switch"
ports = [ { name = "pa" }, { name = "pb" } ]

[[nodes]]
name = "hosta"
kind = "element"
role = "vswitch"
ports = [
  { name = "underlay", address = "10.0.0.11/24" },
  { name = "lb", mtu = 1450 },
  { name = "other", mtu = 1450 },
]

[[nodes]]
name = "hostb"
kind = "element"
role = "vswitch"
ports = [ { name = "underlay", address = "10.0.0.12/24" }, { name = "ctl", mtu = 1450 } ]

[[nodes]]
name = "vm-lb"
kind = "host"
ports = [ { name = "eth0", address = "192.168.1.10/24", mtu = 1450 } ]

[[nodes]]
name = "vm-other"
kind = "host"
ports = [ { name = "eth0", address = "192.168.1.10/24", mtu = 1450 } ]

[[nodes]]
name = "vm-ctl"
kind = "host"
ports = [ { name = "eth0", address = "192.168.1.20/24", mtu = 1450 } ]

[[wires]]
a = "hosta:underlay"
b = "tor:pa"

[[wires]]
a = "hostb:underlay"
b = "tor:pb"

[[wires]]
a = "vm-lb:eth0"
b = "hosta:lb"

[[wires]]
a = "vm-other:eth0"
b = "hosta:other"

[[wires]]
a = "vm-ctl:eth0"
b = "hostb:ctl"
"#;

    #[test]
    fn tenants_behind_a_vswitch_may_reuse_addresses_but_the_underlay_may_not() {
        Topology::parse(CLOUD, "netns/cloud.toml").expect("vm-lb and vm-other share 192.168.1.10");
        let text = CLOUD.replacen("10.0.0.12/24", "10.0.0.11/24", 1);
        let e = Topology::parse(&text, "netns/x.toml").unwrap_err();
        assert_eq!(e.key(), "nodes[2] (\"hostb\").ports[0].address");
        assert!(
            e.to_string().contains("also the address of hosta:underlay"),
            "{e}"
        );
    }

    #[test]
    fn a_vswitch_addresses_its_underlay_and_not_its_vm_ports() {
        let text = CLOUD.replacen(
            "{ name = \"underlay\", address = \"10.0.0.11/24\" }",
            "{ name = \"underlay\" }",
            1,
        );
        let e = Topology::parse(&text, "netns/x.toml").unwrap_err();
        assert_eq!(e.key(), "nodes[1] (\"hosta\").ports[0].address");
        let text = CLOUD.replacen(
            "{ name = \"lb\", mtu = 1450 }",
            "{ name = \"lb\", mtu = 1450, address = \"192.168.1.1/24\" }",
            1,
        );
        let e = Topology::parse(&text, "netns/x.toml").unwrap_err();
        assert_eq!(e.key(), "nodes[1] (\"hosta\").ports[1].address");
    }

    #[test]
    fn addresses_are_unique_in_the_lab() {
        let e = broken(
            "address = \"203.0.113.10/24\"",
            "address = \"203.0.113.1/24\"",
        );
        assert_eq!(e.key(), "nodes[3] (\"server\").ports[0].address");
        assert!(e.to_string().contains("also the address of a2:ext"), "{e}");
    }

    #[test]
    fn network_and_broadcast_addresses_are_refused() {
        let e = broken(
            "address = \"203.0.113.10/24\"",
            "address = \"203.0.113.255/24\"",
        );
        assert_eq!(e.key(), "nodes[3] (\"server\").ports[0].address");
        assert!(e.to_string().contains("broadcast address"), "{e}");
        let e = broken(
            "address = \"203.0.113.10/24\"",
            "address = \"203.0.113.0/24\"",
        );
        assert!(e.to_string().contains("network address"), "{e}");
    }

    #[test]
    fn loopback_and_multicast_addresses_are_refused() {
        let e = broken("address = \"203.0.113.10/24\"", "address = \"127.0.0.2/8\"");
        assert_eq!(e.key(), "nodes[3] (\"server\").ports[0].address");
        assert!(e.to_string().contains("loopback"), "{e}");
        let e = broken(
            "address = \"203.0.113.10/24\"",
            "address = \"224.0.0.5/24\"",
        );
        assert!(e.to_string().contains("multicast"), "{e}");
    }

    #[test]
    fn a_malformed_address_names_its_key() {
        let e = broken(
            "address = \"203.0.113.10/24\"",
            "address = \"203.0.113.300/24\"",
        );
        assert_eq!(e.key(), "nodes[3] (\"server\").ports[0].address");
        assert!(e.to_string().contains("203.0.113.300/24"), "{e}");
    }

    #[test]
    fn a_route_via_must_be_on_a_connected_subnet() {
        let e = broken("via = \"203.0.113.1\"", "via = \"198.51.100.1\"");
        assert_eq!(e.key(), "nodes[3] (\"server\").routes[0].via");
        assert!(e.to_string().contains("203.0.113.0/24"), "{e}");
        let e = broken("via = \"203.0.113.1\"", "via = \"203.0.113.10\"");
        assert!(e.to_string().contains("own address"), "{e}");
    }

    #[test]
    fn a_route_to_with_host_bits_is_refused() {
        let e = broken("to = \"10.45.0.0/16\"", "to = \"10.45.0.7/16\"");
        assert_eq!(e.key(), "nodes[3] (\"server\").routes[0].to");
        assert!(e.to_string().contains("the network is 10.45.0.0/16"), "{e}");
    }

    #[test]
    fn a_route_to_a_connected_subnet_or_twice_is_refused() {
        let e = broken("to = \"10.45.0.0/16\"", "to = \"203.0.113.0/24\"");
        assert_eq!(e.key(), "nodes[3] (\"server\").routes[0].to");
        let e = broken(
            "routes = [ { to = \"10.45.0.0/16\", via = \"203.0.113.1\" } ]",
            "routes = [ { to = \"10.45.0.0/16\", via = \"203.0.113.1\" }, { to = \"10.45.0.0/16\", via = \"203.0.113.2\" } ]",
        );
        assert_eq!(e.key(), "nodes[3] (\"server\").routes[1].to");
    }

    #[test]
    fn switches_have_no_routes() {
        let e = broken(
            "role = \"switch\"",
            "role = \"switch\"\nroutes = [ { to = \"0.0.0.0/0\", via = \"203.0.113.1\" } ]",
        );
        assert_eq!(e.key(), "nodes[2] (\"tor\").routes");
    }

    #[test]
    fn addresses_sharing_a_link_share_a_subnet() {
        // server sits behind the switch on a2:ext's link, but on another subnet.
        let e = broken(
            "address = \"203.0.113.10/24\" } ]\nroutes = [ { to = \"10.45.0.0/16\", via = \"203.0.113.1\" } ]",
            "address = \"198.51.100.10/24\" } ]",
        );
        assert_eq!(e.key(), "nodes[3] (\"server\").ports[0].address");
        assert!(e.to_string().contains("203.0.113.0/24 of a2:ext"), "{e}");
    }

    #[test]
    fn subnets_of_one_node_do_not_overlap() {
        let e = broken("address = \"203.0.113.1/24\"", "address = \"10.45.7.1/24\"");
        assert_eq!(e.key(), "nodes[1] (\"a2\").ports[1].address");
        assert!(e.to_string().contains("overlaps"), "{e}");
    }

    #[test]
    fn unknown_kinds_and_roles_are_named() {
        let e = broken("role = \"switch\"", "role = \"hub\"");
        assert_eq!(e.key(), "nodes[2] (\"tor\").role");
        assert!(e.to_string().contains("unknown role \"hub\""), "{e}");
    }

    #[test]
    fn a_lab_needs_nodes() {
        let e = Topology::parse("description = \"empty\"\nnodes = []\n", "x.toml").unwrap_err();
        assert_eq!(e.key(), "nodes");
        assert_eq!(e.line(), Some(2));
    }

    #[test]
    fn the_shipped_topologies_load() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../netns");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Topology::load(&path).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 3, "found only {n} topologies in {}", dir.display());
    }
}
