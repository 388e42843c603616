//! Waiting for the lab's BGP to converge: what `d11 up` does before it
//! returns (so that the phone's order works right after it), and what the
//! failure test and the benches wait for after a change.
//!
//! Converged means: every session between two of the lab's own routers is
//! Established, no speaker has anything waiting to be sent or acknowledged,
//! and no Loc-RIB changed across [`STABLE_POLLS`] polls [`POLL`] apart.
//! Neighbours that are not elements of the lab (BIRD or GoBGP in a host,
//! which a test starts after `d11 up`) are not waited for.

use anyhow::Result;
use d11_elements::bgp::FsmState;
use d11_elements::router::RouterReport;
use d11_lab::{NodeKind, RunDir, Topology};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Between two looks at the routers.
const POLL: Duration = Duration::from_millis(100);
/// Looks in a row with nothing changing.
const STABLE_POLLS: u32 = 3;

/// What the wait found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converged {
    /// Sessions Established between the lab's routers (each counted at both ends).
    pub sessions: usize,
    /// From the start of the wait to the first of the stable polls.
    pub took: Duration,
}

/// The routers of `topo` with a `bgp` table.
fn speakers(topo: &Topology) -> Vec<String> {
    topo.nodes
        .iter()
        .filter(|n| n.role.as_deref() == Some("router") && n.config.contains_key("bgp"))
        .map(|n| n.name.clone())
        .collect()
}

/// True if `ip` is a port address of one of the lab's elements.
fn is_element_address(topo: &Topology, ip: Ipv4Addr) -> bool {
    topo.nodes.iter().any(|n| {
        n.kind == NodeKind::Element
            && n.ports
                .iter()
                .any(|p| p.address.is_some_and(|a| a.addr() == ip))
    })
}

/// Waits until the lab's BGP has converged, or fails after `timeout`
/// naming the sessions that are not up. `None` when no router speaks BGP.
pub fn wait(lab: &str, topo: &Topology, timeout: Duration) -> Result<Option<Converged>> {
    let routers = speakers(topo);
    if routers.is_empty() {
        return Ok(None);
    }
    let dir = RunDir::new(lab);
    let t0 = Instant::now();
    let mut last: Option<Vec<u64>> = None;
    let mut stable = 0;
    let mut first_stable = t0;
    loop {
        let mut changes = Vec::new();
        let mut missing = Vec::new();
        let mut sessions = 0;
        for r in &routers {
            let report = d11_io::status(&dir.socket(r), Duration::from_secs(1))
                .map_err(anyhow::Error::from)
                .and_then(|s| Ok(s.report::<RouterReport>()?));
            let Some(bgp) = report.ok().and_then(|r| r.bgp) else {
                missing.push(format!("{r} does not answer"));
                continue;
            };
            changes.push(bgp.rib_changes);
            for n in bgp
                .neighbors
                .iter()
                .filter(|n| is_element_address(topo, n.address))
            {
                if n.state == FsmState::Established {
                    sessions += 1;
                } else {
                    missing.push(format!("{r} → {} is {}", n.address, n.state));
                }
            }
            if bgp.pending {
                missing.push(format!("{r} has updates to send"));
            }
        }
        if missing.is_empty() && last.as_ref() == Some(&changes) {
            stable += 1;
            if stable >= STABLE_POLLS {
                return Ok(Some(Converged {
                    sessions,
                    took: first_stable.duration_since(t0),
                }));
            }
        } else {
            stable = 0;
            first_stable = Instant::now();
        }
        last = Some(changes);
        if t0.elapsed() > timeout {
            anyhow::bail!(
                "BGP did not converge within {} s: {}",
                timeout.as_secs(),
                missing.join("; ")
            );
        }
        std::thread::sleep(POLL);
    }
}
