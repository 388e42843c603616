//! The oversell property in process: stock 50, 200 buyers at once, each on
//! its own thread with its own SQLite connection (as the stock service's
//! workers would be), each running the story's CAS loop.

use std::path::Path;
use std::sync::{Arc, Barrier};

use d11_apps::db::{Cas, Db, Take};

const STOCK: i64 = 50;
const BUYERS: usize = 200;

/// Runs `buy` on `BUYERS` threads released together; counts true answers.
fn race(path: &Path, buy: impl Fn(&mut Db, usize) -> bool + Send + Sync + 'static) -> usize {
    let buy = Arc::new(buy);
    let start = Arc::new(Barrier::new(BUYERS));
    let threads: Vec<_> = (0..BUYERS)
        .map(|i| {
            let (path, buy, start) = (path.to_path_buf(), buy.clone(), start.clone());
            std::thread::spawn(move || {
                let mut db = Db::open(&path).unwrap();
                start.wait();
                buy(&mut db, i)
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|sold| *sold)
        .count()
}

#[test]
fn fifty_in_stock_and_two_hundred_cas_buyers_sell_exactly_fifty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shop.sqlite");
    Db::open(&path).unwrap().seed_stock("book", STOCK).unwrap();
    let sold = race(&path, |db, _| loop {
        let s = db.stock_get("book").unwrap().unwrap();
        assert!(s.stock >= 0, "negative stock seen: {s:?}");
        match db.stock_cas("book", s.version, s.stock - 1).unwrap() {
            Cas::Applied(after) => {
                assert!(after.stock >= 0);
                return true;
            }
            Cas::Conflict { .. } => continue,
            Cas::Insufficient { current } => {
                assert_eq!(current.stock, 0);
                return false;
            }
        }
    });
    assert_eq!(sold, STOCK as usize, "accepted");
    assert_eq!(BUYERS - sold, 150, "sold out");
    let db = Db::open(&path).unwrap();
    let end = db.stock_get("book").unwrap().unwrap();
    assert_eq!(end.stock, 0);
    assert_eq!(end.version, STOCK, "one version per sale");
    // The log holds the seed and one change per sale, nothing else.
    assert_eq!(db.head().unwrap(), 1 + STOCK as u64);
}

#[test]
fn two_hundred_orders_taking_with_cas_leave_one_move_per_sale() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shop.sqlite");
    Db::open(&path).unwrap().seed_stock("book", STOCK).unwrap();
    let sold = race(&path, |db, i| {
        let order = format!("ord-{i}");
        loop {
            let s = db.stock_get("book").unwrap().unwrap();
            match db.stock_take(&order, "book", 1, Some(s.version)).unwrap() {
                Take::Taken(_) => {
                    // The caller retries as after a lost reply: never a second take.
                    let again = db.stock_take(&order, "book", 1, None).unwrap();
                    assert!(matches!(again, Take::Replayed(_)), "{again:?}");
                    return true;
                }
                Take::Conflict { .. } => continue,
                Take::Insufficient { .. } => return false,
                other => panic!("{other:?}"),
            }
        }
    });
    assert_eq!(sold, STOCK as usize);
    let db = Db::open(&path).unwrap();
    assert_eq!(db.stock_get("book").unwrap().unwrap().stock, 0);
    assert_eq!(db.stock_moves().unwrap().len(), STOCK as usize);
}
