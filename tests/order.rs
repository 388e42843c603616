//! End-to-end tests of the order in netns/double11.toml, in real namespaces:
//! the phone's TLS `POST /purchaseOrder` through both GTP-U tunnels, the
//! pgw's NAT, the carriers, the vgw's DNAT and VXLAN, the l4lb in vm-lb and
//! a controller in vm-ctl or vm-ctl2. Root only.

mod support;

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Output;
use support::*;

const BODY: &str =
    r#"{"order":{"date":"2018-07-01","className":"趣谈网络协议","Author":"刘超","price":"68"}}"#;
const URL: &str = "https://www.geektime.com/purchaseOrder";

fn root_pem(lab: &Lab) -> PathBuf {
    PathBuf::from("/run/d11")
        .join(&lab.name)
        .join("pki/root.pem")
}

/// `d11 order --json` with `extra` arguments; the outcome as JSON.
fn order(lab: &Lab, extra: &[&str]) -> (Output, Value) {
    let mut args = vec!["order", "--name", &lab.name, "--json"];
    args.extend_from_slice(extra);
    let o = d11(&args);
    let v = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    (o, v)
}

/// curl from the phone: `-w` appends the status code on its own line.
fn curl(lab: &Lab, args: &[&str]) -> Output {
    let mut cmd = vec!["curl", "-sS", "-m", "10", "-w", "\n%{http_code}"];
    cmd.extend_from_slice(args);
    lab.exec("ue", &cmd)
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn the_phone_orders_over_tls_through_both_tunnels_both_nats_and_the_l4_proxy() {
    let _s = serial();
    require_root();
    let lab = Lab::up("double11.toml", "order");

    // The phone app: TLS to the lab root, 201 with an order id.
    let (o, v) = order(&lab, &[]);
    assert!(o.status.success(), "d11 order: {}", text(&o));
    assert_eq!(v["status"], 201, "{v}");
    assert_eq!(v["body"]["status"], "created", "{v}");
    assert_eq!(v["tls_version"], "TLSv1_3", "{v}");
    assert_eq!(v["remote"], "203.0.113.24:443", "{v}");
    assert_eq!(
        v["local"].as_str().unwrap().split(':').next(),
        Some("10.45.0.2")
    );

    // The same key twice: one order, the same id; a new key, a new order.
    let (_, a) = order(&lab, &["--key", "story-key-1"]);
    let (_, b) = order(&lab, &["--key", "story-key-1"]);
    assert_eq!(a["status"], 201, "{a}");
    assert_eq!(a["body"]["order_id"], b["body"]["order_id"], "{a} {b}");
    assert_ne!(a["body"]["order_id"], v["body"]["order_id"]);
    assert_eq!(order_rows(&lab, "story-key-1"), 1);

    // The l4lb spreads the orders over both controllers.
    let mut served = BTreeSet::new();
    for _ in 0..4 {
        let (o, v) = order(&lab, &[]);
        assert!(o.status.success(), "{}", text(&o));
        served.insert(v["body"]["served_by"].as_str().unwrap_or("").to_string());
    }
    assert_eq!(
        served,
        BTreeSet::from(["vm-ctl".to_string(), "vm-ctl2".to_string()])
    );

    // curl through `d11 exec ue`, which mounts the phone's hosts file:
    // the lab root is trusted, the machine's public CAs are not.
    let root = root_pem(&lab);
    let root = root.to_str().unwrap();
    let o = curl(
        &lab,
        &[
            "--cacert",
            root,
            "-H",
            "Content-Type: application/json",
            "-d",
            BODY,
            URL,
        ],
    );
    let out = text(&o);
    assert!(o.status.success() && out.ends_with("\n201"), "{out}");
    assert!(out.contains("\"order_id\""), "{out}");
    let o = curl(
        &lab,
        &[
            "--cacert",
            "/etc/ssl/certs/ca-certificates.crt",
            "-d",
            BODY,
            URL,
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(60),
        "another CA must fail: {}",
        text(&o)
    );

    // openssl: root → intermediate → leaf, verified.
    let o = lab.exec(
        "ue",
        &[
            "sh",
            "-c",
            &format!(
                "openssl s_client -connect www.geektime.com:443 -servername www.geektime.com \
                 -CAfile {root} -showcerts </dev/null 2>&1"
            ),
        ],
    );
    let s = text(&o);
    assert!(s.contains("Verify return code: 0 (ok)"), "{s}");
    assert_eq!(s.matches("-----BEGIN CERTIFICATE-----").count(), 2, "{s}");
    assert!(s.contains("depth=2") && s.contains("root CA"), "{s}");

    // d11 trace: the request followed from the radio to a controller's
    // vNIC, every row as the topology implies; tshark decodes the capture
    // with no malformed frame and, with the secrets in it, shows the POST.
    let o = d11(&["trace", "--name", &lab.name, "--json"]);
    let t: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    assert!(o.status.success(), "d11 trace: {}", text(&o));
    assert_eq!(t["ok"], true, "{t:#}");
    let hops = t["hops"].as_array().expect("hops");
    assert!(hops.len() >= 12, "{} hops: {t:#}", hops.len());
    let wire = |i: usize| hops[i]["wire"].as_str().unwrap_or("");
    assert_eq!(wire(0), "ue:eth0");
    assert!(
        matches!(wire(hops.len() - 1), "vm-ctl:eth0" | "vm-ctl2:eth0"),
        "{t:#}"
    );
    let tunnels: Vec<&Value> = hops.iter().map(|h| &h["tunnel"]).collect();
    // The phone's TEIDs are the attach's: the sgw's bearer table has them
    // (S1-U up to the sgw, S5 up to the pgw).
    let phone = lab.phone_bearer();
    for want in [
        serde_json::json!({"gtpu": {"teid": phone["sgw_s1u_teid"]}}),
        serde_json::json!({"gtpu": {"teid": phone["pgw_teid"]}}),
        serde_json::json!({"vxlan": {"vni": 1001}}),
    ] {
        assert!(tunnels.contains(&&want), "no {want} in {tunnels:?}");
    }
    assert_eq!(t["secrets_in_capture"], true);
    let cap = std::path::PathBuf::from(t["capture"].as_str().expect("capture path"));
    let bad = bad_frames(&cap);
    assert!(bad.is_empty(), "malformed frames: {bad:?}");
    let posts = tshark_fields(
        &cap,
        "http.request.method == \"POST\"",
        &["http.request.uri"],
    );
    assert!(
        posts.iter().any(|r| r[0] == "/purchaseOrder"),
        "Wireshark decrypts the POST with the DSB: {posts:?}"
    );

    // The apps show up like elements.
    let st = lab.status();
    let lb = node(&st, "vm-lb");
    assert_eq!(lb["role"], "l4lb");
    assert_eq!(lb["state"], "running");
    assert!(lb["answering"].as_bool().unwrap_or(false), "{lb}");
    let o = d11(&["show", "--name", &lab.name, "--json", "vm-lb"]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn bad_requests_garbage_and_floods_get_clear_answers_and_orders_keep_flowing() {
    let _s = serial();
    require_root();
    let lab = Lab::up("double11.toml", "badorder");
    let root = root_pem(&lab);
    let root = root.to_str().unwrap();
    let post = |ctype: &str, body: &str| {
        let o = curl(
            &lab,
            &[
                "--cacert",
                root,
                "-H",
                &format!("Content-Type: {ctype}"),
                "--data-binary",
                body,
                URL,
            ],
        );
        text(&o)
    };
    let out = post("application/json", "{\"order\":");
    assert!(out.ends_with("\n400") && out.contains("error"), "{out}");
    let out = post(
        "application/json",
        r#"{"order":{"date":"2018-07-01","className":"x","Author":"y","price":"-3"}}"#,
    );
    assert!(out.ends_with("\n400") && out.contains("price"), "{out}");
    let out = post("text/plain", BODY);
    assert!(out.ends_with("\n415"), "{out}");
    let huge = format!(
        r#"{{"order":{{"date":"2018-07-01","className":"{}","Author":"y","price":"1"}}}}"#,
        "x".repeat(100_000)
    );
    let out = post("application/json", &huge);
    assert!(
        out.ends_with("\n413"),
        "{}",
        &out[out.len().saturating_sub(200)..]
    );

    // Not TLS at all on :443: the l4lb passes it through, a controller
    // closes it and counts it.
    let o = curl(&lab, &["http://www.geektime.com:443/purchaseOrder"]);
    assert!(!o.status.success(), "plain HTTP on :443 must fail");
    let garbage: u64 = ["vm-ctl", "vm-ctl2"]
        .iter()
        .map(|n| {
            let o = d11(&[
                "show",
                "--name",
                &lab.name,
                "--json",
                n,
                "tls_handshake_failures",
            ]);
            let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
            v["invalid_message"].as_u64().unwrap_or(0)
        })
        .sum();
    assert!(garbage >= 1, "no controller counted the garbage");

    // TLS 1.2 as well as 1.3, end to end.
    let o = curl(
        &lab,
        &[
            "--cacert",
            root,
            "--tlsv1.2",
            "--tls-max",
            "1.2",
            "-H",
            "Content-Type: application/json",
            "-d",
            BODY,
            URL,
        ],
    );
    let out = text(&o);
    assert!(
        o.status.success() && out.ends_with("\n201"),
        "TLS 1.2: {out}"
    );

    // A cut request, then the same key again: one order.
    let py = "import socket,ssl,sys\n\
              c=ssl.create_default_context(cafile=sys.argv[1])\n\
              s=c.wrap_socket(socket.create_connection(('www.geektime.com',443)),server_hostname='www.geektime.com')\n\
              s.sendall(b'POST /purchaseOrder HTTP/1.1\\r\\nHost: www.geektime.com\\r\\nContent-Type: application/json\\r\\nIdempotency-Key: cut-1\\r\\nContent-Length: 200\\r\\n\\r\\n{\"order\":')\n\
              s.close()\n";
    lab.sh("ue", &["/usr/bin/python3", "-c", py, root]);
    let (o, v) = order(&lab, &["--key", "cut-1"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(v["status"], 201);
    assert_eq!(order_rows(&lab, "cut-1"), 1);

    // Slowloris: one header byte a second is cut off, orders still flow.
    let py = "import socket,ssl,sys,time\n\
              c=ssl.create_default_context(cafile=sys.argv[1])\n\
              s=c.wrap_socket(socket.create_connection(('www.geektime.com',443)),server_hostname='www.geektime.com')\n\
              t=time.time()\n\
              try:\n\
              \x20 for b in b'POST /purchaseOrder HTTP/1.1\\r\\nHost: www.geektime.com\\r\\nX-Slow: ' + b'a'*60:\n\
              \x20   s.send(bytes([b])); time.sleep(0.5)\n\
              \x20 print('never cut')\n\
              except OSError:\n\
              \x20 print('cut after %.0f s' % (time.time()-t))\n";
    let o = lab.exec("ue", &["timeout", "40", "/usr/bin/python3", "-c", py, root]);
    let s = text(&o);
    assert!(s.contains("cut after"), "slowloris: {s}");

    // A flood of half-open TCP to the VIP from the phone (scapy SYNs with
    // random source ports, never completed), then a normal order.
    let py = "from scapy.all import IP,TCP,RandShort,send\n\
              send(IP(dst='203.0.113.24')/TCP(sport=RandShort(),dport=443,flags='S'),count=1500,verbose=0)\n";
    lab.sh("ue", &["/usr/bin/python3", "-c", py]);
    let (o, v) = order(&lab, &[]);
    assert!(o.status.success(), "after the flood: {}", text(&o));
    assert_eq!(v["status"], 201);

    // A controller killed: the l4lb retries on the other one, the
    // supervisor restarts it.
    let st = lab.status();
    let pid = node(&st, "vm-ctl")["pid"].as_u64().expect("vm-ctl runs");
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    for _ in 0..4 {
        let (o, v) = order(&lab, &[]);
        assert!(o.status.success(), "with vm-ctl down: {}", text(&o));
        assert_eq!(v["status"], 201);
    }
}
