//! `d11 demo`'s chapter 3 told from the capture `d11 up --capture` made of
//! the lab's first moments (docs/attach.md): the phone's attach as the
//! wires carried it, S1AP on S1-MME (SCTP DATA, PPID 18) with the NAS
//! inside, Diameter on S6a (TCP 3868), GTPv2-C on S11 and S5-C (UDP
//! 2123), one line a message, from the Attach Request that succeeded to
//! its Attach Complete [TS 23.401 § 5.3.2.1, Figure 5.3.2.1-1].

use d11_lab::trace::Frame;
use d11_wire::diameter::{message_len, DiameterPacket};
use d11_wire::gtpv2c::GtpcPacket;
use d11_wire::ipv4::protocol;
use d11_wire::nas::{EmmMessage, EsmMessage, Pdu};
use d11_wire::s1ap::{self, ie, Kind, S1apPdu};
use d11_wire::sctp::{ChunkRepr, SctpPacket};
use d11_wire::udp::UdpPacket;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;
use std::net::Ipv4Addr;

/// The wires of the attach's signalling, each by its two ends (the
/// capture holds one of them).
const WIRES: [[&str; 2]; 4] = [
    ["enb:s1mme", "mme:s1mme"],
    ["mme:s6a", "hss:eth0"],
    ["mme:s11", "sgw:s11"],
    ["sgw:s5", "pgw:s5"],
];

/// One signalling message seen on a wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    pub ts_ns: u64,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub line: String,
    /// The EMM message type of the NAS inside, if any.
    pub emm: Option<u8>,
}

/// The attach's messages on its four wires, in time order; SCTP and TCP
/// retransmissions counted once.
pub(crate) fn messages(frames: &[Frame]) -> Vec<Seen> {
    // One end of each wire: the first that appears in the capture.
    let labels: HashSet<&str> = WIRES
        .iter()
        .filter_map(|ends| {
            ends.iter()
                .copied()
                .find(|e| frames.iter().any(|f| f.wire == *e))
        })
        .collect();
    let mut seen_tsn = HashSet::new();
    let mut seen_seq = HashSet::new();
    let mut out = Vec::new();
    for f in frames.iter().filter(|f| labels.contains(f.wire.as_str())) {
        let Some(ip) = f.ipv4() else {
            continue;
        };
        let (src, dst) = (ip.src(), ip.dst());
        let mut push = |line: String, emm: Option<u8>| {
            out.push(Seen {
                ts_ns: f.ts_ns,
                src,
                dst,
                line,
                emm,
            })
        };
        match ip.protocol() {
            protocol::SCTP => {
                let Ok(p) = SctpPacket::new_checked(ip.payload()) else {
                    continue;
                };
                for c in p.chunks().flatten() {
                    let Ok(ChunkRepr::Data(d)) = ChunkRepr::parse(c) else {
                        continue;
                    };
                    if d.ppid != s1ap::PPID || !seen_tsn.insert((src, d.tsn)) {
                        continue;
                    }
                    if let Some((line, emm)) = describe_s1ap(d.payload) {
                        push(line, emm);
                    }
                }
            }
            protocol::TCP => {
                let t = ip.payload();
                if t.len() < 20 {
                    continue;
                }
                let offset = usize::from(t[12] >> 4) * 4;
                let seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
                let Some(mut data) = t.get(offset..).filter(|d| !d.is_empty()) else {
                    continue;
                };
                if !seen_seq.insert((src, seq)) {
                    continue;
                }
                // The messages of one segment, each whole (the lab's are
                // small: one segment holds them).
                while let Some(Ok(len)) = message_len(data) {
                    let Some(m) = data.get(..len).filter(|_| len > 0) else {
                        break;
                    };
                    if let Ok(m) = DiameterPacket::new_checked(m) {
                        if let Some(line) = describe_diameter(&m) {
                            push(line, None);
                        }
                    }
                    data = &data[len..];
                }
            }
            protocol::UDP => {
                let Ok(u) = UdpPacket::new_checked(ip.payload()) else {
                    continue;
                };
                if u.src_port() != 2123 && u.dst_port() != 2123 {
                    continue;
                }
                let Ok(g) = GtpcPacket::new_checked(u.payload()) else {
                    continue;
                };
                if let Some(name) = gtpc_name(g.msg_type()) {
                    push(format!("GTPv2-C {name}"), None);
                }
            }
            _ => {}
        }
    }
    out.sort_by_key(|m| m.ts_ns);
    out
}

