//! From a topology's element node to an element: one arm per role.
//!
//! A role's own settings live under its node's `config` table and are
//! parsed here with the role's typed configuration (unknown keys refused);
//! `d11 up` runs [`check`] on every element before it builds anything, so a
//! wrong setting is one line naming its key, like any topology error.

use d11_core::nat::{DnatRule, NatConfig, Proto, SnatPool, Timeouts};
use d11_core::Element;
use d11_elements::bearer::{Bearer, BearerError, BearerRange, BearerRangeError, Bearers};
use d11_elements::{enb, null::Null, pgw, router, sgw, switch, vgw, vswitch};
use d11_lab::{ElementSpec, Role, Topology, TopologyError};
use d11_wire::vxlan::Vni;
use d11_wire::{Ipv4Cidr, MacAddr};
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
            let mut e = enb::Enb::new(enb::EnbConfig {
                router,
                sgw: c.sgw,
                gateway_mac: c.gateway_mac,
                bearers: c.bearers,
            })
            .map_err(bearer_error)?;
            add_ranges(e.bearers_mut(), &c.bearer_ranges)?;
            Box::new(e)
        }
        Role::Sgw => {
            let c = config::<SgwSettings>(spec)?;
            let router = mobile_router(spec, ["s1u", "s5"])?;
            let mut e = sgw::Sgw::new(sgw::SgwConfig {
                router,
                enb: c.enb,
                pgw: c.pgw,
                bearers: c.bearers,
            })
            .map_err(bearer_error)?;
            add_ranges(e.bearers_mut(), &c.bearer_ranges)?;
            Box::new(e)
        }
        Role::Pgw => {
            let (cfg, ranges) = pgw_config(spec)?;
            let mut e = pgw::Pgw::new(cfg).map_err(bearer_error)?;
            add_ranges(e.bearers_mut(), &ranges)?;
            Box::new(e)
        }
        Role::VSwitch => Box::new(vswitch::VSwitch::new(vswitch_config(spec)?)),
        Role::Vgw => Box::new(vgw::Vgw::new(vgw_config(spec)?)),
    })
}

