//! The shutdown signal every loop of the runner watches.

use std::time::Duration;

use tokio::sync::watch;

/// Tells the loops to stop; dropping it stops them too.
#[derive(Debug)]
pub(crate) struct StopSender(watch::Sender<bool>);

/// A loop's view of the shutdown signal. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Stop(watch::Receiver<bool>);

pub(crate) fn channel() -> (StopSender, Stop) {
    let (tx, rx) = watch::channel(false);
    (StopSender(tx), Stop(rx))
}

impl StopSender {
    pub(crate) fn stop(&self) {
        self.0.send_replace(true);
    }
}

impl Stop {
    pub(crate) fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown was asked for.
    pub(crate) async fn wait(&self) {
        let mut rx = self.0.clone();
        // An error means the sender is gone, which also means stop.
        let _ = rx.wait_for(|stopped| *stopped).await;
    }

    /// Sleeps for `duration`; returns `false` when shutdown came first.
    pub(crate) async fn sleep(&self, duration: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(duration) => true,
            _ = self.wait() => false,
        }
    }
}
