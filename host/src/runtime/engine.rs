//! The one wasmtime engine and linker of the worker.
//!
//! - Component model, sync ABI: `concurrency_support(false)` (component-model async is unfinished
//!   in wasmtime 48 and makes every call 2-5x slower; shared/spec/wasm-runtime.md §5d).
//! - Epoch interruption with a 10 ms ticker thread. Every tick a running guest yields to tokio
//!   (so a busy guest cannot starve other sections) and its [`BusyMeter`] decides whether it has
//!   run too long without returning to the host (then it traps: `JOB_TYPE_UNRESPONSIVE`). The
//!   ticker holds a weak engine handle and ends with the engine.

use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Config, Engine};

use super::bindings::blobhub::worker as wit;
use super::capabilities::SectionHost;

/// The epoch tick.
pub const TICK: Duration = Duration::from_millis(10);

/// An engine configured for job types, with its epoch ticker running.
pub fn new_engine() -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .concurrency_support(false)
        // A small fiber stack per in-flight call; job types have shallow host-call stacks.
        .max_wasm_stack(512 * 1024);
    let engine = Engine::new(&config)?;
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
            }
        })
        .map_err(|e| wasmtime::format_err!("cannot start the epoch ticker: {e}"))?;
    Ok(engine)
}

/// The linker: WASI p2 (for std: the preopened state folder, stderr, clocks, poll) and our
/// interfaces.
pub fn new_linker(engine: &Engine) -> wasmtime::Result<Linker<SectionHost>> {
    let mut linker = Linker::<SectionHost>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    type Data = wasmtime::component::HasSelf<SectionHost>;
    wit::types::add_to_linker::<SectionHost, Data>(&mut linker, same)?;
    wit::worker::add_to_linker::<SectionHost, Data>(&mut linker, same)?;
    wit::session::add_to_linker::<SectionHost, Data>(&mut linker, same)?;
    wit::feed::add_to_linker::<SectionHost, Data>(&mut linker, same)?;
    wit::process::add_to_linker::<SectionHost, Data>(&mut linker, same)?;
    wit::state::add_to_linker::<SectionHost, Data>(&mut linker, same)?;
    wit::slots::add_to_linker::<SectionHost, Data>(&mut linker, same)?;
    wit::status::add_to_linker::<SectionHost, Data>(&mut linker, same)?;
    wit::log::add_to_linker::<SectionHost, Data>(&mut linker, same)?;
    Ok(linker)
}

impl wit::types::Host for SectionHost {}

fn same(h: &mut SectionHost) -> &mut SectionHost {
    h
}
