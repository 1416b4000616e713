//! The state every handler and background loop shares.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use sparecycles_apps::{App, Plan};
use sparecycles_wasm::WasmApp;
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
            // Enough for the first leases of a few workers; a job's other units are created
            // by the leases that reach them, while its first units compute. Written with the
            // job, 2,048 units held the submit (and every core waiting for work) for
            // milliseconds, and W2's 200 for 0.9 ms of its start (issue 8).
            initial_units: 64,
            // The lease that reaches the frontier creates the batch while the other calls wait
            // for the writer: 2,048 units took 8.5 ms, the lease latency tail (issue 8); 256, 1.
            batch_units: 256,
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
    /// Compiled modules by SHA-256 (compiling is the slow part; modules never change).
    modules: Mutex<HashMap<String, Arc<WasmApp>>>,
    transition: Notify,
    /// A report decided a job's last unit: the transitioner's next pass assembles it.
    job_done: std::sync::atomic::AtomicBool,
    /// Wakes leases waiting for work (new job, resumed job, tasks handed back or reissued).
    work: Notify,
    /// Per worker with a waiting lease: wakes it when its results came in or were validated,
    /// which frees or raises its quota. Only its own: through `work`, every idle worker's
    /// waiting lease woke at every report of the fleet and ran a lease transaction for nothing.
    room: Mutex<HashMap<Uuid, Arc<Notify>>>,
    /// Set at shutdown: waiting leases return at once so the server can drain.
    closing: std::sync::atomic::AtomicBool,
    /// Signaled once, at shutdown (presence lines wait on it, not on `work`: a fleet's held
    /// lines would otherwise all wake at every new task).
    shutdown: Notify,
    /// Open presence requests per worker (see `http::work::presence`).
    present: Mutex<HashMap<Uuid, usize>>,
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
                modules: Mutex::new(HashMap::new()),
                transition: Notify::new(),
                job_done: Default::default(),
                work: Notify::new(),
                room: Mutex::new(HashMap::new()),
                closing: Default::default(),
                shutdown: Notify::new(),
                present: Mutex::new(HashMap::new()),
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

    /// A report decided a job's last unit: wakes the transitioner to assemble it.
    pub fn job_done(&self) {
        self.inner.job_done.store(true, Ordering::Release);
        self.inner.transition.notify_one();
    }

    /// Whether a report decided a job's last unit since the last call.
    pub fn take_job_done(&self) -> bool {
        self.inner.job_done.swap(false, Ordering::AcqRel)
    }

    pub async fn transitioner_woken(&self) {
        self.inner.transition.notified().await;
    }

    /// Tells leases waiting for work that there may be some now.
    pub fn work_available(&self) {
        self.inner.work.notify_waiters();
    }

    /// A future that resolves at the next [`AppState::work_available`] (or shutdown); call
    /// `enable` on it before looking for work, so a signal in between is not missed.
    pub fn work_signal(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.work.notified()
    }

    /// What a lease of `worker` waits on, besides [`AppState::work_signal`], for its quota to
    /// leave room; registered while the returned handle lives.
    pub fn room_signal(&self, worker: Uuid) -> RoomSignal {
        let mut room = self.inner.room.lock().unwrap_or_else(|e| e.into_inner());
        let notify = room.entry(worker).or_default().clone();
        RoomSignal {
            state: self.clone(),
            worker,
            notify,
        }
    }

    /// Wakes these workers' waiting leases: their quotas may have room now.
    pub fn room_available(&self, workers: impl IntoIterator<Item = Uuid>) {
        let room = self.inner.room.lock().unwrap_or_else(|e| e.into_inner());
        for worker in workers {
            if let Some(notify) = room.get(&worker) {
                notify.notify_waiters();
            }
        }
    }

    /// Whether the server is shutting down.
    pub fn closing(&self) -> bool {
        self.inner
            .closing
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Resolves once the server is shutting down.
    pub async fn closed(&self) {
        let signal = self.inner.shutdown.notified();
        tokio::pin!(signal);
        signal.as_mut().enable();
        if !self.closing() {
            signal.await;
        }
    }

    /// Counts a new presence request of `worker`, unless it already has `max` open.
    pub fn open_presence(&self, worker: Uuid, max: usize) -> bool {
        let mut present = self.inner.present.lock().unwrap_or_else(|e| e.into_inner());
        let count = present.entry(worker).or_default();
        if *count >= max {
            return false;
        }
        *count += 1;
        true
    }

    /// Notes that one of `worker`'s presence requests ended.
    pub fn close_presence(&self, worker: Uuid) {
        let mut present = self.inner.present.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = present.get_mut(&worker) {
            *count -= 1;
            if *count == 0 {
                present.remove(&worker);
            }
        }
    }

    /// Whether the worker has a presence request open on this coordinator.
    pub fn is_present(&self, worker: Uuid) -> bool {
        self.inner
            .present
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&worker)
    }

    /// Starts shutting down: event streams end, waiting leases return.
    pub fn begin_shutdown(&self) {
        self.inner
            .closing
            .store(true, std::sync::atomic::Ordering::Release);
        self.inner.hub.close();
        self.inner.work.notify_waiters();
        self.inner.shutdown.notify_waiters();
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
        self.job_info_of(&job).await
    }

    /// Like [`AppState::job_info`], but a stored job that can no longer be run (its app is
    /// gone, or its module no longer compiles with this coordinator) is failed with the reason
    /// and `None` returned: leases, reports, the transitioner and assembly then pass it by
    /// instead of failing on it again and again.
    pub async fn runnable_job(&self, job_id: Uuid) -> Result<Option<Arc<JobInfo>>, ApiError> {
        let info = self.job_info(job_id).await;
        self.or_fail(job_id, info).await
    }

    /// Like [`AppState::runnable_job`], from a row already at hand.
    pub async fn runnable_job_of(&self, job: &JobRow) -> Result<Option<Arc<JobInfo>>, ApiError> {
        let info = self.job_info_of(job).await;
        self.or_fail(job.id, info).await
    }

    async fn or_fail(
        &self,
        job_id: Uuid,
        info: Result<Arc<JobInfo>, ApiError>,
    ) -> Result<Option<Arc<JobInfo>>, ApiError> {
        match info {
            Ok(info) => Ok(Some(info)),
            // Store errors are passing trouble; anything else is the stored job itself.
            Err(ApiError::Internal(e))
                if e.downcast_ref::<crate::store::StoreError>().is_none() =>
            {
                let reason = format!("this job can no longer be run: {e:#}");
                tracing::error!(job = %job_id, %reason, "failing the job");
                self.store()
                    .fail_job(job_id, &reason, sparecycles_protocol::now_millis())
                    .await?;
                self.emit(sparecycles_protocol::dashboard::Event::JobChanged {
                    job_id,
                    state: sparecycles_protocol::JobState::Failed,
                });
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Like [`AppState::job_info`], from a row already at hand.
    pub async fn job_info_of(&self, job: &JobRow) -> Result<Arc<JobInfo>, ApiError> {
        if let Some(info) = self.cached(job.id) {
            return Ok(info);
        }
        let app = self.app(&job.app).await?.ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!("stored job names unknown app {}", job.app))
        })?;
        let plan: Arc<dyn Plan> = Arc::from(
            plan_of(app.clone(), job.params.clone())
                .await?
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

    /// The app called `name`: a built-in one, or a stored module (compiled once, then cached).
    /// `None` when there is no such app or module.
    pub async fn app(&self, name: &str) -> Result<Option<AppRef>, ApiError> {
        if let Some(app) = sparecycles_apps::find(name) {
            return Ok(Some(AppRef::Builtin(app)));
        }
        let Some(sha256) = sparecycles_wasm::module_hash(name) else {
            return Ok(None);
        };
        let cached = self
            .inner
            .modules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sha256)
            .cloned();
        if let Some(module) = cached {
            return Ok(Some(AppRef::Module(module)));
        }
        let Some(bytes) = self.store().module(sha256).await? else {
            return Ok(None);
        };
        let compiled = tokio::task::spawn_blocking(move || WasmApp::new(&bytes))
            .await
            .map_err(|e| ApiError::Internal(e.into()))?
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("stored module {sha256}: {e}")))?;
        if compiled.hash() != sha256 {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "stored module {sha256} has the hash {}",
                compiled.hash()
            )));
        }
        let module = Arc::new(compiled);
        self.cache_module(module.clone());
        Ok(Some(AppRef::Module(module)))
    }

    /// Keeps a compiled module for the jobs that will name it.
    pub fn cache_module(&self, module: Arc<WasmApp>) {
        self.inner
            .modules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(module.hash().to_owned(), module);
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
    pub app: AppRef,
    pub params: serde_json::Value,
    pub redundancy: sparecycles_protocol::Redundancy,
    pub plan: Arc<dyn Plan>,
}

