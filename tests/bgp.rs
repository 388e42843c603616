//! Root end-to-end tests of chapter 2 in real namespaces.
//!
//! - Interop (netns/bgp-interop.toml): Debian's BIRD 2 and GoBGP, each in a
//!   host namespace of its own on a veth with offloads off, peer with our
//!   border; each learns 203.0.113.0/24 with AS_PATH 64600 and our address
//!   as next hop, announces a prefix of its own that the border installs
//!   and forwards to; a session flap on their side (an administrative
//!   shutdown, a reset) and on ours (the border's process killed) recovers.
//!   Every frame of the sessions' start decodes in tshark.
//! - Failure (netns/double11.toml): the preferred path cut — the c1–c2
//!   wire at 100 % loss, c2's process frozen — expires the hold timers,
//!   withdraws the routes and the order takes c3; back, the sessions return
//!   and c1 is best again. c2 killed comes back by itself.
//!
//! The interop test fails, saying so, when bird or gobgpd is not installed
//! (`scripts/lib.sh` installs them).

mod support;

use d11_elements::bgp::FsmState;
use d11_elements::router::RouterReport;
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

fn report(lab: &Lab, node: &str) -> RouterReport {
    let o = d11(&["show", "--name", &lab.name, node, "--json"]);
    assert!(o.status.success(), "d11 show {node}: {}", text(&o));
    serde_json::from_slice(&o.stdout).expect("a router's report")
}

/// Polls `what` every 200 ms until it holds; panics naming `doing` after
/// `limit` (a deadline for a test that would hang, not a measurement).
fn eventually(limit: Duration, doing: &str, what: impl FnMut() -> bool) {
    assert!(within(limit, what), "not {doing} after {limit:?}");
}

