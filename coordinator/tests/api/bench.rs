//! `coordinator bench`, the load generator of issue 8, run against a real coordinator: both
//! load shapes finish the job with the right answer and print the figures the benchmark
//! scripts read.

use std::process::Command;

use crate::helpers::*;

/// Runs `coordinator bench` with `extra` flags; returns its stdout.
fn bench(c: &Coordinator, extra: &[&str]) -> String {
    let out = Command::new(coordinator_bin())
        .args([
            "bench",
            "--coordinator",
            c.url.as_str(),
            "--token",
            ADMIN_TOKEN,
        ])
        .args(["--units", "300", "--workers", "12", "--batch", "8"])
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "bench {extra:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn closed_and_open_loop_runs_finish_the_job_with_the_right_answer() {
    // 300 units of 10 numbers: the primes below 3,000.
    let c = Coordinator::start_with(&["--rate-limit-per-ip", "0"]);
    let closed = bench(&c, &["--concurrency", "3"]);
    assert!(closed.contains("3 clients"), "{closed}");
    let open = bench(&c, &["--rate", "150", "--quorum", "2"]);
    assert!(open.contains("open loop, 150 cycles/s"), "{open}");
    for out in [&closed, &open] {
        assert!(out.contains(r#"result: {"count":430}"#), "{out}");
        assert!(out.contains("units/s end to end"), "{out}");
        assert!(
            out.contains("lease  p50") && out.contains("report p50"),
            "{out}"
        );
    }
    assert!(
        open.contains("tasks created: 600 (2.00 per unit)"),
        "{open}"
    );

    // A rate that is not a positive number is refused before anything is sent.
    let out = Command::new(coordinator_bin())
        .args([
            "bench",
            "--coordinator",
            c.url.as_str(),
            "--token",
            ADMIN_TOKEN,
        ])
        .args(["--rate", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("expected calls per second"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
