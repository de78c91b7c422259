//! Paging over more than 1000 rows, cursors, ordering and exclusive bounds.

mod common;

use common::*;
use serde_json::{Value, json};

/// Drains a list command page by page; returns the rows and the number of pages.
async fn drain(c: &Ctx, mut body: Value, key: &str) -> (Vec<Value>, usize) {
    let mut rows = Vec::new();
    let mut pages = 0;
    loop {
        let (s, v) = c.query(body.clone()).await;
        assert_eq!(s, 200, "{v}");
        pages += 1;
        rows.extend(v[key].as_array().unwrap().iter().cloned());
        match v.get("cursor") {
            Some(Value::String(cur)) => body["cursor"] = json!(cur),
            None => return (rows, pages),
            other => panic!("cursor {other:?}"),
        }
    }
}

#[tokio::test]
async fn thousands_of_items_page_in_order() {
    let c = start().await;
    let sid = c.sid();
    let admin = c.emu.admin();
    c.upload("t", thread("t")).await;
    for i in 0..2500 {
        admin
            .post_item(
                &sid,
                "t",
                json!([{"type": "text", "text": format!("{i}")}]),
                None,
                "usr_alice",
            )
            .unwrap();
    }
    let base = json!({"command": "list_session_thread_items", "session_id": sid, "alias": "t",
                      "ascending": true, "limit": 1000});
    let (rows, pages) = drain(&c, base.clone(), "items").await;
    assert_eq!((rows.len(), pages), (2500, 3));
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r["content"][0]["text"], json!(i.to_string()));
    }
    let stamps: Vec<&str> = rows
        .iter()
        .map(|r| r["created_at"].as_str().unwrap())
        .collect();
    assert!(
        stamps.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing created_at"
    );
    assert!(
        stamps[0].ends_with('Z') && stamps[0].len() == 27,
        "{}",
        stamps[0]
    );

    // Exclusive created_since: the row it names is not returned again.
    let mut since = base.clone();
    since["created_since"] = json!(stamps[999]);
    let (rows2, _) = drain(&c, since, "items").await;
    assert_eq!(rows2.len(), 1500);
    assert_eq!(rows2[0]["created_at"], json!(stamps[1000]));
    let mut at_end = base.clone();
    at_end["created_since"] = json!(stamps[2499]);
    let (s, v) = c.query(at_end).await;
    assert_eq!(
        (s, v["items"].as_array().unwrap().len(), v.get("cursor")),
        (200, 0, None)
    );

    // Exclusive created_before, and both bounds together.
    let mut window = base.clone();
    window["created_since"] = json!(stamps[10]);
    window["created_before"] = json!(stamps[20]);
    let (rows3, _) = drain(&c, window, "items").await;
    assert_eq!(rows3.len(), 9);

    // Newest first, and the default page size of 10.
    let (s, v) = c
        .query(json!({"command": "list_session_thread_items", "session_id": sid, "alias": "t", "ascending": false}))
        .await;
    assert_eq!(s, 200);
    let page = v["items"].as_array().unwrap();
    assert_eq!(page.len(), 10);
    assert_eq!(page[0]["created_at"], json!(stamps[2499]));
    assert!(v["cursor"].is_string());
    let mut desc = json!({"command": "list_session_thread_items", "session_id": sid, "alias": "t",
                          "ascending": false, "limit": 1000});
    let (all_desc, pages) = drain(&c, desc.clone(), "items").await;
    assert_eq!((all_desc.len(), pages), (2500, 3));
    assert_eq!(all_desc[2499]["created_at"], json!(stamps[0]));
    desc["limit"] = json!(1001);
    assert_eq!(c.query(desc).await.0, 400);
}

#[tokio::test]
async fn events_page_like_items() {
    let c = start().await;
    let sid = c.sid();
    for i in 0..1200 {
        c.emu
            .admin()
            .upload_object(
                &sid,
                &format!("o{i}"),
                json!({"type": "thread"}),
                "usr_demo",
            )
            .unwrap();
    }
    let body = json!({"command": "list_session_events", "session_id": sid, "ascending": true, "limit": 1000});
    let (events, pages) = drain(&c, body.clone(), "session_events").await;
    assert_eq!((events.len(), pages), (1200, 2));
    assert!(
        events
            .iter()
            .all(|e| e["type"] == "session_object_modified")
    );
    let ids: std::collections::HashSet<&str> =
        events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1200, "event ids are unique");

    // The latest-event probe the worker uses, then an exclusive poll from it sees only new events.
    let (_, v) = c
        .query(json!({"command": "list_session_events", "session_id": sid, "ascending": false, "limit": 1}))
        .await;
    let newest = v["session_events"][0]["created_at"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(newest, events[1199]["created_at"].as_str().unwrap());
    c.upload("t", thread("t")).await;
    c.post("t", "hi").await;
    let mut poll = body.clone();
    poll["created_since"] = json!(newest);
    let (fresh, _) = drain(&c, poll, "session_events").await;
    let types: Vec<&str> = fresh.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["session_object_modified", "session_thread_item_posted"]
    );
}
