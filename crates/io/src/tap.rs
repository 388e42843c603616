//! Holding a host's NIC: attaching to an existing persistent TAP device that
//! lives in another network namespace. Read
//! Documentation/networking/tuntap.rst first.
//!
//! The lab builder creates the device in the host's namespace
//! (`ip -n NS tuntap add dev eth0 mode tap`) and configures its address and
//! routes there. The element, in its own namespace, enters the host's one
//! just long enough to open `/dev/net/tun` and `TUNSETIFF` (`IFF_TAP |
//! IFF_NO_PI`): a tun file belongs to the namespace it was opened in, the
//! fd keeps working after the thread returns, exactly as a hypervisor holds
//! a VM's vNIC. The device is persistent, so an element that crashes and is
//! restarted attaches to the same interface, with the host side's
//! addresses and routes untouched (only the carrier drops while no one holds
//! it).
//!
//! tun-rs does the open and `TUNSETIFF`: with only a name, `Layer::L2` and
//! `inherit_enable_state` it sets no address, MTU or link state. It resets
//! the device's offload mask (`TUNSETOFFLOAD 0`), which is what we want: the
//! host kernel then completes checksums and segments before handing frames
//! over. `TUNSETIFF` with an unknown name would *create* a fresh device, so
//! the name is checked first; a device that is not a TAP fails with EINVAL,
//! and one already held by another process with EBUSY.

use crate::netns::with_netns;
use crate::packet::if_index;
use crate::IoError;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use tun_rs::{DeviceBuilder, Layer, SyncDevice};

/// An attached TAP device; frames read are what the host sent, frames
/// written arrive at the host as if from the wire. Non-blocking.
pub struct Tap {
    dev: SyncDevice,
    netns: String,
    ifname: String,
}

impl Tap {
    /// Attaches to TAP `ifname` in namespace `netns`; the calling thread
    /// returns to its own namespace before this returns.
    pub fn open(netns: &str, ifname: &str) -> Result<Tap, IoError> {
        let attach_err = |source| IoError::TapAttach {
            netns: netns.to_string(),
            ifname: ifname.to_string(),
            source,
        };
        let dev = with_netns(netns, || {
            if if_index(ifname).is_err() {
                return Err(IoError::NoSuchInterface {
                    netns: netns.to_string(),
                    ifname: ifname.to_string(),
                });
            }
            DeviceBuilder::new()
                .name(ifname)
                .layer(Layer::L2)
                .inherit_enable_state()
                .build_sync()
                .map_err(attach_err)
        })??;
        dev.set_nonblocking(true).map_err(attach_err)?;
        Ok(Tap {
            dev,
            netns: netns.to_string(),
            ifname: ifname.to_string(),
        })
    }

    /// Reads one frame; `None` when nothing is waiting.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match self.dev.recv(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes one frame (EIO while the host side is down).
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        self.dev.send(frame).map(drop)
    }

    pub fn netns(&self) -> &str {
        &self.netns
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.dev.as_raw_fd()
    }
}
