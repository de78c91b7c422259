//! Fault injection per command (or `users_me`, `get_revision`, `*` for any):
//! latency, 5xx, 429 with `Retry-After`, dropped connections. A seeded RNG
//! makes rates below 1.0 reproducible.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What to do to matching requests. Rates are probabilities in `[0, 1]`,
/// checked in the order 429, 5xx, drop.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added before anything else happens.
    pub latency_ms: u64,
    /// Answer 503 with a non-JSON body.
    pub rate_5xx: f64,
    /// Answer 429 with `Retry-After: retry_after_s`; the request never runs.
    pub rate_429: f64,
    pub retry_after_s: u64,
    /// Close the TCP connection without any response.
    pub rate_drop: f64,
    /// Apply the command first, then answer 5xx / drop: the "outcome unknown" case.
    #[serde(alias = "drop_after_apply")]
    pub after_apply: bool,
    /// Only the next `times` matching requests are affected; then the rule is removed.
    pub times: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    TooMany { retry_after_s: u64 },
    ServerError,
    Drop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub latency: Duration,
    pub action: Action,
    pub after_apply: bool,
}

impl Decision {
    pub const NONE: Decision = Decision {
        latency: Duration::ZERO,
        action: Action::None,
        after_apply: false,
    };
}

pub struct FaultTable {
    rules: HashMap<String, Faults>,
    rng: fastrand::Rng,
}

impl Default for FaultTable {
    fn default() -> Self {
        FaultTable {
            rules: HashMap::new(),
            rng: fastrand::Rng::new(),
        }
    }
}

impl FaultTable {
    pub fn set(&mut self, key: &str, faults: Faults) {
        self.rules.insert(key.to_owned(), faults);
    }

    pub fn clear(&mut self) {
        self.rules.clear();
    }

    pub fn seed(&mut self, seed: u64) {
        self.rng = fastrand::Rng::with_seed(seed);
    }

    pub fn rules(&self) -> HashMap<String, Faults> {
        self.rules.clone()
    }

    /// Picks the fate of one request to `key` (falling back to the `*` rule).
    pub fn decide(&mut self, key: &str) -> Decision {
        let rule_key = if self.rules.contains_key(key) {
            key
        } else if self.rules.contains_key("*") {
            "*"
        } else {
            return Decision::NONE;
        };
        let rule_key = rule_key.to_owned();
        let f = self.rules.get(&rule_key).cloned().unwrap_or_default();
        if let Some(n) = f.times {
            if n <= 1 {
                self.rules.remove(&rule_key);
            } else if let Some(r) = self.rules.get_mut(&rule_key) {
                r.times = Some(n - 1);
            }
        }
        let mut roll = |rate: f64| rate > 0.0 && self.rng.f64() < rate;
        let action = if roll(f.rate_429) {
            Action::TooMany {
                retry_after_s: f.retry_after_s,
            }
        } else if roll(f.rate_5xx) {
            Action::ServerError
        } else if roll(f.rate_drop) {
            Action::Drop
        } else {
            Action::None
        };
        Decision {
            latency: Duration::from_millis(f.latency_ms),
            action,
            after_apply: f.after_apply,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_rates_are_reproducible_and_times_expire() {
        let run = || {
            let mut t = FaultTable::default();
            t.seed(7);
            t.set(
                "x",
                Faults {
                    rate_5xx: 0.5,
                    ..Faults::default()
                },
            );
            (0..50).map(|_| t.decide("x").action).collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        assert!(a.contains(&Action::ServerError) && a.contains(&Action::None));

        let mut t = FaultTable::default();
        t.set(
            "*",
            Faults {
                rate_drop: 1.0,
                times: Some(2),
                ..Faults::default()
            },
        );
        assert_eq!(t.decide("y").action, Action::Drop);
        assert_eq!(t.decide("z").action, Action::Drop);
        assert_eq!(t.decide("y").action, Action::None);
    }
}
