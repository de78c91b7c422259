//! The BlobHub client against the emulator's fault injection.

use std::time::{Duration, Instant};

use blobhub_emulator::{CreateSession, Faults};
use blobhub_worker::api::{ApiError, Client, RetryPolicy};
use serde_json::{Map, Value, json};

use crate::support::{count_requests, demo_user, emulator};

/// Fast retries so that tests do not wait on backoff.
fn fast() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        base: Duration::from_millis(5),
        cap: Duration::from_secs(5),
    }
}

fn args(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap()
}

/// A 5xx and a dropped connection are both transient: retried until the call succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn server_errors_and_dropped_connections_are_retried_then_succeed() {
    let server_error = Faults {
        rate_5xx: 1.0,
        ..Faults::default()
    };
    let dropped = Faults {
        rate_drop: 1.0,
        ..Faults::default()
    };
    for faults in [server_error, dropped] {
        let emu = emulator().await;
        let admin = emu.admin();
        fail_next(&admin, "users_me", 2, faults.clone());
        let client = Client::new(&emu.api_url(), &demo_user().api_key, fast()).unwrap();
        let user = client.users_me().await.unwrap();
        assert_eq!(user.id, "usr_demo", "{faults:?}");
        assert_eq!(count_requests(&admin, "/users/me"), 3, "{faults:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_waits_at_least_retry_after() {
    let emu = emulator().await;
    let admin = emu.admin();
    fail_next(
        &admin,
        "users_me",
        1,
        Faults {
            rate_429: 1.0,
            retry_after_s: 1,
            ..Faults::default()
        },
    );
    let client = Client::new(&emu.api_url(), &demo_user().api_key, fast()).unwrap();
    let began = Instant::now();
    client.users_me().await.unwrap();
    assert!(
        began.elapsed() >= Duration::from_secs(1),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(count_requests(&admin, "/users/me"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_beyond_the_cap_is_returned_not_waited() {
    let emu = emulator().await;
    emu.admin().set_faults(
        "users_me",
        Faults {
            rate_429: 1.0,
            retry_after_s: 60,
            ..Faults::default()
        },
    );
    let client = Client::new(&emu.api_url(), &demo_user().api_key, fast()).unwrap();
    let err = client.users_me().await.unwrap_err();
    assert_eq!(err.code(), "API_RATE_LIMITED");
    assert_eq!(
        err,
        ApiError::RateLimited {
            retry_after: Some(Duration::from_secs(60))
        }
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unauthorized_is_not_retried() {
    let emu = emulator().await;
    let client = Client::new(&emu.api_url(), "bhk_wrong", fast()).unwrap();
    let err = client.users_me().await.unwrap_err();
    assert_eq!(err.code(), "AUTH_INVALID");
    assert!(!format!("{err} {err:?}").contains("bhk_wrong"));
    assert_eq!(count_requests(&emu.admin(), "/users/me"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn persistent_failures_stop_after_max_attempts() {
    let emu = emulator().await;
    emu.admin().set_faults(
        "users_me",
        Faults {
            rate_5xx: 1.0,
            ..Faults::default()
        },
    );
    let client = Client::new(&emu.api_url(), &demo_user().api_key, fast()).unwrap();
    let err = client.users_me().await.unwrap_err();
    assert_eq!(err.code(), "API_TRANSIENT_ERROR");
    assert_eq!(count_requests(&emu.admin(), "/users/me"), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn queries_and_commands_use_the_envelope() {
    let emu = emulator().await;
    let ids = emu
        .admin()
        .create_session(CreateSession::default())
        .unwrap();
    let client = Client::new(&emu.api_url(), &demo_user().api_key, fast()).unwrap();
    let got = client
        .query(
            &ids.revision_id,
            "get_session",
            args(json!({"session_id": ids.session_id})),
        )
        .await
        .unwrap();
    assert_eq!(got["status"], "success");
    assert_eq!(got["session"]["id"], ids.session_id.as_str());

    // An optional argument given as null is left out rather than sent (the platform 400s).
    let listed = client
        .query(
            &ids.revision_id,
            "list_session_objects",
            args(json!({"session_id": ids.session_id, "cursor": null, "limit": 10})),
        )
        .await
        .unwrap();
    assert_eq!(listed["status"], "success");

    let missing = client
        .query(
            &ids.revision_id,
            "get_session",
            args(json!({"session_id": "ses_missing"})),
        )
        .await
        .unwrap_err();
    assert_eq!(missing.code(), "API_COMMAND_FAILED");
    assert!(missing.platform_error().is_some());
}

async fn thread_fixture(
    emu: &blobhub_emulator::Emulator,
) -> (Client, blobhub_emulator::SessionIds) {
    let ids = emu
        .admin()
        .create_session(CreateSession::default())
        .unwrap();
    emu.admin()
        .upload_object(
            &ids.session_id,
            "tasks/t1",
            json!({"type": "thread"}),
            &demo_user().id,
        )
        .unwrap();
    let client = Client::new(&emu.api_url(), &demo_user().api_key, fast()).unwrap();
    (client, ids)
}

/// `post_session_thread_item` of [`post_args`].
async fn post(
    client: &Client,
    ids: &blobhub_emulator::SessionIds,
    post_id: Option<&str>,
) -> Result<Value, ApiError> {
    client
        .command(
            &ids.revision_id,
            "post_session_thread_item",
            post_args(ids, post_id),
        )
        .await
}

/// The next `times` calls of `command` fail as `faults` says.
fn fail_next(admin: &blobhub_emulator::Admin, command: &str, times: u32, faults: Faults) {
    admin.set_faults(
        command,
        Faults {
            times: Some(times),
            ..faults
        },
    );
}

fn post_args(ids: &blobhub_emulator::SessionIds, post_id: Option<&str>) -> Map<String, Value> {
    let mut metadata = json!({"kind": "test"});
    if let Some(post_id) = post_id {
        metadata["post_id"] = json!(post_id);
    }
    args(json!({
        "session_id": ids.session_id,
        "alias": "tasks/t1",
        "content": [{"type": "text", "text": "hello"}],
        "metadata": metadata,
    }))
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_are_not_retried_when_the_outcome_is_unknown() {
    let emu = emulator().await;
    let (client, ids) = thread_fixture(&emu).await;
    fail_next(
        &emu.admin(),
        "post_session_thread_item",
        1,
        Faults {
            rate_5xx: 1.0,
            ..Faults::default()
        },
    );
    let err = post(&client, &ids, None).await.unwrap_err();
    assert_eq!(err.code(), "API_TRANSIENT_ERROR");
    assert_eq!(count_requests(&emu.admin(), "/data/command"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_are_retried_after_a_rate_limit() {
    let emu = emulator().await;
    let (client, ids) = thread_fixture(&emu).await;
    fail_next(
        &emu.admin(),
        "post_session_thread_item",
        1,
        Faults {
            rate_429: 1.0,
            retry_after_s: 0,
            ..Faults::default()
        },
    );
    let posted = post(&client, &ids, None).await.unwrap();
    assert_eq!(posted["status"], "success");
    assert_eq!(emu.admin().items(&ids.session_id, "tasks/t1").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_with_post_id_is_read_back_instead_of_posted_twice() {
    let emu = emulator().await;
    let (client, ids) = thread_fixture(&emu).await;
    // The item is stored, then the connection drops: the outcome is unknown to the client.
    fail_next(
        &emu.admin(),
        "post_session_thread_item",
        1,
        Faults {
            rate_drop: 1.0,
            after_apply: true,
            ..Faults::default()
        },
    );
    let posted = post(&client, &ids, Some("pst_01TEST")).await.unwrap();
    assert_eq!(posted["item"]["metadata"]["post_id"], "pst_01TEST");
    let items = emu.admin().items(&ids.session_id, "tasks/t1");
    assert_eq!(items.len(), 1, "{items:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_that_was_not_stored_is_sent_again() {
    let emu = emulator().await;
    let (client, ids) = thread_fixture(&emu).await;
    // 5xx before the command runs: the read-back finds nothing, so the post is re-sent.
    fail_next(
        &emu.admin(),
        "post_session_thread_item",
        1,
        Faults {
            rate_5xx: 1.0,
            ..Faults::default()
        },
    );
    post(&client, &ids, Some("pst_02TEST")).await.unwrap();
    let items = emu.admin().items(&ids.session_id, "tasks/t1");
    assert_eq!(items.len(), 1, "{items:#?}");
    assert_eq!(items[0]["metadata"]["post_id"], "pst_02TEST");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_read_back_runs_even_when_no_attempt_is_left() {
    let emu = emulator().await;
    let (_, ids) = thread_fixture(&emu).await;
    let single = RetryPolicy {
        max_attempts: 1,
        ..fast()
    };
    let client = Client::new(&emu.api_url(), &demo_user().api_key, single).unwrap();
    fail_next(
        &emu.admin(),
        "post_session_thread_item",
        1,
        Faults {
            rate_5xx: 1.0,
            after_apply: true,
            ..Faults::default()
        },
    );
    let posted = post(&client, &ids, Some("pst_03TEST")).await.unwrap();
    assert_eq!(posted["item"]["metadata"]["post_id"], "pst_03TEST");
    assert_eq!(emu.admin().items(&ids.session_id, "tasks/t1").len(), 1);
}
