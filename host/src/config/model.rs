//! The validated configuration (`config.yaml`, docs/configuration.md).

use std::collections::BTreeMap;
use std::time::Duration;

use blobhub_agent_types as agent_types;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::api::RetryPolicy;

/// The whole validated `config.yaml`. `Default` is a config with every default and no
/// sections (for stores that run none: describe, validate).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Config {
    pub polling: Polling,
    pub concurrency: Concurrency,
    pub shutdown: Shutdown,
    /// `agents.<agent_type>`: per-agent-type settings; absent types use the defaults.
    pub agents: BTreeMap<String, AgentSettings>,
    pub sections: Vec<Section>,
    /// Our addition: per-job-type grants of the operator.
    pub job_types: BTreeMap<String, JobTypeSettings>,
    /// `policy`: the operator's ceiling over what threads may do.
    pub policy: Policy,
    /// Our addition: where programs (agents) may be started.
    pub workspace: Workspace,
    /// `attachments`: where a person's files are put in a work folder.
    pub attachments: Attachments,
}

/// `attachments`: the worker-wide default of a thread's inbox (docs/attachments.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attachments {
    /// Relative to the work folder, and inside it; a thread's `attachments.inbox` wins.
    pub inbox: String,
}

impl Default for Attachments {
    fn default() -> Self {
        Attachments {
            inbox: ".blobhub/inbox".into(),
        }
    }
}

/// `workspace`: where a job type may start programs (an agent's work folder).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Workspace {
    /// Absolute folders; a start folder must resolve (symlinks followed) inside one of them.
    /// Empty: the user's home folder (`HOME`). The state tree and system folders are refused
    /// whatever this says.
    pub allowed_roots: Vec<String>,
}

impl Config {
    /// The settings of `agent_type`, or its defaults when the config has no entry for it.
    pub fn agent(&self, agent_type: &str) -> AgentSettings {
        self.agents.get(agent_type).cloned().unwrap_or_default()
    }

    /// The grants of `job_type`, or its defaults (the runtime's spawn grant, 256 MiB).
    pub fn job_type(&self, job_type: &str) -> JobTypeSettings {
        self.job_types.get(job_type).cloned().unwrap_or_default()
    }

    /// The retry policy of API calls: the client's defaults with `polling.backoff_max_ms` as cap.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::with_cap_ms(self.polling.backoff_max_ms)
    }
}

/// `polling`: the cadence of per-section poll loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Polling {
    pub interval_idle_ms: u64,
    pub interval_active_ms: u64,
    pub backoff_max_ms: u64,
}

impl Default for Polling {
    fn default() -> Self {
        Self {
            interval_idle_ms: 1500,
            interval_active_ms: 3000,
            backoff_max_ms: 30000,
        }
    }
}

impl Polling {
    pub fn interval_idle(&self) -> Duration {
        Duration::from_millis(self.interval_idle_ms)
    }
    pub fn interval_active(&self) -> Duration {
        Duration::from_millis(self.interval_active_ms)
    }
    pub fn backoff_max(&self) -> Duration {
        Duration::from_millis(self.backoff_max_ms)
    }
}

/// `concurrency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Concurrency {
    /// Agent processes running at once across all sections (≥ 1).
    pub max_agents: u32,
    /// Agents blocked on a person's answer kept alive at once across all sections (≥ 1); past
    /// it the oldest wait is parked.
    pub held_waits_max: u32,
}

impl Default for Concurrency {
    fn default() -> Self {
        Self {
            max_agents: 4,
            held_waits_max: 8,
        }
    }
}

/// `shutdown`: how a stop (SIGTERM, SIGINT, `stop`, the dashboard's `q`) ends the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Shutdown {
    /// How long sections get to finish their posts and end their agents' turns after a stop
    /// before they are cancelled (their agents then get SIGTERM, SIGKILL after a grace).
    pub drain_timeout_ms: u64,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            drain_timeout_ms: 10_000,
        }
    }
}

impl Shutdown {
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
}

/// `approval` routes sensitive actions to a human; `autonomous` runs without a gate;
/// `guarded` lets the thread's policy (and `policy.rules`) decide, asking a human on `ask`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Permissions {
    #[default]
    Approval,
    Autonomous,
    Guarded,
}

impl Permissions {
    pub const VOCABULARY: [&str; 3] = ["approval", "autonomous", "guarded"];

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "approval" => Some(Self::Approval),
            "autonomous" => Some(Self::Autonomous),
            "guarded" => Some(Self::Guarded),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approval => "approval",
            Self::Autonomous => "autonomous",
            Self::Guarded => "guarded",
        }
    }
}

/// `policy`: the operator's ceiling (docs/configuration.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// `false`: a thread asking for `autonomous` fails with `POLICY_AUTONOMOUS_FORBIDDEN`.
    pub allow_autonomous: bool,
    /// Checked before every guarded thread's own rules; a thread cannot override them.
    pub rules: Vec<PolicyRule>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            allow_autonomous: true,
            rules: Vec::new(),
        }
    }
}

