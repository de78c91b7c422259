//! The section's revision (docs/session-agent-harness.md, "Attaching"): `revision_id: default`
//! is resolved through the revision endpoint at attach; while the revision is being committed
//! the section stands down (`REVISION_COMMITTING`) and carries on once it is `ready`.

use crate::harness_support::{Env, agent_processes, assert_no_duplicate_posts, eventually};
use crate::support::Running;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_section_on_the_default_revision_attaches_and_works() {
    let env = Env::new().await;
    let s = env.session("ses_default_rev");
    env.configure(&[&s], 4, "");
    let config = std::fs::read_to_string(env.home.tree.config_path()).unwrap();
    let pinned = format!("revision_id: {}", s.revision_id);
    assert!(config.contains(&pinned));
    env.home
        .write_config(&config.replace(&pinned, "revision_id: default"));
    let worker = env.start().await;
    env.wait_attached(&s).await;
    env.handoff(&s, "t");
    env.wait_state(&s, "t", "active").await;
    env.exchange(&s, "t", "hello").await;
    worker.terminate().await;
}

/// The section's `attachment` in its local `section.yaml` says `state` with `code`.
/// Sets the session's revision `status` (`committing`, `ready`) on the platform.
fn commit_state(env: &Env, s: &blobhub_emulator::SessionIds, status: &str) {
    env.admin
        .set_revision(&s.revision_id, None, Some(status))
        .unwrap();
}

/// A worker whose thread `t` runs a turn on `message` (no agent started ahead, so a test agent in
/// the folder means the turn runs).
async fn turn_running(
    session: &str,
    message: &str,
) -> (Env, blobhub_emulator::SessionIds, Running) {
    let env = Env::new().await;
    let s = env.session(session);
    env.configure(&[&s], 4, "    prestart: false\n");
    let worker = env.start().await;
    env.handoff(&s, "t");
    env.wait_state(&s, "t", "active").await;
    env.say(&s, "t", message);
    eventually("the agent runs", || agent_processes(env.work_folder()) == 1).await;
    (env, s, worker)
}

