//! `wasi:clocks/monotonic-clock` for job types: WASI's own, except that a wait of a second or
//! more ends on a shared grid of 64 ms points (`wake_grid::SLOT`), with at most
//! [`POINT_CAPACITY`] waits per point.
//!
//! Why: every section of the bundled harness sleeps 30 s between keep-alives, and sections that
//! attached a few milliseconds apart each had their own deadline, so a keep-alive round of ten
//! sections woke the main runtime's timer ten times over (two or three times each, as tokio's
//! wheel moves a long deadline down its levels). On an idle VM such a wake-up costs more than the
//! work it serves (docs/benchmarks.md, "Scale and idle cost"). Waits that end on one point end at
//! the same instant and share the wake-ups.
//!
//! Why a capacity: the sections of one point then send their requests at once, and a burst
//! larger than the main HTTP client's idle connections (`api::POOL_MAX_IDLE`) opens a connection
//! for each request past them and closes it afterwards; a hundred sections on one point would be
//! a hundred requests in the same millisecond. A wait that finds its point full ends on the next
//! point with room, so a hundred sections' keep-alives go in groups of eight, 64 ms apart, as the
//! feed's polls go in groups.
//!
//! A wait ends never before the time asked for and at most [`MAX_LATER_POINTS`] points after the
//! first point at or after it: past that, a full point takes one more wait. A job type holds at
//! most [`GRID_WAITS_PER_SECTION`] waits on the grid at once; its others are WASI's own, exact.
//! So a hostile job type that opens thousands of waits to fill the points moves another
//! section's wait by at most `MAX_LATER_POINTS + 1` points (about a second). Waits under a second
//! are exact, and `now` is WASI's. The grid's origin is the first such wait's `now`, not the main
//! runtime's timer's (which is not known): off the slot starts, a point may cost the timer's two
//! wake-ups, but every wait of the point shares them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant as StdInstant};

use wasmtime::component::{HasData, Resource};
use wasmtime_wasi::clocks::WasiClocksCtxView;
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock::{
    self, Duration as WasiDuration, Instant,
};

use super::store::SectionHost;
use super::wake_grid;

/// Defines the interface over WASI's own (the linker must allow shadowing).
pub fn add_to_linker(
    linker: &mut wasmtime::component::Linker<SectionHost>,
) -> wasmtime::Result<()> {
    monotonic_clock::add_to_linker::<SectionHost, GuestClocks>(linker, |host| GuestClock {
        wasi: WasiClocksCtxView {
            ctx: host.wasi.clocks(),
            table: &mut host.table,
        },
        grid_waits: &host.grid_waits,
    })
}

struct GuestClocks;

impl HasData for GuestClocks {
    type Data<'a> = GuestClock<'a>;
}

/// WASI's clock view, with long subscriptions aligned.
struct GuestClock<'a> {
    wasi: WasiClocksCtxView<'a>,
    /// The section's waits now on the grid.
    grid_waits: &'a Arc<AtomicU32>,
}

/// Waits that may end on one point of the grid.
pub const POINT_CAPACITY: u32 = crate::api::POOL_MAX_IDLE as u32;

/// How many points past its own a wait may be moved to find room.
pub const MAX_LATER_POINTS: u128 = 16;

/// Waits one section may hold on the grid at once.
pub const GRID_WAITS_PER_SECTION: u32 = 16;

/// The grid's points that have waits, with how many: one per process.
static POINTS: Mutex<Option<Points>> = Mutex::new(None);

/// Points of the grid `origin + k·SLOT` and the waits ending on each.
struct Points {
    origin: StdInstant,
    taken: BTreeMap<u128, u32>,
}

impl Points {
    /// A grid from `origin` with no waits yet.
    fn new(origin: StdInstant) -> Points {
        Points {
            origin,
            taken: BTreeMap::new(),
        }
    }

    /// The first point at or after `due` with fewer than `capacity` waits, or else the
    /// [`MAX_LATER_POINTS`]-th after that first one, taken: its index and instant.
    fn reserve(&mut self, due: StdInstant, capacity: u32) -> (u128, StdInstant) {
        let slot = wake_grid::SLOT.as_nanos();
        let since = due.saturating_duration_since(self.origin).as_nanos();
        let first = since.div_ceil(slot);
        let k = (first..first + MAX_LATER_POINTS)
            .find(|k| self.taken.get(k).is_none_or(|count| *count < capacity))
            .unwrap_or(first + MAX_LATER_POINTS);
        *self.taken.entry(k).or_insert(0) += 1;
        let at = u64::try_from(k * slot).unwrap_or(u64::MAX);
        (k, self.origin + Duration::from_nanos(at))
    }

