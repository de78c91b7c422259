//! The plugin runtime: job types as WebAssembly components, one store and instance per section,
//! capabilities scoped to that section (docs/architecture.md, docs/job-types.md).

pub mod bindings;
pub mod cache;
pub mod capabilities;
pub mod engine;
pub mod loader;
pub mod pending;
pub mod plugins_cmd;
pub mod preflight;
pub mod section;
pub mod settings;
pub mod start;
pub mod supervisor;
pub mod transport;

pub use loader::{JobTypes, LoadError, LoadedJobType, Origin};
pub use preflight::PreflightError;
pub use section::SectionEnd;
pub use settings::RuntimeSettings;
pub use start::run;
pub use supervisor::{RunReport, Runtime, RuntimeInputs};
pub use transport::{Channel, SessionTransport, TransportError};
