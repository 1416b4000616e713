//! Module jobs end to end: WebAssembly modules uploaded, split and assembled by the coordinator,
//! computed by real workers in their sandbox; runaway and forged modules; volunteers' choices.

use std::time::Duration;

use serde_json::{Value, json};
use sparecycles_protocol::{JobSpec, JobState, ModuleView};
use sqlx::Row;
use uuid::Uuid;

use crate::helpers::{ADMIN_TOKEN, Api, Coordinator, db, db_writable, problem_detail, spec};

const LONG: Duration = Duration::from_secs(300);
const NQUEENS: &[u8] = include_bytes!("../../../job-specs/wasm/nqueens.wasm");
const MC: &[u8] = include_bytes!("../../../job-specs/wasm/mc-integrate.wasm");

/// The smallest module of the ABI, with `body` as sc_compute's body, in text format.
fn module_text(body: &str) -> String {
    format!(
        r#"(module
          (memory (export "memory") 1)
          (func (export "sc_io") (result i32) (i32.const 0))
          (func (export "sc_words") (result i32) (i32.const 1))
          (func (export "sc_floats") (result i32) (i32.const 0))
          (func (export "sc_units") (param i32) (result i64) (i64.const 1))
          (func (export "sc_compute") (param i32 i64 i64 i64) (result i32) {body})
          (func (export "sc_combine") (result i32) (i32.const 0)))"#
    )
}

/// POSTs a module; returns status, content type and body.
async fn upload_raw(api: &Api, bytes: &[u8], token: Option<&str>) -> (u16, String, Value) {
    api.post_bytes("/api/v1/modules", token, None, bytes.to_vec())
        .await
}

async fn upload(api: &Api, bytes: &[u8]) -> ModuleView {
    let (status, _, body) = upload_raw(api, bytes, Some(ADMIN_TOKEN)).await;
    assert!(status == 201 || status == 200, "{status}: {body}");
    serde_json::from_value(body).unwrap()
}

fn example_spec(file: &str) -> JobSpec {
    let path = format!("{}/../job-specs/wasm/{file}", env!("CARGO_MANIFEST_DIR"));
    toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Errors the workers reported for a job's tasks.
async fn task_errors(c: &Coordinator, job: Uuid) -> Vec<String> {
    sqlx::query("SELECT error FROM tasks WHERE job_id = $1 AND state = 'error'")
        .bind(job.to_string())
        .fetch_all(&db(c).await)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("error"))
        .collect()
}

