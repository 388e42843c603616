//! The topology model: what a lab is made of, as pure data.
//!
//! A topology file names **nodes** (a `host` is a namespace with the kernel's
//! TCP/IP stack; an `element` is a namespace whose ports a userspace process
//! owns) and **wires** between their ports. Building namespaces from it is a
//! separate step ([`crate::build`]), as Mininet keeps `Topo` apart from
//! `Mininet`. The schema, every key and every rule: `docs/topology.md`.
//!
//! [`Topology::parse`] and [`Topology::load`] always validate, so every view
//! derived here ([`Topology::elements`], [`Topology::capture_points`]) may
//! rely on the rules of `validate.rs`; on a topology changed by hand after
//! loading, call [`Topology::validate`] again.

use crate::names::netns_name;
use d11_core::impair::{seed_from_name, Side};
use d11_core::Impairment;
use d11_elements::role::{ElementNode, NodePort, NodeRoute, RoleEntry};
use d11_elements::Registry;
use d11_wire::{Ipv4Cidr, MacAddr};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;
use toml::de::{DeTable, DeValue};

/// The MTU of a port that does not say.
pub const DEFAULT_MTU: u16 = 1500;

fn default_mtu() -> u16 {
    DEFAULT_MTU
}

/// A whole lab: nodes and the wires between their ports.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// One line for `d11 status` and the docs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub nodes: Vec<Node>,
    #[serde(default)]
    pub wires: Vec<Wire>,
    /// The lab PKI `d11 up` makes (root → intermediate → leaf), if any app
    /// serves TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pki: Option<Pki>,
    /// Where the text came from, to put file and line into errors.
    #[serde(skip)]
    origin: Origin,
    /// The roles its elements may name.
    #[serde(skip, default = "d11_elements::registry")]
    roles: Registry,
}

/// What runs in a node's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// The kernel's TCP/IP stack: real programs (`curl`, `iperf3`, our apps) run here.
    Host,
    /// A userspace process forwarding frames on ports the kernel never uses.
    Element,
}

impl fmt::Display for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeKind::Host => "host",
            NodeKind::Element => "element",
        })
    }
}

impl fmt::Display for WireKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WireKind::Tap => "tap",
            WireKind::Veth => "veth",
        })
    }
}

/// One node: a network namespace `LAB-NAME`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub name: String,
    pub kind: NodeKind,
    /// Elements only: the role's name in the registry
    /// ([`d11_elements::registry`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Hosts only: the kernel's `net.ipv4.ip_forward` (default off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarding: Option<bool>,
    /// In order: an element's port `i` is its `PortId(i)`.
    pub ports: Vec<Port>,
    /// Static routes (hosts and addressed roles).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// Hosts only: the application the supervisor runs in the namespace
    /// (on the kernel's TCP/IP stack, like any program there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The settings of an element's role (bearers, tenants, …) or of a
    /// host's app, a table each parses with its typed configuration;
    /// `d11 up` checks it before building anything.
    #[serde(default, skip_serializing_if = "toml::Table::is_empty")]
    pub config: toml::Table,
    /// Hosts only: names the namespace's `/etc/hosts` resolves (written to
    /// `/etc/netns/LAB-NODE/hosts`, which `ip netns exec` mounts), until
    /// the lab has DNS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostEntry>,
    /// Hosts only: the resolvers the namespace's `/etc/resolv.conf` names
    /// (written to `/etc/netns/LAB-NODE/resolv.conf`, which `ip netns
    /// exec` mounts), in order [resolv.conf(5) `nameserver`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<Ipv4Addr>,
    /// Hosts only: the HTTPDNS service the phone's app asks before DNS
    /// (`d11 order`), as an HTTPDNS SDK ships with its address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub httpdns: Option<HttpDns>,
}

/// Where a host's apps find HTTPDNS: an address (not a name: the service
/// replaces DNS) and the name its certificate holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpDns {
    pub address: Ipv4Addr,
    pub name: String,
    #[serde(default = "https_port")]
    pub port: u16,
}

fn https_port() -> u16 {
    443
}

/// One line of a host's `/etc/hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostEntry {
    pub name: String,
    pub address: Ipv4Addr,
}

/// The lab PKI: the names its server certificate holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pki {
    pub names: Vec<String>,
}

/// A host running an app, resolved for `d11 run --node NAME`.
#[derive(Debug, Clone, PartialEq)]
pub struct AppSpec {
    pub name: String,
    /// The app's name in the app registry (`d11_apps::app::registry`).
    pub app: String,
    pub config: toml::Table,
}

impl Node {
    pub fn port(&self, name: &str) -> Option<&Port> {
        self.ports.iter().find(|p| p.name == name)
    }

