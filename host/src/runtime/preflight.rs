//! Preflight through job types: every section's `job_type` must be answered by a loaded
//! component (`UNKNOWN_JOB_TYPE`), then each job type's `validate` export checks its sections
//! together (e.g. `MISSING_SESSION_KEYS`, `DUPLICATE_SECTION_TARGET`). Nothing here contacts the
//! server.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::bindings::types::Section;
use super::capabilities::session::SessionBinding;
use super::capabilities::{Grants, SectionContext, Shared};
use super::loader::{JobTypes, LoadedJobType};
use super::section::{SectionPlan, scratch_store};

/// One coded refusal of the preflight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreflightError {
    pub code: String,
    pub message: String,
    pub field: Option<String>,
}

impl std::fmt::Display for PreflightError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(field) = &self.field {
            write!(f, " (at {field})")?;
        }
        Ok(())
    }
}

/// The WIT `section` record of a config.yaml section.
pub fn section_record(section: &crate::config::Section, worker_config: &Value) -> Section {
    Section {
        index: u32::try_from(section.index).unwrap_or(u32::MAX),
        name: section.name.clone().unwrap_or_default(),
        job_type: section.job_type.clone(),
        settings: Value::Object(section.settings.clone()).to_string(),
        worker_config: worker_config.to_string(),
    }
}

/// Call `validate` of `job` on `sections`.
pub async fn validate(
    engine: &wasmtime::Engine,
    job: &LoadedJobType,
    sections: &[Section],
) -> wasmtime::Result<Vec<super::bindings::job::SectionCheck>> {
    let mut store = scratch_store(engine)?;
    let instance = job.pre.instantiate_async(&mut store).await?;
    instance
        .blobhub_worker_job()
        .call_validate(&mut store, sections)
        .await
}

/// Check every section; on success, the plan of each.
pub async fn check(
    engine: &wasmtime::Engine,
    job_types: &JobTypes,
    shared: &Arc<Shared>,
    jobs_dir: &Path,
) -> Result<Vec<(Arc<LoadedJobType>, SectionPlan)>, Vec<PreflightError>> {
    let settings = &shared.settings;
    let mut errors = Vec::new();
    let mut by_type: BTreeMap<String, Vec<Section>> = BTreeMap::new();
    for section in &settings.sections {
        let i = section.index;
        let record = section_record(section, &settings.worker_config);
        if !job_types.by_name.contains_key(&record.job_type) {
            let known: Vec<&str> = job_types.by_name.keys().map(String::as_str).collect();
            errors.push(PreflightError {
                code: "UNKNOWN_JOB_TYPE".into(),
                message: format!(
                    "no job type answers `{}` (known: {}; third-party job types go in the state tree's plugins/ folder)",
                    record.job_type,
                    known.join(", ")
                ),
                field: Some(format!("sections[{i}].job_type")),
            });
            continue;
        }
        by_type
            .entry(record.job_type.clone())
            .or_default()
            .push(record);
    }
    let mut plans = Vec::new();
    for (name, sections) in by_type {
        let job = Arc::clone(&job_types.by_name[&name]);
        let checks = match validate(engine, &job, &sections).await {
            Ok(c) => c,
            Err(e) => {
                errors.push(PreflightError {
                    code: "JOB_TYPE_TRAPPED".into(),
                    message: format!("`{name}` failed in validate: {e:#}"),
                    field: None,
                });
                continue;
            }
        };
        let limits = settings.job_type(&name);
        let grants = Grants::compute(&name, &job.descriptor.capabilities, settings);
        for record in sections {
            let check = checks.iter().find(|c| c.index == record.index);
            let Some(check) = check else {
                errors.push(PreflightError {
                    code: "JOB_TYPE_INVALID".into(),
                    message: format!("`{name}` returned no verdict on section {}", record.index),
                    field: Some(format!("sections[{}]", record.index)),
                });
                continue;
            };
            if !check.diagnostics.is_empty() {
                errors.extend(check.diagnostics.iter().map(|d| PreflightError {
                    code: d.code.clone(),
                    message: d.message.clone(),
                    field: d.field.clone(),
                }));
                continue;
            }
            let key = check.state_key.clone().unwrap_or_default();
            let key_ok = !key.is_empty()
                && key.len() <= 128
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !key_ok {
                errors.push(PreflightError {
                    code: "JOB_TYPE_INVALID".into(),
                    message: format!("`{name}` returned the invalid state key `{key}`"),
                    field: Some(format!("sections[{}]", record.index)),
                });
                continue;
            }
            let raw = settings
                .sections
                .iter()
                .find(|s| s.index == record.index as usize)
                .map(|s| Value::Object(s.settings.clone()))
                .unwrap_or_default();
            let context = Arc::new(SectionContext {
                index: record.index,
                name: record.name.clone(),
                job_type: name.clone(),
                state_dir: jobs_dir.join(format!("{name}-{key}")),
                session: SessionBinding::from_settings(&raw),
                grants: grants.clone(),
                shared: Arc::clone(shared),
            });
            plans.push((
                Arc::clone(&job),
                SectionPlan {
                    record,
                    context,
                    memory_limit_mib: limits.memory_limit_mib,
                    max_busy: Duration::from_millis(limits.max_busy_ms),
                },
            ));
        }
    }
    if errors.is_empty() {
        Ok(plans)
    } else {
        Err(errors)
    }
}
