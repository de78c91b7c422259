//! `blobhub:worker/feed`: the section's event feed, polled by the host.
//!
//! Cursor: the platform's `created_since` is exclusive and `created_at` need not be unique, so the
//! poller asks from the newest `created_at` *before* the last one it delivered (`since`) and
//! drops events whose `id` it has already delivered after `since` (`seen`). Both travel in the
//! opaque cursor string the guest persists, so a restart neither skips nor repeats events.
//!
//! Cadence: `interval_active` between polls while the guest says its section is active
//! (`set-active`), `interval_idle` otherwise; a switch to idle shortens the wait already under
//! way ([`next_poll_at`]). Failures back off whatever the activity. The first wait after a
//! section's first request sets the section's phase in the interval ([`next_phase`]: groups of
//! [`POLL_GROUP`] sections share one, and the groups spread evenly over the interval), and every
//! later wait keeps it ([`schedule_from`]), so that sections started together neither poll in
//! one burst nor drift together on the wait grid.
//!
//! Bounded work: a poll reads at most [`MAX_PAGES`] pages of [`PAGE_SIZE`] events and hands each
//! page to the guest as its own batch; the next page is read only once the guest has taken the
//! previous batch, so a session with 10,000 new events is never held in memory whole.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use wasmtime::component::Resource;
use wasmtime_wasi::p2::DynPollable;

use super::SectionContext;
use crate::runtime::pending::Inbox;
use crate::runtime::settings::Polling;
use crate::runtime::store::SectionHost;
use crate::runtime::transport::{Channel, PreparedQuery};
use crate::runtime::wit::latest::feed::{self as wit, Batch};
use crate::runtime::wit::latest::session::ApiError;

/// Pages drained per poll at most (a runaway guard; the rest comes next poll).
const MAX_PAGES: usize = 20;

/// Events asked for per page (the platform's `limit`).
const PAGE_SIZE: u64 = 1000;

type Item = Result<Batch, ApiError>;

