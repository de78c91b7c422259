//! The data channel's binary conventions, for session files.
//!
//! * Write (`upload_session_file`): `POST .../data/command` with `Content-Type:
//!   application/octet-stream`, the command and its arguments as JSON in the `X-Request-Body`
//!   header, the file's bytes as the body; the answer is an ordinary JSON envelope.
//! * Read (`download_session_file`): `POST .../data/query` with an ordinary JSON body and `Accept:
//!   application/octet-stream`; success is an octet-stream body (the bytes) with the envelope in
//!   the `X-Response-Body` header. A JSON body on this channel is a failure envelope, classified
//!   like any other answer; a JSON *success* is a protocol mismatch.

use reqwest::Method;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::{Map, Value};

use super::ApiError;
use super::client::{
    Client, Idempotency, classify_body, counted, envelope_body, network_error, response_error,
};

/// The platform's cap on a session file (4 MiB).
pub const MAX_FILE_SIZE: u64 = 4 * 1024 * 1024;

/// A downloaded session file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    /// The success envelope (`object.value.file.{content_type, size}`).
    pub envelope: Value,
    pub bytes: Vec<u8>,
}

impl Client {
    /// `upload_session_file`: `bytes` stored as the file object `args.alias`. `args` carries
    /// `session_id`, `alias`, `name`, `content_type`; `size` is set here. Retried only when the
    /// failure proves it never ran (a write).
    pub async fn upload_session_file(
        &self,
        revision_id: &str,
        mut args: Map<String, Value>,
        bytes: Vec<u8>,
    ) -> Result<Value, ApiError> {
        const COMMAND: &str = "upload_session_file";
        args.insert("size".into(), Value::from(bytes.len() as u64));
        let header = ascii_json(&envelope_body(COMMAND, args));
        let path = format!("/revisions/{revision_id}/data/command");
        let url = format!("{}{}", self.inner.base, path);
        let (url, header, body) = (&url, &header, &bytes);
        let result = self
            .retrying(Idempotency::Write, &path, || async move {
                let response = self
                    .inner
                    .http
                    .post(url.as_str())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header("X-Request-Body", header.as_str())
                    .body(body.clone())
                    .send()
                    .await
                    .map_err(network_error)?;
                let status = response.status();
                if let Some(err) = response_error(&response) {
                    return Err(err);
                }
                let bytes = response.bytes().await.map_err(network_error)?;
                classify_body(status, &bytes)
            })
            .await;
        counted(COMMAND, result)
    }

    /// `download_session_file`: the envelope and the bytes, at most `limit` bytes (more is a
    /// `file_too_large` failure, read no further). Every transient failure is retried (a read).
    pub async fn download_session_file(
        &self,
        revision_id: &str,
        args: Map<String, Value>,
        limit: u64,
    ) -> Result<Download, ApiError> {
        const COMMAND: &str = "download_session_file";
        let body = envelope_body(COMMAND, args);
        let path = format!("/revisions/{revision_id}/data/query");
        let url = format!("{}{}", self.inner.base, path);
        let result = self
            .retrying(Idempotency::Read, &path, || {
                self.download_once(&url, body.clone(), limit)
            })
            .await;
        counted(COMMAND, result)
    }

    async fn download_once(
        &self,
        url: &str,
        body: Vec<u8>,
        limit: u64,
    ) -> Result<Download, ApiError> {
        let mut response = self
            .inner
            .http
            .request(Method::POST, url)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/octet-stream")
            .body(body)
            .send()
            .await
            .map_err(network_error)?;
        let status = response.status();
        if let Some(err) = response_error(&response) {
            return Err(err);
        }
        let binary = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/octet-stream"));
        if !binary {
            let bytes = response.bytes().await.map_err(network_error)?;
            // A failure envelope is the platform's refusal; a success here is not this channel.
            classify_body(status, &bytes)?;
            return Err(ApiError::CommandFailed {
                status: status.as_u16(),
                error: "protocol_mismatch".into(),
                message: "download_session_file answered JSON instead of the file's bytes".into(),
            });
        }
        let envelope = response
            .headers()
            .get("x-response-body")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| serde_json::from_str::<Value>(v).ok())
            .filter(|v| v["status"].as_str() == Some("success"))
            .ok_or_else(|| ApiError::CommandFailed {
                status: status.as_u16(),
                error: "protocol_mismatch".into(),
                message: "download_session_file answered without an X-Response-Body envelope"
                    .into(),
            })?;
        if !status.is_success() {
            return Err(ApiError::Transient {
                status: Some(status.as_u16()),
                detail: format!("HTTP {}", status.as_u16()),
            });
        }
        let too_large = |size: u64| ApiError::CommandFailed {
            status: status.as_u16(),
            error: "file_too_large".into(),
            message: format!("the file is {size} bytes or more; at most {limit} are accepted"),
        };
        if let Some(len) = response.content_length()
            && len > limit
        {
            return Err(too_large(len));
        }
        // Read in chunks so that a body over the cap is never held whole.
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(network_error)? {
            if (bytes.len() + chunk.len()) as u64 > limit {
                return Err(too_large((bytes.len() + chunk.len()) as u64));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Download { envelope, bytes })
    }
}

/// JSON with every non-ASCII character as a `\uXXXX` escape, so that it is a valid header value.
fn ascii_json(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_json_is_ascii_and_means_the_same() {
        let body = envelope_body(
            "upload_session_file",
            serde_json::from_value(serde_json::json!({"name": "résumé 📎.txt"})).unwrap(),
        );
        let header = ascii_json(&body);
        assert!(header.is_ascii(), "{header}");
        let back: Value = serde_json::from_str(&header).unwrap();
        assert_eq!(back["name"], "résumé 📎.txt");
    }
}
