//! The bearers of the mobile core: which TEIDs carry which UE's packets.
//!
//! Read 3GPP TS 23.401 § 4.7.2 (the EPS bearer: an S1 bearer eNodeB–SGW and
//! an S5 bearer SGW–PGW, each a pair of GTP-U tunnels identified by the
//! receiver's TEID) and TS 29.281 § 5.1 (the TEID "unambiguously identifies a
//! tunnel endpoint in the receiving GTP-U protocol entity").
//!
//! Today the topology fills the table; the attach control plane (MME, HSS,
//! GTPv2-C) will drive the same [`Bearers::add`] / [`Bearers::remove`].

use d11_core::hash::FastMap;
use d11_wire::gtpu::Teid;
use std::net::Ipv4Addr;

/// One default bearer: the UE, its address and the four tunnel endpoints.
/// Each TEID is chosen by the element that receives on it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bearer {
    /// The subscriber (15 digits).
    pub imsi: String,
    /// The address the PGW gave the UE.
    pub ue_ip: Ipv4Addr,
    /// S1-U downlink: the eNodeB receives on it.
    pub enb_teid: Teid,
    /// S1-U uplink: the SGW receives on it from the eNodeB.
    pub sgw_s1u_teid: Teid,
    /// S5 downlink: the SGW receives on it from the PGW.
    pub sgw_s5_teid: Teid,
    /// S5 uplink: the PGW receives on it.
    pub pgw_teid: Teid,
}

/// Why a bearer cannot be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    #[error("IMSI {0} already has a bearer")]
    DuplicateImsi(String),
    #[error("UE address {0} already has a bearer")]
    DuplicateUeIp(Ipv4Addr),
    #[error("TEID {0} is already in use on this element")]
    DuplicateTeid(Teid),
    #[error("TEID 0 is reserved for path management messages")]
    ZeroTeid,
}

/// Which of a bearer's TEIDs an element receives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receiver {
    /// The eNodeB: `enb_teid`.
    Enb,
    /// The SGW: `sgw_s1u_teid` and `sgw_s5_teid`.
    Sgw,
    /// The PGW: `pgw_teid`.
    Pgw,
}

impl Receiver {
    fn teids(self, b: &Bearer) -> Vec<Teid> {
        match self {
            Receiver::Enb => vec![b.enb_teid],
            Receiver::Sgw => vec![b.sgw_s1u_teid, b.sgw_s5_teid],
            Receiver::Pgw => vec![b.pgw_teid],
        }
    }
}

/// Many bearers in one line of configuration (`config.bearer_ranges`):
/// `count` bearers, the first one as written, each next one with its IMSI,
/// UE address and every TEID one higher, so 10,000 simulated phones
/// (`d11 load`) need no 10,000-line topology.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BearerRange {
    /// How many bearers (1 ..= [`BearerRange::MAX_COUNT`]).
    pub count: u32,
    /// The first bearer's IMSI (15 digits).
    pub imsi: String,
    pub ue_ip: Ipv4Addr,
    pub enb_teid: Teid,
    pub sgw_s1u_teid: Teid,
    pub sgw_s5_teid: Teid,
    pub pgw_teid: Teid,
}

/// Why a bearer range cannot be expanded; the field it is about comes
/// first, for the caller's key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("count: expected 1 ..= {max}, got {0}", max = BearerRange::MAX_COUNT)]
    Count(u32),
    #[error("imsi: expected 15 digits whose last bearer's IMSI still has 15, got {0:?}")]
    Imsi(String),
    #[error("ue_ip: {0} + count passes 255.255.255.255")]
    UeIp(Ipv4Addr),
    #[error("{0}: expected a first TEID > 0 with first + count - 1 <= 0xffffffff")]
    Teid(&'static str),
}

/// Why a range's bearers could not all be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BearerRangeError {
    #[error("{0}")]
    Range(RangeError),
    #[error("{0}")]
    Bearer(BearerError),
}

impl BearerRange {
    /// The most bearers one range may hold: a /16 UE pool's worth.
    pub const MAX_COUNT: u32 = 65_534;

