//! Agent settings: three tiers per field (thread `agent.*` > config `agents.<type>.*` > default),
//! and the activation checks that fail a thread with a documented thread code.
//!
//! Deviation from the reference: a thread may name `agent.executable` only from the operator's
//! `agents.<type>.allowed_executables`. The reference runs whatever binary the session names, which
//! lets anyone who can write to the session choose a program to run on the worker's machine.

use blobhub_agent_types::{self as agent_types, DriverKind};
use serde_json::Value;

use crate::classify::Envelope;
use crate::policy::{self, Gate};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub agent_type: String,
    /// The driver of `agent_type` (only driven types resolve).
    pub driver: DriverKind,
    pub executable: String,
    pub model: String,
    pub effort: String,
    /// `autonomous`, `approval` or `guarded`.
    pub permissions: String,
    /// The policy gate of a `guarded` thread (`None` in the other modes).
    pub gate: Option<Gate>,
    pub work_folder: String,
    /// config.yaml's `agents.<type>.env`: set in the agent's environment (config tier only; a
    /// session cannot choose an agent's variables). The host has refused `BLOBHUB_*` names.
    pub env: Vec<(String, String)>,
    /// How many times a turn cut short by a transient model-API failure is resumed (config
    /// tier only).
    pub turn_retries: u32,
    /// The waits before those resumes; the last one repeats. Never empty.
    pub turn_retry_delays_ms: Vec<u64>,
    /// Seconds without a line from the agent (while no person is asked) before the turn is
    /// interrupted and the thread fails with `AGENT_STALLED`; 0 never (config tier only).
    pub stall_timeout_s: u32,
    /// `held` (the agent waits for a person's answer) or `parked` (the turn ends at once and
    /// the answer starts the next one); config tier only.
    pub wait: String,
    /// Start the next turn's agent process ahead, while the thread waits for the person's
    /// message (guest/warm.rs); config tier only, default on.
    pub prestart: bool,
    /// Where a person's files are put, relative to the work folder (`None`: not downloaded).
    pub inbox: Option<String>,
    /// The thread's valid `artifacts` block (`None`: nothing is published).
    pub artifacts: Option<crate::artifacts::Artifacts>,
    /// Warnings of the activation (event, fields), logged by the thread; none fails it.
    pub warnings: Vec<(&'static str, Value)>,
}

impl Settings {
    /// The wait before resume number `attempt` (1-based).
    pub fn retry_delay_ms(&self, attempt: u32) -> u64 {
        let i =
            (attempt.max(1) as usize - 1).min(self.turn_retry_delays_ms.len().saturating_sub(1));
        self.turn_retry_delays_ms.get(i).copied().unwrap_or(0)
    }

    #[cfg(test)]
    pub fn for_tests(agent_type: &str) -> Settings {
        Settings {
            agent_type: agent_type.into(),
            driver: agent_types::find(agent_type)
                .and_then(|t| t.driver)
                .unwrap_or(DriverKind::TestAgent),
            executable: "agent".into(),
            model: String::new(),
            effort: String::new(),
            permissions: "approval".into(),
            gate: None,
            work_folder: "/work".into(),
            env: Vec::new(),
            turn_retries: agent_types::DEFAULT_TURN_RETRIES,
            turn_retry_delays_ms: agent_types::DEFAULT_TURN_RETRY_DELAYS_MS.to_vec(),
            stall_timeout_s: agent_types::DEFAULT_STALL_TIMEOUT_S,
            wait: "held".into(),
            prestart: true,
            inbox: Some(crate::attachments::DEFAULT_INBOX.into()),
            artifacts: None,
            warnings: Vec::new(),
        }
    }

    /// The dashboard's detail line.
    pub fn detail(&self) -> String {
        let or_default = |s: &str| {
            if s.is_empty() {
                "default".to_string()
            } else {
                s.to_string()
            }
        };
        format!(
            "model: {} · effort: {} · perm: {}",
            or_default(&self.model),
            or_default(&self.effort),
            self.permissions
        )
    }
}

/// A thread failure: a thread code (docs/session-agent-harness.md) and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: &'static str,
    pub message: String,
}

