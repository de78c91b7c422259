//! The long tail of a hostile environment (issue 15): outages held past every retry budget,
//! late-visible items, poison data, hostile envelopes. Each fault is held until the emulator has
//! refused many more requests than the worker's former give-up budgets allowed (counted on the
//! emulator's request log, not timed), with the backoff cap (`polling.backoff_max_ms`) set low so
//! minutes of an outage pass in seconds.

use std::time::Duration;

use blobhub_emulator::{Faults, SessionIds};
use serde_json::{Value, json};

use crate::harness_support::{Env, TEST_AGENT, alice, envelope};
use crate::support::Running;

/// Refused requests a fault is held for: far past the former budgets (a read: 5 host attempts ×
/// 5 guest tries = 25; an envelope write: 7 tries).
const PAST_EVERY_BUDGET: usize = 60;

/// One section on `s`, the test agent, and a 100 ms backoff cap.
fn configure_fast(env: &Env, s: &SessionIds) {
    env.home.write_config(&format!(
        "polling:\n  interval_idle_ms: 50\n  interval_active_ms: 50\n  backoff_max_ms: 100\n\
         concurrency:\n  max_agents: 4\n\
         agents:\n  test_double:\n    executable: {TEST_AGENT}\n\
         sections:\n  - name: s0\n    job_type: session_agent_harness\n    \
         session: {{org_id: {}, blob_id: {}, revision_id: {}, session_id: {}}}\n",
        s.org_id, s.blob_id, s.revision_id, s.session_id
    ));
}

fn refused(env: &Env, command: &str) -> usize {
    env.admin
        .requests()
        .iter()
        .filter(|r| r.command.as_deref() == Some(command) && r.status >= 500)
        .count()
}

fn fail_all(env: &Env, command: &str) {
    env.admin.set_faults(
        command,
        Faults {
            rate_5xx: 1.0,
            ..Faults::default()
        },
    );
}

/// A worker with fast polling on a new session, once its section has attached.
async fn attached_fast(session: &str) -> (Env, SessionIds, Running) {
    let env = Env::new().await;
    let s = env.session(session);
    configure_fast(&env, &s);
    let worker = env.start().await;
    attached(&env, &s).await;
    (env, s, worker)
}

async fn attached(env: &Env, s: &SessionIds) {
    env.wait("attached", |e| {
        e.activity(s).contains(&"attached".to_string())
    })
    .await;
}

/// Item 1: a thread handed off while its object cannot be read is taken up when the reads
/// succeed again, however long that took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_during_a_long_read_outage_is_taken_up_when_it_ends() {
    let (env, s, worker) = attached_fast("ses_read_outage").await;

    fail_all(&env, "download_session_object");
    env.handoff(&s, "tasks/t1");
    env.wait("the read outage outlasting every budget", |e| {
        refused(e, "download_session_object") >= PAST_EVERY_BUDGET
    })
    .await;
    assert_eq!(env.state(&s, "tasks/t1"), "pending");
    env.admin.clear_faults();

    env.wait_state(&s, "tasks/t1", "active").await;
    env.exchange(&s, "tasks/t1", "hello").await;
    worker.terminate().await;
}

/// Item 2: a thread that fails while its envelope cannot be written ends `failed` once the
/// writes succeed again, and says so once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_during_a_long_write_outage_lands_when_it_ends() {
    let (env, s, worker) = attached_fast("ses_write_outage").await;
    env.handoff(&s, "tasks/t1");
    env.wait_state(&s, "tasks/t1", "active").await;

    fail_all(&env, "upload_session_object");
    env.say(&s, "tasks/t1", "crash");
    env.wait("the write outage outlasting every budget", |e| {
        refused(e, "upload_session_object") >= PAST_EVERY_BUDGET
    })
    .await;
    assert_eq!(env.state(&s, "tasks/t1"), "active");
    let thread_yaml = env
        .home
        .root()
        .join("jobs/session_agent_harness-ses_write_outage/threads/tasks/t1/thread.yaml");
    let local = std::fs::read_to_string(&thread_yaml).unwrap();
    assert!(
        local.contains("outstanding: 'envelope write: failed'")
            || local.contains("outstanding: \"envelope write: failed\"")
            || local.contains("outstanding: envelope write: failed"),
        "{local}"
    );
    env.admin.clear_faults();

    env.wait_state(&s, "tasks/t1", "failed").await;
    env.wait("thread_failed announced", |e| {
        e.activity(&s).contains(&"thread_failed".to_string())
    })
    .await;
    let failed = env
        .activity(&s)
        .iter()
        .filter(|t| *t == "thread_failed")
        .count();
    assert_eq!(failed, 1);
    let local = std::fs::read_to_string(&thread_yaml).unwrap();
    assert!(!local.contains("outstanding"), "{local}");
    worker.terminate().await;
}

