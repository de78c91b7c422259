//! A section's life: attach, discover the threads, follow the event feed, keep the `worker`
//! object fresh, and end on shutdown, a terminal session event or an external detach.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::time::Duration;

use blobhub_worker_sdk::serde_json::{Value, json};
use blobhub_worker_sdk::session::ApiError;
use blobhub_worker_sdk::{self as sdk, Either, job, log::Level, status, worker};

use super::attach::{self, Refusal};
use super::ctx::{Ctx, is_unparseable, log, persistent, retryable};
use super::store;
use super::thread::{self, Thread};
use crate::classify::{self, WORKER_ALIAS};
use crate::items;
use crate::records::{Attachment, CodeMessage, Events, SectionRecord};
use crate::settings::Failure;

const HEARTBEAT: Duration = Duration::from_secs(30);
const REATTACH: Duration = Duration::from_secs(30);
/// How often a section waiting for a commit of its revision reads the revision again (a cheap
/// read; the reference retries an attach every 30 s and never resumes a quiesced section).
const COMMIT_RECHECK: Duration = Duration::from_secs(2);
const SECTION_YAML: &str = "section.yaml";
/// The longest a feed cursor that moved only past the worker's own echoes stays unwritten
/// (see [`classify::own_echo`]): a restart replays at most this much of the feed, all of it
/// ignored again.
const ECHO_CURSOR_MAX_AGE: Duration = Duration::from_secs(600);

struct Section {
    ctx: Rc<Ctx>,
    threads: RefCell<BTreeMap<String, Rc<Thread>>>,
    /// Aliases known not to be job threads (skipped at discovery only).
    not_mine: RefCell<HashSet<String>>,
    quiesced: Cell<bool>,
    /// Quiesced because the revision is being committed: resumes once it is `ready` again.
    committing: Cell<bool>,
    /// The section is ending: alias tasks start nothing new.
    ending: Cell<bool>,
    record: RefCell<SectionRecord>,
    /// Per alias, what its task still has to do (see [`Section::schedule`]).
    /// Values discovery already read, taken by the alias's first `Read`.
    prefetched: RefCell<HashMap<String, Value>>,
    /// The generation moves with every event, so work asked for during a run is not lost.
    todo: RefCell<HashMap<String, (Todo, u64)>>,
}

/// The work an event leaves for an alias's task; a newer event replaces an older one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Todo {
    /// Read the object and act on its value.
    Read,
    /// The object is gone.
    Delete,
}

fn outcome(code: Option<&str>, message: impl Into<String>) -> job::Outcome {
    job::Outcome {
        code: code.map(str::to_string),
        message: message.into(),
    }
}

pub async fn run(section: job::Section) -> job::Outcome {
    let ctx = Rc::new(Ctx::new(&section));
    let previous: SectionRecord = store::read_yaml(SECTION_YAML).unwrap_or_default();
    let s = Rc::new(Section {
        record: RefCell::new(SectionRecord {
            name: ctx.name.clone(),
            job_type: ctx.job_type.clone(),
            session: ctx.session_block.clone(),
            attachment: Attachment::default(),
            events: previous.events,
            registered: previous.registered,
        }),
        ctx,
        threads: RefCell::new(BTreeMap::new()),
        not_mine: RefCell::new(HashSet::new()),
        quiesced: Cell::new(false),
        committing: Cell::new(false),
        ending: Cell::new(false),
        todo: RefCell::new(HashMap::new()),
        prefetched: RefCell::new(HashMap::new()),
    });
    status::set_section("attaching", "");
    // Attach, retrying failures that may pass (the reference gives up on a pinned revision).
    loop {
        match sdk::race(attach::attach(&s.ctx), sdk::shutdown()).await {
            Either::Right(()) => return outcome(None, "shutdown"),
            Either::Left(Ok(_session_id)) => break,
            Either::Left(Err(Refusal {
                code,
                message,
                transient: true,
            })) => {
                status::set_section("waiting", &format!("{code}: {message}"));
                s.set_attachment("waiting", code, &message);
                log(
                    Level::Warning,
                    "attach_deferred",
                    None,
                    json!({"code": code, "message": message}),
                );
                let wait = if code == "REVISION_COMMITTING" {
                    COMMIT_RECHECK
                } else {
                    REATTACH
                };
                if let Either::Right(()) = sdk::race(sdk::sleep(wait), sdk::shutdown()).await {
                    return outcome(None, "shutdown");
                }
            }
            Either::Left(Err(Refusal { code, message, .. })) => {
                status::set_section("refused", &format!("{code}: {message}"));
                s.set_attachment("refused", code, &message);
                log(
                    Level::Error,
                    "attach_refused",
                    None,
                    json!({"code": code, "message": message}),
                );
                return outcome(Some(code), message);
            }
        }
    }
    // Awaited, before following: whoever sees `attached` and then hands a thread off finds it
    // picked up by discovery or by the feed (the feed's starting point is fixed by the host
    // concurrently with discovery, so a hand-off during both could otherwise fall between them).
    s.ctx.activity(items::attached()).await;
    s.set_attachment("attached", "", "");
    status::set_section("attached", "");
    log(
        Level::Info,
        "attached",
        None,
        json!({"session": s.ctx.session_block}),
    );
    s.follow().await
}

