//! The real Claude Code CLI against the fake: proves the fake's streams are ones the CLI accepts,
//! and pins the CLI's stream-json output the worker's driver relies on.
//!
//! The CLI comes from `BLOBHUB_CLAUDE`, else `tests/agents/node_modules/.bin/claude` (installed
//! by `npm ci --prefix tests/agents`). Without it the tests are skipped, except under CI (`CI`
//! set), where a missing CLI is a failure.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use blobhub_fake_anthropic::{FakeAnthropic, MessagesRequest, Prompt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// Generous: one turn takes under a second, but CI machines are shared.
const TURN_TIMEOUT: Duration = Duration::from_secs(60);

fn claude() -> Option<PathBuf> {
    let path = std::env::var_os("BLOBHUB_CLAUDE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../agents/node_modules/.bin/claude")
        });
    if path.is_file() {
        return Some(path);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "the claude CLI is missing at {} (CI is set): run `npm ci --prefix tests/agents` or set BLOBHUB_CLAUDE",
            path.display()
        );
    }
    eprintln!(
        "skipped: no claude CLI at {} (npm ci --prefix tests/agents, or set BLOBHUB_CLAUDE)",
        path.display()
    );
    None
}

/// A home, config dir and work folder of the test's own, and the fake they point at.
struct Sandbox {
    claude: PathBuf,
    fake: FakeAnthropic,
    dir: tempfile::TempDir,
}

impl Sandbox {
    async fn new() -> Option<Sandbox> {
        let claude = claude()?;
        let fake = FakeAnthropic::start().await.expect("the fake starts");
        let dir = tempfile::tempdir().expect("a temp dir");
        std::fs::create_dir_all(dir.path().join("home/.claude")).unwrap();
        std::fs::create_dir_all(dir.path().join("work")).unwrap();
        Some(Sandbox { claude, fake, dir })
    }

    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// The CLI with nothing of the caller's environment but PATH: its own home and config, the
    /// fake as the API, and everything that would reach the network or retry switched off.
    fn command(&self, args: &[&str]) -> Command {
        let home = self.dir.path().join("home");
        let mut cmd = Command::new(&self.claude);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("CLAUDE_CONFIG_DIR", home.join(".claude"))
            .env("ANTHROPIC_BASE_URL", self.fake.base_url())
            .env("ANTHROPIC_API_KEY", "dummy")
            .env("DISABLE_TELEMETRY", "1")
            .env("DISABLE_AUTOUPDATER", "1")
            .env("DISABLE_ERROR_REPORTING", "1")
            .env("DISABLE_BUG_COMMAND", "1")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env("CLAUDE_CODE_MAX_RETRIES", "0")
            .current_dir(self.work())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// `claude -p <prompt> --output-format stream-json --verbose`: its status and stdout lines.
    async fn print(&self, prompt: &str) -> (ExitStatus, Vec<Value>) {
        let child = self
            .command(&["-p", prompt, "--output-format", "stream-json", "--verbose"])
            .spawn()
            .expect("claude starts");
        let out = tokio::time::timeout(TURN_TIMEOUT, child.wait_with_output())
            .await
            .expect("claude finishes in time")
            .expect("claude's output");
        let lines = json_lines(&out.stdout);
        assert!(
            !lines.is_empty(),
            "no stdout; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status, lines)
    }

    /// One turn over stream-json stdin/stdout with `--permission-prompt-tool stdio`: writes the
    /// prompt, answers every control request with `answer`, closes stdin at the `result`.
    async fn driven(
        &self,
        extra: &[&str],
        prompt: &str,
        answer: impl Fn(&Value) -> Value,
    ) -> (ExitStatus, Vec<Value>) {
        let mut args = vec![
            "-p",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--verbose",
            "--permission-prompt-tool",
            "stdio",
        ];
        args.extend_from_slice(extra);
        let mut child = self
            .command(&args)
            .stdin(Stdio::piped())
            .spawn()
            .expect("claude starts");
        let mut stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let user = json!({"type": "user", "message": {"role": "user", "content": prompt},
            "parent_tool_use_id": null, "session_id": ""});
        stdin
            .write_all(format!("{user}\n").as_bytes())
            .await
            .unwrap();
        let mut lines = Vec::new();
        let turn = async {
            while let Some(line) = stdout.next_line().await.expect("reading stdout") {
                let value: Value = serde_json::from_str(&line).expect("stdout lines are JSON");
                if value["type"] == "control_request" {
                    let reply = json!({"type": "control_response", "response": {
                        "subtype": "success",
                        "request_id": value["request_id"],
                        "response": answer(&value["request"]),
                    }});
                    stdin
                        .write_all(format!("{reply}\n").as_bytes())
                        .await
                        .unwrap();
                }
                let done = value["type"] == "result";
                lines.push(value);
                if done {
                    break;
                }
            }
        };
        tokio::time::timeout(TURN_TIMEOUT, turn)
            .await
            .expect("the turn ends in time");
        // End of input is how a one-turn session ends.
        drop(stdin);
        let status = tokio::time::timeout(TURN_TIMEOUT, child.wait())
            .await
            .expect("claude exits in time")
            .expect("claude's status");
        (status, lines)
    }
}

fn json_lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn of_type<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["type"] == kind).collect()
}

