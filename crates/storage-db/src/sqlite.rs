//! The SQLite implementation of every persistence trait.
//!
//! What is SQLite's own is written here: pragmas, `BEGIN IMMEDIATE` (one
//! writer at a time, so no row locks), the bound-variable limit, multi-row
//! `VALUES` inserts, busy/locked error codes, times stored as RFC 3339 text,
//! and claims by compare-and-set. The queries both engines share are in
//! `src/shared/`, compiled into this module at the end of this file.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};
use storage_core::persist::ObjectLink;
use storage_core::{Error, Result, Storage};

use self::rows::{db, db_error, fetch_all, get};
use crate::shape::{format_time, parse_time};
use crate::sql::{rows_per_statement, statement_sizes, TaskValues};

/// The migrations of the SQLite schema, applied by [`SqliteDatabase::open`].
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Applies the migrations on one connection with foreign keys off:
/// migration 0004 rebuilds tables that others reference, and dropping such
/// a table while they are enforced would cascade into its children. A
/// transaction cannot switch them, and sqlx runs each migration in one, so
/// they are switched here, checked afterwards, and switched back on. A
/// connection that fails on the way is closed, never handed back to the
/// pool without its foreign keys.
async fn migrate(pool: &SqlitePool) -> Result<()> {
    let context = "applying the SQLite migrations";
    let mut conn = pool.acquire().await.map_err(db(context))?;
    let outcome = async {
        sqlx::query("PRAGMA foreign_keys = OFF")
            .execute(&mut *conn)
            .await
            .map_err(db(context))?;
        MIGRATOR
            .run(&mut *conn)
            .await
            .map_err(|err| Error::backend(context, err))?;
        let violations: Vec<SqliteRow> = sqlx::query("PRAGMA foreign_key_check")
            .fetch_all(&mut *conn)
            .await
            .map_err(db(context))?;
        if !violations.is_empty() {
            return Err(Error::backend(
                context,
                format!("{} rows break a foreign key", violations.len()),
            ));
        }
        sqlx::query("PRAGMA foreign_keys = ON")
            .execute(&mut *conn)
            .await
            .map_err(db(context))?;
        Ok(())
    }
    .await;
    if outcome.is_err() {
        drop(conn.detach());
    }
    outcome
}

/// Connections of the pool: readers run at once (WAL), writers queue on
/// SQLite's lock.
const MAX_CONNECTIONS: u32 = 8;

/// How long a writer waits for another writer before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Rows a statement may hand over from sqlx's SQLite thread before our task
/// takes them: a batch's ids at once.
const ROW_BUFFER: usize = 1024;

/// A SQLite database holding storages, links, projects, tasks, annotations
/// and users.
///
/// Cheap to clone: clones share one connection pool.
#[derive(Debug, Clone)]
pub struct SqliteDatabase {
    pool: SqlitePool,
}

