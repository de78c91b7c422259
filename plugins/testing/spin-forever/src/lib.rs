//! Fixture: `run` spins forever without calling the host. The host must end it with
//! `JOB_TYPE_UNRESPONSIVE` while other sections keep running.

use blobhub_worker_sdk::{self as sdk, JobType, job};

include!("../../common.rs");

struct Spin;

impl JobType for Spin {
    fn describe() -> job::Descriptor {
        job::Descriptor {
            name: "spin_forever".into(),
            version: "0.1.0".into(),
            summary: "test fixture: loops forever".into(),
            capabilities: vec![],
        }
    }
    fn validate(sections: Vec<job::Section>) -> Vec<job::SectionCheck> {
        simple_validate(sections)
    }
    async fn run(_section: job::Section) -> job::Outcome {
        let mut x: u64 = 0;
        loop {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }
}

sdk::export_job_type!(Spin);