impl Section {
    /// Posts `thread_registered` for `alias` unless an earlier run of this section did. The
    /// alias is recorded before the post (local state before side effects): a crash between the
    /// two loses the announcement rather than repeating it.
    fn announce(&self, alias: &str) {
        let first = {
            let mut r = self.record.borrow_mut();
            let first = r.registered.insert(alias.to_string());
            if first {
                self.save_record(&r);
            }
            first
        };
        if first {
            self.ctx.activity_detached(items::thread_registered(alias));
            log(Level::Info, "thread_registered", Some(alias), json!({}));
        } else {
            log(Level::Debug, "thread_known", Some(alias), json!({}));
        }
    }

    /// Objects deleted while no worker ran leave the registered set too: `aliases` is every alias
    /// of the section's range, as a complete listing just found them.
    fn forget_missing(&self, aliases: &[String]) {
        let mut r = self.record.borrow_mut();
        let present: HashSet<&str> = aliases.iter().map(String::as_str).collect();
        let before = r.registered.len();
        r.registered.retain(|a| present.contains(a.as_str()));
        if r.registered.len() != before {
            self.save_record(&r);
        }
    }

    /// The alias's object is gone: a thread created under it later is new.
    fn forget_registration(&self, alias: &str) {
        let mut r = self.record.borrow_mut();
        if r.registered.remove(alias) {
            self.save_record(&r);
        }
    }

    fn set_attachment(&self, state: &str, code: &str, message: &str) {
        let mut r = self.record.borrow_mut();
        r.attachment = Attachment {
            status: state.to_string(),
            attached_at: if state == "attached" {
                worker::now_utc()
            } else {
                String::new()
            },
            error: if code.is_empty() {
                CodeMessage::default()
            } else {
                CodeMessage {
                    code: Some(code.to_string()),
                    message: Some(message.to_string()),
                }
            },
        };
        self.save_record(&r);
    }

    fn save_record(&self, r: &SectionRecord) {
        if let Err(e) = store::write_yaml(SECTION_YAML, r) {
            log(
                Level::Error,
                "section_state_write_failed",
                None,
                json!({"error": e}),
            );
        }
    }

