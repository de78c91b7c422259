//! One-shot grants: a person's approval of a call whose agent process is gone (the prompt was
//! adopted after a restart) authorises that agent's **next** call of the same kind, once.
//!
//! A grant is keyed by the call (`grant_key`, `<tool>:<command, paths or input>`); it covers
//! exactly that call, or the one widened shape an agent uses when it retries from a reset shell:
//! `cd <dir inside the work folder> && <the same command>`.
//!
//! Beyond the reference: a request that names nothing (no command, path or input) records no
//! grant, and the agent's retry is asked again. The reference records a keyless grant that
//! approves the next call of that tool, whatever it is; such a grant (from an older record) is
//! still honoured by [`matches`].

use serde_json::{Value, json};

use crate::policy::{self, paths};
use blobhub_agent_types::DriverKind;

/// The key of a call: `<tool>:<command>`, `<tool>:<paths, one per line>`, or `<tool>:<input as
/// JSON>`; `None` when the call names nothing.
pub fn grant_key(driver: DriverKind, tool: &str, input: &Value) -> Option<String> {
    let call = policy::call_of(driver, tool, input);
    if !call.command.is_empty() {
        Some(format!("{tool}:{}", call.command))
    } else if !call.paths.is_empty() {
        Some(format!("{tool}:{}", call.paths.join("\n")))
    } else if input.as_object().is_some_and(|o| !o.is_empty()) {
        Some(format!("{tool}:{input}"))
    } else {
        None
    }
}

/// Whether a grant stored for `stored` covers a request for `requested`: the same key, or the
/// same tool with `cd <path> && <stored command>`, where `<path>` (optionally quoted whole) is
/// made of `[A-Za-z0-9._/ -]`, does not start with `-`, and lies inside the work folder.
pub fn covers(stored: &str, requested: &str, work_folder: &str) -> bool {
    if stored == requested {
        return true;
    }
    let (Some((tool, command)), Some((req_tool, req_command))) =
        (stored.split_once(':'), requested.split_once(':'))
    else {
        return false;
    };
    if tool != req_tool || command.is_empty() {
        return false;
    }
    let Some(rest) = req_command.strip_prefix("cd ") else {
        return false;
    };
    let Some(path) = rest
        .strip_suffix(command)
        .and_then(|p| p.strip_suffix(" && "))
    else {
        return false;
    };
    let path = ['\'', '"']
        .iter()
        .find_map(|q| path.strip_prefix(*q).and_then(|p| p.strip_suffix(*q)))
        .unwrap_or(path);
    !path.is_empty()
        && !path.starts_with('-')
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/ -".contains(c))
        && paths::inside(work_folder, work_folder, path)
}

/// A stored grant as thread.yaml keeps it (`agent.grant`).
pub fn record(subject: &str, granted_by: &str, grant_key: Option<&str>) -> Value {
    json!({"subject": subject, "verdict": "approve", "granted_by": granted_by,
           "grant_key": grant_key})
}

/// Whether the stored grant covers a request for `subject` with `requested` key; returns the
/// prompt that granted it. A keyed grant never covers a keyless request; a keyless grant covers
/// any request of its subject.
pub fn matches(
    grant: &Value,
    subject: &str,
    requested: Option<&str>,
    work_folder: &str,
) -> Option<String> {
    if grant.get("subject").and_then(Value::as_str) != Some(subject)
        || grant.get("verdict").and_then(Value::as_str) != Some("approve")
    {
        return None;
    }
    let stored = grant.get("grant_key").and_then(Value::as_str);
    let ok = match (stored, requested) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(s), Some(r)) => covers(s, r, work_folder),
    };
    ok.then(|| {
        grant
            .get("granted_by")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    })
}

/// The `approval_granted` item: the call went through without asking because of an earlier
/// answer. It claims no more than that one call.
pub fn granted_item(subject: &str, granted_by: &str) -> crate::items::Item {
    (
        json!([{"type": "text", "text": format!(
            "✓ `{subject}` auto-approved: a person approved this call earlier (it covers this one call)")}]),
        json!({"type": "approval_granted", "subject": subject, "granted_by": granted_by}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_table() {
        let wf = "/w";
        for (stored, requested, want) in [
            ("Bash:git push", "Bash:git push", true),
            ("Bash:git push", "Bash:cd /w/sub && git push", true),
            ("Bash:git push", "Bash:cd sub && git push", true),
            ("Bash:git push", "Bash:cd 'my dir' && git push", true),
            ("Bash:git push", "Bash:cd \"/w/a b\" && git push", true),
            ("Bash:git push", "Bash:cd /tmp && git push", false),
            ("Bash:git push", "Bash:cd .. && git push", false),
            ("Bash:git push", "Bash:cd -P /w && git push", false),
            ("Bash:git push", "Bash:cd ~ && git push", false),
            ("Bash:git push", "Bash:cd $HOME && git push", false),
            ("Bash:git push", "Bash:cd /w; git push", false),
            ("Bash:git push", "Bash:cd /w && git push --force", false),
            ("Bash:git push", "Bash:cd /w && cd x && git push", false),
            ("Bash:git push", "Bash:cd /w | git push", false),
            ("Bash:git push", "Bash:git push && rm -rf /", false),
            ("Bash:git push", "shell:cd /w && git push", false),
            ("Bash:git push", "Bash:cd  && git push", false),
            ("Write:/w/a", "Write:/w/a", true),
            ("Write:/w/a", "Write:/w/b", false),
        ] {
            assert_eq!(
                covers(stored, requested, wf),
                want,
                "{stored} / {requested}"
            );
        }
    }

    #[test]
    fn keyed_and_keyless_grants() {
        let keyed = record("Bash", "prm_1", Some("Bash:git push"));
        assert_eq!(
            matches(&keyed, "Bash", Some("Bash:git push"), "/w").as_deref(),
            Some("prm_1")
        );
        assert_eq!(matches(&keyed, "Bash", Some("Bash:ls"), "/w"), None);
        assert_eq!(matches(&keyed, "Bash", None, "/w"), None);
        assert_eq!(matches(&keyed, "Write", Some("Bash:git push"), "/w"), None);
        let keyless = record("apply_patch", "prm_2", None);
        assert_eq!(
            matches(&keyless, "apply_patch", None, "/w").as_deref(),
            Some("prm_2")
        );
        assert_eq!(
            matches(&keyless, "apply_patch", Some("apply_patch:/w/x"), "/w").as_deref(),
            Some("prm_2")
        );
        assert_eq!(matches(&keyless, "shell", None, "/w"), None);
        assert_eq!(
            grant_key(DriverKind::ClaudeCode, "Bash", &json!({"command": "ls"})).as_deref(),
            Some("Bash:ls")
        );
        assert_eq!(
            grant_key(
                DriverKind::Codex,
                "apply_patch",
                &json!({"paths": ["/w/a", "/w/b"]})
            )
            .as_deref(),
            Some("apply_patch:/w/a\n/w/b")
        );
        assert_eq!(
            grant_key(DriverKind::Codex, "permissions", &json!({"network": true})).as_deref(),
            Some("permissions:{\"network\":true}")
        );
        assert_eq!(grant_key(DriverKind::TestAgent, "ask", &Value::Null), None);
        assert_eq!(
            grant_key(DriverKind::Codex, "permissions", &json!({})),
            None
        );
        let (content, meta) = granted_item("Bash", "prm_1");
        assert!(
            content[0]["text"]
                .as_str()
                .unwrap()
                .starts_with("✓ `Bash` auto-approved")
        );
        assert_eq!(meta["granted_by"], "prm_1");
    }
}
