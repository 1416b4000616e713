//! Who runs the transitioner: a lone SQLite store always leads; of several PostgreSQL stores
//! on one database exactly one does, and another takes over when it goes away.

use sparecycles_coordinator::store::{LEADER_LOCK_KEY, PostgresStore, Store};
use sqlx::Connection;

use crate::harness::{Fresh, on_postgres, on_sqlite};

#[tokio::test]
async fn sqlite_always_leads() {
    on_sqlite(|f: Fresh| async move {
        assert!(f.store.try_lead().await.unwrap());
        assert!(f.store.try_lead().await.unwrap(), "and keeps leading");
    })
    .await;
}

#[tokio::test]
async fn one_postgres_store_leads_and_another_takes_over() {
    on_postgres(|f: Fresh| async move {
        let url = f.url.expect("postgres url");
        let a = PostgresStore::open(&url).await.unwrap();
        let b = PostgresStore::open(&url).await.unwrap();
        let c = PostgresStore::open(&url).await.unwrap();
        assert!(a.try_lead().await.unwrap());
        assert!(a.try_lead().await.unwrap(), "a leader keeps leading");
        assert!(!b.try_lead().await.unwrap(), "one leader at a time");
        assert!(!c.try_lead().await.unwrap());
        // A clean stop hands over.
        a.close().await;
        assert!(b.try_lead().await.unwrap());
        assert!(!c.try_lead().await.unwrap());
        // A crash: the leader's session dies (as when its process is killed).
        let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_locks \
             WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
             AND (classid::bigint << 32 | objid::bigint) = $1 \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .bind(LEADER_LOCK_KEY)
        .fetch_all(&mut admin)
        .await
        .unwrap();
        assert_eq!(killed, vec![true]);
        let mut took_over = false;
        for _ in 0..50 {
            if c.try_lead().await.unwrap() {
                took_over = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(took_over, "a crashed leader is replaced");
        assert!(
            b.try_lead().await.is_err(),
            "the old leader learns it lost the lock"
        );
        assert!(!b.try_lead().await.unwrap(), "and stands by");
        b.close().await;
        c.close().await;
    })
    .await;
}
