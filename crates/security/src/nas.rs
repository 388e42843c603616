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
}