/// An S1AP message and the EMM message of the NAS inside it.
fn describe_s1ap(b: &[u8]) -> Option<(String, Option<u8>)> {
    let pdu = S1apPdu::parse(b).ok()?;
    let name = match (pdu.kind, pdu.procedure) {
        (Kind::Initiating, s1ap::proc::INITIAL_UE_MESSAGE) => "Initial UE Message",
        (Kind::Initiating, s1ap::proc::UPLINK_NAS_TRANSPORT) => "Uplink NAS Transport",
        (Kind::Initiating, s1ap::proc::DOWNLINK_NAS_TRANSPORT) => "Downlink NAS Transport",
        (Kind::Initiating, s1ap::proc::INITIAL_CONTEXT_SETUP) => "Initial Context Setup Request",
        (Kind::Successful, s1ap::proc::INITIAL_CONTEXT_SETUP) => "Initial Context Setup Response",
        (Kind::Initiating, s1ap::proc::UE_CONTEXT_RELEASE) => "UE Context Release Command",
        (Kind::Successful, s1ap::proc::UE_CONTEXT_RELEASE) => "UE Context Release Complete",
        (Kind::Initiating, s1ap::proc::UE_CONTEXT_RELEASE_REQUEST) => "UE Context Release Request",
        _ => return None,
    };
    // The NAS PDU: an IE of its own, or inside the E-RAB of Initial
    // Context Setup (the Attach Accept) [TS 36.413 § 9.1.4.1].
    let erab_nas = pdu
        .ie(s1ap::id::E_RAB_TO_BE_SETUP_LIST_CTXT_SU_REQ)
        .and_then(|v| ie::erab_to_setup_list(v).ok())
        .and_then(|l| l.into_iter().find_map(|e| e.nas));
    let message = pdu
        .ie(s1ap::id::NAS_PDU)
        .and_then(|v| ie::nas_pdu(v).ok())
        .or(erab_nas.as_deref())
        .and_then(|n| match Pdu::parse(n).ok()? {
            Pdu::Plain(m) => Some(m),
            Pdu::Protected { message, .. } => Some(message),
        });
    let nas = message.and_then(|m| m.get(1).copied());
    let line = match nas.and_then(emm_name) {
        Some(n) => format!(
            "S1AP {name}: NAS {n}{}",
            message.map_or(String::new(), bearer)
        ),
        None => format!("S1AP {name}"),
    };
    Some((line, nas))
}

/// What an Attach Accept gives the phone: the default bearer's address
/// and the DNS servers of its PCO [TS 24.301 § 8.3.6], as " (ADDR, DNS
/// A)"; empty for any other message.
fn bearer(emm: &[u8]) -> String {
    let Ok(EmmMessage::AttachAccept { esm, .. }) = EmmMessage::parse(emm) else {
        return String::new();
    };
    let Ok(EsmMessage::ActivateDefaultBearerRequest {
        pdn_address, pco, ..
    }) = EsmMessage::parse(&esm)
    else {
        return String::new();
    };
    let dns: Vec<String> = (pco.iter().flat_map(|p| p.dns_servers()))
        .map(|a| a.to_string())
        .collect();
    match dns.is_empty() {
        true => format!(" ({pdn_address})"),
        false => format!(" ({pdn_address}, DNS {})", dns.join(" ")),
    }
}

/// The EMM messages of an attach and a detach [TS 24.301 § 9.8].
fn emm_name(ty: u8) -> Option<&'static str> {
    Some(match ty {
        0x41 => "Attach Request",
        0x42 => "Attach Accept",
        0x43 => "Attach Complete",
        0x44 => "Attach Reject",
        0x45 => "Detach Request",
        0x46 => "Detach Accept",
        0x52 => "Authentication Request",
        0x53 => "Authentication Response",
        0x54 => "Authentication Reject",
        0x5c => "Authentication Failure",
        0x5d => "Security Mode Command",
        0x5e => "Security Mode Complete",
        _ => return None,
    })
}

/// The S6a commands of an attach [TS 29.272 § 7.2]; the peer's own
/// (CER, DWR) are left out.
fn describe_diameter(m: &DiameterPacket<&[u8]>) -> Option<String> {
    let (req, ans) = match m.command_code() {
        318 => (
            "Authentication-Information-Request (AIR)",
            "Authentication-Information-Answer (AIA)",
        ),
        316 => (
            "Update-Location-Request (ULR)",
            "Update-Location-Answer (ULA)",
        ),
        _ => return None,
    };
    Some(format!(
        "Diameter {}",
        if m.is_request() { req } else { ans }
    ))
}

/// GTPv2-C messages of a session [TS 29.274 Table 6.1-1]; Echo left out.
fn gtpc_name(ty: u8) -> Option<&'static str> {
    Some(match ty {
        32 => "Create Session Request",
        33 => "Create Session Response",
        34 => "Modify Bearer Request",
        35 => "Modify Bearer Response",
        36 => "Delete Session Request",
        37 => "Delete Session Response",
        _ => return None,
    })
}

