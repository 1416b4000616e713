//! [`WasmApp`]: a module behind the [`App`] trait, so module jobs go through the same split,
//! lease, validation and assembly as the built-in apps. The ABI is in `job-specs/wasm/README.md`.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sparecycles_apps::split::RangeSplit;
use sparecycles_apps::{
    App, AppError, Assembled, Assembler, ComputeCtx, ComputeError, MAX_UNITS, Plan, parse_params,
    parse_value,
};

use crate::sandbox::{A_AT, ARGS_AT, B_AT, Limits, MAX_WORDS, Program, RunError, Sandboxed};
use crate::{MODULE_PREFIX, sha256_hex};

/// Fuel one call may burn unless the job says otherwise (tens of seconds of one core).
pub const DEFAULT_FUEL: u64 = 100_000_000_000;
/// Largest accepted `fuel`.
pub const MAX_FUEL: u64 = 100_000_000_000_000;
/// Wall-clock limit of each call the coordinator makes (split, combine, finish): they run
/// inside its request handlers and assembly, and must stay short whatever the fuel.
pub const COORDINATOR_CALL_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);
/// Most pieces one unit is cut into for the worker's threads. Fixed, so that the pieces and
/// the order in which they are combined do not depend on the thread count: workers with
/// different core counts agree bit for bit, floating point included.
pub const MAX_PIECES: u64 = 64;
/// Longest accepted label.
const MAX_LABEL_CHARS: usize = 64;

/// A module app. Cheap to clone: the compiled code is shared.
#[derive(Clone)]
pub struct WasmApp {
    name: String,
    program: Program,
    /// Words of an output (1 to 32).
    words: usize,
    /// Bit `i` set: word `i` is an `f64`, otherwise an `i64`.
    floats: u32,
}

impl std::fmt::Debug for WasmApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmApp")
            .field("name", &self.name)
            .field("words", &self.words)
            .finish()
    }
}

/// The parameters of a module job.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// Passed to every call: integers as `i64`, other numbers as `f64`.
    #[serde(default)]
    args: Vec<serde_json::Number>,
    /// `[start, end)`: the host splits it into units of `unit_size` (instead of `sc_units`).
    #[serde(default)]
    range: Option<[u64; 2]>,
    #[serde(default)]
    unit_size: Option<u64>,
    /// Float words of two outputs agree when within this relative distance; exact otherwise.
    #[serde(default)]
    rel_tolerance: Option<f64>,
    /// Fuel one call may burn.
    #[serde(default)]
    fuel: Option<u64>,
    /// Names of the result's words.
    #[serde(default)]
    labels: Option<Vec<String>>,
}

/// Checked parameters.
#[derive(Debug, Clone)]
struct Job {
    args: Vec<u64>,
    range: Option<RangeSplit>,
    rel_tolerance: Option<f64>,
    fuel: u64,
    labels: Option<Vec<String>>,
}

/// A unit: its sequence number and, for range jobs, its span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Unit {
    seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end: Option<u64>,
}

/// A unit's output, and the job's result: one JSON number per word.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Output {
    values: Vec<serde_json::Number>,
}

impl WasmApp {
    /// Compiles and checks a binary module; its app name is `wasm:` and its SHA-256.
    pub fn new(binary: &[u8]) -> Result<WasmApp, String> {
        let program = Program::compile(binary)?;
        let mut probe = Sandboxed::new(&program, coordinator_limits(DEFAULT_FUEL), None)
            .map_err(|e| e.to_string())?;
        let words: i32 = probe.call("sc_words", ()).map_err(|e| e.to_string())?;
        let floats: i32 = probe.call("sc_floats", ()).map_err(|e| e.to_string())?;
        let words = usize::try_from(words)
            .ok()
            .filter(|w| (1..=MAX_WORDS).contains(w))
            .ok_or_else(|| format!("sc_words returned {words}; outputs have 1 to 32 words"))?;
        let floats = floats as u32;
        if words < 32 && floats >> words != 0 {
            return Err(format!(
                "sc_floats returned {floats:#x}, which marks words beyond the {words} of an output"
            ));
        }
        Ok(WasmApp {
            name: format!("{MODULE_PREFIX}{}", sha256_hex(binary)),
            program,
            words,
            floats,
        })
    }

    /// The module's SHA-256, in hex.
    pub fn hash(&self) -> &str {
        &self.name[MODULE_PREFIX.len()..]
    }

    fn is_float(&self, word: usize) -> bool {
        self.floats >> word & 1 == 1
    }

