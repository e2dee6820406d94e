//! Reading columns of Label Studio's rows (a typed value, a time as its API
//! writes it, a JSON column), and building and running a query.
//!
//! This file is compiled twice, as a child module of each engine
//! (`sqlite::rows`, `postgres::rows`); `super` is the engine.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sqlx::{QueryBuilder, Row};
use storage_core::{Error, Result};

use super::{db, read_time, Db, DbConn, DbRow};

/// The value of `column`, its name in the error.
pub(super) fn get<'r, T>(row: &'r DbRow, column: &str) -> Result<T>
where
    T: sqlx::Decode<'r, super::Db> + sqlx::Type<super::Db>,
{
    row.try_get(column)
        .map_err(|err| Error::backend(format!("reading column {column}"), err))
}

/// A time as Label Studio's API writes it (`null` when unset).
pub(super) fn iso(row: &DbRow, column: &str) -> Result<Value> {
    Ok(
        read_time(row, column, || column.to_string())?.map_or(Value::Null, |at: DateTime<Utc>| {
            Value::String(at.to_rfc3339_opts(SecondsFormat::Micros, true))
        }),
    )
}

/// A JSON column (`null` when unset or not JSON).
pub(super) fn json_column(row: &DbRow, column: &str) -> Result<Value> {
    Ok(get::<Option<String>>(row, column)?
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null))
}

/// ` IN (…)` of `values`, each bound.
pub(super) fn push_in<'a, T>(query: &mut QueryBuilder<'a, Db>, values: impl IntoIterator<Item = T>)
where
    T: 'a + sqlx::Encode<'a, Db> + sqlx::Type<Db> + Send,
{
    query.push(" IN (");
    let mut list = query.separated(", ");
    for value in values {
        list.push_bind(value);
    }
    list.push_unseparated(")");
}

/// Runs `query` (never cached: its shape depends on its lists), its error
/// told as `context`.
pub(super) async fn execute(
    conn: &mut DbConn,
    mut query: QueryBuilder<'_, Db>,
    context: &str,
) -> Result<()> {
    query
        .build()
        .persistent(false)
        .execute(conn)
        .await
        .map_err(db(context))?;
    Ok(())
}

/// Every row of `query` (see [`execute`]).
pub(super) async fn fetch_all(
    conn: &mut DbConn,
    mut query: QueryBuilder<'_, Db>,
    context: &str,
) -> Result<Vec<DbRow>> {
    query
        .build()
        .persistent(false)
        .fetch_all(conn)
        .await
        .map_err(db(context))
}
