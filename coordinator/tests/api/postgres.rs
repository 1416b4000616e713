//! Several coordinators on one PostgreSQL database, with workers split between them. Skipped
//! (with a note) unless `TEST_POSTGRES_URL` names a server where databases can be created;
//! each test makes its own database and drops it afterwards.

use std::time::{Duration, Instant};

use serde_json::json;
use sparecycles_coordinator::store::LEADER_LOCK_KEY;
use sparecycles_protocol::JobState;
use sqlx::{Connection, PgPool, Row};
use uuid::Uuid;

use crate::helpers::{Coordinator, spec};

const LONG: Duration = Duration::from_secs(300);

/// A database of one test's own, dropped (even after a failure) when the value goes.
struct PgDb {
    admin: String,
    name: String,
    url: String,
}

impl PgDb {
    async fn create() -> Option<PgDb> {
        let Some(admin) = std::env::var("TEST_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty())
        else {
            eprintln!("TEST_POSTGRES_URL is not set: skipping this PostgreSQL test");
            return None;
        };
        let name = format!("sc_test_{}", Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .expect("connect to TEST_POSTGRES_URL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create database");
        let base = admin.split('?').next().unwrap_or(&admin);
        let (server, _) = base.rsplit_once('/').expect("URL with a database");
        let url = format!("{server}/{name}");
        Some(PgDb { admin, name, url })
    }

    async fn pool(&self) -> PgPool {
        PgPool::connect(&self.url).await.expect("connect test db")
    }

    /// `serve` flags for a coordinator on this database.
    fn flags(&self) -> Vec<String> {
        ["--database-url", &self.url, "--suspect-after-secs", "2"]
            .map(str::to_owned)
            .to_vec()
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs inside the test's runtime: use a runtime of our own on another thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut c).await;
                }
            });
        })
        .join();
    }
}

fn start(db: &PgDb) -> Coordinator {
    let flags = db.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Coordinator::start_with(&flags)
}

/// Sessions holding the transitioner's advisory lock (0 or 1).
async fn leaders(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND objsubid = 1 AND (classid::bigint << 32 | objid::bigint) = $1 \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .bind(LEADER_LOCK_KEY)
    .fetch_one(pool)
    .await
    .expect("pg_locks")
}

/// The server process of the session holding the transitioner's lock.
async fn leader_session(pool: &PgPool) -> Option<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND objsubid = 1 AND (classid::bigint << 32 | objid::bigint) = $1 \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .bind(LEADER_LOCK_KEY)
    .fetch_optional(pool)
    .await
    .expect("pg_locks")
}

/// Waits until a session other than `not` holds the transitioner's lock; returns it.
async fn wait_for_leader(pool: &PgPool, not: Option<i32>) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match leader_session(pool).await {
            Some(pid) if Some(pid) != not => return pid,
            _ => {}
        }
        assert!(Instant::now() < deadline, "no coordinator took the lead");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the database says about a job's leases: never one task leased twice, never two
/// tasks of one unit to one worker; every unit backed by `quorum` agreeing workers' results.
async fn check_leases(pool: &PgPool, job: Uuid, units: i64, quorum: i64) {
    let max: i64 = sqlx::query_scalar("SELECT MAX(lease_count) FROM tasks WHERE job_id = $1")
        .bind(job.to_string())
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(max, 1, "a task was leased more than once");
    let doubled: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT unit_id FROM tasks WHERE job_id = $1 AND worker_id IS NOT NULL \
         GROUP BY unit_id, worker_id HAVING COUNT(*) > 1) AS d",
    )
    .bind(job.to_string())
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(doubled, 0, "two tasks of a unit went to one worker");
    let rows = sqlx::query(
        "SELECT u.seq, COUNT(t.id) AS valid, COUNT(DISTINCT t.worker_id) AS workers, \
         COUNT(DISTINCT t.output) AS outputs FROM units u \
         JOIN tasks t ON t.unit_id = u.id AND t.validation = 'valid' \
         WHERE u.job_id = $1 AND u.state = 'done' GROUP BY u.seq",
    )
    .bind(job.to_string())
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(rows.len() as i64, units);
    for r in rows {
        assert!(r.get::<i64, _>("valid") >= quorum);
        assert_eq!(r.get::<i64, _>("workers"), r.get::<i64, _>("valid"));
        assert_eq!(r.get::<i64, _>("outputs"), 1);
    }
}

