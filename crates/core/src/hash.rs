//! A fast hasher for the tables on the forwarding path (FIB, ARP cache, MAC
//! table): keys are a few bytes of addresses an element already trusts the
//! shape of, so the DoS resistance of std's SipHash buys little and costs
//! most of a lookup. The mixing step is FxHash's (rustc-hash).

use std::hash::{BuildHasherDefault, Hasher};

/// FxHash: rotate, xor in the next word, multiply.
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

const K: u64 = 0x517c_c1b7_2722_0a95;

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes([
                c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
            ]));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// `HashMap<K, V, FastBuild>` for forwarding tables.
pub type FastBuild = BuildHasherDefault<FastHasher>;
/// A `HashMap` with [`FastHasher`].
pub type FastMap<K, V> = std::collections::HashMap<K, V, FastBuild>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn distinct_addresses_spread_over_buckets() {
        let mut m: FastMap<Ipv4Addr, u32> = FastMap::default();
        for i in 0..10_000u32 {
            m.insert(Ipv4Addr::from(0x0a2d_0000 + i), i);
        }
        assert_eq!(m.len(), 10_000);
        assert_eq!(m[&Ipv4Addr::from(0x0a2d_0000 + 4242)], 4242);
        let low_bits: std::collections::HashSet<u64> = (0..256u32)
            .map(|i| {
                let mut h = FastHasher::default();
                std::hash::Hash::hash(&Ipv4Addr::from(0x0a2d_0000 + i), &mut h);
                h.finish() >> 56
            })
            .collect();
        assert!(low_bits.len() > 100, "top byte varies: {}", low_bits.len());
    }
}
