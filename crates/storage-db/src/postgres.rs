//! The PostgreSQL implementation of every persistence trait, for several
//! server processes sharing one database (see docs/scaling.md).
//!
//! What is PostgreSQL's own is written here: native timestamps, row locks
//! where SQLite has one writer (the project row while tasks are created, the
//! task row while its counters are refreshed), claims with `FOR NO KEY
//! UPDATE SKIP LOCKED`, whole batches inserted with one `UNNEST` statement,
//! lists bound as one array, SQLSTATE codes, and the references of tasks
//! and links checked once per statement by triggers instead of once per row
//! by foreign keys (`migrations/postgres/0008_*.sql`). The queries both engines
//! share are in `src/shared/`, compiled into this module at the end of
//! this file.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{PgConnection, Postgres, QueryBuilder};
use storage_core::persist::{claimed_state, ObjectLink, SyncGuard};
use storage_core::{Error, Result, Storage, SyncStatus};

use self::rows::{db, db_error, get, storage_from_row};
use crate::sql::TaskValues;
use crate::sql::STORAGE_COLUMNS;

/// The migrations of the PostgreSQL schema, applied by
/// [`PostgresDatabase::connect`]. sqlx holds an advisory lock while it
/// migrates, so processes starting together apply each migration once.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections of one process's pool: sync workers, their listing lookups
/// and API requests.
const MAX_CONNECTIONS: u32 = 16;

/// A PostgreSQL database holding storages, links, projects, tasks,
/// annotations and users; any number of processes may share it.
///
/// Cheap to clone: clones share one connection pool.
#[derive(Debug, Clone)]
pub struct PostgresDatabase {
    pool: PgPool,
}