    /// A wait of point `k` ended or was dropped.
    fn release(&mut self, k: u128) {
        if let Some(count) = self.taken.get_mut(&k) {
            *count -= 1;
            if *count == 0 {
                self.taken.remove(&k);
            }
        }
    }
}

/// A deadline on a point of the grid; gives its place back when dropped.
struct GridDeadline {
    at: tokio::time::Instant,
    point: u128,
    /// The section's count of grid waits, which this one is part of.
    section_waits: Arc<AtomicU32>,
}

impl GridDeadline {
    fn new(due: tokio::time::Instant, section_waits: Arc<AtomicU32>) -> GridDeadline {
        let mut points = POINTS.lock().unwrap_or_else(|e| e.into_inner());
        let points = points.get_or_insert_with(|| Points::new(StdInstant::now()));
        let (point, at) = points.reserve(due.into_std(), POINT_CAPACITY);
        GridDeadline {
            at: tokio::time::Instant::from_std(at),
            point,
            section_waits,
        }
    }
}

impl Drop for GridDeadline {
    fn drop(&mut self) {
        self.section_waits.fetch_sub(1, Ordering::Relaxed);
        let mut points = POINTS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(points) = points.as_mut() {
            points.release(self.point);
        }
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for GridDeadline {
    async fn ready(&mut self) {
        tokio::time::sleep_until(self.at).await;
    }
}

impl GuestClock<'_> {
    /// A pollable ready `wait` from now: WASI's own for a short wait (exact, and a zero wait
    /// yields as WASI's does), otherwise ending on the grid.
    fn subscribe_wait(&mut self, wait: Duration) -> wasmtime::Result<Resource<DynPollable>> {
        match self.grid_deadline(wait)? {
            Some(deadline) => wasmtime_wasi::p2::subscribe(self.wasi.table, deadline),
            None => monotonic_clock::Host::subscribe_duration(&mut self.wasi, duration_nanos(wait)),
        }
    }

    /// The grid deadline `wait` from now, for a wait of [`wake_grid::MIN_WAIT`] or more while
    /// the section holds fewer than [`GRID_WAITS_PER_SECTION`].
    fn grid_deadline(
        &mut self,
        wait: Duration,
    ) -> wasmtime::Result<Option<Resource<GridDeadline>>> {
        let due = match tokio::time::Instant::now().checked_add(wait) {
            Some(due) if wait >= wake_grid::MIN_WAIT => due,
            _ => return Ok(None),
        };
        let counted = self
            .grid_waits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < GRID_WAITS_PER_SECTION).then_some(n + 1)
            });
        if counted.is_err() {
            return Ok(None);
        }
        let deadline = GridDeadline::new(due, Arc::clone(self.grid_waits));
        Ok(Some(self.wasi.table.push(deadline)?))
    }
}

fn duration_nanos(wait: Duration) -> WasiDuration {
    u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX)
}

