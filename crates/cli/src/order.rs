//! `d11 order`: the phone app, run inside the UE's namespace.

use crate::{need_root, LabArg};
use anyhow::{bail, Context, Result};
use d11_apps::dns::httpdns;
use d11_apps::dns::stub::{self, Resolved, StubFiles};
use d11_apps::phone::{self, OrderRequest};
use d11_lab::RunDir;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Options of `d11 order`.
#[derive(Debug, clap::Args)]
pub struct OrderArgs {
    #[command(flatten)]
    pub lab: LabArg,
    /// The phone: the host whose namespace, resolver and stack the app uses.
    #[arg(long, default_value = "ue")]
    pub node: String,
    /// The shop's name (resolved as the node resolves it: its hosts file, then its resolver).
    #[arg(long, default_value = "www.geektime.com")]
    pub host: String,
    #[arg(long, default_value_t = 443)]
    pub port: u16,
    /// The Idempotency-Key (default: a new random UUID); the same key never makes a second order.
    #[arg(long)]
    pub key: Option<String>,
    /// Attempts after the first when the connection is lost (same key).
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// Milliseconds for each attempt: connect, TLS, request and reply.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
    /// A coupon code for the order (the shop consumes it once; another order
    /// naming it is refused).
    #[arg(long)]
    pub coupon: Option<String>,
    /// Resolve with the node's resolver only, as an app without HTTPDNS
    /// does (by default the node's `httpdns` service is asked first).
    #[arg(long)]
    pub no_httpdns: bool,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn order(args: &OrderArgs) -> Result<ExitCode> {
    let lab = &args.lab.name;
    d11_lab::check_lab_name(lab)?;
    let dir = RunDir::new(lab);
    if !dir.exists() {
        bail!("there is no lab named {lab} (start it with: d11 up --name {lab})");
    }
    let topo = dir.topology().context("reading the lab's topology")?;
    let Some(node) = topo.node(&args.node) else {
        bail!("lab {lab} has no node {:?}", args.node);
    };
    need_root("d11 order")?;
    let root = d11_apps::pki::PkiPaths::new(dir.pki_dir()).root_cert();
    // The app uses the phone's own TCP/IP stack: this thread, and the
    // runtime's, live in the phone's namespace.
    let _netns = d11_io::NetnsGuard::enter(&d11_lab::netns_name(lab, &args.node))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let httpdns = node.httpdns.as_ref().filter(|_| !args.no_httpdns);
    let resolved = resolve(lab, &args.node, httpdns, &args.host, &root, &rt)?;
    let req = OrderRequest {
        host: args.host.clone(),
        addr: SocketAddr::from((resolved.addrs[0], args.port)),
        root: root.clone(),
        key_log: std::env::var_os("SSLKEYLOGFILE").is_some(),
        idempotency_key: args.key.clone().unwrap_or_else(phone::new_idempotency_key),
        body: {
            let mut body = phone::story_order();
            if let Some(c) = &args.coupon {
                body["order"]["coupon"] = c.as_str().into();
            }
            body
        },
        retries: args.retries,
        timeout: Duration::from_millis(args.timeout_ms),
    };
    // Each address in the answer's order: the next when one does not
    // answer (a VIP down), as a browser tries a name's addresses; an
    // answer is used only within its TTL, so once that has run out the
    // name is resolved again before the next address is tried.
    let mut resolved = resolved;
    let mut resolved_at = Instant::now();
    let mut tried = Vec::new();
    let mut failed = Vec::new();
    let out = loop {
        let ip = next_address(&resolved, &tried).context("no address to try")?;
        let req = OrderRequest {
            addr: SocketAddr::from((ip, args.port)),
            ..req.clone()
        };
        match rt.block_on(phone::order(&req)) {
            Ok(o) => break o,
            Err(e @ phone::OrderError::Unreachable { .. }) => {
                tried.push(ip);
                failed.push(format!("{ip}: {e}; trying the next address"));
                if expired(&resolved, resolved_at.elapsed()) {
                    resolved = resolve(lab, &args.node, httpdns, &args.host, &root, &rt)?;
                    resolved_at = Instant::now();
                    let again = resolution_line(&resolved);
                    failed.push(format!("the answer's TTL ran out, resolved again: {again}"));
                }
                if next_address(&resolved, &tried).is_none() {
                    return Err(e.into());
                }
            }
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = out;
    out.resolved = Some(resolved.clone());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{}", resolution_line(&resolved));
        for f in &failed {
            println!("  {f}");
        }
        println!(
            "POST /purchaseOrder to {} {} ({}) over {} {} from {}",
            args.host, out.remote, args.node, out.tls_version, out.cipher, out.local
        );
        for e in &out.errors {
            println!("  retried after {e}");
        }
        println!(
            "{} in {:.1} ms ({} attempt{}), Idempotency-Key {}",
            out.status,
            out.elapsed_ms,
            out.attempts,
            if out.attempts == 1 { "" } else { "s" },
            out.idempotency_key
        );
        println!("{}", serde_json::to_string_pretty(&out.body)?);
        // Chapter 10: what the order service did behind the controller.
        for line in phone::rpc_lines(&out.body) {
            println!("{line}");
        }
        if let Some(why) = phone::refusal(out.status, &out.body) {
            println!("{why}");
        }
    }
    Ok(if (200..300).contains(&out.status) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The first address of the answer not tried yet.
fn next_address(r: &Resolved, tried: &[Ipv4Addr]) -> Option<Ipv4Addr> {
    r.addrs.iter().copied().find(|a| !tried.contains(a))
}

/// Whether an answer held for `held` may no longer be used (RFC 1035
/// § 3.2.1: TTL, the time it may be cached; none for the hosts file).
fn expired(r: &Resolved, held: Duration) -> bool {
    r.ttl.is_some_and(|t| held >= Duration::from_secs(t.into()))
}

/// `name` as the phone's app resolves it: the node's HTTPDNS service first
/// when it has one, then (or when that gives no answer, noted in
/// [`Resolved::fallback_from`]) its resolver ([`lookup`]). Call it from
/// inside the node's namespace.
fn resolve(
    lab: &str,
    node: &str,
    httpdns: Option<&d11_lab::HttpDns>,
    name: &str,
    root: &std::path::Path,
    rt: &tokio::runtime::Runtime,
) -> Result<Resolved> {
    let mut fallback_from = None;
    if let Some(h) = httpdns {
        let tls = d11_apps::pki::client_config(root, false)?;
        let server = SocketAddr::from((h.address, h.port));
        let timeout = Duration::from_secs(3);
        match rt.block_on(httpdns::lookup(server, &h.name, name, tls, timeout)) {
            Ok(r) => return Ok(r),
            Err(e) => fallback_from = Some(format!("HTTPDNS {} ({}): {e}", h.name, h.address)),
        }
    }
    let mut r = lookup(lab, node, name)?;
    r.fallback_from = fallback_from;
    Ok(r)
}

/// `name` as `node` resolves it: its hosts file, then its resolv.conf's
/// nameservers (the lab's resolver), from inside its namespace.
pub fn lookup(lab: &str, node: &str, name: &str) -> Result<Resolved> {
    let files = StubFiles {
        hosts: d11_lab::netns_hosts_file(lab, node),
        resolv: d11_lab::netns_resolv_file(lab, node),
    };
    let r = stub::lookup_in(&d11_lab::netns_name(lab, node), &files, name)
        .with_context(|| format!("{node} resolving {name}"))?;
    if r.addrs.is_empty() {
        bail!("{name} resolved to no address");
    }
    Ok(r)
}

/// One line telling how the name was resolved: which service, which
/// CNAMEs, which addresses, for how long.
pub fn resolution_line(r: &Resolved) -> String {
    let mut s = String::new();
    if let Some(f) = &r.fallback_from {
        s += &format!("{f}; falling back to DNS\n");
    }
    s += &format!("{} via {}", r.name, r.via);
    if r.tcp {
        s += " (over TCP)";
    }
    for c in &r.cnames {
        s += &format!(", CNAME {c}");
    }
    let addrs: Vec<String> = r.addrs.iter().map(|a| a.to_string()).collect();
    s += &format!(": {}", addrs.join(" "));
    if let Some(t) = r.ttl {
        s += &format!(" (TTL {t} s)");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(addrs: &[[u8; 4]], ttl: Option<u32>) -> Resolved {
        Resolved {
            name: "www.geektime.com".into(),
            via: "DNS 198.18.2.2".into(),
            cnames: Vec::new(),
            addrs: addrs.iter().map(|a| Ipv4Addr::from(*a)).collect(),
            ttl,
            tcp: false,
            fallback_from: None,
        }
    }

    #[test]
    fn the_next_address_is_one_not_tried_and_an_answer_lasts_its_ttl() {
        let r = answer(&[[203, 0, 113, 24], [203, 0, 113, 25]], Some(20));
        let first = Ipv4Addr::new(203, 0, 113, 24);
        assert_eq!(next_address(&r, &[]), Some(first));
        assert_eq!(
            next_address(&r, &[first]),
            Some(Ipv4Addr::new(203, 0, 113, 25))
        );
        assert_eq!(next_address(&r, &r.addrs), None);
        // Resolved again after the TTL, with a new address: only it is left.
        let again = answer(&[[203, 0, 113, 25], [198, 19, 24, 24]], Some(20));
        assert_eq!(
            next_address(&again, &r.addrs),
            Some(Ipv4Addr::new(198, 19, 24, 24))
        );
        assert!(!expired(&r, Duration::from_secs(19)));
        assert!(expired(&r, Duration::from_secs(20)));
        assert!(!expired(&answer(&[[203, 0, 113, 24]], None), Duration::MAX));
    }
}
