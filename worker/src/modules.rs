//! Module apps on the worker: which modules this volunteer accepts, and the modules themselves,
//! fetched from the coordinator by SHA-256, checked against that hash, cached on disk and kept
//! compiled. A module whose bytes do not match the hash it was asked for is never run.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sparecycles_wasm::{ANY_MODULE, WasmApp, app_name, sha256_hex};

use crate::client::{Client, ClientError};

/// Fetch attempts before a module that cannot be downloaded fails the task.
const FETCH_ATTEMPTS: u32 = 3;

/// Which module apps this worker runs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ModulePolicy {
    /// Any module (the default): each runs in the sandbox.
    #[default]
    Any,
    /// Only built-in apps (`--no-modules`).
    Refuse,
    /// Only modules with these SHA-256 hashes (`--allow-module`).
    Only(BTreeSet<String>),
}

impl ModulePolicy {
    pub fn allows(&self, sha256: &str) -> bool {
        match self {
            ModulePolicy::Any => true,
            ModulePolicy::Refuse => false,
            ModulePolicy::Only(hashes) => hashes.contains(sha256),
        }
    }

    /// What to declare among the apps at enrollment, so the coordinator leases only module
    /// work this worker takes.
    pub fn declared_apps(&self) -> Vec<String> {
        match self {
            ModulePolicy::Any => vec![ANY_MODULE.to_owned()],
            ModulePolicy::Refuse => Vec::new(),
            ModulePolicy::Only(hashes) => hashes.iter().map(|h| app_name(h)).collect(),
        }
    }
}

/// The modules of this worker: a disk cache in the state dir and the compiled ones in memory.
pub(crate) struct Modules {
    dir: PathBuf,
    policy: ModulePolicy,
    compiled: Mutex<HashMap<String, Arc<WasmApp>>>,
}

impl Modules {
    pub(crate) fn new(dir: PathBuf, policy: ModulePolicy) -> Modules {
        Modules {
            dir,
            policy,
            compiled: Mutex::new(HashMap::new()),
        }
    }

    /// The module `sha256`, ready to compute; the message of an error becomes the task error.
    pub(crate) async fn get(&self, client: &Client, sha256: &str) -> Result<Arc<WasmApp>, String> {
        if !self.policy.allows(sha256) {
            return Err(format!(
                "module {sha256} is refused by this worker's preferences (--no-modules or \
                 --allow-module)"
            ));
        }
        let cached = self
            .compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sha256)
            .cloned();
        if let Some(app) = cached {
            return Ok(app);
        }
        let path = self.dir.join(format!("{sha256}.wasm"));
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) if sha256_hex(&bytes) == sha256 => bytes,
            found => {
                if found.is_ok() {
                    tracing::warn!(
                        module = sha256,
                        "cached module is corrupt; fetching it again"
                    );
                    let _ = tokio::fs::remove_file(&path).await;
                }
                let bytes = fetch(client, sha256).await?;
                let actual = sha256_hex(&bytes);
                if actual != sha256 {
                    tracing::warn!(
                        module = sha256,
                        actual,
                        "refusing a module that does not match its hash"
                    );
                    return Err(format!(
                        "refused module {sha256}: the bytes received have SHA-256 {actual}"
                    ));
                }
                let (dir, file, copy) = (self.dir.clone(), path.clone(), bytes.clone());
                let saved = tokio::task::spawn_blocking(move || {
                    std::fs::create_dir_all(&dir)?;
                    crate::atomic::write_atomic(&file, &copy, 0o644)
                })
                .await;
                if !matches!(saved, Ok(Ok(()))) {
                    // Only the cache is lost: the module is fetched again next time.
                    tracing::warn!(module = sha256, "cannot cache the module on disk");
                }
                bytes
            }
        };
        let app = tokio::task::spawn_blocking(move || WasmApp::new(&bytes))
            .await
            .map_err(|e| format!("compiling module {sha256}: {e}"))?
            .map_err(|e| format!("module {sha256}: {e}"))?;
        let app = Arc::new(app);
        self.compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sha256.to_owned(), app.clone());
        tracing::info!(module = sha256, "module ready");
        Ok(app)
    }
}

/// Downloads a module, retrying briefly when the coordinator is unavailable.
async fn fetch(client: &Client, sha256: &str) -> Result<Vec<u8>, String> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match client.module(sha256).await {
            Ok(bytes) => return Ok(bytes),
            Err(ClientError::Transient { reason, .. }) if attempt < FETCH_ATTEMPTS => {
                tracing::warn!(module = sha256, %reason, "cannot fetch module; retrying");
                tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
            }
            Err(e) => return Err(format!("cannot fetch module {sha256}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_declare_what_they_allow() {
        let h = "ab".repeat(32);
        assert!(ModulePolicy::Any.allows(&h));
        assert_eq!(ModulePolicy::Any.declared_apps(), vec!["wasm:*"]);
        assert!(!ModulePolicy::Refuse.allows(&h));
        assert!(ModulePolicy::Refuse.declared_apps().is_empty());
        let only = ModulePolicy::Only([h.clone()].into());
        assert!(only.allows(&h));
        assert!(!only.allows(&"cd".repeat(32)));
        assert_eq!(only.declared_apps(), vec![format!("wasm:{h}")]);
    }
}
