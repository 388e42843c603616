//! The coalescer on a virtual clock: instants are a base plus offsets, no
//! sleep, no runtime. The last test drives two coalescers (two stock
//! providers) against the real SQLite store.

use super::*;
use crate::db::Db;
use crate::rpc::Status;

const SKU: &str = "book";

fn limits(max_batch: usize, max_cas_attempts: u32) -> Limits {
    Limits {
        max_batch,
        max_cas_attempts,
    }
}

fn l(stock: i64, version: i64) -> Level {
    Level { stock, version }
}

struct Clock(Instant);
impl Clock {
    fn at(&self, ms: u64) -> Instant {
        self.0 + Duration::from_millis(ms)
    }
}

fn poll(c: &mut Coalescer, now: Instant) -> (Vec<Op>, Vec<Answer>) {
    let (mut ops, mut answers) = (vec![], vec![]);
    c.poll(now, &mut ops, &mut answers);
    (ops, answers)
}

fn push(c: &mut Coalescer, t: &Clock, ms: u64, ticket: Ticket, deadline_ms: u64) {
    c.push(
        t.at(ms),
        ticket,
        SKU,
        &format!("o{ticket}"),
        1,
        t.at(deadline_ms),
    );
}

fn ids(op: &Op) -> Vec<String> {
    match op {
        Op::Take { takes, .. } => takes.iter().map(|t| t.order_id.clone()).collect(),
        Op::Read { .. } => vec![],
    }
}

fn reply(c: &mut Coalescer, now: Instant, r: Reply) -> Vec<Answer> {
    let mut answers = vec![];
    c.on_reply(now, SKU, r, &mut answers);
    answers
}

fn applied(stock: Level, takes: Vec<TakeOutcome>) -> Reply {
    Reply::Batch(BatchTake::Applied { stock, takes })
}

#[test]
fn one_deduction_reads_the_version_then_takes_in_one_compare_and_set() {
    let t = Clock(Instant::now());
    let mut c = Coalescer::new(limits(8, 4));
    push(&mut c, &t, 0, 1, 1000);
    let (ops, _) = poll(&mut c, t.at(0));
    assert_eq!(ops, vec![Op::Read { sku: SKU.into() }]);
    assert!(reply(&mut c, t.at(1), Reply::Level(Some(l(10, 7)))).is_empty());
    let (ops, _) = poll(&mut c, t.at(1));
    assert_eq!(
        ops,
        vec![Op::Take {
            sku: SKU.into(),
            version: 7,
            takes: vec![TakeRequest {
                order_id: "o1".into(),
                n: 1
            }]
        }]
    );
    // Nothing more to send while it is at the db.
    assert!(poll(&mut c, t.at(2)).0.is_empty());
    let a = reply(&mut c, t.at(3), applied(l(9, 8), vec![TakeOutcome::Taken]));
    assert_eq!(
        a,
        vec![Answer {
            ticket: 1,
            result: Ok(Deducted {
                outcome: Outcome::Taken,
                level: l(9, 8),
                cas_attempts: 1,
                batch: 1,
                waited: Duration::from_millis(3),
            })
        }]
    );
    assert_eq!(c.waiting(), 0);
}