impl Failure {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

fn tier2<'a>(config: &'a Value, agent_type: &str, key: &str) -> &'a str {
    config
        .pointer(&format!("/agents/{agent_type}/{key}"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn first_set(values: &[&str]) -> String {
    values
        .iter()
        .find(|v| !v.is_empty())
        .copied()
        .unwrap_or("")
        .to_string()
}

/// Resolve and check the settings of a thread being activated or recovered. `worker_config` is
/// the section's `worker-config` JSON.
pub fn resolve(env: &Envelope, worker_config: &Value) -> Result<Settings, Failure> {
    // A malformed policy block fails the thread whatever its permissions: a person who wrote
    // one expects it to mean something.
    let thread_policy = env
        .policy
        .as_ref()
        .map(policy::parse_thread_policy)
        .transpose()
        .map_err(|e| Failure::new("POLICY_INVALID", format!("policy block is malformed: {e}")))?;
    let wf = &env.work_folder;
    if wf.is_empty() || !wf.starts_with('/') {
        return Err(Failure::new(
            "WORK_FOLDER_NOT_ABSOLUTE",
            format!("work_folder must be an absolute path, got {wf:?}"),
        ));
    }
    if wf.contains('\0') {
        return Err(Failure::new(
            "WORK_FOLDER_NOT_FOUND",
            "work_folder is not a usable path",
        ));
    }
    let t = env.agent_type.as_str();
    let Some(agent_type) = agent_types::find(t) else {
        return Err(Failure::new(
            "AGENT_TYPE_UNSUPPORTED",
            format!(
                "agent.type {:?} is not one of {}",
                abridge(t),
                agent_types::names()
            ),
        ));
    };
    let block = worker_config.pointer(&format!("/agents/{t}"));
    if agent_type.needs_config_block && !block.is_some_and(Value::is_object) {
        return Err(Failure::new(
            "AGENT_TYPE_UNSUPPORTED",
            format!("agent.type {t} is only honoured when config.yaml has an agents.{t} block"),
        ));
    }
    let Some(driver) = agent_type.driver else {
        return Err(Failure::new(
            "AGENT_TYPE_UNSUPPORTED",
            format!(
                "this worker build has no driver for agent.type {t} (it drives {})",
                agent_types::driven_names()
            ),
        ));
    };
    for (field, value) in [("agent.model", &env.model), ("agent.effort", &env.effort)] {
        check_agent_word(field, value)?;
    }
    let permissions = first_set(&[
        &env.permissions,
        tier2(worker_config, t, "permissions"),
        "approval",
    ]);
    match permissions.as_str() {
        "approval" => {}
        "autonomous" => {
            let allowed = worker_config
                .pointer("/policy/allow_autonomous")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            if !allowed {
                return Err(Failure::new(
                    "POLICY_AUTONOMOUS_FORBIDDEN",
                    "permissions autonomous is forbidden by config policy.allow_autonomous: false",
                ));
            }
        }
        "guarded" => {}
        other => {
            return Err(Failure::new(
                "PERMISSIONS_UNSUPPORTED",
                format!(
                    "permissions {:?} is not one of autonomous, approval, guarded",
                    abridge(other)
                ),
            ));
        }
    }
    let mut warnings = Vec::new();
    let artifacts = match crate::artifacts::parse_block(env.artifacts.as_ref()) {
        Ok(a) => a,
        Err(w) => {
            warnings.push((w.event, w.fields));
            None
        }
    };
    let (inbox, problems) = crate::attachments::resolve_inbox(
        env.attachments.as_ref(),
        worker_config
            .pointer("/attachments/inbox")
            .and_then(Value::as_str),
    );
    for p in problems {
        warnings.push(match p {
            crate::attachments::InboxProblem::Malformed(found) => (
                "attachments_block_malformed",
                serde_json::json!({"found": found}),
            ),
            crate::attachments::InboxProblem::Invalid(error) => {
                ("inbox_invalid", serde_json::json!({"error": error}))
            }
        });
    }
    let gate = if permissions == "guarded" {
        let Some(thread) = thread_policy else {
            return Err(Failure::new(
                "POLICY_MISSING",
                "permissions guarded needs a policy block on the thread",
            ));
        };
        // Checked by the host at start already; a rule it let through cannot fail here.
        let worker_rules = policy::parse_rules(
            worker_config.pointer("/policy/rules"),
            policy::Origin::Worker,
            "config policy.rules",
        )
        .map_err(|e| Failure::new("POLICY_INVALID", e))?;
        Some(Gate {
            worker_rules,
            thread,
            work_folder: wf.clone(),
            // Without a valid artifacts block there is no outbox: every path is outside it (as
            // the reference treats an unusable outbox). The thread also drops it when the host
            // cannot make the folder (a link on the way).
            outbox: artifacts
                .as_ref()
                .and_then(|a| policy::paths::outbox_root(wf, &a.outbox)),
        })
    } else {
        None
    };
    let configured = tier2(worker_config, t, "executable");
    let executable = if env.executable.is_empty() {
        first_set(&[configured, agent_type.default_executable])
    } else {
        let allowed = block
            .and_then(|b| b.get("allowed_executables"))
            .and_then(Value::as_array)
            .is_some_and(|list| {
                list.iter()
                    .any(|e| e.as_str() == Some(env.executable.as_str()))
            });
        if !allowed {
            return Err(Failure::new(
                "AGENT_EXECUTABLE_NOT_ALLOWED",
                format!(
                    "agent.executable {:?} is not listed in config.yaml agents.{t}.allowed_executables",
                    abridge(&env.executable)
                ),
            ));
        }
        env.executable.clone()
    };
    let turn_retries = block
        .and_then(|b| b.get("turn_retries"))
        .and_then(Value::as_u64)
        .map_or(agent_types::DEFAULT_TURN_RETRIES, |n| {
            n.min(u32::MAX as u64) as u32
        });
    let turn_retry_delays_ms: Vec<u64> = block
        .and_then(|b| b.get("turn_retry_delays_ms"))
        .and_then(Value::as_array)
        .map(|l| l.iter().filter_map(Value::as_u64).collect())
        .filter(|l: &Vec<u64>| !l.is_empty())
        .unwrap_or_else(|| agent_types::DEFAULT_TURN_RETRY_DELAYS_MS.to_vec());
    let stall_timeout_s = block
        .and_then(|b| b.get("stall_timeout_s"))
        .and_then(Value::as_u64)
        .map_or(agent_types::DEFAULT_STALL_TIMEOUT_S, |n| {
            n.min(u32::MAX as u64) as u32
        });
    let prestart = block
        .and_then(|b| b.get("prestart"))
        .and_then(Value::as_bool)
        .unwrap_or(true);
    Ok(Settings {
        agent_type: t.to_string(),
        prestart,
        driver,
        turn_retries,
        turn_retry_delays_ms,
        stall_timeout_s,
        wait: match tier2(worker_config, t, "wait") {
            "parked" => "parked".to_string(),
            _ => "held".to_string(),
        },
        executable,
        model: first_set(&[&env.model, tier2(worker_config, t, "model")]),
        effort: first_set(&[&env.effort, tier2(worker_config, t, "effort")]),
        permissions,
        gate,
        inbox,
        artifacts,
        warnings,
        work_folder: wf.clone(),
        env: block
            .and_then(|b| b.get("env"))
            .and_then(Value::as_object)
            .map(|vars| {
                vars.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// The longest `agent.model` / `agent.effort` a thread may set.
pub const AGENT_WORD_MAX: usize = 128;

/// A thread-supplied model or effort goes onto the agent's command line: it must be a plain word
/// (letters, digits, `.`, `_`, `-`, `:`, `/`, `@`, `+`, at most [`AGENT_WORD_MAX`] bytes). Empty
/// means "not set".
fn check_agent_word(field: &str, value: &str) -> Result<(), Failure> {
    let ok = value.len() <= AGENT_WORD_MAX
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-:/@+".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Failure::new(
            "AGENT_SETTINGS_INVALID",
            format!(
                "{field} {:?} is not a model or effort name (at most {AGENT_WORD_MAX} characters of letters, digits and ._-:/@+)",
                abridge(value)
            ),
        ))
    }
}

/// At most 80 characters of a value quoted in a message.
fn abridge(s: &str) -> String {
    if s.chars().count() <= 80 {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(80).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(agent_type: &str) -> Envelope {
        Envelope {
            state: "pending".into(),
            agent_type: agent_type.into(),
            work_folder: "/tmp".into(),
            ..Default::default()
        }
    }

    #[test]
    fn thread_model_and_effort_must_be_plain_words() {
        let cfg = json!({"agents": {"test_double": {}}});
        let mut e = env("test_double");
        e.model = "claude-sonnet-4-5@2025:x/y+z".into();
        e.effort = "high".into();
        assert!(resolve(&e, &cfg).is_ok());
        for bad in ["a b", "x\0y", "m;rm -rf /", "\u{202e}abc", "é"] {
            let mut e = env("test_double");
            e.model = bad.into();
            let f = resolve(&e, &cfg).unwrap_err();
            assert_eq!(f.code, "AGENT_SETTINGS_INVALID", "{bad:?}");
        }
        let mut e = env("test_double");
        e.effort = "e".repeat(AGENT_WORD_MAX + 1);
        assert_eq!(
            resolve(&e, &cfg).unwrap_err().code,
            "AGENT_SETTINGS_INVALID"
        );
    }

    #[test]
    fn three_tiers() {
        let cfg = json!({"agents": {"test_double": {"model": "cfg-model", "effort": "low", "permissions": "autonomous", "env": {"PROXY": "http://127.0.0.1:9"}}}});
        let s = resolve(&env("test_double"), &cfg).unwrap();
        assert_eq!(
            s.env,
            [("PROXY".to_string(), "http://127.0.0.1:9".to_string())]
        );
        assert_eq!(s.model, "cfg-model");
        assert_eq!(s.effort, "low");
        assert_eq!(s.permissions, "autonomous");
        assert_eq!(s.executable, "blobhub-test-agent");
        let mut e = env("test_double");
        e.model = "thread-model".into();
        e.permissions = "approval".into();
        let s = resolve(&e, &cfg).unwrap();
        assert_eq!(
            (s.model.as_str(), s.permissions.as_str()),
            ("thread-model", "approval")
        );
        let s = resolve(&env("test_double"), &json!({"agents": {"test_double": {}}})).unwrap();
        assert_eq!((s.model.as_str(), s.permissions.as_str()), ("", "approval"));
        assert_eq!(
            s.detail(),
            "model: default · effort: default · perm: approval"
        );
    }

    #[test]
    fn executable_from_the_thread_needs_the_operators_allow_list() {
        let mut e = env("test_double");
        e.executable = "/bin/sh".into();
        let cfg = json!({"agents": {"test_double": {"executable": "/opt/agent"}}});
        assert_eq!(
            resolve(&e, &cfg).unwrap_err().code,
            "AGENT_EXECUTABLE_NOT_ALLOWED"
        );
        let cfg = json!({"agents": {"test_double": {"allowed_executables": ["/bin/sh"]}}});
        assert_eq!(resolve(&e, &cfg).unwrap().executable, "/bin/sh");
        e.executable = String::new();
        let cfg = json!({"agents": {"test_double": {"executable": "/opt/agent"}}});
        assert_eq!(resolve(&e, &cfg).unwrap().executable, "/opt/agent");
    }

    #[test]
    fn failure_codes_in_order() {
        let cfg = json!({"agents": {"test_double": {}}, "policy": {"allow_autonomous": false}});
        let mut e = env("test_double");
        e.work_folder = "relative".into();
        assert_eq!(
            resolve(&e, &cfg).unwrap_err().code,
            "WORK_FOLDER_NOT_ABSOLUTE"
        );
        assert_eq!(
            resolve(&env("gpt"), &cfg).unwrap_err().code,
            "AGENT_TYPE_UNSUPPORTED"
        );
        assert_eq!(
            resolve(&env("test_double"), &json!({})).unwrap_err().code,
            "AGENT_TYPE_UNSUPPORTED"
        );
        assert_eq!(
            resolve(&env("antigravity"), &cfg).unwrap_err().code,
            "AGENT_TYPE_UNSUPPORTED"
        );
        assert_eq!(
            resolve(&env("codex"), &cfg).map(|s| s.driver),
            Ok(DriverKind::Codex)
        );
        let mut e = env("test_double");
        e.permissions = "yolo".into();
        assert_eq!(
            resolve(&e, &cfg).unwrap_err().code,
            "PERMISSIONS_UNSUPPORTED"
        );
        e.permissions = "guarded".into();
        assert_eq!(resolve(&e, &cfg).unwrap_err().code, "POLICY_MISSING");
        e.policy = Some(json!({"default": "ask"}));
        let s = resolve(&e, &cfg).unwrap();
        assert_eq!(s.gate.map(|g| g.thread.default), Some("ask".to_string()));
        // Malformed: refused whatever the permissions, before the work folder is looked at.
        e.policy = Some(json!({"default": "sometimes"}));
        e.permissions = "approval".into();
        e.work_folder = "relative".into();
        assert_eq!(resolve(&e, &cfg).unwrap_err().code, "POLICY_INVALID");
        e.work_folder = "/tmp".into();
        e.policy = None;
        e.permissions = "autonomous".into();
        assert_eq!(
            resolve(&e, &cfg).unwrap_err().code,
            "POLICY_AUTONOMOUS_FORBIDDEN"
        );
    }

    #[test]
    fn guarded_threads_get_the_operators_rules_first() {
        let cfg = json!({"agents": {"test_double": {}}, "policy": {"allow_autonomous": true,
            "rules": [{"id": "no-sudo", "effect": "exec", "action": "deny", "command": ["sudo*"]}]}});
        let mut e = env("test_double");
        e.permissions = "guarded".into();
        e.policy = Some(json!({"rules": [{"id": "all", "effect": "exec", "action": "allow"}]}));
        let gate = resolve(&e, &cfg).unwrap().gate.unwrap();
        let call = crate::policy::call_of(
            DriverKind::TestAgent,
            "Bash",
            &json!({"command": "sudo ls"}),
        );
        assert_eq!(gate.decide(&call).rule, "no-sudo");
        assert_eq!(gate.work_folder, "/tmp");
    }
}
