//! `guarded` threads end to end: the worker binary, the emulator and the test agent asking
//! permission for real calls (`run:` / `write:`), decided by the thread's policy and the
//! operator's `policy.rules` (docs/session-agent-harness.md, "Guarded threads and policies").

use serde_json::{Value, json};

use crate::harness_support::{Env, envelope};

fn guarded(env: &Env, policy: Value) -> Value {
    let mut v = envelope("pending", env.work_folder());
    v["thread"]["metadata"]["agent"]["permissions"] = json!("guarded");
    v["thread"]["metadata"]["policy"] = policy;
    v
}

fn turn_ends(env: &Env, s: &blobhub_emulator::SessionIds, alias: &str) -> usize {
    env.transcript(s, alias)
        .iter()
        .filter(|(t, _)| t == "turn_end")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guarded_thread_is_decided_by_its_policy_and_asks_a_person_on_ask() {
    let env = Env::new().await;
    let s = env.session("ses_guarded");
    env.configure(
        &[&s],
        4,
        "policy:\n  rules:\n    - {id: no-sudo, effect: exec, action: deny, command: [\"sudo*\"]}\n",
    );
    let worker = env.start().await;
    env.wait_attached(&s).await;
    env.set_envelope(
        &s,
        "t",
        guarded(
            &env,
            json!({"default": "ask", "rules": [
                {"id": "no-push", "effect": "exec", "action": "deny", "command": ["git push*"]},
                {"id": "tests", "effect": "exec", "action": "allow", "command": ["cargo test*"]},
                {"id": "confine", "effect": "write", "action": "deny", "outside": "work_folder"},
            ]}),
        ),
    );
    env.wait_state(&s, "t", "active").await;

    // A push hidden behind a `cd` and git's `-C` is still a push.
    env.say(&s, "t", "run: cd sub && git -C .. push origin");
    env.wait("turn 1", |e| turn_ends(e, &s, "t") == 1).await;
    env.say(&s, "t", "run: cargo test -p x");
    env.wait("turn 2", |e| turn_ends(e, &s, "t") == 2).await;
    env.say(&s, "t", "run: sudo ls");
    env.wait("turn 3", |e| turn_ends(e, &s, "t") == 3).await;
    env.say(&s, "t", "write: ../elsewhere/notes.md");
    env.wait("turn 4", |e| turn_ends(e, &s, "t") == 4).await;
    // No rule matches: the default `ask` puts it to a person.
    env.say(&s, "t", "run: make deploy");
    env.wait("prompt", |e| {
        e.has(
            &s,
            "t",
            "pending_prompt",
            "Bash: make deploy\n  1. Approve\n  2. Deny",
        )
    })
    .await;
    env.say(&s, "t", "yes");
    env.wait("turn 5", |e| turn_ends(e, &s, "t") == 5).await;

    let applied = "Policy in force: 4 rule(s), default ask";
    let got = env.transcript(&s, "t");
    let got: Vec<(&str, &str)> = got.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(
        got,
        [
            ("", "run: cd sub && git -C .. push origin"),
            ("policy_applied", applied),
            (
                "policy_denied",
                "Blocked by policy rule 'no-push': cd sub && git -C .. push origin"
            ),
            ("text", "refused: Denied by policy rule 'no-push'"),
            ("turn_end", "Turn complete"),
            ("", "run: cargo test -p x"),
            ("policy_applied", applied),
            ("text", "ran: cargo test -p x"),
            ("turn_end", "Turn complete"),
            ("", "run: sudo ls"),
            ("policy_applied", applied),
            ("policy_denied", "Blocked by policy rule 'no-sudo': sudo ls"),
            ("text", "refused: Denied by policy rule 'no-sudo'"),
            ("turn_end", "Turn complete"),
            ("", "write: ../elsewhere/notes.md"),
            ("policy_applied", applied),
            (
                "policy_denied",
                "Blocked by policy rule 'confine': ../elsewhere/notes.md"
            ),
            ("text", "refused: Denied by policy rule 'confine'"),
            ("turn_end", "Turn complete"),
            ("", "run: make deploy"),
            ("policy_applied", applied),
            (
                "pending_prompt",
                "Bash: make deploy\n  1. Approve\n  2. Deny"
            ),
            ("", "yes"),
            ("pending_prompt_resolved", "✓ Answered: Approve"),
            ("text", "ran: make deploy"),
            ("turn_end", "Turn complete"),
        ]
    );
    let items = env.items(&s, "t");
    let applied = items
        .iter()
        .find(|i| i["metadata"]["type"] == "policy_applied")
        .unwrap();
    assert_eq!(
        applied["metadata"]["rules"],
        json!([
            {"id": "no-sudo", "origin": "worker", "action": "deny"},
            {"id": "no-push", "origin": "thread", "action": "deny"},
            {"id": "tests", "origin": "thread", "action": "allow"},
            {"id": "confine", "origin": "thread", "action": "deny"},
        ])
    );
    let denied = items
        .iter()
        .find(|i| i["metadata"]["type"] == "policy_denied")
        .unwrap();
    assert_eq!(denied["metadata"]["rule"], "no-push");
    assert_eq!(denied["metadata"]["effect"], "exec");
    assert_eq!(env.state(&s, "t"), "active");
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_problems_fail_only_their_thread_with_a_code() {
    let env = Env::new().await;
    let s = env.session("ses_policy_codes");
    env.configure(&[&s], 4, "policy:\n  allow_autonomous: false\n");
    let worker = env.start().await;
    env.wait_attached(&s).await;
    let mut missing = envelope("pending", env.work_folder());
    missing["thread"]["metadata"]["agent"]["permissions"] = json!("guarded");
    env.set_envelope(&s, "missing", missing);
    env.set_envelope(
        &s,
        "invalid",
        guarded(&env, json!({"rules": [{"effect": "shell"}]})),
    );
    let mut autonomous = envelope("pending", env.work_folder());
    autonomous["thread"]["metadata"]["agent"]["permissions"] = json!("autonomous");
    env.set_envelope(&s, "autonomous", autonomous);
    env.set_envelope(&s, "fine", guarded(&env, json!({"default": "deny"})));
    let reason = |e: &Env, alias: &str| {
        e.items(&s, alias)
            .iter()
            .find(|i| i["metadata"]["status"] == "error")
            .and_then(|i| i["metadata"]["code"].as_str().map(str::to_string))
    };
    env.wait("three failures", |e| {
        ["missing", "invalid", "autonomous"]
            .iter()
            .all(|a| e.state(&s, a) == "failed" && reason(e, a).is_some())
    })
    .await;
    assert_eq!(reason(&env, "missing").as_deref(), Some("POLICY_MISSING"));
    assert_eq!(reason(&env, "invalid").as_deref(), Some("POLICY_INVALID"));
    assert_eq!(
        reason(&env, "autonomous").as_deref(),
        Some("POLICY_AUTONOMOUS_FORBIDDEN")
    );
    // The other thread runs: a default `deny` refuses its call without asking anyone.
    env.wait_state(&s, "fine", "active").await;
    env.say(&s, "fine", "run: ls");
    env.wait("fine answered", |e| {
        e.has(
            &s,
            "fine",
            "text",
            "refused: Denied by policy rule 'default'",
        )
    })
    .await;
    assert!(env.has(
        &s,
        "fine",
        "policy_denied",
        "Blocked by policy rule 'default': ls"
    ));
    worker.terminate().await;
}
