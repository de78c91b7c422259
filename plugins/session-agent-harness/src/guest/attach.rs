//! Attaching a section to its session: resolve the session, take
//! or verify the `worker` object (the affinity lock), and keep its `last_seen_at` fresh.

use std::time::Duration;

use blobhub_worker_sdk::log::Level;
use blobhub_worker_sdk::serde_json::{Value, json};
use blobhub_worker_sdk::session::ApiError;
use blobhub_worker_sdk::{self as sdk, worker};

use super::ctx::{Ctx, download_retrying, log, retryable, upload_retrying};
use crate::classify::WORKER_ALIAS;
use crate::worker_object;

/// Why a section could not attach: a section code (docs/operations.md); `transient` failures are retried.
#[derive(Debug)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
    pub transient: bool,
}

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
        transient: false,
    }
}

fn unresolved(e: &ApiError) -> Refusal {
    Refusal {
        code: "SESSION_UNRESOLVED",
        message: e.to_string(),
        transient: true,
    }
}

/// Who this process is, as the `worker` object records it.
fn identity(ctx: &Ctx) -> worker_object::Identity<'_> {
    let id = &ctx.identity;
    worker_object::Identity {
        user_id: &id.user_id,
        instance_id: &id.instance_id,
        version: &id.version,
        started_at: &id.started_at,
    }
}

/// The whole `worker` value this process writes.
pub fn worker_value(ctx: &Ctx, last_seen_at: &str) -> Value {
    worker_object::value(identity(ctx), last_seen_at)
}

fn write_refusal(e: &ApiError) -> Refusal {
    match e {
        ApiError::AuthInvalid => refuse(
            "SESSION_UNREACHABLE",
            "the worker object could not be written (401/403)",
        ),
        ApiError::CommandFailed(f) if f.error == "session_not_open" => {
            refuse("SESSION_CLOSED", f.message.clone())
        }
        ApiError::CommandFailed(f) if f.error == "revision_not_writable" => {
            refuse("REVISION_NOT_WRITABLE", f.message.clone())
        }
        e if retryable(e) => unresolved(e),
        e => refuse("SESSION_NOT_FOUND", e.to_string()),
    }
}

/// `org/blob, revision R, session S` as configured, for messages that must name the ids.
fn target(ctx: &Ctx) -> String {
    let field = |k: &str| {
        ctx.session_block
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string()
    };
    format!(
        "session `{}` of revision `{}` in blob `{}/{}`",
        field("session_id"),
        field("revision_id"),
        field("org_id"),
        field("blob_id")
    )
}

/// Why `get_session` failed, said in terms of the configured ids. The API key was accepted by
/// `GET /users/me` before any section started, so a 401/403 here is about what the key may see
/// (an org, blob or revision id that is wrong or not shared with this user), not about the key.
fn session_refusal(ctx: &Ctx, e: &ApiError) -> Refusal {
    let what = target(ctx);
    match e {
        ApiError::CommandFailed(f) if f.error == "revision_not_found" => refuse(
            "REVISION_NOT_FOUND",
            format!(
                "{what}: BlobHub has no such revision in that blob ({}); check revision_id, org_id and blob_id",
                f.message
            ),
        ),
        ApiError::CommandFailed(f) if f.error == "not_found" => refuse(
            "SESSION_NOT_FOUND",
            format!(
                "{what}: the revision has no such session ({}); check session_id",
                f.message
            ),
        ),
        ApiError::AuthInvalid => refuse(
            "SESSION_NOT_FOUND",
            format!(
                "{what}: BlobHub refused to read it (HTTP 401/403). The API key was accepted at start, so one of org_id, blob_id, revision_id or session_id is wrong or not visible to this user"
            ),
        ),
        ApiError::CommandFailed(f) if f.error == "revision_not_ready" => refuse(
            "REVISION_NOT_READY",
            format!("{what}: the revision is not ready ({})", f.message),
        ),
        e => refuse("SESSION_NOT_FOUND", format!("{what}: {e}")),
    }
}

/// The revision's `status` (`ready`, `committing`, ...), read afresh; `None` when it could not
/// be read (the session calls that follow then say why).
pub async fn revision_status(ctx: &Ctx) -> Option<String> {
    let v = ctx.session.get_revision().await.ok()?;
    Some(
        v.pointer("/revision/status")
            .and_then(Value::as_str)
            .unwrap_or("ready")
            .to_string(),
    )
}

/// The platform's refusal of any session command while the revision is not `ready`.
pub const REVISION_NOT_READY: &str = "revision_not_ready";

/// Whether `e` is [`REVISION_NOT_READY`].
pub fn not_ready(e: &ApiError) -> bool {
    matches!(e, ApiError::CommandFailed(f) if f.error == REVISION_NOT_READY)
}

/// How often a write refused during a commit looks at the revision again.
const COMMIT_WAIT: Duration = Duration::from_secs(2);

