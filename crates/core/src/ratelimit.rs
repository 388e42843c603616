//! A token bucket for what an element originates itself, ICMP errors first
//! of all: a router "MUST be able to limit the rate at which it originates
//! ICMP error messages" [RFC 1812 § 4.3.2.8]. Time comes in as an argument,
//! like everything else in the sans-IO core.

use crate::Instant;

/// ICMP errors an element may originate per second, and the burst it may
/// send at once. Enough for traceroute and path MTU discovery, not for a flood.
pub const ICMP_RATE: u32 = 1000;
pub const ICMP_BURST: u32 = 100;

/// `rate` tokens a second, at most `burst` saved up; it starts full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBucket {
    rate: u32,
    burst: u32,
    tokens: u32,
    /// When tokens were last added.
    refill: Instant,
}

impl TokenBucket {
    pub fn new(rate: u32, burst: u32) -> TokenBucket {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            refill: Instant::ZERO,
        }
    }

    /// The bucket every element uses for the ICMP errors it originates.
    pub fn icmp_errors() -> TokenBucket {
        TokenBucket::new(ICMP_RATE, ICMP_BURST)
    }

    /// Takes a token if there is one at `now`.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_since(self.refill);
        let add = elapsed.as_micros() * u128::from(self.rate) / 1_000_000;
        if add > 0 {
            let add = u32::try_from(add).unwrap_or(u32::MAX);
            self.tokens = self.tokens.saturating_add(add).min(self.burst);
            self.refill = now;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let mut b = TokenBucket::new(1000, 100);
        let t0 = Instant::from_millis(5);
        assert_eq!((0..150).filter(|_| b.take(t0)).count(), 100);
        // 10 ms later: 10 more tokens at 1000/s.
        let t1 = Instant::from_millis(15);
        assert_eq!((0..50).filter(|_| b.take(t1)).count(), 10);
        // A long pause fills it to the burst, not beyond.
        let t2 = Instant::from_millis(60_000);
        assert_eq!((0..500).filter(|_| b.take(t2)).count(), 100);
    }
}
