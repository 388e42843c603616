//! The database's replication stream (crates/apps/src/db/frame.rs) on
//! arbitrary bytes, as both ends handle it: frames are read one after the
//! other (4-byte length + JSON) until one is refused; every message re-frames
//! to one that reads the same; the standby's rule (each change the next
//! seq) and the primary's (acks within what was sent, never backwards) are
//! applied; each change of a batch the standby takes is applied to a fresh
//! in-memory database, as `Standby` does. Never a panic: a bad frame or a
//! change SQLite refuses is an error that closes the connection.
#![no_main]
use d11_apps::db::{check_ack, check_batch, read_msg, write_msg, Db, Msg};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    thread_local! {
        static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    }
    RT.with(|rt| rt.block_on(f))
}

fuzz_target!(|data: &[u8]| {
    // Opened for the first batch the standby takes (most inputs have none).
    let mut db: Option<Db> = None;
    let mut input = data;
    // The standby's last seq received; the primary's last sent and acked.
    let (mut last, mut acked) = (0u64, 0u64);
    let sent = u64::from(data.first().copied().unwrap_or(0));
    loop {
        let msg = match block_on(read_msg(&mut input)) {
            Ok(m) => m,
            Err(e) => {
                let _ = (e.reason(), e.to_string());
                break;
            }
        };
        let mut framed = vec![];
        block_on(write_msg(&mut framed, &msg)).expect("a message read frames again");
        assert_eq!(block_on(read_msg(&mut &framed[..])).expect("and reads back"), msg);
        let _ = msg.kind();
        match msg {
            Msg::Changes { changes, .. } => {
                match check_batch(last, &changes) {
                    Ok(l) => last = l,
                    Err(_) => break,
                }
                let db = db.get_or_insert_with(|| Db::open(Path::new(":memory:")).expect("an in-memory database opens"));
                if db.apply(&changes).is_err() {
                    return;
                }
                let _ = (db.head(), db.changes_after(0, 16), db.stock_all(), db.orders(), db.coupons());
            }
            Msg::Heartbeat { .. } => {}
            Msg::Ack { seq } => match check_ack(seq, sent, acked) {
                Ok(()) => acked = seq,
                Err(_) => break,
            },
            Msg::Hello { after, .. } => {
                if after > sent {
                    break;
                }
            }
        }
    }
});
