//! The VPN's keys, made at `d11 up` (IKEv2 is out of scope: docs/vpn.md).
//!
//! Every `vgw` with a `config.vpn` table names the SPI it sends on and the
//! SPI it receives on; each SPI gets 20 fresh random bytes (AES-128 key and
//! salt, RFC 4106 § 8.1), written into the topology the lab saves (so the
//! gateways' processes read them as `config.vpn.key_out` / `key_in`) and
//! into the run directory: `vpn/esp_sa`, Wireshark's ESP SA table, and
//! `vpn/sas.txt` for people.

use anyhow::{Context, Result};
use d11_lab::{RunDir, Topology};
use std::collections::BTreeMap;
use std::io::Read;
use std::net::Ipv4Addr;

/// One SA: where it goes and its key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaKey {
    pub gateway: String,
    pub spi: u32,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub key: [u8; 20],
}

fn random_key() -> Result<[u8; 20]> {
    let mut k = [0; 20];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut k))
        .context("reading /dev/urandom for the VPN's keys")?;
    Ok(k)
}

/// Gives every VPN SA of the topology a fresh key (the same one at both
/// ends: the SPI names it) and returns the outbound SAs.
pub fn make_keys(topo: &mut Topology) -> Result<Vec<SaKey>> {
    let mut keys: BTreeMap<u32, [u8; 20]> = BTreeMap::new();
    let mut sas = Vec::new();
    for node in topo.nodes.iter_mut() {
        if node.role.as_deref() != Some("vgw") {
            continue;
        }
        let ext = node.port("ext").and_then(|p| p.address).map(|a| a.addr());
        let Some(vpn) = node.config.get_mut("vpn").and_then(|v| v.as_table_mut()) else {
            continue;
        };
        let spi = |k: &str| {
            vpn.get(k)
                .and_then(|v| v.as_integer())
                .and_then(|v| u32::try_from(v).ok())
        };
        let (Some(out), Some(inb), Some(src)) = (spi("spi_out"), spi("spi_in"), ext) else {
            continue; // the validation already refused it
        };
        let peer = vpn
            .get("peer")
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse().ok());
        let Some(dst) = peer else { continue };
        for s in [out, inb] {
            if let std::collections::btree_map::Entry::Vacant(e) = keys.entry(s) {
                e.insert(random_key()?);
            }
        }
        let hex = |k: &[u8; 20]| d11_elements::vpn::key_hex(k);
        vpn.insert("key_out".into(), hex(&keys[&out]).into());
        vpn.insert("key_in".into(), hex(&keys[&inb]).into());
        sas.push(SaKey {
            gateway: node.name.clone(),
            spi: out,
            src,
            dst,
            key: keys[&out],
        });
    }
    Ok(sas)
}

/// Wireshark's `esp_sa` UAT (4.0's eight fields: protocol, source,
/// destination, SPI, encryption, key, authentication, its key).
pub fn esp_sa_table(sas: &[SaKey]) -> String {
    sas.iter()
        .map(|s| {
            format!(
                "\"IPv4\",\"{}\",\"{}\",\"0x{:08x}\",\"AES-GCM with 16 octet ICV [RFC4106]\",\"0x{}\",\"NULL\",\"\"\n",
                s.src,
                s.dst,
                s.spi,
                d11_elements::vpn::key_hex(&s.key)
            )
        })
        .collect()
}

/// Writes `vpn/esp_sa` and `vpn/sas.txt` into the lab's run directory.
pub fn write(lab: &str, sas: &[SaKey]) -> Result<()> {
    if sas.is_empty() {
        return Ok(());
    }
    let dir = RunDir::new(lab).vpn_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("esp_sa"), esp_sa_table(sas))?;
    let mut text = String::from(
        "# The lab's ESP SAs (AES-GCM-128, RFC 4106): key material = 16-byte key then 4-byte salt.\n\
         # Decrypt a capture: tshark -o esp.enable_encryption_decode:TRUE -o uat:esp_sa:… (see docs/vpn.md)\n",
    );
    for s in sas {
        text.push_str(&format!(
            "{} sends spi 0x{:08x} {} -> {} key {}\n",
            s.gateway,
            s.spi,
            s.src,
            s.dst,
            d11_elements::vpn::key_hex(&s.key)
        ));
    }
    std::fs::write(dir.join("sas.txt"), text)?;
    Ok(())
}
