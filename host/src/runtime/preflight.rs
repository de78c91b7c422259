//! Preflight through job types: every section's `job_type` must be answered by a loaded
//! component (`UNKNOWN_JOB_TYPE`), then each job type's `validate` export checks its sections
//! together (e.g. `MISSING_SESSION_KEYS`, `DUPLICATE_SECTION_TARGET`). Nothing here contacts the
//! server.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::capabilities::session::SessionBinding;
use super::capabilities::{Grants, SectionContext, Shared};
use super::loader::{JobTypes, LoadedJobType};
use super::section::SectionPlan;
use super::store::scratch_store;
use super::wit::latest::types::{Section, SessionTarget, Severity};

/// One coded refusal of the preflight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreflightError {
    pub code: String,
    pub message: String,
    pub field: Option<String>,
    /// A job type's warning: shown, and the section still runs.
    pub warning: bool,
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

/// The session target of a section's `session` block: all four keys, non-empty strings.
pub fn session_target(settings: &serde_json::Map<String, Value>) -> Option<SessionTarget> {
    let block = settings.get("session")?;
    let get = |key: &str| {
        block
            .get(key)
            .and_then(Value::as_str)
            .filter(|v| !v.trim().is_empty())
            .map(str::to_owned)
    };
    Some(SessionTarget {
        org_id: get("org_id")?,
        blob_id: get("blob_id")?,
        revision_id: get("revision_id")?,
        session: get("session_id")?,
    })
}

/// The keys the session target of `section` lacks, one `MISSING_SESSION_KEYS` each (or one for
/// a missing block).
fn missing_session_keys(section: &crate::config::Section) -> Vec<PreflightError> {
    let i = section.index;
    let Some(block) = section.settings.get("session").filter(|b| b.is_object()) else {
        return vec![PreflightError {
            code: "MISSING_SESSION_KEYS".into(),
            message: "the section has no `session` block".into(),
            field: Some(format!("sections[{i}].session")),
            warning: false,
        }];
    };
    SESSION_KEYS
        .iter()
        .filter(|key| {
            block
                .get(**key)
                .and_then(Value::as_str)
                .is_none_or(|v| v.trim().is_empty())
        })
        .map(|key| PreflightError {
            code: "MISSING_SESSION_KEYS".into(),
            message: format!("the section's session block lacks `{key}`"),
            field: Some(format!("sections[{i}].session.{key}")),
            warning: false,
        })
        .collect()
}

/// The keys of a section's `session` block that make its session target.
pub const SESSION_KEYS: [&str; 4] = ["org_id", "blob_id", "revision_id", "session_id"];

/// The WIT `section` record of a config.yaml section.
pub fn section_record(section: &crate::config::Section, worker_config: &Value) -> Section {
    Section {
        index: u32::try_from(section.index).unwrap_or(u32::MAX),
        name: section.name.clone().unwrap_or_default(),
        job_type: section.job_type.clone(),
        target: session_target(&section.settings),
        settings: Value::Object(section.settings.clone()).to_string(),
        worker_config: worker_config.to_string(),
    }
}

/// Call `validate` of `job` on `sections`.
pub async fn validate(
    engine: &wasmtime::Engine,
    job: &LoadedJobType,
    sections: &[Section],
    limits: &crate::config::JobTypeSettings,
) -> Result<Vec<super::wit::latest::job::SectionCheck>, (String, String)> {
    let mut store = scratch_store(engine, limits).map_err(|e| {
        (
            "JOB_TYPE_TRAPPED".to_string(),
            format!("cannot prepare validate: {e:#}"),
        )
    })?;
    let run = async {
        let instance = job.checks_pre.instantiate_async(&mut store).await?;
        instance.call_validate(&mut store, sections).await
    };
    run.await.map_err(|e| {
        let data = store.data();
        let detail = format!("{e:#}");
        let code = if data.limits.hit {
            "JOB_TYPE_OUT_OF_MEMORY"
        } else if data.busy.tripped {
            "JOB_TYPE_UNRESPONSIVE"
        } else if detail.contains(super::engine::IMPORT_REFUSED) {
            super::engine::IMPORT_REFUSED
        } else {
            "JOB_TYPE_TRAPPED"
        };
        (
            code.to_string(),
            format!("`{}` failed in validate: {detail}", job.name()),
        )
    })
}

