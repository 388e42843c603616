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

use crate::cores::{self, MobileCore};
use crate::lab::{self, LabGuard, NodeLoad, Throughput};
use crate::{cell, finite, median, ratio, RoundRatio};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Options of `d11 bench mobile`.
#[derive(Debug, Clone, clap::Args)]
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
pub const POSITIONS: [&str; 3] = ["enb", "sgw", "pgw"];

/// The per-frame goal of the issue: each mobile element ≤ 1.3× a null one.
const GOAL: f64 = 1.3;

/// One lab in one round.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Run {
    #[serde(flatten)]
    pub rate: Throughput,
    pub fixed_load_loss: Option<f64>,
    pub fixed_load: BTreeMap<String, NodeLoad>,
    pub peak_rss_kib: BTreeMap<String, Option<u64>>,
}

impl Run {
    fn ns(&self, node: &str) -> Option<f64> {
        self.fixed_load.get(node).and_then(|l| l.ns_per_frame)
    }
    /// The whole chain: CPU of the three positions over the frames they received.
    fn chain(&self) -> Option<f64> {
        NodeLoad::chain(&self.fixed_load, &POSITIONS)
    }
}

/// One round: the null lab, then the mobile lab.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Round {
    pub null: Run,
    pub mobile: Run,
}

/// A position's CPU per frame at the fixed load (median of the rounds).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PerFrame {
    pub ns_per_frame: Option<f64>,
}

/// A lab's figures, medians of the rounds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Variant {
    #[serde(flatten)]
    pub rate: Throughput,
    pub fixed_load_loss: Option<f64>,
    pub fixed_load: BTreeMap<String, PerFrame>,
    pub chain_ns_per_frame: Option<f64>,
    /// The largest of the rounds, KiB.
    pub peak_rss_kib: BTreeMap<String, Option<u64>>,
    pub rounds: Vec<Run>,
}

