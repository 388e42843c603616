//! `d11 demo`'s account of the shop's name (chapter 3, docs/dns.md): every
//! wire recorded while the phone asks its resolver for `www.geektime.com`
//! twice, cold and a second later; the DNS messages on the resolver's wire
//! read back in order: the phone's query, the walk from the root to `.com`
//! to the shop's server and its CNAME into the GSLB's zone, the GSLB's
//! answer, the answer to the phone; then the second question answered from
//! the cache, with lower TTLs and no query leaving the resolver.

use anyhow::{Context, Result};
use d11_apps::dns::describe::describe;
use d11_lab::trace::Frame;
use d11_wire::ipv4::protocol;
use d11_wire::udp::UdpPacket;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The name the phone's app knows.
const NAME: &str = "www.geektime.com";

/// One DNS message over UDP on a wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    pub ts_ns: u64,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub line: String,
}

/// The DNS messages (UDP port 53) on `wire`, in capture order.
pub(crate) fn messages(frames: &[Frame], wire: &str) -> Vec<Seen> {
    let mut out = Vec::new();
    for f in frames.iter().filter(|f| f.wire == wire) {
        let Some(ip) = f.ipv4() else {
            continue;
        };
        if ip.protocol() != protocol::UDP {
            continue;
        }
        let Ok(udp) = UdpPacket::new_checked(ip.payload()) else {
            continue;
        };
        if udp.src_port() != 53 && udp.dst_port() != 53 {
            continue;
        }
        if let Some(line) = describe(udp.payload()) {
            out.push(Seen {
                ts_ns: f.ts_ns,
                src: ip.src(),
                dst: ip.dst(),
                line,
            });
        }
    }
    out
}

/// Where the demo records the resolution: next to the trace's capture.
pub(crate) fn capture_file(file: &Path) -> PathBuf {
    let stem = file
        .file_stem()
        .map_or("d11-demo".into(), |s| s.to_string_lossy().to_string());
    file.with_file_name(format!("{stem}-dns.pcapng"))
}

/// The phone's resolver and the wire it sits on (`resolver:eth0`): the
/// first `nameserver` of the phone's resolv.conf (which its baseband wrote
/// from the attach) and the host holding that address in the topology.
fn resolver(lab: &str) -> Result<Option<(Ipv4Addr, String)>> {
    let topo = d11_lab::RunDir::new(lab)
        .topology()
        .context("reading the lab's topology")?;
    let resolv = d11_lab::netns_resolv_file(lab, "ue");
    let first = d11_apps::dns::stub::ResolvConf::read(&resolv)
        .servers
        .into_iter()
        .next();
    let Some(std::net::IpAddr::V4(addr)) = first else {
        return Ok(None);
    };
    Ok(topo.nodes.iter().find_map(|n| {
        let p = (n.ports.iter()).find(|p| p.address.is_some_and(|a| a.addr() == addr))?;
        Some((addr, format!("{}:{}", n.name, p.name)))
    }))
}

/// Records every wire of `lab` into `file` while the phone asks its
/// resolver for the shop's name, then again a second later. `None` when
/// the phone has no resolver (a topology without DNS).
pub(crate) fn record(lab: &str, file: &Path) -> Result<Option<(Ipv4Addr, String)>> {
    let Some(at) = resolver(lab)? else {
        return Ok(None);
    };
    let dig = format!(
        "dig +tries=1 +noall +answer {NAME} A; sleep 1; dig +tries=1 +noall +answer {NAME} A"
    );
    let mut cmd = Command::new(std::env::current_exe().context("finding the d11 binary")?);
    cmd.args(["exec", "--name", lab, "ue", "--", "sh", "-c", &dig])
        .stdout(std::process::Stdio::null());
    crate::capture::record(lab, file, None, Some(cmd))?;
    Ok(Some(at))
}

