//! What the fuzz targets in `fuzz/` run, kept here so that the inputs they found are replayed
//! by the ordinary test suite (`fuzz/regressions/`). Each function takes untrusted bytes through
//! exactly the code the API runs on them, and panics when an invariant breaks.

use axum::http::{HeaderMap, HeaderValue, header};
use serde_json::Value;
use sparecycles_protocol::work::MAX_REPORT_RESULTS;
use sparecycles_protocol::{ReportRequest, TaskResultKind};

use crate::http::body::parse_json;
use crate::http::jobs::check_builtin_spec;
use crate::http::spec_body::parse_spec;
use crate::http::work::json_len_within;

/// A submitted job spec: the first byte picks the content type (even: JSON, odd: TOML), the
/// rest is the body of `POST /api/v1/jobs`. Parsed, checked and planned as on submission; a
/// spec that is accepted must plan the same after a round trip through the store's JSON text,
/// and give units, outputs bounds and an assembler without failing.
pub fn job_spec(data: &[u8]) {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let mut headers = HeaderMap::new();
    let content_type = if kind % 2 == 0 {
        "application/json"
    } else {
        "application/toml"
    };
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let Ok(spec) = parse_spec(&headers, body) else {
        return;
    };
    let Ok(job) = check_builtin_spec(&spec, 64) else {
        return;
    };
    assert!((1..=sparecycles_apps::MAX_UNITS).contains(&job.unit_count));
    let app = sparecycles_apps::find(&job.app).expect("a checked spec names a known app");
    // The store keeps params as JSON text; the scheduler plans again from that text.
    let stored = serde_json::to_string(&job.params).expect("params serialize");
    let params: Value = serde_json::from_str(&stored).expect("stored params parse");
    let plan = app
        .plan(&params)
        .expect("stored params of a checked spec plan");
    assert_eq!(plan.unit_count(), job.unit_count, "{stored}");
    for seq in [0, job.unit_count / 2, job.unit_count - 1] {
        let unit = plan.unit(seq);
        assert!(unit.is_object(), "unit {seq} of {stored}: {unit}");
        let work = plan.unit_work(seq);
        assert!(work.is_finite() && work >= 0.0, "unit {seq} work {work}");
        assert!(app.max_output_bytes(&params, &unit) > 0);
        // A worker's nonsense for a real unit is refused, never a panic.
        assert!(app.check_output(&params, &unit, &Value::Null).is_err());
    }
    app.assembler(&params)
        .expect("a checked spec can be assembled");
}

