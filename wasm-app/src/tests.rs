//! The sandbox and the ABI on the example modules and on modules that misbehave.

use serde_json::{Value, json};
use sparecycles_apps::{App, ComputeCtx, ComputeError};

use crate::{WasmApp, to_binary};

const NQUEENS: &[u8] = include_bytes!("../../job-specs/wasm/nqueens.wasm");
const MC: &[u8] = include_bytes!("../../job-specs/wasm/mc-integrate.wasm");

/// The smallest module that satisfies the ABI, with `body` as sc_compute's body.
fn module_with(body: &str) -> WasmApp {
    module_with_units(body, "(i64.const 2)")
}

/// Like [`module_with`], with `units` as sc_units' body.
fn module_with_units(body: &str, units: &str) -> WasmApp {
    let wat = format!(
        r#"(module
          (memory (export "memory") 1)
          (func (export "sc_io") (result i32) (i32.const 0))
          (func (export "sc_words") (result i32) (i32.const 1))
          (func (export "sc_floats") (result i32) (i32.const 0))
          (func (export "sc_units") (param i32) (result i64) {units})
          (func (export "sc_compute") (param i32 i64 i64 i64) (result i32) {body})
          (func (export "sc_combine") (result i32) (i32.const 0)))"#
    );
    WasmApp::new(&to_binary(wat.as_bytes()).unwrap()).unwrap()
}

/// Plans, computes on a pool of `threads`, checks, compares and assembles a whole job.
fn run(app: &WasmApp, params: &Value, threads: usize) -> Value {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let plan = app.plan(params).unwrap();
    let mut asm = app.assembler(params).unwrap();
    for seq in 0..plan.unit_count() {
        let unit = plan.unit(seq);
        let out = pool
            .install(|| app.compute(params, &unit, &ComputeCtx::new()))
            .unwrap();
        app.check_output(params, &unit, &out).unwrap();
        assert!(app.compare(params, &out, &out));
        asm.push(seq, &out).unwrap();
    }
    serde_json::from_slice(&asm.finish().unwrap().body).unwrap()
}

