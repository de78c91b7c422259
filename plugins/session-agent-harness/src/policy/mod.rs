//! `guarded` permissions: the policy a thread carries, the operator's rules from config.yaml, and
//! the decision on each call an agent asks permission for (docs/session-agent-harness.md,
//! "Guarded threads and policies").
//!
//! Pure: the guest builds a [`Gate`] at activation, asks it about every permission request, and
//! posts the items built here.

pub mod glob;
pub mod paths;
pub mod shell;

use blobhub_agent_types::{DriverKind, policy as vocab};
use serde_json::{Value, json};

use crate::items::Item;

/// At most this many rules are listed in a `policy_applied` item.
pub const LISTED_RULES_MAX: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// config.yaml's `policy.rules`: evaluated first, a thread cannot override them.
    Worker,
    Thread,
}

impl Origin {
    pub fn word(self) -> &'static str {
        match self {
            Origin::Worker => "worker",
            Origin::Thread => "thread",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub id: String,
    /// One of [`vocab::EFFECTS`].
    pub effect: String,
    /// One of [`vocab::ACTIONS`].
    pub action: String,
    /// `fnmatchcase` patterns on the command (exec rules only); empty: every command.
    pub command: Vec<String>,
    /// One of [`vocab::OUTSIDE`].
    pub outside: String,
    pub origin: Origin,
}

/// A thread's `policy` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadPolicy {
    /// Informational only.
    pub alias: String,
    pub default: String,
    pub rules: Vec<Rule>,
}

/// A call an agent asks permission for, as rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The agent's name for the tool.
    pub tool: String,
    /// `None`: a tool no effect covers; the policy's default decides.
    pub effect: Option<&'static str>,
    pub command: String,
    /// The paths it touches (may be empty: then it is outside every root).
    pub paths: Vec<String>,
}

impl Call {
    /// What a `policy_denied` item names: the command, else the path(s), else the tool.
    pub fn detail(&self) -> String {
        if !self.command.is_empty() {
            self.command.clone()
        } else if !self.paths.is_empty() {
            self.paths.join(", ")
        } else {
            self.tool.clone()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// `allow`, `deny` or `ask`.
    pub action: String,
    /// The rule's id, or `default`.
    pub rule: String,
}

/// A malformed policy, config rule or thread block: the message names the field.
pub type Invalid = String;

fn string_field(
    block: &serde_json::Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<String, Invalid> {
    match block.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("{at}.{key} must be a string")),
    }
}

/// Parse rules (a JSON list; absent or null is none). `at` names the list in messages.
pub fn parse_rules(value: Option<&Value>, origin: Origin, at: &str) -> Result<Vec<Rule>, Invalid> {
    let list = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(format!("{at} must be a list")),
    };
    let mut rules = Vec::new();
    for (i, r) in list.iter().enumerate() {
        let at = format!("{at}[{i}]");
        let Some(block) = r.as_object() else {
            return Err(format!("{at} must be a mapping"));
        };
        if let Some(k) = block
            .keys()
            .find(|k| !vocab::RULE_KEYS.contains(&k.as_str()))
        {
            return Err(format!(
                "{at} has an unknown key `{k}` (known: {})",
                vocab::RULE_KEYS.join(", ")
            ));
        }
        let mut id = string_field(block, "id", &at)?;
        if id.is_empty() {
            id = format!("rule-{}", i + 1);
        }
        let effect = string_field(block, "effect", &at)?;
        let mut action = string_field(block, "action", &at)?;
        if action.is_empty() {
            action = "allow".into();
        }
        let outside = string_field(block, "outside", &at)?;
        let command = match block.get("command") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(l)) => l
                .iter()
                .map(|p| p.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| format!("{at}.command must be a list of strings"))?,
            Some(_) => return Err(format!("{at}.command must be a list of strings")),
        };
        vocab::check_rule(&effect, &action, &outside, !command.is_empty())
            .map_err(|e| format!("{at}: {e}"))?;
        rules.push(Rule {
            id,
            effect,
            action,
            command,
            outside,
            origin,
        });
    }
    Ok(rules)
}

