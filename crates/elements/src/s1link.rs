//! The eNodeB's end of S1-MME: its SCTP association to the MME and the
//! S1AP procedures it starts.
//!
//! Read TS 36.412 § 7 (SCTP: the eNodeB initiates the association to the
//! MME's port 36412, PPID 18, non-UE signalling on stream 0) and TS 36.413
//! § 8.7.3 (S1 Setup: the eNodeB's first S1AP message, with its Global
//! eNB ID and the tracking areas it broadcasts; on S1 Setup Failure it
//! waits before trying again, § 8.7.3.4).
//!
//! Today: the association and S1 Setup, again after the association goes
//! down; the NAS relay (TS 36.413 § 8.6): a phone's first NAS message
//! opens a UE context with an Initial UE Message, later ones go up in
//! Uplink NAS Transport, and Downlink NAS Transport comes back down to the
//! phone it names. Each UE's signalling rides a stream of its own
//! (TS 36.412 § 7). Initial Context Setup (TS 36.413 § 8.3.1): the
//! E-RAB towards the SGW's S1-U F-TEID is handed to the eNodeB
//! ([`S1Link::take_setups`]), which makes its own TEID and the bearer,
//! passes the NAS inside to the phone and answers
//! ([`S1Link::context_setup_response`]). Next (`PROGRESS-attach.md`): UE
//! Context Release.
//!
//! The radio carriage of NAS (RRC is out of the lab's scope, as UERANSIM's
//! radio-link simulation leaves it out): an Ethernet frame on the radio
//! wire from the phone's MAC, EtherType [`ETHERTYPE_NAS`] (IEEE 802's
//! Local Experimental EtherType 1), whose payload is the NAS PDU itself.
//! The phone's MAC plays the radio's C-RNTI: it names the UE to the eNodeB.

use crate::mme::{Plmn, NON_UE_STREAM};
use d11_core::l3::sctp::{AssocId, SctpEvent, DEFAULT_STREAMS};
use d11_core::{Ctx, Instant, Outbox, L3};
use d11_wire::s1ap::{self, id, ie, proc, Criticality, Kind, ProtocolIe, S1apPdu};
use d11_wire::MacAddr;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

/// How long after a lost association or a refused setup the eNodeB tries
/// again (TS 36.413's Time to wait is the MME's to give; the lab's is
/// fixed).
pub const RETRY: Duration = Duration::from_secs(1);
/// After an S1 Setup Failure.
pub const RETRY_REFUSED: Duration = Duration::from_secs(10);

/// The EtherType of NAS on the lab's radio wire: IEEE 802's Local
/// Experimental EtherType 1 (IEEE Std 802-2014 § 9.2.4).
pub const ETHERTYPE_NAS: u16 = 0x88b5;

/// The most UE contexts the eNodeB holds (`d11 load` attaches 10,000).
pub const MAX_UES: usize = 65_536;

/// The IMSI of a plain Attach Request: it names the UE's bearer in the
/// eNodeB's table (`d11 show enb`), as the topology's bearers are named.
fn attach_imsi(nas: &[u8]) -> Option<String> {
    use d11_wire::nas::{EmmMessage, MobileIdentity};
    match EmmMessage::parse(nas) {
        Ok(EmmMessage::AttachRequest {
            identity: MobileIdentity::Imsi(i),
            ..
        }) => Some(i),
        _ => None,
    }
}

/// The S1 settings of an eNodeB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S1Config {
    pub mme: Ipv4Addr,
    pub plmn: Plmn,
    /// Its macro eNodeB id (20 bits) [TS 36.413 § 9.2.1.37].
    pub enb_id: u32,
    /// The tracking area its cell broadcasts.
    pub tac: u16,
}

/// Where the eNodeB's S1 stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum S1State {
    /// No association; trying again at `retry_at`.
    Idle,
    /// INIT sent.
    Connecting,
    /// S1 Setup Request sent.
    SetupSent,
    /// S1 Setup Response received: UEs may attach.
    Ready,
    /// S1 Setup Failure received.
    Refused,
}

