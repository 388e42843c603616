//! `d11 bench cdn`: our CDN cache against Debian's nginx `proxy_cache`
//! (issue 17's benchmark), on loopback in this process, no root. One
//! origin (`cdn-origin`); in front of it our parent and our edge
//! (`cdn-cache`, in this process's tokio runtime) and, beside them, an
//! nginx parent and an nginx edge configured to the same policy
//! ([`d11_apps::cdn::reference`]), all over TLS with a fresh lab PKI.
//!
//! - Hits: `wrk` (Debian) against each edge with the cover warm,
//!   alternating ours and nginx's `rounds` times: requests/s and p99, each
//!   round's ratio ours ÷ nginx (goals: ≥ 1.0× requests/s, ≤ 1.0× p99).
//! - Misses: `misses` cold objects fetched through each chain (edge →
//!   parent → origin) by one curl over one keep-alive connection: the
//!   median time of a miss, ours ÷ nginx's.

use crate::{finite, median, Figure, Goal, RoundRatio};
use anyhow::{bail, Context, Result};
use d11_apps::cdn::cache::{Cache, CacheSettings};
use d11_apps::cdn::reference::NginxCache;
use d11_apps::cdn::{ObjectSettings, Origin, OriginSettings};
use d11_apps::pki::{self, PkiPaths};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

const NAME: &str = "static.geektime.com";
const COVER: &str = "/images/cover.jpg";

/// Options of `d11 bench cdn`.
#[derive(Debug, Clone, clap::Args)]
pub struct CdnArgs {
    /// Seconds of each wrk run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// wrk's connections.
    #[arg(long, default_value_t = 50)]
    pub connections: u32,
    /// Rounds of (ours, nginx); the report keeps the median ratio.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Cold objects fetched through each chain.
    #[arg(long, default_value_t = 50)]
    pub misses: usize,
    /// Bytes of the cover (the object wrk asks for).
    #[arg(long, default_value_t = 120_000)]
    pub size: usize,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One wrk run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Wrk {
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Non-2xx answers and socket errors wrk counted.
    pub errors: u64,
}

/// What `d11 bench cdn` measures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CdnReport {
    pub ours: Vec<Wrk>,
    pub nginx: Vec<Wrk>,
    /// Per round, ours ÷ nginx.
    pub requests_ratio: Option<RoundRatio>,
    pub p99_ratio: Option<RoundRatio>,
    pub miss_ms_ours: f64,
    pub miss_ms_nginx: f64,
    pub miss_ratio: f64,
    pub connections: u32,
    pub seconds: u32,
    pub object_bytes: usize,
}

