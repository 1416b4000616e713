//! Tokens: generation, hashing, constant-time comparison, and the request extractors that
//! tell admins, submitters, workers and anonymous readers apart.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::http::error::ApiError;
use crate::state::AppState;
use crate::store::{JobRow, SubmitterRow, WorkerRow};
use uuid::Uuid;

/// A secret string whose `Debug` never prints it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time equality with a presented token. Both sides are hashed first so that
    /// neither the contents nor the length of the secret shows in the timing.
    pub fn matches(&self, presented: &str) -> bool {
        let ours = Sha256::digest(self.0.as_bytes());
        let theirs = Sha256::digest(presented.as_bytes());
        ours[..].ct_eq(&theirs[..]).into()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Prefix of submitter tokens; tells the lookup which table to search.
pub const SUBMITTER_PREFIX: &str = "scs_";
/// Prefix of worker tokens.
pub const WORKER_PREFIX: &str = "scw_";
/// Prefix of generated admin tokens.
pub const ADMIN_PREFIX: &str = "sca_";

/// A new random token: `prefix` + 256 random bits in hex.
pub fn generate_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

/// What the store keeps instead of a token. Tokens are 256-bit random, so a plain SHA-256 is
/// enough (no password stretching needed), and lookups by hash leak nothing useful.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The presented bearer token, if any. A malformed header is refused rather than ignored.
pub fn bearer(parts: &Parts) -> Result<Option<&str>, ApiError> {
    let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?;
    value
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(Some)
        .ok_or_else(|| ApiError::Unauthorized("Authorization must be \"Bearer <token>\"".into()))
}

/// Who is calling, from the bearer token.
#[derive(Debug)]
pub enum Caller {
    /// No token: the public, read-only views.
    Anonymous,
    /// The operator's token.
    Admin,
    /// A submitter token: submits jobs and manages its own.
    Submitter(SubmitterRow),
    /// An enrolled worker's token: leases, heartbeats and reports its own tasks.
    Worker(WorkerRow),
}

impl Caller {
    /// Resolves the caller; an unknown or revoked token is a 401 (never silently anonymous).
    pub async fn resolve(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
        let Some(token) = bearer(parts)? else {
            return Ok(Caller::Anonymous);
        };
        if state.admin_token().matches(token) {
            return Ok(Caller::Admin);
        }
        let hash = hash_token(token);
        if token.starts_with(SUBMITTER_PREFIX) {
            if let Some(s) = state.store().submitter_by_token_hash(&hash).await? {
                return Ok(Caller::Submitter(s));
            }
        } else if let Some(w) = state.store().worker_by_token_hash(&hash).await? {
            return Ok(Caller::Worker(w));
        }
        Err(ApiError::Unauthorized("unknown or revoked token".into()))
    }

    fn kind(&self) -> &'static str {
        match self {
            Caller::Anonymous => "no token",
            Caller::Admin => "the admin token",
            Caller::Submitter(_) => "a submitter token",
            Caller::Worker(_) => "a worker token",
        }
    }

    /// 401 without a token, 403 with a valid token of the wrong kind.
    fn refuse(&self, needed: &str) -> ApiError {
        match self {
            Caller::Anonymous => ApiError::Unauthorized(format!(
                "missing Authorization: Bearer <token> header; this needs {needed}"
            )),
            other => ApiError::Forbidden(format!(
                "this needs {needed}; the request carries {}",
                other.kind()
            )),
        }
    }
}

/// The caller presented the admin token.
#[derive(Debug)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Caller::resolve(parts, state).await? {
            Caller::Admin => Ok(Admin),
            other => Err(other.refuse("the admin token")),
        }
    }
}

/// Which jobs a caller may see or manage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every job (the admin; anonymous readers of the public views).
    All,
    /// Only the jobs this submitter owns.
    Owner(Uuid),
}

impl Scope {
    pub fn allows(&self, job: &JobRow) -> bool {
        match self {
            Scope::All => true,
            Scope::Owner(id) => job.owner == Some(*id),
        }
    }

    /// The owner new jobs get.
    pub fn owner(&self) -> Option<Uuid> {
        match self {
            Scope::All => None,
            Scope::Owner(id) => Some(*id),
        }
    }
}

/// A caller that may submit and manage jobs: the admin (all jobs) or a submitter (its own).
#[derive(Debug)]
pub struct JobManager(pub Scope);

impl FromRequestParts<AppState> for JobManager {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Caller::resolve(parts, state).await? {
            Caller::Admin => Ok(JobManager(Scope::All)),
            Caller::Submitter(s) => Ok(JobManager(Scope::Owner(s.id))),
            other => Err(other.refuse("the admin token or a submitter token")),
        }
    }
}

/// A reader of job views. They are public (the dashboard shows every job, like a BOINC
/// project's status pages); a submitter token narrows them to that submitter's own jobs.
#[derive(Debug)]
pub struct JobReader(pub Scope);

impl FromRequestParts<AppState> for JobReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Caller::resolve(parts, state).await? {
            Caller::Anonymous | Caller::Admin => Ok(JobReader(Scope::All)),
            Caller::Submitter(s) => Ok(JobReader(Scope::Owner(s.id))),
            worker @ Caller::Worker(_) => {
                Err(worker.refuse("no token, a submitter or the admin token"))
            }
        }
    }
}

/// The caller is an enrolled worker.
#[derive(Debug)]
pub struct WorkerAuth(pub WorkerRow);

impl FromRequestParts<AppState> for WorkerAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Caller::resolve(parts, state).await? {
            Caller::Worker(worker) if worker.banned => Err(ApiError::Forbidden(
                "this worker is banned from leasing work".into(),
            )),
            Caller::Worker(worker) => Ok(WorkerAuth(worker)),
            other => Err(other.refuse("a worker token (from enrollment)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashes_stable() {
        let a = generate_token("w_");
        let b = generate_token("w_");
        assert_ne!(a, b);
        assert_eq!(a.len(), 2 + 64);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), hash_token(&b));
    }

    #[test]
    fn secret_hides_itself() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert!(s.matches("hunter2"));
        assert!(!s.matches("hunter3"));
    }
}
