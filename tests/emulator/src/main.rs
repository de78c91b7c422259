//! `blobhub-emulator`: run the local BlobHub emulator as a standalone server.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context, bail};
use blobhub_emulator::{Emulator, EmulatorConfig, User};
use clap::Parser;

/// A local BlobHub emulator: the session API the BlobHub worker uses
/// (users/me, revisions, session objects, thread items, events) on plain HTTP,
/// plus an unauthenticated admin API under /admin for creating sessions,
/// posting as any user, inspecting requests and injecting faults.
/// Point the worker at it with `--api-url http://127.0.0.1:8787/v1`.
#[derive(Parser, Debug)]
#[command(name = "blobhub-emulator", version)]
struct Args {
    /// TCP port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8787)]
    port: u16,
    /// Address to bind. The admin API has no auth: keep this on loopback.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Keep all state in this JSON file across restarts (written atomically on every change).
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// A user as ID:KEY[:NAME] (repeatable). Default: usr_demo with key bhk_demo_key.
    #[arg(long = "user", value_name = "ID:KEY[:NAME]")]
    users: Vec<String>,
}

fn parse_user(spec: &str) -> anyhow::Result<User> {
    let mut parts = spec.splitn(3, ':');
    let (Some(id), Some(key)) = (parts.next(), parts.next()) else {
        bail!("--user {spec:?}: expected ID:KEY[:NAME]");
    };
    if id.is_empty() || key.is_empty() {
        bail!("--user {spec:?}: ID and KEY must not be empty");
    }
    let name = parts.next().filter(|n| !n.is_empty()).unwrap_or(id);
    Ok(User {
        id: id.into(),
        name: name.into(),
        email: format!("{id}@example.com"),
        api_key: key.into(),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = EmulatorConfig {
        state_file: args.state,
        ..EmulatorConfig::default()
    };
    if !args.users.is_empty() {
        config.users = args
            .users
            .iter()
            .map(|s| parse_user(s))
            .collect::<anyhow::Result<_>>()?;
    }
    let keys: Vec<String> = config
        .users
        .iter()
        .map(|u| format!("{} ({})", u.api_key, u.id))
        .collect();
    let emu = Emulator::start_on(config, SocketAddr::new(args.bind, args.port))
        .await
        .context("starting the emulator")?;
    println!("BlobHub emulator");
    println!("  API URL:   {}", emu.api_url());
    println!("  admin URL: {}", emu.admin_url());
    println!("  API keys:  {}", keys.join(", "));
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    emu.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_specs() {
        let u = parse_user("usr_a:key_a:Alice A").unwrap();
        assert_eq!(
            (u.id.as_str(), u.api_key.as_str(), u.name.as_str()),
            ("usr_a", "key_a", "Alice A")
        );
        assert_eq!(parse_user("usr_b:key_b").unwrap().name, "usr_b");
        assert!(parse_user("nokey").is_err());
        assert!(parse_user(":k").is_err());
    }
}