/// The chapter from the recording's messages on the resolver's wire.
/// `names`: port addresses → node names.
pub(crate) fn tell(
    seen: &[Seen],
    resolver: Ipv4Addr,
    wire: &str,
    names: &BTreeMap<Ipv4Addr, String>,
    file: &Path,
) -> String {
    let mut s = String::new();
    // The phone: the first to ask the resolver (its NATed address).
    let Some(phone) = seen.iter().find(|m| m.dst == resolver).map(|m| m.src) else {
        let _ = writeln!(s, "  (no DNS query reached {resolver} on {wire})");
        return s;
    };
    let who = |a: Ipv4Addr| match names.get(&a) {
        Some(n) => format!("{a} ({n})"),
        None if a == phone => format!("{a} (the phone, NATed)"),
        None => a.to_string(),
    };
    // Rounds: each starts with a query of the phone's.
    let mut rounds: Vec<Vec<&Seen>> = Vec::new();
    for m in seen {
        if m.src == phone {
            rounds.push(Vec::new());
        }
        if let Some(r) = rounds.last_mut() {
            r.push(m);
        }
    }
    let _ = writeln!(
        s,
        "The phone asks its resolver for {NAME}, cold, then a second later; the DNS messages on {wire} ({}):",
        file.display()
    );
    for (i, round) in rounds.iter().enumerate() {
        let t0 = round.first().map_or(0, |m| m.ts_ns);
        let upstream = round
            .iter()
            .filter(|m| m.src == resolver && m.dst != phone)
            .count();
        let _ = match (i, upstream) {
            (0, _) => writeln!(s, "  the first question: {upstream} queries to other servers"),
            (_, 0) => writeln!(
                s,
                "  the second: answered from the resolver's cache, no query left it, the TTLs lower by the time the answer was kept"
            ),
            _ => writeln!(s, "  again: {upstream} queries to other servers"),
        };
        for m in round {
            let _ = writeln!(
                s,
                "    +{:>7.1} ms  {} → {}  {}",
                (m.ts_ns - t0) as f64 / 1e6,
                who(m.src),
                who(m.dst),
                m.line
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(ms: f64, src: [u8; 4], dst: [u8; 4], line: &str) -> Seen {
        Seen {
            ts_ns: (ms * 1e6) as u64,
            src: src.into(),
            dst: dst.into(),
            line: line.into(),
        }
    }

    #[test]
    fn the_walk_then_the_cached_answer_each_round_from_the_phones_query() {
        let (phone, res, root) = ([198, 51, 100, 130], [198, 18, 2, 2], [198, 18, 0, 2]);
        let msgs = [
            seen(
                0.0,
                phone,
                res,
                "query www.geektime.com. A, recursion desired",
            ),
            seen(0.2, res, root, "query www.geektime.com. A"),
            seen(0.9, root, res, "referral to com. 172800 NS a.gtld.lab."),
            seen(5.0, res, phone, "answer: www.geektime.com. 600 CNAME …"),
            seen(
                1005.0,
                phone,
                res,
                "query www.geektime.com. A, recursion desired",
            ),
            seen(1005.1, res, phone, "answer: www.geektime.com. 599 CNAME …"),
        ];
        let names = BTreeMap::from([
            (Ipv4Addr::from(res), "resolver".to_string()),
            (Ipv4Addr::from(root), "dns-root".to_string()),
        ]);
        let s = tell(
            &msgs,
            res.into(),
            "resolver:eth0",
            &names,
            Path::new("/tmp/x.pcapng"),
        );
        assert!(
            s.contains("the first question: 1 queries to other servers"),
            "{s}"
        );
        assert!(
            s.contains("the second: answered from the resolver's cache"),
            "{s}"
        );
        assert!(
            s.contains(
                "+    0.9 ms  198.18.0.2 (dns-root) → 198.18.2.2 (resolver)  referral to com."
            ),
            "{s}"
        );
        assert!(
            s.contains("198.51.100.130 (the phone, NATed) → 198.18.2.2 (resolver)"),
            "{s}"
        );
        assert!(s.contains("+    0.1 ms  198.18.2.2 (resolver) → 198.51.100.130 (the phone, NATed)  answer: www.geektime.com. 599"), "{s}");
    }
}
