//! `blobhub:worker/log`: guest events as `tracing` events tagged with the section (and thread),
//! within the section's log-line quota, each field cut to a bounded length.

use crate::runtime::quotas::{LogAdmission, clip};
use crate::runtime::store::SectionHost;
use crate::runtime::wit::latest::log::{self as wit, Level};

impl wit::Host for SectionHost {
    fn emit(
        &mut self,
        level: Level,
        event: String,
        thread: Option<String>,
        fields: String,
    ) -> wasmtime::Result<()> {
        let s = &self.section;
        match s.quotas.admit_log_line(std::time::Instant::now()) {
            LogAdmission::Drop => return Ok(()),
            LogAdmission::Write { dropped_before } if dropped_before > 0 => {
                tracing::warn!(section = %s.label(), job_type = %s.job_type, dropped = dropped_before, "log_lines_dropped");
            }
            LogAdmission::Write { .. } => {}
        }
        let (event, fields) = (clip(event), clip(fields));
        let thread = clip(thread.unwrap_or_default());
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
