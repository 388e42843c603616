//! Shared by the root end-to-end tests: a lab that always goes down, the `d11`
//! binary, and small helpers around `ip`, `tshark` and the topology.
//!
//! Every test takes [`serial`] first: end-to-end tests run one at a time (two
//! cores; iperf3 and tshark are heavy), each with its own lab name.

#![allow(dead_code)] // each test binary uses a different part

use serde_json::Value;
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

static SERIAL: Mutex<()> = Mutex::new(());

/// Serialises the end-to-end tests of this binary; a panicked test does not
/// poison the others.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

mod root;
#[allow(unused_imports)] // a test binary that needs no root (tshark.rs)
pub use root::require_root;

pub fn d11_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_d11"))
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn topology(name: &str) -> PathBuf {
    repo().join("netns").join(name)
}

/// Runs `d11 ARGS…` and returns its output (never panics on failure).
pub fn d11(args: &[&str]) -> Output {
    Command::new(d11_bin())
        .args(args)
        .output()
        .expect("the d11 binary runs")
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A lab for one test, named after it, that is always taken down — also
/// when the test panics (the guard's `Drop` runs during unwinding), and
/// when the test process is killed, even by SIGKILL: the lab's owner is
/// this process (`d11 up --owner`), so its supervisor takes it down.
pub struct Lab {
    pub name: String,
}

impl Lab {
    /// Lab `t-TAG-PID` from `netns/TOPOLOGY_FILE`.
    pub fn up(topology_file: &str, tag: &str) -> Lab {
        let name = format!("t-{tag}-{}", std::process::id() % 100_000);
        Lab::up_named(&name, &topology(topology_file))
    }

    /// [`Lab::up`] recording every wire into `capture` from before the
    /// elements start until `d11 up` returns (`d11 up --capture`).
    pub fn up_capturing(topology_file: &str, tag: &str, capture: &Path) -> Lab {
        Lab::up_file_capturing(&topology(topology_file), tag, capture)
    }

    /// [`Lab::up_capturing`] from a topology file anywhere (a test's edited
    /// copy).
    pub fn up_file_capturing(file: &Path, tag: &str, capture: &Path) -> Lab {
        let name = format!("t-{tag}-{}", std::process::id() % 100_000);
        Lab::up_with(&name, file, &["--capture", &capture.to_string_lossy()])
    }

    /// Lab `name` from the topology file at `file` (an old lab of that name
    /// is taken down first).
    pub fn up_named(name: &str, file: &Path) -> Lab {
        Lab::up_with(name, file, &[])
    }

    fn up_with(name: &str, file: &Path, extra: &[&str]) -> Lab {
        let _ = d11(&["down", "--name", name]);
        let lab = Lab {
            name: name.to_string(),
        };
        let me = std::process::id().to_string();
        // Its own process group: a Ctrl-C or a kill of this test's group
        // does not stop `d11 up` halfway, before the supervisor that
        // watches the owner exists.
        let out = Command::new(d11_bin())
            .args([
                "up",
                "-t",
                &file.to_string_lossy(),
                "--name",
                &lab.name,
                "--owner",
                &me,
            ])
            .args(extra)
            .process_group(0)
            .output()
            .expect("the d11 binary runs");
        assert!(out.status.success(), "d11 up failed:\n{}", text(&out));
        lab
    }

    /// Runs a command inside `node`; returns its output.
    pub fn exec(&self, node: &str, cmd: &[&str]) -> Output {
        let mut args = vec!["exec", "--name", &self.name, node, "--"];
        args.extend_from_slice(cmd);
        d11(&args)
    }

    /// `exec` that must succeed; returns stdout.
    pub fn sh(&self, node: &str, cmd: &[&str]) -> String {
        let o = self.exec(node, cmd);
        assert!(o.status.success(), "{node}: {cmd:?} failed:\n{}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The phone's bearer as the sgw holds it (`d11 show sgw bearers`):
    /// the TEIDs its attach made.
    pub fn phone_bearer(&self) -> serde_json::Value {
        let o = d11(&["show", "--name", &self.name, "sgw", "bearers", "--json"]);
        let bearers: serde_json::Value =
            serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
        bearers
            .as_array()
            .and_then(|a| a.iter().find(|b| b["imsi"] == "001010000000001"))
            .cloned()
            .unwrap_or_else(|| panic!("no bearer of the phone: {}", text(&o)))
    }

    pub fn status(&self) -> serde_json::Value {
        let o = d11(&["status", "--name", &self.name, "--json"]);
        assert!(o.status.success(), "d11 status failed:\n{}", text(&o));
        serde_json::from_slice(&o.stdout).expect("status --json is JSON")
    }

    pub fn netns(&self, node: &str) -> String {
        format!("{}-{node}", self.name)
    }

    /// Captures every wire into `file` while `cmd` runs inside `node`.
    pub fn capture(&self, file: &Path, node: &str, cmd: &[&str]) -> Output {
        let f = file.to_string_lossy();
        let d = d11_bin();
        let mut args = vec![
            "capture",
            "--name",
            &self.name,
            "-w",
            &f,
            "--",
            d.to_str().unwrap(),
            "exec",
            "--name",
            &self.name,
            node,
            "--",
        ];
        args.extend_from_slice(cmd);
        d11(&args)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let o = d11(&["down", "--name", &self.name]);
        if !o.status.success() {
            eprintln!("d11 down --name {} failed:\n{}", self.name, text(&o));
        }
    }
}

/// Namespaces whose name starts with `prefix`.
pub fn namespaces(prefix: &str) -> Vec<String> {
    let o = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip runs");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// The processes of lab `name` still alive: its supervisor, `d11-element`s and `d11 run`s.
pub fn lab_processes(name: &str) -> Vec<String> {
    let o = Command::new("pgrep")
        .args(["-a", "-f", "--", &format!("--name {name} ")])
        .output()
        .expect("pgrep runs");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.contains("d11"))
        .map(str::to_string)
        .collect()
}

/// Asserts lab `name` left nothing: no namespace, no run dir, no process.
pub fn assert_gone(name: &str) {
    assert_eq!(
        namespaces(&format!("{name}-")),
        Vec::<String>::new(),
        "namespaces left behind"
    );
    assert!(
        !Path::new("/run/d11").join(name).exists(),
        "run dir left behind"
    );
    assert_eq!(
        lab_processes(name),
        Vec::<String>::new(),
        "processes left behind"
    );
}

/// tshark's field output for a capture file, one Vec per frame.
pub fn tshark_fields(file: &Path, filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
    tshark_with(file, &[], filter, fields)
}

/// Frames tshark calls malformed or marks with an error, as
/// `[number, wire, info, expert message]`, with tshark's defaults (TCP
/// reassembly on), as a user opens the file: `d11 capture` writes a
/// packet's copies on several wires together, so Wireshark reads the later
/// ones as plain retransmissions (see `d11_io::capture`).
pub fn bad_frames(file: &Path) -> Vec<Vec<String>> {
    tshark_with(
        file,
        &[],
        "_ws.malformed || _ws.expert.severity >= error",
        &[
            "frame.number",
            "frame.interface_name",
            "_ws.col.info",
            "_ws.expert.message",
        ],
    )
}

/// Frames of a capture that are broken as Wireshark opens the file — TCP
/// reassembly on, unlike [`bad_frames`] — with IP, TCP and UDP checksums
/// checked (SCTP's CRC32c too): malformed, an error-level expert info (a bad checksum is one),
/// or a dissector's "undecoded" note (a frame read as a protocol it is
/// not), as `[number, wire, protocol, info, expert message]`.
pub fn broken_frames(file: &Path) -> Vec<Vec<String>> {
    let checks = ["ip", "tcp", "udp"].map(|p| format!("{p}.check_checksum:TRUE"));
    let mut options = vec!["-o", "sctp.checksum:CRC-32C"];
    for c in &checks {
        options.extend(["-o", c.as_str()]);
    }
    tshark_with(
        file,
        &options,
        r#"_ws.malformed || _ws.expert.severity >= error || _ws.expert.group == "Undecoded""#,
        &[
            "frame.number",
            "frame.interface_name",
            "_ws.col.Protocol",
            "_ws.col.Info",
            "_ws.expert.message",
        ],
    )
}

/// [`broken_frames`] of a lab capture as one file, then of each wire
/// alone ([`broken_frames_per_wire`]).
pub fn broken_frames_whole_and_per_wire(file: &Path) -> Vec<Vec<String>> {
    let mut broken = broken_frames(file);
    broken.extend(broken_frames_per_wire(file));
    broken
}

/// [`broken_frames`] of each wire of a lab capture, each written to a file
/// of its own first (`FILE.wires/N.pcapng`), as a user reads one wire.
/// Frame numbers are the wire's own.
pub fn broken_frames_per_wire(file: &Path) -> Vec<Vec<String>> {
    let wires: std::collections::BTreeSet<String> =
        tshark_with(file, &[], "", &["frame.interface_name"])
            .into_iter()
            .filter_map(|r| r.into_iter().next())
            .collect();
    let dir = file.with_extension("wires");
    std::fs::create_dir_all(&dir).expect("a directory for the wires");
    let mut broken = Vec::new();
    for (i, wire) in wires.iter().enumerate() {
        let one = dir.join(format!("{i}.pcapng"));
        let o = Command::new("tshark")
            .arg("-r")
            .arg(file)
            .args(["-Y", &format!("frame.interface_name == \"{wire}\""), "-w"])
            .arg(&one)
            .output()
            .expect("tshark runs");
        assert!(
            o.status.success(),
            "tshark splitting {wire}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        broken.extend(broken_frames(&one));
    }
    broken
}

pub fn tshark_with(
    file: &Path,
    options: &[&str],
    filter: &str,
    fields: &[&str],
) -> Vec<Vec<String>> {
    // iperf3's payload is arbitrary bytes that a heuristic dissector
    // (Thrift's, or one that finds Q.931 information elements in it)
    // sometimes claims and then calls malformed: not a frame of ours. Its
    // port is decoded as plain data, before any heuristic is tried.
    let mut args = vec![
        "-r".to_string(),
        file.to_string_lossy().into_owned(),
        "--disable-protocol".into(),
        "thrift".into(),
        "-d".into(),
        "tcp.port==5201,data".into(),
    ];
    args.extend(options.iter().map(|o| o.to_string()));
    args.extend(["-T", "fields", "-E", "separator=|"].map(String::from));
    if !filter.is_empty() {
        args.push("-Y".into());
        args.push(filter.into());
    }
    for f in fields {
        args.push("-e".into());
        args.push((*f).into());
    }
    let o = Command::new("tshark")
        .args(&args)
        .output()
        .expect("tshark runs (apt install tshark)");
    assert!(
        o.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect()
}

/// A fresh scratch directory for a test's files, removed with the guard.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("d11-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        Scratch(p)
    }
    pub fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}

impl Drop for Scratch {
    /// Removes the directory, unless `D11_KEEP_SCRATCH` is set: then it
    /// stays for a look at what a failed test left (captures, keys, logs).
    fn drop(&mut self) {
        if std::env::var_os("D11_KEEP_SCRATCH").is_some() {
            eprintln!("kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The MAC of every port of the lab, from `d11 status --json`.
pub fn macs(status: &Value) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for n in status["nodes"].as_array().expect("nodes") {
        for p in n["ports"].as_array().expect("ports") {
            m.insert(
                format!(
                    "{}:{}",
                    n["name"].as_str().unwrap(),
                    p["name"].as_str().unwrap()
                ),
                p["mac"].as_str().unwrap().to_string(),
            );
        }
    }
    m
}

/// The drop counters of `node:port`, from `d11 status --json`.
pub fn drops(status: &Value, node_name: &str, port: &str) -> Value {
    let p = node(status, node_name)["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == port)
        .expect("port");
    p["counters"]["drops"].clone()
}

/// One node's entry in `d11 status --json`.
pub fn node<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .expect("node in status")
}

/// Rows of the lab's order database (east's `vm-db`) with this idempotency
/// key, read by Python's sqlite3 (not our code).
pub fn order_rows(lab: &Lab, key: &str) -> u64 {
    let db = format!("/run/d11/{}/db/vm-db.sqlite", lab.name);
    let py = format!(
        "import sqlite3,sys; c=sqlite3.connect('file:{db}?mode=ro', uri=True); \
         print(c.execute('select count(*) from orders where idempotency_key=?', (sys.argv[1],)).fetchone()[0])"
    );
    let o = std::process::Command::new("/usr/bin/python3")
        .args(["-c", &py, key])
        .output()
        .expect("python3 runs");
    assert!(o.status.success(), "sqlite3: {}", text(&o));
    text(&o).trim().parse().expect("a count")
}
