//! One attempt of a turn: one agent process, driven by its [`Driver`], relayed both ways until it
//! exits. The turn (turn.rs) runs attempts until one is not a transient failure.

use std::rc::Rc;
use std::time::{Duration, Instant};

use blobhub_worker_sdk::serde_json::{Value, json};
use blobhub_worker_sdk::{self as sdk, Either, held_waits, log::Level, process, slots, worker};

use super::ctx::log;
use super::store;
use super::sync::Notify;
use super::thread::{OpenPrompt, Thread};
use super::warm::{Taken, Warm};
use crate::agent::prestart::StartSpec;
use crate::agent::{AgentEvent, Answer, Driver, Exit, Outcome, Start, Usage, driver_for};
use crate::cursor::ItemCursor;
use crate::items;
use crate::prompt::{self, Prompt};
use crate::settings::{Failure, Settings};

/// How long an agent has to end its turn after it was asked to (its own interrupt request, or
/// stdin closed after its last line), before it gets SIGTERM.
const END_GRACE: Duration = Duration::from_secs(5);
/// Between SIGTERM and SIGKILL.
const KILL_GRACE_MS: u32 = 5_000;
/// A safety net for a missed nudge while nothing else is due.
const IDLE_RECHECK: Duration = Duration::from_secs(60);
/// Look again this often while a person's answer may be waiting on its resolve post.
const SHORT_RECHECK: Duration = Duration::from_secs(5);

/// What a turn has produced so far, across its attempts.
pub struct TurnState {
    pub turn_id: String,
    pub boundary: ItemCursor,
    /// The agent session to resume (updated as soon as the agent names one).
    pub session_id: String,
    pub post_failure: Option<Failure>,
    /// The thread's agent slot; given back to the pool while a person is being asked.
    pub slot: Option<slots::Slot>,
    /// A stop was requested (a person's stop, a restart, a shutdown): the turn ends
    /// `interrupted`.
    pub stopping: bool,
    pub stop: Option<Notify>,
    stop_seen: u64,
    /// The agent session's cumulative token counts so far (agents that report running totals).
    pub usage_total: Option<Usage>,
    /// The agent went silent for the stall timeout and was interrupted: the thread fails with
    /// `AGENT_STALLED`.
    pub stalled: bool,
    /// The session id the current attempt advertised, if any (crate::resume).
    pub emitted: Option<String>,
    /// A prompt was parked (`wait: parked`, or a held wait demoted): the agent is stopped and
    /// the turn ends without a `turn_end`; the answer starts the next turn.
    pub parked: bool,
    /// The turn's images, for agents that read them natively (the first attempt only).
    pub native: Option<crate::attachments::NativeInput>,
    /// The open held wait in the worker-wide registry, while the agent waits on a person.
    pub held: Option<held_waits::HeldWait>,
}

impl TurnState {
    pub fn new(
        t: &Thread,
        turn_id: String,
        boundary: ItemCursor,
        session_id: String,
        slot: Option<slots::Slot>,
    ) -> TurnState {
        let stop = t.stop_signal();
        let stop_seen = stop.as_ref().map_or(0, Notify::generation);
        TurnState {
            turn_id,
            boundary,
            session_id,
            post_failure: None,
            slot,
            stopping: false,
            stop,
            stop_seen,
            usage_total: t.usage_total(),
            stalled: false,
            emitted: None,
            parked: false,
            native: None,
            held: None,
        }
    }

    /// Completes when a stop is requested (never, when nothing can request one).
    pub async fn stop_requested(&self) {
        match &self.stop {
            Some(n) => n.changed_since(self.stop_seen).await,
            None => std::future::pending().await,
        }
    }

    /// Completes when the held wait is demoted (never, while none is open).
    pub async fn demoted(&self) {
        match &self.held {
            Some(h) => sdk::wait_for(h.demoted()).await,
            None => std::future::pending().await,
        }
    }

    /// Notice a stop that was requested while nothing was waiting for it.
    pub fn check_stop(&mut self) -> bool {
        if let Some(n) = &self.stop
            && n.generation() != self.stop_seen
        {
            self.stopping = true;
        }
        self.stopping
    }
}

/// The words the host's refusal of a start folder carries when the folder exists but is outside
/// `workspace.allowed_roots`, inside the state tree or a system folder.
const NOT_ALLOWED_MARK: &str = "workspace.allowed_roots";

