//! `thread_mirror`: the example job type for authors.
//!
//! It mirrors every thread of its section's session into `threads/<alias>.md` in its state folder
//! and keeps the files current by following the session's event feed. It uses only the public SDK:
//! the session API (read-only), the feed, the state folder, status rows and logs.
//!
//! ```yaml
//! sections:
//!   - job_type: thread_mirror
//!     session: {org_id: ..., blob_id: ..., revision_id: ..., session_id: ...}
//! ```

use std::collections::BTreeSet;

use blobhub_worker_sdk::serde_json::{Value, json};
use blobhub_worker_sdk::session::{ApiError, Page, Session};
use blobhub_worker_sdk::{self as sdk, Either, JobType, job, log::Level, state, status};

struct ThreadMirror;

/// The file that holds the feed cursor between restarts.
const CURSOR_FILE: &str = "cursor";

impl JobType for ThreadMirror {
    fn describe() -> job::Descriptor {
        job::Descriptor {
            name: "thread_mirror".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            summary: "Mirrors every thread of a session into Markdown files in its state folder"
                .into(),
            capabilities: vec![job::Capability::Session],
        }
    }

    /// The host hands over the session target (`section.target`) and has already refused a
    /// section whose `session` block lacks a key; what is left is a job type's own rule: one
    /// mirror per session.
    fn validate(sections: Vec<job::Section>) -> Vec<job::SectionCheck> {
        let mut seen = BTreeSet::new();
        sections
            .into_iter()
            .map(|section| {
                let mut diagnostics = Vec::new();
                let Some(target) = &section.target else {
                    return job::SectionCheck {
                        index: section.index,
                        state_key: None,
                        diagnostics: vec![sdk::diagnostic(
                            "MISSING_SESSION_KEYS",
                            "the section names no session",
                            Some(format!("sections[{}].session", section.index)),
                        )],
                    };
                };
                let key = [
                    &target.org_id,
                    &target.blob_id,
                    &target.revision_id,
                    &target.session,
                ]
                .map(String::as_str)
                .join("\n");
                if !seen.insert(key) {
                    diagnostics.push(sdk::diagnostic(
                        "DUPLICATE_SECTION_TARGET",
                        "another thread_mirror section mirrors the same session",
                        Some(format!("sections[{}].session", section.index)),
                    ));
                }
                let state_key = diagnostics.is_empty().then(|| state_key(&target.session));
                job::SectionCheck {
                    index: section.index,
                    state_key,
                    diagnostics,
                }
            })
            .collect()
    }

    async fn run(_section: job::Section) -> job::Outcome {
        match sdk::race(mirror(), sdk::shutdown()).await {
            Either::Left(outcome) => outcome,
            Either::Right(()) => job::Outcome {
                code: None,
                message: "shutdown".into(),
            },
        }
    }
}

sdk::export_job_type!(ThreadMirror);

/// `<session_id>` with anything outside `[A-Za-z0-9._-]` replaced, at most 128 characters.
fn state_key(session_id: &str) -> String {
    session_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(128)
        .collect()
}

fn failed(code: &str, error: &ApiError) -> job::Outcome {
    status::set_section("failed", &format!("{code}: {error}"));
    job::Outcome {
        code: Some(code.into()),
        message: error.to_string(),
    }
}

