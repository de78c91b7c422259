//! `demo`: the whole product offline in one command. It starts the BlobHub emulator in-process
//! on a free port, logs a throw-away worker home in, configures one `session_agent_harness`
//! section, starts the worker (this same binary, `start`), hands a thread to the scripted test
//! agent, posts two messages, answers the agent's question, and prints the conversation as it
//! happens. `--keep` leaves everything running and prints how to post more.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use blobhub_emulator::{Admin, CreateSession, Emulator, EmulatorConfig, User};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::Output;
use crate::state_tree::{ApiCredentials, ApiKey, Credentials, Identity, IdentityUser, StateTree};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Keep the emulator and the worker running afterwards (until Ctrl-C).
    #[arg(long)]
    keep: bool,
}

const THREAD: &str = "demo/task";
const PATIENCE: Duration = Duration::from_secs(60);
const STARTED_MARKER: &str = "worker started:";

pub async fn run(args: DemoArgs, output: &Output) -> anyhow::Result<ExitCode> {
    let root = std::env::temp_dir().join(format!("blobhub-worker-demo-{}", std::process::id()));
    let agent = test_agent(&root)?;
    let user = User::demo();
    let emu = Emulator::start(EmulatorConfig::default())
        .await
        .context("starting the emulator")?;
    let admin = emu.admin();
    let ids = admin
        .create_session(CreateSession {
            alias: Some("demo".into()),
            ..Default::default()
        })
        .map_err(|e| anyhow::anyhow!("creating the demo session: {e:?}"))?;
    let work = root.join("work");
    std::fs::create_dir_all(&work)?;
    let tree = StateTree::at(root.join("home"));
    tree.save_credentials(&Credentials {
        api: ApiCredentials {
            url: emu.api_url(),
            key: ApiKey::new(user.api_key.clone()),
        },
    })?;
    tree.save_identity(&Identity {
        user: IdentityUser {
            user_id: user.id.clone(),
            name: user.name.clone(),
            email: user.email.clone(),
            recorded_at: "2026-01-01T00:00:00Z".into(),
        },
    })?;
    std::fs::write(
        tree.config_path(),
        format!(
            "polling:\n  interval_idle_ms: 200\n  interval_active_ms: 100\n\
             agents:\n  test_double:\n    executable: {}\n\
             sections:\n  - name: demo\n    job_type: session_agent_harness\n    \
             session: {{org_id: {}, blob_id: {}, revision_id: {}, session_id: {}}}\n\
             workspace:\n  allowed_roots: [{}]\n",
            agent.display(),
            ids.org_id,
            ids.blob_id,
            ids.revision_id,
            ids.session_id,
            work.display()
        ),
    )?;
    say(output, &format!("emulator   {}", emu.api_url()));
    say(output, &format!("worker home {}", tree.root().display()));
    event(
        output,
        json!({"event": "started", "api_url": emu.api_url(), "admin_url": emu.admin_url(),
               "worker_home": tree.root(), "session_id": ids.session_id, "thread": THREAD}),
    );

    let mut worker = tokio::process::Command::new(std::env::current_exe()?)
        // Its lines are shown to a person (prefixed `worker: `): text, though stderr is a pipe.
        .args(["--log-format", "pretty", "start"])
        .env(crate::state_tree::HOME_ENV, tree.root())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the worker")?;
    let mut lines = BufReader::new(worker.stderr.take().expect("piped")).lines();
    loop {
        match lines.next_line().await? {
            Some(line) if line.starts_with(STARTED_MARKER) => break,
            Some(line) => say(output, &format!("worker: {line}")),
            None => bail!("the worker exited before starting"),
        }
    }
    // Keep draining the worker's stderr so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    say(output, "worker     started\n");

    let printer = tokio::spawn(print_conversation(
        admin.clone(),
        ids.session_id.clone(),
        output.json,
    ));
    let sid = ids.session_id.clone();
    let script = async {
        admin
            .upload_object(
                &sid,
                THREAD,
                json!({"type": "thread", "thread": {
                    "attributes": {"name": "Demo task"},
                    "metadata": {
                        "instance": {"state": "pending"},
                        "agent": {"type": "test_double", "permissions": "approval"},
                        "workspace": {"work_folder": work.to_str().unwrap_or("/tmp")}}}}),
                &user.id,
            )
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        wait(&admin, "the thread to go active", |a| {
            state(a, &sid) == "active"
        })
        .await?;
        post(&admin, &sid, &user.id, "Hello! What can you do?")?;
        wait(&admin, "the first reply", |a| turns(a, &sid) >= 1).await?;
        post(&admin, &sid, &user.id, "ask: May I run the test suite?")?;
        wait(&admin, "the agent's question", |a| {
            has_type(a, &sid, "pending_prompt")
        })
        .await?;
        post(&admin, &sid, &user.id, "yes")?;
        wait(&admin, "the second reply", |a| turns(a, &sid) >= 2).await?;
        anyhow::Ok(())
    };
    let result = script.await;
    // Let the printer catch up with the last items.
    tokio::time::sleep(Duration::from_millis(200)).await;
    if result.is_err() || !args.keep {
        printer.abort();
    }
    result?;

    if args.keep {
        let admin_url = emu.admin_url();
        say(
            output,
            &format!(
                "\nStill running. Post more as the person (the worker replies within a second):\n  \
                 curl -s -X POST {admin_url}/sessions/{sid}/items/{THREAD} \\\n    \
                 -d '{{\"content\":[{{\"type\":\"text\",\"text\":\"hi again\"}}],\"as_user\":\"{}\"}}'\n\
                 Read the thread:   curl -s {admin_url}/sessions/{sid}/items/{THREAD}\n\
                 Activity log:      curl -s {admin_url}/sessions/{sid}/items/worker\n\
                 Press Ctrl-C to stop.",
                user.id
            ),
        );
        event(
            output,
            json!({"event": "kept", "admin_url": emu.admin_url(), "session_id": sid,
                   "thread": THREAD, "as_user": user.id}),
        );
        tokio::signal::ctrl_c().await?;
        printer.abort();
        say(
            output,
            &format!("(the worker home stays in {})", root.display()),
        );
    }
    stop(&mut worker).await;
    emu.shutdown().await;
    if !args.keep {
        let _ = std::fs::remove_dir_all(&root);
    }
    say(output, "\ndemo finished");
    event(output, json!({"event": "finished", "ok": true}));
    Ok(ExitCode::SUCCESS)
}