impl Variant {
    pub fn ns_per_frame(&self, node: &str) -> Option<f64> {
        self.fixed_load.get(node).and_then(|l| l.ns_per_frame)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Variants {
    pub null: Variant,
    pub mobile: Variant,
}

/// mobile ÷ null, each the median of the rounds' ratios; the costs are
/// null's rate ÷ mobile's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Ratios {
    pub mobile_vs_null_cpu_per_frame: BTreeMap<String, RoundRatio>,
    pub mobile_vs_null_cpu_per_frame_chain: RoundRatio,
    pub mobile_vs_null_cost_per_frame_udp64: RoundRatio,
    pub mobile_vs_null_cost_tcp: RoundRatio,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Goals {
    pub mobile_vs_null_cpu_per_frame: f64,
}

impl Default for Goals {
    fn default() -> Goals {
        Goals {
            mobile_vs_null_cpu_per_frame: GOAL,
        }
    }
}

/// What `d11 bench mobile` measures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MobileReport {
    pub rounds: usize,
    pub variants: Variants,
    pub ratios: Ratios,
    pub goals: Goals,
    pub mobile_core: MobileCore,
}

/// `d11 bench mobile`.
pub fn mobile(args: &MobileArgs) -> Result<()> {
    let exe = lab::d11_exe()?;
    let mut rounds = vec![];
    for round in 1..=args.rounds.max(1) {
        let run = |name: &str, file: &str| -> Result<Run> {
            let file = args.topologies.join(file);
            eprintln!("bench: round {round}, {name} ({})", file.display());
            run_variant(&exe, name, &file, args.seconds).with_context(|| format!("variant {name}"))
        };
        rounds.push(Round {
            null: run("null", "bench-mobile-null.toml")?,
            mobile: run("mobile", "bench-mobile.toml")?,
        });
    }
    let mut report = summarise(&rounds);
    report.mobile_core = cores::mobile_core(2_000_000);
    print_report(&report);
    crate::write_json(args.json.as_deref(), &report)
}

fn run_variant(exe: &Path, name: &str, topology: &Path, seconds: u32) -> Result<Run> {
    let server_ip = lab::server_address(topology)?;
    let ends = lab::Ends {
        client: "ue",
        server: "server",
        server_ip: &server_ip,
    };
    let (lab, _) = LabGuard::up(exe, topology, &format!("bench-mobile-{name}"))?;
    lab.warm_up("ue", &server_ip)?;
    let rate = Throughput::measure(&lab, &ends, seconds)?;
    let secs = seconds.to_string();
    // CPU per frame at one fixed offered load that both variants carry
    // without loss, so batching per wakeup is alike in both.
    let before = lab::element_work(&lab.name)?;
    let fixed = lab::iperf(
        &lab,
        &ends,
        &["-u", "-b", lab::FIXED_RATE_BITS, "-l", "18", "-t", &secs],
    )?
    .udp(seconds);
    let after = lab::element_work(&lab.name)?;
    Ok(Run {
        rate,
        fixed_load_loss: Some(fixed.loss()),
        fixed_load: NodeLoad::between(&before, &after),
        peak_rss_kib: lab::peak_rss(&lab.name)?,
    })
}

fn summarise(rounds: &[Round]) -> MobileReport {
    let nan = |x: Option<f64>| x.unwrap_or(f64::NAN);
    // Each round's ratio of mobile to null, then the median and the list.
    let paired = |each: &dyn Fn(&Run, &Run) -> Option<f64>| {
        RoundRatio::of(
            rounds
                .iter()
                .map(|r| nan(each(&r.mobile, &r.null)))
                .collect(),
        )
    };
    let variant = |runs: Vec<&Run>| {
        let med = |f: &dyn Fn(&Run) -> Option<f64>| {
            finite(median(runs.iter().map(|r| nan(f(r))).collect()))
        };
        let mut fixed = BTreeMap::new();
        let mut rss = BTreeMap::new();
        for node in POSITIONS {
            fixed.insert(
                node.to_string(),
                PerFrame {
                    ns_per_frame: med(&|r| r.ns(node)),
                },
            );
            let peak = runs
                .iter()
                .filter_map(|r| r.peak_rss_kib.get(node).copied().flatten())
                .max();
            rss.insert(node.to_string(), peak);
        }
        Variant {
            rate: Throughput {
                tcp_mbit_s: med(&|r| r.rate.tcp_mbit_s),
                udp64_sent_pps: med(&|r| r.rate.udp64_sent_pps),
                udp64_received_pps: med(&|r| r.rate.udp64_received_pps),
                udp64_loss: med(&|r| r.rate.udp64_loss),
                cpu_ns_per_frame_flood: med(&|r| r.rate.cpu_ns_per_frame_flood),
            },
            fixed_load_loss: med(&|r| r.fixed_load_loss),
            fixed_load: fixed,
            chain_ns_per_frame: med(&|r| r.chain()),
            peak_rss_kib: rss,
            rounds: runs.into_iter().cloned().collect(),
        }
    };
    let ratios = Ratios {
        mobile_vs_null_cpu_per_frame: POSITIONS
            .iter()
            .map(|node| {
                (
                    node.to_string(),
                    paired(&|m, n| ratio(m.ns(node), n.ns(node))),
                )
            })
            .collect(),
        mobile_vs_null_cpu_per_frame_chain: paired(&|m, n| ratio(m.chain(), n.chain())),
        mobile_vs_null_cost_per_frame_udp64: paired(&|m, n| {
            ratio(n.rate.udp64_received_pps, m.rate.udp64_received_pps)
        }),
        mobile_vs_null_cost_tcp: paired(&|m, n| ratio(n.rate.tcp_mbit_s, m.rate.tcp_mbit_s)),
    };
    MobileReport {
        rounds: rounds.len(),
        variants: Variants {
            null: variant(rounds.iter().map(|r| &r.null).collect()),
            mobile: variant(rounds.iter().map(|r| &r.mobile).collect()),
        },
        ratios,
        goals: Goals::default(),
        mobile_core: MobileCore::default(),
    }
}

fn print_report(r: &MobileReport) {
    println!(
        "\nmedians of {} rounds (null, then mobile, each round)",
        r.rounds
    );
    println!("{}", Throughput::header());
    let v = &r.variants;
    for (name, v) in [("null", &v.null), ("mobile", &v.mobile)] {
        println!("{}", v.rate.line(name));
    }
    println!(
        "\nelement CPU ns/frame at 20k frames/s (64 B UDP ue → server), per position \
         (loss: null {}%, mobile {}%); peak RSS:",
        cell(v.null.fixed_load_loss.map(|l| 100.0 * l), 1),
        cell(v.mobile.fixed_load_loss.map(|l| 100.0 * l), 1),
    );
    println!(
        "  {:<8} {:>7} {:>7} {:>7}  {:<16} {:>9} {:>9}",
        "position", "null", "mobile", "ratio", "(each round)", "RSS null", "RSS mob."
    );
    let q = &r.ratios;
    let none = RoundRatio::default();
    for node in POSITIONS {
        let rss = |v: &Variant| {
            cell(
                v.peak_rss_kib
                    .get(node)
                    .copied()
                    .flatten()
                    .map(|k| k as f64 / 1024.0),
                1,
            )
        };
        let ratio = q.mobile_vs_null_cpu_per_frame.get(node).unwrap_or(&none);
        println!(
            "  {:<8} {:>7} {:>7} {:>6}x  {:<16} {:>5} MiB {:>5} MiB{}",
            node,
            cell(v.null.ns_per_frame(node), 0),
            cell(v.mobile.ns_per_frame(node), 0),
            cell(ratio.median, 2),
            ratio.list(),
            rss(&v.null),
            rss(&v.mobile),
            if ratio.median.is_some_and(|m| m <= GOAL) {
                ""
            } else {
                "  over the goal"
            },
        );
    }
    println!();
    for (x, what) in [
        (
            &q.mobile_vs_null_cpu_per_frame_chain,
            "element CPU per frame at 20k frames/s, enb+sgw+pgw, mobile / null  (goal per element <= 1.3x)",
        ),
        (
            &q.mobile_vs_null_cost_per_frame_udp64,
            "UDP 64 B frame cost, mobile / null   (from received rates)",
        ),
        (&q.mobile_vs_null_cost_tcp, "TCP cost, mobile / null"),
    ] {
        println!("{:>6}x  {what}; rounds {}", cell(x.median, 2), x.list());
    }
    let m = &r.mobile_core;
    println!(
        "elements alone (no I/O), ns/frame: null {}; uplink enb {}, sgw {}, pgw {}; \
         downlink pgw {}, sgw {}, enb {}",
        cell(m.null_ns_per_frame, 0),
        cell(m.enb_uplink_ns_per_frame, 0),
        cell(m.sgw_uplink_ns_per_frame, 0),
        cell(m.pgw_uplink_ns_per_frame, 0),
        cell(m.pgw_downlink_ns_per_frame, 0),
        cell(m.sgw_downlink_ns_per_frame, 0),
        cell(m.enb_downlink_ns_per_frame, 0),
    );
    println!(
        "pgw NAT table (d11_core::nat::Nat) translate of an established flow: {} ns at 1 entry, {} ns at 100k entries",
        cell(m.nat_translate_ns_1_entry, 0),
        cell(m.nat_translate_ns_100k_entries, 0),
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
        let round = |null: u64, mobile: u64| {
            let run = |cpu: u64| {
                let node = NodeLoad {
                    cpu_ns: cpu * 100,
                    rx_frames: 100,
                    ns_per_frame: Some(cpu as f64),
                };
                Run {
                    rate: Throughput {
                        tcp_mbit_s: Some(100.0),
                        udp64_received_pps: Some(1000.0),
                        ..Throughput::default()
                    },
                    fixed_load: POSITIONS
                        .iter()
                        .map(|p| (p.to_string(), node.clone()))
                        .collect(),
                    peak_rss_kib: POSITIONS
                        .iter()
                        .map(|p| (p.to_string(), Some(cpu)))
                        .collect(),
                    ..Run::default()
                }
            };
            Round {
                null: run(null),
                mobile: run(mobile),
            }
        };
        // A noisy second round: its null is slow, so its mobile looks cheap.
        let rounds = [round(1000, 1100), round(3000, 1200), round(1000, 1150)];
        let r = summarise(&rounds);
        let enb = &r.ratios.mobile_vs_null_cpu_per_frame["enb"];
        assert_eq!(enb.median, Some(1.1));
        assert_eq!(enb.rounds.len(), 3);
        assert_eq!(
            r.ratios.mobile_vs_null_cpu_per_frame_chain.median,
            Some(1.1)
        );
        assert_eq!(r.variants.null.ns_per_frame("sgw"), Some(1000.0));
        assert_eq!(r.variants.null.peak_rss_kib["pgw"], Some(3000));
        let back: MobileReport = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn the_server_is_reached_on_the_ues_subnet_only_in_the_null_lab() {
        let addr = |file: &str| {
            let path = format!("{}/../../netns/{file}", env!("CARGO_MANIFEST_DIR"));
            lab::server_address(Path::new(&path))
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
