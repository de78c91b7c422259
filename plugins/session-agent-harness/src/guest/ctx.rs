//! What every part of a section shares: its configuration, who the worker is, and small helpers
//! for logging and for writes that must be retried.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use blobhub_worker_sdk::serde_json::{Value, json};
use blobhub_worker_sdk::session::{ApiError, Session};
use blobhub_worker_sdk::{self as sdk, job, log::Level, worker};

use crate::activity::Activity;
use crate::backoff;
use crate::items::Item;
use crate::repeats::Repeats;

pub struct Ctx {
    pub name: String,
    pub job_type: String,
    /// The section's session target and `session_prefix`, shaped as config.yaml's `session` block.
    pub session_block: Value,
    pub prefix: String,
    pub worker_config: Value,
    pub identity: worker::WorkerIdentity,
    /// `<job_type>-<state key>`: how local logs are named in truncation notices.
    pub job_label: String,
    pub session: Session,
    /// Set when a write was refused because the session no longer accepts writes; the section
    /// loop then detaches with this code.
    pub refused: RefCell<Option<(String, String)>>,
    /// Which threads keep the section active, for the feed's poll cadence.
    activity: RefCell<Activity>,
    /// The section's feed, once it follows one.
    feed: RefCell<Option<Rc<sdk::Feed>>>,
}

impl Ctx {
    pub fn new(section: &job::Section) -> Ctx {
        let settings: Value = sdk::serde_json::from_str(&section.settings).unwrap_or(Value::Null);
        let prefix = settings
            .pointer("/session/session_prefix")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        // The session target is the host's (`section.target`); the block recorded in section.yaml
        // and thread records keeps its config.yaml shape.
        let (session_id, mut session_block) = match &section.target {
            Some(t) => (
                t.session.clone(),
                json!({"org_id": t.org_id, "blob_id": t.blob_id, "revision_id": t.revision_id, "session_id": t.session}),
            ),
            None => (String::new(), json!({})),
        };
        if !prefix.is_empty() {
            session_block["session_prefix"] = json!(prefix);
        }
        Ctx {
            name: section.name.clone(),
            job_type: section.job_type.clone(),
            job_label: format!(
                "{}-{}",
                section.job_type,
                crate::sections::state_key(&session_id, &prefix)
            ),
            session_block,
            prefix,
            worker_config: sdk::serde_json::from_str(&section.worker_config).unwrap_or(Value::Null),
            identity: worker::identity(),
            session: Session,
            refused: RefCell::new(None),
            activity: RefCell::new(Activity::default()),
            feed: RefCell::new(None),
        }
    }

    /// Use `feed` for the section's activity from now on (it learns the current one).
    pub fn set_feed(&self, feed: Rc<sdk::Feed>) {
        feed.set_active(self.activity.borrow().is_active());
        self.feed.replace(Some(feed));
    }

    /// Record whether `thread` has an agent turn running and whether it waits for a person;
    /// tells the feed when the section's activity changes.
    pub fn thread_activity(&self, thread: &str, turn_running: bool, prompt_open: bool) {
        let changed = self
            .activity
            .borrow_mut()
            .update(thread, turn_running, prompt_open);
        if let (Some(active), Some(feed)) = (changed, self.feed.borrow().as_ref()) {
            feed.set_active(active);
        }
    }

    pub fn user_id(&self) -> &str {
        &self.identity.user_id
    }

    /// Note a refusal that means the session takes no more writes.
    pub fn check_refusal(&self, e: &ApiError) {
        if let ApiError::CommandFailed(f) = e {
            let code = match f.error.as_str() {
                "session_not_open" => "SESSION_CLOSED",
                "revision_not_writable" => "REVISION_NOT_WRITABLE",
                _ => return,
            };
            self.refused
                .replace(Some((code.to_string(), f.message.clone())));
        }
    }

    /// [`Ctx::activity`] in a task of its own: whoever announces does not wait for the post
    /// (an outage of the `worker` thread must not hold up a section's events or a thread).
    pub fn activity_detached(self: &Rc<Self>, item: Item) {
        let ctx = Rc::clone(self);
        drop(sdk::spawn(async move { ctx.activity(item).await }));
    }

    /// Post an activity-log item on the `worker` thread: best effort, idempotent (post id).
    pub async fn activity(&self, item: Item) {
        let (content, mut metadata) = item;
        metadata["post_id"] = json!(new_post_id());
        let posted = loop {
            let r = post_retrying(&self.session, "worker", &content, &metadata).await;
            // Refused during a commit: the same post (same post id) once it is over.
            if matches!(&r, Err(e) if super::attach::not_ready(e))
                && super::attach::wait_out_commit(self, None, || false).await
            {
                continue;
            }
            break r;
        };
        if let Err(e) = posted {
            self.check_refusal(&e);
            log(
                Level::Warning,
                "activity_post_failed",
                None,
                json!({"type": metadata["type"], "error": e.to_string()}),
            );
        }
    }
}

thread_local! {
    /// Repeated warnings held back (crate::repeats).
    static WARNED: RefCell<Repeats> = RefCell::new(Repeats::default());
}

pub fn log(level: Level, event: &str, thread: Option<&str>, mut fields: Value) {
    if matches!(level, Level::Warning) {
        let key = (event.to_string(), thread.unwrap_or("").to_string());
        match WARNED.with(|w| w.borrow_mut().admit(key, Instant::now())) {
            None => return,
            Some(0) => {}
            Some(n) => fields["repeats_not_logged"] = json!(n),
        }
    }
    sdk::log_event(level, event, thread, &fields);
}

pub fn new_post_id() -> String {
    format!("pst_{}", worker::new_ulid())
}

