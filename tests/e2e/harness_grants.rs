//! One-shot grants end to end: an approval answered after the worker was killed (so no agent
//! process waits for it) approves the agent's next matching call once — across another SIGKILL —
//! and never twice (docs/session-agent-harness.md, "One-shot grants").

use crate::harness_support::{Env, agent_processes, assert_no_duplicate_posts, eventually};

fn count(env: &Env, s: &blobhub_emulator::SessionIds, ty: &str) -> usize {
    env.transcript(s, "t")
        .iter()
        .filter(|(t, _)| t == ty)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_is_spent_exactly_once_across_a_sigkill() {
    let env = Env::new().await;
    let s = env.session("ses_grant");
    env.configure(&[&s], 4, "");
    let mut worker = env.start().await;
    env.handoff(&s, "t");
    env.wait_state(&s, "t", "active").await;
    env.say(&s, "t", "run: git push");
    env.wait("asked", |e| count(e, &s, "pending_prompt") == 1)
        .await;

    // The agent that asked dies with the worker; the answer arrives for the adopted prompt.
    worker.child.kill().await.unwrap();
    worker = env.start().await;
    env.wait("recovered", |e| {
        e.activity(&s).contains(&"thread_recovered".to_string())
    })
    .await;
    env.say(&s, "t", "yes");
    env.wait("resumed", |e| {
        e.transcript(&s, "t").iter().any(|(t, x)| {
            t == "text"
                && x == "echo: Your earlier question \"Bash: git push\" was answered: Approve"
        })
    })
    .await;
    let thread_yaml = env
        .home
        .root()
        .join("jobs/session_agent_harness-ses_grant/threads/t/thread.yaml");
    let yaml = std::fs::read_to_string(&thread_yaml).unwrap();
    assert!(
        yaml.contains("grant_key: 'Bash:git push'") || yaml.contains("grant_key: Bash:git push"),
        "{yaml}"
    );

    // The grant is on disk: it survives another SIGKILL.
    worker.child.kill().await.unwrap();
    worker = env.start().await;
    // The retry from a reset shell is covered: `cd <inside the work folder> && <the command>`.
    env.say(&s, "t", "run: cd sub && git push");
    env.wait("granted", |e| {
        e.has(&s, "t", "text", "ran: cd sub && git push")
    })
    .await;
    assert_eq!(count(&env, &s, "approval_granted"), 1);
    assert_eq!(count(&env, &s, "pending_prompt"), 1);
    let yaml = std::fs::read_to_string(&thread_yaml).unwrap();
    assert!(yaml.contains("grant: null"), "spent and persisted: {yaml}");

    // Spent: the same call asks again.
    env.say(&s, "t", "run: git push");
    env.wait("asked again", |e| count(e, &s, "pending_prompt") == 2)
        .await;
    env.say(&s, "t", "no");
    env.wait("refused", |e| {
        e.has(
            &s,
            "t",
            "text",
            "refused: The person denied this tool use. Do not retry it; choose another approach.",
        )
    })
    .await;
    assert_eq!(count(&env, &s, "approval_granted"), 1);
    assert_no_duplicate_posts(&env, &s, "t");
    worker.terminate().await;
}

/// `agents.<type>.wait: parked`: the question ends the turn (no `turn_end`, no agent process,
/// no slot: another thread runs meanwhile), and the answer starts the next turn — with the
/// approval turned into a one-shot grant for the retried call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_question_frees_the_slot_and_its_answer_resumes_the_thread() {
    let env = Env::new().await;
    let s = env.session("ses_parked");
    env.configure(&[&s], 1, "    wait: parked\n");
    let worker = env.start().await;
    env.handoff(&s, "a");
    env.wait_state(&s, "a", "active").await;
    env.say(&s, "a", "run: git push");
    let transcript = |e: &Env, alias: &str| e.transcript(&s, alias);
    env.wait("a asked", |e| {
        transcript(e, "a")
            .iter()
            .any(|(t, _)| t == "pending_prompt")
    })
    .await;
    // Parked: the agent is gone, and without a slot no process waits for a's next turn.
    eventually("the parked agent is gone", || {
        agent_processes(env.work_folder()) == 0
    })
    .await;
    // The only slot is free again: the second thread gets it and works.
    env.handoff(&s, "b");
    env.wait_state(&s, "b", "active").await;
    env.exchange(&s, "b", "hello").await;
    // Only b's next turn's agent, started ahead, holding b's slot.
    eventually("one agent: b's, started ahead", || {
        agent_processes(env.work_folder()) == 1
    })
    .await;
    env.set_state(&s, "b", "completed");
    env.say(&s, "a", "yes");
    env.wait("a resumed", |e| {
        e.has(
            &s,
            "a",
            "text",
            "echo: Your earlier question \"Bash: git push\" was answered: Approve",
        ) && transcript(e, "a").iter().any(|(t, _)| t == "turn_end")
    })
    .await;
    env.say(&s, "a", "run: git push");
    env.wait("granted and ended", |e| {
        transcript(e, "a")
            .iter()
            .filter(|(t, _)| t == "turn_end")
            .count()
            == 2
    })
    .await;
    let got = transcript(&env, "a");
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
            ("", "run: git push"),
            (
                "approval_granted",
                "✓ `Bash` auto-approved: a person approved this call earlier (it covers this one call)"
            ),
            ("text", "ran: git push"),
            ("turn_end", "Turn complete"),
        ]
    );
    assert_no_duplicate_posts(&env, &s, "a");
    worker.terminate().await;
}
