//! `d11 tcpview`: the phone's TCP connection on one wire, segment by
//! segment (`d11_lab::tcpview`), from a capture file or from one order
//! captured the way `d11 trace` does; optionally its tcptrace picture.

use crate::LabArg;
use anyhow::{bail, Context, Result};
use d11_lab::tcpview::{self, Pick};
use d11_lab::RunDir;
use serde_json::json;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::process::ExitCode;

/// Options of `d11 tcpview`.
#[derive(Debug, clap::Args)]
pub struct TcpViewArgs {
    #[command(flatten)]
    pub lab: LabArg,
    /// Read this capture (e.g. from `d11 capture -w F -- d11 order`) instead
    /// of placing an order and capturing it.
    #[arg(short = 'r', value_name = "FILE.pcapng")]
    pub read: Option<PathBuf>,
    /// The wire to look at, `node:port` as in the capture.
    #[arg(long, default_value = "ue:eth0", value_name = "NODE:PORT")]
    pub wire: String,
    /// The connection's two ends, `A:PORT,B:PORT` (default: the first SYN to port 443).
    #[arg(long, value_name = "A:PORT,B:PORT", value_parser = parse_conn)]
    pub conn: Option<(SocketAddrV4, SocketAddrV4)>,
    /// Write the tcptrace picture of the client → server direction here.
    #[arg(long, value_name = "OUT.svg")]
    pub svg: Option<PathBuf>,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

fn parse_conn(s: &str) -> Result<(SocketAddrV4, SocketAddrV4), String> {
    let (a, b) = s
        .split_once(',')
        .ok_or_else(|| format!("{s}: want A:PORT,B:PORT"))?;
    let p = |x: &str| {
        x.trim()
            .parse::<SocketAddrV4>()
            .map_err(|e| format!("{x}: {e}"))
    };
    Ok((p(a)?, p(b)?))
}

pub fn run(args: &TcpViewArgs) -> Result<ExitCode> {
    let (file, order) = match &args.read {
        Some(f) => (f.clone(), None),
        None => {
            let lab = &args.lab.name;
            let file = RunDir::new(lab).path().join("tcpview.pcapng");
            let (_, placed) = crate::trace::order_while_capturing(lab, &file)?;
            (file, Some(placed))
        }
    };
    let frames = crate::trace::read_capture(&file)?;
    if frames.is_empty() {
        bail!("{} holds no frames", file.display());
    }
    // The order's own connection when this placed it (the app's HTTPDNS
    // lookup goes to a port 443 too), else the first to port 443.
    let pick = match (args.conn, order.as_ref().map(|o| (o.local, o.remote))) {
        (Some((a, b)), _) => Pick::Between(a, b),
        (None, Some((SocketAddr::V4(a), SocketAddr::V4(b)))) => Pick::Between(a, b),
        _ => Pick::Port(443),
    };
    let view = tcpview::analyse(&frames, &args.wire, pick)
        .with_context(|| format!("reading {}", file.display()))?;
    if let Some(out) = &args.svg {
        std::fs::write(out, tcpview::svg(&view))
            .with_context(|| format!("writing {}", out.display()))?;
    }
    if args.json {
        let v = json!({
            "capture": file,
            "order": order,
            "svg": args.svg,
            "view": view,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", tcpview::table(&view));
        print!("{}", tcpview::summary(&view));
        let order = order.map(|o| format!("; order {} {}", o.order_id().unwrap_or("?"), o.status));
        println!(
            "capture: {}{}{}",
            file.display(),
            args.svg
                .as_ref()
                .map(|s| format!("; picture: {}", s.display()))
                .unwrap_or_default(),
            order.unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}
