//! `mme`: the Mobility Management Entity, the control plane of the lab's
//! EPC (chapter 3: the phone attaches).
//!
//! Read TS 36.413 § 8.7.3 first (S1 Setup: the eNodeB's first message on
//! its association, answered with the MME's served GUMMEIs or refused with
//! a cause), then § 7 (S1AP over SCTP, destination port 36412, PPID 18;
//! non-UE signalling on one stream, each UE's on a stream of its own) and
//! TS 23.401 § 5.3.2.1 for the attach this element grows into.
//!
//! S1AP rides the element layer's SCTP ([`d11_core::l3::sctp`]): it
//! listens on 36412 of every address, answers S1 Setup for its PLMN and
//! refuses it (S1 Setup Failure, cause misc "unknown-PLMN") for others.
//! Per UE it runs the attach of TS 24.301 § 5.5.1 (EMM states in
//! [`EmmState`]): the HSS's vector over its Diameter peer ([`crate::s6a`]),
//! authentication, NAS security (EIA2, EEA0), Update Location, Create
//! Session to the SGW on S11 ([`crate::gtpc`], TS 29.274 § 7.2.1), Initial
//! Context Setup with the Attach Accept (TS 36.413 § 8.3.1), Modify Bearer
//! (§ 7.2.7) and Attach Complete. Not yet: detach and UE Context Release —
//! `PROGRESS-attach.md` says where the work stands.
//!
//! Ports, in order: `s1mme` (towards the eNodeB), `s6a` (towards the HSS),
//! optionally `s11` (towards the SGW).

use crate::gtpc::{GtpcEndpoint, GtpcRow, Incoming, RequestTo};
use crate::role::{Addressing, ElementNode, Role, RoleInfo};
use crate::s6a::{S6aConfig, S6aPeer, S6aRow};
use d11_core::l3::sctp::{AssocId, AssocRow, SctpCounters, SctpEvent};
use d11_core::l3::{L3Report, RouteSource};
use d11_core::settings::ConfigError;
use d11_core::{AnyElement, Ctx, DropReason, Element, Input, Instant, Outbox, PortId, L3};
use d11_security::kdf;
use d11_security::nas::{Direction, NasKeys};
use d11_wire::diameter::{self as dia, avp, cmd, find, DiameterPacket, VENDOR_3GPP};
use d11_wire::gtpv2c::ie::Fteid;
use d11_wire::gtpv2c::{self as v2, ie_type, iface, GtpcPacket};
use d11_wire::nas::{cause, emit_protected, sec, EmmMessage, EsmMessage, MobileIdentity, Pdu};
use d11_wire::pco::Pco;
use d11_wire::s1ap::{self, id, ie, proc, Criticality, Kind, ProtocolIe, S1apPdu};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};

/// The stream of non-UE signalling [TS 36.412 § 7].
pub const NON_UE_STREAM: u16 = 0;

/// A PLMN identity as S1AP and NAS carry it: MCC and MNC digits in TBCD,
/// `F` filling a two-digit MNC [TS 24.008 § 10.5.1.13].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Plmn(pub [u8; 3]);

impl Plmn {
    /// MCC 001, MNC 01: the test network's, the lab's default.
    pub const TEST: Plmn = Plmn([0x00, 0xf1, 0x10]);

    /// From five or six digits, MCC first ("00101": MCC 001, MNC 01).
    pub fn parse(s: &str) -> Option<Plmn> {
        let d: Vec<u8> = s
            .bytes()
            .map(|c| c.is_ascii_digit().then(|| c - b'0'))
            .collect::<Option<_>>()?;
        let (mcc, mnc) = match d.len() {
            5 => ([d[0], d[1], d[2]], [d[3], d[4], 0xf]),
            6 => ([d[0], d[1], d[2]], [d[3], d[4], d[5]]),
            _ => return None,
        };
        Some(Plmn([
            mcc[1] << 4 | mcc[0],
            mnc[2] << 4 | mcc[2],
            mnc[1] << 4 | mnc[0],
        ]))
    }
}

impl std::fmt::Display for Plmn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.0;
        let digit = |x: u8| char::from(b'0' + (x & 0xf));
        write!(
            f,
            "{}{}{}{}{}",
            digit(b[0]),
            digit(b[0] >> 4),
            digit(b[1]),
            digit(b[2]),
            digit(b[2] >> 4)
        )?;
        if b[1] >> 4 != 0xf {
            write!(f, "{}", digit(b[1] >> 4))?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Plmn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Plmn, D::Error> {
        let s = String::deserialize(d)?;
        Plmn::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("{s:?}: a PLMN is 5 or 6 digits, MCC first"))
        })
    }
}

impl Serialize for Plmn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn default_plmn() -> Plmn {
    Plmn::TEST
}
fn default_group() -> u16 {
    0x8001
}
fn default_code() -> u8 {
    1
}
fn default_origin_host() -> String {
    "mme.epc.lab".into()
}
fn default_realm() -> String {
    "epc.lab".into()
}

/// `config` of an `mme` node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MmeSettings {
    /// The PLMN it serves ("00101", the test network's).
    #[serde(default = "default_plmn")]
    pub plmn: Plmn,
    /// MME group id and MME code: with the PLMN, its GUMMEI [TS 23.003 § 2.8].
    #[serde(default = "default_group")]
    pub group: u16,
    #[serde(default = "default_code")]
    pub code: u8,
    /// The HSS's S6a address (Diameter over TCP 3868).
    #[serde(default)]
    pub hss: Option<Ipv4Addr>,
    /// The SGW's S11 address (GTPv2-C, UDP 2123), reached from the
    /// optional third port `s11`.
    #[serde(default)]
    pub sgw: Option<Ipv4Addr>,
    /// The PGW's S5-C address the MME names in Create Session (what a
    /// DNS lookup of the APN gives a real MME, TS 29.303).
    #[serde(default)]
    pub pgw: Option<Ipv4Addr>,
    /// Its Diameter identity and realm [RFC 6733 § 6.3, § 6.4].
    #[serde(default = "default_origin_host")]
    pub origin_host: String,
    #[serde(default = "default_realm")]
    pub realm: String,
    /// The NAS ciphering it selects in Security Mode Command: `eea0` (the
    /// default: the null cipher, captures stay readable) or `eea2`
    /// (128-EEA2 when the UE supports it, EEA0 when not) [TS 33.401
    /// § 7.2.4.3].
    #[serde(default)]
    pub nas_ciphering: NasCiphering,
}

/// `config.nas_ciphering` of an `mme`: its NAS ciphering algorithms in
/// order of priority [TS 33.401 § 7.2.4.3]; EIA2 is always its integrity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NasCiphering {
    /// EEA0 alone.
    #[default]
    Eea0,
    /// 128-EEA2, then EEA0 for a UE without it.
    Eea2,
}

/// One eNodeB with an association to the MME.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnbRow {
    pub assoc: AssocId,
    pub remote: SocketAddrV4,
    /// Its macro eNodeB id and PLMN, once its S1 Setup Request came.
    pub enb_id: Option<u32>,
    pub plmn: Option<Plmn>,
    pub tacs: Vec<u16>,
    /// `ready` after an S1 Setup Response, `refused` after a Failure,
    /// `waiting` before its request.
    pub s1: String,
}

/// Where a UE's attach stands [TS 24.301 § 5.1.3.4, the MME's EMM states,
/// with the step of the attach it waits on].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EmmState {
    /// Attach Request read; the HSS's vector asked for (AIR).
    WaitVector,
    /// Authentication Request sent [§ 5.4.2].
    WaitAuthentication,
    /// Security Mode Command sent [§ 5.4.3].
    WaitSecurityMode,
    /// Update Location asked of the HSS (ULR) [TS 29.272 § 5.2.1.1].
    WaitLocation,
    /// The HSS accepted it: Create Session sent to the SGW on S11
    /// [TS 23.401 § 5.3.2.1 step 12].
    WaitSession,
    /// The session made (the UE's address, the SGW's S1-U TEID): Initial
    /// Context Setup with the Attach Accept sent to the eNodeB.
    WaitContextSetup,
    /// Attach Complete received: EMM-REGISTERED [TS 24.301 § 5.5.1.2.4].
    Registered,
    /// The UE's Detach Request taken: Delete Session sent on S11
    /// [TS 23.401 § 5.3.8.2.1]; Detach Accept and the release follow.
    Detaching,
    /// The network's Detach Request sent, "re-attach required": its
    /// session is gone (the SGW restarted, or the eNodeB's tunnel was
    /// refused) [TS 24.301 § 5.5.2.3; TS 23.007 § 16.1.1]; the UE's
    /// Detach Accept brings the release, and the UE attaches again; T3422
    /// sends the request again, and aborts the detach after four more.
    NetworkDetaching,
    /// EMM-DEREGISTERED after a reject; the context goes with its release.
    Deregistered,
}

/// One UE in `d11 show mme ues`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UeRow {
    pub imsi: String,
    pub emm: EmmState,
    pub mme_ue_id: u32,
    pub enb_ue_id: u32,
    /// The EMM cause it was rejected with.
    pub rejected: Option<u8>,
    /// Its APN and the address the PGW gave it.
    #[serde(default)]
    pub apn: String,
    #[serde(default)]
    pub ue_ip: Option<Ipv4Addr>,
}

/// The default bearer the SGW and the PGW made [TS 29.274 § 7.2.2].
#[derive(Debug, Clone)]
struct UeSession {
    /// The SGW's S11 F-TEID (where Modify Bearer and Delete Session go).
    sgw: Fteid,
    /// The SGW's S1-U F-TEID, for the eNodeB.
    s1u: Fteid,
    ue_ip: Ipv4Addr,
    /// The eNodeB's S1-U F-TEID from Initial Context Setup Response, once
    /// the SGW took it (Modify Bearer accepted).
    enb: Option<Fteid>,
    modified: bool,
    /// The PGW's PCO (the phone's DNS server), for Activate Default EPS
    /// Bearer Context Request [TS 24.301 § 8.3.6.13].
    pco: Option<Pco>,
}

