//! What the dashboard draws: a [`Snapshot`] of the running worker (also the document the
//! status socket serves and `status --json` prints), the [`ViewState`] kept across refreshes
//! (selection and scroll position), and the text helpers the view uses (pure functions, no
//! terminal).

use serde::{Deserialize, Serialize};

use crate::runtime::capabilities::status::{ErrorRecord, SectionStatus};

/// The fixed part of the header, known once preflight has passed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub version: String,
    /// The user the worker acts as.
    pub user: String,
    pub instance_id: String,
    /// Sections in config.yaml.
    pub sections: usize,
    /// The worker's process id.
    #[serde(default)]
    pub pid: u32,
    /// UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    #[serde(default)]
    pub started_at: String,
}

/// One refresh's worth of state: a plain copy, drawn without holding any lock.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub identity: Identity,
    /// UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub clock: String,
    /// Agent slots of the worker-wide pool.
    pub slots: Slots,
    /// Every section's status, in config order.
    pub sections: Vec<SectionStatus>,
    /// The board's recent warnings and errors, oldest first (as the board keeps them).
    pub errors: Vec<ErrorRecord>,
    /// A graceful stop has been asked for (by `q`, Ctrl-C, `stop` or a signal).
    pub stopping: bool,
}

/// Agent slots: in use and capacity; and the agents held waiting for a person's answer, which
/// hold no slot (`concurrency.held_waits_max` bounds them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slots {
    pub busy: u32,
    pub total: u32,
    #[serde(default)]
    pub held: u32,
    #[serde(default)]
    pub held_max: u32,
}

impl From<(u32, u32)> for Slots {
    fn from((busy, total): (u32, u32)) -> Self {
        Slots {
            busy,
            total,
            ..Slots::default()
        }
    }
}

/// A selectable entry: (section index, thread alias).
pub type EntryKey = (u32, String);

impl Snapshot {
    /// The selectable threads in display order: sections in config order, threads by alias.
    pub fn entries(&self) -> Vec<EntryKey> {
        self.sections
            .iter()
            .flat_map(|s| s.threads.keys().map(|t| (s.index, t.clone())))
            .collect()
    }

    /// Threads per display state, e.g. `active (turn)` → 2.
    pub fn threads_by_state(&self) -> std::collections::BTreeMap<String, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for t in self.sections.iter().flat_map(|s| s.threads.values()) {
            *counts.entry(t.state.clone()).or_insert(0) += 1;
        }
        counts
    }
}

/// The highlighted thread. Kept by key across refreshes; when its thread disappears the
/// selection stays at the same position in the list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    key: Option<EntryKey>,
    position: usize,
}

impl Selection {
    /// Re-anchor the selection in a new snapshot.
    pub fn refresh(&mut self, snapshot: &Snapshot) {
        let entries = snapshot.entries();
        if entries.is_empty() {
            self.key = None;
            return;
        }
        if let Some(i) = self
            .key
            .as_ref()
            .and_then(|k| entries.iter().position(|e| e == k))
        {
            self.position = i;
        } else {
            self.position = self.position.min(entries.len() - 1);
        }
        self.key = Some(entries[self.position].clone());
    }

    pub fn up(&mut self, snapshot: &Snapshot) {
        self.refresh(snapshot);
        self.select(snapshot, self.position.saturating_sub(1));
    }

    pub fn down(&mut self, snapshot: &Snapshot) {
        self.refresh(snapshot);
        self.select(snapshot, self.position.saturating_add(1));
    }

    /// Select the entry at `position` in display order (clamped to the last one).
    pub fn select(&mut self, snapshot: &Snapshot, position: usize) {
        let entries = snapshot.entries();
        if let Some(last) = entries.len().checked_sub(1) {
            self.position = position.min(last);
            self.key = Some(entries[self.position].clone());
        }
    }

    /// The selected entry's position in display order, if any.
    pub fn position(&self) -> Option<usize> {
        self.key.as_ref().map(|_| self.position)
    }

    pub fn is_selected(&self, section: u32, thread: &str) -> bool {
        self.key
            .as_ref()
            .is_some_and(|(s, t)| *s == section && t == thread)
    }
}

/// What a navigation key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    End,
}

