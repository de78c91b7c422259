//! The job-type step of preflight: every section is validated by its job type before any
//! section contacts the server.
//!
//! This is the hook the plugin runtime fills in: it resolves each section's `job_type` to a
//! bundled or third-party component (`UNKNOWN_JOB_TYPE` when there is none) and calls the job
//! type's `validate(sections)` export, which reports `MISSING_SESSION_KEYS`,
//! `DUPLICATE_SECTION_TARGET` and the like. Each returned [`Diagnostic`] carries its own code,
//! path and line; any error stops `start` (and fails `config check`) with that code.

use crate::config::{Config, Diagnostic, LineIndex};
use crate::state_tree::StateTree;

/// Validates every section of `config` with its job type (through the plugin runtime).
pub async fn validate_sections(
    config: &Config,
    tree: &StateTree,
    lines: &LineIndex,
) -> Vec<Diagnostic> {
    crate::runtime::start::validate_config(config, tree.root())
        .await
        .into_iter()
        .map(|(code, path, message)| Diagnostic {
            severity: crate::config::Severity::Error,
            line: lines.line(&path),
            code,
            path,
            message,
        })
        .collect()
}
