//! The environment an agent process runs with: the operator's `agents.<type>.env`, never the
//! worker's BlobHub key, and none of the worker's own agent-session variables (`CLAUDECODE`,
//! `CLAUDE_CODE_*`), which would make a `claude` started by a worker that itself runs inside
//! Claude Code believe it is nested. Read from `/proc/<pid>/environ` of the running agent.

use crate::harness_support::{Env, agent_pids, eventually};
use crate::support::demo_user;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_gets_its_configured_environment_and_never_the_worker_key() {
    let env = Env::new().await;
    let s = env.session("ses_agent_env");
    env.configure(
        &[&s],
        4,
        "    env: {AGENT_PROXY_URL: \"http://127.0.0.1:9/v1\", CLAUDE_CODE_MAX_RETRIES: \"0\"}\n",
    );
    let worker = match env
        .home
        .spawn_start_with_env(&[
            ("CLAUDECODE", "1"),
            ("CLAUDE_CODE_ENTRYPOINT", "cli"),
            ("BLOBHUB_TRACE", "on"),
        ])
        .await
    {
        Ok(w) => w,
        Err(o) => panic!("worker did not start: {o:?}"),
    };
    env.handoff(&s, "t");
    env.wait_state(&s, "t", "active").await;
    env.say(&s, "t", "sleep: 600000");
    let work_folder = env.work_folder().to_path_buf();
    eventually("the agent runs", || agent_pids(&work_folder).len() == 1).await;
    let pid = agent_pids(&work_folder)[0];
    let raw = std::fs::read(format!("/proc/{pid}/environ")).expect("the agent's environment");
    let vars: Vec<(String, String)> = raw
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| {
            let v = String::from_utf8_lossy(v);
            let (k, val) = v.split_once('=').unwrap_or((&v, ""));
            (k.to_string(), val.to_string())
        })
        .collect();
    let get = |name: &str| {
        vars.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("AGENT_PROXY_URL"), Some("http://127.0.0.1:9/v1"));
    // Removed from what the agent inherits, but the operator may set one on purpose.
    assert_eq!(get("CLAUDECODE"), None);
    assert_eq!(get("CLAUDE_CODE_ENTRYPOINT"), None);
    assert_eq!(get("CLAUDE_CODE_MAX_RETRIES"), Some("0"));
    assert!(
        vars.iter().all(|(k, _)| !k.starts_with("BLOBHUB_")),
        "no BLOBHUB_* variable: {vars:?}"
    );
    let key = demo_user().api_key;
    assert!(
        vars.iter().all(|(_, v)| !v.contains(&key)),
        "the worker's key is in the agent's environment"
    );
    assert!(
        get("PATH").is_some(),
        "the rest of the environment is inherited"
    );
    worker.terminate().await;
}