/// Item 2 across a restart: the worker is killed while its `failed` write is still being
/// retried; the next run finishes the write and announces the failure once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outstanding_failure_is_finished_after_a_restart() {
    let env = Env::new().await;
    let s = env.session("ses_redrive");
    configure_fast(&env, &s);
    let mut worker = env.start().await;
    attached(&env, &s).await;
    env.handoff(&s, "tasks/t1");
    env.wait_state(&s, "tasks/t1", "active").await;

    fail_all(&env, "upload_session_object");
    env.say(&s, "tasks/t1", "crash");
    env.wait("the write outage outlasting every budget", |e| {
        refused(e, "upload_session_object") >= PAST_EVERY_BUDGET
    })
    .await;
    worker.child.kill().await.unwrap();
    assert_eq!(env.state(&s, "tasks/t1"), "active");
    assert!(!env.activity(&s).contains(&"thread_failed".to_string()));
    env.admin.clear_faults();

    let worker = env.start().await;
    env.wait_state(&s, "tasks/t1", "failed").await;
    env.wait("thread_failed announced", |e| {
        e.activity(&s).contains(&"thread_failed".to_string())
    })
    .await;
    assert!(!env.activity(&s).contains(&"thread_recovered".to_string()));
    let failed = env
        .activity(&s)
        .iter()
        .filter(|t| *t == "thread_failed")
        .count();
    assert_eq!(failed, 1);
    worker.terminate().await;
}

/// Item 8: while one thread's writes fail, another thread's messages are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_threads_outage_does_not_hold_up_another() {
    let (env, s, worker) = attached_fast("ses_isolated").await;
    env.handoff(&s, "tasks/ok");
    env.wait_state(&s, "tasks/ok", "active").await;

    // Every envelope write fails: the new hand-off cannot go active, and the activity log
    // (`thread_registered`) cannot be written either.
    fail_all(&env, "upload_session_object");
    env.admin.set_faults(
        "post_session_thread_item",
        Faults {
            rate_5xx: 1.0,
            times: Some(40),
            ..Faults::default()
        },
    );
    env.handoff(&s, "tasks/stuck");
    env.wait("the outage outlasting every budget", |e| {
        refused(e, "upload_session_object") >= PAST_EVERY_BUDGET
    })
    .await;
    env.admin
        .set_faults("post_session_thread_item", Faults::default());
    env.say(&s, "tasks/ok", "still here?");
    env.wait("the healthy thread answered", |e| {
        e.has(&s, "tasks/ok", "text", "echo: still here?")
    })
    .await;
    assert_eq!(env.state(&s, "tasks/stuck"), "pending");
    env.admin.clear_faults();
    env.wait("the stuck thread active", |e| {
        e.state(&s, "tasks/stuck") == "active"
    })
    .await;
    worker.terminate().await;
}