    async fn follow(self: &Rc<Self>) -> job::Outcome {
        let cursor = Some(self.record.borrow().events.cursor.clone()).filter(|c| !c.is_empty());
        // Follow before discovering, so nothing that happens during discovery is missed.
        let sub = Rc::new(sdk::Feed::follow(cursor.as_deref()));
        self.ctx.set_feed(Rc::clone(&sub));
        self.discover().await;
        let mut next_beat = std::time::Instant::now() + HEARTBEAT;
        let mut beat: Option<sdk::JoinHandle<()>> = None;
        // When the cursor was last written, and whether the record in memory is newer.
        let mut cursor_saved = std::time::Instant::now();
        let mut cursor_unsaved = false;
        loop {
            let refused = self.ctx.refused.borrow_mut().take();
            if let Some((code, message)) = refused {
                return self.detach(section_code(&code), &message).await;
            }
            let mut wait = next_beat.saturating_duration_since(std::time::Instant::now());
            if self.committing.get() {
                wait = wait.min(COMMIT_RECHECK);
            }
            let next = sdk::race(sub.next(), sdk::race(sdk::sleep(wait), sdk::shutdown())).await;
            if self.committing.get() && !matches!(next, Either::Right(Either::Right(()))) {
                self.resume_if_committed().await;
            }
            match next {
                Either::Right(Either::Right(())) => {
                    self.ending.set(true);
                    if cursor_unsaved {
                        self.save_record(&self.record.borrow());
                    }
                    thread::teardown_all(&self.all()).await;
                    return outcome(None, "shutdown");
                }
                Either::Right(Either::Left(())) => {
                    // In a task of its own: a keep-alive held up by an outage must not hold up
                    // the events. One at a time.
                    if beat.as_ref().is_none_or(|b| b.is_finished()) {
                        let ctx = Rc::clone(&self.ctx);
                        beat = Some(sdk::spawn(async move { attach::heartbeat(&ctx).await }));
                    }
                    next_beat = std::time::Instant::now() + HEARTBEAT;
                }
                Either::Left(Ok(batch)) => {
                    let mut last_at = String::new();
                    let mut only_echoes = true;
                    for raw in &batch.events {
                        let Ok(event) = sdk::serde_json::from_str::<Value>(raw) else {
                            only_echoes = false;
                            continue;
                        };
                        if let Some(at) = event.get("created_at").and_then(Value::as_str) {
                            last_at = at.to_string();
                        }
                        only_echoes &= classify::own_echo(&event);
                        if let Some(end) = self.dispatch(&event).await {
                            return end;
                        }
                    }
                    let mut r = self.record.borrow_mut();
                    r.events = Events {
                        last_processed_at: last_at,
                        cursor: batch.cursor,
                    };
                    // A batch of the worker's own echoes (every heartbeat's) changed nothing a
                    // restart must not redo, so its cursor waits for the next batch that did,
                    // the shutdown or `ECHO_CURSOR_MAX_AGE`: an idle section no longer rewrites
                    // and syncs its state file every 30 s.
                    if only_echoes && cursor_saved.elapsed() < ECHO_CURSOR_MAX_AGE {
                        cursor_unsaved = true;
                    } else {
                        self.save_record(&r);
                        cursor_saved = std::time::Instant::now();
                        cursor_unsaved = false;
                    }
                }
                Either::Left(Err(e)) => match &e {
                    ApiError::AuthInvalid => {
                        return self.detach("SESSION_UNREACHABLE", &e.to_string()).await;
                    }
                    ApiError::CommandFailed(f) if f.error == "session_not_open" => {
                        return self.detach("SESSION_CLOSED", &f.message).await;
                    }
                    ApiError::CommandFailed(f) if f.error == "revision_not_ready" => {
                        match attach::revision_status(&self.ctx).await.as_deref() {
                            Some("committing") => self.quiesce_for_commit().await,
                            // Ready again already, or unreadable now: just poll again.
                            Some("ready") | None => {}
                            Some(other) => {
                                let message = format!("the revision is {other}");
                                return self.detach("REVISION_NOT_READY", &message).await;
                            }
                        }
                    }
                    _ => log(
                        Level::Warning,
                        "event_poll_failed",
                        None,
                        json!({"error": e.to_string()}),
                    ),
                },
            }
        }
    }

    /// The revision is being committed: the platform takes no session command meanwhile. Every
    /// thread's agent is stopped (a held question stays open on the thread, as a park), local
    /// state is kept, and the section resumes once the revision is `ready` again.
    async fn quiesce_for_commit(&self) {
        if self.quiesced.get() {
            return;
        }
        self.quiesced.set(true);
        self.committing.set(true);
        let threads = self.all();
        thread::teardown_all(&threads).await;
        for t in &threads {
            t.row("quiesced");
        }
        let message = "the revision is being committed; resuming once it is ready";
        self.set_attachment("quiescing", "REVISION_COMMITTING", message);
        status::set_section("quiescing", &format!("REVISION_COMMITTING: {message}"));
        log(
            Level::Info,
            "section_quiesced",
            None,
            json!({"code": "REVISION_COMMITTING"}),
        );
    }

    /// While quiesced for a commit: once the revision is `ready`, attach again and bring the
    /// threads back (recovered from their local state and items, open questions adopted).
    async fn resume_if_committed(self: &Rc<Self>) {
        if attach::revision_status(&self.ctx).await.as_deref() != Some("ready") {
            return;
        }
        self.committing.set(false);
        self.quiesced.set(false);
        self.set_attachment("attached", "", "");
        status::set_section("attached", "");
        log(
            Level::Info,
            "section_resumed",
            None,
            json!({"after": "REVISION_COMMITTING"}),
        );
        self.discover().await;
    }

    fn all(&self) -> Vec<Rc<Thread>> {
        self.threads.borrow().values().cloned().collect()
    }

