//! The hot item, sans-IO: the deductions waiting on one SKU become one
//! compare-and-set in one transaction (`db.stock_take_batch`), so 10,000
//! buyers of one SKU cost a few dozen compare-and-sets instead of a storm
//! in which one of a thousand wins per round (docs/rpc.md, "The hot item").
//!
//! Per SKU, at most one batch is at the db at a time. Deductions that
//! arrive meanwhile queue, oldest first; when the batch's answer comes, the
//! next batch takes up to `max_batch` of them at once. The version the
//! compare-and-set checks is the one the last answer reported (read once
//! with `db.stock_get` when none is known); a conflict (another stock
//! provider, or a restore, wrote first) answers the current version, and
//! the same batch — topped up with what queued meanwhile — tries again at
//! once, at most `max_cas_attempts` times. Nothing waits without bound: a
//! deduction still queued at its deadline (a little before its caller's
//! timeout) is answered [`Failure::GaveUp`] and was never sent, so nothing
//! of its stock was taken.
//!
//! The shell (`super::Stock`) feeds it deductions ([`Coalescer::push`]),
//! the db's replies ([`Coalescer::on_reply`]) and the time, and runs the
//! [`Op`]s that [`Coalescer::poll`] hands out.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::db::{BatchTake, Stock as Level, TakeOutcome, TakeRequest};
use crate::rpc::Fault;

/// Names one waiting deduction; chosen by the shell.
pub type Ticket = u64;

/// A db call for one SKU's batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `db.stock_get(sku)`: no version is known yet.
    Read { sku: String },
    /// `db.stock_take_batch(sku, version, takes)`: the compare-and-set.
    Take {
        sku: String,
        version: i64,
        takes: Vec<TakeRequest>,
    },
}

impl Op {
    pub fn sku(&self) -> &str {
        match self {
            Op::Read { sku } | Op::Take { sku, .. } => sku,
        }
    }
}

/// The db's answer to an [`Op`].
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// To [`Op::Read`]: the level, `None` for an unknown SKU.
    Level(Option<Level>),
    /// To [`Op::Take`].
    Batch(BatchTake),
    /// The call failed after the consumer's failover (timeout, no
    /// provider, a db error). Whether a take committed is unknown.
    Failed(Fault),
}

/// How a deduction that reached the db ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Taken,
    /// The order had taken its units before.
    Replayed,
    /// Not enough left when its turn came.
    SoldOut,
    /// Its order was compensated first (a tombstone): it may not take.
    AlreadyRestored,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Taken => "taken",
            Outcome::Replayed => "replayed",
            Outcome::SoldOut => "sold_out",
            Outcome::AlreadyRestored => "already_restored",
        }
    }
}

/// A deduction's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deducted {
    pub outcome: Outcome,
    /// The SKU's level after its batch.
    pub level: Level,
    /// Compare-and-sets its batch made (1 without a conflict).
    pub cas_attempts: u32,
    /// Orders decided in the same compare-and-set.
    pub batch: usize,
    /// From [`Coalescer::push`] to the answer.
    pub waited: Duration,
}

/// Why a deduction did not get an answer from the db.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// Its deadline passed before a compare-and-set decided it: nothing
    /// of it was taken.
    GaveUp {
        waited: Duration,
    },
    /// Every compare-and-set of its batch conflicted: nothing taken.
    Conflicts {
        attempts: u32,
    },
    UnknownSku,
    /// Its order took something else before (db's words).
    Mismatch(String),
    /// The db call failed: the take may or may not have committed (the
    /// caller's compensation, `stock.restore`, settles it either way).
    Db(Fault),
}

/// A ticket's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub ticket: Ticket,
    pub result: Result<Deducted, Failure>,
}

/// The coalescer's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Orders in one compare-and-set.
    pub max_batch: usize,
    /// Compare-and-sets one batch may make.
    pub max_cas_attempts: u32,
}

#[derive(Debug)]
struct Waiting {
    ticket: Ticket,
    order_id: String,
    n: i64,
    arrived: Instant,
    deadline: Instant,
}

