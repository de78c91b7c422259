//! `session_agent_harness`: the job type that hands BlobHub session threads to coding agents.
//!
//! The pure logic (classification, settings, prompts, truncation, cursors, item shapes, local
//! records, agent drivers) lives in plain modules that build and test on the host target; the
//! component itself (`guest`, wasm32 only) drives it through the `blobhub:worker` imports.
//! Behaviour and deviations from the reference: docs/session-agent-harness.md.

pub mod activity;
pub mod agent;
pub mod artifacts;
pub mod attachments;
pub mod backoff;
pub mod classify;
pub mod cursor;
pub mod grants;
pub mod items;
pub mod policy;
pub mod prompt;
pub mod records;
pub mod repeats;
pub mod resume;
pub mod scratch_alloc;
pub mod sections;
pub mod settings;
pub mod timestamp;
pub mod truncate;
pub mod worker_config;
pub mod worker_object;

#[cfg(target_arch = "wasm32")]
mod guest;

/// The component's allocator: libyaml's large buffers from one reused region (see the module).
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: scratch_alloc::ScratchAlloc<{ 128 * 1024 }> = scratch_alloc::ScratchAlloc::new();