/// Parse a thread's `policy` block.
pub fn parse_thread_policy(value: &Value) -> Result<ThreadPolicy, Invalid> {
    let Some(block) = value.as_object() else {
        return Err("policy must be a mapping".into());
    };
    if let Some(k) = block
        .keys()
        .find(|k| !vocab::THREAD_KEYS.contains(&k.as_str()))
    {
        return Err(format!(
            "policy has an unknown key `{k}` (known: {})",
            vocab::THREAD_KEYS.join(", ")
        ));
    }
    let mut default = string_field(block, "default", "policy")?;
    if default.is_empty() {
        default = "allow".into();
    }
    vocab::check_default(&default).map_err(|e| format!("policy: {e}"))?;
    Ok(ThreadPolicy {
        alias: string_field(block, "alias", "policy")?,
        default,
        rules: parse_rules(block.get("rules"), Origin::Thread, "policy.rules")?,
    })
}

/// Everything a guarded thread's calls are decided by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    pub worker_rules: Vec<Rule>,
    pub thread: ThreadPolicy,
    pub work_folder: String,
    /// The artifacts outbox as a root (`None`: unusable, every path is outside it).
    pub outbox: Option<String>,
}

impl Gate {
    /// First match wins: the operator's rules, then the thread's, else the thread's default.
    pub fn decide(&self, call: &Call) -> Decision {
        for rule in self.worker_rules.iter().chain(&self.thread.rules) {
            if self.matches(rule, call) {
                return Decision {
                    action: rule.action.clone(),
                    rule: rule.id.clone(),
                };
            }
        }
        Decision {
            action: self.thread.default.clone(),
            rule: "default".into(),
        }
    }

    fn matches(&self, rule: &Rule, call: &Call) -> bool {
        if call.effect != Some(rule.effect.as_str()) {
            return false;
        }
        if rule.effect == "exec" && !rule.command.is_empty() {
            let hit = if rule.action == "allow" {
                // An allow rule sees only the raw command (the script of a bare shell wrapper),
                // and (beyond the reference) only a command with as many top-level commands as
                // its pattern: `git status*` does not allow `git status; rm -rf ~`, which the
                // reference lets through.
                let command = shell::allow_candidate(&call.command);
                let segments = shell::split(&command).len();
                rule.command
                    .iter()
                    .any(|p| glob::matches(p, &command) && shell::split(p).len() == segments)
            } else {
                // Deny and ask rules see every command inside it.
                let candidates = shell::effective_commands(&call.command);
                rule.command
                    .iter()
                    .any(|p| candidates.iter().any(|c| glob::matches(p, c)))
            };
            if !hit {
                return false;
            }
        }
        match rule.outside.as_str() {
            "work_folder" => self.outside_of(Some(&self.work_folder), call),
            "outbox" => self.outside_of(self.outbox.as_ref(), call),
            _ => true,
        }
    }

    /// Whether any of the call's paths lands outside `root` (no paths, or no root: outside).
    fn outside_of(&self, root: Option<&String>, call: &Call) -> bool {
        let Some(root) = root else {
            return true;
        };
        call.paths.is_empty()
            || call
                .paths
                .iter()
                .any(|p| !paths::inside(root, &self.work_folder, p))
    }

    /// Whether a rule uses `outside: outbox` (the activation warns when the outbox is unusable).
    pub fn uses_outbox(&self) -> bool {
        self.worker_rules
            .iter()
            .chain(&self.thread.rules)
            .any(|r| r.outside == "outbox")
    }

