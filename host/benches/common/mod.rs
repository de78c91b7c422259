//! What the worker benches share (`harness.rs`, `agents.rs`): the emulator with its users, a home
//! for our worker (credentials, identity, the section lines of its config.yaml), starting and
//! stopping it, and the timing helpers.

// Each bench uses its own part of this module.
#![allow(dead_code)]

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blobhub_emulator::{Admin, Emulator, EmulatorConfig, SessionIds, User};
use blobhub_worker::state_tree::{
    ApiCredentials, ApiKey, Credentials, Identity, IdentityUser, StateTree,
};
use serde_json::Value;
use tokio::process::{Child, Command};

pub const OURS_EXE: &str = env!("CARGO_BIN_EXE_blobhub-worker");

/// The worker the benches start: this build's, or `BENCH_OURS_EXE` (another build's executable,
/// to compare two builds in paired runs on the same machine).
pub fn ours_exe() -> String {
    std::env::var("BENCH_OURS_EXE").unwrap_or_else(|_| OURS_EXE.to_owned())
}
pub const TEST_AGENT: &str = env!("CARGO_BIN_EXE_blobhub-test-agent");

/// The longest wait for anything a worker should do (attach, a reply, a state change).
pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Microseconds since 1970 of `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` (the emulator's `created_at`).
pub fn epoch_micros(ts: &str) -> i64 {
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
pub fn quantile(v: &[i64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * q).round() as usize] as f64 / 1000.0
}

pub fn describe(v: &[i64]) -> String {
    format!(
        "p50 {:8.2} ms  p90 {:8.2} ms  p99 {:8.2} ms  min {:8.2}  max {:8.2}  (n={})",
        quantile(v, 0.5),
        quantile(v, 0.9),
        quantile(v, 0.99),
        quantile(v, 0.0),
        quantile(v, 1.0),
        v.len()
    )
}

pub fn user(id: &str, key: &str) -> User {
    User {
        id: id.into(),
        name: id.into(),
        email: format!("{id}@example.com"),
        api_key: key.into(),
    }
}

/// The in-process emulator on 127.0.0.1 with `users` as (id, API key).
pub async fn emulator(users: &[(&str, &str)]) -> (Emulator, Admin) {
    let emu = Emulator::start(EmulatorConfig {
        users: users.iter().map(|(id, key)| user(id, key)).collect(),
        state_file: None,
    })
    .await
    .expect("emulator starts");
    let admin = emu.admin();
    (emu, admin)
}

/// Our worker's credentials and identity in `tree`, logged in as `user_id` with `key`.
pub fn write_our_login(tree: &StateTree, api_url: String, user_id: &str, key: &str) {
    tree.save_credentials(&Credentials {
        api: ApiCredentials {
            url: api_url,
            key: ApiKey::new(key),
        },
    })
    .unwrap();
    tree.save_identity(&Identity {
        user: IdentityUser {
            user_id: user_id.into(),
            name: String::new(),
            email: String::new(),
            recorded_at: "2026-01-01T00:00:00Z".into(),
        },
    })
    .unwrap();
}

/// One `sections:` entry of our config.yaml: the bundled harness on session `s`.
pub fn our_section(name: &str, s: &SessionIds) -> String {
    format!(
        "  - name: {name}\n    job_type: session_agent_harness\n    session: {{org_id: {}, blob_id: {}, revision_id: {}, session_id: {}}}\n",
        s.org_id, s.blob_id, s.revision_id, s.session_id
    )
}

/// The `workspace:` block: the benches' work folders are temporary folders, outside the
/// default root (home).
pub fn our_workspace() -> String {
    format!(
        "workspace:\n  allowed_roots: [{}]\n",
        std::env::temp_dir().display()
    )
}

/// `blobhub-worker start` on `tree`, its output appended to `log`, killed when dropped. The
/// caller may add to the environment before spawning.
pub fn our_start(tree: &StateTree, log: &Path) -> Command {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut c = Command::new(ours_exe());
    c.arg("start")
        .env("BLOBHUB_WORKER_HOME", tree.root())
        .env_remove("BLOBHUB_WORKER_LOG")
        .env_remove("RUST_LOG")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true);
    c
}

/// SIGTERM, then reap (SIGKILL after 15 s).
pub async fn stop(child: &mut Child) {
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
}

/// The `instance.state` of the thread object at `alias` ("" when there is none).
pub fn thread_state(admin: &Admin, session_id: &str, alias: &str) -> String {
    admin
        .object(session_id, alias)
        .and_then(|v| {
            v.pointer("/thread/metadata/instance/state")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_default()
}