/// The guest's handle: batches arrive through a channel from the poller task.
pub struct SubscriptionHandle {
    inbox: Inbox<Item>,
    /// The guest's activity flag, read by the poller.
    active: watch::Sender<bool>,
    /// How many batches the guest has taken: the poller reads the next page only after this
    /// reaches the number it sent (backpressure, see the module comment).
    taken: watch::Sender<u64>,
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for SubscriptionHandle {
    async fn ready(&mut self) {
        // When the poller ended (shutdown), nothing will ever arrive.
        self.inbox.ready().await
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Cursor {
    /// Exclusive lower bound sent as `created_since` ("" = from the start).
    since: String,
    /// Ids of delivered events with `created_at > since`, with their `created_at`.
    seen: BTreeMap<String, String>,
    /// The newest delivered `created_at`.
    last: String,
}

impl Cursor {
    fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    fn decode(text: &str) -> Option<Cursor> {
        serde_json::from_str(text).ok()
    }

    /// Record delivered `events` (ascending). Keeps `seen` to the events after the new `since`.
    fn advance(&mut self, events: &[Value]) {
        for event in events {
            let at = event["created_at"].as_str().unwrap_or_default().to_owned();
            if at > self.last {
                // The old `last` group is now strictly older than the newest: it becomes `since`
                // only once a newer group exists, so the newest group is always re-read.
                if !self.last.is_empty() {
                    self.since = self.last.clone();
                }
                self.last = at.clone();
            }
            if let Some(id) = event_id(event) {
                self.seen.insert(id, at);
            }
        }
        let since = self.since.clone();
        self.seen.retain(|_, at| *at > since);
    }
}

/// An event's identity: its `id`, or its serialization when the platform sends none.
fn event_id(event: &Value) -> Option<String> {
    match event.get("id").and_then(Value::as_str) {
        Some(id) => Some(id.to_owned()),
        None => Some(event.to_string()),
    }
}

impl wit::Host for SectionHost {
    fn follow(&mut self, cursor: Option<String>) -> wasmtime::Result<Resource<SubscriptionHandle>> {
        if let Some(old) = self.feed_task.take() {
            old.abort();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let (active, active_rx) = watch::channel(false);
        let (taken, taken_rx) = watch::channel(0);
        let start = cursor.as_deref().and_then(Cursor::decode);
        let outbox = Outbox {
            tx,
            taken: taken_rx,
            sent: 0,
        };
        let task = crate::runtime::feed_thread::handle().spawn(poll_loop(
            Arc::clone(&self.section),
            start,
            outbox,
            active_rx,
        ));
        self.feed_task = Some(task.abort_handle());
        Ok(self.table.push(SubscriptionHandle {
            inbox: Inbox::new(rx),
            active,
            taken,
        })?)
    }
}

impl wit::HostSubscription for SectionHost {
    fn subscribe(
        &mut self,
        sub: Resource<SubscriptionHandle>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        wasmtime_wasi::p2::subscribe(&mut self.table, sub)
    }

    fn next(&mut self, sub: Resource<SubscriptionHandle>) -> wasmtime::Result<Option<Item>> {
        let handle = self.table.get_mut(&sub)?;
        let item = handle.inbox.take();
        if item.is_some() {
            handle.taken.send_modify(|n| *n += 1);
        }
        Ok(item)
    }

    fn set_active(
        &mut self,
        sub: Resource<SubscriptionHandle>,
        active: bool,
    ) -> wasmtime::Result<()> {
        let handle = self.table.get_mut(&sub)?;
        // `send_if_modified`: a repeated value does not wake the poller.
        handle.active.send_if_modified(|current| {
            let changed = *current != active;
            *current = active;
            changed
        });
        Ok(())
    }

    fn drop(&mut self, sub: Resource<SubscriptionHandle>) -> wasmtime::Result<()> {
        self.table.delete(sub)?;
        Ok(())
    }
}

async fn list(section: &SectionContext, args: Map<String, Value>) -> Result<Value, ApiError> {
    super::session::call(
        section.shared.feed_transport.as_ref(),
        &section.session,
        Channel::Query,
        "list_session_events",
        args,
    )
    .await
}

/// The newest event now, so that following starts after it (history is not replayed).
async fn initial_cursor(section: &SectionContext) -> Result<Cursor, ApiError> {
    let mut args = Map::new();
    args.insert("ascending".into(), json!(false));
    args.insert("limit".into(), json!(1));
    let answer = list(section, args).await?;
    let mut cursor = Cursor::default();
    if let Some(newest) = answer["session_events"].as_array().and_then(|a| a.first()) {
        let at = newest["created_at"].as_str().unwrap_or_default();
        cursor.since = at.to_owned();
        cursor.last = at.to_owned();
    }
    Ok(cursor)
}

/// The poller's end of the subscription: batches go out one at a time.
struct Outbox {
    tx: mpsc::UnboundedSender<Item>,
    taken: watch::Receiver<u64>,
    sent: u64,
}

impl Outbox {
    /// Hands `item` to the guest and waits until it has taken it. False when the subscription
    /// is gone.
    async fn deliver(&mut self, item: Item) -> bool {
        if self.tx.send(item).is_err() {
            return false;
        }
        self.sent += 1;
        let sent = self.sent;
        self.taken.wait_for(|n| *n >= sent).await.is_ok()
    }
}

/// The first page's query of a poll, prepared once
/// ([`crate::runtime::transport::SessionTransport::prepare_query`]) and sent poll after poll
/// while the cursor's `since` stays: an idle poll builds no request.
struct FirstPage {
    since: String,
    query: PreparedQuery,
}

/// The query for a page after `since` (`""`: from the start), `page` its page cursor.
async fn page_query(
    section: &SectionContext,
    since: &str,
    page: Option<&str>,
) -> Result<PreparedQuery, ApiError> {
    let mut args = Map::new();
    args.insert("ascending".into(), json!(true));
    args.insert("limit".into(), json!(PAGE_SIZE));
    if !since.is_empty() {
        args.insert("created_since".into(), json!(since));
    }
    if let Some(c) = page {
        args.insert("cursor".into(), json!(c));
    }
    super::session::prepare_query(
        section.shared.feed_transport.as_ref(),
        &section.session,
        "list_session_events",
        args,
    )
    .await
}

/// One poll: every new event after `cursor`, oldest first, page by page; each page with new
/// events is delivered as its own batch and advances `cursor`. `Ok(false)` when the
/// subscription is gone. `first` keeps the first page's query from poll to poll.
async fn poll_once(
    section: &SectionContext,
    cursor: &mut Cursor,
    first: &mut Option<FirstPage>,
    out: &mut Outbox,
) -> Result<bool, ApiError> {
    let transport = section.shared.feed_transport.as_ref();
    let mut page_cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let page = match &page_cursor {
            None => {
                if first.as_ref().is_none_or(|f| f.since != cursor.since) {
                    let query = page_query(section, &cursor.since, None).await?;
                    let since = cursor.since.clone();
                    *first = Some(FirstPage { since, query });
                }
                let query = &first.as_ref().expect("prepared above").query;
                transport.list_events(query).await?
            }
            Some(c) => {
                let query = page_query(section, &cursor.since, Some(c)).await?;
                transport.list_events(&query).await?
            }
        };
        let empty = page.events.is_empty();
        let mut ids = HashSet::with_capacity(page.events.len());
        let fresh: Vec<Value> = page
            .events
            .into_iter()
            .filter(|event| {
                event_id(event).is_some_and(|id| !cursor.seen.contains_key(&id) && ids.insert(id))
            })
            .collect();
        page_cursor = page.cursor;
        if !fresh.is_empty() {
            cursor.advance(&fresh);
            let batch = Batch {
                events: fresh.iter().map(Value::to_string).collect(),
                cursor: cursor.encode(),
            };
            drop(fresh);
            if !out.deliver(Ok(batch)).await {
                return Ok(false);
            }
        }
        if empty || page_cursor.is_none() {
            break;
        }
    }
    Ok(true)
}

/// Failures a guest must decide on; everything else is retried here with backoff.
fn needs_decision(e: &ApiError) -> bool {
    matches!(
        e,
        ApiError::AuthInvalid | ApiError::CommandFailed(_) | ApiError::Refused(_)
    )
}

fn backoff(failures: u32, section: &SectionContext) -> Duration {
    backoff_delay(failures, &section.shared.settings.polling, fastrand::f64())
}

/// The wait after the `failures`-th failure in a row; `unit` in `[0, 1)` picks the jitter
/// (±20 %, so that many sections do not retry in lockstep).
fn backoff_delay(failures: u32, polling: &Polling, unit: f64) -> Duration {
    let base = polling.interval_active.max(Duration::from_millis(100));
    let exp = base.saturating_mul(1u32 << failures.min(16));
    let capped = exp.min(polling.backoff_max);
    capped.mul_f64(0.8 + unit * 0.4)
}

/// When the poll after the one that ended at `last` is due: `backoff` after a failure,
/// otherwise the interval of the current activity. Re-evaluated whenever the activity changes,
/// so a switch to idle shortens the wait at once (a due time in the past means now).
fn next_poll_at(
    last: Instant,
    active: bool,
    polling: &Polling,
    backoff: Option<Duration>,
) -> Instant {
    let wait = match backoff {
        Some(delay) => delay,
        None if active => polling.interval_active,
        None => polling.interval_idle,
    };
    last + wait
}

/// Where the wait after a poll counts from. A poll that was due at `due` and ended at `now`
/// within half an interval of it counts from `due`: the section keeps the phase it drew at
/// its start for the life of the process, whatever each answer's latency, and the grid
/// (`wake_grid`), which rounds the due time and not the schedule, never accumulates. Counting
/// from each poll's end instead lets a few milliseconds of latency decide whether the next
/// poll rounds to one grid point or the next, so sections drift along the grid and gather
/// on shared points (measured: 4 of 10 sections polling in the same 50 ms). A poll that ended
/// later (a slow server, a long page run, an overdue poll after a switch to idle) and the
/// wait after a failure count from `now`, so polls never come back to back.
fn schedule_from(due: Option<Instant>, now: Instant, polling: &Polling) -> Instant {
    let half = polling.interval_idle.min(polling.interval_active) / 2;
    match due {
        Some(due) if now <= due + half => due,
        _ => now,
    }
}

/// Wait until the next poll is due, following changes of the activity flag. The due time
/// waited for (before the grid moved it), or `None` when the subscription is gone.
async fn wait_next_poll(
    last: Instant,
    polling: &Polling,
    backoff: Option<Duration>,
    active: &mut watch::Receiver<bool>,
) -> Option<Instant> {
    loop {
        let due = next_poll_at(last, *active.borrow_and_update(), polling, backoff);
        // One wake-up per idle wait (see `wake_grid`).
        let woken = crate::runtime::wake_grid::align(due);
        tokio::select! {
            () = crate::shared_timer::sleep_until(woken) => return Some(due),
            changed = active.changed() => {
                if changed.is_err() {
                    return None;
                }
            }
        }
    }
}

async fn poll_loop(
    section: Arc<SectionContext>,
    start: Option<Cursor>,
    mut out: Outbox,
    mut active: watch::Receiver<bool>,
) {
    let polling = section.shared.settings.polling.clone();
    let mut failures = 0u32;
    let mut cursor = start;
    let mut first = None;
    // When the poll under way was due (see `schedule_from`); `None` until the first wait.
    let mut due: Option<Instant> = None;
    loop {
        let result = match cursor.take() {
            // The first request: where the feed starts (history is not replayed).
            None => initial_cursor(&section).await.map(|c| {
                cursor = Some(c);
                true
            }),
            Some(mut current) => {
                let result = poll_once(&section, &mut current, &mut first, &mut out).await;
                cursor = Some(current);
                result
            }
        };
        let backoff_wait = match result {
            Ok(true) => {
                failures = 0;
                None
            }
            Ok(false) => return,
            Err(e) => {
                failures += 1;
                if needs_decision(&e) && !out.deliver(Err(e)).await {
                    return;
                }
                Some(backoff(failures, &section))
            }
        };
        if out.tx.is_closed() {
            return;
        }
        let now = Instant::now();
        let last = match backoff_wait {
            None => schedule_from(due, now, &polling),
            Some(_) => now,
        };
        let wait = match backoff_wait {
            None if due.is_none() => Some(first_wait(&polling, next_phase())),
            other => other,
        };
        due = wait_next_poll(last, &polling, wait, &mut active).await;
        if due.is_none() {
            return;
        }
    }
}

/// The wait after a section's first request: `unit` (in `[0, 1)`) of `interval_idle`, so that
/// sections started together do not poll in lockstep for the rest of the process's life.
fn first_wait(polling: &Polling, unit: f64) -> Duration {
    polling.interval_idle.mul_f64(unit)
}

/// Sections whose polls share a phase, and so a wake-up of the process. On an idle machine the
/// wake-up after a long sleep is dear (docs/benchmarks.md, part `idle`: ten sections in ten
/// wake-ups cost our worker 618–693 µs of CPU per idle poll, in one wake-up 343–384 µs, and a
/// minimal blocking client 109 against 27 µs), so sections poll in groups; a group stays small
/// enough that the platform sees a handful of requests at a time, and as large as the feed's
/// idle connections, so a group's polls reuse them. Groups of 16 rather than 8 put ten sections
/// in one group instead of two: 106–140 against 190–277 µs of CPU per idle request in paired
/// runs (docs/benchmarks.md, "session 10").
pub const POLL_GROUP: u64 = crate::api::FEED_POOL_MAX_IDLE as u64;

/// The next section's phase, as a fraction of the interval: sections are numbered as they start,
/// and each group of [`POLL_GROUP`] takes the next term of the golden-ratio sequence from a
/// random start drawn once per process. However many sections start, the groups' phases are
/// spread evenly over the interval (n phases leave gaps of about 0.4/n to 1.6/n of it between
/// neighbours, by the three-gap theorem), where an independent draw per section lets several
/// fall within a few milliseconds of each other by chance (measured at 100 sections: 12 event
/// polls within one 50 ms, against an even share of 3.3).
fn next_phase() -> f64 {
    static START: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let start = *START.get_or_init(fastrand::f64);
    section_phase(
        start,
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    )
}

/// The phase of the `k`-th section to start (counting from 0).
fn section_phase(start: f64, k: u64) -> f64 {
    phase(start, k / POLL_GROUP)
}

/// The `k`-th phase of the sequence that begins at `start`.
fn phase(start: f64, k: u64) -> f64 {
    /// 1/φ: consecutive multiples modulo 1 are as evenly spread as any sequence can be.
    const GOLDEN: f64 = 0.618_033_988_749_894_9;
    (start + k as f64 * GOLDEN).fract()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str, at: &str) -> Value {
        json!({"id": id, "created_at": at, "type": "x"})
    }

    fn polling() -> Polling {
        Polling {
            interval_idle: Duration::from_millis(1500),
            interval_active: Duration::from_millis(3000),
            backoff_max: Duration::from_millis(30000),
        }
    }

    #[test]
    fn next_poll_follows_the_activity() {
        let p = polling();
        let last = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(next_poll_at(last, false, &p, None), last + ms(1500));
        assert_eq!(next_poll_at(last, true, &p, None), last + ms(3000));
        // Active → idle re-evaluates against the same last poll: due earlier, and already due
        // (in the past) once `interval_idle` has gone by.
        let later = last + ms(2000);
        assert!(next_poll_at(last, false, &p, None) <= later);
        assert!(next_poll_at(last, true, &p, None) > later);
        // A failure's backoff wins whatever the activity.
        assert_eq!(
            next_poll_at(last, false, &p, Some(ms(7000))),
            last + ms(7000)
        );
        assert_eq!(
            next_poll_at(last, true, &p, Some(ms(7000))),
            last + ms(7000)
        );
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = polling();
        let ms = Duration::from_millis;
        // unit 0.5 = no jitter.
        assert_eq!(backoff_delay(1, &p, 0.5), ms(6000));
        assert_eq!(backoff_delay(2, &p, 0.5), ms(12000));
        assert_eq!(backoff_delay(5, &p, 0.5), ms(30000));
        assert_eq!(backoff_delay(40, &p, 0.5), ms(30000));
        assert_eq!(backoff_delay(1, &p, 0.0), ms(4800));
        assert!(backoff_delay(1, &p, 0.999) < ms(7200));
    }

    #[test]
    fn a_poll_that_ends_in_time_keeps_the_schedule() {
        let p = polling();
        let ms = Duration::from_millis;
        let due = Instant::now();
        // The first poll has no schedule yet.
        assert_eq!(schedule_from(None, due + ms(3), &p), due + ms(3));
        // Answered within half an interval (750 ms): the next wait counts from the due time,
        // also when the grid woke the poll up to 32 ms early.
        for now in [due - ms(32), due, due + ms(3), due + ms(300), due + ms(750)] {
            assert_eq!(schedule_from(Some(due), now, &p), due);
        }
        // Later than that: from the end, so the next poll is still a whole wait away.
        assert_eq!(schedule_from(Some(due), due + ms(751), &p), due + ms(751));
    }

    /// The most of `phases` (fractions of the interval) within one grid slot's span of the
    /// interval, round its circle.
    fn most_within_a_slot(phases: &[f64], interval: Duration) -> usize {
        let slot = crate::runtime::wake_grid::SLOT.as_secs_f64() / interval.as_secs_f64();
        phases
            .iter()
            .map(|a| {
                phases
                    .iter()
                    .filter(|b| (**b - *a + 1.0).fract() < slot)
                    .count()
            })
            .max()
            .unwrap()
    }

    #[test]
    fn groups_phases_spread_evenly_whatever_the_count() {
        let p = polling();
        for start in [0.0, 0.37, 0.999] {
            for (groups, most) in [(10, 1), (23, 2), (100, 6), (200, 11)] {
                let phases: Vec<f64> = (0..groups).map(|k| phase(start, k)).collect();
                assert!(phases.iter().all(|u| (0.0..1.0).contains(u)));
                // An even share of a 64 ms span of 1.5 s is groups / 23.4.
                let found = most_within_a_slot(&phases, p.interval_idle);
                assert!(found <= most, "{groups} groups: {found} in one slot's span");
            }
        }
    }

    #[test]
    fn sections_share_their_groups_phase() {
        let start = 0.25;
        let phases: Vec<f64> = (0..3 * POLL_GROUP)
            .map(|k| section_phase(start, k))
            .collect();
        for (k, u) in phases.iter().enumerate() {
            let group = k as u64 / POLL_GROUP;
            assert_eq!(*u, phase(start, group), "section {k}");
        }
        assert_ne!(phases[0], phases[POLL_GROUP as usize]);
    }

    /// Two and a half groups of sections started together, each poll answered after 0–20 ms,
    /// woken on the grid: over 400 polls each, each group of [`POLL_GROUP`] sections polls in
    /// one wake-up and alone on its grid point (on a schedule counted from each poll's end they
    /// drift along the grid and gather).
    #[test]
    fn groups_keep_their_phase_on_the_grid() {
        use crate::runtime::wake_grid::align_to;
        use std::collections::HashMap;
        let p = polling();
        let ms = Duration::from_millis;
        let origin = std::time::Instant::now();
        let start = Instant::from_std(origin) + ms(10_000);
        let mut rng = fastrand::Rng::with_seed(14);
        let first = rng.f64();
        // Two full groups and half of a third.
        let sections = (2 * POLL_GROUP + POLL_GROUP / 2) as usize;
        let mut dues: Vec<Instant> = (0..sections as u64)
            .map(|k| start + first_wait(&p, section_phase(first, k)))
            .collect();
        let woken = |due: Instant| {
            Instant::from_std(align_to(
                origin,
                due.into_std(),
                (due - ms(1500)).into_std(),
            ))
        };
        for _ in 0..400 {
            let mut at: HashMap<Instant, Vec<usize>> = HashMap::new();
            for (k, due) in dues.iter().enumerate() {
                at.entry(woken(*due)).or_default().push(k);
            }
            let mut groups: Vec<Vec<usize>> = at.into_values().collect();
            groups.sort();
            let g = POLL_GROUP as usize;
            assert_eq!(
                groups,
                [
                    (0..g).collect::<Vec<_>>(),
                    (g..2 * g).collect(),
                    (2 * g..sections).collect()
                ]
            );
            for due in dues.iter_mut() {
                let now = woken(*due) + ms(rng.u64(0..20));
                let last = schedule_from(Some(*due), now, &p);
                *due = next_poll_at(last, false, &p, None);
            }
        }
    }

    #[test]
    fn the_first_wait_is_spread_over_the_idle_interval() {
        let p = polling();
        assert_eq!(first_wait(&p, 0.0), Duration::ZERO);
        assert_eq!(first_wait(&p, 0.5), Duration::from_millis(750));
        assert!(first_wait(&p, 0.999) < p.interval_idle);
    }

    #[test]
    fn cursor_rereads_the_newest_group_and_dedups() {
        let mut c = Cursor::default();
        c.advance(&[ev("a", "1"), ev("b", "2")]);
        assert_eq!(c.since, "1");
        assert_eq!(c.last, "2");
        assert!(c.seen.contains_key("b"));
        assert!(!c.seen.contains_key("a"));
        c.advance(&[ev("c", "2")]);
        assert_eq!(c.since, "1", "same created_at: keep re-reading that group");
        c.advance(&[ev("d", "3")]);
        assert_eq!(c.since, "2");
        let round = Cursor::decode(&c.encode()).unwrap();
        assert_eq!(round, c);
    }
}
