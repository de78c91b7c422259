//! State shared by the HTTP server and every `Admin` handle: the world (with
//! its optional state file), the request log, the fault table and a change
//! counter tests can await instead of sleeping.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::User;
use crate::error::ApiError;
use crate::faults::FaultTable;
use crate::store::State;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub command: Option<String>,
    /// 0 when the connection was dropped without an answer.
    pub status: u16,
    pub user_id: Option<String>,
    /// When the request arrived (its headers were read): microseconds since 1970. For latency
    /// measurements (`host/benches/harness.rs`); 0 in logs written before the field existed.
    #[serde(default)]
    pub received_at_us: u64,
}

pub struct Shared {
    state: Mutex<State>,
    state_file: Option<PathBuf>,
    pub requests: Mutex<Vec<RequestRecord>>,
    pub faults: Mutex<FaultTable>,
    /// False: every response carries `Connection: close` and the connection ends after it, as
    /// servers that do not keep connections alive do (benches measure a new connection per call).
    pub keep_alive: std::sync::atomic::AtomicBool,
    version: watch::Sender<u64>,
}

/// A poisoned lock only means a panic elsewhere (a failing test); the data is still usable.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub fn new(users: Vec<User>, state_file: Option<PathBuf>) -> anyhow::Result<Shared> {
        let mut state = match &state_file {
            Some(p) if p.exists() => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                serde_json::from_str::<State>(&text)
                    .with_context(|| format!("parsing {}", p.display()))?
            }
            _ => State::default(),
        };
        // Configured users are always honoured, also on top of a loaded file.
        for u in users {
            state.add_user(u);
        }
        let shared = Shared {
            state: Mutex::new(state),
            state_file,
            requests: Mutex::new(Vec::new()),
            faults: Mutex::new(FaultTable::default()),
            keep_alive: std::sync::atomic::AtomicBool::new(true),
            version: watch::Sender::new(0),
        };
        shared.persist(&lock(&shared.state))?;
        Ok(shared)
    }

    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&lock(&self.state))
    }

    /// Runs `f`; if it reports a change, persists and wakes waiters.
    pub fn mutate<R>(
        &self,
        f: impl FnOnce(&mut State) -> Result<(R, bool), ApiError>,
    ) -> Result<R, ApiError> {
        let mut st = lock(&self.state);
        let (r, changed) = f(&mut st)?;
        if changed {
            if let Err(e) = self.persist(&st) {
                // The in-memory state is still right; losing durability must not fail the request.
                eprintln!("blobhub-emulator: {e:#}");
            }
            drop(st);
            self.bump();
        }
        Ok(r)
    }

    pub fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    pub fn record(&self, rec: RequestRecord) {
        lock(&self.requests).push(rec);
        self.bump();
    }

    fn persist(&self, state: &State) -> anyhow::Result<()> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        write_atomically(path, &serde_json::to_vec(state)?)
    }
}

/// Write to a sibling temp file and rename, so a crash leaves the old or the new file, never half.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming onto {}", path.display()))?;
    Ok(())
}
