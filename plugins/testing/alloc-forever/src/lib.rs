//! Fixture: `run` allocates without bound. The host must end it with `JOB_TYPE_OUT_OF_MEMORY`.

use blobhub_worker_sdk::{self as sdk, JobType, job};

include!("../../common.rs");

struct Alloc;

impl JobType for Alloc {
    fn describe() -> job::Descriptor {
        job::Descriptor {
            name: "alloc_forever".into(),
            version: "0.1.0".into(),
            summary: "test fixture: allocates without bound".into(),
            capabilities: vec![],
        }
    }
    fn validate(sections: Vec<job::Section>) -> Vec<job::SectionCheck> {
        simple_validate(sections)
    }
    async fn run(_section: job::Section) -> job::Outcome {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![1u8; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    }
}

sdk::export_job_type!(Alloc);