/// The selection and the scroll position of the sections area, kept across refreshes. The view
/// records, at every draw, the height of the area and the line of every entry, so that the keys
/// can move by pages and the next draw keeps the selection in sight.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewState {
    pub selection: Selection,
    /// The first line of the sections shown.
    pub offset: usize,
    /// Lines of the sections area at the last draw.
    pub page: usize,
    /// Lines of all sections at the last draw.
    pub total: usize,
    /// The line of each entry at the last draw, in display order.
    pub entry_lines: Vec<usize>,
}

impl ViewState {
    /// Apply a navigation key. Without threads to select, the keys scroll the sections.
    pub fn apply(&mut self, snapshot: &Snapshot, key: Move) {
        self.selection.refresh(snapshot);
        let page = self.page.max(1);
        let max_offset = self.total.saturating_sub(self.page);
        let entries = snapshot.entries().len();
        match key {
            Move::Up if entries == 0 => self.offset = self.offset.saturating_sub(1),
            Move::Down if entries == 0 => self.offset = (self.offset + 1).min(max_offset),
            Move::Up => self.selection.up(snapshot),
            Move::Down => self.selection.down(snapshot),
            Move::PageUp | Move::PageDown => {
                self.offset = if key == Move::PageUp {
                    self.offset.saturating_sub(page)
                } else {
                    (self.offset + page).min(max_offset)
                };
                // The first entry that starts in the new page (else the nearest one above).
                let first = self
                    .entry_lines
                    .iter()
                    .position(|&l| l >= self.offset)
                    .or_else(|| self.entry_lines.len().checked_sub(1));
                if let Some(i) = first {
                    self.selection.select(snapshot, i);
                }
            }
            Move::Home => {
                self.offset = 0;
                self.selection.select(snapshot, 0);
            }
            Move::End => {
                self.offset = max_offset;
                self.selection.select(snapshot, usize::MAX);
            }
        }
    }

    /// After a draw laid out `total` lines in a `page`-line area with the entries at
    /// `entry_lines`: clamp the offset and bring the selected entry (its first `span` lines)
    /// into sight, moving as little as possible.
    pub fn follow(&mut self, page: usize, total: usize, entry_lines: Vec<usize>, span: usize) {
        self.page = page;
        self.total = total;
        if let Some(&line) = self.selection.position().and_then(|p| entry_lines.get(p)) {
            let span = span.clamp(1, page.max(1));
            if line < self.offset {
                self.offset = line;
            } else if line + span > self.offset + page {
                self.offset = (line + span).saturating_sub(page);
            }
        }
        self.offset = self.offset.min(total.saturating_sub(page));
        self.entry_lines = entry_lines;
    }
}

/// How a thread or section state is coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// `active…`: green.
    Active,
    /// `pending`, `waiting…`, `quiescing`, `attaching`, `starting`: yellow.
    Waiting,
    /// `completed`, `stopped`: dim.
    Done,
    /// `failed`, `refused`, `trapped`: red.
    Failed,
    Plain,
}

pub fn tone(state: &str) -> Tone {
    match state {
        s if s.starts_with("active") || s == "attached" => Tone::Active,
        s if s.starts_with("pending")
            || s.starts_with("waiting")
            || s == "quiescing"
            || s == "attaching"
            || s == "starting"
            || s == "compiling" =>
        {
            Tone::Waiting
        }
        "completed" | "stopped" => Tone::Done,
        "failed" | "refused" | "trapped" => Tone::Failed,
        _ => Tone::Plain,
    }
}

/// Whitespace collapsed to single spaces, cut to `max` characters with `…`; `—` when empty.
pub fn one_line(text: &str, max: usize) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.is_empty() {
        return "—".into();
    }
    cut(&collapsed, max)
}

/// `text` cut to `max` characters, the last one `…` when something was cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The leading `CODE` of a `CODE: message` detail, if it has one.
pub fn leading_code(detail: &str) -> Option<&str> {
    let (code, _) = detail.split_once(':')?;
    let is_code = !code.is_empty()
        && code
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && code.starts_with(|c: char| c.is_ascii_uppercase());
    is_code.then_some(code)
}