impl PostgresDatabase {
    /// Connects to a `postgres://` (or `postgresql://`) URL and applies the
    /// migrations. The database must exist.
    pub async fn connect(url: &str) -> Result<Self> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(Error::invalid("database_url", "expected a postgres:// URL"));
        }
        // The parser's message may quote the URL and its password.
        let options = PgConnectOptions::from_str(url)
            .map_err(|_| Error::invalid("database_url", "not a valid PostgreSQL URL"))?
            .application_name("storage-connections");
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await
            .map_err(db("connecting to PostgreSQL"))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|err| Error::backend("applying the PostgreSQL migrations", err))?;
        Ok(Self { pool })
    }

    /// The connection pool, for hosts that keep tables of their own in the
    /// same database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A read-committed transaction; the statements that need it take row
    /// locks ([`ROW_LOCK`]).
    async fn begin_write(&self, context: &str) -> Result<sqlx::Transaction<'static, Postgres>> {
        self.pool
            .begin()
            .await
            .map_err(|err| db_error(context, err))
    }

    /// Inserts a whole batch of task rows with one statement: each column
    /// is one array parameter, `UNNEST` turns them into rows. Returns
    /// `(inner_id, id)` pairs.
    async fn insert_task_rows(
        conn: &mut PgConnection,
        project: i64,
        overlap: i64,
        mut tasks: Vec<TaskValues>,
        stamp: &Stamp,
        context: &str,
    ) -> Result<Vec<(i64, i64)>> {
        // Moved out, not copied: the arguments encode it once.
        let data: Vec<String> = tasks
            .iter_mut()
            .map(|t| std::mem::take(&mut t.data))
            .collect();
        let rows = sqlx::query(
            "INSERT INTO tasks (project_id, inner_id, data, allow_skip, overlap, is_labeled,
                                total_annotations, cancelled_annotations, total_predictions,
                                created_at, updated_at)
             SELECT $1, t.inner_id, t.data, t.allow_skip, $2, t.is_labeled, t.total_annotations,
                    t.cancelled_annotations, t.total_predictions, $3, $3
             FROM UNNEST($4::BIGINT[], $5::TEXT[], $6::BOOLEAN[], $7::BOOLEAN[], $8::BIGINT[],
                         $9::BIGINT[], $10::BIGINT[])
                  AS t (inner_id, data, allow_skip, is_labeled, total_annotations,
                        cancelled_annotations, total_predictions)
             RETURNING inner_id, id",
        )
        .bind(project)
        .bind(overlap)
        .bind(stamp)
        .bind(column(&tasks, |t| t.inner_id))
        .bind(data)
        .bind(column(&tasks, |t| t.allow_skip))
        .bind(column(&tasks, |t| t.is_labeled))
        .bind(column(&tasks, |t| t.counters.total_annotations))
        .bind(column(&tasks, |t| t.counters.cancelled_annotations))
        .bind(column(&tasks, |t| t.counters.total_predictions))
        .fetch_all(&mut *conn)
        .await
        .map_err(db(context))?;
        rows.iter()
            .map(|row| Ok((get(row, "inner_id")?, get(row, "id")?)))
            .collect()
    }

    /// Inserts a whole batch of links with one `UNNEST` statement.
    async fn insert_link_rows(
        conn: &mut PgConnection,
        storage_id: i64,
        links: &[(i64, &ObjectLink)],
        stamp: &Stamp,
        context: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO storage_links (storage_id, task_id, key, row_index, row_group, etag,
                                        size, last_modified, created_at)
             SELECT $1, l.task_id, l.key, l.row_index, l.row_group, l.etag, l.size,
                    l.last_modified, $2
             FROM UNNEST($3::BIGINT[], $4::TEXT[], $5::BIGINT[], $6::BIGINT[], $7::TEXT[],
                         $8::BIGINT[], $9::TIMESTAMPTZ[])
                  AS l (task_id, key, row_index, row_group, etag, size, last_modified)",
        )
        .bind(storage_id)
        .bind(stamp)
        .bind(links.iter().map(|(task, _)| *task).collect::<Vec<_>>())
        .bind(
            links
                .iter()
                .map(|(_, l)| l.key.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(links.iter().map(|(_, l)| l.row_index).collect::<Vec<_>>())
        .bind(links.iter().map(|(_, l)| l.row_group).collect::<Vec<_>>())
        .bind(
            links
                .iter()
                .map(|(_, l)| l.etag.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            links
                .iter()
                .map(|(_, l)| l.size.map(|size| i64::try_from(size).unwrap_or(i64::MAX)))
                .collect::<Vec<_>>(),
        )
        .bind(
            links
                .iter()
                .map(|(_, l)| l.last_modified)
                .collect::<Vec<_>>(),
        )
        .execute(&mut *conn)
        .await
        .map_err(db(context))?;
        Ok(())
    }

    /// Of `keys`, those linked to the storage and not unfinished, with
    /// their task counts.
    ///
    /// One index probe per key, forced by the `LATERAL` aggregate: a sync
    /// filling a new table runs before autovacuum has analyzed it, and
    /// without statistics `key = ANY($2)` is planned as a scan of every
    /// link of the storage (measured: 20 ms a batch at 200,000 links,
    /// growing with the table; this form stays at about 2 ms).
    async fn linked_key_counts(
        conn: &mut PgConnection,
        storage_id: i64,
        keys: &[&str],
        context: &str,
    ) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT k.key, l.tasks
             FROM UNNEST($2::TEXT[]) AS k (key)
             CROSS JOIN LATERAL (SELECT COUNT(*) AS tasks FROM storage_links l
                                 WHERE l.storage_id = $1 AND l.key = k.key) AS l
             WHERE l.tasks > 0
               AND k.key NOT IN (SELECT key FROM unfinished_objects WHERE storage_id = $1)",
        )
        .bind(storage_id)
        .bind(keys)
        .fetch_all(&mut *conn)
        .await
        .map_err(db(context))?;
        rows.iter()
            .map(|row| Ok((get(row, "key")?, get(row, "tasks")?)))
            .collect()
    }

    /// The `(key, row_index)` pairs of `keys` linked to the storage with a
    /// row index (-1 for none) in `first..=last`. One index probe per key
    /// as in [`PostgresDatabase::linked_key_counts`]; `OFFSET 0` keeps the
    /// planner from turning the per-key subquery into a join it could plan
    /// as a scan.
    async fn linked_row_pairs(
        conn: &mut PgConnection,
        storage_id: i64,
        keys: &[&str],
        (first, last): (i64, i64),
        context: &str,
    ) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT k.key, l.row_index
             FROM UNNEST($2::TEXT[]) AS k (key)
             CROSS JOIN LATERAL (SELECT COALESCE(l.row_index, -1) AS row_index
                                 FROM storage_links l
                                 WHERE l.storage_id = $1 AND l.key = k.key
                                   AND COALESCE(l.row_index, -1) BETWEEN $3 AND $4
                                 OFFSET 0) AS l",
        )
        .bind(storage_id)
        .bind(keys)
        .bind(first)
        .bind(last)
        .fetch_all(&mut *conn)
        .await
        .map_err(db(context))?;
        rows.iter()
            .map(|row| Ok((get(row, "key")?, get(row, "row_index")?)))
            .collect()
    }

    /// Locks the first queued storage no other transaction holds (`SKIP
    /// LOCKED`: concurrent claimers of any process each get a different
    /// one, or none, without waiting) and moves it to `in_progress` in the
    /// same transaction.
    async fn claim_next(
        &self,
        skip: &[i64],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        per_tenant: Option<usize>,
    ) -> Result<Option<Storage>> {
        let context = "claiming a queued sync";
        let mut tx = self.begin_write(context).await?;
        // Claims of every instance take turns (for the length of this short
        // transaction), so two never both see an organisation below its cap.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(CLAIM_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db(context))?;
        // The organisation with the fewest running jobs first, then the
        // oldest storage; organisations at their cap wait.
        let sql = format!(
            "WITH running AS (
                 SELECT p.organization_id, count(*) AS jobs FROM storages r
                 JOIN projects p ON p.id = r.project_id
                 WHERE r.status = $3 GROUP BY p.organization_id)
             SELECT {STORAGE_COLUMNS} FROM storages WHERE id = (
                 SELECT s.id FROM storages s
                 JOIN projects p ON p.id = s.project_id
                 LEFT JOIN running ON running.organization_id = p.organization_id
                 WHERE s.status = $1 AND s.id <> ALL($2)
                   AND ($4::BIGINT IS NULL OR COALESCE(running.jobs, 0) < $4)
                 ORDER BY COALESCE(running.jobs, 0), s.id LIMIT 1
                 FOR NO KEY UPDATE OF s SKIP LOCKED)"
        );
        let cap = per_tenant.map(|cap| i64::try_from(cap).unwrap_or(i64::MAX));
        let row = sqlx::query(&sql)
            .bind(SyncStatus::Queued.as_str())
            .bind(skip)
            .bind(SyncStatus::InProgress.as_str())
            .bind(cap)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db(context))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut storage = storage_from_row(&row)?;
        let state = claimed_state(&storage.sync, now, lease_until);
        if !Self::write_sync(&mut tx, storage.id, &SyncGuard::of(&storage.sync), &state).await? {
            return Err(Error::backend(
                context,
                "the locked storage row was not updated",
            ));
        }
        tx.commit().await.map_err(db(context))?;
        storage.sync = state;
        Ok(Some(storage))
    }
}