/// A vector from the HSS [TS 33.401 § 6.1.2].
#[derive(Debug, Clone)]
struct Vector {
    rand: [u8; 16],
    xres: Vec<u8>,
    autn: [u8; 16],
    kasme: [u8; 32],
}

/// The EPS security context once the UE answered right [TS 33.401 § 7.2].
#[derive(Debug)]
struct Security {
    kasme: [u8; 32],
    /// KNASint (EIA2) and KNASenc when EEA2 was selected.
    keys: NasKeys,
    /// The NAS COUNTs: the next downlink one, and the highest uplink one
    /// seen plus one [TS 24.301 § 4.4.3.1].
    dl_count: u32,
    ul_count: u32,
}

/// 128-EIA2 in the UE security capability's EIA octet, 128-EEA2 in its
/// EEA octet (bit 6 of each) [TS 24.301 § 9.9.3.36].
const EIA2_BIT: u8 = 0x20;
const EEA2_BIT: u8 = 0x20;

#[derive(Debug)]
struct UeCtx {
    enb: AssocId,
    enb_ue_id: u32,
    stream: u16,
    imsi: String,
    emm: EmmState,
    vector: Option<Vector>,
    /// The S6a session of its requests.
    session: String,
    rejected: Option<u8>,
    /// UE network capability from its Attach Request (EEA, EIA octets
    /// first), replayed in Security Mode Command.
    capability: Vec<u8>,
    sec: Option<Security>,
    /// The PTI of its PDN Connectivity Request [TS 24.301 § 6.5.1.2].
    pti: u8,
    /// The PCO of its PDN Connectivity Request (what it asks of the PGW:
    /// its DNS server), copied into Create Session [TS 23.401 § 5.3.2.1
    /// step 12; TS 29.274 § 8.13].
    pco: Option<Pco>,
    /// From the HSS's subscription: the APN and APN-AMBR (kbit/s up, down).
    apn: String,
    ambr: (u32, u32),
    bearer: Option<UeSession>,
    /// Its Detach Request was a switch-off: no Detach Accept.
    switch_off: bool,
    /// T3422 while the network's Detach Request waits for its Detach
    /// Accept: when it expires, and how many times it has [TS 24.301
    /// § 5.5.2.3.4 b].
    t3422: Option<(Instant, u8)>,
}

/// The network's detach type "re-attach required" [TS 24.301 § 9.9.3.7].
const REATTACH_REQUIRED: u8 = 1;

/// T3422: how long the network waits for the UE's Detach Accept before it
/// sends its Detach Request again [TS 24.301 § 10.2, Table 10.2.1: 6 s].
pub const T3422: std::time::Duration = std::time::Duration::from_secs(6);
/// The Detach Request is sent again four times; the fifth expiry aborts
/// the detach [TS 24.301 § 5.5.2.3.4 b].
pub const T3422_RETRANSMISSIONS: u8 = 4;

/// The default bearer's EPS bearer id [TS 24.301 § 9.3.2: 5 is the
/// first one a UE's PDN connection gets].
const DEFAULT_EBI: u8 = 5;
/// QCI 9, ARP priority 9: the default bearer of a best-effort APN
/// [TS 23.203 Table 6.1.7], as the HSS's subscription says.
const DEFAULT_QCI: u8 = 9;

/// What the MME counts besides its transports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmeCounters {
    pub s1_setups: u64,
    pub s1_setup_failures: u64,
    /// S1AP that does not decode (answered with nothing: an Error
    /// Indication needs a decodable procedure code).
    pub s1ap_malformed: u64,
    /// SCTP messages with a payload protocol identifier other than 18.
    pub s1ap_wrong_ppid: u64,
    /// Procedures this MME does not handle yet.
    pub s1ap_unhandled: u64,
    pub attach_requests: u64,
    pub attach_rejects: u64,
    pub vectors: u64,
    /// NAS that does not decode or does not fit the UE's state (an EMM
    /// Status or nothing, TS 24.301 § 7).
    pub nas_dropped: u64,
    /// S6a answers for no UE, or that do not parse.
    pub s6a_dropped: u64,
    /// Initial UE Messages dropped with [`MAX_UES`] contexts held.
    pub ue_table_full: u64,
    /// Times the SGW's Recovery counter changed.
    pub sgw_restarts: u64,
    /// GTPv2-C this MME does not handle yet.
    pub s11_unhandled: u64,
    /// Create Session answered with "Request accepted", and otherwise
    /// (refused, or unanswered N3 times).
    pub sessions_created: u64,
    pub session_failures: u64,
    /// Initial Context Setup Responses and Failures from the eNodeB.
    pub context_setups: u64,
    pub context_setup_failures: u64,
    /// Modify Bearer answered "Request accepted" (the eNodeB's S1-U TEID
    /// on the SGW), and otherwise: refused or unanswered, the UE then
    /// detached with "re-attach required".
    pub bearers_modified: u64,
    pub modify_failures: u64,
    pub attach_completes: u64,
    pub detaches: u64,
    /// Detach Requests of the network ("re-attach required") sent.
    #[serde(default)]
    pub network_detaches: u64,
    /// UE Context Release Requests from the eNodeB.
    #[serde(default)]
    pub release_requests: u64,
    /// UE Context Release Complete from the eNodeB: contexts removed.
    pub releases: u64,
    /// The network's Detach Request sent again on T3422's expiry.
    #[serde(default)]
    pub detach_retransmissions: u64,
    /// Network detaches aborted on T3422's fifth expiry (no Detach
    /// Accept): the UE's context released and dropped.
    #[serde(default)]
    pub detach_timeouts: u64,
}

/// `d11 show mme`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmeReport {
    #[serde(flatten)]
    pub l3: L3Report,
    pub plmn: Plmn,
    pub group: u16,
    pub code: u8,
    pub enbs: Vec<EnbRow>,
    pub ues: Vec<UeRow>,
    /// Its Diameter peer, when it has an HSS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s6a: Option<S6aRow>,
    /// Its GTPv2-C endpoint on S11, when it has an SGW.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s11: Option<GtpcRow>,
    pub associations: Vec<AssocRow>,
    pub sctp: SctpCounters,
    pub counters: MmeCounters,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum S1State {
    Waiting,
    Ready,
    Refused,
}

#[derive(Debug)]
struct EnbPeer {
    remote: SocketAddrV4,
    enb_id: Option<u32>,
    plmn: Option<Plmn>,
    tacs: Vec<u16>,
    state: S1State,
}

/// The MME.
#[derive(Debug)]
pub struct Mme {
    l3: L3,
    cfg: MmeSettings,
    listening: bool,
    enbs: BTreeMap<AssocId, EnbPeer>,
    s6a: Option<S6aPeer>,
    s11: Option<GtpcEndpoint>,
    ues: BTreeMap<u32, UeCtx>,
    /// The UE an S6a request was for, by its hop-by-hop id.
    pending: HashMap<u32, u32>,
    /// The UE an S11 request was for, by its sequence number.
    pending_s11: HashMap<u32, u32>,
    /// T3422's deadlines, earliest first: (when, the UE's MME UE S1AP ID).
    /// An entry whose UE no longer runs T3422 with that deadline is stale.
    t3422: std::collections::BTreeSet<(Instant, u32)>,
    next_ue: u32,
    counters: MmeCounters,
}

impl Mme {
    pub fn new(l3: L3, cfg: MmeSettings) -> Mme {
        let s6a = cfg.hss.map(|hss| {
            S6aPeer::new(S6aConfig {
                hss,
                origin_host: cfg.origin_host.clone(),
                realm: cfg.realm.clone(),
            })
        });
        Mme {
            l3,
            s6a,
            s11: None,
            cfg,
            listening: false,
            enbs: BTreeMap::new(),
            ues: BTreeMap::new(),
            pending: HashMap::new(),
            pending_s11: HashMap::new(),
            t3422: Default::default(),
            next_ue: 1,
            counters: MmeCounters::default(),
        }
    }

    /// Reads what the transports hold, answers it, lets the layer send.
    fn serve(&mut self, cx: &mut Ctx, out: &mut Outbox) {
        let sctp = self.l3.sctp_stack(cx);
        if !self.listening {
            sctp.listen(s1ap::PORT);
            self.listening = true;
        }
        while let Some(e) = sctp.next_event() {
            match e {
                SctpEvent::Up { id, .. } | SctpEvent::Restarted { id } => {
                    let remote = sctp
                        .rows()
                        .into_iter()
                        .find(|r| r.id == id)
                        .map(|r| r.remote);
                    if let Some(remote) = remote {
                        tracing::info!(%remote, "eNodeB association up");
                        self.enbs.insert(
                            id,
                            EnbPeer {
                                remote,
                                enb_id: None,
                                plmn: None,
                                tacs: vec![],
                                state: S1State::Waiting,
                            },
                        );
                    }
                }
                SctpEvent::Down { id, reason } => {
                    tracing::info!(?reason, "eNodeB association down");
                    self.enbs.remove(&id);
                }
            }
        }
        while let Some((assoc, m)) = self.l3.sctp_stack(cx).recv() {
            if m.ppid != s1ap::PPID {
                self.counters.s1ap_wrong_ppid += 1;
                continue;
            }
            match S1apPdu::parse(&m.data) {
                Ok(pdu) => self.s1ap(cx, out, assoc, pdu),
                Err(e) => {
                    tracing::debug!(%e, "S1AP that does not decode");
                    self.counters.s1ap_malformed += 1;
                }
            }
        }
        if let Some(s6a) = self.s6a.as_mut() {
            s6a.serve(&mut self.l3, cx);
        }
        while let Some(a) = self.s6a.as_mut().and_then(S6aPeer::answer) {
            self.s6a_answer(cx, out, &a);
        }
        if let Some(s6a) = self.s6a.as_mut() {
            // What the answers asked for goes out now.
            s6a.serve(&mut self.l3, cx);
        }
        self.serve_s11(cx, out);
        self.l3.poll(cx, out);
    }

