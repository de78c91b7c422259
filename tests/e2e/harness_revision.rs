//! `revision_id: default` in a section: resolved through the revision endpoint at attach, so the
//! section works on the blob's default revision (docs/session-agent-harness.md, "Attaching").

use crate::harness_support::Env;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_section_on_the_default_revision_attaches_and_works() {
    let env = Env::new().await;
    let s = env.session("ses_default_rev");
    env.configure(&[&s], 4, "");
    let config = std::fs::read_to_string(env.home.tree.config_path()).unwrap();
    let pinned = format!("revision_id: {}", s.revision_id);
    assert!(config.contains(&pinned));
    env.home
        .write_config(&config.replace(&pinned, "revision_id: default"));
    let worker = env.start().await;
    env.wait("attached", |e| {
        e.activity(&s).contains(&"attached".to_string())
    })
    .await;
    env.handoff(&s, "t");
    env.wait("active", |e| e.state(&s, "t") == "active").await;
    env.say(&s, "t", "hello");
    env.wait("answered", |e| e.has(&s, "t", "text", "echo: hello"))
        .await;
    worker.terminate().await;
}
