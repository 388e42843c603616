//! An ARP cache with a queue of packets waiting for resolution [RFC 826],
//! retries and timeouts in the manner of RFC 1122 § 2.3.2.2 (keep at least one
//! packet per unresolved address, retransmit at most once a second).
//!
//! Sans-IO: the cache says what to do (send a request, flush packets, report a
//! failure) and the element builds the frames.

use crate::hash::FastMap;
use crate::{Instant, PortId};
use d11_wire::arp::ArpRepr;
use d11_wire::MacAddr;
use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::Duration;

/// Timing and bounds of an [`ArpCache`].
#[derive(Debug, Clone, Copy)]
pub struct ArpConfig {
    /// How long an answer stays valid.
    pub reachable: Duration,
    /// Time between requests for an unresolved address.
    pub retry: Duration,
    /// Requests sent before giving up (the first one included).
    pub max_requests: u8,
    /// Packets kept per unresolved address; more are dropped.
    pub max_queue: usize,
    /// Bounds on resolved and unresolved entries, so a flood cannot grow
    /// memory: a /16 of neighbours (the UE pool behind the eNodeB's radio,
    /// 10,000 simulated phones) fits, at about 40 bytes an entry.
    pub max_entries: usize,
    pub max_pending: usize,
}

impl Default for ArpConfig {
    fn default() -> Self {
        ArpConfig {
            reachable: Duration::from_secs(60),
            retry: Duration::from_secs(1),
            max_requests: 3,
            max_queue: 16,
            max_entries: 65536,
            max_pending: 1024,
        }
    }
}

#[derive(Debug)]
struct Pending {
    port: PortId,
    queue: VecDeque<Vec<u8>>,
    requests: u8,
    next: Instant,
}

/// What [`ArpCache::enqueue`] did with a packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// First packet for this address: send a request now.
    SendRequest,
    /// Waiting behind an outstanding request.
    Queued,
    /// The queue (or the table of pending addresses) is full: drop the packet.
    Full,
}

/// What the cache asks for when its timer fires.
#[derive(Debug, PartialEq, Eq)]
pub enum ArpEvent {
    /// Ask again for `ip` on `port`.
    Retry { port: PortId, ip: Ipv4Addr },
    /// Nobody answered: these packets cannot be delivered.
    Failed {
        port: PortId,
        ip: Ipv4Addr,
        queued: Vec<Vec<u8>>,
    },
}

/// IPv4 → MAC with the packets waiting for an answer.
#[derive(Debug)]
pub struct ArpCache {
    cfg: ArpConfig,
    entries: FastMap<Ipv4Addr, (MacAddr, Instant)>,
    /// Ordered, so retries due at one instant go out in the same order every run.
    pending: BTreeMap<Ipv4Addr, Pending>,
}

impl ArpCache {
    pub fn new(cfg: ArpConfig) -> ArpCache {
        ArpCache {
            cfg,
            entries: FastMap::default(),
            pending: BTreeMap::new(),
        }
    }

    /// The MAC for `ip` if known and not expired.
    pub fn lookup(&self, now: Instant, ip: Ipv4Addr) -> Option<MacAddr> {
        match self.entries.get(&ip) {
            Some((mac, expires)) if *expires > now => Some(*mac),
            _ => None,
        }
    }

    /// Learns `ip` is at `mac` (from a reply, or a request's sender [RFC 826
    /// "merge"]). Returns the port and the packets that waited for it.
    pub fn insert(
        &mut self,
        now: Instant,
        ip: Ipv4Addr,
        mac: MacAddr,
    ) -> Option<(PortId, VecDeque<Vec<u8>>)> {
        if self.entries.len() >= self.cfg.max_entries && !self.entries.contains_key(&ip) {
            self.entries.retain(|_, (_, e)| *e > now);
            if self.entries.len() >= self.cfg.max_entries {
                return self.pending.remove(&ip).map(|p| (p.port, p.queue));
            }
        }
        self.entries.insert(ip, (mac, now + self.cfg.reachable));
        self.pending.remove(&ip).map(|p| (p.port, p.queue))
    }

    /// Updates `ip` only if it is already known or awaited (RFC 826: a host
    /// merges a sender it has an entry for, and adds it if it is the target).
    pub fn refresh(
        &mut self,
        now: Instant,
        ip: Ipv4Addr,
        mac: MacAddr,
    ) -> Option<(PortId, VecDeque<Vec<u8>>)> {
        if self.entries.contains_key(&ip) || self.pending.contains_key(&ip) {
            self.insert(now, ip, mac)
        } else {
            None
        }
    }

    /// RFC 826 "Packet reception" for a host or router owning `our_ip`:
    /// merge the sender if it is known or awaited, add it if we are the
    /// target. Returns the packets that waited for the sender, with their port.
    pub fn on_arp(
        &mut self,
        now: Instant,
        arp: &ArpRepr,
        our_ip: Ipv4Addr,
    ) -> Option<(PortId, VecDeque<Vec<u8>>)> {
        if arp.target_ip == our_ip {
            self.insert(now, arp.sender_ip, arp.sender_mac)
        } else {
            self.refresh(now, arp.sender_ip, arp.sender_mac)
        }
    }

