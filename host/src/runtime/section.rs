//! One section: its own store and instance on its own tokio task.
//!
//! A trap, a refused memory grow or a guest that computes too long without returning to the
//! host ends only this section, with `JOB_TYPE_TRAPPED`, `JOB_TYPE_OUT_OF_MEMORY` or
//! `JOB_TYPE_UNRESPONSIVE`, recorded in the section's `section.yaml` and its status line.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::Engine;

use super::capabilities::{SectionContext, Shared};
use super::loader::LoadedJobType;
use super::store::{SectionHost, store_for, wasi_for};
use super::wit::latest::types::Section;

/// How a section ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionEnd {
    /// None for a clean stop; else a section code.
    pub code: Option<String>,
    pub message: String,
}

/// Everything needed to run one section.
pub struct SectionPlan {
    pub record: Section,
    pub context: Arc<SectionContext>,
    pub memory_limit_mib: u64,
    pub max_busy: Duration,
    /// Set when the section cannot run at all (its job type's `validate` broke): the section
    /// ends at once with this (code, message) while the others run.
    pub refused: Option<(String, String)>,
}

impl SectionPlan {
    /// A section that ends at once with `code`: it has no state folder (its job type never named
    /// one) and no grants.
    pub fn refused(
        record: Section,
        job_type: &str,
        shared: &Arc<Shared>,
        code: &str,
        message: &str,
    ) -> SectionPlan {
        let context = Arc::new(SectionContext {
            index: record.index,
            name: record.name.clone(),
            job_type: job_type.to_owned(),
            state_dir: PathBuf::new(),
            session: super::capabilities::session::SessionBinding::unbound(),
            grants: Default::default(),
            quotas: super::quotas::Quotas::new(&Default::default()),
            shared: Arc::clone(shared),
        });
        SectionPlan {
            record,
            context,
            memory_limit_mib: 0,
            max_busy: Duration::ZERO,
            refused: Some((code.to_owned(), message.to_owned())),
        }
    }
}

/// Run the section to its end. Never panics on guest failure: every failure becomes a code.
pub async fn run(engine: &Engine, job: Option<&LoadedJobType>, plan: SectionPlan) -> SectionEnd {
    let ctx = Arc::clone(&plan.context);
    let status = &ctx.shared.status;
    status.register(ctx.index, &ctx.name, &ctx.job_type);
    let end = run_inner(engine, job, plan).await;
    if let Some(code) = &end.code {
        status.push_error(super::capabilities::status::ErrorRecord {
            at: super::capabilities::worker::now_utc(),
            section: Some(ctx.index),
            thread: None,
            code: code.clone(),
            details: end.message.clone(),
        });
    }
    // Its rows are nobody's any more; the section line keeps the outcome.
    status.clear_threads(ctx.index);
    match &end.code {
        None => status.set_section(ctx.index, "stopped", &end.message),
        Some(code) => status.set_section(ctx.index, "stopped", &format!("{code}: {}", end.message)),
    }
    // A clean stop leaves section.yaml to the job type (its attachment survives a restart);
    // a coded end is recorded.
    if end.code.is_some()
        && !ctx.state_dir.as_os_str().is_empty()
        && let Err(e) = record_outcome(&ctx.state_dir, &end)
    {
        tracing::error!(section = %ctx.label(), error = %e, "section_yaml_write_failed");
    }
    tracing::info!(section = %ctx.label(), code = ?end.code, message = %end.message, "section_ended");
    end
}

