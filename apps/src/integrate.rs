//! `integrate`: the midpoint-rule integral of a function from a small menu over `[a, b]`.
//!
//! This app exists to exercise fuzzy validation. Each unit adds up its points with a plain
//! parallel float sum, whose rounding (and so the last bits of the output) depends on how
//! rayon splits the work, that is on the thread count and on stealing. Two honest outputs of a
//! unit therefore agree when they are within the job's `rel_tolerance` of each other, not when
//! they are equal.
//!
//! Point `k` (`0 <= k < points`) is the midpoint `a + (k + 1/2) h` of the `k`-th of `points`
//! equal steps `h = (b - a) / points`; a unit is a run of consecutive point indices and its
//! output is `h` times the sum of `f` over them, so the units' outputs add up to the integral.

#[cfg(test)]
mod tests;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    App, AppError, Assembled, Assembler, ComputeCtx, ComputeError, MAX_UNITS, Plan, parse_params,
    parse_value,
};

const NAME: &str = "integrate";

/// Largest accepted `|a|` and `|b|`.
pub const MAX_ABS_BOUND: f64 = 1e6;
/// Largest accepted `points`.
pub const MAX_POINTS: u64 = 1_000_000_000_000;
/// Largest accepted `unit_points` (minutes of one core).
pub const MAX_UNIT_POINTS: u64 = 100_000_000_000;
/// `rel_tolerance` when the params do not give one.
pub const DEFAULT_REL_TOLERANCE: f64 = 1e-9;
/// Accepted `rel_tolerance`s: from about a few float roundings to a loose 0.1 %.
pub const REL_TOLERANCE_RANGE: (f64, f64) = (1e-15, 1e-3);
/// Smallest accepted `a` for `oscillating`, whose `exp(-x/4)` factor overflows below about
/// -2839; at -1000 it is about 10^108, far from it.
pub const OSCILLATING_MIN_A: f64 = -1000.0;
/// Two outputs this close agree whatever their size (both are zero up to underflow).
const TINY: f64 = 1e-300;
/// Points per piece of work handed to a thread (well under a millisecond).
const BLOCK: u64 = 1 << 16;

/// The `integrate` app.
#[derive(Debug, Clone, Copy)]
pub struct Integrate;

/// The integrands on the menu, each with a well-known integral.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Function {
    /// `exp(-x^2)`; its integral over the real line is `sqrt(pi)`.
    Gaussian,
    /// `(sin x / x)^2`, 1 at `x = 0`; its integral over the real line is `pi`, and from 0 to
    /// `x` it is `Si(2x) - sin(x)^2 / x`.
    Sinc2,
    /// Runge's `1 / (1 + 25 x^2)`; its integral from -1 to 1 is `(2/5) atan 5`.
    Runge,
    /// `cos(20x) exp(-x/4)`, with antiderivative
    /// `exp(-x/4) (20 sin 20x - cos(20x) / 4) / (400 + 1/16)`.
    Oscillating,
}

impl Function {
    pub fn name(self) -> &'static str {
        match self {
            Function::Gaussian => "gaussian",
            Function::Sinc2 => "sinc2",
            Function::Runge => "runge",
            Function::Oscillating => "oscillating",
        }
    }

    pub fn eval(self, x: f64) -> f64 {
        match self {
            Function::Gaussian => (-x * x).exp(),
            Function::Sinc2 => {
                if x == 0.0 {
                    1.0
                } else {
                    let s = x.sin() / x;
                    s * s
                }
            }
            Function::Runge => 1.0 / (1.0 + 25.0 * x * x),
            Function::Oscillating => (20.0 * x).cos() * (-x / 4.0).exp(),
        }
    }

    /// An upper bound of `|f|` on `[lo, ∞)`.
    fn bound_from(self, lo: f64) -> f64 {
        match self {
            Function::Gaussian | Function::Sinc2 | Function::Runge => 1.0,
            Function::Oscillating => (-lo / 4.0).exp(),
        }
    }

    fn nonnegative(self) -> bool {
        !matches!(self, Function::Oscillating)
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    function: Function,
    a: f64,
    b: f64,
    points: u64,
    unit_points: u64,
    #[serde(default)]
    rel_tolerance: Option<f64>,
}

