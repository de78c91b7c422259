//! Fixture: tries to reach outside its section, per `settings.attempt`, and reports what
//! happened in its outcome (`code` = `BLOCKED` or `ESCAPED`, `message` = the evidence):
//! - `path`: read `/etc/passwd` and list `/..` through WASI;
//! - `spawn`: spawn `sh`, which it never declared;
//! - `session`: name another session through an alias;
//! - `leak`: report its environment, a granted child's environment and arguments, its files and
//!   a session reply, so the test can look for the API key in all of them;
//! - `sessionless`: well-formed session calls from a section without a `session` block (the host
//!   now refuses such a section of a job type declaring `session` at preflight, so this runs only
//!   if that check is lost; the host's call-time refusal stays behind it);
//! - `hostile`: every attack of a hostile job type on the host, one after the other, each line of
//!   the outcome `<attack> BLOCKED|ESCAPED <evidence>`; it ends spinning on an import, which the
//!   compute budget must stop (`JOB_TYPE_UNRESPONSIVE`), after posting its report as the
//!   session object `hostile-report`.
//!
//! With `validate: spin` in any of its sections, its `validate` never returns.

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
                job::Capability::Spawn("cat".into()),
                job::Capability::Agents,
            ],
        }
    }
    fn validate(sections: Vec<job::Section>) -> Vec<job::SectionCheck> {
        let spin = sections
            .iter()
            .any(|s| s.settings.contains("\"validate\":\"spin\""));
        if spin {
            // Calls an import too, which validate may not.
            loop {
                let _ = blobhub_worker_sdk::worker::is_shutting_down();
            }
        }
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
                all_refused(&attempts)
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
            "hostile" => hostile(&settings).await,
            "sessionless" => {
                // Well-formed calls from a section without a session block.
                let session = sdk::session::Session;
                let attempts = [
                    session.get().await,
                    session.list_objects(None, None, None).await,
                ];
                all_refused(&attempts)
            }
            other => outcome("UNKNOWN_ATTEMPT", other.into()),
        }
    }
}

/// `BLOCKED` when every attempt was refused before it was sent, else `ESCAPED`.
fn all_refused(attempts: &[Result<Value, sdk::session::ApiError>]) -> job::Outcome {
    let refused = attempts
        .iter()
        .all(|a| matches!(a, Err(sdk::session::ApiError::Refused(_))));
    outcome(
        if refused { "BLOCKED" } else { "ESCAPED" },
        format!("{attempts:?}"),
    )
}

unsafe extern "C" {
    /// wasi-libc's symlink(2), which std does not expose on this target.
    fn symlink(target: *const core::ffi::c_char, link: *const core::ffi::c_char) -> i32;
}

fn line(report: &mut String, attack: &str, blocked: bool, evidence: impl std::fmt::Debug) {
    let verdict = if blocked { "BLOCKED" } else { "ESCAPED" };
    report.push_str(&format!("{attack} {verdict} {evidence:?}\n"));
}

/// The output of a granted child, all of it.
async fn run_child(request: &process::SpawnRequest) -> Result<String, String> {
    let child = process::spawn(request).map_err(|e| format!("{e:?}"))?;
    let mut out = String::new();
    loop {
        match sdk::next_output(&child).await {
            process::Output::Stdout(l) | process::Output::Stderr(l) => {
                out.push_str(&l);
                out.push('\n');
            }
            process::Output::Exited(_) => return Ok(out),
        }
    }
}

