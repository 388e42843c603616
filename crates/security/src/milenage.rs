//! Milenage: the authentication and key generation functions f1–f5, f1*
//! and f5* of EPS-AKA, on AES-128.
//!
//! Read 3GPP TS 35.206 § 4.1 first: OPc = OP ⊕ E_K(OP); TEMP = E_K(RAND ⊕
//! OPc); each OUTi = E_K(rot(TEMP ⊕ OPc, ri) ⊕ ci) ⊕ OPc (OUT1 starts from
//! SQN‖AMF‖SQN‖AMF instead of TEMP, then adds TEMP inside the cipher), with
//! the rotations r1–r5 = 64, 0, 32, 64, 96 bits and constants c1–c5 = 0, 1,
//! 2, 4, 8. TS 35.208 gives the test sets the tests check.

use aes::cipher::{BlockEncrypt, KeyInit};
use aes::Aes128;

/// A subscriber's long-term secrets as the HSS and the USIM hold them.
#[derive(Clone)]
pub struct Milenage {
    cipher: Aes128,
    opc: [u8; 16],
}

impl std::fmt::Debug for Milenage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Milenage { .. }")
    }
}

/// What f1–f5 give for one RAND [TS 35.206 § 4.1].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vector {
    /// f1: the network's authentication code.
    pub mac_a: [u8; 8],
    /// f2: the response the USIM computes.
    pub res: [u8; 8],
    /// f3: the cipher key.
    pub ck: [u8; 16],
    /// f4: the integrity key.
    pub ik: [u8; 16],
    /// f5: the anonymity key that hides SQN in AUTN.
    pub ak: [u8; 6],
}

fn xor<const N: usize>(a: &[u8; N], b: &[u8; N]) -> [u8; N] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

/// Cyclic rotation of 128 bits to the left by `bytes` octets (the r values
/// are multiples of eight).
fn rot(x: &[u8; 16], bytes: usize) -> [u8; 16] {
    std::array::from_fn(|i| x[(i + bytes) % 16])
}

impl Milenage {
    /// From K and OPc (what the lab's HSS stores).
    pub fn new(k: &[u8; 16], opc: &[u8; 16]) -> Milenage {
        Milenage {
            cipher: Aes128::new(k.into()),
            opc: *opc,
        }
    }

    /// From K and the operator's OP: OPc = OP ⊕ E_K(OP).
    pub fn with_op(k: &[u8; 16], op: &[u8; 16]) -> Milenage {
        let cipher = Aes128::new(k.into());
        let opc = xor(&encrypt(&cipher, op), op);
        Milenage { cipher, opc }
    }

    pub fn opc(&self) -> [u8; 16] {
        self.opc
    }

    fn e(&self, x: &[u8; 16]) -> [u8; 16] {
        encrypt(&self.cipher, x)
    }

    fn temp(&self, rand: &[u8; 16]) -> [u8; 16] {
        self.e(&xor(rand, &self.opc))
    }

    /// OUT1 of TS 35.206 § 4.1: f1 is its first half, f1* its second.
    fn out1(&self, rand: &[u8; 16], sqn: &[u8; 6], amf: &[u8; 2]) -> [u8; 16] {
        let temp = self.temp(rand);
        let mut in1 = [0u8; 16];
        in1[..6].copy_from_slice(sqn);
        in1[6..8].copy_from_slice(amf);
        in1[8..14].copy_from_slice(sqn);
        in1[14..].copy_from_slice(amf);
        // r1 = 64, c1 = 0.
        let x = xor(&temp, &rot(&xor(&in1, &self.opc), 8));
        xor(&self.e(&x), &self.opc)
    }

    /// OUT2–OUT5 from TEMP: rotation by `r` octets, constant `c` in the
    /// last octet.
    fn out(&self, temp: &[u8; 16], r: usize, c: u8) -> [u8; 16] {
        let mut x = rot(&xor(temp, &self.opc), r);
        x[15] ^= c;
        xor(&self.e(&x), &self.opc)
    }

