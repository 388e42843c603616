//! Impairments of one wire direction — loss, Gilbert–Elliott burst loss,
//! delay with jitter, duplication, reordering, corruption and a rate limit —
//! decided per frame from a seeded [`Rng`], so one seed replays a run.
//!
//! The model follows Linux netem (`sch_netem.c`, `tc-netem(8)`), which this
//! lab cannot use (its kernel has none) and does not need: the element
//! driver asks an [`Impairer`] what to do with each frame and does it.
//!
//! Per frame, in this order (each step draws from the direction's RNG only
//! if its feature is on, so a config replays exactly):
//!
//! 1. **loss**: independent (Bernoulli) loss with probability `loss`;
//! 2. **Gilbert–Elliott** burst loss (Gilbert, "Capacity of a burst-noise
//!    channel", BSTJ 1960; Elliott, "Estimates of error rates for codes on
//!    burst-noise channels", BSTJ 1963; the 4-parameter form of Hasslinger &
//!    Hohlfeld, "The Gilbert-Elliott Model for Packet Loss in Real Time
//!    Services on the Internet", MMB 2008, as netem's `loss gemodel p r 1-h
//!    1-k`): a two-state Markov chain stepped once per frame, good→bad with
//!    probability `p`, bad→good with `r`; a frame is lost with `1-k` in the
//!    good state and `1-h` in the bad one. With `h = 0, k = 1` losses come
//!    in bursts of mean length `1/r`;
//! 3. **duplicate**: the frame is delivered twice;
//! 4. **corrupt**: one random bit past the 14-byte Ethernet header is
//!    flipped (so the frame still reaches its neighbour, whose checksums
//!    catch it);
//! 5. **rate**: a token bucket of `rate` bits/s holding at most `burst`
//!    bytes; a frame that finds too few tokens waits for them (the bucket
//!    goes into debt), and one that would make the debt exceed `queue`
//!    bytes is dropped;
//! 6. **delay** ± **jitter**: the frame leaves `delay` later, plus a value
//!    uniform in `[-jitter, +jitter]`. Frames keep their order (a frame
//!    never leaves before the one delayed ahead of it; netem's tfifo lets
//!    jitter reorder, this model does not) except through
//! 7. **reorder**: with probability `reorder` a frame skips the delay and
//!    leaves at once, overtaking the frames still delayed (netem's
//!    `reorder`; only meaningful with a delay).

use crate::{Instant, Rng};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Length of the Ethernet header `corrupt` leaves alone.
const ETH_HEADER: usize = 14;
/// Default token bucket depth (bytes) when `rate` is set without `burst`.
pub const DEFAULT_BURST: u32 = 16 * 1024;
/// Default bound of the rate limiter's queue (bytes) without `queue`.
pub const DEFAULT_QUEUE: u32 = 64 * 1024;

/// Gilbert–Elliott parameters (probabilities in `[0, 1]`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GilbertElliott {
    /// good → bad, per frame.
    pub p: f64,
    /// bad → good, per frame.
    pub r: f64,
    /// Delivery probability in the bad state (loss there is `1-h`).
    pub h: f64,
    /// Delivery probability in the good state (loss there is `1-k`).
    pub k: f64,
}

/// The impairment of one direction of a wire. Every field off by default.
///
/// In a topology file and on the command line it is written as a spec
/// (`"loss=5% delay=20ms jitter=5ms"`, see [`Impairment::from_str`]); it
/// serializes to that same text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Impairment {
    /// Independent loss probability.
    pub loss: f64,
    pub ge: Option<GilbertElliott>,
    pub delay: Duration,
    pub jitter: Duration,
    pub duplicate: f64,
    pub reorder: f64,
    pub corrupt: f64,
    /// Bits per second; `None` is unlimited.
    pub rate: Option<u64>,
    /// Token bucket depth in bytes (with `rate`).
    pub burst: Option<u32>,
    /// The rate limiter's queue bound in bytes (with `rate`).
    pub queue: Option<u32>,
    /// The RNG seed; `None` until the topology or the CLI resolves it.
    pub seed: Option<u64>,
}

/// A spec that cannot be used: one line naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ImpairError {
    pub key: String,
    pub message: String,
}

