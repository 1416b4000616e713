//! Tests of `prime-count`: known values, a plain reference sieve, splits and threads.

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
    assert!(
        err(
            json!({"start": 0, "end": 10_000_000_000_000_000u64, "unit_size": 1_000_000_000_000u64})
        )
        .contains("10^15")
    );
    assert!(err(json!({"start": 0, "end": 100_000_000, "unit_size": 1})).contains("units"));
    assert!(err(json!({"start": 0, "end": 5, "unit_size": 1, "x": 1})).contains("unknown field"));
    assert!(err(json!({"start": -1, "end": 5, "unit_size": 1})).contains("invalid params"));
}

#[test]
fn checks_outputs_and_units() {
    let params = json!({"start": 0, "end": 100, "unit_size": 10});
    let unit = json!({"start": 10, "end": 20});
    assert!(
        PrimeCount
            .check_output(&params, &unit, &json!({"count": 4}))
            .is_ok()
    );
    assert!(
        PrimeCount
            .check_output(&params, &unit, &json!({"count": 7}))
            .is_err()
    );
    assert!(
        PrimeCount
            .check_output(&params, &unit, &json!({"count": "4"}))
            .is_err()
    );
    assert!(
        PrimeCount
            .check_output(&params, &unit, &json!({"count": 4, "x": 0}))
            .is_err()
    );
    let stray = json!({"start": 15, "end": 25});
    assert!(
        PrimeCount
            .check_output(&params, &stray, &json!({"count": 0}))
            .is_err()
    );
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
    println!(
        "count_primes(10^15 - 10^8, 10^15) on 1 thread: {:?}",
        start.elapsed()
    );
    assert_eq!(count, naive_count(lo, hi));
    for len in [1_000u64, 10_000_000, 100_000_000, 1_000_000_000] {
        for threads in [1, 2] {
            let start = std::time::Instant::now();
            pool(threads).install(|| count_primes(MAX_END - len, MAX_END));
            println!(
                "near 10^15, {len} numbers, {threads} threads: {:?}",
                start.elapsed()
            );
        }
    }
}

#[test]
fn resuming_from_any_checkpoint_gives_the_same_count() {
    let params = json!({"start": 0, "end": 2_000_000_000u64, "unit_size": 1_000_000_000u64});
    let unit = json!({"start": 1_000_000_000u64, "end": 2_000_000_000u64});
    let saved = std::sync::Mutex::new(Vec::new());
    let whole = pool(1).install(|| {
        PrimeCount.compute_resumable(&params, &unit, &ComputeCtx::new(), None, &|v| {
            saved.lock().unwrap().push(v.clone())
        })
    });
    let whole = whole.unwrap();
    assert_eq!(whole, json!({"count": 98_222_287 - 50_847_534}));
    let saved = saved.into_inner().unwrap();
    assert!(saved.len() >= 10, "{} checkpoints", saved.len());
    for checkpoint in [&saved[0], &saved[saved.len() / 2], saved.last().unwrap()] {
        let ctx = ComputeCtx::new();
        let resumed = pool(2).install(|| {
            let first = std::sync::Mutex::new(None::<f64>);
            let out = PrimeCount.compute_resumable(&params, &unit, &ctx, Some(checkpoint), &|_| {
                first.lock().unwrap().get_or_insert(ctx.fraction());
            });
            (out, first.into_inner().unwrap())
        });
        assert_eq!(resumed.0.unwrap(), whole, "from {checkpoint}");
        let next = checkpoint["next"].as_u64().unwrap();
        if let Some(at_first_save) = resumed.1 {
            // The first save after resuming comes one piece after the checkpoint, not from 0.
            assert!(
                at_first_save > (next - 1_000_000_000) as f64 / 1e9,
                "{at_first_save}"
            );
        }
    }
}
