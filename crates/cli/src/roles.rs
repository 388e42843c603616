//! From a topology's element node to an element: one arm per role.
//!
//! A role's own settings live under its node's `config` table and are
//! parsed here with the role's typed configuration (unknown keys refused);
//! `d11 up` runs [`check`] on every element before it builds anything, so a
//! wrong setting is one line naming its key, like any topology error.

use d11_core::Element;
use d11_elements::{null::Null, router, switch};
use d11_lab::{ElementSpec, Role, Topology, TopologyError};
use serde::de::DeserializeOwned;

/// What is wrong with one element's settings: the key below its node
/// (`config.bearers[0].teid`, `ports[1].address`) and why.
#[derive(Debug)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

/// Builds the element a node's role names.
pub fn build(spec: &ElementSpec) -> Result<Box<dyn Element>, ConfigError> {
    Ok(match spec.role {
        Role::Router => {
            config::<NoConfig>(spec)?;
            Box::new(router::Router::new(router_config(spec)?))
        }
        Role::Switch => {
            config::<NoConfig>(spec)?;
            let names = spec.ports.iter().map(|p| p.name.clone());
            Box::new(switch::Switch::new(switch::SwitchConfig::new(names)))
        }
        Role::Null => {
            config::<NoConfig>(spec)?;
            Box::new(Null::new(spec.ports.len() as u16))
        }
    })
}

/// Checks every element's settings; the error names the file, line and key.
pub fn check(topo: &Topology) -> Result<(), TopologyError> {
    for (i, n) in topo.nodes.iter().enumerate() {
        if let Some(spec) = topo.element(&n.name) {
            build(&spec).map_err(|e| topo.error_at(&format!("nodes[{i}].{}", e.key), e.message))?;
        }
    }
    Ok(())
}

/// Roles without settings of their own refuse any `config` key.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoConfig {}

/// Parses a node's `config` table as `T`, naming the failing key.
fn config<T: DeserializeOwned>(spec: &ElementSpec) -> Result<T, ConfigError> {
    let value = toml::Value::Table(spec.config.clone());
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ConfigError {
            key: if path == "." {
                "config".into()
            } else {
                format!("config.{path}")
            },
            message: format!("{} (role {})", e.into_inner(), spec.role.as_str()),
        }
    })
}

fn router_config(spec: &ElementSpec) -> Result<router::RouterConfig, ConfigError> {
    let ports = spec
        .ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Ok(router::RouterPort {
                name: p.name.clone(),
                mac: p.mac,
                address: p.address.ok_or_else(|| ConfigError {
                    key: format!("ports[{i}].address"),
                    message: "a router port needs an address".into(),
                })?,
                mtu: p.mtu,
            })
        })
        .collect::<Result<_, _>>()?;
    let routes = spec
        .routes
        .iter()
        .map(|r| router::StaticRoute {
            to: r.to,
            via: r.via,
        })
        .collect();
    Ok(router::RouterConfig { ports, routes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn carrier_with(extra: &str) -> Result<Topology, TopologyError> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../netns/carrier.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let text = text.replacen(
            "role = \"router\"\n",
            &format!("role = \"router\"\n{extra}"),
            1,
        );
        Topology::parse(&text, "carrier.toml")
    }

    #[test]
    fn every_shipped_element_builds() {
        for f in [
            "carrier.toml",
            "double11.toml",
            "bench-router.toml",
            "bench-null.toml",
        ] {
            let t = Topology::load(std::path::Path::new(&format!(
                "{}/../../netns/{f}",
                env!("CARGO_MANIFEST_DIR")
            )))
            .unwrap();
            check(&t).unwrap_or_else(|e| panic!("{f}: {e}"));
        }
    }

    #[test]
    fn a_setting_a_role_does_not_know_is_named() {
        let t = carrier_with("config = { bearers = [] }\n").unwrap();
        let e = check(&t).unwrap_err().to_string();
        assert!(e.contains("nodes[1] (\"a2\").config"), "{e}");
        assert!(e.contains("unknown field `bearers`"), "{e}");
        assert_eq!(e.lines().count(), 1);
    }
}
