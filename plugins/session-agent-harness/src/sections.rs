//! `validate`: the preflight of every `session_agent_harness` section together.

use std::collections::HashMap;

use serde_json::Value;

/// One coded problem with a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

/// The verdict for one section: its state key, or its problems.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub index: u32,
    pub state_key: Option<String>,
    pub problems: Vec<Problem>,
}

const KEYS: &[&str] = &["org_id", "blob_id", "revision_id", "session_id"];

/// A state-folder name from the session id (and the prefix, when set): `[A-Za-z0-9._-]{1,128}`.
pub fn state_key(session_id: &str, prefix: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let mut key = clean(session_id);
    if !prefix.is_empty() {
        key = format!("{key}-{}", clean(prefix.trim_end_matches('/')));
    }
    let key: String = key.chars().take(128).collect();
    if key.is_empty() || key.chars().all(|c| c == '.') {
        "session".into()
    } else {
        key
    }
}

/// `sections`: `(index, settings JSON)` of every section of this job type.
pub fn validate(sections: &[(u32, Value)]) -> Vec<Check> {
    let mut seen: HashMap<Vec<String>, u32> = HashMap::new();
    sections
        .iter()
        .map(|(index, settings)| {
            let mut problems = Vec::new();
            let session = settings.get("session");
            if !session.is_some_and(Value::is_object) {
                problems.push(Problem {
                    code: "MISSING_SESSION_KEYS",
                    message: "the section has no `session` block".into(),
                    field: Some(format!("sections[{index}].session")),
                });
            } else {
                for key in KEYS {
                    let ok = session
                        .and_then(|s| s.get(*key))
                        .and_then(Value::as_str)
                        .is_some_and(|v| !v.trim().is_empty());
                    if !ok {
                        problems.push(Problem {
                            code: "MISSING_SESSION_KEYS",
                            message: format!("the section's session block lacks `{key}`"),
                            field: Some(format!("sections[{index}].session.{key}")),
                        });
                    }
                }
            }
            let prefix = session
                .and_then(|s| s.get("session_prefix"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if !prefix.is_empty()
                && (!prefix.ends_with('/')
                    || !crate::classify::alias_is_valid(prefix.trim_end_matches('/')))
            {
                problems.push(Problem {
                    code: "INVALID_CONFIG",
                    message: "session_prefix must be alias segments ending in `/`".into(),
                    field: Some(format!("sections[{index}].session.session_prefix")),
                });
            }
            if problems.is_empty() {
                let mut target: Vec<String> = KEYS
                    .iter()
                    .map(|k| {
                        session
                            .and_then(|s| s.get(*k))
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string()
                    })
                    .collect();
                target.push(prefix.clone());
                if let Some(first) = seen.get(&target) {
                    problems.push(Problem {
                        code: "DUPLICATE_SECTION_TARGET",
                        message: format!(
                            "sections[{first}] already targets the same session and prefix"
                        ),
                        field: Some(format!("sections[{index}].session")),
                    });
                } else {
                    seen.insert(target, *index);
                }
            }
            let state_key = problems.is_empty().then(|| {
                let sid = session
                    .and_then(|s| s.get("session_id"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                state_key(sid, &prefix)
            });
            Check {
                index: *index,
                state_key,
                problems,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(session_id: &str) -> Value {
        json!({"session": {"org_id": "o", "blob_id": "b", "revision_id": "r", "session_id": session_id}})
    }

    #[test]
    fn missing_keys_name_their_fields() {
        let checks = validate(&[(2, json!({"session": {"org_id": "o", "blob_id": ""}}))]);
        let fields: Vec<_> = checks[0]
            .problems
            .iter()
            .map(|p| p.field.clone().unwrap())
            .collect();
        assert_eq!(
            fields,
            [
                "sections[2].session.blob_id",
                "sections[2].session.revision_id",
                "sections[2].session.session_id"
            ]
        );
        assert!(checks[0].state_key.is_none());
        assert_eq!(
            validate(&[(0, json!({}))])[0].problems[0].code,
            "MISSING_SESSION_KEYS"
        );
    }

    #[test]
    fn duplicates_and_state_keys() {
        let checks = validate(&[(0, s("ses_1")), (1, s("ses_1")), (2, s("my session/x"))]);
        assert_eq!(checks[0].state_key.as_deref(), Some("ses_1"));
        assert_eq!(checks[1].problems[0].code, "DUPLICATE_SECTION_TARGET");
        assert_eq!(checks[2].state_key.as_deref(), Some("my_session_x"));
        let mut p = s("ses_1");
        p["session"]["session_prefix"] = json!("tasks/");
        let checks = validate(&[(0, s("ses_1")), (1, p)]);
        assert_eq!(checks[1].state_key.as_deref(), Some("ses_1-tasks"));
    }
}
