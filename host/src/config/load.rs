//! Reading and validating `config.yaml`, collecting every problem at once.
//!
//! The text is parsed into a YAML tree, then walked field by field. A wrong field is recorded
//! with its path and line and the walk goes on, so one `config check` shows every problem.
//! (A derived `Deserialize` stops at the first type error, which is why the walk is by hand;
//! unknown keys are found by comparing each mapping with the keys its block knows.)

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use blobhub_agent_types as agent_types;
use serde::Serialize;
use serde_json::Map;
use serde_yaml::{Mapping, Value};

use super::lines::LineIndex;
use super::model::{
    AgentSettings, Attachments, Concurrency, Config, JobTypeSettings, Permissions, Policy,
    PolicyRule, Polling, Section, Shutdown, Workspace,
};

/// Portable effort values; anything else must look like a harness passthrough token.
const PORTABLE_EFFORT: [&str; 3] = ["low", "medium", "high"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem of the config, located by field path and line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// A stable code: `INVALID_CONFIG` for errors of this module, `UNKNOWN_KEY` for warnings;
    /// job types add their own (`MISSING_SESSION_KEYS`, …).
    pub code: String,
    /// `sections[1].job_type`; empty for the file as a whole.
    pub path: String,
    /// 1-based line in `config.yaml`, when known.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// The outcome of loading: a config when there was no error, and every diagnostic.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub config: Option<Config>,
    /// The config as far as it could be read even when it has errors: invalid values replaced by
    /// their defaults, unreadable sections left out. `config check` validates these sections
    /// with their job types too, so one run reports every problem. `None` when the file is
    /// missing, not YAML, or not a mapping. Never run: only `config` is a valid config.
    pub partial: Option<Config>,
    pub diagnostics: Vec<Diagnostic>,
    /// For locating diagnostics that later checks (job types) produce.
    pub lines: LineIndex,
}

impl LoadReport {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
    }
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
    }
}

/// Loads `path`. A missing or unreadable file is one error diagnostic.
pub fn load_file(path: &Path) -> LoadReport {
    // Read at most one byte over the limit: a huge file is refused without reading it all.
    let read = std::fs::File::open(path).and_then(|f| {
        use std::io::Read;
        let mut text = String::new();
        f.take(super::limits::MAX_BYTES as u64 + 1)
            .read_to_string(&mut text)?;
        Ok(text)
    });
    match read {
        Ok(text) => load_str(&text),
        Err(e) => LoadReport {
            config: None,
            diagnostics: vec![Diagnostic {
                severity: Severity::Error,
                code: "INVALID_CONFIG".into(),
                path: String::new(),
                line: None,
                message: if e.kind() == std::io::ErrorKind::NotFound {
                    format!("{} does not exist", path.display())
                } else {
                    format!("cannot read {}: {e}", path.display())
                },
            }],
            lines: LineIndex::default(),
            partial: None,
        },
    }
}

/// Parses and validates the text of a `config.yaml`.
pub fn load_str(text: &str) -> LoadReport {
    if let Err(message) = super::limits::check(text) {
        return LoadReport {
            config: None,
            diagnostics: vec![Diagnostic {
                severity: Severity::Error,
                code: "INVALID_CONFIG".into(),
                path: String::new(),
                line: None,
                message,
            }],
            lines: LineIndex::default(),
            partial: None,
        };
    }
    let lines = LineIndex::build(text);
    let mut walk = Walk {
        lines,
        diagnostics: Vec::new(),
    };
    let config = match serde_yaml::from_str::<Value>(text) {
        Ok(root) => walk.config(&root),
        Err(e) => {
            walk.diagnostics.push(Diagnostic {
                severity: Severity::Error,
                code: "INVALID_CONFIG".into(),
                path: String::new(),
                line: e.location().map(|l| l.line()),
                message: format!("not valid YAML: {e}"),
            });
            None
        }
    };
    let has_errors = walk
        .diagnostics
        .iter()
        .any(|d| d.severity == Severity::Error);
    LoadReport {
        partial: config.clone(),
        config: config.filter(|_| !has_errors),
        diagnostics: walk.diagnostics,
        lines: walk.lines,
    }
}

/// A config given as a JSON document (tests, tools): validated exactly as `config.yaml` is
/// (JSON is YAML), so it takes the same defaults. Errors are every error diagnostic.
impl TryFrom<serde_json::Value> for Config {
    type Error = Vec<Diagnostic>;

    fn try_from(value: serde_json::Value) -> Result<Config, Vec<Diagnostic>> {
        let report = load_str(&value.to_string());
        match report.config {
            Some(config) => Ok(config),
            None => Err(report.errors().cloned().collect()),
        }
    }
}

struct Walk {
    lines: LineIndex,
    diagnostics: Vec<Diagnostic>,
}

