//! `blobhub-test-agent` as its own executable, for the test suite and the benches (which find it
//! through Cargo). The agent itself is `blobhub_worker::test_agent`; the worker's executable is
//! the same agent when run under this name.

fn main() {
    blobhub_worker::test_agent::main()
}
