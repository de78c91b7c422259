//! The data-channel command catalogue (docs/emulator.md): argument schemas, channel and
//! write checks, and each command's effect on the state.

use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::paging;
use crate::store::State;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Query,
    Command,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Bool,
    Int,
    Array,
    Object,
    Any,
}

struct Spec {
    name: &'static str,
    channel: Channel,
    /// Writes also need a writable revision phase and an open session.
    write: bool,
    /// `(key, kind, required)`; anything else is rejected like the platform's
    /// `additionalProperties: false` schemas.
    args: &'static [(&'static str, Kind, bool)],
}

use Kind::*;

const LIST: &[(&str, Kind, bool)] = &[
    ("session_id", Str, true),
    ("ascending", Bool, false),
    ("created_since", Str, false),
    ("created_before", Str, false),
    ("cursor", Str, false),
    ("limit", Int, false),
];

const CATALOGUE: &[Spec] = &[
    Spec {
        name: "get_session",
        channel: Channel::Query,
        write: false,
        args: &[("session_id", Str, true)],
    },
    Spec {
        name: "list_session_objects",
        channel: Channel::Query,
        write: false,
        args: &[
            ("session_id", Str, true),
            ("prefix", Str, false),
            ("delimiter", Str, false),
            ("cursor", Str, false),
            ("limit", Int, false),
        ],
    },
    Spec {
        name: "download_session_object",
        channel: Channel::Query,
        write: false,
        args: &[("session_id", Str, true), ("alias", Str, true)],
    },
    Spec {
        name: "upload_session_object",
        channel: Channel::Command,
        write: true,
        args: &[
            ("session_id", Str, true),
            ("alias", Str, true),
            ("value", Any, true),
        ],
    },
    Spec {
        name: "delete_session_object",
        channel: Channel::Command,
        write: true,
        args: &[("session_id", Str, true), ("alias", Str, true)],
    },
    Spec {
        name: "post_session_thread_item",
        channel: Channel::Command,
        write: true,
        args: &[
            ("session_id", Str, true),
            ("alias", Str, true),
            ("content", Array, true),
            ("metadata", Object, false),
            ("parent_id", Str, false),
        ],
    },
    Spec {
        name: "list_session_thread_items",
        channel: Channel::Query,
        write: false,
        args: &[
            ("session_id", Str, true),
            ("alias", Str, true),
            ("ascending", Bool, false),
            ("created_since", Str, false),
            ("created_before", Str, false),
            ("cursor", Str, false),
            ("limit", Int, false),
        ],
    },
    Spec {
        name: "get_session_thread_item",
        channel: Channel::Query,
        write: false,
        args: &[
            ("session_id", Str, true),
            ("alias", Str, true),
            ("item_id", Str, true),
        ],
    },
    Spec {
        name: "upload_session_file",
        channel: Channel::Command,
        write: true,
        args: &[
            ("session_id", Str, true),
            ("alias", Str, true),
            ("name", Str, true),
            ("content_type", Str, true),
            ("size", Int, true),
        ],
    },
    Spec {
        name: "download_session_file",
        channel: Channel::Query,
        write: false,
        args: &[("session_id", Str, true), ("alias", Str, true)],
    },
    Spec {
        name: "list_session_events",
        channel: Channel::Query,
        write: false,
        args: LIST,
    },
];

