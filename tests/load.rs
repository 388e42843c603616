//! End-to-end test of `d11 load` in netns/double11.toml: simulated phones
//! behind the eNodeB, each with its own UE address from the enb/sgw/pgw
//! bearer range, its own smoltcp stack and rustls client, placing the
//! story's order through both tunnels, the pgw's NAT, the carriers, the
//! vgw, the l4lb and the controllers to the shop. Root only.

mod support;

use serde_json::Value;
use std::collections::BTreeSet;
use support::*;

/// Confirmed orders in the lab's store, read by Python's sqlite3 (not our code).
fn confirmed_orders(lab: &Lab) -> u64 {
    let db = format!("/run/d11/{}/db/vm-db.sqlite", lab.name);
    let py = format!(
        "import sqlite3; c=sqlite3.connect('file:{db}?mode=ro', uri=True); \
         print(c.execute(\"select count(*) from orders where state='confirmed'\").fetchone()[0])"
    );
    let o = std::process::Command::new("/usr/bin/python3")
        .args(["-c", &py])
        .output()
        .expect("python3 runs");
    assert!(o.status.success(), "sqlite3: {}", text(&o));
    text(&o).trim().parse().expect("a count")
}

#[test]
fn twenty_simulated_phones_each_place_two_orders_from_their_own_address() {
    let _s = serial();
    if !root_or_skip("twenty_simulated_phones_each_place_two_orders_from_their_own_address") {
        return;
    }
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
    // 20 phones, 20 addresses from the range (10.45.0.3 on), 40 keys.
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
