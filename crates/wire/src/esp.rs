//! ESP, the IPsec Encapsulating Security Payload (IP protocol 50), with
//! AES-GCM-128 as its only transform, as the VPN between the regions uses it.
//!
//! Read RFC 4303 first: § 2 for the packet (SPI, Sequence Number, the
//! payload, Padding, Pad Length, Next Header, the ICV), § 2.4 for the
//! padding ("initialized with a series of (unsigned, 1-byte) integer values
//! … 1, 2, 3, …" and the 4-byte alignment of Pad Length and Next Header),
//! § 3.3.3 for the sender's counter and § 3.4.3 for the receiver's sliding
//! anti-replay window. Then RFC 4106: § 3.1 for the 8-byte explicit IV that
//! follows the sequence number, § 4 for the nonce (the 4-byte salt of the
//! key material then that IV), § 5 for the AAD (SPI ‖ sequence number, no
//! extended sequence numbers here) and § 8.1 for the key material (the
//! 16-byte AES key then the 4-byte salt, 20 bytes).
//!
//! [`EspPacket`] is the view of a received packet; [`GcmSa`] seals and
//! opens with one key; [`ReplayWindow`] is the receiver's window, sans-IO.
//! The cipher is ring's AES-GCM (docs/vpn.md has why and what it costs).

use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_128_GCM};
use std::fmt;

/// IP protocol number of ESP [RFC 4303 § 2].
pub const PROTOCOL: u8 = 50;
/// SPI and sequence number [RFC 4303 § 2].
pub const HEADER_LEN: usize = 8;
/// The explicit IV of AES-GCM [RFC 4106 § 3.1].
pub const IV_LEN: usize = 8;
/// The ICV of AES-GCM with a 16-octet tag [RFC 4106 § 3.3 and § 8.2].
pub const ICV_LEN: usize = 16;
/// Key material: AES-128 key then salt [RFC 4106 § 8.1].
pub const KEY_MATERIAL_LEN: usize = 20;
/// Header, IV, Pad Length + Next Header and ICV: what ESP adds to a payload
/// before padding. With the outer IPv4 header of tunnel mode (20) and at
/// most 3 padding bytes, a tunnelled packet grows by at most 57 bytes.
pub const OVERHEAD: usize = HEADER_LEN + IV_LEN + 2 + ICV_LEN;
/// The most a packet of `n` bytes grows by in tunnel mode: outer IPv4 and
/// ESP with the worst padding.
pub const TUNNEL_OVERHEAD: usize = 20 + OVERHEAD + 3;
/// Next Header for a tunnelled IPv4 packet [RFC 4303 § 2.6].
pub const NEXT_IPV4: u8 = 4;
/// The smallest ESP packet: header, IV, a 4-byte-aligned trailer, ICV.
pub const MIN_LEN: usize = HEADER_LEN + IV_LEN + 4 + ICV_LEN;

mod field {
    use std::ops::Range;
    pub const SPI: Range<usize> = 0..4;
    pub const SEQ: Range<usize> = 4..8;
    pub const IV: Range<usize> = 8..16;
    pub const CIPHERTEXT: usize = 16;
}

/// The Security Parameters Index: with the destination it names the SA
/// [RFC 4303 § 2.1]. 0 is reserved, 1–255 are IANA's.
#[derive(
    Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, serde::Serialize, serde::Deserialize,
)]
pub struct Spi(pub u32);

impl Spi {
    /// Whether an SA may use it: 1–255 are reserved and 0 is "no SA"
    /// [RFC 4303 § 2.1].
    pub const fn is_assignable(self) -> bool {
        self.0 > 255
    }
}

impl fmt::Display for Spi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:08x}", self.0)
    }
}

/// Why a packet is not an ESP packet we can open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EspError {
    /// shorter than header, IV, a 4-byte trailer and the ICV
    #[error("shorter than ESP's header, IV, trailer and ICV")]
    Truncated,
    /// the ciphertext is not a multiple of 4 bytes [RFC 4303 § 2.4]
    #[error("the ciphertext is not a multiple of 4 bytes [RFC 4303 § 2.4]")]
    Misaligned,
    /// the ICV does not verify: a changed bit, or another key
    #[error("the ICV does not verify [RFC 4106 § 3.3]")]
    BadIcv,
    /// decrypted, but the Pad Length is longer than the payload or the
    /// padding is not 1, 2, 3, … [RFC 4303 § 2.4]
    #[error("bad padding after decryption [RFC 4303 § 2.4]")]
    BadPadding,
}

