//! The EPS key hierarchy: TS 33.401 Annex A over the generic KDF of
//! TS 33.220 Annex B.2 (HMAC-SHA-256 of key and S = FC ‖ P0 ‖ L0 ‖ P1 ‖ L1 …).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The KDF: HMAC-SHA-256(key, FC ‖ Pi ‖ Li …) [TS 33.220 Annex B.2.0].
pub fn kdf(key: &[u8], fc: u8, params: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(&[fc]);
    for p in params {
        mac.update(p);
        mac.update(&(p.len() as u16).to_be_bytes());
    }
    mac.finalize().into_bytes().into()
}

/// KASME from CK ‖ IK, the serving network's PLMN identity (3 octets, as
/// NAS encodes MCC and MNC) and SQN ⊕ AK [TS 33.401 A.2, FC 0x10].
pub fn kasme(ck: &[u8; 16], ik: &[u8; 16], plmn: &[u8; 3], sqn_xor_ak: &[u8; 6]) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(ck);
    key[16..].copy_from_slice(ik);
    kdf(&key, 0x10, &[plmn, sqn_xor_ak])
}

/// Which NAS key [TS 33.401 A.7: the algorithm type distinguisher].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NasKey {
    Encryption = 1,
    Integrity = 2,
}

/// KNASenc or KNASint for algorithm identity `alg` (EEA0/EIA0 = 0, …,
/// EEA2/EIA2 = 2): the last 128 bits of the KDF's output [TS 33.401 A.7,
/// FC 0x15].
pub fn nas_key(kasme: &[u8; 32], which: NasKey, alg: u8) -> [u8; 16] {
    let out = kdf(kasme, 0x15, &[&[which as u8], &[alg]]);
    out[16..].try_into().expect("16")
}

/// KeNB from the uplink NAS COUNT of the message that made it [TS 33.401
/// A.3, FC 0x11].
pub fn kenb(kasme: &[u8; 32], uplink_nas_count: u32) -> [u8; 32] {
    kdf(kasme, 0x11, &[&uplink_nas_count.to_be_bytes()])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn h<const N: usize>(s: &str) -> [u8; N] {
        let v: Vec<u8> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect();
        v.try_into().unwrap()
    }

    // From TS 35.208 test set 1's CK and IK, PLMN 001/01 (00 f1 10) and its
    // SQN ⊕ AK, with Python's hmac and hashlib:
    //   S = b"\x10" + plmn + b"\x00\x03" + sqn_ak + b"\x00\x06"
    //   kasme = hmac.new(ck + ik, S, hashlib.sha256).digest()
    //   hmac.new(kasme, b"\x15\x02\x00\x01\x02\x00\x01", sha256).digest()[16:]
    //   hmac.new(kasme, b"\x11\x00\x00\x00\x00\x00\x04", sha256).digest()
    pub const KASME: &str = "48579af8781c742d5120e6ed8ccac13193f38c53ab7aa69396f49ca6e1b0562d";
    pub const KNASINT_EIA2: &str = "3d6da7d07a29c8a36527b36eeda82364";
    pub const KNASENC_EEA2: &str = "e183be270c6611b50efdfb106184d03c";
    const KNASENC_EEA0: &str = "a800a7db0ebd05620793531a563d0a55";
    const KENB_COUNT0: &str = "8214c68f2c779346814e4095c5b38cae9f5485c38006d711c0a379c0ec58796b";

    #[test]
    fn the_hierarchy_matches_python_hmac() {
        let k = kasme(
            &h("b40ba9a3c58b2a05bbf0d987b21bf8cb"),
            &h("f769bcd751044604127672711c6d3441"),
            &h("00f110"),
            &h("55f328b43577"),
        );
        assert_eq!(k, h(KASME));
        assert_eq!(nas_key(&k, NasKey::Integrity, 2), h(KNASINT_EIA2));
        assert_eq!(nas_key(&k, NasKey::Encryption, 2), h(KNASENC_EEA2));
        assert_eq!(nas_key(&k, NasKey::Encryption, 0), h(KNASENC_EEA0));
        assert_eq!(kenb(&k, 0), h(KENB_COUNT0));
    }
}
