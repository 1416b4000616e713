//! W2's compute alone, for benchmarks: π over [0, 2·10⁹) as the whole range on a 2-thread pool
//! (the kernel W2 is measured against) and as W2's 200 units computed the way the worker does
//! (one lane per thread, each taking the next unit), alternated ROUNDS times in one process:
//! `cargo run --release -p sparecycles-apps --example prime_units -- [ROUNDS]`. Prints both
//! medians and their ratio, so the part of W2's gap that is the split into units shows apart
//! from the coordinator and the network.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde_json::json;
use sparecycles_apps::{ComputeCtx, find};

fn main() {
    let (end, units) = (2_000_000_000u64, 200u64);
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("ROUNDS: a number"))
        .unwrap_or(10);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("thread pool");
    let app = find("prime-count").expect("prime-count is built in");
    let params = json!({"start": 0, "end": end, "unit_size": end / units});
    let plan = app.plan(&params).expect("valid params");
    let unit_values: Vec<_> = (0..units).map(|s| plan.unit(s)).collect();
    let (mut whole, mut lanes) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        let expected = pool.install(|| sparecycles_apps::prime_count::count_primes(0, end));
        whole.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let (next, total) = (AtomicU64::new(0), AtomicU64::new(0));
        pool.install(|| {
            rayon::scope(|s| {
                for _ in 0..pool.current_num_threads() {
                    s.spawn(|_| {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(unit) = unit_values.get(i as usize) else {
                                return;
                            };
                            let out = app
                                .compute(&params, unit, &ComputeCtx::new())
                                .expect("computed");
                            let count = out["count"].as_u64().expect("a count");
                            total.fetch_add(count, Ordering::Relaxed);
                        }
                    });
                }
            })
        });
        lanes.push(t.elapsed().as_secs_f64());
        assert_eq!(
            total.load(Ordering::Relaxed),
            expected,
            "units and range disagree"
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (w, l) = (median(&mut whole), median(&mut lanes));
    println!(
        "whole range {w:.4} s, 200 units in lanes {l:.4} s, ratio {:.3}",
        w / l
    );
}
