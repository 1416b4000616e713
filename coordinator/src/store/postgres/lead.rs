//! Leadership of the transitioner among coordinators sharing one database: a session-level
//! advisory lock held on a dedicated connection. When the leader dies, its connection closes
//! and PostgreSQL releases the lock, so the next coordinator to try takes over.

use sqlx::{ConnectOptions, Connection};

use super::PostgresStore;
use crate::store::StoreResult;

/// The advisory lock key of the transitioner ("SpareCyc" in ASCII).
pub const LEADER_LOCK_KEY: i64 = 0x5370_6172_6543_7963;

/// The dedicated session, and whether it holds the lock.
pub(super) struct LeaderSession {
    conn: sqlx::PgConnection,
    held: bool,
}

impl LeaderSession {
    /// Gives the lock up before closing the session, so that another coordinator can lead as
    /// soon as this returns (dropping the connection would release it only once the server
    /// notices, a moment later).
    pub(super) async fn release(mut self) {
        if self.held {
            let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(LEADER_LOCK_KEY)
                .execute(&mut self.conn)
                .await;
            if let Err(e) = unlocked {
                tracing::warn!(error = %e, "could not give up the transitioner lock; it goes with the session");
            }
        }
        let _ = self.conn.close().await;
    }
}

impl PostgresStore {
    /// True while this process holds the transitioner lock; takes it when it is free.
    pub(super) async fn try_lead_once(&self) -> StoreResult<bool> {
        let mut slot = self.leader.lock().await;
        let result = match slot.as_mut() {
            Some(s) => Self::check(s).await,
            None => {
                let opts = self
                    .opts
                    .clone()
                    .application_name(&format!("sparecycles-leader-{}", std::process::id()));
                let mut s = LeaderSession {
                    conn: opts.connect().await?,
                    held: false,
                };
                let r = Self::check(&mut s).await;
                *slot = Some(s);
                r
            }
        };
        match result {
            Ok(held) => Ok(held),
            Err(e) => {
                // The session, and with it any lock, is gone: another coordinator may lead
                // by now. Reconnect on the next try.
                tracing::warn!(error = %e, "transitioner lock session lost");
                slot.take();
                Err(e)
            }
        }
    }

    async fn check(s: &mut LeaderSession) -> StoreResult<bool> {
        if s.held {
            s.conn.ping().await?;
            return Ok(true);
        }
        s.held = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LEADER_LOCK_KEY)
            .fetch_one(&mut s.conn)
            .await?;
        if s.held {
            tracing::info!("this coordinator now runs the transitioner");
        }
        Ok(s.held)
    }
}