/// A write was refused because the revision is not ready: while it is being committed, wait for
/// the commit to end rather than lose the write (the section quiesces meanwhile once its event
/// poll is refused too). Returns whether to send the write again: false when the revision is in
/// another state, or once `stopping` says the writer is being stopped.
pub async fn wait_out_commit(ctx: &Ctx, thread: Option<&str>, stopping: impl Fn() -> bool) -> bool {
    log(Level::Info, "write_waiting_for_commit", thread, json!({}));
    loop {
        if stopping() {
            return false;
        }
        match revision_status(ctx).await.as_deref() {
            Some("ready") => return true,
            // Unreadable now: the section decides about outages; look again.
            Some("committing") | None => sdk::sleep(COMMIT_WAIT).await,
            Some(_) => return false,
        }
    }
}

/// A commit of the revision is in progress: the platform takes no session command until it is
/// `ready` again, so the section waits (not a refusal: it attaches once the commit is done).
pub fn committing() -> Refusal {
    Refusal {
        code: "REVISION_COMMITTING",
        message: "the revision is being committed; attaching once it is ready".into(),
        transient: true,
    }
}

/// Attach: returns the resolved session id.
pub async fn attach(ctx: &Ctx) -> Result<String, Refusal> {
    if revision_status(ctx).await.as_deref() == Some("committing") {
        return Err(committing());
    }
    let session = match ctx.session.get().await {
        Ok(v) => v,
        Err(e) if retryable(&e) => return Err(unresolved(&e)),
        // The commit began since the revision was read.
        Err(ApiError::CommandFailed(f))
            if f.error == REVISION_NOT_READY
                && revision_status(ctx).await.as_deref() == Some("committing") =>
        {
            return Err(committing());
        }
        Err(e) => return Err(session_refusal(ctx, &e)),
    };
    let id = session
        .pointer("/session/id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if id.is_empty() {
        return Err(refuse(
            "SESSION_NOT_FOUND",
            "get_session answered without a session id",
        ));
    }
    let status = session
        .pointer("/session/status")
        .and_then(Value::as_str)
        .unwrap_or("");
    if status != "open" {
        return Err(refuse(
            "SESSION_CLOSED",
            format!("session {id} is {status:?}, not open"),
        ));
    }
    // List first: downloading a missing object answers 403, which says nothing.
    let mut exists = false;
    let mut cursor: Option<String> = None;
    loop {
        let page = match ctx
            .session
            .list_objects(Some(WORKER_ALIAS), cursor.as_deref(), Some(1000))
            .await
        {
            Ok(v) => v,
            Err(e) if retryable(&e) => return Err(unresolved(&e)),
            Err(e) => return Err(refuse("SESSION_NOT_FOUND", e.to_string())),
        };
        exists |= page
            .get("objects")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|o| o.get("alias").and_then(Value::as_str) == Some(WORKER_ALIAS));
        match page.get("cursor").and_then(Value::as_str) {
            Some(c) if !c.is_empty() && !exists => cursor = Some(c.to_string()),
            _ => break,
        }
    }
    if exists {
        let value = match download_retrying(&ctx.session, WORKER_ALIAS).await {
            Ok(v) => v,
            Err(e) if retryable(&e) => return Err(unresolved(&e)),
            Err(e) => return Err(refuse("SESSION_NOT_FOUND", e.to_string())),
        };
        let owner = value
            .pointer("/thread/metadata/user/user_id")
            .and_then(Value::as_str)
            .unwrap_or("");
        if value.get("type").and_then(Value::as_str) != Some("thread") || owner.is_empty() {
            return Err(refuse(
                "SECTION_WORKER_OBJECT_MALFORMED",
                "the session's `worker` object is not a thread with metadata.user.user_id",
            ));
        }
        if owner != ctx.user_id() {
            return Err(refuse(
                "SESSION_OWNED_BY_DIFFERENT_USER",
                format!(
                    "the session is attached to a worker of user {owner}; this worker acts as {}",
                    ctx.user_id()
                ),
            ));
        }
    }
    let now = worker::now_utc();
    let mut value = worker_value(ctx, &ctx.identity.started_at);
    value["thread"]["metadata"]["instance"]["last_seen_at"] = json!(now);
    upload_retrying(&ctx.session, WORKER_ALIAS, &value)
        .await
        .map_err(|e| write_refusal(&e))?;
    Ok(id)
}

/// Keep-alive: restamp `last_seen_at`, only while the object is still ours. Any guard failure
/// skips the write (it never recreates the object: deletion is how a person detaches us).
pub async fn heartbeat(ctx: &Ctx) {
    let downloaded = ctx
        .session
        .download_object_as::<worker_object::Downloaded>(WORKER_ALIAS)
        .await;
    if downloaded.as_ref().ok().and_then(|d| d.thread_owner()) != Some(ctx.user_id()) {
        return;
    }
    let value = worker_object::value_text(identity(ctx), &worker::now_utc());
    if let Err(e) = ctx.session.upload_object_text(WORKER_ALIAS, &value).await {
        super::ctx::log(
            blobhub_worker_sdk::log::Level::Warning,
            "keepalive_failed",
            None,
            json!({"error": e.to_string()}),
        );
    }
}
