//! The worker's executable is the test agent when run under the name `blobhub-test-agent`, which
//! is how `demo` works after a plain `cargo run` (only the worker's executable is built).

use crate::support::WORKER;

#[test]
fn the_worker_run_as_blobhub_test_agent_is_the_test_agent() {
    let dir = tempfile::tempdir().unwrap();
    let agent = dir.path().join("blobhub-test-agent");
    std::os::unix::fs::symlink(WORKER, &agent).unwrap();
    let help = std::process::Command::new(&agent)
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success(), "{help:?}");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.starts_with("blobhub-test-agent: the scripted stand-in"),
        "{text}"
    );
    assert!(
        text.contains("usage: blobhub-test-agent [--session-id <id>]"),
        "{text}"
    );

    // One turn, exactly as the harness drives it.
    let work = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(&agent)
        .current_dir(work.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"type\":\"turn\",\"text\":\"hello\"}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let lines = String::from_utf8_lossy(&out.stdout);
    assert!(lines.contains("\"text\":\"echo: hello\""), "{lines}");
    assert!(lines.contains("\"type\":\"turn_end\""), "{lines}");
}

#[test]
fn the_worker_under_its_own_name_is_the_worker() {
    let out = std::process::Command::new(WORKER)
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("blobhub-worker"));
}