    /// The `policy_applied` item every guarded turn starts with: the proof the policy was
    /// enforced.
    pub fn applied_item(&self) -> Item {
        let all: Vec<&Rule> = self.worker_rules.iter().chain(&self.thread.rules).collect();
        let listed: Vec<Value> = all
            .iter()
            .take(LISTED_RULES_MAX)
            .map(|r| json!({"id": r.id, "origin": r.origin.word(), "action": r.action}))
            .collect();
        let mut text = format!(
            "Policy in force: {} rule(s), default {}",
            all.len(),
            self.thread.default
        );
        let mut metadata = json!({
            "type": "policy_applied",
            "rules": listed,
            "default": self.thread.default,
            "counts": {"rules": all.len(), "reported": listed.len()},
        });
        if listed.len() < all.len() {
            text.push_str(&format!(" (listing the first {})", listed.len()));
            metadata["truncated"] = json!(true);
        }
        (json!([{"type": "text", "text": text}]), metadata)
    }
}

/// The `policy_denied` item for a call a rule refused.
pub fn denied_item(decision: &Decision, call: &Call) -> Item {
    let detail = call.detail();
    (
        json!([{"type": "text", "text": format!("Blocked by policy rule '{}': {detail}", decision.rule)}]),
        json!({"type": "policy_denied", "rule": decision.rule,
               "effect": call.effect.unwrap_or(""), "detail": detail}),
    )
}

/// What the agent is told about a call a rule refused.
pub fn denial_for_agent(decision: &Decision) -> String {
    format!("Denied by policy rule '{}'", decision.rule)
}

