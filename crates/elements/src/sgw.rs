//! `sgw`: the serving gateway, where the S1-U tunnel meets the S5 tunnel.
//!
//! Read 3GPP TS 23.401 § 4.4.3.2 (the SGW relays user plane between S1-U and
//! S5) and TS 29.281 (GTP-U). Per bearer it switches TEIDs both ways: a
//! G-PDU that arrives on S1-U with the bearer's `sgw_s1u_teid` leaves on S5
//! with the PGW's `pgw_teid`, and one that arrives on S5 with `sgw_s5_teid`
//! leaves on S1-U with the eNB's `enb_teid`. The outer IPs and MACs are the
//! SGW's per segment; the inner packet is untouched (not even its TTL: the
//! SGW is no IP hop for the UE).
//!
//! With a third port `s11` it is a GTPv2-C endpoint there for the MME
//! and on its `s5` address for the PGW ([`crate::gtpc`]). Create Session
//! [TS 29.274 § 7.2.1; TS 23.401 § 5.3.2.1 steps 12–16]: the MME's
//! request on S11 makes the SGW's S11 and S5-C TEIDs and its S1-U and
//! S5-U TEIDs, goes on to the PGW named in it (S5-C), and the PGW's answer
//! (the UE's address, its S5-U TEID) makes the bearer
//! ([`Sgw::bearers_mut`]) and the answer to the MME. Modify Bearer
//! (§ 7.2.7) gives the bearer the eNodeB's S1-U TEID; Delete Session
//! (§ 7.2.9) ends it on both gateways.
//!
//! Ports, in order: `s1u`, `s5`, optionally `s11`.

use crate::bearer::{self, Bearer, BearerError, BearerRange, Bearers, Receiver};
use crate::gtpc::{self, CreateSession, GtpcEndpoint, GtpcRow, Incoming, RequestTo};
use crate::gtpc::{SessionRow, TeidPool};
use crate::role::{Addressing, ElementNode, Role, RoleInfo};
use crate::router::{Router, RouterConfig};
use crate::tunnel::{self, Endpoint, GPdu, TunnelReport};
use d11_core::settings::ConfigError;
use d11_core::AnyElement;
use d11_core::{Ctx, DropReason, Element, Input, Instant, Outbox, PortId};
use d11_wire::gtpu::Teid;
use d11_wire::gtpv2c::ie::Fteid;
use d11_wire::gtpv2c::{self as v2, find, ie_type, iface, msg, GtpcPacket, MessageBuilder};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};

pub const S1U: PortId = PortId(0);
pub const S5: PortId = PortId(1);

/// What an SGW is built from.
#[derive(Debug, Clone)]
pub struct SgwConfig {
    /// Ports `s1u` and `s5`, in that order, with their addresses.
    pub router: RouterConfig,
    /// The eNodeB's S1-U address.
    pub enb: Ipv4Addr,
    /// The PGW's S5 address.
    pub pgw: Ipv4Addr,
    pub bearers: Vec<Bearer>,
}

/// `config` of an `sgw` node.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SgwSettings {
    /// The eNB's S1-U address.
    enb: Ipv4Addr,
    /// The PGW's S5 address.
    pgw: Ipv4Addr,
    /// Static bearers (a user plane without an MME: netns/bench-mobile.toml);
    /// with an MME, the attach makes them.
    #[serde(default)]
    bearers: Vec<Bearer>,
    /// Many static bearers in one line each.
    #[serde(default)]
    bearer_ranges: Vec<BearerRange>,
}

/// What an SGW reports: its IP layer, bearers, GTP-U paths and the
/// G-PDUs it relayed each way.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SgwReport {
    #[serde(flatten)]
    pub l3: d11_core::l3::L3Report,
    #[serde(flatten)]
    pub tunnel: TunnelReport,
    pub relayed: Relayed,
    /// Its GTPv2-C endpoint on S11, when it has that port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s11: Option<GtpcRow>,
    /// Its GTPv2-C endpoint on S5-C, once it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s5c: Option<GtpcRow>,
    /// The sessions the MME created (the first [`Bearers::REPORTED`]).
    #[serde(default)]
    pub sessions: Vec<SessionRow>,
    #[serde(default)]
    pub sessions_total: usize,
}

/// Where the SGW's own TEIDs start: far above the topology's static ones.
const TEID_BASE: u32 = 0x0200_0000;

/// A session, keyed by the SGW's S11 TEID.
#[derive(Debug, Clone)]
struct SgwSession {
    imsi: String,
    apn: String,
    ebi: u8,
    /// The MME's S11 F-TEID.
    mme: Fteid,
    /// The SGW's S5-C TEID, and the PGW's S5-C F-TEID (its address from
    /// the MME's request, its TEID from the PGW's answer).
    s5c: u32,
    pgw: Fteid,
    s1u: u32,
    s5u: u32,
    ue_ip: Option<Ipv4Addr>,
    /// The MME's request waiting on the PGW: its source and sequence.
    waiting: Option<(SocketAddrV4, u32, u8)>,
}

/// G-PDUs switched from S1-U to S5 (uplink) and back (downlink).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Relayed {
    pub uplink: u64,
    pub downlink: u64,
}