/// Small jobs whose results the `result_payload` target forges: one per app, a few units each
/// so that a fuzzed report can complete the assembly.
pub const RESULT_JOBS: [(&str, &str); 5] = [
    (
        "prime-count",
        r#"{"start": 0, "end": 100, "unit_size": 50}"#,
    ),
    ("collatz", r#"{"start": 1, "end": 100, "unit_size": 50}"#),
    (
        "monte-carlo-pi",
        r#"{"samples": 1000, "unit_samples": 500, "seed": 1}"#,
    ),
    (
        "mandelbrot",
        r#"{"width": 16, "height": 8, "center_re": -0.5, "center_im": 0.0, "scale": 3.0, "max_iter": 50, "tile": 8}"#,
    ),
    (
        "integrate",
        r#"{"function": "gaussian", "a": -1.0, "b": 1.0, "points": 1000, "unit_points": 500}"#,
    ),
];

/// A worker's report of results: the first byte picks a job of [`RESULT_JOBS`], the rest is
/// the body of `POST /api/v1/work/report`; result `i` is an output for unit `i mod units`.
/// Outputs go through the size bound and the app's check as on the coordinator; those that
/// pass must compare equal to themselves (symmetrically with the others of their unit) and
/// assemble without error once every unit has one, from the JSON text the store keeps.
pub fn result_payload(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let (name, params) = RESULT_JOBS[usize::from(pick) % RESULT_JOBS.len()];
    let app = sparecycles_apps::find(name).expect("a built-in app");
    let params: Value = serde_json::from_str(params).expect("fixed params");
    let plan = app.plan(&params).expect("fixed params plan");
    let Ok(report) = parse_json::<ReportRequest>(body) else {
        return;
    };
    let units = plan.unit_count();
    let mut checked: Vec<Vec<Value>> = vec![Vec::new(); units as usize];
    for (i, result) in report.results.iter().take(MAX_REPORT_RESULTS).enumerate() {
        let Some(TaskResultKind::Output(output)) = result.kind() else {
            continue;
        };
        let seq = i as u64 % units;
        let unit = plan.unit(seq);
        if !json_len_within(output, app.max_output_bytes(&params, &unit)) {
            continue;
        }
        if app.check_output(&params, &unit, output).is_err() {
            continue;
        }
        assert!(app.compare(&params, output, output), "{output}");
        for other in &checked[seq as usize] {
            assert_eq!(
                app.compare(&params, output, other),
                app.compare(&params, other, output),
                "compare is not symmetric: {output} vs {other}"
            );
        }
        let stored = serde_json::to_string(output).expect("output serializes");
        checked[seq as usize].push(serde_json::from_str(&stored).expect("stored output parses"));
    }
    if checked.iter().any(Vec::is_empty) {
        return;
    }
    let mut assembler = app.assembler(&params).expect("fixed params assemble");
    for (seq, outputs) in checked.iter().enumerate() {
        assembler
            .push(seq as u64, &outputs[0])
            .unwrap_or_else(|e| panic!("a checked output does not assemble: {e}"));
    }
    let assembled = assembler
        .finish()
        .unwrap_or_else(|e| panic!("checked outputs do not assemble: {e}"));
    assert!(!assembled.body.is_empty());
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use sparecycles_apps::ComputeCtx;
    use sparecycles_protocol::TaskResult;

    use super::*;

    fn fuzz_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
    }

    fn replay(dir: &str, target: fn(&[u8])) -> usize {
        let mut n = 0;
        for sub in ["seeds", "regressions"] {
            let path = fuzz_dir().join(sub).join(dir);
            let Ok(entries) = std::fs::read_dir(&path) else {
                continue;
            };
            for entry in entries.flatten() {
                let data = std::fs::read(entry.path()).unwrap();
                let name = entry.path().display().to_string();
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(outcome.is_ok(), "{name} fails again");
                n += 1;
            }
        }
        n
    }

    /// Every seed and every input the fuzzers ever found a bug with still passes.
    #[test]
    fn fuzz_seeds_and_regressions_pass() {
        assert!(replay("job_spec", job_spec) >= 5);
        assert!(replay("result_payload", result_payload) >= RESULT_JOBS.len());
    }

    /// The example specs, as the fuzzer's seeds would send them, are accepted whole.
    #[test]
    fn example_specs_pass_the_spec_harness() {
        for (_, toml) in crate::examples::EXAMPLES {
            let mut data = vec![1u8];
            data.extend_from_slice(toml.as_bytes());
            job_spec(&data);
        }
    }

    /// Writes the seed corpora: the example specs (TOML and JSON), and for each result job a
    /// report of honest outputs computed by the app. Run by hand when the apps change:
    /// `cargo test -p sparecycles-coordinator --lib write_fuzz_seeds -- --ignored`.
    #[test]
    #[ignore]
    fn write_fuzz_seeds() {
        let spec_dir = fuzz_dir().join("seeds/job_spec");
        std::fs::create_dir_all(&spec_dir).unwrap();
        for (file, toml) in crate::examples::EXAMPLES {
            let stem = file.trim_end_matches(".toml");
            let mut data = vec![1u8];
            data.extend_from_slice(toml.as_bytes());
            std::fs::write(spec_dir.join(format!("{stem}.toml.bin")), &data).unwrap();
            let spec: sparecycles_protocol::JobSpec = toml::from_str(toml).unwrap();
            let mut data = vec![0u8];
            data.extend_from_slice(&serde_json::to_vec(&spec).unwrap());
            std::fs::write(spec_dir.join(format!("{stem}.json.bin")), &data).unwrap();
        }
        let result_dir = fuzz_dir().join("seeds/result_payload");
        std::fs::create_dir_all(&result_dir).unwrap();
        for (i, (name, params)) in RESULT_JOBS.iter().enumerate() {
            let app = sparecycles_apps::find(name).unwrap();
            let params: Value = serde_json::from_str(params).unwrap();
            let plan = app.plan(&params).unwrap();
            let results = (0..plan.unit_count())
                .map(|seq| {
                    let output = app
                        .compute(&params, &plan.unit(seq), &ComputeCtx::new())
                        .unwrap();
                    TaskResult::success(uuid::Uuid::nil(), output)
                })
                .collect();
            let mut data = vec![i as u8];
            data.extend_from_slice(&serde_json::to_vec(&ReportRequest { results }).unwrap());
            std::fs::write(result_dir.join(format!("{name}.bin")), &data).unwrap();
        }
    }
}
