//! Per-port counters and the reasons a frame is dropped.
//!
//! The driver (real or simulated) counts every frame in and out and every
//! drop the element reports, so no element keeps its own rx/tx bookkeeping.

use crate::{Outbox, PortId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;

macro_rules! drop_reasons {
    ($($(#[doc = $doc:literal])* $name:ident = $text:literal,)*) => {
        /// Why an element dropped a frame. Each is counted per port and shown
        /// by `d11 status` under its name.
        #[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
        pub enum DropReason { $($(#[doc = $doc])* $name,)* }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name,)*];
            /// The counter name.
            pub fn name(self) -> &'static str {
                match self { $(DropReason::$name => $text,)* }
            }
        }
    };
}

drop_reasons! {
    /// Shorter than the headers it claims to carry.
    Truncated = "truncated",
    /// A header field is impossible (version, lengths, flags).
    Malformed = "malformed",
    /// The IPv4 header checksum is wrong.
    BadChecksum = "bad_checksum",
    /// Larger than the port's MTU allows.
    Oversize = "oversize",
    /// Unicast to a MAC address that is not ours.
    NotForUs = "not_for_us",
    /// A group MAC address as the source [IEEE 802.1Q § 8.6.2].
    SrcMacMulticast = "src_mac_multicast",
    /// An EtherType this element does not handle (IPv6, VLAN, …).
    UnsupportedEtherType = "unsupported_ethertype",
    /// Addressed to the element with a protocol or message it does not answer.
    UnsupportedProtocol = "unsupported_protocol",
    /// A source address that must never appear on a wire [RFC 1812 § 5.3.7].
    Martian = "martian_source",
    /// TTL reached zero; a time exceeded was sent when allowed.
    TtlExpired = "ttl_expired",
    /// No route to the destination; a net unreachable was sent when allowed.
    NoRoute = "no_route",
    /// The next hop did not answer ARP; a host unreachable was sent when allowed.
    ArpTimeout = "arp_timeout",
    /// Too many packets already wait for this next hop's ARP answer.
    ArpQueueFull = "arp_queue_full",
    /// DF set and too big for the next wire; fragmentation needed was sent.
    NeedsFragmentation = "needs_fragmentation",
    /// A datagram for one of the element's own UDP sockets found its queue full.
    SocketFull = "socket_full",
    /// A switch received a frame for the port it came from.
    SameSegment = "same_segment",
    /// A port that does not exist (a configuration or driver error).
    NoSuchPort = "no_such_port",
    /// Arrived at a NAT from outside with no entry and no DNAT rule [RFC 4787 § 5, REQ-8].
    NatUnsolicited = "nat_unsolicited",
    /// A new NAT flow found every port of its public address in use.
    NatPortsExhausted = "nat_ports_exhausted",
    /// A new NAT flow found the conntrack table at its bound.
    NatTableFull = "nat_table_full",
    /// A protocol, ICMP message or fragment the NAT cannot translate.
    NatUntranslatable = "nat_untranslatable",
    /// GTP-U that fails the header checks of 3GPP TS 29.281 § 5.1 (lengths, version, extension chain).
    GtpuMalformed = "gtpu_malformed",
    /// A GTP-U message type or a must-comprehend extension header this endpoint does not handle [TS 29.281 § 5.2.1].
    GtpuUnsupported = "gtpu_unsupported",
    /// A G-PDU for a TEID with no bearer; an Error Indication was sent [TS 29.281 § 7.3.1].
    GtpuUnknownTeid = "gtpu_unknown_teid",
    /// A T-PDU that is not an IPv4 packet (the lab's bearers are IPv4).
    TpduNotIpv4 = "tpdu_not_ipv4",
    /// A packet for a UE address, or from a UE, with no bearer.
    NoBearer = "no_bearer",
    /// UDP to port 4789 shorter than the VXLAN header, or with the I flag clear [RFC 7348 § 5].
    VxlanMalformed = "vxlan_malformed",
    /// VXLAN with a VNI this VTEP has no port in [RFC 7348 § 4.1].
    VxlanUnknownVni = "vxlan_unknown_vni",
    /// VXLAN whose inner frame is shorter than an Ethernet header.
    VxlanInnerTruncated = "vxlan_inner_truncated",
    /// A VPC address no VM holds (the controller placed none there); a host unreachable was sent when allowed.
    UnknownStation = "unknown_station",
    /// ESP shorter than its header, IV, trailer and ICV, or not 4-byte aligned [RFC 4303 § 2].
    EspTruncated = "esp_truncated",
    /// ESP with an SPI no inbound SA of this gateway has [RFC 4303 § 3.4.2].
    EspUnknownSpi = "esp_unknown_spi",
    /// ESP whose sequence number was already received [RFC 4303 § 3.4.3].
    EspReplayed = "esp_replayed",
    /// ESP with a sequence number left of the anti-replay window [RFC 4303 § 3.4.3].
    EspOutsideWindow = "esp_outside_window",
    /// ESP whose ICV does not verify: changed on the way, or another key [RFC 4303 § 3.4.4].
    EspBadIcv = "esp_bad_icv",
    /// ESP that verified but whose padding or Next Header is wrong [RFC 4303 § 2.4–2.6].
    EspBadTrailer = "esp_bad_trailer",
    /// A decrypted packet outside the SA's traffic selectors [RFC 4301 § 5.2].
    EspSelectorMismatch = "esp_selector_mismatch",
    /// The outbound SA's sequence number would wrap: rekey needed [RFC 4303 § 3.3.3].
    EspSeqExhausted = "esp_seq_exhausted",
    /// A fragment of an outer ESP packet that never completed, or found the reassembly table full.
    ReassemblyFailed = "reassembly_failed",
    /// SCTP with a verification tag that is not the association's [RFC 9260 § 8.5].
    SctpBadTag = "sctp_bad_verification_tag",
    /// SCTP for no association; answered with ABORT where RFC 9260 § 8.4 says so.
    SctpOutOfTheBlue = "sctp_out_of_the_blue",
    /// A COOKIE ECHO that is not ours, or stale (answered with ERROR Stale Cookie) [RFC 9260 § 5.1.5].
    SctpBadCookie = "sctp_bad_cookie",
    /// SCTP DATA beyond the receive window, not acknowledged [RFC 9260 § 6.2].
    SctpWindowFull = "sctp_receive_window_full",
    /// The port's socket buffer was full: the kernel dropped the frame
    /// before the element could read it (packet(7) `PACKET_STATISTICS`).
    KernelQueueFull = "kernel_queue_full",
    /// Lost by the wire's impairment (`loss` or Gilbert–Elliott; `docs/impair.md`).
    ImpairLoss = "impair_loss",
    /// The wire's impairment delay queue was full.
    ImpairQueue = "impair_queue",
    /// Over the wire's impairment `rate` with its queue full.
    ImpairRate = "impair_rate",
}

/// What happened on one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortCounters {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Frames the driver could not hand to the wire (socket full, device gone).
    pub tx_errors: u64,
    pub drops: [u64; DropReason::ALL.len()],
}

impl Default for PortCounters {
    fn default() -> PortCounters {
        PortCounters {
            rx_frames: 0,
            rx_bytes: 0,
            tx_frames: 0,
            tx_bytes: 0,
            tx_errors: 0,
            drops: [0; DropReason::ALL.len()],
        }
    }
}

impl PortCounters {
    pub fn dropped(&self) -> u64 {
        self.drops.iter().sum()
    }
    pub fn drop_count(&self, r: DropReason) -> u64 {
        self.drops[r as usize]
    }
    /// The drops by reason name, the reasons with none left out.
    pub fn drops_by_name(&self) -> BTreeMap<&'static str, u64> {
        DropReason::ALL
            .iter()
            .filter(|r| self.drops[**r as usize] > 0)
            .map(|r| (r.name(), self.drops[*r as usize]))
            .collect()
    }
}

/// How a port's counters read on the control socket: drops by name, as
/// `d11 status` shows them.
#[derive(Serialize, Deserialize)]
struct Wire {
    rx_frames: u64,
    rx_bytes: u64,
    tx_frames: u64,
    tx_bytes: u64,
    tx_errors: u64,
    #[serde(default)]
    drops: BTreeMap<String, u64>,
}

impl Serialize for PortCounters {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            rx_frames: self.rx_frames,
            rx_bytes: self.rx_bytes,
            tx_frames: self.tx_frames,
            tx_bytes: self.tx_bytes,
            tx_errors: self.tx_errors,
            drops: self
                .drops_by_name()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }
        .serialize(s)
    }
}

