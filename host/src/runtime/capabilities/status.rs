//! `blobhub:worker/status`: rows for the dashboard and `status` views.
//!
//! Every section's rows live in one in-memory [`StatusBoard`] shared by the whole worker; readers
//! take a [`StatusBoard::snapshot`], a plain copy, so they never hold a lock while rendering.

use std::collections::BTreeMap;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use crate::runtime::quotas::clip;
use crate::runtime::store::SectionHost;
use crate::runtime::wit::latest::status::{self as wit, ThreadRow};

/// One section's line and its thread rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectionStatus {
    pub index: u32,
    pub name: String,
    pub job_type: String,
    /// e.g. `starting`, `attached`, `refused`, `stopped`, `trapped`.
    pub state: String,
    pub detail: String,
    pub threads: BTreeMap<String, ThreadStatus>,
}

/// A thread row (the WIT `thread-row`, as plain host data).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadStatus {
    pub thread: String,
    pub state: String,
    pub agent: String,
    pub session_id: String,
    pub detail: String,
    pub last_event: String,
    pub prompt: Option<String>,
    pub error: Option<String>,
}

impl From<ThreadRow> for ThreadStatus {
    fn from(r: ThreadRow) -> Self {
        ThreadStatus {
            thread: r.thread,
            state: r.state,
            agent: r.agent,
            session_id: r.session_id,
            detail: r.detail,
            last_event: r.last_event,
            prompt: r.prompt,
            error: r.error,
        }
    }
}

/// One warning or failure of the recent-errors panel, kept as fields (never a formatted line
/// that a reader would have to parse back).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorRecord {
    /// UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub at: String,
    pub section: Option<u32>,
    pub thread: Option<String>,
    /// The record's `code` field when it has one, else its event name.
    pub code: String,
    /// The rest: the other fields as `k=v` joined by ` · `, or the message.
    pub details: String,
}

impl ErrorRecord {
    /// A record from a job type's log event: `fields` is its JSON object (anything else is kept
    /// whole as the details). A `code` field becomes the code; the event is then a detail.
    pub fn from_event(
        at: String,
        section: u32,
        thread: Option<String>,
        event: &str,
        fields: &str,
    ) -> Self {
        let mut code = event.to_owned();
        let mut parts = Vec::new();
        match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(fields) {
            Ok(map) => {
                if let Some(serde_json::Value::String(c)) = map.get("code") {
                    code = c.clone();
                    parts.push(format!("event={event}"));
                }
                parts.extend(
                    map.iter()
                        .filter(|(k, _)| *k != "code")
                        .map(|(k, v)| match v {
                            serde_json::Value::String(s) => format!("{k}={s}"),
                            other => format!("{k}={other}"),
                        }),
                );
            }
            Err(_) if !fields.trim().is_empty() => parts.push(fields.trim().to_owned()),
            Err(_) => {}
        }
        ErrorRecord {
            at,
            section: Some(section),
            thread: thread.filter(|t| !t.is_empty()),
            code,
            details: parts.join(" · "),
        }
    }
}

/// How many warnings and errors [`StatusBoard::recent_errors`] keeps.
pub const RECENT_ERRORS: usize = 50;

#[derive(Debug, Default)]
pub struct StatusBoard {
    sections: RwLock<BTreeMap<u32, SectionStatus>>,
    recent: RwLock<std::collections::VecDeque<ErrorRecord>>,
    /// Since when each thread's row has shown an open question, for the prompt wait time of
    /// `/metrics` (counted when the question leaves the row).
    prompts_open: std::sync::Mutex<BTreeMap<(u32, String), std::time::Instant>>,
}

