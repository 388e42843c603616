//! The double11 lab: the topology model and its rules, the builder that turns
//! a topology into namespaces and wires, the teardown that removes them, and
//! the supervisor that keeps one process per element running.
//!
//! ```text
//! Topology::load ─► validate ─► build(lab) ─► Supervisor (d11 supervise) ─► teardown(lab)
//! ```
//!
//! Namespaces are `LAB-NODE` ([`netns_name`]); runtime state lives in
//! [`RunDir`] (`/run/d11/LAB/`).

mod names;
mod topology;
mod validate;

pub use names::{
    check_lab_name, netns_name, LabNameError, RunDir, MAX_LAB_NAME, MAX_NODE_NAME, RUN_ROOT,
};
pub use topology::{
    default_mac, CapturePoint, ElementPort, ElementSpec, Node, NodeKind, Port, PortAttach, Role,
    Route, Topology, TopologyError, Wire, WireEnd, WireEndError, WireKind, DEFAULT_MTU,
};
