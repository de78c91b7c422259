//! The `wasmtime::Config` of every engine that compiles job types, written once: the runtime's
//! engine ([`super::engine`]) and the build script's, which precompiles the bundled job types
//! (`host/build.rs` includes this file with `#[path]`), must be configured alike, or the code
//! the build embedded is refused at run time and the job type is compiled after all.
//!
//! This file is compiled twice (into the worker and into its build script), so it uses nothing
//! but wasmtime.

/// The engine settings of job types, compiling for `target` (a target triple: the build's
/// target in build.rs, the same triple, recorded by build.rs, at run time).
///
/// - Component model, sync ABI: `concurrency_support(false)` (component-model async is
///   unfinished in wasmtime 48 and makes every call 2-5x slower, as measured here).
/// - Epoch interruption (the runtime's ticker and compute budget rely on it).
/// - An explicit target: wasmtime then infers no CPU features of the machine it runs on, so code
///   compiled on the build machine (or cached on one host and read on another after the state
///   tree moved) uses only the baseline instruction set of the architecture and runs on every
///   CPU of it. Job types spend their time waiting on the host, not in SIMD-heavy loops, so
///   the newer instructions left unused cost them little.
pub fn config(target: &str) -> wasmtime::Result<wasmtime::Config> {
    let mut config = wasmtime::Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .concurrency_support(false)
        // A small fiber stack per in-flight call; job types have shallow host-call stacks.
        .max_wasm_stack(512 * 1024);
    config.target(target)?;
    Ok(config)
}