/// The S1 row of the eNodeB's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S1Row {
    pub mme: SocketAddrV4,
    pub state: S1State,
    pub assoc: Option<AssocId>,
    /// The MME's GUMMEI from its S1 Setup Response: PLMN, group, code.
    pub gummei: Option<(Plmn, u16, u8)>,
    pub setups: u64,
    /// S1AP from the MME that does not decode or that this side does not handle.
    pub s1ap_dropped: u64,
    /// UE contexts (phones whose NAS the eNodeB relays).
    pub ues: Vec<UeRow>,
    /// NAS from the radio before S1 is ready, or for no context.
    pub nas_dropped: u64,
    /// UE Context Release Requests sent (the UE's tunnel refused).
    #[serde(default)]
    pub release_requests: u64,
}

/// One UE context of the eNodeB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UeRow {
    pub mac: MacAddr,
    pub enb_ue_id: u32,
    pub mme_ue_id: Option<u32>,
    pub stream: u16,
}

#[derive(Debug, Clone)]
struct UeLink {
    mac: MacAddr,
    mme_ue_id: Option<u32>,
    stream: u16,
    /// The IMSI of its Attach Request (plain NAS), naming its bearer.
    imsi: Option<String>,
    /// UE Context Release Request sent: once per context.
    release_requested: bool,
}

/// An E-RAB the MME asked for in Initial Context Setup, for the eNodeB
/// to set up [TS 36.413 § 8.3.1.2].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErabSetup {
    pub mac: MacAddr,
    pub enb_ue_id: u32,
    pub imsi: Option<String>,
    pub erab: d11_wire::s1ap::ie::ErabToSetup,
}

/// The eNodeB's end of S1-MME.
#[derive(Debug)]
pub struct S1Link {
    cfg: S1Config,
    state: S1State,
    assoc: Option<AssocId>,
    retry_at: Instant,
    gummei: Option<(Plmn, u16, u8)>,
    setups: u64,
    s1ap_dropped: u64,
    nas_dropped: u64,
    release_requests: u64,
    ues: HashMap<u32, UeLink>,
    by_mac: HashMap<MacAddr, u32>,
    next_ue: u32,
    /// NAS for the radio: (the phone's MAC, the PDU).
    downlink: Vec<(MacAddr, Vec<u8>)>,
    /// E-RABs to set up.
    erabs: Vec<ErabSetup>,
    /// UEs released by the MME: their IMSI (their bearer goes) and MAC.
    released: Vec<(Option<String>, MacAddr)>,
}

impl S1Link {
    pub fn new(cfg: S1Config) -> S1Link {
        S1Link {
            cfg,
            state: S1State::Idle,
            assoc: None,
            retry_at: Instant::ZERO,
            gummei: None,
            setups: 0,
            s1ap_dropped: 0,
            nas_dropped: 0,
            release_requests: 0,
            ues: HashMap::new(),
            by_mac: HashMap::new(),
            next_ue: 1,
            downlink: vec![],
            erabs: vec![],
            released: vec![],
        }
    }

    /// UEs the MME released, for the eNodeB to drop their bearers.
    pub fn take_released(&mut self) -> Vec<(Option<String>, MacAddr)> {
        std::mem::take(&mut self.released)
    }

    /// UE Context Release Command [TS 36.413 § 8.3.3]: the UE context
    /// goes, and UE Context Release Complete answers.
    fn release(&mut self, l3: &mut L3, cx: &mut Ctx, pdu: &S1apPdu) {
        let Some(Ok((mme, enb))) = pdu.ie(id::UE_S1AP_IDS).map(ie::ue_s1ap_ids) else {
            self.s1ap_dropped += 1;
            return;
        };
        let enb = enb.or_else(|| {
            self.ues
                .iter()
                .find(|(_, u)| u.mme_ue_id == Some(mme))
                .map(|(&i, _)| i)
        });
        let (Some(assoc), Some(enb_ue_id)) = (self.assoc, enb) else {
            self.s1ap_dropped += 1;
            return;
        };
        let Some(ue) = self.ues.remove(&enb_ue_id) else {
            self.s1ap_dropped += 1;
            return;
        };
        self.by_mac.remove(&ue.mac);
        tracing::info!(enb_ue_id, mac = %ue.mac, "UE context released");
        self.released.push((ue.imsi, ue.mac));
        let pdu = S1apPdu {
            kind: Kind::Successful,
            procedure: proc::UE_CONTEXT_RELEASE,
            criticality: Criticality::Reject,
            ies: ProtocolIe::ue_ids(mme, enb_ue_id, Criticality::Ignore),
        };
        if let Err(e) = l3
            .sctp_stack(cx)
            .send(cx, assoc, ue.stream, s1ap::PPID, &pdu.to_vec())
        {
            tracing::warn!(%e, "UE Context Release Complete not sent");
        }
    }