    fn checked(&self, params: &Value) -> Result<Job, AppError> {
        let name = self.name.as_str();
        let p: Params = parse_params(name, params)?;
        if p.args.len() > MAX_WORDS {
            return Err(AppError(format!(
                "{name}: {} args; at most {MAX_WORDS} are passed to a module",
                p.args.len()
            )));
        }
        let args = p
            .args
            .iter()
            .map(|n| match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => Ok(i as u64),
                (None, Some(_)) if n.is_u64() => Err(AppError(format!(
                    "{name}: args value {n} does not fit a 64-bit signed integer"
                ))),
                (None, Some(f)) => Ok(f.to_bits()),
                (None, None) => Err(AppError(format!("{name}: args value {n} is not a number"))),
            })
            .collect::<Result<Vec<u64>, AppError>>()?;
        let range = match (p.range, p.unit_size) {
            (None, None) => None,
            (Some([start, end]), Some(size)) => {
                if end > i64::MAX as u64 {
                    return Err(AppError(format!(
                        "{name}: range end ({end}) must be at most 2^63 - 1"
                    )));
                }
                Some(RangeSplit::new(name, start, end, size)?)
            }
            _ => {
                return Err(AppError(format!(
                    "{name}: range and unit_size go together (or leave both out and let the \
                     module's sc_units split the job)"
                )));
            }
        };
        if range.is_none() && !self.program.has_units {
            return Err(AppError(format!(
                "{name}: the module exports no sc_units, so the job must give range and unit_size"
            )));
        }
        if let Some(t) = p.rel_tolerance
            && !(t.is_finite() && (0.0..1.0).contains(&t))
        {
            return Err(AppError(format!(
                "{name}: rel_tolerance ({t}) must be at least 0 and below 1"
            )));
        }
        let fuel = p.fuel.unwrap_or(DEFAULT_FUEL);
        if fuel == 0 || fuel > MAX_FUEL {
            return Err(AppError(format!(
                "{name}: fuel ({fuel}) must be between 1 and 10^14"
            )));
        }
        if let Some(labels) = &p.labels {
            if labels.len() != self.words {
                return Err(AppError(format!(
                    "{name}: {} labels for outputs of {} words",
                    labels.len(),
                    self.words
                )));
            }
            if let Some(bad) = labels.iter().find(|l| {
                l.is_empty()
                    || l.chars().count() > MAX_LABEL_CHARS
                    || l.chars().any(char::is_control)
            }) {
                return Err(AppError(format!(
                    "{name}: label {bad:?} must be 1 to {MAX_LABEL_CHARS} printable characters"
                )));
            }
        }
        Ok(Job {
            args,
            range,
            rel_tolerance: p.rel_tolerance,
            fuel,
            labels: p.labels,
        })
    }

    /// Parses a unit and checks its shape against the job (the coordinator only ever hands out
    /// units of its plan; this catches a unit that cannot be one).
    fn checked_unit(&self, job: &Job, unit: &Value) -> Result<Unit, AppError> {
        let u: Unit = parse_value(&format!("{} unit", self.name), unit)?;
        let fits = match (&job.range, u.start, u.end) {
            (Some(split), Some(start), Some(end)) => {
                split.seq_of(sparecycles_apps::split::Span { start, end }) == Some(u.seq)
            }
            (None, None, None) => u.seq < MAX_UNITS,
            _ => false,
        };
        if !fits {
            return Err(AppError(format!(
                "{}: {unit} is not a unit of this job",
                self.name
            )));
        }
        Ok(u)
    }

    fn instance(&self, limits: Limits, ctx: Option<&ComputeCtx>) -> Result<Sandboxed, RunError> {
        Sandboxed::new(&self.program, limits, ctx)
    }

    /// Combines `b` into `a` with `sc_combine`.
    fn combine(&self, s: &mut Sandboxed, a: &[u64], b: &[u64]) -> Result<Vec<u64>, RunError> {
        s.write(A_AT, a)?;
        s.write(B_AT, b)?;
        code("sc_combine", s.call("sc_combine", ())?)?;
        s.read(A_AT, self.words)
    }

    /// The words of an output, checked: the right count, integers where the module said so.
    fn words_of(&self, what: &str, value: &Value) -> Result<Vec<u64>, AppError> {
        let out: Output = parse_value(&format!("{} {what}", self.name), value)?;
        if out.values.len() != self.words {
            return Err(AppError(format!(
                "{}: {what} has {} values, the module's outputs have {}",
                self.name,
                out.values.len(),
                self.words
            )));
        }
        out.values
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let word = if self.is_float(i) {
                    n.as_f64().filter(|f| f.is_finite()).map(f64::to_bits)
                } else {
                    n.as_i64().map(|v| v as u64)
                };
                word.ok_or_else(|| {
                    AppError(format!(
                        "{}: {what} value {i} ({n}) is not a finite {}",
                        self.name,
                        if self.is_float(i) { "f64" } else { "i64" }
                    ))
                })
            })
            .collect()
    }

    /// The JSON numbers of an output's words; a NaN or infinite float is refused.
    fn values_of(&self, words: &[u64]) -> Result<Vec<serde_json::Number>, RunError> {
        words
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                if !self.is_float(i) {
                    return Ok((w as i64).into());
                }
                serde_json::Number::from_f64(f64::from_bits(w)).ok_or_else(|| {
                    RunError::Failed(format!(
                        "output word {i} is {}, not a finite number",
                        f64::from_bits(w)
                    ))
                })
            })
            .collect()
    }
}