fn compute_error(app: &WasmApp, params: Value) -> String {
    let unit = app.plan(&params).unwrap().unit(0);
    match app.compute(&params, &unit, &ComputeCtx::new()) {
        Err(ComputeError::Failed(msg)) => msg,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn nqueens_counts_are_the_known_ones() {
    let app = WasmApp::new(NQUEENS).unwrap();
    assert_eq!(app.name(), format!("wasm:{}", crate::sha256_hex(NQUEENS)));
    for (n, count) in [(4, 2), (6, 4), (8, 92), (10, 724)] {
        let result = run(&app, &json!({"args": [n], "labels": ["solutions"]}), 2);
        assert_eq!(result["values"], json!([count]), "N = {n}");
        assert_eq!(result["named"]["solutions"], count);
        assert_eq!(result["units"], n);
    }
}

#[test]
fn monte_carlo_is_the_same_on_any_thread_count_and_close_to_pi() {
    let app = WasmApp::new(MC).unwrap();
    let params = json!({"args": [7, 0.0, 1.0], "range": [0, 2_000_000], "unit_size": 700_000});
    let one = run(&app, &params, 1);
    assert_eq!(one, run(&app, &params, 3));
    let estimate = one["values"][0].as_f64().unwrap();
    assert!(
        (estimate - std::f64::consts::PI).abs() < 0.005,
        "{estimate}"
    );
    assert_eq!(one["values"][1], 2_000_000);
}

#[test]
fn tolerance_compares_float_words_only() {
    let app = WasmApp::new(MC).unwrap();
    let exact = json!({"args": [1, 0.0, 1.0], "range": [0, 10], "unit_size": 10});
    let loose = json!({"args": [1, 0.0, 1.0], "range": [0, 10], "unit_size": 10,
                       "rel_tolerance": 1e-6});
    let a = json!({"values": [1.0, 10]});
    let b = json!({"values": [1.0000001, 10]});
    let c = json!({"values": [1.0, 11]});
    assert!(!app.compare(&exact, &a, &b));
    assert!(app.compare(&loose, &a, &b));
    assert!(!app.compare(&loose, &a, &c));
    let unit = json!({"seq": 0, "start": 0, "end": 10});
    assert!(app.check_output(&exact, &unit, &a).is_ok());
    assert!(
        app.check_output(&exact, &unit, &json!({"values": [1.0, 1.5]}))
            .is_err()
    );
    assert!(
        app.check_output(&exact, &unit, &json!({"values": [1.0]}))
            .is_err()
    );
    let stray = json!({"seq": 0, "start": 0, "end": 9});
    assert!(app.check_output(&exact, &stray, &a).is_err());
}

#[test]
fn bad_params_are_refused_with_reasons() {
    let app = WasmApp::new(NQUEENS).unwrap();
    let err = |p: Value| app.plan(&p).err().unwrap().0;
    assert!(err(json!({"args": [1]})).contains("error code -1"));
    assert!(err(json!({"args": [8], "fuel": 0})).contains("fuel"));
    assert!(err(json!({"args": [8], "range": [0, 10]})).contains("unit_size"));
    assert!(err(json!({"args": [8], "labels": ["a", "b"]})).contains("labels"));
    assert!(err(json!({"args": [8], "argz": 1})).contains("argz"));
    let mc = WasmApp::new(MC).unwrap();
    assert!(
        mc.plan(&json!({"args": [1, 0.0, 1.0]}))
            .err()
            .unwrap()
            .0
            .contains("sc_units")
    );
}

#[test]
fn a_module_that_loops_forever_runs_out_of_fuel() {
    let app = module_with("(loop $l (br $l)) (i32.const 0)");
    let msg = compute_error(&app, json!({"fuel": 1_000_000}));
    assert!(msg.contains("ran out of fuel"), "{msg}");
}

#[test]
fn a_module_that_grows_memory_without_bound_hits_the_cap() {
    let app = module_with(
        "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) (i32.const 0)",
    );
    let msg = compute_error(&app, json!({}));
    assert!(msg.contains("memory") && msg.contains("64 MiB"), "{msg}");
}

#[test]
fn traps_and_error_codes_are_task_errors() {
    let msg = compute_error(&module_with("(unreachable)"), json!({}));
    assert!(msg.contains("trapped in sc_compute"), "{msg}");
    let msg = compute_error(&module_with("(i32.const -7)"), json!({}));
    assert!(msg.contains("error code -7"), "{msg}");
}

#[test]
fn canceling_stops_a_long_call() {
    let app = module_with("(loop $l (br $l)) (i32.const 0)");
    let params = json!({"fuel": crate::MAX_FUEL});
    let unit = app.plan(&params).unwrap().unit(0);
    let ctx = ComputeCtx::new();
    let canceler = ctx.clone();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(100));
        canceler.cancel();
    });
    let started = std::time::Instant::now();
    assert_eq!(
        app.compute(&params, &unit, &ctx),
        Err(ComputeError::Canceled)
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn modules_that_do_not_fit_the_abi_are_refused() {
    let bad = |wat: &str| WasmApp::new(&to_binary(wat.as_bytes()).unwrap()).unwrap_err();
    let msg = bad(r#"(module (import "env" "now" (func)) (memory (export "memory") 1))"#);
    assert!(
        msg.contains("imports env.now, which is not offered"),
        "{msg}"
    );
    let msg = bad(r#"(module (memory (export "memory") 1))"#);
    assert!(msg.contains("does not export sc_io"), "{msg}");
    let msg = bad(
        r#"(module (memory (export "memory") 1) (func (export "sc_io") (result i64) (i64.const 0)))"#,
    );
    assert!(msg.contains("signature"), "{msg}");
    assert!(to_binary(b"\xff\xfe garbage").is_err());
    assert!(WasmApp::new(b"\0asm\x01\0\0\0\x99").is_err());
    assert!(crate::module_hash(&format!("wasm:{}", "a".repeat(64))).is_some());
    assert!(crate::module_hash("wasm:ABC").is_none());
    assert!(crate::module_hash("prime-count").is_none());
}

#[test]
fn nans_are_canonical_so_hosts_agree_bit_for_bit() {
    // x86 makes 0/0 a negative NaN (0xfff8...); canonicalisation makes it 0x7ff8... everywhere.
    let app = module_with(
        "(i64.store (i32.const 256) (i64.reinterpret_f64 (f64.div (f64.const 0) (f64.const 0)))) \
         (i32.const 0)",
    );
    let params = json!({});
    let unit = app.plan(&params).unwrap().unit(0);
    let out = app.compute(&params, &unit, &ComputeCtx::new()).unwrap();
    assert_eq!(out, json!({"values": [0x7ff8_0000_0000_0000_i64]}));
}

#[test]
fn the_coordinator_s_calls_have_a_wall_clock_limit() {
    let app = module_with_units("(i32.const 0)", "(loop $l (br $l)) (i64.const 1)");
    let started = std::time::Instant::now();
    let err = app.plan(&json!({})).err().unwrap().0;
    assert!(
        err.contains("ran longer than 2000 ms in one call (in sc_units)"),
        "{err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}
