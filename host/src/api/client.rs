//! The HTTP client for BlobHub's REST reads and data channel.

use std::fmt;
use std::sync::{Arc, Once};
use std::time::{Duration, SystemTime};

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value};

use super::lean::Lean;
use super::{ApiError, RetryPolicy, parse_retry_after, salvage};

/// The `error` word of the failure returned for a success body that cannot be parsed (too deep,
/// too big, a lone surrogate, not JSON); job types match it to treat the object as unreadable.
pub const UNPARSEABLE: &str = "response_unparseable";

/// Per-request timeout: connect, send and read together.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a TCP (and TLS) connection may take to establish.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How many idle HTTP/1.1 connections the pool keeps. Sections start together, so attaching
/// 100 of them opened ~130 connections at once, and the pool kept every one for its idle timeout
/// (90 s) with its buffers and task: ~26 KiB of heap each, 3.4 MiB of a 100-section worker's
/// 38 MiB (docs/benchmarks.md, "Scale and idle cost"). A burst beyond this opens connections and
/// closes them after use. The event feed has connections of its own ([`FEED_POOL_MAX_IDLE`]).
pub const POOL_MAX_IDLE: usize = 8;
/// How many idle connections the event feed's client keeps (its lean exchange, or reqwest's pool
/// when that is off). Idle sections poll in groups of this many
/// (`runtime::capabilities::feed::POLL_GROUP`), so a group's polls find their connections.
pub const FEED_POOL_MAX_IDLE: usize = 16;
/// Parsed URLs a client keeps ([`Client::url`]).
const URL_CACHE_MAX: usize = 64;
/// How many of the newest thread items the post read-back inspects.
const READ_BACK_LIMIT: u64 = 25;

/// The user an API key belongs to (`GET /users/me`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserInfo {
    pub id: String,
    pub name: String,
    pub email: String,
}

/// A BlobHub client bound to one API URL and key. Cloning is cheap and shares one connection
/// pool, so every part of the worker should clone one client rather than build its own.
#[derive(Clone)]
pub struct Client {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) http: reqwest::Client,
    /// The `X-API-Key` value (marked sensitive), for [`Client::with_own_connections`].
    key: HeaderValue,
    /// The API base URL without a trailing `/`.
    pub(super) base: String,
    /// Parsed `{base}{path}` by path ([`Client::url`]).
    urls: std::sync::Mutex<std::collections::HashMap<String, reqwest::Url>>,
    pub(super) retry: RetryPolicy,
    /// The feed's own exchange for its queries (`api/lean.rs`), on clients made by
    /// [`Client::with_own_connections`] when the URL and the environment allow it.
    pub(super) lean: Option<Lean>,
}

fn invalid(detail: String) -> ApiError {
    ApiError::InvalidConfiguration { detail }
}

/// The HTTP client every [`Client`] wraps, sending `key` with each request and keeping at most
/// `max_idle` idle connections.
fn http_client(key: &HeaderValue, max_idle: usize) -> Result<reqwest::Client, ApiError> {
    let mut headers = HeaderMap::new();
    headers.insert("X-API-Key", key.clone());
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(REQUEST_TIMEOUT)
        // A host that drops SYNs would otherwise use the whole request timeout per attempt.
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_max_idle_per_host(max_idle)
        // Redirects are not followed (the platform never sends one on purpose); a 3xx falls into
        // the JSON-parse path.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| invalid(error_chain(&e)))
}

impl fmt::Debug for Client {
    // Deliberately omits the headers: they carry the API key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.inner.base)
            .field("retry", &self.inner.retry)
            .finish_non_exhaustive()
    }
}

/// Whether a failed call may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Idempotency {
    /// `GET` and `/data/query`: running twice is harmless, so every transient error retries.
    Read,
    /// `/data/command`: only a failure that proves the request never ran retries.
    Write,
}

impl Idempotency {
    /// Whether `err` allows sending the request again.
    fn retries(self, err: &ApiError) -> bool {
        match self {
            Idempotency::Read => err.is_transient(),
            Idempotency::Write => err.never_ran(),
        }
    }
}

