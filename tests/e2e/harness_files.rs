//! Files both ways, end to end (docs/attachments.md): a person's files downloaded into the
//! thread's inbox and named in the agent's turn; the agent's outbox published as session files
//! with one `artifacts_published` item; hostile names and links kept inside the work folder.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use blobhub_emulator::{Faults, SessionIds};
use serde_json::{Value, json};

use crate::harness_support::{Env, alice, envelope};

/// An 8×8 red PNG (valid chunks and checksums, so image readers accept it).
pub const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x08, 0x08, 0x02, 0x00, 0x00, 0x00, 0x4b, 0x6d, 0x29,
    0xdc, 0x00, 0x00, 0x00, 0x11, 0x49, 0x44, 0x41, 0x54, 0x78, 0xda, 0x63, 0xf8, 0xcf, 0xc0, 0x80,
    0x15, 0x31, 0x0c, 0x2d, 0x09, 0x00, 0x28, 0xff, 0x3f, 0xc1, 0xce, 0x77, 0xc8, 0x4f, 0x00, 0x00,
    0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

fn file_block(alias: &str, name: &str, content_type: &str, size: usize) -> Value {
    json!({"type": "file", "file": {"alias": alias, "name": name,
        "content_type": content_type, "size": size}})
}

/// Alice stores a session file.
pub fn store_file(env: &Env, s: &SessionIds, alias: &str, name: &str, ct: &str, bytes: &[u8]) {
    env.admin
        .upload_file(&s.session_id, alias, name, ct, bytes, &alice().id)
        .expect("file stored");
}