fn spawn_failure(e: process::SpawnError) -> Failure {
    match e {
        // The host names its work-folder policy when that is why (see `NOT_ALLOWED_MARK`).
        process::SpawnError::BadDirectory(m) if m.contains(NOT_ALLOWED_MARK) => {
            Failure::new("WORK_FOLDER_NOT_ALLOWED", m)
        }
        process::SpawnError::BadDirectory(m) => Failure::new("WORK_FOLDER_NOT_FOUND", m),
        process::SpawnError::NotGranted(m) | process::SpawnError::NotFound(m) => {
            Failure::new("AGENT_EXECUTABLE_NOT_FOUND", m)
        }
        process::SpawnError::BadEnvironment(m) | process::SpawnError::Failed(m) => {
            Failure::new("AGENT_CRASHED", format!("agent could not start: {m}"))
        }
    }
}

/// Start a new process as `spec` says and write its handshake.
fn start_cold(spec: &StartSpec, driver: Box<dyn Driver>) -> Result<Taken, Failure> {
    let child = process::spawn(&process::SpawnRequest {
        program: spec.program.clone(),
        args: spec.args.clone(),
        cwd: spec.cwd.clone(),
        env: spec.env.clone(),
    })
    .map_err(spawn_failure)?;
    write_all(&child, &spec.stdin).map_err(|e| did_not_take(&e))?;
    Ok(Taken {
        child,
        driver,
        held: Vec::new(),
        warm_for: Duration::ZERO,
        unannounced: None,
    })
}

/// Write the turn to the process: the person's text, with the files that go in the message
/// itself (images) when the turn has any.
fn hand_turn(k: &mut Taken, st: &TurnState, text: &str) -> Result<(), String> {
    if let Some(native) = &st.native {
        k.driver.set_native(native);
    }
    write_all(&k.child, &k.driver.turn(text))
}

fn write_all(child: &process::Child, lines: &[String]) -> Result<(), String> {
    lines.iter().try_for_each(|l| child.write_stdin(l))
}

fn did_not_take(e: &str) -> Failure {
    Failure::new("AGENT_CRASHED", format!("agent did not take the turn: {e}"))
}

