//! The Internet checksum [RFC 1071] and its incremental update [RFC 1624].
//!
//! Read RFC 1624 § 3 first: a router that changes one 16-bit word of a header
//! (TTL and protocol share a word) must not recompute the whole sum; it folds
//! the difference in with `HC' = ~(~HC + ~m + m')`. Equation 3 is used, not
//! equation 2, so the result is never the forbidden `-0` (0xffff → 0x0000 bug).

use std::net::Ipv4Addr;

/// The one's-complement sum of `data` as 16-bit big-endian words, folded to
/// 16 bits but not inverted. An odd final byte is padded with zero [RFC 1071
/// § 4.1]. Folded, so partial sums (a pseudo-header's, a segment's) add up
/// in a `u32` without overflow: a sum left at 32 bits could be 0xffffffff,
/// and the carry lost past it made the checksum one off [RFC 1071 § 2 (B)].
pub fn sum(data: &[u8]) -> u32 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        acc += (w >> 32) + (w & 0xffff_ffff);
    }
    let mut rest = chunks.remainder().chunks_exact(2);
    for c in &mut rest {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = rest.remainder() {
        acc += u64::from(*b) << 8;
    }
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u32
}

/// Folds a 32-bit partial sum to 16 bits (end-around carry).
pub fn fold(mut s: u32) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The checksum field value for `data`: the complement of its folded sum.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// The partial sum of the IPv4 pseudo-header used by TCP and UDP [RFC 793 § 3.1].
pub fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: u16) -> u32 {
    sum(&src.octets()) + sum(&dst.octets()) + u32::from(protocol) + u32::from(len)
}

/// RFC 1624 eqn. 3: the new checksum after one 16-bit word changed from `old`
/// to `new`.
pub fn update_word(hc: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!hc) + u32::from(!old) + u32::from(new))
}

/// RFC 1624 eqn. 3 for a 32-bit field (an IPv4 address): two words at once.
pub fn update_u32(hc: u16, old: u32, new: u32) -> u16 {
    let s = u32::from(!hc)
        + u32::from(!(old >> 16) as u16)
        + u32::from(!(old as u16))
        + (new >> 16)
        + (new & 0xffff);
    !fold(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // scapy: bytes(IP(src="192.0.2.1", dst="192.0.2.2", id=0x3c6b, flags="DF",
    //   ttl=64, proto=1, len=84))[:20]; scapy computed the checksum 0x7a3a.
    const IPV4_HDR: [u8; 20] = [
        0x45, 0x00, 0x00, 0x54, 0x3c, 0x6b, 0x40, 0x00, 0x40, 0x01, 0x7a, 0x3a, 0xc0, 0x00, 0x02,
        0x01, 0xc0, 0x00, 0x02, 0x02,
    ];

    #[test]
    fn a_correct_header_sums_to_all_ones() {
        assert_eq!(fold(sum(&IPV4_HDR)), 0xffff);
        let mut h = IPV4_HDR;
        h[10] = 0;
        h[11] = 0;
        assert_eq!(checksum(&h), 0x7a3a);
    }

    #[test]
    fn ttl_decrement_updates_the_checksum_like_a_full_recompute() {
        let mut h = IPV4_HDR;
        let old = u16::from_be_bytes([h[8], h[9]]);
        h[8] -= 1;
        let new = u16::from_be_bytes([h[8], h[9]]);
        let hc = update_word(u16::from_be_bytes([h[10], h[11]]), old, new);
        h[10..12].copy_from_slice(&hc.to_be_bytes());
        let mut z = h;
        z[10] = 0;
        z[11] = 0;
        assert_eq!(hc, checksum(&z));
    }

    #[test]
    fn odd_length_is_padded_with_zero() {
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    proptest! {
        /// The sum of 16-bit words, folded, whatever the data (all ones
        /// included) and the partial sum (a pseudo-header's) added to it.
        #[test]
        fn partial_sums_add_up_to_the_sum_of_sixteen_bit_words(
            data in proptest::collection::vec(prop_oneof![Just(0xffu8), any::<u8>()], 0..64),
            partial in 0u32..=0x4_00fa,
        ) {
            let words: u64 = data
                .chunks(2)
                .map(|c| u64::from(c[0]) << 8 | u64::from(*c.get(1).unwrap_or(&0)))
                .sum();
            let mut reference = words + u64::from(partial);
            while reference >> 16 != 0 {
                reference = (reference & 0xffff) + (reference >> 16);
            }
            prop_assert!(sum(&data) <= 0xffff);
            prop_assert_eq!(u64::from(fold(partial + sum(&data))), reference);
        }

        #[test]
        fn incremental_update_matches_recompute(mut data in proptest::collection::vec(any::<u8>(), 16..64), w in 0usize..4, new in any::<u16>(), new32 in any::<u32>()) {
            // checksum field at bytes 10..12; the word we change at 2*w (< 10) and an address at 12..16
            data[10] = 0; data[11] = 0;
            let hc = checksum(&data);
            let old = u16::from_be_bytes([data[2 * w], data[2 * w + 1]]);
            data[2 * w..2 * w + 2].copy_from_slice(&new.to_be_bytes());
            let hc1 = update_word(hc, old, new);
            let old32 = u32::from_be_bytes([data[12], data[13], data[14], data[15]]);
            data[12..16].copy_from_slice(&new32.to_be_bytes());
            let hc2 = update_u32(hc1, old32, new32);
            // Equal as one's-complement numbers: 0x0000 and 0xffff both mean zero.
            let full = checksum(&data);
            prop_assert!(hc2 == full || (hc2 == 0xffff && full == 0) || (hc2 == 0 && full == 0xffff));
        }
    }
}
