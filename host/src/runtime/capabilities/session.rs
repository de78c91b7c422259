//! `blobhub:worker/session`: the session API bound to this section's session only.
//!
//! The guest names objects and threads by alias; the host adds `session_id` itself, so there is
//! no argument through which a guest could reach another session. Aliases are checked against
//! the alias grammar (relative `/`-separated segments of `[A-Za-z0-9._-]`, no `.`/`..`), and JSON
//! arguments must be objects (or an array for `content`); anything else is refused before a
//! request is made.

use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};
use wasmtime::component::Resource;
use wasmtime_wasi::p2::DynPollable;

use crate::runtime::pending::Pending;
use crate::runtime::store::SectionHost;
use crate::runtime::transport::{Channel, PreparedQuery, SessionTransport, TransportError};
use crate::runtime::wit::latest::session::{self as wit, ApiError, CommandFailure, Page};
use crate::runtime::wit::latest::types::SessionTarget;

/// The section's session as configured, and the id bound by the first successful `get_session`.
#[derive(Debug, Clone)]
pub struct SessionBinding {
    pub org_id: String,
    pub blob_id: String,
    pub revision_id: String,
    /// As configured: an id or an alias.
    pub session_ref: String,
    pub bound_id: Arc<Mutex<Option<String>>>,
    /// The revision id once it has been read (and `default` resolved).
    pub resolved_revision: Arc<Mutex<Option<String>>>,
}

impl SessionBinding {
    /// Bound to the section's session target (the WIT `section.target`); a section without one
    /// gets an empty target, and the platform refuses every command of it.
    pub fn for_target(target: Option<&SessionTarget>) -> SessionBinding {
        let (org_id, blob_id, revision_id, session_ref) = match target {
            Some(t) => (
                t.org_id.clone(),
                t.blob_id.clone(),
                t.revision_id.clone(),
                t.session.clone(),
            ),
            None => Default::default(),
        };
        SessionBinding {
            org_id,
            blob_id,
            revision_id,
            session_ref,
            bound_id: Arc::new(Mutex::new(None)),
            resolved_revision: Arc::new(Mutex::new(None)),
        }
    }

    /// For stores that run no section.
    pub fn unbound() -> SessionBinding {
        SessionBinding::for_target(None)
    }

    fn session_id(&self) -> String {
        self.bound_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| self.session_ref.clone())
    }
}

/// Not a data-channel command: `GET /blobs/{org}/{blob}/revisions/{revision}` (named as the
/// client counts it).
const GET_REVISION: &str = "get_revision";

/// A request in flight (`reply`).
pub type ReplyHandle = Pending<Result<String, ApiError>>;

pub(crate) fn died(message: String) -> Result<String, ApiError> {
    Err(ApiError::Transient(format!(
        "the request task ended: {message}"
    )))
}

/// The HTTP client's failure as the guest sees it: the one mapping from the host's error shape
/// to the WIT's. The messages are the client's own (they name the HTTP status and the cause).
impl From<TransportError> for ApiError {
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::AuthInvalid { .. } => ApiError::AuthInvalid,
            TransportError::RateLimited { .. } => ApiError::RateLimited(e.to_string()),
            TransportError::Transient { .. } => ApiError::Transient(e.to_string()),
            TransportError::Network { .. } | TransportError::InvalidConfiguration { .. } => {
                ApiError::Network(e.to_string())
            }
            TransportError::CommandFailed {
                status,
                error,
                message,
            } => ApiError::CommandFailed(CommandFailure {
                status,
                error,
                message,
            }),
        }
    }
}

/// The platform's alias grammar ([`blobhub_alias`]). Refusing anything else here gives the guest
/// a precise error without a round trip.
pub fn check_alias(alias: &str) -> Result<(), String> {
    if blobhub_alias::is_valid(alias) {
        Ok(())
    } else {
        Err(format!(
            "`{alias}` is not a session object alias ({})",
            blobhub_alias::GRAMMAR
        ))
    }
}

fn parse_json(what: &str, text: &str, want_array: bool) -> Result<Value, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("{what} is not JSON: {e}"))?;
    let ok = if want_array {
        value.is_array()
    } else {
        value.is_object()
    };
    if ok {
        Ok(value)
    } else {
        Err(format!(
            "{what} must be a JSON {}",
            if want_array { "array" } else { "object" }
        ))
    }
}

fn page_args(page: &Page, args: &mut Map<String, Value>) {
    args.insert("ascending".into(), json!(page.ascending));
    if let Some(v) = &page.created_since {
        args.insert("created_since".into(), json!(v));
    }
    if let Some(v) = &page.cursor {
        args.insert("cursor".into(), json!(v));
    }
    if let Some(v) = page.limit {
        args.insert("limit".into(), json!(v.clamp(1, 1000)));
    }
}

