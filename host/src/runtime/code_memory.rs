//! The bundled job types' compiled code runs where it lies in the executable, not from a copy.
//!
//! `Component::deserialize` copies its bytes into a fresh anonymous mapping and makes the copy's
//! code executable: for the bundled harness 2.9 MiB of memory resident for the life of the
//! process, though an idle worker runs a small part of it (docs/benchmarks.md, "Scale and idle
//! cost"). host/build.rs instead embeds each precompiled component in a page-aligned static of
//! its own, and [`load_in_place`] hands wasmtime those very bytes (`Component::deserialize_raw`).
//! Its code pages are then the executable's own file pages: only the ones touched are resident,
//! they are shared with every other worker process of the same executable, and the startup
//! release (`cli::memory`) can hand them back like the rest of the executable's code. What runs
//! is exactly what the build embedded, in a mapping nobody can write to.
//!
//! wasmtime makes the code of memory it does not own executable only through a
//! [`CustomCodeMemory`], which then serves every component of the engine: [`CodeMemory`] does what
//! wasmtime's own would (the text read + execute, page by page), except that code inside the
//! executable's statics is never made writable again (another engine of the process may run the
//! same pages). x86-64 Linux only: there a copy needs no instruction-cache maintenance, and
//! elsewhere the bundled code is copied as before ([`IN_PLACE`] false).

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
use std::sync::Arc;
use std::sync::Mutex;

use wasmtime::Engine;
use wasmtime::component::Component;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
use wasmtime::{Config, CustomCodeMemory};

/// Whether this build loads the bundled code in place.
pub const IN_PLACE: bool = cfg!(all(target_os = "linux", target_arch = "x86_64"));

/// Give `config` the code memory that [`load_in_place`] needs (a no-op where [`IN_PLACE`] is
/// false).
pub fn install(config: &mut wasmtime::Config) {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    install_linux(config);
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    let _ = config;
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn install_linux(config: &mut Config) {
    config.with_custom_code_memory(Some(Arc::new(CodeMemory { page: page_size() })));
}

/// Components loaded in place, by the address of their code, with the engine they belong to.
///
/// wasmtime registers loaded code process-wide by its address (to map a trapping instruction to
/// its module) and panics when the same address is registered twice, so a static is loaded once
/// and the component shared; kept for the life of the process, like the static it runs from.
static LOADED: Mutex<Vec<(usize, Component)>> = Mutex::new(Vec::new());

/// Load the precompiled component `code`, a static of the executable, without copying it. An
/// engine without [`install`]'s code memory refuses it, and so does this when the same code
/// is already loaded in place for another engine (an error, nothing is loaded: the caller
/// copies it instead).
///
/// # Safety
///
/// `code` must be the output of `Engine::precompile_component` (wasmtime checks the header and
/// the engine settings, not the machine code), and start on a page boundary.
pub unsafe fn load_in_place(engine: &Engine, code: &'static [u8]) -> wasmtime::Result<Component> {
    if !IN_PLACE {
        wasmtime::bail!("compiled code is not loaded in place on this platform");
    }
    let address = code.as_ptr() as usize;
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, component)) = loaded.iter().find(|(a, _)| *a == address) {
        if Engine::same(component.engine(), engine) {
            return Ok(component.clone());
        }
        wasmtime::bail!("this code is loaded in place for another engine");
    }
    // SAFETY: per this function's contract; the bytes are immutable and live as long as the
    // process, which `deserialize_raw` requires of memory it does not copy.
    let component = unsafe { Component::deserialize_raw(engine, std::ptr::NonNull::from(code)) }?;
    loaded.push((address, component.clone()));
    Ok(component)
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn page_size() -> usize {
    // SAFETY: sysconf only reads a system value.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

/// Whether `[ptr, ptr + len)` lies in one of the executable's precompiled statics.
#[cfg_attr(
    not(all(target_os = "linux", target_arch = "x86_64")),
    allow(dead_code)
)]
fn in_executable(ptr: *const u8, len: usize) -> bool {
    let (start, end) = (ptr as usize, (ptr as usize).saturating_add(len));
    super::loader::PRECOMPILED.iter().any(|(_, code)| {
        let (s, e) = (code.as_ptr() as usize, code.as_ptr() as usize + code.len());
        s <= start && end <= e
    })
}

/// The engine's code memory: see the module comment.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
struct CodeMemory {
    page: usize,
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
impl CodeMemory {
    fn protect(&self, ptr: *const u8, len: usize, prot: libc::c_int) -> wasmtime::Result<()> {
        if len == 0 {
            return Ok(());
        }
        // wasmtime aligns `ptr` to `required_alignment` (the text of a compiled artefact starts
        // on a page); the kernel rounds the length up to whole pages, as wasmtime's own does.
        // SAFETY: the range is the text of a code image wasmtime is publishing or unpublishing.
        let rc = unsafe { libc::mprotect(ptr.cast_mut().cast(), len, prot) };
        if rc != 0 {
            wasmtime::bail!(
                "mprotect of compiled code failed: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
impl CustomCodeMemory for CodeMemory {
    fn required_alignment(&self) -> usize {
        self.page
    }

    fn publish_executable(&self, ptr: *const u8, len: usize) -> wasmtime::Result<()> {
        // x86-64 keeps instruction and data caches coherent: no flush before executing.
        self.protect(ptr, len, libc::PROT_READ | libc::PROT_EXEC)
    }

    fn unpublish_executable(&self, ptr: *const u8, len: usize) -> wasmtime::Result<()> {
        if in_executable(ptr, len) {
            // Never writable: another component of the process may be running these pages.
            return Ok(());
        }
        self.protect(ptr, len, libc::PROT_READ | libc::PROT_WRITE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_precompiled_statics_are_in_the_executable() {
        let heap = Box::new([0u8; 64]);
        assert!(!in_executable(heap.as_ptr(), heap.len()));
        for (_, code) in super::super::loader::PRECOMPILED {
            assert_eq!(code.as_ptr() as usize % 65536, 0, "page-aligned");
            assert!(in_executable(code.as_ptr(), code.len()));
            assert!(!in_executable(code.as_ptr(), code.len() + 1));
        }
    }
}
