//! Settling a thread after a restart: the part of [`Thread`]'s state that is rebuilt from the
//! thread's own items.

use blobhub_worker_sdk::log::Level;
use blobhub_worker_sdk::serde_json::{Value, json};

use super::{OpenPrompt, Thread};
use crate::cursor::ItemCursor;
use crate::guest::ctx::{ItemPages, log};
use crate::items;
use crate::prompt;

impl Thread {
    /// Read the whole thread once after a restart (or a crash mid-turn), page by page: adopt the
    /// newest open prompt, settle the turn that was in flight, and rebuild lost local state from
    /// the items. Only what these need is kept from each page, never the thread. Returns false
    /// when the thread failed.
    pub async fn recover_from_items(&self) -> bool {
        let t = self;
        let own_by = |item: &Value| items::is_own(item, t.ctx.user_id(), &t.own.borrow());
        let (rebuild, in_flight) = {
            let rec = t.rec.borrow();
            (
                rec.items.last_consumed.created_at.is_empty()
                    && rec.agent.agent_session_id.is_empty(),
                rec.turn.as_ref().map(|turn| turn.turn_id.clone()),
            )
        };
        let mut adoption = prompt::Adoption::default();
        // The newest of our own `turn_end` items that names what it consumed (local state lost).
        let mut last_end: Option<Value> = None;
        // Items of the turn in flight, and whether one of them ends it.
        let (mut of_turn, mut ended) = (false, false);
        let mut pages = ItemPages::new(None);
        loop {
            let page = match next_page(t, &mut pages).await {
                Ok(Some(page)) => page,
                Ok(None) => break,
                Err(()) => return true,
            };
            for item in &page {
                adoption.see(item);
                let kind = item.pointer("/metadata/type").and_then(Value::as_str);
                if rebuild
                    && kind == Some("turn_end")
                    && item.pointer("/metadata/consumed_item_id").is_some()
                    && own_by(item)
                {
                    last_end = Some(item.clone());
                }
                if let Some(turn_id) = &in_flight
                    && item.pointer("/metadata/turn_id").and_then(Value::as_str)
                        == Some(turn_id.as_str())
                {
                    of_turn = true;
                    ended |= kind == Some("turn_end");
                }
            }
        }
        // Local state lost: the cursor up to what the newest `turn_end` consumed, read again
        // page by page (rare: only when the state folder was lost).
        let rebuilt = match &last_end {
            Some(end) => {
                let consumed = end
                    .pointer("/metadata/consumed_item_id")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                Some(cursor_through(t, consumed).await)
            }
            None => None,
        };
        // Synchronous part: the record is borrowed, so nothing here may await.
        let unfinished: Option<(String, String, String)> = {
            let mut unfinished = None;
            let mut rec = t.rec.borrow_mut();
            if let (Some(end), Some(cursor)) = (&last_end, rebuilt) {
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
                if let (false, Some(cursor)) = (consumed.is_empty(), cursor) {
                    rec.items.last_consumed = cursor;
                }
                log(
                    Level::Warning,
                    "thread_state_rebuilt_from_wire",
                    Some(&t.alias),
                    json!({"consumed": consumed}),
                );
            }
            // A turn that was in flight: if any of its output reached the thread, the agent had
            // read its messages — count them consumed so they are not answered twice.
            if let Some(turn) = rec.turn.take() {
                let posted = of_turn || turn.agent_started;
                if posted {
                    rec.items.last_consumed = turn.boundary.clone();
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
        if let Some((p, asked_at)) = adoption.finish() {
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

/// The item cursor advanced through the thread up to and including `consumed`, read page by page;
/// `None` when the thread could not be read (the cursor is then left as it was).
async fn cursor_through(t: &Thread, consumed: &str) -> Option<ItemCursor> {
    let mut cursor = ItemCursor::default();
    let mut pages = ItemPages::new(None);
    loop {
        match next_page(t, &mut pages).await {
            Ok(Some(page)) => {
                for i in &page {
                    let id = i.get("id").and_then(Value::as_str).unwrap_or("");
                    cursor.advance(
                        id,
                        i.get("created_at").and_then(Value::as_str).unwrap_or(""),
                    );
                    if id == consumed {
                        return Some(cursor);
                    }
                }
            }
            Ok(None) => return Some(cursor),
            Err(()) => return None,
        }
    }
}

/// The thread's next page for recovery, a failure logged (`open_prompt_scan_failed`).
async fn next_page(t: &Thread, pages: &mut ItemPages) -> Result<Option<Vec<Value>>, ()> {
    // Worth more patience than an ingest: without this scan an open prompt is not adopted and an
    // interrupted turn is not settled.
    pages
        .next_retrying(&t.ctx.session, &t.alias, 4)
        .await
        .map_err(|e| {
            log(
                Level::Warning,
                "open_prompt_scan_failed",
                Some(&t.alias),
                json!({"error": e.to_string()}),
            );
        })
}
