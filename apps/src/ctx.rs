//! What a running computation shares with the worker: a cancel flag, a pause flag and progress.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::ComputeError;

/// Shared between the worker (which cancels, pauses and reads progress) and the app (which
/// checks and advances). Cheap to clone; clones share state.
#[derive(Debug, Clone, Default)]
pub struct ComputeCtx {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    cancel: AtomicBool,
    pause: AtomicBool,
    total: AtomicU64,
    done: AtomicU64,
}

impl ComputeCtx {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the computation to stop; `check` returns `Canceled` from now on.
    pub fn cancel(&self) {
        self.inner.cancel.store(true, Ordering::Relaxed);
    }

    pub fn is_canceled(&self) -> bool {
        self.inner.cancel.load(Ordering::Relaxed)
    }

    /// Pauses or resumes: while paused, `check` blocks (so the cores go idle).
    pub fn set_paused(&self, paused: bool) {
        self.inner.pause.store(paused, Ordering::Relaxed);
    }

    pub fn is_paused(&self) -> bool {
        self.inner.pause.load(Ordering::Relaxed)
    }

    /// Called by apps between small pieces of work: returns `Canceled` when asked to stop, and
    /// waits here while paused.
    pub fn check(&self) -> Result<(), ComputeError> {
        loop {
            if self.is_canceled() {
                return Err(ComputeError::Canceled);
            }
            if !self.is_paused() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Declares the amount of work in the unit (in any app-chosen measure).
    pub fn set_total(&self, total: u64) {
        self.inner.total.store(total, Ordering::Relaxed);
        self.inner.done.store(0, Ordering::Relaxed);
    }

    /// Records `n` more pieces of work done.
    pub fn advance(&self, n: u64) {
        self.inner.done.fetch_add(n, Ordering::Relaxed);
    }

    /// Fraction done, 0.0 to 1.0.
    pub fn fraction(&self) -> f64 {
        let total = self.inner.total.load(Ordering::Relaxed);
        if total == 0 {
            return 0.0;
        }
        (self.inner.done.load(Ordering::Relaxed) as f64 / total as f64).clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_and_progress() {
        let ctx = ComputeCtx::new();
        assert!(ctx.check().is_ok());
        ctx.set_total(4);
        ctx.advance(1);
        assert_eq!(ctx.fraction(), 0.25);
        let clone = ctx.clone();
        clone.cancel();
        assert_eq!(ctx.check(), Err(ComputeError::Canceled));
    }
}
