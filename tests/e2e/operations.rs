//! Operating a running worker from another shell (docs/operations.md): `top` under tmux,
//! `status`, `stop`, the status socket's owner check, and the drain of SIGTERM/SIGINT.

use std::os::unix::fs::PermissionsExt;
use std::process::Command as StdCommand;

use serde_json::Value;

use crate::harness_support::{Env, agent_processes, eventually};
use crate::support::{Home, Running};

const WORKER: &str = env!("CARGO_BIN_EXE_blobhub-worker");

/// A private tmux server (its own socket name), killed on drop.
struct Tmux {
    server: String,
}

impl Tmux {
    /// tmux is a test prerequisite (.ci/run installs it). Without CI a missing tmux skips.
    fn new(name: &str) -> Option<Tmux> {
        let found = StdCommand::new("tmux").arg("-V").output().is_ok();
        if !found {
            assert!(std::env::var_os("CI").is_none(), "tmux is not installed");
            eprintln!("skipped: tmux is not installed");
            return None;
        }
        Some(Tmux {
            server: format!("bhw-{name}-{}", std::process::id()),
        })
    }

    fn tmux(&self, args: &[&str]) -> std::process::Output {
        StdCommand::new("tmux")
            .arg("-L")
            .arg(&self.server)
            .args(args)
            .output()
            .expect("tmux runs")
    }

    /// Run `command` in a detached `width`×`height` session named `main`.
    fn run(&self, width: u16, height: u16, command: &str) {
        let out = self.tmux(&[
            "new-session",
            "-d",
            "-s",
            "main",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            command,
        ]);
        assert!(out.status.success(), "{out:?}");
    }

    /// The screen, with colours as escape sequences.
    fn screen(&self) -> String {
        String::from_utf8_lossy(
            &self
                .tmux(&["capture-pane", "-p", "-e", "-t", "main"])
                .stdout,
        )
        .into_owned()
    }

    fn keys(&self, keys: &str) {
        assert!(
            self.tmux(&["send-keys", "-t", "main", keys])
                .status
                .success()
        );
    }

