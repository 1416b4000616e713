//! The state every handler and background loop shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sparecycles_apps::{App, Plan};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::auth::Secret;
use crate::http::error::ApiError;
use crate::store::{JobRow, Store};

/// Tunables of a running coordinator.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Units created at submission; the rest are created as leases reach them.
    pub initial_units: u64,
    /// Units created at once when a lease reaches the end of the created ones.
    pub batch_units: u64,
    /// How often the transitioner runs when nothing wakes it.
    pub transition_interval: std::time::Duration,
    /// A worker silent this long is suspected: its tasks get spares before their deadline.
    pub suspect_after: std::time::Duration,
    /// Adaptive replication and reputation.
    pub trust: crate::scheduler::trust::TrustPolicy,
    /// When set, enrolling needs this key (the project's, handed to its volunteers).
    pub enroll_key: Option<Secret>,
    /// Requests per second per token and per client IP.
    pub rate_limits: crate::http::limit::RateLimits,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            initial_units: 2048,
            batch_units: 2048,
            transition_interval: std::time::Duration::from_millis(500),
            suspect_after: std::time::Duration::from_secs(60),
            trust: Default::default(),
            enroll_key: None,
            rate_limits: Default::default(),
        }
    }
}

/// Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    admin_token: Secret,
    settings: Settings,
    jobs: Mutex<HashMap<Uuid, Arc<JobInfo>>>,
    transition: Notify,
    hub: crate::events::Hub,
    limiters: crate::http::limit::Limiters,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, admin_token: Secret, settings: Settings) -> Self {
        AppState {
            inner: Arc::new(Inner {
                store,
                admin_token,
                jobs: Mutex::new(HashMap::new()),
                transition: Notify::new(),
                hub: crate::events::Hub::default(),
                limiters: crate::http::limit::Limiters::new(settings.rate_limits),
                settings,
            }),
        }
    }

    pub fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    pub fn admin_token(&self) -> &Secret {
        &self.inner.admin_token
    }

    /// Live events for the dashboard.
    pub fn hub(&self) -> &crate::events::Hub {
        &self.inner.hub
    }

    pub fn emit(&self, event: sparecycles_protocol::dashboard::Event) {
        self.inner.hub.emit(event);
    }

    pub fn limiters(&self) -> &crate::http::limit::Limiters {
        &self.inner.limiters
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Wakes the transitioner (after results arrive or leases come up short).
    pub fn wake_transitioner(&self) {
        self.inner.transition.notify_one();
    }

    pub async fn transitioner_woken(&self) {
        self.inner.transition.notified().await;
    }

    /// A job's app, parameters and split, parsed once and cached (they never change).
    pub async fn job_info(&self, job_id: Uuid) -> Result<Arc<JobInfo>, ApiError> {
        if let Some(info) = self.cached(job_id) {
            return Ok(info);
        }
        let job = self
            .store()
            .job(job_id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no job with id {job_id}")))?;
        self.job_info_of(&job)
    }

    /// Like [`AppState::job_info`], from a row already at hand.
    pub fn job_info_of(&self, job: &JobRow) -> Result<Arc<JobInfo>, ApiError> {
        if let Some(info) = self.cached(job.id) {
            return Ok(info);
        }
        let app = app_for(&job.app)?;
        let plan: Arc<dyn Plan> = Arc::from(
            app.plan(&job.params)
                .map_err(|e| ApiError::Internal(anyhow::anyhow!("stored job {}: {e}", job.id)))?,
        );
        let info = Arc::new(JobInfo {
            app,
            params: job.params.clone(),
            redundancy: job.redundancy,
            plan,
        });
        self.inner
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job.id, info.clone());
        Ok(info)
    }

    fn cached(&self, job_id: Uuid) -> Option<Arc<JobInfo>> {
        self.inner
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&job_id)
            .cloned()
    }

    /// Drops the cached info of a finished job.
    pub fn forget_job(&self, job: Uuid) {
        self.inner
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&job);
    }
}

/// What the coordinator keeps in memory about a live job.
pub struct JobInfo {
    pub app: &'static dyn App,
    pub params: serde_json::Value,
    pub redundancy: sparecycles_protocol::Redundancy,
    pub plan: Arc<dyn Plan>,
}

/// The built-in app a stored job names.
pub fn app_for(name: &str) -> Result<&'static dyn App, ApiError> {
    sparecycles_apps::find(name)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("stored job names unknown app {name}")))
}
