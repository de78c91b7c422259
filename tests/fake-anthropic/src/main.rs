//! `blobhub-fake-anthropic`: run the fake Anthropic Messages API as a standalone server, for
//! benchmarks and trying the CLI by hand.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    blobhub_fake_http::standalone::run(
        blobhub_fake_anthropic::Anthropic,
        "A fake Anthropic Messages API on 127.0.0.1, scripted by the prompt (see the crate's \
         README.md). Point Claude Code at it with ANTHROPIC_BASE_URL=http://127.0.0.1:<port> and \
         ANTHROPIC_API_KEY=dummy. Serves until killed.",
    )
    .await
}
