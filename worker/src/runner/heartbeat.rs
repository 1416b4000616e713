//! The heartbeat loop: tells the coordinator how far the held tasks are, and stops the ones it
//! says to abort (job canceled or paused, unit already decided).

use std::sync::Arc;

use sparecycles_protocol::HeartbeatRequest;
use tokio::time::{Instant, MissedTickBehavior};

use super::Shared;
use super::lease::retry_after;
use crate::client::ClientError;

/// Sends a heartbeat every `heartbeat_interval` while tasks are held, until stopped. A failed
/// heartbeat is not retried early: the next tick carries fresher progress anyway.
pub(crate) async fn heartbeat_loop(shared: Arc<Shared>) {
    let stop = &shared.stop;
    let interval = shared
        .config
        .heartbeat_interval
        .max(std::time::Duration::from_millis(10));
    let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait() => return,
        }
        let tasks = shared.tasks.progress();
        if tasks.is_empty() {
            continue;
        }
        let (generation, client) = shared.session.client();
        let request = HeartbeatRequest { tasks };
        let answer = tokio::select! {
            answer = client.heartbeat(&request) => answer,
            _ = stop.wait() => return,
        };
        match answer {
            Ok(answer) if answer.abort.is_empty() => {}
            Ok(answer) => {
                let stopped = shared.tasks.abort(&answer.abort);
                for id in &answer.abort {
                    let _ = shared.checkpoints.remove(*id);
                }
                tracing::info!(
                    asked = answer.abort.len(),
                    stopped,
                    "coordinator aborted tasks"
                );
            }
            Err(ClientError::Unauthorized) => {
                if !shared.reauthenticate(generation).await {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat failed");
                if let Some(after) = retry_after(&e)
                    && after > interval
                    && !stop.sleep(after - interval).await
                {
                    return;
                }
            }
        }
    }
}
