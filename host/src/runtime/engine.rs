//! The one wasmtime engine and linker of the worker.
//!
//! - The settings of [`super::engine_config`] (shared with the build script that precompiles the
//!   bundled job types): component model on the sync ABI, epoch interruption, baseline CPU.
//! - Epoch interruption with a 10 ms ticker thread. Every tick a running guest yields to tokio
//!   (so a busy guest cannot starve other sections) and its compute budget
//!   ([`super::budget`]) decides whether it has computed too much (then it traps:
//!   `JOB_TYPE_UNRESPONSIVE`). The ticker holds a weak engine handle and ends with the engine.
//! - The ticker only ticks while some guest is executing wasm ([`WasmActivity`]). An idle worker
//!   has every guest waiting in a host call, and a ticker waking 100 times a second for nobody
//!   was most of its idle CPU (docs/benchmarks.md).
//! - A tick ends a time slice that has lasted a whole [`TICK`]: the ticker, woken when wasm starts
//!   running, first sleeps a tick and increments the epoch only if wasm is still running then. A
//!   guest's short burst of work (reading an agent's line and posting it, handling a poll) is
//!   never interrupted by a tick that started with it.
//! - Entering and leaving wasm happens on every host call, dozens of times per line an agent
//!   writes, so the gauge costs an atomic add there, not a lock and a system call: the ticker is
//!   woken only when it is parked.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use wasmtime::Engine;
use wasmtime::component::Linker;

use super::store::SectionHost;

/// The epoch tick.
pub const TICK: Duration = Duration::from_millis(10);

/// The target triple the worker was built for (recorded by host/build.rs): the engine compiles
/// for it explicitly, see [`super::engine_config`].
pub const TARGET: &str = env!("BLOBHUB_ENGINE_TARGET");

/// An engine configured for job types, with its epoch ticker running.
pub fn new_engine() -> wasmtime::Result<Engine> {
    let mut config = super::engine_config::config(TARGET)?;
    // Code is made executable by the worker's own code memory, so that the bundled job types run
    // from the executable's pages (not a part of the settings the build must share).
    super::code_memory::install(&mut config);
    let engine = Engine::new(&config)?;
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            loop {
                RUNNING_WASM.wait_while_idle(LIVENESS_CHECK);
                std::thread::sleep(TICK);
                let Some(engine) = weak.upgrade() else { break };
                // A slice that ended within the tick is not interrupted; a store's deadline
                // passed while it was waiting would make it yield as soon as it runs again.
                if RUNNING_WASM.is_running() {
                    engine.increment_epoch();
                }
            }
        })
        .map_err(|e| wasmtime::format_err!("cannot start the epoch ticker: {e}"))?;
    Ok(engine)
}

/// How often a parked ticker wakes to see whether its engine still exists (so the thread ends
/// with the engine even when no guest ever runs again).
const LIVENESS_CHECK: Duration = Duration::from_secs(30);

/// How many stores of this process are executing wasm right now (not waiting in a host call).
static RUNNING_WASM: Gauge = Gauge::new();

/// A count with a condition variable, for the ticker to sleep on while it is zero.
///
/// The count is an atomic so that the call hook, which moves it on every host call, takes no
/// lock and makes no system call; only the first 0 → n change after the ticker parked locks the
/// mutex and notifies. `parked` and `count` are both sequentially consistent: either the adder
/// sees `parked` (and notifies once it has taken the lock, which the parking ticker holds from its
/// check until it waits), or the ticker's check, made after it set `parked`, sees the new count.
struct Gauge {
    count: AtomicUsize,
    parked: AtomicBool,
    lock: Mutex<()>,
    nonzero: Condvar,
}

impl Gauge {
    const fn new() -> Self {
        Self {
            count: AtomicUsize::new(0),
            parked: AtomicBool::new(false),
            lock: Mutex::new(()),
            nonzero: Condvar::new(),
        }
    }

    fn add(&self, n: usize) {
        // `swap`: only the first adder after the ticker parked notifies; until the woken ticker
        // runs, the host calls that follow would otherwise each notify again.
        if self.count.fetch_add(n, Ordering::SeqCst) == 0
            && self.parked.swap(false, Ordering::SeqCst)
        {
            // Taking the lock waits until the parking ticker is inside its wait (it holds the
            // lock from its check until then); notifying after letting go spares the woken
            // ticker a wait for the lock.
            drop(self.lock.lock().unwrap_or_else(|e| e.into_inner()));
            self.nonzero.notify_all();
        }
    }

