//! The GTP-U endpoint the eNodeB, SGW and PGW share: receiving GTP-U on one
//! of their addresses, path management (Echo, Error Indication, End
//! Marker), and sending G-PDUs. The element's [`d11_core::L3`] hands it
//! what arrives on UDP 2152 (claimed by [`Endpoint::new`]).
//!
//! Read 3GPP TS 29.281 § 4.4.2 (UDP port 2152 both ways), § 7.2 (Echo
//! Request/Response), § 7.3.1 (Error Indication for an unknown TEID) and
//! § 5.2.1 (an unknown extension that must be comprehended makes the
//! message unusable). Everything else a mobile element receives on its
//! addresses (ARP, ping, UDP to other ports) is the embedded
//! [`Router`]'s job, which also routes what the elements send.

use crate::router::Router;
use d11_core::{Ctx, DropReason, Outbox, PortId};
use d11_wire::gtpu::{self, GtpuError, GtpuPacket, GtpuRepr, MessageType, Teid};
use d11_wire::ipv4::{protocol, Ipv4Packet, Ipv4Repr};
use d11_wire::udp::{UdpPacket, UdpRepr};
use std::net::Ipv4Addr;

/// A G-PDU that arrived: the element looks `teid` up.
pub struct GPdu<'a> {
    pub peer: Ipv4Addr,
    pub teid: Teid,
    pub tpdu: &'a [u8],
}

/// Path management seen by one element, for its report.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct PathStats {
    pub echo_requests: u64,
    pub echo_responses: u64,
    pub error_indications_sent: u64,
    pub error_indications_received: u64,
    pub end_markers: u64,
}

/// What the mobile elements report beside their IP layer: the bearers
/// (the first [`crate::bearer::Bearers::REPORTED`]), how many there are,
/// and GTP-U path management.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TunnelReport {
    pub bearers: Vec<crate::bearer::Bearer>,
    pub bearers_total: usize,
    pub gtpu: PathStats,
}

impl TunnelReport {
    pub fn new(bearers: &crate::bearer::Bearers, gtpu: &Endpoint) -> TunnelReport {
        TunnelReport {
            bearers: bearers.reported().cloned().collect(),
            bearers_total: bearers.len(),
            gtpu: gtpu.stats.clone(),
        }
    }
}

/// A GTP-U speaker on one element's addresses.
#[derive(Debug, Default)]
pub struct Endpoint {
    pub stats: PathStats,
    /// Reused for every packet the element sends, so forwarding does not
    /// allocate once warm.
    scratch: Vec<u8>,
    /// The last Error Indication received (its sender and the TEID it
    /// names) until the element takes it [TS 29.281 § 7.3.1].
    error_indication: Option<(Ipv4Addr, Teid)>,
}

impl Endpoint {
    /// Claims UDP 2152 on the router's addresses, so that its layer hands
    /// GTP-U back as a tunnel datagram.
    pub fn new(router: &mut Router) -> Endpoint {
        router.l3_mut().claim_udp(gtpu::PORT);
        Endpoint::default()
    }

