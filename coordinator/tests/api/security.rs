//! Security end to end: rate limits that stop a flooding token but not an honest worker (and a
//! real worker that obeys them), enrollment keys, native HTTPS with a worker trusting the
//! coordinator's certificate, plain http refused off this machine, tokens kept out of logs,
//! and the `coordinator token` CLI.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use sparecycles_protocol::work::{ReleaseRequest, ReleaseResponse};
use sparecycles_protocol::{JobState, LeaseRequest, LeaseResponse};

use crate::helpers::{
    ADMIN_TOKEN, Api, Coordinator, coordinator_bin, db, problem_detail, spec, worker_bin,
};

fn many_units(name: &str) -> sparecycles_protocol::JobSpec {
    spec(json!({
        "name": name,
        "app": "collatz",
        "params": {"start": 1, "end": 100_000, "unit_size": 100},
        "redundancy": {"min_quorum": 1, "adaptive": false}
    }))
}

fn small_job(name: &str) -> sparecycles_protocol::JobSpec {
    spec(json!({
        "name": name,
        "app": "collatz",
        "params": {"start": 1, "end": 20_000, "unit_size": 5_000},
        "redundancy": {"min_quorum": 1, "adaptive": false}
    }))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flooding_token_gets_429s_while_another_worker_keeps_getting_work() {
    // Both workers call from 127.0.0.1 here: only the per-token limit is under test.
    let c = Coordinator::start_with(&["--rate-limit-per-token", "10", "--rate-limit-per-ip", "0"]);
    let api = c.api();
    api.submit(&many_units("plenty")).await;
    let flooder = api.enroll("flooder").await;
    let honest = api.enroll("honest").await;

    // Lease calls from one token, 30 at a time, as fast as the coordinator answers, for 4 s.
    let flood = {
        let api = api.clone();
        let token = flooder.token.clone();
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(4) {
                let mut calls = tokio::task::JoinSet::new();
                for _ in 0..30 {
                    let req = api
                        .http
                        .post(format!("{}/api/v1/work/lease", api.url))
                        .bearer_auth(&token)
                        .json(&LeaseRequest {
                            max_tasks: 1,
                            held: None,
                            wait_ms: None,
                        });
                    calls.spawn(async move {
                        let resp = req.send().await.expect("lease");
                        let status = resp.status().as_u16();
                        let retry_after = resp
                            .headers()
                            .get("retry-after")
                            .map(|v| v.to_str().unwrap().to_owned());
                        let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
                        let body: serde_json::Value = resp.json().await.unwrap_or_default();
                        (status, retry_after, ct, body)
                    });
                }
                statuses.extend(calls.join_all().await);
            }
            statuses
        })
    };
    // Meanwhile the honest worker leases and hands back a task 4 times a second (8 calls/s,
    // under its limit of 10): every call succeeds and brings work.
    let mut leased = 0;
    while !flood.is_finished() {
        let got: LeaseResponse = api.lease(&honest.token, 1).await;
        assert_eq!(got.tasks.len(), 1, "the honest worker got no work: {got:?}");
        leased += 1;
        let tasks = got.tasks.iter().map(|t| t.task_id).collect();
        let _: ReleaseResponse = api
            .worker_call(
                &honest.token,
                "/api/v1/work/release",
                &ReleaseRequest { tasks },
            )
            .await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let statuses = flood.await.unwrap();
    let limited: Vec<_> = statuses.iter().filter(|(s, ..)| *s == 429).collect();
    let ok = statuses.iter().filter(|(s, ..)| *s == 200).count();
    assert_eq!(
        limited.len() + ok,
        statuses.len(),
        "only 200s and 429s expected"
    );
    // At 10/s with a burst of 20, at most about 60 of 4 s of flood get through.
    assert!(
        statuses.len() >= 300,
        "the flood sent only {}",
        statuses.len()
    );
    assert!(ok <= 80, "{ok} flood calls got through");
    assert!(
        leased >= 3,
        "the honest worker leased only {leased} times in 4 s"
    );
    for (_, retry_after, ct, body) in &limited {
        let secs: u64 = retry_after
            .as_deref()
            .expect("Retry-After")
            .parse()
            .unwrap();
        assert!((1..=2).contains(&secs), "Retry-After {secs}");
        assert!(problem_detail(ct, body).contains("too many requests"));
    }
    println!(
        "flood: {} of {} limited, honest worker leased {leased} times meanwhile",
        limited.len(),
        statuses.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_worker_obeys_the_limit_and_still_finishes() {
    // Two calls a second is less than the worker asks for when it polls every 100 ms.
    let c = Coordinator::start_with(&["--rate-limit-per-token", "2"]);
    let api = c.api();
    let job = api.submit(&small_job("throttled")).await;
    let _w = c.worker("slowed", 1);
    let done = api.wait(job.id, Duration::from_secs(120)).await;
    assert_eq!(done.state, JobState::Completed, "{done:?}");
    let metrics = api.metrics().await;
    assert!(
        metrics.contains("sparecycles_rate_limited_total"),
        "the worker was never limited, so this proved nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn enrollment_needs_the_key_when_one_is_set() {
    let key = "project-enroll-key-0123456789";
    let c = Coordinator::start_with(&["--enroll-key", key]);
    let api = c.api();
    let base =
        json!({"name": "w", "cores": 1, "os": "linux", "arch": "x86_64", "apps": ["collatz"]});
    for bad in [None, Some("project-enroll-key-0123456780"), Some("")] {
        let mut body = base.clone();
        if let Some(k) = bad {
            body["enroll_key"] = json!(k);
        }
        let (status, ct, body) = api
            .post_raw("/api/v1/workers/enroll", None, &body.to_string())
            .await;
        assert_eq!(status, 403);
        assert!(problem_detail(&ct, &body).contains("enrollment key"));
    }
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM workers")
        .fetch_one(&db(&c).await)
        .await
        .unwrap();
    assert_eq!(count, 0, "refused enrollments stored nothing");

    // `worker enroll` without the key stops with the coordinator's reason.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(worker_bin())
        .args(["enroll", "--coordinator", &c.url, "--state-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("enrollment key"), "{stderr}");

    // With it, a real worker enrolls and computes.
    let job = api.submit(&small_job("keyed")).await;
    let _w = c.worker_with("keyed", 1, &["--enroll-key", key]);
    let done = api.wait(job.id, Duration::from_secs(120)).await;
    assert_eq!(done.state, JobState::Completed, "{done:?}");
    assert!(!c.log_text().contains(key), "the enrollment key was logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn https_natively_with_a_worker_that_trusts_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let c = Coordinator::start_with(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert!(c.url.starts_with("https://127.0.0.1:"), "{}", c.url);

    // A client that does not trust the certificate gets no answer; plain HTTP gets none either.
    let untrusting = Api::new(&c.url);
    let err = untrusting
        .http
        .get(format!("{}/healthz", c.url))
        .send()
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").to_lowercase().contains("certificate"),
        "{err:?}"
    );
    let plain = format!("http://{}/healthz", c.addr);
    assert!(untrusting.http.get(plain).send().await.is_err());

    let api = Api::with_ca(&c.url, ck.cert.pem().as_bytes());
    let resp = api
        .http
        .get(format!("{}/healthz", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The CLI trusts it with --ca-cert too.
    let created = cli(&[
        "token",
        "create",
        "--name",
        "tls",
        "--coordinator",
        &c.url,
        "--token",
        ADMIN_TOKEN,
        "--ca-cert",
        cert.to_str().unwrap(),
    ]);
    assert!(created.contains("scs_"), "{created}");
    let job = api.submit(&small_job("over tls")).await;
    let _w = c.worker_with("tls", 1, &["--ca-cert", cert.to_str().unwrap()]);
    let done = api.wait(job.id, Duration::from_secs(120)).await;
    assert_eq!(done.state, JobState::Completed, "{done:?}");

    // The dashboard's event stream works over TLS, and a clean stop ends it and drains.
    let mut events = api
        .http
        .get(format!("{}/api/v1/events", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let first = events.chunk().await.unwrap().expect("an event");
    assert!(String::from_utf8_lossy(&first).contains("snapshot") || first.starts_with(b":"));
    let mut c = c;
    let status = tokio::task::spawn_blocking(move || c.terminate(Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("no exit within 20 s of SIGTERM");
    assert!(status.success(), "{status:?}");
    while let Ok(Some(_)) = events.chunk().await {}
}

#[test]
fn the_worker_refuses_plain_http_to_another_machine() {
    let dir = tempfile::tempdir().unwrap();
    for command in ["run", "enroll"] {
        let started = Instant::now();
        // 192.0.2.0/24 is reserved for documentation: nothing would answer, and nothing is sent.
        let out = Command::new(worker_bin())
            .args([
                command,
                "--coordinator",
                "http://192.0.2.10:8080",
                "--state-dir",
            ])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{command} accepted plain http");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("refusing plain http://") && stderr.contains("--insecure"),
            "{command}: {stderr}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "it tried to connect first"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_never_reach_the_logs() {
    let c = Coordinator::start();
    let api = c.api();
    let worker = api.enroll("quiet").await;
    let out = cli(&[
        "token",
        "create",
        "--name",
        "logger",
        "--coordinator",
        &c.url,
        "--token",
        ADMIN_TOKEN,
    ]);
    let submitter = out.lines().nth(1).unwrap().trim().to_owned();
    let bad = "scs_0000000000000000000000000000000000000000000000000000000000000000";
    for token in [ADMIN_TOKEN, &worker.token, &submitter, bad] {
        for path in [
            "/api/v1/jobs",
            "/api/v1/workers",
            "/api/v1/work/me",
            "/api/v1/tokens",
        ] {
            let _ = api
                .http
                .get(format!("{}{path}", c.url))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
        }
        let _ = api.post_raw("/api/v1/jobs", Some(token), "{not json").await;
    }
    let log = c.log_text();
    assert!(
        log.contains("submitter token created"),
        "logging is on: {log}"
    );
    for token in [ADMIN_TOKEN, &worker.token, &submitter, bad] {
        assert!(!log.contains(token), "a token was logged");
    }
}

/// Runs the coordinator CLI; returns its stdout, panicking with stderr on failure.
fn cli(args: &[&str]) -> String {
    let out = Command::new(coordinator_bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_cli_creates_lists_and_revokes() {
    let c = Coordinator::start();
    let admin = ["--coordinator", c.url.as_str(), "--token", ADMIN_TOKEN];
    let created = cli(&[&["token", "create", "--name", "ci-bot"][..], &admin].concat());
    let mut lines = created.lines();
    let id = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(3)
        .unwrap()
        .to_owned();
    let token = lines.next().unwrap().trim().to_owned();
    assert!(token.starts_with("scs_"), "{created}");

    let listed = cli(&[&["token", "list"][..], &admin].concat());
    assert!(listed.contains(&id) && listed.contains("ci-bot") && listed.contains("active"));
    assert!(!listed.contains(&token), "list shows the secret");

    // The submitter submits with its token; the job is its own.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("job.toml");
    std::fs::write(
        &file,
        "name = \"cli\"\napp = \"collatz\"\n[params]\nstart = 1\nend = 100\nunit_size = 10\n",
    )
    .unwrap();
    let as_submitter = ["--coordinator", c.url.as_str(), "--token", token.as_str()];
    let file = file.to_str().unwrap();
    let submitted = cli(&[&["submit", file][..], &as_submitter].concat());
    assert!(submitted.starts_with("submitted job"), "{submitted}");
    let owner: Option<String> = sqlx::query_scalar("SELECT owner FROM jobs")
        .fetch_one(&db(&c).await)
        .await
        .unwrap();
    assert_eq!(owner.as_deref(), Some(id.as_str()));

    // A submitter cannot manage tokens.
    let out = Command::new(coordinator_bin())
        .args([&["token", "list"][..], &as_submitter].concat())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin token"));

    let revoked = cli(&[&["token", "revoke", &id][..], &admin].concat());
    assert!(revoked.contains("revoked"), "{revoked}");
    let out = Command::new(coordinator_bin())
        .args([&["submit", file][..], &as_submitter].concat())
        .output()
        .unwrap();
    assert!(!out.status.success(), "a revoked token still submits");
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}
