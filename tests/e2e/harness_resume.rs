//! The session-id resolution rule end to end (docs/session-agent-harness.md, "Transient
//! model-API failures"): a turn asked to resume an agent session that is gone, whose agent
//! silently started another session and failed, clears the resume pointer, so the thread is not
//! stranded: set `pending` again, its next message runs in a fresh agent session.

use serde_json::Value;

use crate::harness_support::{Env, assert_no_duplicate_posts};

/// The `agent_session_id` of every `turn_end` of a thread, with its text, oldest first.
fn turn_ends(env: &Env, s: &blobhub_emulator::SessionIds, alias: &str) -> Vec<(String, String)> {
    env.items(s, alias)
        .iter()
        .filter(|i| i.pointer("/metadata/type").and_then(Value::as_str) == Some("turn_end"))
        .map(|i| {
            (
                i.pointer("/metadata/agent_session_id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                i.pointer("/content/0/text")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_agent_session_does_not_strand_the_thread() {
    let env = Env::new().await;
    let s = env.session("ses_lost");
    env.configure(&[&s], 4, "");
    let worker = env.start().await;
    env.handoff(&s, "t");
    env.say(&s, "t", "hello");
    env.wait("first reply", |e| {
        e.has(&s, "t", "text", "echo: hello") && turn_ends(e, &s, "t").len() == 1
    })
    .await;
    let first = turn_ends(&env, &s, "t");
    assert_eq!(first.len(), 1);
    let lost = first[0].0.clone();
    assert!(!lost.is_empty());

    // The agent's stored conversation disappears: resuming it fails.
    std::fs::remove_file(env.work_folder().join(".blobhub-test-agent").join(&lost)).unwrap();
    env.say(&s, "t", "again");
    env.wait_state(&s, "t", "failed").await;
    assert!(!env.has(&s, "t", "text", "echo: again"));

    // The person hands the thread off again and writes once more: the thread works, in a fresh
    // agent session (the lost pointer would fail every turn the same way for ever).
    env.set_state(&s, "t", "pending");
    env.wait_state(&s, "t", "active").await;
    env.say(&s, "t", "once more");
    env.wait("answered in a new session", |e| {
        e.has(&s, "t", "text", "echo: once more")
            && turn_ends(e, &s, "t")
                .last()
                .is_some_and(|(_, text)| text == "Turn complete")
    })
    .await;
    let last = turn_ends(&env, &s, "t").pop().unwrap();
    assert!(!last.0.is_empty());
    assert_ne!(last.0, lost, "a new agent session");
    assert_eq!(env.state(&s, "t"), "active");
    assert_no_duplicate_posts(&env, &s, "t");
    worker.terminate().await;
}
