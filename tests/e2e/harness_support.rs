//! Helpers of the session_agent_harness end-to-end tests: a worker home wired to an in-process
//! emulator, sessions, hand-offs, a person's messages, and waits on the emulator's state (through
//! its change notification, never fixed sleeps).

#![allow(dead_code, reason = "each harness test uses a subset")]

use std::path::{Path, PathBuf};
use std::time::Duration;

use blobhub_emulator::{Admin, CreateSession, Emulator, EmulatorConfig, SessionIds, User};
use serde_json::{Value, json};

use crate::support::{Home, Running, demo_user};

pub const TEST_AGENT: &str = env!("CARGO_BIN_EXE_blobhub-test-agent");
/// How long any single condition may take before a test fails.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A person, distinct from the worker's user.
pub fn alice() -> User {
    User {
        id: "usr_alice".into(),
        name: "Alice".into(),
        email: "alice@example.com".into(),
        api_key: "bhk_alice".into(),
    }
}

pub struct Env {
    pub emu: Emulator,
    pub admin: Admin,
    pub home: Home,
    pub work: tempfile::TempDir,
}

impl Env {
    /// An emulator knowing the worker's user (demo) and alice; a home logged in as demo.
    pub async fn new() -> Env {
        let emu = Emulator::start(EmulatorConfig {
            users: vec![demo_user(), alice()],
            state_file: None,
        })
        .await
        .expect("emulator starts");
        let home = Home::new();
        home.logged_in(&emu);
        Env {
            admin: emu.admin(),
            emu,
            home,
            work: tempfile::tempdir().unwrap(),
        }
    }

    pub fn session(&self, id: &str) -> SessionIds {
        self.admin
            .create_session(CreateSession {
                org_id: Some("org_1".into()),
                blob_id: Some("blb_1".into()),
                revision_id: Some("rev_1".into()),
                session_id: Some(id.into()),
                alias: None,
            })
            .expect("session created")
    }

    pub fn work_folder(&self) -> &Path {
        self.work.path()
    }

    /// config.yaml with one section per session and the test agent configured.
    pub fn configure(&self, sessions: &[&SessionIds], max_agents: u32, extra: &str) {
        let mut text = format!(
            "polling:\n  interval_idle_ms: 100\n  interval_active_ms: 50\n  backoff_max_ms: 1000\n\
             concurrency:\n  max_agents: {max_agents}\n\
             agents:\n  test_double:\n    executable: {TEST_AGENT}\n{extra}\
             workspace:\n  allowed_roots: [{}]\nsections:\n",
            std::env::temp_dir().display()
        );
        for (i, s) in sessions.iter().enumerate() {
            text.push_str(&format!(
                "  - name: s{i}\n    job_type: session_agent_harness\n    session: {{org_id: {}, blob_id: {}, revision_id: {}, session_id: {}}}\n",
                s.org_id, s.blob_id, s.revision_id, s.session_id
            ));
        }
        self.home.write_config(&text);
    }

    pub async fn start(&self) -> Running {
        match self.home.spawn_start().await {
            Ok(r) => r,
            Err(o) => panic!("worker did not start: {o:?}"),
        }
    }

    /// A pending envelope for the test agent.
    pub fn handoff(&self, s: &SessionIds, alias: &str) {
        self.set_envelope(s, alias, envelope("pending", self.work_folder()));
    }

    pub fn set_envelope(&self, s: &SessionIds, alias: &str, value: Value) {
        self.admin
            .upload_object(&s.session_id, alias, value, &alice().id)
            .expect("upload");
    }

    pub fn set_state(&self, s: &SessionIds, alias: &str, state: &str) {
        self.set_envelope(s, alias, envelope(state, self.work_folder()));
    }

    /// A person posts `text` on a thread (as `user`).
    pub fn say_as(&self, s: &SessionIds, alias: &str, text: &str, user: &str) -> String {
        let item = self
            .admin
            .post_item(
                &s.session_id,
                alias,
                json!([{"type": "text", "text": text}]),
                None,
                user,
            )
            .expect("post");
        item["id"].as_str().unwrap().to_string()
    }

    pub fn say(&self, s: &SessionIds, alias: &str, text: &str) -> String {
        self.say_as(s, alias, text, &alice().id)
    }

    pub fn items(&self, s: &SessionIds, alias: &str) -> Vec<Value> {
        self.admin.items(&s.session_id, alias)
    }

    /// `(metadata.type, content[0].text)` of every item of a thread.
    pub fn transcript(&self, s: &SessionIds, alias: &str) -> Vec<(String, String)> {
        self.items(s, alias).iter().map(brief).collect()
    }