    fn s1ap(&mut self, cx: &mut Ctx, out: &mut Outbox, assoc: AssocId, pdu: S1apPdu) {
        match (pdu.kind, pdu.procedure) {
            (Kind::Successful, proc::INITIAL_CONTEXT_SETUP) => {
                self.context_setup_done(cx, out, assoc, &pdu)
            }
            (Kind::Successful, proc::UE_CONTEXT_RELEASE) => self.released(assoc, &pdu),
            (Kind::Initiating, proc::UE_CONTEXT_RELEASE_REQUEST) => {
                self.release_request(cx, out, assoc, &pdu)
            }
            (Kind::Unsuccessful, proc::INITIAL_CONTEXT_SETUP) => {
                let id = pdu.ie(id::MME_UE_S1AP_ID).map(ie::mme_ue_id);
                tracing::info!(?id, "Initial Context Setup Failure");
                self.counters.context_setup_failures += 1;
            }
            (Kind::Initiating, proc::S1_SETUP) => self.s1_setup(cx, assoc, &pdu),
            (Kind::Initiating, proc::INITIAL_UE_MESSAGE) => self.initial_ue(cx, assoc, &pdu),
            (Kind::Initiating, proc::UPLINK_NAS_TRANSPORT) => self.uplink_nas(cx, out, assoc, &pdu),
            _ => self.counters.s1ap_unhandled += 1,
        }
    }

    /// S11: the GTPv2-C endpoint towards the SGW, bound on first use on
    /// the address facing it; the path echoed [TS 29.274 § 7.8].
    fn serve_s11(&mut self, cx: &mut Ctx, out: &mut Outbox) {
        let Some(sgw) = self.cfg.sgw else {
            return;
        };
        if self.s11.is_none() {
            let local = self
                .l3
                .lookup(sgw)
                .and_then(|(_, hop)| self.l3.port(hop.port))
                .map(|p| p.address.addr());
            let Some(local) = local else {
                return;
            };
            self.s11 = GtpcEndpoint::bind(&mut self.l3, cx, local);
            if let Some(s11) = self.s11.as_mut() {
                s11.watch(sgw);
            }
        }
        let Some(s11) = self.s11.as_mut() else {
            return;
        };
        s11.poll(&mut self.l3, cx, out);
        while let Some(i) = self.s11.as_mut().and_then(GtpcEndpoint::incoming) {
            match i {
                Incoming::PeerRestarted { peer } => {
                    // TS 23.007 § 16.1.1: the SGW lost its sessions; each
                    // UE whose session it held attaches again.
                    tracing::warn!(%peer, "SGW restarted (Recovery changed)");
                    self.counters.sgw_restarts += 1;
                    let through: Vec<u32> = self
                        .ues
                        .iter()
                        .filter(|(_, u)| u.bearer.as_ref().is_some_and(|b| b.sgw.addr == peer))
                        .map(|(&id, _)| id)
                        .collect();
                    for id in through {
                        self.network_detach(cx, out, id, false);
                    }
                }
                Incoming::Response { seq, msg } => match self.pending_s11.remove(&seq) {
                    Some(ue) => self.s11_response(cx, out, ue, Some(&msg)),
                    None => self.counters.s11_unhandled += 1,
                },
                Incoming::Timeout { seq, .. } => {
                    if let Some(ue) = self.pending_s11.remove(&seq) {
                        self.s11_response(cx, out, ue, None);
                    }
                }
                Incoming::Request { .. } => self.counters.s11_unhandled += 1,
            }
        }
    }

    /// Create Session Request [TS 29.274 § 7.2.1, Table 7.2.1-1] to the
    /// SGW for the UE's default bearer: its S11 TEID is its MME UE S1AP ID.
    fn create_session(&mut self, cx: &mut Ctx, out: &mut Outbox, mme_ue_id: u32) {
        let (Some(sgw), Some(pgw)) = (self.cfg.sgw, self.cfg.pgw) else {
            tracing::warn!("no sgw or pgw in the mme's settings: no session");
            return self.reject(cx, mme_ue_id, cause::NETWORK_FAILURE);
        };
        let plmn = self.cfg.plmn.0;
        let (Some(s11), Some(ue)) = (self.s11.as_mut(), self.ues.get_mut(&mme_ue_id)) else {
            return self.reject(cx, mme_ue_id, cause::NETWORK_FAILURE);
        };
        ue.emm = EmmState::WaitSession;
        let Ok(imsi) = v2::ie::tbcd_value(&ue.imsi) else {
            return self.reject(cx, mme_ue_id, cause::NETWORK_FAILURE);
        };
        let me = s11.row().local;
        let to = RequestTo {
            peer: sgw,
            msg_type: v2::msg::CREATE_SESSION_REQUEST,
            teid: Some(0),
        };
        let (apn, ambr) = (ue.apn.clone(), ue.ambr);
        let pco = ue.pco.as_ref().map(Pco::to_vec);
        let seq = s11.request(&mut self.l3, cx, out, to, |m| {
            m.ie(ie_type::IMSI, 0, &imsi)
                .ie(ie_type::SERVING_NETWORK, 0, &plmn)
                .ie(ie_type::RAT_TYPE, 0, &[v2::RAT_EUTRAN])
                .fteid(0, v2::fteid(iface::S11_MME, mme_ue_id, *me.ip()))
                .fteid(1, v2::fteid(iface::S5_PGW_GTPC, 0, pgw))
                .ie(ie_type::APN, 0, &v2::ie::apn_value(&apn))
                .ie(ie_type::SELECTION_MODE, 0, &[0])
                .ie(ie_type::PDN_TYPE, 0, &[v2::PDN_IPV4])
                .ie(
                    ie_type::PAA,
                    0,
                    &v2::ie::paa_ipv4_value(Ipv4Addr::UNSPECIFIED),
                )
                .ie(ie_type::APN_RESTRICTION, 0, &[0])
                .ie(ie_type::AMBR, 0, &v2::ie::ambr_value(ambr.0, ambr.1));
            if let Some(p) = &pco {
                m.ie(ie_type::PCO, 0, p);
            }
            m.grouped(ie_type::BEARER_CONTEXT, 0, |b| {
                b.ie(ie_type::EBI, 0, &[DEFAULT_EBI]).ie(
                    ie_type::BEARER_QOS,
                    0,
                    &v2::ie::bearer_qos_value(DEFAULT_QCI, 9, false, true),
                );
            });
        });
        self.pending_s11.insert(seq, mme_ue_id);
    }

    /// An answer on S11 for the UE (None: unanswered N3 times).
    fn s11_response(&mut self, cx: &mut Ctx, out: &mut Outbox, mme_ue_id: u32, msg: Option<&[u8]>) {
        let Some(ue) = self.ues.get_mut(&mme_ue_id) else {
            return;
        };
        let p = msg.and_then(|m| GtpcPacket::new_checked(m).ok());
        match (ue.emm, p) {
            (EmmState::WaitSession, Some(p))
                if p.msg_type() == v2::msg::CREATE_SESSION_RESPONSE =>
            {
                let ies = p.ie_bytes();
                let made = (|| {
                    if crate::gtpc::response_cause(ies) != v2::cause::REQUEST_ACCEPTED {
                        return None;
                    }
                    let fteid =
                        |b, i| Fteid::parse(v2::find(b, ie_type::FTEID, i).ok()??.value).ok();
                    let sgw = fteid(ies, 0)?;
                    let paa = v2::find(ies, ie_type::PAA, 0).ok()??;
                    let ue_ip = v2::ie::paa_ipv4(paa.value).ok()?;
                    let bc = v2::find(ies, ie_type::BEARER_CONTEXT, 0).ok()??;
                    let s1u = fteid(bc.value, 0)?;
                    // A PCO that does not read is left out [TS 24.301 § 7.6.3].
                    let pco = crate::gtpc::pco(ies).and_then(|v| Pco::parse(v).ok());
                    Some(UeSession {
                        sgw,
                        s1u,
                        ue_ip,
                        enb: None,
                        modified: false,
                        pco,
                    })
                })();
                let Some(session) = made else {
                    tracing::info!(imsi = %ue.imsi, cause = crate::gtpc::response_cause(ies), "Create Session refused");
                    self.counters.session_failures += 1;
                    return self.reject(cx, mme_ue_id, cause::NETWORK_FAILURE);
                };
                tracing::info!(imsi = %ue.imsi, ue = %session.ue_ip, "session created");
                self.counters.sessions_created += 1;
                ue.bearer = Some(session);
                ue.emm = EmmState::WaitContextSetup;
                self.context_setup(cx, mme_ue_id);
            }
            (EmmState::WaitSession, None) => {
                tracing::info!(imsi = %ue.imsi, "Create Session unanswered");
                self.counters.session_failures += 1;
                self.reject(cx, mme_ue_id, cause::NETWORK_FAILURE)
            }
            (EmmState::Detaching, p)
                if p.as_ref()
                    .is_none_or(|p| p.msg_type() == v2::msg::DELETE_SESSION_RESPONSE) =>
            {
                // Delete Session answered (or not: the SGW's state goes
                // either way): Detach Accept, then the release.
                let c = p.map(|p| crate::gtpc::response_cause(p.ie_bytes()));
                tracing::info!(imsi = %ue.imsi, cause = ?c, "Delete Session answered");
                self.detach_accept(cx, mme_ue_id);
            }
            (EmmState::NetworkDetaching | EmmState::Deregistered, p)
                if p.as_ref()
                    .is_none_or(|p| p.msg_type() == v2::msg::DELETE_SESSION_RESPONSE) =>
            {
                // The session of a UE detached by the network: what is
                // left of it at the SGW goes (64 when nothing is).
                let c = p.map(|p| crate::gtpc::response_cause(p.ie_bytes()));
                tracing::info!(imsi = %ue.imsi, cause = ?c, "Delete Session answered");
            }
            (_, Some(p)) if p.msg_type() == v2::msg::MODIFY_BEARER_RESPONSE => {
                let c = crate::gtpc::response_cause(p.ie_bytes());
                match ue.bearer.as_mut() {
                    Some(b) if c == v2::cause::REQUEST_ACCEPTED => {
                        tracing::info!(imsi = %ue.imsi, "Modify Bearer: the user plane is up");
                        b.modified = true;
                        self.counters.bearers_modified += 1;
                    }
                    _ => {
                        tracing::info!(imsi = %ue.imsi, cause = c, "Modify Bearer refused");
                        self.modify_failed(cx, out, mme_ue_id);
                    }
                }
            }
            (_, None) => {
                tracing::info!(imsi = %ue.imsi, "Modify Bearer unanswered");
                self.modify_failed(cx, out, mme_ue_id);
            }
            _ => self.counters.s11_unhandled += 1,
        }
    }