/// Run one attempt: start the agent (or take the one started ahead, `warm`, when it was started
/// exactly as this attempt would start it), give it the turn, relay until it exits, and return
/// its outcome.
pub async fn run(
    t: &Rc<Thread>,
    settings: &Settings,
    text: &str,
    st: &mut TurnState,
    mut warm: Option<Warm>,
) -> Result<Outcome, Failure> {
    let mut fresh = driver_for(settings.driver);
    let spec = StartSpec::new(
        settings,
        fresh.launch(&Start {
            resume: &st.session_id,
            settings,
            usage_total: st.usage_total.as_ref(),
        }),
    );
    if let Some(why) = warm.as_ref().and_then(|w| w.mismatch(&spec)) {
        super::warm::stop(t, &mut warm, why);
    }
    // A process started ahead comes with a spare driver, in case it is gone by the time the
    // turn is written to it.
    let (mut k, mut spare) = match warm.and_then(|w| w.take(t)) {
        Some(k) => (k, Some(fresh)),
        None => (start_cold(&spec, fresh)?, None),
    };
    let mut prestarted = spare.is_some().then_some(k.warm_for.as_millis() as u64);
    if let Err(e) = hand_turn(&mut k, st, text) {
        let Some(fresh) = spare.take() else {
            return Err(did_not_take(&e));
        };
        // Its stdin is closed: the process was started and has ended, so the pid is known.
        let pid = sdk::pid_if_started(&k.child);
        if let (Some(resume), Some(pid)) = (&k.unannounced, pid) {
            super::warm::prestarted(&t.alias, pid, resume);
        }
        log(
            Level::Warning,
            "agent_prestart_lost",
            Some(&t.alias),
            json!({"pid": pid, "why": format!("its turn could not be written: {e}")}),
        );
        k = start_cold(&spec, fresh)?;
        prestarted = None;
        hand_turn(&mut k, st, text).map_err(|e| did_not_take(&e))?;
    }
    let Taken {
        child,
        mut driver,
        held,
        unannounced,
        ..
    } = k;
    let started_at = worker::now_utc();
    // The host starts the process in the background; this task (and no other thread's) waits
    // for that before the pid is read, so a section's threads start their agents side by side.
    // The turn is already written to its stdin, and its output waits in the host meanwhile.
    let pid = sdk::started(&child).await;
    if let Some(resume) = unannounced {
        super::warm::prestarted(&t.alias, pid, &resume);
    }
    log(
        Level::Info,
        "turn_started",
        Some(&t.alias),
        json!({"turn_id": st.turn_id, "pid": pid, "resume": st.session_id,
               "prestarted_ms": prestarted, "started_at": started_at}),
    );
    let agent_log = store::stderr_log(&t.alias);
    // What the process said during its handshake (the session's id) comes first.
    for event in held {
        on_event(t, settings, driver.as_mut(), &child, st, event).await;
    }
    // Once set, the agent must have exited by then or it is terminated.
    let mut end_by: Option<Instant> = None;
    let mut interrupted = false;
    let mut terminated = false;
    // The agent's last sign of life; silence past the stall timeout (while no person is being
    // asked, which legitimately takes long) ends the turn.
    let stall_after = (settings.stall_timeout_s > 0)
        .then(|| Duration::from_secs(u64::from(settings.stall_timeout_s)));
    let mut last_line = Instant::now();
    if st.check_stop() {
        end_by = Some(ask_to_end(driver.as_mut(), &child));
        interrupted = true;
    }
    loop {
        let seen = t.nudge_generation();
        let mut wait = if t.has_prompt() {
            SHORT_RECHECK
        } else {
            IDLE_RECHECK
        };
        if let Some(by) = end_by {
            wait = wait.min(by.saturating_duration_since(Instant::now()));
        }
        if let Some(after) = stall_after
            && !interrupted
        {
            wait = wait.min((last_line + after).saturating_duration_since(Instant::now()));
        }
        let woke = sdk::race(
            sdk::next_output(&child),
            sdk::race(
                st.stop_requested(),
                sdk::race(
                    st.demoted(),
                    sdk::race(t.nudged_since(seen), sdk::sleep(wait)),
                ),
            ),
        )
        .await;
        if matches!(
            woke,
            Either::Left(process::Output::Stdout(_) | process::Output::Stderr(_))
        ) || t.has_prompt()
        {
            last_line = Instant::now();
        }
        match woke {
            Either::Left(process::Output::Stdout(line)) => {
                let step = driver.on_stdout(&line);
                if !step.events.is_empty() {
                    // The agent has begun on the turn (a handshake line says nothing yet).
                    t.mark_turn_started();
                }
                for reply in &step.replies {
                    let _ = child.write_stdin(reply);
                }
                if let Some(raw) = step.log {
                    let _ = store::append(&agent_log, &format!("stdout: {raw}"));
                }
                for event in step.events {
                    on_event(t, settings, driver.as_mut(), &child, st, event).await;
                }
                if st.parked && !interrupted {
                    // The refusal is written; the agent's own session keeps the rest.
                    interrupted = true;
                    end_by = Some(ask_to_end(driver.as_mut(), &child));
                }
                if step.finished && end_by.is_none() {
                    child.close_stdin();
                    end_by = Some(Instant::now() + END_GRACE);
                }
            }
            Either::Left(process::Output::Stderr(line)) => {
                let _ = store::append(&agent_log, &line);
            }
            Either::Left(process::Output::Exited(status)) => {
                st.held = None;
                return Ok(driver.on_exit(Exit {
                    code: status.code,
                    signal: status.signal,
                }));
            }
            Either::Right(Either::Left(())) => {
                st.stopping = true;
                st.stop_seen = st.stop.as_ref().map_or(0, Notify::generation);
                if !interrupted {
                    interrupted = true;
                    log(
                        Level::Info,
                        "turn_interrupting",
                        Some(&t.alias),
                        json!({"turn_id": st.turn_id}),
                    );
                    end_by = Some(ask_to_end(driver.as_mut(), &child));
                }
            }
            Either::Right(Either::Right(Either::Left(()))) => {
                st.held = None;
                if demote(t, driver.as_mut(), &child, st) && !interrupted {
                    interrupted = true;
                    end_by = Some(ask_to_end(driver.as_mut(), &child));
                }
            }
            Either::Right(Either::Right(Either::Right(_))) => {
                if let Some(after) = stall_after
                    && !interrupted
                    && last_line.elapsed() >= after
                {
                    log(
                        Level::Warning,
                        "agent_stalled",
                        Some(&t.alias),
                        json!({"turn_id": st.turn_id, "pid": pid,
                               "silent_s": after.as_secs()}),
                    );
                    st.stalled = true;
                    interrupted = true;
                    end_by = Some(ask_to_end(driver.as_mut(), &child));
                    continue;
                }
                if let Some(by) = end_by
                    && Instant::now() >= by
                    && !terminated
                {
                    log(
                        Level::Warning,
                        "agent_terminated",
                        Some(&t.alias),
                        json!({"turn_id": st.turn_id, "pid": pid}),
                    );
                    child.terminate(KILL_GRACE_MS);
                    terminated = true;
                    end_by = None;
                    continue;
                }
                t.try_ingest().await;
                deliver_answer(t, driver.as_mut(), &child, st).await;
            }
        }
    }
}

