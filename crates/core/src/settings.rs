//! A role's or an app's own settings: the `config` table under its node in
//! the topology, parsed with the role's typed configuration
//! (`deny_unknown_fields`), so that a wrong setting is one line naming its
//! key, like any topology error.

use serde::de::DeserializeOwned;

/// What is wrong with one node's settings: the key below its node
/// (`config.bearers[0].teid`, `ports[1].address`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Settings of a role or app that has none: any key is refused.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoSettings {}

/// Parses a node's `config` table as `T`; the error names the failing key
/// and `owner` (`role pgw`, `app l4lb`).
pub fn parse<T: DeserializeOwned>(table: &toml::Table, owner: &str) -> Result<T, ConfigError> {
    let value = toml::Value::Table(table.clone());
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ConfigError {
            key: if path == "." {
                "config".into()
            } else {
                format!("config.{path}")
            },
            // toml's messages add lines naming the table ("in `bgp.neighbors`"),
            // which the key already says: one line.
            message: format!(
                "{} ({owner})",
                e.into_inner()
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
            ),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct S {
        a: Vec<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u8,
    }

    #[test]
    fn the_error_names_the_key_and_the_owner() {
        let t: toml::Table = toml::from_str("a = [ { n = 1 }, { n = 300 } ]").unwrap();
        let e = parse::<S>(&t, "role x").unwrap_err();
        assert_eq!(e.key, "config.a[1].n");
        assert!(e.message.ends_with("(role x)"), "{e}");
        let t: toml::Table = toml::from_str("b = 1").unwrap();
        let e = parse::<NoSettings>(&t, "role y").unwrap_err();
        assert_eq!(e.key, "config.b");
        assert!(e.message.contains("unknown field `b`"), "{e}");
        let t: toml::Table = toml::from_str("a = [ { n = 1, m = 2 } ]").unwrap();
        let e = parse::<S>(&t, "role x").unwrap_err();
        assert_eq!(e.key, "config.a[0].m");
        assert_eq!(e.to_string().lines().count(), 1, "{e}");
    }
}
