//! Chapter 2 of `d11 demo`, told from the capture `d11 up --capture` made
//! of the lab's first moments: the BGP sessions' OPENs, the UPDATEs that
//! carried the shop's prefix from the border to the mobile carrier, the
//! decision where two paths met, and the FIB entries that came of it.
//! Messages are decoded with `d11_wire::bgp` (`d11_lab::bgplog`); the
//! routers' own tables come from `d11 show NODE rib|bgp|fib --json`.

use d11_core::l3::{FibRow, RouteSource};
use d11_elements::bgp::{BgpReport, RibRow};
use d11_lab::bgplog::BgpMessage;
use d11_wire::bgp::Message;
use d11_wire::Ipv4Cidr;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// One router's tables, as `d11 show` gave them.
pub(crate) struct RouterTables {
    pub name: String,
    pub bgp: BgpReport,
    pub rib: Vec<RibRow>,
    pub fib: Vec<FibRow>,
}

/// What chapter 2 is told from.
pub(crate) struct Chapter2<'a> {
    pub messages: &'a [BgpMessage],
    /// The capture's first frame, to tell times from.
    pub start_ns: u64,
    /// Address → node, for names instead of numbers.
    pub names: &'a BTreeMap<Ipv4Addr, String>,
    /// The shop's address the phone orders from (its `/etc/hosts` entry).
    pub vip: Option<Ipv4Addr>,
    pub routers: &'a [RouterTables],
    pub file: &'a str,
}

