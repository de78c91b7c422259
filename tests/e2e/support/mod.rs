//! Helpers shared by the end-to-end tests: a temporary state tree per test, running the built
//! binary against it, an in-process emulator, and assertions on coded errors.

#![allow(
    dead_code,
    reason = "each test module uses a different subset of the helpers"
)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use blobhub_emulator::{Admin, CreateSession, Emulator, EmulatorConfig, User};
use blobhub_worker::state_tree::{
    ApiCredentials, ApiKey, Credentials, Identity, IdentityUser, StateTree,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// The worker binary under test.
pub const WORKER: &str = env!("CARGO_BIN_EXE_blobhub-worker");
/// The line `start` prints once preflight passed (see `cli::start::STARTED_MARKER`).
pub const STARTED_MARKER: &str = "worker started:";

/// The default emulator user.
pub fn demo_user() -> User {
    User::demo()
}

/// A second user, for identity-mismatch tests.
pub fn other_user() -> User {
    User {
        id: "usr_other".into(),
        name: "Other User".into(),
        email: "other@example.com".into(),
        api_key: "bhk_other_key".into(),
    }
}

/// An emulator knowing the demo user and [`other_user`].
pub async fn emulator() -> Emulator {
    Emulator::start(EmulatorConfig {
        users: vec![demo_user(), other_user()],
        state_file: None,
    })
    .await
    .expect("emulator starts")
}

/// A temporary `BLOBHUB_WORKER_HOME`.
pub struct Home {
    _dir: tempfile::TempDir,
    pub tree: StateTree,
}

impl Home {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let tree = StateTree::at(dir.path().join("worker-home"));
        Home { _dir: dir, tree }
    }

    pub fn root(&self) -> &Path {
        self.tree.root()
    }

    /// Writes `credentials.yaml` (0600) as `login` would.
    pub fn write_credentials(&self, api_url: &str, key: &str) {
        self.tree
            .save_credentials(&Credentials {
                api: ApiCredentials {
                    url: api_url.to_owned(),
                    key: ApiKey::new(key),
                },
            })
            .unwrap();
    }

    /// Writes `identity.yaml` for `user_id`.
    pub fn write_identity(&self, user_id: &str) {
        self.tree
            .save_identity(&Identity {
                user: IdentityUser {
                    user_id: user_id.to_owned(),
                    name: String::new(),
                    email: String::new(),
                    recorded_at: "2026-01-01T00:00:00Z".to_owned(),
                },
            })
            .unwrap();
    }

    /// Writes `config.yaml`. The tests' work folders are temporary folders, outside the default
    /// work root (the user's home), so a config that names no `workspace` gets
    /// `workspace.allowed_roots: [<temp dir>]` added.
    pub fn write_config(&self, text: &str) {
        std::fs::create_dir_all(self.root()).unwrap();
        let mut text = text.to_owned();
        let names_workspace = text.starts_with("workspace:") || text.contains("\nworkspace:");
        if text.contains("sections:") && !names_workspace {
            if !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&format!(
                "workspace:\n  allowed_roots: [{}]\n",
                std::env::temp_dir().display()
            ));
        }
        std::fs::write(self.tree.config_path(), text).unwrap();
    }

    /// Credentials and identity of the demo user against `emulator`, and a config with one
    /// section on a new session of the emulator: everything preflight needs to pass, and a
    /// worker that keeps running until it is stopped.
    pub fn logged_in(&self, emulator: &Emulator) {
        self.write_credentials(&emulator.api_url(), &demo_user().api_key);
        self.write_identity(&demo_user().id);
        let ids = emulator
            .admin()
            .create_session(CreateSession::default())
            .expect("session created");
        self.write_config(&format!(
            "sections:\n  - name: e2e\n    job_type: session_agent_harness\n    session:\n      org_id: {}\n      blob_id: {}\n      revision_id: {}\n      session_id: {}\n",
            ids.org_id, ids.blob_id, ids.revision_id, ids.session_id
        ));
    }

    pub fn chmod(&self, path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A command for the worker binary on this home, with no inherited log settings.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(WORKER);
        cmd.args(args)
            .env("BLOBHUB_WORKER_HOME", self.root())
            .env_remove("BLOBHUB_WORKER_LOG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs the worker to completion with `stdin` (if any) as its standard input.
    pub async fn run(&self, args: &[&str], stdin: Option<&str>) -> Outcome {
        let mut cmd = self.command(args);
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let child = cmd.spawn().expect("worker spawns");
        finish(child, stdin).await
    }

    /// Spawns `start` and returns it once it has printed the start line, or the outcome when
    /// it exited instead.
    pub async fn spawn_start(&self) -> Result<Running, Outcome> {
        self.spawn_start_with_env(&[]).await
    }

    /// [`Home::spawn_start`] with variables added to the worker's own environment.
    pub async fn spawn_start_with_env(&self, vars: &[(&str, &str)]) -> Result<Running, Outcome> {
        self.spawn_start_with(&["start"], vars).await
    }

    /// [`Home::spawn_start`] with these arguments (`start` among them) and variables.
    pub async fn spawn_start_with(
        &self,
        args: &[&str],
        vars: &[(&str, &str)],
    ) -> Result<Running, Outcome> {
        let mut command = self.command(args);
        command.envs(vars.iter().copied());
        let mut child = command.spawn().expect("worker spawns");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = String::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push_str(&line);
            seen.push('\n');
            if line.starts_with(STARTED_MARKER) {
                // Keep draining stderr so that the worker never blocks on a full pipe.
                let drain = tokio::spawn(async move {
                    let mut rest = String::new();
                    while let Ok(Some(line)) = lines.next_line().await {
                        rest.push_str(&line);
                        rest.push('\n');
                    }
                    rest
                });
                return Ok(Running {
                    child,
                    stderr_head: seen,
                    drain,
                });
            }
        }
        let out = child.wait_with_output().await.unwrap();
        Err(Outcome {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: seen,
        })
    }
}