/// A view of an ESP packet (the IP payload). After [`EspPacket::new_checked`]
/// no accessor panics.
#[derive(Debug, Clone)]
pub struct EspPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EspPacket<T> {
    /// Checks that the header, IV, ICV and a 4-byte-aligned ciphertext of at
    /// least 4 bytes are there.
    pub fn new_checked(buffer: T) -> Result<Self, EspError> {
        let n = buffer.as_ref().len();
        if n < MIN_LEN {
            return Err(EspError::Truncated);
        }
        if !(n - HEADER_LEN - IV_LEN - ICV_LEN).is_multiple_of(4) {
            return Err(EspError::Misaligned);
        }
        Ok(EspPacket { buffer })
    }

    pub fn spi(&self) -> Spi {
        let b = &self.buffer.as_ref()[field::SPI];
        Spi(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn seq(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::SEQ];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    pub fn iv(&self) -> [u8; IV_LEN] {
        let mut iv = [0; IV_LEN];
        iv.copy_from_slice(&self.buffer.as_ref()[field::IV]);
        iv
    }

    /// The encrypted payload, padding, Pad Length and Next Header.
    pub fn ciphertext(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[field::CIPHERTEXT..b.len() - ICV_LEN]
    }

    pub fn icv(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[b.len() - ICV_LEN..]
    }

    /// SPI ‖ sequence number, the AAD [RFC 4106 § 5].
    pub fn aad(&self) -> &[u8] {
        &self.buffer.as_ref()[..HEADER_LEN]
    }
}

impl<T: AsRef<[u8]>> fmt::Display for EspPacket<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ESP spi={} seq={} len={}",
            self.spi(),
            self.seq(),
            self.buffer.as_ref().len()
        )
    }
}

/// What [`GcmSa::open`] found inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// The protocol of the payload: 4 for a tunnelled IPv4 packet.
    pub next_header: u8,
    /// The payload's length at the front of the caller's buffer.
    pub len: usize,
}

/// One direction's AES-GCM-128 key with its salt [RFC 4106 § 8.1].
#[derive(Clone)]
pub struct GcmSa {
    /// ring's AES-GCM, the AES-NI and CLMUL code rustls uses.
    cipher: LessSafeKey,
    salt: [u8; 4],
}

impl fmt::Debug for GcmSa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GcmSa { .. }")
    }
}

impl GcmSa {
    /// From 20 bytes of key material: the AES-128 key, then the salt.
    pub fn new(material: &[u8; KEY_MATERIAL_LEN]) -> GcmSa {
        let key = UnboundKey::new(&AES_128_GCM, &material[..16]).expect("a 16-byte AES key");
        let cipher = LessSafeKey::new(key);
        let mut salt = [0; 4];
        salt.copy_from_slice(&material[16..]);
        GcmSa { cipher, salt }
    }

    /// Salt ‖ IV [RFC 4106 § 4]: unique per packet as long as the IV is.
    fn nonce(&self, iv: &[u8; IV_LEN]) -> Nonce {
        let mut n = [0; 12];
        n[..4].copy_from_slice(&self.salt);
        n[4..].copy_from_slice(iv);
        Nonce::assume_unique_for_key(n)
    }

    /// Appends the ESP packet carrying `payload` to `out`: header, IV, the
    /// payload with its padding (1, 2, 3, … up to 4-byte alignment), Pad
    /// Length and Next Header encrypted, then the ICV over SPI ‖ seq and
    /// the ciphertext [RFC 4303 § 2; RFC 4106 § 3–5]. The IV must never
    /// repeat under one key: the sender uses its sequence number.
    pub fn seal(
        &self,
        spi: Spi,
        seq: u32,
        iv: [u8; IV_LEN],
        next_header: u8,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) {
        let start = out.len();
        out.extend_from_slice(&spi.0.to_be_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&iv);
        let body = out.len();
        out.extend_from_slice(payload);
        let pad = (4 - (payload.len() + 2) % 4) % 4;
        out.extend((1..=pad).map(|i| i as u8));
        out.push(pad as u8);
        out.push(next_header);
        let (head, text) = out.split_at_mut(body);
        let aad = &head[start..start + HEADER_LEN];
        let tag = self
            .cipher
            .seal_in_place_separate_tag(self.nonce(&iv), Aad::from(aad), text)
            .expect("a payload within AES-GCM's 64 GiB");
        out.extend_from_slice(tag.as_ref());
    }

