//! `plugins`: list job types; `plugins check FILE.wasm`: validate a component without running it.
//! The work happens in `crate::runtime::plugins_cmd`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{Output, state_tree};
use crate::coded::CodedError;
use crate::runtime::plugins_cmd;

#[derive(Debug, clap::Args)]
pub struct PluginsArgs {
    #[command(subcommand)]
    command: Option<PluginsCommand>,
}

#[derive(Debug, clap::Subcommand)]
enum PluginsCommand {
    /// Load a component, check its WIT version and call its `describe`, without running it.
    Check {
        /// The component (`.wasm`).
        file: PathBuf,
    },
}

pub async fn run(args: PluginsArgs, output: &Output) -> anyhow::Result<ExitCode> {
    match args.command {
        None => {
            let tree = state_tree()?;
            let (human, document) = plugins_cmd::list(tree.root()).await?;
            output.result(&human, document);
        }
        Some(PluginsCommand::Check { file }) => match plugins_cmd::check(&file).await {
            Ok((human, document)) => output.result(&human, document),
            Err(e) => {
                return Err(CodedError::new(e.code(), e.to_string())
                    .with_hint("build job types with `cargo build --release --target wasm32-wasip2` against this worker's wit/ (docs/job-types.md)")
                    .into());
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}
