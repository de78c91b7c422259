//! The emulator's whole world: users, blobs, revisions, sessions, objects,
//! thread items and events, plus the clock that stamps them. Serialisable so a
//! state file can carry it across restarts.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::User;
use crate::error::ApiError;

/// The platform's item cap, enforced with `>=` on the stored (server-wrapped) item.
pub const ITEM_SIZE_CAP: usize = 65_536;
pub const MAX_FILE_BLOCKS: usize = 10;
pub const FILE_SIZE_CAP: usize = 4 * 1024 * 1024;

pub const SESSION_STATUSES: &[&str] = &["open", "closing", "closed", "deleting", "deleted"];

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub users: Vec<User>,
    /// Keyed by `org_id/blob_id`.
    pub blobs: BTreeMap<String, Blob>,
    pub revisions: BTreeMap<String, Revision>,
    pub sessions: BTreeMap<String, Session>,
    /// Last timestamp handed out, in µs since the epoch; kept so stamps stay
    /// strictly increasing even across a restart with a state file.
    pub last_micros: u64,
    pub next_id: u64,
    /// Items listings do not show yet (item id → when they become visible): the platform's
    /// listings are eventually consistent, and tests set this to reproduce a late item.
    #[serde(skip)]
    pub hidden_until: BTreeMap<String, std::time::Instant>,
    /// Content types `upload_session_file` refuses with `unsupported_file_type` (the platform
    /// refuses some types; tests choose which).
    #[serde(skip)]
    pub refused_file_types: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Blob {
    pub org_id: String,
    pub blob_id: String,
    pub default_revision: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Revision {
    pub id: String,
    pub org_id: String,
    pub blob_id: String,
    pub phase: String,
    pub status: String,
}

impl Revision {
    pub fn to_json(&self) -> Value {
        json!({"id": self.id, "org_id": self.org_id, "blob_id": self.blob_id,
               "phase": self.phase, "status": self.status})
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub alias: Option<String>,
    pub revision_id: String,
    pub status: String,
    pub created_at: String,
    pub objects: BTreeMap<String, Object>,
    pub events: Vec<Value>,
}

impl Session {
    pub fn to_json(&self) -> Value {
        let mut v = json!({"id": self.id, "revision_id": self.revision_id,
                           "status": self.status, "created_at": self.created_at});
        if let Some(alias) = &self.alias {
            v["alias"] = json!(alias);
        }
        v
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Object {
    pub alias: String,
    pub value: Value,
    pub created_at: String,
    pub updated_at: String,
    pub updated_by: String,
    /// Ascending by `created_at`; survives value overwrites.
    pub items: Vec<Value>,
    /// Bytes of a `file` object, hex-encoded so the state file stays plain JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_hex: Option<String>,
}

impl Object {
    pub fn file_bytes(&self) -> Option<Vec<u8>> {
        let hex = self.file_hex.as_deref()?;
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect()
    }

    pub fn value_type(&self) -> Option<&str> {
        self.value.get("type").and_then(Value::as_str)
    }

    pub fn summary(&self) -> Value {
        json!({"alias": self.alias, "type": self.value_type(),
               "created_at": self.created_at, "updated_at": self.updated_at})
    }

    pub fn to_json(&self) -> Value {
        let mut v = self.summary();
        v["value"] = self.value.clone();
        v
    }
}

/// Formats µs since the epoch as RFC 3339 UTC with exactly six fractional
/// digits, so string order equals time order.
pub fn format_micros(micros: u64) -> String {
    humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_micros(micros)).to_string()
}

impl State {
    /// Adds or replaces (same id) a user; a key moves to the newest holder.
    pub fn add_user(&mut self, user: User) {
        self.users
            .retain(|u| u.id != user.id && u.api_key != user.api_key);
        self.users.push(user);
    }

    pub fn user_by_key(&self, key: &str) -> Option<&User> {
        self.users.iter().find(|u| u.api_key == key)
    }

    /// A timestamp unique across the whole emulator: the wall clock, bumped by
    /// 1 µs whenever it would not be strictly after the previous one.
    pub fn now(&mut self) -> String {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        self.last_micros = wall.max(self.last_micros + 1);
        format_micros(self.last_micros)
    }

    pub fn new_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}_{:012}", self.next_id)
    }

    pub fn session(&self, id: &str) -> Result<&Session, ApiError> {
        self.sessions.get(id).ok_or_else(|| session_not_found(id))
    }

    pub fn session_mut(&mut self, id: &str) -> Result<&mut Session, ApiError> {
        self.sessions
            .get_mut(id)
            .ok_or_else(|| session_not_found(id))
    }

    /// Appends an event; `object` is `(alias, value type)` for object and item events.
    pub fn emit(&mut self, session_id: &str, kind: &str, object: Option<(&str, Option<&str>)>) {
        let id = self.new_id("evt");
        let created_at = self.now();
        let Some(session) = self.sessions.get_mut(session_id) else {
            return;
        };
        let mut ev = json!({"id": id, "type": kind, "created_at": created_at,
                            "session_id": session.id, "revision_id": session.revision_id});
        if let Some((alias, ty)) = object {
            let mut so = json!({"alias": alias});
            if let Some(ty) = ty {
                so["type"] = json!(ty);
            }
            ev["session_object"] = so;
        }
        session.events.push(ev);
    }

    /// Create-or-overwrite; a thread's items are kept on overwrite (the worker relies on it).
    pub fn upload_object(
        &mut self,
        session_id: &str,
        alias: &str,
        value: Value,
        user_id: &str,
    ) -> Result<(), ApiError> {
        check_alias(alias)?;
        let now = self.now();
        let session = self.session_mut(session_id)?;
        let ty = value.get("type").and_then(Value::as_str).map(str::to_owned);
        match session.objects.get_mut(alias) {
            Some(obj) => {
                obj.value = value;
                obj.file_hex = None;
                obj.updated_at = now;
                obj.updated_by = user_id.to_owned();
            }
            None => {
                session.objects.insert(
                    alias.to_owned(),
                    Object {
                        alias: alias.to_owned(),
                        value,
                        created_at: now.clone(),
                        updated_at: now,
                        updated_by: user_id.to_owned(),
                        items: Vec::new(),
                        file_hex: None,
                    },
                );
            }
        }
        self.emit(
            session_id,
            "session_object_modified",
            Some((alias, ty.as_deref())),
        );
        Ok(())
    }

    /// Stores a session file (binary channel): a `file` object plus its bytes.
    pub fn upload_file(
        &mut self,
        session_id: &str,
        alias: &str,
        name: &str,
        content_type: &str,
        bytes: &[u8],
        user_id: &str,
    ) -> Result<Value, ApiError> {
        if self.refused_file_types.iter().any(|t| t == content_type) {
            return Err(ApiError::new(
                415,
                "unsupported_file_type",
                format!("files of type {content_type} are not accepted"),
            ));
        }
        if bytes.len() > FILE_SIZE_CAP {
            return Err(ApiError::new(
                400,
                "limit_exceeded",
                format!("file is {} bytes; the cap is {FILE_SIZE_CAP}", bytes.len()),
            ));
        }
        let value = json!({"type": "file", "file": {"name": name, "content_type": content_type, "size": bytes.len()}});
        self.upload_object(session_id, alias, value, user_id)?;
        let obj = self
            .session_mut(session_id)?
            .objects
            .get_mut(alias)
            .ok_or_else(|| object_not_found(alias))?;
        obj.file_hex = Some(bytes.iter().map(|b| format!("{b:02x}")).collect());
        Ok(obj.to_json())
    }

    pub fn delete_object(&mut self, session_id: &str, alias: &str) -> Result<(), ApiError> {
        let session = self.session_mut(session_id)?;
        let obj = session
            .objects
            .remove(alias)
            .ok_or_else(|| object_not_found(alias))?;
        let ty = obj.value_type().map(str::to_owned);
        self.emit(
            session_id,
            "session_object_deleted",
            Some((alias, ty.as_deref())),
        );
        Ok(())
    }

    pub fn post_item(
        &mut self,
        session_id: &str,
        alias: &str,
        content: Value,
        metadata: Option<Value>,
        parent_id: Option<String>,
        user_id: &str,
    ) -> Result<Value, ApiError> {
        validate_content(&content)?;
        if let Some(m) = &metadata
            && !m.is_object()
        {
            return Err(ApiError::bad_request("metadata must be an object"));
        }
        let revision_id = {
            let session = self.session(session_id)?;
            let obj = session
                .objects
                .get(alias)
                .ok_or_else(|| object_not_found(alias))?;
            if obj.value_type() != Some("thread") {
                return Err(ApiError::new(
                    400,
                    "not_a_thread",
                    format!("object {alias:?} is not a thread"),
                ));
            }
            session.revision_id.clone()
        };
        let id = self.new_id("itm");
        let created_at = self.now();
        let mut item = json!({
            "id": id, "created_at": created_at, "user_id": user_id,
            "content": content, "metadata": metadata.unwrap_or_else(|| json!({})),
            "alias": alias, "session_id": session_id, "revision_id": revision_id,
        });
        if let Some(p) = parent_id {
            item["parent_id"] = json!(p);
        }
        let size = serde_json::to_vec(&item)
            .map(|b| b.len())
            .unwrap_or(usize::MAX);
        if size >= ITEM_SIZE_CAP {
            return Err(ApiError::new(
                400,
                "limit_exceeded",
                format!("thread item is {size} bytes; the cap is {ITEM_SIZE_CAP} (exclusive)"),
            ));
        }
        let session = self.session_mut(session_id)?;
        if let Some(obj) = session.objects.get_mut(alias) {
            obj.items.push(item.clone());
        }
        self.emit(
            session_id,
            "session_thread_item_posted",
            Some((alias, Some("thread"))),
        );
        Ok(item)
    }

    /// Moves a session to `status`, emitting the matching lifecycle event.
    pub fn set_session_status(&mut self, session_id: &str, status: &str) -> Result<(), ApiError> {
        if !SESSION_STATUSES.contains(&status) {
            return Err(ApiError::bad_request(format!(
                "unknown session status {status:?}"
            )));
        }
        self.session_mut(session_id)?.status = status.to_owned();
        if status != "open" {
            self.emit(session_id, &format!("session_{status}"), None);
        }
        Ok(())
    }

    /// Finds or creates org/blob/revision/session as the admin asks.
    pub fn create_session(
        &mut self,
        req: &crate::CreateSession,
    ) -> Result<crate::SessionIds, ApiError> {
        let org_id = req.org_id.clone().unwrap_or_else(|| "org_demo".into());
        let blob_id = req.blob_id.clone().unwrap_or_else(|| "blb_demo".into());
        let key = format!("{org_id}/{blob_id}");
        let revision_id = match &req.revision_id {
            Some(r) => r.clone(),
            None => match self.blobs.get(&key) {
                Some(b) => b.default_revision.clone(),
                None => self.new_id("rev"),
            },
        };
        if let Some(rev) = self.revisions.get(&revision_id)
            && (rev.org_id != org_id || rev.blob_id != blob_id)
        {
            return Err(ApiError::bad_request(format!(
                "revision {revision_id} belongs to {}/{}",
                rev.org_id, rev.blob_id
            )));
        }
        self.revisions
            .entry(revision_id.clone())
            .or_insert_with(|| Revision {
                id: revision_id.clone(),
                org_id: org_id.clone(),
                blob_id: blob_id.clone(),
                phase: "draft".into(),
                status: "ready".into(),
            });
        self.blobs.entry(key).or_insert_with(|| Blob {
            org_id: org_id.clone(),
            blob_id: blob_id.clone(),
            default_revision: revision_id.clone(),
        });
        let session_id = match &req.session_id {
            Some(s) => s.clone(),
            None => self.new_id("ses"),
        };
        if self.sessions.contains_key(&session_id) {
            return Err(ApiError::new(
                409,
                "session_exists",
                format!("session {session_id} exists"),
            ));
        }
        if let Some(alias) = &req.alias
            && self
                .sessions
                .values()
                .any(|s| s.revision_id == revision_id && s.alias.as_deref() == Some(alias))
        {
            return Err(ApiError::new(
                409,
                "alias_in_use",
                format!("session alias {alias:?} is in use"),
            ));
        }
        let created_at = self.now();
        self.sessions.insert(
            session_id.clone(),
            Session {
                id: session_id.clone(),
                alias: req.alias.clone(),
                revision_id: revision_id.clone(),
                status: "open".into(),
                created_at,
                objects: BTreeMap::new(),
                events: Vec::new(),
            },
        );
        Ok(crate::SessionIds {
            org_id,
            blob_id,
            revision_id,
            session_id,
        })
    }

    pub fn set_revision(
        &mut self,
        revision_id: &str,
        phase: Option<&str>,
        status: Option<&str>,
    ) -> Result<(), ApiError> {
        let rev = self.revisions.get_mut(revision_id).ok_or_else(|| {
            ApiError::new(
                404,
                "revision_not_found",
                format!("no revision {revision_id}"),
            )
        })?;
        if let Some(p) = phase {
            rev.phase = p.to_owned();
        }
        if let Some(s) = status {
            rev.status = s.to_owned();
        }
        Ok(())
    }
}

pub fn session_not_found(id: &str) -> ApiError {
    ApiError::new(404, "not_found", format!("no session {id}"))
}

pub fn object_not_found(alias: &str) -> ApiError {
    ApiError::new(404, "not_found", format!("no object {alias:?}"))
}

/// The platform's alias grammar ([`blobhub_alias`]).
pub fn check_alias(alias: &str) -> Result<(), ApiError> {
    if blobhub_alias::is_valid(alias) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!("invalid alias {alias:?}")))
    }
}

