//! `switch`: an L2 learning switch (the `tor` of the data centre).
//!
//! Read IEEE 802.1D-2004 first: § 7.8 (the Learning Process: the source
//! address of every frame received on a port creates or updates a dynamic
//! entry for that port) and § 7.9 (the Filtering Database: bounded capacity,
//! dynamic entries removed after the ageing time, 300 s recommended
//! [§ 7.9.2]). The forwarding rules are § 7.7: never send a frame back out of
//! the port it came in on; group and unknown destinations go to every other
//! port.
//!
//! Shape (Open vSwitch's datapath stages): extract a [`FlowKey`] (dst, src,
//! in_port), learn from it, look the destination up, apply one [`Action`].
//! Ageing is driven by [`Element::poll_at`]: a min-heap holds one deadline per
//! entry, so a frame costs a hash lookup, never a scan of the table.

use crate::role::{Addressing, ElementNode, Role, RoleInfo};
use d11_core::hash::FastMap;
use d11_core::settings::{ConfigError, NoSettings};
use d11_core::{AnyElement, Ctx, DropReason, Element, Instant, Outbox, PortId};
use d11_wire::ethernet::EthernetFrame;
use d11_wire::MacAddr;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

/// What a switch is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchConfig {
    /// Port names, in port order.
    pub ports: Vec<String>,
    /// How long a MAC stays learned without being seen as a source.
    pub aging: Duration,
    /// Capacity of the MAC table; when full, new stations are not learned
    /// (their frames are flooded) [IEEE 802.1D § 7.9].
    pub max_macs: usize,
}

impl SwitchConfig {
    /// The recommended ageing time [IEEE 802.1D § 7.9.2].
    pub const DEFAULT_AGING: Duration = Duration::from_secs(300);
    pub const DEFAULT_MAX_MACS: usize = 8192;

    /// A switch over `ports` with the default ageing time and table size.
    pub fn new<S: Into<String>>(ports: impl IntoIterator<Item = S>) -> SwitchConfig {
        SwitchConfig {
            ports: ports.into_iter().map(Into::into).collect(),
            aging: Self::DEFAULT_AGING,
            max_macs: Self::DEFAULT_MAX_MACS,
        }
    }
}

/// The fields forwarding depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlowKey {
    dst: MacAddr,
    src: MacAddr,
    in_port: PortId,
}

/// What to do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Output(PortId),
    /// Every port but the ingress one.
    Flood,
    Drop(DropReason),
}

/// A learned station.
#[derive(Debug, Clone, Copy)]
struct Entry {
    port: PortId,
    last_seen: Instant,
}

/// Changes to the table since start, shown in the report.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableStats {
    pub learned: u64,
    pub moved: u64,
    pub aged: u64,
    /// New stations not learned because the table was full.
    pub refused: u64,
}

/// One learned station.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MacRow {
    pub mac: MacAddr,
    pub port: String,
    pub age_s: f64,
}

/// What a switch reports: its MAC table and how it changed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SwitchReport {
    pub aging_s: f64,
    pub max_macs: usize,
    pub stats: TableStats,
    pub macs: Vec<MacRow>,
}

/// An IEEE 802.1D learning switch.
#[derive(Debug)]
pub struct Switch {
    ports: Vec<String>,
    aging: Duration,
    max_macs: usize,
    table: FastMap<MacAddr, Entry>,
    /// Exactly one deadline per entry, earliest first. A deadline that comes
    /// due for an entry seen since is pushed again at its real expiry.
    deadlines: BinaryHeap<Reverse<(Instant, MacAddr)>>,
    /// Latest time seen, for the ages in the report.
    last_now: Instant,
    stats: TableStats,
}

impl Switch {
    pub fn new(cfg: SwitchConfig) -> Switch {
        Switch {
            ports: cfg.ports,
            aging: cfg.aging,
            max_macs: cfg.max_macs,
            table: FastMap::default(),
            deadlines: BinaryHeap::new(),
            last_now: Instant::ZERO,
            stats: TableStats::default(),
        }
    }

