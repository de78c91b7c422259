//! `start` preflight: one test per process code, each asserting the code, the exit status and
//! that the emulator received no session command; the stale lock and the two-start race.

use blobhub_worker::instance_lock::{InstanceInfo, InstanceRecord, hostname};

use crate::support::{Home, assert_no_session_command, dead_pid, demo_user, emulator};

const SESSION_SECTION: &str = "\
sections:
  - name: one
    job_type: session_agent_harness
    session:
      org_id: org_1
      blob_id: blb_1
      revision_id: rev_1
      session_id: ses_1
";

#[tokio::test(flavor = "multi_thread")]
async fn credentials_not_found() {
    let emu = emulator().await;
    let home = Home::new();
    home.run(&["start"], None)
        .await
        .assert_code("CREDENTIALS_NOT_FOUND");
    assert_no_session_command(&emu.admin());
}

#[tokio::test(flavor = "multi_thread")]
async fn insecure_credentials_permissions() {
    let emu = emulator().await;
    let home = Home::new();
    home.logged_in(&emu);
    // Stricter than the reference: a group-readable file is refused too.
    for mode in [0o644, 0o640] {
        home.chmod(&home.tree.credentials_path(), mode);
        let out = home.run(&["start"], None).await;
        out.assert_code("INSECURE_CREDENTIALS_PERMISSIONS");
        assert!(out.stderr.contains("chmod 600"), "{out:#?}");
    }
    assert_no_session_command(&emu.admin());
    assert!(emu.admin().requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_not_found() {
    let emu = emulator().await;
    let home = Home::new();
    home.logged_in(&emu);
    std::fs::remove_file(home.tree.identity_path()).unwrap();
    home.run(&["start"], None)
        .await
        .assert_code("IDENTITY_NOT_FOUND");
    assert_no_session_command(&emu.admin());
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_config_lists_every_problem() {
    let emu = emulator().await;
    let home = Home::new();
    home.logged_in(&emu);
    home.write_config(
        "\
polling:
  interval_idle_ms: 0
concurrency:
  max_agents: 0
sections:
  - name: a
",
    );
    let out = home.run(&["start"], None).await;
    out.assert_code("INVALID_CONFIG");
    for needle in [
        "line 2: polling.interval_idle_ms",
        "line 4: concurrency.max_agents",
        "line 6: sections[0].job_type",
    ] {
        assert!(out.stderr.contains(needle), "{needle}: {out:#?}");
    }
    assert_no_session_command(&emu.admin());
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_config_is_invalid_config() {
    let emu = emulator().await;
    let home = Home::new();
    home.logged_in(&emu);
    std::fs::remove_file(home.tree.config_path()).unwrap();
    home.run(&["start"], None)
        .await
        .assert_code("INVALID_CONFIG");
    assert_no_session_command(&emu.admin());
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_job_type() {
    let emu = emulator().await;
    let home = Home::new();
    home.logged_in(&emu);
    home.write_config("sections:\n  - job_type: no_such_job_type\n");
    home.run(&["start"], None)
        .await
        .assert_code("UNKNOWN_JOB_TYPE");
    assert_no_session_command(&emu.admin());
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_session_keys() {
    let emu = emulator().await;
    let home = Home::new();
    home.logged_in(&emu);
    home.write_config(&SESSION_SECTION.replace("      blob_id: blb_1\n", ""));
    home.run(&["start"], None)
        .await
        .assert_code("MISSING_SESSION_KEYS");
    assert_no_session_command(&emu.admin());
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_section_target() {
    let emu = emulator().await;
    let home = Home::new();
    home.logged_in(&emu);
    let second = SESSION_SECTION
        .trim_start_matches("sections:\n")
        .replace("name: one", "name: two");
    home.write_config(&format!("{SESSION_SECTION}{second}"));
    home.run(&["start"], None)
        .await
        .assert_code("DUPLICATE_SECTION_TARGET");
    assert_no_session_command(&emu.admin());
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_already_running() {
    let emu = emulator().await;
    let home = Home::new();
    home.logged_in(&emu);
    // A lock held by a live process on this host: the test process itself.
    let record = InstanceRecord {
        instance: InstanceInfo {
            pid: std::process::id(),
            ..InstanceInfo::for_this_process("test")
        },
    };
    std::fs::write(
        home.tree.instance_path(),
        serde_yaml::to_string(&record).unwrap(),
    )
    .unwrap();
    home.run(&["start"], None)
        .await
        .assert_code("WORKER_ALREADY_RUNNING");
    // The other worker's lock is left alone.
    assert!(home.tree.instance_path().exists());
    assert_no_session_command(&emu.admin());
    // The lock is checked before the network: BlobHub was not asked.
    assert!(emu.admin().requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_invalid() {
    let emu = emulator().await;
    let home = Home::new();
    home.logged_in(&emu);
    home.write_credentials(&emu.api_url(), "bhk_wrong_key");
    home.run(&["start"], None).await.assert_code("AUTH_INVALID");
    // 401/403 is never retried.
    assert_eq!(crate::support::count_requests(&emu.admin(), "/users/me"), 1);
    // The lock taken before the network check is released again.
    assert!(!home.tree.instance_path().exists());
    assert_no_session_command(&emu.admin());
}

#[tokio::test(flavor = "multi_thread")]
async fn user_identity_mismatch() {
    let emu = emulator().await;
    let home = Home::new();
    home.logged_in(&emu);
    home.write_identity("usr_someone_else");
    let out = home.run(&["start"], None).await;
    out.assert_code("USER_IDENTITY_MISMATCH");
    assert!(out.stderr.contains(&demo_user().id), "{out:#?}");
    assert!(!home.tree.instance_path().exists());
    assert_no_session_command(&emu.admin());
}

#[tokio::test(flavor = "multi_thread")]
async fn json_errors_are_one_line_with_code_and_hint() {
    let home = Home::new();
    let out = home.run(&["--json", "start"], None).await;
    assert_eq!(out.status.code(), Some(1));
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{out:#?}");
    let doc: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(doc["code"], "CREDENTIALS_NOT_FOUND");
    assert_eq!(doc["schema_version"], "1.0");
    assert!(doc["hint"].as_str().unwrap().contains("login"));
    assert!(doc["error"].as_str().is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn start_runs_until_sigterm_and_removes_the_lock() {
    let emu = emulator().await;
    let home = Home::new();
    home.logged_in(&emu);
    let running = home.spawn_start().await.expect("worker starts");
    let lock: InstanceRecord =
        serde_yaml::from_str(&std::fs::read_to_string(home.tree.instance_path()).unwrap()).unwrap();
    assert_eq!(lock.instance.pid, running.pid());
    assert!(lock.instance.instance_id.starts_with("ins_"));
    assert_eq!(lock.instance.host, hostname());
    let out = running.terminate().await;
    out.assert_success();
    assert!(!home.tree.instance_path().exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_lock_of_a_dead_process_is_replaced() {
    let emu = emulator().await;
    let home = Home::new();
    home.logged_in(&emu);
    let stale = InstanceRecord {
        instance: InstanceInfo {
            pid: dead_pid(),
            ..InstanceInfo::for_this_process("0.0.0-stale")
        },
    };
    std::fs::write(
        home.tree.instance_path(),
        serde_yaml::to_string(&stale).unwrap(),
    )
    .unwrap();
    let running = home.spawn_start().await.expect("stale lock is replaced");
    let lock: InstanceRecord =
        serde_yaml::from_str(&std::fs::read_to_string(home.tree.instance_path()).unwrap()).unwrap();
    assert_eq!(lock.instance.pid, running.pid());
    assert_ne!(lock.instance.instance_id, stale.instance.instance_id);
    running.terminate().await.assert_success();
}

#[tokio::test(flavor = "multi_thread")]
async fn two_racing_starts_have_exactly_one_winner() {
    let emu = emulator().await;
    let home = Home::new();
    home.logged_in(&emu);
    let (a, b) = tokio::join!(home.spawn_start(), home.spawn_start());
    let (winner, loser) = match (a, b) {
        (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
        (Ok(_), Ok(_)) => panic!("both starts won"),
        (Err(a), Err(b)) => panic!("both starts lost: {a:#?} {b:#?}"),
    };
    loser.assert_code("WORKER_ALREADY_RUNNING");
    winner.terminate().await.assert_success();
    assert!(!home.tree.instance_path().exists());
}

/// A refusal of the job-type step under `--json` is one JSON object on stderr, with every
/// problem inside it, whatever the number of diagnostics.
#[tokio::test(flavor = "multi_thread")]
async fn json_preflight_refusal_is_one_json_object() {
    let emu = emulator().await;
    let home = Home::new();
    home.logged_in(&emu);
    home.write_config(
        &SESSION_SECTION
            .replace("      blob_id: blb_1\n", "")
            .replace("      session_id: ses_1\n", ""),
    );
    let out = home.run(&["--json", "start"], None).await;
    assert_eq!(out.status.code(), Some(1), "{out:#?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{out:#?}");
    let doc: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(doc["code"], "MISSING_SESSION_KEYS");
    let error = doc["error"].as_str().unwrap();
    assert!(error.contains("sections[0].session.blob_id"), "{doc}");
    assert!(error.contains("sections[0].session.session_id"), "{doc}");
    assert!(out.stdout.is_empty(), "{out:#?}");
    assert_no_session_command(&emu.admin());
}

/// A job type's warning (the harness's `UNKNOWN_KEY` for a key it does not read) is printed by
/// `config check` and `start`, and does not stop either.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_type_warning_is_printed_and_does_not_block_start() {
    let emu = emulator().await;
    let home = Home::new();
    home.logged_in(&emu);
    home.write_config(&SESSION_SECTION.replace(
        "      session_id: ses_1\n",
        "      session_id: ses_1\n      sesion_prefix: tasks/\n",
    ));
    let check = home.run(&["config", "check"], None).await;
    assert_eq!(check.status.code(), Some(0), "{check:#?}");
    for needle in [
        "warning: UNKNOWN_KEY",
        "sections[0].session.sesion_prefix",
        "0 error(s)",
    ] {
        assert!(check.stdout.contains(needle), "{needle}: {check:#?}");
    }
    let json = home.run(&["--json", "config", "check"], None).await;
    assert_eq!(json.status.code(), Some(0), "{json:#?}");
    let doc: serde_json::Value = serde_json::from_str(json.stdout.trim()).unwrap();
    assert_eq!(doc["errors"], 0, "{doc}");
    assert!(
        doc["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["code"] == "UNKNOWN_KEY"
                && d["severity"] == "warning"
                && d["path"] == "sections[0].session.sesion_prefix"),
        "{doc}"
    );

    let running = home.spawn_start().await.expect("the worker starts");
    assert!(
        running
            .stderr_head
            .lines()
            .any(|l| l.starts_with("warning: UNKNOWN_KEY") && l.contains("sesion_prefix")),
        "{}",
        running.stderr_head
    );
    running.terminate().await.assert_success();

    // Under --json the warning is in the `started` document.
    use tokio::io::AsyncBufReadExt;
    let mut child = home
        .command(&["--json", "start"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap().expect("a start line");
    let doc: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(doc["event"], "started", "{doc}");
    assert!(
        doc["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["code"] == "UNKNOWN_KEY" && w["path"] == "sections[0].session.sesion_prefix"),
        "{doc}"
    );
    let pid = i32::try_from(child.id().unwrap()).unwrap();
    // SAFETY: plain kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    assert_eq!(child.wait().await.unwrap().code(), Some(0));
}