/// A reason this build does not know (a newer element's) is ignored.
impl<'de> Deserialize<'de> for PortCounters {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        let mut c = PortCounters {
            rx_frames: w.rx_frames,
            rx_bytes: w.rx_bytes,
            tx_frames: w.tx_frames,
            tx_bytes: w.tx_bytes,
            tx_errors: w.tx_errors,
            ..PortCounters::default()
        };
        for (name, n) in w.drops {
            if let Some(r) = DropReason::ALL.iter().find(|r| r.name() == name) {
                c.drops[*r as usize] = n;
            }
        }
        Ok(c)
    }
}

/// Counters for every port of one element.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub ports: Vec<PortCounters>,
}

impl Counters {
    pub fn new(ports: usize) -> Counters {
        Counters {
            ports: vec![PortCounters::default(); ports],
        }
    }
    pub fn rx(&mut self, port: PortId, len: usize) {
        if let Some(c) = self.ports.get_mut(port.index()) {
            c.rx_frames += 1;
            c.rx_bytes += len as u64;
        }
    }
    pub fn tx(&mut self, port: PortId, len: usize) {
        if let Some(c) = self.ports.get_mut(port.index()) {
            c.tx_frames += 1;
            c.tx_bytes += len as u64;
        }
    }
    pub fn tx_error(&mut self, port: PortId) {
        if let Some(c) = self.ports.get_mut(port.index()) {
            c.tx_errors += 1;
        }
    }
    /// Counts the drops an element reported in `out`.
    pub fn record_drops(&mut self, out: &Outbox) {
        for (p, r) in out.drops() {
            if let Some(c) = self.ports.get_mut(p.index()) {
                c.drops[*r as usize] += 1;
            }
        }
    }
    /// Each port's counters with its name, in port order.
    pub fn named(&self, names: &[String]) -> Vec<(String, PortCounters)> {
        self.ports
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let name = names.get(i).cloned().unwrap_or_else(|| format!("port{i}"));
                (name, c.clone())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_counted_per_port_and_named_in_json() {
        let mut c = Counters::new(2);
        let mut o = Outbox::new();
        o.drop_frame(PortId(1), DropReason::Truncated);
        o.drop_frame(PortId(1), DropReason::Truncated);
        o.drop_frame(PortId(7), DropReason::Truncated); // unknown port: ignored, no panic
        c.record_drops(&o);
        c.rx(PortId(0), 60);
        assert_eq!(c.ports[1].drop_count(DropReason::Truncated), 2);
        let named = c.named(&["a".into(), "b".into()]);
        let j = serde_json::to_value(&named[1].1).unwrap();
        assert_eq!(j["drops"]["truncated"], 2);
        assert_eq!(named[0].0, "a");
        assert_eq!(named[0].1.rx_bytes, 60);
        let back: PortCounters = serde_json::from_value(j).unwrap();
        assert_eq!(back, named[1].1);
    }
}
