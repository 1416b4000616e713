//! `prime-count`: counts the primes `p` with `start <= p < end`, one range per unit, with the
//! segmented sieve in [`sieve`] spread over the threads of the rayon pool.

mod sieve;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::split::{RangeSplit, Span};
use crate::{
    App, AppError, Assembled, Assembler, ComputeCtx, ComputeError, Plan, parse_params, parse_value,
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
        let failed = |e: AppError| ComputeError::Failed(e.0);
        let span = split(params)
            .and_then(|s| s.parse_unit(NAME, unit))
            .map_err(failed)?;
        let count = count_in(span.start, span.end, ctx)?;
        Ok(json!(Count { count }))
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
    let small = PRESIEVED
        .iter()
        .filter(|&&p| start <= p && p < end)
        .count() as u64;
    let lo = start.max(FIRST_SIEVED);
    ctx.advance(lo.min(end) - start);
    if lo >= end {
        return Ok(small);
    }
    let sieve = Sieve::new(end);
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

/// A few pieces per thread for balance, but each large enough that finding the base primes'
/// first multiples (about one division per base prime) stays a small part of the work.
fn chunks(span: Span, threads: u64) -> Chunks {
    let min_size = (span.end.isqrt() * 64).max(1 << 22);
    let size = span.len().div_ceil(threads.max(1) * 4).max(min_size);
    Chunks {
        span,
        size,
        count: span.len().div_ceil(size),
    }
}

#[cfg(test)]
mod tests {
    use super::sieve::tests::naive_count;
    use super::*;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    #[test]
    fn known_values_of_pi() {
        assert_eq!(count_primes(0, 11), 4);
        assert_eq!(count_primes(0, 10), 4);
        assert_eq!(count_primes(0, 100), 25);
        assert_eq!(count_primes(0, 1_000_000), 78_498);
        assert_eq!(count_primes(0, 10_000_000), 664_579);
    }

    #[test]
    fn pi_of_a_billion() {
        assert_eq!(count_primes(0, 1_000_000_000), 50_847_534);
    }

    #[test]
    fn tiny_ranges() {
        assert_eq!(count_primes(2, 3), 1);
        assert_eq!(count_primes(0, 2), 0);
        assert_eq!(count_primes(3, 4), 1);
        assert_eq!(count_primes(4, 5), 0);
        assert_eq!(count_primes(1, 2), 0);
        assert_eq!(count_primes(17, 18), 1);
        assert_eq!(count_primes(16, 17), 0);
        assert_eq!(count_primes(13, 18), 2);
        assert_eq!(count_primes(5, 5), 0);
        assert_eq!(count_primes(289, 290), 0);
        assert_eq!(count_primes(0, 1), 0);
    }

    #[test]
    fn every_small_range_matches_the_reference() {
        for lo in 0..70 {
            for hi in lo..130 {
                assert_eq!(count_primes(lo, hi), naive_count(lo, hi), "[{lo}, {hi})");
            }
        }
    }

    #[test]
    fn random_ranges_match_the_reference() {
        let mut state = 0x5eed_u64;
        let mut next = move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        for i in 0..60 {
            let magnitude = 10u64.pow(3 + (i % 10) as u32);
            let lo = next() % magnitude;
            let hi = lo + next() % 200_000;
            assert_eq!(count_primes(lo, hi), naive_count(lo, hi), "[{lo}, {hi})");
        }
    }

    #[test]
    fn just_above_a_billion() {
        let (lo, hi) = (1_000_000_000, 1_001_000_000);
        assert_eq!(count_primes(lo, hi), naive_count(lo, hi));
    }

    #[test]
    fn thread_count_does_not_change_the_count() {
        let (lo, hi) = (123_456_789, 160_000_001);
        let one = pool(1).install(|| count_primes(lo, hi));
        let four = pool(4).install(|| count_primes(lo, hi));
        assert_eq!(one, four);
        assert_eq!(one, naive_count(lo, hi));
    }

    #[test]
    fn uneven_units_add_up_to_the_whole() {
        let params = json!({"start": 1_000, "end": 2_345_678, "unit_size": 100_003});
        let plan = PrimeCount.plan(&params).unwrap();
        assert_eq!(plan.unit_count(), 24);
        let mut asm = PrimeCount.assembler(&params).unwrap();
        let ctx = ComputeCtx::new();
        for seq in 0..plan.unit_count() {
            let unit = plan.unit(seq);
            let out = PrimeCount.compute(&params, &unit, &ctx).unwrap();
            PrimeCount.check_output(&params, &unit, &out).unwrap();
            asm.push(seq, &out).unwrap();
        }
        assert_eq!(ctx.fraction(), 1.0);
        let result = asm.finish().unwrap();
        assert_eq!(result.content_type, "application/json");
        let value: Value = serde_json::from_slice(&result.body).unwrap();
        assert_eq!(value, json!({"count": count_primes(1_000, 2_345_678)}));
        assert_eq!(plan.unit(23), json!({"start": 2_301_069, "end": 2_345_678}));
        assert!((plan.unit_work(0) - 0.100_003).abs() < 1e-12);
    }

    #[test]
    fn refuses_bad_params() {
        let err = |v: Value| PrimeCount.plan(&v).err().unwrap().0;
        assert_eq!(
            err(json!({"start": 10, "end": 5, "unit_size": 1})),
            "prime-count: end (5) must be greater than start (10)"
        );
        assert!(err(json!({"start": 0, "end": 5, "unit_size": 0})).contains("unit_size"));
        assert!(err(json!({"start": 0, "end": 10_000_000_000_000_000u64, "unit_size": 1_000_000_000_000u64})).contains("10^15"));
        assert!(err(json!({"start": 0, "end": 100_000_000, "unit_size": 1})).contains("units"));
        assert!(err(json!({"start": 0, "end": 5, "unit_size": 1, "x": 1})).contains("unknown field"));
        assert!(err(json!({"start": -1, "end": 5, "unit_size": 1})).contains("invalid params"));
    }

    #[test]
    fn checks_outputs_and_units() {
        let params = json!({"start": 0, "end": 100, "unit_size": 10});
        let unit = json!({"start": 10, "end": 20});
        assert!(PrimeCount.check_output(&params, &unit, &json!({"count": 4})).is_ok());
        assert!(PrimeCount.check_output(&params, &unit, &json!({"count": 7})).is_err());
        assert!(PrimeCount.check_output(&params, &unit, &json!({"count": "4"})).is_err());
        assert!(PrimeCount.check_output(&params, &unit, &json!({"count": 4, "x": 0})).is_err());
        let stray = json!({"start": 15, "end": 25});
        assert!(PrimeCount.check_output(&params, &stray, &json!({"count": 0})).is_err());
        let err = PrimeCount.compute(&params, &stray, &ComputeCtx::new());
        assert!(matches!(err, Err(ComputeError::Failed(_))));
    }

    #[test]
    fn cancel_stops_the_compute() {
        let params = json!({"start": 0, "end": 1_000_000_000, "unit_size": 1_000_000_000});
        let ctx = ComputeCtx::new();
        ctx.cancel();
        let unit = json!({"start": 0, "end": 1_000_000_000});
        assert_eq!(
            PrimeCount.compute(&params, &unit, &ctx),
            Err(ComputeError::Canceled)
        );
    }

    /// `cargo test -p sparecycles-apps --release -- --ignored --nocapture timing`
    #[test]
    #[ignore]
    fn timing_pi_of_a_billion_on_one_thread() {
        let one = pool(1);
        let best = (0..5)
            .map(|_| {
                let start = std::time::Instant::now();
                assert_eq!(one.install(|| count_primes(0, 1_000_000_000)), 50_847_534);
                start.elapsed()
            })
            .min()
            .unwrap();
        println!("count_primes(0, 10^9) on 1 thread: best of 5 {best:?}");
        let (lo, hi) = (MAX_END - 100_000_000, MAX_END);
        let start = std::time::Instant::now();
        let count = one.install(|| count_primes(lo, hi));
        println!("count_primes(10^15 - 10^8, 10^15) on 1 thread: {:?}", start.elapsed());
        assert_eq!(count, naive_count(lo, hi));
    }
}
