//! Host bindings of `wit/` (world `job-type`).
//!
//! Every blobhub import is synchronous: calls that wait hand back a resource with `subscribe`, and
//! the guest waits in `wasi:io/poll.poll` (implemented by wasmtime-wasi), so no import of ours ever
//! suspends the guest itself. Exports are called with `call_async` on a fiber so that `poll` can
//! suspend the instance without blocking a tokio worker.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "job-type",
    imports: { default: trappable },
    exports: { default: async },
    with: {
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        "blobhub:worker/session.reply": crate::runtime::capabilities::session::ReplyHandle,
        "blobhub:worker/feed.subscription": crate::runtime::capabilities::feed::SubscriptionHandle,
        "blobhub:worker/process.child": crate::runtime::capabilities::process::ChildHandle,
        "blobhub:worker/slots.slot": crate::runtime::capabilities::slots::SlotHandle,
        "blobhub:worker/slots.waiter": crate::runtime::capabilities::slots::WaiterHandle,
    },
});

pub use blobhub::worker::{feed, log, process, session, slots, state, status, types, worker};
pub use exports::blobhub::worker::job;
