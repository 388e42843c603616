//! Wire formats of the double11 lab.
//!
//! Ethernet, ARP, IPv4, ICMPv4, UDP and TCP are parsed with [`etherparse`];
//! this crate holds the newtypes every element shares ([`MacAddr`],
//! [`Ipv4Cidr`]), the checksum arithmetic etherparse lacks (RFC 1071 sums and
//! the RFC 1624 incremental update used when a router decrements TTL), and the
//! small builders for the frames an element originates itself (ARP, ICMP).
//! Headers etherparse does not know (GTP-U, VXLAN, SCTP, …) follow smoltcp's
//! `Packet<T>` / `Repr` pattern in modules of their own.
#![forbid(unsafe_code)]

pub mod addr;
pub mod arp;
pub mod bgp;
pub mod checksum;
pub mod diameter;
pub mod esp;
pub mod ethernet;
pub mod gtpu;
pub mod gtpv2c;
pub mod icmp;
pub mod ipv4;
pub mod nas;
pub mod pco;
pub mod s1ap;
pub mod sctp;
pub mod udp;
pub mod vxlan;

pub use addr::{CidrError, Ipv4Cidr, MacAddr, MacParseError};

/// Bytes from hex text such as `tshark -x` or scapy's `bytes(p).hex()`
/// print them: the form every byte fixture of the tests is kept in.
///
/// # Panics
/// On an odd length or a non-hex digit: a broken fixture.
pub fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd-length hex fixture");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("a hex fixture"))
        .collect()
}
pub use etherparse;
