//! The waits between tries of a read or write a thread's state depends on (guest/ctx.rs
//! `persistent`): 0.5 s doubling up to a cap, with ±25 % jitter so the threads of a section held
//! behind one outage do not all come back in the same instant.

use std::time::Duration;

/// The cap when config.yaml gives none (`polling.backoff_max_ms`'s default).
pub const DEFAULT_CAP_MS: u64 = 30_000;

/// The cap from the section's `worker-config`: `polling.backoff_max_ms`, kept within 10 ms–5 min.
pub fn cap(worker_config: &serde_json::Value) -> Duration {
    let ms = worker_config
        .pointer("/polling/backoff_max_ms")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(DEFAULT_CAP_MS);
    Duration::from_millis(ms.clamp(10, 300_000))
}

/// The wait before try `attempt + 1` (`attempt` counts from 0); `jitter` is in `[0, 1]`.
pub fn delay(attempt: u32, cap: Duration, jitter: f64) -> Duration {
    let base = Duration::from_millis(500u64.saturating_mul(1 << attempt.min(16))).min(cap);
    base.mul_f64(0.75 + 0.5 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_around_it() {
        let cap = Duration::from_secs(30);
        assert_eq!(delay(0, cap, 0.5), Duration::from_millis(500));
        assert_eq!(delay(3, cap, 0.5), Duration::from_secs(4));
        assert_eq!(delay(10, cap, 0.5), cap);
        assert_eq!(delay(u32::MAX, cap, 0.5), cap);
        assert_eq!(delay(10, cap, 0.0), cap.mul_f64(0.75));
        assert_eq!(delay(10, cap, 1.0), cap.mul_f64(1.25));
    }

    #[test]
    fn the_cap_comes_from_polling_backoff_max_ms() {
        assert_eq!(cap(&json!({})), Duration::from_secs(30));
        assert_eq!(
            cap(&json!({"polling": {"backoff_max_ms": 100}})),
            Duration::from_millis(100)
        );
        assert_eq!(
            cap(&json!({"polling": {"backoff_max_ms": 0}})),
            Duration::from_millis(10)
        );
    }
}
