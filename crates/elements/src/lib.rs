//! The network elements of the double11 lab: one file per role.
//!
//! Each is a sans-IO [`d11_core::Element`]: frames and time in, frames and
//! drops out. Forwarding elements follow Open vSwitch's shape: extract a key
//! from the frame, look it up, apply actions.
#![forbid(unsafe_code)]

pub mod bearer;
pub mod bgp;
pub mod enb;
pub mod gtpc;
pub mod mme;
pub mod null;
pub mod pgw;
pub mod role;
pub mod router;
pub mod s1link;
pub mod s6a;
pub mod sgw;
pub mod switch;
pub mod tunnel;
pub mod vgw;
pub mod vpn;
pub mod vswitch;

pub use role::{ElementNode, Registry, Role, RoleInfo};

/// Every role a topology may name: one line each.
pub fn registry() -> Registry {
    Registry::new()
        .with::<router::Router>()
        .with::<switch::Switch>()
        .with::<null::Null>()
        .with::<enb::Enb>()
        .with::<sgw::Sgw>()
        .with::<pgw::Pgw>()
        .with::<vswitch::VSwitch>()
        .with::<vgw::Vgw>()
        .with::<mme::Mme>()
}
