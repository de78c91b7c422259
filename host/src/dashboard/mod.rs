//! The live dashboard of `start --tui`: a read-only view of the status board.
//!
//! [`model`] holds the snapshot the dashboard draws and the selection, [`view`] renders a
//! snapshot into a frame (pure, tested against ratatui's `TestBackend`), and [`terminal`] owns
//! the terminal: raw mode, the alternate screen, the refresh and key loop, and the restore on
//! every exit path.

pub mod model;
pub mod terminal;
pub mod view;