/// Item 6: a message that becomes visible after a later one is still delivered, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_visible_message_is_delivered_once() {
    let (env, s, worker) = attached_fast("ses_late").await;
    env.handoff(&s, "tasks/t1");
    env.wait_state(&s, "tasks/t1", "active").await;

    env.admin
        .post_item_hidden(
            &s.session_id,
            "tasks/t1",
            json!([{"type": "text", "text": "early"}]),
            &alice().id,
            Duration::from_secs(3),
        )
        .unwrap();
    env.say(&s, "tasks/t1", "later");
    let echoes_of = |e: &Env, word: &str| {
        e.transcript(&s, "tasks/t1")
            .iter()
            .filter(|(ty, t)| ty == "text" && t.starts_with("echo:") && t.contains(word))
            .count()
    };
    env.wait("both messages answered", |e| {
        echoes_of(e, "later") >= 1 && echoes_of(e, "early") >= 1
    })
    .await;
    // Nothing is answered twice: one more message settles the thread, then count.
    env.say(&s, "tasks/t1", "last");
    env.wait("last", |e| echoes_of(e, "last") == 1).await;
    assert_eq!(echoes_of(&env, "early"), 1);
    assert_eq!(echoes_of(&env, "later"), 1);
    worker.terminate().await;
}

/// Item 5: another user's item copying one of the worker's post ids is still a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_copying_a_worker_post_id_is_heard() {
    let (env, s, worker) = attached_fast("ses_copied").await;
    env.handoff(&s, "tasks/t1");
    env.wait_state(&s, "tasks/t1", "active").await;
    env.exchange(&s, "tasks/t1", "first").await;
    let worker_post = env
        .items(&s, "tasks/t1")
        .iter()
        .find(|i| i.pointer("/metadata/type").and_then(Value::as_str) == Some("text"))
        .and_then(|i| i.pointer("/metadata/post_id").and_then(Value::as_str))
        .unwrap()
        .to_string();
    env.admin
        .post_item(
            &s.session_id,
            "tasks/t1",
            json!([{"type": "text", "text": "copied"}]),
            Some(json!({"type": "text", "post_id": worker_post})),
            &alice().id,
        )
        .unwrap();
    env.wait("the copied-id message answered", |e| {
        e.has(&s, "tasks/t1", "text", "echo: copied")
    })
    .await;
    worker.terminate().await;
}

/// A value nested `levels` deep (valid JSON the platform stores and serves).
fn deep(levels: usize) -> Value {
    let mut v = json!("bottom");
    for _ in 0..levels {
        v = json!([v]);
    }
    v
}

/// Items 3 and 7: an item and an object the parser rejects are permanent and local: the item is
/// skipped with a code, the object is left alone, and nothing is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparseable_items_and_objects_are_skipped_with_a_code() {
    let (env, s, worker) = attached_fast("ses_poison").await;
    env.handoff(&s, "tasks/t1");
    env.wait_state(&s, "tasks/t1", "active").await;

    // An object 200 levels deep and one over the size limit beside the thread, and a deep item
    // on the thread itself.
    let mut bad = envelope("pending", env.work_folder());
    bad["thread"]["attributes"]["extra"] = deep(200);
    env.set_envelope(&s, "tasks/poison", bad);
    // And one whose value is over the 64 MiB a parsed answer may hold.
    let mut huge = envelope("pending", env.work_folder());
    huge["thread"]["attributes"]["extra"] = json!("x".repeat(65 * 1024 * 1024));
    env.set_envelope(&s, "tasks/huge", huge);
    env.admin
        .post_item(
            &s.session_id,
            "tasks/t1",
            json!([{"type": "text", "text": "deep"}]),
            Some(json!({"blob": deep(200)})),
            &alice().id,
        )
        .unwrap();
    env.say(&s, "tasks/t1", "after");
    env.wait("the message after the bad item answered", |e| {
        e.has(&s, "tasks/t1", "text", "echo: after")
    })
    .await;
    env.wait("the bad item reported", |e| {
        e.transcript(&s, "tasks/t1")
            .iter()
            .any(|(t, x)| t == "status" && x.starts_with("ITEM_UNREADABLE"))
    })
    .await;
    // The bad object is read once per event, not retried: its thread never starts.
    let reads = env
        .admin
        .requests()
        .iter()
        .filter(|r| r.command.as_deref() == Some("download_session_object"))
        .count();
    env.exchange(&s, "tasks/t1", "again").await;
    let later_reads = env
        .admin
        .requests()
        .iter()
        .filter(|r| r.command.as_deref() == Some("download_session_object"))
        .count();
    assert!(later_reads <= reads + 2, "{reads} → {later_reads}");
    assert_eq!(env.state(&s, "tasks/poison"), "pending");
    assert_eq!(env.state(&s, "tasks/huge"), "pending");
    worker.terminate().await;
}

