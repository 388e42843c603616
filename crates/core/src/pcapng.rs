//! A pcapng writer with one interface per wire, named `node:port`, as
//! `d11 capture` and the simulator write them, the reader `d11 trace`
//! uses, and TLS secrets for Wireshark [draft-ietf-opsawg-pcapng].
//!
//! Pure: it writes to any `Write`; timestamps come from the caller.

use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::DataLink;
use std::borrow::Cow;
use std::io::Write;
use std::time::Duration;

pub use pcap_file::PcapError;

/// Writes Ethernet frames of several named interfaces into one pcapng section.
pub struct PcapngWriter<W: Write> {
    inner: PcapNgWriter<W>,
    interfaces: u32,
}

impl<W: Write> PcapngWriter<W> {
    pub fn new(w: W) -> Result<Self, PcapError> {
        Ok(PcapngWriter {
            inner: PcapNgWriter::new(w)?,
            interfaces: 0,
        })
    }

    /// Declares an Ethernet interface named `name` (like `a2:a2c1`); returns its id.
    pub fn add_interface(&mut self, name: &str) -> Result<u32, PcapError> {
        let mut idb = InterfaceDescriptionBlock::new(DataLink::ETHERNET, 0);
        idb.options
            .push(InterfaceDescriptionOption::IfName(Cow::Owned(
                name.to_string(),
            )));
        // pcap-file writes packet timestamps in nanoseconds; without
        // if_tsresol = 9 readers assume microseconds and land 1000× too late.
        idb.options.push(InterfaceDescriptionOption::IfTsResol(9));
        self.inner.write_pcapng_block(idb)?;
        self.interfaces += 1;
        Ok(self.interfaces - 1)
    }

    /// Writes one frame seen on interface `id` at `timestamp` (since the Unix epoch).
    pub fn write(&mut self, id: u32, timestamp: Duration, frame: &[u8]) -> Result<(), PcapError> {
        let epb = EnhancedPacketBlock {
            interface_id: id,
            timestamp,
            original_len: frame.len() as u32,
            data: Cow::Borrowed(frame),
            options: vec![],
        };
        self.inner.write_pcapng_block(epb)?;
        Ok(())
    }

    pub fn into_inner(self) -> W {
        self.inner.into_inner()
    }

    pub fn get_mut(&mut self) -> &mut W {
        self.inner.get_mut()
    }
}

