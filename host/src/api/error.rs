//! Typed failures of BlobHub calls, each with a stable code (docs/operations.md).

use std::time::Duration;

/// A failed BlobHub call, classified by what the platform's answer means to a caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 401 or 403. The platform answers 403 for many absent resources too, so callers that
    /// read objects treat this as "gone or forbidden". Never retried.
    #[error("BlobHub refused the API key (HTTP {status})")]
    AuthInvalid { status: u16 },
    /// 429. The request did not run.
    #[error("BlobHub rate-limited the request{}", retry_after_text(.retry_after))]
    RateLimited { retry_after: Option<Duration> },
    /// 5xx, or a body that is not JSON. A write may have been stored.
    #[error("BlobHub answered with a transient error: {detail}")]
    Transient { status: Option<u16>, detail: String },
    /// The request could not be completed. `never_ran` is true for connect failures, where the
    /// server provably never saw the request; a read error or timeout may have run it.
    #[error("cannot reach BlobHub: {detail}")]
    Network { never_ran: bool, detail: String },
    /// A JSON failure envelope: the platform's `error` code and `message`.
    #[error("BlobHub refused the request (HTTP {status}): {error}: {message}")]
    CommandFailed {
        status: u16,
        error: String,
        message: String,
    },
    /// The client could not be built (bad URL, TLS setup).
    #[error("invalid BlobHub client configuration: {detail}")]
    InvalidConfiguration { detail: String },
}

fn retry_after_text(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!(" (Retry-After {} s)", d.as_secs_f64()),
        None => String::new(),
    }
}

impl ApiError {
    /// The stable code (docs/operations.md).
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::AuthInvalid { .. } => "AUTH_INVALID",
            ApiError::RateLimited { .. } => "API_RATE_LIMITED",
            ApiError::Transient { .. } => "API_TRANSIENT_ERROR",
            ApiError::Network { .. } => "API_NETWORK_ERROR",
            ApiError::CommandFailed { .. } => "API_COMMAND_FAILED",
            ApiError::InvalidConfiguration { .. } => "API_INVALID_CONFIGURATION",
        }
    }

    /// Rate limits, 5xx, non-JSON bodies and network failures: worth trying again later.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ApiError::RateLimited { .. } | ApiError::Transient { .. } | ApiError::Network { .. }
        )
    }

    /// The request provably did not run (429, connect failure): a write may be re-sent.
    pub fn never_ran(&self) -> bool {
        matches!(
            self,
            ApiError::RateLimited { .. }
                | ApiError::Network {
                    never_ran: true,
                    ..
                }
        )
    }

    /// The platform's machine code for a failure envelope (`not_found`, `session_not_open`, …).
    pub fn platform_error(&self) -> Option<&str> {
        match self {
            ApiError::CommandFailed { error, .. } => Some(error),
            _ => None,
        }
    }
}
