//! `monte-carlo-pi`: estimates pi from the share of random points of the unit square that fall
//! in the quarter disc.
//!
//! The points come from a counter-based generator: coordinate `j` of unit `i` is SplitMix64's
//! output for the counter `j` of a stream keyed by `(seed, i)`, so any thread (or machine) can
//! compute any point, and the output is the same whatever the thread count. A point is the
//! pair of 53-bit integers `(a, b)` standing for `(a / 2^53, b / 2^53)`; it is inside when
//! `a^2 + b^2 <= 2^106`, tested exactly in integers.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    App, AppError, Assembled, Assembler, ComputeCtx, ComputeError, MAX_UNITS, Plan, parse_params,
    parse_value,
};

const NAME: &str = "monte-carlo-pi";

/// Largest accepted `samples`.
pub const MAX_SAMPLES: u64 = 10_000_000_000_000;
/// Largest accepted `unit_samples` (minutes of one core).
pub const MAX_UNIT_SAMPLES: u64 = 100_000_000_000;
/// Samples per piece of work handed to a thread (a few milliseconds).
const BLOCK: u64 = 1 << 20;

/// The `monte-carlo-pi` app.
#[derive(Debug, Clone, Copy)]
pub struct MonteCarloPi;

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    samples: u64,
    unit_samples: u64,
    seed: u64,
}

/// A unit: the `index`-th run of `samples` points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Unit {
    index: u64,
    samples: u64,
}

/// A unit's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tally {
    samples: u64,
    inside: u64,
}

impl Params {
    fn unit_count(&self) -> u64 {
        self.samples.div_ceil(self.unit_samples)
    }

    fn unit(&self, index: u64) -> Unit {
        let first = index * self.unit_samples;
        Unit {
            index,
            samples: self.unit_samples.min(self.samples.saturating_sub(first)),
        }
    }
}

/// Parses and checks the parameters.
fn checked(params: &Value) -> Result<Params, AppError> {
    let p: Params = parse_params(NAME, params)?;
    if p.samples == 0 || p.samples > MAX_SAMPLES {
        return Err(AppError(format!(
            "{NAME}: samples ({}) must be between 1 and 10^13",
            p.samples
        )));
    }
    if p.unit_samples == 0 || p.unit_samples > MAX_UNIT_SAMPLES {
        return Err(AppError(format!(
            "{NAME}: unit_samples ({}) must be between 1 and 10^11",
            p.unit_samples
        )));
    }
    let count = p.unit_count();
    if count > MAX_UNITS {
        return Err(AppError(format!(
            "{NAME}: unit_samples ({}) splits the samples into {count} units, more than the \
             maximum of {MAX_UNITS}; use a larger unit_samples",
            p.unit_samples
        )));
    }
    Ok(p)
}

/// Parses a unit and checks that it is one of this job's.
fn checked_unit(p: &Params, unit: &Value) -> Result<Unit, AppError> {
    let u: Unit = parse_value(&format!("{NAME} unit"), unit)?;
    if u.index >= p.unit_count() || p.unit(u.index) != u {
        return Err(AppError(format!(
            "{NAME}: unit {{index: {}, samples: {}}} is not a unit of this job",
            u.index, u.samples
        )));
    }
    Ok(u)
}

struct PiPlan {
    params: Params,
}

impl Plan for PiPlan {
    fn unit_count(&self) -> u64 {
        self.params.unit_count()
    }

    fn unit(&self, seq: u64) -> Value {
        json!(self.params.unit(seq))
    }

    fn unit_work(&self, seq: u64) -> f64 {
        self.params.unit(seq).samples as f64 / 1e7
    }
}

