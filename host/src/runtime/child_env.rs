//! The environment of a spawned process: who may set which variable.
//!
//! - The worker's own environment is the operator's, and children inherit it, minus `BLOBHUB_*`,
//!   minus any variable whose value holds a secret (the API key), minus the variables an agent
//!   must not inherit (`CLAUDECODE`, `CLAUDE_CODE_*`: a worker started inside a Claude Code
//!   session would otherwise make its agents believe they are nested in it).
//! - A job type asks for more in `spawn-request.env`. It gets a variable only when it is on an
//!   allowlist, never because it is missing from a denylist:
//!   - the names of [`GUEST_SETTABLE`], which select an agent's own data folder or its output
//!     style;
//!   - the names the operator lists in `job_types.<name>.allow_env`, except the loader and
//!     interpreter variables ([`is_loader_or_interpreter`]);
//!   - exactly the `name: value` pairs the operator wrote in an `agents.<type>.env` block, when
//!     the job type holds the `agents` grant (the harness passes them on to the agent).
//!
//! So `LD_PRELOAD`, `PATH`, `NODE_OPTIONS` and the like reach a child only with a value that came
//! from the operator's own environment or config.yaml, never with one a job type chose.

use std::collections::BTreeSet;

/// Names any job type may set in a child's environment.
pub const GUEST_SETTABLE: &[&str] = &[
    // An agent's own data folder, so a job type can keep an agent's sessions apart.
    "CLAUDE_CONFIG_DIR",
    "CODEX_HOME",
    // Output style.
    "NO_COLOR",
    "TERM",
    "COLUMNS",
    "LINES",
    "TZ",
    "LANG",
    "LC_ALL",
];

/// Variables read by the dynamic loader, a shell or an interpreter before or instead of the
/// program's own logic: whoever sets them chooses code that runs.
pub fn is_loader_or_interpreter(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "PATH",
        "HOME",
        "SHELL",
        "ENV",
        "BASH_ENV",
        "PROMPT_COMMAND",
        "IFS",
        "CDPATH",
        "NODE_OPTIONS",
        "NODE_PATH",
        "PERL5OPT",
        "PERL5LIB",
        "PERLLIB",
        "RUBYOPT",
        "RUBYLIB",
        "GCONV_PATH",
        "HOSTALIASES",
        "LOCPATH",
        "MALLOC_TRACE",
        "GIT_EXEC_PATH",
        "GIT_SSH",
        "GIT_SSH_COMMAND",
        "GIT_CONFIG_GLOBAL",
        "EDITOR",
        "VISUAL",
        "PAGER",
        "BROWSER",
    ];
    const PREFIXES: &[&str] = &[
        "LD_",
        "PYTHON",
        "JAVA_",
        "_JAVA",
        "DYLD_",
        "BASH_FUNC_",
        "GLIBC_",
    ];
    EXACT.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// What the operator allows one job type to set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvPolicy {
    /// `job_types.<name>.allow_env`.
    pub allow_names: BTreeSet<String>,
    /// The `agents.<type>.env` pairs, when the job type holds the `agents` grant.
    pub operator_pairs: BTreeSet<(String, String)>,
}

impl EnvPolicy {
    /// Whether a job type may set `name` to `value`.
    pub fn allows(&self, name: &str, value: &str) -> bool {
        if self
            .operator_pairs
            .contains(&(name.to_owned(), value.to_owned()))
        {
            return true;
        }
        if is_loader_or_interpreter(name) {
            return false;
        }
        // A locale or terminal name with a `/` is a path glibc or ncurses would load data from.
        if matches!(name, "LANG" | "LC_ALL" | "TERM") && value.contains('/') {
            return false;
        }
        GUEST_SETTABLE.contains(&name) || self.allow_names.contains(name)
    }
}

/// Why a requested variable was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvRefusal {
    #[error("`{0}` is not a variable name")]
    BadName(String),
    #[error("`{0}` may not be set: BLOBHUB_* belong to the worker")]
    Worker(String),
    #[error("the value of `{0}` holds a secret of the worker")]
    Secret(String),
    #[error(
        "`{0}` may not be set by a job type (allowed: the names docs/job-types.md lists, `job_types.<name>.allow_env`, and the operator's own `agents.<type>.env` values)"
    )]
    NotAllowed(String),
}

