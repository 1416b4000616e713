//! Tests of `collatz`: the step function, known records, ties, overflow.

use super::*;

fn naive(mut n: u64) -> u32 {
    let mut steps = 0;
    while n != 1 {
        n = if n.is_multiple_of(2) {
            n / 2
        } else {
            3 * n + 1
        };
        steps += 1;
    }
    steps
}

fn run(start: u64, end: u64, unit_size: u64) -> Value {
    let params = json!({"start": start, "end": end, "unit_size": unit_size});
    let plan = Collatz.plan(&params).unwrap();
    let mut asm = Collatz.assembler(&params).unwrap();
    let ctx = ComputeCtx::new();
    for seq in 0..plan.unit_count() {
        let unit = plan.unit(seq);
        let out = Collatz.compute(&params, &unit, &ctx).unwrap();
        Collatz.check_output(&params, &unit, &out).unwrap();
        asm.push(seq, &out).unwrap();
    }
    serde_json::from_slice(&asm.finish().unwrap().body).unwrap()
}

#[test]
fn table_and_fast_path_match_the_plain_definition() {
    let table = step_table();
    assert_eq!(table[1], 0);
    assert_eq!(table[27], 111);
    for n in (1..200_000).chain([837_799, 63_728_127, 1 << 40, (1 << 40) + 1]) {
        assert_eq!(steps(n, &table).unwrap(), naive(n), "{n}");
    }
}

#[test]
fn known_records() {
    assert_eq!(run(1, 10, 10), json!({"max_steps": 19, "argmax": 9}));
    assert_eq!(run(1, 2, 1), json!({"max_steps": 0, "argmax": 1}));
    assert_eq!(
        run(1, 1_000_000, 1_000_000),
        json!({"max_steps": 524, "argmax": 837_799})
    );
    // Split unevenly, the answer does not move.
    assert_eq!(
        run(1, 1_000_000, 77_777),
        json!({"max_steps": 524, "argmax": 837_799})
    );
}

#[test]
fn ties_pick_the_smallest_start() {
    // 12 and 13 both take 9 steps; so do 12 and 13 when they sit in different units.
    assert_eq!(naive(12), 9);
    assert_eq!(naive(13), 9);
    assert_eq!(run(12, 14, 2), json!({"max_steps": 9, "argmax": 12}));
    assert_eq!(run(12, 14, 1), json!({"max_steps": 9, "argmax": 12}));
    // 28 (18 steps) and 29 (18 steps) beat 30 (18 steps) too.
    assert_eq!((naive(28), naive(29), naive(30)), (18, 18, 18));
    assert_eq!(run(28, 31, 1), json!({"max_steps": 18, "argmax": 28}));
}

#[test]
fn thread_count_does_not_change_the_answer() {
    let params = json!({"start": 1_000_000_000, "end": 1_000_300_000, "unit_size": 300_000});
    let unit = json!({"start": 1_000_000_000, "end": 1_000_300_000});
    let compute = |threads| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| Collatz.compute(&params, &unit, &ComputeCtx::new()))
            .unwrap()
    };
    assert_eq!(compute(1), compute(4));
}

#[test]
fn trajectories_beyond_64_bits() {
    let table = step_table();
    // Starts near 2^64 whose 3n + 1 needs 128 bits.
    let n = u64::MAX - 2;
    assert_eq!(n % 2, 1);
    let wide = steps(n, &table).unwrap();
    let mut m = u128::from(n);
    let mut expect = 0;
    while m != 1 {
        m = if m % 2 == 0 { m / 2 } else { 3 * m + 1 };
        expect += 1;
    }
    assert_eq!(wide, expect);
}

#[test]
fn overflow_is_an_error_not_an_answer() {
    let table = step_table();
    let err = steps_wide(u128::MAX / 3 + 2, 0, &table).unwrap_err();
    match err {
        ComputeError::Failed(msg) => assert!(msg.contains("overflow at n="), "{msg}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn refuses_bad_params_and_outputs() {
    let err = |v: Value| Collatz.plan(&v).err().unwrap().0;
    assert!(err(json!({"start": 0, "end": 5, "unit_size": 1})).contains("start"));
    assert_eq!(
        err(json!({"start": 9, "end": 9, "unit_size": 1})),
        "collatz: end (9) must be greater than start (9)"
    );
    assert!(
        err(json!({"start": 1, "end": (1u64 << 60) + 1, "unit_size": 1u64 << 40})).contains("2^60")
    );
    assert!(err(json!({"start": 1, "end": 5, "unit_size": 0})).contains("unit_size"));
    let params = json!({"start": 1, "end": 100, "unit_size": 10});
    let unit = json!({"start": 21, "end": 31});
    let check = |out: Value| Collatz.check_output(&params, &unit, &out);
    assert!(check(json!({"max_steps": 111, "argmax": 27})).is_ok());
    assert!(check(json!({"max_steps": 111, "argmax": 31})).is_err());
    assert!(check(json!({"max_steps": 2, "argmax": 27})).is_err());
    assert!(check(json!({"max_steps": 111})).is_err());
}

#[test]
fn cancel_stops_the_compute() {
    let params = json!({"start": 1, "end": 100_000_000, "unit_size": 100_000_000});
    let unit = json!({"start": 1, "end": 100_000_000});
    let ctx = ComputeCtx::new();
    ctx.cancel();
    assert_eq!(
        Collatz.compute(&params, &unit, &ctx),
        Err(ComputeError::Canceled)
    );
}

#[test]
fn resuming_from_any_checkpoint_gives_the_same_answer() {
    // 1..=3e6 holds ties and the record 837_799 (524 steps) in its first half.
    let params = json!({"start": 1, "end": 3_000_001, "unit_size": 3_000_000});
    let unit = json!({"start": 1, "end": 3_000_001});
    let saved = std::sync::Mutex::new(Vec::new());
    let whole = Collatz
        .compute_resumable(&params, &unit, &ComputeCtx::new(), None, &|v| {
            saved.lock().unwrap().push(v.clone())
        })
        .unwrap();
    assert_eq!(
        whole,
        Collatz.compute(&params, &unit, &ComputeCtx::new()).unwrap()
    );
    let saved = saved.into_inner().unwrap();
    assert!(saved.len() >= 10, "{} checkpoints", saved.len());
    for checkpoint in &saved {
        let ctx = ComputeCtx::new();
        let resumed = Collatz
            .compute_resumable(&params, &unit, &ctx, Some(checkpoint), &|_| {})
            .unwrap();
        assert_eq!(resumed, whole, "from {checkpoint}");
        assert_eq!(ctx.fraction(), 1.0);
    }
}
