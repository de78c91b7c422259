//! The item cursor of a thread: "everything up to here has been seen".
//!
//! The reference keeps only the last item's `created_at` and trusts an exclusive `created_since`,
//! so two items sharing a timestamp across a page or fetch boundary can be skipped, and an
//! inclusive server would redeliver one. Here every fetch overlaps the previous one by
//! [`OVERLAP_SECS`] and the cursor remembers the ids it has seen inside that window: items are
//! neither skipped nor repeated whatever the server's timestamp precision.
//!
//! The platform's listings are eventually consistent: an item can become visible seconds after
//! a later one (its own SDK re-reads a 5 s overlap). The overlap is therefore 5 s, and the
//! worker's own posts never move the cursor's anchor by being read back ([`ItemCursor::note`]):
//! they only move it once they are old enough that everything created before them is visible
//! (the thread's task decides that, guest/thread.rs), so a person's late item is not skipped
//! because the worker answered a later one in the meantime.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::timestamp;

/// How far each fetch reaches back before the newest seen item.
pub const OVERLAP_SECS: i64 = 5;

/// Up to this many ids, `recent` is pruned on every step; beyond, once it has doubled since the
/// last pruning (a thread can receive thousands of items within one window, and pruning parses
/// every timestamp).
const PRUNE_EAGERLY: usize = 64;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ItemCursor {
    /// The newest item seen (its id and `created_at`), "" before the first.
    #[serde(default)]
    pub item_id: String,
    #[serde(default)]
    pub created_at: String,
    /// Ids seen with `created_at` inside the overlap window ending at `created_at`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<(String, String)>,
    /// The ids of `recent`, so that a lookup does not scan it: valid while it holds as many ids
    /// as `recent` (rebuilt otherwise, e.g. after loading).
    #[serde(skip)]
    ids: HashSet<String>,
    /// `recent`'s length after its last pruning.
    #[serde(skip)]
    pruned_len: usize,
}

impl PartialEq for ItemCursor {
    fn eq(&self, other: &Self) -> bool {
        self.item_id == other.item_id
            && self.created_at == other.created_at
            && self.recent == other.recent
    }
}

impl Eq for ItemCursor {}

impl ItemCursor {
    /// The exclusive lower bound to send as `created_since`: one overlap window before the
    /// newest seen item, or none to read from the beginning.
    pub fn created_since(&self) -> Option<String> {
        if self.created_at.is_empty() {
            return None;
        }
        // An unparseable server timestamp: read everything again and de-duplicate by id.
        timestamp::earlier(&self.created_at, OVERLAP_SECS)
    }

    /// Whether an item has not been seen yet. Items older than the window were seen (they came
    /// before the newest seen one); inside it, the id decides.
    pub fn is_new(&self, item_id: &str, created_at: &str) -> bool {
        if self.seen_recently(item_id) || item_id == self.item_id {
            return false;
        }
        if self.created_at.is_empty() {
            return true;
        }
        match self.window_start() {
            Some(start) => timestamp::cmp(created_at, &start) == std::cmp::Ordering::Greater,
            None => true,
        }
    }

    /// Record an item as seen; keeps the newest position and prunes ids that left the window.
    pub fn advance(&mut self, item_id: &str, created_at: &str) {
        if self.created_at.is_empty()
            || timestamp::cmp(created_at, &self.created_at) != std::cmp::Ordering::Less
        {
            self.item_id = item_id.to_string();
            self.created_at = created_at.to_string();
        }
        self.remember(item_id, created_at);
        if self.recent.len() <= PRUNE_EAGERLY || self.recent.len() >= 2 * self.pruned_len {
            self.prune();
        }
    }

    /// Record an item as seen without moving the anchor (the worker's own items): it is not
    /// delivered again, and items before it that are not visible yet are not skipped.
    pub fn note(&mut self, item_id: &str, created_at: &str) {
        self.remember(item_id, created_at);
    }

    /// Whether `item_id` is among `recent`.
    fn seen_recently(&self, item_id: &str) -> bool {
        if self.ids.len() == self.recent.len() {
            self.ids.contains(item_id)
        } else {
            self.recent.iter().any(|(id, _)| id == item_id)
        }
    }

    fn remember(&mut self, item_id: &str, created_at: &str) {
        if self.ids.len() != self.recent.len() {
            self.reindex();
        }
        if self.ids.insert(item_id.to_string()) {
            self.recent
                .push((item_id.to_string(), created_at.to_string()));
        }
    }

    /// Rebuilds `ids` from `recent`, dropping repeated ids, so that both hold as many.
    fn reindex(&mut self) {
        self.ids.clear();
        let ids = &mut self.ids;
        self.recent.retain(|(id, _)| ids.insert(id.clone()));
    }

    /// Drops the ids that left the window (whatever the timestamps' precision).
    fn prune(&mut self) {
        if let Some(start) = self.window_start() {
            self.recent
                .retain(|(_, at)| timestamp::cmp(at, &start) == std::cmp::Ordering::Greater);
        }
        self.reindex();
        self.pruned_len = self.recent.len().max(PRUNE_EAGERLY);
    }

