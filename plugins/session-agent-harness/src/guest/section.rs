//! A section's life: attach, discover the threads, follow the event feed, keep the `worker`
//! object fresh, and end on shutdown, a terminal session event or an external detach.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;
use std::time::Duration;

use blobhub_worker_sdk::serde_json::{Value, json};
use blobhub_worker_sdk::session::ApiError;
use blobhub_worker_sdk::{self as sdk, Either, job, log::Level, status, worker};

use super::attach::{self, Refusal};
use super::ctx::{Ctx, download_retrying, log, retryable};
use super::store;
use super::thread::{self, Thread};
use crate::classify::{self, WORKER_ALIAS};
use crate::items;
use crate::records::{Attachment, CodeMessage, Events, SectionRecord};

const HEARTBEAT: Duration = Duration::from_secs(30);
const REATTACH: Duration = Duration::from_secs(30);
const SECTION_YAML: &str = "section.yaml";

struct Section {
    ctx: Rc<Ctx>,
    threads: RefCell<BTreeMap<String, Rc<Thread>>>,
    /// Aliases known not to be job threads (skipped at discovery only).
    not_mine: RefCell<HashSet<String>>,
    quiesced: std::cell::Cell<bool>,
    record: RefCell<SectionRecord>,
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
    let s = Section {
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
        quiesced: std::cell::Cell::new(false),
    };
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
                if let Either::Right(()) = sdk::race(sdk::sleep(REATTACH), sdk::shutdown()).await {
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
    async fn announce(&self, alias: &str) {
        let first = {
            let mut r = self.record.borrow_mut();
            let first = r.registered.insert(alias.to_string());
            if first {
                self.save_record(&r);
            }
            first
        };
        if first {
            self.ctx.activity(items::thread_registered(alias)).await;
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

    async fn follow(&self) -> job::Outcome {
        let cursor = Some(self.record.borrow().events.cursor.clone()).filter(|c| !c.is_empty());
        // Follow before discovering, so nothing that happens during discovery is missed.
        let sub = Rc::new(sdk::Feed::follow(cursor.as_deref()));
        self.ctx.set_feed(Rc::clone(&sub));
        self.discover().await;
        let mut next_beat = std::time::Instant::now() + HEARTBEAT;
        loop {
            let refused = self.ctx.refused.borrow_mut().take();
            if let Some((code, message)) = refused {
                return self.detach(section_code(&code), &message).await;
            }
            let wait = next_beat.saturating_duration_since(std::time::Instant::now());
            let next = sdk::race(sub.next(), sdk::race(sdk::sleep(wait), sdk::shutdown())).await;
            match next {
                Either::Right(Either::Right(())) => {
                    thread::teardown_all(&self.all()).await;
                    return outcome(None, "shutdown");
                }
                Either::Right(Either::Left(())) => {
                    attach::heartbeat(&self.ctx).await;
                    next_beat = std::time::Instant::now() + HEARTBEAT;
                }
                Either::Left(Ok(batch)) => {
                    let mut last_at = String::new();
                    for raw in &batch.events {
                        let Ok(event) = sdk::serde_json::from_str::<Value>(raw) else {
                            continue;
                        };
                        if let Some(at) = event.get("created_at").and_then(Value::as_str) {
                            last_at = at.to_string();
                        }
                        if let Some(end) = self.dispatch(&event).await {
                            return end;
                        }
                    }
                    let mut r = self.record.borrow_mut();
                    r.events = Events {
                        last_processed_at: last_at,
                        cursor: batch.cursor,
                    };
                    self.save_record(&r);
                }
                Either::Left(Err(e)) => match &e {
                    ApiError::AuthInvalid => {
                        return self.detach("SESSION_UNREACHABLE", &e.to_string()).await;
                    }
                    ApiError::CommandFailed(f) if f.error == "session_not_open" => {
                        return self.detach("SESSION_CLOSED", &f.message).await;
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

    fn all(&self) -> Vec<Rc<Thread>> {
        self.threads.borrow().values().cloned().collect()
    }

    /// One event; `Some` ends the section.
    async fn dispatch(&self, event: &Value) -> Option<job::Outcome> {
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
        if alias == WORKER_ALIAS {
            if kind == "session_object_deleted" {
                return Some(
                    self.detach(
                        "SESSION_DETACHED_EXTERNALLY",
                        "the session's `worker` object was deleted",
                    )
                    .await,
                );
            }
            return None;
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
                self.consider(alias).await;
            }
            "session_thread_item_posted" => {
                if let Some(t) = self.threads.borrow().get(alias) {
                    t.nudge();
                }
            }
            "session_object_deleted" => {
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
            _ => {}
        }
        None
    }

    /// Download, classify, register and evaluate one alias.
    async fn consider(&self, alias: &str) {
        let value = match download_retrying(&self.ctx.session, alias).await {
            Ok(v) => v,
            Err(e) => {
                let level = if retryable(&e) {
                    Level::Warning
                } else {
                    Level::Info
                };
                log(
                    level,
                    "thread_read_refused",
                    Some(alias),
                    json!({"error": e.to_string()}),
                );
                return;
            }
        };
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
                self.announce(alias).await;
                t
            }
        };
        thread::evaluate(&t, &value).await;
    }

    /// Find the threads that exist already: active ones first (they reclaim their slots before
    /// pending ones compete), then everything else.
    async fn discover(&self) {
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
            match download_retrying(&self.ctx.session, &alias).await {
                Ok(v) if classify::is_job_thread(&v) => values.push((alias, v)),
                Ok(_) => {
                    self.not_mine.borrow_mut().insert(alias);
                }
                Err(e) => log(
                    Level::Warning,
                    "thread_read_refused",
                    Some(&alias),
                    json!({"error": e.to_string()}),
                ),
            }
        }
        values.sort_by_key(|(_, v)| classify::Envelope::parse(v).state != "active");
        for (alias, value) in values {
            let t = Thread::new(Rc::clone(&self.ctx), &alias);
            self.threads
                .borrow_mut()
                .insert(alias.clone(), Rc::clone(&t));
            self.announce(&alias).await;
            thread::evaluate(&t, &value).await;
        }
    }

    /// End the section: every thread's task and agent stops (prompts stay open on the thread).
    async fn detach(&self, code: &'static str, message: &str) -> job::Outcome {
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