pub fn cdn(args: &CdnArgs) -> Result<()> {
    for tool in ["wrk", "nginx"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map_or(true, |o| !o.status.success())
        {
            bail!("{tool} is not installed (apt-get install -y {tool})");
        }
    }
    let dir = std::env::temp_dir().join(format!("d11-bench-cdn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let r = run(args, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let r = r?;
    print!("{}", table(&r));
    crate::print_figures(&r.figures());
    crate::write_json(args.json.as_deref(), &r)
}

impl CdnReport {
    /// The figures, each the median of its rounds beside nginx's.
    pub fn figures(&self) -> Vec<Figure> {
        let med = |w: &[Wrk], f: fn(&Wrk) -> f64| finite(median(w.iter().map(f).collect()));
        vec![
            Figure {
                figure: "edge hits: wrk requests/s on a warm object over TLS".into(),
                value: med(&self.ours, |w| w.requests_per_s),
                baseline: "nginx proxy_cache, the same policy",
                base: med(&self.nginx, |w| w.requests_per_s),
                goal: Goal::ratio_at_least(1.0),
            },
            Figure {
                figure: "edge hits: wrk p99, ms".into(),
                value: med(&self.ours, |w| w.p99_ms),
                baseline: "nginx proxy_cache, the same policy",
                base: med(&self.nginx, |w| w.p99_ms),
                goal: Goal::ratio_at_most(1.0),
            },
            Figure {
                figure: "a miss through edge → parent → origin, ms".into(),
                value: finite(self.miss_ms_ours),
                baseline: "through nginx edge and parent",
                base: finite(self.miss_ms_nginx),
                goal: None,
            },
        ]
    }
}

fn run(args: &CdnArgs, dir: &Path) -> Result<CdnReport> {
    let paths = PkiPaths::new(dir.join("pki"));
    pki::make(&paths, "bench", &[NAME]).context("making a PKI")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut objects = vec![object(COVER, args.size)];
    objects.extend((0..2 * args.misses).map(|i| object(&format!("/cold/{i}.jpg"), 20_000)));
    let settings = OriginSettings {
        listen: "127.0.0.1:0".parse()?,
        objects,
        max_put: 1 << 20,
        header_timeout_ms: 5000,
        handshake_timeout_ms: 5000,
        max_connections: 4096,
    };
    let (origin_port, parent_port, edge_port) = rt.block_on(async {
        let origin = Origin::new(&settings, pki::server_config(&paths)?)?;
        let (listener, origin_port) = bind().await?;
        tokio::spawn(async move { origin.serve(listener, std::future::pending()).await });
        let mut ports = vec![origin_port];
        for name in ["parent", "edge"] {
            let c = cache(&paths, name, *ports.last().unwrap_or(&origin_port))?;
            let (listener, port) = bind().await?;
            tokio::spawn(async move { c.serve(listener, std::future::pending()).await });
            ports.push(port);
        }
        anyhow::Ok((ports[0], ports[1], ports[2]))
    })?;
    eprintln!("cdn: origin :{origin_port}, our parent :{parent_port}, our edge :{edge_port}");
    let ng_parent = NginxCache::start(&dir.join("ng-parent"), &paths, origin_port, NAME, 2)?;
    let ng_edge = NginxCache::start(&dir.join("ng-edge"), &paths, ng_parent.port, NAME, 2)?;

    eprintln!(
        "cdn: nginx parent :{}, nginx edge :{}",
        ng_parent.port, ng_edge.port
    );
    // Misses first, while everything is cold: one chain, then the other.
    let cold = |from: usize| -> Vec<String> {
        (from..from + args.misses)
            .map(|i| format!("/cold/{i}.jpg"))
            .collect()
    };
    // curl over one keep-alive connection, the time of each transfer.
    let miss = |port: u16, paths_: Vec<String>| -> Result<f64> {
        let mut c = Command::new("curl");
        c.args(["-sS", "--fail", "--cacert"])
            .arg(paths.root_cert())
            .args(["--resolve", &format!("{NAME}:{port}:127.0.0.1")])
            .args(["-w", "%{time_total}\\n"]);
        for p in &paths_ {
            c.args(["-o", "/dev/null", &format!("https://{NAME}:{port}{p}")]);
        }
        let out = c.output().context("running curl")?;
        if !out.status.success() {
            bail!("curl: {}", String::from_utf8_lossy(&out.stderr));
        }
        let ms: Vec<f64> = (String::from_utf8_lossy(&out.stdout).lines())
            .filter_map(|l| l.trim().parse::<f64>().ok())
            .map(|s| s * 1e3)
            .collect();
        Ok(median(ms))
    };
    let miss_ms_ours = miss(edge_port, cold(0))?;
    eprintln!(
        "cdn: {} misses through ours: median {miss_ms_ours:.2} ms",
        args.misses
    );
    let miss_ms_nginx = miss(ng_edge.port, cold(0))?;
    // Warm the cover at both edges.
    miss(edge_port, vec![COVER.into()])?;
    miss(ng_edge.port, vec![COVER.into()])?;

    let mut r = CdnReport {
        miss_ms_ours,
        miss_ms_nginx,
        miss_ratio: miss_ms_ours / miss_ms_nginx,
        connections: args.connections,
        seconds: args.seconds,
        object_bytes: args.size,
        ..CdnReport::default()
    };
    for _ in 0..args.rounds.max(1) {
        r.ours.push(wrk(args, edge_port)?);
        r.nginx.push(wrk(args, ng_edge.port)?);
    }
    let each = |f: fn(&Wrk) -> f64| -> Vec<f64> {
        (r.ours.iter().zip(&r.nginx))
            .map(|(a, b)| f(a) / f(b))
            .collect()
    };
    r.requests_ratio = Some(RoundRatio::of(each(|w| w.requests_per_s)));
    r.p99_ratio = Some(RoundRatio::of(each(|w| w.p99_ms)));
    drop(rt);
    Ok(r)
}

fn object(path: &str, size: usize) -> ObjectSettings {
    ObjectSettings {
        path: path.into(),
        content_type: "image/jpeg".into(),
        cache_control: Some("public, max-age=600".into()),
        vary: None,
        size,
    }
}

fn cache(paths: &PkiPaths, name: &str, upstream: u16) -> Result<Arc<Cache>> {
    let settings = CacheSettings {
        listen: "127.0.0.1:0".parse()?,
        upstream: ([127, 0, 0, 1], upstream).into(),
        upstream_name: NAME.into(),
        name: Some(name.into()),
        max_bytes: 256 << 20,
        upstream_timeout_ms: 10_000,
        upstream_idle: 16,
        header_timeout_ms: 5000,
        handshake_timeout_ms: 5000,
        max_connections: 4096,
    };
    let server = pki::server_config(paths)?;
    let client = pki::client_config(&paths.root_cert(), false)?;
    Ok(Cache::new(name, settings, server, client))
}

/// A fresh loopback port to serve on.
async fn bind() -> Result<(tokio::net::TcpListener, u16)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    Ok((listener, port))
}

/// `wrk --latency` against the cover at `port`.
fn wrk(args: &CdnArgs, port: u16) -> Result<Wrk> {
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{}", args.connections),
            &format!("-d{}s", args.seconds),
            "--latency",
            "-H",
            &format!("Host: {NAME}"),
            &format!("https://127.0.0.1:{port}{COVER}"),
        ])
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    parse_wrk(&text).with_context(|| format!("reading wrk's output:\n{text}"))
}