    /// UE Context Release Request [TS 36.413 § 8.3.2] for the UE whose
    /// bearer is `name` (its IMSI, or "ue MAC"), cause Transport
    /// "transport-resource-unavailable": the SGW refused its S1-U tunnel
    /// with an Error Indication [TS 23.007 § 20.3]. Once per context;
    /// false when no context with an MME id has that name.
    pub fn release_request(&mut self, l3: &mut L3, cx: &mut Ctx, name: &str) -> bool {
        let Some(assoc) = self.assoc else {
            return false;
        };
        let found = self.ues.iter_mut().find(|(_, u)| match &u.imsi {
            Some(i) => i == name,
            None => name.strip_prefix("ue ") == Some(&u.mac.to_string()),
        });
        let Some((&enb_ue_id, ue)) = found else {
            return false;
        };
        let Some(mme) = ue.mme_ue_id.filter(|_| !ue.release_requested) else {
            return false;
        };
        ue.release_requested = true;
        self.release_requests += 1;
        tracing::info!(enb_ue_id, mac = %ue.mac, "UE Context Release Request: its tunnel is refused");
        let pdu = S1apPdu {
            kind: Kind::Initiating,
            procedure: proc::UE_CONTEXT_RELEASE_REQUEST,
            criticality: Criticality::Ignore,
            ies: ProtocolIe::ue_ids(mme, enb_ue_id, Criticality::Reject)
                .into_iter()
                .chain([ProtocolIe {
                    id: id::CAUSE,
                    criticality: Criticality::Ignore,
                    value: ie::cause_value(ie::Cause::Transport(
                        ie::TRANSPORT_RESOURCE_UNAVAILABLE,
                    )),
                }])
                .collect(),
        };
        let stream = ue.stream;
        if let Err(e) = l3
            .sctp_stack(cx)
            .send(cx, assoc, stream, s1ap::PPID, &pdu.to_vec())
        {
            tracing::warn!(%e, "UE Context Release Request not sent");
        }
        true
    }

    /// E-RABs from Initial Context Setup Requests, for the eNodeB.
    pub fn take_setups(&mut self) -> Vec<ErabSetup> {
        std::mem::take(&mut self.erabs)
    }

    /// Initial Context Setup Response [TS 36.413 § 9.1.4.2]: the E-RAB set
    /// up with the eNodeB's S1-U address and TEID; Failure (cause radio
    /// "unspecified") when `made` is None.
    pub fn context_setup_response(
        &mut self,
        l3: &mut L3,
        cx: &mut Ctx,
        enb_ue_id: u32,
        erab: u8,
        made: Option<(Ipv4Addr, u32)>,
    ) {
        let Some(assoc) = self.assoc else {
            return;
        };
        let Some((mme, stream)) = self
            .ues
            .get(&enb_ue_id)
            .and_then(|u| Some((u.mme_ue_id?, u.stream)))
        else {
            return;
        };
        let mut ies = ProtocolIe::ue_ids(mme, enb_ue_id, Criticality::Ignore);
        let kind = match made {
            Some((addr, teid)) => {
                ies.push(ProtocolIe {
                    id: id::E_RAB_SETUP_LIST_CTXT_SU_RES,
                    criticality: Criticality::Ignore,
                    value: ie::erab_setup_list_res_value(&[(erab, addr, teid)]),
                });
                Kind::Successful
            }
            None => {
                ies.push(ProtocolIe {
                    id: id::CAUSE,
                    criticality: Criticality::Ignore,
                    value: ie::cause_value(ie::Cause::RadioNetwork(0)),
                });
                Kind::Unsuccessful
            }
        };
        let pdu = S1apPdu {
            kind,
            procedure: proc::INITIAL_CONTEXT_SETUP,
            criticality: Criticality::Reject,
            ies,
        };
        if let Err(e) = l3
            .sctp_stack(cx)
            .send(cx, assoc, stream, s1ap::PPID, &pdu.to_vec())
        {
            tracing::warn!(%e, "Initial Context Setup Response not sent");
        }
    }

