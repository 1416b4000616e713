//! `collatz`: in each range of starting values, the one whose Collatz trajectory takes the most
//! steps to reach 1 (even `n -> n / 2`, odd `n -> 3n + 1`, one step each; 1 takes 0 steps),
//! the smallest on ties.
//!
//! Trajectories run in `u64` and move to `u128` when `3n + 1` would not fit; anything that
//! overflows even that fails the unit rather than give a wrong count.

#[cfg(test)]
mod tests;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::resume::{MAX_PIECES, run_pieces};
use crate::split::{RangeSplit, Span};
use crate::{
    App, AppError, Assembled, Assembler, ComputeCtx, ComputeError, Plan, SaveCheckpoint,
    parse_params, parse_value,
};

const NAME: &str = "collatz";

/// Largest accepted `end`.
pub const MAX_END: u64 = 1 << 60;
/// Largest accepted `unit_size` (hours of one core).
pub const MAX_UNIT_SIZE: u64 = 1 << 40;
/// Far more steps than the known records below [`MAX_END`] (a few thousand at most); outputs
/// above are refused as implausible.
const MAX_PLAUSIBLE_STEPS: u32 = 100_000;

/// Starting values per piece of work handed to a thread (about a millisecond).
const BLOCK: u64 = 4096;
/// Starting values below this have their step counts in a table built for each compute.
const TABLE_LEN: usize = 1 << 16;

/// The `collatz` app.
#[derive(Debug, Clone, Copy)]
pub struct Collatz;

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
struct Best {
    max_steps: u32,
    argmax: u64,
}

impl Best {
    /// The better of two: more steps, or as many from a smaller start.
    fn max(self, other: Best) -> Best {
        if other.max_steps > self.max_steps
            || (other.max_steps == self.max_steps && other.argmax < self.argmax)
        {
            other
        } else {
            self
        }
    }
}

struct CollatzPlan {
    split: RangeSplit,
}

impl Plan for CollatzPlan {
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
    if p.start == 0 {
        return Err(AppError::new(format!("{NAME}: start must be at least 1")));
    }
    if p.end > MAX_END {
        return Err(AppError(format!(
            "{NAME}: end ({}) must be at most 2^60",
            p.end
        )));
    }
    if p.unit_size > MAX_UNIT_SIZE {
        return Err(AppError(format!(
            "{NAME}: unit_size ({}) must be at most 2^40",
            p.unit_size
        )));
    }
    RangeSplit::new(NAME, p.start, p.end, p.unit_size)
}

