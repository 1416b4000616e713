//! `prime-count`: counts the primes `p` with `start <= p < end`, one range per unit, with the
//! segmented sieve in [`sieve`] spread over the threads of the rayon pool.

mod sieve;
#[cfg(test)]
mod tests;
mod wheel;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::resume::{MAX_PIECES, run_pieces};
use crate::split::{RangeSplit, Span};
use crate::{
    App, AppError, Assembled, Assembler, ComputeCtx, ComputeError, Plan, SaveCheckpoint,
    parse_params, parse_value,
};
use sieve::{FIRST_SIEVED, PRESIEVED, Sieve};

const NAME: &str = "prime-count";

/// Largest accepted `end` (base primes then reach about 3.2e7).
pub const MAX_END: u64 = 1_000_000_000_000_000;
/// Largest accepted `unit_size`: about an hour of one core near [`MAX_END`].
pub const MAX_UNIT_SIZE: u64 = 1_000_000_000_000;

/// The `prime-count` app.
#[derive(Debug, Clone, Copy)]
pub struct PrimeCount;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    start: u64,
    end: u64,
    unit_size: u64,
}

/// A unit's output, and the job's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Count {
    count: u64,
}

struct PrimePlan {
    split: RangeSplit,
}

impl Plan for PrimePlan {
    fn unit_count(&self) -> u64 {
        self.split.unit_count()
    }

    fn unit(&self, seq: u64) -> Value {
        self.split.span(seq).to_value()
    }

    fn unit_work(&self, seq: u64) -> f64 {
        self.split.span(seq).len() as f64 / 1e6
    }
}

/// Parses and checks the parameters.
fn split(params: &Value) -> Result<RangeSplit, AppError> {
    let p: Params = parse_params(NAME, params)?;
    if p.end > MAX_END {
        return Err(AppError(format!(
            "{NAME}: end ({}) must be at most 10^15",
            p.end
        )));
    }
    if p.unit_size > MAX_UNIT_SIZE {
        return Err(AppError(format!(
            "{NAME}: unit_size ({}) must be at most 10^12",
            p.unit_size
        )));
    }
    RangeSplit::new(NAME, p.start, p.end, p.unit_size)
}

impl App for PrimeCount {
    fn name(&self) -> &'static str {
        NAME
    }

    fn plan(&self, params: &Value) -> Result<Box<dyn Plan>, AppError> {
        Ok(Box::new(PrimePlan {
            split: split(params)?,
        }))
    }

    fn compute(
        &self,
        params: &Value,
        unit: &Value,
        ctx: &ComputeCtx,
    ) -> Result<Value, ComputeError> {
        self.compute_resumable(params, unit, ctx, None, &|_| {})
    }

    /// Checkpoints are `{"next": n, "partial": {"count": c}}`: `c` primes below `n`.
    fn compute_resumable(
        &self,
        params: &Value,
        unit: &Value,
        ctx: &ComputeCtx,
        checkpoint: Option<&Value>,
        save: SaveCheckpoint<'_>,
    ) -> Result<Value, ComputeError> {
        let failed = |e: AppError| ComputeError::Failed(e.0);
        let span = split(params)
            .and_then(|s| s.parse_unit(NAME, unit))
            .map_err(failed)?;
        if span.is_empty() {
            return Ok(json!(Count { count: 0 }));
        }
        let sieve = Sieve::shared(span.end);
        let threads = rayon::current_num_threads() as u64;
        let piece_len = span
            .len()
            .div_ceil(MAX_PIECES)
            .max(threads * 2 * min_chunk(span.end));
        let total = run_pieces(
            span,
            piece_len,
            checkpoint,
            Count { count: 0 },
            ctx,
            save,
            |piece| count_piece(&sieve, piece, ctx).map(|count| Count { count }),
            |a, b| Count {
                count: a.count + b.count,
            },
        )?;
        Ok(json!(total))
    }

    fn check_output(&self, params: &Value, unit: &Value, output: &Value) -> Result<(), AppError> {
        let span = split(params)?.parse_unit(NAME, unit)?;
        let out: Count = parse_value(&format!("{NAME} output"), output)?;
        // At most the odd numbers of the range, plus 2.
        let bound = span.len().div_ceil(2) + 1;
        if out.count > bound.min(span.len()) {
            return Err(AppError(format!(
                "{NAME}: count {} is impossible for a range of {} numbers",
                out.count,
                span.len()
            )));
        }
        Ok(())
    }

    fn assembler(&self, params: &Value) -> Result<Box<dyn Assembler>, AppError> {
        split(params)?;
        Ok(Box::new(Sum { total: 0 }))
    }
}

