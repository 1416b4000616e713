//! `GET /api/v1/events`: Server-Sent Events for the dashboard. A `snapshot` event on connect and
//! whenever the overview changes (at least every few seconds), and an `update` event for each
//! thing that happened (results reported, units decided, jobs changed, workers enrolled).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::get;
use futures_util::Stream;
use sparecycles_protocol::dashboard::Event;
use tokio::sync::{broadcast, watch};

use crate::state::AppState;

/// How long a browser waits before reconnecting after the stream drops.
const RETRY: Duration = Duration::from_secs(2);

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/events", get(events))
}

struct Subscription {
    snapshots: watch::Receiver<Option<Arc<str>>>,
    events: broadcast::Receiver<Event>,
    closed: watch::Receiver<bool>,
    first: bool,
}

/// The live event stream of the dashboard.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "dashboard",
    responses((status = 200, description = "Server-Sent Events: `snapshot` (a `Snapshot`) on \
        connect and on changes, `update` (an `Event`) for each thing that happened; a job's results \
        reported and units decided are summed over up to 100 ms into one `update` each", content_type = "text/event-stream")),
)]
async fn events(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let hub = state.hub();
    let sub = Subscription {
        snapshots: hub.snapshots(),
        events: hub.subscribe(),
        closed: hub.closed(),
        first: true,
    };
    let stream = futures_util::stream::unfold(sub, |mut sub| async move {
        let event = next(&mut sub).await?;
        Some((Ok(event), sub))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn snapshot_event(json: &str) -> SseEvent {
    SseEvent::default().event("snapshot").data(json)
}

/// The next event to send, or `None` when the coordinator shuts down.
async fn next(sub: &mut Subscription) -> Option<SseEvent> {
    if std::mem::take(&mut sub.first) {
        let current = sub.snapshots.borrow_and_update().clone();
        return Some(match current {
            Some(json) => snapshot_event(&json).retry(RETRY),
            None => SseEvent::default().comment("hello").retry(RETRY),
        });
    }
    loop {
        if *sub.closed.borrow() {
            return None;
        }
        tokio::select! {
            _ = sub.closed.changed() => return None,
            changed = sub.snapshots.changed() => {
                changed.ok()?;
                let current = sub.snapshots.borrow_and_update().clone();
                if let Some(json) = current {
                    return Some(snapshot_event(&json));
                }
            }
            event = sub.events.recv() => match event {
                Ok(e) => {
                    let data = serde_json::to_string(&e).ok()?;
                    return Some(SseEvent::default().event("update").data(data));
                }
                // Too slow to keep up: skip ahead; the next snapshot has the totals.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            },
        }
    }
}
