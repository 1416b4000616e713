//! The sandbox: one wasmtime engine per process, configured so that a module can touch nothing
//! but its own memory, and so that honest hosts agree bit for bit (NaNs canonicalised, no
//! threads, no relaxed SIMD). Every call into a module runs under a fuel budget (deterministic:
//! a module that runs out does so on every host), a memory cap, and optionally a wall-clock
//! limit; an epoch ticker lets a running call notice cancellation and pauses.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sparecycles_apps::ComputeCtx;
use wasmtime::{
    Config, Engine, ExternType, FuncType, Instance, Memory, Module, ResourceLimiter, Store, Trap,
    UpdateDeadline, ValType, WasmParams, WasmResults,
};

/// Most linear memory one module instance may have.
pub const MEMORY_LIMIT: usize = 64 << 20;
/// Most table elements one module instance may have.
const TABLE_LIMIT: usize = 100_000;
/// How often running calls look at their cancel flag and deadline.
const TICK: Duration = Duration::from_millis(10);

/// Words (8 bytes each) of the I/O area: 32 argument words, then areas A and B of 32 words.
pub const IO_WORDS: usize = 96;
/// Where the job's arguments are, in words from the start of the I/O area.
pub const ARGS_AT: usize = 0;
/// Area A: outputs of `sc_compute`, `sc_combine` and `sc_finish`; first input of `sc_combine`.
pub const A_AT: usize = 32;
/// Area B: second input of `sc_combine`.
pub const B_AT: usize = 64;
/// Most argument words, and most output words.
pub const MAX_WORDS: usize = 32;

/// Why a call into a module did not return normally.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// The worker asked the computation to stop.
    #[error("canceled")]
    Canceled,
    /// The module broke a limit, trapped or returned an error code; the message says which.
    #[error("{0}")]
    Failed(String),
}

/// What one call may use.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Fuel (roughly: WebAssembly instructions) one call may burn.
    pub fuel: u64,
    /// Wall-clock time one call may take; `None` on workers, where fuel and the unit's deadline
    /// bound it (a time limit would make slow honest workers fail where fast ones succeed).
    pub wall: Option<Duration>,
}

/// The process's engine, with its epoch ticker.
pub(crate) fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config
            .consume_fuel(true)
            .epoch_interruption(true)
            .cranelift_nan_canonicalization(true)
            // Relaxed SIMD may differ between CPUs. Threads need wasmtime's `threads` feature,
            // which is off: a module with shared memory or atomics fails validation.
            .wasm_relaxed_simd(false);
        let engine = Engine::new(&config).expect("the sandbox configuration is valid");
        let weak = engine.weak();
        let spawned = std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                }
            });
        // Without the ticker, fuel still bounds every call; only cancellation gets slower.
        drop(spawned);
        engine
    })
}

/// A compiled module and the facts about its exports the host needs.
#[derive(Clone)]
pub(crate) struct Program {
    pub(crate) module: Module,
    pub(crate) has_units: bool,
    pub(crate) has_items: bool,
    pub(crate) has_finish: bool,
}

/// The exports of the ABI and their signatures (params -> results).
const REQUIRED: [(&str, &str); 5] = [
    ("sc_io", "->i32"),
    ("sc_words", "->i32"),
    ("sc_floats", "->i32"),
    ("sc_compute", "i32,i64,i64,i64->i32"),
    ("sc_combine", "->i32"),
];
const OPTIONAL: [(&str, &str); 3] = [
    ("sc_units", "i32->i64"),
    ("sc_items", "i32,i64->i64"),
    ("sc_finish", "i32,i64->i32"),
];

fn val_name(t: &ValType) -> &'static str {
    match t {
        ValType::I32 => "i32",
        ValType::I64 => "i64",
        ValType::F32 => "f32",
        ValType::F64 => "f64",
        ValType::V128 => "v128",
        ValType::Ref(_) => "ref",
    }
}

