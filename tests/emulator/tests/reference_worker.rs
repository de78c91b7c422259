//! Faithfulness check: the reference worker (Python `blobhub-worker` 0.11.0) runs a whole
//! hand-off against this emulator — attach, activation, a scripted turn, a held prompt answered
//! by a person, a restart with recovery, and a user-requested completion.
//!
//! The reference is found through `BLOBHUB_REFERENCE_WORKER` (the path of its `blobhub-worker`
//! executable; `tests/emulator/reference/install.sh DIR` installs it and prints that path).
//! Without it the test explains itself and passes — except under `CI`, where it fails.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use blobhub_emulator::{Admin, CreateSession, Emulator, EmulatorConfig, User};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const ENV_VAR: &str = "BLOBHUB_REFERENCE_WORKER";
const STEP: Duration = Duration::from_secs(30);
const WORKER: &str = "usr_worker";
const PERSON: &str = "usr_person";
const THREAD: &str = "tasks/t1";
const PROFILE: &str = "emu";
const SESSION_ALIAS: &str = "main";

fn user(id: &str, key: &str, name: &str) -> User {
    User {
        id: id.into(),
        name: name.into(),
        email: format!("{id}@example.com"),
        api_key: key.into(),
    }
}

/// The reference's executable, or `None` when the check cannot run here (an error under CI).
fn reference_executable() -> Option<PathBuf> {
    match std::env::var_os(ENV_VAR).filter(|v| !v.is_empty()) {
        Some(path) => {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "{ENV_VAR}={} is not a file; run tests/emulator/reference/install.sh DIR",
                path.display()
            );
            Some(path)
        }
        None => {
            let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
            assert!(
                !ci,
                "CI is set but {ENV_VAR} is not: the reference-worker faithfulness check must run in CI \
                 (install it with tests/emulator/reference/install.sh DIR and export {ENV_VAR})"
            );
            eprintln!(
                "reference_worker: skipped — {ENV_VAR} is unset. Install the reference with \
                 `tests/emulator/reference/install.sh /some/dir` and export {ENV_VAR}=<printed path>."
            );
            None
        }
    }
}

/// The test's temp tree: `$HOME` for the reference (credentials profile + config), the agent's
/// work folder, and the `test_double` script.
struct Fixture {
    _dir: tempfile::TempDir,
    home: PathBuf,
    work_folder: PathBuf,
    script: PathBuf,
    log: PathBuf,
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

impl Fixture {
    fn new(api_url: &str, ids: &blobhub_emulator::SessionIds) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let work_folder = dir.path().join("work");
        std::fs::create_dir_all(&work_folder).unwrap();
        // The section follows the blob's `default` revision and names the session by alias, so
        // attach exercises revision resolution and `get_session` by alias; the prefix scopes it.
        // The shared credentials file (0600 or the reference refuses it): one profile, the
        // worker's own key. Its state tree is then ~/.blobhub-worker/profiles/<profile>/.
        write_private(
            &home.join(".blobhub/credentials.yaml"),
            &format!(
                "profiles:\n  {PROFILE}:\n    key: bhk_worker\n    url: {api_url}\ndefault: {PROFILE}\n"
            ),
        );
        write_private(
            &home.join(format!(".blobhub-worker/profiles/{PROFILE}/config.yaml")),
            &format!(
                "polling:\n  interval_idle_ms: 100\n  interval_active_ms: 100\n  backoff_max_ms: 500\n\
                 sections:\n  - name: main\n    job_type: session_agent_harness\n    session:\n      \
                 org_id: {}\n      blob_id: {}\n      revision_id: default\n      session_id: {SESSION_ALIAS}\n      \
                 session_prefix: tasks/\n",
                ids.org_id, ids.blob_id
            ),
        );
        // First match wins: "ask me" raises a held question, anything else gets a plain reply.
        let script = dir.path().join("script.json");
        std::fs::write(
            &script,
            json!({"turns": [
                {"match": "ask me", "text": "you chose, thanks",
                 "prompt": {"kind": "ask_user_question", "questions": [{
                     "question": "Which colour?", "header": "colour", "multiSelect": false,
                     "options": [{"label": "Red", "description": "warm"},
                                 {"label": "Blue", "description": "cool"}]}]}},
                {"match": "publish", "text": "report written",
                 "files": {".out/report.txt": "the report"}},
                {"text": "scripted reply"}
            ]})
            .to_string(),
        )
        .unwrap();
        let log = dir.path().join("worker.log");
        Fixture {
            home,
            work_folder,
            script,
            log,
            _dir: dir,
        }
    }