fn bad(key: &str, message: impl Into<String>) -> ImpairError {
    ImpairError {
        key: key.to_string(),
        message: message.into(),
    }
}

/// `5%`, `0.05` → 0.05; must lie in `[0, 1]`.
fn parse_prob(key: &str, v: &str) -> Result<f64, ImpairError> {
    let (num, scale) = match v.strip_suffix('%') {
        Some(n) => (n, 100.0),
        None => (v, 1.0),
    };
    let x: f64 = num
        .trim()
        .parse()
        .map_err(|_| bad(key, format!("{v:?} is not a probability (like 5% or 0.05)")))?;
    let x = x / scale;
    if !(0.0..=1.0).contains(&x) {
        return Err(bad(key, format!("{v:?} is not between 0% and 100%")));
    }
    Ok(x)
}

/// `20ms`, `1.5s`, `500us`, `0` → a duration.
fn parse_time(key: &str, v: &str) -> Result<Duration, ImpairError> {
    let err = || bad(key, format!("{v:?} is not a time (like 20ms, 500us, 1s)"));
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let x: f64 = num.parse().map_err(|_| err())?;
    let us = match unit {
        "us" => x,
        "ms" => x * 1e3,
        "s" => x * 1e6,
        "" if x == 0.0 => 0.0,
        _ => return Err(err()),
    };
    if !us.is_finite() || us > 60e6 {
        return Err(bad(key, format!("{v:?} is more than a minute")));
    }
    Ok(Duration::from_micros(us.round() as u64))
}

/// `10mbit`, `500kbit`, `1gbit`, `64000bit` (bits/s); `1mbps` is a megabyte/s, as in tc(8).
fn parse_rate(key: &str, v: &str) -> Result<u64, ImpairError> {
    let err = || {
        bad(
            key,
            format!("{v:?} is not a rate (like 10mbit, 500kbit, 1gbit)"),
        )
    };
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(err)?;
    let (num, unit) = v.split_at(split);
    let x: f64 = num.parse().map_err(|_| err())?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "bps" => 8.0,
        "kbps" => 8e3,
        "mbps" => 8e6,
        "gbps" => 8e9,
        _ => return Err(err()),
    };
    let bits = (x * mult).round();
    if !(8.0..=1e12).contains(&bits) {
        return Err(bad(key, format!("{v:?} is not between 8bit and 1000gbit")));
    }
    Ok(bits as u64)
}

/// `1500`, `1500b`, `16kb`, `16k`, `1mb` → bytes.
fn parse_size(key: &str, v: &str) -> Result<u32, ImpairError> {
    let err = || {
        bad(
            key,
            format!("{v:?} is not a size in bytes (like 1500, 16kb, 1mb)"),
        )
    };
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let x: u64 = num.parse().map_err(|_| err())?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1024,
        "m" | "mb" => 1024 * 1024,
        _ => return Err(err()),
    };
    let n = x.saturating_mul(mult);
    if !(64..=1 << 30).contains(&n) {
        return Err(bad(key, format!("{v:?} is not between 64 bytes and 1gb")));
    }
    Ok(n as u32)
}

impl Impairment {
    /// True if the config changes nothing.
    pub fn is_off(&self) -> bool {
        Impairment {
            seed: None,
            ..self.clone()
        } == Impairment::default()
    }

    /// The spec with its seed replaced.
    pub fn with_seed(mut self, seed: u64) -> Impairment {
        self.seed = Some(seed);
        self
    }
}

impl FromStr for Impairment {
    type Err = ImpairError;

