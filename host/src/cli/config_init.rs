//! `config init`: write a commented `config.yaml` with the operator's choices, never over an
//! existing file unless `--force`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;

use super::{Output, state_tree};
use crate::coded::CodedError;

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Where to write (default: config.yaml of the state tree).
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// Replace an existing file.
    #[arg(long)]
    force: bool,
    /// The agent type threads run by default: claude_code, codex or test_double.
    #[arg(long, value_name = "TYPE", default_value = "claude_code")]
    agent: String,
    /// The agent's executable, when it is not the type's default command on PATH.
    #[arg(long, value_name = "COMMAND")]
    executable: Option<String>,
    /// `approval` (sensitive actions ask a person) or `autonomous`.
    #[arg(long, value_name = "MODE", default_value = "approval")]
    permissions: String,
    /// Agent processes running at once across all sections.
    #[arg(long, value_name = "N", default_value_t = 4)]
    max_agents: u32,
    /// A name for the section (shown in logs and the dashboard).
    #[arg(long, value_name = "NAME", default_value = "main")]
    name: String,
    /// The session to attach to: give all four ids to get an active section; otherwise the
    /// section is written commented out, to be filled in.
    #[arg(long, value_name = "ID")]
    org_id: Option<String>,
    #[arg(long, value_name = "ID")]
    blob_id: Option<String>,
    #[arg(long, value_name = "ID")]
    revision_id: Option<String>,
    #[arg(long, value_name = "ID")]
    session_id: Option<String>,
}

pub async fn run(args: InitArgs, output: &Output) -> anyhow::Result<ExitCode> {
    let path = match &args.file {
        Some(p) => p.clone(),
        None => state_tree()?.config_path(),
    };
    let text = render(&args)?;
    // Checked before anything is written, and again by `create_new` against a race.
    if path.exists() && !args.force {
        return Err(CodedError::new(
            "CONFIG_EXISTS",
            format!("{} exists already; nothing was written", path.display()),
        )
        .with_hint("edit it, or re-run with --force to replace it")
        .into());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::state_tree::create_private_dir(dir).map_err(|e| {
            CodedError::new(
                "STATE_TREE_ERROR",
                format!("cannot create {}: {e}", dir.display()),
            )
            .with_hint("check the permissions of the folder")
        })?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if args.force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let write = options
        .open(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()));
    if let Err(e) = write {
        let code = if e.kind() == std::io::ErrorKind::AlreadyExists {
            "CONFIG_EXISTS"
        } else {
            "STATE_TREE_ERROR"
        };
        return Err(
            CodedError::new(code, format!("cannot write {}: {e}", path.display()))
                .with_hint("check the path, or re-run with --force to replace an existing file")
                .into(),
        );
    }
    let active = session_ids(&args).is_some();
    let next = if active {
        "next: `blobhub-worker config check`, then `blobhub-worker start`"
    } else {
        "next: fill in the section's session ids (or re-run with --org-id, --blob-id, --revision-id, --session-id and --force), then `blobhub-worker config check`"
    };
    output.result(
        &format!("wrote {}\n{next}", path.display()),
        json!({"file": path, "section_active": active}),
    );
    Ok(ExitCode::SUCCESS)
}

fn session_ids(args: &InitArgs) -> Option<[&str; 4]> {
    Some([
        args.org_id.as_deref()?,
        args.blob_id.as_deref()?,
        args.revision_id.as_deref()?,
        args.session_id.as_deref()?,
    ])
}

/// A YAML scalar for a value the operator typed: quoted whenever plain YAML could misread it.
fn scalar(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c))
        && !value.starts_with(['-', '.'])
        && serde_yaml::from_str::<serde_yaml::Value>(value)
            .is_ok_and(|v| v.as_str() == Some(value));
    if plain {
        value.to_owned()
    } else {
        serde_json::Value::from(value).to_string()
    }
}

