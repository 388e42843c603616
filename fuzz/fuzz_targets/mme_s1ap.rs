//! The mme's S1AP and NAS handling on arbitrary bytes that arrive through
//! an established SCTP association: an eNodeB's SCTP stack (the element
//! layer's own, `d11_core::l3::sctp`) back to back with the mme in memory
//! makes the four-way handshake first, so the input reaches the state
//! machine rather than the packet checks. The first byte picks how the
//! rest is sent, each piece (a length octet, then that many bytes) one
//! SCTP DATA message:
//! - bit 0: an S1 Setup Request first (the mme's eNodeB is then ready);
//! - bit 1: a real Attach Request (the phone's baseband's) in an Initial UE
//!   Message first, so a UE context exists (MME UE S1AP ID 1; with no hss
//!   reachable it ends in Attach Reject #17);
//! - bits 2–3: each piece as the S1AP PDU itself (0), as the NAS-PDU of an
//!   Uplink NAS Transport for that UE (1), of an Initial UE Message (2), or
//!   as an S1AP PDU with the wrong payload protocol identifier (3);
//! - bits 4–7: the SCTP stream (UE streams are 1–15, 0 is non-UE).
//!
//! Then 3 s and 31 s pass (the mme's timers, SCTP heartbeats, T3422).
//! Never a panic: bad S1AP or NAS is a counted drop or the protocol's own
//! answer.
#![no_main]
use d11_apps::baseband::{Baseband, UsimConfig};
use d11_core::{Ctx, Element, Input, Instant, L3Port, Outbox, PortId, L3};
use d11_elements::mme::Mme;
use d11_wire::s1ap::{self, id, ie, proc, Criticality, Kind, ProtocolIe, S1apPdu};
use d11_wire::MacAddr;
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddrV4;
use std::time::Duration;

#[path = "common/mme.rs"]
mod common_mme;
use common_mme::mme;

const ENB_MAC: MacAddr = MacAddr([2, 0, 0, 0, 3, 1]);
const PLMN: [u8; 3] = [0x00, 0xf1, 0x10];
const ENB_UE_ID: u32 = 1;

/// Moves frames between the mme's s1mme port and the eNodeB until both
/// are quiet (the mme's other ports lead nowhere: their frames go).
fn pump(m: &mut Mme, enb: &mut L3, cx: &mut Ctx, ecx: &mut Ctx) {
    let mut out = Outbox::new();
    let mut back = Outbox::new();
    m.on_timer(cx, &mut out);
    enb.on_timer(ecx, &mut back);
    for _ in 0..64 {
        let frames: Vec<Vec<u8>> = out.frames().filter(|(p, _)| *p == PortId(0)).map(|(_, f)| f.to_vec()).collect();
        out.clear();
        for f in &frames {
            let _: Input = enb.input(ecx, PortId(0), f, &mut back);
        }
        // What reached the eNodeB is read and forgotten.
        while enb.sctp_stack(ecx).recv().is_some() {}
        while enb.sctp_stack(ecx).next_event().is_some() {}
        enb.poll(ecx, &mut back);
        let replies: Vec<Vec<u8>> = back.frames().map(|(_, f)| f.to_vec()).collect();
        back.clear();
        if frames.is_empty() && replies.is_empty() {
            break;
        }
        for f in &replies {
            m.on_frame(cx, PortId(0), f, &mut out);
        }
    }
}

fn at(cx: &mut Ctx, ecx: &mut Ctx, now: Instant) {
    cx.at(now);
    ecx.at(now);
}

fn s1_setup() -> Vec<u8> {
    S1apPdu {
        kind: Kind::Initiating,
        procedure: proc::S1_SETUP,
        criticality: Criticality::Reject,
        ies: vec![
            ProtocolIe { id: id::GLOBAL_ENB_ID, criticality: Criticality::Reject, value: ie::global_enb_id_value(PLMN, 0x10) },
            ProtocolIe { id: id::SUPPORTED_TAS, criticality: Criticality::Reject, value: ie::supported_tas_value(1, PLMN) },
            ProtocolIe { id: id::PAGING_DRX, criticality: Criticality::Ignore, value: ie::paging_drx_value(2) },
        ],
    }
    .to_vec()
}

fn location() -> [ProtocolIe; 2] {
    [
        ProtocolIe { id: id::TAI, criticality: Criticality::Reject, value: ie::tai_value(ie::Tai { plmn: PLMN, tac: 1 }) },
        ProtocolIe { id: id::EUTRAN_CGI, criticality: Criticality::Ignore, value: ie::eutran_cgi_value(PLMN, 0x10 << 8 | 1) },
    ]
}

