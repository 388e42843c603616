//! EPS-AKA: the HSS's authentication vector, the USIM's checks of the
//! network's token, and resynchronisation when the USIM's sequence number
//! is ahead [TS 33.401 § 6.1; TS 33.102 § 6.3.2–6.3.5].
//!
//! AUTN = SQN ⊕ AK ‖ AMF ‖ MAC-A. E-UTRAN vectors carry the "separation
//! bit" (AMF bit 0) set [TS 33.401 § 6.1.1; TS 33.102 Annex H]. A USIM
//! accepts a SQN greater than the highest it has seen; otherwise it
//! answers with AUTS = SQN_MS ⊕ AK* ‖ MAC-S, MAC-S = f1*(SQN_MS, RAND,
//! AMF = 0) [TS 33.102 § 6.3.3], from which the HSS recovers SQN_MS
//! (§ 6.3.5). (The lab's USIM keeps one highest SQN, not the array of
//! TS 33.102 Annex C.)

use crate::kdf;
use crate::Milenage;

/// The AMF of E-UTRAN vectors: the separation bit set, the rest zero.
pub const AMF_EUTRAN: [u8; 2] = [0x80, 0x00];

/// An E-UTRAN authentication vector [TS 33.401 § 6.1.2].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EutranVector {
    pub rand: [u8; 16],
    pub xres: [u8; 8],
    pub autn: [u8; 16],
    pub kasme: [u8; 32],
}

/// The HSS's vector for SQN, RAND and the serving network's PLMN.
pub fn vector(m: &Milenage, rand: &[u8; 16], sqn: &[u8; 6], plmn: &[u8; 3]) -> EutranVector {
    let v = m.vector(rand, sqn, &AMF_EUTRAN);
    let sqn_ak: [u8; 6] = std::array::from_fn(|i| sqn[i] ^ v.ak[i]);
    let mut autn = [0u8; 16];
    autn[..6].copy_from_slice(&sqn_ak);
    autn[6..8].copy_from_slice(&AMF_EUTRAN);
    autn[8..].copy_from_slice(&v.mac_a);
    EutranVector {
        rand: *rand,
        xres: v.res,
        autn,
        kasme: kdf::kasme(&v.ck, &v.ik, plmn, &sqn_ak),
    }
}

/// What the USIM answers a challenge with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// AUTN is the network's and fresh: RES, and the KASME the MME holds too.
    /// `sqn` is the USIM's highest SQN from now on.
    Res {
        res: [u8; 8],
        kasme: [u8; 32],
        sqn: [u8; 6],
    },
    /// MAC-A is wrong: not our network (EMM cause #20 "MAC failure").
    MacFailure,
    /// The SQN is not fresh: AUTS for the HSS (EMM cause #21 "synch failure").
    SynchFailure { auts: [u8; 14] },
    /// The separation bit is clear: not an E-UTRAN vector (EMM cause #26
    /// "non-EPS authentication unacceptable") [TS 33.401 § 6.1.1].
    NotEps,
}

/// The USIM's side: checks AUTN against K/OPc and its highest SQN `sqn_ms`.
pub fn answer(
    m: &Milenage,
    rand: &[u8; 16],
    autn: &[u8; 16],
    sqn_ms: &[u8; 6],
    plmn: &[u8; 3],
) -> Answer {
    let sqn_ak: [u8; 6] = autn[..6].try_into().expect("6");
    let amf: [u8; 2] = autn[6..8].try_into().expect("2");
    let probe = m.vector(rand, &[0; 6], &amf);
    let sqn: [u8; 6] = std::array::from_fn(|i| sqn_ak[i] ^ probe.ak[i]);
    let v = m.vector(rand, &sqn, &amf);
    if v.mac_a[..] != autn[8..] {
        return Answer::MacFailure;
    }
    if amf[0] & 0x80 == 0 {
        return Answer::NotEps;
    }
    if u48(&sqn) <= u48(sqn_ms) {
        let ak_star = m.f5_star(rand);
        let mac_s = m.f1_star(rand, sqn_ms, &[0, 0]);
        let mut auts = [0u8; 14];
        for i in 0..6 {
            auts[i] = sqn_ms[i] ^ ak_star[i];
        }
        auts[6..].copy_from_slice(&mac_s);
        return Answer::SynchFailure { auts };
    }
    Answer::Res {
        res: v.res,
        kasme: kdf::kasme(&v.ck, &v.ik, plmn, &sqn_ak),
        sqn,
    }
}

