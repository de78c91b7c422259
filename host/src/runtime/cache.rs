//! The compiled-component cache under `<state tree>/cache/`.
//!
//! Key: sha256 of the component bytes + the wasmtime version + the engine's
//! `precompile_compatibility_hash` (which covers the engine settings and the target), so a stale
//! artefact is never even opened. A hit is logged as `component_cache_hit` and counted
//! ([`hits`]), so tests can assert it without timing.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

static HITS: AtomicU64 = AtomicU64::new(0);
static MISSES: AtomicU64 = AtomicU64::new(0);

/// Cache hits since the process started.
pub fn hits() -> u64 {
    HITS.load(Ordering::Relaxed)
}

/// Cache misses (compilations) since the process started.
pub fn misses() -> u64 {
    MISSES.load(Ordering::Relaxed)
}

/// The wasmtime version the host links (keeps artefacts of different hosts apart).
pub const WASMTIME_VERSION: &str = "48.0.8";

pub fn key(engine: &Engine, wasm: &[u8]) -> String {
    let digest = Sha256::digest(wasm);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!(
        "{}-wasmtime{}-{:016x}",
        hex::encode(digest),
        WASMTIME_VERSION,
        hasher.finish()
    )
}

/// Load `wasm` compiled, from `cache_dir` when possible, else compile and store it there.
/// Without a cache folder it just compiles. A broken or unreadable cache entry is recompiled.
/// The flag says whether it came from the cache.
pub fn load(
    engine: &Engine,
    wasm: &[u8],
    cache_dir: Option<&Path>,
) -> wasmtime::Result<(Component, bool)> {
    let Some(dir) = cache_dir else {
        MISSES.fetch_add(1, Ordering::Relaxed);
        return Ok((Component::new(engine, wasm)?, false));
    };
    let key = key(engine, wasm);
    let path: PathBuf = dir.join(format!("{key}.cwasm"));
    if path.is_file() {
        // SAFETY: the file is one this host serialized itself into the worker's private state
        // tree, under a key that includes the engine's compatibility hash; wasmtime also checks
        // its header and refuses artefacts of another version or configuration.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => {
                HITS.fetch_add(1, Ordering::Relaxed);
                tracing::info!(key = %key, "component_cache_hit");
                return Ok((component, true));
            }
            Err(e) => tracing::warn!(key = %key, error = %e, "component_cache_unusable"),
        }
    }
    MISSES.fetch_add(1, Ordering::Relaxed);
    let component = Component::new(engine, wasm)?;
    tracing::info!(key = %key, "component_cache_miss");
    if let Ok(bytes) = component.serialize()
        && crate::state_tree::create_private_dir(dir).is_ok()
        && let Err(e) = crate::state_tree::write_atomic(&path, &bytes)
    {
        tracing::warn!(key = %key, error = %e, "component_cache_write_failed");
    }
    Ok((component, false))
}
