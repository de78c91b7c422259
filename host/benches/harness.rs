//! Worker vs reference (issue 4, "Benchmarks"): `just bench` (release; not in CI). Results go in
//! docs/benchmarks.md.
//!
//! In one run, against the in-process emulator on 127.0.0.1 and with the default polling
//! (interval_idle 1500 ms, interval_active 3000 ms), this measures our worker (the release
//! `blobhub-worker` next to this bench) and the reference worker (Python `blobhub-worker` 0.11.0,
//! found through `BLOBHUB_REFERENCE_WORKER`; `tests/emulator/reference/install.sh DIR` installs it
//! and prints the path — without it only our figures are printed):
//!
//! 1. launch → first `list_session_events` request the emulator receives (ours cold: an empty
//!    state tree, no compile cache; ours warm: second start on the same tree);
//! 2. a person's item → the reply item posted (both), and ours split: item → the test agent's
//!    stdin, the agent's line → the posted item; p50/p99 with the thread idle (posted at a random
//!    moment) and right after a turn (posted as soon as the previous `turn_end` lands);
//! 3. idle RSS (VmRSS summed over the worker's process tree) and CPU (utime+stime over a fixed
//!    window, % of one core) with 1 and 10 sections, each on its own session, no threads, against
//!    the emulator and against it imitating a slower server without keep-alive; CPU per request,
//!    beside our worker with its feeds through reqwest and the floors measured in the same run on
//!    the same sessions: our HTTP client alone (`poll-floor`), a minimal tokio client
//!    (`tokio-floor`) and a minimal blocking `std::net` client (`machine-floor`, the machine's
//!    own price of the exchange);
//! 4. with the real Claude Code CLI (`BLOBHUB_CLAUDE`, else tests/agents/node_modules/.bin/claude;
//!    `npm ci --prefix tests/agents` installs it) against the fake Anthropic API in-process
//!    (`blobhub-fake-anthropic`), both workers driving the same CLI: a person's item → the CLI's
//!    first model request arriving at the fake, and the fake's last response of the turn sent →
//!    the agent's text item posted; the item posted at a random moment of the poll cycle;
//! 5. `threads`: 1, 20, 200 threads in one section, one message each at once (issue 14);
//! 6. `scale`: 1 to 200 sections: attach time, RSS and PSS, CPU, requests, poll spread (issue 14);
//! 7. `paging`: 10,000 events waiting in the feed and a thread of 10,000 items, each beside the
//!    empty case: time and the worker's peak RSS (issue 14, bounded work per poll).
//!
//! Arguments (after `--`): any of `launch`, `latency`, `idle`, `threads`, `scale`, `paging`, `claude` to
//! run only those parts.
//! `BENCH_TURNS` (default 30 per condition), `BENCH_CLAUDE_TURNS` (default 10) and
//! `BENCH_IDLE_WINDOW_S` (default 30, one heartbeat period) shorten it (and `BENCH_IDLE_SECTIONS`, default `1,10`, picks
//! the section counts of part `idle`; `BENCH_IDLE_SERVERS` and `BENCH_IDLE_VARIANTS` pick its
//! servers and variants, see `idle`); `BENCH_PAGING_N` (default 10,000) sizes `paging`;
//! `BENCH_SCALE_SECTIONS` (default `1,10,50,100,200`) picks the section counts of `scale`, and
//! `BENCH_SCALE_TIMELINE=1` prints its event polls in bursts; `BENCH_THREADS_TIMELINE=1` prints
//! the worker's requests in part `threads` from the first message on.
//! `BENCH_PRESTART=0` runs ours with `agents.claude_code.prestart: false` (a new CLI per turn, as
//! the reference) in part 4. `BENCH_TRACE=1` prints each measured turn's timeline in part 4.
//! `BENCH_OURS_EXE=PATH` measures another build's `blobhub-worker` as ours: two benches started
//! at once, one per build, compare builds on the machine as it is at that moment.
//! Every loop is bounded; every wait has a deadline; only 127.0.0.1 is contacted.

mod common;
#[path = "harness/machine_floor.rs"]
mod machine_floor;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use blobhub_emulator::{Admin, CreateSession, Emulator, SessionIds};
use blobhub_fake_anthropic::{FakeAnthropic, MessagesRequest};
use blobhub_worker::state_tree::StateTree;
use common::{
    PATIENCE, TEST_AGENT, describe, emulator, epoch_micros, now_us, our_section, our_start,
    our_workspace, quantile, stop, thread_state, write_our_login,
};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const REFERENCE_VAR: &str = "BLOBHUB_REFERENCE_WORKER";
const CLAUDE_VAR: &str = "BLOBHUB_CLAUDE";
/// Any single wait (a start, a reply, an attach) fails the bench after this long.
const SETTLE: Duration = Duration::from_secs(10);
const PERSON: &str = "usr_person";
const OURS_USER: &str = "usr_ours";
const REF_USER: &str = "usr_reference";
const REF_PROFILE: &str = "emu";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Ours,
    Reference,
}

impl Kind {
    fn user(self) -> &'static str {
        match self {
            Kind::Ours => OURS_USER,
            Kind::Reference => REF_USER,
        }
    }
    /// The thread alias (the reference's sections scope threads by a prefix).
    fn thread(self) -> &'static str {
        match self {
            Kind::Ours => "t",
            Kind::Reference => "tasks/t1",
        }
    }
}

/// An emulator, `n` sessions and a home for one worker of `kind`.
struct Rig {
    kind: Kind,
    reference: Option<PathBuf>,
    emu: Emulator,
    admin: Admin,
    sessions: Vec<SessionIds>,
    dir: tempfile::TempDir,
    /// Set when the threads go to the real Claude Code CLI instead of the scripted agent.
    claude: Option<Claude>,
    /// Added to our worker's environment (a variant measured beside the default).
    env: Vec<(&'static str, String)>,
}

/// The real `claude` and the fake model API it talks to (one per rig).
struct Claude {
    cli: PathBuf,
    fake: FakeAnthropic,
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

impl Rig {
    async fn new(kind: Kind, reference: Option<&Path>, sections: usize) -> Rig {
        Rig::build(kind, reference, sections, None).await
    }

    /// One session whose threads go to the real Claude Code CLI at `cli`.
    async fn with_claude(kind: Kind, reference: Option<&Path>, cli: &Path) -> Rig {
        let fake = FakeAnthropic::start().await.expect("fake model API starts");
        let claude = Claude {
            cli: cli.to_path_buf(),
            fake,
        };
        Rig::build(kind, reference, 1, Some(claude)).await
    }

    async fn build(
        kind: Kind,
        reference: Option<&Path>,
        sections: usize,
        claude: Option<Claude>,
    ) -> Rig {
        let (emu, admin) = emulator(&[
            (OURS_USER, "bhk_ours"),
            (REF_USER, "bhk_reference"),
            (PERSON, "bhk_person"),
        ])
        .await;
        let sessions = (0..sections)
            .map(|i| {
                admin
                    .create_session(CreateSession {
                        // One blob per session: the alias `main` is unique per revision.
                        org_id: Some("org_bench".into()),
                        blob_id: Some(format!("blb_bench{i}")),
                        alias: Some("main".into()),
                        session_id: Some(format!("ses_bench{i}")),
                        ..Default::default()
                    })
                    .expect("session")
            })
            .collect();
        let rig = Rig {
            kind,
            reference: reference.map(Path::to_path_buf),
            emu,
            admin,
            sessions,
            dir: tempfile::tempdir().unwrap(),
            claude,
            env: Vec::new(),
        };
        std::fs::create_dir_all(rig.work_folder()).unwrap();
        std::fs::create_dir_all(rig.ref_home()).unwrap();
        rig.write_home();
        rig
    }

    fn work_folder(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    fn our_tree(&self) -> StateTree {
        StateTree::at(self.dir.path().join("worker-home"))
    }

    fn ref_home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// The CLI's environment from either worker ([`claude_env`]), its config folder in the rig.
    fn claude_env(&self) -> Vec<(&'static str, String)> {
        match &self.claude {
            Some(c) => claude_env(&c.fake, &self.dir.path().join("claude-config")),
            None => Vec::new(),
        }
    }

    /// The `agents:` block of either worker's config.yaml. Ours hands the CLI its environment
    /// through `env`; the reference has no such key, so it gets the same variables from its own
    /// environment ([`Rig::spawn`]), which it passes on (its removal of `CLAUDE_CODE_*` does not
    /// take effect: docs/session-agent-harness.md).
    fn agents_block(&self) -> String {
        let Some(c) = &self.claude else {
            return match self.kind {
                Kind::Ours => format!("agents:\n  test_double:\n    executable: {TEST_AGENT}\n"),
                Kind::Reference => String::new(),
            };
        };
        let mut text = format!(
            "agents:\n  claude_code:\n    executable: {}\n",
            c.cli.display()
        );
        if self.kind == Kind::Ours {
            if std::env::var("BENCH_PRESTART").as_deref() == Ok("0") {
                // The cold path, for comparison: a new CLI per turn, as the reference does.
                text.push_str("    prestart: false\n");
            }
            text.push_str("    env:\n");
            for (name, value) in self.claude_env() {
                text.push_str(&format!("      {name}: {}\n", json!(value)));
            }
        }
        text
    }

    /// Credentials, identity and config with one section per session, default polling.
    fn write_home(&self) {
        let api_url = self.emu.api_url();
        match self.kind {
            Kind::Ours => {
                let tree = self.our_tree();
                write_our_login(&tree, api_url, OURS_USER, "bhk_ours");
                let mut text = format!("{}sections:\n", self.agents_block());
                for (i, s) in self.sessions.iter().enumerate() {
                    text.push_str(&our_section(&format!("s{i}"), s));
                }
                text.push_str(&our_workspace());
                std::fs::write(tree.config_path(), text).unwrap();
            }
            Kind::Reference => {
                let home = self.ref_home();
                write_private(
                    &home.join(".blobhub/credentials.yaml"),
                    &format!(
                        "profiles:\n  {REF_PROFILE}:\n    key: bhk_reference\n    url: {api_url}\ndefault: {REF_PROFILE}\n"
                    ),
                );
                let mut text = format!("{}sections:\n", self.agents_block());
                for (i, s) in self.sessions.iter().enumerate() {
                    text.push_str(&format!(
                        "  - name: main{i}\n    job_type: session_agent_harness\n    session:\n      \
                         org_id: {}\n      blob_id: {}\n      revision_id: default\n      session_id: main\n      \
                         session_prefix: tasks/\n",
                        s.org_id, s.blob_id
                    ));
                }
                write_private(
                    &home.join(format!(
                        ".blobhub-worker/profiles/{REF_PROFILE}/config.yaml"
                    )),
                    &text,
                );
                std::fs::write(
                    self.dir.path().join("script.json"),
                    json!({"turns": [{"text": "scripted reply"}]}).to_string(),
                )
                .unwrap();
            }
        }
    }

    fn spawn(&self) -> Child {
        let log_path = self.dir.path().join("worker.log");
        let mut cmd = match self.kind {
            Kind::Ours => {
                let mut c = our_start(&self.our_tree(), &log_path);
                c.envs(self.env.iter().cloned());
                if std::env::var_os("BENCH_TRACE").is_some() {
                    // The spawn's own line (`child_spawned`, with its duration) for the timeline,
                    // in the pretty format: its timestamps have microseconds (the JSON lines the
                    // worker writes when stderr is not a terminal have seconds only).
                    c.env(
                        "BLOBHUB_WORKER_LOG",
                        "info,blobhub_worker::runtime::capabilities::process=debug",
                    )
                    .env("BLOBHUB_WORKER_LOG_FORMAT", "pretty");
                }
                if self.claude.is_some() {
                    // The CLI's HOME as the reference's: a folder of the rig, not the user's.
                    c.env("HOME", self.ref_home());
                }
                c
            }
            Kind::Reference => {
                let mut c = Command::new(self.reference.as_ref().unwrap());
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log_path)
                    .unwrap();
                c.args(["start", "--profile", REF_PROFILE])
                    .env("HOME", self.ref_home())
                    .env("TEST_DOUBLE_SCRIPT", self.dir.path().join("script.json"))
                    .env_remove("BLOBHUB_API_KEY")
                    .env_remove("BLOBHUB_API_URL")
                    .env_remove("BLOBHUB_PROFILE")
                    .env_remove("TEST_DOUBLE_AUTO_PROMPT")
                    .env("NO_PROXY", "127.0.0.1,localhost")
                    .env("no_proxy", "127.0.0.1,localhost")
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().unwrap())
                    .stderr(log)
                    .kill_on_drop(true)
                    .envs(self.claude_env());
                c
            }
        };
        cmd.spawn().expect("spawn the worker")
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("worker.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    async fn wait(&self, what: &str, pred: impl FnMut(&Admin) -> bool) {
        if !self.admin.wait_for(PATIENCE, pred).await {
            panic!(
                "{:?}: timed out waiting for {what}\nworker log:\n{}",
                self.kind,
                self.log_tail()
            );
        }
    }