/// The worker-wide cap on held waits demoted this thread's: the waiting agent is told nobody
/// refused and is stopped, the prompt stays open on the thread, and its answer starts the next
/// turn (the park path). Returns whether there was a held prompt to park.
fn demote(
    t: &Rc<Thread>,
    driver: &mut dyn Driver,
    child: &process::Child,
    st: &mut TurnState,
) -> bool {
    let Some((request_id, p)) = t.demote_prompt() else {
        return false;
    };
    write(
        child,
        driver.answer(&request_id, Answer::Unanswered(prompt::PARK_NOTICE)),
    );
    st.parked = true;
    let (subject, _) = p.subject_and_key();
    log(
        Level::Info,
        "held_wait_demoted",
        Some(&t.alias),
        json!({"turn_id": st.turn_id, "prompt_id": p.prompt_id, "kind": p.kind,
               "subject": subject, "reason": "held_cap"}),
    );
    t.row("active (prompt)");
    true
}

/// Ask the agent to end its turn now: its own interrupt request when it has one, else SIGTERM.
/// Returns when it must be gone.
fn ask_to_end(driver: &mut dyn Driver, child: &process::Child) -> Instant {
    let lines = driver.interrupt();
    if lines.is_empty() {
        child.terminate(KILL_GRACE_MS);
    }
    for l in &lines {
        let _ = child.write_stdin(l);
    }
    Instant::now() + END_GRACE
}

async fn on_event(
    t: &Rc<Thread>,
    settings: &Settings,
    driver: &mut dyn Driver,
    child: &process::Child,
    st: &mut TurnState,
    event: AgentEvent,
) {
    if st.parked && !matches!(event, AgentEvent::Session(_)) {
        // Parked: whatever the agent says before it is stopped is not the person's business.
        return;
    }
    match event {
        AgentEvent::Session(id) => {
            if !id.is_empty() {
                st.emitted = Some(id.clone());
            }
            if !id.is_empty() && id != st.session_id {
                st.session_id = id.clone();
                // Persisted at once: a restart mid-turn must resume this session, not start anew.
                t.set_agent_session(&id);
                t.row("active (turn)");
            }
        }
        AgentEvent::PermissionRequest {
            request_id,
            tool,
            input,
            question,
            session_option,
        } => {
            if settings.permissions == "autonomous" {
                // Autonomous runs never ask: allowed on the person's behalf.
                write(child, driver.answer(&request_id, Answer::Approve));
                return;
            }
            match super::gate::check(t, settings, st, &tool, &input).await {
                Some(super::gate::Gated::Allow) => {
                    write(child, driver.answer(&request_id, Answer::Approve));
                    return;
                }
                Some(super::gate::Gated::Deny(why)) => {
                    write(child, driver.answer(&request_id, Answer::Deny(&why)));
                    return;
                }
                None => {}
            }
            let key = crate::grants::grant_key(settings.driver, &tool, &input);
            match t.spend_grant(&tool, key.as_deref(), &settings.work_folder) {
                None => {}
                Some(granted_by) => {
                    let item = crate::grants::granted_item(&tool, &granted_by);
                    let answer = if t.post(item, Some(&st.turn_id)).await.is_ok() {
                        Answer::Approve
                    } else {
                        // The grant is spent either way: never spendable twice.
                        Answer::Unanswered(
                            "the approval could not be recorded on the thread; a person did approve this call, retry it",
                        )
                    };
                    write(child, driver.answer(&request_id, answer));
                    return;
                }
            }
            let mut p = Prompt::approval(format!("prm_{}", worker::new_ulid()), &tool, &question)
                .with_grant_key(key);
            if session_option {
                p = p.with_session_option();
            }
            ask(t, settings, driver, child, st, request_id, p).await;
        }
        AgentEvent::Question {
            request_id,
            questions,
        } => {
            let p = Prompt {
                prompt_id: format!("prm_{}", worker::new_ulid()),
                kind: "ask_user_question".into(),
                questions,
            };
            ask(t, settings, driver, child, st, request_id, p).await;
        }
        other => {
            if let Some(item) = items::agent_item(&other) {
                emit(t, st, item).await;
            }
        }
    }
}

