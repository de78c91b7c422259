//! `config check`: every problem of config.yaml at once, each with its path and line.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;

use super::{Output, state_tree};
use crate::coded::CodedError;
use crate::config::{self, Config, Diagnostic, LineIndex, Severity};
use crate::runtime::capabilities::process;

/// The bundled harness, whose `allow_spawn` limits what the agents blocks grant.
const HARNESS: &str = "session_agent_harness";

/// What a thread of each configured agent type would meet at activation: its executable is not
/// on PATH here, or the operator's `job_types.session_agent_harness.allow_spawn` leaves it out.
/// Warnings, not errors: a section of another job type may not use agents at all, and PATH may
/// differ where the worker runs.
fn agent_executables(config: &Config, lines: &LineIndex) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let grant = config.job_type(HARNESS).allow_spawn;
    for (name, agent) in &config.agents {
        let Some(known) = blobhub_agent_types::find(name) else {
            continue;
        };
        if known.driver.is_none() {
            continue;
        }
        let Some(program) = agent.executable_for(name) else {
            continue;
        };
        let path = if agent.executable.is_some() {
            format!("agents.{name}.executable")
        } else {
            format!("agents.{name}")
        };
        let mut warn = |code: &str, message: String| {
            out.push(Diagnostic {
                severity: Severity::Warning,
                code: code.to_owned(),
                line: lines.line(&path),
                path: path.clone(),
                message,
            })
        };
        if process::resolve(&program).is_none() {
            warn(
                "AGENT_EXECUTABLE_NOT_FOUND",
                format!(
                    "`{program}` is not on PATH or not executable here; {name} threads would fail with AGENT_EXECUTABLE_NOT_FOUND"
                ),
            );
        }
        if let Some(allowed) = &grant
            && !allowed.contains(&program)
        {
            warn(
                "AGENT_EXECUTABLE_NOT_FOUND",
                format!(
                    "`{program}` is not in job_types.{HARNESS}.allow_spawn; {name} threads would fail with AGENT_EXECUTABLE_NOT_FOUND (not granted)"
                ),
            );
        }
    }
    out
}

pub async fn run(file: Option<PathBuf>, output: &Output) -> anyhow::Result<ExitCode> {
    let tree = state_tree()?;
    let path = file.unwrap_or_else(|| tree.config_path());
    let report = config::load_file(&path);
    let mut diagnostics = report.diagnostics.clone();
    // With schema errors the job types still see every section that could be read, so one run
    // lists a `max_agents: 0` and a section's missing `session_id` together.
    if let Some(config) = report.config.as_ref().or(report.partial.as_ref()) {
        diagnostics.extend(agent_executables(config, &report.lines));
        let check =
            crate::job_type_check::validate_sections(config, &tree, &report.lines, false).await;
        diagnostics.extend(check.diagnostics);
    }
    let errors = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = diagnostics.len() - errors;

    let mut human = String::new();
    for d in &diagnostics {
        let severity = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        human.push_str(&format!(
            "{}: {severity}: {}: {d}\n",
            path.display(),
            d.code
        ));
    }
    human.push_str(&format!(
        "{}: {errors} error(s), {warnings} warning(s)",
        path.display()
    ));
    output.result(
        &human,
        json!({
            "file": path,
            "ok": errors == 0,
            "errors": errors,
            "warnings": warnings,
            "diagnostics": diagnostics,
        }),
    );
    if errors > 0 {
        return Err(CodedError::new(
            "INVALID_CONFIG",
            format!("{} has {errors} error(s)", path.display()),
        )
        .with_hint("fix the problems listed above; see docs/configuration.md")
        .into());
    }
    Ok(ExitCode::SUCCESS)
}
