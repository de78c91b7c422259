//! Fixture: tries to reach outside its section, per `settings.attempt`, and reports what
//! happened in its outcome (`code` = `BLOCKED` or `ESCAPED`, `message` = the evidence):
//! - `path`: read `/etc/passwd` and list `/..` through WASI;
//! - `spawn`: spawn `sh`, which it never declared;
//! - `session`: name another session through an alias;
//! - `leak`: report its environment, a granted child's environment and arguments, its files and
//!   a session reply, so the test can look for the API key in all of them.

use blobhub_worker_sdk::serde_json::{Value, json};
use blobhub_worker_sdk::{self as sdk, JobType, job, process};

include!("../../common.rs");

struct Escape;

fn outcome(code: &str, message: String) -> job::Outcome {
    job::Outcome {
        code: Some(code.into()),
        message,
    }
}

impl JobType for Escape {
    fn describe() -> job::Descriptor {
        job::Descriptor {
            name: "escape_attempts".into(),
            version: "0.1.0".into(),
            summary: "test fixture: tries to escape its section".into(),
            capabilities: vec![
                job::Capability::Session,
                job::Capability::Spawn("env".into()),
            ],
        }
    }
    fn validate(sections: Vec<job::Section>) -> Vec<job::SectionCheck> {
        simple_validate(sections)
    }
    async fn run(section: job::Section) -> job::Outcome {
        let settings: Value = sdk::serde_json::from_str(&section.settings).unwrap_or(Value::Null);
        match settings["attempt"].as_str().unwrap_or("") {
            "path" => {
                let etc = std::fs::read_to_string("/etc/passwd");
                let up = std::fs::read_dir("/..").map(|d| d.count());
                let abs = std::fs::read_to_string("../../config.yaml");
                let evidence = format!("{etc:?} {up:?} {abs:?}");
                if etc.is_err() && up.is_err() && abs.is_err() {
                    outcome("BLOCKED", evidence)
                } else {
                    outcome("ESCAPED", evidence)
                }
            }
            "spawn" => {
                let request = process::SpawnRequest {
                    program: "sh".into(),
                    args: vec!["-c".into(), "echo escaped".into()],
                    cwd: "/tmp".into(),
                    env: vec![],
                };
                match process::spawn(&request) {
                    Err(e) => outcome("BLOCKED", format!("{e:?}")),
                    Ok(_) => outcome("ESCAPED", "spawned sh".into()),
                }
            }
            "session" => {
                let session = sdk::session::Session;
                let other = settings["other_session"].as_str().unwrap_or("ses_other");
                let attempts = [
                    session
                        .download_object(&format!("../../sessions/{other}/objects/x"))
                        .await,
                    session
                        .list_objects(Some(&format!("/{other}")), None, None)
                        .await,
                    session.upload_object("x", &json!([other])).await,
                ];
                let refused = attempts
                    .iter()
                    .all(|a| matches!(a, Err(sdk::session::ApiError::Refused(_))));
                outcome(
                    if refused { "BLOCKED" } else { "ESCAPED" },
                    format!("{attempts:?}"),
                )
            }
            "leak" => {
                let mut evidence = String::new();
                for (k, v) in std::env::vars() {
                    evidence.push_str(&format!("guest-env {k}={v}\n"));
                }
                for arg in std::env::args() {
                    evidence.push_str(&format!("guest-arg {arg}\n"));
                }
                for entry in std::fs::read_dir("/").into_iter().flatten().flatten() {
                    let path = entry.path();
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    evidence.push_str(&format!("guest-file {} {text}\n", path.display()));
                }
                match sdk::session::Session.get().await {
                    Ok(v) => evidence.push_str(&format!("reply {v}\n")),
                    Err(e) => evidence.push_str(&format!("reply-error {e}\n")),
                }
                let cwd = settings["cwd"].as_str().unwrap_or("/tmp").to_owned();
                let request = process::SpawnRequest {
                    program: "env".into(),
                    args: vec![],
                    cwd,
                    env: vec![("JOB_VAR".into(), "1".into())],
                };
                match process::spawn(&request) {
                    Ok(child) => loop {
                        match sdk::next_output(&child).await {
                            process::Output::Stdout(line) => {
                                evidence.push_str(&format!("child {line}\n"))
                            }
                            process::Output::Stderr(line) => {
                                evidence.push_str(&format!("child-err {line}\n"))
                            }
                            process::Output::Exited(_) => break,
                        }
                    },
                    Err(e) => return outcome("SPAWN_FAILED", format!("{e:?}")),
                }
                outcome("REPORT", evidence)
            }
            other => outcome("UNKNOWN_ATTEMPT", other.into()),
        }
    }
}

sdk::export_job_type!(Escape);
