//! The status socket, `<tree>/worker.sock`: how `top`, `status` and `stop` reach a worker
//! running in another process.
//!
//! A running `start` serves it; nothing else listens on it. It is a Unix socket, mode 0600, in
//! the state tree (itself 0700), and every connection's peer credentials are checked: a process
//! of another user is refused even if it could reach the file. One request per connection, one
//! JSON line each way:
//!
//! * `{"request":"status"}` → `{"ok":true,"status":<the dashboard's snapshot>}`
//! * `{"request":"stop","force":false}` → `{"ok":true,"pid":N}`: as SIGTERM (graceful);
//!   with `force` as a second SIGINT (sections still draining are cancelled).
//!
//! The server is async (tokio, inside `start`); the client is blocking (std), so that `top`'s
//! dashboard thread and `status` need no runtime.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream as StdStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

use crate::dashboard::model::Snapshot;
use crate::signals::Stopper;

/// The socket's file name in the state tree.
pub const FILE_NAME: &str = "worker.sock";
/// Requests are small; anything longer is refused.
const MAX_REQUEST: u64 = 4096;
/// How long a client waits for a worker to answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

pub fn path(tree_root: &Path) -> PathBuf {
    tree_root.join(FILE_NAME)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    Status,
    Stop {
        #[serde(default)]
        force: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Snapshot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    fn refused(error: impl Into<String>) -> Self {
        Response {
            ok: false,
            status: None,
            pid: None,
            error: Some(error.into()),
        }
    }
}

/// What the server answers with: the current snapshot.
pub type Source = Arc<dyn Fn() -> Snapshot + Send + Sync>;

/// A serving socket. Dropping it stops serving and removes the file.
pub struct Server {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Serve the status socket at `path` (inside the tokio runtime). A file left there by a worker
/// that died is replaced: the instance lock, held by the caller, says no other worker runs.
pub fn serve(path: &Path, source: Source, stopper: Stopper) -> io::Result<Server> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    // The folder (0700) already keeps others out; the mode says the same on the file itself.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    // SAFETY: geteuid has no preconditions.
    let owner = unsafe { libc::geteuid() };
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let source = Arc::clone(&source);
            let stopper = stopper.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(stream, owner, &source, &stopper).await {
                    tracing::debug!(error = %e, "status_socket_request_failed");
                }
            });
        }
    });
    Ok(Server {
        path: path.to_owned(),
        task,
    })
}

async fn answer(
    mut stream: tokio::net::UnixStream,
    owner: u32,
    source: &Source,
    stopper: &Stopper,
) -> io::Result<()> {
    let peer = stream.peer_cred()?.uid();
    // The request is read (bounded in size and time) before anything is answered, so that a
    // refused client reads the refusal rather than a broken pipe.
    let mut line = String::new();
    {
        let (read, _) = stream.split();
        let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST));
        tokio::time::timeout(CLIENT_TIMEOUT, reader.read_line(&mut line))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no request"))??;
    }
    let response = if peer != owner {
        tracing::warn!(uid = peer, "status_socket_peer_refused");
        Response::refused(format!(
            "only the worker's own user may use this socket (uid {owner}, not {peer})"
        ))
    } else {
        match serde_json::from_str::<Request>(&line) {
            Ok(Request::Status) => Response {
                ok: true,
                status: Some(source()),
                pid: None,
                error: None,
            },
            Ok(Request::Stop { force }) => {
                tracing::info!(force, "stop_requested");
                if force {
                    // The second interrupt forces, whatever came before.
                    stopper.interrupt();
                    stopper.interrupt();
                } else {
                    stopper.terminate();
                }
                Response {
                    ok: true,
                    status: None,
                    pid: Some(std::process::id()),
                    error: None,
                }
            }
            Err(e) => Response::refused(format!("not a request: {e}")),
        }
    };
    let mut bytes = serde_json::to_vec(&response).map_err(io::Error::other)?;
    bytes.push(b'\n');
    stream.write_all(&bytes).await?;
    stream.shutdown().await
}

/// Why a request did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No socket, or nobody listening on it: no worker serves this tree.
    #[error("no worker answers on {0}")]
    NotRunning(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// The worker answered with a refusal.
    #[error("the worker refused: {0}")]
    Refused(String),
}

/// Send one request to the worker serving `path` and read its answer (blocking).
pub fn request(path: &Path, request: &Request) -> Result<Response, ClientError> {
    let io_error = |source: io::Error| match source.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            ClientError::NotRunning(path.to_owned())
        }
        _ => ClientError::Io {
            path: path.to_owned(),
            source,
        },
    };
    let mut stream = StdStream::connect(path).map_err(io_error)?;
    stream
        .set_read_timeout(Some(CLIENT_TIMEOUT))
        .map_err(io_error)?;
    stream
        .set_write_timeout(Some(CLIENT_TIMEOUT))
        .map_err(io_error)?;
    let mut line = serde_json::to_vec(request).map_err(|e| io_error(io::Error::other(e)))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io_error)?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(io_error)?;
    let response: Response = serde_json::from_str(&answer).map_err(|e| {
        io_error(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not an answer ({e}): {answer:?}"),
        ))
    })?;
    if !response.ok {
        return Err(ClientError::Refused(
            response.error.unwrap_or_else(|| "no reason given".into()),
        ));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_shape() {
        assert_eq!(
            serde_json::to_string(&Request::Status).unwrap(),
            r#"{"request":"status"}"#
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"request":"stop"}"#).unwrap(),
            Request::Stop { force: false }
        );
    }

    #[tokio::test]
    async fn serves_status_and_stop_to_its_owner_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = path(dir.path());
        let (requests, stopper) = crate::signals::StopRequests::with_stopper();
        let source: Source = Arc::new(|| Snapshot {
            clock: "2026-05-01T10:11:12Z".into(),
            ..Default::default()
        });
        let server = serve(&path, source, stopper).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let p = path.clone();
        let status = tokio::task::spawn_blocking(move || request(&p, &Request::Status))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.status.unwrap().clock, "2026-05-01T10:11:12Z");
        assert!(!*requests.shutdown.borrow());
        let p = path.clone();
        let stop =
            tokio::task::spawn_blocking(move || request(&p, &Request::Stop { force: false }))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(stop.pid, Some(std::process::id()));
        assert!(*requests.shutdown.borrow() && !*requests.force.borrow());
        drop(server);
        assert!(!path.exists(), "the file goes with the server");
        let p = path.clone();
        let gone = tokio::task::spawn_blocking(move || request(&p, &Request::Status))
            .await
            .unwrap();
        assert!(matches!(gone, Err(ClientError::NotRunning(_))), "{gone:?}");
    }
}
