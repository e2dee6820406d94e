//! Reading rows and wrapping database errors: the decoders of every table
//! and `db`/`db_error`, which mark an error temporary by the engine's
//! `temporary_code`.
//!
//! This file is compiled twice, as a child module of each engine:
//! `sqlite::rows` and `postgres::rows` (the `#[path]` module declarations
//! at the end of `src/sqlite.rs` and `src/postgres.rs`). So `super` is the
//! engine module, and the `use super::{...}` lines below name everything
//! this file takes from it; every other name is an ordinary import.

use chrono::{DateTime, Utc};
use sqlx::Row;
use storage_core::host::{Project, ProjectCounters, UserRecord};
use storage_core::{Error, Result, Retry, Settings, Storage, SyncState, SyncStatus};

use crate::shape::{
    parse_object, parse_task_data, parse_value, AnnotationRow, PredictionRow, TaskRow, UserRow,
};

// From the engine module: its row, connection and database types, how it
// reads a time and which error codes are worth a retry.
use super::{read_time, temporary_code, Db, DbConn, DbRow};

/// Runs a built query once (not kept as a prepared statement: list sizes
/// vary).
pub(super) async fn fetch_all(
    conn: &mut DbConn,
    mut query: sqlx::QueryBuilder<'_, Db>,
    context: &str,
) -> Result<Vec<DbRow>> {
    query
        .build()
        .persistent(false)
        .fetch_all(&mut *conn)
        .await
        .map_err(db(context))
}

/// Runs a built statement once (not kept as a prepared statement: list
/// sizes vary).
pub(super) async fn execute(
    conn: &mut DbConn,
    mut query: sqlx::QueryBuilder<'_, Db>,
    context: &str,
) -> Result<()> {
    query
        .build()
        .persistent(false)
        .execute(&mut *conn)
        .await
        .map_err(db(context))?;
    Ok(())
}

pub(super) fn get<'r, T>(row: &'r DbRow, column: &str) -> Result<T>
where
    T: sqlx::Decode<'r, Db> + sqlx::Type<Db>,
{
    row.try_get(column)
        .map_err(|err| db_error(format!("reading column {column}"), err))
}

/// A time column that is never NULL.
pub(super) fn time(
    row: &DbRow,
    column: &str,
    what: impl FnOnce() -> String,
) -> Result<DateTime<Utc>> {
    read_time(row, column, what)?
        .ok_or_else(|| Error::backend(format!("reading column {column}"), "unexpected NULL"))
}

pub(super) fn storage_from_row(row: &DbRow) -> Result<Storage> {
    let id: i64 = get(row, "id")?;
    let what = |column: &str| format!("{column} of storage {id}");
    let kind: String = get(row, "kind")?;
    let status: String = get(row, "status")?;
    Ok(Storage {
        id,
        kind: kind
            .parse()
            .map_err(|err| Error::backend(format!("decoding {}", what("kind")), err))?,
        storage_type: get(row, "type")?,
        project: get(row, "project_id")?,
        title: get(row, "title")?,
        description: get(row, "description")?,
        created_at: time(row, "created_at", || what("created_at"))?,
        synchronizable: get(row, "synchronizable")?,
        settings: Settings::from_map(parse_object(&get::<String>(row, "settings")?, || {
            what("settings")
        })?),
        sync: SyncState {
            status: status
                .parse::<SyncStatus>()
                .map_err(|err| Error::backend(format!("decoding {}", what("status")), err))?,
            last_sync: read_time(row, "last_sync", || what("last_sync"))?,
            last_sync_count: get(row, "last_sync_count")?,
            last_sync_job: get(row, "last_sync_job")?,
            traceback: get(row, "traceback")?,
            meta: parse_object(&get::<String>(row, "meta")?, || what("meta"))?,
            lease_until: read_time(row, "lease_until", || what("lease_until"))?,
        },
    })
}

pub(super) fn task_from_row(row: &DbRow) -> Result<TaskRow> {
    let id: i64 = get(row, "t_id")?;
    let what = |column: &str| format!("{column} of task {id}");
    Ok(TaskRow {
        id,
        project: get(row, "t_project_id")?,
        inner_id: get(row, "t_inner_id")?,
        data: parse_task_data(get::<String>(row, "t_data")?, || what("data"))?,
        meta: parse_object(&get::<String>(row, "t_meta")?, || what("meta"))?,
        created_at: time(row, "t_created_at", || what("created_at"))?,
        updated_at: time(row, "t_updated_at", || what("updated_at"))?,
        is_labeled: get(row, "t_is_labeled")?,
        overlap: get(row, "t_overlap")?,
        allow_skip: get(row, "t_allow_skip")?,
        total_annotations: get(row, "t_total_annotations")?,
        cancelled_annotations: get(row, "t_cancelled_annotations")?,
        total_predictions: get(row, "t_total_predictions")?,
        updated_by: get(row, "t_updated_by")?,
    })
}