    /// Initial Context Setup Request [TS 36.413 § 8.3.1]: its E-RABs
    /// (the default bearer's) for the eNodeB to set up.
    fn context_setup(&mut self, pdu: &S1apPdu) {
        let enb = pdu.ie(id::ENB_UE_S1AP_ID).map(ie::enb_ue_id);
        let erabs = pdu
            .ie(id::E_RAB_TO_BE_SETUP_LIST_CTXT_SU_REQ)
            .map(ie::erab_to_setup_list);
        let (Some(Ok(enb_ue_id)), Some(Ok(erabs))) = (enb, erabs) else {
            self.s1ap_dropped += 1;
            return;
        };
        let Some(ue) = self.ues.get_mut(&enb_ue_id) else {
            self.s1ap_dropped += 1;
            return;
        };
        // A new bearer: a refusal of it is worth a new request.
        ue.release_requested = false;
        for erab in erabs {
            self.erabs.push(ErabSetup {
                mac: ue.mac,
                enb_ue_id,
                imsi: ue.imsi.clone(),
                erab,
            });
        }
    }

    /// NAS for the phones, to send on the radio.
    pub fn take_downlink(&mut self) -> std::vec::Drain<'_, (MacAddr, Vec<u8>)> {
        self.downlink.drain(..)
    }

    /// A NAS PDU from the phone at `mac`: an Initial UE Message if it has
    /// no context yet, else Uplink NAS Transport. False (a counted drop)
    /// before S1 is ready or while its first message awaits the MME.
    pub fn uplink_nas(&mut self, l3: &mut L3, cx: &mut Ctx, mac: MacAddr, nas: &[u8]) -> bool {
        let (Some(assoc), S1State::Ready) = (self.assoc, self.state) else {
            self.nas_dropped += 1;
            return false;
        };
        let c = &self.cfg;
        let location = [
            ProtocolIe {
                id: id::TAI,
                criticality: Criticality::Reject,
                value: ie::tai_value(ie::Tai {
                    plmn: c.plmn.0,
                    tac: c.tac,
                }),
            },
            ProtocolIe {
                id: id::EUTRAN_CGI,
                criticality: Criticality::Ignore,
                value: ie::eutran_cgi_value(c.plmn.0, c.enb_id << 8 | 1),
            },
        ];
        let nas_ie = ProtocolIe {
            id: id::NAS_PDU,
            criticality: Criticality::Reject,
            value: ie::nas_pdu_value(nas),
        };
        if let Some(ue) = self.by_mac.get(&mac).and_then(|i| self.ues.get_mut(i)) {
            // A new attach on the same radio may name another subscriber.
            if let Some(i) = attach_imsi(nas) {
                ue.imsi = Some(i);
            }
        }
        let (pdu, stream) = match self
            .by_mac
            .get(&mac)
            .and_then(|i| Some((*i, self.ues.get(i)?)))
        {
            Some((enb_ue_id, ue)) => {
                let Some(mme_ue_id) = ue.mme_ue_id else {
                    self.nas_dropped += 1;
                    return false;
                };
                let mut ies = ProtocolIe::ue_ids(mme_ue_id, enb_ue_id, Criticality::Reject)
                    .into_iter()
                    .chain([nas_ie])
                    .collect::<Vec<_>>();
                let [tai, cgi] = location;
                ies.extend([
                    cgi,
                    ProtocolIe {
                        criticality: Criticality::Ignore,
                        ..tai
                    },
                ]);
                let pdu = S1apPdu {
                    kind: Kind::Initiating,
                    procedure: proc::UPLINK_NAS_TRANSPORT,
                    criticality: Criticality::Ignore,
                    ies,
                };
                (pdu, ue.stream)
            }
            None if self.ues.len() >= MAX_UES => {
                self.nas_dropped += 1;
                return false;
            }
            None => {
                let enb_ue_id = self.next_ue;
                self.next_ue = (self.next_ue + 1) & 0xff_ffff;
                let stream = 1 + (enb_ue_id % u32::from(DEFAULT_STREAMS - 1)) as u16;
                let imsi = attach_imsi(nas);
                self.ues.insert(
                    enb_ue_id,
                    UeLink {
                        mac,
                        mme_ue_id: None,
                        stream,
                        imsi,
                        release_requested: false,
                    },
                );
                self.by_mac.insert(mac, enb_ue_id);
                let mut ies = vec![
                    ProtocolIe {
                        id: id::ENB_UE_S1AP_ID,
                        criticality: Criticality::Reject,
                        value: ie::enb_ue_id_value(enb_ue_id),
                    },
                    nas_ie,
                ];
                ies.extend(location);
                ies.push(ProtocolIe {
                    id: id::RRC_ESTABLISHMENT_CAUSE,
                    criticality: Criticality::Ignore,
                    value: ie::rrc_cause_value(ie::RRC_MO_SIGNALLING),
                });
                let pdu = S1apPdu {
                    kind: Kind::Initiating,
                    procedure: proc::INITIAL_UE_MESSAGE,
                    criticality: Criticality::Ignore,
                    ies,
                };
                (pdu, stream)
            }
        };
        let sent = l3
            .sctp_stack(cx)
            .send(cx, assoc, stream, s1ap::PPID, &pdu.to_vec());
        if sent.is_err() {
            self.nas_dropped += 1;
        }
        sent.is_ok()
    }

    /// Downlink NAS Transport [TS 36.413 § 8.6.2.1]: the NAS goes to the
    /// phone the eNB UE S1AP ID names; the first one tells us the MME's id.
    fn downlink_nas(&mut self, pdu: &S1apPdu) {
        let enb = pdu.ie(id::ENB_UE_S1AP_ID).map(ie::enb_ue_id);
        let mme = pdu.ie(id::MME_UE_S1AP_ID).map(ie::mme_ue_id);
        let nas = pdu.ie(id::NAS_PDU).map(ie::nas_pdu);
        let (Some(Ok(enb)), Some(Ok(mme)), Some(Ok(nas))) = (enb, mme, nas) else {
            self.s1ap_dropped += 1;
            return;
        };
        let Some(ue) = self.ues.get_mut(&enb) else {
            self.s1ap_dropped += 1;
            return;
        };
        ue.mme_ue_id = Some(mme);
        self.downlink.push((ue.mac, nas.to_vec()));
    }

    pub fn state(&self) -> S1State {
        self.state
    }

    /// When [`S1Link::serve`] must run without a frame.
    pub fn poll_at(&self) -> Option<Instant> {
        matches!(self.state, S1State::Idle | S1State::Refused).then_some(self.retry_at)
    }

    /// Connects when due, reads the association's events and messages,
    /// answers them, and lets the layer send.
    pub fn serve(&mut self, l3: &mut L3, cx: &mut Ctx, out: &mut Outbox) {
        if self.state == S1State::Refused && cx.now >= self.retry_at {
            if let Some(id) = self.assoc.take() {
                l3.sctp_stack(cx).abort(id);
            }
            self.state = S1State::Idle;
        }
        if self.state == S1State::Idle && cx.now >= self.retry_at {
            self.connect(l3, cx);
        }
        while let Some(e) = l3.sctp_stack(cx).next_event() {
            match e {
                SctpEvent::Up { id, .. } | SctpEvent::Restarted { id }
                    if Some(id) == self.assoc =>
                {
                    self.s1_setup(l3, cx, id)
                }
                SctpEvent::Down { id, reason } if Some(id) == self.assoc => {
                    tracing::info!(?reason, "S1-MME association down");
                    self.assoc = None;
                    self.state = S1State::Idle;
                    self.retry_at = cx.now + RETRY;
                    self.ues.clear();
                    self.by_mac.clear();
                }
                _ => {}
            }
        }
        while let Some((assoc, m)) = l3.sctp_stack(cx).recv() {
            if Some(assoc) != self.assoc || m.ppid != s1ap::PPID {
                self.s1ap_dropped += 1;
                continue;
            }
            match S1apPdu::parse(&m.data) {
                Ok(pdu) => self.s1ap(l3, cx, assoc, pdu),
                Err(_) => self.s1ap_dropped += 1,
            }
        }
        l3.poll(cx, out);
    }

    fn connect(&mut self, l3: &mut L3, cx: &mut Ctx) {
        let Some(local) = l3
            .lookup(self.cfg.mme)
            .and_then(|(_, hop)| l3.port(hop.port))
            .map(|p| p.address.addr())
        else {
            // No route to the MME: try again later.
            self.retry_at = cx.now + RETRY_REFUSED;
            return;
        };
        let remote = SocketAddrV4::new(self.cfg.mme, s1ap::PORT);
        let id = l3.sctp_stack(cx).connect(
            cx,
            SocketAddrV4::new(local, s1ap::PORT),
            remote,
            DEFAULT_STREAMS,
        );
        self.assoc = Some(id);
        self.state = S1State::Connecting;
    }

    /// S1 Setup Request [TS 36.413 § 9.1.8.4].
    fn s1_setup(&mut self, l3: &mut L3, cx: &mut Ctx, assoc: AssocId) {
        let c = &self.cfg;
        let req = S1apPdu {
            kind: Kind::Initiating,
            procedure: proc::S1_SETUP,
            criticality: Criticality::Reject,
            ies: vec![
                ProtocolIe {
                    id: id::GLOBAL_ENB_ID,
                    criticality: Criticality::Reject,
                    value: ie::global_enb_id_value(c.plmn.0, c.enb_id),
                },
                ProtocolIe {
                    id: id::SUPPORTED_TAS,
                    criticality: Criticality::Reject,
                    value: ie::supported_tas_value(c.tac, c.plmn.0),
                },
                ProtocolIe {
                    id: id::PAGING_DRX,
                    criticality: Criticality::Ignore,
                    value: ie::paging_drx_value(2),
                },
            ],
        };
        let sent = l3
            .sctp_stack(cx)
            .send(cx, assoc, NON_UE_STREAM, s1ap::PPID, &req.to_vec());
        if let Err(e) = sent {
            tracing::warn!(%e, "S1 Setup Request not sent");
            return;
        }
        self.state = S1State::SetupSent;
    }

    fn s1ap(&mut self, l3: &mut L3, cx: &mut Ctx, _assoc: AssocId, pdu: S1apPdu) {
        match (pdu.kind, pdu.procedure) {
            (Kind::Successful, proc::S1_SETUP) => {
                match pdu.ie(id::SERVED_GUMMEIS).map(ie::served_gummei) {
                    Some(Ok((plmn, group, code))) => {
                        tracing::info!(group, code, "S1 Setup Response: S1 ready");
                        self.gummei = Some((Plmn(plmn), group, code));
                        self.state = S1State::Ready;
                        self.setups += 1;
                    }
                    _ => self.s1ap_dropped += 1,
                }
            }
            (Kind::Initiating, proc::DOWNLINK_NAS_TRANSPORT) => self.downlink_nas(&pdu),
            (Kind::Initiating, proc::INITIAL_CONTEXT_SETUP) => self.context_setup(&pdu),
            (Kind::Initiating, proc::UE_CONTEXT_RELEASE) => self.release(l3, cx, &pdu),
            (Kind::Unsuccessful, proc::S1_SETUP) => {
                let cause = pdu.ie(id::CAUSE).map(ie::cause);
                tracing::warn!(?cause, "S1 Setup Failure");
                self.state = S1State::Refused;
                // Try again with a new association later.
                self.retry_at = cx.now + RETRY_REFUSED;
            }
            _ => self.s1ap_dropped += 1,
        }
    }

    pub fn row(&self) -> S1Row {
        S1Row {
            mme: SocketAddrV4::new(self.cfg.mme, s1ap::PORT),
            state: self.state,
            assoc: self.assoc,
            gummei: self.gummei,
            setups: self.setups,
            s1ap_dropped: self.s1ap_dropped,
            ues: {
                let mut v: Vec<UeRow> = self
                    .ues
                    .iter()
                    .map(|(&enb_ue_id, u)| UeRow {
                        mac: u.mac,
                        enb_ue_id,
                        mme_ue_id: u.mme_ue_id,
                        stream: u.stream,
                    })
                    .collect();
                v.sort_by_key(|u| u.enb_ue_id);
                v
            },
            nas_dropped: self.nas_dropped,
            release_requests: self.release_requests,
        }
    }
}
