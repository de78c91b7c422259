//! In-process admin handle: the operations the HTTP admin API exposes, for
//! embedders (tests, `blobhub-worker demo`). Admin writes bypass session and
//! revision state checks, but still stamp times and emit events like the API.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

use crate::User;
use crate::error::ApiError;
use crate::faults::Faults;
use crate::shared::{RequestRecord, Shared, lock};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CreateSession {
    pub org_id: Option<String>,
    pub blob_id: Option<String>,
    pub revision_id: Option<String>,
    pub session_id: Option<String>,
    pub alias: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionIds {
    pub org_id: String,
    pub blob_id: String,
    pub revision_id: String,
    pub session_id: String,
}

#[derive(Clone)]
pub struct Admin {
    pub(crate) shared: Arc<Shared>,
}

impl Admin {
    /// Creates a session (and its org/blob/revision as needed; a new revision
    /// is `draft`/`ready` and becomes the blob's default). Missing ids are generated.
    pub fn create_session(&self, req: CreateSession) -> Result<SessionIds, ApiError> {
        self.shared
            .mutate(|st| Ok((st.create_session(&req)?, true)))
    }

    /// The session as `get_session` shows it.
    pub fn session(&self, session_id: &str) -> Option<Value> {
        self.shared
            .read(|st| st.sessions.get(session_id).map(|s| s.to_json()))
    }

    pub fn sessions(&self) -> Vec<Value> {
        self.shared
            .read(|st| st.sessions.values().map(|s| s.to_json()).collect())
    }

    /// Create-or-overwrite an object as `as_user` (keeps thread items; emits `session_object_modified`).
    pub fn upload_object(
        &self,
        session_id: &str,
        alias: &str,
        value: Value,
        as_user: &str,
    ) -> Result<(), ApiError> {
        self.shared
            .mutate(|st| Ok((st.upload_object(session_id, alias, value, as_user)?, true)))
    }

    /// Posts an item authored by user id `as_user`, with the API's validation
    /// (64 KiB cap, file blocks) but not its session/revision state checks.
    pub fn post_item(
        &self,
        session_id: &str,
        alias: &str,
        content: Value,
        metadata: Option<Value>,
        as_user: &str,
    ) -> Result<Value, ApiError> {
        self.shared.mutate(|st| {
            Ok((
                st.post_item(session_id, alias, content, metadata, None, as_user)?,
                true,
            ))
        })
    }

    /// [`Admin::post_item`], but listings leave the item out for `hidden_for` (the platform's
    /// listings are eventually consistent). The `session_thread_item_posted` event is emitted at
    /// once, as the platform emits it when the item is stored.
    pub fn post_item_hidden(
        &self,
        session_id: &str,
        alias: &str,
        content: Value,
        as_user: &str,
        hidden_for: std::time::Duration,
    ) -> Result<Value, ApiError> {
        self.shared.mutate(|st| {
            let item = st.post_item(session_id, alias, content, None, None, as_user)?;
            let id = item["id"].as_str().unwrap_or_default().to_owned();
            st.hidden_until
                .insert(id, std::time::Instant::now() + hidden_for);
            Ok((item, true))
        })
    }

    /// Stores a session file as `as_user`, as `upload_session_file` would (4 MiB cap; emits
    /// `session_object_modified` with `type: "file"`). Returns the object as the API shows it.
    pub fn upload_file(
        &self,
        session_id: &str,
        alias: &str,
        name: &str,
        content_type: &str,
        bytes: &[u8],
        as_user: &str,
    ) -> Result<Value, ApiError> {
        self.shared.mutate(|st| {
            Ok((
                st.upload_file(session_id, alias, name, content_type, bytes, as_user)?,
                true,
            ))
        })
    }

    /// The bytes of a `file` object; `None` when absent or not a file.
    pub fn file_bytes(&self, session_id: &str, alias: &str) -> Option<Vec<u8>> {
        self.shared.read(|st| {
            st.sessions
                .get(session_id)
                .and_then(|s| s.objects.get(alias))
                .and_then(|o| o.file_bytes())
        })
    }

    /// A thread's items, ascending; empty when the session or object is absent.
    pub fn items(&self, session_id: &str, alias: &str) -> Vec<Value> {
        self.shared.read(|st| {
            st.sessions
                .get(session_id)
                .and_then(|s| s.objects.get(alias))
                .map(|o| o.items.clone())
                .unwrap_or_default()
        })
    }

    /// `(alias, value)` of every object, by alias.
    pub fn objects(&self, session_id: &str) -> Vec<(String, Value)> {
        self.shared.read(|st| {
            st.sessions
                .get(session_id)
                .map(|s| {
                    s.objects
                        .values()
                        .map(|o| (o.alias.clone(), o.value.clone()))
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    /// An object's value.
    pub fn object(&self, session_id: &str, alias: &str) -> Option<Value> {
        self.shared.read(|st| {
            st.sessions
                .get(session_id)
                .and_then(|s| s.objects.get(alias))
                .map(|o| o.value.clone())
        })
    }

    pub fn events(&self, session_id: &str) -> Vec<Value> {
        self.shared.read(|st| {
            st.sessions
                .get(session_id)
                .map(|s| s.events.clone())
                .unwrap_or_default()
        })
    }

    /// Deletes an object (emits `session_object_deleted`).
    pub fn delete_object(&self, session_id: &str, alias: &str) -> Result<(), ApiError> {
        self.shared
            .mutate(|st| Ok((st.delete_object(session_id, alias)?, true)))
    }

    /// Sets `open`/`closing`/`closed`/`deleting`/`deleted`, emitting `session_<status>` (none for `open`).
    pub fn set_session_status(&self, session_id: &str, status: &str) -> Result<(), ApiError> {
        self.shared
            .mutate(|st| Ok((st.set_session_status(session_id, status)?, true)))
    }

    /// `closing` then `closed`, with both events.
    pub fn close_session(&self, session_id: &str) -> Result<(), ApiError> {
        self.set_session_status(session_id, "closing")?;
        self.set_session_status(session_id, "closed")
    }

    /// `deleting` then `deleted`, with both events.
    pub fn delete_session(&self, session_id: &str) -> Result<(), ApiError> {
        self.set_session_status(session_id, "deleting")?;
        self.set_session_status(session_id, "deleted")
    }

    pub fn set_revision(
        &self,
        revision_id: &str,
        phase: Option<&str>,
        status: Option<&str>,
    ) -> Result<(), ApiError> {
        self.shared
            .mutate(|st| Ok((st.set_revision(revision_id, phase, status)?, true)))
    }

    pub fn revision(&self, revision_id: &str) -> Option<Value> {
        self.shared
            .read(|st| st.revisions.get(revision_id).map(|r| r.to_json()))
    }

    /// Adds a user (or replaces the one with the same id); its key works at once.
    pub fn add_user(&self, user: User) {
        let _ = self.shared.mutate(|st| {
            st.add_user(user);
            Ok(((), true))
        });
    }

    pub fn users(&self) -> Vec<User> {
        self.shared.read(|st| st.users.clone())
    }

    /// Every `/v1` request so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.requests).clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }

    /// Sets the fault rule for a command name, `users_me`, `get_revision` or `*` (any request).
    pub fn set_faults(&self, command: &str, faults: Faults) {
        lock(&self.shared.faults).set(command, faults);
    }

    pub fn faults(&self) -> HashMap<String, Faults> {
        lock(&self.shared.faults).rules()
    }

    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// `false`: connections accepted from now on end after one response (`Connection: close`),
    /// like servers that keep no connection alive; the client opens a new one per request.
    pub fn set_keep_alive(&self, keep_alive: bool) {
        self.shared
            .keep_alive
            .store(keep_alive, std::sync::atomic::Ordering::Relaxed);
    }

    /// From now on `upload_session_file` refuses these content types with
    /// `unsupported_file_type` (HTTP 415), as the platform does for types it does not accept.
    pub fn refuse_file_types(&self, types: &[&str]) {
        self.shared
            .mutate(|st| {
                st.refused_file_types = types.iter().map(|t| t.to_string()).collect();
                Ok(((), false))
            })
            .expect("a setting cannot fail");
    }

    /// Reseeds the fault RNG so rates below 1.0 repeat exactly.
    pub fn set_fault_seed(&self, seed: u64) {
        lock(&self.shared.faults).seed(seed);
    }

    /// A receiver that changes on every state change and every logged request.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.subscribe()
    }

    /// Waits until `pred` holds (re-checked after every change); false on timeout.
    pub async fn wait_for<F: FnMut(&Admin) -> bool>(&self, timeout: Duration, mut pred: F) -> bool {
        let mut rx = self.shared.subscribe();
        let wait = async {
            loop {
                // Mark the current version seen *before* checking, so a change
                // landing between the check and the await is not missed.
                rx.borrow_and_update();
                if pred(self) {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok() && pred(self)
    }
}