/// The serving gateway.
#[derive(Debug)]
pub struct Sgw {
    router: Router,
    gtpu: Endpoint,
    bearers: Bearers,
    enb: Ipv4Addr,
    pgw: Ipv4Addr,
    /// The address of each port.
    addrs: [Ipv4Addr; 2],
    relayed: [u64; 2],
    /// The S11 address, when the SGW has the port; its endpoint once bound.
    s11_addr: Option<Ipv4Addr>,
    s11: Option<GtpcEndpoint>,
    s5c: Option<GtpcEndpoint>,
    sessions: HashMap<u32, SgwSession>,
    /// The session of each S5-C request outstanding, by its sequence.
    s5_pending: HashMap<u32, u32>,
    /// S11 TEID by S5-C TEID.
    by_s5c: HashMap<u32, u32>,
    /// S11 TEID by IMSI: a UE has one session here (a new Create Session
    /// replaces it), found without a scan of all of them.
    by_imsi: HashMap<String, u32>,
    teids: TeidPool,
}

impl Sgw {
    pub fn new(cfg: SgwConfig) -> Result<Sgw, BearerError> {
        let mut bearers = Bearers::new(Receiver::Sgw);
        for b in cfg.bearers {
            bearers.add(b)?;
        }
        let p = |i: usize| cfg.router.ports[i].address.addr();
        let addrs = [p(0), p(1)];
        let s11_addr = cfg.router.ports.get(2).map(|q| q.address.addr());
        let mut router = Router::new(cfg.router);
        Ok(Sgw {
            addrs,
            gtpu: Endpoint::new(&mut router),
            router,
            bearers,
            enb: cfg.enb,
            pgw: cfg.pgw,
            relayed: [0; 2],
            s11_addr,
            s11: None,
            s5c: None,
            sessions: HashMap::new(),
            s5_pending: HashMap::new(),
            by_s5c: HashMap::new(),
            by_imsi: HashMap::new(),
            teids: TeidPool::new(TEID_BASE),
        })
    }

    /// Removes the session of S11 TEID `teid` and its indexes.
    fn drop_session(&mut self, teid: u32) -> Option<SgwSession> {
        let s = self.sessions.remove(&teid)?;
        self.by_s5c.remove(&s.s5c);
        if self.by_imsi.get(&s.imsi) == Some(&teid) {
            self.by_imsi.remove(&s.imsi);
        }
        Some(s)
    }

    /// S11 and S5-C: the endpoints bound on first use, what they got
    /// handled. S5-C comes first, so an answer to the MME goes out in the
    /// same turn as the PGW's.
    fn serve_s11(&mut self, cx: &mut Ctx, out: &mut Outbox) {
        let Some(addr) = self.s11_addr else {
            return;
        };
        if self.s11.is_none() {
            self.s11 = GtpcEndpoint::bind(self.router.l3_mut(), cx, addr);
        }
        if self.s5c.is_none() {
            let me = self.addrs[S5.index()];
            self.s5c = GtpcEndpoint::bind(self.router.l3_mut(), cx, me);
        }
        let (Some(mut s11), Some(mut s5c)) = (self.s11.take(), self.s5c.take()) else {
            return;
        };
        s5c.poll(self.router.l3_mut(), cx, out);
        s11.poll(self.router.l3_mut(), cx, out);
        loop {
            if let Some(i) = s5c.incoming() {
                self.on_s5c(cx, out, &mut s11, i);
            } else if let Some(i) = s11.incoming() {
                self.on_s11(cx, out, &mut s11, &mut s5c, i);
            } else {
                break;
            }
        }
        self.s11 = Some(s11);
        self.s5c = Some(s5c);
    }