    /// The kernel's `ip_forward` for this node: the host's flag, off for elements.
    pub fn ip_forward(&self) -> bool {
        self.kind == NodeKind::Host && self.forwarding.unwrap_or(false)
    }
}

/// A port: a network interface of a host, or a port an element owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    /// The interface name (≤ 15 bytes).
    pub name: String,
    /// Interface address and subnet, like `192.0.2.1/30`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Cidr>,
    /// Default: [`default_mac`] of `node:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    #[serde(default = "default_mtu")]
    pub mtu: u16,
}

impl Port {
    /// The port's MAC: the configured one or the default for `node:port`.
    pub fn mac(&self, node: &str) -> MacAddr {
        self.mac.unwrap_or_else(|| default_mac(node, &self.name))
    }
}

/// A static route: packets to `to` go to the neighbour `via`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub to: Ipv4Cidr,
    pub via: Ipv4Addr,
}

/// A cable between two ports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wire {
    pub a: WireEnd,
    pub b: WireEnd,
    /// Impairment of both directions, a spec like `"loss=5% delay=20ms"`
    /// (`docs/impair.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impair: Option<Impairment>,
    /// The a → b direction's impairment, instead of `impair`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a_to_b: Option<Impairment>,
    /// The b → a direction's impairment, instead of `impair`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b_to_a: Option<Impairment>,
    /// The impairments' RNG seed; by default one derived from the wire's
    /// name, so runs repeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Host ↔ element only: a veth pair instead of a TAP, the host's end
    /// with its offloads off, as a kernel peer (BIRD, GoBGP) is wired.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub veth: bool,
}

/// One direction of a wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireDir {
    AToB,
    BToA,
}

impl WireDir {
    pub const BOTH: [WireDir; 2] = [WireDir::AToB, WireDir::BToA];
    pub fn as_str(self) -> &'static str {
        match self {
            WireDir::AToB => "a_to_b",
            WireDir::BToA => "b_to_a",
        }
    }
}

impl Wire {
    /// A wire with no impairment.
    pub fn new(a: WireEnd, b: WireEnd) -> Wire {
        Wire {
            a,
            b,
            impair: None,
            a_to_b: None,
            b_to_a: None,
            seed: None,
            veth: false,
        }
    }

    /// `a--b`, as `d11 impair` and the docs name it.
    pub fn name(&self) -> String {
        format!("{}--{}", self.a, self.b)
    }

    /// The wire's seed: `seed`, or one derived from its name.
    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or_else(|| seed_from_name(&self.name()))
    }

    /// The (transmitting, receiving) ends of `dir`.
    pub fn ends(&self, dir: WireDir) -> (&WireEnd, &WireEnd) {
        match dir {
            WireDir::AToB => (&self.a, &self.b),
            WireDir::BToA => (&self.b, &self.a),
        }
    }

    /// True if the wire declares any impairment.
    pub fn is_impaired(&self) -> bool {
        self.impair.is_some() || self.a_to_b.is_some() || self.b_to_a.is_some()
    }

    /// The impairment of `dir` as declared (`a_to_b`/`b_to_a` over
    /// `impair`), with its seed resolved: see [`direction_seed`].
    pub fn impairment(&self, dir: WireDir) -> Option<Impairment> {
        let own = match dir {
            WireDir::AToB => &self.a_to_b,
            WireDir::BToA => &self.b_to_a,
        };
        let cfg = own.as_ref().or(self.impair.as_ref())?;
        (!cfg.is_off()).then(|| {
            let seed = direction_seed(cfg.seed.unwrap_or(self.seed()), dir);
            cfg.clone().with_seed(seed)
        })
    }
}

/// The seed one direction's RNG starts from: the base seed (the spec's
/// `seed`, else the wire's) for a → b, the base + 1 for b → a, so the two
/// directions draw different sequences.
pub fn direction_seed(base: u64, dir: WireDir) -> u64 {
    match dir {
        WireDir::AToB => base,
        WireDir::BToA => base.wrapping_add(1),
    }
}

/// One end of a wire, written `node:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WireEnd {
    pub node: String,
    pub port: String,
}

impl fmt::Display for WireEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.node, self.port)
    }
}

/// A wire end that is not `node:port`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not NODE:PORT (like \"phone:eth0\")")]
pub struct WireEndError(pub String);

impl FromStr for WireEnd {
    type Err = WireEndError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some((node, port)) if !node.is_empty() && !port.is_empty() => Ok(WireEnd {
                node: node.to_string(),
                port: port.to_string(),
            }),
            _ => Err(WireEndError(s.to_string())),
        }
    }
}

