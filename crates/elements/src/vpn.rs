//! The VPN between two regions' VPCs: IPsec ESP in tunnel mode, part of
//! the virtual gateway (`vgw`), which is already each VPC's router.
//!
//! Read RFC 4301 first: § 4.1 (an SA is one direction; a pair carries a
//! bidirectional tunnel), § 4.4.1 and § 5.2 (traffic selectors: what the SA
//! carries, checked on the way out and again after decryption), § 5.1.2.1
//! (tunnel mode's outer header: the gateways' addresses, a fresh TTL, DF
//! copied from the inner header) and § 8.1 (path MTU: the gateway tells the
//! VPC's senders the MTU left once ESP is added, with ICMP fragmentation
//! needed; without DF it fragments the outer packet). Then RFC 4303 (the
//! packet, the sender's counter § 3.3.3, the receiver's order of checks
//! § 3.4: SA lookup, sequence number, ICV, window update) and RFC 4106
//! (AES-GCM), both in `d11_wire::esp`.
//!
//! One SA per direction, keyed statically: `d11 up` writes fresh keys into
//! the lab's run directory and the saved topology (`config.vpn.key_out`,
//! `key_in`). IKEv2 (RFC 7296), which negotiates them in a real network, is
//! out of scope; there is no rekeying, so an SA ends when its 32-bit
//! sequence number would wrap (counted `esp_seq_exhausted`).

use d11_core::{DropReason, Instant};
use d11_wire::esp::{self, EspError, EspPacket, GcmSa, ReplayError, ReplayWindow, Spi};
use d11_wire::ipv4::{Ipv4Packet, Ipv4Repr};
use d11_wire::Ipv4Cidr;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// What a gateway's VPN is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpnConfig {
    /// The other gateway's outer address.
    pub peer: Ipv4Addr,
    /// This VPC's prefix: the selector's local side.
    pub local: Ipv4Cidr,
    /// The other VPC's prefix: the selector's remote side.
    pub remote: Ipv4Cidr,
    pub spi_out: Spi,
    pub spi_in: Spi,
    pub key_out: [u8; esp::KEY_MATERIAL_LEN],
    pub key_in: [u8; esp::KEY_MATERIAL_LEN],
    /// The VPN replaced by plain routing (`config.vpn.clear`).
    pub clear: bool,
}

/// `config.vpn` of a `vgw` node.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VpnSettings {
    /// The other region's gateway (its ext address), the tunnel's far end.
    pub peer: Ipv4Addr,
    /// This VPC's prefix, like "192.168.0.0/16".
    pub local: Ipv4Cidr,
    /// The other VPC's prefix, like "172.20.0.0/16".
    pub remote: Ipv4Cidr,
    /// The SPI of the SA this gateway sends on (the peer's `spi_in`).
    pub spi_out: u32,
    /// The SPI of the SA this gateway receives on (the peer's `spi_out`).
    pub spi_in: u32,
    /// 40 hex digits: the AES-128 key then the salt [RFC 4106 § 8.1].
    /// `d11 up` fills both in; without them (the simulator) a key derived
    /// from the SPI is used, which is no secret.
    #[serde(default)]
    pub key_out: Option<String>,
    #[serde(default)]
    pub key_in: Option<String>,
    /// No ESP: the selected traffic is routed in clear, untranslated, by
    /// the gateway's default route, and the other VPC's packets are taken
    /// from `ext` the same way. The baseline `d11 bench vpn` measures the
    /// tunnel against (the carriers must then route the VPC prefixes,
    /// which no real carrier does: never in a real deployment).
    #[serde(default)]
    pub clear: bool,
}

/// The key material a topology without keys gets for `spi`: derived from
/// the SPI alone, so both ends agree in the simulator. No secret.
pub fn derived_key(spi: u32) -> [u8; esp::KEY_MATERIAL_LEN] {
    let s = spi.to_be_bytes();
    std::array::from_fn(|i| s[i % 4] ^ (0x5a_u8.wrapping_add((i as u8).wrapping_mul(37))))
}

