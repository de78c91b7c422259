//! One job thread: its local record, its state machine (docs/session-agent-harness.md) and what it posts.
//!
//! The section calls [`evaluate`] whenever the envelope may have changed and [`Thread::nudge`]
//! when items were posted; everything that talks to the agent runs in the thread's own task
//! (turn.rs), so a slow thread never holds up another.

use std::cell::{Cell, RefCell};
use std::collections::{HashSet, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use blobhub_worker_sdk::serde_json::{Value, json};
use blobhub_worker_sdk::session::ApiError;
use blobhub_worker_sdk::{self as sdk, JoinHandle, log::Level, process, status};

use super::ctx::{Ctx, ItemPages, log, new_post_id, persistent, post_retrying};
use super::store;
use super::sync::Notify;
use super::turn;

mod recovery;
use crate::classify::{Envelope, with_state};
use crate::cursor::ItemCursor;
use crate::items::{self, Item};
use crate::prompt::{self, Prompt};
use crate::records::ThreadRecord;
use crate::settings::{self, Failure, Settings};
use crate::truncate;

/// How long after its creation an item may become visible in listings (the platform's listings
/// are eventually consistent; its SDK allows 5 s) plus a margin: a post of ours this old means
/// every item created before it is visible.
pub const LATE_VISIBILITY: Duration = Duration::from_secs(crate::cursor::OVERLAP_SECS as u64 + 1);

/// The top-level field the host sets on a listed item it could not parse (it keeps the item's
/// `id` and `created_at`, so the item can be skipped in order).
pub const UNREADABLE_MARK: &str = "unreadable";

/// A person's message, queued for the next turn.
#[derive(Debug, Clone)]
pub struct Msg {
    pub item_id: String,
    pub text: String,
    /// `metadata.answers`, when the message carried a structured answer.
    pub answers: Option<Value>,
    /// The item's text and file blocks in order (crate::attachments); the turn renders these
    /// when the message carries files, else `text`.
    pub blocks: Vec<crate::attachments::Block>,
}

impl Msg {
    /// The message with its words replaced by `text` (a resume prompt) and its files kept.
    pub fn with_text(self, text: String) -> Msg {
        use crate::attachments::Block;
        let mut blocks = vec![Block::Text(text.clone())];
        blocks.extend(
            self.blocks
                .into_iter()
                .filter(|b| matches!(b, Block::File(_))),
        );
        Msg {
            text,
            blocks,
            ..self
        }
    }
}

/// The open prompt of a thread. `request_id` is the agent's pending request when a live agent
/// process is blocked on it (a held wait); `None` for a prompt adopted after a restart.
#[derive(Debug, Clone)]
pub struct OpenPrompt {
    pub prompt: Prompt,
    pub request_id: Option<String>,
    /// `created_at` of the `pending_prompt` item: only messages after it answer the prompt (the
    /// reference takes the first message after a restart even if it predates the question).
    pub asked_at: String,
}

struct Live {
    /// Asks the task to stop: a running turn interrupts its agent and closes the turn first.
    stop: Notify,
    handle: JoinHandle<()>,
}

pub struct Thread {
    pub alias: String,
    pub ctx: Rc<Ctx>,
    rec: RefCell<ThreadRecord>,
    /// Post ids this worker wrote on the thread (loaded from the thread log at start).
    own: RefCell<HashSet<String>>,
    fetch: RefCell<ItemCursor>,
    inbox: RefCell<VecDeque<Msg>>,
    /// The first message that arrived while a prompt was open: its answer.
    answer: RefCell<Option<Msg>>,
    prompt: RefCell<Option<OpenPrompt>>,
    settings: RefCell<Option<Settings>>,
    nudge: Notify,
    live: RefCell<Option<Live>>,
    /// Our `active` envelope write has landed for the current run.
    wire_active: Cell<bool>,
    failing: Cell<bool>,
    /// The thread's task was asked to stop: nothing waits out a commit any more.
    stopping: Cell<bool>,
    /// An agent turn is running (see [`TurnRunning`]).
    turn_running: Cell<bool>,
    /// Moves whenever `turn_running` does.
    turn_changes: Notify,
    /// Our posts that landed (when, id, `created_at`), oldest first, until they are old enough
    /// to anchor the fetch cursor (see [`Thread::ingest`]).
    posted: RefCell<VecDeque<(Instant, String, String)>>,
    /// The state word the dashboard row shows now (re-rendered when `outstanding` changes).
    row_state: RefCell<String>,
}

/// Marks a thread's agent turn as running for as long as it lives (every way out of a turn,
/// including the task being cancelled, drops it).
pub struct TurnRunning(Rc<Thread>);

impl TurnRunning {
    pub fn start(t: &Rc<Thread>) -> TurnRunning {
        t.turn_running.set(true);
        t.turn_changes.notify();
        t.sync_activity();
        TurnRunning(Rc::clone(t))
    }
}

impl Drop for TurnRunning {
    fn drop(&mut self) {
        self.0.turn_running.set(false);
        self.0.turn_changes.notify();
        self.0.sync_activity();
    }
}

/// How a thread's task starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `pending` → `active`.
    Activate,
    /// An `active` thread this process does not run yet.
    Recover,
}

