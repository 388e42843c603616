//! End-to-end test of `d11 tcpview` on netns/double11.toml, in real
//! namespaces: one order captured on every wire, the phone's connection on
//! the radio wire segment by segment, checked against tshark's decode of
//! the same capture, and its picture. Root only.

mod support;

use serde_json::Value;
use support::*;

/// A lab named `tcpv-TAG-…` built from `file`, taken down by the guard
/// like [`Lab::up`]'s.
fn tcpv_lab(file: &std::path::Path, tag: &str) -> Lab {
    let name = format!("tcpv-{tag}-{}", std::process::id() % 100_000);
    Lab::up_named(&name, file)
}

fn states(rows: &[Value], side: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in rows {
        let s = r[side].as_str().unwrap().to_string();
        if out.last() != Some(&s) {
            out.push(s);
        }
    }
    out
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn the_phones_connection_opens_carries_the_order_and_closes_on_the_radio_wire() {
    let _s = serial();
    require_root();
    let lab = tcpv_lab(&topology("double11.toml"), "e2e");
    let scratch = Scratch::new("tcpview");
    let svg = scratch.path("order.svg");
    let o = d11(&[
        "tcpview",
        "--name",
        &lab.name,
        "--json",
        "--svg",
        &svg.to_string_lossy(),
    ]);
    assert!(o.status.success(), "d11 tcpview: {}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("tcpview --json is JSON");
    assert_eq!(v["order"]["status"], 201, "{v}");
    let view = &v["view"];
    assert_eq!(view["wire"], "ue:eth0");
    assert_eq!(view["server"], "203.0.113.24:443");
    let rows = view["rows"].as_array().unwrap();

    // SYN-SENT → ESTABLISHED → … → TIME-WAIT or CLOSED.
    let client = states(rows, "client");
    assert_eq!(client[..2], ["SYN-SENT", "ESTABLISHED"], "{client:?}");
    let last = client.last().unwrap();
    assert!(last == "TIME-WAIT" || last == "CLOSED", "{client:?}");
    assert_eq!(view["summary"]["client_final"], last.as_str());

    // The phone's MTU is 1400: its SYN offers at most 1400 - 40.
    let mss = view["summary"]["client"]["mss"]
        .as_u64()
        .expect("client MSS");
    assert!(mss <= 1360, "MSS {mss}");
    for dir in ["client_to_server", "server_to_client"] {
        assert!(
            rows.iter()
                .any(|r| r["dir"] == dir && r["len"].as_u64() > Some(0)),
            "no data {dir}"
        );
    }

    // tshark's own decode of the radio wire: relative seq, ack, length and
    // scaled window of every segment, in time order (the file is written
    // packet by packet: on one wire an ACK may follow the segment it
    // crossed).
    let capture = v["capture"].as_str().unwrap();
    let mut tshark = tshark_fields(
        std::path::Path::new(capture),
        &format!(
            "frame.interface_name == \"ue:eth0\" && tcp.port == {}",
            view["client"].as_str().unwrap().rsplit(':').next().unwrap()
        ),
        &[
            "frame.time_epoch",
            "tcp.seq",
            "tcp.ack",
            "tcp.len",
            "tcp.window_size",
        ],
    );
    tshark.sort_by(|a, b| a[0].cmp(&b[0]));
    for r in &mut tshark {
        r.remove(0);
    }
    let ours: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r["seq"].to_string(),
                if r["ack"].is_null() {
                    "0".into()
                } else {
                    r["ack"].to_string()
                },
                r["len"].to_string(),
                r["win"].to_string(),
            ]
        })
        .collect();
    assert_eq!(ours, tshark);

    // The picture: an SVG that Python's XML parser reads.
    let body = std::fs::read_to_string(&svg).expect("the SVG was written");
    assert!(body.starts_with("<svg"), "{body}");
    let parsed = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import xml.dom.minidom,sys; xml.dom.minidom.parse(sys.argv[1])",
        ])
        .arg(&svg)
        .output()
        .expect("python3 runs");
    assert!(parsed.status.success(), "{}", text(&parsed));

    // The same capture read back, on S1-U inside GTP-U: the same segments
    // of the order's connection (the app's HTTPDNS lookup is one to 443
    // too).
    let conn = format!(
        "{},{}",
        v["order"]["local"].as_str().unwrap(),
        v["order"]["remote"].as_str().unwrap()
    );
    let o = d11(&[
        "tcpview", "-r", capture, "--wire", "enb:s1u", "--conn", &conn, "--json",
    ]);
    assert!(o.status.success(), "d11 tcpview -r: {}", text(&o));
    let s1u: Value = serde_json::from_slice(&o.stdout).unwrap();
    let n = |v: &Value, dir: &str| {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["dir"] == dir)
            .count()
    };
    // (The capture point of a cable sees both directions.)
    assert_eq!(
        n(&s1u["view"], "client_to_server"),
        n(view, "client_to_server")
    );

    // Clear errors.
    let o = d11(&["tcpview", "-r", capture, "--wire", "nosuch:eth9"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("no wire named nosuch:eth9"),
        "{}",
        text(&o)
    );
    let o = d11(&["tcpview", "-r", capture, "--conn", "10.9.9.9:1,10.9.9.8:2"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("no TCP connection between"),
        "{}",
        text(&o)
    );
}

/// Impairment drops counted by `node`'s ports, from `d11 status --json`.
fn impair_drops(lab: &Lab, node_name: &str) -> u64 {
    let status = lab.status();
    node(&status, node_name)["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["counters"]["drops"].as_object())
        .flat_map(|d| d.iter())
        .filter(|(reason, _)| reason.starts_with("impair"))
        .filter_map(|(_, n)| n.as_u64())
        .sum()
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn with_loss_on_the_radio_wire_the_view_shows_retransmissions() {
    // (At this rate an order's own connection shows no retransmission in
    // about one order of three: 5 of 16 in one run, the rest of the 73
    // frames lost being ACKs or the HTTPDNS connection's. Twelve orders
    // all without one happen about once in 10^6 runs; four, tried before,
    // failed about once in a hundred.)
    let _s = serial();
    require_root();
    // netns/double11.toml with 10% loss each way on the radio wire, seeded.
    let scratch = Scratch::new("tcpview-loss");
    let toml = std::fs::read_to_string(topology("double11.toml")).unwrap();
    let radio = "a = \"ue:eth0\"\nb = \"enb:radio\"\n";
    assert!(toml.contains(radio), "the radio wire moved");
    let lossy = toml.replace(radio, &format!("{radio}impair = \"loss=10%\"\nseed = 7\n"));
    let file = scratch.path("lossy.toml");
    std::fs::write(&file, lossy).unwrap();
    let lab = tcpv_lab(&file, "loss");

    // A few orders, each its own connection; an order loss made fail is
    // not a failure of the view.
    let (mut views, mut marked, mut retransmissions) = (0, 0, 0);
    for _ in 0..12 {
        let o = d11(&["tcpview", "--name", &lab.name, "--json"]);
        if !o.status.success() {
            eprintln!("an order under loss failed: {}", text(&o));
            continue;
        }
        views += 1;
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        let rows = v["view"]["rows"].as_array().unwrap();
        // Lost after ue:eth0 (uplink): sent again, a retransmission; lost
        // before it (downlink): a gap, filled out of order, and dup acks.
        marked += rows
            .iter()
            .filter(|r| !r["notes"].as_array().unwrap().is_empty())
            .count();
        retransmissions += v["view"]["summary"]["retransmissions"].as_u64().unwrap();
        if retransmissions > 0 {
            break;
        }
    }
    let drops = impair_drops(&lab, "enb");
    assert!(drops > 0, "the enb dropped nothing for its 10% loss");
    assert!(views > 0, "no order got through 10% loss");
    assert!(
        marked > 0 && retransmissions > 0,
        "the enb dropped {drops} frames, yet {marked} segments are marked and \
         {retransmissions} retransmitted"
    );
}