/// Tasks of a job ever leased to the worker called `name`.
async fn tasks_of(c: &Coordinator, job: Uuid, name: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM tasks t JOIN workers w ON w.id = t.worker_id \
         WHERE t.job_id = $1 AND w.name = $2",
    )
    .bind(job.to_string())
    .bind(name)
    .fetch_one(&db(c).await)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn example_modules_complete_with_the_known_answers() {
    let c = Coordinator::start();
    let api = c.api();
    let queens = upload(&api, NQUEENS).await;
    let queens_spec = example_spec("nqueens.toml");
    // The checked-in spec names the checked-in module.
    assert_eq!(queens_spec.module.as_deref(), Some(queens.sha256.as_str()));
    assert_eq!(queens.app, format!("wasm:{}", queens.sha256));
    // Stored once: a second upload finds it.
    let (status, _, again) = upload_raw(&api, NQUEENS, Some(ADMIN_TOKEN)).await;
    assert_eq!(
        (status, again["sha256"].clone()),
        (200, json!(queens.sha256))
    );
    let mc = upload(&api, MC).await;
    let mc_spec = example_spec("mc-integrate.toml");
    assert_eq!(mc_spec.module.as_deref(), Some(mc.sha256.as_str()));

    let _w = [c.worker("a", 2), c.worker("b", 1)];
    let queens_job = api.submit(&queens_spec).await;
    assert_eq!(queens_job.app, queens.app);
    assert_eq!(queens_job.units.total, 12);
    let mc_job = api.submit(&mc_spec).await;
    assert_eq!(mc_job.units.total, 20);

    let done = api.wait(queens_job.id, LONG).await;
    assert_eq!(done.state, JobState::Completed, "{done:?}");
    assert_eq!(done.result_type.as_deref(), Some("application/json"));
    assert_eq!(
        api.result_json(queens_job.id).await,
        json!({"values": [14200], "units": 12, "named": {"solutions": 14200}})
    );
    let done = api.wait(mc_job.id, LONG).await;
    assert_eq!(done.state, JobState::Completed, "{done:?}");
    let result = api.result_json(mc_job.id).await;
    let integral = result["named"]["integral"].as_f64().unwrap();
    assert!((integral - std::f64::consts::PI).abs() < 1e-3, "{result}");
    assert_eq!(result["named"]["samples"], 20_000_000);

    // Units computed by both workers (2 and 1 threads; the rest went to one trusted worker)
    // agreed bit for bit, floats included.
    let units = sqlx::query(
        "SELECT unit_seq, COUNT(DISTINCT output) AS outputs, COUNT(DISTINCT worker_id) AS \
         workers FROM tasks WHERE job_id = $1 AND validation = 'valid' GROUP BY unit_seq",
    )
    .bind(mc_job.id.to_string())
    .fetch_all(&db(&c).await)
    .await
    .unwrap();
    assert_eq!(units.len(), 20);
    assert!(units.iter().all(|u| u.get::<i64, _>("outputs") == 1));
    assert!(units.iter().any(|u| u.get::<i64, _>("workers") == 2));
    // Each worker fetched the modules once and keeps them, checked, in its state dir.
    for (worker, module) in [("a", &queens), ("b", &queens), ("a", &mc)] {
        let cached = c
            .dir
            .join(worker)
            .join("modules")
            .join(format!("{}.wasm", module.sha256));
        let bytes = std::fs::read(&cached).unwrap();
        assert_eq!(sparecycles_wasm::sha256_hex(&bytes), module.sha256);
    }
    // Module jobs are listed like any other.
    let listed = api.jobs().await;
    assert!(
        listed
            .iter()
            .any(|j| j.id == queens_job.id && j.app == queens.app)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn runaway_modules_fail_with_clear_task_errors_and_the_worker_goes_on() {
    let c = Coordinator::start();
    let api = c.api();
    let looping = upload(
        &api,
        module_text("(loop $l (br $l)) (i32.const 0)").as_bytes(),
    )
    .await;
    let bomb = upload(
        &api,
        module_text(
            "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 64)) (i32.const -1)))) \
             (i32.const 0)",
        )
        .as_bytes(),
    )
    .await;
    let queens = upload(&api, NQUEENS).await;
    let once = json!({"min_quorum": 1, "max_error_results": 1, "adaptive": false});
    let submit = |name: &str, module: &str, params: Value| {
        spec(json!({"name": name, "module": module, "params": params, "redundancy": once}))
    };
    let loop_job = api
        .submit(&submit(
            "forever",
            &looping.sha256,
            json!({"fuel": 200_000_000}),
        ))
        .await;
    let bomb_job = api.submit(&submit("bomb", &bomb.sha256, json!({}))).await;
    let queens_job = api
        .submit(&submit("8 queens", &queens.sha256, json!({"args": [8]})))
        .await;
    let _w = c.worker("solo", 2);

    let failed = api.wait(loop_job.id, LONG).await;
    assert_eq!(failed.state, JobState::Failed, "{failed:?}");
    let errors = task_errors(&c, loop_job.id).await;
    assert!(
        errors[0].contains("ran out of fuel in sc_compute"),
        "{errors:?}"
    );
    let failed = api.wait(bomb_job.id, LONG).await;
    assert_eq!(failed.state, JobState::Failed, "{failed:?}");
    let errors = task_errors(&c, bomb_job.id).await;
    assert!(
        errors[0].contains("tried to grow its memory") && errors[0].contains("64 MiB"),
        "{errors:?}"
    );
    // The same worker went on with other work.
    let done = api.wait(queens_job.id, LONG).await;
    assert_eq!(done.state, JobState::Completed, "{done:?}");
    assert_eq!(api.result_json(queens_job.id).await["values"], json!([92]));
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_that_are_not_usable_modules_are_refused_and_not_stored() {
    let c = Coordinator::start();
    let api = c.api();
    let import = r#"(module (import "env" "read_file" (func)) (memory (export "memory") 1))"#;
    let cases: [(&[u8], &str); 5] = [
        (b"\x00asm\x01\x00\x00\x00\xff", "invalid module"),
        (b"not a module at all (", "invalid WebAssembly text format"),
        (
            import.as_bytes(),
            "imports env.read_file, which is not offered",
        ),
        (
            br#"(module (memory (export "memory") 1))"#,
            "does not export sc_io",
        ),
        (&[0xff, 0xfe, 0x00], "neither a binary"),
    ];
    for (bytes, why) in cases {
        let (status, ct, body) = upload_raw(&api, bytes, Some(ADMIN_TOKEN)).await;
        assert_eq!(status, 422, "{body}");
        assert!(problem_detail(&ct, &body).contains(why), "{body}");
    }
    let (status, ct, body) = upload_raw(&api, NQUEENS, None).await;
    assert_eq!(status, 401);
    problem_detail(&ct, &body);
    let huge = vec![b' '; sparecycles_wasm::MAX_MODULE_BYTES + 1];
    let (status, ct, body) = upload_raw(&api, &huge, Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 413);
    problem_detail(&ct, &body);
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM modules")
        .fetch_one(&db(&c).await)
        .await
        .unwrap();
    assert_eq!(stored, 0);

    // Fetching: by a well-formed hash only, and only what exists.
    let get = |path: String| {
        let http = api.http.clone();
        async move { http.get(path).send().await.unwrap().status().as_u16() }
    };
    let missing = sparecycles_wasm::sha256_hex(b"missing");
    assert_eq!(
        get(format!("{}/api/v1/modules/{missing}", c.url)).await,
        404
    );
    assert_eq!(get(format!("{}/api/v1/modules/XYZ", c.url)).await, 400);
    // A job may only name a module that was uploaded.
    let (status, ct, body) = api
        .post_raw(
            "/api/v1/jobs",
            Some(ADMIN_TOKEN),
            &json!({"name": "x", "module": missing, "params": {}}).to_string(),
        )
        .await;
    assert_eq!(status, 422);
    assert!(problem_detail(&ct, &body).contains("upload it first"));
    // ...and whose split the module accepts: sc_units refuses N = 1.
    let queens = upload(&api, NQUEENS).await;
    let (status, ct, body) = api
        .post_raw(
            "/api/v1/jobs",
            Some(ADMIN_TOKEN),
            &json!({"name": "x", "module": queens.sha256, "params": {"args": [1]}}).to_string(),
        )
        .await;
    assert_eq!(status, 422);
    assert!(problem_detail(&ct, &body).contains("error code -1"));
    let served = api
        .http
        .get(format!("{}/api/v1/modules/{}", c.url, queens.sha256))
        .send()
        .await
        .unwrap();
    assert_eq!(served.bytes().await.unwrap().as_ref(), NQUEENS);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_refuses_module_bytes_that_do_not_match_the_hash() {
    let c = Coordinator::start();
    let api = c.api();
    let queens = upload(&api, NQUEENS).await;
    let job = api
        .submit(&spec(json!({
            "name": "forged", "module": queens.sha256, "params": {"args": [8]},
            "redundancy": {"min_quorum": 1, "max_error_results": 1, "adaptive": false}
        })))
        .await;
    // Someone swaps the stored bytes for another (valid) module: the coordinator now serves
    // bytes that are not the module the job names.
    sqlx::query("UPDATE modules SET bytes = $1 WHERE sha256 = $2")
        .bind(MC.to_vec())
        .bind(&queens.sha256)
        .execute(&db_writable(&c).await)
        .await
        .unwrap();
    let _w = c.worker("careful", 1);
    let failed = api.wait(job.id, LONG).await;
    assert_eq!(failed.state, JobState::Failed, "{failed:?}");
    let errors = task_errors(&c, job.id).await;
    let expected = format!(
        "refused module {}: the bytes received have SHA-256 {}",
        queens.sha256,
        sparecycles_wasm::sha256_hex(MC)
    );
    assert!(
        !errors.is_empty() && errors.iter().all(|e| e == &expected),
        "{errors:?}"
    );
    // Nothing of it was kept.
    let cached = c
        .dir
        .join("careful/modules")
        .join(format!("{}.wasm", queens.sha256));
    assert!(!cached.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stored_module_that_no_longer_compiles_fails_its_job_not_the_leases() {
    let mut c = Coordinator::start();
    let api = c.api();
    let queens = upload(&api, NQUEENS).await;
    let job = api
        .submit(&spec(json!({
            "name": "broken", "module": queens.sha256, "params": {"args": [8]},
            "redundancy": {"min_quorum": 1, "adaptive": false}
        })))
        .await;
    // The stored bytes stop being a module (as after an upgrade that refuses it); a restart
    // empties the coordinator's cache of compiled modules.
    sqlx::query("UPDATE modules SET bytes = $1 WHERE sha256 = $2")
        .bind(b"\0asm not really".to_vec())
        .bind(&queens.sha256)
        .execute(&db_writable(&c).await)
        .await
        .unwrap();
    c.restart();
    let api = c.api();
    let token = api
        .enroll_with_apps("w", vec![sparecycles_wasm::ANY_MODULE.into()])
        .await
        .token;
    // The lease helper asserts a 2xx answer: the lease is not a 500.
    let answer = api.lease(&token, 10).await;
    assert!(answer.tasks.is_empty(), "{answer:?}");
    let failed = api.job(job.id).await;
    assert_eq!(failed.state, JobState::Failed, "{failed:?}");
    let reason = failed.error.unwrap_or_default();
    assert!(
        reason.contains("can no longer be run") && reason.contains(&queens.sha256),
        "{reason}"
    );
    // Later leases are not troubled by it.
    let answer = api.lease(&token, 10).await;
    assert!(answer.tasks.is_empty(), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_take_only_the_module_work_they_accept() {
    let c = Coordinator::start();
    let api = c.api();
    let queens = upload(&api, NQUEENS).await;
    let mc = upload(&api, MC).await;
    let once = json!({"min_quorum": 1, "adaptive": false});
    let queens_job = api
        .submit(&spec(json!({
            "name": "q", "module": queens.sha256, "params": {"args": [9]}, "redundancy": once
        })))
        .await;
    let mc_job = api
        .submit(&spec(json!({
            "name": "mc", "module": mc.sha256, "redundancy": once,
            "params": {"args": [1, 0.0, 1.0], "range": [0, 1000], "unit_size": 100}
        })))
        .await;
    let primes = api
        .submit(&spec(json!({
            "name": "p", "app": "prime-count", "redundancy": once,
            "params": {"start": 0, "end": 1_000_000, "unit_size": 100_000}
        })))
        .await;
    let _refuser = c.worker_with("refuser", 1, &["--no-modules"]);
    let _picky = c.worker_with(
        "picky",
        1,
        &["--no-modules=false", "--allow-module", &queens.sha256],
    );

    let done = api.wait(queens_job.id, LONG).await;
    assert_eq!(done.state, JobState::Completed, "{done:?}");
    assert_eq!(api.result_json(queens_job.id).await["values"], json!([352]));
    assert_eq!(api.wait(primes.id, LONG).await.state, JobState::Completed);
    // Give leases a few more rounds: still nobody takes the module nobody accepts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(api.job(mc_job.id).await.units.done, 0);
    assert_eq!(tasks_of(&c, mc_job.id, "picky").await, 0);
    assert_eq!(tasks_of(&c, mc_job.id, "refuser").await, 0);
    assert_eq!(tasks_of(&c, queens_job.id, "refuser").await, 0);
    assert!(tasks_of(&c, queens_job.id, "picky").await > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_uploads_a_module_and_follows_its_job() {
    let c = Coordinator::start();
    let specs = format!("{}/../job-specs/wasm", env!("CARGO_MANIFEST_DIR"));
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_coordinator"))
            .args(args)
            .args(["--coordinator", &c.url, "--token", ADMIN_TOKEN])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let uploaded = cli(&["upload-module", &format!("{specs}/nqueens.wasm")]);
    assert!(uploaded.status.success(), "{uploaded:?}");
    assert_eq!(
        String::from_utf8_lossy(&uploaded.stdout).trim(),
        sparecycles_wasm::sha256_hex(NQUEENS)
    );
    // The spec asks for a quorum of 2: two workers.
    let _w = [c.worker("w1", 1), c.worker("w2", 1)];
    let submitted = cli(&["submit", &format!("{specs}/nqueens.toml"), "--wait"]);
    let stdout = String::from_utf8_lossy(&submitted.stdout);
    assert!(submitted.status.success(), "{submitted:?}");
    assert!(stdout.contains("\"solutions\":14200"), "{stdout}");
    let refused = cli(&["upload-module", &format!("{specs}/README.md")]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("the module was refused"),
        "{refused:?}"
    );
}
