//! Replication on loopback: a primary and a standby on 127.0.0.1, each with
//! its own SQLite file, as they will be in `vm-db` and `vm-db2`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use d11_apps::db::{
    CouponOutcome, Db, DbError, NewOrder, OrderState, Primary, PrimaryConfig, Replicated,
    ReplicationMode, Standby, StandbyConfig, Take,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const SKUS: [&str; 4] = ["book", "pen", "mug", "lamp"];
const COUPONS: usize = 20;

struct Running<T> {
    it: Arc<T>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl<T> Running<T> {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let _ = self.task.await;
    }
}

fn config(mode: ReplicationMode) -> PrimaryConfig {
    PrimaryConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        mode,
        sync_timeout_ms: 2000,
        heartbeat_ms: 100,
        poll_ms: 20,
        idle_timeout_ms: 2000,
        ..PrimaryConfig::default()
    }
}

async fn primary(dir: &Path, config: PrimaryConfig) -> (Running<Primary>, SocketAddr) {
    let p = Primary::open(&dir.join("primary.sqlite"), config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn({
        let p = p.clone();
        async move {
            p.serve(listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap()
        }
    });
    (
        Running {
            it: p,
            stop: Some(stop),
            task,
        },
        addr,
    )
}

fn standby(dir: &Path, primary: SocketAddr) -> Running<Standby> {
    let config = StandbyConfig {
        backoff_min_ms: 20,
        backoff_max_ms: 200,
        idle_timeout_ms: 2000,
        ..StandbyConfig::new(primary)
    };
    let s = Standby::open("vm-db2", &dir.join("standby.sqlite"), config).unwrap();
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(s.clone().run(async {
        let _ = stopped.await;
    }));
    Running {
        it: s,
        stop: Some(stop),
        task,
    }
}

/// Polls `cond` every 10 ms for up to 10 s.
async fn eventually<F: Future<Output = bool>>(what: &str, mut cond: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn new_order(i: usize) -> NewOrder {
    NewOrder {
        order_id: format!("ord-{i:04}"),
        idempotency_key: Some(format!("key-{i}")),
        sku: SKUS[i % SKUS.len()].into(),
        coupon: (i < COUPONS).then(|| format!("SD11-{i}")),
        price: "68".into(),
        body: format!(r#"{{"order":{{"className":"趣谈网络协议","price":"68","n":{i}}}}}"#),
    }
}

/// The i-th operation of the shop's day: seeds, then orders going through
/// create → take → (coupon) → confirm, every fifth one compensated.
fn op(i: usize) -> impl FnOnce(&mut Db) -> Result<(), DbError> + Send + 'static {
    move |db| {
        let seeds = SKUS.len() + COUPONS;
        if i < SKUS.len() {
            db.seed_stock(SKUS[i], 1000)?;
            return Ok(());
        }
        if i < seeds {
            db.seed_coupon(&format!("SD11-{}", i - SKUS.len()))?;
            return Ok(());
        }
        let (n, step) = ((i - seeds) / 5, (i - seeds) % 5);
        let o = new_order(n);
        match step {
            0 => drop(db.order_create(&o)?),
            1 => {
                let v = db.stock_get(&o.sku)?.unwrap().version;
                let t = db.stock_take(&o.order_id, &o.sku, 1, Some(v))?;
                assert!(matches!(t, Take::Taken(_)), "{t:?}");
            }
            2 if n % 5 == 4 => drop(db.stock_restore(&o.order_id)?),
            2 => match &o.coupon {
                Some(c) => drop(db.coupon_reserve(c, &o.order_id)?),
                None => drop(db.order_create(&o)?), // a replay: no change
            },
            3 if n % 5 == 4 => drop(db.order_set_state(&o.order_id, OrderState::Cancelled)?),
            3 => match &o.coupon {
                Some(c) => {
                    let r = db.coupon_consume(c, &o.order_id)?;
                    assert!(matches!(r, CouponOutcome::Applied(_)), "{r:?}");
                }
                None => drop(db.stock_take(&o.order_id, &o.sku, 1, None)?), // a replay
            },
            _ if n % 5 == 4 => drop(db.stock_restore(&o.order_id)?), // restore once: a replay
            _ => drop(db.order_set_state(&o.order_id, OrderState::Confirmed)?),
        }
        Ok(())
    }
}

/// Runs operations `range` on the primary; answers their replications.
async fn day(p: &Primary, range: std::ops::Range<usize>) -> Vec<Replicated> {
    let mut out = Vec::new();
    for i in range {
        out.push(p.write(op(i)).await.unwrap().replication);
    }
    out
}

type Dump = (Value, Value, Value, Value, Value);

fn dump(db: &Db) -> Result<Dump, DbError> {
    let j = |v| serde_json::to_value(v).unwrap();
    Ok((
        j(serde_json::to_value(db.stock_all()?).unwrap()),
        j(serde_json::to_value(db.stock_moves()?).unwrap()),
        j(serde_json::to_value(db.orders()?).unwrap()),
        j(serde_json::to_value(db.coupons()?).unwrap()),
        j(serde_json::to_value(db.changes_after(0, usize::MAX >> 1)?).unwrap()),
    ))
}

async fn assert_same_rows(p: &Primary, s: &Standby) {
    let (a, b) = (p.read(dump).unwrap(), s.read(dump).unwrap());
    assert_eq!(a.0, b.0, "stock");
    assert_eq!(a.1, b.1, "stock_moves");
    assert_eq!(a.2, b.2, "orders");
    assert_eq!(a.3, b.3, "coupons");
    assert_eq!(a.4, b.4, "changes");
}

async fn caught_up(p: &Primary, s: &Standby) {
    let head = p.read(|db| db.head()).unwrap();
    eventually("the standby to catch up", || async {
        s.applied() == head && p.acked() == head
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_standby_holds_the_same_rows_after_500_operations() {
    let dir = tempfile::tempdir().unwrap();
    let (p, addr) = primary(dir.path(), config(ReplicationMode::Async)).await;
    let s = standby(dir.path(), addr);
    let replicated = day(&p.it, 0..500).await;
    assert!(replicated
        .iter()
        .all(|r| matches!(r, Replicated::Async | Replicated::NoChange)));
    caught_up(&p.it, &s.it).await;
    assert_same_rows(&p.it, &s.it).await;
    let orders = p.it.read(|db| db.orders()).unwrap();
    assert_eq!(
        orders.len(),
        96,
        "the day's orders: (500 - 24 seeds) / 5 steps, rounded up"
    );
    let status = s.it.status();
    assert_eq!(status.lag_changes, 0, "{status:?}");
    assert!(status.connected);
    assert_eq!(status.duplicates_skipped, 0);
    let status = p.it.status();
    assert_eq!(status.standbys[0].name, "vm-db2", "{status:?}");
    assert_eq!(status.standbys[0].lag_changes, 0);
    s.stop().await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sync_write_returns_only_after_the_standby_applied_it() {
    let dir = tempfile::tempdir().unwrap();
    let (p, addr) = primary(dir.path(), config(ReplicationMode::Sync)).await;
    let s = standby(dir.path(), addr);
    eventually("the standby to connect", || async {
        s.it.status().connected
    })
    .await;
    // A second connection to the standby's file, as an outside observer.
    let observer = Db::open(&dir.path().join("standby.sqlite")).unwrap();
    for i in 0..120 {
        let w = p.it.write(op(i)).await.unwrap();
        let Some(seq) = w.seq else {
            assert_eq!(w.replication, Replicated::NoChange);
            continue;
        };
        assert!(
            matches!(w.replication, Replicated::Acked { .. }),
            "op {i}: {:?}",
            w.replication
        );
        // Already there when the write returned: applied and committed.
        assert!(s.it.applied() >= seq, "op {i}: seq {seq} not applied yet");
        assert!(observer.head().unwrap() >= seq, "op {i}: not in the file");
    }
    let status = p.it.status();
    assert_eq!(status.sync_timeouts, 0, "{status:?}");
    assert!(status.sync_acked > 50);
    assert_same_rows(&p.it, &s.it).await;
    s.stop().await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sync_write_without_a_standby_times_out_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = PrimaryConfig {
        sync_timeout_ms: 200,
        ..config(ReplicationMode::Sync)
    };
    let (p, _addr) = primary(dir.path(), config).await;
    let started = Instant::now();
    let w = p.it.write(|db| db.seed_stock("book", 50)).await.unwrap();
    let Replicated::TimedOut { waited_ms } = w.replication else {
        panic!("{:?}", w.replication)
    };
    assert!(waited_ms >= 200 && started.elapsed() >= Duration::from_millis(200));
    // Committed on the primary all the same.
    assert_eq!(w.seq, Some(1));
    assert_eq!(
        p.it.read(|db| db.stock_get("book")).unwrap().unwrap().stock,
        50
    );
    let status = p.it.status();
    assert_eq!(status.sync_timeouts, 1, "{status:?}");
    assert_eq!(status.lag_changes, 1);
    assert!(status.lag_ms >= 200, "{status:?}");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_async_standby_lags_then_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let (p, addr) = primary(dir.path(), config(ReplicationMode::Async)).await;
    day(&p.it, 0..500).await;
    let head = p.it.read(|db| db.head()).unwrap();
    let status = p.it.status();
    assert_eq!(status.seq, head, "{status:?}");
    assert_eq!(status.lag_changes, head, "nobody has anything yet");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let status = p.it.status();
    assert!(status.lag_ms >= 50, "{status:?}");
    let s = standby(dir.path(), addr);
    caught_up(&p.it, &s.it).await;
    let status = p.it.status();
    assert_eq!(status.lag_changes, 0, "{status:?}");
    assert_eq!(status.lag_ms, 0, "{status:?}");
    assert_eq!(s.it.status().applied_seq, head);
    assert_same_rows(&p.it, &s.it).await;
    s.stop().await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_standby_resumes_from_its_seq_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let (p, addr) = primary(dir.path(), config(ReplicationMode::Async)).await;
    let first = standby(dir.path(), addr);
    let writer = tokio::spawn({
        let p = p.it.clone();
        async move {
            for i in 0..500 {
                p.write(op(i)).await.unwrap();
                if i % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    });
    eventually("some changes applied", || async {
        first.it.applied() >= 100
    })
    .await;
    // Killed mid-stream: the task is dropped wherever it is.
    first.task.abort();
    let _ = first.task.await;
    let at_kill = first.it.applied();
    drop(first.it);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = standby(dir.path(), addr);
    assert!(
        second.it.applied() >= at_kill,
        "it resumes from its own file"
    );
    writer.await.unwrap();
    caught_up(&p.it, &second.it).await;
    assert_same_rows(&p.it, &second.it).await;
    let head = p.it.read(|db| db.head()).unwrap();
    assert!(
        at_kill < head,
        "killed before the end ({at_kill} of {head})"
    );
    let seqs: Vec<u64> = second
        .it
        .read(|db| db.changes_after(0, 100_000))
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect();
    assert_eq!(seqs, (1..=head).collect::<Vec<_>>(), "each change once");
    second.stop().await;
    p.stop().await;
}

/// Reads one frame (4-byte length + JSON) by hand.
async fn read_frame(s: &mut TcpStream) -> Value {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.unwrap();
    serde_json::from_slice(&body).unwrap()
}

async fn send_frame(s: &mut TcpStream, body: &[u8]) {
    s.write_all(&(body.len() as u32).to_be_bytes())
        .await
        .unwrap();
    s.write_all(body).await.unwrap();
}

/// The standby closed the connection: a read ends.
async fn closed(s: &mut TcpStream) {
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the connection stays open");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupt_or_out_of_order_input_closes_the_connection_and_the_standby_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    // A fake primary.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let s = standby(dir.path(), listener.local_addr().unwrap());

    let (mut c, _) = listener.accept().await.unwrap();
    let hello = read_frame(&mut c).await;
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["after"], 0);
    send_frame(&mut c, b"\x00garbage, not JSON").await;
    closed(&mut c).await;

    let (mut c, _) = listener.accept().await.unwrap();
    assert_eq!(read_frame(&mut c).await["type"], "hello");
    let gap = br#"{"type":"changes","head":5,"changes":[{"seq":5,"op":"seed_coupon","rows":[{"table":"coupon","code":"X","state":"free","order_id":null}],"at_ms":1}]}"#;
    send_frame(&mut c, gap).await;
    closed(&mut c).await;

    let (mut c, _) = listener.accept().await.unwrap();
    assert_eq!(read_frame(&mut c).await["type"], "hello");
    c.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    closed(&mut c).await;

    let (mut c, _) = listener.accept().await.unwrap();
    assert_eq!(read_frame(&mut c).await["type"], "hello");
    let good = br#"{"type":"changes","head":1,"changes":[{"seq":1,"op":"seed_coupon","rows":[{"table":"coupon","code":"X","state":"free","order_id":null}],"at_ms":1}]}"#;
    send_frame(&mut c, good).await;
    assert_eq!(
        read_frame(&mut c).await,
        serde_json::json!({"type":"ack","seq":1})
    );

    let status = s.it.status();
    assert_eq!(status.disconnects["bad_message"], 1, "{status:?}");
    assert_eq!(status.disconnects["out_of_order"], 1, "{status:?}");
    assert_eq!(status.disconnects["too_long"], 1, "{status:?}");
    assert_eq!(status.connects, 4);
    assert_eq!(s.it.applied(), 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_primary_closes_a_corrupt_connection_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (p, addr) = primary(dir.path(), config(ReplicationMode::Async)).await;
    let mut raw = TcpStream::connect(addr).await.unwrap();
    send_frame(&mut raw, b"{\"type\":\"hello\"").await;
    closed(&mut raw).await;
    let mut raw = TcpStream::connect(addr).await.unwrap();
    send_frame(&mut raw, br#"{"type":"hello","standby":"x","after":99}"#).await;
    closed(&mut raw).await;
    // Counted as the session ends, just after the socket closes.
    eventually("both closes counted", || async {
        // Not there until counted: `get`, not an index that panics.
        let d = &p.it.status().disconnects;
        d.get("bad_message") == Some(&1) && d.get("ahead_of_primary") == Some(&1)
    })
    .await;

    let s = standby(dir.path(), addr);
    day(&p.it, 0..60).await;
    caught_up(&p.it, &s.it).await;
    assert_same_rows(&p.it, &s.it).await;
    s.stop().await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sync_writers_are_each_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (p, addr) = primary(dir.path(), config(ReplicationMode::Sync)).await;
    let s = standby(dir.path(), addr);
    eventually("the standby to connect", || async {
        s.it.status().connected
    })
    .await;
    p.it.write(|db| db.seed_stock("book", 1000)).await.unwrap();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let p = p.it.clone();
            tokio::spawn(async move {
                for i in 0..30 {
                    let order = format!("ord-{w}-{i}");
                    let t = p
                        .write(move |db| db.stock_take(&order, "book", 1, None))
                        .await
                        .unwrap();
                    assert!(matches!(t.value, Take::Taken(_)));
                    assert!(
                        matches!(t.replication, Replicated::Acked { .. }),
                        "{:?}",
                        t.replication
                    );
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(p.it.status().sync_acked, 241);
    assert_same_rows(&p.it, &s.it).await;
    s.stop().await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_primary_is_dropped_after_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = StandbyConfig {
        backoff_min_ms: 20,
        idle_timeout_ms: 300,
        ..StandbyConfig::new(listener.local_addr().unwrap())
    };
    let s = Standby::open("vm-db2", &dir.path().join("standby.sqlite"), config).unwrap();
    let task = tokio::spawn(s.clone().run(std::future::pending()));
    let (mut c, _) = listener.accept().await.unwrap();
    assert_eq!(read_frame(&mut c).await["type"], "hello");
    let started = Instant::now();
    closed(&mut c).await;
    assert!(started.elapsed() >= Duration::from_millis(250));
    let (mut c, _) = listener.accept().await.unwrap();
    assert_eq!(read_frame(&mut c).await["type"], "hello");
    assert_eq!(s.status().disconnects["idle"], 1);
    task.abort();
}
