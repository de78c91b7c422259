//! The WIT imports, one module per capability. Each is implemented on
//! [`SectionHost`](crate::runtime::store::SectionHost), the data of one section's store, so every
//! call is scoped to that section by construction.

pub mod feed;
pub mod files;
pub mod held_waits;
pub mod log;
pub mod process;
pub mod session;
pub mod slots;
pub mod state;
pub mod status;
pub mod worker;

use std::path::PathBuf;
use std::sync::Arc;

pub use held_waits::HeldWaits;
pub use process::{Grants, ProcessRegistry};
pub use slots::SlotPool;
pub use status::{SectionStatus, StatusBoard};
pub use worker::WorkerInfo;

use crate::runtime::settings::RuntimeSettings;
use crate::runtime::transport::SessionTransport;

/// What every section shares: one per worker process.
pub struct Shared {
    pub transport: Arc<dyn SessionTransport>,
    /// What the event feed polls through (`SessionTransport::for_feed`).
    pub feed_transport: Arc<dyn SessionTransport>,
    pub settings: RuntimeSettings,
    pub status: Arc<StatusBoard>,
    pub slots: SlotPool,
    /// `concurrency.held_waits_max`: agents blocked on a person, across every section.
    pub held_waits: HeldWaits,
    pub processes: Arc<ProcessRegistry>,
    pub worker: WorkerInfo,
    /// Values a child or guest must never see (the API key): environment variables holding one
    /// of them are removed from children's environments.
    pub secrets: Vec<String>,
    /// `<state tree>/jobs`: each section's state folder is `<job_type>-<state key>` inside it.
    pub jobs_dir: PathBuf,
    /// Measures every section's state folder against its quota.
    pub state_meter: crate::runtime::state_meter::StateMeter,
}

impl Shared {
    /// The worker's state tree (the parent of `jobs/`); `None` for stores that run no section.
    pub fn tree_root(&self) -> Option<&std::path::Path> {
        self.jobs_dir.parent().filter(|p| !p.as_os_str().is_empty())
    }
}

/// One section, as its capabilities see it.
pub struct SectionContext {
    pub index: u32,
    pub name: String,
    pub job_type: String,
    pub state_dir: PathBuf,
    pub session: session::SessionBinding,
    pub grants: Grants,
    pub quotas: crate::runtime::quotas::Quotas,
    pub shared: Arc<Shared>,
}

impl SectionContext {
    /// How log lines name the section: its `name`, else its place in config.yaml.
    pub fn label(&self) -> String {
        if self.name.is_empty() {
            format!("sections[{}]", self.index)
        } else {
            self.name.clone()
        }
    }
}