/// Item 9: a thread cannot point its agent outside the allowed roots, into the state tree, at
/// a system folder, through a symlink or through `..`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_folders_outside_the_allowed_roots_fail_the_thread() {
    let (env, s, worker) = attached_fast("ses_confined").await;
    let link = env.work_folder().join("to-etc");
    std::os::unix::fs::symlink("/etc", &link).unwrap();
    let tree = env.home.root().to_str().unwrap().to_string();
    let dotdot = format!("{}/../../../../../proc/self", env.work_folder().display());
    let cases = [
        ("tasks/root", "/".to_string()),
        ("tasks/etc", "/etc".to_string()),
        ("tasks/tree", tree),
        ("tasks/link", link.to_str().unwrap().to_string()),
        ("tasks/dotdot", dotdot),
    ];
    for (alias, folder) in &cases {
        let mut e = envelope("pending", env.work_folder());
        e["thread"]["metadata"]["workspace"]["work_folder"] = json!(folder);
        env.set_envelope(&s, alias, e);
    }
    for (alias, _) in &cases {
        env.wait("active", |e| e.state(&s, alias) == "active").await;
        env.say(&s, alias, "where am I?");
    }
    for (alias, folder) in &cases {
        env.wait(&format!("{alias} ({folder}) failed"), |e| {
            e.state(&s, alias) == "failed"
        })
        .await;
        assert!(
            env.transcript(&s, alias)
                .iter()
                .any(|(t, x)| t == "status" && x.starts_with("WORK_FOLDER_NOT_ALLOWED")),
            "{alias}: {:?}",
            env.transcript(&s, alias)
        );
    }
    // The allowed folder still works.
    env.handoff(&s, "tasks/fine");
    env.wait_state(&s, "tasks/fine", "active").await;
    env.exchange(&s, "tasks/fine", "hi").await;
    worker.terminate().await;
}

/// Thread-supplied model and effort are checked before they reach the agent's command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_model_name_fails_with_a_settings_code() {
    let (env, s, worker) = attached_fast("ses_model").await;
    let mut e = envelope("pending", env.work_folder());
    e["thread"]["metadata"]["agent"]["model"] = json!("sonnet --dangerously-skip-permissions");
    env.set_envelope(&s, "tasks/t1", e);
    env.wait_state(&s, "tasks/t1", "failed").await;
    assert!(
        env.transcript(&s, "tasks/t1")
            .iter()
            .any(|(t, x)| t == "status" && x.starts_with("AGENT_SETTINGS_INVALID")),
        "{:?}",
        env.transcript(&s, "tasks/t1")
    );
    worker.terminate().await;
}

/// Item 4: every file of the corpus that once hung `config check` and `start` is answered with
/// `INVALID_CONFIG` naming the nesting limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pathological_configs_are_refused_by_check_and_start() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config-corpus");
    let mut files: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4);
    for file in files {
        let home = crate::support::Home::new();
        // `start` checks the config after the credentials and the identity.
        home.write_credentials("http://127.0.0.1:9/v1", "bhk_unused");
        home.write_identity("usr_unused");
        // Written as is: the test helper's `write_config` would append a block.
        std::fs::copy(&file, home.tree.config_path()).unwrap();
        for args in [&["config", "check"][..], &["start"][..]] {
            let out = home.run(args, None).await;
            assert!(!out.status.success(), "{args:?} {}", file.display());
            assert!(
                out.stdout.contains("INVALID_CONFIG") || out.stderr.contains("INVALID_CONFIG"),
                "{args:?} {}: {} {}",
                file.display(),
                out.stdout,
                out.stderr
            );
            assert!(
                format!("{}{}", out.stdout, out.stderr).contains("nested deeper than 64"),
                "{args:?} {}: {}",
                file.display(),
                out.stderr
            );
        }
    }
}
