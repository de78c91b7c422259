//! `codex` end to end: the whole worker, the emulator over HTTP, the real `codex app-server`
//! (tests/agents, pinned) and the fake OpenAI Responses API (tests/fake-openai), scripted by what
//! the person writes.
//!
//! The CLI is found through `BLOBHUB_CODEX` or in tests/agents/node_modules. Without it these
//! tests say so and pass locally; under CI (`CI` set) they fail, since `.ci/run` installs it.
//! Codex is pointed at the fake the way docs/session-agent-harness.md tells operators to: a
//! `CODEX_HOME` of its own (set in `agents.codex.env`) whose `config.toml` names the provider.

use std::ops::Deref;

use blobhub_fake_openai::{FakeOpenai, Openai, RecordedRequest, ResponsesRequest};
use serde_json::{Value, json};

use crate::agent_rig::{AgentRig, cli, meta, strings_under};
use crate::harness_support::{Env, assert_no_duplicate_posts, eventually};
use crate::support::{Running, demo_user};

/// A worker wired to the emulator and the fake OpenAI API, with a `codex` agents block.
struct Codex(AgentRig<Openai>);

impl Deref for Codex {
    type Target = AgentRig<Openai>;
    fn deref(&self) -> &AgentRig<Openai> {
        &self.0
    }
}

impl Codex {
    async fn new(session: &str, extra: &str) -> Option<Codex> {
        let cli = cli("BLOBHUB_CODEX", "codex")?;
        let env = Env::new().await;
        let fake = FakeOpenai::start().await.expect("fake model API starts");
        // The CLI's `CODEX_HOME` (its config.toml, its threads' rollouts).
        let home = tempfile::tempdir().unwrap();
        // `gpt-5.5` is a slug Codex knows, so it offers apply_patch; no retries of its own, so
        // a failure reaches the worker at once; no plugins, so no DNS lookups.
        std::fs::write(
            home.path().join("config.toml"),
            format!(
                "model = \"gpt-5.5\"\nmodel_provider = \"fake\"\n\
                 [model_providers.fake]\nname = \"fake\"\nbase_url = \"{}/v1\"\n\
                 wire_api = \"responses\"\nenv_key = \"FAKE_OPENAI_API_KEY\"\n\
                 request_max_retries = 0\nstream_max_retries = 0\n\
                 [analytics]\nenabled = false\n[features]\nplugins = false\n",
                fake.base_url()
            ),
        )
        .unwrap();
        let block = format!(
            "  codex:\n    executable: {cli}\n{extra}    env:\n      CODEX_HOME: {home}\n      \
             FAKE_OPENAI_API_KEY: dummy\n",
            cli = cli.display(),
            home = home.path().display(),
        );
        Some(Codex(AgentRig::new(
            env,
            fake,
            session,
            ("codex", "codex"),
            home,
            &block,
        )))
    }

    /// [`Codex::new`], a worker started on it and thread `t` handed off and active.
    async fn running(session: &str, extra: &str) -> Option<(Codex, Running)> {
        let c = Codex::new(session, extra).await?;
        let worker = c.start().await;
        Some((c, worker))
    }

    /// Wait until the fake has been asked with `prompt` as the last user text.
    async fn wait_for_prompt(&self, prompt: &str) {
        self.0
            .wait_for_prompt(prompt, ResponsesRequest::last_user_text)
            .await;
    }
}

/// Every text a model request carries (messages, tool outputs): what the model was shown.
fn shown(r: &RecordedRequest) -> String {
    let mut out = String::new();
    strings_under(
        &Value::Array(r.input().to_vec()),
        &["text", "content", "output"],
        &mut out,
    );
    out
}

/// The Codex thread a model request belongs to (Codex sends its id as the session id).
fn thread_of(r: &RecordedRequest) -> String {
    r.header("session-id").unwrap_or("").to_string()
}

