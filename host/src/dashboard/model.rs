//! What the dashboard draws: a [`Snapshot`] of the running worker, the [`Selection`] kept
//! across refreshes, and the text helpers the view uses (pure functions, no terminal).

use crate::runtime::capabilities::status::SectionStatus;

/// The fixed part of the header, known once preflight has passed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub version: String,
    /// The user the worker acts as.
    pub user: String,
    pub instance_id: String,
    /// Sections in config.yaml.
    pub sections: usize,
}

/// One refresh's worth of state: a plain copy, drawn without holding any lock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub identity: Identity,
    /// UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub clock: String,
    /// Agent slots (in use, capacity) of the worker-wide pool.
    pub slots: (u32, u32),
    /// Every section's status, in config order.
    pub sections: Vec<SectionStatus>,
    /// The board's recent warnings and errors, oldest first (as the board keeps them).
    pub errors: Vec<String>,
    /// A graceful stop has been asked for (by `q`, Ctrl-C or a signal).
    pub stopping: bool,
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

    fn select(&mut self, snapshot: &Snapshot, position: usize) {
        let entries = snapshot.entries();
        if let Some(last) = entries.len().checked_sub(1) {
            self.position = position.min(last);
            self.key = Some(entries[self.position].clone());
        }
    }

    pub fn is_selected(&self, section: u32, thread: &str) -> bool {
        self.key
            .as_ref()
            .is_some_and(|(s, t)| *s == section && t == thread)
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
            || s == "starting" =>
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

/// One row of the recent-errors panel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorRow {
    /// `HH:MM:SS` (UTC).
    pub time: String,
    /// The code or event.
    pub what: String,
    /// Where (section, thread) and the remaining fields as `k=v`, joined by ` · `.
    pub details: String,
}

/// Parse a board line: `<rfc3339> section N[ thread T]: <event or CODE:> <fields or message>`.
/// Lines of another shape are shown whole as details.
pub fn error_row(line: &str) -> ErrorRow {
    let parsed = line.split_once(' ').and_then(|(at, rest)| {
        let (who, body) = rest.split_once(": ")?;
        let time = at.get(11..19).filter(|_| at.len() >= 19)?.to_owned();
        let (what, tail) = body.split_once(' ').unwrap_or((body, ""));
        let mut parts = vec![who.to_owned()];
        let tail = tail.trim();
        match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(tail) {
            Ok(fields) => parts.extend(fields.iter().map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })),
            Err(_) if !tail.is_empty() => parts.push(tail.to_owned()),
            Err(_) => {}
        }
        Some(ErrorRow {
            time,
            what: what.trim_end_matches(':').to_owned(),
            details: parts.join(" · "),
        })
    });
    parsed.unwrap_or_else(|| ErrorRow {
        time: String::new(),
        what: String::new(),
        details: line.to_owned(),
    })
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

    #[test]
    fn error_rows_parse_both_board_shapes() {
        let log = error_row(
            r#"2026-05-01T10:11:12Z section 0 thread t1: post_failed {"code":"API_TRANSIENT_ERROR","attempts":5}"#,
        );
        assert_eq!(log.time, "10:11:12");
        assert_eq!(log.what, "post_failed");
        assert_eq!(
            log.details,
            "section 0 thread t1 · attempts=5 · code=API_TRANSIENT_ERROR"
        );
        let end = error_row("2026-05-01T10:11:13Z section 1: JOB_TYPE_TRAPPED: the guest trapped");
        assert_eq!(end.what, "JOB_TYPE_TRAPPED");
        assert_eq!(end.details, "section 1 · the guest trapped");
        assert_eq!(error_row("odd").details, "odd");
    }
}