impl Serialize for WireEnd {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WireEnd {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a wire is made of, derived from the kinds of the nodes it joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireKind {
    /// Host ↔ element: a persistent TAP device in the host's namespace, named
    /// as the host's port; the element process holds its file descriptor.
    Tap,
    /// Element ↔ element, host ↔ host: a veth pair, each end in its node's
    /// namespace and named as its port.
    Veth,
}

/// How an element reaches the wire on one of its ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortAttach {
    /// A veth end named `ifname` in the element's own namespace (AF_PACKET).
    Veth { ifname: String },
    /// The TAP device `ifname` in the namespace of `host_node`: open it there
    /// (`/dev/net/tun`, `TUNSETIFF`, `IFF_TAP | IFF_NO_PI`) and keep the fd.
    Tap { host_node: String, ifname: String },
}

/// One port of an element, resolved: everything the element process needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ElementPort {
    pub name: String,
    pub mac: MacAddr,
    pub mtu: u16,
    pub address: Option<Ipv4Cidr>,
    pub attach: PortAttach,
    /// The wire's impairment this element applies to what the port sends.
    pub impair_tx: Option<Impairment>,
    /// … and to what it receives (a direction whose sender is a host).
    pub impair_rx: Option<Impairment>,
}

/// An element node, resolved for `d11-element --node NAME`.
#[derive(Debug, Clone, PartialEq)]
pub struct ElementSpec {
    pub name: String,
    pub role: String,
    /// In configuration order: `ports[i]` is `PortId(i)`.
    pub ports: Vec<ElementPort>,
    pub routes: Vec<Route>,
    /// The role's own settings, as written under the node's `config`.
    pub config: toml::Table,
}

impl ElementSpec {
    /// The node as its role builds it.
    pub fn node(&self) -> ElementNode {
        ElementNode {
            name: self.name.clone(),
            role: self.role.clone(),
            ports: self
                .ports
                .iter()
                .map(|p| NodePort {
                    name: p.name.clone(),
                    mac: p.mac,
                    address: p.address,
                    mtu: p.mtu,
                })
                .collect(),
            routes: self
                .routes
                .iter()
                .map(|r| NodeRoute {
                    to: r.to,
                    via: r.via,
                })
                .collect(),
            config: self.config.clone(),
        }
    }
}

/// Where `d11 capture` listens for one wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturePoint {
    /// The pcapng interface name: `node:port` of the end captured.
    pub label: String,
    pub netns: String,
    pub ifname: String,
}

/// A topology that cannot be used: one line naming the file, the line where
/// known, and the key.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The file could not be read.
    #[error("{file}: cannot read the topology: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key, a wrong type or a broken rule.
    #[error("{file}{}: {}{message}", fmt_line(.line), fmt_key(.key))]
    Invalid {
        file: String,
        line: Option<usize>,
        /// Like `nodes[2] ("a2").ports[1].address`; empty for a syntax error
        /// outside any key.
        key: String,
        message: String,
    },
}

fn fmt_line(line: &Option<usize>) -> String {
    line.map(|l| format!(":{l}")).unwrap_or_default()
}

fn fmt_key(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

impl TopologyError {
    /// The key named by the error (empty if none).
    pub fn key(&self) -> &str {
        match self {
            TopologyError::Read { .. } => "",
            TopologyError::Invalid { key, .. } => key,
        }
    }

    /// The 1-based line of the file, where known.
    pub fn line(&self) -> Option<usize> {
        match self {
            TopologyError::Read { .. } => None,
            TopologyError::Invalid { line, .. } => *line,
        }
    }
}

/// The file name and the line of every key path in the text.
#[derive(Debug, Clone)]
struct Origin {
    file: String,
    /// `nodes[2].ports[1].address` → its line.
    lines: HashMap<String, usize>,
}

impl Default for Origin {
    fn default() -> Origin {
        Origin {
            file: "topology".to_string(),
            lines: HashMap::new(),
        }
    }
}

/// Every key path of a parsed document with its span (the key's where it has
/// one, the value's for array elements), and the `name` of each node.
#[derive(Default)]
struct SpanIndex {
    spans: Vec<(String, Range<usize>)>,
    node_names: HashMap<usize, String>,
}

impl SpanIndex {
    fn build(text: &str) -> Result<SpanIndex, toml::de::Error> {
        let doc = DeTable::parse(text)?;
        let mut idx = SpanIndex::default();
        for (k, v) in doc.get_ref().iter() {
            idx.walk(k.get_ref(), k.span(), v.get_ref(), v.span());
        }
        Ok(idx)
    }

    fn walk(&mut self, path: &str, key_span: Range<usize>, v: &DeValue<'_>, span: Range<usize>) {
        self.spans.push((path.to_string(), key_span));
        if span.end > span.start {
            self.spans.push((path.to_string(), span));
        }
        match v {
            DeValue::Table(t) => {
                for (k, v) in t.iter() {
                    let p = format!("{path}.{}", k.get_ref());
                    self.walk(&p, k.span(), v.get_ref(), v.span());
                }
            }
            DeValue::Array(a) => {
                for (i, item) in a.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    self.walk(&p, item.span(), item.get_ref(), item.span());
                }
            }
            DeValue::String(s) => {
                if let Some(i) = node_index(path) {
                    if path == format!("nodes[{i}].name") {
                        self.node_names.insert(i, s.to_string());
                    }
                }
            }
            _ => {}
        }
    }

    /// The deepest key path whose span holds `at`.
    fn key_at(&self, at: &Range<usize>) -> Option<&str> {
        self.spans
            .iter()
            .filter(|(_, s)| s.start <= at.start && (at.start < s.end || s.start == at.start))
            .min_by_key(|(p, s)| (s.end - s.start, usize::MAX - p.len()))
            .map(|(p, _)| p.as_str())
    }

    fn lines(&self, text: &str) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        // The first span of a path is its key's (or the element's own).
        for (p, s) in &self.spans {
            out.entry(p.clone())
                .or_insert_with(|| line_of(text, s.start));
        }
        out
    }
}

