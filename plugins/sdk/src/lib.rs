//! The guest SDK for BlobHub Worker job types (`blobhub:worker@0.2.0`, world `job-type`).
//!
//! A job type implements [`JobType`] and exports it with [`export_job_type!`]:
//!
//! ```ignore
//! use blobhub_worker_sdk::{self as sdk, JobType, job::{Descriptor, Outcome, Section, SectionCheck}};
//!
//! struct Echo;
//! impl JobType for Echo {
//!     fn describe() -> Descriptor { /* name, version, summary, capabilities */ }
//!     fn validate(sections: Vec<Section>) -> Vec<SectionCheck> { /* coded diagnostics */ }
//!     async fn run(section: Section) -> Outcome {
//!         let session = sdk::session::Session;
//!         let info = session.get().await;
//!         // ... spawn tasks with sdk::spawn, wait with sdk::shutdown(), sdk::sleep(...)
//!     }
//! }
//! sdk::export_job_type!(Echo);
//! ```
//!
//! `run` is driven by a single-threaded executor ([`block_on`]) that waits on every pending
//! host handle at once with `wasi:io/poll.poll`, so many tasks (one per thread of a session,
//! say) progress side by side inside the one instance the host gives each section.

pub mod executor;
pub mod files;
pub mod follow;
pub mod session;
pub mod wait;

/// The raw bindings of `wit/` (world `job-type`), for anything the helpers do not cover.
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "job-type",
        pub_export_macro: true,
        export_macro_name: "__export_job_type_raw",
        default_bindings_module: "::blobhub_worker_sdk::bindings",
        generate_all,
    });
}

pub use bindings::blobhub::worker::{
    feed, held_waits, log, process, slots, state, status, types, worker,
};
pub use executor::{JoinHandle, block_on, spawn};
pub use follow::Feed;
pub use serde_json;
pub use wait::{
    Either, acquire_slot, next_batch, next_output, pid_if_started, race, reply, shutdown, sleep,
    started, wait_for,
};

/// The exported interface's types: `Descriptor`, `Capability`, `Section`, `SessionTarget`,
/// `SectionCheck`, `Outcome`, `Diagnostic`, `Severity`.
pub mod job {
    pub use crate::bindings::blobhub::worker::types::{
        Diagnostic, Section, SessionTarget, Severity,
    };
    pub use crate::bindings::exports::blobhub::worker::job::{
        Capability, Descriptor, Outcome, SectionCheck,
    };
}

/// The WIT package version this SDK was built against (the `package` line of `wit/worker.wit`).
/// The host reads it from the stamp below and refuses a component of a version it does not
/// support (`JOB_TYPE_WIT_UNSUPPORTED`); `blobhub-worker plugins` lists the supported ones.
pub const WIT_VERSION: &str = "0.2.0";

/// [`WIT_VERSION`], stamped into every component built with this SDK as the custom section
/// `blobhub:worker-api-version`. The host reads it from the bytes before it compiles or caches
/// anything, so a component of another version is refused with a clear code even when it could
/// not be linked at all.
#[unsafe(link_section = "blobhub:worker-api-version")]
#[used]
#[doc(hidden)]
pub static WIT_VERSION_STAMP: [u8; WIT_VERSION.len()] = stamp();

const fn stamp<const N: usize>() -> [u8; N] {
    let bytes = WIT_VERSION.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = bytes[i];
        i += 1;
    }
    out
}

/// What a job type implements. `describe` and `validate` must not call imports (the host calls
/// them before any section runs); `run` is the section's whole life.
pub trait JobType {
    fn describe() -> job::Descriptor;
    fn validate(sections: Vec<job::Section>) -> Vec<job::SectionCheck>;
    fn run(section: job::Section) -> impl Future<Output = job::Outcome>;
}

/// Exports a [`JobType`] as the component's `blobhub:worker/job` interface. `run` is driven by
/// [`block_on`].
#[macro_export]
macro_rules! export_job_type {
    ($ty:ty) => {
        #[doc(hidden)]
        pub struct __BlobhubJobTypeExport;
        impl $crate::bindings::exports::blobhub::worker::job::Guest for __BlobhubJobTypeExport {
            fn describe() -> $crate::job::Descriptor {
                <$ty as $crate::JobType>::describe()
            }
            fn validate(sections: ::std::vec::Vec<$crate::job::Section>) -> ::std::vec::Vec<$crate::job::SectionCheck> {
                <$ty as $crate::JobType>::validate(sections)
            }
            fn run(section: $crate::job::Section) -> $crate::job::Outcome {
                $crate::block_on(<$ty as $crate::JobType>::run(section))
            }
        }
        $crate::bindings::__export_job_type_raw!(__BlobhubJobTypeExport with_types_in $crate::bindings);
    };
}

/// Emit a structured log event (tagged by the host with the section, and `thread` when given).
pub fn log_event(level: log::Level, event: &str, thread: Option<&str>, fields: &serde_json::Value) {
    let fields = if fields.is_null() {
        String::new()
    } else {
        fields.to_string()
    };
    log::emit(level, event, thread, &fields);
}

/// An error diagnostic for `validate`: the section cannot run.
pub fn diagnostic(
    code: &str,
    message: impl Into<String>,
    field: Option<String>,
) -> job::Diagnostic {
    job::Diagnostic {
        code: code.to_owned(),
        message: message.into(),
        field,
        severity: job::Severity::Error,
    }
}

/// A warning for `validate`: shown to the operator by `config check` and `start`; the section
/// still runs.
pub fn warning(code: &str, message: impl Into<String>, field: Option<String>) -> job::Diagnostic {
    job::Diagnostic {
        severity: job::Severity::Warning,
        ..diagnostic(code, message, field)
    }
}

#[cfg(test)]
mod tests {
    /// The stamp must say what the bindings were generated from: a stale constant would make the
    /// host dispatch a component to the wrong version's bindings.
    #[test]
    fn wit_version_is_the_package_version_of_wit() {
        let wit = include_str!("../../../wit/worker.wit");
        let package = wit
            .lines()
            .find_map(|l| l.trim().strip_prefix("package blobhub:worker@"))
            .and_then(|l| l.strip_suffix(';'))
            .expect("a package line");
        assert_eq!(package, super::WIT_VERSION);
    }
}
