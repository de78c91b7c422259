//! Typed helpers over the JSON session calls. Every helper returns the platform's success
//! envelope parsed as JSON, or the typed [`ApiError`]. The session is always this section's own.

use serde_json::Value;

use crate::bindings::blobhub::worker::session as raw;
pub use crate::bindings::blobhub::worker::session::{ApiError, CommandFailure, Page};
use crate::wait::reply;

/// The section's session (the host binds it; there is nothing to configure).
#[derive(Debug, Clone, Copy, Default)]
pub struct Session;

async fn json(r: raw::Reply) -> Result<Value, ApiError> {
    parsed(r).await
}

/// The reply's text read into `T`.
async fn parsed<T: serde::de::DeserializeOwned>(r: raw::Reply) -> Result<T, ApiError> {
    let text = reply(r).await?;
    // The host parsed this text already; if it still cannot be parsed here, it never will be:
    // permanent, with the host's word for an unparseable success body.
    serde_json::from_str(&text).map_err(|e| {
        ApiError::CommandFailed(CommandFailure {
            status: 200,
            error: "response_unparseable".into(),
            message: format!("reply is not JSON: {e}"),
        })
    })
}

impl Page {
    /// Oldest first, the platform's default page size.
    pub fn ascending() -> Self {
        Page {
            ascending: true,
            created_since: None,
            cursor: None,
            limit: None,
        }
    }
}

impl Session {
    /// `get_session`: the envelope (`{"status":"success","session":{...}}`).
    pub async fn get(&self) -> Result<Value, ApiError> {
        json(raw::get_session()).await
    }
    /// The section's revision, read afresh: the envelope (`{"revision":{id, phase, status}}`).
    pub async fn get_revision(&self) -> Result<Value, ApiError> {
        json(raw::get_revision()).await
    }
    pub async fn list_objects(
        &self,
        prefix: Option<&str>,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Value, ApiError> {
        json(raw::list_objects(prefix, cursor, limit)).await
    }
    /// The stored value of `alias` (`object.value` of the envelope).
    pub async fn download_value(&self, alias: &str) -> Result<Value, ApiError> {
        let envelope = json(raw::download_object(alias)).await?;
        Ok(envelope
            .pointer("/object/value")
            .cloned()
            .unwrap_or(Value::Null))
    }
    pub async fn download_object(&self, alias: &str) -> Result<Value, ApiError> {
        json(raw::download_object(alias)).await
    }
    /// The envelope (`{"object": {...}}`) read straight into `T`: for a caller that needs a few
    /// of its fields, much less work than building the whole `Value` tree and dropping it.
    pub async fn download_object_as<T: serde::de::DeserializeOwned>(
        &self,
        alias: &str,
    ) -> Result<T, ApiError> {
        parsed(raw::download_object(alias)).await
    }
    pub async fn upload_object(&self, alias: &str, value: &Value) -> Result<Value, ApiError> {
        json(raw::upload_object(alias, &value.to_string())).await
    }
    /// `upload_object` of a value already serialized (JSON text; the host checks it parses).
    pub async fn upload_object_text(&self, alias: &str, value: &str) -> Result<Value, ApiError> {
        json(raw::upload_object(alias, value)).await
    }
    pub async fn delete_object(&self, alias: &str) -> Result<Value, ApiError> {
        json(raw::delete_object(alias)).await
    }
    /// Post an item; set `metadata.post_id` to make the post idempotent.
    pub async fn post_item(
        &self,
        thread: &str,
        content: &Value,
        metadata: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let metadata = metadata.map(Value::to_string);
        json(raw::post_item(
            thread,
            &content.to_string(),
            metadata.as_deref(),
        ))
        .await
    }
    pub async fn list_items(&self, thread: &str, page: &Page) -> Result<Value, ApiError> {
        json(raw::list_items(thread, page)).await
    }
    pub async fn get_item(&self, thread: &str, item_id: &str) -> Result<Value, ApiError> {
        json(raw::get_item(thread, item_id)).await
    }
    pub async fn list_events(&self, page: &Page) -> Result<Value, ApiError> {
        json(raw::list_events(page)).await
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::AuthInvalid => write!(f, "AUTH_INVALID: the platform answered 401/403"),
            ApiError::RateLimited(m) => write!(f, "RATE_LIMITED: {m}"),
            ApiError::Transient(m) => write!(f, "TRANSIENT: {m}"),
            ApiError::Network(m) => write!(f, "NETWORK: {m}"),
            ApiError::CommandFailed(c) => write!(f, "{} ({}): {}", c.error, c.status, c.message),
            ApiError::Refused(m) => write!(f, "REFUSED: {m}"),
        }
    }
}
