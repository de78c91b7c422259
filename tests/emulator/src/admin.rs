//! In-process admin handle: the same operations the HTTP admin API exposes.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::User;

/// An error from the emulator, shaped like the platform's failure envelope.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub command: Option<String>,
    /// 0 when the connection was dropped without an answer.
    pub status: u16,
    pub user_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    pub latency_ms: u64,
    pub rate_5xx: f64,
    pub rate_429: f64,
    pub retry_after_s: u64,
    pub rate_drop: f64,
    pub drop_after_apply: bool,
    pub times: Option<u32>,
}

#[derive(Clone)]
pub struct Admin {}

impl Admin {
    pub fn create_session(&self, req: CreateSession) -> Result<SessionIds, ApiError> {
        let _ = req;
        todo!()
    }
    pub fn upload_object(
        &self,
        session_id: &str,
        alias: &str,
        value: Value,
        as_user: &str,
    ) -> Result<(), ApiError> {
        let _ = (session_id, alias, value, as_user);
        todo!()
    }
    pub fn post_item(
        &self,
        session_id: &str,
        alias: &str,
        content: Value,
        metadata: Option<Value>,
        as_user: &str,
    ) -> Result<Value, ApiError> {
        let _ = (session_id, alias, content, metadata, as_user);
        todo!()
    }
    pub fn items(&self, session_id: &str, alias: &str) -> Vec<Value> {
        let _ = (session_id, alias);
        todo!()
    }
    pub fn objects(&self, session_id: &str) -> Vec<(String, Value)> {
        let _ = session_id;
        todo!()
    }
    pub fn object(&self, session_id: &str, alias: &str) -> Option<Value> {
        let _ = (session_id, alias);
        todo!()
    }
    pub fn events(&self, session_id: &str) -> Vec<Value> {
        let _ = session_id;
        todo!()
    }
    pub fn delete_object(&self, session_id: &str, alias: &str) -> Result<(), ApiError> {
        let _ = (session_id, alias);
        todo!()
    }
    pub fn set_session_status(&self, session_id: &str, status: &str) -> Result<(), ApiError> {
        let _ = (session_id, status);
        todo!()
    }
    pub fn set_revision(
        &self,
        revision_id: &str,
        phase: Option<&str>,
        status: Option<&str>,
    ) -> Result<(), ApiError> {
        let _ = (revision_id, phase, status);
        todo!()
    }
    pub fn add_user(&self, user: User) {
        let _ = user;
        todo!()
    }
    pub fn requests(&self) -> Vec<RequestRecord> {
        todo!()
    }
    pub fn clear_requests(&self) {
        todo!()
    }
    pub fn set_faults(&self, command: &str, faults: Faults) {
        let _ = (command, faults);
        todo!()
    }
    pub fn clear_faults(&self) {
        todo!()
    }
    pub fn set_fault_seed(&self, seed: u64) {
        let _ = seed;
        todo!()
    }
    pub async fn wait_for<F: FnMut(&Admin) -> bool>(&self, timeout: Duration, pred: F) -> bool {
        let _ = (timeout, pred);
        todo!()
    }
}
