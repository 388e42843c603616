//! `router`: an IPv4 router [RFC 1812]. (Implementation in progress.)

use d11_wire::{Ipv4Cidr, MacAddr};
use std::net::Ipv4Addr;

/// One routed port: its MAC, its address and subnet, its MTU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterPort {
    pub name: String,
    pub mac: MacAddr,
    pub address: Ipv4Cidr,
    pub mtu: u16,
}

/// A static route: packets to `to` go to the neighbour `via`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticRoute {
    pub to: Ipv4Cidr,
    pub via: Ipv4Addr,
}

/// What a router is built from (the topology's node, resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    pub ports: Vec<RouterPort>,
    pub routes: Vec<StaticRoute>,
}
