//! The command line: argument parsing, logging setup, and the one place where errors become
//! output and exit statuses (docs/operations.md):
//!
//! * 0: success, `--help`, `--version`, `start` after a graceful stop;
//! * 1: a coded error, printed once as `error: CODE: message` and `hint: …` on stderr (with
//!   `--json`: one JSON object on one line);
//! * 2: a usage error (bad flag or value).

mod attached;
mod config_check;
mod config_init;
#[cfg(feature = "demo")]
mod demo;
#[cfg(not(feature = "demo"))]
#[path = "demo_absent.rs"]
mod demo;
mod login;
mod memory;
mod output;
mod plugins;
mod service;
mod start;
mod whoami;

use std::fs::File;
use std::io::IsTerminal;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Mutex, OnceLock};

use clap::{Parser, Subcommand};

pub use output::Output;

use crate::coded::CodedError;
use crate::log_format::{JsonLines, LogFormat};

/// BlobHub Worker: attaches to BlobHub sessions and runs coding agents for their threads.
#[derive(Debug, Parser)]
#[command(name = "blobhub-worker", version, about, propagate_version = true)]
struct Cli {
    /// Machine-readable output: JSON on stdout, errors as one JSON line on stderr.
    #[arg(long, global = true)]
    json: bool,
    /// More log output (repeat for more: -v info, -vv debug, -vvv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Log records as JSON lines (`{"ts", "level", "event", …fields}`) or as text. Default:
    /// text when stderr is a terminal, JSON otherwise (a service, a pipe, a file).
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "FORMAT",
        env = "BLOBHUB_WORKER_LOG_FORMAT"
    )]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Store the API URL and key, validated against BlobHub, and record the user.
    Login(login::LoginArgs),
    /// Show the API URL, the user, the state tree and whether a worker is running.
    Whoami,
    /// Work with config.yaml.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Check everything, then run the configured sections until stopped.
    Start(start::StartArgs),
    /// List the bundled and installed job types, or check a component (`plugins check FILE`).
    Plugins(plugins::PluginsArgs),
    /// Run the whole product offline: an in-process emulator, a worker and the test agent.
    Demo(demo::DemoArgs),
    /// Show the running worker's sections, threads, agent slots and recent errors (exit 1 when
    /// no worker runs on this state tree).
    Status,
    /// Stop the running worker gracefully and wait until it has exited.
    Stop(attached::StopArgs),
    /// Open the live dashboard of the running worker (`q` leaves it running, `s` stops it).
    Top,
    /// Install or remove a systemd unit that runs the worker on this state tree.
    #[command(subcommand)]
    Service(service::ServiceCommand),
    /// Print a shell completion script: `completions bash|zsh|fish`.
    Completions {
        /// The shell to write the script for.
        #[arg(value_enum)]
        shell: CompletionShell,
    },
}

/// The shells `completions` writes scripts for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

/// `completions`: the script clap generates from the very definitions above.
fn completions(shell: CompletionShell) -> ExitCode {
    use clap::CommandFactory;
    use clap_complete::Shell;
    let shell = match shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "blobhub-worker",
        &mut std::io::stdout(),
    );
    ExitCode::SUCCESS
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Report every problem of config.yaml at once, each with its field path and line.
    Check {
        /// The file to check (default: config.yaml of the state tree).
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
    /// Write a commented config.yaml with your choices (refuses to replace one without --force).
    Init(config_init::InitArgs),
}

/// Whether `args` (without the program name) is a command line this binary accepts, with the
/// error clap would print otherwise. `--help` and `--version` are accepted. For the doc test,
/// which checks every command line the documentation quotes against the real definitions.
pub fn check_args(args: &[&str]) -> Result<(), String> {
    let argv = std::iter::once("blobhub-worker").chain(args.iter().copied());
    match Cli::try_parse_from(argv) {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// The whole program: parses the arguments, runs the command and reports its outcome.
pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // Help and version go to stdout with status 0; usage errors to stderr with 2.
            let _ = err.print();
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2));
        }
    };
    let output = Output {
        json: cli.json,
        quiet: cli.quiet,
    };
    init_logging(&cli);
    match try_run(cli, &output) {
        Ok(code) => code,
        Err(err) => {
            output.report_error(&err);
            ExitCode::FAILURE
        }
    }
}

fn try_run(cli: Cli, output: &Output) -> anyhow::Result<ExitCode> {
    memory::one_arena();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder
        .worker_threads(runtime_workers())
        // The blocking pool's idle threads would otherwise end after 10 s and be created again
        // for each section's state-folder check (every 15 s): a thread's creation and teardown
        // per check, in a worker that is otherwise asleep.
        .thread_keep_alive(std::time::Duration::from_secs(300))
        .enable_all();
    let runtime = builder.build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Login(args) => login::run(args, output).await,
            Command::Whoami => whoami::run(output).await,
            Command::Config(ConfigCommand::Check { file }) => config_check::run(file, output).await,
            Command::Config(ConfigCommand::Init(args)) => config_init::run(args, output).await,
            Command::Start(args) => start::run(args, output).await,
            Command::Plugins(args) => plugins::run(args, output).await,
            Command::Demo(args) => demo::run(args, output).await,
            Command::Status => attached::status(output).await,
            Command::Stop(args) => attached::stop(args, output).await,
            Command::Top => attached::top(output).await,
            Command::Service(command) => service::run(command, output).await,
            Command::Completions { shell } => Ok(completions(shell)),
        }
    })
}

