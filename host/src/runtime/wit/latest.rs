//! Host bindings of the contract under development, `wit/` (`blobhub:worker@0.2.0`, world
//! `job-type`). The capabilities (`super::super::capabilities`) implement these imports; older
//! versions' imports delegate to them ([`super::since_v0_1_0`]).
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
        "blobhub:worker/held-waits.held-wait": crate::runtime::capabilities::held_waits::HeldWaitHandle,
    },
});

/// This version, as its package names it.
pub const VERSION: &str = "0.2.0";

pub use blobhub::worker::{
    feed, files, held_waits, log, process, session, slots, state, status, types, worker,
};
pub use exports::blobhub::worker::job;

/// Add this version's `blobhub:worker` imports to `linker`.
pub fn add_to_linker(
    linker: &mut wasmtime::component::Linker<crate::runtime::store::SectionHost>,
) -> wasmtime::Result<()> {
    use crate::runtime::store::SectionHost;
    type Data = wasmtime::component::HasSelf<SectionHost>;
    fn same(h: &mut SectionHost) -> &mut SectionHost {
        h
    }
    blobhub::worker::types::add_to_linker::<SectionHost, Data>(linker, same)?;
    blobhub::worker::worker::add_to_linker::<SectionHost, Data>(linker, same)?;
    blobhub::worker::session::add_to_linker::<SectionHost, Data>(linker, same)?;
    blobhub::worker::files::add_to_linker::<SectionHost, Data>(linker, same)?;
    blobhub::worker::feed::add_to_linker::<SectionHost, Data>(linker, same)?;
    blobhub::worker::process::add_to_linker::<SectionHost, Data>(linker, same)?;
    blobhub::worker::state::add_to_linker::<SectionHost, Data>(linker, same)?;
    blobhub::worker::slots::add_to_linker::<SectionHost, Data>(linker, same)?;
    blobhub::worker::held_waits::add_to_linker::<SectionHost, Data>(linker, same)?;
    blobhub::worker::status::add_to_linker::<SectionHost, Data>(linker, same)?;
    blobhub::worker::log::add_to_linker::<SectionHost, Data>(linker, same)?;
    Ok(())
}

impl types::Host for crate::runtime::store::SectionHost {}