    /// Parses a spec: whitespace- or comma-separated `key=value` items
    /// (`ge=p,r,h,k` keeps its commas), or the single word `off`.
    ///
    /// | key | value |
    /// |---|---|
    /// | `loss` | probability: `5%` or `0.05` |
    /// | `ge` | `p,r,h,k` (each a probability); or `ge_p`, `ge_r`, `ge_h`, `ge_k` (defaults `r=1-p`, `h=0`, `k=1`, as netem) |
    /// | `delay`, `jitter` | time: `20ms`, `500us`, `1s` |
    /// | `duplicate`, `reorder`, `corrupt` | probability |
    /// | `rate` | `10mbit`, `500kbit`, `1gbit` (`mbps` = megabytes/s, as tc) |
    /// | `burst`, `queue` | bytes: `1500`, `16kb`, `1mb` |
    /// | `seed` | an unsigned integer |
    fn from_str(s: &str) -> Result<Impairment, ImpairError> {
        let s = s.trim();
        let mut imp = Impairment::default();
        if s.is_empty() {
            return Err(bad("impair", "empty spec (give key=value items, or off)"));
        }
        if s == "off" {
            return Ok(imp);
        }
        let mut ge: [Option<f64>; 4] = [None; 4];
        for item in s.split_whitespace() {
            let Some((key, v)) = item.split_once('=') else {
                if item == "off" {
                    return Err(bad("off", "off stands alone (it clears every impairment)"));
                }
                return Err(bad(item, "expected key=value (like loss=5%)"));
            };
            match key {
                "loss" => imp.loss = parse_prob(key, v)?,
                "delay" => imp.delay = parse_time(key, v)?,
                "jitter" => imp.jitter = parse_time(key, v)?,
                "duplicate" => imp.duplicate = parse_prob(key, v)?,
                "reorder" => imp.reorder = parse_prob(key, v)?,
                "corrupt" => imp.corrupt = parse_prob(key, v)?,
                "rate" => imp.rate = Some(parse_rate(key, v)?),
                "burst" => imp.burst = Some(parse_size(key, v)?),
                "queue" => imp.queue = Some(parse_size(key, v)?),
                "seed" => {
                    imp.seed = Some(v.parse().map_err(|_| {
                        bad(key, format!("{v:?} is not an unsigned 64-bit integer"))
                    })?)
                }
                "ge" => {
                    let parts: Vec<&str> = v.split(',').collect();
                    if parts.is_empty() || parts.len() > 4 {
                        return Err(bad(key, format!("{v:?} is not p[,r[,h[,k]]]")));
                    }
                    for (i, p) in parts.iter().enumerate() {
                        ge[i] = Some(parse_prob(key, p)?);
                    }
                }
                "ge_p" => ge[0] = Some(parse_prob(key, v)?),
                "ge_r" => ge[1] = Some(parse_prob(key, v)?),
                "ge_h" => ge[2] = Some(parse_prob(key, v)?),
                "ge_k" => ge[3] = Some(parse_prob(key, v)?),
                _ => {
                    return Err(bad(
                        key,
                        "unknown impairment (loss, ge, delay, jitter, duplicate, reorder, corrupt, rate, burst, queue, seed)",
                    ))
                }
            }
        }
        if ge.iter().any(Option::is_some) {
            let Some(p) = ge[0] else {
                return Err(bad("ge", "give p, the good→bad probability (ge=p,r,h,k)"));
            };
            imp.ge = Some(GilbertElliott {
                p,
                r: ge[1].unwrap_or(1.0 - p),
                h: ge[2].unwrap_or(0.0),
                k: ge[3].unwrap_or(1.0),
            });
        }
        if !imp.jitter.is_zero() && imp.jitter > imp.delay {
            return Err(bad("jitter", "may not exceed delay"));
        }
        if imp.rate.is_none() && (imp.burst.is_some() || imp.queue.is_some()) {
            let key = if imp.burst.is_some() {
                "burst"
            } else {
                "queue"
            };
            return Err(bad(key, "only means something with rate"));
        }
        Ok(imp)
    }
}

