//! Session files and work folders (`blobhub:worker/files`): the host moves the bytes between the
//! session and a work folder; the job type names the folder and a relative path in it.

use serde_json::Value;

use crate::bindings::blobhub::worker::files as raw;
pub use crate::bindings::blobhub::worker::files::{Entry, EntryKind, FileError};
use crate::session::ApiError;
use crate::wait::reply;

/// A transfer that failed: refused before anything was sent (`File`), or by the platform or the
/// host afterwards (`Api`).
#[derive(Debug, Clone)]
pub enum TransferError {
    File(FileError),
    Api(ApiError),
}

/// A file error for people: what went wrong, without the variant's name.
pub fn describe(e: &FileError) -> String {
    match e {
        FileError::FolderRefused(m) => format!("work folder refused: {m}"),
        FileError::TooLarge(n) => format!("too large ({n} bytes or more)"),
        FileError::NotInside(m) | FileError::NotFound(m) | FileError::Io(m) => m.clone(),
    }
}

impl std::fmt::Display for TransferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransferError::File(e) => f.write_str(&describe(e)),
            TransferError::Api(e) => e.fmt(f),
        }
    }
}

async fn envelope(r: Result<raw::Reply, FileError>) -> Result<Value, TransferError> {
    let text = reply(r.map_err(TransferError::File)?)
        .await
        .map_err(TransferError::Api)?;
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `download_session_file` of `alias` into `dest` (relative to `work_folder`): the envelope, with
/// `written: {path, size}` added by the host.
pub async fn download_session_file(
    alias: &str,
    work_folder: &str,
    dest: &str,
) -> Result<Value, TransferError> {
    envelope(raw::download_session_file(alias, work_folder, dest)).await
}

/// `upload_session_file` of `src` (relative to `work_folder`) as the file object `alias`.
pub async fn upload_session_file(
    alias: &str,
    name: &str,
    content_type: Option<&str>,
    work_folder: &str,
    src: &str,
) -> Result<Value, TransferError> {
    envelope(raw::upload_session_file(
        alias,
        name,
        content_type,
        work_folder,
        src,
    ))
    .await
}

pub use raw::{ensure_folder, list_tree, max_file_size, read_file};