/// The runtime's worker threads: `BLOBHUB_WORKER_THREADS` (1–64), else one per CPU.
fn runtime_workers() -> usize {
    std::env::var("BLOBHUB_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| (1..=64).contains(n))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
}

/// The default log filter: warnings and errors from everything, plus the job types' own info
/// events (a section attached, a thread registered or handed off and active, a turn started and
/// ended), each one line. The host's info records (compile cache, timings) need `-v`.
const DEFAULT_FILTER: &str = "warn,blobhub_worker::runtime::capabilities::log=info";

fn init_logging(cli: &Cli) {
    // The dashboard owns the terminal: its logs are JSON lines in a file (see `log_to_file`),
    // at info by default since they disturb nobody there.
    let tui = matches!(&cli.command, Command::Start(args) if args.tui);
    let level = if cli.quiet {
        "error"
    } else {
        match cli.verbose {
            0 if tui => "info",
            0 => DEFAULT_FILTER,
            1 => "info",
            2 => "debug",
            _ => "trace",
        }
    };
    // BLOBHUB_WORKER_LOG takes a full filter (`blobhub_worker::api=trace`) for debugging.
    let filter = tracing_subscriber::EnvFilter::try_from_env("BLOBHUB_WORKER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LogSink { tui });
    // Colour only for a person at a terminal: redirected logs (a file, journald) get none.
    let terminal = std::io::stderr().is_terminal();
    let colour = terminal && std::env::var_os("NO_COLOR").is_none();
    // `--json` and the dashboard's log file are for programs: JSON unless text is asked for.
    let format = cli.log_format.unwrap_or(if cli.json || tui || !terminal {
        LogFormat::Json
    } else {
        LogFormat::Pretty
    });
    let _ = match format {
        LogFormat::Json => builder.event_format(JsonLines).try_init(),
        LogFormat::Pretty => builder
            .with_target(false)
            .with_ansi(colour && !tui)
            .try_init(),
    };
}

/// The log file, once [`log_to_file`] has been called.
static LOG_FILE: OnceLock<Mutex<File>> = OnceLock::new();
/// `start --tui`: the info and debug records written before the log file exists (preflight),
/// moved into the file when it is opened.
static PENDING: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Where log records go: stderr; with `--tui` the log file once it is open, and before that
/// warnings and errors to stderr (the dashboard is not up yet), the rest held for the file.
struct LogSink {
    tui: bool,
}

enum LogWriter {
    Stderr,
    File,
    Pending,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogSink {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        self.pick(&tracing::Level::ERROR)
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> LogWriter {
        self.pick(meta.level())
    }
}

impl LogSink {
    fn pick(&self, level: &tracing::Level) -> LogWriter {
        if LOG_FILE.get().is_some() {
            LogWriter::File
        } else if self.tui && *level > tracing::Level::WARN {
            LogWriter::Pending
        } else {
            LogWriter::Stderr
        }
    }
}

/// `tracing` formats a record into one buffer and writes it at once, so records never
/// interleave.
impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match (self, LOG_FILE.get()) {
            (LogWriter::File, Some(file)) => file
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .write_all(buf)?,
            (LogWriter::Pending, _) => PENDING
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf),
            _ => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match (self, LOG_FILE.get()) {
            (LogWriter::File, Some(file)) => file.lock().unwrap_or_else(|e| e.into_inner()).flush(),
            (LogWriter::Pending, _) => Ok(()),
            _ => std::io::stderr().flush(),
        }
    }
}

/// Send every log record from now on to `path` (appended; the file mode 0600, its folder
/// 0700), for `start --tui`, whose dashboard owns the terminal.
fn log_to_file(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        crate::state_tree::create_private_dir(dir)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let pending = std::mem::take(&mut *PENDING.lock().unwrap_or_else(|e| e.into_inner()));
    (&file).write_all(&pending)?;
    LOG_FILE
        .set(Mutex::new(file))
        .map_err(|_| std::io::Error::other("the log file is already set"))
}

/// The state tree of this invocation, or the coded error saying why there is none.
fn state_tree() -> Result<crate::state_tree::StateTree, CodedError> {
    Ok(crate::state_tree::StateTree::from_env()?)
}

#[cfg(test)]
mod tests {
    use super::check_args;

    #[test]
    fn check_args_accepts_real_command_lines_and_refuses_made_up_ones() {
        for ok in [
            &["config", "init", "--force", "--agent", "codex"][..],
            &["--json", "whoami"],
            &["plugins", "check", "x.wasm"],
            &["start", "--help"],
            &["--version"],
        ] {
            assert_eq!(check_args(ok), Ok(()), "{ok:?}");
        }
        for bad in [
            &["plugins", "list"][..],
            &["config", "edit"],
            &["login", "--api-key", "k"],
            &[],
        ] {
            assert!(check_args(bad).is_err(), "{bad:?}");
        }
    }
}
