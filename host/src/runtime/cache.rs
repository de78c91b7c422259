//! Compiled components: the bundled job types' code precompiled by the build, and the
//! compiled-component cache under `<state tree>/cache/`.
//!
//! A bundled component whose precompiled code fits the running engine is loaded from the
//! executable (`component_precompiled`); anything else goes through the cache.
//!
//! Cache key: sha256 of the component bytes + the wasmtime version + the engine's
//! `precompile_compatibility_hash` (which covers the engine settings and the target), so a stale
//! artefact is never even opened. A hit is logged as `component_cache_hit` and counted
//! ([`hits`]), so tests can assert it without timing.
//!
//! Loading compiled code is `unsafe` in wasmtime: its checks cover the header and the engine
//! settings, not the machine code. So an entry is read only from a folder that is this user's
//! and closed to everyone else (0700, not a link: `component_cache_insecure` otherwise, and the
//! cache is then neither read nor written), and only when its trailing sha256 matches what was
//! written: a damaged or truncated file is compiled again (`component_cache_unusable`), never
//! loaded.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::loader::{BUNDLED, PRECOMPILED, PRECOMPILED_ENGINE_HASH};

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

/// Length of the sha256 that ends every cache entry.
const DIGEST_LEN: usize = 32;

/// The engine's `precompile_compatibility_hash` as a number (build.rs computes the build
/// engine's the same way).
pub fn engine_hash(engine: &Engine) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.finish()
}

pub fn key(engine: &Engine, wasm: &[u8]) -> String {
    let digest = Sha256::digest(wasm);
    format!(
        "{}-wasmtime{}-{:016x}",
        hex::encode(digest),
        WASMTIME_VERSION,
        engine_hash(engine)
    )
}

/// Load `wasm` compiled: a bundled component from its precompiled code, else from `cache_dir`
/// when possible, else compile it (and store it there). Without a cache folder it compiles. A
/// broken or unreadable cache entry is recompiled. The flag says whether it was compiled
/// (false) or loaded ready-made (true: the cache or the build's code).
pub fn load(
    engine: &Engine,
    wasm: &[u8],
    cache_dir: Option<&Path>,
) -> wasmtime::Result<(Component, bool)> {
    if let Some(component) = precompiled(engine, wasm) {
        return Ok((component, true));
    }
    let Some(dir) = cache_dir.filter(|dir| usable_dir(dir)) else {
        MISSES.fetch_add(1, Ordering::Relaxed);
        return Ok((Component::new(engine, wasm)?, false));
    };
    let key = key(engine, wasm);
    let path: PathBuf = dir.join(format!("{key}.cwasm"));
    if path.is_file() {
        match read_entry(engine, &path) {
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
    if let Ok(mut bytes) = component.serialize() {
        let digest = Sha256::digest(&bytes);
        bytes.extend_from_slice(&digest);
        if let Err(e) = crate::state_tree::write_atomic(&path, &bytes) {
            tracing::warn!(key = %key, error = %e, "component_cache_write_failed");
        }
    }
    Ok((component, false))
}

/// Whether `cache_dir` holds an entry for `wasm` (read or not, it is not checked here).
pub fn has_entry(engine: &Engine, wasm: &[u8], cache_dir: Option<&Path>) -> bool {
    cache_dir.is_some_and(|dir| dir.join(format!("{}.cwasm", key(engine, wasm))).is_file())
}

/// The build's code for `wasm` when it is a bundled component and the code was compiled by an
/// engine configured as this one.
fn precompiled(engine: &Engine, wasm: &[u8]) -> Option<Component> {
    let (package, _) = BUNDLED.iter().find(|(_, bytes)| *bytes == wasm)?;
    let (_, code) = PRECOMPILED.iter().find(|(p, _)| p == package)?;
    if engine_hash(engine) != PRECOMPILED_ENGINE_HASH {
        tracing::warn!(
            job_type = %package,
            "precompiled_code_unusable: built for other engine settings; compiling"
        );
        return None;
    }
    // SAFETY: the bytes are part of this executable: host/build.rs compiled them from these
    // very component bytes with an engine whose compatibility hash is this engine's, and
    // wasmtime checks the header and the settings again before using them. build.rs puts them
    // in a page-aligned static (`load_in_place`'s other condition).
    let loaded = match unsafe { super::code_memory::load_in_place(engine, code) } {
        Ok(component) => Ok((component, true)),
        // An engine without the worker's code memory (or a platform without it) gets a copy.
        Err(e) => {
            tracing::debug!(job_type = %package, reason = %format!("{e:#}"), "precompiled_code_copied");
            unsafe { Component::deserialize(engine, code) }.map(|c| (c, false))
        }
    };
    match loaded {
        Ok((component, in_place)) => {
            tracing::debug!(job_type = %package, in_place, "component_precompiled");
            Some(component)
        }
        Err(e) => {
            tracing::warn!(job_type = %package, error = %format!("{e:#}"), "precompiled_code_unusable");
            None
        }
    }
}

/// Whether the cache folder may be read and written: created 0700 when missing; refused when it
/// is a link, another user's, or open to others.
fn usable_dir(dir: &Path) -> bool {
    if crate::state_tree::create_private_dir(dir).is_err() {
        return false;
    }
    match insecurity(dir) {
        None => true,
        Some(why) => {
            tracing::warn!(dir = %dir.display(), why = %why, "component_cache_insecure: compiling without the cache (fix with: chmod 700)");
            false
        }
    }
}

/// Why `path` cannot be trusted with compiled code: a link, not ours, or open to group/others.
fn insecurity(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) => return Some(e.to_string()),
    };
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.file_type().is_symlink() {
        Some("is a symbolic link".into())
    } else if meta.uid() != me {
        Some(format!(
            "is owned by uid {}, not by this worker's user",
            meta.uid()
        ))
    } else if meta.mode() & 0o077 != 0 {
        Some(format!(
            "is open to others (mode {:o})",
            meta.mode() & 0o777
        ))
    } else {
        None
    }
}