/// How a [`Thread::try_ingest`] went: it decides when the thread looks again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    Yes,
    Failed,
    /// Refused before it was sent (the section's request queue was full).
    Throttled,
}

impl Thread {
    pub fn new(ctx: Rc<Ctx>, alias: &str) -> Rc<Thread> {
        let rec = store::load_thread(alias).unwrap_or_else(|| {
            let mut r = ThreadRecord {
                alias: alias.to_string(),
                session: ctx.session_block.clone(),
                ..Default::default()
            };
            r.agent.usage_total = json!({});
            r
        });
        Rc::new(Thread {
            alias: alias.to_string(),
            rec: RefCell::new(rec),
            own: RefCell::new(store::load_post_ids(alias)),
            fetch: RefCell::new(ItemCursor::default()),
            inbox: RefCell::new(VecDeque::new()),
            answer: RefCell::new(None),
            prompt: RefCell::new(None),
            settings: RefCell::new(None),
            nudge: Notify::default(),
            live: RefCell::new(None),
            wire_active: Cell::new(false),
            failing: Cell::new(false),
            stopping: Cell::new(false),
            turn_running: Cell::new(false),
            turn_changes: Notify::default(),
            row_state: RefCell::new(String::new()),
            posted: RefCell::new(VecDeque::new()),
            ctx,
        })
    }

    /// Tell the section whether this thread keeps it active: a turn running that is not held
    /// on a prompt.
    pub fn sync_activity(&self) {
        let prompt_open = self.prompt.borrow().is_some();
        self.ctx
            .thread_activity(&self.alias, self.turn_running.get(), prompt_open);
    }

    pub fn is_live(&self) -> bool {
        self.live
            .borrow()
            .as_ref()
            .is_some_and(|l| !l.handle.is_finished())
    }

    /// Persist the record (atomically). A failed write is logged; callers that must not proceed
    /// without it check the result.
    pub fn save(&self) -> Result<(), String> {
        let r = store::write_yaml(&store::thread_yaml(&self.alias), &*self.rec.borrow());
        if let Err(e) = &r {
            log(
                Level::Error,
                "thread_state_write_failed",
                Some(&self.alias),
                json!({"error": e}),
            );
        }
        r
    }

    /// The settings the thread was activated with.
    pub fn settings(&self) -> Option<Settings> {
        self.settings.borrow().clone()
    }

    /// The agent session the next turn resumes (empty: a new one).
    pub fn agent_session_id(&self) -> String {
        self.rec.borrow().agent.agent_session_id.clone()
    }

    /// The agent session's cumulative token counts after the last settled turn, when its agent
    /// reports them.
    pub fn usage_total(&self) -> Option<crate::agent::Usage> {
        crate::agent::Usage::from_json(&self.rec.borrow().agent.usage_total)
    }

    /// Record the thread active locally (before the envelope says so). `fresh` clears the last
    /// error (an activation, not a recovery).
    pub fn set_active_locally(&self, fresh: bool) -> Result<(), String> {
        {
            let mut rec = self.rec.borrow_mut();
            rec.agent.state = "active".into();
            if fresh {
                rec.agent.error = Default::default();
                // A new run: a grant of the previous one does not carry over.
                rec.agent.grant = None;
            }
        }
        self.save()
    }

    /// Our `active` envelope write has landed for this run.
    pub fn set_wire_active(&self) {
        self.wire_active.set(true);
    }

    /// A turn was in flight when the previous run ended.
    pub fn has_turn_in_flight(&self) -> bool {
        self.rec.borrow().turn.is_some()
    }

    /// Fetch from where the agent last consumed.
    pub fn fetch_from_consumed(&self) {
        let from = self.rec.borrow().items.last_consumed.clone();
        self.fetch.replace(from);
    }

    /// Tell the thread's task that items may have arrived.
    pub fn nudge(&self) {
        self.nudge.notify();
    }

    /// The nudge counter, to wait for the next nudge with [`Thread::nudged_since`].
    pub fn nudge_generation(&self) -> u64 {
        self.nudge.generation()
    }

    pub async fn nudged_since(&self, seen: u64) {
        self.nudge.changed_since(seen).await
    }

