//! The double11 lab: the topology model and its rules, the builder that turns
//! a topology into namespaces and wires, the teardown that removes them, and
//! the supervisor that keeps one process per element and app running.
//!
//! ```text
//! Topology::load ─► build(lab) ─► d11 supervise: Supervisor::run ─► teardown(lab)
//!   (validates)      namespaces,     one `d11-element` per element,    stop, kill,
//!                    wires, routes   one `d11 run` per app,            delete, rm
//!                                    restarted with backoff
//! ```
//!
//! Namespaces are `LAB-NODE` ([`netns_name`]); runtime state lives in
//! [`RunDir`] (`/run/d11/LAB/`). The schema: `docs/topology.md`.

pub mod bgplog;
mod build;
mod cmd;
mod names;
mod procfs;
mod supervisor;
mod sys;
pub mod tcpview;
mod teardown;
mod topology;
pub mod trace;
mod validate;

pub use build::{build, BuildError};
pub use names::{
    check_lab_name, etc_marker, netns_hosts_file, netns_name, netns_resolv_file, run_root,
    LabNameError, RunDir, MAX_LAB_NAME, MAX_NODE_NAME, RUN_ROOT,
};
pub use supervisor::{
    stop_supervisor, supervisor_pid, ChildSpec, ChildState, ChildStatus, Owner, Stopped,
    Supervisor, SupervisorError, SupervisorState, OWNER_POLL,
};
pub use sys::prepare_child;
pub use teardown::{list_labs, teardown, teardown_all, TeardownError, TeardownReport};
pub use topology::{
    default_mac, AppSpec, CapturePoint, ElementPort, ElementSpec, HostEntry, HttpDns, Node,
    NodeKind, Pki, Port, PortAttach, Route, Topology, TopologyError, Wire, WireEnd, WireEndError,
    WireKind, DEFAULT_MTU,
};
pub use topology::{direction_seed, WireDir};
