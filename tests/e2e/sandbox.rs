//! A hostile job type beside a healthy harness section, through the real binary: it loses its own
//! section and nothing else (issue: the capability promise against a hostile job type).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::harness_support::Env;
use crate::runtime::install;
use crate::support::demo_user;

/// Every file under `root` (not following links) and its digest, except below `skip`.
fn digests(root: &Path, skip: &[PathBuf]) -> BTreeMap<PathBuf, String> {
    fn walk(dir: &Path, skip: &[PathBuf], out: &mut BTreeMap<PathBuf, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if skip.iter().any(|s| path.starts_with(s)) {
                continue;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                walk(&path, skip, out);
            } else if kind.is_symlink() {
                let target = std::fs::read_link(&path).unwrap_or_default();
                out.insert(path, format!("link -> {}", target.display()));
            } else {
                let bytes = std::fs::read(&path).unwrap_or_default();
                out.insert(path, hex::encode(Sha256::digest(&bytes)));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, skip, &mut out);
    out
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_job_type_loses_only_its_own_section() {
    let env = Env::new().await;
    let s = env.session("ses_harness");
    let h = env.session("ses_hostile");
    let tree = env.home.root().to_path_buf();
    install(&tree, "escape_attempts");
    // The operator's home, which nothing may touch.
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join(".bashrc"), "# the operator's\n").unwrap();
    // A link left in the hostile section's own folder, pointing at the tree: the host must not
    // write through it (a guest can no longer make one, but one may predate the upgrade).
    let hostile_dir = tree.join("jobs/escape_attempts-s1");
    std::fs::create_dir_all(&hostile_dir).unwrap();
    std::os::unix::fs::symlink(&tree, hostile_dir.join("planted")).unwrap();

    let key = demo_user().api_key;
    let outside = tempfile::tempdir().unwrap();
    env.configure(
        &[&s],
        4,
        "job_types:\n  escape_attempts:\n    allow_spawn: [env, cat]\n    max_busy_ms: 2000\n",
    );
    let config_path = tree.join("config.yaml");
    let mut config = std::fs::read_to_string(&config_path).unwrap();
    config.push_str(&format!(
        "  - name: hostile\n    job_type: escape_attempts\n    attempt: hostile\n    \
         tree: {tree}\n    outside: {outside}\n    key_hint: {key}\n    \
         session: {{org_id: {}, blob_id: {}, revision_id: {}, session_id: {}}}\n",
        h.org_id,
        h.blob_id,
        h.revision_id,
        h.session_id,
        tree = tree.display(),
        outside = outside.path().display(),
    ));
    std::fs::write(&config_path, config).unwrap();
    let skip = [tree.join("jobs"), tree.join("cache"), tree.join("logs")];
    let before = digests(&tree, &skip);
    let home_before = digests(home.path(), &[]);

    let worker = env
        .home
        .spawn_start_with_env(&[("HOME", home.path().to_str().unwrap())])
        .await
        .expect("the worker starts");
    let pid = worker.pid();
    // The hostile section reports, then spins until its budget ends it.
    let admin = &env.admin;
    let sid = h.session_id.clone();
    let posted = admin
        .wait_for(std::time::Duration::from_secs(120), |_| {
            admin.object(&sid, "hostile-report").is_some()
        })
        .await;
    if !posted {
        let yaml = std::fs::read_to_string(hostile_dir.join("section.yaml")).unwrap_or_default();
        let out = worker.terminate().await;
        panic!(
            "the hostile section posted no report\n{yaml}\n{}",
            out.stderr
        );
    }
    let report = admin.object(&sid, "hostile-report").unwrap()["report"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let section_yaml = hostile_dir.join("section.yaml");
    crate::harness_support::eventually("the hostile section ends", || {
        std::fs::read_to_string(&section_yaml).is_ok_and(|t| t.contains("JOB_TYPE_UNRESPONSIVE"))
    })
    .await;

    // Every attack was blocked, and each one ran.
    for attack in [
        "wasi-symlink-up",
        "wasi-symlink-root",
        "state-write-through-link",
        "state-append-through-link",
        "state-write-dotdot",
        "env-LD_PRELOAD",
        "env-PATH",
        "env-NODE_OPTIONS",
        "env-BLOBHUB_API_KEY",
        "cat /proc/",
        "cwd-probes",
        "agent-blobhub-test-agent",
        "request-flood",
    ] {
        assert!(
            report.lines().any(|l| l.starts_with(attack)),
            "{attack} ran: {report}"
        );
    }
    assert!(
        report.lines().filter(|l| l.starts_with("cat ")).count() >= 4,
        "{report}"
    );
    assert!(!report.contains(" ESCAPED "), "{report}");
    assert!(
        !report.contains(&key),
        "the key reached the job type: {report}"
    );

    // The harness section keeps answering.
    env.handoff(&s, "t");
    env.wait_state(&s, "t", "active").await;
    env.say(&s, "t", "still here");
    env.wait("the harness answers", |e| {
        e.has(&s, "t", "text", "echo: still here")
    })
    .await;

    // Bounded: the floods of requests, log lines and stderr left the worker small.
    let rss = rss_kib(pid);
    assert!(rss < 200 * 1024, "worker RSS {rss} KiB");
    let out = worker.terminate().await;
    // The job type's stderr is tagged and quoted: no forged worker line. Its log and stderr
    // lines were cut to the quota's burst (200 a second, ten seconds' worth), fields to 2 KiB.
    let lines: Vec<&str> = out.stderr.lines().collect();
    let forged: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("all_sections_ended") && !l.contains("guest_stderr"))
        .collect();
    assert!(forged.is_empty(), "{forged:?}");
    let from_guest = lines
        .iter()
        .filter(|l| {
            l.contains("section=hostile") && (l.contains(" flood ") || l.contains("guest_stderr"))
        })
        .count();
    // 9000 lines were attempted; the burst is 2000, refilled at 200 a second while it ran.
    assert!(
        (1000..=4500).contains(&from_guest),
        "{from_guest} of 9000 lines of the flood got through"
    );
    assert!(lines.iter().any(|l| l.contains("log_lines_dropped")));
    assert!(
        lines.iter().all(|l| l.len() < 3 * 1024),
        "a line longer than the field cap"
    );

    // Nothing outside the two sections' folders changed; the operator's home is untouched.
    assert_eq!(digests(&tree, &skip), before);
    assert_eq!(digests(home.path(), &[]), home_before);
    let jobs: Vec<String> = std::fs::read_dir(tree.join("jobs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        jobs.iter()
            .all(|j| j == "escape_attempts-s1" || j.starts_with("session_agent_harness-")),
        "{jobs:?}"
    );
    assert!(!tree.join("plugins/evil.wasm").exists());
    // The report named the worker's real pid, so the /proc attacks aimed at the worker.
    assert!(report.contains(&format!("worker-pid {pid}\n")), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_validate_fails_only_its_own_sections() {
    let env = Env::new().await;
    let s = env.session("ses_ok");
    let tree = env.home.root().to_path_buf();
    install(&tree, "escape_attempts");
    env.configure(&[&s], 4, "");
    let config_path = tree.join("config.yaml");
    let mut config = std::fs::read_to_string(&config_path).unwrap();
    // A session block: the host refuses a session job type's section without one at preflight,
    // before any validate runs.
    config.push_str("  - name: broken\n    job_type: escape_attempts\n    validate: spin\n    session: {org_id: o, blob_id: b, revision_id: r, session_id: ses_broken}\n");
    // And a component that does not even load.
    std::fs::write(tree.join("plugins/junk.wasm"), b"\0asm junk").unwrap();
    config.push_str("  - name: junk\n    job_type: junk\n");
    std::fs::write(&config_path, config).unwrap();

    let check = env.home.run(&["config", "check"], None).await;
    assert!(
        check.stderr.contains("JOB_TYPE_IMPORT_REFUSED")
            || check.stdout.contains("JOB_TYPE_IMPORT_REFUSED"),
        "{check:#?}"
    );
    let worker = env.start().await;
    env.handoff(&s, "t");
    env.wait_state(&s, "t", "active").await;
    env.say(&s, "t", "hello");
    env.wait("the harness answers", |e| {
        e.has(&s, "t", "text", "echo: hello")
    })
    .await;
    let out = worker.terminate().await;
    assert!(
        out.stderr.contains("JOB_TYPE_IMPORT_REFUSED"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("JOB_TYPE_INVALID"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_claiming_the_harness_name_runs_only_when_the_operator_names_it() {
    let env = Env::new().await;
    let s = env.session("ses_claim");
    let tree = env.home.root().to_path_buf();
    let plugins = tree.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(
        crate::runtime::fixtures().join("impostor.wasm"),
        plugins.join("session_agent_harness.wasm"),
    )
    .unwrap();
    env.configure(&[&s], 4, "");
    let listing = env.home.run(&["plugins"], None).await;
    assert!(
        listing.stdout.contains("held back:")
            && listing
                .stdout
                .contains("WIT versions supported: blobhub:worker@0.1.x"),
        "{listing:#?}"
    );
    let worker = env.start().await;
    env.handoff(&s, "t");
    env.say(&s, "t", "who are you");
    env.wait("the bundled harness answers", |e| {
        e.has(&s, "t", "text", "echo: who are you")
    })
    .await;
    worker.terminate().await;

    // Named for that job type in config.yaml, the operator's pinned component runs instead.
    env.configure(
        &[&s],
        4,
        "job_types:\n  session_agent_harness:\n    component: session_agent_harness.wasm\n",
    );
    let worker = env.start().await;
    let path = tree.join("jobs/session_agent_harness-s0/section.yaml");
    crate::harness_support::eventually("the impostor ran", || {
        std::fs::read_to_string(&path).is_ok_and(|t| t.contains("IMPOSTOR"))
    })
    .await;
    worker.terminate().await;

    // A plugins folder others can write to is refused as a whole.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o777)).unwrap();
    let listing = env.home.run(&["plugins"], None).await;
    assert!(
        listing.stdout.contains("PLUGINS_DIR_INSECURE"),
        "{listing:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_job_type_is_validated_once_per_start() {
    let env = Env::new().await;
    let (a, b) = (env.session("ses_v1"), env.session("ses_v2"));
    env.configure(&[&a, &b], 4, "");
    let worker = env
        .home
        .spawn_start_with(&["-v", "start"], &[])
        .await
        .expect("the worker starts");
    env.handoff(&a, "t");
    env.exchange(&a, "t", "hi").await;
    let out = worker.terminate().await;
    let calls = out
        .stderr
        .lines()
        .filter(|l| l.contains("validate_called"))
        .count();
    assert_eq!(calls, 1, "{}", out.stderr);
}
