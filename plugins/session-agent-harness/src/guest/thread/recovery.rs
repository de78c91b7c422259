//! Settling a thread after a restart: the part of [`Thread`]'s state that is rebuilt from the
//! thread's own items.

use blobhub_worker_sdk::log::Level;
use blobhub_worker_sdk::serde_json::{Value, json};

use super::{OpenPrompt, Thread};
use crate::cursor::ItemCursor;
use crate::guest::ctx::{list_items_since, log, retrying};
use crate::items;
use crate::prompt;

impl Thread {
    /// Read the whole thread once after a restart (or a crash mid-turn): adopt the newest open
    /// prompt, settle the turn that was in flight, and rebuild lost local state from the items.
    /// Returns false when the thread failed.
    pub async fn recover_from_items(&self) -> bool {
        let t = self;
        // Worth more patience than an ingest: without this scan an open prompt is not adopted and
        // an interrupted turn is not settled.
        let scan = retrying(4, || list_items_since(&t.ctx.session, &t.alias, None));
        let all = match scan.await {
            Ok(v) => v,
            Err(e) => {
                log(
                    Level::Warning,
                    "open_prompt_scan_failed",
                    Some(&t.alias),
                    json!({"error": e.to_string()}),
                );
                return true;
            }
        };
        let own_by = |item: &Value| items::is_own(item, t.ctx.user_id(), &t.own.borrow());
        // Synchronous part: the record is borrowed, so nothing here may await.
        let unfinished: Option<(String, String, String)> = {
            let mut unfinished = None;
            let mut rec = t.rec.borrow_mut();
            // Local state lost: rebuild the cursor and the agent session from our own `turn_end` items.
            if rec.items.last_consumed.created_at.is_empty()
                && rec.agent.agent_session_id.is_empty()
                && let Some(end) = all.iter().rev().find(|i| {
                    own_by(i)
                        && i.pointer("/metadata/type").and_then(Value::as_str) == Some("turn_end")
                        && i.pointer("/metadata/consumed_item_id").is_some()
                })
            {
                let consumed = end
                    .pointer("/metadata/consumed_item_id")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                rec.agent.agent_session_id = end
                    .pointer("/metadata/agent_session_id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                if let Some(u) = end.pointer("/metadata/agent_usage_total") {
                    rec.agent.usage_total = u.clone();
                }
                let mut cursor = ItemCursor::default();
                for i in &all {
                    let id = i.get("id").and_then(Value::as_str).unwrap_or("");
                    cursor.advance(
                        id,
                        i.get("created_at").and_then(Value::as_str).unwrap_or(""),
                    );
                    if id == consumed {
                        break;
                    }
                }
                if !consumed.is_empty() {
                    rec.items.last_consumed = cursor;
                }
                log(
                    Level::Warning,
                    "thread_state_rebuilt_from_wire",
                    Some(&t.alias),
                    json!({"consumed": consumed}),
                );
            }
            // A turn that was in flight: if any of its output reached the thread, the agent had read
            // its messages — count them consumed so they are not answered twice.
            if let Some(turn) = rec.turn.take() {
                let of_turn: Vec<&Value> = all
                    .iter()
                    .filter(|i| {
                        i.pointer("/metadata/turn_id").and_then(Value::as_str)
                            == Some(turn.turn_id.as_str())
                    })
                    .collect();
                let posted = !of_turn.is_empty() || turn.agent_started;
                if posted {
                    rec.items.last_consumed = turn.boundary.clone();
                    let ended = of_turn.iter().any(|i| {
                        i.pointer("/metadata/type").and_then(Value::as_str) == Some("turn_end")
                    });
                    if !ended {
                        unfinished = Some((
                            turn.turn_id.clone(),
                            turn.boundary.item_id.clone(),
                            rec.agent.agent_session_id.clone(),
                        ));
                    }
                }
                log(
                    Level::Info,
                    "turn_settled_after_restart",
                    Some(&t.alias),
                    json!({"output_posted": posted}),
                );
            }
            unfinished
        };
        // A turn cut short by the restart after it had spoken: close it on the thread, so readers
        // (and the web UI) see it end rather than hang.
        if let Some((turn_id, consumed, session)) = unfinished {
            let (content, mut metadata) = items::turn_end(
                "interrupted",
                &Default::default(),
                0,
                "the worker restarted during this turn",
            );
            metadata["agent_session_id"] = json!(session);
            metadata["consumed_item_id"] = json!(consumed);
            let item = (content, metadata);
            if let Err(f) = t.post(item, Some(&turn_id)).await {
                log(
                    Level::Warning,
                    "interrupted_turn_end_failed",
                    Some(&t.alias),
                    json!({"error": f.message}),
                );
            }
        }
        if let Some((p, asked_at)) = prompt::adopt(&all) {
            log(
                Level::Info,
                "open_prompt_restored",
                Some(&t.alias),
                json!({"prompt_id": p.prompt_id}),
            );
            t.prompt.replace(Some(OpenPrompt {
                prompt: p,
                request_id: None,
                asked_at,
            }));
        }
        t.save().is_ok()
    }
}
