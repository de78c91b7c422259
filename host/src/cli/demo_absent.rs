//! `demo` in a worker built without the `demo` feature (`cargo build --no-default-features`):
//! the emulator it needs is not in this binary, so it says how to get a build that has it.

use std::process::ExitCode;

use super::Output;
use crate::coded::CodedError;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Keep the emulator and the worker running afterwards (until Ctrl-C).
    #[arg(long)]
    keep: bool,
}

pub async fn run(args: DemoArgs, _output: &Output) -> anyhow::Result<ExitCode> {
    let _ = args.keep;
    Err(CodedError::new(
        "DEMO_NOT_BUILT",
        "this worker was built without the `demo` feature, so it carries no BlobHub emulator",
    )
    .with_hint(
        "build with the default features (`cargo install --path host` or `cargo build -p blobhub-worker`), or run the emulator yourself: `cargo run -p blobhub-emulator`",
    )
    .into())
}