    /// An adopted prompt (its agent process is gone) got its answer: resolve it and queue the
    /// answer as the next turn's first message.
    pub async fn resolve_adopted_prompt(&self) {
        let adopted = self
            .prompt
            .borrow()
            .as_ref()
            .is_some_and(|p| p.request_id.is_none());
        if !adopted || self.answer.borrow().is_none() {
            return;
        }
        if let Some((open, answers, msg)) = self.resolve_prompt(None).await {
            // Approved while no agent waited: the agent's next call of that kind is approved
            // once, without asking again (persisted at once).
            if open.prompt.kind == "approval" && prompt::approved(&answers) {
                let (subject, key) = open.prompt.subject_and_key();
                // A request that named no call records no grant (crate::grants).
                if !subject.is_empty() && key.is_some() {
                    self.rec.borrow_mut().agent.grant = Some(crate::grants::record(
                        &subject,
                        &open.prompt.prompt_id,
                        key.as_deref(),
                    ));
                    let _ = self.save();
                }
            }
            let text = prompt::resume_text(&open.prompt.summary(), &answers);
            self.inbox.borrow_mut().push_front(msg.with_text(text));
        }
    }

    /// Spend the one-shot grant if it covers this request: cleared and persisted before the
    /// call is approved, so it can never be spent twice. Returns the prompt that granted it.
    pub fn spend_grant(
        &self,
        subject: &str,
        key: Option<&str>,
        work_folder: &str,
    ) -> Option<String> {
        let granted_by = {
            let rec = self.rec.borrow();
            crate::grants::matches(rec.agent.grant.as_ref()?, subject, key, work_folder)?
        };
        self.rec.borrow_mut().agent.grant = None;
        // Not persisted: not spent (a person is asked instead).
        self.save().ok()?;
        log(
            Level::Info,
            "approval_grant_consumed",
            Some(&self.alias),
            json!({"subject": subject, "granted_by": granted_by}),
        );
        Some(granted_by)
    }

    /// An answer is waiting for a prompt (delivered, or to be resolved, shortly).
    pub fn answer_waiting(&self) -> bool {
        self.answer.borrow().is_some()
    }

    /// Every queued message (one turn's input, see guest/files.rs), with the fetch position as
    /// the turn's boundary; `None` when nothing is queued.
    pub fn take_turn_input(&self) -> Option<(Vec<Msg>, ItemCursor, Vec<String>)> {
        let messages: Vec<Msg> = self.inbox.borrow_mut().drain(..).collect();
        if messages.is_empty() {
            return None;
        }
        let ids = messages.iter().map(|m| m.item_id.clone()).collect();
        Some((messages, self.fetch.borrow().clone(), ids))
    }

    /// Record a turn as in flight before its agent starts; returns the session it resumes.
    pub fn begin_turn(&self, turn_id: &str, boundary: &ItemCursor) -> Result<String, String> {
        let resume = {
            let mut rec = self.rec.borrow_mut();
            rec.turn = Some(crate::records::TurnRecord {
                turn_id: turn_id.to_string(),
                boundary: boundary.clone(),
                agent_started: false,
            });
            rec.agent.agent_session_id.clone()
        };
        self.save().map(|()| resume)
    }

    /// A prompt is open on the thread.
    pub fn has_prompt(&self) -> bool {
        self.prompt.borrow().is_some()
    }

    /// The agent answered after it was given the turn (persisted once: see
    /// [`crate::records::TurnRecord::agent_started`]).
    pub fn mark_turn_started(&self) {
        let changed = match self.rec.borrow_mut().turn.as_mut() {
            Some(turn) if !turn.agent_started => {
                turn.agent_started = true;
                true
            }
            _ => false,
        };
        if changed {
            let _ = self.save();
        }
    }

    /// The agent named its session: persisted at once, so a restart resumes it.
    pub fn set_agent_session(&self, id: &str) {
        self.rec.borrow_mut().agent.agent_session_id = id.to_string();
        let _ = self.save();
    }

    /// A live agent waits on `open`: record it, with everything up to `boundary` consumed (so a
    /// restart does not replay what led to the question as its answer).
    pub fn hold_prompt(&self, open: OpenPrompt, boundary: &ItemCursor) {
        self.prompt.replace(Some(open));
        self.answer.replace(None);
        // A held prompt is idle: the answer must reach the agent quickly.
        self.sync_activity();
        self.rec.borrow_mut().items.last_consumed = boundary.clone();
        let _ = self.save();
    }

    /// The agent request a held prompt stands for (its agent is waiting on it).
    pub fn held_request_id(&self) -> Option<String> {
        self.prompt
            .borrow()
            .as_ref()
            .and_then(|p| p.request_id.clone())
    }

    /// The held prompt's agent is being stopped (its wait was demoted to a park): the prompt
    /// stays open with no agent waiting on it, as after a restart, so its answer starts the next
    /// turn. Returns the agent's request it stood for and the prompt.
    pub fn demote_prompt(&self) -> Option<(String, Prompt)> {
        let mut open = self.prompt.borrow_mut();
        let open = open.as_mut()?;
        let request_id = open.request_id.take()?;
        Some((request_id, open.prompt.clone()))
    }

