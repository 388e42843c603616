//! A pcapng writer with one interface per wire, named `node:port`, as
//! `d11 capture` and the simulator write them [draft-ietf-opsawg-pcapng].
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

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcapng::{Block, PcapNgReader};

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