fn section_says(env: &Env, s: &blobhub_emulator::SessionIds, state: &str, code: &str) -> bool {
    std::fs::read_to_string(env.section_yaml(s))
        .is_ok_and(|y| y.contains(&format!("status: {state}")) && y.contains(code))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_being_committed_at_start_is_waited_for() {
    let env = Env::new().await;
    let s = env.session("ses_commit_attach");
    env.configure(&[&s], 4, "");
    commit_state(&env, &s, "committing");
    let worker = env.start().await;
    eventually("the section waits for the commit", || {
        section_says(&env, &s, "waiting", "REVISION_COMMITTING")
    })
    .await;
    assert!(env.activity(&s).is_empty(), "not attached meanwhile");

    commit_state(&env, &s, "ready");
    env.wait_attached(&s).await;
    env.handoff(&s, "t");
    env.exchange(&s, "t", "hello").await;
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_while_attached_quiesces_the_section_until_the_revision_is_ready() {
    let env = Env::new().await;
    let s = env.session("ses_commit_poll");
    env.configure(&[&s], 4, "");
    let worker = env.start().await;
    env.handoff(&s, "t");
    env.say(&s, "t", "ask: may I deploy?");
    env.wait("asked", |e| {
        e.transcript(&s, "t")
            .iter()
            .any(|(t, _)| t == "pending_prompt")
    })
    .await;
    assert_eq!(agent_processes(env.work_folder()), 1, "the agent waits");

    commit_state(&env, &s, "committing");
    eventually("the section quiesces", || {
        section_says(&env, &s, "quiescing", "REVISION_COMMITTING")
    })
    .await;
    // The waiting agent is stopped; its question stays open on the thread.
    eventually("no agent left", || agent_processes(env.work_folder()) == 0).await;

    commit_state(&env, &s, "ready");
    env.wait("the thread is back", |e| {
        e.activity(&s).contains(&"thread_recovered".to_string())
    })
    .await;
    assert!(section_says(&env, &s, "attached", ""));
    env.say(&s, "t", "yes");
    env.wait("the answer resumed the agent session", |e| {
        let t = e.transcript(&s, "t");
        t.iter().any(|(ty, x)| {
            ty == "text"
                && x == "echo: Your earlier question \"may I deploy?\" was answered: Approve"
        }) && t
            .iter()
            .any(|(ty, x)| ty == "turn_end" && x == "Turn complete")
    })
    .await;
    let asked = env
        .transcript(&s, "t")
        .iter()
        .filter(|(t, _)| t == "pending_prompt")
        .count();
    assert_eq!(asked, 1, "asked once");
    assert_no_duplicate_posts(&env, &s, "t");
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_reply_refused_during_a_commit_is_posted_once_the_revision_is_ready() {
    let (env, s, worker) = turn_running("ses_commit_turn", "sleep: 1500").await;
    // The section's event poll fails for now, so only the thread's own post meets the commit.
    env.admin.set_faults(
        "list_session_events",
        blobhub_emulator::Faults {
            rate_5xx: 1.0,
            ..Default::default()
        },
    );
    commit_state(&env, &s, "committing");
    env.wait("the reply was refused", |e| {
        e.admin
            .requests()
            .iter()
            .any(|r| r.command.as_deref() == Some("post_session_thread_item") && r.status == 409)
    })
    .await;
    commit_state(&env, &s, "ready");
    env.admin.clear_faults();
    env.wait("the reply and the turn's end are posted", |e| {
        e.has(&s, "t", "text", "echo: sleep: 1500") && e.has(&s, "t", "turn_end", "Turn complete")
    })
    .await;
    assert_eq!(env.state(&s, "t"), "active", "the thread did not fail");
    env.exchange(&s, "t", "after").await;
    assert_no_duplicate_posts(&env, &s, "t");
    worker.terminate().await;
}

/// A hand-off whose activation write meets a commit: the worker has read the envelope when the
/// revision starts committing, so the write's read-modify-write is refused
/// (`revision_not_ready`); the thread becomes active once the revision is ready, instead of the
/// write being given up and the thread left `pending`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activation_write_refused_during_a_commit_lands_once_the_revision_is_ready() {
    let env = Env::new().await;
    let s = env.session("ses_commit_write");
    env.configure(&[&s], 4, "");
    let worker = env.start().await;
    env.wait_attached(&s).await;
    let refused = |e: &Env, command: &str| {
        e.admin
            .requests()
            .iter()
            .any(|r| r.command.as_deref() == Some(command) && r.status == 409)
    };
    let reads = |e: &Env| {
        e.admin
            .requests()
            .iter()
            .filter(|r| r.command.as_deref() == Some("download_session_object"))
            .count()
    };
    let read_before = reads(&env);
    env.handoff(&s, "t");
    env.wait("the worker read the envelope", |e| reads(e) > read_before)
        .await;
    commit_state(&env, &s, "committing");
    env.wait("the activation write was refused", |e| {
        refused(e, "download_session_object") || refused(e, "upload_session_object")
    })
    .await;
    assert_eq!(env.state(&s, "t"), "pending");
    commit_state(&env, &s, "ready");
    env.wait_state(&s, "t", "active").await;
    env.exchange(&s, "t", "hello").await;
    assert_no_duplicate_posts(&env, &s, "t");
    worker.terminate().await;
}

/// A turn cut short by the section quiescing for a commit is closed `interrupted` on the thread
/// once the revision is ready (its closing post is refused while the commit runs), and the
/// thread takes the next message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_cut_by_a_commit_is_closed_interrupted_once_the_revision_is_ready() {
    let (env, s, worker) = turn_running("ses_commit_cut", "sleep: 60000").await;
    commit_state(&env, &s, "committing");
    eventually("the section quiesces", || {
        section_says(&env, &s, "quiescing", "REVISION_COMMITTING")
    })
    .await;
    eventually("no agent left", || agent_processes(env.work_folder()) == 0).await;
    commit_state(&env, &s, "ready");
    env.wait("the cut turn is closed", |e| {
        e.items(&s, "t").iter().any(|i| {
            i["metadata"]["type"] == "turn_end" && i["metadata"]["status"] == "interrupted"
        })
    })
    .await;
    env.exchange(&s, "t", "after").await;
    env.wait("the next turn ends", |e| {
        e.items(&s, "t")
            .iter()
            .filter(|i| i["metadata"]["type"] == "turn_end")
            .count()
            == 2
    })
    .await;
    let kinds: Vec<(String, String)> = env.transcript(&s, "t");
    assert_eq!(
        kinds,
        [
            ("", "sleep: 60000"),
            ("turn_end", "Turn ended (interrupted)"),
            ("", "after"),
            ("text", "echo: after"),
            ("turn_end", "Turn complete"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert_no_duplicate_posts(&env, &s, "t");
    worker.terminate().await;
}
