//! The N-queens module against the same algorithm in native Rust, for BENCHMARKS.md.
//!
//! `cargo run --release -p sparecycles-wasm --example nqueens_bench [N]` (default N = 14).
//! Both count the same way: unit = the first row's queen, items = the second row's, the rest by
//! bitmask backtracking. The module runs as a worker runs it (plan, one instance per piece,
//! combine, assemble; fuel metering and epoch checks on); the native code is the same loops.

use std::time::Instant;

use rayon::prelude::*;
use serde_json::json;
use sparecycles_wasm::WasmApp;

const MODULE: &[u8] = include_bytes!("../../job-specs/wasm/nqueens.wasm");

fn solve(cols: u32, d1: u32, d2: u32, all: u32) -> u64 {
    if cols == all {
        return 1;
    }
    let mut free = all & !(cols | d1 | d2);
    let mut count = 0;
    while free != 0 {
        let bit = free & free.wrapping_neg();
        free ^= bit;
        count += solve(cols | bit, (d1 | bit) << 1, (d2 | bit) >> 1, all);
    }
    count
}

/// Unit `first` of the native version: the first row's queen in column `first`.
fn native_unit(n: u32, first: u32) -> u64 {
    let all = (1u32 << n) - 1;
    let b0 = 1u32 << first;
    (0..n)
        .into_par_iter()
        .map(|second| {
            let b1 = 1u32 << second;
            if b1 & (b0 | b0 << 1 | b0 >> 1) != 0 {
                return 0;
            }
            solve(b0 | b1, ((b0 << 1) | b1) << 1, ((b0 >> 1) | b1) >> 1, all)
        })
        .sum()
}

fn wasm_job(app: &WasmApp, n: u32) -> u64 {
    let params = json!({"args": [n]});
    let assembled = sparecycles_apps::run_in_process(app, &params).unwrap();
    let result: serde_json::Value = serde_json::from_slice(&assembled.body).unwrap();
    result["values"][0].as_u64().unwrap()
}

/// Best of three wall-clock times, in seconds, and the answer.
fn best_of_3(f: impl Fn() -> u64) -> (f64, u64) {
    (0..3)
        .map(|_| {
            let started = Instant::now();
            let answer = f();
            (started.elapsed().as_secs_f64(), answer)
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap()
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("N is a number"))
        .unwrap_or(14);
    let started = Instant::now();
    let app = WasmApp::new(MODULE).unwrap();
    println!(
        "compiling the module: {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    for threads in [1, cores] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let (native, a) = pool.install(|| best_of_3(|| (0..n).map(|u| native_unit(n, u)).sum()));
        let (wasm, b) = pool.install(|| best_of_3(|| wasm_job(&app, n)));
        assert_eq!(a, b, "the module and the native code disagree");
        println!(
            "N = {n}, {threads} thread(s): {a} solutions; native {:.3} s, wasm {:.3} s, \
             wasm/native = {:.2}",
            native,
            wasm,
            wasm / native
        );
    }
}
