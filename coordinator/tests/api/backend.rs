//! Which database the coordinators under test use. SQLite in their data dir by default; with
//! `SPARECYCLES_TEST_BACKEND=postgres` (and `TEST_POSTGRES_URL`) each coordinator gets a fresh
//! PostgreSQL database of its own, dropped when the coordinator handle goes, so the whole suite
//! runs on PostgreSQL too.

use sqlx::Connection;
use uuid::Uuid;

/// A database created for one coordinator; dropped with this value.
pub struct TestDb {
    admin: String,
    name: String,
    pub url: String,
}

/// Runs `f` on a runtime of its own on another thread: the harness is synchronous but is
/// called from inside the tests' runtime.
fn on_own_runtime<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    })
    .join()
    .expect("database setup thread")
}

/// A fresh database when the suite runs on PostgreSQL, else `None`.
pub fn fresh_database() -> Option<TestDb> {
    let wanted = std::env::var("SPARECYCLES_TEST_BACKEND").ok()?;
    if wanted != "postgres" {
        return None;
    }
    let admin = std::env::var("TEST_POSTGRES_URL")
        .expect("SPARECYCLES_TEST_BACKEND=postgres needs TEST_POSTGRES_URL");
    let name = format!("sc_test_{}", Uuid::new_v4().simple());
    let (a, n) = (admin.clone(), name.clone());
    on_own_runtime(async move {
        let mut c = sqlx::PgConnection::connect(&a).await.expect("connect");
        let sql = format!("CREATE DATABASE {n}");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut c)
            .await
            .expect("create database");
    });
    let base = admin.split('?').next().unwrap_or(&admin);
    let (server, _) = base.rsplit_once('/').expect("URL with a database");
    let url = format!("{server}/{name}");
    Some(TestDb { admin, name, url })
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A failed test's database is the best evidence of what went wrong.
            eprintln!("--- kept PostgreSQL database {} for inspection", self.name);
            return;
        }
        let (admin, name) = (self.admin.clone(), self.name.clone());
        on_own_runtime(async move {
            if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut c).await;
            }
        });
    }
}