    /// A held prompt (its agent is waiting) has an answer waiting to be delivered.
    pub fn held_prompt_answered(&self) -> bool {
        self.prompt
            .borrow()
            .as_ref()
            .is_some_and(|p| p.request_id.is_some())
            && self.answer.borrow().is_some()
    }

    /// The files of an answer delivered to a waiting agent: its tool result cannot carry them,
    /// so they are queued as a message of their own, with a line saying why.
    pub fn queue_answer_files(&self, msg: &Msg) {
        if let Some(files) = answer_files(msg) {
            log(
                Level::Info,
                "answer_files_queued",
                Some(&self.alias),
                json!({"item_id": msg.item_id, "files": files.blocks.len() - 1}),
            );
            self.inbox.borrow_mut().push_back(files);
        }
    }

    /// After a delivered answer: with nothing else queued, the turn has consumed everything
    /// fetched so far, and this is its new boundary.
    pub fn consumed_through_answer(&self) -> Option<ItemCursor> {
        self.inbox
            .borrow()
            .is_empty()
            .then(|| self.fetch.borrow().clone())
    }

    /// A turn ended (completed or interrupted): its messages are consumed and it is no longer in
    /// flight.
    pub fn finish_turn(
        &self,
        session_id: &str,
        boundary: &ItemCursor,
        usage_total: Option<&crate::agent::Usage>,
    ) -> Result<(), String> {
        {
            let mut rec = self.rec.borrow_mut();
            rec.agent.agent_session_id = session_id.to_string();
            if let Some(u) = usage_total {
                rec.agent.usage_total = u.to_json();
            }
            rec.items.last_consumed = boundary.clone();
            rec.turn = None;
        }
        self.save()
    }

    /// Update the dashboard row.
    pub fn row(&self, state: &str) {
        self.row_state.replace(state.to_string());
        let rec = self.rec.borrow();
        let settings = self.settings.borrow();
        let error = rec
            .agent
            .error
            .code
            .as_ref()
            .map(|c| match &rec.agent.error.message {
                Some(m) if !m.is_empty() => format!("{c}: {m}"),
                _ => c.clone(),
            });
        status::set_thread(&status::ThreadRow {
            thread: self.alias.clone(),
            state: state.to_string(),
            agent: rec.workspace.agent_type.clone(),
            session_id: rec.agent.agent_session_id.clone(),
            detail: {
                let detail = settings.as_ref().map(Settings::detail).unwrap_or_default();
                if rec.outstanding.is_empty() {
                    detail
                } else {
                    format!("{detail} · retrying {}", rec.outstanding)
                }
            },
            last_event: rec.last_event.clone(),
            prompt: self.prompt.borrow().as_ref().map(|p| p.prompt.summary()),
            error: if state == "failed" { error } else { None },
        });
    }

    /// Post an item on this thread with the posting discipline: post id, full copy in the local
    /// log first, truncation to the budget, idempotent post. Returns the stored item.
    pub async fn post(&self, item: Item, turn_id: Option<&str>) -> Result<Value, Failure> {
        self.post_reporting(item, turn_id, true).await
    }

    /// [`Thread::post`] for the last words of a stopped turn: a refusal is not reported to the
    /// section (the session refusing writes is often why the turn stopped, and the section
    /// decides about that itself).
    pub async fn post_quietly(&self, item: Item, turn_id: Option<&str>) -> Result<Value, Failure> {
        self.post_reporting(item, turn_id, false).await
    }

    async fn post_reporting(
        &self,
        item: Item,
        turn_id: Option<&str>,
        report_refusal: bool,
    ) -> Result<Value, Failure> {
        let (mut content, mut metadata) = item;
        let post_id = new_post_id();
        metadata["post_id"] = json!(post_id);
        if let Some(t) = turn_id {
            metadata["turn_id"] = json!(t);
        }
        let line = json!({"content": content, "metadata": metadata}).to_string();
        if let Err(e) = store::append(&store::thread_log(&self.alias), &line) {
            log(
                Level::Warning,
                "thread_log_write_failed",
                Some(&self.alias),
                json!({"error": e}),
            );
        }
        self.own.borrow_mut().insert(post_id);
        let local_log = format!("{}/{}", self.ctx.job_label, store::thread_log(&self.alias));
        if let Err(t) = truncate::truncate(&mut content, &mut metadata, &local_log) {
            return Err(Failure::new(
                "THREAD_ITEM_TOO_LARGE",
                format!(
                    "item of {} bytes exceeds the cap after truncation (see {local_log})",
                    t.size
                ),
            ));
        }
        let posted = loop {
            let r = post_retrying(&self.ctx.session, &self.alias, &content, &metadata).await;
            // Refused, never applied: the same post (same post id) is sent again after the commit.
            if matches!(&r, Err(e) if super::attach::not_ready(e)) && self.wait_out_commit().await {
                continue;
            }
            break r;
        };
        match posted {
            Ok(stored) => {
                let mut rec = self.rec.borrow_mut();
                if let (Some(id), Some(at)) = (
                    stored.get("id").and_then(Value::as_str),
                    stored.get("created_at").and_then(Value::as_str),
                ) {
                    rec.items.last_posted.advance(id, at);
                    rec.items.last_posted.recent.clear();
                    self.posted.borrow_mut().push_back((
                        Instant::now(),
                        id.to_string(),
                        at.to_string(),
                    ));
                }
                if metadata.get("type").and_then(Value::as_str) != Some("turn_end") {
                    let text = items::text_of(&content);
                    rec.last_event = text.chars().take(200).collect();
                }
                Ok(stored)
            }
            Err(e) => {
                if report_refusal {
                    self.ctx.check_refusal(&e);
                }
                Err(Failure::new(
                    "THREAD_POST_FAILED",
                    format!("could not post an item: {e}"),
                ))
            }
        }
    }