fn pct(x: f64) -> String {
    let s = format!("{:.6}", x * 100.0);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

fn time(d: Duration) -> String {
    let us = d.as_micros();
    if us.is_multiple_of(1000) {
        format!("{}ms", us / 1000)
    } else {
        format!("{us}us")
    }
}

fn rate(bits: u64) -> String {
    for (div, unit) in [(1_000_000_000, "gbit"), (1_000_000, "mbit"), (1000, "kbit")] {
        if bits.is_multiple_of(div) {
            return format!("{}{unit}", bits / div);
        }
    }
    format!("{bits}bit")
}

/// The canonical spec; parses back to the same value.
impl fmt::Display for Impairment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut items = Vec::new();
        if self.loss > 0.0 {
            items.push(format!("loss={}", pct(self.loss)));
        }
        if let Some(g) = self.ge {
            items.push(format!(
                "ge={},{},{},{}",
                pct(g.p),
                pct(g.r),
                pct(g.h),
                pct(g.k)
            ));
        }
        if !self.delay.is_zero() {
            items.push(format!("delay={}", time(self.delay)));
        }
        if !self.jitter.is_zero() {
            items.push(format!("jitter={}", time(self.jitter)));
        }
        for (k, v) in [
            ("duplicate", self.duplicate),
            ("reorder", self.reorder),
            ("corrupt", self.corrupt),
        ] {
            if v > 0.0 {
                items.push(format!("{k}={}", pct(v)));
            }
        }
        if let Some(r) = self.rate {
            items.push(format!("rate={}", rate(r)));
        }
        if let Some(b) = self.burst {
            items.push(format!("burst={b}"));
        }
        if let Some(q) = self.queue {
            items.push(format!("queue={q}"));
        }
        if items.is_empty() {
            // Off has no use for a seed, and "off" stands alone.
            return f.write_str("off");
        }
        if let Some(s) = self.seed {
            items.push(format!("seed={s}"));
        }
        f.write_str(&items.join(" "))
    }
}

impl Serialize for Impairment {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Impairment {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why the impairer dropped a frame.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum ImpairDrop {
    /// `loss` or the Gilbert–Elliott model.
    Loss,
    /// The rate limiter's queue is full.
    Rate,
}

/// What to do with one frame.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum Verdict {
    Drop(ImpairDrop),
    /// Deliver at `at` (now or later), `copies` times (1 or 2), with bit
    /// `flip` (counted from the frame's first bit) inverted if set.
    Deliver {
        at: Instant,
        copies: u8,
        flip: Option<usize>,
    },
}

/// What one direction did, for `d11 status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImpairStats {
    pub frames: u64,
    pub lost: u64,
    pub rate_dropped: u64,
    pub delayed: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub corrupted: u64,
}

/// One direction's state: config, RNG, Gilbert–Elliott state, bucket.
#[derive(Debug, Clone)]
pub struct Direction {
    cfg: Impairment,
    rng: Rng,
    bad_state: bool,
    /// Bytes; negative is the queue's debt.
    tokens: f64,
    refill: Instant,
    /// The latest departure handed out to an in-order frame.
    last_due: Instant,
    pub stats: ImpairStats,
}

impl Direction {
    /// A direction impaired by `cfg`, its RNG seeded by `cfg.seed` (0 if unset).
    pub fn new(cfg: Impairment) -> Direction {
        let rng = Rng::new(cfg.seed.unwrap_or(0));
        Direction {
            tokens: f64::from(cfg.burst.unwrap_or(DEFAULT_BURST)),
            cfg,
            rng,
            bad_state: false,
            refill: Instant::ZERO,
            last_due: Instant::ZERO,
            stats: ImpairStats::default(),
        }
    }

    pub fn config(&self) -> &Impairment {
        &self.cfg
    }

