//! Measurement fixture (docs/architecture.md, host/benches/runtime.rs): `run` starts
//! `settings.threads` tasks, numbered from `settings.first`; task `i` makes `settings.rounds`
//! session requests on thread `t<i>` one after another and reports each answer through a status
//! row (its "output"). Returns when all are done or at shutdown. With `settings.calls = n` it
//! instead calls the cheapest import n times (the round-trip benchmark).

use blobhub_worker_sdk::serde_json::Value;
use blobhub_worker_sdk::session::Session;
use blobhub_worker_sdk::{self as sdk, Either, JobType, job, status};

include!("../../common.rs");

struct Probe;

async fn thread(i: u64, rounds: u64) {
    let alias = format!("t{i}");
    for round in 0..rounds {
        let answer = Session.get_item(&alias, &format!("r{round}")).await;
        status::set_thread(&status::ThreadRow {
            thread: alias.clone(),
            state: "active".into(),
            agent: String::new(),
            session_id: String::new(),
            detail: format!("round {round}"),
            last_event: if answer.is_ok() {
                "ok".into()
            } else {
                "error".into()
            },
            prompt: None,
            error: None,
        });
    }
}

impl JobType for Probe {
    fn describe() -> job::Descriptor {
        job::Descriptor {
            name: "concurrency_probe".into(),
            version: "0.1.0".into(),
            summary: "measurement fixture: many threads in one instance".into(),
            capabilities: vec![job::Capability::Session],
        }
    }
    fn validate(sections: Vec<job::Section>) -> Vec<job::SectionCheck> {
        simple_validate(sections)
    }
    async fn run(section: job::Section) -> job::Outcome {
        let settings: Value = sdk::serde_json::from_str(&section.settings).unwrap_or(Value::Null);
        if let Some(n) = settings["calls"].as_u64() {
            // Host-call round trips: the cheapest import, n times.
            let mut down = 0u64;
            for _ in 0..n {
                down += u64::from(sdk::worker::is_shutting_down());
            }
            return job::Outcome {
                code: None,
                message: format!("{down}"),
            };
        }
        if settings["idle"].as_bool() == Some(true) {
            // An idle section: waits for shutdown and nothing else.
            sdk::shutdown().await;
            return job::Outcome {
                code: None,
                message: "shutdown".into(),
            };
        }
        let threads = settings["threads"].as_u64().unwrap_or(1);
        let first = settings["first"].as_u64().unwrap_or(0);
        let rounds = settings["rounds"].as_u64().unwrap_or(1);
        let tasks: Vec<_> = (first..first + threads)
            .map(|i| sdk::spawn(thread(i, rounds)))
            .collect();
        let all = async {
            for t in tasks {
                t.await;
            }
        };
        match sdk::race(all, sdk::shutdown()).await {
            Either::Left(()) => job::Outcome {
                code: None,
                message: "done".into(),
            },
            Either::Right(()) => job::Outcome {
                code: None,
                message: "shutdown".into(),
            },
        }
    }
}

sdk::export_job_type!(Probe);
