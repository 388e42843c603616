//! A small seeded pseudo-random generator for elements, the simulator and
//! impairments: xoshiro256** (Blackman & Vigna, "Scrambled Linear Pseudorandom
//! Number Generators", ACM TOMS 2021; reference `xoshiro256starstar.c`), its
//! state filled from the seed by SplitMix64 as the authors recommend.
//!
//! Not cryptographic. It exists so that one `u64` seed replays a run exactly:
//! the same seed gives the same sequence on every platform.

/// A seeded xoshiro256** generator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

/// One step of SplitMix64 (Steele, Lea & Flood 2014; reference `splitmix64.c`).
fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator whose state is four SplitMix64 outputs from `seed` (never
    /// the all-zero state, which xoshiro cannot leave).
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        Rng {
            s: [
                splitmix64(&mut x),
                splitmix64(&mut x),
                splitmix64(&mut x),
                splitmix64(&mut x),
            ],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)`, from the top 53 bits (every value a multiple of 2⁻⁵³).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `p` (`p ≤ 0` never, `p ≥ 1` always). Draws exactly
    /// one value whatever `p` is, so changing a probability does not shift the
    /// rest of the sequence.
    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }

    /// Uniform in `[0, n)` without modulo bias (Lemire, "Fast Random Integer
    /// Generation in an Interval", ACM TOMS 2019). `below(0)` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (m >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoshiro256starstar_matches_the_reference_output() {
        // The published xoshiro256starstar.c compiled with gcc, from
        // s = {1, 2, 3, 4}, ten times printf("%llu\n", next()) (the same
        // vector rand_xoshiro tests against).
        let mut r = Rng { s: [1, 2, 3, 4] };
        let want: [u64; 10] = [
            11520,
            0,
            1509978240,
            1215971899390074240,
            1216172134540287360,
            607988272756665600,
            16172922978634559625,
            8476171486693032832,
            10595114339597558777,
            2904607092377533576,
        ];
        for w in want {
            assert_eq!(r.next_u64(), w);
        }
    }

    #[test]
    fn splitmix64_matches_the_reference_output() {
        // The published splitmix64.c compiled with gcc, from x = 0: the first
        // three next() values.
        let mut x = 0;
        assert_eq!(splitmix64(&mut x), 0xe220_a839_7b1d_cdaf);
        assert_eq!(splitmix64(&mut x), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(splitmix64(&mut x), 0x06c4_5d18_8009_454f);
    }

    #[test]
    fn the_same_seed_gives_the_same_sequence_and_another_seed_differs() {
        let run = |seed| {
            let mut r = Rng::new(seed);
            (0..64).map(|_| r.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(run(11), run(11));
        assert_ne!(run(11), run(12));
        assert_ne!(Rng::new(0).s, [0; 4], "seed 0 still gives a usable state");
    }

    #[test]
    fn floats_stay_in_the_unit_interval_and_chance_follows_p() {
        let mut r = Rng::new(7);
        let mut hits = 0;
        for _ in 0..100_000 {
            let f = r.next_f64();
            assert!((0.0..1.0).contains(&f));
            hits += u32::from(r.chance(0.05));
        }
        // 5000 expected; ±500 is over 7 standard deviations.
        assert!((4500..5500).contains(&hits), "{hits}");
        assert!(!r.chance(0.0));
        assert!(r.chance(1.0));
    }

    #[test]
    fn below_stays_in_range_and_covers_it_evenly() {
        let mut r = Rng::new(1);
        let mut seen = [0u32; 6];
        for _ in 0..60_000 {
            seen[r.below(6) as usize] += 1;
        }
        assert!(
            seen.iter().all(|&n| (9_500..10_500).contains(&n)),
            "{seen:?}"
        );
        assert_eq!(r.below(1), 0);
        assert_eq!(r.below(0), 0);
        // A bound just above 2^63 rejects almost half the draws; still in range.
        let n = (1u64 << 63) + 1;
        assert!((0..1000).all(|_| r.below(n) < n));
    }
}