    fn window_start(&self) -> Option<String> {
        timestamp::earlier(&self.created_at, OVERLAP_SECS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_cursor_reads_everything() {
        let c = ItemCursor::default();
        assert_eq!(c.created_since(), None);
        assert!(c.is_new("a", "2026-01-01T00:00:00Z"));
    }

    #[test]
    fn equal_timestamps_are_neither_skipped_nor_repeated() {
        let mut c = ItemCursor::default();
        c.advance("a", "2026-01-01T00:00:05.100Z");
        // The next fetch overlaps: it starts five seconds earlier.
        assert_eq!(c.created_since().unwrap(), "2026-01-01T00:00:00Z");
        // `a` comes back in the overlap and is dropped; `b` shares its timestamp and is kept.
        assert!(!c.is_new("a", "2026-01-01T00:00:05.100Z"));
        assert!(c.is_new("b", "2026-01-01T00:00:05.100Z"));
        c.advance("b", "2026-01-01T00:00:05.100Z");
        assert!(!c.is_new("b", "2026-01-01T00:00:05.100Z"));
        // A late item inside the window that was never seen is still delivered.
        assert!(c.is_new("late", "2026-01-01T00:00:05.000Z"));
        // Items before the window were necessarily seen.
        assert!(!c.is_new("old", "2025-12-31T23:59:59Z"));
    }

    #[test]
    fn window_is_pruned() {
        let mut c = ItemCursor::default();
        c.advance("a", "2026-01-01T00:00:00Z");
        c.advance("b", "2026-01-01T00:00:10Z");
        assert_eq!(c.recent.len(), 1);
        assert_eq!(c.item_id, "b");
        assert!(!c.is_new("a", "2026-01-01T00:00:00Z"));
    }

    #[test]
    fn own_items_do_not_move_the_anchor_past_a_late_item() {
        let mut c = ItemCursor::default();
        // B (a person's) is read; A, created 1 s before it, is not visible yet.
        c.advance("b", "2026-01-01T00:00:01Z");
        // The worker's answers are read back over the next seconds.
        for (i, at) in ["00:00:02", "00:00:04", "00:00:09", "00:00:20"]
            .iter()
            .enumerate()
        {
            c.note(&format!("own{i}"), &format!("2026-01-01T{at}Z"));
        }
        // A surfaces: still inside the window, delivered once.
        assert!(c.is_new("a", "2026-01-01T00:00:00Z"));
        c.advance("a", "2026-01-01T00:00:00Z");
        assert!(!c.is_new("a", "2026-01-01T00:00:00Z"));
        // The worker's own items are not delivered again.
        assert!(!c.is_new("own3", "2026-01-01T00:00:20Z"));
        assert_eq!(c.item_id, "b");
        assert_eq!(c.created_since().unwrap(), "2025-12-31T23:59:56Z");
    }

    #[test]
    fn the_overlap_is_at_least_the_platforms_five_seconds() {
        let mut c = ItemCursor::default();
        c.advance("b", "2026-01-01T00:00:10Z");
        assert!(c.is_new("late", "2026-01-01T00:00:05.001Z"));
        assert!(!c.is_new("old", "2026-01-01T00:00:05Z"));
    }

    #[test]
    fn thousands_of_items_within_one_window_are_each_delivered_once() {
        let mut c = ItemCursor::default();
        let at = |i: usize| format!("2026-01-01T00:00:0{}.{:06}Z", i / 5000, i % 5000);
        for i in 0..10_000 {
            let id = format!("itm_{i:05}");
            assert!(c.is_new(&id, &at(i)), "{id}");
            c.advance(&id, &at(i));
            assert!(!c.is_new(&id, &at(i)), "{id} twice");
        }
        // Every one of them is still known (all inside the window), none twice.
        assert!((0..10_000).all(|i| !c.is_new(&format!("itm_{i:05}"), &at(i))));
        let mut ids: Vec<&str> = c.recent.iter().map(|(id, _)| id.as_str()).collect();
        let all = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), all);
        // Later items move the window past them: they are pruned once `recent` has doubled
        // (amortised), and from then on the window holds a few ids again.
        for i in 0..12_000 {
            let later = format!(
                "2026-01-01T{:02}:{:02}:{:02}Z",
                1 + i / 3600,
                (i / 60) % 60,
                i % 60
            );
            c.advance(&format!("later{i}"), &later);
        }
        assert!(c.recent.len() <= PRUNE_EAGERLY, "{}", c.recent.len());
    }

    #[test]
    fn a_loaded_or_cleared_cursor_still_knows_its_ids() {
        let mut c = ItemCursor::default();
        c.advance("a", "2026-01-01T00:00:00Z");
        c.advance("b", "2026-01-01T00:00:01Z");
        let y = serde_yaml::to_string(&c).unwrap();
        let mut loaded: ItemCursor = serde_yaml::from_str(&y).unwrap();
        assert!(!loaded.is_new("a", "2026-01-01T00:00:00Z"));
        loaded.note("c", "2026-01-01T00:00:02Z");
        assert!(!loaded.is_new("a", "2026-01-01T00:00:00Z"));
        assert!(!loaded.is_new("c", "2026-01-01T00:00:02Z"));
        loaded.recent.clear();
        assert!(loaded.is_new("a", "2026-01-01T00:00:00.5Z"));
        loaded.note("a", "2026-01-01T00:00:00.5Z");
        assert!(!loaded.is_new("a", "2026-01-01T00:00:00.5Z"));
        assert!(loaded.is_new("c", "2026-01-01T00:00:02.5Z"));
    }

    #[test]
    fn round_trips_through_yaml() {
        let mut c = ItemCursor::default();
        c.advance("a", "2026-01-01T00:00:00Z");
        let y = serde_yaml::to_string(&c).unwrap();
        assert_eq!(serde_yaml::from_str::<ItemCursor>(&y).unwrap(), c);
    }
}