    /// What the MME sends on S11.
    fn on_s11(
        &mut self,
        cx: &mut Ctx,
        out: &mut Outbox,
        s11: &mut GtpcEndpoint,
        s5c: &mut GtpcEndpoint,
        i: Incoming,
    ) {
        let Incoming::Request { from, seq, msg: m } = i else {
            if let Incoming::PeerRestarted { peer } = i {
                tracing::warn!(%peer, "MME restarted (Recovery changed)");
            }
            return;
        };
        let Ok(p) = GtpcPacket::new_checked(&m[..]) else {
            return;
        };
        let (ty, ies, teid) = (p.msg_type(), p.ie_bytes(), p.teid().unwrap_or(0));
        let l3 = self.router.l3_mut();
        match ty {
            msg::CREATE_SESSION_REQUEST => match CreateSession::parse(ies) {
                Ok(cs) if cs.pgw.is_some() => self.create_session(cx, out, s5c, from, seq, cs),
                Ok(cs) => {
                    let c = v2::cause::MANDATORY_IE_MISSING;
                    let r = gtpc::cause_only(msg::CREATE_SESSION_RESPONSE, cs.sender.teid, seq, c);
                    s11.respond(l3, cx, out, from, r);
                }
                Err(c) => {
                    tracing::info!(cause = c, "Create Session Request refused");
                    let to = gtpc::sender_teid(ies);
                    let r = gtpc::cause_only(msg::CREATE_SESSION_RESPONSE, to, seq, c);
                    s11.respond(l3, cx, out, from, r);
                }
            },
            msg::MODIFY_BEARER_REQUEST => {
                let r = self.modify_bearer(teid, ies, seq);
                s11.respond(self.router.l3_mut(), cx, out, from, r);
            }
            msg::DELETE_SESSION_REQUEST => {
                let gone = self.drop_session(teid);
                let l3 = self.router.l3_mut();
                let Some(s) = gone else {
                    let c = v2::cause::CONTEXT_NOT_FOUND;
                    let r = gtpc::cause_only(msg::DELETE_SESSION_RESPONSE, 0, seq, c);
                    return s11.respond(l3, cx, out, from, r);
                };
                tracing::info!(imsi = %s.imsi, "Delete Session");
                self.bearers.remove(&s.imsi);
                let c = v2::cause::REQUEST_ACCEPTED;
                let r = gtpc::cause_only(msg::DELETE_SESSION_RESPONSE, s.mme.teid, seq, c);
                s11.respond(l3, cx, out, from, r);
                // The PGW's part goes too; its answer changes nothing here.
                let to = RequestTo {
                    peer: s.pgw.addr,
                    msg_type: msg::DELETE_SESSION_REQUEST,
                    teid: Some(s.pgw.teid),
                };
                s5c.request(l3, cx, out, to, |b| {
                    b.ie(ie_type::EBI, 0, &[s.ebi]);
                });
            }
            ty => {
                let c = v2::cause::CONTEXT_NOT_FOUND;
                let r = gtpc::cause_only(ty.wrapping_add(1), 0, seq, c);
                s11.respond(l3, cx, out, from, r);
            }
        }
    }

    /// Create Session from the MME [TS 29.274 § 7.2.1]: the SGW's TEIDs,
    /// then its own request to the PGW on S5-C (Table 7.2.1-1 as sent on
    /// S5: its S5-C F-TEID as the sender's, its S5-U F-TEID in the bearer
    /// context, instance 2).
    fn create_session(
        &mut self,
        cx: &mut Ctx,
        out: &mut Outbox,
        s5c: &mut GtpcEndpoint,
        from: SocketAddrV4,
        seq: u32,
        cs: CreateSession,
    ) {
        // A UE with a session already: the old one goes [§ 7.2.1].
        if let Some(&t) = self.by_imsi.get(&cs.imsi) {
            self.drop_session(t);
        }
        let sessions = &self.sessions;
        let by_s5c = &self.by_s5c;
        let s11_teid = self.teids.take(|t| sessions.contains_key(&t));
        let s5c_teid = self.teids.take(|t| by_s5c.contains_key(&t));
        // Its bearer's TEIDs stay when it has one (a subscriber the
        // topology provisions keeps the TEIDs written there).
        let bearers = &self.bearers;
        let (s1u, s5u) = match bearers.by_imsi(&cs.imsi) {
            Some(b) => (b.sgw_s1u_teid.0, b.sgw_s5_teid.0),
            None => {
                let s1u = self.teids.take(|t| bearers.by_teid(Teid(t)).is_some());
                let in_use = |t| bearers.by_teid(Teid(t)).is_some() || t == s1u;
                (s1u, self.teids.take(in_use))
            }
        };
        let Some(pgw) = cs.pgw else {
            return;
        };
        let me = self.addrs[S5.index()];
        let to = RequestTo {
            peer: pgw.addr,
            msg_type: msg::CREATE_SESSION_REQUEST,
            teid: Some(0),
        };
        let imsi = v2::ie::tbcd_value(&cs.imsi).unwrap_or_default();
        let sent = s5c.request(self.router.l3_mut(), cx, out, to, |m| {
            m.ie(ie_type::IMSI, 0, &imsi)
                .ie(ie_type::RAT_TYPE, 0, &[v2::RAT_EUTRAN])
                .fteid(0, v2::fteid(iface::S5_SGW_GTPC, s5c_teid, me))
                .ie(ie_type::APN, 0, &v2::ie::apn_value(&cs.apn))
                .ie(ie_type::SELECTION_MODE, 0, &[0])
                .ie(ie_type::PDN_TYPE, 0, &[v2::PDN_IPV4])
                .ie(
                    ie_type::PAA,
                    0,
                    &v2::ie::paa_ipv4_value(Ipv4Addr::UNSPECIFIED),
                )
                .ie(ie_type::APN_RESTRICTION, 0, &[0])
                .ie(ie_type::AMBR, 0, &v2::ie::ambr_value(cs.ambr.0, cs.ambr.1));
            // The phone's PCO goes to the PGW as it came [TS 29.274 § 8.13].
            if let Some(p) = &cs.pco {
                m.ie(ie_type::PCO, 0, p);
            }
            m.grouped(ie_type::BEARER_CONTEXT, 0, |b| {
                b.ie(ie_type::EBI, 0, &[cs.ebi])
                    .ie(ie_type::BEARER_QOS, 0, &cs.qos)
                    .fteid(2, v2::fteid(iface::S5_SGW_GTPU, s5u, me));
            });
        });
        self.s5_pending.insert(sent, s11_teid);
        self.by_s5c.insert(s5c_teid, s11_teid);
        self.by_imsi.insert(cs.imsi.clone(), s11_teid);
        self.sessions.insert(
            s11_teid,
            SgwSession {
                imsi: cs.imsi,
                apn: cs.apn,
                ebi: cs.ebi,
                mme: cs.sender,
                s5c: s5c_teid,
                pgw,
                s1u,
                s5u,
                ue_ip: None,
                waiting: Some((from, seq, cs.ebi)),
            },
        );
    }

