//! What a node's control socket answers (`/run/d11/LAB/NODE.sock`), as
//! typed values: the element's driver and the apps' runtime build them, and
//! `d11 status`, `show`, `impair`, `demo` and the benches read them back.
//! JSON is only how they cross the socket.
//!
//! | command | answer |
//! |---|---|
//! | `status` | [`Status`] |
//! | `table NAME` | [`Table`]: one table in full |
//! | `impair` | [`ImpairReport`] |
//! | `impair PORT tx\|rx SPEC` | [`ImpairSet`] |
//! | `ping` | `{"ok": true}` |
//! | anything refused | `{"error": "…"}` ([`Refusal`]) |

use crate::impair::ImpairStats;
use crate::PortCounters;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The most rows of one table a [`Status`] report carries: more (a router
/// with a whole Internet table) would make every `status` megabytes of
/// JSON built inside the element's loop. `table NAME` has them all.
pub const REPORT_ROWS: usize = 1_000;

/// The answer to `table NAME`: that table's rows, in full.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Table {
    pub table: String,
    pub rows: serde_json::Value,
}

/// The answer to `status`: who answers, its ports (elements only) and its
/// own report (its role's or app's report type, for example
/// `d11_elements::pgw::PgwReport`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub node: String,
    /// The element's role or the host's app.
    pub role: String,
    pub pid: u32,
    pub uptime_ms: u64,
    /// In port order.
    #[serde(default, with = "ordered", skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<(String, PortStatus)>,
    #[serde(default)]
    pub report: serde_json::Value,
}

impl Status {
    /// The port named `name`.
    pub fn port(&self, name: &str) -> Option<&PortStatus> {
        self.ports.iter().find(|(n, _)| n == name).map(|(_, p)| p)
    }

    /// The report as the role's (or app's) own type.
    pub fn report<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.report)
    }
}

/// One port of an element: what it counted, and its impairment if any.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStatus {
    #[serde(flatten)]
    pub counters: PortCounters,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impair: Option<ImpairStatus>,
}

/// A port's impairments (`docs/impair.md`): each side's spec and counts,
/// and the frames waiting in its delay queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImpairStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx: Option<ImpairSide>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx: Option<ImpairSide>,
    pub queued: usize,
}

/// One side's impairment: the spec as `d11 impair` takes it, and its counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImpairSide {
    pub spec: String,
    #[serde(flatten)]
    pub stats: ImpairStats,
}

/// The answer to `impair`: the impaired ports by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImpairReport {
    #[serde(with = "ordered")]
    pub ports: Vec<(String, ImpairStatus)>,
}

/// The answer to `impair PORT SIDE SPEC`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImpairSet {
    pub ok: bool,
    pub port: String,
    pub side: String,
    /// The spec as applied (with its seed).
    pub impair: String,
}

/// A command the node refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub error: String,
}

/// `Vec<(name, T)>` as a JSON object keyed by name, in order (a port list
/// reads as `{"radio": …, "s1u": …}`).
mod ordered {
    use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
    use serde::ser::{SerializeMap, Serializer};
    use serde::Serialize;
    use std::marker::PhantomData;

    pub fn serialize<S: Serializer, T: Serialize>(
        v: &[(String, T)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(v.len()))?;
        for (k, x) in v {
            m.serialize_entry(k, x)?;
        }
        m.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Vec<(String, T)>, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Vec<(String, T)>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut v = Vec::new();
                while let Some(e) = a.next_entry()? {
                    v.push(e);
                }
                Ok(v)
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DropReason;

    #[test]
    fn a_status_round_trips_with_its_ports_in_order_and_drops_by_name() {
        let mut c = PortCounters {
            rx_frames: 3,
            ..PortCounters::default()
        };
        c.drops[DropReason::NoRoute as usize] = 2;
        let s = Status {
            node: "a2".into(),
            role: "router".into(),
            pid: 7,
            uptime_ms: 1,
            ports: vec![
                ("sgi".into(), PortStatus::default()),
                (
                    "a2c1".into(),
                    PortStatus {
                        counters: c.clone(),
                        impair: None,
                    },
                ),
            ],
            report: serde_json::json!({"fib": []}),
        };
        let j = serde_json::to_string(&s).unwrap();
        assert!(j.contains(r#""ports":{"sgi":"#), "{j}");
        assert!(j.contains(r#""drops":{"no_route":2}"#), "{j}");
        let back: Status = serde_json::from_str(&j).unwrap();
        assert_eq!(back.ports, s.ports);
        assert_eq!(back.port("a2c1").unwrap().counters, c);
    }

    #[test]
    fn an_apps_status_has_no_ports() {
        let s: Status = serde_json::from_str(
            r#"{"node":"vm-lb","role":"l4lb","pid":1,"uptime_ms":5,"report":{"sessions":3}}"#,
        )
        .unwrap();
        assert!(s.ports.is_empty());
        assert_eq!(s.report["sessions"], 3);
    }
}
