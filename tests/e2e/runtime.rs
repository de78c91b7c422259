//! Plugin runtime tests: real components (plugins/thread-mirror and the fixtures under
//! plugins/testing, built once per test binary) against the emulator over HTTP.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use blobhub_emulator::{CreateSession, Emulator, EmulatorConfig, SessionIds, User};
use blobhub_worker::api::{Client, RetryPolicy};
use blobhub_worker::runtime::capabilities::Shared;
use blobhub_worker::runtime::start::ClientTransport;
use blobhub_worker::runtime::supervisor::{self, RunReport, Runtime, RuntimeInputs};
use blobhub_worker::runtime::{LoadError, plugins_cmd};
use serde_json::{Value, json};
use tokio::sync::watch;

/// Builds the guest fixtures once: `cargo build --release --target wasm32-wasip2` in plugins/.
pub(crate) fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .current_dir(&plugins)
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .args([
                "-p",
                "thread-mirror",
                "-p",
                "spin-forever",
                "-p",
                "alloc-forever",
            ])
            .args([
                "-p",
                "escape-attempts",
                "-p",
                "wit-future",
                "-p",
                "impostor",
                "-p",
                "wit-v0-1-0",
            ])
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR")
            .status()
            .expect("run cargo for the fixtures");
        assert!(status.success(), "building the guest fixtures failed");
        plugins.join("target/wasm32-wasip2/release")
    })
}

pub(crate) fn install(tree: &Path, stem: &str) {
    let dir = tree.join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fixtures().join(format!("{stem}.wasm")),
        dir.join(format!("{stem}.wasm")),
    )
    .unwrap();
}

pub(crate) fn session_block(ids: &SessionIds) -> Value {
    json!({"org_id": ids.org_id, "blob_id": ids.blob_id, "revision_id": ids.revision_id, "session_id": ids.session_id})
}

/// The sections of a runtime running in this process (no CLI around them).
pub(crate) struct Running {
    pub(crate) shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    pub(crate) task: tokio::task::JoinHandle<RunReport>,
}

impl Running {
    pub(crate) async fn stop(self) -> RunReport {
        let _ = self.shutdown.send(true);
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("sections drain")
            .expect("run task")
    }

    pub(crate) fn section_state(&self, index: u32) -> Option<(String, String)> {
        self.shared
            .status
            .snapshot()
            .into_iter()
            .find(|s| s.index == index)
            .map(|s| (s.state, s.detail))
    }

    pub(crate) async fn wait_stopped(&self, index: u32) -> String {
        self.wait_state(index, "stopped").await
    }

