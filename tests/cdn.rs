//! End-to-end test of chapter 4's CDN (netns/double11.toml, root only,
//! docs/cdn.md): from the phone, curl resolves static.geektime.com through
//! the carrier's resolver (the shop's CNAME into the CDN's domain, the
//! CDN's CNAME to its GSLB, which answers the edge next to that resolver)
//! and gets the cover over TLS from edge-a2: the first GET a miss at the
//! edge and the parent, fetched once from the origin in the VPC through its
//! VIP; the second a hit at the edge with `Age`; the bytes the origin's.
//! Every frame of it decodes in tshark; decrypted with curl's TLS keys, the
//! phone's wire shows the HTTP and the cover as a JPEG. Then 50 concurrent GETs of a cold
//! object are one request at the origin; a short-lived object is
//! revalidated (304 while unchanged, 200 after a PUT at the origin); a
//! purge makes the next GET a miss at the edge and a hit at the parent.

mod support;

use d11_apps::cdn::object_bytes;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use support::*;

const URL: &str = "https://static.geektime.com";

/// What curl in a node printed: the status, the headers (lower-cased
/// names, the last of each) and the body.
struct Got {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

/// The shell command that GETs `path` with curl (the lab root trusted,
/// the name resolved by the node's resolv.conf) into `dir/tag.{head,body}`.
fn curl(lab: &Lab, dir: &Path, tag: &str, path: &str) -> String {
    format!(
        "curl -sS --cacert /run/d11/{}/pki/root.pem -D {d}/{tag}.head -o {d}/{tag}.body {URL}{path}",
        lab.name,
        d = dir.display()
    )
}

fn read(dir: &Path, tag: &str) -> Got {
    let head = std::fs::read_to_string(dir.join(format!("{tag}.head"))).unwrap();
    let mut lines = head.lines();
    let status = (lines.next().unwrap().split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = std::fs::read(dir.join(format!("{tag}.body"))).unwrap_or_default();
    Got {
        status,
        headers,
        body,
    }
}

/// One GET from the phone.
fn get(lab: &Lab, dir: &Path, tag: &str, path: &str) -> Got {
    lab.sh("ue", &["sh", "-c", &curl(lab, dir, tag, path)]);
    read(dir, tag)
}

fn report(lab: &Lab, node: &str) -> Value {
    let o = d11(&["show", "--name", &lab.name, node, "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn the_phone_gets_the_cover_through_the_nearest_edge_a_miss_then_a_hit() {
    let _s = serial();
    require_root();
    let scratch = Scratch::new("cdn");
    let dir = scratch.0.clone();
    let name;
    {
        let lab = Lab::up("double11.toml", "cdn");
        name = lab.name.clone();

        // The chain of names, as the phone's resolver gives it.
        let chain = lab.sh("ue", &["dig", "+noall", "+answer", "static.geektime.com"]);
        let chain: Vec<Vec<&str>> = (chain.lines())
            .map(|l| l.split_whitespace().collect())
            .collect();
        let last: Vec<(&str, &str)> = chain.iter().map(|r| (r[3], r[4])).collect();
        assert_eq!(
            last,
            [
                ("CNAME", "static.geektime.com.c.d11cdn.com."),
                ("CNAME", "static.geektime.com.gslb.d11cdn.com."),
                ("A", "198.18.2.18"),
            ],
            "{chain:?}"
        );

        // The first GET and, a second later, the second, captured on
        // every wire.
        // curl logs its TLS keys (SSLKEYLOGFILE, which `d11 capture` sets
        // for its command and here keeps in `keys`).
        let cap = dir.join("cdn.pcapng");
        let keys = dir.join("keys.log");
        let twice = format!(
            "{} && sleep 1.2 && {}",
            curl(&lab, &dir, "first", "/images/cover.jpg"),
            curl(&lab, &dir, "second", "/images/cover.jpg")
        );
        let o = Command::new(d11_bin())
            .env("SSLKEYLOGFILE", &keys)
            .args(["capture", "--name", &lab.name, "-w"])
            .arg(&cap)
            .args([
                "--",
                d11_bin().to_str().unwrap(),
                "exec",
                "--name",
                &lab.name,
            ])
            .args(["ue", "--", "sh", "-c", &twice])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let (first, second) = (read(&dir, "first"), read(&dir, "second"));
        let cover = object_bytes("/images/cover.jpg", 120_000);
        assert_eq!(first.status, 200);
        assert!(first.body == cover, "the cover is not the origin's bytes");
        assert_eq!(
            first.header("x-cache"),
            "MISS from edge-a2, MISS from parent"
        );
        assert_eq!(first.header("via"), "1.1 parent, 1.1 edge-a2");
        assert_eq!(second.header("x-cache"), "HIT from edge-a2");
        let age: u64 = second.header("age").parse().unwrap();
        assert!(age >= 1, "Age {age}");
        assert!(second.body == cover);
        let origin = report(&lab, "vm-origin");
        assert_eq!(origin["stats"]["served"], 1, "{origin}");

        // TLS with SNI static.geektime.com to the edge, from the edge to
        // the parent, from the parent to the origin's VIP (each hello is
        // dissected on the first wire it crosses: Wireshark reads its copies
        // on later wires as retransmissions), and into the origin's VM.
        let hellos = tshark_fields(
            &cap,
            "tls.handshake.extensions_server_name == \"static.geektime.com\"",
            &["frame.interface_name", "ip.dst"],
        );
        for (wire, dst) in [
            ("ue:eth0", "198.18.2.18"),
            ("edge-a2:eth0", "198.18.1.34"),
            ("cdn-parent:eth0", "203.0.113.30"),
        ] {
            assert!(
                hellos.iter().any(|h| h[0] == wire && h[1] == dst),
                "no ClientHello to {dst} on {wire}: {hellos:?}"
            );
        }
        let into_vm = tshark_fields(
            &cap,
            "ip.dst == 192.168.1.70 && tcp.dstport == 443",
            &["frame.interface_name"],
        );
        assert!(
            into_vm.iter().any(|w| w[0] == "vm-origin:eth0"),
            "{into_vm:?}"
        );
        // Wire by wire: the origin's answer is many segments through vgw,
        // hosta and vm-origin under the same addresses; a segment that ends
        // a TLS record, sent after the parent's ACK of everything before it
        // has crossed those three wires, reads to Wireshark 4.0 as a fast
        // retransmission in the whole file (docs/order.md, "Reading the
        // capture").
        assert_eq!(broken_frames_per_wire(&cap), Vec::<Vec<String>>::new());

        // The phone's wire alone (the same connection on later wires would
        // look like retransmissions to Wireshark's reassembly), decrypted
        // with curl's keys, reassembled: tshark reads both requests, both
        // answers, and in each the cover as a JPEG (its JFIF dissector: the
        // 160×90 picture), with no frame malformed.
        let phone = dir.join("phone.pcapng");
        let o = Command::new("tshark")
            .arg("-r")
            .arg(&cap)
            .args(["-Y", "frame.interface_name == \"ue:eth0\"", "-w"])
            .arg(&phone)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let key_log = format!("tls.keylog_file:{}", keys.display());
        let decrypted =
            |filter: &str, fields: &[&str]| tshark_with(&phone, &["-o", &key_log], filter, fields);
        let asked = decrypted("http.request", &["http.request.method", "http.request.uri"]);
        assert_eq!(
            asked,
            [["GET", "/images/cover.jpg"], ["GET", "/images/cover.jpg"]]
        );
        let pictures = decrypted(
            "http.response && image-jfif",
            &[
                "http.response.code",
                "http.content_type",
                "http.content_length",
                "image-jfif.identifier",
                "image-jfif.sof.samples_per_line",
                "image-jfif.sof.lines",
            ],
        );
        let jpeg = ["200", "image/jpeg", "120000", "JFIF", "160", "90"];
        assert_eq!(pictures, [jpeg, jpeg], "the cover as tshark read it");
        let broken = decrypted(
            "_ws.malformed || _ws.expert.severity >= error",
            &["frame.number", "_ws.col.info", "_ws.expert.message"],
        );
        assert_eq!(broken, Vec::<Vec<String>>::new());

        // 50 at once for a cold object: one request reaches the origin.
        let fifty = format!(
            "for i in $(seq 50); do {} & done; wait",
            curl(&lab, &dir, "t$i", "/images/thumb-1.jpg")
        );
        lab.sh("ue", &["sh", "-c", &fifty]);
        let thumb = object_bytes("/images/thumb-1.jpg", 8000);
        for i in 1..=50 {
            let g = read(&dir, &format!("t{i}"));
            assert!(g.status == 200 && g.body == thumb, "GET {i}: {}", g.status);
        }
        let origin = report(&lab, "vm-origin");
        assert_eq!(origin["stats"]["served"], 2, "{origin}");
        let edge = report(&lab, "edge-a2");
        assert_eq!(edge["upstream"]["fetches"], 2, "{edge}");

        // The banner is fresh for 2 s: stale, it is revalidated through the
        // parent (304 while unchanged), then after a PUT at the origin the
        // validators differ and the new bytes come back.
        let b = get(&lab, &dir, "b1", "/images/banner.jpg");
        assert_eq!(b.header("x-cache"), "MISS from edge-a2, MISS from parent");
        std::thread::sleep(std::time::Duration::from_millis(2500));
        let b = get(&lab, &dir, "b2", "/images/banner.jpg");
        assert_eq!(
            b.header("x-cache"),
            "REVALIDATED from edge-a2, REVALIDATED from parent"
        );
        assert!(b.body == object_bytes("/images/banner.jpg", 40_000));
        assert_eq!(report(&lab, "vm-origin")["stats"]["not_modified"], 1);
        let put = format!(
            "curl -sS --fail --cacert /run/d11/{}/pki/root.pem --resolve static.geektime.com:443:127.0.0.1 \
             -X PUT -H 'Content-Type: image/jpeg' -H 'Cache-Control: public, max-age=2' \
             --data-binary 'a new banner' {URL}/images/banner.jpg",
            lab.name
        );
        lab.sh("vm-origin", &["sh", "-c", &put]);
        std::thread::sleep(std::time::Duration::from_millis(2500));
        let b = get(&lab, &dir, "b3", "/images/banner.jpg");
        assert_eq!(b.header("x-cache"), "MISS from edge-a2, MISS from parent");
        assert_eq!(&b.body[..], b"a new banner");

        // A purge at the edge: a miss there, a hit at the parent.
        let o = d11(&[
            "purge",
            "--name",
            &lab.name,
            "edge-a2",
            "https://static.geektime.com/images/cover.jpg",
        ]);
        assert!(text(&o).contains("purged"), "{}", text(&o));
        let after = get(&lab, &dir, "after", "/images/cover.jpg");
        assert_eq!(
            after.header("x-cache"),
            "MISS from edge-a2, HIT from parent"
        );
        assert!(after.body == cover);
        // d11 browse: the same chain, edge and verdicts, as JSON.
        let o = d11(&["browse", "--name", &lab.name, "--json", "/images/cover.jpg"]);
        assert!(o.status.success(), "{}", text(&o));
        let b: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(b["resolved"]["addrs"][0], "198.18.2.18", "{b}");
        assert_eq!(
            b["page"]["pictures"][0]["x_cache"], "HIT from edge-a2",
            "{b}"
        );
        assert_eq!(b["as_made"][0], true, "{b}");
        let rows = &report(&lab, "edge-a2")["cache"]["objects"];
        assert!(
            (rows.as_array().unwrap().iter())
                .any(|r| r["key"] == "static.geektime.com/images/cover.jpg"),
            "{rows}"
        );
    }
    assert_gone(&name);
}