pub(super) fn annotation_from_row(row: &DbRow) -> Result<AnnotationRow> {
    let id: i64 = get(row, "a_id")?;
    let what = |column: &str| format!("{column} of annotation {id}");
    let completed_by: Option<i64> = get(row, "a_completed_by")?;
    let email: Option<String> = get(row, "u_email")?;
    let completed_by = match (completed_by, email) {
        (Some(user), Some(email)) => Some(UserRow {
            id: user,
            email,
            first_name: get(row, "u_first_name")?,
            last_name: get(row, "u_last_name")?,
        }),
        _ => None,
    };
    Ok(AnnotationRow {
        id,
        task: get(row, "a_task_id")?,
        project: get(row, "a_project_id")?,
        completed_by,
        result: parse_value(&get::<String>(row, "a_result")?, || what("result"))?,
        was_cancelled: get(row, "a_was_cancelled")?,
        ground_truth: get(row, "a_ground_truth")?,
        lead_time: get(row, "a_lead_time")?,
        created_at: time(row, "a_created_at", || what("created_at"))?,
        updated_at: time(row, "a_updated_at", || what("updated_at"))?,
        updated_by: get(row, "a_updated_by")?,
    })
}

pub(super) fn prediction_from_row(row: &DbRow) -> Result<PredictionRow> {
    let id: i64 = get(row, "id")?;
    let what = |column: &str| format!("{column} of prediction {id}");
    Ok(PredictionRow {
        id,
        task: get(row, "task_id")?,
        project: get(row, "project_id")?,
        result: parse_value(&get::<String>(row, "result")?, || what("result"))?,
        score: get(row, "score")?,
        model_version: get(row, "model_version")?,
        created_at: time(row, "created_at", || what("created_at"))?,
        updated_at: time(row, "updated_at", || what("updated_at"))?,
    })
}

pub(super) fn project_from_row(row: &DbRow) -> Result<Project> {
    let id: i64 = get(row, "id")?;
    let count = |name: &str| -> Result<u64> {
        get::<i64>(row, name).map(|n| u64::try_from(n).unwrap_or(0))
    };
    Ok(Project {
        id,
        organization: get(row, "organization_id")?,
        title: get(row, "title")?,
        description: get(row, "description")?,
        label_config: get(row, "label_config")?,
        created_by: UserRecord {
            id: get(row, "created_by")?,
            email: get(row, "u_email")?,
            first_name: get(row, "u_first_name")?,
            last_name: get(row, "u_last_name")?,
            organization: get(row, "u_organization_id")?,
            date_joined: time(row, "u_created_at", || {
                format!("created_at of the creator of project {id}")
            })?,
        },
        created_at: time(row, "created_at", || format!("created_at of project {id}"))?,
        counters: ProjectCounters {
            task_number: count("task_number")?,
            finished_task_number: count("finished_task_number")?,
            total_annotations_number: count("total_annotations_number")?,
            total_predictions_number: count("total_predictions_number")?,
            num_tasks_with_annotations: count("num_tasks_with_annotations")?,
            useful_annotation_number: count("useful_annotation_number")?,
            ground_truth_number: count("ground_truth_number")?,
            skipped_annotations_number: count("skipped_annotations_number")?,
        },
    })
}

/// A user row (`id, email, first_name, last_name, organization_id,
/// created_at`).
pub(super) fn user_from_row(row: &DbRow) -> Result<UserRecord> {
    let id: i64 = get(row, "id")?;
    Ok(UserRecord {
        id,
        email: get(row, "email")?,
        first_name: get(row, "first_name")?,
        last_name: get(row, "last_name")?,
        organization: get(row, "organization_id")?,
        date_joined: time(row, "created_at", || format!("created_at of user {id}"))?,
    })
}

/// Wraps a database error with what was being done. Lock conflicts, pool
/// timeouts and I/O errors are worth a retry.
pub(super) fn db_error(context: impl Into<String>, err: sqlx::Error) -> Error {
    let retry = match &err {
        sqlx::Error::Database(e) if e.code().is_some_and(|code| temporary_code(&code)) => {
            Retry::Temporary
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => Retry::Temporary,
        _ => Retry::Permanent,
    };
    Error::Backend {
        context: context.into(),
        source: Box::new(err),
        retry,
    }
}

pub(super) fn db(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> Error {
    let context = context.into();
    move |err| db_error(context, err)
}
