//! Checkpoints of range units: a unit `[start, end)` is computed in consecutive pieces, and after
//! each piece the partial result and the next position are offered to the caller to save. A
//! resumed unit starts at the saved position with the saved partial result; since the apps that
//! use this fold their pieces with an associative, order-respecting merge, the output is the
//! same bit for bit however the unit was cut.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::split::Span;
use crate::{ComputeCtx, ComputeError, SaveCheckpoint};

/// Pieces a unit is cut into at most, so that a checkpoint is never far behind.
pub(crate) const MAX_PIECES: u64 = 64;

/// What is saved: everything below `next` is accounted for in `partial`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RangeCheckpoint<T> {
    pub(crate) next: u64,
    pub(crate) partial: T,
}

/// Computes `span` piece by piece (pieces of `piece_len`, the first one starting at the
/// checkpoint's `next` when a checkpoint that fits is given), folding the pieces' results into
/// `init` with `fold`. Declares the span as the context's total work and counts the part a
/// checkpoint covers as done; `piece` advances the context for its own work.
#[allow(clippy::too_many_arguments)] // each is a distinct input; a struct would only rename them
pub(crate) fn run_pieces<T>(
    span: Span,
    piece_len: u64,
    checkpoint: Option<&Value>,
    init: T,
    ctx: &ComputeCtx,
    save: SaveCheckpoint<'_>,
    mut piece: impl FnMut(Span) -> Result<T, ComputeError>,
    fold: impl Fn(T, T) -> T,
) -> Result<T, ComputeError>
where
    T: Serialize + DeserializeOwned + Clone,
{
    ctx.set_total(span.len());
    let resumed = checkpoint
        .and_then(|c| serde_json::from_value::<RangeCheckpoint<T>>(c.clone()).ok())
        .filter(|c| span.start <= c.next && c.next <= span.end);
    let (mut next, mut acc) = match resumed {
        Some(c) => (c.next, c.partial),
        None => (span.start, init),
    };
    ctx.advance(next - span.start);
    let piece_len = piece_len.max(1);
    while next < span.end {
        ctx.check()?;
        let end = next.saturating_add(piece_len).min(span.end);
        let part = piece(Span { start: next, end })?;
        acc = fold(acc, part);
        next = end;
        if next < span.end {
            let checkpoint = RangeCheckpoint {
                next,
                partial: acc.clone(),
            };
            save(&serde_json::to_value(checkpoint).unwrap_or_default());
        }
    }
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn sum(span: Span, piece_len: u64, checkpoint: Option<&Value>) -> (u64, Vec<Value>, u64) {
        let saved = Mutex::new(Vec::new());
        let mut computed = 0;
        let total = run_pieces(
            span,
            piece_len,
            checkpoint,
            0u64,
            &ComputeCtx::new(),
            &|v| saved.lock().unwrap().push(v.clone()),
            |s| {
                computed += s.len();
                Ok((s.start..s.end).sum())
            },
            |a, b| a + b,
        )
        .unwrap();
        (total, saved.into_inner().unwrap(), computed)
    }

    #[test]
    fn resuming_skips_the_saved_part_and_gives_the_same_answer() {
        let span = Span {
            start: 10,
            end: 1000,
        };
        let (whole, saved, computed) = sum(span, 100, None);
        assert_eq!(whole, (10..1000).sum::<u64>());
        assert_eq!(computed, 990);
        assert_eq!(saved.len(), 9);
        let third = &saved[2];
        assert_eq!(third["next"], 310);
        let (resumed, _, computed) = sum(span, 100, Some(third));
        assert_eq!(resumed, whole);
        assert_eq!(
            computed,
            1000 - 310,
            "work before the checkpoint was redone"
        );
    }

    #[test]
    fn checkpoints_that_do_not_fit_are_ignored() {
        let span = Span { start: 10, end: 20 };
        let expected = (10..20).sum::<u64>();
        for bad in [
            serde_json::json!({"next": 5, "partial": 1}),
            serde_json::json!({"next": 21, "partial": 1}),
            serde_json::json!({"next": 15}),
            serde_json::json!("garbage"),
        ] {
            let (total, _, computed) = sum(span, 3, Some(&bad));
            assert_eq!((total, computed), (expected, 10), "{bad}");
        }
    }
}
