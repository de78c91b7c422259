//! `blobhub:worker/log`: guest events as `tracing` events tagged with the section (and thread).

use super::SectionHost;
use crate::runtime::bindings::log::{self as wit, Level};

impl wit::Host for SectionHost {
    fn emit(
        &mut self,
        level: Level,
        event: String,
        thread: Option<String>,
        fields: String,
    ) -> wasmtime::Result<()> {
        self.busy.reset();
        let s = &self.section;
        let thread = thread.unwrap_or_default();
        if matches!(level, Level::Warning | Level::Error) {
            let at = super::worker::now_utc();
            let who = if thread.is_empty() {
                format!("section {}", s.index)
            } else {
                format!("section {} thread {thread}", s.index)
            };
            s.shared
                .status
                .push_error(format!("{at} {who}: {event} {fields}"));
        }
        // `tracing` needs the level at compile time, hence one macro call per level.
        match level {
            Level::Debug => {
                tracing::debug!(section = %s.label(), job_type = %s.job_type, thread = %thread, fields = %fields, "{event}")
            }
            Level::Info => {
                tracing::info!(section = %s.label(), job_type = %s.job_type, thread = %thread, fields = %fields, "{event}")
            }
            Level::Warning => {
                tracing::warn!(section = %s.label(), job_type = %s.job_type, thread = %thread, fields = %fields, "{event}")
            }
            Level::Error => {
                tracing::error!(section = %s.label(), job_type = %s.job_type, thread = %thread, fields = %fields, "{event}")
            }
        }
        Ok(())
    }
}