/// 40 hex digits as key material.
pub fn parse_key(hex: &str) -> Option<[u8; esp::KEY_MATERIAL_LEN]> {
    if hex.len() != 2 * esp::KEY_MATERIAL_LEN || !hex.is_ascii() {
        return None;
    }
    let mut k = [0; esp::KEY_MATERIAL_LEN];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(k)
}

/// Key material as 40 hex digits (the form of `config.vpn.key_*` and of
/// Wireshark's `esp_sa` table).
pub fn key_hex(k: &[u8; esp::KEY_MATERIAL_LEN]) -> String {
    k.iter().map(|b| format!("{b:02x}")).collect()
}

impl VpnSettings {
    /// Checked against the gateway's VPC subnets (`gateways`), each error
    /// naming its key below `config.vpn`.
    pub fn config(&self, gateways: &[Ipv4Cidr]) -> Result<VpnConfig, (String, String)> {
        let err = |k: &str, m: String| Err((format!("config.vpn.{k}"), m));
        for g in gateways {
            if !self.local.contains(g.addr()) || g.prefix_len() < self.local.prefix_len() {
                return err(
                    "local",
                    format!("{} does not hold the VPC subnet {g}", self.local),
                );
            }
        }
        if self.local.overlaps(&self.remote) {
            return err(
                "remote",
                format!("{} overlaps the local prefix {}", self.remote, self.local),
            );
        }
        for (k, spi) in [("spi_out", self.spi_out), ("spi_in", self.spi_in)] {
            if !Spi(spi).is_assignable() {
                return err(
                    k,
                    format!("{spi} is reserved: an SPI is 256 or more [RFC 4303 § 2.1]"),
                );
            }
        }
        if self.spi_out == self.spi_in {
            return err(
                "spi_in",
                "the same SPI as spi_out: one SA per direction".into(),
            );
        }
        let key = |k: &str, v: &Option<String>, spi: u32| match v {
            None => Ok(derived_key(spi)),
            Some(h) => parse_key(h).ok_or((
                format!("config.vpn.{k}"),
                "not 40 hex digits (16 bytes of AES key, then 4 of salt)".to_string(),
            )),
        };
        Ok(VpnConfig {
            peer: self.peer,
            local: self.local,
            remote: self.remote,
            spi_out: Spi(self.spi_out),
            spi_in: Spi(self.spi_in),
            key_out: key("key_out", &self.key_out, self.spi_out)?,
            key_in: key("key_in", &self.key_in, self.spi_in)?,
            clear: self.clear,
        })
    }
}

/// One SA as `d11 show GATEWAY sas` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SaRow {
    /// "out" (sealed here) or "in" (opened here).
    pub direction: String,
    /// In hex, as tshark and `ip xfrm` print it.
    pub spi: String,
    /// The outer source and destination.
    pub from: Ipv4Addr,
    pub to: Ipv4Addr,
    /// The selectors: inner source prefix → inner destination prefix.
    pub selector_src: Ipv4Cidr,
    pub selector_dst: Ipv4Cidr,
    pub packets: u64,
    /// Inner bytes carried.
    pub bytes: u64,
    /// Out: the last sequence number sent. In: the highest accepted.
    pub seq: u32,
    /// In: the window's width and how many of its numbers were received.
    pub window: u32,
    pub window_received: u32,
    /// Refusals by counter name (`esp_replayed`, …).
    pub drops: BTreeMap<String, u64>,
}

/// The VPN's totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VpnStats {
    /// Outer packets split because the inner one had no DF and did not fit.
    pub fragmented: u64,
    /// Outer ESP packets put back together from fragments.
    pub reassembled: u64,
    /// Fragmentation needed sent back into the VPC.
    pub frag_needed: u64,
}

