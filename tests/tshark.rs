//! The attach's protocols as the lab encodes them, checked by a real
//! decoder: Wireshark's dissectors (tshark). An eNodeB's and an MME's IP
//! layers associate over SCTP and carry S1AP with NAS inside; an MME's and
//! an SGW's exchange GTPv2-C over their UDP sockets; an MME's Diameter to
//! the HSS rides TCP segments. Every frame is written to a pcapng, and
//! tshark must decode each as the protocol it is, with no malformed frame,
//! no error, no "undecoded" note and every SCTP checksum right.
//!
//! The unit tests of crates/wire compare the same encoders with golden
//! bytes from pycrate and scapy; this one keeps checking them against the
//! dissectors CI installs (scripts/lib.sh), so a change that breaks a
//! message for Wireshark fails here.

mod support;

use d11_core::l3::{Input, L3Port, L3};
use d11_core::pcapng::PcapngWriter;
use d11_core::{Ctx, Instant, Outbox, PortId};
use d11_wire::diameter::{self, avp, cmd, Flags, APP_S6A, VENDOR_3GPP};
use d11_wire::gtpv2c::{self, ie_type, iface, msg, MessageBuilder};
use d11_wire::nas::{EmmMessage, EsmMessage, MobileIdentity, KSI_NONE};
use d11_wire::s1ap::{self, id, ie, proc, Criticality, Kind, ProtocolIe, S1apPdu};
use d11_wire::{etherparse, MacAddr};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;
use support::*;

const ENB_MAC: MacAddr = MacAddr([2, 0, 0, 0, 3, 1]);
const MME_MAC: MacAddr = MacAddr([2, 0, 0, 0, 3, 2]);
const ENB: Ipv4Addr = Ipv4Addr::new(172, 16, 3, 1);
const MME: Ipv4Addr = Ipv4Addr::new(172, 16, 3, 2);
const PLMN: [u8; 3] = [0x00, 0xf1, 0x10];

fn layer(mac: MacAddr, addr: &str) -> L3 {
    L3::with_ports(vec![L3Port {
        name: "eth0".into(),
        mac,
        address: addr.parse().unwrap(),
        mtu: 1500,
    }])
}

/// Two layers on one wire; every frame that crosses is kept.
struct Wire {
    ends: [L3; 2],
    cx: [Ctx; 2],
    frames: Vec<Vec<u8>>,
}

impl Wire {
    fn new() -> Wire {
        Wire {
            ends: [
                layer(ENB_MAC, "172.16.3.1/24"),
                layer(MME_MAC, "172.16.3.2/24"),
            ],
            cx: [Ctx::new(Instant::ZERO, 1), Ctx::new(Instant::ZERO, 2)],
            frames: vec![],
        }
    }

    /// Polls both ends and carries frames until the wire is quiet, running
    /// the timers due within a second (delayed SACKs) on the way.
    fn settle(&mut self) {
        let until = self.cx[0].now + Duration::from_secs(1);
        let mut queue: Vec<(usize, Vec<u8>)> = vec![];
        for _ in 0..10_000 {
            for i in 0..2 {
                let mut o = Outbox::new();
                self.ends[i].poll(&mut self.cx[i], &mut o);
                queue.extend(o.frames().map(|(_, f)| (1 - i, f.to_vec())));
            }
            if queue.is_empty() {
                let next = self.ends.iter().filter_map(L3::poll_at).min();
                let Some(t) = next.filter(|t| *t <= until) else {
                    return;
                };
                for i in 0..2 {
                    self.cx[i].now = self.cx[i].now.max(t);
                    if self.ends[i].poll_at().is_some_and(|d| d <= t) {
                        let mut o = Outbox::new();
                        self.ends[i].on_timer(&mut self.cx[i], &mut o);
                        queue.extend(o.frames().map(|(_, f)| (1 - i, f.to_vec())));
                    }
                }
                continue;
            }
            for (to, f) in std::mem::take(&mut queue) {
                let mut o = Outbox::new();
                let input = self.ends[to].input(&mut self.cx[to], PortId(0), &f, &mut o);
                assert!(matches!(input, Input::Done), "{input:?}");
                assert!(o.drops().is_empty(), "{:?}", o.drops());
                self.frames.push(f);
                queue.extend(o.frames().map(|(_, f)| (1 - to, f.to_vec())));
            }
        }
        panic!("the wire never went quiet");
    }
}