    /// A datagram to our port 2152 on `port`: answers Echo Requests and
    /// absorbs path management itself; a G-PDU comes back to the element.
    #[inline]
    pub fn receive<'a>(
        &mut self,
        router: &mut Router,
        cx: &mut Ctx,
        port: PortId,
        ip: &Ipv4Packet<&'a [u8]>,
        udp: &UdpPacket<&'a [u8]>,
        out: &mut Outbox,
    ) -> Option<GPdu<'a>> {
        let (peer, me) = (ip.src(), ip.dst());
        let payload = udp.payload_ref();
        let g = match GtpuPacket::new_checked(payload) {
            Ok(g) => g,
            Err(GtpuError::UnknownRequiredExtension(t)) => {
                tracing::debug!(ext = t, "GTP-U extension that must be comprehended");
                out.drop_frame(port, DropReason::GtpuUnsupported);
                return None;
            }
            Err(_) => {
                out.drop_frame(port, DropReason::GtpuMalformed);
                return None;
            }
        };
        tracing::trace!(%g, "rx");
        match g.message_type() {
            MessageType::GPdu => {
                return Some(GPdu {
                    peer,
                    teid: g.teid(),
                    tpdu: &payload[g.header_len()..],
                })
            }
            MessageType::EchoRequest => {
                self.stats.echo_requests += 1;
                // [§ 7.2.2] The response copies the request's sequence number, TEID 0.
                let repr = GtpuRepr {
                    message_type: MessageType::EchoResponse,
                    teid: Teid(0),
                    seq: Some(g.seq().unwrap_or(0)),
                    npdu: None,
                    extensions: Vec::new(),
                    payload_len: 2,
                };
                let mut ies = Vec::with_capacity(2);
                gtpu::ie::emit_echo_response(&mut ies);
                self.send(router, cx, port, me, peer, &repr, &ies, out);
            }
            MessageType::EchoResponse => self.stats.echo_responses += 1,
            MessageType::ErrorIndication => {
                self.stats.error_indications_received += 1;
                let teid = gtpu::ie::error_indication_teid(g.payload());
                tracing::info!(%peer, ?teid, "error indication received");
                self.error_indication = teid.map(|t| (peer, t));
            }
            MessageType::EndMarker => self.stats.end_markers += 1,
            MessageType::SupportedExtensionHeadersNotification | MessageType::Unknown(_) => {
                out.drop_frame(port, DropReason::GtpuUnsupported);
            }
        }
        None
    }

    /// The Error Indication the last [`Endpoint::receive`] took: the
    /// peer that refused a G-PDU and the TEID it was sent to.
    pub fn take_error_indication(&mut self) -> Option<(Ipv4Addr, Teid)> {
        self.error_indication.take()
    }

    /// Answers a G-PDU for an unknown TEID with an Error Indication to its
    /// sender [§ 7.3.1] and counts the drop.
    #[allow(clippy::too_many_arguments)]
    pub fn unknown_teid(
        &mut self,
        router: &mut Router,
        cx: &mut Ctx,
        port: PortId,
        me: Ipv4Addr,
        peer: Ipv4Addr,
        teid: Teid,
        out: &mut Outbox,
    ) {
        self.stats.error_indications_sent += 1;
        let repr = GtpuRepr {
            message_type: MessageType::ErrorIndication,
            teid: Teid(0),
            seq: Some(0),
            npdu: None,
            extensions: Vec::new(),
            payload_len: 12,
        };
        let mut ies = Vec::with_capacity(12);
        gtpu::ie::emit_error_indication(&mut ies, teid, me);
        self.send(router, cx, port, me, peer, &repr, &ies, out);
        out.drop_frame(port, DropReason::GtpuUnknownTeid);
    }

    /// Sends a G-PDU carrying `tpdu` in tunnel `teid` from `me` to `peer`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn send_g_pdu(
        &mut self,
        router: &mut Router,
        cx: &mut Ctx,
        ingress: PortId,
        me: Ipv4Addr,
        peer: Ipv4Addr,
        teid: Teid,
        tpdu: &[u8],
        out: &mut Outbox,
    ) {
        let repr = GtpuRepr::g_pdu(teid, tpdu.len());
        self.send(router, cx, ingress, me, peer, &repr, tpdu, out);
    }

    /// IPv4 + UDP 2152 → 2152 + GTP-U header + `payload`, routed by the
    /// router. The UDP checksum is zero, as IPv4 allows [RFC 768] and
    /// GTP-U implementations commonly send.
    #[allow(clippy::too_many_arguments)]
    fn send(
        &mut self,
        router: &mut Router,
        cx: &mut Ctx,
        ingress: PortId,
        me: Ipv4Addr,
        peer: Ipv4Addr,
        repr: &GtpuRepr,
        payload: &[u8],
        out: &mut Outbox,
    ) {
        let udp = UdpRepr {
            src_port: gtpu::PORT,
            dst_port: gtpu::PORT,
            payload_len: repr.buffer_len() + payload.len(),
        };
        let ident = router.l3_mut().next_ident();
        let mut b = std::mem::take(&mut self.scratch);
        b.clear();
        Ipv4Repr {
            src: me,
            dst: peer,
            protocol: protocol::UDP,
            ttl: d11_core::l3::DEFAULT_TTL,
            ident,
            dont_frag: false,
            payload_len: udp.buffer_len() + udp.payload_len,
        }
        .emit(&mut b);
        udp.emit(&mut b);
        repr.emit(&mut b);
        b.extend_from_slice(payload);
        router.l3_mut().send_ip_to(cx, ingress, peer, &b, out);
        self.scratch = b;
    }
}

/// The T-PDU as an IPv4 packet, or the drop reason: the lab's bearers carry
/// IPv4 only [TS 29.281 § 5.1: the T-PDU is the user's packet].
#[inline]
pub fn tpdu_ipv4(tpdu: &[u8]) -> Result<Ipv4Packet<&[u8]>, DropReason> {
    match tpdu.first().map(|b| b >> 4) {
        Some(4) => {}
        _ => return Err(DropReason::TpduNotIpv4),
    }
    let ip = Ipv4Packet::new_checked(tpdu).map_err(|_| DropReason::Malformed)?;
    if !ip.verify_checksum() {
        return Err(DropReason::BadChecksum);
    }
    Ok(ip)
}
