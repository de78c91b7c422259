//! The `blobhub-worker` executable: everything lives in the library; see `cli::run`.

use std::path::Path;
use std::process::ExitCode;

/// Run under this name (a link to this executable), the worker is the scripted test agent.
const TEST_AGENT_NAME: &str = "blobhub-test-agent";

fn main() -> ExitCode {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if Path::new(&argv0).file_name() == Some(TEST_AGENT_NAME.as_ref()) {
        blobhub_worker::test_agent::main();
        return ExitCode::SUCCESS;
    }
    // Before any secret is read: nothing of the same user may read this process's memory.
    blobhub_worker::runtime::child_sandbox::harden_worker();
    blobhub_worker::cli::run()
}
