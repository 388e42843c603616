//! Wire formats of the double11 lab.
//!
//! Ethernet, ARP, IPv4, ICMPv4, UDP and TCP are parsed with [`etherparse`];
//! this crate holds the newtypes every element shares ([`MacAddr`],
//! [`Ipv4Cidr`]), the checksum arithmetic etherparse lacks (RFC 1071 sums and
//! the RFC 1624 incremental update used when a router decrements TTL), and the
//! small builders for the frames an element originates itself (ARP, ICMP).
//! Headers etherparse does not know (GTP-U, VXLAN, BGP, …) follow smoltcp's
//! `Packet<T>` / `Repr` pattern in modules of their own.
#![forbid(unsafe_code)]

pub mod addr;
pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod gtpu;
pub mod icmp;
pub mod ipv4;
pub mod vxlan;

pub use addr::{CidrError, Ipv4Cidr, MacAddr, MacParseError};
pub use etherparse;
