//! The mobile core on arbitrary input: GTP-U parsing (what parses re-emits
//! to a header that parses the same) and the PGW's on_frame (GTP-U endpoint, bearers, NAT
//! both ways): never a panic.
#![no_main]
use d11_core::L3Port;
use d11_core::nat::{NatConfig, SnatPool, Timeouts};
use d11_core::{Element, Instant, Outbox, PortId};
use d11_elements::bearer::Bearer;
use d11_elements::pgw::{Pgw, PgwConfig};
use d11_elements::router::{RouterConfig, StaticRoute};
use d11_wire::ethernet::{self, EtherType};
use d11_wire::gtpu::{GtpuPacket, GtpuRepr, Teid};
use d11_wire::ipv4::{protocol, Ipv4Repr};
use d11_wire::MacAddr;
use libfuzzer_sys::fuzz_target;

const S5_MAC: MacAddr = MacAddr([2, 0, 0, 0, 4, 1]);

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = GtpuPacket::new_checked(data) {
        let r = GtpuRepr::parse(&p);
        // Re-emitting gives the same header, up to what the receiver must
        // ignore (the spare flag bit, seq/N-PDU/next-type octets whose flag
        // is clear) [TS 29.281 § 5.1].
        let mut b = vec![];
        r.emit(&mut b);
        b.extend_from_slice(p.payload());
        let again = GtpuPacket::new_checked(&b[..]).expect("what we emit parses");
        assert_eq!(GtpuRepr::parse(&again), r);
        let _ = (p.to_string(), p.extensions().count());
    }
    let Some((&mode, rest)) = data.split_first() else { return };
    // Half the time the bytes are a GTP-U message to the PGW's S5 address,
    // so the fuzzer reaches the bearer lookup and the NAT.
    let frame = if mode & 0x80 != 0 {
        let mut f = vec![];
        ethernet::emit_header(&mut f, S5_MAC, MacAddr([2, 0, 0, 0, 3, 2]), EtherType::Ipv4);
        Ipv4Repr { src: "172.16.2.1".parse().unwrap(), dst: "172.16.2.2".parse().unwrap(), protocol: protocol::UDP, ttl: 64, ident: 1, dont_frag: false, payload_len: 8 + rest.len() }.emit(&mut f);
        f.extend_from_slice(&[0x08, 0x68, 0x08, 0x68]);
        f.extend_from_slice(&((8 + rest.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(rest);
        f
    } else {
        rest.to_vec()
    };
    let mut pgw = Pgw::new(PgwConfig {
        router: RouterConfig {
            ports: vec![
                L3Port { name: "s5".into(), mac: S5_MAC, address: "172.16.2.2/24".parse().unwrap(), mtu: 1500 },
                L3Port { name: "sgi".into(), mac: MacAddr([2, 0, 0, 0, 4, 2]), address: "198.51.100.1/30".parse().unwrap(), mtu: 1500 },
            ],
            routes: vec![StaticRoute { to: "0.0.0.0/0".parse().unwrap(), via: "198.51.100.2".parse().unwrap() }],
        },
        sgw: "172.16.2.1".parse().unwrap(),
        gateway: "10.45.0.1".parse().unwrap(),
        nat_pool: "198.51.100.128/25".parse().unwrap(),
        ue_mtu: 1400,
        nat: NatConfig {
            snat: Some(SnatPool { addrs: vec!["198.51.100.128".parse().unwrap()], ports: 1024..=1100 }),
            dnat: vec![],
            max_entries: 64,
            timeouts: Timeouts::default(),
        },
        bearers: vec![Bearer {
            imsi: "001010000000001".into(),
            ue_ip: "10.45.0.2".parse().unwrap(),
            enb_teid: Teid(0x100),
            sgw_s1u_teid: Teid(0x200),
            sgw_s5_teid: Teid(0x300),
            pgw_teid: Teid(0x400),
        }],
    })
    .expect("one bearer");
    let mut out = Outbox::new();
    pgw.on_frame(&mut (Instant::from_millis(1)).into(), PortId(u16::from(mode & 1)), &frame, &mut out);
    pgw.on_timer(&mut (Instant::from_millis(10_000_000)).into(), &mut out);
});
