//! S1AP, the eNodeB–MME signalling over SCTP (port 36412, PPID 18), in
//! ASN.1's aligned PER.
//!
//! Read 3GPP TS 36.413 first: § 9.1 for the messages the lab sends (S1
//! Setup, Initial UE Message, Downlink/Uplink NAS Transport, Initial
//! Context Setup, UE Context Release), § 9.2 for their IEs, § 9.3 for the
//! ASN.1 (every message is a SEQUENCE of protocol IEs, each an id, a
//! criticality and an open-type value). Then ITU-T X.691 for aligned PER:
//! § 10.9 length determinants, § 10.5 constrained whole numbers (a bit
//! field up to a range of 255, one aligned octet at 256, two up to 64K,
//! else a length in octets then the octets), § 16 bit strings and § 17
//! octet strings (aligned beyond 16 bits), § 19/§ 22 extensible sequences
//! and choices (a leading extension bit).
//!
//! [`S1apPdu`] reads and writes the envelope and keeps each IE's value
//! encoded; the functions of [`ie`] read and write the values the lab uses.
//! Extension additions are not used by the lab: an extension bit set where
//! a value is read is refused, so nothing is silently misread.

/// S1AP's SCTP port and payload protocol [TS 36.412 § 7].
pub const PORT: u16 = 36412;
pub const PPID: u32 = 18;

/// Procedure codes [TS 36.413 § 9.3.7].
pub mod proc {
    pub const INITIAL_CONTEXT_SETUP: u8 = 9;
    pub const DOWNLINK_NAS_TRANSPORT: u8 = 11;
    pub const INITIAL_UE_MESSAGE: u8 = 12;
    pub const UPLINK_NAS_TRANSPORT: u8 = 13;
    pub const ERROR_INDICATION: u8 = 15;
    pub const S1_SETUP: u8 = 17;
    pub const UE_CONTEXT_RELEASE_REQUEST: u8 = 18;
    pub const UE_CONTEXT_RELEASE: u8 = 23;
}

/// Protocol IE ids [TS 36.413 § 9.3.7].
pub mod id {
    pub const MME_UE_S1AP_ID: u16 = 0;
    pub const CAUSE: u16 = 2;
    pub const ENB_UE_S1AP_ID: u16 = 8;
    pub const E_RAB_TO_BE_SETUP_LIST_CTXT_SU_REQ: u16 = 24;
    pub const NAS_PDU: u16 = 26;
    pub const E_RAB_SETUP_ITEM_CTXT_SU_RES: u16 = 50;
    pub const E_RAB_SETUP_LIST_CTXT_SU_RES: u16 = 51;
    pub const E_RAB_TO_BE_SETUP_ITEM_CTXT_SU_REQ: u16 = 52;
    pub const GLOBAL_ENB_ID: u16 = 59;
    pub const SUPPORTED_TAS: u16 = 64;
    pub const UE_AGGREGATE_MAXIMUM_BITRATE: u16 = 66;
    pub const TAI: u16 = 67;
    pub const SECURITY_KEY: u16 = 73;
    pub const RELATIVE_MME_CAPACITY: u16 = 87;
    pub const UE_S1AP_IDS: u16 = 99;
    pub const EUTRAN_CGI: u16 = 100;
    pub const SERVED_GUMMEIS: u16 = 105;
    pub const UE_SECURITY_CAPABILITIES: u16 = 107;
    pub const RRC_ESTABLISHMENT_CAUSE: u16 = 134;
    pub const PAGING_DRX: u16 = 137;
}

/// Why bytes are not an S1AP PDU or an IE value the lab reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum S1apError {
    #[error("the encoding ends before its fields")]
    Truncated,
    #[error("an extension addition (not used by the lab)")]
    Extension,
    #[error("a length of 16K or more (fragmented), which the lab never sends")]
    Fragmented,
    #[error("a value outside its ASN.1 constraint")]
    Constraint,
}

/// The three kinds of S1AP-PDU [TS 36.413 § 9.3.2].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Initiating,
    Successful,
    Unsuccessful,
}

/// Criticality [TS 36.413 § 10.3.4]: what a receiver not comprehending the
/// IE or procedure does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Criticality {
    Reject,
    Ignore,
    Notify,
}

impl Criticality {
    fn bits(self) -> u64 {
        match self {
            Criticality::Reject => 0,
            Criticality::Ignore => 1,
            Criticality::Notify => 2,
        }
    }
    fn from_bits(b: u64) -> Result<Criticality, S1apError> {
        match b {
            0 => Ok(Criticality::Reject),
            1 => Ok(Criticality::Ignore),
            2 => Ok(Criticality::Notify),
            _ => Err(S1apError::Constraint),
        }
    }
}

/// One protocol IE, its value still encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolIe {
    pub id: u16,
    pub criticality: Criticality,
    pub value: Vec<u8>,
}

impl ProtocolIe {
    /// The MME UE S1AP ID and eNB UE S1AP ID that open every UE-associated
    /// message [TS 36.413 § 9.2.3.3, § 9.2.3.4].
    pub fn ue_ids(mme_ue_id: u32, enb_ue_id: u32, criticality: Criticality) -> Vec<ProtocolIe> {
        vec![
            ProtocolIe {
                id: id::MME_UE_S1AP_ID,
                criticality,
                value: ie::mme_ue_id_value(mme_ue_id),
            },
            ProtocolIe {
                id: id::ENB_UE_S1AP_ID,
                criticality,
                value: ie::enb_ue_id_value(enb_ue_id),
            },
        ]
    }
}

/// An S1AP PDU: kind, procedure, criticality and the message's IEs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S1apPdu {
    pub kind: Kind,
    pub procedure: u8,
    pub criticality: Criticality,
    pub ies: Vec<ProtocolIe>,
}

