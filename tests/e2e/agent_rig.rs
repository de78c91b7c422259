//! What the `claude_code` and `codex` end-to-end tests share: finding the real CLI, a worker wired
//! to the emulator and a fake model API with an agents block, and the thread-level waits and reads
//! those tests make. Each agent's module adds its CLI's configuration and its fake's reading of a
//! model request.

use std::path::{Path, PathBuf};

use blobhub_emulator::SessionIds;
use blobhub_fake_http::{Api, Fake, RecordedRequest};
use serde_json::{Value, json};

use crate::harness_support::{Env, PATIENCE, assert_no_duplicate_posts, pids_running};
use crate::support::Running;

/// The real CLI `name` (through `var`, else tests/agents/node_modules/.bin), or `None` (with a
/// note) when it is not installed outside CI. Under CI (`CI` set) a missing CLI fails the test,
/// since `.ci/run` installs it.
pub fn cli(var: &str, name: &str) -> Option<PathBuf> {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/agents/node_modules/.bin")
            .join(name)
    });
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "the {name} CLI is missing at {} (run: npm ci --prefix tests/agents)",
        path.display()
    );
    eprintln!(
        "skipped: no {name} CLI at {} (npm ci --prefix tests/agents)",
        path.display()
    );
    None
}

/// A worker wired to the emulator and a fake model API, with an agents block for one agent type.
pub struct AgentRig<A: Api> {
    pub env: Env,
    pub fake: Fake<A>,
    pub s: SessionIds,
    /// The thread's `agent.type` (`claude_code`, `codex`).
    agent_type: &'static str,
    /// The CLI's program name, to find its processes.
    program: &'static str,
    /// The CLI's own folder (config, transcripts), kept for the rig's life.
    _cli_home: tempfile::TempDir,
    /// The `agents:` entries the worker is configured with.
    agents_block: String,
}

impl<A: Api> AgentRig<A> {
    /// Configures session `session` with `agents_block` (the `agents:` entries, indented by two).
    pub fn new(
        env: Env,
        fake: Fake<A>,
        session: &str,
        (agent_type, program): (&'static str, &'static str),
        cli_home: tempfile::TempDir,
        agents_block: &str,
    ) -> AgentRig<A> {
        let s = env.session(session);
        env.configure(&[&s], 4, agents_block);
        AgentRig {
            env,
            fake,
            s,
            agent_type,
            program,
            _cli_home: cli_home,
            agents_block: agents_block.to_owned(),
        }
    }

    /// With one agent slot, thread `a`'s agent asks for approval of `tool_message`'s command
    /// (which writes `file` in the work folder) and waits; thread `b` is answered meanwhile
    /// (`reply`); then the approval runs the command in `a` (`tool_seen` in its answer).
    pub async fn lends_its_slot_while_waiting(
        &self,
        tool_message: &str,
        file: &str,
        reply: &str,
        tool_seen: &str,
    ) {
        self.set_max_agents(1);
        let worker = self.env.start().await;
        let work = self.env.work_folder().to_path_buf();
        for alias in ["a", "b"] {
            self.handoff(alias);
            self.active(alias).await;
        }
        self.env.say(&self.s, "a", tool_message);
        self.wait_count("a", "pending_prompt", 1).await;
        self.env.say(&self.s, "b", "hello");
        self.wait_text("b", reply).await;
        self.wait_count("b", "turn_end", 1).await;
        assert_eq!(
            self.count("a", "turn_end"),
            0,
            "a still waits for its answer"
        );
        assert!(!work.join(file).exists());
        self.env.say(&self.s, "a", "approve");
        self.wait_text("a", tool_seen).await;
        self.wait_count("a", "turn_end", 1).await;
        assert!(work.join(file).exists(), "the approved command ran");
        assert_eq!(self.count("a", "pending_prompt"), 1, "asked once");
        for alias in ["a", "b"] {
            assert_no_duplicate_posts(&self.env, &self.s, alias);
        }
        worker.terminate().await;
    }

