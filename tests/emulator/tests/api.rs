//! The `/v1` platform API over real HTTP: every command's success and error paths.

mod common;

use blobhub_emulator::CreateSession;
use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn users_me_authenticates_by_key() {
    let c = start().await;
    let (s, v) = c.get("/users/me", Some(KEY)).await;
    assert_eq!(s, 200);
    assert_eq!(
        v,
        json!({"status": "success", "user": {"id": "usr_demo", "name": "Demo User", "email": "demo@example.com"}})
    );
    let (s, v) = c.get("/users/me", Some("bhk_alice")).await;
    assert_eq!((s, v["user"]["id"].clone()), (200, json!("usr_alice")));
    assert_eq!(c.get("/users/me", Some("wrong")).await.0, 401);
    assert_eq!(c.get("/users/me", None).await.0, 401);

    c.emu.admin().add_user(blobhub_emulator::User {
        id: "usr_bob".into(),
        name: "Bob".into(),
        email: "bob@example.com".into(),
        api_key: "bhk_bob".into(),
    });
    assert_eq!(
        c.get("/users/me", Some("bhk_bob")).await.1["user"]["id"],
        "usr_bob"
    );
}

#[tokio::test]
async fn revisions_by_id_and_default() {
    let c = start().await;
    let ids = &c.ids;
    let by_id = format!(
        "/blobs/{}/{}/revisions/{}",
        ids.org_id, ids.blob_id, ids.revision_id
    );
    let (s, v) = c.get(&by_id, Some(KEY)).await;
    assert_eq!(s, 200);
    assert_eq!(
        v["revision"],
        json!({"id": ids.revision_id, "phase": "draft", "status": "ready"})
    );
    let (s, v) = c
        .get(
            &format!("/blobs/{}/{}/revisions/default", ids.org_id, ids.blob_id),
            Some(KEY),
        )
        .await;
    assert_eq!(
        (s, v["revision"]["id"].clone()),
        (200, json!(ids.revision_id))
    );
    // A known blob without that revision: revision_not_found.
    let path = format!("/blobs/{}/{}/revisions/rev_nope", ids.org_id, ids.blob_id);
    let (s, v) = c.get(&path, Some(KEY)).await;
    assert_eq!(
        (s, v["status"].as_str(), v["error"].as_str()),
        (404, Some("failure"), Some("revision_not_found")),
        "{path}"
    );
    // No such blob (a wrong org or blob id): 403, as the platform answers for a blob the key
    // cannot see.
    for path in [
        format!("/blobs/{}/blb_other/revisions/default", ids.org_id),
        format!(
            "/blobs/org_other/{}/revisions/{}",
            ids.blob_id, ids.revision_id
        ),
    ] {
        let (s, _) = c.get(&path, Some(KEY)).await;
        assert_eq!(s, 403, "{path}");
    }
    assert_eq!(c.get(&by_id, None).await.0, 401);
}

