// Force the heavy dependencies to build now so that later checks are incremental.
pub use wasmtime as _wasmtime;
pub use wasmtime_wasi as _wasmtime_wasi;
pub mod api;
pub mod cli;
pub mod coded;
pub mod config;
pub mod instance_lock;
pub mod job_type_check;
pub mod runtime;
pub mod start;
pub mod state_tree;
