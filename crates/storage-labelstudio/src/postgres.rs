//! Label Studio's PostgreSQL database (how it runs in production): what is
//! PostgreSQL's own. Every write is a short read-committed transaction that
//! Label Studio's requests interleave with; task creation holds the
//! project's row, so two writers of one project never race for inner ids.
//! The queries both engines share are in `src/shared/`, compiled into this
//! module.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{PgConnection, Postgres, Row};
use storage_core::{Error, Result};

/// Label Studio's database on PostgreSQL.
#[derive(Debug, Clone)]
pub(crate) struct Engine {
    /// Posts Label Studio's webhooks for the tasks a sync creates.
    pub(crate) webhooks: Option<std::sync::Arc<crate::webhooks::WebhookSender>>,
    pub(crate) pool: PgPool,
}

impl Engine {
    pub(crate) async fn connect(
        url: &str,
        webhooks: Option<std::sync::Arc<crate::webhooks::WebhookSender>>,
    ) -> Result<Self> {
        // The parser's message may quote the URL; say only that it is wrong.
        let options = PgConnectOptions::from_str(url).map_err(|_| {
            Error::invalid("label_studio_database_url", "not a valid PostgreSQL URL")
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(db("connecting to Label Studio's PostgreSQL database"))?;
        Ok(Self { webhooks, pool })
    }

    /// A read-committed transaction; the statements that need it take row
    /// locks ([`ROW_LOCK`]).
    pub(crate) async fn begin_write(
        &self,
        context: &str,
    ) -> Result<sqlx::Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(db(context))
    }
}

type Db = Postgres;
type DbRow = PgRow;
type DbConn = PgConnection;

/// `timestamptz` binds as a time.
type Stamp = DateTime<Utc>;

fn stamp(at: DateTime<Utc>) -> Stamp {
    at
}

fn read_time(
    row: &PgRow,
    column: &str,
    _what: impl FnOnce() -> String,
) -> Result<Option<DateTime<Utc>>> {
    row.try_get(column)
        .map_err(|err| Error::backend(format!("reading column {column}"), err))
}

/// Link keys in byte order, as listings return them.
const KEY_ORDER: &str = "key COLLATE \"C\"";

/// Label Studio's JSON columns are `jsonb`; documents bind as text.
const JSON_CAST: &str = "::jsonb";

/// The standard null-safe comparison.
const NULL_SAFE_EQ: &str = " IS NOT DISTINCT FROM ";

/// Holds the project's row without blocking foreign keys to it.
const ROW_LOCK: &str = " FOR NO KEY UPDATE";

/// PostgreSQL's limit of bound parameters per statement.
const MAX_VARIABLES: usize = 65_535;

/// Serialization failures, deadlocks, lock timeouts, too many connections
/// an instance shutting down and lost connections are worth a retry.
fn temporary_code(code: &str) -> bool {
    matches!(
        code,
        "40001" | "40P01" | "55P03" | "53300" | "57P01" | "57P02" | "57P03"
    ) || code.starts_with("08")
}

/// An error of `context`, temporary when a retry may succeed.
fn db(context: &str) -> impl FnOnce(sqlx::Error) -> Error {
    let context = context.to_string();
    move |err| crate::db_error(context, err, temporary_code)
}

#[path = "shared/access.rs"]
mod access;
#[path = "shared/annotations.rs"]
mod annotations;
#[path = "shared/follow.rs"]
mod follow;
#[path = "shared/rows.rs"]
mod rows;
#[path = "shared/storages.rs"]
mod storages;
#[path = "shared/tasks.rs"]
mod tasks;
#[path = "shared/webhooks.rs"]
mod webhooks;
