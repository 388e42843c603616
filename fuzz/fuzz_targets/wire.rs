//! Every parser we wrote: no input may panic, and what parses re-emits.
#![no_main]
use d11_wire::diameter::{self, DiameterPacket};
use d11_wire::nas::{EmmMessage, EsmMessage, Pdu};
use d11_wire::gtpv2c::{self, GtpcPacket};
use d11_wire::s1ap::{self, S1apPdu};
use d11_wire::sctp::{ChunkRepr, SctpPacket, SctpRepr};
use d11_wire::vxlan::{VxlanPacket, VxlanRepr};
use d11_wire::{arp::ArpRepr, ethernet::EthernetFrame, icmp, ipv4::Ipv4Packet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = EthernetFrame::new_checked(data) {
        let _ = (e.src(), e.dst(), e.ethertype(), e.payload(), e.to_string());
    }
    if let Ok(a) = ArpRepr::parse(data) {
        let mut b = vec![];
        a.emit(&mut b);
        assert_eq!(ArpRepr::parse(&b), Ok(a));
    }
    if let Ok(p) = Ipv4Packet::new_checked(data) {
        let _ = (p.payload(), p.verify_checksum(), p.to_string(), icmp::is_icmp_error(&p), icmp::as_echo_request(&p));
        if icmp::may_send_error_about(&p) {
            let mut b = vec![];
            icmp::emit_error(&mut b, p.dst(), 1, icmp::IcmpError::TtlExceeded, &p);
            assert!(b.len() <= icmp::MAX_ERROR_LEN);
        }
    }
    if let Ok(v) = VxlanPacket::new_checked(data) {
        // What parses re-emits to a header that parses the same (the
        // reserved bits, ignored on receipt, come back zero) [RFC 7348 § 5].
        let r = VxlanRepr::parse(&v);
        let mut b = vec![];
        r.emit(&mut b);
        b.extend_from_slice(v.payload());
        let again = VxlanPacket::new_checked(&b[..]).expect("what we emit parses");
        assert_eq!(VxlanRepr::parse(&again), r);
        assert_eq!(again.payload(), v.payload());
        let _ = (v.flags(), v.to_string());
    }
    if let Ok(p) = GtpcPacket::new_checked(data) {
        let _ = (p.teid(), p.seq(), p.to_string());
        for ie in p.ies_ref().map_while(Result::ok) {
            let _ = (gtpv2c::ie::Fteid::parse(ie.value), gtpv2c::ie::tbcd(ie.value), gtpv2c::ie::apn(ie.value));
            let _ = gtpv2c::ies(ie.value).count();
        }
    }
    // What NAS parses re-emits to the same message.
    if let Ok(Pdu::Plain(_)) = Pdu::parse(data) {
        if let Ok(m) = EmmMessage::parse(data) {
            assert_eq!(EmmMessage::parse(&m.to_vec()).as_ref(), Ok(&m));
        }
        if let Ok(m) = EsmMessage::parse(data) {
            assert_eq!(EsmMessage::parse(&m.to_vec()).as_ref(), Ok(&m));
        }
    }
    // What S1AP parses re-emits to the same PDU; no IE value panics.
    if let Ok(p) = S1apPdu::parse(data) {
        assert_eq!(S1apPdu::parse(&p.to_vec()).as_ref(), Ok(&p));
        for i in &p.ies {
            let v = &i.value;
            let _ = (s1ap::ie::enb_ue_id(v), s1ap::ie::nas_pdu(v), s1ap::ie::erab_to_setup_list(v), s1ap::ie::cause(v));
        }
    }
    let _ = diameter::message_len(data);
    if let Ok(p) = DiameterPacket::new_checked(data) {
        let _ = (p.command_code(), p.to_string());
        for a in p.avps_ref().map_while(Result::ok) {
            let _ = (a.u32(), a.utf8(), a.ipv4(), a.group().count());
        }
    }
    if let Ok(p) = SctpPacket::new_checked(data) {
        // Each chunk that parses re-emits to one that parses the same.
        let _ = (p.verify_checksum(), p.to_string());
        for c in p.chunks_ref().map_while(Result::ok) {
            if let Ok(r) = ChunkRepr::parse(c) {
                let mut b = vec![];
                SctpRepr::parse(&p).emit(&mut b, &[r]);
                let again = SctpPacket::new_checked(&b[..]).expect("what we emit parses");
                assert!(again.verify_checksum());
                let c2 = again.chunks_ref().next().expect("one chunk").expect("well formed");
                assert_eq!(ChunkRepr::parse(c2), Ok(r));
            }
        }
    }
    // BGP has a target of its own (bgp_wire), which frames the input.
});
