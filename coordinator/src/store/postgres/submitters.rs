//! Submitter tokens and the jobs each submitter owns (PostgreSQL): the shared statements of
//! [`crate::store::submitters`].

use sparecycles_protocol::Millis;
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use super::{JOB_COLUMNS, PostgresStore, job_from_row, uuid_col};
use crate::store::{JobRow, StoreResult, SubmitterRow};

crate::store::submitters::submitter_queries!(PostgresStore, PgRow, read = pool, write = pool);
