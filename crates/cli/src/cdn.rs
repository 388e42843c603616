//! The CDN from the command line (docs/cdn.md): `d11 browse` (the phone
//! looks at the product page's pictures) and `d11 purge EDGE KEY`.

use crate::{need_root, LabArg};
use anyhow::{bail, Context, Result};
use d11_apps::cdn::browse::{self, BrowseRequest, Page};
use d11_apps::cdn::{object_bytes, OriginSettings};
use d11_apps::dns::stub::Resolved;
use d11_lab::RunDir;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

/// The product page's pictures (the course's cover first).
pub const PAGE: [&str; 3] = [
    "/images/cover.jpg",
    "/images/thumb-1.jpg",
    "/images/thumb-2.jpg",
];

/// Options of `d11 browse`.
#[derive(Debug, clap::Args)]
pub struct BrowseArgs {
    #[command(flatten)]
    pub lab: LabArg,
    /// The phone: the host whose namespace, resolver and stack are used.
    #[arg(long, default_value = "ue")]
    pub node: String,
    /// The pictures' host name (resolved as the node resolves it).
    #[arg(long, default_value = "static.geektime.com")]
    pub host: String,
    /// The pictures' paths (default: the product page's).
    pub paths: Vec<String>,
    /// Milliseconds for the whole page.
    #[arg(long, default_value_t = 10000)]
    pub timeout_ms: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `d11 browse --json` prints.
#[derive(Debug, Serialize, Deserialize)]
pub struct Browsed {
    pub resolved: Resolved,
    pub page: Page,
    /// Per picture: whether its bytes are what the origin made at `d11 up`
    /// (None: the origin's config does not name it).
    pub as_made: Vec<Option<bool>>,
}

/// Fetches the pictures from `node` as its browser would: the name
/// resolved by its resolver, one HTTPS connection to that edge.
pub fn fetch(
    lab: &str,
    node: &str,
    host: &str,
    paths: &[String],
    timeout: Duration,
) -> Result<Browsed> {
    d11_lab::check_lab_name(lab)?;
    let dir = RunDir::new(lab);
    if !dir.exists() {
        bail!("there is no lab named {lab} (start it with: d11 up --name {lab})");
    }
    let topo = dir.topology().context("reading the lab's topology")?;
    if topo.node(node).is_none() {
        bail!("lab {lab} has no node {node:?}");
    }
    need_root("d11 browse")?;
    let resolved = crate::order::lookup(lab, node, host)?;
    let req = BrowseRequest {
        host: host.to_string(),
        addr: SocketAddr::from((resolved.addrs[0], 443)),
        root: d11_apps::pki::PkiPaths::new(dir.pki_dir()).root_cert(),
        key_log: std::env::var_os("SSLKEYLOGFILE").is_some(),
        paths: paths.to_vec(),
        timeout,
    };
    let page = {
        let _netns = d11_io::NetnsGuard::enter(&d11_lab::netns_name(lab, node))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the tokio runtime")?;
        rt.block_on(browse::browse(&req))
            .with_context(|| format!("{node} fetching from {}", req.addr))?
    };
    // The origin's objects as made at `d11 up`, to check the bytes by.
    let made: Vec<(String, usize)> = (topo.apps().into_iter())
        .filter(|a| a.app == "cdn-origin")
        .filter_map(|a| d11_core::settings::parse::<OriginSettings>(&a.config, &a.name).ok())
        .flat_map(|o| o.objects.into_iter().map(|o| (o.path, o.size)))
        .collect();
    let as_made = (page.pictures.iter())
        .map(|p| {
            let (_, size) = made.iter().find(|(path, _)| *path == p.path)?;
            Some(p.body == object_bytes(&p.path, *size))
        })
        .collect();
    Ok(Browsed {
        resolved,
        page,
        as_made,
    })
}

/// `d11 browse`.
pub fn browse(args: &BrowseArgs) -> Result<ExitCode> {
    let paths: Vec<String> = match args.paths.is_empty() {
        true => PAGE.iter().map(|p| p.to_string()).collect(),
        false => args.paths.clone(),
    };
    let timeout = Duration::from_millis(args.timeout_ms);
    let b = fetch(&args.lab.name, &args.node, &args.host, &paths, timeout)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&b)?);
    } else {
        print!("{}", lines(&args.host, &b).join(""));
    }
    let ok = b.page.pictures.iter().all(|p| p.status == 200);
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What `d11 browse` prints: how the name resolved, the connection, then
/// a line per picture.
pub fn lines(host: &str, b: &Browsed) -> Vec<String> {
    let p = &b.page;
    let mut out = vec![
        format!("{}\n", crate::order::resolution_line(&b.resolved)),
        format!(
            "connected to {} from {} over {} in {:.1} ms\n",
            p.remote, p.local, p.tls_version, p.connect_ms
        ),
    ];
    for (pic, made) in p.pictures.iter().zip(&b.as_made) {
        let age = pic.age.map_or("-".into(), |a| format!("{a} s"));
        let check = match made {
            Some(true) => ", the origin's bytes",
            Some(false) => ", not the bytes the origin started with",
            None => "",
        };
        out.push(format!(
            "GET https://{host}{}: {} {} bytes in {:.1} ms{check}\n    served by {} ({}), Age {age}\n    X-Cache: {}\n",
            pic.path,
            pic.status,
            pic.bytes,
            pic.ms,
            pic.edge().unwrap_or("?"),
            p.remote.ip(),
            pic.x_cache.as_deref().unwrap_or("-"),
        ));
    }
    out
}

