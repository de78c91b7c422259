//! `config.yaml`: the product's schema plus our additions, all in docs/configuration.md.

mod limits;
mod lines;
mod load;
mod model;

pub use lines::LineIndex;
pub use load::{Diagnostic, LoadReport, Severity, load_file, load_str};
pub use model::{
    AgentSettings, Concurrency, Config, JobTypeSettings, Permissions, Polling, Section, Workspace,
    default_executable,
};