    /// What the PGW sends on S5-C: the answer to a Create Session.
    fn on_s5c(&mut self, cx: &mut Ctx, out: &mut Outbox, s11: &mut GtpcEndpoint, i: Incoming) {
        let (seq, answer) = match i {
            Incoming::Response { seq, msg } => (seq, Some(msg)),
            Incoming::Timeout { seq, .. } => (seq, None),
            Incoming::Request { .. } | Incoming::PeerRestarted { .. } => return,
        };
        let Some(s11_teid) = self.s5_pending.remove(&seq) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&s11_teid) else {
            return;
        };
        let Some((mme_from, mme_seq, ebi)) = s.waiting.take() else {
            return;
        };
        let accepted = answer.as_deref().and_then(|m| {
            let p = GtpcPacket::new_checked(m).ok()?;
            let ies = p.ie_bytes();
            if gtpc::response_cause(ies) != v2::cause::REQUEST_ACCEPTED {
                return Some(Err(gtpc::response_cause(ies)));
            }
            let fteid = |b, inst| {
                let i = find(b, ie_type::FTEID, inst).ok()??;
                Fteid::parse(i.value).ok()
            };
            let pgw_c = fteid(ies, 0)?;
            let paa = find(ies, ie_type::PAA, 0).ok()??;
            let ue_ip = v2::ie::paa_ipv4(paa.value).ok()?;
            let bc = find(ies, ie_type::BEARER_CONTEXT, 0).ok()??;
            let pgw_u = fteid(bc.value, 2)?;
            let pco = gtpc::pco(ies).map(<[u8]>::to_vec);
            Some(Ok((pgw_c, ue_ip, pgw_u, pco)))
        });
        let mme_teid = s.mme.teid;
        let (pgw_c, ue_ip, pgw_u, pco) = match accepted {
            Some(Ok(v)) => v,
            refused => {
                let c = match refused {
                    Some(Err(c)) => c,
                    None if answer.is_none() => v2::cause::REMOTE_PEER_NOT_RESPONDING,
                    _ => v2::cause::SYSTEM_FAILURE,
                };
                tracing::info!(cause = c, "Create Session refused by the PGW");
                self.drop_session(s11_teid);
                let r = gtpc::cause_only(msg::CREATE_SESSION_RESPONSE, mme_teid, mme_seq, c);
                return s11.respond(self.router.l3_mut(), cx, out, mme_from, r);
            }
        };
        s.pgw = pgw_c;
        s.ue_ip = Some(ue_ip);
        // The eNodeB's TEID is the old bearer's until Modify Bearer.
        let enb_teid = self
            .bearers
            .by_imsi(&s.imsi)
            .map_or(Teid(0), |b| b.enb_teid);
        let b = Bearer {
            imsi: s.imsi.clone(),
            ue_ip,
            enb_teid,
            sgw_s1u_teid: Teid(s.s1u),
            sgw_s5_teid: Teid(s.s5u),
            pgw_teid: Teid(pgw_u.teid),
        };
        let (s1u, imsi) = (s.s1u, s.imsi.clone());
        let r = match self.bearers.put(b) {
            Ok(()) => {
                tracing::info!(%imsi, ue = %ue_ip, "session created");
                let me11 = self.s11_addr.unwrap_or(Ipv4Addr::UNSPECIFIED);
                let me1 = self.addrs[S1U.index()];
                let mut m =
                    MessageBuilder::new(msg::CREATE_SESSION_RESPONSE, Some(mme_teid), mme_seq);
                m.cause(v2::cause::REQUEST_ACCEPTED)
                    .fteid(0, v2::fteid(iface::S11_SGW, s11_teid, me11))
                    .fteid(1, pgw_c)
                    .ie(ie_type::PAA, 0, &v2::ie::paa_ipv4_value(ue_ip))
                    .ie(ie_type::APN_RESTRICTION, 0, &[0]);
                // The PGW's PCO (the phone's DNS server) back to the MME.
                if let Some(p) = &pco {
                    m.ie(ie_type::PCO, 0, p);
                }
                m.grouped(ie_type::BEARER_CONTEXT, 0, |b| {
                    b.ie(ie_type::EBI, 0, &[ebi])
                        .cause(v2::cause::REQUEST_ACCEPTED)
                        .fteid(0, v2::fteid(iface::S1U_SGW, s1u, me1))
                        .fteid(2, pgw_u);
                });
                m.finish()
            }
            Err(e) => {
                tracing::warn!(%e, "Create Session: no bearer");
                let c = v2::cause::NO_RESOURCES_AVAILABLE;
                gtpc::cause_only(msg::CREATE_SESSION_RESPONSE, mme_teid, mme_seq, c)
            }
        };
        s11.respond(self.router.l3_mut(), cx, out, mme_from, r);
    }

    /// Modify Bearer [TS 29.274 § 7.2.7]: the eNodeB's S1-U F-TEID
    /// (instance 0 of the bearer context) for the session's bearer.
    fn modify_bearer(&mut self, teid: u32, ies: &[u8], seq: u32) -> Vec<u8> {
        let ty = msg::MODIFY_BEARER_RESPONSE;
        let Some(s) = self.sessions.get(&teid) else {
            return gtpc::cause_only(ty, 0, seq, v2::cause::CONTEXT_NOT_FOUND);
        };
        let mme = s.mme.teid;
        let enb = (|| {
            let bc = find(ies, ie_type::BEARER_CONTEXT, 0).ok()??;
            let ebi = v2::ie::ebi(find(bc.value, ie_type::EBI, 0).ok()??.value).ok()?;
            let f = Fteid::parse(find(bc.value, ie_type::FTEID, 0).ok()??.value).ok()?;
            Some((ebi, f))
        })();
        let Some((ebi, enb)) = enb.filter(|(e, _)| *e == s.ebi) else {
            return gtpc::cause_only(ty, mme, seq, v2::cause::MANDATORY_IE_INCORRECT);
        };
        let Some(mut b) = self.bearers.by_imsi(&s.imsi).cloned() else {
            return gtpc::cause_only(ty, mme, seq, v2::cause::CONTEXT_NOT_FOUND);
        };
        b.enb_teid = Teid(enb.teid);
        tracing::info!(imsi = %b.imsi, enb_teid = enb.teid, "Modify Bearer: S1-U to the eNodeB");
        if self.bearers.put(b).is_err() {
            return gtpc::cause_only(ty, mme, seq, v2::cause::SYSTEM_FAILURE);
        }
        let mut m = MessageBuilder::new(ty, Some(mme), seq);
        m.cause(v2::cause::REQUEST_ACCEPTED)
            .grouped(ie_type::BEARER_CONTEXT, 0, |b| {
                b.ie(ie_type::EBI, 0, &[ebi])
                    .cause(v2::cause::REQUEST_ACCEPTED);
            });
        m.finish()
    }

    fn session_rows(&self) -> Vec<SessionRow> {
        let mut v: Vec<SessionRow> = self
            .sessions
            .iter()
            .map(|(&teid, s)| SessionRow {
                imsi: s.imsi.clone(),
                apn: s.apn.clone(),
                ue_ip: s.ue_ip,
                ebi: s.ebi,
                teid,
                peer: SocketAddrV4::new(s.mme.addr, v2::PORT),
                peer_teid: s.mme.teid,
                state: if s.waiting.is_some() {
                    "pending"
                } else {
                    "active"
                }
                .into(),
            })
            .collect();
        v.sort_by(|a, b| a.imsi.cmp(&b.imsi));
        v.truncate(Bearers::REPORTED);
        v
    }

    /// The bearer table, for a control plane to drive.
    pub fn bearers_mut(&mut self) -> &mut Bearers {
        &mut self.bearers
    }

    fn relay(&mut self, cx: &mut Ctx, port: PortId, g: GPdu<'_>, out: &mut Outbox) {
        let GPdu { peer, teid, tpdu } = g;
        // The TEID must be this bearer's receiving TEID on the port it came in on.
        let next = self.bearers.by_teid(teid).and_then(|b| match port {
            S1U if b.sgw_s1u_teid == teid => Some((S5, self.pgw, b.pgw_teid)),
            S5 if b.sgw_s5_teid == teid => Some((S1U, self.enb, b.enb_teid)),
            _ => None,
        });
        let Some((egress, to, out_teid)) = next else {
            let me = self.addrs[port.index()];
            return self
                .gtpu
                .unknown_teid(&mut self.router, cx, port, me, peer, teid, out);
        };
        if out_teid.0 == 0 {
            // Before Modify Bearer the eNodeB's TEID is unknown: no
            // downlink yet [TS 23.401 § 5.3.2.1 step 23].
            return out.drop_frame(port, DropReason::NoBearer);
        }
        if let Err(r) = tunnel::tpdu_ipv4(tpdu) {
            return out.drop_frame(port, r);
        }
        self.relayed[port.index()] += 1;
        let me = self.addrs[egress.index()];
        self.gtpu
            .send_g_pdu(&mut self.router, cx, port, me, to, out_teid, tpdu, out);
    }
}