/// The template. Every choice is validated by the same loader `config check` uses, so the
/// command never writes a file that check would refuse for its own values.
fn render(args: &InitArgs) -> Result<String, CodedError> {
    let invalid = |message: String| {
        CodedError::new("INVALID_CONFIG", message)
            .with_hint("see `blobhub-worker config init --help` and docs/configuration.md")
    };
    if blobhub_agent_types::find(&args.agent).is_none() {
        return Err(invalid(format!(
            "--agent `{}` is not an agent type (claude_code, codex, test_double)",
            args.agent
        )));
    }
    let partial = [
        &args.org_id,
        &args.blob_id,
        &args.revision_id,
        &args.session_id,
    ]
    .iter()
    .filter(|v| v.is_some())
    .count();
    if partial != 0 && partial != 4 {
        return Err(invalid(
            "give all four of --org-id, --blob-id, --revision-id and --session-id, or none"
                .to_owned(),
        ));
    }
    let executable = match &args.executable {
        Some(e) => format!("    executable: {}\n", scalar(e)),
        None => format!(
            "    # executable: {}        # default: the type's command, found on PATH\n",
            crate::config::default_executable(&args.agent).unwrap_or("…")
        ),
    };
    let section = |prefix: &str, ids: [&str; 4]| {
        format!(
            "{p}  - name: {name}\n\
             {p}    job_type: session_agent_harness\n\
             {p}    session:\n\
             {p}      org_id: {}\n\
             {p}      blob_id: {}\n\
             {p}      revision_id: {}     # or `default`: follow the blob's default revision\n\
             {p}      session_id: {}      # the session's id or alias\n",
            scalar(ids[0]),
            scalar(ids[1]),
            scalar(ids[2]),
            scalar(ids[3]),
            p = prefix,
            name = scalar(&args.name),
        )
    };
    let sections = match session_ids(args) {
        Some(ids) => format!("sections:\n{}", section("", ids)),
        None => format!(
            "# No session yet: fill in the ids below and remove the `#`s (and the `[]`).\n\
             sections: []\n{}",
            section(
                "#",
                ["org_01J...", "blb_01J...", "rev_01J...", "ses_01J..."]
            )
        ),
    };
    let text = format!(
        "# BlobHub worker configuration, written by `blobhub-worker config init`.\n\
         # Every key is explained in docs/configuration.md; check this file with\n\
         # `blobhub-worker config check`. The API URL and key are not here: `blobhub-worker login`\n\
         # keeps them in credentials.yaml.\n\
         \n\
         # How often each section polls its session, in milliseconds.\n\
         polling:\n\
         \x20 interval_idle_ms: 1500\n\
         \x20 interval_active_ms: 3000\n\
         \x20 backoff_max_ms: 30000\n\
         \n\
         # Agent processes running at once, across all sections.\n\
         concurrency:\n\
         \x20 max_agents: {max_agents}\n\
         \n\
         # How threads run their agent. A thread's own `agent.*` settings override these.\n\
         agents:\n\
         \x20 {agent}:\n\
         {executable}\
         \x20   permissions: {permissions}    # approval: sensitive actions ask a person; autonomous: no gate\n\
         \x20   # model: ...                  # default: the agent's own\n\
         \x20   # env:                        # variables for the agent (never BLOBHUB_*)\n\
         \x20   #   ANTHROPIC_API_KEY: ...\n\
         \n\
         # One entry per session the worker attaches to.\n\
         {sections}",
        max_agents = args.max_agents,
        agent = args.agent,
        permissions = scalar(&args.permissions),
    );
    let report = crate::config::load_str(&text);
    let errors: Vec<String> = report.errors().map(ToString::to_string).collect();
    if !errors.is_empty() {
        return Err(invalid(format!(
            "these choices do not make a valid config: {}",
            errors.join("; ")
        )));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(ids: bool) -> InitArgs {
        let id = |s: &str| ids.then(|| s.to_owned());
        InitArgs {
            file: None,
            force: false,
            agent: "claude_code".into(),
            executable: None,
            permissions: "approval".into(),
            max_agents: 2,
            name: "main".into(),
            org_id: id("org_1"),
            blob_id: id("blb_1"),
            revision_id: id("rev_1"),
            session_id: id("ses 1: odd"),
        }
    }

    #[test]
    fn the_template_loads_with_the_choices() {
        let text = render(&args(true)).unwrap();
        let config = crate::config::load_str(&text).config.unwrap();
        assert_eq!(config.concurrency.max_agents, 2);
        assert_eq!(config.sections.len(), 1);
        assert_eq!(
            config.sections[0].settings["session"]["session_id"],
            "ses 1: odd"
        );
        assert!(config.agents.contains_key("claude_code"));
    }

    #[test]
    fn without_ids_the_section_is_commented_out() {
        let text = render(&args(false)).unwrap();
        let config = crate::config::load_str(&text).config.unwrap();
        assert!(config.sections.is_empty());
        assert!(text.contains("#  - name: main"), "{text}");
    }

    #[test]
    fn bad_choices_are_refused_before_writing() {
        let mut a = args(true);
        a.permissions = "yolo".into();
        assert_eq!(render(&a).unwrap_err().code, "INVALID_CONFIG");
        let mut a = args(true);
        a.agent = "nope".into();
        assert_eq!(render(&a).unwrap_err().code, "INVALID_CONFIG");
        let mut a = args(true);
        a.max_agents = 0;
        assert_eq!(render(&a).unwrap_err().code, "INVALID_CONFIG");
        let mut a = args(false);
        a.org_id = Some("org".into());
        assert_eq!(render(&a).unwrap_err().code, "INVALID_CONFIG");
    }
}
