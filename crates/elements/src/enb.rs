//! `enb`: the eNodeB, the phone's radio and the start of its first tunnel.
//!
//! Read 3GPP TS 36.300 § 4 (E-UTRAN, the eNB ends the radio and starts S1-U)
//! and TS 29.281 (GTP-U, see [`crate::tunnel`]). The lab's radio is the UE
//! host's TAP: the eNB answers the UE's ARP for its gateway (10.45.0.1, the
//! address of the `radio` port) with the PGW's tunnel-end MAC, as the story
//! draws it (`gateway_mac`; its own radio MAC when none is given), takes
//! uplink frames addressed to that MAC or to its own, wraps every IPv4 packet from the UE in a
//! G-PDU with the bearer's uplink TEID towards the SGW, and hands downlink
//! T-PDUs to the UE in Ethernet frames. Real LTE carries no Ethernet on the
//! radio; the lab's TAP does, as the story's drawing keeps inner MACs.
//!
//! With `mme` in its settings it also speaks S1AP to the MME
//! ([`crate::s1link`]), from an optional third port `s1mme`.
//!
//! Ports, in order: `radio` (address = the UE's gateway), `s1u`, and
//! optionally `s1mme`.

use crate::bearer::{self, Bearer, BearerError, BearerRange, Bearers, Receiver};
use crate::gtpc::TeidPool;
use crate::mme::Plmn;
use crate::role::{Addressing, ElementNode, Role, RoleInfo};
use crate::router::{Router, RouterConfig};
use crate::s1link::{ErabSetup, S1Config, S1Link, S1Row, ETHERTYPE_NAS};
use crate::tunnel::{self, Endpoint, GPdu, TunnelReport};
use d11_core::settings::ConfigError;
use d11_core::AnyElement;
use d11_core::{Ctx, DropReason, Element, Input, Instant, Outbox, PortId};
use d11_wire::ethernet::{self, EtherType, EthernetFrame};
use d11_wire::gtpu::Teid;
use d11_wire::ipv4::Ipv4Packet;
use d11_wire::MacAddr;
use std::net::Ipv4Addr;

pub const RADIO: PortId = PortId(0);
pub const S1U: PortId = PortId(1);

/// What an eNB is built from.
#[derive(Debug, Clone)]
pub struct EnbConfig {
    /// Ports `radio` and `s1u`, in that order, with their addresses.
    pub router: RouterConfig,
    /// The SGW's S1-U address.
    pub sgw: Ipv4Addr,
    /// The MAC the UE learns for its gateway: the PGW's S5 (tunnel-end)
    /// MAC in the story; `None` is the radio port's own MAC.
    pub gateway_mac: Option<d11_wire::MacAddr>,
    pub bearers: Vec<Bearer>,
}

/// `config` of an `enb` node.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnbSettings {
    /// The SGW's S1-U address.
    sgw: Ipv4Addr,
    /// The MAC the enb answers the UE's ARP for its gateway with (the pgw's
    /// S5 MAC in the story); the radio port's own MAC when absent.
    #[serde(default)]
    gateway_mac: Option<MacAddr>,
    /// Static bearers (a user plane without an MME: netns/bench-mobile.toml);
    /// with an MME, the attach makes them.
    #[serde(default)]
    bearers: Vec<Bearer>,
    /// Many static bearers in one line each.
    #[serde(default)]
    bearer_ranges: Vec<BearerRange>,
    /// The MME's S1-MME address: with it, the eNodeB sets up S1.
    #[serde(default)]
    mme: Option<Ipv4Addr>,
    /// Its PLMN, macro eNodeB id and tracking area code (S1 Setup).
    #[serde(default = "default_plmn")]
    plmn: Plmn,
    #[serde(default = "default_enb_id")]
    enb_id: u32,
    #[serde(default = "default_tac")]
    tac: u16,
}

fn default_plmn() -> Plmn {
    Plmn::TEST
}
fn default_enb_id() -> u32 {
    1
}
fn default_tac() -> u16 {
    1
}

/// What an eNodeB reports: its IP layer, bearers and GTP-U paths.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EnbReport {
    #[serde(flatten)]
    pub l3: d11_core::l3::L3Report,
    #[serde(flatten)]
    pub tunnel: TunnelReport,
    /// Its S1-MME, when it has an MME.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s1: Option<S1Row>,
}