/// Joins a parent path and a key.
fn child(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

impl Walk {
    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.push(Severity::Error, "INVALID_CONFIG", path, message.into());
    }

    fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.push(Severity::Warning, "UNKNOWN_KEY", path, message.into());
    }

    /// A warning with its own code: valid config that will not do what it seems to.
    fn warn_coded(&mut self, code: &str, path: &str, message: impl Into<String>) {
        self.push(Severity::Warning, code, path, message.into());
    }

    fn push(&mut self, severity: Severity, code: &str, path: &str, message: String) {
        self.diagnostics.push(Diagnostic {
            severity,
            code: code.to_owned(),
            path: path.to_owned(),
            line: self.lines.line(path),
            message,
        });
    }

    /// The mapping at `path`; `null`/absent is an empty mapping. Keys must be strings.
    fn mapping<'v>(
        &mut self,
        path: &str,
        value: Option<&'v Value>,
    ) -> Option<Vec<(String, &'v Value)>> {
        match value {
            None | Some(Value::Null) => Some(Vec::new()),
            Some(Value::Mapping(map)) => Some(self.entries(path, map)),
            Some(other) => {
                self.error(
                    path,
                    format!("expected a mapping, found {}", type_name(other)),
                );
                None
            }
        }
    }

    fn entries<'v>(&mut self, path: &str, map: &'v Mapping) -> Vec<(String, &'v Value)> {
        let mut out = Vec::new();
        for (key, value) in map {
            match key.as_str() {
                Some(key) => out.push((key.to_owned(), value)),
                None => self.error(
                    path,
                    format!("keys must be strings, found {}", type_name(key)),
                ),
            }
        }
        out
    }

    /// Warns about every key of `entries` that is not in `known`.
    fn unknown_keys(&mut self, path: &str, entries: &[(String, &Value)], known: &[&str]) {
        for (key, _) in entries {
            if !known.contains(&key.as_str()) {
                let mut message = format!("unknown key `{key}` is ignored");
                if !known.is_empty() {
                    message.push_str(&format!(" (known: {})", known.join(", ")));
                }
                self.warn(&child(path, key), message);
            }
        }
    }

    fn get<'v>(entries: &[(String, &'v Value)], key: &str) -> Option<&'v Value> {
        entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
            .filter(|v| !v.is_null())
    }

    /// A positive integer (> 0), or `default` when absent.
    fn positive(&mut self, path: &str, value: Option<&Value>, default: u64) -> u64 {
        match value {
            None => default,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) if v > 0 => v,
                _ => {
                    self.error(
                        path,
                        format!("must be an integer greater than 0, found {n}"),
                    );
                    default
                }
            },
            Some(other) => {
                self.error(
                    path,
                    format!("expected an integer, found {}", type_name(other)),
                );
                default
            }
        }
    }

    /// A non-empty string, or `None` when absent.
    fn string(&mut self, path: &str, value: Option<&Value>) -> Option<String> {
        match value {
            None => None,
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
            Some(Value::String(_)) => {
                self.error(
                    path,
                    "must not be empty (leave the key out for the default)",
                );
                None
            }
            Some(other) => {
                self.error(
                    path,
                    format!("expected a string, found {}", type_name(other)),
                );
                None
            }
        }
    }

    /// A list of non-empty strings, or `None` when absent.
    fn string_list(&mut self, path: &str, value: Option<&Value>) -> Option<Vec<String>> {
        let items = match value? {
            Value::Sequence(items) => items,
            other => {
                self.error(
                    path,
                    format!("expected a list of strings, found {}", type_name(other)),
                );
                return None;
            }
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if let Some(s) = self.string(&format!("{path}[{i}]"), Some(item)) {
                out.push(s);
            } else if item.is_null() {
                self.error(&format!("{path}[{i}]"), "expected a string, found null");
            }
        }
        Some(out)
    }

    fn config(&mut self, root: &Value) -> Option<Config> {
        let top = match root {
            Value::Null => {
                self.error("", "the file is empty; `sections` is required");
                return None;
            }
            Value::Mapping(map) => self.entries("", map),
            other => {
                self.error(
                    "",
                    format!(
                        "expected a mapping at the top level, found {}",
                        type_name(other)
                    ),
                );
                return None;
            }
        };
        self.unknown_keys(
            "",
            &top,
            &[
                "polling",
                "concurrency",
                "shutdown",
                "agents",
                "sections",
                "job_types",
                "policy",
                "workspace",
                "attachments",
            ],
        );
        let polling = self.polling(Self::get(&top, "polling"));
        let concurrency = self.concurrency(Self::get(&top, "concurrency"));
        let shutdown = self.shutdown(Self::get(&top, "shutdown"));
        let agents = self.agents(Self::get(&top, "agents"));
        let sections = self.sections(top.iter().find(|(k, _)| k == "sections").map(|(_, v)| *v));
        let job_types = self.job_types(Self::get(&top, "job_types"));
        let policy = self.policy(Self::get(&top, "policy"));
        let workspace = self.workspace(Self::get(&top, "workspace"));
        let attachments = self.attachments(Self::get(&top, "attachments"));
        Some(Config {
            polling,
            concurrency,
            shutdown,
            agents,
            sections,
            job_types,
            policy,
            workspace,
            attachments,
        })
    }

    /// `attachments.inbox`: a relative path that stays inside the work folder.
    fn attachments(&mut self, value: Option<&Value>) -> Attachments {
        let mut out = Attachments::default();
        let Some(map) = self.mapping("attachments", value) else {
            return out;
        };
        self.unknown_keys("attachments", &map, &["inbox"]);
        if let Some(inbox) = self.string("attachments.inbox", Self::get(&map, "inbox")) {
            let escapes = inbox.starts_with('/')
                || inbox.split('/').any(|s| s == "..")
                || inbox.split('/').all(|s| s.is_empty() || s == ".");
            if escapes {
                self.error(
                    "attachments.inbox",
                    format!(
                        "must be a folder inside the work folder (relative, no `..`), got `{inbox}`"
                    ),
                );
            } else {
                out.inbox = inbox;
            }
        }
        out
    }

    /// `policy`: `allow_autonomous` and the operator's `rules`. A rule's unknown key is an
    /// error, not a warning: a misspelt `command` would turn a narrow rule into one that
    /// matches every call.
    fn policy(&mut self, value: Option<&Value>) -> Policy {
        let mut policy = Policy::default();
        let Some(map) = self.mapping("policy", value) else {
            return policy;
        };
        self.unknown_keys("policy", &map, agent_types::policy::CONFIG_KEYS);
        match Self::get(&map, "allow_autonomous") {
            None => {}
            Some(Value::Bool(b)) => policy.allow_autonomous = *b,
            Some(other) => self.error(
                "policy.allow_autonomous",
                format!("expected true or false, found {}", type_name(other)),
            ),
        }
        let items = match Self::get(&map, "rules") {
            None => return policy,
            Some(Value::Sequence(items)) => items,
            Some(other) => {
                self.error(
                    "policy.rules",
                    format!("expected a list of rules, found {}", type_name(other)),
                );
                return policy;
            }
        };
        let mut seen_ids = BTreeSet::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("policy.rules[{i}]");
            let Some(fields) = self.mapping(&path, Some(item)) else {
                continue;
            };
            let mut ok = true;
            for (key, _) in &fields {
                if !agent_types::policy::RULE_KEYS.contains(&key.as_str()) {
                    self.error(
                        &child(&path, key),
                        format!(
                            "unknown key `{key}` in a policy rule (known: {})",
                            agent_types::policy::RULE_KEYS.join(", ")
                        ),
                    );
                    ok = false;
                }
            }
            let text = |w: &mut Self, key: &str| match Self::get(&fields, key) {
                None => Some(String::new()),
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => {
                    w.error(
                        &child(&path, key),
                        format!("expected a string, found {}", type_name(other)),
                    );
                    None
                }
            };
            let (Some(id), Some(effect), Some(action), Some(outside)) = (
                text(self, "id"),
                text(self, "effect"),
                text(self, "action"),
                text(self, "outside"),
            ) else {
                continue;
            };
            let command = self
                .string_list(&child(&path, "command"), Self::get(&fields, "command"))
                .unwrap_or_default();
            let id = if id.is_empty() {
                format!("rule-{}", i + 1)
            } else {
                id
            };
            if !seen_ids.insert(id.clone()) {
                self.error(
                    &child(&path, "id"),
                    format!("duplicates the id `{id}` of an earlier rule"),
                );
                continue;
            }
            let action = if action.is_empty() {
                "allow".to_string()
            } else {
                action
            };
            if effect.is_empty() {
                self.error(
                    &child(&path, "effect"),
                    "is required (write, exec, read or network)",
                );
                continue;
            }
            if let Err(e) =
                agent_types::policy::check_rule(&effect, &action, &outside, !command.is_empty())
            {
                self.error(&path, e);
                continue;
            }
            if ok {
                policy.rules.push(PolicyRule {
                    id,
                    effect,
                    action,
                    command,
                    outside,
                });
            }
        }
        policy
    }

    fn workspace(&mut self, value: Option<&Value>) -> Workspace {
        let Some(map) = self.mapping("workspace", value) else {
            return Workspace::default();
        };
        self.unknown_keys("workspace", &map, &["allowed_roots"]);
        let roots = self
            .string_list("workspace.allowed_roots", Self::get(&map, "allowed_roots"))
            .unwrap_or_default();
        for (i, root) in roots.iter().enumerate() {
            if !root.starts_with('/') {
                self.error(
                    &format!("workspace.allowed_roots[{i}]"),
                    format!("must be an absolute path, got `{root}`"),
                );
            }
        }
        Workspace {
            allowed_roots: roots,
        }
    }

    fn polling(&mut self, value: Option<&Value>) -> Polling {
        let defaults = Polling::default();
        let Some(map) = self.mapping("polling", value) else {
            return defaults;
        };
        self.unknown_keys(
            "polling",
            &map,
            &["interval_idle_ms", "interval_active_ms", "backoff_max_ms"],
        );
        let polling = Polling {
            interval_idle_ms: self.positive(
                "polling.interval_idle_ms",
                Self::get(&map, "interval_idle_ms"),
                defaults.interval_idle_ms,
            ),
            interval_active_ms: self.positive(
                "polling.interval_active_ms",
                Self::get(&map, "interval_active_ms"),
                defaults.interval_active_ms,
            ),
            backoff_max_ms: self.positive(
                "polling.backoff_max_ms",
                Self::get(&map, "backoff_max_ms"),
                defaults.backoff_max_ms,
            ),
        };
        let longest = polling.interval_idle_ms.max(polling.interval_active_ms);
        if polling.backoff_max_ms < longest {
            self.error(
                "polling.backoff_max_ms",
                format!(
                    "must be at least the longest poll interval ({longest} ms), found {}",
                    polling.backoff_max_ms
                ),
            );
        }
        polling
    }

    fn concurrency(&mut self, value: Option<&Value>) -> Concurrency {
        let defaults = Concurrency::default();
        let Some(map) = self.mapping("concurrency", value) else {
            return defaults;
        };
        self.unknown_keys("concurrency", &map, &["max_agents", "held_waits_max"]);
        let max_agents =
            self.concurrency_count("concurrency.max_agents", &map, defaults.max_agents);
        let held_waits_max =
            self.concurrency_count("concurrency.held_waits_max", &map, defaults.held_waits_max);
        Concurrency {
            max_agents,
            held_waits_max,
        }
    }

    /// A positive count of `concurrency` that fits a u32.
    fn concurrency_count(&mut self, field: &str, map: &[(String, &Value)], default: u32) -> u32 {
        let key = field.rsplit('.').next().unwrap_or(field);
        let value = self.positive(field, Self::get(map, key), default.into());
        u32::try_from(value).unwrap_or_else(|_| {
            self.error(field, format!("must be at most {}", u32::MAX));
            default
        })
    }

    fn shutdown(&mut self, value: Option<&Value>) -> Shutdown {
        let defaults = Shutdown::default();
        let Some(map) = self.mapping("shutdown", value) else {
            return defaults;
        };
        self.unknown_keys("shutdown", &map, &["drain_timeout_ms"]);
        Shutdown {
            drain_timeout_ms: self.positive(
                "shutdown.drain_timeout_ms",
                Self::get(&map, "drain_timeout_ms"),
                defaults.drain_timeout_ms,
            ),
        }
    }

    fn agents(&mut self, value: Option<&Value>) -> BTreeMap<String, AgentSettings> {
        let mut agents = BTreeMap::new();
        let Some(map) = self.mapping("agents", value) else {
            return agents;
        };
        for (agent_type, value) in map {
            let path = child("agents", &agent_type);
            match agent_types::find(&agent_type) {
                None => self.warn(
                    &path,
                    format!(
                        "unknown agent type `{agent_type}` (known: {}); no job type will use it",
                        agent_types::names()
                    ),
                ),
                Some(known) if known.driver.is_none() => self.warn_coded(
                    "AGENT_TYPE_UNSUPPORTED",
                    &path,
                    format!(
                        "this worker build cannot drive `{agent_type}` (it drives {}); its threads fail with AGENT_TYPE_UNSUPPORTED",
                        agent_types::driven_names()
                    ),
                ),
                Some(_) => {}
            }
            let Some(fields) = self.mapping(&path, Some(value)) else {
                continue;
            };
            self.unknown_keys(&path, &fields, agent_types::SETTINGS);
            let effort = self.string(&child(&path, "effort"), Self::get(&fields, "effort"));
            if let Some(effort) = &effort
                && !PORTABLE_EFFORT.contains(&effort.as_str())
                && !effort
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                self.error(&child(&path, "effort"), format!("`{effort}` is neither low, medium, high nor a passthrough token ([A-Za-z0-9_.-])"));
            }
            let permissions = match self.string(
                &child(&path, "permissions"),
                Self::get(&fields, "permissions"),
            ) {
                None => Permissions::default(),
                Some(text) => Permissions::parse(&text).unwrap_or_else(|| {
                    self.error(
                        &child(&path, "permissions"),
                        format!(
                            "`{text}` is not one of {}",
                            Permissions::VOCABULARY.join(", ")
                        ),
                    );
                    Permissions::default()
                }),
            };
            let wait = self.string(&child(&path, "wait"), Self::get(&fields, "wait"));
            if let Some(w) = &wait
                && w != "held"
                && w != "parked"
            {
                self.error(
                    &child(&path, "wait"),
                    format!("`{w}` is not one of held, parked"),
                );
            }
            let prestart = match Self::get(&fields, "prestart") {
                None => true,
                Some(Value::Bool(b)) => *b,
                Some(other) => {
                    self.error(
                        &child(&path, "prestart"),
                        format!("expected true or false, found {}", type_name(other)),
                    );
                    true
                }
            };
            let settings = AgentSettings {
                wait,
                prestart,
                executable: self.string(
                    &child(&path, "executable"),
                    Self::get(&fields, "executable"),
                ),
                model: self.string(&child(&path, "model"), Self::get(&fields, "model")),
                effort,
                permissions,
                allowed_executables: self
                    .string_list(
                        &child(&path, "allowed_executables"),
                        Self::get(&fields, "allowed_executables"),
                    )
                    .unwrap_or_default(),
                env: self.agent_env(&child(&path, "env"), Self::get(&fields, "env")),
                turn_retries: self
                    .count(
                        &child(&path, "turn_retries"),
                        Self::get(&fields, "turn_retries"),
                    )
                    .unwrap_or(agent_types::DEFAULT_TURN_RETRIES),
                turn_retry_delays_ms: self
                    .delays(
                        &child(&path, "turn_retry_delays_ms"),
                        Self::get(&fields, "turn_retry_delays_ms"),
                    )
                    .unwrap_or_else(|| agent_types::DEFAULT_TURN_RETRY_DELAYS_MS.to_vec()),
                stall_timeout_s: self
                    .count(
                        &child(&path, "stall_timeout_s"),
                        Self::get(&fields, "stall_timeout_s"),
                    )
                    .unwrap_or(agent_types::DEFAULT_STALL_TIMEOUT_S),
            };
            agents.insert(agent_type, settings);
        }
        agents
    }

    /// `agents.<type>.env`: a mapping of variable names to strings. A name the worker keeps to
    /// itself (`BLOBHUB_*`) or that the operating system cannot carry is an error.
    fn agent_env(&mut self, path: &str, value: Option<&Value>) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        let Some(map) = self.mapping(path, value) else {
            return env;
        };
        for (name, value) in map {
            let at = child(path, &name);
            if name.starts_with("BLOBHUB_") {
                self.error(
                    &at,
                    "variables named BLOBHUB_* belong to the worker and never reach an agent",
                );
                continue;
            }
            if name.is_empty() || name.contains(['=', '\0']) {
                self.error(&at, "is not a valid environment variable name");
                continue;
            }
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    self.error(
                        &at,
                        format!("expected a string, found {}", type_name(other)),
                    );
                    continue;
                }
            };
            if text.contains('\0') {
                self.error(&at, "contains a NUL character");
                continue;
            }
            env.insert(name, text);
        }
        env
    }

    /// An integer ≥ 0, or `None` when absent or wrong (the error is recorded).
    fn count(&mut self, path: &str, value: Option<&Value>) -> Option<u32> {
        match value? {
            Value::Number(n) => match n.as_u64().and_then(|v| u32::try_from(v).ok()) {
                Some(v) => Some(v),
                None => {
                    self.error(path, format!("must be an integer of at least 0, found {n}"));
                    None
                }
            },
            other => {
                self.error(
                    path,
                    format!("expected an integer, found {}", type_name(other)),
                );
                None
            }
        }
    }

    /// A non-empty list of millisecond waits.
    fn delays(&mut self, path: &str, value: Option<&Value>) -> Option<Vec<u64>> {
        let Value::Sequence(items) = value? else {
            self.error(path, "expected a list of milliseconds, e.g. [15000, 60000]");
            return None;
        };
        if items.is_empty() {
            self.error(path, "must list at least one wait (the last one repeats)");
            return None;
        }
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.as_u64() {
                Some(ms) => out.push(ms),
                None => {
                    self.error(
                        &format!("{path}[{i}]"),
                        "expected an integer of milliseconds",
                    );
                    return None;
                }
            }
        }
        Some(out)
    }

    fn sections(&mut self, value: Option<&Value>) -> Vec<Section> {
        let items = match value {
            None => {
                self.error(
                    "sections",
                    "is required (a list of sections; see docs/configuration.md)",
                );
                return Vec::new();
            }
            Some(Value::Sequence(items)) => items,
            Some(other) => {
                self.error(
                    "sections",
                    format!("expected a list, found {}", type_name(other)),
                );
                return Vec::new();
            }
        };
        let mut sections = Vec::new();
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        for (index, item) in items.iter().enumerate() {
            let path = format!("sections[{index}]");
            let fields = match item {
                Value::Mapping(map) => self.entries(&path, map),
                other => {
                    self.error(
                        &path,
                        format!(
                            "expected a mapping with `job_type`, found {}",
                            type_name(other)
                        ),
                    );
                    continue;
                }
            };
            let name = self.string(&child(&path, "name"), Self::get(&fields, "name"));
            if let Some(name) = &name {
                if let Some(first) = names.get(name) {
                    self.error(
                        &child(&path, "name"),
                        format!("duplicates the name of sections[{first}]"),
                    );
                } else {
                    names.insert(name.clone(), index);
                }
            }
            let job_type = match Self::get(&fields, "job_type") {
                None => {
                    self.error(&child(&path, "job_type"), "is required");
                    None
                }
                value => self.string(&child(&path, "job_type"), value),
            };
            // Every other key belongs to the job type, which validates it at preflight.
            let mut settings = Map::new();
            for (key, value) in &fields {
                if key == "name" || key == "job_type" {
                    continue;
                }
                match serde_json::to_value(value) {
                    Ok(json) => {
                        settings.insert(key.clone(), json);
                    }
                    Err(e) => self.error(
                        &child(&path, key),
                        format!("cannot be represented as JSON: {e}"),
                    ),
                }
            }
            if let Some(job_type) = job_type {
                sections.push(Section {
                    index,
                    name,
                    job_type,
                    settings,
                    line: self.lines.line(&path),
                });
            }
        }
        sections
    }

    fn job_types(&mut self, value: Option<&Value>) -> BTreeMap<String, JobTypeSettings> {
        let mut job_types = BTreeMap::new();
        let Some(map) = self.mapping("job_types", value) else {
            return job_types;
        };
        for (job_type, value) in map {
            let path = child("job_types", &job_type);
            let Some(fields) = self.mapping(&path, Some(value)) else {
                continue;
            };
            self.unknown_keys(
                &path,
                &fields,
                &[
                    "allow_spawn",
                    "allow_env",
                    "component",
                    "memory_limit_mib",
                    "max_busy_ms",
                    "max_requests_in_flight",
                    "max_status_rows",
                    "max_log_lines_per_sec",
                    "state_quota_mib",
                ],
            );
            let allow_spawn = self.string_list(
                &child(&path, "allow_spawn"),
                Self::get(&fields, "allow_spawn"),
            );
            if let Some(programs) = &allow_spawn {
                let mut seen = BTreeSet::new();
                for (i, program) in programs.iter().enumerate() {
                    if !seen.insert(program) {
                        self.warn(
                            &format!("{path}.allow_spawn[{i}]"),
                            format!("`{program}` is listed twice"),
                        );
                    }
                }
            }
            let allow_env = self
                .string_list(&child(&path, "allow_env"), Self::get(&fields, "allow_env"))
                .unwrap_or_default();
            for (i, name) in allow_env.iter().enumerate() {
                let at = format!("{path}.allow_env[{i}]");
                if name.is_empty() || name.contains('=') || name.starts_with("BLOBHUB_") {
                    self.error(
                        &at,
                        format!("`{name}` is not a variable a job type may set"),
                    );
                } else if crate::runtime::child_env::is_loader_or_interpreter(name) {
                    self.warn(
                        &at,
                        format!(
                            "`{name}` is read by the loader, a shell or an interpreter: a job type never sets it (only values from your own environment or an agents.<type>.env block reach children)"
                        ),
                    );
                }
            }
            let component =
                self.string(&child(&path, "component"), Self::get(&fields, "component"));
            if let Some(file) = &component
                && (file.contains('/') || !file.ends_with(".wasm"))
            {
                self.error(
                    &child(&path, "component"),
                    format!("`{file}` must be the name of a .wasm file in the plugins folder"),
                );
            }
            let memory_limit_mib = self.positive(
                &child(&path, "memory_limit_mib"),
                Self::get(&fields, "memory_limit_mib"),
                JobTypeSettings::default().memory_limit_mib,
            );
            let max_busy_ms = self.positive(
                &child(&path, "max_busy_ms"),
                Self::get(&fields, "max_busy_ms"),
                JobTypeSettings::default().max_busy_ms,
            );
            let defaults = JobTypeSettings::default();
            let max_requests_in_flight = self.positive(
                &child(&path, "max_requests_in_flight"),
                Self::get(&fields, "max_requests_in_flight"),
                defaults.max_requests_in_flight,
            );
            let max_status_rows = self.positive(
                &child(&path, "max_status_rows"),
                Self::get(&fields, "max_status_rows"),
                defaults.max_status_rows,
            );
            let max_log_lines_per_sec = self.positive(
                &child(&path, "max_log_lines_per_sec"),
                Self::get(&fields, "max_log_lines_per_sec"),
                defaults.max_log_lines_per_sec,
            );
            let state_quota_mib = self.positive(
                &child(&path, "state_quota_mib"),
                Self::get(&fields, "state_quota_mib"),
                defaults.state_quota_mib,
            );
            job_types.insert(
                job_type,
                JobTypeSettings {
                    max_requests_in_flight,
                    max_status_rows,
                    max_log_lines_per_sec,
                    state_quota_mib,
                    allow_spawn,
                    allow_env,
                    component,
                    memory_limit_mib,
                    max_busy_ms,
                },
            );
        }
        job_types
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = "\
polling:
  interval_idle_ms: 1000
  interval_active_ms: 2000
  backoff_max_ms: 20000
concurrency:
  max_agents: 2
agents:
  claude_code:
    executable: claude
    model: claude-sonnet-4-6
    effort: high
    permissions: autonomous
    allowed_executables: [claude, /opt/claude/bin/claude]
  codex: {}
job_types:
  session_agent_harness:
    allow_spawn: [claude, codex]
    memory_limit_mib: 128
    max_busy_ms: 2000
sections:
  - name: backend-feature
    job_type: session_agent_harness
    session:
      org_id: org_1
      blob_id: blb_1
      revision_id: rev_1
      session_id: ses_1
";

    fn errors(report: &LoadReport) -> Vec<(String, Option<usize>)> {
        report.errors().map(|d| (d.path.clone(), d.line)).collect()
    }

    #[test]
    fn full_example_loads() {
        let report = load_str(FULL);
        // No remark: every agent type of the example has a driver.
        let remarks: Vec<_> = report
            .diagnostics
            .iter()
            .map(|d| (d.severity, d.code.as_str(), d.path.as_str()))
            .collect();
        assert!(remarks.is_empty(), "{remarks:?}");
        let config = report.config.unwrap();
        assert_eq!(config.polling.interval_idle_ms, 1000);
        assert_eq!(config.concurrency.max_agents, 2);
        let claude = config.agent("claude_code");
        assert_eq!(claude.permissions, Permissions::Autonomous);
        assert_eq!(claude.allowed_executables.len(), 2);
        assert_eq!(
            config.agent("codex").executable_for("codex").as_deref(),
            Some("codex")
        );
        assert_eq!(config.agent("codex").permissions, Permissions::Approval);
        let section = &config.sections[0];
        assert_eq!(section.name.as_deref(), Some("backend-feature"));
        assert_eq!(section.job_type, "session_agent_harness");
        assert_eq!(section.settings["session"]["org_id"], "org_1");
        assert_eq!(section.line, Some(21));
        let grants = config.job_type("session_agent_harness");
        assert_eq!(grants.memory_limit_mib, 128);
        assert_eq!(grants.max_busy_ms, 2000);
        assert_eq!(grants.allow_spawn.unwrap(), ["claude", "codex"]);
        assert_eq!(config.job_type("other").memory_limit_mib, 256);
        assert_eq!(config.retry_policy().cap.as_millis(), 20000);
    }

    #[test]
    fn attachments_inbox_is_relative_and_inside() {
        let config = load_str("sections: []\n").config.unwrap();
        assert_eq!(config.attachments.inbox, ".blobhub/inbox");
        let report = load_str("attachments:\n  inbox: docs/in\nsections: []\n");
        assert!(report.diagnostics.is_empty(), "{:?}", report.diagnostics);
        let config = report.config.unwrap();
        let wc = crate::runtime::settings::RuntimeSettings::from(&config).worker_config;
        assert_eq!(wc["attachments"]["inbox"], "docs/in");
        for bad in ["/tmp/in", "../in", "a/../../in", ".", "./"] {
            let report = load_str(&format!("attachments:\n  inbox: \"{bad}\"\nsections: []\n"));
            assert_eq!(
                report.errors().map(|d| d.path.as_str()).collect::<Vec<_>>(),
                ["attachments.inbox"],
                "{bad}"
            );
        }
    }

    #[test]
    fn policy_block_is_typed_and_checked() {
        let report = load_str(
            "policy:\n  allow_autonomous: false\n  rules:\n    - {id: no-push, effect: exec, action: deny, command: [\"git push*\"]}\n    - {effect: write, outside: work_folder, action: deny}\nagents:\n  codex: {permissions: guarded}\n  claude_code: {wait: parked}\nsections: []\n",
        );
        assert!(report.diagnostics.is_empty(), "{:?}", report.diagnostics);
        let config = report.config.unwrap();
        assert!(!config.policy.allow_autonomous);
        assert_eq!(config.agent("codex").permissions, Permissions::Guarded);
        assert_eq!(config.agent("codex").wait, None);
        assert_eq!(config.agent("claude_code").wait.as_deref(), Some("parked"));
        let report = load_str("agents:\n  codex: {wait: later}\nsections: []\n");
        assert_eq!(
            report.errors().map(|d| d.path.as_str()).collect::<Vec<_>>(),
            ["agents.codex.wait"]
        );
        let ids: Vec<_> = config
            .policy
            .rules
            .iter()
            .map(|r| (r.id.as_str(), r.action.as_str()))
            .collect();
        assert_eq!(ids, [("no-push", "deny"), ("rule-2", "deny")]);
        // worker-config carries the block, defaults filled in.
        let wc = crate::runtime::settings::RuntimeSettings::from(&config).worker_config;
        assert_eq!(wc["policy"]["allow_autonomous"], false);
        assert_eq!(wc["policy"]["rules"][0]["command"][0], "git push*");
        let wc = crate::runtime::settings::RuntimeSettings::defaults().worker_config;
        assert_eq!(
            wc["policy"],
            serde_json::json!({"allow_autonomous": true, "rules": []})
        );

        let report = load_str(
            "policy:\n  allow_autonomous: \"no\"\n  rules:\n    - {id: a, effect: shell}\n    - {id: b, effect: exec, outside: work_folder}\n    - {id: c, effect: write, action: allow, outside: outbox}\n    - {id: d, effect: exec, commands: [x]}\n    - {id: e, effect: write, command: [x]}\n    - {id: f}\n    - {id: a, effect: read}\nsections: []\n",
        );
        let errors: Vec<_> = report.errors().map(|d| d.path.as_str()).collect();
        assert_eq!(
            errors,
            [
                "policy.allow_autonomous",
                "policy.rules[0]",
                "policy.rules[1]",
                "policy.rules[2]",
                "policy.rules[3].commands",
                "policy.rules[4]",
                "policy.rules[5].effect",
                "policy.rules[6].id",
            ]
        );
        assert!(report.errors().all(|d| d.code == "INVALID_CONFIG"));
    }

    #[test]
    fn defaults_apply_to_a_minimal_file() {
        let report = load_str("sections: []\n");
        let config = report.config.unwrap();
        assert_eq!(config.polling, Polling::default());
        assert_eq!(config.concurrency.max_agents, 4);
        assert_eq!(config.concurrency.held_waits_max, 8);
        assert!(config.sections.is_empty());
    }

    #[test]
    fn held_waits_max_is_a_positive_count() {
        let config = load_str("concurrency:\n  held_waits_max: 1\nsections: []\n")
            .config
            .unwrap();
        assert_eq!(config.concurrency.held_waits_max, 1);
        assert_eq!(config.concurrency.max_agents, 4);
        let report = load_str("concurrency:\n  held_waits_max: 0\nsections: []\n");
        assert!(report.config.is_none());
        assert_eq!(
            errors(&report),
            vec![("concurrency.held_waits_max".to_owned(), Some(2))]
        );
    }

    #[test]
    fn every_error_is_reported_at_once_with_path_and_line() {
        let text = "\
polling:
  interval_idle_ms: 0
  backoff_max_ms: 1000
concurrency:
  max_agents: 0
agents:
  claude_code:
    permissions: yolo
    effort: \"very high\"
sections:
  - name: a
    job_type: session_agent_harness
  - name: a
  - 42
";
        let report = load_str(text);
        assert!(report.config.is_none());
        assert_eq!(
            errors(&report),
            vec![
                ("polling.interval_idle_ms".to_owned(), Some(2)),
                ("polling.backoff_max_ms".to_owned(), Some(3)),
                ("concurrency.max_agents".to_owned(), Some(5)),
                ("agents.claude_code.effort".to_owned(), Some(9)),
                ("agents.claude_code.permissions".to_owned(), Some(8)),
                ("sections[1].name".to_owned(), Some(13)),
                ("sections[1].job_type".to_owned(), Some(13)),
                ("sections[2]".to_owned(), Some(14)),
            ]
        );
    }

    #[test]
    fn unknown_keys_warn_with_path_and_line() {
        let text = "\
pollin:
  interval_idle_ms: 5
concurrency:
  max_agent: 3
sections:
  - job_type: session_agent_harness
    whatever: 1
";
        let report = load_str(text);
        let warnings: Vec<_> = report
            .warnings()
            .map(|d| (d.path.as_str(), d.line))
            .collect();
        assert_eq!(
            warnings,
            vec![("pollin", Some(1)), ("concurrency.max_agent", Some(4))]
        );
        // Keys under a section belong to its job type, not to us.
        let config = report.config.unwrap();
        assert_eq!(config.sections[0].settings["whatever"], 1);
    }

    #[test]
    fn missing_sections_and_bad_yaml_are_errors() {
        assert_eq!(
            errors(&load_str("polling: {}\n")),
            vec![("sections".to_owned(), None)]
        );
        let report = load_str("sections:\n  - job_type: [\n");
        let errs: Vec<_> = report.errors().collect();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].line.is_some());
        assert!(errors(&load_str("")).len() == 1);
        assert_eq!(
            errors(&load_str("sections: 3\n")),
            vec![("sections".to_owned(), Some(1))]
        );
    }

    #[test]
    fn type_errors_name_the_expected_type() {
        let report = load_str("polling: {interval_idle_ms: fast}\nsections: []\n");
        let err = report.errors().next().unwrap();
        assert_eq!(err.path, "polling.interval_idle_ms");
        assert!(
            err.message.contains("expected an integer"),
            "{}",
            err.message
        );
        assert_eq!(
            err.to_string(),
            format!("line 1: polling.interval_idle_ms: {}", err.message)
        );
    }

    #[test]
    fn agent_env_and_turn_retries() {
        let report = load_str(
            "agents:\n  claude_code:\n    env: {ANTHROPIC_BASE_URL: http://127.0.0.1:9, DEBUG: 1}\n    turn_retries: 0\n    turn_retry_delays_ms: [10, 20]\n  test_double: {}\nsections: []\n",
        );
        assert_eq!(report.diagnostics, []);
        let config = report.config.unwrap();
        let claude = config.agent("claude_code");
        assert_eq!(claude.env["ANTHROPIC_BASE_URL"], "http://127.0.0.1:9");
        assert_eq!(claude.env["DEBUG"], "1");
        assert_eq!(claude.turn_retries, 0);
        assert_eq!(claude.turn_retry_delays_ms, [10, 20]);
        let test = config.agent("test_double");
        assert_eq!(test.turn_retries, agent_types::DEFAULT_TURN_RETRIES);
        assert_eq!(test.stall_timeout_s, agent_types::DEFAULT_STALL_TIMEOUT_S);
        assert_eq!(
            test.executable_for("test_double").as_deref(),
            Some("blobhub-test-agent")
        );
    }

    #[test]
    fn agent_prestart_defaults_to_true_and_takes_a_boolean() {
        let report = load_str(
            "agents:\n  claude_code:\n    prestart: false\n  test_double: {}\nsections: []\n",
        );
        assert_eq!(report.diagnostics, []);
        let config = report.config.unwrap();
        assert!(!config.agent("claude_code").prestart);
        assert!(config.agent("test_double").prestart);
        let report = load_str("agents:\n  claude_code:\n    prestart: sometimes\nsections: []\n");
        assert!(
            report
                .diagnostics
                .iter()
                .any(|d| d.path == "agents.claude_code.prestart"),
            "{:?}",
            report.diagnostics
        );
    }

    #[test]
    fn the_worker_key_never_reaches_an_agent_environment() {
        let report = load_str(
            "agents:\n  claude_code:\n    env: {BLOBHUB_API_KEY: x, \"A=B\": y, OK: [1]}\n    turn_retries: -1\n    turn_retry_delays_ms: []\nsections: []\n",
        );
        let paths: Vec<_> = errors(&report).into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            paths,
            [
                "agents.claude_code.env.BLOBHUB_API_KEY",
                "agents.claude_code.env.A=B",
                "agents.claude_code.env.OK",
                "agents.claude_code.turn_retries",
                "agents.claude_code.turn_retry_delays_ms",
            ]
        );
    }
}
