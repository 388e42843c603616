//! The authoritative server's answer (crates/apps/src/dns/zone.rs) on
//! arbitrary bytes, over UDP and TCP: never a panic; an answer, when there
//! is one, is a response with the query's id and fits the transport.
#![no_main]
use d11_apps::dns::zone::{Authority, Transport, Zone, MAX_UDP};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const SHOP: &str = "$TTL 3600
@      IN SOA ns1 hostmaster 2026111101 7200 3600 1209600 300
@      IN NS  ns1
ns1    IN A   198.18.1.2
www    600 IN CNAME www.geektime.com.gslb.d11cloud.com.
loop1  IN CNAME loop2
loop2  IN CNAME loop1
sub    IN NS  ns.sub
ns.sub IN A   198.18.1.9
";

fn authority() -> &'static Authority {
    static A: OnceLock<Authority> = OnceLock::new();
    A.get_or_init(|| Authority::new(vec![Zone::parse(SHOP, "geektime.com.").expect("the zone")]))
}

fuzz_target!(|data: &[u8]| {
    for via in [Transport::Udp, Transport::Tcp] {
        if let (Some(out), _) = authority().answer(data, via) {
            assert!(out.len() >= 12 && out[..2] == data[..2] && out[2] & 0x80 != 0);
            if via == Transport::Udp {
                assert!(out.len() <= MAX_UDP);
            }
        }
    }
});