    pub fn state(&self, s: &SessionIds, alias: &str) -> String {
        self.admin
            .object(&s.session_id, alias)
            .and_then(|v| {
                v.pointer("/thread/metadata/instance/state")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_default()
    }

    /// Waits until the section of `s` has said it attached.
    pub async fn wait_attached(&self, s: &SessionIds) {
        self.wait("attached", |e| {
            e.activity(s).iter().any(|a| a == "attached")
        })
        .await;
    }

    /// A person says `text` and the test agent answers `echo: <text>`.
    pub async fn exchange(&self, s: &SessionIds, alias: &str, text: &str) {
        self.say(s, alias, text);
        let echo = format!("echo: {text}");
        self.wait(&format!("{alias} answering {text:?}"), |e| {
            e.has(s, alias, "text", &echo)
        })
        .await;
    }

    /// Waits until the thread's envelope says `state`.
    pub async fn wait_state(&self, s: &SessionIds, alias: &str, state: &str) {
        self.wait(&format!("{alias} {state}"), |e| e.state(s, alias) == state)
            .await;
    }

    /// Waits until `pred` holds, failing the test with `what` and the transcripts otherwise.
    pub async fn wait(&self, what: &str, mut pred: impl FnMut(&Env) -> bool) {
        let ok = self.admin.wait_for(PATIENCE, |_| pred(self)).await;
        if !ok {
            let sessions: Vec<String> = self
                .admin
                .sessions()
                .iter()
                .filter_map(|s| s["id"].as_str().map(str::to_string))
                .collect();
            let mut dump = String::new();
            for sid in sessions {
                for (alias, _) in self.admin.objects(&sid) {
                    dump.push_str(&format!("--- {sid}/{alias}\n"));
                    for item in self.admin.items(&sid, &alias) {
                        let (t, text) = brief(&item);
                        dump.push_str(&format!("  {t}: {text}\n"));
                    }
                }
            }
            dump.push_str(&local_state(self.home.root()));
            panic!("timed out waiting for {what}\n{dump}");
        }
    }

    /// Whether the thread has an item with this type and text.
    pub fn has(&self, s: &SessionIds, alias: &str, ty: &str, text: &str) -> bool {
        self.transcript(s, alias)
            .iter()
            .any(|(t, x)| t == ty && x == text)
    }

    /// The activity log's `metadata.type`s.
    pub fn activity(&self, s: &SessionIds) -> Vec<String> {
        self.transcript(s, "worker")
            .into_iter()
            .map(|(t, _)| t)
            .collect()
    }

    pub fn section_yaml(&self, s: &SessionIds) -> PathBuf {
        self.home.root().join(format!(
            "jobs/session_agent_harness-{}/section.yaml",
            s.session_id
        ))
    }
}

/// Every `section.yaml` and `thread.yaml` under a worker home, for failure reports.
fn local_state(root: &Path) -> String {
    fn walk(dir: &Path, out: &mut String) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.filter_map(Result::ok) {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p
                .file_name()
                .is_some_and(|n| n == "thread.yaml" || n == "section.yaml")
            {
                out.push_str(&format!(
                    "=== {}\n{}\n",
                    p.display(),
                    std::fs::read_to_string(&p).unwrap_or_default()
                ));
            }
        }
    }
    let mut out = String::new();
    walk(&root.join("jobs"), &mut out);
    out
}

pub fn envelope(state: &str, work_folder: &Path) -> Value {
    json!({"type": "thread", "thread": {"attributes": {"name": "task"}, "metadata": {
        "instance": {"state": state},
        "agent": {"type": "test_double"},
        "workspace": {"work_folder": work_folder.to_str().unwrap()}}}})
}

pub fn brief(item: &Value) -> (String, String) {
    (
        item.pointer("/metadata/type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        item.pointer("/content/0/text")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
    )
}

/// Live test-agent processes whose working directory is `work_folder`.
pub fn agent_processes(work_folder: &Path) -> usize {
    agent_pids(work_folder).len()
}

/// The process ids of the live test-agent processes whose working directory is `work_folder`.
pub fn agent_pids(work_folder: &Path) -> Vec<u32> {
    pids_running("blobhub-test-agent", work_folder)
}

/// The process ids of live processes whose command line contains `program` and whose working
/// directory is `work_folder`.
pub fn pids_running(program: &str, work_folder: &Path) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let want = std::fs::canonicalize(work_folder).unwrap_or_else(|_| work_folder.to_path_buf());
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let zombie = stat
                .rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'));
            !zombie
                && String::from_utf8_lossy(&cmd).contains(program)
                && std::fs::read_link(e.path().join("cwd")).is_ok_and(|c| c == want)
        })
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect()
}

/// Polls a local condition (a file, the process table) until it holds.
pub async fn eventually(what: &str, mut pred: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !pred() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every message `m<i>` of a scripted conversation, and how often each appears in the agent's
/// echoes (messages posted together are echoed together, joined by a blank line).
pub fn echo_counts(env: &Env, s: &SessionIds, alias: &str, n: usize) -> Vec<usize> {
    let mut counts = vec![0; n];
    for (ty, text) in env.transcript(s, alias) {
        if ty != "text" {
            continue;
        }
        let Some(body) = text.strip_prefix("echo: ") else {
            continue;
        };
        for part in body.split("\n\n") {
            if let Some(i) = part.strip_prefix('m').and_then(|d| d.parse::<usize>().ok())
                && i < n
            {
                counts[i] += 1;
            }
        }
    }
    counts
}

/// For every message `m<i>`: whether the person saw it answered, or saw the turn that took it end
/// `interrupted`. A turn the agent had begun when the worker was killed is closed that way, not
/// replayed (its agent may already have acted on it; docs/session-agent-harness.md), so that is
/// the one other outcome a message may have. Never silence.
pub fn answered_or_closed(env: &Env, s: &SessionIds, alias: &str, n: usize) -> Vec<bool> {
    let transcript = env.transcript(s, alias);
    let echoed = echo_counts(env, s, alias, n);
    (0..n)
        .map(|i| {
            if echoed[i] > 0 {
                return true;
            }
            let asked = transcript
                .iter()
                .position(|(ty, text)| ty.is_empty() && text == &format!("m{i}"));
            asked.is_some_and(|at| {
                transcript[at..]
                    .iter()
                    .any(|(ty, text)| ty == "turn_end" && text.contains("interrupted"))
            })
        })
        .collect()
}

/// No two items of a thread share a `metadata.post_id`.
pub fn assert_no_duplicate_posts(env: &Env, s: &SessionIds, alias: &str) {
    let mut seen = std::collections::HashSet::new();
    for item in env.items(s, alias) {
        if let Some(p) = item.pointer("/metadata/post_id").and_then(Value::as_str) {
            assert!(
                seen.insert(p.to_string()),
                "post {p} appears twice on {alias}"
            );
        }
    }
}