/// The command name of a request body, when it has one (for logs and faults).
pub fn command_name(body: &Value) -> Option<String> {
    body.get("command")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Checks the body against the command's schema without touching state.
pub fn validate(
    channel: Channel,
    body: &Value,
) -> Result<(&'static str, Map<String, Value>), ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
    let name = obj
        .get("command")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("missing string `command`"))?;
    let spec = CATALOGUE.iter().find(|s| s.name == name).ok_or_else(|| {
        ApiError::new(400, "unknown_command", format!("unknown command {name:?}"))
    })?;
    if spec.channel != channel {
        let want = if spec.channel == Channel::Query {
            "query"
        } else {
            "command"
        };
        return Err(ApiError::bad_request(format!(
            "{name} must be sent to data/{want}"
        )));
    }
    let mut args = obj.clone();
    args.remove("command");
    for (k, v) in &args {
        let Some((_, kind, _)) = spec.args.iter().find(|(n, _, _)| n == k) else {
            return Err(ApiError::bad_request(format!(
                "{name}: unknown argument {k:?}"
            )));
        };
        // The platform types optional fields as strings etc.; an explicit null is a 400.
        let ok = match kind {
            Str => v.is_string(),
            Bool => v.is_boolean(),
            Int => v.is_u64() || v.is_i64(),
            Array => v.is_array(),
            Object => v.is_object(),
            Any => !v.is_null(),
        };
        if !ok {
            return Err(ApiError::bad_request(format!(
                "{name}: argument {k:?} has the wrong type"
            )));
        }
    }
    for (k, _, required) in spec.args {
        if *required && !args.contains_key(*k) {
            return Err(ApiError::bad_request(format!(
                "{name}: missing argument {k:?}"
            )));
        }
    }
    Ok((spec.name, args))
}

fn arg<'a>(args: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    args.get(k).and_then(Value::as_str)
}

