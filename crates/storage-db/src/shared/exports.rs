//! The outbox of on-save exports (`ExportOutbox`), and `record_exports`,
//! which the annotation writes call inside their own transactions.
//!
//! This file is compiled twice, as a child module of each engine:
//! `sqlite::exports` and `postgres::exports` (the `#[path]` module
//! declarations at the end of `src/sqlite.rs` and `src/postgres.rs`). So
//! `super` is the engine module, and the `use super::{...}` lines below
//! name everything this file takes from it; every other name is an
//! ordinary import.

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use sqlx::QueryBuilder;
use storage_core::persist::{ExportBacklog, ExportDelivery, ExportOutbox, ExportOutcome};
use storage_core::Result;

use super::rows::{db, fetch_all, get, time};
use crate::shape::now;

// From the engine module: the engine, its database and connection types,
// and how it binds a time.
use super::{stamp, Db, DbConn, Engine};

/// How long a delivery never tried is left to the request that queued it
/// before the background takes it (a request that died leaves it behind).
const REQUEST_FIRST_SECONDS: i64 = 2;

/// The most failing annotation ids a backlog lists.
const MAX_FAILED_LISTED: i64 = 100;

impl Engine {
    /// Queues annotation `annotation` of `project` for every export
    /// storage of the project, inside the caller's transaction `conn`.
    pub(super) async fn record_exports(
        conn: &mut DbConn,
        project: i64,
        annotation: i64,
        deleted: bool,
    ) -> Result<()> {
        let at = now();
        sqlx::query(
            "INSERT INTO export_deliveries
                 (storage_id, annotation_id, deleted, next_attempt_at, created_at)
             SELECT id, $1, $2, $3, $3 FROM storages WHERE project_id = $4 AND kind = 'export'",
        )
        .bind(annotation)
        .bind(deleted)
        .bind(stamp(at))
        .bind(project)
        .execute(&mut *conn)
        .await
        .map_err(db(format!(
            "queueing the export of annotation {annotation}"
        )))?;
        Ok(())
    }
}