#[derive(Debug, Default, Clone)]
struct SaCounters {
    packets: u64,
    bytes: u64,
    drops: BTreeMap<&'static str, u64>,
}

impl SaCounters {
    fn drop(&mut self, r: DropReason) -> DropReason {
        *self.drops.entry(r.name()).or_default() += 1;
        r
    }
}

/// A fragment waiting for the rest of its outer packet.
#[derive(Debug)]
struct Partial {
    src: Ipv4Addr,
    ident: u16,
    since: Instant,
    /// Payload bytes by offset; `total` once the last fragment came.
    parts: BTreeMap<usize, Vec<u8>>,
    total: Option<usize>,
    header: Vec<u8>,
}

/// At most this many outer packets in reassembly at once, each for at most
/// [`REASSEMBLY_TIMEOUT_MS`].
const MAX_PARTIALS: usize = 64;
const REASSEMBLY_TIMEOUT_MS: u64 = 2_000;

/// A gateway's two SAs and what they counted.
#[derive(Debug)]
pub struct Vpn {
    cfg: VpnConfig,
    seal: GcmSa,
    open: GcmSa,
    /// The last sequence number sent; the first is 1 [RFC 4303 § 3.3.3].
    seq_out: u32,
    window: ReplayWindow,
    out_counters: SaCounters,
    in_counters: SaCounters,
    partials: Vec<Partial>,
    pub stats: VpnStats,
    buf: Vec<u8>,
}

/// The largest inner packet that still fits `mtu` once sealed: outer IPv4
/// and ESP's header, IV and ICV, the ciphertext (payload + 2) rounded up to
/// 4 bytes [RFC 4303 § 2.4].
pub fn inner_mtu(mtu: u16) -> u16 {
    let fixed = (20 + esp::HEADER_LEN + esp::IV_LEN + esp::ICV_LEN) as u16;
    (mtu.saturating_sub(fixed) & !3).saturating_sub(2)
}

impl Vpn {
    pub fn new(cfg: VpnConfig) -> Vpn {
        Vpn {
            seal: GcmSa::new(&cfg.key_out),
            open: GcmSa::new(&cfg.key_in),
            cfg,
            seq_out: 0,
            window: ReplayWindow::new(),
            out_counters: SaCounters::default(),
            in_counters: SaCounters::default(),
            partials: Vec::new(),
            stats: VpnStats::default(),
            buf: Vec::new(),
        }
    }

    pub fn config(&self) -> &VpnConfig {
        &self.cfg
    }

    /// Whether the outbound SA carries a packet from `src` to `dst`: VPC
    /// prefix to VPC prefix, nothing else [RFC 4301 § 4.4.1].
    pub fn selects(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.cfg.local.contains(src) && self.cfg.remote.contains(dst)
    }

    /// Appends to `out` the outer packet carrying `inner` from `me` to the
    /// peer: IPv4 (protocol 50, TTL 64, DF copied from the inner header,
    /// `ident`) and ESP sealed with the next sequence number, which is also
    /// the IV (unique under the key, as RFC 4106 § 3.1 requires).
    pub fn seal(
        &mut self,
        me: Ipv4Addr,
        ident: u16,
        inner: &Ipv4Packet<&[u8]>,
        out: &mut Vec<u8>,
    ) -> Result<(), DropReason> {
        let Some(seq) = self.seq_out.checked_add(1) else {
            return Err(self.out_counters.drop(DropReason::EspSeqExhausted));
        };
        self.seq_out = seq;
        let payload = inner.packet();
        let pad = (4 - (payload.len() + 2) % 4) % 4;
        Ipv4Repr {
            src: me,
            dst: self.cfg.peer,
            protocol: esp::PROTOCOL,
            ttl: 64,
            ident,
            dont_frag: inner.dont_frag(),
            payload_len: payload.len() + pad + esp::OVERHEAD,
        }
        .emit(out);
        let iv = u64::from(seq).to_be_bytes();
        (self.seal).seal(self.cfg.spi_out, seq, iv, esp::NEXT_IPV4, payload, out);
        self.out_counters.packets += 1;
        self.out_counters.bytes += payload.len() as u64;
        Ok(())
    }

