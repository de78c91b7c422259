//! Running every section of a start: load job types, preflight, one tokio task per section,
//! signals and a bounded graceful shutdown.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use wasmtime::Engine;
use wasmtime::component::Linker;

use super::capabilities::{ProcessRegistry, Shared, SlotPool, StatusBoard, WorkerInfo};
use super::loader::{self, JobTypes};
use super::preflight::{self, PreflightError};
use super::section::{self, SectionEnd};
use super::settings::RuntimeSettings;
use super::store::SectionHost;
use super::transport::SessionTransport;
use crate::config::Config;
use crate::signals::StopRequests;

/// Grace between SIGTERM and SIGKILL for children still alive at exit.
pub const CHILD_GRACE: Duration = Duration::from_secs(2);

/// The engine, linker and loaded job types of one process.
pub struct Runtime {
    pub engine: Engine,
    pub linker: Linker<SectionHost>,
    pub job_types: JobTypes,
}

impl Runtime {
    /// Load the bundled job types and those in `plugins_dir`, caching compiled code in
    /// `cache_dir`.
    pub async fn load(
        plugins_dir: Option<PathBuf>,
        cache_dir: Option<PathBuf>,
    ) -> anyhow::Result<Runtime> {
        Self::load_with(plugins_dir, cache_dir, false).await
    }

    /// [`Runtime::load`] for a `start`: installed components missing from the cache compile in
    /// the background ([`loader::Compiling`]), so the sections of other job types need not wait.
    pub async fn load_for_start(
        plugins_dir: Option<PathBuf>,
        cache_dir: Option<PathBuf>,
    ) -> anyhow::Result<Runtime> {
        Self::load_with(plugins_dir, cache_dir, true).await
    }

    async fn load_with(
        plugins_dir: Option<PathBuf>,
        cache_dir: Option<PathBuf>,
        background: bool,
    ) -> anyhow::Result<Runtime> {
        let engine = super::engine::new_engine()?;
        let linker = super::engine::new_linker(&engine)?;
        let job_types = loader::load_all(
            &engine,
            &linker,
            plugins_dir.as_deref(),
            cache_dir.as_deref(),
            background,
        )
        .await;
        Ok(Runtime {
            engine,
            linker,
            job_types,
        })
    }
}

/// What a start hands the runtime.
pub struct RuntimeInputs {
    /// The validated config.yaml.
    pub config: Config,
    pub transport: Arc<dyn SessionTransport>,
    /// The state tree's root (`jobs/`, `plugins/`, `cache/` live under it).
    pub tree_root: PathBuf,
    pub user_id: String,
    pub instance_id: String,
    /// Values no guest or child may see (the API key).
    pub secrets: Vec<String>,
}

/// The end of a run.
#[derive(Debug, Default)]
pub struct RunReport {
    /// Preflight refusals; when non-empty no section ran.
    pub preflight: Vec<PreflightError>,
    /// (section index, how it ended).
    pub sections: Vec<(u32, SectionEnd)>,
}

/// What the dashboard of `start --tui` reads of a running start: the status board and the
/// agent slot pool (both shared, both cheap to clone).
#[derive(Debug, Clone)]
pub struct RunView {
    pub status: Arc<StatusBoard>,
    pub slots: SlotPool,
    pub held_waits: super::capabilities::HeldWaits,
}

/// Handles for a running start, for the CLI and tests.
pub struct RunHandle {
    pub status: Arc<StatusBoard>,
    pub shutdown: watch::Sender<bool>,
}

impl RuntimeInputs {
    pub fn plugins_dir(&self) -> PathBuf {
        self.tree_root.join("plugins")
    }
    pub fn cache_dir(&self) -> PathBuf {
        self.tree_root.join("cache")
    }
}

