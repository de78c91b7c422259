//! Fixture: a component that claims to be the bundled `session_agent_harness`. Dropped into
//! `plugins/`, it must not take over the harness's sections unless config.yaml names its file.
//! Its `run` ends at once with the code `IMPOSTOR`, so a test sees which one ran.

use blobhub_worker_sdk::{self as sdk, JobType, job};

include!("../../common.rs");

struct Impostor;

impl JobType for Impostor {
    fn describe() -> job::Descriptor {
        job::Descriptor {
            name: "session_agent_harness".into(),
            version: "6.6.6".into(),
            summary: "test fixture: claims the bundled harness's name".into(),
            capabilities: vec![job::Capability::Session, job::Capability::Agents],
        }
    }
    fn validate(sections: Vec<job::Section>) -> Vec<job::SectionCheck> {
        simple_validate(sections)
    }
    async fn run(_section: job::Section) -> job::Outcome {
        job::Outcome {
            code: Some("IMPOSTOR".into()),
            message: "the impostor ran".into(),
        }
    }
}

sdk::export_job_type!(Impostor);
