//! The plugin runtime through the real binary: `start` with an installed job type, `plugins`,
//! `plugins check`, and the compile cache filled by `start`.

use std::time::Duration;

use blobhub_emulator::CreateSession;
use serde_json::json;

use crate::runtime::fixtures;
use crate::support::{Home, demo_user, emulator};

fn install(home: &Home, stem: &str) {
    let dir = home.root().join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fixtures().join(format!("{stem}.wasm")),
        dir.join(format!("{stem}.wasm")),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_runs_an_installed_thread_mirror_and_fills_the_compile_cache() {
    let emulator = emulator().await;
    let home = Home::new();
    home.logged_in(&emulator);
    install(&home, "thread_mirror");
    let admin = emulator.admin();
    let ids = admin.create_session(CreateSession::default()).unwrap();
    let user = demo_user();
    admin
        .upload_object(
            &ids.session_id,
            "notes",
            json!({"type": "thread"}),
            &user.id,
        )
        .unwrap();
    admin
        .post_item(
            &ids.session_id,
            "notes",
            json!([{"type": "text", "text": "hello mirror"}]),
            None,
            &user.id,
        )
        .unwrap();
    home.write_config(&format!(
        "polling:\n  interval_idle_ms: 200\n  interval_active_ms: 200\nsections:\n  - name: mirror\n    job_type: thread_mirror\n    session:\n      org_id: {}\n      blob_id: {}\n      revision_id: {}\n      session_id: {}\n",
        ids.org_id, ids.blob_id, ids.revision_id, ids.session_id
    ));
    let running = home.spawn_start().await.expect("start passes preflight");
    let file = home.root().join(format!(
        "jobs/thread_mirror-{}/threads/notes.md",
        ids.session_id
    ));
    let mut text = String::new();
    for _ in 0..300 {
        text = std::fs::read_to_string(&file).unwrap_or_default();
        if text.contains("hello mirror") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = running.terminate().await;
    assert!(
        text.contains("hello mirror"),
        "mirror file: {text:?}; worker: {out:#?}"
    );
    out.assert_success();

    // The start compiled the components into the cache: the next load is a cache hit.
    let listing = home.run(&["-v", "plugins"], None).await;
    listing.assert_success();
    assert!(
        listing.stderr.contains("component_cache_hit"),
        "{listing:#?}"
    );
    assert!(listing.stdout.contains("thread_mirror"), "{listing:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_lists_bundled_and_installed_job_types() {
    let home = Home::new();
    install(&home, "thread_mirror");
    let out = home.run(&["plugins", "--json"], None).await;
    out.assert_success();
    let doc: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    let names: Vec<&str> = doc["job_types"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["name"].as_str())
        .collect();
    assert!(names.contains(&"session_agent_harness"), "{names:?}");
    assert!(names.contains(&"thread_mirror"), "{names:?}");
    let mirror = doc["job_types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "thread_mirror")
        .unwrap();
    assert_eq!(mirror["capabilities"], json!(["session"]));
    // The contract versions this worker loads, and the one each job type was built against.
    assert_eq!(
        doc["wit_versions"],
        json!(["blobhub:worker@0.1.x", "blobhub:worker@0.2.x"])
    );
    assert_eq!(mirror["wit"], "0.2.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_check_validates_without_running() {
    let home = Home::new();
    let ok = fixtures().join("thread_mirror.wasm");
    let out = home
        .run(&["plugins", "check", ok.to_str().unwrap()], None)
        .await;
    out.assert_success();
    assert!(out.stdout.contains("thread_mirror"), "{out:#?}");

    let future = fixtures().join("wit_future.wasm");
    let out = home
        .run(&["plugins", "check", future.to_str().unwrap()], None)
        .await;
    out.assert_code("JOB_TYPE_WIT_UNSUPPORTED");

    let not_wasm = home.root().join("junk.wasm");
    std::fs::create_dir_all(home.root()).unwrap();
    std::fs::write(&not_wasm, b"not a component").unwrap();
    let out = home
        .run(&["plugins", "check", not_wasm.to_str().unwrap()], None)
        .await;
    out.assert_code("JOB_TYPE_INVALID");
}
