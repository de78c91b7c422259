//! The agent types the worker knows, in one table.
//!
//! The host reads it to validate `config.yaml`'s `agents` block and to compute which programs the
//! `agents` capability grants; the `session_agent_harness` reads it to check a thread's
//! `agent.type` and to pick the driver. Before this table the names lived in six places across
//! the two crates and had drifted (`agents.test_double: {}` granted nothing).

pub mod policy;

/// The driver that speaks to an agent type's CLI. The harness maps each kind to its code; the
/// host only needs to know whether there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    /// `blobhub-test-agent`, the scripted agent of the test suite and the demo.
    TestAgent,
    /// Claude Code: `claude -p` speaking stream-json with the control protocol on stdin.
    ClaudeCode,
    /// Codex: `codex app-server` speaking JSON-RPC lines on stdio.
    Codex,
}

/// One agent type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentType {
    /// The name a thread's `agent.type` and a `config.yaml` `agents.<name>` block use.
    pub name: &'static str,
    /// The program run when neither the thread nor the config names one.
    pub default_executable: &'static str,
    /// `None`: the type is part of the product's vocabulary but this build cannot drive it; a
    /// thread asking for it fails with `AGENT_TYPE_UNSUPPORTED`.
    pub driver: Option<DriverKind>,
    /// Only usable when `config.yaml` has an `agents.<name>` block. The test agent is opt-in so
    /// a session cannot make a production worker run a scripted agent.
    pub needs_config_block: bool,
    /// Variables of the worker's own environment that never reach this type's process. A
    /// worker started from inside a Claude Code session inherits `CLAUDECODE` and
    /// `CLAUDE_CODE_*`, which would make its agents believe they are nested in that session.
    /// An entry ending in `*` is a prefix. The operator's `agents.<name>.env` may set them again.
    pub inherited_env_removed: &'static [&'static str],
}

/// The keys every `agents.<type>` block accepts (docs/configuration.md describes each).
pub const SETTINGS: &[&str] = &[
    "executable",
    "model",
    "effort",
    "permissions",
    "allowed_executables",
    // Variables for the agent's process (a proxy's base URL, the model API key the agent needs).
    "env",
    // How many times a turn cut short by a transient model-API failure is resumed.
    "turn_retries",
    // The waits before those resumes; the last one repeats.
    "turn_retry_delays_ms",
    // Seconds without a line from the agent, while no person is asked, before the turn is
    // interrupted and the thread fails with AGENT_STALLED (0: never).
    "stall_timeout_s",
    // `held` (the agent waits for a person's answer) or `parked` (its turn ends; the answer
    // starts the next one).
    "wait",
    // Start the next turn's agent process ahead, while the thread waits for a message.
    "prestart",
];

/// `stall_timeout_s` when the config does not set it: 30 minutes. Long enough for a silent
/// build or test run; short enough that a hung agent does not hold a slot for a day.
pub const DEFAULT_STALL_TIMEOUT_S: u32 = 1800;

/// `turn_retries` when the config does not set it.
pub const DEFAULT_TURN_RETRIES: u32 = 3;
/// `turn_retry_delays_ms` when the config does not set it: 15 s, 60 s, then 180 s.
pub const DEFAULT_TURN_RETRY_DELAYS_MS: &[u64] = &[15_000, 60_000, 180_000];

/// Every agent type, in the order messages list them.
pub const AGENT_TYPES: &[AgentType] = &[
    AgentType {
        name: "claude_code",
        default_executable: "claude",
        driver: Some(DriverKind::ClaudeCode),
        needs_config_block: false,
        inherited_env_removed: &["CLAUDECODE", "CLAUDE_CODE_*"],
    },
    AgentType {
        name: "codex",
        default_executable: "codex",
        driver: Some(DriverKind::Codex),
        needs_config_block: false,
        // `CODEX_HOME` and the like are the operator's settings for codex, not a nesting marker.
        inherited_env_removed: &[],
    },
    AgentType {
        name: "antigravity",
        default_executable: "agy",
        driver: None,
        needs_config_block: false,
        inherited_env_removed: &[],
    },
    AgentType {
        name: "test_double",
        default_executable: "blobhub-test-agent",
        driver: Some(DriverKind::TestAgent),
        needs_config_block: true,
        inherited_env_removed: &[],
    },
];

/// The agent type called `name`.
pub fn find(name: &str) -> Option<&'static AgentType> {
    AGENT_TYPES.iter().find(|t| t.name == name)
}

/// The names of every type, comma-separated, for messages.
pub fn names() -> String {
    AGENT_TYPES
        .iter()
        .map(|t| t.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The names of the types this build can drive, comma-separated, for messages.
pub fn driven_names() -> String {
    AGENT_TYPES
        .iter()
        .filter(|t| t.driver.is_some())
        .map(|t| t.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `name` is removed from the environment an agent inherits, by any agent type's rule
/// (the host applies the union to every child: it cannot tell which program is which agent).
pub fn inherited_env_removed(name: &str) -> bool {
    AGENT_TYPES
        .iter()
        .flat_map(|t| t.inherited_env_removed)
        .any(|rule| match rule.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == *rule,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        for t in AGENT_TYPES {
            assert_eq!(find(t.name), Some(t));
            assert_eq!(AGENT_TYPES.iter().filter(|o| o.name == t.name).count(), 1);
        }
        assert_eq!(find("gpt"), None);
    }

    #[test]
    fn claude_session_variables_are_removed() {
        assert!(inherited_env_removed("CLAUDECODE"));
        assert!(inherited_env_removed("CLAUDE_CODE_ENTRYPOINT"));
        assert!(!inherited_env_removed("CLAUDE"));
        assert!(!inherited_env_removed("PATH"));
        assert!(!inherited_env_removed("ANTHROPIC_BASE_URL"));
    }

    #[test]
    fn driven_names_list_only_drivable_types() {
        assert_eq!(driven_names(), "claude_code, codex, test_double");
        assert_eq!(names(), "claude_code, codex, antigravity, test_double");
    }
}