/// A worker that has passed preflight.
pub struct Running {
    pub child: Child,
    pub stderr_head: String,
    drain: tokio::task::JoinHandle<String>,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Sends SIGTERM and waits for the exit.
    pub async fn terminate(mut self) -> Outcome {
        let pid = i32::try_from(self.pid()).unwrap();
        // SAFETY: plain kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let status = self.child.wait().await.unwrap();
        let rest = self.drain.await.unwrap_or_default();
        Outcome {
            status,
            stdout: String::new(),
            stderr: format!("{}{rest}", self.stderr_head),
        }
    }
}

/// A finished worker run.
#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// Asserts exit status 1 and the one `error: CODE:` line with a `hint:`.
    pub fn assert_code(&self, code: &str) {
        assert_eq!(self.status.code(), Some(1), "{self:#?}");
        let prefix = format!("error: {code}: ");
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect();
        assert_eq!(errors.len(), 1, "exactly one error line: {self:#?}");
        assert!(errors[0].starts_with(&prefix), "expected {code}: {self:#?}");
        assert!(
            self.stderr.lines().any(|l| l.starts_with("hint: ")),
            "a hint: {self:#?}"
        );
    }

    pub fn assert_success(&self) {
        assert_eq!(self.status.code(), Some(0), "{self:#?}");
    }
}

/// Asserts that the emulator received no data-channel request (no session command or query).
pub fn assert_no_session_command(admin: &Admin) {
    let data: Vec<_> = admin
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/data/") || r.command.is_some())
        .collect();
    assert!(data.is_empty(), "session commands were sent: {data:?}");
}

/// How many requests the emulator got on a path ending with `suffix`.
pub fn count_requests(admin: &Admin, suffix: &str) -> usize {
    admin
        .requests()
        .iter()
        .filter(|r| r.path.ends_with(suffix))
        .count()
}

/// The pid of a process that has exited (for stale locks).
pub fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

pub fn path_string(path: PathBuf) -> String {
    path.to_string_lossy().into_owned()
}

impl Home {
    /// Runs the worker on a pseudo-terminal (through util-linux `script`) so that it prompts,
    /// typing `input`. stdout and stderr arrive merged in `stdout`.
    pub async fn run_in_terminal(&self, args: &[&str], input: &str) -> Outcome {
        let command_line = std::iter::once(WORKER)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        let child = Command::new("script")
            .args(["-qec", &command_line, "/dev/null"])
            .env("BLOBHUB_WORKER_HOME", self.root())
            .env_remove("BLOBHUB_WORKER_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("util-linux `script` is installed");
        finish(child, Some(input)).await
    }
}

/// Writes `input` (if any) to the child's stdin, closes it, and waits for the outcome.
async fn finish(mut child: Child, input: Option<&str>) -> Outcome {
    if let Some(text) = input {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(text.as_bytes()).await.unwrap();
        drop(pipe);
    }
    let out = child.wait_with_output().await.unwrap();
    Outcome {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