    /// [`Thread::ingest`], logging a failure. A failed fetch leaves the fetch cursor where it
    /// was, so the next attempt asks for the same items again.
    pub async fn try_ingest(&self) -> Fetched {
        match self.ingest().await {
            Ok(()) => Fetched::Yes,
            // The host refused to queue the request (this section has many in flight, e.g.
            // hundreds of threads answered at once): it never ran, and the queue drains in
            // moments.
            Err(ApiError::Refused(m)) if m.starts_with("QUOTA_REQUESTS") => {
                log(
                    Level::Debug,
                    "ingest_throttled",
                    Some(&self.alias),
                    json!({"error": m}),
                );
                Fetched::Throttled
            }
            Err(e) => {
                log(
                    Level::Warning,
                    "ingest_failed",
                    Some(&self.alias),
                    json!({"error": e.to_string()}),
                );
                Fetched::Failed
            }
        }
    }

    /// Fetch the items posted since the fetch cursor and route the people's messages: the first
    /// one after a prompt opened becomes its answer, the others are queued for the next turn.
    pub async fn ingest(&self) -> Result<(), ApiError> {
        // Our posts old enough that everything created before them is visible by now: the
        // newest of them may anchor the cursor once this fetch has been read.
        let ripe = {
            let mut posted = self.posted.borrow_mut();
            let mut ripe = None;
            while posted
                .front()
                .is_some_and(|(at, _, _)| at.elapsed() >= LATE_VISIBILITY)
            {
                ripe = posted
                    .pop_front()
                    .map(|(_, id, created_at)| (id, created_at));
            }
            ripe
        };
        let since = self.fetch.borrow().created_since();
        // Page by page: a long thread is never held whole (the cursor moves item by item, so a
        // failure after some pages asks again from there).
        let mut pages = ItemPages::new(since);
        let mut unreadable = Vec::new();
        let mut failed = None;
        loop {
            let page = match pages.next(&self.ctx.session, &self.alias).await {
                Ok(Some(page)) => page,
                Ok(None) => break,
                Err(e) => {
                    // The unreadable items of the pages already taken are still reported.
                    failed = Some(e);
                    break;
                }
            };
            for item in page {
                let id = item
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let at = item
                    .get("created_at")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                if id.is_empty() || !self.fetch.borrow().is_new(&id, &at) {
                    continue;
                }
                if items::is_own(&item, self.ctx.user_id(), &self.own.borrow()) {
                    self.fetch.borrow_mut().note(&id, &at);
                    self.replay_answer(&item);
                    continue;
                }
                self.fetch.borrow_mut().advance(&id, &at);
                if let Some(why) = item.get(UNREADABLE_MARK).and_then(Value::as_str) {
                    unreadable.push((id, why.to_string()));
                    continue;
                }
                let answers = item
                    .pointer("/metadata/answers")
                    .filter(|a| a.as_array().is_some_and(|l| !l.is_empty()))
                    .cloned();
                let text = match items::inbound_text(&item) {
                    Some(t) => t,
                    None if answers.is_some() => String::new(),
                    None => continue,
                };
                let answers_prompt = self.prompt.borrow().as_ref().is_some_and(|p| {
                    p.asked_at.is_empty()
                        || crate::timestamp::cmp(&at, &p.asked_at) == std::cmp::Ordering::Greater
                });
                let msg = Msg {
                    item_id: id,
                    text,
                    answers,
                    blocks: crate::attachments::blocks(&item),
                };
                if answers_prompt && self.answer.borrow().is_none() {
                    self.answer.replace(Some(msg));
                } else {
                    self.inbox.borrow_mut().push_back(msg);
                }
            }
        }
        if let Some((id, at)) = ripe.filter(|_| failed.is_none()) {
            self.fetch.borrow_mut().advance(&id, &at);
        }
        // Permanent: the same bytes parse no better next time. The item is skipped, and the
        // thread says so (the person can post it again in another form).
        for (id, why) in unreadable {
            log(
                Level::Warning,
                "item_unreadable",
                Some(&self.alias),
                json!({"code": "ITEM_UNREADABLE", "item_id": id, "error": why}),
            );
            let text =
                format!("ITEM_UNREADABLE: item {id} cannot be parsed and was skipped ({why})");
            let _ = self.post(items::status("error", &text), None).await;
        }
        failed.map_or(Ok(()), Err)
    }