/// One of `policy.rules`, with its defaults filled in (`action: allow`, `id: rule-<n>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyRule {
    pub id: String,
    /// `write`, `exec`, `read` or `network`.
    pub effect: String,
    /// `allow`, `deny` or `ask`.
    pub action: String,
    /// `fnmatch` patterns on the command (exec rules only).
    pub command: Vec<String>,
    /// `""`, `work_folder` or `outbox`.
    pub outside: String,
}

/// `agents.<agent_type>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentSettings {
    /// Command name resolved on PATH; `None` = the agent type's default.
    pub executable: Option<String>,
    pub model: Option<String>,
    /// `low`, `medium`, `high`, or a harness-specific passthrough value.
    pub effort: Option<String>,
    pub permissions: Permissions,
    /// Our addition: the only executables a thread's own `agent.executable` may name. Empty by
    /// default, so a thread cannot choose the binary: in the reference a session author could
    /// make the worker run any program on the operator's machine.
    pub allowed_executables: Vec<String>,
    /// Variables set in the agent's environment (a proxy's base URL, the model API key the
    /// agent needs). Never `BLOBHUB_*`: the worker's own key stays in the worker.
    pub env: BTreeMap<String, String>,
    /// How many times a turn cut short by a transient model-API failure is resumed.
    pub turn_retries: u32,
    /// The waits before those resumes, in milliseconds; the last one repeats.
    pub turn_retry_delays_ms: Vec<u64>,
    /// Seconds a turn may go without a line from its agent (while no person is being asked)
    /// before it is interrupted and the thread fails with `AGENT_STALLED`; 0 never.
    pub stall_timeout_s: u32,
    /// `held` or `parked`: what an agent's question does to its turn (docs/session-agent-harness.md).
    pub wait: Option<String>,
    /// Start the next turn's agent process ahead, while the thread waits for the person's
    /// message (one idle process per active thread; docs/session-agent-harness.md).
    pub prestart: bool,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            executable: None,
            model: None,
            effort: None,
            permissions: Permissions::default(),
            allowed_executables: Vec::new(),
            env: BTreeMap::new(),
            turn_retries: agent_types::DEFAULT_TURN_RETRIES,
            turn_retry_delays_ms: agent_types::DEFAULT_TURN_RETRY_DELAYS_MS.to_vec(),
            stall_timeout_s: agent_types::DEFAULT_STALL_TIMEOUT_S,
            wait: None,
            prestart: true,
        }
    }
}

impl AgentSettings {
    /// The configured executable, else the agent type's default (`claude`, `codex`).
    pub fn executable_for(&self, agent_type: &str) -> Option<String> {
        self.executable
            .clone()
            .or_else(|| default_executable(agent_type).map(str::to_owned))
    }
}

/// The default command of a known agent type.
pub fn default_executable(agent_type: &str) -> Option<&'static str> {
    agent_types::find(agent_type).map(|t| t.default_executable)
}

/// One entry of `sections`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Section {
    /// Position in the `sections` list (0-based), for diagnostics (`sections[1]`).
    pub index: usize,
    pub name: Option<String>,
    pub job_type: String,
    /// Every other key of the section, as JSON, for its job type to validate and interpret.
    pub settings: Map<String, Value>,
    /// The line where the section starts in `config.yaml`.
    pub line: Option<usize>,
}

impl Section {
    /// `sections[<index>]`, the prefix of this section's field paths.
    pub fn path(&self) -> String {
        format!("sections[{}]", self.index)
    }
}

/// `job_types.<job_type>`: what the operator grants a job type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobTypeSettings {
    /// Program names the job type may spawn (both the job type and this list must allow one).
    /// `None` when the config does not say: the runtime then applies its default grant (for the
    /// bundled harness, the executables of the `agents` block).
    pub allow_spawn: Option<Vec<String>>,
    /// Variable names the job type may set in the environment of the programs it starts, beyond
    /// the documented ones (never a loader or interpreter variable).
    pub allow_env: Vec<String>,
    /// The file in the plugins folder that may answer to this name when it is the name of a
    /// bundled job type (an operator pinning another build of `session_agent_harness`).
    pub component: Option<String>,
    /// Linear memory limit of each instance of the job type.
    pub memory_limit_mib: u64,
    /// How long an instance may compute without returning to the host before it is stopped
    /// as runaway (`JOB_TYPE_UNRESPONSIVE`).
    pub max_busy_ms: u64,
    /// Session API requests of one section in flight at once (more wait, up to a bound).
    pub max_requests_in_flight: u64,
    /// Thread rows one section may show.
    pub max_status_rows: u64,
    /// Log lines (and stderr lines) one section may write per second; the rest are dropped
    /// and counted.
    pub max_log_lines_per_sec: u64,
    /// Bytes one section may keep in its state folder.
    pub state_quota_mib: u64,
}

impl Default for JobTypeSettings {
    fn default() -> Self {
        Self {
            allow_spawn: None,
            allow_env: Vec::new(),
            component: None,
            memory_limit_mib: 256,
            max_busy_ms: 5000,
            max_requests_in_flight: 16,
            max_status_rows: 1000,
            max_log_lines_per_sec: 200,
            state_quota_mib: 1024,
        }
    }
}
