//! The runtime's side of `start`: loading the job types, the job-type step of preflight (whose
//! verdicts `start` then runs, so each `validate` is called once per start), and the adapter of
//! the foundation's `api::Client` to [`SessionTransport`]. Nothing here imports the CLI.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::preflight::Verdict;
use super::supervisor::{Runtime, RuntimeInputs};
use super::transport::{
    CallFuture, Channel, DownloadFuture, EventsFuture, EventsPage, PreparedQuery, SessionTransport,
    events_by_call,
};
use crate::api::{Client, Read};
use crate::config::Config;

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
            match channel {
                Channel::Query => client.query(&revision_id, &command, args).await,
                Channel::Command => client.command(&revision_id, &command, args).await,
            }
        })
    }

    fn prepare_query(
        &self,
        revision_id: &str,
        command: &str,
        args: Map<String, Value>,
    ) -> PreparedQuery {
        PreparedQuery::Http(self.0.prepare_query(revision_id, command, args))
    }

    fn list_events<'a>(&'a self, query: &'a PreparedQuery) -> EventsFuture<'a> {
        let PreparedQuery::Http(prepared) = query else {
            return events_by_call(self, query);
        };
        Box::pin(async move {
            match self.0.query_prepared(prepared, EventsPage::read).await? {
                Read::Typed(page) => Ok(page),
                Read::Envelope(envelope) => Ok(EventsPage::from_envelope(envelope)),
            }
        })
    }

    fn for_feed(&self) -> Option<Arc<dyn SessionTransport>> {
        // Building a client fails only on bad TLS setup, which `new` met first; then the feed
        // shares this one.
        let own = self.0.with_own_connections().ok()?;
        Some(Arc::new(ClientTransport(own)))
    }

    fn revision(&self, org: &str, blob: &str, reference: &str) -> CallFuture {
        let client = self.0.clone();
        let (org, blob, reference) = (org.to_owned(), blob.to_owned(), reference.to_owned());
        Box::pin(async move { client.revision(&org, &blob, &reference).await })
    }

    fn upload_file(
        &self,
        revision_id: &str,
        args: Map<String, Value>,
        bytes: Vec<u8>,
    ) -> CallFuture {
        let client = self.0.clone();
        let revision_id = revision_id.to_owned();
        Box::pin(async move { client.upload_session_file(&revision_id, args, bytes).await })
    }

    fn download_file(
        &self,
        revision_id: &str,
        args: Map<String, Value>,
        limit: u64,
    ) -> DownloadFuture {
        let client = self.0.clone();
        let revision_id = revision_id.to_owned();
        Box::pin(async move {
            client
                .download_session_file(&revision_id, args, limit)
                .await
        })
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

/// [`load_job_types`] for `start`: an installed component missing from the cache compiles in
/// the background, and only its sections wait for it (docs/architecture.md, "No compile on any
/// start").
pub async fn load_job_types_for_start(tree_root: &std::path::Path) -> anyhow::Result<Arc<Runtime>> {
    let runtime = Runtime::load_for_start(
        Some(tree_root.join("plugins")),
        Some(tree_root.join("cache")),
    )
    .await?;
    Ok(Arc::new(runtime))
}

/// A refusal of the job-type step: (fatal, code, field path, message).
pub type Refusal = (bool, String, String, String);

/// The job-type step of preflight, for `job_type_check`: every refusal, and the verdicts when
/// none is fatal. Calls each job type's `validate` export once; contacts no server. A job type
/// whose `validate` itself broke is not fatal: its sections end at once with that code and the
/// others start.
pub async fn validate_config(
    runtime: &Arc<Runtime>,
    config: &Config,
    tree_root: &std::path::Path,
) -> (Vec<Refusal>, Option<Vec<Verdict>>) {
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let inputs = RuntimeInputs {
        config: config.clone(),
        transport: Arc::new(super::store::NoTransport),
        tree_root: tree_root.to_path_buf(),
        user_id: String::new(),
        instance_id: String::new(),
        secrets: Vec::new(),
    };
    let shared = super::supervisor::shared(&inputs, rx);
    match super::preflight::verdicts(
        &runtime.engine,
        &runtime.job_types,
        &shared.settings,
        &shared.jobs_dir,
    )
    .await
    {
        // A job type whose validate broke: `start` runs the other sections, and a check reports
        // it as a warning.
        // A job type's warnings are shown the same way.
        Ok(verdicts) => {
            let refusals = verdicts
                .iter()
                .flat_map(|v| {
                    let refused = v.refused.clone().map(|(code, message)| {
                        (
                            false,
                            code,
                            format!("sections[{}]", v.record.index),
                            message,
                        )
                    });
                    let warnings = v.warnings.iter().map(|w| {
                        (
                            false,
                            w.code.clone(),
                            w.field.clone().unwrap_or_default(),
                            w.message.clone(),
                        )
                    });
                    refused.into_iter().chain(warnings)
                })
                .collect();
            (refusals, Some(verdicts))
        }
        Err(errors) => (
            errors
                .into_iter()
                .map(|e| (!e.warning, e.code, e.field.unwrap_or_default(), e.message))
                .collect(),
            None,
        ),
    }
}
