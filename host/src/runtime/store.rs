//! The data of one section's store ([`SectionHost`]), its limits (memory cap, compute budget)
//! and how a store is made: the one place that wires the limiter, the call hook and the epoch
//! callback. Every capability (`super::capabilities`) is implemented on [`SectionHost`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::budget::ComputeBudget;
use super::capabilities::{SectionContext, Shared, SlotPool, StatusBoard, WorkerInfo};
use super::transport::{CallFuture, Channel, SessionTransport, TransportError};

/// The data of one section's store.
pub struct SectionHost {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limits: MemoryCap,
    pub busy: ComputeBudget,
    pub section: Arc<SectionContext>,
    /// The current feed subscription's poller, aborted when replaced or when the store drops.
    pub feed_task: Option<tokio::task::AbortHandle>,
    /// Whether this store's guest is executing wasm, for the epoch ticker.
    pub activity: crate::runtime::engine::WasmActivity,
    /// The guest's waits now on the wake grid (`guest_clock`).
    pub grid_waits: Arc<std::sync::atomic::AtomicU32>,
}

impl SectionHost {
    /// The data of a store that runs `section` with a memory cap and a compute budget.
    pub fn new(
        wasi: WasiCtx,
        section: Arc<SectionContext>,
        max_memory_bytes: usize,
        max_busy: Duration,
    ) -> SectionHost {
        SectionHost {
            wasi,
            table: ResourceTable::new(),
            limits: MemoryCap {
                max_bytes: max_memory_bytes,
                hit: false,
            },
            busy: ComputeBudget::new(max_busy),
            section,
            feed_task: None,
            activity: Default::default(),
            grid_waits: Arc::default(),
        }
    }
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

/// A store for `host`: its memory limiter, and the call hook and epoch callback that keep the
/// epoch ticker's gauge and the compute budget ([`ComputeBudget`]), so no import resets the budget
/// by hand.
pub fn store_for(engine: &Engine, host: SectionHost) -> Store<SectionHost> {
    let mut store = Store::new(engine, host);
    store.limiter(|h| &mut h.limits);
    store.call_hook(|mut ctx, hook| {
        let data = ctx.data_mut();
        data.activity.on_call_hook(hook);
        if hook.exiting_host() {
            data.section
                .quotas
                .wasm_entries
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if data.busy.on_call_hook(hook, Instant::now()) {
            return Err(wasmtime::format_err!(
                "JOB_TYPE_UNRESPONSIVE: the job type computed for longer than its budget"
            ));
        }
        Ok(())
    });
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut ctx| {
        if ctx.data_mut().busy.on_tick(Instant::now()) {
            return Err(wasmtime::format_err!(
                "JOB_TYPE_UNRESPONSIVE: the job type computed for too long without returning to the host"
            ));
        }
        // Yield to tokio every tick so that a busy guest cannot starve other sections.
        Ok(UpdateDeadline::Yield(1))
    });
    store
}

/// A WASI context that sees only `state_dir` (as `/`) and a stderr that becomes the section's
/// log lines: no environment, no arguments, no network.
pub fn wasi_for(
    state_dir: Option<&Path>,
    section: &Arc<SectionContext>,
) -> wasmtime::Result<WasiCtx> {
    let mut builder = WasiCtxBuilder::new();
    builder
        .stderr(crate::runtime::guest_stderr::GuestStderr(Arc::clone(
            section,
        )))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    if let Some(dir) = state_dir {
        builder.preopened_dir(dir, "/", FsPerms::ReadWrite)?;
    }
    Ok(builder.build())
}

/// A transport for stores that must not reach the network (`describe`, `validate`).
pub struct NoTransport;

impl SessionTransport for NoTransport {
    fn call(&self, _: Channel, _: &str, _: &str, _: serde_json::Map<String, Value>) -> CallFuture {
        Box::pin(async {
            Err(TransportError::Network {
                never_ran: true,
                detail: "no session API during describe/validate".into(),
            })
        })
    }
}

/// Worker-wide state for stores that run no section (describe, validate, `plugins check`).
pub fn detached_shared() -> Arc<Shared> {
    let (_tx, rx) = tokio::sync::watch::channel(false);
    Arc::new(Shared {
        transport: Arc::new(NoTransport),
        feed_transport: Arc::new(NoTransport),
        settings: crate::runtime::settings::RuntimeSettings::defaults(),
        status: Arc::new(StatusBoard::default()),
        slots: SlotPool::new(0),
        held_waits: crate::runtime::capabilities::HeldWaits::new(1),
        processes: Arc::default(),
        worker: WorkerInfo {
            user_id: String::new(),
            instance_id: String::new(),
            version: env!("CARGO_PKG_VERSION").into(),
            started_at: crate::runtime::capabilities::worker::now_utc(),
            shutdown: rx,
        },
        secrets: Vec::new(),
        jobs_dir: PathBuf::new(),
        state_meter: crate::runtime::state_meter::StateMeter::new(
            crate::runtime::quotas::STATE_CHECK,
        ),
    })
}

/// A store with no state folder and no grants, for `describe` and `validate`, under the job
/// type's memory limit and compute budget.
pub fn scratch_store(
    engine: &Engine,
    limits: &crate::config::JobTypeSettings,
) -> wasmtime::Result<Store<SectionHost>> {
    let context = Arc::new(SectionContext {
        index: u32::MAX,
        name: String::new(),
        job_type: String::new(),
        state_dir: PathBuf::new(),
        session: crate::runtime::capabilities::session::SessionBinding::unbound(),
        grants: Default::default(),
        quotas: crate::runtime::quotas::Quotas::new(limits),
        shared: detached_shared(),
    });
    let host = SectionHost::new(
        wasi_for(None, &context)?,
        context,
        (limits.memory_limit_mib as usize) << 20,
        Duration::from_millis(limits.max_busy_ms),
    );
    Ok(store_for(engine, host))
}
