//! A thread's task: take a slot, go (or come back) active, then the turn loop — one turn at a
//! time, the person's queued messages joined into one turn, the agent's lines posted in order.

use std::rc::Rc;
use std::time::Duration;

use blobhub_worker_sdk::serde_json::{Value, json};
use blobhub_worker_sdk::{self as sdk, Either, log::Level, slots, worker};

use super::attempt::{self, TurnState};
use super::ctx::{list_items_since, log, retrying};
use super::thread::{Mode, OpenPrompt, Thread, TurnRunning};
use crate::agent::{Outcome, Status, Usage};
use crate::cursor::ItemCursor;
use crate::items;
use crate::prompt;
use crate::records::TurnRecord;
use crate::settings::{Failure, Settings};

/// How long an idle thread waits before looking at its items again without a nudge (a safety
/// net for a missed event; events normally wake it at once).
const IDLE_RECHECK: Duration = Duration::from_secs(60);
/// Look again this often while something is pending that no event may announce: a person's
/// answer awaits its resolve post (which failed), or the items could not be fetched (the host
/// already retried; without this a message would wait for the next event, as in the reference).
const SHORT_RECHECK: Duration = Duration::from_secs(5);

pub async fn run(t: Rc<Thread>, mode: Mode) {
    let Some(settings) = t.settings.borrow().clone() else {
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
            {
                let mut rec = t.rec.borrow_mut();
                rec.agent.state = "active".into();
                rec.agent.error = Default::default();
            }
            // Local state first: a crash after the envelope write then recovers this thread.
            if let Err(e) = t.save() {
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
            t.wire_active.set(true);
            let sid = t.rec.borrow().agent.agent_session_id.clone();
            t.ctx.activity(items::thread_active(&t.alias, &sid)).await;
            log(
                Level::Info,
                "thread_active",
                Some(&t.alias),
                json!({"agent_session_id": sid}),
            );
        }
        Mode::Recover => {
            t.wire_active.set(true);
            if !recover_from_items(&t).await {
                return;
            }
            t.rec.borrow_mut().agent.state = "active".into();
            let _ = t.save();
            let sid = t.rec.borrow().agent.agent_session_id.clone();
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
    if mode == Mode::Activate && t.rec.borrow().turn.is_some() {
        if !recover_from_items(&t).await {
            return;
        }
        // A question left open by the interrupted run belongs to that run.
        t.cancel_prompt("thread_restart").await;
    }
    t.fetch.replace(t.rec.borrow().items.last_consumed.clone());
    loop {
        let seen = t.nudge.generation();
        let fetched = t.try_ingest().await;
        // An adopted prompt (its agent process is gone) answered: the answer becomes the next
        // turn's message.
        if t.prompt
            .borrow()
            .as_ref()
            .is_some_and(|p| p.request_id.is_none())
            && t.answer.borrow().is_some()
            && let Some((open, answers, msg)) = t.resolve_prompt(None).await
        {
            let text = prompt::resume_text(&open.prompt.summary(), &answers);
            t.inbox
                .borrow_mut()
                .push_front(super::thread::Msg { text, ..msg });
        }
        if t.inbox.borrow().is_empty() {
            let waiting = t.prompt.borrow().is_some();
            t.row(if waiting {
                "active (prompt)"
            } else {
                "active (idle)"
            });
            let recheck = if !fetched || t.answer.borrow().is_some() {
                SHORT_RECHECK
            } else {
                IDLE_RECHECK
            };
            sdk::race(t.nudge.changed_since(seen), sdk::sleep(recheck)).await;
            continue;
        }
        let messages: Vec<_> = t.inbox.borrow_mut().drain(..).collect();
        let text = messages
            .iter()
            .map(|m| m.text.as_str())
            .collect::<Vec<_>>()
            .join("\n\n");
        let boundary = t.fetch.borrow().clone();
        let ids: Vec<&str> = messages.iter().map(|m| m.item_id.as_str()).collect();
        log(
            Level::Debug,
            "turn_input",
            Some(&t.alias),
            json!({"items": ids}),
        );
        if slot.is_none() {
            slot = Some(wait_for_slot(&t).await);
        }
        match turn(&t, &settings, &text, boundary, &mut slot).await {
            Ok(TurnEnded::Completed) => {}
            Ok(TurnEnded::Stopped) => return,
            Err(f) => {
                t.fail(f).await;
                return;
            }
        }
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

/// Read the whole thread once after a restart (or a crash mid-turn): adopt the newest open
/// prompt, settle the turn that was in flight, and rebuild lost local state from the items.
/// Returns false when the thread failed.
async fn recover_from_items(t: &Rc<Thread>) -> bool {
    // Worth more patience than an ingest: without this scan an open prompt is not adopted and
    // an interrupted turn is not settled.
    let scan = retrying(4, || list_items_since(&t.ctx.session, &t.alias, None));
    let all = match scan.await {
        Ok(v) => v,
        Err(e) => {
            log(
                Level::Warning,
                "open_prompt_scan_failed",
                Some(&t.alias),
                json!({"error": e.to_string()}),
            );
            return true;
        }
    };
    let own_by = |item: &Value| items::is_own(item, t.ctx.user_id(), &t.own.borrow());
    // Synchronous part: the record is borrowed, so nothing here may await.
    let unfinished: Option<(String, String, String)> = {
        let mut unfinished = None;
        let mut rec = t.rec.borrow_mut();
        // Local state lost: rebuild the cursor and the agent session from our own `turn_end` items.
        if rec.items.last_consumed.created_at.is_empty()
            && rec.agent.agent_session_id.is_empty()
            && let Some(end) = all.iter().rev().find(|i| {
                own_by(i)
                    && i.pointer("/metadata/type").and_then(Value::as_str) == Some("turn_end")
                    && i.pointer("/metadata/consumed_item_id").is_some()
            })
        {
            let consumed = end
                .pointer("/metadata/consumed_item_id")
                .and_then(Value::as_str)
                .unwrap_or("");
            rec.agent.agent_session_id = end
                .pointer("/metadata/agent_session_id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let mut cursor = ItemCursor::default();
            for i in &all {
                let id = i.get("id").and_then(Value::as_str).unwrap_or("");
                cursor.advance(
                    id,
                    i.get("created_at").and_then(Value::as_str).unwrap_or(""),
                );
                if id == consumed {
                    break;
                }
            }
            if !consumed.is_empty() {
                rec.items.last_consumed = cursor;
            }
            log(
                Level::Warning,
                "thread_state_rebuilt_from_wire",
                Some(&t.alias),
                json!({"consumed": consumed}),
            );
        }
        // A turn that was in flight: if any of its output reached the thread, the agent had read
        // its messages — count them consumed so they are not answered twice.
        if let Some(turn) = rec.turn.take() {
            let of_turn: Vec<&Value> = all
                .iter()
                .filter(|i| {
                    i.pointer("/metadata/turn_id").and_then(Value::as_str)
                        == Some(turn.turn_id.as_str())
                })
                .collect();
            let posted = !of_turn.is_empty() || turn.agent_started;
            if posted {
                rec.items.last_consumed = turn.boundary.clone();
                let ended = of_turn.iter().any(|i| {
                    i.pointer("/metadata/type").and_then(Value::as_str) == Some("turn_end")
                });
                if !ended {
                    unfinished = Some((
                        turn.turn_id.clone(),
                        turn.boundary.item_id.clone(),
                        rec.agent.agent_session_id.clone(),
                    ));
                }
            }
            log(
                Level::Info,
                "turn_settled_after_restart",
                Some(&t.alias),
                json!({"output_posted": posted}),
            );
        }
        unfinished
    };
    // A turn cut short by the restart after it had spoken: close it on the thread, so readers
    // (and the web UI) see it end rather than hang.
    if let Some((turn_id, consumed, session)) = unfinished {
        let (content, mut metadata) = items::turn_end(
            "interrupted",
            &Default::default(),
            0,
            "the worker restarted during this turn",
        );
        metadata["agent_session_id"] = json!(session);
        metadata["consumed_item_id"] = json!(consumed);
        let item = (content, metadata);
        if let Err(f) = t.post(item, Some(&turn_id)).await {
            log(
                Level::Warning,
                "interrupted_turn_end_failed",
                Some(&t.alias),
                json!({"error": f.message}),
            );
        }
    }
    if let Some((p, asked_at)) = prompt::adopt(&all) {
        log(
            Level::Info,
            "open_prompt_restored",
            Some(&t.alias),
            json!({"prompt_id": p.prompt_id}),
        );
        t.prompt.replace(Some(OpenPrompt {
            prompt: p,
            request_id: None,
            asked_at,
        }));
    }
    t.save().is_ok()
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
/// `turn_end`.
async fn turn(
    t: &Rc<Thread>,
    settings: &Settings,
    text: &str,
    boundary: ItemCursor,
    slot: &mut Option<slots::Slot>,
) -> Result<TurnEnded, Failure> {
    let turn_id = format!("trn_{}", worker::new_ulid());
    let resume = t.rec.borrow().agent.agent_session_id.clone();
    t.rec.borrow_mut().turn = Some(TurnRecord {
        turn_id: turn_id.clone(),
        boundary: boundary.clone(),
        agent_started: false,
    });
    t.save().map_err(|e| {
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
    let mut usage = Usage::default();
    let mut resumes = 0u32;
    let mut input = text.to_string();
    let outcome = loop {
        let outcome = attempt::run(t, settings, &input, &mut st).await?;
        usage.add(&outcome.usage);
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
    };
    let status = outcome.status.clone();
    *slot = st.slot.take();
    let elapsed = clock.elapsed().as_millis() as u64;
    if st.stopping && outcome.status != Status::Completed {
        return stopped(t, &mut st, &usage, elapsed).await;
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
    let (content, mut metadata) = items::turn_end(status.word(), &usage, duration, &outcome.error);
    // Extensions: enough to rebuild local state from the thread if it is ever lost.
    metadata["agent_session_id"] = json!(st.session_id);
    metadata["consumed_item_id"] = json!(st.boundary.item_id);
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
        Status::Failed => {
            let msg = if outcome.error.is_empty() {
                "agent turn failed".to_string()
            } else {
                outcome.error
            };
            return Err(Failure::new("AGENT_CRASHED", msg));
        }
    }
    t.finish_turn(&st.session_id, &st.boundary).map_err(|e| {
        Failure::new(
            "THREAD_POST_FAILED",
            format!("local state could not be written: {e}"),
        )
    })?;
    Ok(TurnEnded::Completed)
}

/// A turn stopped by a person, a restart or a shutdown: closed `interrupted` on the thread (best
/// effort: the session may be refusing writes by now), and its messages count as consumed, so a
/// later run does not redo what the person stopped. A stop never fails the thread.
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
    let _ = t.finish_turn(&st.session_id, &st.boundary);
    Ok(TurnEnded::Stopped)
}