async fn mirror() -> job::Outcome {
    let session = Session;
    if let Err(e) = session.get().await {
        return failed("SESSION_UNREACHABLE", &e);
    }
    status::set_section("attached", "mirroring threads");
    // Start the feed before the first sweep so nothing that happens during the sweep is missed.
    let cursor = std::fs::read_to_string(CURSOR_FILE).ok();
    let subscription = sdk::feed::follow(cursor.as_deref());
    let aliases = match all_aliases(&session).await {
        Ok(aliases) => aliases,
        Err(e) => return failed("SESSION_UNREACHABLE", &e),
    };
    // One task per thread: a slow thread does not hold up the others.
    let tasks: Vec<_> = aliases
        .into_iter()
        .map(|a| sdk::spawn(mirror_thread(a)))
        .collect();
    for task in tasks {
        task.await;
    }
    loop {
        let batch = match sdk::next_batch(&subscription).await {
            Ok(batch) => batch,
            Err(e @ (ApiError::AuthInvalid | ApiError::CommandFailed(_))) => {
                return failed("SESSION_UNREACHABLE", &e);
            }
            Err(e) => {
                sdk::log_event(
                    Level::Warning,
                    "feed_failed",
                    None,
                    &json!({"error": e.to_string()}),
                );
                continue;
            }
        };
        let mut touched = BTreeSet::new();
        for event in &batch.events {
            let event: Value = sdk::serde_json::from_str(event).unwrap_or(Value::Null);
            let kind = event["type"].as_str().unwrap_or("");
            match kind {
                "session_closed" | "session_deleting" | "session_deleted" => {
                    status::set_section("detached", kind);
                    return job::Outcome {
                        code: Some("SESSION_CLOSED".into()),
                        message: kind.into(),
                    };
                }
                "session_object_modified" | "session_thread_item_posted" => {
                    let object = &event["session_object"];
                    let is_thread = object["type"].as_str().is_none_or(|t| t == "thread");
                    if let Some(alias) = object["alias"].as_str()
                        && is_thread
                    {
                        touched.insert(alias.to_owned());
                    }
                }
                _ => {}
            }
        }
        let tasks: Vec<_> = touched
            .into_iter()
            .map(|a| sdk::spawn(mirror_thread(a)))
            .collect();
        for task in tasks {
            task.await;
        }
        // Persist the cursor only once the batch is handled: a crash replays it (idempotent).
        if let Err(e) = state::write_atomic(CURSOR_FILE, batch.cursor.as_bytes()) {
            sdk::log_event(
                Level::Error,
                "cursor_write_failed",
                None,
                &json!({"error": e}),
            );
        }
    }
}

/// Every object alias of the session, across pages.
async fn all_aliases(session: &Session) -> Result<Vec<String>, ApiError> {
    let mut aliases = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = session
            .list_objects(None, cursor.as_deref(), Some(1000))
            .await?;
        let objects = page["objects"].as_array().cloned().unwrap_or_default();
        for object in &objects {
            let is_thread = object["type"].as_str().is_none_or(|t| t == "thread");
            if let Some(alias) = object["alias"].as_str()
                && is_thread
            {
                aliases.push(alias.to_owned());
            }
        }
        cursor = page["cursor"]
            .as_str()
            .filter(|c| !c.is_empty())
            .map(str::to_owned);
        if objects.is_empty() || cursor.is_none() {
            return Ok(aliases);
        }
    }
}

/// Re-render one thread's Markdown file from its items.
async fn mirror_thread(alias: String) {
    let session = Session;
    let mut items = Vec::new();
    let mut page = Page {
        limit: Some(1000),
        ..Page::ascending()
    };
    loop {
        match session.list_items(&alias, &page).await {
            Ok(answer) => {
                let batch = answer["items"].as_array().cloned().unwrap_or_default();
                let next = answer["cursor"]
                    .as_str()
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned);
                let done = batch.is_empty() || next.is_none();
                items.extend(batch);
                if done {
                    break;
                }
                page.cursor = next;
            }
            // Not a thread (or gone): nothing to mirror.
            Err(e) => {
                sdk::log_event(
                    Level::Debug,
                    "thread_skipped",
                    Some(&alias),
                    &json!({"error": e.to_string()}),
                );
                return;
            }
        }
    }
    let markdown = render(&alias, &items);
    let path = format!("threads/{}.md", file_name(&alias));
    match state::write_atomic(&path, markdown.as_bytes()) {
        Ok(()) => {
            status::set_thread(&status::ThreadRow {
                thread: alias.clone(),
                state: "mirrored".into(),
                agent: String::new(),
                session_id: String::new(),
                detail: format!("{} items", items.len()),
                last_event: format!("wrote {path}"),
                prompt: None,
                error: None,
            });
            sdk::log_event(
                Level::Info,
                "thread_mirrored",
                Some(&alias),
                &json!({"items": items.len(), "path": path}),
            );
        }
        Err(e) => sdk::log_event(
            Level::Error,
            "thread_write_failed",
            Some(&alias),
            &json!({"error": e}),
        ),
    }
}

/// Aliases contain `/`; flatten them into one file name.
fn file_name(alias: &str) -> String {
    alias
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn render(alias: &str, items: &[Value]) -> String {
    let mut out = format!("# {alias}\n");
    for item in items {
        let when = item["created_at"].as_str().unwrap_or("");
        let who = item
            .pointer("/metadata/author")
            .or_else(|| item.get("created_by"))
            .and_then(Value::as_str)
            .unwrap_or("");
        out.push_str(&format!("\n## {when} {who}\n\n"));
        for block in item["content"].as_array().into_iter().flatten() {
            match block["text"].as_str() {
                Some(text) => {
                    out.push_str(text);
                    out.push('\n');
                }
                None => out.push_str(&format!("```json\n{block}\n```\n")),
            }
        }
    }
    out
}