    /// An outer fragment addressed to the gateway: kept until its packet is
    /// whole [RFC 791 § 3.2 "reassembly"], then returned. Bounded in count
    /// and age; what never completes is counted `reassembly_failed`.
    pub fn reassemble(
        &mut self,
        now: Instant,
        ip: &Ipv4Packet<&[u8]>,
    ) -> Result<Option<Vec<u8>>, DropReason> {
        let (src, ident, off) = (ip.src(), ip.ident(), ip.frag_offset());
        let i = match self
            .partials
            .iter()
            .position(|p| p.src == src && p.ident == ident)
        {
            Some(i) => i,
            None => {
                if self.partials.len() >= MAX_PARTIALS {
                    return Err(DropReason::ReassemblyFailed);
                }
                self.partials.push(Partial {
                    src,
                    ident,
                    since: now,
                    parts: BTreeMap::new(),
                    total: None,
                    header: Vec::new(),
                });
                self.partials.len() - 1
            }
        };
        let p = &mut self.partials[i];
        if off == 0 {
            p.header = ip.header().to_vec();
        }
        if !ip.more_frags() {
            p.total = Some(off + ip.payload().len());
        }
        p.parts.insert(off, ip.payload().to_vec());
        let Some(total) = p.total else {
            return Ok(None);
        };
        let mut have = 0;
        for (o, b) in &p.parts {
            if *o != have {
                return Ok(None);
            }
            have += b.len();
        }
        if have != total || p.header.is_empty() {
            return Ok(None);
        }
        let p = self.partials.swap_remove(i);
        let mut whole = p.header;
        for b in p.parts.into_values() {
            whole.extend_from_slice(&b);
        }
        let len = u16::try_from(whole.len()).map_err(|_| DropReason::Malformed)?;
        whole[2..4].copy_from_slice(&len.to_be_bytes());
        whole[6..8].copy_from_slice(&[0, 0]);
        let mut pkt = Ipv4Packet::new_checked(&mut whole[..]).map_err(|_| DropReason::Malformed)?;
        pkt.fill_checksum();
        self.stats.reassembled += 1;
        Ok(Some(whole))
    }

