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

use super::model::{Move, Snapshot, Tone, ViewState};
use super::view::{self, Footer};
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
    /// Take over the terminal and start the dashboard thread of `start --tui`. The terminal is
    /// set up here, so a terminal that cannot be used is an error before the worker runs.
    pub fn start(
        mut snapshot: impl FnMut() -> Snapshot + Send + 'static,
        stopper: Stopper,
    ) -> io::Result<Dashboard> {
        let screen = Screen::enter()?;
        let closing = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&closing);
        let thread = std::thread::Builder::new()
            .name("dashboard".into())
            .spawn(move || {
                let mut control = Control::InProcess(stopper.clone());
                let result = run(
                    screen,
                    &mut || Ok::<_, String>(snapshot()),
                    &mut control,
                    &flag,
                );
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

/// Asks a worker in another process to stop; `true` forces.
pub type RemoteStop = Box<dyn FnMut(bool) -> Result<(), String> + Send>;

/// `top`: the dashboard of a worker running in another process, in this thread, until `q`.
/// `snapshot` fetches its status (an error is shown in the footer and the last frame kept);
/// `s` then `y` asks it to stop through `stop`.
pub fn attach(
    mut snapshot: impl FnMut() -> Result<Snapshot, String>,
    stop: RemoteStop,
) -> io::Result<()> {
    let screen = Screen::enter()?;
    let mut control = Control::Attached {
        stop,
        confirming: false,
        said: None,
    };
    run(screen, &mut snapshot, &mut control, &AtomicBool::new(false))
}

/// Who the dashboard belongs to, which decides what `q` and Ctrl-C do.
enum Control {
    /// `start --tui`: `q` is SIGTERM, Ctrl-C is SIGINT, for this very worker.
    InProcess(Stopper),
    /// `top`: `q` and Ctrl-C leave the dashboard; `s` asks (`y` confirms) the worker to stop.
    Attached {
        stop: RemoteStop,
        confirming: bool,
        /// The outcome of the last stop request.
        said: Option<(String, Tone)>,
    },
}

/// The keys of `top`.
pub const KEYS_ATTACHED: &str = "↑↓ select  PgUp/PgDn/Home/End  r refresh  q leave  s stop worker";

impl Control {
    fn footer(&self, snapshot: &Snapshot, fetch_error: Option<&str>) -> Footer {
        let keys = match self {
            Control::InProcess(_) => view::KEYS_IN_PROCESS,
            Control::Attached { .. } => KEYS_ATTACHED,
        };
        let notice = if let Some(e) = fetch_error {
            Some((format!("not connected: {e}"), Tone::Failed))
        } else if let Control::Attached {
            confirming: true, ..
        } = self
        {
            Some((
                "stop the worker? y stops it, any other key cancels".to_owned(),
                Tone::Waiting,
            ))
        } else if snapshot.stopping {
            Some((
                "stopping: waiting for the sections to drain…".to_owned(),
                Tone::Waiting,
            ))
        } else if let Control::Attached {
            said: Some(said), ..
        } = self
        {
            Some(said.clone())
        } else {
            None
        };
        Footer {
            keys: keys.to_owned(),
            notice,
        }
    }

    /// Handle a key; true when the dashboard should close.
    fn key(&mut self, key: Key) -> bool {
        match self {
            Control::InProcess(stopper) => {
                match key {
                    Key::Quit => stopper.terminate(),
                    Key::Interrupt => stopper.interrupt(),
                    _ => {}
                }
                false
            }
            Control::Attached {
                stop,
                confirming,
                said,
            } => {
                if std::mem::take(confirming) {
                    if key == Key::Yes {
                        *said = Some(match stop(false) {
                            Ok(()) => ("stop requested".to_owned(), Tone::Waiting),
                            Err(e) => (format!("stop failed: {e}"), Tone::Failed),
                        });
                    }
                    return false;
                }
                match key {
                    Key::Quit | Key::Interrupt => true,
                    Key::Stop => {
                        *confirming = true;
                        false
                    }
                    _ => false,
                }
            }
        }
    }
}

/// What a key does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Move(Move),
    /// `r`: redraw now.
    Refresh,
    /// `q`: a graceful stop (as SIGTERM) in `start --tui`; leave in `top`.
    Quit,
    /// Ctrl-C (raw mode turns it into a key): as SIGINT in `start --tui` (the second one
    /// forces); leave in `top`.
    Interrupt,
    /// `s` in `top`: ask to stop the worker (confirmed with `y`).
    Stop,
    Yes,
    Other,
}

fn key(event: &Event) -> Option<Key> {
    let Event::Key(k) = event else {
        // Resizes and the like: just redraw (the next frame is laid out for the new size).
        return Some(Key::Other);
    };
    if k.kind != KeyEventKind::Press {
        return None;
    }
    Some(match k.code {
        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Key::Interrupt,
        KeyCode::Up | KeyCode::Char('k') => Key::Move(Move::Up),
        KeyCode::Down | KeyCode::Char('j') => Key::Move(Move::Down),
        KeyCode::PageUp => Key::Move(Move::PageUp),
        KeyCode::PageDown => Key::Move(Move::PageDown),
        KeyCode::Home => Key::Move(Move::Home),
        KeyCode::End => Key::Move(Move::End),
        KeyCode::Char('r') => Key::Refresh,
        KeyCode::Char('q') | KeyCode::Char('Q') => Key::Quit,
        KeyCode::Char('s') => Key::Stop,
        KeyCode::Char('y') | KeyCode::Char('Y') => Key::Yes,
        _ => Key::Other,
    })
}

fn run(
    mut screen: Screen,
    snapshot: &mut dyn FnMut() -> Result<Snapshot, String>,
    control: &mut Control,
    closing: &AtomicBool,
) -> io::Result<()> {
    let mut state = ViewState::default();
    let mut snap = Snapshot::default();
    loop {
        let fetch_error = match snapshot() {
            Ok(s) => {
                snap = s;
                None
            }
            Err(e) => Some(e),
        };
        let footer = control.footer(&snap, fetch_error.as_deref());
        screen
            .terminal
            .draw(|frame| view::draw(frame, &snap, &mut state, &footer))?;
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
                Some(Key::Move(m)) => state.apply(&snap, m),
                Some(k) => {
                    if control.key(k) {
                        return Ok(());
                    }
                }
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
        assert_eq!(
            key(&press(KeyCode::Up, KeyModifiers::NONE)),
            Some(Key::Move(Move::Up))
        );
        assert_eq!(
            key(&press(KeyCode::Char('j'), KeyModifiers::NONE)),
            Some(Key::Move(Move::Down))
        );
        assert_eq!(
            key(&press(KeyCode::PageDown, KeyModifiers::NONE)),
            Some(Key::Move(Move::PageDown))
        );
        assert_eq!(
            key(&press(KeyCode::End, KeyModifiers::NONE)),
            Some(Key::Move(Move::End))
        );
        assert_eq!(
            key(&press(KeyCode::Char('r'), KeyModifiers::NONE)),
            Some(Key::Refresh)
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

#[cfg(test)]
mod control_tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn in_top_q_leaves_and_s_stops_only_once_confirmed() {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&asked);
        let mut control = Control::Attached {
            stop: Box::new(move |force| {
                log.lock().unwrap().push(force);
                Ok(())
            }),
            confirming: false,
            said: None,
        };
        assert!(!control.key(Key::Stop));
        assert!(!control.key(Key::Other), "any other key cancels");
        assert!(asked.lock().unwrap().is_empty());
        assert!(!control.key(Key::Stop));
        let footer = control.footer(&Snapshot::default(), None);
        assert!(footer.notice.unwrap().0.contains("stop the worker?"));
        assert!(!control.key(Key::Yes));
        assert_eq!(*asked.lock().unwrap(), vec![false]);
        assert!(control.key(Key::Quit), "q leaves the dashboard");
        assert!(control.key(Key::Interrupt));
    }
}