/// What preflight decided about one section: everything needed to run it except the worker-wide
/// state ([`Shared`]), which exists only once the worker has started. `start` validates once,
/// keeps these, and runs them ([`plans`]).
#[derive(Clone)]
pub struct Verdict {
    /// `None` for a section whose job type's component failed to load (then `refused` says why).
    pub job: Option<Arc<LoadedJobType>>,
    pub record: Section,
    pub state_dir: std::path::PathBuf,
    /// The job type's warnings on this section (it runs nevertheless).
    pub warnings: Vec<PreflightError>,
    pub grants: Grants,
    pub limits: crate::config::JobTypeSettings,
    /// The section cannot run: its job type's `validate` broke (code, message).
    pub refused: Option<(String, String)>,
    /// Its job type is still compiling in the background: the section is validated and run
    /// once it is ready ([`after_compile`]); nothing else of this verdict is decided yet.
    pub compiling: Option<super::loader::Compiling>,
}

/// Check every section once (each job type's `validate` is called once, for all its sections);
/// on success, the verdict of each.
pub async fn verdicts(
    engine: &wasmtime::Engine,
    job_types: &JobTypes,
    settings: &super::settings::RuntimeSettings,
    jobs_dir: &Path,
) -> Result<Vec<Verdict>, Vec<PreflightError>> {
    let mut errors = Vec::new();
    let mut by_type: BTreeMap<String, (Arc<LoadedJobType>, Vec<Section>)> = BTreeMap::new();
    let mut failed = Vec::new();
    for section in &settings.sections {
        let i = section.index;
        let record = section_record(section, &settings.worker_config);
        let component = settings.job_type(&record.job_type).component;
        if let Some(compiling) = job_types.compiling_for(&record.job_type, component.as_deref()) {
            // Validated once its compile ends, like any section of it ([`after_compile`]).
            failed.push(Verdict {
                job: None,
                limits: settings.job_type(&record.job_type),
                refused: None,
                record,
                state_dir: Default::default(),
                warnings: Vec::new(),
                grants: Default::default(),
                compiling: Some(compiling.clone()),
            });
            continue;
        }
        let job = match job_types.resolve(&record.job_type, component.as_deref()) {
            Ok(job) => job,
            Err(e @ super::loader::ResolveError::ComponentNotFound { .. }) => {
                errors.push(PreflightError {
                    code: e.code().into(),
                    message: e.to_string(),
                    field: Some(format!("job_types.{}.component", record.job_type)),
                    warning: false,
                });
                continue;
            }
            Err(super::loader::ResolveError::Unknown(_))
                if let Some(failure) = job_types.failure_of(&record.job_type) =>
            {
                // Its component is there but broken (describe failed, it does not compile, ...):
                // that job type's sections end with the loader's code; the others start.
                failed.push(Verdict {
                    job: None,
                    limits: settings.job_type(&record.job_type),
                    refused: Some((failure.code().to_owned(), failure.to_string())),
                    record,
                    state_dir: Default::default(),
                    warnings: Vec::new(),
                    grants: Default::default(),
                    compiling: None,
                });
                continue;
            }
            Err(super::loader::ResolveError::Unknown(_)) => {
                let known: Vec<&str> = job_types.by_name.keys().map(String::as_str).collect();
                errors.push(PreflightError {
                    code: "UNKNOWN_JOB_TYPE".into(),
                    message: format!(
                        "no job type answers `{}` (known: {}; third-party job types go in the state tree's plugins/ folder)",
                        record.job_type,
                        known.join(", ")
                    ),
                    field: Some(format!("sections[{i}].job_type")),
                    warning: false,
                });
                continue;
            }
        };
        // The session target is host contract: a job type that asks for the session API gets
        // sections whose `session` block the host could read, or none at all.
        if record.target.is_none()
            && job
                .descriptor
                .capabilities
                .iter()
                .any(|c| matches!(c, super::wit::latest::job::Capability::Session))
        {
            errors.extend(missing_session_keys(section));
            continue;
        }
        by_type
            .entry(record.job_type.clone())
            .or_insert_with(|| (job, Vec::new()))
            .1
            .push(record);
    }
    let mut plans = failed;
    for (name, (job, sections)) in by_type {
        let limits = settings.job_type(&name);
        tracing::info!(job_type = %name, sections = sections.len(), "validate_called");
        let checks = match validate(engine, &job, &sections, &limits).await {
            Ok(c) => c,
            Err((code, message)) => {
                // A broken job type fails its own sections; the others still start.
                tracing::error!(job_type = %name, code = %code, error = %message, "validate_failed");
                for record in sections {
                    plans.push(Verdict {
                        job: Some(Arc::clone(&job)),
                        record,
                        state_dir: Default::default(),
                        warnings: Vec::new(),
                        grants: Default::default(),
                        limits: limits.clone(),
                        refused: Some((code.clone(), message.clone())),
                        compiling: None,
                    });
                }
                continue;
            }
        };
        let grants = Grants::compute(
            &name,
            job.origin == super::loader::Origin::Bundled,
            &job.descriptor.capabilities,
            settings,
        );
        for record in sections {
            let check = checks.iter().find(|c| c.index == record.index);
            let Some(check) = check else {
                errors.push(PreflightError {
                    code: "JOB_TYPE_INVALID".into(),
                    message: format!("`{name}` returned no verdict on section {}", record.index),
                    field: Some(format!("sections[{}]", record.index)),
                    warning: false,
                });
                continue;
            };
            let (found_warnings, found_errors): (Vec<_>, Vec<_>) = check
                .diagnostics
                .iter()
                .map(|d| PreflightError {
                    code: d.code.clone(),
                    message: d.message.clone(),
                    field: d.field.clone(),
                    warning: matches!(d.severity, Severity::Warning),
                })
                .partition(|d| d.warning);
            if !found_errors.is_empty() {
                errors.extend(found_errors);
                // Shown beside the errors, so a fix of both takes one round.
                errors.extend(found_warnings);
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
                    warning: false,
                });
                continue;
            }
            plans.push(Verdict {
                job: Some(Arc::clone(&job)),
                record,
                state_dir: jobs_dir.join(format!("{name}-{key}")),
                warnings: found_warnings,
                grants: grants.clone(),
                limits: limits.clone(),
                refused: None,
                compiling: None,
            });
        }
    }
    // Two sections sharing a state folder would read and overwrite each other's cursors.
    let mut folders = std::collections::BTreeSet::new();
    for plan in plans
        .iter()
        .filter(|p| p.refused.is_none() && p.compiling.is_none())
    {
        if !folders.insert(plan.state_dir.clone()) {
            errors.push(PreflightError {
                code: "DUPLICATE_SECTION_TARGET".into(),
                message: format!(
                    "another section already keeps its state in {}",
                    plan.state_dir.display()
                ),
                field: Some(format!("sections[{}]", plan.record.index)),
                warning: false,
            });
        }
    }
    if errors.is_empty() {
        Ok(plans)
    } else {
        Err(errors)
    }
}