    /// Configure `concurrency.max_agents` (4 unless this is called before the start).
    pub fn set_max_agents(&self, max_agents: u32) {
        self.env
            .configure(&[&self.s], max_agents, &self.agents_block);
    }

    /// A worker started on the rig and thread `t` handed off and active.
    pub async fn start(&self) -> Running {
        let worker = self.env.start().await;
        self.handoff("t");
        self.active("t").await;
        worker
    }

    pub fn handoff(&self, alias: &str) {
        self.env
            .set_envelope(&self.s, alias, self.envelope("pending"));
    }

    pub fn envelope(&self, state: &str) -> Value {
        json!({"type": "thread", "thread": {"attributes": {"name": "task"}, "metadata": {
            "instance": {"state": state},
            "agent": {"type": self.agent_type},
            "workspace": {"work_folder": self.env.work_folder().to_str().unwrap()}}}})
    }

    pub async fn active(&self, alias: &str) {
        self.env
            .wait("active", |e| e.state(&self.s, alias) == "active")
            .await;
    }

    pub fn items(&self, alias: &str) -> Vec<Value> {
        self.env.items(&self.s, alias)
    }

    /// The worker's items of the thread (the person's messages left out).
    pub fn agent_items(&self, alias: &str) -> Vec<Value> {
        self.items(alias)
            .into_iter()
            .filter(|i| i.pointer("/metadata/post_id").is_some())
            .collect()
    }

    pub fn of_type(&self, alias: &str, ty: &str) -> Vec<Value> {
        self.items(alias)
            .into_iter()
            .filter(|i| meta(i, "/metadata/type") == ty)
            .collect()
    }

    /// The first item of type `ty` on the thread.
    pub fn first(&self, alias: &str, ty: &str) -> Value {
        self.of_type(alias, ty)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no {ty} item"))
    }

    pub fn count(&self, alias: &str, ty: &str) -> usize {
        self.of_type(alias, ty).len()
    }

    pub async fn wait_count(&self, alias: &str, ty: &str, n: usize) {
        self.env
            .wait(&format!("{n} {ty} item(s)"), |_| self.count(alias, ty) >= n)
            .await;
    }

    pub async fn wait_text(&self, alias: &str, needle: &str) -> Value {
        let found = |r: &AgentRig<A>| {
            r.of_type(alias, "text").into_iter().find(|i| {
                i.pointer("/content/0/text")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.contains(needle))
            })
        };
        self.env
            .wait(&format!("a text item with {needle:?}"), |_| {
                found(self).is_some()
            })
            .await;
        found(self).unwrap()
    }

    /// The CLI's processes running in the work folder.
    pub fn cli_pids(&self) -> Vec<u32> {
        pids_running(self.program, self.env.work_folder())
    }

    /// Waits until the fake has been asked with `prompt`, as `prompt_of` reads a model request.
    pub async fn wait_for_prompt(
        &self,
        prompt: &str,
        prompt_of: impl Fn(&RecordedRequest) -> Option<String>,
    ) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let n = self.fake.requests().len();
            if self
                .fake
                .model_calls()
                .iter()
                .any(|r| prompt_of(r).as_deref() == Some(prompt))
            {
                return;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(!left.is_zero(), "the model was never asked {prompt:?}");
            let _ = self.fake.wait_for_requests(n + 1, left).await;
        }
    }
}

/// Every string under `keys` of `v`, one per line: what a model request showed the model.
pub fn strings_under(v: &Value, keys: &[&str], out: &mut String) {
    match v {
        Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Value::Array(items) => items.iter().for_each(|i| strings_under(i, keys, out)),
        Value::Object(o) => {
            for key in keys {
                if let Some(inner) = o.get(*key) {
                    strings_under(inner, keys, out);
                }
            }
        }
        _ => {}
    }
}

pub fn meta<'a>(item: &'a Value, pointer: &str) -> &'a Value {
    item.pointer(pointer).unwrap_or(&Value::Null)
}
