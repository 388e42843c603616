//! A server's health, without I/O: HAProxy's check counter, shared by the
//! l4lb's backends and the GSLB's VIPs. A server is UP after `rise`
//! consecutive passed checks and DOWN after `fall` failed ones; in between,
//! each result moves the counter one step, so one lost check on a busy
//! network does not take a healthy server out.
//!
//! Like HAProxy's default `init-state up`, a server starts UP but at the
//! bottom of the UP range: the first failed check takes it DOWN, while a
//! server that has passed `fall - 1` checks since needs `fall` failures.
//! With `init-state fully-up` it starts at the top and needs `fall`
//! failures from the first check on.

use serde::Deserialize;

/// Health checks of every backend (HAProxy's `inter`, `timeout check`,
/// `rise`, `fall`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Time between two checks of a backend.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// A check's TCP connect gives up after this long.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive passed checks that take a DOWN server UP.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failed checks that take an UP server DOWN.
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// Where a server starts (HAProxy's `init-state`).
    #[serde(default)]
    pub init_state: InitState,
}

/// A server's state before its first check (HAProxy's `init-state`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InitState {
    /// UP, but the first failed check takes it DOWN (HAProxy's default).
    #[default]
    Up,
    /// UP, and only `fall` failed checks take it DOWN: for backends that
    /// start at the same time as the balancer and may not listen yet.
    FullyUp,
}

fn default_interval_ms() -> u64 {
    500
}

fn default_timeout_ms() -> u64 {
    500
}

fn default_rise() -> u32 {
    2
}

fn default_fall() -> u32 {
    3
}

impl Default for HealthConfig {
    fn default() -> HealthConfig {
        HealthConfig {
            interval_ms: default_interval_ms(),
            timeout_ms: default_timeout_ms(),
            rise: default_rise(),
            fall: default_fall(),
            init_state: InitState::default(),
        }
    }
}

/// A change of a server's state caused by a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Up,
    Down,
}

/// One server's check counter: `0..rise` while DOWN, `rise..rise+fall` while UP.
#[derive(Debug, Clone)]
pub struct Health {
    rise: u32,
    fall: u32,
    health: u32,
    up: bool,
}

impl Health {
    /// A server in its initial state: UP, one failure away from DOWN
    /// (`InitState::Up`) or `fall` failures away (`InitState::FullyUp`).
    /// `rise` and `fall` are at least 1.
    pub fn new(rise: u32, fall: u32, init: InitState) -> Health {
        Health {
            rise,
            fall,
            health: match init {
                InitState::Up => rise,
                InitState::FullyUp => rise + fall - 1,
            },
            up: true,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Takes one check's result; answers the state change it causes.
    pub fn on_check(&mut self, passed: bool) -> Option<Transition> {
        let top = self.rise + self.fall - 1;
        match (self.up, passed) {
            (true, true) => {
                self.health = (self.health + 1).min(top);
                None
            }
            (true, false) if self.health > self.rise => {
                self.health -= 1;
                None
            }
            (true, false) => {
                self.up = false;
                self.health = 0;
                Some(Transition::Down)
            }
            (false, true) => {
                self.health += 1;
                if self.health < self.rise {
                    return None;
                }
                self.up = true;
                self.health = top;
                Some(Transition::Up)
            }
            (false, false) => {
                self.health = 0;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(h: &mut Health, checks: &[bool]) -> Vec<Option<Transition>> {
        checks.iter().map(|&c| h.on_check(c)).collect()
    }

    #[test]
    fn a_fully_up_server_needs_fall_failures_from_the_start() {
        let mut h = Health::new(2, 3, InitState::FullyUp);
        assert!(h.is_up());
        assert_eq!(run(&mut h, &[false, false]), [None, None]);
        assert_eq!(h.on_check(false), Some(Transition::Down));
    }

    #[test]
    fn a_fresh_server_is_up_and_its_first_failed_check_takes_it_down() {
        let mut h = Health::new(2, 3, InitState::Up);
        assert!(h.is_up());
        assert_eq!(h.on_check(false), Some(Transition::Down));
        assert!(!h.is_up());
    }

    #[test]
    fn a_healthy_server_goes_down_after_fall_consecutive_failures() {
        let mut h = Health::new(2, 3, InitState::Up);
        run(&mut h, &[true, true]);
        assert_eq!(run(&mut h, &[false, false]), [None, None]);
        assert!(h.is_up());
        assert_eq!(h.on_check(false), Some(Transition::Down));
    }

    #[test]
    fn a_down_server_comes_up_after_rise_consecutive_passes() {
        let mut h = Health::new(2, 3, InitState::Up);
        h.on_check(false);
        assert_eq!(h.on_check(true), None);
        assert!(!h.is_up());
        assert_eq!(h.on_check(true), Some(Transition::Up));
        assert!(h.is_up());
    }

    #[test]
    fn a_failure_while_rising_starts_the_count_again() {
        let mut h = Health::new(2, 3, InitState::Up);
        h.on_check(false);
        assert_eq!(run(&mut h, &[true, false, true]), [None, None, None]);
        assert_eq!(h.on_check(true), Some(Transition::Up));
    }

    #[test]
    fn a_server_that_just_came_up_needs_fall_failures_to_go_down() {
        let mut h = Health::new(2, 3, InitState::Up);
        run(&mut h, &[false, true, true]);
        assert_eq!(
            run(&mut h, &[false, false, false]),
            [None, None, Some(Transition::Down)]
        );
    }

    #[test]
    fn a_pass_between_failures_undoes_one_failure() {
        let mut h = Health::new(2, 3, InitState::Up);
        run(&mut h, &[true, true]);
        let got = run(&mut h, &[false, false, true, false, false]);
        assert_eq!(got, [None, None, None, None, Some(Transition::Down)]);
    }

    #[test]
    fn rise_and_fall_of_one_follow_every_check() {
        let mut h = Health::new(1, 1, InitState::Up);
        let got = run(&mut h, &[true, false, false, true, true, false]);
        let (u, d) = (Some(Transition::Up), Some(Transition::Down));
        assert_eq!(got, [None, d, None, u, None, d]);
    }

    #[test]
    fn omitted_keys_take_haproxy_defaults() {
        let c: HealthConfig = serde_json::from_str(r#"{"fall": 5}"#).unwrap();
        assert_eq!(
            (c.interval_ms, c.timeout_ms, c.rise, c.fall),
            (500, 500, 2, 5)
        );
        assert!(serde_json::from_str::<HealthConfig>(r#"{"inter": 5}"#).is_err());
    }
}