/// Initial UE Message [TS 36.413 § 9.1.7.1] carrying `nas`.
fn initial_ue(nas: &[u8]) -> Vec<u8> {
    let mut ies = vec![
        ProtocolIe { id: id::ENB_UE_S1AP_ID, criticality: Criticality::Reject, value: ie::enb_ue_id_value(ENB_UE_ID) },
        ProtocolIe { id: id::NAS_PDU, criticality: Criticality::Reject, value: ie::nas_pdu_value(nas) },
    ];
    ies.extend(location());
    ies.push(ProtocolIe { id: id::RRC_ESTABLISHMENT_CAUSE, criticality: Criticality::Ignore, value: ie::rrc_cause_value(ie::RRC_MO_SIGNALLING) });
    S1apPdu { kind: Kind::Initiating, procedure: proc::INITIAL_UE_MESSAGE, criticality: Criticality::Ignore, ies }.to_vec()
}

/// Uplink NAS Transport [TS 36.413 § 9.1.7.3] for MME UE S1AP ID 1.
fn uplink_nas(nas: &[u8]) -> Vec<u8> {
    let mut ies = ProtocolIe::ue_ids(1, ENB_UE_ID, Criticality::Reject);
    ies.push(ProtocolIe { id: id::NAS_PDU, criticality: Criticality::Reject, value: ie::nas_pdu_value(nas) });
    ies.extend(location());
    S1apPdu { kind: Kind::Initiating, procedure: proc::UPLINK_NAS_TRANSPORT, criticality: Criticality::Ignore, ies }.to_vec()
}

fn attach_request() -> Vec<u8> {
    let usim = UsimConfig {
        imsi: "001010000000001".into(),
        k: "465b5ce8b199b49faa5f0a2ee238a6bc".into(),
        opc: "cd63cb71954a9f4e48a5994e37a02baf".into(),
    };
    Baseband::new(&usim, PLMN).expect("a USIM").attach_request()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else { return };
    let mut m = mme();
    let mut enb = L3::with_ports(vec![L3Port { name: "s1mme".into(), mac: ENB_MAC, address: "172.16.3.1/24".parse().unwrap(), mtu: 1500 }]);
    let mut now = Instant::from_millis(1);
    let mut cx = Ctx::new(now, 1);
    let mut ecx = Ctx::new(now, 2);
    pump(&mut m, &mut enb, &mut cx, &mut ecx);
    let local = SocketAddrV4::new("172.16.3.1".parse().unwrap(), s1ap::PORT);
    let remote = SocketAddrV4::new("172.16.3.2".parse().unwrap(), s1ap::PORT);
    let assoc = enb.sctp_stack(&mut ecx).connect(&mut ecx, local, remote, 16);
    pump(&mut m, &mut enb, &mut cx, &mut ecx);
    let send = |m: &mut Mme, enb: &mut L3, cx: &mut Ctx, ecx: &mut Ctx, stream: u16, ppid: u32, pdu: &[u8]| {
        if !pdu.is_empty() {
            let _ = enb.sctp_stack(ecx).send(ecx, assoc, stream, ppid, pdu);
        }
        pump(m, enb, cx, ecx);
    };
    if mode & 1 != 0 {
        send(&mut m, &mut enb, &mut cx, &mut ecx, 0, s1ap::PPID, &s1_setup());
    }
    if mode & 2 != 0 {
        send(&mut m, &mut enb, &mut cx, &mut ecx, 2, s1ap::PPID, &initial_ue(&attach_request()));
    }
    let stream = u16::from(mode >> 4);
    let mut rest = data;
    while let Some((&n, tail)) = rest.split_first() {
        let n = usize::from(n).min(tail.len());
        let (piece, tail) = tail.split_at(n);
        rest = tail;
        let (pdu, ppid) = match mode >> 2 & 3 {
            0 => (piece.to_vec(), s1ap::PPID),
            1 => (uplink_nas(piece), s1ap::PPID),
            2 => (initial_ue(piece), s1ap::PPID),
            _ => (piece.to_vec(), 46),
        };
        now = now + Duration::from_millis(50);
        at(&mut cx, &mut ecx, now);
        send(&mut m, &mut enb, &mut cx, &mut ecx, stream, ppid, &pdu);
    }
    for later in [3, 31] {
        now = now + Duration::from_secs(later);
        at(&mut cx, &mut ecx, now);
        pump(&mut m, &mut enb, &mut cx, &mut ecx);
    }
    let _ = m.report();
});
