//! Submitter tokens and the jobs each submitter owns (SQLite).

use sparecycles_protocol::Millis;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

use super::{JOB_COLUMNS, SqliteStore, job_from_row, uuid_col};
use crate::store::{JobRow, StoreResult, SubmitterRow};

const COLUMNS: &str = "id, name, created_at, revoked_at";

fn submitter_from_row(row: &SqliteRow) -> StoreResult<SubmitterRow> {
    Ok(SubmitterRow {
        id: uuid_col(row, "id")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

impl SqliteStore {
    pub(super) async fn jobs_of(&self, owner: Uuid, limit: u32) -> StoreResult<Vec<JobRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE owner = ?1 \
             ORDER BY created_at DESC, id DESC LIMIT ?2"
        )))
        .bind(owner.to_string())
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    pub(super) async fn insert_submitter(
        &self,
        id: Uuid,
        name: &str,
        token_hash: &str,
        now: Millis,
    ) -> StoreResult<SubmitterRow> {
        sqlx::query(
            "INSERT INTO submitters (id, name, token_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(id.to_string())
        .bind(name)
        .bind(token_hash)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(SubmitterRow {
            id,
            name: name.to_owned(),
            created_at: now,
            revoked_at: None,
        })
    }

    pub(super) async fn list_submitters(&self) -> StoreResult<Vec<SubmitterRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM submitters ORDER BY created_at, id"
        )))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(submitter_from_row).collect()
    }

    pub(super) async fn submitter_by_hash(&self, hash: &str) -> StoreResult<Option<SubmitterRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM submitters WHERE token_hash = ?1 AND revoked_at IS NULL"
        )))
        .bind(hash)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(submitter_from_row).transpose()
    }

    pub(super) async fn revoke(&self, id: Uuid, now: Millis) -> StoreResult<Option<SubmitterRow>> {
        // The first revocation's time stays: revoking again changes nothing.
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE submitters SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1 \
             RETURNING {COLUMNS}"
        )))
        .bind(id.to_string())
        .bind(now)
        .fetch_optional(&self.writer)
        .await?;
        row.as_ref().map(submitter_from_row).transpose()
    }
}