    /// Stage 1: the key, or why the frame cannot be switched.
    fn extract(&self, in_port: PortId, frame: &[u8]) -> Result<FlowKey, DropReason> {
        if in_port.index() >= self.ports.len() {
            return Err(DropReason::NoSuchPort);
        }
        let eth = EthernetFrame::new_checked(frame).map_err(|_| DropReason::Truncated)?;
        // A group address is never a source [IEEE 802.1D § 7.8, 802-2014 § 8.2].
        if eth.src().is_multicast() {
            return Err(DropReason::SrcMacMulticast);
        }
        Ok(FlowKey {
            dst: eth.dst(),
            src: eth.src(),
            in_port,
        })
    }

    /// The Learning Process [IEEE 802.1D § 7.8]: the source lives behind `in_port`.
    fn learn(&mut self, now: Instant, key: &FlowKey) {
        if let Some(e) = self.table.get_mut(&key.src) {
            if e.port != key.in_port {
                tracing::info!(mac = %key.src, from = %self.ports[e.port.index()],
                    to = %self.ports[key.in_port.index()], "station moved");
                e.port = key.in_port;
                self.stats.moved += 1;
            }
            e.last_seen = now;
        } else if self.table.len() >= self.max_macs {
            self.stats.refused += 1;
        } else {
            tracing::info!(mac = %key.src, port = %self.ports[key.in_port.index()], "learned");
            self.table.insert(
                key.src,
                Entry {
                    port: key.in_port,
                    last_seen: now,
                },
            );
            self.deadlines.push(Reverse((now + self.aging, key.src)));
            self.stats.learned += 1;
        }
    }

    /// Stage 2: the Filtering Database lookup [IEEE 802.1D § 7.7, § 7.9].
    fn lookup(&self, now: Instant, key: &FlowKey) -> Action {
        if key.dst.is_multicast() {
            return Action::Flood;
        }
        match self.table.get(&key.dst) {
            Some(e) if now < e.last_seen + self.aging => {
                if e.port == key.in_port {
                    Action::Drop(DropReason::SameSegment)
                } else {
                    Action::Output(e.port)
                }
            }
            _ => Action::Flood,
        }
    }

    /// Stage 3: the frame leaves unchanged, or is counted as dropped.
    fn apply(&self, action: Action, in_port: PortId, frame: &[u8], out: &mut Outbox) {
        match action {
            Action::Output(p) => {
                out.transmit(p, frame);
            }
            Action::Flood => {
                for p in (0..self.ports.len() as u16).map(PortId) {
                    if p != in_port {
                        out.transmit(p, frame);
                    }
                }
            }
            Action::Drop(reason) => out.drop_frame(in_port, reason),
        }
    }
}

impl Role for Switch {
    const INFO: RoleInfo = RoleInfo {
        name: "switch",
        summary: "L2 learning switch: ports have no address",
        addressing: Addressing::None,
        bridges: true,
        isolates_tenants: false,
        routes: false,
    };
    type Settings = NoSettings;
    fn build(node: &ElementNode, _: NoSettings) -> Result<Box<dyn AnyElement>, ConfigError> {
        let names = node.ports.iter().map(|p| p.name.clone());
        Ok(Box::new(Switch::new(SwitchConfig::new(names))))
    }
}

impl Element for Switch {
    fn on_frame(&mut self, cx: &mut Ctx, port: PortId, frame: &[u8], out: &mut Outbox) {
        let now = cx.now;
        self.last_now = now;
        let action = match self.extract(port, frame) {
            Ok(key) => {
                self.learn(now, &key);
                self.lookup(now, &key)
            }
            Err(reason) => Action::Drop(reason),
        };
        self.apply(action, port, frame, out);
    }

