//! Submitter tokens and the jobs each submitter owns, for both backends. The statements are the
//! same text on SQLite and PostgreSQL (`$n` placeholders, first used in order), so one body
//! implements them for each store: [`submitter_queries!`] is expanded in each backend's module
//! with its store type, row type and the pools it reads from and writes to.

/// Columns of a submitter row.
pub(super) const COLUMNS: &str = "id, name, created_at, revoked_at";

macro_rules! submitter_queries {
    ($store:ty, $row:ty, read = $read:ident, write = $write:ident) => {
        fn submitter_from_row(row: &$row) -> StoreResult<SubmitterRow> {
            Ok(SubmitterRow {
                id: uuid_col(row, "id")?,
                name: row.try_get("name")?,
                created_at: row.try_get("created_at")?,
                revoked_at: row.try_get("revoked_at")?,
            })
        }

        impl $store {
            pub(super) async fn jobs_of(
                &self,
                owner: Uuid,
                limit: u32,
            ) -> StoreResult<Vec<JobRow>> {
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE owner = $1 \
                     ORDER BY created_at DESC, id DESC LIMIT $2"
                )))
                .bind(owner.to_string())
                .bind(limit as i64)
                .fetch_all(&self.$read)
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
                    "INSERT INTO submitters (id, name, token_hash, created_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(id.to_string())
                .bind(name)
                .bind(token_hash)
                .bind(now)
                .execute(&self.$write)
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
                    "SELECT {} FROM submitters ORDER BY created_at, id",
                    $crate::store::submitters::COLUMNS
                )))
                .fetch_all(&self.$read)
                .await?;
                rows.iter().map(submitter_from_row).collect()
            }

            pub(super) async fn submitter_by_hash(
                &self,
                hash: &str,
            ) -> StoreResult<Option<SubmitterRow>> {
                let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {} FROM submitters WHERE token_hash = $1 AND revoked_at IS NULL",
                    $crate::store::submitters::COLUMNS
                )))
                .bind(hash)
                .fetch_optional(&self.$read)
                .await?;
                row.as_ref().map(submitter_from_row).transpose()
            }

            pub(super) async fn revoke(
                &self,
                id: Uuid,
                now: Millis,
            ) -> StoreResult<Option<SubmitterRow>> {
                // The first revocation's time stays: revoking again changes nothing.
                let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE submitters SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 \
                     RETURNING {}",
                    $crate::store::submitters::COLUMNS
                )))
                .bind(now)
                .bind(id.to_string())
                .fetch_optional(&self.$write)
                .await?;
                row.as_ref().map(submitter_from_row).transpose()
            }
        }
    };
}

pub(super) use submitter_queries;
