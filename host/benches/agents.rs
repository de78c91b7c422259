//! The real agent CLIs through the worker (issue 11, "Benchmark"): `just bench` (release; not in
//! CI). Results go in docs/benchmarks.md.
//!
//! In one run, against the in-process emulator and the fake model APIs on 127.0.0.1, with fast
//! polling (50 ms) so that the figures show the worker's and the CLI's own work rather than the
//! poll cycle, this measures for each agent type, one thread, `BENCH_TURNS` turns (default 10),
//! each message posted as soon as the previous turn's `turn_end` landed:
//!
//! 1. a person's item → the agent's first model request (the fake's arrival stamp), and
//! 2. the last model response → the reply's text item posted (the fake answers at once, so its
//!    arrival stamp is when the response went out).
//!
//! The baseline, measured in the same run, is the test agent (`blobhub-test-agent`, a process that
//! answers at once): item → it read the turn on stdin, its line → the item posted. The CLIs come
//! from `BLOBHUB_CLAUDE` / `BLOBHUB_CODEX` or tests/agents/node_modules; a missing one is skipped
//! with a note. Arguments (after `--`): any of `test_agent`, `claude_code`, `codex`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use blobhub_emulator::{Admin, CreateSession, Emulator, EmulatorConfig, SessionIds, User};
use blobhub_worker::state_tree::{
    ApiCredentials, ApiKey, Credentials, Identity, IdentityUser, StateTree,
};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const OURS_EXE: &str = env!("CARGO_BIN_EXE_blobhub-worker");
const TEST_AGENT: &str = env!("CARGO_BIN_EXE_blobhub-test-agent");
const PATIENCE: Duration = Duration::from_secs(60);
const WORKER: &str = "usr_ours";
const PERSON: &str = "usr_person";

/// Microseconds since 1970 of `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` (the emulator's `created_at`).
fn epoch_micros(ts: &str) -> i64 {
    let (date, time) = ts.trim_end_matches('Z').split_once('T').unwrap();
    let mut d = date.split('-').map(|x| x.parse::<i64>().unwrap());
    let (y, m, day) = (d.next().unwrap(), d.next().unwrap(), d.next().unwrap());
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>().unwrap());
    let (h, mi, s) = (t.next().unwrap(), t.next().unwrap(), t.next().unwrap());
    let frac: i64 = format!("{frac:0<6}")[..6].parse().unwrap();
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    ((days * 86_400 + h * 3600 + mi * 60 + s) * 1_000_000) + frac
}

/// Nearest-rank quantile of µs samples, in ms.
fn quantile(v: &[i64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * q).round() as usize] as f64 / 1000.0
}

fn describe(v: &[i64]) -> String {
    format!(
        "p50 {:8.2} ms  p99 {:8.2} ms  min {:8.2}  max {:8.2}  (n={})",
        quantile(v, 0.5),
        quantile(v, 0.99),
        quantile(v, 0.0),
        quantile(v, 1.0),
        v.len()
    )
}

/// The CLI at `var` or in tests/agents, if installed.
fn cli(var: &str, name: &str) -> Option<PathBuf> {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/agents/node_modules/.bin")
            .join(name)
    });
    path.exists().then_some(path)
}

/// Where a turn's model requests are recorded.
enum Fake {
    None,
    Anthropic(blobhub_fake_anthropic::FakeAnthropic),
    Openai(blobhub_fake_openai::FakeOpenai),
}

impl Fake {
    /// Arrival stamps of every model request so far.
    fn stamps(&self) -> Vec<i64> {
        match self {
            Fake::None => Vec::new(),
            Fake::Anthropic(f) => f
                .model_calls()
                .iter()
                .map(|r| r.received_at_us as i64)
                .collect(),
            Fake::Openai(f) => f
                .model_calls()
                .iter()
                .map(|r| r.received_at_us as i64)
                .collect(),
        }
    }
}

struct Rig {
    agent_type: &'static str,
    emu: Emulator,
    admin: Admin,
    session: SessionIds,
    fake: Fake,
    dir: tempfile::TempDir,
}

