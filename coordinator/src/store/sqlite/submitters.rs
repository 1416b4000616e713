//! Submitter tokens and the jobs each submitter owns (SQLite): the shared statements of
//! [`crate::store::submitters`].

use sparecycles_protocol::Millis;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

use super::{JOB_COLUMNS, SqliteStore, job_from_row, uuid_col};
use crate::store::{JobRow, StoreResult, SubmitterRow};

crate::store::submitters::submitter_queries!(SqliteStore, SqliteRow, read = reader, write = writer);
