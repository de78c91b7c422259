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

/// A downloaded session file: the envelope and the bytes.
pub type DownloadFuture =
    Pin<Box<dyn Future<Output = Result<crate::api::Download, TransportError>> + Send>>;

fn no_binary_channel() -> TransportError {
    TransportError::InvalidConfiguration {
        detail: "this transport has no binary channel".into(),
    }
}

/// Sends one session command and returns the whole success envelope.
pub trait SessionTransport: Send + Sync + 'static {
    fn call(
        &self,
        channel: Channel,
        revision_id: &str,
        command: &str,
        args: Map<String, Value>,
    ) -> CallFuture;

    /// The transport the event feed polls through, on its own thread (`feed_thread`): one with
    /// connections of its own where the transport keeps any, so the feed's idle polls wake only
    /// that thread. `None`: this transport serves the feed as well.
    fn for_feed(&self) -> Option<std::sync::Arc<dyn SessionTransport>> {
        None
    }

    /// `GET /blobs/{org}/{blob}/revisions/{reference}` (`reference` may be `default`): the
    /// envelope holds `revision.id`. Sections configured with `revision_id: default` resolve it
    /// once through this before their first session call.
    fn revision(&self, org: &str, blob: &str, reference: &str) -> CallFuture {
        let _ = (org, blob);
        let id = reference.to_owned();
        Box::pin(async move { Ok(serde_json::json!({"revision": {"id": id}})) })
    }

    /// `upload_session_file` over the binary channel: `bytes` as the file, `args` (with
    /// `session_id`, `alias`, `name`, `content_type`) in the request header.
    fn upload_file(
        &self,
        revision_id: &str,
        args: Map<String, Value>,
        bytes: Vec<u8>,
    ) -> CallFuture {
        let _ = (revision_id, args, bytes);
        Box::pin(async { Err(no_binary_channel()) })
    }

    /// `download_session_file` over the binary channel, at most `limit` bytes.
    fn download_file(
        &self,
        revision_id: &str,
        args: Map<String, Value>,
        limit: u64,
    ) -> DownloadFuture {
        let _ = (revision_id, args, limit);
        Box::pin(async { Err(no_binary_channel()) })
    }
}