/// A cache entry, checked: a regular file of ours with a matching trailing sha256.
fn read_entry(engine: &Engine, path: &Path) -> Result<Component, String> {
    if let Some(why) = insecurity(path) {
        return Err(format!("the entry {why}"));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let Some(split) = bytes.len().checked_sub(DIGEST_LEN) else {
        return Err("truncated".into());
    };
    let (code, digest) = bytes.split_at(split);
    if Sha256::digest(code).as_slice() != digest {
        return Err("its checksum does not match (damaged or written by another version)".into());
    }
    // SAFETY: the entry is one this host serialized itself (its checksum matches) in a folder
    // only this user can write, under a key that includes the engine's compatibility hash;
    // wasmtime also checks its header and refuses artefacts of another version or configuration.
    unsafe { Component::deserialize(engine, code) }.map_err(|e| format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// The smallest component: the preamble alone (magic, version 0x0d, layer 1).
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    fn engine() -> Engine {
        super::super::engine::new_engine().unwrap()
    }

    fn entries(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    #[test]
    fn a_damaged_cache_entry_is_compiled_again_and_replaced() {
        let engine = engine();
        let tree = tempfile::tempdir().unwrap();
        let dir = tree.path().join("cache");
        let (_, loaded) = load(&engine, EMPTY_COMPONENT, Some(&dir)).unwrap();
        assert!(!loaded, "first load compiles");
        let (_, loaded) = load(&engine, EMPTY_COMPONENT, Some(&dir)).unwrap();
        assert!(loaded, "second load hits");
        let [entry] = entries(&dir).try_into().unwrap();
        let good = std::fs::read(&entry).unwrap();

        // One flipped bit in the middle (the code, past wasmtime's header check), a truncated
        // file, garbage: each is compiled again, not loaded, and the entry is rewritten.
        let mut flipped = good.clone();
        flipped[good.len() / 2] ^= 0x10;
        for damaged in [
            flipped,
            good[..good.len() / 3].to_vec(),
            b"nonsense".to_vec(),
        ] {
            std::fs::write(&entry, &damaged).unwrap();
            let (_, loaded) = load(&engine, EMPTY_COMPONENT, Some(&dir)).unwrap();
            assert!(!loaded, "a damaged entry must not be loaded");
            assert_eq!(std::fs::read(&entry).unwrap(), good, "rewritten");
        }
        let (_, loaded) = load(&engine, EMPTY_COMPONENT, Some(&dir)).unwrap();
        assert!(loaded);
    }

    #[test]
    fn a_cache_folder_open_to_others_is_neither_read_nor_written() {
        let engine = engine();
        let tree = tempfile::tempdir().unwrap();
        let dir = tree.path().join("cache");
        load(&engine, EMPTY_COMPONENT, Some(&dir)).unwrap();
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700,
            "created private"
        );
        let [entry] = entries(&dir).try_into().unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o770)).unwrap();
        let (_, loaded) = load(&engine, EMPTY_COMPONENT, Some(&dir)).unwrap();
        assert!(
            !loaded,
            "an entry in a group-writable folder is not trusted"
        );

        // A link to a private folder is refused too: what it points at can change.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = tree.path().join("linked-cache");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let (_, loaded) = load(&engine, EMPTY_COMPONENT, Some(&link)).unwrap();
        assert!(!loaded);

        // An entry others may write is not loaded even in a private folder.
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o666)).unwrap();
        let (_, loaded) = load(&engine, EMPTY_COMPONENT, Some(&dir)).unwrap();
        assert!(!loaded);
        let (_, loaded) = load(&engine, EMPTY_COMPONENT, Some(&dir)).unwrap();
        assert!(loaded, "the rewritten entry is 0600 again");
    }

    #[test]
    fn the_bundled_job_types_load_from_the_build_without_a_compile() {
        let engine = engine();
        assert_eq!(
            PRECOMPILED.len(),
            BUNDLED.len(),
            "build.rs precompiled every bundled job type"
        );
        assert_eq!(
            engine_hash(&engine),
            PRECOMPILED_ENGINE_HASH,
            "same engine settings"
        );
        for (package, wasm) in BUNDLED {
            let component = precompiled(&engine, wasm).expect(package);
            if super::super::code_memory::IN_PLACE {
                let (_, code) = PRECOMPILED.iter().find(|(p, _)| p == package).unwrap();
                assert_eq!(
                    component.image_range().start,
                    code.as_ptr(),
                    "{package} runs from the executable's pages, not a copy"
                );
            }
            // Without any cache folder: nothing compiled.
            let (_, loaded) = load(&engine, wasm, None).unwrap();
            assert!(loaded, "{package}");
        }
        // Other bytes (a changed component) are not matched to the build's code.
        let mut changed = BUNDLED[0].1.to_vec();
        changed.push(0);
        assert!(precompiled(&engine, &changed).is_none());
    }

    /// An engine without the worker's code memory (same settings, so the same compatibility
    /// hash) still loads the build's code, from a copy.
    #[test]
    fn the_bundled_job_types_load_copied_into_a_plain_engine() {
        let config = super::super::engine_config::config(super::super::engine::TARGET).unwrap();
        let engine = Engine::new(&config).unwrap();
        assert_eq!(engine_hash(&engine), PRECOMPILED_ENGINE_HASH);
        for (package, wasm) in BUNDLED {
            let component = precompiled(&engine, wasm).expect(package);
            let (_, code) = PRECOMPILED.iter().find(|(p, _)| p == package).unwrap();
            assert_ne!(component.image_range().start, code.as_ptr(), "{package}");
        }
    }
}