fn result(lines: &[Value]) -> &Value {
    let results = of_type(lines, "result");
    assert_eq!(results.len(), 1, "one result line in {lines:#?}");
    results[0]
}

/// The content blocks of every `assistant` line, in order.
fn assistant_blocks(lines: &[Value]) -> Vec<&Value> {
    of_type(lines, "assistant")
        .into_iter()
        .flat_map(|l| l["message"]["content"].as_array().into_iter().flatten())
        .collect()
}

#[tokio::test]
async fn a_plain_turn_gets_the_fakes_text() {
    let Some(sb) = Sandbox::new().await else {
        return;
    };
    let (status, lines) = sb.print("hello").await;
    assert!(status.success(), "{lines:#?}");
    assert_eq!(lines[0]["type"], "system");
    assert_eq!(lines[0]["subtype"], "init");
    let blocks = assistant_blocks(&lines);
    assert_eq!(blocks.len(), 1, "{lines:#?}");
    assert_eq!(blocks[0]["type"], "text");
    let text = blocks[0]["text"].as_str().unwrap();
    assert!(text.starts_with("Hello from fake Anthropic ("), "{text}");
    let result = result(&lines);
    assert_eq!(result["is_error"], false);
    assert_eq!(result["result"], text);

    let calls = sb.fake.model_calls();
    assert_eq!(calls.len(), 1, "one model call");
    let call = &calls[0];
    assert_eq!(call.query.as_deref(), Some("beta=true"));
    assert_eq!(call.header("x-api-key"), Some("dummy"));
    assert_eq!(call.body["stream"], true);
    assert_eq!(call.last_user_text().as_deref(), Some("hello"));
    let n = call.body["messages"].as_array().unwrap().len();
    assert_eq!(text, format!("Hello from fake Anthropic ({n} msgs)."));
    // The nonessential-traffic switch keeps the CLI to the one model call.
    assert_eq!(sb.fake.requests().len(), 1, "{:#?}", sb.fake.requests());
}

