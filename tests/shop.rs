//! End-to-end tests of the shop behind the controllers (issue 6, chapter
//! 10) in netns/double11.toml, in real namespaces: the controller calls the
//! order service by RPC, which calls db, stock and coupon across VXLAN; the
//! db's standby in AZ2 follows the primary synchronously. Rows are read
//! from the VMs' SQLite files with Python's sqlite3 (not our code). Root only.

mod support;

use serde_json::Value;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};
use support::*;

const SKU: &str = "趣谈网络协议";
const BODY: &str =
    r#"{"order":{"date":"2018-07-01","className":"趣谈网络协议","Author":"刘超","price":"68"}}"#;

/// `d11 order --json` with `extra` arguments; the outcome as JSON.
fn order(lab: &Lab, extra: &[&str]) -> (Output, Value) {
    let mut args = vec!["order", "--name", &lab.name, "--json"];
    args.extend_from_slice(extra);
    let o = d11(&args);
    let v = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    (o, v)
}

/// Rows of `query` on `node`'s database file, `|`-separated, one per line.
fn sql(lab: &Lab, node: &str, query: &str) -> String {
    let db = format!("/run/d11/{}/db/{node}.sqlite", lab.name);
    let py = format!(
        "import sqlite3,sys; c=sqlite3.connect('file:{db}?mode=ro', uri=True)\n\
         for r in c.execute(sys.argv[1]): print('|'.join('' if v is None else str(v) for v in r))"
    );
    let o = std::process::Command::new("/usr/bin/python3")
        .args(["-c", &py, query])
        .output()
        .expect("python3 runs");
    assert!(o.status.success(), "sqlite3 {query}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Waits until the standby's log reaches the primary's, then compares the tables.
fn standby_holds_the_same_rows(lab: &Lab) {
    let head = |n| sql(lab, n, "select coalesce(max(seq), 0) from changes");
    let deadline = Instant::now() + Duration::from_secs(10);
    while head("vm-db2") != head("vm-db") {
        assert!(Instant::now() < deadline, "the standby did not catch up");
        std::thread::sleep(Duration::from_millis(100));
    }
    for q in [
        "select * from orders order by order_id",
        "select * from stock order by sku",
        "select * from stock_moves order by order_id",
        "select * from coupons order by code",
    ] {
        assert_eq!(sql(lab, "vm-db", q), sql(lab, "vm-db2", q), "{q}");
    }
}

/// No order left half done: none pending, and the 1000 seeded units less
/// one per confirmed order, each taken once.
fn stock_follows_the_confirmed_orders(lab: &Lab, confirmed: usize) {
    let q = |query| sql(lab, "vm-db", query);
    assert_eq!(
        q("select count(*) from orders where state = 'pending'"),
        "0"
    );
    assert_eq!(q("select stock from stock"), (1000 - confirmed).to_string());
    assert_eq!(
        q("select count(*) from stock_moves where state = 'taken'"),
        confirmed.to_string()
    );
}

fn show(lab: &Lab, node: &str, table: &str) -> Value {
    let o = d11(&["show", "--name", &lab.name, "--json", node, table]);
    assert!(o.status.success(), "d11 show {node} {table}: {}", text(&o));
    serde_json::from_slice(&o.stdout).expect("JSON")
}

/// `n` orders from the phone with curl, `parallel` at a time, keys
/// `PREFIX-i`; the HTTP status of each, in key order.
fn curl_orders(lab: &Lab, prefix: &str, n: usize, parallel: usize) -> Vec<u16> {
    let root = PathBuf::from("/run/d11")
        .join(&lab.name)
        .join("pki/root.pem");
    let script = format!(
        "seq 1 {n} | xargs -P {parallel} -I{{}} sh -c 'echo {{}} $(curl -sS -m 30 -o /dev/null -w %{{http_code}} \
         --cacert {root} -H \"Content-Type: application/json\" -H \"Idempotency-Key: {prefix}-{{}}\" \
         -d '\"'\"'{BODY}'\"'\"' https://www.geektime.com/purchaseOrder)'",
        root = root.display()
    );
    let out = lab.sh("ue", &["sh", "-c", &script]);
    let mut codes: Vec<(usize, u16)> = out
        .lines()
        .filter_map(|l| {
            let (i, c) = l.split_once(' ')?;
            Some((i.parse().ok()?, c.trim().parse().unwrap_or(0)))
        })
        .collect();
    codes.sort();
    assert_eq!(codes.len(), n, "{out}");
    codes.into_iter().map(|(_, c)| c).collect()
}

fn count(codes: &[u16], code: u16) -> usize {
    codes.iter().filter(|&&c| c == code).count()
}

/// Python: one Dubbo frame to `addr` from `node`, the reply's status byte
/// (or "closed"). `frame` is a Python bytes expression.
fn raw_rpc(lab: &Lab, node: &str, addr: &str, frame: &str) -> String {
    let (host, port) = addr.split_once(':').unwrap();
    let py = format!(
        "import socket\n\
         s=socket.create_connection(('{host}',{port}),timeout=5)\n\
         s.sendall({frame})\n\
         h=b''\n\
         while len(h)<16:\n\
         \x20   b=s.recv(16-len(h))\n\
         \x20   if not b: break\n\
         \x20   h+=b\n\
         print('closed' if len(h)<16 else h[3])"
    );
    lab.sh(node, &["/usr/bin/python3", "-c", &py])
        .trim()
        .to_string()
}

/// A request header (two-way, Hessian2, id 7) for a body of `len` bytes.
fn header(len: u32) -> String {
    format!("bytes.fromhex('dabbc2000000000000000007{len:08x}')")
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn one_order_crosses_the_services_by_rpc_and_lands_once_on_both_databases() {
    let _s = serial();
    require_root();
    let lab = Lab::up("double11.toml", "shop");

    // The registry lists every service; stock twice (one per AZ).
    let reg = show(&lab, "vm-reg", "services");
    let addrs = |s: &str| -> Vec<String> {
        reg[s]["providers"]
            .as_array()
            .map(|p| {
                p.iter()
                    .map(|p| p["addr"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(addrs("order"), ["192.168.1.40:20880"], "{reg:#}");
    assert_eq!(
        addrs("stock"),
        ["192.168.1.50:20880", "192.168.2.50:20880"],
        "{reg:#}"
    );
    assert_eq!(addrs("coupon"), ["192.168.2.70:20880"], "{reg:#}");
    assert_eq!(addrs("db"), ["192.168.1.60:20880"], "{reg:#}");

    // One order with a coupon: the RPC path, one row, stock −1 with the
    // version bumped, the coupon consumed, the commit acknowledged by the
    // standby (sync).
    let (o, v) = order(&lab, &["--coupon", "D11-0001", "--key", "shop-key-1"]);
    assert!(o.status.success(), "d11 order: {}", text(&o));
    assert_eq!(v["status"], 201, "{v:#}");
    let id = v["body"]["order_id"]
        .as_str()
        .expect("order id")
        .to_string();
    let path = v["body"]["rpc"]["path"].as_array().expect("rpc path");
    let calls: Vec<&str> = path.iter().map(|h| h["call"].as_str().unwrap()).collect();
    assert_eq!(
        calls,
        [
            "db.order_create",
            "stock.deduct",
            "coupon.reserve",
            "coupon.consume",
            "db.order_set_state"
        ],
        "{v:#}"
    );
    assert!(
        path[1]["provider"].as_str().unwrap().ends_with(".50:20880"),
        "{v:#}"
    );
    assert!(path[1]["cas_attempts"].as_i64() >= Some(1), "{v:#}");
    let commit = v["body"]["rpc"]["commit"]["replication"]
        .as_str()
        .unwrap_or("");
    assert!(commit.starts_with("sync: acked"), "{v:#}");
    assert_eq!(
        sql(
            &lab,
            "vm-db",
            &format!("select state, sku, coupon from orders where order_id = '{id}'")
        ),
        format!("confirmed|{SKU}|D11-0001")
    );
    assert_eq!(
        sql(&lab, "vm-db", "select stock, version from stock"),
        "999|1"
    );
    assert_eq!(
        sql(
            &lab,
            "vm-db",
            "select state, order_id from coupons where code = 'D11-0001'"
        ),
        format!("consumed|{id}")
    );
    standby_holds_the_same_rows(&lab);

    // The same key three more times: the same order, still one row, stock untouched.
    for _ in 0..3 {
        let (_, again) = order(&lab, &["--coupon", "D11-0001", "--key", "shop-key-1"]);
        assert_eq!(again["status"], 201, "{again:#}");
        assert_eq!(again["body"]["order_id"], id.as_str());
    }
    assert_eq!(
        sql(
            &lab,
            "vm-db",
            "select count(*) from orders where idempotency_key = 'shop-key-1'"
        ),
        "1"
    );
    assert_eq!(
        sql(&lab, "vm-db", "select stock, version from stock"),
        "999|1"
    );

    // The same coupon on a new order: refused, the order cancelled, its stock back.
    let (o, v) = order(&lab, &["--coupon", "D11-0001"]);
    assert!(!o.status.success(), "{v:#}");
    assert_eq!(v["status"], 409, "{v:#}");
    assert_eq!(sql(&lab, "vm-db", "select stock from stock"), "999");

    // The views.
    let repl = show(&lab, "vm-db", "replication");
    assert_eq!(repl["mode"], "sync", "{repl:#}");
    assert_eq!(repl["standbys"][0]["name"], "vm-db2", "{repl:#}");
    assert_eq!(show(&lab, "vm-db2", "replication")["connected"], true);
    assert_eq!(show(&lab, "vm-db", "stock")[0]["stock"], 999);
    assert_eq!(show(&lab, "vm-db2", "orders")["confirmed"], 1);

    // tshark: the RPC frames ride VXLAN between the hosts (on the tor's
    // wires), the Dubbo magic first in the TCP payload; nothing malformed.
    let scratch = Scratch::new("shop-rpc");
    let cap = scratch.path("rpc.pcapng");
    let o = lab.capture(&cap, "ue", &["sh", "-c", &format!(
        "curl -sS -o /dev/null --cacert /run/d11/{}/pki/root.pem -H 'Content-Type: application/json' -d '{BODY}' https://www.geektime.com/purchaseOrder",
        lab.name
    )]);
    assert!(o.status.success(), "{}", text(&o));
    let rpc = tshark_fields(
        &cap,
        "vxlan && tcp.payload[0:2] == da:bb",
        &["frame.interface_name", "ip.src", "ip.dst", "vxlan.vni"],
    );
    assert!(!rpc.is_empty(), "no RPC frame inside VXLAN");
    assert!(
        rpc.iter().any(|r| {
            let inner = |f: &str| f.split(',').nth(1).unwrap_or("").to_string();
            matches!(inner(&r[1]).as_str(), "192.168.1.20" | "192.168.2.20")
                && inner(&r[2]) == "192.168.1.40"
                && r[0] == "hosta:underlay"
        }),
        "controller (hostb) → order (hosta) inside VXLAN: {rpc:?}"
    );
    let bad = bad_frames(&cap);
    assert!(bad.is_empty(), "malformed frames: {bad:?}");
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn fifty_in_stock_two_hundred_phones_fifty_orders() {
    let _s = serial();
    require_root();
    let scratch = Scratch::new("oversell");
    let topo = std::fs::read_to_string(topology("double11.toml")).unwrap();
    let fifty = topo.replace("stock = 1000 }", "stock = 50 }");
    assert_ne!(topo, fifty, "the seed line moved");
    let file = scratch.path("oversell.toml");
    std::fs::write(&file, fifty).unwrap();
    let lab = Lab::up(file.to_str().unwrap(), "oversell");

    let codes = curl_orders(&lab, "over", 200, 200);
    assert_eq!(
        (count(&codes, 201), count(&codes, 409)),
        (50, 150),
        "{codes:?}"
    );
    assert_eq!(
        sql(&lab, "vm-db", "select stock, version from stock"),
        "0|50"
    );
    assert_eq!(
        sql(
            &lab,
            "vm-db",
            "select count(*) from orders where state = 'confirmed'"
        ),
        "50"
    );
    assert_eq!(
        sql(&lab, "vm-db", "select count(*) from orders"),
        "200",
        "one row per order"
    );
    assert_eq!(
        sql(
            &lab,
            "vm-db",
            "select count(*) from stock_moves where state = 'taken'"
        ),
        "50"
    );
    // One more: a clear "sold out".
    let (_, v) = order(&lab, &[]);
    assert_eq!(v["status"], 409, "{v:#}");
    assert!(v.to_string().contains("sold out"), "{v:#}");
    standby_holds_the_same_rows(&lab);
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn stock_providers_killed_during_orders_lose_and_double_nothing() {
    let _s = serial();
    require_root();
    let lab = Lab::up("double11.toml", "failover");
    let pid = node(&lab.status(), "vm-stock")["pid"]
        .as_u64()
        .expect("vm-stock's pid");
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        let o = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .output()
            .unwrap();
        assert!(o.status.success(), "kill: {}", text(&o));
    });
    let codes = curl_orders(&lab, "fo", 500, 8);
    killer.join().unwrap();
    let ok = count(&codes, 201);
    assert_eq!(
        ok + count(&codes, 503) + count(&codes, 504),
        500,
        "{codes:?}"
    );
    assert!(
        ok >= 495,
        "failover should carry nearly every order: {ok} of 500"
    );
    // No lost and no doubled order: each accepted reply is one confirmed
    // row, each failed one a cancelled row with its stock back.
    assert_eq!(
        sql(
            &lab,
            "vm-db",
            "select count(*) from orders where state = 'confirmed'"
        ),
        ok.to_string()
    );
    assert_eq!(sql(&lab, "vm-db", "select count(*) from orders"), "500");
    stock_follows_the_confirmed_orders(&lab, ok);
    // The supervisor restarted it and it registered again.
    let st = lab.status();
    assert!(
        node(&st, "vm-stock")["restarts"].as_u64() >= Some(1),
        "{st:#}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while show(&lab, "vm-reg", "services")["stock"]["providers"]
        .as_array()
        .map(Vec::len)
        != Some(2)
    {
        assert!(Instant::now() < deadline, "vm-stock did not register again");
        std::thread::sleep(Duration::from_millis(200));
    }
    standby_holds_the_same_rows(&lab);

    // Both stock providers killed at once in the middle of 100 orders: each
    // order completes once or fails cleanly (503) with its stock back.
    let pids: Vec<u64> = ["vm-stock", "vm-stock2"]
        .iter()
        .map(|n| node(&lab.status(), n)["pid"].as_u64().expect("pid"))
        .collect();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        for pid in pids {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .output();
        }
        Instant::now()
    });
    let codes = curl_orders(&lab, "both", 100, 8);
    let ended = Instant::now();
    assert!(
        killer.join().unwrap() < ended,
        "the kill came after the orders"
    );
    let failed = count(&codes, 503) + count(&codes, 504);
    assert_eq!(count(&codes, 201) + failed, 100, "{codes:?}");
    let accepted: Vec<String> = (1..=100)
        .filter(|i| codes[i - 1] == 201)
        .map(|i| format!("both-{i}"))
        .collect();
    let confirmed = sql(
        &lab,
        "vm-db",
        "select idempotency_key from orders where state = 'confirmed' and idempotency_key like 'both-%' order by cast(substr(idempotency_key, 6) as integer)",
    );
    assert_eq!(
        confirmed.lines().collect::<Vec<_>>(),
        accepted,
        "accepted replies = confirmed rows"
    );
    stock_follows_the_confirmed_orders(&lab, ok + accepted.len());
    eprintln!(
        "both stock providers killed: {} of 100 orders accepted, {failed} failed cleanly",
        accepted.len()
    );
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn corrupt_frames_unknown_services_and_oversized_bodies_get_clear_errors() {
    let _s = serial();
    require_root();
    let lab = Lab::up("double11.toml", "rpcbad");
    let order_svc = "192.168.1.40:20880";
    // From vm-lb (another host's VM): a bad magic closes that connection.
    assert_eq!(raw_rpc(&lab, "vm-lb", order_svc, "b'\\x00' * 16"), "closed");
    // An unknown service: 60 SERVICE_NOT_FOUND.
    let body = "b'\\x052.0.2\\x04nope\\x050.0.0\\x01x\\x00HZ'";
    let frame = format!("{} + {body}", header(20));
    assert_eq!(raw_rpc(&lab, "vm-lb", order_svc, &frame), "60");
    // A body over the limit: 40 BAD_REQUEST, answered from the header.
    assert_eq!(
        raw_rpc(&lab, "vm-lb", order_svc, &header(0x1000_0000)),
        "40"
    );
    // An unreadable body: 40.
    let frame = format!("{} + b'\\xff\\xff\\xff\\xff'", header(4));
    assert_eq!(raw_rpc(&lab, "vm-lb", order_svc, &frame), "40");
    // The service keeps serving, and says what it refused.
    let (o, v) = order(&lab, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(v["status"], 201, "{v:#}");
    let server = show(&lab, "vm-order", "server");
    assert!(
        server["bad_frames"]
            .as_object()
            .is_some_and(|b| !b.is_empty()),
        "{server:#}"
    );
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn every_wire_captured_while_phones_order_decodes_without_a_broken_frame() {
    let _s = serial();
    require_root();
    // The replication port is bound to no dissector of this tshark and
    // registered to no protocol in its copy of the IANA registry.
    let port = d11_apps::db::REPLICATION_PORT;
    let decodes = std::process::Command::new("tshark")
        .args(["-G", "decodes"])
        .output()
        .expect("tshark runs");
    let on_port = String::from_utf8_lossy(&decodes.stdout)
        .lines()
        .filter(|l| l.starts_with(&format!("tcp.port\t{port}\t")))
        .map(str::to_string)
        .collect::<Vec<_>>();
    assert!(on_port.is_empty(), "tshark dissects {port}: {on_port:?}");
    let services = std::fs::read_to_string("/usr/share/wireshark/services").unwrap_or_default();
    let registered: Vec<&str> = services
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|p| p.starts_with(&format!("{port}/")))
        })
        .collect();
    assert!(
        registered.is_empty(),
        "{port} is registered: {registered:?}"
    );

    let lab = Lab::up("double11.toml", "nomalformed");
    let scratch = Scratch::new("nomalformed");
    let cap = scratch.path("lab.pcapng");
    // The UE's own kernel ordering with a coupon, then simulated phones:
    // every wire, from the radio to the standby's VM.
    let d = d11_bin();
    let script = format!(
        "{d} order --name {n} --coupon D11-0001 >/dev/null && {d} load --name {n} --phones 20 --orders 3",
        d = d.display(),
        n = lab.name
    );
    let o = d11(&[
        "capture",
        "--name",
        &lab.name,
        "-w",
        cap.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert!(o.status.success(), "{}", text(&o));

    // Every wire of the order's path through the backend carried its part
    // (the registry's may be quiet for a capture this short).
    let wires: std::collections::BTreeSet<String> =
        tshark_fields(&cap, "", &["frame.interface_name"])
            .into_iter()
            .filter_map(|r| r.into_iter().next())
            .collect();
    for vm in [
        "vm-order",
        "vm-stock",
        "vm-stock2",
        "vm-coupon",
        "vm-db",
        "vm-db2",
    ] {
        assert!(
            wires.contains(&format!("{vm}:eth0")),
            "{vm}:eth0 not captured: {wires:?}"
        );
    }
    let log = tshark_fields(
        &cap,
        &format!("tcp.port == {port} && tcp.len > 0"),
        &["frame.interface_name"],
    );
    for w in [
        "vm-db:eth0",
        "vm-db2:eth0",
        "hosta:underlay",
        "hostb:underlay",
    ] {
        assert!(log.iter().any(|r| r[0] == w), "no change log on {w}");
    }
    // Nothing read as MySQL, nothing broken.
    assert!(
        tshark_fields(&cap, "mysql", &["frame.number"]).is_empty(),
        "read as MySQL"
    );
    let broken = broken_frames_whole_and_per_wire(&cap);
    assert!(
        broken.is_empty(),
        "{} broken frames: {:?}",
        broken.len(),
        &broken[..broken.len().min(20)]
    );
    eprintln!(
        "{} wires captured, {} change-log segments, no broken frame",
        wires.len(),
        log.len()
    );
}