#[tokio::test]
async fn get_session_by_id_or_alias() {
    let c = start().await;
    for key in [c.sid(), "main".to_string()] {
        let (s, v) = c
            .query(json!({"command": "get_session", "session_id": key}))
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["session"]["id"], json!(c.sid()));
        assert_eq!(v["session"]["status"], "open");
    }
    let (s, v) = c
        .query(json!({"command": "get_session", "session_id": "ses_nope"}))
        .await;
    assert_eq!((s, v["error"].as_str()), (404, Some("not_found")));
    // Aliases are for get_session only.
    let (s, _) = c
        .query(json!({"command": "list_session_events", "session_id": "main"}))
        .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn objects_upload_list_download_delete() {
    let c = start().await;
    let sid = c.sid();
    for i in 0..25 {
        assert_eq!(
            c.upload(&format!("tasks/t{i:02}"), thread("t")).await.0,
            200
        );
    }
    c.upload("other", json!({"type": "file"})).await;

    // Paging with default limit 10 and a prefix.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut body =
            json!({"command": "list_session_objects", "session_id": sid, "prefix": "tasks/"});
        if let Some(cur) = &cursor {
            body["cursor"] = json!(cur);
        }
        let (s, v) = c.query(body).await;
        assert_eq!(s, 200, "{v}");
        pages += 1;
        seen.extend(
            v["objects"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["alias"].as_str().unwrap().to_owned()),
        );
        match v.get("cursor") {
            Some(Value::String(cur)) => cursor = Some(cur.clone()),
            None => break,
            other => panic!("cursor {other:?}"),
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        seen,
        (0..25)
            .map(|i| format!("tasks/t{i:02}"))
            .collect::<Vec<_>>()
    );

    let (s, v) = c
        .query(
            json!({"command": "download_session_object", "session_id": sid, "alias": "tasks/t03"}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["object"]["value"], thread("t"));
    // The platform quirk: a missing object is a 403.
    let (s, _) = c
        .query(json!({"command": "download_session_object", "session_id": sid, "alias": "nope"}))
        .await;
    assert_eq!(s, 403);

    // Overwrite keeps items and emits a modified event with the type.
    assert_eq!(c.post("tasks/t03", "hello").await.0, 200);
    let mut changed = thread("t");
    changed["thread"]["metadata"]["instance"]["state"] = json!("active");
    assert_eq!(c.upload("tasks/t03", changed.clone()).await.0, 200);
    assert_eq!(c.emu.admin().object(&sid, "tasks/t03"), Some(changed));
    assert_eq!(c.emu.admin().items(&sid, "tasks/t03").len(), 1);
    let last = c.emu.admin().events(&sid).last().cloned().unwrap();
    assert_eq!(last["type"], "session_object_modified");
    assert_eq!(
        last["session_object"],
        json!({"alias": "tasks/t03", "type": "thread"})
    );

    let (s, _) = c
        .command(
            json!({"command": "delete_session_object", "session_id": sid, "alias": "tasks/t03"}),
        )
        .await;
    assert_eq!(s, 200);
    let last = c.emu.admin().events(&sid).last().cloned().unwrap();
    assert_eq!(last["type"], "session_object_deleted");
    assert_eq!(last["session_object"]["alias"], "tasks/t03");
    let (s, v) = c
        .command(
            json!({"command": "delete_session_object", "session_id": sid, "alias": "tasks/t03"}),
        )
        .await;
    assert_eq!((s, v["error"].as_str()), (404, Some("not_found")));
    let (s, v) = c.upload("bad//alias", thread("x")).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_request_body"))
    );
}

#[tokio::test]
async fn posting_items() {
    let c = start().await;
    let sid = c.sid();
    c.upload("tasks/t1", thread("t1")).await;
    c.upload("plain", json!({"type": "file"})).await;

    let (s, v) = c
        .data_as(
            "bhk_alice",
            "command",
            json!({"command": "post_session_thread_item", "session_id": sid, "alias": "tasks/t1",
                   "content": [{"type": "text", "text": "hi"}], "metadata": {"type": "text", "post_id": "pst_1"}}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let item = &v["item"];
    assert!(item["id"].as_str().unwrap().starts_with("itm_"));
    assert_eq!(item["user_id"], "usr_alice");
    assert_eq!(item["alias"], "tasks/t1");
    assert_eq!(item["session_id"], json!(sid));
    assert_eq!(item["revision_id"], json!(c.ids.revision_id));
    assert_eq!(item["metadata"]["post_id"], "pst_1");
    assert_eq!(item["content"][0]["text"], "hi");
    let ev = c.emu.admin().events(&sid).last().cloned().unwrap();
    assert_eq!(ev["type"], "session_thread_item_posted");
    assert_eq!(ev["session_object"]["alias"], "tasks/t1");
    assert!(ev["id"].as_str().unwrap().starts_with("evt_"));

    let (s, v) = c
        .query(json!({"command": "get_session_thread_item", "session_id": sid, "alias": "tasks/t1", "item_id": item["id"]}))
        .await;
    assert_eq!((s, &v["item"]), (200, item));
    let (s, _) = c
        .query(json!({"command": "get_session_thread_item", "session_id": sid, "alias": "tasks/t1", "item_id": "itm_x"}))
        .await;
    assert_eq!(s, 404);

    // Only existing thread-typed objects take items.
    assert_eq!(c.post("missing", "x").await.0, 404);
    assert_eq!(c.post("plain", "x").await.0, 400);

    // File blocks: 10 is fine, 11 is not, and each needs an alias.
    let file = json!({"type": "file", "file": {"alias": "files/a", "name": "a"}});
    let post = |n: usize, f: Value| {
        let mut content = vec![json!({"type": "text", "text": "files"})];
        content.extend(std::iter::repeat_n(f, n));
        json!({"command": "post_session_thread_item", "session_id": sid, "alias": "tasks/t1", "content": content})
    };
    assert_eq!(c.command(post(10, file.clone())).await.0, 200);
    let (s, v) = c.command(post(11, file)).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("limit_exceeded")));
    assert_eq!(
        c.command(post(1, json!({"type": "file", "file": {"name": "a"}})))
            .await
            .0,
        400
    );
}

