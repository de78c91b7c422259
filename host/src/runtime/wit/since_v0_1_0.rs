//! Host bindings of the frozen `wit/since_v0.1.0/` (`blobhub:worker@0.1.0`).
//!
//! Components built against 0.1.0 keep loading: their imports are this module's, each delegating
//! to the implementation of the newest version ([`super::latest`]) with conversions of the
//! records and variants, and their exports are called through [`super::JobInstance`].
//!
//! Zed maps the interfaces that did not change to the newest generated ones with bindgen's
//! `with`. That works for its unversioned packages; ours carry a version, and the remapped
//! interface's `add_to_linker` registers it under the newest version's instance name
//! (`blobhub:worker/session@0.2.0`), which a 0.1.0 import does not match (wasmtime's semver
//! matching joins `0.1.x` versions only). So every interface is generated here, and only the
//! resources (host state) are shared with the newest version.

use wasmtime::component::Resource;
use wasmtime_wasi::p2::DynPollable;

use super::latest;
use crate::runtime::capabilities::feed::SubscriptionHandle;
use crate::runtime::capabilities::process::ChildHandle;
use crate::runtime::capabilities::session::ReplyHandle;
use crate::runtime::capabilities::slots::{SlotHandle, WaiterHandle};
use crate::runtime::store::SectionHost;