impl Role for Sgw {
    const INFO: RoleInfo = RoleInfo {
        name: "sgw",
        summary: "serving gateway: switches S1-U and S5 tunnels per bearer; ports s1u, s5",
        addressing: Addressing::All,
        bridges: false,
        isolates_tenants: false,
        routes: false,
    };
    type Settings = SgwSettings;
    fn build(node: &ElementNode, c: SgwSettings) -> Result<Box<dyn AnyElement>, ConfigError> {
        let mut e = Sgw::new(SgwConfig {
            router: RouterConfig::for_ports(
                node,
                match node.ports.len() {
                    3 => &["s1u", "s5", "s11"],
                    _ => &["s1u", "s5"],
                },
            )?,
            enb: c.enb,
            pgw: c.pgw,
            bearers: c.bearers,
        })
        .map_err(bearer::bearer_error)?;
        bearer::add_ranges(e.bearers_mut(), &c.bearer_ranges)?;
        Ok(Box::new(e))
    }
}

impl Element for Sgw {
    fn on_frame(&mut self, cx: &mut Ctx, port: PortId, frame: &[u8], out: &mut Outbox) {
        match self.router.l3_mut().input(cx, port, frame, out) {
            Input::Tunnel { port, ip, udp } => {
                let r = &mut self.router;
                if let Some(g) = self.gtpu.receive(r, cx, port, &ip, &udp, out) {
                    self.relay(cx, port, g, out);
                }
            }
            other => {
                self.router.handle(cx, port, frame, other, out);
                self.serve_s11(cx, out);
            }
        }
    }

