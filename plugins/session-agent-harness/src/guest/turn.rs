//! A thread's task: take a slot, go (or come back) active, then the turn loop — one turn at a
//! time, the person's queued messages joined into one turn, the agent's lines posted in order.

use std::rc::Rc;
use std::time::Duration;

use blobhub_worker_sdk::serde_json::{Value, json};
use blobhub_worker_sdk::{self as sdk, Either, log::Level, process, slots, worker};

use super::ctx::{list_items_since, log, retrying};
use super::store;
use super::thread::{Mode, OpenPrompt, Thread, TurnRunning};
use crate::agent::{AgentEvent, Driver, driver_for};
use crate::cursor::ItemCursor;
use crate::items;
use crate::prompt::{self, Prompt};
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
        if let Err(f) = turn(&t, &settings, &text, boundary, &mut slot).await {
            t.fail(f).await;
            return;
        }
    }
}

/// Queue for a slot from the worker-wide pool, showing the wait on the dashboard.
async fn wait_for_slot(t: &Rc<Thread>) -> slots::Slot {
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
            let posted = !of_turn.is_empty();
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

/// What a turn has produced so far.
struct TurnState {
    turn_id: String,
    boundary: ItemCursor,
    session_id: String,
    post_failure: Option<Failure>,
    ended: Option<(String, String)>,
    /// The thread's agent slot; given back to the pool while a person is being asked.
    slot: Option<slots::Slot>,
}

/// Run one turn: persist it as in flight, start the agent, relay both ways until it exits.
async fn turn(
    t: &Rc<Thread>,
    settings: &Settings,
    text: &str,
    boundary: ItemCursor,
    slot: &mut Option<slots::Slot>,
) -> Result<(), Failure> {
    let Some(driver) = driver_for(&settings.agent_type) else {
        return Err(Failure::new(
            "AGENT_TYPE_UNSUPPORTED",
            format!("no driver for {}", settings.agent_type),
        ));
    };
    let turn_id = format!("trn_{}", worker::new_ulid());
    let resume = t.rec.borrow().agent.agent_session_id.clone();
    t.rec.borrow_mut().turn = Some(TurnRecord {
        turn_id: turn_id.clone(),
        boundary: boundary.clone(),
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
    let started = worker::now_utc();
    let clock = std::time::Instant::now();
    let child = process::spawn(&process::SpawnRequest {
        program: settings.executable.clone(),
        args: driver.args(settings, &resume),
        cwd: settings.work_folder.clone(),
        env: settings.env.clone(),
    })
    .map_err(|e| match e {
        process::SpawnError::BadDirectory(m) => Failure::new("WORK_FOLDER_NOT_FOUND", m),
        process::SpawnError::NotGranted(m) | process::SpawnError::NotFound(m) => {
            Failure::new("AGENT_EXECUTABLE_NOT_FOUND", m)
        }
        process::SpawnError::BadEnvironment(m) | process::SpawnError::Failed(m) => {
            Failure::new("AGENT_CRASHED", format!("agent could not start: {m}"))
        }
    })?;
    log(
        Level::Info,
        "turn_started",
        Some(&t.alias),
        json!({"turn_id": turn_id, "pid": child.pid(), "resume": resume, "started_at": started}),
    );
    if let Err(e) = child.write_stdin(&driver.encode_turn(text)) {
        return Err(Failure::new(
            "AGENT_CRASHED",
            format!("agent did not take the turn: {e}"),
        ));
    }
    let mut st = TurnState {
        turn_id,
        boundary,
        session_id: resume,
        post_failure: None,
        ended: None,
        slot: slot.take(),
    };
    let exit = loop {
        let seen = t.nudge.generation();
        let recheck = if t.prompt.borrow().is_some() {
            SHORT_RECHECK
        } else {
            IDLE_RECHECK
        };
        match sdk::race(
            sdk::next_output(&child),
            sdk::race(t.nudge.changed_since(seen), sdk::sleep(recheck)),
        )
        .await
        {
            Either::Left(process::Output::Stdout(line)) => {
                if let Some(event) = driver.parse_line(&line) {
                    on_event(
                        t,
                        settings,
                        driver.as_ref(),
                        &child,
                        &mut st,
                        event,
                        clock.elapsed().as_millis() as u64,
                    )
                    .await;
                }
            }
            Either::Left(process::Output::Stderr(line)) => {
                let _ = store::append(&store::stderr_log(&t.alias), &line);
            }
            Either::Left(process::Output::Exited(status)) => break status,
            Either::Right(_) => {
                t.try_ingest().await;
                deliver_answer(t, driver.as_ref(), &child, &mut st).await;
            }
        }
    };
    // Answers cannot reach an agent that is gone; the prompt is cancelled by the failure path.
    if let Some(f) = st.post_failure {
        return Err(f);
    }
    match st.ended {
        Some((status, _)) if status == "completed" => {}
        Some((status, error)) => {
            let msg = if error.is_empty() {
                format!("agent turn {status}")
            } else {
                error
            };
            return Err(Failure::new("AGENT_CRASHED", msg));
        }
        None => {
            let how = match (exit.code, exit.signal) {
                (Some(c), _) => format!("agent exited with status {c} before ending its turn"),
                (None, Some(s)) => format!("agent was killed by signal {s} before ending its turn"),
                _ => "agent ended without finishing its turn".to_string(),
            };
            return Err(Failure::new("AGENT_CRASHED", how));
        }
    }
    *slot = st.slot.take();
    let mut rec = t.rec.borrow_mut();
    rec.agent.agent_session_id = st.session_id;
    rec.items.last_consumed = st.boundary;
    rec.turn = None;
    drop(rec);
    t.save().map_err(|e| {
        Failure::new(
            "THREAD_POST_FAILED",
            format!("local state could not be written: {e}"),
        )
    })?;
    Ok(())
}

async fn on_event(
    t: &Rc<Thread>,
    settings: &Settings,
    driver: &dyn Driver,
    child: &process::Child,
    st: &mut TurnState,
    event: AgentEvent,
    elapsed_ms: u64,
) {
    match event {
        AgentEvent::Session(id) => {
            if !id.is_empty() && id != st.session_id {
                st.session_id = id.clone();
                t.rec.borrow_mut().agent.agent_session_id = id;
                // Persist at once: a restart mid-turn must resume this session, not start anew.
                let _ = t.save();
                t.row("active (turn)");
            }
        }
        AgentEvent::PermissionRequest {
            request_id,
            tool,
            question,
        } => {
            if settings.permissions == "autonomous" {
                // Autonomous runs never ask: approve on the person's behalf.
                let _ = child.write_stdin(&driver.encode_permission(&request_id, true, "Approve"));
                return;
            }
            let p = Prompt::approval(format!("prm_{}", worker::new_ulid()), &tool, &question);
            let item = (
                json!([{"type": "text", "text": p.text()}]),
                p.pending_metadata(),
            );
            let posted = match st.post_failure {
                Some(_) => None,
                None => t.post(item, Some(&st.turn_id)).await.ok(),
            };
            let Some(stored) = posted else {
                // Nobody can answer a question that was never shown: deny.
                log(
                    Level::Warning,
                    "pending_prompt_post_failed",
                    Some(&t.alias),
                    json!({}),
                );
                let _ = child.write_stdin(&driver.encode_permission(
                    &request_id,
                    false,
                    "Denied: the question could not be delivered to a person; retry",
                ));
                return;
            };
            t.cancel_prompt("superseded").await;
            t.prompt.replace(Some(OpenPrompt {
                prompt: p,
                request_id: Some(request_id),
                asked_at: stored
                    .get("created_at")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            }));
            t.answer.replace(None);
            // A held prompt is idle: the answer must reach the agent quickly.
            t.sync_activity();
            // Held wait begins: what led to the question is consumed, so a restart does not
            // replay it as the answer; and the slot goes back to the pool, since a person may
            // take a long time and other threads should not wait for them.
            t.rec.borrow_mut().items.last_consumed = st.boundary.clone();
            let _ = t.save();
            st.slot = None;
            t.row("active (prompt)");
            // A reply may already be on the thread.
            t.nudge.notify();
        }
        AgentEvent::TurnEnd {
            status,
            usage,
            duration_ms,
            error,
        } => {
            let (content, mut metadata) =
                items::turn_end(&status, &usage, duration_ms.unwrap_or(elapsed_ms), &error);
            // Extensions: enough to rebuild local state from the thread if it is ever lost.
            metadata["agent_session_id"] = json!(st.session_id);
            metadata["consumed_item_id"] = json!(st.boundary.item_id);
            emit(t, st, (content, metadata)).await;
            st.ended = Some((status, error));
            child.close_stdin();
        }
        other => {
            if let Some(item) = items::agent_item(&other) {
                emit(t, st, item).await;
            }
        }
    }
}

/// Post one emission of the turn; after the first failure the rest of the turn is dropped and
/// the turn fails at its end.
async fn emit(t: &Rc<Thread>, st: &mut TurnState, item: items::Item) {
    if st.post_failure.is_some() {
        return;
    }
    if let Err(f) = t.post(item, Some(&st.turn_id)).await {
        st.post_failure = Some(f);
    }
}

/// Hand a person's answer to the agent blocked on the open prompt.
async fn deliver_answer(
    t: &Rc<Thread>,
    driver: &dyn Driver,
    child: &process::Child,
    st: &mut TurnState,
) {
    let held = t
        .prompt
        .borrow()
        .as_ref()
        .is_some_and(|p| p.request_id.is_some());
    if !held || t.answer.borrow().is_none() {
        return;
    }
    let Some((open, answers, _msg)) = t.resolve_prompt(Some(&st.turn_id)).await else {
        return;
    };
    // Answered: the agent continues, so it needs its slot again (FIFO behind other threads).
    if st.slot.is_none() {
        st.slot = Some(wait_for_slot(t).await);
    }
    let approved = prompt::approved(&answers);
    let answer = prompt::answer_for_agent(&answers);
    let request_id = open.request_id.unwrap_or_default();
    if let Err(e) = child.write_stdin(&driver.encode_permission(&request_id, approved, &answer)) {
        log(
            Level::Warning,
            "answer_not_delivered",
            Some(&t.alias),
            json!({"error": e}),
        );
    }
    // The answer was read; with nothing else queued, the turn has consumed up to it.
    if t.inbox.borrow().is_empty() {
        st.boundary = t.fetch.borrow().clone();
    }
    t.row("active (turn)");
}
