//! The WIT imports, one module per capability. Each is implemented on [`SectionHost`], the data
//! of one section's store, so every call is scoped to that section by construction.

pub mod feed;
pub mod log;
pub mod process;
pub mod session;
pub mod slots;
pub mod state;
pub mod status;
pub mod worker;

use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use process::{Grants, ProcessRegistry};
pub use slots::SlotPool;
pub use status::{SectionStatus, StatusBoard};
pub use worker::WorkerInfo;

use crate::runtime::settings::RuntimeSettings;
use crate::runtime::transport::SessionTransport;

/// What every section shares: one per worker process.
pub struct Shared {
    pub transport: Arc<dyn SessionTransport>,
    pub settings: RuntimeSettings,
    pub status: Arc<StatusBoard>,
    pub slots: SlotPool,
    pub processes: Arc<ProcessRegistry>,
    pub worker: WorkerInfo,
    /// Values a child or guest must never see (the API key): environment variables holding one
    /// of them are removed from children's environments.
    pub secrets: Vec<String>,
    /// `<state tree>/jobs`: each section's state folder is `<job_type>-<state key>` inside it.
    pub jobs_dir: PathBuf,
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

/// The data of one section's store.
pub struct SectionHost {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limits: MemoryCap,
    pub busy: crate::runtime::budget::ComputeBudget,
    pub section: Arc<SectionContext>,
    /// The current feed subscription's poller, aborted when replaced or when the store drops.
    pub feed_task: Option<tokio::task::AbortHandle>,
    /// Whether this store's guest is executing wasm, for the epoch ticker.
    pub activity: crate::runtime::engine::WasmActivity,
}

impl Drop for SectionHost {
    fn drop(&mut self) {
        if let Some(task) = self.feed_task.take() {
            task.abort();
        }
    }
}

impl WasiView for SectionHost {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps a store's linear memories and tables (`job_types.<name>.memory_limit_mib`).
pub struct MemoryCap {
    pub max_bytes: usize,
    /// Set when a grow was refused, so that the resulting trap is reported as out-of-memory.
    pub hit: bool,
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.hit = true;
            return Err(wasmtime::format_err!(
                "JOB_TYPE_OUT_OF_MEMORY: linear memory would grow to {desired} bytes, over the limit of {} bytes",
                self.max_bytes
            ));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; 1M entries is far beyond any honest guest.
        Ok(desired <= 1 << 20)
    }
}
