//! The admin HTTP API, change notification and the state file.

mod common;

use std::time::Duration;

use blobhub_emulator::{Emulator, EmulatorConfig};
use common::*;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn admin_http_routes() {
    let c = start().await;
    let (s, v) = c.admin_req(Method::GET, "", None).await;
    assert_eq!(s, 200);
    assert!(v["routes"].as_array().unwrap().len() > 5);

    let (s, ids) = c
        .admin_req(
            Method::POST,
            "/sessions",
            Some(json!({"org_id": "org_x", "blob_id": "blb_x", "revision_id": "rev_x", "session_id": "ses_x", "alias": "s"})),
        )
        .await;
    assert_eq!(s, 200, "{ids}");
    assert_eq!(ids["session_id"], "ses_x");
    let (s, _) = c
        .admin_req(
            Method::POST,
            "/sessions",
            Some(json!({"session_id": "ses_x"})),
        )
        .await;
    assert_eq!(s, 409);

    let (s, _) = c
        .admin_req(
            Method::PUT,
            "/sessions/ses_x/objects/tasks/t1",
            Some(json!({"value": thread("t1"), "as_user": "usr_alice"})),
        )
        .await;
    assert_eq!(s, 200);
    let (_, v) = c
        .admin_req(Method::GET, "/sessions/ses_x/objects/tasks/t1", None)
        .await;
    assert_eq!(v["value"], thread("t1"));
    let (s, v) = c
        .admin_req(
            Method::POST,
            "/sessions/ses_x/items/tasks/t1",
            Some(json!({"content": [{"type": "text", "text": "from alice"}], "metadata": {"type": "text"}, "as_user": "usr_alice"})),
        )
        .await;
    assert_eq!((s, v["item"]["user_id"].as_str()), (200, Some("usr_alice")));
    let (_, v) = c
        .admin_req(Method::GET, "/sessions/ses_x/items/tasks/t1", None)
        .await;
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    let (_, v) = c
        .admin_req(Method::GET, "/sessions/ses_x/objects", None)
        .await;
    assert_eq!(v["objects"][0]["alias"], "tasks/t1");
    let (_, v) = c
        .admin_req(Method::GET, "/sessions/ses_x/events", None)
        .await;
    assert_eq!(v["events"].as_array().unwrap().len(), 2);
    assert_eq!(
        c.admin_req(Method::DELETE, "/sessions/ses_x/objects/tasks/t1", None)
            .await
            .0,
        200
    );
    assert_eq!(
        c.admin_req(Method::GET, "/sessions/ses_x/objects/tasks/t1", None)
            .await
            .0,
        404
    );

    let (s, v) = c
        .admin_req(
            Method::PUT,
            "/revisions/rev_x",
            Some(json!({"phase": "commit"})),
        )
        .await;
    assert_eq!((s, v["revision"]["phase"].as_str()), (200, Some("commit")));
    let (_, v) = c
        .admin_req(Method::POST, "/sessions/ses_x/close", None)
        .await;
    assert_eq!(v["session"]["status"], "closed");
    let (_, v) = c
        .admin_req(
            Method::POST,
            "/sessions/ses_x/status",
            Some(json!({"status": "open"})),
        )
        .await;
    assert_eq!(v["session"]["status"], "open");
    let (_, v) = c
        .admin_req(Method::POST, "/sessions/ses_x/delete", None)
        .await;
    assert_eq!(v["session"]["status"], "deleted");

    let (s, _) = c
        .admin_req(
            Method::POST,
            "/users",
            Some(json!({"id": "usr_c", "name": "C", "email": "c@x", "api_key": "bhk_c"})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        c.get("/users/me", Some("bhk_c")).await.1["user"]["id"],
        "usr_c"
    );

    let (s, _) = c
        .admin_req(
            Method::PUT,
            "/faults/users_me",
            Some(json!({"rate_429": 1.0, "retry_after_s": 3})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(c.get("/users/me", Some(KEY)).await.0, 429);
    assert_eq!(
        c.admin_req(Method::PUT, "/faults/x", Some(json!({"bogus": 1})))
            .await
            .0,
        400
    );
    assert_eq!(
        c.admin_req(Method::POST, "/faults/seed", Some(json!({"seed": 1})))
            .await
            .0,
        200
    );
    assert_eq!(c.admin_req(Method::DELETE, "/faults", None).await.0, 200);
    assert_eq!(c.get("/users/me", Some(KEY)).await.0, 200);

    let (_, v) = c.admin_req(Method::GET, "/requests", None).await;
    let statuses: Vec<u64> = v["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [200, 429, 200]);
    assert_eq!(c.admin_req(Method::DELETE, "/requests", None).await.0, 200);
    assert!(
        c.emu.admin().requests().is_empty(),
        "admin calls are not logged"
    );
    assert_eq!(c.admin_req(Method::GET, "/nope", None).await.0, 404);
}

#[tokio::test]
async fn wait_for_wakes_on_change() {
    let c = start().await;
    let admin = c.emu.admin();
    c.upload("t", thread("t")).await;
    let sid = c.sid();
    let poster = {
        let c_http = c.http.clone();
        let url = format!(
            "{}/revisions/{}/data/command",
            c.emu.api_url(),
            c.ids.revision_id
        );
        let body = json!({"command": "post_session_thread_item", "session_id": sid, "alias": "t",
                          "content": [{"type": "text", "text": "late"}]});
        tokio::spawn(async move {
            c_http
                .post(url)
                .header("X-API-Key", KEY)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
        })
    };
    let sid2 = sid.clone();
    assert!(
        admin
            .wait_for(Duration::from_secs(10), move |a| !a
                .items(&sid2, "t")
                .is_empty())
            .await
    );
    poster.await.unwrap().unwrap();
    assert!(
        !admin
            .wait_for(Duration::from_millis(50), |a| a.items(&sid, "t").len() > 5)
            .await
    );
}

#[tokio::test]
async fn state_file_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.json");
    let config = EmulatorConfig {
        state_file: Some(file.clone()),
        ..EmulatorConfig::default()
    };
    let c = start_with(config.clone()).await;
    c.upload("t", thread("t")).await;
    let (_, first) = c.post("t", "before restart").await;
    c.emu.admin().add_user(alice());
    let sid = c.sid();
    c.emu.shutdown().await;
    assert!(file.exists());

    let emu = Emulator::start(config).await.unwrap();
    let admin = emu.admin();
    assert_eq!(admin.items(&sid, "t")[0]["id"], first["item"]["id"]);
    assert_eq!(admin.object(&sid, "t"), Some(thread("t")));
    assert!(admin.users().iter().any(|u| u.id == "usr_alice"));
    let second = admin
        .post_item(
            &sid,
            "t",
            json!([{"type": "text", "text": "after"}]),
            None,
            "usr_demo",
        )
        .unwrap();
    assert!(second["created_at"].as_str() > first["item"]["created_at"].as_str());
    assert_ne!(second["id"], first["item"]["id"]);
    let http = client();
    let resp = http
        .get(format!("{}/users/me", emu.api_url()))
        .header("X-API-Key", "bhk_alice")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn admin_upload_file_is_served_by_download_session_file() {
    let c = start().await;
    let admin = c.emu.admin();
    let sid = c.sid();
    let obj = admin
        .upload_file(
            &sid,
            "files/a.bin",
            "a.bin",
            "application/octet-stream",
            b"\x00\x01abc",
            "usr_alice",
        )
        .unwrap();
    assert_eq!(obj["alias"], "files/a.bin");
    assert_eq!(obj["value"]["file"]["size"], 5);
    assert_eq!(
        admin.file_bytes(&sid, "files/a.bin").as_deref(),
        Some(&b"\x00\x01abc"[..])
    );
    assert_eq!(admin.file_bytes(&sid, "files/none"), None);
    let modified = admin
        .events(&sid)
        .into_iter()
        .filter(|e| {
            e["type"] == "session_object_modified" && e["session_object"]["alias"] == "files/a.bin"
        })
        .count();
    assert_eq!(modified, 1);
    // The bytes come back through the API's binary channel, as the worker downloads inbound files.
    let resp = c
        .http
        .post(format!(
            "{}/revisions/{}/data/query",
            c.emu.api_url(),
            c.ids.revision_id
        ))
        .header("X-API-Key", KEY)
        .header("Accept", "application/octet-stream")
        .body(
            json!({"command": "download_session_file", "session_id": sid, "alias": "files/a.bin"})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(&resp.bytes().await.unwrap()[..], b"\x00\x01abc");
    // Over the 4 MiB cap: the API's limit applies to admin uploads too.
    let big = vec![0u8; 4 * 1024 * 1024 + 1];
    let err = admin
        .upload_file(
            &sid,
            "files/big",
            "big",
            "application/octet-stream",
            &big,
            "usr_alice",
        )
        .unwrap_err();
    assert_eq!(err.status, 400);
}
