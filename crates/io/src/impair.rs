//! The driver's side of wire impairments (`docs/impair.md`): each port's
//! [`Impairer`] (the sans-IO model of `d11_core::impair`), and the
//! time-ordered queue of frames it delayed, bounded per port.
//!
//! The driver asks [`Impairments::verdict`] about a frame on an impaired
//! side; a frame due now is handed on at once (the caller does that), a
//! later one is copied into the queue and comes back from
//! [`Impairments::pop_due`] when its time has come.

use d11_core::impair::{Direction, ImpairDrop, Side, Verdict};
use d11_core::status::{ImpairReport, ImpairSet, ImpairSide, ImpairStatus, Refusal};
use d11_core::{DropReason, Impairer, Impairment, Instant};
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Frames one port may hold delayed (both sides); more are `impair_queue` drops.
pub const MAX_DELAYED: usize = 8192;

/// A frame waiting for its time.
pub(crate) struct Delayed {
    pub at: Instant,
    seq: u64,
    pub port: usize,
    pub side: Side,
    pub frame: Vec<u8>,
}

impl PartialEq for Delayed {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Delayed {
    /// Reversed, so the max-heap pops the earliest (then the first queued).
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// What to do with a frame now.
pub(crate) enum Now {
    /// Hand it on `copies` times, bit `flip` inverted if set.
    Deliver { copies: u8, flip: Option<usize> },
    /// Dropped (counted by the caller) or queued for later.
    Done(Option<DropReason>),
}

/// Every port's impairer and the frames they delayed.
#[derive(Default)]
pub(crate) struct Impairments {
    ports: Vec<Impairer>,
    queue: BinaryHeap<Delayed>,
    queued: Vec<usize>,
    seq: u64,
    /// Buffers of delivered frames, reused.
    spare: Vec<Vec<u8>>,
}

impl Impairments {
    pub fn new(ports: Vec<Impairer>, n: usize) -> Impairments {
        let mut ports = ports;
        ports.resize_with(n, Impairer::default);
        Impairments {
            ports,
            queued: vec![0; n],
            ..Impairments::default()
        }
    }

    /// True if port `i` impairs what it sends.
    #[inline]
    pub fn tx(&self, i: usize) -> bool {
        self.ports.get(i).is_some_and(|p| p.tx.is_some())
    }

    /// True if port `i` impairs what it receives.
    #[inline]
    pub fn rx(&self, i: usize) -> bool {
        self.ports.get(i).is_some_and(|p| p.rx.is_some())
    }

    /// The verdict on `frame` on side `side` of port `i` at `now`: delivered
    /// now, queued for later (a copy), or dropped with its reason.
    pub fn verdict(&mut self, i: usize, side: Side, frame: &[u8], now: Instant) -> Now {
        let Some(dir) = self.ports.get_mut(i).and_then(|p| p.side(side).as_mut()) else {
            return Now::Deliver {
                copies: 1,
                flip: None,
            };
        };
        match dir.decide(now, frame.len()) {
            Verdict::Drop(ImpairDrop::Loss) => Now::Done(Some(DropReason::ImpairLoss)),
            Verdict::Drop(ImpairDrop::Rate) => Now::Done(Some(DropReason::ImpairRate)),
            Verdict::Deliver { at, copies, flip } if at <= now => Now::Deliver { copies, flip },
            Verdict::Deliver { at, copies, flip } => {
                for _ in 0..copies {
                    if self.queued[i] >= MAX_DELAYED {
                        return Now::Done(Some(DropReason::ImpairQueue));
                    }
                    let mut buf = self.spare.pop().unwrap_or_default();
                    buf.clear();
                    buf.extend_from_slice(frame);
                    if let Some(bit) = flip {
                        flip_bit(&mut buf, bit);
                    }
                    self.seq += 1;
                    self.queued[i] += 1;
                    self.queue.push(Delayed {
                        at,
                        seq: self.seq,
                        port: i,
                        side,
                        frame: buf,
                    });
                }
                Now::Done(None)
            }
        }
    }

    /// When the next delayed frame is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.peek().map(|d| d.at)
    }

    /// The earliest delayed frame if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Delayed> {
        if self.queue.peek()?.at > now {
            return None;
        }
        let d = self.queue.pop()?;
        self.queued[d.port] -= 1;
        Some(d)
    }

