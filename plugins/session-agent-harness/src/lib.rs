//! Placeholder: the session_agent_harness job type is being written in this folder by its owner.
//! Until then it answers `describe`/`validate` and returns from `run` at shutdown.

use blobhub_worker_sdk::{self as sdk, JobType, job};

struct Harness;

impl JobType for Harness {
    fn describe() -> job::Descriptor {
        job::Descriptor {
            name: "session_agent_harness".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            summary: "Hands session threads to coding agents (claude, codex)".into(),
            capabilities: vec![job::Capability::Session, job::Capability::Agents],
        }
    }

    fn validate(sections: Vec<job::Section>) -> Vec<job::SectionCheck> {
        sections
            .into_iter()
            .map(|s| job::SectionCheck {
                index: s.index,
                state_key: Some(format!("s{}", s.index)),
                diagnostics: vec![],
            })
            .collect()
    }

    async fn run(_section: job::Section) -> job::Outcome {
        sdk::shutdown().await;
        job::Outcome {
            code: None,
            message: "shutdown".into(),
        }
    }
}

sdk::export_job_type!(Harness);