fn write(child: &process::Child, lines: Vec<String>) {
    for l in &lines {
        let _ = child.write_stdin(l);
    }
}

/// Put a prompt to the person: post it, and hold the agent's request open until the answer.
async fn ask(
    t: &Rc<Thread>,
    settings: &Settings,
    driver: &mut dyn Driver,
    child: &process::Child,
    st: &mut TurnState,
    request_id: String,
    p: Prompt,
) {
    let item = (
        json!([{"type": "text", "text": p.text()}]),
        p.pending_metadata(),
    );
    let posted = match st.post_failure {
        Some(_) => None,
        None => t.post(item, Some(&st.turn_id)).await.ok(),
    };
    let Some(stored) = posted else {
        // Nobody can answer a question that was never shown.
        log(
            Level::Warning,
            "pending_prompt_post_failed",
            Some(&t.alias),
            json!({}),
        );
        let why = "the question could not be delivered to a person (nobody refused); retry";
        write(child, driver.answer(&request_id, Answer::Unanswered(why)));
        return;
    };
    // The agent asked again while a person had not answered its earlier request (codex can run
    // tool calls in parallel): that request gets an answer too, never silence.
    if let Some(earlier) = t.held_request_id() {
        let why = "a newer request replaced this one before a person answered (nobody refused); retry it if it is still needed";
        write(child, driver.answer(&earlier, Answer::Unanswered(why)));
    }
    t.cancel_prompt("superseded").await;
    let asked_at = stored
        .get("created_at")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    // Held wait begins: what led to the question is consumed, so a restart does not replay it
    // as the answer; and the slot goes back to the pool, since a person may take a long time
    // and other threads should not wait for them.
    let parked = settings.wait == "parked";
    if parked {
        // Parked: the prompt stays open with no agent waiting on it (as after a restart), the
        // agent is told nobody refused and is stopped, and the answer starts the next turn.
        write(
            child,
            driver.answer(&request_id, Answer::Unanswered(prompt::PARK_NOTICE)),
        );
        st.parked = true;
        log(
            Level::Info,
            "thread_parked",
            Some(&t.alias),
            json!({"turn_id": st.turn_id, "kind": p.kind, "prompt_id": p.prompt_id}),
        );
    }
    if !parked {
        // The agent process lives on while it waits, without a slot: the worker-wide registry
        // bounds how many do (the oldest is demoted to a park past the cap).
        let (subject, _) = p.subject_and_key();
        log(
            Level::Info,
            "prompt_held",
            Some(&t.alias),
            json!({"turn_id": st.turn_id, "prompt_id": p.prompt_id, "kind": p.kind,
                   "subject": subject}),
        );
        st.held = Some(held_waits::begin(&t.alias));
    }
    t.hold_prompt(
        OpenPrompt {
            prompt: p,
            request_id: (!parked).then_some(request_id),
            asked_at,
        },
        &st.boundary,
    );
    st.slot = None;
    t.row("active (prompt)");
    // A reply may already be on the thread.
    t.nudge();
}

/// Post one emission of the turn; after the first failure the rest of the turn is dropped and
/// the turn fails at its end.
pub async fn emit(t: &Rc<Thread>, st: &mut TurnState, item: items::Item) {
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
    driver: &mut dyn Driver,
    child: &process::Child,
    st: &mut TurnState,
) {
    if !t.held_prompt_answered() {
        return;
    }
    let Some((open, answers, msg)) = t.resolve_prompt(Some(&st.turn_id)).await else {
        return;
    };
    // The wait is over: it leaves the registry before queueing for a slot.
    st.held = None;
    // Answered: the agent continues, so it needs its slot again (FIFO behind other threads).
    if st.slot.is_none() {
        st.slot = Some(super::turn::wait_for_slot(t).await);
    }
    let request_id = open.request_id.unwrap_or_default();
    let denial;
    let answer = if open.prompt.kind == "approval" {
        if prompt::for_session(&answers) {
            Answer::ApproveForSession
        } else if prompt::approved(&answers) {
            Answer::Approve
        } else {
            denial = prompt::denial_for_agent(&msg.text);
            Answer::Deny(&denial)
        }
    } else {
        Answer::Answers(&answers)
    };
    write(child, driver.answer(&request_id, answer));
    t.queue_answer_files(&msg);
    // The answer was read; with nothing else queued, the turn has consumed up to it.
    if let Some(b) = t.consumed_through_answer() {
        st.boundary = b;
    }
    t.row("active (turn)");
}
