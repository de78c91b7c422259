//! Long idle waits end on a shared 64 ms grid, so that each costs one wake-up of the process.
//!
//! Why: tokio's timer wheel files a deadline 1.5 s away in its second level, whose slots are
//! 64 ms wide. The driver wakes at the start of that slot, moves the timer down to the 1 ms
//! level and sleeps again until the deadline itself: two wake-ups per idle poll, three when the
//! wait crosses a 4.096 s boundary of the third level. On an idle machine a wake-up after a
//! long sleep costs a few hundred µs of CPU (cold caches; docs/benchmarks.md, "Scale and idle
//! cost"), so the early wake-up was a large part of an idle poll's cost. A deadline on a
//! multiple of 64 ms from the timer's origin is due at the very start of its slot and fires in
//! the first wake-up; deadlines of several sections that land on the same grid point share it.
//!
//! The grid moves a long wait's end by at most half a slot (±32 ms, rounded to the nearest
//! point, so the mean cadence is unchanged). Waits shorter than [`MIN_WAIT`] are left exact: a
//! short polling interval (tests, `interval_*_ms` of a few ms) would otherwise be distorted, and
//! a wait under 64 ms sits in the 1 ms level and fires once anyway. The sections' first polls
//! stay spread over the interval (`feed.rs`): on 23 grid points per 1.5 s instead of anywhere.
//!
//! The origin is tokio's: its timer counts milliseconds from the moment the runtime's time
//! driver was created, which is not public. [`mark_origin`] runs just before the feed's runtime,
//! which runs every wait aligned here, is built (`feed_thread.rs`), a fraction of a millisecond
//! earlier; tokio rounds every deadline up to the end of its millisecond, which absorbs that lag
//! (a deadline `origin + k·64 ms` maps to tick `k·64` for any lag under 1 ms). Were the origin
//! off, a wait would just cost its two wake-ups as before. Without a marked origin (no feed has
//! started in this process) nothing is moved.
//!
//! The guests' own long waits (`wasi:clocks` subscriptions of a second or more) end on points of
//! a grid of the same slots too, rounded *up* (`runtime::guest_clock`).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The width of a slot of the timer wheel's second level (tokio: 64 × 1 ms).
pub const SLOT: Duration = Duration::from_millis(64);

/// Waits shorter than this keep their exact end.
pub const MIN_WAIT: Duration = Duration::from_secs(1);

static ORIGIN: OnceLock<Instant> = OnceLock::new();

/// Records the grid's origin: call just before building the feed's tokio runtime, once.
pub fn mark_origin() {
    let _ = ORIGIN.set(Instant::now());
}

/// `due` moved to the nearest grid point when it is at least [`MIN_WAIT`] away.
pub fn align(due: tokio::time::Instant) -> tokio::time::Instant {
    match ORIGIN.get() {
        Some(origin) => {
            tokio::time::Instant::from_std(align_to(*origin, due.into_std(), Instant::now()))
        }
        None => due,
    }
}

/// `due` on the grid `origin + k·SLOT` (nearest point), unless it is less than [`MIN_WAIT`]
/// after `now`.
pub(crate) fn align_to(origin: Instant, due: Instant, now: Instant) -> Instant {
    if due < now + MIN_WAIT || due < origin {
        return due;
    }
    let slot = SLOT.as_nanos();
    let since = (due - origin).as_nanos();
    let k = (since + slot / 2) / slot;
    let nanos = u64::try_from(k * slot).unwrap_or(u64::MAX);
    origin + Duration::from_nanos(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_waits_end_on_the_nearest_grid_point() {
        let origin = Instant::now();
        let now = origin + Duration::from_millis(12_345);
        for extra_us in [
            1_000_000u64,
            1_499_999,
            1_500_000,
            1_531_000,
            1_533_000,
            29_999_999,
        ] {
            let due = now + Duration::from_micros(extra_us);
            let aligned = align_to(origin, due, now);
            let since = (aligned - origin).as_nanos();
            assert_eq!(since % SLOT.as_nanos(), 0, "{extra_us} µs: on the grid");
            let moved = if aligned > due {
                aligned - due
            } else {
                due - aligned
            };
            assert!(moved <= SLOT / 2, "{extra_us} µs: moved {moved:?}");
        }
    }

    #[test]
    fn short_and_past_waits_are_left_alone() {
        let origin = Instant::now();
        let now = origin + Duration::from_millis(5_000);
        for due in [
            now,
            now + Duration::from_millis(20),
            now + Duration::from_millis(999),
            // A due time in the past (a poll already due) must stay immediate.
            now - Duration::from_millis(100),
        ] {
            assert_eq!(align_to(origin, due, now), due);
        }
    }
}