fn coordinator_limits(fuel: u64) -> Limits {
    Limits {
        fuel,
        wall: Some(COORDINATOR_CALL_LIMIT),
    }
}

/// A negative return code is the module's own error.
fn code(func: &str, rc: i32) -> Result<(), RunError> {
    if rc < 0 {
        return Err(RunError::Failed(format!("{func} returned error code {rc}")));
    }
    Ok(())
}

fn compute_error(e: RunError) -> ComputeError {
    match e {
        RunError::Canceled => ComputeError::Canceled,
        RunError::Failed(msg) => ComputeError::Failed(msg),
    }
}

/// The `i`-th of `n` near-equal pieces of `[lo, hi)`.
fn piece(lo: u64, hi: u64, i: u64, n: u64) -> (u64, u64) {
    let len = u128::from(hi - lo);
    let at = |k: u64| lo + (len * u128::from(k) / u128::from(n)) as u64;
    (at(i), at(i + 1))
}

struct ModulePlan {
    range: Option<RangeSplit>,
    count: u64,
}

impl Plan for ModulePlan {
    fn unit_count(&self) -> u64 {
        self.count
    }

    fn unit(&self, seq: u64) -> Value {
        match &self.range {
            Some(split) => {
                let span = split.span(seq);
                json!(Unit {
                    seq,
                    start: Some(span.start),
                    end: Some(span.end)
                })
            }
            None => json!(Unit {
                seq,
                start: None,
                end: None
            }),
        }
    }
}

impl App for WasmApp {
    fn name(&self) -> &str {
        &self.name
    }

    fn plan(&self, params: &Value) -> Result<Box<dyn Plan>, AppError> {
        let job = self.checked(params)?;
        let count = match &job.range {
            Some(split) => split.unit_count(),
            None => {
                let fail = |e: RunError| AppError(format!("{}: sc_units: {e}", self.name));
                let mut s = self
                    .instance(coordinator_limits(job.fuel), None)
                    .map_err(fail)?;
                s.write(ARGS_AT, &job.args).map_err(fail)?;
                let n: i64 = s.call("sc_units", (job.args.len() as i32,)).map_err(fail)?;
                if n < 0 {
                    return Err(AppError(format!(
                        "{}: sc_units refused the args with error code {n}",
                        self.name
                    )));
                }
                n as u64
            }
        };
        if count == 0 || count > MAX_UNITS {
            return Err(AppError(format!(
                "{}: the job splits into {count} units; between 1 and {MAX_UNITS} are accepted",
                self.name
            )));
        }
        Ok(Box::new(ModulePlan {
            range: job.range,
            count,
        }))
    }