    /// Checks the range, then yields its bearers in order.
    pub fn expand(&self) -> Result<impl Iterator<Item = Bearer> + '_, RangeError> {
        let n = self.count;
        if n == 0 || n > Self::MAX_COUNT {
            return Err(RangeError::Count(n));
        }
        let imsi0: u64 = match self.imsi.parse() {
            Ok(v) if self.imsi.len() == 15 && self.imsi.bytes().all(|b| b.is_ascii_digit()) => v,
            _ => return Err(RangeError::Imsi(self.imsi.clone())),
        };
        if imsi0 + u64::from(n - 1) > 999_999_999_999_999 {
            return Err(RangeError::Imsi(self.imsi.clone()));
        }
        let ip0 = u32::from(self.ue_ip);
        if ip0.checked_add(n - 1).is_none() {
            return Err(RangeError::UeIp(self.ue_ip));
        }
        for (name, t) in [
            ("enb_teid", self.enb_teid),
            ("sgw_s1u_teid", self.sgw_s1u_teid),
            ("sgw_s5_teid", self.sgw_s5_teid),
            ("pgw_teid", self.pgw_teid),
        ] {
            if t.0 == 0 || t.0.checked_add(n - 1).is_none() {
                return Err(RangeError::Teid(name));
            }
        }
        Ok((0..n).map(move |i| Bearer {
            imsi: format!("{:015}", imsi0 + u64::from(i)),
            ue_ip: Ipv4Addr::from(ip0 + i),
            enb_teid: Teid(self.enb_teid.0 + i),
            sgw_s1u_teid: Teid(self.sgw_s1u_teid.0 + i),
            sgw_s5_teid: Teid(self.sgw_s5_teid.0 + i),
            pgw_teid: Teid(self.pgw_teid.0 + i),
        }))
    }
}

/// The IMSI as a number tagged with its length, so "001" and "1" differ:
/// the key of the IMSI index (8 bytes, not a second copy of the string).
fn imsi_key(imsi: &str) -> u64 {
    let mut h: u64 = imsi.len() as u64;
    if imsi.len() <= 16 && imsi.bytes().all(|b| b.is_ascii_digit()) {
        let v: u64 = imsi.parse().unwrap_or(0);
        return v | (h << 56);
    }
    // Not digits (a hand-written test IMSI): an FNV-1a hash with the top
    // bit set; a clash only makes `add` compare the strings.
    for b in imsi.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h | (1 << 63)
}

/// The bearer table of one element, indexed by the TEIDs it receives on,
/// by UE address and by IMSI. Adding and finding are hash lookups, so the
/// topology's 10,000-bearer ranges load in milliseconds; per bearer it
/// holds the `Bearer` (48 bytes and the IMSI's 15-byte string) and three or
/// four index slots of 16 bytes.
#[derive(Debug, Clone)]
pub struct Bearers {
    receiver: Receiver,
    bearers: Vec<Bearer>,
    by_teid: FastMap<Teid, u32>,
    /// Keyed by the address as a number: `FastHasher` hashes an
    /// `Ipv4Addr` as its bytes, the last octet in the high bits of the
    /// word, which leaves the bucket bits equal for a whole /24 (10,000
    /// sequential UEs took 1 s to add); a `u32` varies in the low bits.
    by_ue_ip: FastMap<u32, u32>,
    by_imsi: FastMap<u64, u32>,
}

impl Bearers {
    pub fn new(receiver: Receiver) -> Bearers {
        Bearers {
            receiver,
            bearers: Vec::new(),
            by_teid: FastMap::default(),
            by_ue_ip: FastMap::default(),
            by_imsi: FastMap::default(),
        }
    }

    /// Room for `n` more bearers without growing.
    pub fn reserve(&mut self, n: usize) {
        self.bearers.reserve(n);
        let per = if self.receiver == Receiver::Sgw { 2 } else { 1 };
        self.by_teid.reserve(n * per);
        self.by_ue_ip.reserve(n);
        self.by_imsi.reserve(n);
    }