/// A job's app: built in, or a module; either way used through the [`App`] trait.
#[derive(Clone)]
pub enum AppRef {
    Builtin(&'static dyn App),
    Module(Arc<WasmApp>),
}

impl std::ops::Deref for AppRef {
    type Target = dyn App;

    fn deref(&self) -> &(dyn App + 'static) {
        match self {
            AppRef::Builtin(app) => *app,
            AppRef::Module(module) => module.as_ref(),
        }
    }
}

/// Splits a job's parameters off the async runtime (a module's `sc_units` is CPU work).
pub async fn plan_of(
    app: AppRef,
    params: serde_json::Value,
) -> Result<Result<Box<dyn Plan>, sparecycles_apps::AppError>, ApiError> {
    tokio::task::spawn_blocking(move || app.plan(&params))
        .await
        .map_err(|e| ApiError::Internal(e.into()))
}

/// A worker's registration for [`AppState::room_available`]; see [`AppState::room_signal`].
pub struct RoomSignal {
    state: AppState,
    worker: Uuid,
    notify: Arc<Notify>,
}

impl RoomSignal {
    /// Resolves at the worker's next [`AppState::room_available`]; `enable` it before looking,
    /// as with [`AppState::work_signal`].
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

impl Drop for RoomSignal {
    fn drop(&mut self) {
        let mut room = self
            .state
            .inner
            .room
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // The map's reference and this one: no other lease of the worker waits.
        if Arc::strong_count(&self.notify) <= 2 {
            room.remove(&self.worker);
        }
    }
}
