//! `enb`: the eNodeB, the phone's radio and the start of its first tunnel.
//!
//! Read 3GPP TS 36.300 § 4 (E-UTRAN, the eNB ends the radio and starts S1-U)
//! and TS 29.281 (GTP-U, see [`crate::tunnel`]). The lab's radio is the UE
//! host's TAP: the eNB answers the UE's ARP for its gateway (10.45.0.1, the
//! address of the `radio` port), wraps every IPv4 packet from the UE in a
//! G-PDU with the bearer's uplink TEID towards the SGW, and hands downlink
//! T-PDUs to the UE in Ethernet frames. Real LTE carries no Ethernet on the
//! radio; the lab's TAP does, as the story's drawing keeps inner MACs.
//!
//! Ports, in order: `radio` (address = the UE's gateway), `s1u`.

use crate::bearer::{Bearer, BearerError, Bearers, Receiver};
use crate::router::{Router, RouterConfig};
use crate::tunnel::{self, Endpoint, Rx};
use d11_core::{DropReason, Element, Instant, Outbox, PortId};
use d11_wire::ethernet::{self, EtherType, EthernetFrame};
use d11_wire::ipv4::Ipv4Packet;
use serde_json::json;
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
    pub bearers: Vec<Bearer>,
}

/// The eNodeB.
#[derive(Debug)]
pub struct Enb {
    router: Router,
    gtpu: Endpoint,
    bearers: Bearers,
    sgw: Ipv4Addr,
    radio_mac: d11_wire::MacAddr,
    radio_mtu: u16,
    s1u_mac: d11_wire::MacAddr,
    s1u_addr: Ipv4Addr,
}

impl Enb {
    pub fn new(cfg: EnbConfig) -> Result<Enb, BearerError> {
        let mut bearers = Bearers::new(Receiver::Enb);
        for b in cfg.bearers {
            bearers.add(b)?;
        }
        let (radio, s1u) = (&cfg.router.ports[0], &cfg.router.ports[1]);
        Ok(Enb {
            radio_mac: radio.mac,
            radio_mtu: radio.mtu,
            s1u_mac: s1u.mac,
            s1u_addr: s1u.address.addr(),
            router: Router::new(cfg.router),
            gtpu: Endpoint::default(),
            bearers,
            sgw: cfg.sgw,
        })
    }

    /// The bearer table, for a control plane to drive.
    pub fn bearers_mut(&mut self) -> &mut Bearers {
        &mut self.bearers
    }

    /// Uplink: an IPv4 packet from the UE goes into its bearer's S1-U tunnel.
    fn uplink(&mut self, now: Instant, frame: &[u8], out: &mut Outbox) {
        if frame.len() > usize::from(self.radio_mtu) + ethernet::HEADER_LEN {
            return out.drop_frame(RADIO, DropReason::Oversize);
        }
        let ip = match Ipv4Packet::new_checked(&frame[ethernet::HEADER_LEN..]) {
            Ok(ip) => ip,
            Err(_) => return out.drop_frame(RADIO, DropReason::Malformed),
        };
        let Some(b) = self.bearers.by_ue_ip(ip.src()) else {
            return out.drop_frame(RADIO, DropReason::NoBearer);
        };
        let teid = b.sgw_s1u_teid;
        self.gtpu.send_g_pdu(
            &mut self.router,
            now,
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
    fn downlink(
        &mut self,
        now: Instant,
        peer: Ipv4Addr,
        teid: d11_wire::gtpu::Teid,
        tpdu: &[u8],
        out: &mut Outbox,
    ) {
        let Some(b) = self.bearers.by_teid(teid) else {
            let me = self.s1u_addr;
            return self
                .gtpu
                .unknown_teid(&mut self.router, now, S1U, me, peer, teid, out);
        };
        let ue = b.ue_ip;
        match tunnel::tpdu_ipv4(tpdu) {
            Ok(ip) if ip.dst() == ue => self.router.route_local(now, S1U, ip.packet(), out),
            Ok(_) => out.drop_frame(S1U, DropReason::NoBearer),
            Err(r) => out.drop_frame(S1U, r),
        }
    }
}

impl Element for Enb {
    fn on_frame(&mut self, now: Instant, port: PortId, frame: &[u8], out: &mut Outbox) {
        if port == RADIO {
            if let Ok(eth) = EthernetFrame::new_checked(frame) {
                if eth.dst() == self.radio_mac
                    && eth.ethertype() == EtherType::Ipv4
                    && !eth.src().is_multicast()
                {
                    return self.uplink(now, frame, out);
                }
            }
            return self.router.on_frame(now, port, frame, out);
        }
        let (mac, me) = (self.s1u_mac, self.s1u_addr);
        match self
            .gtpu
            .receive(&mut self.router, now, port, mac, me, frame, out)
        {
            Rx::NotGtpu => self.router.on_frame(now, port, frame, out),
            Rx::GPdu { peer, teid, tpdu } => self.downlink(now, peer, teid, tpdu, out),
            Rx::Done => {}
        }
    }

    fn on_timer(&mut self, now: Instant, out: &mut Outbox) {
        self.router.on_timer(now, out)
    }

    fn poll_at(&self) -> Option<Instant> {
        self.router.poll_at()
    }

    fn report(&self) -> serde_json::Value {
        let mut r = self.router.report();
        r["bearers"] = json!(self.bearers.iter().collect::<Vec<_>>());
        r["gtpu"] = json!(self.gtpu.stats);
        r
    }
}