/// The eNodeB.
#[derive(Debug)]
pub struct Enb {
    router: Router,
    gtpu: Endpoint,
    bearers: Bearers,
    sgw: Ipv4Addr,
    radio_mac: d11_wire::MacAddr,
    gateway_mac: d11_wire::MacAddr,
    radio_mtu: u16,
    s1u_addr: Ipv4Addr,
    s1: Option<S1Link>,
    teids: TeidPool,
    /// E-RABs set up for a UE whose address the eNodeB could not read
    /// (the Attach Accept ciphered with EEA2), by the UE's MAC: bound to
    /// the source address of its first uplink packet.
    unbound: Vec<(d11_wire::MacAddr, Bearer)>,
}

/// Where the eNodeB's own S1-U TEIDs start: far above the topology's.
const TEID_BASE: u32 = 0x0100_0000;

impl Enb {
    pub fn new(cfg: EnbConfig) -> Result<Enb, BearerError> {
        let mut bearers = Bearers::new(Receiver::Enb);
        for b in cfg.bearers {
            bearers.add(b)?;
        }
        let (radio, s1u) = (&cfg.router.ports[0], &cfg.router.ports[1]);
        let gateway_mac = cfg.gateway_mac.unwrap_or(radio.mac);
        let (radio_mac, radio_mtu) = (radio.mac, radio.mtu);
        let s1u_addr = s1u.address.addr();
        let mut router = Router::new(cfg.router);
        router.l3_mut().answer_arp_with(RADIO, gateway_mac);
        Ok(Enb {
            radio_mac,
            gateway_mac,
            radio_mtu,
            s1u_addr,
            gtpu: Endpoint::new(&mut router),
            router,
            bearers,
            sgw: cfg.sgw,
            s1: None,
            teids: TeidPool::new(TEID_BASE),
            unbound: Vec::new(),
        })
    }

    /// Sets up S1 with the MME once running.
    pub fn with_s1(mut self, cfg: S1Config) -> Enb {
        self.s1 = Some(S1Link::new(cfg));
        self
    }

    /// Its S1-MME, if it has an MME.
    pub fn s1(&self) -> Option<&S1Link> {
        self.s1.as_ref()
    }

    fn serve_s1(&mut self, cx: &mut Ctx, out: &mut Outbox) {
        let Some(s1) = self.s1.as_mut() else {
            return;
        };
        s1.serve(self.router.l3_mut(), cx, out);
        for (mac, nas) in s1.take_downlink() {
            out.build(RADIO, |f| {
                ethernet::emit_header(f, mac, self.radio_mac, EtherType::from(ETHERTYPE_NAS));
                f.extend_from_slice(&nas);
            });
        }
        for (imsi, mac) in s1.take_released() {
            // The released UE's bearer goes: its TEID is refused from now.
            let imsi = imsi.unwrap_or_else(|| format!("ue {mac}"));
            self.bearers.remove(&imsi);
            self.unbound.retain(|(_, b)| b.imsi != imsi);
        }
        let Some(s1) = self.s1.as_mut() else {
            return;
        };
        let setups = s1.take_setups();
        if setups.is_empty() {
            return;
        }
        for e in setups {
            self.erab_setup(cx, out, e);
        }
        self.router.l3_mut().poll(cx, out);
    }

    /// An E-RAB of Initial Context Setup [TS 36.413 § 8.3.1.2]: the
    /// eNodeB's TEID, the bearer (uplink to the SGW's S1-U TEID), the NAS
    /// inside to the phone, the answer to the MME.
    ///
    /// The lab's radio is Ethernet, where the UE's address is what tells
    /// its packets apart (a real eNodeB knows the radio bearer instead):
    /// the address comes from the Activate Default EPS Bearer Context
    /// Request the E-RAB carries, readable under EEA0. Under EEA2 the
    /// eNodeB cannot read it: the E-RAB waits, by the UE's MAC, for the
    /// UE's first uplink packet to name its address.
    fn erab_setup(&mut self, cx: &mut Ctx, out: &mut Outbox, e: ErabSetup) {
        let ErabSetup {
            mac,
            enb_ue_id,
            imsi,
            erab,
        } = e;
        let nas = erab.nas.as_deref();
        let ue_ip = nas.and_then(pdn_address);
        let imsi = imsi.unwrap_or_else(|| format!("ue {mac}"));
        // A UE attaching again keeps its TEID (so does one the topology
        // provisions).
        self.unbound.retain(|(m, b)| *m != mac && b.imsi != imsi);
        let (bearers, unbound) = (&self.bearers, &self.unbound);
        let teid = match bearers.by_imsi(&imsi) {
            Some(b) => b.enb_teid.0,
            None => self.teids.take(|t| {
                bearers.by_teid(Teid(t)).is_some() || unbound.iter().any(|(_, b)| b.enb_teid.0 == t)
            }),
        };
        let b = Bearer {
            imsi,
            ue_ip: ue_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            enb_teid: Teid(teid),
            sgw_s1u_teid: Teid(erab.teid),
            sgw_s5_teid: Teid(0),
            pgw_teid: Teid(0),
        };
        let made = match ue_ip {
            Some(_) => self.install(b),
            None if nas.is_some_and(ciphered) => {
                self.bearers.remove(&b.imsi);
                self.unbound.push((mac, b));
                true
            }
            None => false,
        }
        .then_some((self.s1u_addr, teid));
        if let Some(nas) = erab.nas.as_ref().filter(|_| made.is_some()) {
            out.build(RADIO, |f| {
                ethernet::emit_header(f, mac, self.radio_mac, EtherType::from(ETHERTYPE_NAS));
                f.extend_from_slice(nas);
            });
        }
        if let Some(s1) = self.s1.as_mut() {
            s1.context_setup_response(self.router.l3_mut(), cx, enb_ue_id, erab.erab_id, made);
        }
    }

