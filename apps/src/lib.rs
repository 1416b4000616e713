//! The computations: the [`App`] trait and the built-in apps.
//!
//! Apps are pure: no I/O, no clocks, no global state. The coordinator uses `plan`, `compare`
//! and `assembler`; the worker uses `compute`, which spreads one unit over the threads of the
//! rayon pool it is called in.

pub mod collatz;
pub mod ctx;
pub mod integrate;
pub mod mandelbrot;
pub mod monte_carlo_pi;
pub mod prime_count;
mod resume;
pub mod split;

use serde::de::DeserializeOwned;
use serde_json::Value;

pub use ctx::ComputeCtx;

/// Where a resumable compute hands its checkpoints: called between pieces of work with the state
/// so far (apps have no clock; the caller decides which calls to store, and how often).
pub type SaveCheckpoint<'a> = &'a (dyn Fn(&Value) + Sync);

/// Most units one job may split into.
pub const MAX_UNITS: u64 = 10_000_000;

/// Default bound of one unit's output, in bytes of compact JSON.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 1024;

/// A refused parameter set or output; the message is shown to the submitter as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AppError(pub String);

impl AppError {
    pub fn new(msg: impl Into<String>) -> Self {
        AppError(msg.into())
    }
}

/// Why a compute did not produce an output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComputeError {
    /// The worker asked the computation to stop (job canceled, shutdown).
    #[error("canceled")]
    Canceled,
    /// The unit cannot be computed (bad unit, arithmetic overflow…): reported as a task error.
    #[error("{0}")]
    Failed(String),
}

/// A job's parameters, checked and ready to be split into units.
pub trait Plan: Send + Sync {
    /// Number of units; at least 1 and at most [`MAX_UNITS`].
    fn unit_count(&self) -> u64;
    /// The slice of unit `seq` (`seq < unit_count()`), sent to workers as the task's `unit`.
    fn unit(&self, seq: u64) -> Value;
    /// Relative amount of work in unit `seq` (for credit); by default every unit weighs 1.
    fn unit_work(&self, _seq: u64) -> f64 {
        1.0
    }
}

/// Streams canonical outputs, in unit order, into the job's result.
pub trait Assembler: Send {
    /// Takes the canonical output of unit `seq`; called once per unit, in increasing `seq`.
    fn push(&mut self, seq: u64, output: &Value) -> Result<(), AppError>;
    /// Produces the job's result once every unit was pushed.
    fn finish(self: Box<Self>) -> Result<Assembled, AppError>;
}

/// A job's assembled result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assembled {
    /// `application/json` or, for example, `image/png`.
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Assembled {
    pub fn json(value: &Value) -> Self {
        Assembled {
            content_type: "application/json",
            body: serde_json::to_vec(value).unwrap_or_default(),
        }
    }
}

/// Runs a whole job in this process, unit after unit on the current rayon pool, and assembles
/// it: the result a coordinator with one honest worker would produce. For tests, examples and
/// benchmarks that compare the distributed answer with the app's own.
pub fn run_in_process(app: &dyn App, params: &Value) -> Result<Assembled, AppError> {
    let plan = app.plan(params)?;
    let mut assembler = app.assembler(params)?;
    for seq in 0..plan.unit_count() {
        let output = app
            .compute(params, &plan.unit(seq), &ComputeCtx::new())
            .map_err(|e| AppError(format!("unit {seq}: {e}")))?;
        assembler.push(seq, &output)?;
    }
    assembler.finish()
}

/// A named computation with its four duties: check and split, compute, compare, assemble.
pub trait App: Send + Sync + 'static {
    /// The name job specs use (`"prime-count"`; `wasm:<sha256>` for module apps).
    fn name(&self) -> &str;
    /// Checks the job's parameters and returns its split.
    fn plan(&self, params: &Value) -> Result<Box<dyn Plan>, AppError>;
    /// Computes one unit on the current rayon pool (worker side). Checks `ctx` often enough to
    /// stop within a fraction of a second, and reports progress through it.
    fn compute(
        &self,
        params: &Value,
        unit: &Value,
        ctx: &ComputeCtx,
    ) -> Result<Value, ComputeError>;
    /// [`compute`](Self::compute), resumable: starts from `checkpoint` (a value this app passed
    /// to `save` while computing the same unit earlier; one that does not fit is ignored) and
    /// calls `save` with its progress between pieces of work. The output is exactly the one
    /// `compute` gives, however often the unit was interrupted and resumed. By default the app
    /// has no checkpoints and computes the whole unit.
    fn compute_resumable(
        &self,
        params: &Value,
        unit: &Value,
        ctx: &ComputeCtx,
        checkpoint: Option<&Value>,
        save: SaveCheckpoint<'_>,
    ) -> Result<Value, ComputeError> {
        let _ = (checkpoint, save);
        self.compute(params, unit, ctx)
    }
    /// Checks that a reported output has the right shape and size for this unit (coordinator
    /// side, before it is stored); an output that fails is counted as a task error.
    fn check_output(&self, params: &Value, unit: &Value, output: &Value) -> Result<(), AppError>;
    /// Largest output, as compact JSON bytes, this app accepts for `unit`: the coordinator
    /// refuses bigger ones before looking inside, so a worker cannot make it store more.
    /// Small by default: most outputs are a few numbers.
    fn max_output_bytes(&self, _params: &Value, _unit: &Value) -> usize {
        DEFAULT_MAX_OUTPUT_BYTES
    }
    /// Whether two outputs of the same unit agree. Exact by default.
    fn compare(&self, _params: &Value, a: &Value, b: &Value) -> bool {
        a == b
    }
    /// Media type of the assembled result.
    fn result_type(&self) -> &'static str {
        "application/json"
    }
    /// Starts assembling a job's result from its canonical outputs.
    fn assembler(&self, params: &Value) -> Result<Box<dyn Assembler>, AppError>;
}

static APPS: [&dyn App; 5] = [
    &prime_count::PrimeCount,
    &collatz::Collatz,
    &monte_carlo_pi::MonteCarloPi,
    &mandelbrot::Mandelbrot,
    &integrate::Integrate,
];

/// Every built-in app.
pub fn all() -> &'static [&'static dyn App] {
    &APPS
}

/// The built-in app called `name`.
pub fn find(name: &str) -> Option<&'static dyn App> {
    APPS.iter().copied().find(|a| a.name() == name)
}

/// Names of every built-in app.
pub fn names() -> Vec<String> {
    APPS.iter().map(|a| a.name().to_owned()).collect()
}

/// Parses `params` into an app's typed parameters, with a message that names the app and the
/// offending field.
pub fn parse_params<T: DeserializeOwned>(app: &str, params: &Value) -> Result<T, AppError> {
    serde_path_to_error::deserialize(params).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            AppError(format!("{app}: invalid params: {}", e.inner()))
        } else {
            AppError(format!("{app}: invalid params.{path}: {}", e.inner()))
        }
    })
}

/// Parses a unit or an output, for compute and assembly.
pub fn parse_value<T: DeserializeOwned>(what: &str, value: &Value) -> Result<T, AppError> {
    serde_json::from_value(value.clone()).map_err(|e| AppError(format!("invalid {what}: {e}")))
}
