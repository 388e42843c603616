use super::*;

fn db() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("shop.sqlite")).unwrap();
    (dir, db)
}

fn order(id: &str, key: Option<&str>) -> NewOrder {
    NewOrder {
        order_id: id.into(),
        idempotency_key: key.map(Into::into),
        sku: "book".into(),
        coupon: None,
        price: "68".into(),
        body: r#"{"order":{"className":"趣谈网络协议","price":"68"}}"#.into(),
    }
}

#[test]
fn cas_applies_on_the_expected_version_and_bumps_it() {
    let (_d, mut db) = db();
    db.seed_stock("book", 10).unwrap();
    let s = db.stock_get("book").unwrap().unwrap();
    assert_eq!(
        s,
        Stock {
            stock: 10,
            version: 0
        }
    );
    assert_eq!(
        db.stock_cas("book", 0, 9).unwrap(),
        Cas::Applied(Stock {
            stock: 9,
            version: 1
        })
    );
}

#[test]
fn cas_with_a_stale_version_is_a_conflict_and_changes_nothing() {
    let (_d, mut db) = db();
    db.seed_stock("book", 10).unwrap();
    db.stock_cas("book", 0, 9).unwrap();
    let current = Stock {
        stock: 9,
        version: 1,
    };
    assert_eq!(
        db.stock_cas("book", 0, 8).unwrap(),
        Cas::Conflict { current }
    );
    assert_eq!(db.stock_get("book").unwrap(), Some(current));
    assert_eq!(db.head().unwrap(), 2, "a conflict logs no change");
}

#[test]
fn stock_never_goes_below_zero_even_when_asked() {
    let (_d, mut db) = db();
    db.seed_stock("book", 1).unwrap();
    let current = Stock {
        stock: 1,
        version: 0,
    };
    assert_eq!(
        db.stock_cas("book", 0, -1).unwrap(),
        Cas::Insufficient { current }
    );
    assert_eq!(
        db.stock_take("o1", "book", 2, None).unwrap(),
        Take::Insufficient { current }
    );
    assert!(matches!(
        db.seed_stock("book", -5),
        Err(DbError::BadAmount { .. })
    ));
    // Even a raw UPDATE is refused by the CHECK constraint.
    assert!(db
        .conn
        .execute("UPDATE stock SET stock = -1 WHERE sku = 'book'", [])
        .is_err());
    assert_eq!(db.stock_get("book").unwrap(), Some(current));
}

#[test]
fn an_unknown_sku_is_an_error_naming_it() {
    let (_d, mut db) = db();
    let e = db.stock_cas("nope", 0, 1).unwrap_err();
    assert_eq!(e.to_string(), "unknown sku \"nope\"");
    assert_eq!(db.stock_get("nope").unwrap(), None);
}

#[test]
fn stock_take_is_applied_once_per_order_id() {
    let (_d, mut db) = db();
    db.seed_stock("book", 5).unwrap();
    let taken = db.stock_take("o1", "book", 2, Some(0)).unwrap();
    let after = Stock {
        stock: 3,
        version: 1,
    };
    assert_eq!(taken, Take::Taken(after));
    assert_eq!(
        db.stock_take("o1", "book", 2, Some(0)).unwrap(),
        Take::Replayed(after)
    );
    assert_eq!(
        db.stock_take("o1", "book", 2, None).unwrap(),
        Take::Replayed(after)
    );
    assert!(matches!(
        db.stock_take("o1", "book", 3, None),
        Err(DbError::MoveMismatch { .. })
    ));
    assert_eq!(db.stock_get("book").unwrap(), Some(after));
    assert_eq!(
        db.stock_take("o2", "book", 1, Some(0)).unwrap(),
        Take::Conflict { current: after }
    );
}