impl App for MonteCarloPi {
    fn name(&self) -> &'static str {
        NAME
    }

    fn plan(&self, params: &Value) -> Result<Box<dyn Plan>, AppError> {
        Ok(Box::new(PiPlan {
            params: checked(params)?,
        }))
    }

    fn compute(
        &self,
        params: &Value,
        unit: &Value,
        ctx: &ComputeCtx,
    ) -> Result<Value, ComputeError> {
        let failed = |e: AppError| ComputeError::Failed(e.0);
        let p = checked(params).map_err(failed)?;
        let u = checked_unit(&p, unit).map_err(failed)?;
        ctx.set_total(u.samples);
        let key = stream_key(p.seed, u.index);
        let inside = (0..u.samples.div_ceil(BLOCK))
            .into_par_iter()
            .map(|b| {
                ctx.check()?;
                let lo = b * BLOCK;
                let hi = (lo + BLOCK).min(u.samples);
                let inside = count_inside(key, lo, hi);
                ctx.advance(hi - lo);
                Ok(inside)
            })
            .try_reduce(|| 0, |a, b| Ok(a + b))?;
        Ok(json!(Tally {
            samples: u.samples,
            inside
        }))
    }

    fn check_output(&self, params: &Value, unit: &Value, output: &Value) -> Result<(), AppError> {
        let p = checked(params)?;
        let u = checked_unit(&p, unit)?;
        let out: Tally = parse_value(&format!("{NAME} output"), output)?;
        if out.samples != u.samples || out.inside > out.samples {
            return Err(AppError(format!(
                "{NAME}: {} inside out of {} samples does not fit a unit of {} samples",
                out.inside, out.samples, u.samples
            )));
        }
        // A binomial(n, pi/4) count more than 10 standard deviations off (odds ~1e-23) means
        // the points were not the ones asked for.
        let n = out.samples as f64;
        let q = std::f64::consts::FRAC_PI_4;
        let sigma = (n * q * (1.0 - q)).sqrt();
        if (out.inside as f64 - n * q).abs() > 10.0 * sigma + 10.0 {
            return Err(AppError(format!(
                "{NAME}: {} inside out of {} samples is implausible",
                out.inside, out.samples
            )));
        }
        Ok(())
    }

    fn assembler(&self, params: &Value) -> Result<Box<dyn Assembler>, AppError> {
        checked(params)?;
        Ok(Box::new(Totals {
            samples: 0,
            inside: 0,
        }))
    }
}

/// Adds up the units' tallies.
struct Totals {
    samples: u64,
    inside: u64,
}

impl Assembler for Totals {
    fn push(&mut self, _seq: u64, output: &Value) -> Result<(), AppError> {
        let out: Tally = parse_value(&format!("{NAME} output"), output)?;
        // Both stay below 10^13 for a checked job.
        self.samples = self.samples.saturating_add(out.samples);
        self.inside = self.inside.saturating_add(out.inside);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Assembled, AppError> {
        if self.samples == 0 {
            return Err(AppError::new(format!("{NAME}: no samples to assemble")));
        }
        let estimate = 4.0 * self.inside as f64 / self.samples as f64;
        Ok(Assembled::json(&json!({
            "samples": self.samples,
            "inside": self.inside,
            "estimate": estimate,
        })))
    }
}

/// SplitMix64's increment (the golden ratio in 64 bits).
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's output function (Stafford's mix 13): a bijection that scrambles every bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The key of unit `index`'s stream: a scrambling of `(seed, index)`.
fn stream_key(seed: u64, index: u64) -> u64 {
    mix(seed ^ mix(index.wrapping_mul(GAMMA).wrapping_add(GAMMA)))
}

