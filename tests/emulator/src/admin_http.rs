//! The `/admin` HTTP routes: the `Admin` handle's operations as JSON, with no
//! API key. Documented route by route in `docs/emulator.md`.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::User;
use crate::admin::{Admin, CreateSession};
use crate::error::ApiError;
use crate::faults::Faults;
use crate::http::{Body, read_body, result_response};
use crate::shared::Shared;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusReq {
    status: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevisionReq {
    phase: Option<String>,
    status: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadReq {
    value: Value,
    as_user: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostReq {
    content: Value,
    metadata: Option<Value>,
    as_user: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedReq {
    seed: u64,
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Admin writes without `as_user` act as the first configured user.
fn default_user(admin: &Admin) -> String {
    admin
        .users()
        .first()
        .map(|u| u.id.clone())
        .unwrap_or_else(|| "usr_admin".into())
}

pub async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let admin = Admin {
        shared: shared.clone(),
    };
    let method = req.method().clone();
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let body = match read_body(req).await {
        Ok(b) => b,
        Err(e) => return result_response(Err(e)),
    };
    result_response(route(&admin, &method, &path, &body))
}

fn not_found(what: &str) -> ApiError {
    ApiError::new(404, "not_found", format!("no {what}"))
}

fn route(admin: &Admin, method: &Method, path: &str, body: &[u8]) -> Result<Value, ApiError> {
    let rest = path.trim_start_matches("/admin");
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let m = method.as_str();
    match (m, segs.as_slice()) {
        ("GET", []) => Ok(json!({"routes": ROUTES})),
        ("GET", ["sessions"]) => Ok(json!({"sessions": admin.sessions()})),
        ("POST", ["sessions"]) => {
            let ids = admin.create_session(parse::<CreateSession>(body)?)?;
            Ok(serde_json::to_value(ids).unwrap_or_default())
        }
        ("GET", ["sessions", sid]) => admin
            .session(sid)
            .map(|s| json!({"session": s}))
            .ok_or_else(|| not_found("session")),
        ("POST", ["sessions", sid, "status"]) => {
            admin.set_session_status(sid, &parse::<StatusReq>(body)?.status)?;
            Ok(json!({"session": admin.session(sid)}))
        }
        ("POST", ["sessions", sid, "close"]) => {
            admin.close_session(sid)?;
            Ok(json!({"session": admin.session(sid)}))
        }
        ("POST", ["sessions", sid, "delete"]) => {
            admin.delete_session(sid)?;
            Ok(json!({"session": admin.session(sid)}))
        }
        ("GET", ["sessions", sid, "objects"]) => {
            let objects: Vec<Value> = admin
                .objects(sid)
                .into_iter()
                .map(|(alias, value)| json!({"alias": alias, "value": value}))
                .collect();
            Ok(json!({"objects": objects}))
        }
        ("GET", ["sessions", sid, "events"]) => Ok(json!({"events": admin.events(sid)})),
        (_, ["sessions", sid, "objects", alias @ ..]) if !alias.is_empty() => {
            let alias = alias.join("/");
            match m {
                "GET" => admin
                    .object(sid, &alias)
                    .map(|v| json!({"alias": alias, "value": v}))
                    .ok_or_else(|| not_found("object")),
                "PUT" => {
                    let r: UploadReq = parse(body)?;
                    let user = r.as_user.unwrap_or_else(|| default_user(admin));
                    admin.upload_object(sid, &alias, r.value, &user)?;
                    Ok(json!({"alias": alias, "value": admin.object(sid, &alias)}))
                }
                "DELETE" => admin.delete_object(sid, &alias).map(|()| json!({})),
                _ => Err(method_not_allowed()),
            }
        }
        (_, ["sessions", sid, "items", alias @ ..]) if !alias.is_empty() => {
            let alias = alias.join("/");
            match m {
                "GET" => Ok(json!({"items": admin.items(sid, &alias)})),
                "POST" => {
                    let r: PostReq = parse(body)?;
                    let user = r.as_user.unwrap_or_else(|| default_user(admin));
                    let item = admin.post_item(sid, &alias, r.content, r.metadata, &user)?;
                    Ok(json!({"item": item}))
                }
                _ => Err(method_not_allowed()),
            }
        }
        ("GET", ["revisions", rid]) => admin
            .revision(rid)
            .map(|r| json!({"revision": r}))
            .ok_or_else(|| not_found("revision")),
        ("PUT", ["revisions", rid]) => {
            let r: RevisionReq = parse(body)?;
            admin.set_revision(rid, r.phase.as_deref(), r.status.as_deref())?;
            Ok(json!({"revision": admin.revision(rid)}))
        }
        ("GET", ["users"]) => Ok(json!({"users": admin.users()})),
        ("POST", ["users"]) => {
            let u: User = parse(body)?;
            admin.add_user(u.clone());
            Ok(json!({"user": u}))
        }
        ("GET", ["requests"]) => Ok(json!({"requests": admin.requests()})),
        ("DELETE", ["requests"]) => {
            admin.clear_requests();
            Ok(json!({}))
        }
        ("GET", ["faults"]) => Ok(json!({"faults": admin.faults()})),
        ("DELETE", ["faults"]) => {
            admin.clear_faults();
            Ok(json!({}))
        }
        ("POST", ["faults", "seed"]) => {
            admin.set_fault_seed(parse::<SeedReq>(body)?.seed);
            Ok(json!({}))
        }
        ("PUT", ["faults", command]) => {
            let f: Faults = parse(body)?;
            admin.set_faults(command, f);
            Ok(json!({"faults": admin.faults()}))
        }
        _ => Err(ApiError::new(
            404,
            "not_found",
            format!("no admin route {m} {path}"),
        )),
    }
}

fn method_not_allowed() -> ApiError {
    ApiError::new(
        405,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

/// Served at `GET /admin` so a human with curl can find their way.
const ROUTES: &[&str] = &[
    "GET /admin/sessions",
    "POST /admin/sessions {org_id?, blob_id?, revision_id?, session_id?, alias?}",
    "GET /admin/sessions/{sid}",
    "POST /admin/sessions/{sid}/status {status}",
    "POST /admin/sessions/{sid}/close",
    "POST /admin/sessions/{sid}/delete",
    "GET /admin/sessions/{sid}/objects",
    "GET|PUT|DELETE /admin/sessions/{sid}/objects/{alias} (PUT {value, as_user?})",
    "GET|POST /admin/sessions/{sid}/items/{alias} (POST {content, metadata?, as_user?})",
    "GET /admin/sessions/{sid}/events",
    "GET|PUT /admin/revisions/{rid} (PUT {phase?, status?})",
    "GET|POST /admin/users (POST {id, name, email, api_key})",
    "GET|DELETE /admin/requests",
    "GET|DELETE /admin/faults",
    "PUT /admin/faults/{command} {latency_ms, rate_5xx, rate_429, retry_after_s, rate_drop, after_apply, times}",
    "POST /admin/faults/seed {seed}",
];