/// Runs a validated command for `user_id` against revision `revision_id`.
/// Returns the success payload (without `status`) and whether state changed.
pub fn execute(
    state: &mut State,
    revision_id: &str,
    user_id: &str,
    name: &str,
    args: &Map<String, Value>,
    file: Option<&[u8]>,
) -> Result<(Value, bool), ApiError> {
    let spec = CATALOGUE
        .iter()
        .find(|s| s.name == name)
        .expect("validated");
    let rev = state.revisions.get(revision_id).ok_or_else(|| {
        ApiError::new(
            404,
            "revision_not_found",
            format!("no revision {revision_id}"),
        )
    })?;
    if rev.status != "ready" {
        return Err(ApiError::new(
            409,
            "revision_not_ready",
            format!("revision {revision_id} is {}", rev.status),
        ));
    }
    let writable = matches!(rev.phase.as_str(), "draft" | "managed");
    let phase = rev.phase.clone();

    let sid_arg = arg(args, "session_id").unwrap_or_default();
    // Only get_session resolves aliases; the answer's id is used from then on.
    let session = state
        .sessions
        .get(sid_arg)
        .filter(|s| s.revision_id == revision_id)
        .or_else(|| {
            (name == "get_session")
                .then(|| {
                    state.sessions.values().find(|s| {
                        s.revision_id == revision_id && s.alias.as_deref() == Some(sid_arg)
                    })
                })
                .flatten()
        })
        .ok_or_else(|| crate::store::session_not_found(sid_arg))?;
    let sid = session.id.clone();

    if spec.write {
        if !writable {
            return Err(ApiError::new(
                409,
                "revision_not_writable",
                format!("revision {revision_id} is in phase {phase}"),
            ));
        }
        if session.status != "open" {
            return Err(ApiError::new(
                409,
                "session_not_open",
                format!("session {sid} is {}", session.status),
            ));
        }
    }

    let alias = arg(args, "alias").unwrap_or_default();
    let ascending = args
        .get("ascending")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let cursor = arg(args, "cursor");
    match name {
        "get_session" => Ok((json!({"session": session.to_json()}), false)),
        "list_session_objects" => {
            let limit = paging::limit(args)?;
            let prefix = arg(args, "prefix").unwrap_or_default();
            let rows = session
                .objects
                .values()
                .filter(|o| o.alias.starts_with(prefix))
                .map(|o| (o.alias.clone(), o.summary()));
            let (objects, next) = paging::page(rows, cursor, limit, true)?;
            Ok((with_cursor(json!({"objects": objects}), next), false))
        }
        "download_session_object" => match session.objects.get(alias) {
            Some(o) => Ok((json!({"object": o.to_json()}), false)),
            // The platform answers 403, not not_found, for a missing object.
            None => Err(ApiError::new(
                403,
                "forbidden",
                "object not found or not accessible",
            )),
        },
        "upload_session_object" => {
            let value = args.get("value").cloned().unwrap_or_default();
            state.upload_object(&sid, alias, value, user_id)?;
            Ok((json!({}), true))
        }
        "delete_session_object" => {
            state.delete_object(&sid, alias)?;
            Ok((json!({}), true))
        }
        "post_session_thread_item" => {
            let item = state.post_item(
                &sid,
                alias,
                args.get("content").cloned().unwrap_or_default(),
                args.get("metadata").cloned(),
                arg(args, "parent_id").map(str::to_owned),
                user_id,
            )?;
            Ok((json!({"item": item}), true))
        }
        "list_session_thread_items" => {
            let obj = session
                .objects
                .get(alias)
                .ok_or_else(|| crate::store::object_not_found(alias))?;
            let now = std::time::Instant::now();
            let visible: Vec<Value> = obj
                .items
                .iter()
                .filter(|i| {
                    let id = i["id"].as_str().unwrap_or_default();
                    state.hidden_until.get(id).is_none_or(|t| *t <= now)
                })
                .cloned()
                .collect();
            let (items, next) = list_by_time(&visible, args, ascending)?;
            Ok((with_cursor(json!({"items": items}), next), false))
        }
        "get_session_thread_item" => {
            let obj = session
                .objects
                .get(alias)
                .ok_or_else(|| crate::store::object_not_found(alias))?;
            let id = arg(args, "item_id").unwrap_or_default();
            let item = obj
                .items
                .iter()
                .find(|i| i["id"] == id)
                .ok_or_else(|| ApiError::new(404, "not_found", format!("no item {id}")))?;
            Ok((json!({"item": item}), false))
        }
        "upload_session_file" => {
            // Only the binary channel carries bytes; a JSON body has none to store.
            let bytes = file.ok_or_else(|| {
                ApiError::bad_request("upload_session_file needs an application/octet-stream body")
            })?;
            let size = args.get("size").and_then(Value::as_u64).unwrap_or_default();
            if size != bytes.len() as u64 {
                return Err(ApiError::bad_request(format!(
                    "size {size} does not match the {} bytes sent",
                    bytes.len()
                )));
            }
            let object = state.upload_file(
                &sid,
                alias,
                arg(args, "name").unwrap_or_default(),
                arg(args, "content_type").unwrap_or_default(),
                bytes,
                user_id,
            )?;
            Ok((json!({"object": object}), true))
        }
        "download_session_file" => match session.objects.get(alias) {
            Some(o) if o.file_hex.is_some() => {
                let mut object = o.to_json();
                object["session_id"] = json!(sid);
                Ok((json!({"object": object}), false))
            }
            Some(_) => Err(ApiError::bad_request(format!(
                "object {alias:?} is not a file"
            ))),
            None => Err(ApiError::new(
                403,
                "forbidden",
                "object not found or not accessible",
            )),
        },
        "list_session_events" => {
            let (events, next) = list_by_time(&session.events, args, ascending)?;
            Ok((with_cursor(json!({"session_events": events}), next), false))
        }
        _ => unreachable!("catalogue and match disagree on {name}"),
    }
}

fn with_cursor(mut v: Value, cursor: Option<String>) -> Value {
    if let Some(c) = cursor {
        v["cursor"] = json!(c);
    }
    v
}

/// Items and events are stored ascending by their unique `created_at`;
/// `created_since` and `created_before` are both exclusive.
fn list_by_time(
    rows: &[Value],
    args: &Map<String, Value>,
    ascending: bool,
) -> Result<(Vec<Value>, Option<String>), ApiError> {
    let limit = paging::limit(args)?;
    let since = arg(args, "created_since");
    let before = arg(args, "created_before");
    let keyed = |r: &Value| {
        let at = r["created_at"].as_str().unwrap_or_default().to_owned();
        let keep = since.is_none_or(|s| at.as_str() > s) && before.is_none_or(|b| at.as_str() < b);
        keep.then(|| (at, r.clone()))
    };
    let cursor = arg(args, "cursor");
    if ascending {
        paging::page(rows.iter().filter_map(keyed), cursor, limit, true)
    } else {
        paging::page(rows.iter().rev().filter_map(keyed), cursor, limit, false)
    }
}