wasmtime::component::bindgen!({
    path: "../wit/since_v0.1.0",
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

/// This version, as its package names it.
pub const VERSION: &str = "0.1.0";

use blobhub::worker as old;
use exports::blobhub::worker::job as old_job;
use latest::blobhub::worker as new;
use latest::job as new_job;

/// Add this version's `blobhub:worker` imports to `linker`.
pub fn add_to_linker(
    linker: &mut wasmtime::component::Linker<SectionHost>,
) -> wasmtime::Result<()> {
    type Data = wasmtime::component::HasSelf<SectionHost>;
    fn same(h: &mut SectionHost) -> &mut SectionHost {
        h
    }
    old::types::add_to_linker::<SectionHost, Data>(linker, same)?;
    old::worker::add_to_linker::<SectionHost, Data>(linker, same)?;
    old::session::add_to_linker::<SectionHost, Data>(linker, same)?;
    old::feed::add_to_linker::<SectionHost, Data>(linker, same)?;
    old::process::add_to_linker::<SectionHost, Data>(linker, same)?;
    old::state::add_to_linker::<SectionHost, Data>(linker, same)?;
    old::slots::add_to_linker::<SectionHost, Data>(linker, same)?;
    old::status::add_to_linker::<SectionHost, Data>(linker, same)?;
    old::log::add_to_linker::<SectionHost, Data>(linker, same)?;
    Ok(())
}

// Conversions between the two versions' generated types. `same_record!` and `same_variant!` are
// for types whose shape did not change: a field or case added to one side is a compile error
// here, which is the point.

macro_rules! same_record {
    ($from:path => $to:path { $($field:ident),* $(,)? }) => {
        impl From<$from> for $to {
            fn from(v: $from) -> Self {
                Self { $($field: v.$field.into()),* }
            }
        }
    };
}

macro_rules! same_variant {
    ($from:ident => $to:ident { $($unit:ident),* ; $($case:ident),* $(,)? }) => {
        impl From<$from> for $to {
            fn from(v: $from) -> Self {
                match v {
                    $($from::$unit => $to::$unit,)*
                    $($from::$case(x) => $to::$case(x.into()),)*
                }
            }
        }
    };
}

// Imports: what the guest sends, old to new.
use new::log::Level as NewLevel;
use new::process::SpawnRequest as NewSpawnRequest;
use new::session::Page as NewPage;
use new::status::ThreadRow as NewThreadRow;
use old::log::Level as OldLevel;
use old::process::SpawnRequest as OldSpawnRequest;
use old::session::Page as OldPage;
use old::status::ThreadRow as OldThreadRow;

same_record!(OldPage => NewPage { ascending, created_since, cursor, limit });
same_record!(OldSpawnRequest => NewSpawnRequest { program, args, cwd, env });
same_record!(OldThreadRow => NewThreadRow {
    thread, state, agent, session_id, detail, last_event, prompt, error
});
same_variant!(OldLevel => NewLevel { Debug, Info, Warning, Error; });

// Imports: what the host answers, new to old.
use new::feed::Batch as NewBatch;
use new::process::ExitStatus as NewExitStatus;
use new::process::Output as NewOutput;
use new::process::SpawnError as NewSpawnError;
use new::session::ApiError as NewApiError;
use new::session::CommandFailure as NewCommandFailure;
use new::worker::WorkerIdentity as NewWorkerIdentity;
use old::feed::Batch as OldBatch;
use old::process::ExitStatus as OldExitStatus;
use old::process::Output as OldOutput;
use old::process::SpawnError as OldSpawnError;
use old::session::ApiError as OldApiError;
use old::session::CommandFailure as OldCommandFailure;
use old::worker::WorkerIdentity as OldWorkerIdentity;

same_record!(NewCommandFailure => OldCommandFailure { status, error, message });
same_variant!(NewApiError => OldApiError {
    AuthInvalid; RateLimited, Transient, Network, CommandFailed, Refused
});
same_record!(NewBatch => OldBatch { events, cursor });
same_record!(NewExitStatus => OldExitStatus { code, signal });
same_variant!(NewOutput => OldOutput { ; Stdout, Stderr, Exited });
same_variant!(NewSpawnError => OldSpawnError {
    ; NotGranted, NotFound, BadDirectory, BadEnvironment, Failed
});
same_record!(NewWorkerIdentity => OldWorkerIdentity { user_id, instance_id, version, started_at });

// Exports: the host's section to the guest, the guest's answers back.
use new::types::Diagnostic as NewDiagnostic;
use new::types::Section as NewSection;
use new_job::Capability as NewCapability;
use new_job::Descriptor as NewDescriptor;
use new_job::Outcome as NewOutcome;
use new_job::SectionCheck as NewSectionCheck;
use old::types::Diagnostic as OldDiagnostic;
use old::types::Section as OldSection;
use old_job::Capability as OldCapability;
use old_job::Descriptor as OldDescriptor;
use old_job::Outcome as OldOutcome;
use old_job::SectionCheck as OldSectionCheck;

/// 0.1.0 has no session target: its job types read `settings.session` themselves.
impl From<&NewSection> for OldSection {
    fn from(s: &NewSection) -> Self {
        OldSection {
            index: s.index,
            name: s.name.clone(),
            job_type: s.job_type.clone(),
            settings: s.settings.clone(),
            worker_config: s.worker_config.clone(),
        }
    }
}

/// 0.1.0 diagnostics have no severity: each one refuses its section.
impl From<OldDiagnostic> for NewDiagnostic {
    fn from(d: OldDiagnostic) -> Self {
        NewDiagnostic {
            code: d.code,
            message: d.message,
            field: d.field,
            severity: new::types::Severity::Error,
        }
    }
}

same_variant!(OldCapability => NewCapability { Session, Agents; Spawn });
impl From<OldDescriptor> for NewDescriptor {
    fn from(d: OldDescriptor) -> Self {
        NewDescriptor {
            name: d.name,
            version: d.version,
            summary: d.summary,
            capabilities: d.capabilities.into_iter().map(Into::into).collect(),
        }
    }
}
same_record!(OldOutcome => NewOutcome { code, message });

impl From<OldSectionCheck> for NewSectionCheck {
    fn from(c: OldSectionCheck) -> Self {
        NewSectionCheck {
            index: c.index,
            state_key: c.state_key,
            diagnostics: c.diagnostics.into_iter().map(Into::into).collect(),
        }
    }
}

// The delegating imports.

impl old::types::Host for SectionHost {}

impl old::worker::Host for SectionHost {
    fn identity(&mut self) -> wasmtime::Result<OldWorkerIdentity> {
        new::worker::Host::identity(self).map(Into::into)
    }
    fn now_utc(&mut self) -> wasmtime::Result<String> {
        new::worker::Host::now_utc(self)
    }
    fn new_ulid(&mut self) -> wasmtime::Result<String> {
        new::worker::Host::new_ulid(self)
    }
    fn shutdown_signal(&mut self) -> wasmtime::Result<Resource<DynPollable>> {
        new::worker::Host::shutdown_signal(self)
    }
    fn is_shutting_down(&mut self) -> wasmtime::Result<bool> {
        new::worker::Host::is_shutting_down(self)
    }
}

impl old::session::Host for SectionHost {
    fn get_session(&mut self) -> wasmtime::Result<Resource<ReplyHandle>> {
        new::session::Host::get_session(self)
    }
    fn list_objects(
        &mut self,
        prefix: Option<String>,
        cursor: Option<String>,
        limit: Option<u32>,
    ) -> wasmtime::Result<Resource<ReplyHandle>> {
        new::session::Host::list_objects(self, prefix, cursor, limit)
    }
    fn download_object(&mut self, alias: String) -> wasmtime::Result<Resource<ReplyHandle>> {
        new::session::Host::download_object(self, alias)
    }
    fn upload_object(
        &mut self,
        alias: String,
        value: String,
    ) -> wasmtime::Result<Resource<ReplyHandle>> {
        new::session::Host::upload_object(self, alias, value)
    }
    fn delete_object(&mut self, alias: String) -> wasmtime::Result<Resource<ReplyHandle>> {
        new::session::Host::delete_object(self, alias)
    }
    fn post_item(
        &mut self,
        alias: String,
        content: String,
        metadata: Option<String>,
    ) -> wasmtime::Result<Resource<ReplyHandle>> {
        new::session::Host::post_item(self, alias, content, metadata)
    }
    fn list_items(
        &mut self,
        alias: String,
        page: OldPage,
    ) -> wasmtime::Result<Resource<ReplyHandle>> {
        new::session::Host::list_items(self, alias, page.into())
    }
    fn get_item(
        &mut self,
        alias: String,
        item_id: String,
    ) -> wasmtime::Result<Resource<ReplyHandle>> {
        new::session::Host::get_item(self, alias, item_id)
    }
    fn list_events(&mut self, page: OldPage) -> wasmtime::Result<Resource<ReplyHandle>> {
        new::session::Host::list_events(self, page.into())
    }
}

impl old::session::HostReply for SectionHost {
    fn subscribe(
        &mut self,
        reply: Resource<ReplyHandle>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        new::session::HostReply::subscribe(self, reply)
    }
    fn take(
        &mut self,
        reply: Resource<ReplyHandle>,
    ) -> wasmtime::Result<Option<Result<String, OldApiError>>> {
        let taken = new::session::HostReply::take(self, reply)?;
        Ok(taken.map(|r| r.map_err(Into::into)))
    }
    fn drop(&mut self, reply: Resource<ReplyHandle>) -> wasmtime::Result<()> {
        new::session::HostReply::drop(self, reply)
    }
}

impl old::feed::Host for SectionHost {
    fn follow(&mut self, cursor: Option<String>) -> wasmtime::Result<Resource<SubscriptionHandle>> {
        new::feed::Host::follow(self, cursor)
    }
}

impl old::feed::HostSubscription for SectionHost {
    fn subscribe(
        &mut self,
        sub: Resource<SubscriptionHandle>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        new::feed::HostSubscription::subscribe(self, sub)
    }
    fn next(
        &mut self,
        sub: Resource<SubscriptionHandle>,
    ) -> wasmtime::Result<Option<Result<OldBatch, OldApiError>>> {
        let next = new::feed::HostSubscription::next(self, sub)?;
        Ok(next.map(|r| r.map(Into::into).map_err(Into::into)))
    }
    fn set_active(
        &mut self,
        sub: Resource<SubscriptionHandle>,
        active: bool,
    ) -> wasmtime::Result<()> {
        new::feed::HostSubscription::set_active(self, sub, active)
    }
    fn drop(&mut self, sub: Resource<SubscriptionHandle>) -> wasmtime::Result<()> {
        new::feed::HostSubscription::drop(self, sub)
    }
}

impl old::process::Host for SectionHost {
    fn spawn(
        &mut self,
        request: OldSpawnRequest,
    ) -> wasmtime::Result<Result<Resource<ChildHandle>, OldSpawnError>> {
        let spawned = new::process::Host::spawn(self, request.into())?;
        Ok(spawned.map_err(Into::into))
    }
    fn resolve(&mut self, program: String) -> wasmtime::Result<Result<String, OldSpawnError>> {
        let resolved = new::process::Host::resolve(self, program)?;
        Ok(resolved.map_err(Into::into))
    }
}

impl old::process::HostChild for SectionHost {
    fn pid(&mut self, child: Resource<ChildHandle>) -> wasmtime::Result<u32> {
        new::process::HostChild::pid(self, child)
    }
    fn write_stdin(
        &mut self,
        child: Resource<ChildHandle>,
        data: String,
    ) -> wasmtime::Result<Result<(), String>> {
        new::process::HostChild::write_stdin(self, child, data)
    }
    fn close_stdin(&mut self, child: Resource<ChildHandle>) -> wasmtime::Result<()> {
        new::process::HostChild::close_stdin(self, child)
    }
    fn subscribe(
        &mut self,
        child: Resource<ChildHandle>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        new::process::HostChild::subscribe(self, child)
    }
    fn next_output(&mut self, child: Resource<ChildHandle>) -> wasmtime::Result<Option<OldOutput>> {
        new::process::HostChild::next_output(self, child).map(|o| o.map(Into::into))
    }
    fn terminate(&mut self, child: Resource<ChildHandle>, grace_ms: u32) -> wasmtime::Result<()> {
        new::process::HostChild::terminate(self, child, grace_ms)
    }
    fn drop(&mut self, child: Resource<ChildHandle>) -> wasmtime::Result<()> {
        new::process::HostChild::drop(self, child)
    }
}

impl old::state::Host for SectionHost {
    fn write_atomic(
        &mut self,
        path: String,
        contents: Vec<u8>,
    ) -> wasmtime::Result<Result<(), String>> {
        new::state::Host::write_atomic(self, path, contents)
    }
    fn append_line(&mut self, path: String, line: String) -> wasmtime::Result<Result<(), String>> {
        new::state::Host::append_line(self, path, line)
    }
}

impl old::slots::Host for SectionHost {
    fn try_acquire(&mut self) -> wasmtime::Result<Option<Resource<SlotHandle>>> {
        new::slots::Host::try_acquire(self)
    }
    fn acquire(&mut self) -> wasmtime::Result<Resource<WaiterHandle>> {
        new::slots::Host::acquire(self)
    }
    fn usage(&mut self) -> wasmtime::Result<(u32, u32)> {
        new::slots::Host::usage(self)
    }
}

impl old::slots::HostWaiter for SectionHost {
    fn subscribe(
        &mut self,
        waiter: Resource<WaiterHandle>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        new::slots::HostWaiter::subscribe(self, waiter)
    }
    fn take(
        &mut self,
        waiter: Resource<WaiterHandle>,
    ) -> wasmtime::Result<Option<Resource<SlotHandle>>> {
        new::slots::HostWaiter::take(self, waiter)
    }
    fn drop(&mut self, waiter: Resource<WaiterHandle>) -> wasmtime::Result<()> {
        new::slots::HostWaiter::drop(self, waiter)
    }
}

impl old::slots::HostSlot for SectionHost {
    fn drop(&mut self, slot: Resource<SlotHandle>) -> wasmtime::Result<()> {
        new::slots::HostSlot::drop(self, slot)
    }
}

impl old::status::Host for SectionHost {
    fn set_section(&mut self, state: String, detail: String) -> wasmtime::Result<()> {
        new::status::Host::set_section(self, state, detail)
    }
    fn set_thread(&mut self, row: OldThreadRow) -> wasmtime::Result<()> {
        new::status::Host::set_thread(self, row.into())
    }
    fn remove_thread(&mut self, thread: String) -> wasmtime::Result<()> {
        new::status::Host::remove_thread(self, thread)
    }
}

impl old::log::Host for SectionHost {
    fn emit(
        &mut self,
        level: OldLevel,
        event: String,
        thread: Option<String>,
        fields: String,
    ) -> wasmtime::Result<()> {
        new::log::Host::emit(self, level.into(), event, thread, fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_0_1_0_job_type_sees_its_section_without_the_target_and_only_refuses() {
        let section = NewSection {
            index: 3,
            name: "n".into(),
            job_type: "j".into(),
            target: Some(new::types::SessionTarget {
                org_id: "o".into(),
                blob_id: "b".into(),
                revision_id: "r".into(),
                session: "s".into(),
            }),
            settings: r#"{"session":{"session_id":"s"}}"#.into(),
            worker_config: "{}".into(),
        };
        let old = OldSection::from(&section);
        assert_eq!(
            (old.index, old.settings.as_str(), old.worker_config.as_str()),
            (3, section.settings.as_str(), "{}")
        );
        let check = NewSectionCheck::from(OldSectionCheck {
            index: 3,
            state_key: None,
            diagnostics: vec![OldDiagnostic {
                code: "OWN_CODE".into(),
                message: "m".into(),
                field: None,
            }],
        });
        assert_eq!(check.diagnostics[0].code, "OWN_CODE");
        assert!(matches!(
            check.diagnostics[0].severity,
            new::types::Severity::Error
        ));
    }

    #[test]
    fn failures_reach_a_0_1_0_guest_unchanged() {
        let failure = NewApiError::CommandFailed(NewCommandFailure {
            status: 409,
            error: "session_not_open".into(),
            message: "closed".into(),
        });
        match OldApiError::from(failure) {
            OldApiError::CommandFailed(f) => {
                assert_eq!((f.status, f.error.as_str()), (409, "session_not_open"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            OldOutput::from(NewOutput::Exited(NewExitStatus {
                code: Some(2),
                signal: None
            })),
            OldOutput::Exited(OldExitStatus {
                code: Some(2),
                signal: None
            })
        ));
    }
}
