//! `d11 demo`'s account of the VPN between the regions (docs/vpn.md): an
//! order placed through region north's VIP, captured on every wire; its
//! RPC from the north controller to east's order service seen on a
//! carrier's wire as ESP only, then opened with the lab's own SA table
//! (`/run/d11/LAB/vpn/esp_sa`, the keys `d11 up` made) to show the RPC
//! inside.

use anyhow::{bail, Context, Result};
use d11_lab::RunDir;
use d11_wire::esp::{EspPacket, GcmSa, Spi};
use d11_wire::ipv4::Ipv4Packet;
use std::collections::HashMap;
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

const BODY: &str =
    r#"{"order":{"date":"2018-07-01","className":"趣谈网络协议","Author":"刘超","price":"68"}}"#;

/// Dubbo's magic, the first two bytes of every RPC frame (docs/rpc.md).
const DUBBO_MAGIC: [u8; 2] = [0xda, 0xbb];

/// One SA of the lab's `esp_sa` table.
#[derive(Debug, Clone)]
pub(crate) struct TableSa {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub spi: Spi,
    pub key: [u8; 20],
}

/// Reads Wireshark's `esp_sa` table as `d11 up` writes it.
pub(crate) fn parse_esp_sa(text: &str) -> Vec<TableSa> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').map(|f| f.trim_matches('"')).collect();
            let spi = u32::from_str_radix(f.get(3)?.trim_start_matches("0x"), 16).ok()?;
            let key = d11_elements::vpn::parse_key(f.get(5)?.trim_start_matches("0x"))?;
            Some(TableSa {
                src: f.get(1)?.parse().ok()?,
                dst: f.get(2)?.parse().ok()?,
                spi: Spi(spi),
                key,
            })
        })
        .collect()
}

/// The first RPC frame found inside ESP on `wire`: what the carrier saw and
/// what the SA opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SeenRpc {
    pub wire: String,
    pub outer: (Ipv4Addr, Ipv4Addr),
    pub spi: Spi,
    pub seq: u32,
    pub esp_len: usize,
    pub inner: (Ipv4Addr, u16, Ipv4Addr, u16),
    pub rpc_len: usize,
    pub request_id: u64,
}

/// Walks the frames of `wire`: every IPv4 packet on it must be ESP (the
/// count of those that are not is returned too); the first one that opens
/// to a TCP segment carrying a Dubbo frame is described.
pub(crate) fn find_rpc(
    frames: &[d11_lab::trace::Frame],
    wire: &str,
    sas: &[TableSa],
    vpcs: &[d11_wire::Ipv4Cidr],
) -> (usize, usize, Option<SeenRpc>) {
    let keys: HashMap<Spi, GcmSa> = sas.iter().map(|s| (s.spi, GcmSa::new(&s.key))).collect();
    let (mut esp, mut clear, mut seen) = (0, 0, None);
    let mut buf = Vec::new();
    for f in frames.iter().filter(|f| f.wire == wire) {
        let Some(ip) = f.ipv4() else {
            continue;
        };
        if ip.protocol() != d11_wire::esp::PROTOCOL {
            // A VPC's address outside the tunnel is a leak.
            let vpc = |a: Ipv4Addr| vpcs.iter().any(|p| p.contains(a));
            if vpc(ip.src()) || vpc(ip.dst()) {
                clear += 1;
            }
            continue;
        }
        esp += 1;
        if seen.is_some() {
            continue;
        }
        let Ok(p) = EspPacket::new_checked(ip.payload()) else {
            continue;
        };
        let Some(sa) = keys.get(&p.spi()) else {
            continue;
        };
        let Ok(o) = sa.open(&p, &mut buf) else {
            continue;
        };
        let Ok(inner) = Ipv4Packet::new_checked(&buf[..o.len]) else {
            continue;
        };
        if inner.protocol() != d11_wire::ipv4::protocol::TCP {
            continue;
        }
        let seg = inner.payload();
        let hl = seg.get(12).map_or(0, |b| usize::from(b >> 4) * 4);
        let Some(payload) = seg.get(hl..) else {
            continue;
        };
        if payload.len() < 16 || payload[..2] != DUBBO_MAGIC {
            continue;
        }
        let port = |i: usize| u16::from_be_bytes([seg[i], seg[i + 1]]);
        let mut id = [0; 8];
        id.copy_from_slice(&payload[4..12]);
        seen = Some(SeenRpc {
            wire: wire.to_string(),
            outer: (ip.src(), ip.dst()),
            spi: p.spi(),
            seq: p.seq(),
            esp_len: ip.payload().len(),
            inner: (inner.src(), port(0), inner.dst(), port(2)),
            rpc_len: payload.len(),
            request_id: u64::from_be_bytes(id),
        });
    }
    (esp, clear, seen)
}

