//! The worker's state tree (`~/.blobhub-worker/`, or `$BLOBHUB_WORKER_HOME`), its files, and the
//! one atomic-write routine that every YAML file the worker writes goes through.
//!
//! Layout (docs/operations.md):
//!
//! ```text
//! <tree>/credentials.yaml   api: {url, key}                       mode 0600, checked at start
//! <tree>/identity.yaml      user: {user_id, name, email, recorded_at}
//! <tree>/instance.yaml      the instance lock (see `instance_lock`)
//! <tree>/config.yaml        operator-authored, never written by the worker
//! <tree>/jobs/              per-section state of the job types
//! <tree>/plugins/           third-party job types (`<job_type>.wasm`)
//! ```

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// The environment variable that moves the whole state tree.
pub const HOME_ENV: &str = "BLOBHUB_WORKER_HOME";
/// The BlobHub API used when `login` is given no other URL.
pub const DEFAULT_API_URL: &str = "https://api.blobhub.io/v1";

/// Failures of reading or writing the state tree, grouped by file.
#[derive(Debug, thiserror::Error)]
pub enum StateTreeError {
    #[error("cannot locate the state tree: neither {HOME_ENV} nor HOME is set")]
    NoHome,
    #[error("{path} is missing")]
    CredentialsMissing { path: PathBuf },
    #[error("{path} has mode {mode:04o}; it must not be accessible to group or others")]
    CredentialsInsecure { path: PathBuf, mode: u32 },
    #[error("{path} is not a valid credentials file: {reason}")]
    CredentialsInvalid { path: PathBuf, reason: String },
    #[error("{path} is missing")]
    IdentityMissing { path: PathBuf },
    #[error("{path} is not a valid identity file: {reason}")]
    IdentityInvalid { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Where the state tree lives. Cheap to clone; creates nothing until asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateTree {
    root: PathBuf,
}

impl StateTree {
    /// `$BLOBHUB_WORKER_HOME` when set and non-empty, else `$HOME/.blobhub-worker`.
    pub fn from_env() -> Result<Self, StateTreeError> {
        if let Some(home) = std::env::var_os(HOME_ENV).filter(|v| !v.is_empty()) {
            return Ok(Self::at(home));
        }
        let home = std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .ok_or(StateTreeError::NoHome)?;
        Ok(Self::at(Path::new(&home).join(".blobhub-worker")))
    }

    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn credentials_path(&self) -> PathBuf {
        self.root.join("credentials.yaml")
    }
    pub fn identity_path(&self) -> PathBuf {
        self.root.join("identity.yaml")
    }
    pub fn instance_path(&self) -> PathBuf {
        self.root.join("instance.yaml")
    }
    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.yaml")
    }
    pub fn jobs_dir(&self) -> PathBuf {
        self.root.join("jobs")
    }
    pub fn plugins_dir(&self) -> PathBuf {
        self.root.join("plugins")
    }

    /// Creates the root, `jobs/` and `plugins/` with mode 0700 where missing.
    pub fn ensure_dirs(&self) -> io::Result<()> {
        create_private_dir(&self.root)?;
        create_private_dir(&self.jobs_dir())?;
        create_private_dir(&self.plugins_dir())
    }

    /// Reads `credentials.yaml`, refusing it when group or others have any permission bit.
    ///
    /// We are stricter than the reference's "world-readable": a group-readable key is also
    /// refused, because a shared group on a build machine is as good as world access.
    pub fn load_credentials(&self) -> Result<Credentials, StateTreeError> {
        let path = self.credentials_path();
        let meta = match fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StateTreeError::CredentialsMissing { path });
            }
            Err(e) => {
                return Err(StateTreeError::CredentialsInvalid {
                    path,
                    reason: e.to_string(),
                });
            }
        };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(StateTreeError::CredentialsInsecure { path, mode });
        }
        let invalid = |reason: String| StateTreeError::CredentialsInvalid {
            path: path.clone(),
            reason,
        };
        let text = fs::read_to_string(&path).map_err(|e| invalid(e.to_string()))?;
        // Parse errors are reported without the offending text: it may contain the key.
        let creds: Credentials = serde_yaml::from_str(&text).map_err(|e| {
            invalid(match e.location() {
                Some(loc) => format!("expected `api: {{url, key}}` (line {})", loc.line()),
                None => "expected `api: {url, key}`".to_owned(),
            })
        })?;
        if creds.api.url.trim().is_empty() || creds.api.key.expose().trim().is_empty() {
            return Err(invalid(
                "`api.url` and `api.key` must be non-empty".to_owned(),
            ));
        }
        Ok(creds)
    }

    /// Writes `credentials.yaml` with mode 0600 (atomically).
    pub fn save_credentials(&self, creds: &Credentials) -> Result<(), StateTreeError> {
        write_yaml_atomic(&self.credentials_path(), creds)
    }

    pub fn load_identity(&self) -> Result<Identity, StateTreeError> {
        let path = self.identity_path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StateTreeError::IdentityMissing { path });
            }
            Err(e) => {
                return Err(StateTreeError::IdentityInvalid {
                    path,
                    reason: e.to_string(),
                });
            }
        };
        let identity: Identity =
            serde_yaml::from_str(&text).map_err(|e| StateTreeError::IdentityInvalid {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if identity.user.user_id.trim().is_empty() {
            return Err(StateTreeError::IdentityInvalid {
                path,
                reason: "`user.user_id` is empty".to_owned(),
            });
        }
        Ok(identity)
    }

    pub fn save_identity(&self, identity: &Identity) -> Result<(), StateTreeError> {
        write_yaml_atomic(&self.identity_path(), identity)
    }
}

