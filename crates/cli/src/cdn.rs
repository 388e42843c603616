//! The CDN from the command line (docs/cdn.md): `d11 purge EDGE KEY`.

use anyhow::{bail, Context, Result};
use d11_lab::RunDir;
use std::time::Duration;

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