    fn items(&self, s: &SessionIds, alias: &str) -> Vec<Value> {
        self.admin.items(&s.session_id, alias)
    }

    fn count(&self, s: &SessionIds, alias: &str, ty: &str) -> usize {
        self.items(s, alias)
            .iter()
            .filter(|i| i["user_id"] == self.kind.user() && i["metadata"]["type"] == ty)
            .count()
    }

    fn envelope(&self, state: &str) -> Value {
        let mut agent = json!({"type": "test_double"});
        if self.claude.is_some() {
            // Both in `approval` mode (the default): a text reply needs no permission, and the
            // reference's `autonomous` is bypass mode, which the CLI refuses as root.
            agent = json!({"type": "claude_code"});
        } else if self.kind == Kind::Reference {
            agent["permissions"] = json!("autonomous");
        }
        json!({"type": "thread", "thread": {"attributes": {"name": "bench"}, "metadata": {
            "instance": {"state": state},
            "agent": agent,
            "workspace": {"work_folder": self.work_folder().to_str().unwrap()}}}})
    }

    fn state(&self, s: &SessionIds) -> String {
        thread_state(&self.admin, &s.session_id, self.kind.thread())
    }

    /// Every section attached (its `attached` activity item posted).
    async fn wait_attached(&self) {
        let sessions = self.sessions.clone();
        self.wait("attached on every session", |_| {
            sessions
                .iter()
                .all(|s| self.count(s, "worker", "attached") >= 1)
        })
        .await;
    }
}

impl Rig {
    /// One start until every section is attached, and a stop: the steady state of a machine
    /// (compile cache filled, sections known) for the idle measurements.
    async fn warm_up(&self) {
        let mut child = self.spawn();
        self.wait_attached().await;
        stop(&mut child).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Launch to first event poll.

/// µs from spawning `start` to the first `list_session_events` request.
async fn first_poll(rig: &Rig) -> i64 {
    rig.admin.clear_requests();
    let t0 = now_us();
    let mut child = rig.spawn();
    let mut at = 0;
    rig.wait("the first list_session_events", |a| {
        match a
            .requests()
            .iter()
            .find(|r| r.command.as_deref() == Some("list_session_events"))
        {
            Some(r) => {
                at = r.received_at_us as i64;
                true
            }
            None => false,
        }
    })
    .await;
    stop(&mut child).await;
    at - t0
}

async fn launch(kind: Kind, reference: Option<&Path>, out: &mut Figures) {
    match kind {
        Kind::Ours => {
            // Cold: a new, empty tree each time (no compile cache: the bundled job type's code
            // must come from the build); warm: later starts on one tree.
            let mut cold = Vec::new();
            for _ in 0..5 {
                let rig = Rig::new(kind, None, 1).await;
                cold.push(first_poll(&rig).await);
            }
            let rig = Rig::new(kind, None, 1).await;
            first_poll(&rig).await;
            let mut warm = Vec::new();
            for _ in 0..10 {
                warm.push(first_poll(&rig).await);
            }
            println!(
                "ours   launch -> first event poll, cold (empty tree, no cache): {}",
                describe(&cold)
            );
            println!(
                "ours   launch -> first event poll, warm: {}",
                describe(&warm)
            );
            out.put("launch_cold", kind, quantile(&cold, 0.5));
            out.put("launch_warm", kind, quantile(&warm, 0.5));
        }
        Kind::Reference => {
            let rig = Rig::new(kind, reference, 1).await;
            // The first start also compiles the venv's bytecode; like ours "warm", report later ones.
            let first = first_poll(&rig).await;
            let mut warm = Vec::new();
            for _ in 0..5 {
                warm.push(first_poll(&rig).await);
            }
            println!(
                "ref    launch -> first event poll, first start {:.1} ms, later: {}",
                first as f64 / 1000.0,
                describe(&warm)
            );
            out.put("launch_cold", kind, first as f64 / 1000.0);
            out.put("launch_warm", kind, quantile(&warm, 0.5));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Person's item -> agent -> posted item.

#[derive(Default)]
struct Latency {
    /// Person's item accepted → reply item accepted.
    round_trip: Vec<i64>,
    /// Ours only: person's item accepted → agent read the turn.
    to_agent: Vec<i64>,
    /// Ours only: agent wrote the line → reply item accepted.
    to_post: Vec<i64>,
    /// Person's item accepted → the next `list_session_events` request arrives.
    to_poll: Vec<i64>,
    /// The gap between the event polls before and after the person's item.
    poll_gap: Vec<i64>,
}

/// The pauses before `n` messages posted to an idle thread: uniform over 3 s (two idle poll
/// periods) after 0.5 s, stratified (one draw in each of `n` equal slices, in random order) so
/// that a few dozen samples cover the poll cycle evenly; plain independent draws leave a
/// 30-sample median ±100 ms. Seeded: every run and both workers get the same moments.
fn idle_pauses(n: usize) -> Vec<Duration> {
    let mut rng = fastrand::Rng::with_seed(4);
    let mut slices: Vec<u64> = (0..n as u64).collect();
    rng.shuffle(&mut slices);
    let slice_us = 3_000_000 / n as u64;
    slices
        .into_iter()
        .map(|slice| {
            Duration::from_micros(500_000 + slice * slice_us + rng.u64(0..slice_us.max(1)))
        })
        .collect()
}

/// The latest text item of the worker on the thread, and when the emulator accepted it (µs).
fn last_reply(rig: &Rig, s: &SessionIds, alias: &str) -> (Value, i64) {
    let reply = rig
        .items(s, alias)
        .into_iter()
        .rev()
        .find(|x| x["user_id"] == rig.kind.user() && x["metadata"]["type"] == "text")
        .expect("a reply");
    let at = epoch_micros(reply["created_at"].as_str().unwrap());
    (reply, at)
}

/// `BENCH_TRACE=1`: one turn's requests at the emulator, in ms from the person's item, between
/// the item and the reply, with the model's first request and last response among them, so a
/// gap in the worker's reaction shows where it is.
fn trace_turn(rig: &Rig, asked_at: i64, first_request: i64, ended: i64, posted_at: i64) {
    let mut rows: Vec<(i64, String)> = rig
        .admin
        .requests()
        .into_iter()
        .filter(|r| {
            let at = r.received_at_us as i64;
            at >= asked_at && at <= posted_at
        })
        .map(|r| {
            let what = r.command.unwrap_or(r.path);
            (r.received_at_us as i64, what)
        })
        .collect();
    // Ours logs each spawn (`child_spawned`, debug): when it returned and how long it took; and
    // when a turn was handed to its agent (`turn_started`; `prestarted_ms`: how long that process
    // had been running already, when it was started ahead of the message).
    let log = std::fs::read_to_string(rig.dir.path().join("worker.log")).unwrap_or_default();
    for line in log.lines() {
        let Some(ts) = line.split_whitespace().next().filter(|t| t.ends_with('Z')) else {
            continue;
        };
        let at = epoch_micros(ts);
        if at < asked_at || at > posted_at {
            continue;
        }
        if line.contains("child_spawned") {
            let took = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("spawn_us="))
                .unwrap_or("?");
            rows.push((
                at,
                format!("(worker) agent spawned, the spawn took {took} µs"),
            ));
        } else if line.contains(" turn_started ") {
            let ahead = line
                .split("\"prestarted_ms\":")
                .nth(1)
                .and_then(|r| r.split([',', '}']).next())
                .filter(|v| *v != "null");
            rows.push((
                at,
                match ahead {
                    Some(ms) => format!("(worker) turn handed to the agent started {ms} ms before"),
                    None => "(worker) turn handed to a freshly spawned agent".into(),
                },
            ));
        }
    }
    rows.push((first_request, "(fake) first model request".into()));
    rows.push((ended, "(fake) last response ended".into()));
    rows.push((posted_at, "(emulator) reply accepted".into()));
    rows.sort();
    println!("{:?} turn timeline (ms after the person's item):", rig.kind);
    for (at, what) in rows {
        println!("  {:>9.2}  {what}", (at - asked_at) as f64 / 1000.0);
    }
}

/// µs from `at` to the next `list_session_events` request, and the gap between that poll and the
/// one before it; `None` before the second poll.
fn next_poll(rig: &Rig, at: i64) -> Option<(i64, i64)> {
    let polls: Vec<i64> = rig
        .admin
        .requests()
        .iter()
        .filter(|r| r.command.as_deref() == Some("list_session_events"))
        .map(|r| r.received_at_us as i64)
        .collect();
    let n = polls.iter().position(|&t| t >= at).filter(|&n| n > 0)?;
    Some((polls[n] - at, polls[n] - polls[n - 1]))
}

async fn latency(kind: Kind, reference: Option<&Path>, turns: usize, out: &mut Figures) {
    let rig = Rig::new(kind, reference, 1).await;
    let s = rig.sessions[0].clone();
    let alias = kind.thread();
    let mut child = rig.spawn();
    rig.wait_attached().await;
    rig.admin
        .upload_object(&s.session_id, alias, rig.envelope("pending"), PERSON)
        .unwrap();
    rig.wait("the thread active", |_| rig.state(&s) == "active")
        .await;
    let text = if kind == Kind::Ours { "stamp" } else { "hello" };
    let pauses = idle_pauses(turns);
    let (mut idle, mut after) = (Latency::default(), Latency::default());
    for i in 0..2 * turns {
        // Odd turns: the thread idles, the message lands at a random moment of the poll cycle.
        // Even turns: posted as soon as the previous reply's turn_end has landed.
        let is_idle = i % 2 == 1;
        if is_idle {
            tokio::time::sleep(pauses[i / 2]).await;
        }
        let asked = rig
            .admin
            .post_item(
                &s.session_id,
                alias,
                json!([{"type": "text", "text": text}]),
                None,
                PERSON,
            )
            .expect("person posts");
        let asked_at = epoch_micros(asked["created_at"].as_str().unwrap());
        rig.wait("the reply's turn_end", |_| {
            rig.count(&s, alias, "turn_end") > i
        })
        .await;
        let (reply, posted_at) = last_reply(&rig, &s, alias);
        let sample = if is_idle { &mut idle } else { &mut after };
        sample.round_trip.push(posted_at - asked_at);
        if let Some((to_poll, gap)) = next_poll(&rig, asked_at) {
            sample.to_poll.push(to_poll);
            sample.poll_gap.push(gap);
        }
        if kind == Kind::Ours {
            let body = reply["content"][0]["text"].as_str().unwrap();
            let field = |k: &str| -> i64 {
                body.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .unwrap_or_else(|| panic!("no {k} in {body}"))
                    .parse()
                    .unwrap()
            };
            sample.to_agent.push(field("read=") - asked_at);
            sample.to_post.push(posted_at - field("sent="));
        }
    }
    stop(&mut child).await;
    let who = if kind == Kind::Ours { "ours" } else { "ref " };
    for (cond, l) in [("idle", &idle), ("after a turn", &after)] {
        println!(
            "{who}   person's item -> reply posted, {cond:12}: {}",
            describe(&l.round_trip)
        );
        if !l.to_poll.is_empty() {
            println!(
                "{who}     person's item -> next event poll, {cond:12}: {}",
                describe(&l.to_poll)
            );
            println!(
                "{who}     gap between the polls around it, {cond:12}: {}",
                describe(&l.poll_gap)
            );
        }
        let key = if cond == "idle" { "idle" } else { "after" };
        out.put(&format!("rt_{key}_p50"), kind, quantile(&l.round_trip, 0.5));
        out.put(
            &format!("rt_{key}_p99"),
            kind,
            quantile(&l.round_trip, 0.99),
        );
        if kind == Kind::Ours {
            println!(
                "{who}     person's item -> agent stdin, {cond:12}: {}",
                describe(&l.to_agent)
            );
            out.put(&format!("ta_{key}_p50"), kind, quantile(&l.to_agent, 0.5));
            out.put(&format!("ta_{key}_p99"), kind, quantile(&l.to_agent, 0.99));
        }
    }
    if kind == Kind::Ours {
        let to_post: Vec<i64> = idle.to_post.iter().chain(&after.to_post).copied().collect();
        println!(
            "{who}     agent's line -> item posted:            {}",
            describe(&to_post)
        );
        out.put("tp_p50", kind, quantile(&to_post, 0.5));
        out.put("tp_p99", kind, quantile(&to_post, 0.99));
    }
}

// ---------------------------------------------------------------------------------------------
// 4. The real Claude Code CLI: item -> first model request, last model response -> item.

/// The CLI for part 4: `BLOBHUB_CLAUDE`, else the pinned one of tests/agents.
fn claude_cli() -> Option<PathBuf> {
    let path = std::env::var_os(CLAUDE_VAR)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/agents/node_modules/.bin/claude")
        });
    path.is_file().then_some(path)
}

/// The environment the CLI gets in part 4: the fake's address and the variables that keep it
/// offline (tests/e2e/claude.rs sets the same), and its own config folder.
fn claude_env(fake: &FakeAnthropic, config: &Path) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("ANTHROPIC_BASE_URL", fake.base_url()),
        ("ANTHROPIC_API_KEY", "dummy".to_owned()),
        ("CLAUDE_CONFIG_DIR", config.to_str().unwrap().to_owned()),
    ];
    for name in [
        "DISABLE_TELEMETRY",
        "DISABLE_AUTOUPDATER",
        "DISABLE_ERROR_REPORTING",
        "DISABLE_BUG_COMMAND",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
    ] {
        env.push((name, "1".to_owned()));
    }
    env.push(("CLAUDE_CODE_MAX_RETRIES", "0".to_owned()));
    env
}

/// The CLI alone, no worker, spawned once per turn, to tell the CLI's share of part 4's figures
/// from the worker's: spawn → its first model request, and the fake's last response sent → the
/// CLI's `assistant` text line on its stdout. Plain: `claude -p <message> --output-format
/// stream-json --verbose` (the CLI's own start-up). Driven: the command line and stdin of our
/// `claude_code` driver (`plugins/session-agent-harness/src/agent/claude_code.rs`: stream-json
/// both ways, `initialize`, the `ask_user` sdk MCP server whose handshake this answers itself,
/// `--resume=` from the second turn), so what remains of a worker's figure is the worker's.
struct CliAlone {
    cli: PathBuf,
    driven: bool,
    /// The session to resume (driven).
    session: String,
    fake: FakeAnthropic,
    dir: tempfile::TempDir,
    start: Vec<i64>,
    to_line: Vec<i64>,
}

/// The driven CLI's answer to an sdk MCP message of the handshake (`initialize`, the
/// `initialized` notification, `tools/list`), as the `claude_code` driver answers them.
fn mcp_answer(message: &Value) -> Value {
    let id = message.get("id").cloned();
    match message["method"].as_str() {
        Some("initialize") => json!({"jsonrpc": "2.0", "id": id, "result": {
            "protocolVersion": message["params"]["protocolVersion"],
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "blobhub", "version": "1"}}}),
        Some("tools/list") => json!({"jsonrpc": "2.0", "id": id, "result": {"tools": [{
            "name": "ask_user",
            "description": "Ask the person a question and wait for the answer.",
            "inputSchema": {"type": "object", "properties": {"question": {"type": "string"}},
                            "required": ["question"]}}]}}),
        _ if id.is_none() => json!({"jsonrpc": "2.0", "result": {}}),
        _ => {
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "no such method"}})
        }
    }
}

