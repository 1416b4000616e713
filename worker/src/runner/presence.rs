//! The presence loop: keeps one request open to the coordinator at all times. The coordinator
//! holds it and answers after a while, and the loop opens the next at once. If this process
//! dies, the operating system closes the connection and the coordinator gives the units this
//! worker held spare copies within a second, instead of waiting for the silence limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sparecycles_protocol::work::{MAX_PRESENCE_WAIT_MS, PresenceRequest};

use super::Shared;
use super::lease::retry_after;
use crate::backoff::Backoff;
use crate::client::ClientError;

/// How long the coordinator is asked to hold each request.
const HOLD: Duration = Duration::from_millis(MAX_PRESENCE_WAIT_MS as u64);

/// Keeps the line open until stopped. A coordinator without the call (404) is left alone.
pub(crate) async fn presence_loop(shared: Arc<Shared>) {
    let stop = &shared.stop;
    let mut backoff = Backoff::default();
    let request = PresenceRequest {
        wait_ms: MAX_PRESENCE_WAIT_MS,
    };
    while !stop.is_stopped() {
        let (generation, client) = shared.session.client();
        let opened = Instant::now();
        let answer = tokio::select! {
            answer = client.presence(&request) => answer,
            _ = stop.wait() => return,
        };
        match answer {
            Ok(_) => {
                backoff.reset();
                // Answered early: the coordinator is shutting down. Do not spin on it.
                if opened.elapsed() < HOLD / 2 && !stop.sleep(Duration::from_secs(1)).await {
                    return;
                }
            }
            Err(ClientError::Unauthorized) => {
                if !shared.reauthenticate(generation).await {
                    return;
                }
            }
            Err(ClientError::Refused(problem)) if problem.status == 404 => {
                tracing::info!(
                    "the coordinator has no presence line; it will notice a dead worker by its silence"
                );
                return;
            }
            Err(e) => {
                let delay = backoff.next_delay_after(retry_after(&e));
                tracing::debug!(error = %e, retry_in = ?delay, "presence line dropped");
                if !stop.sleep(delay).await {
                    return;
                }
            }
        }
    }
}