impl Chapter2<'_> {
    fn name(&self, ip: Ipv4Addr) -> String {
        self.names
            .get(&ip)
            .cloned()
            .unwrap_or_else(|| ip.to_string())
    }

    fn at(&self, ts: u64) -> String {
        format!("+{:.3} s", ts.saturating_sub(self.start_ns) as f64 / 1e9)
    }

    pub(crate) fn tell(&self) -> String {
        let mut s = String::new();
        if self.messages.is_empty() {
            let _ = writeln!(
                s,
                "(no BGP message in {}: the lab's routers speak no BGP)",
                self.file
            );
            return s;
        }
        let last = self.messages.iter().map(|m| m.ts_ns).max().unwrap_or(0);
        let _ = writeln!(
            s,
            "{} BGP messages in the lab's first {:.2} s ({}); the sessions, each OPEN as it crossed its wire:",
            self.messages.len(),
            last.saturating_sub(self.start_ns) as f64 / 1e9,
            self.file
        );
        for m in self.messages {
            let line = match &m.message {
                Message::Open(o) => o.to_string(),
                Message::Notification(n) if (n.code, n.subcode) == (6, 7) => format!(
                    "NOTIFICATION {n}: both ends had connected at once; RFC 4271 § 6.8 keeps the connection the higher BGP Identifier opened"
                ),
                Message::Notification(n) => format!("NOTIFICATION {n}"),
                _ => continue,
            };
            let _ = writeln!(
                s,
                "  {}  {:<12} {:>6} → {:<6}  {line}",
                self.at(m.ts_ns),
                m.wire,
                self.name(*m.src.ip()),
                self.name(*m.dst.ip())
            );
        }
        let Some(vip) = self.vip else { return s };
        let carrying: Vec<&BgpMessage> = self
            .messages
            .iter()
            .filter(|m| match &m.message {
                Message::Update(u) => u.announcements().iter().any(|p| p.contains(vip)),
                _ => false,
            })
            .collect();
        let _ = writeln!(
            s,
            "the UPDATEs that told the carriers where {vip} (the shop) is, each from a router to its neighbour:"
        );
        for m in &carrying {
            let Message::Update(u) = &m.message else {
                continue;
            };
            let (from, to) = (self.name(*m.src.ip()), self.name(*m.dst.ip()));
            let prefixes: Vec<Ipv4Cidr> = u
                .announcements()
                .iter()
                .filter(|p| p.contains(vip))
                .copied()
                .collect();
            let a = &u.attrs;
            let mut what = format!(
                "{} with AS_PATH [{}], NEXT_HOP {}",
                join(&prefixes),
                a.path(),
                a.next_hop.map_or("-".into(), |n| n.to_string())
            );
            if let Some(lp) = a.local_pref {
                let _ = write!(what, ", LOCAL_PREF {lp} (inside the AS: iBGP)");
            }
            let _ = writeln!(s, "  {}  {from:>6} → {to:<6}  {what}", self.at(m.ts_ns));
        }
        for r in self.routers {
            s.push_str(&self.decision(r, vip));
        }
        s
    }

    /// Where a router heard more than one path to the shop: which it chose
    /// and why [RFC 4271 § 9.1.2.2], and the FIB entries its BGP routes made.
    fn decision(&self, r: &RouterTables, vip: Ipv4Addr) -> String {
        let mut s = String::new();
        let cands: Vec<&RibRow> = r
            .rib
            .iter()
            .filter(|row| row.prefix.contains(vip))
            .collect();
        let Some(best) = cands.iter().find(|c| c.best) else {
            return s;
        };
        if cands.len() < 2 {
            return s;
        }
        let paths: Vec<String> = cands
            .iter()
            .map(|c| {
                format!(
                    "via {} AS_PATH [{}]",
                    self.neighbor_name(&c.from),
                    c.as_path
                )
            })
            .collect();
        let others: Vec<&&RibRow> = cands.iter().filter(|c| !c.best).collect();
        let why = others
            .first()
            .map_or(String::new(), |o| self.why(r, best, o));
        let _ = writeln!(
            s,
            "{} heard {} paths to {}: {}; {why}: {} (best, d11 show {} rib).",
            r.name,
            cands.len(),
            best.prefix,
            paths.join(" and "),
            self.neighbor_name(&best.from),
            r.name
        );
        let bgp_fib: Vec<String> = r
            .fib
            .iter()
            .filter(|f| f.source == RouteSource::Bgp)
            .map(|f| {
                format!(
                    "{} via {} on {}",
                    f.prefix,
                    f.via.map_or("-".into(), |v| v.to_string()),
                    f.port
                )
            })
            .collect();
        if !bgp_fib.is_empty() {
            let _ = writeln!(
                s,
                "{}'s FIB entries from BGP (d11 show {} fib): {}.",
                r.name,
                r.name,
                bgp_fib.join(", ")
            );
        }
        s
    }

    fn neighbor_name(&self, from: &str) -> String {
        from.parse::<Ipv4Addr>()
            .map_or(from.to_string(), |ip| self.name(ip))
    }

    /// The first step of the decision process that tells `best` from `other`.
    fn why(&self, r: &RouterTables, best: &RibRow, other: &RibRow) -> String {
        let len = |row: &RibRow| row.as_path.split_whitespace().count();
        let first = |row: &RibRow| row.as_path.split_whitespace().next().map(str::to_string);
        if best.local_pref != other.local_pref {
            return "the higher LOCAL_PREF wins".into();
        }
        if len(best) != len(other) {
            return "the shorter AS_PATH wins".into();
        }
        if best.origin != other.origin {
            return "the lower ORIGIN wins".into();
        }
        if first(best) == first(other) && best.med != other.med {
            return "the lower MED from the same AS wins".into();
        }
        let id = |row: &RibRow| {
            r.bgp
                .neighbors
                .iter()
                .find(|n| n.address.to_string() == row.from)
                .and_then(|n| n.peer_id)
                .map_or("?".into(), |i| i.to_string())
        };
        format!(
            "the same AS_PATH length and ORIGIN, MEDs of different ASes not compared, both external: the lower BGP Identifier wins ({} against {})",
            id(best),
            id(other)
        )
    }
}