    /// The verdict on a frame of `len` bytes offered at `now`.
    pub fn decide(&mut self, now: Instant, len: usize) -> Verdict {
        let c = &self.cfg;
        self.stats.frames += 1;
        if c.loss > 0.0 && self.rng.chance(c.loss) {
            self.stats.lost += 1;
            return Verdict::Drop(ImpairDrop::Loss);
        }
        if let Some(g) = c.ge {
            // Step the chain, then lose with the new state's probability.
            let flip = self.rng.chance(if self.bad_state { g.r } else { g.p });
            self.bad_state ^= flip;
            let deliver = if self.bad_state { g.h } else { g.k };
            if !self.rng.chance(deliver) {
                self.stats.lost += 1;
                return Verdict::Drop(ImpairDrop::Loss);
            }
        }
        let copies = if c.duplicate > 0.0 && self.rng.chance(c.duplicate) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        let flip = if c.corrupt > 0.0 && self.rng.chance(c.corrupt) && len > ETH_HEADER {
            self.stats.corrupted += 1;
            let bits = ((len - ETH_HEADER) * 8) as u64;
            Some(ETH_HEADER * 8 + self.rng.below(bits) as usize)
        } else {
            None
        };
        let mut at = now;
        if let Some(bits) = c.rate {
            let burst = f64::from(c.burst.unwrap_or(DEFAULT_BURST));
            let queue = f64::from(c.queue.unwrap_or(DEFAULT_QUEUE));
            let bytes_per_us = bits as f64 / 8e6;
            let elapsed = now.saturating_since(self.refill).as_micros() as f64;
            self.tokens = (self.tokens + elapsed * bytes_per_us).min(burst);
            self.refill = now;
            let after = self.tokens - len as f64 * f64::from(copies);
            if after < -queue {
                self.stats.rate_dropped += 1;
                return Verdict::Drop(ImpairDrop::Rate);
            }
            self.tokens = after;
            if after < 0.0 {
                at = now + Duration::from_micros((-after / bytes_per_us).ceil() as u64);
            }
        }
        let delayed = !c.delay.is_zero();
        if delayed && c.reorder > 0.0 && self.rng.chance(c.reorder) {
            self.stats.reordered += 1;
            return Verdict::Deliver { at, copies, flip };
        }
        if delayed {
            let mut d = c.delay;
            if !c.jitter.is_zero() {
                let j = c.jitter.as_micros() as u64;
                let off = self.rng.below(2 * j + 1);
                d = d + Duration::from_micros(off) - Duration::from_micros(j);
            }
            at = at + d;
            self.stats.delayed += 1;
        }
        // In order behind every frame delayed before it.
        at = at.max(self.last_due);
        self.last_due = at;
        Verdict::Deliver { at, copies, flip }
    }
}

/// The impairments of one port: what it sends (`tx`) and what it receives
/// (`rx`), each its own direction with its own RNG.
#[derive(Debug, Clone, Default)]
pub struct Impairer {
    pub tx: Option<Direction>,
    pub rx: Option<Direction>,
}

/// The side of a port a direction is applied on.
#[derive(Copy, Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Tx,
    Rx,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Tx => "tx",
            Side::Rx => "rx",
        }
    }
}

impl FromStr for Side {
    type Err = ImpairError;
    fn from_str(s: &str) -> Result<Side, ImpairError> {
        match s {
            "tx" => Ok(Side::Tx),
            "rx" => Ok(Side::Rx),
            _ => Err(bad("side", format!("{s:?} is not tx or rx"))),
        }
    }
}

impl Impairer {
    pub fn new(tx: Option<Impairment>, rx: Option<Impairment>) -> Impairer {
        let dir = |c: Option<Impairment>| c.filter(|c| !c.is_off()).map(Direction::new);
        Impairer {
            tx: dir(tx),
            rx: dir(rx),
        }
    }

    pub fn side(&mut self, side: Side) -> &mut Option<Direction> {
        match side {
            Side::Tx => &mut self.tx,
            Side::Rx => &mut self.rx,
        }
    }

    /// Replaces one side's config (`off` clears it); the RNG restarts from
    /// the seed, so setting the same spec twice replays the same drops.
    pub fn set(&mut self, side: Side, cfg: Impairment) {
        *self.side(side) = (!cfg.is_off()).then(|| Direction::new(cfg));
    }

    pub fn is_empty(&self) -> bool {
        self.tx.is_none() && self.rx.is_none()
    }
}