    /// Modify Bearer refused or unanswered [TS 23.401 § 5.3.2.1, steps
    /// 23–24]: the SGW does not know the eNodeB's end of the tunnel, so the
    /// UE has no downlink. Left registered it would wait forever; it is
    /// detached with "re-attach required" and attaches again, with a new
    /// session (the old one deleted at the SGW if it still answers).
    fn modify_failed(&mut self, cx: &mut Ctx, out: &mut Outbox, mme_ue_id: u32) {
        self.counters.modify_failures += 1;
        self.network_detach(cx, out, mme_ue_id, true);
    }

    /// UE-initiated detach [TS 24.301 § 5.5.2.2; TS 23.401 § 5.3.8.2.1]:
    /// Delete Session on S11 first; a switch-off detach (bit 4 of the
    /// type) gets no Detach Accept, only the release.
    fn detach(&mut self, cx: &mut Ctx, out: &mut Outbox, mme_ue_id: u32, detach_type: u8) {
        let Some(ue) = self.ues.get_mut(&mme_ue_id) else {
            return;
        };
        tracing::info!(imsi = %ue.imsi, detach_type, "Detach Request");
        self.counters.detaches += 1;
        ue.emm = EmmState::Detaching;
        ue.switch_off = detach_type & 0x08 != 0;
        let sgw = ue.bearer.take().map(|b| b.sgw);
        match sgw {
            Some(sgw) if self.s11.is_some() => self.delete_session(cx, out, sgw, mme_ue_id),
            _ => self.detach_accept(cx, mme_ue_id),
        }
    }

    /// Network-initiated detach, "re-attach required" [TS 24.301
    /// § 5.5.2.3.1; TS 23.401 § 5.3.8.3]: the Detach Request to the UE
    /// (protected), and Delete Session on S11 for what the SGW may still
    /// hold (not after its restart: it holds nothing [TS 23.007
    /// § 16.1.1]). T3422 starts: without a Detach Accept the request is
    /// sent again every 6 s, four times, then the context is released.
    fn network_detach(&mut self, cx: &mut Ctx, out: &mut Outbox, mme_ue_id: u32, delete: bool) {
        let Some(ue) = self.ues.get_mut(&mme_ue_id) else {
            return;
        };
        if ue.sec.is_none() || ue.emm == EmmState::NetworkDetaching {
            return;
        }
        tracing::info!(imsi = %ue.imsi, "network detach: re-attach required");
        self.counters.network_detaches += 1;
        ue.emm = EmmState::NetworkDetaching;
        let sgw = ue.bearer.take().map(|b| b.sgw);
        self.send_network_detach(cx, mme_ue_id, 0);
        if let (Some(sgw), true) = (sgw, delete) {
            self.delete_session(cx, out, sgw, mme_ue_id);
        }
    }

    /// Delete Session Request on S11 for the UE's session at `sgw`
    /// [TS 29.274 § 7.2.9.1], its answer matched to the UE by sequence.
    fn delete_session(&mut self, cx: &mut Ctx, out: &mut Outbox, sgw: Fteid, mme_ue_id: u32) {
        let Some(s11) = self.s11.as_mut() else {
            return;
        };
        let to = RequestTo {
            peer: sgw.addr,
            msg_type: v2::msg::DELETE_SESSION_REQUEST,
            teid: Some(sgw.teid),
        };
        let seq = s11.request(&mut self.l3, cx, out, to, |m| {
            m.ie(ie_type::EBI, 0, &[DEFAULT_EBI]);
        });
        self.pending_s11.insert(seq, mme_ue_id);
    }

    /// The network's Detach Request, "re-attach required", protected with
    /// the next downlink COUNT (a retransmission too: the UE's replay
    /// check refuses a COUNT it has seen), and T3422 (re)started; `sent`
    /// counts the expiries so far [TS 24.301 § 5.5.2.3.1, § 5.5.2.3.4 b].
    fn send_network_detach(&mut self, cx: &mut Ctx, mme_ue_id: u32, sent: u8) {
        let Some(ue) = self.ues.get_mut(&mme_ue_id) else {
            return;
        };
        let req = EmmMessage::NetworkDetachRequest {
            detach_type: REATTACH_REQUIRED,
            cause: None,
        };
        let nas = protect(ue, sec::INTEGRITY_CIPHERED, &req.to_vec());
        let due = cx.now + T3422;
        ue.t3422 = Some((due, sent));
        self.t3422.insert((due, mme_ue_id));
        self.downlink_nas(cx, mme_ue_id, &nas);
    }

    /// T3422's expiries due by now [TS 24.301 § 5.5.2.3.4 b]: the Detach
    /// Request again, or on the fifth expiry the detach aborted, the UE
    /// EMM-DEREGISTERED and its context released (UE Context Release
    /// Command; Release Complete drops it).
    fn run_t3422(&mut self, cx: &mut Ctx) {
        while let Some(&(due, id)) = self.t3422.first() {
            if due > cx.now {
                break;
            }
            self.t3422.pop_first();
            let Some(ue) = self.ues.get_mut(&id) else {
                continue;
            };
            let Some((d, sent)) = ue.t3422.filter(|&(d, _)| d == due) else {
                continue; // stale: answered, or restarted since
            };
            ue.t3422 = None;
            if ue.emm != EmmState::NetworkDetaching {
                continue;
            }
            if sent < T3422_RETRANSMISSIONS {
                tracing::info!(imsi = %ue.imsi, expiry = sent + 1, "T3422: Detach Request again");
                self.counters.detach_retransmissions += 1;
                self.send_network_detach(cx, id, sent + 1);
            } else {
                tracing::info!(imsi = %ue.imsi, at = ?d, "T3422: no Detach Accept, detach aborted");
                self.counters.detach_timeouts += 1;
                ue.emm = EmmState::Deregistered;
                self.release_command(cx, id, ie::NAS_DETACH);
            }
        }
    }

    /// UE Context Release Request [TS 36.413 § 8.3.2]: the eNodeB lost
    /// the UE's user plane (an Error Indication on S1-U). ECM-IDLE is not
    /// built, so a registered UE is detached with "re-attach required";
    /// one still attaching is released (it asks again after its retry).
    fn release_request(&mut self, cx: &mut Ctx, out: &mut Outbox, assoc: AssocId, pdu: &S1apPdu) {
        let Some(Ok(mme_ue_id)) = pdu.ie(id::MME_UE_S1AP_ID).map(ie::mme_ue_id) else {
            self.counters.s1ap_malformed += 1;
            return;
        };
        let Some(ue) = self.ues.get(&mme_ue_id).filter(|u| u.enb == assoc) else {
            self.counters.s1ap_unhandled += 1;
            return;
        };
        self.counters.release_requests += 1;
        let cause = pdu.ie(id::CAUSE).map(ie::cause);
        tracing::info!(imsi = %ue.imsi, ?cause, "UE Context Release Request");
        match ue.emm {
            EmmState::Registered | EmmState::WaitContextSetup => {
                self.network_detach(cx, out, mme_ue_id, true)
            }
            EmmState::NetworkDetaching | EmmState::Detaching => {}
            _ => self.release_command(cx, mme_ue_id, ie::NAS_NORMAL_RELEASE),
        }
    }

    /// Detach Accept [TS 24.301 § 8.2.10], then UE Context Release
    /// Command [TS 36.413 § 8.3.3] with cause NAS "detach".
    fn detach_accept(&mut self, cx: &mut Ctx, mme_ue_id: u32) {
        let Some(ue) = self.ues.get_mut(&mme_ue_id) else {
            return;
        };
        ue.emm = EmmState::Deregistered;
        if !ue.switch_off {
            let nas = protect(
                ue,
                sec::INTEGRITY_CIPHERED,
                &EmmMessage::DetachAccept.to_vec(),
            );
            self.downlink_nas(cx, mme_ue_id, &nas);
        }
        self.release_command(cx, mme_ue_id, ie::NAS_DETACH);
    }

    /// UE Context Release Command [TS 36.413 § 8.3.3] with a NAS cause.
    fn release_command(&mut self, cx: &mut Ctx, mme_ue_id: u32, nas_cause: u8) {
        let Some(ue) = self.ues.get(&mme_ue_id) else {
            return;
        };
        let pdu = S1apPdu {
            kind: Kind::Initiating,
            procedure: proc::UE_CONTEXT_RELEASE,
            criticality: Criticality::Reject,
            ies: vec![
                ProtocolIe {
                    id: id::UE_S1AP_IDS,
                    criticality: Criticality::Reject,
                    value: ie::ue_s1ap_ids_value(mme_ue_id, ue.enb_ue_id),
                },
                ProtocolIe {
                    id: id::CAUSE,
                    criticality: Criticality::Ignore,
                    value: ie::cause_value(ie::Cause::Nas(nas_cause)),
                },
            ],
        };
        let (enb, stream) = (ue.enb, ue.stream);
        if let Err(e) = self
            .l3
            .sctp_stack(cx)
            .send(cx, enb, stream, s1ap::PPID, &pdu.to_vec())
        {
            tracing::warn!(%e, "UE Context Release Command not sent");
        }
    }

    /// UE Context Release Complete [TS 36.413 § 8.3.3.2]: the context goes.
    fn released(&mut self, assoc: AssocId, pdu: &S1apPdu) {
        let Some(Ok(mme_ue_id)) = pdu.ie(id::MME_UE_S1AP_ID).map(ie::mme_ue_id) else {
            self.counters.s1ap_malformed += 1;
            return;
        };
        if self.ues.get(&mme_ue_id).is_some_and(|u| u.enb == assoc) {
            self.ues.remove(&mme_ue_id);
            self.counters.releases += 1;
        } else {
            self.counters.s1ap_unhandled += 1;
        }
    }

