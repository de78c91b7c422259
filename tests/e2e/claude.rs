//! `claude_code` end to end: the whole worker, the emulator over HTTP, the real `claude` CLI
//! (tests/agents, pinned) and the fake Anthropic API (tests/fake-anthropic), scripted by what the
//! person writes.
//!
//! The CLI is found through `BLOBHUB_CLAUDE` or in tests/agents/node_modules. Without it these
//! tests say so and pass locally; under CI (`CI` set) they fail, since `.ci/run` installs it.

use std::ops::Deref;

use blobhub_fake_anthropic::{Anthropic, FakeAnthropic, MessagesRequest, RecordedRequest};
use serde_json::{Value, json};

use crate::agent_rig::{AgentRig, cli, meta, strings_under};
use crate::harness_support::{Env, assert_no_duplicate_posts, eventually};
use crate::support::{Running, demo_user};

/// A worker wired to the emulator and the fake Anthropic API, with a `claude_code` agents block.
struct Claude(AgentRig<Anthropic>);

impl Deref for Claude {
    type Target = AgentRig<Anthropic>;
    fn deref(&self) -> &AgentRig<Anthropic> {
        &self.0
    }
}

impl Claude {
    async fn new(session: &str, extra: &str) -> Option<Claude> {
        let cli = cli("BLOBHUB_CLAUDE", "claude")?;
        let env = Env::new().await;
        let fake = FakeAnthropic::start().await.expect("fake model API starts");
        // The CLI's own config folder (transcripts live there).
        let config = tempfile::tempdir().unwrap();
        let block = format!(
            "  claude_code:\n    executable: {cli}\n{extra}    env:\n      ANTHROPIC_BASE_URL: {url}\n      \
             ANTHROPIC_API_KEY: dummy\n      CLAUDE_CONFIG_DIR: {dir}\n      DISABLE_TELEMETRY: \"1\"\n      \
             DISABLE_AUTOUPDATER: \"1\"\n      DISABLE_ERROR_REPORTING: \"1\"\n      DISABLE_BUG_COMMAND: \"1\"\n      \
             CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: \"1\"\n      CLAUDE_CODE_MAX_RETRIES: \"0\"\n",
            cli = cli.display(),
            url = fake.base_url(),
            dir = config.path().display(),
        );
        Some(Claude(AgentRig::new(
            env,
            fake,
            session,
            ("claude_code", "claude"),
            config,
            &block,
        )))
    }

    /// [`Claude::new`], a worker started on it and thread `t` handed off and active.
    async fn running(session: &str, extra: &str) -> Option<(Claude, Running)> {
        let c = Claude::new(session, extra).await?;
        let worker = c.start().await;
        Some((c, worker))
    }

    /// Wait until the fake has been asked with `prompt` as the last user text.
    async fn wait_for_prompt(&self, prompt: &str) {
        self.0
            .wait_for_prompt(prompt, MessagesRequest::last_user_text)
            .await;
    }
}

/// Every text a model request carries (text blocks and tool results): what the model was shown.
fn shown(r: &RecordedRequest) -> String {
    let mut out = String::new();
    for m in r.body["messages"].as_array().into_iter().flatten() {
        strings_under(&m["content"], &["text", "content"], &mut out);
    }
    out
}