/// A unit: the points `first..first + count`, the `index`-th run of `unit_points`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Unit {
    index: u64,
    first: u64,
    count: u64,
}

/// A unit's output: `h` times the sum of `f` over its points.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Output {
    value: f64,
}

impl Params {
    fn unit_count(&self) -> u64 {
        self.points.div_ceil(self.unit_points)
    }

    fn unit(&self, index: u64) -> Unit {
        let first = index.saturating_mul(self.unit_points).min(self.points);
        Unit {
            index,
            first,
            count: self.unit_points.min(self.points - first),
        }
    }

    fn step(&self) -> f64 {
        (self.b - self.a) / self.points as f64
    }

    /// Point `k`: the midpoint of the `k`-th step.
    fn x(&self, h: f64, k: u64) -> f64 {
        self.a + (k as f64 + 0.5) * h
    }

    fn rel_tolerance(&self) -> f64 {
        self.rel_tolerance.unwrap_or(DEFAULT_REL_TOLERANCE)
    }
}

/// Parses and checks the parameters.
fn checked(params: &Value) -> Result<Params, AppError> {
    let p: Params = parse_params(NAME, params)?;
    for (field, v) in [("a", p.a), ("b", p.b)] {
        if !(-MAX_ABS_BOUND..=MAX_ABS_BOUND).contains(&v) {
            return Err(AppError(format!(
                "{NAME}: {field} ({v}) must be a finite number between -10^6 and 10^6"
            )));
        }
    }
    if p.a >= p.b {
        return Err(AppError(format!(
            "{NAME}: a ({}) must be less than b ({})",
            p.a, p.b
        )));
    }
    if p.function == Function::Oscillating && p.a < OSCILLATING_MIN_A {
        return Err(AppError(format!(
            "{NAME}: a ({}) must be at least {OSCILLATING_MIN_A} for oscillating, whose \
             exp(-x/4) factor overflows for very negative x",
            p.a
        )));
    }
    if p.points == 0 || p.points > MAX_POINTS {
        return Err(AppError(format!(
            "{NAME}: points ({}) must be between 1 and 10^12",
            p.points
        )));
    }
    if p.unit_points == 0 || p.unit_points > MAX_UNIT_POINTS {
        return Err(AppError(format!(
            "{NAME}: unit_points ({}) must be between 1 and 10^11",
            p.unit_points
        )));
    }
    let count = p.unit_count();
    if count > MAX_UNITS {
        return Err(AppError(format!(
            "{NAME}: unit_points ({}) splits the points into {count} units, more than the \
             maximum of {MAX_UNITS}; use a larger unit_points",
            p.unit_points
        )));
    }
    if let Some(tol) = p.rel_tolerance {
        let (lo, hi) = REL_TOLERANCE_RANGE;
        if !(lo..=hi).contains(&tol) {
            return Err(AppError(format!(
                "{NAME}: rel_tolerance ({tol:e}) must be between 1e-15 and 1e-3"
            )));
        }
    }
    Ok(p)
}

/// Parses a unit and checks that it is one of this job's.
fn checked_unit(p: &Params, unit: &Value) -> Result<Unit, AppError> {
    let u: Unit = parse_value(&format!("{NAME} unit"), unit)?;
    if u.index >= p.unit_count() || p.unit(u.index) != u {
        return Err(AppError(format!(
            "{NAME}: unit {{index: {}, first: {}, count: {}}} is not a unit of this job",
            u.index, u.first, u.count
        )));
    }
    Ok(u)
}

/// The finite value of an output, if it has exactly the right shape.
fn value_of(output: &Value) -> Option<f64> {
    let out: Output = serde_json::from_value(output.clone()).ok()?;
    out.value.is_finite().then_some(out.value)
}

struct IntegratePlan {
    params: Params,
}

impl Plan for IntegratePlan {
    fn unit_count(&self) -> u64 {
        self.params.unit_count()
    }

