//! The GTP-U endpoint the eNodeB, SGW and PGW share: receiving GTP-U on one
//! of their addresses, path management (Echo, Error Indication, End
//! Marker), and sending G-PDUs.
//!
//! Read 3GPP TS 29.281 § 4.4.2 (UDP port 2152 both ways), § 7.2 (Echo
//! Request/Response), § 7.3.1 (Error Indication for an unknown TEID) and
//! § 5.2.1 (an unknown extension that must be comprehended makes the
//! message unusable). Everything else a mobile element receives on its
//! addresses (ARP, ping, UDP to other ports) is the embedded
//! [`Router`]'s job, which also routes what the elements send.

use crate::router::Router;
use d11_core::{DropReason, Instant, Outbox, PortId};
use d11_wire::ethernet::{self, EtherType, EthernetFrame};
use d11_wire::gtpu::{self, GtpuError, GtpuPacket, GtpuRepr, MessageType, Teid};
use d11_wire::ipv4::{protocol, Ipv4Packet, Ipv4Repr};
use d11_wire::MacAddr;
use std::net::Ipv4Addr;

/// UDP header length.
const UDP_LEN: usize = 8;

/// What a frame on a GTP-U port turned out to be.
pub enum Rx<'a> {
    /// Not GTP-U for our address: the router answers it.
    NotGtpu,
    /// A G-PDU from `peer`: the element looks `teid` up.
    GPdu {
        peer: Ipv4Addr,
        teid: Teid,
        tpdu: &'a [u8],
    },
    /// Answered (echo) or dropped, with the drop recorded.
    Done,
}

/// Path management seen by one element, for its report.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PathStats {
    pub echo_requests: u64,
    pub echo_responses: u64,
    pub error_indications_sent: u64,
    pub error_indications_received: u64,
    pub end_markers: u64,
}

/// A GTP-U speaker on one element's addresses.
#[derive(Debug, Default)]
pub struct Endpoint {
    ident: u16,
    pub stats: PathStats,
    /// Reused for every packet the element sends, so forwarding does not
    /// allocate once warm.
    scratch: Vec<u8>,
}

impl Endpoint {
    fn next_ident(&mut self) -> u16 {
        self.ident = self.ident.wrapping_add(1);
        self.ident
    }

