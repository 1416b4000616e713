//! The lease loop: keeps the buffer of leased tasks full so the cores never wait on the network.

use std::sync::Arc;

use sparecycles_protocol::{LeaseRequest, now_millis};

use super::Shared;
use crate::backoff::Backoff;
use crate::client::ClientError;

/// How long the coordinator may hold a lease waiting for work: well under the request timeout.
const LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Longest wait for waiting results to go out before a lease.
const FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a shutdown waits for the answer to a lease already asked: a coordinator with work
/// answers in milliseconds, and a lease still waiting for work after this holds no task.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// Leases until stopped: asks for as many tasks as the buffer lacks, waits `idle_poll` when
/// the coordinator has none, and backs off while it is unreachable. A lease answered as the
/// stop comes is buffered too, for the shutdown to hand back with the rest.
pub(crate) async fn lease_loop(shared: Arc<Shared>) {
    let stop = &shared.stop;
    let mut backoff = Backoff::default();
    while !stop.is_stopped() {
        // A paused worker does not hoard units it cannot compute (they would only time out).
        // Woken by the resume itself: a worker starts paused until its first look at the
        // machine, and a job waiting for it should not wait for a polling tick too.
        if shared.tasks.is_paused() {
            tokio::select! {
                _ = shared.tasks.unpaused() => continue,
                _ = stop.wait() => return,
            }
        }
        let wanted = shared.tasks.wanted(now_millis());
        if wanted == 0 {
            tokio::select! {
                _ = shared.tasks.space.notified() => continue,
                _ = stop.wait() => return,
            }
        }
        if shared.reports.pending() > 0 {
            // Results not yet reported hold quota room: send them first.
            tokio::select! {
                _ = shared.reports.flush(FLUSH_WAIT) => {}
                _ = stop.wait() => return,
            }
        }
        let (generation, client) = shared.session.client();
        let request = LeaseRequest {
            max_tasks: shared.config.lease_size(wanted),
            held: Some(held(&shared)),
            wait_ms: Some(LEASE_WAIT.as_millis() as u32),
        };
        let asked = std::time::Instant::now();
        let lease = client.lease(&request);
        tokio::pin!(lease);
        let answer = tokio::select! {
            answer = &mut lease => answer,
            _ = stop.wait() => {
                // The coordinator may have leased tasks to this worker already: take them, so
                // the shutdown hands them back now instead of their waiting for a deadline.
                if let Ok(Ok(leased)) = tokio::time::timeout(STOP_GRACE, lease).await {
                    shared.tasks.add(leased.tasks);
                }
                return;
            }
        };
        match answer {
            Ok(leased) if leased.tasks.is_empty() => {
                backoff.reset();
                shared.tasks.set_quota(leased.quota);
                // A coordinator that waited for work can be asked again at once; one that
                // answered at once (older, or shutting down) is polled.
                if asked.elapsed() < LEASE_WAIT / 2 && !stop.sleep(shared.config.idle_poll).await {
                    return;
                }
            }
            Ok(leased) => {
                backoff.reset();
                tracing::debug!(count = leased.tasks.len(), quota = ?leased.quota, "leased tasks");
                shared.tasks.set_quota(leased.quota);
                shared.tasks.add(leased.tasks);
            }
            Err(ClientError::Unauthorized) => {
                if !shared.reauthenticate(generation).await {
                    return;
                }
            }
            Err(e) => {
                let delay = backoff.next_delay_after(retry_after(&e));
                tracing::warn!(error = %e, retry_in = ?delay, "lease failed; backing off");
                if !stop.sleep(delay).await {
                    return;
                }
            }
        }
    }
}

/// Every task this worker still holds: buffered, computing, or with an undelivered result.
/// The coordinator resends tasks leased to this worker that are missing here (lost answers).
fn held(shared: &Shared) -> Vec<uuid::Uuid> {
    let mut ids: Vec<_> = shared.tasks.progress().iter().map(|t| t.task_id).collect();
    ids.extend(shared.outbox.task_ids());
    ids
}

/// The coordinator's `Retry-After`, when the error carries one.
pub(crate) fn retry_after(e: &ClientError) -> Option<std::time::Duration> {
    match e {
        ClientError::Transient { retry_after, .. } => *retry_after,
        _ => None,
    }
}