    /// A `pending_prompt_resolved` we posted, met again when items are replayed after a
    /// restart: its answer message must not reach the agent as an ordinary message. Answered
    /// inside a turn (`turn_id`), the agent already had it — drop it; answered while no agent was
    /// waiting (an adopted prompt), it becomes the resume message it was before the restart.
    fn replay_answer(&self, item: &Value) {
        let meta = item.get("metadata").unwrap_or(&Value::Null);
        let mut inbox = self.inbox.borrow_mut();
        match prompt::replayed(meta) {
            prompt::Replayed::Unrelated => {}
            // The agent had the answer's words; its files went as a message of their own, which
            // this replay must not lose (the crash may have come before their turn).
            prompt::Replayed::Drop(id) => {
                let Some(at) = inbox.iter().position(|m| m.item_id == id) else {
                    return;
                };
                match answer_files(&inbox[at]) {
                    Some(files) => inbox[at] = files,
                    None => {
                        inbox.remove(at);
                    }
                }
            }
            prompt::Replayed::Resume(id, text) => {
                if let Some(m) = inbox.iter_mut().find(|m| m.item_id == id) {
                    *m = m.clone().with_text(text);
                }
            }
        }
    }

    /// Resolve the open prompt with the waiting answer: post `pending_prompt_resolved`, and only
    /// once that landed close the prompt. Returns the prompt and its answer set.
    pub async fn resolve_prompt(
        &self,
        turn_id: Option<&str>,
    ) -> Option<(OpenPrompt, Vec<Value>, Msg)> {
        let open = self.prompt.borrow().clone()?;
        let msg = self.answer.borrow().clone()?;
        let answers = open.prompt.answers(&msg.text, msg.answers.as_ref());
        let mut metadata = open.prompt.answered_metadata(&answers);
        // Extension: which message answered, so a restart can tell it from an ordinary one.
        metadata["answer_item_id"] = json!(msg.item_id);
        let item = (
            json!([{"type": "text", "text": prompt::answered_text(&answers)}]),
            metadata,
        );
        match self.post(item, turn_id).await {
            Ok(_) => {
                self.prompt.replace(None);
                self.answer.replace(None);
                self.sync_activity();
                Some((open, answers, msg))
            }
            Err(f) => {
                // The prompt stays open; the answer is offered again on the next ingest tick.
                log(
                    Level::Warning,
                    "pending_prompt_resolve_post_failed",
                    Some(&self.alias),
                    json!({"error": f.message}),
                );
                None
            }
        }
    }

    /// [`super::attach::wait_out_commit`] for this thread's writes, given up when the thread is
    /// being stopped.
    async fn wait_out_commit(&self) -> bool {
        super::attach::wait_out_commit(&self.ctx, Some(&self.alias), || self.stopping.get()).await
    }

    /// Cancel the open prompt (the record is cleared even if the post fails).
    pub async fn cancel_prompt(&self, reason: &str) {
        let Some(open) = self.prompt.replace(None) else {
            return;
        };
        self.answer.replace(None);
        self.sync_activity();
        let item = (
            json!([{"type": "text", "text": prompt::cancelled_text(reason)}]),
            open.prompt.cancelled_metadata(reason),
        );
        if let Err(f) = self.post(item, None).await {
            log(
                Level::Warning,
                "pending_prompt_cancel_post_failed",
                Some(&self.alias),
                json!({"error": f.message}),
            );
        }
    }

    /// The signal a running turn watches to interrupt its agent; `None` when no task runs.
    pub fn stop_signal(&self) -> Option<Notify> {
        self.live.borrow().as_ref().map(|l| l.stop.clone())
    }

    /// Ask the thread's task to stop without waiting for it (see [`Thread::teardown`]).
    pub fn request_stop(&self) {
        if let Some(live) = self.live.borrow().as_ref() {
            self.stopping.set(true);
            live.stop.notify();
        }
    }

    /// Stop the thread's task and wait until it is gone. A running turn interrupts its agent
    /// (the agent's own interrupt, then SIGTERM, then SIGKILL) and posts its `turn_end`
    /// (`interrupted`); an idle task is dropped at once. Keeps the open prompt: a restarted
    /// worker adopts it.
    pub async fn teardown(&self) {
        let live = self.live.borrow_mut().take();
        if let Some(live) = live {
            self.stopping.set(true);
            live.stop.notify();
            live.handle.await;
        }
    }