    /// Adds a bearer; every key it brings must be new.
    pub fn add(&mut self, b: Bearer) -> Result<(), BearerError> {
        self.insert(b, true)
    }

    /// Adds every bearer of a range, logging one line for the range, not
    /// one per bearer; stops at the first that clashes.
    pub fn add_range(&mut self, r: &BearerRange) -> Result<(), BearerRangeError> {
        let bearers = r.expand().map_err(BearerRangeError::Range)?;
        self.reserve(r.count as usize);
        for b in bearers {
            self.insert(b, false).map_err(BearerRangeError::Bearer)?;
        }
        tracing::info!(count = r.count, first_imsi = %r.imsi, first_ue = %r.ue_ip, "bearer range created");
        Ok(())
    }

    fn insert(&mut self, b: Bearer, log: bool) -> Result<(), BearerError> {
        let ik = imsi_key(&b.imsi);
        if let Some(&i) = self.by_imsi.get(&ik) {
            if self.bearers[i as usize].imsi == b.imsi || ik >> 63 == 0 {
                return Err(BearerError::DuplicateImsi(b.imsi));
            }
        }
        if self.by_ue_ip.contains_key(&u32::from(b.ue_ip)) {
            return Err(BearerError::DuplicateUeIp(b.ue_ip));
        }
        let teids = self.receiver.teids(&b);
        for (i, t) in teids.iter().enumerate() {
            if t.0 == 0 {
                return Err(BearerError::ZeroTeid);
            }
            if self.by_teid.contains_key(t) || teids[..i].contains(t) {
                return Err(BearerError::DuplicateTeid(*t));
            }
        }
        if log {
            tracing::info!(imsi = %b.imsi, ue = %b.ue_ip, "bearer created");
        }
        let i = self.bearers.len() as u32;
        for t in teids {
            self.by_teid.insert(t, i);
        }
        self.by_ue_ip.insert(u32::from(b.ue_ip), i);
        self.by_imsi.entry(ik).or_insert(i);
        self.bearers.push(b);
        Ok(())
    }

    /// Adds a bearer, or replaces the one of its IMSI in place (keeping its
    /// place in the report); its other keys must be new or that bearer's.
    pub fn put(&mut self, b: Bearer) -> Result<(), BearerError> {
        let Some(i) = self.slot_of(&b.imsi) else {
            return self.insert(b, true);
        };
        let slot = i as u32;
        if self
            .by_ue_ip
            .get(&u32::from(b.ue_ip))
            .is_some_and(|&j| j != slot)
        {
            return Err(BearerError::DuplicateUeIp(b.ue_ip));
        }
        let teids = self.receiver.teids(&b);
        for (k, t) in teids.iter().enumerate() {
            if t.0 == 0 {
                return Err(BearerError::ZeroTeid);
            }
            if self.by_teid.get(t).is_some_and(|&j| j != slot) || teids[..k].contains(t) {
                return Err(BearerError::DuplicateTeid(*t));
            }
        }
        self.unindex(i);
        tracing::info!(imsi = %b.imsi, ue = %b.ue_ip, "bearer replaced");
        self.bearers[i] = b;
        self.index(i);
        Ok(())
    }

    fn slot_of(&self, imsi: &str) -> Option<usize> {
        let i = *self.by_imsi.get(&imsi_key(imsi))? as usize;
        match self.bearers.get(i) {
            Some(b) if b.imsi == imsi => Some(i),
            _ => self.bearers.iter().position(|b| b.imsi == imsi),
        }
    }

    /// Removes the bearer of `imsi`, returning it.
    pub fn remove(&mut self, imsi: &str) -> Option<Bearer> {
        let i = self.bearers.iter().position(|b| b.imsi == imsi)?;
        self.unindex(i);
        let b = self.bearers.swap_remove(i);
        tracing::info!(imsi = %b.imsi, "bearer deleted");
        if i < self.bearers.len() {
            // The last bearer took the removed one's slot.
            self.index(i);
        }
        Some(b)
    }