#[tokio::test]
async fn item_size_cap_is_exclusive_at_64_kib() {
    let c = start().await;
    c.upload("t", thread("t")).await;
    // Item ids and timestamps are fixed-width, so the stored size grows exactly with the text.
    let (_, v) = c.post("t", "x").await;
    let base = serde_json::to_vec(&v["item"]).unwrap().len() - 1;
    let fits = "x".repeat(65_535 - base);
    let (s, v) = c.post("t", &fits).await;
    assert_eq!(s, 200, "{}", v["message"]);
    assert_eq!(serde_json::to_vec(&v["item"]).unwrap().len(), 65_535);
    let (s, v) = c.post("t", &format!("{fits}x")).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("limit_exceeded")));
}

#[tokio::test]
async fn arguments_are_checked() {
    let c = start().await;
    let sid = c.sid();
    let cases = [
        (
            "query",
            json!({"command": "get_session", "session_id": sid, "extra": 1}),
        ),
        (
            "query",
            json!({"command": "list_session_events", "session_id": sid, "cursor": null}),
        ),
        (
            "query",
            json!({"command": "list_session_events", "session_id": sid, "limit": 1001}),
        ),
        (
            "query",
            json!({"command": "list_session_events", "session_id": sid, "limit": 0}),
        ),
        (
            "query",
            json!({"command": "list_session_events", "session_id": sid, "cursor": "garbage"}),
        ),
        (
            "query",
            json!({"command": "list_session_events", "session_id": sid, "ascending": "yes"}),
        ),
        ("query", json!({"command": "get_session"})),
        ("query", json!({"session_id": sid})),
        ("query", json!([1, 2])),
        // A command on the query channel and a query on the command channel.
        (
            "query",
            json!({"command": "upload_session_object", "session_id": sid, "alias": "a", "value": {}}),
        ),
        (
            "command",
            json!({"command": "get_session", "session_id": sid}),
        ),
        (
            "command",
            json!({"command": "upload_session_object", "session_id": sid, "alias": "a", "value": null}),
        ),
    ];
    for (channel, body) in cases {
        let (s, v) = c.data(channel, body.clone()).await;
        assert_eq!(
            (s, v["status"].as_str(), v["error"].as_str()),
            (400, Some("failure"), Some("invalid_request_body")),
            "{body}"
        );
    }
    let (s, v) = c.query(json!({"command": "frobnicate"})).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("unknown_command")));
    // Not JSON at all.
    let url = format!(
        "{}/revisions/{}/data/query",
        c.emu.api_url(),
        c.ids.revision_id
    );
    let resp = c
        .http
        .post(url)
        .header("X-API-Key", KEY)
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    // Unknown revision.
    let url = format!("{}/revisions/rev_nope/data/query", c.emu.api_url());
    let resp = c
        .http
        .post(url)
        .header("X-API-Key", KEY)
        .body(json!({"command": "get_session", "session_id": sid}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    // A session of another revision is not visible through this one.
    let other = c
        .emu
        .admin()
        .create_session(CreateSession {
            revision_id: Some("rev_other".into()),
            ..Default::default()
        })
        .unwrap();
    let (s, _) = c
        .query(json!({"command": "get_session", "session_id": other.session_id}))
        .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn session_and_revision_state_refuse_writes() {
    let c = start().await;
    let sid = c.sid();
    let admin = c.emu.admin();
    c.upload("t", thread("t")).await;

    admin
        .set_revision(&c.ids.revision_id, Some("commit"), None)
        .unwrap();
    let (s, v) = c.post("t", "x").await;
    assert_eq!(
        (s, v["error"].as_str()),
        (409, Some("revision_not_writable"))
    );
    assert_eq!(
        c.query(json!({"command": "get_session", "session_id": sid}))
            .await
            .0,
        200
    );
    admin
        .set_revision(&c.ids.revision_id, Some("managed"), Some("committing"))
        .unwrap();
    for (ch, body) in [
        (
            "query",
            json!({"command": "get_session", "session_id": sid}),
        ),
        (
            "command",
            json!({"command": "post_session_thread_item", "session_id": sid, "alias": "t", "content": []}),
        ),
    ] {
        let (s, v) = c.data(ch, body).await;
        assert_eq!((s, v["error"].as_str()), (409, Some("revision_not_ready")));
    }
    admin
        .set_revision(&c.ids.revision_id, None, Some("ready"))
        .unwrap();
    assert_eq!(c.post("t", "managed is writable").await.0, 200);

    admin.close_session(&sid).unwrap();
    let (_, v) = c
        .query(json!({"command": "get_session", "session_id": sid}))
        .await;
    assert_eq!(v["session"]["status"], "closed");
    for body in [
        json!({"command": "post_session_thread_item", "session_id": sid, "alias": "t", "content": []}),
        json!({"command": "upload_session_object", "session_id": sid, "alias": "t", "value": {}}),
        json!({"command": "delete_session_object", "session_id": sid, "alias": "t"}),
    ] {
        let (s, v) = c.command(body).await;
        assert_eq!((s, v["error"].as_str()), (409, Some("session_not_open")));
    }
    admin.delete_session(&sid).unwrap();
    let types: Vec<Value> = admin
        .events(&sid)
        .iter()
        .map(|e| e["type"].clone())
        .collect();
    assert_eq!(
        types[types.len() - 4..],
        [
            json!("session_closing"),
            json!("session_closed"),
            json!("session_deleting"),
            json!("session_deleted")
        ]
    );
    assert!(
        admin
            .events(&sid)
            .last()
            .unwrap()
            .get("session_object")
            .is_none()
    );
    assert!(admin.set_session_status(&sid, "bogus").is_err());
}

#[tokio::test]
async fn request_log_records_every_v1_request() {
    let c = start().await;
    c.emu.admin().clear_requests();
    c.get("/users/me", Some("bhk_alice")).await;
    c.get("/users/me", Some("nope")).await;
    c.query(json!({"command": "get_session", "session_id": c.sid()}))
        .await;
    let log = c.emu.admin().requests();
    assert_eq!(log.len(), 3);
    assert_eq!(
        (log[0].method.as_str(), log[0].path.as_str(), log[0].status),
        ("GET", "/v1/users/me", 200)
    );
    assert_eq!(log[0].user_id.as_deref(), Some("usr_alice"));
    assert_eq!((log[1].status, log[1].user_id.as_deref()), (401, None));
    assert_eq!(log[2].command.as_deref(), Some("get_session"));
    assert_eq!(log[2].user_id.as_deref(), Some("usr_demo"));
    assert!(
        !log.iter()
            .any(|r| r.command.as_deref() == Some("list_session_events"))
    );
}

#[tokio::test]
async fn binary_channel_files() {
    let c = start().await;
    let sid = c.sid();
    let url = |ch: &str| {
        format!(
            "{}/revisions/{}/data/{ch}",
            c.emu.api_url(),
            c.ids.revision_id
        )
    };
    let bytes: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    let args = json!({"command": "upload_session_file", "session_id": sid, "alias": "runs/r1/out.bin",
                      "name": "out é.bin", "content_type": "application/x-test", "size": bytes.len()});
    let resp = c
        .http
        .post(url("command"))
        .header("X-API-Key", KEY)
        .header("content-type", "application/octet-stream")
        .header("x-request-body", args.to_string().replace('é', "\\u00e9"))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(
        v["object"]["value"]["file"],
        json!({"name": "out é.bin", "content_type": "application/x-test", "size": 5000})
    );
    let ev = c.emu.admin().events(&sid).last().cloned().unwrap();
    assert_eq!(
        ev["session_object"],
        json!({"alias": "runs/r1/out.bin", "type": "file"})
    );

    let download = |alias: &str| {
        c.http
            .post(url("query"))
            .header("X-API-Key", KEY)
            .header("accept", "application/octet-stream")
            .header("content-type", "application/json")
            .body(
                json!({"command": "download_session_file", "session_id": sid, "alias": alias})
                    .to_string(),
            )
            .send()
    };
    let resp = download("runs/r1/out.bin").await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/octet-stream")
    );
    let envelope: Value =
        serde_json::from_str(resp.headers()["x-response-body"].to_str().unwrap()).unwrap();
    assert_eq!(envelope["status"], "success");
    assert_eq!(envelope["object"]["value"]["file"]["size"], 5000);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), bytes);
    assert_eq!(download("missing").await.unwrap().status().as_u16(), 403);

    // Size mismatch, over the 4 MiB cap, and JSON (no bytes) are refused.
    let send = |args: Value, body: Vec<u8>| {
        c.http
            .post(url("command"))
            .header("X-API-Key", KEY)
            .header("content-type", "application/octet-stream")
            .header("x-request-body", args.to_string())
            .body(body)
            .send()
    };
    let mut bad = args.clone();
    bad["name"] = json!("x");
    bad["size"] = json!(3);
    assert_eq!(
        send(bad.clone(), vec![1, 2])
            .await
            .unwrap()
            .status()
            .as_u16(),
        400
    );
    let big = vec![0u8; 4 * 1024 * 1024 + 1];
    bad["size"] = json!(big.len());
    let resp = send(bad, big).await.unwrap();
    let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(v["error"], "limit_exceeded");
    let mut as_json = args.clone();
    as_json["name"] = json!("x");
    assert_eq!(c.command(as_json).await.0, 400);
}
