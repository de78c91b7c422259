//! `blobhub:worker/files`: session files moved between the session and a work folder.
//!
//! The host does both halves, so a job type never holds the API key nor a file descriptor: it
//! names a work folder (checked by the rule of a spawned program's `cwd`, see
//! [`SectionHost::check_cwd`]) and a relative path inside it, which [`confined`] walks one
//! component at a time without following links. Only a job type that may start programs gets
//! here at all: what it could write through this interface, a program it starts in the same folder
//! could write too.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value, json};
use wasmtime::component::Resource;

use crate::api::MAX_FILE_SIZE;
use crate::runtime::capabilities::session::{self, ReplyHandle, check_alias};
use crate::runtime::confined::{self, ConfinedError, EntryKind};
use crate::runtime::pending::Pending;
use crate::runtime::store::SectionHost;
use crate::runtime::wit::latest::files::{self as wit, Entry, FileError};
use crate::runtime::wit::latest::process::SpawnError;
use crate::runtime::wit::latest::session::ApiError;

/// The most entries `list-tree` returns, whatever the guest asks for.
const LIST_MAX: u32 = 10_000;

impl From<ConfinedError> for FileError {
    fn from(e: ConfinedError) -> Self {
        match e {
            ConfinedError::NotInside(_) | ConfinedError::Link(_) => {
                FileError::NotInside(e.to_string())
            }
            ConfinedError::TooLarge { size, .. } => FileError::TooLarge(size),
            ConfinedError::Io { ref source, .. }
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                FileError::NotFound(e.to_string())
            }
            ConfinedError::Io { .. } => FileError::Io(e.to_string()),
        }
    }
}

/// `text/plain` for UTF-8 bytes, else `application/octet-stream`.
fn sniffed_type(bytes: &[u8]) -> &'static str {
    if std::str::from_utf8(bytes).is_ok() {
        "text/plain"
    } else {
        "application/octet-stream"
    }
}

impl SectionHost {
    /// The real path of a work folder this job type may use.
    /// What every session-file call checks first: the thread's alias, then the work folder it
    /// names (its resolved root).
    fn file_call_root(&self, alias: &str, work_folder: &str) -> Result<PathBuf, FileError> {
        check_alias(alias).map_err(FileError::NotInside)?;
        self.work_folder(work_folder)
    }

    fn work_folder(&self, work_folder: &str) -> Result<PathBuf, FileError> {
        if self.section.grants.programs.is_empty() {
            return Err(FileError::FolderRefused(format!(
                "job type `{}` may start no program, so it may not use work folders either",
                self.section.job_type
            )));
        }
        self.check_cwd(work_folder).map_err(|e| match e {
            SpawnError::BadDirectory(m) => FileError::FolderRefused(m),
            other => FileError::FolderRefused(format!("{other:?}")),
        })
    }

    /// Start `future` as a `reply`, counted against the section's request quota.
    fn file_reply(
        &mut self,
        work: impl FnOnce(
            Arc<crate::runtime::capabilities::SectionContext>,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<String, ApiError>> + Send>,
        >,
    ) -> wasmtime::Result<Result<Resource<ReplyHandle>, FileError>> {
        let pending = match self.section.quotas.start_request() {
            Err(refusal) => Pending::ready(Err(ApiError::Refused(refusal)), session::died),
            Ok(counted) => {
                let section = Arc::clone(&self.section);
                let slots = Arc::clone(&section.quotas.requests);
                let future = work(section);
                Pending::spawn(
                    async move {
                        let _counted = counted;
                        let _slot = slots.acquire_owned().await;
                        future.await
                    },
                    session::died,
                )
            }
        };
        Ok(Ok(self.table.push(pending)?))
    }
}

impl wit::Host for SectionHost {
    fn max_file_size(&mut self) -> wasmtime::Result<u64> {
        Ok(MAX_FILE_SIZE)
    }

    fn ensure_folder(
        &mut self,
        work_folder: String,
        path: String,
        ignore_all: bool,
    ) -> wasmtime::Result<Result<(), FileError>> {
        let root = match self.work_folder(&work_folder) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        Ok(confined::ensure_folder(&root, &path, ignore_all).map_err(FileError::from))
    }

