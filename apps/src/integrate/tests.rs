//! Tests of `integrate`: known integrals, thread-count fuzz, tolerance, params, split, bounds.

use super::*;

fn params(function: &str, a: f64, b: f64, points: u64, unit_points: u64) -> Value {
    json!({"function": function, "a": a, "b": b, "points": points, "unit_points": unit_points})
}

/// Plans, computes, checks and assembles a whole job; returns the assembled result.
fn run(params: &Value) -> Value {
    let plan = Integrate.plan(params).unwrap();
    let mut asm = Integrate.assembler(params).unwrap();
    let ctx = ComputeCtx::new();
    for seq in 0..plan.unit_count() {
        let unit = plan.unit(seq);
        let out = Integrate.compute(params, &unit, &ctx).unwrap();
        Integrate.check_output(params, &unit, &out).unwrap();
        assert!(Integrate.compare(params, &out, &out));
        asm.push(seq, &out).unwrap();
    }
    serde_json::from_slice(&asm.finish().unwrap().body).unwrap()
}

fn integral(params: &Value) -> f64 {
    run(params)["value"].as_f64().unwrap()
}

fn assert_close(got: f64, want: f64, rel: f64) {
    assert!(
        (got - want).abs() <= rel * want.abs(),
        "got {got}, want {want} (relative error {:e})",
        ((got - want) / want).abs()
    );
}

#[test]
fn gaussian_over_minus_ten_ten_is_sqrt_pi() {
    // erf(10) = 1 - 2e-45, so the integral over [-10, 10] is sqrt(pi) to double precision.
    let p = params("gaussian", -10.0, 10.0, 1_000_000, 300_000);
    let result = run(&p);
    assert_eq!(result["points"], 1_000_000);
    assert_eq!(result["function"], "gaussian");
    let want = std::f64::consts::PI.sqrt();
    assert_close(result["value"].as_f64().unwrap(), want, 1e-12);
}

#[test]
fn runge_over_minus_one_one_is_two_fifths_atan_five() {
    let got = integral(&params("runge", -1.0, 1.0, 1_000_000, 250_000));
    assert_close(got, 0.4 * 5.0_f64.atan(), 1e-10);
}

#[test]
fn sinc2_matches_the_sine_integral() {
    // From 0 to x the integral is Si(2x) - sin(x)^2 / x; Si(pi) is the Wilbraham-Gibbs
    // constant 1.8519370519824661703610533701...
    let got = integral(&params(
        "sinc2",
        0.0,
        std::f64::consts::FRAC_PI_2,
        1_000_000,
        400_000,
    ));
    let want = 1.851_937_051_982_466_2 - std::f64::consts::FRAC_2_PI;
    assert_close(got, want, 1e-10);
    // The removable singularity at 0, and its neighbourhood.
    assert_eq!(Function::Sinc2.eval(0.0), 1.0);
    assert_eq!(Function::Sinc2.eval(1e-300), 1.0);
    assert_close(Function::Sinc2.eval(-1e-4), 1.0 - 1e-8 / 3.0, 1e-15);
    // Over [-1, 1], with an odd point count so that a point lands (up to rounding) on 0:
    // 2 (Si(2) - sin(1)^2) = 1.79467911705824731015...
    let got = integral(&params("sinc2", -1.0, 1.0, 1_000_001, 333_333));
    assert_close(got, 1.794_679_117_058_247_3, 1e-10);
}

#[test]
fn oscillating_matches_its_antiderivative() {
    let anti =
        |x: f64| (-x / 4.0).exp() * (20.0 * (20.0 * x).sin() - (20.0 * x).cos() / 4.0) / 400.0625;
    let want = anti(3.0) - anti(-2.0);
    assert_close(want, 0.053_810_603_982_139_54, 1e-13);
    let got = integral(&params("oscillating", -2.0, 3.0, 4_000_000, 1_000_000));
    assert_close(got, want, 1e-9);
}