fn signature(f: &FuncType) -> String {
    let list = |v: Vec<&str>| v.join(",");
    format!(
        "{}->{}",
        list(f.params().map(|t| val_name(&t)).collect()),
        list(f.results().map(|t| val_name(&t)).collect())
    )
}

impl Program {
    /// Compiles and checks a binary module: it imports nothing, exports its memory and the
    /// ABI's functions with the right signatures.
    pub(crate) fn compile(binary: &[u8]) -> Result<Program, String> {
        let module = Module::new(engine(), binary).map_err(|e| format!("invalid module: {e:#}"))?;
        if let Some(import) = module.imports().next() {
            return Err(format!(
                "the module imports {}.{}, which is not offered: modules may import nothing",
                import.module(),
                import.name()
            ));
        }
        match module.get_export("memory") {
            Some(ExternType::Memory(m)) if !m.is_shared() && !m.is_64() => {}
            _ => {
                return Err(
                    "the module must export its (unshared, 32-bit) memory as \"memory\"".into(),
                );
            }
        }
        let check = |name: &str, want: &str, required: bool| -> Result<bool, String> {
            match module.get_export(name) {
                Some(ExternType::Func(f)) if signature(&f) == want => Ok(true),
                Some(ExternType::Func(f)) => Err(format!(
                    "export {name} has signature ({}), the ABI wants ({want})",
                    signature(&f)
                )),
                Some(_) => Err(format!("export {name} must be a function ({want})")),
                None if required => Err(format!("the module does not export {name} ({want})")),
                None => Ok(false),
            }
        };
        for (name, want) in REQUIRED {
            check(name, want, true)?;
        }
        let [units, items, finish] = OPTIONAL;
        Ok(Program {
            has_units: check(units.0, units.1, false)?,
            has_items: check(items.0, items.1, false)?,
            has_finish: check(finish.0, finish.1, false)?,
            module,
        })
    }
}

/// What a store carries: the limits' bookkeeping and the flags a running call watches.
struct Host {
    ctx: Option<ComputeCtx>,
    deadline: Option<(Instant, Duration)>,
    /// The limit a call broke, recorded where it was noticed.
    breach: Option<RunError>,
}

impl ResourceLimiter for Host {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MEMORY_LIMIT {
            self.breach = Some(RunError::Failed(format!(
                "the module tried to grow its memory to {} MiB, over the limit of {} MiB",
                desired >> 20,
                MEMORY_LIMIT >> 20
            )));
            return Err(wasmtime::Error::msg("memory limit"));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > TABLE_LIMIT {
            self.breach = Some(RunError::Failed(format!(
                "the module tried to grow a table to {desired} elements, over the limit of \
                 {TABLE_LIMIT}"
            )));
            return Err(wasmtime::Error::msg("table limit"));
        }
        Ok(true)
    }
}

/// One instance of a module in its own store.
pub(crate) struct Sandboxed {
    store: Store<Host>,
    instance: Instance,
    memory: Memory,
    /// Byte offset of the I/O area.
    io: usize,
    limits: Limits,
}

