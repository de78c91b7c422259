//! `blobhub:worker/status`: rows for the dashboard and `status` views.
//!
//! Every section's rows live in one in-memory [`StatusBoard`] shared by the whole worker; readers
//! take a [`StatusBoard::snapshot`], a plain copy, so they never hold a lock while rendering.

use std::collections::BTreeMap;
use std::sync::RwLock;

use crate::runtime::quotas::clip;
use crate::runtime::store::SectionHost;
use crate::runtime::wit::latest::status::{self as wit, ThreadRow};

/// One section's line and its thread rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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

/// How many warnings and errors [`StatusBoard::recent_errors`] keeps.
pub const RECENT_ERRORS: usize = 50;

#[derive(Debug, Default)]
pub struct StatusBoard {
    sections: RwLock<BTreeMap<u32, SectionStatus>>,
    recent: RwLock<std::collections::VecDeque<String>>,
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
    pub fn recent_errors(&self) -> Vec<String> {
        self.recent
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    pub fn push_error(&self, line: String) {
        let mut recent = self.recent.write().unwrap_or_else(|e| e.into_inner());
        if recent.len() == RECENT_ERRORS {
            recent.pop_front();
        }
        recent.push_back(line);
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
        self.update(index, |s| {
            s.threads.insert(row.thread.clone(), row);
        });
    }

    pub fn remove_thread(&self, index: u32, thread: &str) {
        self.update(index, |s| {
            s.threads.remove(thread);
        });
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