    /// NAS from a phone in the radio carriage ([`crate::s1link`]).
    fn radio_nas(&mut self, cx: &mut Ctx, src: MacAddr, nas: &[u8], out: &mut Outbox) {
        let Some(s1) = self.s1.as_mut() else {
            return out.drop_frame(RADIO, DropReason::UnsupportedEtherType);
        };
        if nas.is_empty() || !s1.uplink_nas(self.router.l3_mut(), cx, src, nas) {
            out.drop_frame(RADIO, DropReason::UnsupportedProtocol);
        }
        self.serve_s1(cx, out);
    }

    /// An Error Indication from the SGW: the bearer whose uplink TEID it
    /// names is gone there (the SGW restarted, or dropped it). The MME is
    /// asked to release the UE [TS 23.007 § 20.3; TS 36.413 § 8.3.2],
    /// which detaches it with "re-attach required". A scan of the
    /// bearers: Error Indications are rare, and one per UE is acted on.
    fn tunnel_refused(&mut self, cx: &mut Ctx, peer: Ipv4Addr, teid: Teid, out: &mut Outbox) {
        if peer != self.sgw {
            return;
        }
        let Some(name) = self
            .bearers
            .iter()
            .find(|b| b.sgw_s1u_teid == teid)
            .map(|b| b.imsi.clone())
        else {
            return;
        };
        let Some(s1) = self.s1.as_mut() else {
            return;
        };
        if s1.release_request(self.router.l3_mut(), cx, &name) {
            self.router.l3_mut().poll(cx, out);
        }
    }

    /// The bearer table, for a control plane to drive.
    pub fn bearers_mut(&mut self) -> &mut Bearers {
        &mut self.bearers
    }

    /// A bearer in the table; another UE's bearer on its address goes.
    fn install(&mut self, b: Bearer) -> bool {
        if let Some(other) = self.bearers.by_ue_ip(b.ue_ip).map(|o| o.imsi.clone()) {
            if other != b.imsi {
                self.bearers.remove(&other);
            }
        }
        self.bearers.put(b).is_ok()
    }

    /// Uplink: an IPv4 packet from the UE goes into its bearer's S1-U
    /// tunnel; the first from a UE whose E-RAB waits binds its address.
    fn uplink(&mut self, cx: &mut Ctx, frame: &[u8], out: &mut Outbox) {
        if frame.len() > usize::from(self.radio_mtu) + ethernet::HEADER_LEN {
            return out.drop_frame(RADIO, DropReason::Oversize);
        }
        let ip = match Ipv4Packet::new_checked(&frame[ethernet::HEADER_LEN..]) {
            Ok(ip) => ip,
            Err(_) => return out.drop_frame(RADIO, DropReason::Malformed),
        };
        if self.bearers.by_ue_ip(ip.src()).is_none() && !ip.src().is_unspecified() {
            let src = d11_wire::MacAddr::from_slice(&frame[6..12]);
            if let Some(i) = self.unbound.iter().position(|(m, _)| Some(*m) == src) {
                let (_, mut b) = self.unbound.swap_remove(i);
                b.ue_ip = ip.src();
                tracing::info!(imsi = %b.imsi, ue_ip = %b.ue_ip, "E-RAB bound by the UE's first packet");
                self.install(b);
            }
        }
        let Some(b) = self.bearers.by_ue_ip(ip.src()) else {
            return out.drop_frame(RADIO, DropReason::NoBearer);
        };
        let teid = b.sgw_s1u_teid;
        self.gtpu.send_g_pdu(
            &mut self.router,
            cx,
            RADIO,
            self.s1u_addr,
            self.sgw,
            teid,
            ip.packet(),
            out,
        );
    }

