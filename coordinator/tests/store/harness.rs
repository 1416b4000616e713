//! Runs one contract test on a backend: SQLite in a temp dir, or PostgreSQL in a database of
//! its own (created from `TEST_POSTGRES_URL`, dropped afterwards even if the test fails).

use std::future::Future;
use std::sync::Arc;

use sparecycles_coordinator::store::{
    JobRow, NewJob, NewWorker, PostgresStore, SqliteStore, Store,
};
use sparecycles_protocol::{Millis, Redundancy};
use sqlx::Connection;
use uuid::Uuid;

/// A fresh, empty store of one backend.
pub struct Fresh {
    pub store: Arc<dyn Store>,
    /// For PostgreSQL tests that open a second store on the same database.
    pub url: Option<String>,
}

/// `TEST_POSTGRES_URL`, or `None` (with a note) when PostgreSQL tests are skipped.
pub fn postgres_url() -> Option<String> {
    let url = std::env::var("TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!("TEST_POSTGRES_URL is not set: skipping the PostgreSQL run of this test");
    }
    url
}

/// `base` with its database name replaced by `db`.
pub fn with_database(base: &str, db: &str) -> String {
    let base = base.split('?').next().unwrap_or(base);
    let (server, _) = base.rsplit_once('/').expect("a URL with a database");
    format!("{server}/{db}")
}

/// Creates a database with a random name; returns its name.
pub async fn create_database(admin_url: &str) -> String {
    let name = format!("sc_test_{}", Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(admin_url)
        .await
        .expect("connect to TEST_POSTGRES_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create test database");
    name
}

pub async fn drop_database(admin_url: &str, name: &str) {
    if let Ok(mut admin) = sqlx::PgConnection::connect(admin_url).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await;
    }
}

/// Runs `test` on a fresh SQLite store.
pub async fn on_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Fresh) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).await.expect("open sqlite");
    let fresh = Fresh {
        store: Arc::new(store.clone()),
        url: None,
    };
    let outcome = tokio::spawn(test(fresh)).await;
    store.close().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Runs `test` on a fresh PostgreSQL database, when `TEST_POSTGRES_URL` is set.
pub async fn on_postgres<F, Fut>(test: F)
where
    F: FnOnce(Fresh) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(admin) = postgres_url() else { return };
    let name = create_database(&admin).await;
    let url = with_database(&admin, &name);
    let store = Arc::new(PostgresStore::open(&url).await.expect("open postgres"));
    let fresh = Fresh {
        store: store.clone(),
        url: Some(url),
    };
    let outcome = tokio::spawn(test(fresh)).await;
    store.close().await;
    drop_database(&admin, &name).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Declares a contract test that runs once per backend: `NAME::sqlite` and `NAME::postgres`.
macro_rules! contract {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                crate::harness::on_sqlite(|f| super::$body(f)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                crate::harness::on_postgres(|f| super::$body(f)).await;
            }
        }
    };
}

pub const APP: &str = "prime-count";

pub fn apps() -> Vec<String> {
    vec![APP.to_owned()]
}

pub fn redundancy(quorum: u32, adaptive: bool) -> Redundancy {
    Redundancy {
        min_quorum: quorum,
        target_results: quorum,
        max_error_results: 3,
        max_total_results: quorum + 4,
        adaptive,
        distinct_owners: false,
    }
}

/// Creates a job of `units` units, `initial` of them up front.
pub async fn job(
    store: &dyn Store,
    units: u64,
    initial: u64,
    r: Redundancy,
    now: Millis,
) -> JobRow {
    store
        .create_job(
            NewJob {
                id: Uuid::now_v7(),
                name: "contract".into(),
                app: APP.into(),
                params: serde_json::json!({"start": 0, "end": units * 10, "unit_size": 10}),
                priority: 0,
                redundancy: r,
                unit_timeout_ms: 60_000,
                unit_count: units,
                initial_units: initial,
                owner: None,
            },
            now,
        )
        .await
        .expect("create job")
}

/// Enrolls a worker with room for `quota` tasks.
pub async fn worker(store: &dyn Store, owner: Option<&str>, quota: u32, now: Millis) -> Uuid {
    let id = Uuid::now_v7();
    store
        .enroll(
            NewWorker {
                id,
                token_hash: format!("hash-{id}"),
                name: format!("w-{id}"),
                owner: owner.map(str::to_owned),
                os: "linux".into(),
                arch: "x86_64".into(),
                cores: 4,
                apps: apps(),
                quota,
            },
            now,
        )
        .await
        .expect("enroll");
    id
}