/// The seed of a wire with no `seed`: FNV-1a of its name (`a--b`), so runs repeat.
pub fn seed_from_name(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> Impairment {
        s.parse().unwrap()
    }

    fn run(cfg: &str, n: usize) -> Vec<Verdict> {
        let mut d = Direction::new(spec(cfg));
        (0..n)
            .map(|i| d.decide(Instant::from_micros(i as u64 * 100), 1000))
            .collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_verdicts_and_another_seed_differs() {
        let a = run("loss=10% delay=20ms jitter=5ms duplicate=1% seed=7", 2000);
        let b = run("loss=10% delay=20ms jitter=5ms duplicate=1% seed=7", 2000);
        let c = run("loss=10% delay=20ms jitter=5ms duplicate=1% seed=8", 2000);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let lost = |v: &[Verdict]| -> Vec<usize> {
            v.iter()
                .enumerate()
                .filter(|(_, v)| matches!(v, Verdict::Drop(_)))
                .map(|(i, _)| i)
                .collect()
        };
        assert_ne!(lost(&a), lost(&c));
        // The exact start of seed 7's sequence, so a change of the model shows.
        assert_eq!(lost(&a)[..5], [2, 45, 63, 72, 73]);
    }

    #[test]
    fn loss_rate_is_within_tolerance_over_100k_frames() {
        let v = run("loss=5% seed=1", 100_000);
        let lost = v.iter().filter(|v| matches!(v, Verdict::Drop(_))).count();
        // 5000 expected, sigma ≈ 69: ±400 is almost 6 sigma.
        assert!((4600..5400).contains(&lost), "{lost}");
    }

    #[test]
    fn gilbert_elliott_loses_in_bursts_of_mean_length_one_over_r() {
        let v = run("ge=1%,25%,0,1 seed=3", 200_000);
        let mut bursts = Vec::new();
        let mut cur = 0;
        for x in &v {
            if matches!(x, Verdict::Drop(_)) {
                cur += 1;
            } else if cur > 0 {
                bursts.push(cur);
                cur = 0;
            }
        }
        let mean = bursts.iter().sum::<usize>() as f64 / bursts.len() as f64;
        assert!((3.6..4.4).contains(&mean), "mean burst {mean}, want ≈ 4");
        // Stationary loss π_B = p / (p + r) = 1/26 ≈ 3.85 %.
        let lost: usize = bursts.iter().sum();
        let rate = lost as f64 / v.len() as f64;
        assert!((0.033..0.044).contains(&rate), "{rate}");
    }

    #[test]
    fn rate_limiting_keeps_output_at_or_below_the_rate() {
        // 1000-byte frames every 100 µs is 80 Mbit/s offered into 10 Mbit/s.
        let mut d = Direction::new(spec("rate=10mbit burst=16kb queue=64kb seed=1"));
        let mut last = Instant::ZERO;
        let mut sent = 0u64;
        let mut dropped = 0;
        for i in 0..10_000u64 {
            match d.decide(Instant::from_micros(i * 100), 1000) {
                Verdict::Deliver { at, .. } => {
                    sent += 1000;
                    last = last.max(at);
                }
                Verdict::Drop(r) => {
                    assert_eq!(r, ImpairDrop::Rate);
                    dropped += 1;
                }
            }
        }
        let secs = last.total_micros() as f64 / 1e6;
        let bits = (sent as f64 - 16.0 * 1024.0) * 8.0;
        assert!(bits / secs <= 10e6 * 1.001, "{} bit/s", bits / secs);
        assert!(bits / secs >= 9.5e6, "{} bit/s", bits / secs);
        assert!(dropped > 8000, "{dropped}");
        assert_eq!(d.stats.rate_dropped, dropped);
    }

    #[test]
    fn reorder_and_duplicate_are_counted_near_their_probability() {
        let mut d = Direction::new(spec("delay=10ms reorder=2% duplicate=1% seed=5"));
        let mut early = 0;
        let mut twice = 0;
        for i in 0..100_000u64 {
            let now = Instant::from_micros(i * 10);
            if let Verdict::Deliver { at, copies, .. } = d.decide(now, 100) {
                early += u32::from(at == now);
                twice += u32::from(copies == 2);
            }
        }
        assert!((1700..2300).contains(&early), "{early}");
        assert!((800..1200).contains(&twice), "{twice}");
        assert_eq!(d.stats.reordered, u64::from(early));
        assert_eq!(d.stats.duplicated, u64::from(twice));
    }

    #[test]
    fn delay_with_jitter_stays_in_range_and_in_order() {
        let mut d = Direction::new(spec("delay=20ms jitter=5ms seed=9"));
        let mut prev = Instant::ZERO;
        for i in 0..10_000u64 {
            let now = Instant::from_millis(i);
            let Verdict::Deliver { at, .. } = d.decide(now, 100) else {
                panic!("no loss configured")
            };
            let lag = at - now;
            assert!(lag >= Duration::from_millis(15) && lag <= Duration::from_millis(25));
            assert!(at >= prev, "frames keep their order");
            prev = at;
        }
    }

    #[test]
    fn corruption_flips_a_bit_past_the_ethernet_header() {
        let mut d = Direction::new(spec("corrupt=50% seed=2"));
        let mut n = 0;
        for _ in 0..1000 {
            if let Verdict::Deliver { flip: Some(b), .. } = d.decide(Instant::ZERO, 60) {
                assert!((14 * 8..60 * 8).contains(&b));
                n += 1;
            }
        }
        assert!((400..600).contains(&n), "{n}");
        assert!(matches!(
            d.decide(Instant::ZERO, 14),
            Verdict::Deliver { flip: None, .. }
        ));
    }

    #[test]
    fn specs_parse_and_print_back_the_same() {
        let s = spec("loss=5% delay=20ms jitter=5ms rate=10mbit burst=32kb duplicate=1% reorder=2% corrupt=0.1% ge=1%,30%,0,1 seed=42");
        assert_eq!(s.loss, 0.05);
        assert_eq!(s.delay, Duration::from_millis(20));
        assert_eq!(s.rate, Some(10_000_000));
        assert_eq!(s.burst, Some(32 * 1024));
        assert_eq!(s.seed, Some(42));
        assert_eq!(
            s.ge,
            Some(GilbertElliott {
                p: 0.01,
                r: 0.3,
                h: 0.0,
                k: 1.0
            })
        );
        assert_eq!(spec(&s.to_string()), s);
        assert!(spec("off").is_off());
        assert_eq!(spec("off").with_seed(3).to_string(), "off");
        assert_eq!(spec("ge_p=2%").ge.unwrap().r, 0.98);
        assert_eq!(spec("loss=0.5").loss, 0.5);
    }

    #[test]
    fn bad_specs_are_one_line_naming_the_key() {
        let e = |s: &str| s.parse::<Impairment>().unwrap_err().to_string();
        assert_eq!(e("loss=150%"), "loss: \"150%\" is not between 0% and 100%");
        assert!(e("delay=20").starts_with("delay: "), "{}", e("delay=20"));
        assert!(e("rate=fast").starts_with("rate: "));
        assert!(e("lose=5%").starts_with("lose: unknown impairment"));
        assert!(e("loss").starts_with("loss: expected key=value"));
        assert!(e("jitter=5ms").starts_with("jitter: may not exceed delay"));
        assert!(e("burst=16kb").starts_with("burst: only means something with rate"));
        assert!(e("ge_r=5%").starts_with("ge: give p"));
        assert!(e("seed=-1").starts_with("seed: "));
        assert!(e("").starts_with("impair: empty"));
        assert!(e("loss=5% off").starts_with("off: "));
        assert!(!e("delay=2x").contains('\n'));
    }

    #[test]
    fn an_off_side_is_no_direction_and_set_restarts_the_rng() {
        let mut i = Impairer::new(Some(spec("off")), Some(spec("loss=50% seed=1")));
        assert!(i.tx.is_none());
        let first: Vec<_> = (0..50)
            .map(|_| i.rx.as_mut().unwrap().decide(Instant::ZERO, 100))
            .collect();
        i.set(Side::Rx, spec("loss=50% seed=1"));
        let again: Vec<_> = (0..50)
            .map(|_| i.rx.as_mut().unwrap().decide(Instant::ZERO, 100))
            .collect();
        assert_eq!(first, again);
        i.set(Side::Rx, spec("off"));
        assert!(i.is_empty());
    }

    #[test]
    fn decide_costs_little_per_frame() {
        // Not a timed assertion: prints the figure `docs/impair.md` quotes.
        let mut d = Direction::new(spec("loss=1% delay=10ms jitter=1ms seed=1"));
        let t = std::time::Instant::now();
        let n = 1_000_000u64;
        let mut kept = 0u64;
        for i in 0..n {
            kept += u64::from(matches!(
                d.decide(Instant::from_micros(i), 1000),
                Verdict::Deliver { .. }
            ));
        }
        let ns = t.elapsed().as_nanos() as f64 / n as f64;
        eprintln!("Direction::decide: {ns:.1} ns/frame ({kept} kept)");
        assert!(kept > 0);
    }
}