/// The API key. Its `Debug` and `Display` print `***` so that it cannot leak into logs or errors.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }
    /// The key itself, for the one place that needs it: the `X-API-Key` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// `credentials.yaml`: `api: {url, key}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub api: ApiCredentials,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiCredentials {
    pub url: String,
    pub key: ApiKey,
}

/// `identity.yaml`: the BlobHub user this tree acts as, recorded by `login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub user: IdentityUser,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityUser {
    pub user_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub recorded_at: String,
}

/// Now as UTC with second precision, `YYYY-MM-DDTHH:MM:SSZ` (the platform's timestamp format).
pub fn utc_now_seconds() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Creates `dir` and its missing parents, each with mode 0700 (the worker's folders hold
/// credentials, transcripts and compiled code: nobody else reads them).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Serialises `value` as YAML and writes it with [`write_atomic`].
pub fn write_yaml_atomic<T: Serialize + ?Sized>(
    path: &Path,
    value: &T,
) -> Result<(), StateTreeError> {
    let text = serde_yaml::to_string(value).map_err(|e| StateTreeError::Write {
        path: path.to_owned(),
        source: io::Error::other(e),
    })?;
    write_atomic(path, text.as_bytes()).map_err(|source| StateTreeError::Write {
        path: path.to_owned(),
        source,
    })
}

/// The write discipline of every file the worker owns: the bytes go to a sibling temporary file
/// created with mode 0600, which is then renamed over the target. A crash at any moment leaves
/// either the old or the new content, never a torn file. The parent is created with mode 0700.
///
/// There is no `fsync`: this protects against the process dying, not against power loss (the
/// reference makes the same trade).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    create_private_dir(parent)?;
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::other("atomic write target has no file name"))?;
    // A unique temporary name so that two writers of the same file never share one.
    let tmp = parent.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        ulid::Ulid::new()
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        // The umask may have removed bits but never adds them; set 0600 exactly anyway.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, StateTree) {
        let dir = tempfile::tempdir().unwrap();
        let tree = StateTree::at(dir.path().join("home"));
        (dir, tree)
    }

    #[test]
    fn atomic_write_creates_0600_file_and_0700_parent() {
        let (_dir, tree) = tree();
        let path = tree.root().join("sub/file.yaml");
        write_atomic(&path, b"a: 1\n").unwrap();
        write_atomic(&path, b"a: 2\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "a: 2\n");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn credentials_round_trip_and_permission_check() {
        let (_dir, tree) = tree();
        assert!(matches!(
            tree.load_credentials(),
            Err(StateTreeError::CredentialsMissing { .. })
        ));
        let creds = Credentials {
            api: ApiCredentials {
                url: "http://127.0.0.1:1/v1".into(),
                key: ApiKey::new("bhk_secret"),
            },
        };
        tree.save_credentials(&creds).unwrap();
        assert_eq!(tree.load_credentials().unwrap(), creds);
        for mode in [0o640, 0o604, 0o610] {
            fs::set_permissions(tree.credentials_path(), fs::Permissions::from_mode(mode)).unwrap();
            let err = tree.load_credentials().unwrap_err();
            assert!(
                matches!(err, StateTreeError::CredentialsInsecure { .. }),
                "{err}"
            );
        }
    }

    #[test]
    fn invalid_credentials_do_not_echo_the_key() {
        let (_dir, tree) = tree();
        write_atomic(&tree.credentials_path(), b"api: [bhk_secret_value\n").unwrap();
        let err = tree.load_credentials().unwrap_err();
        assert!(matches!(err, StateTreeError::CredentialsInvalid { .. }));
        assert!(!err.to_string().contains("bhk_secret_value"), "{err}");
    }

    #[test]
    fn api_key_debug_is_masked() {
        let creds = ApiCredentials {
            url: "u".into(),
            key: ApiKey::new("bhk_secret"),
        };
        assert!(!format!("{creds:?}").contains("bhk_secret"));
        assert_eq!(format!("{}", creds.key), "***");
    }

    #[test]
    fn identity_missing_and_invalid() {
        let (_dir, tree) = tree();
        assert!(matches!(
            tree.load_identity(),
            Err(StateTreeError::IdentityMissing { .. })
        ));
        write_atomic(&tree.identity_path(), b"user: 3\n").unwrap();
        assert!(matches!(
            tree.load_identity(),
            Err(StateTreeError::IdentityInvalid { .. })
        ));
    }
}
