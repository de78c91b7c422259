//! `blobhub-fake-openai`: run the fake OpenAI Responses API as a standalone server, for
//! benchmarks and trying the CLI by hand.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    blobhub_fake_http::standalone::run(
        blobhub_fake_openai::Openai,
        "A fake OpenAI Responses API on 127.0.0.1, scripted by the prompt (see the crate's \
         README.md). Point Codex at it with a custom model provider whose base_url is \
         http://127.0.0.1:<port>/v1. Serves until killed.",
    )
    .await
}