    /// Section `index`'s detail once it shows `state` (within 30 s).
    pub(crate) async fn wait_state(&self, index: u32, state: &str) -> String {
        for _ in 0..600 {
            if let Some((now, detail)) = self.section_state(index)
                && now == state
            {
                return detail;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "section {index} never showed `{state}`: {:?}",
            self.section_state(index)
        );
    }
}

async fn start(emulator: &Emulator, tree: &Path, config: Value) -> Running {
    let runtime = Runtime::load(Some(tree.join("plugins")), Some(tree.join("cache")))
        .await
        .unwrap();
    assert!(
        runtime.job_types.failures.is_empty(),
        "{:?}",
        runtime.job_types.failures
    );
    start_with(runtime, emulator, tree, config)
}

/// The sections of `config` run by `runtime` against `emulator` as the demo user, state in `tree`.
pub(crate) fn start_with(
    runtime: Runtime,
    emulator: &Emulator,
    tree: &Path,
    config: Value,
) -> Running {
    let user = User::demo();
    let client = Client::new(&emulator.api_url(), &user.api_key, RetryPolicy::default()).unwrap();
    let inputs = RuntimeInputs {
        config: config.try_into().unwrap(),
        transport: Arc::new(ClientTransport(client)),
        tree_root: tree.to_path_buf(),
        user_id: user.id.clone(),
        instance_id: "ins_test".into(),
        secrets: vec![user.api_key.clone()],
    };
    let runtime = Arc::new(runtime);
    let (shutdown, rx) = watch::channel(false);
    let (_force_tx, force_rx) = watch::channel(false);
    let shared = supervisor::shared(&inputs, rx.clone());
    let task = tokio::spawn(supervisor::run_sections(
        runtime,
        Arc::clone(&shared),
        rx,
        force_rx,
    ));
    std::mem::forget(_force_tx);
    Running {
        shared,
        shutdown,
        task,
    }
}

async fn emulator_with_session() -> (Emulator, SessionIds) {
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let ids = emulator
        .admin()
        .create_session(CreateSession::default())
        .unwrap();
    (emulator, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_mirror_installed_in_the_plugins_folder_runs_a_section() {
    let tree = tempfile::tempdir().unwrap();
    install(tree.path(), "thread_mirror");
    let (emulator, ids) = emulator_with_session().await;
    let admin = emulator.admin();
    let user = User::demo();
    admin
        .upload_object(
            &ids.session_id,
            "tasks/t1",
            json!({"type": "thread", "thread": {}}),
            &user.id,
        )
        .unwrap();
    admin
        .post_item(
            &ids.session_id,
            "tasks/t1",
            json!([{"type": "text", "text": "first words"}]),
            None,
            &user.id,
        )
        .unwrap();

    let config = json!({
        "polling": {"interval_idle_ms": 100, "interval_active_ms": 100},
        "sections": [{"job_type": "thread_mirror", "session": session_block(&ids)}],
    });
    let running = start(&emulator, tree.path(), config).await;
    let file = tree.path().join(format!(
        "jobs/thread_mirror-{}/threads/tasks_t1.md",
        ids.session_id
    ));
    let read = || std::fs::read_to_string(&file).unwrap_or_default();
    for _ in 0..200 {
        if read().contains("first words") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(read().contains("first words"), "mirror: {:?}", read());

    // A later item arrives through the feed.
    admin
        .post_item(
            &ids.session_id,
            "tasks/t1",
            json!([{"type": "text", "text": "second words"}]),
            None,
            &user.id,
        )
        .unwrap();
    for _ in 0..200 {
        if read().contains("second words") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(read().contains("second words"), "mirror: {:?}", read());
    let rows = running.shared.status.snapshot();
    assert_eq!(rows[0].state, "attached");
    assert!(rows[0].threads.contains_key("tasks/t1"));

    let report = running.stop().await;
    assert!(report.preflight.is_empty());
    assert_eq!(report.sections[0].1.code, None, "{:?}", report.sections);
    // A clean stop leaves section.yaml to the job type; the mirror persisted its feed cursor.
    let state_dir = file.parent().unwrap().parent().unwrap();
    assert!(
        state_dir.join("cursor").is_file(),
        "the feed cursor was persisted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_components_are_stopped_while_another_section_keeps_polling() {
    let tree = tempfile::tempdir().unwrap();
    for stem in ["thread_mirror", "spin_forever", "alloc_forever"] {
        install(tree.path(), stem);
    }
    let (emulator, ids) = emulator_with_session().await;
    let config = json!({
        "polling": {"interval_idle_ms": 100, "interval_active_ms": 100},
        "job_types": {
            "spin_forever": {"max_busy_ms": 500},
            "alloc_forever": {"memory_limit_mib": 32},
        },
        "sections": [
            {"job_type": "thread_mirror", "session": session_block(&ids)},
            {"job_type": "spin_forever"},
            {"job_type": "alloc_forever"},
        ],
    });
    let running = start(&emulator, tree.path(), config).await;
    let spin = running.wait_stopped(1).await;
    assert!(spin.starts_with("JOB_TYPE_UNRESPONSIVE"), "{spin}");
    let alloc = running.wait_stopped(2).await;
    assert!(alloc.starts_with("JOB_TYPE_OUT_OF_MEMORY"), "{alloc}");

    // The healthy section keeps polling: count its event listings from now on.
    let polls = || {
        emulator
            .admin()
            .requests()
            .iter()
            .filter(|r| r.command.as_deref() == Some("list_session_events"))
            .count()
    };
    let before = polls();
    let more = emulator
        .admin()
        .wait_for(Duration::from_secs(20), |_| polls() >= before + 5)
        .await;
    assert!(
        more,
        "polls stopped after the runaway sections: {before} -> {}",
        polls()
    );
    assert_eq!(running.section_state(0).unwrap().0, "attached");

    let yaml =
        std::fs::read_to_string(tree.path().join("jobs/spin_forever-s1/section.yaml")).unwrap();
    assert!(yaml.contains("JOB_TYPE_UNRESPONSIVE"), "{yaml}");
    let yaml =
        std::fs::read_to_string(tree.path().join("jobs/alloc_forever-s2/section.yaml")).unwrap();
    assert!(yaml.contains("JOB_TYPE_OUT_OF_MEMORY"), "{yaml}");
    let report = running.stop().await;
    assert_eq!(report.sections.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_attempts_fail_with_typed_errors_and_the_key_stays_hidden() {
    let tree = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    install(tree.path(), "escape_attempts");
    let (emulator, ids) = emulator_with_session().await;
    let session = session_block(&ids);
    let home = std::env::var("HOME").unwrap_or_default();
    let config = json!({
        "job_types": {"escape_attempts": {"allow_spawn": ["env"], "allow_env": ["JOB_VAR"]}},
        // `outside` is a temporary folder, outside the default work root (the user's home).
        "workspace": {"allowed_roots": [std::env::temp_dir()]},
        "sections": [
            {"job_type": "escape_attempts", "attempt": "path", "session": session},
            {"job_type": "escape_attempts", "attempt": "spawn", "session": session},
            {"job_type": "escape_attempts", "attempt": "session", "session": session},
            {"job_type": "escape_attempts", "attempt": "leak", "session": session, "cwd": outside.path()},
        ],
    });
    let user = User::demo();
    let client = Client::new(&emulator.api_url(), &user.api_key, RetryPolicy::default()).unwrap();
    let inputs = RuntimeInputs {
        config: config.try_into().unwrap(),
        transport: Arc::new(ClientTransport(client)),
        tree_root: tree.path().to_path_buf(),
        user_id: user.id.clone(),
        instance_id: "ins_test".into(),
        // HOME's value stands in for a secret that is present in the worker's environment.
        secrets: vec![user.api_key.clone(), home.clone()],
    };
    let runtime = Arc::new(
        Runtime::load(Some(inputs.plugins_dir()), None)
            .await
            .unwrap(),
    );
    let (_tx, rx) = watch::channel(false);
    let (_ftx, frx) = watch::channel(false);
    let shared = supervisor::shared(&inputs, rx.clone());
    let report = supervisor::run_sections(runtime, shared, rx, frx).await;
    assert!(report.preflight.is_empty(), "{:?}", report.preflight);
    let end = |i: usize| report.sections[i].1.clone();

    for i in 0..3 {
        assert_eq!(
            end(i).code.as_deref(),
            Some("BLOCKED"),
            "attempt {i}: {}",
            end(i).message
        );
    }
    assert!(end(1).message.contains("NotGranted"), "{}", end(1).message);
    assert!(end(2).message.contains("Refused"), "{}", end(2).message);

    let leak = end(3);
    assert_eq!(leak.code.as_deref(), Some("REPORT"), "{}", leak.message);
    assert!(
        leak.message.contains("child JOB_VAR=1"),
        "the child ran: {}",
        leak.message
    );
    assert!(
        leak.message.contains("reply "),
        "a session reply was seen: {}",
        leak.message
    );
    assert!(
        !leak.message.contains(&user.api_key),
        "the API key leaked: {}",
        leak.message
    );
    assert!(!leak.message.contains("child BLOBHUB_"), "{}", leak.message);
    if !home.is_empty() {
        assert!(
            !leak.message.contains(&format!("={home}\n")),
            "a secret-valued variable reached the child"
        );
    }
    assert!(
        !leak.message.contains("guest-env"),
        "the guest has no environment: {}",
        leak.message
    );
    // No session block: the host reads the session target itself and refuses the section of a
    // job type that asks for the session API at preflight, so nothing can be sent for it.
    let config = json!({
        "sections": [{"job_type": "escape_attempts", "attempt": "sessionless"}],
    });
    let report = start(&emulator, tree.path(), config)
        .await
        .task
        .await
        .unwrap();
    let refusals: Vec<(&str, Option<&str>)> = report
        .preflight
        .iter()
        .map(|e| (e.code.as_str(), e.field.as_deref()))
        .collect();
    assert_eq!(
        refusals,
        [("MISSING_SESSION_KEYS", Some("sections[0].session"))]
    );
    assert!(report.sections.is_empty());
    let malformed: Vec<String> = emulator
        .admin()
        .requests()
        .into_iter()
        .map(|r| r.path)
        .filter(|p| p.contains("//"))
        .collect();
    assert!(
        malformed.is_empty(),
        "sent without a session: {malformed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_start_loads_from_the_compile_cache() {
    let tree = tempfile::tempdir().unwrap();
    install(tree.path(), "thread_mirror");
    let cache = tree.path().join("cache");
    let first = Runtime::load(Some(tree.path().join("plugins")), Some(cache.clone()))
        .await
        .unwrap();
    assert!(!first.job_types.by_name["thread_mirror"].from_cache);
    let second = Runtime::load(Some(tree.path().join("plugins")), Some(cache))
        .await
        .unwrap();
    assert!(
        second.job_types.by_name["thread_mirror"].from_cache,
        "cache hit expected"
    );
    assert!(second.job_types.by_name.values().all(|j| j.from_cache));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_of_an_unsupported_wit_version_are_refused() {
    let file = fixtures().join("wit_future.wasm");
    let err = plugins_cmd::check(&file).await.unwrap_err();
    assert!(matches!(err, LoadError::WitUnsupported { .. }), "{err}");
    assert_eq!(err.code(), "JOB_TYPE_WIT_UNSUPPORTED");
    let ok = plugins_cmd::check(&fixtures().join("thread_mirror.wasm"))
        .await
        .unwrap();
    assert!(ok.0.contains("thread_mirror"));

    // Installed, it is refused before anything is compiled or written to the compile cache.
    let tree = tempfile::tempdir().unwrap();
    install(tree.path(), "wit_future");
    let cache = tree.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let runtime = Runtime::load(Some(tree.path().join("plugins")), Some(cache.clone()))
        .await
        .unwrap();
    assert!(
        runtime
            .job_types
            .failures
            .iter()
            .any(|f| f.code() == "JOB_TYPE_WIT_UNSUPPORTED"),
        "{:?}",
        runtime.job_types.failures
    );
    let cached: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    // Nothing was compiled: the bundled harness comes compiled with the binary.
    assert!(cached.is_empty(), "{cached:?}");
}

/// A component built against the frozen `blobhub:worker@0.1.0` (the fixture uses `wit_bindgen`
/// on `wit/since_v0.1.0/`, no SDK) loads beside the bundled harness of the newest version, and
/// runs a section through the 0.1.0 bindings: its imports reach the session, its `validate`
/// codes are reported as written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_of_the_frozen_wit_0_1_0_loads_and_runs() {
    use blobhub_worker::runtime::wit::WitVersion;

    let tree = tempfile::tempdir().unwrap();
    install(tree.path(), "wit_v0_1_0");
    let runtime = Runtime::load(Some(tree.path().join("plugins")), None)
        .await
        .unwrap();
    assert_eq!(
        runtime.job_types.by_name["wit_v0_1_0"].wit,
        WitVersion::V0_1_0
    );
    assert_eq!(
        runtime.job_types.by_name["session_agent_harness"].wit,
        WitVersion::Latest
    );

    let (emulator, ids) = emulator_with_session().await;
    let config = json!({
        "sections": [{"job_type": "wit_v0_1_0", "session": session_block(&ids)}],
    });
    let running = start(&emulator, tree.path(), config).await;
    let admin = emulator.admin();
    let mut proof = None;
    for _ in 0..200 {
        proof = admin.object(&ids.session_id, "wit-v0-1-0");
        if proof.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let proof = proof.expect("the 0.1.0 component wrote its object");
    assert_eq!(proof["wit"], "0.1.0", "{proof}");
    assert_eq!(proof["session"], ids.session_id.as_str(), "{proof}");
    assert_eq!(proof["worker"], env!("CARGO_PKG_VERSION"), "{proof}");
    let report = running.stop().await;
    assert!(report.preflight.is_empty(), "{:?}", report.preflight);
    assert_eq!(report.sections.len(), 1);
    assert_eq!(report.sections[0].1.code, None, "{:?}", report.sections);

    // Its validate runs through the same bindings; a third-party code arrives unchanged.
    let config = json!({
        "sections": [{"job_type": "wit_v0_1_0", "session": session_block(&ids), "refuse": true}],
    });
    let report = start(&emulator, tree.path(), config)
        .await
        .task
        .await
        .unwrap();
    let codes: Vec<&str> = report.preflight.iter().map(|e| e.code.as_str()).collect();
    assert_eq!(codes, ["V010_REFUSED"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_refuses_unknown_job_types_and_invalid_sections() {
    let tree = tempfile::tempdir().unwrap();
    install(tree.path(), "thread_mirror");
    let (emulator, ids) = emulator_with_session().await;
    let config = json!({
        "sections": [
            {"job_type": "no_such_type"},
            {"job_type": "thread_mirror", "session": {"org_id": "o"}},
            {"job_type": "thread_mirror", "session": session_block(&ids)},
            {"job_type": "thread_mirror", "session": session_block(&ids)},
        ],
    });
    let running = start(&emulator, tree.path(), config).await;
    let report = running.task.await.unwrap();
    let codes: Vec<&str> = report.preflight.iter().map(|e| e.code.as_str()).collect();
    assert!(codes.contains(&"UNKNOWN_JOB_TYPE"), "{codes:?}");
    assert!(codes.contains(&"MISSING_SESSION_KEYS"), "{codes:?}");
    assert!(codes.contains(&"DUPLICATE_SECTION_TARGET"), "{codes:?}");
    assert!(report.sections.is_empty());
    assert!(
        !emulator
            .admin()
            .requests()
            .iter()
            .any(|r| r.command.is_some()),
        "no session call before preflight passed"
    );
}
