//! `login`, `whoami`, `config check` and the global flags, run as the real binary.

use std::os::unix::fs::PermissionsExt;

use crate::support::{Home, assert_no_session_command, demo_user, emulator, other_user};

async fn login(home: &Home, api_url: &str, key: &str, extra: &[&str]) -> crate::support::Outcome {
    let mut args = vec!["login", "--api-url", api_url, "--api-key-stdin"];
    args.extend_from_slice(extra);
    home.run(&args, Some(&format!("{key}\n"))).await
}

#[tokio::test(flavor = "multi_thread")]
async fn login_happy_path_writes_private_credentials_and_identity() {
    let emu = emulator().await;
    let home = Home::new();
    let out = login(
        &home,
        &format!("{}/", emu.api_url()),
        &demo_user().api_key,
        &[],
    )
    .await;
    out.assert_success();
    assert!(out.stdout.contains("usr_demo"), "{out:#?}");
    // The key is never printed.
    assert!(!out.stdout.contains(&demo_user().api_key));
    assert!(!out.stderr.contains(&demo_user().api_key));

    let creds = home.tree.load_credentials().unwrap();
    assert_eq!(creds.api.url, emu.api_url(), "trailing slash stripped");
    assert_eq!(creds.api.key.expose(), demo_user().api_key);
    let mode = std::fs::metadata(home.tree.credentials_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let root_mode = std::fs::metadata(home.root()).unwrap().permissions().mode();
    assert_eq!(root_mode & 0o777, 0o700);
    let identity = home.tree.load_identity().unwrap();
    assert_eq!(identity.user.user_id, "usr_demo");
    assert_eq!(identity.user.email, demo_user().email);
    assert!(identity.user.recorded_at.ends_with('Z'));
    assert_no_session_command(&emu.admin());
}

#[tokio::test(flavor = "multi_thread")]
async fn login_with_a_wrong_key_is_auth_invalid_and_writes_nothing() {
    let emu = emulator().await;
    let home = Home::new();
    let out = login(&home, &emu.api_url(), "bhk_not_a_key", &[]).await;
    out.assert_code("AUTH_INVALID");
    assert!(!home.tree.credentials_path().exists());
    assert!(!home.tree.identity_path().exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn login_as_another_user_needs_force() {
    let emu = emulator().await;
    let home = Home::new();
    login(&home, &emu.api_url(), &demo_user().api_key, &[])
        .await
        .assert_success();

    let out = login(&home, &emu.api_url(), &other_user().api_key, &[]).await;
    out.assert_code("USER_IDENTITY_MISMATCH");
    assert!(out.stderr.contains("--force"), "{out:#?}");
    // Nothing changed.
    assert_eq!(home.tree.load_identity().unwrap().user.user_id, "usr_demo");
    assert_eq!(
        home.tree.load_credentials().unwrap().api.key.expose(),
        demo_user().api_key
    );

    login(&home, &emu.api_url(), &other_user().api_key, &["--force"])
        .await
        .assert_success();
    assert_eq!(home.tree.load_identity().unwrap().user.user_id, "usr_other");
    assert_eq!(
        home.tree.load_credentials().unwrap().api.key.expose(),
        other_user().api_key
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn login_without_a_key_or_terminal_is_input_required() {
    let emu = emulator().await;
    let home = Home::new();
    let url = emu.api_url();
    home.run(&["login", "--api-url", &url, "--no-input"], None)
        .await
        .assert_code("INPUT_REQUIRED");
    // Standard input is not a terminal here, so even without --no-input there is no prompt.
    home.run(&["login", "--api-url", &url], None)
        .await
        .assert_code("INPUT_REQUIRED");
    login(&home, &url, "", &[])
        .await
        .assert_code("INPUT_REQUIRED");
    assert!(emu.admin().requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn whoami_shows_url_user_tree_and_running_state() {
    let emu = emulator().await;
    let home = Home::new();
    home.run(&["whoami"], None)
        .await
        .assert_code("CREDENTIALS_NOT_FOUND");
    home.logged_in(&emu);

    let out = home.run(&["whoami"], None).await;
    out.assert_success();
    for needle in [
        emu.api_url(),
        "usr_demo".to_owned(),
        home.root().display().to_string(),
        "running:    no".to_owned(),
    ] {
        assert!(out.stdout.contains(&needle), "{needle}: {out:#?}");
    }

    let running = home.spawn_start().await.expect("worker starts");
    let out = home.run(&["--json", "whoami"], None).await;
    out.assert_success();
    let doc: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(doc["user"]["id"], "usr_demo");
    assert_eq!(doc["api_url"], emu.api_url());
    assert_eq!(doc["running"], true);
    assert_eq!(doc["instance"]["pid"], running.pid());
    assert_eq!(doc["identity_matches"], true);
    assert_eq!(doc["schema_version"], "1.0");
    running.terminate().await.assert_success();
}

#[tokio::test(flavor = "multi_thread")]
async fn config_check_reports_every_problem_with_path_and_line() {
    let home = Home::new();
    home.write_config(
        "\
polling:
  interval_idle_ms: -1
  backoff_max_ms: 10
concurrency:
  max_agents: 0
  spare: 1
agents:
  claude_code:
    permissions: yolo
sections:
  - name: a
",
    );
    let out = home.run(&["config", "check"], None).await;
    out.assert_code("INVALID_CONFIG");
    for needle in [
        "line 2: polling.interval_idle_ms",
        "line 3: polling.backoff_max_ms",
        "line 5: concurrency.max_agents",
        "line 9: agents.claude_code.permissions",
        "line 11: sections[0].job_type",
        "warning: UNKNOWN_KEY: line 6: concurrency.spare",
    ] {
        assert!(out.stdout.contains(needle), "{needle}: {out:#?}");
    }
    // The warnings include AGENT_EXECUTABLE_NOT_FOUND when `claude` is not on PATH here: the
    // agent checks run even though the schema has errors.
    assert!(out.stdout.contains(": 5 error(s), "), "{out:#?}");

    let out = home.run(&["--json", "config", "check"], None).await;
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["errors"], 5);
    let first = &doc["diagnostics"][0];
    assert_eq!(first["path"], "polling.interval_idle_ms");
    assert_eq!(first["line"], 2);
    assert_eq!(first["code"], "INVALID_CONFIG");
}

#[tokio::test(flavor = "multi_thread")]
async fn config_check_passes_a_valid_file_with_warnings() {
    let home = Home::new();
    home.write_config("sections: []\nextra: true\n");
    let out = home.run(&["config", "check"], None).await;
    out.assert_success();
    assert!(out.stdout.contains("0 error(s), 1 warning(s)"), "{out:#?}");
}

/// What a thread would meet later is said now: an agent type this build cannot drive, an
/// executable that is not on PATH, one the harness's grant leaves out.
#[tokio::test(flavor = "multi_thread")]
async fn config_check_warns_about_agents_threads_could_not_run() {
    let home = Home::new();
    home.write_config(
        "agents:
  antigravity: {}
  test_double:
    executable: no-such-agent-cli-4c1f
job_types:
  session_agent_harness:
    allow_spawn: [claude]
sections: []
",
    );
    let out = home.run(&["config", "check"], None).await;
    out.assert_success();
    for needle in [
        "warning: AGENT_TYPE_UNSUPPORTED: line 2: agents.antigravity: this worker build cannot drive `antigravity`",
        "warning: AGENT_EXECUTABLE_NOT_FOUND: line 4: agents.test_double.executable: `no-such-agent-cli-4c1f` is not on PATH",
        "warning: AGENT_EXECUTABLE_NOT_FOUND: line 4: agents.test_double.executable: `no-such-agent-cli-4c1f` is not in job_types.session_agent_harness.allow_spawn",
        "0 error(s), 3 warning(s)",
    ] {
        assert!(out.stdout.contains(needle), "{needle}: {out:#?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_errors_exit_2_and_version_exits_0() {
    let home = Home::new();
    let out = home.run(&["start", "--no-such-flag"], None).await;
    assert_eq!(out.status.code(), Some(2), "{out:#?}");
    let out = home.run(&["--version"], None).await;
    out.assert_success();
    assert!(out.stdout.starts_with("blobhub-worker "), "{out:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn interactive_login_prompts_and_asks_before_switching_users() {
    let emu = emulator().await;
    let home = Home::new();
    let url = emu.api_url();
    // URL prompt answered with the URL, then the key (read without echo).
    let out = home
        .run_in_terminal(&["login"], &format!("{url}\n{}\n", demo_user().api_key))
        .await;
    assert_eq!(out.status.code(), Some(0), "{out:#?}");
    assert!(
        out.stdout.contains("API URL [https://api.blobhub.io/v1]: "),
        "{out:#?}"
    );
    assert!(out.stdout.contains("API key: "), "{out:#?}");
    assert_eq!(home.tree.load_credentials().unwrap().api.url, url);

    // Another user's key: declining keeps the recorded identity.
    let out = home
        .run_in_terminal(
            &["login", "--api-url", &url],
            &format!("{}\nn\n", other_user().api_key),
        )
        .await;
    assert_eq!(out.status.code(), Some(1), "{out:#?}");
    assert!(out.stdout.contains("[y/N]"), "{out:#?}");
    assert!(
        out.stdout.contains("error: USER_IDENTITY_MISMATCH"),
        "{out:#?}"
    );
    assert_eq!(home.tree.load_identity().unwrap().user.user_id, "usr_demo");

    // Confirming switches.
    let out = home
        .run_in_terminal(
            &["login", "--api-url", &url],
            &format!("{}\ny\n", other_user().api_key),
        )
        .await;
    assert_eq!(out.status.code(), Some(0), "{out:#?}");
    assert_eq!(home.tree.load_identity().unwrap().user.user_id, "usr_other");
}

/// Login compiles the installed job types into the cache (the bundled one comes compiled with
/// the binary), so the first `start` compiles nothing (observed through the log of the next
/// load, not through timing).
#[tokio::test(flavor = "multi_thread")]
async fn login_fills_the_compile_cache_for_the_first_start() {
    let emu = emulator().await;
    let home = Home::new();
    let plugins = home.root().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(
        crate::runtime::fixtures().join("thread_mirror.wasm"),
        plugins.join("thread_mirror.wasm"),
    )
    .unwrap();
    login(&home, &emu.api_url(), &demo_user().api_key, &[])
        .await
        .assert_success();
    let listing = home.run(&["-v", "plugins"], None).await;
    listing.assert_success();
    assert!(listing.stdout.contains("thread_mirror"), "{listing:#?}");
    assert!(
        listing.stderr.contains("component_cache_hit"),
        "{listing:#?}"
    );
    assert!(
        !listing.stderr.contains("component_cache_miss"),
        "nothing left to compile: {listing:#?}"
    );
}
