//! `service install [--user]` and `service uninstall`: a systemd unit that runs `start` on this
//! state tree, restarts it when it fails, and gives its drain the time it needs to finish.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::json;

use super::{Output, state_tree};
use crate::coded::CodedError;

/// The unit's file name.
pub const UNIT: &str = "blobhub-worker.service";
/// systemd waits this much longer than the drain bound and the agents' kill grace before it
/// kills what is left.
const STOP_MARGIN_S: u64 = 15;

#[derive(Debug, clap::Subcommand)]
pub enum ServiceCommand {
    /// Write a systemd unit that runs `blobhub-worker start` on this state tree (it is not
    /// enabled or started: the command to do that is printed).
    Install(InstallArgs),
    /// Remove the unit written by `service install` (stop and disable it first).
    Uninstall(UnitDir),
}

#[derive(Debug, clap::Args)]
pub struct UnitDir {
    /// A user unit (~/.config/systemd/user), run by your own service manager; else a system
    /// unit (/etc/systemd/system) run as your user.
    #[arg(long)]
    pub user: bool,
    /// Write into this folder instead (e.g. to check the unit first).
    #[arg(long, value_name = "DIR")]
    pub unit_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    #[command(flatten)]
    pub dir: UnitDir,
    /// Replace an existing unit.
    #[arg(long)]
    pub force: bool,
}

impl UnitDir {
    fn path(&self) -> Result<PathBuf, CodedError> {
        if let Some(dir) = &self.unit_dir {
            return Ok(dir.join(UNIT));
        }
        if !self.user {
            return Ok(PathBuf::from("/etc/systemd/system").join(UNIT));
        }
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .ok_or_else(|| {
                CodedError::new(
                    "SERVICE_INSTALL_FAILED",
                    "neither XDG_CONFIG_HOME nor HOME is set",
                )
                .with_hint("set HOME, or name the folder with --unit-dir")
            })?;
        Ok(config.join("systemd/user").join(UNIT))
    }
}

/// The unit's text.
pub fn unit_text(exe: &Path, tree: &Path, stop_timeout_s: u64, user: Option<&str>) -> String {
    let run_as = user.map(|u| format!("User={u}\n")).unwrap_or_default();
    let wanted_by = if user.is_some() {
        "multi-user.target"
    } else {
        "default.target"
    };
    format!(
        "# Written by `blobhub-worker service install`; remove with `blobhub-worker service uninstall`.
[Unit]
Description=BlobHub Worker ({tree})
Documentation=https://docs.blobhub.io
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
{run_as}Environment=BLOBHUB_WORKER_HOME={tree}
ExecStart={exe} start
# SIGTERM to the worker only: it drains and ends its agents itself (shutdown.drain_timeout_ms).
KillMode=mixed
KillSignal=SIGTERM
# Above the drain bound plus the agents' kill grace, so a drain is never cut by systemd.
TimeoutStopSec={stop_timeout_s}
Restart=on-failure
RestartSec=5

[Install]
WantedBy={wanted_by}
",
        tree = tree.display(),
        exe = exe.display(),
    )
}

/// The user running this command, for a system unit's `User=`.
fn user_name() -> Option<String> {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| std::env::var("LOGNAME").ok().filter(|u| !u.is_empty()))
}

pub async fn run(command: ServiceCommand, output: &Output) -> anyhow::Result<ExitCode> {
    match command {
        ServiceCommand::Install(args) => install(args, output),
        ServiceCommand::Uninstall(dir) => uninstall(dir, output),
    }
}

fn failed(path: &Path, e: std::io::Error) -> CodedError {
    CodedError::new(
        "SERVICE_INSTALL_FAILED",
        format!("cannot write {}: {e}", path.display()),
    )
    .with_hint("a system unit needs root (sudo), or use --user")
}

fn install(args: InstallArgs, output: &Output) -> anyhow::Result<ExitCode> {
    let tree = state_tree()?;
    let path = args.dir.path()?;
    if path.exists() && !args.force {
        return Err(CodedError::new(
            "SERVICE_UNIT_EXISTS",
            format!("{} already exists", path.display()),
        )
        .with_hint("re-run with --force to replace it")
        .into());
    }
    // The drain bound of this tree's config (its default when the config cannot be read).
    let drain = crate::config::load_file(&tree.config_path())
        .config
        .map(|c| c.shutdown)
        .unwrap_or_default()
        .drain_timeout();
    let stop_timeout = drain.as_secs()
        + u64::from(drain.subsec_nanos() > 0)
        + crate::runtime::supervisor::CHILD_GRACE.as_secs()
        + STOP_MARGIN_S;
    let exe = std::env::current_exe()?;
    let user = if args.dir.user { None } else { user_name() };
    let text = unit_text(&exe, tree.root(), stop_timeout, user.as_deref());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| failed(&path, e))?;
    }
    std::fs::write(&path, text).map_err(|e| failed(&path, e))?;
    let scope = if args.dir.user { " --user" } else { "" };
    output.result(
        &format!(
            "wrote {}\nstart it now and at every boot with:\n  systemctl{scope} daemon-reload && systemctl{scope} enable --now blobhub-worker",
            path.display()
        ),
        json!({"unit": path, "user": args.dir.user, "timeout_stop_s": stop_timeout}),
    );
    Ok(ExitCode::SUCCESS)
}

fn uninstall(dir: UnitDir, output: &Output) -> anyhow::Result<ExitCode> {
    let path = dir.path()?;
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CodedError::new(
                "SERVICE_UNIT_NOT_FOUND",
                format!("there is no {}", path.display()),
            )
            .with_hint("pass the same --user / --unit-dir as at install")
            .into());
        }
        Err(e) => return Err(failed(&path, e).into()),
    }
    let scope = if dir.user { " --user" } else { "" };
    output.result(
        &format!(
            "removed {} (if it was enabled: systemctl{scope} disable --now blobhub-worker first, then systemctl{scope} daemon-reload)",
            path.display()
        ),
        json!({"unit": path, "removed": true}),
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_restarts_on_failure_and_outwaits_the_drain() {
        let text = unit_text(
            Path::new("/usr/bin/blobhub-worker"),
            Path::new("/home/a/.blobhub-worker"),
            27,
            None,
        );
        assert!(text.contains("ExecStart=/usr/bin/blobhub-worker start\n"));
        assert!(text.contains("Environment=BLOBHUB_WORKER_HOME=/home/a/.blobhub-worker\n"));
        assert!(text.contains("Restart=on-failure\n"));
        assert!(text.contains("TimeoutStopSec=27\n"));
        assert!(text.contains("KillMode=mixed\n"));
        assert!(text.contains("WantedBy=default.target\n"));
        assert!(!text.contains("User="));
        let system = unit_text(Path::new("/x"), Path::new("/t"), 27, Some("ada"));
        assert!(system.contains("User=ada\n") && system.contains("WantedBy=multi-user.target\n"));
    }
}
