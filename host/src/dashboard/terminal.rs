//! The terminal side of the dashboard: raw mode and the alternate screen, the loop that redraws
//! once a second and on every key, and the restore of the terminal on every exit path (a normal
//! close, an error, a panic on any thread).
//!
//! The dashboard runs on its own OS thread (crossterm's event polling blocks) and only reads:
//! every refresh calls the snapshot function it was given. `q` and Ctrl-C ask for a stop through
//! the [`Stopper`], exactly as SIGTERM and SIGINT do; the worker then drains while the dashboard
//! keeps showing it, until [`Dashboard::close`].

use std::io::{self, Stdout};
use std::panic::PanicHookInfo;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};

use super::model::{Selection, Snapshot};
use super::view;
use crate::signals::Stopper;

/// How often the dashboard redraws without a key press.
pub const REFRESH: Duration = Duration::from_secs(1);
/// How often the loop looks at the close flag while it waits for keys.
const TICK: Duration = Duration::from_millis(100);

type PanicHook = Box<dyn Fn(&PanicHookInfo<'_>) + Sync + Send + 'static>;

/// The terminal in dashboard mode. Dropping it restores the terminal and the panic hook.
struct Screen {
    terminal: Terminal<CrosstermBackend<Stdout>>,
    previous_hook: Option<Arc<PanicHook>>,
}

/// Leave raw mode and the alternate screen and show the cursor again. Idempotent.
fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(
        io::stdout(),
        LeaveAlternateScreen,
        ratatui::crossterm::cursor::Show
    );
}

impl Screen {
    fn enter() -> io::Result<Screen> {
        // The hook first: a panic from here on (on any thread) leaves a usable terminal behind.
        let previous: Arc<PanicHook> = Arc::new(std::panic::take_hook());
        let chained = Arc::clone(&previous);
        std::panic::set_hook(Box::new(move |info| {
            restore();
            chained(info);
        }));
        let mut screen = Screen {
            terminal: Terminal::new(CrosstermBackend::new(io::stdout()))?,
            previous_hook: Some(previous),
        };
        enable_raw_mode()?;
        execute!(io::stdout(), EnterAlternateScreen)?;
        screen.terminal.hide_cursor()?;
        screen.terminal.clear()?;
        Ok(screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
        if let Some(previous) = self.previous_hook.take() {
            // Only when not unwinding: `set_hook` panics while the thread is panicking.
            if !std::thread::panicking() {
                drop(std::panic::take_hook());
                std::panic::set_hook(Box::new(move |info| previous(info)));
            }
        }
    }
}

/// A running dashboard.
pub struct Dashboard {
    closing: Arc<AtomicBool>,
    thread: JoinHandle<io::Result<()>>,
}

impl Dashboard {
    /// Take over the terminal and start the dashboard thread. The terminal is set up here, so
    /// a terminal that cannot be used is an error before the worker runs.
    pub fn start(
        snapshot: impl FnMut() -> Snapshot + Send + 'static,
        stopper: Stopper,
    ) -> io::Result<Dashboard> {
        let screen = Screen::enter()?;
        let closing = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&closing);
        let thread = std::thread::Builder::new()
            .name("dashboard".into())
            .spawn(move || {
                let result = run(screen, snapshot, &stopper, &flag);
                if result.is_err() {
                    // A worker nobody can see or stop from the keyboard: stop it.
                    stopper.terminate();
                }
                result
            })?;
        Ok(Dashboard { closing, thread })
    }

    /// Stop the dashboard and give the terminal back (waits up to one tick).
    pub fn close(self) -> io::Result<()> {
        self.closing.store(true, Ordering::SeqCst);
        match self.thread.join() {
            Ok(result) => result,
            Err(_) => Err(io::Error::other("the dashboard thread panicked")),
        }
    }
}

/// What a key does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Up,
    Down,
    /// `q`: a graceful stop, as SIGTERM.
    Quit,
    /// Ctrl-C (raw mode turns it into a key): as SIGINT, the second one forces.
    Interrupt,
    Other,
}

fn key(event: &Event) -> Option<Key> {
    let Event::Key(k) = event else {
        // Resizes and the like: just redraw.
        return Some(Key::Other);
    };
    if k.kind != KeyEventKind::Press {
        return None;
    }
    Some(match k.code {
        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Key::Interrupt,
        KeyCode::Up | KeyCode::Char('k') => Key::Up,
        KeyCode::Down | KeyCode::Char('j') => Key::Down,
        KeyCode::Char('q') | KeyCode::Char('Q') => Key::Quit,
        _ => Key::Other,
    })
}

fn run(
    mut screen: Screen,
    mut snapshot: impl FnMut() -> Snapshot,
    stopper: &Stopper,
    closing: &AtomicBool,
) -> io::Result<()> {
    let mut selection = Selection::default();
    loop {
        let snap = snapshot();
        selection.refresh(&snap);
        screen
            .terminal
            .draw(|frame| view::draw(frame, &snap, &selection))?;
        // Wait for a key, the next refresh, or the close.
        let deadline = Instant::now() + REFRESH;
        loop {
            if closing.load(Ordering::SeqCst) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if !event::poll(left.min(TICK))? {
                continue;
            }
            match key(&event::read()?) {
                None => continue,
                Some(Key::Up) => selection.up(&snap),
                Some(Key::Down) => selection.down(&snap),
                Some(Key::Quit) => stopper.terminate(),
                Some(Key::Interrupt) => stopper.interrupt(),
                Some(Key::Other) => {}
            }
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use ratatui::crossterm::event::KeyEvent;

    use super::*;

    #[test]
    fn keys_map_to_selection_and_stops() {
        let press = |code, modifiers| Event::Key(KeyEvent::new(code, modifiers));
        assert_eq!(key(&press(KeyCode::Up, KeyModifiers::NONE)), Some(Key::Up));
        assert_eq!(
            key(&press(KeyCode::Down, KeyModifiers::NONE)),
            Some(Key::Down)
        );
        assert_eq!(
            key(&press(KeyCode::Char('q'), KeyModifiers::NONE)),
            Some(Key::Quit)
        );
        assert_eq!(
            key(&press(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Key::Interrupt)
        );
        assert_eq!(
            key(&press(KeyCode::Char('c'), KeyModifiers::NONE)),
            Some(Key::Other)
        );
        let mut release = KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE);
        release.kind = KeyEventKind::Release;
        assert_eq!(key(&Event::Key(release)), None);
    }
}
