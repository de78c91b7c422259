//! Rendering a [`Snapshot`] into a frame. Pure: no terminal, no clock, no locks, so tests draw
//! into ratatui's `TestBackend` and read the buffer back (and `insta` keeps the frames).
//!
//! The sections are laid out on a virtual canvas as tall as all their panels, and the part the
//! [`ViewState`] scrolls to is copied into the frame: panels keep their borders and titles
//! however many sections and threads there are, and the selected thread stays in sight.

use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Paragraph, Widget};

use super::model::{
    Slots, Snapshot, Tone, ViewState, clock_time, cut, error_place, one_line, section_title, tone,
};
use crate::runtime::capabilities::status::{SectionStatus, ThreadStatus};

/// Separator of the header's fields (a narrower one when the header does not fit).
const SEP: &str = "  ·  ";
const SEP_NARROW: &str = " · ";
/// Last events are cut to this many characters.
pub const LAST_EVENT_MAX: usize = 60;
/// Rows of the recent-errors panel (fewer on a short terminal).
pub const ERROR_ROWS: usize = 5;
const ERROR_ROWS_SHORT: usize = 3;
/// Terminals shorter than this get [`ERROR_ROWS_SHORT`] error rows.
const SHORT: u16 = 30;
/// Narrower than this, session ids are cut to [`SESSION_NARROW`] characters.
const NARROW: u16 = 100;
const SESSION_NARROW: usize = 14;
/// Lines and characters of an open prompt.
const PROMPT_LINES: usize = 8;
const PROMPT_CHARS: usize = 500;
/// The canvas is a ratatui buffer: its height is a u16.
const MAX_CANVAS_LINES: usize = u16::MAX as usize;

/// The footer: the keys of this dashboard and, when something needs saying (a stop in
/// progress, a question, a lost connection), a notice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Footer {
    pub keys: String,
    pub notice: Option<(String, Tone)>,
}

/// The keys of `start --tui`.
pub const KEYS_IN_PROCESS: &str = "↑↓ select  PgUp/PgDn/Home/End  r refresh  q quit";

/// Draw the whole dashboard; `state` keeps the selection and scroll position.
pub fn draw(frame: &mut Frame, snapshot: &Snapshot, state: &mut ViewState, footer: &Footer) {
    let area = frame.area();
    let max_errors = if area.height < SHORT {
        ERROR_ROWS_SHORT
    } else {
        ERROR_ROWS
    };
    let errors = snapshot.errors.len().clamp(1, max_errors);
    let [header, body, recent, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(u16::try_from(errors + 2).unwrap_or(u16::MAX)),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(
        Paragraph::new(header_line(snapshot, usize::from(area.width))),
        header,
    );
    draw_sections(frame, body, snapshot, state);
    draw_errors(frame, recent, snapshot, max_errors);
    frame.render_widget(Paragraph::new(footer_line(footer, state)), foot);
}

fn footer_line(footer: &Footer, state: &ViewState) -> Line<'static> {
    let mut spans = vec![Span::styled(
        format!(" {}", footer.keys),
        Style::new().add_modifier(Modifier::DIM),
    )];
    if state.total > state.page {
        let last = (state.offset + state.page).min(state.total);
        spans.push(Span::styled(
            format!("  [{}-{last}/{}]", state.offset + 1, state.total),
            Style::new().add_modifier(Modifier::DIM),
        ));
    }
    if let Some((notice, t)) = &footer.notice {
        spans.push(Span::styled(format!("   {notice}"), tone_style(*t)));
    }
    Line::from(spans)
}