    fn sub(&self, n: usize) {
        let _ = self
            .count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                Some(c.saturating_sub(n))
            });
    }

    fn is_running(&self) -> bool {
        self.count.load(Ordering::SeqCst) > 0
    }

    /// Blocks while the count is zero, at most `timeout`.
    fn wait_while_idle(&self, timeout: Duration) {
        let guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        // Parked again before every check, under the lock: a wake-up that finds the count back
        // at zero waits on, and the next adder must see it parked.
        let _ = self.nonzero.wait_timeout_while(guard, timeout, |_| {
            self.parked.store(true, Ordering::SeqCst);
            !self.is_running()
        });
        self.parked.store(false, Ordering::SeqCst);
    }
}

/// One store's share of [`RUNNING_WASM`], kept by the store's call hook: up when control enters
/// wasm (a call from the host, or a host call returning), down when it leaves. Dropping the store
/// gives back what is left, e.g. when a section is cancelled while its guest was computing.
#[derive(Debug, Default)]
pub struct WasmActivity {
    inside: usize,
}

impl WasmActivity {
    /// Follow one transition between host and wasm.
    pub fn on_call_hook(&mut self, hook: wasmtime::CallHook) {
        if hook.exiting_host() {
            self.inside += 1;
            RUNNING_WASM.add(1);
        } else if self.inside > 0 {
            self.inside -= 1;
            RUNNING_WASM.sub(1);
        }
    }
}

impl Drop for WasmActivity {
    fn drop(&mut self) {
        RUNNING_WASM.sub(self.inside);
    }
}

/// The linker: WASI p2 (for std: the preopened state folder, stderr, clocks, poll) and the
/// `blobhub:worker` imports of every supported version ([`super::wit`]): their names differ by
/// version, so one linker serves components of any of them.
pub fn new_linker(engine: &Engine) -> wasmtime::Result<Linker<SectionHost>> {
    let mut linker = Linker::<SectionHost>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    // Long waits on the guests' wake grid, over WASI's own clock.
    linker.allow_shadowing(true);
    super::guest_clock::add_to_linker(&mut linker)?;
    linker.allow_shadowing(false);
    super::wit::add_to_linker(&mut linker)?;
    refuse_links(&mut linker)?;
    Ok(linker)
}

/// The linker of `describe` and `validate` for `component`: WASI (std needs it for stderr,
/// clocks and random seeds), and every `blobhub:worker` function the component imports defined
/// as a trap. The contract says these exports call no import; this makes it so, whatever the
/// component does.
pub fn checks_linker(
    engine: &Engine,
    component: &wasmtime::component::Component,
) -> wasmtime::Result<Linker<SectionHost>> {
    use wasmtime::component::ResourceType;
    use wasmtime::component::types::ComponentItem;

    let mut linker = Linker::<SectionHost>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    refuse_links(&mut linker)?;
    let ty = component.component_type();
    for (name, import) in ty.imports(engine) {
        let ComponentItem::ComponentInstance(instance) = import.ty else {
            continue;
        };
        if !name.starts_with("blobhub:worker/") {
            continue;
        }
        let mut stubs = linker.instance(name)?;
        for (export, item) in instance.exports(engine) {
            match item.ty {
                ComponentItem::ComponentFunc(_) => {
                    let what = format!("{name}#{export}");
                    stubs.func_new(export, move |_, _, _, _| {
                        Err(wasmtime::format_err!(
                            "{IMPORT_REFUSED}: `{what}` was called from describe or validate, which may call no import"
                        ))
                    })?;
                }
                // `use wasi:io/poll.{pollable}` shows the WASI resource in our instances: it must
                // stay WASI's own type.
                ComponentItem::Resource(_) if export == "pollable" => {
                    stubs.resource(
                        export,
                        ResourceType::host::<wasmtime_wasi::p2::DynPollable>(),
                        |_, _| Ok(()),
                    )?;
                }
                ComponentItem::Resource(_) => {
                    stubs.resource(export, ResourceType::host::<()>(), |_, _| Ok(()))?;
                }
                _ => {}
            }
        }
    }
    Ok(linker)
}