/// The verdicts on the sections of one job type that was compiling at preflight (`waiting`, as
/// [`verdicts`] left them), now that it is ready (`job`) or failed to load: the same checks as
/// at preflight, but as the job type's sections already started, what would have stopped the
/// start ends only the sections it names (logged as `section_refused`), with its code.
pub async fn after_compile(
    engine: &wasmtime::Engine,
    job: super::loader::CompileOutcome,
    waiting: Vec<Verdict>,
    settings: &super::settings::RuntimeSettings,
    jobs_dir: &Path,
) -> Vec<Verdict> {
    let refuse_all = |waiting: Vec<Verdict>, code: &str, message: &str| {
        waiting
            .into_iter()
            .map(|v| Verdict {
                refused: Some((code.to_owned(), message.to_owned())),
                compiling: None,
                ..v
            })
            .collect::<Vec<_>>()
    };
    let job = match job {
        Ok(job) => job,
        Err(e) => return refuse_all(waiting, e.code(), &e.to_string()),
    };
    let mut job_types = JobTypes::default();
    job_types.by_name.insert(job.name().to_owned(), job);
    let mut out = Vec::new();
    let mut remaining = waiting;
    // A second round validates the sections the first round's errors did not name.
    for round in 0..2 {
        let indices: Vec<usize> = remaining.iter().map(|v| v.record.index as usize).collect();
        let mut settings = settings.clone();
        settings.sections.retain(|s| indices.contains(&s.index));
        let errors = match verdicts(engine, &job_types, &settings, jobs_dir).await {
            Ok(verdicts) => {
                for v in &verdicts {
                    for w in &v.warnings {
                        tracing::warn!(section = v.record.index, code = %w.code, error = %w, "section_warning");
                    }
                }
                out.extend(verdicts);
                return out;
            }
            Err(errors) => errors,
        };
        let errors: Vec<PreflightError> = errors.into_iter().filter(|e| !e.warning).collect();
        // An error that names no section (e.g. `job_types.<name>.component`) concerns them all.
        let general = errors.iter().find(|e| {
            !e.field
                .as_deref()
                .is_some_and(|f| f.starts_with("sections["))
        });
        let mut clean = Vec::new();
        for v in remaining {
            let own = format!("sections[{}]", v.record.index);
            let error = errors
                .iter()
                .find(|e| {
                    e.field.as_deref().is_some_and(|f| {
                        f == own
                            || f.starts_with(&format!("{own}."))
                            || f.starts_with(&format!("{own}["))
                    })
                })
                .or(general)
                .or(errors.first().filter(|_| round == 1));
            match error {
                Some(e) => {
                    tracing::warn!(section = v.record.index, code = %e.code, error = %e, "section_refused");
                    out.push(Verdict {
                        refused: Some((e.code.clone(), e.to_string())),
                        compiling: None,
                        ..v
                    });
                }
                None => clean.push(v),
            }
        }
        if clean.is_empty() {
            break;
        }
        remaining = clean;
    }
    out
}