    fn alive(&self) -> bool {
        self.tmux(&["has-session", "-t", "main"]).status.success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

/// `sh -c` words: the worker run in `home`, as a person would type it.
fn shell_command(home: &Home, args: &str) -> String {
    format!(
        "env BLOBHUB_WORKER_HOME='{}' '{WORKER}' {args}",
        home.root().display()
    )
}

/// Whether the screen line showing `text` shows it green: the last SGR sequence before it sets
/// colour 2 (`32`, or `38;5;2`).
fn green(screen: &str, text: &str) -> bool {
    screen.lines().any(|l| {
        l.find(text).is_some_and(|at| {
            let before = &l[..at];
            let Some(start) = before.rfind("\u{1b}[") else {
                return false;
            };
            let params: Vec<&str> = before[start + 2..]
                .trim_end_matches('m')
                .split(';')
                .collect();
            params.contains(&"32") || params.windows(3).any(|w| w == ["38", "5", "2"])
        })
    })
}

fn pid_alive(pid: u32) -> bool {
    blobhub_worker::instance_lock::pid_alive(pid)
}

/// A worker with one section and a thread in a long turn of the test agent.
async fn busy_worker(
    env: &Env,
    session: &str,
    extra: &str,
) -> (Running, blobhub_emulator::SessionIds) {
    let s = env.session(session);
    // No agent started ahead of its message: a test agent in the folder then means the turn runs.
    env.configure(&[&s], 2, &format!("    prestart: false\n{extra}"));
    let worker = env.start().await;
    env.handoff(&s, "t");
    env.wait_state(&s, "t", "active").await;
    env.say(&s, "t", "sleep: 600000");
    let work = env.work_folder().to_path_buf();
    eventually("the agent runs its turn", || agent_processes(&work) == 1).await;
    (worker, s)
}

#[tokio::test(flavor = "multi_thread")]
async fn top_attaches_and_leaves_the_worker_running_then_status_and_stop_reach_it() {
    let Some(tmux) = Tmux::new("top") else {
        return;
    };
    let env = Env::new().await;
    // No worker yet: status says so with its code.
    env.home
        .run(&["status"], None)
        .await
        .assert_code("WORKER_NOT_RUNNING");
    let (mut worker, _s) = busy_worker(&env, "ses_ops_top", "").await;
    let pid = worker.pid();

    tmux.run(80, 24, &shell_command(&env.home, "top"));
    eventually("top shows the thread in its turn", || {
        green(&tmux.screen(), "active (turn)")
    })
    .await;
    let screen = tmux.screen();
    assert!(screen.contains("1/2 agents"), "{screen}");
    assert!(screen.contains("session_agent_harness · s0"), "{screen}");
    tmux.keys("q");
    eventually("top exits on q", || !tmux.alive()).await;
    assert!(pid_alive(pid), "q in top leaves the worker running");

    let status = env.home.run(&["--json", "status"], None).await;
    status.assert_success();
    let doc: Value = serde_json::from_str(status.stdout.trim()).unwrap();
    assert_eq!(doc["running"], true);
    assert_eq!(doc["identity"]["pid"], pid);
    assert_eq!(doc["sections"][0]["state"], "attached");
    assert_eq!(doc["sections"][0]["threads"]["t"]["state"], "active (turn)");
    assert_eq!(doc["sections"][0]["threads"]["t"]["agent"], "test_double");
    assert_eq!(
        doc["slots"],
        serde_json::json!({"busy": 1, "total": 2, "held": 0, "held_max": 8})
    );
    let human = env.home.run(&["status"], None).await;
    human.assert_success();
    assert!(
        human
            .stdout
            .contains("section s0 (session_agent_harness): attached"),
        "{human:?}"
    );

    let stop = env.home.run(&["stop", "--timeout", "60s"], None).await;
    stop.assert_success();
    assert!(
        stop.stdout.contains(&format!("worker stopped: pid {pid}")),
        "{stop:?}"
    );
    let exit = worker.child.wait().await.unwrap();
    assert_eq!(exit.code(), Some(0));
    assert_eq!(
        agent_processes(env.work_folder()),
        0,
        "no agent outlives the worker"
    );
    assert!(!env.home.root().join("worker.sock").exists());
    env.home
        .run(&["stop"], None)
        .await
        .assert_code("WORKER_NOT_RUNNING");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_socket_is_the_owners_only() {
    let env = Env::new().await;
    let s = env.session("ses_ops_sock");
    env.configure(&[&s], 1, "");
    let worker = env.start().await;
    let socket = env.home.root().join("worker.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Open the way to the file for everyone: the peer check must still refuse another user.
        let root = env.home.root();
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o711)).unwrap();
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
        let out = tokio::process::Command::new(WORKER)
            .args(["status"])
            .env("BLOBHUB_WORKER_HOME", root)
            .uid(65534)
            .gid(65534)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("error: STATUS_SOCKET_ERROR: "), "{stderr}");
        assert!(stderr.contains("only the worker's own user"), "{stderr}");
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    worker.terminate().await.assert_success();
}

/// Every post to the threads hangs from now on (the emulator holds each request for ten
/// minutes): a drain that must post the turn's end cannot finish on its own.
fn hang_posts(env: &Env) {
    env.admin.set_faults(
        "post_session_thread_item",
        blobhub_emulator::Faults {
            latency_ms: 600_000,
            ..Default::default()
        },
    );
}

/// The worker's exit status, failing the test when it does not exit.
async fn exit_of(worker: &mut Running) -> std::process::ExitStatus {
    tokio::time::timeout(crate::harness_support::PATIENCE, worker.child.wait())
        .await
        .expect("the worker exits")
        .unwrap()
}

/// The turn cut by the stop is closed `interrupted` by the restarted worker, exactly once.
async fn restart_closes_the_turn(env: &Env, s: &blobhub_emulator::SessionIds) {
    env.admin.clear_faults();
    let closed = |e: &Env| {
        e.transcript(s, "t")
            .iter()
            .filter(|(t, x)| t == "turn_end" && x.contains("interrupted"))
            .count()
    };
    let worker = env.start().await;
    env.wait("the restarted worker closes the cut turn", |e| {
        closed(e) >= 1
    })
    .await;
    worker.terminate().await.assert_success();
    assert_eq!(closed(env), 1, "{:?}", env.transcript(s, "t"));
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: plain kill(2) on our own child.
    assert_eq!(
        unsafe { libc::kill(i32::try_from(pid).unwrap(), signal) },
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_within_the_bound_and_a_restart_closes_the_cut_turn() {
    let env = Env::new().await;
    let (mut worker, s) = busy_worker(
        &env,
        "ses_ops_drain",
        "shutdown:\n  drain_timeout_ms: 500\n",
    )
    .await;
    // The drain cannot post the turn's end: only the bound ends it.
    hang_posts(&env);
    signal(worker.pid(), libc::SIGTERM);
    assert_eq!(exit_of(&mut worker).await.code(), Some(0));
    assert_eq!(agent_processes(env.work_folder()), 0, "the agent is gone");
    assert!(
        !env.home.tree.instance_path().exists(),
        "the lock is released"
    );
    restart_closes_the_turn(&env, &s).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sigint_forces_the_stop() {
    let env = Env::new().await;
    // A bound of an hour and posts that hang: only the second SIGINT ends the drain.
    let (mut worker, s) = busy_worker(
        &env,
        "ses_ops_force",
        "shutdown:\n  drain_timeout_ms: 3600000\n",
    )
    .await;
    hang_posts(&env);
    signal(worker.pid(), libc::SIGINT);
    // Signals of one kind may coalesce: the second goes once the first is seen (the status
    // socket reports the stop in progress).
    eventually_async(&env).await;
    signal(worker.pid(), libc::SIGINT);
    assert_eq!(exit_of(&mut worker).await.code(), Some(0));
    assert_eq!(agent_processes(env.work_folder()), 0, "the agent is gone");
    restart_closes_the_turn(&env, &s).await;
}

/// Waits until `status` reports the stop in progress.
async fn eventually_async(env: &Env) {
    let deadline = std::time::Instant::now() + crate::harness_support::PATIENCE;
    loop {
        let out = env.home.run(&["--json", "status"], None).await;
        out.assert_success();
        let doc: Value = serde_json::from_str(out.stdout.trim()).unwrap();
        if doc["stopping"] == true {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stop never showed"
        );
    }
}

/// One GET over a fresh connection: (status, body).
async fn get(addr: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_and_metrics_show_a_refused_section_and_an_active_thread() {
    let env = Env::new().await;
    let (taken, free) = (env.session("ses_ops_taken"), env.session("ses_ops_free"));
    env.set_envelope(
        &taken,
        "worker",
        serde_json::json!({"type": "thread", "thread": {"metadata": {
            "user": {"user_id": crate::harness_support::alice().id}, "instance": {"status": "attached"}}}}),
    );
    env.configure(&[&taken, &free], 2, "");
    // A non-loopback address must be explicit.
    env.home
        .run(&["start", "--metrics-addr", "0.0.0.0:0"], None)
        .await
        .assert_code("METRICS_ADDR_NOT_LOOPBACK");
    let worker = match env
        .home
        .spawn_start_with(&["start", "--metrics-addr", "127.0.0.1:0"], &[])
        .await
    {
        Ok(w) => w,
        Err(o) => panic!("worker did not start: {o:?}"),
    };
    let addr = worker
        .stderr_head
        .split("metrics on http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no metrics address: {}", worker.stderr_head))
        .to_owned();
    env.handoff(&free, "t");
    env.wait_state(&free, "t", "active").await;
    let mut last;
    let deadline = std::time::Instant::now() + crate::harness_support::PATIENCE;
    loop {
        let (status, health) = get(&addr, "/healthz").await;
        let (_, metrics) = get(&addr, "/metrics").await;
        let seen = status == 503
            && health.contains("SESSION_OWNED_BY_DIFFERENT_USER")
            && metrics.contains("blobhub_worker_section_up{section=\"s0\",job_type=\"session_agent_harness\",status=\"stopped\",code=\"SESSION_OWNED_BY_DIFFERENT_USER\"} 0\n")
            && metrics.contains("blobhub_worker_sections{status=\"attached\"} 1\n")
            && metrics.contains("blobhub_worker_threads{state=\"active")
            && metrics.contains("blobhub_worker_job_events_total{job_type=\"session_agent_harness\",event=\"thread_active\",level=\"info\"} 1\n")
            && metrics.contains("blobhub_worker_api_requests_total{command=\"users_me\",outcome=\"ok\"} 1\n");
        last = (status, health, metrics);
        if seen {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "healthz/metrics never showed the refusal and the thread: {last:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let health: Value = serde_json::from_str(&last.1).unwrap();
    assert_eq!(health["status"], "unhealthy");
    assert!(
        last.2.contains("blobhub_worker_agent_slots_total 2\n"),
        "{}",
        last.2
    );
    assert_eq!(get(&addr, "/nothing").await.0, 404);

    // An agent asking the person is held (no slot): the gauge and `status` count it until the
    // answer.
    let held = |n: u32| format!("blobhub_worker_held_waits {n}\n");
    env.say(&free, "t", "ask: may I?");
    let deadline = std::time::Instant::now() + crate::harness_support::PATIENCE;
    loop {
        let (_, metrics) = get(&addr, "/metrics").await;
        if metrics.contains(&held(1)) {
            assert!(
                metrics.contains("blobhub_worker_held_waits_max 8\n"),
                "{metrics}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the held wait never showed: {metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let status = env.home.run(&["--json", "status"], None).await;
    let status: Value = serde_json::from_str(status.stdout.trim()).unwrap();
    assert_eq!(status["slots"]["held"], 1, "{status}");
    assert_eq!(status["slots"]["held_max"], 8, "{status}");
    env.say(&free, "t", "yes");
    env.wait("the answer reached the agent", |e| {
        e.has(&free, "t", "text", "answered: Approve")
    })
    .await;
    assert!(get(&addr, "/metrics").await.1.contains(&held(0)));
    worker.terminate().await.assert_success();
}

#[tokio::test(flavor = "multi_thread")]
async fn service_install_writes_a_unit_systemd_accepts_and_uninstall_removes_it() {
    let home = Home::new();
    let units = tempfile::tempdir().unwrap();
    let dir = units.path().to_str().unwrap();
    let out = home
        .run(&["service", "install", "--user", "--unit-dir", dir], None)
        .await;
    out.assert_success();
    let unit = units.path().join("blobhub-worker.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(
        text.contains(&format!("ExecStart={WORKER} start\n")),
        "{text}"
    );
    assert!(text.contains("Restart=on-failure\n"), "{text}");
    // The default drain (10 s) + the agents' grace (2 s) + margin.
    assert!(text.contains("TimeoutStopSec=27\n"), "{text}");
    home.run(&["service", "install", "--user", "--unit-dir", dir], None)
        .await
        .assert_code("SERVICE_UNIT_EXISTS");
    match StdCommand::new("systemd-analyze").arg("--version").output() {
        Ok(_) => {
            let verify = StdCommand::new("systemd-analyze")
                .args(["verify", "--man=no"])
                .arg(&unit)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&verify.stderr);
            assert!(verify.status.success(), "systemd-analyze verify: {stderr}");
            assert!(!stderr.contains("blobhub-worker.service:"), "{stderr}");
        }
        Err(_) => assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is not installed"
        ),
    }
    home.run(&["service", "uninstall", "--user", "--unit-dir", dir], None)
        .await
        .assert_success();
    assert!(!unit.exists());
    let bash = home.run(&["completions", "bash"], None).await;
    bash.assert_success();
    assert!(bash.stdout.contains("blobhub-worker"), "{bash:?}");
    assert!(bash.stdout.contains("stop") && bash.stdout.contains("--timeout"));
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_are_one_object_per_line_with_event_section_and_thread() {
    let env = Env::new().await;
    let s = env.session("ses_ops_log");
    env.configure(&[&s], 1, "");
    // The flag wins over BLOBHUB_WORKER_LOG_FORMAT (set to `pretty` for the other tests).
    let worker = match env
        .home
        .spawn_start_with(&["--log-format", "json", "start"], &[])
        .await
    {
        Ok(w) => w,
        Err(o) => panic!("worker did not start: {o:?}"),
    };
    env.handoff(&s, "t");
    env.wait_state(&s, "t", "active").await;
    let out = worker.terminate().await;
    out.assert_success();
    let records: Vec<Value> = out
        .stderr
        .lines()
        .filter(|l| !l.starts_with(crate::support::STARTED_MARKER))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let registered = records
        .iter()
        .find(|r| r["event"] == "thread_registered")
        .unwrap_or_else(|| panic!("no thread_registered: {records:#?}"));
    assert_eq!(registered["level"], "info");
    assert_eq!(registered["section"], "s0");
    assert_eq!(registered["thread"], "t");
    assert!(registered["ts"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_its_socket_the_worker_is_found_and_stopped_through_the_lock() {
    let env = Env::new().await;
    let s = env.session("ses_ops_lock");
    env.configure(&[&s], 1, "");
    let mut worker = env.start().await;
    let pid = worker.pid();
    std::fs::remove_file(env.home.root().join("worker.sock")).unwrap();
    let status = env.home.run(&["--json", "status"], None).await;
    status.assert_success();
    let doc: Value = serde_json::from_str(status.stdout.trim()).unwrap();
    assert_eq!(doc["running"], true);
    assert_eq!(doc["identity"]["pid"], pid);
    let stop = env.home.run(&["--json", "stop"], None).await;
    stop.assert_success();
    let doc: Value = serde_json::from_str(stop.stdout.trim()).unwrap();
    assert_eq!(doc["action"], "sigterm");
    assert_eq!(doc["pid"], pid);
    assert_eq!(exit_of(&mut worker).await.code(), Some(0));
}
