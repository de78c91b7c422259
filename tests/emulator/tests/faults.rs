//! Each fault-injection knob as a client sees it.

mod common;

use std::time::{Duration, Instant};

use blobhub_emulator::Faults;
use common::*;
use serde_json::json;

#[tokio::test]
async fn latency_is_added() {
    let c = start().await;
    c.emu.admin().set_faults(
        "users_me",
        Faults {
            latency_ms: 300,
            ..Faults::default()
        },
    );
    let t = Instant::now();
    assert_eq!(c.get("/users/me", Some(KEY)).await.0, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn injected_5xx_and_429() {
    let c = start().await;
    let admin = c.emu.admin();
    admin.set_faults(
        "get_session",
        Faults {
            rate_5xx: 1.0,
            ..Faults::default()
        },
    );
    let body = json!({"command": "get_session", "session_id": c.sid()});
    let resp = c.data_raw(KEY, "query", body.clone()).await.unwrap();
    assert_eq!(resp.status().as_u16(), 503);

    admin.set_faults(
        "get_session",
        Faults {
            rate_429: 1.0,
            retry_after_s: 7,
            ..Faults::default()
        },
    );
    let resp = c.data_raw(KEY, "query", body.clone()).await.unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");

    // Other commands are unaffected; clearing restores normal service.
    assert_eq!(c.get("/users/me", Some(KEY)).await.0, 200);
    admin.clear_faults();
    assert_eq!(c.query(body).await.0, 200);
    let log = admin.requests();
    let codes: Vec<u16> = log
        .iter()
        .filter(|r| r.command.as_deref() == Some("get_session"))
        .map(|r| r.status)
        .collect();
    assert_eq!(codes, [503, 429, 200]);
}

#[tokio::test]
async fn a_429_never_runs_the_write() {
    let c = start().await;
    c.upload("t", thread("t")).await;
    c.emu.admin().set_faults(
        "post_session_thread_item",
        Faults {
            rate_429: 1.0,
            ..Faults::default()
        },
    );
    assert_eq!(c.post("t", "x").await.0, 429);
    assert!(c.emu.admin().items(&c.sid(), "t").is_empty());
}

#[tokio::test]
async fn dropped_connections_before_and_after_apply() {
    let c = start().await;
    let sid = c.sid();
    let admin = c.emu.admin();
    c.upload("t", thread("t")).await;
    let post = json!({"command": "post_session_thread_item", "session_id": sid, "alias": "t",
                      "content": [{"type": "text", "text": "x"}]});

    admin.set_faults(
        "post_session_thread_item",
        Faults {
            rate_drop: 1.0,
            ..Faults::default()
        },
    );
    let err = c.data_raw(KEY, "command", post.clone()).await.unwrap_err();
    assert!(!err.is_status(), "{err}");
    assert!(
        admin.items(&sid, "t").is_empty(),
        "dropped before apply: nothing stored"
    );

    // Outcome unknown: stored, but the client never hears back.
    admin.set_faults(
        "post_session_thread_item",
        Faults {
            rate_drop: 1.0,
            after_apply: true,
            ..Faults::default()
        },
    );
    assert!(c.data_raw(KEY, "command", post.clone()).await.is_err());
    assert_eq!(admin.items(&sid, "t").len(), 1);

    // 5xx after apply is the other outcome-unknown shape.
    admin.set_faults(
        "post_session_thread_item",
        Faults {
            rate_5xx: 1.0,
            after_apply: true,
            ..Faults::default()
        },
    );
    assert_eq!(
        c.data_raw(KEY, "command", post.clone())
            .await
            .unwrap()
            .status()
            .as_u16(),
        503
    );
    assert_eq!(admin.items(&sid, "t").len(), 2);

    let dropped: Vec<u16> = admin
        .requests()
        .iter()
        .filter(|r| r.command.as_deref() == Some("post_session_thread_item"))
        .map(|r| r.status)
        .collect();
    assert_eq!(dropped, [0, 0, 503]);
}

#[tokio::test]
async fn times_limits_a_rule_and_star_matches_everything() {
    let c = start().await;
    let admin = c.emu.admin();
    admin.set_faults(
        "*",
        Faults {
            rate_5xx: 1.0,
            times: Some(2),
            ..Faults::default()
        },
    );
    assert_eq!(c.get("/users/me", Some(KEY)).await.0, 503);
    assert_eq!(
        c.query(json!({"command": "get_session", "session_id": c.sid()}))
            .await
            .0,
        503
    );
    assert_eq!(c.get("/users/me", Some(KEY)).await.0, 200);
    assert!(admin.faults().is_empty());
}

#[tokio::test]
async fn seeded_rates_repeat() {
    let c = start().await;
    let admin = c.emu.admin();
    let mut runs = Vec::new();
    for _ in 0..2 {
        admin.set_fault_seed(42);
        admin.set_faults(
            "users_me",
            Faults {
                rate_5xx: 0.5,
                ..Faults::default()
            },
        );
        let mut codes = Vec::new();
        for _ in 0..20 {
            codes.push(c.get("/users/me", Some(KEY)).await.0);
        }
        runs.push(codes);
    }
    assert_eq!(runs[0], runs[1]);
    assert!(runs[0].contains(&503) && runs[0].contains(&200));
}
