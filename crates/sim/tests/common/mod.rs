//! Helpers shared by the scenario tests: reading the simulator's capture back,
//! and checking it with tshark when tshark is installed.

#![allow(dead_code)] // each scenario uses a different part

use d11_sim::Sim;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use std::process::Command;
use std::time::Duration;

/// Every frame of a pcapng with the name of the interface it was captured on.
pub fn frames(pcapng: &[u8]) -> Vec<(String, Vec<u8>)> {
    stamped_frames(pcapng)
        .into_iter()
        .map(|(name, _, frame)| (name, frame))
        .collect()
}

/// [`frames`] with each frame's timestamp since the Unix epoch.
fn stamped_frames(pcapng: &[u8]) -> Vec<(String, Duration, Vec<u8>)> {
    let mut r = PcapNgReader::new(pcapng).expect("a pcapng section");
    let mut names = vec![];
    let mut frames = vec![];
    while let Some(b) = r.next_block() {
        match b.expect("a well-formed block") {
            Block::InterfaceDescription(i) => names.push(
                i.options
                    .iter()
                    .find_map(|o| match o {
                        InterfaceDescriptionOption::IfName(n) => Some(n.to_string()),
                        _ => None,
                    })
                    .expect("every interface is named"),
            ),
            Block::EnhancedPacket(p) => frames.push((
                names[p.interface_id as usize].clone(),
                p.timestamp,
                p.data.to_vec(),
            )),
            _ => {}
        }
    }
    frames
}

/// Writes the capture under the test target directory and, if tshark is
/// installed, asserts it decodes every frame, none malformed, on the
/// interfaces and at the times our own reader sees. Returns false if tshark
/// is missing.
pub fn tshark_agrees(sim: &mut Sim, file: &str) -> bool {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(file);
    sim.write_pcapng(&path).expect("capture written");
    let tshark = |args: &[&str]| {
        Command::new("tshark")
            .arg("-r")
            .arg(&path)
            .args(args)
            .output()
    };
    let fields = [
        "-T",
        "fields",
        "-e",
        "frame.interface_name",
        "-e",
        "frame.time_epoch",
    ];
    let Ok(out) = tshark(&fields) else {
        eprintln!("tshark not installed: {} not checked", path.display());
        return false;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let ours: Vec<String> = stamped_frames(sim.pcapng())
        .into_iter()
        .map(|(n, t, _)| format!("{n}\t{}.{:09}", t.as_secs(), t.subsec_nanos()))
        .collect();
    assert_eq!(theirs, ours);
    let bad = tshark(&["-Y", "_ws.malformed || _ws.expert.severity >= error"]).expect("tshark ran");
    assert!(
        bad.status.success(),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&bad.stdout),
        "",
        "tshark flags these frames"
    );
    true
}