    /// Drops the index entries that point at slot `i`.
    fn unindex(&mut self, i: usize) {
        let b = &self.bearers[if i < self.bearers.len() { i } else { return }];
        let slot = i as u32;
        for t in self.receiver.teids(b) {
            self.by_teid.remove(&t);
        }
        self.by_ue_ip.remove(&u32::from(b.ue_ip));
        let k = imsi_key(&b.imsi);
        if self.by_imsi.get(&k) == Some(&slot) {
            self.by_imsi.remove(&k);
        }
    }

    /// Points the index entries of the bearer now in slot `i` at it.
    fn index(&mut self, i: usize) {
        let b = &self.bearers[i];
        for t in self.receiver.teids(b) {
            self.by_teid.insert(t, i as u32);
        }
        self.by_ue_ip.insert(u32::from(b.ue_ip), i as u32);
        self.by_imsi.insert(imsi_key(&b.imsi), i as u32);
    }

    /// The bearer whose receiving TEID on this element is `t`.
    pub fn by_teid(&self, t: Teid) -> Option<&Bearer> {
        self.by_teid
            .get(&t)
            .and_then(|&i| self.bearers.get(i as usize))
    }

    /// The bearer of `imsi`.
    pub fn by_imsi(&self, imsi: &str) -> Option<&Bearer> {
        self.slot_of(imsi).map(|i| &self.bearers[i])
    }

    pub fn by_ue_ip(&self, ip: Ipv4Addr) -> Option<&Bearer> {
        self.by_ue_ip
            .get(&u32::from(ip))
            .and_then(|&i| self.bearers.get(i as usize))
    }

    /// The bearers for an element's report: the first [`Bearers::REPORTED`]
    /// (a JSON value costs about 1 kB a bearer while the report is built,
    /// so 10,000 of them would add 10 MB to every `d11 status`); the report's
    /// `bearers_total` gives the count.
    /// The bearers a report lists: the first [`Bearers::REPORTED`].
    pub fn reported(&self) -> impl Iterator<Item = &Bearer> {
        self.bearers.iter().take(Self::REPORTED)
    }

    /// How many bearers a report lists.
    pub const REPORTED: usize = 256;

