//! Local state through the `state` import: YAML records written atomically, append-only logs.
//! The state folder is preopened as `/`, so reads use plain file APIs.

use std::collections::HashSet;

use blobhub_worker_sdk::serde_json::{self, Value};
use blobhub_worker_sdk::state;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::records::{ThreadRecord, thread_dir};

pub fn read_yaml<T: DeserializeOwned>(path: &str) -> Option<T> {
    let text = std::fs::read_to_string(format!("/{path}")).ok()?;
    serde_yaml::from_str(&text).ok()
}

pub fn write_yaml<T: Serialize>(path: &str, value: &T) -> Result<(), String> {
    let text = serde_yaml::to_string(value).map_err(|e| format!("{path}: {e}"))?;
    state::write_atomic(path, text.as_bytes())
}

pub fn append(path: &str, line: &str) -> Result<(), String> {
    state::append_line(path, line)
}

pub fn thread_yaml(alias: &str) -> String {
    format!("{}/thread.yaml", thread_dir(alias))
}

pub fn thread_log(alias: &str) -> String {
    format!("{}/logs/thread.log", thread_dir(alias))
}

pub fn stderr_log(alias: &str) -> String {
    format!("{}/logs/agent-stderr.log", thread_dir(alias))
}

/// The thread's record, if one exists for exactly this alias (a record of a different alias —
/// possible on case-insensitive file systems — is ignored).
pub fn load_thread(alias: &str) -> Option<ThreadRecord> {
    read_yaml::<ThreadRecord>(&thread_yaml(alias)).filter(|r| r.alias == alias)
}

/// Every `metadata.post_id` in the thread's log: the items this worker posted (or was about to
/// post — the log is written first) on the thread, across restarts.
pub fn load_post_ids(alias: &str) -> HashSet<String> {
    let Ok(text) = std::fs::read_to_string(format!("/{}", thread_log(alias))) else {
        return HashSet::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            v.pointer("/metadata/post_id")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect()
}
