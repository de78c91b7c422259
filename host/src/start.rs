//! Preflight of `start` and the context handed to the runtime.
//!
//! The checks run in this order (docs/operations.md), each ending the process with its code
//! and touching nothing on the server:
//!
//! 1. `CREDENTIALS_NOT_FOUND`: `credentials.yaml` missing or invalid.
//! 2. `INSECURE_CREDENTIALS_PERMISSIONS`: `credentials.yaml` has a group/other bit (checked
//!    before the file is parsed, so an exposed key is never used).
//! 3. `IDENTITY_NOT_FOUND`: `identity.yaml` missing or invalid.
//! 4. `INVALID_CONFIG`: `config.yaml` missing, not YAML, or failing the schema.
//! 5. Job-type validation (`UNKNOWN_JOB_TYPE`, `MISSING_SESSION_KEYS`,
//!    `DUPLICATE_SECTION_TARGET`, …): [`crate::job_type_check::validate_sections`].
//! 6. `WORKER_ALREADY_RUNNING`: the instance lock.
//! 7. `AUTH_INVALID` / `USER_IDENTITY_MISMATCH` (and `API_*` when BlobHub cannot be reached):
//!    `GET /users/me`, the only network call of preflight.
//!
//! The local checks come first so that a broken setup is reported without a network round
//! trip. The lock is taken before the network check so that a second start on the same tree is
//! told `WORKER_ALREADY_RUNNING` even when BlobHub is unreachable, and so that the identity
//! check and everything after it happen under the lock; a failed network check releases it.

use std::fmt::Write as _;

use crate::api::{Client, UserInfo};
use crate::coded::CodedError;
use crate::config::{self, Config, Diagnostic, Severity};
use crate::instance_lock::{InstanceInfo, InstanceLock};
use crate::state_tree::{Identity, StateTree};

/// Everything the runtime needs to run the sections of a started worker.
#[derive(Debug, Clone)]
pub struct StartContext {
    pub config: Config,
    pub client: Client,
    /// The identity recorded by `login` and confirmed by the server at preflight.
    pub identity: Identity,
    pub instance: InstanceInfo,
    pub tree: StateTree,
    /// `start --tui`: show the dashboard instead of log lines.
    pub tui: bool,
}

/// A passed preflight: the context, the job types the sections were validated with, the held
/// lock (released by the caller after the runtime returns) and the config warnings to show.
pub struct Started {
    pub context: StartContext,
    pub runtime: std::sync::Arc<crate::runtime::Runtime>,
    /// Preflight's verdict on every section, which `run` runs: each job type's `validate` is
    /// called once per start.
    pub verdicts: Vec<crate::runtime::preflight::Verdict>,
    pub lock: InstanceLock,
    pub warnings: Vec<Diagnostic>,
    /// The user `GET /users/me` answered with.
    pub user: UserInfo,
}