/// The header, as much of `BlobHub Worker v<version>  ·  <user> @ <instance>  ·  <clock>  ·
/// N sections  ·  a/b agents` as fits in `width` columns: separators narrow first, then the
/// instance id and the clock are abbreviated, then the section count, the user, the instance
/// and the clock are dropped in that order. The agent slots are never dropped.
pub fn header_line(snapshot: &Snapshot, width: usize) -> Line<'static> {
    let id = &snapshot.identity;
    let Slots {
        busy, total, held, ..
    } = snapshot.slots;
    // Agents waiting for a person hold no slot; shown only when there are any.
    let slots = match held {
        0 => format!("{busy}/{total} agents"),
        held => format!("{busy}/{total} agents +{held} waiting"),
    };
    let sections = match id.sections {
        1 => "1 section".to_owned(),
        n => format!("{n} sections"),
    };
    let short_instance = cut(&id.instance_id, 11);
    let short_clock = clock_time(&snapshot.clock).to_owned() + "Z";
    let full_title = format!("BlobHub Worker v{}", id.version);
    let short_title = format!("BlobHub v{}", id.version);
    // (separator, title, user, instance, clock, sections), fullest first.
    let candidates: [(&str, &str, bool, &str, &str, bool); 10] = [
        (
            SEP,
            &full_title,
            true,
            &id.instance_id,
            &snapshot.clock,
            true,
        ),
        (
            SEP_NARROW,
            &full_title,
            true,
            &id.instance_id,
            &snapshot.clock,
            true,
        ),
        (
            SEP_NARROW,
            &full_title,
            true,
            &short_instance,
            &snapshot.clock,
            true,
        ),
        (
            SEP_NARROW,
            &full_title,
            true,
            &short_instance,
            &short_clock,
            true,
        ),
        (
            SEP_NARROW,
            &short_title,
            true,
            &short_instance,
            &short_clock,
            true,
        ),
        (
            SEP_NARROW,
            &short_title,
            true,
            &short_instance,
            &short_clock,
            false,
        ),
        (
            SEP_NARROW,
            &short_title,
            false,
            &short_instance,
            &short_clock,
            false,
        ),
        (SEP_NARROW, &short_title, false, "", &short_clock, false),
        (SEP_NARROW, &short_title, false, "", "", false),
        (SEP_NARROW, "", false, "", "", false),
    ];
    let build = |(sep, title, user, instance, clock, with_sections): (
        &str,
        &str,
        bool,
        &str,
        &str,
        bool,
    )| {
        let who = match (user, instance.is_empty()) {
            (true, false) => format!("{} @ {instance}", id.user),
            (false, false) => instance.to_owned(),
            (true, true) => id.user.clone(),
            (false, true) => String::new(),
        };
        let rest: Vec<&str> = [
            who.as_str(),
            clock,
            if with_sections { sections.as_str() } else { "" },
            slots.as_str(),
        ]
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect();
        let rest = rest.join(sep);
        if title.is_empty() {
            (String::new(), rest)
        } else {
            (title.to_owned(), format!("{sep}{rest}"))
        }
    };
    let last = build(candidates[candidates.len() - 1]);
    let (title, rest) = candidates
        .into_iter()
        .map(build)
        .find(|(t, r)| t.chars().count() + r.chars().count() <= width)
        .unwrap_or(last);
    Line::from(vec![
        Span::styled(title, Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(rest),
    ])
}

/// A laid-out panel: its title, its lines, and the line of each of its threads' main rows.
struct Panel {
    title: String,
    lines: Vec<Line<'static>>,
    entries: Vec<usize>,
}