/// The child's environment: `inherited` (the worker's) filtered, then `requested` checked
/// against `policy` and laid on top.
pub fn build(
    inherited: impl IntoIterator<Item = (String, String)>,
    secrets: &[String],
    requested: &[(String, String)],
    policy: &EnvPolicy,
) -> Result<Vec<(String, String)>, EnvRefusal> {
    let holds_secret = |v: &str| {
        secrets
            .iter()
            .any(|s| !s.is_empty() && v.contains(s.as_str()))
    };
    let mut env: Vec<(String, String)> = inherited
        .into_iter()
        .filter(|(k, v)| {
            !k.starts_with("BLOBHUB_")
                && !blobhub_agent_types::inherited_env_removed(k)
                && !holds_secret(v)
        })
        .collect();
    for (k, v) in requested {
        let valid = !k.is_empty() && !k.contains('=') && !k.contains('\0') && !v.contains('\0');
        if !valid {
            return Err(EnvRefusal::BadName(k.clone()));
        }
        if k.starts_with("BLOBHUB_") {
            return Err(EnvRefusal::Worker(k.clone()));
        }
        if holds_secret(v) {
            return Err(EnvRefusal::Secret(k.clone()));
        }
        if !policy.allows(k, v) {
            return Err(EnvRefusal::NotAllowed(k.clone()));
        }
        env.retain(|(name, _)| name != k);
        env.push((k.clone(), v.clone()));
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn policy() -> EnvPolicy {
        EnvPolicy {
            allow_names: ["MY_TOOL_MODE", "LD_PRELOAD", "PATH"]
                .map(String::from)
                .into(),
            operator_pairs: [
                ("ANTHROPIC_BASE_URL", "http://127.0.0.1:9"),
                ("PATH", "/opt/bin"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
        }
    }

    #[test]
    fn the_inherited_environment_loses_the_worker_s_variables_and_secrets() {
        let env = build(
            pairs(&[
                ("PATH", "/usr/bin"),
                ("BLOBHUB_API_KEY", "k"),
                ("SOMETHING", "xx-SECRET-xx"),
                ("CLAUDECODE", "1"),
                ("CLAUDE_CODE_ENTRYPOINT", "cli"),
                ("LANG", "C"),
            ]),
            &["SECRET".into()],
            &[],
            &EnvPolicy::default(),
        )
        .unwrap();
        assert_eq!(env, pairs(&[("PATH", "/usr/bin"), ("LANG", "C")]));
    }

    #[test]
    fn a_job_type_sets_only_allowed_names() {
        let base = pairs(&[("PATH", "/usr/bin")]);
        let ok = |req: &[(&str, &str)]| build(base.clone(), &[], &pairs(req), &policy());
        // The documented names, the operator's names, the operator's exact pairs.
        let env = ok(&[
            ("CODEX_HOME", "/state/codex"),
            ("MY_TOOL_MODE", "fast"),
            ("ANTHROPIC_BASE_URL", "http://127.0.0.1:9"),
            ("PATH", "/opt/bin"),
        ])
        .unwrap();
        assert!(env.contains(&("PATH".into(), "/opt/bin".into())));
        assert!(env.contains(&("CODEX_HOME".into(), "/state/codex".into())));
        assert_eq!(env.iter().filter(|(k, _)| k == "PATH").count(), 1);
        // The loader and interpreter variables: not even when the operator listed the name,
        // only with the operator's own value.
        for (k, v) in [
            ("LD_PRELOAD", "/state/evil.so"),
            ("PATH", "/state/bin"),
            ("NODE_OPTIONS", "--require /state/x.js"),
            ("PYTHONPATH", "/state"),
            ("BASH_ENV", "/state/rc"),
            ("ANTHROPIC_BASE_URL", "http://evil"),
            ("LANG", "/state/evil-locale"),
            ("TERM", "../state/terminfo"),
            ("UNLISTED", "1"),
        ] {
            assert_eq!(
                ok(&[(k, v)]),
                Err(EnvRefusal::NotAllowed(k.into())),
                "{k}={v}"
            );
        }
        assert_eq!(
            ok(&[("BLOBHUB_X", "1")]),
            Err(EnvRefusal::Worker("BLOBHUB_X".into()))
        );
        assert_eq!(ok(&[("A=B", "1")]), Err(EnvRefusal::BadName("A=B".into())));
        assert_eq!(ok(&[("", "1")]), Err(EnvRefusal::BadName("".into())));
        assert_eq!(
            build(
                base.clone(),
                &["k3y".into()],
                &pairs(&[("TERM", "x-k3y")]),
                &policy()
            ),
            Err(EnvRefusal::Secret("TERM".into()))
        );
    }
}