/// Runs the preflight checks in the documented order.
pub async fn preflight(tree: StateTree, tui: bool) -> Result<Started, CodedError> {
    // 1 and 2: `load_credentials` checks the mode before it parses.
    let credentials = tree.load_credentials()?;
    // 3.
    let identity = tree.load_identity()?;
    // 4.
    let report = config::load_file(&tree.config_path());
    let warnings: Vec<Diagnostic> = report.warnings().cloned().collect();
    let Some(config) = report.config.clone() else {
        let errors: Vec<&Diagnostic> = report.errors().collect();
        return Err(diagnostics_error("INVALID_CONFIG", &tree, &errors));
    };
    // 5.
    let check = crate::job_type_check::validate_sections(&config, &tree, &report.lines, true).await;
    let job_type_diagnostics = check.diagnostics;
    let verdicts = check.verdicts.unwrap_or_default();
    let job_type_errors: Vec<&Diagnostic> = job_type_diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    if let Some(first) = job_type_errors.first() {
        // The first diagnostic's code, as its job type wrote it (a third-party code included).
        let code = first.code.clone();
        return Err(diagnostics_error(code, &tree, &job_type_errors));
    }
    let Some(runtime) = check.runtime else {
        // Unreachable in practice: without a runtime the check reports an error above.
        return Err(CodedError::new(
            "JOB_TYPE_INVALID",
            "the job types could not be loaded",
        ));
    };
    let mut warnings = warnings;
    warnings.extend(job_type_diagnostics);
    if let crate::runtime::child_sandbox::Support::Unavailable(why) =
        crate::runtime::child_sandbox::support()
    {
        warnings.push(Diagnostic {
            severity: Severity::Warning,
            code: "CHILD_SANDBOX_UNAVAILABLE".into(),
            path: String::new(),
            line: None,
            message: format!(
                "this kernel refuses the namespaces that hide the state tree from agents and other programs ({why}); they will run able to read credentials.yaml"
            ),
        });
    }
    // 6.
    tree.ensure_dirs().map_err(|e| {
        CodedError::new(
            "STATE_TREE_ERROR",
            format!("cannot create {}: {e}", tree.root().display()),
        )
    })?;
    let instance = InstanceInfo::for_this_process(env!("CARGO_PKG_VERSION"));
    let lock = InstanceLock::acquire(&tree.instance_path(), instance.clone())?;
    // 7. On failure the lock is dropped, which removes instance.yaml.
    let client = Client::new(
        &credentials.api.url,
        credentials.api.key.expose(),
        config.retry_policy(),
    )?;
    let user = client.users_me().await?;
    if user.id != identity.user.user_id {
        return Err(CodedError::new(
            "USER_IDENTITY_MISMATCH",
            format!(
                "the API key belongs to {} but this state tree was recorded for {}",
                user.id, identity.user.user_id
            ),
        )
        .with_hint(
            "run `blobhub-worker login` to switch users, or restore the previous identity.yaml",
        ));
    }
    Ok(Started {
        context: StartContext {
            config,
            client,
            identity,
            instance,
            tree,
            tui,
        },
        runtime,
        verdicts,
        lock,
        warnings,
        user,
    })
}

/// Run a started worker: the sections preflight validated, with the job types it loaded, until
/// `stop` asks for it. `observe` gets the status board and slot pool as soon as they exist (the
/// dashboard's view).
pub async fn run(
    context: StartContext,
    runtime: std::sync::Arc<crate::runtime::Runtime>,
    verdicts: Vec<crate::runtime::preflight::Verdict>,
    stop: crate::signals::StopRequests,
    observe: impl FnOnce(crate::runtime::supervisor::RunView),
) {
    let api_key = context
        .tree
        .load_credentials()
        .map(|c| c.api.key.expose().to_owned())
        .unwrap_or_default();
    let inputs = crate::runtime::RuntimeInputs {
        config: context.config.clone(),
        transport: std::sync::Arc::new(crate::runtime::start::ClientTransport(
            context.client.clone(),
        )),
        tree_root: context.tree.root().to_path_buf(),
        user_id: context.identity.user.user_id.clone(),
        instance_id: context.instance.instance_id.clone(),
        secrets: vec![api_key],
    };
    crate::runtime::supervisor::run_until_stopped(runtime, inputs, verdicts, stop, observe).await;
}

/// One error naming the file and listing every problem, each on its own line.
pub fn diagnostics_error(
    code: impl Into<std::borrow::Cow<'static, str>>,
    tree: &StateTree,
    errors: &[&Diagnostic],
) -> CodedError {
    let code = code.into();
    let path = tree.config_path();
    let mut message = match errors {
        [one] => format!("{}: {one}", path.display()),
        many => format!("{} has {} problems:", path.display(), many.len()),
    };
    if errors.len() > 1 {
        for d in errors {
            let _ = write!(message, "\n  {d}");
            if d.code != *code {
                let _ = write!(message, " [{}]", d.code);
            }
        }
    }
    CodedError::new(code, message).with_hint(
        "fix config.yaml (`blobhub-worker config check` lists every problem; see docs/configuration.md)",
    )
}