impl Rig {
    /// The emulator, a session, a fake for the agent and a worker home whose config drives it.
    async fn new(agent_type: &'static str, cli: Option<&Path>) -> Rig {
        let user = |id: &str, key: &str| User {
            id: id.into(),
            name: id.into(),
            email: format!("{id}@example.com"),
            api_key: key.into(),
        };
        let emu = Emulator::start(EmulatorConfig {
            users: vec![user(WORKER, "bhk_ours"), user(PERSON, "bhk_person")],
            state_file: None,
        })
        .await
        .expect("emulator starts");
        let admin = emu.admin();
        let session = admin
            .create_session(CreateSession::default())
            .expect("session");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("work")).unwrap();
        let (fake, block) = match agent_type {
            "claude_code" => {
                let f = blobhub_fake_anthropic::FakeAnthropic::start()
                    .await
                    .unwrap();
                let config = dir.path().join("claude-config");
                let block = format!(
                    "  claude_code:\n    executable: {}\n    env:\n      ANTHROPIC_BASE_URL: {}\n      \
                     ANTHROPIC_API_KEY: dummy\n      CLAUDE_CONFIG_DIR: {}\n      DISABLE_TELEMETRY: \"1\"\n      \
                     DISABLE_AUTOUPDATER: \"1\"\n      DISABLE_ERROR_REPORTING: \"1\"\n      \
                     CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: \"1\"\n      CLAUDE_CODE_MAX_RETRIES: \"0\"\n",
                    cli.unwrap().display(),
                    f.base_url(),
                    config.display()
                );
                (Fake::Anthropic(f), block)
            }
            "codex" => {
                let f = blobhub_fake_openai::FakeOpenai::start().await.unwrap();
                let home = dir.path().join("codex-home");
                std::fs::create_dir_all(&home).unwrap();
                std::fs::write(
                    home.join("config.toml"),
                    format!(
                        "model = \"gpt-5.5\"\nmodel_provider = \"fake\"\n[model_providers.fake]\n\
                         name = \"fake\"\nbase_url = \"{}/v1\"\nwire_api = \"responses\"\n\
                         env_key = \"FAKE_OPENAI_API_KEY\"\nrequest_max_retries = 0\n\
                         stream_max_retries = 0\n[analytics]\nenabled = false\n[features]\nplugins = false\n",
                        f.base_url()
                    ),
                )
                .unwrap();
                let block = format!(
                    "  codex:\n    executable: {}\n    env:\n      CODEX_HOME: {}\n      \
                     FAKE_OPENAI_API_KEY: dummy\n",
                    cli.unwrap().display(),
                    home.display()
                );
                (Fake::Openai(f), block)
            }
            _ => (Fake::None, String::new()),
        };
        let rig = Rig {
            agent_type,
            emu,
            admin,
            session,
            fake,
            dir,
        };
        let tree = rig.tree();
        tree.save_credentials(&Credentials {
            api: ApiCredentials {
                url: rig.emu.api_url(),
                key: ApiKey::new("bhk_ours"),
            },
        })
        .unwrap();
        tree.save_identity(&Identity {
            user: IdentityUser {
                user_id: WORKER.into(),
                name: String::new(),
                email: String::new(),
                recorded_at: "2026-01-01T00:00:00Z".into(),
            },
        })
        .unwrap();
        let s = &rig.session;
        std::fs::write(
            tree.config_path(),
            format!(
                "polling:\n  interval_idle_ms: 50\n  interval_active_ms: 50\n  backoff_max_ms: 1000\n\
                 agents:\n  test_double:\n    executable: {TEST_AGENT}\n{block}sections:\n  - name: s0\n    \
                 job_type: session_agent_harness\n    session: {{org_id: {}, blob_id: {}, revision_id: {}, session_id: {}}}\n\
                 workspace:\n  allowed_roots: [{}]\n",
                s.org_id, s.blob_id, s.revision_id, s.session_id,
                std::env::temp_dir().display()
            ),
        )
        .unwrap();
        rig
    }

    fn tree(&self) -> StateTree {
        StateTree::at(self.dir.path().join("worker-home"))
    }

    fn spawn(&self) -> Child {
        let log = std::fs::File::create(self.dir.path().join("worker.log")).unwrap();
        Command::new(OURS_EXE)
            .arg("start")
            .env("BLOBHUB_WORKER_HOME", self.tree().root())
            .env_remove("BLOBHUB_WORKER_LOG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the worker")
    }

    async fn wait(&self, what: &str, pred: impl FnMut(&Admin) -> bool) {
        if !self.admin.wait_for(PATIENCE, pred).await {
            let log =
                std::fs::read_to_string(self.dir.path().join("worker.log")).unwrap_or_default();
            panic!("{}: timed out waiting for {what}\n{log}", self.agent_type);
        }
    }

    fn items(&self) -> Vec<Value> {
        self.admin.items(&self.session.session_id, "t")
    }

    fn count(&self, ty: &str) -> usize {
        self.items()
            .iter()
            .filter(|i| i["user_id"] == WORKER && i["metadata"]["type"] == ty)
            .count()
    }
}

/// Per agent type: item → agent (read on stdin, or first model request), and agent's answer →
/// item posted.
struct Sample {
    to_agent: Vec<i64>,
    to_post: Vec<i64>,
}