impl App for Collatz {
    fn name(&self) -> &'static str {
        NAME
    }

    fn plan(&self, params: &Value) -> Result<Box<dyn Plan>, AppError> {
        Ok(Box::new(CollatzPlan {
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

    /// Checkpoints are `{"next": n, "partial": best}`: the best start below `n` (`null` before
    /// the first piece).
    fn compute_resumable(
        &self,
        params: &Value,
        unit: &Value,
        ctx: &ComputeCtx,
        checkpoint: Option<&Value>,
        save: SaveCheckpoint<'_>,
    ) -> Result<Value, ComputeError> {
        let span = split(params)
            .and_then(|s| s.parse_unit(NAME, unit))
            .map_err(|e| ComputeError::Failed(e.0))?;
        let table = step_table();
        let threads = rayon::current_num_threads() as u64;
        let piece_len = span.len().div_ceil(MAX_PIECES).max(BLOCK * 16 * threads);
        let best = run_pieces(
            span,
            piece_len,
            checkpoint,
            None,
            ctx,
            save,
            |piece| best_in(piece, &table, ctx).map(Some),
            |a: Option<Best>, b| match (a, b) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
        )?
        .ok_or_else(|| ComputeError::Failed(format!("{NAME}: empty unit")))?;
        Ok(json!(best))
    }

    fn check_output(&self, params: &Value, unit: &Value, output: &Value) -> Result<(), AppError> {
        let span = split(params)?.parse_unit(NAME, unit)?;
        let out: Best = parse_value(&format!("{NAME} output"), output)?;
        if !(span.start..span.end).contains(&out.argmax) {
            return Err(AppError(format!(
                "{NAME}: argmax {} is outside the unit [{}, {})",
                out.argmax, span.start, span.end
            )));
        }
        // Only halvings make n smaller: reaching 1 takes at least log2(n) steps.
        let floor = out.argmax.ilog2();
        if out.max_steps < floor || out.max_steps > MAX_PLAUSIBLE_STEPS {
            return Err(AppError(format!(
                "{NAME}: {} steps is impossible for n = {}",
                out.max_steps, out.argmax
            )));
        }
        Ok(())
    }

    fn assembler(&self, params: &Value) -> Result<Box<dyn Assembler>, AppError> {
        split(params)?;
        Ok(Box::new(Record { best: None }))
    }
}

/// Keeps the best unit so far; units come in increasing order, so the first of equals wins.
struct Record {
    best: Option<Best>,
}

impl Assembler for Record {
    fn push(&mut self, _seq: u64, output: &Value) -> Result<(), AppError> {
        let out: Best = parse_value(&format!("{NAME} output"), output)?;
        self.best = Some(match self.best {
            Some(best) if out.max_steps <= best.max_steps => best,
            _ => out,
        });
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Assembled, AppError> {
        let best = self
            .best
            .ok_or_else(|| AppError::new(format!("{NAME}: no unit to assemble")))?;
        Ok(Assembled::json(&json!(best)))
    }
}

/// The best start in `span` (not empty), on all threads of the current pool.
fn best_in(span: Span, table: &[u16], ctx: &ComputeCtx) -> Result<Best, ComputeError> {
    (0..span.len().div_ceil(BLOCK))
        .into_par_iter()
        .map(|i| {
            ctx.check()?;
            let lo = span.start + i * BLOCK;
            let hi = (lo + BLOCK).min(span.end);
            let mut best = Best {
                max_steps: 0,
                argmax: lo,
            };
            for n in lo..hi {
                let max_steps = steps(n, table)?;
                if max_steps > best.max_steps {
                    best = Best {
                        max_steps,
                        argmax: n,
                    };
                }
            }
            ctx.advance(hi - lo);
            Ok(best)
        })
        .try_reduce_with(|a, b| Ok(a.max(b)))
        .unwrap_or_else(|| Err(ComputeError::Failed(format!("{NAME}: empty unit"))))
}

/// Steps from `n` (>= 1) to 1, using `table` for the values below its length.
fn steps(n: u64, table: &[u16]) -> Result<u32, ComputeError> {
    let mut n = n;
    let mut steps = 0u32;
    loop {
        if let Some(&known) = table.get(n as usize) {
            return Ok(steps + u32::from(known));
        }
        if n.is_multiple_of(2) {
            let zeros = n.trailing_zeros();
            n >>= zeros;
            steps += zeros;
        } else if n <= (u64::MAX - 1) / 3 {
            // 3n + 1 is even: take the halving with it ((3n + 1) / 2, as 3n is odd).
            n = 3 * n / 2 + 1;
            steps += 2;
        } else {
            return steps_wide(u128::from(n), steps, table);
        }
    }
}

/// [`steps`] in `u128`, for the rare trajectories that leave `u64`: the slow path, all the way
/// down to the table.
fn steps_wide(mut n: u128, mut steps: u32, table: &[u16]) -> Result<u32, ComputeError> {
    let start = n;
    while n >= table.len() as u128 {
        if n.is_multiple_of(2) {
            let zeros = n.trailing_zeros();
            n >>= zeros;
            steps += zeros;
        } else {
            n = n
                .checked_mul(3)
                .and_then(|m| m.checked_add(1))
                .ok_or_else(|| {
                    ComputeError::Failed(format!(
                        "{NAME}: 128-bit overflow at n={n} (on the way from {start})"
                    ))
                })?;
            steps += 1;
        }
    }
    Ok(steps + u32::from(table[n as usize]))
}

/// Step counts of `0..TABLE_LEN` (entry 0 unused), each from smaller ones.
fn step_table() -> Vec<u16> {
    let mut table = vec![0u16; TABLE_LEN];
    for i in 2..TABLE_LEN {
        let mut n = i as u64;
        let mut steps = 0u16;
        while n >= i as u64 {
            n = if n.is_multiple_of(2) {
                n / 2
            } else {
                3 * n + 1
            };
            steps += 1;
        }
        table[i] = steps + table[n as usize];
    }
    table
}
