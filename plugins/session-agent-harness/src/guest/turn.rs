//! A thread's task: take a slot, go (or come back) active, then the turn loop — one turn at a
//! time, the person's queued messages joined into one turn, the agent's lines posted in order.

use std::rc::Rc;
use std::time::{Duration, Instant};

use blobhub_worker_sdk::serde_json::json;
use blobhub_worker_sdk::{self as sdk, Either, log::Level, slots, worker};

use super::attempt::{self, TurnState};
use super::ctx::log;
use super::thread::{Fetched, LATE_VISIBILITY, Mode, Thread, TurnRunning};
use super::warm::{self, Warm};
use crate::agent::{Outcome, Status, Usage};
use crate::cursor::ItemCursor;
use crate::items;
use crate::prompt;
use crate::settings::{Failure, Settings};

/// How long an idle thread waits before looking at its items again without a nudge (a safety
/// net for a missed event; events normally wake it at once).
const IDLE_RECHECK: Duration = Duration::from_secs(60);
/// Look again this often while something is pending that no event may announce: a person's
/// answer awaits its resolve post (which failed), or the items could not be fetched (the host
/// already retried; without this a message would wait for the next event, as in the reference).
const SHORT_RECHECK: Duration = Duration::from_secs(5);

/// Look again this soon after the host refused to queue the fetch (the section's request queue
/// was full): the refused request never ran, and the queue drains within moments.
const THROTTLED_RECHECK: Duration = Duration::from_millis(250);