/// The scripted agent: this very executable under the name `blobhub-test-agent` (a link in the
/// demo's own folder), so a plain `cargo run` or an installed worker has it without a second
/// binary.
fn test_agent(root: &Path) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding this executable")?;
    let bin = root.join("bin");
    crate::state_tree::create_private_dir(&bin)
        .with_context(|| format!("creating {}", bin.display()))?;
    let agent = bin.join("blobhub-test-agent");
    let _ = std::fs::remove_file(&agent);
    std::os::unix::fs::symlink(&exe, &agent)
        .with_context(|| format!("linking {} to {}", agent.display(), exe.display()))?;
    Ok(agent)
}

/// A progress line for a person; with `--json` stdout carries only JSON lines, see [`event`].
fn say(output: &Output, line: &str) {
    if !output.quiet && !output.json {
        println!("{line}");
    }
}

/// With `--json`: one JSON line on stdout for a step of the demo (`started`, `kept`,
/// `finished`); the conversation's items are JSON lines of their own.
fn event(output: &Output, mut document: Value) {
    if output.json {
        document["schema_version"] = json!(super::output::SCHEMA_VERSION);
        println!("{document}");
    }
}

fn post(admin: &Admin, sid: &str, user: &str, text: &str) -> anyhow::Result<()> {
    admin
        .post_item(
            sid,
            THREAD,
            json!([{"type": "text", "text": text}]),
            None,
            user,
        )
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("posting: {e:?}"))
}

fn state(admin: &Admin, sid: &str) -> String {
    admin
        .object(sid, THREAD)
        .and_then(|v| {
            v.pointer("/thread/metadata/instance/state")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

fn kind(item: &Value) -> &str {
    item.pointer("/metadata/type")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn turns(admin: &Admin, sid: &str) -> usize {
    admin
        .items(sid, THREAD)
        .iter()
        .filter(|i| kind(i) == "turn_end")
        .count()
}

fn has_type(admin: &Admin, sid: &str, ty: &str) -> bool {
    admin.items(sid, THREAD).iter().any(|i| kind(i) == ty)
}

async fn wait(admin: &Admin, what: &str, pred: impl FnMut(&Admin) -> bool) -> anyhow::Result<()> {
    if admin.wait_for(PATIENCE, pred).await {
        Ok(())
    } else {
        bail!("timed out waiting for {what}")
    }
}

/// Prints every new item of the demo thread and the activity log as it lands.
async fn print_conversation(admin: Admin, sid: String, json_lines: bool) {
    let mut rx = admin.subscribe();
    let (mut thread_seen, mut log_seen) = (0, 0);
    loop {
        rx.borrow_and_update();
        for (alias, seen) in [(THREAD, &mut thread_seen), ("worker", &mut log_seen)] {
            let items = admin.items(&sid, alias);
            for item in items.iter().skip(*seen) {
                if json_lines {
                    let line = json!({"event": "item", "thread": alias, "item": item,
                                      "schema_version": super::output::SCHEMA_VERSION});
                    println!("{line}");
                } else {
                    println!("{}", render(alias, item));
                }
            }
            *seen = items.len();
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

fn render(alias: &str, item: &Value) -> String {
    let text = item
        .pointer("/content/0/text")
        .and_then(Value::as_str)
        .unwrap_or("")
        .replace('\n', "\n             ");
    let who = match (alias, kind(item)) {
        ("worker", _) => "[worker]  ",
        (_, "") => "[person]  ",
        (_, "pending_prompt") => "[question]",
        (_, "pending_prompt_resolved") => "[answer]  ",
        (_, "turn_end") => "[turn end]",
        _ => "[agent]   ",
    };
    format!("{who}   {text}")
}

async fn stop(worker: &mut tokio::process::Child) {
    if let Some(pid) = worker.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) on our own child; no memory effects.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(Duration::from_secs(15), worker.wait())
        .await
        .is_err()
    {
        let _ = worker.kill().await;
    }
}