impl monotonic_clock::Host for GuestClock<'_> {
    fn now(&mut self) -> wasmtime::Result<Instant> {
        monotonic_clock::Host::now(&mut self.wasi)
    }

    fn resolution(&mut self) -> wasmtime::Result<Instant> {
        monotonic_clock::Host::resolution(&mut self.wasi)
    }

    fn subscribe_instant(&mut self, when: Instant) -> wasmtime::Result<Resource<DynPollable>> {
        let now = monotonic_clock::Host::now(&mut self.wasi)?;
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

    #[test]
    fn a_point_takes_its_capacity_and_the_rest_go_to_the_next_points() {
        let origin = StdInstant::now();
        let mut points = Points::new(origin);
        let slot = wake_grid::SLOT;
        let due = origin + slot * 500 + Duration::from_millis(3);
        let placed: Vec<(u128, StdInstant)> = (0..10).map(|_| points.reserve(due, 4)).collect();
        let at = |k: u128| origin + slot * u32::try_from(k).unwrap();
        // Never before the time asked for; the first point after it takes four, then the next.
        assert!(placed.iter().all(|(k, t)| *t == at(*k) && *t >= due));
        let ks: Vec<u128> = placed.iter().map(|(k, _)| *k).collect();
        assert_eq!(ks, [501, 501, 501, 501, 502, 502, 502, 502, 503, 503]);
        // A wait given back frees its place for the next one.
        points.release(501);
        assert_eq!(points.reserve(due, 4).0, 501);
        for k in [501, 501, 501, 501, 502, 502, 502, 502, 503, 503] {
            points.release(k);
        }
        assert!(points.taken.is_empty(), "{:?}", points.taken);
        // A due time on a point stays there.
        assert_eq!(points.reserve(at(600), 4), (600, at(600)));
    }

    #[test]
    fn waits_piled_on_one_point_move_others_by_a_bounded_amount() {
        let origin = StdInstant::now();
        let mut points = Points::new(origin);
        let due = origin + wake_grid::SLOT * 100;
        // A hostile job type's thousand waits on one due time...
        for _ in 0..1000 {
            points.reserve(due, POINT_CAPACITY);
        }
        // ...fill the points within reach and pile up on the last of them, no further.
        let last = 100 + MAX_LATER_POINTS;
        assert_eq!(points.taken.keys().max(), Some(&last));
        // Another section's wait then ends at most that far from its own point.
        let (k, at) = points.reserve(due + Duration::from_millis(1), POINT_CAPACITY);
        assert_eq!(k, 101 + MAX_LATER_POINTS);
        assert!(at - due <= wake_grid::SLOT * (1 + MAX_LATER_POINTS as u32));
    }

    #[tokio::test]
    async fn long_waits_end_on_the_grid_and_short_ones_are_wasis() {
        let limits = crate::config::JobTypeSettings::default();
        let engine = wasmtime::Engine::default();
        let mut store = crate::runtime::store::scratch_store(&engine, &limits).unwrap();
        let host = store.data_mut();
        let mut clock = GuestClock {
            wasi: WasiClocksCtxView {
                ctx: host.wasi.clocks(),
                table: &mut host.table,
            },
            grid_waits: &host.grid_waits,
        };
        let before = tokio::time::Instant::now();
        for wait_ms in [1_000, 1_010, 30_000, 30_050] {
            let wait = Duration::from_millis(wait_ms);
            let deadline = clock.grid_deadline(wait).unwrap().expect("a grid deadline");
            let end = clock.wasi.table.get(&deadline).unwrap().at;
            assert!(
                end >= before + wait,
                "{wait_ms} ms: never before the time asked for"
            );
            // Other tests' waits may share the process's grid, but not fill a point.
            assert!(
                end < tokio::time::Instant::now() + wait + wake_grid::SLOT,
                "{wait_ms} ms: at most a slot later"
            );
            clock.wasi.table.delete(deadline).unwrap();
        }
        assert_eq!(
            clock.grid_waits.load(Ordering::Relaxed),
            0,
            "dropped waits are given back"
        );
        assert!(
            clock
                .grid_deadline(Duration::from_millis(999))
                .unwrap()
                .is_none()
        );
        assert!(clock.grid_deadline(Duration::ZERO).unwrap().is_none());
        // A section holds a bounded number of grid waits; past it, its waits are WASI's own, and
        // a dropped one gives its place back.
        let mut held = Vec::new();
        while let Some(d) = clock.grid_deadline(Duration::from_secs(5)).unwrap() {
            held.push(d);
            assert!(held.len() <= GRID_WAITS_PER_SECTION as usize);
        }
        assert_eq!(held.len() as u32, GRID_WAITS_PER_SECTION);
        monotonic_clock::Host::subscribe_duration(&mut clock, 5_000_000_000).unwrap();
        clock.wasi.table.delete(held.pop().unwrap()).unwrap();
        assert!(
            clock
                .grid_deadline(Duration::from_secs(5))
                .unwrap()
                .is_some()
        );
        // Short and zero waits still give a pollable (WASI's own).
        monotonic_clock::Host::subscribe_duration(&mut clock, 0).unwrap();
        monotonic_clock::Host::subscribe_duration(&mut clock, 5_000_000).unwrap();
        monotonic_clock::Host::subscribe_duration(&mut clock, u64::MAX).unwrap();
    }
}