impl SqliteDatabase {
    /// Opens (creating it if missing) the database file at `path` and
    /// applies the migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::new().filename(path);
        Self::with_options(options, false).await
    }

    /// Opens a database from a `sqlite://` URL (`sqlite://data.db`,
    /// `sqlite::memory:`), creating the file if missing, and applies the
    /// migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        if !url.starts_with("sqlite:") {
            return Err(Error::invalid("database_url", "expected a sqlite:// URL"));
        }
        // The parser's message may quote the URL; say only that it is wrong.
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|_| Error::invalid("database_url", "not a valid SQLite URL"))?;
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        Self::with_options(options, memory).await
    }

    async fn with_options(options: SqliteConnectOptions, memory: bool) -> Result<Self> {
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            // A batch's insert returns its 1,000 ids: with sqlx's default
            // of 50 rows between its SQLite thread and ours, that is twenty
            // hand-offs between threads a batch.
            .row_buffer_size(ROW_BUFFER);
        let pool = if memory {
            // One connection keeps an in-memory database alive and avoids
            // shared-cache table locks, which no busy timeout covers.
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(MAX_CONNECTIONS)
        }
        .connect_with(options)
        .await
        .map_err(db("opening the SQLite database"))?;
        migrate(&pool).await?;
        Ok(Self { pool })
    }

    /// The connection pool, for hosts that keep tables of their own in the
    /// same database.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Starts a transaction that holds SQLite's write lock from its first
    /// statement, so it never fails half-way on a lock upgrade; concurrent
    /// writers wait up to the busy timeout.
    async fn begin_write(&self, context: &str) -> Result<sqlx::Transaction<'static, Sqlite>> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|err| db_error(context, err))
    }

    /// Inserts task rows with multi-row `VALUES`; returns `(inner_id, id)`
    /// pairs.
    async fn insert_task_rows(
        conn: &mut SqliteConnection,
        project: i64,
        overlap: i64,
        tasks: Vec<TaskValues>,
        stamp: &Stamp,
        context: &str,
    ) -> Result<Vec<(i64, i64)>> {
        let mut ids = Vec::with_capacity(tasks.len());
        let sizes = statement_sizes(tasks.len(), rows_per_statement(MAX_VARIABLES, 12));
        let mut tasks = tasks.into_iter();
        for size in sizes {
            // Owned rows: the data text moves into the statement's
            // arguments (sqlx copies borrowed text before binding it).
            let chunk: Vec<TaskValues> = tasks.by_ref().take(size).collect();
            let mut query = QueryBuilder::<Sqlite>::new(
                "INSERT INTO tasks (project_id, inner_id, data, meta, allow_skip, overlap, \
                 is_labeled, total_annotations, cancelled_annotations, total_predictions, \
                 created_at, updated_at) ",
            );
            query.push_values(chunk, |mut row, task| {
                row.push_bind(project)
                    .push_bind(task.inner_id)
                    .push_bind(task.data)
                    .push_bind("{}")
                    .push_bind(task.allow_skip)
                    .push_bind(overlap)
                    .push_bind(task.is_labeled)
                    .push_bind(task.counters.total_annotations)
                    .push_bind(task.counters.cancelled_annotations)
                    .push_bind(task.counters.total_predictions)
                    .push_bind(stamp)
                    .push_bind(stamp);
            });
            query.push(" RETURNING inner_id, id");
            // Kept prepared: statement_sizes makes few shapes.
            let rows = query
                .build()
                .fetch_all(&mut *conn)
                .await
                .map_err(db(context))?;
            for row in rows {
                ids.push((get(&row, "inner_id")?, get(&row, "id")?));
            }
        }
        Ok(ids)
    }

    /// Inserts link rows with multi-row `VALUES`.
    async fn insert_link_rows(
        conn: &mut SqliteConnection,
        storage_id: i64,
        links: &[(i64, &ObjectLink)],
        stamp: &Stamp,
        context: &str,
    ) -> Result<()> {
        tasks::insert_values(
            conn,
            "INSERT INTO storage_links (storage_id, task_id, key, row_index, row_group, etag, \
             size, last_modified, created_at) ",
            links,
            9,
            |mut row, (task_id, link)| {
                row.push_bind(storage_id)
                    .push_bind(*task_id)
                    .push_bind(link.key.as_str())
                    .push_bind(link.row_index)
                    .push_bind(link.row_group)
                    .push_bind(link.etag.as_deref())
                    .push_bind(
                        link.size
                            .map(|size| i64::try_from(size).unwrap_or(i64::MAX)),
                    )
                    .push_bind(link.last_modified.map(format_time))
                    .push_bind(stamp);
            },
            context,
        )
        .await
    }

    /// Of `keys`, those linked to the storage and not unfinished, with
    /// their task counts.
    async fn linked_key_counts(
        conn: &mut SqliteConnection,
        storage_id: i64,
        keys: &[&str],
        context: &str,
    ) -> Result<Vec<(String, i64)>> {
        let mut query = links_of_keys("key, COUNT(*) AS tasks", storage_id, keys);
        query
            .push(" AND key NOT IN (SELECT key FROM unfinished_objects WHERE storage_id = ")
            .push_bind(storage_id)
            .push(") GROUP BY key");
        key_pairs(conn, query, "tasks", context).await
    }

    /// The `(key, row_index)` pairs of `keys` linked to the storage with a
    /// row index (-1 for none) in `first..=last`.
    async fn linked_row_pairs(
        conn: &mut SqliteConnection,
        storage_id: i64,
        keys: &[&str],
        (first, last): (i64, i64),
        context: &str,
    ) -> Result<Vec<(String, i64)>> {
        let mut query = links_of_keys(
            "key, COALESCE(row_index, -1) AS row_index",
            storage_id,
            keys,
        );
        query
            .push(" AND COALESCE(row_index, -1) BETWEEN ")
            .push_bind(first)
            .push(" AND ")
            .push_bind(last);
        key_pairs(conn, query, "row_index", context).await
    }

    /// SQLite has no row locks: a claim is a compare-and-set, which its
    /// single writer makes atomic.
    async fn claim_next(
        &self,
        skip: &[i64],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        per_tenant: Option<usize>,
    ) -> Result<Option<Storage>> {
        // One process owns a SQLite file; its claims take turns, so two never
        // both see an organisation below its cap.
        static CLAIMING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _claiming = CLAIMING.lock().await;
        storage_core::persist::claim_by_compare_and_set(self, skip, now, lease_until, per_tenant)
            .await
    }
}

