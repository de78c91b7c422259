//! The user-facing error of the process: a stable code, a message and a remediation hint.
//!
//! Library modules return their own `thiserror` types; the CLI converts them into a
//! [`CodedError`] at the boundary so that every refusal prints as `error: CODE: message` plus a
//! `hint:` line (design invariant 4), and so the exit status is decided in one place.

/// An error that ends a CLI command with a catalogued code (docs/operations.md).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct CodedError {
    /// A stable machine code such as `CREDENTIALS_NOT_FOUND`: one of the catalogue's, or a job
    /// type's own code from its `validate`, passed through as the job type wrote it.
    pub code: std::borrow::Cow<'static, str>,
    /// One sentence saying what is wrong.
    pub message: String,
    /// What the operator can do about it.
    pub hint: Option<String>,
}

impl CodedError {
    pub fn new(
        code: impl Into<std::borrow::Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl From<crate::api::ApiError> for CodedError {
    fn from(err: crate::api::ApiError) -> Self {
        use crate::api::ApiError;
        let hint = match &err {
            ApiError::AuthInvalid { .. } => "re-run `blobhub-worker login` with a valid API key",
            ApiError::RateLimited { .. } | ApiError::Transient { .. } => {
                "BlobHub is busy or failing; try again in a moment"
            }
            ApiError::Network { .. } => {
                "check the network and the API URL in credentials.yaml (`blobhub-worker whoami`)"
            }
            ApiError::CommandFailed { .. } => "see the platform's message above",
            ApiError::InvalidConfiguration { .. } => {
                "re-run `blobhub-worker login` with a valid API URL and key"
            }
        };
        CodedError::new(err.code(), err.to_string()).with_hint(hint)
    }
}

impl From<crate::state_tree::StateTreeError> for CodedError {
    fn from(err: crate::state_tree::StateTreeError) -> Self {
        use crate::state_tree::StateTreeError as E;
        let message = err.to_string();
        match err {
            E::NoHome => CodedError::new("STATE_TREE_ERROR", message)
                .with_hint(format!("set {}", crate::state_tree::HOME_ENV)),
            E::CredentialsMissing { .. } | E::CredentialsInvalid { .. } => {
                CodedError::new("CREDENTIALS_NOT_FOUND", message)
                    .with_hint("run `blobhub-worker login`")
            }
            E::CredentialsInsecure { path, .. } => {
                CodedError::new("INSECURE_CREDENTIALS_PERMISSIONS", message)
                    .with_hint(format!("chmod 600 {}", path.display()))
            }
            E::IdentityMissing { .. } | E::IdentityInvalid { .. } => {
                CodedError::new("IDENTITY_NOT_FOUND", message)
                    .with_hint("run `blobhub-worker login`")
            }
            E::Write { .. } => CodedError::new("STATE_TREE_ERROR", message)
                .with_hint("check the permissions of the state tree"),
        }
    }
}

impl From<crate::instance_lock::LockError> for CodedError {
    fn from(err: crate::instance_lock::LockError) -> Self {
        use crate::instance_lock::LockError as E;
        let message = err.to_string();
        match err {
            E::Held { holder, .. } => CodedError::new("WORKER_ALREADY_RUNNING", message)
                .with_hint(format!(
                    "stop the other worker first (pid {} on {}); a lock left by a dead process is replaced automatically",
                    holder.pid, holder.host
                )),
            E::Contended { .. } => CodedError::new("WORKER_ALREADY_RUNNING", message)
                .with_hint("another worker is starting on this state tree; stop it first"),
            E::Io { .. } => CodedError::new("STATE_TREE_ERROR", message)
                .with_hint("check the permissions of the state tree"),
        }
    }
}
