//! Fixture: a component built against `blobhub:worker@9.0.0`; loading it must fail with
//! `JOB_TYPE_WIT_UNSUPPORTED`.

wit_bindgen::generate!({ path: "wit", world: "job-type" });

struct Future;

impl exports::blobhub::worker::job::Guest for Future {
    fn describe() -> String {
        blobhub::worker::worker::now_utc()
    }
}

export!(Future);