/// Counts the points `lo..hi` of the stream `key` that fall inside the quarter disc.
fn count_inside(key: u64, lo: u64, hi: u64) -> u64 {
    const ONE: u128 = 1 << 106;
    (lo..hi)
        .map(|j| {
            let c = key.wrapping_add((2 * j).wrapping_mul(GAMMA));
            let a = u128::from(mix(c) >> 11);
            let b = u128::from(mix(c.wrapping_add(GAMMA)) >> 11);
            u64::from(a * a + b * b <= ONE)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(params: &Value) -> Value {
        let plan = MonteCarloPi.plan(params).unwrap();
        let mut asm = MonteCarloPi.assembler(params).unwrap();
        for seq in 0..plan.unit_count() {
            let unit = plan.unit(seq);
            let out = MonteCarloPi
                .compute(params, &unit, &ComputeCtx::new())
                .unwrap();
            MonteCarloPi.check_output(params, &unit, &out).unwrap();
            asm.push(seq, &out).unwrap();
        }
        serde_json::from_slice(&asm.finish().unwrap().body).unwrap()
    }

    #[test]
    fn splitmix_matches_the_reference_sequence() {
        // SplitMix64 seeded with 0 (reference values from Vigna's splitmix64.c).
        assert_eq!(mix(GAMMA), 0xe220_a839_7b1d_cdaf);
        assert_eq!(mix(GAMMA.wrapping_mul(2)), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn ten_million_samples_come_close_to_pi() {
        let result = run(&json!({"samples": 10_000_000, "unit_samples": 3_000_000, "seed": 42}));
        assert_eq!(result["samples"], 10_000_000);
        let estimate = result["estimate"].as_f64().unwrap();
        assert!(
            (estimate - std::f64::consts::PI).abs() < 0.001,
            "{estimate}"
        );
        let inside = result["inside"].as_u64().unwrap();
        assert_eq!(estimate, 4.0 * inside as f64 / 1e7);
    }

    #[test]
    fn same_output_on_one_and_four_threads() {
        let params = json!({"samples": 5_000_000, "unit_samples": 2_500_000, "seed": 7});
        let unit = json!({"index": 1, "samples": 2_500_000});
        let compute = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| MonteCarloPi.compute(&params, &unit, &ComputeCtx::new()))
                .unwrap()
        };
        let one = compute(1);
        assert_eq!(one, compute(4));
        // A different seed or unit gives other points.
        let other = json!({"samples": 5_000_000, "unit_samples": 2_500_000, "seed": 8});
        let moved = MonteCarloPi
            .compute(&other, &unit, &ComputeCtx::new())
            .unwrap();
        assert_ne!(one, moved);
    }

    #[test]
    fn units_split_the_samples_exactly() {
        let params = json!({"samples": 10, "unit_samples": 4, "seed": 0});
        let plan = MonteCarloPi.plan(&params).unwrap();
        assert_eq!(plan.unit_count(), 3);
        assert_eq!(plan.unit(2), json!({"index": 2, "samples": 2}));
        let result = run(&params);
        assert_eq!(result["samples"], 10);
    }

    #[test]
    fn refuses_bad_params_and_outputs() {
        let err = |v: Value| MonteCarloPi.plan(&v).err().unwrap().0;
        assert!(err(json!({"samples": 0, "unit_samples": 1, "seed": 0})).contains("samples"));
        assert!(err(json!({"samples": 10, "unit_samples": 0, "seed": 0})).contains("unit_samples"));
        assert!(
            err(json!({"samples": 100_000_000_000_000u64, "unit_samples": 10_000_000, "seed": 0}))
                .contains("10^13")
        );
        assert!(
            err(json!({"samples": 1_000_000_000_000u64, "unit_samples": 1, "seed": 0}))
                .contains("units")
        );
        assert!(err(json!({"samples": 10, "unit_samples": 1})).contains("seed"));
        let params = json!({"samples": 10_000, "unit_samples": 1000, "seed": 3});
        let unit = json!({"index": 3, "samples": 1000});
        let check = |out: Value| MonteCarloPi.check_output(&params, &unit, &out);
        assert!(check(json!({"samples": 1000, "inside": 790})).is_ok());
        assert!(check(json!({"samples": 1000, "inside": 1001})).is_err());
        assert!(check(json!({"samples": 999, "inside": 790})).is_err());
        assert!(check(json!({"samples": 1000, "inside": 10})).is_err());
        let stray = json!({"index": 10, "samples": 1000});
        assert!(
            MonteCarloPi
                .check_output(&params, &stray, &json!({"samples": 1000, "inside": 790}))
                .is_err()
        );
    }
}