/// The code of a describe or validate that called a `blobhub:worker` import.
pub const IMPORT_REFUSED: &str = "JOB_TYPE_IMPORT_REFUSED";

/// The WASI version whose filesystem interface `add_to_linker_async` defines (guests built
/// against any 0.2.x reach it through semver matching).
const WASI_FILESYSTEM: &str = "wasi:filesystem/types@0.2.12";

/// A job type may not create links in its state folder. WASI keeps the guest's own opens inside
/// the folder, but a relative link such as `up -> ../..` is allowed by WASI and would be a trap
/// for anything else that walks the folder: the host, an agent spawned there, the operator's
/// backup. So `symlink-at` and `link-at` answer `not-permitted` (hard links too: a name that
/// aliases another file breaks the host's accounting of the folder's size).
fn refuse_links(linker: &mut Linker<SectionHost>) -> wasmtime::Result<()> {
    use wasmtime::component::Resource;
    use wasmtime_wasi::filesystem::Descriptor;
    use wasmtime_wasi::p2::bindings::filesystem::types::{ErrorCode, PathFlags};

    linker.allow_shadowing(true);
    let mut fs = linker.instance(WASI_FILESYSTEM)?;
    fs.func_wrap(
        "[method]descriptor.symlink-at",
        |_, (_dir, _target, _name): (Resource<Descriptor>, String, String)| {
            Ok((Err::<(), _>(ErrorCode::NotPermitted),))
        },
    )?;
    fs.func_wrap(
        "[method]descriptor.link-at",
        |_,
         (_dir, _flags, _old, _new_dir, _new): (
            Resource<Descriptor>,
            PathFlags,
            String,
            Resource<Descriptor>,
            String,
        )| { Ok((Err::<(), _>(ErrorCode::NotPermitted),)) },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use wasmtime::CallHook;

    use super::*;

    #[test]
    fn a_store_is_inside_wasm_between_entering_and_leaving_it() {
        let mut activity = WasmActivity::default();
        activity.on_call_hook(CallHook::CallingWasm);
        assert_eq!(activity.inside, 1);
        // Waiting in a host call (e.g. wasi:io/poll) is not running wasm.
        activity.on_call_hook(CallHook::CallingHost);
        assert_eq!(activity.inside, 0);
        activity.on_call_hook(CallHook::ReturningFromHost);
        assert_eq!(activity.inside, 1);
        activity.on_call_hook(CallHook::ReturningFromWasm);
        assert_eq!(activity.inside, 0);
        // A stray exit never goes below zero.
        activity.on_call_hook(CallHook::ReturningFromWasm);
        assert_eq!(activity.inside, 0);
    }

    /// A fresh gauge and a thread waiting on it (at most 60 s); joining gives how long it waited.
    fn waiting_on_a_new_gauge() -> (Arc<Gauge>, std::thread::JoinHandle<Duration>) {
        let gauge = Arc::new(Gauge::new());
        let waiter = {
            let gauge = Arc::clone(&gauge);
            std::thread::spawn(move || {
                let start = Instant::now();
                gauge.wait_while_idle(Duration::from_secs(60));
                start.elapsed()
            })
        };
        (gauge, waiter)
    }

    #[test]
    fn a_waiter_that_finds_the_count_back_at_zero_is_woken_by_the_next_rise() {
        let (gauge, waiter) = waiting_on_a_new_gauge();
        // Rises and falls, some before the waiter runs, some after it parked: whichever it sees,
        // the last rise stays up, so the waiter must return long before its timeout.
        for _ in 0..1000 {
            gauge.add(1);
            gauge.sub(1);
        }
        gauge.add(1);
        assert!(waiter.join().unwrap() < Duration::from_secs(60));
    }

    #[test]
    fn the_gauge_wakes_a_waiter_when_it_leaves_zero() {
        let (gauge, waiter) = waiting_on_a_new_gauge();
        gauge.add(1);
        // Woken by the change, long before the timeout (joining is the synchronisation).
        assert!(waiter.join().unwrap() < Duration::from_secs(60));
        gauge.sub(1);
        let start = Instant::now();
        gauge.wait_while_idle(Duration::from_millis(1));
        assert!(
            start.elapsed() >= Duration::from_millis(1),
            "idle: waits out the timeout"
        );
    }
}