impl CliAlone {
    async fn new(cli: &Path, driven: bool) -> CliAlone {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("work")).unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        CliAlone {
            cli: cli.to_path_buf(),
            driven,
            session: String::new(),
            fake: FakeAnthropic::start().await.expect("fake model API starts"),
            dir,
            start: Vec::new(),
            to_line: Vec::new(),
        }
    }

    async fn turn(&mut self, i: usize, measured: bool) {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let prompt = format!("bench message {i}");
        let mut cmd = Command::new(&self.cli);
        if self.driven {
            cmd.args(["-p", "--input-format", "stream-json"])
                .args(["--output-format", "stream-json", "--verbose"])
                .args([
                    "--permission-mode",
                    "default",
                    "--permission-prompt-tool",
                    "stdio",
                ])
                .args([
                    "--mcp-config",
                    r#"{"mcpServers":{"blobhub":{"type":"sdk","name":"blobhub"}}}"#,
                ])
                .args(["--allowedTools", "mcp__blobhub__ask_user"])
                .args(["--disallowedTools", "AskUserQuestion"])
                .args([
                    "--append-system-prompt",
                    "When you need the person's input, call mcp__blobhub__ask_user.",
                ]);
            if !self.session.is_empty() {
                cmd.arg(format!("--resume={}", self.session));
            }
        } else {
            cmd.args(["-p", &prompt])
                .args(["--output-format", "stream-json", "--verbose"]);
        }
        let spawned_at = now_us();
        let mut child = cmd
            .current_dir(self.dir.path().join("work"))
            .env("HOME", self.dir.path().join("home"))
            .envs(claude_env(
                &self.fake,
                &self.dir.path().join("claude-config"),
            ))
            .stdin(if self.driven {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn claude");
        let mut stdin = child.stdin.take();
        if let Some(w) = &mut stdin {
            let initialize = json!({"type": "control_request", "request_id": "bench_init",
                "request": {"subtype": "initialize", "hooks": null}});
            let user = json!({"type": "user", "message": {"role": "user", "content": prompt},
                "parent_tool_use_id": null, "session_id": ""});
            let first = format!("{initialize}\n{user}\n");
            w.write_all(first.as_bytes()).await.unwrap();
        }
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut text_at = None;
        let session = &mut self.session;
        let read = async {
            while let Some(line) = lines.next_line().await.unwrap() {
                let v: Value = serde_json::from_str(&line).unwrap_or_default();
                if v["type"] == "assistant" && v["message"]["content"][0]["type"] == "text" {
                    text_at.get_or_insert(now_us());
                }
                if let Some(id) = v["session_id"].as_str() {
                    id.clone_into(session);
                }
                if v["type"] == "result" {
                    // A one-turn CLI exits once its stdin is closed.
                    stdin = None;
                }
                let request = &v["request"];
                if let (Some(w), "control_request", "mcp_message") = (
                    &mut stdin,
                    v["type"].as_str().unwrap_or(""),
                    request["subtype"].as_str().unwrap_or(""),
                ) {
                    let answer = json!({"type": "control_response", "response": {
                        "subtype": "success", "request_id": v["request_id"],
                        "response": {"mcp_response": mcp_answer(&request["message"])}}});
                    w.write_all(format!("{answer}\n").as_bytes()).await.unwrap();
                }
            }
        };
        tokio::time::timeout(PATIENCE, read)
            .await
            .expect("the CLI finishes a turn");
        let _ = child.wait().await;
        let text_at = text_at.expect("the CLI printed the reply");
        let calls: Vec<_> = self
            .fake
            .model_calls()
            .into_iter()
            .filter(|r| r.received_at_us as i64 >= spawned_at)
            .collect();
        let first = calls.first().expect("a model request");
        let last = calls
            .iter()
            .rfind(|r| (r.received_at_us as i64) < text_at)
            .expect("a model request before the reply");
        if measured {
            self.start.push(first.received_at_us as i64 - spawned_at);
            self.to_line
                .push(text_at - last.response_end_us.expect("ended") as i64);
        }
    }

    fn report(&self, out: &mut Figures) {
        let (who, key) = if self.driven {
            ("driven", "cli_driven")
        } else {
            ("-p", "cli")
        };
        println!(
            "cli    claude alone ({who}): spawn -> first model request:     {}",
            describe(&self.start)
        );
        println!(
            "cli    claude alone ({who}): last model response -> text line: {}",
            describe(&self.to_line)
        );
        out.put(
            &format!("{key}_start_p50"),
            Kind::Ours,
            quantile(&self.start, 0.5),
        );
        out.put(
            &format!("{key}_line_p50"),
            Kind::Ours,
            quantile(&self.to_line, 0.5),
        );
    }
}

/// All in µs, one sample per measured turn.
#[derive(Default)]
struct ClaudeLatency {
    /// Person's item accepted → the CLI's first model request arrives at the fake.
    to_request: Vec<i64>,
    /// The fake handed over the last byte of the turn's last response → the text item accepted.
    to_post: Vec<i64>,
    /// Person's item accepted → the next `list_session_events` request (the part of
    /// `to_request` spent waiting for a poll).
    to_poll: Vec<i64>,
    /// That poll → the CLI's first model request: `to_request` without the wait for the poll,
    /// turn by turn (the worker's reaction, the spawn and the CLI's start-up).
    after_poll: Vec<i64>,
}

/// Issue 8's targets: a person's item → the CLI's first model request at most half the idle
/// poll interval (1500 ms by default) plus 150 ms, median; the model's last response → the text
/// item posted at most 10 ms.
const REQUEST_TARGET_MS: u64 = 1500 / 2 + 150;
const POST_TARGET_MS: u64 = 10;

/// One worker driving the real CLI on one thread handed to `claude_code`, a turn at a time.
struct ClaudeRun {
    rig: Rig,
    child: Child,
    s: SessionIds,
    turns: usize,
    l: ClaudeLatency,
    /// Turns whose first model request did not carry the person's message.
    other_first: usize,
}

impl ClaudeRun {
    /// The worker started and the thread active (both in `approval` mode: see [`Rig::envelope`]).
    async fn start(kind: Kind, reference: Option<&Path>, cli: &Path) -> ClaudeRun {
        let rig = Rig::with_claude(kind, reference, cli).await;
        let s = rig.sessions[0].clone();
        let child = rig.spawn();
        rig.wait_attached().await;
        rig.admin
            .upload_object(
                &s.session_id,
                kind.thread(),
                rig.envelope("pending"),
                PERSON,
            )
            .unwrap();
        rig.wait("the thread active", |_| rig.state(&s) == "active")
            .await;
        ClaudeRun {
            rig,
            child,
            s,
            turns: 0,
            l: ClaudeLatency::default(),
            other_first: 0,
        }
    }

    /// A person's message, then the reply's `turn_end`.
    async fn turn(&mut self, measured: bool) {
        let (rig, s) = (&self.rig, &self.s);
        let kind = rig.kind;
        let alias = kind.thread();
        let i = self.turns;
        let prompt = format!("bench message {i}");
        let asked = rig
            .admin
            .post_item(
                &s.session_id,
                alias,
                json!([{"type": "text", "text": prompt}]),
                None,
                PERSON,
            )
            .expect("person posts");
        let asked_at = epoch_micros(asked["created_at"].as_str().unwrap());
        rig.wait("the reply's turn_end", |_| {
            rig.count(s, alias, "turn_end") > i
        })
        .await;
        self.turns += 1;
        let (reply, posted_at) = last_reply(rig, s, alias);
        let text = reply["content"][0]["text"].as_str().unwrap_or_default();
        assert!(
            text.starts_with("Hello from fake Anthropic"),
            "{kind:?}: the reply to {prompt:?} is {text:?}\nworker log:\n{}",
            rig.log_tail()
        );
        // This turn's model requests: those that arrived after the person's item.
        let fake = &rig.claude.as_ref().expect("a claude rig").fake;
        let calls: Vec<_> = fake
            .model_calls()
            .into_iter()
            .filter(|r| r.received_at_us as i64 >= asked_at)
            .collect();
        let first = calls.first().expect("a model request this turn");
        let last = calls
            .iter()
            .rfind(|r| (r.received_at_us as i64) < posted_at)
            .expect("a model request before the reply");
        let ended = last.response_end_us.expect("the reply's response ended") as i64;
        if !measured {
            return;
        }
        if first.last_user_text().as_deref() != Some(prompt.as_str()) {
            self.other_first += 1;
        }
        self.l
            .to_request
            .push(first.received_at_us as i64 - asked_at);
        self.l.to_post.push(posted_at - ended);
        if let Some((to_poll, _)) = next_poll(rig, asked_at) {
            self.l.to_poll.push(to_poll);
            self.l
                .after_poll
                .push(first.received_at_us as i64 - asked_at - to_poll);
        }
        if std::env::var_os("BENCH_TRACE").is_some() {
            trace_turn(rig, asked_at, first.received_at_us as i64, ended, posted_at);
        }
    }

    async fn finish(mut self, out: &mut Figures) {
        stop(&mut self.child).await;
        let (kind, l) = (self.rig.kind, &self.l);
        let who = if kind == Kind::Ours { "ours" } else { "ref " };
        println!(
            "{who}   claude: person's item -> first model request: {}  (target: p50 <= {} ms)",
            describe(&l.to_request),
            REQUEST_TARGET_MS
        );
        println!(
            "{who}     person's item -> next event poll:          {}",
            describe(&l.to_poll)
        );
        println!(
            "{who}     that poll -> first model request:          {}  (the worker's own share)",
            describe(&l.after_poll)
        );
        println!(
            "{who}   claude: last model response -> text posted:  {}  (target: p50 <= {} ms)",
            describe(&l.to_post),
            POST_TARGET_MS
        );
        if self.other_first > 0 {
            println!(
                "{who}     ({} turn(s) whose first model request was not the person's message)",
                self.other_first
            );
        }
        out.put("claude_req_p50", kind, quantile(&l.to_request, 0.5));
        out.put("claude_req_p90", kind, quantile(&l.to_request, 0.9));
        out.put("claude_after_poll_p50", kind, quantile(&l.after_poll, 0.5));
        out.put("claude_post_p50", kind, quantile(&l.to_post, 0.5));
        out.put("claude_post_p90", kind, quantile(&l.to_post, 0.9));
    }
}

/// Part 4. The workers and the CLI alone take turns (ours, the reference, the CLI alone, and
/// again), so a change of the machine's load touches all three alike. Each message is posted a
/// stratified random pause ([`idle_pauses`]) after the previous turn of any of them ended, so it
/// lands at a random moment of the worker's poll cycle. The first turn of each is not measured:
/// the CLI's first start in a new config folder creates its files there.
async fn claude(
    kinds: &[Kind],
    reference: Option<&Path>,
    cli: &Path,
    turns: usize,
    out: &mut Figures,
) {
    let mut alone = [
        CliAlone::new(cli, false).await,
        CliAlone::new(cli, true).await,
    ];
    let mut runs = Vec::new();
    for &kind in kinds {
        runs.push(ClaudeRun::start(kind, reference, cli).await);
    }
    let pauses = idle_pauses(turns);
    for i in 0..=turns {
        let measured = i > 0;
        for run in &mut runs {
            if measured {
                tokio::time::sleep(pauses[i - 1]).await;
            }
            run.turn(measured).await;
        }
        for a in &mut alone {
            a.turn(i, measured).await;
        }
    }
    for a in &alone {
        a.report(out);
    }
    for run in runs {
        run.finish(out).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Idle RSS and CPU.

/// The worker and its descendants.
fn process_tree(root: u32) -> Vec<u32> {
    let mut parent: HashMap<u32, u32> = HashMap::new();
    for e in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        if let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
        {
            parent.insert(pid, ppid);
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parent.iter().filter(|(_, pp)| **pp == p).map(|(c, _)| *c));
        i += 1;
    }
    tree
}

/// VmRSS in KiB, summed over the tree.
fn rss_kib(root: u32) -> u64 {
    process_tree(root)
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .sum()
}

/// PSS (KiB) summed over the process tree: each page divided by the mappings that share it. VmRSS
/// counts a page once per mapping, and every section's wasm memory maps the same copy-on-write
/// image of the job type's data, so VmRSS counts that image once per section.
fn pss_kib(root: u32) -> u64 {
    process_tree(root)
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .sum()
}

/// (utime+stime in clock ticks, on-CPU ns from every thread's schedstat), summed over the tree.
fn cpu(root: u32) -> (u64, u64) {
    let (mut ticks, mut ns) = (0, 0);
    for p in process_tree(root) {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        if let Some((_, rest)) = stat.rsplit_once(')') {
            let f: Vec<&str> = rest.split_whitespace().collect();
            // Fields 14 and 15 of stat; `rest` starts at field 3.
            ticks += f.get(11).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
            ticks += f.get(12).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        }
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.filter_map(Result::ok) {
                ns += std::fs::read_to_string(t.path().join("schedstat"))
                    .ok()
                    .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    (ticks, ns)
}

/// Context switches (voluntary: the thread went to sleep; and involuntary), summed over every
/// thread of the tree: on an idle process each voluntary one is a sleep that a wake-up ends, so
/// their count per request is the wake-ups an idle poll costs, a figure that, unlike CPU time,
/// does not depend on how busy the machine is.
fn switches(root: u32) -> u64 {
    let mut n = 0;
    for p in process_tree(root) {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.filter_map(Result::ok) {
            let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            n += status
                .lines()
                .filter(|l| l.starts_with("voluntary_ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    n
}

/// The servers the idle figures are measured against: the emulator as it is (keeps connections
/// alive, answers in microseconds), and the emulator made to imitate a slower server that keeps
/// no connection alive (`Connection: close` on every response, 300 ms added to every request),
/// so that the per-poll cost is not the emulator's timing alone. (name, keep-alive, latency ms,
/// figure key suffix)
const IDLE_SERVERS: [(&str, bool, u64, &str); 2] = [
    ("emulator", true, 0, ""),
    ("no keep-alive, +300 ms", false, 300, "_slow"),
];

/// Our worker as configured by default, and with its feeds' polls through reqwest
/// (`BLOBHUB_FEED_HTTP=reqwest`, the baseline of their lean exchange), then the floors (our HTTP
/// client alone, a minimal tokio client, a minimal blocking `std::net` client: the machine
/// floor, spread and in one wake-up), measured one after the other on the same server: (label,
/// figure key suffix, the variant or the floor's subcommand).
const IDLE_OURS_VARIANTS: [(&str, &str, Option<&str>); 6] = [
    ("", "", None),
    (
        ", feeds through reqwest (BLOBHUB_FEED_HTTP=reqwest)",
        "_reqwest",
        Some(FEED_REQWEST),
    ),
    (
        ", HTTP client alone (the floor)",
        "_floor",
        Some(POLL_FLOOR),
    ),
    (
        ", minimal tokio client (one thread, no HTTP library)",
        "_tokio",
        Some(TOKIO_FLOOR),
    ),
    (
        ", minimal std::net client (the machine floor)",
        "_machine",
        Some(MACHINE_FLOOR),
    ),
    (
        ", minimal std::net client, every session in one wake-up (polls not spread)",
        "_together",
        Some(MACHINE_FLOOR_TOGETHER),
    ),
];

/// The subcommands this bench re-executes itself as for the two floors of part `idle`.
const POLL_FLOOR: &str = "poll-floor";
const MACHINE_FLOOR: &str = "machine-floor";
const MACHINE_FLOOR_TOGETHER: &str = "machine-floor-together";
const TOKIO_FLOOR: &str = "tokio-floor";
/// Not a floor: our worker with `BLOBHUB_FEED_HTTP=reqwest`, the feeds' polls through the
/// general HTTP client instead of their lean exchange.
const FEED_REQWEST: &str = "feed-reqwest";

/// `poll-floor <api-url> <key> <interval-ms> <revision>:<session>...`: this bench re-executed as
/// the floor of an idle poll, measured beside our worker in part `idle`. It polls each session
/// (`list_session_events`, newest event) every interval through the worker's own HTTP client
/// (`blobhub_worker::api::Client`) on a runtime like the worker's, and does nothing else: no
/// sections, no guests, no state. What our worker spends beyond this per request is its own.
async fn poll_floor(args: &[String]) {
    let [url, key, interval_ms, targets @ ..] = args else {
        panic!("poll-floor <api-url> <key> <interval-ms> <revision>:<session>...");
    };
    let interval = Duration::from_millis(interval_ms.parse().unwrap());
    let client = blobhub_worker::api::Client::new(
        url,
        key,
        blobhub_worker::api::RetryPolicy {
            max_attempts: 1,
            base: Duration::from_millis(100),
            cap: Duration::from_millis(100),
        },
    )
    .unwrap();
    let mut tasks = Vec::new();
    for (i, target) in targets.iter().enumerate() {
        let (revision, session) = target.split_once(':').unwrap();
        let (client, revision, session) = (client.clone(), revision.to_owned(), session.to_owned());
        // Spread like the worker's first polls.
        let first = interval.mul_f64(i as f64 / targets.len() as f64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(first).await;
            loop {
                let mut args = serde_json::Map::new();
                args.insert("session_id".into(), json!(session));
                args.insert("ascending".into(), json!(false));
                args.insert("limit".into(), json!(1));
                let _ = client.query(&revision, "list_session_events", args).await;
                tokio::time::sleep(interval).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// A floor process (`which`: [`POLL_FLOOR`] or [`MACHINE_FLOOR`]) on `rig`'s sessions, at the
/// default idle interval.
fn spawn_floor(rig: &Rig, which: &str) -> Child {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.arg(which)
        .arg(rig.emu.api_url())
        .arg("bhk_ours")
        .arg("1500");
    for s in &rig.sessions {
        c.arg(format!("{}:{}", s.revision_id, s.session_id));
    }
    c.env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    c.spawn().expect("spawn the poll floor")
}

async fn idle(kind: Kind, reference: Option<&Path>, window: Duration, out: &mut Figures) {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let variants: &[(&str, &str, Option<&str>)] = match kind {
        Kind::Ours => &IDLE_OURS_VARIANTS,
        Kind::Reference => &[("", "", None)],
    };
    // `BENCH_IDLE_SECTIONS=10` (a comma list) runs only those section counts.
    let counts = section_counts("BENCH_IDLE_SECTIONS", &[1, 10]);
    // `BENCH_IDLE_SERVERS=emulator` or `slow`, `BENCH_IDLE_VARIANTS=ours,machine` (of `ours`,
    // `reqwest`, `floor`, `tokio`, `machine`, `together`) run only those, e.g. to compare two builds turn about.
    let picked = |var: &str, name: &str| {
        std::env::var(var)
            .map(|v| v.split(',').any(|x| x.trim() == name))
            .unwrap_or(true)
    };
    for (server, keep_alive, latency_ms, server_suffix) in IDLE_SERVERS {
        let server_name = if server_suffix.is_empty() {
            "emulator"
        } else {
            "slow"
        };
        if !picked("BENCH_IDLE_SERVERS", server_name) {
            continue;
        }
        for &sections in &counts {
            // CPU per request of each variant, for the ratios printed after them.
            let mut per_variant: HashMap<&str, f64> = HashMap::new();
            for &(variant, variant_suffix, workers) in variants {
                let name = variant_suffix.strip_prefix('_').unwrap_or("ours");
                if kind == Kind::Ours && !picked("BENCH_IDLE_VARIANTS", name) {
                    continue;
                }
                let suffix = format!("{server_suffix}{variant_suffix}");
                let mut rig = Rig::new(kind, reference, sections).await;
                let floor = matches!(
                    workers,
                    Some(POLL_FLOOR | MACHINE_FLOOR | MACHINE_FLOOR_TOGETHER | TOKIO_FLOOR)
                );
                if workers == Some(FEED_REQWEST) {
                    rig.env.push(("BLOBHUB_FEED_HTTP", "reqwest".to_owned()));
                }
                rig.admin.set_keep_alive(keep_alive);
                if latency_ms > 0 {
                    rig.admin.set_faults(
                        "*",
                        blobhub_emulator::Faults {
                            latency_ms,
                            ..Default::default()
                        },
                    );
                }
                let mut child = if floor {
                    // The sessions need an event for the floor's request to return one.
                    for s in &rig.sessions {
                        rig.admin
                            .upload_object(&s.session_id, "worker", json!({}), PERSON)
                            .unwrap();
                    }
                    spawn_floor(&rig, workers.unwrap_or_default())
                } else {
                    rig.warm_up().await;
                    let child = rig.spawn();
                    rig.wait_attached().await;
                    child
                };
                tokio::time::sleep(SETTLE).await;
                let pid = child.id().expect("running");
                let rss0 = rss_kib(pid);
                rig.admin.clear_requests();
                let (t0, n0) = cpu(pid);
                let s0 = switches(pid);
                tokio::time::sleep(window).await;
                let (t1, n1) = cpu(pid);
                let s1 = switches(pid);
                let rss1 = rss_kib(pid);
                let mut calls: BTreeMap<String, usize> = BTreeMap::new();
                for r in rig.admin.requests() {
                    *calls
                        .entry(r.command.unwrap_or_else(|| r.path.clone()))
                        .or_default() += 1;
                }
                let procs = process_tree(pid).len();
                stop(&mut child).await;
                let secs = window.as_secs_f64();
                let tick_pct = (t1 - t0) as f64 / hz / secs * 100.0;
                let ns_pct = (n1 - n0) as f64 / 1e9 / secs * 100.0;
                let requests: usize = calls.values().sum();
                let per_request_us = (n1 - n0) as f64 / 1e3 / requests.max(1) as f64;
                let wakes = s1.saturating_sub(s0) as f64 / requests.max(1) as f64;
                let rss = rss0.max(rss1) as f64 / 1024.0;
                let who = if kind == Kind::Ours { "ours" } else { "ref " };
                println!(
                    "{who}   idle, {server}{variant}, {sections:2} section(s): RSS {rss:6.1} MiB ({procs} \
                 process(es)), CPU {ns_pct:.4} % of a core (schedstat; utime+stime {tick_pct:.3} %) \
                 over {secs:.0} s = {per_request_us:.1} µs per request, {wakes:.2} wake-ups \
                 (voluntary context switches) per request"
                );
                out.put(&format!("wakes{sections}{suffix}"), kind, wakes);
                println!("         requests in the window: {calls:?}");
                out.put(&format!("rss{sections}{suffix}"), kind, rss);
                out.put(&format!("cpu{sections}{suffix}"), kind, ns_pct);
                out.put(&format!("poll_us{sections}{suffix}"), kind, per_request_us);
                per_variant.insert(variant_suffix, per_request_us);
            }
            if let (Some(machine), true) = (per_variant.get("_machine"), kind == Kind::Ours) {
                let times = |v: &str| {
                    per_variant.get(v).map_or("–".to_owned(), |us| {
                        format!("{:.2}×", us / machine.max(1e-9))
                    })
                };
                println!(
                    "ours   idle, {server}, {sections:2} section(s): per request, against the machine \
                     floor ({machine:.1} µs): ours {}, feeds through reqwest {}, HTTP client \
                     alone {}, minimal tokio client {}; the ≤ 50 µs target is {:.2}× the machine floor",
                    times(""),
                    times("_reqwest"),
                    times("_floor"),
                    times("_tokio"),
                    50.0 / machine.max(1e-9)
                );
                if let Some(ours) = per_variant.get("") {
                    out.put(
                        &format!("poll_x{sections}{server_suffix}_machine"),
                        kind,
                        ours / machine.max(1e-9),
                    );
                    // The lean exchange against its baseline, the same worker through reqwest.
                    if let Some(reqwest) = per_variant.get("_reqwest") {
                        out.put(
                            &format!("poll_x{sections}{server_suffix}_reqwest"),
                            kind,
                            ours / reqwest.max(1e-9),
                        );
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Scale: many sections (issue 14).

/// Section counts of part `scale`.
const SCALE_SECTIONS: [usize; 5] = [1, 10, 50, 100, 200];

/// The reference is measured up to this many sections: it did not attach 50 sessions within
/// 120 s in the issue's measurement, more than the bench's patience.
const SCALE_REFERENCE_MAX: usize = 10;

/// Width of the slot in which the bench counts the most event polls arriving together.
const PEAK_SLOT_US: u64 = 50_000;

/// The most `times` (µs, any order) within any `PEAK_SLOT_US`.
/// The section counts a part runs: the comma list in `var` (e.g. `BENCH_SCALE_SECTIONS=10,100`),
/// or `default`.
fn section_counts(var: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(var)
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| default.to_vec())
}

/// The event polls' arrival times grouped into bursts (polls less than 50 ms after the previous
/// one), as `offset ms ×count` from the first poll: shows whether sections drift together.
fn poll_bursts(mut times: Vec<u64>) -> String {
    times.sort_unstable();
    let Some(&first) = times.first() else {
        return String::new();
    };
    let mut bursts: Vec<(u64, usize)> = Vec::new();
    let mut last = first;
    for t in times {
        match bursts.last_mut() {
            Some((_, n)) if t - last < PEAK_SLOT_US => *n += 1,
            _ => bursts.push(((t - first) / 1000, 1)),
        }
        last = t;
    }
    bursts
        .iter()
        .map(|(at, n)| format!("{at}×{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn peak_in_slot(mut times: Vec<u64>) -> usize {
    times.sort_unstable();
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end] - times[start] >= PEAK_SLOT_US {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

/// Per section count: attach time (spawn → every section's `attached` item, compile cache
/// filled), then after `SETTLE` the RSS, PSS, CPU and requests over `window`, and how evenly the
/// event polls of all sections spread over the poll interval (the most in any 50 ms slot, beside
/// the even share).
async fn scale(kind: Kind, reference: Option<&Path>, window: Duration, out: &mut Figures) {
    let who = if kind == Kind::Ours { "ours" } else { "ref " };
    for sections in section_counts("BENCH_SCALE_SECTIONS", &SCALE_SECTIONS) {
        if kind == Kind::Reference && sections > SCALE_REFERENCE_MAX {
            println!(
                "{who}   scale, {sections:3} sections: not measured (see SCALE_REFERENCE_MAX)"
            );
            continue;
        }
        let rig = Rig::new(kind, reference, sections).await;
        rig.warm_up().await;
        // The warm-up posted one `attached` item per session: this start posts the second.
        let t0 = std::time::Instant::now();
        let mut child = rig.spawn();
        let sessions = rig.sessions.clone();
        rig.wait("attached again on every session", |_| {
            sessions
                .iter()
                .all(|s| rig.count(s, "worker", "attached") >= 2)
        })
        .await;
        let attach_s = t0.elapsed().as_secs_f64();
        tokio::time::sleep(SETTLE).await;
        let pid = child.id().expect("running");
        let rss0 = rss_kib(pid);
        rig.admin.clear_requests();
        let (_, n0) = cpu(pid);
        tokio::time::sleep(window).await;
        let (_, n1) = cpu(pid);
        let rss1 = rss_kib(pid);
        let pss = pss_kib(pid) as f64 / 1024.0;
        let requests = rig.admin.requests();
        stop(&mut child).await;
        let secs = window.as_secs_f64();
        let cpu_pct = (n1 - n0) as f64 / 1e9 / secs * 100.0;
        let polls: Vec<u64> = requests
            .iter()
            .filter(|r| r.command.as_deref() == Some("list_session_events"))
            .map(|r| r.received_at_us)
            .collect();
        let per_request_us = (n1 - n0) as f64 / 1e3 / requests.len().max(1) as f64;
        let rpm = requests.len() as f64 / (secs / 60.0) / sections as f64;
        let even = sections as f64 * PEAK_SLOT_US as f64 / 1.5e6;
        if std::env::var_os("BENCH_SCALE_TIMELINE").is_some() {
            println!(
                "{who}   event polls in bursts (ms ×polls): {}",
                poll_bursts(polls.clone())
            );
        }
        let peak = peak_in_slot(polls);
        let rss = rss0.max(rss1) as f64 / 1024.0;
        println!(
            "{who}   scale, {sections:3} sections: attached in {attach_s:.2} s, RSS {rss:6.1} MiB \
             (PSS {pss:.1}), CPU {cpu_pct:.4} % of a core ({per_request_us:.1} µs per request), \
             {rpm:.1} requests per minute per section, event polls in one 50 ms slot at most \
             {peak} (even spread {even:.1})"
        );
        out.put(&format!("scale_attach{sections}"), kind, attach_s);
        out.put(&format!("scale_rss{sections}"), kind, rss);
        out.put(&format!("scale_pss{sections}"), kind, pss);
        out.put(&format!("scale_cpu{sections}"), kind, cpu_pct);
        out.put(&format!("scale_rpm{sections}"), kind, rpm);
        out.put(&format!("scale_peak{sections}"), kind, peak as f64);
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Scale: many threads in one section (issue 14).

/// (threads, `max_agents`) of part `threads`; the reference keeps its own concurrency setting and
/// runs only the cases up to `THREADS_REFERENCE_MAX` threads.
const THREAD_CASES: [(usize, usize); 4] = [(1, 1), (20, 20), (20, 4), (200, 200)];
const THREADS_REFERENCE_MAX: usize = 20;

/// The worker's own RSS (KiB), without its children (the agents).
fn own_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds so far: (the worker's own, its reaped children's, this process's), from
/// utime/stime and cutime/cstime (10 ms ticks; the bursts measured last seconds).
fn burst_cpu(pid: u32) -> (f64, f64, f64) {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let fields = |p: &str| -> Vec<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        // Fields 14–17 (utime, stime, cutime, cstime); `rest` starts at field 3.
        rest.split_whitespace()
            .skip(11)
            .take(4)
            .map(|x| x.parse::<f64>().unwrap_or(0.0) / hz)
            .collect()
    };
    let w = fields(&pid.to_string());
    let me = fields("self");
    let at = |v: &[f64], i: usize| v.get(i).copied().unwrap_or(0.0);
    (
        at(&w, 0) + at(&w, 1),
        at(&w, 2) + at(&w, 3),
        at(&me, 0) + at(&me, 1),
    )
}

/// The worker's minor page faults so far (field 10 of `/proc/<pid>/stat`): a child forked while
/// the worker keeps writing its memory copies each page it touches until the child execs.
fn minor_faults(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    // `rest` starts at field 3.
    rest.split_whitespace()
        .nth(7)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0)
}

/// `threads` threads handed off in one section, then one message posted to each at once: every
/// reply's latency (the person's item's `created_at` → the reply's), and the worker's RSS per
/// active thread (its own process, and with the agents' processes).
async fn threads(kind: Kind, reference: Option<&Path>, out: &mut Figures) {
    let who = if kind == Kind::Ours { "ours" } else { "ref " };
    for (n, max_agents) in THREAD_CASES {
        if kind == Kind::Reference && (n > THREADS_REFERENCE_MAX || max_agents < n) {
            continue;
        }
        let rig = Rig::new(kind, reference, 1).await;
        if kind == Kind::Ours {
            let path = rig.our_tree().config_path();
            let mut text = std::fs::read_to_string(&path).unwrap();
            text.push_str(&format!("concurrency:\n  max_agents: {max_agents}\n"));
            std::fs::write(&path, text).unwrap();
        }
        let s = rig.sessions[0].clone();
        let aliases: Vec<String> = (1..=n)
            .map(|i| match kind {
                Kind::Ours => format!("t{i}"),
                Kind::Reference => format!("tasks/t{i}"),
            })
            .collect();
        let mut child = rig.spawn();
        rig.wait_attached().await;
        let pid = child.id().expect("running");
        // After the startup memory release 5 s after the start line (host/src/cli/memory.rs).
        tokio::time::sleep(Duration::from_secs(7)).await;
        let (own0, tree0) = (own_rss_kib(pid), rss_kib(pid));
        rig.admin.clear_requests();
        for alias in &aliases {
            rig.admin
                .upload_object(&s.session_id, alias, rig.envelope("pending"), PERSON)
                .unwrap();
        }
        // The reference keeps its own concurrency (4 agents): its other threads wait for a slot.
        if kind == Kind::Ours && max_agents >= n {
            rig.wait("every thread active", |_| {
                aliases.iter().all(|a| {
                    rig.admin
                        .object(&s.session_id, a)
                        .and_then(|v| {
                            v.pointer("/thread/metadata/instance/state")
                                .and_then(Value::as_str)
                                .map(|st| st == "active")
                        })
                        .unwrap_or(false)
                })
            })
            .await;
        }
        let (own1, tree1) = (own_rss_kib(pid), rss_kib(pid));
        let (cpu0, burst0, faults0) = (burst_cpu(pid), Instant::now(), minor_faults(pid));
        let text = if kind == Kind::Ours { "stamp" } else { "hello" };
        let mut asked = Vec::new();
        for alias in &aliases {
            let item = rig
                .admin
                .post_item(
                    &s.session_id,
                    alias,
                    json!([{"type": "text", "text": text}]),
                    None,
                    PERSON,
                )
                .expect("person posts");
            asked.push(epoch_micros(item["created_at"].as_str().unwrap()));
        }
        // Queued threads get a slot only when a running one gives it up; do not wait the full
        // patience for replies that may never come.
        let patience = if kind == Kind::Ours && max_agents < n {
            Duration::from_secs(30)
        } else {
            Duration::from_secs(180)
        };
        // Checked on every change at the emulator (hundreds during a burst): only the first
        // thread still without a reply is read each time, so that the bench, which shares the
        // CPU with the worker, does not read every thread's items on every post.
        let mut waiting: Vec<&String> = aliases.iter().rev().collect();
        let replied = rig
            .admin
            .wait_for(patience, |_| {
                while let Some(a) = waiting.last() {
                    if rig.count(&s, a, "turn_end") == 0 {
                        return false;
                    }
                    waiting.pop();
                }
                true
            })
            .await;
        if std::env::var_os("BENCH_THREADS_TIMELINE").is_some() {
            // The worker's requests from the hand-offs on, in ms from the first message.
            let first = asked.first().copied().unwrap_or_default();
            let line: Vec<String> = rig
                .admin
                .requests()
                .iter()
                .map(|r| {
                    let at = (r.received_at_us as i64 - first) / 1000;
                    let what = r.command.as_deref().unwrap_or(r.path.as_str());
                    format!("{at}:{what}")
                })
                .collect();
            println!(
                "{who}   requests (ms from the first message): {}",
                line.join(" ")
            );
        }
        let (own2, tree2) = (own_rss_kib(pid), rss_kib(pid));
        let (cpu1, burst_s) = (burst_cpu(pid), burst0.elapsed().as_secs_f64());
        let faults = minor_faults(pid).saturating_sub(faults0);
        let mut latencies = Vec::new();
        for (alias, at) in aliases.iter().zip(&asked) {
            if rig.count(&s, alias, "turn_end") >= 1 {
                latencies.push(last_reply(&rig, &s, alias).1 - at);
            }
        }
        stop(&mut child).await;
        if latencies.is_empty() {
            println!(
                "{who}   threads {n:3} (max_agents {max_agents}): no reply within {patience:?}"
            );
            continue;
        }
        let own_per = (own1.max(own2) as f64 - own0 as f64) / n as f64;
        let tree_per = (tree1.max(tree2) as f64 - tree0 as f64) / n as f64;
        println!(
            "{who}   threads {n:3} (max_agents {max_agents:3}): {}{} reply latency {}; RSS per \
             active thread {own_per:.0} KiB (worker), {tree_per:.0} KiB (with the agents)",
            latencies.len(),
            if replied {
                String::new()
            } else {
                format!(" of {n} (the others did not reply within {patience:?})")
            },
            describe(&latencies)
        );
        // Whether the burst waited on the CPU rather than on something done one at a time: the
        // CPU time spent from the first message to the last reply, beside the wall time.
        println!(
            "         CPU from the first message to the last reply ({burst_s:.2} s): worker {:.2} s, \
             its reaped agents {:.2} s, this bench with the emulator {:.2} s; the worker's minor \
             page faults {faults}; load average {}",
            cpu1.0 - cpu0.0,
            cpu1.1 - cpu0.1,
            cpu1.2 - cpu0.2,
            load()
        );
        // Warnings the worker logged during the case (a failed read waits for a recheck).
        let log = std::fs::read_to_string(rig.dir.path().join("worker.log")).unwrap_or_default();
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("\"warn") || l.contains("\"error"))
            .collect();
        if !warnings.is_empty() {
            println!(
                "         {} warning(s) in the worker's log, the first: {}",
                warnings.len(),
                warnings[0].chars().take(400).collect::<String>()
            );
        }
        let key = format!("threads{n}_{max_agents}");
        out.put(&format!("{key}_p50"), kind, quantile(&latencies, 0.5));
        out.put(&format!("{key}_p99"), kind, quantile(&latencies, 0.99));
        out.put(&format!("{key}_max"), kind, quantile(&latencies, 1.0));
        out.put(&format!("{key}_rss"), kind, own_per);
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Bounded work per poll: a long backlog of events and a long thread (issue 14, item 4).

/// How many events (part `paging`, backlog) and thread items (long thread) the large case holds;
/// `BENCH_PAGING_N` overrides.
const PAGING_N: usize = 10_000;

/// The alias of a thread that is no job's (not handed off): its items make the event backlog.
const PAGING_NOTES: &str = "notes";

/// How long part `paging` watches a start: past its first burst of event polls.
const PAGING_SETTLE: Duration = Duration::from_secs(6);

/// The first event polls that follow one another with less than half the idle interval
/// between them (µs, any order): the pages of a backlog read at once.
fn first_burst(polls: &[u64]) -> Vec<u64> {
    let mut sorted = polls.to_vec();
    sorted.sort_unstable();
    let mut burst: Vec<u64> = Vec::new();
    for t in sorted {
        if burst.last().is_some_and(|&prev| t - prev > 750_000) {
            break;
        }
        burst.push(t);
    }
    burst
}

/// Samples the RSS of `pid` (its own, without children) every 20 ms until `stop` is set; the
/// largest reading in KiB.
fn rss_sampler(
    pid: u32,
) -> (
    tokio::task::JoinHandle<u64>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&stop);
    let task = tokio::spawn(async move {
        let mut peak = 0;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            peak = peak.max(own_rss_kib(pid));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        peak.max(own_rss_kib(pid))
    });
    (task, stop)
}

/// `n` items by the person on `alias` (each one a `session_thread_item_posted` event).
fn post_many(rig: &Rig, s: &SessionIds, alias: &str, n: usize) {
    for i in 0..n {
        rig.admin
            .post_item(
                &s.session_id,
                alias,
                json!([{"type": "text", "text": format!("backlog message {i}")}]),
                None,
                PERSON,
            )
            .expect("person posts");
    }
}

/// The thread envelope without a hand-off: a thread no worker runs yet.
fn plain_thread() -> Value {
    json!({"type": "thread", "thread": {"attributes": {"name": "bench"}, "metadata": {}}})
}

/// Part `paging`, for `n` = 0 (the baseline, same run) and `PAGING_N`:
///
/// - *event backlog*: the worker attached once and stopped; `n` items posted meanwhile on a
///   thread that is no job's (so `n` events wait in the feed); the worker started again and, once
///   attached, a thread handed off: the time from the hand-off to the thread `active` holds reading
///   through the backlog, and the worker's peak RSS (sampled every 20 ms) shows whether it held
///   the backlog whole;
/// - *long thread*: a thread holding `n` items by the person is handed off; the time from the
///   hand-off to the reply's `turn_end` and the peak RSS while it is read (all `n` items are new
///   to the worker, so its first turn carries them all).
async fn paging(kind: Kind, reference: Option<&Path>, n_large: usize, out: &mut Figures) {
    let who = if kind == Kind::Ours { "ours" } else { "ref " };
    for n in [0, n_large] {
        // Event backlog.
        let rig = Rig::new(kind, reference, 1).await;
        let s = rig.sessions[0].clone();
        rig.admin
            .upload_object(&s.session_id, PAGING_NOTES, plain_thread(), PERSON)
            .unwrap();
        // A first run that takes one event, so that the worker keeps a place in the feed to go
        // on from (without one it would start at the newest event and skip the backlog).
        let mut first = rig.spawn();
        rig.wait_attached().await;
        // After the worker's first event poll (its starting point), then long enough for the
        // next poll (interval plus the first poll's jitter) to take the event.
        rig.wait("the first event poll", |a| {
            a.requests()
                .iter()
                .any(|r| r.command.as_deref() == Some("list_session_events"))
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        post_many(&rig, &s, PAGING_NOTES, 1);
        tokio::time::sleep(Duration::from_millis(3500)).await;
        stop(&mut first).await;
        post_many(&rig, &s, PAGING_NOTES, n);
        rig.admin.clear_requests();
        let spawned_us = now_us() as u64;
        let mut child = rig.spawn();
        let pid = child.id().expect("running");
        let (sampler, stop_sampling) = rss_sampler(pid);
        rig.wait("attached again", |_| {
            rig.count(&s, "worker", "attached") >= 2
        })
        .await;
        // The backlog is read by the worker's first event polls, back to back; then it polls at
        // its interval. Long enough to see that gap (a bench may wait on time; a test may not).
        tokio::time::sleep(PAGING_SETTLE).await;
        stop_sampling.store(true, std::sync::atomic::Ordering::Relaxed);
        let peak = sampler.await.unwrap_or(0) as f64 / 1024.0;
        let polls: Vec<u64> = rig
            .admin
            .requests()
            .iter()
            .filter(|r| r.command.as_deref() == Some("list_session_events"))
            .map(|r| r.received_at_us)
            .collect();
        stop(&mut child).await;
        let burst = first_burst(&polls);
        match burst.last() {
            Some(&last) => {
                let took = last.saturating_sub(spawned_us) as f64 / 1000.0;
                println!(
                    "{who}   paging, {n:5} events waiting: start → the last of {} back-to-back event \
                     polls {took:8.1} ms, peak RSS {peak:6.1} MiB",
                    burst.len()
                );
                out.put(&format!("paging_events{n}_ms"), kind, took);
                out.put(&format!("paging_events{n}_polls"), kind, burst.len() as f64);
                out.put(&format!("paging_events{n}_rss"), kind, peak);
            }
            None => println!("{who}   paging, {n:5} events waiting: no event poll"),
        }

        // Long thread.
        let rig = Rig::new(kind, reference, 1).await;
        let s = rig.sessions[0].clone();
        let alias = kind.thread();
        // The compile cache filled: the peak below is the thread's, not a first start's.
        rig.warm_up().await;
        rig.admin
            .upload_object(&s.session_id, alias, plain_thread(), PERSON)
            .unwrap();
        post_many(&rig, &s, alias, n.max(1));
        let mut child = rig.spawn();
        let pid = child.id().expect("running");
        rig.wait("attached again", |_| {
            rig.count(&s, "worker", "attached") >= 2
        })
        .await;
        let (sampler, stop_sampling) = rss_sampler(pid);
        let t0 = Instant::now();
        rig.admin
            .upload_object(&s.session_id, alias, rig.envelope("pending"), PERSON)
            .unwrap();
        let replied = rig
            .admin
            .wait_for(Duration::from_secs(180), |_| {
                rig.count(&s, alias, "turn_end") >= 1
            })
            .await;
        let took = t0.elapsed().as_secs_f64() * 1000.0;
        stop_sampling.store(true, std::sync::atomic::Ordering::Relaxed);
        let peak = sampler.await.unwrap_or(0) as f64 / 1024.0;
        stop(&mut child).await;
        let items = n.max(1);
        if replied {
            println!(
                "{who}   paging, thread of {items:5} items: hand-off → turn_end {took:8.1} ms, peak RSS {peak:6.1} MiB"
            );
            out.put(&format!("paging_items{n}_ms"), kind, took);
            out.put(&format!("paging_items{n}_rss"), kind, peak);
        } else {
            println!(
                "{who}   paging, thread of {items:5} items: no reply within 180 s; worker log:\n{}",
                rig.log_tail()
            );
        }
    }
}

/// `inspect`: where our idle worker's memory and CPU go (not part of the default run), for each
/// section count of `BENCH_INSPECT_SECTIONS` (comma-separated, default 1): the `smaps_rollup`, the
/// mappings grouped by kind (so two counts show which kind grows per section), the largest
/// mappings by RSS, and CPU per thread over the window. `BENCH_INSPECT_DIR` keeps each raw
/// `smaps` there as `smaps-<sections>.txt`.
async fn inspect(window: Duration) {
    let counts = section_counts("BENCH_INSPECT_SECTIONS", &[1]);
    for sections in counts {
        println!("inspect, {sections} section(s):");
        inspect_one(sections, window).await;
    }
}

/// The kind of a mapping for [`inspect`], from its `smaps` header line and size: named mappings
/// by name (the executable, a library, `[heap]`, a memfd), anonymous ones by permissions and a
/// size class (wasm linear memories are reservations of gigabytes, fiber and thread stacks a few
/// MiB, glibc's malloc arenas 64 MiB).
fn mapping_kind(head: &str) -> String {
    let mut f = head.split_whitespace();
    let range = f.next().unwrap_or("");
    let perms = f.next().unwrap_or("");
    let name = f.nth(3).unwrap_or("");
    let size = range
        .split_once('-')
        .and_then(|(a, b)| {
            Some(u64::from_str_radix(b, 16).ok()? - u64::from_str_radix(a, 16).ok()?)
        })
        .unwrap_or(0);
    if !name.is_empty() {
        return format!("{perms} {name}");
    }
    let class = match size {
        s if s >= 1 << 30 => ">= 1 GiB".to_owned(),
        s if s >= 1 << 20 => format!("{} MiB", s.next_power_of_two() >> 20),
        s => format!("{} KiB", s.next_power_of_two() >> 10),
    };
    format!("{perms} anonymous, {class} class")
}

async fn inspect_one(sections: usize, window: Duration) {
    let rig = Rig::new(Kind::Ours, None, sections).await;
    rig.warm_up().await;
    let mut child = rig.spawn();
    rig.wait_attached().await;
    tokio::time::sleep(SETTLE).await;
    let pid = child.id().expect("running");
    println!(
        "{}",
        std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default()
    );
    let sockets = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
        })
        .count();
    println!("open sockets (HTTP connections): {sockets}");
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    if let Some(dir) = std::env::var_os("BENCH_INSPECT_DIR") {
        let _ = std::fs::write(
            Path::new(&dir).join(format!("smaps-{sections}.txt")),
            &smaps,
        );
    }
    let mut maps: Vec<(u64, String)> = Vec::new();
    // kind -> (mappings, Rss KiB, Anonymous KiB)
    let mut kinds: BTreeMap<String, (usize, u64, u64)> = BTreeMap::new();
    let mut head = String::new();
    let kib = |v: &str| -> u64 {
        v.split_whitespace()
            .next()
            .and_then(|x| x.parse().ok())
            .unwrap_or(0)
    };
    for line in smaps.lines() {
        if let Some(v) = line.strip_prefix("Rss:") {
            maps.push((kib(v), head.clone()));
            let k = kinds.entry(mapping_kind(&head)).or_default();
            k.0 += 1;
            k.1 += kib(v);
        } else if let Some(v) = line.strip_prefix("Anonymous:") {
            kinds.entry(mapping_kind(&head)).or_default().2 += kib(v);
        } else if line
            .split_whitespace()
            .next()
            .is_some_and(|w| w.contains('-') && !w.ends_with(':'))
        {
            head = line.to_owned();
        }
    }
    let mut kinds: Vec<_> = kinds.into_iter().filter(|k| k.1.1 > 0).collect();
    kinds.sort_by_key(|k| std::cmp::Reverse(k.1.1));
    println!("   mappings   Rss KiB  Anon KiB  kind");
    for (kind, (n, rss, anon)) in &kinds {
        println!("{n:11} {rss:9} {anon:9}  {kind}");
    }
    maps.sort_by_key(|m| std::cmp::Reverse(m.0));
    for (kib, m) in maps.iter().take(15) {
        println!("{kib:8} KiB  {m}");
    }
    let threads = |pid: u32| -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for t in std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            let ns = std::fs::read_to_string(t.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0);
            let name = format!("{} {}", t.file_name().to_string_lossy(), comm.trim());
            out.insert(name, ns);
        }
        out
    };
    let before = threads(pid);
    tokio::time::sleep(window).await;
    for (name, ns) in threads(pid) {
        let d = ns - before.get(&name).copied().unwrap_or(0);
        println!(
            "thread {name:30} {:.4} % of a core",
            d as f64 / 1e9 / window.as_secs_f64() * 100.0
        );
    }
    stop(&mut child).await;
}

// ---------------------------------------------------------------------------------------------
// 5. Soak: a long conversation over several threads with faults and periodic SIGKILLs.

/// Messages of the soak that were lost, answered twice, or left without an answer, per thread.
#[derive(Debug, Default)]
struct SoakTally {
    sent: usize,
    answered: usize,
    /// Turns a kill cut after the agent had begun them, closed `interrupted` (by design).
    closed: usize,
    lost: usize,
    duplicated: usize,
    duplicate_posts: usize,
    /// Threads whose envelope is not `active` at the end, or that hold a lost message.
    stuck: usize,
}

/// Part `soak` (explicit only: `cargo bench --bench harness -- soak`): `BENCH_SOAK_S` seconds
/// (default 3600) of messages to `BENCH_SOAK_THREADS` threads (default 4) of one section, one
/// every 1–3 s to a random thread, with 3 % 5xx, 2 % 429 and 1 % dropped connections on every
/// command (a 5xx or drop comes after the command ran: the outcome unknown to the worker) and a
/// SIGKILL of the worker every `BENCH_SOAK_KILL_S` seconds (default 60), restarted at once. Then the faults
/// stop and the worker gets two minutes to catch up. Reports lost, duplicated and stuck counts
/// (the target is zero for each) and the worker's RSS at each kill.
async fn soak(duration: Duration, threads: usize, kill_every: Duration) {
    let rig = Rig::new(Kind::Ours, None, 1).await;
    let s = rig.sessions[0].clone();
    let aliases: Vec<String> = (0..threads).map(|t| format!("soak/t{t}")).collect();
    let mut child = rig.spawn();
    rig.wait_attached().await;
    for alias in &aliases {
        rig.admin
            .upload_object(&s.session_id, alias, rig.envelope("pending"), PERSON)
            .unwrap();
    }
    let active = |alias: &str| {
        rig.admin
            .object(&s.session_id, alias)
            .and_then(|v| {
                v.pointer("/thread/metadata/instance/state")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .is_some_and(|st| st == "active")
    };
    rig.wait("every soak thread active", |_| {
        aliases.iter().all(|a| active(a))
    })
    .await;
    rig.admin.set_fault_seed(0x50a4);
    rig.admin.set_faults(
        "*",
        blobhub_emulator::Faults {
            rate_5xx: 0.03,
            rate_429: 0.02,
            retry_after_s: 0,
            rate_drop: 0.01,
            after_apply: true,
            ..Default::default()
        },
    );
    let mut rng = fastrand::Rng::with_seed(0x50a4);
    let mut sent: Vec<Vec<usize>> = vec![Vec::new(); threads];
    let mut rss: Vec<u64> = Vec::new();
    let started = Instant::now();
    let mut next_kill = started + kill_every;
    let mut n = 0usize;
    while started.elapsed() < duration {
        let t = rng.usize(..threads);
        rig.admin
            .post_item(
                &s.session_id,
                &aliases[t],
                json!([{"type": "text", "text": format!("m{n}")}]),
                None,
                PERSON,
            )
            .expect("person posts");
        sent[t].push(n);
        n += 1;
        tokio::time::sleep(Duration::from_millis(rng.u64(1000..3000))).await;
        if Instant::now() >= next_kill {
            if let Some(pid) = child.id() {
                rss.push(rss_kib(pid));
            }
            let _ = child.kill().await;
            child = rig.spawn();
            next_kill += kill_every;
        }
    }
    rig.admin.clear_faults();
    // Catch up: every message answered or its turn closed, on every thread (or two minutes).
    let tally = |rig: &Rig| soak_tally(rig, &s, &aliases, &sent);
    let _ = rig
        .admin
        .wait_for(Duration::from_secs(120), |_| {
            let t = tally(&rig);
            t.lost == 0 && t.stuck == 0
        })
        .await;
    if let Some(pid) = child.id() {
        rss.push(rss_kib(pid));
    }
    let t = tally(&rig);
    stop(&mut child).await;
    println!(
        "soak: {:.0} s, {threads} threads, a SIGKILL every {} s ({} kills), faults on every command",
        duration.as_secs_f64(),
        kill_every.as_secs(),
        rss.len().saturating_sub(1)
    );
    println!(
        "soak: {} messages: {} answered, {} turns closed interrupted by a kill, {} lost, {} answered twice, {} duplicate posts, {} threads stuck",
        t.sent, t.answered, t.closed, t.lost, t.duplicated, t.duplicate_posts, t.stuck
    );
    let mib = |k: &u64| format!("{:.1}", *k as f64 / 1024.0);
    println!(
        "soak: worker RSS at each kill and at the end (MiB): {}",
        rss.iter().map(mib).collect::<Vec<_>>().join(" ")
    );
    if let (Some(first), Some(last)) = (rss.first(), rss.last()) {
        println!(
            "soak: RSS growth first → last: {:+.1} MiB",
            (*last as f64 - *first as f64) / 1024.0
        );
    }
}

/// Counts what a person would see on each soak thread: `echo: m<k>` replies (a turn may answer
/// several messages at once, `\n\n`-joined), turns closed `interrupted`, repeated post ids.
fn soak_tally(rig: &Rig, s: &SessionIds, aliases: &[String], sent: &[Vec<usize>]) -> SoakTally {
    let mut t = SoakTally::default();
    for (alias, messages) in aliases.iter().zip(sent) {
        let items = rig.items(s, alias);
        let mut echoed: BTreeMap<usize, usize> = BTreeMap::new();
        let mut post_ids = std::collections::HashSet::new();
        // For each message: is there an interrupted turn_end after it?
        let mut asked_at: BTreeMap<usize, usize> = BTreeMap::new();
        let mut interrupted_at: Vec<usize> = Vec::new();
        for (pos, item) in items.iter().enumerate() {
            if let Some(p) = item.pointer("/metadata/post_id").and_then(Value::as_str)
                && !post_ids.insert(p.to_owned())
            {
                t.duplicate_posts += 1;
            }
            let text = item["content"][0]["text"].as_str().unwrap_or_default();
            let ty = item["metadata"]["type"].as_str().unwrap_or_default();
            if item["user_id"] == PERSON {
                if let Some(k) = text.strip_prefix('m').and_then(|d| d.parse().ok()) {
                    asked_at.insert(k, pos);
                }
            } else if ty == "text" {
                if let Some(body) = text.strip_prefix("echo: ") {
                    for part in body.split("\n\n") {
                        if let Some(k) = part.strip_prefix('m').and_then(|d| d.parse().ok()) {
                            *echoed.entry(k).or_default() += 1;
                        }
                    }
                }
            } else if ty == "turn_end" && item.to_string().contains("interrupted") {
                interrupted_at.push(pos);
            }
        }
        let mut lost_here = 0;
        for k in messages {
            t.sent += 1;
            match echoed.get(k).copied().unwrap_or(0) {
                0 => {
                    let closed = asked_at
                        .get(k)
                        .is_some_and(|at| interrupted_at.iter().any(|i| i > at));
                    if closed {
                        t.closed += 1;
                    } else {
                        lost_here += 1;
                    }
                }
                1 => t.answered += 1,
                _ => {
                    t.answered += 1;
                    t.duplicated += 1;
                }
            }
        }
        t.lost += lost_here;
        let state = rig
            .admin
            .object(&s.session_id, alias)
            .and_then(|v| {
                v.pointer("/thread/metadata/instance/state")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        if lost_here > 0 || state != "active" {
            t.stuck += 1;
        }
    }
    t
}

// ---------------------------------------------------------------------------------------------

/// figure → (ours, reference).
#[derive(Default)]
struct Figures(BTreeMap<String, (Option<f64>, Option<f64>)>);

impl Figures {
    fn put(&mut self, key: &str, kind: Kind, v: f64) {
        let e = self.0.entry(key.to_owned()).or_default();
        match kind {
            Kind::Ours => e.0 = Some(v),
            Kind::Reference => e.1 = Some(v),
        }
    }

    fn table(&self) {
        // (key, label, unit, target, meets)
        type Check = fn(f64) -> bool;
        let rows: &[(&str, &str, &str, &str, Option<Check>)] = &[
            (
                "launch_cold",
                "launch → first event poll, cold: empty tree, no cache (median)",
                "ms",
                "≤ 50",
                Some(|v| v <= 50.0),
            ),
            (
                "launch_warm",
                "launch → first event poll, warm (median)",
                "ms",
                "≤ 50",
                Some(|v| v <= 50.0),
            ),
            (
                "rt_idle_p50",
                "person item → reply posted, idle, p50",
                "ms",
                "",
                None,
            ),
            (
                "rt_idle_p99",
                "person item → reply posted, idle, p99",
                "ms",
                "",
                None,
            ),
            (
                "rt_after_p50",
                "person item → reply posted, after a turn, p50",
                "ms",
                "",
                None,
            ),
            (
                "rt_after_p99",
                "person item → reply posted, after a turn, p99",
                "ms",
                "",
                None,
            ),
            (
                "ta_idle_p50",
                "person item → agent stdin, idle, p50",
                "ms",
                "≤ 770",
                Some(|v| v <= 770.0),
            ),
            (
                "ta_idle_p99",
                "person item → agent stdin, idle, p99",
                "ms",
                "",
                None,
            ),
            (
                "ta_after_p50",
                "person item → agent stdin, after a turn, p50",
                "ms",
                "≤ 770, ≤ idle",
                Some(|v| v <= 770.0),
            ),
            (
                "ta_after_p99",
                "person item → agent stdin, after a turn, p99",
                "ms",
                "",
                None,
            ),
            (
                "tp_p50",
                "agent line → item posted, p50",
                "ms",
                "≤ 2",
                Some(|v| v <= 2.0),
            ),
            ("tp_p99", "agent line → item posted, p99", "ms", "", None),
            (
                // Half the idle poll interval (1500 ms) plus the CLI's own start-up (150 ms).
                "claude_req_p50",
                "claude: person item → first model request, p50",
                "ms",
                "≤ 900",
                Some(|v| v <= 900.0),
            ),
            (
                "cli_start_p50",
                "claude CLI alone (no worker): spawn → first model request, p50",
                "ms",
                "",
                None,
            ),
            (
                "cli_driven_start_p50",
                "claude CLI alone, driven as the worker drives it: spawn → first model request, p50",
                "ms",
                "",
                None,
            ),
            (
                "claude_after_poll_p50",
                "claude: the poll that saw the item → first model request, p50",
                "ms",
                "",
                None,
            ),
            (
                "claude_req_p90",
                "claude: person item → first model request, p90",
                "ms",
                "",
                None,
            ),
            (
                "claude_post_p50",
                "claude: last model response → text posted, p50",
                "ms",
                "≤ 10",
                Some(|v| v <= 10.0),
            ),
            (
                "claude_post_p90",
                "claude: last model response → text posted, p90",
                "ms",
                "",
                None,
            ),
            (
                "cli_line_p50",
                "claude CLI alone (no worker): last model response → text line, p50",
                "ms",
                "",
                None,
            ),
            (
                "cli_driven_line_p50",
                "claude CLI alone, driven as the worker drives it: last model response → text line, p50",
                "ms",
                "",
                None,
            ),
            (
                "rss1",
                "idle RSS, 1 section",
                "MiB",
                "≤ 12",
                Some(|v| v <= 12.0),
            ),
            (
                "cpu1",
                "idle CPU, 1 section",
                "% core",
                "≤ 0.02",
                Some(|v| v <= 0.02),
            ),
            (
                "rss10",
                "idle RSS, 10 sections",
                "MiB",
                "≤ 20",
                Some(|v| v <= 20.0),
            ),
            (
                "cpu10",
                "idle CPU, 10 sections",
                "% core",
                "≤ 0.05",
                Some(|v| v <= 0.05),
            ),
            (
                "poll_us1",
                "idle CPU per request, 1 section",
                "µs",
                "≤ 50",
                Some(|v| v <= 50.0),
            ),
            (
                "poll_us10",
                "idle CPU per request, 10 sections",
                "µs",
                "≤ 50",
                Some(|v| v <= 50.0),
            ),
            (
                "cpu10_slow",
                "idle CPU, 10 sections, no keep-alive +300 ms",
                "% core",
                "≤ 0.05",
                Some(|v| v <= 0.05),
            ),
            (
                "poll_us1_slow",
                "idle CPU per request, 1 section, no keep-alive +300 ms",
                "µs",
                "≤ 50",
                Some(|v| v <= 50.0),
            ),
            (
                "poll_us10_slow",
                "idle CPU per request, 10 sections, no keep-alive +300 ms",
                "µs",
                "≤ 50",
                Some(|v| v <= 50.0),
            ),
            (
                "cpu10_reqwest",
                "idle CPU, 10 sections, feeds through reqwest",
                "% core",
                "",
                None,
            ),
            (
                "poll_us10_reqwest",
                "idle CPU per request, 10 sections, feeds through reqwest",
                "µs",
                "",
                None,
            ),
            (
                "poll_x10_reqwest",
                "idle CPU per request, 10 sections: ours / feeds through reqwest",
                "×",
                "",
                None,
            ),
            (
                "poll_x10_slow_reqwest",
                "idle CPU per request, 10 sections, no keep-alive +300 ms: ours / feeds through reqwest",
                "×",
                "",
                None,
            ),
            (
                "poll_us10_floor",
                "idle CPU per request, 10 sessions, the HTTP client alone (floor)",
                "µs",
                "",
                None,
            ),
            (
                "poll_us10_slow_floor",
                "idle CPU per request, 10 sessions, no keep-alive +300 ms, the HTTP client alone (floor)",
                "µs",
                "",
                None,
            ),
            (
                "poll_us10_tokio",
                "idle CPU per request, 10 sessions, a minimal tokio client",
                "µs",
                "",
                None,
            ),
            (
                "poll_us10_machine",
                "idle CPU per request, 10 sessions, a minimal std::net client (the machine floor)",
                "µs",
                "",
                None,
            ),
            (
                "poll_x10_machine",
                "idle CPU per request, 10 sections: ours / the machine floor",
                "×",
                "",
                None,
            ),
            (
                "poll_us10_slow_machine",
                "idle CPU per request, 10 sessions, no keep-alive +300 ms, the machine floor",
                "µs",
                "",
                None,
            ),
            (
                "poll_x10_slow_machine",
                "idle CPU per request, 10 sections, no keep-alive +300 ms: ours / the machine floor",
                "×",
                "",
                None,
            ),
            (
                "poll_us10_together",
                "idle CPU per request, 10 sessions, the machine floor with every poll in one wake-up",
                "µs",
                "",
                None,
            ),
            (
                "wakes10",
                "idle wake-ups per request, 10 sections",
                "",
                "",
                None,
            ),
            (
                "wakes10_machine",
                "idle wake-ups per request, 10 sessions, the machine floor",
                "",
                "",
                None,
            ),
            (
                "poll_us10_slow_reqwest",
                "idle CPU per request, 10 sections, no keep-alive +300 ms, feeds through reqwest",
                "µs",
                "",
                None,
            ),
        ];
        let mut scale_rows: Vec<(String, String, &str, &str, Option<Check>)> = Vec::new();
        for what in ["attach", "rss", "pss", "cpu", "rpm", "peak"] {
            for n in SCALE_SECTIONS {
                let (label, unit, target, check): (&str, &str, &str, Option<Check>) =
                    match (what, n) {
                        ("attach", 200) => ("attach time", "s", "≤ 10", Some(|v| v <= 10.0)),
                        ("attach", _) => ("attach time", "s", "", None),
                        ("rss", 100) => ("idle RSS", "MiB", "≤ 30", Some(|v| v <= 30.0)),
                        ("rss", _) => ("idle RSS", "MiB", "", None),
                        ("pss", _) => ("idle PSS (shared pages divided)", "MiB", "", None),
                        ("cpu", 10) => ("idle CPU", "% core", "≤ 0.05", Some(|v| v <= 0.05)),
                        ("cpu", 50) => ("idle CPU", "% core", "≤ 0.25", Some(|v| v <= 0.25)),
                        ("cpu", _) => ("idle CPU", "% core", "", None),
                        ("rpm", _) => ("requests per minute per section", "", "", None),
                        _ => ("event polls in one 50 ms slot, most", "", "", None),
                    };
                scale_rows.push((
                    format!("scale_{what}{n}"),
                    format!("{label}, {n} sections"),
                    unit,
                    target,
                    check,
                ));
            }
        }
        for (n, max_agents) in THREAD_CASES {
            for (what, label, unit) in [
                ("p50", "reply latency p50", "ms"),
                ("p99", "reply latency p99", "ms"),
                ("max", "reply latency max", "ms"),
                ("rss", "worker RSS per active thread", "KiB"),
            ] {
                // 200 threads at once: every reply within one poll interval (1.5 s) plus 1 s.
                let (target, check): (&str, Option<Check>) = if n == 200 && what == "max" {
                    ("≤ 2500", Some(|v| v <= 2500.0))
                } else {
                    ("", None)
                };
                scale_rows.push((
                    format!("threads{n}_{max_agents}_{what}"),
                    format!("{label}, {n} threads, max_agents {max_agents}"),
                    unit,
                    target,
                    check,
                ));
            }
        }
        // Part `paging`: whatever sizes ran (0 is the baseline of the same run).
        for key in self.0.keys().filter(|k| k.starts_with("paging_")) {
            let (what, n, unit) = match key.rsplit_once('_') {
                Some((head, "polls")) => (head, "back-to-back event polls at start, ", ""),
                Some((head, "ms")) if head.starts_with("paging_events") => {
                    (head, "start → the last back-to-back event poll, ", "ms")
                }
                Some((head, "ms")) => (head, "hand-off → ", "ms"),
                Some((head, _)) => (head, "peak RSS, ", "MiB"),
                None => continue,
            };
            let label = if let Some(count) = what.strip_prefix("paging_events") {
                format!("{n}{count} events waiting in the feed")
            } else if let Some(count) = what.strip_prefix("paging_items") {
                format!(
                    "{n}a thread of {} items",
                    if count == "0" { "1" } else { count }
                )
            } else {
                continue;
            };
            let label = if unit == "ms" && what.starts_with("paging_items") {
                format!("{label} (→ turn_end)")
            } else {
                label
            };
            scale_rows.push((key.clone(), label, unit, "", None));
        }
        let scale_rows: Vec<(&str, &str, &str, &str, Option<Check>)> = scale_rows
            .iter()
            .map(|(k, l, u, t, c)| (k.as_str(), l.as_str(), *u, *t, *c))
            .collect();
        println!();
        println!("| figure | unit | ours | reference | ours/ref | target | met? |");
        println!("|---|---|---|---|---|---|---|");
        for (key, label, unit, target, check) in rows.iter().chain(scale_rows.iter()) {
            let Some((ours, reference)) = self.0.get(*key) else {
                continue;
            };
            let fmt = |v: &Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.3}"));
            let ratio = match (ours, reference) {
                (Some(o), Some(r)) if *r != 0.0 => format!("{:.3}", o / r),
                _ => "–".to_owned(),
            };
            let met = match (check, ours) {
                (Some(c), Some(o)) => {
                    if c(*o) {
                        "yes"
                    } else {
                        "**no**"
                    }
                }
                _ => "",
            };
            println!(
                "| {label} | {unit} | {} | {} | {ratio} | {target} | {met} |",
                fmt(ours),
                fmt(reference)
            );
        }
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{} CPU(s) ({cpu}), Linux {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel.trim()
    )
}

/// The 1, 5 and 15 minute load averages: other work on the machine shows in every latency here.
fn load() -> String {
    let avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    avg.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    // The machine floor runs before any runtime exists: the process holds nothing else.
    match argv.get(1).map(String::as_str) {
        Some(MACHINE_FLOOR) => return machine_floor::run(&argv[2..], false),
        Some(MACHINE_FLOOR_TOGETHER) => return machine_floor::run(&argv[2..], true),
        Some(TOKIO_FLOOR) => return machine_floor::run_tokio(&argv[2..]),
        _ => {}
    }
    run(argv);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn run(argv: Vec<String>) {
    if argv.get(1).map(String::as_str) == Some(POLL_FLOOR) {
        poll_floor(&argv[2..]).await;
        return;
    }
    let parts: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |p: &str| parts.is_empty() || parts.iter().any(|a| a == p);
    // `inspect` alone runs only the inspection.
    let turns: usize = std::env::var("BENCH_TURNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
        .clamp(1, 1000);
    let claude_turns: usize = std::env::var("BENCH_CLAUDE_TURNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .clamp(1, 1000);
    let window = Duration::from_secs(
        std::env::var("BENCH_IDLE_WINDOW_S")
            .ok()
            .and_then(|v| v.parse().ok())
            // One heartbeat period: every section refreshes its `worker` object every 30 s (both
            // workers), so a 30 s window holds exactly one round of them wherever it starts, and
            // the CPU per request counts them at their true rate. A 20 s window held one round or
            // none depending on where the first beat fell: 124–274 µs per request for one build.
            .unwrap_or(30)
            .clamp(1, 600),
    );
    let reference = std::env::var_os(REFERENCE_VAR)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    if let Some(r) = &reference {
        assert!(r.is_file(), "{REFERENCE_VAR}={} is not a file", r.display());
    } else {
        eprintln!(
            "harness bench: {REFERENCE_VAR} unset, measuring only ours (install the reference with \
             tests/emulator/reference/install.sh DIR, which prints the path)"
        );
    }
    println!("machine: {}", machine());
    println!("load average at the start: {}", load());
    println!(
        "ours: {}\nreference: {}\ndefault polling (idle 1500 ms, active 3000 ms), emulator in-process on 127.0.0.1",
        common::ours_exe(),
        reference
            .as_ref()
            .map_or("(not measured)".to_owned(), |r| r.display().to_string())
    );
    let mut kinds = vec![Kind::Ours];
    if reference.is_some() {
        kinds.push(Kind::Reference);
    }
    let mut out = Figures::default();
    let r = reference.as_deref();
    for &kind in &kinds {
        if wants("launch") {
            launch(kind, r, &mut out).await;
        }
    }
    for &kind in &kinds {
        if wants("latency") {
            latency(kind, r, turns, &mut out).await;
        }
    }
    for &kind in &kinds {
        if wants("idle") {
            idle(kind, r, window, &mut out).await;
        }
    }
    for &kind in &kinds {
        if wants("threads") {
            threads(kind, r, &mut out).await;
        }
    }
    let paging_n = std::env::var("BENCH_PAGING_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(PAGING_N)
        .clamp(1, 1_000_000);
    for &kind in &kinds {
        if wants("paging") {
            paging(kind, r, paging_n, &mut out).await;
        }
    }
    for &kind in &kinds {
        if wants("scale") {
            scale(kind, r, window, &mut out).await;
        }
    }
    if wants("claude") {
        match claude_cli() {
            Some(cli) => {
                println!("claude: {}", cli.display());
                claude(&kinds, r, &cli, claude_turns, &mut out).await;
            }
            None => eprintln!(
                "harness bench: no claude CLI ({CLAUDE_VAR} unset and none in tests/agents): part \
                 `claude` skipped (npm ci --prefix tests/agents installs it)"
            ),
        }
    }
    if parts.iter().any(|a| a == "inspect") {
        inspect(window).await;
    }
    if parts.iter().any(|a| a == "soak") {
        let secs = |name: &str, default: u64| {
            Duration::from_secs(
                std::env::var(name)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(default)
                    .max(1),
            )
        };
        let threads = std::env::var("BENCH_SOAK_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4usize)
            .clamp(1, 64);
        soak(
            secs("BENCH_SOAK_S", 3600),
            threads,
            secs("BENCH_SOAK_KILL_S", 60),
        )
        .await;
    }
    println!("load average at the end: {}", load());
    out.table();
}