    fn unit(&self, seq: u64) -> Value {
        json!(self.params.unit(seq))
    }

    fn unit_work(&self, seq: u64) -> f64 {
        self.params.unit(seq).count as f64 / 1e7
    }
}

impl App for Integrate {
    fn name(&self) -> &'static str {
        NAME
    }

    fn plan(&self, params: &Value) -> Result<Box<dyn Plan>, AppError> {
        Ok(Box::new(IntegratePlan {
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
        ctx.set_total(u.count);
        let h = p.step();
        let end = u.first + u.count;
        // The order in which the blocks' sums are added follows rayon's split, so the last
        // bits of `sum` depend on the thread count: that is the point of this app.
        let sum = (0..u.count.div_ceil(BLOCK))
            .into_par_iter()
            .map(|blk| {
                ctx.check()?;
                let lo = u.first + blk * BLOCK;
                let hi = (lo + BLOCK).min(end);
                let s: f64 = (lo..hi).map(|k| p.function.eval(p.x(h, k))).sum();
                ctx.advance(hi - lo);
                Ok(s)
            })
            .try_reduce(|| 0.0, |x, y| Ok(x + y))?;
        let value = sum * h;
        if !value.is_finite() {
            return Err(ComputeError::Failed(format!(
                "{NAME}: the sum over points {}..{end} is not finite ({value})",
                u.first
            )));
        }
        Ok(json!(Output { value }))
    }

    fn check_output(&self, params: &Value, unit: &Value, output: &Value) -> Result<(), AppError> {
        let p = checked(params)?;
        let u = checked_unit(&p, unit)?;
        let out: Output = parse_value(&format!("{NAME} output"), output)?;
        let h = p.step();
        let width = u.count as f64 * h;
        let max = p.function.bound_from(p.a + u.first as f64 * h) * width * (1.0 + 1e-9);
        let min = if p.function.nonnegative() { 0.0 } else { -max };
        if !(min..=max).contains(&out.value) {
            return Err(AppError(format!(
                "{NAME}: value {} is outside [{min}, {max}], the bounds of {} over a unit of \
                 width {width}",
                out.value,
                p.function.name()
            )));
        }
        Ok(())
    }

    fn compare(&self, params: &Value, a: &Value, b: &Value) -> bool {
        let Ok(p) = checked(params) else {
            return false;
        };
        let (Some(a), Some(b)) = (value_of(a), value_of(b)) else {
            return false;
        };
        let diff = (a - b).abs();
        diff <= p.rel_tolerance() * a.abs().max(b.abs()) || diff <= TINY
    }

    fn assembler(&self, params: &Value) -> Result<Box<dyn Assembler>, AppError> {
        let p = checked(params)?;
        Ok(Box::new(Total {
            function: p.function,
            points: p.points,
            units: 0,
            sum: 0.0,
            compensation: 0.0,
        }))
    }
}

/// Adds up the units' values in order, with Neumaier's compensated summation so that the
/// total does not lose the small units' contributions next to large ones.
struct Total {
    function: Function,
    points: u64,
    units: u64,
    sum: f64,
    compensation: f64,
}

impl Total {
    fn add(&mut self, x: f64) {
        let t = self.sum + x;
        self.compensation += if self.sum.abs() >= x.abs() {
            (self.sum - t) + x
        } else {
            (x - t) + self.sum
        };
        self.sum = t;
    }
}

impl Assembler for Total {
    fn push(&mut self, seq: u64, output: &Value) -> Result<(), AppError> {
        let out: Output = parse_value(&format!("{NAME} output"), output)?;
        if !out.value.is_finite() {
            return Err(AppError(format!(
                "{NAME}: unit {seq}'s value ({}) is not finite",
                out.value
            )));
        }
        self.add(out.value);
        self.units += 1;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Assembled, AppError> {
        if self.units == 0 {
            return Err(AppError::new(format!("{NAME}: no unit to assemble")));
        }
        Ok(Assembled::json(&json!({
            "value": self.sum + self.compensation,
            "points": self.points,
            "function": self.function.name(),
        })))
    }
}
