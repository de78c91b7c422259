//! Rate-limiting repeated warnings: a thread stuck behind an outage says so once a minute, not on
//! every retry (guest/ctx.rs `log`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Warnings with the same key within this window are counted, not written.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Per key (event and thread): when it was last written and how many were held back since.
#[derive(Debug, Default)]
pub struct Repeats {
    seen: HashMap<(String, String), (Instant, u64)>,
}

impl Repeats {
    /// Whether a warning with `key` is written at `now`: `Some(n)` with the number held back since
    /// the last one written, `None` to hold it back.
    pub fn admit(&mut self, key: (String, String), now: Instant) -> Option<u64> {
        match self.seen.get_mut(&key) {
            Some((at, held)) if now.duration_since(*at) < WINDOW => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                let n = *held;
                *at = now;
                *held = 0;
                Some(n)
            }
            None => {
                self.seen.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(e: &str, t: &str) -> (String, String) {
        (e.to_string(), t.to_string())
    }

    #[test]
    fn one_per_window_per_key_with_the_count_held_back() {
        let mut r = Repeats::default();
        let t0 = Instant::now();
        assert_eq!(r.admit(key("post_failed", "t1"), t0), Some(0));
        for i in 1..=1500 {
            assert_eq!(
                r.admit(key("post_failed", "t1"), t0 + Duration::from_millis(i)),
                None
            );
        }
        // Another thread, or another event, is its own key.
        assert_eq!(r.admit(key("post_failed", "t2"), t0), Some(0));
        assert_eq!(r.admit(key("read_failed", "t1"), t0), Some(0));
        assert_eq!(r.admit(key("post_failed", "t1"), t0 + WINDOW), Some(1500));
        assert_eq!(
            r.admit(
                key("post_failed", "t1"),
                t0 + WINDOW + Duration::from_secs(1)
            ),
            None
        );
    }
}
