//! The seam with the CLI: `run(StartContext)` for `start`, the preflight hook of
//! `job_type_check`, and the adapter of the foundation's `api::Client` to [`SessionTransport`].

use std::process::ExitCode;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::supervisor::{RunView, Runtime, RuntimeInputs, run_until_stopped};
use super::transport::{CallFuture, Channel, SessionTransport, TransportError};
use crate::api::{ApiError, Client};
use crate::config::Config;
use crate::signals::StopRequests;
use crate::start::StartContext;

impl From<ApiError> for TransportError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::AuthInvalid { .. } => TransportError::AuthInvalid,
            ApiError::RateLimited { .. } => TransportError::RateLimited(e.to_string()),
            ApiError::Transient { .. } => TransportError::Transient(e.to_string()),
            ApiError::Network { .. } | ApiError::InvalidConfiguration { .. } => {
                TransportError::Network(e.to_string())
            }
            ApiError::CommandFailed {
                status,
                error,
                message,
            } => TransportError::CommandFailed {
                status,
                error,
                message,
            },
        }
    }
}

/// The foundation's client as the runtime's transport (it owns the key and the retries).
pub struct ClientTransport(pub Client);

impl SessionTransport for ClientTransport {
    fn call(
        &self,
        channel: Channel,
        revision_id: &str,
        command: &str,
        args: Map<String, Value>,
    ) -> CallFuture {
        let client = self.0.clone();
        let (revision_id, command) = (revision_id.to_owned(), command.to_owned());
        Box::pin(async move {
            let answer = match channel {
                Channel::Query => client.query(&revision_id, &command, args).await,
                Channel::Command => client.command(&revision_id, &command, args).await,
            };
            Ok(answer?)
        })
    }

    fn revision(&self, org: &str, blob: &str, reference: &str) -> CallFuture {
        let client = self.0.clone();
        let (org, blob, reference) = (org.to_owned(), blob.to_owned(), reference.to_owned());
        Box::pin(async move { Ok(client.revision(&org, &blob, &reference).await?) })
    }
}

/// Load the bundled job types and those installed in the state tree's `plugins/` folder
/// (compiled code cached in `cache/`). Done once per start, at preflight; `run` reuses it.
pub async fn load_job_types(tree_root: &std::path::Path) -> anyhow::Result<Arc<Runtime>> {
    let runtime = Runtime::load(
        Some(tree_root.join("plugins")),
        Some(tree_root.join("cache")),
    )
    .await?;
    Ok(Arc::new(runtime))
}

/// Run the started worker with the job types loaded at preflight until `stop` asks for it.
/// `observe` gets the status board and slot pool as soon as they exist (the dashboard's view).
pub async fn run(
    ctx: StartContext,
    runtime: Arc<Runtime>,
    stop: StopRequests,
    observe: impl FnOnce(RunView),
) -> anyhow::Result<ExitCode> {
    let api_key = ctx
        .tree
        .load_credentials()
        .map(|c| c.api.key.expose().to_owned())
        .unwrap_or_default();
    let inputs = RuntimeInputs {
        config: ctx.config.clone(),
        transport: Arc::new(ClientTransport(ctx.client.clone())),
        tree_root: ctx.tree.root().to_path_buf(),
        user_id: ctx.identity.user.user_id.clone(),
        instance_id: ctx.instance.instance_id.clone(),
        secrets: vec![api_key],
    };
    let report = run_until_stopped(runtime, inputs, stop, observe).await;
    if !report.preflight.is_empty() {
        for e in &report.preflight {
            eprintln!("error: {e}");
        }
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The job-type step of preflight, for `job_type_check`: (fatal, code, field path, message) of
/// every refusal. Calls the `validate` exports of `runtime`'s job types; contacts no server. A
/// job type whose `validate` itself broke is not fatal: its sections end at once with that code
/// and the others start.
pub async fn validate_config(
    runtime: &Arc<Runtime>,
    config: &Config,
    tree_root: &std::path::Path,
) -> Vec<(bool, String, String, String)> {
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let inputs = RuntimeInputs {
        config: config.clone(),
        transport: Arc::new(super::section::NoTransport),
        tree_root: tree_root.to_path_buf(),
        user_id: String::new(),
        instance_id: String::new(),
        secrets: Vec::new(),
    };
    let shared = super::supervisor::shared(&inputs, rx);
    match super::preflight::check(
        &runtime.engine,
        &runtime.job_types,
        &shared,
        &shared.jobs_dir,
    )
    .await
    {
        // A job type whose validate broke: `start` would run the other sections, but a check
        // reports it as the error it is.
        Ok(plans) => plans
            .into_iter()
            .filter_map(|(_, plan)| {
                let (code, message) = plan.refused?;
                Some((
                    false,
                    code,
                    format!("sections[{}]", plan.record.index),
                    message,
                ))
            })
            .collect(),
        Err(errors) => errors
            .into_iter()
            .map(|e| (true, e.code, e.field.unwrap_or_default(), e.message))
            .collect(),
    }
}
