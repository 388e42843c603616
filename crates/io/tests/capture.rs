//! `d11 capture` on two wires of two namespaces into one pcapng, stopped by
//! SIGINT like Ctrl-C, checked with tshark.

mod common;

use common::{require_root, run, veth, Netns};
use d11_core::pcapng::PcapngWriter;
use d11_io::{stop_on_signals, Capture, CapturePoint};
use std::sync::atomic::Ordering;

/// Removes the capture file on drop.
struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn tshark(args: &[&str]) -> String {
    let mut a = vec!["tshark"];
    a.extend_from_slice(args);
    let out = run(&a);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn capture_of_two_wires_is_one_clean_pcapng_with_named_interfaces() {
    require_root();
    let a = Netns::new("capa");
    let b = Netns::new("capb");
    veth(&a, "a0", &b, "b0");
    a.sh(&["ip", "addr", "add", "192.0.2.1/24", "dev", "a0"]);
    b.sh(&["ip", "addr", "add", "192.0.2.2/24", "dev", "b0"]);
    let point = |ns: &Netns, node: &str, ifname: &str| CapturePoint {
        label: format!("{node}:{ifname}"),
        netns: ns.name.clone(),
        ifname: ifname.to_string(),
    };
    let mut capture = Capture::open(&[point(&a, "a", "a0"), point(&b, "b", "b0")]).unwrap();
    let file =
        TempFile(std::env::temp_dir().join(format!("d11t-io-{}-cap.pcapng", std::process::id())));
    let mut w = PcapngWriter::new(std::fs::File::create(&file.0).unwrap()).unwrap();

    let stop = stop_on_signals().unwrap();
    let an = a.name.clone();
    let traffic = std::thread::spawn(move || {
        let a = ["ip", "netns", "exec", &an];
        let ping = run(&[&a[..], &["ping", "-c", "3", "-i", "0.2", "192.0.2.2"]].concat());
        // kernel TCP both ways (SYN, RST), checksums left partial by tx offload
        let tcp = "import socket\ns = socket.socket()\ntry: s.connect(('192.0.2.2', 9))\nexcept OSError: pass";
        run(&[&a[..], &["/usr/bin/python3", "-c", tcp]].concat());
        // SAFETY: raise has no memory preconditions; the SIGINT handler is installed.
        unsafe { libc::raise(libc::SIGINT) };
        ping
    });
    let stats = capture.run(&mut w, || stop.load(Ordering::SeqCst)).unwrap();
    assert!(traffic.join().unwrap().status.success());
    drop(w);
    println!("{stats:?}");
    assert_eq!(stats.dropped_by_kernel, 0);

    let path = file.0.to_str().unwrap();
    let malformed = tshark(&["-r", path, "-Y", "_ws.malformed"]);
    assert!(malformed.is_empty(), "malformed frames:\n{malformed}");
    let bad_sums = tshark(&[
        "-r",
        path,
        "-o",
        "tcp.check_checksum:TRUE",
        "-o",
        "ip.check_checksum:TRUE",
        "-Y",
        "tcp.checksum.status != 1 || ip.checksum.status != 1",
    ]);
    assert!(bad_sums.is_empty(), "bad checksums:\n{bad_sums}");
    let rows = tshark(&[
        "-r",
        path,
        "-T",
        "fields",
        "-e",
        "frame.interface_name",
        "-e",
        "_ws.col.Protocol",
        "-e",
        "_ws.col.Info",
    ]);
    print!("{rows}");
    for iface in ["a:a0", "b:b0"] {
        let icmp = rows
            .lines()
            .filter(|l| l.starts_with(&format!("{iface}\tICMP")))
            .count();
        let tcp = rows
            .lines()
            .filter(|l| l.starts_with(&format!("{iface}\tTCP")))
            .count();
        assert_eq!(
            icmp, 6,
            "{iface}: 3 requests and 3 replies, both directions"
        );
        assert_eq!(tcp, 2, "{iface}: SYN and RST");
    }
    assert_eq!(stats.frames as usize, rows.lines().count());

    // Wall-clock timestamps: the frames were captured in the last minute.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    for t in tshark(&["-r", path, "-T", "fields", "-e", "frame.time_epoch"]).lines() {
        let t: f64 = t.parse().unwrap();
        assert!((now.as_secs_f64() - t).abs() < 60.0, "{t} vs {now:?}");
    }
}
