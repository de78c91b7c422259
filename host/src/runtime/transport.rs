//! The seam between the session capability and the HTTP client.
//!
//! The runtime talks to BlobHub only through [`SessionTransport`]; `mod.rs` adapts the
//! foundation's `api::Client` to it, and tests may substitute their own. The transport owns the
//! API key, authentication and retries: nothing here ever sees the key.

use std::future::Future;
use std::pin::Pin;

use serde_json::{Map, Value};

/// The platform's two endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Query,
    Command,
}

/// A failed call: the HTTP client's own error ([`crate::api::ApiError`]), relayed unchanged to
/// the session capability, which maps it to the WIT `api-error` in one place.
pub use crate::api::ApiError as TransportError;

pub type CallFuture = Pin<Box<dyn Future<Output = Result<Value, TransportError>> + Send>>;

/// Sends one session command and returns the whole success envelope.
pub trait SessionTransport: Send + Sync + 'static {
    fn call(
        &self,
        channel: Channel,
        revision_id: &str,
        command: &str,
        args: Map<String, Value>,
    ) -> CallFuture;

    /// `GET /blobs/{org}/{blob}/revisions/{reference}` (`reference` may be `default`): the
    /// envelope holds `revision.id`. Sections configured with `revision_id: default` resolve it
    /// once through this before their first session call.
    fn revision(&self, org: &str, blob: &str, reference: &str) -> CallFuture {
        let _ = (org, blob);
        let id = reference.to_owned();
        Box::pin(async move { Ok(serde_json::json!({"revision": {"id": id}})) })
    }
}
