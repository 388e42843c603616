//! What a routing element originates itself, as a router does
//! [RFC 1812 § 4.3]: the § 4.3.2.7 rules on which packets may draw an ICMP
//! error, the § 4.3.2.8 rate limit, and the counts its report shows.

use d11_core::{Instant, TokenBucket};
use d11_wire::icmp::{self, IcmpError};
use d11_wire::ipv4::Ipv4Packet;

/// ICMP (and fragments) an element sent on its own, shown in its report as
/// `originated`.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Originated {
    #[serde(skip)]
    tokens: TokenBucket,
    pub echo_replies: u64,
    pub time_exceeded: u64,
    pub unreachable: u64,
    pub frag_needed: u64,
    pub rate_limited: u64,
    pub fragments: u64,
}

impl Originated {
    pub fn new() -> Originated {
        Originated {
            tokens: TokenBucket::icmp_errors(),
            echo_replies: 0,
            time_exceeded: 0,
            unreachable: 0,
            frag_needed: 0,
            rate_limited: 0,
            fragments: 0,
        }
    }

    /// True if the error `err` about `ip` may be sent now: RFC 1812 allows
    /// one about this packet and the bucket has a token. Counts it, or the
    /// refusal by rate.
    pub fn admit_error(&mut self, now: Instant, err: IcmpError, ip: &Ipv4Packet<&[u8]>) -> bool {
        if !icmp::may_send_error_about(ip) {
            return false;
        }
        if !self.tokens.take(now) {
            self.rate_limited += 1;
            return false;
        }
        match err {
            IcmpError::TtlExceeded => self.time_exceeded += 1,
            IcmpError::FragmentationNeeded { .. } => self.frag_needed += 1,
            _ => self.unreachable += 1,
        }
        true
    }
}
