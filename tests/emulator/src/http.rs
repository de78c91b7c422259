//! The HTTP/1.1 server: accept loop, the `/v1` platform routes with auth,
//! request logging and fault injection, and dispatch of `/admin` routes.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::commands::{self, Channel};
use crate::error::ApiError;
use crate::faults::{Action, Decision};
use crate::shared::{RequestRecord, Shared, lock};

pub type Body = Full<Bytes>;

/// Returned from the service to make hyper close the connection without writing a response.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by fault injection")]
pub struct Dropped;

/// Serves until the task is aborted; aborting drops the `JoinSet`, which ends every connection.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = shared.clone();
                let keep_alive = shared.keep_alive.load(std::sync::atomic::Ordering::Relaxed);
                conns.spawn(async move {
                    let svc = service_fn(move |req| handle(shared.clone(), req));
                    let _ = http1::Builder::new()
                        .keep_alive(keep_alive)
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

pub fn json_response(status: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("static response parts are valid")
}

pub fn success(mut payload: Value) -> Value {
    if !payload.is_object() {
        payload = json!({});
    }
    payload["status"] = json!("success");
    payload
}

pub fn result_response(r: Result<Value, ApiError>) -> Response<Body> {
    match r {
        Ok(v) => json_response(200, &success(v)),
        Err(e) => json_response(e.status, &e.envelope()),
    }
}

pub async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    req.into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Dropped> {
    let path = req.uri().path().to_owned();
    if path == "/admin" || path.starts_with("/admin/") {
        return Ok(crate::admin_http::handle(&shared, req).await);
    }
    if path.starts_with("/v1/") {
        return api(&shared, req).await;
    }
    Ok(json_response(
        404,
        &ApiError::new(
            404,
            "not_found",
            format!("no route {path}; the API lives under /v1"),
        )
        .envelope(),
    ))
}

enum Route {
    UsersMe,
    Revision {
        org: String,
        blob: String,
        reference: String,
    },
    Data {
        revision: String,
        channel: Channel,
    },
    Unknown,
}

fn route(method: &Method, path: &str) -> Route {
    let segs: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
    match (method, segs.as_slice()) {
        (&Method::GET, ["users", "me"]) => Route::UsersMe,
        (&Method::GET, ["blobs", org, blob, "revisions", reference]) => Route::Revision {
            org: (*org).into(),
            blob: (*blob).into(),
            reference: (*reference).into(),
        },
        (&Method::POST, ["revisions", rev, "data", ch @ ("query" | "command")]) => Route::Data {
            revision: (*rev).into(),
            channel: if *ch == "query" {
                Channel::Query
            } else {
                Channel::Command
            },
        },
        _ => Route::Unknown,
    }
}

async fn api(shared: &Shared, req: Request<Incoming>) -> Result<Response<Body>, Dropped> {
    let received_at_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let key = req
        .headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let user = key.and_then(|k| shared.read(|st| st.user_by_key(&k).cloned()));
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    // Binary channel (files): arguments travel in X-Request-Body, the bytes in the body.
    let binary_in = header("content-type").starts_with("application/octet-stream");
    let binary_out = header("accept").contains("application/octet-stream");
    let request_body_header = header("x-request-body");
    let route = route(&method, &path);
    let body = match read_body(req).await {
        Ok(b) => b,
        Err(e) => return Ok(json_response(e.status, &e.envelope())),
    };
    let (parsed, file): (Option<Value>, Option<Bytes>) = if binary_in {
        (serde_json::from_str(&request_body_header).ok(), Some(body))
    } else {
        (serde_json::from_slice(&body).ok(), None)
    };
    let command = match &route {
        Route::Data { .. } => parsed.as_ref().and_then(commands::command_name),
        _ => None,
    };
    let mut rec = RequestRecord {
        method: method.to_string(),
        path,
        command: command.clone(),
        status: 0,
        user_id: user.as_ref().map(|u| u.id.clone()),
        received_at_us,
    };
    let finish = |rec: &mut RequestRecord, resp: Response<Body>| {
        rec.status = resp.status().as_u16();
        shared.record(rec.clone());
        Ok(resp)
    };
    let dropped = |rec: &mut RequestRecord| {
        rec.status = 0;
        shared.record(rec.clone());
        Err(Dropped)
    };

    let Some(user) = user else {
        // Like the platform: no meaningful body on an auth failure.
        let resp = Response::builder()
            .status(401)
            .body(Full::new(Bytes::from_static(b"unauthorized")))
            .expect("valid");
        return finish(&mut rec, resp);
    };

    let fault_key = match &route {
        Route::UsersMe => "users_me".to_owned(),
        Route::Revision { .. } => "get_revision".to_owned(),
        Route::Data { .. } => command.clone().unwrap_or_default(),
        Route::Unknown => String::new(),
    };
    let decision = if fault_key.is_empty() {
        Decision::NONE
    } else {
        lock(&shared.faults).decide(&fault_key)
    };
    if !decision.latency.is_zero() {
        tokio::time::sleep(decision.latency).await;
    }
    match decision.action {
        Action::TooMany { retry_after_s } => {
            let resp = Response::builder()
                .status(429)
                .header("retry-after", retry_after_s.to_string())
                .body(Full::new(Bytes::from_static(b"rate limited (injected)")))
                .expect("valid");
            return finish(&mut rec, resp);
        }
        Action::ServerError if !decision.after_apply => return finish(&mut rec, server_error()),
        Action::Drop if !decision.after_apply => return dropped(&mut rec),
        _ => {}
    }

    let result = match route {
        Route::UsersMe => {
            Ok(json!({"user": {"id": user.id, "name": user.name, "email": user.email}}))
        }
        Route::Revision {
            org,
            blob,
            reference,
        } => shared.read(|st| {
            // Like the platform: a blob that does not exist (or that the key cannot see) is a
            // bare 403; only a known blob without that revision is `revision_not_found`.
            if !st.blobs.contains_key(&format!("{org}/{blob}")) {
                return Err(ApiError::new(
                    403,
                    "forbidden",
                    format!("blob {org}/{blob} not found or not accessible"),
                ));
            }
            let id = if reference == "default" {
                st.blobs
                    .get(&format!("{org}/{blob}"))
                    .map(|b| b.default_revision.clone())
            } else {
                Some(reference.clone())
            };
            id.and_then(|id| st.revisions.get(&id))
                .filter(|r| r.org_id == org && r.blob_id == blob)
                .map(|r| json!({"revision": {"id": r.id, "phase": r.phase, "status": r.status}}))
                .ok_or_else(|| {
                    ApiError::new(
                        404,
                        "revision_not_found",
                        format!("no revision {reference} in {org}/{blob}"),
                    )
                })
        }),
        Route::Data { revision, channel } => match parsed {
            None => Err(ApiError::bad_request("the body is not JSON")),
            Some(body) => commands::validate(channel, &body).and_then(|(name, args)| {
                shared.mutate(|st| {
                    commands::execute(st, &revision, &user.id, name, &args, file.as_deref())
                })
            }),
        },
        Route::Unknown => Err(ApiError::new(
            404,
            "not_found",
            format!("no route {} {}", rec.method, rec.path),
        )),
    };

    match decision.action {
        Action::ServerError => finish(&mut rec, server_error()),
        Action::Drop => dropped(&mut rec),
        _ if binary_out && command.as_deref() == Some("download_session_file") => {
            let resp = match result {
                Ok(payload) => binary_response(shared, payload),
                Err(e) => json_response(e.status, &e.envelope()),
            };
            finish(&mut rec, resp)
        }
        _ => finish(&mut rec, result_response(result)),
    }
}

/// The envelope goes in X-Response-Body and the file's bytes in the body.
fn binary_response(shared: &Shared, payload: Value) -> Response<Body> {
    let sid = payload["object"]["session_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let alias = payload["object"]["alias"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let bytes = shared
        .read(|st| {
            st.sessions
                .get(&sid)
                .and_then(|s| s.objects.get(&alias))
                .and_then(|o| o.file_bytes())
        })
        .unwrap_or_default();
    Response::builder()
        .status(200)
        .header("content-type", "application/octet-stream")
        .header("x-response-body", ascii_json(&success(payload)))
        .body(Full::new(Bytes::from(bytes)))
        .expect("valid")
}

/// Non-JSON on purpose: the worker classifies 5xx without reading the body.
fn server_error() -> Response<Body> {
    Response::builder()
        .status(503)
        .body(Full::new(Bytes::from_static(
            b"service unavailable (injected)",
        )))
        .expect("valid")
}

/// JSON with every non-ASCII character as a `\\uXXXX` escape, so it is a valid header value.
fn ascii_json(v: &Value) -> String {
    let mut out = String::new();
    for c in v.to_string().chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut buf = [0u16; 2];
            for unit in c.encode_utf16(&mut buf) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}