    /// Classifies `frame`, which arrived on `port` (MAC `mac`, address `me`),
    /// answering Echo Requests and absorbing path management itself.
    #[allow(clippy::too_many_arguments)]
    pub fn receive<'a>(
        &mut self,
        router: &mut Router,
        now: Instant,
        port: PortId,
        mac: MacAddr,
        me: Ipv4Addr,
        frame: &'a [u8],
        out: &mut Outbox,
    ) -> Rx<'a> {
        let Some((peer, udp_payload)) = udp_to_gtpu_port(frame, mac, me) else {
            return Rx::NotGtpu;
        };
        let g = match GtpuPacket::new_checked(udp_payload) {
            Ok(g) => g,
            Err(GtpuError::UnknownRequiredExtension(t)) => {
                tracing::debug!(ext = t, "GTP-U extension that must be comprehended");
                out.drop_frame(port, DropReason::GtpuUnsupported);
                return Rx::Done;
            }
            Err(_) => {
                out.drop_frame(port, DropReason::GtpuMalformed);
                return Rx::Done;
            }
        };
        tracing::trace!(%g, "rx");
        match g.message_type() {
            MessageType::GPdu => {
                return Rx::GPdu {
                    peer,
                    teid: g.teid(),
                    tpdu: &udp_payload[g.header_len()..],
                }
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
                self.send(router, now, port, me, peer, &repr, &ies, out);
            }
            MessageType::EchoResponse => self.stats.echo_responses += 1,
            MessageType::ErrorIndication => {
                self.stats.error_indications_received += 1;
                let teid = gtpu::ie::error_indication_teid(g.payload());
                tracing::info!(%peer, ?teid, "error indication received");
            }
            MessageType::EndMarker => self.stats.end_markers += 1,
            MessageType::SupportedExtensionHeadersNotification | MessageType::Unknown(_) => {
                out.drop_frame(port, DropReason::GtpuUnsupported);
            }
        }
        Rx::Done
    }

    /// Answers a G-PDU for an unknown TEID with an Error Indication to its
    /// sender [§ 7.3.1] and counts the drop.
    #[allow(clippy::too_many_arguments)]
    pub fn unknown_teid(
        &mut self,
        router: &mut Router,
        now: Instant,
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
        self.send(router, now, port, me, peer, &repr, &ies, out);
        out.drop_frame(port, DropReason::GtpuUnknownTeid);
    }

    /// Sends a G-PDU carrying `tpdu` in tunnel `teid` from `me` to `peer`.
    #[allow(clippy::too_many_arguments)]
    pub fn send_g_pdu(
        &mut self,
        router: &mut Router,
        now: Instant,
        ingress: PortId,
        me: Ipv4Addr,
        peer: Ipv4Addr,
        teid: Teid,
        tpdu: &[u8],
        out: &mut Outbox,
    ) {
        let repr = GtpuRepr::g_pdu(teid, tpdu.len());
        self.send(router, now, ingress, me, peer, &repr, tpdu, out);
    }

    /// IPv4 + UDP 2152 → 2152 + GTP-U header + `payload`, routed by the
    /// router. The UDP checksum is zero, as IPv4 allows [RFC 768] and
    /// GTP-U implementations commonly send.
    #[allow(clippy::too_many_arguments)]
    fn send(
        &mut self,
        router: &mut Router,
        now: Instant,
        ingress: PortId,
        me: Ipv4Addr,
        peer: Ipv4Addr,
        repr: &GtpuRepr,
        payload: &[u8],
        out: &mut Outbox,
    ) {
        let udp_len = UDP_LEN + repr.buffer_len() + payload.len();
        let ident = self.next_ident();
        let mut b = std::mem::take(&mut self.scratch);
        b.clear();
        Ipv4Repr {
            src: me,
            dst: peer,
            protocol: protocol::UDP,
            ttl: 64,
            ident,
            dont_frag: false,
            payload_len: udp_len,
        }
        .emit(&mut b);
        b.extend_from_slice(&gtpu::PORT.to_be_bytes());
        b.extend_from_slice(&gtpu::PORT.to_be_bytes());
        b.extend_from_slice(&(udp_len as u16).to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        repr.emit(&mut b);
        b.extend_from_slice(payload);
        router.route_local(now, ingress, &b, out);
        self.scratch = b;
    }
}

/// The sender and UDP payload of `frame` if it is an unfragmented IPv4 UDP
/// datagram to `me:2152` in a frame to `mac` with a valid IP checksum and a
/// UDP length that fits the packet.
fn udp_to_gtpu_port(frame: &[u8], mac: MacAddr, me: Ipv4Addr) -> Option<(Ipv4Addr, &[u8])> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.dst() != mac || eth.ethertype() != EtherType::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(&frame[ethernet::HEADER_LEN..]).ok()?;
    if ip.dst() != me
        || ip.protocol() != protocol::UDP
        || ip.more_frags()
        || ip.frag_offset() != 0
        || !ip.verify_checksum()
    {
        return None;
    }
    let src = ip.src();
    let hl = ip.header_len();
    let udp = &frame[ethernet::HEADER_LEN + hl..ethernet::HEADER_LEN + ip.total_len()];
    if udp.len() < UDP_LEN || u16::from_be_bytes([udp[2], udp[3]]) != gtpu::PORT {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    // A UDP length outside the packet leaves an empty payload, which the
    // GTP-U check then counts as malformed.
    let payload = udp.get(UDP_LEN..len).unwrap_or(&[]);
    Some((src, payload))
}

/// The T-PDU as an IPv4 packet, or the drop reason: the lab's bearers carry
/// IPv4 only [TS 29.281 § 5.1: the T-PDU is the user's packet].
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