#[test]
fn deductions_arriving_during_a_batch_are_the_next_batch_oldest_first() {
    let t = Clock(Instant::now());
    let mut c = Coalescer::new(limits(3, 4));
    push(&mut c, &t, 0, 1, 1000);
    poll(&mut c, t.at(0));
    reply(&mut c, t.at(1), Reply::Level(Some(l(10, 0))));
    let (ops, _) = poll(&mut c, t.at(1));
    assert_eq!(ids(&ops[0]), ["o1"]);
    for k in 2..=6 {
        push(&mut c, &t, k, k, 1000);
        assert!(poll(&mut c, t.at(k)).0.is_empty(), "one batch at a time");
    }
    reply(&mut c, t.at(7), applied(l(9, 1), vec![TakeOutcome::Taken]));
    // The next one knows the version from the answer: no read, and at most
    // three orders (max_batch), the oldest first.
    let (ops, _) = poll(&mut c, t.at(7));
    assert_eq!(
        ops.iter().map(ids).collect::<Vec<_>>(),
        vec![vec!["o2", "o3", "o4"]]
    );
    assert!(matches!(ops[0], Op::Take { version: 1, .. }));
    let a = reply(
        &mut c,
        t.at(8),
        applied(
            l(7, 3),
            vec![
                TakeOutcome::Taken,
                TakeOutcome::Replayed,
                TakeOutcome::Taken,
            ],
        ),
    );
    let got: Vec<_> = a
        .iter()
        .map(|a| {
            (
                a.ticket,
                a.result.as_ref().unwrap().outcome,
                a.result.as_ref().unwrap().batch,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (2, Outcome::Taken, 3),
            (3, Outcome::Replayed, 3),
            (4, Outcome::Taken, 3)
        ]
    );
    let (ops, _) = poll(&mut c, t.at(8));
    assert_eq!(ids(&ops[0]), ["o5", "o6"]);
}

#[test]
fn a_conflict_tries_again_at_once_at_the_reported_version_with_latecomers_behind() {
    let t = Clock(Instant::now());
    let mut c = Coalescer::new(limits(8, 4));
    push(&mut c, &t, 0, 1, 1000);
    poll(&mut c, t.at(0));
    reply(&mut c, t.at(1), Reply::Level(Some(l(10, 0))));
    poll(&mut c, t.at(1));
    push(&mut c, &t, 2, 2, 1000);
    let a = reply(
        &mut c,
        t.at(3),
        Reply::Batch(BatchTake::Conflict { current: l(8, 2) }),
    );
    assert!(a.is_empty());
    let (ops, _) = poll(&mut c, t.at(3));
    assert!(matches!(ops[0], Op::Take { version: 2, .. }), "{ops:?}");
    assert_eq!(ids(&ops[0]), ["o1", "o2"]);
    let a = reply(
        &mut c,
        t.at(4),
        applied(l(6, 4), vec![TakeOutcome::Taken, TakeOutcome::Taken]),
    );
    assert_eq!(a[0].result.as_ref().unwrap().cas_attempts, 2);
    assert_eq!(c.stats().cas_conflicts, 1);
    assert_eq!(c.stats().batches, 1);
}

#[test]
fn a_deduction_still_queued_at_its_deadline_gives_up_and_is_never_sent() {
    let t = Clock(Instant::now());
    let mut c = Coalescer::new(limits(8, 4));
    push(&mut c, &t, 0, 1, 1000);
    poll(&mut c, t.at(0)); // the read is at the db…
    push(&mut c, &t, 10, 2, 500);
    push(&mut c, &t, 20, 3, 2000);
    assert_eq!(c.poll_at(), Some(t.at(500)));
    // …and does not answer in time for order 2.
    let (ops, a) = poll(&mut c, t.at(500));
    assert!(ops.is_empty());
    assert_eq!(
        a,
        vec![Answer {
            ticket: 2,
            result: Err(Failure::GaveUp {
                waited: Duration::from_millis(490)
            })
        }]
    );
    assert_eq!(c.poll_at(), Some(t.at(2000)));
    reply(&mut c, t.at(600), Reply::Level(Some(l(5, 0))));
    poll(&mut c, t.at(600));
    reply(
        &mut c,
        t.at(601),
        applied(l(4, 1), vec![TakeOutcome::Taken]),
    );
    let (ops, _) = poll(&mut c, t.at(601));
    assert_eq!(ids(&ops[0]), ["o3"], "order 2 is never sent");
    assert_eq!(c.stats().gave_up, 1);
}

#[test]
fn a_batch_whose_every_compare_and_set_conflicts_ends_after_max_attempts() {
    let t = Clock(Instant::now());
    let mut c = Coalescer::new(limits(8, 3));
    push(&mut c, &t, 0, 1, 60_000);
    poll(&mut c, t.at(0));
    reply(&mut c, t.at(1), Reply::Level(Some(l(10, 0))));
    let mut answers = vec![];
    for v in 1..=3 {
        let (ops, _) = poll(&mut c, t.at(v));
        assert_eq!(ops.len(), 1, "attempt {v}");
        answers = reply(
            &mut c,
            t.at(v),
            Reply::Batch(BatchTake::Conflict {
                current: l(10, v as i64),
            }),
        );
    }
    assert_eq!(
        answers,
        vec![Answer {
            ticket: 1,
            result: Err(Failure::Conflicts { attempts: 3 })
        }]
    );
    assert!(poll(&mut c, t.at(10)).0.is_empty());
}

#[test]
fn a_failed_call_fails_its_batch_and_the_next_reads_the_version_again() {
    let t = Clock(Instant::now());
    let mut c = Coalescer::new(limits(8, 3));
    push(&mut c, &t, 0, 1, 60_000);
    poll(&mut c, t.at(0));
    reply(&mut c, t.at(1), Reply::Level(Some(l(10, 0))));
    poll(&mut c, t.at(1));
    push(&mut c, &t, 2, 2, 60_000);
    let f = Fault::new(Status::ClientTimeout, "no answer in 2s");
    let a = reply(&mut c, t.at(2000), Reply::Failed(f.clone()));
    assert_eq!(
        a,
        vec![Answer {
            ticket: 1,
            result: Err(Failure::Db(f))
        }]
    );
    let (ops, _) = poll(&mut c, t.at(2000));
    assert_eq!(ops, vec![Op::Read { sku: SKU.into() }]);
    // An unknown SKU fails the batch waiting on it.
    let a = reply(&mut c, t.at(2001), Reply::Level(None));
    assert_eq!(a[0].result, Err(Failure::UnknownSku));
}

/// Runs `op` against the real store, as the db service would.
fn run(db: &mut Db, op: &Op) -> Reply {
    match op {
        Op::Read { sku } => Reply::Level(db.stock_get(sku).unwrap()),
        Op::Take {
            sku,
            version,
            takes,
        } => Reply::Batch(db.stock_take_batch(sku, *version, takes).unwrap()),
    }
}

#[test]
fn ten_thousand_buyers_on_two_providers_buy_exactly_the_stock_in_few_compare_and_sets() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::open(&dir.path().join("shop.sqlite")).unwrap();
    db.seed_stock(SKU, 5000).unwrap();
    let t = Clock(Instant::now());
    let mut providers = [
        Coalescer::new(limits(512, 64)),
        Coalescer::new(limits(512, 64)),
    ];
    // In flight: (provider, op) in the order they reach the db, which a
    // seeded generator shuffles a little (the two race).
    let mut wire: VecDeque<(usize, Op)> = VecDeque::new();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut outcomes: BTreeMap<Ticket, Outcome> = BTreeMap::new();
    let mut ms = 0;
    let mut arrived = 0u64;
    let mut answers = vec![];
    while outcomes.len() < 10_000 {
        ms += 1;
        let now = t.at(ms);
        // 1,000 buyers a millisecond for ten milliseconds, round robin.
        for _ in 0..1000 {
            if arrived < 10_000 {
                let p = (arrived % 2) as usize;
                let k = arrived;
                providers[p].push(now, k, SKU, &format!("ord-{k}"), 1, t.at(60_000));
                arrived += 1;
            }
        }
        for (p, c) in providers.iter_mut().enumerate() {
            let mut ops = vec![];
            c.poll(now, &mut ops, &mut answers);
            for op in ops {
                if next() % 2 == 0 {
                    wire.push_front((p, op));
                } else {
                    wire.push_back((p, op));
                }
            }
        }
        // The db answers one call a millisecond.
        if let Some((p, op)) = wire.pop_front() {
            let r = run(&mut db, &op);
            providers[p].on_reply(now, op.sku(), r, &mut answers);
        }
        for a in answers.drain(..) {
            let d = a.result.expect("no failure");
            assert!(
                outcomes.insert(a.ticket, d.outcome).is_none(),
                "answered twice"
            );
        }
        assert!(ms < 100_000, "stuck: {} answered", outcomes.len());
    }
    let count = |o| outcomes.values().filter(|&&x| x == o).count();
    assert_eq!(
        (count(Outcome::Taken), count(Outcome::SoldOut)),
        (5000, 5000)
    );
    let level = db.stock_get(SKU).unwrap().unwrap();
    assert_eq!(level, l(0, 5000), "the version counts the takes");
    assert_eq!(db.stock_moves().unwrap().len(), 5000);
    // The oldest buyers got it: on each provider, every ticket taken is
    // older than every ticket sold out.
    for p in 0..2u64 {
        let mine = outcomes.iter().filter(|(k, _)| *k % 2 == p);
        let last_taken = mine
            .clone()
            .filter(|(_, o)| **o == Outcome::Taken)
            .map(|(k, _)| *k)
            .max();
        let first_sold_out = mine
            .filter(|(_, o)| **o == Outcome::SoldOut)
            .map(|(k, _)| *k)
            .min();
        assert!(
            last_taken < first_sold_out,
            "provider {p}: {last_taken:?} {first_sold_out:?}"
        );
    }
    let cas: u64 = providers.iter().map(|c| c.stats().cas_attempts).sum();
    let conflicts: u64 = providers.iter().map(|c| c.stats().cas_conflicts).sum();
    eprintln!(
        "10,000 buyers: {cas} compare-and-sets, {conflicts} conflicts, {ms} ms of virtual time"
    );
    assert!(cas <= 100, "{cas} compare-and-sets for 10,000 buyers");
}
