//! The session's `worker` object: the value this process writes, and the one field of it the
//! keep-alive reads back.
//!
//! The keep-alive runs every 30 s in every section, so it reads and writes the object through
//! typed structs: serde skips every field it does not name, and nothing builds a whole
//! `serde_json::Value` tree to look at one string and drop it (measured: parsing, building and
//! dropping those trees was a fifth of an idle worker's keep-alive round, docs/benchmarks.md).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who this process is, as the object records it (`metadata.user` and `metadata.instance`).
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub user_id: &'a str,
    pub instance_id: &'a str,
    pub version: &'a str,
    pub started_at: &'a str,
}

#[derive(Serialize)]
struct WorkerValue<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    thread: ThreadOut<'a>,
}

#[derive(Serialize)]
struct ThreadOut<'a> {
    attributes: Attributes,
    metadata: MetadataOut<'a>,
}

#[derive(Serialize)]
struct Attributes {
    name: &'static str,
    description: &'static str,
}

#[derive(Serialize)]
struct MetadataOut<'a> {
    user: UserOut<'a>,
    instance: InstanceOut<'a>,
}

#[derive(Serialize)]
struct UserOut<'a> {
    user_id: &'a str,
}

#[derive(Serialize)]
struct InstanceOut<'a> {
    instance_id: &'a str,
    version: &'a str,
    started_at: &'a str,
    last_seen_at: &'a str,
    status: &'static str,
}

/// The whole `worker` value this process writes, as JSON text.
pub fn value_text(id: Identity<'_>, last_seen_at: &str) -> String {
    let value = WorkerValue {
        kind: "thread",
        thread: ThreadOut {
            attributes: Attributes {
                name: "worker",
                description: "BlobHub worker activity log",
            },
            metadata: MetadataOut {
                user: UserOut {
                    user_id: id.user_id,
                },
                instance: InstanceOut {
                    instance_id: id.instance_id,
                    version: id.version,
                    started_at: id.started_at,
                    last_seen_at,
                    status: "attached",
                },
            },
        },
    };
    // Strings and static keys only: serializing cannot fail.
    serde_json::to_string(&value).unwrap_or_default()
}

/// The whole `worker` value this process writes.
pub fn value(id: Identity<'_>, last_seen_at: &str) -> Value {
    serde_json::from_str(&value_text(id, last_seen_at)).unwrap_or(Value::Null)
}

/// A downloaded `worker` object's envelope (`{"object": {"value": ...}}`), as far as the
/// keep-alive reads it.
#[derive(Debug, Default, Deserialize)]
pub struct Downloaded {
    #[serde(default)]
    object: Option<ObjectIn>,
}

#[derive(Debug, Default, Deserialize)]
struct ObjectIn {
    #[serde(default)]
    value: Option<ValueIn>,
}

#[derive(Debug, Default, Deserialize)]
struct ValueIn {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    thread: Option<ThreadIn>,
}

#[derive(Debug, Default, Deserialize)]
struct ThreadIn {
    #[serde(default)]
    metadata: Option<MetadataIn>,
}

#[derive(Debug, Default, Deserialize)]
struct MetadataIn {
    #[serde(default)]
    user: Option<UserIn>,
}

#[derive(Debug, Default, Deserialize)]
struct UserIn {
    #[serde(default)]
    user_id: Option<String>,
}

impl Downloaded {
    /// The owner (`metadata.user.user_id`) of an object that is a `thread`; `None` for anything
    /// else. An envelope whose fields have other types does not parse at all, which the
    /// keep-alive treats the same way: not ours to write.
    pub fn thread_owner(&self) -> Option<&str> {
        let value = self.object.as_ref()?.value.as_ref()?;
        if value.kind.as_deref() != Some("thread") {
            return None;
        }
        value
            .thread
            .as_ref()?
            .metadata
            .as_ref()?
            .user
            .as_ref()?
            .user_id
            .as_deref()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ID: Identity<'static> = Identity {
        user_id: "u1",
        instance_id: "i1",
        version: "0.1.0",
        started_at: "2026-12-06T10:00:00Z",
    };

    #[test]
    fn the_value_written_has_the_documented_shape() {
        let expected = json!({
            "type": "thread",
            "thread": {
                "attributes": {"name": "worker", "description": "BlobHub worker activity log"},
                "metadata": {
                    "user": {"user_id": "u1"},
                    "instance": {
                        "instance_id": "i1",
                        "version": "0.1.0",
                        "started_at": "2026-12-06T10:00:00Z",
                        "last_seen_at": "2026-12-06T10:00:30Z",
                        "status": "attached",
                    }
                }
            }
        });
        assert_eq!(value(ID, "2026-12-06T10:00:30Z"), expected);
        let text = value_text(ID, "2026-12-06T10:00:30Z");
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), expected);
        // Identity strings are escaped, not spliced.
        let odd = Identity {
            user_id: "a\"b",
            ..ID
        };
        assert_eq!(
            value(odd, "t")["thread"]["metadata"]["user"]["user_id"],
            "a\"b"
        );
    }

    fn owner(envelope: Value) -> Option<String> {
        serde_json::from_value::<Downloaded>(envelope)
            .ok()?
            .thread_owner()
            .map(str::to_owned)
    }

    #[test]
    fn the_owner_is_read_only_from_a_thread() {
        let ours =
            json!({"object": {"alias": "worker", "updated_at": "x", "value": value(ID, "t")}});
        assert_eq!(owner(ours).as_deref(), Some("u1"));
        let not_thread = json!({"object": {"value": {"type": "file", "thread": {"metadata": {"user": {"user_id": "u1"}}}}}});
        assert_eq!(owner(not_thread), None);
        for missing in [
            json!({}),
            json!({"object": {}}),
            json!({"object": {"value": {"type": "thread"}}}),
            json!({"object": {"value": {"type": "thread", "thread": {"metadata": {}}}}}),
            json!({"object": {"value": {"type": "thread", "thread": {"metadata": {"user": {}}}}}}),
            json!({"object": null}),
        ] {
            assert_eq!(owner(missing.clone()), None, "{missing}");
        }
        // Wrong types do not parse: the keep-alive skips the write, as for any guard failure.
        for wrong in [
            json!({"object": {"value": {"type": 7}}}),
            json!({"object": {"value": {"type": "thread", "thread": {"metadata": "x"}}}}),
            json!({"object": {"value": {"type": "thread", "thread": {"metadata": {"user": {"user_id": 5}}}}}}),
        ] {
            assert_eq!(owner(wrong.clone()), None, "{wrong}");
        }
    }
}