#[tokio::test]
async fn think_gives_a_thinking_block_before_the_text() {
    let Some(sb) = Sandbox::new().await else {
        return;
    };
    let (status, lines) = sb.print("THINK The user wants a greeting.").await;
    assert!(status.success(), "{lines:#?}");
    let blocks = assistant_blocks(&lines);
    let kinds: Vec<&str> = blocks.iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["thinking", "text"], "{lines:#?}");
    assert_eq!(blocks[0]["thinking"], "The user wants a greeting.");
    assert!(
        blocks[0]["signature"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert_eq!(
        blocks[1]["text"],
        "Thought about: The user wants a greeting."
    );
    assert_eq!(result(&lines)["is_error"], false);
    assert_eq!(
        sb.fake.model_calls()[0].last_user_text().as_deref(),
        Some("THINK The user wants a greeting.")
    );
}

#[tokio::test]
async fn a_bash_call_allowed_over_can_use_tool_runs_and_its_result_comes_back() {
    let Some(sb) = Sandbox::new().await else {
        return;
    };
    let (status, lines) = sb
        .driven(&[], "TOOL:Bash echo hi > out.txt", |request| {
            assert_eq!(request["subtype"], "can_use_tool", "{request}");
            assert_eq!(request["tool_name"], "Bash");
            assert_eq!(request["input"]["command"], "echo hi > out.txt");
            json!({"behavior": "allow", "updatedInput": request["input"]})
        })
        .await;
    assert!(status.success(), "{lines:#?}");
    assert_eq!(
        std::fs::read_to_string(sb.work().join("out.txt")).unwrap(),
        "hi\n"
    );
    let asks = of_type(&lines, "control_request");
    assert_eq!(asks.len(), 1, "{lines:#?}");
    let tool_use = assistant_blocks(&lines)
        .into_iter()
        .find(|b| b["type"] == "tool_use")
        .expect("a tool_use block");
    assert_eq!(tool_use["name"], "Bash");
    let user = of_type(&lines, "user");
    assert_eq!(user.len(), 1, "the tool result comes back as a user line");
    let tool_result = &user[0]["message"]["content"][0];
    assert_eq!(tool_result["type"], "tool_result");
    assert_eq!(tool_result["tool_use_id"], tool_use["id"]);
    assert_eq!(tool_result["is_error"], false);
    let result = result(&lines);
    assert_eq!(result["is_error"], false);
    assert!(
        result["result"]
            .as_str()
            .unwrap()
            .starts_with("Tool result seen: "),
        "{result}"
    );

    let calls = sb.fake.model_calls();
    assert_eq!(calls.len(), 2, "the prompt, then the tool result");
    assert_eq!(
        calls[1].prompt(),
        Prompt::ToolResult {
            is_error: false,
            content: tool_result["content"].as_str().unwrap().to_owned()
        }
    );
}

#[tokio::test]
async fn an_overloaded_api_ends_the_turn_with_an_error_result() {
    let Some(sb) = Sandbox::new().await else {
        return;
    };
    let (status, lines) = sb.print("FAIL:529").await;
    assert_eq!(status.code(), Some(1), "{lines:#?}");
    let result = result(&lines);
    assert_eq!(result["is_error"], true);
    assert_eq!(result["api_error_status"], 529);
    // With retries off, one call and no second try.
    assert_eq!(sb.fake.model_calls().len(), 1);
}

/// The in-process MCP server protocol: an `sdk` server's JSON-RPC travels in `mcp_message`
/// control requests, answered in control responses.
#[tokio::test]
async fn ask_reaches_an_sdk_mcp_server_over_control_requests() {
    let Some(sb) = Sandbox::new().await else {
        return;
    };
    let config = r#"{"mcpServers":{"blobhub":{"type":"sdk","name":"blobhub"}}}"#;
    let (status, lines) = sb
        .driven(
            &[
                "--mcp-config",
                config,
                "--allowedTools",
                "mcp__blobhub__ask_user",
            ],
            "ASK Which colour?",
            |request| {
                assert_eq!(request["subtype"], "mcp_message", "{request}");
                assert_eq!(request["server_name"], "blobhub");
                let message = &request["message"];
                let Some(id) = message.get("id") else {
                    return json!({"mcp_response": {"jsonrpc": "2.0", "result": {}}});
                };
                let result = match message["method"].as_str().unwrap() {
                    "initialize" => json!({
                        "protocolVersion": message["params"]["protocolVersion"],
                        "capabilities": {"tools": {}},
                        "serverInfo": {"name": "blobhub", "version": "0"},
                    }),
                    "tools/list" => json!({"tools": [{
                        "name": "ask_user",
                        "description": "Ask the person a question",
                        "inputSchema": {"type": "object",
                            "properties": {"question": {"type": "string"}}},
                    }]}),
                    "tools/call" => {
                        assert_eq!(message["params"]["name"], "ask_user");
                        assert_eq!(message["params"]["arguments"]["question"], "Which colour?");
                        json!({"content": [{"type": "text", "text": "blue"}], "isError": false})
                    }
                    other => panic!("unexpected MCP method {other}"),
                };
                json!({"mcp_response": {"jsonrpc": "2.0", "id": id, "result": result}})
            },
        )
        .await;
    assert!(status.success(), "{lines:#?}");
    let methods: Vec<&str> = of_type(&lines, "control_request")
        .iter()
        .filter_map(|l| l["request"]["message"]["method"].as_str())
        .collect();
    assert_eq!(
        methods,
        [
            "initialize",
            "notifications/initialized",
            "tools/list",
            "tools/call"
        ]
    );
    let init = &lines.iter().find(|l| l["subtype"] == "init").unwrap()["mcp_servers"];
    assert_eq!(init[0]["name"], "blobhub");
    assert_eq!(init[0]["status"], "connected");
    assert_eq!(result(&lines)["result"], "Tool result seen: blue");
}
