//! Per-section quotas: what one job type may take of the worker's shared resources.
//!
//! Without them one section could exhaust what every section shares: thousands of concurrent
//! requests under the operator's key, status rows and log lines the worker keeps in memory, a
//! state folder that fills the disk. Each quota is a `job_types.<name>` key with a documented
//! default (docs/configuration.md). A hit is either a refused call (a request over the queue
//! bound, a write over the folder's quota) or the section's end with `JOB_TYPE_QUOTA_EXCEEDED`
//! (status rows, the folder measured over its quota); never growth of the worker as a whole.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::JobTypeSettings;

/// Requests allowed to wait for a slot, per slot in flight.
pub const QUEUED_PER_SLOT: usize = 16;

/// The longest text of one status field or log field kept; longer ones are cut.
pub const MAX_FIELD_BYTES: usize = 2048;

/// The quotas of one section.
#[derive(Debug)]
pub struct Quotas {
    /// Session API requests in flight at once.
    pub requests: Arc<tokio::sync::Semaphore>,
    /// Requests started and not finished (in flight or waiting for a slot).
    pub pending: Arc<AtomicUsize>,
    pub max_pending: usize,
    pub max_status_rows: usize,
    pub state_bytes: u64,
    /// The state folder's size as last measured.
    pub state_used: AtomicU64,
    /// How many times control entered the section's wasm (a call, or a host call returning):
    /// the state meter (`state_meter.rs`) skips a folder whose guest has not run since it was
    /// last measured.
    pub wasm_entries: AtomicU64,
    log: Mutex<LogBucket>,
}

impl Quotas {
    pub fn new(limits: &JobTypeSettings) -> Quotas {
        let slots = limits.max_requests_in_flight.max(1) as usize;
        Quotas {
            requests: Arc::new(tokio::sync::Semaphore::new(slots)),
            pending: Arc::new(AtomicUsize::new(0)),
            max_pending: slots * (QUEUED_PER_SLOT + 1),
            max_status_rows: limits.max_status_rows as usize,
            state_bytes: limits.state_quota_mib.saturating_mul(1 << 20),
            state_used: AtomicU64::new(0),
            wasm_entries: AtomicU64::new(0),
            log: Mutex::new(LogBucket::new(limits.max_log_lines_per_sec)),
        }
    }

    /// Count one more request, or refuse it when the queue is full. The guard gives it back.
    pub fn start_request(&self) -> Result<PendingGuard, String> {
        let before = self.pending.fetch_add(1, Ordering::AcqRel);
        if before >= self.max_pending {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(format!(
                "QUOTA_REQUESTS: {before} requests of this section are already waiting or in flight (job_types.<name>.max_requests_in_flight bounds them)"
            ));
        }
        Ok(PendingGuard(Arc::clone(&self.pending)))
    }

    /// Whether a log line may be written now; `Some(n)` also reports `n` lines dropped since
    /// the last one that was.
    pub fn admit_log_line(&self, now: Instant) -> LogAdmission {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(now)
    }

    /// Whether `more` bytes may be written into the state folder.
    pub fn state_room(&self, more: u64) -> Result<(), String> {
        let used = self.state_used.load(Ordering::Relaxed);
        if used.saturating_add(more) > self.state_bytes {
            return Err(format!(
                "QUOTA_STATE_BYTES: the state folder holds {used} bytes; {more} more would pass its quota of {} bytes (job_types.<name>.state_quota_mib)",
                self.state_bytes
            ));
        }
        self.state_used.fetch_add(more, Ordering::Relaxed);
        Ok(())
    }
}

/// Gives a counted request back when dropped.
#[derive(Debug)]
pub struct PendingGuard(Arc<AtomicUsize>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogAdmission {
    Write { dropped_before: u64 },
    Drop,
}

/// A token bucket: `rate` lines a second, bursts up to ten seconds' worth.
#[derive(Debug)]
struct LogBucket {
    rate: f64,
    tokens: f64,
    last: Option<Instant>,
    dropped: u64,
}

impl LogBucket {
    fn new(rate: u64) -> LogBucket {
        let rate = rate.max(1) as f64;
        LogBucket {
            rate,
            tokens: rate * 10.0,
            last: None,
            dropped: 0,
        }
    }

    fn admit(&mut self, now: Instant) -> LogAdmission {
        if let Some(last) = self.last {
            let refill = now.duration_since(last).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + refill).min(self.rate * 10.0);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            let dropped_before = std::mem::take(&mut self.dropped);
            LogAdmission::Write { dropped_before }
        } else {
            self.dropped += 1;
            LogAdmission::Drop
        }
    }
}

/// `text` cut to [`MAX_FIELD_BYTES`] at a character boundary.
pub fn clip(mut text: String) -> String {
    if text.len() > MAX_FIELD_BYTES {
        let mut end = MAX_FIELD_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// How often the state folder is measured.
pub const STATE_CHECK: Duration = Duration::from_secs(15);

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> JobTypeSettings {
        JobTypeSettings {
            max_requests_in_flight: 2,
            max_log_lines_per_sec: 10,
            state_quota_mib: 1,
            ..JobTypeSettings::default()
        }
    }

    #[test]
    fn requests_past_the_queue_are_refused_and_given_back() {
        let q = Quotas::new(&limits());
        let guards: Vec<_> = (0..q.max_pending)
            .map(|_| q.start_request().unwrap())
            .collect();
        assert!(q.start_request().unwrap_err().starts_with("QUOTA_REQUESTS"));
        drop(guards);
        assert!(q.start_request().is_ok());
    }

    #[test]
    fn log_lines_past_the_rate_are_dropped_and_counted() {
        let q = Quotas::new(&limits());
        let t = Instant::now();
        let mut written = 0;
        for _ in 0..1000 {
            if matches!(q.admit_log_line(t), LogAdmission::Write { .. }) {
                written += 1;
            }
        }
        assert_eq!(written, 100, "a burst of ten seconds' worth");
        // A second later, ten more fit, and the first says how many were dropped.
        assert_eq!(
            q.admit_log_line(t + Duration::from_secs(1)),
            LogAdmission::Write {
                dropped_before: 900
            }
        );
    }

    #[test]
    fn writes_past_the_state_quota_are_refused() {
        let q = Quotas::new(&limits());
        assert!(q.state_room(1 << 19).is_ok());
        assert!(q.state_room(1 << 19).is_ok());
        assert!(
            q.state_room(1)
                .unwrap_err()
                .starts_with("QUOTA_STATE_BYTES")
        );
    }

    #[test]
    fn clip_keeps_characters_whole() {
        let long = "é".repeat(MAX_FIELD_BYTES);
        let cut = clip(long);
        assert!(cut.len() <= MAX_FIELD_BYTES + '…'.len_utf8());
        assert!(cut.ends_with('…'));
        assert_eq!(clip("short".into()), "short");
    }
}