/// Workers that computed valid results of the job.
async fn contributors(pool: &PgPool, job: Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(DISTINCT worker_id) FROM tasks WHERE job_id = $1 AND validation = 'valid'",
    )
    .bind(job.to_string())
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_coordinators_share_one_postgres_database() {
    let Some(db) = PgDb::create().await else {
        return;
    };
    let a = start(&db);
    let pool = db.pool().await;
    wait_for_leader(&pool, None).await;
    let b = start(&db);
    let _workers = [
        a.worker("a1", 1),
        a.worker("a2", 1),
        b.worker("b1", 1),
        b.worker("b2", 1),
    ];
    // A job of a few seconds of CPU: a worker of the other coordinator that was already
    // waiting for work hears of it at its lease's next recheck (up to a second later), and a
    // job that the first two workers could finish within that second left it nothing to do.
    let job = a
        .api()
        .submit(&spec(json!({
            "name": "pi(1e10) on two coordinators",
            "app": "prime-count",
            "params": {"start": 0, "end": 10_000_000_000u64, "unit_size": 100_000_000},
            "redundancy": {"min_quorum": 2, "adaptive": false}
        })))
        .await;
    // Submitted on one, finished and served by either.
    let done = b.api().wait(job.id, LONG).await;
    assert_eq!(done.state, JobState::Completed, "{done:?}");
    assert_eq!(
        b.api().result_json(job.id).await,
        json!({"count": 455_052_511})
    );
    assert_eq!(a.api().job(job.id).await.state, JobState::Completed);
    check_leases(&pool, job.id, 100, 2).await;
    assert_eq!(
        contributors(&pool, job.id).await,
        4,
        "the workers of both coordinators computed"
    );
    assert_eq!(leaders(&pool).await, 1, "one transitioner for both");
    // Every transaction takes workers, then units, each in id order: none waited on another
    // in a cycle, which PostgreSQL breaks only after a second.
    for c in [&a, &b] {
        let metrics = c.api().metrics().await;
        assert!(
            !metrics.contains("sparecycles_db_retries_total{"),
            "transactions were retried: {}",
            metrics
                .lines()
                .filter(|l| l.starts_with("sparecycles_db_retries_total"))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn when_the_leading_coordinator_dies_another_takes_over() {
    let Some(db) = PgDb::create().await else {
        return;
    };
    let mut leader = start(&db);
    let pool = db.pool().await;
    let first = wait_for_leader(&pool, None).await;
    let other = start(&db);
    let _workers = [
        leader.worker("l1", 1),
        leader.worker("l2", 1),
        other.worker("o1", 1),
        other.worker("o2", 1),
    ];
    let api = other.api();
    let job = api
        .submit(&spec(json!({
            "name": "pi(2e8), leader killed",
            "app": "prime-count",
            "unit_timeout_secs": 30,
            // Many small units: on a fast machine 400 units took under half a second, less
            // than the test needs to see the job under way and kill the leader.
            "params": {"start": 0, "end": 200_000_000u64, "unit_size": 100_000},
            "redundancy": {"min_quorum": 2}
        })))
        .await;
    let mid = api.wait_done(job.id, 10, LONG).await;
    assert!(
        !mid.state.is_final(),
        "the job ended before the leader could be killed"
    );
    leader.kill();
    // PostgreSQL ends the dead leader's session and its lock; the survivor takes it.
    wait_for_leader(&pool, Some(first)).await;
    let done = api.wait(job.id, LONG).await;
    assert_eq!(done.state, JobState::Completed, "{done:?}");
    assert_eq!(api.result_json(job.id).await, json!({"count": 11_078_937}));
    // Adaptive replication: trusted workers' units may rest on one result.
    check_leases(&pool, job.id, 2_000, 1).await;
    pool.close().await;
}
