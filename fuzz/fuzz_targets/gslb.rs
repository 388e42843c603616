//! The GSLB's answer (crates/apps/src/dns/gslb.rs) on arbitrary bytes from
//! a resolver's address: never a panic; an answer, when there is one, is a
//! response with the query's id.
#![no_main]
use d11_apps::dns::gslb::GslbSettings;
use d11_apps::dns::zone::Transport;
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"
zone = "gslb.d11cloud.com."
ns = "ns1"
names = ["www.geektime.com"]
regions = [
  { name = "east", vips = ["203.0.113.24"], clients = ["198.18.2.0/28"] },
  { name = "north", vips = ["198.19.24.24"], clients = ["198.18.3.0/28"] },
]
"#;

fuzz_target!(|data: &[u8]| {
    let s: GslbSettings = toml::from_str(CONFIG).expect("config");
    let mut g = s.gslb("198.18.1.18".parse().expect("addr")).expect("gslb");
    for via in [Transport::Udp, Transport::Tcp] {
        if let (Some(out), _) = g.answer(data, "198.18.2.2".parse().expect("addr"), via) {
            assert!(out.len() >= 12 && out[..2] == data[..2] && out[2] & 0x80 != 0);
        }
    }
});
