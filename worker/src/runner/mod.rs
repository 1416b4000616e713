//! `worker run`: enroll if needed, then lease, compute, heartbeat and report until shutdown.
//!
//! Five async loops share one [`Shared`]: the lease loop fills a small buffer of tasks, the
//! dispatcher hands them one at a time to the compute thread (the only place CPU work runs) and
//! stores each result in the outbox, the report loop delivers the outbox, the heartbeat loop
//! reports progress and applies aborts, and the presence loop keeps a request open so that the
//! coordinator notices at once when this process dies.

mod compute;
mod config;
mod control;
mod dispatch;
mod heartbeat;
mod lease;
mod presence;
mod report;
mod session;
mod stop;
mod tasks;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};

pub use config::{EnrollKey, RunConfig, all_cores, default_name, default_state_dir};
pub use report::MAX_REPORT_BYTES;
pub use session::EnrollError;

use crate::backoff::BACKOFF_CAP;
use crate::checkpoint::Checkpoints;
use crate::client::Client;
use crate::outbox::Outbox;
use crate::state::{Credentials, StateDir};
use session::Session;
use sparecycles_protocol::now_millis;
use sparecycles_protocol::work::ReleaseRequest;
use stop::Stop;
use tasks::Tasks;
use uuid::Uuid;

/// How long handing back leases may take at shutdown.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(3);

/// What the loops share.
pub(crate) struct Shared {
    config: RunConfig,
    session: Session,
    tasks: Tasks,
    stop: Stop,
    checkpoints: Checkpoints,
    control: control::Control,
    /// Results not yet delivered; the lease loop names their tasks as still held.
    outbox: Outbox,
    modules: crate::modules::Modules,
    reports: report::ReportGate,
    /// Results of units just computed, on their way to the report loop.
    held: report::HeldResults,
    /// The unit shutdown interrupted, if any.
    unfinished: Mutex<Option<Uuid>>,
}

impl Shared {
    fn set_unfinished(&self, task_id: Uuid) {
        *self.unfinished.lock().unwrap_or_else(|e| e.into_inner()) = Some(task_id);
    }

    /// Handles a 401 met with credentials of `generation`: enrolls again (once, however many
    /// loops met it) and drops the tasks leased to the old identity, which can no longer be
    /// reported. Returns `false` when shutdown came first.
    async fn reauthenticate(&self, generation: u64) -> bool {
        let forget_old = || self.tasks.clear();
        match self
            .session
            .reenroll(generation, &self.stop, forget_old)
            .await
        {
            Ok(_) => true,
            Err(EnrollError::Stopped) => false,
            Err(e) => {
                tracing::error!(error = %e, "re-enrollment failed; will try again");
                self.stop.sleep(BACKOFF_CAP).await
            }
        }
    }
}

/// Runs the worker until `shutdown` resolves: then stops leasing, has the running unit save a
/// checkpoint and stop, hands the leases it will not compute back to the coordinator, tries
/// once (briefly) to deliver the outbox, and returns `Ok`. Results still undelivered stay in
/// the outbox, and checkpointed units in the state dir, for the next run.
pub async fn run(
    config: RunConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    check(&config)?;
    let state = StateDir::open(&config.state_dir)
        .with_context(|| format!("state dir {}", config.state_dir.display()))?;
    let outbox = Outbox::open(state.outbox_dir())
        .with_context(|| format!("outbox {}", state.outbox_dir().display()))?;
    let state_root = state.root().to_owned();
    let checkpoints = Checkpoints::open(state.root().join("checkpoints"))
        .context("opening the checkpoint dir")?;
    let idle = crate::idle::from_spec(config.idle_source.as_deref()).map_err(anyhow::Error::msg)?;
    let (stop_tx, stop) = stop::channel();
    tokio::pin!(shutdown);

    // Enrolling may wait for the coordinator to come up; shutdown meanwhile is a clean stop.
    let session = tokio::select! {
        session = Session::start(&config.coordinator, state, config.enroll_request(), config.transport.clone(), &stop) => {
            session.context("enrollment failed")?
        }
        _ = &mut shutdown => return Ok(()),
    };
    let initial = outbox.list().context("reading the outbox")?;
    if !initial.is_empty() {
        tracing::info!(
            count = initial.len(),
            "re-sending results from a previous run"
        );
    }

    tracing::info!(
        worker_id = %session.worker_id(),
        coordinator = %config.coordinator,
        cores = config.cores,
        apps = ?config.apps(),
        "worker running"
    );
    let resumable = checkpoints
        .resumable(now_millis())
        .context("reading checkpoints")?;
    let modules = crate::modules::Modules::new(state_root.join("modules"), config.modules.clone());
    let shared = Arc::new(Shared {
        modules,
        tasks: Tasks::new(config.prefetch),
        config,
        session,
        stop,
        checkpoints,
        control: control::Control::default(),
        outbox: outbox.clone(),
        reports: Default::default(),
        held: Default::default(),
        unfinished: Mutex::new(None),
    });
    if !resumable.is_empty() {
        tracing::info!(count = resumable.len(), "resuming checkpointed units");
        shared
            .tasks
            .add_front(resumable.into_iter().map(|s| s.task).collect());
    }
    shared.tasks.set_paused(true);
    let control = control::spawn(shared.clone(), idle, outbox.clone())
        .context("starting the control thread")?;
    if let Some(port) = shared.config.status_port {
        start_page(&shared, &outbox, port).await?;
    }
    let (result_tx, result_rx) = tokio::sync::mpsc::unbounded_channel();
    let (settled_tx, settled_rx) = tokio::sync::mpsc::unbounded_channel();
    let compute =
        compute::spawn(shared.clone(), settled_tx).context("starting the compute pool")?;
    let lease = tokio::spawn(lease::lease_loop(shared.clone()));
    let heartbeat = tokio::spawn(heartbeat::heartbeat_loop(shared.clone()));
    let presence = tokio::spawn(presence::presence_loop(shared.clone()));
    let mut dispatcher = tokio::spawn(dispatch::dispatch_loop(
        shared.clone(),
        compute,
        settled_rx,
        result_tx,
    ));
    let reporter = tokio::spawn(report::report_loop(
        shared.clone(),
        outbox,
        initial,
        result_rx,
    ));

    let failed = tokio::select! {
        _ = &mut shutdown => None,
        ended = &mut dispatcher => Some(ended),
    };
    tracing::info!("stopping: no more leases, checkpointing the running unit");
    stop_tx.stop();
    let mut buffered = shared.tasks.wind_down();
    let _ = lease.await;
    // A lease answered as the stop came was buffered after the first look.
    buffered.extend(shared.tasks.wind_down());
    let _ = heartbeat.await;
    let _ = presence.await;
    let dispatched = match failed {
        Some(ended) => ended,
        None => dispatcher.await,
    };
    release_leases(&shared, buffered).await;
    let _ = tokio::task::spawn_blocking(move || control.join()).await;
    // The reporter ends once the dispatcher has, after at most one bounded flush.
    let flush = report::FLUSH_TIMEOUT + Duration::from_secs(1);
    if tokio::time::timeout(flush, reporter).await.is_err() {
        tracing::warn!("report loop did not stop in time");
    }
    match dispatched {
        Ok(Ok(())) => {
            tracing::info!("stopped");
            Ok(())
        }
        Ok(Err(e)) => Err(e.into()),
        Err(e) => Err(anyhow::anyhow!("dispatcher panicked: {e}")),
    }
}

