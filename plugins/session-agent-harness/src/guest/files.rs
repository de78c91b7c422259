//! Files both ways, through the host's `files` capability (docs/attachments.md): the inbox and
//! outbox made at activation, a person's files downloaded before the turn that reads them, the
//! agent's outbox published before every `turn_end`.

use std::rc::Rc;
use std::time::Duration;

use blobhub_worker_sdk::files::{self, EntryKind, FileError, TransferError};
use blobhub_worker_sdk::serde_json::{Value, json};
use blobhub_worker_sdk::session::ApiError;
use blobhub_worker_sdk::{self as sdk, log::Level};

use super::attempt::{self, TurnState};
use super::ctx::{log, retryable};
use super::thread::{Msg, Thread};
use crate::artifacts::{self, Published, Skipped};
use crate::attachments::{self, Block, Local, NativeInput, Part};
use crate::settings::Settings;

/// Make the inbox and the outbox (each with a `.gitignore` of `*`) and log the activation's
/// warnings. A folder the host refuses (a link on the way, a folder outside the allowed roots)
/// turns that direction off for this activation; it never fails the thread.
pub fn prepare(alias: &str, settings: &mut Settings) {
    for (event, fields) in &settings.warnings {
        log(Level::Warning, event, Some(alias), fields.clone());
    }
    let wf = settings.work_folder.clone();
    if let Some(inbox) = settings.inbox.clone()
        && let Err(e) = files::ensure_folder(&wf, &inbox, true)
    {
        log(
            Level::Warning,
            "inbox_invalid",
            Some(alias),
            json!({"error": files::describe(&e), "inbox": inbox}),
        );
        settings.inbox = None;
    }
    if let Some(a) = settings.artifacts.clone()
        && let Err(e) = files::ensure_folder(&wf, &a.outbox, true)
    {
        log(
            Level::Warning,
            "outbox_invalid",
            Some(alias),
            json!({"error": files::describe(&e), "outbox": a.outbox}),
        );
        settings.artifacts = None;
        // What the host would not make is no root for `outside: outbox` either.
        if let Some(gate) = settings.gate.as_mut() {
            gate.outbox = None;
        }
    }
}

/// Why a download failed, for the agent and the `attachment_unavailable` item; and whether it is
/// worth another attempt.
fn download_failure(e: &TransferError) -> (String, bool) {
    match e {
        TransferError::File(f) => (files::describe(f), false),
        TransferError::Api(ApiError::AuthInvalid) => ("not found or not accessible".into(), false),
        TransferError::Api(ApiError::CommandFailed(c)) => (
            if c.message.is_empty() {
                c.error.clone()
            } else {
                format!("{}: {}", c.error, c.message)
            },
            false,
        ),
        TransferError::Api(a) => (a.to_string(), retryable(a)),
    }
}

/// Download one file: transient failures are tried [`attachments::DOWNLOAD_ATTEMPTS`] times in
/// all (0.5 s, then 1 s apart), anything else fails at once.
async fn download(alias: &str, wf: &str, dest: &str) -> Result<Value, String> {
    let mut attempt = 1;
    loop {
        match files::download_session_file(alias, wf, dest).await {
            Ok(v) => return Ok(v),
            Err(e) => {
                let (reason, again) = download_failure(&e);
                if !again || attempt >= attachments::DOWNLOAD_ATTEMPTS {
                    return Err(reason);
                }
                sdk::sleep(Duration::from_millis(
                    attachments::DOWNLOAD_BACKOFF_MS << (attempt - 1),
                ))
                .await;
                attempt += 1;
            }
        }
    }
}

