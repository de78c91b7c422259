//! The component: `describe`, `validate` and `run` over the `blobhub:worker` imports.

mod attach;
mod attempt;
mod ctx;
mod files;
mod gate;
mod section;
mod store;
mod sync;
mod thread;
mod turn;
mod warm;

use blobhub_worker_sdk::serde_json::Value;
use blobhub_worker_sdk::{self as sdk, JobType, job};

use crate::sections;

struct Harness;

impl JobType for Harness {
    fn describe() -> job::Descriptor {
        job::Descriptor {
            name: "session_agent_harness".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            summary: "Hands session threads to coding agents and relays both ways".into(),
            capabilities: vec![job::Capability::Session, job::Capability::Agents],
        }
    }

    fn validate(sections: Vec<job::Section>) -> Vec<job::SectionCheck> {
        let input: Vec<sections::Input> = sections
            .iter()
            .map(|s| sections::Input {
                index: s.index,
                target: s.target.as_ref().map(|t| {
                    [
                        t.org_id.clone(),
                        t.blob_id.clone(),
                        t.revision_id.clone(),
                        t.session.clone(),
                    ]
                }),
                settings: sdk::serde_json::from_str(&s.settings).unwrap_or(Value::Null),
            })
            .collect();
        sections::validate(&input)
            .into_iter()
            .map(|c| job::SectionCheck {
                index: c.index,
                state_key: c.state_key,
                diagnostics: c
                    .problems
                    .into_iter()
                    .map(|p| {
                        if p.warning {
                            sdk::warning(p.code, p.message, p.field)
                        } else {
                            sdk::diagnostic(p.code, p.message, p.field)
                        }
                    })
                    .collect(),
            })
            .collect()
    }

    async fn run(section: job::Section) -> job::Outcome {
        section::run(section).await
    }
}

sdk::export_job_type!(Harness);