/// The HSS's side of a synch failure: SQN_MS from AUTS if MAC-S verifies
/// [TS 33.102 § 6.3.5].
pub fn resync(m: &Milenage, rand: &[u8; 16], auts: &[u8; 14]) -> Option<[u8; 6]> {
    let ak_star = m.f5_star(rand);
    let sqn_ms: [u8; 6] = std::array::from_fn(|i| auts[i] ^ ak_star[i]);
    (m.f1_star(rand, &sqn_ms, &[0, 0])[..] == auts[6..]).then_some(sqn_ms)
}

/// A 48-bit SQN as a number.
pub fn u48(sqn: &[u8; 6]) -> u64 {
    sqn.iter().fold(0, |n, b| n << 8 | u64::from(*b))
}

/// A number as a 48-bit SQN (higher bits dropped).
pub fn sqn(n: u64) -> [u8; 6] {
    n.to_be_bytes()[2..].try_into().expect("6")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kdf::tests::h;

    const K: &str = "465b5ce8b199b49faa5f0a2ee238a6bc";
    const OPC: &str = "cd63cb71954a9f4e48a5994e37a02baf";
    const RAND: &str = "23553cbe9637a89d218ae64dae47bf35";
    const PLMN: [u8; 3] = [0x00, 0xf1, 0x10];

    fn usim() -> Milenage {
        Milenage::new(&h(K), &h(OPC))
    }

    // osmo-auc-gen (libosmocore-utils 1.7) with TS 35.208 set 1:
    //   osmo-auc-gen -3 -a milenage -k 465b…a6bc -o cd63…2baf \
    //     -r 23553cbe9637a89d218ae64dae47bf35 -s 32 -f 8000
    //   AUTN: aa689c6483508000904cbb451b65def8   RES: a54211d5e3ba50bf
    const AUTN_SQN_32: &str = "aa689c6483508000904cbb451b65def8";

    #[test]
    fn the_vector_is_osmo_auc_gens_and_the_usim_accepts_it_once() {
        let v = vector(&usim(), &h(RAND), &sqn(32), &PLMN);
        assert_eq!(v.autn, h(AUTN_SQN_32));
        assert_eq!(v.xres, h("a54211d5e3ba50bf"));
        let a = answer(&usim(), &v.rand, &v.autn, &sqn(0), &PLMN);
        assert_eq!(
            a,
            Answer::Res {
                res: v.xres,
                kasme: v.kasme,
                sqn: sqn(32)
            }
        );
        // The same AUTN again: replayed, so a synch failure.
        let Answer::SynchFailure { auts } = answer(&usim(), &v.rand, &v.autn, &sqn(32), &PLMN)
        else {
            panic!("a replay accepted")
        };
        assert_eq!(resync(&usim(), &v.rand, &auts), Some(sqn(32)));
    }

    #[test]
    fn a_stranger_network_a_bad_auts_and_a_non_eps_vector_are_told_apart() {
        let v = vector(&usim(), &h(RAND), &sqn(64), &PLMN);
        let other = Milenage::new(&[1; 16], &h(OPC));
        assert_eq!(
            answer(&other, &v.rand, &v.autn, &sqn(0), &PLMN),
            Answer::MacFailure
        );
        let mut bad = [0u8; 14];
        bad[13] = 1;
        assert_eq!(resync(&usim(), &v.rand, &bad), None);
        let m = usim();
        let umts = m.vector(&h(RAND), &sqn(96), &[0, 0]);
        let ak = umts.ak;
        let mut autn = [0u8; 16];
        for i in 0..6 {
            autn[i] = sqn(96)[i] ^ ak[i];
        }
        autn[8..].copy_from_slice(&umts.mac_a);
        assert_eq!(answer(&m, &h(RAND), &autn, &sqn(0), &PLMN), Answer::NotEps);
    }

    // The USIM at SQN_MS = 1024 answers the AUTN for SQN 32 with this AUTS;
    // osmo-auc-gen, as the HSS, recovers SQN_MS from it (MAC-S verified):
    //   osmo-auc-gen -3 -a milenage -k 465b…a6bc -o cd63…2baf \
    //     -r 23553cbe9637a89d218ae64dae47bf35 -A 451e8beca03b87423afbed548cbd
    //   … SQN: 1056  IND: 0  SQN.MS: 1024
    const AUTS_SQN_MS_1024: &str = "451e8beca03b87423afbed548cbd";

    #[test]
    fn our_auts_is_the_one_osmo_auc_gen_resynchronises_from() {
        let v = vector(&usim(), &h(RAND), &sqn(32), &PLMN);
        let a = answer(&usim(), &v.rand, &v.autn, &sqn(1024), &PLMN);
        assert_eq!(
            a,
            Answer::SynchFailure {
                auts: h(AUTS_SQN_MS_1024)
            }
        );
        assert_eq!(
            resync(&usim(), &v.rand, &h(AUTS_SQN_MS_1024)),
            Some(sqn(1024))
        );
    }
}