/// `nodes[7]…` → 7.
fn node_index(path: &str) -> Option<usize> {
    path.strip_prefix("nodes[")?.split(']').next()?.parse().ok()
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// `nodes[2].ports[1]` → `nodes[2] ("a2").ports[1]`, naming the node.
fn pretty_key(raw: &str, name_of: impl Fn(usize) -> Option<String>) -> String {
    match node_index(raw).and_then(|i| Some((i, name_of(i)?))) {
        Some((i, name)) => {
            let head = format!("nodes[{i}]");
            format!("{head} ({name:?}){}", &raw[head.len()..])
        }
        None => raw.to_string(),
    }
}

/// One line: toml's messages are one line, a user's value might not be.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Origin {
    /// The line of `raw`, or of its nearest ancestor the file has (a missing
    /// key is reported on the line of the table that lacks it).
    fn line(&self, raw: &str) -> Option<usize> {
        let mut p = raw;
        loop {
            if let Some(l) = self.lines.get(p) {
                return Some(*l);
            }
            p = &p[..p.rfind(['.', '['])?];
        }
    }
}

impl Topology {
    /// Reads and validates a topology file.
    pub fn load(path: &Path) -> Result<Topology, TopologyError> {
        Topology::load_with(path, d11_elements::registry())
    }