type Engine = PostgresDatabase;
type Db = Postgres;
type DbRow = PgRow;
type DbConn = PgConnection;

/// Times are TIMESTAMPTZ (microseconds, like [`now`]).
type Stamp = DateTime<Utc>;

fn stamp(at: DateTime<Utc>) -> Stamp {
    at
}

fn read_time(
    row: &PgRow,
    column: &str,
    _what: impl FnOnce() -> String,
) -> Result<Option<DateTime<Utc>>> {
    get(row, column)
}

/// The advisory lock key claims take turns on ("claim" in ASCII).
const CLAIM_LOCK: i64 = 0x0063_6c61_696d;

/// The advisory lock key outbox claims take turns on ("outbox").
const OUTBOX_LOCK: i64 = 0x6f75_7462_6f78;

impl Engine {
    /// Makes the outbox claims of every instance take turns, for the rest
    /// of the transaction `conn`.
    async fn lock_outbox_claims(conn: &mut DbConn, context: &str) -> Result<()> {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(OUTBOX_LOCK)
            .execute(&mut *conn)
            .await
            .map_err(db(context))?;
        Ok(())
    }
}

/// PostgreSQL's limit of bound parameters per statement.
const MAX_VARIABLES: usize = 65_535;

/// Link keys in byte order, the order the engine compares listings in:
/// the database's collation may be a language's (served by the
/// `storage_links_key_order` index).
const KEY_ORDER: &str = "key COLLATE \"C\"";

/// Values per array parameter of a `= ANY` list.
const LIST_CHUNK: usize = 10_000;

/// A claim of a shard passes over the rows other claims hold locked.
const SKIP_LOCKED: &str = "\n                 FOR UPDATE OF sh SKIP LOCKED";

/// Writers of one project's tasks, or of one task's counters, take turns
/// on its row; foreign-key checks (`FOR KEY SHARE`) are not held up.
const ROW_LOCK: &str = " FOR NO KEY UPDATE";

/// `ensure_organization` reads, then inserts: without this, two processes
/// starting at once could both create "default". Reads and foreign-key
/// checks are not blocked.
const LOCK_ORGANIZATIONS: Option<&str> =
    Some("LOCK TABLE organizations IN SHARE ROW EXCLUSIVE MODE");

/// Binds `values` as one array: ` = ANY($n)` after a column name. The
/// statement text is the same whatever the count.
fn push_list<'a, T>(query: &mut QueryBuilder<'a, Postgres>, values: Vec<T>)
where
    Vec<T>: 'a + sqlx::Encode<'a, Postgres> + sqlx::Type<Postgres>,
{
    query.push(" = ANY(").push_bind(values).push(")");
}

/// Lock conflicts (serialization failure, deadlock, lock not available),
/// too many connections, a server shutting down or starting, and lost
/// connections (class 08).
fn temporary_code(code: &str) -> bool {
    matches!(
        code,
        "40001" | "40P01" | "55P03" | "53300" | "57P01" | "57P02" | "57P03"
    ) || code.starts_with("08")
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

/// One column of `rows`, as an array parameter of an `UNNEST` insert.
fn column<T, C>(rows: &[T], value: impl Fn(&T) -> C) -> Vec<C> {
    rows.iter().map(value).collect()
}
