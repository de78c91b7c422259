//! Attaching a section to its session (wire-protocol §8.2, seed 004): resolve the session, take
//! or verify the `worker` object (the affinity lock), and keep its `last_seen_at` fresh.

use blobhub_worker_sdk::serde_json::{Value, json};
use blobhub_worker_sdk::session::ApiError;
use blobhub_worker_sdk::worker;

use super::ctx::{Ctx, download_retrying, retryable, upload_retrying};
use crate::classify::WORKER_ALIAS;

/// Why a section could not attach: a §7.3 code; `transient` failures are retried.
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

/// The whole `worker` value this process writes.
pub fn worker_value(ctx: &Ctx, last_seen_at: &str) -> Value {
    let id = &ctx.identity;
    json!({
        "type": "thread",
        "thread": {
            "attributes": {"name": "worker", "description": "BlobHub worker activity log"},
            "metadata": {
                "user": {"user_id": id.user_id},
                "instance": {
                    "instance_id": id.instance_id,
                    "version": id.version,
                    "started_at": id.started_at,
                    "last_seen_at": last_seen_at,
                    "status": "attached",
                }
            }
        }
    })
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

/// Attach: returns the resolved session id.
pub async fn attach(ctx: &Ctx) -> Result<String, Refusal> {
    let session = match ctx.session.get().await {
        Ok(v) => v,
        Err(e) if retryable(&e) => return Err(unresolved(&e)),
        Err(e) => return Err(refuse("SESSION_NOT_FOUND", e.to_string())),
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
    let Ok(value) = ctx.session.download_value(WORKER_ALIAS).await else {
        return;
    };
    let owner = value
        .pointer("/thread/metadata/user/user_id")
        .and_then(Value::as_str);
    if value.get("type").and_then(Value::as_str) != Some("thread") || owner != Some(ctx.user_id()) {
        return;
    }
    let value = worker_value(ctx, &worker::now_utc());
    if let Err(e) = ctx.session.upload_object(WORKER_ALIAS, &value).await {
        super::ctx::log(
            blobhub_worker_sdk::log::Level::Warning,
            "keepalive_failed",
            None,
            json!({"error": e.to_string()}),
        );
    }
}