#[test]
fn one_and_four_threads_agree_within_the_tolerance() {
    for (function, a, b) in [
        ("gaussian", -10.0, 10.0),
        ("sinc2", -50.0, 50.0),
        ("runge", -1.0, 1.0),
        ("oscillating", -2.0, 3.0),
    ] {
        let p = params(function, a, b, 8_000_000, 4_000_000);
        let unit = Integrate.plan(&p).unwrap().unit(1);
        let compute = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| Integrate.compute(&p, &unit, &ComputeCtx::new()))
                .unwrap()
        };
        let one = compute(1);
        let four = compute(4);
        assert!(Integrate.compare(&p, &one, &four), "{one} vs {four}");
        // Either is fine: the app must not rely on them being equal.
        let (x, y) = (value_of(&one).unwrap(), value_of(&four).unwrap());
        eprintln!(
            "{function}: 1 thread {x:e}, 4 threads {y:e}, bitwise {}",
            if x.to_bits() == y.to_bits() {
                "equal".to_owned()
            } else {
                format!("different ({} ulps)", x.to_bits().abs_diff(y.to_bits()))
            }
        );
    }
}

#[test]
fn compare_uses_the_relative_tolerance() {
    let p = params("gaussian", -1.0, 1.0, 10, 5);
    let cmp = |a: Value, b: Value| Integrate.compare(&p, &a, &b);
    let v = 0.746_824_132_812_427;
    assert!(cmp(
        json!({"value": v}),
        json!({"value": v * (1.0 + 5e-10)})
    ));
    assert!(cmp(
        json!({"value": -v}),
        json!({"value": -v * (1.0 - 5e-10)})
    ));
    assert!(!cmp(
        json!({"value": v}),
        json!({"value": v * (1.0 + 2e-9)})
    ));
    assert!(!cmp(json!({"value": v}), json!({"value": -v})));
    // Both zero up to underflow agree; zero and a small but real value do not.
    assert!(cmp(json!({"value": 0.0}), json!({"value": 1e-310})));
    assert!(!cmp(json!({"value": 0.0}), json!({"value": 1e-200})));
    // Anything but an object holding just a finite number never agrees, even with itself.
    for bad in [
        json!({"value": "0.5"}),
        json!({"value": null}),
        json!({}),
        json!({"value": 0.5, "extra": 1}),
        json!(0.5),
    ] {
        assert!(!cmp(bad.clone(), bad.clone()), "{bad}");
        assert!(!cmp(json!({"value": 0.5}), bad));
    }
    // A looser tolerance from the params.
    let mut loose = p.clone();
    loose["rel_tolerance"] = json!(1e-6);
    assert!(Integrate.compare(
        &loose,
        &json!({"value": v}),
        &json!({"value": v * (1.0 + 5e-7)})
    ));
    assert!(!Integrate.compare(
        &loose,
        &json!({"value": v}),
        &json!({"value": v * (1.0 + 2e-6)})
    ));
}

#[test]
fn refuses_bad_params_naming_the_field() {
    let err = |v: Value| Integrate.plan(&v).err().unwrap().0;
    let with = |field: &str, value: Value| {
        let mut p = params("runge", -1.0, 1.0, 1000, 100);
        p[field] = value;
        err(p)
    };
    let cases = [
        (with("function", json!("cubic")), "params.function"),
        (with("a", json!(2.0)), "a (2) must be less than b (1)"),
        (with("a", json!(-2e6)), "a (-2000000)"),
        (with("b", json!(1e7)), "b (10000000)"),
        (with("b", json!("1")), "params.b"),
        (with("points", json!(0)), "points (0)"),
        (with("points", json!(2_000_000_000_000u64)), "points"),
        (with("points", json!(-5)), "params.points"),
        (with("unit_points", json!(0)), "unit_points (0)"),
        (with("rel_tolerance", json!(1e-2)), "rel_tolerance"),
        (with("rel_tolerance", json!(1e-20)), "rel_tolerance"),
        (with("extra", json!(1)), "extra"),
        (
            err(params("oscillating", -2000.0, 0.0, 10, 1)),
            "a (-2000) must be at least",
        ),
        (
            err(params("runge", 0.0, 1.0, 1_000_000_000_000, 10)),
            "unit_points (10) splits",
        ),
        (
            err(json!({"function": "runge", "a": 0, "b": 1, "points": 10})),
            "unit_points",
        ),
    ];
    for (msg, want) in cases {
        assert!(msg.starts_with("integrate: "), "{msg}");
        assert!(msg.contains(want), "{msg:?} does not contain {want:?}");
    }
    // Integers are fine where floats are expected, and the tolerance is optional.
    let mut ok = json!({"function": "sinc2", "a": -3, "b": 4, "points": 10, "unit_points": 3});
    assert_eq!(Integrate.plan(&ok).unwrap().unit_count(), 4);
    ok["rel_tolerance"] = json!(1e-15);
    assert!(Integrate.plan(&ok).is_ok());
    ok["rel_tolerance"] = json!(1e-3);
    assert!(Integrate.plan(&ok).is_ok());
}