    /// Forgets fragments older than the reassembly timeout; how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.partials.len();
        self.partials.retain(|p| {
            now.saturating_since(p.since).as_millis() < u128::from(REASSEMBLY_TIMEOUT_MS)
        });
        before - self.partials.len()
    }

    /// When the oldest fragment times out.
    pub fn poll_at(&self) -> Option<Instant> {
        (self.partials.iter())
            .map(|p| p.since + std::time::Duration::from_millis(REASSEMBLY_TIMEOUT_MS))
            .min()
    }

    /// Opens the ESP packet in `outer` (addressed to the gateway, whole) in
    /// RFC 4303 § 3.4's order: SA by SPI, the window's cheap check, the
    /// ICV, the window's update, then the trailer and the selectors. The
    /// inner packet is returned, checked.
    pub fn open(&mut self, outer: &Ipv4Packet<&[u8]>) -> Result<&[u8], DropReason> {
        let esp = match EspPacket::new_checked(outer.payload()) {
            Ok(p) => p,
            Err(_) => return Err(DropReason::EspTruncated),
        };
        if esp.spi() != self.cfg.spi_in || outer.src() != self.cfg.peer {
            return Err(DropReason::EspUnknownSpi);
        }
        let c = &mut self.in_counters;
        if let Err(e) = self.window.check(esp.seq()) {
            return Err(c.drop(match e {
                ReplayError::Replayed => DropReason::EspReplayed,
                ReplayError::OutsideWindow | ReplayError::Zero => DropReason::EspOutsideWindow,
            }));
        }
        let opened = match self.open.open(&esp, &mut self.buf) {
            Ok(o) => o,
            Err(EspError::BadIcv) => return Err(c.drop(DropReason::EspBadIcv)),
            Err(_) => return Err(c.drop(DropReason::EspBadTrailer)),
        };
        // Authenticated: the window moves even if what is inside is refused.
        self.window.accept(esp.seq());
        if opened.next_header != esp::NEXT_IPV4 {
            return Err(c.drop(DropReason::EspBadTrailer));
        }
        let inner = &self.buf[..opened.len];
        let Ok(ip) = d11_core::l3::checked_ipv4(inner) else {
            return Err(c.drop(DropReason::EspBadTrailer));
        };
        if ip.total_len() != inner.len() {
            return Err(c.drop(DropReason::EspBadTrailer));
        }
        if !(self.cfg.remote.contains(ip.src()) && self.cfg.local.contains(ip.dst())) {
            return Err(c.drop(DropReason::EspSelectorMismatch));
        }
        c.packets += 1;
        c.bytes += inner.len() as u64;
        Ok(inner)
    }

    /// Both SAs for the report.
    pub fn sas(&self, me: Ipv4Addr) -> Vec<SaRow> {
        let drops = |c: &SaCounters| {
            (c.drops.iter())
                .map(|(k, v)| ((*k).to_string(), *v))
                .collect()
        };
        vec![
            SaRow {
                direction: "out".into(),
                spi: self.cfg.spi_out.to_string(),
                from: me,
                to: self.cfg.peer,
                selector_src: self.cfg.local,
                selector_dst: self.cfg.remote,
                packets: self.out_counters.packets,
                bytes: self.out_counters.bytes,
                seq: self.seq_out,
                window: 0,
                window_received: 0,
                drops: drops(&self.out_counters),
            },
            SaRow {
                direction: "in".into(),
                spi: self.cfg.spi_in.to_string(),
                from: self.cfg.peer,
                to: me,
                selector_src: self.cfg.remote,
                selector_dst: self.cfg.local,
                packets: self.in_counters.packets,
                bytes: self.in_counters.bytes,
                seq: self.window.top(),
                window: esp::WINDOW,
                window_received: self.window.received_in_window(),
                drops: drops(&self.in_counters),
            },
        ]
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// East's end of the lab's VPN, keys derived from the SPIs.
    pub(crate) fn east(clear: bool) -> VpnSettings {
        VpnSettings {
            peer: ip("198.19.24.2"),
            local: "192.168.0.0/16".parse().unwrap(),
            remote: "172.20.0.0/16".parse().unwrap(),
            spi_out: 0x1001,
            spi_in: 0x2001,
            key_out: None,
            key_in: None,
            clear,
        }
    }

    /// East's and north's ends of the lab's VPN, keys derived from the SPIs.
    fn pair() -> (Vpn, Vpn) {
        let east = east(false);
        let north = VpnSettings {
            peer: ip("203.0.113.2"),
            local: east.remote,
            remote: east.local,
            spi_out: 0x2001,
            spi_in: 0x1001,
            key_out: None,
            key_in: None,
            clear: false,
        };
        let gw = |s: &str| vec![s.parse::<Ipv4Cidr>().unwrap()];
        (
            Vpn::new(east.config(&gw("192.168.1.1/24")).unwrap()),
            Vpn::new(north.config(&gw("172.20.1.1/24")).unwrap()),
        )
    }

    fn inner(len: usize, df: bool) -> Vec<u8> {
        let mut b = vec![];
        Ipv4Repr {
            src: ip("192.168.1.20"),
            dst: ip("172.20.1.20"),
            protocol: 17,
            ttl: 63,
            ident: 9,
            dont_frag: df,
            payload_len: len - 20,
        }
        .emit(&mut b);
        b.resize(len, 0xab);
        b
    }

    fn seal(v: &mut Vpn, pkt: &[u8]) -> Vec<u8> {
        let mut out = vec![];
        let p = Ipv4Packet::new_checked(pkt).unwrap();
        v.seal(ip("203.0.113.2"), 1, &p, &mut out).unwrap();
        out
    }

    fn open(v: &mut Vpn, outer: &[u8]) -> Result<Vec<u8>, DropReason> {
        v.open(&Ipv4Packet::new_checked(outer).unwrap())
            .map(<[u8]>::to_vec)
    }

    #[test]
    fn a_sealed_packet_opens_at_the_peer_once() {
        let (mut e, mut n) = pair();
        let pkt = inner(100, true);
        let outer = seal(&mut e, &pkt);
        let o = Ipv4Packet::new_checked(&outer[..]).unwrap();
        assert_eq!(
            (o.src(), o.dst(), o.protocol()),
            (ip("203.0.113.2"), ip("198.19.24.2"), 50)
        );
        assert!(o.dont_frag(), "DF copied from the inner header");
        assert!(
            !outer.windows(8).any(|w| w == [0xab; 8]),
            "nothing of the inner packet in clear"
        );
        assert_eq!(open(&mut n, &outer), Ok(pkt));
        assert_eq!(open(&mut n, &outer), Err(DropReason::EspReplayed));
        let rows = n.sas(ip("198.19.24.2"));
        assert_eq!(
            (rows[1].packets, rows[1].seq, rows[1].window_received),
            (1, 1, 1)
        );
        assert_eq!(rows[1].drops["esp_replayed"], 1);
        assert_eq!(e.sas(ip("203.0.113.2"))[0].seq, 1);
    }

    #[test]
    fn bit_flips_unknown_spis_strangers_and_old_numbers_are_refused_with_their_reason() {
        let (mut e, mut n) = pair();
        let pkt = inner(60, false);
        let first = seal(&mut e, &pkt);
        let mut flipped = seal(&mut e, &pkt);
        let last = flipped.len() - 20;
        flipped[last] ^= 1;
        assert_eq!(open(&mut n, &flipped), Err(DropReason::EspBadIcv));
        let mut spi = seal(&mut e, &pkt);
        spi[23] ^= 0xff;
        assert_eq!(open(&mut n, &spi), Err(DropReason::EspUnknownSpi));
        let mut stranger = seal(&mut e, &pkt);
        stranger[12] = 10;
        assert_eq!(open(&mut n, &stranger), Err(DropReason::EspUnknownSpi));
        let mut short = first[..40].to_vec();
        short[2..4].copy_from_slice(&40u16.to_be_bytes());
        Ipv4Packet::new_checked(&mut short[..])
            .unwrap()
            .fill_checksum();
        assert_eq!(open(&mut n, &short), Err(DropReason::EspTruncated));
        // The forged ones did not move the window: the good ones still open.
        let later: Vec<_> = (0..200).map(|_| seal(&mut e, &pkt)).collect();
        assert_eq!(open(&mut n, &later[199]), Ok(pkt.clone()));
        assert_eq!(open(&mut n, &first), Err(DropReason::EspOutsideWindow));
        assert_eq!(
            open(&mut n, &later[150]),
            Ok(pkt.clone()),
            "reordered, in the window"
        );
    }

    #[test]
    fn a_packet_outside_the_selectors_is_refused_after_decryption() {
        let (mut e, mut n) = pair();
        let mut pkt = inner(60, false);
        pkt[16..20].copy_from_slice(&[10, 9, 9, 9]);
        Ipv4Packet::new_checked(&mut pkt[..])
            .unwrap()
            .fill_checksum();
        assert!(!e.selects(ip("192.168.1.20"), ip("10.9.9.9")));
        assert!(e.selects(ip("192.168.1.20"), ip("172.20.1.20")));
        let outer = seal(&mut e, &pkt);
        assert_eq!(open(&mut n, &outer), Err(DropReason::EspSelectorMismatch));
    }

    #[test]
    fn the_inner_mtu_of_a_1500_byte_wire_is_1446_and_it_fits_exactly() {
        assert_eq!(inner_mtu(1500), 1446);
        let (mut e, _) = pair();
        assert_eq!(seal(&mut e, &inner(1446, true)).len(), 1500);
        assert_eq!(seal(&mut e, &inner(1447, true)).len(), 1504);
    }

    #[test]
    fn outer_fragments_are_put_back_together_in_any_order_and_stale_ones_expire() {
        let (mut e, mut n) = pair();
        let pkt = inner(1450, false);
        let outer = seal(&mut e, &pkt);
        let p = Ipv4Packet::new_checked(&outer[..]).unwrap();
        let (h, body) = (p.header().to_vec(), p.payload().to_vec());
        let frag = |off: usize, end: usize, more: bool| {
            let mut f = h.clone();
            f.extend_from_slice(&body[off..end]);
            let len = f.len() as u16;
            f[2..4].copy_from_slice(&len.to_be_bytes());
            let fo = (if more { 0x2000 } else { 0 }) | (off / 8) as u16;
            f[6..8].copy_from_slice(&fo.to_be_bytes());
            Ipv4Packet::new_checked(&mut f[..]).unwrap().fill_checksum();
            f
        };
        let a = frag(0, 1480, true);
        let b = frag(1480, body.len(), false);
        let t0 = Instant::from_millis(0);
        let pb = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(n.reassemble(t0, &pb), Ok(None));
        let pa = Ipv4Packet::new_checked(&a[..]).unwrap();
        let whole = n.reassemble(t0, &pa).unwrap().unwrap();
        // The outer packet again, as sent whole (its checksum refilled).
        assert_eq!(whole.len(), outer.len());
        assert_eq!(&whole[20..], &outer[20..]);
        assert_eq!(open(&mut n, &whole), Ok(pkt));
        // Half a packet, then silence: gone after the timeout.
        assert_eq!(n.reassemble(t0, &pa), Ok(None));
        assert_eq!(n.expire(Instant::from_millis(1_999)), 0);
        assert_eq!(n.expire(Instant::from_millis(2_000)), 1);
        assert_eq!(n.poll_at(), None);
    }

    #[test]
    fn settings_name_the_key_at_fault() {
        let s = VpnSettings {
            peer: ip("198.19.24.2"),
            local: "192.168.0.0/16".parse().unwrap(),
            remote: "192.168.128.0/17".parse().unwrap(),
            spi_out: 0x1001,
            spi_in: 0x2001,
            key_out: Some("00".into()),
            key_in: None,
            clear: false,
        };
        let gw = vec!["192.168.1.1/24".parse().unwrap()];
        assert_eq!(s.config(&gw).unwrap_err().0, "config.vpn.remote");
        let s = VpnSettings {
            remote: "172.20.0.0/16".parse().unwrap(),
            ..s
        };
        assert_eq!(s.config(&gw).unwrap_err().0, "config.vpn.key_out");
        let s = VpnSettings {
            key_out: None,
            spi_in: 7,
            ..s
        };
        assert_eq!(s.config(&gw).unwrap_err().0, "config.vpn.spi_in");
        let s = VpnSettings {
            spi_in: 0x1001,
            ..s
        };
        assert_eq!(s.config(&gw).unwrap_err().0, "config.vpn.spi_in");
        let s = VpnSettings {
            spi_in: 0x2001,
            ..s
        };
        let wide = vec!["10.0.0.1/8".parse().unwrap()];
        assert_eq!(s.config(&wide).unwrap_err().0, "config.vpn.local");
        assert!(s.config(&gw).is_ok());
        assert_eq!(parse_key(&key_hex(&[0x5a; 20])), Some([0x5a; 20]));
    }
}
