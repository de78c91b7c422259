//! Retry policy: capped exponential backoff with full jitter that honours `Retry-After`.

use std::time::{Duration, SystemTime};

use super::ApiError;

/// How many times and how patiently a call is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (1 = no retry).
    pub max_attempts: u32,
    /// The backoff before the first retry; it doubles per retry.
    pub base: Duration,
    /// The longest wait between two attempts (`polling.backoff_max_ms`).
    pub cap: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, 500 ms base (the reference's thread-item post), 30 s cap (the default
    /// `polling.backoff_max_ms`).
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// For commands a person waits on (`login`, `whoami`): three attempts within about a second,
    /// so a wrong or unreachable URL is reported at once instead of after the worker's patience.
    pub fn interactive() -> Self {
        Self {
            max_attempts: 3,
            base: Duration::from_millis(250),
            cap: Duration::from_secs(1),
        }
    }

    /// The default policy with the cap taken from `polling.backoff_max_ms`.
    pub fn with_cap_ms(backoff_max_ms: u64) -> Self {
        Self {
            cap: Duration::from_millis(backoff_max_ms),
            ..Self::default()
        }
    }

    /// The upper bound of the backoff before retry number `retry` (0 = the first retry):
    /// `min(cap, base * 2^retry)`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The wait before retry number `retry` after `error`, or `None` when the server asks for
    /// a longer wait than the cap allows (the caller's own, slower loop then takes over).
    ///
    /// Full jitter (a uniform draw in `[0, ceiling]`) spreads out many workers that failed at
    /// the same moment. A `Retry-After` is a floor: we never come back earlier than asked.
    pub fn delay(&self, retry: u32, error: &ApiError, jitter: f64) -> Option<Duration> {
        let jittered = self.ceiling(retry).mul_f64(jitter.clamp(0.0, 1.0));
        match error {
            ApiError::RateLimited {
                retry_after: Some(after),
            } => (*after <= self.cap).then(|| jittered.max(*after)),
            _ => Some(jittered),
        }
    }
}

/// Parses a `Retry-After` header value: delta-seconds or an HTTP date (RFC 9110, `Retry-After`).
/// A date in the past means "now".
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(3),
        }
    }

    #[test]
    fn ceiling_doubles_and_is_capped() {
        let p = policy();
        let ms: Vec<u128> = (0..6).map(|r| p.ceiling(r).as_millis()).collect();
        assert_eq!(ms, [500, 1000, 2000, 3000, 3000, 3000]);
        assert_eq!(p.ceiling(200), Duration::from_secs(3));
    }

    #[test]
    fn full_jitter_stays_within_zero_and_ceiling() {
        let p = policy();
        let err = ApiError::Transient {
            status: Some(503),
            detail: String::new(),
        };
        assert_eq!(p.delay(1, &err, 0.0), Some(Duration::ZERO));
        assert_eq!(p.delay(1, &err, 1.0), Some(Duration::from_secs(1)));
        assert_eq!(p.delay(1, &err, 0.5), Some(Duration::from_millis(500)));
        assert_eq!(p.delay(9, &err, 7.0), Some(Duration::from_secs(3)));
    }

    #[test]
    fn retry_after_is_a_floor_and_beyond_the_cap_gives_up() {
        let p = policy();
        let limited = |s| ApiError::RateLimited {
            retry_after: Some(Duration::from_secs(s)),
        };
        assert_eq!(p.delay(0, &limited(2), 0.0), Some(Duration::from_secs(2)));
        assert_eq!(p.delay(3, &limited(1), 1.0), Some(Duration::from_secs(3)));
        assert_eq!(p.delay(0, &limited(60), 1.0), None);
        let no_header = ApiError::RateLimited { retry_after: None };
        assert_eq!(
            p.delay(0, &no_header, 1.0),
            Some(Duration::from_millis(500))
        );
    }

    #[test]
    fn retry_after_parses_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }
}
