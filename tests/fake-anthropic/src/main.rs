//! `blobhub-fake-anthropic`: run the fake Anthropic Messages API as a standalone server, for
//! benchmarks and trying the CLI by hand.

use std::path::PathBuf;

use anyhow::Context;
use blobhub_fake_anthropic::{FakeAnthropic, Options};
use clap::Parser;

/// A fake Anthropic Messages API on 127.0.0.1, scripted by the prompt (see the crate's
/// README.md). Point Claude Code at it with ANTHROPIC_BASE_URL=http://127.0.0.1:<port> and
/// ANTHROPIC_API_KEY=dummy. Serves until killed.
#[derive(Parser, Debug)]
#[command(name = "blobhub-fake-anthropic", version)]
struct Args {
    /// TCP port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Append every request (method, path, query, headers, body, received_at_us) to this file as
    /// JSON lines.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let fake = FakeAnthropic::start_with(Options {
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