#[async_trait]
impl ExportOutbox for Engine {
    async fn claim_exports(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
        annotation: Option<i64>,
    ) -> Result<Vec<ExportDelivery>> {
        let context = "claiming on-save exports";
        let lease_until = lease_until.trunc_subsecs(6);
        let mut tx = self.begin_write(context).await?;
        // The head of each (storage, annotation) queue, if due and not
        // held; as with webhook deliveries, the outer lease condition is
        // checked again on the row a concurrent claimer updated first.
        let mut query = QueryBuilder::<Db>::new(
            "UPDATE export_deliveries SET attempts = attempts + 1, lease_until = ",
        );
        query
            .push_bind(stamp(lease_until))
            .push(" WHERE id IN (SELECT d.id FROM export_deliveries d WHERE d.given_up = ")
            .push_bind(false)
            .push(" AND d.next_attempt_at <= ")
            .push_bind(stamp(now))
            .push(" AND (d.lease_until IS NULL OR d.lease_until < ")
            .push_bind(stamp(now))
            .push(")");
        match annotation {
            Some(annotation) => {
                query.push(" AND d.annotation_id = ").push_bind(annotation);
            }
            // The request that queued a delivery tries it first: the
            // background takes it once tried, or once the request had time.
            None => {
                query
                    .push(" AND (d.attempts > 0 OR d.created_at < ")
                    .push_bind(stamp(
                        now - chrono::Duration::seconds(REQUEST_FIRST_SECONDS),
                    ))
                    .push(")");
            }
        }
        query
            .push(
                " AND NOT EXISTS (SELECT 1 FROM export_deliveries e
                   WHERE e.storage_id = d.storage_id AND e.annotation_id = d.annotation_id
                     AND e.id < d.id AND e.given_up = ",
            )
            .push_bind(false)
            .push(") ORDER BY d.next_attempt_at, d.id LIMIT ")
            .push_bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .push(") AND (lease_until IS NULL OR lease_until < ")
            .push_bind(stamp(now))
            .push(") RETURNING id, storage_id, annotation_id, deleted, attempts, created_at");
        let rows = fetch_all(&mut tx, query, context).await?;
        tx.commit().await.map_err(db(context))?;
        let mut claimed = rows
            .iter()
            .map(|row| {
                let id: i64 = get(row, "id")?;
                Ok(ExportDelivery {
                    id,
                    storage: get(row, "storage_id")?,
                    annotation: get(row, "annotation_id")?,
                    deleted: get(row, "deleted")?,
                    attempt: u32::try_from(get::<i64>(row, "attempts")?).unwrap_or(u32::MAX),
                    created_at: time(row, "created_at", || {
                        format!("created_at of export delivery {id}")
                    })?,
                    lease_until,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        claimed.sort_by_key(|delivery| delivery.id);
        Ok(claimed)
    }

    async fn record_export(
        &self,
        delivery: &ExportDelivery,
        outcome: &ExportOutcome,
    ) -> Result<bool> {
        let context = format!(
            "recording the export of annotation {} to storage {}",
            delivery.annotation, delivery.storage
        );
        let lease = stamp(delivery.lease_until);
        let done = match outcome {
            ExportOutcome::Done => {
                sqlx::query("DELETE FROM export_deliveries WHERE id = $1 AND lease_until = $2")
                    .bind(delivery.id)
                    .bind(lease)
                    .execute(&self.pool)
                    .await
            }
            ExportOutcome::RetryAt(at, error) => {
                sqlx::query(
                    "UPDATE export_deliveries SET next_attempt_at = $1, lease_until = NULL,
                     last_error = $2
                 WHERE id = $3 AND lease_until = $4",
                )
                .bind(stamp(*at))
                .bind(error)
                .bind(delivery.id)
                .bind(lease)
                .execute(&self.pool)
                .await
            }
            ExportOutcome::GivenUp(error) => sqlx::query(
                "UPDATE export_deliveries SET given_up = $1, lease_until = NULL, last_error = $2
                 WHERE id = $3 AND lease_until = $4",
            )
            .bind(true)
            .bind(error)
            .bind(delivery.id)
            .bind(lease)
            .execute(&self.pool)
            .await,
        }
        .map_err(db(context))?;
        Ok(done.rows_affected() > 0)
    }

    async fn export_backlog(&self, storage: i64) -> Result<ExportBacklog> {
        let context = format!("reading the on-save exports of storage {storage}");
        let pending: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM export_deliveries WHERE storage_id = $1 AND given_up = $2",
        )
        .bind(storage)
        .bind(false)
        .fetch_one(&self.pool)
        .await
        .map_err(db(context.as_str()))?;
        let failed: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT annotation_id FROM export_deliveries
             WHERE storage_id = $1 AND last_error IS NOT NULL ORDER BY annotation_id LIMIT $2",
        )
        .bind(storage)
        .bind(MAX_FAILED_LISTED)
        .fetch_all(&self.pool)
        .await
        .map_err(db(context.as_str()))?;
        let last_error: Option<String> = sqlx::query_scalar(
            "SELECT last_error FROM export_deliveries
             WHERE storage_id = $1 AND last_error IS NOT NULL ORDER BY id DESC LIMIT 1",
        )
        .bind(storage)
        .fetch_optional(&self.pool)
        .await
        .map_err(db(context.as_str()))?;
        Ok(ExportBacklog {
            pending: u64::try_from(pending).unwrap_or(0),
            failed,
            last_error,
        })
    }

    async fn release_export_claims(&self) -> Result<()> {
        sqlx::query(
            "UPDATE export_deliveries SET lease_until = NULL WHERE lease_until IS NOT NULL",
        )
        .execute(&self.pool)
        .await
        .map_err(db("releasing the claims of on-save exports"))?;
        Ok(())
    }

    async fn forget_written(&self, storage: i64, before: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "DELETE FROM export_deliveries
             WHERE storage_id = $1 AND deleted = $2 AND created_at < $3
               AND (lease_until IS NULL OR lease_until < $4)",
        )
        .bind(storage)
        .bind(false)
        .bind(stamp(before))
        .bind(stamp(now()))
        .execute(&self.pool)
        .await
        .map_err(db(format!(
            "forgetting the on-save exports an export sync of storage {storage} wrote"
        )))?;
        Ok(())
    }
}
