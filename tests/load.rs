//! End-to-end test of `d11 load` in netns/double11.toml: simulated phones
//! behind the eNodeB, each attaching with its own IMSI of the hss's range
//! and taking the address the pgw gives, its own smoltcp stack and rustls
//! client, placing the
//! story's order through both tunnels, the pgw's NAT, the carriers, the
//! vgw, the l4lb and the controllers to the shop. Root only.

mod support;

use serde_json::Value;
use std::collections::BTreeSet;
use support::*;

/// Confirmed orders in the lab's store, read by Python's sqlite3 (not our code).
fn confirmed_orders(lab: &Lab) -> u64 {
    sql_count(lab, "select count(*) from orders where state = 'confirmed'")
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn twenty_simulated_phones_each_place_two_orders_from_their_own_address() {
    let _s = serial();
    require_root();
    let lab = Lab::up("double11.toml", "load");
    let before = confirmed_orders(&lab);
    let o = d11(&[
        "load", "--name", &lab.name, "--phones", "20", "--orders", "2", "--json",
    ]);
    assert!(o.status.success(), "d11 load failed:\n{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("load --json is JSON");
    let r = &v["report"];
    assert_eq!(r["orders"], 40, "{r}");
    assert_eq!(r["by_outcome"]["201 created"], 40, "{r}");
    assert_eq!(r["failed"], 0, "{r}");
    // Each accepted order is one confirmed row.
    assert_eq!(confirmed_orders(&lab) - before, 40);
    // 20 phones, 20 addresses of the pgw's pool (the phone has 10.45.0.2;
    // the pool is handed out in order: 10.45.0.3 on), 40 keys.
    let orders = v["orders"].as_array().expect("orders");
    let ues: BTreeSet<&str> = orders.iter().filter_map(|o| o["ue"].as_str()).collect();
    let keys: BTreeSet<&str> = orders
        .iter()
        .filter_map(|o| o["idempotency_key"].as_str())
        .collect();
    assert_eq!(ues.len(), 20, "{ues:?}");
    assert!(
        ues.contains("10.45.0.3") && ues.contains("10.45.0.22"),
        "{ues:?}"
    );
    assert_eq!(keys.len(), 40);
    // Each phone's address has its own NAT entries at the pgw.
    let nat = d11(&["show", "--name", &lab.name, "pgw", "nat", "--json"]);
    let nat: Value = serde_json::from_slice(&nat.stdout).expect("nat --json is JSON");
    let srcs: BTreeSet<String> = nat
        .as_array()
        .expect("NAT rows")
        .iter()
        .filter_map(|e| e["src"].as_str())
        .filter_map(|s| s.split(':').next())
        .map(str::to_string)
        .collect();
    for ue in &ues {
        assert!(srcs.contains(*ue), "{ue} has no NAT entry: {srcs:?}");
    }
    assert_eq!(v["nat_phones"], 20, "{v}");
}

/// Every order's (idempotency key, state) in the lab's store, by Python's sqlite3.
fn order_states(lab: &Lab) -> Vec<(String, String)> {
    let db = format!("/run/d11/{}/db/vm-db.sqlite", lab.name);
    let py = format!(
        "import sqlite3; c=sqlite3.connect('file:{db}?mode=ro', uri=True)\n\
         for k, s in c.execute('select idempotency_key, state from orders'): print(k, s)"
    );
    let o = std::process::Command::new("/usr/bin/python3")
        .args(["-c", &py])
        .output()
        .expect("python3 runs");
    assert!(o.status.success(), "sqlite3: {}", text(&o));
    text(&o)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, s)| (k.to_string(), s.trim().to_string()))
        .collect()
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn the_sgw_killed_under_load_comes_back_and_no_order_is_doubled() {
    let _s = serial();
    require_root();
    let lab = Lab::up("double11.toml", "sgwkill");
    let pid = node(&lab.status(), "sgw")["pid"]
        .as_u64()
        .expect("sgw's pid");
    let name = lab.name.clone();
    let load = std::thread::spawn(move || {
        let args = [
            "load", "--name", &name, "--phones", "50", "--orders", "16", "--json",
        ];
        (d11(&args), std::time::Instant::now())
    });
    // The kill lands mid-run: once 50 of the 800 orders are in the store
    // (a fixed sleep outlasted the whole run once the hot item got fast).
    while sql_count(&lab, "select count(*) from orders") < 50 {
        assert!(!load.is_finished(), "the load ended before 50 orders");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let k = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .output()
        .unwrap();
    let killed = std::time::Instant::now();
    assert!(k.status.success(), "kill: {}", text(&k));
    let (o, ended) = load.join().unwrap();
    assert!(killed < ended, "the load was over before the kill");
    let v: Value = serde_json::from_slice(&o.stdout).expect("load --json is JSON");
    let orders = v["orders"].as_array().expect("orders");
    assert_eq!(orders.len(), 800, "{}", text(&o));

    // The supervisor restarted the sgw, with no session: the phones'
    // next G-PDUs met Error Indications, the enb asked the mme to release
    // them and the mme detached them with "re-attach required"; they
    // attached again (the phone too, or its new order would not go through).
    let st = lab.status();
    assert!(node(&st, "sgw")["restarts"].as_u64() >= Some(1), "{st:#}");
    let mme = d11(&["show", "--name", &lab.name, "mme", "--json"]);
    let mme: Value = serde_json::from_slice(&mme.stdout).expect("show mme --json is JSON");
    let detached = mme["counters"]["network_detaches"].as_u64().unwrap_or(0);
    assert!(detached >= 1, "{:#}", mme["counters"]);
    assert!(
        v["report"]["attach"]["reattaches"].as_u64() >= Some(1),
        "{}",
        v["report"]
    );
    // The phone's own bearer died with the sgw too: its first packets
    // (the app's HTTPDNS lookup) bring the Error Indication and its
    // re-attach, so the app may have to try again, as a real one would.
    let mut after = d11(&["order", "--name", &lab.name, "--json"]);
    for _ in 0..2 {
        if after.status.success() {
            break;
        }
        eprintln!(
            "the order after the restart failed; again:\n{}",
            text(&after)
        );
        after = d11(&["order", "--name", &lab.name, "--json"]);
    }
    assert!(after.status.success(), "{}", text(&after));

    // Each accepted reply is exactly one confirmed row; nothing half done
    // or doubled: no pending row, each key at most once (UNIQUE), and the
    // stock taken once per confirmed order.
    let rows = order_states(&lab);
    let confirmed: BTreeSet<&str> = rows
        .iter()
        .filter(|(_, s)| s == "confirmed")
        .map(|(k, _)| k.as_str())
        .collect();
    assert!(rows.iter().all(|(_, s)| s != "pending"), "{rows:?}");
    let mut ok = 0;
    for o in orders {
        let key = o["idempotency_key"].as_str().unwrap();
        if o["status"] == 201 {
            ok += 1;
            assert!(confirmed.contains(key), "201 without its row: {o}");
        }
    }
    // Beside the accepted ones: the order placed after the kill, and any
    // whose reply was lost with the sgw.
    assert!(
        confirmed.len() > ok,
        "{} rows, {ok} accepted",
        confirmed.len()
    );
    let stock = sql_count(&lab, "select 1000 - stock from stock");
    let taken = sql_count(
        &lab,
        "select count(*) from stock_moves where state = 'taken'",
    );
    assert_eq!(
        (stock, taken),
        (confirmed.len() as u64, confirmed.len() as u64)
    );
    eprintln!(
        "sgw killed under load: {ok} of {} orders accepted, {} rows confirmed, retransmissions {}",
        orders.len(),
        confirmed.len(),
        v["report"]["retransmissions"]
    );
}

/// One number from the lab's store.
fn sql_count(lab: &Lab, query: &str) -> u64 {
    let db = format!("/run/d11/{}/db/vm-db.sqlite", lab.name);
    let py = format!(
        "import sqlite3,sys; c=sqlite3.connect('file:{db}?mode=ro', uri=True); \
         print(c.execute(sys.argv[1]).fetchone()[0])"
    );
    let o = std::process::Command::new("/usr/bin/python3")
        .args(["-c", &py, query])
        .output()
        .expect("python3 runs");
    assert!(o.status.success(), "sqlite3: {}", text(&o));
    text(&o).trim().parse().expect("a number")
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn a_thousand_orders_from_a_hundred_phones_through_a_lossy_radio_and_s5_are_each_recorded_once() {
    let _s = serial();
    require_root();
    let lab = Lab::up("double11.toml", "lossy");
    for (wire, spec) in [("ue:eth0", "loss=5%"), ("sgw:s5", "loss=1%")] {
        let o = d11(&["impair", "--name", &lab.name, wire, spec]);
        assert!(o.status.success(), "d11 impair {wire} {spec}: {}", text(&o));
    }
    let o = d11(&[
        "load", "--name", &lab.name, "--phones", "100", "--orders", "10", "--json",
    ]);
    let v: Value = serde_json::from_slice(&o.stdout).expect("load --json is JSON");
    let orders = v["orders"].as_array().expect("orders");
    assert_eq!(orders.len(), 1000, "{}", text(&o));
    let retransmissions = v["report"]["retransmissions"].as_u64().unwrap_or(0);
    assert!(
        retransmissions > 0,
        "5% loss and no retransmission: {}",
        v["report"]
    );

    // Each accepted order is recorded exactly once (a key is UNIQUE in the
    // store), with its stock taken once; an order the phone saw fail is
    // cancelled, or confirmed only if its reply was what got lost.
    let rows = order_states(&lab);
    assert!(rows.iter().all(|(_, s)| s != "pending"), "{rows:?}");
    let confirmed: BTreeSet<&str> = rows
        .iter()
        .filter(|(_, s)| s == "confirmed")
        .map(|(k, _)| k.as_str())
        .collect();
    let (mut ok, mut reply_lost) = (0, 0);
    for o in orders {
        let key = o["idempotency_key"].as_str().unwrap();
        match (o["status"] == 201, confirmed.contains(key)) {
            (true, true) => ok += 1,
            (true, false) => panic!("201 without its row: {o}"),
            (false, true) => {
                reply_lost += 1;
                assert!(
                    matches!(o["outcome"].as_str(), Some("Timeout" | "ConnectionLost")),
                    "a failed order confirmed: {o}"
                );
            }
            (false, false) => {}
        }
    }
    assert_eq!(confirmed.len(), ok + reply_lost);
    let stock = sql_count(&lab, "select 1000 - stock from stock");
    let taken = sql_count(
        &lab,
        "select count(*) from stock_moves where state = 'taken'",
    );
    assert_eq!(
        (stock, taken),
        (confirmed.len() as u64, confirmed.len() as u64)
    );
    assert!(ok >= 900, "{ok} of 1000 accepted: {}", v["report"]);
    eprintln!(
        "5%/1% loss: {ok} of 1000 accepted, {reply_lost} confirmed with the reply lost, {retransmissions} retransmissions"
    );
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn ten_thousand_simulated_phones_attach_at_once_with_bounded_memory() {
    let _s = serial();
    require_root();
    let lab = Lab::up("double11.toml", "attach");
    let o = d11(&[
        "load",
        "--name",
        &lab.name,
        "--phones",
        "10000",
        "--attach-only",
        "--json",
    ]);
    assert!(o.status.success(), "d11 load --attach-only: {}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("load --json is JSON");
    // Every phone's bearer carried a connection: the pgw holds a NAT entry
    // for each of the 10,000 addresses.
    assert_eq!(v["nat_phones"], 10000, "{}", v["report"]);
    // Bounded memory: each mobile element stays small (about 310 B per NAT
    // entry at the pgw, 154 B per bearer).
    for el in ["enb", "sgw", "pgw"] {
        let kb = v["rss_after"][el]["rss_kb"].as_u64().expect("rss_kb");
        assert!(kb < 64 * 1024, "{el}: {kb} kB after 10,000 phones");
        eprintln!(
            "{el}: RSS {} kB before, {kb} kB after 10,000 phones",
            v["rss_before"][el]["rss_kb"]
        );
    }
}

/// netns/double11.toml with the story's book seeded at `stock`, as a
/// scratch topology file.
fn with_stock(scratch: &Scratch, stock: u64) -> std::path::PathBuf {
    let topo = std::fs::read_to_string(topology("double11.toml")).unwrap();
    let seeded = topo.replace("stock = 1000 }", &format!("stock = {stock} }}"));
    assert_ne!(topo, seeded, "the seed line moved");
    let file = scratch.path("surge.toml");
    std::fs::write(&file, seeded).unwrap();
    file
}

/// `d11 load --json` with `args`, parsed.
fn load_json(lab: &Lab, args: &[&str]) -> Value {
    let mut all = vec!["load", "--name", &lab.name, "--json"];
    all.extend_from_slice(args);
    let o = d11(&all);
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("load --json is JSON ({e}):\n{}", text(&o)))
}

/// Checks the store against what the phones heard: each 201 is exactly
/// one confirmed row (its key is UNIQUE), each 409 a cancelled one, no
/// order is left pending, and the stock is `seeded` minus one per
/// confirmed order, each its own move. Answers (confirmed, cancelled).
fn every_answer_is_in_the_store(lab: &Lab, orders: &[Value], seeded: u64) -> (usize, usize) {
    let rows = order_states(lab);
    let state: std::collections::BTreeMap<&str, &str> =
        rows.iter().map(|(k, s)| (k.as_str(), s.as_str())).collect();
    assert_eq!(state.len(), rows.len(), "a key twice in the store");
    assert!(
        rows.iter().all(|(_, s)| s != "pending"),
        "an order left pending"
    );
    for o in orders {
        let key = o["idempotency_key"].as_str().unwrap();
        match (o["status"].as_u64(), state.get(key).copied()) {
            (Some(201), Some("confirmed")) => {}
            (Some(409), Some("cancelled")) => {}
            (Some(s @ (201 | 409)), row) => panic!("{s} but the store has {row:?}: {o}"),
            // No answer heard (the reply was what got lost, or the
            // connection): the store decided it anyway, cleanly.
            (_, Some("confirmed" | "cancelled") | None) => {}
            (_, row) => panic!("{o}: {row:?}"),
        }
    }
    let count = |s: &str| rows.iter().filter(|(_, x)| x == s).count();
    let confirmed = count("confirmed");
    let taken = sql_count(
        lab,
        "select count(*) from stock_moves where state = 'taken'",
    );
    let left = sql_count(lab, "select stock from stock");
    assert_eq!((taken, left), (confirmed as u64, seeded - confirmed as u64));
    (confirmed, count("cancelled"))
}

fn outcome_count(report: &Value, label: &str) -> u64 {
    report["by_outcome"][label].as_u64().unwrap_or(0)
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn a_thousand_phones_buy_the_hot_item_at_once_and_each_order_is_confirmed_once() {
    let _s = serial();
    require_root();
    // A fresh lab: the seed's 1,000 books, 1,000 buyers at midnight.
    let lab = Lab::up("double11.toml", "hot1k");
    let v = load_json(&lab, &["--phones", "1000", "--orders", "1"]);
    let r = &v["report"];
    assert_eq!(outcome_count(r, "201 created"), 1000, "{r}");
    assert_eq!(r["failed"], 0, "no 5xx, no timeout: {r}");
    let orders = v["orders"].as_array().expect("orders");
    let (confirmed, cancelled) = every_answer_is_in_the_store(&lab, orders, 1000);
    assert_eq!((confirmed, cancelled), (1000, 0));
    // The stock service decided them in a few compare-and-sets, not 1,000s.
    let cas: u64 = ["vm-stock", "vm-stock2"]
        .iter()
        .map(|n| {
            show_json(&lab, n)["coalescing"]["cas_attempts"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert!(cas < 200, "{cas} compare-and-sets for 1,000 orders");
    eprintln!(
        "1,000 phones: {:.0} orders/s, p50 {} ms, p99 {} ms, {cas} compare-and-sets, {} retransmissions",
        r["orders_per_s"].as_f64().unwrap_or(0.0),
        r["latency_ms"]["p50"],
        r["latency_ms"]["p99"],
        r["retransmissions"]
    );
}

/// `d11 show NODE --json`.
fn show_json(lab: &Lab, node: &str) -> Value {
    let o = d11(&["show", "--name", &lab.name, node, "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).expect("show --json is JSON")
}

/// 10,000 phones on 5,000 books, with `impair` on the radio if any.
fn surge(tag: &str, impair: Option<&str>) -> (Lab, Value) {
    let scratch = Scratch::new(tag);
    let lab = Lab::up(with_stock(&scratch, 5000).to_str().unwrap(), tag);
    if let Some(spec) = impair {
        let o = d11(&["impair", "--name", &lab.name, "ue:eth0", spec]);
        assert!(o.status.success(), "d11 impair: {}", text(&o));
    }
    let v = load_json(
        &lab,
        &[
            "--phones",
            "10000",
            "--orders",
            "1",
            "--timeout-ms",
            "120000",
        ],
    );
    assert_eq!(
        v["orders"].as_array().map(Vec::len),
        Some(10_000),
        "{}",
        v["report"]
    );
    (lab, v)
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn ten_thousand_phones_at_once_buy_five_thousand_books_and_the_rest_hear_sold_out() {
    let _s = serial();
    require_root();
    let (lab, v) = surge("surge", None);
    let r = &v["report"];
    assert_eq!(
        (
            outcome_count(r, "201 created"),
            outcome_count(r, "409 sold out")
        ),
        (5000, 5000),
        "{r}"
    );
    let orders = v["orders"].as_array().unwrap();
    assert_eq!(
        every_answer_is_in_the_store(&lab, orders, 5000),
        (5000, 5000)
    );
    eprintln!(
        "10,000 phones on 5,000 books: {:.1} s, p50 {} ms, p99 {} ms, {} retransmissions",
        r["seconds"].as_f64().unwrap_or(0.0),
        r["latency_ms"]["p50"],
        r["latency_ms"]["p99"],
        r["retransmissions"]
    );
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn ten_thousand_phones_through_a_lossy_radio_each_201_is_confirmed_once_and_each_failure_is_clean()
{
    let _s = serial();
    require_root();
    let (lab, v) = surge("surgeloss", Some("loss=5%"));
    let r = &v["report"];
    assert_eq!(outcome_count(r, "5xx"), 0, "{r}");
    assert!(
        r["retransmissions"].as_u64() > Some(0),
        "5% loss and no retransmission: {r}"
    );
    let orders = v["orders"].as_array().unwrap();
    let (confirmed, cancelled) = every_answer_is_in_the_store(&lab, orders, 5000);
    // Sold out before the end: every book went to one order.
    assert_eq!(confirmed, 5000, "{r}");
    assert!(cancelled >= outcome_count(r, "409 sold out") as usize);
    eprintln!(
        "10,000 phones, 5% loss on the radio: {} x 201, {} x 409, {} other; {:.1} s, p99 {} ms, {} retransmissions",
        outcome_count(r, "201 created"),
        outcome_count(r, "409 sold out"),
        r["failed"].as_u64().unwrap_or(0) - outcome_count(r, "409 sold out"),
        r["seconds"].as_f64().unwrap_or(0.0),
        r["latency_ms"]["p99"],
        r["retransmissions"]
    );
}