    /// Queues `packet` (an IP packet without its Ethernet header) until `ip`
    /// answers on `port`.
    pub fn enqueue(&mut self, now: Instant, port: PortId, ip: Ipv4Addr, packet: &[u8]) -> Enqueued {
        if let Some(p) = self.pending.get_mut(&ip) {
            if p.queue.len() >= self.cfg.max_queue {
                return Enqueued::Full;
            }
            p.queue.push_back(packet.to_vec());
            return Enqueued::Queued;
        }
        if self.pending.len() >= self.cfg.max_pending {
            return Enqueued::Full;
        }
        let mut queue = VecDeque::new();
        queue.push_back(packet.to_vec());
        self.pending.insert(
            ip,
            Pending {
                port,
                queue,
                requests: 1,
                next: now + self.cfg.retry,
            },
        );
        Enqueued::SendRequest
    }

    /// Retries and failures due at `now`.
    pub fn on_timer(&mut self, now: Instant, mut event: impl FnMut(ArpEvent)) {
        let max = self.cfg.max_requests;
        let retry = self.cfg.retry;
        let mut failed = Vec::new();
        for (ip, p) in self.pending.iter_mut().filter(|(_, p)| p.next <= now) {
            if p.requests >= max {
                failed.push(*ip);
            } else {
                p.requests += 1;
                p.next = now + retry;
                event(ArpEvent::Retry {
                    port: p.port,
                    ip: *ip,
                });
            }
        }
        for ip in failed {
            if let Some(p) = self.pending.remove(&ip) {
                event(ArpEvent::Failed {
                    port: p.port,
                    ip,
                    queued: p.queue.into(),
                });
            }
        }
    }

    pub fn poll_at(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.next).min()
    }

    /// Resolved entries that are still valid, for reports.
    pub fn entries(&self, now: Instant) -> impl Iterator<Item = (Ipv4Addr, MacAddr)> + '_ {
        self.entries
            .iter()
            .filter(move |(_, (_, e))| *e > now)
            .map(|(ip, (m, _))| (*ip, *m))
    }

    /// The valid entries sorted by address, as report rows
    /// (`{"ip", "mac"}`, like `ip neigh`) for `d11 show NODE arp`.
    pub fn report(&self, now: Instant) -> Vec<serde_json::Value> {
        let mut rows: Vec<_> = self.entries(now).collect();
        rows.sort();
        rows.iter()
            .map(|(ip, mac)| serde_json::json!({"ip": ip.to_string(), "mac": mac.to_string()}))
            .collect()
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn packets_wait_for_the_answer_and_flush_in_order() {
        let mut c = ArpCache::new(ArpConfig::default());
        assert_eq!(
            c.enqueue(t(0), PortId(1), IP, b"one"),
            Enqueued::SendRequest
        );
        assert_eq!(c.enqueue(t(1), PortId(1), IP, b"two"), Enqueued::Queued);
        assert_eq!(c.lookup(t(1), IP), None);
        let (port, q) = c.insert(t(2), IP, MAC).unwrap();
        assert_eq!(port, PortId(1));
        assert_eq!(q, [b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(c.lookup(t(3), IP), Some(MAC));
        assert_eq!(c.lookup(t(60_002), IP), None, "entries expire");
        assert_eq!(c.poll_at(), None);
    }

    #[test]
    fn unanswered_requests_are_retried_then_fail_with_the_queue() {
        let mut c = ArpCache::new(ArpConfig::default());
        c.enqueue(t(0), PortId(0), IP, b"p");
        let mut ev = vec![];
        c.on_timer(t(500), |e| ev.push(e));
        assert!(ev.is_empty(), "not due yet");
        c.on_timer(t(1000), |e| ev.push(e));
        c.on_timer(t(2000), |e| ev.push(e));
        c.on_timer(t(3000), |e| ev.push(e));
        assert_eq!(
            ev,
            vec![
                ArpEvent::Retry {
                    port: PortId(0),
                    ip: IP
                },
                ArpEvent::Retry {
                    port: PortId(0),
                    ip: IP
                },
                ArpEvent::Failed {
                    port: PortId(0),
                    ip: IP,
                    queued: vec![b"p".to_vec()]
                },
            ]
        );
        assert_eq!(c.pending_len(), 0);
    }

    #[test]
    fn queues_and_pending_table_are_bounded() {
        let cfg = ArpConfig {
            max_queue: 2,
            max_pending: 1,
            ..ArpConfig::default()
        };
        let mut c = ArpCache::new(cfg);
        assert_eq!(c.enqueue(t(0), PortId(0), IP, b"1"), Enqueued::SendRequest);
        assert_eq!(c.enqueue(t(0), PortId(0), IP, b"2"), Enqueued::Queued);
        assert_eq!(c.enqueue(t(0), PortId(0), IP, b"3"), Enqueued::Full);
        assert_eq!(
            c.enqueue(t(0), PortId(0), Ipv4Addr::new(192, 0, 2, 3), b"x"),
            Enqueued::Full
        );
    }

    #[test]
    fn refresh_only_touches_known_addresses() {
        let mut c = ArpCache::new(ArpConfig::default());
        assert!(c.refresh(t(0), IP, MAC).is_none());
        assert_eq!(c.lookup(t(0), IP), None);
        c.insert(t(0), IP, MAC);
        c.refresh(t(0), IP, MacAddr([2, 0, 0, 0, 0, 9]));
        assert_eq!(c.lookup(t(0), IP), Some(MacAddr([2, 0, 0, 0, 0, 9])));
    }
}