    /// Verifies and decrypts `esp` into `buf` (cleared first); the payload
    /// is `buf[..opened.len]`. The padding is checked as § 2.4 allows.
    pub fn open<T: AsRef<[u8]>>(
        &self,
        esp: &EspPacket<T>,
        buf: &mut Vec<u8>,
    ) -> Result<Opened, EspError> {
        buf.clear();
        buf.extend_from_slice(esp.ciphertext());
        let tag = Tag::try_from(esp.icv()).map_err(|_| EspError::BadIcv)?;
        self.cipher
            .open_in_place_separate_tag(
                self.nonce(&esp.iv()),
                Aad::from(esp.aad()),
                tag,
                &mut buf[..],
                0..,
            )
            .map_err(|_| EspError::BadIcv)?;
        let n = buf.len();
        let (pad, next_header) = (usize::from(buf[n - 2]), buf[n - 1]);
        let Some(len) = n.checked_sub(2 + pad) else {
            return Err(EspError::BadPadding);
        };
        if (0..pad).any(|i| usize::from(buf[len + i]) != i + 1) {
            return Err(EspError::BadPadding);
        }
        Ok(Opened { next_header, len })
    }
}

/// The width of the receive window in packets. RFC 4303 § 3.4.3 asks for at
/// least 32 and recommends 64; 128 keeps a burst reordered by the carriers'
/// two paths inside.
pub const WINDOW: u32 = 128;

/// Why [`ReplayWindow::check`] refuses a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// sequence number 0 is never sent: the counter starts at 1 [RFC 4303 § 3.3.3]
    #[error("sequence number 0 is never sent [RFC 4303 § 3.3.3]")]
    Zero,
    /// this sequence number was already received [RFC 4303 § 3.4.3]
    #[error("a replay: the sequence number was already received [RFC 4303 § 3.4.3]")]
    Replayed,
    /// to the left of the window: too old to tell [RFC 4303 § 3.4.3]
    #[error("left of the receive window [RFC 4303 § 3.4.3]")]
    OutsideWindow,
}

/// The receiver's sliding anti-replay window [RFC 4303 § 3.4.3]: the
/// highest sequence number verified so far and a bitmap of the [`WINDOW`]
/// numbers up to it. [`Self::check`] before the ICV (cheap refusals), then
/// [`Self::accept`] only once the ICV verified, so a forged packet never
/// moves the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    /// The highest sequence number accepted; 0 before the first.
    top: u32,
    /// Bit i set: `top - i` was received.
    bits: u128,
}

impl ReplayWindow {
    pub const fn new() -> ReplayWindow {
        ReplayWindow { top: 0, bits: 0 }
    }

    /// The highest sequence number accepted.
    pub const fn top(&self) -> u32 {
        self.top
    }

    /// How many of the window's numbers were received.
    pub const fn received_in_window(&self) -> u32 {
        self.bits.count_ones()
    }

    /// Whether `seq` may be new: right of the window, or inside it and not
    /// yet seen.
    pub fn check(&self, seq: u32) -> Result<(), ReplayError> {
        if seq == 0 {
            return Err(ReplayError::Zero);
        }
        if seq > self.top {
            return Ok(());
        }
        let behind = self.top - seq;
        if behind >= WINDOW {
            return Err(ReplayError::OutsideWindow);
        }
        if self.bits >> behind & 1 == 1 {
            return Err(ReplayError::Replayed);
        }
        Ok(())
    }