fn draw_sections(frame: &mut Frame, area: Rect, snapshot: &Snapshot, state: &mut ViewState) {
    state.selection.refresh(snapshot);
    if snapshot.sections.is_empty() {
        state.follow(usize::from(area.height), 0, Vec::new(), 1);
        frame.render_widget(
            Paragraph::new(Line::styled(
                "  (no sections: the worker has nothing to run; see config.yaml)",
                Style::new().add_modifier(Modifier::DIM),
            )),
            area,
        );
        return;
    }
    let narrow = area.width < NARROW;
    let panels: Vec<Panel> = snapshot
        .sections
        .iter()
        .map(|s| {
            let (lines, entries) = section_lines(s, state, narrow);
            Panel {
                title: section_title(s),
                lines,
                entries,
            }
        })
        .collect();
    let total: usize = panels
        .iter()
        .map(|p| p.lines.len() + 2)
        .sum::<usize>()
        .min(MAX_CANVAS_LINES);
    let mut canvas = Buffer::empty(Rect::new(
        0,
        0,
        area.width,
        u16::try_from(total).unwrap_or(u16::MAX),
    ));
    let mut entry_lines = Vec::new();
    // (first line, height) of every panel on the canvas.
    let mut spans = Vec::new();
    let mut y = 0usize;
    for panel in panels {
        let height = panel.lines.len() + 2;
        if y + height > total {
            break;
        }
        spans.push((y, height));
        entry_lines.extend(panel.entries.iter().map(|l| y + 1 + l));
        let block = Block::bordered()
            .border_type(BorderType::Rounded)
            .border_style(Style::new().fg(Color::Blue))
            .title(Span::styled(
                format!(" {} ", panel.title),
                Style::new().add_modifier(Modifier::BOLD),
            ));
        let rect = Rect::new(
            0,
            u16::try_from(y).unwrap_or(u16::MAX),
            area.width,
            u16::try_from(height).unwrap_or(u16::MAX),
        );
        Paragraph::new(panel.lines)
            .block(block)
            .render(rect, &mut canvas);
        y += height;
    }
    // The selected thread's main row and detail line stay in sight together.
    state.follow(usize::from(area.height), total, entry_lines, 2);
    // A panel scrolled past its title keeps it on the first row (sticky), so every visible
    // thread says which section it belongs to; the selection is never under it.
    let panel_at = |line: usize| {
        spans
            .iter()
            .copied()
            .find(|&(start, height)| line > start && line + 1 < start + height)
    };
    let selected = state
        .selection
        .position()
        .and_then(|p| state.entry_lines.get(p).copied());
    if state.offset > 0 && panel_at(state.offset).is_some() && selected == Some(state.offset) {
        state.offset -= 1;
    }
    let sticky = panel_at(state.offset).map(|(start, _)| start);
    let buffer = frame.buffer_mut();
    for row in 0..area.height {
        let line = match sticky {
            Some(title) if row == 0 => title,
            _ => state.offset + usize::from(row),
        };
        let Ok(line) = u16::try_from(line) else { break };
        if usize::from(line) >= total {
            break;
        }
        for x in 0..area.width {
            buffer[(area.x + x, area.y + row)] = canvas[(x, line)].clone();
        }
    }
}

fn tone_style(tone: Tone) -> Style {
    match tone {
        Tone::Active => Style::new().fg(Color::Green),
        Tone::Waiting => Style::new().fg(Color::Yellow),
        Tone::Done => Style::new().add_modifier(Modifier::DIM),
        Tone::Failed => Style::new().fg(Color::Red),
        Tone::Plain => Style::new(),
    }
}