/// `SELECT <columns> FROM storage_links WHERE storage_id = ? AND key IN
/// (...)`, for the caller to go on.
fn links_of_keys<'a>(columns: &str, storage_id: i64, keys: &[&'a str]) -> QueryBuilder<'a, Sqlite> {
    let mut query = QueryBuilder::<Sqlite>::new(format!(
        "SELECT {columns} FROM storage_links WHERE storage_id = "
    ));
    query.push_bind(storage_id).push(" AND key");
    push_list(&mut query, keys.to_vec());
    query
}

/// Runs a query of [`links_of_keys`]: `(key, <column>)` pairs.
async fn key_pairs(
    conn: &mut SqliteConnection,
    query: QueryBuilder<'_, Sqlite>,
    column: &str,
    context: &str,
) -> Result<Vec<(String, i64)>> {
    fetch_all(conn, query, context)
        .await?
        .iter()
        .map(|row| Ok((get(row, "key")?, get(row, column)?)))
        .collect()
}

type Engine = SqliteDatabase;
type Db = Sqlite;
type DbRow = SqliteRow;
type DbConn = SqliteConnection;

/// Times are fixed-width RFC 3339 text ([`format_time`]): text order is
/// time order.
type Stamp = String;

fn stamp(at: DateTime<Utc>) -> Stamp {
    format_time(at)
}

fn read_time(
    row: &SqliteRow,
    column: &str,
    what: impl FnOnce() -> String,
) -> Result<Option<DateTime<Utc>>> {
    get::<Option<String>>(row, column)?
        .map(|text| parse_time(&text, what))
        .transpose()
}

impl Engine {
    /// Outbox claims take turns by themselves: they run in `BEGIN
    /// IMMEDIATE` transactions, one writer at a time.
    async fn lock_outbox_claims(_conn: &mut DbConn, _context: &str) -> Result<()> {
        Ok(())
    }
}

/// SQLite's default limit of bound variables per statement
/// (`SQLITE_MAX_VARIABLE_NUMBER` since 3.32).
const MAX_VARIABLES: usize = 32_766;

/// Link keys in byte order, the order the engine compares listings in:
/// SQLite's default `BINARY` collation is byte order.
const KEY_ORDER: &str = "key";

/// Values per `IN` list, leaving room for a statement's other variables.
const LIST_CHUNK: usize = MAX_VARIABLES - 8;

/// Claims of shards are single statements, and SQLite runs one writer at a
/// time.
const SKIP_LOCKED: &str = "";

/// `BEGIN IMMEDIATE` serializes writers already.
const ROW_LOCK: &str = "";

const LOCK_ORGANIZATIONS: Option<&str> = None;

/// Binds `values` as ` IN (?, ?, ...)` after a column name.
fn push_list<'a, T>(query: &mut QueryBuilder<'a, Sqlite>, values: Vec<T>)
where
    T: 'a + sqlx::Encode<'a, Sqlite> + sqlx::Type<Sqlite>,
{
    let mut list = query.separated(", ");
    list.push_unseparated(" IN (");
    for value in values {
        list.push_bind(value);
    }
    list.push_unseparated(")");
}

/// SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes.
fn temporary_code(code: &str) -> bool {
    let code = code.parse::<i32>().unwrap_or(0);
    matches!(code & 0xff, 5 | 6)
}

// The SQL both engines share: each file of src/shared/ is compiled once here
// and once in the other engine module, each time as a child module of the
// engine, taking from it (`use super::{...}`) the names defined above from
// `Engine` to `temporary_code`, and the `Engine` methods `begin_write`,
// `insert_task_rows`, `insert_link_rows`, `linked_key_counts`,
// `linked_row_pairs` and `claim_next`.
#[path = "shared/accounts.rs"]
mod accounts;
#[path = "shared/annotations.rs"]
mod annotations;
#[path = "shared/exports.rs"]
mod exports;
#[path = "shared/follow.rs"]
mod follow;
#[path = "shared/host.rs"]
mod host;
#[path = "shared/rows.rs"]
mod rows;
#[path = "shared/shards.rs"]
mod shards;
#[path = "shared/storages.rs"]
mod storages;
#[path = "shared/tasks.rs"]
mod tasks;
#[path = "shared/webhooks.rs"]
mod webhooks;
