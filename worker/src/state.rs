//! The worker's state directory: its credentials, and where the outbox lives.
//!
//! `credentials.json` holds the coordinator URL, the worker id and the secret token. It is
//! written atomically with mode 0600, since the token is all it takes to act as this worker.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::atomic::{create_private_dir, write_atomic};

const CREDENTIALS_FILE: &str = "credentials.json";
const OUTBOX_DIR: &str = "outbox";

/// Errors reading or writing the state directory.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not valid credentials JSON: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// What enrollment gave this worker, and where.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// Base URL of the coordinator that issued them (normalized).
    pub coordinator: String,
    pub worker_id: Uuid,
    pub token: String,
    /// The apps declared at enrollment (empty in files written before they were recorded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("coordinator", &self.coordinator)
            .field("worker_id", &self.worker_id)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// The worker's state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Opens (and creates, private to this user) the state directory at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<StateDir, StateError> {
        let root = root.into();
        create_private_dir(&root).map_err(|source| StateError::Io {
            path: root.clone(),
            source,
        })?;
        Ok(StateDir { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn credentials_path(&self) -> PathBuf {
        self.root.join(CREDENTIALS_FILE)
    }

    pub fn outbox_dir(&self) -> PathBuf {
        self.root.join(OUTBOX_DIR)
    }

    /// The stored credentials, or `None` before the first enrollment.
    pub fn load_credentials(&self) -> Result<Option<Credentials>, StateError> {
        let path = self.credentials_path();
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Io { path, source }),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StateError::Corrupt { path, source })
    }

    /// Replaces the stored credentials, atomically, readable by this user only.
    pub fn save_credentials(&self, credentials: &Credentials) -> Result<(), StateError> {
        let path = self.credentials_path();
        let mut bytes = serde_json::to_vec_pretty(credentials).unwrap_or_default();
        bytes.push(b'\n');
        write_atomic(&path, &bytes, 0o600).map_err(|source| StateError::Io { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn credentials_round_trip_private() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path().join("state")).unwrap();
        assert_eq!(state.load_credentials().unwrap(), None);
        let creds = Credentials {
            coordinator: "http://127.0.0.1:8080".into(),
            worker_id: Uuid::now_v7(),
            token: "s3cret".into(),
            apps: vec!["prime-count".into()],
        };
        state.save_credentials(&creds).unwrap();

        // A restart opens the same directory anew.
        let again = StateDir::open(dir.path().join("state")).unwrap();
        assert_eq!(again.load_credentials().unwrap(), Some(creds.clone()));
        let mode = std::fs::metadata(again.credentials_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(again.root())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o077, 0, "state dir readable by others");
        assert!(!format!("{creds:?}").contains("s3cret"));
    }

    #[test]
    fn corrupt_credentials_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        std::fs::write(state.credentials_path(), b"{not json").unwrap();
        assert!(matches!(
            state.load_credentials(),
            Err(StateError::Corrupt { .. })
        ));
    }
}
