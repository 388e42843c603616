//! NAS integrity and ciphering with AES: 128-EIA2 (CMAC, NIST SP 800-38B)
//! and 128-EEA2 (CTR, NIST SP 800-38A) [TS 33.401 Annex B.1.3, B.2.3].
//!
//! Both bind the message to its NAS COUNT, the bearer (0 for NAS: the
//! "bearer identity" of TS 33.401 § 8.1.1 is constant 0) and the direction
//! (0 uplink, 1 downlink). A MAC is the first 32 bits of the CMAC.

use aes::cipher::{BlockEncrypt, KeyInit};
use aes::Aes128;
use cmac::{Cmac, Mac};

/// Which way a NAS message goes [TS 33.401 B.1.1].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Uplink = 0,
    Downlink = 1,
}

/// COUNT ‖ BEARER ‖ DIRECTION as the first 64 bits of the CMAC input and of
/// the counter block.
fn prefix(count: u32, bearer: u8, dir: Direction) -> [u8; 8] {
    let mut p = [0u8; 8];
    p[..4].copy_from_slice(&count.to_be_bytes());
    p[4] = (bearer & 0x1f) << 3 | (dir as u8) << 2;
    p
}

/// 128-EIA2's NAS-MAC over `msg` [TS 33.401 B.2.3].
pub fn eia2(key: &[u8; 16], count: u32, bearer: u8, dir: Direction, msg: &[u8]) -> [u8; 4] {
    let mut mac = <Cmac<Aes128> as KeyInit>::new(key.into());
    mac.update(&prefix(count, bearer, dir));
    mac.update(msg);
    mac.finalize().into_bytes()[..4].try_into().expect("4")
}

/// The NAS-MAC of a security protected NAS message: 128-EIA2 over its
/// sequence number and the (ciphered) message, bearer 0 [TS 24.301
/// § 4.4.3.3, § 9.1; TS 33.401 § 8.1.1].
pub fn nas_mac(key: &[u8; 16], count: u32, dir: Direction, sn: u8, message: &[u8]) -> [u8; 4] {
    let mut mac = <Cmac<Aes128> as KeyInit>::new(key.into());
    mac.update(&prefix(count, 0, dir));
    mac.update(&[sn]);
    mac.update(message);
    mac.finalize().into_bytes()[..4].try_into().expect("4")
}

/// 128-EEA2: XORs `msg` with the AES-CTR keystream from the counter block
/// COUNT ‖ BEARER ‖ DIRECTION ‖ 0…; the same call deciphers [TS 33.401 B.1.3].
pub fn eea2(key: &[u8; 16], count: u32, bearer: u8, dir: Direction, msg: &mut [u8]) {
    let cipher = Aes128::new(key.into());
    let mut block = [0u8; 16];
    block[..8].copy_from_slice(&prefix(count, bearer, dir));
    let base = u64::from_be_bytes(block[8..].try_into().expect("8"));
    for (i, chunk) in msg.chunks_mut(16).enumerate() {
        let mut ks = block;
        ks[8..].copy_from_slice(&base.wrapping_add(i as u64).to_be_bytes());
        let mut b = ks.into();
        cipher.encrypt_block(&mut b);
        for (m, k) in chunk.iter_mut().zip(b.iter()) {
            *m ^= k;
        }
    }
}

/// A NAS security context's keys [TS 33.401 § 7.2.4.1, A.7]: KNASint for
/// 128-EIA2, and KNASenc when 128-EEA2 was selected (None: EEA0, the null
/// cipher, leaves the message as it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NasKeys {
    pub int: [u8; 16],
    pub enc: Option<[u8; 16]>,
}

impl NasKeys {
    /// EIA2's and `eea`'s keys from KASME (algorithm type distinguishers
    /// 0x02 and 0x01 [TS 33.401 A.7]); None for an EEA other than 0 and 2.
    pub fn derive(kasme: &[u8; 32], eea: u8) -> Option<NasKeys> {
        let enc = match eea {
            0 => None,
            2 => Some(crate::kdf::nas_key(
                kasme,
                crate::kdf::NasKey::Encryption,
                2,
            )),
            _ => return None,
        };
        Some(NasKeys {
            int: crate::kdf::nas_key(kasme, crate::kdf::NasKey::Integrity, 2),
            enc,
        })
    }

    /// The selected ciphering algorithm: 0 (EEA0) or 2 (128-EEA2).
    pub fn eea(&self) -> u8 {
        if self.enc.is_some() {
            2
        } else {
            0
        }
    }