/// Whether `what` held within `limit`, polled every 200 ms.
fn within(limit: Duration, mut what: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while !what() {
        if t0.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    true
}

fn states(lab: &Lab, node: &str) -> Vec<FsmState> {
    report(lab, node)
        .bgp
        .expect("a speaker")
        .neighbors
        .iter()
        .map(|n| n.state)
        .collect()
}

fn installed(lab: &Lab, node: &str, prefix: &str) -> Option<String> {
    report(lab, node)
        .l3
        .fib
        .into_iter()
        .find(|r| r.prefix.to_string() == prefix && r.source == d11_core::l3::RouteSource::Bgp)
        .and_then(|r| r.via.map(|v| v.to_string()))
}

fn which(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

const BIRD_CONF: &str = r#"
router id 198.18.1.2;
protocol device {}
protocol static own {
  ipv4;
  route 198.18.10.0/24 blackhole;
}
protocol kernel {
  ipv4 { import none; export where source = RTS_BGP; };
}
protocol bgp border {
  local 198.18.1.2 as 4200000001;
  neighbor 198.18.1.1 as 64600;
  hold time 9;
  connect retry time 5;
  ipv4 { import all; export where proto = "own"; };
}
"#;

const GOBGP_CONF: &str = r#"
[global.config]
  as = 65002
  router-id = "198.18.1.6"
  local-address-list = ["198.18.1.6"]

[[neighbors]]
  [neighbors.config]
    neighbor-address = "198.18.1.5"
    peer-as = 64600
  [neighbors.timers.config]
    hold-time = 9
    keepalive-interval = 3
    connect-retry = 5
    # After `gobgp neighbor reset` GoBGP stays Idle this long, closing
    # what it is offered (30 s by default).
    idle-hold-time-after-reset = 3
"#;

/// A child stopped as Ctrl-C stops it (SIGINT, then waited for) when the
/// guard goes, also when the test panics.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// `d11 exec LAB NODE -- ARGS` left running (the lab's teardown stops it).
fn spawn_in(lab: &Lab, node: &str, args: &[&str], log: &std::path::Path) -> Child {
    let mut a = vec!["exec", "--name", &lab.name, node, "--"];
    a.extend_from_slice(args);
    Command::new(d11_bin())
        .args(&a)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log).expect("a log"))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("d11 exec runs")
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn bird_and_gobgp_learn_the_cloud_prefix_announce_their_own_and_survive_flaps() {
    let _s = serial();
    require_root();
    assert!(
        which("bird") && which("gobgpd"),
        "bird (bird2) and gobgpd must be installed: scripts/lib.sh installs them"
    );
    let dir = Scratch::new("bgp-interop");
    let lab = Lab::up("bgp-interop.toml", "bgpi");
    let (bird_conf, gobgp_conf) = (dir.path("bird.conf"), dir.path("gobgpd.toml"));
    std::fs::write(&bird_conf, BIRD_CONF).unwrap();
    std::fs::write(&gobgp_conf, GOBGP_CONF).unwrap();
    let ctl = dir.path("bird.ctl");
    let ctl = ctl.to_string_lossy();
    let birdc = |args: &[&str]| {
        let mut a = vec!["birdc", "-s", &ctl];
        a.extend_from_slice(args);
        lab.sh("bird", &a)
    };
    let gobgp = |args: &[&str]| {
        let mut a = vec!["gobgp", "-u", "127.0.0.1", "-p", "50051"];
        a.extend_from_slice(args);
        lab.sh("gobgp", &a)
    };
    // Every wire, recorded from before the peers start to the end of the
    // flaps (stopped by SIGINT, as Ctrl-C stops it).
    let cap = dir.path("interop.pcapng");
    let capture = Background(
        Command::new(d11_bin())
            .args(["capture", "--name", &lab.name, "-w", &cap.to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("d11 capture runs"),
    );
    std::thread::sleep(Duration::from_millis(500));
    lab.sh(
        "bird",
        &["ip", "addr", "add", "198.18.10.1/32", "dev", "lo"],
    );
    lab.sh(
        "gobgp",
        &["ip", "addr", "add", "198.18.20.1/32", "dev", "lo"],
    );
    let pid = dir.path("bird.pid");
    lab.sh(
        "bird",
        &[
            "bird",
            "-c",
            &bird_conf.to_string_lossy(),
            "-s",
            &ctl,
            "-P",
            &pid.to_string_lossy(),
        ],
    );
    let mut gobgpd = spawn_in(
        &lab,
        "gobgp",
        &[
            "gobgpd",
            "-f",
            &gobgp_conf.to_string_lossy(),
            "-p",
            "--api-hosts",
            "127.0.0.1:50051",
        ],
        &dir.path("gobgpd.log"),
    );
    eventually(Duration::from_secs(30), "both sessions Established", || {
        states(&lab, "border") == [FsmState::Established, FsmState::Established]
    });
    eventually(Duration::from_secs(10), "GoBGP's API up", || {
        lab.exec(
            "gobgp",
            &[
                "gobgp",
                "-u",
                "127.0.0.1",
                "-p",
                "50051",
                "global",
                "rib",
                "add",
                "198.18.20.0/24",
            ],
        )
        .status
        .success()
    });

    // Each learned the cloud's prefix: AS_PATH 64600, next hop our address.
    eventually(
        Duration::from_secs(10),
        "BIRD holding 203.0.113.0/24",
        || birdc(&["show", "route", "203.0.113.0/24", "all"]).contains("BGP.as_path: 64600"),
    );
    let r = birdc(&["show", "route", "203.0.113.0/24", "all"]);
    assert!(r.contains("BGP.next_hop: 198.18.1.1"), "{r}");
    assert!(r.contains("BGP.origin: IGP"), "{r}");
    let rib: Value = serde_json::from_str(&gobgp(&["global", "rib", "-j"])).expect("gobgp's JSON");
    let attrs = rib["203.0.113.0/24"][0]["attrs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let attr = |t: u64| {
        attrs
            .iter()
            .find(|a| a["type"] == t)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        attr(2)["as_paths"][0]["asns"],
        serde_json::json!([64600]),
        "{attrs:?}"
    );
    assert_eq!(attr(3)["nexthop"], "198.18.1.5", "{attrs:?}");

    // Their prefixes are in our FIB and the shop reaches them.
    eventually(Duration::from_secs(10), "both prefixes installed", || {
        installed(&lab, "border", "198.18.10.0/24").as_deref() == Some("198.18.1.2")
            && installed(&lab, "border", "198.18.20.0/24").as_deref() == Some("198.18.1.6")
    });
    let rib = report(&lab, "border").rib.unwrap();
    let from_bird = rib
        .iter()
        .find(|r| r.prefix.to_string() == "198.18.10.0/24")
        .unwrap();
    assert_eq!(
        (from_bird.as_path.as_str(), from_bird.best),
        ("4200000001", true)
    );
    for ip in ["198.18.10.1", "198.18.20.1"] {
        let o = lab.exec("shop", &["ping", "-c", "2", "-W", "2", ip]);
        assert!(o.status.success(), "shop → {ip}: {}", text(&o));
    }

    // Route refresh (RFC 2918): BIRD keeps no Adj-RIB-In, so `reload in`
    // asks the border for its Adj-RIB-Out again (GoBGP keeps one and asks
    // nobody); BIRD keeps the route.
    let refreshes = || {
        report(&lab, "border").bgp.unwrap().counters[0]
            .counters
            .refreshes
    };
    birdc(&["reload", "in", "border"]);
    eventually(
        Duration::from_secs(10),
        "BIRD's ROUTE-REFRESH answered",
        || refreshes() >= 1,
    );
    assert!(birdc(&["show", "route", "203.0.113.0/24", "all"]).contains("BGP.as_path: 64600"));

    // Their side flaps: BIRD shuts the session down, then brings it back;
    // GoBGP resets it.
    birdc(&["disable", "border"]);
    eventually(Duration::from_secs(10), "BIRD's routes withdrawn", || {
        installed(&lab, "border", "198.18.10.0/24").is_none()
    });
    let n = &report(&lab, "border").bgp.unwrap().neighbors[0];
    assert_eq!(
        n.last_notification_received.as_deref(),
        Some("6/2 Cease / Administrative Shutdown")
    );
    birdc(&["enable", "border"]);
    gobgp(&["neighbor", "198.18.1.5", "reset"]);
    let established = |i: usize| {
        report(&lab, "border").bgp.unwrap().counters[i]
            .counters
            .established
    };
    // A generous deadline: a loaded CI machine once took longer than 30 s.
    let back = within(Duration::from_secs(90), || {
        states(&lab, "border") == [FsmState::Established, FsmState::Established]
            && established(0) >= 2
            && established(1) >= 2
            && installed(&lab, "border", "198.18.10.0/24").is_some()
            && installed(&lab, "border", "198.18.20.0/24").is_some()
    });
    assert!(
        back,
        "not both back after their flaps after 90 s:\n{}\n{}\n{}",
        text(&d11(&["show", "--name", &lab.name, "border", "bgp"])),
        birdc(&["show", "protocols", "all", "border"]),
        gobgp(&["neighbor"]),
    );

    // Our side flaps: the border's process dies; the supervisor restarts
    // it and both peers come back to it.
    let pid = node(&lab.status(), "border")["pid"]
        .as_u64()
        .expect("a pid");
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    eventually(
        Duration::from_secs(40),
        "the sessions back after the border restarted",
        || {
            node(&lab.status(), "border")["restarts"] == 1
                && states(&lab, "border") == [FsmState::Established, FsmState::Established]
                && installed(&lab, "border", "198.18.10.0/24").is_some()
                && installed(&lab, "border", "198.18.20.0/24").is_some()
        },
    );
    eventually(
        Duration::from_secs(20),
        "BIRD re-learning the cloud's prefix",
        || birdc(&["show", "route", "203.0.113.0/24", "all"]).contains("BGP.as_path: 64600"),
    );
    for ip in ["198.18.10.1", "198.18.20.1"] {
        let o = lab.exec("shop", &["ping", "-c", "2", "-W", "2", ip]);
        assert!(
            o.status.success(),
            "shop → {ip} after the flaps: {}",
            text(&o)
        );
    }

    // Every frame of the whole run decodes in tshark: the OPENs (BIRD's
    // with AS_TRANS and its 4-octet AS in the capability), UPDATEs,
    // KEEPALIVEs, ROUTE-REFRESHes and the NOTIFICATIONs of the flaps.
    drop(capture);
    let broken = broken_frames_whole_and_per_wire(&cap);
    assert!(broken.is_empty(), "tshark finds broken frames: {broken:?}");
    let types: std::collections::BTreeSet<String> = tshark_fields(&cap, "bgp", &["bgp.type"])
        .into_iter()
        .flatten()
        .flat_map(|t| t.split(',').map(str::to_string).collect::<Vec<_>>())
        .collect();
    let all: Vec<String> = ["1", "2", "3", "4", "5"].map(String::from).into();
    assert_eq!(
        types.into_iter().collect::<Vec<_>>(),
        all,
        "OPEN, UPDATE, NOTIFICATION, KEEPALIVE, ROUTE-REFRESH"
    );
    let as_trans = tshark_fields(
        &cap,
        "bgp.type == 1 && bgp.open.myas == 23456",
        &["bgp.cap.4as"],
    );
    assert!(
        as_trans.iter().flatten().any(|a| a.contains("4200000001")),
        "BIRD's OPEN: AS_TRANS and its AS in the capability: {as_trans:?}"
    );
    drop(lab);
    let _ = gobgpd.wait();
}

/// The best route to `prefix` in `router`'s Loc-RIB: (learned from, AS_PATH).
fn best(lab: &Lab, router: &str, prefix: &str) -> Option<(String, String)> {
    report(lab, router)
        .rib?
        .into_iter()
        .find(|r| r.best && r.prefix.to_string() == prefix)
        .map(|r| (r.from, r.as_path))
}

const VIA_C1: (&str, &str) = ("192.0.2.2", "64510 64600");
const VIA_C3: (&str, &str) = ("192.0.2.14", "64520 64600");

fn best_is(lab: &Lab, want: (&str, &str)) -> bool {
    best(lab, "a2", "203.0.113.0/24") == Some((want.0.into(), want.1.into()))
}

/// Places an order with `d11 trace --json`; the wires its request crossed.
fn traced_order(lab: &Lab) -> Vec<String> {
    let o = d11(&["trace", "--name", &lab.name, "--json"]);
    assert!(o.status.success(), "d11 trace: {}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("trace --json");
    assert_eq!(v["ok"], true, "every row as the topology implies");
    v["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["wire"].as_str().unwrap().to_string())
        .collect()
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn the_preferred_path_cut_fails_over_to_c3_at_the_hold_time_and_comes_back() {
    let _s = serial();
    require_root();
    let lab = Lab::up("double11.toml", "bgpcut");
    assert!(
        best_is(&lab, VIA_C1),
        "{:?}",
        best(&lab, "a2", "203.0.113.0/24")
    );
    let wires = traced_order(&lab);
    assert!(wires.contains(&"a2:a2c1".to_string()), "{wires:?}");
    let o = d11(&["impair", "--name", &lab.name, "c1--c2", "loss=100%"]);
    assert!(o.status.success(), "{}", text(&o));
    let cut = Instant::now();
    // The hold timers (9 s) expire at both ends; c1 and c2 withdraw; a2 and
    // the border choose c3.
    eventually(Duration::from_secs(30), "a2 choosing c3", || {
        best_is(&lab, VIA_C3)
    });
    // A figure for the log (the bench measures it: `d11 bench bgp`).
    eprintln!("a2 on c3 {:?} after the cut (hold time 9 s)", cut.elapsed());
    eventually(Duration::from_secs(10), "the border choosing c3", || {
        best(&lab, "border", "198.51.100.128/25").is_some_and(|b| b.0 == "192.0.2.17")
    });
    let c1 = report(&lab, "c1").bgp.unwrap();
    let to_c2 = c1.neighbors.iter().find(|n| n.remote_as == 64510).unwrap();
    assert_eq!(
        to_c2.last_notification_sent.as_deref(),
        Some("4/0 Hold Timer Expired")
    );
    let wires = traced_order(&lab);
    assert!(
        wires.contains(&"a2:a2c3".to_string()) && wires.contains(&"c3:c3bd".to_string()),
        "the order over c3: {wires:?}"
    );
    // The wire is back: the iBGP session returns and c1 is best again.
    let o = d11(&["impair", "--name", &lab.name, "c1--c2", "off"]);
    assert!(o.status.success(), "{}", text(&o));
    let back = Instant::now();
    eventually(Duration::from_secs(30), "a2 back on c1", || {
        best_is(&lab, VIA_C1)
    });
    eprintln!("a2 back on c1 {:?} after the wire healed", back.elapsed());
    eventually(Duration::from_secs(10), "the border back on c2", || {
        best(&lab, "border", "198.51.100.128/25").is_some_and(|b| b.0 == "192.0.2.9")
    });
    let wires = traced_order(&lab);
    assert!(wires.contains(&"a2:a2c1".to_string()), "{wires:?}");
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn c2_frozen_fails_over_and_c2_killed_comes_back_by_itself() {
    let _s = serial();
    require_root();
    let lab = Lab::up("double11.toml", "bgpc2");
    // The carrier's resolver warm, as a carrier's is: the lab's one root
    // server sits behind c2, and the shop's name must still resolve (from
    // the cached delegations) while c2 is frozen.
    lab.sh("ue", &["dig", "+short", "www.geektime.com"]);
    let pid = node(&lab.status(), "c2")["pid"]
        .as_u64()
        .expect("c2's pid")
        .to_string();
    // Frozen: no RST, no NOTIFICATION, silence until the hold timers expire.
    let _ = Command::new("kill").args(["-STOP", &pid]).status();
    eventually(
        Duration::from_secs(30),
        "a2 choosing c3 while c2 is frozen",
        || best_is(&lab, VIA_C3),
    );
    let wires = traced_order(&lab);
    assert!(wires.contains(&"a2:a2c3".to_string()), "{wires:?}");
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    eventually(
        Duration::from_secs(40),
        "a2 back on c1 after c2 woke",
        || best_is(&lab, VIA_C1),
    );
    // Killed: the supervisor restarts it; its neighbours notice (a reset on
    // their next keepalive, or the hold timer) and take it back.
    let _ = Command::new("kill").args(["-9", &pid]).status();
    eventually(
        Duration::from_secs(40),
        "c2 restarted and its sessions back",
        || {
            let s = lab.status();
            let c2 = node(&s, "c2");
            c2["restarts"] == 1
                && c2["state"] == "running"
                // c1, the border, region north's border-n and its peer c3.
                && states(&lab, "c2") == [FsmState::Established; 4]
                && best_is(&lab, VIA_C1)
        },
    );
    let c1 = report(&lab, "c1").bgp.unwrap();
    let n = c1
        .counters
        .iter()
        .find(|c| c.address.to_string() == "192.0.2.6")
        .unwrap();
    assert!(
        n.counters.established >= 3,
        "up, frozen and back, killed and back: {n:?}"
    );
    let wires = traced_order(&lab);
    assert!(wires.contains(&"a2:a2c1".to_string()), "{wires:?}");
}
