//! The plugin runtime: job types as WebAssembly components, one store and instance per section,
//! capabilities scoped to that section (docs/architecture.md, docs/job-types.md).

pub mod budget;
pub mod cache;
pub mod capabilities;
pub mod child_env;
pub mod child_sandbox;
pub mod code_memory;
pub mod confined;
pub mod engine;
pub mod engine_config;
pub mod feed_thread;
pub mod guest_clock;
pub mod guest_stderr;
pub mod loader;
pub mod pending;
pub mod plugins_cmd;
pub mod preflight;
pub mod quotas;
pub mod section;
pub mod settings;
pub mod start;
pub mod state_meter;
pub mod store;
pub mod supervisor;
pub mod transport;
pub mod wake_grid;
pub mod wit;
pub mod wit_version;
pub mod work_folder;

pub use loader::{JobTypes, LoadError, LoadedJobType, Origin};
pub use preflight::PreflightError;
pub use section::SectionEnd;
pub use settings::RuntimeSettings;
pub use supervisor::{RunReport, Runtime, RuntimeInputs};
pub use transport::{Channel, SessionTransport, TransportError};