    /// Protects `message` in place for NAS COUNT `count`: ciphered first
    /// when its security header type ciphers (2 or 4: `ciphered`), then the
    /// NAS-MAC over the sequence number and the ciphered message [TS 24.301
    /// § 4.4.5, § 4.4.3.3].
    pub fn seal(&self, count: u32, dir: Direction, ciphered: bool, message: &mut [u8]) -> [u8; 4] {
        if let (true, Some(k)) = (ciphered, &self.enc) {
            eea2(k, count, 0, dir, message);
        }
        nas_mac(&self.int, count, dir, count as u8, message)
    }

    /// The receiver's side of [`NasKeys::seal`]: the MAC checked over the
    /// message as received, then the message deciphered in place; false
    /// (and the message untouched) when the MAC is not the sender's.
    pub fn open(
        &self,
        count: u32,
        dir: Direction,
        ciphered: bool,
        mac: [u8; 4],
        message: &mut [u8],
    ) -> bool {
        if nas_mac(&self.int, count, dir, count as u8, message) != mac {
            return false;
        }
        if let (true, Some(k)) = (ciphered, &self.enc) {
            eea2(k, count, 0, dir, message);
        }
        true
    }

    /// [`NasKeys::open`] for a message whose header carries `sn`, the low
    /// octet of its NAS COUNT: the COUNT is estimated from `next`, the
    /// receiver's next expected one (its overflow counter, plus one when
    /// `sn` wrapped below it), and `next` moves past it once the MAC holds
    /// [TS 24.301 § 4.4.3.1]. The deciphered message, or None.
    pub fn open_next(
        &self,
        next: &mut u32,
        sn: u8,
        dir: Direction,
        ciphered: bool,
        mac: [u8; 4],
        message: &[u8],
    ) -> Option<Vec<u8>> {
        let mut count = (*next & !0xff) | u32::from(sn);
        if count < *next {
            count += 0x100;
        }
        let mut plain = message.to_vec();
        if !self.open(count, dir, ciphered, mac, &mut plain) {
            return None;
        }
        *next = count + 1;
        Some(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kdf::tests::{h, KNASENC_EEA2, KNASINT_EIA2};

    // Python's `cryptography` (OpenSSL) with the keys of kdf.rs's tests,
    // COUNT 0, bearer 0, downlink, over a plain Security Mode Command:
    //   m = bytes.fromhex("075d020004e060c04070")
    //   c = CMAC(algorithms.AES(knasint)); c.update(bytes([0,0,0,0,4,0,0,0]) + m)
    //   c.finalize()[:4]
    //   Cipher(algorithms.AES(knasenc), modes.CTR(bytes([0,0,0,0,4]) + bytes(11)))
    const SMC: &str = "075d020004e060c04070";
    const MAC: &str = "c990d281";
    const CIPHERED: &str = "74fe394980984578315e";

    #[test]
    fn eia2_and_eea2_match_openssl() {
        let msg: [u8; 10] = h(SMC);
        assert_eq!(
            eia2(&h(KNASINT_EIA2), 0, 0, Direction::Downlink, &msg),
            h::<4>(MAC)
        );
        assert_ne!(
            eia2(&h(KNASINT_EIA2), 1, 0, Direction::Downlink, &msg),
            h::<4>(MAC)
        );
        assert_ne!(
            eia2(&h(KNASINT_EIA2), 0, 0, Direction::Uplink, &msg),
            h::<4>(MAC)
        );
        let mut m = msg;
        eea2(&h(KNASENC_EEA2), 0, 0, Direction::Downlink, &mut m);
        assert_eq!(m, h::<10>(CIPHERED));
        eea2(&h(KNASENC_EEA2), 0, 0, Direction::Downlink, &mut m);
        assert_eq!(m, msg);
    }

    // Forty zero octets under key 07…07, COUNT 5, uplink: the keystream
    // (Cipher(algorithms.AES(bytes([7] * 16)), modes.CTR(bytes([0, 0, 0, 5, 0])
    // + bytes(11)))).
    const KEYSTREAM: &str =
        "387e670d3ea2a08ee5a4b116ebb881028287a2d8572710104605b1f2974853db2eea8e45bbae6b1f";

    // crates/wire's NAS fixtures (crates/wire/fixtures/nas.py): the
    // Security Mode Command and Complete as the MME and the phone protect
    // them, MAC from OpenSSL's CMAC over COUNT 0 ‖ SN ‖ message.
    const PROTECTED_SMC: &str = "371b8be66700075d020002e0e0";
    const SMC_COMPLETE: &str = "47e745c84100075e";

    #[test]
    fn nas_macs_match_the_protected_fixtures() {
        let key = h(KNASINT_EIA2);
        let smc: [u8; 13] = h(PROTECTED_SMC);
        assert_eq!(
            nas_mac(&key, 0, Direction::Downlink, smc[5], &smc[6..]),
            smc[1..5]
        );
        let done: [u8; 8] = h(SMC_COMPLETE);
        assert_eq!(
            nas_mac(&key, 0, Direction::Uplink, done[5], &done[6..]),
            done[1..5]
        );
        assert_ne!(
            nas_mac(&key, 1, Direction::Uplink, done[5], &done[6..]),
            done[1..5]
        );
    }

    #[test]
    fn eea2_runs_the_counter_across_blocks() {
        let mut long = [0u8; 40];
        eea2(&[7; 16], 5, 0, Direction::Uplink, &mut long);
        assert_eq!(long, h::<40>(KEYSTREAM));
    }

    // An Attach Accept (crates/wire's fixture) as an EEA2 MME sends it at
    // downlink COUNT 0x000102 (SN 2), security header type 2, made with
    // Python's `cryptography` (OpenSSL) and the keys of kdf.rs's tests:
    //   m = bytes.fromhex(ATTACH_ACCEPT); count = 0x000102
    //   pre = count.to_bytes(4, "big") + bytes([1 << 2, 0, 0, 0])
    //   e = Cipher(algorithms.AES(knasenc), modes.CTR(pre + bytes(8))).encryptor()
    //   ct = e.update(m) + e.finalize()
    //   c = CMAC(algorithms.AES(knasint)); c.update(pre + bytes([count & 0xff]) + ct)
    //   (bytes([0x27]) + c.finalize()[:4] + bytes([count & 0xff]) + ct).hex()
    const ATTACH_ACCEPT: &str = "07420129060000f110000100155201c101090908696e7465726e657405010a2d0002500bf600f110800101c0000001";
    const CIPHERED_ATTACH_ACCEPT: &str = "27c4c1492e02f94729c4ef8b025c1cbc0dd4faa2eb966c4143a9b55fc84fcb5acaf71a31bd9979577c4c1050c920a9a798e07088fe";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn an_openssl_ciphered_attach_accept_at_count_0x102_opens_and_seals_back() {
        let kasme = h(crate::kdf::tests::KASME);
        let keys = NasKeys::derive(&kasme, 2).expect("EEA2");
        assert_eq!(keys.eea(), 2);
        let pdu = hex(CIPHERED_ATTACH_ACCEPT);
        let (mac, sn) = (pdu[1..5].try_into().unwrap(), pdu[5]);
        assert_eq!(sn, 2);
        let mut m = pdu[6..].to_vec();
        // The wrong COUNT (SN right, overflow wrong) fails the MAC and
        // leaves the message alone.
        assert!(!keys.open(0x002, Direction::Downlink, true, mac, &mut m));
        assert_eq!(m, pdu[6..]);
        assert!(keys.open(0x102, Direction::Downlink, true, mac, &mut m));
        assert_eq!(m, hex(ATTACH_ACCEPT));
        assert_eq!(keys.seal(0x102, Direction::Downlink, true, &mut m), mac);
        assert_eq!(m, pdu[6..]);
    }

    #[test]
    fn eea0_keys_leave_the_message_readable_and_other_eeas_are_refused() {
        let kasme = h(crate::kdf::tests::KASME);
        let keys = NasKeys::derive(&kasme, 0).expect("EEA0");
        assert_eq!((keys.eea(), keys.int), (0, h(KNASINT_EIA2)));
        let mut m = hex(ATTACH_ACCEPT);
        let mac = keys.seal(7, Direction::Downlink, true, &mut m);
        assert_eq!(m, hex(ATTACH_ACCEPT));
        assert!(keys.open(7, Direction::Downlink, true, mac, &mut m));
        assert_eq!(NasKeys::derive(&kasme, 1), None);
        assert_eq!(NasKeys::derive(&kasme, 3), None);
    }

    #[test]
    fn open_next_estimates_the_count_across_the_sequence_number_wrap() {
        let keys = NasKeys {
            int: h(KNASINT_EIA2),
            enc: None,
        };
        let mut msg = *b"\x07\x43";
        // The sender is at COUNT 0x100 (SN 0); the receiver expects 0xff.
        let mac = keys.seal(0x100, Direction::Uplink, false, &mut msg);
        let mut next = 0xff;
        let wrong = [mac[0] ^ 1, mac[1], mac[2], mac[3]];
        assert_eq!(
            keys.open_next(&mut next, 0, Direction::Uplink, false, wrong, &msg),
            None
        );
        assert_eq!(next, 0xff);
        let plain = keys.open_next(&mut next, 0, Direction::Uplink, false, mac, &msg);
        assert_eq!(plain.as_deref(), Some(&msg[..]));
        assert_eq!(next, 0x101);
        // The same message again is a COUNT already used: 0x200 now.
        assert_eq!(
            keys.open_next(&mut next, 0, Direction::Uplink, false, mac, &msg),
            None
        );
    }
}