fn pdu(kind: Kind, procedure: u8, ies: Vec<(u16, Vec<u8>)>) -> Vec<u8> {
    S1apPdu {
        kind,
        procedure,
        criticality: Criticality::Reject,
        ies: ies
            .into_iter()
            .map(|(id, value)| ProtocolIe {
                id,
                criticality: Criticality::Reject,
                value,
            })
            .collect(),
    }
    .to_vec()
}

/// The attach's S1AP messages, each NAS inside written by our encoder.
fn s1ap_messages() -> Vec<(bool, Vec<u8>)> {
    let ids = || {
        vec![
            (id::MME_UE_S1AP_ID, ie::mme_ue_id_value(7)),
            (id::ENB_UE_S1AP_ID, ie::enb_ue_id_value(1)),
        ]
    };
    let pdn = EsmMessage::PdnConnectivityRequest {
        pti: 1,
        pdn_type: 1,
        request_type: 1,
        pco: Some(d11_wire::pco::Pco::dns_request()),
    };
    let attach = EmmMessage::AttachRequest {
        ksi: KSI_NONE,
        attach_type: 1,
        identity: MobileIdentity::Imsi("001010000000001".into()),
        ue_network_capability: vec![0xe0, 0xe0],
        esm: pdn.to_vec(),
    };
    let auth = EmmMessage::AuthenticationRequest {
        ksi: 0,
        rand: [0x23; 16],
        autn: [0xaa; 16],
    };
    let res = EmmMessage::AuthenticationResponse { res: vec![0xa5; 8] };
    let bearer = EsmMessage::ActivateDefaultBearerRequest {
        ebi: 5,
        pti: 1,
        qci: 9,
        apn: "internet".into(),
        pdn_address: Ipv4Addr::new(10, 45, 0, 2),
        pco: d11_wire::pco::Pco::answer(
            &d11_wire::pco::Pco::dns_request(),
            &[Ipv4Addr::new(198, 18, 2, 2)],
        ),
    };
    let accept = EmmMessage::AttachAccept {
        result: 1,
        t3412: 0x29,
        tai_list: vec![0x00, 0x00, 0xf1, 0x10, 0x00, 0x01],
        esm: bearer.to_vec(),
        guti: None,
    };
    let tai = ie::tai_value(ie::Tai { plmn: PLMN, tac: 1 });
    let cgi = ie::eutran_cgi_value(PLMN, 0x10);
    let with = |mut v: Vec<(u16, Vec<u8>)>, more: Vec<(u16, Vec<u8>)>| {
        v.extend(more);
        v
    };
    vec![
        (
            true,
            pdu(
                Kind::Initiating,
                proc::S1_SETUP,
                vec![
                    (id::GLOBAL_ENB_ID, ie::global_enb_id_value(PLMN, 1)),
                    (id::SUPPORTED_TAS, ie::supported_tas_value(1, PLMN)),
                    (id::PAGING_DRX, ie::paging_drx_value(2)),
                ],
            ),
        ),
        (
            false,
            pdu(
                Kind::Successful,
                proc::S1_SETUP,
                vec![
                    (
                        id::SERVED_GUMMEIS,
                        ie::served_gummeis_value(PLMN, 0x8001, 1),
                    ),
                    (id::RELATIVE_MME_CAPACITY, ie::relative_capacity_value(255)),
                ],
            ),
        ),
        (
            true,
            pdu(
                Kind::Initiating,
                proc::INITIAL_UE_MESSAGE,
                vec![
                    (id::ENB_UE_S1AP_ID, ie::enb_ue_id_value(1)),
                    (id::NAS_PDU, ie::nas_pdu_value(&attach.to_vec())),
                    (id::TAI, tai.clone()),
                    (id::EUTRAN_CGI, cgi.clone()),
                    (
                        id::RRC_ESTABLISHMENT_CAUSE,
                        ie::rrc_cause_value(ie::RRC_MO_SIGNALLING),
                    ),
                ],
            ),
        ),
        (
            false,
            pdu(
                Kind::Initiating,
                proc::DOWNLINK_NAS_TRANSPORT,
                with(
                    ids(),
                    vec![(id::NAS_PDU, ie::nas_pdu_value(&auth.to_vec()))],
                ),
            ),
        ),
        (
            true,
            pdu(
                Kind::Initiating,
                proc::UPLINK_NAS_TRANSPORT,
                with(
                    ids(),
                    vec![
                        (id::NAS_PDU, ie::nas_pdu_value(&res.to_vec())),
                        (id::EUTRAN_CGI, cgi),
                        (id::TAI, tai),
                    ],
                ),
            ),
        ),
        (
            false,
            pdu(
                Kind::Initiating,
                proc::INITIAL_CONTEXT_SETUP,
                with(
                    ids(),
                    vec![
                        (
                            id::UE_AGGREGATE_MAXIMUM_BITRATE,
                            ie::ue_ambr_value(100_000_000, 50_000_000),
                        ),
                        (
                            id::E_RAB_TO_BE_SETUP_LIST_CTXT_SU_REQ,
                            ie::erab_to_setup_list_value(&[ie::ErabToSetup {
                                erab_id: 5,
                                qci: 9,
                                priority: 9,
                                may_preempt: false,
                                preemptable: true,
                                addr: Ipv4Addr::new(172, 16, 1, 2),
                                teid: 0x301,
                                nas: Some(accept.to_vec()),
                            }]),
                        ),
                        (
                            id::UE_SECURITY_CAPABILITIES,
                            ie::ue_security_capabilities_value(0xc000, 0xc000),
                        ),
                        (id::SECURITY_KEY, ie::security_key_value(&[7; 32])),
                    ],
                ),
            ),
        ),
        (
            true,
            pdu(
                Kind::Successful,
                proc::INITIAL_CONTEXT_SETUP,
                with(
                    ids(),
                    vec![(
                        id::E_RAB_SETUP_LIST_CTXT_SU_RES,
                        ie::erab_setup_list_res_value(&[(5, Ipv4Addr::new(172, 16, 1, 1), 0x501)]),
                    )],
                ),
            ),
        ),
        (
            false,
            pdu(
                Kind::Initiating,
                proc::UE_CONTEXT_RELEASE,
                vec![
                    (id::UE_S1AP_IDS, ie::ue_s1ap_ids_value(7, 1)),
                    (id::CAUSE, ie::cause_value(ie::Cause::Nas(ie::NAS_DETACH))),
                ],
            ),
        ),
        (true, pdu(Kind::Successful, proc::UE_CONTEXT_RELEASE, ids())),
    ]
}