async fn measure(agent_type: &'static str, cli: Option<&Path>, turns: usize) -> Sample {
    let rig = Rig::new(agent_type, cli).await;
    let mut child = rig.spawn();
    rig.wait("attached", |_| {
        rig.admin
            .items(&rig.session.session_id, "worker")
            .iter()
            .any(|i| i["metadata"]["type"] == "attached")
    })
    .await;
    let envelope = json!({"type": "thread", "thread": {"attributes": {"name": "bench"}, "metadata": {
        "instance": {"state": "pending"}, "agent": {"type": agent_type},
        "workspace": {"work_folder": rig.dir.path().join("work").to_str().unwrap()}}}});
    rig.admin
        .upload_object(&rig.session.session_id, "t", envelope, PERSON)
        .unwrap();
    rig.wait("active", |a| {
        a.object(&rig.session.session_id, "t")
            .and_then(|v| {
                v.pointer("/thread/metadata/instance/state")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .as_deref()
            == Some("active")
    })
    .await;
    let text = if agent_type == "test_double" {
        "stamp"
    } else {
        "hello"
    };
    let mut sample = Sample {
        to_agent: Vec::new(),
        to_post: Vec::new(),
    };
    // One turn before measuring: the CLI's first start fills its caches.
    for i in 0..=turns {
        let asked = rig
            .admin
            .post_item(
                &rig.session.session_id,
                "t",
                json!([{"type": "text", "text": text}]),
                None,
                PERSON,
            )
            .expect("person posts");
        let asked_at = epoch_micros(asked["created_at"].as_str().unwrap());
        rig.wait("the reply's turn_end", |_| rig.count("turn_end") > i)
            .await;
        if i == 0 {
            continue;
        }
        let items = rig.items();
        let reply = items
            .iter()
            .rev()
            .find(|x| x["user_id"] == WORKER && x["metadata"]["type"] == "text")
            .expect("a reply");
        let posted_at = epoch_micros(reply["created_at"].as_str().unwrap());
        if agent_type == "test_double" {
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
        } else {
            let stamps: Vec<i64> = rig
                .fake
                .stamps()
                .into_iter()
                .filter(|&t| t >= asked_at && t <= posted_at)
                .collect();
            let (first, last) = (stamps.first().unwrap(), stamps.last().unwrap());
            sample.to_agent.push(first - asked_at);
            sample.to_post.push(posted_at - last);
        }
    }
    if let Some(pid) = child.id() {
        // SAFETY: signalling a child we spawned and have not reaped.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    if tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
    sample
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let parts: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |p: &str| parts.is_empty() || parts.iter().any(|a| a == p);
    let turns: usize = std::env::var("BENCH_TURNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .clamp(1, 1000);
    println!(
        "agents bench: polling 50 ms, {turns} turns per agent, each posted after the previous turn_end"
    );
    let mut rows: Vec<(&str, Sample)> = Vec::new();
    for (agent_type, var, name) in [
        ("test_double", "", ""),
        ("claude_code", "BLOBHUB_CLAUDE", "claude"),
        ("codex", "BLOBHUB_CODEX", "codex"),
    ] {
        if !wants(agent_type) {
            continue;
        }
        let path = if var.is_empty() { None } else { cli(var, name) };
        if !var.is_empty() && path.is_none() {
            eprintln!(
                "agents bench: no {name} CLI ({var} or npm ci --prefix tests/agents); skipped"
            );
            continue;
        }
        let s = measure(agent_type, path.as_deref(), turns).await;
        let (a, b) = if agent_type == "test_double" {
            (
                "person's item -> agent read the turn",
                "agent's line -> item posted",
            )
        } else {
            (
                "person's item -> first model request",
                "last model response -> text item posted",
            )
        };
        println!("{agent_type:12} {a:42}: {}", describe(&s.to_agent));
        println!("{agent_type:12} {b:42}: {}", describe(&s.to_post));
        rows.push((agent_type, s));
    }
    let base = rows
        .iter()
        .find(|(t, _)| *t == "test_double")
        .map(|(_, s)| (quantile(&s.to_agent, 0.5), quantile(&s.to_post, 0.5)));
    println!();
    println!(
        "| agent | item → agent, p50 | p99 | ratio to test agent (p50) | agent's answer → item posted, p50 | p99 | ratio to test agent (p50) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (t, s) in &rows {
        let ratio = |v: f64, b: Option<f64>| match b {
            Some(b) if b > 0.0 => format!("{:.1}", v / b),
            _ => "–".into(),
        };
        let (a50, p50) = (quantile(&s.to_agent, 0.5), quantile(&s.to_post, 0.5));
        println!(
            "| {t} | {a50:.2} ms | {:.2} ms | {} | {p50:.2} ms | {:.2} ms | {} |",
            quantile(&s.to_agent, 0.99),
            ratio(a50, base.map(|b| b.0)),
            quantile(&s.to_post, 0.99),
            ratio(p50, base.map(|b| b.1)),
        );
    }
}