    /// One event; `Some` ends the section.
    async fn dispatch(self: &Rc<Self>, event: &Value) -> Option<job::Outcome> {
        let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "session_closing" => {
                if !self.quiesced.replace(true) {
                    let threads = self.all();
                    thread::teardown_all(&threads).await;
                    for t in &threads {
                        t.row("quiesced");
                    }
                    self.set_attachment("quiescing", "SESSION_CLOSING", "the session is closing");
                    status::set_section("quiescing", "SESSION_CLOSING: the session is closing");
                }
                return None;
            }
            "session_closed" => {
                return Some(
                    self.detach("SESSION_CLOSED", "the session was closed")
                        .await,
                );
            }
            "session_deleting" | "session_deleted" => {
                return Some(
                    self.detach("SESSION_DELETED", "the session was deleted")
                        .await,
                );
            }
            _ => {}
        }
        let alias = event
            .pointer("/session_object/alias")
            .and_then(Value::as_str)
            .unwrap_or("");
        // The worker's own echoes are ignored (the follow loop relies on it to leave their
        // cursor unwritten); what is left of the `worker` object's events is its deletion.
        if classify::own_echo(event) {
            return None;
        }
        if alias == WORKER_ALIAS {
            return Some(
                self.detach(
                    "SESSION_DETACHED_EXTERNALLY",
                    "the session's `worker` object was deleted",
                )
                .await,
            );
        }
        if self.quiesced.get() || alias.is_empty() || !classify::in_range(alias, &self.ctx.prefix) {
            return None;
        }
        if !classify::alias_is_valid(alias) {
            log(
                Level::Warning,
                "thread_alias_rejected",
                None,
                json!({"alias": alias.chars().take(300).collect::<String>()}),
            );
            return None;
        }
        match kind {
            "session_object_modified" | "session_object_created" => {
                let ty = event
                    .pointer("/session_object/type")
                    .and_then(Value::as_str);
                if ty.is_some_and(|t| t != "thread") {
                    return None;
                }
                self.schedule(alias, Todo::Read);
            }
            "session_thread_item_posted" => {
                if let Some(t) = self.threads.borrow().get(alias) {
                    t.nudge();
                }
            }
            "session_object_deleted" => self.schedule(alias, Todo::Delete),
            _ => {}
        }
        None
    }

    /// Leave `todo` for `alias`'s task, starting the task if none runs. Everything an object
    /// event causes (reads retried through an outage, activations, stops, removals) runs there,
    /// one alias at a time in event order, so the section's event loop never waits on one
    /// thread's reads, writes or posts.
    fn schedule(self: &Rc<Self>, alias: &str, todo: Todo) {
        let running = {
            let mut pending = self.todo.borrow_mut();
            let generation = pending.get(alias).map_or(0, |(_, g)| g + 1);
            pending
                .insert(alias.to_string(), (todo, generation))
                .is_some()
        };
        if running {
            return;
        }
        let s = Rc::clone(self);
        let alias = alias.to_string();
        drop(sdk::spawn(async move {
            loop {
                let Some((todo, generation)) = s.todo.borrow().get(&alias).copied() else {
                    return;
                };
                if s.ending.get() {
                    s.todo.borrow_mut().remove(&alias);
                    return;
                }
                match todo {
                    Todo::Read => s.consider(&alias).await,
                    Todo::Delete => s.remove(&alias).await,
                }
                // Done, unless an event arrived meanwhile: then its work is next.
                let mut pending = s.todo.borrow_mut();
                if pending.get(&alias).map(|(_, g)| *g) == Some(generation) {
                    pending.remove(&alias);
                    return;
                }
            }
        }));
    }

    async fn remove(&self, alias: &str) {
        self.not_mine.borrow_mut().remove(alias);
        let removed = self.threads.borrow_mut().remove(alias);
        self.forget_registration(alias);
        if let Some(t) = removed {
            t.teardown().await;
            status::remove_thread(alias);
            self.ctx.activity(items::thread_removed(alias)).await;
            log(Level::Info, "thread_removed", Some(alias), json!({}));
        }
    }

    /// Download, classify, register and evaluate one alias.
    async fn consider(&self, alias: &str) {
        let known = self.prefetched.borrow_mut().remove(alias);
        if let Some(value) = known {
            self.act_on(alias, value).await;
            return;
        }
        // Retried through any outage: a hand-off whose read fails must still be taken up once
        // the platform answers again (this task is the alias's own; nothing else waits on it).
        let read = persistent(&self.ctx, "thread_read_failed", Some(alias), || {
            self.ctx.session.download_value(alias)
        });
        let value = match read.await {
            Ok(v) => v,
            Err(e) => {
                self.unreadable(alias, &e).await;
                return;
            }
        };
        self.act_on(alias, value).await;
    }

    /// The object could not be read for good: a value that cannot be parsed stays out (or, for a
    /// thread this section runs, fails it); a refusal (e.g. the object is already gone) is noted.
    async fn unreadable(&self, alias: &str, e: &ApiError) {
        if !is_unparseable(e) {
            log(
                Level::Info,
                "thread_read_refused",
                Some(alias),
                json!({"error": e.to_string()}),
            );
            return;
        }
        let message = format!("the thread's object cannot be parsed: {e}");
        log(
            Level::Warning,
            "thread_object_unreadable",
            Some(alias),
            json!({"code": "THREAD_OBJECT_UNREADABLE", "error": e.to_string()}),
        );
        let existing = self.threads.borrow().get(alias).cloned();
        if let Some(t) = existing {
            t.teardown().await;
            t.fail(Failure::new("THREAD_OBJECT_UNREADABLE", message))
                .await;
        }
    }

    /// Classify a freshly read value, register the thread if it is new, and evaluate it.
    async fn act_on(&self, alias: &str, value: Value) {
        if !classify::is_job_thread(&value) {
            self.not_mine.borrow_mut().insert(alias.to_string());
            return;
        }
        self.not_mine.borrow_mut().remove(alias);
        let existing = self.threads.borrow().get(alias).cloned();
        let t = match existing {
            Some(t) => t,
            None => {
                let t = Thread::new(Rc::clone(&self.ctx), alias);
                self.threads
                    .borrow_mut()
                    .insert(alias.to_string(), Rc::clone(&t));
                self.announce(alias);
                t
            }
        };
        thread::evaluate(&t, &value).await;
    }

    /// Find the threads that exist already: active ones first (they reclaim their slots before
    /// pending ones compete), then everything else.
    async fn discover(self: &Rc<Self>) {
        let mut aliases = Vec::new();
        let mut listed_all = false;
        let mut cursor: Option<String> = None;
        for _ in 0..1000 {
            let prefix = Some(self.ctx.prefix.as_str()).filter(|p| !p.is_empty());
            let page = match self
                .ctx
                .session
                .list_objects(prefix, cursor.as_deref(), Some(1000))
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    log(
                        Level::Warning,
                        "discovery_failed",
                        None,
                        json!({"error": e.to_string()}),
                    );
                    break;
                }
            };
            for o in page
                .get("objects")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(a) = o.get("alias").and_then(Value::as_str)
                    && classify::in_range(a, &self.ctx.prefix)
                    && classify::alias_is_valid(a)
                {
                    aliases.push(a.to_string());
                }
            }
            match page.get("cursor").and_then(Value::as_str) {
                Some(c) if !c.is_empty() => cursor = Some(c.to_string()),
                _ => {
                    listed_all = true;
                    break;
                }
            }
        }
        if listed_all {
            self.forget_missing(&aliases);
        }
        let mut values = Vec::new();
        for alias in aliases {
            // One read each (the host already retries): an object that does not answer now is
            // read again by its own task, so one outage or bad object does not hold up the rest.
            match self.ctx.session.download_value(&alias).await {
                Ok(v) if classify::is_job_thread(&v) => values.push((alias, v)),
                Ok(_) => {
                    self.not_mine.borrow_mut().insert(alias);
                }
                Err(e) if retryable(&e) => self.schedule(&alias, Todo::Read),
                Err(e) => self.unreadable(&alias, &e).await,
            }
        }
        values.sort_by_key(|(_, v)| classify::Envelope::parse(v).state != "active");
        // Each alias's task starts in this order, so active threads take their slots first.
        for (alias, value) in values {
            self.prefetched.borrow_mut().insert(alias.clone(), value);
            self.schedule(&alias, Todo::Read);
        }
    }

    /// End the section: every thread's task and agent stops (prompts stay open on the thread).
    async fn detach(&self, code: &'static str, message: &str) -> job::Outcome {
        self.ending.set(true);
        let threads = self.all();
        thread::teardown_all(&threads).await;
        for t in &threads {
            status::remove_thread(&t.alias);
        }
        self.set_attachment("refused", code, message);
        status::set_section("refused", &format!("{code}: {message}"));
        log(
            Level::Warning,
            "detached",
            None,
            json!({"code": code, "message": message}),
        );
        outcome(Some(code), message)
    }
}

/// Section codes are a small fixed set; map an owned code back to its static name.
fn section_code(code: &str) -> &'static str {
    match code {
        "SESSION_CLOSED" => "SESSION_CLOSED",
        "REVISION_NOT_WRITABLE" => "REVISION_NOT_WRITABLE",
        _ => "SESSION_UNREACHABLE",
    }
}