/// Hands back the tasks this run leased but will not compute: the buffered ones and an
/// interrupted one without a checkpoint. A checkpointed unit is kept, to be resumed by the
/// next run (or reissued by the coordinator when its deadline passes).
async fn release_leases(shared: &Shared, buffered: Vec<sparecycles_protocol::TaskAssignment>) {
    let unfinished = *shared.unfinished.lock().unwrap_or_else(|e| e.into_inner());
    let tasks: Vec<Uuid> = buffered
        .iter()
        .map(|t| t.task_id)
        .chain(unfinished)
        .filter(|id| shared.checkpoints.load(*id).is_none())
        .collect();
    if tasks.is_empty() {
        return;
    }
    let (_, client) = shared.session.client();
    let request = ReleaseRequest { tasks };
    match tokio::time::timeout(RELEASE_TIMEOUT, client.release(&request)).await {
        Ok(Ok(answer)) => tracing::info!(
            released = answer.released.len(),
            "handed unstarted tasks back to the coordinator"
        ),
        Ok(Err(e)) => tracing::warn!(error = %e, "could not hand tasks back; they will time out"),
        Err(_) => tracing::warn!("handing tasks back timed out; they will time out"),
    }
}

/// Serves the local status page on 127.0.0.1:`port`.
async fn start_page(shared: &Arc<Shared>, outbox: &Outbox, port: u16) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("status page on 127.0.0.1:{port}"))?;
    let addr = listener.local_addr()?;
    let token = crate::status::page_token(&shared.config.state_dir).context("page token")?;
    *shared
        .control
        .page
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(format!("http://{addr}/"));
    tracing::info!(%addr, "status page listening");
    let page = Arc::new(control::Page {
        shared: shared.clone(),
        outbox: outbox.clone(),
    });
    let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stopped.clone();
    let stop = shared.stop.clone();
    tokio::spawn(async move {
        stop.wait().await;
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    tokio::spawn(crate::status::serve_page(listener, token, page, stopped));
    Ok(())
}

/// `worker enroll`: returns the stored credentials for this coordinator, or enrolls (one
/// attempt, no retry) and stores new ones. `force` enrolls even when credentials exist.
pub async fn enroll(config: &RunConfig, force: bool) -> anyhow::Result<Credentials> {
    check(config)?;
    let state = StateDir::open(&config.state_dir)
        .with_context(|| format!("state dir {}", config.state_dir.display()))?;
    if !force
        && let Some(existing) =
            session::stored_credentials(&state, &config.coordinator, &config.apps())
    {
        tracing::info!(worker_id = %existing.worker_id, "already enrolled");
        return Ok(existing);
    }
    let (_keep, never) = stop::channel();
    let credentials = session::enroll(
        &config.coordinator,
        &state,
        &config.enroll_request(),
        &config.transport,
        false,
        &never,
    )
    .await?;
    Ok(credentials)
}

fn check(config: &RunConfig) -> anyhow::Result<()> {
    Client::with_transport(&config.coordinator, None, &config.transport)?;
    if config.cores == 0 {
        bail!("cores must be at least 1");
    }
    if config.name.trim().is_empty() {
        bail!("name must not be empty");
    }
    Ok(())
}