    fn on_timer(&mut self, cx: &mut Ctx, out: &mut Outbox) {
        self.router.on_timer(cx, out);
        self.serve_s11(cx, out);
    }

    fn poll_at(&self) -> Option<Instant> {
        let s11 = match (&self.s11, self.s11_addr) {
            (Some(e), _) => e.poll_at(),
            (None, Some(_)) => Some(Instant::ZERO),
            (None, None) => None,
        };
        [self.router.poll_at(), s11].into_iter().flatten().min()
    }

    fn report(&self) -> serde_json::Value {
        d11_core::report_json(&SgwReport {
            l3: self.router.l3().report(),
            tunnel: TunnelReport::new(&self.bearers, &self.gtpu),
            relayed: Relayed {
                uplink: self.relayed[0],
                downlink: self.relayed[1],
            },
            s11: self.s11.as_ref().map(GtpcEndpoint::row),
            s5c: self.s5c.as_ref().map(GtpcEndpoint::row),
            sessions: self.session_rows(),
            sessions_total: self.sessions.len(),
        })
    }

    /// `table bearers`: every bearer (the report lists the first 256).
    fn table(&self, name: &str) -> Option<serde_json::Value> {
        (name == "bearers").then(|| self.bearers.table())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use d11_core::{DropReason, L3Port};
    use d11_wire::arp::ArpRepr;
    use d11_wire::ethernet::{self, EtherType};
    use d11_wire::gtpu::Teid;
    use d11_wire::gtpu::{GtpuPacket, MessageType};
    use d11_wire::hex;
    use d11_wire::ipv4::{protocol, Ipv4Packet, Ipv4Repr};
    use d11_wire::MacAddr;

    const ENB_MAC: MacAddr = MacAddr([2, 0, 0, 0, 2, 2]);
    const PGW_MAC: MacAddr = MacAddr([2, 0, 0, 0, 4, 1]);
    const S1U_MAC: MacAddr = MacAddr([2, 0, 0, 0, 3, 1]);
    const S5_MAC: MacAddr = MacAddr([2, 0, 0, 0, 3, 2]);
    const ENB: Ipv4Addr = Ipv4Addr::new(172, 16, 1, 1);
    const PGW: Ipv4Addr = Ipv4Addr::new(172, 16, 2, 2);

    // scapy (/usr/bin/python3, scapy.contrib.gtp), the inner packet being
    // IP(src="10.45.0.2", dst="192.0.2.100", id=1)/ICMP(id=7, seq=1):
    // G_PDU:        GTP_U_Header(teid=0x200, gtp_type=255)/inner
    // ECHO_REQUEST: GTP_U_Header(teid=0, gtp_type=1, S=1, seq=0x1234)
    // ECHO_RESPONSE: GTP_U_Header(teid=0, gtp_type=2, S=1, seq=0x1234)/IE_Recovery(restart_counter=0)
    // TRUNC_EXT:    GTP_U_Header(teid=0x200, gtp_type=255, E=1, next_ex=0x85)
    //                 /GTPPDUSessionContainer(type=0, QFI=9), then its length octet set to 2
    const G_PDU: &str = "30ff001c000002004500001c000100004001ae4d0a2d0002c00002640800f7f700070001";
    const ECHO_REQUEST: &str = "320100040000000012340000";
    const ECHO_RESPONSE: &str = "3202000600000000123400000e00";
    const TRUNC_EXT: &str = "34ff0008000002000000008502000900";

    fn sgw() -> Sgw {
        let mut s = Sgw::new(SgwConfig {
            router: RouterConfig {
                ports: vec![
                    L3Port {
                        name: "s1u".into(),
                        mac: S1U_MAC,
                        address: "172.16.1.2/24".parse().unwrap(),
                        mtu: 1500,
                    },
                    L3Port {
                        name: "s5".into(),
                        mac: S5_MAC,
                        address: "172.16.2.1/24".parse().unwrap(),
                        mtu: 1500,
                    },
                ],
                routes: vec![],
            },
            enb: ENB,
            pgw: PGW,
            bearers: vec![crate::bearer::tests::phone()],
        })
        .unwrap();
        // The peers ask for our MACs first, so we know theirs (RFC 826 merge).
        let mut o = Outbox::new();
        let mut b = Vec::new();
        ArpRepr::request(ENB_MAC, ENB, "172.16.1.2".parse().unwrap()).emit_frame(&mut b);
        s.on_frame(&mut (Instant::ZERO).into(), S1U, &b, &mut o);
        b.clear();
        ArpRepr::request(PGW_MAC, PGW, "172.16.2.1".parse().unwrap()).emit_frame(&mut b);
        s.on_frame(&mut (Instant::ZERO).into(), S5, &b, &mut o);
        s
    }

    /// Ethernet + IPv4 + UDP 2152 → 2152 around `gtpu`, sent to `mac`/`dst` from `src`.
    fn udp_frame(mac: MacAddr, src: Ipv4Addr, dst: Ipv4Addr, gtpu: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        ethernet::emit_header(&mut f, mac, MacAddr([2, 0, 0, 0, 9, 9]), EtherType::Ipv4);
        Ipv4Repr {
            src,
            dst,
            protocol: protocol::UDP,
            ttl: 64,
            ident: 1,
            dont_frag: false,
            payload_len: 8 + gtpu.len(),
        }
        .emit(&mut f);
        f.extend_from_slice(&[0x08, 0x68, 0x08, 0x68]);
        f.extend_from_slice(&((8 + gtpu.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(gtpu);
        f
    }

    fn from_enb(gtpu: &[u8]) -> Vec<u8> {
        udp_frame(S1U_MAC, ENB, "172.16.1.2".parse().unwrap(), gtpu)
    }

    /// The one frame sent, as (port, outer dst MAC, outer src IP, outer dst IP, GTP-U bytes).
    fn sent(o: &Outbox) -> (PortId, MacAddr, Ipv4Addr, Ipv4Addr, Vec<u8>) {
        let frames: Vec<_> = o.frames().collect();
        assert_eq!(frames.len(), 1, "{:?}", o.drops());
        let (p, f) = frames[0];
        let ip = Ipv4Packet::new_checked(&f[ethernet::HEADER_LEN..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(&ip.payload()[..4], &[0x08, 0x68, 0x08, 0x68]);
        let dst_mac = MacAddr::from_slice(&f[..6]).unwrap();
        (p, dst_mac, ip.src(), ip.dst(), ip.payload()[8..].to_vec())
    }

    #[test]
    fn g_pdu_from_enb_is_retunneled_with_pgw_teid() {
        let mut s = sgw();
        let mut o = Outbox::new();
        let g = hex(G_PDU);
        s.on_frame(&mut (Instant::ZERO).into(), S1U, &from_enb(&g), &mut o);
        let (port, mac, src, dst, gtpu) = sent(&o);
        assert_eq!(
            (port, mac, src, dst),
            (S5, PGW_MAC, "172.16.2.1".parse().unwrap(), PGW)
        );
        let p = GtpuPacket::new_checked(&gtpu[..]).unwrap();
        assert_eq!(
            (p.message_type(), p.teid()),
            (MessageType::GPdu, Teid(0x400))
        );
        assert_eq!(p.payload(), &g[8..], "the inner packet is untouched");
    }

    #[test]
    fn g_pdu_from_pgw_goes_to_the_enb_with_its_teid() {
        let mut s = sgw();
        let mut o = Outbox::new();
        let mut g = hex(G_PDU);
        g[4..8].copy_from_slice(&0x300u32.to_be_bytes());
        s.on_frame(
            &mut (Instant::ZERO).into(),
            S5,
            &udp_frame(S5_MAC, PGW, "172.16.2.1".parse().unwrap(), &g),
            &mut o,
        );
        let (port, mac, _, dst, gtpu) = sent(&o);
        assert_eq!((port, mac, dst), (S1U, ENB_MAC, ENB));
        assert_eq!(
            GtpuPacket::new_checked(&gtpu[..]).unwrap().teid(),
            Teid(0x100)
        );
    }

    #[test]
    fn echo_request_is_answered_as_scapy_builds_the_response() {
        let mut s = sgw();
        let mut o = Outbox::new();
        s.on_frame(
            &mut (Instant::ZERO).into(),
            S1U,
            &from_enb(&hex(ECHO_REQUEST)),
            &mut o,
        );
        let (port, _, _, dst, gtpu) = sent(&o);
        assert_eq!((port, dst, gtpu), (S1U, ENB, hex(ECHO_RESPONSE)));
    }

    #[test]
    fn unknown_teid_gets_an_error_indication_naming_it() {
        let mut s = sgw();
        let mut o = Outbox::new();
        let mut g = hex(G_PDU);
        g[4..8].copy_from_slice(&0xdeadu32.to_be_bytes());
        s.on_frame(&mut (Instant::ZERO).into(), S1U, &from_enb(&g), &mut o);
        let (port, _, _, dst, gtpu) = sent(&o);
        assert_eq!((port, dst), (S1U, ENB));
        let p = GtpuPacket::new_checked(&gtpu[..]).unwrap();
        assert_eq!(p.message_type(), MessageType::ErrorIndication);
        assert_eq!(
            d11_wire::gtpu::ie::error_indication_teid(p.payload()),
            Some(Teid(0xdead))
        );
        assert_eq!(o.drops(), &[(S1U, DropReason::GtpuUnknownTeid)]);
        // The S5 TEID is not valid on S1-U either.
        let mut o = Outbox::new();
        g[4..8].copy_from_slice(&0x300u32.to_be_bytes());
        s.on_frame(&mut (Instant::ZERO).into(), S1U, &from_enb(&g), &mut o);
        assert_eq!(o.drops(), &[(S1U, DropReason::GtpuUnknownTeid)]);
    }

    #[test]
    fn bad_gtpu_is_a_counted_drop_and_nothing_is_sent() {
        let g = hex(G_PDU);
        let mut long = g.clone();
        long[3] += 1; // the GTP-U length claims one octet more than the datagram holds
        let mut unknown_type = g.clone();
        unknown_type[1] = 100;
        let mut not_ipv4 = g.clone();
        not_ipv4[8] = 0x60; // an IPv6 version nibble
        for (bytes, reason) in [
            (long, DropReason::GtpuMalformed),
            (hex(TRUNC_EXT), DropReason::GtpuMalformed),
            (unknown_type, DropReason::GtpuUnsupported),
            (not_ipv4, DropReason::TpduNotIpv4),
        ] {
            let mut s = sgw();
            let mut o = Outbox::new();
            s.on_frame(&mut (Instant::ZERO).into(), S1U, &from_enb(&bytes), &mut o);
            assert_eq!(o.frames().count(), 0, "{reason:?}");
            assert_eq!(o.drops(), &[(S1U, reason)]);
        }
    }

    // crates/wire/src/gtpv2c.rs's golden Modify Bearer Request (pycrate
    // 0.8.1 and tshark, crates/wire/fixtures/gtpv2c.py): TEID 0x101, EBI 5,
    // the eNodeB's S1-U F-TEID.
    const MODIFY_BEARER_REQUEST: &str =
        "4822001e00000101000002005d0012004900010005570009008000000501ac100101";

    #[test]
    fn modify_bearer_for_a_session_it_does_not_have_is_context_not_found() {
        let mut s = Sgw::new(SgwConfig {
            router: RouterConfig {
                ports: vec![
                    L3Port {
                        name: "s1u".into(),
                        mac: S1U_MAC,
                        address: "172.16.1.2/24".parse().unwrap(),
                        mtu: 1500,
                    },
                    L3Port {
                        name: "s5".into(),
                        mac: S5_MAC,
                        address: "172.16.2.1/24".parse().unwrap(),
                        mtu: 1500,
                    },
                    L3Port {
                        name: "s11".into(),
                        mac: MacAddr([2, 0, 0, 0, 3, 3]),
                        address: "172.16.4.2/24".parse().unwrap(),
                        mtu: 1500,
                    },
                ],
                routes: vec![],
            },
            enb: ENB,
            pgw: PGW,
            bearers: vec![],
        })
        .unwrap();
        let mut cx = Ctx::from(Instant::ZERO);
        let mut o = Outbox::new();
        s.on_timer(&mut cx, &mut o);
        let mme = Ipv4Addr::new(172, 16, 4, 1);
        let mme_mac = MacAddr([2, 0, 0, 0, 5, 5]);
        let mut b = Vec::new();
        ArpRepr::request(mme_mac, mme, "172.16.4.2".parse().unwrap()).emit_frame(&mut b);
        s.on_frame(&mut cx, PortId(2), &b, &mut o);
        let msg = hex(MODIFY_BEARER_REQUEST);
        let mut f = udp_frame(
            MacAddr([2, 0, 0, 0, 3, 3]),
            mme,
            "172.16.4.2".parse().unwrap(),
            &msg,
        );
        f[34..38].copy_from_slice(&[0x08, 0x4b, 0x08, 0x4b]); // UDP 2123 → 2123
        let mut o = Outbox::new();
        s.on_frame(&mut cx, PortId(2), &f, &mut o);
        let answers: Vec<Vec<u8>> = o
            .frames()
            .filter(|(_, f)| f.len() > 42 && f[36..38] == [0x08, 0x4b])
            .map(|(_, f)| f[42..].to_vec())
            .collect();
        assert_eq!(answers.len(), 1, "{:?}", o.drops());
        let p = GtpcPacket::new_checked(&answers[0][..]).unwrap();
        assert_eq!(p.msg_type(), msg::MODIFY_BEARER_RESPONSE);
        assert_eq!(
            gtpc::response_cause(p.ie_bytes()),
            v2::cause::CONTEXT_NOT_FOUND
        );
        assert_eq!(p.seq(), 2, "the request's sequence number");
    }

    proptest::proptest! {
        #[test]
        fn mutated_g_pdus_never_panic(i in 42usize..78, v in proptest::prelude::any::<u8>()) {
            let mut f = from_enb(&hex(G_PDU));
            f[i] = v;
            let mut s = sgw();
            s.on_frame(&mut (Instant::ZERO).into(), S1U, &f, &mut Outbox::new());
        }
    }
}
