//! `coordinator bench`, the load generator of issue 8, run against a real coordinator: both
//! load shapes finish the job with the right answer and print the figures the benchmark
//! scripts read.

use std::process::Command;

use crate::helpers::*;

/// Runs `coordinator bench` against `c` with small sizes and `extra` flags.
fn run_bench(c: &Coordinator, extra: &[&str]) -> std::process::Output {
    Command::new(coordinator_bin())
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
        .unwrap()
}

/// Runs `coordinator bench` with `extra` flags; returns its stdout, which must be a success.
fn bench(c: &Coordinator, extra: &[&str]) -> String {
    let out = run_bench(c, extra);
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
    let out = run_bench(&c, &["--rate", "0"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("expected calls per second"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Niceness of each of the process's threads, by thread name.
#[cfg(target_os = "linux")]
fn thread_niceness(pid: u32) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Field 19 of stat; fields after the ")" that closes the name start at field 3.
        let Some(nice) = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(16))
            .and_then(|n| n.parse().ok())
        else {
            continue;
        };
        out.push((name.trim().to_owned(), nice));
    }
    out
}

/// With embedded SQLite the async threads run nicer than the process, so they do not keep
/// preempting the one writer thread; with PostgreSQL they are left alone. Read after a job
/// ran, so the blocking pool's threads (started by async threads, and named like them) exist.
#[cfg(target_os = "linux")]
#[test]
fn async_threads_yield_to_the_sqlite_writer_only_on_sqlite() {
    let c = Coordinator::start();
    // The load generator's job: 300 units, assembled on the blocking pool.
    let out = run_bench(&c, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let threads = thread_niceness(c.pid().unwrap());
    let main = threads.iter().find(|(n, _)| n == "coordinator").unwrap().1;
    let tokio: Vec<i32> = threads
        .iter()
        .filter(|(n, _)| n.starts_with("tokio-rt-worker"))
        .map(|t| t.1)
        .collect();
    assert!(!tokio.is_empty(), "{threads:?}");
    if c.on_postgres() {
        assert!(tokio.iter().all(|&n| n == main), "{threads:?}");
    } else {
        let nicer = (main + 10).min(19);
        assert!(tokio.iter().all(|&n| n == nicer), "{threads:?}");
        // The writer's thread, started before the runtime's threads, keeps the process's.
        assert!(
            threads
                .iter()
                .any(|(n, nice)| n.starts_with("sqlx-sqlite") && *nice == main),
            "{threads:?}"
        );
    }
}