    /// Initial Context Setup Request [TS 36.413 § 8.3.1; TS 23.401
    /// § 5.3.2.1 step 17]: KeNB from KASME and the uplink NAS COUNT
    /// [TS 33.401 A.3], the default bearer's E-RAB towards the SGW's S1-U
    /// F-TEID, and inside it the Attach Accept with the Activate Default
    /// EPS Bearer Context Request [TS 24.301 § 5.5.1.2.4, § 6.4.1.2],
    /// integrity protected (EEA0's null ciphering keeps it readable).
    fn context_setup(&mut self, cx: &mut Ctx, mme_ue_id: u32) {
        let (plmn, group, code) = (self.cfg.plmn.0, self.cfg.group, self.cfg.code);
        let tac = self
            .ues
            .get(&mme_ue_id)
            .and_then(|u| self.enbs.get(&u.enb))
            .and_then(|e| e.tacs.first().copied())
            .unwrap_or(1);
        let Some(ue) = self.ues.get_mut(&mme_ue_id) else {
            return;
        };
        let (Some(b), Some(s)) = (ue.bearer.clone(), ue.sec.as_ref()) else {
            return;
        };
        // The COUNT of the last uplink message, Security Mode Complete.
        let kenb = kdf::kenb(&s.kasme, s.ul_count.saturating_sub(1));
        let esm = EsmMessage::ActivateDefaultBearerRequest {
            ebi: DEFAULT_EBI,
            pti: ue.pti,
            qci: DEFAULT_QCI,
            apn: ue.apn.clone(),
            pdn_address: b.ue_ip,
            pco: b.pco.clone(),
        };
        let mut tai_list = vec![0x00];
        tai_list.extend_from_slice(&plmn);
        tai_list.extend_from_slice(&tac.to_be_bytes());
        let accept = EmmMessage::AttachAccept {
            result: 1, // EPS only
            t3412: T3412,
            tai_list,
            esm: esm.to_vec(),
            guti: Some(d11_wire::nas::Guti {
                plmn,
                mme_group: group,
                mme_code: code,
                m_tmsi: 0xc000_0000 | mme_ue_id,
            }),
        };
        let nas = protect(ue, sec::INTEGRITY_CIPHERED, &accept.to_vec());
        // EEA and EIA octets as S1AP's bit maps: 128-EEA1 first, EEA0 left
        // out [TS 36.413 § 9.2.1.40; TS 24.301 § 9.9.3.34].
        let bits = |o: Option<&u8>| u16::from(o.copied().unwrap_or(0) << 1) << 8;
        let (eea, eia) = (bits(ue.capability.first()), bits(ue.capability.get(1)));
        let ambr = (u64::from(ue.ambr.1) * 1000, u64::from(ue.ambr.0) * 1000);
        let ies = ProtocolIe::ue_ids(mme_ue_id, ue.enb_ue_id, Criticality::Reject)
            .into_iter()
            .chain([
                ProtocolIe {
                    id: id::UE_AGGREGATE_MAXIMUM_BITRATE,
                    criticality: Criticality::Reject,
                    value: ie::ue_ambr_value(ambr.0, ambr.1),
                },
                ProtocolIe {
                    id: id::E_RAB_TO_BE_SETUP_LIST_CTXT_SU_REQ,
                    criticality: Criticality::Reject,
                    value: ie::erab_to_setup_list_value(&[ie::ErabToSetup {
                        erab_id: DEFAULT_EBI,
                        qci: DEFAULT_QCI,
                        priority: 9,
                        may_preempt: false,
                        preemptable: true,
                        addr: b.s1u.addr,
                        teid: b.s1u.teid,
                        nas: Some(nas),
                    }]),
                },
                ProtocolIe {
                    id: id::UE_SECURITY_CAPABILITIES,
                    criticality: Criticality::Reject,
                    value: ie::ue_security_capabilities_value(eea, eia),
                },
                ProtocolIe {
                    id: id::SECURITY_KEY,
                    criticality: Criticality::Reject,
                    value: ie::security_key_value(&kenb),
                },
            ])
            .collect::<Vec<_>>();
        let pdu = S1apPdu {
            kind: Kind::Initiating,
            procedure: proc::INITIAL_CONTEXT_SETUP,
            criticality: Criticality::Reject,
            ies,
        };
        let (enb, stream) = (ue.enb, ue.stream);
        if let Err(e) = self
            .l3
            .sctp_stack(cx)
            .send(cx, enb, stream, s1ap::PPID, &pdu.to_vec())
        {
            tracing::warn!(%e, "Initial Context Setup Request not sent");
        }
    }

    /// Initial Context Setup Response [TS 36.413 § 8.3.1.2]: the eNodeB's
    /// S1-U F-TEID for the E-RAB goes to the SGW in Modify Bearer Request
    /// [TS 29.274 § 7.2.7; TS 23.401 § 5.3.2.1 step 23].
    fn context_setup_done(
        &mut self,
        cx: &mut Ctx,
        out: &mut Outbox,
        assoc: AssocId,
        pdu: &S1apPdu,
    ) {
        let mme_ue_id = pdu.ie(id::MME_UE_S1AP_ID).map(ie::mme_ue_id);
        let erabs = pdu
            .ie(id::E_RAB_SETUP_LIST_CTXT_SU_RES)
            .map(ie::erab_setup_list_res);
        let (Some(Ok(mme_ue_id)), Some(Ok(erabs))) = (mme_ue_id, erabs) else {
            self.counters.s1ap_malformed += 1;
            return;
        };
        let Some(ue) = self.ues.get_mut(&mme_ue_id).filter(|u| u.enb == assoc) else {
            self.counters.s1ap_unhandled += 1;
            return;
        };
        let (Some(b), Some(&(_, addr, teid))) = (
            ue.bearer.as_mut(),
            erabs.iter().find(|(e, _, _)| *e == DEFAULT_EBI),
        ) else {
            self.counters.s1ap_unhandled += 1;
            return;
        };
        self.counters.context_setups += 1;
        let enb = v2::fteid(iface::S1U_ENODEB, teid, addr);
        b.enb = Some(enb);
        let sgw = b.sgw;
        let Some(s11) = self.s11.as_mut() else {
            return;
        };
        let to = RequestTo {
            peer: sgw.addr,
            msg_type: v2::msg::MODIFY_BEARER_REQUEST,
            teid: Some(sgw.teid),
        };
        let seq = s11.request(&mut self.l3, cx, out, to, |m| {
            m.grouped(ie_type::BEARER_CONTEXT, 0, |b| {
                b.ie(ie_type::EBI, 0, &[DEFAULT_EBI]).fteid(0, enb);
            });
        });
        self.pending_s11.insert(seq, mme_ue_id);
    }

    /// S1 Setup [TS 36.413 § 8.7.3]: the eNodeB's id and the tracking
    /// areas it broadcasts; ours if one of them is in our PLMN.
    fn s1_setup(&mut self, cx: &mut Ctx, assoc: AssocId, pdu: &S1apPdu) {
        let enb = pdu.ie(id::GLOBAL_ENB_ID).map(ie::global_enb_id);
        let tas = pdu.ie(id::SUPPORTED_TAS).map(ie::supported_tas);
        let (Some(Ok((plmn, enb_id))), Some(Ok(tas))) = (enb, tas) else {
            self.counters.s1ap_malformed += 1;
            return self.s1_setup_failure(cx, assoc, ie::Cause::Protocol(PROTOCOL_SEMANTIC));
        };
        let ours = tas
            .iter()
            .any(|(_, plmns)| plmns.contains(&self.cfg.plmn.0));
        if let Some(p) = self.enbs.get_mut(&assoc) {
            p.enb_id = Some(enb_id);
            p.plmn = Some(Plmn(plmn));
            p.tacs = tas.iter().map(|t| t.0).collect();
            p.state = if ours {
                S1State::Ready
            } else {
                S1State::Refused
            };
        }
        if !ours {
            return self.s1_setup_failure(cx, assoc, ie::Cause::Misc(ie::MISC_UNKNOWN_PLMN));
        }
        tracing::info!(enb_id, "S1 Setup");
        self.counters.s1_setups += 1;
        let c = &self.cfg;
        let answer = S1apPdu {
            kind: Kind::Successful,
            procedure: proc::S1_SETUP,
            criticality: Criticality::Reject,
            ies: vec![
                ProtocolIe {
                    id: id::SERVED_GUMMEIS,
                    criticality: Criticality::Reject,
                    value: ie::served_gummeis_value(c.plmn.0, c.group, c.code),
                },
                ProtocolIe {
                    id: id::RELATIVE_MME_CAPACITY,
                    criticality: Criticality::Ignore,
                    value: ie::relative_capacity_value(255),
                },
            ],
        };
        self.send_non_ue(cx, assoc, &answer);
    }

    fn s1_setup_failure(&mut self, cx: &mut Ctx, assoc: AssocId, cause: ie::Cause) {
        self.counters.s1_setup_failures += 1;
        let answer = S1apPdu {
            kind: Kind::Unsuccessful,
            procedure: proc::S1_SETUP,
            criticality: Criticality::Reject,
            ies: vec![ProtocolIe {
                id: id::CAUSE,
                criticality: Criticality::Ignore,
                value: ie::cause_value(cause),
            }],
        };
        self.send_non_ue(cx, assoc, &answer);
    }

    fn send_non_ue(&mut self, cx: &mut Ctx, assoc: AssocId, pdu: &S1apPdu) {
        let bytes = pdu.to_vec();
        if let Err(e) = self
            .l3
            .sctp_stack(cx)
            .send(cx, assoc, NON_UE_STREAM, s1ap::PPID, &bytes)
        {
            tracing::warn!(%e, "S1AP not sent");
        }
    }

