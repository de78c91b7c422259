//! `wasi:clocks/monotonic-clock` for job types: WASI's own, except that a wait of a second or
//! more ends on the guests' wake grid (`wake_grid::align_guest_wait`).
//!
//! Why: every section of the bundled harness sleeps 30 s between keep-alives, and sections that
//! attached a few milliseconds apart each had their own deadline, so a keep-alive round of ten
//! sections woke the main runtime's timer ten times over (two or three times each, as tokio's
//! wheel moves a long deadline down its levels). On an idle VM such a wake-up costs more than the
//! work it serves (docs/benchmarks.md, "Scale and idle cost"). Deadlines that fall in one 64 ms
//! slot now end at the same instant and share the wake-ups. A wait ends at most 64 ms after the
//! time asked for and never before it; waits under a second are exact, and `now` is WASI's.

use std::time::Duration;

use wasmtime::component::{HasData, Resource};
use wasmtime_wasi::clocks::{WasiClocksCtxView, WasiClocksView};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock::{self, Duration as WasiDuration, Instant};

use super::store::SectionHost;
use super::wake_grid;

/// Defines the interface over WASI's own (the linker must allow shadowing).
pub fn add_to_linker(
    linker: &mut wasmtime::component::Linker<SectionHost>,
) -> wasmtime::Result<()> {
    monotonic_clock::add_to_linker::<SectionHost, GuestClocks>(linker, |host| {
        GuestClock(host.clocks())
    })
}

struct GuestClocks;

impl HasData for GuestClocks {
    type Data<'a> = GuestClock<'a>;
}

/// WASI's clock view, with long subscriptions aligned.
struct GuestClock<'a>(WasiClocksCtxView<'a>);

/// A deadline on the grid.
struct GridDeadline(tokio::time::Instant);

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for GridDeadline {
    async fn ready(&mut self) {
        tokio::time::sleep_until(self.0).await;
    }
}

impl GuestClock<'_> {
    /// A pollable ready `wait` from now: WASI's own for a short wait (exact, and a zero wait
    /// yields as WASI's does), otherwise ending on the grid.
    fn subscribe_wait(&mut self, wait: Duration) -> wasmtime::Result<Resource<DynPollable>> {
        match self.grid_deadline(wait)? {
            Some(deadline) => wasmtime_wasi::p2::subscribe(self.0.table, deadline),
            None => monotonic_clock::Host::subscribe_duration(&mut self.0, duration_nanos(wait)),
        }
    }

    /// The grid deadline `wait` from now, for a wait of [`wake_grid::MIN_WAIT`] or more.
    fn grid_deadline(&mut self, wait: Duration) -> wasmtime::Result<Option<Resource<GridDeadline>>> {
        let due = match tokio::time::Instant::now().checked_add(wait) {
            Some(due) if wait >= wake_grid::MIN_WAIT => due,
            _ => return Ok(None),
        };
        let deadline = GridDeadline(wake_grid::align_guest_wait(due));
        Ok(Some(self.0.table.push(deadline)?))
    }
}

fn duration_nanos(wait: Duration) -> WasiDuration {
    u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX)
}

impl monotonic_clock::Host for GuestClock<'_> {
    fn now(&mut self) -> wasmtime::Result<Instant> {
        monotonic_clock::Host::now(&mut self.0)
    }

    fn resolution(&mut self) -> wasmtime::Result<Instant> {
        monotonic_clock::Host::resolution(&mut self.0)
    }

    fn subscribe_instant(&mut self, when: Instant) -> wasmtime::Result<Resource<DynPollable>> {
        let now = monotonic_clock::Host::now(&mut self.0)?;
        self.subscribe_wait(Duration::from_nanos(when.saturating_sub(now)))
    }

    fn subscribe_duration(
        &mut self,
        duration: WasiDuration,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        self.subscribe_wait(Duration::from_nanos(duration))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn long_waits_end_on_the_grid_and_short_ones_are_wasis() {
        let limits = crate::config::JobTypeSettings::default();
        let engine = wasmtime::Engine::default();
        let mut store = crate::runtime::store::scratch_store(&engine, &limits).unwrap();
        let mut clock = GuestClock(store.data_mut().clocks());
        let before = tokio::time::Instant::now();
        let mut ends = Vec::new();
        for wait_ms in [1_000, 1_010, 30_000, 30_050] {
            let wait = Duration::from_millis(wait_ms);
            let deadline = clock.grid_deadline(wait).unwrap().expect("a grid deadline");
            let end = clock.0.table.get(&deadline).unwrap().0;
            assert!(end >= before + wait, "{wait_ms} ms: never before the time asked for");
            assert!(
                end < tokio::time::Instant::now() + wait + wake_grid::SLOT,
                "{wait_ms} ms: at most a slot later"
            );
            ends.push(end);
        }
        // Waits a slot apart or less end on grid points a multiple of the slot apart.
        let apart = (ends[3] - ends[2]).as_nanos();
        assert_eq!(apart % wake_grid::SLOT.as_nanos(), 0, "{apart} ns");
        assert!(clock.grid_deadline(Duration::from_millis(999)).unwrap().is_none());
        assert!(clock.grid_deadline(Duration::ZERO).unwrap().is_none());
        // Short and zero waits still give a pollable (WASI's own).
        monotonic_clock::Host::subscribe_duration(&mut clock, 0).unwrap();
        monotonic_clock::Host::subscribe_duration(&mut clock, 5_000_000).unwrap();
        monotonic_clock::Host::subscribe_duration(&mut clock, u64::MAX).unwrap();
    }
}
