//! `validate`: the preflight of every `session_agent_harness` section together.

use std::collections::HashMap;

use serde_json::Value;

/// One coded problem with a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// A warning: shown by `config check` and `start`, the section still runs.
    pub warning: bool,
}

/// The keys of a harness section (besides `name` and `job_type`, which the host reads).
const SECTION_KEYS: &[&str] = &["session"];
/// The keys of its `session` block: the host's session target and the harness's prefix.
const SESSION_KEYS: &[&str] = &[
    "org_id",
    "blob_id",
    "revision_id",
    "session_id",
    "session_prefix",
];

/// `UNKNOWN_KEY` warnings for keys of the section the harness does not read: a typo such as
/// `sesion_prefix` would otherwise be ignored without a word.
fn unknown_keys(index: u32, settings: &Value) -> Vec<Problem> {
    let unknown = |path: String, key: &str, known: &[&str]| Problem {
        code: "UNKNOWN_KEY",
        message: format!(
            "unknown key `{key}` is ignored (known: {})",
            known.join(", ")
        ),
        field: Some(path),
        warning: true,
    };
    let mut problems = Vec::new();
    let Some(map) = settings.as_object() else {
        return problems;
    };
    for key in map.keys().filter(|k| !SECTION_KEYS.contains(&k.as_str())) {
        problems.push(unknown(
            format!("sections[{index}].{key}"),
            key,
            SECTION_KEYS,
        ));
    }
    if let Some(block) = map.get("session").and_then(Value::as_object) {
        for key in block.keys().filter(|k| !SESSION_KEYS.contains(&k.as_str())) {
            problems.push(unknown(
                format!("sections[{index}].session.{key}"),
                key,
                SESSION_KEYS,
            ));
        }
    }
    problems
}

/// The verdict for one section: its state key, or its problems.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub index: u32,
    pub state_key: Option<String>,
    pub problems: Vec<Problem>,
}

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

/// One section as `validate` sees it.
pub struct Input {
    pub index: u32,
    /// The host's session target: `[org_id, blob_id, revision_id, session_id]`.
    pub target: Option<[String; 4]>,
    /// The section's other keys.
    pub settings: Value,
}

/// Check every section of this job type together. The host has already refused a section
/// whose `session` block lacks a key (`MISSING_SESSION_KEYS`), so `target` is set on every
/// section it passes; checked again only so that a missing one is never a silent default.
pub fn validate(sections: &[Input]) -> Vec<Check> {
    let mut seen: HashMap<Vec<String>, u32> = HashMap::new();
    sections
        .iter()
        .map(|input| {
            let index = &input.index;
            let mut problems = Vec::new();
            if input.target.is_none() {
                problems.push(Problem {
                    code: "MISSING_SESSION_KEYS",
                    message: "the host passed no session target".into(),
                    field: Some(format!("sections[{index}].session")),
                    warning: false,
                });
            }
            let prefix = input
                .settings
                .pointer("/session/session_prefix")
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
                    warning: false,
                });
            }
            if let (true, Some(target)) = (problems.is_empty(), &input.target) {
                let mut key: Vec<String> = target.to_vec();
                key.push(prefix.clone());
                if let Some(first) = seen.get(&key) {
                    problems.push(Problem {
                        code: "DUPLICATE_SECTION_TARGET",
                        message: format!(
                            "sections[{first}] already targets the same session and prefix"
                        ),
                        field: Some(format!("sections[{index}].session")),
                        warning: false,
                    });
                } else {
                    seen.insert(key, *index);
                }
            }
            let state_key = match (&input.target, problems.is_empty()) {
                (Some(target), true) => Some(state_key(&target[3], &prefix)),
                _ => None,
            };
            // Warnings do not stop the section, so they come after its state key.
            problems.extend(unknown_keys(*index, &input.settings));
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

    fn s(session_id: &str) -> Input {
        input(session_id, json!({}))
    }

    fn input(session_id: &str, settings: Value) -> Input {
        Input {
            index: 0,
            target: Some(["o", "b", "r", session_id].map(String::from)),
            settings,
        }
    }

    fn at(index: u32, mut input: Input) -> Input {
        input.index = index;
        input
    }

    #[test]
    fn a_missing_target_is_refused() {
        let checks = validate(&[Input {
            index: 2,
            target: None,
            settings: json!({}),
        }]);
        assert_eq!(checks[0].problems[0].code, "MISSING_SESSION_KEYS");
        assert_eq!(
            checks[0].problems[0].field.as_deref(),
            Some("sections[2].session")
        );
        assert!(checks[0].state_key.is_none());
    }

    #[test]
    fn duplicates_and_state_keys() {
        let checks = validate(&[
            at(0, s("ses_1")),
            at(1, s("ses_1")),
            at(2, s("my session/x")),
        ]);
        assert_eq!(checks[0].state_key.as_deref(), Some("ses_1"));
        assert_eq!(checks[1].problems[0].code, "DUPLICATE_SECTION_TARGET");
        assert_eq!(checks[2].state_key.as_deref(), Some("my_session_x"));
        let p = input("ses_1", json!({"session": {"session_prefix": "tasks/"}}));
        let checks = validate(&[at(0, s("ses_1")), at(1, p)]);
        assert_eq!(checks[1].state_key.as_deref(), Some("ses_1-tasks"));
        let bad = input("ses_1", json!({"session": {"session_prefix": "tasks"}}));
        assert_eq!(validate(&[bad])[0].problems[0].code, "INVALID_CONFIG");
    }

    #[test]
    fn unknown_keys_are_warnings_and_the_section_still_runs() {
        let settings = json!({
            "session": {"org_id": "o", "blob_id": "b", "revision_id": "r", "session_id": "ses_1", "sesion_prefix": "x/"},
            "agent": "claude_code",
        });
        let check = &validate(&[input("ses_1", settings)])[0];
        assert_eq!(check.state_key.as_deref(), Some("ses_1"));
        let found: Vec<(&str, &str, bool)> = check
            .problems
            .iter()
            .map(|p| (p.code, p.field.as_deref().unwrap(), p.warning))
            .collect();
        assert_eq!(
            found,
            [
                ("UNKNOWN_KEY", "sections[0].agent", true),
                ("UNKNOWN_KEY", "sections[0].session.sesion_prefix", true),
            ]
        );
    }
}