    /// Downlink: a T-PDU for a known TEID goes to the UE, whose MAC the
    /// router's ARP on the radio port finds.
    fn downlink(&mut self, cx: &mut Ctx, g: GPdu<'_>, out: &mut Outbox) {
        let GPdu { peer, teid, tpdu } = g;
        let Some(b) = self.bearers.by_teid(teid) else {
            if self.unbound.iter().any(|(_, b)| b.enb_teid == teid) {
                // Before the UE's first packet named its address.
                return out.drop_frame(S1U, DropReason::NoBearer);
            }
            let me = self.s1u_addr;
            return self
                .gtpu
                .unknown_teid(&mut self.router, cx, S1U, me, peer, teid, out);
        };
        let ue = b.ue_ip;
        match tunnel::tpdu_ipv4(tpdu) {
            Ok(ip) if ip.dst() == ue => self.router.route_local(cx, S1U, ip.packet(), out),
            Ok(_) => out.drop_frame(S1U, DropReason::NoBearer),
            Err(r) => out.drop_frame(S1U, r),
        }
    }
}

/// Whether a NAS PDU is ciphered (security header type 2 or 4) [TS 24.301
/// § 9.3.1].
fn ciphered(nas: &[u8]) -> bool {
    matches!(d11_wire::nas::Pdu::parse(nas), Ok(d11_wire::nas::Pdu::Protected { header, .. }) if d11_wire::nas::sec::ciphers(header))
}

/// The PDN address of the Activate Default EPS Bearer Context Request in
/// an Attach Accept [TS 24.301 § 8.2.1, § 8.3.6].
fn pdn_address(nas: &[u8]) -> Option<Ipv4Addr> {
    use d11_wire::nas::{EmmMessage, EsmMessage, Pdu};
    let m = match Pdu::parse(nas).ok()? {
        Pdu::Plain(m) => m,
        Pdu::Protected { message, .. } => message,
    };
    let EmmMessage::AttachAccept { esm, .. } = EmmMessage::parse(m).ok()? else {
        return None;
    };
    match EsmMessage::parse(&esm).ok()? {
        EsmMessage::ActivateDefaultBearerRequest { pdn_address, .. } => Some(pdn_address),
        _ => None,
    }
}

impl Role for Enb {
    const INFO: RoleInfo = RoleInfo {
        name: "enb",
        summary: "eNodeB: the UE's radio (TAP), the S1-U tunnel and S1AP to the MME; ports radio, s1u[, s1mme]",
        addressing: Addressing::All,
        bridges: false,
        isolates_tenants: false,
        routes: false,
    };
    type Settings = EnbSettings;
    fn build(node: &ElementNode, c: EnbSettings) -> Result<Box<dyn AnyElement>, ConfigError> {
        let names: &[&str] = match node.ports.len() {
            3 => &["radio", "s1u", "s1mme"],
            _ => &["radio", "s1u"],
        };
        let mut e = Enb::new(EnbConfig {
            router: RouterConfig::for_ports(node, names)?,
            sgw: c.sgw,
            gateway_mac: c.gateway_mac,
            bearers: c.bearers,
        })
        .map_err(bearer::bearer_error)?;
        bearer::add_ranges(e.bearers_mut(), &c.bearer_ranges)?;
        if c.enb_id >= 1 << 20 {
            return Err(ConfigError::new(
                "config.enb_id",
                "a macro eNodeB id has 20 bits",
            ));
        }
        if let Some(mme) = c.mme {
            e = e.with_s1(S1Config {
                mme,
                plmn: c.plmn,
                enb_id: c.enb_id,
                tac: c.tac,
            });
        }
        Ok(Box::new(e))
    }
}