/// Alice posts an item with these content blocks; its id.
pub fn post(env: &Env, s: &SessionIds, alias: &str, content: Value) -> String {
    let item = env
        .admin
        .post_item(&s.session_id, alias, content, None, &alice().id)
        .expect("post");
    item["id"].as_str().unwrap().to_string()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn texts(env: &Env, s: &SessionIds, alias: &str, ty: &str) -> Vec<String> {
    env.transcript(s, alias)
        .into_iter()
        .filter(|(t, _)| t == ty)
        .map(|(_, x)| x)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_reach_the_work_folder_and_are_named_in_the_turn() {
    let env = Env::new().await;
    let s = env.session("ses_attach");
    env.configure(&[&s], 4, "");
    let _worker = env.start().await;
    env.handoff(&s, "t");
    env.wait_state(&s, "t", "active").await;
    // The inbox exists from activation on, ignored by git.
    let inbox = env.work_folder().join(".blobhub/inbox");
    assert_eq!(
        std::fs::read_to_string(inbox.join(".gitignore")).unwrap(),
        "*\n"
    );

    store_file(
        &env,
        &s,
        "files/log.txt",
        "log.txt",
        "text/plain",
        b"line one\n",
    );
    store_file(&env, &s, "files/shot.png", "shot.png", "image/png", PNG);
    let item = post(
        &env,
        &s,
        "t",
        json!([{"type": "text", "text": "look at "},
               file_block("files/log.txt", "log.txt", "text/plain", 9),
               {"type": "text", "text": " and "},
               file_block("files/shot.png", "shot.png", "image/png", PNG.len())]),
    );
    env.wait("the agent's answer", |e| {
        texts(e, &s, "t", "text")
            .iter()
            .any(|x| x.contains("## Attachments"))
    })
    .await;

    let folder = inbox.join(&item);
    let log = folder.join("log.txt");
    let png = folder.join("shot.png");
    assert_eq!(std::fs::read(&log).unwrap(), b"line one\n");
    assert_eq!(std::fs::read(&png).unwrap(), PNG);
    assert_eq!(mode(&log), 0o600);
    assert_eq!(mode(&folder), 0o700);
    let answer = texts(&env, &s, "t", "text")
        .into_iter()
        .find(|x| x.contains("## Attachments"))
        .unwrap();
    assert!(
        answer.starts_with("echo: look at [log.txt] and [shot.png]\n\n## Attachments\n\n"),
        "{answer}"
    );
    assert!(
        answer.contains(&format!(
            "- log.txt (text/plain, 9 bytes): {}",
            log.display()
        )),
        "{answer}"
    );
    assert!(
        answer.contains(&format!(
            "- shot.png (image/png, {} bytes): {}",
            PNG.len(),
            png.display()
        )),
        "{answer}"
    );
    assert!(texts(&env, &s, "t", "status").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_stay_in_the_inbox_and_a_missing_file_does_not_fail_the_thread() {
    let env = Env::new().await;
    let s = env.session("ses_hostile");
    env.configure(&[&s], 4, "");
    let _worker = env.start().await;
    // The work folder is a folder inside a parent we can look at for escapes.
    let work = env.work_folder().join("w");
    std::fs::create_dir(&work).unwrap();
    let mut value = envelope("pending", &work);
    value["thread"]["metadata"]["attachments"] = json!({"inbox": "in"});
    env.set_envelope(&s, "t", value);
    env.wait_state(&s, "t", "active").await;

    store_file(&env, &s, "files/a", "x", "text/plain", b"payload\n");
    let item = post(
        &env,
        &s,
        "t",
        json!([{"type": "text", "text": "files"},
               file_block("files/a", "../../x", "text/plain", 8),
               file_block("files/a", "..\\..\\.bashrc", "text/plain", 8),
               file_block("files/missing", "gone.txt", "text/plain", 3)]),
    );
    env.wait("the agent's answer", |e| {
        texts(e, &s, "t", "text")
            .iter()
            .any(|x| x.contains("## Attachments"))
    })
    .await;
    let folder = work.join("in").join(&item);
    assert_eq!(std::fs::read(folder.join("x")).unwrap(), b"payload\n");
    assert_eq!(std::fs::read(folder.join("bashrc")).unwrap(), b"payload\n");
    // Nothing was written above the inbox folder or outside the work folder.
    for escaped in [
        env.work_folder().join("x"),
        work.join("x"),
        work.join("in/x"),
        env.work_folder().join(".bashrc"),
    ] {
        assert!(!escaped.exists(), "{}", escaped.display());
    }
    let answer = texts(&env, &s, "t", "text")
        .into_iter()
        .find(|x| x.contains("## Attachments"))
        .unwrap();
    assert!(answer.contains("- gone.txt — unavailable ("), "{answer}");
    let notices = texts(&env, &s, "t", "status");
    assert_eq!(notices, ["1 attachment(s) could not be fetched"]);
    let notice = env
        .items(&s, "t")
        .into_iter()
        .find(|i| i["metadata"]["status"] == "attachment_unavailable")
        .unwrap();
    assert_eq!(notice["metadata"]["files"][0]["alias"], "files/missing");
    assert_eq!(env.state(&s, "t"), "active");

    // The agent swaps its inbox for a link to a folder outside: a download never follows it.
    let outside = tempfile::tempdir().unwrap();
    std::fs::remove_dir_all(work.join("in")).unwrap();
    std::os::unix::fs::symlink(outside.path(), work.join("in")).unwrap();
    post(
        &env,
        &s,
        "t",
        json!([{"type": "text", "text": "again"},
               file_block("files/a", "x", "text/plain", 8)]),
    );
    env.wait("the second notice", |e| {
        texts(e, &s, "t", "status").len() == 2
    })
    .await;
    env.wait("the second answer", |e| {
        texts(e, &s, "t", "turn_end").len() == 2
    })
    .await;
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    let answer = texts(&env, &s, "t", "text").pop().unwrap();
    assert!(
        answer.starts_with("echo: again\n- x — unavailable ("),
        "{answer}"
    );
    assert_eq!(env.state(&s, "t"), "active");
}

fn with_artifacts(env: &Env, prefix: &str, outbox: &str) -> Value {
    let mut v = envelope("pending", env.work_folder());
    v["thread"]["metadata"]["artifacts"] = json!({"prefix": prefix, "outbox": outbox});
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_outbox_becomes_session_files_and_one_artifacts_item() {
    let env = Env::new().await;
    let s = env.session("ses_artifacts");
    env.configure(&[&s], 4, "");
    let _worker = env.start().await;
    env.set_envelope(&s, "t", with_artifacts(&env, "runs/r1/", "out"));
    env.wait_state(&s, "t", "active").await;
    let outbox = env.work_folder().join("out");
    assert_eq!(
        std::fs::read_to_string(outbox.join(".gitignore")).unwrap(),
        "*\n"
    );
    // A secret outside the work folder, and a link to it planted in the outbox.
    let elsewhere = tempfile::tempdir().unwrap();
    let secret = elsewhere.path().join("secret.txt");
    std::fs::write(&secret, "TOP-SECRET\n").unwrap();

    // The platform refuses some types: that file is skipped with the platform's reason.
    env.admin.refuse_file_types(&["audio/wav"]);
    env.say(
        &s,
        "t",
        &format!(
            "make: out/report.md # Report\nmake: out/data/my+results.csv a,b\n\
             make: out/sound.wav RIFF\nlink: out/leak.txt {}",
            secret.display()
        ),
    );
    env.wait("turn_end", |e| !texts(e, &s, "t", "turn_end").is_empty())
        .await;

    // The worker's items: the agent's answer, then the announcement, then the turn's end.
    let kinds: Vec<String> = env
        .items(&s, "t")
        .iter()
        .filter(|i| i.pointer("/metadata/post_id").is_some())
        .map(|i| i["metadata"]["type"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(kinds, ["text", "artifacts_published", "turn_end"]);
    let item = env
        .items(&s, "t")
        .into_iter()
        .find(|i| i["metadata"]["type"] == "artifacts_published")
        .unwrap();
    assert_eq!(
        item["content"][0]["text"],
        "Published 2 artifact(s), skipped 2"
    );
    let csv_alias = item["metadata"]["aliases"][0].as_str().unwrap().to_string();
    assert!(
        csv_alias.starts_with("runs/r1/data/my_results-") && csv_alias.ends_with(".csv"),
        "{csv_alias}"
    );
    assert_eq!(
        item["metadata"]["aliases"],
        json!([csv_alias, "runs/r1/report.md"])
    );
    assert_eq!(
        item["metadata"]["skipped"],
        json!([{"path": "leak.txt", "reason": "symlink"},
               {"path": "sound.wav", "reason": "unsupported_type"}])
    );
    assert_eq!(
        item["metadata"]["counts"],
        json!({"published": 2, "skipped": 2})
    );
    let blocks = item["content"].as_array().unwrap();
    assert_eq!(blocks.len(), 3);
    assert_eq!(
        blocks[2],
        json!({"type": "file", "file": {"alias": "runs/r1/report.md", "name": "report.md",
            "content_type": "text/markdown", "size": 9}})
    );
    assert_eq!(blocks[1]["file"]["content_type"], "text/csv");
    assert_eq!(
        env.admin
            .file_bytes(&s.session_id, "runs/r1/report.md")
            .unwrap(),
        b"# Report\n"
    );
    assert_eq!(
        env.admin.file_bytes(&s.session_id, &csv_alias).unwrap(),
        b"a,b\n"
    );
    // The link's target was never read: no object holds the secret.
    for (alias, _) in env.admin.objects(&s.session_id) {
        if let Some(bytes) = env.admin.file_bytes(&s.session_id, &alias) {
            assert!(
                !String::from_utf8_lossy(&bytes).contains("TOP-SECRET"),
                "{alias}"
            );
        }
    }
    assert!(
        env.admin
            .object(&s.session_id, "runs/r1/leak.txt")
            .is_none()
    );

    // The next turn republishes everything: the same aliases again, overwritten.
    env.say(&s, "t", "make: out/report.md # Report v2");
    env.wait("turn 2", |e| texts(e, &s, "t", "turn_end").len() == 2)
        .await;
    assert_eq!(
        env.admin
            .file_bytes(&s.session_id, "runs/r1/report.md")
            .unwrap(),
        b"# Report v2\n"
    );
    assert_eq!(texts(&env, &s, "t", "artifacts_published").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_rule_confines_a_guarded_agents_writes_to_the_outbox() {
    let env = Env::new().await;
    let s = env.session("ses_outbox_rule");
    env.configure(&[&s], 4, "");
    let _worker = env.start().await;
    let mut v = with_artifacts(&env, "runs/", ".blobhub/outbox");
    v["thread"]["metadata"]["agent"]["permissions"] = json!("guarded");
    v["thread"]["metadata"]["policy"] = json!({"default": "allow", "rules": [
        {"id": "outbox-only", "effect": "write", "action": "deny", "outside": "outbox"}]});
    env.set_envelope(&s, "t", v);
    env.wait_state(&s, "t", "active").await;
    env.say(&s, "t", "write: .blobhub/outbox/notes.md");
    env.wait("turn 1", |e| texts(e, &s, "t", "turn_end").len() == 1)
        .await;
    env.say(&s, "t", "write: src/main.rs");
    env.wait("turn 2", |e| texts(e, &s, "t", "turn_end").len() == 2)
        .await;
    let said = texts(&env, &s, "t", "text");
    assert_eq!(said[0], "wrote: .blobhub/outbox/notes.md");
    assert!(said[1].starts_with("refused: "), "{said:?}");
    assert_eq!(
        texts(&env, &s, "t", "policy_denied"),
        ["Blocked by policy rule 'outbox-only': src/main.rs"]
    );
}

/// Once thread `t`'s agent asks, Alice answers "blue" with `palette.txt` (5 bytes) attached.
async fn answer_with_a_file(env: &Env, s: &SessionIds) {
    env.wait("the question", |e| {
        !texts(e, s, "t", "pending_prompt").is_empty()
    })
    .await;
    store_file(
        env,
        s,
        "files/palette.txt",
        "palette.txt",
        "text/plain",
        b"blue\n",
    );
    post(
        env,
        s,
        "t",
        json!([{"type": "text", "text": "blue"},
               file_block("files/palette.txt", "palette.txt", "text/plain", 5)]),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_that_come_with_an_answer_reach_the_agent_in_the_next_turn() {
    let env = Env::new().await;
    let s = env.session("ses_answer_files");
    env.configure(&[&s], 4, "");
    let _worker = env.start().await;
    env.handoff(&s, "t");
    env.wait_state(&s, "t", "active").await;
    env.say(&s, "t", "ask: which colour?");
    answer_with_a_file(&env, &s).await;
    env.wait("the files' turn", |e| {
        texts(e, &s, "t", "turn_end").len() == 2
    })
    .await;
    let said = texts(&env, &s, "t", "text");
    // `ask:` is an approval: "blue" is a denial, with the person's words.
    assert!(
        said[0].starts_with("answered: ") && said[0].contains("blue"),
        "{said:?}"
    );
    assert!(
        said[1].starts_with("echo: 1 attachment(s) came with the answer you just received"),
        "{said:?}"
    );
    assert!(
        said[1].contains("[palette.txt]\n\n## Attachments"),
        "{said:?}"
    );
    assert!(
        said[1].contains("- palette.txt (text/plain, 5 bytes): "),
        "{said:?}"
    );
}

/// The answer's words reached the agent inside its turn and are not replayed; its files go as a
/// message of their own, which a kill before their turn must not lose: after the restart they
/// still reach the agent, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_that_came_with_an_answer_survive_a_kill_before_their_turn() {
    let env = Env::new().await;
    let s = env.session("ses_answer_files_kill");
    env.configure(&[&s], 4, "");
    let mut worker = env.start().await;
    env.handoff(&s, "t");
    env.wait_state(&s, "t", "active").await;
    // The turn stays open a minute after the answer: the kill lands inside it.
    env.say(&s, "t", "ask: which colour?\nhold: 60000");
    answer_with_a_file(&env, &s).await;
    env.wait("the answer resolved", |e| {
        !texts(e, &s, "t", "pending_prompt_resolved").is_empty()
    })
    .await;
    worker.child.kill().await.unwrap();
    let _worker = env.start().await;

    env.wait("the files' turn", |e| {
        texts(e, &s, "t", "text")
            .iter()
            .any(|t| t.starts_with("echo: 1 attachment(s) came with the answer"))
    })
    .await;
    let said = texts(&env, &s, "t", "text");
    let files_turns: Vec<&String> = said
        .iter()
        .filter(|t| t.starts_with("echo: 1 attachment(s) came with the answer"))
        .collect();
    assert_eq!(files_turns.len(), 1, "{said:?}");
    assert!(
        files_turns[0].contains("- palette.txt (text/plain, 5 bytes): "),
        "{said:?}"
    );
    // The words were the agent's already: never replayed as a message of their own.
    assert!(!said.iter().any(|t| t == "echo: blue"), "{said:?}");
}

/// A download the platform fails transiently is tried again and the file arrives; one that keeps
/// failing is given up after its attempts, named unavailable to the agent, and the thread goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_that_fails_transiently_is_retried_and_one_that_keeps_failing_is_given_up() {
    let env = Env::new().await;
    let s = env.session("ses_attach_retry");
    env.configure(&[&s], 4, "");
    let _worker = env.start().await;
    env.handoff(&s, "t");
    env.wait_state(&s, "t", "active").await;
    store_file(&env, &s, "files/a.txt", "a.txt", "text/plain", b"alpha\n");
    let downloads = |e: &Env| {
        e.admin
            .requests()
            .iter()
            .filter(|r| r.command.as_deref() == Some("download_session_file"))
            .count()
    };

    // Two 503s, then the platform answers.
    env.admin.set_faults(
        "download_session_file",
        Faults {
            rate_5xx: 1.0,
            times: Some(2),
            ..Faults::default()
        },
    );
    let item = post(
        &env,
        &s,
        "t",
        json!([{"type": "text", "text": "first"},
               file_block("files/a.txt", "a.txt", "text/plain", 6)]),
    );
    env.wait("the first answer", |e| {
        texts(e, &s, "t", "turn_end").len() == 1
    })
    .await;
    let path = env
        .work_folder()
        .join(".blobhub/inbox")
        .join(&item)
        .join("a.txt");
    assert_eq!(std::fs::read(&path).unwrap(), b"alpha\n");
    assert_eq!(downloads(&env), 3, "two failures, then the download");
    let answer = texts(&env, &s, "t", "text").pop().unwrap();
    assert!(
        answer.contains(&format!(
            "- a.txt (text/plain, 6 bytes): {}",
            path.display()
        )),
        "{answer}"
    );
    assert!(texts(&env, &s, "t", "status").is_empty());

    // Every download fails from now on: the file is given up, the turn runs without it.
    env.admin.set_faults(
        "download_session_file",
        Faults {
            rate_5xx: 1.0,
            ..Faults::default()
        },
    );
    post(
        &env,
        &s,
        "t",
        json!([{"type": "text", "text": "second"},
               file_block("files/a.txt", "a.txt", "text/plain", 6)]),
    );
    env.wait("the second answer", |e| {
        texts(e, &s, "t", "turn_end").len() == 2
    })
    .await;
    let answer = texts(&env, &s, "t", "text").pop().unwrap();
    assert!(
        answer.starts_with("echo: second\n- a.txt — unavailable ("),
        "{answer}"
    );
    assert_eq!(
        texts(&env, &s, "t", "status"),
        ["1 attachment(s) could not be fetched"]
    );
    assert!(
        downloads(&env) >= 6,
        "at least three attempts for the file that keeps failing"
    );
    assert_eq!(env.state(&s, "t"), "active");
}
