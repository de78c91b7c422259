//! Agent slots and held waits under contention (docs/session-agent-harness.md, "Agent slots" and
//! "Held waits"): an idle thread gives its slot back when another thread queues for one, and
//! resumes the same agent session when its next message comes; past
//! `concurrency.held_waits_max` the oldest agent waiting on a person is parked (its process
//! stopped, its question kept open) and its answer still completes the work, also across a
//! restart.

use serde_json::Value;

use crate::harness_support::{Env, agent_pids, assert_no_duplicate_posts, eventually};

/// The `agent_session_id` of every `turn_end` of a thread, oldest first.
fn turn_sessions(env: &Env, s: &blobhub_emulator::SessionIds, alias: &str) -> Vec<String> {
    env.items(s, alias)
        .iter()
        .filter(|i| i.pointer("/metadata/type").and_then(Value::as_str) == Some("turn_end"))
        .map(|i| {
            i.pointer("/metadata/agent_session_id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

fn count(env: &Env, s: &blobhub_emulator::SessionIds, alias: &str, ty: &str) -> usize {
    env.transcript(s, alias)
        .iter()
        .filter(|(t, _)| t == ty)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_threads_on_two_slots_all_reply_and_keep_their_agent_sessions() {
    let env = Env::new().await;
    let s = env.session("ses_slots");
    env.configure(&[&s], 2, "");
    let worker = env.start().await;
    let aliases = ["t0", "t1", "t2", "t3", "t4"];
    for a in aliases {
        env.handoff(&s, a);
    }
    for a in aliases {
        env.say(&s, a, &format!("hello {a}"));
    }
    // Without giving idle slots back, the first two threads would keep both slots and the
    // other three would stay pending for ever.
    env.wait("every thread replied", |e| {
        aliases
            .iter()
            .all(|a| e.has(&s, a, "text", &format!("echo: hello {a}")))
    })
    .await;
    for a in aliases {
        assert_eq!(env.state(&s, a), "active", "{a}");
    }

    // t0 has most likely given its slot away meanwhile; its next message queues for one and
    // resumes the same agent session.
    env.say(&s, "t0", "again");
    env.wait("t0 replied again", |e| {
        e.has(&s, "t0", "text", "echo: again") && turn_sessions(e, &s, "t0").len() == 2
    })
    .await;
    let sessions = turn_sessions(&env, &s, "t0");
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert!(!sessions[0].is_empty());
    assert_eq!(sessions[0], sessions[1], "the same agent session");
    // The test agent counts the turns of each of its sessions: the second turn was the same
    // conversation's second.
    let record = env
        .work_folder()
        .join(".blobhub-test-agent")
        .join(&sessions[0]);
    assert_eq!(std::fs::read_to_string(record).unwrap().trim(), "2");
    for a in aliases {
        assert_no_duplicate_posts(&env, &s, a);
    }
    worker.terminate().await;
}

/// config.yaml of [`Env::configure`] with `concurrency.held_waits_max` set.
fn configure_with_held_cap(env: &Env, s: &blobhub_emulator::SessionIds, cap: u32) {
    // The threads share the work folder and these tests tell agents apart by counting them
    // there: none is started ahead of its message.
    env.configure(&[s], 4, "    prestart: false\n");
    let config = std::fs::read_to_string(env.home.tree.config_path()).unwrap();
    let limited = config.replacen(
        "  max_agents: 4\n",
        &format!("  max_agents: 4\n  held_waits_max: {cap}\n"),
        1,
    );
    assert_ne!(config, limited);
    env.home.write_config(&limited);
}

/// Thread `a` asks (its agent process waits), then thread `b` asks: with a cap of one held wait,
/// `a`'s agent is stopped. Returns `a`'s agent's pid.
async fn a_then_b_ask(env: &Env, s: &blobhub_emulator::SessionIds) -> u32 {
    env.handoff(s, "a");
    env.handoff(s, "b");
    env.wait("both active", |e| {
        e.state(s, "a") == "active" && e.state(s, "b") == "active"
    })
    .await;
    env.say(s, "a", "run: git push");
    env.wait("a asked", |e| count(e, s, "a", "pending_prompt") == 1)
        .await;
    let held = agent_pids(env.work_folder());
    assert_eq!(held.len(), 1, "a's agent waits for the answer");
    env.say(s, "b", "ask: may I deploy?");
    env.wait("b asked", |e| count(e, s, "b", "pending_prompt") == 1)
        .await;
    // The second held wait goes over the cap: the oldest (a's) is parked.
    eventually("a's agent stopped", || {
        !agent_pids(env.work_folder()).contains(&held[0])
    })
    .await;
    held[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_held_wait_cap_the_oldest_question_parks_and_both_complete() {
    let env = Env::new().await;
    let s = env.session("ses_held_cap");
    configure_with_held_cap(&env, &s, 1);
    let worker = env.start().await;
    a_then_b_ask(&env, &s).await;
    // b's agent still waits on its question (held); a's question stays open, no turn ended.
    assert_eq!(agent_pids(env.work_folder()).len(), 1);
    assert_eq!(count(&env, &s, "a", "turn_end"), 0);
    assert_eq!(count(&env, &s, "a", "pending_prompt_resolved"), 0);

    env.say(&s, "b", "yes");
    env.say(&s, "a", "yes");
    env.wait("both completed", |e| {
        e.has(&s, "b", "text", "answered: Approve")
            && count(e, &s, "b", "turn_end") == 1
            && count(e, &s, "a", "turn_end") == 1
    })
    .await;
    let got = env.transcript(&s, "a");
    let got: Vec<(&str, &str)> = got.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(
        got,
        [
            ("", "run: git push"),
            ("pending_prompt", "Bash: git push\n  1. Approve\n  2. Deny"),
            ("", "yes"),
            ("pending_prompt_resolved", "✓ Answered: Approve"),
            (
                "text",
                "echo: Your earlier question \"Bash: git push\" was answered: Approve"
            ),
            ("turn_end", "Turn complete"),
        ]
    );
    assert_no_duplicate_posts(&env, &s, "a");
    assert_no_duplicate_posts(&env, &s, "b");
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_parked_by_the_cap_is_answered_after_a_restart() {
    let env = Env::new().await;
    let s = env.session("ses_held_restart");
    configure_with_held_cap(&env, &s, 1);
    let worker = env.start().await;
    a_then_b_ask(&env, &s).await;
    worker.terminate().await;

    let worker = env.start().await;
    env.wait("recovered", |e| {
        e.activity(&s)
            .iter()
            .filter(|t| *t == "thread_recovered")
            .count()
            == 2
    })
    .await;
    env.say(&s, "a", "yes");
    env.wait("a resumed", |e| {
        e.has(
            &s,
            "a",
            "text",
            "echo: Your earlier question \"Bash: git push\" was answered: Approve",
        ) && count(e, &s, "a", "turn_end") == 1
    })
    .await;
    assert_eq!(count(&env, &s, "a", "pending_prompt"), 1, "asked once");
    assert_no_duplicate_posts(&env, &s, "a");
    worker.terminate().await;
}