async fn run_inner(engine: &Engine, job: Option<&LoadedJobType>, plan: SectionPlan) -> SectionEnd {
    let ctx = plan.context;
    if let Some((code, message)) = plan.refused {
        return SectionEnd {
            code: Some(code),
            message,
        };
    }
    let Some(job) = job else {
        return SectionEnd {
            code: Some("JOB_TYPE_INVALID".into()),
            message: format!("job type `{}` is not loaded", ctx.job_type),
        };
    };
    if let Err(e) = crate::state_tree::create_private_dir(&ctx.state_dir) {
        return SectionEnd {
            code: Some("STATE_DIR_UNWRITABLE".into()),
            message: format!("{}: {e}", ctx.state_dir.display()),
        };
    }
    let wasi = match wasi_for(Some(&ctx.state_dir), &ctx) {
        Ok(w) => w,
        Err(e) => {
            return SectionEnd {
                code: Some("STATE_DIR_UNWRITABLE".into()),
                message: format!("{e:#}"),
            };
        }
    };
    let host = SectionHost::new(
        wasi,
        Arc::clone(&ctx),
        usize::try_from(plan.memory_limit_mib << 20).unwrap_or(usize::MAX),
        plan.max_busy,
    );
    let mut store = store_for(engine, host);
    let run = async {
        let instance = job.pre.instantiate_async(&mut store).await?;
        instance.call_run(&mut store, &plan.record).await
    };
    // The state folder's quota is measured beside the run (`state_meter`): the guest also writes
    // through WASI, which no host call sees. Over it, the run is dropped (its children die with
    // the store).
    let mut meter = ctx.shared.state_meter.watch(&ctx).await;
    let result = tokio::select! {
        result = run => result,
        over = meter.over_quota() => {
            drop(store);
            tracing::error!(section = %ctx.label(), code = "JOB_TYPE_QUOTA_EXCEEDED", error = %over, "job_type_failed");
            return SectionEnd {
                code: Some("JOB_TYPE_QUOTA_EXCEEDED".into()),
                message: format!("job type `{}`: {over}", ctx.job_type),
            };
        }
    };
    match result {
        Ok(outcome) => SectionEnd {
            code: outcome.code,
            message: outcome.message,
        },
        Err(e) => {
            let data = store.data();
            let (code, what) = if data.limits.hit {
                ("JOB_TYPE_OUT_OF_MEMORY", "exceeded its memory limit")
            } else if data.busy.tripped {
                (
                    "JOB_TYPE_UNRESPONSIVE",
                    "computed for longer than its budget",
                )
            } else if format!("{e:#}").contains("JOB_TYPE_QUOTA_EXCEEDED") {
                ("JOB_TYPE_QUOTA_EXCEEDED", "went over a quota")
            } else {
                ("JOB_TYPE_TRAPPED", "trapped")
            };
            tracing::error!(section = %ctx.label(), code, error = %format!("{e:#}"), "job_type_failed");
            SectionEnd {
                code: Some(code.into()),
                message: format!("job type `{}` {what}: {e:#}", ctx.job_type),
            }
        }
    }
}

/// Merge a coded end into `section.yaml` (the job type keeps its own keys there): sets
/// `attachment.status: refused` and `attachment.error: {code, message}`.
pub fn record_outcome(state_dir: &Path, end: &SectionEnd) -> std::io::Result<()> {
    // The job type owns this folder: read and write `section.yaml` without following a link it
    // may have planted there (to credentials.yaml, say).
    let mut doc: serde_yaml::Value = super::confined::read(state_dir, "section.yaml", 1 << 20)
        .ok()
        .flatten()
        .and_then(|t| serde_yaml::from_slice(&t).ok())
        .filter(serde_yaml::Value::is_mapping)
        .unwrap_or_else(|| serde_yaml::Value::Mapping(Default::default()));
    let attachment = doc
        .as_mapping_mut()
        .map(|m| {
            m.entry("attachment".into())
                .or_insert_with(|| serde_yaml::Value::Mapping(Default::default()))
        })
        .and_then(serde_yaml::Value::as_mapping_mut);
    if let Some(att) = attachment {
        let status = if end.code.is_some() {
            "refused"
        } else {
            "stopped"
        };
        att.insert("status".into(), status.into());
        let mut error = serde_yaml::Mapping::new();
        error.insert(
            "code".into(),
            end.code.clone().map(Into::into).unwrap_or_default(),
        );
        error.insert(
            "message".into(),
            if end.code.is_some() {
                end.message.clone().into()
            } else {
                serde_yaml::Value::Null
            },
        );
        att.insert("error".into(), error.into());
    }
    let text = serde_yaml::to_string(&doc).map_err(std::io::Error::other)?;
    super::confined::write_atomic(state_dir, "section.yaml", text.as_bytes())
        .map_err(std::io::Error::other)
}