impl Sandboxed {
    /// Instantiates `program`; `ctx`, when given, can cancel and pause its calls.
    pub(crate) fn new(
        program: &Program,
        limits: Limits,
        ctx: Option<&ComputeCtx>,
    ) -> Result<Sandboxed, RunError> {
        let mut store = Store::new(
            engine(),
            Host {
                ctx: ctx.cloned(),
                deadline: None,
                breach: None,
            },
        );
        store.limiter(|host| host);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut cx| {
            let host = cx.data_mut();
            if let Some(ctx) = &host.ctx
                && ctx.check().is_err()
            {
                host.breach = Some(RunError::Canceled);
                return Err(wasmtime::Error::msg("canceled"));
            }
            if let Some((deadline, wall)) = host.deadline
                && Instant::now() > deadline
            {
                host.breach = Some(RunError::Failed(format!(
                    "the module ran longer than {} ms in one call",
                    wall.as_millis()
                )));
                return Err(wasmtime::Error::msg("time limit"));
            }
            Ok(UpdateDeadline::Continue(1))
        });
        // A start function runs at instantiation, under the same budget as a call.
        store
            .set_fuel(limits.fuel)
            .map_err(|e| RunError::Failed(format!("cannot set fuel: {e}")))?;
        let instance = Instance::new(&mut store, &program.module, &[])
            .map_err(|e| failure(store.data_mut(), "instantiation", limits.fuel, e))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| RunError::Failed("the module exports no memory".into()))?;
        let mut sandboxed = Sandboxed {
            store,
            instance,
            memory,
            io: 0,
            limits,
        };
        let io: i32 = sandboxed.call("sc_io", ())?;
        let io = usize::try_from(io)
            .map_err(|_| RunError::Failed(format!("sc_io returned a negative address ({io})")))?;
        sandboxed.io = io;
        sandboxed.check_io()?;
        Ok(sandboxed)
    }

    /// The I/O area must lie inside the memory (which may have grown since sc_io).
    fn check_io(&mut self) -> Result<(), RunError> {
        let size = self.memory.data_size(&self.store);
        if !self.io.is_multiple_of(8) || self.io + IO_WORDS * 8 > size {
            return Err(RunError::Failed(format!(
                "sc_io returned {}, but the I/O area ({} bytes, 8-aligned) must lie within the \
                 memory ({size} bytes)",
                self.io,
                IO_WORDS * 8
            )));
        }
        Ok(())
    }

    /// Calls export `name` under this instance's limits.
    pub(crate) fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        name: &str,
        params: P,
    ) -> Result<R, RunError> {
        let func = self
            .instance
            .get_typed_func::<P, R>(&mut self.store, name)
            .map_err(|e| RunError::Failed(format!("export {name}: {e}")))?;
        let fuel = self.limits.fuel;
        self.store
            .set_fuel(fuel)
            .map_err(|e| RunError::Failed(format!("cannot set fuel: {e}")))?;
        self.store.data_mut().deadline = self.limits.wall.map(|w| (Instant::now() + w, w));
        self.store.data_mut().breach = None;
        self.store.set_epoch_deadline(1);
        func.call(&mut self.store, params)
            .map_err(|e| failure(self.store.data_mut(), name, fuel, e))
    }

    /// Writes 64-bit words into the I/O area at word `at`.
    pub(crate) fn write(&mut self, at: usize, words: &[u64]) -> Result<(), RunError> {
        self.check_io()?;
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        self.memory
            .write(&mut self.store, self.io + at * 8, &bytes)
            .map_err(|e| RunError::Failed(format!("cannot write the I/O area: {e}")))
    }

    /// Reads `n` 64-bit words from the I/O area at word `at`.
    pub(crate) fn read(&mut self, at: usize, n: usize) -> Result<Vec<u64>, RunError> {
        self.check_io()?;
        let mut bytes = vec![0u8; n * 8];
        self.memory
            .read(&self.store, self.io + at * 8, &mut bytes)
            .map_err(|e| RunError::Failed(format!("cannot read the I/O area: {e}")))?;
        Ok(bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect())
    }
}

/// Turns a failed call into the clearest message: the limit it broke, the trap, or the error.
fn failure(host: &mut Host, func: &str, fuel: u64, e: wasmtime::Error) -> RunError {
    if let Some(breach) = host.breach.take() {
        return match breach {
            RunError::Failed(msg) => RunError::Failed(format!("{msg} (in {func})")),
            canceled => canceled,
        };
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => RunError::Failed(format!(
            "the module ran out of fuel in {func}: one call may burn at most {fuel} (the job's \
             `fuel` parameter)"
        )),
        Some(trap) => RunError::Failed(format!("the module trapped in {func}: {trap}")),
        None => RunError::Failed(format!("{func} failed: {e:#}")),
    }
}