    /// Gives a delivered frame's buffer back for reuse.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if self.spare.len() < 256 {
            self.spare.push(buf);
        }
    }

    /// Each side's spec and counts of port `i`, or `None` if it impairs
    /// nothing.
    pub fn status(&self, i: usize) -> Option<ImpairStatus> {
        let p = self.ports.get(i)?;
        if p.is_empty() && self.queued.get(i).copied().unwrap_or(0) == 0 {
            return None;
        }
        let side = |d: &Option<Direction>| {
            d.as_ref().map(|d| ImpairSide {
                spec: d.config().to_string(),
                stats: d.stats.clone(),
            })
        };
        Some(ImpairStatus {
            tx: side(&p.tx),
            rx: side(&p.rx),
            queued: self.queued[i],
        })
    }

    /// The control socket's `impair` command: no arguments lists every
    /// port's settings; `PORT tx|rx SPEC…` sets one side (`off` clears it).
    pub fn command(&mut self, args: &str, names: &[String]) -> ImpairAnswer {
        let refuse = |error: String| ImpairAnswer::Refused(Refusal { error });
        let args = args.trim();
        if args.is_empty() {
            let ports = names
                .iter()
                .enumerate()
                .filter_map(|(i, n)| Some((n.clone(), self.status(i)?)))
                .collect();
            return ImpairAnswer::Report(ImpairReport { ports });
        }
        let mut it = args.splitn(3, char::is_whitespace);
        let (port, side, spec) = (it.next(), it.next(), it.next());
        let (Some(port), Some(side), Some(spec)) = (port, side, spec) else {
            return refuse("usage: impair [PORT tx|rx SPEC…|off]".into());
        };
        let Some(i) = names.iter().position(|n| n == port) else {
            return refuse(format!("no port {port:?} (ports: {})", names.join(", ")));
        };
        let side: Side = match side.parse() {
            Ok(s) => s,
            Err(e) => return refuse(e.to_string()),
        };
        let cfg: Impairment = match spec.parse() {
            Ok(c) => c,
            Err(e) => return refuse(e.to_string()),
        };
        tracing::info!(port, side = side.as_str(), impair = %cfg, "impairment set");
        let spec = cfg.to_string();
        self.ports[i].set(side, cfg);
        ImpairAnswer::Set(ImpairSet {
            ok: true,
            port: port.into(),
            side: side.as_str().into(),
            impair: spec,
        })
    }
}

/// What the `impair` command answers.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub enum ImpairAnswer {
    Report(ImpairReport),
    Set(ImpairSet),
    Refused(Refusal),
}

/// Inverts bit `bit` (from the first bit of the frame, most significant first).
pub(crate) fn flip_bit(frame: &mut [u8], bit: usize) {
    if let Some(b) = frame.get_mut(bit / 8) {
        *b ^= 0x80 >> (bit % 8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["radio".into(), "s1u".into()]
    }

    #[test]
    fn delayed_frames_come_back_in_time_order_and_the_queue_is_bounded() {
        let tx = "delay=10ms seed=1".parse().unwrap();
        let mut imp = Impairments::new(vec![Impairer::new(Some(tx), None)], 2);
        assert!(imp.tx(0) && !imp.rx(0) && !imp.tx(1));
        let t0 = Instant::from_millis(1);
        for k in 0..3u8 {
            assert!(matches!(
                imp.verdict(0, Side::Tx, &[k; 20], t0),
                Now::Done(None)
            ));
        }
        assert_eq!(imp.next_due(), Some(Instant::from_millis(11)));
        assert!(imp.pop_due(Instant::from_millis(10)).is_none());
        let got: Vec<u8> = std::iter::from_fn(|| imp.pop_due(Instant::from_millis(11)))
            .map(|d| d.frame[0])
            .collect();
        assert_eq!(got, [0, 1, 2]);
        for _ in 0..MAX_DELAYED {
            imp.verdict(0, Side::Tx, &[0; 20], t0);
        }
        assert!(matches!(
            imp.verdict(0, Side::Tx, &[0; 20], t0),
            Now::Done(Some(DropReason::ImpairQueue))
        ));
    }

    #[test]
    fn the_command_sets_lists_and_clears_a_side() {
        let mut imp = Impairments::new(vec![], 2);
        let refused = |a: ImpairAnswer| match a {
            ImpairAnswer::Refused(r) => r.error,
            other => panic!("{other:?}"),
        };
        let ImpairAnswer::Set(v) = imp.command("s1u rx loss=5% seed=3", &names()) else {
            panic!("not set")
        };
        assert_eq!(v.impair, "loss=5% seed=3");
        assert!(imp.rx(1));
        let ImpairAnswer::Report(r) = imp.command("", &names()) else {
            panic!("no report")
        };
        assert_eq!(r.ports.len(), 1, "radio is not impaired");
        assert_eq!(r.ports[0].0, "s1u");
        assert_eq!(r.ports[0].1.rx.as_ref().unwrap().spec, "loss=5% seed=3");
        let j = serde_json::to_value(ImpairAnswer::Report(r)).unwrap();
        assert_eq!(
            j["ports"]["s1u"]["rx"]["spec"], "loss=5% seed=3",
            "the wire form"
        );
        imp.command("s1u rx off", &names());
        assert!(!imp.rx(1));
        assert!(refused(imp.command("s5 rx off", &names())).starts_with("no port \"s5\""));
        assert!(refused(imp.command("s1u up off", &names())).starts_with("side:"));
        assert!(refused(imp.command("s1u tx loss=2", &names())).starts_with("loss:"));
    }

    #[test]
    fn flip_bit_inverts_exactly_one_bit() {
        let mut f = [0u8; 4];
        flip_bit(&mut f, 9);
        assert_eq!(f, [0, 0x40, 0, 0]);
        flip_bit(&mut f, 99); // past the end: nothing
        assert_eq!(f, [0, 0x40, 0, 0]);
    }
}