#[derive(Debug)]
struct Batch {
    orders: Vec<Waiting>,
    attempts: u32,
    /// The op is at the db (else the next poll hands it out).
    sent: bool,
}

#[derive(Debug, Default)]
struct Sku {
    queue: VecDeque<Waiting>,
    batch: Option<Batch>,
    /// As the db last reported it.
    level: Option<Level>,
    /// The earliest deadline in `queue` (a bound: it may have left).
    earliest: Option<Instant>,
}

/// Counters, for the control socket.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    pub batches: u64,
    pub cas_attempts: u64,
    pub cas_conflicts: u64,
    pub reads: u64,
    pub batch_max: usize,
    pub queued_max: usize,
    pub gave_up: u64,
    pub failed_batches: u64,
}

/// The deductions waiting on each SKU.
#[derive(Debug)]
pub struct Coalescer {
    limits: Limits,
    skus: BTreeMap<String, Sku>,
    stats: Stats,
}

impl Coalescer {
    pub fn new(limits: Limits) -> Coalescer {
        Coalescer {
            limits: Limits {
                max_batch: limits.max_batch.max(1),
                max_cas_attempts: limits.max_cas_attempts.max(1),
            },
            skus: BTreeMap::new(),
            stats: Stats::default(),
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Deductions queued or at the db.
    pub fn waiting(&self) -> usize {
        self.skus
            .values()
            .map(|s| s.queue.len() + s.batch.as_ref().map_or(0, |b| b.orders.len()))
            .sum()
    }

    /// A deduction of `n` of `sku` for `order_id`, to be answered by
    /// `deadline` at the latest.
    pub fn push(
        &mut self,
        now: Instant,
        ticket: Ticket,
        sku: &str,
        order_id: &str,
        n: i64,
        deadline: Instant,
    ) {
        let s = self.skus.entry(sku.to_string()).or_default();
        s.queue.push_back(Waiting {
            ticket,
            order_id: order_id.to_string(),
            n,
            arrived: now,
            deadline,
        });
        s.earliest = Some(s.earliest.map_or(deadline, |e| e.min(deadline)));
        self.stats.queued_max = self.stats.queued_max.max(s.queue.len());
    }

    /// Answers what expired, and hands out the db calls to make now: a new
    /// batch for each SKU with none at the db, or a batch's next attempt.
    pub fn poll(&mut self, now: Instant, ops: &mut Vec<Op>, answers: &mut Vec<Answer>) {
        let Coalescer {
            limits,
            skus,
            stats,
        } = self;
        for (name, s) in skus.iter_mut() {
            if s.earliest.is_some_and(|e| e <= now) {
                expire(s, now, stats, answers);
            }
            if s.batch.is_none() && !s.queue.is_empty() {
                let k = s.queue.len().min(limits.max_batch);
                s.batch = Some(Batch {
                    orders: s.queue.drain(..k).collect(),
                    attempts: 0,
                    sent: false,
                });
            }
            let Some(b) = s.batch.as_mut().filter(|b| !b.sent) else {
                continue;
            };
            b.sent = true;
            ops.push(match s.level {
                None => {
                    stats.reads += 1;
                    Op::Read { sku: name.clone() }
                }
                Some(level) => {
                    b.attempts += 1;
                    stats.cas_attempts += 1;
                    if b.attempts == 1 {
                        stats.batches += 1;
                        stats.batch_max = stats.batch_max.max(b.orders.len());
                    }
                    Op::Take {
                        sku: name.clone(),
                        version: level.version,
                        takes: b
                            .orders
                            .iter()
                            .map(|w| TakeRequest {
                                order_id: w.order_id.clone(),
                                n: w.n,
                            })
                            .collect(),
                    }
                }
            });
        }
    }

    /// The db answered the op for `sku`'s batch. Call [`Coalescer::poll`]
    /// next: a conflict or a read leaves the batch to send again.
    pub fn on_reply(&mut self, now: Instant, sku: &str, reply: Reply, answers: &mut Vec<Answer>) {
        let Some(s) = self.skus.get_mut(sku) else {
            return;
        };
        let Some(mut b) = s.batch.take() else {
            return;
        };
        let fail = |b: Batch, f: Failure, answers: &mut Vec<Answer>| {
            answers.extend(b.orders.into_iter().map(|w| Answer {
                ticket: w.ticket,
                result: Err(f.clone()),
            }))
        };
        match reply {
            Reply::Level(Some(level)) => {
                s.level = Some(level);
                b.sent = false;
                s.batch = Some(b);
            }
            Reply::Level(None) => fail(b, Failure::UnknownSku, answers),
            Reply::Failed(f) => {
                // It may have committed: read the version again next time.
                s.level = None;
                self.stats.failed_batches += 1;
                fail(b, Failure::Db(f), answers);
            }
            Reply::Batch(BatchTake::Conflict { current }) => {
                s.level = Some(current);
                self.stats.cas_conflicts += 1;
                if b.attempts >= self.limits.max_cas_attempts {
                    let attempts = b.attempts;
                    fail(b, Failure::Conflicts { attempts }, answers);
                    return;
                }
                // Nothing of it was taken: the expired may go, and what
                // queued meanwhile joins, behind the older ones.
                let (keep, gone): (Vec<_>, Vec<_>) =
                    b.orders.into_iter().partition(|w| w.deadline > now);
                give_up(gone, now, &mut self.stats, answers);
                b.orders = keep;
                let room = self.limits.max_batch.saturating_sub(b.orders.len());
                let k = s.queue.len().min(room);
                b.orders.extend(s.queue.drain(..k));
                b.sent = false;
                if !b.orders.is_empty() {
                    s.batch = Some(b);
                }
            }
            Reply::Batch(BatchTake::Applied { stock, takes }) => {
                s.level = Some(stock);
                if takes.len() != b.orders.len() {
                    let f = Fault::new(
                        crate::rpc::Status::BadResponse,
                        format!(
                            "db.stock_take_batch answered {} outcomes for {} orders",
                            takes.len(),
                            b.orders.len()
                        ),
                    );
                    s.level = None;
                    fail(b, Failure::Db(f), answers);
                    return;
                }
                let (attempts, batch) = (b.attempts, b.orders.len());
                for (w, t) in b.orders.into_iter().zip(takes) {
                    let outcome = match t {
                        TakeOutcome::Taken => Outcome::Taken,
                        TakeOutcome::Replayed => Outcome::Replayed,
                        TakeOutcome::Insufficient => Outcome::SoldOut,
                        TakeOutcome::AlreadyRestored => Outcome::AlreadyRestored,
                        TakeOutcome::Mismatch { took } => {
                            answers.push(Answer {
                                ticket: w.ticket,
                                result: Err(Failure::Mismatch(format!(
                                    "order {} already took {took}",
                                    w.order_id
                                ))),
                            });
                            continue;
                        }
                    };
                    answers.push(Answer {
                        ticket: w.ticket,
                        result: Ok(Deducted {
                            outcome,
                            level: stock,
                            cas_attempts: attempts,
                            batch,
                            waited: now.saturating_duration_since(w.arrived),
                        }),
                    });
                }
            }
        }
    }

    /// When [`Coalescer::poll`] must run again even if nothing arrives:
    /// the earliest deadline of a queued deduction.
    pub fn poll_at(&self) -> Option<Instant> {
        self.skus.values().filter_map(|s| s.earliest).min()
    }
}

/// Answers the queued deductions whose deadline passed.
fn expire(s: &mut Sku, now: Instant, stats: &mut Stats, answers: &mut Vec<Answer>) {
    let (keep, gone): (Vec<_>, Vec<_>) = s.queue.drain(..).partition(|w| w.deadline > now);
    s.queue = keep.into();
    s.earliest = s.queue.iter().map(|w| w.deadline).min();
    give_up(gone, now, stats, answers);
}

fn give_up(gone: Vec<Waiting>, now: Instant, stats: &mut Stats, answers: &mut Vec<Answer>) {
    for w in gone {
        stats.gave_up += 1;
        answers.push(Answer {
            ticket: w.ticket,
            result: Err(Failure::GaveUp {
                waited: now.saturating_duration_since(w.arrived),
            }),
        });
    }
}

#[cfg(test)]
mod tests;