impl Client {
    /// Builds a client for `api_url` (e.g. `https://api.blobhub.io/v1`) authenticating with
    /// `api_key`.
    pub fn new(api_url: &str, api_key: &str, retry: RetryPolicy) -> Result<Client, ApiError> {
        install_crypto_provider();
        let base = api_url.trim().trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&base)
            .map_err(|e| invalid(format!("API URL `{base}` is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(invalid(format!("API URL `{base}` is not http(s)")));
        }
        let mut key = HeaderValue::from_str(api_key.trim()).map_err(|_| {
            invalid("the API key contains characters not allowed in a header".into())
        })?;
        // Sensitive values are left out of reqwest's and hyper's Debug output.
        key.set_sensitive(true);
        Ok(Client {
            inner: Arc::new(Inner {
                http: http_client(&key, POOL_MAX_IDLE)?,
                key,
                base,
                urls: Default::default(),
                retry: RetryPolicy {
                    max_attempts: retry.max_attempts.max(1),
                    ..retry
                },
                lean: None,
            }),
        })
    }

    /// The same client (URL, key, retries) with connections of its own. The event feed polls on
    /// its own thread (`runtime::feed_thread`): a connection is served by the thread that opened
    /// it, so its polls must not borrow connections the rest of the worker opened. Its queries
    /// go through the lean exchange (`api/lean.rs`) unless a proxy is configured or
    /// `BLOBHUB_FEED_HTTP=reqwest` asks for the general client (an escape hatch, and the
    /// baseline the idle benchmark measures the exchange against).
    pub fn with_own_connections(&self) -> Result<Client, ApiError> {
        let base = self.inner.base.clone();
        Ok(Client {
            inner: Arc::new(Inner {
                http: http_client(&self.inner.key, FEED_POOL_MAX_IDLE)?,
                lean: match std::env::var("BLOBHUB_FEED_HTTP").as_deref() {
                    Ok("reqwest") => None,
                    _ => Lean::for_base(&base, &self.inner.key, lean_tls),
                },
                key: self.inner.key.clone(),
                base,
                urls: Default::default(),
                retry: self.inner.retry,
            }),
        })
    }

    /// The API base URL, without a trailing `/`.
    pub fn api_url(&self) -> &str {
        &self.inner.base
    }

    /// `GET /users/me`: who the API key belongs to.
    pub async fn users_me(&self) -> Result<UserInfo, ApiError> {
        let body = counted(
            "users_me",
            self.call(Idempotency::Read, Method::GET, "/users/me", None)
                .await,
        )?;
        let user = &body["user"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let id = text(&user["id"]);
        if id.is_empty() {
            return Err(ApiError::Transient {
                status: None,
                detail: "`/users/me` answered without `user.id`".to_owned(),
            });
        }
        Ok(UserInfo {
            id,
            name: text(&user["name"]),
            email: text(&user["email"]),
        })
    }

    /// `GET /blobs/{org}/{blob}/revisions/{reference}` where `reference` is a revision id or
    /// `default`. Returns the whole success envelope (`{"status":"success","revision":{..}}`).
    pub async fn revision(
        &self,
        org: &str,
        blob: &str,
        reference: &str,
    ) -> Result<Value, ApiError> {
        // Ids are interpolated raw, as the platform expects.
        let path = format!("/blobs/{org}/{blob}/revisions/{reference}");
        counted(
            "get_revision",
            self.call(Idempotency::Read, Method::GET, &path, None).await,
        )
    }

    /// `POST {base}/revisions/{revision_id}/data/query` with `{"command": name, ..args}`.
    /// Returns the whole success envelope. Retries every transient failure.
    pub async fn query(
        &self,
        revision_id: &str,
        command: &str,
        args: Map<String, Value>,
    ) -> Result<Value, ApiError> {
        let path = format!("/revisions/{revision_id}/data/query");
        let body = envelope_body(command, args);
        counted(
            command,
            self.call(Idempotency::Read, Method::POST, &path, Some(body))
                .await,
        )
    }

    /// `POST {base}/revisions/{revision_id}/data/command` with `{"command": name, ..args}`.
    /// Returns the whole success envelope.
    ///
    /// A write is re-sent only when the failure proves it never ran (429, connection refused).
    /// The exception is `post_session_thread_item` carrying `metadata.post_id`: after a failure
    /// whose outcome is unknown it reads the thread back and returns the stored item with that
    /// `post_id` instead of posting it twice.
    pub async fn command(
        &self,
        revision_id: &str,
        command: &str,
        args: Map<String, Value>,
    ) -> Result<Value, ApiError> {
        let path = format!("/revisions/{revision_id}/data/command");
        let post_id = (command == "post_session_thread_item")
            .then(|| {
                args.get("metadata")?
                    .get("post_id")?
                    .as_str()
                    .map(str::to_owned)
            })
            .flatten();
        let read_back = post_id.map(|post_id| ReadBack {
            revision_id: revision_id.to_owned(),
            session_id: args.get("session_id").cloned(),
            alias: args.get("alias").cloned(),
            post_id,
        });
        let body = envelope_body(command, args);
        let result = match read_back {
            None => {
                self.call(Idempotency::Write, Method::POST, &path, Some(body))
                    .await
            }
            Some(read_back) => self.post_item(&path, body, read_back).await,
        };
        counted(command, result)
    }

    /// Sends with retries according to `idempotency`.
    ///
    /// (Counted for `/metrics` by the public calls, which know the command's name.)
    async fn call(
        &self,
        idempotency: Idempotency,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Value, ApiError> {
        self.retrying(idempotency, path, || {
            self.send_once(method.clone(), path, body.clone())
        })
        .await
    }

    /// Runs `send` until it succeeds, fails in a way `idempotency` does not retry, or has made
    /// the policy's attempts, with [`Client::back_off`] between attempts.
    pub(super) async fn retrying<T, F, Fut>(
        &self,
        idempotency: Idempotency,
        path: &str,
        mut send: F,
    ) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        let mut attempt = 1;
        loop {
            match send().await {
                Err(err)
                    if idempotency.retries(&err) && attempt < self.inner.retry.max_attempts =>
                {
                    self.back_off(attempt, path, &err).await?;
                    attempt += 1;
                }
                done => return done,
            }
        }
    }

    /// Sleeps before attempt `attempt + 1`, or gives the error back when `Retry-After` asks for
    /// more than the cap.
    pub(super) async fn back_off(
        &self,
        attempt: u32,
        path: &str,
        err: &ApiError,
    ) -> Result<(), ApiError> {
        let Some(delay) = self.inner.retry.delay(attempt - 1, err, fastrand::f64()) else {
            return Err(err.clone());
        };
        tracing::debug!(
            path,
            attempt,
            code = err.code(),
            delay_ms = delay.as_millis() as u64,
            "retrying BlobHub call"
        );
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// `post_session_thread_item` with an idempotency id (the safe-retry rule above).
    async fn post_item(
        &self,
        path: &str,
        body: Vec<u8>,
        read_back: ReadBack,
    ) -> Result<Value, ApiError> {
        let retry = self.inner.retry;
        let mut attempt = 1;
        loop {
            let err = match self.send_once(Method::POST, path, Some(body.clone())).await {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            if !err.is_transient() {
                return Err(err);
            }
            // Read back even after the last attempt: the post may have been stored.
            if !err.never_ran() {
                // The listing is an eventually consistent index: give it a moment (2 s with
                // the default 500 ms base, as the reference does).
                tokio::time::sleep(retry.base.saturating_mul(4).min(retry.cap)).await;
                match self.find_posted(&read_back).await {
                    Ok(Some(item)) => {
                        tracing::debug!(post_id = %read_back.post_id, "post already stored; not re-posting");
                        return Ok(serde_json::json!({"status": "success", "item": item}));
                    }
                    Ok(None) => {}
                    // Without a read-back we cannot know whether a re-post would duplicate.
                    Err(read_err) => {
                        tracing::debug!(code = read_err.code(), "post read-back failed");
                        return Err(err);
                    }
                }
            }
            if attempt >= retry.max_attempts {
                return Err(err);
            }
            self.back_off(attempt, path, &err).await?;
            attempt += 1;
        }
    }

    /// Lists the thread newest-first and returns the item carrying `read_back.post_id`.
    async fn find_posted(&self, read_back: &ReadBack) -> Result<Option<Value>, ApiError> {
        let mut args = Map::new();
        if let Some(session_id) = &read_back.session_id {
            args.insert("session_id".into(), session_id.clone());
        }
        if let Some(alias) = &read_back.alias {
            args.insert("alias".into(), alias.clone());
        }
        args.insert("ascending".into(), Value::Bool(false));
        args.insert("limit".into(), READ_BACK_LIMIT.into());
        let listing = self
            .query(&read_back.revision_id, "list_session_thread_items", args)
            .await?;
        let items = listing["items"].as_array().cloned().unwrap_or_default();
        Ok(items
            .into_iter()
            .find(|item| item["metadata"]["post_id"].as_str() == Some(read_back.post_id.as_str())))
    }

    /// `{base}{path}` as a URL. Parsed once per path: a worker calls a handful of paths (two per
    /// revision) over and over, and parsing one, host and all, was a visible part of an idle
    /// poll's CPU. At most [`URL_CACHE_MAX`] paths are kept.
    fn url(&self, path: &str) -> Option<reqwest::Url> {
        let mut urls = self.inner.urls.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(url) = urls.get(path) {
            return Some(url.clone());
        }
        let url = reqwest::Url::parse(&format!("{}{}", self.inner.base, path)).ok()?;
        if urls.len() >= URL_CACHE_MAX {
            urls.clear();
        }
        urls.insert(path.to_owned(), url.clone());
        Some(url)
    }

    /// One HTTP exchange, classified as [`ApiError`] describes.
    async fn send_once(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Value, ApiError> {
        // Reads only: the exchange re-sends a request once when a kept connection turns out
        // closed, which only a read may risk.
        if let (Some(lean), Method::POST, Some(body)) = (&self.inner.lean, method.clone(), &body)
            && path.ends_with("/data/query")
            && let Some(url) = self.url(path)
        {
            let read = |answer: &super::lean::Answer<'_>| {
                tracing::trace!(%method, path, status = answer.status.as_u16(), "BlobHub response");
                classify(answer.status, answer.retry_after, answer.body)
            };
            return lean.post_with(&request_target(&url), body, read).await?;
        }
        self.send_reqwest(method, path, body, classify_body).await
    }

    /// One exchange through reqwest: `read` of the answer's status and body, once its status
    /// alone has decided nothing ([`status_error`]).
    async fn send_reqwest<T>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        read: impl FnOnce(StatusCode, &[u8]) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let mut request = match self.url(path) {
            Some(url) => self.inner.http.request(method.clone(), url),
            // Unparseable: reqwest reports it as it always did.
            None => {
                let url = format!("{}{path}", self.inner.base);
                self.inner.http.request(method.clone(), url)
            }
        };
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let response = request.send().await.map_err(network_error)?;
        let status = response.status();
        tracing::trace!(%method, path, status = status.as_u16(), "BlobHub response");
        if let Some(err) = response_error(&response) {
            return Err(err);
        }
        let bytes = response.bytes().await.map_err(network_error)?;
        read(status, &bytes)
    }

    /// `command` with `args` as a query to send again and again ([`Client::query_prepared`]):
    /// its path, request target and body written once. The event feed sends the same page
    /// request poll after poll, and building it each time (the arguments' map, the envelope's
    /// serialization, the URL) was a visible part of an idle poll's CPU.
    pub fn prepare_query(
        &self,
        revision_id: &str,
        command: &str,
        args: Map<String, Value>,
    ) -> PreparedQuery {
        let path = format!("/revisions/{revision_id}/data/query");
        let target = reqwest::Url::parse(&format!("{}{}", self.inner.base, path))
            .ok()
            .map(|url| request_target(&url));
        PreparedQuery {
            command: command.to_owned(),
            target,
            body: envelope_body(command, args),
            path,
        }
    }

    /// Sends `query`, retried and counted as [`Client::query`] is, and gives the body of a 2xx
    /// answer to `read`, which must decline (`None`) anything but the success it reads (it
    /// checks `status` itself); an answer it declines is classified as [`Client::query`]
    /// classifies it, and a success comes back as its whole envelope. On the lean exchange
    /// `read` sees the bytes in the connection's own buffer, so an answer it reads without
    /// allocating costs no allocation at all.
    pub async fn query_prepared<T>(
        &self,
        query: &PreparedQuery,
        read: impl Fn(&[u8]) -> Option<T>,
    ) -> Result<Read<T>, ApiError> {
        let sent = self
            .retrying(Idempotency::Read, &query.path, || {
                self.send_prepared(query, &read)
            })
            .await;
        counted(&query.command, sent)
    }

    async fn send_prepared<T>(
        &self,
        query: &PreparedQuery,
        read: &impl Fn(&[u8]) -> Option<T>,
    ) -> Result<Read<T>, ApiError> {
        // A 2xx status never decides alone ([`status_error`]): the reader sees every one.
        let answer = |status: StatusCode, retry_after: Option<&str>, body: &[u8]| {
            if status.is_success()
                && let Some(typed) = read(body)
            {
                return Ok(Read::Typed(typed));
            }
            classify(status, retry_after, body).map(Read::Envelope)
        };
        if let (Some(lean), Some(target)) = (&self.inner.lean, &query.target) {
            let read = |a: &super::lean::Answer<'_>| answer(a.status, a.retry_after, a.body);
            return lean.post_with(target, &query.body, read).await?;
        }
        // Boxed: this path (a proxy, or the exchange turned off) would otherwise make every
        // prepared query's future as large as reqwest's.
        let body = Some(query.body.clone());
        let read = |status, bytes: &[u8]| answer(status, None, bytes);
        Box::pin(self.send_reqwest(Method::POST, &query.path, body, read)).await
    }
}

/// A query prepared by [`Client::prepare_query`].
#[derive(Debug, Clone)]
pub struct PreparedQuery {
    command: String,
    path: String,
    /// The request target for the lean exchange (`None`: the URL does not parse, and reqwest
    /// reports it when it is sent).
    target: Option<String>,
    body: Vec<u8>,
}

/// A success answer to a prepared query.
#[derive(Debug, PartialEq)]
pub enum Read<T> {
    /// As the caller's reader read it.
    Typed(T),
    /// The reader declined it: the whole success envelope.
    Envelope(Value),
}

/// A URL's path and query as the URL parser wrote them (percent-encoded, tabs and line breaks
/// dropped), as reqwest sends them: ids in the path are interpolated raw.
fn request_target(url: &reqwest::Url) -> String {
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    }
}

/// An answer classified: the failure its status decides, else what its body says.
fn classify(status: StatusCode, retry_after: Option<&str>, body: &[u8]) -> Result<Value, ApiError> {
    if let Some(err) = status_error(status, retry_after) {
        return Err(err);
    }
    classify_body(status, body)
}

/// [`status_error`] of a reqwest response.
pub(super) fn response_error(response: &reqwest::Response) -> Option<ApiError> {
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok());
    status_error(response.status(), retry_after)
}

/// The failure a status alone decides (401/403, 429 with its `Retry-After`, 5xx); `None` when
/// the body decides.
pub(super) fn status_error(status: StatusCode, retry_after: Option<&str>) -> Option<ApiError> {
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Some(ApiError::AuthInvalid {
            status: status.as_u16(),
        }),
        StatusCode::TOO_MANY_REQUESTS => {
            let retry_after = retry_after.and_then(|v| parse_retry_after(v, SystemTime::now()));
            Some(ApiError::RateLimited { retry_after })
        }
        s if s.is_server_error() => Some(ApiError::Transient {
            status: Some(s.as_u16()),
            detail: format!("HTTP {}", s.as_u16()),
        }),
        _ => None,
    }
}

