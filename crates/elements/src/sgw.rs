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
//! Ports, in order: `s1u`, `s5`.

use crate::bearer::{Bearer, BearerError, Bearers, Receiver};
use crate::router::{Router, RouterConfig};
use crate::tunnel::{self, Endpoint, Rx};
use d11_core::{DropReason, Element, Instant, Outbox, PortId};
use d11_wire::gtpu::Teid;
use d11_wire::MacAddr;
use serde_json::json;
use std::net::Ipv4Addr;

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

/// The serving gateway.
#[derive(Debug)]
pub struct Sgw {
    router: Router,
    gtpu: Endpoint,
    bearers: Bearers,
    enb: Ipv4Addr,
    pgw: Ipv4Addr,
    /// MAC and address of each port.
    ports: [(MacAddr, Ipv4Addr); 2],
    relayed: [u64; 2],
}

impl Sgw {
    pub fn new(cfg: SgwConfig) -> Result<Sgw, BearerError> {
        let mut bearers = Bearers::new(Receiver::Sgw);
        for b in cfg.bearers {
            bearers.add(b)?;
        }
        let p = |i: usize| (cfg.router.ports[i].mac, cfg.router.ports[i].address.addr());
        Ok(Sgw {
            ports: [p(0), p(1)],
            router: Router::new(cfg.router),
            gtpu: Endpoint::default(),
            bearers,
            enb: cfg.enb,
            pgw: cfg.pgw,
            relayed: [0; 2],
        })
    }

    /// The bearer table, for a control plane to drive.
    pub fn bearers_mut(&mut self) -> &mut Bearers {
        &mut self.bearers
    }

    fn relay(
        &mut self,
        now: Instant,
        port: PortId,
        peer: Ipv4Addr,
        teid: Teid,
        tpdu: &[u8],
        out: &mut Outbox,
    ) {
        // The TEID must be this bearer's receiving TEID on the port it came in on.
        let next = self.bearers.by_teid(teid).and_then(|b| match port {
            S1U if b.sgw_s1u_teid == teid => Some((S5, self.pgw, b.pgw_teid)),
            S5 if b.sgw_s5_teid == teid => Some((S1U, self.enb, b.enb_teid)),
            _ => None,
        });
        let Some((egress, to, out_teid)) = next else {
            let me = self.ports[port.index()].1;
            return self
                .gtpu
                .unknown_teid(&mut self.router, now, port, me, peer, teid, out);
        };
        if let Err(r) = tunnel::tpdu_ipv4(tpdu) {
            return out.drop_frame(port, r);
        }
        self.relayed[port.index()] += 1;
        let me = self.ports[egress.index()].1;
        self.gtpu
            .send_g_pdu(&mut self.router, now, port, me, to, out_teid, tpdu, out);
    }
}

impl Element for Sgw {
    fn on_frame(&mut self, now: Instant, port: PortId, frame: &[u8], out: &mut Outbox) {
        let Some(&(mac, me)) = self.ports.get(port.index()) else {
            return out.drop_frame(port, DropReason::NoSuchPort);
        };
        match self
            .gtpu
            .receive(&mut self.router, now, port, mac, me, frame, out)
        {
            Rx::NotGtpu => self.router.on_frame(now, port, frame, out),
            Rx::GPdu { peer, teid, tpdu } => self.relay(now, port, peer, teid, tpdu, out),
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
        r["relayed"] = json!({"uplink": self.relayed[0], "downlink": self.relayed[1]});
        r
    }
}