/// The chapter, or None when the lab has no VPN. Places an order from the
/// phone through the second region's VIP while capturing every wire into
/// `file`, and copies the SA table next to it.
pub(crate) fn chapter(lab: &str, file: &Path) -> Result<Option<String>> {
    let dir = RunDir::new(lab);
    let topo = dir.topology().context("reading the lab's topology")?;
    let gateways: Vec<&d11_lab::Node> = (topo.nodes.iter())
        .filter(|n| n.role.as_deref() == Some("vgw") && n.config.contains_key("vpn"))
        .collect();
    let Some(north) = gateways.get(1) else {
        return Ok(None);
    };
    let vip = (north.config.get("dnat").and_then(|d| d.as_array()))
        .and_then(|d| d.first())
        .and_then(|r| r.get("vip"))
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let (Some(vip), Some(pki)) = (vip, topo.pki.as_ref()) else {
        return Ok(None);
    };
    let name = pki.names.first().cloned().unwrap_or_default();
    let table_path = dir.vpn_dir().join("esp_sa");
    let table = std::fs::read_to_string(&table_path)
        .with_context(|| format!("reading {}", table_path.display()))?;
    let sas = parse_esp_sa(&table);
    let root = dir.pki_dir().join("root.pem");
    let out_path = dir.path().join("demo-vpn-order.json");
    let mut curl = Command::new(std::env::current_exe().context("finding the d11 binary")?);
    let resolve = format!("{name}:443:{vip}");
    let url = format!("https://{name}/purchaseOrder");
    curl.args([
        "exec", "--name", lab, "ue", "--", "curl", "-sS", "-m", "10", "--cacert",
    ])
    .arg(&root)
    .args([
        "--resolve",
        &resolve,
        "-H",
        "Content-Type: application/json",
        "-d",
        BODY,
        &url,
    ])
    .stdout(std::fs::File::create(&out_path)?);
    let rec = crate::capture::record(lab, file, None, Some(curl))?;
    let reply = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    if !rec.status.is_some_and(|s| s.success()) {
        bail!("the order through {vip} failed: {}", reply.trim());
    }
    let v: serde_json::Value = serde_json::from_str(&reply).context("the shop's reply")?;
    let frames = crate::trace::read_capture(file)?;
    // The carriers' wire to the second region's border: a router holding
    // the north gateway's ext subnet, wired to another router.
    let ext = north.port("ext").and_then(|p| p.address).map(|a| a.addr());
    let is_router = |name: &str| {
        (topo.nodes.iter()).any(|n| n.name == name && n.role.as_deref() == Some("router"))
    };
    let border_n = (topo.nodes.iter()).find(|n| {
        n.role.as_deref() == Some("router")
            && ext.is_some_and(|e| {
                n.ports
                    .iter()
                    .any(|p| p.address.is_some_and(|a| a.contains(e)))
            })
    });
    let border = border_n.and_then(|b| {
        (topo.wires.iter())
            .find(|w| {
                (w.a.node == b.name || w.b.node == b.name)
                    && is_router(&w.a.node)
                    && is_router(&w.b.node)
            })
            .map(|w| format!("{}:{}", w.a.node, w.a.port))
    });
    let wire = border.unwrap_or_else(|| "c2:c2bn".into());
    let vpcs: Vec<d11_wire::Ipv4Cidr> = (gateways.iter())
        .filter_map(|g| g.config.get("vpn")?.get("local")?.as_str()?.parse().ok())
        .collect();
    let (esp, clear, seen) = find_rpc(&frames, &wire, &sas, &vpcs);
    let kept = file.with_extension("esp_sa");
    std::fs::write(&kept, &table)?;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "The phone ordered through region north's VIP {vip}: {} {} served by {}; the north controller found the order service in east's registry and called it by RPC across the VPN, so the order is in east's database.",
        v["status"].as_str().unwrap_or("?"),
        v["order_id"].as_str().unwrap_or("?"),
        v["served_by"].as_str().unwrap_or("?"),
    );
    let Some(r) = seen else {
        let _ = writeln!(
            s,
            "  (no RPC frame was found inside the ESP on {wire}: {esp} ESP packets)"
        );
        return Ok(Some(s));
    };
    let clear = match clear {
        0 => "no packet of either VPC in clear".to_string(),
        n => format!("{n} packets of a VPC in clear (a leak!)"),
    };
    let _ = writeln!(
        s,
        "  On {} (a carrier's wire between the regions) the capture holds {esp} ESP packets and {clear}. One of them:",
        r.wire
    );
    let _ = writeln!(
        s,
        "    {} → {}  ESP SPI {} seq {}, {} bytes: SPI, sequence, IV, ciphertext, ICV; nothing of the packet inside is readable",
        r.outer.0, r.outer.1, r.spi, r.seq, r.esp_len
    );
    let row = (sas.iter().find(|t| t.spi == r.spi))
        .map(|t| format!("the row {} → {} SPI {}", t.src, t.dst, t.spi))
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "  Opened with {row} of the lab's SA table ({}; AES-GCM-128, RFC 4106), it is the RPC:",
        table_path.display()
    );
    let _ = writeln!(
        s,
        "    {}:{} → {}:{}  TCP, {} bytes of RPC: Dubbo magic 0xdabb, request id {}",
        r.inner.0, r.inner.1, r.inner.2, r.inner.3, r.rpc_len, r.request_id
    );
    let _ = writeln!(
        s,
        "  The same in tshark, one step (the table is kept next to the capture, the lab's keys die with it):\n    mkdir -p ~/.config/wireshark && cp {} ~/.config/wireshark/esp_sa\n    tshark -r {} -o esp.enable_encryption_decode:TRUE -Y 'esp && tcp.len > 0'",
        kept.display(),
        file.display()
    );
    Ok(Some(s))
}

/// Where the demo records the VPN hop: next to the trace's capture.
pub(crate) fn capture_file(file: &Path) -> PathBuf {
    let stem = file
        .file_stem()
        .map_or("d11-demo".into(), |s| s.to_string_lossy().to_string());
    file.with_file_name(format!("{stem}-vpn.pcapng"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_esp_sa_table_reads_back() {
        let t = "\"IPv4\",\"203.0.113.2\",\"198.19.24.2\",\"0x00001001\",\"AES-GCM with 16 octet ICV [RFC4106]\",\"0x000102030405060708090a0b0c0d0e0fa0a1a2a3\",\"NULL\",\"\"\n";
        let sas = parse_esp_sa(t);
        assert_eq!(sas.len(), 1);
        assert_eq!(
            (sas[0].spi, sas[0].dst),
            (Spi(0x1001), Ipv4Addr::new(198, 19, 24, 2))
        );
        assert_eq!(sas[0].key[19], 0xa3);
    }
}
