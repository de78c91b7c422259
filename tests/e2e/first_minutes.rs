//! The first ten minutes of a new operator: every early mistake gets an answer that points at
//! its cause, the default output says what the worker does, and `--json` means JSON everywhere.
//! The real binary, the emulator over HTTP.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::harness_support::{Env, TEST_AGENT, eventually};
use crate::support::{Home, demo_user, emulator};

/// A schema error and a section's job-type error are reported by one `config check`.
#[tokio::test(flavor = "multi_thread")]
async fn config_check_reports_schema_and_job_type_errors_in_one_run() {
    let home = Home::new();
    home.write_config(
        "concurrency:
  max_agents: 0
sections:
  - name: a
    job_type: session_agent_harness
    session:
      org_id: org_1
      blob_id: blb_1
      revision_id: rev_1
",
    );
    let out = home.run(&["config", "check"], None).await;
    out.assert_code("INVALID_CONFIG");
    for needle in [
        "error: INVALID_CONFIG: line 2: concurrency.max_agents",
        "error: MISSING_SESSION_KEYS:",
        "sections[0].session.session_id",
        "2 error(s), 0 warning(s)",
    ] {
        assert!(out.stdout.contains(needle), "{needle}: {out:#?}");
    }
}

/// The section of `start`'s state tree for `session_id`.
fn section_yaml(home: &Home, session_id: &str) -> std::path::PathBuf {
    home.root().join(format!(
        "jobs/session_agent_harness-{session_id}/section.yaml"
    ))
}

fn attachment(home: &Home, session_id: &str) -> (String, String, String) {
    let text = std::fs::read_to_string(section_yaml(home, session_id)).unwrap_or_default();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap_or_default();
    let field = |p: &[&str]| {
        let mut v = &doc;
        for k in p {
            v = &v[*k];
        }
        v.as_str().unwrap_or_default().to_owned()
    };
    (
        field(&["attachment", "status"]),
        field(&["attachment", "error", "code"]),
        field(&["attachment", "error", "message"]),
    )
}

/// A typo in `revision_id`, `org_id` or `blob_id` refuses that section with a message naming the
/// ids (never the key), shown by `start` without `-v`; the correct section attaches.
#[tokio::test(flavor = "multi_thread")]
async fn wrong_ids_refuse_their_section_and_say_which_ids() {
    let env = Env::new().await;
    let good = env.session("ses_good");
    let bad_rev = env.session("ses_badrev");
    let bad_org = env.session("ses_badorg");
    let bad_blob = env.session("ses_badblob");
    env.home.write_config(&format!(
        "agents:\n  test_double:\n    executable: {TEST_AGENT}\nsections:\n\
         - name: good\n  job_type: session_agent_harness\n  session: {{org_id: {o}, blob_id: {b}, revision_id: {r}, session_id: {}}}\n\
         - name: typo-rev\n  job_type: session_agent_harness\n  session: {{org_id: {o}, blob_id: {b}, revision_id: rev_typo, session_id: {}}}\n\
         - name: typo-org\n  job_type: session_agent_harness\n  session: {{org_id: org_typo, blob_id: {b}, revision_id: {r}, session_id: {}}}\n\
         - name: typo-blob\n  job_type: session_agent_harness\n  session: {{org_id: {o}, blob_id: blb_typo, revision_id: {r}, session_id: {}}}\n",
        good.session_id,
        bad_rev.session_id,
        bad_org.session_id,
        bad_blob.session_id,
        o = good.org_id,
        b = good.blob_id,
        r = good.revision_id,
    ));
    let worker = env.start().await;
    env.wait("the good section attached", |e| {
        e.activity(&good).contains(&"attached".to_string())
    })
    .await;
    // A revision the blob does not have: the platform says so. A blob that does not exist: the
    // platform answers 403, as for a blob the key cannot see; the key itself was accepted.
    let expected = [
        (
            &bad_rev,
            "REVISION_NOT_FOUND",
            "check revision_id, org_id and blob_id",
        ),
        (
            &bad_org,
            "SESSION_NOT_FOUND",
            "one of org_id, blob_id, revision_id or session_id is wrong or not visible to this user",
        ),
        (
            &bad_blob,
            "SESSION_NOT_FOUND",
            "one of org_id, blob_id, revision_id or session_id is wrong or not visible to this user",
        ),
    ];
    for (s, want_code, want_text) in expected {
        eventually(&format!("{} refused", s.session_id), || {
            attachment(&env.home, &s.session_id).0 == "refused"
        })
        .await;
        let (_, code, message) = attachment(&env.home, &s.session_id);
        assert_eq!(code, want_code, "{message}");
        assert!(message.contains(want_text), "{message}");
        assert!(message.contains("blob `"), "names the ids: {message}");
        assert!(!message.contains("AUTH_INVALID"), "{message}");
        // Nothing was written to a session the section could not verify.
        assert!(env.admin.object(&s.session_id, "worker").is_none());
    }
    let out = worker.terminate().await;
    out.assert_success();
    for (name, code) in [
        ("typo-rev", "REVISION_NOT_FOUND"),
        ("typo-org", "SESSION_NOT_FOUND"),
        ("typo-blob", "SESSION_NOT_FOUND"),
    ] {
        let line = out
            .stderr
            .lines()
            .find(|l| l.contains("attach_refused") && l.contains(&format!("section={name}")))
            .unwrap_or_else(|| panic!("no attach_refused line for {name}: {out:#?}"));
        assert!(line.contains(code), "{line}");
    }
    assert!(
        out.stderr
            .lines()
            .any(|l| l.contains(" attached") && l.contains("section=good")),
        "{out:#?}"
    );
    assert!(
        !out.stderr.contains("re-run `blobhub-worker login`"),
        "{out:#?}"
    );
}