    /// Removes the entries not seen for the ageing time [IEEE 802.1D § 7.9.2].
    fn on_timer(&mut self, cx: &mut Ctx, _out: &mut Outbox) {
        let now = cx.now;
        self.last_now = now;
        while let Some(&Reverse((due, mac))) = self.deadlines.peek() {
            if due > now {
                break;
            }
            self.deadlines.pop();
            match self.table.get(&mac).map(|e| e.last_seen + self.aging) {
                Some(expires) if expires > now => self.deadlines.push(Reverse((expires, mac))),
                _ => {
                    if self.table.remove(&mac).is_some() {
                        tracing::info!(%mac, "aged out");
                        self.stats.aged += 1;
                    }
                }
            }
        }
    }

    fn poll_at(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((due, _))| *due)
    }

    /// The MAC table (`mac`, `port` name, `age_s` since last seen, ordered by
    /// port then MAC) with the table's settings and counters.
    fn report(&self) -> serde_json::Value {
        let mut live: Vec<(&MacAddr, &Entry)> = self
            .table
            .iter()
            .filter(|(_, e)| self.last_now < e.last_seen + self.aging)
            .collect();
        live.sort_by_key(|(mac, e)| (e.port, **mac));
        let macs: Vec<_> = live
            .into_iter()
            .map(|(mac, e)| MacRow {
                mac: *mac,
                port: self.ports[e.port.index()].clone(),
                age_s: self.last_now.saturating_since(e.last_seen).as_secs_f64(),
            })
            .collect();
        d11_core::report_json(&SwitchReport {
            aging_s: self.aging.as_secs_f64(),
            max_macs: self.max_macs,
            stats: self.stats.clone(),
            macs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use d11_wire::ethernet::HEADER_LEN;
    use proptest::prelude::*;
    use serde_json::json;

    // /usr/bin/python3 -c 'from scapy.all import *; print(bytes(
    //   Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:00:01")/
    //   ARP(op=1, hwsrc="02:00:00:00:00:01", psrc="10.0.0.1", pdst="10.0.0.2")).hex())'
    const ARP_REQUEST_H1: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08,
        0x06, // eth
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // htype ptype hlen plen op=request
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x01, // sender h1 10.0.0.1
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x02, // target 10.0.0.2
    ];

    // /usr/bin/python3 -c 'from scapy.all import *; print(bytes(
    //   Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02")/
    //   ARP(op=2, hwsrc="02:00:00:00:00:02", psrc="10.0.0.2",
    //       hwdst="02:00:00:00:00:01", pdst="10.0.0.1")).hex())'
    const ARP_REPLY_H2: [u8; 42] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x08,
        0x06, // eth
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02, // htype ptype hlen plen op=reply
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x0a, 0x00, 0x00, 0x02, // sender h2 10.0.0.2
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x01, // target h1 10.0.0.1
    ];

    // /usr/bin/python3 -c 'from scapy.all import *; print(bytes(
    //   Ether(dst="01:00:5e:00:00:01", src="02:00:00:00:00:03")/
    //   IP(src="10.0.0.3", dst="224.0.0.1", ttl=1, id=1)/ICMP(id=1, seq=1)).hex())'
    const ALL_HOSTS_PING_H3: [u8; 42] = [
        0x01, 0x00, 0x5e, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x03, 0x08,
        0x00, // eth
        0x45, 0x00, 0x00, 0x1c, 0x00, 0x01, 0x00, 0x00, 0x01, 0x01, 0xcf, 0xdc, // ip
        0x0a, 0x00, 0x00, 0x03, 0xe0, 0x00, 0x00, 0x01, // 10.0.0.3 > 224.0.0.1
        0x08, 0x00, 0xf7, 0xfd, 0x00, 0x01, 0x00, 0x01, // icmp echo request
    ];

    const H1: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const H2: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    fn switch() -> Switch {
        Switch::new(SwitchConfig::new(["p0", "p1", "p2"]))
    }

    fn secs(s: u64) -> Instant {
        Instant::from_millis(s * 1000)
    }

    /// Sends `frame` in on `port`; returns the ports it left by (each copy
    /// checked to be unchanged) and the drops.
    fn send(sw: &mut Switch, now: Instant, port: u16, frame: &[u8]) -> (Vec<u16>, Vec<DropReason>) {
        let mut out = Outbox::new();
        sw.on_frame(&mut now.into(), PortId(port), frame, &mut out);
        let ports = out
            .frames()
            .map(|(p, f)| {
                assert_eq!(f, frame, "a switch never edits a frame");
                p.0
            })
            .collect();
        (ports, out.drops().iter().map(|(_, r)| *r).collect())
    }

    fn port_of(sw: &Switch, mac: MacAddr) -> Option<String> {
        let r = sw.report();
        r["macs"]
            .as_array()?
            .iter()
            .find(|e| e["mac"] == mac.to_string())
            .map(|e| e["port"].as_str().unwrap_or_default().to_string())
    }

    #[test]
    fn broadcast_is_flooded_to_every_other_port_and_its_source_learned() {
        let mut sw = switch();
        assert_eq!(
            send(&mut sw, secs(0), 1, &ARP_REQUEST_H1),
            (vec![0, 2], vec![])
        );
        assert_eq!(port_of(&sw, H1).as_deref(), Some("p1"));
    }

    #[test]
    fn the_reply_to_a_learned_station_leaves_by_its_port_only() {
        let mut sw = switch();
        send(&mut sw, secs(0), 0, &ARP_REQUEST_H1);
        assert_eq!(send(&mut sw, secs(0), 2, &ARP_REPLY_H2), (vec![0], vec![]));
        assert_eq!(port_of(&sw, H2).as_deref(), Some("p2"));
    }

    #[test]
    fn unknown_unicast_is_flooded() {
        let mut sw = switch();
        assert_eq!(
            send(&mut sw, secs(0), 2, &ARP_REPLY_H2),
            (vec![0, 1], vec![])
        );
    }

    #[test]
    fn multicast_destinations_are_always_flooded() {
        let mut sw = switch();
        send(&mut sw, secs(0), 0, &ARP_REQUEST_H1);
        assert_eq!(
            send(&mut sw, secs(0), 2, &ALL_HOSTS_PING_H3),
            (vec![0, 1], vec![])
        );
    }

    #[test]
    fn frames_shorter_than_an_ethernet_header_are_dropped_as_truncated() {
        let mut sw = switch();
        assert_eq!(
            send(&mut sw, secs(0), 0, &ARP_REQUEST_H1[..HEADER_LEN - 1]),
            (vec![], vec![DropReason::Truncated])
        );
        assert_eq!(
            send(&mut sw, secs(0), 0, &ARP_REQUEST_H1[..HEADER_LEN]).0,
            vec![1, 2]
        );
    }

    #[test]
    fn a_group_source_address_is_dropped_and_never_learned() {
        let mut sw = switch();
        let mut f = ARP_REQUEST_H1;
        f[6] |= 1; // source 03:00:00:00:00:01
        assert_eq!(
            send(&mut sw, secs(0), 0, &f),
            (vec![], vec![DropReason::SrcMacMulticast])
        );
        assert_eq!(sw.report()["macs"], json!([]));
    }

    #[test]
    fn unicast_for_the_segment_it_came_from_is_dropped_as_same_segment() {
        // h1 and h2 behind the same port (a hub): the switch must stay quiet.
        let mut sw = switch();
        send(&mut sw, secs(0), 0, &ARP_REQUEST_H1);
        assert_eq!(
            send(&mut sw, secs(0), 0, &ARP_REPLY_H2),
            (vec![], vec![DropReason::SameSegment])
        );
    }

    #[test]
    fn a_station_that_moves_is_relearned_on_its_new_port() {
        let mut sw = switch();
        send(&mut sw, secs(0), 0, &ARP_REQUEST_H1);
        send(&mut sw, secs(1), 1, &ARP_REQUEST_H1);
        assert_eq!(port_of(&sw, H1).as_deref(), Some("p1"));
        assert_eq!(send(&mut sw, secs(1), 2, &ARP_REPLY_H2).0, vec![1]);
        assert_eq!(sw.report()["stats"]["moved"], 1);
    }

    #[test]
    fn entries_age_out_on_the_timer_unless_seen_again() {
        let mut sw = switch();
        let mut out = Outbox::new();
        send(&mut sw, secs(0), 0, &ARP_REQUEST_H1);
        send(&mut sw, secs(100), 2, &ARP_REPLY_H2);
        assert_eq!(sw.poll_at(), Some(secs(300)));
        send(&mut sw, secs(200), 0, &ARP_REQUEST_H1); // h1 seen again
        sw.on_timer(&mut secs(300).into(), &mut out);
        assert_eq!(
            port_of(&sw, H1).as_deref(),
            Some("p0"),
            "refreshed at 200 s"
        );
        assert_eq!(sw.poll_at(), Some(secs(400)), "h2's deadline");
        sw.on_timer(&mut secs(400).into(), &mut out);
        assert_eq!(port_of(&sw, H2), None);
        assert_eq!(sw.poll_at(), Some(secs(500)));
        sw.on_timer(&mut secs(500).into(), &mut out);
        assert_eq!(sw.poll_at(), None);
        assert_eq!(sw.report()["stats"]["aged"], 2);
        assert!(out.is_empty(), "ageing sends nothing");
        // Forgotten: the next frame for h1 is flooded again.
        assert_eq!(send(&mut sw, secs(501), 2, &ARP_REPLY_H2).0, vec![0, 1]);
    }

    #[test]
    fn an_expired_entry_is_not_used_even_before_the_timer_runs() {
        let mut sw = switch();
        send(&mut sw, secs(0), 0, &ARP_REQUEST_H1);
        assert_eq!(send(&mut sw, secs(300), 2, &ARP_REPLY_H2).0, vec![0, 1]);
    }

    #[test]
    fn a_full_table_floods_new_stations_instead_of_learning_them() {
        let mut sw = Switch::new(SwitchConfig {
            max_macs: 1,
            ..SwitchConfig::new(["p0", "p1", "p2"])
        });
        send(&mut sw, secs(0), 0, &ARP_REQUEST_H1);
        send(&mut sw, secs(0), 2, &ARP_REPLY_H2);
        assert_eq!(port_of(&sw, H2), None);
        assert_eq!(sw.report()["stats"]["refused"], 1);
        let mut to_h2 = ARP_REQUEST_H1;
        to_h2[..6].copy_from_slice(&H2.0);
        assert_eq!(send(&mut sw, secs(1), 0, &to_h2).0, vec![1, 2]);
    }

    #[test]
    fn a_frame_on_a_port_the_switch_does_not_have_is_dropped() {
        let mut sw = switch();
        assert_eq!(
            send(&mut sw, secs(0), 3, &ARP_REQUEST_H1),
            (vec![], vec![DropReason::NoSuchPort])
        );
        assert_eq!(sw.poll_at(), None, "nothing learned");
    }

    #[test]
    fn the_report_lists_each_mac_with_its_port_name_and_age() {
        let mut sw = switch();
        send(&mut sw, secs(10), 2, &ARP_REPLY_H2);
        send(&mut sw, secs(40), 1, &ARP_REQUEST_H1);
        assert_eq!(
            sw.report()["macs"],
            json!([
                {"mac": "02:00:00:00:00:01", "port": "p1", "age_s": 0.0},
                {"mac": "02:00:00:00:00:02", "port": "p2", "age_s": 30.0},
            ])
        );
        assert_eq!(sw.report()["aging_s"], 300.0);
    }

    proptest! {
        #[test]
        fn any_bytes_are_forwarded_unchanged_or_dropped_with_a_reason(
            frames in proptest::collection::vec(
                (0u16..4, proptest::collection::vec(any::<u8>(), 0..80)), 1..40),
        ) {
            let mut sw = switch();
            for (i, (port, f)) in frames.iter().enumerate() {
                let mut out = Outbox::new();
                sw.on_frame(&mut secs(i as u64).into(), PortId(*port), f, &mut out);
                let sent = out.frames().count();
                prop_assert!(out.frames().all(|(p, b)| b == &f[..] && p != PortId(*port)));
                prop_assert!((sent >= 1) != (out.drops().len() == 1));
                prop_assert!(sent <= 2);
            }
        }
    }
}