fn session_header(r: &RecordedRequest) -> String {
    r.header("x-claude-code-session-id")
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_turn_conversation_keeps_one_claude_session() {
    let Some((c, worker)) = Claude::running("ses_claude_two", "").await else {
        return;
    };
    c.env.say(&c.s, "t", "hello");
    c.wait_text("t", "Hello from fake Anthropic").await;
    c.wait_count("t", "turn_end", 1).await;
    c.env.say(&c.s, "t", "THINK how to go on");
    c.wait_text("t", "Thought about: how to go on").await;
    c.wait_count("t", "turn_end", 2).await;

    let kinds: Vec<String> = c
        .agent_items("t")
        .iter()
        .map(|i| meta(i, "/metadata/type").as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(kinds, ["text", "turn_end", "thinking", "text", "turn_end"]);
    let items = c.agent_items("t");
    assert_eq!(meta(&items[2], "/metadata/text"), "how to go on");
    assert_eq!(
        meta(&items[2], "/content/0/text"),
        "[thinking] how to go on"
    );
    let ends: Vec<&Value> = items
        .iter()
        .filter(|i| meta(i, "/metadata/type") == "turn_end")
        .collect();
    for end in &ends {
        assert_eq!(meta(end, "/metadata/status"), "completed");
        assert_eq!(meta(end, "/content/0/text"), "Turn complete");
        assert!(meta(end, "/metadata/stats/output_tokens").as_u64().unwrap() > 0);
        assert!(meta(end, "/metadata/stats/duration_ms").is_u64());
    }
    let session = meta(ends[0], "/metadata/agent_session_id")
        .as_str()
        .unwrap();
    assert!(!session.is_empty());
    assert_eq!(meta(ends[1], "/metadata/agent_session_id"), session);

    // The second model request carries the first turn: one Claude session throughout.
    let requests = c.fake.model_calls();
    assert_eq!(requests.len(), 2, "one model request per turn");
    let second = shown(&requests[1]);
    assert!(
        second.contains("hello") && second.contains("Hello from fake Anthropic"),
        "{second}"
    );
    for r in &requests {
        assert_eq!(session_header(r), session);
    }
    // Claude's own system prompt is kept, the worker's instructions appended to it.
    let system = requests[0].body["system"].to_string();
    assert!(system.contains("mcp__blobhub__ask_user"), "{system}");
    assert!(
        system.contains("Claude Code"),
        "the default system prompt is kept"
    );
    assert_no_duplicate_posts(&c.env, &c.s, "t");
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bash_approved_runs_and_bash_denied_does_not() {
    let Some(c) = Claude::new("ses_claude_bash", "").await else {
        return;
    };
    let worker = c.env.start().await;
    let work = c.env.work_folder().to_path_buf();
    c.handoff("t");
    c.active("t").await;
    c.env.say(&c.s, "t", "TOOL:Bash touch approved.txt");
    c.wait_count("t", "pending_prompt", 1).await;
    let prompt = c.first("t", "pending_prompt");
    assert_eq!(
        meta(&prompt, "/content/0/text"),
        "Allow Claude to use `Bash`?\n\n`touch approved.txt`\n  1. Approve\n  2. Deny"
    );
    assert_eq!(meta(&prompt, "/metadata/prompt/kind"), "approval");
    assert!(
        !work.join("approved.txt").exists(),
        "nothing runs before the answer"
    );
    c.env.say(&c.s, "t", "approve");
    c.wait_text("t", "Tool result seen").await;
    c.wait_count("t", "turn_end", 1).await;
    assert!(
        work.join("approved.txt").exists(),
        "the approved command ran"
    );

    c.env.say(&c.s, "t", "TOOL:Bash touch denied.txt");
    c.wait_count("t", "pending_prompt", 2).await;
    c.env.say(&c.s, "t", "no, not in this folder");
    let seen = c.wait_text("t", "Tool error seen").await;
    c.wait_count("t", "turn_end", 2).await;
    assert!(
        !work.join("denied.txt").exists(),
        "the denied command did not run"
    );
    let said = meta(&seen, "/content/0/text").as_str().unwrap();
    assert!(said.contains("not in this folder"), "{said}");
    // The tool results carry their error flag.
    let results: Vec<bool> = c
        .items("t")
        .iter()
        .filter(|i| meta(i, "/metadata/type") == "tool_result")
        .map(|i| meta(i, "/metadata/tool/is_error").as_bool().unwrap())
        .collect();
    assert_eq!(results, [false, true]);
    let resolved: Vec<String> = c
        .items("t")
        .iter()
        .filter(|i| meta(i, "/metadata/type") == "pending_prompt_resolved")
        .map(|i| meta(i, "/content/0/text").as_str().unwrap().to_string())
        .collect();
    assert_eq!(resolved, ["✓ Answered: Approve", "✓ Answered: Deny"]);
    let last = shown(c.fake.model_calls().last().unwrap());
    assert!(
        last.contains("not in this folder"),
        "the denial reached the model"
    );
    worker.terminate().await;
}

/// A Claude waiting for a person's approval holds no agent slot: with one slot, another thread
/// is answered meanwhile, and the waiting Claude goes on once the person approves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claude_waiting_for_approval_lends_its_slot() {
    let Some(c) = Claude::new("ses_claude_lend", "").await else {
        return;
    };
    c.lends_its_slot_while_waiting(
        "TOOL:Bash touch lent.txt",
        "lent.txt",
        "Hello from fake Anthropic",
        "Tool result seen",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_from_the_model_is_answered_by_the_person() {
    let Some((c, worker)) = Claude::running("ses_claude_ask", "").await else {
        return;
    };
    c.env
        .say(&c.s, "t", "ASK Which colour should the button be?");
    c.wait_count("t", "pending_prompt", 1).await;
    let prompt = c.first("t", "pending_prompt");
    assert_eq!(meta(&prompt, "/metadata/prompt/kind"), "ask_user_question");
    assert_eq!(
        meta(&prompt, "/metadata/prompt/questions/0/question"),
        "Which colour should the button be?"
    );
    c.env.say(&c.s, "t", "teal, please");
    c.wait_text("t", "Tool result seen").await;
    c.wait_count("t", "turn_end", 1).await;
    let last = shown(c.fake.model_calls().last().unwrap());
    assert!(
        last.contains("teal, please"),
        "the answer reached the model: {last}"
    );
    // No permission was asked for the question tool itself.
    assert_eq!(c.count("t", "pending_prompt"), 1);
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_model_is_resumed_after_a_backoff() {
    let Some((c, worker)) = Claude::running(
        "ses_claude_529",
        "    turn_retries: 1\n    turn_retry_delays_ms: [50]\n",
    )
    .await
    else {
        return;
    };
    c.env.say(&c.s, "t", "FAIL:529");
    c.wait_count("t", "turn_end", 1).await;
    let items = c.agent_items("t");
    let kinds: Vec<(String, String)> = items
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
            ("status".into(), "retrying".into()),
            ("text".into(), String::new()),
            ("turn_end".into(), "completed".into()),
        ],
        "{items:#?}"
    );
    let retrying = meta(&items[1], "/content/0/text").as_str().unwrap();
    assert!(
        retrying
            .starts_with("transient API error, resuming (attempt 1/1 in 0.05s): API Error: 529"),
        "{retrying}"
    );
    // The resume continued the same session with the continuation prompt.
    let requests = c.fake.model_calls();
    assert_eq!(requests.len(), 2);
    assert!(
        requests[1]
            .last_user_text()
            .is_some_and(|t| t.contains("transient error"))
    );
    assert_eq!(session_header(&requests[0]), session_header(&requests[1]));
    assert_eq!(c.env.state(&c.s, "t"), "active");
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_model_fails_the_thread_once_retries_are_spent() {
    let Some((c, worker)) = Claude::running("ses_claude_spent", "    turn_retries: 0\n").await
    else {
        return;
    };
    c.env.say(&c.s, "t", "FAIL:529");
    c.env
        .wait("failed", |e| e.state(&c.s, "t") == "failed")
        .await;
    let end = c.first("t", "turn_end");
    assert_eq!(meta(&end, "/metadata/status"), "failed");
    let reason = c
        .items("t")
        .into_iter()
        .find(|i| meta(i, "/metadata/code") == "AGENT_API_ERROR")
        .expect("the failure says why");
    assert!(
        meta(&reason, "/content/0/text")
            .as_str()
            .unwrap()
            .contains("529")
    );
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_turn_resumes_the_same_claude_session() {
    let Some(c) = Claude::new("ses_claude_kill", "").await else {
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
    eventually("claude died with the worker", || c.cli_pids().is_empty()).await;

    let worker = c.env.start().await;
    // The cut turn is closed, once, and the next message goes to the same session.
    c.wait_count("t", "turn_end", 2).await;
    c.env.say(&c.s, "t", "again");
    c.wait_count("t", "turn_end", 3).await;
    assert_eq!(c.count("t", "text"), 2, "one reply per completed turn");
    let ends: Vec<Value> = c
        .items("t")
        .into_iter()
        .filter(|i| meta(i, "/metadata/type") == "turn_end")
        .collect();
    let statuses: Vec<&str> = ends
        .iter()
        .map(|e| meta(e, "/metadata/status").as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["completed", "interrupted", "completed"]);
    let session = meta(&ends[0], "/metadata/agent_session_id");
    assert_eq!(meta(&ends[2], "/metadata/agent_session_id"), session);
    let requests = c.fake.model_calls();
    let last = requests.last().unwrap();
    assert_eq!(session_header(last), session.as_str().unwrap());
    assert!(
        shown(last).contains("Hello from fake Anthropic"),
        "the history came along"
    );
    // Each person's message reached the model once (the cut one was not replayed).
    let asked: Vec<String> = requests.iter().filter_map(|r| r.last_user_text()).collect();
    assert_eq!(
        asked.iter().filter(|t| *t == "STALL").count(),
        1,
        "{asked:?}"
    );
    assert_eq!(
        asked.iter().filter(|t| *t == "hello").count(),
        1,
        "{asked:?}"
    );
    assert_no_duplicate_posts(&c.env, &c.s, "t");
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_mid_turn_interrupts_claude_and_closes_the_turn() {
    let Some(c) = Claude::new("ses_claude_stop", "").await else {
        return;
    };
    let worker: Running = match c
        .env
        .home
        .spawn_start_with_env(&[("CLAUDECODE", "1"), ("CLAUDE_CODE_ENTRYPOINT", "cli")])
        .await
    {
        Ok(w) => w,
        Err(o) => panic!("worker did not start: {o:?}"),
    };
    c.handoff("t");
    c.active("t").await;
    c.env.say(&c.s, "t", "STALL");
    c.wait_for_prompt("STALL").await;
    let pids = c.cli_pids();
    assert_eq!(pids.len(), 1, "one claude process for the turn");

    // The running CLI's environment: the operator's variables, never the worker's key.
    let raw = std::fs::read(format!("/proc/{}/environ", pids[0])).unwrap();
    let environ = String::from_utf8_lossy(&raw).replace('\0', "\n");
    assert!(
        !environ.contains(&demo_user().api_key),
        "the BlobHub key leaked"
    );
    assert!(
        !environ.lines().any(|l| l.starts_with("BLOBHUB_")),
        "{environ}"
    );
    assert!(!environ.lines().any(|l| l.starts_with("CLAUDECODE=")));
    assert!(
        !environ
            .lines()
            .any(|l| l.starts_with("CLAUDE_CODE_ENTRYPOINT="))
    );
    assert!(environ.contains(&format!("ANTHROPIC_BASE_URL={}", c.fake.base_url())));

    c.env.set_envelope(&c.s, "t", c.envelope("completed"));
    c.wait_count("t", "turn_end", 1).await;
    let end = c.first("t", "turn_end");
    assert_eq!(meta(&end, "/metadata/status"), "interrupted");
    eventually("no claude process is left", || c.cli_pids().is_empty()).await;
    c.env
        .wait("thread_completed", |e| {
            e.activity(&c.s).contains(&"thread_completed".to_string())
        })
        .await;
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guarded_claude_thread_is_decided_by_its_policy() {
    let Some(c) = Claude::new("ses_claude_guarded", "").await else {
        return;
    };
    let worker = c.env.start().await;
    let work = c.env.work_folder().to_path_buf();
    let mut v = c.envelope("pending");
    v["thread"]["metadata"]["agent"]["permissions"] = json!("guarded");
    v["thread"]["metadata"]["policy"] = json!({"default": "ask", "rules": [
        {"id": "no-push", "effect": "exec", "action": "deny", "command": ["git push*"]},
        {"id": "touch", "effect": "exec", "action": "allow", "command": ["touch *"]},
    ]});
    c.env.set_envelope(&c.s, "t", v);
    c.active("t").await;

    // Allowed by a rule: it runs without a prompt.
    c.env.say(&c.s, "t", "TOOL:Bash touch allowed.txt");
    c.wait_text("t", "Tool result seen").await;
    c.wait_count("t", "turn_end", 1).await;
    assert!(work.join("allowed.txt").exists(), "the allowed command ran");
    assert_eq!(c.count("t", "pending_prompt"), 0);

    // Denied by a rule: never runs, the model is told which rule.
    c.env.say(&c.s, "t", "TOOL:Bash git push origin main");
    let seen = c.wait_text("t", "Tool error seen").await;
    c.wait_count("t", "turn_end", 2).await;
    let said = meta(&seen, "/content/0/text").as_str().unwrap();
    assert!(said.contains("Denied by policy rule 'no-push'"), "{said}");
    let denied = c.first("t", "policy_denied");
    assert_eq!(
        meta(&denied, "/content/0/text"),
        "Blocked by policy rule 'no-push': git push origin main"
    );
    assert_eq!(c.count("t", "policy_applied"), 2);
    assert_eq!(c.count("t", "pending_prompt"), 0);
    worker.terminate().await;
}

/// The worker's log lines of `event` (pretty format: `… <event> … fields={…}`).
fn log_lines<'a>(stderr: &'a str, event: &str) -> Vec<&'a str> {
    stderr
        .lines()
        .filter(|l| l.contains(&format!(" {event} ")))
        .collect()
}

/// The only claude process of the work folder, once there is exactly one.
async fn the_claude(c: &Claude) -> u32 {
    eventually("one claude process", || c.cli_pids().len() == 1).await;
    c.cli_pids()[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_turn_goes_to_a_claude_started_before_its_message() {
    let Some((c, worker)) = Claude::running("ses_claude_prestart", "").await else {
        return;
    };
    // Active, no message yet: the first turn's CLI is already running, and has asked nothing.
    let first = the_claude(&c).await;
    assert!(c.fake.model_calls().is_empty());
    c.env.say(&c.s, "t", "hello");
    c.wait_count("t", "turn_end", 1).await;
    // The turn is over: the next turn's CLI starts at once, resuming the session, and waits.
    eventually("the first turn's claude is gone", || {
        !c.cli_pids().contains(&first)
    })
    .await;
    let second = the_claude(&c).await;
    assert_eq!(c.fake.model_calls().len(), 1, "the held CLI asks nothing");
    let before = c.agent_items("t").len();
    c.env.say(&c.s, "t", "hello again");
    c.wait_count("t", "turn_end", 2).await;
    assert_eq!(
        c.agent_items("t").len(),
        before + 2,
        "one reply, one turn_end"
    );

    let requests = c.fake.model_calls();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].last_user_text().as_deref(), Some("hello again"));
    assert_eq!(session_header(&requests[0]), session_header(&requests[1]));
    assert!(shown(&requests[1]).contains("Hello from fake Anthropic"));
    let out = worker.terminate().await;
    // Each turn ran in the process that was running before its message was posted.
    let started = log_lines(&out.stderr, "turn_started");
    let prestarted = log_lines(&out.stderr, "agent_prestarted");
    for (i, pid) in [first, second].iter().enumerate() {
        let pid = format!("\"pid\":{pid},");
        assert!(
            prestarted.iter().any(|l| l.contains(&pid)),
            "turn {i}: {prestarted:#?}"
        );
        assert!(
            started.get(i).is_some_and(|l| l.contains(&pid)),
            "turn {i}: {started:#?}"
        );
    }
    assert!(log_lines(&out.stderr, "agent_prestart_stopped").is_empty());
    assert!(log_lines(&out.stderr, "agent_prestart_lost").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_changed_between_turns_reaches_a_fresh_claude() {
    let Some(c) = Claude::new("ses_claude_model", "").await else {
        return;
    };
    let worker = c.env.start().await;
    let with_model = |state: &str, model: &str| {
        let mut v = c.envelope(state);
        v["thread"]["metadata"]["agent"]["model"] = json!(model);
        v
    };
    c.env
        .set_envelope(&c.s, "t", with_model("pending", "claude-sonnet-4-5"));
    c.active("t").await;
    c.env.say(&c.s, "t", "hello");
    c.wait_count("t", "turn_end", 1).await;
    let held = the_claude(&c).await;
    // The person picks another model and hands the thread off again.
    c.env
        .set_envelope(&c.s, "t", with_model("pending", "fake-model-b"));
    eventually("the claude held for the old model is stopped", || {
        !c.cli_pids().contains(&held)
    })
    .await;
    c.env
        .wait("active again", |e| {
            e.activity(&c.s)
                .iter()
                .filter(|a| *a == "thread_active")
                .count()
                == 2
        })
        .await;
    c.env.say(&c.s, "t", "hello again");
    c.wait_count("t", "turn_end", 2).await;
    let requests = c.fake.model_calls();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].body["model"], "claude-sonnet-4-5");
    assert_eq!(requests[1].body["model"], "fake-model-b");
    assert_eq!(requests[1].last_user_text().as_deref(), Some("hello again"));
    // The same Claude session carries on under the new model.
    assert_eq!(session_header(&requests[0]), session_header(&requests[1]));
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_claude_waits_for_a_message_leaves_no_process() {
    let Some((c, worker)) = Claude::running("ses_claude_stop_held", "").await else {
        return;
    };
    c.env.say(&c.s, "t", "hello");
    c.wait_count("t", "turn_end", 1).await;
    // The next turn's claude waits for a message.
    the_claude(&c).await;
    let before = c.agent_items("t").len();
    c.env.set_envelope(&c.s, "t", c.envelope("completed"));
    c.env
        .wait("thread_completed", |e| {
            e.activity(&c.s).contains(&"thread_completed".to_string())
        })
        .await;
    eventually("the held claude is gone, and no other left", || {
        c.cli_pids().is_empty()
    })
    .await;
    // It never said or asked anything.
    assert_eq!(c.agent_items("t").len(), before);
    assert_eq!(c.fake.model_calls().len(), 1);
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prestart_off_starts_claude_when_the_message_arrives() {
    let Some((c, worker)) = Claude::running("ses_claude_cold", "    prestart: false\n").await
    else {
        return;
    };
    c.env.say(&c.s, "t", "hello");
    c.wait_count("t", "turn_end", 1).await;
    eventually("no claude waits between turns", || c.cli_pids().is_empty()).await;
    let out = worker.terminate().await;
    assert!(log_lines(&out.stderr, "agent_prestarted").is_empty());
    assert_eq!(log_lines(&out.stderr, "turn_started").len(), 1);
}

/// Every block of every user message the model was sent.
fn user_blocks(r: &RecordedRequest) -> Vec<Value> {
    r.body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "user")
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attached_png_reaches_the_model_as_an_image_block() {
    use crate::harness_files::{PNG, post, store_file};
    let Some((c, _worker)) = Claude::running("ses_claude_image", "").await else {
        return;
    };
    store_file(&c.env, &c.s, "files/shot.png", "shot.png", "image/png", PNG);
    store_file(
        &c.env,
        &c.s,
        "files/notes.txt",
        "notes.txt",
        "text/plain",
        b"a note\n",
    );
    post(
        &c.env,
        &c.s,
        "t",
        json!([{"type": "text", "text": "what is in this picture?"},
               {"type": "file", "file": {"alias": "files/shot.png", "name": "shot.png",
                "content_type": "image/png", "size": PNG.len()}},
               {"type": "file", "file": {"alias": "files/notes.txt", "name": "notes.txt",
                "content_type": "text/plain", "size": 7}}]),
    );
    c.wait_count("t", "turn_end", 1).await;
    let want = {
        use std::fmt::Write;
        // Standard base64 of the PNG, computed here independently of the harness.
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for chunk in PNG.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..4 {
                if i <= chunk.len() {
                    s.write_char(A[((n >> (18 - 6 * i)) & 63) as usize] as char)
                        .unwrap();
                } else {
                    s.push('=');
                }
            }
        }
        s
    };
    let calls = c.fake.model_calls();
    let image = calls
        .iter()
        .flat_map(user_blocks)
        .find(|b| b["type"] == "image")
        .unwrap_or_else(|| {
            panic!(
                "no image block reached the model: {:?}",
                calls.last().map(|r| &r.body)
            )
        });
    assert_eq!(image["source"]["type"], "base64");
    assert_eq!(image["source"]["media_type"], "image/png");
    assert_eq!(image["source"]["data"], want);
    // The text file is named with its path on disk, and is there.
    let inbox = c.env.work_folder().join(".blobhub/inbox");
    let notes = std::fs::read_dir(&inbox)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path().join("notes.txt"))
        .find(|p| p.exists())
        .expect("notes.txt in the inbox");
    let shown_text: String = calls.iter().map(shown).collect();
    assert!(
        shown_text.contains(&format!("[notes.txt] at {}", notes.display())),
        "{shown_text}"
    );
}