    fn list_tree(
        &mut self,
        work_folder: String,
        path: String,
        max_entries: u32,
    ) -> wasmtime::Result<Result<Vec<Entry>, FileError>> {
        let root = match self.work_folder(&work_folder) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let listed = confined::list_tree(&root, &path, max_entries.min(LIST_MAX) as usize)
            .map_err(FileError::from)
            .map(|entries| {
                entries
                    .into_iter()
                    .map(|e| Entry {
                        path: e.path,
                        kind: match e.kind {
                            EntryKind::File => wit::EntryKind::File,
                            EntryKind::Folder => wit::EntryKind::Folder,
                            EntryKind::Link => wit::EntryKind::Link,
                            EntryKind::Other => wit::EntryKind::Other,
                        },
                        size: e.size,
                    })
                    .collect()
            });
        Ok(listed)
    }

    fn read_file(
        &mut self,
        work_folder: String,
        path: String,
        limit: u64,
    ) -> wasmtime::Result<Result<Vec<u8>, FileError>> {
        let root = match self.work_folder(&work_folder) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        Ok(
            match confined::read(&root, &path, limit.min(MAX_FILE_SIZE)) {
                Ok(Some(bytes)) => Ok(bytes),
                Ok(None) => Err(FileError::NotFound(format!("`{path}` does not exist"))),
                Err(e) => Err(e.into()),
            },
        )
    }

    fn download_session_file(
        &mut self,
        alias: String,
        work_folder: String,
        dest: String,
    ) -> wasmtime::Result<Result<Resource<ReplyHandle>, FileError>> {
        let root = match self.file_call_root(&alias, &work_folder) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        // The destination is checked before anything is sent; the write itself walks again.
        if dest.is_empty() || dest.starts_with('/') || dest.split('/').any(|s| s == "..") {
            return Ok(Err(FileError::NotInside(format!(
                "`{dest}` is not a path inside the work folder"
            ))));
        }
        self.file_reply(move |section| {
            Box::pin(async move {
                let mut args = Map::new();
                args.insert("alias".into(), json!(alias));
                let download = session::call_download(
                    section.shared.transport.as_ref(),
                    &section.session,
                    args,
                    MAX_FILE_SIZE,
                )
                .await?;
                let size = download.bytes.len() as u64;
                let (path, bytes) = (dest.clone(), download.bytes);
                let written = tokio::task::spawn_blocking(move || {
                    confined::write_atomic(&root, &path, &bytes)
                })
                .await
                .map_err(|e| ApiError::Refused(format!("the write task ended: {e}")))?;
                written.map_err(|e| {
                    ApiError::Refused(format!("the downloaded file was not kept: {e}"))
                })?;
                let mut envelope = download.envelope;
                envelope["written"] = json!({"path": dest, "size": size});
                Ok(envelope.to_string())
            })
        })
    }

    fn upload_session_file(
        &mut self,
        alias: String,
        name: String,
        content_type: Option<String>,
        work_folder: String,
        src: String,
    ) -> wasmtime::Result<Result<Resource<ReplyHandle>, FileError>> {
        let root = match self.file_call_root(&alias, &work_folder) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let bytes = match confined::read(&root, &src, MAX_FILE_SIZE) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                return Ok(Err(FileError::NotFound(format!("`{src}` does not exist"))));
            }
            Err(e) => return Ok(Err(e.into())),
        };
        let content_type = content_type
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| sniffed_type(&bytes).to_owned());
        self.file_reply(move |section| {
            Box::pin(async move {
                let mut args = Map::new();
                args.insert("alias".into(), json!(alias));
                args.insert("name".into(), json!(name));
                args.insert("content_type".into(), json!(content_type));
                let envelope: Value = session::call_upload(
                    section.shared.transport.as_ref(),
                    &section.session,
                    args,
                    bytes,
                )
                .await?;
                Ok(envelope.to_string())
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing_is_utf8_or_bytes() {
        assert_eq!(sniffed_type(b"hello\n"), "text/plain");
        assert_eq!(sniffed_type("é".as_bytes()), "text/plain");
        assert_eq!(
            sniffed_type(&[0x89, b'P', b'N', b'G', 0xff]),
            "application/octet-stream"
        );
    }

    #[test]
    fn confined_errors_map_to_file_errors() {
        assert!(matches!(
            FileError::from(ConfinedError::Link("x".into())),
            FileError::NotInside(_)
        ));
        assert!(matches!(
            FileError::from(ConfinedError::TooLarge {
                path: "x".into(),
                size: 9,
                limit: 8
            }),
            FileError::TooLarge(9)
        ));
    }
}
