//! session_agent_harness end to end: the real worker binary, the emulator over HTTP and the test
//! agent as a real process (docs/session-agent-harness.md, docs/testing.md).

use serde_json::json;

use crate::harness_support::{Env, agent_processes, alice, envelope, eventually};
use crate::support::demo_user;

/// Completed turns on `tasks/t1`.
fn turns(env: &Env, s: &blobhub_emulator::SessionIds) -> usize {
    env.transcript(s, "tasks/t1")
        .iter()
        .filter(|(t, _)| t == "turn_end")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_conversation() {
    let env = Env::new().await;
    let s = env.session("ses_conv");
    env.configure(&[&s], 4, "");
    let worker = env.start().await;
    env.wait_attached(&s).await;

    env.handoff(&s, "tasks/t1");
    env.wait_state(&s, "tasks/t1", "active").await;
    env.say(&s, "tasks/t1", "hello");
    env.wait("turn 1", |e| turns(e, &s) == 1).await;

    // A person using the worker's own account is heard too.
    env.say_as(&s, "tasks/t1", "same account", &demo_user().id);
    env.wait("turn 2", |e| turns(e, &s) == 2).await;

    env.say(&s, "tasks/t1", "ask: may I deploy?");
    env.wait("prompt", |e| {
        e.transcript(&s, "tasks/t1")
            .iter()
            .any(|(t, _)| t == "pending_prompt")
    })
    .await;
    env.say(&s, "tasks/t1", "yes");
    env.wait("turn 3", |e| turns(e, &s) == 3).await;

    env.set_state(&s, "tasks/t1", "completed");
    env.wait("completed", |e| {
        e.activity(&s).contains(&"thread_completed".to_string())
    })
    .await;

    let transcript: Vec<(String, String)> = env.transcript(&s, "tasks/t1");
    let expected: Vec<(&str, &str)> = vec![
        ("", "hello"),
        ("text", "echo: hello"),
        ("turn_end", "Turn complete"),
        ("", "same account"),
        ("text", "echo: same account"),
        ("turn_end", "Turn complete"),
        ("", "ask: may I deploy?"),
        ("pending_prompt", "may I deploy?\n  1. Approve\n  2. Deny"),
        ("", "yes"),
        ("pending_prompt_resolved", "✓ Answered: Approve"),
        ("text", "answered: Approve"),
        ("turn_end", "Turn complete"),
    ];
    let got: Vec<(&str, &str)> = transcript
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(
        got,
        expected,
        "{:#?}",
        env.items(&s, "tasks/t1")
            .iter()
            .map(|i| (
                i["id"].clone(),
                i["created_at"].clone(),
                i["metadata"].clone()
            ))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        env.activity(&s),
        [
            "attached",
            "thread_registered",
            "thread_active",
            "thread_completed"
        ]
    );
    for (ty, text) in env.transcript(&s, "worker") {
        assert!(!text.is_empty(), "{ty} has a readable text");
    }
    crate::harness_support::assert_no_duplicate_posts(&env, &s, "tasks/t1");
    assert_eq!(env.state(&s, "tasks/t1"), "completed");
    let thread_yaml = std::fs::read_to_string(
        env.home
            .root()
            .join("jobs/session_agent_harness-ses_conv/threads/tasks/t1/thread.yaml"),
    )
    .unwrap();
    assert!(thread_yaml.contains("state: completed"), "{thread_yaml}");
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_agent_slot_shared_by_two_sections() {
    let env = Env::new().await;
    let (a, b) = (env.session("ses_a"), env.session("ses_b"));
    env.configure(&[&a, &b], 1, "");
    let worker = env.start().await;
    env.wait("both attached", |e| {
        e.activity(&a).contains(&"attached".to_string())
            && e.activity(&b).contains(&"attached".to_string())
    })
    .await;
    env.handoff(&a, "t");
    env.wait_state(&a, "t", "active").await;
    env.say(&a, "t", "sleep: 2000");
    eventually("the first thread's agent runs", || {
        agent_processes(env.work_folder()) == 1
    })
    .await;
    env.handoff(&b, "t");
    env.wait("second thread registered", |e| {
        e.activity(&b).contains(&"thread_registered".to_string())
    })
    .await;
    // The only slot is busy with the first thread's turn: the second waits.
    assert_eq!(env.state(&b, "t"), "pending");
    env.wait("first thread works", |e| {
        e.has(&a, "t", "text", "echo: sleep: 2000")
    })
    .await;
    // Between turns the first thread gives the slot to the one queued for it.
    env.wait_state(&b, "t", "active").await;
    env.say(&b, "t", "two");
    env.wait("second thread works", |e| {
        e.has(&b, "t", "text", "echo: two")
    })
    .await;
    // And the first gets it back for its next message.
    env.say(&a, "t", "three");
    env.wait("first thread works again", |e| {
        e.has(&a, "t", "text", "echo: three")
    })
    .await;
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_owned_by_another_user_is_refused() {
    let env = Env::new().await;
    let (taken, free) = (env.session("ses_taken"), env.session("ses_free"));
    let foreign = json!({"type": "thread", "thread": {"metadata": {
        "user": {"user_id": alice().id}, "instance": {"status": "attached"}}}});
    env.set_envelope(&taken, "worker", foreign.clone());
    env.configure(&[&taken, &free], 4, "");
    let worker = env.start().await;
    env.wait("the free session attaches", |e| {
        e.activity(&free).contains(&"attached".to_string())
    })
    .await;
    let path = env.section_yaml(&taken);
    eventually("the refusal is recorded", || {
        std::fs::read_to_string(&path).is_ok_and(|t| t.contains("SESSION_OWNED_BY_DIFFERENT_USER"))
    })
    .await;
    assert_eq!(
        env.admin.object(&taken.session_id, "worker").unwrap(),
        foreign
    );
    assert!(env.activity(&taken).is_empty());
    worker.terminate().await;
}

/// While attached, the worker restamps `last_seen_at` on its `worker` object (every 30 s), keeping
/// the owner and status; nothing else in the session changes for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_object_heartbeat_keeps_it_fresh() {
    let env = Env::new().await;
    let s = env.session("ses_beat");
    env.configure(&[&s], 4, "");
    let worker = env.start().await;
    env.wait_attached(&s).await;
    // Every upload of the attach was answered before `attached` was posted.
    let attached_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let instance = |e: &Env| {
        e.admin.object(&s.session_id, "worker").unwrap()["thread"]["metadata"]["instance"].clone()
    };
    let attached = instance(&env);
    let first = attached["last_seen_at"].as_str().unwrap().to_owned();
    env.wait("a heartbeat", |e| {
        instance(e)["last_seen_at"]
            .as_str()
            .is_some_and(|seen| seen > first.as_str())
    })
    .await;
    let beaten = instance(&env);
    assert_eq!(beaten["status"], "attached");
    assert_eq!(beaten["instance_id"], attached["instance_id"]);
    let owner = &env.admin.object(&s.session_id, "worker").unwrap()["thread"]["metadata"]["user"];
    assert_eq!(owner["user_id"], "usr_demo");
    assert_eq!(env.activity(&s), ["attached"], "a heartbeat posts nothing");

    // The heartbeat's echo (an event about the worker object) changes nothing a restart must
    // redo, so the section does not rewrite its state file for it: three event polls after the
    // beat, the cursor on disk is still older than the echo. At shutdown it is written.
    let echo_at = env
        .admin
        .events(&s.session_id)
        .iter()
        .filter(|e| e["type"] == "session_object_modified")
        .filter(|e| e["session_object"]["alias"] == "worker")
        .filter_map(|e| e["created_at"].as_str().map(str::to_owned))
        .next_back()
        .unwrap();
    // The emulator logs a request once it has answered: the beat's state may be visible first.
    let beat_logged = |e: &Env| {
        e.admin
            .requests()
            .iter()
            .filter(|r| r.command.as_deref() == Some("upload_session_object"))
            .map(|r| r.received_at_us)
            .find(|at| *at > attached_us)
    };
    env.wait("the beat in the request log", |e| beat_logged(e).is_some())
        .await;
    let beat_us = beat_logged(&env).unwrap();
    env.wait("three event polls after the beat", |e| {
        e.admin
            .requests()
            .iter()
            .filter(|r| r.command.as_deref() == Some("list_session_events"))
            .filter(|r| r.received_at_us > beat_us)
            .count()
            >= 3
    })
    .await;
    let processed = |e: &Env| {
        let text = std::fs::read_to_string(e.section_yaml(&s)).unwrap();
        let record: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        record["events"]["last_processed_at"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        processed(&env) < echo_at,
        "the echo's cursor was written at once"
    );
    let end = worker.terminate().await;
    assert!(
        processed(&env) >= echo_at,
        "the echo's cursor ({echo_at}) was not written at shutdown: {}\n{}",
        std::fs::read_to_string(env.section_yaml(&s)).unwrap(),
        end.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_worker_object_detaches_only_that_section() {
    let env = Env::new().await;
    let (a, b) = (env.session("ses_a"), env.session("ses_b"));
    // Both threads share the work folder and the test counts agents there: none is started ahead
    // of its message.
    env.configure(&[&a, &b], 4, "    prestart: false\n");
    let worker = env.start().await;
    env.handoff(&a, "t");
    env.handoff(&b, "t");
    env.wait("both active", |e| {
        e.state(&a, "t") == "active" && e.state(&b, "t") == "active"
    })
    .await;
    env.say(&a, "t", "sleep: 600000");
    let wf = env.work_folder().to_path_buf();
    eventually("the agent runs", || agent_processes(&wf) == 1).await;
    env.admin.delete_object(&a.session_id, "worker").unwrap();
    eventually("no agent left", || agent_processes(&wf) == 0).await;
    let path = env.section_yaml(&a);
    eventually("detach recorded", || {
        std::fs::read_to_string(&path).is_ok_and(|t| t.contains("SESSION_DETACHED_EXTERNALLY"))
    })
    .await;
    env.say(&b, "t", "still here");
    env.wait("the other section carries on", |e| {
        e.has(&b, "t", "text", "echo: still here")
    })
    .await;
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_envelopes_fail_with_a_code_or_are_ignored() {
    let env = Env::new().await;
    let s = env.session("ses_bad");
    env.configure(&[&s], 4, "");
    let worker = env.start().await;
    env.wait_attached(&s).await;
    let wf = env.work_folder().to_str().unwrap().to_string();
    let thread = |meta: serde_json::Value| json!({"type": "thread", "thread": {"metadata": meta}});
    let cases = [
        (
            "wrong-type",
            thread(
                json!({"instance": {"state": "pending"}, "agent": {"type": 5}, "workspace": {"work_folder": wf}}),
            ),
            Some("AGENT_TYPE_UNSUPPORTED"),
        ),
        (
            "no-workspace",
            thread(json!({"instance": {"state": "pending"}, "agent": {"type": "test_double"}})),
            Some("WORK_FOLDER_NOT_ABSOLUTE"),
        ),
        (
            "huge",
            thread(
                json!({"instance": {"state": "pending"}, "agent": {"type": "x".repeat(50_000)}, "workspace": {"work_folder": wf}}),
            ),
            Some("AGENT_TYPE_UNSUPPORTED"),
        ),
        (
            "exe",
            thread(
                json!({"instance": {"state": "pending"}, "agent": {"type": "test_double", "executable": "/bin/sh"}, "workspace": {"work_folder": wf}}),
            ),
            Some("AGENT_EXECUTABLE_NOT_ALLOWED"),
        ),
        (
            "perm",
            thread(
                json!({"instance": {"state": "pending"}, "agent": {"type": "test_double", "permissions": "yolo"}, "workspace": {"work_folder": wf}}),
            ),
            Some("PERMISSIONS_UNSUPPORTED"),
        ),
        (
            "unknown-state",
            thread(
                json!({"instance": {"state": "banana"}, "agent": {"type": "test_double"}, "workspace": {"work_folder": wf}}),
            ),
            None,
        ),
        (
            "state-list",
            thread(json!({"instance": {"state": ["pending"]}})),
            None,
        ),
        (
            "not-a-thread",
            json!({"type": "thread", "thread": "x"}),
            None,
        ),
    ];
    for (alias, value, _) in &cases {
        env.set_envelope(&s, alias, value.clone());
    }
    env.handoff(&s, "good");
    env.wait_state(&s, "good", "active").await;
    env.say(&s, "good", "fine");
    env.wait("the good thread answers", |e| {
        e.has(&s, "good", "text", "echo: fine")
    })
    .await;
    for (alias, _, code) in &cases {
        if let Some(code) = code {
            env.wait(&format!("{alias} failed with {code}"), |e| {
                e.state(&s, alias) == "failed"
                    && e.transcript(&s, alias)
                        .iter()
                        .any(|(t, x)| t == "status" && x.starts_with(code))
            })
            .await;
        }
    }
    for (alias, value, code) in &cases {
        if code.is_none() {
            assert_eq!(
                env.admin.object(&s.session_id, alias).as_ref(),
                Some(value),
                "{alias} untouched"
            );
            assert!(env.items(&s, alias).is_empty(), "{alias} has no items");
        }
    }
    let _ = envelope;
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_prompt_survives_a_restart() {
    let env = Env::new().await;
    let s = env.session("ses_prompt");
    env.configure(&[&s], 4, "");
    let worker = env.start().await;
    env.handoff(&s, "t");
    env.wait_state(&s, "t", "active").await;
    env.say(&s, "t", "ask: ship it?");
    env.wait("prompt", |e| {
        e.transcript(&s, "t")
            .iter()
            .any(|(t, _)| t == "pending_prompt")
    })
    .await;
    worker.terminate().await;
    let worker = env.start().await;
    env.wait("recovered", |e| {
        e.activity(&s).contains(&"thread_recovered".to_string())
    })
    .await;
    env.say(&s, "t", "no");
    env.wait("the answer reaches the resumed session", |e| {
        e.has(
            &s,
            "t",
            "text",
            "echo: Your earlier question \"ship it?\" was answered: Deny",
        )
    })
    .await;
    // The question was not asked again and the instruction was not replayed.
    let prompts = env
        .transcript(&s, "t")
        .iter()
        .filter(|(t, _)| t == "pending_prompt")
        .count();
    assert_eq!(prompts, 1);
    assert!(env.has(&s, "t", "pending_prompt_resolved", "✓ Answered: Deny"));
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_deletion_and_session_lifecycle() {
    let env = Env::new().await;
    let s = env.session("ses_life");
    // No agent started ahead of its message: a test agent in the folder then means a turn runs.
    env.configure(&[&s], 4, "    prestart: false\n");
    let worker = env.start().await;
    env.handoff(&s, "gone");
    env.handoff(&s, "busy");
    env.wait("active", |e| {
        e.state(&s, "gone") == "active" && e.state(&s, "busy") == "active"
    })
    .await;
    env.admin.delete_object(&s.session_id, "gone").unwrap();
    env.wait("thread_removed", |e| {
        e.activity(&s).contains(&"thread_removed".to_string())
    })
    .await;
    env.say(&s, "busy", "sleep: 600000");
    let wf = env.work_folder().to_path_buf();
    eventually("the agent runs", || agent_processes(&wf) == 1).await;
    env.admin
        .set_session_status(&s.session_id, "closing")
        .unwrap();
    eventually("quiesced: the turn is stopped", || {
        agent_processes(&wf) == 0
    })
    .await;
    let path = env.section_yaml(&s);
    eventually("quiescing recorded", || {
        std::fs::read_to_string(&path).is_ok_and(|t| t.contains("SESSION_CLOSING"))
    })
    .await;
    env.admin
        .set_session_status(&s.session_id, "closed")
        .unwrap();
    eventually("closed recorded", || {
        std::fs::read_to_string(&path).is_ok_and(|t| t.contains("code: SESSION_CLOSED"))
    })
    .await;
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_waiting_for_a_person_lends_its_slot() {
    let env = Env::new().await;
    let s = env.session("ses_lend");
    env.configure(&[&s], 1, "");
    let worker = env.start().await;
    env.handoff(&s, "a");
    env.wait_state(&s, "a", "active").await;
    env.say(&s, "a", "ask: wait for me?");
    env.wait("a asks", |e| {
        e.transcript(&s, "a")
            .iter()
            .any(|(t, _)| t == "pending_prompt")
    })
    .await;
    // While `a` waits for its person, `b` gets the only slot and works.
    env.handoff(&s, "b");
    env.wait_state(&s, "b", "active").await;
    env.exchange(&s, "b", "meanwhile").await;
    env.set_state(&s, "b", "completed");
    env.say(&s, "a", "yes");
    env.wait("a continues once the slot is free", |e| {
        e.has(&s, "a", "text", "answered: Approve")
    })
    .await;
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_thread_without_local_state_is_recovered_from_the_wire() {
    let env = Env::new().await;
    let s = env.session("ses_wiped");
    env.configure(&[&s], 4, "");
    let worker = env.start().await;
    env.handoff(&s, "t");
    env.wait_state(&s, "t", "active").await;
    env.say(&s, "t", "m0");
    env.wait("the first turn ends", |e| {
        e.items(&s, "t")
            .iter()
            .any(|i| i.pointer("/metadata/type") == Some(&json!("turn_end")))
    })
    .await;
    let session_before = env
        .items(&s, "t")
        .iter()
        .rev()
        .find_map(|i| i.pointer("/metadata/agent_session_id").cloned())
        .unwrap();
    worker.terminate().await;
    // The worker's state for this session is gone (another machine, a wiped home).
    std::fs::remove_dir_all(
        env.home
            .root()
            .join("jobs/session_agent_harness-ses_wiped/threads"),
    )
    .unwrap();
    env.say(&s, "t", "m1");
    let worker = env.start().await;
    env.wait("the second turn ends", |e| {
        e.items(&s, "t")
            .iter()
            .filter(|i| i.pointer("/metadata/type") == Some(&json!("turn_end")))
            .count()
            == 2
    })
    .await;
    assert_eq!(
        crate::harness_support::echo_counts(&env, &s, "t", 2),
        [1, 1]
    );
    let session_after = env
        .items(&s, "t")
        .iter()
        .rev()
        .find_map(|i| i.pointer("/metadata/agent_session_id").cloned())
        .unwrap();
    assert_eq!(
        session_before, session_after,
        "the agent session is resumed"
    );
    assert!(env.activity(&s).contains(&"thread_recovered".to_string()));
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_offline_and_exits_zero() {
    let out = tokio::process::Command::new(crate::support::WORKER)
        .arg("demo")
        .env_remove("BLOBHUB_WORKER_HOME")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "[agent]      echo: Hello! What can you do?",
        "[question]   May I run the test suite?",
        "[agent]      answered: Approve",
        "demo finished",
    ] {
        assert!(stdout.contains(line), "{line:?} in\n{stdout}");
    }
}