/// Build the worker-wide state.
pub fn shared(inputs: &RuntimeInputs, shutdown: watch::Receiver<bool>) -> Arc<Shared> {
    let settings = RuntimeSettings::from(&inputs.config);
    Arc::new(Shared {
        feed_transport: inputs
            .transport
            .for_feed()
            .unwrap_or_else(|| Arc::clone(&inputs.transport)),
        transport: Arc::clone(&inputs.transport),
        slots: SlotPool::new(settings.max_agents),
        held_waits: super::capabilities::HeldWaits::new(settings.held_waits_max),
        settings,
        status: Arc::new(StatusBoard::default()),
        processes: Arc::new(ProcessRegistry::default()),
        worker: WorkerInfo {
            user_id: inputs.user_id.clone(),
            instance_id: inputs.instance_id.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            started_at: super::capabilities::worker::now_utc(),
            shutdown,
        },
        secrets: inputs.secrets.clone(),
        jobs_dir: inputs.tree_root.join("jobs"),
        state_meter: super::state_meter::StateMeter::new(super::quotas::STATE_CHECK),
    })
}

/// Validate and run every section until all have ended (tests and benches: `start` validates at
/// preflight and runs the verdicts with [`run_until_stopped`]). `shutdown` flips to true to stop them
/// gracefully; `force` cancels whatever is still running at once.
pub async fn run_sections(
    runtime: Arc<Runtime>,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    force: watch::Receiver<bool>,
) -> RunReport {
    let jobs_dir = shared.jobs_dir.clone();
    let verdicts = match preflight::verdicts(
        &runtime.engine,
        &runtime.job_types,
        &shared.settings,
        &jobs_dir,
    )
    .await
    {
        Ok(verdicts) => verdicts,
        Err(errors) => {
            return RunReport {
                preflight: errors,
                sections: Vec::new(),
            };
        }
    };
    run_verdicts(runtime, shared, verdicts, shutdown, force).await
}

/// Run the sections of `verdicts`: at once, or, for a job type still compiling, once it is ready.
async fn run_verdicts(
    runtime: Arc<Runtime>,
    shared: Arc<Shared>,
    verdicts: Vec<preflight::Verdict>,
    shutdown: watch::Receiver<bool>,
    force: watch::Receiver<bool>,
) -> RunReport {
    let (waiting, ready): (Vec<_>, Vec<_>) =
        verdicts.into_iter().partition(|v| v.compiling.is_some());
    let plans = preflight::plans(ready, &shared);
    run_plans(runtime, shared, plans, waiting, shutdown, force).await
}

/// The planned sections, one task each.
type Plans = Vec<(
    Option<Arc<super::loader::LoadedJobType>>,
    section::SectionPlan,
)>;

fn spawn_sections(set: &mut JoinSet<Vec<(u32, SectionEnd)>>, runtime: &Arc<Runtime>, plans: Plans) {
    for (job, plan) in plans {
        let runtime = Arc::clone(runtime);
        let index = plan.record.index;
        set.spawn(async move {
            vec![(
                index,
                section::run(&runtime.engine, job.as_deref(), plan).await,
            )]
        });
    }
}

/// The sections of one job type compiling in the background (`waiting`): shown as `compiling`
/// until it is ready, then validated and run like the others.
async fn run_after_compile(
    runtime: Arc<Runtime>,
    shared: Arc<Shared>,
    waiting: Vec<preflight::Verdict>,
) -> Vec<(u32, SectionEnd)> {
    let Some(compiling) = waiting.first().and_then(|v| v.compiling.clone()) else {
        return Vec::new();
    };
    for v in &waiting {
        shared
            .status
            .register(v.record.index, &v.record.name, &v.record.job_type);
        shared.status.set_section(
            v.record.index,
            "compiling",
            &format!(
                "{} is compiled for this host once (the first start with it); the section starts when it is ready",
                compiling.path.display()
            ),
        );
    }
    let outcome = compiling.ready().await;
    for v in &waiting {
        shared.status.set_section(v.record.index, "starting", "");
    }
    let verdicts = preflight::after_compile(
        &runtime.engine,
        outcome,
        waiting,
        &shared.settings,
        &shared.jobs_dir,
    )
    .await;
    let plans = preflight::plans(verdicts, &shared);
    let mut set = JoinSet::new();
    spawn_sections(&mut set, &runtime, plans);
    let mut ends = Vec::new();
    while let Some(next) = set.join_next().await {
        match next {
            Ok(end) => ends.extend(end),
            Err(e) => tracing::error!(error = %e, "section_task_failed"),
        }
    }
    ends
}

