//! The parts of config.yaml the runtime reads, derived from the validated [`Config`] (which
//! holds every default, docs/configuration.md): nothing here re-reads the file or repeats a
//! default.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use crate::config::{self, Config, JobTypeSettings};

/// `polling`, as durations.
#[derive(Debug, Clone)]
pub struct Polling {
    pub interval_idle: Duration,
    pub interval_active: Duration,
    pub backoff_max: Duration,
}

impl From<&config::Polling> for Polling {
    fn from(p: &config::Polling) -> Self {
        Polling {
            interval_idle: p.interval_idle(),
            interval_active: p.interval_active(),
            backoff_max: p.backoff_max(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    pub polling: Polling,
    pub max_agents: u32,
    /// `concurrency.held_waits_max`.
    pub held_waits_max: u32,
    /// `shutdown.drain_timeout_ms`: how long sections get to return after a stop.
    pub drain_timeout: Duration,
    /// Programs granted by the `agents` capability: every `agents.<type>.executable` (or the
    /// type's default) and `allowed_executables`.
    pub agent_programs: Vec<String>,
    /// Every `name: value` of the `agents.<type>.env` blocks: a job type holding the `agents`
    /// grant may pass exactly these on to an agent's process.
    pub agent_env_pairs: BTreeSet<(String, String)>,
    /// `job_types.<name>`: operator grants and limits.
    pub job_types: BTreeMap<String, JobTypeSettings>,
    /// config.yaml's `sections`.
    pub sections: Vec<config::Section>,
    /// The worker-wide blocks handed to guests as `worker-config`: the config as JSON, defaults
    /// filled in, `sections` removed.
    pub worker_config: Value,
    /// `workspace.allowed_roots`, or the user's home folder: where programs may be started.
    pub work_roots: Vec<std::path::PathBuf>,
}

impl From<&Config> for RuntimeSettings {
    fn from(config: &Config) -> RuntimeSettings {
        // claude and codex exist by default; other agent types only when configured.
        let mut types: Vec<&str> = vec!["claude_code", "codex"];
        for name in config.agents.keys() {
            if !types.contains(&name.as_str()) {
                types.push(name);
            }
        }
        let mut agent_programs = Vec::new();
        let mut agent_env_pairs = BTreeSet::new();
        for agent_type in types {
            let agent = config.agent(agent_type);
            agent_env_pairs.extend(agent.env.clone());
            agent_programs.extend(agent.executable_for(agent_type));
            agent_programs.extend(agent.allowed_executables);
        }
        agent_programs.sort();
        agent_programs.dedup();

        let mut worker_config = serde_json::to_value(config).unwrap_or(Value::Null);
        if let Some(map) = worker_config.as_object_mut() {
            map.remove("sections");
        }
        RuntimeSettings {
            polling: Polling::from(&config.polling),
            max_agents: config.concurrency.max_agents,
            held_waits_max: config.concurrency.held_waits_max,
            drain_timeout: config.shutdown.drain_timeout(),
            agent_programs,
            agent_env_pairs,
            job_types: config.job_types.clone(),
            sections: config.sections.clone(),
            worker_config,
            work_roots: if config.workspace.allowed_roots.is_empty() {
                std::env::var_os("HOME")
                    .filter(|h| !h.is_empty())
                    .map(std::path::PathBuf::from)
                    .into_iter()
                    .collect()
            } else {
                config
                    .workspace
                    .allowed_roots
                    .iter()
                    .map(std::path::PathBuf::from)
                    .collect()
            },
        }
    }
}

impl RuntimeSettings {
    /// The settings of a config with no sections and every default (describe, validate).
    pub fn defaults() -> RuntimeSettings {
        RuntimeSettings::from(&Config::default())
    }

    /// The grants of `name`, or the defaults when config.yaml has no `job_types.<name>`.
    pub fn job_type(&self, name: &str) -> JobTypeSettings {
        self.job_types.get(name).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(value: Value) -> Config {
        Config::try_from(value).unwrap()
    }

    #[test]
    fn defaults_and_grants() {
        let s = RuntimeSettings::from(&config(json!({
            "agents": {"test_double": {"executable": "blobhub-test-agent"},
                       "codex": {"allowed_executables": ["node"]}},
            "job_types": {"x": {"allow_spawn": ["git"], "memory_limit_mib": 64}},
            "sections": [{"job_type": "x"}],
        })));
        assert_eq!(
            s.agent_programs,
            ["blobhub-test-agent", "claude", "codex", "node"]
        );
        assert_eq!(s.job_type("x").allow_spawn, Some(vec!["git".to_owned()]));
        assert_eq!(s.job_type("x").memory_limit_mib, 64);
        assert_eq!(
            s.job_type("y").memory_limit_mib,
            JobTypeSettings::default().memory_limit_mib
        );
        assert_eq!(s.polling.interval_idle, Duration::from_millis(1500));
        assert_eq!(s.max_agents, 4);
        assert!(s.worker_config.get("sections").is_none());
        assert_eq!(s.worker_config["polling"]["interval_active_ms"], 3000);
        assert_eq!(s.sections.len(), 1);
    }

    /// Keys the harness reads that the host's config does not have yet. Each must still be
    /// missing (the test says so when the host gains it, so the entry is removed then).
    const KNOWN_GAPS: &[&str] = &[];

    /// `worker-config` is JSON whose schema is the host's `Config`: every key the bundled harness
    /// reads (its `worker_config::READS`) must be in what the host hands it, or the harness would
    /// read a key the host drops as unknown.
    #[test]
    fn every_worker_config_key_the_harness_reads_is_the_host_s() {
        let source = include_str!("../../../plugins/session-agent-harness/src/worker_config.rs");
        let list = source
            .split("pub const READS: &[&str] = &[")
            .nth(1)
            .and_then(|rest| rest.split("];").next())
            .expect("READS in the harness");
        let reads: Vec<&str> = list.split('"').skip(1).step_by(2).collect();
        assert!(reads.len() >= 10, "{reads:?}");
        let settings = RuntimeSettings::from(&config(json!({
            "agents": {"claude_code": {}},
            "sections": [],
        })));
        for key in reads {
            let pointer = key.replace("<type>", "claude_code");
            let known = settings.worker_config.pointer(&pointer).is_some();
            if KNOWN_GAPS.contains(&key) {
                assert!(
                    !known,
                    "{key} is now in worker-config: remove it from KNOWN_GAPS"
                );
            } else {
                assert!(
                    known,
                    "the harness reads {key}, which the host's worker-config lacks: {}",
                    settings.worker_config
                );
            }
        }
    }
}