fn gtpc_messages() -> Vec<Vec<u8>> {
    let f = |i, t, a: &str| gtpv2c::fteid(i, t, a.parse().unwrap());
    let mut m = MessageBuilder::new(msg::CREATE_SESSION_REQUEST, Some(0), 1);
    m.ie(
        ie_type::IMSI,
        0,
        &gtpv2c::ie::tbcd_value("001010000000001").unwrap(),
    )
    .ie(ie_type::SERVING_NETWORK, 0, &PLMN)
    .ie(ie_type::RAT_TYPE, 0, &[gtpv2c::RAT_EUTRAN])
    .fteid(0, f(iface::S11_MME, 1, "172.16.3.1"))
    .fteid(1, f(iface::S5_PGW_GTPC, 0, "172.16.5.2"))
    .ie(ie_type::APN, 0, &gtpv2c::ie::apn_value("internet"))
    .ie(ie_type::PDN_TYPE, 0, &[gtpv2c::PDN_IPV4])
    .ie(
        ie_type::PAA,
        0,
        &gtpv2c::ie::paa_ipv4_value(Ipv4Addr::UNSPECIFIED),
    )
    .ie(ie_type::AMBR, 0, &gtpv2c::ie::ambr_value(100_000, 50_000))
    .grouped(ie_type::BEARER_CONTEXT, 0, |g| {
        g.ie(ie_type::EBI, 0, &[5]).ie(
            ie_type::BEARER_QOS,
            0,
            &gtpv2c::ie::bearer_qos_value(9, 9, true, false),
        );
    });
    let csr = m.finish();
    let mut m = MessageBuilder::new(msg::CREATE_SESSION_RESPONSE, Some(1), 1);
    m.cause(gtpv2c::cause::REQUEST_ACCEPTED)
        .fteid(0, f(iface::S11_SGW, 0x101, "172.16.3.2"))
        .ie(
            ie_type::PAA,
            0,
            &gtpv2c::ie::paa_ipv4_value(Ipv4Addr::new(10, 45, 0, 2)),
        )
        .grouped(ie_type::BEARER_CONTEXT, 0, |g| {
            g.ie(ie_type::EBI, 0, &[5])
                .cause(gtpv2c::cause::REQUEST_ACCEPTED)
                .fteid(0, f(iface::S1U_SGW, 0x301, "172.16.1.2"));
        });
    let resp = m.finish();
    let mut m = MessageBuilder::new(msg::MODIFY_BEARER_REQUEST, Some(0x101), 2);
    m.grouped(ie_type::BEARER_CONTEXT, 0, |g| {
        g.ie(ie_type::EBI, 0, &[5])
            .fteid(0, f(iface::S1U_ENODEB, 0x501, "172.16.1.1"));
    });
    let mbr = m.finish();
    let mut m = MessageBuilder::new(msg::ECHO_REQUEST, None, 3);
    m.ie(ie_type::RECOVERY, 0, &[1]);
    vec![csr, resp, mbr, m.finish()]
}