impl S1apPdu {
    pub fn parse(b: &[u8]) -> Result<S1apPdu, S1apError> {
        let mut r = per::Reader::new(b);
        if r.bit()? {
            return Err(S1apError::Extension);
        }
        let kind = match r.bits(2)? {
            0 => Kind::Initiating,
            1 => Kind::Successful,
            2 => Kind::Unsuccessful,
            _ => return Err(S1apError::Constraint),
        };
        r.align();
        let procedure = r.bits(8)? as u8;
        let criticality = Criticality::from_bits(r.bits(2)?)?;
        let value = r.open()?;
        let mut v = per::Reader::new(value);
        // The message SEQUENCE's extension bit: additions would follow the
        // IEs, which is all the lab reads.
        v.bit()?;
        v.align();
        let n = v.bits(16)?;
        let mut ies = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let id = v.bits(16)? as u16;
            let criticality = Criticality::from_bits(v.bits(2)?)?;
            ies.push(ProtocolIe {
                id,
                criticality,
                value: v.open()?.to_vec(),
            });
        }
        Ok(S1apPdu {
            kind,
            procedure,
            criticality,
            ies,
        })
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut value = per::Writer::default();
        value.bit(false);
        value.align();
        value.bits(self.ies.len() as u64, 16);
        for ie in &self.ies {
            value.bits(u64::from(ie.id), 16);
            value.bits(ie.criticality.bits(), 2);
            value.open(&ie.value);
        }
        let mut w = per::Writer::default();
        w.bit(false);
        w.bits(
            match self.kind {
                Kind::Initiating => 0,
                Kind::Successful => 1,
                Kind::Unsuccessful => 2,
            },
            2,
        );
        w.align();
        w.bits(u64::from(self.procedure), 8);
        w.bits(self.criticality.bits(), 2);
        w.open(&value.finish());
        w.finish()
    }

    /// The value of the first IE with `id`.
    pub fn ie(&self, id: u16) -> Option<&[u8]> {
        self.ies.iter().find(|i| i.id == id).map(|i| &i.value[..])
    }
}

/// Aligned PER, as much of it as S1AP's IEs use [ITU-T X.691].
pub mod per {
    use super::S1apError;

    /// Writes bits most significant first.
    #[derive(Debug, Default)]
    pub struct Writer {
        buf: Vec<u8>,
        /// Bits used in the last octet (0 = aligned).
        used: u8,
    }

    impl Writer {
        pub fn bit(&mut self, b: bool) {
            self.bits(u64::from(b), 1);
        }
        /// The low `n` bits of `v`.
        pub fn bits(&mut self, v: u64, n: u32) {
            for i in (0..n).rev() {
                if self.used == 0 {
                    self.buf.push(0);
                }
                if (v >> i) & 1 == 1 {
                    *self.buf.last_mut().expect("pushed") |= 0x80 >> self.used;
                }
                self.used = (self.used + 1) % 8;
            }
        }
        pub fn align(&mut self) {
            self.used = 0;
        }
        pub fn bytes(&mut self, b: &[u8]) {
            self.align();
            self.buf.extend_from_slice(b);
        }
        /// An unconstrained length determinant [X.691 § 10.9.3.6–7]
        /// (lengths below 16K, all the lab sends).
        pub fn length(&mut self, n: usize) {
            self.align();
            if n < 128 {
                self.buf.push(n as u8);
            } else {
                let n = n.min(0x3fff) as u16;
                self.buf.extend_from_slice(&(0x8000 | n).to_be_bytes());
            }
        }
        /// An open type or an unconstrained OCTET STRING: length, octets.
        pub fn open(&mut self, b: &[u8]) {
            self.length(b.len());
            self.bytes(&b[..b.len().min(0x3fff)]);
        }
        /// A constrained whole number `v - lb` in a range of `range`
        /// values [X.691 § 10.5.7].
        pub fn constrained(&mut self, v: u64, range: u64) {
            match range {
                0..=255 => self.bits(v, bits_for(range)),
                256 => {
                    self.align();
                    self.bits(v, 8);
                }
                257..=65536 => {
                    self.align();
                    self.bits(v, 16);
                }
                _ => {
                    // The octets needed, as a constrained number of octets
                    // 1..=max, then the octets, aligned.
                    let max = (bits_for(range) as usize).div_ceil(8);
                    let n = (8 - v.leading_zeros() as usize / 8).max(1);
                    self.bits((n - 1) as u64, bits_for(max as u64));
                    self.align();
                    self.buf.extend_from_slice(&v.to_be_bytes()[8 - n..]);
                }
            }
        }
        pub fn finish(self) -> Vec<u8> {
            self.buf
        }
    }

    /// Bits to hold `range` values (0..range-1).
    fn bits_for(range: u64) -> u32 {
        64 - (range.saturating_sub(1)).leading_zeros()
    }

