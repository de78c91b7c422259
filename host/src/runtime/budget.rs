//! The compute budget of one section's store: how much of a core its job type may burn.
//!
//! A job type that computes without pause would hold a tokio worker and a core. Epoch
//! interruption makes it yield, but yielding is not stopping: the budget decides when the guest
//! has computed too much, and the section then ends with `JOB_TYPE_UNRESPONSIVE`.
//!
//! What counts as computing is decided by the store's call hook, never by the guest: time
//! executing wasm, plus every host call that returned in under [`WAIT`] (a guest spinning on
//! `is-shutting-down` or on a pollable that is always ready is computing, not waiting). A host
//! call that took longer was a real wait (a `poll` that blocked, a request in flight) and is
//! free. So calling imports cannot reset or hide anything; an earlier design let any import call
//! restart the count, and `loop { is_shutting_down() }` ran forever at 100 % of a core.
//!
//! The budget is `max_busy` of computing within any window of [`WINDOW_FACTOR`] × `max_busy`
//! (5 s per 30 s by default): a single stretch of `max_busy` trips it, and so does a guest that
//! keeps more than a sixth of a core busy.

use std::time::{Duration, Instant};

/// A host call shorter than this is computing, not waiting.
pub const WAIT: Duration = Duration::from_millis(1);

/// The window is this many times `max_busy`.
pub const WINDOW_FACTOR: u32 = 6;

#[derive(Debug)]
pub struct ComputeBudget {
    max_busy: Duration,
    window: Duration,
    window_start: Option<Instant>,
    /// Computing counted in the current window.
    spent: Duration,
    /// When control last entered wasm; `None` while the host has it.
    in_wasm_since: Option<Instant>,
    /// When the guest last called into the host (cleared when the call returns).
    host_call_since: Option<Instant>,
    /// Set once the budget was exceeded; the section ends.
    pub tripped: bool,
}

impl ComputeBudget {
    pub fn new(max_busy: Duration) -> Self {
        ComputeBudget {
            max_busy,
            window: max_busy * WINDOW_FACTOR,
            window_start: None,
            spent: Duration::ZERO,
            in_wasm_since: None,
            host_call_since: None,
            tripped: false,
        }
    }

    fn roll(&mut self, now: Instant) {
        match self.window_start {
            Some(start) if now.duration_since(start) < self.window => {}
            _ => {
                self.window_start = Some(now);
                self.spent = Duration::ZERO;
            }
        }
    }

    fn check(&mut self, now: Instant) -> bool {
        let running = self
            .in_wasm_since
            .map(|t| now.duration_since(t))
            .unwrap_or_default();
        if self.spent + running > self.max_busy {
            self.tripped = true;
        }
        self.tripped
    }

    /// Follow one transition between host and wasm; true when the budget is exhausted.
    pub fn on_call_hook(&mut self, hook: wasmtime::CallHook, now: Instant) -> bool {
        self.roll(now);
        if hook.exiting_host() {
            // Entering wasm: a quick host call that just returned was computing too.
            if let Some(t0) = self.host_call_since.take() {
                let took = now.duration_since(t0);
                if took < WAIT {
                    self.spent += took;
                }
            }
            self.in_wasm_since = Some(now);
        } else {
            if let Some(t) = self.in_wasm_since.take() {
                self.spent += now.duration_since(t);
            }
            if matches!(hook, wasmtime::CallHook::CallingHost) {
                self.host_call_since = Some(now);
            }
        }
        self.check(now)
    }

    /// On every epoch tick while the guest executes wasm; true when the budget is exhausted.
    pub fn on_tick(&mut self, now: Instant) -> bool {
        self.check(now)
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::CallHook::*;

    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_micros(ms * 1000)
    }

    #[test]
    fn one_long_stretch_of_wasm_trips_it() {
        let t = Instant::now();
        let mut b = ComputeBudget::new(Duration::from_millis(100));
        assert!(!b.on_call_hook(CallingWasm, t));
        assert!(!b.on_tick(at(t, 50)));
        assert!(b.on_tick(at(t, 101)));
        assert!(b.tripped);
    }

    #[test]
    fn calling_quick_imports_does_not_reset_the_count() {
        // A guest looping on a cheap import: 0.2 ms in wasm, 0.1 ms in the host, forever.
        let t = Instant::now();
        let mut b = ComputeBudget::new(Duration::from_millis(100));
        b.on_call_hook(CallingWasm, t);
        let mut now_us = 0u64;
        let mut tripped_at = None;
        for _ in 0..2000 {
            now_us += 200;
            let now = t + Duration::from_micros(now_us);
            if b.on_call_hook(CallingHost, now) {
                tripped_at = Some(now_us);
                break;
            }
            now_us += 100;
            if b.on_call_hook(ReturningFromHost, t + Duration::from_micros(now_us)) {
                tripped_at = Some(now_us);
                break;
            }
        }
        let at = tripped_at.expect("a spinning guest trips the budget");
        assert!((100_000..=110_000).contains(&at), "tripped after {at} µs");
    }

    #[test]
    fn waiting_in_the_host_is_free() {
        // 1 ms of work, then a 50 ms wait, over and over: 2 % of a core never trips it.
        let t = Instant::now();
        let mut b = ComputeBudget::new(Duration::from_millis(100));
        b.on_call_hook(CallingWasm, t);
        let mut now = 0;
        for _ in 0..1000 {
            now += 1;
            assert!(!b.on_call_hook(CallingHost, at(t, now)));
            now += 50;
            assert!(!b.on_call_hook(ReturningFromHost, at(t, now)));
        }
    }

    #[test]
    fn the_window_bounds_a_steady_share_of_a_core() {
        // 40 % of a core (2 ms of work per 5 ms) trips a 100 ms / 600 ms budget within a window;
        // 10 % of a core never does.
        for (work, period, trips) in [(2u64, 5u64, true), (1, 10, false)] {
            let t = Instant::now();
            let mut b = ComputeBudget::new(Duration::from_millis(100));
            b.on_call_hook(CallingWasm, t);
            let mut now = 0;
            let mut tripped = false;
            for _ in 0..2000 {
                now += work;
                tripped |= b.on_call_hook(CallingHost, at(t, now));
                now += period - work;
                tripped |= b.on_call_hook(ReturningFromHost, at(t, now));
            }
            assert_eq!(tripped, trips, "{work} ms per {period} ms");
        }
    }
}