fn diameter_messages() -> Vec<(bool, Vec<u8>)> {
    let v = Some(VENDOR_3GPP);
    let req = |code, app| {
        diameter::MessageBuilder::new(
            code,
            app,
            Flags {
                request: true,
                proxiable: app != 0,
                error: false,
            },
            1,
            1,
        )
    };
    let mut cer = req(cmd::CAPABILITIES_EXCHANGE, 0);
    cer.utf8(avp::ORIGIN_HOST, None, "mme.epc.lab")
        .utf8(avp::ORIGIN_REALM, None, "epc.lab")
        .ipv4(avp::HOST_IP_ADDRESS, ENB)
        .u32(avp::VENDOR_ID, None, 0)
        .avp(avp::PRODUCT_NAME, None, false, b"d11")
        .u32(avp::AUTH_APPLICATION_ID, None, APP_S6A);
    let mut air = req(cmd::AUTHENTICATION_INFORMATION, APP_S6A);
    air.utf8(avp::SESSION_ID, None, "mme.epc.lab;1;1")
        .u32(avp::AUTH_SESSION_STATE, None, 1)
        .utf8(avp::ORIGIN_HOST, None, "mme.epc.lab")
        .utf8(avp::ORIGIN_REALM, None, "epc.lab")
        .utf8(avp::DESTINATION_REALM, None, "epc.lab")
        .utf8(avp::USER_NAME, None, "001010000000001")
        .grouped(avp::REQUESTED_EUTRAN_AUTHENTICATION_INFO, v, |g| {
            g.u32(avp::NUMBER_OF_REQUESTED_VECTORS, v, 1);
        })
        .avp(avp::VISITED_PLMN_ID, v, true, &PLMN);
    let air = air.finish();
    let air_p = diameter::DiameterPacket::new_checked(&air[..]).unwrap();
    let mut aia = diameter::MessageBuilder::answer(&air_p, false);
    aia.utf8(avp::SESSION_ID, None, "mme.epc.lab;1;1")
        .u32(avp::RESULT_CODE, None, diameter::result::SUCCESS)
        .utf8(avp::ORIGIN_HOST, None, "hss.epc.lab")
        .utf8(avp::ORIGIN_REALM, None, "epc.lab")
        .grouped(avp::AUTHENTICATION_INFO, v, |g| {
            g.grouped(avp::E_UTRAN_VECTOR, v, |e| {
                e.avp(avp::RAND, v, true, &[1; 16])
                    .avp(avp::XRES, v, true, &[2; 8])
                    .avp(avp::AUTN, v, true, &[3; 16])
                    .avp(avp::KASME, v, true, &[4; 32]);
            });
        });
    vec![(true, cer.finish()), (true, air), (false, aia.finish())]
}

/// A TCP segment from the MME's port to the HSS's 3868 or back, with
/// running sequence numbers.
fn tcp_frame(to_hss: bool, seq: &mut [u32; 2], payload: &[u8]) -> Vec<u8> {
    let (src, dst, sp, dp) = if to_hss {
        (ENB, MME, 40000, 3868)
    } else {
        (MME, ENB, 3868, 40000)
    };
    let (me, peer) = if to_hss { (0, 1) } else { (1, 0) };
    let b = etherparse::PacketBuilder::ethernet2(ENB_MAC.0, MME_MAC.0)
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(sp, dp, seq[me], 65535)
        .psh()
        .ack(seq[peer]);
    let mut f = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut f, payload).unwrap();
    seq[me] = seq[me].wrapping_add(payload.len() as u32);
    f
}