/// A JSON body: the success envelope, or the failure it describes.
pub(super) fn classify_body(status: StatusCode, bytes: &[u8]) -> Result<Value, ApiError> {
    let value: Value = if status.is_success() {
        // The same bytes come back on every retry: a success body that cannot be parsed is
        // permanent for this request, never transient (api/salvage.rs keeps what it can).
        salvage::parse_body(bytes).map_err(|why| ApiError::CommandFailed {
            status: status.as_u16(),
            error: UNPARSEABLE.to_owned(),
            message: why,
        })?
    } else {
        serde_json::from_slice(bytes).map_err(|_| ApiError::Transient {
            status: Some(status.as_u16()),
            detail: format!("HTTP {} with a body that is not JSON", status.as_u16()),
        })?
    };
    if value["status"].as_str() == Some("success") {
        return Ok(value);
    }
    Err(ApiError::CommandFailed {
        status: status.as_u16(),
        error: value["error"].as_str().unwrap_or("unknown").to_owned(),
        message: value["message"].as_str().unwrap_or_default().to_owned(),
    })
}

/// What the post read-back needs to find an item again.
struct ReadBack {
    revision_id: String,
    session_id: Option<Value>,
    alias: Option<Value>,
    post_id: String,
}

/// `{"command": name, ..args}` with `null` arguments left out: the platform types optional
/// arguments as strings and answers an explicit `null` with HTTP 400.
pub(super) fn envelope_body(command: &str, args: Map<String, Value>) -> Vec<u8> {
    let mut body = Map::with_capacity(args.len() + 1);
    body.insert("command".into(), Value::String(command.to_owned()));
    for (key, value) in args {
        if key != "command" && !value.is_null() {
            body.insert(key, value);
        }
    }
    serde_json::to_vec(&Value::Object(body)).expect("a JSON map always serialises")
}

