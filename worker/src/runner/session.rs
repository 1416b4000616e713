//! This worker's identity at its coordinator: stored credentials, enrollment and re-enrollment.
//!
//! The loops share one `Session`. When one of them meets a 401 it asks for a re-enrollment
//! naming the generation of the client that failed; concurrent askers of the same generation
//! produce a single enrollment.

use std::sync::{Arc, RwLock};

use sparecycles_protocol::EnrollRequest;
use tokio::sync::Mutex;
use uuid::Uuid;

use super::stop::Stop;
use crate::backoff::Backoff;
use crate::client::{Client, ClientError, Transport, normalize_base_url};
use crate::state::{Credentials, StateDir};

/// Why enrollment did not produce credentials.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("enrollment refused by the coordinator: {0}")]
    Refused(ClientError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("could not store the credentials: {0}")]
    State(#[from] crate::state::StateError),
    #[error("stopped before enrollment completed")]
    Stopped,
}

/// Enrolls once at `coordinator` and stores the credentials. Retries transient failures with
/// backoff until `stop` (then [`EnrollError::Stopped`]) unless `retry` is false.
pub(crate) async fn enroll(
    coordinator: &str,
    state: &StateDir,
    request: &EnrollRequest,
    transport: &Transport,
    retry: bool,
    stop: &Stop,
) -> Result<Credentials, EnrollError> {
    let client = Client::with_transport(coordinator, None, transport)?;
    let mut backoff = Backoff::default();
    loop {
        let answer = tokio::select! {
            answer = client.enroll(request) => answer,
            _ = stop.wait() => return Err(EnrollError::Stopped),
        };
        match answer {
            Ok(enrolled) => {
                let credentials = Credentials {
                    coordinator: client.base_url().to_owned(),
                    worker_id: enrolled.worker_id,
                    token: enrolled.token,
                    apps: request.apps.clone(),
                };
                state.save_credentials(&credentials)?;
                tracing::info!(
                    worker_id = %credentials.worker_id,
                    coordinator = %credentials.coordinator,
                    "enrolled"
                );
                return Ok(credentials);
            }
            Err(ClientError::Transient {
                retry_after,
                reason,
            }) if retry => {
                let delay = backoff.next_delay_after(retry_after);
                tracing::warn!(%reason, retry_in = ?delay, "enrollment failed; retrying");
                if !stop.sleep(delay).await {
                    return Err(EnrollError::Stopped);
                }
            }
            Err(e @ (ClientError::Refused(_) | ClientError::Unauthorized)) => {
                return Err(EnrollError::Refused(e));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Stored credentials if they belong to `coordinator` and were enrolled with `apps`; a corrupt
/// file counts as none.
pub(crate) fn stored_credentials(
    state: &StateDir,
    coordinator: &str,
    apps: &[String],
) -> Option<Credentials> {
    let base = normalize_base_url(coordinator);
    match state.load_credentials() {
        Ok(Some(creds))
            if creds.coordinator == base && !creds.apps.is_empty() && creds.apps != apps =>
        {
            // The coordinator leases by the apps declared at enrollment: a volunteer who changed
            // their module preferences must not be sent the work they now refuse.
            tracing::info!(
                old = ?creds.apps,
                new = ?apps,
                "the apps this worker takes changed; enrolling anew"
            );
            None
        }
        Ok(Some(creds)) if creds.coordinator == base => Some(creds),
        Ok(Some(creds)) => {
            tracing::info!(
                old = %creds.coordinator,
                new = %base,
                "coordinator changed; enrolling anew"
            );
            None
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "ignoring unreadable credentials; enrolling anew");
            None
        }
    }
}

/// The credentials in use, as a client, numbered so that a 401 replaces them only once.
struct Current {
    generation: u64,
    client: Arc<Client>,
    worker_id: Uuid,
}

/// The current client (with its token) and how to replace it.
pub(crate) struct Session {
    coordinator: String,
    state: StateDir,
    request: EnrollRequest,
    transport: Transport,
    current: RwLock<Current>,
    enrolling: Mutex<()>,
}

impl Session {
    /// Loads the stored credentials for `coordinator`, enrolling first if there are none.
    pub(crate) async fn start(
        coordinator: &str,
        state: StateDir,
        request: EnrollRequest,
        transport: Transport,
        stop: &Stop,
    ) -> Result<Session, EnrollError> {
        let credentials = match stored_credentials(&state, coordinator, &request.apps) {
            Some(creds) => {
                tracing::info!(worker_id = %creds.worker_id, coordinator = %creds.coordinator, "using stored credentials");
                creds
            }
            None => enroll(coordinator, &state, &request, &transport, true, stop).await?,
        };
        let client = Client::with_transport(
            &credentials.coordinator,
            Some(credentials.token),
            &transport,
        )?;
        Ok(Session {
            coordinator: coordinator.to_owned(),
            state,
            request,
            transport,
            current: RwLock::new(Current {
                generation: 0,
                client: Arc::new(client),
                worker_id: credentials.worker_id,
            }),
            enrolling: Mutex::new(()),
        })
    }

    /// The client to use now, and its generation (to pass to [`reenroll`](Self::reenroll)).
    pub(crate) fn client(&self) -> (u64, Arc<Client>) {
        let guard = self.current.read().unwrap_or_else(|e| e.into_inner());
        (guard.generation, guard.client.clone())
    }

    /// The id the coordinator knows this worker by.
    pub(crate) fn worker_id(&self) -> Uuid {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .worker_id
    }

    /// Replaces credentials the coordinator rejected (generation `failed`). Returns `true` when
    /// this call enrolled, `false` when another caller already had. `forget_old` runs once the
    /// new credentials are stored, just before any loop can use them, so that it can drop what
    /// belonged to the old identity without racing leases made under the new one.
    pub(crate) async fn reenroll(
        &self,
        failed: u64,
        stop: &Stop,
        forget_old: impl FnOnce(),
    ) -> Result<bool, EnrollError> {
        let _one_at_a_time = self.enrolling.lock().await;
        if self.client().0 != failed {
            return Ok(false);
        }
        tracing::warn!(
            coordinator = %self.coordinator,
            "the coordinator no longer knows this worker (401); enrolling again"
        );
        let credentials = enroll(
            &self.coordinator,
            &self.state,
            &self.request,
            &self.transport,
            true,
            stop,
        )
        .await?;
        let client = Client::with_transport(
            &credentials.coordinator,
            Some(credentials.token),
            &self.transport,
        )?;
        forget_old();
        let mut guard = self.current.write().unwrap_or_else(|e| e.into_inner());
        *guard = Current {
            generation: failed + 1,
            client: Arc::new(client),
            worker_id: credentials.worker_id,
        };
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_apps_mean_a_new_enrollment() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let url = "http://127.0.0.1:9";
        let with = |apps: Vec<String>| Credentials {
            coordinator: url.into(),
            worker_id: Uuid::now_v7(),
            token: "t".into(),
            apps,
        };
        let modules = vec!["prime-count".to_owned(), "wasm:*".to_owned()];
        let builtin = vec!["prime-count".to_owned()];
        state.save_credentials(&with(modules.clone())).unwrap();
        assert!(stored_credentials(&state, url, &modules).is_some());
        assert!(stored_credentials(&state, url, &builtin).is_none());
        // Files from before apps were recorded are kept.
        state.save_credentials(&with(Vec::new())).unwrap();
        assert!(stored_credentials(&state, url, &builtin).is_some());
    }
}