/// Run the planned sections, and those `waiting` for their job type's compile, until all have
/// ended.
pub async fn run_plans(
    runtime: Arc<Runtime>,
    shared: Arc<Shared>,
    plans: Plans,
    waiting: Vec<preflight::Verdict>,
    mut shutdown: watch::Receiver<bool>,
    mut force: watch::Receiver<bool>,
) -> RunReport {
    let mut set = JoinSet::new();
    spawn_sections(&mut set, &runtime, plans);
    let mut by_job_type: std::collections::BTreeMap<String, Vec<preflight::Verdict>> =
        Default::default();
    for v in waiting {
        by_job_type
            .entry(v.record.job_type.clone())
            .or_default()
            .push(v);
    }
    for (_, group) in by_job_type {
        set.spawn(run_after_compile(
            Arc::clone(&runtime),
            Arc::clone(&shared),
            group,
        ));
    }
    let mut report = RunReport::default();
    let mut draining: Option<tokio::time::Instant> = None;
    // `shutdown.drain_timeout_ms`: how long sections get to return after the shutdown signal.
    let drain_bound = shared.settings.drain_timeout;
    loop {
        let deadline = draining.map(|d| d + drain_bound);
        tokio::select! {
            next = set.join_next() => match next {
                Some(Ok(ends)) => report.sections.extend(ends),
                Some(Err(e)) => tracing::error!(error = %e, "section_task_failed"),
                None => break,
            },
            Ok(_) = shutdown.wait_for(|d| *d), if draining.is_none() => {
                tracing::info!("shutdown_started");
                draining = Some(tokio::time::Instant::now());
            }
            // A dropped sender is not a request to force: the pattern disables the branch.
            Ok(_) = force.wait_for(|f| *f) => {
                tracing::warn!("shutdown_forced");
                set.abort_all();
                draining = Some(tokio::time::Instant::now() - drain_bound);
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600))), if deadline.is_some() => {
                tracing::warn!("drain_bound_exceeded");
                set.abort_all();
            }
        }
    }
    // Children of cancelled sections: SIGTERM, then SIGKILL after a grace.
    if !shared.processes.is_empty() {
        shared.processes.signal_all(libc::SIGTERM);
        tokio::time::sleep(CHILD_GRACE).await;
        shared.processes.signal_all(libc::SIGKILL);
    }
    report.sections.sort_by_key(|(i, _)| *i);
    report
}

/// Run the sections `verdicts` (preflight's, validated once) with the job types of `runtime`,
/// until `stop` asks for it (graceful on the first signal, forced on a second SIGINT: see
/// [`crate::signals`]). Sections that end on their own stay ended (refused until restart), and
/// a worker whose sections have all ended, or that has none, idles until it is told to stop.
/// `observe` gets the [`RunView`] once the worker-wide state exists, before any section runs.
pub async fn run_until_stopped(
    runtime: Arc<Runtime>,
    inputs: RuntimeInputs,
    verdicts: Vec<preflight::Verdict>,
    stop: StopRequests,
    observe: impl FnOnce(RunView),
) -> RunReport {
    for failure in &runtime.job_types.failures {
        tracing::warn!(error = %failure, "job_type_not_loaded");
    }
    let StopRequests { shutdown, force } = stop;
    let shared = shared(&inputs, shutdown.clone());
    observe(RunView {
        status: Arc::clone(&shared.status),
        slots: shared.slots.clone(),
        held_waits: shared.held_waits.clone(),
    });
    let mut waiting = shutdown.clone();
    let report = run_verdicts(runtime, shared, verdicts, shutdown, force).await;
    if !*waiting.borrow() {
        tracing::info!("all_sections_ended");
        let _ = waiting.wait_for(|d| *d).await;
    }
    report
}
