//! The mme both chapter-3 targets fuzz: ports s1mme 172.16.3.2, s6a
//! 172.16.5.1 and s11 172.16.4.1, an hss, an sgw and a pgw configured.
use d11_core::{L3Port, L3};
use d11_elements::mme::{Mme, MmeSettings, NasCiphering, Plmn};
use d11_wire::MacAddr;

pub const S1MME_MAC: MacAddr = MacAddr([2, 0, 0, 0, 3, 2]);
pub const S11_MAC: MacAddr = MacAddr([2, 0, 0, 0, 4, 1]);

pub fn mme() -> Mme {
    let l3 = L3::with_ports(vec![
        L3Port { name: "s1mme".into(), mac: S1MME_MAC, address: "172.16.3.2/24".parse().unwrap(), mtu: 1500 },
        L3Port { name: "s6a".into(), mac: MacAddr([2, 0, 0, 0, 5, 1]), address: "172.16.5.1/24".parse().unwrap(), mtu: 1500 },
        L3Port { name: "s11".into(), mac: S11_MAC, address: "172.16.4.1/24".parse().unwrap(), mtu: 1500 },
    ]);
    let settings = MmeSettings {
        plmn: Plmn::parse("00101").unwrap(),
        group: 0x8001,
        code: 1,
        hss: Some("172.16.5.2".parse().unwrap()),
        sgw: Some("172.16.4.2".parse().unwrap()),
        pgw: Some("172.16.2.2".parse().unwrap()),
        origin_host: "mme.epc.lab".into(),
        realm: "epc.lab".into(),
        nas_ciphering: NasCiphering::Eea0,
    };
    Mme::new(l3, settings)
}
