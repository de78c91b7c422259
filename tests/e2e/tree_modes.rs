//! Everything the worker creates in its state tree is its user's alone: folders 0700, files
//! without any group or other bits, after a whole conversation (section state, thread records,
//! logs, the compile cache).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::harness_support::Env;

fn walk(dir: &Path, out: &mut Vec<(String, u32, bool)>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = std::fs::symlink_metadata(entry.path()).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        out.push((entry.path().display().to_string(), mode, meta.is_dir()));
        if meta.is_dir() {
            walk(&entry.path(), out);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_folder_is_0700_and_no_file_is_readable_by_others() {
    let env = Env::new().await;
    let s = env.session("ses_modes");
    env.configure(&[&s], 4, "");
    let worker = env.start().await;
    env.handoff(&s, "t");
    env.wait_state(&s, "t", "active").await;
    env.exchange(&s, "t", "hello").await;
    worker.terminate().await;

    let mut entries = Vec::new();
    walk(env.home.root(), &mut entries);
    assert!(
        entries
            .iter()
            .any(|(p, _, dir)| *dir && p.contains("/threads/")),
        "the walk reached the thread folders: {entries:#?}"
    );
    // config.yaml is the operator's (this test wrote it); everything else is the worker's.
    let loose: Vec<_> = entries
        .iter()
        .filter(|(p, _, _)| !p.ends_with("/config.yaml"))
        .filter(|(_, mode, dir)| {
            if *dir {
                *mode != 0o700
            } else {
                mode & 0o077 != 0
            }
        })
        .collect();
    assert!(loose.is_empty(), "not private: {loose:#?}");
}
