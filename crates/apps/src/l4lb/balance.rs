//! Choosing a backend for a new session, without I/O: HAProxy's `balance
//! roundrobin` and `balance leastconn` over the servers currently UP.

use serde::{Deserialize, Serialize};

/// The balancing algorithm (HAProxy's `balance`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    /// Each UP server in turn.
    #[default]
    RoundRobin,
    /// The UP server with the fewest active sessions; ties in turn.
    LeastConn,
}

/// HAProxy's name of the algorithm (`balance roundrobin`).
impl std::fmt::Display for Balance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Balance::RoundRobin => "roundrobin",
            Balance::LeastConn => "leastconn",
        })
    }
}

/// What the balancer needs to know about one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The server passes its health checks.
    pub up: bool,
    /// Sessions currently assigned to it.
    pub active: usize,
}

/// The balancer's state: where the next turn starts.
#[derive(Debug, Clone)]
pub struct Balancer {
    balance: Balance,
    next: usize,
}

impl Balancer {
    pub fn new(balance: Balance) -> Balancer {
        Balancer { balance, next: 0 }
    }

    /// The index of the server for a new session among `servers`, skipping
    /// DOWN ones and those in `tried` (earlier failed attempts of the same
    /// session); `None` when no server is eligible.
    pub fn choose(&mut self, servers: &[Candidate], tried: &[usize]) -> Option<usize> {
        let n = servers.len();
        let mut best: Option<usize> = None;
        for k in 0..n {
            let i = (self.next + k) % n;
            let s = servers[i];
            if !s.up || tried.contains(&i) {
                continue;
            }
            match (self.balance, best) {
                (Balance::RoundRobin, _) | (Balance::LeastConn, None) => best = Some(i),
                (Balance::LeastConn, Some(b)) if s.active < servers[b].active => best = Some(i),
                _ => {}
            }
            if self.balance == Balance::RoundRobin {
                break;
            }
        }
        let i = best?;
        self.next = (i + 1) % n;
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(active: usize) -> Candidate {
        Candidate { up: true, active }
    }

    fn down() -> Candidate {
        Candidate {
            up: false,
            active: 0,
        }
    }

    fn picks(b: &mut Balancer, servers: &[Candidate], n: usize) -> Vec<Option<usize>> {
        (0..n).map(|_| b.choose(servers, &[])).collect()
    }

    #[test]
    fn round_robin_takes_each_server_in_turn() {
        let mut b = Balancer::new(Balance::RoundRobin);
        let servers = [up(0), up(0), up(0)];
        assert_eq!(
            picks(&mut b, &servers, 4),
            [Some(0), Some(1), Some(2), Some(0)]
        );
    }

    #[test]
    fn round_robin_skips_down_servers() {
        let mut b = Balancer::new(Balance::RoundRobin);
        let servers = [up(0), down(), up(0)];
        assert_eq!(
            picks(&mut b, &servers, 4),
            [Some(0), Some(2), Some(0), Some(2)]
        );
    }

    #[test]
    fn round_robin_resumes_after_the_last_pick_when_a_server_comes_back() {
        let mut b = Balancer::new(Balance::RoundRobin);
        assert_eq!(b.choose(&[up(0), down()], &[]), Some(0));
        assert_eq!(b.choose(&[up(0), down()], &[]), Some(0));
        assert_eq!(b.choose(&[up(0), up(0)], &[]), Some(1));
    }

    #[test]
    fn a_retry_skips_the_servers_already_tried() {
        let mut b = Balancer::new(Balance::RoundRobin);
        let servers = [up(0), up(0), up(0)];
        assert_eq!(b.choose(&servers, &[]), Some(0));
        assert_eq!(b.choose(&servers, &[0, 1]), Some(2));
        assert_eq!(b.choose(&servers, &[0, 1, 2]), None);
    }

    #[test]
    fn no_server_up_means_no_choice() {
        let mut b = Balancer::new(Balance::LeastConn);
        assert_eq!(b.choose(&[down(), down()], &[]), None);
        assert_eq!(b.choose(&[], &[]), None);
    }

    #[test]
    fn leastconn_picks_the_up_server_with_fewest_sessions() {
        let mut b = Balancer::new(Balance::LeastConn);
        assert_eq!(b.choose(&[up(3), up(1), up(2)], &[]), Some(1));
        assert_eq!(b.choose(&[up(3), down(), up(2)], &[]), Some(2));
        assert_eq!(b.choose(&[up(0), up(5)], &[0]), Some(1));
    }

    #[test]
    fn leastconn_breaks_ties_in_turn() {
        let mut b = Balancer::new(Balance::LeastConn);
        let servers = [up(1), up(1), up(1)];
        assert_eq!(
            picks(&mut b, &servers, 4),
            [Some(0), Some(1), Some(2), Some(0)]
        );
    }
}
