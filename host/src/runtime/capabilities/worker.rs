//! `blobhub:worker/worker`: identity, clock, ULIDs and the shutdown signal.

use tokio::sync::watch;
use wasmtime::component::Resource;
use wasmtime_wasi::p2::DynPollable;

use crate::runtime::store::SectionHost;
use crate::runtime::wit::latest::worker::{self as wit, WorkerIdentity};

/// The worker process as guests see it.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    pub user_id: String,
    pub instance_id: String,
    pub version: String,
    pub started_at: String,
    /// Becomes true once shutdown begins.
    pub shutdown: watch::Receiver<bool>,
}

/// UTC `YYYY-MM-DDTHH:MM:SSZ`.
pub fn now_utc() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// The pollable behind `shutdown-signal`.
pub struct ShutdownSignal(watch::Receiver<bool>);

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for ShutdownSignal {
    async fn ready(&mut self) {
        if self.0.wait_for(|down| *down).await.is_err() {
            // The sender is gone: the worker is ending anyway.
        }
    }
}

impl wit::Host for SectionHost {
    fn identity(&mut self) -> wasmtime::Result<WorkerIdentity> {
        let w = &self.section.shared.worker;
        Ok(WorkerIdentity {
            user_id: w.user_id.clone(),
            instance_id: w.instance_id.clone(),
            version: w.version.clone(),
            started_at: w.started_at.clone(),
        })
    }

    fn now_utc(&mut self) -> wasmtime::Result<String> {
        Ok(now_utc())
    }

    fn new_ulid(&mut self) -> wasmtime::Result<String> {
        Ok(ulid::Ulid::new().to_string())
    }

    fn shutdown_signal(&mut self) -> wasmtime::Result<Resource<DynPollable>> {
        let signal = self
            .table
            .push(ShutdownSignal(self.section.shared.worker.shutdown.clone()))?;
        wasmtime_wasi::p2::subscribe(&mut self.table, signal)
    }

    fn is_shutting_down(&mut self) -> wasmtime::Result<bool> {
        Ok(*self.section.shared.worker.shutdown.borrow())
    }
}