/// The plans of `verdicts`, bound to the worker-wide state of a started worker.
pub fn plans(
    verdicts: Vec<Verdict>,
    shared: &Arc<Shared>,
) -> Vec<(Option<Arc<LoadedJobType>>, SectionPlan)> {
    verdicts
        .into_iter()
        .map(|v| {
            let name = v.record.job_type.clone();
            let plan = match v.refused {
                Some((code, message)) => {
                    SectionPlan::refused(v.record, &name, shared, &code, &message)
                }
                None => SectionPlan {
                    context: Arc::new(SectionContext {
                        index: v.record.index,
                        name: v.record.name.clone(),
                        job_type: name,
                        state_dir: v.state_dir,
                        session: SessionBinding::for_target(v.record.target.as_ref()),
                        grants: v.grants,
                        quotas: super::quotas::Quotas::new(&v.limits),
                        shared: Arc::clone(shared),
                    }),
                    record: v.record,
                    memory_limit_mib: v.limits.memory_limit_mib,
                    max_busy: Duration::from_millis(v.limits.max_busy_ms),
                    refused: None,
                },
            };
            (v.job, plan)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn section(settings: Value) -> crate::config::Section {
        crate::config::Section {
            index: 2,
            name: None,
            job_type: "x".into(),
            settings: settings.as_object().cloned().unwrap_or_default(),
            line: None,
        }
    }

    #[test]
    fn the_session_target_needs_all_four_keys() {
        let full = json!({"session": {"org_id": "o", "blob_id": "b", "revision_id": "default", "session_id": "main", "session_prefix": "t/"}});
        let target = session_target(&section(full.clone()).settings).unwrap();
        assert_eq!(
            (
                target.org_id.as_str(),
                target.blob_id.as_str(),
                target.revision_id.as_str(),
                target.session.as_str()
            ),
            ("o", "b", "default", "main")
        );
        assert!(missing_session_keys(&section(full)).is_empty());

        let partial = json!({"session": {"org_id": "o", "blob_id": " ", "revision_id": 7}});
        assert!(session_target(&section(partial.clone()).settings).is_none());
        let fields: Vec<String> = missing_session_keys(&section(partial))
            .into_iter()
            .map(|e| e.field.unwrap())
            .collect();
        assert_eq!(
            fields,
            [
                "sections[2].session.blob_id",
                "sections[2].session.revision_id",
                "sections[2].session.session_id"
            ]
        );
        let none = missing_session_keys(&section(json!({"other": 1})));
        assert_eq!(none.len(), 1);
        assert_eq!(none[0].field.as_deref(), Some("sections[2].session"));
    }
}
