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
use std::time::Instant;

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

/// One section, as its capabilities see it.
pub struct SectionContext {
    pub index: u32,
    pub name: String,
    pub job_type: String,
    pub state_dir: PathBuf,
    pub session: session::SessionBinding,
    pub grants: Grants,
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
    pub busy: BusyMeter,
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

/// Measures how long the guest has computed without coming back to the host.
///
/// The epoch callback runs only while guest code executes. Consecutive callbacks closer together
/// than [`BusyMeter::GAP`] mean the guest ran the whole time; a larger gap means it was suspended
/// in the host (waiting in `poll`, say), which resets the meter. Our own imports reset it too.
pub struct BusyMeter {
    pub since: Option<Instant>,
    pub last_tick: Option<Instant>,
    pub max_busy: std::time::Duration,
    pub tripped: bool,
}

impl BusyMeter {
    const GAP: std::time::Duration = std::time::Duration::from_millis(200);

    pub fn new(max_busy: std::time::Duration) -> Self {
        BusyMeter {
            since: None,
            last_tick: None,
            max_busy,
            tripped: false,
        }
    }

    /// Called by host imports: the guest is talking to us, so it is responsive.
    pub fn reset(&mut self) {
        self.since = None;
        self.last_tick = None;
    }

    /// Called on every epoch tick while the guest runs; true once it has been busy too long.
    pub fn tick(&mut self, now: Instant) -> bool {
        match self.last_tick {
            Some(last) if now.duration_since(last) < Self::GAP => {}
            _ => self.since = Some(now),
        }
        self.last_tick = Some(now);
        let busy = self
            .since
            .map(|s| now.duration_since(s))
            .unwrap_or_default();
        if busy > self.max_busy {
            self.tripped = true;
        }
        self.tripped
    }
}
