//! The role registry: what the lab knows of each kind of element, and how
//! one is built from its node in the topology.
//!
//! Each element file declares its role with [`Role`]: a name, what the lab
//! must know without building it ([`RoleInfo`]: which ports carry
//! addresses, whether it bridges or routes), its settings type (the node's
//! `config` table) and its constructor. [`registry`](crate::registry) lists
//! the roles, one line each; the lab's validation, `d11-element`, `d11 trace`
//! and the simulator ask it. Adding a role is a file and a line there
//! (`docs/adding-a-role.md`).

use d11_core::settings::{self, ConfigError};
use d11_core::{AnyElement, L3Port};
use d11_wire::{Ipv4Cidr, MacAddr};
use serde::de::DeserializeOwned;
use std::net::Ipv4Addr;

/// An element node of the topology as its role sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ElementNode {
    pub name: String,
    pub role: String,
    /// In configuration order: `ports[i]` is `PortId(i)`.
    pub ports: Vec<NodePort>,
    pub routes: Vec<NodeRoute>,
    /// The role's own settings, as written under the node's `config`.
    pub config: toml::Table,
}

/// One port of an element node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePort {
    pub name: String,
    pub mac: MacAddr,
    pub address: Option<Ipv4Cidr>,
    pub mtu: u16,
}

/// A static route of an element node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeRoute {
    pub to: Ipv4Cidr,
    pub via: Ipv4Addr,
}

/// Which of a role's ports carry an IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    /// Every port (a router, a gateway): routes are allowed.
    All,
    /// Only port 0 (a vSwitch's underlay; its VM ports are L2).
    First,
    /// None (a switch): it does not speak IP.
    None,
}

/// What the lab knows of a role without building one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleInfo {
    /// `role = "…"` in the topology.
    pub name: &'static str,
    /// One line for `--help`, errors and the docs.
    pub summary: &'static str,
    pub addressing: Addressing,
    /// Joins its ports into one L2 segment (frames pass unchanged), so the
    /// addresses on either side share a subnet.
    pub bridges: bool,
    /// The segments behind ports other than the first are tenants' own,
    /// where private addresses may repeat.
    pub isolates_tenants: bool,
    /// Forwards IP as a router does, one TTL lower per hop (what `d11
    /// trace` expects of the hop).
    pub routes: bool,
}

impl RoleInfo {
    /// True if the role's port `j` carries an IPv4 address.
    pub fn port_is_addressed(&self, j: usize) -> bool {
        match self.addressing {
            Addressing::All => true,
            Addressing::First => j == 0,
            Addressing::None => false,
        }
    }
}

/// The addresses an element may rewrite a packet's source or destination
/// to (its NAT), for `d11 trace`'s checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewrites {
    pub sources: Vec<Ipv4Cidr>,
    pub destinations: Vec<Ipv4Cidr>,
}

/// A kind of element, declared in its own file.
pub trait Role: 'static {
    const INFO: RoleInfo;
    /// The node's `config` table, parsed with unknown keys refused.
    type Settings: DeserializeOwned;
    fn build(
        node: &ElementNode,
        settings: Self::Settings,
    ) -> Result<Box<dyn AnyElement>, ConfigError>;
    /// What the element may rewrite addresses to; none by default.
    fn rewrites(_node: &ElementNode, _settings: &Self::Settings) -> Rewrites {
        Rewrites::default()
    }
}

/// One registered role, its type erased.
#[derive(Clone, Copy)]
pub struct RoleEntry {
    pub info: RoleInfo,
    build: fn(&ElementNode) -> Result<Box<dyn AnyElement>, ConfigError>,
    rewrites: fn(&ElementNode) -> Rewrites,
}

impl std::fmt::Debug for RoleEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RoleEntry").field(&self.info.name).finish()
    }
}

impl RoleEntry {
    fn of<R: Role>() -> RoleEntry {
        RoleEntry {
            info: R::INFO,
            build: |node| {
                let s = settings::parse::<R::Settings>(&node.config, &owner::<R>())?;
                R::build(node, s)
            },
            rewrites: |node| {
                settings::parse::<R::Settings>(&node.config, &owner::<R>())
                    .map(|s| R::rewrites(node, &s))
                    .unwrap_or_default()
            },
        }
    }

    /// Parses the node's settings and builds the element.
    pub fn build(&self, node: &ElementNode) -> Result<Box<dyn AnyElement>, ConfigError> {
        (self.build)(node)
    }

    pub fn rewrites(&self, node: &ElementNode) -> Rewrites {
        (self.rewrites)(node)
    }
}

fn owner<R: Role>() -> String {
    format!("role {}", R::INFO.name)
}

/// The roles a topology may name.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    roles: Vec<RoleEntry>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds `R` (replacing a role of the same name).
    pub fn with<R: Role>(mut self) -> Registry {
        self.roles.retain(|r| r.info.name != R::INFO.name);
        self.roles.push(RoleEntry::of::<R>());
        self
    }

    pub fn get(&self, name: &str) -> Option<&RoleEntry> {
        self.roles.iter().find(|r| r.info.name == name)
    }

    /// The names, in registration order (for "expected one of …").
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.roles.iter().map(|r| r.info.name)
    }

    /// Builds the element `node.role` names.
    pub fn build(&self, node: &ElementNode) -> Result<Box<dyn AnyElement>, ConfigError> {
        let Some(r) = self.get(&node.role) else {
            return Err(ConfigError::new(
                "role",
                format!("no role {:?} (one of: {})", node.role, self.list()),
            ));
        };
        r.build(node)
    }

    /// `"router", "switch", …` for messages.
    pub fn list(&self) -> String {
        self.names()
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl ElementNode {
    /// The node's ports as an IP layer's, each needing an address.
    pub fn l3_ports(&self) -> Result<Vec<L3Port>, ConfigError> {
        self.ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Ok(L3Port {
                    name: p.name.clone(),
                    mac: p.mac,
                    address: p.address.ok_or_else(|| {
                        ConfigError::new(
                            format!("ports[{i}].address"),
                            format!("a {} port needs an address", self.role),
                        )
                    })?,
                    mtu: p.mtu,
                })
            })
            .collect()
    }

    /// Checks the node has exactly the ports `names`, in that order.
    pub fn expect_ports(&self, names: &[&str]) -> Result<(), ConfigError> {
        if self.ports.len() != names.len() {
            return Err(ConfigError::new(
                "ports",
                format!("role {} has exactly the ports {names:?}", self.role),
            ));
        }
        for (i, (p, want)) in self.ports.iter().zip(names).enumerate() {
            if p.name != *want {
                return Err(ConfigError::new(
                    format!("ports[{i}].name"),
                    format!("role {} expects port {want:?} here", self.role),
                ));
            }
        }
        Ok(())
    }
}