/// Requests/sec, the 50 % and 99 % latencies and the errors of wrk's text.
pub fn parse_wrk(text: &str) -> Option<Wrk> {
    let mut w = Wrk::default();
    let ms = |v: &str| -> Option<f64> {
        let (n, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
        let n: f64 = n.parse().ok()?;
        Some(match unit {
            "us" => n / 1e3,
            "ms" => n,
            "s" => n * 1e3,
            "m" => n * 60e3,
            _ => return None,
        })
    };
    let (mut rps, mut p50, mut p99) = (None, None, None);
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        match f.as_slice() {
            ["Requests/sec:", v] => rps = v.parse().ok(),
            ["50%", v] => p50 = ms(v),
            ["99%", v] => p99 = ms(v),
            ["Non-2xx", "or", "3xx", "responses:", n] => w.errors += n.parse::<u64>().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                w.errors += (rest.chunks(2))
                    .filter_map(|c| c.get(1)?.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    w.requests_per_s = rps?;
    w.p50_ms = p50?;
    w.p99_ms = p99?;
    Some(w)
}

fn table(r: &CdnReport) -> String {
    let mut s = format!(
        "d11 bench cdn: wrk -c{} -d{}s on a warm {}-byte object at each edge, over TLS on loopback\n",
        r.connections, r.seconds, r.object_bytes
    );
    s += "round  ours req/s  p99 ms   nginx req/s  p99 ms   req/s ratio  p99 ratio\n";
    for (i, (a, b)) in r.ours.iter().zip(&r.nginx).enumerate() {
        s += &format!(
            "{:<6} {:>10.0}  {:>6.2}   {:>11.0}  {:>6.2}   {:>10.2}×  {:>8.2}×\n",
            i + 1,
            a.requests_per_s,
            a.p99_ms,
            b.requests_per_s,
            b.p99_ms,
            a.requests_per_s / b.requests_per_s,
            a.p99_ms / b.p99_ms
        );
    }
    if let (Some(q), Some(p)) = (&r.requests_ratio, &r.p99_ratio) {
        s += &format!(
            "hits: requests/s ours ÷ nginx {:.2}× (goal ≥ 1.0×), p99 {:.2}× (goal ≤ 1.0×), median of rounds\n",
            q.median.unwrap_or(f64::NAN),
            p.median.unwrap_or(f64::NAN)
        );
    }
    s += &format!(
        "a miss through edge → parent → origin: ours {:.2} ms, nginx {:.2} ms (median), ratio {:.2}×\n",
        r.miss_ms_ours, r.miss_ms_nginx, r.miss_ratio
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two real runs of Debian's wrk 4.1.0 against Debian's nginx 1.22 on
    /// loopback (plain HTTP; over TLS wrk prints the same), nginx with
    /// `master_process off; worker_processes 1;` and `server { listen
    /// 127.0.0.1:18081; root WWW; }`, WWW holding a 120000-byte
    /// `images/cover.jpg`. This one with `worker_connections 4096`:
    /// `wrk -t2 -c50 -d2s --latency http://127.0.0.1:18081/images/cover.jpg`.
    const WRK_COVER: &str = include_str!("fixtures/wrk-cover.txt");
    /// This one with `worker_connections 40`, fewer than wrk's 50, so
    /// nginx resets the rest (socket read errors), asking for an object
    /// that is not there (404s): `wrk -t2 -c50 -d2s --latency
    /// http://127.0.0.1:18081/images/none.jpg`.
    const WRK_ERRORS: &str = include_str!("fixtures/wrk-404-errors.txt");

    #[test]
    fn wrk_text_gives_requests_per_second_the_percentiles_and_errors() {
        let w = parse_wrk(WRK_COVER).unwrap();
        assert_eq!(w.requests_per_s, 15848.78);
        assert_eq!((w.p50_ms, w.p99_ms), (2.38, 11.17));
        assert_eq!(w.errors, 0);
        // Microseconds, the socket errors and the non-2xx answers.
        let w = parse_wrk(WRK_ERRORS).unwrap();
        assert_eq!(w.requests_per_s, 57224.04);
        assert_eq!((w.p50_ms, w.p99_ms), (0.363, 11.72));
        assert_eq!(w.errors, 6892 + 116004);
        assert!(parse_wrk("garbage").is_none());
    }
}
