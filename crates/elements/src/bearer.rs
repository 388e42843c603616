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

/// The bearer table of one element, indexed by the TEIDs it receives on
/// and by UE address.
#[derive(Debug, Clone)]
pub struct Bearers {
    receiver: Receiver,
    bearers: Vec<Bearer>,
    by_teid: FastMap<Teid, usize>,
    by_ue_ip: FastMap<Ipv4Addr, usize>,
}

impl Bearers {
    pub fn new(receiver: Receiver) -> Bearers {
        Bearers {
            receiver,
            bearers: Vec::new(),
            by_teid: FastMap::default(),
            by_ue_ip: FastMap::default(),
        }
    }

    /// Adds a bearer; every key it brings must be new.
    pub fn add(&mut self, b: Bearer) -> Result<(), BearerError> {
        if self.bearers.iter().any(|x| x.imsi == b.imsi) {
            return Err(BearerError::DuplicateImsi(b.imsi));
        }
        if self.by_ue_ip.contains_key(&b.ue_ip) {
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
        tracing::info!(imsi = %b.imsi, ue = %b.ue_ip, "bearer created");
        self.bearers.push(b);
        self.reindex();
        Ok(())
    }

    /// Removes the bearer of `imsi`, returning it.
    pub fn remove(&mut self, imsi: &str) -> Option<Bearer> {
        let i = self.bearers.iter().position(|b| b.imsi == imsi)?;
        let b = self.bearers.remove(i);
        tracing::info!(imsi = %b.imsi, "bearer deleted");
        self.reindex();
        Some(b)
    }

    fn reindex(&mut self) {
        self.by_teid.clear();
        self.by_ue_ip.clear();
        for (i, b) in self.bearers.iter().enumerate() {
            for t in self.receiver.teids(b) {
                self.by_teid.insert(t, i);
            }
            self.by_ue_ip.insert(b.ue_ip, i);
        }
    }

    /// The bearer whose receiving TEID on this element is `t`.
    pub fn by_teid(&self, t: Teid) -> Option<&Bearer> {
        self.by_teid.get(&t).and_then(|&i| self.bearers.get(i))
    }

    pub fn by_ue_ip(&self, ip: Ipv4Addr) -> Option<&Bearer> {
        self.by_ue_ip.get(&ip).and_then(|&i| self.bearers.get(i))
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
}