impl Element for Enb {
    fn on_frame(&mut self, cx: &mut Ctx, port: PortId, frame: &[u8], out: &mut Outbox) {
        if port == RADIO {
            if let Ok(eth) = EthernetFrame::new_checked(frame) {
                if (eth.dst() == self.gateway_mac || eth.dst() == self.radio_mac)
                    && eth.ethertype() == EtherType::Ipv4
                    && !eth.src().is_multicast()
                {
                    return self.uplink(cx, frame, out);
                }
                if eth.ethertype() == EtherType::from(ETHERTYPE_NAS)
                    && (eth.dst() == self.radio_mac || eth.dst().is_broadcast())
                    && !eth.src().is_multicast()
                {
                    let src = eth.src();
                    return self.radio_nas(cx, src, &frame[ethernet::HEADER_LEN..], out);
                }
            }
        }
        match self.router.l3_mut().input(cx, port, frame, out) {
            Input::Tunnel { port, ip, udp } if port == S1U => {
                let r = &mut self.router;
                if let Some(g) = self.gtpu.receive(r, cx, port, &ip, &udp, out) {
                    self.downlink(cx, g, out);
                } else if let Some((peer, teid)) = self.gtpu.take_error_indication() {
                    self.tunnel_refused(cx, peer, teid, out);
                }
            }
            other => {
                self.router.handle(cx, port, frame, other, out);
                self.serve_s1(cx, out);
            }
        }
    }

    fn on_timer(&mut self, cx: &mut Ctx, out: &mut Outbox) {
        self.router.on_timer(cx, out);
        self.serve_s1(cx, out);
    }

    fn poll_at(&self) -> Option<Instant> {
        let s1 = self.s1.as_ref().and_then(S1Link::poll_at);
        [self.router.poll_at(), s1].into_iter().flatten().min()
    }

