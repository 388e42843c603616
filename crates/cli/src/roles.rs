//! From a topology's element node to an element: one arm per role.
//!
//! A role's own settings live under its node's `config` table and are
//! parsed here with the role's typed configuration (unknown keys refused);
//! `d11 up` runs [`check`] on every element before it builds anything, so a
//! wrong setting is one line naming its key, like any topology error.

use d11_core::nat::{NatConfig, SnatPool, Timeouts};
use d11_core::Element;
use d11_elements::bearer::{Bearer, BearerError};
use d11_elements::{enb, null::Null, pgw, router, sgw, switch};
use d11_lab::{ElementSpec, Role, Topology, TopologyError};
use d11_wire::Ipv4Cidr;
use serde::de::DeserializeOwned;
use std::net::Ipv4Addr;

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
        Role::Enb => {
            let c = config::<EnbSettings>(spec)?;
            let router = mobile_router(spec, ["radio", "s1u"])?;
            Box::new(
                enb::Enb::new(enb::EnbConfig {
                    router,
                    sgw: c.sgw,
                    bearers: c.bearers,
                })
                .map_err(bearer_error)?,
            )
        }
        Role::Sgw => {
            let c = config::<SgwSettings>(spec)?;
            let router = mobile_router(spec, ["s1u", "s5"])?;
            Box::new(
                sgw::Sgw::new(sgw::SgwConfig {
                    router,
                    enb: c.enb,
                    pgw: c.pgw,
                    bearers: c.bearers,
                })
                .map_err(bearer_error)?,
            )
        }
        Role::Pgw => Box::new(pgw::Pgw::new(pgw_config(spec)?).map_err(bearer_error)?),
    })
}

/// `config` of an `enb` node.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EnbSettings {
    /// The SGW's S1-U address.
    sgw: Ipv4Addr,
    bearers: Vec<Bearer>,
}

/// `config` of an `sgw` node.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SgwSettings {
    /// The eNB's S1-U address.
    enb: Ipv4Addr,
    /// The PGW's S5 address.
    pgw: Ipv4Addr,
    bearers: Vec<Bearer>,
}

/// `config` of a `pgw` node.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PgwSettings {
    /// The SGW's S5 address.
    sgw: Ipv4Addr,
    /// The UE pool; its first host address is the UE's gateway.
    ue_pool: Ipv4Cidr,
    /// The public prefix the NAT maps UE flows into.
    nat_pool: Ipv4Cidr,
    /// First and last NAT port per public address (default 1024–65535).
    #[serde(default = "default_nat_ports")]
    nat_ports: [u16; 2],
    /// The most NAT entries (default 65536).
    #[serde(default = "default_nat_max_entries")]
    nat_max_entries: usize,
    /// The MTU the UE's link was given (default 1400).
    #[serde(default = "default_ue_mtu")]
    ue_mtu: u16,
    bearers: Vec<Bearer>,
}

fn default_ue_mtu() -> u16 {
    1400
}

fn default_nat_ports() -> [u16; 2] {
    [1024, 65535]
}

fn default_nat_max_entries() -> usize {
    65536
}

fn bearer_error(e: BearerError) -> ConfigError {
    ConfigError {
        key: "config.bearers".into(),
        message: e.to_string(),
    }
}

/// The embedded router of a mobile element: its two ports, named as the
/// role expects, in order.
fn mobile_router(
    spec: &ElementSpec,
    names: [&str; 2],
) -> Result<router::RouterConfig, ConfigError> {
    if spec.ports.len() != 2 {
        return Err(ConfigError {
            key: "ports".into(),
            message: format!(
                "role {} has exactly the ports {names:?}",
                spec.role.as_str()
            ),
        });
    }
    for (i, (p, want)) in spec.ports.iter().zip(names).enumerate() {
        if p.name != want {
            return Err(ConfigError {
                key: format!("ports[{i}].name"),
                message: format!("role {} expects port {want:?} here", spec.role.as_str()),
            });
        }
    }
    router_config(spec)
}

fn pgw_config(spec: &ElementSpec) -> Result<pgw::PgwConfig, ConfigError> {
    let c = config::<PgwSettings>(spec)?;
    let router = mobile_router(spec, ["s5", "sgi"])?;
    let pool = c.ue_pool.network();
    let gateway = Ipv4Addr::from(u32::from(pool.addr()) + 1);
    for (i, b) in c.bearers.iter().enumerate() {
        if !pool.contains(b.ue_ip) || b.ue_ip == gateway || b.ue_ip == pool.broadcast() {
            return Err(ConfigError {
                key: format!("config.bearers[{i}].ue_ip"),
                message: format!("{} is not a UE address of ue_pool {pool}", b.ue_ip),
            });
        }
    }
    let [lo, hi] = c.nat_ports;
    if lo == 0 || lo > hi {
        return Err(ConfigError {
            key: "config.nat_ports".into(),
            message: "expected [first, last] with 0 < first <= last".into(),
        });
    }
    let net = c.nat_pool.network();
    if net.prefix_len() < 16 {
        return Err(ConfigError {
            key: "config.nat_pool".into(),
            message: "a NAT pool is at most a /16".into(),
        });
    }
    let size = 1u64 << (32 - u32::from(net.prefix_len()));
    let addrs = (0..size)
        .map(|i| Ipv4Addr::from(u32::from(net.addr()) + i as u32))
        .collect();
    Ok(pgw::PgwConfig {
        router,
        sgw: c.sgw,
        gateway,
        nat_pool: net,
        ue_mtu: c.ue_mtu,
        nat: NatConfig {
            snat: Some(SnatPool {
                addrs,
                ports: lo..=hi,
            }),
            dnat: Vec::new(),
            max_entries: c.nat_max_entries,
            timeouts: Timeouts::default(),
        },
        bearers: c.bearers,
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