    /// [`Topology::load`] with the roles of `roles` (a test's own role).
    pub fn load_with(path: &Path, roles: Registry) -> Result<Topology, TopologyError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read {
            file: file.clone(),
            source,
        })?;
        Topology::parse_with(&text, &file, roles)
    }

    /// Parses and validates topology text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Topology, TopologyError> {
        Topology::parse_with(text, file, d11_elements::registry())
    }

    /// [`Topology::parse`] with the roles of `roles`.
    pub fn parse_with(text: &str, file: &str, roles: Registry) -> Result<Topology, TopologyError> {
        let invalid = |line, key: String, message: &str| TopologyError::Invalid {
            file: file.to_string(),
            line,
            key,
            message: one_line(message),
        };
        let idx = SpanIndex::build(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            invalid(line, String::new(), e.message())
        })?;
        let mut topo: Topology = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let line = e.span().map(|s| line_of(text, s.start));
            let mut key = idx.key_at(&span).unwrap_or("").to_string();
            let mut message = e.message().to_string();
            // "missing field `name`" at a table: name the missing key itself.
            if let Some(field) = message
                .strip_prefix("missing field `")
                .and_then(|m| m.strip_suffix('`'))
            {
                key = if key.is_empty() {
                    field.to_string()
                } else {
                    format!("{key}.{field}")
                };
                message = "missing (this key is required)".to_string();
            }
            let key = pretty_key(&key, |i| idx.node_names.get(&i).cloned());
            invalid(line, key, &message)
        })?;
        topo.origin = Origin {
            file: file.to_string(),
            lines: idx.lines(text),
        };
        topo.roles = roles;
        topo.validate()?;
        Ok(topo)
    }

    /// An error about `raw_key` (like `nodes[2].config.bearers[0].teid`), with
    /// the file, the line where known and the key spelled with node names.
    pub fn error_at(&self, raw_key: &str, message: impl Into<String>) -> TopologyError {
        TopologyError::Invalid {
            file: self.origin.file.clone(),
            line: self.origin.line(raw_key),
            key: pretty_key(raw_key, |i| self.nodes.get(i).map(|n| n.name.clone())),
            message: one_line(&message.into()),
        }
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The registered role of an element node (`None` for hosts, and for a
    /// name the registry does not know, which validation refuses).
    pub fn role(&self, node: &Node) -> Option<&RoleEntry> {
        node.role
            .as_deref()
            .filter(|_| node.kind == NodeKind::Element)
            .and_then(|r| self.roles.get(r))
    }

    /// The roles this topology's elements may name.
    pub fn roles(&self) -> &Registry {
        &self.roles
    }

    /// Builds every element from its settings (each role parses its own,
    /// unknown keys refused), so that a wrong setting is one line naming
    /// its file, line and key, before `d11 up` builds anything.
    pub fn check_elements(&self) -> Result<(), TopologyError> {
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(spec) = self.element(&n.name) {
                self.roles
                    .build(&spec.node())
                    .map_err(|e| self.error_at(&format!("nodes[{i}].{}", e.key), e.message))?;
            }
        }
        Ok(())
    }

    /// Builds the element `name` (for `d11-element` and the simulator).
    pub fn build_element(
        &self,
        name: &str,
    ) -> Option<Result<Box<dyn d11_core::AnyElement>, d11_core::ConfigError>> {
        let spec = self.element(name)?;
        Some(self.roles.build(&spec.node()))
    }

    /// The other end of the wire on `end`.
    pub fn peer(&self, end: &WireEnd) -> Option<&WireEnd> {
        self.wires.iter().find_map(|w| {
            if w.a == *end {
                Some(&w.b)
            } else if w.b == *end {
                Some(&w.a)
            } else {
                None
            }
        })
    }

    /// What `w` is made of: a TAP when exactly one end is a host (unless
    /// the wire asks for a veth).
    pub fn wire_kind(&self, w: &Wire) -> WireKind {
        let is_host = |e: &WireEnd| self.node(&e.node).is_some_and(|n| n.kind == NodeKind::Host);
        if is_host(&w.a) != is_host(&w.b) && !w.veth {
            WireKind::Tap
        } else {
            WireKind::Veth
        }
    }

    /// True if `end`'s node is an element.
    pub fn is_element(&self, end: &WireEnd) -> bool {
        self.node(&end.node)
            .is_some_and(|n| n.kind == NodeKind::Element)
    }

    /// Where direction `dir` of `w` is impaired: by the element that sends
    /// it (on its port's tx side) if the sender is an element, else by the
    /// element receiving it (rx side); `None` if neither end is an element.
    pub fn impair_point<'a>(&self, w: &'a Wire, dir: WireDir) -> Option<(&'a WireEnd, Side)> {
        let (tx, rx) = w.ends(dir);
        if self.is_element(tx) {
            Some((tx, Side::Tx))
        } else if self.is_element(rx) {
            Some((rx, Side::Rx))
        } else {
            None
        }
    }

    /// The wire `spec` names: `node:port` of either end, `a--b` with both
    /// ends, or `nodeA--nodeB` when one wire joins those nodes.
    pub fn find_wire(&self, spec: &str) -> Result<&Wire, String> {
        let known = || {
            self.wires
                .iter()
                .map(Wire::name)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let found: Vec<&Wire> = if let Some((x, y)) = spec.split_once("--") {
            let matches = |e: &WireEnd, s: &str| {
                if s.contains(':') {
                    e.to_string() == s
                } else {
                    e.node == s
                }
            };
            self.wires
                .iter()
                .filter(|w| {
                    (matches(&w.a, x) && matches(&w.b, y)) || (matches(&w.a, y) && matches(&w.b, x))
                })
                .collect()
        } else {
            let end: WireEnd = spec
                .parse()
                .map_err(|_| format!("{spec:?} is not NODE:PORT or A--B (wires: {})", known()))?;
            self.wires
                .iter()
                .filter(|w| w.a == end || w.b == end)
                .collect()
        };
        match found.as_slice() {
            [w] => Ok(w),
            [] => Err(format!("no wire {spec:?} in this lab (wires: {})", known())),
            _ => Err(format!(
                "{spec:?} names {} wires; give NODE:PORT of one end",
                found.len()
            )),
        }
    }

    /// The host end of a TAP wire (where the device lives).
    fn tap_host_end<'a>(&self, w: &'a Wire) -> &'a WireEnd {
        match self.node(&w.a.node) {
            Some(n) if n.kind == NodeKind::Host => &w.a,
            _ => &w.b,
        }
    }

    /// Every element node, resolved, in file order.
    pub fn elements(&self) -> Vec<ElementSpec> {
        self.nodes
            .iter()
            .filter_map(|n| self.element(&n.name))
            .collect()
    }

    /// Every host that runs an app, in file order.
    pub fn apps(&self) -> Vec<AppSpec> {
        self.nodes
            .iter()
            .filter_map(|n| self.app(&n.name))
            .collect()
    }

    /// The host `name`'s app; `None` for elements, hosts without an app and
    /// unknown names.
    pub fn app(&self, name: &str) -> Option<AppSpec> {
        let node = self.node(name)?;
        Some(AppSpec {
            name: node.name.clone(),
            app: node.app.clone().filter(|_| node.kind == NodeKind::Host)?,
            config: node.config.clone(),
        })
    }

    /// The element node `name`, resolved; `None` for hosts and unknown names.
    pub fn element(&self, name: &str) -> Option<ElementSpec> {
        let node = self.node(name)?;
        let role = node
            .role
            .clone()
            .filter(|_| node.kind == NodeKind::Element)?;
        let ports = node
            .ports
            .iter()
            .map(|p| {
                let me = WireEnd {
                    node: node.name.clone(),
                    port: p.name.clone(),
                };
                let peer = self.peer(&me);
                let wire = self.wires.iter().find(|w| w.a == me || w.b == me);
                let tap = wire.is_some_and(|w| self.wire_kind(w) == WireKind::Tap);
                let attach = match peer.and_then(|e| self.node(&e.node)) {
                    Some(h) if h.kind == NodeKind::Host && tap => PortAttach::Tap {
                        host_node: h.name.clone(),
                        ifname: peer.map(|e| e.port.clone()).unwrap_or_default(),
                    },
                    _ => PortAttach::Veth {
                        ifname: p.name.clone(),
                    },
                };
                let mut impair = [None, None];
                for dir in WireDir::BOTH {
                    let Some(w) = wire else { continue };
                    if let Some((end, side)) = self.impair_point(w, dir) {
                        if *end == me {
                            impair[side as usize] = w.impairment(dir);
                        }
                    }
                }
                let [impair_tx, impair_rx] = impair;
                ElementPort {
                    name: p.name.clone(),
                    mac: p.mac(&node.name),
                    mtu: p.mtu,
                    address: p.address,
                    attach,
                    impair_tx,
                    impair_rx,
                }
            })
            .collect();
        Some(ElementSpec {
            name: node.name.clone(),
            role,
            ports,
            routes: node.routes.clone(),
            config: node.config.clone(),
        })
    }

    /// One capture point per wire, in file order: for a TAP wire the TAP
    /// device in the host's namespace, for a veth wire its `a` end.
    pub fn capture_points(&self, lab: &str) -> Vec<CapturePoint> {
        self.wires
            .iter()
            .map(|w| {
                let end = match self.wire_kind(w) {
                    WireKind::Tap => self.tap_host_end(w),
                    WireKind::Veth => &w.a,
                };
                CapturePoint {
                    label: end.to_string(),
                    netns: netns_name(lab, &end.node),
                    ifname: end.port.clone(),
                }
            })
            .collect()
    }
}

