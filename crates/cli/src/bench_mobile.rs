//! `d11 bench mobile`: what the mobile core costs.
//!
//! Two labs of the same namespaces — ue, enb, sgw, pgw, server — are built
//! one after the other in this run: the mobile core itself, the UE's packets
//! in GTP-U from the enb to the sgw and on to the pgw, NATed there
//! (`netns/bench-mobile.toml`), and the same chain of `null` elements
//! (`bench-mobile-null.toml`, the driver's own cost). Each gets an iperf3 TCP
//! run and a 64-byte UDP packet-rate run from ue to server, then a run at a
//! fixed load that compares CPU per frame position by position (enb with
//! the first null, sgw with the second, pgw with the third). The two labs
//! alternate for `--rounds` rounds, and every figure is the median of its
//! rounds, every ratio the median of the rounds' ratios, so a burst of other
//! work on the machine moves one round, not the result. The report adds
//! peak RSS per element, the elements alone without I/O, and the PGW's NAT
//! table at 1 and 100,000 entries.

use crate::bench::{self, median, LabGuard};
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Options of `d11 bench mobile`.
#[derive(Debug, clap::Args)]
pub struct MobileArgs {
    /// Seconds of each iperf3 run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// Rounds of null then mobile; each ratio is the median of the rounds'
    /// ratios (a mobile lab against the null lab run just before it).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Directory holding the bench-mobile*.toml topologies.
    #[arg(long, default_value = "netns")]
    pub topologies: PathBuf,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The forwarding positions compared between the mobile and null labs, in
/// path order.
const POSITIONS: [&str; 3] = ["enb", "sgw", "pgw"];

/// The per-frame goal of the issue: each mobile element ≤ 1.3× a null one.
const GOAL: f64 = 1.3;

struct Variant {
    name: &'static str,
    file: &'static str,
}

const VARIANTS: [Variant; 2] = [
    Variant {
        name: "null",
        file: "bench-mobile-null.toml",
    },
    Variant {
        name: "mobile",
        file: "bench-mobile.toml",
    },
];

pub fn mobile(args: &MobileArgs) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the d11 binary")?;
    let mut rounds = vec![];
    for round in 1..=args.rounds.max(1) {
        let mut results = serde_json::Map::new();
        for v in &VARIANTS {
            let file = args.topologies.join(v.file);
            eprintln!("bench: round {round}, {} ({})", v.name, file.display());
            let r = run_variant(&exe, v, &file, args.seconds)
                .with_context(|| format!("variant {}", v.name))?;
            results.insert(v.name.to_string(), r);
        }
        rounds.push(results);
    }
    let mut report = summarise(&rounds);
    report["mobile_core"] = bench::mobile_core(2_000_000);
    print_report(&report);
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

fn run_variant(exe: &Path, v: &Variant, topology: &Path, seconds: u32) -> Result<Value> {
    let text = std::fs::read_to_string(topology)
        .with_context(|| format!("reading {}", topology.display()))?;
    let server_ip =
        bench::server_address(&text).context("the bench topology has no server address")?;
    let ends = bench::Ends {
        client: "ue",
        server: "server",
        server_ip: &server_ip,
    };
    let (lab, _) = LabGuard::up(exe, topology, &format!("bench-mobile-{}", v.name))?;
    lab.warm_up("ue", &server_ip)?;
    let secs = seconds.to_string();
    let tcp = bench::iperf(&lab, &ends, &["-t", &secs])?;
    let bps = tcp["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 TCP gave no bits_per_second")?;
    // 18 bytes of UDP payload: 14 Ethernet + 20 IP + 8 UDP + 18 = 60 bytes, 64 with the FCS.
    let udp = bench::iperf(&lab, &ends, &["-u", "-b", "0", "-l", "18", "-t", &secs])?;
    // CPU per frame at one fixed offered load that both variants carry
    // without loss, so batching per wakeup is alike in both.
    let before = bench::element_work(&lab.name)?;
    let fixed = bench::iperf(
        &lab,
        &ends,
        &["-u", "-b", bench::FIXED_RATE_BITS, "-l", "18", "-t", &secs],
    )?;
    let after = bench::element_work(&lab.name)?;
    let mut per_node = serde_json::Map::new();
    for (node, c1, f1) in &after {
        let Some((_, c0, f0)) = before.iter().find(|(n, _, _)| n == node) else {
            continue;
        };
        let (cpu, frames) = (c1.saturating_sub(*c0), f1.saturating_sub(*f0));
        per_node.insert(
            node.clone(),
            json!({ "cpu_ns": cpu, "rx_frames": frames,
                    "ns_per_frame": (frames > 0).then(|| cpu as f64 / frames as f64) }),
        );
    }
    let (packets, lost, secs_f) = udp_sums(&udp, seconds);
    let (fixed_packets, fixed_lost, _) = udp_sums(&fixed, seconds);
    Ok(json!({
        "tcp_mbit_s": bps / 1e6,
        "udp64_sent_pps": packets / secs_f,
        "udp64_received_pps": (packets - lost).max(0.0) / secs_f,
        "udp64_loss": if packets > 0.0 { lost / packets } else { 0.0 },
        "fixed_load_loss": if fixed_packets > 0.0 { fixed_lost / fixed_packets } else { 0.0 },
        "fixed_load": per_node,
        "peak_rss_kib": bench::peak_rss(&lab.name)?,
    }))
}

/// Datagrams sent, datagrams lost and seconds of an iperf3 UDP run.
fn udp_sums(run: &Value, seconds: u32) -> (f64, f64, f64) {
    let sum = &run["end"]["sum"];
    (
        sum["packets"].as_f64().unwrap_or(0.0),
        sum["lost_packets"].as_f64().unwrap_or(0.0),
        sum["seconds"]
            .as_f64()
            .unwrap_or(f64::from(seconds))
            .max(0.001),
    )
}

/// The median of `v` (the mean of the middle two for an even count); NaN
/// when empty.
fn summarise(rounds: &[serde_json::Map<String, Value>]) -> Value {
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    let f = |r: &Value, k: &str| r[k].as_f64().unwrap_or(0.0);
    let ns = |r: &Value, node: &str| {
        r["fixed_load"][node]["ns_per_frame"]
            .as_f64()
            .unwrap_or(0.0)
    };
    // The whole chain: CPU of the three positions over the frames they received.
    let chain = |r: &Value| {
        let (mut cpu, mut frames) = (0u64, 0u64);
        for node in POSITIONS {
            cpu += r["fixed_load"][node]["cpu_ns"].as_u64().unwrap_or(0);
            frames += r["fixed_load"][node]["rx_frames"].as_u64().unwrap_or(0);
        }
        if frames > 0 {
            cpu as f64 / frames as f64
        } else {
            0.0
        }
    };
    // Each round's ratio of mobile to null, then the median and the list.
    let paired = |each: &dyn Fn(&Value, &Value) -> f64| {
        let list: Vec<f64> = rounds
            .iter()
            .map(|r| each(&r["mobile"], &r["null"]))
            .collect();
        json!({ "median": median(list.clone()), "rounds": list })
    };
    let mut variants = serde_json::Map::new();
    for v in VARIANTS {
        let runs: Vec<&Value> = rounds.iter().filter_map(|r| r.get(v.name)).collect();
        let med = |k: &str| median(runs.iter().map(|r| f(r, k)).collect());
        let mut fixed = serde_json::Map::new();
        let mut rss = serde_json::Map::new();
        for node in POSITIONS {
            fixed.insert(
                node.to_string(),
                json!({ "ns_per_frame": median(runs.iter().map(|r| ns(r, node)).collect()) }),
            );
            let peak = runs
                .iter()
                .filter_map(|r| r["peak_rss_kib"][node].as_u64())
                .max();
            rss.insert(node.to_string(), json!(peak));
        }
        variants.insert(
            v.name.to_string(),
            json!({
                "tcp_mbit_s": med("tcp_mbit_s"),
                "udp64_sent_pps": med("udp64_sent_pps"),
                "udp64_received_pps": med("udp64_received_pps"),
                "udp64_loss": med("udp64_loss"),
                "fixed_load_loss": med("fixed_load_loss"),
                "fixed_load": fixed,
                "chain_ns_per_frame": median(runs.iter().map(|r| chain(r)).collect()),
                "peak_rss_kib": rss,
                "rounds": runs,
            }),
        );
    }
    let mut per_position = serde_json::Map::new();
    for node in POSITIONS {
        per_position.insert(
            node.to_string(),
            paired(&|m, n| ratio(ns(m, node), ns(n, node))),
        );
    }
    json!({
        "rounds": rounds.len(),
        "variants": variants,
        "ratios": {
            "mobile_vs_null_cpu_per_frame": per_position,
            "mobile_vs_null_cpu_per_frame_chain": paired(&|m, n| ratio(chain(m), chain(n))),
            "mobile_vs_null_cost_per_frame_udp64": paired(&|m, n| ratio(f(n, "udp64_received_pps"), f(m, "udp64_received_pps"))),
            "mobile_vs_null_cost_tcp": paired(&|m, n| ratio(f(n, "tcp_mbit_s"), f(m, "tcp_mbit_s"))),
        },
        "goals": { "mobile_vs_null_cpu_per_frame": GOAL },
    })
}

fn print_report(r: &Value) {
    let num = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let list = |v: &Value| {
        let l: Vec<String> = v["rounds"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| format!("{:.2}", num(x)))
            .collect();
        l.join(" ")
    };
    println!(
        "\nmedians of {} rounds (null, then mobile, each round)",
        r["rounds"]
    );
    println!(
        "{:<8} {:>12} {:>14} {:>14} {:>7}",
        "variant", "TCP Mbit/s", "UDP64 sent/s", "UDP64 rcvd/s", "loss"
    );
    for name in ["null", "mobile"] {
        let v = &r["variants"][name];
        println!(
            "{:<8} {:>12.0} {:>14.0} {:>14.0} {:>6.1}%",
            name,
            num(&v["tcp_mbit_s"]),
            num(&v["udp64_sent_pps"]),
            num(&v["udp64_received_pps"]),
            100.0 * num(&v["udp64_loss"]),
        );
    }
    println!(
        "\nelement CPU ns/frame at 20k frames/s (64 B UDP ue → server), per position \
         (loss: null {:.1}%, mobile {:.1}%); peak RSS:",
        100.0 * num(&r["variants"]["null"]["fixed_load_loss"]),
        100.0 * num(&r["variants"]["mobile"]["fixed_load_loss"]),
    );
    println!(
        "  {:<8} {:>7} {:>7} {:>7}  {:<16} {:>9} {:>9}",
        "position", "null", "mobile", "ratio", "(each round)", "RSS null", "RSS mob."
    );
    let q = &r["ratios"];
    for node in POSITIONS {
        let cell = |v: &str| num(&r["variants"][v]["fixed_load"][node]["ns_per_frame"]);
        let rss = |v: &str| num(&r["variants"][v]["peak_rss_kib"][node]) / 1024.0;
        let ratio = &q["mobile_vs_null_cpu_per_frame"][node];
        println!(
            "  {:<8} {:>7.0} {:>7.0} {:>6.2}x  {:<16} {:>5.1} MiB {:>5.1} MiB{}",
            node,
            cell("null"),
            cell("mobile"),
            num(&ratio["median"]),
            list(ratio),
            rss("null"),
            rss("mobile"),
            if num(&ratio["median"]) <= GOAL {
                ""
            } else {
                "  over the goal"
            },
        );
    }
    println!();
    for (key, what) in [
        (
            "mobile_vs_null_cpu_per_frame_chain",
            "element CPU per frame at 20k frames/s, enb+sgw+pgw, mobile / null  (goal per element <= 1.3x)",
        ),
        (
            "mobile_vs_null_cost_per_frame_udp64",
            "UDP 64 B frame cost, mobile / null   (from received rates)",
        ),
        ("mobile_vs_null_cost_tcp", "TCP cost, mobile / null"),
    ] {
        println!(
            "{:>6.2}x  {what}; rounds {}",
            num(&q[key]["median"]),
            list(&q[key])
        );
    }
    let m = &r["mobile_core"];
    println!(
        "elements alone (no I/O), ns/frame: null {:.0}; uplink enb {:.0}, sgw {:.0}, pgw {:.0}; \
         downlink pgw {:.0}, sgw {:.0}, enb {:.0}",
        num(&m["null_ns_per_frame"]),
        num(&m["enb_uplink_ns_per_frame"]),
        num(&m["sgw_uplink_ns_per_frame"]),
        num(&m["pgw_uplink_ns_per_frame"]),
        num(&m["pgw_downlink_ns_per_frame"]),
        num(&m["sgw_downlink_ns_per_frame"]),
        num(&m["enb_downlink_ns_per_frame"]),
    );
    println!(
        "pgw NAT table (d11_core::nat::Nat) translate of an established flow: {:.0} ns at 1 entry, {:.0} ns at 100k entries",
        num(&m["nat_translate_ns_1_entry"]),
        num(&m["nat_translate_ns_100k_entries"]),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(file: &str) -> toml::Value {
        let path = format!("{}/../../netns/{file}", env!("CARGO_MANIFEST_DIR"));
        toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// (name, kind, port names) of every node, and the wires: all but the roles.
    type Shape = (Vec<(String, String, Vec<String>)>, Vec<String>);

    fn shape(t: &toml::Value) -> Shape {
        let nodes = t["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                let ports = n["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["name"].as_str().unwrap().to_string())
                    .collect();
                (
                    n["name"].as_str().unwrap().to_string(),
                    n["kind"].as_str().unwrap().to_string(),
                    ports,
                )
            })
            .collect();
        let wires = t["wires"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| format!("{}-{}", w["a"].as_str().unwrap(), w["b"].as_str().unwrap()))
            .collect();
        (nodes, wires)
    }

    #[test]
    fn the_null_lab_has_the_mobile_labs_namespaces_and_wires_with_null_in_each_position() {
        let (mobile, null) = (
            topology("bench-mobile.toml"),
            topology("bench-mobile-null.toml"),
        );
        assert_eq!(shape(&mobile), shape(&null));
        for node in POSITIONS {
            let role = |t: &toml::Value| {
                t["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|n| n["name"].as_str() == Some(node))
                    .and_then(|n| n["role"].as_str())
                    .map(str::to_string)
            };
            assert_eq!(role(&mobile).as_deref(), Some(node));
            assert_eq!(role(&null).as_deref(), Some("null"));
        }
        // The enb hands the UE the pgw's S5 MAC for its gateway, as in double11.toml.
        let enb = &mobile["nodes"].as_array().unwrap()[1];
        assert_eq!(
            enb["config"]["gateway_mac"].as_str(),
            Some(d11_lab::default_mac("pgw", "s5").to_string().as_str())
        );
    }

    #[test]
    fn each_ratio_is_the_median_of_the_rounds_ratios() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
        let round = |null: u64, mobile: u64| {
            let run = |cpu: u64| {
                let node =
                    json!({ "cpu_ns": cpu * 100, "rx_frames": 100, "ns_per_frame": cpu as f64 });
                json!({ "tcp_mbit_s": 100.0, "udp64_received_pps": 1000.0,
                        "fixed_load": { "enb": node, "sgw": node, "pgw": node },
                        "peak_rss_kib": { "enb": cpu, "sgw": cpu, "pgw": cpu } })
            };
            let mut m = serde_json::Map::new();
            m.insert("null".into(), run(null));
            m.insert("mobile".into(), run(mobile));
            m
        };
        // A noisy second round: its null is slow, so its mobile looks cheap.
        let rounds = [round(1000, 1100), round(3000, 1200), round(1000, 1150)];
        let r = summarise(&rounds);
        let enb = &r["ratios"]["mobile_vs_null_cpu_per_frame"]["enb"];
        assert_eq!(enb["median"].as_f64(), Some(1.1));
        assert_eq!(enb["rounds"].as_array().unwrap().len(), 3);
        assert_eq!(
            r["ratios"]["mobile_vs_null_cpu_per_frame_chain"]["median"].as_f64(),
            Some(1.1)
        );
        assert_eq!(
            r["variants"]["null"]["fixed_load"]["sgw"]["ns_per_frame"].as_f64(),
            Some(1000.0)
        );
        assert_eq!(
            r["variants"]["null"]["peak_rss_kib"]["pgw"].as_u64(),
            Some(3000)
        );
    }

    #[test]
    fn the_server_is_reached_on_the_ues_subnet_only_in_the_null_lab() {
        let addr = |file: &str| {
            let text = std::fs::read_to_string(format!(
                "{}/../../netns/{file}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap();
            bench::server_address(&text)
                .unwrap()
                .parse::<std::net::Ipv4Addr>()
                .unwrap()
        };
        let ue_net = |a: std::net::Ipv4Addr| a.octets()[..2] == [10, 45];
        // Behind the pgw's SGi in a documentation range (RFC 5737)…
        assert_eq!(addr("bench-mobile.toml").octets()[..3], [198, 51, 100]);
        // …and beside the UE when nothing routes.
        assert!(ue_net(addr("bench-mobile-null.toml")));
    }
}