/// The turn's input: every message's blocks in order, messages joined by a blank line, each file
/// downloaded into `<inbox>/<item>/<name>` first. Failed files become `unavailable` parts and
/// one `attachment_unavailable` item; nothing here fails the thread. Also the image bytes the
/// agent is given natively (claude), and the turn's text as every agent can read it.
pub async fn turn_input(
    t: &Rc<Thread>,
    settings: &Settings,
    messages: &[Msg],
) -> (String, Option<NativeInput>) {
    let mut parts: Vec<Part> = Vec::new();
    let mut failed: Vec<(String, String, String)> = Vec::new();
    let wf = settings.work_folder.trim_end_matches('/');
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            parts.push(Part::Text("\n\n".into()));
        }
        let files: Vec<&attachments::FileRef> = m
            .blocks
            .iter()
            .filter_map(|b| match b {
                Block::File(f) => Some(f),
                Block::Text(_) => None,
            })
            .collect();
        if files.is_empty() {
            parts.push(Part::Text(m.text.clone()));
            continue;
        }
        let names = attachments::item_names(&files);
        let folder = attachments::sanitize(&m.item_id, 0);
        let mut next = 0;
        for block in &m.blocks {
            let f = match block {
                Block::Text(text) => {
                    parts.push(Part::Text(text.clone()));
                    continue;
                }
                Block::File(f) => f,
            };
            let name = names[next].clone();
            next += 1;
            let Some(inbox) = &settings.inbox else {
                let reason = "the thread has no usable inbox".to_string();
                failed.push((name.clone(), f.alias.clone(), reason.clone()));
                parts.push(Part::Unavailable { name, reason });
                continue;
            };
            let rel = format!("{inbox}/{folder}/{name}");
            match download(&f.alias, wf, &rel).await {
                Ok(envelope) => {
                    let file = envelope.pointer("/object/value/file");
                    let ct = file
                        .and_then(|v| v.get("content_type"))
                        .and_then(Value::as_str)
                        .filter(|c| !c.is_empty())
                        .unwrap_or(&f.content_type)
                        .to_string();
                    let size = envelope
                        .pointer("/written/size")
                        .and_then(Value::as_u64)
                        .unwrap_or(f.size);
                    parts.push(Part::File(Local {
                        name,
                        path: format!("{wf}/{rel}"),
                        rel,
                        content_type: ct,
                        size,
                    }));
                }
                Err(reason) => {
                    log(
                        Level::Warning,
                        "attachment_download_failed",
                        Some(&t.alias),
                        json!({"alias": f.alias, "item_id": m.item_id, "error": reason}),
                    );
                    failed.push((name.clone(), f.alias.clone(), reason.clone()));
                    parts.push(Part::Unavailable { name, reason });
                }
            }
        }
    }
    if !failed.is_empty() {
        // Best effort: the turn goes on whether or not the notice lands.
        let _ = t.post(attachments::unavailable_item(&failed), None).await;
    }
    let text = attachments::render(&parts);
    let native = if attachments::has_image(&parts) {
        let mut images = Vec::new();
        for p in &parts {
            if let Part::File(f) = p
                && f.is_image()
            {
                match files::read_file(wf, &f.rel, files::max_file_size()) {
                    Ok(bytes) => images.push((f.path.clone(), attachments::base64(&bytes))),
                    Err(e) => log(
                        Level::Warning,
                        "attachment_image_unreadable",
                        Some(&t.alias),
                        json!({"path": f.path, "error": files::describe(&e)}),
                    ),
                }
            }
        }
        Some(NativeInput { parts, images })
    } else {
        None
    };
    (text, native)
}

/// Whether a failed upload means the platform refused the file's type.
fn unsupported_type(e: &ApiError) -> bool {
    matches!(e, ApiError::CommandFailed(c) if c.error == "unsupported_file_type")
}

