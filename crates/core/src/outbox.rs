//! What an element answers: frames to transmit and drops with reasons.
//!
//! Frames are written into one arena that the driver lends and clears after
//! sending, so forwarding allocates nothing per frame once it is warm.

use crate::{DropReason, PortId};
use std::ops::Range;

/// Frames to send and drops to count, filled by one call into an element.
#[derive(Debug, Default)]
pub struct Outbox {
    arena: Vec<u8>,
    frames: Vec<(PortId, Range<usize>)>,
    drops: Vec<(PortId, DropReason)>,
}

impl Outbox {
    pub fn new() -> Outbox {
        Outbox::default()
    }

    /// Queues a copy of `frame` for `port` and returns it for in-place edits
    /// (the router rewrites MACs and TTL in the copy).
    pub fn transmit(&mut self, port: PortId, frame: &[u8]) -> &mut [u8] {
        let start = self.arena.len();
        self.arena.extend_from_slice(frame);
        self.frames.push((port, start..self.arena.len()));
        &mut self.arena[start..]
    }

    /// Queues a frame for `port` that `build` appends to the given buffer.
    /// Nothing is queued if `build` appends nothing.
    pub fn build(&mut self, port: PortId, build: impl FnOnce(&mut Vec<u8>)) {
        let start = self.arena.len();
        build(&mut self.arena);
        if self.arena.len() > start {
            self.frames.push((port, start..self.arena.len()));
        }
    }

    /// Records that a frame seen on `port` was dropped.
    pub fn drop_frame(&mut self, port: PortId, reason: DropReason) {
        tracing::trace!(%port, reason = reason.name(), "drop");
        self.drops.push((port, reason));
    }

    pub fn frames(&self) -> impl Iterator<Item = (PortId, &[u8])> {
        self.frames
            .iter()
            .map(|(p, r)| (*p, &self.arena[r.clone()]))
    }

    pub fn drops(&self) -> &[(PortId, DropReason)] {
        &self.drops
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty() && self.drops.is_empty()
    }

    /// Forgets everything, keeping the allocations.
    pub fn clear(&mut self) {
        self.arena.clear();
        self.frames.clear();
        self.drops.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_out_in_order_and_clear_keeps_nothing() {
        let mut o = Outbox::new();
        o.transmit(PortId(1), &[1, 2, 3])[0] = 9;
        o.build(PortId(0), |b| b.extend_from_slice(&[4, 5]));
        o.build(PortId(0), |_| {});
        o.drop_frame(PortId(2), DropReason::NoRoute);
        let f: Vec<_> = o.frames().map(|(p, b)| (p, b.to_vec())).collect();
        assert_eq!(f, vec![(PortId(1), vec![9, 2, 3]), (PortId(0), vec![4, 5])]);
        assert_eq!(o.drops(), &[(PortId(2), DropReason::NoRoute)]);
        o.clear();
        assert!(o.is_empty());
    }
}