    /// Every bearer, for the control socket's `table bearers` (what
    /// `d11 trace` checks a TEID against): the report lists only the first
    /// [`Bearers::REPORTED`].
    pub fn table(&self) -> serde_json::Value {
        d11_core::report_json(&self.bearers)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Bearer> {
        self.bearers.iter()
    }

    pub fn len(&self) -> usize {
        self.bearers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bearers.is_empty()
    }
}

/// Adds each `config.bearer_ranges[i]` to an element's table; an error
/// names the range and, when it is one field's, the field.
pub(crate) fn add_ranges(
    t: &mut Bearers,
    ranges: &[BearerRange],
) -> Result<(), d11_core::ConfigError> {
    for (i, r) in ranges.iter().enumerate() {
        t.add_range(r).map_err(|e| {
            let key = format!("config.bearer_ranges[{i}]");
            match e {
                BearerRangeError::Range(e) => {
                    let msg = e.to_string();
                    let (field, why) = msg.split_once(": ").unwrap_or(("", &msg));
                    d11_core::ConfigError::new(format!("{key}.{field}"), why)
                }
                BearerRangeError::Bearer(e) => d11_core::ConfigError::new(
                    key,
                    format!("{e} (the range overlaps a listed bearer or another range)"),
                ),
            }
        })?;
    }
    Ok(())
}

/// A listed bearer the table refused, as a settings error.
pub(crate) fn bearer_error(e: BearerError) -> d11_core::ConfigError {
    d11_core::ConfigError::new("config.bearers", e.to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn phone() -> Bearer {
        Bearer {
            imsi: "001010000000001".into(),
            ue_ip: Ipv4Addr::new(10, 45, 0, 2),
            enb_teid: Teid(0x100),
            sgw_s1u_teid: Teid(0x200),
            sgw_s5_teid: Teid(0x300),
            pgw_teid: Teid(0x400),
        }
    }

    #[test]
    fn a_bearer_is_found_by_its_receiving_teids_and_ue_address_until_removed() {
        let mut t = Bearers::new(Receiver::Sgw);
        t.add(phone()).unwrap();
        assert_eq!(t.by_teid(Teid(0x200)).unwrap().imsi, "001010000000001");
        assert_eq!(t.by_teid(Teid(0x300)).unwrap().imsi, "001010000000001");
        assert!(
            t.by_teid(Teid(0x100)).is_none(),
            "the eNB's TEID is not the SGW's"
        );
        assert!(t.by_ue_ip(Ipv4Addr::new(10, 45, 0, 2)).is_some());
        assert_eq!(t.remove("001010000000001").unwrap(), phone());
        assert!(t.by_teid(Teid(0x200)).is_none() && t.is_empty());
    }

    #[test]
    fn put_replaces_the_imsis_bearer_in_its_place_and_refuses_another_ones_keys() {
        let mut t = Bearers::new(Receiver::Sgw);
        t.add(phone()).unwrap();
        let other = Bearer {
            imsi: "001010000000002".into(),
            ue_ip: Ipv4Addr::new(10, 45, 0, 3),
            sgw_s1u_teid: Teid(0x201),
            sgw_s5_teid: Teid(0x301),
            ..phone()
        };
        t.put(other.clone()).unwrap();
        let moved = Bearer {
            sgw_s1u_teid: Teid(0x2000),
            ..phone()
        };
        t.put(moved.clone()).unwrap();
        assert_eq!(t.iter().next(), Some(&moved), "in the first place still");
        assert!(t.by_teid(Teid(0x200)).is_none());
        assert_eq!(t.by_teid(Teid(0x2000)), Some(&moved));
        let clash = Bearer {
            sgw_s5_teid: Teid(0x301),
            ..phone()
        };
        assert_eq!(t.put(clash), Err(BearerError::DuplicateTeid(Teid(0x301))));
        assert_eq!(t.by_imsi(&phone().imsi), Some(&moved), "unchanged");
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn clashing_keys_are_refused() {
        let mut t = Bearers::new(Receiver::Sgw);
        t.add(phone()).unwrap();
        assert_eq!(
            t.add(phone()),
            Err(BearerError::DuplicateImsi(phone().imsi))
        );
        let other = Bearer {
            imsi: "001010000000002".into(),
            ue_ip: Ipv4Addr::new(10, 45, 0, 3),
            ..phone()
        };
        assert_eq!(
            t.add(other.clone()),
            Err(BearerError::DuplicateTeid(Teid(0x200)))
        );
        let same_ip = Bearer {
            ue_ip: Ipv4Addr::new(10, 45, 0, 2),
            ..other.clone()
        };
        assert_eq!(
            t.add(same_ip),
            Err(BearerError::DuplicateUeIp(Ipv4Addr::new(10, 45, 0, 2)))
        );
        let zero = Bearer {
            sgw_s1u_teid: Teid(0),
            ..other
        };
        assert_eq!(t.add(zero), Err(BearerError::ZeroTeid));
        assert_eq!(t.len(), 1);
    }

    fn range(count: u32) -> BearerRange {
        BearerRange {
            count,
            imsi: "001010000000002".into(),
            ue_ip: Ipv4Addr::new(10, 45, 0, 3),
            enb_teid: Teid(0x10000),
            sgw_s1u_teid: Teid(0x20000),
            sgw_s5_teid: Teid(0x30000),
            pgw_teid: Teid(0x40000),
        }
    }

    #[test]
    fn a_range_expands_by_incrementing_every_field() {
        let r = range(300);
        let v: Vec<Bearer> = r.expand().unwrap().collect();
        assert_eq!(v.len(), 300);
        assert_eq!(v[0].imsi, "001010000000002");
        assert_eq!(v[0].ue_ip, Ipv4Addr::new(10, 45, 0, 3));
        assert_eq!(v[299].imsi, "001010000000301");
        assert_eq!(v[299].ue_ip, Ipv4Addr::new(10, 45, 1, 46));
        assert_eq!(v[299].enb_teid, Teid(0x10000 + 299));
        assert_eq!(v[299].pgw_teid, Teid(0x40000 + 299));
    }

    #[test]
    fn bad_ranges_name_their_field() {
        assert_eq!(range(0).expand().err(), Some(RangeError::Count(0)));
        assert_eq!(
            range(70_000).expand().err(),
            Some(RangeError::Count(70_000))
        );
        let r = BearerRange {
            imsi: "99999999999999x".into(),
            ..range(2)
        };
        assert!(matches!(r.expand().err(), Some(RangeError::Imsi(_))));
        let r = BearerRange {
            imsi: "999999999999999".into(),
            ..range(2)
        };
        assert!(matches!(r.expand().err(), Some(RangeError::Imsi(_))));
        let r = BearerRange {
            sgw_s5_teid: Teid(0),
            ..range(2)
        };
        assert_eq!(r.expand().err(), Some(RangeError::Teid("sgw_s5_teid")));
        let r = BearerRange {
            pgw_teid: Teid(u32::MAX),
            ..range(2)
        };
        assert_eq!(r.expand().err(), Some(RangeError::Teid("pgw_teid")));
        let r = BearerRange {
            ue_ip: Ipv4Addr::BROADCAST,
            ..range(2)
        };
        assert!(r.expand().err().unwrap().to_string().starts_with("ue_ip"));
    }

    #[test]
    fn ten_thousand_bearers_load_and_are_found_after_a_removal() {
        let mut t = Bearers::new(Receiver::Sgw);
        t.add(phone()).unwrap();
        t.reserve(10_000);
        for b in range(10_000).expand().unwrap() {
            t.add(b).unwrap();
        }
        assert_eq!(t.len(), 10_001);
        // Overlapping the listed bearer is refused.
        let clash = BearerRange {
            sgw_s1u_teid: Teid(0x1ff),
            imsi: "001010000900000".into(),
            ue_ip: Ipv4Addr::new(10, 46, 0, 1),
            enb_teid: Teid(0x900000),
            sgw_s5_teid: Teid(0x900000),
            pgw_teid: Teid(0x900000),
            count: 2,
        };
        let errs: Vec<_> = clash
            .expand()
            .unwrap()
            .filter_map(|b| t.add(b).err())
            .collect();
        assert_eq!(errs, vec![BearerError::DuplicateTeid(Teid(0x200))]);
        t.remove("001010000900000").unwrap();
        // Remove the first bearer: the last one moves into its slot.
        t.remove("001010000000001").unwrap();
        let last = t.by_teid(Teid(0x20000 + 9_999)).unwrap();
        assert_eq!(last.imsi, "001010000010001");
        assert_eq!(t.by_ue_ip(last.ue_ip).unwrap().imsi, last.imsi);
        assert!(t.by_teid(Teid(0x200)).is_none());
        assert_eq!(t.len(), 10_000);
        assert_eq!(
            t.add(phone())
                .map(|_| t.by_teid(Teid(0x300)).unwrap().imsi.clone()),
            Ok("001010000000001".into())
        );
    }

    fn rss_kb() -> u64 {
        let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .unwrap_or(0)
    }

    /// `cargo test -p d11-elements bearer_memory -- --ignored --nocapture`:
    /// what 10,000 bearers cost an SGW's table, and its JSON report.
    #[test]
    #[ignore]
    fn bearer_memory() {
        let before = rss_kb();
        let mut t = Bearers::new(Receiver::Sgw);
        t.add_range(&range(10_000)).unwrap();
        let table = rss_kb();
        let v = serde_json::json!(t.iter().collect::<Vec<_>>());
        let report = rss_kb();
        println!(
            "10,000 bearers: table {} kB ({} B/bearer), report Value {} kB more",
            table - before,
            (table - before) * 1024 / 10_000,
            report - table
        );
        drop(v);
    }
}