/// `config` of a `vswitch` node: which VM port is in which VNI, where the
/// VNI's broadcasts go, and the stations a controller pushes.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct VSwitchSettings {
    /// Every port but the underlay, once each, with its tenant's VNI.
    vms: Vec<VmSettings>,
    /// Per VNI, the other VTEPs (underlay addresses) that get a copy of
    /// broadcast and unknown unicast frames.
    #[serde(default)]
    flood: Vec<FloodSettings>,
    /// Static FDB entries: VM MACs and the VTEP holding each; with `ip`, the
    /// vSwitch answers its VMs' ARP for it.
    #[serde(default)]
    fdb: Vec<StationSettings>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct VmSettings {
    port: String,
    vni: Vni,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FloodSettings {
    vni: Vni,
    vteps: Vec<Ipv4Addr>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StationSettings {
    vni: Vni,
    mac: MacAddr,
    #[serde(default)]
    ip: Option<Ipv4Addr>,
    vtep: Ipv4Addr,
}

/// `config` of a `vgw` node: the VIPs, the tenant's VPC and the DNAT rules.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct VgwSettings {
    /// Public addresses on the `ext` subnet the gateway answers ARP for.
    vips: Vec<Ipv4Addr>,
    /// The tenant's VNI.
    vni: Vni,
    /// The virtual router's MAC inside the VPC.
    mac: MacAddr,
    /// The virtual router's address in each subnet (one per AZ), like "192.168.1.1/24".
    gateways: Vec<Ipv4Cidr>,
    /// The VPC's VMs: address, MAC and the VTEP of the host holding each.
    stations: Vec<VgwStation>,
    dnat: Vec<DnatSettings>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct VgwStation {
    ip: Ipv4Addr,
    mac: MacAddr,
    vtep: Ipv4Addr,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum ProtoSetting {
    Tcp,
    Udp,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DnatSettings {
    proto: ProtoSetting,
    vip: Ipv4Addr,
    port: u16,
    /// The VM's address and port, like "192.168.1.10:443".
    to: std::net::SocketAddrV4,
}

fn vgw_config(spec: &ElementSpec) -> Result<vgw::VgwConfig, ConfigError> {
    let c = config::<VgwSettings>(spec)?;
    let err = |key: String, message: String| ConfigError { key, message };
    let routers = mobile_router(spec, ["ext", "underlay"])?;
    let (ext, under) = (&routers.ports[0], &routers.ports[1]);
    let gateway = match routers.routes.as_slice() {
        [r] if r.to.prefix_len() == 0 && ext.address.contains(r.via) => r.via,
        _ => {
            return Err(err(
                "routes".into(),
                "a vgw has one route, 0.0.0.0/0 via its neighbour on the ext subnet".into(),
            ))
        }
    };
    for (i, v) in c.vips.iter().enumerate() {
        if !ext.address.contains(*v) || *v == ext.address.addr() {
            return Err(err(
                format!("config.vips[{i}]"),
                format!(
                    "{v} is not another address of the ext subnet {}",
                    ext.address.network()
                ),
            ));
        }
    }
    let mut stations = Vec::with_capacity(c.stations.len());
    for (i, s) in c.stations.iter().enumerate() {
        if !c.gateways.iter().any(|g| g.contains(s.ip)) {
            return Err(err(
                format!("config.stations[{i}].ip"),
                format!("{} is on none of the VPC's subnets (gateways)", s.ip),
            ));
        }
        if !under.address.contains(s.vtep) || s.vtep == under.address.addr() {
            return Err(err(
                format!("config.stations[{i}].vtep"),
                format!(
                    "{} is not a VTEP on the underlay {}",
                    s.vtep,
                    under.address.network()
                ),
            ));
        }
        stations.push(vgw::Station {
            ip: s.ip,
            mac: s.mac,
            vtep: s.vtep,
        });
    }
    let mut dnat = Vec::with_capacity(c.dnat.len());
    for (i, d) in c.dnat.iter().enumerate() {
        if !c.vips.contains(&d.vip) {
            return Err(err(
                format!("config.dnat[{i}].vip"),
                format!("{} is not one of config.vips", d.vip),
            ));
        }
        if !stations.iter().any(|s| s.ip == *d.to.ip()) {
            return Err(err(
                format!("config.dnat[{i}].to"),
                format!("{} is not a station of the VPC", d.to.ip()),
            ));
        }
        dnat.push(DnatRule {
            proto: match d.proto {
                ProtoSetting::Tcp => Proto::Tcp,
                ProtoSetting::Udp => Proto::Udp,
            },
            public: std::net::SocketAddrV4::new(d.vip, d.port),
            private: d.to,
        });
    }
    Ok(vgw::VgwConfig {
        ext: vgw::ExtPort {
            name: ext.name.clone(),
            mac: ext.mac,
            address: ext.address,
            mtu: ext.mtu,
            vips: c.vips,
            gateway,
        },
        underlay: vswitch::UnderlayPort {
            name: under.name.clone(),
            mac: under.mac,
            address: under.address,
            mtu: under.mtu,
        },
        tenant: vgw::Tenant {
            vni: c.vni,
            mac: c.mac,
            gateways: c.gateways,
            stations,
        },
        nat: NatConfig {
            snat: None,
            dnat,
            max_entries: 65536,
            timeouts: Timeouts::default(),
        },
    })
}

fn vswitch_config(spec: &ElementSpec) -> Result<vswitch::VSwitchConfig, ConfigError> {
    let c = config::<VSwitchSettings>(spec)?;
    let err = |key: String, message: String| ConfigError { key, message };
    if !spec.routes.is_empty() {
        return Err(err(
            "routes".into(),
            "a vswitch reaches its VTEPs on the underlay subnet; it has no routes".into(),
        ));
    }
    let Some((first, vm_ports)) = spec.ports.split_first() else {
        return Err(err(
            "ports".into(),
            "a vswitch needs an underlay port".into(),
        ));
    };
    let underlay = vswitch::UnderlayPort {
        name: first.name.clone(),
        mac: first.mac,
        address: first.address.ok_or_else(|| {
            err(
                "ports[0].address".into(),
                "the underlay port needs the VTEP's address".into(),
            )
        })?,
        mtu: first.mtu,
    };
    let mut vms = Vec::with_capacity(vm_ports.len());
    for (j, p) in vm_ports.iter().enumerate() {
        let mut of_port = c.vms.iter().filter(|v| v.port == p.name);
        let vni = match (of_port.next(), of_port.next()) {
            (Some(v), None) => v.vni,
            (None, _) => {
                return Err(err(
                    "config.vms".into(),
                    format!("ports[{}] {:?} has no entry (port, vni)", j + 1, p.name),
                ))
            }
            (Some(_), Some(_)) => {
                return Err(err(
                    "config.vms".into(),
                    format!("port {:?} is listed twice", p.name),
                ))
            }
        };
        vms.push(vswitch::VmPort {
            name: p.name.clone(),
            vni,
            mtu: p.mtu,
        });
    }
    for (i, v) in c.vms.iter().enumerate() {
        if !vm_ports.iter().any(|p| p.name == v.port) {
            return Err(err(
                format!("config.vms[{i}].port"),
                format!("{:?} is not a VM port of this vswitch", v.port),
            ));
        }
    }
    let on_underlay = |ip: Ipv4Addr, key: String| {
        if underlay.address.contains(ip) && ip != underlay.address.addr() {
            Ok(())
        } else {
            Err(err(
                key,
                format!(
                    "{ip} is not another VTEP on the underlay {}",
                    underlay.address.network()
                ),
            ))
        }
    };
    let mut flood = std::collections::BTreeMap::new();
    for (i, f) in c.flood.iter().enumerate() {
        for (k, ip) in f.vteps.iter().enumerate() {
            on_underlay(*ip, format!("config.flood[{i}].vteps[{k}]"))?;
        }
        if flood.insert(f.vni, f.vteps.clone()).is_some() {
            return Err(err(
                format!("config.flood[{i}].vni"),
                format!("VNI {} is listed twice", f.vni),
            ));
        }
    }
    let mut stations = Vec::with_capacity(c.fdb.len());
    for (i, s) in c.fdb.iter().enumerate() {
        if s.vtep != underlay.address.addr() {
            on_underlay(s.vtep, format!("config.fdb[{i}].vtep"))?;
        }
        if !s.mac.is_unicast() {
            return Err(err(
                format!("config.fdb[{i}].mac"),
                format!("{} is not a unicast MAC", s.mac),
            ));
        }
        stations.push(vswitch::StaticStation {
            vni: s.vni,
            mac: s.mac,
            ip: s.ip,
            vtep: s.vtep,
        });
    }
    Ok(vswitch::VSwitchConfig {
        underlay,
        vms,
        flood,
        stations,
        aging: vswitch::VSwitchConfig::DEFAULT_AGING,
        max_macs: vswitch::VSwitchConfig::DEFAULT_MAX_MACS,
    })
}

/// `config` of an `enb` node.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EnbSettings {
    /// The SGW's S1-U address.
    sgw: Ipv4Addr,
    /// The MAC the enb answers the UE's ARP for its gateway with (the pgw's
    /// S5 MAC in the story); the radio port's own MAC when absent.
    #[serde(default)]
    gateway_mac: Option<MacAddr>,
    bearers: Vec<Bearer>,
    /// Many bearers in one line each (`d11 load`'s simulated phones).
    #[serde(default)]
    bearer_ranges: Vec<BearerRange>,
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
    /// Many bearers in one line each (`d11 load`'s simulated phones).
    #[serde(default)]
    bearer_ranges: Vec<BearerRange>,
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
    /// Many bearers in one line each (`d11 load`'s simulated phones).
    #[serde(default)]
    bearer_ranges: Vec<BearerRange>,
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

/// Adds each `config.bearer_ranges[i]` to an element's table; an error
/// names the range and, when it is one field's, the field.
fn add_ranges(t: &mut Bearers, ranges: &[BearerRange]) -> Result<(), ConfigError> {
    for (i, r) in ranges.iter().enumerate() {
        t.add_range(r).map_err(|e| {
            let key = format!("config.bearer_ranges[{i}]");
            match e {
                BearerRangeError::Range(e) => {
                    let msg = e.to_string();
                    let (field, why) = msg.split_once(": ").unwrap_or(("", &msg));
                    ConfigError {
                        key: format!("{key}.{field}"),
                        message: why.to_string(),
                    }
                }
                BearerRangeError::Bearer(e) => ConfigError {
                    key,
                    message: format!("{e} (the range overlaps a listed bearer or another range)"),
                },
            }
        })?;
    }
    Ok(())
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

fn pgw_config(spec: &ElementSpec) -> Result<(pgw::PgwConfig, Vec<BearerRange>), ConfigError> {
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
    for (i, r) in c.bearer_ranges.iter().enumerate() {
        let first = u32::from(r.ue_ip);
        let last = Ipv4Addr::from(first.saturating_add(r.count.saturating_sub(1)));
        let gw = u32::from(gateway);
        if !pool.contains(r.ue_ip)
            || !pool.contains(last)
            || last == pool.broadcast()
            || (first..=u32::from(last)).contains(&gw)
        {
            return Err(ConfigError {
                key: format!("config.bearer_ranges[{i}].ue_ip"),
                message: format!(
                    "{} .. {last} is not inside the UE addresses of ue_pool {pool}",
                    r.ue_ip
                ),
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
    Ok((
        pgw::PgwConfig {
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
        },
        c.bearer_ranges,
    ))
}

/// Checks every element's and app's settings; the error names the file, line and key.
pub fn check(topo: &Topology) -> Result<(), TopologyError> {
    for (i, n) in topo.nodes.iter().enumerate() {
        let checked = match (topo.element(&n.name), topo.app(&n.name)) {
            (Some(spec), _) => build(&spec).map(drop),
            (_, Some(spec)) => crate::apps::check(topo, &spec),
            _ => Ok(()),
        };
        checked.map_err(|e| topo.error_at(&format!("nodes[{i}].{}", e.key), e.message))?;
    }
    Ok(())
}

/// Roles without settings of their own refuse any `config` key.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoConfig {}

/// Parses an element's `config` table as `T`, naming the failing key.
fn config<T: DeserializeOwned>(spec: &ElementSpec) -> Result<T, ConfigError> {
    parse_config(&spec.config, &format!("role {}", spec.role))
}

/// Parses a node's `config` table as `T`; the error names the failing key
/// and `owner` (`role pgw`, `app l4lb`).
pub(crate) fn parse_config<T: DeserializeOwned>(
    table: &toml::Table,
    owner: &str,
) -> Result<T, ConfigError> {
    let value = toml::Value::Table(table.clone());
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ConfigError {
            key: if path == "." {
                "config".into()
            } else {
                format!("config.{path}")
            },
            message: format!("{} ({owner})", e.into_inner()),
        }
    })
}

fn router_config(spec: &ElementSpec) -> Result<router::RouterConfig, ConfigError> {
    let ports = spec
        .ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Ok(d11_core::L3Port {
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
            "cloud.toml",
        ] {
            let t = Topology::load(std::path::Path::new(&format!(
                "{}/../../netns/{f}",
                env!("CARGO_MANIFEST_DIR")
            )))
            .unwrap();
            check(&t).unwrap_or_else(|e| panic!("{f}: {e}"));
        }
    }

    fn cloud_with(from: &str, to: &str) -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../netns/cloud.toml");
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.contains(from), "{from}");
        let t = Topology::parse(&text.replacen(from, to, 1), "cloud.toml").unwrap();
        let e = check(&t).unwrap_err().to_string();
        assert_eq!(e.lines().count(), 1);
        e
    }

    #[test]
    fn vswitch_settings_name_the_wrong_key() {
        let e = cloud_with(
            "{ port = \"other\", vni = 1002 }",
            "{ port = \"other\", vni = 16777216 }",
        );
        assert!(e.contains("(\"hosta\").config.vms[1].vni"), "{e}");
        assert!(e.contains("24 bits"), "{e}");
        let e = cloud_with(", { port = \"other\", vni = 1002 }", "");
        assert!(e.contains("config.vms"), "{e}");
        assert!(e.contains("\"other\" has no entry"), "{e}");
        let e = cloud_with("vteps = [\"10.0.0.12\"", "vteps = [\"10.9.0.12\"");
        assert!(e.contains("config.flood[0].vteps[0]"), "{e}");
        let e = cloud_with("vms = [ { port = \"ctl\"", "vms = [ { port = \"underlay\"");
        assert!(e.contains("(\"hostb\").config.vms"), "{e}");
    }

    #[test]
    fn vgw_settings_name_the_wrong_key() {
        let e = cloud_with("to = \"192.168.1.10:443\"", "to = \"192.168.1.99:443\"");
        assert!(e.contains("(\"vgw\").config.dnat[0].to"), "{e}");
        let e = cloud_with("\"203.0.113.26\"]", "\"198.51.100.26\"]");
        assert!(e.contains("(\"vgw\").config.vips[2]"), "{e}");
        let e = cloud_with("proto = \"tcp\"", "proto = \"sctp\"");
        assert!(e.contains("(\"vgw\").config.dnat[0].proto"), "{e}");
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