async fn hostile(settings: &Value) -> job::Outcome {
    let tree = settings["tree"]
        .as_str()
        .unwrap_or("/nonexistent")
        .to_owned();
    let outside = settings["outside"].as_str().unwrap_or("/tmp").to_owned();
    let key = settings["key_hint"].as_str().unwrap_or("\u{0}").to_owned();
    let mut report = String::new();

    // Links through WASI, relative and absolute.
    for (target, name) in [("../..", "up"), ("/", "root")] {
        let (t, n) = (
            std::ffi::CString::new(target).unwrap(),
            std::ffi::CString::new(name).unwrap(),
        );
        // SAFETY: NUL-terminated strings.
        let r = unsafe { symlink(t.as_ptr(), n.as_ptr()) };
        line(&mut report, &format!("wasi-symlink-{name}"), r != 0, r);
    }
    // The host's state capability through a link planted beforehand (`planted` -> the tree).
    let w = sdk::state::write_atomic("planted/plugins/evil.wasm", b"\0asm");
    line(&mut report, "state-write-through-link", w.is_err(), &w);
    let a = sdk::state::append_line("planted/evil-line", "pwned");
    line(&mut report, "state-append-through-link", a.is_err(), &a);
    let d = sdk::state::write_atomic("../../evil", b"x");
    line(&mut report, "state-write-dotdot", d.is_err(), &d);

    // The loader's and the interpreter's variables.
    for name in ["LD_PRELOAD", "PATH", "NODE_OPTIONS", "BLOBHUB_API_KEY"] {
        let request = process::SpawnRequest {
            program: "env".into(),
            args: vec![],
            cwd: outside.clone(),
            env: vec![(name.into(), "/tmp/evil.so".into())],
        };
        let r = run_child(&request).await;
        line(&mut report, &format!("env-{name}"), r.is_err(), &r);
    }
    // A granted program pointed at the worker's secrets.
    // The worker's pid: the parent of a granted child (field 4 of its /proc/self/stat).
    let stat = run_child(&process::SpawnRequest {
        program: "cat".into(),
        args: vec!["/proc/self/stat".into()],
        cwd: outside.clone(),
        env: vec![],
    })
    .await
    .unwrap_or_default();
    let me = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().nth(1))
        .unwrap_or("1")
        .to_string();
    report.push_str(&format!("worker-pid {me}\n"));
    for file in [
        format!("{tree}/credentials.yaml"),
        format!("/proc/{me}/environ"),
        format!("/proc/{me}/root{tree}/credentials.yaml"),
        "/proc/1/environ".to_string(),
    ] {
        let request = process::SpawnRequest {
            program: "cat".into(),
            args: vec![file.clone()],
            cwd: outside.clone(),
            env: vec![],
        };
        let r = run_child(&request).await;
        let leaked = r.as_ref().is_ok_and(|out| out.contains(&key));
        line(&mut report, &format!("cat {file}"), !leaked, &r);
    }
    // Starting a program inside the tree, and probing folders.
    let probes: Vec<String> = [
        tree.as_str(),
        "/nonexistent-folder",
        "/etc/passwd",
        "relative",
    ]
    .iter()
    .map(|cwd| {
        let request = process::SpawnRequest {
            program: "env".into(),
            args: vec![],
            cwd: (*cwd).into(),
            env: vec![],
        };
        match process::spawn(&request) {
            Ok(_) => "spawned".to_string(),
            Err(process::SpawnError::BadDirectory(m)) => m.replace(cwd, "<cwd>"),
            Err(e) => format!("{e:?}"),
        }
    })
    .collect();
    let uniform = probes.iter().all(|p| p == &probes[0]) && probes[0] != "spawned";
    line(&mut report, "cwd-probes", uniform, &probes);
    // The operator's agent programs: declared `agents`, but nothing in job_types grants them.
    for program in ["claude", "codex", "blobhub-test-agent"] {
        let request = process::SpawnRequest {
            program: program.into(),
            args: vec![],
            cwd: outside.clone(),
            env: vec![],
        };
        let r = process::spawn(&request).map(|_| ());
        line(
            &mut report,
            &format!("agent-{program}"),
            matches!(r, Err(process::SpawnError::NotGranted(_))),
            &r,
        );
    }
    // A flood of requests under the operator's key.
    let session = sdk::session::Session;
    let flood: Vec<_> = (0..1000)
        .map(|i| {
            sdk::spawn(async move {
                sdk::session::Session
                    .download_object(&format!("flood-{i}"))
                    .await
            })
        })
        .collect();
    let mut refused = 0;
    for handle in flood {
        if let Err(sdk::session::ApiError::Refused(m)) = handle.await
            && m.starts_with("QUOTA_REQUESTS")
        {
            refused += 1;
        }
    }
    line(&mut report, "request-flood", refused > 0, refused);
    let _ = session
        .upload_object("hostile-report", &json!({"report": report}))
        .await;
    // Log and stderr floods, past the burst the quota allows (the test counts what got through).
    for i in 0..3000 {
        sdk::log_event(
            sdk::log::Level::Warning,
            "flood",
            None,
            &json!({"i": i, "pad": "x".repeat(5000)}),
        );
        eprintln!("forged\n2026-01-01T00:00:00Z  INFO worker: all_sections_ended {i}");
    }
    // Spinning on an import: the compute budget must end the section.
    loop {
        let _ = sdk::worker::is_shutting_down();
    }
}

sdk::export_job_type!(Escape);