fn types(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| meta(i, "/metadata/type").as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_turn_conversation_keeps_one_codex_thread() {
    let Some((c, worker)) = Codex::running("ses_codex_two", "").await else {
        return;
    };
    c.env.say(&c.s, "t", "hello");
    c.wait_text("t", "Hello from fake OpenAI").await;
    c.wait_count("t", "turn_end", 1).await;
    c.env.say(&c.s, "t", "THINK how to go on");
    c.wait_text("t", "Thought about: how to go on").await;
    c.wait_count("t", "turn_end", 2).await;

    let items = c.agent_items("t");
    assert_eq!(
        types(&items),
        ["text", "turn_end", "thinking", "text", "turn_end"]
    );
    assert_eq!(meta(&items[2], "/metadata/text"), "how to go on");
    let ends = c.of_type("t", "turn_end");
    for end in &ends {
        assert_eq!(meta(end, "/metadata/status"), "completed");
        // Each turn reports its own tokens (one model request each), not the thread's total.
        assert_eq!(
            meta(end, "/metadata/stats"),
            &json!({"input_tokens": 10, "input_tokens_cached": 4, "output_tokens": 5,
                    "duration_ms": meta(end, "/metadata/stats/duration_ms")})
        );
    }
    let thread = meta(&ends[0], "/metadata/agent_session_id")
        .as_str()
        .unwrap();
    assert!(!thread.is_empty());
    assert_eq!(meta(&ends[1], "/metadata/agent_session_id"), thread);

    // The second model request carries the first turn: one Codex thread throughout.
    let requests = c.fake.model_calls();
    assert_eq!(requests.len(), 2, "one model request per turn");
    let second = shown(&requests[1]);
    assert!(
        second.contains("hello") && second.contains("Hello from fake OpenAI"),
        "{second}"
    );
    for r in &requests {
        assert_eq!(thread_of(r), thread);
        assert_eq!(r.header("originator"), Some("blobhub_worker"));
    }
    assert_no_duplicate_posts(&c.env, &c.s, "t");
    worker.terminate().await;
}

/// A Codex waiting for a person's approval holds no agent slot: with one slot, another thread
/// is answered meanwhile, and the waiting Codex goes on once the person approves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_codex_waiting_for_approval_lends_its_slot() {
    let Some(c) = Codex::new("ses_codex_lend", "").await else {
        return;
    };
    c.lends_its_slot_while_waiting(
        "TOOL:shell! touch lent.txt",
        "lent.txt",
        "Hello from fake OpenAI",
        "Tool output seen",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalated_command_approved_runs_and_declined_does_not() {
    let Some((c, worker)) = Codex::running("ses_codex_escalate", "").await else {
        return;
    };
    let work = c.env.work_folder().to_path_buf();
    c.env.say(&c.s, "t", "TOOL:shell! touch approved.txt");
    c.wait_count("t", "pending_prompt", 1).await;
    let prompt = &c.of_type("t", "pending_prompt")[0];
    assert_eq!(
        meta(prompt, "/content/0/text"),
        "fake model wants to run this outside the sandbox\n\n\
         `/bin/bash -lc 'touch approved.txt'`\n  1. Approve\n  2. Approve for this session\n  3. Deny"
    );
    assert_eq!(meta(prompt, "/metadata/prompt/kind"), "approval");
    assert!(
        !work.join("approved.txt").exists(),
        "nothing runs before the answer"
    );
    c.env.say(&c.s, "t", "approve");
    c.wait_text("t", "Tool output seen").await;
    c.wait_count("t", "turn_end", 1).await;
    assert!(
        work.join("approved.txt").exists(),
        "the approved command ran"
    );

    c.env.say(&c.s, "t", "TOOL:shell! touch denied.txt");
    c.wait_count("t", "pending_prompt", 2).await;
    c.env.say(&c.s, "t", "no");
    c.wait_text("t", "rejected by user").await;
    c.wait_count("t", "turn_end", 2).await;
    assert!(
        !work.join("denied.txt").exists(),
        "the declined command did not run"
    );
    let calls: Vec<Value> = c
        .of_type("t", "tool_call")
        .iter()
        .map(|i| meta(i, "/metadata/tool/name").clone())
        .collect();
    assert_eq!(calls, [json!("shell"), json!("shell")]);
    let results: Vec<bool> = c
        .of_type("t", "tool_result")
        .iter()
        .map(|i| meta(i, "/metadata/tool/is_error").as_bool().unwrap())
        .collect();
    assert_eq!(results, [false, true]);
    let resolved: Vec<String> = c
        .of_type("t", "pending_prompt_resolved")
        .iter()
        .map(|i| meta(i, "/content/0/text").as_str().unwrap().to_string())
        .collect();
    assert_eq!(resolved, ["✓ Answered: Approve", "✓ Answered: Deny"]);
    let last = shown(c.fake.model_calls().last().unwrap());
    assert!(
        last.contains("rejected by user"),
        "the model was told: {last}"
    );
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_change_is_shown_as_its_items() {
    let Some((c, worker)) = Codex::running("ses_codex_patch", "").await else {
        return;
    };
    let work = std::fs::canonicalize(c.env.work_folder()).unwrap();
    c.env.say(&c.s, "t", "TOOL:patch added.txt");
    c.wait_text("t", "Tool output seen").await;
    c.wait_count("t", "turn_end", 1).await;
    assert_eq!(
        types(&c.agent_items("t")),
        ["tool_call", "tool_result", "text", "turn_end"]
    );
    let path = work.join("added.txt");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "added by the fake\n"
    );
    let call = &c.of_type("t", "tool_call")[0];
    assert_eq!(meta(call, "/metadata/tool/name"), "apply_patch");
    assert_eq!(
        meta(call, "/content/0/text"),
        &json!(format!("apply_patch → add {}", path.display()))
    );
    let result = &c.of_type("t", "tool_result")[0];
    assert_eq!(
        meta(result, "/metadata/tool/output"),
        &json!(format!("patch completed: add {}", path.display()))
    );
    assert_eq!(meta(result, "/metadata/tool/is_error"), false);
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_failure_fails_the_thread_with_the_api_error_code() {
    let Some((c, worker)) = Codex::running("ses_codex_fail", "    turn_retries: 0\n").await else {
        return;
    };
    c.env.say(&c.s, "t", "FAIL:500");
    c.env
        .wait("failed", |e| e.state(&c.s, "t") == "failed")
        .await;
    let kinds: Vec<(String, String)> = c
        .agent_items("t")
        .iter()
        .map(|i| {
            (
                meta(i, "/metadata/type").as_str().unwrap_or("").to_string(),
                meta(i, "/metadata/status")
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("status".into(), "error".into()),
            ("turn_end".into(), "failed".into()),
            ("status".into(), "error".into()),
        ]
    );
    let reason = c
        .items("t")
        .into_iter()
        .find(|i| meta(i, "/metadata/code") == "AGENT_API_ERROR")
        .expect("the failure says why");
    assert!(
        meta(&reason, "/content/0/text")
            .as_str()
            .unwrap()
            .contains("high demand"),
        "{reason}"
    );
    eventually("no codex process is left", || c.cli_pids().is_empty()).await;
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_turn_resumes_the_same_codex_thread() {
    let Some(c) = Codex::new("ses_codex_kill", "").await else {
        return;
    };
    let mut worker = c.env.start().await;
    c.handoff("t");
    c.active("t").await;
    c.env.say(&c.s, "t", "hello");
    c.wait_count("t", "turn_end", 1).await;
    c.env.say(&c.s, "t", "STALL");
    c.wait_for_prompt("STALL").await;
    worker.child.kill().await.unwrap();
    eventually("codex died with the worker", || c.cli_pids().is_empty()).await;

    let worker = c.env.start().await;
    // The cut turn is closed, once, and the next message goes to the same Codex thread.
    c.wait_count("t", "turn_end", 2).await;
    c.env.say(&c.s, "t", "again");
    c.wait_count("t", "turn_end", 3).await;
    assert_eq!(c.count("t", "text"), 2, "one reply per completed turn");
    let ends = c.of_type("t", "turn_end");
    let statuses: Vec<&str> = ends
        .iter()
        .map(|e| meta(e, "/metadata/status").as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["completed", "interrupted", "completed"]);
    let thread = meta(&ends[0], "/metadata/agent_session_id");
    assert_eq!(meta(&ends[2], "/metadata/agent_session_id"), thread);
    let requests = c.fake.model_calls();
    let last = requests.last().unwrap();
    assert_eq!(thread_of(last), thread.as_str().unwrap());
    assert!(
        shown(last).contains("Hello from fake OpenAI"),
        "the history came along"
    );
    // Each person's message reached the model once (the cut one was not replayed).
    let asked: Vec<String> = requests.iter().filter_map(|r| r.last_user_text()).collect();
    for once in ["hello", "STALL", "again"] {
        assert_eq!(
            asked.iter().filter(|t| *t == once).count(),
            1,
            "{once}: {asked:?}"
        );
    }
    assert_no_duplicate_posts(&c.env, &c.s, "t");
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_mid_turn_interrupts_codex_and_leaves_no_process() {
    let Some((c, worker)) = Codex::running("ses_codex_stop", "").await else {
        return;
    };
    c.env.say(&c.s, "t", "STALL");
    c.wait_for_prompt("STALL").await;
    let pids = c.cli_pids();
    assert!(!pids.is_empty(), "codex runs the turn");

    // The running CLI's environment: the operator's variables, never the worker's key.
    for pid in &pids {
        let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let environ = String::from_utf8_lossy(&raw).replace('\0', "\n");
        assert!(
            !environ.contains(&demo_user().api_key),
            "the BlobHub key leaked"
        );
        assert!(
            !environ.lines().any(|l| l.starts_with("BLOBHUB_")),
            "{environ}"
        );
        assert!(environ.lines().any(|l| l.starts_with("CODEX_HOME=")));
    }

    c.env.set_envelope(&c.s, "t", c.envelope("completed"));
    c.wait_count("t", "turn_end", 1).await;
    let end = &c.of_type("t", "turn_end")[0];
    assert_eq!(meta(end, "/metadata/status"), "interrupted");
    eventually("no codex process is left", || c.cli_pids().is_empty()).await;
    c.env
        .wait("thread_completed", |e| {
            e.activity(&c.s).contains(&"thread_completed".to_string())
        })
        .await;
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_turn_is_interrupted_and_fails_the_thread_as_stalled() {
    let Some((c, worker)) = Codex::running("ses_codex_stall", "    stall_timeout_s: 1\n").await
    else {
        return;
    };
    c.env.say(&c.s, "t", "STALL");
    c.env
        .wait("failed", |e| e.state(&c.s, "t") == "failed")
        .await;
    let end = &c.of_type("t", "turn_end")[0];
    assert_eq!(meta(end, "/metadata/status"), "failed");
    let reason = c
        .items("t")
        .into_iter()
        .find(|i| meta(i, "/metadata/code") == "AGENT_STALLED")
        .expect("the failure says why");
    assert!(
        meta(&reason, "/content/0/text")
            .as_str()
            .unwrap()
            .contains("said nothing for 1 s"),
        "{reason}"
    );
    eventually("no codex process is left", || c.cli_pids().is_empty()).await;
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guarded_codex_thread_is_decided_by_its_policy_through_the_shell_wrapper() {
    let Some(c) = Codex::new("ses_codex_guarded", "").await else {
        return;
    };
    let worker = c.env.start().await;
    let work = c.env.work_folder().to_path_buf();
    let mut v = c.envelope("pending");
    v["thread"]["metadata"]["agent"]["permissions"] = json!("guarded");
    v["thread"]["metadata"]["policy"] = json!({"default": "ask", "rules": [
        {"id": "no-denied", "effect": "exec", "action": "deny", "command": ["touch denied*"]},
        {"id": "allowed", "effect": "exec", "action": "allow", "command": ["touch allowed*"]},
    ]});
    c.env.set_envelope(&c.s, "t", v);
    c.active("t").await;

    // Codex runs `/bin/bash -lc '<command>'`: the rules see the command inside.
    c.env.say(&c.s, "t", "TOOL:shell! touch allowed.txt");
    c.wait_text("t", "Tool output seen").await;
    c.wait_count("t", "turn_end", 1).await;
    assert!(work.join("allowed.txt").exists(), "the allowed command ran");

    c.env.say(&c.s, "t", "TOOL:shell! touch denied.txt");
    c.wait_text("t", "rejected by user").await;
    c.wait_count("t", "turn_end", 2).await;
    assert!(
        !work.join("denied.txt").exists(),
        "the denied command did not run"
    );
    let denied = c.of_type("t", "policy_denied");
    assert_eq!(denied.len(), 1);
    assert_eq!(
        meta(&denied[0], "/content/0/text"),
        "Blocked by policy rule 'no-denied': /bin/bash -lc 'touch denied.txt'"
    );
    assert_eq!(c.of_type("t", "pending_prompt").len(), 0);
    assert_eq!(c.of_type("t", "policy_applied").len(), 2);
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attached_png_reaches_codex_as_a_local_image() {
    use crate::harness_files::{PNG, post, store_file};
    let Some((c, _worker)) = Codex::running("ses_codex_image", "").await else {
        return;
    };
    store_file(&c.env, &c.s, "files/shot.png", "shot.png", "image/png", PNG);
    post(
        &c.env,
        &c.s,
        "t",
        json!([{"type": "text", "text": "what is in this picture?"},
               {"type": "file", "file": {"alias": "files/shot.png", "name": "shot.png",
                "content_type": "image/png", "size": PNG.len()}}]),
    );
    c.wait_count("t", "turn_end", 1).await;
    // Codex reads the local file and sends it to the model as an input image (a data URL).
    let calls = c.fake.model_calls();
    let images: Vec<String> = calls
        .iter()
        .flat_map(|r| r.input().to_vec())
        .filter(|i| i["role"] == "user")
        .flat_map(|i| i["content"].as_array().cloned().unwrap_or_default())
        .filter(|b| b["type"] == "input_image")
        .filter_map(|b| b["image_url"].as_str().map(str::to_string))
        .collect();
    assert!(
        images
            .iter()
            .any(|u| u.starts_with("data:image/png;base64,iVBORw0KGgo")),
        "no PNG input image reached the model; the user inputs were: {:?}",
        calls
            .iter()
            .flat_map(|r| r.input().to_vec())
            .filter(|i| i["role"] == "user")
            .map(|i| i["content"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| format!(
                    "{}:{}",
                    b["type"],
                    b.to_string().chars().take(120).collect::<String>()
                ))
                .collect::<Vec<_>>())
            .collect::<Vec<_>>()
    );
}
