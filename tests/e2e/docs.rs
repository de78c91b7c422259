//! The documentation against the binary (docs/testing.md, "The doc test"): every command line
//! quoted in a fenced `sh` block of README.md and docs/*.md is checked, and the safe ones run for
//! real against the emulator. Also: the docs and sources cite nothing outside the repository, and
//! every code the binary can emit is documented.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness_support::alice;
use crate::support::{Home, demo_user};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// README.md and docs/*.md, in a stable order.
fn doc_files() -> Vec<PathBuf> {
    let mut files = vec![repo().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// A command line of a fenced `sh` block: where it is, and its text with comments removed and
/// `\` continuations joined.
#[derive(Debug, Clone)]
struct Quoted {
    file: String,
    line: usize,
    text: String,
}

/// Removes a trailing `# comment` that is outside quotes.
fn strip_comment(line: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\'' if !double => single = !single,
            b'"' if !single => double = !double,
            b'#' if !single && !double && (i == 0 || bytes[i - 1].is_ascii_whitespace()) => {
                return line[..i].trim_end();
            }
            _ => {}
        }
    }
    line.trim_end()
}

fn quoted_commands(path: &Path) -> Vec<Quoted> {
    let text = std::fs::read_to_string(path).unwrap();
    let file = path
        .strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string();
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut in_other = false;
    let mut pending: Option<Quoted> = None;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            if in_sh || in_other {
                in_sh = false;
                in_other = false;
            } else if info.trim() == "sh" {
                in_sh = true;
            } else {
                in_other = true;
            }
            continue;
        }
        if !in_sh {
            continue;
        }
        let line = strip_comment(raw);
        let (body, continues) = match line.strip_suffix('\\') {
            Some(b) => (b.trim_end(), true),
            None => (line, false),
        };
        let cmd = pending.get_or_insert_with(|| Quoted {
            file: file.clone(),
            line: i + 1,
            text: String::new(),
        });
        if !body.trim().is_empty() {
            if !cmd.text.is_empty() {
                cmd.text.push(' ');
            }
            cmd.text.push_str(body.trim());
        }
        if !continues {
            let done = pending.take().unwrap();
            if !done.text.is_empty() {
                out.push(done);
            }
        }
    }
    out
}

fn all_quoted() -> Vec<Quoted> {
    doc_files()
        .iter()
        .flat_map(|f| quoted_commands(f))
        .collect()
}

/// The words of one simple command, with leading `VAR=value` assignments dropped.
fn words(text: &str) -> Vec<String> {
    let words = shlex::split(text).unwrap_or_else(|| panic!("cannot split `{text}`"));
    words
        .into_iter()
        .skip_while(|w| {
            w.split_once('=').is_some_and(|(name, _)| {
                !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
            })
        })
        .collect()
}

/// A line written for a person to adapt: a placeholder (`<…>`, `$VAR`, `…`) or a made-up file.
fn has_placeholder(args: &[String]) -> bool {
    args.iter()
        .any(|a| a.contains('<') || a.contains('$') || a.contains('…') || a.ends_with(".wasm"))
}

/// The workspace packages and their test/bench targets, for `cargo` lines.
fn cargo_targets() -> serde_json::Value {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(repo())
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn package_has(meta: &serde_json::Value, package: &str, kind: &str, target: &str) -> bool {
    meta["packages"].as_array().unwrap().iter().any(|p| {
        p["name"] == package
            && (kind.is_empty()
                || p["targets"].as_array().unwrap().iter().any(|t| {
                    t["name"] == target && t["kind"].as_array().unwrap().iter().any(|k| k == kind)
                }))
    })
}

/// Checks a `cargo …` line: the package exists (in the host workspace or, with
/// `--manifest-path plugins/Cargo.toml` or after `cd plugins`, in the job types' workspace), and
/// so do `--test`/`--bench` targets. `cargo run -p blobhub-worker -- ARGS` also checks ARGS.
fn check_cargo(q: &Quoted, args: &[String], in_plugins: bool, metas: &Metas) -> Vec<String> {
    let mut problems = Vec::new();
    let plugins = in_plugins
        || args
            .windows(2)
            .any(|w| w[0] == "--manifest-path" && w[1].starts_with("plugins/"));
    let meta = if plugins { &metas.plugins } else { &metas.host };
    let flag = |name: &str| args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone());
    let package = flag("-p").or_else(|| flag("--package"));
    if let Some(p) = &package
        && !package_has(meta, p, "", "")
    {
        problems.push(format!("{}:{}: no package `{p}`", q.file, q.line));
    }
    for (flag_name, kind) in [("--test", "test"), ("--bench", "bench")] {
        if let (Some(target), Some(p)) = (flag(flag_name), &package)
            && !package_has(meta, p, kind, &target)
        {
            problems.push(format!(
                "{}:{}: `{p}` has no {kind} `{target}`",
                q.file, q.line
            ));
        }
    }
    if args.get(1).is_some_and(|a| a == "run")
        && package.as_deref() == Some("blobhub-worker")
        && let Some(pos) = args.iter().position(|a| a == "--")
    {
        let rest: Vec<&str> = args[pos + 1..].iter().map(String::as_str).collect();
        if let Err(e) = blobhub_worker::cli::check_args(&rest) {
            problems.push(format!("{}:{}: `{}`: {e}", q.file, q.line, q.text));
        }
    }
    problems
}