    /// Initial UE Message [TS 36.413 § 8.6.2.1]: a new UE context and its
    /// first NAS message, an Attach Request [TS 24.301 § 5.5.1.2.2].
    fn initial_ue(&mut self, cx: &mut Ctx, assoc: AssocId, pdu: &S1apPdu) {
        let enb_ue_id = pdu.ie(id::ENB_UE_S1AP_ID).map(ie::enb_ue_id);
        let nas = pdu.ie(id::NAS_PDU).map(ie::nas_pdu);
        let (Some(Ok(enb_ue_id)), Some(Ok(nas))) = (enb_ue_id, nas) else {
            self.counters.s1ap_malformed += 1;
            return;
        };
        if !self
            .enbs
            .get(&assoc)
            .is_some_and(|e| e.state == S1State::Ready)
        {
            self.counters.s1ap_unhandled += 1;
            return;
        }
        let msg = match Pdu::parse(nas) {
            Ok(Pdu::Plain(m)) => EmmMessage::parse(m),
            Ok(Pdu::Protected { .. }) => {
                // No security context survives here: a GUTI attach with a
                // protected request starts over with the IMSI (next slices).
                self.counters.nas_dropped += 1;
                return;
            }
            Err(e) => Err(e),
        };
        if self.ues.len() >= MAX_UES {
            self.counters.ue_table_full += 1;
            return;
        }
        let mme_ue_id = self.next_ue;
        self.next_ue = self.next_ue.wrapping_add(1).max(1);
        let stream = 1 + (enb_ue_id % 15) as u16;
        self.ues.insert(
            mme_ue_id,
            UeCtx {
                enb: assoc,
                enb_ue_id,
                stream,
                imsi: String::new(),
                emm: EmmState::WaitVector,
                vector: None,
                session: String::new(),
                rejected: None,
                capability: vec![],
                sec: None,
                pti: 0,
                pco: None,
                apn: String::new(),
                ambr: (0, 0),
                bearer: None,
                switch_off: false,
                t3422: None,
            },
        );
        self.attach_request(cx, mme_ue_id, msg);
    }

    /// An Attach Request on the UE's context, new or not: a second one
    /// while an attach is in progress, or after a reject, starts it over
    /// [TS 24.301 § 5.5.1.2.7 d, e].
    fn attach_request(
        &mut self,
        cx: &mut Ctx,
        mme_ue_id: u32,
        msg: Result<EmmMessage, d11_wire::nas::NasError>,
    ) {
        let Some(ue) = self.ues.get_mut(&mme_ue_id) else {
            return;
        };
        ue.emm = EmmState::WaitVector;
        ue.vector = None;
        ue.sec = None;
        ue.rejected = None;
        ue.bearer = None;
        ue.t3422 = None;
        let imsi = match msg {
            Ok(EmmMessage::AttachRequest {
                identity: MobileIdentity::Imsi(imsi),
                ue_network_capability,
                esm,
                ..
            }) => {
                ue.capability = ue_network_capability;
                // The PDN Connectivity Request inside: its PTI comes back
                // in Activate Default EPS Bearer Context Request.
                (ue.pti, ue.pco) = match EsmMessage::parse(&esm) {
                    Ok(EsmMessage::PdnConnectivityRequest { pti, pco, .. }) => (pti, pco),
                    _ => {
                        self.counters.attach_requests += 1;
                        return self.reject(cx, mme_ue_id, cause::INVALID_MANDATORY_INFORMATION);
                    }
                };
                imsi
            }
            Ok(EmmMessage::AttachRequest { .. }) => {
                // A GUTI this MME did not give: TS 24.301 § 5.4.4 asks
                // for the IMSI (Identity Request) — not built yet.
                self.counters.attach_requests += 1;
                return self.reject(cx, mme_ue_id, cause::UE_IDENTITY_CANNOT_BE_DERIVED);
            }
            Ok(_) => {
                self.counters.nas_dropped += 1;
                return;
            }
            Err(e) => {
                tracing::debug!(%e, "Attach Request that does not decode");
                self.counters.nas_dropped += 1;
                return self.reject(cx, mme_ue_id, cause::INVALID_MANDATORY_INFORMATION);
            }
        };
        self.counters.attach_requests += 1;
        tracing::info!(%imsi, mme_ue_id, "Attach Request");
        ue.imsi = imsi;
        self.ask_vector(cx, mme_ue_id);
    }

    /// AIR [TS 29.272 § 5.2.3.1]: one E-UTRAN vector for the UE.
    fn ask_vector(&mut self, cx: &mut Ctx, mme_ue_id: u32) {
        self.ask_vector_resync(cx, mme_ue_id, None)
    }

    /// AIR, with RAND ‖ AUTS after a synch failure [TS 33.102 § 6.3.5].
    fn ask_vector_resync(&mut self, cx: &mut Ctx, mme_ue_id: u32, resync: Option<Vec<u8>>) {
        let plmn = self.cfg.plmn.0;
        let (Some(s6a), Some(ue)) = (self.s6a.as_mut(), self.ues.get_mut(&mme_ue_id)) else {
            return self.reject(cx, mme_ue_id, cause::NETWORK_FAILURE);
        };
        ue.session = s6a.session_id(cx);
        let imsi = ue.imsi.clone();
        let v = Some(VENDOR_3GPP);
        let hbh = s6a.request(cmd::AUTHENTICATION_INFORMATION, &ue.session, |m| {
            m.utf8(avp::USER_NAME, None, &imsi)
                .grouped(avp::REQUESTED_EUTRAN_AUTHENTICATION_INFO, v, |g| {
                    g.u32(avp::NUMBER_OF_REQUESTED_VECTORS, v, 1).u32(
                        avp::IMMEDIATE_RESPONSE_PREFERRED,
                        v,
                        1,
                    );
                    if let Some(r) = &resync {
                        g.avp(avp::RE_SYNCHRONIZATION_INFO, v, true, r);
                    }
                })
                .avp(avp::VISITED_PLMN_ID, v, true, &plmn);
        });
        match hbh {
            Some(h) => {
                self.pending.insert(h, mme_ue_id);
            }
            None => self.reject(cx, mme_ue_id, cause::NETWORK_FAILURE),
        }
    }

    /// An S6a answer: to the UE whose request it answers.
    fn s6a_answer(&mut self, cx: &mut Ctx, out: &mut Outbox, msg: &[u8]) {
        let Ok(p) = DiameterPacket::new_checked(msg) else {
            self.counters.s6a_dropped += 1;
            return;
        };
        let Some(mme_ue_id) = self.pending.remove(&p.hop_by_hop()) else {
            self.counters.s6a_dropped += 1;
            return;
        };
        match p.command_code() {
            cmd::AUTHENTICATION_INFORMATION => self.aia(cx, mme_ue_id, &p),
            cmd::UPDATE_LOCATION => self.ula(cx, out, mme_ue_id, &p),
            _ => self.counters.s6a_dropped += 1,
        }
    }

    /// AIA [TS 29.272 § 5.2.3.1.3]: the vector, or the HSS's refusal
    /// mapped to an EMM cause (TS 29.272 Annex A).
    fn aia(&mut self, cx: &mut Ctx, mme_ue_id: u32, p: &DiameterPacket<&[u8]>) {
        let v = Some(VENDOR_3GPP);
        let avps = p.avp_bytes();
        if let Err(c) = refusal(p) {
            return self.reject(cx, mme_ue_id, c);
        }
        let vector = (|| {
            let info = find(avps, avp::AUTHENTICATION_INFO, v).ok()??;
            let e = find(info.data, avp::E_UTRAN_VECTOR, v).ok()??;
            let get = |c| find(e.data, c, v).ok().flatten().map(|a| a.data);
            Some(Vector {
                rand: get(avp::RAND)?.try_into().ok()?,
                xres: get(avp::XRES)?.to_vec(),
                autn: get(avp::AUTN)?.try_into().ok()?,
                kasme: get(avp::KASME)?.try_into().ok()?,
            })
        })();
        let Some(vector) = vector else {
            self.counters.s6a_dropped += 1;
            return self.reject(cx, mme_ue_id, cause::NETWORK_FAILURE);
        };
        self.counters.vectors += 1;
        let Some(ue) = self.ues.get_mut(&mme_ue_id) else {
            return;
        };
        let req = EmmMessage::AuthenticationRequest {
            ksi: 0,
            rand: vector.rand,
            autn: vector.autn,
        };
        ue.vector = Some(vector);
        ue.emm = EmmState::WaitAuthentication;
        self.downlink_nas(cx, mme_ue_id, &req.to_vec());
    }

    /// ULA [TS 29.272 § 5.2.1.1.3]: the subscriber may attach, or the
    /// HSS's refusal as an EMM cause.
    fn ula(&mut self, cx: &mut Ctx, out: &mut Outbox, mme_ue_id: u32, p: &DiameterPacket<&[u8]>) {
        if let Err(c) = refusal(p) {
            return self.reject(cx, mme_ue_id, c);
        }
        let Some(ue) = self.ues.get_mut(&mme_ue_id) else {
            return;
        };
        tracing::info!(imsi = %ue.imsi, "Update Location accepted");
        // The default APN and its AMBR from the subscription [TS 29.272
        // § 7.3.2, § 7.3.35]; Diameter's bit/s are GTP's kbit/s × 1000.
        let v = Some(VENDOR_3GPP);
        let sub = find(p.avp_bytes(), avp::SUBSCRIPTION_DATA, v)
            .ok()
            .flatten();
        let apn = sub.and_then(|s| {
            let prof = find(s.data, avp::APN_CONFIGURATION_PROFILE, v).ok()??;
            let conf = find(prof.data, avp::APN_CONFIGURATION, v).ok()??;
            let name = find(conf.data, avp::SERVICE_SELECTION, None).ok()??;
            std::str::from_utf8(name.data).ok().map(str::to_string)
        });
        let ambr = sub.and_then(|s| {
            let a = find(s.data, avp::AMBR, v).ok()??;
            let get = |c| find(a.data, c, v).ok().flatten().and_then(|x| x.u32().ok());
            Some((
                get(avp::MAX_REQUESTED_BANDWIDTH_UL)? / 1000,
                get(avp::MAX_REQUESTED_BANDWIDTH_DL)? / 1000,
            ))
        });
        ue.apn = apn.unwrap_or_else(|| "internet".into());
        ue.ambr = ambr.unwrap_or((100_000, 100_000));
        self.create_session(cx, out, mme_ue_id);
    }