fn validate_content(content: &Value) -> Result<(), ApiError> {
    let blocks = content
        .as_array()
        .ok_or_else(|| ApiError::bad_request("content must be an array of blocks"))?;
    let mut files = 0;
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => {
                if !b.get("text").is_some_and(Value::is_string) {
                    return Err(ApiError::bad_request("text block needs a string `text`"));
                }
            }
            Some("file") => {
                files += 1;
                let alias = b
                    .get("file")
                    .and_then(|f| f.get("alias"))
                    .and_then(Value::as_str);
                if alias.is_none_or(str::is_empty) {
                    return Err(ApiError::bad_request(
                        "file block needs a non-empty `file.alias`",
                    ));
                }
            }
            Some(_) => {}
            None => {
                return Err(ApiError::bad_request(
                    "every content block needs a string `type`",
                ));
            }
        }
    }
    if files > MAX_FILE_BLOCKS {
        return Err(ApiError::new(
            400,
            "limit_exceeded",
            format!("{files} file blocks; at most {MAX_FILE_BLOCKS} per item"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_unique_and_sort_as_strings() {
        let mut s = State::default();
        let stamps: Vec<String> = (0..1000).map(|_| s.now()).collect();
        for w in stamps.windows(2) {
            assert!(w[0] < w[1], "{} !< {}", w[0], w[1]);
        }
        assert_eq!(stamps[0].len(), "2026-11-23T10:00:00.123456Z".len());
    }

    /// The grammar itself is the alias crate's (table and property tests there); here only what
    /// the emulator makes of a refusal: the API's 400 `invalid_request_body`, naming the alias.
    #[test]
    fn an_invalid_alias_is_a_bad_request_naming_it() {
        assert!(check_alias("tasks/t1").is_ok());
        let err = check_alias("a//b").unwrap_err();
        assert_eq!(
            (err.status, err.code.as_str()),
            (400, "invalid_request_body")
        );
        assert!(err.message.contains("\"a//b\""), "{}", err.message);
    }
}