pub(super) fn network_error(err: reqwest::Error) -> ApiError {
    ApiError::Network {
        // A connect failure (refused, unreachable, connect timeout) never reached the server.
        never_ran: err.is_connect(),
        detail: error_chain(&err),
    }
}

/// The error and its sources on one line (reqwest's top-level message alone says little).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// reqwest is built with `rustls-no-provider`; ring is the process-wide provider.
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Another part of the process may have installed one first; that one is kept.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The lean exchange's TLS: rustls with the platform's verifier, as reqwest's own, and ALPN
/// `http/1.1` (the exchange speaks nothing else). `None` (reqwest carries the feed) when the
/// platform's roots cannot be loaded.
pub(super) fn lean_tls() -> Option<Arc<rustls::ClientConfig>> {
    install_crypto_provider();
    let provider = rustls::crypto::CryptoProvider::get_default()?.clone();
    let verifier = rustls_platform_verifier::Verifier::new(provider.clone()).ok()?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Some(Arc::new(config))
}

/// `result` of one call of `command`, counted for `/metrics` by outcome.
pub(super) fn counted<T>(command: &str, result: Result<T, ApiError>) -> Result<T, ApiError> {
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.code(),
    };
    crate::metrics::count_api(command, outcome);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_omits_nulls_and_keeps_command_first() {
        let mut args = Map::new();
        args.insert("session_id".into(), "ses_1".into());
        args.insert("cursor".into(), Value::Null);
        args.insert("command".into(), "sneaky".into());
        let body: Value =
            serde_json::from_slice(&envelope_body("list_session_events", args)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"command": "list_session_events", "session_id": "ses_1"})
        );
    }

    #[test]
    fn urls_are_parsed_once_per_path_and_bounded() {
        let client = Client::new("http://127.0.0.1:9/v1", "k", RetryPolicy::default()).unwrap();
        let url = client.url("/revisions/r1/data/query").unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/v1/revisions/r1/data/query"
        );
        assert_eq!(client.url("/revisions/r1/data/query"), Some(url));
        // A path that makes no URL is left to reqwest, which reports it.
        let bare = Client::new("http://127.0.0.1:9", "k", RetryPolicy::default()).unwrap();
        assert_eq!(bare.url(":99999"), None);
        for n in 0..3 * URL_CACHE_MAX {
            assert!(client.url(&format!("/revisions/r{n}/data/query")).is_some());
        }
        assert!(client.inner.urls.lock().unwrap().len() <= URL_CACHE_MAX);
        // Another pool, its own cache, the same key.
        let own = client.with_own_connections().unwrap();
        assert!(own.inner.urls.lock().unwrap().is_empty());
        assert_eq!(own.api_url(), client.api_url());
    }

    #[test]
    fn client_debug_hides_the_key() {
        let client = Client::new(
            "http://127.0.0.1:9/v1/",
            "bhk_secret",
            RetryPolicy::default(),
        )
        .unwrap();
        assert_eq!(client.api_url(), "http://127.0.0.1:9/v1");
        assert!(!format!("{client:?}").contains("bhk_secret"));
    }

    #[test]
    fn bad_urls_are_refused() {
        for url in ["", "not a url", "ftp://x/v1"] {
            let err = Client::new(url, "k", RetryPolicy::default()).unwrap_err();
            assert_eq!(err.code(), "API_INVALID_CONFIGURATION");
        }
    }

    #[tokio::test]
    async fn connection_refused_is_a_never_ran_network_error() {
        // Bind and drop a listener to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let retry = RetryPolicy {
            max_attempts: 2,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(2),
        };
        let client = Client::new(&format!("http://127.0.0.1:{port}/v1"), "k", retry).unwrap();
        let err = client.users_me().await.unwrap_err();
        assert_eq!(err.code(), "API_NETWORK_ERROR");
        assert!(err.never_ran(), "{err:?}");
    }
}