    /// Uplink NAS Transport [TS 36.413 § 8.6.2.3]: the UE's next message,
    /// plain only where TS 24.301 § 4.4.4.3 allows it (before security:
    /// Authentication Response and Failure), else protected and checked.
    fn uplink_nas(&mut self, cx: &mut Ctx, out: &mut Outbox, assoc: AssocId, pdu: &S1apPdu) {
        let mme_ue_id = pdu.ie(id::MME_UE_S1AP_ID).map(ie::mme_ue_id);
        let nas = pdu.ie(id::NAS_PDU).map(ie::nas_pdu);
        let (Some(Ok(mme_ue_id)), Some(Ok(nas))) = (mme_ue_id, nas) else {
            self.counters.s1ap_malformed += 1;
            return;
        };
        let Some(ue) = self.ues.get_mut(&mme_ue_id).filter(|u| u.enb == assoc) else {
            self.counters.s1ap_unhandled += 1;
            return;
        };
        let msg = match Pdu::parse(nas) {
            Ok(Pdu::Plain(m)) if m.get(1) == Some(&d11_wire::nas::emm::ATTACH_REQUEST) => {
                return self.attach_request(cx, mme_ue_id, EmmMessage::parse(m));
            }
            Ok(Pdu::Plain(m)) => match EmmMessage::parse(m) {
                Ok(
                    m @ (EmmMessage::AuthenticationResponse { .. }
                    | EmmMessage::AuthenticationFailure { .. }),
                ) if ue.emm == EmmState::WaitAuthentication => m,
                _ => {
                    self.counters.nas_dropped += 1;
                    return;
                }
            },
            Ok(Pdu::Protected {
                header,
                mac,
                sn,
                message,
            }) => match unprotect(ue, header, mac, sn, message) {
                Some(m) => m,
                None => {
                    self.counters.nas_dropped += 1;
                    return;
                }
            },
            Err(_) => {
                self.counters.nas_dropped += 1;
                return;
            }
        };
        match (ue.emm, msg) {
            (EmmState::WaitAuthentication, EmmMessage::AuthenticationResponse { res }) => {
                self.authenticated(cx, mme_ue_id, &res)
            }
            (
                EmmState::WaitAuthentication,
                EmmMessage::AuthenticationFailure {
                    cause: cause::SYNCH_FAILURE,
                    auts: Some(auts),
                },
            ) => {
                // [TS 24.301 § 5.4.2.7 c; TS 33.102 § 6.3.5]: RAND ‖ AUTS to the HSS.
                let rand = ue.vector.as_ref().map(|v| v.rand).unwrap_or_default();
                let resync = [&rand[..], &auts[..]].concat();
                ue.emm = EmmState::WaitVector;
                tracing::info!(imsi = %ue.imsi, "synch failure: resynchronising");
                self.ask_vector_resync(cx, mme_ue_id, Some(resync));
            }
            (EmmState::WaitAuthentication, EmmMessage::AuthenticationFailure { cause: c, .. }) => {
                tracing::info!(imsi = %ue.imsi, cause = c, "authentication failure");
                self.authentication_reject(cx, mme_ue_id);
            }
            (EmmState::WaitSecurityMode, EmmMessage::SecurityModeComplete) => {
                self.update_location(cx, mme_ue_id)
            }
            (EmmState::WaitSecurityMode, EmmMessage::SecurityModeReject { cause: c }) => {
                self.reject(cx, mme_ue_id, c)
            }
            (
                EmmState::Registered | EmmState::WaitContextSetup,
                EmmMessage::DetachRequest { detach_type, .. },
            ) => self.detach(cx, out, mme_ue_id, detach_type),
            (EmmState::NetworkDetaching, EmmMessage::DetachAccept) => {
                tracing::info!(imsi = %ue.imsi, "Detach Accept: releasing");
                ue.emm = EmmState::Deregistered;
                ue.t3422 = None; // stopped [§ 5.5.2.3.2]
                self.release_command(cx, mme_ue_id, ie::NAS_DETACH);
            }
            (EmmState::WaitContextSetup, EmmMessage::AttachComplete { esm }) => {
                // With the Activate Default EPS Bearer Context Accept for
                // the bearer it was offered [TS 24.301 § 6.4.1.3].
                let ok = matches!(
                    EsmMessage::parse(&esm),
                    Ok(EsmMessage::ActivateDefaultBearerAccept {
                        ebi: DEFAULT_EBI,
                        ..
                    })
                );
                if !ok {
                    self.counters.nas_dropped += 1;
                    return;
                }
                tracing::info!(imsi = %ue.imsi, "Attach Complete: registered");
                ue.emm = EmmState::Registered;
                self.counters.attach_completes += 1;
            }
            _ => self.counters.nas_dropped += 1,
        }
    }

    /// RES against XRES [TS 33.401 § 6.1.1]: a match makes the NAS
    /// security context and starts Security Mode Control [TS 24.301
    /// § 5.4.3] with EIA2 and `config.nas_ciphering`'s EEA; a mismatch is
    /// Authentication Reject.
    fn authenticated(&mut self, cx: &mut Ctx, mme_ue_id: u32, res: &[u8]) {
        let Some(ue) = self.ues.get_mut(&mme_ue_id) else {
            return;
        };
        let Some(v) = ue.vector.take() else {
            return;
        };
        if v.xres[..] != *res {
            tracing::info!(imsi = %ue.imsi, "RES does not match XRES");
            return self.authentication_reject(cx, mme_ue_id);
        }
        // Only 128-EIA2 is ours; a UE without it (EIA0 alone, or EIA1)
        // cannot be protected [TS 33.401 § 5.1.4.2: EIA0 is for
        // unauthenticated emergency calls only].
        let eia_octet = ue.capability.get(1).copied().unwrap_or(0);
        if eia_octet & EIA2_BIT == 0 {
            return self.reject(cx, mme_ue_id, cause::UE_SECURITY_CAPABILITIES_MISMATCH);
        }
        // The first of ours the UE supports [TS 33.401 § 7.2.4.3]; every
        // UE supports EEA0 [§ 5.1.3.2].
        let eea_octet = ue.capability.first().copied().unwrap_or(0);
        let eea = match self.cfg.nas_ciphering {
            NasCiphering::Eea2 if eea_octet & EEA2_BIT != 0 => 2,
            _ => 0,
        };
        let keys = NasKeys::derive(&v.kasme, eea).expect("EEA0 or EEA2");
        tracing::info!(imsi = %ue.imsi, eea, "NAS security: EIA2, EEA{eea}");
        ue.sec = Some(Security {
            kasme: v.kasme,
            keys,
            dl_count: 0,
            ul_count: 0,
        });
        ue.emm = EmmState::WaitSecurityMode;
        // The UE security capability replayed: its EEA and EIA octets (and
        // UEA/UIA when it sent them) [TS 24.301 § 9.9.3.36].
        let replayed = ue.capability[..ue.capability.len().min(4)].to_vec();
        let smc = EmmMessage::SecurityModeCommand {
            eea,
            eia: 2,
            ksi: 0,
            ue_security_capability: replayed,
        };
        let nas = protect(ue, sec::INTEGRITY_NEW_CONTEXT, &smc.to_vec());
        self.downlink_nas(cx, mme_ue_id, &nas);
    }

    /// ULR [TS 29.272 § 5.2.1.1.2]: the MME registers itself for the UE.
    fn update_location(&mut self, cx: &mut Ctx, mme_ue_id: u32) {
        let plmn = self.cfg.plmn.0;
        let (Some(s6a), Some(ue)) = (self.s6a.as_mut(), self.ues.get_mut(&mme_ue_id)) else {
            return self.reject(cx, mme_ue_id, cause::NETWORK_FAILURE);
        };
        ue.emm = EmmState::WaitLocation;
        let imsi = ue.imsi.clone();
        let v = Some(VENDOR_3GPP);
        let hbh = s6a.request(cmd::UPDATE_LOCATION, &ue.session, |m| {
            m.utf8(avp::USER_NAME, None, &imsi)
                .u32(avp::RAT_TYPE, v, RAT_EUTRAN)
                .u32(avp::ULR_FLAGS, v, ULR_S6A_INDICATOR)
                .avp(avp::VISITED_PLMN_ID, v, true, &plmn);
        });
        match hbh {
            Some(h) => {
                self.pending.insert(h, mme_ue_id);
            }
            None => self.reject(cx, mme_ue_id, cause::NETWORK_FAILURE),
        }
    }

    /// Authentication Reject [TS 24.301 § 5.4.2.5]: plain, no cause.
    fn authentication_reject(&mut self, cx: &mut Ctx, mme_ue_id: u32) {
        self.counters.attach_rejects += 1;
        if let Some(ue) = self.ues.get_mut(&mme_ue_id) {
            ue.emm = EmmState::Deregistered;
            ue.rejected = Some(0);
        }
        self.downlink_nas(cx, mme_ue_id, &EmmMessage::AuthenticationReject.to_vec());
    }

    /// Attach Reject [TS 24.301 § 5.5.1.2.5]: integrity protected once
    /// there is a security context, plain before; the UE is left
    /// EMM-DEREGISTERED.
    fn reject(&mut self, cx: &mut Ctx, mme_ue_id: u32, emm_cause: u8) {
        self.counters.attach_rejects += 1;
        let mut msg = EmmMessage::AttachReject { cause: emm_cause }.to_vec();
        if let Some(ue) = self.ues.get_mut(&mme_ue_id) {
            tracing::info!(imsi = %ue.imsi, emm_cause, "Attach Reject");
            ue.emm = EmmState::Deregistered;
            ue.rejected = Some(emm_cause);
            if ue.sec.is_some() {
                msg = protect(ue, sec::INTEGRITY, &msg);
            }
        }
        self.downlink_nas(cx, mme_ue_id, &msg);
    }