/// Every Enhanced Packet of a pcapng file as (interface name, timestamp,
/// frame), in file order; an interface without a name is `ifN`.
pub fn read_frames(bytes: &[u8]) -> Result<Vec<(String, Duration, Vec<u8>)>, PcapError> {
    use pcap_file::pcapng::{Block, PcapNgReader};
    let mut r = PcapNgReader::new(bytes)?;
    let mut names: Vec<String> = Vec::new();
    let mut out = Vec::new();
    while let Some(block) = r.next_block() {
        match block? {
            Block::InterfaceDescription(idb) => {
                let name = idb.options.iter().find_map(|o| match o {
                    InterfaceDescriptionOption::IfName(n) => Some(n.to_string()),
                    _ => None,
                });
                names.push(name.unwrap_or_else(|| format!("if{}", names.len())));
            }
            Block::EnhancedPacket(epb) => {
                let name = names
                    .get(epb.interface_id as usize)
                    .cloned()
                    .unwrap_or_else(|| format!("if{}", epb.interface_id));
                out.push((name, epb.timestamp, epb.data.into_owned()));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Block type of a Decryption Secrets Block, and its secrets type for a TLS
/// key log (NSS key log format) [draft-ietf-opsawg-pcapng § 4.7].
const DSB_TYPE: u32 = 0x0000_000a;
const SECRETS_TLS_KEY_LOG: u32 = 0x544c_534b;
const EPB_TYPE: u32 = 6;

/// `pcapng` with a Decryption Secrets Block holding `key_log` placed before
/// the first packet, so Wireshark decrypts the TLS in it with no setup.
/// Blocks are walked in the section's own byte order; a file it cannot
/// walk is returned unchanged.
pub fn with_tls_secrets(pcapng: &[u8], key_log: &[u8]) -> Vec<u8> {
    let Some(magic) = pcapng.get(8..12) else {
        return pcapng.to_vec();
    };
    let le = magic == [0x4d, 0x3c, 0x2b, 0x1a];
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = pcapng.get(at..at + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let put = |v: u32, out: &mut Vec<u8>| {
        out.extend_from_slice(&if le { v.to_le_bytes() } else { v.to_be_bytes() })
    };
    let mut at = 0;
    let insert_at = loop {
        match (u32_at(at), u32_at(at + 4)) {
            (Some(EPB_TYPE), _) => break at,
            (Some(_), Some(len)) if len >= 12 && len % 4 == 0 => at += len as usize,
            // No packet, or a block it cannot walk: secrets go at the end.
            _ if at == pcapng.len() => break at,
            _ => return pcapng.to_vec(),
        }
    };
    let padded = key_log.len().div_ceil(4) * 4;
    let total = (20 + padded) as u32;
    let mut dsb = Vec::with_capacity(total as usize);
    put(DSB_TYPE, &mut dsb);
    put(total, &mut dsb);
    put(SECRETS_TLS_KEY_LOG, &mut dsb);
    put(key_log.len() as u32, &mut dsb);
    dsb.extend_from_slice(key_log);
    dsb.resize(16 + padded, 0);
    put(total, &mut dsb);
    let mut out = Vec::with_capacity(pcapng.len() + dsb.len());
    out.extend_from_slice(&pcapng[..insert_at]);
    out.extend_from_slice(&dsb);
    out.extend_from_slice(&pcapng[insert_at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcapng::{Block, PcapNgReader};

    #[test]
    fn frames_read_back_with_their_interface_names() {
        let mut w = PcapngWriter::new(Vec::new()).unwrap();
        let a = w.add_interface("ue:eth0").unwrap();
        let b = w.add_interface("sgw:s5").unwrap();
        w.write(b, Duration::from_nanos(1_000_000_007), &[1; 60])
            .unwrap();
        w.write(a, Duration::from_nanos(2), &[2; 61]).unwrap();
        let f = read_frames(&w.into_inner()).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].0, "sgw:s5");
        assert_eq!(f[0].1, Duration::from_nanos(1_000_000_007));
        assert_eq!((f[1].0.as_str(), f[1].2.len()), ("ue:eth0", 61));
    }

    #[test]
    fn secrets_go_before_the_first_packet_and_the_file_still_reads() {
        let mut w = PcapngWriter::new(Vec::new()).unwrap();
        let a = w.add_interface("ue:eth0").unwrap();
        w.write(a, Duration::from_nanos(5), &[3; 60]).unwrap();
        let plain = w.into_inner();
        let log = b"CLIENT_RANDOM 00 11\n";
        let with = with_tls_secrets(&plain, log);
        assert_eq!(with.len(), plain.len() + 20 + 20);
        let f = read_frames(&with).unwrap();
        assert_eq!(f.len(), 1);
        let dsb = with
            .windows(4)
            .position(|w| w == SECRETS_TLS_KEY_LOG.to_le_bytes())
            .unwrap();
        let epb = with
            .windows(4)
            .rposition(|w| w == EPB_TYPE.to_le_bytes())
            .unwrap();
        assert!(dsb < epb);
        assert_eq!(&with[dsb + 8..dsb + 8 + log.len()], log);
    }

    #[test]
    fn interfaces_keep_their_names_and_frames_their_interface() {
        let mut w = PcapngWriter::new(Vec::new()).unwrap();
        let a = w.add_interface("a2:radio").unwrap();
        let b = w.add_interface("c1:c1a2").unwrap();
        w.write(b, Duration::from_micros(1_500_000), &[0xff; 60])
            .unwrap();
        w.write(a, Duration::from_micros(1_500_001), &[0x01; 42])
            .unwrap();
        let bytes = w.into_inner();
        let mut r = PcapNgReader::new(&bytes[..]).unwrap();
        let mut seen = vec![];
        while let Some(block) = r.next_block() {
            match block.unwrap() {
                Block::InterfaceDescription(i) => seen.push(format!("{:?}", i.options)),
                Block::EnhancedPacket(p) => seen.push(format!(
                    "{} {} {:?}",
                    p.interface_id,
                    p.data.len(),
                    p.timestamp
                )),
                _ => {}
            }
        }
        assert_eq!(seen.len(), 4);
        assert!(seen[0].contains("a2:radio"));
        assert_eq!(seen[2], "1 60 1.5s");
        assert_eq!(seen[3], "0 42 1.500001s");
    }
}
