//! Rendering a [`Snapshot`] into a frame. Pure: no terminal, no clock, no locks, so tests draw
//! into ratatui's `TestBackend` and read the buffer back.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Paragraph};

use super::model::{Selection, Snapshot, Tone, cut, error_row, one_line, section_title, tone};
use crate::runtime::capabilities::status::{SectionStatus, ThreadStatus};

/// Separator of the header's fields.
const SEP: &str = "  ·  ";
/// Last events are cut to this many characters.
pub const LAST_EVENT_MAX: usize = 60;
/// Rows of the recent-errors panel.
pub const ERROR_ROWS: usize = 5;
/// Lines and characters of an open prompt.
const PROMPT_LINES: usize = 8;
const PROMPT_CHARS: usize = 500;
const FOOTER: &str = " ↑↓ select   q quit";

/// Draw the whole dashboard.
pub fn draw(frame: &mut Frame, snapshot: &Snapshot, selection: &Selection) {
    let errors = snapshot.errors.len().clamp(1, ERROR_ROWS);
    let [header, body, recent, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(u16::try_from(errors + 2).unwrap_or(u16::MAX)),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(Paragraph::new(header_line(snapshot)), header);
    draw_sections(frame, body, snapshot, selection);
    draw_errors(frame, recent, snapshot);
    let footer_line = if snapshot.stopping {
        Line::from(vec![
            Span::styled(FOOTER, Style::new().add_modifier(Modifier::DIM)),
            Span::styled(
                "   stopping: waiting for the sections to drain…",
                Style::new().fg(Color::Yellow),
            ),
        ])
    } else {
        Line::styled(FOOTER, Style::new().add_modifier(Modifier::DIM))
    };
    frame.render_widget(Paragraph::new(footer_line), footer);
}

/// `BlobHub Worker v<version>  ·  <user> @ <instance>  ·  <clock>  ·  N sections  ·  a/b agents`.
pub fn header_line(snapshot: &Snapshot) -> Line<'static> {
    let id = &snapshot.identity;
    let (busy, total) = snapshot.slots;
    let sections = match id.sections {
        1 => "1 section".to_owned(),
        n => format!("{n} sections"),
    };
    Line::from(vec![
        Span::styled(
            format!("BlobHub Worker v{}", id.version),
            Style::new().add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!(
            "{SEP}{} @ {}{SEP}{}{SEP}{sections}{SEP}{busy}/{total} agents",
            id.user, id.instance_id, snapshot.clock
        )),
    ])
}