/// Adds up the units' counts.
struct Sum {
    total: u64,
}

impl Assembler for Sum {
    fn push(&mut self, _seq: u64, output: &Value) -> Result<(), AppError> {
        let out: Count = parse_value(&format!("{NAME} output"), output)?;
        self.total = self
            .total
            .checked_add(out.count)
            .ok_or_else(|| AppError::new(format!("{NAME}: total count overflows")))?;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Assembled, AppError> {
        Ok(Assembled::json(&json!(Count { count: self.total })))
    }
}

/// Counts the primes in `[start, end)` on the current rayon pool: the kernel alone, without a
/// job around it.
///
/// # Panics
/// If `end` is above [`MAX_END`].
pub fn count_primes(start: u64, end: u64) -> u64 {
    assert!(end <= MAX_END, "count_primes: end ({end}) is above 10^15");
    // A fresh context is never canceled.
    count_in(start, end, &ComputeCtx::new()).unwrap_or_default()
}

/// Counts the primes in `[start, end)` on all threads of the current rayon pool.
fn count_in(start: u64, end: u64, ctx: &ComputeCtx) -> Result<u64, ComputeError> {
    if end <= start {
        return Ok(0);
    }
    ctx.set_total(end - start);
    count_piece(&Sieve::new(end), Span { start, end }, ctx)
}

/// Counts the primes in `span` (below the sieve's bound) on all threads of the current pool,
/// advancing `ctx` by the span's length.
fn count_piece(sieve: &Sieve, span: Span, ctx: &ComputeCtx) -> Result<u64, ComputeError> {
    let Span { start, end } = span;
    let small = PRESIEVED.iter().filter(|&&p| start <= p && p < end).count() as u64;
    let lo = start.max(FIRST_SIEVED);
    ctx.advance(lo.min(end) - start);
    if lo >= end {
        return Ok(small);
    }
    let chunks = chunks(Span { start: lo, end }, rayon::current_num_threads() as u64);
    let sieved = (0..chunks.count)
        .into_par_iter()
        .map(|i| {
            let s = chunks.span(i);
            sieve.count(s.start, s.end, Some(ctx))
        })
        .try_reduce(|| 0, |a, b| Ok(a + b))?;
    Ok(small + sieved)
}

/// How a range is cut into pieces for the threads.
struct Chunks {
    span: Span,
    size: u64,
    count: u64,
}

impl Chunks {
    fn span(&self, i: u64) -> Span {
        let start = self.span.start + i * self.size;
        Span {
            start,
            end: (start + self.size).min(self.span.end),
        }
    }
}

/// Up to 16 pieces per thread for balance, but each large enough that finding the base primes'
/// first multiples (about one division per base prime: 35 ms near 10^15, as long as sieving
/// 25 million numbers there) stays a small part of the work. Equal pieces do not cost the same
/// (one higher up the range has more base primes to cross off), and with 4 per thread the last
/// ones kept one thread busy while the other idled: π(2·10⁹) on 2 threads took 0.162 s with 4
/// pieces per thread, 0.145 s with 16, 0.148 s with 64.
fn chunks(span: Span, threads: u64) -> Chunks {
    let threads = threads.max(1);
    let most = span.len().div_ceil(min_chunk(span.end)).max(1);
    // As many equal pieces as the threads (times up to 16) when the span is long enough; a
    // count that is not a multiple of the threads would leave one thread a piece more to do.
    let count = if most >= threads {
        (most.min(threads * 16) / threads) * threads
    } else {
        most
    };
    let size = span.len().div_ceil(count);
    Chunks {
        span,
        size,
        count: span.len().div_ceil(size),
    }
}

/// The smallest piece worth handing a thread below `end` (see [`chunks`]).
fn min_chunk(end: u64) -> u64 {
    (end.isqrt() * 8).max(1 << 22)
}