    fn compute(
        &self,
        params: &Value,
        unit: &Value,
        ctx: &ComputeCtx,
    ) -> Result<Value, ComputeError> {
        let failed = |e: AppError| ComputeError::Failed(e.0);
        let job = self.checked(params).map_err(failed)?;
        let u = self.checked_unit(&job, unit).map_err(failed)?;
        let limits = Limits {
            fuel: job.fuel,
            wall: None,
        };
        let nargs = job.args.len() as i32;
        let mut lead = self.instance(limits, Some(ctx)).map_err(compute_error)?;
        let (lo, hi) = match (u.start, u.end) {
            (Some(start), Some(end)) => (start, end),
            _ if self.program.has_items => {
                lead.write(ARGS_AT, &job.args).map_err(compute_error)?;
                let n: i64 = lead
                    .call("sc_items", (nargs, u.seq as i64))
                    .map_err(compute_error)?;
                let n = u64::try_from(n).map_err(|_| {
                    ComputeError::Failed(format!("sc_items returned error code {n}"))
                })?;
                (0, n)
            }
            _ => (0, 1),
        };
        let pieces = (hi - lo).clamp(1, MAX_PIECES);
        ctx.set_total(pieces);
        // One instance per piece, in parallel on the pool; the outputs are combined in piece
        // order afterwards, so the thread count changes nothing.
        let outputs = (0..pieces)
            .into_par_iter()
            .map(|i| {
                ctx.check().map_err(|_| RunError::Canceled)?;
                let (a, b) = piece(lo, hi, i, pieces);
                let mut s = self.instance(limits, Some(ctx))?;
                s.write(ARGS_AT, &job.args)?;
                code(
                    "sc_compute",
                    s.call("sc_compute", (nargs, u.seq as i64, a as i64, b as i64))?,
                )?;
                let out = s.read(A_AT, self.words)?;
                ctx.advance(1);
                Ok(out)
            })
            .collect::<Result<Vec<Vec<u64>>, RunError>>()
            .map_err(compute_error)?;
        let mut acc = outputs[0].clone();
        for out in &outputs[1..] {
            ctx.check()?;
            acc = self.combine(&mut lead, &acc, out).map_err(compute_error)?;
        }
        let values = self.values_of(&acc).map_err(compute_error)?;
        Ok(json!(Output { values }))
    }

    fn check_output(&self, params: &Value, unit: &Value, output: &Value) -> Result<(), AppError> {
        let job = self.checked(params)?;
        self.checked_unit(&job, unit)?;
        self.words_of("output", output).map(drop)
    }

    fn compare(&self, params: &Value, a: &Value, b: &Value) -> bool {
        let tolerance = self
            .checked(params)
            .ok()
            .and_then(|j| j.rel_tolerance)
            .unwrap_or(0.0);
        let (Ok(a), Ok(b)) = (self.words_of("output", a), self.words_of("output", b)) else {
            return false;
        };
        a.iter().zip(&b).enumerate().all(|(i, (&x, &y))| {
            if !self.is_float(i) || x == y {
                return x == y;
            }
            let (x, y) = (f64::from_bits(x), f64::from_bits(y));
            (x - y).abs() <= tolerance * x.abs().max(y.abs())
        })
    }

    fn assembler(&self, params: &Value) -> Result<Box<dyn Assembler>, AppError> {
        let job = self.checked(params)?;
        let sandbox = self
            .instance(coordinator_limits(job.fuel), None)
            .map_err(|e| AppError(format!("{}: {e}", self.name)))?;
        Ok(Box::new(ModuleAssembler {
            app: self.clone(),
            job,
            sandbox,
            acc: None,
            units: 0,
        }))
    }
}

/// Folds canonical outputs with `sc_combine` in unit order, then applies `sc_finish`.
struct ModuleAssembler {
    app: WasmApp,
    job: Job,
    sandbox: Sandboxed,
    acc: Option<Vec<u64>>,
    units: u64,
}

impl Assembler for ModuleAssembler {
    fn push(&mut self, seq: u64, output: &Value) -> Result<(), AppError> {
        let fail = |e: RunError| AppError(format!("{}: unit {seq}: {e}", self.app.name));
        let words = self.app.words_of("output", output)?;
        self.acc = Some(match self.acc.take() {
            None => words,
            Some(acc) => self
                .app
                .combine(&mut self.sandbox, &acc, &words)
                .map_err(fail)?,
        });
        self.units += 1;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<Assembled, AppError> {
        let name = self.app.name.clone();
        let fail = |e: RunError| AppError(format!("{name}: {e}"));
        let mut acc = self
            .acc
            .take()
            .ok_or_else(|| AppError(format!("{name}: no outputs to assemble")))?;
        if self.app.program.has_finish {
            let s = &mut self.sandbox;
            s.write(ARGS_AT, &self.job.args).map_err(fail)?;
            s.write(A_AT, &acc).map_err(fail)?;
            let rc: i32 = s
                .call("sc_finish", (self.job.args.len() as i32, self.units as i64))
                .map_err(fail)?;
            code("sc_finish", rc).map_err(fail)?;
            acc = s.read(A_AT, self.app.words).map_err(fail)?;
        }
        let values = self.app.values_of(&acc).map_err(fail)?;
        let mut result = json!({ "values": values, "units": self.units });
        if let Some(labels) = &self.job.labels {
            let named: serde_json::Map<String, Value> = labels
                .iter()
                .cloned()
                .zip(values.iter().map(|v| Value::Number(v.clone())))
                .collect();
            result["named"] = Value::Object(named);
        }
        Ok(Assembled::json(&result))
    }
}
