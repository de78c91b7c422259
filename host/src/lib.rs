//! blobhub-worker: the BlobHub Worker as a library; `main.rs` only calls [`cli::run`].
//!
//! `cli` parses commands and reports coded errors; `start` runs preflight and builds the
//! context the `runtime` runs sections with; `api` is the BlobHub client; `config`,
//! `state_tree` and `instance_lock` own the files of the state tree; `dashboard` is the live view
//! of `start --tui` and `top`; `status_socket` serves a running worker's status and takes its
//! stop requests; `test_agent` is the scripted agent of the demo and the tests.

pub mod api;
pub mod cli;
pub mod coded;
pub mod config;
pub mod dashboard;
pub mod instance_lock;
pub mod job_type_check;
pub mod log_format;
pub mod metrics;
pub mod runtime;
pub mod shared_timer;
pub mod signals;
pub mod start;
pub mod state_tree;
pub mod status_socket;
pub mod test_agent;