fn input_str(input: &Value, keys: &[&str]) -> String {
    keys.iter()
        .find_map(|k| {
            input
                .get(*k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .unwrap_or("")
        .to_string()
}

/// The call behind a permission request of `driver`'s agent for `tool` with `input`.
///
/// Claude Code's tool names (also used by the test agent): writes `Write`, `Edit`, `MultiEdit`,
/// `NotebookEdit`; exec `Bash`, `BashOutput`, `KillShell`; reads `Read`, `Glob`, `Grep`,
/// `NotebookRead`; network `WebFetch`, `WebSearch`. Codex: `shell` (exec) and `apply_patch`
/// (write, with the paths of its changes: `{"paths": [...]}`). Anything else has no effect.
pub fn call_of(driver: DriverKind, tool: &str, input: &Value) -> Call {
    let path_keys = ["file_path", "path", "notebook_path"];
    let (effect, command, paths): (Option<&'static str>, String, Vec<String>) = match (driver, tool)
    {
        (DriverKind::Codex, "shell") => (Some("exec"), input_str(input, &["command"]), Vec::new()),
        (DriverKind::Codex, "apply_patch") => (
            Some("write"),
            String::new(),
            input
                .get("paths")
                .and_then(Value::as_array)
                .map(|l| {
                    l.iter()
                        .filter_map(|p| p.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        ),
        (DriverKind::Codex, _) => (None, String::new(), Vec::new()),
        (_, "Write" | "Edit" | "MultiEdit" | "NotebookEdit") => (
            Some("write"),
            String::new(),
            non_empty(input_str(input, &path_keys)),
        ),
        (_, "Bash" | "BashOutput" | "KillShell") => {
            (Some("exec"), input_str(input, &["command"]), Vec::new())
        }
        (_, "Read" | "Glob" | "Grep" | "NotebookRead") => (
            Some("read"),
            String::new(),
            non_empty(input_str(input, &path_keys)),
        ),
        (_, "WebFetch" | "WebSearch") => (Some("network"), String::new(), Vec::new()),
        _ => (None, String::new(), Vec::new()),
    };
    Call {
        tool: tool.to_string(),
        effect,
        command,
        paths,
    }
}

fn non_empty(s: String) -> Vec<String> {
    if s.is_empty() { Vec::new() } else { vec![s] }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(worker: Value, thread: Value) -> Gate {
        Gate {
            worker_rules: parse_rules(Some(&worker), Origin::Worker, "policy.rules").unwrap(),
            thread: parse_thread_policy(&thread).unwrap(),
            work_folder: "/w".into(),
            outbox: paths::outbox_root("/w", ".blobhub/outbox"),
        }
    }

    fn bash(cmd: &str) -> Call {
        call_of(DriverKind::ClaudeCode, "Bash", &json!({"command": cmd}))
    }

    fn write(path: &str) -> Call {
        call_of(DriverKind::ClaudeCode, "Write", &json!({"file_path": path}))
    }

    /// The spec's examples: first match wins, worker rules first, raw-only allow candidates,
    /// effective commands for deny/ask, outside rules, the default.
    #[test]
    fn evaluation_table() {
        let g = gate(
            json!([{"id": "no-force", "effect": "exec", "action": "deny", "command": ["git push --force*"]}]),
            json!({"default": "ask", "rules": [
                {"id": "no-push", "effect": "exec", "action": "deny", "command": ["git push*"]},
                {"id": "status", "effect": "exec", "action": "allow", "command": ["git status*"]},
                {"id": "tests", "effect": "exec", "command": ["cargo test*"]},
                {"id": "deploy", "effect": "exec", "action": "ask", "command": ["*deploy*"]},
                {"id": "confine", "effect": "write", "action": "deny", "outside": "work_folder"},
                {"id": "edits", "effect": "write", "action": "allow"},
                {"id": "web", "effect": "network", "action": "deny"},
            ]}),
        );
        let cases: Vec<(Call, &str, &str)> = vec![
            (bash("git push --force origin"), "deny", "no-force"),
            (bash("git push origin main"), "deny", "no-push"),
            (bash("cd sub && git -C .. push"), "deny", "no-push"),
            (bash("GIT_TRACE=1 git push"), "deny", "no-push"),
            (bash("git status"), "allow", "status"),
            // An allow rule sees only the raw string: the push hidden behind it is not allowed.
            (bash("git status && git push"), "deny", "no-push"),
            // Beyond the reference: an allow pattern of one command does not cover two.
            (bash("git status; rm -rf ~"), "ask", "default"),
            (bash("cargo test -p x"), "allow", "tests"),
            (bash("make && ./deploy.sh"), "ask", "deploy"),
            (bash("echo 'git push'"), "ask", "default"),
            (write("/w/src/main.rs"), "allow", "edits"),
            (write("src/../../etc/passwd"), "deny", "confine"),
            (write("/etc/hosts"), "deny", "confine"),
            (
                call_of(DriverKind::ClaudeCode, "Write", &json!({})),
                "deny",
                "confine",
            ),
            (
                call_of(DriverKind::ClaudeCode, "WebFetch", &json!({"url": "x"})),
                "deny",
                "web",
            ),
            (
                call_of(
                    DriverKind::ClaudeCode,
                    "Read",
                    &json!({"file_path": "/etc"}),
                ),
                "ask",
                "default",
            ),
            (
                call_of(DriverKind::ClaudeCode, "mcp__x__y", &json!({})),
                "ask",
                "default",
            ),
            (
                call_of(DriverKind::Codex, "shell", &json!({"command": "git push"})),
                "deny",
                "no-push",
            ),
            // Codex runs every command through a shell wrapper; rules see through it.
            (
                call_of(
                    DriverKind::Codex,
                    "shell",
                    &json!({"command": "/bin/bash -lc 'git push'"}),
                ),
                "deny",
                "no-push",
            ),
            (
                call_of(
                    DriverKind::Codex,
                    "shell",
                    &json!({"command": "/bin/bash -lc 'cargo test'"}),
                ),
                "allow",
                "tests",
            ),
            (
                call_of(
                    DriverKind::Codex,
                    "shell",
                    &json!({"command": "/bin/bash -lc 'cargo test; rm x'"}),
                ),
                "ask",
                "default",
            ),
            (
                call_of(
                    DriverKind::Codex,
                    "apply_patch",
                    &json!({"paths": ["/w/a", "/tmp/b"]}),
                ),
                "deny",
                "confine",
            ),
            (
                call_of(
                    DriverKind::Codex,
                    "apply_patch",
                    &json!({"paths": ["/w/a"]}),
                ),
                "allow",
                "edits",
            ),
            (
                call_of(
                    DriverKind::TestAgent,
                    "Bash",
                    &json!({"command": "git push"}),
                ),
                "deny",
                "no-push",
            ),
        ];
        for (call, action, rule) in cases {
            let d = g.decide(&call);
            assert_eq!(
                (d.action.as_str(), d.rule.as_str()),
                (action, rule),
                "{call:?}"
            );
        }
    }

    #[test]
    fn outbox_rules() {
        let g = gate(
            json!([]),
            json!({"rules": [{"id": "outbox-only", "effect": "write", "action": "deny", "outside": "outbox"}]}),
        );
        assert_eq!(
            g.decide(&write(".blobhub/outbox/report.md")).action,
            "allow"
        );
        assert_eq!(g.decide(&write("src/a.rs")).rule, "outbox-only");
        let mut g = g;
        g.outbox = None;
        assert_eq!(
            g.decide(&write(".blobhub/outbox/report.md")).rule,
            "outbox-only"
        );
        assert!(g.uses_outbox());
    }

    #[test]
    fn validation() {
        assert_eq!(parse_thread_policy(&json!({})).unwrap().default, "allow");
        for (block, why) in [
            (json!("deny"), "must be a mapping"),
            (json!({"default": "maybe"}), "default `maybe`"),
            (json!({"rules": {}}), "must be a list"),
            (
                json!({"rules": [{"effect": "exec", "action": "nope"}]}),
                "policy.rules[0]: action",
            ),
            (
                json!({"rules": [{"effect": "exec", "outside": "work_folder"}]}),
                "only to write and read",
            ),
            (
                json!({"rules": [{"effect": "write", "outside": "outbox"}]}),
                "allow rule",
            ),
            (
                json!({"rules": [{"effect": "exec", "command": "git push*"}]}),
                "list of strings",
            ),
            (
                json!({"rules": [{"effect": "exec", "commands": []}]}),
                "unknown key `commands`",
            ),
            (json!({"mode": "strict"}), "unknown key `mode`"),
        ] {
            let e = parse_thread_policy(&block).unwrap_err();
            assert!(e.contains(why), "{block}: {e}");
        }
        let rules = parse_rules(
            Some(&json!([{"effect": "exec"}])),
            Origin::Worker,
            "policy.rules",
        )
        .unwrap();
        assert_eq!(
            (rules[0].id.as_str(), rules[0].action.as_str()),
            ("rule-1", "allow")
        );
    }

    #[test]
    fn items() {
        let g = gate(
            json!([{"id": "w", "effect": "exec", "action": "deny", "command": ["sudo*"]}]),
            json!({"default": "deny", "rules": [{"id": "t", "effect": "exec", "action": "allow"}]}),
        );
        let (content, meta) = g.applied_item();
        assert_eq!(
            content[0]["text"],
            "Policy in force: 2 rule(s), default deny"
        );
        assert_eq!(
            meta["rules"],
            json!([{"id": "w", "origin": "worker", "action": "deny"},
                                          {"id": "t", "origin": "thread", "action": "allow"}])
        );
        assert_eq!(meta["counts"], json!({"rules": 2, "reported": 2}));
        assert!(meta.get("truncated").is_none());
        let call = bash("sudo rm -rf /");
        let d = g.decide(&call);
        let (content, meta) = denied_item(&d, &call);
        assert_eq!(
            content[0]["text"],
            "Blocked by policy rule 'w': sudo rm -rf /"
        );
        assert_eq!(
            meta,
            json!({"type": "policy_denied", "rule": "w", "effect": "exec", "detail": "sudo rm -rf /"})
        );
        assert_eq!(denial_for_agent(&d), "Denied by policy rule 'w'");

        let many: Vec<Value> = (0..120)
            .map(|i| json!({"id": format!("r{i}"), "effect": "read"}))
            .collect();
        let g = gate(json!([]), json!({"rules": many}));
        let (content, meta) = g.applied_item();
        assert_eq!(
            content[0]["text"],
            "Policy in force: 120 rule(s), default allow (listing the first 100)"
        );
        assert_eq!(meta["counts"], json!({"rules": 120, "reported": 100}));
        assert_eq!(meta["truncated"], true);
    }
}