struct Metas {
    host: serde_json::Value,
    plugins: serde_json::Value,
}

/// The `blobhub-worker` subcommands run for real: they change nothing outside a fresh state
/// tree and need no person. `login` needs a key, `start` and `demo` run until stopped (the
/// README's `demo` line is run by CI's first step), so they are only parsed.
fn runnable(args: &[String]) -> bool {
    let sub: Vec<&str> = args
        .iter()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .take(2)
        .collect();
    matches!(
        sub.as_slice(),
        ["whoami"] | ["config", "check"] | ["config", "init"] | ["plugins"] | []
    )
}

/// Every command line quoted in a fenced `sh` block, checked by the rule of docs/testing.md.
#[tokio::test(flavor = "multi_thread")]
async fn every_quoted_command_line_works() {
    let quoted = all_quoted();
    assert!(
        quoted.iter().any(|q| q.text.starts_with("blobhub-worker ")),
        "the doc test found no blobhub-worker line: {quoted:#?}"
    );
    let metas = Metas {
        host: cargo_targets(),
        plugins: {
            let out = Command::new(env!("CARGO"))
                .args([
                    "metadata",
                    "--no-deps",
                    "--format-version",
                    "1",
                    "--offline",
                    "--manifest-path",
                    "plugins/Cargo.toml",
                ])
                .current_dir(repo())
                .output()
                .unwrap();
            serde_json::from_slice(&out.stdout).unwrap()
        },
    };
    // One emulator per document, so each file's curl examples run in order on a fresh state
    // with the users its examples name.
    let mut problems = Vec::new();
    let mut ran = Vec::new();
    let mut files: Vec<String> = quoted.iter().map(|q| q.file.clone()).collect();
    files.dedup();
    for file in files {
        let emu = blobhub_emulator::Emulator::start(blobhub_emulator::EmulatorConfig {
            users: vec![demo_user(), alice()],
            state_file: None,
        })
        .await
        .unwrap();
        // Logged in, with no config.yaml yet: the documents write one with `config init`
        // before they check it, as a new operator does.
        let home = Home::new();
        home.write_credentials(&emu.api_url(), &demo_user().api_key);
        home.write_identity(&demo_user().id);
        let address = emu
            .api_url()
            .trim_start_matches("http://")
            .trim_end_matches("/v1")
            .to_owned();
        for q in quoted.iter().filter(|q| q.file == file) {
            let mut in_plugins = false;
            for part in q.text.split("&&").map(str::trim) {
                let args = words(part);
                let Some(program) = args.first() else {
                    continue;
                };
                match program.as_str() {
                    "cd" => in_plugins = args.get(1).is_some_and(|d| d == "plugins"),
                    "blobhub-worker" => {
                        let rest: Vec<&str> = args[1..].iter().map(String::as_str).collect();
                        if let Err(e) = blobhub_worker::cli::check_args(&rest) {
                            problems.push(format!("{}:{}: `{part}`: {e}", q.file, q.line));
                            continue;
                        }
                        if runnable(&args) && !has_placeholder(&args) {
                            let out = home.run(&rest, None).await;
                            if out.status.code() != Some(0) {
                                problems.push(format!(
                                    "{}:{}: `{part}` failed: {out:?}",
                                    q.file, q.line
                                ));
                            }
                            ran.push(part.to_owned());
                        }
                    }
                    "cargo" => problems.extend(check_cargo(q, &args, in_plugins, &metas)),
                    "curl" => {
                        // The emulator examples use its default port; this one listens elsewhere.
                        let line = part.replace("localhost:8787", &address);
                        let out = Command::new("sh")
                            .arg("-c")
                            .arg(format!("{line} -o /dev/null -w '%{{http_code}}'"))
                            .output()
                            .expect("sh runs");
                        let status = String::from_utf8_lossy(&out.stdout).to_string();
                        if !out.status.success() || !status.starts_with('2') {
                            problems.push(format!(
                                "{}:{}: `{part}` answered HTTP {status} ({}; {})",
                                q.file,
                                q.line,
                                out.status,
                                String::from_utf8_lossy(&out.stderr).trim()
                            ));
                        }
                        ran.push(part.to_owned());
                    }
                    // Editors, installers and scripts of other tools are the reader's own.
                    _ => {}
                }
            }
        }
        emu.shutdown().await;
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The rule ran what it says it runs (a parser that found nothing would pass otherwise).
    for prefix in [
        "blobhub-worker config init",
        "blobhub-worker config check",
        "curl -s -X POST localhost:8787/admin/sessions ",
        "curl -s -X PUT localhost:8787/admin/sessions/ses_1/objects/tasks/t1",
    ] {
        assert!(
            ran.iter().any(|r| r.starts_with(prefix)),
            "{prefix}: {ran:#?}"
        );
    }
}

/// Sources and documents under version control, for the two checks below.
fn tracked_files() -> Vec<PathBuf> {
    let out = Command::new("git")
        .args(["ls-files"])
        .current_dir(repo())
        .output()
        .expect("git runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|p| {
            let ext = Path::new(p).extension().and_then(|e| e.to_str());
            matches!(ext, Some("rs" | "md" | "toml" | "wit" | "sh" | "py"))
                && !p.contains("node_modules")
        })
        .map(|p| repo().join(p))
        .collect()
}