/// A section's lines: the column header and every thread's entry, or one row with the
/// section's own state when it has no threads; with the line of each thread's main row.
/// `narrow`: session ids are cut so that the last event keeps some room.
fn section_lines(
    section: &SectionStatus,
    state: &ViewState,
    narrow: bool,
) -> (Vec<Line<'static>>, Vec<usize>) {
    if section.threads.is_empty() {
        let text = if section.detail.is_empty() {
            format!("({})", section.state)
        } else {
            format!("({}: {})", section.state, one_line(&section.detail, 200))
        };
        let style = match tone(&section.state) {
            Tone::Active | Tone::Plain => Style::new().add_modifier(Modifier::DIM),
            other => tone_style(other),
        };
        return (vec![Line::styled(format!("  {text}"), style)], Vec::new());
    }
    let threads: Vec<&ThreadStatus> = section.threads.values().collect();
    let session = |t: &ThreadStatus| {
        if t.session_id.is_empty() {
            "—".to_owned()
        } else if narrow {
            cut(&t.session_id, SESSION_NARROW)
        } else {
            t.session_id.clone()
        }
    };
    let width = |header: &str, cell: &dyn Fn(&ThreadStatus) -> String| {
        threads
            .iter()
            .map(|t| cell(t).chars().count())
            .chain([header.chars().count()])
            .max()
            .unwrap_or(0)
    };
    let widths = [
        width("Thread", &|t| t.thread.clone()),
        width("State", &|t| t.state.clone()),
        width("Agent", &|t| t.agent.clone()),
        width("Session", &session),
    ];
    let pad = |text: &str, w: usize| format!("{text:<w$}  ");
    let mut lines = vec![Line::styled(
        format!(
            "  {}{}{}{}Last Event",
            pad("Thread", widths[0]),
            pad("State", widths[1]),
            pad("Agent", widths[2]),
            pad("Session", widths[3]),
        ),
        Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
    )];
    let mut entries = Vec::new();
    for t in threads {
        let selected = state.selection.is_selected(section.index, &t.thread);
        let mut main = Line::from(vec![
            Span::raw(if selected { "▸ " } else { "  " }),
            Span::raw(pad(&t.thread, widths[0])),
            Span::styled(pad(&t.state, widths[1]), tone_style(tone(&t.state))),
            Span::raw(pad(&t.agent, widths[2])),
            Span::raw(pad(&session(t), widths[3])),
            Span::raw(one_line(&t.last_event, LAST_EVENT_MAX)),
        ]);
        if selected {
            main = main.patch_style(Style::new().add_modifier(Modifier::REVERSED));
        }
        entries.push(lines.len());
        lines.push(main);
        lines.push(if t.detail.is_empty() {
            Line::styled("  └ —", Style::new().add_modifier(Modifier::DIM))
        } else {
            Line::from(vec![
                Span::styled("  └ ", Style::new().add_modifier(Modifier::DIM)),
                Span::raw(one_line(&t.detail, 200)),
            ])
        });
        if let Some(error) = t.error.as_deref().filter(|e| !e.is_empty()) {
            lines.push(Line::styled(
                format!("  ✗ {}", one_line(error, 200)),
                Style::new().fg(Color::Red),
            ));
        }
        if let Some(prompt) = t.prompt.as_deref() {
            lines.extend(prompt_lines(prompt));
        }
    }
    (lines, entries)
}

/// An open prompt: each question line prefixed `? `, at most 8 lines and 500 characters.
fn prompt_lines(prompt: &str) -> Vec<Line<'static>> {
    let text = cut(prompt.trim(), PROMPT_CHARS);
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut lines: Vec<String> = all
        .iter()
        .take(PROMPT_LINES)
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    if all.len() > PROMPT_LINES
        && let Some(last) = lines.last_mut()
    {
        last.push_str(" …");
    }
    lines
        .into_iter()
        .map(|l| {
            Line::from(vec![
                Span::styled(
                    "  ? ",
                    Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
                ),
                Span::raw(l),
            ])
        })
        .collect()
}

