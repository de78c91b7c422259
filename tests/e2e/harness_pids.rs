//! Agents started for many threads at once (issue 14). The host forks and execs each agent in the
//! background and the harness reads a pid only once that start is done, so that one section's
//! starts run side by side; the logs must still name every agent's own process.

use serde_json::Value;

use crate::harness_support::*;

/// The worker's JSON log records of `event` for `thread`.
fn records<'a>(all: &'a [Value], event: &str, thread: &str) -> Vec<&'a Value> {
    all.iter()
        .filter(|r| r["event"] == event && r["thread"] == thread)
        .collect()
}

fn pid(record: &Value) -> u32 {
    let pid = record["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no pid: {record}"));
    u32::try_from(pid).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_started_together_are_each_logged_with_their_own_pid() {
    const THREADS: [&str; 6] = ["t1", "t2", "t3", "t4", "t5", "t6"];
    let env = Env::new().await;
    let s = env.session("ses_pids");
    // Agents are started ahead of the message (the default): six at once on the hand-off.
    env.configure(&[&s], THREADS.len() as u32, "");
    // With the host's debug records of the process capability (a pid read before its start).
    let worker = match env
        .home
        .spawn_start_with(
            &["--log-format", "json", "start"],
            &[(
                "BLOBHUB_WORKER_LOG",
                "info,blobhub_worker::runtime::capabilities::process=debug",
            )],
        )
        .await
    {
        Ok(w) => w,
        Err(o) => panic!("worker did not start: {o:?}"),
    };
    for t in THREADS {
        env.handoff(&s, t);
    }
    env.wait("every thread active", |e| {
        THREADS.iter().all(|t| e.state(&s, t) == "active")
    })
    .await;
    let wf = env.work_folder().to_path_buf();
    eventually("an agent held for each thread", || {
        agent_processes(&wf) == THREADS.len()
    })
    .await;
    let held = agent_pids(&wf);
    for t in THREADS {
        env.say(&s, t, "hello");
    }
    env.wait("every reply", |e| {
        THREADS.iter().all(|t| e.has(&s, t, "text", "echo: hello"))
    })
    .await;
    let out = worker.terminate().await;
    out.assert_success();
    let all: Vec<Value> = out
        .stderr
        .lines()
        .filter(|l| !l.starts_with(crate::support::STARTED_MARKER))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let mut turn_pids = Vec::new();
    for t in THREADS {
        // Its turn went to the process held for it, and both lines name that process.
        let started = records(&all, "turn_started", t);
        assert_eq!(started.len(), 1, "{t}: {started:#?}");
        let turn_pid = pid(started[0]);
        assert!(
            started[0]["prestarted_ms"].is_u64(),
            "{t}: the turn took the held process: {started:#?}"
        );
        assert!(
            held.contains(&turn_pid),
            "{t}: turn_started names pid {turn_pid}, not a held agent ({held:?})"
        );
        let prestarted: Vec<u32> = records(&all, "agent_prestarted", t)
            .into_iter()
            .map(pid)
            .collect();
        assert!(
            prestarted.contains(&turn_pid),
            "{t}: {turn_pid} was not logged as started ahead: {prestarted:?}"
        );
        // The first held process is logged before the turn it serves.
        let position = |r: &Value| all.iter().position(|x| std::ptr::eq(x, r));
        let first_held = records(&all, "agent_prestarted", t)[0];
        assert!(position(first_held) < position(started[0]), "{t}");
        turn_pids.push(turn_pid);
    }
    turn_pids.sort_unstable();
    turn_pids.dedup();
    assert_eq!(turn_pids.len(), THREADS.len(), "one process per thread");
    // No pid was read before its process had started: the section never stood still for a
    // start, so the starts ran side by side.
    assert!(
        all.iter().any(|r| r["event"] == "child_spawned"),
        "the debug records are there"
    );
    let waited: Vec<&Value> = all
        .iter()
        .filter(|r| r["event"] == "pid_waits_for_start")
        .collect();
    assert!(waited.is_empty(), "{waited:#?}");
}
