//! `d11 capture -w FILE.pcapng [--seconds N] [-- CMD…]`: every wire of a lab
//! into one pcapng, one interface per wire named `node:port`, with the TLS
//! secrets CMD logged (`d11 order`, curl) for Wireshark.

use crate::need_root;
use anyhow::{bail, Context, Result};
use d11_core::pcapng::PcapngWriter;
use d11_lab::RunDir;
use std::io::BufWriter;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

/// After CMD ends, frames still in flight (the last reply) get this long.
const DRAIN: Duration = Duration::from_millis(300);

pub fn capture(lab: &str, file: &Path, seconds: Option<f64>, cmd: &[String]) -> Result<ExitCode> {
    let child = match cmd.split_first() {
        Some((prog, args)) => {
            let mut c = Command::new(prog);
            c.args(args);
            Some(c)
        }
        None => None,
    };
    if child.is_none() && seconds.is_none() {
        eprintln!(
            "capturing every wire of lab {lab} into {}; Ctrl-C to stop",
            file.display()
        );
    }
    let rec = record(lab, file, seconds, child)?;
    eprintln!(
        "captured {} frames on {} wires into {}{}{}",
        rec.stats.frames,
        rec.wires,
        file.display(),
        if rec.stats.dropped_by_kernel > 0 {
            format!(" ({} dropped by the kernel)", rec.stats.dropped_by_kernel)
        } else {
            String::new()
        },
        if rec.secrets {
            " with the TLS secrets for Wireshark (a Decryption Secrets Block)"
        } else {
            ""
        }
    );
    Ok(match rec.status {
        Some(s) if !s.success() => ExitCode::from(s.code().unwrap_or(1).clamp(1, 255) as u8),
        _ => ExitCode::SUCCESS,
    })
}

/// A capture of every wire running in a thread of its own until
/// [`Background::stop`] (`d11 up --capture`: the lab's first frames, BGP's
/// OPENs and UPDATEs among them).
pub(crate) struct Background {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Result<d11_io::CaptureStats>>,
}

impl Background {
    /// Opens a socket on every wire of `lab` (which must be built) and
    /// starts writing what they see into `file`.
    pub(crate) fn start(lab: &str, file: &Path) -> Result<Background> {
        need_root("d11 up --capture")?;
        let dir = RunDir::new(lab);
        let topo = dir.topology().context("reading the lab's topology")?;
        let points: Vec<d11_io::CapturePoint> = topo
            .capture_points(lab)
            .into_iter()
            .map(|p| d11_io::CapturePoint {
                label: p.label,
                netns: p.netns,
                ifname: p.ifname,
            })
            .collect();
        let mut cap = d11_io::Capture::open(&points)?;
        let out =
            std::fs::File::create(file).with_context(|| format!("creating {}", file.display()))?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut w =
                PcapngWriter::new(BufWriter::new(out)).context("writing the pcapng header")?;
            let stats = cap.run(&mut w, || flag.load(std::sync::atomic::Ordering::Relaxed))?;
            let mut inner = w.into_inner();
            std::io::Write::flush(&mut inner).context("flushing the pcapng")?;
            Ok(stats)
        });
        Ok(Background { stop, thread })
    }

    /// Stops after the frames in flight ([`DRAIN`]); what was written.
    pub(crate) fn stop(self) -> Result<d11_io::CaptureStats> {
        std::thread::sleep(DRAIN);
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the capture thread panicked"))?
    }
}

/// What [`record`] did.
pub(crate) struct Recording {
    pub stats: d11_io::CaptureStats,
    pub wires: usize,
    /// How the command ended, if there was one and it ended.
    pub status: Option<std::process::ExitStatus>,
    /// True if TLS secrets were written into the file.
    pub secrets: bool,
}

/// Captures every wire of `lab` into `file` until `seconds` pass, `child`
/// ends (plus [`DRAIN`]) or a signal comes. `child` runs with
/// `SSLKEYLOGFILE` pointing into the lab's run directory (unless already
/// set); whatever TLS secrets it logs go into the file as a Decryption
/// Secrets Block, so Wireshark shows the decrypted HTTP with no setup.
pub(crate) fn record(
    lab: &str,
    file: &Path,
    seconds: Option<f64>,
    child: Option<Command>,
) -> Result<Recording> {
    d11_lab::check_lab_name(lab)?;
    need_root("d11 capture")?;
    let dir = RunDir::new(lab);
    if !dir.exists() {
        bail!("there is no lab named {lab}");
    }
    let topo = dir.topology().context("reading the lab's topology")?;
    let points: Vec<d11_io::CapturePoint> = topo
        .capture_points(lab)
        .into_iter()
        .map(|p| d11_io::CapturePoint {
            label: p.label,
            netns: p.netns,
            ifname: p.ifname,
        })
        .collect();
    // Sockets first, so nothing CMD sends is missed.
    let mut cap = d11_io::Capture::open(&points)?;
    let out =
        std::fs::File::create(file).with_context(|| format!("creating {}", file.display()))?;
    let mut w = PcapngWriter::new(BufWriter::new(out)).context("writing the pcapng header")?;
    let stop = d11_io::stop_on_signals()?;
    let key_log = std::env::var_os("SSLKEYLOGFILE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().join(format!("keys-{}.log", std::process::id())));
    let _ = std::fs::remove_file(&key_log);
    let mut child = match child {
        Some(mut c) => Some(
            c.env("SSLKEYLOGFILE", &key_log)
                .spawn()
                .with_context(|| format!("starting {:?}", c.get_program()))?,
        ),
        None => None,
    };
    let deadline = seconds.map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let mut status = None;
    let mut ended_at: Option<Instant> = None;
    let stats = cap.run(&mut w, || {
        let now = Instant::now();
        if stop.load(std::sync::atomic::Ordering::Relaxed) || deadline.is_some_and(|d| now >= d) {
            return true;
        }
        if let Some(c) = child.as_mut() {
            if status.is_none() {
                if let Ok(Some(s)) = c.try_wait() {
                    status = Some(s);
                    ended_at = Some(now);
                }
            }
        }
        ended_at.is_some_and(|t| now >= t + DRAIN)
    })?;
    let mut inner = w.into_inner();
    std::io::Write::flush(&mut inner).context("flushing the pcapng")?;
    drop(inner);
    if let Some(mut c) = child {
        if status.is_none() {
            let _ = c.kill();
            status = c.wait().ok();
        }
    }
    let secrets = match std::fs::read(&key_log) {
        Ok(keys) if !keys.is_empty() => {
            let plain =
                std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            std::fs::write(file, d11_core::pcapng::with_tls_secrets(&plain, &keys))
                .with_context(|| format!("writing {}", file.display()))?;
            true
        }
        _ => false,
    };
    if std::env::var_os("SSLKEYLOGFILE").is_none() {
        let _ = std::fs::remove_file(&key_log);
    }
    Ok(Recording {
        stats,
        wires: points.len(),
        status,
        secrets,
    })
}