fn draw_sections(frame: &mut Frame, area: Rect, snapshot: &Snapshot, selection: &Selection) {
    let panels: Vec<(String, Vec<Line<'static>>)> = snapshot
        .sections
        .iter()
        .map(|s| (section_title(s), section_lines(s, selection)))
        .collect();
    let mut constraints: Vec<Constraint> = panels
        .iter()
        .map(|(_, lines)| Constraint::Length(u16::try_from(lines.len() + 2).unwrap_or(u16::MAX)))
        .collect();
    constraints.push(Constraint::Min(0));
    let areas = Layout::vertical(constraints).split(area);
    for ((title, lines), area) in panels.into_iter().zip(areas.iter()) {
        let block = Block::bordered()
            .border_type(BorderType::Rounded)
            .border_style(Style::new().fg(Color::Blue))
            .title(Span::styled(
                format!(" {title} "),
                Style::new().add_modifier(Modifier::BOLD),
            ));
        frame.render_widget(Paragraph::new(lines).block(block), *area);
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
/// section's own state when it has no threads.
pub fn section_lines(section: &SectionStatus, selection: &Selection) -> Vec<Line<'static>> {
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
        return vec![Line::styled(format!("  {text}"), style)];
    }
    let threads: Vec<&ThreadStatus> = section.threads.values().collect();
    let session = |t: &ThreadStatus| {
        if t.session_id.is_empty() {
            "—".to_owned()
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
    for t in threads {
        let selected = selection.is_selected(section.index, &t.thread);
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
    lines
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

fn draw_errors(frame: &mut Frame, area: Rect, snapshot: &Snapshot) {
    let rows: Vec<_> = snapshot
        .errors
        .iter()
        .rev()
        .take(ERROR_ROWS)
        .map(|l| error_row(l))
        .collect();
    let lines: Vec<Line> = if rows.is_empty() {
        vec![Line::styled(
            " (none)",
            Style::new().add_modifier(Modifier::DIM),
        )]
    } else {
        let what = rows
            .iter()
            .map(|r| r.what.chars().count())
            .max()
            .unwrap_or(0);
        rows.into_iter()
            .map(|r| {
                Line::from(vec![
                    Span::styled(
                        format!(" {:<8}  ", r.time),
                        Style::new().add_modifier(Modifier::DIM),
                    ),
                    Span::styled(format!("{:<what$}  ", r.what), Style::new().fg(Color::Red)),
                    Span::raw(r.details),
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
    use crate::dashboard::model::Identity;

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
            identity: Identity {
                version: "0.3.0".into(),
                user: "Ada".into(),
                instance_id: "ins_01TEST".into(),
                sections: 2,
            },
            clock: "2026-05-01T10:11:12Z".into(),
            slots: (3, 10),
            sections: vec![attached, refused],
            errors: vec![
                "2026-05-01T10:00:00Z section 0 thread t1: post_failed {\"attempts\":5}".into(),
                "2026-05-01T10:00:05Z section 1: SESSION_OWNED_BY_DIFFERENT_USER: taken".into(),
            ],
            stopping: false,
        }
    }

    fn render(snapshot: &Snapshot, selection: &Selection) -> Buffer {
        let mut terminal = Terminal::new(TestBackend::new(110, 30)).unwrap();
        terminal.draw(|f| draw(f, snapshot, selection)).unwrap();
        terminal.backend().buffer().clone()
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
        let rows = rows(&render(&snapshot(), &Selection::default()));
        assert_eq!(
            rows[0].trim_end(),
            "BlobHub Worker v0.3.0  ·  Ada @ ins_01TEST  ·  2026-05-01T10:11:12Z  ·  2 sections  ·  3/10 agents"
        );
    }

    #[test]
    fn panels_are_titled_with_job_type_name_and_status_code() {
        let rows = rows(&render(&snapshot(), &Selection::default()));
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
        let rows = rows(&render(&snapshot(), &Selection::default()));
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
        let rows = rows(&render(&snapshot(), &Selection::default()));
        let (_, main) = row_of(&rows, "t2  ");
        let event = format!("line one line two {}", "x".repeat(41));
        assert_eq!(event.chars().count(), LAST_EVENT_MAX - 1);
        assert!(main.contains(&format!("{event}…")), "{main}");
        assert!(!main.contains(&format!("{event}x")), "{main}");
    }

    #[test]
    fn the_selected_thread_is_highlighted() {
        let snap = snapshot();
        let mut selection = Selection::default();
        selection.refresh(&snap);
        selection.down(&snap);
        let buffer = render(&snap, &selection);
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
    fn recent_errors_are_newest_first_with_time_and_code() {
        let rows = rows(&render(&snapshot(), &Selection::default()));
        let (title, _) = row_of(&rows, " recent errors ");
        assert!(
            rows[title + 1]
                .contains(" 10:00:05  SESSION_OWNED_BY_DIFFERENT_USER  section 1 · taken"),
            "{}",
            rows[title + 1]
        );
        assert!(
            rows[title + 2].contains(
                " 10:00:00  post_failed                      section 0 thread t1 · attempts=5"
            ),
            "{}",
            rows[title + 2]
        );
        assert!(rows[29].contains("↑↓ select   q quit"));
    }

    #[test]
    fn a_requested_stop_shows_in_the_footer() {
        let mut snap = snapshot();
        snap.stopping = true;
        let rows = rows(&render(&snap, &Selection::default()));
        assert!(rows[29].contains("stopping"), "{}", rows[29]);
    }
}