    fn spawn(&self, exe: &Path, run: usize) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        use std::io::Write;
        writeln!(&log, "--- reference worker run {run} ---").ok();
        Command::new(exe)
            .args(["start", "--profile", PROFILE])
            .env("HOME", &self.home)
            .env("TEST_DOUBLE_SCRIPT", &self.script)
            // Never let a proxy sit between the reference and a loopback emulator.
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .env_remove("BLOBHUB_API_KEY")
            .env_remove("BLOBHUB_API_URL")
            .env_remove("BLOBHUB_PROFILE")
            .env_remove("TEST_DOUBLE_AUTO_PROMPT")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the reference worker")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn kind(item: &Value) -> &str {
    item["metadata"]["type"].as_str().unwrap_or("")
}

fn by_worker<'a>(items: &'a [Value], ty: &str) -> Vec<&'a Value> {
    items
        .iter()
        .filter(|i| i["user_id"] == WORKER && kind(i) == ty)
        .collect()
}

fn count(admin: &Admin, sid: &str, alias: &str, ty: &str) -> usize {
    by_worker(&admin.items(sid, alias), ty).len()
}

fn state(admin: &Admin, sid: &str) -> String {
    admin
        .object(sid, THREAD)
        .and_then(|v| {
            v["thread"]["metadata"]["instance"]["state"]
                .as_str()
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

fn envelope(work_folder: &Path, state: &str) -> Value {
    json!({"type": "thread", "thread": {
    "attributes": {"name": "t1", "description": "reference faithfulness check"},
    "metadata": {
        "instance": {"state": state},
        "agent": {"type": "test_double", "permissions": "autonomous"},
        "workspace": {"work_folder": work_folder.to_str().unwrap()},
        "artifacts": {"prefix": "runs/r1/", "outbox": ".out"},
    }}})
}

fn say(text: &str) -> Value {
    json!([{"type": "text", "text": text}])
}

struct Run<'a> {
    admin: Admin,
    sid: String,
    fx: &'a Fixture,
}

impl Run<'_> {
    /// Awaits `pred` (re-checked on every emulator change); on timeout fails with the worker's log
    /// and both threads, which is what one needs to tell an emulator deviation from a reference bug.
    async fn step(&self, what: &str, pred: impl FnMut(&Admin) -> bool) {
        let t0 = Instant::now();
        if !self.admin.wait_for(STEP, pred).await {
            let dump = |alias: &str| {
                self.admin
                    .items(&self.sid, alias)
                    .iter()
                    .map(|i| format!("  {} {} {}", i["user_id"], kind(i), i["content"][0]["text"]))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            panic!(
                "step `{what}` timed out after {STEP:?}\nworker thread:\n{}\n{THREAD}:\n{}\nenvelope: {}\n\
                 reference log:\n{}",
                dump("worker"),
                dump(THREAD),
                self.admin.object(&self.sid, THREAD).unwrap_or_default(),
                self.fx.log_text()
            );
        }
        eprintln!("reference_worker: {what} ({:?})", t0.elapsed());
    }

    fn post(&self, text: &str) {
        self.admin
            .post_item(&self.sid, THREAD, say(text), None, PERSON)
            .expect("person posts");
    }
}

/// SIGTERM (the reference drains and restamps its `worker` object `detached`), then reap.
async fn stop(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    if tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_worker_runs_a_thread_against_the_emulator() {
    let Some(exe) = reference_executable() else {
        return;
    };
    let started = Instant::now();
    let emu = Emulator::start(EmulatorConfig {
        users: vec![
            user(WORKER, "bhk_worker", "Reference Worker"),
            user(PERSON, "bhk_person", "A Person"),
        ],
        state_file: None,
    })
    .await
    .expect("emulator starts");
    let admin = emu.admin();
    let ids = admin
        .create_session(CreateSession {
            alias: Some(SESSION_ALIAS.into()),
            ..Default::default()
        })
        .expect("session");
    let sid = ids.session_id.clone();
    let fx = Fixture::new(&emu.api_url(), &ids);
    let run = Run {
        admin: admin.clone(),
        sid: sid.clone(),
        fx: &fx,
    };

    // 1. Attach: the `worker` object under the worker's user id, and an `attached` item.
    let mut child = fx.spawn(&exe, 1);
    run.step("attached", |a| {
        let owner_ok = a.object(&sid, "worker").is_some_and(|w| {
            w["thread"]["metadata"]["user"]["user_id"] == WORKER
                && w["thread"]["metadata"]["instance"]["status"] == "attached"
        });
        owner_ok && count(a, &sid, "worker", "attached") == 1
    })
    .await;

    // A pending thread outside the section's `tasks/` prefix: the reference must leave it alone.
    admin
        .upload_object(
            &sid,
            "other/t9",
            envelope(&fx.work_folder, "pending"),
            PERSON,
        )
        .unwrap();

    // 2. Hand-off by the person: pending → active, with `thread_active` in the activity log.
    admin
        .upload_object(&sid, THREAD, envelope(&fx.work_folder, "pending"), PERSON)
        .unwrap();
    run.step("activated", |a| {
        state(a, &sid) == "active" && count(a, &sid, "worker", "thread_active") == 1
    })
    .await;
    // The worker rewrote only `instance`; everything the person wrote survives verbatim.
    let env = admin.object(&sid, THREAD).unwrap();
    assert_eq!(
        env["thread"]["attributes"],
        envelope(&fx.work_folder, "active")["thread"]["attributes"]
    );
    assert_eq!(env["thread"]["metadata"]["agent"]["type"], "test_double");

    // 3. A message from the person → the scripted reply, then `turn_end: completed`.
    run.post("hello agent");
    run.step("replied", |a| {
        let items = a.items(&sid, THREAD);
        by_worker(&items, "text")
            .iter()
            .any(|i| i["content"][0]["text"] == "scripted reply")
            && by_worker(&items, "turn_end").len() == 1
    })
    .await;
    let items = admin.items(&sid, THREAD);
    let turn_end = by_worker(&items, "turn_end")[0];
    assert_eq!(turn_end["metadata"]["status"], "completed");
    assert!(
        turn_end["metadata"]["post_id"]
            .as_str()
            .is_some_and(|p| p.starts_with("pst_")),
        "{turn_end}"
    );

    // 3b. Files both ways: an inbound file block is downloaded into the work folder's inbox
    //     (`download_session_file`), and the turn's outbox is published (`upload_session_file`).
    admin
        .upload_file(
            &sid,
            "files/in.txt",
            "in.txt",
            "text/plain",
            b"inbound bytes",
            PERSON,
        )
        .unwrap();
    let posted = admin
        .post_item(
            &sid,
            THREAD,
            json!([{"type": "text", "text": "publish this"},
                   {"type": "file", "file": {"alias": "files/in.txt", "name": "in.txt",
                                             "content_type": "text/plain", "size": 13}}]),
            None,
            PERSON,
        )
        .unwrap();
    run.step("file in, artifact out", |a| {
        count(a, &sid, THREAD, "turn_end") == 2
    })
    .await;
    let inbox = fx
        .work_folder
        .join(".blobhub/inbox")
        .join(posted["id"].as_str().unwrap())
        .join("in.txt");
    assert_eq!(
        std::fs::read(&inbox).ok().as_deref(),
        Some(&b"inbound bytes"[..]),
        "{}",
        inbox.display()
    );
    let items = admin.items(&sid, THREAD);
    let published = by_worker(&items, "artifacts_published");
    let last = published.last().expect("artifacts_published");
    assert_eq!(
        last["metadata"]["counts"],
        json!({"published": 1, "skipped": 0})
    );
    assert_eq!(last["content"][1]["file"]["alias"], "runs/r1/report.txt");
    assert_eq!(
        admin.file_bytes(&sid, "runs/r1/report.txt").as_deref(),
        Some(&b"the report"[..])
    );

    // 4. A held question: `pending_prompt`, answered by the person with "2" → `Blue`.
    run.post("please ask me something");
    run.step("prompt opened", |a| {
        count(a, &sid, THREAD, "pending_prompt") == 1
    })
    .await;
    let items = admin.items(&sid, THREAD);
    let prompt = &by_worker(&items, "pending_prompt")[0]["metadata"]["prompt"];
    assert_eq!(prompt["prompt_state"], "pending");
    assert_eq!(prompt["kind"], "ask_user_question");
    let prompt_id = prompt["prompt_id"].as_str().unwrap().to_owned();
    assert!(prompt_id.starts_with("prm_"), "{prompt}");
    run.post("2");
    run.step("prompt answered, turn ended", |a| {
        let items = a.items(&sid, THREAD);
        by_worker(&items, "pending_prompt_resolved").len() == 1
            && by_worker(&items, "turn_end").len() == 3
    })
    .await;
    let items = admin.items(&sid, THREAD);
    let resolved = &by_worker(&items, "pending_prompt_resolved")[0]["metadata"]["prompt"];
    assert_eq!(resolved["prompt_id"], prompt_id.as_str());
    assert_eq!(resolved["prompt_state"], "answered");
    assert_eq!(
        resolved["answers"],
        json!([{"question": "Which colour?", "answer": ["Blue"]}])
    );

    // 5. Clean shutdown restamps the `worker` object `detached`; a message posted while the worker
    //    is down is delivered after the restart recovers the thread.
    stop(&mut child).await;
    assert_eq!(
        admin.object(&sid, "worker").unwrap()["thread"]["metadata"]["instance"]["status"],
        "detached"
    );
    run.post("while you were away");
    let mut child = fx.spawn(&exe, 2);
    run.step("recovered and replied", |a| {
        let items = a.items(&sid, THREAD);
        count(a, &sid, "worker", "thread_recovered") == 1
            && count(a, &sid, "worker", "attached") == 2
            && by_worker(&items, "turn_end").len() == 4
    })
    .await;
    assert_eq!(state(&admin, &sid), "active");

    // 6. The person completes the thread → `thread_completed`; the envelope stays `completed`.
    admin
        .upload_object(&sid, THREAD, envelope(&fx.work_folder, "completed"), PERSON)
        .unwrap();
    run.step("completed", |a| {
        count(a, &sid, "worker", "thread_completed") == 1
    })
    .await;
    assert_eq!(state(&admin, &sid), "completed");

    let decoy = admin.object(&sid, "other/t9").unwrap();
    assert_eq!(decoy["thread"]["metadata"]["instance"]["state"], "pending");
    assert!(admin.items(&sid, "other/t9").is_empty());

    // Every API call the reference made succeeded: no emulator answer surprised it.
    let failed: Vec<_> = admin
        .requests()
        .into_iter()
        .filter(|r| r.status != 200)
        .collect();
    assert!(failed.is_empty(), "non-200 answers: {failed:?}");
    let log = fx.log_text();
    for line in log.lines() {
        assert!(
            !line.contains("\"level\": \"error\""),
            "reference logged an error: {line}"
        );
    }

    stop(&mut child).await;
    emu.shutdown().await;
    eprintln!("reference_worker: passed in {:?}", started.elapsed());
}