/// The default MAC of `node:port`: locally administered unicast (`02:…`),
/// the other five bytes from a 64-bit FNV-1a hash of the text, so it is the
/// same on every machine and in every release.
pub fn default_mac(node: &str, port: &str) -> MacAddr {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes().chain([b':']).chain(port.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    MacAddr([0x02, b[0], b[1], b[2], b[3], b[4]])
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAIR: &str = r#"
description = "two hosts and a router"

[[nodes]]
name = "left"
kind = "host"
ports = [ { name = "eth0", address = "10.1.0.2/24" } ]
routes = [ { to = "0.0.0.0/0", via = "10.1.0.1" } ]

[[nodes]]
name = "r"
kind = "element"
role = "router"
ports = [
  { name = "l", address = "10.1.0.1/24" },
  { name = "r2", address = "10.2.0.1/24", mac = "02:00:00:00:00:99" },
]

[[nodes]]
name = "mid"
kind = "element"
role = "router"
ports = [ { name = "r", address = "10.2.0.2/24" }, { name = "h", address = "10.3.0.1/24" } ]
routes = [ { to = "10.1.0.0/24", via = "10.2.0.1" } ]

[[nodes]]
name = "right"
kind = "host"
ports = [ { name = "eth0", address = "10.3.0.2/24", mtu = 9000 } ]
routes = [ { to = "0.0.0.0/0", via = "10.3.0.1" } ]

[[wires]]
a = "left:eth0"
b = "r:l"

[[wires]]
a = "r:r2"
b = "mid:r"

[[wires]]
a = "right:eth0"
b = "mid:h"
"#;

    fn pair() -> Topology {
        // MTUs must match across a wire: give mid:h 9000 too.
        let text = PAIR.replace(
            "{ name = \"h\", address = \"10.3.0.1/24\" }",
            "{ name = \"h\", address = \"10.3.0.1/24\", mtu = 9000 }",
        );
        Topology::parse(&text, "pair.toml").unwrap()
    }

    #[test]
    fn a_valid_topology_parses_with_defaults() {
        let t = pair();
        assert_eq!(t.description, "two hosts and a router");
        let r = t.node("r").unwrap();
        assert_eq!(r.role.as_deref(), Some("router"));
        assert_eq!(r.ports[0].mtu, DEFAULT_MTU);
        assert_eq!(r.ports[1].mac(&r.name).to_string(), "02:00:00:00:00:99");
        assert!(!t.node("left").unwrap().ip_forward());
    }

    #[test]
    fn a_host_element_wire_may_be_a_veth_for_a_kernel_peer() {
        let t = pair();
        assert_eq!(t.wire_kind(&t.wires[0]), WireKind::Tap);
        let text = PAIR
            .replace(
                "{ name = \"h\", address = \"10.3.0.1/24\" }",
                "{ name = \"h\", address = \"10.3.0.1/24\", mtu = 9000 }",
            )
            .replace(
                "a = \"left:eth0\"\nb = \"r:l\"",
                "a = \"left:eth0\"\nb = \"r:l\"\nveth = true",
            );
        let t = Topology::parse(&text, "pair.toml").unwrap();
        assert_eq!(t.wire_kind(&t.wires[0]), WireKind::Veth);
        let r = t.element("r").unwrap();
        assert_eq!(r.ports[0].attach, PortAttach::Veth { ifname: "l".into() });
        let bad = text.replace(
            "a = \"r:r2\"\nb = \"mid:r\"",
            "a = \"r:r2\"\nb = \"mid:r\"\nveth = true",
        );
        let e = Topology::parse(&bad, "pair.toml").unwrap_err();
        assert_eq!(e.key(), "wires[1].veth", "{e}");
    }

    #[test]
    fn default_macs_are_local_unicast_and_stable() {
        let m = default_mac("a2", "radio");
        assert_eq!(m.0[0], 0x02);
        assert!(m.is_unicast());
        assert_eq!(m, default_mac("a2", "radio"));
        assert_ne!(m, default_mac("a2", "radi"));
        // "a2:radio" must not hash like "a2r:adio": the colon is part of the text.
        assert_ne!(default_mac("a2", "radio"), default_mac("a2r", "adio"));
        // Pinned (python3: FNV-1a 64 of b"phone:eth0", first five bytes): a
        // change here changes every lab's MACs.
        assert_eq!(
            default_mac("phone", "eth0").to_string(),
            "02:e4:e7:02:89:c1"
        );
    }

    #[test]
    fn element_ports_say_how_to_attach() {
        let t = pair();
        let r = t.element("r").unwrap();
        assert_eq!(r.role, "router");
        assert_eq!(
            r.ports[0].attach,
            PortAttach::Tap {
                host_node: "left".into(),
                ifname: "eth0".into()
            }
        );
        assert_eq!(
            r.ports[1].attach,
            PortAttach::Veth {
                ifname: "r2".into()
            }
        );
        assert_eq!(r.ports[0].mac, default_mac("r", "l"));
        assert!(t.element("left").is_none());
        let names: Vec<_> = t.elements().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["r", "mid"]);
    }

    #[test]
    fn capture_points_take_the_tap_on_the_host_side() {
        let t = pair();
        let c = t.capture_points("lab");
        let got: Vec<_> = c
            .iter()
            .map(|c| (c.label.as_str(), c.netns.as_str(), c.ifname.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("left:eth0", "lab-left", "eth0"),
                ("r:r2", "lab-r", "r2"),
                ("right:eth0", "lab-right", "eth0"),
            ]
        );
    }

    fn impaired(extra: &[(&str, &str)]) -> Result<Topology, TopologyError> {
        let mut text = PAIR.replace(
            "{ name = \"h\", address = \"10.3.0.1/24\" }",
            "{ name = \"h\", address = \"10.3.0.1/24\", mtu = 9000 }",
        );
        for (after, add) in extra {
            text = text.replace(after, &format!("{after}\n{add}"));
        }
        Topology::parse(&text, "pair.toml")
    }

    #[test]
    fn each_direction_is_impaired_by_its_sender_if_an_element_else_its_receiver() {
        // left:eth0 (host) -- r:l: r applies both ways; r:r2 -- mid:r: each its own tx.
        let t = impaired(&[
            (
                "b = \"r:l\"",
                "impair = \"loss=5%\"\nb_to_a = \"delay=20ms\"",
            ),
            ("b = \"mid:r\"", "impair = \"loss=1% seed=7\""),
        ])
        .unwrap();
        let r = t.element("r").unwrap();
        let mid = t.element("mid").unwrap();
        let wire0 = &t.wires[0];
        let seed0 = wire0.seed();
        assert_eq!(seed0, seed_from_name("left:eth0--r:l"));
        // a→b is left→r: the host sends, r receives.
        let rx = r.ports[0].impair_rx.clone().unwrap();
        assert_eq!(rx.to_string(), format!("loss=5% seed={seed0}"));
        let tx = r.ports[0].impair_tx.clone().unwrap();
        assert_eq!(tx.to_string(), format!("delay=20ms seed={}", seed0 + 1));
        // The element-element wire: a→b by r on tx (seed 7), b→a by mid on tx (seed 8).
        assert_eq!(r.ports[1].impair_tx.as_ref().unwrap().seed, Some(7));
        assert!(r.ports[1].impair_rx.is_none());
        assert_eq!(mid.ports[0].impair_tx.as_ref().unwrap().seed, Some(8));
        assert!(mid.ports[0].impair_rx.is_none());
        assert!(mid.ports[1].impair_tx.is_none() && mid.ports[1].impair_rx.is_none());
        // It survives the saved copy.
        let back = Topology::parse(&toml::to_string(&t).unwrap(), "copy.toml").unwrap();
        assert_eq!(back.element("r").unwrap(), r);
        // Wires are found by either end, by both, or by node names.
        assert_eq!(t.find_wire("r:l").unwrap().name(), "left:eth0--r:l");
        assert_eq!(t.find_wire("mid--r").unwrap().name(), "r:r2--mid:r");
        assert!(t
            .find_wire("r:zz")
            .unwrap_err()
            .starts_with("no wire \"r:zz\""));
        assert!(t.find_wire("nonsense").is_err());
    }

    #[test]
    fn an_impairment_needs_an_element_at_one_end_and_a_good_spec() {
        let hosts = r#"
[[nodes]]
name = "x"
kind = "host"
ports = [ { name = "eth0", address = "10.9.0.1/24" } ]

[[nodes]]
name = "y"
kind = "host"
ports = [ { name = "eth0", address = "10.9.0.2/24" } ]

[[wires]]
a = "x:eth0"
b = "y:eth0"
a_to_b = "loss=5%"
"#;
        let e = Topology::parse(hosts, "h.toml").unwrap_err();
        assert_eq!(e.key(), "wires[0].a_to_b");
        assert!(e.to_string().contains("neither end is an element"), "{e}");
        let e = impaired(&[("b = \"r:l\"", "impair = \"loss=150%\"")]).unwrap_err();
        assert!(
            e.to_string().contains("loss: \"150%\" is not between"),
            "{e}"
        );
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn the_saved_copy_parses_back_to_the_same_lab() {
        let t = pair();
        let back = Topology::parse(&toml::to_string(&t).unwrap(), "copy.toml").unwrap();
        assert_eq!(back.nodes, t.nodes);
        assert_eq!(back.wires, t.wires);
        assert_eq!(back.description, t.description);
    }

    #[test]
    fn errors_point_at_file_line_and_key() {
        let text = PAIR.replace("10.2.0.1/24\", mac", "10.2.0.300/24\", mac");
        let e = Topology::parse(&text, "netns/x.toml").unwrap_err();
        let line = PAIR
            .lines()
            .position(|l| l.contains("10.2.0.1/24\", mac"))
            .unwrap()
            + 1;
        assert_eq!(e.key(), "nodes[1] (\"r\").ports[1].address");
        assert_eq!(e.line(), Some(line));
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!(
                "netns/x.toml:{line}: nodes[1] (\"r\").ports[1].address: "
            )),
            "{msg}"
        );
        assert!(msg.contains("10.2.0.300/24"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn a_syntax_error_names_the_line() {
        let e = Topology::parse("[[nodes]]\nname = \"a\nports = []\n", "x.toml").unwrap_err();
        assert_eq!(e.line(), Some(2));
        assert!(e.to_string().starts_with("x.toml:2: "), "{e}");
        assert!(!e.to_string().contains('\n'), "{e}");
    }

    #[test]
    fn an_unknown_key_is_named_with_its_node() {
        let text = PAIR.replace("name = \"r\"\nkind", "name = \"r\"\ncolour = \"red\"\nkind");
        let e = Topology::parse(&text, "x.toml").unwrap_err();
        assert_eq!(e.key(), "nodes[1] (\"r\").colour");
        assert!(e.to_string().contains("unknown field `colour`"), "{e}");
    }

    #[test]
    fn a_missing_key_is_named_on_its_table_line() {
        let e = Topology::parse("[[nodes]]\nname = \"a\"\nports = []\n", "x.toml").unwrap_err();
        assert_eq!(e.key(), "nodes[0] (\"a\").kind");
        assert_eq!(e.line(), Some(1));
    }

    #[test]
    fn a_wrong_type_names_the_key() {
        let text = PAIR.replace("mtu = 9000", "mtu = \"big\"");
        let e = Topology::parse(&text, "x.toml").unwrap_err();
        assert_eq!(e.key(), "nodes[3] (\"right\").ports[0].mtu");
        assert!(e.to_string().contains("expected u16"), "{e}");
    }

    #[test]
    fn a_wire_end_without_a_colon_is_refused() {
        let text = PAIR.replace("a = \"left:eth0\"", "a = \"left\"");
        let e = Topology::parse(&text, "x.toml").unwrap_err();
        assert_eq!(e.key(), "wires[0].a");
        assert!(e.to_string().contains("NODE:PORT"), "{e}");
    }
}
