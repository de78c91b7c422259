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

/// A page of events read through a prepared query.
pub type EventsFuture<'a> =
    Pin<Box<dyn Future<Output = Result<EventsPage, TransportError>> + Send + 'a>>;

/// A query prepared once to be sent again and again ([`SessionTransport::prepare_query`]).
#[derive(Debug, Clone)]
pub enum PreparedQuery {
    /// Sent through [`SessionTransport::call`] each time.
    Call {
        revision_id: String,
        command: String,
        args: Map<String, Value>,
    },
    /// The HTTP client's own preparation.
    Http(crate::api::PreparedQuery),
}

/// A page of `list_session_events`: its events, oldest first as the platform sent them, and
/// the next page's cursor (`None` on the last page).
#[derive(Debug, Default, PartialEq)]
pub struct EventsPage {
    pub events: Vec<Value>,
    pub cursor: Option<String>,
}

/// A plain success page, as [`EventsPage::read`] reads it.
#[derive(serde::Deserialize)]
struct PageIn {
    #[allow(dead_code, reason = "read to accept only a success")]
    status: Success,
    session_events: Vec<Value>,
    #[serde(default)]
    cursor: Option<String>,
}

#[derive(serde::Deserialize)]
enum Success {
    #[serde(rename = "success")]
    Success,
}

impl EventsPage {
    /// The page in a success envelope: `session_events` when it is an array (else none), and
    /// `cursor` when it is a non-empty string.
    pub fn from_envelope(mut envelope: Value) -> EventsPage {
        let events = match envelope.get_mut("session_events").map(Value::take) {
            Some(Value::Array(events)) => events,
            _ => Vec::new(),
        };
        let cursor = envelope["cursor"]
            .as_str()
            .filter(|c| !c.is_empty())
            .map(str::to_owned);
        EventsPage { events, cursor }
    }

    /// The page read straight from a success answer's bytes, with no envelope built: what
    /// [`EventsPage::from_envelope`] makes of them, or `None` for an answer that is not a plain
    /// success page (another `status`, a field of another type, a repeated key, JSON too deep
    /// to read), which the envelope's classification then decides. An empty page allocates
    /// nothing.
    pub fn read(body: &[u8]) -> Option<EventsPage> {
        let page: PageIn = serde_json::from_slice(body).ok()?;
        Some(EventsPage {
            events: page.session_events,
            cursor: page.cursor.filter(|c| !c.is_empty()),
        })
    }
}

/// A downloaded session file: the envelope and the bytes.
pub type DownloadFuture =
    Pin<Box<dyn Future<Output = Result<crate::api::Download, TransportError>> + Send>>;

/// A page of `list_session_events` through `transport`'s [`SessionTransport::call`], for a query
/// prepared as [`PreparedQuery::Call`]; a query another transport prepared is refused.
pub fn events_by_call<'a, T: SessionTransport + ?Sized>(
    transport: &'a T,
    query: &'a PreparedQuery,
) -> EventsFuture<'a> {
    let PreparedQuery::Call {
        revision_id,
        command,
        args,
    } = query
    else {
        return Box::pin(async {
            Err(TransportError::InvalidConfiguration {
                detail: "a query prepared by another transport".into(),
            })
        });
    };
    let call = transport.call(Channel::Query, revision_id, command, args.clone());
    Box::pin(async move { call.await.map(EventsPage::from_envelope) })
}

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

    /// `command` with `args` (`session_id` among them), prepared to be sent again and again
    /// through [`SessionTransport::list_events`]: the event feed's page request, the same poll
    /// after poll while nothing happens. By default nothing is prepared.
    fn prepare_query(
        &self,
        revision_id: &str,
        command: &str,
        args: Map<String, Value>,
    ) -> PreparedQuery {
        PreparedQuery::Call {
            revision_id: revision_id.to_owned(),
            command: command.to_owned(),
            args,
        }
    }

    /// A page of `list_session_events` through a query [`SessionTransport::prepare_query`]
    /// prepared. By default, [`SessionTransport::call`] and the page in its envelope.
    fn list_events<'a>(&'a self, query: &'a PreparedQuery) -> EventsFuture<'a> {
        events_by_call(self, query)
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// What the general path makes of a success body: the whole envelope, then the page in it.
    fn through_envelope(body: &str) -> Option<EventsPage> {
        let envelope: Value = serde_json::from_str(body).ok()?;
        (envelope["status"] == "success").then(|| EventsPage::from_envelope(envelope))
    }

    #[test]
    fn an_idle_page_reads_without_an_envelope() {
        let body = r#"{"status":"success","session_events":[],"cursor":null}"#;
        assert_eq!(
            EventsPage::read(body.as_bytes()),
            Some(EventsPage::default())
        );
        let body = r#"{"cursor":"c2","session_events":[{"id":"e1","x":[1,{"y":null}]}],"status":"success","extra":{"z":1}}"#;
        let page = EventsPage::read(body.as_bytes()).unwrap();
        assert_eq!(page.events, [json!({"id": "e1", "x": [1, {"y": null}]})]);
        assert_eq!(page.cursor.as_deref(), Some("c2"));
        assert_eq!(through_envelope(body), Some(page));
    }

    #[test]
    fn anything_but_a_plain_success_page_is_left_to_the_envelope() {
        for body in [
            r#"{"status":"error","error":"not_found","session_events":[]}"#,
            r#"{"status":"success"}"#,
            r#"{"status":"success","session_events":null}"#,
            r#"{"status":"success","session_events":[],"cursor":7}"#,
            r#"{"status":"success","status":"success","session_events":[]}"#,
            r#"{"status":"success","session_events":[]"#,
            "",
        ] {
            assert_eq!(EventsPage::read(body.as_bytes()), None, "{body}");
        }
        // The envelope then reads what it can: no events, no cursor.
        let page = through_envelope(r#"{"status":"success","session_events":"x","cursor":7}"#);
        assert_eq!(page, Some(EventsPage::default()));
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("null".to_owned()),
            Just("7".to_owned()),
            Just("\"\"".to_owned()),
            Just("\"success\"".to_owned()),
            Just("\"c\\u0031\"".to_owned()),
            Just("[]".to_owned()),
            Just(r#"[{"id":"e1","created_at":"t1"},{"created_at":"t2"}]"#.to_owned()),
            Just(r#"{"a":[1,2]}"#.to_owned()),
        ]
    }

    proptest! {
        /// Whatever the answer, a page read straight from its bytes is the page its envelope
        /// holds: the fast reading never changes what the feed sees, it only declines.
        #[test]
        fn a_page_read_directly_is_the_envelopes_page(
            fields in proptest::collection::vec(
                (prop_oneof![
                    Just("status"), Just("session_events"), Just("cursor"), Just("other"),
                ], value()),
                0..6,
            ),
        ) {
            let members: Vec<String> =
                fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            let body = format!("{{{}}}", members.join(","));
            if let Some(page) = EventsPage::read(body.as_bytes()) {
                prop_assert_eq!(Some(page), through_envelope(&body), "{}", body);
            }
        }
    }
}
