//! The `main` of the fakes' binaries: serve one [`Api`] on a port until Ctrl-C, printing the
//! address first (scripts wait for that line to learn the port).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser};

use crate::{Api, Fake, Options};

#[derive(Parser, Debug)]
struct Args {
    /// TCP port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Append every request (method, path, query, headers, body, received_at_us) to this file as
    /// JSON lines.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
}

/// Parses the command line (`about` is the `--help` text), then serves `api` until Ctrl-C.
pub async fn run<A: Api>(api: A, about: &'static str) -> anyhow::Result<()> {
    let command = Args::command()
        .name(A::NAME)
        .about(about)
        .version(env!("CARGO_PKG_VERSION"));
    let args = Args::from_arg_matches(&command.get_matches())?;
    let fake = Fake::start_api_with(
        api,
        Options {
            port: args.port,
            record: args.record,
        },
    )
    .await
    .context("starting the fake")?;
    println!("listening on {}", fake.base_url());
    std::io::stdout().flush().context("writing stdout")?;
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}
