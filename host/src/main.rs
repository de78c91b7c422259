//! The `blobhub-worker` executable: everything lives in the library; see `cli::run`.

use std::process::ExitCode;

fn main() -> ExitCode {
    blobhub_worker::cli::run()
}