/// Sends one command for `binding`'s session. Used by the capability and the feed poller.
pub async fn call(
    transport: &dyn SessionTransport,
    binding: &SessionBinding,
    channel: Channel,
    command: &str,
    mut args: Map<String, Value>,
) -> Result<Value, ApiError> {
    args.insert("session_id".into(), json!(binding.session_id()));
    let revision = revision_id(transport, binding).await?;
    Ok(transport.call(channel, &revision, command, args).await?)
}

/// `command` with `args` for `binding`'s session, prepared by `transport` to be sent again and
/// again ([`SessionTransport::list_events`]).
pub async fn prepare_query(
    transport: &dyn SessionTransport,
    binding: &SessionBinding,
    command: &str,
    mut args: Map<String, Value>,
) -> Result<PreparedQuery, ApiError> {
    args.insert("session_id".into(), json!(binding.session_id()));
    let revision = revision_id(transport, binding).await?;
    Ok(transport.prepare_query(&revision, command, args))
}

/// Whether the section's `session` block names all four keys (else nothing is sent).
fn is_bound(binding: &SessionBinding) -> bool {
    [
        &binding.org_id,
        &binding.blob_id,
        &binding.revision_id,
        &binding.session_ref,
    ]
    .iter()
    .all(|v| !v.is_empty())
}

fn unbound_refusal() -> ApiError {
    ApiError::Refused("this section has no complete `session` block: nothing was sent".to_owned())
}

/// `upload_session_file` of `bytes` for `binding`'s session (the files capability).
pub async fn call_upload(
    transport: &dyn SessionTransport,
    binding: &SessionBinding,
    mut args: Map<String, Value>,
    bytes: Vec<u8>,
) -> Result<Value, ApiError> {
    if !is_bound(binding) {
        return Err(unbound_refusal());
    }
    args.insert("session_id".into(), json!(binding.session_id()));
    let revision = revision_id(transport, binding).await?;
    Ok(transport.upload_file(&revision, args, bytes).await?)
}

