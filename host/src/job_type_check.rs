//! The job-type step of preflight: every section is validated by its job type before any
//! section contacts the server.
//!
//! This is the hook the plugin runtime fills in: it resolves each section's `job_type` to a
//! bundled or third-party component (`UNKNOWN_JOB_TYPE` when there is none) and calls the job
//! type's `validate(sections)` export, which reports `MISSING_SESSION_KEYS`,
//! `DUPLICATE_SECTION_TARGET` and the like. Each returned [`Diagnostic`] carries its own code,
//! path and line; any error stops `start` (and fails `config check`) with that code.

use std::sync::Arc;

use crate::config::{Config, Diagnostic, LineIndex, Severity};
use crate::runtime::Runtime;
use crate::state_tree::StateTree;

/// The verdict of the job-type step, with the job types it loaded (none when loading failed),
/// so that `start` runs sections with the very components it validated them with.
pub struct JobTypeCheck {
    pub runtime: Option<Arc<Runtime>>,
    pub diagnostics: Vec<Diagnostic>,
    /// What `start` runs when no diagnostic is an error.
    pub verdicts: Option<Vec<crate::runtime::preflight::Verdict>>,
}

/// Validates every section of `config` with its job type (through the plugin runtime). For
/// `start` (`for_start`), the sections of an installed job type that is not compiled yet are
/// validated once its background compile ends, and start then; `config check` waits for it.
pub async fn validate_sections(
    config: &Config,
    tree: &StateTree,
    lines: &LineIndex,
    for_start: bool,
) -> JobTypeCheck {
    let loaded = if for_start {
        crate::runtime::start::load_job_types_for_start(tree.root()).await
    } else {
        crate::runtime::start::load_job_types(tree.root()).await
    };
    let runtime = match loaded {
        Ok(runtime) => runtime,
        Err(e) => {
            return JobTypeCheck {
                runtime: None,
                verdicts: None,
                diagnostics: vec![Diagnostic {
                    severity: Severity::Error,
                    line: None,
                    code: "JOB_TYPE_INVALID".into(),
                    path: String::new(),
                    message: format!("{e:#}"),
                }],
            };
        }
    };
    let (refusals, verdicts) =
        crate::runtime::start::validate_config(&runtime, config, tree.root()).await;
    let diagnostics = refusals
        .into_iter()
        .map(|(fatal, code, path, message)| Diagnostic {
            severity: if fatal {
                Severity::Error
            } else {
                Severity::Warning
            },
            line: lines.line(&path),
            code,
            path,
            message,
        })
        .collect();
    JobTypeCheck {
        runtime: Some(runtime),
        diagnostics,
        verdicts,
    }
}