    /// Reads what [`Writer`] writes.
    #[derive(Debug)]
    pub struct Reader<'a> {
        b: &'a [u8],
        /// Position in bits.
        at: usize,
    }

    impl<'a> Reader<'a> {
        pub fn new(b: &'a [u8]) -> Reader<'a> {
            Reader { b, at: 0 }
        }
        pub fn bit(&mut self) -> Result<bool, S1apError> {
            Ok(self.bits(1)? == 1)
        }
        pub fn bits(&mut self, n: u32) -> Result<u64, S1apError> {
            if self.at + n as usize > self.b.len() * 8 {
                return Err(S1apError::Truncated);
            }
            let mut v = 0u64;
            for _ in 0..n {
                let bit = (self.b[self.at / 8] >> (7 - self.at % 8)) & 1;
                v = v << 1 | u64::from(bit);
                self.at += 1;
            }
            Ok(v)
        }
        pub fn align(&mut self) {
            self.at = self.at.next_multiple_of(8);
        }
        pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], S1apError> {
            self.align();
            let start = self.at / 8;
            let end = start.checked_add(n).ok_or(S1apError::Truncated)?;
            let v = self.b.get(start..end).ok_or(S1apError::Truncated)?;
            self.at = end * 8;
            Ok(v)
        }
        pub fn length(&mut self) -> Result<usize, S1apError> {
            self.align();
            let first = self.bits(8)? as usize;
            match first >> 6 {
                0 | 1 => Ok(first),
                2 => Ok((first & 0x3f) << 8 | self.bits(8)? as usize),
                _ => Err(S1apError::Fragmented),
            }
        }
        pub fn open(&mut self) -> Result<&'a [u8], S1apError> {
            let n = self.length()?;
            self.bytes(n)
        }
        pub fn constrained(&mut self, range: u64) -> Result<u64, S1apError> {
            let v = match range {
                0..=255 => self.bits(bits_for(range))?,
                256 => {
                    self.align();
                    self.bits(8)?
                }
                257..=65536 => {
                    self.align();
                    self.bits(16)?
                }
                _ => {
                    let max = (bits_for(range) as usize).div_ceil(8);
                    let n = self.bits(bits_for(max as u64))? as usize + 1;
                    let o = self.bytes(n)?;
                    o.iter().fold(0u64, |v, b| v << 8 | u64::from(*b))
                }
            };
            if v >= range && range != 0 {
                return Err(S1apError::Constraint);
            }
            Ok(v)
        }
        /// An extension bit that must be clear.
        pub fn no_extension(&mut self) -> Result<(), S1apError> {
            if self.bit()? {
                Err(S1apError::Extension)
            } else {
                Ok(())
            }
        }
    }
}

/// The IE values the lab reads and writes [TS 36.413 § 9.2, § 9.3.4].
pub mod ie {
    use super::per::{Reader, Writer};
    use super::S1apError;
    use std::net::Ipv4Addr;