#[test]
fn stock_restore_happens_once_and_a_late_take_is_refused() {
    let (_d, mut db) = db();
    db.seed_stock("book", 5).unwrap();
    db.stock_take("o1", "book", 2, None).unwrap();
    assert_eq!(
        db.stock_restore("o1").unwrap(),
        Restore::Restored(Stock {
            stock: 5,
            version: 2
        })
    );
    assert_eq!(db.stock_restore("o1").unwrap(), Restore::AlreadyRestored);
    assert_eq!(
        db.stock_take("o1", "book", 2, None).unwrap(),
        Take::AlreadyRestored
    );
    // The compensation overtakes the take: the take must not happen.
    assert_eq!(db.stock_restore("o2").unwrap(), Restore::NothingTaken);
    assert_eq!(
        db.stock_take("o2", "book", 1, None).unwrap(),
        Take::AlreadyRestored
    );
    assert_eq!(db.stock_get("book").unwrap().unwrap().stock, 5);
}

fn takes(ids: &[&str]) -> Vec<TakeRequest> {
    ids.iter()
        .map(|id| TakeRequest {
            order_id: id.to_string(),
            n: 1,
        })
        .collect()
}

#[test]
fn a_batch_is_one_compare_and_set_oldest_first_until_sold_out() {
    let (_d, mut db) = db();
    db.seed_stock("book", 2).unwrap();
    let head = db.head().unwrap();
    let r = db
        .stock_take_batch("book", 0, &takes(&["o1", "o2", "o3"]))
        .unwrap();
    use TakeOutcome::*;
    assert_eq!(
        r,
        BatchTake::Applied {
            stock: Stock {
                stock: 0,
                version: 2
            },
            takes: vec![Taken, Taken, Insufficient],
        }
    );
    // One transaction, one change: the stock row and a move per order taken.
    assert_eq!(db.head().unwrap(), head + 1);
    let c = db.changes_after(head, 10).unwrap();
    assert_eq!(c[0].op, "stock_take_batch");
    assert_eq!(c[0].rows.len(), 3, "{:?}", c[0].rows);
    let moves: Vec<String> = db
        .stock_moves()
        .unwrap()
        .into_iter()
        .map(|m| m.order_id)
        .collect();
    assert_eq!(moves, ["o1", "o2"]);
}

#[test]
fn a_batch_at_a_stale_version_changes_nothing() {
    let (_d, mut db) = db();
    db.seed_stock("book", 5).unwrap();
    db.stock_take("o0", "book", 1, None).unwrap();
    let head = db.head().unwrap();
    let current = Stock {
        stock: 4,
        version: 1,
    };
    assert_eq!(
        db.stock_take_batch("book", 0, &takes(&["o1"])).unwrap(),
        BatchTake::Conflict { current }
    );
    assert_eq!(db.head().unwrap(), head, "a conflict logs no change");
    assert_eq!(db.stock_get("book").unwrap(), Some(current));
}

#[test]
fn a_batch_replays_what_was_taken_refuses_what_was_restored_and_takes_once() {
    let (_d, mut db) = db();
    db.seed_stock("book", 5).unwrap();
    db.stock_take("o1", "book", 1, None).unwrap(); // version 1
    assert_eq!(db.stock_restore("o2").unwrap(), Restore::NothingTaken); // tombstone, no version
    db.stock_take("o3", "book", 2, None).unwrap(); // version 2
                                                   // o4 twice in one batch: the second finds the first's move.
    let r = db
        .stock_take_batch("book", 2, &takes(&["o1", "o2", "o3", "o4", "o4"]))
        .unwrap();
    use TakeOutcome::*;
    assert_eq!(
        r,
        BatchTake::Applied {
            stock: Stock {
                stock: 1,
                version: 3
            },
            takes: vec![
                Replayed,
                AlreadyRestored,
                Mismatch {
                    took: "2 x book".into()
                },
                Taken,
                Replayed
            ],
        }
    );
    // Nothing taken: no change logged, the version unchanged.
    let head = db.head().unwrap();
    let r = db.stock_take_batch("book", 3, &takes(&["o1"])).unwrap();
    assert!(matches!(
        r,
        BatchTake::Applied {
            stock: Stock { version: 3, .. },
            ..
        }
    ));
    assert_eq!(db.head().unwrap(), head);
    assert!(matches!(
        db.stock_take_batch(
            "book",
            3,
            &[TakeRequest {
                order_id: "o9".into(),
                n: 0
            }]
        ),
        Err(DbError::BadAmount { .. })
    ));
}

