//! `login`: store the API URL and key after BlobHub has confirmed them, and record the user.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::process::ExitCode;

use serde_json::json;

use super::{Output, state_tree};
use crate::api::{ApiError, Client, RetryPolicy};
use crate::coded::CodedError;
use crate::state_tree::{
    ApiCredentials, ApiKey, Credentials, DEFAULT_API_URL, Identity, IdentityUser, utc_now_seconds,
};

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// The BlobHub API base URL (default: the current one, else https://api.blobhub.io/v1).
    #[arg(long, value_name = "URL")]
    api_url: Option<String>,
    /// Read the API key from standard input instead of prompting.
    #[arg(long)]
    api_key_stdin: bool,
    /// Never prompt; fail with INPUT_REQUIRED when something is missing.
    #[arg(long)]
    no_input: bool,
    /// Replace a recorded identity of a different user without asking.
    #[arg(long)]
    force: bool,
}

pub async fn run(args: LoginArgs, output: &Output) -> anyhow::Result<ExitCode> {
    let tree = state_tree()?;
    let interactive = !args.no_input && std::io::stdin().is_terminal();
    // The URL of an existing login is the default, so re-running login keeps the endpoint.
    let current_url = tree.load_credentials().ok().map(|c| c.api.url);
    let default_url = current_url.as_deref().unwrap_or(DEFAULT_API_URL);
    let api_url = match args.api_url {
        Some(url) => url,
        None if interactive => {
            let answer = prompt_line(&format!("API URL [{default_url}]: "))?;
            if answer.is_empty() {
                default_url.to_owned()
            } else {
                answer
            }
        }
        None => default_url.to_owned(),
    };
    let key = if args.api_key_stdin {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        text.trim().to_owned()
    } else if interactive {
        rpassword::prompt_password("API key: ")?.trim().to_owned()
    } else {
        return Err(CodedError::new(
            "INPUT_REQUIRED",
            "no API key was given and there is no terminal to ask for one",
        )
        .with_hint("pipe the key in: `blobhub-worker login --api-key-stdin < keyfile`")
        .into());
    };
    if key.is_empty() {
        return Err(CodedError::new("INPUT_REQUIRED", "the API key is empty")
            .with_hint("supply a non-empty key")
            .into());
    }

    let client =
        Client::new(&api_url, &key, RetryPolicy::interactive()).map_err(CodedError::from)?;
    let user = client
        .users_me()
        .await
        .map_err(|e| login_error(client.api_url(), e))?;

    if let Ok(recorded) = tree.load_identity()
        && recorded.user.user_id != user.id
        && !args.force
    {
        let question = format!(
            "This state tree was recorded for {} ({}); the key belongs to {} ({}). Replace the identity? [y/N]: ",
            recorded.user.user_id, recorded.user.name, user.id, user.name
        );
        // A piped key used up stdin, so only a terminal can confirm.
        let confirmed = interactive && !args.api_key_stdin && {
            let answer = prompt_line(&question)?;
            matches!(answer.to_ascii_lowercase().as_str(), "y" | "yes")
        };
        if !confirmed {
            return Err(CodedError::new(
                "USER_IDENTITY_MISMATCH",
                format!(
                    "the key belongs to {} but this state tree was recorded for {}; nothing was changed",
                    user.id, recorded.user.user_id
                ),
            )
            .with_hint("re-run with --force to switch users, or use another BLOBHUB_WORKER_HOME")
            .into());
        }
    }

    tree.ensure_dirs().map_err(|e| {
        CodedError::new(
            "STATE_TREE_ERROR",
            format!("cannot create {}: {e}", tree.root().display()),
        )
    })?;
    tree.save_credentials(&Credentials {
        api: ApiCredentials {
            url: client.api_url().to_owned(),
            key: ApiKey::new(key),
        },
    })
    .map_err(CodedError::from)?;
    tree.save_identity(&Identity {
        user: IdentityUser {
            user_id: user.id.clone(),
            name: user.name.clone(),
            email: user.email.clone(),
            recorded_at: utc_now_seconds(),
        },
    })
    .map_err(CodedError::from)?;
    // Compile the installed job types into the state tree's cache now, while a person waits for
    // login anyway (the bundled one comes compiled with the binary): otherwise the first `start`
    // compiles them in the background and their sections wait for it. Best effort: `start`
    // compiles whatever is missing and reports what fails to load.
    if let Err(e) = crate::runtime::start::load_job_types(tree.root()).await {
        tracing::warn!(error = %format!("{e:#}"), "job_types_not_precompiled");
    }

    output.result(
        &format!(
            "Logged in to {} as {} <{}> ({}).\nCredentials saved to {}",
            client.api_url(),
            user.name,
            user.email,
            user.id,
            tree.credentials_path().display()
        ),
        json!({
            "api_url": client.api_url(),
            "user": user,
            "state_tree": tree.root(),
        }),
    );
    Ok(ExitCode::SUCCESS)
}

/// A failed `GET /users/me` at login, said in terms of what the operator typed: nothing has been
/// written yet, so the hints name the `--api-url` flag, never `credentials.yaml`.
fn login_error(api_url: &str, err: ApiError) -> CodedError {
    let not_found = matches!(&err, ApiError::CommandFailed { status: 404, .. });
    let coded = CodedError::from(err);
    match coded.code.as_ref() {
        "API_NETWORK_ERROR" => CodedError {
            message: format!("nothing answered at {api_url}: {}", coded.message),
            ..coded
        }
        .with_hint(
            "check the URL given to --api-url (scheme, host, port) and that BlobHub is reachable from here",
        ),
        "API_COMMAND_FAILED" if not_found => {
            let hint = if api_url.ends_with("/v1") {
                format!("{api_url} does not look like the BlobHub API; check --api-url")
            } else {
                format!(
                    "the API URL includes the version: try `--api-url {api_url}/v1`"
                )
            };
            CodedError {
                message: format!("{api_url}/users/me does not exist: {}", coded.message),
                ..coded
            }
            .with_hint(hint)
        }
        _ => coded,
    }
}

/// Asks on stderr and reads one line from stdin (trimmed).
fn prompt_line(question: &str) -> std::io::Result<String> {
    let mut stderr = std::io::stderr();
    stderr.write_all(question.as_bytes())?;
    stderr.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_owned())
}