    /// The failure path, once per run: record locally, post the reason,
    /// write the envelope `failed` (retried), post `thread_failed`, cancel the open prompt.
    pub async fn fail(&self, failure: Failure) {
        if self.failing.replace(true) {
            return;
        }
        let (code, message) = (failure.code, failure.message.clone());
        log(
            Level::Warning,
            "thread_failed",
            Some(&self.alias),
            json!({"code": code, "message": message}),
        );
        {
            let mut rec = self.rec.borrow_mut();
            rec.agent.state = "failed".into();
            rec.agent.error.code = Some(code.to_string());
            rec.agent.error.message = Some(message.clone());
            rec.last_event = format!("{code}: {message}");
        }
        let _ = self.save();
        self.row("failed");
        if code != "THREAD_POST_FAILED" && code != "THREAD_ITEM_TOO_LARGE" {
            let _ = self.post(items::failure_reason(code, &message), None).await;
        }
        self.write_state("failed").await;
        self.ctx
            .activity(items::thread_failed(&self.alias, code, &message))
            .await;
        self.cancel_prompt(&message).await;
        self.wire_active.set(false);
        self.failing.set(false);
        self.row("failed");
    }

    /// Write the envelope's control channel, keeping everything else (read-modify-write).
    /// Retried through any outage for as long as the thread's task (or the alias's task) lives,
    /// with the write recorded as outstanding in the thread's local state meanwhile, so a restart
    /// finishes it. Returns whether it landed; only a permanent refusal (the session takes no more
    /// writes, the object is gone or cannot be parsed) gives up.
    pub async fn write_state(&self, state: &str) -> bool {
        self.set_outstanding(&format!("envelope write: {state}"));
        let (ctx, alias): (&Ctx, &str) = (&self.ctx, &self.alias);
        let attempt = loop {
            let r = persistent(ctx, "envelope_write_failed", Some(alias), || async move {
                let current = ctx.session.download_value(alias).await?;
                ctx.session
                    .upload_object(alias, &with_state(&current, state))
                    .await
            })
            .await;
            // Refused during a commit (never applied): read and written again once it is over.
            if matches!(&r, Err(e) if super::attach::not_ready(e)) && self.wait_out_commit().await {
                continue;
            }
            break r;
        };
        let landed = match attempt {
            Ok(_) => true,
            Err(e) => {
                self.ctx.check_refusal(&e);
                log(
                    Level::Error,
                    "envelope_write_abandoned",
                    Some(&self.alias),
                    json!({"state": state, "error": e.to_string()}),
                );
                false
            }
        };
        self.set_outstanding("");
        landed
    }

    /// Record (or clear, with "") the write this thread still owes the platform; the dashboard
    /// row shows it.
    fn set_outstanding(&self, what: &str) {
        let changed = {
            let mut rec = self.rec.borrow_mut();
            let changed = rec.outstanding != what;
            rec.outstanding = what.to_string();
            changed
        };
        if changed {
            let _ = self.save();
            let state = self.row_state.borrow().clone();
            self.row(if state.is_empty() { "idle" } else { &state });
        }
    }

    /// Start the thread's task. A stop request drops it at once when no turn runs; a running
    /// turn sees the same request, ends itself and then the task is dropped.
    fn start(self: &Rc<Self>, mode: Mode) {
        self.stopping.set(false);
        let stop = Notify::default();
        let t = Rc::clone(self);
        let s = stop.clone();
        let handle = sdk::spawn(async move {
            let stopped_outside_a_turn = async {
                s.changed_since(0).await;
                loop {
                    let seen = t.turn_changes.generation();
                    if !t.turn_running.get() {
                        return;
                    }
                    t.turn_changes.changed_since(seen).await;
                }
            };
            let _ = sdk::race(turn::run(Rc::clone(&t), mode), stopped_outside_a_turn).await;
        });
        self.live.replace(Some(Live { stop, handle }));
    }

    /// Check the settings and the agent program; a failure fails the thread.
    fn prepare(&self, env: &Envelope) -> Result<Settings, Failure> {
        let s = settings::resolve(env, &self.ctx.worker_config)?;
        match process::resolve(&s.executable) {
            Ok(_) => {}
            Err(e) => {
                let why = match e {
                    process::SpawnError::NotGranted(m) => format!("not granted: {m}"),
                    process::SpawnError::NotFound(m) => m,
                    process::SpawnError::BadDirectory(m)
                    | process::SpawnError::BadEnvironment(m)
                    | process::SpawnError::Failed(m) => m,
                };
                return Err(Failure::new(
                    "AGENT_EXECUTABLE_NOT_FOUND",
                    format!(
                        "executable '{}' for agent_type '{}' cannot be run: {why}",
                        s.executable, s.agent_type
                    ),
                ));
            }
        }
        Ok(s)
    }