/// The repository stands on its own: no comment or document points at the product spec or the
/// protocol notes the project was built from, which a reader of the repository does not have.
#[test]
fn nothing_cites_files_outside_the_repository() {
    // Spelled in pieces so that this file does not match itself.
    let needles = [
        ["shared/", "spec"].concat(),
        ["wire-", "protocol"].concat(),
        ["seeds", "/"].concat(),
        ['\u{a7}'].iter().collect::<String>(),
    ];
    let mut hits = Vec::new();
    for path in tracked_files() {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for (i, line) in text.lines().enumerate() {
            if needles.iter().any(|n| line.contains(n.as_str())) {
                hits.push(format!("{}:{}: {line}", path.display(), i + 1));
            }
        }
    }
    assert!(hits.is_empty(), "{}", hits.join("\n"));
}

/// Every error code string in the host and the job types of `plugins/` is documented somewhere in
/// README.md or docs/. A code is a quoted `UPPER_CASE` literal; variable names are listed below.
#[test]
fn every_code_the_binary_can_emit_is_documented() {
    const NOT_CODES: [&str; 2] = ["NO_COLOR", "CLAUDE_CODE_ENTRYPOINT"];
    let docs: String = doc_files()
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    let mut missing = std::collections::BTreeSet::new();
    let roots = ["host/src", "plugins"];
    for path in tracked_files() {
        let rel = path.strip_prefix(repo()).unwrap().display().to_string();
        // plugins/testing holds fixtures for the tests, not part of the binary.
        if !rel.ends_with(".rs")
            || !roots.iter().any(|r| rel.starts_with(r))
            || rel.starts_with("plugins/testing/")
        {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // Unit tests may name codes that only exist in their fixtures.
        let text = text.split("#[cfg(test)]").next().unwrap_or("");
        for literal in code_literals(text) {
            if !literal.starts_with("BLOBHUB_")
                && !NOT_CODES.contains(&literal)
                && !docs.contains(literal)
            {
                missing.insert(format!("{literal} ({rel})"));
            }
        }
    }
    assert!(missing.is_empty(), "undocumented codes: {missing:#?}");
}

/// Every `"UPPER_CASE"` string literal of `text` (at least one `_`, starting with a letter).
fn code_literals(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'"' {
            let start = i + 1;
            let mut j = start;
            while j < bytes.len()
                && (bytes[j].is_ascii_uppercase() || bytes[j].is_ascii_digit() || bytes[j] == b'_')
            {
                j += 1;
            }
            let word = &text[start..j];
            if j < bytes.len()
                && bytes[j] == b'"'
                && word.len() > 3
                && word.contains('_')
                && word.starts_with(|c: char| c.is_ascii_uppercase())
                && !word.ends_with('_')
            {
                out.push(word);
                i = j + 1;
                continue;
            }
        }
        i += 1;
    }
    out
}

#[test]
fn code_literals_are_found_wherever_they_stand() {
    let text = r#"x("AB_CD", 'q', "not code", "AUTH_INVALID") + "'"; "XY_ZW" "A_B""#;
    assert_eq!(code_literals(text), ["AB_CD", "AUTH_INVALID", "XY_ZW"]);
}