    /// Downlink NAS Transport [TS 36.413 § 8.6.2.2] on the UE's stream.
    fn downlink_nas(&mut self, cx: &mut Ctx, mme_ue_id: u32, nas: &[u8]) {
        let Some(ue) = self.ues.get(&mme_ue_id) else {
            return;
        };
        let pdu = S1apPdu {
            kind: Kind::Initiating,
            procedure: proc::DOWNLINK_NAS_TRANSPORT,
            criticality: Criticality::Ignore,
            ies: ProtocolIe::ue_ids(mme_ue_id, ue.enb_ue_id, Criticality::Reject)
                .into_iter()
                .chain([ProtocolIe {
                    id: id::NAS_PDU,
                    criticality: Criticality::Reject,
                    value: ie::nas_pdu_value(nas),
                }])
                .collect::<Vec<_>>(),
        };
        let (enb, stream) = (ue.enb, ue.stream);
        if let Err(e) = self
            .l3
            .sctp_stack(cx)
            .send(cx, enb, stream, s1ap::PPID, &pdu.to_vec())
        {
            tracing::warn!(%e, "Downlink NAS Transport not sent");
        }
    }

    pub fn report_typed(&self) -> MmeReport {
        let (associations, sctp) = match self.l3.sctp() {
            Some(s) => (s.rows(), s.counters().clone()),
            None => (vec![], SctpCounters::default()),
        };
        MmeReport {
            l3: self.l3.report(),
            plmn: self.cfg.plmn,
            group: self.cfg.group,
            code: self.cfg.code,
            s6a: self.s6a.as_ref().map(S6aPeer::row),
            s11: self.s11.as_ref().map(GtpcEndpoint::row),
            ues: self
                .ues
                .iter()
                .map(|(&mme_ue_id, u)| UeRow {
                    imsi: u.imsi.clone(),
                    emm: u.emm,
                    mme_ue_id,
                    enb_ue_id: u.enb_ue_id,
                    rejected: u.rejected,
                    apn: u.apn.clone(),
                    ue_ip: u.bearer.as_ref().map(|s| s.ue_ip),
                })
                .collect(),
            enbs: self
                .enbs
                .iter()
                .map(|(&assoc, p)| EnbRow {
                    assoc,
                    remote: p.remote,
                    enb_id: p.enb_id,
                    plmn: p.plmn,
                    tacs: p.tacs.clone(),
                    s1: match p.state {
                        S1State::Waiting => "waiting",
                        S1State::Ready => "ready",
                        S1State::Refused => "refused",
                    }
                    .into(),
                })
                .collect(),
            associations,
            sctp,
            counters: self.counters.clone(),
        }
    }
}

/// T3412, the periodic tracking area update timer: 9 minutes (unit 1 min)
/// [TS 24.008 § 10.5.7.3], as the wire's Attach Accept fixture has it.
const T3412: u8 = 0x29;

/// The most UE contexts the MME holds (`d11 load` attaches 10,000).
pub const MAX_UES: usize = 65_536;

/// RAT-Type EUTRAN [TS 29.212 § 5.3.31].
const RAT_EUTRAN: u32 = 1004;
/// ULR-Flags: S6a/S6d-Indicator (bit 1) [TS 29.272 § 7.3.7].
const ULR_S6A_INDICATOR: u32 = 0x02;

/// An S6a answer's outcome: Ok for DIAMETER_SUCCESS, else the EMM cause
/// TS 29.272 Annex A maps the HSS's error to.
fn refusal(p: &DiameterPacket<&[u8]>) -> Result<(), u8> {
    let avps = p.avp_bytes();
    let result = find(avps, avp::RESULT_CODE, None)
        .ok()
        .flatten()
        .and_then(|a| a.u32().ok());
    if result == Some(dia::result::SUCCESS) {
        return Ok(());
    }
    let experimental = find(avps, avp::EXPERIMENTAL_RESULT, None)
        .ok()
        .flatten()
        .and_then(|e| {
            find(e.data, avp::EXPERIMENTAL_RESULT_CODE, None)
                .ok()
                .flatten()
        })
        .and_then(|a| a.u32().ok());
    Err(match experimental {
        Some(dia::result::ERROR_USER_UNKNOWN) => cause::EPS_AND_NON_EPS_SERVICES_NOT_ALLOWED,
        Some(dia::result::ERROR_UNKNOWN_EPS_SUBSCRIPTION) => cause::EPS_SERVICES_NOT_ALLOWED,
        _ => cause::NETWORK_FAILURE,
    })
}

/// A downlink message in a security protected PDU with the next downlink
/// NAS COUNT [TS 24.301 § 4.4.3, § 4.4.5, § 9.1]: ciphered when the
/// header type says so and the context has EEA2 (EEA0 leaves it readable).
fn protect(ue: &mut UeCtx, header: u8, msg: &[u8]) -> Vec<u8> {
    let Some(s) = ue.sec.as_mut() else {
        return msg.to_vec();
    };
    let count = s.dl_count;
    s.dl_count = s.dl_count.wrapping_add(1) & 0xff_ffff;
    let mut body = msg.to_vec();
    let mac = s
        .keys
        .seal(count, Direction::Downlink, sec::ciphers(header), &mut body);
    let mut out = Vec::with_capacity(msg.len() + 6);
    emit_protected(&mut out, header, mac, count as u8, &body);
    out
}

/// An uplink protected PDU checked: its COUNT estimated from the sequence
/// number and the highest seen [TS 24.301 § 4.4.3.1], the MAC verified
/// (a replay or a forgery fails it), the message deciphered when its
/// header type ciphers [§ 4.4.5] and read. None is a counted drop.
fn unprotect(
    ue: &mut UeCtx,
    header: u8,
    mac: [u8; 4],
    sn: u8,
    message: &[u8],
) -> Option<EmmMessage> {
    let s = ue.sec.as_mut()?;
    let plain = s.keys.open_next(
        &mut s.ul_count,
        sn,
        Direction::Uplink,
        sec::ciphers(header),
        mac,
        message,
    )?;
    EmmMessage::parse(&plain).ok()
}

/// CauseProtocol semantic-error [TS 36.413 § 9.2.1.3].
const PROTOCOL_SEMANTIC: u8 = 4;

impl Role for Mme {
    const INFO: RoleInfo = RoleInfo {
        name: "mme",
        summary: "MME: S1AP over SCTP 36412 towards the eNodeB, S6a (Diameter over TCP) to the HSS, S11 (GTPv2-C) to the SGW; ports s1mme, s6a[, s11]",
        addressing: Addressing::All,
        bridges: false,
        isolates_tenants: false,
        routes: false,
    };
    type Settings = MmeSettings;
    fn build(node: &ElementNode, s: MmeSettings) -> Result<Box<dyn AnyElement>, ConfigError> {
        match node.ports.len() {
            3 => node.expect_ports(&["s1mme", "s6a", "s11"])?,
            _ => node.expect_ports(&["s1mme", "s6a"])?,
        }
        let mut l3 = L3::with_ports(node.l3_ports()?);
        for (i, r) in node.routes.iter().enumerate() {
            l3.add_route(r.to, r.via, RouteSource::Static)
                .map_err(|e| ConfigError::new(format!("routes[{i}]"), e.to_string()))?;
        }
        Ok(Box::new(Mme::new(l3, s)))
    }
}

impl Element for Mme {
    fn on_frame(&mut self, cx: &mut Ctx, port: PortId, frame: &[u8], out: &mut Outbox) {
        match self.l3.input(cx, port, frame, out) {
            Input::Done => {}
            Input::Transit(_) => out.drop_frame(port, DropReason::NotForUs),
            Input::Local(_) | Input::Tunnel { .. } => {
                out.drop_frame(port, DropReason::UnsupportedProtocol)
            }
        }
        self.serve(cx, out);
    }

    fn on_timer(&mut self, cx: &mut Ctx, out: &mut Outbox) {
        self.l3.on_timer(cx, out);
        self.run_t3422(cx);
        self.serve(cx, out);
    }

    fn poll_at(&self) -> Option<Instant> {
        if !self.listening {
            return Some(Instant::ZERO);
        }
        let s6a = self.s6a.as_ref().and_then(S6aPeer::poll_at);
        let s11 = match (&self.s11, self.cfg.sgw) {
            (Some(e), _) => e.poll_at(),
            (None, Some(_)) => Some(Instant::ZERO),
            (None, None) => None,
        };
        let t3422 = self.t3422.first().map(|&(due, _)| due);
        [self.l3.poll_at(), s6a, s11, t3422]
            .into_iter()
            .flatten()
            .min()
    }

    fn report(&self) -> serde_json::Value {
        d11_core::report_json(&self.report_typed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plmn_reads_and_prints_in_tbcd() {
        // TS 24.008 § 10.5.1.13: MCC 001 MNC 01 is 00 F1 10, as pycrate's
        // S1 Setup Request fixture in crates/wire/src/s1ap.rs carries it.
        assert_eq!(Plmn::parse("00101"), Some(Plmn([0x00, 0xf1, 0x10])));
        assert_eq!(Plmn([0x00, 0xf1, 0x10]).to_string(), "00101");
        // MCC 310 MNC 410: 13 00 14.
        assert_eq!(Plmn::parse("310410"), Some(Plmn([0x13, 0x00, 0x14])));
        assert_eq!(Plmn([0x13, 0x00, 0x14]).to_string(), "310410");
        assert_eq!(Plmn::parse("0010"), None);
        assert_eq!(Plmn::parse("0010x"), None);
    }

    #[test]
    fn nas_ciphering_is_eea0_unless_set_and_a_wrong_value_names_its_key() {
        let parse = |text: &str| {
            let table: toml::Table = text.parse().expect("toml");
            d11_core::settings::parse::<MmeSettings>(&table, "role mme")
        };
        assert_eq!(parse("").unwrap().nas_ciphering, NasCiphering::Eea0);
        let eea2 = parse("nas_ciphering = \"eea2\"").unwrap();
        assert_eq!(eea2.nas_ciphering, NasCiphering::Eea2);
        let e = parse("nas_ciphering = \"eea3\"").unwrap_err();
        assert_eq!(e.key, "config.nas_ciphering");
        assert!(e.message.contains("eea3"), "{e}");
        assert!(!e.to_string().contains('\n'), "one line: {e}");
    }
}
