//! `null`: the benchmark's yardstick. It passes every frame from one port to
//! all the others, untouched, with no lookup: the cost of the driver alone,
//! against which `d11 bench forward` measures what a router adds.

use crate::role::{Addressing, ElementNode, Role, RoleInfo};
use d11_core::settings::{ConfigError, NoSettings};
use d11_core::{AnyElement, Ctx, Element, Instant, Outbox, PortId};

/// A frame repeater over `ports` ports (two in a chain: a wire through a process).
#[derive(Debug)]
pub struct Null {
    ports: u16,
}

impl Null {
    pub fn new(ports: u16) -> Null {
        Null { ports }
    }
}

impl Role for Null {
    const INFO: RoleInfo = RoleInfo {
        name: "null",
        summary: "passes every frame to the other ports untouched (the driver's cost alone)",
        addressing: Addressing::None,
        bridges: true,
        isolates_tenants: false,
        routes: false,
    };
    type Settings = NoSettings;
    fn build(node: &ElementNode, _: NoSettings) -> Result<Box<dyn AnyElement>, ConfigError> {
        Ok(Box::new(Null::new(node.ports.len() as u16)))
    }
}

impl Element for Null {
    fn on_frame(&mut self, _cx: &mut Ctx, port: PortId, frame: &[u8], out: &mut Outbox) {
        for p in (0..self.ports).map(PortId).filter(|p| *p != port) {
            out.transmit(p, frame);
        }
    }
    fn on_timer(&mut self, _cx: &mut Ctx, _out: &mut Outbox) {}
    fn poll_at(&self) -> Option<Instant> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_cross_to_every_other_port_unchanged() {
        let mut n = Null::new(3);
        let mut o = Outbox::new();
        n.on_frame(&mut (Instant::ZERO).into(), PortId(1), &[7; 60], &mut o);
        let got: Vec<_> = o.frames().map(|(p, f)| (p, f.len(), f[0])).collect();
        assert_eq!(got, vec![(PortId(0), 60, 7), (PortId(2), 60, 7)]);
    }
}
