//! End-to-end tests of wire impairments (`docs/impair.md`) in real
//! namespaces, on the smallest lab with an element next to kernel hosts
//! (netns/pair.toml: left ──TAP── r ──TAP── right). Root only; no netem.

mod support;

use std::collections::BTreeSet;
use support::*;

const RIGHT: &str = "10.2.0.2";

/// A lab named `imp-TAG-PID`, taken down on drop like [`Lab::up`]'s.
fn lab_up(tag: &str) -> Lab {
    let name = format!("imp-{tag}-{}", std::process::id() % 100_000);
    Lab::up_named(&name, &topology("pair.toml"))
}

fn impair(lab: &Lab, args: &[&str]) -> std::process::Output {
    let mut a = vec!["impair", "--name", &lab.name];
    a.extend_from_slice(args);
    d11(&a)
}

fn set(lab: &Lab, args: &[&str]) {
    let o = impair(lab, args);
    assert!(o.status.success(), "d11 impair {args:?}:\n{}", text(&o));
}

/// `ping -c N -i 0.01` from left to right: (loss %, min RTT ms, seqs answered).
fn ping(lab: &Lab, n: u32) -> (f64, f64, BTreeSet<u32>) {
    let o = lab.exec(
        "left",
        &["ping", "-c", &n.to_string(), "-i", "0.01", "-W", "1", RIGHT],
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let loss = out
        .split(", ")
        .find_map(|s| s.strip_suffix("% packet loss"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no loss figure in:\n{out}"));
    let min = out
        .lines()
        .find_map(|l| l.strip_prefix("rtt min/avg/max/mdev = "))
        .and_then(|l| l.split('/').next()?.parse().ok())
        .unwrap_or(f64::NAN);
    let seqs = out
        .lines()
        .filter_map(|l| l.split("icmp_seq=").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    (loss, min, seqs)
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn loss_off_delay_and_the_same_seed_on_a_hosts_wire() {
    let _s = serial();
    require_root();
    let lab = lab_up("loss");
    // ARP settled first, so the impaired direction carries only the pings.
    assert_eq!(ping(&lab, 3).0, 0.0);

    // left → r is applied by r on receive (the sender is a kernel host).
    set(&lab, &["r:left", "loss=20%", "--dir", "a-to-b"]);
    let (loss, _, _) = ping(&lab, 200);
    assert!((10.0..=30.0).contains(&loss), "loss {loss}% with loss=20%");
    let st = lab.status();
    let dropped = drops(&st, "r", "left")["impair_loss"].as_u64().unwrap_or(0);
    assert!(dropped > 0, "r:left counts impair_loss: {st}");

    set(&lab, &["left--r", "off"]);
    assert_eq!(ping(&lab, 100).0, 0.0, "off is off");

    // Both directions of r:right (r sends, right receives; r applies both).
    set(&lab, &["r:right", "delay=50ms"]);
    let (loss, min, _) = ping(&lab, 5);
    assert_eq!(loss, 0.0);
    assert!(min >= 100.0, "min RTT {min} ms with 50 ms each way");
    let shown = text(&impair(&lab, &["--json"]));
    assert!(shown.contains("delay=50ms"), "{shown}");
    set(&lab, &["r:right", "off"]);

    // The same seed loses the same pings; another seed other ones.
    let lost = |seed: &str| {
        set(&lab, &["r:left", "loss=20%", seed, "--dir", "a-to-b"]);
        let (_, _, got) = ping(&lab, 100);
        set(&lab, &["r:left", "off"]);
        (1..=100).filter(|s| !got.contains(s)).collect::<Vec<u32>>()
    };
    let (a, b, c) = (lost("seed=42"), lost("seed=42"), lost("seed=43"));
    assert!(!a.is_empty());
    assert_eq!(a, b, "seed 42 twice");
    assert_ne!(a, c, "seed 43");

    // Clear one-line errors.
    for (args, want) in [
        (
            &["r:left", "lose=5%"][..],
            "bad impairment spec: lose: unknown impairment",
        ),
        (&["r:nope", "loss=5%"][..], "no wire \"r:nope\""),
        (
            &["r:left", "loss=200%"][..],
            "loss: \"200%\" is not between",
        ),
    ] {
        let o = impair(&lab, args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success() && err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn tcp_completes_through_five_percent_loss_with_retransmissions() {
    let _s = serial();
    require_root();
    let lab = lab_up("tcp");
    let dir = Scratch::new("impair-tcp");
    lab.sh("right", &["iperf3", "-s", "-1", "-D", "-B", RIGHT]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    set(&lab, &["r:left", "loss=5%"]);
    let file = dir.path("tcp.pcapng");
    let o = lab.capture(
        &file,
        "left",
        &[
            "iperf3",
            "-c",
            RIGHT,
            "-n",
            "2M",
            "--connect-timeout",
            "3000",
        ],
    );
    assert!(o.status.success(), "iperf3 under 5% loss:\n{}", text(&o));
    // One wire only: the same segment seen on the next wire would look to
    // Wireshark's analysis like a retransmission of itself.
    let left = dir.path("left.pcapng");
    let split = std::process::Command::new("tshark")
        .args([
            "-r",
            &file.to_string_lossy(),
            "-Y",
            "frame.interface_name == \"left:eth0\"",
        ])
        .args(["-w", &left.to_string_lossy()])
        .output()
        .expect("tshark");
    assert!(split.status.success(), "{}", text(&split));
    let retx = tshark_fields(&left, "tcp.analysis.retransmission", &["frame.number"]);
    assert!(!retx.is_empty(), "no retransmission in the capture");
    let st = lab.status();
    let lost = drops(&st, "r", "left")["impair_loss"].as_u64().unwrap_or(0);
    eprintln!(
        "5% loss: {} retransmitted frames in the capture, r:left impair_loss={lost}",
        retx.len()
    );
    assert!(lost > 0);
}