/// `download_session_file` for `binding`'s session, at most `limit` bytes (the files
/// capability). A file over the limit is refused.
pub async fn call_download(
    transport: &dyn SessionTransport,
    binding: &SessionBinding,
    mut args: Map<String, Value>,
    limit: u64,
) -> Result<crate::api::Download, ApiError> {
    if !is_bound(binding) {
        return Err(unbound_refusal());
    }
    args.insert("session_id".into(), json!(binding.session_id()));
    let revision = revision_id(transport, binding).await?;
    match transport.download_file(&revision, args, limit).await {
        Ok(d) => Ok(d),
        Err(TransportError::CommandFailed { error, message, .. }) if error == "file_too_large" => {
            Err(ApiError::Refused(format!(
                "the file was not kept: {message}"
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// The section's revision id, read once through `GET /blobs/{org}/{blob}/revisions/{ref}`:
/// that resolves `default`, and for a pinned id checks that the revision belongs to the
/// configured blob. The data channel is addressed by revision id alone, so without this read a
/// wrong `org_id` or `blob_id` would attach without complaint, and a wrong `revision_id` would
/// be reported by whatever the first session command answers.
async fn revision_id(
    transport: &dyn SessionTransport,
    binding: &SessionBinding,
) -> Result<String, ApiError> {
    if let Some(id) = binding
        .resolved_revision
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
    {
        return Ok(id);
    }
    let envelope = transport
        .revision(&binding.org_id, &binding.blob_id, &binding.revision_id)
        .await?;
    let id = envelope
        .pointer("/revision/id")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::Transient("the revision answer has no revision.id".into()))?
        .to_owned();
    *binding
        .resolved_revision
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(id.clone());
    Ok(id)
}

impl SectionHost {
    fn start(
        &mut self,
        channel: Channel,
        command: &'static str,
        args: Result<Map<String, Value>, String>,
    ) -> wasmtime::Result<Resource<ReplyHandle>> {
        let bound = is_bound(&self.section.session);
        let args = args.and_then(|args| {
            if bound {
                Ok(args)
            } else {
                Err("this section has no complete `session` block: nothing was sent".to_owned())
            }
        });
        let admitted = args.and_then(|args| Ok((args, self.section.quotas.start_request()?)));
        let pending = match admitted {
            Err(refusal) => Pending::ready(Err(ApiError::Refused(refusal)), died),
            Ok((args, counted)) => {
                let section = Arc::clone(&self.section);
                let slots = Arc::clone(&section.quotas.requests);
                Pending::spawn(
                    async move {
                        let _counted = counted;
                        let _slot = slots.acquire_owned().await;
                        let shared = &section.shared;
                        let envelope = if command == GET_REVISION {
                            let b = &section.session;
                            shared
                                .transport
                                .revision(&b.org_id, &b.blob_id, &b.revision_id)
                                .await?
                        } else {
                            call(
                                shared.transport.as_ref(),
                                &section.session,
                                channel,
                                command,
                                args,
                            )
                            .await?
                        };
                        if command == "get_session"
                            && let Some(id) =
                                envelope.pointer("/session/id").and_then(Value::as_str)
                        {
                            *section
                                .session
                                .bound_id
                                .lock()
                                .unwrap_or_else(|e| e.into_inner()) = Some(id.to_owned());
                        }
                        Ok(envelope.to_string())
                    },
                    died,
                )
            }
        };
        Ok(self.table.push(pending)?)
    }
}

fn with_alias(alias: &str) -> Result<Map<String, Value>, String> {
    check_alias(alias)?;
    let mut args = Map::new();
    args.insert("alias".into(), json!(alias));
    Ok(args)
}

impl wit::Host for SectionHost {
    fn get_session(&mut self) -> wasmtime::Result<Resource<ReplyHandle>> {
        self.start(Channel::Query, "get_session", Ok(Map::new()))
    }

    fn get_revision(&mut self) -> wasmtime::Result<Resource<ReplyHandle>> {
        self.start(Channel::Query, GET_REVISION, Ok(Map::new()))
    }

    fn list_objects(
        &mut self,
        prefix: Option<String>,
        cursor: Option<String>,
        limit: Option<u32>,
    ) -> wasmtime::Result<Resource<ReplyHandle>> {
        let args = (|| {
            let mut args = Map::new();
            if let Some(prefix) = prefix {
                // A prefix is an alias prefix: the grammar without the last-segment rule.
                if prefix.starts_with('/') || prefix.split('/').any(|s| s == "..") {
                    return Err(format!("`{prefix}` is not an alias prefix"));
                }
                args.insert("prefix".into(), json!(prefix));
            }
            if let Some(cursor) = cursor {
                args.insert("cursor".into(), json!(cursor));
            }
            if let Some(limit) = limit {
                args.insert("limit".into(), json!(limit.clamp(1, 1000)));
            }
            Ok(args)
        })();
        self.start(Channel::Query, "list_session_objects", args)
    }

    fn download_object(&mut self, alias: String) -> wasmtime::Result<Resource<ReplyHandle>> {
        self.start(
            Channel::Query,
            "download_session_object",
            with_alias(&alias),
        )
    }

    fn upload_object(
        &mut self,
        alias: String,
        value: String,
    ) -> wasmtime::Result<Resource<ReplyHandle>> {
        let args = with_alias(&alias).and_then(|mut args| {
            args.insert("value".into(), parse_json("value", &value, false)?);
            Ok(args)
        });
        self.start(Channel::Command, "upload_session_object", args)
    }

    fn delete_object(&mut self, alias: String) -> wasmtime::Result<Resource<ReplyHandle>> {
        self.start(
            Channel::Command,
            "delete_session_object",
            with_alias(&alias),
        )
    }

    fn post_item(
        &mut self,
        alias: String,
        content: String,
        metadata: Option<String>,
    ) -> wasmtime::Result<Resource<ReplyHandle>> {
        let args = with_alias(&alias).and_then(|mut args| {
            args.insert("content".into(), parse_json("content", &content, true)?);
            if let Some(metadata) = metadata {
                args.insert("metadata".into(), parse_json("metadata", &metadata, false)?);
            }
            Ok(args)
        });
        self.start(Channel::Command, "post_session_thread_item", args)
    }

    fn list_items(&mut self, alias: String, page: Page) -> wasmtime::Result<Resource<ReplyHandle>> {
        let args = with_alias(&alias).map(|mut args| {
            page_args(&page, &mut args);
            args
        });
        self.start(Channel::Query, "list_session_thread_items", args)
    }

    fn get_item(
        &mut self,
        alias: String,
        item_id: String,
    ) -> wasmtime::Result<Resource<ReplyHandle>> {
        let args = with_alias(&alias).map(|mut args| {
            args.insert("item_id".into(), json!(item_id));
            args
        });
        self.start(Channel::Query, "get_session_thread_item", args)
    }

    fn list_events(&mut self, page: Page) -> wasmtime::Result<Resource<ReplyHandle>> {
        let mut args = Map::new();
        page_args(&page, &mut args);
        self.start(Channel::Query, "list_session_events", Ok(args))
    }
}

impl wit::HostReply for SectionHost {
    fn subscribe(
        &mut self,
        reply: Resource<ReplyHandle>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        wasmtime_wasi::p2::subscribe(&mut self.table, reply)
    }

    fn take(
        &mut self,
        reply: Resource<ReplyHandle>,
    ) -> wasmtime::Result<Option<Result<String, ApiError>>> {
        Ok(self.table.get_mut(&reply)?.take())
    }

    fn drop(&mut self, reply: Resource<ReplyHandle>) -> wasmtime::Result<()> {
        self.table.delete(reply)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::check_alias;

    #[test]
    fn aliases() {
        let longest = "a".repeat(256);
        for ok in [
            "t1",
            "tasks/t1",
            "a.b-c_d/e",
            "users/bob@example.com/t1",
            &longest,
        ] {
            assert!(check_alias(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/x",
            "x/",
            "../x",
            "a/../b",
            "a//b",
            "a b",
            "ses_1/objects?x",
            &"a".repeat(257),
        ] {
            assert!(check_alias(bad).is_err(), "{bad}");
        }
    }
}