fn join(p: &[Ipv4Cidr]) -> String {
    p.iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use d11_wire::bgp::{AsPath, Capability, OpenRepr, Origin, PathAttrs, UpdateRepr};
    use std::net::SocketAddrV4;

    fn msg(t: u64, from: [u8; 4], to: [u8; 4], m: Message) -> BgpMessage {
        BgpMessage {
            wire: "a2:a2c1".into(),
            ts_ns: t,
            src: SocketAddrV4::new(Ipv4Addr::from(from), 179),
            dst: SocketAddrV4::new(Ipv4Addr::from(to), 50000),
            message: m,
        }
    }

    fn update(path: &[u32], nh: [u8; 4]) -> Message {
        Message::Update(UpdateRepr {
            attrs: PathAttrs {
                origin: Some(Origin::Igp),
                as_path: Some(AsPath::sequence(path)),
                next_hop: Some(Ipv4Addr::from(nh)),
                ..PathAttrs::default()
            },
            nlri: vec!["203.0.113.0/24".parse().unwrap()],
            ..UpdateRepr::default()
        })
    }

    fn row(from: &str, path: &str, best: bool) -> RibRow {
        RibRow {
            prefix: "203.0.113.0/24".parse().unwrap(),
            as_path: path.into(),
            next_hop: from.parse().ok(),
            origin: "IGP".into(),
            local_pref: Some(100),
            med: None,
            from: from.into(),
            best,
            reachable: true,
        }
    }

    #[test]
    fn chapter_2_tells_the_opens_the_updates_and_the_decision() {
        let names: BTreeMap<Ipv4Addr, String> = [
            ([192, 0, 2, 1], "a2"),
            ([192, 0, 2, 2], "c1"),
            ([192, 0, 2, 13], "a2"),
            ([192, 0, 2, 14], "c3"),
        ]
        .into_iter()
        .map(|(a, n)| (Ipv4Addr::from(a), n.to_string()))
        .collect();
        let open = OpenRepr::new(
            64510,
            9,
            Ipv4Addr::new(192, 0, 2, 2),
            vec![Capability::FourOctetAs(64510)],
        );
        let messages = vec![
            msg(
                1_000_000_000,
                [192, 0, 2, 2],
                [192, 0, 2, 1],
                Message::Open(open),
            ),
            msg(
                1_200_000_000,
                [192, 0, 2, 2],
                [192, 0, 2, 1],
                update(&[64510, 64600], [192, 0, 2, 2]),
            ),
            msg(
                1_300_000_000,
                [192, 0, 2, 14],
                [192, 0, 2, 13],
                update(&[64520, 64600], [192, 0, 2, 14]),
            ),
        ];
        let bgp: BgpReport = serde_json::from_value(serde_json::json!({
            "local_as": 64500, "router_id": "192.0.2.1", "loc_rib": 3, "rib_changes": 3,
            "rejected_connections": 0, "pending": false, "counters": [],
            "neighbors": [
                {"address": "192.0.2.2", "remote_as": 64510, "kind": "eBGP", "state": "Established", "uptime_ms": 1,
                 "hold_time": 9, "peer_id": "192.0.2.2", "capabilities": null, "four_octet_as": true, "route_refresh": true,
                 "received": 2, "accepted": 2, "advertised": 1, "import": "all", "export": "x",
                 "last_notification_sent": null, "last_notification_received": null, "last_error": null},
                {"address": "192.0.2.14", "remote_as": 64520, "kind": "eBGP", "state": "Established", "uptime_ms": 1,
                 "hold_time": 9, "peer_id": "192.0.2.14", "capabilities": null, "four_octet_as": true, "route_refresh": true,
                 "received": 1, "accepted": 1, "advertised": 1, "import": "all", "export": "x",
                 "last_notification_sent": null, "last_notification_received": null, "last_error": null}
            ]
        }))
        .unwrap();
        let fib = vec![FibRow {
            prefix: "203.0.113.0/24".parse().unwrap(),
            port: "a2c1".into(),
            via: Some(Ipv4Addr::new(192, 0, 2, 2)),
            source: RouteSource::Bgp,
        }];
        let routers = [RouterTables {
            name: "a2".into(),
            bgp,
            rib: vec![
                row("192.0.2.2", "64510 64600", true),
                row("192.0.2.14", "64520 64600", false),
            ],
            fib,
        }];
        let s = Chapter2 {
            messages: &messages,
            start_ns: 900_000_000,
            names: &names,
            vip: Some(Ipv4Addr::new(203, 0, 113, 24)),
            routers: &routers,
            file: "demo-bgp.pcapng",
        }
        .tell();
        let lines: Vec<&str> = s.lines().collect();
        assert!(
            lines[0].starts_with("3 BGP messages in the lab's first 0.40 s"),
            "{s}"
        );
        assert!(
            lines[1].contains("+0.100 s")
                && lines[1].contains("c1 → a2")
                && lines[1].contains("OPEN v4 AS 64510 hold 9 s"),
            "{s}"
        );
        assert!(
            lines[3].contains("c1 → a2")
                && lines[3]
                    .contains("203.0.113.0/24 with AS_PATH [64510 64600], NEXT_HOP 192.0.2.2"),
            "{s}"
        );
        assert!(
            lines[4].contains("c3 → a2") && lines[4].contains("[64520 64600]"),
            "{s}"
        );
        assert!(
            lines[5].contains("a2 heard 2 paths to 203.0.113.0/24")
                && lines[5].contains(
                    "the lower BGP Identifier wins (192.0.2.2 against 192.0.2.14): c1 (best"
                ),
            "{s}"
        );
        assert!(
            lines[6].contains("203.0.113.0/24 via 192.0.2.2 on a2c1"),
            "{s}"
        );
    }
}
