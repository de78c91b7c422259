//! Issue 14, "no compile on any start": the bundled job type's code comes from the build, and an
//! installed component missing from the compile cache compiles in the background while the
//! sections of other job types already poll (real components, the emulator over HTTP).

use std::time::Duration;

use blobhub_emulator::{CreateSession, Emulator, EmulatorConfig, User};
use blobhub_worker::runtime::loader::Compiling;
use blobhub_worker::runtime::supervisor::Runtime;
use serde_json::json;

use crate::runtime::{install, session_block, start_with};

fn cache_entries(tree: &std::path::Path) -> usize {
    std::fs::read_dir(tree.join("cache"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A start on an empty state tree compiles nothing: the bundled harness is loaded from the code
/// the build compiled (so nothing of it lands in the cache either).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_on_an_empty_tree_loads_the_bundled_job_type_without_compiling() {
    let tree = tempfile::tempdir().unwrap();
    let runtime = Runtime::load_for_start(
        Some(tree.path().join("plugins")),
        Some(tree.path().join("cache")),
    )
    .await
    .unwrap();
    let harness = &runtime.job_types.by_name["session_agent_harness"];
    assert!(harness.from_cache, "loaded ready-made, not compiled");
    assert!(runtime.job_types.compiling.is_empty());
    assert_eq!(
        cache_entries(tree.path()),
        0,
        "nothing was compiled to cache"
    );
}

/// The harness's section polls while thread_mirror, installed but not in the cache, is still
/// compiling; thread_mirror's section shows `compiling` meanwhile and runs once it is ready.
///
/// The test holds the finished compile back until it has seen the harness's first poll, so the
/// order is certain whatever the machine's speed: only the harness's section can have polled
/// by then, and the mirror's section is still waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sections_of_ready_job_types_poll_while_an_installed_one_compiles() {
    let tree = tempfile::tempdir().unwrap();
    install(tree.path(), "thread_mirror");
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let admin = emulator.admin();
    let harness_ids = admin.create_session(CreateSession::default()).unwrap();
    let mirror_ids = admin.create_session(CreateSession::default()).unwrap();
    let user = User::demo();
    admin
        .upload_object(
            &mirror_ids.session_id,
            "tasks/t1",
            json!({"type": "thread", "thread": {}}),
            &user.id,
        )
        .unwrap();
    admin
        .post_item(
            &mirror_ids.session_id,
            "tasks/t1",
            json!([{"type": "text", "text": "first words"}]),
            None,
            &user.id,
        )
        .unwrap();

    let mut runtime = Runtime::load_for_start(
        Some(tree.path().join("plugins")),
        Some(tree.path().join("cache")),
    )
    .await
    .unwrap();
    assert!(runtime.job_types.failures.is_empty());
    assert!(!runtime.job_types.by_name.contains_key("thread_mirror"));
    let real = runtime
        .job_types
        .compiling
        .remove("thread_mirror")
        .expect("thread_mirror compiles in the background");
    // The compile's outcome reaches the worker only when the test opens the gate.
    let (gated, settle) = Compiling::new(real.path.clone());
    let (open, gate) = tokio::sync::oneshot::channel::<()>();
    let compiled = tokio::spawn(async move {
        let outcome = real.ready().await;
        let _ = gate.await;
        let from_cache = outcome.as_ref().map(|j| j.from_cache).ok();
        let _ = settle.send(Some(outcome));
        from_cache
    });
    runtime
        .job_types
        .compiling
        .insert("thread_mirror".into(), gated);

    let config = json!({
        "polling": {"interval_idle_ms": 100, "interval_active_ms": 100},
        "sections": [
            {"job_type": "session_agent_harness", "session": session_block(&harness_ids)},
            {"job_type": "thread_mirror", "session": session_block(&mirror_ids)},
        ],
    });
    let running = start_with(runtime, &emulator, tree.path(), config);
    let state = |index: u32| running.section_state(index).unwrap_or_default();
    let polls = || {
        emulator
            .admin()
            .requests()
            .iter()
            .filter(|r| r.command.as_deref() == Some("list_session_events"))
            .count()
    };

    // The harness's section polls; thread_mirror's waits for its compile, saying so.
    assert!(
        admin
            .wait_for(Duration::from_secs(60), |_| polls() >= 1)
            .await,
        "the harness's section never polled"
    );
    // The harness's section attaches too (its feed may poll before it says so).
    running.wait_state(0, "attached").await;
    let (mirror_state, detail) = state(1);
    assert_eq!(mirror_state, "compiling", "{detail}");
    assert!(detail.contains("thread_mirror.wasm"), "{detail}");

    // The compile ends (it really compiled: the cache had no entry); the mirror starts and
    // mirrors the thread, and its compiled code is now cached for the next start.
    open.send(()).unwrap();
    assert_eq!(compiled.await.unwrap(), Some(false), "compiled, not loaded");
    let file = tree.path().join(format!(
        "jobs/thread_mirror-{}/threads/tasks_t1.md",
        mirror_ids.session_id
    ));
    let read = || std::fs::read_to_string(&file).unwrap_or_default();
    for _ in 0..600 {
        if read().contains("first words") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(read().contains("first words"), "mirror: {:?}", read());
    assert_eq!(state(1).0, "attached", "{:?}", state(1));
    assert_eq!(
        cache_entries(tree.path()),
        1,
        "thread_mirror's code was cached"
    );

    let report = running.stop().await;
    assert!(report.preflight.is_empty(), "{:?}", report.preflight);
    assert_eq!(report.sections.len(), 2, "{:?}", report.sections);
    assert!(
        report.sections.iter().all(|(_, end)| end.code.is_none()),
        "{:?}",
        report.sections
    );
}

/// A component that fails in its background compile ends only its own sections, with the
/// loader's code, after the others started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_that_fails_to_load_in_the_background_ends_only_its_sections() {
    let tree = tempfile::tempdir().unwrap();
    let plugins = tree.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    // thread_mirror's component under another name: it compiles, then answers `thread_mirror`.
    install(tree.path(), "thread_mirror");
    std::fs::rename(
        plugins.join("thread_mirror.wasm"),
        plugins.join("mirror_copy.wasm"),
    )
    .unwrap();
    let runtime = Runtime::load_for_start(Some(plugins), Some(tree.path().join("cache")))
        .await
        .unwrap();
    let compiling = runtime.job_types.compiling["mirror_copy"].clone();
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let ids = emulator
        .admin()
        .create_session(CreateSession::default())
        .unwrap();
    let config = json!({
        "polling": {"interval_idle_ms": 100, "interval_active_ms": 100},
        "sections": [
            {"job_type": "session_agent_harness", "session": session_block(&ids)},
            {"job_type": "mirror_copy", "session": session_block(&ids)},
        ],
    });
    let running = start_with(runtime, &emulator, tree.path(), config);
    let error = compiling.ready().await.err().expect("refused");
    assert_eq!(error.code(), "JOB_TYPE_FILE_NAME_MISMATCH", "{error}");
    let detail = running.wait_stopped(1).await;
    assert!(
        detail.starts_with("JOB_TYPE_FILE_NAME_MISMATCH"),
        "{detail}"
    );
    let (harness, detail) = running.section_state(0).unwrap();
    assert_ne!(harness, "stopped", "{detail}");

    let report = running.stop().await;
    assert_eq!(report.sections.len(), 2, "{:?}", report.sections);
    assert_eq!(report.sections[0].1.code, None, "{:?}", report.sections);
}