pub async fn run(t: Rc<Thread>, mode: Mode) {
    let Some(settings) = t.settings() else {
        return;
    };
    // A slot per active thread, from the worker-wide pool; the envelope stays `pending` while
    // the thread waits, and the dashboard says so.
    let mut slot = match slots::try_acquire() {
        Some(s) => Some(s),
        None => Some(wait_for_slot(&t).await),
    };
    match mode {
        Mode::Activate => {
            // Local state first: a crash after the envelope write then recovers this thread.
            if let Err(e) = t.set_active_locally(true) {
                t.fail(Failure::new(
                    "THREAD_POST_FAILED",
                    format!("local state could not be written: {e}"),
                ))
                .await;
                return;
            }
            if !t.write_state("active").await {
                t.fail(Failure::new(
                    "THREAD_POST_FAILED",
                    "the envelope could not be set to active",
                ))
                .await;
                return;
            }
            t.set_wire_active();
            let sid = t.agent_session_id();
            t.ctx.activity(items::thread_active(&t.alias, &sid)).await;
            log(
                Level::Info,
                "thread_active",
                Some(&t.alias),
                json!({"agent_session_id": sid}),
            );
        }
        Mode::Recover => {
            t.set_wire_active();
            if !t.recover_from_items().await {
                return;
            }
            let _ = t.set_active_locally(false);
            let sid = t.agent_session_id();
            t.ctx
                .activity(items::thread_recovered(&t.alias, &sid))
                .await;
            log(
                Level::Info,
                "thread_recovered",
                Some(&t.alias),
                json!({"agent_session_id": sid}),
            );
        }
    }
    if mode == Mode::Activate && t.has_turn_in_flight() {
        if !t.recover_from_items().await {
            return;
        }
        // A question left open by the interrupted run belongs to that run.
        t.cancel_prompt("thread_restart").await;
    }
    t.fetch_from_consumed();
    // The next turn's agent process, started ahead while the thread waits for a message (it
    // exists only while the thread holds its slot; see warm.rs).
    let mut warm: Option<Warm> = None;
    if slot.is_some() {
        warm = Warm::start(
            &t,
            &settings,
            &t.agent_session_id(),
            t.usage_total().as_ref(),
        );
    }
    // When to look once more after activity: an item posted just before another may only
    // become visible after it (eventually consistent listings), and no event announces that.
    let mut late_check: Option<Instant> = Some(Instant::now() + LATE_VISIBILITY);
    loop {
        let seen = t.nudge_generation();
        let fetched = t.try_ingest().await;
        t.resolve_adopted_prompt().await;
        let Some((messages, boundary, ids)) = t.take_turn_input() else {
            t.row(if t.has_prompt() {
                "active (prompt)"
            } else {
                "active (idle)"
            });
            let mut recheck = match fetched {
                Fetched::Throttled => THROTTLED_RECHECK,
                Fetched::Failed => SHORT_RECHECK,
                Fetched::Yes if t.answer_waiting() => SHORT_RECHECK,
                Fetched::Yes => IDLE_RECHECK,
            };
            if let Some(due) = late_check {
                recheck = recheck.min(due.saturating_duration_since(Instant::now()));
            }
            if let Some(s) = &slot {
                // Between turns the only agent process is the one held for the next turn
                // (warm.rs): the slot, and that process with it, is kept (the next message starts
                // at once) only while no other thread is queued for a slot.
                s.set_idle(true);
            }
            let until = Instant::now() + recheck;
            // The held agent's handshake is answered while the thread waits.
            let woke = loop {
                let left = until.saturating_duration_since(Instant::now());
                match sdk::race(
                    warm::next(&warm),
                    sdk::race(
                        slot_wanted(slot.as_ref()),
                        sdk::race(t.nudged_since(seen), sdk::sleep(left)),
                    ),
                )
                .await
                {
                    Either::Left(output) => warm::serve(&t, &mut warm, output),
                    Either::Right(woke) => break woke,
                }
            };
            match woke {
                Either::Left(()) => {
                    slot = None;
                    // The held process counts against the slot: it goes with it.
                    warm::stop(&t, &mut warm, "slot_given_back");
                    log(
                        Level::Info,
                        "slot_given_back",
                        Some(&t.alias),
                        json!({"agent_session_id": t.agent_session_id()}),
                    );
                }
                Either::Right(Either::Left(())) => {
                    late_check = Some(Instant::now() + LATE_VISIBILITY);
                }
                Either::Right(Either::Right(())) => {
                    if late_check.is_some_and(|due| due <= Instant::now()) {
                        late_check = None;
                    }
                }
            }
            continue;
        };
        log(
            Level::Debug,
            "turn_input",
            Some(&t.alias),
            json!({"items": ids}),
        );
        // A person's files are fetched before the turn that reads them (no slot needed).
        let (text, native) = super::files::turn_input(&t, &settings, &messages).await;
        match &slot {
            Some(s) => s.set_idle(false),
            None => slot = Some(wait_for_slot(&t).await),
        }
        match turn(
            &t,
            &settings,
            &text,
            native,
            boundary,
            &mut slot,
            warm.take(),
        )
        .await
        {
            Ok(TurnEnded::Completed) => {
                late_check = Some(Instant::now() + LATE_VISIBILITY);
                // The next turn's process starts now, while the person reads and writes.
                if slot.is_some() {
                    warm = Warm::start(
                        &t,
                        &settings,
                        &t.agent_session_id(),
                        t.usage_total().as_ref(),
                    );
                }
            }
            Ok(TurnEnded::Stopped) => return,
            Err(f) => {
                t.fail(f).await;
                return;
            }
        }
    }
}

/// Completes when the host asks for the idle thread's slot back (never without a slot).
async fn slot_wanted(slot: Option<&slots::Slot>) {
    match slot {
        Some(s) => sdk::wait_for(s.wanted()).await,
        None => std::future::pending().await,
    }
}

/// Queue for a slot from the worker-wide pool, showing the wait on the dashboard.
pub async fn wait_for_slot(t: &Rc<Thread>) -> slots::Slot {
    t.row("waiting for slot");
    log(
        Level::Info,
        "thread_awaiting_slot",
        Some(&t.alias),
        json!({}),
    );
    sdk::acquire_slot().await
}

/// A turn that did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnEnded {
    Completed,
    /// A stop was requested during the turn; the thread's task ends.
    Stopped,
}