/// The store's key of `what`: `host/path` as given, or a URL's
/// (`https://static.geektime.com/images/cover.jpg`).
pub fn purge_key(what: &str) -> String {
    let rest = (what.strip_prefix("https://"))
        .or_else(|| what.strip_prefix("http://"))
        .unwrap_or(what);
    match rest.split_once('/') {
        Some((host, path)) => format!("{}/{path}", host.to_ascii_lowercase()),
        None => format!("{}/", rest.to_ascii_lowercase()),
    }
}

/// `d11 purge NODE KEY`: the cache at NODE forgets KEY; says whether it
/// held it.
pub fn purge(lab: &str, node: &str, what: &str) -> Result<()> {
    d11_lab::check_lab_name(lab)?;
    let sock = RunDir::new(lab).socket(node);
    let key = purge_key(what);
    let v = d11_io::query(&sock, &format!("purge {key}"), Duration::from_secs(1))
        .with_context(|| format!("{node}: no cache answering on {}", sock.display()))?;
    match v.get("purged").and_then(|p| p.as_bool()) {
        Some(true) => println!("{node}: purged {key}"),
        Some(false) => println!("{node}: {key} was not stored"),
        None => bail!("{node}: {v} (is it a cache, app \"cdn-cache\"?)"),
    }
    Ok(())
}

/// Chapter 4 of `d11 demo` from two `d11 browse --json` of the product
/// page, a second apart: the chain of names, then each picture's first
/// view (a miss at edge and parent, fetched from the origin) and second (a
/// hit at the edge, with its Age).
pub fn chapter4(first: &Browsed, second: &Browsed) -> String {
    let r = &first.resolved;
    let mut out = format!(
        "The phone's resolver ({}) follows the shop's CNAME into the CDN's domain and the CDN's \
         CNAME to its GSLB, which answers the edge nearest that resolver:\n",
        r.via
    );
    for c in &r.cnames {
        out += &format!("  CNAME {c}\n");
    }
    let addrs: Vec<String> = r.addrs.iter().map(|a| a.to_string()).collect();
    out += &format!("  A {} (TTL {} s)\n", addrs.join(" "), r.ttl.unwrap_or(0));
    for (view, b) in [("first view", first), ("second view", second)] {
        out += &format!(
            "{view}: one TLS connection to {} ({}), a GET per picture\n",
            b.page.remote, b.page.tls_version
        );
        for (p, made) in b.page.pictures.iter().zip(&b.as_made) {
            let how = match p.x_cache.as_deref() {
                Some(x) if x.starts_with("HIT") => format!(
                    "a hit at {} (Age {} s)",
                    p.edge().unwrap_or("?"),
                    p.age.unwrap_or(0)
                ),
                Some(x) if x.matches("MISS").count() >= 2 => {
                    "a miss at the edge and at the parent: fetched from the origin".to_string()
                }
                Some(x) => x.to_string(),
                None => "no X-Cache".to_string(),
            };
            let same = match made {
                Some(true) => ", the origin's bytes",
                _ => "",
            };
            out += &format!(
                "  {:<22} {} {:>7} bytes {:>6.1} ms  {how}{same}\n      X-Cache: {}\n",
                p.path,
                p.status,
                p.bytes,
                p.ms,
                p.x_cache.as_deref().unwrap_or("-")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::purge_key;

    #[test]
    fn a_url_or_a_key_names_the_same_object() {
        for w in [
            "https://Static.geektime.com/images/cover.jpg",
            "static.geektime.com/images/cover.jpg",
        ] {
            assert_eq!(purge_key(w), "static.geektime.com/images/cover.jpg");
        }
        assert_eq!(purge_key("static.geektime.com"), "static.geektime.com/");
    }
}