    /// Records `seq` as received (after [`Self::check`] and the ICV),
    /// sliding the window right when it is the new highest.
    pub fn accept(&mut self, seq: u32) {
        if seq > self.top {
            let ahead = seq - self.top;
            self.bits = if ahead >= WINDOW {
                0
            } else {
                self.bits << ahead
            };
            self.bits |= 1;
            self.top = seq;
        } else if self.top - seq < WINDOW {
            self.bits |= 1 << (self.top - seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex;
    use proptest::prelude::*;

    // Made by crates/wire/fixtures/esp.py (/usr/bin/python3 with scapy 2.5's
    // scapy.layers.ipsec.SecurityAssociation(ESP, spi=0x1001,
    // crypt_algo="AES-GCM", crypt_key=KEY, tunnel_header=IP(src="203.0.113.2",
    // dst="198.19.24.2", id=1, ttl=64)), seq_num=5, encrypt(INNER, iv=IV)):
    // INNER: IP(src="192.168.1.20", dst="172.20.1.20", id=7, ttl=63,
    //        flags="DF")/ICMP(id=0x77, seq=1)/b"abcdefgh"
    const KEY: &str = "000102030405060708090a0b0c0d0e0fa0a1a2a3";
    const IV: [u8; 8] = [0, 1, 2, 3, 4, 5, 6, 7];
    const INNER: &str = "45000024000740003f01ccedc0a80114ac140114080065f2007700016162636465666768";
    const OUTER: &str = "4500005c0001000040326057cb007102c613180200001001000000050001020304050607332730178ad788f2e14a094a8e0ac4ff0cf7701a4acd250f9c4d0c6e1e2ac174ee7375e3775bab6098e574efdc21350d41da267abde64347";

    fn sa() -> GcmSa {
        GcmSa::new(&hex(KEY).try_into().unwrap())
    }

    fn scapy_esp() -> Vec<u8> {
        hex(OUTER)[20..].to_vec()
    }

    #[test]
    fn scapys_esp_opens_to_the_inner_packet() {
        let esp = scapy_esp();
        let p = EspPacket::new_checked(&esp[..]).unwrap();
        assert_eq!((p.spi(), p.seq(), p.iv()), (Spi(0x1001), 5, IV));
        assert_eq!(p.to_string(), "ESP spi=0x00001001 seq=5 len=72");
        let mut buf = vec![];
        let o = sa().open(&p, &mut buf).unwrap();
        assert_eq!(o.next_header, NEXT_IPV4);
        assert_eq!(&buf[..o.len], &hex(INNER)[..]);
    }

    #[test]
    fn seal_makes_scapys_bytes_exactly() {
        let mut out = vec![];
        sa().seal(Spi(0x1001), 5, IV, NEXT_IPV4, &hex(INNER), &mut out);
        assert_eq!(out, scapy_esp());
    }

    #[test]
    fn a_flipped_bit_anywhere_is_a_bad_icv() {
        let esp = scapy_esp();
        let mut buf = vec![];
        for i in 0..esp.len() {
            let mut e = esp.clone();
            e[i] ^= 0x10;
            let p = EspPacket::new_checked(&e[..]).unwrap();
            assert_eq!(sa().open(&p, &mut buf), Err(EspError::BadIcv), "byte {i}");
        }
        let other = GcmSa::new(&[7; 20]);
        let p = EspPacket::new_checked(&esp[..]).unwrap();
        assert_eq!(other.open(&p, &mut buf), Err(EspError::BadIcv));
    }

    #[test]
    fn short_and_misaligned_packets_are_refused_before_the_cipher() {
        let esp = scapy_esp();
        assert_eq!(
            EspPacket::new_checked(&esp[..MIN_LEN - 1]).unwrap_err(),
            EspError::Truncated
        );
        assert_eq!(
            EspPacket::new_checked(&esp[..esp.len() - 1]).unwrap_err(),
            EspError::Misaligned
        );
    }

    /// An ESP packet around `plain` as given (padding, Pad Length and Next
    /// Header included), sealed with the fixture's key: what a sender with
    /// the right key but a broken trailer would send.
    fn forge(plain: &[u8]) -> Vec<u8> {
        let s = sa();
        let head = [0, 0, 1, 44, 0, 0, 0, 1];
        let mut text = plain.to_vec();
        let tag = s
            .cipher
            .seal_in_place_separate_tag(s.nonce(&IV), Aad::from(head), &mut text)
            .unwrap();
        [&head[..], &IV, &text, tag.as_ref()].concat()
    }

    #[test]
    fn padding_that_is_not_1_2_3_or_longer_than_the_payload_is_refused() {
        let mut buf = vec![];
        let open =
            |b: &[u8], buf: &mut Vec<u8>| sa().open(&EspPacket::new_checked(b).unwrap(), buf);
        assert_eq!(
            open(&forge(&[0xaa, 1, 1, 4]), &mut buf),
            Ok(Opened {
                next_header: 4,
                len: 1
            })
        );
        assert_eq!(
            open(&forge(&[0xaa, 9, 1, 4]), &mut buf),
            Err(EspError::BadPadding)
        );
        assert_eq!(
            open(&forge(&[0xaa, 0xbb, 200, 4]), &mut buf),
            Err(EspError::BadPadding)
        );
    }

    #[test]
    fn the_window_takes_new_numbers_and_reordered_ones_once() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.check(0), Err(ReplayError::Zero));
        for s in [1, 2, 5, 3] {
            assert_eq!(w.check(s), Ok(()), "{s}");
            w.accept(s);
        }
        assert_eq!(w.top(), 5);
        for s in [1, 2, 3, 5] {
            assert_eq!(w.check(s), Err(ReplayError::Replayed), "{s}");
        }
        assert_eq!(w.check(4), Ok(()));
        assert_eq!(w.received_in_window(), 4);
    }

    #[test]
    fn the_window_slides_and_forgets_what_falls_off_its_left_edge() {
        let mut w = ReplayWindow::new();
        w.accept(1);
        w.accept(1000);
        assert_eq!(w.check(1), Err(ReplayError::OutsideWindow));
        assert_eq!(w.check(1000 - WINDOW), Err(ReplayError::OutsideWindow));
        assert_eq!(w.check(1001 - WINDOW), Ok(()));
        w.accept(1001 - WINDOW);
        assert_eq!(w.check(1001 - WINDOW), Err(ReplayError::Replayed));
        // A jump of exactly the width clears everything but the new top.
        w.accept(1000 + WINDOW);
        assert_eq!(w.received_in_window(), 1);
        assert_eq!(w.check(1001), Ok(()));
        assert_eq!(w.check(1000), Err(ReplayError::OutsideWindow));
        w.accept(u32::MAX);
        assert_eq!(w.check(u32::MAX), Err(ReplayError::Replayed));
    }

    proptest! {
        #[test]
        fn seal_then_open_gives_the_payload_back(
            payload in proptest::collection::vec(any::<u8>(), 0..1600),
            spi in 256u32.., seq in 1u32.., iv in any::<[u8; 8]>(), nh in any::<u8>(),
        ) {
            let s = sa();
            let mut out = vec![];
            s.seal(Spi(spi), seq, iv, nh, &payload, &mut out);
            prop_assert!(out.len() <= payload.len() + OVERHEAD + 3);
            let p = EspPacket::new_checked(&out[..]).unwrap();
            prop_assert_eq!((p.spi(), p.seq(), p.iv()), (Spi(spi), seq, iv));
            let mut buf = vec![];
            let o = s.open(&p, &mut buf).unwrap();
            prop_assert_eq!(o.next_header, nh);
            prop_assert_eq!(&buf[..o.len], &payload[..]);
        }

        #[test]
        fn random_bytes_never_panic_and_never_open(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(p) = EspPacket::new_checked(&b[..]) {
                let _ = (p.spi(), p.seq(), p.iv(), p.to_string());
                let mut buf = vec![];
                prop_assert!(sa().open(&p, &mut buf).is_err());
            }
        }

        #[test]
        fn the_window_never_accepts_a_number_twice(seqs in proptest::collection::vec(1u32..400, 0..300)) {
            let mut w = ReplayWindow::new();
            let mut seen = std::collections::HashSet::new();
            for s in seqs {
                if w.check(s).is_ok() {
                    prop_assert!(seen.insert(s), "{} twice", s);
                    w.accept(s);
                }
            }
        }
    }
}
