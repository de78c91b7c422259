//! `config check`: every problem of config.yaml at once, each with its path and line.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;

use super::{Output, state_tree};
use crate::coded::CodedError;
use crate::config::{self, Severity};

pub async fn run(file: Option<PathBuf>, output: &Output) -> anyhow::Result<ExitCode> {
    let tree = state_tree()?;
    let path = file.unwrap_or_else(|| tree.config_path());
    let report = config::load_file(&path);
    let mut diagnostics = report.diagnostics.clone();
    if let Some(config) = &report.config {
        let check = crate::job_type_check::validate_sections(config, &tree, &report.lines).await;
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
