//! The parts of config.yaml the runtime reads, taken from the config as a JSON document so that
//! the runtime does not depend on the exact shape of the CLI's typed config.
//!
//! Defaults (docs/job-types.md): `polling.interval_idle_ms` 1500, `polling.interval_active_ms`
//! 3000, `polling.backoff_max_ms` 30000, `concurrency.max_agents` 4,
//! `job_types.<name>.memory_limit_mib` 256, `job_types.<name>.max_busy_ms` 5000.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

/// Default cap on one section's linear memory.
pub const DEFAULT_MEMORY_LIMIT_MIB: u64 = 256;
/// Default time a guest may compute without returning to the host before it is stopped.
pub const DEFAULT_MAX_BUSY_MS: u64 = 5000;

#[derive(Debug, Clone)]
pub struct Polling {
    pub interval_idle: Duration,
    pub interval_active: Duration,
    pub backoff_max: Duration,
}

/// Operator grants and limits for one job type (`job_types.<name>`).
#[derive(Debug, Clone)]
pub struct JobTypeSettings {
    pub allow_spawn: Vec<String>,
    pub memory_limit_mib: u64,
    pub max_busy_ms: u64,
}

impl Default for JobTypeSettings {
    fn default() -> Self {
        JobTypeSettings {
            allow_spawn: Vec::new(),
            memory_limit_mib: DEFAULT_MEMORY_LIMIT_MIB,
            max_busy_ms: DEFAULT_MAX_BUSY_MS,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    pub polling: Polling,
    pub max_agents: u32,
    /// Programs granted by the `agents` capability: every `agents.<type>.executable` and
    /// `allowed_executables`.
    pub agent_programs: Vec<String>,
    pub job_types: BTreeMap<String, JobTypeSettings>,
    /// config.yaml's `sections`, each as written.
    pub sections: Vec<Value>,
    /// The worker-wide blocks handed to guests (`sections` removed).
    pub worker_config: Value,
}

fn u64_at(config: &Value, pointer: &str, default: u64) -> u64 {
    config
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or(default)
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

impl RuntimeSettings {
    /// Reads the runtime's settings from config.yaml as JSON (missing blocks take defaults).
    pub fn from_config(config: &Value) -> RuntimeSettings {
        let polling = Polling {
            interval_idle: Duration::from_millis(u64_at(config, "/polling/interval_idle_ms", 1500)),
            interval_active: Duration::from_millis(u64_at(
                config,
                "/polling/interval_active_ms",
                3000,
            )),
            backoff_max: Duration::from_millis(u64_at(config, "/polling/backoff_max_ms", 30000)),
        };
        let max_agents = u32::try_from(u64_at(config, "/concurrency/max_agents", 4)).unwrap_or(4);

        let mut agent_programs = Vec::new();
        let agents = config.get("agents").and_then(Value::as_object);
        // claude and codex exist by default; the scripted test agent only when configured.
        let mut types: Vec<String> = vec!["claude_code".into(), "codex".into()];
        if let Some(agents) = agents {
            for name in agents.keys() {
                if !types.contains(name) {
                    types.push(name.clone());
                }
            }
        }
        for agent in &types {
            let block = agents.and_then(|a| a.get(agent));
            let default = match agent.as_str() {
                "claude_code" | "claude" => Some("claude"),
                "codex" => Some("codex"),
                _ => None,
            };
            let executable = block
                .and_then(|b| b.get("executable"))
                .and_then(Value::as_str)
                .or(default);
            if let Some(exe) = executable {
                agent_programs.push(exe.to_owned());
            }
            agent_programs.extend(strings(block.and_then(|b| b.get("allowed_executables"))));
        }
        agent_programs.sort();
        agent_programs.dedup();

        let mut job_types = BTreeMap::new();
        if let Some(blocks) = config.get("job_types").and_then(Value::as_object) {
            for (name, block) in blocks {
                job_types.insert(
                    name.clone(),
                    JobTypeSettings {
                        allow_spawn: strings(block.get("allow_spawn")),
                        memory_limit_mib: u64_at(
                            block,
                            "/memory_limit_mib",
                            DEFAULT_MEMORY_LIMIT_MIB,
                        ),
                        max_busy_ms: u64_at(block, "/max_busy_ms", DEFAULT_MAX_BUSY_MS),
                    },
                );
            }
        }

        let sections = config
            .get("sections")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut worker_config = config.clone();
        if let Some(map) = worker_config.as_object_mut() {
            map.remove("sections");
            map.remove("credentials");
            map.remove("api");
        }
        RuntimeSettings {
            polling,
            max_agents,
            agent_programs,
            job_types,
            sections,
            worker_config,
        }
    }

    pub fn job_type(&self, name: &str) -> JobTypeSettings {
        self.job_types.get(name).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_grants() {
        let s = RuntimeSettings::from_config(&json!({
            "agents": {"test_double": {"executable": "blobhub-test-agent"},
                       "codex": {"allowed_executables": ["node"]}},
            "job_types": {"x": {"allow_spawn": ["git"], "memory_limit_mib": 64}},
            "sections": [{"job_type": "x"}],
        }));
        assert_eq!(
            s.agent_programs,
            ["blobhub-test-agent", "claude", "codex", "node"]
        );
        assert_eq!(s.job_type("x").allow_spawn, ["git"]);
        assert_eq!(s.job_type("x").memory_limit_mib, 64);
        assert_eq!(s.job_type("y").memory_limit_mib, DEFAULT_MEMORY_LIMIT_MIB);
        assert_eq!(s.polling.interval_idle, Duration::from_millis(1500));
        assert!(s.worker_config.get("sections").is_none());
    }
}