/// The attach that succeeded: from its Attach Request to the Attach
/// Complete, each message one line with its time from the capture's
/// start and the nodes at its ends.
pub(crate) fn tell(
    seen: &[Seen],
    start_ns: u64,
    names: &BTreeMap<Ipv4Addr, String>,
    file: &str,
) -> String {
    let mut s = String::new();
    let Some(done) = seen.iter().position(|m| m.emm == Some(0x43)) else {
        let _ = writeln!(s, "  (no Attach Complete on S1-MME in {file})");
        return s;
    };
    let from = seen[..done]
        .iter()
        .rposition(|m| m.emm == Some(0x41))
        .unwrap_or(0);
    let earlier = seen[..from].iter().filter(|m| m.emm == Some(0x41)).count();
    let name = |a: Ipv4Addr| names.get(&a).cloned().unwrap_or_else(|| a.to_string());
    let _ = writeln!(
        s,
        "The phone's attach as the wires carried it (S1-MME, S6a, S11, S5-C in {file}){}:",
        if earlier > 0 {
            format!(
                "; {earlier} Attach Request{} before it (the mme not yet at the hss) got Attach Reject #17",
                if earlier == 1 { "" } else { "s" }
            )
        } else {
            String::new()
        }
    );
    for m in &seen[from..=done] {
        let _ = writeln!(
            s,
            "  +{:.3} s  {:>4} → {:<4}  {}",
            m.ts_ns.saturating_sub(start_ns) as f64 / 1e9,
            name(m.src),
            name(m.dst),
            m.line
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(ms: u64, src: [u8; 4], dst: [u8; 4], line: &str, emm: Option<u8>) -> Seen {
        Seen {
            ts_ns: ms * 1_000_000,
            src: src.into(),
            dst: dst.into(),
            line: line.into(),
            emm,
        }
    }

    #[test]
    fn the_attach_that_succeeded_is_told_from_its_request_to_its_complete() {
        let (enb, mme, hss) = ([172, 16, 3, 1], [172, 16, 3, 2], [172, 16, 5, 2]);
        let s6a = [172, 16, 5, 1];
        let v = vec![
            seen(
                10,
                enb,
                mme,
                "S1AP Initial UE Message: NAS Attach Request",
                Some(0x41),
            ),
            seen(
                11,
                mme,
                enb,
                "S1AP Downlink NAS Transport: NAS Attach Reject",
                Some(0x44),
            ),
            seen(
                20,
                enb,
                mme,
                "S1AP Initial UE Message: NAS Attach Request",
                Some(0x41),
            ),
            seen(
                21,
                s6a,
                hss,
                "Diameter Authentication-Information-Request (AIR)",
                None,
            ),
            seen(
                30,
                enb,
                mme,
                "S1AP Uplink NAS Transport: NAS Attach Complete",
                Some(0x43),
            ),
            seen(31, mme, enb, "GTPv2-C Modify Bearer Request", None),
        ];
        let names: BTreeMap<Ipv4Addr, String> =
            [(enb, "enb"), (mme, "mme"), (hss, "hss"), (s6a, "mme")]
                .into_iter()
                .map(|(a, n)| (Ipv4Addr::from(a), n.to_string()))
                .collect();
        let t = tell(&v, 0, &names, "up.pcapng");
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].contains("1 Attach Request before it"), "{t}");
        assert_eq!(lines.len(), 4, "{t}");
        assert!(
            lines[1].contains("+0.020 s   enb → mme   S1AP Initial UE Message: NAS Attach Request"),
            "{t}"
        );
        assert!(
            lines[2].contains("mme → hss   Diameter Authentication-Information-Request (AIR)"),
            "{t}"
        );
        assert!(lines[3].contains("NAS Attach Complete"), "{t}");
        assert!(tell(&v[..2], 0, &names, "up.pcapng").contains("no Attach Complete"));
    }

    #[test]
    fn s1ap_and_its_nas_read_as_one_line() {
        // An Uplink NAS Transport with a plain Attach Request (the enb's
        // own encoder builds it as the lab sends it).
        let nas = [0x07, 0x41, 0x71, 0x08, 0x09, 0x10, 0x10, 0, 0, 0, 0, 0x10];
        let pdu = S1apPdu {
            kind: Kind::Initiating,
            procedure: s1ap::proc::UPLINK_NAS_TRANSPORT,
            criticality: s1ap::Criticality::Ignore,
            ies: s1ap::ProtocolIe::ue_ids(1, 1, s1ap::Criticality::Reject)
                .into_iter()
                .chain([s1ap::ProtocolIe {
                    id: s1ap::id::NAS_PDU,
                    criticality: s1ap::Criticality::Reject,
                    value: ie::nas_pdu_value(&nas),
                }])
                .collect(),
        };
        let (line, emm) = describe_s1ap(&pdu.to_vec()).expect("an S1AP message");
        assert_eq!(line, "S1AP Uplink NAS Transport: NAS Attach Request");
        assert_eq!(emm, Some(0x41));
        assert_eq!(describe_s1ap(&[0xff; 3]), None);
    }
}