    /// f1 (MAC-A) and f2–f5 for one challenge.
    pub fn vector(&self, rand: &[u8; 16], sqn: &[u8; 6], amf: &[u8; 2]) -> Vector {
        let out1 = self.out1(rand, sqn, amf);
        let temp = self.temp(rand);
        let out2 = self.out(&temp, 0, 1);
        let out3 = self.out(&temp, 4, 2);
        let out4 = self.out(&temp, 8, 4);
        Vector {
            mac_a: out1[..8].try_into().expect("8"),
            res: out2[8..].try_into().expect("8"),
            ck: out3,
            ik: out4,
            ak: out2[..6].try_into().expect("6"),
        }
    }

    /// f1*: the USIM's MAC-S in AUTS.
    pub fn f1_star(&self, rand: &[u8; 16], sqn: &[u8; 6], amf: &[u8; 2]) -> [u8; 8] {
        self.out1(rand, sqn, amf)[8..].try_into().expect("8")
    }

    /// f5*: the anonymity key of AUTS.
    pub fn f5_star(&self, rand: &[u8; 16]) -> [u8; 6] {
        let out5 = self.out(&self.temp(rand), 12, 8);
        out5[..6].try_into().expect("6")
    }
}

fn encrypt(cipher: &Aes128, x: &[u8; 16]) -> [u8; 16] {
    let mut b = (*x).into();
    cipher.encrypt_block(&mut b);
    b.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<const N: usize>(s: &str) -> [u8; N] {
        let v: Vec<u8> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect();
        v.try_into().unwrap()
    }

    /// TS 35.208 § 4.3: (K, RAND, SQN, AMF, OP, OPc, f1, f1*, f2, f5, f3, f4, f5*).
    const SETS: [[&str; 13]; 2] = [
        [
            "465b5ce8b199b49faa5f0a2ee238a6bc",
            "23553cbe9637a89d218ae64dae47bf35",
            "ff9bb4d0b607",
            "b9b9",
            "cdc202d5123e20f62b6d676ac72cb318",
            "cd63cb71954a9f4e48a5994e37a02baf",
            "4a9ffac354dfafb3",
            "01cfaf9ec4e871e9",
            "a54211d5e3ba50bf",
            "aa689c648370",
            "b40ba9a3c58b2a05bbf0d987b21bf8cb",
            "f769bcd751044604127672711c6d3441",
            "451e8beca43b",
        ],
        [
            "0396eb317b6d1c36f19c1c84cd6ffd16",
            "c00d603103dcee52c4478119494202e8",
            "fd8eef40df7d",
            "af17",
            "ff53bade17df5d4e793073ce9d7579fa",
            "53c15671c60a4b731c55b4a441c0bde2",
            "5df5b31807e258b0",
            "a8c016e51ef4a343",
            "d3a628ed988620f0",
            "c47783995f72",
            "58c433ff7a7082acd424220f2b67c556",
            "21a8c1f929702adb3e738488b9f5c5da",
            "30f1197061c1",
        ],
    ];

    #[test]
    fn the_ts_35_208_test_sets_come_out() {
        for s in SETS {
            let m = Milenage::with_op(&h(s[0]), &h(s[4]));
            assert_eq!(m.opc(), h(s[5]));
            let v = m.vector(&h(s[1]), &h(s[2]), &h(s[3]));
            assert_eq!(v.mac_a, h(s[6]));
            assert_eq!(m.f1_star(&h(s[1]), &h(s[2]), &h(s[3])), h(s[7]));
            assert_eq!(v.res, h(s[8]));
            assert_eq!(v.ak, h(s[9]));
            assert_eq!(v.ck, h(s[10]));
            assert_eq!(v.ik, h(s[11]));
            assert_eq!(m.f5_star(&h(s[1])), h(s[12]));
            assert_eq!(
                Milenage::new(&h(s[0]), &h(s[5])).vector(&h(s[1]), &h(s[2]), &h(s[3])),
                v
            );
        }
    }
}