    fn read<T>(
        v: &[u8],
        f: impl FnOnce(&mut Reader<'_>) -> Result<T, S1apError>,
    ) -> Result<T, S1apError> {
        f(&mut Reader::new(v))
    }
    fn write(f: impl FnOnce(&mut Writer)) -> Vec<u8> {
        let mut w = Writer::default();
        f(&mut w);
        w.finish()
    }

    /// ENB-UE-S1AP-ID, INTEGER (0..16777215).
    pub fn enb_ue_id(v: &[u8]) -> Result<u32, S1apError> {
        read(v, |r| r.constrained(1 << 24).map(|x| x as u32))
    }
    pub fn enb_ue_id_value(id: u32) -> Vec<u8> {
        write(|w| w.constrained(u64::from(id & 0xff_ffff), 1 << 24))
    }
    /// MME-UE-S1AP-ID, INTEGER (0..4294967295).
    pub fn mme_ue_id(v: &[u8]) -> Result<u32, S1apError> {
        read(v, |r| r.constrained(1 << 32).map(|x| x as u32))
    }
    pub fn mme_ue_id_value(id: u32) -> Vec<u8> {
        write(|w| w.constrained(u64::from(id), 1 << 32))
    }
    /// NAS-PDU, OCTET STRING.
    pub fn nas_pdu(v: &[u8]) -> Result<&[u8], S1apError> {
        Reader::new(v).open()
    }
    pub fn nas_pdu_value(nas: &[u8]) -> Vec<u8> {
        write(|w| w.open(nas))
    }

    /// TAI: PLMN identity and tracking area code [§ 9.2.3.16].
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Tai {
        pub plmn: [u8; 3],
        pub tac: u16,
    }
    pub fn tai(v: &[u8]) -> Result<Tai, S1apError> {
        read(v, |r| {
            r.no_extension()?;
            r.bit()?;
            let plmn = r.bytes(3)?.try_into().expect("3");
            let tac = r.bits(16)? as u16;
            Ok(Tai { plmn, tac })
        })
    }
    pub fn tai_value(t: Tai) -> Vec<u8> {
        write(|w| {
            w.bits(0, 2);
            w.bytes(&t.plmn);
            w.bits(u64::from(t.tac), 16);
        })
    }

    /// E-UTRAN CGI: PLMN identity and the 28-bit cell identity [§ 9.2.1.38].
    pub fn eutran_cgi(v: &[u8]) -> Result<([u8; 3], u32), S1apError> {
        read(v, |r| {
            r.no_extension()?;
            r.bit()?;
            let plmn = r.bytes(3)?.try_into().expect("3");
            r.align();
            Ok((plmn, r.bits(28)? as u32))
        })
    }
    pub fn eutran_cgi_value(plmn: [u8; 3], cell: u32) -> Vec<u8> {
        write(|w| {
            w.bits(0, 2);
            w.bytes(&plmn);
            w.align();
            w.bits(u64::from(cell), 28);
        })
    }

    /// RRC-Establishment-Cause: mo-Signalling (3) for an attach.
    pub const RRC_MO_SIGNALLING: u8 = 3;
    pub fn rrc_cause_value(cause: u8) -> Vec<u8> {
        write(|w| {
            w.bit(false);
            w.bits(u64::from(cause), 3);
        })
    }
    pub fn rrc_cause(v: &[u8]) -> Result<u8, S1apError> {
        read(v, |r| {
            r.no_extension()?;
            Ok(r.bits(3)? as u8)
        })
    }

    /// Global-ENB-ID with a macro eNodeB id (20 bits) [§ 9.2.1.37].
    pub fn global_enb_id(v: &[u8]) -> Result<([u8; 3], u32), S1apError> {
        read(v, |r| {
            r.no_extension()?;
            r.bit()?;
            let plmn = r.bytes(3)?.try_into().expect("3");
            r.no_extension()?;
            if r.bit()? {
                return Err(S1apError::Constraint);
            }
            r.align();
            Ok((plmn, r.bits(20)? as u32))
        })
    }
    pub fn global_enb_id_value(plmn: [u8; 3], macro_id: u32) -> Vec<u8> {
        write(|w| {
            w.bits(0, 2);
            w.bytes(&plmn);
            w.bits(0, 2);
            w.align();
            w.bits(u64::from(macro_id), 20);
        })
    }

    /// SupportedTAs with one TAC broadcast in one PLMN (S1 Setup Request).
    pub fn supported_tas_value(tac: u16, plmn: [u8; 3]) -> Vec<u8> {
        write(|w| {
            w.constrained(0, 256);
            w.bits(0, 2);
            w.bits(u64::from(tac), 16);
            w.constrained(0, 6);
            w.bytes(&plmn);
        })
    }
    /// A tracking area code and the PLMNs that broadcast it.
    pub type SupportedTa = (u16, Vec<[u8; 3]>);

    /// The items of SupportedTAs.
    pub fn supported_tas(v: &[u8]) -> Result<Vec<SupportedTa>, S1apError> {
        read(v, |r| {
            let n = r.constrained(256)? + 1;
            let mut items = vec![];
            for _ in 0..n {
                r.no_extension()?;
                r.bit()?;
                let tac = r.bits(16)? as u16;
                let m = r.constrained(6)? + 1;
                let mut plmns = vec![];
                for _ in 0..m {
                    plmns.push(r.bytes(3)?.try_into().expect("3"));
                }
                items.push((tac, plmns));
            }
            Ok(items)
        })
    }

    /// PagingDRX v128 (2).
    pub fn paging_drx_value(drx: u8) -> Vec<u8> {
        write(|w| {
            w.bit(false);
            w.bits(u64::from(drx), 2);
        })
    }

    /// ServedGUMMEIs with one PLMN, MME group and MME code (S1 Setup Response).
    pub fn served_gummeis_value(plmn: [u8; 3], group: u16, code: u8) -> Vec<u8> {
        write(|w| {
            w.constrained(0, 8);
            w.bits(0, 2);
            w.constrained(0, 32);
            w.bytes(&plmn);
            w.constrained(0, 65535);
            w.bytes(&group.to_be_bytes());
            w.constrained(0, 256);
            w.bytes(&[code]);
        })
    }
    /// The first GUMMEI: PLMN, MME group, MME code.
    pub fn served_gummei(v: &[u8]) -> Result<([u8; 3], u16, u8), S1apError> {
        read(v, |r| {
            r.constrained(8)?;
            r.no_extension()?;
            r.bit()?;
            let n = r.constrained(32)? + 1;
            let plmn: [u8; 3] = r.bytes(3)?.try_into().expect("3");
            for _ in 1..n {
                r.bytes(3)?;
            }
            let n = r.constrained(65535)? + 1;
            let group = u16::from_be_bytes(r.bytes(2)?.try_into().expect("2"));
            for _ in 1..n {
                r.bytes(2)?;
            }
            r.constrained(256)?;
            let code = r.bytes(1)?[0];
            Ok((plmn, group, code))
        })
    }
    pub fn relative_capacity_value(c: u8) -> Vec<u8> {
        write(|w| w.constrained(u64::from(c), 256))
    }

    /// BitRate, INTEGER (0..10000000000).
    const BIT_RATE_RANGE: u64 = 10_000_000_001;

    /// UEAggregateMaximumBitrate: downlink, uplink in bit/s [§ 9.2.1.20].
    pub fn ue_ambr_value(dl: u64, ul: u64) -> Vec<u8> {
        write(|w| {
            w.bits(0, 2);
            w.constrained(dl.min(BIT_RATE_RANGE - 1), BIT_RATE_RANGE);
            w.constrained(ul.min(BIT_RATE_RANGE - 1), BIT_RATE_RANGE);
        })
    }
    pub fn ue_ambr(v: &[u8]) -> Result<(u64, u64), S1apError> {
        read(v, |r| {
            r.no_extension()?;
            r.bit()?;
            Ok((
                r.constrained(BIT_RATE_RANGE)?,
                r.constrained(BIT_RATE_RANGE)?,
            ))
        })
    }

    /// One E-RAB of an Initial Context Setup Request [§ 9.1.4.1].
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ErabToSetup {
        pub erab_id: u8,
        pub qci: u8,
        pub priority: u8,
        pub may_preempt: bool,
        pub preemptable: bool,
        /// The SGW's S1-U address and TEID.
        pub addr: Ipv4Addr,
        pub teid: u32,
        pub nas: Option<Vec<u8>>,
    }

    /// E-RABToBeSetupListCtxtSUReq: a list of single-IE containers.
    pub fn erab_to_setup_list_value(items: &[ErabToSetup]) -> Vec<u8> {
        write(|w| {
            w.constrained(items.len().saturating_sub(1) as u64, 256);
            for e in items {
                w.bits(u64::from(super::id::E_RAB_TO_BE_SETUP_ITEM_CTXT_SU_REQ), 16);
                w.bits(0, 2);
                let item = write(|v| {
                    v.bit(false);
                    v.bit(e.nas.is_some());
                    v.bit(false);
                    v.bit(false);
                    v.bits(u64::from(e.erab_id), 4);
                    // E-RABLevelQoSParameters.
                    v.bits(0, 3);
                    v.constrained(u64::from(e.qci), 256);
                    v.bits(0, 2);
                    v.bits(u64::from(e.priority), 4);
                    v.bit(e.may_preempt);
                    v.bit(e.preemptable);
                    transport_address(v, e.addr);
                    v.bytes(&e.teid.to_be_bytes());
                    if let Some(nas) = &e.nas {
                        v.open(nas);
                    }
                });
                w.open(&item);
            }
        })
    }

    pub fn erab_to_setup_list(v: &[u8]) -> Result<Vec<ErabToSetup>, S1apError> {
        read(v, |r| {
            let n = r.constrained(256)? + 1;
            let mut items = vec![];
            for _ in 0..n {
                r.bits(16)?;
                r.bits(2)?;
                let mut v = Reader::new(r.open()?);
                v.no_extension()?;
                let has_nas = v.bit()?;
                v.bit()?;
                v.no_extension()?;
                let erab_id = v.bits(4)? as u8;
                v.no_extension()?;
                if v.bit()? {
                    // GBR QoS information: the lab's default bearers have none.
                    return Err(S1apError::Constraint);
                }
                v.bit()?;
                let qci = v.constrained(256)? as u8;
                v.no_extension()?;
                v.bit()?;
                let priority = v.bits(4)? as u8;
                let may_preempt = v.bit()?;
                let preemptable = v.bit()?;
                let addr = read_transport_address(&mut v)?;
                let teid = u32::from_be_bytes(v.bytes(4)?.try_into().expect("4"));
                let nas = if has_nas {
                    Some(v.open()?.to_vec())
                } else {
                    None
                };
                items.push(ErabToSetup {
                    erab_id,
                    qci,
                    priority,
                    may_preempt,
                    preemptable,
                    addr,
                    teid,
                    nas,
                });
            }
            Ok(items)
        })
    }

    /// TransportLayerAddress, BIT STRING (SIZE(1..160, ...)), an IPv4 address.
    fn transport_address(w: &mut Writer, a: Ipv4Addr) {
        w.bit(false);
        w.constrained(31, 160);
        w.bytes(&a.octets());
    }

    fn read_transport_address(r: &mut Reader<'_>) -> Result<Ipv4Addr, S1apError> {
        r.no_extension()?;
        if r.constrained(160)? != 31 {
            // IPv6 or both: the lab is IPv4 only.
            return Err(S1apError::Constraint);
        }
        let o = r.bytes(4)?;
        Ok(Ipv4Addr::new(o[0], o[1], o[2], o[3]))
    }

    /// E-RABSetupListCtxtSURes: (E-RAB id, the eNodeB's S1-U address and TEID).
    pub fn erab_setup_list_res_value(items: &[(u8, Ipv4Addr, u32)]) -> Vec<u8> {
        write(|w| {
            w.constrained(items.len().saturating_sub(1) as u64, 256);
            for (erab, addr, teid) in items {
                w.bits(u64::from(super::id::E_RAB_SETUP_ITEM_CTXT_SU_RES), 16);
                w.bits(1, 2);
                let item = write(|v| {
                    v.bits(0, 3);
                    v.bits(u64::from(*erab), 4);
                    transport_address(v, *addr);
                    v.bytes(&teid.to_be_bytes());
                });
                w.open(&item);
            }
        })
    }

    pub fn erab_setup_list_res(v: &[u8]) -> Result<Vec<(u8, Ipv4Addr, u32)>, S1apError> {
        read(v, |r| {
            let n = r.constrained(256)? + 1;
            let mut items = vec![];
            for _ in 0..n {
                r.bits(18)?;
                let mut v = Reader::new(r.open()?);
                v.no_extension()?;
                v.bit()?;
                v.no_extension()?;
                let erab = v.bits(4)? as u8;
                let addr = read_transport_address(&mut v)?;
                let teid = u32::from_be_bytes(v.bytes(4)?.try_into().expect("4"));
                items.push((erab, addr, teid));
            }
            Ok(items)
        })
    }

    /// UESecurityCapabilities: the EEA and EIA bit maps (bit 15 = EEA1/EIA1
    /// … as TS 36.413 § 9.2.1.40 numbers them).
    pub fn ue_security_capabilities_value(eea: u16, eia: u16) -> Vec<u8> {
        write(|w| {
            w.bits(0, 2);
            w.bit(false);
            w.bits(u64::from(eea), 16);
            w.bit(false);
            w.bits(u64::from(eia), 16);
        })
    }
    pub fn ue_security_capabilities(v: &[u8]) -> Result<(u16, u16), S1apError> {
        read(v, |r| {
            r.no_extension()?;
            r.bit()?;
            r.no_extension()?;
            let eea = r.bits(16)? as u16;
            r.no_extension()?;
            Ok((eea, r.bits(16)? as u16))
        })
    }

    /// SecurityKey, the 256-bit KeNB.
    pub fn security_key_value(k: &[u8; 32]) -> Vec<u8> {
        write(|w| w.bytes(k))
    }
    pub fn security_key(v: &[u8]) -> Result<[u8; 32], S1apError> {
        read(v, |r| Ok(r.bytes(32)?.try_into().expect("32")))
    }

    /// UE-S1AP-IDs as the MME–eNodeB pair.
    pub fn ue_s1ap_ids_value(mme: u32, enb: u32) -> Vec<u8> {
        write(|w| {
            w.bits(0, 4);
            w.constrained(u64::from(mme), 1 << 32);
            w.constrained(u64::from(enb & 0xff_ffff), 1 << 24);
        })
    }
    /// The pair, or the MME's id alone.
    pub fn ue_s1ap_ids(v: &[u8]) -> Result<(u32, Option<u32>), S1apError> {
        read(v, |r| {
            r.no_extension()?;
            if r.bit()? {
                return Ok((r.constrained(1 << 32)? as u32, None));
            }
            r.no_extension()?;
            r.bit()?;
            let mme = r.constrained(1 << 32)? as u32;
            Ok((mme, Some(r.constrained(1 << 24)? as u32)))
        })
    }

    /// Cause groups [§ 9.2.1.3] and their root value counts.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Cause {
        RadioNetwork(u8),
        Transport(u8),
        Nas(u8),
        Protocol(u8),
        Misc(u8),
    }
    /// CauseNas: normal-release, authentication-failure, detach, unspecified.
    pub const NAS_NORMAL_RELEASE: u8 = 0;
    pub const NAS_DETACH: u8 = 2;
    /// CauseTransport transport-resource-unavailable [§ 9.2.1.3].
    pub const TRANSPORT_RESOURCE_UNAVAILABLE: u8 = 0;
    /// CauseMisc has six: unknown-PLMN (5) is the last [§ 9.2.1.3].
    const CAUSE_ROOT: [u64; 5] = [36, 2, 4, 7, 6];
    /// CauseMisc unknown-PLMN: an S1 Setup for a PLMN the MME does not serve.
    pub const MISC_UNKNOWN_PLMN: u8 = 5;
    pub fn cause_value(c: Cause) -> Vec<u8> {
        let (group, v) = match c {
            Cause::RadioNetwork(v) => (0, v),
            Cause::Transport(v) => (1, v),
            Cause::Nas(v) => (2, v),
            Cause::Protocol(v) => (3, v),
            Cause::Misc(v) => (4, v),
        };
        write(|w| {
            w.bit(false);
            w.bits(group, 3);
            w.bit(false);
            w.constrained(u64::from(v), CAUSE_ROOT[group as usize]);
        })
    }
    pub fn cause(v: &[u8]) -> Result<Cause, S1apError> {
        read(v, |r| {
            r.no_extension()?;
            let group = r.bits(3)?;
            let root = *CAUSE_ROOT
                .get(group as usize)
                .ok_or(S1apError::Constraint)?;
            r.no_extension()?;
            let v = r.constrained(root)? as u8;
            Ok(match group {
                0 => Cause::RadioNetwork(v),
                1 => Cause::Transport(v),
                2 => Cause::Nas(v),
                3 => Cause::Protocol(v),
                _ => Cause::Misc(v),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex;
    use ie::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    // crates/wire/fixtures/s1ap.py: each PDU encoded by pycrate 0.8.1's S1AP
    // module (TS 36.413's ASN.1, aligned PER) and decoded back by it; in
    // SCTP DATA with PPID 18, tshark 4 decodes every one (the NAS inside
    // too) with no expert item.
    const S1_SETUP_REQUEST: &str =
        "0011001f000003003b00080000f11000000010004000070000004000f1100089400140";
    const S1_SETUP_RESPONSE: &str = "201100170000020069000b000000f11000008001000100574001ff";
    const INITIAL_UE_MESSAGE: &str = "000c403e000005000800020001001a00161507417108091010000000001002e0e000040201d011004300060000f1100001006440080000f110000001000086400130";
    const DOWNLINK_NAS_TRANSPORT: &str = "000b4038000003000000020001000800020001001a00252407520023553cbe9637a89d218ae64dae47bf3510aa689c6483508000904cbb451b65def8";
    const UPLINK_NAS_TRANSPORT: &str = "000d4035000005000000020001000800020001001a000c0b075308a54211d5e3ba50bf006440080000f11000000100004340060000f1100001";
    const INITIAL_CONTEXT_SETUP_REQUEST: &str = "00090080910000060000000200010008000200010042000a1805f5e1006005f5e10000180043000034003e450009240f80ac100102000003012f07420129060000f110000100155201c101090908696e7465726e657405010a2d0002500bf600f110800101c0000001006b000518000c000000490020000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const INITIAL_CONTEXT_SETUP_RESPONSE: &str =
        "200900220000030000400200010008400200010033400f000032400a0a1fac10010100000501";
    const UE_CONTEXT_RELEASE_COMMAND: &str = "0017001000000200630004000100010002400124";
    const UE_CONTEXT_RELEASE_COMPLETE: &str = "2017000f000002000040020001000840020001";
    // pycrate 0.8.1: S1AP_PDU.set_val(('unsuccessfulOutcome', {'procedureCode': 17,
    //   'criticality': 'reject', 'value': ('S1SetupFailure', {'protocolIEs': [{'id': 2,
    //   'criticality': 'ignore', 'value': ('Cause', ('misc', 'unknown-PLMN'))}]})})); to_aper()
    const S1_SETUP_FAILURE: &str = "401100080000010002400145";
    const BIG_IDS: &str = "000b4080ef00000300000005c0fedcba980008000480abcdef001a0080d680d407420129060000f110000100c75201c101090908696e7465726e657405010a2d000227b080000d04c0000201000d04c0000201000d04c0000201000d04c0000201000d04c0000201000d04c0000201000d04c0000201000d04c0000201000d04c0000201000d04c0000201000d04c0000201000d04c0000201000d04c0000201000d04c0000201000d04c0000201000d04c0000201000d04c0000201000d04c0000201000d04c0000201000d04c0000201000d04c0000201000d04c0000201000d04c0000201000d04c0000201000d04c0000201";

    const PLMN: [u8; 3] = [0x00, 0xf1, 0x10];

    fn ie(id: u16, c: Criticality, value: Vec<u8>) -> ProtocolIe {
        ProtocolIe {
            id,
            criticality: c,
            value,
        }
    }
    use Criticality::{Ignore, Reject};

    fn pdu(kind: Kind, procedure: u8, criticality: Criticality, ies: Vec<ProtocolIe>) -> S1apPdu {
        S1apPdu {
            kind,
            procedure,
            criticality,
            ies,
        }
    }

    fn ids(c: Criticality) -> Vec<ProtocolIe> {
        vec![
            ie(id::MME_UE_S1AP_ID, c, mme_ue_id_value(1)),
            ie(id::ENB_UE_S1AP_ID, c, enb_ue_id_value(1)),
        ]
    }

    fn built() -> Vec<(&'static str, S1apPdu)> {
        let nas = |s: &str| nas_pdu_value(&hex(s));
        let cgi = || eutran_cgi_value(PLMN, 0x10);
        let tai = || tai_value(Tai { plmn: PLMN, tac: 1 });
        let mut ul = ids(Reject);
        ul.extend([
            ie(id::NAS_PDU, Reject, nas("075308a54211d5e3ba50bf")),
            ie(id::EUTRAN_CGI, Ignore, cgi()),
            ie(id::TAI, Ignore, tai()),
        ]);
        let mut dl = ids(Reject);
        dl.push(ie(
            id::NAS_PDU,
            Reject,
            nas("07520023553cbe9637a89d218ae64dae47bf3510aa689c6483508000904cbb451b65def8"),
        ));
        let mut ics = ids(Reject);
        ics.extend([
            ie(id::UE_AGGREGATE_MAXIMUM_BITRATE, Reject, ue_ambr_value(100_000_000, 100_000_000)),
            ie(id::E_RAB_TO_BE_SETUP_LIST_CTXT_SU_REQ, Reject, erab_to_setup_list_value(&[ErabToSetup {
                erab_id: 5,
                qci: 9,
                priority: 9,
                may_preempt: false,
                preemptable: false,
                addr: Ipv4Addr::new(172, 16, 1, 2),
                teid: 0x301,
                nas: Some(hex("07420129060000f110000100155201c101090908696e7465726e657405010a2d0002500bf600f110800101c0000001")),
            }])),
            ie(id::UE_SECURITY_CAPABILITIES, Reject, ue_security_capabilities_value(0xc000, 0xc000)),
            ie(id::SECURITY_KEY, Reject, security_key_value(&std::array::from_fn(|i| i as u8))),
        ]);
        let mut ics_res = ids(Ignore);
        ics_res.push(ie(
            id::E_RAB_SETUP_LIST_CTXT_SU_RES,
            Ignore,
            erab_setup_list_res_value(&[(5, Ipv4Addr::new(172, 16, 1, 1), 0x501)]),
        ));
        vec![
            (
                S1_SETUP_REQUEST,
                pdu(
                    Kind::Initiating,
                    proc::S1_SETUP,
                    Reject,
                    vec![
                        ie(id::GLOBAL_ENB_ID, Reject, global_enb_id_value(PLMN, 1)),
                        ie(id::SUPPORTED_TAS, Reject, supported_tas_value(1, PLMN)),
                        ie(id::PAGING_DRX, Ignore, paging_drx_value(2)),
                    ],
                ),
            ),
            (
                S1_SETUP_RESPONSE,
                pdu(
                    Kind::Successful,
                    proc::S1_SETUP,
                    Reject,
                    vec![
                        ie(
                            id::SERVED_GUMMEIS,
                            Reject,
                            served_gummeis_value(PLMN, 0x8001, 1),
                        ),
                        ie(
                            id::RELATIVE_MME_CAPACITY,
                            Ignore,
                            relative_capacity_value(255),
                        ),
                    ],
                ),
            ),
            (
                INITIAL_UE_MESSAGE,
                pdu(
                    Kind::Initiating,
                    proc::INITIAL_UE_MESSAGE,
                    Ignore,
                    vec![
                        ie(id::ENB_UE_S1AP_ID, Reject, enb_ue_id_value(1)),
                        ie(
                            id::NAS_PDU,
                            Reject,
                            nas("07417108091010000000001002e0e000040201d011"),
                        ),
                        ie(id::TAI, Reject, tai()),
                        ie(id::EUTRAN_CGI, Ignore, cgi()),
                        ie(
                            id::RRC_ESTABLISHMENT_CAUSE,
                            Ignore,
                            rrc_cause_value(RRC_MO_SIGNALLING),
                        ),
                    ],
                ),
            ),
            (
                DOWNLINK_NAS_TRANSPORT,
                pdu(Kind::Initiating, proc::DOWNLINK_NAS_TRANSPORT, Ignore, dl),
            ),
            (
                UPLINK_NAS_TRANSPORT,
                pdu(Kind::Initiating, proc::UPLINK_NAS_TRANSPORT, Ignore, ul),
            ),
            (
                INITIAL_CONTEXT_SETUP_REQUEST,
                pdu(Kind::Initiating, proc::INITIAL_CONTEXT_SETUP, Reject, ics),
            ),
            (
                INITIAL_CONTEXT_SETUP_RESPONSE,
                pdu(
                    Kind::Successful,
                    proc::INITIAL_CONTEXT_SETUP,
                    Reject,
                    ics_res,
                ),
            ),
            (
                UE_CONTEXT_RELEASE_COMMAND,
                pdu(
                    Kind::Initiating,
                    proc::UE_CONTEXT_RELEASE,
                    Reject,
                    vec![
                        ie(id::UE_S1AP_IDS, Reject, ue_s1ap_ids_value(1, 1)),
                        ie(id::CAUSE, Ignore, cause_value(Cause::Nas(NAS_DETACH))),
                    ],
                ),
            ),
            (
                UE_CONTEXT_RELEASE_COMPLETE,
                pdu(
                    Kind::Successful,
                    proc::UE_CONTEXT_RELEASE,
                    Reject,
                    ids(Ignore),
                ),
            ),
            (
                S1_SETUP_FAILURE,
                pdu(
                    Kind::Unsuccessful,
                    proc::S1_SETUP,
                    Reject,
                    vec![ie(
                        id::CAUSE,
                        Ignore,
                        cause_value(Cause::Misc(MISC_UNKNOWN_PLMN)),
                    )],
                ),
            ),
        ]
    }

    #[test]
    fn pdus_read_and_write_pycrates_aligned_per() {
        for (want, p) in built() {
            let b = hex(want);
            assert_eq!(S1apPdu::parse(&b).as_ref(), Ok(&p), "{want}");
            assert_eq!(p.to_vec(), b, "{want}");
        }
    }

    #[test]
    fn ie_values_read_back() {
        let p = S1apPdu::parse(&hex(INITIAL_CONTEXT_SETUP_REQUEST)).unwrap();
        let e = erab_to_setup_list(p.ie(id::E_RAB_TO_BE_SETUP_LIST_CTXT_SU_REQ).unwrap()).unwrap();
        assert_eq!(
            (e[0].erab_id, e[0].qci, e[0].addr, e[0].teid),
            (5, 9, Ipv4Addr::new(172, 16, 1, 2), 0x301)
        );
        assert_eq!(e[0].nas.as_ref().map(Vec::len), Some(47));
        assert_eq!(
            ue_ambr(p.ie(id::UE_AGGREGATE_MAXIMUM_BITRATE).unwrap()),
            Ok((100_000_000, 100_000_000))
        );
        assert_eq!(
            ue_security_capabilities(p.ie(id::UE_SECURITY_CAPABILITIES).unwrap()),
            Ok((0xc000, 0xc000))
        );
        assert_eq!(
            security_key(p.ie(id::SECURITY_KEY).unwrap()).unwrap()[31],
            31
        );
        let p = S1apPdu::parse(&hex(INITIAL_CONTEXT_SETUP_RESPONSE)).unwrap();
        assert_eq!(
            erab_setup_list_res(p.ie(id::E_RAB_SETUP_LIST_CTXT_SU_RES).unwrap()),
            Ok(vec![(5, Ipv4Addr::new(172, 16, 1, 1), 0x501)])
        );
        let p = S1apPdu::parse(&hex(INITIAL_UE_MESSAGE)).unwrap();
        assert_eq!(enb_ue_id(p.ie(id::ENB_UE_S1AP_ID).unwrap()), Ok(1));
        assert_eq!(nas_pdu(p.ie(id::NAS_PDU).unwrap()).unwrap().len(), 21);
        assert_eq!(tai(p.ie(id::TAI).unwrap()), Ok(Tai { plmn: PLMN, tac: 1 }));
        assert_eq!(eutran_cgi(p.ie(id::EUTRAN_CGI).unwrap()), Ok((PLMN, 0x10)));
        assert_eq!(
            rrc_cause(p.ie(id::RRC_ESTABLISHMENT_CAUSE).unwrap()),
            Ok(RRC_MO_SIGNALLING)
        );
        let p = S1apPdu::parse(&hex(S1_SETUP_REQUEST)).unwrap();
        assert_eq!(
            global_enb_id(p.ie(id::GLOBAL_ENB_ID).unwrap()),
            Ok((PLMN, 1))
        );
        assert_eq!(
            supported_tas(p.ie(id::SUPPORTED_TAS).unwrap()),
            Ok(vec![(1, vec![PLMN])])
        );
        let p = S1apPdu::parse(&hex(S1_SETUP_RESPONSE)).unwrap();
        assert_eq!(
            served_gummei(p.ie(id::SERVED_GUMMEIS).unwrap()),
            Ok((PLMN, 0x8001, 1))
        );
        let p = S1apPdu::parse(&hex(UE_CONTEXT_RELEASE_COMMAND)).unwrap();
        assert_eq!(
            ue_s1ap_ids(p.ie(id::UE_S1AP_IDS).unwrap()),
            Ok((1, Some(1)))
        );
        assert_eq!(cause(p.ie(id::CAUSE).unwrap()), Ok(Cause::Nas(NAS_DETACH)));
    }

    #[test]
    fn large_ids_and_two_octet_lengths_match_pycrate() {
        let b = hex(BIG_IDS);
        let p = S1apPdu::parse(&b).unwrap();
        assert_eq!(
            mme_ue_id(p.ie(id::MME_UE_S1AP_ID).unwrap()),
            Ok(0xfedc_ba98)
        );
        assert_eq!(enb_ue_id(p.ie(id::ENB_UE_S1AP_ID).unwrap()), Ok(0xab_cdef));
        let nas = nas_pdu(p.ie(id::NAS_PDU).unwrap()).unwrap().to_vec();
        assert_eq!(nas.len(), 212);
        let again = pdu(
            Kind::Initiating,
            proc::DOWNLINK_NAS_TRANSPORT,
            Ignore,
            vec![
                ie(id::MME_UE_S1AP_ID, Reject, mme_ue_id_value(0xfedc_ba98)),
                ie(id::ENB_UE_S1AP_ID, Reject, enb_ue_id_value(0xab_cdef)),
                ie(id::NAS_PDU, Reject, nas_pdu_value(&nas)),
            ],
        );
        assert_eq!(again.to_vec(), b);
    }

    #[test]
    fn truncation_extensions_and_constraints_are_refused() {
        let b = hex(UE_CONTEXT_RELEASE_COMMAND);
        for n in 0..b.len() {
            assert!(S1apPdu::parse(&b[..n]).is_err(), "{n}");
        }
        assert_eq!(S1apPdu::parse(&[0x80]), Err(S1apError::Extension));
        assert_eq!(S1apPdu::parse(&[0x60, 0, 0, 0]), Err(S1apError::Constraint));
        assert_eq!(
            S1apPdu::parse(&[0x00, 0x0b, 0x40, 0xc0]),
            Err(S1apError::Fragmented)
        );
        assert_eq!(enb_ue_id(&[0xc0, 1, 2, 3, 4]), Err(S1apError::Constraint));
        assert_eq!(cause(&[0x70]), Err(S1apError::Constraint));
        assert_eq!(tai(&[0x80, 0, 0xf1, 0x10, 0, 1]), Err(S1apError::Extension));
    }

    proptest! {
        #[test]
        fn ids_round_trip(mme: u32, enb in 0u32..(1 << 24)) {
            prop_assert_eq!(mme_ue_id(&mme_ue_id_value(mme)), Ok(mme));
            prop_assert_eq!(enb_ue_id(&enb_ue_id_value(enb)), Ok(enb));
            prop_assert_eq!(ue_s1ap_ids(&ue_s1ap_ids_value(mme, enb)), Ok((mme, Some(enb))));
        }

        #[test]
        fn no_input_panics(b in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(p) = S1apPdu::parse(&b) {
                let _ = p.to_vec();
                for i in &p.ies {
                    let v = &i.value;
                    let _ = (enb_ue_id(v), mme_ue_id(v), nas_pdu(v), tai(v), eutran_cgi(v), erab_to_setup_list(v),
                        erab_setup_list_res(v), ue_s1ap_ids(v), cause(v), served_gummei(v), supported_tas(v));
                }
            }
        }
    }
}