impl StatusBoard {
    /// A copy of every section's status, in config order.
    pub fn snapshot(&self) -> Vec<SectionStatus> {
        self.sections
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The newest warnings and errors of every section (oldest first), for the dashboard's
    /// recent-errors panel.
    pub fn recent_errors(&self) -> Vec<ErrorRecord> {
        self.recent
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    pub fn push_error(&self, record: ErrorRecord) {
        let mut recent = self.recent.write().unwrap_or_else(|e| e.into_inner());
        if recent.len() == RECENT_ERRORS {
            recent.pop_front();
        }
        recent.push_back(record);
    }

    /// Register a section (or reset its line).
    pub fn register(&self, index: u32, name: &str, job_type: &str) {
        self.update(index, |s| {
            s.index = index;
            s.name = name.to_owned();
            s.job_type = job_type.to_owned();
            s.state = "starting".into();
        });
    }

    pub fn set_section(&self, index: u32, state: &str, detail: &str) {
        self.update(index, |s| {
            s.state = state.to_owned();
            s.detail = detail.to_owned();
        });
    }

    pub fn set_thread(&self, index: u32, row: ThreadStatus) {
        {
            let mut open = self.prompts_open.lock().unwrap_or_else(|e| e.into_inner());
            let key = (index, row.thread.clone());
            match (&row.prompt, open.contains_key(&key)) {
                (Some(_), false) => {
                    open.insert(key, std::time::Instant::now());
                }
                (None, true) => {
                    if let Some(since) = open.remove(&key) {
                        crate::metrics::count_prompt_wait(since.elapsed());
                    }
                }
                _ => {}
            }
        }
        self.update(index, |s| {
            s.threads.insert(row.thread.clone(), row);
        });
    }

    pub fn remove_thread(&self, index: u32, thread: &str) {
        self.forget_prompts(index, Some(thread));
        self.update(index, |s| {
            s.threads.remove(thread);
        });
    }

    /// A question whose row goes away unanswered is not a wait that ended.
    fn forget_prompts(&self, index: u32, thread: Option<&str>) {
        let mut open = self.prompts_open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|(i, t), _| *i != index || thread.is_some_and(|th| th != t));
    }

    /// How many rows section `index` shows besides `thread` (which a new row would replace).
    pub fn thread_count(&self, index: u32, thread: &str) -> usize {
        let map = self.sections.read().unwrap_or_else(|e| e.into_inner());
        map.get(&index).map_or(0, |s| {
            s.threads.len() - usize::from(s.threads.contains_key(thread))
        })
    }

    /// Forget section `index`'s thread rows (its section ended: nobody updates them any more).
    pub fn clear_threads(&self, index: u32) {
        self.forget_prompts(index, None);
        self.update(index, |s| s.threads.clear());
    }

    fn update(&self, index: u32, f: impl FnOnce(&mut SectionStatus)) {
        let mut map = self.sections.write().unwrap_or_else(|e| e.into_inner());
        f(map.entry(index).or_insert_with(|| SectionStatus {
            index,
            ..Default::default()
        }));
    }
}

impl wit::Host for SectionHost {
    fn set_section(&mut self, state: String, detail: String) -> wasmtime::Result<()> {
        let s = &self.section;
        s.shared
            .status
            .set_section(s.index, &clip(state), &clip(detail));
        Ok(())
    }

    fn set_thread(&mut self, row: ThreadRow) -> wasmtime::Result<()> {
        let s = &self.section;
        let mut row = ThreadStatus::from(row);
        for field in [
            &mut row.thread,
            &mut row.state,
            &mut row.agent,
            &mut row.session_id,
            &mut row.detail,
            &mut row.last_event,
        ] {
            *field = clip(std::mem::take(field));
        }
        row.prompt = row.prompt.map(clip);
        row.error = row.error.map(clip);
        let rows = s.shared.status.thread_count(s.index, &row.thread);
        if rows >= s.quotas.max_status_rows {
            return Err(wasmtime::format_err!(
                "JOB_TYPE_QUOTA_EXCEEDED: more than {} thread rows (job_types.<name>.max_status_rows)",
                s.quotas.max_status_rows
            ));
        }
        s.shared.status.set_thread(s.index, row);
        Ok(())
    }

    fn remove_thread(&mut self, thread: String) -> wasmtime::Result<()> {
        let s = &self.section;
        s.shared.status.remove_thread(s.index, &thread);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{ErrorRecord, StatusBoard, ThreadStatus};

    #[test]
    fn an_answered_question_is_counted_as_a_prompt_wait() {
        let board = StatusBoard::default();
        let row = |prompt: Option<&str>| ThreadStatus {
            thread: "t".into(),
            prompt: prompt.map(Into::into),
            ..Default::default()
        };
        let before = crate::metrics::prompt_waits();
        board.set_thread(7, row(Some("May I?")));
        board.set_thread(7, row(Some("May I?")));
        board.set_thread(7, row(None));
        assert_eq!(crate::metrics::prompt_waits(), before + 1);
        // Asked, then the thread went away: not a wait that ended.
        board.set_thread(7, row(Some("Again?")));
        board.remove_thread(7, "t");
        board.set_thread(7, row(None));
        assert_eq!(crate::metrics::prompt_waits(), before + 1);
    }

    #[test]
    fn error_records_take_the_code_field_and_keep_the_rest_as_details() {
        let r = ErrorRecord::from_event(
            "2026-05-01T10:11:12Z".into(),
            0,
            Some("t1".into()),
            "post_failed",
            r#"{"code":"API_TRANSIENT_ERROR","attempts":5}"#,
        );
        assert_eq!(r.code, "API_TRANSIENT_ERROR");
        assert_eq!(r.details, "event=post_failed · attempts=5");
        assert_eq!(r.thread.as_deref(), Some("t1"));
        let plain = ErrorRecord::from_event("t".into(), 1, Some(String::new()), "odd", "not json");
        assert_eq!(
            (plain.code.as_str(), plain.details.as_str()),
            ("odd", "not json")
        );
        assert_eq!(plain.thread, None);
    }
}