#[test]
#[cfg_attr(
    not(d11_root),
    ignore = "needs tshark, which scripts/lib.sh installs as root"
)]
fn the_attachs_protocols_as_we_encode_them_decode_cleanly_in_tshark() {
    let mut w = Wire::new();
    // S1AP over an SCTP association between the two layers.
    let local = SocketAddrV4::new(ENB, s1ap::PORT);
    let remote = SocketAddrV4::new(MME, s1ap::PORT);
    w.ends[1].sctp_stack(&mut w.cx[1]).listen(s1ap::PORT);
    let assoc = {
        let (l, cx) = (&mut w.ends[0], &mut w.cx[0]);
        let s = l.sctp_stack(cx);
        s.connect(cx, local, remote, 2)
    };
    w.settle();
    let mme_assoc = {
        let (l, cx) = (&mut w.ends[1], &mut w.cx[1]);
        l.sctp_stack(cx)
            .find(remote, local)
            .expect("the MME accepted")
    };
    let s1 = s1ap_messages();
    for (up, m) in &s1 {
        let (i, a) = if *up { (0, assoc) } else { (1, mme_assoc) };
        let (l, cx) = (&mut w.ends[i], &mut w.cx[i]);
        l.sctp_stack(cx).send(cx, a, 1, s1ap::PPID, m).unwrap();
        w.settle();
    }
    let delivered = {
        let (l, cx) = (&mut w.ends[1], &mut w.cx[1]);
        std::iter::from_fn(|| l.sctp_stack(cx).recv()).count()
    };
    assert_eq!(delivered, s1.iter().filter(|(up, _)| *up).count());
    // GTPv2-C over the layers' UDP.
    let gtpc = gtpc_messages();
    for (n, m) in gtpc.iter().enumerate() {
        let (from, to) = (
            SocketAddrV4::new(ENB, gtpv2c::PORT),
            SocketAddrV4::new(MME, gtpv2c::PORT),
        );
        let (from, to, i) = if n % 2 == 0 {
            (from, to, 0)
        } else {
            (to, from, 1)
        };
        let mut o = Outbox::new();
        let (l, cx) = (&mut w.ends[i], &mut w.cx[i]);
        l.udp_send(cx, from, to, m, &mut o);
        w.frames.extend(o.frames().map(|(_, f)| f.to_vec()));
    }
    // Diameter in TCP segments.
    let mut seq = [1000, 5000];
    let dia = diameter_messages();
    for (to_hss, m) in &dia {
        w.frames.push(tcp_frame(*to_hss, &mut seq, m));
    }

    let scratch = Scratch::new("tshark-attach");
    let file = scratch.path("attach.pcapng");
    let mut pcap = PcapngWriter::new(std::fs::File::create(&file).unwrap()).unwrap();
    let wire = pcap.add_interface("enb:s1").unwrap();
    for (n, f) in w.frames.iter().enumerate() {
        pcap.write(wire, Duration::from_millis(n as u64), f)
            .unwrap();
    }
    drop(pcap);

    let broken = broken_frames(&file);
    assert!(broken.is_empty(), "frames tshark calls broken: {broken:?}");
    let count = |filter: &str| tshark_fields(&file, filter, &["frame.number"]).len();
    assert_eq!(count("sctp.checksum.status == 1"), 0, "a bad SCTP checksum");
    assert_eq!(count("s1ap"), s1.len(), "every S1AP message decoded");
    assert_eq!(
        count("s1ap.procedureCode == 9"),
        2,
        "Initial Context Setup both ways"
    );
    assert_eq!(
        count("nas_eps.nas_msg_emm_type == 0x42"),
        1,
        "the Attach Accept inside"
    );
    assert_eq!(
        count("nas_eps.esm.pdn_ipv4"),
        1,
        "the phone's address in the bearer"
    );
    assert_eq!(count("gtpv2"), gtpc.len(), "every GTPv2-C message decoded");
    assert_eq!(count("gtpv2.message_type == 32"), 1);
    assert_eq!(
        count("diameter"),
        dia.len(),
        "every Diameter message decoded"
    );
    assert_eq!(count("diameter.cmd.code == 318"), 2);
    assert_eq!(count("diameter.Visited-PLMN-Id"), 1);
}