/// Publish the outbox before the turn's `turn_end`: every regular file (not the root
/// `.gitignore`, not the inbox) uploaded at its alias, symbolic links and special files skipped,
/// then the `artifacts_published` items. Does nothing for a thread without a valid `artifacts`
/// block.
pub async fn publish(t: &Rc<Thread>, settings: &Settings, st: &mut TurnState) {
    let Some(a) = &settings.artifacts else {
        return;
    };
    let wf = settings.work_folder.trim_end_matches('/');
    let mut published: Vec<Published> = Vec::new();
    let mut skipped: Vec<Skipped> = Vec::new();
    let mut error = None;
    // The inbox's place inside the outbox, when it is inside it.
    let inbox_inside = settings
        .inbox
        .as_ref()
        .and_then(|i| i.strip_prefix(&format!("{}/", a.outbox)))
        .map(str::to_string);
    match files::list_tree(wf, &a.outbox, artifacts::WALK_MAX) {
        Err(e) => {
            error = Some(format!(
                "the outbox could not be read: {}",
                files::describe(&e)
            ))
        }
        Ok(entries) => {
            if entries.len() >= artifacts::WALK_MAX as usize {
                error = Some(format!(
                    "the outbox holds more than {} entries; only the first were looked at",
                    artifacts::WALK_MAX
                ));
            }
            let max = files::max_file_size();
            let mut aliases: Vec<String> = Vec::new();
            for e in entries {
                let rel = e.path.clone();
                if rel == ".gitignore" {
                    continue;
                }
                if let Some(inbox) = &inbox_inside
                    && (rel == *inbox || rel.starts_with(&format!("{inbox}/")))
                {
                    continue;
                }
                let reason = match e.kind {
                    EntryKind::Folder => continue,
                    EntryKind::Link => Some("symlink"),
                    EntryKind::Other => Some("unreadable"),
                    EntryKind::File if e.size > max => Some("too_large"),
                    EntryKind::File => None,
                };
                if let Some(reason) = reason {
                    skipped.push(Skipped { path: rel, reason });
                    continue;
                }
                let taken = |candidate: &str| aliases.iter().any(|a| a == candidate);
                let Some(alias) = artifacts::alias_for(&a.prefix, &rel, &taken) else {
                    skipped.push(Skipped {
                        path: rel,
                        reason: "invalid_alias",
                    });
                    continue;
                };
                let name = rel.rsplit('/').next().unwrap_or(&rel).to_string();
                let content_type = artifacts::content_type(&name);
                let src = format!("{}/{rel}", a.outbox);
                match files::upload_session_file(&alias, &name, content_type, wf, &src).await {
                    Ok(envelope) => {
                        let file = envelope.pointer("/object/value/file");
                        let field = |k: &str| file.and_then(|f| f.get(k)).cloned();
                        published.push(Published {
                            alias: alias.clone(),
                            name: field("name")
                                .and_then(|v| v.as_str().map(str::to_string))
                                .unwrap_or(name),
                            content_type: field("content_type")
                                .and_then(|v| v.as_str().map(str::to_string))
                                .unwrap_or_else(|| {
                                    content_type.unwrap_or("application/octet-stream").into()
                                }),
                            size: field("size").and_then(|v| v.as_u64()).unwrap_or(e.size),
                        });
                        aliases.push(alias);
                    }
                    Err(err) => {
                        let reason = match &err {
                            TransferError::File(FileError::TooLarge(_)) => "too_large",
                            TransferError::File(_) => "unreadable",
                            TransferError::Api(api) if unsupported_type(api) => "unsupported_type",
                            TransferError::Api(_) => "upload_failed",
                        };
                        log(
                            Level::Warning,
                            "artifact_upload_failed",
                            Some(&t.alias),
                            json!({"alias": alias, "error": err.to_string()}),
                        );
                        if let TransferError::Api(api) = &err {
                            t.ctx.check_refusal(api);
                        }
                        skipped.push(Skipped { path: rel, reason });
                    }
                }
            }
        }
    }
    log(
        Level::Info,
        "artifacts_published",
        Some(&t.alias),
        json!({"turn_id": st.turn_id, "published": published.len(), "skipped": skipped.len()}),
    );
    for item in artifacts::items(&published, &skipped, error.as_deref()) {
        attempt::emit(t, st, item).await;
    }
}