/// A session id that does not exist in the (correct) revision: `SESSION_NOT_FOUND`, saying so.
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_session_id_says_the_session_is_missing() {
    let env = Env::new().await;
    let good = env.session("ses_there");
    env.home.write_config(&format!(
        "sections:\n- name: typo-session\n  job_type: session_agent_harness\n  session: {{org_id: {}, blob_id: {}, revision_id: {}, session_id: ses_not_there}}\n",
        good.org_id, good.blob_id, good.revision_id
    ));
    let worker = env.start().await;
    eventually("refused", || {
        attachment(&env.home, "ses_not_there").0 == "refused"
    })
    .await;
    let (_, code, message) = attachment(&env.home, "ses_not_there");
    assert_eq!(code, "SESSION_NOT_FOUND");
    assert!(message.contains("check session_id"), "{message}");
    worker.terminate().await.assert_success();
}

/// A free local port with nothing listening on it.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread")]
async fn login_without_v1_hints_at_the_version_and_writes_nothing() {
    let emu = emulator().await;
    let home = Home::new();
    let bare = emu.api_url().trim_end_matches("/v1").to_owned();
    let out = home
        .run(
            &["login", "--api-url", &bare, "--api-key-stdin"],
            Some(&format!("{}\n", demo_user().api_key)),
        )
        .await;
    out.assert_code("API_COMMAND_FAILED");
    assert!(
        out.stderr.contains(&format!(
            "hint: the API URL includes the version: try `--api-url {bare}/v1`"
        )),
        "{out:#?}"
    );
    assert!(!home.tree.credentials_path().exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn login_to_an_unreachable_url_says_so_without_pointing_at_credentials() {
    let home = Home::new();
    let url = format!("http://127.0.0.1:{}/v1", closed_port());
    let out = home
        .run(
            &["login", "--api-url", &url, "--api-key-stdin"],
            Some("bhk_whatever\n"),
        )
        .await;
    out.assert_code("API_NETWORK_ERROR");
    assert!(
        out.stderr.contains(&format!("nothing answered at {url}")),
        "{out:#?}"
    );
    assert!(out.stderr.contains("--api-url"), "{out:#?}");
    assert!(!out.stderr.contains("credentials.yaml"), "{out:#?}");
    assert!(!home.tree.credentials_path().exists());
}

/// With BlobHub down, `whoami` still shows what the state tree knows and says the server did
/// not answer.
#[tokio::test(flavor = "multi_thread")]
async fn whoami_with_blobhub_down_shows_the_local_state() {
    let emu = emulator().await;
    let home = Home::new();
    home.logged_in(&emu);
    let url = emu.api_url();
    emu.shutdown().await;

    let out = home.run(&["whoami"], None).await;
    out.assert_code("API_NETWORK_ERROR");
    for needle in [
        format!("api_url:    {url}"),
        format!(
            "user:       {}, recorded by login at 2026-01-01T00:00:00Z",
            demo_user().id
        ),
        format!("state_tree: {}", home.root().display()),
        "running:    no".to_owned(),
        "server:     not confirmed: API_NETWORK_ERROR".to_owned(),
    ] {
        assert!(out.stdout.contains(&needle), "{needle}: {out:#?}");
    }
    assert!(
        !out.stderr.contains("run `blobhub-worker whoami`"),
        "{out:#?}"
    );

    let out = home.run(&["--json", "whoami"], None).await;
    assert_eq!(out.status.code(), Some(1), "{out:#?}");
    let doc: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(doc["api_url"], url);
    assert_eq!(doc["recorded_user"]["user_id"], demo_user().id);
    assert_eq!(doc["server"]["reachable"], false);
    assert_eq!(doc["server"]["code"], "API_NETWORK_ERROR");
    assert_eq!(doc["running"], false);
    let err: Value = serde_json::from_str(out.stderr.trim()).unwrap();
    assert_eq!(err["code"], "API_NETWORK_ERROR");
}

/// Without `-v`, one line each for the attach, the hand-off, the turn; none of the host's own
/// info records.
#[tokio::test(flavor = "multi_thread")]
async fn the_default_log_tells_attach_handoff_and_turn() {
    let env = Env::new().await;
    let s = env.session("ses_log");
    env.configure(&[&s], 2, "");
    let worker = env.start().await;
    env.wait_attached(&s).await;
    env.handoff(&s, "tasks/t1");
    env.wait_state(&s, "tasks/t1", "active").await;
    env.say(&s, "tasks/t1", "hello");
    env.wait("turn", |e| {
        e.has(&s, "tasks/t1", "turn_end", "Turn complete")
    })
    .await;
    let out = worker.terminate().await;
    out.assert_success();
    let count = |event: &str| {
        out.stderr
            .lines()
            .filter(|l| l.contains(&format!(" {event} ")) && l.contains("section=s0"))
            .count()
    };
    for event in [
        "attached",
        "thread_registered",
        "thread_active",
        "turn_started",
        "turn_ended",
    ] {
        assert_eq!(count(event), 1, "{event}: {}", out.stderr);
    }
    assert!(!out.stderr.contains("component_cache"), "{}", out.stderr);
}

/// A restart does not announce the threads an earlier run registered; a new thread is announced.
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_does_not_register_known_threads_again() {
    let env = Env::new().await;
    let s = env.session("ses_restart");
    env.configure(&[&s], 2, "");
    let worker = env.start().await;
    env.handoff(&s, "tasks/t1");
    env.wait_state(&s, "tasks/t1", "active").await;
    env.exchange(&s, "tasks/t1", "m0").await;
    worker.terminate().await.assert_success();

    let worker = env.start().await;
    // The second run has discovered the thread once it answers on it.
    env.exchange(&s, "tasks/t1", "m1").await;
    env.handoff(&s, "tasks/t2");
    env.wait_state(&s, "tasks/t2", "active").await;
    worker.terminate().await.assert_success();

    let registered: Vec<String> = env
        .transcript(&s, "worker")
        .into_iter()
        .filter(|(t, _)| t == "thread_registered")
        .map(|(_, text)| text)
        .collect();
    assert_eq!(
        registered,
        ["Thread registered: tasks/t1", "Thread registered: tasks/t2"]
    );
    let attached = env.activity(&s).iter().filter(|t| *t == "attached").count();
    assert_eq!(attached, 2, "both runs attached");

    // Deleted while no worker runs, then handed off again under the same alias: a new thread,
    // announced again by the next run.
    env.admin.delete_object(&s.session_id, "tasks/t1").unwrap();
    let worker = env.start().await;
    // t2 answering means this run has listed the session (it evaluates threads after listing),
    // so the hand-off below arrives as a new object, not as one found by that listing.
    env.exchange(&s, "tasks/t2", "m2").await;
    env.handoff(&s, "tasks/t1");
    env.wait("t1 announced again", |e| {
        e.transcript(&s, "worker")
            .iter()
            .filter(|(t, x)| t == "thread_registered" && x == "Thread registered: tasks/t1")
            .count()
            == 2
    })
    .await;
    worker.terminate().await.assert_success();
}

#[tokio::test(flavor = "multi_thread")]
async fn config_init_writes_a_checked_template_and_never_overwrites_silently() {
    let home = Home::new();
    let out = home
        .run(&["config", "init", "--agent", "test_double"], None)
        .await;
    out.assert_success();
    let path = home.tree.config_path();
    let first = std::fs::read_to_string(&path).unwrap();
    assert!(
        first.starts_with("# BlobHub worker configuration"),
        "{first}"
    );
    assert!(first.contains("  test_double:"), "{first}");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // The template passes the check that `start` runs.
    let check = home.run(&["config", "check"], None).await;
    assert_eq!(check.status.code(), Some(0), "{check:#?}");

    let again = home
        .run(&["config", "init", "--max-agents", "9"], None)
        .await;
    again.assert_code("CONFIG_EXISTS");
    assert!(again.stderr.contains("--force"), "{again:#?}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), first);

    let forced = home
        .run(
            &[
                "config",
                "init",
                "--force",
                "--max-agents",
                "9",
                "--agent",
                "test_double",
                "--org-id",
                "org_1",
                "--blob-id",
                "blb_1",
                "--revision-id",
                "rev_1",
                "--session-id",
                "ses_1",
            ],
            None,
        )
        .await;
    forced.assert_success();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("max_agents: 9"), "{text}");
    assert!(text.contains("session_id: ses_1"), "{text}");
    let check = home.run(&["--json", "config", "check"], None).await;
    assert_eq!(check.status.code(), Some(0), "{check:#?}");
    let doc: Value = serde_json::from_str(check.stdout.trim()).unwrap();
    assert_eq!(doc["errors"], 0);
}

/// `--json demo` prints JSON lines only: the steps and every item of the conversation.
#[tokio::test(flavor = "multi_thread")]
async fn json_demo_prints_only_json_lines() {
    let home = Home::new();
    let out = home.run(&["--json", "demo"], None).await;
    out.assert_success();
    let docs: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(docs.first().unwrap()["event"], "started");
    assert_eq!(docs.last().unwrap()["event"], "finished");
    assert!(docs.iter().all(|d| d["schema_version"] == "1.0"));
    assert!(
        docs.iter()
            .any(|d| d["event"] == "item" && d["item"]["metadata"]["type"] == "turn_end"),
        "{docs:#?}"
    );
}

/// `--json start` says it started as a JSON line on stdout, and its logs are JSON lines.
#[tokio::test(flavor = "multi_thread")]
async fn json_start_reports_its_start_as_json() {
    let emu = emulator().await;
    let home = Home::new();
    home.logged_in(&emu);
    let mut child = home
        .command(&["--json", "start"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap().expect("a start line");
    let doc: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(doc["event"], "started");
    assert_eq!(doc["pid"], child.id().unwrap());
    assert_eq!(doc["user"]["id"], demo_user().id);
    let pid = i32::try_from(child.id().unwrap()).unwrap();
    // SAFETY: plain kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(0));
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
}