/// Run one turn: persist it as in flight, run attempts of the agent until one is not a transient
/// model-API failure (resuming the same agent session after each, with backoff), then post its
/// `turn_end`. The first attempt may take the process started ahead (`warm`).
async fn turn(
    t: &Rc<Thread>,
    settings: &Settings,
    text: &str,
    native: Option<crate::attachments::NativeInput>,
    boundary: ItemCursor,
    slot: &mut Option<slots::Slot>,
    mut warm: Option<Warm>,
) -> Result<TurnEnded, Failure> {
    let turn_id = format!("trn_{}", worker::new_ulid());
    let resume = t.begin_turn(&turn_id, &boundary).map_err(|e| {
        Failure::new(
            "THREAD_POST_FAILED",
            format!("local state could not be written: {e}"),
        )
    })?;
    t.row("active (turn)");
    // The section polls at the active cadence until this turn ends (or waits for a person).
    let _running = TurnRunning::start(t);
    let clock = std::time::Instant::now();
    let mut st = TurnState::new(t, turn_id, boundary, resume, slot.take());
    st.native = native;
    super::gate::applied(t, settings, &mut st).await;
    let mut usage = Usage::default();
    let mut resumes = 0u32;
    let mut input = text.to_string();
    // The session the last attempt was asked to resume (crate::resume).
    let mut requested: String;
    let outcome = loop {
        requested = st.session_id.clone();
        st.emitted = None;
        let outcome = attempt::run(t, settings, &input, &mut st, warm.take()).await?;
        usage.add(&outcome.usage);
        if let Some(total) = &outcome.usage_total {
            st.usage_total = Some(total.clone());
        }
        if st.stalled {
            break Outcome {
                status: Status::Failed,
                error: format!(
                    "the agent said nothing for {} s and was interrupted",
                    settings.stall_timeout_s
                ),
                ended_by_agent: true,
                ..outcome
            };
        }
        if outcome.status != Status::TransientError
            || resumes >= settings.turn_retries
            || st.check_stop()
        {
            break outcome;
        }
        resumes += 1;
        let delay = settings.retry_delay_ms(resumes);
        let first_line = outcome.error.lines().next().unwrap_or("").to_string();
        let line = format!(
            "transient API error, resuming (attempt {resumes}/{} in {}s): {first_line}",
            settings.turn_retries,
            delay as f64 / 1000.0
        );
        log(
            Level::Warning,
            "turn_retrying",
            Some(&t.alias),
            json!({"turn_id": st.turn_id, "attempt": resumes, "delay_ms": delay, "error": outcome.error}),
        );
        attempt::emit(t, &mut st, items::status("retrying", &line)).await;
        t.row("active (retrying)");
        if let Either::Right(()) = sdk::race(
            sdk::sleep(std::time::Duration::from_millis(delay)),
            st.stop_requested(),
        )
        .await
        {
            st.stopping = true;
            break Outcome {
                status: Status::Interrupted,
                error: "stopped while waiting to resume".into(),
                ..outcome
            };
        }
        t.row("active (turn)");
        input = prompt::CONTINUE_AFTER_TRANSIENT_ERROR.to_string();
        // The images are in the agent's session already; the resume is words only.
        st.native = None;
    };
    let status = outcome.status.clone();
    *slot = st.slot.take();
    let elapsed = clock.elapsed().as_millis() as u64;
    if st.stopping && outcome.status != Status::Completed {
        return stopped(t, &mut st, &usage, elapsed).await;
    }
    if st.parked {
        // No `turn_end`: the turn goes on when the person answers. Its messages are consumed
        // (the agent has them in its session) and the thread holds no slot meanwhile.
        *slot = None;
        t.finish_turn(&st.session_id, &st.boundary, st.usage_total.as_ref())
            .map_err(|e| {
                Failure::new(
                    "THREAD_POST_FAILED",
                    format!("local state could not be written: {e}"),
                )
            })?;
        return Ok(TurnEnded::Completed);
    }
    if status != Status::Completed && (outcome.ended_by_agent || st.emitted.is_some()) {
        // A broken resume pointer must not fail every later turn too.
        let keep = crate::resume::resolve_session_id(&requested, st.emitted.as_deref(), true);
        if keep != st.session_id {
            log(
                Level::Warning,
                "agent_session_cleared",
                Some(&t.alias),
                json!({"turn_id": st.turn_id, "requested": requested, "emitted": st.emitted}),
            );
            st.session_id = keep;
            t.set_agent_session(&st.session_id);
        }
    }
    // Post failures first: the thread fails with them, and nothing more is posted this turn.
    if let Some(f) = st.post_failure.take() {
        return Err(f);
    }
    if !outcome.ended_by_agent && status != Status::Interrupted {
        // It crashed (or could not be reached): no `turn_end`; the failure says why.
        return Err(Failure::new("AGENT_CRASHED", outcome.error));
    }
    let duration = match outcome.duration_ms {
        Some(d) if resumes == 0 => d,
        _ => elapsed,
    };
    // The agent's outbox, published before the `turn_end` that closes its turn.
    super::files::publish(t, settings, &mut st).await;
    let (content, mut metadata) = items::turn_end(status.word(), &usage, duration, &outcome.error);
    // Extensions: enough to rebuild local state from the thread if it is ever lost.
    metadata["agent_session_id"] = json!(st.session_id);
    metadata["consumed_item_id"] = json!(st.boundary.item_id);
    if let Some(total) = &st.usage_total {
        metadata["agent_usage_total"] = total.to_json();
    }
    attempt::emit(t, &mut st, (content, metadata)).await;
    if let Some(f) = st.post_failure.take() {
        return Err(f);
    }
    log(
        Level::Info,
        "turn_ended",
        Some(&t.alias),
        json!({"turn_id": st.turn_id, "status": status.word(), "resumes": resumes,
               "duration_ms": duration}),
    );
    match status {
        Status::Completed => {}
        // The agent ended the turn this way without being asked: it gave up on it.
        Status::Interrupted => {
            return Err(Failure::new(
                "AGENT_CRASHED",
                "the agent interrupted its own turn",
            ));
        }
        Status::TransientError => {
            return Err(Failure::new(
                "AGENT_API_ERROR",
                format!(
                    "the model API kept failing ({} resume(s) tried): {}",
                    resumes, outcome.error
                ),
            ));
        }
        Status::Failed if st.stalled => {
            return Err(Failure::new("AGENT_STALLED", outcome.error));
        }
        Status::Failed => {
            let msg = if outcome.error.is_empty() {
                "agent turn failed".to_string()
            } else {
                outcome.error
            };
            return Err(Failure::new("AGENT_CRASHED", msg));
        }
    }
    t.finish_turn(&st.session_id, &st.boundary, st.usage_total.as_ref())
        .map_err(|e| {
            Failure::new(
                "THREAD_POST_FAILED",
                format!("local state could not be written: {e}"),
            )
        })?;
    Ok(TurnEnded::Completed)
}