/// The recent-errors panel: Time, Error (the code, or the event), Details (where, and the
/// rest), newest first.
fn draw_errors(frame: &mut Frame, area: Rect, snapshot: &Snapshot, max: usize) {
    let rows: Vec<_> = snapshot.errors.iter().rev().take(max).collect();
    let lines: Vec<Line> = if rows.is_empty() {
        vec![Line::styled(
            " (none)",
            Style::new().add_modifier(Modifier::DIM),
        )]
    } else {
        let what = rows
            .iter()
            .map(|r| r.code.chars().count())
            .max()
            .unwrap_or(0);
        rows.into_iter()
            .map(|r| {
                let place = error_place(snapshot, r);
                let details = match (place.is_empty(), r.details.is_empty()) {
                    (false, false) => format!("{place} · {}", one_line(&r.details, 200)),
                    (false, true) => place,
                    _ => one_line(&r.details, 200),
                };
                Line::from(vec![
                    Span::styled(
                        format!(" {:<8}  ", clock_time(&r.at)),
                        Style::new().add_modifier(Modifier::DIM),
                    ),
                    Span::styled(format!("{:<what$}  ", r.code), Style::new().fg(Color::Red)),
                    Span::raw(details),
                ])
            })
            .collect()
    };
    let block = Block::bordered()
        .border_type(BorderType::Rounded)
        .title(" recent errors ");
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

#[cfg(test)]
mod tests {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use ratatui::buffer::Buffer;

    use super::*;
    use crate::dashboard::model::{Identity, Move};
    use crate::runtime::capabilities::status::ErrorRecord;

    fn thread(alias: &str, state: &str) -> ThreadStatus {
        ThreadStatus {
            thread: alias.into(),
            state: state.into(),
            agent: "test_double".into(),
            session_id: format!("sess-{alias}"),
            detail: "model: default · effort: high · perm: approval".into(),
            last_event: "turn started".into(),
            prompt: None,
            error: None,
        }
    }

    fn identity(sections: usize) -> Identity {
        Identity {
            version: "0.3.0".into(),
            user: "Ada".into(),
            instance_id: "ins_01KC5V7Q8M2N4P6R8T0V2X4Z6B".into(),
            sections,
            pid: 4242,
            started_at: "2026-05-01T09:00:00Z".into(),
        }
    }

    fn error(
        at: &str,
        section: u32,
        thread: Option<&str>,
        code: &str,
        details: &str,
    ) -> ErrorRecord {
        ErrorRecord {
            at: at.into(),
            section: Some(section),
            thread: thread.map(Into::into),
            code: code.into(),
            details: details.into(),
        }
    }

    fn snapshot() -> Snapshot {
        let mut attached = SectionStatus {
            index: 0,
            name: "backend".into(),
            job_type: "session_agent_harness".into(),
            state: "attached".into(),
            ..Default::default()
        };
        let mut t2 = thread("t2", "pending");
        t2.session_id.clear();
        t2.last_event = format!("line one\n\n  line   two {}", "x".repeat(100));
        t2.prompt = Some("Allow `rm -rf build`?".into());
        for t in [thread("t1", "active (turn)"), t2] {
            attached.threads.insert(t.thread.clone(), t);
        }
        let refused = SectionStatus {
            index: 1,
            name: "docs".into(),
            job_type: "session_agent_harness".into(),
            state: "refused".into(),
            detail: "SESSION_OWNED_BY_DIFFERENT_USER: another user's worker holds it".into(),
            ..Default::default()
        };
        Snapshot {
            identity: identity(2),
            clock: "2026-05-01T10:11:12Z".into(),
            slots: (3, 10).into(),
            sections: vec![attached, refused],
            errors: vec![
                error(
                    "2026-05-01T10:00:00Z",
                    0,
                    Some("t1"),
                    "API_TRANSIENT_ERROR",
                    "event=post_failed · attempts=5",
                ),
                error(
                    "2026-05-01T10:00:05Z",
                    1,
                    None,
                    "SESSION_OWNED_BY_DIFFERENT_USER",
                    "taken",
                ),
            ],
            stopping: false,
        }
    }

    /// 20 sections of 10 threads each, in every state.
    fn crowded() -> Snapshot {
        let states = [
            "active (turn)",
            "active (idle)",
            "pending",
            "completed",
            "failed",
        ];
        let sections = (0..20u32)
            .map(|i| {
                let mut s = SectionStatus {
                    index: i,
                    name: format!("repo-{i:02}"),
                    job_type: "session_agent_harness".into(),
                    state: "attached".into(),
                    ..Default::default()
                };
                for j in 0..10usize {
                    let mut t = thread(&format!("task-{j}"), states[j % states.len()]);
                    t.session_id = format!("td_{i:02}{j:02}ea967fcef35eb204323");
                    t.last_event = format!("turn {j} ended: edited src/lib.rs and ran the tests");
                    s.threads.insert(t.thread.clone(), t);
                }
                s
            })
            .collect();
        Snapshot {
            identity: identity(20),
            clock: "2026-05-01T10:11:12Z".into(),
            slots: (10, 10).into(),
            sections,
            ..Default::default()
        }
    }

    fn footer() -> Footer {
        Footer {
            keys: KEYS_IN_PROCESS.into(),
            notice: None,
        }
    }

    fn render_at(
        snapshot: &Snapshot,
        state: &mut ViewState,
        width: u16,
        height: u16,
    ) -> Terminal<TestBackend> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal
            .draw(|f| draw(f, snapshot, state, &footer()))
            .unwrap();
        terminal
    }

    fn render(snapshot: &Snapshot, state: &mut ViewState) -> Buffer {
        render_at(snapshot, state, 110, 30)
            .backend()
            .buffer()
            .clone()
    }

    fn rows(buffer: &Buffer) -> Vec<String> {
        (0..buffer.area.height)
            .map(|y| {
                (0..buffer.area.width)
                    .map(|x| buffer[(x, y)].symbol())
                    .collect::<String>()
            })
            .collect()
    }

    fn row_of<'a>(rows: &'a [String], needle: &str) -> (usize, &'a String) {
        rows.iter()
            .enumerate()
            .find(|(_, r)| r.contains(needle))
            .unwrap_or_else(|| panic!("no row contains {needle:?}:\n{}", rows.join("\n")))
    }

    #[test]
    fn header_has_version_user_instance_clock_sections_and_slots() {
        let rows = rows(
            &render_at(&snapshot(), &mut ViewState::default(), 140, 30)
                .backend()
                .buffer()
                .clone(),
        );
        assert_eq!(
            rows[0].trim_end(),
            "BlobHub Worker v0.3.0  ·  Ada @ ins_01KC5V7Q8M2N4P6R8T0V2X4Z6B  ·  2026-05-01T10:11:12Z  ·  2 sections  ·  3/10 agents"
        );
    }

    #[test]
    fn agents_waiting_for_a_person_follow_the_slots_in_the_header() {
        let mut snap = snapshot();
        snap.slots.held = 2;
        snap.slots.held_max = 8;
        let text: String = header_line(&snap, 140)
            .spans
            .iter()
            .map(|s| s.content.as_ref())
            .collect();
        assert!(text.ends_with("3/10 agents +2 waiting"), "{text}");
    }

    #[test]
    fn the_header_fits_any_width_and_keeps_the_slots() {
        let snap = crowded();
        let mut previous = usize::MAX;
        for width in [200, 120, 100, 80, 60, 40, 24, 12] {
            let line = header_line(&snap, width);
            let text: String = line.spans.iter().map(|s| s.content.as_ref()).collect();
            let len = text.chars().count();
            assert!(len <= width || width < 12, "{width}: {text}");
            assert!(text.contains("10/10 agents"), "{width}: {text}");
            assert!(len <= previous, "narrower never longer: {text}");
            previous = len;
        }
        let at80: String = header_line(&snap, 80)
            .spans
            .iter()
            .map(|s| s.content.as_ref())
            .collect();
        assert!(
            at80.contains("ins_01KC5V…") && at80.contains("10:11:12Z"),
            "{at80}"
        );
    }

    #[test]
    fn panels_are_titled_with_job_type_name_and_status_code() {
        let rows = rows(&render(&snapshot(), &mut ViewState::default()));
        row_of(&rows, "╭ session_agent_harness · backend ─");
        row_of(
            &rows,
            " session_agent_harness · docs · refused (SESSION_OWNED_BY_DIFFERENT_USER) ",
        );
        // The section without threads shows its state as its one row.
        row_of(
            &rows,
            "(refused: SESSION_OWNED_BY_DIFFERENT_USER: another user's worker holds it)",
        );
    }

    #[test]
    fn thread_rows_have_columns_detail_and_prompt() {
        let rows = rows(&render(&snapshot(), &mut ViewState::default()));
        let (h, header) = row_of(&rows, "Thread");
        assert!(
            header.contains("Thread  State          Agent        Session  Last Event"),
            "{header}"
        );
        let (t1, main) = row_of(&rows, "t1  ");
        assert!(t1 > h);
        assert!(
            main.contains("t1      active (turn)  test_double  sess-t1  turn started"),
            "{main}"
        );
        assert!(rows[t1 + 1].contains("  └ model: default · effort: high · perm: approval"));
        let (t2, _) = row_of(&rows, "t2  ");
        assert!(
            rows[t2].contains("pending        test_double  —"),
            "{}",
            rows[t2]
        );
        assert!(
            rows[t2 + 2].contains("  ? Allow `rm -rf build`?"),
            "{}",
            rows[t2 + 2]
        );
    }

    #[test]
    fn long_events_are_collapsed_and_cut() {
        let rows = rows(&render(&snapshot(), &mut ViewState::default()));
        let (_, main) = row_of(&rows, "t2  ");
        let event = format!("line one line two {}", "x".repeat(41));
        assert_eq!(event.chars().count(), LAST_EVENT_MAX - 1);
        assert!(main.contains(&format!("{event}…")), "{main}");
        assert!(!main.contains(&format!("{event}x")), "{main}");
    }

    #[test]
    fn the_selected_thread_is_highlighted() {
        let snap = snapshot();
        let mut state = ViewState::default();
        state.apply(&snap, Move::Down);
        let buffer = render(&snap, &mut state);
        let rows = rows(&buffer);
        let (t2, main) = row_of(&rows, "t2  ");
        assert!(main.contains("▸ t2"), "{main}");
        let (t1, other) = row_of(&rows, "t1  ");
        assert!(!other.contains('▸'));
        let x = u16::try_from(main.chars().position(|c| c == 't').unwrap()).unwrap();
        let reversed = |y: usize| {
            buffer[(x, u16::try_from(y).unwrap())]
                .modifier
                .contains(Modifier::REVERSED)
        };
        assert!(reversed(t2) && !reversed(t1));
    }

    #[test]
    fn states_are_coloured() {
        let buffer = render(&snapshot(), &mut ViewState::default());
        let rows = rows(&buffer);
        let colour_of = |needle: &str| {
            let (y, row) = row_of(&rows, needle);
            let x = row.find(needle).map(|b| row[..b].chars().count()).unwrap();
            buffer[(u16::try_from(x).unwrap(), u16::try_from(y).unwrap())].fg
        };
        assert_eq!(colour_of("active (turn)"), Color::Green);
        assert_eq!(colour_of("pending "), Color::Yellow);
        assert_eq!(colour_of("(refused:"), Color::Red);
    }

    #[test]
    fn recent_errors_are_newest_first_with_time_code_and_place() {
        let rows = rows(&render(&snapshot(), &mut ViewState::default()));
        let (title, _) = row_of(&rows, " recent errors ");
        assert!(
            rows[title + 1].contains(" 10:00:05  SESSION_OWNED_BY_DIFFERENT_USER  docs · taken"),
            "{}",
            rows[title + 1]
        );
        assert!(
            rows[title + 2].contains(
                " 10:00:00  API_TRANSIENT_ERROR              backend/t1 · event=post_failed · attempts=5"
            ),
            "{}",
            rows[title + 2]
        );
        assert!(rows[29].contains("↑↓ select"));
    }

    #[test]
    fn a_notice_shows_in_the_footer() {
        let mut terminal = Terminal::new(TestBackend::new(110, 30)).unwrap();
        let notice = Footer {
            keys: KEYS_IN_PROCESS.into(),
            notice: Some(("stopping: the sections drain…".into(), Tone::Waiting)),
        };
        terminal
            .draw(|f| draw(f, &snapshot(), &mut ViewState::default(), &notice))
            .unwrap();
        let rows = rows(terminal.backend().buffer());
        assert!(rows[29].contains("stopping"), "{}", rows[29]);
    }

    #[test]
    fn scrolling_keeps_the_selection_in_sight_and_reaches_the_end() {
        let snap = crowded();
        let mut state = ViewState::default();
        let first = rows(render_at(&snap, &mut state, 80, 24).backend().buffer());
        assert!(first[1].contains("repo-00"), "{}", first[1]);
        assert!(first[23].contains("[1-19/460]"), "{}", first[23]);
        // Down through the first section's ten threads: the view follows the selection.
        for _ in 0..12 {
            state.apply(&snap, Move::Down);
        }
        let moved = rows(render_at(&snap, &mut state, 80, 24).backend().buffer());
        row_of(&moved, "▸ task-2 ");
        assert!(state.offset > 0);
        // The panel scrolled past its title keeps it on the first row.
        assert!(
            moved[1].starts_with("╭ session_agent_harness · repo-00 "),
            "{}",
            moved[1]
        );
        state.apply(&snap, Move::End);
        let end = rows(render_at(&snap, &mut state, 80, 24).backend().buffer());
        row_of(&end, "▸ task-9 ");
        assert!(
            end[19].starts_with("╰"),
            "the last panel's bottom border: {}",
            end[19]
        );
        assert!(
            end.iter().any(|r| r.contains("repo-19")) || end.iter().any(|r| r.contains("td_19"))
        );
        state.apply(&snap, Move::Home);
        let home = rows(render_at(&snap, &mut state, 80, 24).backend().buffer());
        assert_eq!(home, {
            let mut fresh = ViewState::default();
            fresh.apply(&snap, Move::Home);
            rows(render_at(&snap, &mut fresh, 80, 24).backend().buffer())
        });
        row_of(&home, "▸ task-0 ");
        state.apply(&snap, Move::PageDown);
        let page = rows(render_at(&snap, &mut state, 80, 24).backend().buffer());
        assert_eq!(state.offset, 19);
        row_of(&page, "▸ ");
        state.apply(&snap, Move::PageUp);
        render_at(&snap, &mut state, 80, 24);
        assert_eq!(state.offset, 0);
    }

    fn frame(snapshot: &Snapshot, state: &mut ViewState, width: u16, height: u16) -> String {
        render_at(snapshot, state, width, height)
            .backend()
            .to_string()
    }

    #[test]
    fn frames_of_an_empty_worker() {
        let snap = Snapshot {
            identity: identity(0),
            clock: "2026-05-01T10:11:12Z".into(),
            slots: (0, 4).into(),
            ..Default::default()
        };
        insta::assert_snapshot!(
            "empty_80x24",
            frame(&snap, &mut ViewState::default(), 80, 24)
        );
        insta::assert_snapshot!(
            "empty_120x40",
            frame(&snap, &mut ViewState::default(), 120, 40)
        );
    }

    #[test]
    fn frames_of_a_refused_section_an_open_question_and_errors() {
        let snap = snapshot();
        insta::assert_snapshot!(
            "mixed_80x24",
            frame(&snap, &mut ViewState::default(), 80, 24)
        );
        insta::assert_snapshot!(
            "mixed_120x40",
            frame(&snap, &mut ViewState::default(), 120, 40)
        );
    }

    #[test]
    fn frames_of_twenty_sections_scrolled() {
        let snap = crowded();
        for (width, height) in [(80u16, 24u16), (120, 40)] {
            let mut state = ViewState::default();
            render_at(&snap, &mut state, width, height);
            for _ in 0..25 {
                state.apply(&snap, Move::Down);
            }
            insta::assert_snapshot!(
                format!("crowded_scrolled_{width}x{height}"),
                frame(&snap, &mut state, width, height)
            );
        }
    }
}