/// Failures worth another try: the host already retried, but a post with a post id and a whole-
/// value upload are both safe to repeat, and a few more seconds often outlast a bad patch.
pub fn retryable(e: &ApiError) -> bool {
    matches!(
        e,
        ApiError::Transient(_) | ApiError::Network(_) | ApiError::RateLimited(_)
    )
}

async fn backoff(attempt: u32) {
    sdk::sleep(Duration::from_millis(500u64 << attempt.min(5))).await;
}

/// Run `op` until it succeeds, fails for good, or has been retried `retries` times after
/// [`retryable`] failures (0.5 s, 1 s, 2 s, … apart).
pub async fn retrying<T, F, Fut>(retries: u32, mut op: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Err(e) if retryable(&e) && attempt < retries => {
                backoff(attempt).await;
                attempt += 1;
            }
            done => return done,
        }
    }
}

/// The word the host answers for a success reply whose body cannot be parsed (too deep, too big,
/// not JSON): retrying cannot help, so it is permanent for that object or listing.
pub const UNPARSEABLE: &str = "response_unparseable";

/// Whether `e` is a success reply the host could not parse.
pub fn is_unparseable(e: &ApiError) -> bool {
    matches!(e, ApiError::CommandFailed(f) if f.error == UNPARSEABLE)
}

/// A number in `[0, 1)` from the host's ULID source (its last characters are random).
fn jitter() -> f64 {
    let id = worker::new_ulid();
    let h = id
        .bytes()
        .rev()
        .take(8)
        .fold(0u64, |h, b| h.wrapping_mul(131).wrapping_add(b as u64));
    (h % 10_000) as f64 / 10_000.0
}

/// Run `op` until it succeeds or fails for good: every [`retryable`] failure is retried, with
/// [`backoff::delay`], for as long as the caller lives (a thread's task or a section's alias
/// task, both dropped on shutdown, detach or teardown). For the writes and reads a thread's
/// state depends on: giving up would leave the thread in a state nobody acts on.
pub async fn persistent<T, F, Fut>(
    ctx: &Ctx,
    what: &str,
    thread: Option<&str>,
    mut op: F,
) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let cap = backoff::cap(&ctx.worker_config);
    let mut attempt = 0u32;
    loop {
        match op().await {
            Err(e) if retryable(&e) => {
                log(
                    Level::Warning,
                    what,
                    thread,
                    json!({"attempt": attempt + 1, "error": e.to_string(), "retrying": true}),
                );
                sdk::sleep(backoff::delay(attempt, cap, jitter())).await;
                attempt = attempt.saturating_add(1);
            }
            done => return done,
        }
    }
}

/// Post an item whose metadata carries a post id; retried on transient failures. Returns the
/// stored item.
pub async fn post_retrying(
    session: &Session,
    alias: &str,
    content: &Value,
    metadata: &Value,
) -> Result<Value, ApiError> {
    let envelope = retrying(4, || session.post_item(alias, content, Some(metadata))).await?;
    Ok(envelope.get("item").cloned().unwrap_or(Value::Null))
}

/// Overwrite an object, retrying transient failures (an overwrite is idempotent).
pub async fn upload_retrying(
    session: &Session,
    alias: &str,
    value: &Value,
) -> Result<(), ApiError> {
    retrying(6, || session.upload_object(alias, value)).await?;
    Ok(())
}

/// Download an object's value, retrying transient failures.
pub async fn download_retrying(session: &Session, alias: &str) -> Result<Value, ApiError> {
    retrying(4, || session.download_value(alias)).await
}

/// A thread's items oldest first, from `created_since` when given, one page (at most
/// [`ItemPages::PAGE`] items) at a time, so that a long thread is never held whole.
pub struct ItemPages {
    since: Option<String>,
    cursor: Option<String>,
    pages: usize,
    done: bool,
}

impl ItemPages {
    /// Items asked for per page (the platform's `limit`).
    pub const PAGE: u32 = 1000;
    /// Pages read at most (a runaway guard: 200,000 items).
    const MAX_PAGES: usize = 200;

    pub fn new(since: Option<String>) -> ItemPages {
        ItemPages {
            since,
            cursor: None,
            pages: 0,
            done: false,
        }
    }

    /// The next page, `None` after the last one.
    pub async fn next(
        &mut self,
        session: &Session,
        alias: &str,
    ) -> Result<Option<Vec<Value>>, ApiError> {
        if self.done || self.pages >= Self::MAX_PAGES {
            return Ok(None);
        }
        let page = sdk::session::Page {
            ascending: true,
            created_since: self.since.clone(),
            cursor: self.cursor.clone(),
            limit: Some(Self::PAGE),
        };
        // No retries of our own: the host retries reads, and a failed ingest is tried again by
        // the thread's loop shortly after (turn.rs, `SHORT_RECHECK`).
        let mut reply = session.list_items(alias, &page).await?;
        self.pages += 1;
        match reply.get("cursor").and_then(Value::as_str) {
            Some(c) if !c.is_empty() => self.cursor = Some(c.to_string()),
            _ => self.done = true,
        }
        Ok(Some(match reply.get_mut("items").map(Value::take) {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        }))
    }

    /// [`ItemPages::next`], each page retried like [`retrying`] (a page that failed is asked for
    /// again from the same cursor).
    pub async fn next_retrying(
        &mut self,
        session: &Session,
        alias: &str,
        retries: u32,
    ) -> Result<Option<Vec<Value>>, ApiError> {
        let mut attempt = 0;
        loop {
            match self.next(session, alias).await {
                Err(e) if retryable(&e) && attempt < retries => {
                    backoff(attempt).await;
                    attempt += 1;
                }
                done => return done,
            }
        }
    }
}