#[test]
fn replication_messages_are_cut_to_a_byte_budget() {
    let (_d, mut db) = db();
    db.seed_stock("book", 1000).unwrap();
    let ids: Vec<String> = (0..100).map(|i| format!("ord-{i:016x}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    for (v, chunk) in refs.chunks(50).enumerate() {
        db.stock_take_batch("book", 50 * v as i64, &takes(chunk))
            .unwrap();
    }
    assert_eq!(db.changes_within(0, 10, usize::MAX).unwrap().len(), 3);
    // Each batch's change is several kB: a budget of one lets one through.
    let big = db.changes_within(1, 10, 1).unwrap();
    assert_eq!(big.len(), 1);
    assert_eq!(big[0].rows.len(), 51);
}

#[test]
fn coupon_is_reserved_and_consumed_once_per_order() {
    let (_d, mut db) = db();
    assert!(db.seed_coupon("SD11").unwrap());
    assert!(!db.seed_coupon("SD11").unwrap());
    assert!(matches!(
        db.coupon_consume("SD11", "o1").unwrap(),
        CouponOutcome::Refused(_)
    ));
    assert!(matches!(
        db.coupon_reserve("SD11", "o1").unwrap(),
        CouponOutcome::Applied(CouponRow {
            state: CouponState::Reserved,
            ..
        })
    ));
    assert!(matches!(
        db.coupon_reserve("SD11", "o1").unwrap(),
        CouponOutcome::Replayed(_)
    ));
    let CouponOutcome::Refused(row) = db.coupon_reserve("SD11", "o2").unwrap() else {
        panic!("another order reserved a held coupon")
    };
    assert_eq!(row.order_id.as_deref(), Some("o1"));
    assert!(matches!(
        db.coupon_consume("SD11", "o2").unwrap(),
        CouponOutcome::Refused(_)
    ));
    assert!(matches!(
        db.coupon_consume("SD11", "o1").unwrap(),
        CouponOutcome::Applied(CouponRow {
            state: CouponState::Consumed,
            ..
        })
    ));
    assert!(matches!(
        db.coupon_consume("SD11", "o1").unwrap(),
        CouponOutcome::Replayed(_)
    ));
    assert!(matches!(
        db.coupon_release("SD11", "o1").unwrap(),
        CouponOutcome::Refused(_)
    ));
    assert!(matches!(
        db.coupon_reserve("nope", "o1"),
        Err(DbError::UnknownCoupon(_))
    ));
}

#[test]
fn a_released_coupon_is_free_for_another_order() {
    let (_d, mut db) = db();
    db.seed_coupon("SD11").unwrap();
    db.coupon_reserve("SD11", "o1").unwrap();
    assert!(matches!(
        db.coupon_release("SD11", "o1").unwrap(),
        CouponOutcome::Applied(CouponRow {
            state: CouponState::Free,
            order_id: None,
            ..
        })
    ));
    assert!(matches!(
        db.coupon_release("SD11", "o1").unwrap(),
        CouponOutcome::Replayed(_)
    ));
    assert!(matches!(
        db.coupon_reserve("SD11", "o2").unwrap(),
        CouponOutcome::Applied(_)
    ));
}

#[test]
fn order_create_is_idempotent_by_order_id_and_by_key() {
    let (_d, mut db) = db();
    let OrderCreated::Created(first) = db.order_create(&order("o1", Some("k1"))).unwrap() else {
        panic!("not created")
    };
    assert_eq!(first.state, OrderState::Pending);
    assert_eq!(
        db.order_create(&order("o1", Some("k1"))).unwrap(),
        OrderCreated::Replayed(first.clone())
    );
    // A retry that got a new order id but carries the same key.
    assert_eq!(
        db.order_create(&order("o2", Some("k1"))).unwrap(),
        OrderCreated::Replayed(first.clone())
    );
    let mut other = order("o3", Some("k1"));
    other.price = "1".into();
    assert_eq!(
        db.order_create(&other).unwrap(),
        OrderCreated::KeyReused {
            order_id: "o1".into()
        }
    );
    let mut clash = order("o1", Some("k9"));
    clash.price = "1".into();
    assert!(matches!(
        db.order_create(&clash),
        Err(DbError::OrderIdReused { .. })
    ));
    let mut bad = order("o4", None);
    bad.body = "{not json".into();
    assert!(matches!(
        db.order_create(&bad),
        Err(DbError::BadBody { .. })
    ));
    assert_eq!(db.orders().unwrap(), vec![first]);
}

#[test]
fn order_state_moves_only_out_of_pending() {
    let (_d, mut db) = db();
    db.order_create(&order("o1", None)).unwrap();
    assert_eq!(
        db.order_set_state("o1", OrderState::Confirmed).unwrap(),
        StateChange::Changed {
            from: OrderState::Pending
        }
    );
    assert_eq!(
        db.order_set_state("o1", OrderState::Confirmed).unwrap(),
        StateChange::Unchanged
    );
    let e = db.order_set_state("o1", OrderState::Cancelled).unwrap_err();
    assert_eq!(
        e.to_string(),
        "order o1 cannot go from confirmed to cancelled"
    );
    assert!(matches!(
        db.order_set_state("o9", OrderState::Cancelled),
        Err(DbError::UnknownOrder(_))
    ));
}

#[test]
fn each_write_logs_one_change_with_its_row_images() {
    let (_d, mut db) = db();
    db.seed_stock("book", 5).unwrap();
    db.stock_take("o1", "book", 1, None).unwrap();
    db.stock_take("o1", "book", 1, None).unwrap(); // replay: no change
    let changes = db.changes_after(0, 10).unwrap();
    assert_eq!(
        changes
            .iter()
            .map(|c| (c.seq, c.op.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, "seed_stock"), (2, "stock_take")]
    );
    assert_eq!(
        changes[1].rows[1],
        RowImage::StockMove(StockMove {
            order_id: "o1".into(),
            sku: Some("book".into()),
            n: 1,
            state: MoveState::Taken
        })
    );
    let json = serde_json::to_string(&changes[1].rows).unwrap();
    assert!(
        json.starts_with(r#"[{"table":"stock","sku":"book""#),
        "{json}"
    );
    let back: Vec<RowImage> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, changes[1].rows);
}

#[test]
fn apply_copies_changes_once_and_refuses_gaps() {
    let (_d, mut primary) = db();
    let (_d2, mut standby) = db();
    primary.seed_stock("book", 5).unwrap();
    primary.seed_coupon("SD11").unwrap();
    primary.order_create(&order("o1", Some("k"))).unwrap();
    primary.stock_take("o1", "book", 1, None).unwrap();
    let changes = primary.changes_after(0, 100).unwrap();
    assert!(matches!(
        standby.apply(&changes[1..]),
        Err(DbError::OutOfOrder {
            expected: 1,
            got: 2
        })
    ));
    // An error applies none of its batch.
    assert!(matches!(
        standby.apply(&[changes[0].clone(), changes[2].clone()]),
        Err(DbError::OutOfOrder {
            expected: 2,
            got: 3
        })
    ));
    assert_eq!(standby.head().unwrap(), 0);
    assert_eq!(standby.apply(&changes[..1]).unwrap(), [Applied::Applied]);
    assert_eq!(
        standby.apply(&changes).unwrap(),
        [
            vec![Applied::Duplicate],
            vec![Applied::Applied; changes.len() - 1]
        ]
        .concat()
    );
    assert_eq!(standby.apply(&changes[..1]).unwrap(), [Applied::Duplicate]);
    assert_eq!(standby.orders().unwrap(), primary.orders().unwrap());
    assert_eq!(standby.stock_all().unwrap(), primary.stock_all().unwrap());
    assert_eq!(
        standby.stock_moves().unwrap(),
        primary.stock_moves().unwrap()
    );
    assert_eq!(standby.coupons().unwrap(), primary.coupons().unwrap());
    assert_eq!(standby.changes_after(0, 100).unwrap(), changes);
}

#[test]
fn the_log_is_read_without_preparing_its_statement_again() {
    let (_dir, mut db) = db();
    db.seed_stock("book", 10).unwrap();
    for i in 0..5 {
        db.order_create(&order(&format!("o{i}"), None)).unwrap();
        assert_eq!(db.changes_within(i, 2, usize::MAX).unwrap().len(), 2);
    }
    let st = db.conn.prepare_cached(CHANGES_AFTER).unwrap();
    assert_eq!(st.get_status(rusqlite::StatementStatus::RePrepare), 0);
}
