# Developer tasks. `just` is optional: each recipe is one or two plain commands (CI runs
# .ci/run, not this file).

# Build every guest in plugins/ (wasm32-wasip2, release) and copy the components to plugins/dist/.
build-plugins:
    cd plugins && cargo build --release --target wasm32-wasip2
    mkdir -p plugins/dist
    cp plugins/target/wasm32-wasip2/release/*.wasm plugins/dist/
    @echo "components in plugins/dist/; install one with: cp plugins/dist/<job_type>.wasm ~/.blobhub-worker/plugins/"

# The whole test suite (builds the guest fixtures itself), then the job types' unit tests.
test:
    cargo test --workspace
    cargo test --workspace --manifest-path plugins/Cargo.toml

# Format check and clippy for the host and the guests.
lint:
    cargo fmt --all -- --check
    (cd plugins && cargo fmt --all -- --check)
    cargo clippy --workspace --all-targets -- -D warnings
    (cd plugins && cargo clippy --workspace --target wasm32-wasip2 -- -D warnings)

# Runtime benchmarks and concurrency measurements, then our worker against the reference worker
# (installed once under target/reference-worker), also both driving the real Claude Code CLI
# (installed once in tests/agents); the bench itself talks only to 127.0.0.1. Last, the hour-long
# soak (BENCH_SOAK_S shortens it).
# Release; results go in docs/benchmarks.md.
bench:
    cargo bench -p blobhub-worker --bench runtime
    [ -x tests/agents/node_modules/.bin/claude ] || npm ci --prefix tests/agents
    BLOBHUB_REFERENCE_WORKER=$(tests/emulator/reference/install.sh target/reference-worker) cargo bench -p blobhub-worker --bench harness
    cargo bench -p blobhub-worker --bench agents
    cargo bench -p blobhub-worker --bench harness -- soak