/// A section panel's title: `<job_type> · <name>`, plus ` · <state>[ (<code>)]` unless the
/// section is attached. Recomputed on every refresh.
pub fn section_title(section: &SectionStatus) -> String {
    let name = if section.name.is_empty() {
        format!("section {}", section.index)
    } else {
        section.name.clone()
    };
    let mut title = format!("{} · {name}", section.job_type);
    if section.state != "attached" && !section.state.is_empty() {
        title.push_str(&format!(" · {}", section.state));
        if let Some(code) = leading_code(&section.detail) {
            title.push_str(&format!(" ({code})"));
        }
    }
    title
}

/// `HH:MM:SS` of a `YYYY-MM-DDTHH:MM:SSZ` time (the whole text when it has another shape).
pub fn clock_time(at: &str) -> &str {
    at.get(11..19).unwrap_or(at)
}

/// Where an error happened, for the recent-errors panel: the section's name (its index when it
/// has none or is unknown) and the thread.
pub fn error_place(snapshot: &Snapshot, error: &ErrorRecord) -> String {
    let section = error.section.map(|i| {
        snapshot
            .sections
            .iter()
            .find(|s| s.index == i && !s.name.is_empty())
            .map_or_else(|| format!("section {i}"), |s| s.name.clone())
    });
    match (section, error.thread.as_deref()) {
        (Some(s), Some(t)) => format!("{s}/{t}"),
        (Some(s), None) => s,
        (None, Some(t)) => t.to_owned(),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::capabilities::status::ThreadStatus;

    fn snapshot(threads: &[(u32, &str)]) -> Snapshot {
        let mut snap = Snapshot::default();
        for &(index, alias) in threads {
            if !snap.sections.iter().any(|s| s.index == index) {
                snap.sections.push(SectionStatus {
                    index,
                    ..Default::default()
                });
            }
            let section = snap.sections.iter_mut().find(|s| s.index == index).unwrap();
            section.threads.insert(
                alias.into(),
                ThreadStatus {
                    thread: alias.into(),
                    ..Default::default()
                },
            );
        }
        snap
    }

    #[test]
    fn selection_moves_and_survives_refreshes() {
        let snap = snapshot(&[(0, "b"), (0, "a"), (1, "c")]);
        let mut sel = Selection::default();
        sel.refresh(&snap);
        assert!(sel.is_selected(0, "a"), "the first thread by alias");
        sel.down(&snap);
        sel.down(&snap);
        assert!(sel.is_selected(1, "c"));
        sel.down(&snap);
        assert!(sel.is_selected(1, "c"), "stays on the last entry");
        // A thread appears before it: the selection follows its thread, not its position.
        let grown = snapshot(&[(0, "a"), (0, "aa"), (0, "b"), (1, "c")]);
        sel.refresh(&grown);
        assert!(sel.is_selected(1, "c"));
        // Its thread disappears: the position is kept (clamped).
        let shrunk = snapshot(&[(0, "a"), (0, "b")]);
        sel.refresh(&shrunk);
        assert!(sel.is_selected(0, "b"));
        sel.up(&shrunk);
        sel.up(&shrunk);
        assert!(sel.is_selected(0, "a"));
    }

    #[test]
    fn one_line_collapses_and_cuts() {
        assert_eq!(one_line("  a\n\tb  c ", 60), "a b c");
        assert_eq!(one_line(" \n", 60), "—");
        assert_eq!(one_line("abcdef", 4), "abc…");
        assert_eq!(one_line("abcd", 4), "abcd");
    }

    #[test]
    fn titles_show_the_state_and_code_unless_attached() {
        let mut s = SectionStatus {
            index: 0,
            name: "backend".into(),
            job_type: "session_agent_harness".into(),
            state: "attached".into(),
            ..Default::default()
        };
        assert_eq!(section_title(&s), "session_agent_harness · backend");
        s.state = "refused".into();
        s.detail = "SESSION_OWNED_BY_DIFFERENT_USER: taken".into();
        assert_eq!(
            section_title(&s),
            "session_agent_harness · backend · refused (SESSION_OWNED_BY_DIFFERENT_USER)"
        );
        s.state = "waiting".into();
        s.detail = "the session: is busy".into();
        assert_eq!(
            section_title(&s),
            "session_agent_harness · backend · waiting"
        );
    }
}
