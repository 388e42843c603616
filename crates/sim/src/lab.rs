//! A whole topology file in the simulator: every element built by its role
//! from the registry the topology was loaded with, every host a
//! [`SimHost`] (its apps do not run here: a test drives the host), every
//! wire a virtual link. The same file `d11 up` builds, on a virtual clock.

use crate::{LinkId, LinkParams, NodeId, Sim, SimHost};
use d11_core::{ConfigError, Instant};
use d11_lab::{NodeKind, Topology, Wire};
use d11_wire::Ipv4Cidr;
use std::collections::BTreeMap;

/// Why a topology cannot run in the simulator.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// An element's settings are refused by its role.
    #[error("{node}.{}: {}", .error.key, .error.message)]
    Element { node: String, error: ConfigError },
    /// The simulator's host has one port.
    #[error("{node}: a simulated host has one port, not {ports}")]
    HostPorts { node: String, ports: usize },
}

/// A topology running in a [`Sim`], its nodes and links by name.
pub struct SimLab {
    pub sim: Sim,
    nodes: BTreeMap<String, NodeId>,
    links: BTreeMap<String, LinkId>,
}

impl SimLab {
    /// Builds `topo` in a simulator seeded with `seed`; `params` gives each
    /// wire (by its `a--b` name) its delay and loss.
    pub fn new(
        topo: &Topology,
        seed: u64,
        mut params: impl FnMut(&Wire) -> LinkParams,
    ) -> Result<SimLab, LabError> {
        let mut sim = Sim::new(seed);
        let mut nodes = BTreeMap::new();
        for n in &topo.nodes {
            let ports: Vec<&str> = n.ports.iter().map(|p| p.name.as_str()).collect();
            let id = match n.kind {
                NodeKind::Element => {
                    let element = topo
                        .build_element(&n.name)
                        .expect("validated: an element has a role")
                        .map_err(|error| LabError::Element {
                            node: n.name.clone(),
                            error,
                        })?;
                    sim.add_node(&n.name, element, &ports)
                }
                NodeKind::Host => {
                    let [p] = n.ports.as_slice() else {
                        return Err(LabError::HostPorts {
                            node: n.name.clone(),
                            ports: n.ports.len(),
                        });
                    };
                    // A phone's port has no address until its baseband
                    // attaches (a test then sets it: `SimHost::set_address`).
                    let unaddressed = Ipv4Cidr::new(std::net::Ipv4Addr::UNSPECIFIED, 32)
                        .expect("a /32 is a prefix");
                    let address = p.address.unwrap_or(unaddressed);
                    let gateway = n
                        .routes
                        .iter()
                        .find(|r| r.to.prefix_len() == 0)
                        .map(|r| r.via);
                    let host = SimHost::with_mtu(p.mac(&n.name), address, gateway, p.mtu);
                    sim.add_node(&n.name, Box::new(host), &ports)
                }
            };
            nodes.insert(n.name.clone(), id);
        }
        let mut links = BTreeMap::new();
        for w in &topo.wires {
            let end = |e: &d11_lab::WireEnd| {
                let node = nodes[&e.node];
                let port = topo
                    .node(&e.node)
                    .and_then(|n| n.ports.iter().position(|p| p.name == e.port))
                    .expect("validated: a wire's ends exist");
                (node, d11_core::PortId(port as u16))
            };
            let id = sim.link(end(&w.a), end(&w.b), params(w));
            links.insert(w.name(), id);
        }
        Ok(SimLab { sim, nodes, links })
    }

    /// The element `name` killed and built again from `topo` (the file
    /// the lab was built from): its state is lost, its wires stay.
    ///
    /// # Panics
    /// If `name` is not an element of `topo` (a mistake in the test).
    pub fn restart(&mut self, topo: &Topology, name: &str) {
        let element = topo
            .build_element(name)
            .unwrap_or_else(|| panic!("{name} is not an element"))
            .unwrap_or_else(|e| panic!("{name} builds again: {}", e.message));
        let id = self.node(name);
        self.sim.restart_node(id, element);
    }

    /// The node `name`.
    ///
    /// # Panics
    /// If the topology has no such node (a mistake in the test).
    pub fn node(&self, name: &str) -> NodeId {
        *self
            .nodes
            .get(name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// Every node's name, in name order.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    /// The wire `a--b`.
    ///
    /// # Panics
    /// If the topology has no such wire.
    pub fn link(&self, name: &str) -> LinkId {
        *self
            .links
            .get(name)
            .unwrap_or_else(|| panic!("no wire {name}"))
    }

    /// The host `name`, to make it send or read what it received.
    pub fn host(&mut self, name: &str) -> &mut SimHost {
        let id = self.node(name);
        self.sim.node_mut(id)
    }

    /// The simulator's clock.
    pub fn now(&self) -> Instant {
        self.sim.now()
    }
}
