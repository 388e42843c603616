//! `d11 capture -w FILE.pcapng [--seconds N] [-- CMD…]`: every wire of a lab
//! into one pcapng, one interface per wire named `node:port`.

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
    let mut child = match cmd.split_first() {
        Some((prog, args)) => Some(
            Command::new(prog)
                .args(args)
                .spawn()
                .with_context(|| format!("starting {prog}"))?,
        ),
        None => None,
    };
    let deadline = seconds.map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    if child.is_none() && deadline.is_none() {
        eprintln!(
            "capturing {} wires of lab {lab} into {}; Ctrl-C to stop",
            points.len(),
            file.display()
        );
    }
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
    if let Some(mut c) = child {
        if status.is_none() {
            let _ = c.kill();
            status = c.wait().ok();
        }
    }
    eprintln!(
        "captured {} frames on {} wires into {}{}",
        stats.frames,
        points.len(),
        file.display(),
        if stats.dropped_by_kernel > 0 {
            format!(" ({} dropped by the kernel)", stats.dropped_by_kernel)
        } else {
            String::new()
        }
    );
    Ok(match status {
        Some(s) if !s.success() => ExitCode::from(s.code().unwrap_or(1).clamp(1, 255) as u8),
        _ => ExitCode::SUCCESS,
    })
}