/// A turn stopped by a person, a restart, a shutdown or a commit: closed `interrupted` on the
/// thread, and its messages count as consumed, so a later run does not redo what the person
/// stopped. When the session refuses the closing post, the thread's next recovery closes the turn
/// instead. A stop never fails the thread.
async fn stopped(
    t: &Rc<Thread>,
    st: &mut TurnState,
    usage: &Usage,
    elapsed_ms: u64,
) -> Result<TurnEnded, Failure> {
    if st.post_failure.is_none() {
        let (content, mut metadata) =
            items::turn_end("interrupted", usage, elapsed_ms, "the turn was stopped");
        metadata["agent_session_id"] = json!(st.session_id);
        metadata["consumed_item_id"] = json!(st.boundary.item_id);
        if let Err(f) = t.post_quietly((content, metadata), Some(&st.turn_id)).await {
            st.post_failure = Some(f);
        }
    }
    log(
        Level::Info,
        "turn_ended",
        Some(&t.alias),
        json!({"turn_id": st.turn_id, "status": "interrupted",
               "posted": st.post_failure.is_none()}),
    );
    if st.post_failure.is_none() {
        let _ = t.finish_turn(&st.session_id, &st.boundary, st.usage_total.as_ref());
    } else {
        // The closing post was refused (a section quiescing for a commit is stopped exactly when
        // the session takes no writes): the turn stays on record as in flight, so the thread's
        // recovery closes it `interrupted` on the thread once writes are taken again, or, when
        // the agent had not begun on it, hands its messages to the next turn.
        t.set_agent_session(&st.session_id);
    }
    Ok(TurnEnded::Stopped)
}
