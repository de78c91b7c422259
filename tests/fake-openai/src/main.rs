//! `blobhub-fake-openai`: run the fake OpenAI Responses API as a standalone server, for
//! benchmarks and trying the CLI by hand.

use std::path::PathBuf;

use anyhow::Context;
use blobhub_fake_openai::{FakeOpenai, Options};
use clap::Parser;

/// A fake OpenAI Responses API on 127.0.0.1, scripted by the prompt (see the crate's README.md).
/// Point Codex at it with a custom model provider whose base_url is http://127.0.0.1:<port>/v1.
/// Serves until killed.
#[derive(Parser, Debug)]
#[command(name = "blobhub-fake-openai", version)]
struct Args {
    /// TCP port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Append every request (method, path, query, headers, body) to this file as JSON lines.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let fake = FakeOpenai::start_with(Options {
        port: args.port,
        record: args.record,
    })
    .await
    .context("starting the fake")?;
    // Scripts wait for this line to learn the port, so flush it at once.
    println!("listening on {}", fake.base_url());
    use std::io::Write;
    std::io::stdout().flush().context("writing stdout")?;
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}