    fn report(&self) -> serde_json::Value {
        d11_core::report_json(&EnbReport {
            l3: self.router.l3().report(),
            tunnel: TunnelReport::new(&self.bearers, &self.gtpu),
            s1: self.s1.as_ref().map(S1Link::row),
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
    use crate::bearer::Bearer;
    use d11_core::L3Port;
    use d11_wire::hex;

    // Fixtures made by scapy (/usr/bin/python3, scapy 2.5), with
    // phone=02:00:00:00:00:02 radio=02:00:00:00:01:00 s1u=02:00:00:00:01:01
    // sgw=02:00:00:00:02:00 pgw (its S5 port, the UE's gateway MAC)=02:00:00:00:04:00:
    // ARP_REQ:       Ether(dst=bcast, src=phone)/ARP(op=1, hwsrc=phone, psrc="10.45.0.2", pdst="10.45.0.1")
    // ARP_REPLY:     Ether(dst=phone, src=pgw)/ARP(op=2, hwsrc=pgw, psrc="10.45.0.1", hwdst=phone, pdst="10.45.0.2")
    // PING_TO_<MAC>: Ether(dst=MAC, src=phone)/IP(src="10.45.0.2", dst="192.0.2.130", ttl=64, id=1, flags="DF")/ICMP(id=1, seq=1)/(b"x"*32)
    // SGW_ARP_REPLY: Ether(dst=s1u, src=sgw)/ARP(op=2, hwsrc=sgw, psrc="172.16.1.2", hwdst=s1u, pdst="172.16.1.1")
    // GPDU:          Ether(dst=sgw, src=s1u)/IP(172.16.1.1 > 172.16.1.2)/UDP(2152, 2152, chksum=0)/GTP_U_Header(teid=0x200, gtp_type=255)/the ping's IP packet
    const ARP_REQ: &str =
        "ffffffffffff020000000002080600010800060400010200000000020a2d00020000000000000a2d0001";
    const ARP_REPLY: &str =
        "020000000002020000000400080600010800060400020200000004000a2d00010200000000020a2d0002";
    const PING_TO_PGW: &str = "02000000040002000000000208004500003c0001400040016e0f0a2d0002c000028208007076000100017878787878787878787878787878787878787878787878787878787878787878";
    const PING_TO_RADIO: &str = "02000000010002000000000208004500003c0001400040016e0f0a2d0002c000028208007076000100017878787878787878787878787878787878787878787878787878787878787878";
    const PING_TO_OTHER: &str = "02000000090902000000000208004500003c0001400040016e0f0a2d0002c000028208007076000100017878787878787878787878787878787878787878787878787878787878787878";
    const SGW_ARP_REPLY: &str =
        "02000000010102000000020008060001080006040002020000000200ac100102020000000101ac100101";
    const GPDU: &str = "020000000200020000000101080045000060000000004011206aac100101ac10010208680868004c000030ff003c000002004500003c0001400040016e0f0a2d0002c000028208007076000100017878787878787878787878787878787878787878787878787878787878787878";

    const RADIO_MAC: MacAddr = MacAddr([2, 0, 0, 0, 1, 0]);
    const S1U_MAC: MacAddr = MacAddr([2, 0, 0, 0, 1, 1]);
    const PGW_MAC: MacAddr = MacAddr([2, 0, 0, 0, 4, 0]);

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn frames(o: &Outbox) -> Vec<(PortId, Vec<u8>)> {
        o.frames().map(|(p, f)| (p, f.to_vec())).collect()
    }

    fn enb(gateway_mac: Option<MacAddr>) -> Enb {
        let port = |name: &str, mac, address: &str, mtu| L3Port {
            name: name.into(),
            mac,
            address: address.parse().unwrap(),
            mtu,
        };
        Enb::new(EnbConfig {
            router: RouterConfig {
                ports: vec![
                    port("radio", RADIO_MAC, "10.45.0.1/16", 1400),
                    port("s1u", S1U_MAC, "172.16.1.1/24", 1500),
                ],
                routes: vec![],
            },
            sgw: "172.16.1.2".parse().unwrap(),
            gateway_mac,
            bearers: vec![Bearer {
                imsi: "001010000000001".into(),
                ue_ip: "10.45.0.2".parse().unwrap(),
                enb_teid: d11_wire::gtpu::Teid(0x100),
                sgw_s1u_teid: d11_wire::gtpu::Teid(0x200),
                sgw_s5_teid: d11_wire::gtpu::Teid(0x300),
                pgw_teid: d11_wire::gtpu::Teid(0x400),
            }],
        })
        .unwrap()
    }

    /// The G-PDU the enb sends for `ping` once the SGW's MAC is known: its
    /// Ethernet header and everything from the GTP-U header on are scapy's.
    fn uplink_gpdu(e: &mut Enb, ping: &str) -> Vec<(PortId, Vec<u8>)> {
        let mut o = Outbox::new();
        e.on_frame(&mut t(1).into(), RADIO, &hex(ping), &mut o);
        e.on_frame(&mut t(2).into(), S1U, &hex(SGW_ARP_REPLY), &mut o);
        frames(&o)
            .into_iter()
            .filter(|(_, f)| f.len() > 42 && f[12..14] == [0x08, 0x00])
            .collect()
    }

    fn assert_is_the_gpdu(out: &[(PortId, Vec<u8>)]) {
        let gpdu = hex(GPDU);
        assert_eq!(out.len(), 1, "one G-PDU: {out:?}");
        let (port, f) = &out[0];
        assert_eq!(*port, S1U);
        assert_eq!(f.len(), gpdu.len());
        assert_eq!(f[..14], gpdu[..14], "Ethernet s1u → sgw");
        assert_eq!(f[26..34], gpdu[26..34], "outer 172.16.1.1 → 172.16.1.2");
        assert_eq!(f[34..38], gpdu[34..38], "UDP 2152 → 2152");
        assert_eq!(f[42..], gpdu[42..], "GTP-U TEID 0x200 and the UE's packet");
    }

    #[test]
    fn the_ue_arp_for_its_gateway_gets_the_pgw_mac_as_scapy_draws_it() {
        let mut e = enb(Some(PGW_MAC));
        let mut o = Outbox::new();
        e.on_frame(&mut t(0).into(), RADIO, &hex(ARP_REQ), &mut o);
        assert_eq!(frames(&o), vec![(RADIO, hex(ARP_REPLY))]);
    }

    #[test]
    fn without_gateway_mac_the_ue_arp_gets_the_radio_mac() {
        let mut e = enb(None);
        let mut o = Outbox::new();
        e.on_frame(&mut t(0).into(), RADIO, &hex(ARP_REQ), &mut o);
        let (port, reply) = &frames(&o)[0];
        assert_eq!(*port, RADIO);
        assert_eq!(reply[6..12], RADIO_MAC.0, "Ethernet source");
        assert_eq!(reply[22..28], RADIO_MAC.0, "ARP sender MAC");
    }

    #[test]
    fn uplink_to_the_gateway_mac_or_the_radio_mac_enters_the_tunnel_other_macs_do_not() {
        let mut e = enb(Some(PGW_MAC));
        assert_is_the_gpdu(&uplink_gpdu(&mut e, PING_TO_PGW));
        let mut e = enb(Some(PGW_MAC));
        assert_is_the_gpdu(&uplink_gpdu(&mut e, PING_TO_RADIO));
        let mut e = enb(Some(PGW_MAC));
        assert_eq!(uplink_gpdu(&mut e, PING_TO_OTHER), vec![]);
    }
}