#[test]
fn uneven_split_covers_every_point_once() {
    let p = params("runge", -1.0, 1.0, 10, 4);
    let plan = Integrate.plan(&p).unwrap();
    assert_eq!(plan.unit_count(), 3);
    assert_eq!(plan.unit(0), json!({"index": 0, "first": 0, "count": 4}));
    assert_eq!(plan.unit(2), json!({"index": 2, "first": 8, "count": 2}));

    let p = params("runge", -1.0, 1.0, 1_000_003, 65_537);
    let plan = Integrate.plan(&p).unwrap();
    let mut next = 0;
    for seq in 0..plan.unit_count() {
        let u: Unit = serde_json::from_value(plan.unit(seq)).unwrap();
        assert_eq!((u.index, u.first), (seq, next));
        assert!(u.count > 0 && u.count <= 65_537);
        next += u.count;
    }
    assert_eq!(next, 1_000_003);
    // The units' values add up to the single-unit value.
    let whole = integral(&params("runge", -1.0, 1.0, 1_000_003, 1_000_003));
    assert_close(integral(&p), whole, 1e-14);
}

#[test]
fn checks_outputs_against_the_bounds() {
    let p = params("gaussian", -10.0, 10.0, 1000, 100);
    // Unit 3 covers [-4, -2]: width 2, and exp(-x^2) <= 1.
    let unit = json!({"index": 3, "first": 300, "count": 100});
    let check = |out: Value| Integrate.check_output(&p, &unit, &out);
    let honest = Integrate.compute(&p, &unit, &ComputeCtx::new()).unwrap();
    assert!(check(honest).is_ok());
    assert!(check(json!({"value": 2.0})).is_ok());
    assert!(check(json!({"value": 0.0})).is_ok());
    assert!(check(json!({"value": 2.01})).is_err());
    assert!(check(json!({"value": -0.01})).is_err());
    assert!(check(json!({"value": "1"})).is_err());
    assert!(check(json!({"value": 1.0, "points": 100})).is_err());
    assert!(check(json!({})).is_err());
    let stray = json!({"index": 3, "first": 300, "count": 99});
    assert!(
        Integrate
            .check_output(&p, &stray, &json!({"value": 1.0}))
            .is_err()
    );

    // oscillating may be negative, and its bound grows towards the left.
    let p = params("oscillating", -8.0, 0.0, 8, 1);
    let unit = json!({"index": 0, "first": 0, "count": 1});
    let check = |out: Value| Integrate.check_output(&p, &unit, &out);
    assert!(check(json!({"value": -7.3})).is_ok()); // e^2 = 7.389
    assert!(check(json!({"value": 7.4})).is_err());
    let out = Integrate.compute(&p, &unit, &ComputeCtx::new()).unwrap();
    assert!(check(out).is_ok());
}

#[test]
fn assembles_with_compensated_summation() {
    let p = params("runge", -1.0, 1.0, 30, 10);
    let mut asm = Integrate.assembler(&p).unwrap();
    // A naive sum gives 0 here: 1e16 + 1 rounds back to 1e16.
    for (seq, v) in [1e16, 1.0, -1e16].into_iter().enumerate() {
        asm.push(seq as u64, &json!({"value": v})).unwrap();
    }
    let result: Value = serde_json::from_slice(&asm.finish().unwrap().body).unwrap();
    assert_eq!(
        result,
        json!({"value": 1.0, "points": 30, "function": "runge"})
    );
    let mut asm = Integrate.assembler(&p).unwrap();
    assert!(asm.push(0, &json!({"value": "x"})).is_err());
    assert!(Integrate.assembler(&p).unwrap().finish().is_err());
}

#[test]
fn stops_when_canceled_and_reports_progress() {
    let p = params("gaussian", -10.0, 10.0, 1_000_000, 1_000_000);
    let unit = json!({"index": 0, "first": 0, "count": 1_000_000});
    let ctx = ComputeCtx::new();
    Integrate.compute(&p, &unit, &ctx).unwrap();
    assert_eq!(ctx.fraction(), 1.0);
    ctx.cancel();
    assert_eq!(
        Integrate.compute(&p, &unit, &ctx),
        Err(ComputeError::Canceled)
    );
    let stray = json!({"index": 1, "first": 0, "count": 1_000_000});
    assert!(matches!(
        Integrate.compute(&p, &stray, &ComputeCtx::new()),
        Err(ComputeError::Failed(_))
    ));
}
