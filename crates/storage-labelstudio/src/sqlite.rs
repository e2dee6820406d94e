//! Label Studio's SQLite file: what is SQLite's own. Label Studio owns the
//! file, so nothing persistent is changed (no journal mode, no other
//! persistent pragma); writers take the lock at `BEGIN IMMEDIATE` and wait
//! for Label Studio's own writers up to the busy timeout. The queries both
//! engines share are in `src/shared/`, compiled into this module.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{Row, Sqlite, SqliteConnection};
use storage_core::{Error, Result};

/// Label Studio's database on SQLite.
#[derive(Debug, Clone)]
pub(crate) struct Engine {
    /// Posts Label Studio's webhooks for the tasks a sync creates.
    pub(crate) webhooks: Option<std::sync::Arc<crate::webhooks::WebhookSender>>,
    pub(crate) pool: SqlitePool,
}

/// How long a writer waits for Label Studio's writers (and they for ours:
/// Django's own default is 5 s, so our transactions stay short).
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

impl Engine {
    pub(crate) async fn connect(
        url: &str,
        webhooks: Option<std::sync::Arc<crate::webhooks::WebhookSender>>,
    ) -> Result<Self> {
        // The parser's message may quote the URL; say only that it is wrong.
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|_| Error::invalid("label_studio_database_url", "not a valid SQLite URL"))?;
        // Never created: a missing file is a wrong path, not a new database.
        let options = options
            .create_if_missing(false)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        // One connection: SQLite runs one writer at a time anyway, and the
        // pool hands its connection out in turn, so a running sync's
        // heartbeat (its progress and `time_last_ping`, which Label Studio's
        // health check reads) gets in between two batches instead of
        // waiting out a stream of them on SQLite's busy handler.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(db("opening Label Studio's SQLite database"))?;
        Ok(Self { webhooks, pool })
    }

    /// Starts a transaction that holds SQLite's write lock from its first
    /// statement, so it never fails half-way on a lock upgrade.
    pub(crate) async fn begin_write(
        &self,
        context: &str,
    ) -> Result<sqlx::Transaction<'static, Sqlite>> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db(context))
    }
}

type Db = Sqlite;
type DbRow = SqliteRow;
type DbConn = SqliteConnection;

/// Django's SQLite form of a time: naive UTC text.
type Stamp = String;

fn stamp(at: DateTime<Utc>) -> Stamp {
    at.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

fn read_time(
    row: &SqliteRow,
    column: &str,
    what: impl FnOnce() -> String,
) -> Result<Option<DateTime<Utc>>> {
    let text: Option<String> = row
        .try_get(column)
        .map_err(|err| Error::backend(format!("reading column {column}"), err))?;
    text.map(|text| {
        crate::parse_label_studio_time(&text)
            .ok_or_else(|| Error::backend(format!("decoding {}", what()), "not a time"))
    })
    .transpose()
}

/// Link keys in byte order, as listings return them.
const KEY_ORDER: &str = "key";

/// A bound JSON document is text, as SQLite keeps it.
const JSON_CAST: &str = "";

/// `IS` compares `NULL` as a value.
const NULL_SAFE_EQ: &str = " IS ";

/// `BEGIN IMMEDIATE` serializes writers already.
const ROW_LOCK: &str = "";

/// SQLite's default limit of bound variables per statement.
const MAX_VARIABLES: usize = 32_766;

/// SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes.
fn temporary_code(code: &str) -> bool {
    let code = code.parse::<i32>().unwrap_or(0);
    matches!(code & 0xff, 5 | 6)
}

/// An error of `context`, temporary when the database was busy.
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