    async fn begin(self: &Rc<Self>, env: &Envelope, mode: Mode) {
        self.failing.set(false);
        let mut settings = match self.prepare(env) {
            Ok(s) => s,
            Err(f) => {
                self.fail(f).await;
                return;
            }
        };
        super::files::prepare(&self.alias, &mut settings);
        if settings
            .gate
            .as_ref()
            .is_some_and(|g| g.uses_outbox() && g.outbox.is_none())
        {
            log(
                Level::Warning,
                "policy_outbox_unusable",
                Some(&self.alias),
                json!({"reason": "this thread has no usable artifacts outbox; every path counts as outside it"}),
            );
        }
        {
            let mut rec = self.rec.borrow_mut();
            rec.workspace.agent_type = settings.agent_type.clone();
            rec.workspace.work_folder = settings.work_folder.clone();
        }
        self.settings.replace(Some(settings));
        self.inbox.borrow_mut().clear();
        self.answer.replace(None);
        self.start(mode);
    }
}

/// React to the envelope's current value.
pub async fn evaluate(t: &Rc<Thread>, value: &Value) {
    let env = Envelope::parse(value);
    match env.state.as_str() {
        "pending" => {
            if t.is_live() {
                if !t.wire_active.get() {
                    // Our own activation is still on its way (waiting for a slot, or the
                    // envelope write not yet landed): this is not a restart request.
                    return;
                }
                log(Level::Info, "thread_restart", Some(&t.alias), json!({}));
                t.teardown().await;
                t.cancel_prompt("thread_restart").await;
            }
            t.wire_active.set(false);
            t.begin(&env, Mode::Activate).await;
        }
        "active" => {
            if t.is_live() {
                return;
            }
            if t.rec.borrow().agent.state == "failed" {
                // Our `failed` write did not land earlier (a restart cut it short): finish it
                // rather than resurrect the thread, and announce it, which the failure path does
                // only after the write.
                if t.write_state("failed").await {
                    let (code, message) = {
                        let rec = t.rec.borrow();
                        (
                            rec.agent.error.code.clone().unwrap_or_default(),
                            rec.agent.error.message.clone().unwrap_or_default(),
                        )
                    };
                    t.ctx
                        .activity(items::thread_failed(&t.alias, &code, &message))
                        .await;
                }
                t.row("failed");
                return;
            }
            t.begin(&env, Mode::Recover).await;
        }
        other => stop(t, other).await,
    }
}

/// A person's stop (`completed`, a user-set `failed`, or any non-actionable word).
pub async fn stop(t: &Rc<Thread>, state: &str) {
    let was_live = t.is_live();
    let local = t.rec.borrow().agent.state.clone();
    if !was_live && local != "active" {
        if local != state && !local.is_empty() {
            t.rec.borrow_mut().agent.state = state.to_string();
            let _ = t.save();
        }
        t.row(if state.is_empty() { "idle" } else { state });
        return;
    }
    t.teardown().await;
    let reason = if state.is_empty() {
        "thread_stopped".to_string()
    } else {
        format!("thread_{state}")
    };
    t.cancel_prompt(&reason).await;
    {
        let mut rec = t.rec.borrow_mut();
        rec.agent.state = state.to_string();
        rec.agent.error = Default::default();
        rec.agent.grant = None;
    }
    let _ = t.save();
    t.wire_active.set(false);
    if state == "completed" {
        t.ctx.activity(items::thread_completed(&t.alias)).await;
    }
    log(
        Level::Info,
        "thread_stopped",
        Some(&t.alias),
        json!({"state": state}),
    );
    t.row(if state.is_empty() { "stopped" } else { state });
}

/// Tear down many threads at once: every running turn is asked to stop before any is awaited,
/// so their interrupts overlap instead of adding up.
pub async fn teardown_all(threads: &[Rc<Thread>]) {
    for t in threads {
        t.request_stop();
    }
    for t in threads {
        t.teardown().await;
    }
}

/// The message carrying the files of answer `msg` to the agent's next turn, if it had any.
fn answer_files(msg: &Msg) -> Option<Msg> {
    use crate::attachments::{Block, answer_files_note};
    let files: Vec<Block> = msg
        .blocks
        .iter()
        .filter(|b| matches!(b, Block::File(_)))
        .cloned()
        .collect();
    if files.is_empty() {
        return None;
    }
    let text = answer_files_note(files.len());
    let mut blocks = vec![Block::Text(text.clone())];
    blocks.extend(files);
    Some(Msg {
        // Not the answer's own id: a replay of our resolve item drops the answer by its id (the
        // agent has it), and these files must not go with it.
        item_id: format!("{}-files", msg.item_id),
        text,
        answers: None,
        blocks,
    })
}
